//! Anthropic Messages: requests in and out, answers in and out, and the
//! named-event stream (`message_start`, `content_block_start`/`_delta`/`_stop`,
//! `message_delta`, `message_stop`, `ping`, `error`). Shapes from Anthropic's
//! API reference (Messages, Streaming Messages, Errors) and anthropic-sdk-python's
//! `lib/streaming/_messages.py`, which accumulates blocks by `index`.

use serde_json::{json, Map, Value};

use super::canon::*;
use super::{arr, as_i64, as_str, bad, opt_f64, opt_i64, push_turn, stop_list};
use crate::ApiError;

/// `max_tokens` is required by Anthropic; requests converted from formats where it is optional get this.
pub const DEFAULT_MAX_TOKENS: i64 = 4096;

// ---- requests ----

pub fn parse_request(body: &Map<String, Value>) -> Result<ChatRequest, ApiError> {
    let max_tokens = opt_i64(body, "max_tokens")?.ok_or_else(|| bad("max_tokens", "max_tokens: Field required"))?;
    let mut req = ChatRequest {
        model: as_str(body.get("model")).unwrap_or_default().to_string(),
        max_tokens: Some(max_tokens),
        temperature: opt_f64(body, "temperature")?,
        top_p: opt_f64(body, "top_p")?,
        top_k: opt_i64(body, "top_k")?,
        stop: stop_list(body.get("stop_sequences"), "stop_sequences")?,
        stream: body.get("stream").and_then(Value::as_bool).unwrap_or(false),
        user: as_str(body.get("metadata").and_then(|m| m.get("user_id"))).map(str::to_string),
        ..ChatRequest::default()
    };
    match body.get("system") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) => req.system.push(s.clone()),
        Some(Value::Array(blocks)) => {
            for b in blocks {
                req.system.push(as_str(b.get("text")).unwrap_or("").to_string());
            }
        }
        Some(_) => return Err(bad("system", "system must be a string or an array of text blocks")),
    }
    for (i, m) in arr(body.get("messages"), "messages")?.iter().enumerate() {
        let role = match as_str(m.get("role")) {
            Some("user") => Role::User,
            Some("assistant") => Role::Assistant,
            _ => return Err(bad("messages", format!("messages.{i}.role: Input should be 'user' or 'assistant'"))),
        };
        let mut user_parts = Vec::new();
        let mut results = Vec::new();
        match m.get("content") {
            Some(Value::String(s)) => user_parts.push(Part::Text(s.clone())),
            Some(Value::Array(blocks)) => {
                for b in blocks {
                    match parse_block(b, i, &mut req.untranslatable)? {
                        Some(p @ Part::ToolResult { .. }) => results.push(p),
                        Some(p) => user_parts.push(p),
                        None => {}
                    }
                }
            }
            _ => return Err(bad("messages", format!("messages.{i}.content: must be a string or a list of blocks"))),
        }
        // Tool results travel in user turns here; canonically they are their own turn, before any text.
        if !results.is_empty() {
            req.messages.push(Message { role: Role::Tool, parts: results });
        }
        if !user_parts.is_empty() {
            req.messages.push(Message { role, parts: user_parts });
        }
    }
    for (i, t) in body.get("tools").and_then(Value::as_array).into_iter().flatten().enumerate() {
        if let Some(kind) = as_str(t.get("type")).filter(|k| *k != "custom") {
            req.untranslatable.push(format!("server tool `{kind}` (tools.{i})"));
            continue;
        }
        let name = as_str(t.get("name")).ok_or_else(|| bad("tools", format!("tools.{i}.name: Field required")))?;
        req.tools.push(Tool {
            name: name.to_string(),
            description: as_str(t.get("description")).map(str::to_string),
            parameters: t.get("input_schema").cloned().unwrap_or_else(|| json!({"type": "object"})),
        });
    }
    if let Some(tc) = body.get("tool_choice").filter(|v| v.is_object()) {
        req.tool_choice = Some(match as_str(tc.get("type")) {
            Some("any") => ToolChoice::Required,
            Some("none") => ToolChoice::None,
            Some("tool") => ToolChoice::Named(as_str(tc.get("name")).unwrap_or("").to_string()),
            _ => ToolChoice::Auto,
        });
        if tc.get("disable_parallel_tool_use").and_then(Value::as_bool) == Some(true) {
            req.parallel_tool_calls = Some(false);
        }
    }
    if let Some(th) = body.get("thinking") {
        if as_str(th.get("type")) == Some("enabled") {
            req.reasoning =
                Some(Reasoning { effort: None, budget_tokens: th.get("budget_tokens").and_then(Value::as_i64) });
        }
    }
    req.link_tool_results();
    Ok(req)
}

