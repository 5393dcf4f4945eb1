//! A mock upstream per provider wire format, answering one shared script so
//! tests can compare formats. Framing follows each provider's public API
//! reference and official SDK parsers:
//! - OpenAI: Chat Completions object/chunk, `data:` frames and `data: [DONE]`
//!   (openai-python `_streaming.py`); Azure's `/openai/deployments/{d}/…?api-version=`
//!   path with the `api-key` header.
//! - Anthropic: Messages and "Streaming Messages" named events (`message_start`,
//!   `content_block_start`/`_delta`/`_stop`, `message_delta`, `message_stop`,
//!   `ping`, `error`), errors `{"type":"error","error":{type,message}}`
//!   (anthropic-sdk-python `_streaming.py` / `lib/streaming/_messages.py`).
//! - Gemini: `GenerateContentResponse` chunks as SSE (`alt=sse`, `\r\n\r\n`) or a
//!   streamed JSON array; errors `{"error":{code,message,status}}`; Vertex paths
//!   with a bearer token from an OAuth `token_uri` (google-genai `_api_client.py`).
//! - Bedrock Converse / ConverseStream: `application/vnd.amazon.eventstream`
//!   binary frames (prelude, headers, payload, CRC32s) with `:event-type`
//!   messageStart, contentBlockStart/Delta/Stop, messageStop, metadata.
//! - Cohere v2 chat: SSE events `message-start`, `content-start`, `content-delta`,
//!   `tool-call-start`/`-delta`/`-end`, `content-end`, `message-end`.
//!
//! The script, the same in every wire: "Hello, world!" in 4 pieces (usage 12
//! in, 4 out); a call to the first declared tool with `{"city":"Paris"}` when
//! tools are offered and the last turn is not a tool result (two calls, Paris
//! and Tokyo, when the last user text says "two calls"); "It is sunny." after
//! a tool result; a thinking part "Let me think." first when reasoning is
//! asked for; "Hello" with a length finish when the output limit is 2.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use bytes::Bytes;
use serde_json::{json, Value};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wire {
    OpenAi,
    Anthropic,
    Gemini,
    Bedrock,
    Cohere,
}

#[derive(Clone, Debug)]
pub enum WireBehavior {
    Ok,
    /// Answer with this status and the provider's error body.
    Fail(u16),
    /// Stream `after` text pieces, then the provider's in-stream error (or a cut connection).
    MidStreamError {
        after: usize,
    },
}

#[derive(Clone, Debug)]
pub struct Seen {
    pub path: String,
    pub query: String,
    pub headers: HeaderMap,
    pub body: Value,
}

struct Inner {
    wire: Wire,
    behavior: Mutex<WireBehavior>,
    seen: Mutex<Vec<Seen>>,
    token_calls: AtomicUsize,
}

#[derive(Clone)]
pub struct WireMock {
    pub addr: SocketAddr,
    inner: Arc<Inner>,
}

impl WireMock {
    pub async fn start(wire: Wire) -> WireMock {
        let inner = Arc::new(Inner {
            wire,
            behavior: Mutex::new(WireBehavior::Ok),
            seen: Mutex::new(Vec::new()),
            token_calls: AtomicUsize::new(0),
        });
        let app = Router::new().fallback(handle).with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        WireMock { addr, inner }
    }

    /// `http://127.0.0.1:PORT`, no path.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn set(&self, b: WireBehavior) {
        *self.inner.behavior.lock().expect("lock") = b;
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.inner.seen.lock().expect("lock").clone()
    }

    pub fn calls(&self) -> usize {
        self.inner.seen.lock().expect("lock").len()
    }

    /// Calls to the OAuth token endpoint (Vertex).
    pub fn token_calls(&self) -> usize {
        self.inner.token_calls.load(Ordering::SeqCst)
    }
}

// ---- the script ----

/// What a request asks, read from its own wire format.
#[derive(Debug, Default)]
struct Ask {
    model: String,
    tools: Vec<String>,
    after_tool: bool,
    two_calls: bool,
    think: bool,
    short: bool,
    stream: bool,
}

enum Reply {
    Text(Vec<&'static str>),
    Calls(Vec<(&'static str, String, &'static str)>),
}

impl Ask {
    fn reply(&self) -> Reply {
        if self.after_tool {
            Reply::Text(vec!["It is sunny."])
        } else if let Some(tool) = self.tools.first() {
            let mut calls = vec![("1", tool.clone(), "Paris")];
            if self.two_calls {
                calls.push(("2", tool.clone(), "Tokyo"));
            }
            Reply::Calls(calls)
        } else if self.short {
            Reply::Text(vec!["Hello"])
        } else {
            Reply::Text(vec!["Hello", ",", " world", "!"])
        }
    }

