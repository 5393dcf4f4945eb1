//! Embeddings across formats: OpenAI `/v1/embeddings` to Gemini
//! (`batchEmbedContents`) and Cohere (`/v2/embed`) channels, and Gemini
//! `:embedContent` / `:batchEmbedContents` to OpenAI-wire channels; answers are
//! turned back into the caller's shape.

use oblivious_core::wire::Wire;
use oblivious_core::ApiError;
use serde_json::{json, Map, Value};

use crate::inbound::gemini_embed_texts;
use crate::upstream::Op;

/// The texts of an OpenAI embeddings `input` (token-id arrays have no text to convert).
fn openai_texts(body: &Map<String, Value>) -> Result<Vec<String>, ApiError> {
    let refuse = || {
        ApiError::invalid("unsupported_conversion", "Token-id inputs can only go to OpenAI-wire channels.")
            .with_param("input")
    };
    match body.get("input") {
        Some(Value::String(s)) => Ok(vec![s.clone()]),
        Some(Value::Array(items)) => items.iter().map(|i| i.as_str().map(str::to_string).ok_or_else(refuse)).collect(),
        _ => Err(refuse()),
    }
}

/// The upstream call for an OpenAI embeddings request to a non-OpenAI channel.
pub(crate) fn from_openai(body: &Map<String, Value>, wire: Wire, model: &str) -> Result<(Op, Value), ApiError> {
    let texts = openai_texts(body)?;
    Ok(match wire {
        Wire::Gemini => {
            let requests: Vec<Value> = texts
                .iter()
                .map(|t| json!({ "model": format!("models/{model}"), "content": { "parts": [{ "text": t }] } }))
                .collect();
            (Op::GeminiMethod("batchEmbedContents"), json!({ "requests": requests }))
        }
        _ => (
            Op::OpenAiPath("/embeddings"),
            json!({ "model": model, "texts": texts, "input_type": "search_document", "embedding_types": ["float"] }),
        ),
    })
}

/// The upstream call for a Gemini embedding request to an OpenAI-wire channel.
pub(crate) fn from_gemini(body: &Map<String, Value>, model: &str) -> (Op, Value) {
    (Op::OpenAiPath("/embeddings"), json!({ "model": model, "input": gemini_embed_texts(body) }))
}

/// Vectors from a Gemini, Cohere or OpenAI embeddings answer.
fn vectors(wire: Wire, v: &Value) -> Vec<Value> {
    let list = match wire {
        Wire::Gemini => v.get("embeddings").cloned().or_else(|| v.get("embedding").map(|e| json!([e]))),
        Wire::Cohere => v.pointer("/embeddings/float").cloned(),
        _ => v.get("data").cloned(),
    };
    list.and_then(|l| l.as_array().cloned())
        .unwrap_or_default()
        .into_iter()
        .map(|e| match wire {
            Wire::Gemini => e.get("values").cloned().unwrap_or(Value::Null),
            Wire::Cohere => e,
            _ => e.get("embedding").cloned().unwrap_or(Value::Null),
        })
        .collect()
}

/// An upstream embeddings answer in OpenAI's shape.
pub(crate) fn to_openai(wire: Wire, v: &Value, model: &str, prompt_tokens: i64) -> Value {
    let prompt_tokens = v.pointer("/meta/billed_units/input_tokens").and_then(Value::as_i64).unwrap_or(prompt_tokens);
    let data: Vec<Value> = vectors(wire, v)
        .into_iter()
        .enumerate()
        .map(|(i, e)| json!({ "object": "embedding", "index": i, "embedding": e }))
        .collect();
    json!({
        "object": "list",
        "data": data,
        "model": model,
        "usage": { "prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens },
    })
}

/// An OpenAI embeddings answer in Gemini's `embedContent` / `batchEmbedContents` shape.
pub(crate) fn to_gemini(v: &Value, batch: bool) -> Value {
    let values: Vec<Value> = vectors(Wire::OpenAi, v).into_iter().map(|e| json!({ "values": e })).collect();
    if batch {
        json!({ "embeddings": values })
    } else {
        json!({ "embedding": values.into_iter().next().unwrap_or(Value::Null) })
    }
}
