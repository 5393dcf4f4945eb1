//! OpenAI Chat Completions: requests in and out, answers in and out, and the
//! `chat.completion.chunk` stream (`data:` frames ending in `data: [DONE]`).
//! Shapes from the OpenAI API reference (Create chat completion, the chat
//! completion object and chunk object). DeepSeek-style `reasoning_content`
//! (and OpenRouter's `reasoning`) carry thinking.

use std::borrow::Cow;

use serde_json::{json, Map, Value};

use super::canon::*;
use super::{arr, as_i64, as_str, bad, opt_f64, opt_i64, stop_list};
use crate::ApiError;

// ---- requests ----

pub fn parse_request(body: &Map<String, Value>) -> Result<ChatRequest, ApiError> {
    let mut req = ChatRequest {
        model: as_str(body.get("model")).unwrap_or_default().to_string(),
        max_tokens: opt_i64(body, "max_completion_tokens")?.or(opt_i64(body, "max_tokens")?),
        temperature: opt_f64(body, "temperature")?,
        top_p: opt_f64(body, "top_p")?,
        seed: opt_i64(body, "seed")?,
        presence_penalty: opt_f64(body, "presence_penalty")?,
        frequency_penalty: opt_f64(body, "frequency_penalty")?,
        stop: stop_list(body.get("stop"), "stop")?,
        stream: body.get("stream").and_then(Value::as_bool).unwrap_or(false),
        user: as_str(body.get("user")).map(str::to_string),
        parallel_tool_calls: body.get("parallel_tool_calls").and_then(Value::as_bool),
        ..ChatRequest::default()
    };
    if let Some(n) = opt_i64(body, "n")? {
        if n != 1 {
            req.n = Some(n);
        }
    }
    if let Some(effort) = as_str(body.get("reasoning_effort")) {
        req.reasoning = Some(Reasoning { effort: Some(effort.to_string()), budget_tokens: None });
    }
    for (i, m) in arr(body.get("messages"), "messages")?.iter().enumerate() {
        parse_message(m, i, &mut req)?;
    }
    if let Some(tools) = body.get("tools").filter(|v| !v.is_null()) {
        for t in arr(Some(tools), "tools")? {
            let f = t.get("function").ok_or_else(|| bad("tools", "each tool needs a `function` object"))?;
            let name = as_str(f.get("name")).ok_or_else(|| bad("tools", "each function needs a `name`"))?;
            req.tools.push(Tool {
                name: name.to_string(),
                description: as_str(f.get("description")).map(str::to_string),
                parameters: f.get("parameters").cloned().unwrap_or_else(|| json!({"type": "object", "properties": {}})),
            });
        }
    }
    req.tool_choice = match body.get("tool_choice") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(match s.as_str() {
            "none" => ToolChoice::None,
            "required" => ToolChoice::Required,
            _ => ToolChoice::Auto,
        }),
        Some(v) => {
            let name = as_str(v.pointer("/function/name")).ok_or_else(|| {
                bad("tool_choice", "expected a string or {\"type\":\"function\",\"function\":{\"name\"}}")
            })?;
            Some(ToolChoice::Named(name.to_string()))
        }
    };
    req.response_format = match body.get("response_format") {
        Some(rf) => match as_str(rf.get("type")) {
            Some("json_object") => Some(ResponseFormat::JsonObject),
            Some("json_schema") => {
                let s = rf.get("json_schema").cloned().unwrap_or(Value::Null);
                Some(ResponseFormat::JsonSchema {
                    name: as_str(s.get("name")).unwrap_or("response").to_string(),
                    schema: s.get("schema").cloned().unwrap_or_else(|| json!({})),
                    strict: s.get("strict").and_then(Value::as_bool).unwrap_or(false),
                })
            }
            _ => None,
        },
        None => None,
    };
    req.link_tool_results();
    Ok(req)
}

