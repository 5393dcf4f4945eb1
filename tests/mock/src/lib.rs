//! A mock upstream that speaks OpenAI's wire format: `chat.completion` and
//! `chat.completion.chunk` objects, SSE framing with `data: ` lines and a final
//! `data: [DONE]`, the usage chunk with `choices: []` when
//! `stream_options.include_usage` is set, and `{"error":{...}}` bodies.
//! Shapes follow the OpenAI API reference (Chat Completions object, chunk
//! object, error codes) and openai-python's `_streaming.py`, which parses
//! `data:` events, stops at `[DONE]` and raises on an `error` key.
//!
//! Tests steer it at runtime with [`Behavior`] and read what it saw.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use bytes::Bytes;
use serde_json::{json, Value};

pub mod banner;

#[derive(Clone, Debug)]
pub enum Behavior {
    /// Answer normally.
    Ok,
    /// Answer with this status and an OpenAI error body.
    Fail(u16),
    /// Fail with this status for the next `n` calls, then answer normally.
    FailTimes(u16, usize),
    /// Accept the connection and say nothing for this long before answering.
    Stall(Duration),
    /// Drop the connection without answering.
    Hangup,
}

#[derive(Clone, Debug)]
pub struct StreamShape {
    /// Content pieces sent as separate chunks.
    pub pieces: Vec<String>,
    /// Pause before each piece.
    pub interval: Duration,
    /// Abort the connection after this many pieces (a mid-stream failure).
    pub cut_after: Option<usize>,
    /// Leave out usage even when asked (some upstreams do).
    pub omit_usage: bool,
    /// Keep the body open this long after `[DONE]` (slow upstreams close late).
    pub linger: Duration,
}

impl Default for StreamShape {
    fn default() -> Self {
        StreamShape {
            pieces: ["Hello", ",", " world", "!"].iter().map(|s| s.to_string()).collect(),
            interval: Duration::ZERO,
            cut_after: None,
            omit_usage: false,
            linger: Duration::ZERO,
        }
    }
}

#[derive(Default)]
pub struct Seen {
    pub calls: AtomicUsize,
    /// Calls per `Authorization` header value.
    pub by_key: Mutex<HashMap<String, usize>>,
    pub bodies: Mutex<Vec<Value>>,
    /// Each call's `traceparent` header (empty when it had none).
    pub traceparents: Mutex<Vec<String>>,
    /// Streams whose client went away before the end.
    pub cancelled: AtomicUsize,
    pub completed_streams: AtomicUsize,
}

struct Inner {
    name: String,
    behavior: Mutex<Behavior>,
    /// `Authorization` values that get a 500 (a broken key on a healthy upstream).
    bad_keys: Mutex<Vec<String>>,
    /// Prompt tokens reported as served from the provider's cache.
    cached_tokens: AtomicUsize,
    stream: Mutex<StreamShape>,
    /// Keep each call's body and key (tests read them; a benchmark turns this off).
    recording: AtomicBool,
    seen: Seen,
}

/// A running mock upstream. Its base URL ends in `/v1`.
#[derive(Clone)]
pub struct Mock {
    pub addr: SocketAddr,
    inner: Arc<Inner>,
}

impl Mock {
    pub async fn start(name: &str) -> Mock {
        Self::start_on(name, 0).await
    }

    pub async fn start_on(name: &str, port: u16) -> Mock {
        let inner = Arc::new(Inner {
            name: name.to_string(),
            behavior: Mutex::new(Behavior::Ok),
            bad_keys: Mutex::new(Vec::new()),
            cached_tokens: AtomicUsize::new(0),
            stream: Mutex::new(StreamShape::default()),
            recording: AtomicBool::new(true),
            seen: Seen::default(),
        });
        let app = Router::new()
            .route("/v1/chat/completions", post(chat))
            .route("/v1/completions", post(completions))
            .route("/v1/embeddings", post(embeddings))
            .route("/v1/models", get(models))
            // Large bodies (the hostile tests send 16 MB) are read like any other.
            .layer(axum::extract::DefaultBodyLimit::max(64 * 1024 * 1024))
            .with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.expect("bind mock");
        let addr = listener.local_addr().expect("mock addr");
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Mock { addr, inner }
    }

    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    pub fn set(&self, b: Behavior) {
        *self.inner.behavior.lock().expect("lock") = b;
    }

