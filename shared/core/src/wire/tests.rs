//! Converter tests: golden payloads in each provider's real shape, a property
//! test that a request survives inbound → canonical → outbound for every pair,
//! and stream parsers fed arbitrary bytes.
#![allow(clippy::unwrap_used)]

use proptest::prelude::*;
use serde_json::{json, Value};

use super::canon::*;
use super::*;

fn obj(v: Value) -> serde_json::Map<String, Value> {
    v.as_object().unwrap().clone()
}

/// Parses a request in `wire`'s own shape.
fn parse_in(wire: Wire, v: &Value, model: &str) -> ChatRequest {
    match wire {
        Wire::OpenAi => openai::parse_request(&obj(v.clone())).unwrap(),
        Wire::Anthropic => anthropic::parse_request(&obj(v.clone())).unwrap(),
        Wire::Gemini => gemini::parse_request(&obj(v.clone()), model, false).unwrap(),
        _ => unreachable!("upstream-only wire"),
    }
}

// ---- golden payloads ----

/// An Anthropic request with a system block, an image, a tool, a tool round
/// trip and thinking, as in Anthropic's Messages reference.
fn anthropic_request() -> Value {
    json!({
        "model": "claude-sonnet-4-5",
        "max_tokens": 1024,
        "system": [{"type": "text", "text": "You are terse."}],
        "thinking": {"type": "enabled", "budget_tokens": 2048},
        "tools": [{"name": "get_weather", "description": "Weather by city",
                   "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}],
        "tool_choice": {"type": "auto"},
        "stop_sequences": ["END"],
        "messages": [
            {"role": "user", "content": [
                {"type": "text", "text": "What is in this picture, and the weather in Paris?"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}}
            ]},
            {"role": "assistant", "content": [
                {"type": "thinking", "thinking": "Need weather.", "signature": "sig1"},
                {"type": "text", "text": "Let me check."},
                {"type": "tool_use", "id": "toolu_01", "name": "get_weather", "input": {"city": "Paris"}}
            ]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_01", "content": "sunny, 21C"},
                {"type": "text", "text": "Thanks. And tomorrow?"}
            ]}
        ]
    })
}

