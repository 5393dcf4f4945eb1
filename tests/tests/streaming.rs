#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test
//! Streams: order, usage chunk, heartbeats, client disconnect, mid-stream failure.

use std::time::Duration;

use futures_util::StreamExt;
use oblivious_e2e::gateway::config;
use oblivious_e2e::mock::StreamShape;
use oblivious_e2e::{Gateway, Mock};
use serde_json::{json, Value};

const FAST: &str = "[relay]\nretry_base_ms = 5\nretry_max_ms = 20\nkeepalive_interval_ms = 150\n";

async fn start() -> (Mock, Gateway, String) {
    let mock = Mock::start("a").await;
    let gw = Gateway::start(&config(
        &[("a", &mock.base_url(), "models = [\"gpt-4o-mini\", \"gpt-3.5-turbo-instruct\"]")],
        FAST,
    ));
    let key = gw.key(&[]);
    (mock, gw, key)
}

fn stream_req(include_usage: bool) -> Value {
    let mut v = json!({ "model": "gpt-4o-mini", "stream": true, "messages": [{ "role": "user", "content": "hi" }] });
    if include_usage {
        v["stream_options"] = json!({ "include_usage": true });
    }
    v
}

/// The `data:` payloads of an SSE body, and how many keep-alive comments it had.
fn events(body: &str) -> (Vec<String>, usize) {
    let keepalives = body.matches(": keep-alive").count();
    let data = body.split("\n\n").filter_map(|f| f.strip_prefix("data: ")).map(str::to_string).collect();
    (data, keepalives)
}

fn content(data: &[String]) -> String {
    data.iter()
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .filter_map(|v| v["choices"][0]["delta"]["content"].as_str().map(str::to_string))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn streams_in_order_and_keeps_usage_back_unless_asked() {
    let (mock, gw, key) = start().await;
    let resp = gw.post("/v1/chat/completions", &key, &stream_req(false)).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers()["content-type"].to_str().unwrap().starts_with("text/event-stream"));
    assert!(resp.headers().contains_key("x-request-id"));
    let (data, _) = events(&resp.text().await.unwrap());
    assert_eq!(content(&data), "Hello, world!");
    assert_eq!(data.last().unwrap(), "[DONE]");
    assert!(!data.iter().any(|d| d.contains("\"choices\":[]")), "usage chunk withheld: {data:?}");
    assert_eq!(mock.bodies()[0]["stream_options"]["include_usage"], true, "usage is always asked of the upstream");

    let resp = gw.post("/v1/chat/completions", &key, &stream_req(true)).send().await.unwrap();
    let (data, _) = events(&resp.text().await.unwrap());
    let usage: Value =
        serde_json::from_str(data.iter().find(|d| d.contains("\"choices\":[]")).expect("usage chunk")).unwrap();
    assert_eq!(usage["usage"]["completion_tokens"], 4);

    let rows = gw.usage_rows(2).await;
    assert!(
        rows.iter().all(|r| r["stream"] == true
            && r["status"] == 200
            && r["completion_tokens"] == 4
            && r["usage_estimated"] == false),
        "{rows:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_silent_upstream_gets_keepalives() {
    let (mock, gw, key) = start().await;
    mock.set_stream(StreamShape {
        pieces: vec!["a".into(), "b".into(), "c".into()],
        interval: Duration::from_millis(400),
        ..Default::default()
    });
    let resp = gw.post("/v1/chat/completions", &key, &stream_req(false)).send().await.unwrap();
    let (data, keepalives) = events(&resp.text().await.unwrap());
    assert_eq!(content(&data), "abc");
    assert!(keepalives >= 3, "got {keepalives} keep-alives");
}

#[tokio::test(flavor = "multi_thread")]
async fn events_are_not_held_back() {
    let (mock, gw, key) = start().await;
    mock.set_stream(StreamShape {
        pieces: (0..5).map(|i| format!("p{i}")).collect(),
        interval: Duration::from_millis(300),
        ..Default::default()
    });
    let resp = gw.post("/v1/chat/completions", &key, &stream_req(false)).send().await.unwrap();
    let started = std::time::Instant::now();
    let mut body = resp.bytes_stream();
    let mut seen = String::new();
    while !seen.contains("p0") {
        seen.push_str(&String::from_utf8_lossy(&body.next().await.unwrap().unwrap()));
    }
    assert!(started.elapsed() < Duration::from_millis(900), "first piece arrived after {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_hanging_up_cancels_the_upstream() {
    let (mock, gw, key) = start().await;
    mock.set_stream(StreamShape {
        pieces: (0..50).map(|i| format!("w{i} ")).collect(),
        interval: Duration::from_millis(100),
        ..Default::default()
    });
    let resp = gw.post("/v1/chat/completions", &key, &stream_req(false)).send().await.unwrap();
    let mut body = resp.bytes_stream();
    let mut seen = String::new();
    while !seen.contains("w1") {
        seen.push_str(&String::from_utf8_lossy(&body.next().await.unwrap().unwrap()));
    }
    drop(body);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while mock.cancelled() == 0 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(mock.cancelled(), 1, "the upstream stream was dropped");
    assert_eq!(mock.completed_streams(), 0);
    let rows = gw.usage_rows(1).await;
    assert_eq!(rows[0]["status"], 499);
    assert_eq!(rows[0]["error"], "client disconnected");
    assert!(rows[0]["completion_tokens"].as_i64().unwrap() >= 2, "what was delivered is counted: {}", rows[0]);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_upstream_failing_mid_stream_ends_with_an_error_event() {
    let (mock, gw, key) = start().await;
    mock.set_stream(StreamShape { cut_after: Some(2), ..Default::default() });
    let resp = gw.post("/v1/chat/completions", &key, &stream_req(false)).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let (data, _) = events(&resp.text().await.unwrap());
    assert_eq!(content(&data), "Hello,");
    let last: Value = serde_json::from_str(data.last().unwrap()).unwrap();
    assert_eq!(last["error"]["code"], "upstream_stream_failed");
    assert!(last["error"]["message"].is_string());
    assert_eq!(mock.calls(), 1, "no retry once bytes reached the client");
    let rows = gw.usage_rows(1).await;
    assert_eq!(rows[0]["status"], 502);
}

#[tokio::test(flavor = "multi_thread")]
async fn usage_is_counted_when_the_upstream_reports_none() {
    let (mock, gw, key) = start().await;
    mock.set_stream(StreamShape { omit_usage: true, ..Default::default() });
    let resp = gw.post("/v1/chat/completions", &key, &stream_req(false)).send().await.unwrap();
    resp.text().await.unwrap();
    let resp = gw
        .post(
            "/v1/completions",
            &key,
            &json!({ "model": "gpt-3.5-turbo-instruct", "prompt": "Say hello", "stream": true }),
        )
        .send()
        .await
        .unwrap();
    let (data, _) = events(&resp.text().await.unwrap());
    let text: String = data
        .iter()
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .filter_map(|v| v["choices"][0]["text"].as_str().map(str::to_string))
        .collect();
    assert_eq!(text, "Hello, world!");
    let rows = gw.usage_rows(2).await;
    for r in &rows {
        assert_eq!(r["usage_estimated"], true, "{r}");
        // tiktoken: "Hello, world!" is 4 tokens.
        assert_eq!(r["completion_tokens"], 4, "{r}");
        assert!(r["prompt_tokens"].as_i64().unwrap() > 0);
    }
}
