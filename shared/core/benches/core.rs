//! Micro-benchmarks of the pure hot path: `cargo bench -p oblivious-core`.
//! Channel selection over 10k channels, a key lookup on a warm cache, stream
//! decode + convert per event for each upstream wire, a relayed answer's
//! usage, token counting per 1k tokens, and pricing.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark: failing loudly is right

use std::collections::HashMap;
use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use oblivious_core::model::Price;
use oblivious_core::pricing::{self, Usage};
use oblivious_core::select::{pick_channel, Candidate};
use oblivious_core::wire::{openai, Inbound, StreamDecoder, StreamEncoder, Wire};
use oblivious_core::{apikey, count};

fn selection(c: &mut Criterion) {
    // 10,000 channels over 5 priorities with assorted weights.
    let cands: Vec<Candidate> =
        (0..10_000).map(|i| Candidate { priority: (i % 5) as i64, weight: 1 + (i % 7) as u32 }).collect();
    let mut r = 0u64;
    c.bench_function("pick_channel over 10k channels", |b| {
        b.iter(|| {
            r = r.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            black_box(pick_channel(black_box(&cands), r))
        })
    });
}

fn key_lookup(c: &mut Criterion) {
    // The relay's cache: key hash → principal, here 100,000 entries.
    let mut rand = 7u8;
    let keys: Vec<String> = (0..100_000)
        .map(|_| {
            apikey::generate(|| {
                rand = rand.wrapping_mul(31).wrapping_add(17);
                rand
            })
        })
        .collect();
    let cache: HashMap<String, usize> = keys.iter().enumerate().map(|(i, k)| (apikey::hash(k), i)).collect();
    let key = &keys[54_321];
    c.bench_function("key lookup on a warm cache of 100k (hash + get)", |b| {
        b.iter(|| black_box(cache.get(&apikey::hash(black_box(key)))))
    });
}