fn parse_block(b: &Value, i: usize, untranslatable: &mut Vec<String>) -> Result<Option<Part>, ApiError> {
    Ok(Some(match as_str(b.get("type")) {
        Some("text") => Part::Text(as_str(b.get("text")).unwrap_or("").to_string()),
        Some("image") => Part::Image(image_source(b.get("source")).ok_or_else(|| {
            bad("messages", format!("messages.{i}: image source must be base64 (media_type, data) or url"))
        })?),
        Some("tool_use") => Part::ToolCall {
            id: as_str(b.get("id")).unwrap_or("").to_string(),
            name: as_str(b.get("name")).unwrap_or("").to_string(),
            arguments: b.get("input").map(Value::to_string).unwrap_or_else(|| "{}".into()),
        },
        Some("tool_result") => Part::ToolResult {
            id: as_str(b.get("tool_use_id")).unwrap_or("").to_string(),
            name: String::new(),
            content: match b.get("content") {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Array(items)) => items.iter().filter_map(|p| as_str(p.get("text"))).collect(),
                _ => String::new(),
            },
            is_error: b.get("is_error").and_then(Value::as_bool).unwrap_or(false),
        },
        Some("thinking") => Part::Thinking {
            text: as_str(b.get("thinking")).unwrap_or("").to_string(),
            signature: as_str(b.get("signature")).map(str::to_string),
        },
        Some("redacted_thinking") => return Ok(None),
        other => {
            untranslatable.push(format!("content block `{}` (messages.{i})", other.unwrap_or("?")));
            return Ok(None);
        }
    }))
}

fn image_source(s: Option<&Value>) -> Option<ImageSource> {
    let s = s?;
    match as_str(s.get("type"))? {
        "base64" => Some(ImageSource::Base64 {
            media_type: as_str(s.get("media_type"))?.to_string(),
            data: as_str(s.get("data"))?.to_string(),
        }),
        "url" => Some(ImageSource::Url(as_str(s.get("url"))?.to_string())),
        _ => None,
    }
}

fn image_block(src: &ImageSource) -> Value {
    match src {
        ImageSource::Base64 { media_type, data } => {
            json!({"type": "image", "source": {"type": "base64", "media_type": media_type, "data": data}})
        }
        ImageSource::Url(u) => json!({"type": "image", "source": {"type": "url", "url": u}}),
    }
}

