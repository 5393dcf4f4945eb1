//! Cohere v2 Chat (upstream only): `POST /v2/chat`, streamed as SSE events
//! whose JSON carries a `type` (`message-start`, `content-delta`,
//! `tool-call-start`/`-delta`/`-end`, `message-end`…). Shapes from Cohere's
//! API reference (Chat v2, "Streaming") and cohere-python's `v2` types.

use serde_json::{json, Map, Value};

use super::canon::*;
use super::{as_i64, as_str};

pub fn build_request(req: &ChatRequest, model: &str, stream: bool) -> Value {
    // Cohere v2 takes OpenAI's message shape; an assistant turn of tool calls alone leaves `content` out.
    let mut messages = super::openai::messages(req);
    for m in &mut messages {
        if let Some(o) = m.as_object_mut().filter(|o| o.get("content").is_some_and(Value::is_null)) {
            o.remove("content");
        }
    }
    let mut b = Map::new();
    b.insert("model".into(), model.into());
    b.insert("messages".into(), Value::Array(messages));
    if let Some(n) = req.max_tokens {
        b.insert("max_tokens".into(), n.into());
    }
    for (k, v) in [
        ("temperature", req.temperature),
        ("p", req.top_p),
        ("presence_penalty", req.presence_penalty),
        ("frequency_penalty", req.frequency_penalty),
    ] {
        if let Some(x) = v.and_then(serde_json::Number::from_f64) {
            b.insert(k.into(), Value::Number(x));
        }
    }
    if let Some(k) = req.top_k {
        b.insert("k".into(), k.into());
    }
    if let Some(s) = req.seed {
        b.insert("seed".into(), s.into());
    }
    if !req.stop.is_empty() {
        b.insert("stop_sequences".into(), json!(req.stop));
    }
    match &req.response_format {
        Some(ResponseFormat::JsonObject) => {
            b.insert("response_format".into(), json!({"type": "json_object"}));
        }
        Some(ResponseFormat::JsonSchema { schema, .. }) => {
            b.insert("response_format".into(), json!({"type": "json_object", "json_schema": schema}));
        }
        None => {}
    }
    if !req.tools.is_empty() {
        b.insert("tools".into(), Value::Array(super::openai::tools(req)));
        match &req.tool_choice {
            Some(ToolChoice::Required) | Some(ToolChoice::Named(_)) => {
                b.insert("tool_choice".into(), "REQUIRED".into());
            }
            Some(ToolChoice::None) => {
                b.insert("tool_choice".into(), "NONE".into());
            }
            _ => {}
        }
    }
    if let Some(r) = &req.reasoning {
        b.insert("thinking".into(), json!({"type": "enabled", "token_budget": r.budget()}));
    }
    if stream {
        b.insert("stream".into(), true.into());
    }
    Value::Object(b)
}

pub fn finish_reason(s: &str) -> FinishReason {
    match s {
        "MAX_TOKENS" => FinishReason::Length,
        "TOOL_CALL" => FinishReason::ToolCalls,
        _ => FinishReason::Stop,
    }
}

pub fn parse_usage(u: &Value) -> Usage {
    let tokens = u.get("tokens").or(u.get("billed_units")).cloned().unwrap_or(Value::Null);
    Usage { input: as_i64(tokens.get("input_tokens")), output: as_i64(tokens.get("output_tokens")), ..Usage::default() }
}

pub fn parse_response(v: &Value) -> ChatResponse {
    let mut r = ChatResponse {
        id: as_str(v.get("id")).unwrap_or("").to_string(),
        finish: as_str(v.get("finish_reason")).map(finish_reason),
        usage: v.get("usage").map(parse_usage),
        ..ChatResponse::default()
    };
    let m = v.get("message").cloned().unwrap_or(Value::Null);
    for c in m.get("content").and_then(Value::as_array).into_iter().flatten() {
        match as_str(c.get("type")) {
            Some("thinking") => r
                .parts
                .push(Part::Thinking { text: as_str(c.get("thinking")).unwrap_or("").to_string(), signature: None }),
            _ => {
                if let Some(t) = as_str(c.get("text")) {
                    r.parts.push(Part::Text(t.to_string()));
                }
            }
        }
    }
    for call in m.get("tool_calls").and_then(Value::as_array).into_iter().flatten() {
        r.parts.push(Part::ToolCall {
            id: as_str(call.get("id")).unwrap_or("").to_string(),
            name: as_str(call.pointer("/function/name")).unwrap_or("").to_string(),
            arguments: as_str(call.pointer("/function/arguments")).unwrap_or("{}").to_string(),
        });
    }
    r
}

#[derive(Debug, Default)]
pub struct Decoder {
    calls: usize,
}

impl Decoder {
    pub fn unit(&mut self, data: &str, out: &mut Vec<Event>) {
        let Ok(v) = serde_json::from_str::<Value>(data) else {
            out.push(Event::Error { message: format!("unreadable stream event: {}", super::snippet(data)) });
            return;
        };
        let m = v.pointer("/delta/message").cloned().unwrap_or(Value::Null);
        match as_str(v.get("type")).unwrap_or("") {
            "message-start" => {
                out.push(Event::Start { id: as_str(v.get("id")).unwrap_or("").to_string(), model: String::new() })
            }
            "content-delta" => {
                if let Some(t) = as_str(m.pointer("/content/text")) {
                    out.push(Event::Text(t.to_string()));
                }
                if let Some(t) = as_str(m.pointer("/content/thinking")) {
                    out.push(Event::Thinking(t.to_string()));
                }
            }
            "tool-call-start" => {
                let c = m.get("tool_calls").cloned().unwrap_or(Value::Null);
                let index = self.calls;
                self.calls += 1;
                out.push(Event::ToolCallStart {
                    index,
                    id: as_str(c.get("id")).unwrap_or("").to_string(),
                    name: as_str(c.pointer("/function/name")).unwrap_or("").to_string(),
                });
                if let Some(a) = as_str(c.pointer("/function/arguments")).filter(|a| !a.is_empty()) {
                    out.push(Event::ToolCallArgs { index, delta: a.to_string() });
                }
            }
            "tool-call-delta" => {
                if let Some(a) = as_str(m.pointer("/tool_calls/function/arguments")) {
                    out.push(Event::ToolCallArgs { index: self.calls.saturating_sub(1), delta: a.to_string() });
                }
            }
            "message-end" => {
                if let Some(f) = as_str(v.pointer("/delta/finish_reason")) {
                    out.push(Event::Finish(finish_reason(f)));
                }
                if let Some(u) = v.pointer("/delta/usage") {
                    out.push(Event::Usage(parse_usage(u)));
                }
            }
            _ => {}
        }
    }
}

pub fn parse_error(v: &Value) -> Option<String> {
    as_str(v.get("message")).map(str::to_string)
}
