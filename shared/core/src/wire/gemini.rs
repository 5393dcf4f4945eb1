//! Google Gemini `generateContent`: requests in and out, answers in and out,
//! and `streamGenerateContent` (SSE with `alt=sse`, else one JSON array sent
//! element by element). Shapes from the Gemini API reference (models.generateContent,
//! GenerateContentResponse, UsageMetadata, errors) and google-genai's
//! `_api_client.py`, which reads `data:` lines or a JSON array.

use serde_json::{json, Map, Value};

use super::canon::*;
use super::{as_i64, as_str, bad, push_turn};
use crate::ApiError;

// ---- requests ----

/// `body` is a `GenerateContentRequest`; the model comes from the path.
pub fn parse_request(body: &Map<String, Value>, model: &str, stream: bool) -> Result<ChatRequest, ApiError> {
    let g = body.get("generationConfig").or(body.get("generation_config")).cloned().unwrap_or(Value::Null);
    let f = |k: &str| g.get(k).and_then(Value::as_f64);
    let mut req = ChatRequest {
        model: model.to_string(),
        stream,
        max_tokens: g.get("maxOutputTokens").and_then(Value::as_i64),
        temperature: f("temperature"),
        top_p: f("topP"),
        top_k: g.get("topK").and_then(Value::as_f64).map(|k| k as i64),
        seed: g.get("seed").and_then(Value::as_i64),
        presence_penalty: f("presencePenalty"),
        frequency_penalty: f("frequencyPenalty"),
        stop: g
            .get("stopSequences")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(|s| s.as_str().map(str::to_string)).collect())
            .unwrap_or_default(),
        ..ChatRequest::default()
    };
    if let Some(n) = g.get("candidateCount").and_then(Value::as_i64).filter(|n| *n != 1) {
        req.n = Some(n);
    }
    if as_str(g.get("responseMimeType")) == Some("application/json") {
        req.response_format = Some(match g.get("responseJsonSchema").or(g.get("responseSchema")) {
            Some(schema) => {
                ResponseFormat::JsonSchema { name: "response".into(), schema: schema.clone(), strict: false }
            }
            None => ResponseFormat::JsonObject,
        });
    }
    if let Some(tc) = g.get("thinkingConfig") {
        if tc.get("includeThoughts").and_then(Value::as_bool) == Some(true)
            || tc.get("thinkingBudget").and_then(Value::as_i64).is_some_and(|b| b > 0)
        {
            req.reasoning = Some(Reasoning {
                effort: as_str(tc.get("thinkingLevel")).map(str::to_lowercase),
                budget_tokens: tc.get("thinkingBudget").and_then(Value::as_i64).filter(|b| *b > 0),
            });
        }
    }
    if let Some(si) = body.get("systemInstruction").or(body.get("system_instruction")) {
        let text = match si {
            Value::String(s) => s.clone(),
            v => v
                .get("parts")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|p| as_str(p.get("text")))
                .collect(),
        };
        req.system.push(text);
    }
    let contents = body
        .get("contents")
        .and_then(Value::as_array)
        .ok_or_else(|| bad("contents", "* GenerateContentRequest.contents: contents is not specified"))?;
    for (i, c) in contents.iter().enumerate() {
        let role = match as_str(c.get("role")) {
            Some("model") => Role::Assistant,
            _ => Role::User,
        };
        let mut parts = Vec::new();
        let mut results = Vec::new();
        for p in c.get("parts").and_then(Value::as_array).into_iter().flatten() {
            if let Some(t) = as_str(p.get("text")) {
                if p.get("thought").and_then(Value::as_bool) == Some(true) {
                    let signature = as_str(p.get("thoughtSignature")).map(str::to_string);
                    parts.push(Part::Thinking { text: t.to_string(), signature });
                } else {
                    parts.push(Part::Text(t.to_string()));
                }
            } else if let Some(d) = p.get("inlineData").or(p.get("inline_data")) {
                parts.push(Part::Image(ImageSource::Base64 {
                    media_type: as_str(d.get("mimeType")).unwrap_or("image/png").to_string(),
                    data: as_str(d.get("data")).unwrap_or("").to_string(),
                }));
            } else if let Some(d) = p.get("fileData").or(p.get("file_data")) {
                parts.push(Part::Image(ImageSource::Url(as_str(d.get("fileUri")).unwrap_or("").to_string())));
            } else if let Some(fc) = p.get("functionCall") {
                parts.push(Part::ToolCall {
                    id: as_str(fc.get("id")).unwrap_or("").to_string(),
                    name: as_str(fc.get("name")).unwrap_or("").to_string(),
                    arguments: fc.get("args").map(Value::to_string).unwrap_or_else(|| "{}".into()),
                });
            } else if let Some(fr) = p.get("functionResponse") {
                results.push(Part::ToolResult {
                    id: as_str(fr.get("id")).unwrap_or("").to_string(),
                    name: as_str(fr.get("name")).unwrap_or("").to_string(),
                    content: result_text(fr.get("response")),
                    is_error: fr.pointer("/response/error").is_some(),
                });
            } else if p.as_object().is_some_and(|o| o.keys().all(|k| k == "thoughtSignature")) {
                // A bare signature part: nothing to carry across formats.
            } else {
                req.untranslatable.push(format!(
                    "part {} (contents[{i}])",
                    p.as_object().and_then(|o| o.keys().next()).map_or("?", |k| k.as_str())
                ));
            }
        }
        if !results.is_empty() {
            req.messages.push(Message { role: Role::Tool, parts: results });
        }
        if !parts.is_empty() {
            req.messages.push(Message { role, parts });
        }
    }
    for t in body.get("tools").and_then(Value::as_array).into_iter().flatten() {
        let decls = t.get("functionDeclarations").or(t.get("function_declarations"));
        match decls.and_then(Value::as_array) {
            Some(decls) => {
                for d in decls {
                    req.tools.push(Tool {
                        name: as_str(d.get("name")).unwrap_or("").to_string(),
                        description: as_str(d.get("description")).map(str::to_string),
                        parameters: d
                            .get("parametersJsonSchema")
                            .or(d.get("parameters"))
                            .map(schema_from_gemini)
                            .unwrap_or_else(|| json!({"type": "object", "properties": {}})),
                    });
                }
            }
            None => req
                .untranslatable
                .push(format!("tool `{}`", t.as_object().and_then(|o| o.keys().next()).map_or("?", |k| k.as_str()))),
        }
    }
    if let Some(fcc) = body.get("toolConfig").and_then(|t| t.get("functionCallingConfig")) {
        let allowed: Vec<&str> = fcc
            .get("allowedFunctionNames")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        req.tool_choice = match as_str(fcc.get("mode")) {
            Some("ANY") if allowed.len() == 1 => Some(ToolChoice::Named(allowed[0].to_string())),
            Some("ANY") => Some(ToolChoice::Required),
            Some("NONE") => Some(ToolChoice::None),
            Some("AUTO") => Some(ToolChoice::Auto),
            _ => None,
        };
    }
    req.link_tool_results();
    Ok(req)
}