#[test]
fn anthropic_request_to_openai() {
    let req = parse_in(Wire::Anthropic, &anthropic_request(), "");
    let out = build_request(Wire::OpenAi, &req, "gpt-4o", true).unwrap();
    assert_eq!(out["model"], "gpt-4o");
    assert_eq!(out["max_tokens"], 1024);
    assert_eq!(out["stop"], json!(["END"]));
    assert_eq!(out["stream_options"], json!({"include_usage": true}));
    assert_eq!(out["reasoning_effort"], "low");
    let m = out["messages"].as_array().unwrap();
    assert_eq!(m[0], json!({"role": "system", "content": "You are terse."}));
    assert_eq!(m[1]["content"][1]["image_url"]["url"], "data:image/png;base64,iVBORw0KGgo=");
    assert_eq!(m[2]["role"], "assistant");
    assert_eq!(m[2]["content"], "Let me check.");
    assert_eq!(m[2]["tool_calls"][0]["id"], "toolu_01");
    assert_eq!(m[2]["tool_calls"][0]["function"]["arguments"], r#"{"city":"Paris"}"#);
    assert_eq!(m[3], json!({"role": "tool", "tool_call_id": "toolu_01", "content": "sunny, 21C"}));
    assert_eq!(m[4], json!({"role": "user", "content": "Thanks. And tomorrow?"}));
    assert_eq!(out["tools"][0]["function"]["parameters"]["required"], json!(["city"]));
    assert_eq!(out["tool_choice"], "auto");
}

#[test]
fn anthropic_request_to_gemini() {
    let req = parse_in(Wire::Anthropic, &anthropic_request(), "");
    let out = build_request(Wire::Gemini, &req, "gemini-2.5-flash", false).unwrap();
    assert_eq!(out["systemInstruction"]["parts"][0]["text"], "You are terse.");
    let c = out["contents"].as_array().unwrap();
    assert_eq!(c[0]["role"], "user");
    assert_eq!(c[0]["parts"][1]["inlineData"], json!({"mimeType": "image/png", "data": "iVBORw0KGgo="}));
    assert_eq!(c[1]["role"], "model");
    assert_eq!(c[1]["parts"][1]["functionCall"], json!({"name": "get_weather", "args": {"city": "Paris"}}));
    // The tool result and the text after it share one user turn; the result names its function.
    assert_eq!(
        c[2]["parts"][0]["functionResponse"],
        json!({"name": "get_weather", "response": {"result": "sunny, 21C"}})
    );
    assert_eq!(c[2]["parts"][1]["text"], "Thanks. And tomorrow?");
    assert_eq!(out["generationConfig"]["maxOutputTokens"], 1024);
    assert_eq!(out["generationConfig"]["thinkingConfig"], json!({"includeThoughts": true, "thinkingBudget": 2048}));
    assert_eq!(out["tools"][0]["functionDeclarations"][0]["name"], "get_weather");
}

#[test]
fn openai_request_to_anthropic() {
    let v = json!({
        "model": "gpt-4o",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": [{"type": "text", "text": "Weather in Paris and Tokyo?"},
                                          {"type": "image_url", "image_url": {"url": "https://example.com/a.jpg"}}]},
            {"role": "assistant", "content": null, "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}},
                {"id": "call_2", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Tokyo\"}"}}
            ]},
            {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
            {"role": "tool", "tool_call_id": "call_2", "content": "rain"}
        ],
        "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}],
        "tool_choice": "required",
        "parallel_tool_calls": false,
        "response_format": {"type": "json_object"},
        "max_completion_tokens": 300,
        "stop": "STOP"
    });
    let req = parse_in(Wire::OpenAi, &v, "");
    let out = build_request(Wire::Anthropic, &req, "claude-x", false).unwrap();
    assert_eq!(out["max_tokens"], 300);
    assert_eq!(out["stop_sequences"], json!(["STOP"]));
    assert!(out["system"].as_str().unwrap().starts_with("Be brief.\n\nRespond with a single JSON object"));
    let m = out["messages"].as_array().unwrap();
    assert_eq!(m[0]["content"][1]["source"], json!({"type": "url", "url": "https://example.com/a.jpg"}));
    assert_eq!(m[1]["content"][1]["input"], json!({"city": "Tokyo"}));
    // Both results in one user turn, in order.
    assert_eq!(m[2]["content"][0], json!({"type": "tool_result", "tool_use_id": "call_1", "content": "sunny"}));
    assert_eq!(m[2]["content"][1]["tool_use_id"], "call_2");
    assert_eq!(out["tool_choice"], json!({"type": "any", "disable_parallel_tool_use": true}));
}

#[test]
fn refuses_what_a_target_cannot_say() {
    let mut v = anthropic_request();
    v["tools"].as_array_mut().unwrap().push(json!({"type": "web_search_20250305", "name": "web_search"}));
    let req = parse_in(Wire::Anthropic, &v, "");
    let e = build_request(Wire::OpenAi, &req, "gpt-4o", false).unwrap_err();
    assert_eq!(e.status(), 400);
    assert!(e.message.contains("web_search_20250305"), "{}", e.message);
    let n = json!({"model": "m", "n": 3, "messages": [{"role": "user", "content": "hi"}]});
    let req = parse_in(Wire::OpenAi, &n, "");
    assert_eq!(build_request(Wire::Anthropic, &req, "c", false).unwrap_err().param, Some("n"));
    assert_eq!(build_request(Wire::OpenAi, &req, "c", false).unwrap()["n"], 3);
}