fn parse_message(m: &Value, i: usize, req: &mut ChatRequest) -> Result<(), ApiError> {
    let role = as_str(m.get("role")).ok_or_else(|| bad("messages", format!("messages[{i}] needs a `role`")))?;
    let content = m.get("content");
    match role {
        "system" | "developer" => {
            req.system.push(parts_text(content));
        }
        "user" | "assistant" => {
            let mut parts = Vec::new();
            if role == "assistant" {
                for key in ["reasoning_content", "reasoning"] {
                    if let Some(t) = as_str(m.get(key)).filter(|t| !t.is_empty()) {
                        parts.push(Part::Thinking { text: t.to_string(), signature: None });
                        break;
                    }
                }
            }
            match content {
                None | Some(Value::Null) => {}
                Some(Value::String(s)) => parts.push(Part::Text(s.clone())),
                Some(Value::Array(items)) => {
                    for item in items {
                        match as_str(item.get("type")) {
                            Some("text") => parts.push(Part::Text(as_str(item.get("text")).unwrap_or("").to_string())),
                            Some("image_url") => {
                                let url = item
                                    .get("image_url")
                                    .and_then(|u| as_str(u.get("url")).or(u.as_str()))
                                    .ok_or_else(|| bad("messages", format!("messages[{i}]: image_url needs a url")))?;
                                parts.push(Part::Image(ImageSource::from_url(url)));
                            }
                            Some("refusal") => {
                                parts.push(Part::Text(as_str(item.get("refusal")).unwrap_or("").to_string()))
                            }
                            other => {
                                return Err(bad(
                                    "messages",
                                    format!("messages[{i}]: content part type {other:?} is not supported"),
                                ))
                            }
                        }
                    }
                }
                Some(_) => {
                    return Err(bad("messages", format!("messages[{i}].content must be a string or an array of parts")))
                }
            }
            if let Some(calls) = m.get("tool_calls").and_then(Value::as_array) {
                for c in calls {
                    parts.push(Part::ToolCall {
                        id: as_str(c.get("id")).unwrap_or("").to_string(),
                        name: as_str(c.pointer("/function/name")).unwrap_or("").to_string(),
                        arguments: as_str(c.pointer("/function/arguments")).unwrap_or("{}").to_string(),
                    });
                }
            }
            let role = if role == "user" { Role::User } else { Role::Assistant };
            req.messages.push(Message { role, parts });
        }
        "tool" => {
            let id = as_str(m.get("tool_call_id")).unwrap_or("").to_string();
            let part = Part::ToolResult { id, name: String::new(), content: parts_text(content), is_error: false };
            // Consecutive tool messages answer one assistant turn: keep them together.
            match req.messages.last_mut() {
                Some(last) if last.role == Role::Tool => last.parts.push(part),
                _ => req.messages.push(Message { role: Role::Tool, parts: vec![part] }),
            }
        }
        other => return Err(bad("messages", format!("messages[{i}]: role `{other}` is not supported"))),
    }
    Ok(())
}

/// Text of a string-or-parts content.
fn parts_text(content: Option<&Value>) -> String {
    match content {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(items)) => items.iter().filter_map(|p| as_str(p.get("text"))).collect::<Vec<_>>().join(""),
        _ => String::new(),
    }
}

/// The `messages` array (also Cohere v2's, which shares the shape).
pub(crate) fn messages(req: &ChatRequest) -> Vec<Value> {
    let mut messages = Vec::new();
    for s in &req.system {
        messages.push(json!({"role": "system", "content": s}));
    }
    for m in &req.messages {
        match m.role {
            Role::Tool => {
                for p in &m.parts {
                    if let Part::ToolResult { id, content, .. } = p {
                        messages.push(json!({"role": "tool", "tool_call_id": id, "content": content}));
                    }
                }
            }
            Role::User | Role::Assistant => {
                let mut content = Vec::new();
                let mut calls = Vec::new();
                for p in &m.parts {
                    match p {
                        Part::Text(t) => content.push(json!({"type": "text", "text": t})),
                        Part::Image(src) => {
                            content.push(json!({"type": "image_url", "image_url": {"url": src.to_url()}}))
                        }
                        Part::ToolCall { id, name, arguments } => calls.push(
                            json!({"id": id, "type": "function", "function": {"name": name, "arguments": arguments}}),
                        ),
                        // Earlier thinking is not sent back to OpenAI-wire upstreams (DeepSeek refuses it).
                        Part::Thinking { .. } | Part::ToolResult { .. } => {}
                    }
                }
                let role = if m.role == Role::User { "user" } else { "assistant" };
                let mut msg = Map::new();
                msg.insert("role".into(), role.into());
                let only_text = content.iter().all(|c| c["type"] == "text");
                let content = if content.is_empty() {
                    if calls.is_empty() {
                        json!("")
                    } else {
                        Value::Null
                    }
                } else if only_text {
                    Value::String(content.iter().filter_map(|c| c["text"].as_str()).collect())
                } else {
                    Value::Array(content)
                };
                msg.insert("content".into(), content);
                if !calls.is_empty() {
                    msg.insert("tool_calls".into(), Value::Array(calls));
                }
                messages.push(Value::Object(msg));
            }
        }
    }
    messages
}

