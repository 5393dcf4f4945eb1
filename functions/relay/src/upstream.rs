//! The HTTP request for one attempt on one channel: its URL (which for Azure,
//! Gemini, Vertex and Bedrock names the model), its credentials, and the body
//! in the channel's wire format.

use bytes::Bytes;
use oblivious_core::model::Channel;
use oblivious_core::provider::{encode_segment, Auth, ChannelType, ANTHROPIC_VERSION, AZURE_API_VERSION};
use oblivious_ports::UpstreamRequest;

/// What the request asks of the upstream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Op {
    Chat {
        stream: bool,
    },
    /// An OpenAI-wire path under the base URL (`/completions`, `/embeddings`, `/images/generations`…).
    OpenAiPath(&'static str),
    /// Gemini methods other than chat: `embedContent`, `batchEmbedContents`, `countTokens`.
    GeminiMethod(&'static str),
}

/// Builds the request. `key` is the channel key in use (for Vertex, the access token it was exchanged for).
pub(crate) fn request(
    ch: &Channel,
    key: Option<&str>,
    op: Op,
    model: &str,
    body: Bytes,
    gemini_sse: bool,
) -> UpstreamRequest {
    let spec = &ch.spec;
    let base = spec.base_url();
    let info = spec.kind.info();
    let url = match (spec.kind, op) {
        (ChannelType::Azure, Op::Chat { .. }) => {
            azure_url(&base, model, "/chat/completions", spec.api_version.as_deref())
        }
        (ChannelType::Azure, Op::OpenAiPath(p)) => azure_url(&base, model, p, spec.api_version.as_deref()),
        (_, Op::Chat { stream }) => match spec.kind {
            ChannelType::Anthropic => format!("{base}/v1/messages"),
            ChannelType::Gemini | ChannelType::Vertex => {
                let method = if stream { "streamGenerateContent" } else { "generateContent" };
                let alt = if stream && gemini_sse { "?alt=sse" } else { "" };
                format!("{}:{method}{alt}", gemini_model_url(ch, &base, model))
            }
            ChannelType::Bedrock => {
                let tail = if stream { "converse-stream" } else { "converse" };
                format!("{base}/model/{}/{tail}", encode_segment(model))
            }
            ChannelType::Cohere => format!("{base}/v2/chat"),
            _ => format!("{base}/chat/completions"),
        },
        (ChannelType::Cohere, Op::OpenAiPath("/embeddings")) => format!("{base}/v2/embed"),
        (ChannelType::Cohere, Op::OpenAiPath("/rerank")) => format!("{base}/v2/rerank"),
        (_, Op::OpenAiPath(p)) => format!("{base}{p}"),
        (_, Op::GeminiMethod(m)) => format!("{}:{m}", gemini_model_url(ch, &base, model)),
    };
    let mut headers = http::HeaderMap::new();
    headers.insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
    headers.insert(
        http::header::USER_AGENT,
        http::HeaderValue::from_static(concat!("oblivious/", env!("CARGO_PKG_VERSION"))),
    );
    let mut put = |name: &'static str, value: String| {
        if let Ok(v) = http::HeaderValue::from_str(&value) {
            headers.insert(name, v);
        }
    };
    if let Some(k) = key {
        match info.auth {
            Auth::Bearer | Auth::GoogleServiceAccount => put("authorization", format!("Bearer {k}")),
            Auth::ApiKeyHeader => put("api-key", k.to_string()),
            Auth::XApiKey => put("x-api-key", k.to_string()),
            Auth::GoogApiKey => put("x-goog-api-key", k.to_string()),
            // Signed after the body is final (see `sign_bedrock`).
            Auth::SigV4 => {}
        }
    }
    if spec.kind == ChannelType::Anthropic {
        put("anthropic-version", ANTHROPIC_VERSION.to_string());
    }
    UpstreamRequest { method: http::Method::POST, url, headers, body }
}

fn azure_url(base: &str, deployment: &str, path: &str, version: Option<&str>) -> String {
    let version = version.unwrap_or(AZURE_API_VERSION);
    format!("{base}/openai/deployments/{}{path}?api-version={version}", encode_segment(deployment))
}

fn gemini_model_url(ch: &Channel, base: &str, model: &str) -> String {
    let model = model.trim_start_matches("models/");
    match ch.spec.kind {
        ChannelType::Vertex => format!(
            "{base}/v1/projects/{}/locations/{}/publishers/google/models/{model}",
            ch.spec.project.as_deref().unwrap_or(""),
            ch.spec.region.as_deref().unwrap_or("us-central1"),
        ),
        _ => format!("{base}/v1beta/models/{model}"),
    }
}

/// Where a channel lists its models, and how to read the answer. `None`: the
/// type has no listing we can call with its chat credentials (Bedrock's lives
/// on another host and service).
pub(crate) fn models_url(ch: &Channel) -> Option<String> {
    let base = ch.spec.base_url();
    Some(match ch.spec.kind {
        ChannelType::Anthropic => format!("{base}/v1/models?limit=1000"),
        ChannelType::Gemini => format!("{base}/v1beta/models?pageSize=1000"),
        ChannelType::Vertex => format!("{base}/v1beta1/publishers/google/models"),
        ChannelType::Cohere => format!("{base}/v1/models?page_size=1000"),
        ChannelType::Azure => {
            format!("{base}/openai/models?api-version={}", ch.spec.api_version.as_deref().unwrap_or(AZURE_API_VERSION))
        }
        ChannelType::Bedrock => return None,
        _ => format!("{base}/models"),
    })
}

/// Model ids from a listing in any of the shapes above.
pub(crate) fn model_ids(v: &serde_json::Value) -> Vec<String> {
    let list = v.get("data").or(v.get("models")).or(v.get("publisherModels"));
    list.and_then(|l| l.as_array())
        .into_iter()
        .flatten()
        .filter_map(|m| m.get("id").or(m.get("name")).and_then(|n| n.as_str()))
        .map(|n| n.rsplit('/').next().unwrap_or(n).to_string())
        .collect()
}