    fn output_tokens(&self) -> i64 {
        match self.reply() {
            Reply::Text(p) => p.len() as i64,
            Reply::Calls(c) => 5 * c.len() as i64,
        }
    }
}

fn last_user_text(v: &Value) -> String {
    v.to_string()
}

fn ask_of(wire: Wire, path: &str, query: &str, body: &Value) -> Ask {
    let s = |p: &str| body.pointer(p).and_then(Value::as_str).map(str::to_string);
    let mut a = Ask::default();
    match wire {
        Wire::OpenAi => {
            a.model = s("/model").unwrap_or_default();
            a.tools = names(body.get("tools"), "/function/name");
            let msgs = body["messages"].as_array().cloned().unwrap_or_default();
            let last = msgs.last().cloned().unwrap_or(Value::Null);
            a.after_tool = last["role"] == "tool";
            a.two_calls = last["role"] == "user" && last_user_text(&last["content"]).contains("two calls");
            a.think = body.get("reasoning_effort").is_some();
            a.short = body["max_tokens"] == 2 || body["max_completion_tokens"] == 2;
            a.stream = body["stream"] == true;
        }
        Wire::Anthropic => {
            a.model = s("/model").unwrap_or_default();
            a.tools = names(body.get("tools"), "/name");
            let last = body["messages"].as_array().and_then(|m| m.last().cloned()).unwrap_or(Value::Null);
            let blocks = last["content"].as_array().cloned().unwrap_or_default();
            a.after_tool = blocks.iter().any(|b| b["type"] == "tool_result");
            a.two_calls = last_user_text(&last["content"]).contains("two calls");
            a.think = body["thinking"]["type"] == "enabled";
            a.short = body["max_tokens"] == 2;
            a.stream = body["stream"] == true;
        }
        Wire::Gemini => {
            a.model = gemini_model(path);
            a.tools = body["tools"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|t| names(t.get("functionDeclarations"), "/name"))
                .collect();
            let last = body["contents"].as_array().and_then(|c| c.last().cloned()).unwrap_or(Value::Null);
            let parts = last["parts"].as_array().cloned().unwrap_or_default();
            a.after_tool = parts.iter().any(|p| p.get("functionResponse").is_some());
            a.two_calls = last_user_text(&last).contains("two calls");
            a.think = body["generationConfig"]["thinkingConfig"]["includeThoughts"] == true;
            a.short = body["generationConfig"]["maxOutputTokens"] == 2;
            a.stream = path.contains(":streamGenerateContent");
            let _ = query;
        }
        Wire::Bedrock => {
            a.model = path.split('/').nth(2).map(percent_decode).unwrap_or_default();
            a.tools = names(body.pointer("/toolConfig/tools"), "/toolSpec/name");
            let last = body["messages"].as_array().and_then(|m| m.last().cloned()).unwrap_or(Value::Null);
            let blocks = last["content"].as_array().cloned().unwrap_or_default();
            a.after_tool = blocks.iter().any(|b| b.get("toolResult").is_some());
            a.two_calls = last_user_text(&last).contains("two calls");
            a.think = body.pointer("/additionalModelRequestFields/thinking").is_some();
            a.short = body["inferenceConfig"]["maxTokens"] == 2;
            a.stream = path.ends_with("/converse-stream");
        }
        Wire::Cohere => {
            a.model = s("/model").unwrap_or_default();
            a.tools = names(body.get("tools"), "/function/name");
            let last = body["messages"].as_array().and_then(|m| m.last().cloned()).unwrap_or(Value::Null);
            a.after_tool = last["role"] == "tool";
            a.two_calls = last["role"] == "user" && last_user_text(&last["content"]).contains("two calls");
            a.think = body["thinking"]["type"] == "enabled";
            a.short = body["max_tokens"] == 2;
            a.stream = body["stream"] == true;
        }
    }
    a
}

fn names(list: Option<&Value>, pointer: &str) -> Vec<String> {
    list.and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|t| t.pointer(pointer).and_then(Value::as_str).map(str::to_string))
        .collect()
}

