//! Checks on the fields the gateway itself relies on, in every inbound
//! format: the completion ceiling (it drives the reservation), sampling
//! numbers, and how many messages and parts a request carries (each costs
//! memory to read and convert). Answered as 400s in the caller's shape
//! before any money is held or any upstream is called.

use oblivious_core::config::RelaySettings;
use oblivious_core::wire::Inbound;
use oblivious_core::ApiError;
use serde_json::{Map, Value};

use crate::Endpoint;

/// No model generates more in one answer; a larger ceiling is a mistake.
pub(crate) const MAX_OUTPUT_TOKENS: i64 = 100_000_000;

pub(crate) fn check(endpoint: Endpoint, body: &Map<String, Value>, settings: &RelaySettings) -> Result<(), ApiError> {
    match endpoint {
        Endpoint::Chat(Inbound::OpenAi) => {
            ceiling(body, "max_tokens", "max_tokens")?;
            ceiling(body, "max_completion_tokens", "max_completion_tokens")?;
            sampling(body, "temperature", "top_p", None)?;
            integer_in(body, "n", "n", 1, 128)?;
            conversation(body, "messages", "content", settings)
        }
        Endpoint::Chat(Inbound::Anthropic) => {
            ceiling(body, "max_tokens", "max_tokens")?;
            sampling(body, "temperature", "top_p", Some("top_k"))?;
            conversation(body, "messages", "content", settings)
        }
        Endpoint::Chat(Inbound::Responses) => {
            ceiling(body, "max_output_tokens", "max_output_tokens")?;
            sampling(body, "temperature", "top_p", None)?;
            conversation(body, "input", "content", settings)
        }
        Endpoint::Chat(Inbound::Gemini) => {
            for key in ["generationConfig", "generation_config"] {
                if let Some(Value::Object(config)) = body.get(key) {
                    ceiling(config, "maxOutputTokens", "generationConfig.maxOutputTokens")?;
                    ceiling(config, "max_output_tokens", "generationConfig.maxOutputTokens")?;
                    sampling(config, "temperature", "topP", Some("topK"))?;
                }
            }
            conversation(body, "contents", "parts", settings)
        }
        Endpoint::Completions => {
            ceiling(body, "max_tokens", "max_tokens")?;
            sampling(body, "temperature", "top_p", None)?;
            items(body, "prompt", settings)
        }
        Endpoint::Embeddings | Endpoint::Moderations => items(body, "input", settings),
        Endpoint::GeminiEmbed { .. } => items(body, "requests", settings),
        Endpoint::Rerank => items(body, "documents", settings),
        Endpoint::Images | Endpoint::Speech | Endpoint::Transcriptions => Ok(()),
    }
}

fn bad(param: &'static str, code: &'static str, message: String) -> ApiError {
    ApiError::invalid(code, message).with_param(param)
}

/// A completion ceiling: absent, null, or an integer from 1 to [`MAX_OUTPUT_TOKENS`].
fn ceiling(body: &Map<String, Value>, key: &str, param: &'static str) -> Result<(), ApiError> {
    integer_in(body, key, param, 1, MAX_OUTPUT_TOKENS)
}

fn integer_in(body: &Map<String, Value>, key: &str, param: &'static str, min: i64, max: i64) -> Result<(), ApiError> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(()),
        Some(Value::Number(n)) => match n.as_i64() {
            Some(v) if (min..=max).contains(&v) => Ok(()),
            Some(v) => Err(bad(
                param,
                "invalid_value",
                format!("Invalid '{param}': {v} is out of range; expected an integer from {min} to {max}."),
            )),
            None => {
                Err(bad(param, "invalid_type", format!("Invalid type for '{param}': expected an integer, got {n}.")))
            }
        },
        Some(other) => Err(bad(
            param,
            "invalid_type",
            format!("Invalid type for '{param}': expected an integer, got {}.", kind(other)),
        )),
    }
}

/// Temperature (0–2), nucleus mass (0–1) and top-k (a non-negative integer), where present.
fn sampling(body: &Map<String, Value>, temperature: &str, top_p: &str, top_k: Option<&str>) -> Result<(), ApiError> {
    number_in(body, temperature, "temperature", 2.0)?;
    number_in(body, top_p, "top_p", 1.0)?;
    match top_k {
        Some(k) => integer_in(body, k, "top_k", 0, i64::from(u32::MAX)),
        None => Ok(()),
    }
}

fn number_in(body: &Map<String, Value>, key: &str, param: &'static str, max: f64) -> Result<(), ApiError> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(()),
        Some(Value::Number(n)) => match n.as_f64() {
            Some(v) if (0.0..=max).contains(&v) => Ok(()),
            _ => Err(bad(
                param,
                "invalid_value",
                format!("Invalid '{param}': {n} is out of range; expected 0 to {max}."),
            )),
        },
        Some(other) => Err(bad(
            param,
            "invalid_type",
            format!("Invalid type for '{param}': expected a number, got {}.", kind(other)),
        )),
    }
}