/// Function tools as OpenAI (and Cohere v2) declare them.
pub(crate) fn tools(req: &ChatRequest) -> Vec<Value> {
    req.tools
        .iter()
        .map(|t| {
            let mut f = json!({"name": t.name, "parameters": t.parameters});
            if let Some(d) = &t.description {
                f["description"] = d.clone().into();
            }
            json!({"type": "function", "function": f})
        })
        .collect()
}

pub fn build_request(req: &ChatRequest, model: &str, stream: bool) -> Value {
    let messages = messages(req);
    let mut b = Map::new();
    b.insert("model".into(), model.into());
    b.insert("messages".into(), Value::Array(messages));
    if let Some(n) = req.max_tokens {
        b.insert("max_tokens".into(), n.into());
    }
    put_f64(&mut b, "temperature", req.temperature);
    put_f64(&mut b, "top_p", req.top_p);
    put_f64(&mut b, "presence_penalty", req.presence_penalty);
    put_f64(&mut b, "frequency_penalty", req.frequency_penalty);
    if let Some(s) = req.seed {
        b.insert("seed".into(), s.into());
    }
    if !req.stop.is_empty() {
        b.insert("stop".into(), json!(req.stop));
    }
    if let Some(u) = &req.user {
        b.insert("user".into(), u.clone().into());
    }
    if !req.tools.is_empty() {
        b.insert("tools".into(), Value::Array(tools(req)));
    }
    if let Some(tc) = &req.tool_choice {
        let v = match tc {
            ToolChoice::Auto => json!("auto"),
            ToolChoice::None => json!("none"),
            ToolChoice::Required => json!("required"),
            ToolChoice::Named(n) => json!({"type": "function", "function": {"name": n}}),
        };
        b.insert("tool_choice".into(), v);
    }
    if let Some(p) = req.parallel_tool_calls {
        b.insert("parallel_tool_calls".into(), p.into());
    }
    match &req.response_format {
        Some(ResponseFormat::JsonObject) => {
            b.insert("response_format".into(), json!({"type": "json_object"}));
        }
        Some(ResponseFormat::JsonSchema { name, schema, strict }) => {
            b.insert(
                "response_format".into(),
                json!({"type": "json_schema", "json_schema": {"name": name, "schema": schema, "strict": strict}}),
            );
        }
        None => {}
    }
    if let Some(r) = &req.reasoning {
        b.insert("reasoning_effort".into(), r.effort().into());
    }
    if stream {
        b.insert("stream".into(), true.into());
        b.insert("stream_options".into(), json!({"include_usage": true}));
    }
    Value::Object(b)
}

fn put_f64(b: &mut Map<String, Value>, key: &str, v: Option<f64>) {
    if let Some(x) = v.and_then(serde_json::Number::from_f64) {
        b.insert(key.into(), Value::Number(x));
    }
}

// ---- answers ----

pub fn parse_usage(u: &Value) -> Option<Usage> {
    if !u.is_object() {
        return None;
    }
    Some(Usage {
        input: as_i64(u.get("prompt_tokens")),
        output: as_i64(u.get("completion_tokens")),
        cached: as_i64(u.pointer("/prompt_tokens_details/cached_tokens")).max(as_i64(u.get("prompt_cache_hit_tokens"))),
        cache_write: 0,
        reasoning: as_i64(u.pointer("/completion_tokens_details/reasoning_tokens")),
    })
}

