//! Wire formats: the canonical conversation ([`canon`]) and one module per
//! provider format converting into and out of it, for requests, whole answers,
//! streams and errors. A format a client speaks is *inbound*; a format a
//! channel speaks is *upstream*; any pair works through the canonical model.

pub mod anthropic;
pub mod bedrock;
pub mod canon;
pub mod cohere;
pub mod eventstream;
pub mod frame;
pub mod gemini;
pub mod openai;
pub mod responses;

use serde_json::{Map, Value};

use crate::sse::SseDecoder;
use crate::{ApiError, ErrorKind};
use canon::{ChatRequest, ChatResponse, Event};
use frame::{Framer, JsonArrayDecoder, Unit};

/// A chat wire format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wire {
    OpenAi,
    Anthropic,
    Gemini,
    /// AWS Bedrock Converse (upstream only).
    Bedrock,
    /// Cohere v2 chat (upstream only).
    Cohere,
    /// OpenAI's Responses API, passed through to OpenAI (read for usage only).
    Responses,
}

impl Wire {
    pub fn as_str(self) -> &'static str {
        match self {
            Wire::OpenAi => "openai",
            Wire::Anthropic => "anthropic",
            Wire::Gemini => "gemini",
            Wire::Bedrock => "bedrock",
            Wire::Cohere => "cohere",
            Wire::Responses => "openai-responses",
        }
    }
}

/// A wire format clients speak to us.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Inbound {
    OpenAi,
    Anthropic,
    Gemini,
    /// OpenAI's Responses API (converted when the channel is not OpenAI).
    Responses,
}

impl Inbound {
    pub fn wire(self) -> Wire {
        match self {
            Inbound::OpenAi => Wire::OpenAi,
            Inbound::Anthropic => Wire::Anthropic,
            Inbound::Gemini => Wire::Gemini,
            Inbound::Responses => Wire::Responses,
        }
    }
}

// ---- small JSON helpers shared by the format modules ----

pub(crate) fn as_str(v: Option<&Value>) -> Option<&str> {
    v.and_then(Value::as_str)
}

pub(crate) fn as_i64(v: Option<&Value>) -> i64 {
    v.and_then(Value::as_i64).unwrap_or(0)
}

pub(crate) fn bad(param: &'static str, message: impl Into<String>) -> ApiError {
    ApiError::invalid("invalid_request_error", message).with_param(param)
}

pub(crate) fn arr<'a>(v: Option<&'a Value>, param: &'static str) -> Result<&'a Vec<Value>, ApiError> {
    match v {
        Some(Value::Array(a)) => Ok(a),
        None | Some(Value::Null) => Err(bad(param, format!("Missing required parameter: '{param}'."))),
        Some(_) => Err(bad(param, format!("Invalid type for '{param}': expected an array."))),
    }
}

pub(crate) fn opt_i64(body: &Map<String, Value>, key: &'static str) -> Result<Option<i64>, ApiError> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => {
            v.as_i64().map(Some).ok_or_else(|| bad(key, format!("Invalid type for '{key}': expected an integer.")))
        }
    }
}

pub(crate) fn opt_f64(body: &Map<String, Value>, key: &'static str) -> Result<Option<f64>, ApiError> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => {
            v.as_f64().map(Some).ok_or_else(|| bad(key, format!("Invalid type for '{key}': expected a number.")))
        }
    }
}

pub(crate) fn stop_list(v: Option<&Value>, param: &'static str) -> Result<Vec<String>, ApiError> {
    match v {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(vec![s.clone()]),
        Some(Value::Array(a)) => a
            .iter()
            .map(|s| s.as_str().map(str::to_string).ok_or_else(|| bad(param, format!("'{param}' must hold strings"))))
            .collect(),
        Some(_) => Err(bad(param, format!("Invalid type for '{param}': expected a string or an array of strings."))),
    }
}