/// 200 text deltas of one answer in each upstream wire's own stream format.
fn stream_bytes(wire: Wire) -> Vec<u8> {
    let mut s = String::new();
    let push = |s: &mut String, event: Option<&str>, data: String| {
        if let Some(e) = event {
            s.push_str(&format!("event: {e}\n"));
        }
        s.push_str(&format!("data: {data}\n\n"));
    };
    for i in 0..200 {
        let text = format!(" word{i}");
        let data = match wire {
            Wire::OpenAi => format!(
                r#"{{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1700000000,"model":"m","choices":[{{"index":0,"delta":{{"content":"{text}"}},"finish_reason":null}}]}}"#
            ),
            Wire::Anthropic => {
                format!(r#"{{"type":"content_block_delta","index":0,"delta":{{"type":"text_delta","text":"{text}"}}}}"#)
            }
            Wire::Gemini => format!(
                r#"{{"candidates":[{{"content":{{"parts":[{{"text":"{text}"}}],"role":"model"}},"index":0}}],"modelVersion":"m"}}"#
            ),
            Wire::Cohere => format!(
                r#"{{"type":"content-delta","index":0,"delta":{{"message":{{"content":{{"text":"{text}"}}}}}}}}"#
            ),
            Wire::Responses | Wire::Bedrock => unreachable!("not benchmarked here"),
        };
        let event = match wire {
            Wire::Anthropic => Some("content_block_delta"),
            Wire::Cohere => Some("content-delta"),
            _ => None,
        };
        if i == 0 && wire == Wire::Anthropic {
            push(&mut s, Some("message_start"), r#"{"type":"message_start","message":{"id":"msg_1","type":"message","role":"assistant","model":"m","content":[],"stop_reason":null,"usage":{"input_tokens":10,"output_tokens":1}}}"#.into());
            push(
                &mut s,
                Some("content_block_start"),
                r#"{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#.into(),
            );
        }
        push(&mut s, event, data);
    }
    s.into_bytes()
}

fn stream_convert(c: &mut Criterion) {
    let mut g = c.benchmark_group("stream decode + convert, per event");
    g.throughput(Throughput::Elements(200));
    for (name, wire, to) in [
        ("openai → openai (read for usage)", Wire::OpenAi, None),
        ("openai → anthropic", Wire::OpenAi, Some(Inbound::Anthropic)),
        ("anthropic → openai", Wire::Anthropic, Some(Inbound::OpenAi)),
        ("gemini → openai", Wire::Gemini, Some(Inbound::OpenAi)),
        ("cohere → openai", Wire::Cohere, Some(Inbound::OpenAi)),
    ] {
        let bytes = stream_bytes(wire);
        g.bench_function(name, |b| {
            b.iter(|| {
                let mut dec = StreamDecoder::new(wire, false);
                let mut enc = to.map(|t| StreamEncoder::new(t, "m", 1_700_000_000, true, true));
                let (mut events, mut out) = (Vec::new(), Vec::new());
                // Network-sized pieces, as the upstream's body arrives.
                for piece in bytes.chunks(1024) {
                    dec.push(piece);
                    while dec.next_unit(&mut events).is_some() {
                        if let Some(e) = enc.as_mut() {
                            for ev in events.drain(..) {
                                e.event(&ev, &mut out);
                            }
                        }
                        events.clear();
                    }
                }
                black_box(out.len())
            })
        });
    }
    g.finish();
}

fn counting(c: &mut Criterion) {
    let text: String =
        "The quick brown fox jumps over the lazy dog, and then it runs away into the forest. ".repeat(55);
    let tokens = count::count_text("gpt-4o", &text);
    let mut g = c.benchmark_group("tiktoken");
    g.throughput(Throughput::Elements(tokens as u64));
    for model in ["gpt-4o", "claude-sonnet-4"] {
        let _ = count::count_text(model, "warm the tables");
        g.bench_function(format!("count {tokens} tokens ({model})"), |b| {
            b.iter(|| black_box(count::count_text(model, black_box(&text))))
        });
    }
    g.finish();
}

fn pricing(c: &mut Criterion) {
    let price = Price {
        model: "m".into(),
        input_per_m: 2_500_000,
        output_per_m: 10_000_000,
        cached_input_per_m: Some(1_250_000),
        per_request: 100,
        ..Price::default()
    };
    let usage = Usage { prompt_tokens: 1234, cached_tokens: 512, completion_tokens: 321, ..Usage::default() };
    c.bench_function("price: cost of a usage", |b| {
        b.iter(|| black_box(pricing::cost(&price, 12_500, black_box(&usage))))
    });
    c.bench_function("price: estimate of a request", |b| {
        b.iter(|| black_box(pricing::estimate(&price, 12_500, black_box(1234), 4096)))
    });
}

/// A relayed (passthrough) answer: what it costs to learn its usage, by
/// building the whole answer and by reading the usage alone.
fn answer_usage(c: &mut Criterion) {
    let text = "Lorem ipsum dolor sit amet, consectetur adipiscing elit. ".repeat(20);
    let answer = serde_json::to_vec(&serde_json::json!({
        "id": "chatcmpl-1", "object": "chat.completion", "created": 1_700_000_000, "model": "gpt-4o-mini",
        "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": text}}],
        "usage": {"prompt_tokens": 30, "completion_tokens": 240, "total_tokens": 270,
                  "prompt_tokens_details": {"cached_tokens": 0}, "completion_tokens_details": {"reasoning_tokens": 0}}
    }))
    .unwrap();
    let mut g = c.benchmark_group("usage of a 1.3 KB answer");
    g.bench_function("whole answer parsed", |b| {
        b.iter(|| {
            let v: serde_json::Value = serde_json::from_slice(black_box(&answer)).unwrap();
            black_box(openai::parse_response(&v).usage)
        })
    });
    g.bench_function("usage alone", |b| b.iter(|| black_box(openai::reported_usage(black_box(&answer)))));
    g.finish();
}

/// One Argon2id hash at the production parameters (what a sign-in costs).
fn password_hash(c: &mut Criterion) {
    use oblivious_core::auth::password;
    let mut g = c.benchmark_group("password");
    g.sample_size(10);
    g.bench_function("argon2id_hash_m19MiB_t2_p1", |b| b.iter(|| password::hash("violet-harbor-42", [7; 16])));
    let phc = password::hash("violet-harbor-42", [7; 16]).unwrap_or_default();
    g.bench_function("argon2id_verify", |b| b.iter(|| password::verify("violet-harbor-42", &phc)));
    g.finish();
}

criterion_group!(benches, selection, key_lookup, stream_convert, answer_usage, counting, pricing, password_hash);
criterion_main!(benches);