/// The usage an answer reports, read without building the rest of it (the
/// choices are skipped, not parsed): all a passthrough answer needs when the
/// upstream counted. `None` when unreadable or without a usage object.
pub fn reported_usage(answer: &[u8]) -> Option<Usage> {
    #[derive(serde::Deserialize)]
    struct UsageOnly {
        #[serde(default)]
        usage: Option<Value>,
    }
    serde_json::from_slice::<UsageOnly>(answer).ok()?.usage.as_ref().and_then(parse_usage)
}

pub fn usage_json(u: &Usage) -> Value {
    json!({
        "prompt_tokens": u.input,
        "completion_tokens": u.output,
        "total_tokens": u.input + u.output,
        "prompt_tokens_details": {"cached_tokens": u.cached},
        "completion_tokens_details": {"reasoning_tokens": u.reasoning},
    })
}

pub fn finish_reason(s: &str) -> FinishReason {
    match s {
        "length" => FinishReason::Length,
        "tool_calls" | "function_call" => FinishReason::ToolCalls,
        "content_filter" => FinishReason::ContentFilter,
        _ => FinishReason::Stop,
    }
}

fn finish_str(f: FinishReason) -> &'static str {
    match f {
        FinishReason::Stop => "stop",
        FinishReason::Length => "length",
        FinishReason::ToolCalls => "tool_calls",
        FinishReason::ContentFilter => "content_filter",
    }
}

pub fn parse_response(v: &Value) -> ChatResponse {
    let mut r = ChatResponse {
        id: as_str(v.get("id")).unwrap_or("").to_string(),
        model: as_str(v.get("model")).unwrap_or("").to_string(),
        usage: v.get("usage").and_then(parse_usage),
        ..ChatResponse::default()
    };
    if let Some(c) = v.pointer("/choices/0") {
        let m = c.get("message").cloned().unwrap_or(Value::Null);
        for key in ["reasoning_content", "reasoning"] {
            if let Some(t) = as_str(m.get(key)).filter(|t| !t.is_empty()) {
                r.parts.push(Part::Thinking { text: t.to_string(), signature: None });
                break;
            }
        }
        if let Some(t) = as_str(m.get("content")).filter(|t| !t.is_empty()) {
            r.parts.push(Part::Text(t.to_string()));
        } else if let Some(t) = as_str(c.get("text")) {
            r.parts.push(Part::Text(t.to_string()));
        }
        for call in m.get("tool_calls").and_then(Value::as_array).into_iter().flatten() {
            r.parts.push(Part::ToolCall {
                id: as_str(call.get("id")).unwrap_or("").to_string(),
                name: as_str(call.pointer("/function/name")).unwrap_or("").to_string(),
                arguments: as_str(call.pointer("/function/arguments")).unwrap_or("{}").to_string(),
            });
        }
        r.finish = as_str(c.get("finish_reason")).map(finish_reason);
    }
    r
}

pub fn render_response(r: &ChatResponse, model: &str, created: i64) -> Value {
    let mut msg = Map::new();
    msg.insert("role".into(), "assistant".into());
    let text = r.text();
    let calls: Vec<Value> = r
        .parts
        .iter()
        .filter_map(|p| match p {
            Part::ToolCall { id, name, arguments } => {
                Some(json!({"id": id, "type": "function", "function": {"name": name, "arguments": arguments}}))
            }
            _ => None,
        })
        .collect();
    msg.insert("content".into(), if text.is_empty() && !calls.is_empty() { Value::Null } else { text.into() });
    let thinking: String = r
        .parts
        .iter()
        .filter_map(|p| match p {
            Part::Thinking { text, .. } => Some(text.as_str()),
            _ => None,
        })
        .collect();
    if !thinking.is_empty() {
        msg.insert("reasoning_content".into(), thinking.into());
    }
    if !calls.is_empty() {
        msg.insert("tool_calls".into(), Value::Array(calls));
    }
    msg.insert("refusal".into(), Value::Null);
    let mut out = json!({
        "id": chat_id(&r.id),
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [{
            "index": 0,
            "message": Value::Object(msg),
            "logprobs": null,
            "finish_reason": finish_str(r.finish.unwrap_or(FinishReason::Stop)),
        }],
    });
    if let Some(u) = &r.usage {
        out["usage"] = usage_json(u);
    }
    out
}

