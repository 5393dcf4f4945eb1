//! What the client asked for: the endpoint it called, in which wire format,
//! and its body checked and (for chat) read into the canonical model.

use std::sync::Arc;

use oblivious_core::wire::canon::ChatRequest;
use oblivious_core::wire::{anthropic, gemini, openai, responses, Inbound, Wire};
use oblivious_core::ApiError;
use serde_json::{Map, Value};

/// Every relayed endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endpoint {
    /// OpenAI `/v1/chat/completions`, Anthropic `/v1/messages`, Gemini `:generateContent` / `:streamGenerateContent`.
    Chat(Inbound),
    Completions,
    Embeddings,
    /// Gemini `:embedContent` / `:batchEmbedContents`.
    GeminiEmbed {
        batch: bool,
    },
    Images,
    Speech,
    Transcriptions,
    Moderations,
    Rerank,
}

impl Endpoint {
    /// The caller's wire format (errors are answered in it).
    pub fn inbound(self) -> Inbound {
        match self {
            Endpoint::Chat(w) => w,
            Endpoint::GeminiEmbed { .. } => Inbound::Gemini,
            _ => Inbound::OpenAi,
        }
    }

    /// The path recorded in usage logs.
    pub fn path(self) -> &'static str {
        match self {
            Endpoint::Chat(Inbound::OpenAi) => "/v1/chat/completions",
            Endpoint::Chat(Inbound::Anthropic) => "/v1/messages",
            Endpoint::Chat(Inbound::Gemini) => "/v1beta/models:generateContent",
            Endpoint::Chat(Inbound::Responses) => "/v1/responses",
            Endpoint::Completions => "/v1/completions",
            Endpoint::Embeddings => "/v1/embeddings",
            Endpoint::GeminiEmbed { batch: false } => "/v1beta/models:embedContent",
            Endpoint::GeminiEmbed { batch: true } => "/v1beta/models:batchEmbedContents",
            Endpoint::Images => "/v1/images/generations",
            Endpoint::Speech => "/v1/audio/speech",
            Endpoint::Transcriptions => "/v1/audio/transcriptions",
            Endpoint::Moderations => "/v1/moderations",
            Endpoint::Rerank => "/v1/rerank",
        }
    }

    /// The OpenAI-wire path under a channel's base URL, for endpoints relayed as they are.
    pub fn openai_path(self) -> &'static str {
        match self {
            Endpoint::Chat(Inbound::Responses) => "/responses",
            Endpoint::Chat(_) => "/chat/completions",
            Endpoint::Completions => "/completions",
            Endpoint::Embeddings | Endpoint::GeminiEmbed { .. } => "/embeddings",
            Endpoint::Images => "/images/generations",
            Endpoint::Speech => "/audio/speech",
            Endpoint::Transcriptions => "/audio/transcriptions",
            Endpoint::Moderations => "/moderations",
            Endpoint::Rerank => "/rerank",
        }
    }

    /// Whether a channel of this wire can serve the endpoint.
    pub fn served_by(self, wire: Wire) -> bool {
        match self {
            Endpoint::Chat(_) => true,
            Endpoint::GeminiEmbed { .. } => matches!(wire, Wire::Gemini | Wire::OpenAi),
            Endpoint::Embeddings => matches!(wire, Wire::OpenAi | Wire::Gemini | Wire::Cohere),
            Endpoint::Rerank => matches!(wire, Wire::OpenAi | Wire::Cohere),
            _ => wire == Wire::OpenAi,
        }
    }

    /// Whether responses are token-counted text (chat and completions).
    pub fn generates_text(self) -> bool {
        matches!(self, Endpoint::Chat(_) | Endpoint::Completions)
    }
}

/// Chat Completions fields the canonical model carries (others are dropped, with a debug log, when converting).
const OPENAI_CHAT_FIELDS: &[&str] = &[
    "model",
    "messages",
    "max_tokens",
    "max_completion_tokens",
    "temperature",
    "top_p",
    "seed",
    "presence_penalty",
    "frequency_penalty",
    "stop",
    "stream",
    "stream_options",
    "user",
    "parallel_tool_calls",
    "n",
    "reasoning_effort",
    "tools",
    "tool_choice",
    "response_format",
];

