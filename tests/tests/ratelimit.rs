#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test
//! Rate limits per token, user, IP and model, in process, on Redis (TCP) and on
//! Upstash (REST), with OpenAI's headers; and limits shared by two gateways
//! through one Redis, over either.

use std::time::Duration;

use futures_util::StreamExt;
use oblivious_e2e::gateway::{config, redis_hot, upstash_hot};
use oblivious_e2e::mock::StreamShape;
use oblivious_e2e::{Gateway, Mock};
use serde_json::{json, Value};

const LIMITS: &str = r#"
[groups.tpm]
ratio = 1.0
[groups.conc]
ratio = 1.0

[rate_limits.groups.default]
token = { rpm = 3 }
[rate_limits.groups.tpm]
user = { tpm = 60 }
[rate_limits.groups.conc]
user = { concurrency = 1 }
[rate_limits.models."m-limited"]
rpm = 2
"#;

fn chat(model: &str) -> Value {
    json!({ "model": model, "max_tokens": 4, "messages": [{ "role": "user", "content": "hi there" }] })
}

fn h(resp: &reqwest::Response, name: &str) -> String {
    resp.headers().get(name).map(|v| v.to_str().unwrap().to_string()).unwrap_or_default()
}

async fn user_key(gw: &Gateway, name: &str, group: &str) -> String {
    let resp = gw
        .http
        .post(format!("{}/api/admin/users", gw.url))
        .bearer_auth(&gw.admin_key)
        .json(&json!({ "name": name, "group": group, "unlimited": true }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    gw.key(&["--user", name])
}

async fn every_level_holds(hot: &str) {
    let mock = Mock::start("a").await;
    let slow = Mock::start("slow").await;
    slow.set_stream(StreamShape {
        pieces: (0..10).map(|i| format!("{i} ")).collect(),
        interval: Duration::from_millis(100),
        ..Default::default()
    });
    let gw = Gateway::start(&config(
        &[
            ("a", &mock.base_url(), "models = [\"m\", \"m-limited\"]\ngroup = [\"default\", \"tpm\", \"conc\"]"),
            ("slow", &slow.base_url(), "models = [\"m-slow\"]\ngroup = \"conc\""),
        ],
        &format!("{hot}{LIMITS}"),
    ));

    // Token: 3 requests a minute, with the headers OpenAI sends.
    let key = gw.key(&[]);
    for remaining in [2, 1, 0] {
        let resp = gw.post("/v1/chat/completions", &key, &chat("m")).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(h(&resp, "x-ratelimit-limit-requests"), "3");
        assert_eq!(h(&resp, "x-ratelimit-remaining-requests"), remaining.to_string());
        assert!(h(&resp, "x-ratelimit-reset-requests").ends_with('s'));
    }
    let resp = gw.post("/v1/chat/completions", &key, &chat("m")).send().await.unwrap();
    assert_eq!(resp.status(), 429);
    assert_eq!(h(&resp, "x-ratelimit-remaining-requests"), "0");
    let retry: u64 = h(&resp, "retry-after").parse().unwrap();
    assert!((1..=60).contains(&retry));
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rate_limit_exceeded");
    assert!(body["error"]["message"].as_str().unwrap().contains("token rpm"));
    let other = gw.key(&[]);
    assert_eq!(
        gw.post("/v1/chat/completions", &other, &chat("m")).send().await.unwrap().status(),
        200,
        "limits are per key"
    );

    // User tokens per minute: 12 estimated (8 prompt + 4 max), 16 used, 60 allowed.
    let tkey = user_key(&gw, "tina", "tpm").await;
    let mut allowed = 0;
    for _ in 0..8 {
        let resp = gw.post("/v1/chat/completions", &tkey, &chat("m")).send().await.unwrap();
        if resp.status() == 429 {
            assert_eq!(h(&resp, "x-ratelimit-limit-tokens"), "60");
            break;
        }
        assert_eq!(resp.status(), 200);
        allowed += 1;
        // Let the usage correction (12 estimated → 16 used) land.
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    assert_eq!(allowed, 4, "48 used + 12 estimated fits 60; 64 + 12 does not");

    // User concurrency: one request in flight at a time.
    let ckey = user_key(&gw, "carl", "conc").await;
    let stream = json!({ "model": "m-slow", "stream": true, "messages": [{ "role": "user", "content": "x" }] });
    let first = gw.post("/v1/chat/completions", &ckey, &stream).send().await.unwrap();
    assert_eq!(first.status(), 200);
    let blocked = gw.post("/v1/chat/completions", &ckey, &chat("m")).send().await.unwrap();
    assert_eq!(blocked.status(), 429);
    assert!(blocked.json::<Value>().await.unwrap()["error"]["message"].as_str().unwrap().contains("user concurrency"));
    let mut body = first.bytes_stream();
    while body.next().await.is_some() {}
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        gw.post("/v1/chat/completions", &ckey, &chat("m")).send().await.unwrap().status(),
        200,
        "the slot is freed at the end"
    );

    // Model: 2 requests a minute over all callers.
    let (k1, k2) = (gw.key(&[]), gw.key(&[]));
    assert_eq!(gw.post("/v1/chat/completions", &k1, &chat("m-limited")).send().await.unwrap().status(), 200);
    assert_eq!(gw.post("/v1/chat/completions", &k2, &chat("m-limited")).send().await.unwrap().status(), 200);
    let resp = gw.post("/v1/chat/completions", &k1, &chat("m-limited")).send().await.unwrap();
    assert_eq!(resp.status(), 429);
    assert!(resp.json::<Value>().await.unwrap()["error"]["message"].as_str().unwrap().contains("model rpm"));

    // IP: its own gateway, so the other keys' traffic does not count.
    let ip_limited = Gateway::start(&config(
        &[("a", &mock.base_url(), "models = [\"m\"]")],
        &format!("{hot}\n[rate_limits.groups.default]\nip = {{ rpm = 2 }}\n"),
    ));
    let (a, b) = (ip_limited.key(&[]), ip_limited.key(&[]));
    assert_eq!(ip_limited.post("/v1/chat/completions", &a, &chat("m")).send().await.unwrap().status(), 200);
    assert_eq!(ip_limited.post("/v1/chat/completions", &b, &chat("m")).send().await.unwrap().status(), 200);
    let resp = ip_limited.post("/v1/chat/completions", &a, &chat("m")).send().await.unwrap();
    assert_eq!(resp.status(), 429, "the address is over its limit whichever key it uses");
    assert!(resp.json::<Value>().await.unwrap()["error"]["message"].as_str().unwrap().contains("ip rpm"));
}

#[tokio::test(flavor = "multi_thread")]
async fn every_level_holds_in_process() {
    every_level_holds("").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn every_level_holds_on_redis() {
    every_level_holds(&redis_hot()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn every_level_holds_on_upstash() {
    every_level_holds(&upstash_hot()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn two_gateways_share_limits_through_redis() {
    two_gateways_share_limits(&redis_hot()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn two_gateways_share_limits_through_upstash() {
    two_gateways_share_limits(&upstash_hot()).await;
}

async fn two_gateways_share_limits(hot: &str) {
    let mock = Mock::start("a").await;
    let extra = format!("{hot}\n[rate_limits.groups.default]\ntoken = {{ rpm = 4 }}\n");
    let a = Gateway::start(&config(&[("a", &mock.base_url(), "models = [\"m\"]")], &extra));
    let b = a.second();
    let key = a.key(&[]);
    b.settle().await;
    let mut statuses = Vec::new();
    for i in 0..6 {
        let gw = if i % 2 == 0 { &a } else { &b };
        statuses.push(gw.post("/v1/chat/completions", &key, &chat("m")).send().await.unwrap().status().as_u16());
    }
    assert_eq!(statuses, [200, 200, 200, 200, 429, 429]);
    assert_eq!(mock.calls(), 4);
}