fn chat_id(id: &str) -> String {
    if id.starts_with("chatcmpl") {
        id.to_string()
    } else {
        format!("chatcmpl-{}", id.trim_start_matches("msg_"))
    }
}

// ---- streams ----

/// Turns the JSON of one `data:` frame into events.
#[derive(Debug, Default)]
pub struct Decoder {
    started: bool,
}

/// One chunk as most upstreams send it, read without building a `Value` tree
/// (borrowed strings where unescaped): the per-event cost of every OpenAI
/// stream. Anything shaped otherwise is read the general way.
#[derive(serde::Deserialize)]
struct Chunk<'a> {
    #[serde(borrow, default)]
    id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    model: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    choices: Vec<ChunkChoice<'a>>,
    #[serde(default)]
    usage: Option<Value>,
    #[serde(default)]
    error: Option<Value>,
}

#[derive(serde::Deserialize)]
struct ChunkChoice<'a> {
    #[serde(borrow, default)]
    delta: Option<ChunkDelta<'a>>,
    #[serde(borrow, default)]
    text: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    finish_reason: Option<Cow<'a, str>>,
}

#[derive(serde::Deserialize)]
struct ChunkDelta<'a> {
    #[serde(borrow, default)]
    content: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    reasoning_content: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    reasoning: Option<Cow<'a, str>>,
    #[serde(default)]
    tool_calls: Option<Value>,
}

impl Decoder {
    pub fn unit(&mut self, data: &str, out: &mut Vec<Event>) {
        if data == "[DONE]" {
            return;
        }
        let chunk = match serde_json::from_str::<Chunk>(data) {
            Ok(c) => c,
            Err(_) => match serde_json::from_str::<Value>(data) {
                Ok(v) => Chunk::from_value(&v),
                Err(_) => {
                    out.push(Event::Error { message: format!("unreadable stream chunk: {}", super::snippet(data)) });
                    return;
                }
            },
        };
        if let Some(e) = chunk.error.as_ref().filter(|e| !e.is_null()) {
            let message = as_str(e.get("message")).unwrap_or("upstream error").to_string();
            out.push(Event::Error { message });
            return;
        }
        if !self.started {
            self.started = true;
            out.push(Event::Start {
                id: chunk.id.as_deref().unwrap_or("").to_string(),
                model: chunk.model.as_deref().unwrap_or("").to_string(),
            });
        }
        if let Some(c) = chunk.choices.first() {
            let d = c.delta.as_ref();
            let thinking =
                d.and_then(|d| d.reasoning_content.as_deref().filter(|t| !t.is_empty()).or(d.reasoning.as_deref()));
            if let Some(t) = thinking.filter(|t| !t.is_empty()) {
                out.push(Event::Thinking(t.to_string()));
            }
            let content = d.and_then(|d| d.content.as_deref()).or(c.text.as_deref());
            if let Some(t) = content.filter(|t| !t.is_empty()) {
                out.push(Event::Text(t.to_string()));
            }
            for call in d.and_then(|d| d.tool_calls.as_ref()).and_then(Value::as_array).into_iter().flatten() {
                let index = as_i64(call.get("index")).max(0) as usize;
                let id = as_str(call.get("id"));
                let name = as_str(call.pointer("/function/name"));
                if id.is_some() || name.is_some() {
                    out.push(Event::ToolCallStart {
                        index,
                        id: id.unwrap_or("").to_string(),
                        name: name.unwrap_or("").to_string(),
                    });
                }
                if let Some(a) = as_str(call.pointer("/function/arguments")).filter(|a| !a.is_empty()) {
                    out.push(Event::ToolCallArgs { index, delta: a.to_string() });
                }
            }
            if let Some(f) = c.finish_reason.as_deref() {
                out.push(Event::Finish(finish_reason(f)));
            }
        }
        if let Some(u) = chunk.usage.as_ref().and_then(parse_usage) {
            out.push(Event::Usage(u));
        }
    }
}