    /// Makes calls with this upstream key fail with 500.
    pub fn fail_key(&self, key: &str) {
        self.inner.bad_keys.lock().expect("lock").push(format!("Bearer {key}"));
    }

    /// Reports this many of each prompt's tokens as cached.
    pub fn set_cached_tokens(&self, n: usize) {
        self.inner.cached_tokens.store(n, Ordering::SeqCst);
    }

    pub fn set_stream(&self, s: StreamShape) {
        *self.inner.stream.lock().expect("lock") = s;
    }

    /// Stops (or resumes) keeping bodies and per-key counts, which would grow
    /// without bound under a long load; `calls` is always counted.
    pub fn set_recording(&self, on: bool) {
        self.inner.recording.store(on, Ordering::SeqCst);
    }

    pub fn calls(&self) -> usize {
        self.inner.seen.calls.load(Ordering::SeqCst)
    }

    pub fn calls_by_key(&self) -> HashMap<String, usize> {
        self.inner.seen.by_key.lock().expect("lock").clone()
    }

    pub fn bodies(&self) -> Vec<Value> {
        self.inner.seen.bodies.lock().expect("lock").clone()
    }

    /// Each recorded call's `traceparent` ("" when it had none).
    pub fn traceparents(&self) -> Vec<String> {
        self.inner.seen.traceparents.lock().expect("lock").clone()
    }

    pub fn cancelled(&self) -> usize {
        self.inner.seen.cancelled.load(Ordering::SeqCst)
    }

    pub fn completed_streams(&self) -> usize {
        self.inner.seen.completed_streams.load(Ordering::SeqCst)
    }
}

fn error(status: u16, message: &str) -> Response {
    let kind = if status >= 500 { "server_error" } else { "invalid_request_error" };
    let code = if status == 429 { json!("rate_limit_exceeded") } else { Value::Null };
    let body = json!({ "error": { "message": message, "type": kind, "param": null, "code": code } });
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, [("content-type", "application/json")], body.to_string()).into_response()
}

/// Records the call and applies the configured behaviour; `Some` short-circuits.
async fn admit(inner: &Inner, headers: &HeaderMap, body: &Value) -> Option<Response> {
    inner.seen.calls.fetch_add(1, Ordering::SeqCst);
    let key = headers.get("authorization").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    if inner.recording.load(Ordering::Relaxed) {
        *inner.seen.by_key.lock().expect("lock").entry(key.clone()).or_default() += 1;
        inner.seen.bodies.lock().expect("lock").push(body.clone());
        let traceparent = headers.get("traceparent").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
        inner.seen.traceparents.lock().expect("lock").push(traceparent);
    }
    if inner.bad_keys.lock().expect("lock").contains(&key) {
        return Some(error(500, "this key is broken"));
    }
    let behavior = {
        let mut b = inner.behavior.lock().expect("lock");
        let now = b.clone();
        if let Behavior::FailTimes(status, n) = now {
            *b = if n <= 1 { Behavior::Ok } else { Behavior::FailTimes(status, n - 1) };
            return Some(error(status, &format!("{} failing on purpose", inner.name)));
        }
        now
    };
    match behavior {
        Behavior::Ok | Behavior::FailTimes(..) => None,
        Behavior::Fail(status) => Some(error(status, &format!("{} failing on purpose", inner.name))),
        Behavior::Stall(d) => {
            tokio::time::sleep(d).await;
            None
        }
        Behavior::Hangup => {
            // A body stream that errors immediately makes hyper drop the connection.
            let body = Body::from_stream(futures_util::stream::once(async {
                Err::<Bytes, std::io::Error>(std::io::Error::other("hangup"))
            }));
            Some(Response::builder().status(200).body(body).expect("response"))
        }
    }
}

fn parse(raw: &Bytes) -> Option<Value> {
    serde_json::from_slice(raw).ok()
}