/// A function response as text: its `result`/`output` string, else its JSON.
fn result_text(r: Option<&Value>) -> String {
    match r {
        None => String::new(),
        Some(v) => match v.get("result").or(v.get("output")).or(v.get("content")) {
            Some(Value::String(s)) if v.as_object().is_some_and(|o| o.len() == 1) => s.clone(),
            _ => v.to_string(),
        },
    }
}

/// Gemini's OpenAPI-subset schemas spell types in capitals (`OBJECT`); JSON Schema wants lowercase.
fn schema_from_gemini(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, v)| match (k.as_str(), v) {
                    ("type", Value::String(t)) => (k.clone(), Value::String(t.to_lowercase())),
                    _ => (k.clone(), schema_from_gemini(v)),
                })
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(schema_from_gemini).collect()),
        other => other.clone(),
    }
}

/// JSON Schema keywords Gemini's `parameters` refuses; they are dropped (a debug log says so).
const UNSUPPORTED_SCHEMA_KEYS: &[&str] = &["$schema", "additionalProperties", "strict", "$id", "$defs", "definitions"];

fn schema_to_gemini(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(k, _)| {
                    let drop = UNSUPPORTED_SCHEMA_KEYS.contains(&k.as_str());
                    if drop {
                        tracing::debug!(key = %k, "schema keyword Gemini does not take: dropped");
                    }
                    !drop
                })
                .map(|(k, v)| match k.as_str() {
                    // Property names are data, not schema keywords.
                    "properties" => (
                        k.clone(),
                        Value::Object(
                            v.as_object()
                                .map(|p| p.iter().map(|(n, s)| (n.clone(), schema_to_gemini(s))).collect())
                                .unwrap_or_default(),
                        ),
                    ),
                    _ => (k.clone(), schema_to_gemini(v)),
                })
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(schema_to_gemini).collect()),
        other => other.clone(),
    }
}