pub fn build_request(req: &ChatRequest, model: &str, stream: bool) -> Value {
    let mut messages: Vec<Value> = Vec::new();
    for m in &req.messages {
        let role = if m.role == Role::Assistant { "assistant" } else { "user" };
        let mut blocks = Vec::new();
        for p in &m.parts {
            match p {
                Part::Text(t) if t.is_empty() => {}
                Part::Text(t) => blocks.push(json!({"type": "text", "text": t})),
                Part::Image(src) => blocks.push(image_block(src)),
                Part::ToolCall { id, name, arguments } => {
                    let input: Value = serde_json::from_str(arguments).unwrap_or_else(|_| json!({}));
                    blocks.push(json!({"type": "tool_use", "id": id, "name": name, "input": input}));
                }
                Part::ToolResult { id, content, is_error, .. } => {
                    let mut b = json!({"type": "tool_result", "tool_use_id": id, "content": content});
                    if *is_error {
                        b["is_error"] = true.into();
                    }
                    blocks.push(b);
                }
                // Anthropic checks thinking signatures: unsigned thinking from other formats is left out.
                Part::Thinking { text, signature: Some(sig) } => {
                    blocks.push(json!({"type": "thinking", "thinking": text, "signature": sig}))
                }
                Part::Thinking { .. } => {}
            }
        }
        push_turn(&mut messages, role, "content", blocks);
    }
    let mut b = Map::new();
    b.insert("model".into(), model.into());
    let mut system = req.system.join("\n\n");
    if let Some(rf) = &req.response_format {
        // No JSON mode here: the instruction carries it.
        let ask = rf.instruction();
        system = if system.is_empty() { ask } else { format!("{system}\n\n{ask}") };
    }
    if !system.is_empty() {
        b.insert("system".into(), system.into());
    }
    b.insert("messages".into(), Value::Array(messages));
    let mut max_tokens = req.max_tokens.unwrap_or(DEFAULT_MAX_TOKENS);
    if let Some(r) = &req.reasoning {
        let budget = r.budget().max(1024);
        max_tokens = max_tokens.max(budget + 1);
        b.insert("thinking".into(), json!({"type": "enabled", "budget_tokens": budget}));
    }
    b.insert("max_tokens".into(), max_tokens.into());
    for (k, v) in [("temperature", req.temperature), ("top_p", req.top_p)] {
        if let Some(x) = v.and_then(serde_json::Number::from_f64) {
            b.insert(k.into(), Value::Number(x));
        }
    }
    if let Some(k) = req.top_k {
        b.insert("top_k".into(), k.into());
    }
    if !req.stop.is_empty() {
        b.insert("stop_sequences".into(), json!(req.stop));
    }
    if let Some(u) = &req.user {
        b.insert("metadata".into(), json!({"user_id": u}));
    }
    if !req.tools.is_empty() && req.tool_choice != Some(ToolChoice::None) {
        let tools: Vec<Value> = req
            .tools
            .iter()
            .map(|t| {
                let mut v = json!({"name": t.name, "input_schema": t.parameters});
                if let Some(d) = &t.description {
                    v["description"] = d.clone().into();
                }
                v
            })
            .collect();
        b.insert("tools".into(), Value::Array(tools));
        let mut choice = match &req.tool_choice {
            Some(ToolChoice::Required) => json!({"type": "any"}),
            Some(ToolChoice::Named(n)) => json!({"type": "tool", "name": n}),
            _ => json!({"type": "auto"}),
        };
        if req.parallel_tool_calls == Some(false) {
            choice["disable_parallel_tool_use"] = true.into();
        }
        b.insert("tool_choice".into(), choice);
    }
    if stream {
        b.insert("stream".into(), true.into());
    }
    Value::Object(b)
}

// ---- answers ----

pub fn parse_usage(u: &Value) -> Usage {
    let cached = as_i64(u.get("cache_read_input_tokens"));
    let cache_write = as_i64(u.get("cache_creation_input_tokens"));
    Usage {
        input: as_i64(u.get("input_tokens")) + cached + cache_write,
        output: as_i64(u.get("output_tokens")),
        cached,
        cache_write,
        reasoning: 0,
    }
}

fn usage_json(u: &Usage) -> Value {
    json!({
        "input_tokens": (u.input - u.cached - u.cache_write).max(0),
        "output_tokens": u.output,
        "cache_creation_input_tokens": u.cache_write,
        "cache_read_input_tokens": u.cached,
    })
}

