//! AWS Bedrock Converse and ConverseStream (upstream only). The model id goes
//! in the URL (`/model/{id}/converse`, `/converse-stream`); the stream is AWS
//! event-stream framing whose `:event-type` names each JSON payload. Shapes
//! from the Bedrock API reference (Converse, ConverseStream, ContentBlock,
//! ContentBlockDelta, TokenUsage) and botocore's `bedrock-runtime` service model.

use serde_json::{json, Map, Value};

use super::canon::*;
use super::{as_i64, as_str, push_turn};
use crate::ApiError;

fn image_format(media_type: &str) -> Option<&'static str> {
    match media_type {
        "image/png" => Some("png"),
        "image/jpeg" | "image/jpg" => Some("jpeg"),
        "image/gif" => Some("gif"),
        "image/webp" => Some("webp"),
        _ => None,
    }
}

/// The Converse body. Bedrock takes images only as bytes: an image by URL is refused.
pub fn build_request(req: &ChatRequest) -> Result<Value, ApiError> {
    let mut messages: Vec<Value> = Vec::new();
    for m in &req.messages {
        let role = if m.role == Role::Assistant { "assistant" } else { "user" };
        let mut blocks = Vec::new();
        for p in &m.parts {
            match p {
                Part::Text(t) if t.is_empty() => {}
                Part::Text(t) => blocks.push(json!({"text": t})),
                Part::Image(ImageSource::Base64 { media_type, data }) => {
                    let format = image_format(media_type).ok_or_else(|| {
                        ApiError::invalid(
                            "unsupported_conversion",
                            format!("Bedrock takes png, jpeg, gif or webp images, not {media_type}."),
                        )
                    })?;
                    blocks.push(json!({"image": {"format": format, "source": {"bytes": data}}}));
                }
                Part::Image(ImageSource::Url(_)) => {
                    return Err(ApiError::invalid(
                        "unsupported_conversion",
                        "A `bedrock` channel takes images as base64 data only, not by URL.",
                    ))
                }
                Part::ToolCall { id, name, arguments } => {
                    let input: Value = serde_json::from_str(arguments).unwrap_or_else(|_| json!({}));
                    blocks.push(json!({"toolUse": {"toolUseId": id, "name": name, "input": input}}));
                }
                Part::ToolResult { id, content, is_error, .. } => blocks.push(json!({"toolResult": {
                    "toolUseId": id, "content": [{"text": content}],
                    "status": if *is_error { "error" } else { "success" },
                }})),
                Part::Thinking { text, signature: Some(sig) } => {
                    blocks.push(json!({"reasoningContent": {"reasoningText": {"text": text, "signature": sig}}}))
                }
                Part::Thinking { .. } => {}
            }
        }
        push_turn(&mut messages, role, "content", blocks);
    }
    let mut b = Map::new();
    b.insert("messages".into(), Value::Array(messages));
    let mut system: Vec<Value> = req.system.iter().map(|s| json!({"text": s})).collect();
    if let Some(rf) = &req.response_format {
        // No JSON mode here: the instruction carries it.
        system.push(json!({"text": rf.instruction()}));
    }
    if !system.is_empty() {
        b.insert("system".into(), Value::Array(system));
    }
    let mut inference = Map::new();
    if let Some(n) = req.max_tokens {
        inference.insert("maxTokens".into(), n.into());
    }
    for (k, v) in [("temperature", req.temperature), ("topP", req.top_p)] {
        if let Some(x) = v.and_then(serde_json::Number::from_f64) {
            inference.insert(k.into(), Value::Number(x));
        }
    }
    if !req.stop.is_empty() {
        inference.insert("stopSequences".into(), json!(req.stop));
    }
    if !inference.is_empty() {
        b.insert("inferenceConfig".into(), Value::Object(inference));
    }
    let mut extra = Map::new();
    if let Some(k) = req.top_k {
        extra.insert("top_k".into(), k.into());
    }
    if let Some(r) = &req.reasoning {
        extra.insert("thinking".into(), json!({"type": "enabled", "budget_tokens": r.budget().max(1024)}));
    }
    if !extra.is_empty() {
        b.insert("additionalModelRequestFields".into(), Value::Object(extra));
    }
    if !req.tools.is_empty() && req.tool_choice != Some(ToolChoice::None) {
        let tools: Vec<Value> = req
            .tools
            .iter()
            .map(|t| {
                let mut spec = json!({"name": t.name, "inputSchema": {"json": t.parameters}});
                if let Some(d) = &t.description {
                    spec["description"] = d.clone().into();
                }
                json!({"toolSpec": spec})
            })
            .collect();
        let mut config = json!({"tools": tools});
        match &req.tool_choice {
            Some(ToolChoice::Required) => config["toolChoice"] = json!({"any": {}}),
            Some(ToolChoice::Named(n)) => config["toolChoice"] = json!({"tool": {"name": n}}),
            _ => {}
        }
        b.insert("toolConfig".into(), config);
    }
    Ok(Value::Object(b))
}