/// The parsed, validated client request.
pub(crate) struct Parsed {
    pub endpoint: Endpoint,
    /// The body as the client sent it (for same-wire passthrough), shared with
    /// the usage record rather than copied.
    pub body: Arc<Map<String, Value>>,
    /// Raw bytes for bodies that are not JSON (multipart uploads).
    pub raw: Option<bytes::Bytes>,
    pub content_type: Option<http::HeaderValue>,
    pub model: String,
    pub stream: bool,
    /// OpenAI: the client asked for the final usage chunk itself.
    pub include_usage: bool,
    /// Gemini: `alt=sse` framing (else a JSON array).
    pub gemini_sse: bool,
    /// The canonical chat request; for OpenAI clients read only when a
    /// channel needs a conversion.
    pub canon: Option<ChatRequest>,
}

impl Parsed {
    /// The canonical request, reading it on first use.
    pub fn canonical(&mut self) -> Result<&ChatRequest, ApiError> {
        if self.canon.is_none() {
            let unknown: Vec<&str> =
                self.body.keys().map(String::as_str).filter(|k| !OPENAI_CHAT_FIELDS.contains(k)).collect();
            if !unknown.is_empty() {
                tracing::debug!(?unknown, "OpenAI fields with no counterpart in another format: dropped");
            }
            self.canon = Some(openai::parse_request(&self.body)?);
        }
        self.canon.as_ref().ok_or_else(|| ApiError::internal("canonical request missing"))
    }

    /// An OpenAI-shaped body, for counting tokens of any inbound format: the
    /// client's own (shared, not copied) when it is OpenAI's.
    pub fn openai_body(&self) -> Arc<Map<String, Value>> {
        match (&self.canon, self.endpoint) {
            (Some(c), Endpoint::Chat(Inbound::Anthropic | Inbound::Gemini | Inbound::Responses)) => {
                Arc::new(object(openai::build_request(c, &self.model, false)))
            }
            (_, Endpoint::GeminiEmbed { .. }) => Arc::new(object(serde_json::json!({
                "model": self.model, "input": gemini_embed_texts(&self.body)
            }))),
            _ => self.body.clone(),
        }
    }
}