fn gemini_model(path: &str) -> String {
    let tail = path.rsplit("/models/").next().unwrap_or("");
    tail.split(':').next().unwrap_or("").to_string()
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

// ---- errors ----

fn error(wire: Wire, status: u16, message: &str) -> Response {
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let (body, extra): (Value, Option<(&str, &str)>) = match wire {
        Wire::OpenAi => (
            json!({"error": {"message": message, "type": if status >= 500 { "server_error" } else { "invalid_request_error" }, "param": null, "code": null}}),
            None,
        ),
        Wire::Anthropic => {
            let kind = match status {
                400 => "invalid_request_error",
                401 => "authentication_error",
                403 => "permission_error",
                404 => "not_found_error",
                429 => "rate_limit_error",
                529 => "overloaded_error",
                _ => "api_error",
            };
            (json!({"type": "error", "error": {"type": kind, "message": message}}), None)
        }
        Wire::Gemini => {
            let s = match status {
                400 => "INVALID_ARGUMENT",
                401 => "UNAUTHENTICATED",
                403 => "PERMISSION_DENIED",
                404 => "NOT_FOUND",
                429 => "RESOURCE_EXHAUSTED",
                503 => "UNAVAILABLE",
                _ => "INTERNAL",
            };
            (json!({"error": {"code": status, "message": message, "status": s}}), None)
        }
        Wire::Bedrock => {
            let kind = match status {
                400 => "ValidationException",
                403 => "UnrecognizedClientException",
                429 => "ThrottlingException",
                _ => "InternalServerException",
            };
            (json!({"message": message}), Some(("x-amzn-errortype", kind)))
        }
        Wire::Cohere => (json!({"message": message}), None),
    };
    let mut resp = (code, [("content-type", "application/json")], body.to_string()).into_response();
    if let Some((k, v)) = extra {
        resp.headers_mut().insert(k, v.parse().expect("header"));
    }
    resp
}

// ---- routing ----

async fn handle(State(inner): State<Arc<Inner>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let path = parts.uri.path().to_string();
    let query = parts.uri.query().unwrap_or("").to_string();
    let raw = axum::body::to_bytes(body, 64 << 20).await.unwrap_or_default();
    let wire = inner.wire;
    if path == "/token" {
        inner.token_calls.fetch_add(1, Ordering::SeqCst);
        let form = String::from_utf8_lossy(&raw);
        if !form.contains("grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer")
            || !form.contains("assertion=ey")
        {
            return (StatusCode::BAD_REQUEST, "{\"error\":\"invalid_grant\"}").into_response();
        }
        return axum::Json(json!({"access_token": "ya29.mock", "expires_in": 3599, "token_type": "Bearer"}))
            .into_response();
    }
    let body: Value = serde_json::from_slice(&raw).unwrap_or(Value::Null);
    inner.seen.lock().expect("lock").push(Seen {
        path: path.clone(),
        query: query.clone(),
        headers: parts.headers.clone(),
        body: body.clone(),
    });
    if let Some(refusal) = authorize(wire, &path, &query, &parts.headers) {
        return refusal;
    }
    let behavior = inner.behavior.lock().expect("lock").clone();
    if let WireBehavior::Fail(status) = behavior {
        return error(wire, status, "mock failing on purpose");
    }
    if parts.method == axum::http::Method::GET {
        return models(wire);
    }
    if body.is_null() && !raw.is_empty() && !path.ends_with("/audio/transcriptions") {
        return error(wire, 400, "mock: the body is not JSON");
    }
    let cut = match behavior {
        WireBehavior::MidStreamError { after } => Some(after),
        _ => None,
    };
    match (wire, path.as_str()) {
        (Wire::OpenAi, p) if p.ends_with("/embeddings") => embeddings_openai(&body),
        (Wire::Anthropic, "/v1/messages/count_tokens") => axum::Json(json!({"input_tokens": 12})).into_response(),
        (Wire::Gemini, p) if p.ends_with(":countTokens") => axum::Json(json!({"totalTokens": 12})).into_response(),
        (Wire::Gemini, p) if p.ends_with(":embedContent") => {
            axum::Json(json!({"embedding": {"values": [0.1, 0.2, 0.3, 0.4]}})).into_response()
        }
        (Wire::Gemini, p) if p.ends_with(":batchEmbedContents") => {
            let n = body["requests"].as_array().map_or(0, Vec::len);
            let e: Vec<Value> = (0..n).map(|_| json!({"values": [0.1, 0.2, 0.3, 0.4]})).collect();
            axum::Json(json!({"embeddings": e})).into_response()
        }
        (Wire::Cohere, "/v2/embed") => {
            let n = body["texts"].as_array().map_or(0, Vec::len);
            let e: Vec<Value> = (0..n).map(|_| json!([0.1, 0.2, 0.3, 0.4])).collect();
            axum::Json(json!({"id": "e1", "embeddings": {"float": e}, "texts": body["texts"], "meta": {"billed_units": {"input_tokens": n}}})).into_response()
        }
        (Wire::OpenAi, p) if p.ends_with("/responses") => responses(&body),
        (Wire::OpenAi, p) if p.ends_with("/images/generations") => axum::Json(json!({
            "created": 1_700_000_000, "data": [{"url": "https://example.com/cat.png", "revised_prompt": body["prompt"]}],
            "usage": {"input_tokens": 5, "output_tokens": 0, "total_tokens": 5}
        }))
        .into_response(),
        (Wire::OpenAi, p) if p.ends_with("/audio/speech") => {
            ([("content-type", "audio/mpeg")], Bytes::from_static(b"ID3\x04fake-mp3")).into_response()
        }
        (Wire::OpenAi, p) if p.ends_with("/audio/transcriptions") => {
            let form = String::from_utf8_lossy(&raw);
            let ct = parts.headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("");
            if !ct.starts_with("multipart/form-data; boundary=") || !form.contains("name=\"file\"") {
                return error(wire, 400, "mock: expected a multipart upload with a file");
            }
            axum::Json(json!({"text": "hello from audio", "usage": {"type": "duration", "seconds": 3}})).into_response()
        }
        (Wire::OpenAi, p) if p.ends_with("/moderations") => axum::Json(json!({
            "id": "modr-1", "model": body["model"], "results": [{"flagged": false, "categories": {}, "category_scores": {}}]
        }))
        .into_response(),
        (Wire::OpenAi | Wire::Cohere, p) if p.ends_with("/rerank") => {
            let n = body["documents"].as_array().map_or(0, Vec::len);
            let r: Vec<Value> = (0..n).map(|i| json!({"index": i, "relevance_score": 1.0 / (i as f64 + 1.0)})).collect();
            axum::Json(json!({"id": "r1", "results": r, "meta": {"billed_units": {"search_units": 1}}})).into_response()
        }
        _ => {
            let ask = ask_of(wire, &path, &query, &body);
            if !ask.stream {
                return axum::Json(answer(wire, &ask)).into_response();
            }
            match wire {
                Wire::Bedrock => stream_bytes("application/vnd.amazon.eventstream", bedrock_frames(&ask, cut)),
                Wire::Gemini if !query.contains("alt=sse") => stream_bytes("application/json", gemini_array(&ask, cut)),
                _ => stream_bytes("text/event-stream", sse_frames(wire, &ask, cut)),
            }
        }
    }
}

/// OpenAI's Responses API (text script only): the response object, or its
/// typed SSE events (`response.created` … `response.output_text.delta` …
/// `response.completed`) per the Responses streaming reference.
fn responses(body: &Value) -> Response {
    let model = body["model"].as_str().unwrap_or("");
    let text = "Hello, world!";
    let item = json!({"type": "message", "id": "msg_1", "status": "completed", "role": "assistant",
                      "content": [{"type": "output_text", "text": text, "annotations": []}]});
    let done = json!({"id": "resp_wm", "object": "response", "created_at": 1_700_000_000, "status": "completed",
                      "model": model, "output": [item.clone()], "error": null, "incomplete_details": null,
                      "usage": {"input_tokens": 12, "output_tokens": 4, "total_tokens": 16,
                                "input_tokens_details": {"cached_tokens": 0}, "output_tokens_details": {"reasoning_tokens": 0}}});
    if body["stream"] != true {
        return axum::Json(done).into_response();
    }
    let mut seq = 0;
    let mut ev = |kind: &str, mut v: Value| {
        v["type"] = kind.into();
        v["sequence_number"] = seq.into();
        seq += 1;
        ok(format!("event: {kind}\ndata: {v}\n\n"))
    };
    let mut started = done.clone();
    started["status"] = "in_progress".into();
    started["output"] = json!([]);
    let mut f = vec![ev("response.created", json!({"response": started}))];
    f.push(ev("response.output_item.added", json!({"output_index": 0, "item": item})));
    for p in ["Hello", ",", " world", "!"] {
        f.push(ev(
            "response.output_text.delta",
            json!({"item_id": "msg_1", "output_index": 0, "content_index": 0, "delta": p}),
        ));
    }
    f.push(ev("response.output_item.done", json!({"output_index": 0, "item": item})));
    f.push(ev("response.completed", json!({"response": done})));
    stream_bytes("text/event-stream", f)
}

/// The provider's refusal when a request lacks its credentials.
fn authorize(wire: Wire, path: &str, query: &str, h: &HeaderMap) -> Option<Response> {
    let has = |k: &str| h.get(k).and_then(|v| v.to_str().ok()).is_some_and(|v| !v.is_empty());
    let header = |k: &str| h.get(k).and_then(|v| v.to_str().ok()).unwrap_or("");
    let refusal = match wire {
        Wire::OpenAi if path.starts_with("/openai/deployments/") => (!has("api-key")
            || !query.contains("api-version="))
        .then_some((401, "Access denied due to missing api-key or api-version.")),
        Wire::Anthropic if !has("x-api-key") => Some((401, "x-api-key header is required")),
        Wire::Anthropic if !has("anthropic-version") => Some((400, "anthropic-version: header is required")),
        Wire::Gemini if path.starts_with("/v1/projects/") => (header("authorization") != "Bearer ya29.mock")
            .then_some((401, "Request had invalid authentication credentials.")),
        Wire::Gemini => (!has("x-goog-api-key") && !query.contains("key="))
            .then_some((403, "Method doesn't allow unregistered callers.")),
        Wire::Bedrock => (!header("authorization").starts_with("AWS4-HMAC-SHA256 Credential=") || !has("x-amz-date"))
            .then_some((403, "The security token included in the request is invalid.")),
        _ => None,
    };
    refusal.map(|(status, message)| error(wire, status, message))
}

fn models(wire: Wire) -> Response {
    let body = match wire {
        Wire::Anthropic => {
            json!({"data": [{"type": "model", "id": "claude-x", "display_name": "Claude X", "created_at": "2025-01-01T00:00:00Z"}], "has_more": false, "first_id": "claude-x", "last_id": "claude-x"})
        }
        Wire::Gemini => {
            json!({"models": [{"name": "models/gemini-x", "displayName": "Gemini X", "supportedGenerationMethods": ["generateContent", "countTokens"]}]})
        }
        Wire::Cohere => json!({"models": [{"name": "command-r", "endpoints": ["chat"]}]}),
        _ => {
            json!({"object": "list", "data": [{"id": "gpt-4o-mini", "object": "model", "created": 0, "owned_by": "mock"}]})
        }
    };
    axum::Json(body).into_response()
}

fn embeddings_openai(body: &Value) -> Response {
    let n = match &body["input"] {
        Value::Array(a) => a.len(),
        _ => 1,
    };
    let data: Vec<Value> =
        (0..n).map(|i| json!({"object": "embedding", "index": i, "embedding": [0.1, 0.2, 0.3, 0.4]})).collect();
    axum::Json(json!({"object": "list", "data": data, "model": body["model"], "usage": {"prompt_tokens": 3, "total_tokens": 3}}))
        .into_response()
}

fn stream_bytes(content_type: &'static str, frames: Vec<Result<Bytes, std::io::Error>>) -> Response {
    let body = Body::from_stream(futures_util::stream::iter(frames));
    Response::builder().status(200).header("content-type", content_type).body(body).expect("response")
}

// ---- whole answers ----

fn answer(wire: Wire, a: &Ask) -> Value {
    let out = a.output_tokens();
    let reply = a.reply();
    match wire {
        Wire::OpenAi => {
            let mut msg = json!({"role": "assistant", "content": null, "refusal": null});
            let finish = match &reply {
                Reply::Text(p) => {
                    msg["content"] = p.concat().into();
                    if a.short {
                        "length"
                    } else {
                        "stop"
                    }
                }
                Reply::Calls(c) => {
                    msg["tool_calls"] = c
                        .iter()
                        .map(|(id, n, city)| json!({"id": format!("call_{id}"), "type": "function", "function": {"name": n, "arguments": format!("{{\"city\":\"{city}\"}}")}}))
                        .collect();
                    "tool_calls"
                }
            };
            if a.think {
                msg["reasoning_content"] = "Let me think.".into();
            }
            json!({"id": "chatcmpl-wm", "object": "chat.completion", "created": 1_700_000_000, "model": a.model,
                   "choices": [{"index": 0, "message": msg, "logprobs": null, "finish_reason": finish}],
                   "usage": {"prompt_tokens": 12, "completion_tokens": out, "total_tokens": 12 + out}})
        }
        Wire::Anthropic => {
            let mut content = Vec::new();
            if a.think {
                content.push(json!({"type": "thinking", "thinking": "Let me think.", "signature": "sig123"}));
            }
            let stop = match &reply {
                Reply::Text(p) => {
                    content.push(json!({"type": "text", "text": p.concat()}));
                    if a.short {
                        "max_tokens"
                    } else {
                        "end_turn"
                    }
                }
                Reply::Calls(c) => {
                    for (id, n, city) in c {
                        content.push(json!({"type": "tool_use", "id": format!("toolu_0{id}"), "name": n, "input": {"city": city}}));
                    }
                    "tool_use"
                }
            };
            json!({"id": "msg_wm", "type": "message", "role": "assistant", "model": a.model, "content": content,
                   "stop_reason": stop, "stop_sequence": null,
                   "usage": {"input_tokens": 12, "output_tokens": out, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}})
        }
        Wire::Gemini => {
            let mut parts = Vec::new();
            if a.think {
                parts.push(json!({"text": "Let me think.", "thought": true}));
            }
            match &reply {
                Reply::Text(p) => parts.push(json!({"text": p.concat()})),
                Reply::Calls(c) => {
                    for (_, n, city) in c {
                        parts.push(json!({"functionCall": {"name": n, "args": {"city": city}}}));
                    }
                }
            }
            json!({"candidates": [{"content": {"role": "model", "parts": parts}, "finishReason": if a.short { "MAX_TOKENS" } else { "STOP" }, "index": 0}],
                   "usageMetadata": {"promptTokenCount": 12, "candidatesTokenCount": out, "totalTokenCount": 12 + out},
                   "modelVersion": a.model, "responseId": "resp-wm"})
        }
        Wire::Bedrock => {
            let mut content = Vec::new();
            if a.think {
                content.push(
                    json!({"reasoningContent": {"reasoningText": {"text": "Let me think.", "signature": "sig123"}}}),
                );
            }
            let stop = match &reply {
                Reply::Text(p) => {
                    content.push(json!({"text": p.concat()}));
                    if a.short {
                        "max_tokens"
                    } else {
                        "end_turn"
                    }
                }
                Reply::Calls(c) => {
                    for (id, n, city) in c {
                        content.push(json!({"toolUse": {"toolUseId": format!("tooluse_{id}"), "name": n, "input": {"city": city}}}));
                    }
                    "tool_use"
                }
            };
            json!({"output": {"message": {"role": "assistant", "content": content}}, "stopReason": stop,
                   "usage": {"inputTokens": 12, "outputTokens": out, "totalTokens": 12 + out}, "metrics": {"latencyMs": 5}})
        }
        Wire::Cohere => {
            let mut msg = json!({"role": "assistant"});
            let finish = match &reply {
                Reply::Text(p) => {
                    msg["content"] = json!([{"type": "text", "text": p.concat()}]);
                    if a.short {
                        "MAX_TOKENS"
                    } else {
                        "COMPLETE"
                    }
                }
                Reply::Calls(c) => {
                    msg["tool_plan"] = "I will check the weather.".into();
                    msg["tool_calls"] = c
                        .iter()
                        .map(|(id, n, city)| json!({"id": format!("call_{id}"), "type": "function", "function": {"name": n, "arguments": format!("{{\"city\":\"{city}\"}}")}}))
                        .collect();
                    "TOOL_CALL"
                }
            };
            json!({"id": "co-wm", "message": msg, "finish_reason": finish,
                   "usage": {"billed_units": {"input_tokens": 12, "output_tokens": out}, "tokens": {"input_tokens": 12, "output_tokens": out}}})
        }
    }
}

// ---- streams ----

fn ok(b: impl Into<Bytes>) -> Result<Bytes, std::io::Error> {
    Ok(b.into())
}

fn cut_connection() -> Result<Bytes, std::io::Error> {
    Err(std::io::Error::other("mock: connection cut mid-stream"))
}

fn sse_frames(wire: Wire, a: &Ask, cut: Option<usize>) -> Vec<Result<Bytes, std::io::Error>> {
    let mut f: Vec<Result<Bytes, std::io::Error>> = Vec::new();
    let out = a.output_tokens();
    let data = |v: Value| ok(format!("data: {v}\n\n"));
    let named = |name: &str, v: Value| ok(format!("event: {name}\ndata: {v}\n\n"));
    let reply = a.reply();
    match wire {
        Wire::OpenAi => {
            let chunk = |delta: Value, finish: Value| {
                json!({"id": "chatcmpl-wm", "object": "chat.completion.chunk", "created": 1_700_000_000, "model": a.model,
                       "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]})
            };
            f.push(data(chunk(json!({"role": "assistant", "content": ""}), Value::Null)));
            if a.think {
                f.push(data(chunk(json!({"reasoning_content": "Let me think."}), Value::Null)));
            }
            let finish = match &reply {
                Reply::Text(pieces) => {
                    for (i, p) in pieces.iter().enumerate() {
                        if cut == Some(i) {
                            f.push(data(json!({"error": {"message": "mock: upstream failed mid-stream", "type": "server_error"}})));
                            return f;
                        }
                        f.push(data(chunk(json!({"content": p}), Value::Null)));
                    }
                    if a.short {
                        "length"
                    } else {
                        "stop"
                    }
                }
                Reply::Calls(calls) => {
                    for (i, (id, n, city)) in calls.iter().enumerate() {
                        f.push(data(chunk(json!({"tool_calls": [{"index": i, "id": format!("call_{id}"), "type": "function", "function": {"name": n, "arguments": ""}}]}), Value::Null)));
                        f.push(data(chunk(
                            json!({"tool_calls": [{"index": i, "function": {"arguments": "{\"city\":"}}]}),
                            Value::Null,
                        )));
                        f.push(data(chunk(
                            json!({"tool_calls": [{"index": i, "function": {"arguments": format!("\"{city}\"}}")}}]}),
                            Value::Null,
                        )));
                    }
                    "tool_calls"
                }
            };
            f.push(data(chunk(json!({}), finish.into())));
            // Usage only when asked (stream_options.include_usage) — the real API's behaviour.
            f.push(data(json!({"id": "chatcmpl-wm", "object": "chat.completion.chunk", "created": 1_700_000_000, "model": a.model,
                               "choices": [], "usage": {"prompt_tokens": 12, "completion_tokens": out, "total_tokens": 12 + out}})));
            f.push(ok("data: [DONE]\n\n"));
        }
        Wire::Anthropic => {
            f.push(named("message_start", json!({"type": "message_start", "message": {"id": "msg_wm", "type": "message", "role": "assistant", "model": a.model, "content": [], "stop_reason": null, "stop_sequence": null, "usage": {"input_tokens": 12, "output_tokens": 1}}})));
            f.push(named("ping", json!({"type": "ping"})));
            let mut index = 0;
            if a.think {
                f.push(named("content_block_start", json!({"type": "content_block_start", "index": 0, "content_block": {"type": "thinking", "thinking": "", "signature": ""}})));
                f.push(named("content_block_delta", json!({"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "Let me think."}})));
                f.push(named("content_block_delta", json!({"type": "content_block_delta", "index": 0, "delta": {"type": "signature_delta", "signature": "sig123"}})));
                f.push(named("content_block_stop", json!({"type": "content_block_stop", "index": 0})));
                index = 1;
            }
            let stop = match &reply {
                Reply::Text(pieces) => {
                    f.push(named("content_block_start", json!({"type": "content_block_start", "index": index, "content_block": {"type": "text", "text": ""}})));
                    for (i, p) in pieces.iter().enumerate() {
                        if cut == Some(i) {
                            f.push(named("error", json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})));
                            return f;
                        }
                        f.push(named("content_block_delta", json!({"type": "content_block_delta", "index": index, "delta": {"type": "text_delta", "text": p}})));
                    }
                    f.push(named("content_block_stop", json!({"type": "content_block_stop", "index": index})));
                    if a.short {
                        "max_tokens"
                    } else {
                        "end_turn"
                    }
                }
                Reply::Calls(calls) => {
                    for (id, n, city) in calls {
                        f.push(named("content_block_start", json!({"type": "content_block_start", "index": index, "content_block": {"type": "tool_use", "id": format!("toolu_0{id}"), "name": n, "input": {}}})));
                        f.push(named("content_block_delta", json!({"type": "content_block_delta", "index": index, "delta": {"type": "input_json_delta", "partial_json": "{\"city\":"}})));
                        f.push(named("content_block_delta", json!({"type": "content_block_delta", "index": index, "delta": {"type": "input_json_delta", "partial_json": format!("\"{city}\"}}")}})));
                        f.push(named("content_block_stop", json!({"type": "content_block_stop", "index": index})));
                        index += 1;
                    }
                    "tool_use"
                }
            };
            f.push(named("message_delta", json!({"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": null}, "usage": {"output_tokens": out}})));
            f.push(named("message_stop", json!({"type": "message_stop"})));
        }
        Wire::Gemini => {
            for (i, c) in gemini_chunks(a).into_iter().enumerate() {
                if cut == Some(i) {
                    f.push(cut_connection());
                    return f;
                }
                f.push(ok(format!("data: {c}\r\n\r\n")));
            }
        }
        Wire::Cohere => {
            f.push(named("message-start", json!({"type": "message-start", "id": "co-wm", "delta": {"message": {"role": "assistant", "content": [], "tool_plan": "", "tool_calls": [], "citations": []}}})));
            let finish = match &reply {
                Reply::Text(pieces) => {
                    f.push(named("content-start", json!({"type": "content-start", "index": 0, "delta": {"message": {"content": {"type": "text", "text": ""}}}})));
                    for (i, p) in pieces.iter().enumerate() {
                        if cut == Some(i) {
                            f.push(cut_connection());
                            return f;
                        }
                        f.push(named("content-delta", json!({"type": "content-delta", "index": 0, "delta": {"message": {"content": {"text": p}}}})));
                    }
                    f.push(named("content-end", json!({"type": "content-end", "index": 0})));
                    if a.short {
                        "MAX_TOKENS"
                    } else {
                        "COMPLETE"
                    }
                }
                Reply::Calls(calls) => {
                    f.push(named("tool-plan-delta", json!({"type": "tool-plan-delta", "delta": {"message": {"tool_plan": "I will check the weather."}}})));
                    for (i, (id, n, city)) in calls.iter().enumerate() {
                        f.push(named("tool-call-start", json!({"type": "tool-call-start", "index": i, "delta": {"message": {"tool_calls": {"id": format!("call_{id}"), "type": "function", "function": {"name": n, "arguments": ""}}}}})));
                        f.push(named("tool-call-delta", json!({"type": "tool-call-delta", "index": i, "delta": {"message": {"tool_calls": {"function": {"arguments": "{\"city\":"}}}}})));
                        f.push(named("tool-call-delta", json!({"type": "tool-call-delta", "index": i, "delta": {"message": {"tool_calls": {"function": {"arguments": format!("\"{city}\"}}")}}}}})));
                        f.push(named("tool-call-end", json!({"type": "tool-call-end", "index": i})));
                    }
                    "TOOL_CALL"
                }
            };
            f.push(named("message-end", json!({"type": "message-end", "delta": {"finish_reason": finish, "usage": {"billed_units": {"input_tokens": 12, "output_tokens": out}, "tokens": {"input_tokens": 12, "output_tokens": out}}}})));
        }
        Wire::Bedrock => unreachable!("bedrock streams are binary"),
    }
    f
}

/// Gemini stream chunks: text pieces (cumulative usage on the last), or whole calls.
fn gemini_chunks(a: &Ask) -> Vec<Value> {
    let out = a.output_tokens();
    let chunk = |parts: Value, finish: Option<&str>, usage: bool| {
        let mut c = json!({"candidates": [{"content": {"role": "model", "parts": parts}, "index": 0}], "modelVersion": a.model, "responseId": "resp-wm"});
        if let Some(f) = finish {
            c["candidates"][0]["finishReason"] = f.into();
        }
        if usage {
            c["usageMetadata"] =
                json!({"promptTokenCount": 12, "candidatesTokenCount": out, "totalTokenCount": 12 + out});
        }
        c
    };
    let mut v = Vec::new();
    if a.think {
        v.push(chunk(json!([{"text": "Let me think.", "thought": true}]), None, false));
    }
    match a.reply() {
        Reply::Text(pieces) => {
            let n = pieces.len();
            for (i, p) in pieces.into_iter().enumerate() {
                let last = i + 1 == n;
                let finish = last.then_some(if a.short { "MAX_TOKENS" } else { "STOP" });
                v.push(chunk(json!([{"text": p}]), finish, last));
            }
        }
        Reply::Calls(calls) => {
            let parts: Vec<Value> =
                calls.iter().map(|(_, n, city)| json!({"functionCall": {"name": n, "args": {"city": city}}})).collect();
            v.push(chunk(Value::Array(parts), Some("STOP"), true));
        }
    }
    v
}

fn gemini_array(a: &Ask, cut: Option<usize>) -> Vec<Result<Bytes, std::io::Error>> {
    let mut f = Vec::new();
    for (i, c) in gemini_chunks(a).into_iter().enumerate() {
        if cut == Some(i) {
            f.push(cut_connection());
            return f;
        }
        f.push(ok(format!("{}{c}\n", if i == 0 { "[" } else { ",\r\n" })));
    }
    f.push(ok("]"));
    f
}

fn bedrock_frames(a: &Ask, cut: Option<usize>) -> Vec<Result<Bytes, std::io::Error>> {
    let ev = |kind: &str, v: Value| {
        ok(oblivious_core::wire::eventstream::encode(
            &[(":event-type", kind), (":content-type", "application/json"), (":message-type", "event")],
            v.to_string().as_bytes(),
        ))
    };
    let out = a.output_tokens();
    let mut f = vec![ev("messageStart", json!({"role": "assistant"}))];
    let mut index = 0;
    if a.think {
        f.push(ev(
            "contentBlockDelta",
            json!({"contentBlockIndex": 0, "delta": {"reasoningContent": {"text": "Let me think."}}}),
        ));
        f.push(ev(
            "contentBlockDelta",
            json!({"contentBlockIndex": 0, "delta": {"reasoningContent": {"signature": "sig123"}}}),
        ));
        f.push(ev("contentBlockStop", json!({"contentBlockIndex": 0})));
        index = 1;
    }
    let stop = match a.reply() {
        Reply::Text(pieces) => {
            for (i, p) in pieces.iter().enumerate() {
                if cut == Some(i) {
                    f.push(ok(oblivious_core::wire::eventstream::encode(
                        &[
                            (":exception-type", "throttlingException"),
                            (":content-type", "application/json"),
                            (":message-type", "exception"),
                        ],
                        json!({"message": "Too many requests"}).to_string().as_bytes(),
                    )));
                    return f;
                }
                f.push(ev("contentBlockDelta", json!({"contentBlockIndex": index, "delta": {"text": p}})));
            }
            f.push(ev("contentBlockStop", json!({"contentBlockIndex": index})));
            if a.short {
                "max_tokens"
            } else {
                "end_turn"
            }
        }
        Reply::Calls(calls) => {
            for (id, n, city) in calls {
                f.push(ev("contentBlockStart", json!({"contentBlockIndex": index, "start": {"toolUse": {"toolUseId": format!("tooluse_{id}"), "name": n}}})));
                f.push(ev(
                    "contentBlockDelta",
                    json!({"contentBlockIndex": index, "delta": {"toolUse": {"input": "{\"city\":"}}}),
                ));
                f.push(ev(
                    "contentBlockDelta",
                    json!({"contentBlockIndex": index, "delta": {"toolUse": {"input": format!("\"{city}\"}}")}}}),
                ));
                f.push(ev("contentBlockStop", json!({"contentBlockIndex": index})));
                index += 1;
            }
            "tool_use"
        }
    };
    f.push(ev("messageStop", json!({"stopReason": stop})));
    f.push(ev("metadata", json!({"usage": {"inputTokens": 12, "outputTokens": out, "totalTokens": 12 + out}, "metrics": {"latencyMs": 5}})));
    f
}