fn words(v: &Value) -> i64 {
    match v {
        Value::String(s) => s.split_whitespace().count() as i64,
        Value::Array(a) => a.iter().map(words).sum(),
        Value::Object(o) => o.get("content").map(words).unwrap_or(0),
        _ => 0,
    }
}

fn usage(prompt: i64, completion: i64, cached: i64) -> Value {
    json!({
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": { "cached_tokens": cached.min(prompt), "audio_tokens": 0 },
        "completion_tokens_details": { "reasoning_tokens": 0, "audio_tokens": 0, "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0 }
    })
}

async fn chat(State(inner): State<Arc<Inner>>, headers: HeaderMap, raw: Bytes) -> Response {
    let Some(body) = parse(&raw) else {
        return error(400, "mock: the body is not JSON");
    };
    if let Some(r) = admit(&inner, &headers, &body).await {
        return r;
    }
    let model = body["model"].as_str().unwrap_or("unknown").to_string();
    let prompt = 10 + words(&body["messages"]);
    let shape = inner.stream.lock().expect("lock").clone();
    if body["stream"] == json!(true) {
        let include_usage = body["stream_options"]["include_usage"] == json!(true) && !shape.omit_usage;
        return sse(inner.clone(), model, shape, include_usage, prompt, false);
    }
    let text: String = shape.pieces.concat();
    let answer = json!({
        "id": "chatcmpl-mock123",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": model,
        "system_fingerprint": "fp_mock",
        "choices": [{
            "index": 0,
            "message": { "role": "assistant", "content": text, "refusal": null },
            "logprobs": null,
            "finish_reason": "stop"
        }],
        "usage": usage(prompt, shape.pieces.len() as i64, inner.cached_tokens.load(Ordering::SeqCst) as i64),
        "served_by": inner.name,
    });
    let mut answer = answer;
    if shape.omit_usage {
        answer.as_object_mut().expect("object").remove("usage");
    }
    (StatusCode::OK, [("content-type", "application/json")], answer.to_string()).into_response()
}

async fn completions(State(inner): State<Arc<Inner>>, headers: HeaderMap, raw: Bytes) -> Response {
    let Some(body) = parse(&raw) else {
        return error(400, "mock: the body is not JSON");
    };
    if let Some(r) = admit(&inner, &headers, &body).await {
        return r;
    }
    let model = body["model"].as_str().unwrap_or("unknown").to_string();
    let prompt = 10 + words(&body["prompt"]);
    let shape = inner.stream.lock().expect("lock").clone();
    if body["stream"] == json!(true) {
        let include_usage = body["stream_options"]["include_usage"] == json!(true) && !shape.omit_usage;
        return sse(inner.clone(), model, shape, include_usage, prompt, true);
    }
    let answer = json!({
        "id": "cmpl-mock123",
        "object": "text_completion",
        "created": 1_700_000_000,
        "model": model,
        "choices": [{ "text": shape.pieces.concat(), "index": 0, "logprobs": null, "finish_reason": "stop" }],
        "usage": { "prompt_tokens": prompt, "completion_tokens": shape.pieces.len(), "total_tokens": prompt + shape.pieces.len() as i64 }
    });
    (StatusCode::OK, [("content-type", "application/json")], answer.to_string()).into_response()
}

async fn embeddings(State(inner): State<Arc<Inner>>, headers: HeaderMap, raw: Bytes) -> Response {
    let Some(body) = parse(&raw) else {
        return error(400, "mock: the body is not JSON");
    };
    if let Some(r) = admit(&inner, &headers, &body).await {
        return r;
    }
    let inputs: Vec<Value> = match &body["input"] {
        Value::Array(a) => a.clone(),
        other => vec![other.clone()],
    };
    let data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .map(|(i, _)| json!({ "object": "embedding", "index": i, "embedding": [0.1, -0.2, 0.3, i as f64] }))
        .collect();
    let prompt = words(&body["input"]).max(1);
    let answer = json!({
        "object": "list",
        "data": data,
        "model": body["model"],
        "usage": { "prompt_tokens": prompt, "total_tokens": prompt }
    });
    (StatusCode::OK, [("content-type", "application/json")], answer.to_string()).into_response()
}

async fn models(State(inner): State<Arc<Inner>>) -> Response {
    let body = json!({ "object": "list", "data": [{ "id": "gpt-4o-mini", "object": "model", "created": 1_700_000_000, "owned_by": inner.name }] });
    (StatusCode::OK, [("content-type", "application/json")], body.to_string()).into_response()
}

/// Counts a stream as cancelled if it is dropped before its last frame.
struct StreamGuard {
    inner: Arc<Inner>,
    done: bool,
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        let counter = if self.done { &self.inner.seen.completed_streams } else { &self.inner.seen.cancelled };
        counter.fetch_add(1, Ordering::SeqCst);
    }
}