pub fn finish_reason(s: &str) -> FinishReason {
    match s {
        "max_tokens" | "model_context_window_exceeded" => FinishReason::Length,
        "tool_use" => FinishReason::ToolCalls,
        "refusal" => FinishReason::ContentFilter,
        _ => FinishReason::Stop,
    }
}

fn stop_str(f: FinishReason) -> &'static str {
    match f {
        FinishReason::Stop => "end_turn",
        FinishReason::Length => "max_tokens",
        FinishReason::ToolCalls => "tool_use",
        FinishReason::ContentFilter => "refusal",
    }
}

pub fn parse_response(v: &Value) -> ChatResponse {
    let mut r = ChatResponse {
        id: as_str(v.get("id")).unwrap_or("").to_string(),
        model: as_str(v.get("model")).unwrap_or("").to_string(),
        finish: as_str(v.get("stop_reason")).map(finish_reason),
        usage: v.get("usage").map(parse_usage),
        ..ChatResponse::default()
    };
    let mut ignored = Vec::new();
    for b in v.get("content").and_then(Value::as_array).into_iter().flatten() {
        if let Ok(Some(p)) = parse_block(b, 0, &mut ignored) {
            r.parts.push(p);
        }
    }
    r
}

pub fn render_response(r: &ChatResponse, model: &str) -> Value {
    let content: Vec<Value> = r
        .parts
        .iter()
        .filter_map(|p| match p {
            Part::Text(t) => Some(json!({"type": "text", "text": t})),
            Part::Thinking { text, signature } => {
                Some(json!({"type": "thinking", "thinking": text, "signature": signature.clone().unwrap_or_default()}))
            }
            Part::ToolCall { id, name, arguments } => {
                let input: Value = serde_json::from_str(arguments).unwrap_or_else(|_| json!({}));
                Some(json!({"type": "tool_use", "id": tool_id(id), "name": name, "input": input}))
            }
            _ => None,
        })
        .collect();
    json!({
        "id": msg_id(&r.id),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop_str(r.finish.unwrap_or(FinishReason::Stop)),
        "stop_sequence": null,
        "usage": usage_json(&r.usage.unwrap_or_default()),
    })
}

fn msg_id(id: &str) -> String {
    if id.starts_with("msg_") {
        id.to_string()
    } else {
        format!("msg_{}", id.trim_start_matches("chatcmpl-"))
    }
}

fn tool_id(id: &str) -> String {
    if id.is_empty() {
        "toolu_0".into()
    } else {
        id.to_string()
    }
}

// ---- streams ----

#[derive(Clone, Copy, Debug)]
enum Block {
    Text,
    Thinking,
    Tool(usize),
    Other,
}

#[derive(Debug, Default)]
pub struct Decoder {
    blocks: Vec<(i64, Block)>,
    tools: usize,
    usage: Usage,
}