fn image_part(src: &ImageSource) -> Value {
    match src {
        ImageSource::Base64 { media_type, data } => json!({"inlineData": {"mimeType": media_type, "data": data}}),
        ImageSource::Url(u) => json!({"fileData": {"mimeType": guess_mime(u), "fileUri": u}}),
    }
}

fn guess_mime(url: &str) -> &'static str {
    let lower = url.to_ascii_lowercase();
    if lower.ends_with(".jpg") || lower.ends_with(".jpeg") {
        "image/jpeg"
    } else if lower.ends_with(".webp") {
        "image/webp"
    } else if lower.ends_with(".gif") {
        "image/gif"
    } else {
        "image/png"
    }
}

/// The `GenerateContentRequest` (the model goes in the URL).
pub fn build_request(req: &ChatRequest) -> Value {
    let mut contents: Vec<Value> = Vec::new();
    for m in &req.messages {
        let role = if m.role == Role::Assistant { "model" } else { "user" };
        let mut parts = Vec::new();
        for p in &m.parts {
            match p {
                Part::Text(t) => parts.push(json!({"text": t})),
                Part::Image(src) => parts.push(image_part(src)),
                Part::ToolCall { name, arguments, .. } => {
                    let args: Value = serde_json::from_str(arguments).unwrap_or_else(|_| json!({}));
                    parts.push(json!({"functionCall": {"name": name, "args": args}}));
                }
                Part::ToolResult { name, content, is_error, .. } => {
                    let response = match serde_json::from_str::<Value>(content) {
                        Ok(v @ Value::Object(_)) => v,
                        _ if *is_error => json!({"error": content}),
                        _ => json!({"result": content}),
                    };
                    parts.push(json!({"functionResponse": {"name": name, "response": response}}));
                }
                Part::Thinking { .. } => {}
            }
        }
        push_turn(&mut contents, role, "parts", parts);
    }
    let mut b = Map::new();
    b.insert("contents".into(), Value::Array(contents));
    if !req.system.is_empty() {
        b.insert("systemInstruction".into(), json!({"parts": [{"text": req.system.join("\n\n")}]}));
    }
    let mut g = Map::new();
    if let Some(n) = req.max_tokens {
        g.insert("maxOutputTokens".into(), n.into());
    }
    for (k, v) in [
        ("temperature", req.temperature),
        ("topP", req.top_p),
        ("presencePenalty", req.presence_penalty),
        ("frequencyPenalty", req.frequency_penalty),
    ] {
        if let Some(x) = v.and_then(serde_json::Number::from_f64) {
            g.insert(k.into(), Value::Number(x));
        }
    }
    if let Some(k) = req.top_k {
        g.insert("topK".into(), k.into());
    }
    if let Some(s) = req.seed {
        g.insert("seed".into(), s.into());
    }
    if !req.stop.is_empty() {
        g.insert("stopSequences".into(), json!(req.stop));
    }
    match &req.response_format {
        Some(ResponseFormat::JsonObject) => {
            g.insert("responseMimeType".into(), "application/json".into());
        }
        Some(ResponseFormat::JsonSchema { schema, .. }) => {
            g.insert("responseMimeType".into(), "application/json".into());
            g.insert("responseJsonSchema".into(), schema.clone());
        }
        None => {}
    }
    if let Some(r) = &req.reasoning {
        g.insert("thinkingConfig".into(), json!({"includeThoughts": true, "thinkingBudget": r.budget()}));
    }
    if !g.is_empty() {
        b.insert("generationConfig".into(), Value::Object(g));
    }
    if !req.tools.is_empty() {
        let decls: Vec<Value> = req
            .tools
            .iter()
            .map(|t| {
                let mut d = json!({"name": t.name, "parameters": schema_to_gemini(&t.parameters)});
                if let Some(desc) = &t.description {
                    d["description"] = desc.clone().into();
                }
                d
            })
            .collect();
        b.insert("tools".into(), json!([{"functionDeclarations": decls}]));
    }
    if let Some(tc) = &req.tool_choice {
        let cfg = match tc {
            ToolChoice::Auto => json!({"mode": "AUTO"}),
            ToolChoice::None => json!({"mode": "NONE"}),
            ToolChoice::Required => json!({"mode": "ANY"}),
            ToolChoice::Named(n) => json!({"mode": "ANY", "allowedFunctionNames": [n]}),
        };
        b.insert("toolConfig".into(), json!({"functionCallingConfig": cfg}));
    }
    Value::Object(b)
}