#[test]
fn answers_convert_with_usage_and_finish() {
    // An Anthropic answer (Messages reference) with thinking and a tool call, cache reads included.
    let a = json!({
        "id": "msg_01", "type": "message", "role": "assistant", "model": "claude-x",
        "content": [{"type": "thinking", "thinking": "hmm", "signature": "s"},
                    {"type": "text", "text": "Checking."},
                    {"type": "tool_use", "id": "toolu_01", "name": "get_weather", "input": {"city": "Paris"}}],
        "stop_reason": "tool_use", "stop_sequence": null,
        "usage": {"input_tokens": 10, "cache_read_input_tokens": 90, "cache_creation_input_tokens": 0, "output_tokens": 7}
    });
    let r = parse_response(Wire::Anthropic, &a);
    assert_eq!(r.usage, Some(Usage { input: 100, output: 7, cached: 90, cache_write: 0, reasoning: 0 }));
    let o = render_response(Inbound::OpenAi, &r, "alias", 1);
    assert_eq!(o["model"], "alias");
    assert_eq!(o["choices"][0]["finish_reason"], "tool_calls");
    assert_eq!(o["choices"][0]["message"]["content"], "Checking.");
    assert_eq!(o["choices"][0]["message"]["reasoning_content"], "hmm");
    assert_eq!(o["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"], r#"{"city":"Paris"}"#);
    assert_eq!(o["usage"]["prompt_tokens"], 100);
    assert_eq!(o["usage"]["prompt_tokens_details"]["cached_tokens"], 90);
    let g = render_response(Inbound::Gemini, &r, "alias", 1);
    assert_eq!(g["candidates"][0]["finishReason"], "STOP");
    assert_eq!(g["candidates"][0]["content"]["parts"][0], json!({"text": "hmm", "thought": true}));
    assert_eq!(g["usageMetadata"]["cachedContentTokenCount"], 90);
    // Gemini answer with thoughts counted apart → OpenAI reasoning tokens and Anthropic output.
    let gem = json!({
        "candidates": [{"content": {"role": "model", "parts": [{"text": "Hi"}]}, "finishReason": "MAX_TOKENS", "index": 0}],
        "usageMetadata": {"promptTokenCount": 5, "candidatesTokenCount": 2, "thoughtsTokenCount": 3, "totalTokenCount": 10},
        "modelVersion": "gemini-2.5-flash", "responseId": "r1"
    });
    let r = parse_response(Wire::Gemini, &gem);
    assert_eq!(r.finish, Some(FinishReason::Length));
    let o = render_response(Inbound::OpenAi, &r, "m", 1);
    assert_eq!(o["usage"]["completion_tokens"], 5);
    assert_eq!(o["usage"]["completion_tokens_details"]["reasoning_tokens"], 3);
    let an = render_response(Inbound::Anthropic, &r, "m", 1);
    assert_eq!(an["stop_reason"], "max_tokens");
    assert_eq!(an["usage"]["output_tokens"], 5);
}

fn decode_all(wire: Wire, json_array: bool, bytes: &[u8], split: usize) -> Vec<Event> {
    let mut d = StreamDecoder::new(wire, json_array);
    let mut ev = Vec::new();
    for chunk in bytes.chunks(split.max(1)) {
        d.push(chunk);
        while d.next_unit(&mut ev).is_some() {}
    }
    d.finish(&mut ev);
    ev
}

fn encode_all(inbound: Inbound, events: &[Event], sse: bool) -> String {
    let mut enc = StreamEncoder::new(inbound, "m", 1, true, sse);
    let mut out = Vec::new();
    for e in events {
        enc.event(e, &mut out);
    }
    enc.finish(&mut out, false);
    String::from_utf8(out).unwrap()
}

/// OpenAI chunks with parallel streamed tool calls (as openai-python's
/// ChatCompletionChunk documents them: `index`, then `id`/`name`, then argument pieces).
const OPENAI_TOOL_STREAM: &str = concat!(
    "data: {\"id\":\"c1\",\"model\":\"gpt\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":null}}]}\n\n",
    "data: {\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"call_1\",\"type\":\"function\",\"function\":{\"name\":\"get_weather\",\"arguments\":\"\"}}]}}]}\n\n",
    "data: {\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"{\\\"city\\\":\"}}]}}]}\n\n",
    "data: {\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"\\\"Paris\\\"}\"}}]}}]}\n\n",
    "data: {\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":1,\"id\":\"call_2\",\"type\":\"function\",\"function\":{\"name\":\"get_weather\",\"arguments\":\"{\\\"city\\\":\\\"Tokyo\\\"}\"}}]}}]}\n\n",
    "data: {\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"tool_calls\"}]}\n\n",
    "data: {\"id\":\"c1\",\"choices\":[],\"usage\":{\"prompt_tokens\":12,\"completion_tokens\":9,\"total_tokens\":21}}\n\n",
    "data: [DONE]\n\n",
);

#[test]
fn openai_tool_stream_decodes_in_any_split() {
    let want = vec![
        Event::Start { id: "c1".into(), model: "gpt".into() },
        Event::ToolCallStart { index: 0, id: "call_1".into(), name: "get_weather".into() },
        Event::ToolCallArgs { index: 0, delta: "{\"city\":".into() },
        Event::ToolCallArgs { index: 0, delta: "\"Paris\"}".into() },
        Event::ToolCallStart { index: 1, id: "call_2".into(), name: "get_weather".into() },
        Event::ToolCallArgs { index: 1, delta: "{\"city\":\"Tokyo\"}".into() },
        Event::Finish(FinishReason::ToolCalls),
        Event::Usage(Usage { input: 12, output: 9, ..Usage::default() }),
    ];
    for split in [1, 7, 64, 4096] {
        assert_eq!(decode_all(Wire::OpenAi, false, OPENAI_TOOL_STREAM.as_bytes(), split), want, "split {split}");
    }
}

