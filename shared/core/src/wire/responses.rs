//! OpenAI Responses API as an inbound format (for channels that are not
//! OpenAI; OpenAI channels get `/v1/responses` passed through): requests in,
//! answers out, and the typed event stream (`response.created`,
//! `response.output_item.added`, `response.output_text.delta`,
//! `response.function_call_arguments.delta`, `response.completed`…).
//! Shapes from the OpenAI API reference (Responses, Streaming events) and
//! openai-python's `types/responses`.

use serde_json::{json, Map, Value};

use super::canon::*;
use super::{as_str, bad, opt_f64, opt_i64};
use crate::ApiError;

pub fn parse_request(body: &Map<String, Value>) -> Result<ChatRequest, ApiError> {
    let mut req = ChatRequest {
        model: as_str(body.get("model")).unwrap_or_default().to_string(),
        max_tokens: opt_i64(body, "max_output_tokens")?,
        temperature: opt_f64(body, "temperature")?,
        top_p: opt_f64(body, "top_p")?,
        stream: body.get("stream").and_then(Value::as_bool).unwrap_or(false),
        user: as_str(body.get("user")).map(str::to_string),
        parallel_tool_calls: body.get("parallel_tool_calls").and_then(Value::as_bool),
        ..ChatRequest::default()
    };
    if body.get("previous_response_id").is_some_and(|v| !v.is_null()) {
        req.untranslatable.push("`previous_response_id` (stored conversation state)".into());
    }
    if let Some(i) = as_str(body.get("instructions")) {
        req.system.push(i.to_string());
    }
    if let Some(effort) = as_str(body.get("reasoning").and_then(|r| r.get("effort"))) {
        req.reasoning = Some(Reasoning { effort: Some(effort.to_string()), budget_tokens: None });
    }
    match body.get("text").and_then(|t| t.get("format")) {
        Some(f) if as_str(f.get("type")) == Some("json_object") => {
            req.response_format = Some(ResponseFormat::JsonObject)
        }
        Some(f) if as_str(f.get("type")) == Some("json_schema") => {
            req.response_format = Some(ResponseFormat::JsonSchema {
                name: as_str(f.get("name")).unwrap_or("response").to_string(),
                schema: f.get("schema").cloned().unwrap_or_else(|| json!({})),
                strict: f.get("strict").and_then(Value::as_bool).unwrap_or(false),
            })
        }
        _ => {}
    }
    match body.get("input") {
        Some(Value::String(s)) => req.messages.push(Message { role: Role::User, parts: vec![Part::Text(s.clone())] }),
        Some(Value::Array(items)) => {
            for (i, item) in items.iter().enumerate() {
                input_item(item, i, &mut req)?;
            }
        }
        _ => return Err(bad("input", "Missing required parameter: 'input'.")),
    }
    for t in body.get("tools").and_then(Value::as_array).into_iter().flatten() {
        match as_str(t.get("type")) {
            Some("function") => req.tools.push(Tool {
                name: as_str(t.get("name")).unwrap_or("").to_string(),
                description: as_str(t.get("description")).map(str::to_string),
                parameters: t.get("parameters").cloned().unwrap_or_else(|| json!({"type": "object", "properties": {}})),
            }),
            other => req.untranslatable.push(format!("built-in tool `{}`", other.unwrap_or("?"))),
        }
    }
    req.tool_choice = match body.get("tool_choice") {
        Some(Value::String(s)) => Some(match s.as_str() {
            "none" => ToolChoice::None,
            "required" => ToolChoice::Required,
            _ => ToolChoice::Auto,
        }),
        Some(v) if v.is_object() => as_str(v.get("name")).map(|n| ToolChoice::Named(n.to_string())),
        _ => None,
    };
    req.link_tool_results();
    Ok(req)
}

fn push(req: &mut ChatRequest, role: Role, part: Part) {
    match req.messages.last_mut() {
        Some(last) if last.role == role => last.parts.push(part),
        _ => req.messages.push(Message { role, parts: vec![part] }),
    }
}