/// The fields of a JSON object (none for anything else).
pub(crate) fn object(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

/// Parses a client's JSON body, refusing one of more values than the caps
/// allow before building any of them.
pub(crate) fn parse_json(raw: &[u8], settings: &oblivious_core::config::RelaySettings) -> Result<Value, ApiError> {
    if oblivious_core::json_size::exceeds(raw, settings.max_json_values) {
        return Err(ApiError::invalid(
            "too_many_values",
            format!(
                "The request body holds more than {} JSON values (relay.max_json_values).",
                settings.max_json_values
            ),
        ));
    }
    serde_json::from_slice(raw).map_err(invalid_json)
}

fn invalid_json(e: serde_json::Error) -> ApiError {
    ApiError::invalid("invalid_json", format!("We could not parse the JSON body of your request: {e}."))
}

/// What a Gemini URL says: `models/{model}:{method}` and `alt=sse`.
#[derive(Clone, Debug, Default)]
pub(crate) struct GeminiCall {
    pub model: String,
    pub stream: bool,
    pub sse: bool,
}

/// Reads a client body; Gemini's model and streaming come from its URL.
pub(crate) fn parse(
    endpoint: Endpoint,
    raw: bytes::Bytes,
    content_type: Option<&http::HeaderValue>,
    gemini: Option<&GeminiCall>,
    settings: &oblivious_core::config::RelaySettings,
) -> Result<Parsed, ApiError> {
    let path_model = gemini.map(|g| g.model.as_str());
    let gemini_sse = gemini.is_some_and(|g| g.sse);
    if endpoint == Endpoint::Transcriptions {
        let model = multipart_field(&raw, content_type, "model").ok_or_else(|| {
            ApiError::invalid("missing_model", "You must provide a model parameter (a `model` form field).")
                .with_param("model")
        })?;
        let stream = multipart_field(&raw, content_type, "stream").as_deref() == Some("true");
        return Ok(Parsed {
            endpoint,
            body: Arc::default(),
            raw: Some(raw),
            content_type: content_type.cloned(),
            model,
            stream,
            include_usage: false,
            gemini_sse,
            canon: None,
        });
    }
    let value = parse_json(&raw, settings)?;
    let Value::Object(body) = value else {
        return Err(ApiError::invalid("invalid_json", "The request body must be a JSON object."));
    };
    let model = match path_model {
        Some(m) => m.trim_start_matches("models/").to_string(),
        None => match body.get("model") {
            Some(Value::String(m)) if !m.is_empty() => m.clone(),
            Some(Value::String(_)) | None => {
                return Err(
                    ApiError::invalid("missing_model", "You must provide a model parameter.").with_param("model")
                )
            }
            Some(_) => {
                return Err(ApiError::invalid("invalid_type", "Invalid type for 'model': expected a string.")
                    .with_param("model"))
            }
        },
    };
    let streamable = !matches!(endpoint, Endpoint::Embeddings | Endpoint::GeminiEmbed { .. } | Endpoint::Moderations);
    let stream = match (endpoint, body.get("stream")) {
        (Endpoint::Chat(Inbound::Gemini), _) => gemini.is_some_and(|g| g.stream),
        (_, None | Some(Value::Null)) => false,
        (_, Some(Value::Bool(b))) => *b && streamable,
        (_, Some(_)) => {
            return Err(ApiError::invalid("invalid_type", "Invalid type for 'stream': expected a boolean.")
                .with_param("stream"))
        }
    };
    let required = match endpoint {
        Endpoint::Chat(Inbound::OpenAi) => Some(("messages", true)),
        Endpoint::Completions => Some(("prompt", false)),
        Endpoint::Embeddings | Endpoint::Moderations => Some(("input", false)),
        Endpoint::Rerank => Some(("query", false)),
        Endpoint::Chat(Inbound::Responses) => Some(("input", false)),
        _ => None,
    };
    if let Some((field, want_array)) = required {
        match body.get(field) {
            None | Some(Value::Null) => {
                return Err(ApiError::invalid(
                    "missing_required_parameter",
                    format!("Missing required parameter: '{field}'."),
                )
                .with_param(field_param(field)))
            }
            Some(v) if want_array && !v.is_array() => {
                return Err(ApiError::invalid(
                    "invalid_type",
                    format!("Invalid type for '{field}': expected an array."),
                )
                .with_param(field_param(field)))
            }
            _ => {}
        }
    }
    // Before any conversion builds a second copy of a body that should be refused.
    crate::validate::check(endpoint, &body, settings)?;
    let include_usage =
        body.get("stream_options").and_then(|o| o.get("include_usage")).and_then(Value::as_bool) == Some(true);
    let canon = match endpoint {
        Endpoint::Chat(Inbound::Anthropic) => Some(anthropic::parse_request(&body)?),
        Endpoint::Chat(Inbound::Gemini) => Some(gemini::parse_request(&body, &model, stream)?),
        Endpoint::Chat(Inbound::Responses) => Some(responses::parse_request(&body)?),
        _ => None,
    };
    let body = Arc::new(body);
    Ok(Parsed { endpoint, body, raw: None, content_type: None, model, stream, include_usage, gemini_sse, canon })
}

fn field_param(field: &str) -> &'static str {
    match field {
        "messages" => "messages",
        "prompt" => "prompt",
        "query" => "query",
        _ => "input",
    }
}

/// Texts of an `embedContent` (`content.parts`) or `batchEmbedContents` (`requests[].content.parts`) body.
pub(crate) fn gemini_embed_texts(body: &Map<String, Value>) -> Vec<String> {
    let parts_text = |c: &Value| -> String {
        c.get("parts").and_then(Value::as_array).into_iter().flatten().filter_map(|p| p.get("text")?.as_str()).collect()
    };
    match body.get("requests").and_then(Value::as_array) {
        Some(reqs) => reqs.iter().filter_map(|r| r.get("content")).map(parts_text).collect(),
        None => body.get("content").map(parts_text).into_iter().collect(),
    }
}

/// One text field of a `multipart/form-data` body.
fn multipart_field(raw: &[u8], content_type: Option<&http::HeaderValue>, name: &str) -> Option<String> {
    let ct = content_type?.to_str().ok()?;
    let boundary = ct.split(';').find_map(|p| p.trim().strip_prefix("boundary="))?.trim_matches('"');
    let delimiter = format!("--{boundary}");
    let text = String::from_utf8_lossy(raw);
    let needle = format!("name=\"{name}\"");
    text.split(delimiter.as_str()).find_map(|part| {
        let (head, value) = part.split_once("\r\n\r\n")?;
        head.contains(&needle).then(|| value.trim_end_matches("\r\n").to_string())
    })
}