// ---- answers ----

pub fn parse_usage(u: &Value) -> Usage {
    let thoughts = as_i64(u.get("thoughtsTokenCount"));
    Usage {
        input: as_i64(u.get("promptTokenCount")) + as_i64(u.get("toolUsePromptTokenCount")),
        output: as_i64(u.get("candidatesTokenCount")) + thoughts,
        cached: as_i64(u.get("cachedContentTokenCount")),
        cache_write: 0,
        reasoning: thoughts,
    }
}

pub fn usage_json(u: &Usage) -> Value {
    let mut v = json!({
        "promptTokenCount": u.input,
        "candidatesTokenCount": u.output - u.reasoning,
        "totalTokenCount": u.input + u.output,
    });
    if u.cached > 0 {
        v["cachedContentTokenCount"] = u.cached.into();
    }
    if u.reasoning > 0 {
        v["thoughtsTokenCount"] = u.reasoning.into();
    }
    v
}

pub fn finish_reason(s: &str) -> FinishReason {
    match s {
        "MAX_TOKENS" => FinishReason::Length,
        "SAFETY" | "RECITATION" | "BLOCKLIST" | "PROHIBITED_CONTENT" | "SPII" | "IMAGE_SAFETY" => {
            FinishReason::ContentFilter
        }
        _ => FinishReason::Stop,
    }
}

fn finish_str(f: FinishReason) -> &'static str {
    match f {
        FinishReason::Stop | FinishReason::ToolCalls => "STOP",
        FinishReason::Length => "MAX_TOKENS",
        FinishReason::ContentFilter => "SAFETY",
    }
}

pub fn parse_response(v: &Value) -> ChatResponse {
    let mut r = ChatResponse {
        id: as_str(v.get("responseId")).unwrap_or("").to_string(),
        model: as_str(v.get("modelVersion")).unwrap_or("").to_string(),
        usage: v.get("usageMetadata").map(parse_usage),
        ..ChatResponse::default()
    };
    let mut calls = 0;
    if let Some(c) = v.pointer("/candidates/0") {
        for p in c.pointer("/content/parts").and_then(Value::as_array).into_iter().flatten() {
            if let Some(fc) = p.get("functionCall") {
                calls += 1;
                r.parts.push(Part::ToolCall {
                    id: as_str(fc.get("id")).map_or_else(|| format!("call_{calls}"), str::to_string),
                    name: as_str(fc.get("name")).unwrap_or("").to_string(),
                    arguments: fc.get("args").map(Value::to_string).unwrap_or_else(|| "{}".into()),
                });
            } else if let Some(t) = as_str(p.get("text")) {
                if p.get("thought").and_then(Value::as_bool) == Some(true) {
                    r.parts.push(Part::Thinking { text: t.to_string(), signature: None });
                } else {
                    r.parts.push(Part::Text(t.to_string()));
                }
            }
        }
        r.finish = as_str(c.get("finishReason")).map(finish_reason);
    }
    if calls > 0 && r.finish == Some(FinishReason::Stop) {
        r.finish = Some(FinishReason::ToolCalls);
    }
    r
}