impl Decoder {
    pub fn unit(&mut self, data: &str, out: &mut Vec<Event>) {
        let Ok(v) = serde_json::from_str::<Value>(data) else {
            out.push(Event::Error { message: format!("unreadable stream event: {}", super::snippet(data)) });
            return;
        };
        let index = as_i64(v.get("index"));
        match as_str(v.get("type")).unwrap_or("") {
            "message_start" => {
                let m = v.get("message").cloned().unwrap_or(Value::Null);
                if let Some(u) = m.get("usage") {
                    self.usage = parse_usage(u);
                }
                out.push(Event::Start {
                    id: as_str(m.get("id")).unwrap_or("").to_string(),
                    model: as_str(m.get("model")).unwrap_or("").to_string(),
                });
            }
            "content_block_start" => {
                let b = v.get("content_block").cloned().unwrap_or(Value::Null);
                let block = match as_str(b.get("type")) {
                    Some("text") => Block::Text,
                    Some("thinking") => Block::Thinking,
                    Some("tool_use") => {
                        let i = self.tools;
                        self.tools += 1;
                        out.push(Event::ToolCallStart {
                            index: i,
                            id: as_str(b.get("id")).unwrap_or("").to_string(),
                            name: as_str(b.get("name")).unwrap_or("").to_string(),
                        });
                        Block::Tool(i)
                    }
                    _ => Block::Other,
                };
                if let (Block::Text, Some(t)) = (block, as_str(b.get("text")).filter(|t| !t.is_empty())) {
                    out.push(Event::Text(t.to_string()));
                }
                self.blocks.push((index, block));
            }
            "content_block_delta" => {
                let block = self.blocks.iter().rev().find(|(i, _)| *i == index).map(|(_, b)| *b);
                let d = v.get("delta").cloned().unwrap_or(Value::Null);
                match (as_str(d.get("type")), block) {
                    (Some("text_delta"), _) => out.push(Event::Text(as_str(d.get("text")).unwrap_or("").into())),
                    (Some("thinking_delta"), _) => {
                        out.push(Event::Thinking(as_str(d.get("thinking")).unwrap_or("").into()))
                    }
                    (Some("signature_delta"), _) => {
                        out.push(Event::ThinkingSignature(as_str(d.get("signature")).unwrap_or("").into()))
                    }
                    (Some("input_json_delta"), Some(Block::Tool(i))) => out.push(Event::ToolCallArgs {
                        index: i,
                        delta: as_str(d.get("partial_json")).unwrap_or("").to_string(),
                    }),
                    _ => {}
                }
            }
            "message_delta" => {
                if let Some(u) = v.get("usage") {
                    // Cumulative counts; fields left out keep their message_start values.
                    let n = parse_usage(u);
                    if u.get("output_tokens").is_some() {
                        self.usage.output = n.output;
                    }
                    if u.get("input_tokens").is_some() {
                        self.usage.input = n.input;
                        self.usage.cached = n.cached;
                        self.usage.cache_write = n.cache_write;
                    }
                }
                if let Some(s) = as_str(v.pointer("/delta/stop_reason")) {
                    out.push(Event::Finish(finish_reason(s)));
                }
                out.push(Event::Usage(self.usage));
            }
            "error" => out.push(Event::Error {
                message: as_str(v.pointer("/error/message")).unwrap_or("upstream error").to_string(),
            }),
            _ => {} // ping, content_block_stop, message_stop
        }
    }
}

/// Writes events as Anthropic's named SSE events, opening and closing content
/// blocks as the kind of content changes.
#[derive(Debug)]
pub struct Encoder {
    model: String,
    started: bool,
    /// The open block: its wire index and kind.
    open: Option<(usize, Block)>,
    next_index: usize,
    /// Tool index → block index.
    tools: Vec<(usize, usize)>,
    finish: Option<FinishReason>,
    usage: Usage,
}

fn frame(out: &mut Vec<u8>, name: &str, data: &Value) {
    out.extend_from_slice(b"event: ");
    out.extend_from_slice(name.as_bytes());
    out.push(b'\n');
    crate::sse::encode_data(out, &data.to_string());
}

impl Encoder {
    pub fn new(model: &str) -> Self {
        Encoder {
            model: model.to_string(),
            started: false,
            open: None,
            next_index: 0,
            tools: Vec::new(),
            finish: None,
            usage: Usage::default(),
        }
    }

    fn start(&mut self, id: &str, out: &mut Vec<u8>) {
        if self.started {
            return;
        }
        self.started = true;
        let message = json!({
            "id": msg_id(if id.is_empty() { "oblivious" } else { id }),
            "type": "message", "role": "assistant", "model": self.model, "content": [],
            "stop_reason": null, "stop_sequence": null, "usage": usage_json(&self.usage),
        });
        frame(out, "message_start", &json!({"type": "message_start", "message": message}));
    }

    fn close(&mut self, out: &mut Vec<u8>) {
        if let Some((i, _)) = self.open.take() {
            frame(out, "content_block_stop", &json!({"type": "content_block_stop", "index": i}));
        }
    }