fn input_item(item: &Value, i: usize, req: &mut ChatRequest) -> Result<(), ApiError> {
    match as_str(item.get("type")) {
        Some("function_call") => push(
            req,
            Role::Assistant,
            Part::ToolCall {
                id: as_str(item.get("call_id")).unwrap_or("").to_string(),
                name: as_str(item.get("name")).unwrap_or("").to_string(),
                arguments: as_str(item.get("arguments")).unwrap_or("{}").to_string(),
            },
        ),
        Some("function_call_output") => push(
            req,
            Role::Tool,
            Part::ToolResult {
                id: as_str(item.get("call_id")).unwrap_or("").to_string(),
                name: String::new(),
                content: match item.get("output") {
                    Some(Value::String(s)) => s.clone(),
                    Some(v) => v.to_string(),
                    None => String::new(),
                },
                is_error: false,
            },
        ),
        Some("reasoning") => {}
        Some("message") | None => {
            let role = as_str(item.get("role")).unwrap_or("user");
            let mut parts = Vec::new();
            match item.get("content") {
                Some(Value::String(s)) => parts.push(Part::Text(s.clone())),
                Some(Value::Array(content)) => {
                    for c in content {
                        match as_str(c.get("type")) {
                            Some("input_text") | Some("output_text") | Some("text") => {
                                parts.push(Part::Text(as_str(c.get("text")).unwrap_or("").to_string()))
                            }
                            Some("input_image") => match as_str(c.get("image_url")) {
                                Some(url) => parts.push(Part::Image(ImageSource::from_url(url))),
                                None => req.untranslatable.push(format!("an image by file_id (input[{i}])")),
                            },
                            other => {
                                req.untranslatable.push(format!("content `{}` (input[{i}])", other.unwrap_or("?")))
                            }
                        }
                    }
                }
                _ => return Err(bad("input", format!("input[{i}].content must be a string or an array"))),
            }
            match role {
                "system" | "developer" => req.system.push(Message { role: Role::User, parts }.text()),
                "assistant" => {
                    for p in parts {
                        push(req, Role::Assistant, p);
                    }
                }
                _ => req.messages.push(Message { role: Role::User, parts }),
            }
        }
        Some(other) => req.untranslatable.push(format!("input item `{other}` (input[{i}])")),
    }
    Ok(())
}

fn usage_json(u: &Usage) -> Value {
    json!({
        "input_tokens": u.input,
        "input_tokens_details": {"cached_tokens": u.cached},
        "output_tokens": u.output,
        "output_tokens_details": {"reasoning_tokens": u.reasoning},
        "total_tokens": u.input + u.output,
    })
}

fn response_id(id: &str) -> String {
    if id.starts_with("resp_") {
        id.to_string()
    } else {
        format!("resp_{}", id.trim_start_matches("chatcmpl-").trim_start_matches("msg_"))
    }
}

fn envelope(
    id: &str,
    model: &str,
    created: i64,
    status: &str,
    output: Vec<Value>,
    usage: Option<&Usage>,
    finish: Option<FinishReason>,
) -> Value {
    let incomplete = finish == Some(FinishReason::Length);
    json!({
        "id": response_id(id),
        "object": "response",
        "created_at": created,
        "status": if incomplete && status == "completed" { "incomplete" } else { status },
        "incomplete_details": if incomplete { json!({"reason": "max_output_tokens"}) } else { Value::Null },
        "error": null,
        "model": model,
        "output": output,
        "parallel_tool_calls": true,
        "tool_choice": "auto",
        "tools": [],
        "usage": usage.map(usage_json),
    })
}

fn message_item(id: &str, text: &str, status: &str) -> Value {
    json!({"type": "message", "id": format!("msg_{id}"), "status": status, "role": "assistant",
           "content": [{"type": "output_text", "text": text, "annotations": []}]})
}

fn call_item(id: &str, call_id: &str, name: &str, arguments: &str, status: &str) -> Value {
    json!({"type": "function_call", "id": format!("fc_{id}"), "call_id": call_id, "name": name,
           "arguments": arguments, "status": status})
}

fn reasoning_item(id: &str, text: &str) -> Value {
    json!({"type": "reasoning", "id": format!("rs_{id}"), "summary": [{"type": "summary_text", "text": text}]})
}

pub fn render_response(r: &ChatResponse, model: &str, created: i64) -> Value {
    let mut output = Vec::new();
    let mut n = 0;
    for p in &r.parts {
        n += 1;
        let id = format!("{n}");
        match p {
            Part::Thinking { text, .. } => output.push(reasoning_item(&id, text)),
            Part::Text(t) => output.push(message_item(&id, t, "completed")),
            Part::ToolCall { id: call_id, name, arguments } => {
                output.push(call_item(&id, call_id, name, arguments, "completed"))
            }
            _ => {}
        }
    }
    let mut v = envelope(&r.id, model, created, "completed", output, r.usage.as_ref(), r.finish);
    v["output_text"] = r.text().into();
    v
}

/// What an output item being streamed is.
#[derive(Debug)]
enum Item {
    Message { text: String },
    Reasoning { text: String },
    Call { call_id: String, name: String, arguments: String },
}