fn response_parts(parts: &[Part]) -> Vec<Value> {
    parts
        .iter()
        .filter_map(|p| match p {
            Part::Text(t) => Some(json!({"text": t})),
            Part::Thinking { text, .. } => Some(json!({"text": text, "thought": true})),
            Part::ToolCall { name, arguments, .. } => {
                let args: Value = serde_json::from_str(arguments).unwrap_or_else(|_| json!({}));
                Some(json!({"functionCall": {"name": name, "args": args}}))
            }
            _ => None,
        })
        .collect()
}

pub fn render_response(r: &ChatResponse, model: &str) -> Value {
    let mut v = json!({
        "candidates": [{
            "content": {"role": "model", "parts": response_parts(&r.parts)},
            "finishReason": finish_str(r.finish.unwrap_or(FinishReason::Stop)),
            "index": 0,
        }],
        "modelVersion": model,
        "responseId": r.id,
    });
    if let Some(u) = &r.usage {
        v["usageMetadata"] = usage_json(u);
    }
    v
}

// ---- streams ----

#[derive(Debug, Default)]
pub struct Decoder {
    started: bool,
    calls: usize,
}

impl Decoder {
    /// One `GenerateContentResponse` (an SSE `data:` or a JSON array element).
    pub fn unit(&mut self, data: &str, out: &mut Vec<Event>) {
        let Ok(v) = serde_json::from_str::<Value>(data) else {
            out.push(Event::Error { message: format!("unreadable stream chunk: {}", super::snippet(data)) });
            return;
        };
        if let Some(e) = v.get("error") {
            out.push(Event::Error { message: as_str(e.get("message")).unwrap_or("upstream error").to_string() });
            return;
        }
        if !self.started {
            self.started = true;
            out.push(Event::Start {
                id: as_str(v.get("responseId")).unwrap_or("").to_string(),
                model: as_str(v.get("modelVersion")).unwrap_or("").to_string(),
            });
        }
        let r = parse_response(&v);
        for p in r.parts {
            match p {
                Part::Text(t) => out.push(Event::Text(t)),
                Part::Thinking { text, .. } => out.push(Event::Thinking(text)),
                Part::ToolCall { id, name, arguments } => {
                    let index = self.calls;
                    self.calls += 1;
                    let id = if id.starts_with("call_") { format!("call_{}", index + 1) } else { id };
                    out.push(Event::ToolCallStart { index, id, name });
                    out.push(Event::ToolCallArgs { index, delta: arguments });
                }
                _ => {}
            }
        }
        if let Some(f) = r.finish {
            let f = if self.calls > 0 && f == FinishReason::Stop { FinishReason::ToolCalls } else { f };
            out.push(Event::Finish(f));
        }
        if let Some(u) = r.usage {
            out.push(Event::Usage(u));
        }
    }
}

/// Writes events as `GenerateContentResponse` chunks. Gemini sends whole
/// function calls, so a call's argument deltas are held until it is complete
/// (the next call, other content, or the end) — the one place a stream waits.
#[derive(Debug)]
pub struct Encoder {
    model: String,
    sse: bool,
    id: String,
    sent_any: bool,
    call: Option<(String, String)>,
    finish: Option<FinishReason>,
    usage: Option<Usage>,
}

impl Encoder {
    /// `sse`: `alt=sse` framing; else a JSON array.
    pub fn new(model: &str, sse: bool) -> Self {
        Encoder {
            model: model.to_string(),
            sse,
            id: String::new(),
            sent_any: false,
            call: None,
            finish: None,
            usage: None,
        }
    }

