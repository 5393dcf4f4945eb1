//! Channel types: which wire format each upstream speaks, where it lives by
//! default, how it authenticates and which of its quirks we smooth over.
//! Adding an OpenAI-compatible provider is one row in [`ChannelType::ALL`] and
//! one arm in [`ChannelType::info`].

use serde::{Deserialize, Serialize};

use crate::wire::Wire;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChannelType {
    Openai,
    Azure,
    Anthropic,
    Gemini,
    Vertex,
    Bedrock,
    Cohere,
    Deepseek,
    Mistral,
    Groq,
    Xai,
    Openrouter,
    Together,
    Fireworks,
    Siliconflow,
    Moonshot,
    Qwen,
    Zhipu,
    Qianfan,
    Minimax,
    Perplexity,
    Ollama,
    Vllm,
}

/// How a channel type authenticates with its key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Auth {
    /// `Authorization: Bearer KEY`
    Bearer,
    /// Azure: `api-key: KEY`
    ApiKeyHeader,
    /// Anthropic: `x-api-key: KEY` and `anthropic-version`
    XApiKey,
    /// Gemini: `x-goog-api-key: KEY`
    GoogApiKey,
    /// Vertex: the key is a service-account JSON exchanged for a bearer token.
    GoogleServiceAccount,
    /// Bedrock: the key is `ACCESS_KEY_ID:SECRET_ACCESS_KEY[:SESSION_TOKEN]`, requests signed with SigV4.
    SigV4,
}

/// What a channel type is.
#[derive(Clone, Copy, Debug)]
pub struct Info {
    pub wire: Wire,
    pub auth: Auth,
    /// Used when a channel leaves `base_url` out (None: it must be given).
    pub default_base_url: Option<&'static str>,
    /// Accepts `stream_options.include_usage` (else usage arrives unasked or not at all).
    pub stream_options: bool,
}

const fn compatible(url: &'static str) -> Info {
    Info { wire: Wire::OpenAi, auth: Auth::Bearer, default_base_url: Some(url), stream_options: true }
}

impl ChannelType {
    pub const ALL: [ChannelType; 23] = [
        ChannelType::Openai,
        ChannelType::Azure,
        ChannelType::Anthropic,
        ChannelType::Gemini,
        ChannelType::Vertex,
        ChannelType::Bedrock,
        ChannelType::Cohere,
        ChannelType::Deepseek,
        ChannelType::Mistral,
        ChannelType::Groq,
        ChannelType::Xai,
        ChannelType::Openrouter,
        ChannelType::Together,
        ChannelType::Fireworks,
        ChannelType::Siliconflow,
        ChannelType::Moonshot,
        ChannelType::Qwen,
        ChannelType::Zhipu,
        ChannelType::Qianfan,
        ChannelType::Minimax,
        ChannelType::Perplexity,
        ChannelType::Ollama,
        ChannelType::Vllm,
    ];

    pub fn info(self) -> Info {
        use ChannelType as T;
        match self {
            T::Openai => compatible("https://api.openai.com/v1"),
            T::Azure => {
                Info { wire: Wire::OpenAi, auth: Auth::ApiKeyHeader, default_base_url: None, stream_options: true }
            }
            T::Anthropic => Info {
                wire: Wire::Anthropic,
                auth: Auth::XApiKey,
                default_base_url: Some("https://api.anthropic.com"),
                stream_options: false,
            },
            T::Gemini => Info {
                wire: Wire::Gemini,
                auth: Auth::GoogApiKey,
                default_base_url: Some("https://generativelanguage.googleapis.com"),
                stream_options: false,
            },
            // The base URL depends on the region: https://{region}-aiplatform.googleapis.com.
            T::Vertex => Info {
                wire: Wire::Gemini,
                auth: Auth::GoogleServiceAccount,
                default_base_url: None,
                stream_options: false,
            },
            T::Bedrock => {
                Info { wire: Wire::Bedrock, auth: Auth::SigV4, default_base_url: None, stream_options: false }
            }
            T::Cohere => Info {
                wire: Wire::Cohere,
                auth: Auth::Bearer,
                default_base_url: Some("https://api.cohere.com"),
                stream_options: false,
            },
            T::Deepseek => compatible("https://api.deepseek.com/v1"),
            // Mistral refuses unknown fields (stream_options) and always sends usage in the last chunk.
            T::Mistral => Info { stream_options: false, ..compatible("https://api.mistral.ai/v1") },
            T::Groq => compatible("https://api.groq.com/openai/v1"),
            T::Xai => compatible("https://api.x.ai/v1"),
            T::Openrouter => compatible("https://openrouter.ai/api/v1"),
            T::Together => compatible("https://api.together.xyz/v1"),
            T::Fireworks => compatible("https://api.fireworks.ai/inference/v1"),
            T::Siliconflow => compatible("https://api.siliconflow.cn/v1"),
            T::Moonshot => compatible("https://api.moonshot.cn/v1"),
            T::Qwen => compatible("https://dashscope.aliyuncs.com/compatible-mode/v1"),
            T::Zhipu => compatible("https://open.bigmodel.cn/api/paas/v4"),
            T::Qianfan => compatible("https://qianfan.baidubce.com/v2"),
            T::Minimax => compatible("https://api.minimax.io/v1"),
            // Perplexity streams usage in every chunk unasked.
            T::Perplexity => Info { stream_options: false, ..compatible("https://api.perplexity.ai") },
            T::Ollama => compatible("http://127.0.0.1:11434/v1"),
            T::Vllm => compatible("http://127.0.0.1:8000/v1"),
        }
    }

    pub fn as_str(self) -> &'static str {
        use ChannelType as T;
        match self {
            T::Openai => "openai",
            T::Azure => "azure",
            T::Anthropic => "anthropic",
            T::Gemini => "gemini",
            T::Vertex => "vertex",
            T::Bedrock => "bedrock",
            T::Cohere => "cohere",
            T::Deepseek => "deepseek",
            T::Mistral => "mistral",
            T::Groq => "groq",
            T::Xai => "xai",
            T::Openrouter => "openrouter",
            T::Together => "together",
            T::Fireworks => "fireworks",
            T::Siliconflow => "siliconflow",
            T::Moonshot => "moonshot",
            T::Qwen => "qwen",
            T::Zhipu => "zhipu",
            T::Qianfan => "qianfan",
            T::Minimax => "minimax",
            T::Perplexity => "perplexity",
            T::Ollama => "ollama",
            T::Vllm => "vllm",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == s)
    }

    pub fn names() -> String {
        Self::ALL.iter().map(|t| t.as_str()).collect::<Vec<_>>().join(", ")
    }
}

/// Azure OpenAI's default data-plane API version.
pub const AZURE_API_VERSION: &str = "2024-10-21";
/// Anthropic's API version header value.
pub const ANTHROPIC_VERSION: &str = "2023-06-01";

/// Percent-encodes one URL path segment (RFC 3986 unreserved characters stay).
pub fn encode_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_type_parses_back_and_has_a_wire() {
        assert!(ChannelType::ALL.len() >= 20);
        for t in ChannelType::ALL {
            assert_eq!(ChannelType::parse(t.as_str()), Some(t));
            let json = serde_json::to_string(&t).unwrap_or_default();
            assert_eq!(json, format!("\"{}\"", t.as_str()));
        }
        assert_eq!(encode_segment("anthropic.claude-3:0"), "anthropic.claude-3%3A0");
    }
}