/// Writes canonical events as Responses stream events.
#[derive(Debug)]
pub struct Encoder {
    model: String,
    created: i64,
    id: String,
    seq: u64,
    started: bool,
    /// Output items so far; the last may still be open.
    items: Vec<Item>,
    open: bool,
    finish: Option<FinishReason>,
    usage: Option<Usage>,
}

impl Encoder {
    pub fn new(model: &str, created: i64) -> Self {
        Encoder {
            model: model.to_string(),
            created,
            id: String::new(),
            seq: 0,
            started: false,
            items: Vec::new(),
            open: false,
            finish: None,
            usage: None,
        }
    }

    fn send(&mut self, out: &mut Vec<u8>, kind: &str, mut data: Value) {
        data["type"] = kind.into();
        data["sequence_number"] = self.seq.into();
        self.seq += 1;
        out.extend_from_slice(b"event: ");
        out.extend_from_slice(kind.as_bytes());
        out.push(b'\n');
        crate::sse::encode_data(out, &data.to_string());
    }

    fn start(&mut self, id: &str, out: &mut Vec<u8>) {
        if self.started {
            return;
        }
        self.started = true;
        self.id = response_id(if id.is_empty() { "oblivious" } else { id });
        let r = envelope(&self.id, &self.model, self.created, "in_progress", vec![], None, None);
        self.send(out, "response.created", json!({"response": r}));
        self.send(out, "response.in_progress", json!({"response": r}));
    }

    fn item_json(&self, index: usize, status: &str) -> Value {
        let id = format!("{}", index + 1);
        match &self.items[index] {
            Item::Message { text } => message_item(&id, text, status),
            Item::Reasoning { text } => reasoning_item(&id, text),
            Item::Call { call_id, name, arguments } => call_item(&id, call_id, name, arguments, status),
        }
    }

    fn close(&mut self, out: &mut Vec<u8>) {
        if !self.open {
            return;
        }
        self.open = false;
        let index = self.items.len() - 1;
        let item_id = self.item_json(index, "completed")["id"].clone();
        match &self.items[index] {
            Item::Message { text } => {
                let text = text.clone();
                let base = json!({"item_id": item_id, "output_index": index, "content_index": 0});
                let mut done = base.clone();
                done["text"] = text.clone().into();
                self.send(out, "response.output_text.done", done);
                let mut part = base;
                part["part"] = json!({"type": "output_text", "text": text, "annotations": []});
                self.send(out, "response.content_part.done", part);
            }
            Item::Call { arguments, .. } => {
                let arguments = arguments.clone();
                self.send(
                    out,
                    "response.function_call_arguments.done",
                    json!({"item_id": item_id, "output_index": index, "arguments": arguments}),
                );
            }
            Item::Reasoning { .. } => {}
        }
        let item = self.item_json(index, "completed");
        self.send(out, "response.output_item.done", json!({"output_index": index, "item": item}));
    }

    fn open_item(&mut self, item: Item, out: &mut Vec<u8>) -> usize {
        self.close(out);
        self.items.push(item);
        self.open = true;
        let index = self.items.len() - 1;
        let json_item = self.item_json(index, "in_progress");
        let item_id = json_item["id"].clone();
        let is_message = matches!(self.items[index], Item::Message { .. });
        self.send(out, "response.output_item.added", json!({"output_index": index, "item": json_item}));
        if is_message {
            self.send(
                out,
                "response.content_part.added",
                json!({"item_id": item_id, "output_index": index, "content_index": 0,
                       "part": {"type": "output_text", "text": "", "annotations": []}}),
            );
        }
        index
    }

    pub fn event(&mut self, ev: &Event, out: &mut Vec<u8>) {
        if let Event::Start { id, .. } = ev {
            self.start(id, out);
            return;
        }
        self.start("", out);
        match ev {
            Event::Text(t) => {
                let index = match self.items.last() {
                    Some(Item::Message { .. }) if self.open => self.items.len() - 1,
                    _ => self.open_item(Item::Message { text: String::new() }, out),
                };
                if let Some(Item::Message { text }) = self.items.get_mut(index) {
                    text.push_str(t);
                }
                let item_id = format!("msg_{}", index + 1);
                self.send(
                    out,
                    "response.output_text.delta",
                    json!({"item_id": item_id, "output_index": index, "content_index": 0, "delta": t}),
                );
            }
            Event::Thinking(t) => {
                let index = match self.items.last() {
                    Some(Item::Reasoning { .. }) if self.open => self.items.len() - 1,
                    _ => self.open_item(Item::Reasoning { text: String::new() }, out),
                };
                if let Some(Item::Reasoning { text }) = self.items.get_mut(index) {
                    text.push_str(t);
                }
            }
            Event::ToolCallStart { id, name, .. } => {
                self.open_item(Item::Call { call_id: id.clone(), name: name.clone(), arguments: String::new() }, out);
            }
            Event::ToolCallArgs { delta, .. } => {
                let index = self.items.len().saturating_sub(1);
                if let (true, Some(Item::Call { arguments, .. })) = (self.open, self.items.get_mut(index)) {
                    arguments.push_str(delta);
                    let item_id = format!("fc_{}", index + 1);
                    self.send(
                        out,
                        "response.function_call_arguments.delta",
                        json!({"item_id": item_id, "output_index": index, "delta": delta}),
                    );
                }
            }
            Event::Finish(f) => self.finish = Some(*f),
            Event::Usage(u) => self.usage = Some(*u),
            Event::Error { message } => {
                self.send(out, "error", json!({"code": "upstream_error", "message": message, "param": null}));
            }
            Event::Start { .. } | Event::ThinkingSignature(_) => {}
        }
    }