    fn emit(&mut self, out: &mut Vec<u8>, v: &Value) {
        if self.sse {
            out.extend_from_slice(b"data: ");
            out.extend_from_slice(v.to_string().as_bytes());
            out.extend_from_slice(b"\r\n\r\n");
        } else {
            out.extend_from_slice(if self.sent_any { b",\r\n" } else { b"[" });
            out.extend_from_slice(v.to_string().as_bytes());
        }
        self.sent_any = true;
    }

    fn chunk(&mut self, out: &mut Vec<u8>, parts: Vec<Value>) {
        let v = json!({
            "candidates": [{"content": {"role": "model", "parts": parts}, "index": 0}],
            "modelVersion": self.model,
            "responseId": self.id,
        });
        self.emit(out, &v);
    }

    fn flush_call(&mut self, out: &mut Vec<u8>) {
        if let Some((name, args)) = self.call.take() {
            let args: Value = serde_json::from_str(&args).unwrap_or_else(|_| json!({}));
            self.chunk(out, vec![json!({"functionCall": {"name": name, "args": args}})]);
        }
    }

    pub fn event(&mut self, ev: &Event, out: &mut Vec<u8>) {
        match ev {
            Event::Start { id, .. } => self.id = id.clone(),
            Event::Text(t) => {
                self.flush_call(out);
                self.chunk(out, vec![json!({"text": t})]);
            }
            Event::Thinking(t) => {
                self.flush_call(out);
                self.chunk(out, vec![json!({"text": t, "thought": true})]);
            }
            Event::ThinkingSignature(_) => {}
            Event::ToolCallStart { name, .. } => {
                self.flush_call(out);
                self.call = Some((name.clone(), String::new()));
            }
            Event::ToolCallArgs { delta, .. } => {
                if let Some((_, args)) = &mut self.call {
                    args.push_str(delta);
                }
            }
            Event::Finish(f) => self.finish = Some(*f),
            Event::Usage(u) => self.usage = Some(*u),
            Event::Error { message } => {
                self.flush_call(out);
                let v = error_body(502, message);
                self.emit(out, &v);
            }
        }
    }

    /// The last chunk carries the finish reason and usage; a JSON array closes.
    pub fn finish(&mut self, out: &mut Vec<u8>, failed: bool) {
        self.flush_call(out);
        if !failed {
            let mut v = json!({
                "candidates": [{
                    "content": {"role": "model", "parts": [{"text": ""}]},
                    "finishReason": finish_str(self.finish.unwrap_or(FinishReason::Stop)),
                    "index": 0,
                }],
                "modelVersion": self.model,
                "responseId": self.id,
            });
            if let Some(u) = &self.usage {
                v["usageMetadata"] = usage_json(u);
            }
            self.emit(out, &v);
        }
        if !self.sse {
            out.extend_from_slice(if self.sent_any { b"]" } else { b"[]" });
        }
    }
}

// ---- errors ----

pub fn parse_error(v: &Value) -> Option<String> {
    let e = v.get("error").or_else(|| v.as_array().and_then(|a| a.first()).and_then(|f| f.get("error")))?;
    Some(as_str(e.get("message")).unwrap_or("upstream error").to_string())
}

pub fn status_name(status: u16) -> &'static str {
    match status {
        400 | 413 => "INVALID_ARGUMENT",
        401 => "UNAUTHENTICATED",
        403 => "PERMISSION_DENIED",
        404 => "NOT_FOUND",
        409 => "ABORTED",
        429 => "RESOURCE_EXHAUSTED",
        499 => "CANCELLED",
        501 => "UNIMPLEMENTED",
        503 => "UNAVAILABLE",
        504 => "DEADLINE_EXCEEDED",
        _ => "INTERNAL",
    }
}

pub fn error_body(status: u16, message: &str) -> Value {
    json!({"error": {"code": status, "message": message, "status": status_name(status)}})
}
