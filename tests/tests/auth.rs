#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test
//! Every way a key is sent, and every way it is refused, over real HTTP.

use std::time::Duration;

use oblivious_e2e::gateway::config;
use oblivious_e2e::{Gateway, Mock};
use serde_json::{json, Value};

const FAST: &str = "[relay]\nretry_base_ms = 5\nretry_max_ms = 20\nupstream_timeout_ms = 3000\nmax_body_bytes = 4096\n";

fn chat(model: &str) -> Value {
    json!({ "model": model, "messages": [{ "role": "user", "content": "hi there" }] })
}

async fn start() -> (Mock, Gateway) {
    let mock = Mock::start("a").await;
    let extra = format!("{FAST}\n[prices.\"priced\"]\ninput = 1000\noutput = 1000\n");
    let gw = Gateway::start(&config(
        &[("a", &mock.base_url(), "keys = [\"sk-up\"]\nmodels = [\"gpt-4o-mini\", \"priced\", \"text-embedding-*\"]")],
        &extra,
    ));
    (mock, gw)
}

/// Status and OpenAI error code of a response.
async fn outcome(resp: reqwest::Response) -> (u16, Value) {
    let status = resp.status().as_u16();
    assert!(resp.headers().contains_key("x-request-id"), "every response carries x-request-id");
    let body: Value = resp.json().await.expect("JSON body");
    (status, body)
}

async fn code(resp: reqwest::Response) -> (u16, String) {
    let (status, body) = outcome(resp).await;
    if status >= 400 {
        let err = &body["error"];
        assert!(err["message"].as_str().is_some_and(|m| !m.is_empty()), "error has a message: {body}");
        assert!(err["type"].is_string(), "error has a type: {body}");
    }
    (status, body["error"]["code"].as_str().unwrap_or("").to_string())
}