/// Appends a turn's blocks, merging them into the previous turn when it has
/// the same role (formats that want strictly alternating turns).
pub(crate) fn push_turn(turns: &mut Vec<Value>, role: &str, key: &str, blocks: Vec<Value>) {
    if blocks.is_empty() {
        return;
    }
    match turns.last_mut() {
        Some(last) if last["role"] == role => {
            if let Some(a) = last[key].as_array_mut() {
                a.extend(blocks);
            }
        }
        _ => turns.push(serde_json::json!({ "role": role, key: blocks })),
    }
}

pub(crate) fn snippet(s: &str) -> String {
    s.chars().take(120).collect()
}

// ---- dispatch ----

/// The upstream request body for a canonical request, or a 400 when the
/// request says something this wire cannot carry and dropping it would change
/// the answer.
pub fn build_request(wire: Wire, req: &ChatRequest, model: &str, stream: bool) -> Result<Value, ApiError> {
    if let Some(what) = req.untranslatable.first() {
        return Err(ApiError::invalid(
            "unsupported_conversion",
            format!("The request uses {what}, which a `{}` channel cannot express.", wire.as_str()),
        ));
    }
    if req.n.is_some_and(|n| n > 1) && wire != Wire::OpenAi {
        return Err(ApiError::invalid(
            "unsupported_conversion",
            format!("More than one choice (`n`) cannot be served by a `{}` channel.", wire.as_str()),
        )
        .with_param("n"));
    }
    let dropped = dropped_fields(wire, req);
    if !dropped.is_empty() {
        tracing::debug!(wire = wire.as_str(), ?dropped, "fields this wire cannot carry: dropped");
    }
    Ok(match wire {
        Wire::OpenAi => {
            let mut v = openai::build_request(req, model, stream);
            if let Some(n) = req.n {
                v["n"] = n.into();
            }
            v
        }
        Wire::Anthropic => anthropic::build_request(req, model, stream),
        Wire::Gemini => gemini::build_request(req),
        Wire::Bedrock => bedrock::build_request(req)?,
        Wire::Cohere => cohere::build_request(req, model, stream),
        Wire::Responses => return Err(ApiError::internal("Responses requests are passed through, never built")),
    })
}

/// Sampling and bookkeeping fields set on the request that `wire` has no
/// place for (they do not change what the answer means).
fn dropped_fields(wire: Wire, req: &ChatRequest) -> Vec<&'static str> {
    let set = [
        ("top_k", req.top_k.is_some()),
        ("seed", req.seed.is_some()),
        ("presence_penalty", req.presence_penalty.is_some()),
        ("frequency_penalty", req.frequency_penalty.is_some()),
        ("user", req.user.is_some()),
        ("parallel_tool_calls", req.parallel_tool_calls.is_some()),
    ];
    let carried: &[&str] = match wire {
        Wire::OpenAi => &["seed", "presence_penalty", "frequency_penalty", "user", "parallel_tool_calls"],
        Wire::Anthropic => &["top_k", "user", "parallel_tool_calls"],
        Wire::Gemini => &["top_k", "seed", "presence_penalty", "frequency_penalty"],
        Wire::Bedrock => &["top_k"],
        Wire::Cohere => &["top_k", "seed", "presence_penalty", "frequency_penalty"],
        Wire::Responses => &[],
    };
    set.iter().filter(|(name, on)| *on && !carried.contains(name)).map(|(name, _)| *name).collect()
}

pub fn parse_response(wire: Wire, v: &Value) -> ChatResponse {
    match wire {
        Wire::OpenAi => openai::parse_response(v),
        Wire::Anthropic => anthropic::parse_response(v),
        Wire::Gemini => gemini::parse_response(v),
        Wire::Bedrock => bedrock::parse_response(v),
        Wire::Cohere => cohere::parse_response(v),
        Wire::Responses => responses::parse_response(v),
    }
}