    /// Makes sure a block of this kind is open; returns its index.
    fn ensure(&mut self, kind: Block, out: &mut Vec<u8>) -> usize {
        match (self.open, kind) {
            (Some((i, Block::Text)), Block::Text) | (Some((i, Block::Thinking)), Block::Thinking) => return i,
            _ => {}
        }
        self.close(out);
        let i = self.next_index;
        self.next_index += 1;
        let block = match kind {
            Block::Thinking => json!({"type": "thinking", "thinking": "", "signature": ""}),
            _ => json!({"type": "text", "text": ""}),
        };
        frame(out, "content_block_start", &json!({"type": "content_block_start", "index": i, "content_block": block}));
        self.open = Some((i, kind));
        i
    }

    fn delta(out: &mut Vec<u8>, index: usize, delta: Value) {
        frame(out, "content_block_delta", &json!({"type": "content_block_delta", "index": index, "delta": delta}));
    }

    pub fn event(&mut self, ev: &Event, out: &mut Vec<u8>) {
        if let Event::Start { id, .. } = ev {
            self.start(id, out);
            return;
        }
        if let Event::Usage(u) = ev {
            self.usage = *u;
            return;
        }
        self.start("", out);
        match ev {
            Event::Start { .. } | Event::Usage(_) => {}
            Event::Text(t) => {
                let i = self.ensure(Block::Text, out);
                Self::delta(out, i, json!({"type": "text_delta", "text": t}));
            }
            Event::Thinking(t) => {
                let i = self.ensure(Block::Thinking, out);
                Self::delta(out, i, json!({"type": "thinking_delta", "thinking": t}));
            }
            Event::ThinkingSignature(s) => {
                let i = self.ensure(Block::Thinking, out);
                Self::delta(out, i, json!({"type": "signature_delta", "signature": s}));
            }
            Event::ToolCallStart { index, id, name } => {
                self.close(out);
                let i = self.next_index;
                self.next_index += 1;
                self.tools.push((*index, i));
                let block = json!({"type": "tool_use", "id": tool_id(id), "name": name, "input": {}});
                frame(
                    out,
                    "content_block_start",
                    &json!({"type": "content_block_start", "index": i, "content_block": block}),
                );
                self.open = Some((i, Block::Tool(*index)));
            }
            Event::ToolCallArgs { index, delta } => {
                if let Some((_, i)) = self.tools.iter().find(|(t, _)| t == index) {
                    Self::delta(out, *i, json!({"type": "input_json_delta", "partial_json": delta}));
                } else {
                    tracing::debug!(index, "arguments for a tool call that never started: dropped");
                }
            }
            Event::Finish(f) => self.finish = Some(*f),
            Event::Error { message } => {
                frame(out, "error", &json!({"type": "error", "error": {"type": "api_error", "message": message}}));
            }
        }
    }

    pub fn finish(&mut self, out: &mut Vec<u8>, failed: bool) {
        if failed {
            return;
        }
        self.start("", out);
        self.close(out);
        let stop = stop_str(self.finish.unwrap_or(FinishReason::Stop));
        frame(
            out,
            "message_delta",
            &json!({"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": null}, "usage": usage_json(&self.usage)}),
        );
        frame(out, "message_stop", &json!({"type": "message_stop"}));
    }
}

// ---- errors ----

pub fn parse_error(v: &Value) -> Option<String> {
    as_str(v.pointer("/error/message")).map(str::to_string)
}

pub fn error_type(status: u16) -> &'static str {
    match status {
        400 | 409 => "invalid_request_error",
        401 => "authentication_error",
        402 | 403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        503 | 529 => "overloaded_error",
        504 => "timeout_error",
        _ => "api_error",
    }
}

pub fn error_body(status: u16, message: &str) -> Value {
    json!({"type": "error", "error": {"type": error_type(status), "message": message}})
}
