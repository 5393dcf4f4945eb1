//! Embeddings across formats: OpenAI `/v1/embeddings` to Gemini
//! (`batchEmbedContents`) and Cohere (`/v2/embed`) channels, and Gemini
//! `:embedContent` / `:batchEmbedContents` to OpenAI-wire channels; answers are
//! turned back into the caller's shape, with the caller's `encoding_format`
//! (floats, or base64 of little-endian f32 as OpenAI sends it) and the prompt
//! tokens the usage row bills.

use base64::Engine;
use oblivious_core::count;
use oblivious_core::wire::canon::Usage;
use oblivious_core::wire::{openai, Wire};
use oblivious_core::ApiError;
use serde_json::{json, Map, Value};

use crate::inbound::gemini_embed_texts;
use crate::upstream::Op;
use crate::Endpoint;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

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
/// Both ask for floats; the caller's `encoding_format` is applied to the answer.
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

/// The upstream call for a Gemini embedding request to an OpenAI-wire channel:
/// floats asked for explicitly, since a Gemini caller reads numbers.
pub(crate) fn from_gemini(body: &Map<String, Value>, model: &str) -> (Op, Value) {
    (
        Op::OpenAiPath("/embeddings"),
        json!({ "model": model, "input": gemini_embed_texts(body), "encoding_format": "float" }),
    )
}

/// Floats from base64 of little-endian f32 (OpenAI's `encoding_format: "base64"`).
fn decode_base64(s: &str) -> Option<Value> {
    let bytes = B64.decode(s).ok()?;
    let floats = bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]));
    Some(Value::Array(floats.map(|f| json!(f64::from(f))).collect()))
}

/// Base64 of a vector's little-endian f32 bytes, as OpenAI answers `encoding_format: "base64"`.
fn encode_base64(vector: &Value) -> Value {
    let bytes: Vec<u8> = vector
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|x| (x.as_f64().unwrap_or(0.0) as f32).to_le_bytes())
        .collect();
    Value::String(B64.encode(bytes))
}

/// Vectors (float arrays) from a Gemini, Cohere or OpenAI embeddings answer.
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
            _ => match e.get("embedding") {
                // An upstream that answered base64 anyway.
                Some(Value::String(s)) => decode_base64(s).unwrap_or(Value::Null),
                Some(x) => x.clone(),
                None => Value::Null,
            },
        })
        .collect()
}

/// The usage an embeddings (or other non-text) answer reports: OpenAI's
/// `usage`, or Cohere's billed input units. `None` when the upstream counted
/// nothing (Gemini never does), and the input is counted instead.
pub(crate) fn reported_usage(wire: Wire, v: &Value) -> Option<Usage> {
    v.get("usage").and_then(openai::parse_usage).or_else(|| {
        let billed = v.pointer("/meta/billed_units/input_tokens").and_then(Value::as_i64);
        billed.filter(|_| wire == Wire::Cohere).map(|input| Usage { input, ..Usage::default() })
    })
}

/// The prompt tokens of a converted embeddings answer: the upstream's count,
/// else `body`'s input (the OpenAI-shaped body the usage row counts) counted
/// with tiktoken for `model` exactly as the usage row is.
fn prompt_tokens(reported: Option<Usage>, model: &str, body: &Map<String, Value>) -> i64 {
    reported.map_or_else(|| count::count_input(model, body.get("input")), |u| u.input)
}

/// A converted embeddings answer in the caller's shape. `body` is the request
/// in OpenAI's shape (what the usage row counts, and where `encoding_format` is
/// read); `upstream_model` the model the usage row counts with.
pub(crate) fn answer(
    endpoint: Endpoint,
    wire: Wire,
    v: &Value,
    reported: Option<Usage>,
    body: &Map<String, Value>,
    model: &str,
    upstream_model: &str,
) -> Value {
    match endpoint {
        Endpoint::GeminiEmbed { batch } => to_gemini(v, batch),
        _ => {
            let base64 = body.get("encoding_format").and_then(Value::as_str) == Some("base64");
            to_openai(wire, v, model, prompt_tokens(reported, upstream_model, body), base64)
        }
    }
}

