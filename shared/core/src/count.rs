//! Token counting, used when an upstream reports no usage. With the
//! `tiktoken` feature (every native build): OpenAI's BPEs — o200k_base for
//! the newer OpenAI models (gpt-4o, gpt-4.1, gpt-5, o-series), cl100k_base for
//! everything else, within a few percent for most Latin-script text on other
//! families. Without it (the edge worker, where the BPE tables alone would
//! pass the Workers 3 MiB limit): [`estimate_text`].

use serde_json::Value;

#[cfg(feature = "tiktoken")]
fn encoding_for(model: &str) -> &'static tiktoken_rs::CoreBPE {
    let m = model.rsplit('/').next().unwrap_or(model);
    let o200k =
        ["gpt-4o", "chatgpt-4o", "gpt-4.1", "gpt-4.5", "gpt-5", "o1", "o3", "o4"].iter().any(|p| m.starts_with(p));
    if o200k {
        tiktoken_rs::o200k_base_singleton()
    } else {
        tiktoken_rs::cl100k_base_singleton()
    }
}

#[cfg(feature = "tiktoken")]
pub fn count_text(model: &str, text: &str) -> i64 {
    if text.is_empty() {
        return 0;
    }
    encoding_for(model).encode_ordinary(text).len() as i64
}

#[cfg(not(feature = "tiktoken"))]
pub fn count_text(_model: &str, text: &str) -> i64 {
    estimate_text(text)
}

/// A tokenizer-free estimate: a word (a run of letters or digits of an
/// alphabetic script) costs one token plus one per eight characters (BPEs hold
/// most words whole, splitting long ones), every other character that is not
/// a space one token (CJK ideographs, kana and hangul are about a token each
/// in cl100k, punctuation and symbols usually one).
pub fn estimate_text(text: &str) -> i64 {
    let (mut tokens, mut run) = (0i64, 0i64);
    for c in text.chars() {
        let wordy = c.is_alphanumeric() && (c as u32) < 0x2E80;
        if wordy {
            run += 1;
            continue;
        }
        tokens += word(run);
        run = 0;
        if !c.is_whitespace() {
            tokens += 1;
        }
    }
    tokens + word(run)
}

fn word(chars: i64) -> i64 {
    if chars == 0 {
        0
    } else {
        1 + chars / 8
    }
}

/// Fixed estimate for one image part (OpenAI's low-detail cost).
const IMAGE_TOKENS: i64 = 85;

/// Prompt tokens of a chat request, following OpenAI's published recipe:
/// 3 per message, 1 more for a `name`, 3 to prime the reply.
pub fn count_chat_prompt(model: &str, body: &serde_json::Map<String, Value>) -> i64 {
    let Some(messages) = body.get("messages").and_then(Value::as_array) else {
        return 0;
    };
    let mut total = 3;
    for m in messages {
        total += 3;
        if let Some(name) = m.get("name").and_then(Value::as_str) {
            total += 1 + count_text(model, name);
        }
        total += count_content(model, m.get("content"));
        if let Some(calls) = m.get("tool_calls").and_then(Value::as_array) {
            for c in calls {
                let f = &c["function"];
                total += count_text(model, f["name"].as_str().unwrap_or(""));
                total += count_text(model, f["arguments"].as_str().unwrap_or(""));
            }
        }
    }
    if let Some(tools) = body.get("tools") {
        total += count_text(model, &tools.to_string());
    }
    total
}

fn count_content(model: &str, content: Option<&Value>) -> i64 {
    match content {
        Some(Value::String(s)) => count_text(model, s),
        Some(Value::Array(parts)) => parts
            .iter()
            .map(|p| match p.get("type").and_then(Value::as_str) {
                Some("image_url") | Some("image") => IMAGE_TOKENS,
                _ => p.get("text").and_then(Value::as_str).map_or(0, |t| count_text(model, t)),
            })
            .sum(),
        _ => 0,
    }
}

/// Tokens of a completions `prompt` or embeddings `input`: a string, a list of
/// strings, a list of token ids, or a list of such lists.
pub fn count_input(model: &str, input: Option<&Value>) -> i64 {
    match input {
        Some(Value::String(s)) => count_text(model, s),
        Some(Value::Number(_)) => 1,
        Some(Value::Array(items)) => items.iter().map(|i| count_input(model, Some(i))).sum(),
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn estimates_without_a_tokenizer() {
        assert_eq!(estimate_text(""), 0);
        assert_eq!(estimate_text("hello world"), 2);
        assert_eq!(estimate_text("Hi, there!"), 4);
        assert_eq!(estimate_text("你好世界"), 4);
        assert_eq!(estimate_text("internationalization"), 3);
    }

    #[cfg(feature = "tiktoken")]
    #[test]
    fn the_estimate_stays_near_cl100k_on_prose() {
        for text in [
            "The quick brown fox jumps over the lazy dog while the band plays on.",
            "Explain, in two short paragraphs, why the sky looks blue at noon but red at sunset.",
            "Rust's ownership model guarantees memory safety without a garbage collector.",
        ] {
            let (est, bpe) = (estimate_text(text), count_text("gpt-4", text));
            assert!((est - bpe).abs() * 4 <= bpe, "{text}: estimate {est}, cl100k {bpe}");
        }
    }

    #[cfg(feature = "tiktoken")]
    #[test]
    fn counts() {
        assert_eq!(count_text("gpt-4", "hello world"), 2);
        assert_eq!(count_text("gpt-4o", "hello world"), 2);
        assert_eq!(count_text("gpt-4", ""), 0);
        let body = json!({"messages":[{"role":"user","content":"hello world"}]});
        assert_eq!(count_chat_prompt("gpt-4", body.as_object().unwrap()), 3 + 3 + 2);
        assert_eq!(count_input("gpt-4", Some(&json!(["hello world", [1, 2, 3]]))), 5);
    }
}