/// `created` is Unix seconds (OpenAI's `created`).
pub fn render_response(wire: Inbound, r: &ChatResponse, model: &str, created: i64) -> Value {
    match wire {
        Inbound::OpenAi => openai::render_response(r, model, created),
        Inbound::Anthropic => anthropic::render_response(r, model),
        Inbound::Gemini => gemini::render_response(r, model),
        Inbound::Responses => responses::render_response(r, model, created),
    }
}

/// The message of an upstream error body in this wire's shape.
pub fn parse_error(wire: Wire, v: &Value) -> Option<String> {
    match wire {
        Wire::OpenAi | Wire::Responses => openai::parse_error(v),
        Wire::Anthropic => anthropic::parse_error(v),
        Wire::Gemini => gemini::parse_error(v),
        Wire::Bedrock => bedrock::parse_error(v),
        Wire::Cohere => cohere::parse_error(v),
    }
}

/// An error in the caller's wire format.
pub fn error_body(wire: Inbound, e: &ApiError) -> Value {
    match wire {
        Inbound::OpenAi | Inbound::Responses => e.openai_json(),
        Inbound::Anthropic => anthropic::error_body(e.status(), &e.message),
        Inbound::Gemini => gemini::error_body(e.status(), &e.message),
    }
}

/// The kind of error an upstream status means, for the caller.
pub fn kind_for_status(status: u16) -> ErrorKind {
    match status {
        400 | 422 => ErrorKind::InvalidRequest,
        401 => ErrorKind::InvalidApiKey,
        403 => ErrorKind::PermissionDenied,
        404 => ErrorKind::NotFound,
        413 => ErrorKind::TooLarge,
        429 => ErrorKind::RateLimited,
        504 => ErrorKind::UpstreamTimeout,
        _ => ErrorKind::UpstreamFailed,
    }
}

// ---- streams ----

/// An error event mid-stream, in the caller's format (after which the stream ends).
pub fn stream_error(wire: Inbound, sse: bool, message: &str, out: &mut Vec<u8>) {
    let e = ApiError::new(ErrorKind::UpstreamFailed, "upstream_stream_failed", message);
    match wire {
        Inbound::OpenAi => crate::sse::encode_data(out, &e.openai_body()),
        Inbound::Responses => {
            out.extend_from_slice(b"event: error\n");
            let v = serde_json::json!({"type": "error", "code": "upstream_error", "message": message, "param": null});
            crate::sse::encode_data(out, &v.to_string());
        }
        Inbound::Anthropic => {
            out.extend_from_slice(b"event: error\n");
            crate::sse::encode_data(out, &anthropic::error_body(502, message).to_string());
        }
        Inbound::Gemini if sse => crate::sse::encode_data(out, &gemini::error_body(502, message).to_string()),
        Inbound::Gemini => {
            out.extend_from_slice(b",\r\n");
            out.extend_from_slice(gemini::error_body(502, message).to_string().as_bytes());
            out.push(b']');
        }
    }
}

#[derive(Debug)]
enum UnitDecoder {
    OpenAi(openai::Decoder),
    Anthropic(anthropic::Decoder),
    Gemini(gemini::Decoder),
    Bedrock(bedrock::Decoder),
    Cohere(cohere::Decoder),
    Responses(responses::Decoder),
}

/// Upstream bytes → canonical events, for any wire and framing.
#[derive(Debug)]
pub struct StreamDecoder {
    framer: Framer,
    units: UnitDecoder,
}