fn frame(v: &Value) -> Bytes {
    Bytes::from(format!("data: {v}\n\n"))
}

fn sse(
    inner: Arc<Inner>,
    model: String,
    shape: StreamShape,
    include_usage: bool,
    prompt: i64,
    legacy: bool,
) -> Response {
    let (id, object) =
        if legacy { ("cmpl-mock123", "text_completion") } else { ("chatcmpl-mock123", "chat.completion.chunk") };
    let usage_field = |u: Value| if include_usage { u } else { Value::Null };
    let chunk = |choice: Value, usage: Value| {
        let mut v = json!({ "id": id, "object": object, "created": 1_700_000_000, "model": model, "system_fingerprint": "fp_mock", "choices": [choice] });
        if include_usage {
            v["usage"] = usage;
        }
        v
    };
    let mut frames: Vec<(Duration, Result<Bytes, ()>)> = Vec::new();
    if !legacy {
        let first = json!({ "index": 0, "delta": { "role": "assistant", "content": "", "refusal": null }, "logprobs": null, "finish_reason": null });
        frames.push((Duration::ZERO, Ok(frame(&chunk(first, usage_field(Value::Null))))));
    }
    for (i, piece) in shape.pieces.iter().enumerate() {
        if shape.cut_after == Some(i) {
            // Pause first, so what came before is on the wire (hyper would
            // otherwise fail the whole response before writing the head).
            frames.push((shape.interval.max(Duration::from_millis(50)), Err(())));
            break;
        }
        let choice = if legacy {
            json!({ "text": piece, "index": 0, "logprobs": null, "finish_reason": null })
        } else {
            json!({ "index": 0, "delta": { "content": piece }, "logprobs": null, "finish_reason": null })
        };
        frames.push((shape.interval, Ok(frame(&chunk(choice, Value::Null)))));
    }
    if shape.cut_after.is_none_or(|n| n >= shape.pieces.len()) {
        let last = if legacy {
            json!({ "text": "", "index": 0, "logprobs": null, "finish_reason": "stop" })
        } else {
            json!({ "index": 0, "delta": {}, "logprobs": null, "finish_reason": "stop" })
        };
        frames.push((Duration::ZERO, Ok(frame(&chunk(last, Value::Null)))));
        if include_usage {
            let u = json!({ "id": id, "object": object, "created": 1_700_000_000, "model": model, "system_fingerprint": "fp_mock", "choices": [], "usage": usage(prompt, shape.pieces.len() as i64, inner.cached_tokens.load(Ordering::SeqCst) as i64) });
            frames.push((Duration::ZERO, Ok(frame(&u))));
        }
        frames.push((Duration::ZERO, Ok(Bytes::from_static(b"data: [DONE]\n\n"))));
        if !shape.linger.is_zero() {
            frames.push((shape.linger, Ok(Bytes::new())));
        }
    }
    let guard = StreamGuard { inner, done: false };
    let stream = futures_util::stream::unfold((frames.into_iter(), guard), |(mut it, mut guard)| async move {
        let (pause, item) = it.next()?;
        if !pause.is_zero() {
            tokio::time::sleep(pause).await;
        }
        let item = item.map_err(|_| std::io::Error::other("mock cut the stream"));
        if it.len() == 0 && item.is_ok() {
            guard.done = true;
        }
        Some((item, (it, guard)))
    });
    Response::builder()
        .status(200)
        .header("content-type", "text/event-stream; charset=utf-8")
        .header("cache-control", "no-cache")
        .body(Body::from_stream(stream))
        .expect("response")
}