/// An upstream embeddings answer in OpenAI's shape.
fn to_openai(wire: Wire, v: &Value, model: &str, prompt_tokens: i64, base64: bool) -> Value {
    let data: Vec<Value> = vectors(wire, v)
        .into_iter()
        .enumerate()
        .map(|(i, e)| {
            let e = if base64 { encode_base64(&e) } else { e };
            json!({ "object": "embedding", "index": i, "embedding": e })
        })
        .collect();
    json!({
        "object": "list",
        "data": data,
        "model": model,
        "usage": { "prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens },
    })
}

/// An OpenAI embeddings answer in Gemini's `embedContent` / `batchEmbedContents` shape.
fn to_gemini(v: &Value, batch: bool) -> Value {
    let values: Vec<Value> = vectors(Wire::OpenAi, v).into_iter().map(|e| json!({ "values": e })).collect();
    if batch {
        json!({ "embeddings": values })
    } else {
        json!({ "embedding": values.into_iter().next().unwrap_or(Value::Null) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn floats(v: &Value) -> Vec<f64> {
        v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect()
    }

    #[test]
    fn base64_is_little_endian_f32_as_openai_sends_it() {
        // 1.0f32 = 00 00 80 3f, -2.0f32 = 00 00 00 c0.
        assert_eq!(encode_base64(&json!([1.0, -2.0])), json!("AACAPwAAAMA="));
        assert_eq!(floats(&decode_base64("AACAPwAAAMA=").unwrap()), vec![1.0, -2.0]);
        let v = json!([0.1, 0.2, 0.3, 0.4]);
        let back = floats(&decode_base64(encode_base64(&v).as_str().unwrap()).unwrap());
        for (a, b) in back.iter().zip(floats(&v)) {
            assert!((a - b).abs() < 1e-7, "{a} vs {b}");
        }
    }

    #[test]
    fn converted_answers_honour_encoding_format_and_count_the_input() {
        let gemini = json!({ "embeddings": [{ "values": [1.0, -2.0] }, { "values": [0.5, 0.25] }] });
        let body = json!({ "model": "e", "input": ["hello world", "hi"] });
        let endpoint = Endpoint::Embeddings;
        let a = answer(endpoint, Wire::Gemini, &gemini, None, body.as_object().unwrap(), "e", "gpt-4");
        assert_eq!(a["data"][0]["embedding"], json!([1.0, -2.0]));
        // Gemini counts nothing: the input is counted as the usage row counts it.
        let want = count::count_input("gpt-4", body.get("input"));
        assert_eq!(want, 3);
        assert_eq!(a["usage"], json!({ "prompt_tokens": want, "total_tokens": want }));
        let mut b64 = body.clone();
        b64["encoding_format"] = json!("base64");
        let a = answer(endpoint, Wire::Gemini, &gemini, None, b64.as_object().unwrap(), "e", "gpt-4");
        assert_eq!(a["data"][0]["embedding"], "AACAPwAAAMA=");
        assert_eq!(floats(&decode_base64(a["data"][1]["embedding"].as_str().unwrap()).unwrap()), vec![0.5, 0.25]);
        // Cohere's billed units are its count, in the answer and the usage row alike.
        let cohere =
            json!({ "embeddings": { "float": [[1.0, -2.0]] }, "meta": { "billed_units": { "input_tokens": 7 } } });
        let reported = reported_usage(Wire::Cohere, &cohere);
        assert_eq!(reported.map(|u| u.input), Some(7));
        let a = answer(endpoint, Wire::Cohere, &cohere, reported, b64.as_object().unwrap(), "e", "gpt-4");
        assert_eq!(
            (a["data"][0]["embedding"].as_str(), &a["usage"]["prompt_tokens"]),
            (Some("AACAPwAAAMA="), &json!(7))
        );
        assert_eq!(reported_usage(Wire::Gemini, &gemini), None);
    }

    #[test]
    fn gemini_callers_get_floats_even_from_a_base64_upstream() {
        let (_, req) =
            from_gemini(&json!({ "content": { "parts": [{ "text": "hi" }] } }).as_object().unwrap().clone(), "e");
        assert_eq!(req["encoding_format"], "float");
        let openai = json!({ "data": [{ "embedding": "AACAPwAAAMA=" }, { "embedding": [0.5] }] });
        let g = to_gemini(&openai, true);
        assert_eq!(g["embeddings"], json!([{ "values": [1.0, -2.0] }, { "values": [0.5] }]));
        let body = json!({ "input": ["hello world"] });
        assert_eq!(
            answer(
                Endpoint::GeminiEmbed { batch: false },
                Wire::OpenAi,
                &openai,
                None,
                body.as_object().unwrap(),
                "e",
                "e"
            )["embedding"]["values"],
            json!([1.0, -2.0])
        );
    }
}