/// Messages and their content parts, against the configured caps.
fn conversation(
    body: &Map<String, Value>,
    messages: &str,
    content: &str,
    settings: &RelaySettings,
) -> Result<(), ApiError> {
    let Some(Value::Array(list)) = body.get(messages) else { return Ok(()) };
    too_many(list.len(), settings.max_messages, "too_many_messages", "messages")?;
    let system = body.get("system").and_then(Value::as_array).map_or(0, Vec::len);
    let parts = list
        .iter()
        .filter_map(|m| m.get(content).and_then(Value::as_array))
        .fold(system, |sum, parts| sum.saturating_add(parts.len()));
    too_many(parts, settings.max_parts, "too_many_parts", "content parts")
}

/// Inputs of an embedding, moderation, completion or rerank request.
fn items(body: &Map<String, Value>, key: &str, settings: &RelaySettings) -> Result<(), ApiError> {
    match body.get(key) {
        Some(Value::Array(list)) => too_many(list.len(), settings.max_messages, "too_many_messages", "inputs"),
        _ => Ok(()),
    }
}

fn too_many(n: usize, max: usize, code: &'static str, what: &str) -> Result<(), ApiError> {
    if n > max {
        return Err(ApiError::invalid(
            code,
            format!(
                "The request carries {n} {what}; at most {max} are accepted (relay.max_messages / relay.max_parts)."
            ),
        ));
    }
    Ok(())
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn run(endpoint: Endpoint, v: Value) -> Result<(), ApiError> {
        let Value::Object(body) = v else { unreachable!() };
        check(endpoint, &body, &RelaySettings { max_messages: 3, max_parts: 4, ..RelaySettings::default() })
    }

    const OPENAI: Endpoint = Endpoint::Chat(Inbound::OpenAi);

    #[test]
    fn completion_ceilings_are_integers_in_range_in_every_format() {
        assert!(run(OPENAI, json!({"max_tokens": 16, "messages": []})).is_ok());
        assert_eq!(run(OPENAI, json!({"max_tokens": -1})).unwrap_err().code, "invalid_value");
        assert_eq!(run(OPENAI, json!({"max_tokens": 1e30})).unwrap_err().code, "invalid_type");
        assert_eq!(run(OPENAI, json!({"max_completion_tokens": "9"})).unwrap_err().code, "invalid_type");
        assert_eq!(
            run(Endpoint::Chat(Inbound::Anthropic), json!({"max_tokens": 0})).unwrap_err().code,
            "invalid_value"
        );
        let e = run(Endpoint::Chat(Inbound::Responses), json!({"max_output_tokens": 2.5})).unwrap_err();
        assert_eq!(e.param, Some("max_output_tokens"));
        let gemini = json!({"generationConfig": {"maxOutputTokens": -5}});
        assert_eq!(run(Endpoint::Chat(Inbound::Gemini), gemini).unwrap_err().code, "invalid_value");
        assert!(run(OPENAI, json!({"max_tokens": null})).is_ok());
    }

    #[test]
    fn sampling_numbers_are_checked() {
        assert_eq!(run(OPENAI, json!({"temperature": "hot"})).unwrap_err().code, "invalid_type");
        assert_eq!(run(OPENAI, json!({"temperature": 3})).unwrap_err().code, "invalid_value");
        assert!(run(OPENAI, json!({"temperature": 0.7, "top_p": 1})).is_ok());
        let gemini = json!({"generationConfig": {"topP": "x"}});
        assert_eq!(run(Endpoint::Chat(Inbound::Gemini), gemini).unwrap_err().param, Some("top_p"));
    }

    #[test]
    fn messages_and_parts_are_capped() {
        let m = json!({"role": "user", "content": "hi"});
        assert!(run(OPENAI, json!({"messages": [m, m, m]})).is_ok());
        assert_eq!(run(OPENAI, json!({"messages": [m, m, m, m]})).unwrap_err().code, "too_many_messages");
        let parts = json!({"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}, {"type": "text", "text": "c"}]});
        assert_eq!(run(OPENAI, json!({"messages": [parts, parts]})).unwrap_err().code, "too_many_parts");
        let g = json!({"contents": [{"parts": [{"text": "a"}]}, {"parts": [{"text": "a"}]}, {"parts": [{"text": "a"}]}, {"parts": []}]});
        assert_eq!(run(Endpoint::Chat(Inbound::Gemini), g).unwrap_err().code, "too_many_messages");
        assert_eq!(
            run(Endpoint::Embeddings, json!({"input": ["a", "b", "c", "d"]})).unwrap_err().code,
            "too_many_messages"
        );
    }
}