pub fn finish_reason(s: &str) -> FinishReason {
    match s {
        "max_tokens" | "model_context_window_exceeded" => FinishReason::Length,
        "tool_use" => FinishReason::ToolCalls,
        "guardrail_intervened" | "content_filtered" => FinishReason::ContentFilter,
        _ => FinishReason::Stop,
    }
}

pub fn parse_usage(u: &Value) -> Usage {
    let cached = as_i64(u.get("cacheReadInputTokens"));
    let cache_write = as_i64(u.get("cacheWriteInputTokens"));
    Usage {
        input: as_i64(u.get("inputTokens")) + cached + cache_write,
        output: as_i64(u.get("outputTokens")),
        cached,
        cache_write,
        reasoning: 0,
    }
}

pub fn parse_response(v: &Value) -> ChatResponse {
    let mut r = ChatResponse {
        finish: as_str(v.get("stopReason")).map(finish_reason),
        usage: v.get("usage").map(parse_usage),
        ..ChatResponse::default()
    };
    for b in v.pointer("/output/message/content").and_then(Value::as_array).into_iter().flatten() {
        if let Some(t) = as_str(b.get("text")) {
            r.parts.push(Part::Text(t.to_string()));
        } else if let Some(t) = b.get("toolUse") {
            r.parts.push(Part::ToolCall {
                id: as_str(t.get("toolUseId")).unwrap_or("").to_string(),
                name: as_str(t.get("name")).unwrap_or("").to_string(),
                arguments: t.get("input").map(Value::to_string).unwrap_or_else(|| "{}".into()),
            });
        } else if let Some(rt) = b.pointer("/reasoningContent/reasoningText") {
            r.parts.push(Part::Thinking {
                text: as_str(rt.get("text")).unwrap_or("").to_string(),
                signature: as_str(rt.get("signature")).map(str::to_string),
            });
        }
    }
    r
}

/// ConverseStream events (one per event-stream message).
#[derive(Debug, Default)]
pub struct Decoder {
    /// Content block index → tool call index.
    tools: Vec<(i64, usize)>,
}

impl Decoder {
    /// `event` is the `:event-type` header, or `exception` for error messages.
    pub fn unit(&mut self, event: &str, data: &str, out: &mut Vec<Event>) {
        let Ok(v) = serde_json::from_str::<Value>(data) else {
            out.push(Event::Error { message: format!("unreadable stream event: {}", super::snippet(data)) });
            return;
        };
        let block = as_i64(v.get("contentBlockIndex"));
        match event {
            "messageStart" => out.push(Event::Start { id: String::new(), model: String::new() }),
            "contentBlockStart" => {
                if let Some(t) = v.pointer("/start/toolUse") {
                    let index = self.tools.len();
                    self.tools.push((block, index));
                    out.push(Event::ToolCallStart {
                        index,
                        id: as_str(t.get("toolUseId")).unwrap_or("").to_string(),
                        name: as_str(t.get("name")).unwrap_or("").to_string(),
                    });
                }
            }
            "contentBlockDelta" => {
                let d = v.get("delta").cloned().unwrap_or(Value::Null);
                if let Some(t) = as_str(d.get("text")) {
                    out.push(Event::Text(t.to_string()));
                } else if let Some(input) = d.pointer("/toolUse/input") {
                    let index = self.tools.iter().find(|(b, _)| *b == block).map_or(0, |(_, i)| *i);
                    let delta = input.as_str().map_or_else(|| input.to_string(), str::to_string);
                    out.push(Event::ToolCallArgs { index, delta });
                } else if let Some(rc) = d.get("reasoningContent") {
                    if let Some(t) = as_str(rc.get("text")) {
                        out.push(Event::Thinking(t.to_string()));
                    }
                    if let Some(s) = as_str(rc.get("signature")) {
                        out.push(Event::ThinkingSignature(s.to_string()));
                    }
                }
            }
            "messageStop" => {
                if let Some(s) = as_str(v.get("stopReason")) {
                    out.push(Event::Finish(finish_reason(s)));
                }
            }
            "metadata" => {
                if let Some(u) = v.get("usage") {
                    out.push(Event::Usage(parse_usage(u)));
                }
            }
            "exception" => {
                out.push(Event::Error { message: parse_error(&v).unwrap_or_else(|| "upstream error".into()) })
            }
            _ => {}
        }
    }
}

pub fn parse_error(v: &Value) -> Option<String> {
    as_str(v.get("message")).or(as_str(v.get("Message"))).map(str::to_string)
}