#[tokio::test(flavor = "multi_thread")]
async fn every_key_form_is_accepted() {
    let (_mock, gw) = start().await;
    let key = gw.key(&[]);
    let url = format!("{}/v1/chat/completions", gw.url);
    let c = &gw.http;
    let forms = [
        c.post(&url).bearer_auth(&key),
        c.post(&url).header("x-api-key", &key),
        c.post(&url).header("x-goog-api-key", &key),
        c.post(format!("{url}?key={key}")),
    ];
    for req in forms {
        let (status, body) = outcome(req.json(&chat("gpt-4o-mini")).send().await.unwrap()).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["choices"][0]["message"]["content"], "Hello, world!");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn refusals_have_their_own_status_and_code() {
    let (mock, gw) = start().await;
    let url = format!("{}/v1/chat/completions", gw.url);
    let send =
        |req: reqwest::RequestBuilder| async move { code(req.json(&chat("gpt-4o-mini")).send().await.unwrap()).await };

    assert_eq!(send(gw.http.post(&url)).await, (401, "missing_api_key".into()));
    assert_eq!(
        send(gw.http.post(&url).bearer_auth("sk-not-a-real-key-000000000000000000000000000")).await,
        (401, "invalid_api_key".into())
    );

    let key = gw.key(&[]);
    let (ok, _, err) = gw.cli(&["token", "disable", "2"]);
    assert!(ok, "{err}");
    gw.settle().await;
    assert_eq!(send(gw.http.post(&url).bearer_auth(&key)).await, (403, "token_disabled".into()));
    assert!(gw.cli(&["token", "enable", "2"]).0);
    gw.settle().await;
    assert_eq!(send(gw.http.post(&url).bearer_auth(&key)).await.0, 200);

    assert!(gw.cli(&["token", "delete", "2"]).0);
    gw.settle().await;
    assert_eq!(send(gw.http.post(&url).bearer_auth(&key)).await, (401, "invalid_api_key".into()));
    let (_, listed, _) = gw.cli(&["token", "list", "--all", "--json"]);
    let listed: Value = serde_json::from_str(&listed).unwrap();
    assert_eq!(listed[1]["status"], "deleted");
    assert!(gw.cli(&["token", "restore", "2"]).0);
    gw.settle().await;
    assert_eq!(send(gw.http.post(&url).bearer_auth(&key)).await.0, 200);

    let soon = oblivious_e2e::gateway::rfc3339_in(2);
    let expiring = gw.key(&["--expires", &soon]);
    assert_eq!(send(gw.http.post(&url).bearer_auth(&expiring)).await.0, 200);
    tokio::time::sleep(Duration::from_millis(3300)).await;
    assert_eq!(send(gw.http.post(&url).bearer_auth(&expiring)).await, (403, "token_expired".into()));

    let narrow = gw.key(&["--models", "gpt-4o-mini"]);
    let (status, code_) = code(
        gw.post("/v1/embeddings", &narrow, &json!({"model": "text-embedding-3-small", "input": "x"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((status, code_.as_str()), (403, "model_not_allowed"));
    assert_eq!(send(gw.http.post(&url).bearer_auth(&narrow)).await.0, 200);

    let far = gw.key(&["--ips", "10.0.0.0/8"]);
    assert_eq!(send(gw.http.post(&url).bearer_auth(&far)).await, (403, "ip_not_allowed".into()));
    let near = gw.key(&["--ips", "10.0.0.0/8,127.0.0.1/32"]);
    assert_eq!(send(gw.http.post(&url).bearer_auth(&near)).await.0, 200);

    let empty = gw.key(&["--quota", "0"]);
    assert_eq!(send(gw.http.post(&url).bearer_auth(&empty)).await, (429, "insufficient_quota".into()));

    let calls_before = mock.calls();
    assert_eq!(send(gw.http.post(&url).bearer_auth(&key).header("x-unused", "1")).await.0, 200);
    assert_eq!(mock.calls(), calls_before + 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn spending_the_quota_exhausts_the_key() {
    let (_mock, gw) = start().await;
    // "priced" costs $1000/M tokens = 1000 units a token. The reservation is
    // the counted prompt (8 tokens) plus max_tokens (4): 12_000 units; the
    // mock then reports 12 prompt + 4 completion tokens: 16_000 units.
    let key = gw.key(&["--quota", "20000"]);
    let req = json!({ "model": "priced", "max_tokens": 4, "messages": [{ "role": "user", "content": "hi there" }] });
    let (status, _) = code(gw.post("/v1/chat/completions", &key, &req).send().await.unwrap()).await;
    assert_eq!(status, 200);
    let rows = gw.usage_rows(1).await;
    assert_eq!((rows[0]["reserved"].as_i64(), rows[0]["cost"].as_i64()), (Some(12_000), Some(16_000)));
    // 4_000 left: too little to reserve another 12_000.
    let (status, c) = code(gw.post("/v1/chat/completions", &key, &req).send().await.unwrap()).await;
    assert_eq!((status, c.as_str()), (429, "insufficient_quota"));
    let (_, listed, _) = gw.cli(&["token", "list", "--json"]);
    let listed: Value = serde_json::from_str(&listed).unwrap();
    assert_eq!(listed[1]["remaining_quota"], 4_000);
    assert_eq!(listed[1]["used_quota"], 16_000);
    // Without max_tokens the default (1024) is reserved: far over what is left.
    let big = json!({ "model": "priced", "messages": [{ "role": "user", "content": "hi there" }] });
    assert_eq!(code(gw.post("/v1/chat/completions", &key, &big).send().await.unwrap()).await.0, 429);
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_requests_get_openai_errors() {
    let (mock, gw) = start().await;
    let key = gw.key(&[]);
    let raw = |body: &'static str| {
        gw.http
            .post(format!("{}/v1/chat/completions", gw.url))
            .bearer_auth(&key)
            .header("content-type", "application/json")
            .body(body)
    };
    assert_eq!(code(raw("{not json").send().await.unwrap()).await, (400, "invalid_json".into()));
    assert_eq!(code(raw("[1,2]").send().await.unwrap()).await, (400, "invalid_json".into()));
    assert_eq!(code(raw(r#"{"model": 5, "messages": []}"#).send().await.unwrap()).await, (400, "invalid_type".into()));
    assert_eq!(code(raw(r#"{"messages": []}"#).send().await.unwrap()).await, (400, "missing_model".into()));
    assert_eq!(
        code(raw(r#"{"model": "gpt-4o-mini"}"#).send().await.unwrap()).await,
        (400, "missing_required_parameter".into())
    );
    assert_eq!(
        code(raw(r#"{"model": "gpt-4o-mini", "messages": [], "stream": "yes"}"#).send().await.unwrap()).await,
        (400, "invalid_type".into())
    );
    assert_eq!(
        code(gw.post("/v1/chat/completions", &key, &chat("no-such-model")).send().await.unwrap()).await,
        (404, "model_not_found".into())
    );
    let big = json!({ "model": "gpt-4o-mini", "messages": [{ "role": "user", "content": "x".repeat(5000) }] });
    assert_eq!(
        code(gw.post("/v1/chat/completions", &key, &big).send().await.unwrap()).await,
        (413, "request_too_large".into())
    );
    assert_eq!(code(gw.get("/v1/nowhere", &key).send().await.unwrap()).await, (404, "unknown_url".into()));
    assert_eq!(mock.calls(), 0, "no bad request reached the upstream");
}