    pub fn finish(&mut self, out: &mut Vec<u8>, failed: bool) {
        if failed {
            return;
        }
        self.start("", out);
        self.close(out);
        let output: Vec<Value> = (0..self.items.len()).map(|i| self.item_json(i, "completed")).collect();
        let mut r =
            envelope(&self.id, &self.model, self.created, "completed", output, self.usage.as_ref(), self.finish);
        let text: String = self
            .items
            .iter()
            .filter_map(|i| match i {
                Item::Message { text } => Some(text.as_str()),
                _ => None,
            })
            .collect();
        r["output_text"] = text.into();
        let kind = if self.finish == Some(FinishReason::Length) { "response.incomplete" } else { "response.completed" };
        self.send(out, kind, json!({"response": r}));
    }
}

// ---- passthrough to OpenAI: reading its answers for usage ----

fn parse_usage(u: &Value) -> Usage {
    let n = |p: &str| u.pointer(p).and_then(Value::as_i64).unwrap_or(0);
    Usage {
        input: n("/input_tokens"),
        output: n("/output_tokens"),
        cached: n("/input_tokens_details/cached_tokens"),
        cache_write: 0,
        reasoning: n("/output_tokens_details/reasoning_tokens"),
    }
}

/// A Responses answer: its text, calls and usage (enough to bill it).
pub fn parse_response(v: &Value) -> ChatResponse {
    let mut r = ChatResponse {
        id: as_str(v.get("id")).unwrap_or("").to_string(),
        model: as_str(v.get("model")).unwrap_or("").to_string(),
        usage: v.get("usage").filter(|u| u.is_object()).map(parse_usage),
        ..ChatResponse::default()
    };
    for item in v.get("output").and_then(Value::as_array).into_iter().flatten() {
        match as_str(item.get("type")) {
            Some("message") => {
                for c in item.get("content").and_then(Value::as_array).into_iter().flatten() {
                    if let Some(t) = as_str(c.get("text")) {
                        r.parts.push(Part::Text(t.to_string()));
                    }
                }
            }
            Some("function_call") => r.parts.push(Part::ToolCall {
                id: as_str(item.get("call_id")).unwrap_or("").to_string(),
                name: as_str(item.get("name")).unwrap_or("").to_string(),
                arguments: as_str(item.get("arguments")).unwrap_or("").to_string(),
            }),
            _ => {}
        }
    }
    r
}

/// Watches a passed-through Responses stream.
#[derive(Debug, Default)]
pub struct Decoder;

impl Decoder {
    pub fn unit(&mut self, data: &str, out: &mut Vec<Event>) {
        let Ok(v) = serde_json::from_str::<Value>(data) else {
            out.push(Event::Error { message: format!("unreadable stream event: {}", super::snippet(data)) });
            return;
        };
        match as_str(v.get("type")).unwrap_or("") {
            "response.output_text.delta" => out.push(Event::Text(as_str(v.get("delta")).unwrap_or("").to_string())),
            "response.function_call_arguments.delta" => out.push(Event::ToolCallArgs {
                index: v.get("output_index").and_then(Value::as_u64).unwrap_or(0) as usize,
                delta: as_str(v.get("delta")).unwrap_or("").to_string(),
            }),
            "response.completed" | "response.incomplete" | "response.failed" => {
                if let Some(u) = v.pointer("/response/usage").filter(|u| u.is_object()) {
                    out.push(Event::Usage(parse_usage(u)));
                }
            }
            "error" => out.push(Event::Error { message: as_str(v.get("message")).unwrap_or("upstream error").into() }),
            _ => {}
        }
    }
}