impl Chunk<'static> {
    /// A chunk with fields of unexpected types: what each field would read as
    /// (a field of the wrong type counts as absent).
    fn from_value(v: &Value) -> Self {
        let text = |v: Option<&Value>| as_str(v).map(|s| Cow::Owned(s.to_string()));
        let choice = v.pointer("/choices/0").map(|c| {
            let d = c.get("delta");
            ChunkChoice {
                delta: d.map(|d| ChunkDelta {
                    content: text(d.get("content")),
                    reasoning_content: text(d.get("reasoning_content")),
                    reasoning: text(d.get("reasoning")),
                    tool_calls: d.get("tool_calls").cloned(),
                }),
                text: text(c.get("text")),
                finish_reason: text(c.get("finish_reason")),
            }
        });
        Chunk {
            id: text(v.get("id")),
            model: text(v.get("model")),
            choices: choice.into_iter().collect(),
            usage: v.get("usage").cloned(),
            error: v.get("error").cloned(),
        }
    }
}

/// Writes events as `chat.completion.chunk` frames.
#[derive(Debug)]
pub struct Encoder {
    id: String,
    model: String,
    created: i64,
    include_usage: bool,
    usage: Option<Usage>,
    started: bool,
}

impl Encoder {
    pub fn new(model: &str, created: i64, include_usage: bool) -> Self {
        Encoder { id: String::new(), model: model.to_string(), created, include_usage, usage: None, started: false }
    }

    fn chunk(&self, out: &mut Vec<u8>, delta: Value, finish: Option<&str>) {
        let v = json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}],
        });
        crate::sse::encode_data(out, &v.to_string());
    }

    fn start(&mut self, id: &str, out: &mut Vec<u8>) {
        if !self.started {
            self.started = true;
            self.id = chat_id(id);
            self.chunk(out, json!({"role": "assistant", "content": ""}), None);
        }
    }

    pub fn event(&mut self, ev: &Event, out: &mut Vec<u8>) {
        if let Event::Start { id, .. } = ev {
            self.start(id, out);
            return;
        }
        self.start("", out);
        match ev {
            Event::Start { .. } | Event::ThinkingSignature(_) => {}
            Event::Text(t) => self.chunk(out, json!({"content": t}), None),
            Event::Thinking(t) => self.chunk(out, json!({"reasoning_content": t}), None),
            Event::ToolCallStart { index, id, name } => self.chunk(
                out,
                json!({"tool_calls": [{"index": index, "id": id, "type": "function", "function": {"name": name, "arguments": ""}}]}),
                None,
            ),
            Event::ToolCallArgs { index, delta } => {
                self.chunk(out, json!({"tool_calls": [{"index": index, "function": {"arguments": delta}}]}), None)
            }
            Event::Finish(f) => self.chunk(out, json!({}), Some(finish_str(*f))),
            Event::Usage(u) => self.usage = Some(*u),
            Event::Error { message } => {
                let e = crate::ApiError::new(crate::ErrorKind::UpstreamFailed, "upstream_stream_failed", message.clone());
                crate::sse::encode_data(out, &e.openai_body());
            }
        }
    }

    /// The usage chunk (when asked for) and `[DONE]`.
    pub fn finish(&mut self, out: &mut Vec<u8>, failed: bool) {
        if failed {
            return;
        }
        if let (true, Some(u)) = (self.include_usage, &self.usage) {
            let v = json!({
                "id": self.id, "object": "chat.completion.chunk", "created": self.created,
                "model": self.model, "choices": [], "usage": usage_json(u),
            });
            crate::sse::encode_data(out, &v.to_string());
        }
        crate::sse::encode_data(out, "[DONE]");
    }
}

pub fn parse_error(v: &Value) -> Option<String> {
    let e = v.get("error")?;
    Some(as_str(e.get("message")).or(e.as_str()).unwrap_or("upstream error").to_string())
}