impl StreamDecoder {
    /// `json_array`: Gemini without `alt=sse`. Bedrock streams are AWS event-stream frames.
    pub fn new(wire: Wire, json_array: bool) -> Self {
        let framer = match wire {
            Wire::Bedrock => Framer::EventStream(eventstream::Decoder::default()),
            _ if json_array => Framer::JsonArray(JsonArrayDecoder::default()),
            _ => Framer::Sse(SseDecoder::new()),
        };
        let units = match wire {
            Wire::OpenAi => UnitDecoder::OpenAi(openai::Decoder::default()),
            Wire::Anthropic => UnitDecoder::Anthropic(anthropic::Decoder::default()),
            Wire::Gemini => UnitDecoder::Gemini(gemini::Decoder::default()),
            Wire::Bedrock => UnitDecoder::Bedrock(bedrock::Decoder::default()),
            Wire::Cohere => UnitDecoder::Cohere(cohere::Decoder::default()),
            Wire::Responses => UnitDecoder::Responses(responses::Decoder),
        };
        StreamDecoder { framer, units }
    }

    pub fn push(&mut self, chunk: &[u8]) {
        self.framer.push(chunk);
    }

    /// The next complete unit and the events it means.
    pub fn next_unit(&mut self, events: &mut Vec<Event>) -> Option<Unit> {
        let unit = self.framer.next_unit()?;
        self.decode(&unit, events);
        Some(unit)
    }

    /// At the upstream's end: a last unterminated unit, if any.
    pub fn finish(&mut self, events: &mut Vec<Event>) -> Option<Unit> {
        let unit = self.framer.finish();
        if let Some(u) = &unit {
            self.decode(u, events);
        }
        if self.framer.truncated() {
            events.push(Event::Error { message: "the upstream stream ended inside a chunk".into() });
        }
        unit
    }

    fn decode(&mut self, unit: &Unit, events: &mut Vec<Event>) {
        match &mut self.units {
            UnitDecoder::OpenAi(d) => d.unit(&unit.data, events),
            UnitDecoder::Anthropic(d) => d.unit(&unit.data, events),
            UnitDecoder::Gemini(d) => d.unit(&unit.data, events),
            UnitDecoder::Bedrock(d) => d.unit(unit.event.as_deref().unwrap_or(""), &unit.data, events),
            UnitDecoder::Cohere(d) => d.unit(&unit.data, events),
            UnitDecoder::Responses(d) => d.unit(&unit.data, events),
        }
    }
}

/// Canonical events → the caller's wire.
#[derive(Debug)]
pub enum StreamEncoder {
    OpenAi(openai::Encoder),
    Anthropic(anthropic::Encoder),
    Gemini(gemini::Encoder),
    Responses(responses::Encoder),
}

impl StreamEncoder {
    /// `include_usage`: OpenAI's `stream_options.include_usage`; `sse`: Gemini's `alt=sse`.
    pub fn new(wire: Inbound, model: &str, created: i64, include_usage: bool, sse: bool) -> Self {
        match wire {
            Inbound::OpenAi => StreamEncoder::OpenAi(openai::Encoder::new(model, created, include_usage)),
            Inbound::Anthropic => StreamEncoder::Anthropic(anthropic::Encoder::new(model)),
            Inbound::Gemini => StreamEncoder::Gemini(gemini::Encoder::new(model, sse)),
            Inbound::Responses => StreamEncoder::Responses(responses::Encoder::new(model, created)),
        }
    }

    pub fn event(&mut self, ev: &Event, out: &mut Vec<u8>) {
        match self {
            StreamEncoder::OpenAi(e) => e.event(ev, out),
            StreamEncoder::Anthropic(e) => e.event(ev, out),
            StreamEncoder::Gemini(e) => e.event(ev, out),
            StreamEncoder::Responses(e) => e.event(ev, out),
        }
    }

    /// Closes the stream; `failed` after an error event (no normal ending follows it).
    pub fn finish(&mut self, out: &mut Vec<u8>, failed: bool) {
        match self {
            StreamEncoder::OpenAi(e) => e.finish(out, failed),
            StreamEncoder::Anthropic(e) => e.finish(out, failed),
            StreamEncoder::Gemini(e) => e.finish(out, failed),
            StreamEncoder::Responses(e) => e.finish(out, failed),
        }
    }
}

#[cfg(test)]
mod tests;
