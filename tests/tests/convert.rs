#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test
//! The conversion matrix over real HTTP: every inbound format (OpenAI,
//! Anthropic, Gemini) against every upstream wire (OpenAI, Azure, Anthropic,
//! Gemini, Vertex, Bedrock, Cohere — each a mock speaking that provider's
//! framing), for text, tools and images, streamed and not. Prints the matrix.

use std::fmt::Write as _;

use oblivious_e2e::gateway::{channel, json_of};
use oblivious_e2e::wire_mock::{Wire, WireBehavior, WireMock};
use oblivious_e2e::Gateway;
use serde_json::{json, Value};

const IMAGE: &str = "iVBORw0KGgo=";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum In {
    OpenAi,
    Anthropic,
    Gemini,
    Responses,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Case {
    Text,
    Tools,
    Image,
}

/// What the client understood from the answer.
#[derive(Debug, Default)]
struct Outcome {
    status: u16,
    text: String,
    calls: Vec<(String, Value)>,
    finish: String,
    output_tokens: i64,
    raw: String,
}

fn body_for(inbound: In, model: &str, case: Case, stream: bool) -> Value {
    let tools_oa = json!([{"type": "function", "function": {"name": "get_weather", "description": "Weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]);
    match inbound {
        In::OpenAi => {
            let content = match case {
                Case::Image => json!([{"type": "text", "text": "what is this?"},
                    {"type": "image_url", "image_url": {"url": format!("data:image/png;base64,{IMAGE}")}}]),
                _ => json!("hi"),
            };
            let mut b = json!({"model": model, "messages": [{"role": "user", "content": content}], "stream": stream});
            if stream {
                b["stream_options"] = json!({"include_usage": true});
            }
            if case == Case::Tools {
                b["tools"] = tools_oa;
            }
            b
        }
        In::Anthropic => {
            let content = match case {
                Case::Image => json!([{"type": "text", "text": "what is this?"},
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": IMAGE}}]),
                _ => json!("hi"),
            };
            let mut b = json!({"model": model, "max_tokens": 100, "messages": [{"role": "user", "content": content}], "stream": stream});
            if case == Case::Tools {
                b["tools"] = json!([{"name": "get_weather", "description": "Weather",
                    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}]);
            }
            b
        }
        In::Responses => {
            let input = match case {
                Case::Image => json!([{"role": "user", "content": [{"type": "input_text", "text": "what is this?"},
                    {"type": "input_image", "image_url": format!("data:image/png;base64,{IMAGE}")}]}]),
                _ => json!("hi"),
            };
            let mut b = json!({"model": model, "input": input, "stream": stream});
            if case == Case::Tools {
                b["tools"] = json!([{"type": "function", "name": "get_weather", "description": "Weather",
                    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}]);
            }
            b
        }
        In::Gemini => {
            let mut parts = vec![json!({"text": if case == Case::Image { "what is this?" } else { "hi" }})];
            if case == Case::Image {
                parts.push(json!({"inlineData": {"mimeType": "image/png", "data": IMAGE}}));
            }
            let mut b = json!({"contents": [{"role": "user", "parts": parts}]});
            if case == Case::Tools {
                b["tools"] = json!([{"functionDeclarations": [{"name": "get_weather", "description": "Weather",
                    "parameters": {"type": "OBJECT", "properties": {"city": {"type": "STRING"}}, "required": ["city"]}}]}]);
            }
            b
        }
    }
}

/// `(event name, data)` of every SSE frame.
fn sse_frames(raw: &str) -> Vec<(Option<String>, String)> {
    raw.replace("\r\n", "\n")
        .split("\n\n")
        .filter_map(|frame| {
            let mut event = None;
            let mut data = Vec::new();
            for line in frame.lines() {
                if let Some(e) = line.strip_prefix("event:") {
                    event = Some(e.trim().to_string());
                } else if let Some(d) = line.strip_prefix("data:") {
                    data.push(d.trim_start().to_string());
                }
            }
            (!data.is_empty()).then(|| (event, data.join("\n")))
        })
        .collect()
}

async fn ask(gw: &Gateway, key: &str, inbound: In, model: &str, case: Case, stream: bool) -> Outcome {
    let http = reqwest::Client::new();
    let body = body_for(inbound, model, case, stream);
    let req = match inbound {
        In::OpenAi => http.post(format!("{}/v1/chat/completions", gw.url)).bearer_auth(key),
        In::Responses => http.post(format!("{}/v1/responses", gw.url)).bearer_auth(key),
        In::Anthropic => http
            .post(format!("{}/v1/messages", gw.url))
            .header("x-api-key", key)
            .header("anthropic-version", "2023-06-01"),
        In::Gemini => {
            let method = if stream { "streamGenerateContent?alt=sse" } else { "generateContent" };
            http.post(format!("{}/v1beta/models/{model}:{method}", gw.url)).header("x-goog-api-key", key)
        }
    };
    let resp = req.json(&body).send().await.unwrap();
    let status = resp.status().as_u16();
    let raw = resp.text().await.unwrap();
    let mut o = Outcome { status, raw: raw.clone(), ..Outcome::default() };
    if status != 200 {
        return o;
    }
    if !stream {
        let v: Value = serde_json::from_str(&raw).unwrap();
        read_answer(inbound, &v, &mut o);
        return o;
    }
    let mut args: Vec<(String, String)> = Vec::new();
    for (event, data) in sse_frames(&raw) {
        if data == "[DONE]" {
            continue;
        }
        let v: Value = serde_json::from_str(&data).unwrap_or_else(|e| panic!("bad frame {data}: {e}"));
        match inbound {
            In::OpenAi => {
                if let Some(c) = v["choices"].get(0) {
                    o.text.push_str(c["delta"]["content"].as_str().unwrap_or(""));
                    for call in c["delta"]["tool_calls"].as_array().into_iter().flatten() {
                        let i = call["index"].as_u64().unwrap() as usize;
                        if args.len() <= i {
                            args.resize(i + 1, (String::new(), String::new()));
                        }
                        if let Some(n) = call["function"]["name"].as_str() {
                            args[i].0 = n.to_string();
                        }
                        args[i].1.push_str(call["function"]["arguments"].as_str().unwrap_or(""));
                    }
                    if let Some(f) = c["finish_reason"].as_str() {
                        o.finish = f.to_string();
                    }
                }
                if let Some(n) = v["usage"]["completion_tokens"].as_i64() {
                    o.output_tokens = n;
                }
            }
            In::Anthropic => match event.as_deref().unwrap_or("") {
                "content_block_start" if v["content_block"]["type"] == "tool_use" => {
                    args.push((v["content_block"]["name"].as_str().unwrap().to_string(), String::new()));
                }
                "content_block_delta" => {
                    o.text.push_str(v["delta"]["text"].as_str().unwrap_or(""));
                    if let Some(p) = v["delta"]["partial_json"].as_str() {
                        args.last_mut().unwrap().1.push_str(p);
                    }
                }
                "message_delta" => {
                    o.finish = v["delta"]["stop_reason"].as_str().unwrap_or("").to_string();
                    o.output_tokens = v["usage"]["output_tokens"].as_i64().unwrap_or(0);
                }
                _ => {}
            },
            In::Gemini => {
                let before = o.calls.len();
                read_answer(inbound, &v, &mut o);
                assert!(o.calls.len() >= before);
            }
            In::Responses => match v["type"].as_str().unwrap_or("") {
                "response.output_text.delta" => o.text.push_str(v["delta"].as_str().unwrap()),
                "response.completed" | "response.incomplete" => {
                    let mut whole = Outcome::default();
                    read_answer(inbound, &v["response"], &mut whole);
                    o.calls = whole.calls;
                    o.finish = whole.finish;
                    o.output_tokens = whole.output_tokens;
                }
                _ => {}
            },
        }
    }
    for (name, a) in args {
        o.calls.push((name, serde_json::from_str(&a).unwrap_or(Value::String(a))));
    }
    o
}

fn read_answer(inbound: In, v: &Value, o: &mut Outcome) {
    match inbound {
        In::OpenAi => {
            let m = &v["choices"][0]["message"];
            o.text = m["content"].as_str().unwrap_or("").to_string();
            for c in m["tool_calls"].as_array().into_iter().flatten() {
                let args = serde_json::from_str(c["function"]["arguments"].as_str().unwrap()).unwrap();
                o.calls.push((c["function"]["name"].as_str().unwrap().to_string(), args));
            }
            o.finish = v["choices"][0]["finish_reason"].as_str().unwrap_or("").to_string();
            o.output_tokens = v["usage"]["completion_tokens"].as_i64().unwrap_or(0);
        }
        In::Anthropic => {
            for b in v["content"].as_array().into_iter().flatten() {
                match b["type"].as_str() {
                    Some("text") => o.text.push_str(b["text"].as_str().unwrap()),
                    Some("tool_use") => o.calls.push((b["name"].as_str().unwrap().to_string(), b["input"].clone())),
                    _ => {}
                }
            }
            o.finish = v["stop_reason"].as_str().unwrap_or("").to_string();
            o.output_tokens = v["usage"]["output_tokens"].as_i64().unwrap_or(0);
        }
        In::Responses => {
            for item in v["output"].as_array().into_iter().flatten() {
                match item["type"].as_str() {
                    Some("message") => o.text.push_str(item["content"][0]["text"].as_str().unwrap()),
                    Some("function_call") => {
                        let args = serde_json::from_str(item["arguments"].as_str().unwrap()).unwrap();
                        o.calls.push((item["name"].as_str().unwrap().to_string(), args));
                    }
                    _ => {}
                }
            }
            o.finish = v["status"].as_str().unwrap_or("").to_string();
            o.output_tokens = v["usage"]["output_tokens"].as_i64().unwrap_or(0);
        }
        In::Gemini => {
            let c = &v["candidates"][0];
            for p in c["content"]["parts"].as_array().into_iter().flatten() {
                if let Some(t) = p["text"].as_str() {
                    o.text.push_str(t);
                }
                if let Some(fc) = p.get("functionCall") {
                    o.calls.push((fc["name"].as_str().unwrap().to_string(), fc["args"].clone()));
                }
            }
            if let Some(f) = c["finishReason"].as_str() {
                o.finish = f.to_string();
            }
            if let Some(n) = v["usageMetadata"]["candidatesTokenCount"].as_i64() {
                o.output_tokens = n;
            }
        }
    }
}

/// Checks an outcome against the mock's script; `Err` says what is wrong.
fn check(inbound: In, case: Case, o: &Outcome) -> Result<(), String> {
    if o.status != 200 {
        return Err(format!("status {}: {}", o.status, o.raw));
    }
    match case {
        Case::Text | Case::Image => {
            if o.text != "Hello, world!" {
                return Err(format!("text {:?}", o.text));
            }
            let want = match inbound {
                In::OpenAi => "stop",
                In::Anthropic => "end_turn",
                In::Gemini => "STOP",
                In::Responses => "completed",
            };
            if o.finish != want {
                return Err(format!("finish {:?}, want {want}", o.finish));
            }
            if o.output_tokens != 4 {
                return Err(format!("output tokens {}", o.output_tokens));
            }
        }
        Case::Tools => {
            if o.calls != [("get_weather".to_string(), json!({"city": "Paris"}))] {
                return Err(format!("calls {:?} ({})", o.calls, o.raw));
            }
            let want = match inbound {
                In::OpenAi => "tool_calls",
                In::Anthropic => "tool_use",
                In::Gemini => "STOP",
                In::Responses => "completed",
            };
            if o.finish != want {
                return Err(format!("finish {:?}, want {want}", o.finish));
            }
        }
    }
    Ok(())
}

struct Upstreams {
    openai: WireMock,
    anthropic: WireMock,
    gemini: WireMock,
    bedrock: WireMock,
    cohere: WireMock,
}

/// A throwaway service account whose token endpoint is the Gemini mock.
fn service_account(token_uri: &str) -> String {
    let key = include_str!("../fixtures/test_service_account_key.pem");
    json!({
        "type": "service_account", "project_id": "p", "private_key_id": "k1",
        "private_key": key, "client_email": "relay@p.iam.gserviceaccount.com", "token_uri": token_uri,
    })
    .to_string()
}

fn matrix_config(u: &Upstreams) -> String {
    let sa = Value::String(service_account(&format!("{}/token", u.gemini.base_url()))).to_string();
    [
        "[prices.\"*\"]\nfree = true\n".to_string(),
        channel("openai", "openai", &format!("{}/v1", u.openai.base_url()), "models = [\"gpt-4o-mini\"]"),
        channel("azure", "azure", &u.openai.base_url(), "keys = [\"azure-key\"]\nmodels = [\"azure-gpt\"]"),
        channel("anthropic", "anthropic", &u.anthropic.base_url(), "keys = [\"sk-ant\"]\nmodels = [\"claude-x\"]"),
        channel("gemini", "gemini", &u.gemini.base_url(), "keys = [\"g-key\"]\nmodels = [\"gemini-x\"]"),
        channel(
            "vertex",
            "vertex",
            &u.gemini.base_url(),
            &format!("project = \"p\"\nregion = \"us-central1\"\nkeys = [{sa}]\nmodels = [\"vertex-gemini\"]"),
        ),
        channel(
            "bedrock",
            "bedrock",
            &u.bedrock.base_url(),
            "region = \"us-east-1\"\nkeys = [\"AKIDEXAMPLE:wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY\"]\n\
             models = [\"anthropic.claude-3-5-sonnet-20240620-v1:0\"]",
        ),
        channel("cohere", "cohere", &u.cohere.base_url(), "keys = [\"co-key\"]\nmodels = [\"command-r\"]"),
    ]
    .concat()
}

const CHANNELS: [(&str, &str); 7] = [
    ("openai", "gpt-4o-mini"),
    ("azure", "azure-gpt"),
    ("anthropic", "claude-x"),
    ("gemini", "gemini-x"),
    ("vertex", "vertex-gemini"),
    ("bedrock", "anthropic.claude-3-5-sonnet-20240620-v1:0"),
    ("cohere", "command-r"),
];

fn mock_for<'a>(u: &'a Upstreams, channel: &str) -> &'a WireMock {
    match channel {
        "openai" | "azure" => &u.openai,
        "anthropic" => &u.anthropic,
        "gemini" | "vertex" => &u.gemini,
        "bedrock" => &u.bedrock,
        _ => &u.cohere,
    }
}

async fn start_upstreams() -> Upstreams {
    Upstreams {
        openai: WireMock::start(Wire::OpenAi).await,
        anthropic: WireMock::start(Wire::Anthropic).await,
        gemini: WireMock::start(Wire::Gemini).await,
        bedrock: WireMock::start(Wire::Bedrock).await,
        cohere: WireMock::start(Wire::Cohere).await,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn every_inbound_format_reaches_every_upstream_wire() {
    let u = start_upstreams().await;
    let gw = Gateway::start(&matrix_config(&u));
    let key = gw.key(&[]);
    let mut table = String::from("| inbound \\ channel |");
    for (ch, _) in CHANNELS {
        write!(table, " {ch} |").unwrap();
    }
    table.push_str("\n|---|");
    table.push_str(&"---|".repeat(CHANNELS.len()));
    let mut failures = Vec::new();
    for inbound in [In::OpenAi, In::Anthropic, In::Gemini, In::Responses] {
        write!(table, "\n| {inbound:?} |").unwrap();
        for (ch, model) in CHANNELS {
            let mut cell = Vec::new();
            // OpenAI's own Responses API is passed through to OpenAI and Azure (the mock answers text only).
            let passthrough = inbound == In::Responses && matches!(ch, "openai" | "azure");
            let cases: &[Case] = if passthrough { &[Case::Text] } else { &[Case::Text, Case::Tools, Case::Image] };
            for &case in cases {
                for stream in [false, true] {
                    let o = ask(&gw, &key, inbound, model, case, stream).await;
                    let mut verdict = check(inbound, case, &o);
                    if verdict.is_ok() && case == Case::Image {
                        let seen = mock_for(&u, ch).seen();
                        let body = seen.last().map(|s| s.body.to_string()).unwrap_or_default();
                        if !body.contains(IMAGE) {
                            verdict = Err(format!("the image did not reach the upstream: {body}"));
                        }
                    }
                    match verdict {
                        Ok(()) => cell.push(format!("{case:?}{}", if stream { "+stream" } else { "" })),
                        Err(e) => failures.push(format!("{inbound:?} → {ch} {case:?} stream={stream}: {e}")),
                    }
                }
            }
            let want = cases.len() * 2;
            let mark = match (cell.len() == want, passthrough) {
                (true, true) => "✓ (passthrough)".to_string(),
                (true, false) => "✓".to_string(),
                _ => format!("{}/{want}", cell.len()),
            };
            write!(table, " {mark} |").unwrap();
        }
    }
    println!("{table}");
    assert!(failures.is_empty(), "{table}\n\n{}", failures.join("\n"));
    // Vertex exchanged its service account once and reused the token.
    assert_eq!(u.gemini.token_calls(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn upstream_errors_come_back_in_the_callers_format() {
    let u = start_upstreams().await;
    let gw = Gateway::start(&matrix_config(&u));
    let key = gw.key(&[]);
    u.anthropic.set(WireBehavior::Fail(400));
    u.gemini.set(WireBehavior::Fail(429));
    // OpenAI client, Anthropic channel failing 400: an OpenAI error with Anthropic's message.
    let o = ask(&gw, &key, In::OpenAi, "claude-x", Case::Text, false).await;
    assert_eq!(o.status, 400, "{}", o.raw);
    let v: Value = serde_json::from_str(&o.raw).unwrap();
    assert!(v["error"]["message"].as_str().unwrap().contains("upstream answered 400"), "{v}");
    // Anthropic client, same channel: Anthropic's own error body, passed through.
    let o = ask(&gw, &key, In::Anthropic, "claude-x", Case::Text, false).await;
    assert_eq!(o.status, 400);
    let v: Value = serde_json::from_str(&o.raw).unwrap();
    assert_eq!(v["type"], "error", "{v}");
    // Gemini client, Anthropic channel: a Google error.
    let o = ask(&gw, &key, In::Gemini, "claude-x", Case::Text, false).await;
    let v: Value = serde_json::from_str(&o.raw).unwrap();
    assert_eq!(v["error"]["status"], "INVALID_ARGUMENT", "{v}");
    // Anthropic client, Gemini channel rate-limited (retried, then given up): Anthropic's shape, 429.
    let o = ask(&gw, &key, In::Anthropic, "gemini-x", Case::Text, false).await;
    assert_eq!(o.status, 429, "{}", o.raw);
    let v: Value = serde_json::from_str(&o.raw).unwrap();
    assert_eq!(v["error"]["type"], "rate_limit_error", "{v}");
    // Our own refusals too: unknown model for a Gemini client, bad key for an Anthropic client.
    let o = ask(&gw, &key, In::Gemini, "no-such-model", Case::Text, false).await;
    assert_eq!(o.status, 404);
    assert_eq!(serde_json::from_str::<Value>(&o.raw).unwrap()["error"]["status"], "NOT_FOUND");
    let o = ask(&gw, "sk-wrong", In::Anthropic, "claude-x", Case::Text, false).await;
    assert_eq!(o.status, 401);
    assert_eq!(serde_json::from_str::<Value>(&o.raw).unwrap()["error"]["type"], "authentication_error");
}

#[tokio::test(flavor = "multi_thread")]
async fn mid_stream_errors_end_the_stream_in_the_callers_format() {
    let u = start_upstreams().await;
    let gw = Gateway::start(&matrix_config(&u));
    let key = gw.key(&[]);
    u.anthropic.set(WireBehavior::MidStreamError { after: 2 });
    let o = ask(&gw, &key, In::OpenAi, "claude-x", Case::Text, true).await;
    assert_eq!(o.status, 200);
    assert_eq!(o.text, "Hello,");
    let last = sse_frames(&o.raw).into_iter().last().unwrap();
    assert!(last.1.contains("\"error\""), "{}", o.raw);
    assert!(!o.raw.contains("[DONE]"), "a failed stream does not end normally: {}", o.raw);
    let o = ask(&gw, &key, In::Gemini, "claude-x", Case::Text, true).await;
    assert!(sse_frames(&o.raw).into_iter().last().unwrap().1.contains("\"error\""), "{}", o.raw);
}

#[tokio::test(flavor = "multi_thread")]
async fn gemini_array_streams_counting_and_model_lists() {
    let u = start_upstreams().await;
    let gw = Gateway::start(&matrix_config(&u));
    let key = gw.key(&[]);
    let http = reqwest::Client::new();
    // streamGenerateContent without alt=sse is one JSON array, from a Gemini channel and from an OpenAI one.
    for model in ["gemini-x", "gpt-4o-mini"] {
        let r = http
            .post(format!("{}/v1beta/models/{model}:streamGenerateContent", gw.url))
            .header("x-goog-api-key", &key)
            .json(&body_for(In::Gemini, model, Case::Text, true))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let chunks: Vec<Value> = serde_json::from_str(&r.text().await.unwrap()).unwrap();
        let text: String = chunks
            .iter()
            .flat_map(|c| c["candidates"][0]["content"]["parts"].as_array().cloned().unwrap_or_default())
            .filter_map(|p| p["text"].as_str().map(str::to_string))
            .collect();
        assert_eq!(text, "Hello, world!", "{model}");
    }
    // Counting is local and answers in each format.
    let r: Value = json_of(
        http.post(format!("{}/v1/messages/count_tokens", gw.url))
            .header("x-api-key", &key)
            .json(&json!({"model": "claude-x", "messages": [{"role": "user", "content": "hello there"}]})),
    )
    .await;
    assert!(r["input_tokens"].as_i64().unwrap() > 0, "{r}");
    let r: Value = json_of(
        http.post(format!("{}/v1beta/models/gemini-x:countTokens", gw.url))
            .header("x-goog-api-key", &key)
            .json(&json!({"contents": [{"parts": [{"text": "hello there"}]}]})),
    )
    .await;
    assert!(r["totalTokens"].as_i64().unwrap() > 0, "{r}");
    // Model lists in each shape.
    let g: Value = json_of(http.get(format!("{}/v1beta/models", gw.url)).header("x-goog-api-key", &key)).await;
    assert!(g["models"].as_array().unwrap().iter().any(|m| m["name"] == "models/gemini-x"), "{g}");
    let a: Value = json_of(
        http.get(format!("{}/v1/models", gw.url)).header("x-api-key", &key).header("anthropic-version", "2023-06-01"),
    )
    .await;
    assert!(a["data"].as_array().unwrap().iter().any(|m| m["type"] == "model" && m["id"] == "claude-x"), "{a}");
    // Usage rows carry the endpoint each format came in by.
    let rows = gw.usage_rows(2).await;
    assert!(rows.iter().any(|r| r["endpoint"] == "/v1beta/models:generateContent"), "{rows:?}");
}