#[test]
fn openai_tool_stream_as_anthropic_events() {
    let events = decode_all(Wire::OpenAi, false, OPENAI_TOOL_STREAM.as_bytes(), 4096);
    let out = encode_all(Inbound::Anthropic, &events, true);
    // Read back with our own Anthropic decoder: the same calls, arguments and usage.
    let back = decode_all(Wire::Anthropic, false, out.as_bytes(), 5);
    let args: Vec<_> = back
        .iter()
        .filter_map(|e| match e {
            Event::ToolCallArgs { index, delta } => Some((*index, delta.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(
        args,
        [(0, "{\"city\":".to_string()), (0, "\"Paris\"}".to_string()), (1, "{\"city\":\"Tokyo\"}".to_string())]
    );
    assert!(back.contains(&Event::Finish(FinishReason::ToolCalls)));
    assert!(back.contains(&Event::Usage(Usage { input: 12, output: 9, ..Usage::default() })));
    let names: Vec<&str> = out.lines().filter_map(|l| l.strip_prefix("event: ")).collect();
    assert_eq!(names.first(), Some(&"message_start"));
    assert_eq!(&names[names.len() - 2..], ["message_delta", "message_stop"]);
    assert_eq!(names.iter().filter(|n| **n == "content_block_start").count(), 2);
    assert_eq!(names.iter().filter(|n| **n == "content_block_stop").count(), 2);
}

#[test]
fn openai_tool_stream_as_gemini_chunks() {
    let events = decode_all(Wire::OpenAi, false, OPENAI_TOOL_STREAM.as_bytes(), 4096);
    for sse in [true, false] {
        let out = encode_all(Inbound::Gemini, &events, sse);
        let chunks: Vec<Value> = if sse {
            out.split("\r\n\r\n")
                .filter_map(|f| f.strip_prefix("data: "))
                .map(|d| serde_json::from_str(d).unwrap())
                .collect()
        } else {
            serde_json::from_str::<Vec<Value>>(&out).unwrap()
        };
        // Whole calls, one per chunk, then the finish chunk with usage.
        assert_eq!(
            chunks[0]["candidates"][0]["content"]["parts"][0]["functionCall"],
            json!({"name": "get_weather", "args": {"city": "Paris"}})
        );
        assert_eq!(chunks[1]["candidates"][0]["content"]["parts"][0]["functionCall"]["args"]["city"], "Tokyo");
        let last = chunks.last().unwrap();
        assert_eq!(last["candidates"][0]["finishReason"], "STOP");
        assert_eq!(last["usageMetadata"]["promptTokenCount"], 12);
        // And back through our Gemini decoder: calls with ids and a tool-calls finish.
        let back = decode_all(Wire::Gemini, !sse, out.as_bytes(), 3);
        assert!(back.contains(&Event::Finish(FinishReason::ToolCalls)));
        assert_eq!(back.iter().filter(|e| matches!(e, Event::ToolCallStart { .. })).count(), 2);
    }
}

/// Anthropic's own stream (Streaming Messages reference): thinking, text, a
/// tool call with input_json_delta pieces, usage in message_start and message_delta.
const ANTHROPIC_STREAM: &str = concat!(
    "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"claude-x\",\"content\":[],\"stop_reason\":null,\"usage\":{\"input_tokens\":25,\"output_tokens\":1}}}\n\n",
    "event: ping\ndata: {\"type\":\"ping\"}\n\n",
    "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"thinking\",\"thinking\":\"\"}}\n\n",
    "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"thinking_delta\",\"thinking\":\"Hmm.\"}}\n\n",
    "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"signature_delta\",\"signature\":\"EqQB\"}}\n\n",
    "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n",
    "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":1,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n",
    "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"text_delta\",\"text\":\"Okay\"}}\n\n",
    "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":1}\n\n",
    "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":2,\"content_block\":{\"type\":\"tool_use\",\"id\":\"toolu_1\",\"name\":\"get_weather\",\"input\":{}}}\n\n",
    "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":2,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{\\\"city\\\": \\\"Pa\"}}\n\n",
    "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":2,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"ris\\\"}\"}}\n\n",
    "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":2}\n\n",
    "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"tool_use\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":42}}\n\n",
    "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
);

#[test]
fn anthropic_stream_as_openai_chunks() {
    let events = decode_all(Wire::Anthropic, false, ANTHROPIC_STREAM.as_bytes(), 11);
    assert!(events.contains(&Event::Usage(Usage { input: 25, output: 42, ..Usage::default() })));
    let out = encode_all(Inbound::OpenAi, &events, true);
    let chunks: Vec<Value> = out
        .split("\n\n")
        .filter_map(|f| f.strip_prefix("data: "))
        .filter(|d| *d != "[DONE]")
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    assert!(out.ends_with("data: [DONE]\n\n"));
    let deltas: Vec<&Value> = chunks.iter().filter_map(|c| c["choices"].get(0)).map(|c| &c["delta"]).collect();
    assert_eq!(deltas[0]["role"], "assistant");
    assert!(deltas.iter().any(|d| d["reasoning_content"] == "Hmm."));
    assert!(deltas.iter().any(|d| d["content"] == "Okay"));
    let args: String = deltas.iter().filter_map(|d| d["tool_calls"][0]["function"]["arguments"].as_str()).collect();
    assert_eq!(args, "{\"city\": \"Paris\"}");
    assert!(chunks.iter().any(|c| c["choices"][0]["finish_reason"] == "tool_calls"));
    let usage = chunks.iter().find(|c| c["choices"].as_array().unwrap().is_empty()).unwrap();
    assert_eq!(usage["usage"]["total_tokens"], 67);
}

#[test]
fn gemini_array_stream_as_anthropic() {
    // streamGenerateContent without alt=sse: one JSON array, elements arriving over time.
    let body = concat!(
        "[{\"candidates\": [{\"content\": {\"role\": \"model\",\"parts\": [{\"text\": \"Hel\"}]},\"index\": 0}],\"modelVersion\": \"gemini-2.5-flash\",\"responseId\": \"r\"}\n",
        ",\r\n{\"candidates\": [{\"content\": {\"role\": \"model\",\"parts\": [{\"text\": \"lo\"}]},\"finishReason\": \"STOP\",\"index\": 0}],",
        "\"usageMetadata\": {\"promptTokenCount\": 4,\"candidatesTokenCount\": 2,\"totalTokenCount\": 6}}\n]"
    );
    let events = decode_all(Wire::Gemini, true, body.as_bytes(), 9);
    let out = encode_all(Inbound::Anthropic, &events, true);
    let back = decode_all(Wire::Anthropic, false, out.as_bytes(), 4096);
    let text: String = back
        .iter()
        .filter_map(|e| match e {
            Event::Text(t) => Some(t.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(text, "Hello");
    assert!(back.contains(&Event::Usage(Usage { input: 4, output: 2, ..Usage::default() })));
    assert!(back.contains(&Event::Finish(FinishReason::Stop)));
}

#[test]
fn errors_render_in_each_format() {
    let e = crate::ApiError::new(crate::ErrorKind::RateLimited, "rate_limited", "slow down");
    assert_eq!(
        error_body(Inbound::Anthropic, &e),
        json!({"type": "error", "error": {"type": "rate_limit_error", "message": "slow down"}})
    );
    assert_eq!(
        error_body(Inbound::Gemini, &e),
        json!({"error": {"code": 429, "message": "slow down", "status": "RESOURCE_EXHAUSTED"}})
    );
    assert_eq!(parse_error(Wire::Gemini, &json!([{"error": {"code": 400, "message": "bad"}}])).as_deref(), Some("bad"));
    let mut out = Vec::new();
    stream_error(Inbound::Anthropic, true, "cut", &mut out);
    let back = decode_all(Wire::Anthropic, false, &out, 2);
    assert_eq!(back, [Event::Error { message: "cut".into() }]);
}

// ---- properties ----

fn text() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9 ,.!?{}\"':]{1,24}"
}

fn image() -> impl Strategy<Value = ImageSource> {
    prop_oneof![
        "[a-z]{3,8}".prop_map(|p| ImageSource::Url(format!("https://example.com/{p}.png"))),
        "[A-Za-z0-9+/]{4,16}".prop_map(|d| ImageSource::Base64 { media_type: "image/png".into(), data: d }),
    ]
}

/// A conversation: user turns of text and images; assistant turns of text and
/// tool calls, each answered by a tool turn.
fn conversation() -> impl Strategy<Value = ChatRequest> {
    let user = (text(), proptest::option::of(image())).prop_map(|(t, img)| {
        let mut parts = vec![Part::Text(t)];
        parts.extend(img.map(Part::Image));
        Message { role: Role::User, parts }
    });
    let turn = (user, proptest::option::of(text()), 0usize..3, text());
    (
        proptest::collection::vec(turn, 1..4),
        proptest::option::of(text()),
        proptest::collection::vec("[A-Z]{2,5}", 0..3),
        1i64..5000,
        proptest::option::of(0.0f64..2.0),
        any::<bool>(),
    )
        .prop_map(|(turns, system, stop, max_tokens, temperature, with_tools)| {
            let mut messages = Vec::new();
            let mut call = 0;
            for (user, reply, calls, result) in turns {
                messages.push(user);
                let calls = if with_tools { calls } else { 0 };
                let mut parts: Vec<Part> = reply.into_iter().map(Part::Text).collect();
                let mut results = Vec::new();
                for _ in 0..calls {
                    call += 1;
                    let id = format!("call_{call}");
                    parts.push(Part::ToolCall {
                        id: id.clone(),
                        name: "lookup".into(),
                        arguments: format!("{{\"q\":{call}}}"),
                    });
                    results.push(Part::ToolResult {
                        id,
                        name: "lookup".into(),
                        content: result.clone(),
                        is_error: false,
                    });
                }
                if !parts.is_empty() {
                    messages.push(Message { role: Role::Assistant, parts });
                }
                if !results.is_empty() {
                    messages.push(Message { role: Role::Tool, parts: results });
                }
            }
            ChatRequest {
                model: "m".into(),
                system: system.into_iter().collect(),
                messages,
                tools: if with_tools {
                    vec![Tool {
                        name: "lookup".into(),
                        description: Some("Looks up".into()),
                        parameters: json!({"type": "object", "properties": {"q": {"type": "integer"}}}),
                    }]
                } else {
                    vec![]
                },
                tool_choice: with_tools.then_some(ToolChoice::Auto),
                max_tokens: Some(max_tokens),
                temperature,
                stop,
                ..ChatRequest::default()
            }
        })
}

/// What every wire keeps: adjacent same-role turns merged, adjacent texts
/// joined, one system string.
fn meaning(r: &ChatRequest) -> ChatRequest {
    let mut merged: Vec<Message> = Vec::new();
    for m in &r.messages {
        match merged.last_mut() {
            Some(last) if last.role == m.role => last.parts.extend(m.parts.clone()),
            _ => merged.push(m.clone()),
        }
    }
    let messages = merged
        .into_iter()
        .map(|m| {
            let mut parts: Vec<Part> = Vec::new();
            for p in m.parts {
                match (parts.last_mut(), &p) {
                    (Some(Part::Text(a)), Part::Text(b)) => a.push_str(b),
                    _ => parts.push(p),
                }
            }
            Message { role: m.role, parts }
        })
        .collect();
    ChatRequest {
        model: String::new(),
        system: if r.system.is_empty() { vec![] } else { vec![r.system.join("\n\n")] },
        messages,
        stream: false,
        ..r.clone()
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// inbound A → canonical → upstream B → canonical: the same conversation, for every pair.
    #[test]
    fn requests_survive_every_pair(req in conversation()) {
        for a in [Wire::OpenAi, Wire::Anthropic, Wire::Gemini] {
            let in_a = build_request(a, &req, "m", false).unwrap();
            let canon = parse_in(a, &in_a, "m");
            for b in [Wire::OpenAi, Wire::Anthropic, Wire::Gemini] {
                let out_b = build_request(b, &canon, "m", false).unwrap();
                let back = parse_in(b, &out_b, "m");
                prop_assert_eq!(meaning(&back), meaning(&req), "{:?} → {:?}: {}", a, b, out_b);
            }
        }
    }

    /// Arbitrary bytes in arbitrary splits: events or a clean error, never a panic.
    #[test]
    fn stream_parsers_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600), split in 1usize..64) {
        for (wire, array) in [(Wire::OpenAi, false), (Wire::Anthropic, false), (Wire::Gemini, false), (Wire::Gemini, true), (Wire::Bedrock, false), (Wire::Cohere, false), (Wire::Responses, false)] {
            let events = decode_all(wire, array, &bytes, split);
            for inbound in [Inbound::OpenAi, Inbound::Anthropic, Inbound::Gemini] {
                let _ = encode_all(inbound, &events, true);
            }
        }
    }

    /// Well-formed streams cut anywhere end with an error or a partial answer, never a panic.
    #[test]
    fn truncated_streams_never_panic(cut in 0usize..2000) {
        for (wire, body) in [(Wire::OpenAi, OPENAI_TOOL_STREAM), (Wire::Anthropic, ANTHROPIC_STREAM)] {
            let b = body.as_bytes();
            let _ = decode_all(wire, false, &b[..cut.min(b.len())], 13);
        }
    }
}

#[test]
fn responses_requests_and_streams_convert() {
    let v = json!({
        "model": "claude-x",
        "instructions": "Be brief.",
        "input": [
            {"role": "user", "content": [{"type": "input_text", "text": "Weather?"},
                                         {"type": "input_image", "image_url": "https://example.com/x.png"}]},
            {"type": "function_call", "call_id": "call_1", "name": "get_weather", "arguments": "{\"city\":\"Paris\"}"},
            {"type": "function_call_output", "call_id": "call_1", "output": "sunny"}
        ],
        "tools": [{"type": "function", "name": "get_weather", "parameters": {"type": "object"}}],
        "max_output_tokens": 64
    });
    let req = responses::parse_request(&obj(v)).unwrap();
    assert_eq!(req.system, ["Be brief."]);
    assert_eq!(req.messages.len(), 3);
    assert_eq!(
        req.messages[2].parts[0],
        Part::ToolResult { id: "call_1".into(), name: "get_weather".into(), content: "sunny".into(), is_error: false }
    );
    let out = build_request(Wire::Anthropic, &req, "claude-x", false).unwrap();
    assert_eq!(out["messages"][2]["content"][0]["tool_use_id"], "call_1");
    let stateful =
        responses::parse_request(&obj(json!({"model": "m", "input": "hi", "previous_response_id": "resp_1"}))).unwrap();
    assert!(build_request(Wire::Anthropic, &stateful, "c", false).is_err());

    let events = decode_all(Wire::OpenAi, false, OPENAI_TOOL_STREAM.as_bytes(), 4096);
    let out = encode_all(Inbound::Responses, &events, true);
    let frames: Vec<Value> = out
        .split("\n\n")
        .filter_map(|f| f.lines().find_map(|l| l.strip_prefix("data: ")))
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    let kinds: Vec<&str> = frames.iter().map(|f| f["type"].as_str().unwrap()).collect();
    assert_eq!(kinds[0], "response.created");
    assert_eq!(*kinds.last().unwrap(), "response.completed");
    for (i, f) in frames.iter().enumerate() {
        assert_eq!(f["sequence_number"], i);
    }
    let done = frames.last().unwrap();
    assert_eq!(done["response"]["output"][0]["type"], "function_call");
    assert_eq!(done["response"]["output"][1]["arguments"], "{\"city\":\"Tokyo\"}");
    assert_eq!(done["response"]["usage"]["total_tokens"], 21);
    let deltas: String = frames
        .iter()
        .filter(|f| f["type"] == "response.function_call_arguments.delta" && f["output_index"] == 0)
        .filter_map(|f| f["delta"].as_str())
        .collect();
    assert_eq!(deltas, "{\"city\":\"Paris\"}");
}

#[test]
fn bedrock_converse_stream_decodes() {
    let frame = |kind: &str, v: Value| {
        eventstream::encode(&[(":event-type", kind), (":message-type", "event")], v.to_string().as_bytes())
    };
    let mut bytes = Vec::new();
    bytes.extend(frame("messageStart", json!({"role": "assistant"})));
    bytes.extend(frame("contentBlockDelta", json!({"contentBlockIndex": 0, "delta": {"text": "Hi"}})));
    bytes.extend(frame(
        "contentBlockStart",
        json!({"contentBlockIndex": 1, "start": {"toolUse": {"toolUseId": "t1", "name": "f"}}}),
    ));
    bytes.extend(frame(
        "contentBlockDelta",
        json!({"contentBlockIndex": 1, "delta": {"toolUse": {"input": "{\"a\":1}"}}}),
    ));
    bytes.extend(frame("messageStop", json!({"stopReason": "tool_use"})));
    bytes.extend(frame("metadata", json!({"usage": {"inputTokens": 3, "outputTokens": 2, "cacheReadInputTokens": 5}})));
    let ev = decode_all(Wire::Bedrock, false, &bytes, 7);
    assert_eq!(ev[1], Event::Text("Hi".into()));
    assert_eq!(ev[2], Event::ToolCallStart { index: 0, id: "t1".into(), name: "f".into() });
    assert_eq!(ev[3], Event::ToolCallArgs { index: 0, delta: "{\"a\":1}".into() });
    assert_eq!(ev[4], Event::Finish(FinishReason::ToolCalls));
    assert_eq!(ev[5], Event::Usage(Usage { input: 8, output: 2, cached: 5, ..Usage::default() }));
    // A corrupt frame ends the stream with one error.
    let mut bad = frame("contentBlockDelta", json!({"contentBlockIndex": 0, "delta": {"text": "x"}}));
    bad[20] ^= 0xff;
    bad.extend(frame("messageStop", json!({"stopReason": "end_turn"})));
    let ev = decode_all(Wire::Bedrock, false, &bad, 5);
    assert!(matches!(ev.as_slice(), [Event::Error { .. }]), "{ev:?}");
}

#[test]
fn bedrock_and_cohere_requests() {
    let req = parse_in(Wire::Anthropic, &anthropic_request(), "");
    let b = build_request(Wire::Bedrock, &req, "m", false).unwrap();
    assert_eq!(b["system"], json!([{"text": "You are terse."}]));
    assert_eq!(b["messages"][0]["content"][1]["image"], json!({"format": "png", "source": {"bytes": "iVBORw0KGgo="}}));
    assert_eq!(b["messages"][1]["content"][0]["reasoningContent"]["reasoningText"]["signature"], "sig1");
    assert_eq!(
        b["messages"][1]["content"][2]["toolUse"],
        json!({"toolUseId": "toolu_01", "name": "get_weather", "input": {"city": "Paris"}})
    );
    assert_eq!(b["messages"][2]["content"][0]["toolResult"]["status"], "success");
    assert_eq!(b["inferenceConfig"], json!({"maxTokens": 1024, "stopSequences": ["END"]}));
    assert_eq!(b["toolConfig"]["tools"][0]["toolSpec"]["inputSchema"]["json"]["required"], json!(["city"]));
    let url = parse_in(
        Wire::OpenAi,
        &json!({"model": "m", "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://x/y.png"}}]}]}),
        "",
    );
    assert_eq!(build_request(Wire::Bedrock, &url, "m", false).unwrap_err().status(), 400);
    let c = build_request(Wire::Cohere, &req, "command-r", true).unwrap();
    assert_eq!(c["messages"][0], json!({"role": "system", "content": "You are terse."}));
    assert_eq!(c["messages"][2]["tool_calls"][0]["function"]["arguments"], r#"{"city":"Paris"}"#);
    assert_eq!(c["messages"][3], json!({"role": "tool", "tool_call_id": "toolu_01", "content": "sunny, 21C"}));
    assert_eq!(c["thinking"], json!({"type": "enabled", "token_budget": 2048}));
    assert_eq!(c["stream"], true);
}

#[test]
fn usage_of_an_answer_read_without_the_rest() {
    let answer = json!({
        "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "gpt-4o",
        "choices": [{"index": 0, "finish_reason": "stop",
                     "message": {"role": "assistant", "content": "Hi \"there\" \u{1F600}", "tool_calls": [
                         {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{\"a\":[1,2]}"}}]}}],
        "usage": {"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17,
                  "prompt_tokens_details": {"cached_tokens": 4},
                  "completion_tokens_details": {"reasoning_tokens": 2}}
    });
    let bytes = serde_json::to_vec(&answer).unwrap();
    let fast = openai::reported_usage(&bytes).unwrap();
    assert_eq!(Some(fast), openai::parse_response(&answer).usage);
    assert_eq!((fast.input, fast.output, fast.cached, fast.reasoning), (12, 5, 4, 2));
    // No usage, a null one, or not JSON: nothing reported (the caller counts).
    assert_eq!(openai::reported_usage(br#"{"choices":[]}"#), None);
    assert_eq!(openai::reported_usage(br#"{"usage":null}"#), None);
    assert_eq!(openai::reported_usage(b"<html>bad gateway</html>"), None);
}
