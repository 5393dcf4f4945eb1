#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test
//! The gateway driven as a hostile or careless client would: failures that
//! must cost nothing, streams closed at odd moments, slow and idle
//! connections, floods against a small descriptor limit, SIGTERM with a
//! stalled client, huge and malformed bodies, and cross-origin callers.

use std::time::{Duration, Instant};

use futures_util::future::join_all;
use futures_util::StreamExt;
use oblivious_e2e::gateway::{config, STRICT_PRICES};
use oblivious_e2e::mock::{Behavior, StreamShape};
use oblivious_e2e::{Gateway, Mock};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Short server timers, so each abuse is seen to end within a test.
const TIMERS: &str =
    "[server]\nheader_read_timeout_ms = 1000\nbody_read_timeout_ms = 1500\nshutdown_timeout_ms = 2000\n";

/// `m-*` costs a fixed $0.01 a request (10,000 units) plus 1 unit a token.
const FEE: &str = "[relay]\nretry_base_ms = 5\nretry_max_ms = 20\nchannel_failure_threshold = 1000\nkey_failure_threshold = 1000\n\n[billing]\nreservation_timeout_seconds = 2\nsweep_interval_seconds = 1\n\n[prices.\"m-*\"]\ninput = 1\noutput = 1\nper_request = 0.01\n";

fn chat(model: &str, stream: bool) -> Value {
    json!({ "model": model, "stream": stream, "max_tokens": 8, "messages": [{ "role": "user", "content": "hi" }] })
}

fn addr(gw: &Gateway) -> String {
    gw.url.trim_start_matches("http://").to_string()
}

async fn new_user(gw: &Gateway, name: &str, quota: i64) -> i64 {
    let (status, user) =
        gw.admin(reqwest::Method::POST, "/api/admin/users", Some(json!({ "name": name, "quota": quota }))).await;
    assert_eq!(status, 201, "{user}");
    user["id"].as_i64().unwrap()
}

async fn user(gw: &Gateway, id: i64) -> Value {
    gw.admin(reqwest::Method::GET, &format!("/api/admin/users/{id}"), None).await.1
}

/// Waits until no reservation is open.
async fn no_open_reservations(gw: &Gateway) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, open) = gw.admin(reqwest::Method::GET, "/api/admin/reservations?state=reserved", None).await;
        if open["total"] == 0 {
            return;
        }
        assert!(Instant::now() < deadline, "reservations left open: {open}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// One batch of every outcome; returns how many requests it sent.
async fn every_outcome(gw: &Gateway, key: &str, broke: &str) -> usize {
    let mut calls = Vec::new();
    for i in 0..24 {
        let (gw, key, broke) = (gw, key.to_string(), broke.to_string());
        calls.push(async move {
            match i % 6 {
                0 => assert_eq!(
                    gw.post("/v1/chat/completions", &key, &chat("m-ok", false)).send().await.unwrap().status(),
                    200
                ),
                1 => {
                    let resp = gw.post("/v1/chat/completions", &key, &chat("m-ok", true)).send().await.unwrap();
                    assert_eq!(resp.status(), 200);
                    resp.bytes().await.unwrap();
                }
                2 => {
                    let status =
                        gw.post("/v1/chat/completions", &key, &chat("m-fail", false)).send().await.unwrap().status();
                    assert_eq!(status, 500);
                }
                3 => {
                    // Hangs up while the upstream is still silent: nothing was delivered.
                    let sent = gw
                        .post("/v1/chat/completions", &key, &chat("m-stall", false))
                        .timeout(Duration::from_millis(2500));
                    assert!(sent.send().await.is_err());
                }
                4 => {
                    let resp = gw.post("/v1/chat/completions", &broke, &chat("m-ok", false)).send().await.unwrap();
                    assert_eq!(resp.status(), 429);
                }
                _ => {
                    let resp = gw.post("/v1/chat/completions", &key, &chat("m-ok", true)).send().await.unwrap();
                    assert_eq!(resp.status(), 200);
                    resp.bytes().await.unwrap();
                }
            }
        });
    }
    let n = calls.len();
    join_all(calls).await;
    n
}

#[tokio::test(flavor = "multi_thread")]
async fn only_a_delivered_answer_is_charged_whatever_happens_on_the_way() {
    let (ok, bad, stall) = (Mock::start("ok").await, Mock::start("bad").await, Mock::start("stall").await);
    bad.set(Behavior::Fail(500));
    stall.set(Behavior::Stall(Duration::from_secs(6)));
    let extra = format!("{FEE}\n{STRICT_PRICES}\n");
    let mut gw = Gateway::start(&config(
        &[
            ("ok", &ok.base_url(), "models = [\"m-ok\"]"),
            ("bad", &bad.base_url(), "models = [\"m-fail\"]"),
            ("stall", &stall.base_url(), "models = [\"m-stall\"]"),
        ],
        &extra,
    ));
    let alice = new_user(&gw, "alice", 10_000_000).await;
    let bob = new_user(&gw, "bob", 5).await;
    let key = gw.key(&["--user", "alice"]);
    let broke = gw.key(&["--user", "bob"]);

    let mut sent = every_outcome(&gw, &key, &broke).await;
    // A crash with a stream in flight: its reservation is refunded by the sweeper after the restart.
    let slow = Mock::start("slow").await;
    slow.set_stream(StreamShape {
        pieces: vec!["x".into(); 50],
        interval: Duration::from_millis(100),
        ..Default::default()
    });
    let (_, ch) = gw
        .admin(
            reqwest::Method::POST,
            "/api/admin/channels",
            Some(json!({"name": "slow", "type": "openai", "base_url": slow.base_url(), "models": ["m-slow"]})),
        )
        .await;
    assert!(ch["id"].is_i64(), "{ch}");
    let resp = gw.post("/v1/chat/completions", &key, &chat("m-slow", true)).send().await.unwrap();
    let mut body = resp.bytes_stream();
    body.next().await.unwrap().unwrap();
    gw.crash();
    drop(body);
    gw.restart();
    sent += every_outcome(&gw, &key, &broke).await;

    no_open_reservations(&gw).await;
    let rows = gw.usage_rows(sent).await;
    let mut by_status: std::collections::BTreeMap<i64, (usize, i64)> = Default::default();
    for r in &rows {
        let (status, cost) = (r["status"].as_i64().unwrap(), r["cost"].as_i64().unwrap());
        let e = by_status.entry(status).or_default();
        e.0 += 1;
        e.1 += cost;
        if status == 200 {
            assert!(cost >= 10_000, "a delivered answer pays the fee: {r}");
        } else {
            assert_eq!(cost, 0, "nothing delivered, nothing charged: {r}");
        }
    }
    println!("charges by outcome (status: requests, units): {by_status:?}");
    for status in [200, 429, 499, 500] {
        assert!(by_status.contains_key(&status), "outcome {status} was exercised: {by_status:?}");
    }
    let charged: i64 = rows.iter().map(|r| r["cost"].as_i64().unwrap()).sum();
    let a = user(&gw, alice).await;
    assert_eq!(a["used_quota"], charged, "{a}");
    assert_eq!(a["quota"], 10_000_000 - charged, "{a}");
    let b = user(&gw, bob).await;
    assert_eq!((b["quota"].as_i64(), b["used_quota"].as_i64()), (Some(5), Some(0)), "refusals never charge: {b}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stream_read_to_its_end_is_a_success_even_if_the_upstream_closes_late() {
    let mock = Mock::start("late").await;
    mock.set_stream(StreamShape { linger: Duration::from_secs(3), ..Default::default() });
    let gw = Gateway::start(&config(&[("late", &mock.base_url(), "models = [\"m-late\"]")], ""));
    let key = gw.key(&[]);
    let resp = gw.post("/v1/chat/completions", &key, &chat("m-late", true)).send().await.unwrap();
    let mut body = resp.bytes_stream();
    let mut seen = Vec::new();
    while let Some(chunk) = body.next().await {
        seen.extend_from_slice(&chunk.unwrap());
        if String::from_utf8_lossy(&seen).contains("data: [DONE]") {
            break;
        }
    }
    drop(body);
    let rows = gw.usage_rows(1).await;
    assert_eq!(rows[0]["status"], 200, "{}", rows[0]);
    assert_eq!(rows[0]["error"], Value::Null, "{}", rows[0]);
}

/// Reads until the server closes the connection; returns what it sent and how long it took.
async fn until_closed(tcp: &mut TcpStream, within: Duration) -> (String, Duration) {
    let start = Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(within.saturating_sub(start.elapsed()), tcp.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (String::from_utf8_lossy(&got).into_owned(), start.elapsed()),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Err(_) => panic!("still open after {within:?}; got {:?}", String::from_utf8_lossy(&got)),
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn slow_headers_stalled_bodies_and_idle_connections_are_freed() {
    let mock = Mock::start("ok").await;
    let gw = Gateway::start(&config(&[("ok", &mock.base_url(), "models = [\"m-ok\"]")], TIMERS));
    let key = gw.key(&[]);
    let within = Duration::from_secs(5);

    // Headers that never finish.
    let mut tcp = TcpStream::connect(addr(&gw)).await.unwrap();
    tcp.write_all(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n").await.unwrap();
    let (_, took) = until_closed(&mut tcp, within).await;
    println!("unfinished headers: closed after {took:?}");

    // A declared body of 100 bytes with 4 sent, with a valid key: 408 once the body deadline passes.
    let mut tcp = TcpStream::connect(addr(&gw)).await.unwrap();
    let head = format!("POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"mo");
    tcp.write_all(head.as_bytes()).await.unwrap();
    let (answer, took) = until_closed(&mut tcp, within).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("request_timeout"), "{answer}");
    println!("stalled body: 408 after {took:?}");

    // A chunked body trickled a byte at a time.
    let mut tcp = TcpStream::connect(addr(&gw)).await.unwrap();
    let head = format!("POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\nTransfer-Encoding: chunked\r\n\r\n");
    tcp.write_all(head.as_bytes()).await.unwrap();
    let trickle = async {
        for _ in 0..20 {
            if tcp.write_all(b"1\r\n \r\n").await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    };
    let _ = tokio::time::timeout(Duration::from_millis(2500), trickle).await;
    let (answer, _) = until_closed(&mut tcp, within).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");

    // The admin API answers a request without a key before reading its body.
    let mut tcp = TcpStream::connect(addr(&gw)).await.unwrap();
    tcp.write_all(b"POST /api/admin/users HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"na").await.unwrap();
    let (answer, took) = until_closed(&mut tcp, within).await;
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    assert!(took < Duration::from_millis(1500), "answered before the body deadline: {took:?}");

    // An idle keep-alive connection is closed after the header timeout.
    let mut tcp = TcpStream::connect(addr(&gw)).await.unwrap();
    let get = format!("GET /v1/models HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n\r\n");
    tcp.write_all(get.as_bytes()).await.unwrap();
    let (answer, took) = until_closed(&mut tcp, within).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    println!("idle keep-alive: closed after {took:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_flood_of_idle_connections_is_shed_with_an_answer_not_a_hang() {
    let mock = Mock::start("ok").await;
    let timers = "[server]\nheader_read_timeout_ms = 4000\n";
    let gw = Gateway::start_limited(&config(&[("ok", &mock.base_url(), "models = [\"m-ok\"]")], timers), Some(256));
    let key = gw.key(&[]);
    let mut idle = Vec::new();
    for _ in 0..300 {
        idle.push(TcpStream::connect(addr(&gw)).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let start = Instant::now();
    let resp = gw.post("/v1/chat/completions", &key, &chat("m-ok", false)).timeout(Duration::from_secs(3)).send().await;
    let resp = resp.expect("an answer, not a timeout");
    assert_eq!(resp.status(), 503);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "too_many_connections", "{body}");
    println!("300 idle connections under a 256-descriptor limit: a new request got 503 in {:?}", start.elapsed());
    // Once the idle ones time out, service is back without a restart.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let resp = gw.post("/v1/chat/completions", &key, &chat("m-ok", false)).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    drop(idle);
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_lets_requests_finish_up_to_a_deadline_then_flushes_usage_and_exits() {
    let (quick, slow) = (Mock::start("quick").await, Mock::start("slow").await);
    quick.set(Behavior::Stall(Duration::from_millis(800)));
    slow.set_stream(StreamShape {
        pieces: vec!["x".into(); 100],
        interval: Duration::from_millis(200),
        ..Default::default()
    });
    let mut gw = Gateway::start(&config(
        &[("quick", &quick.base_url(), "models = [\"m-quick\"]"), ("slow", &slow.base_url(), "models = [\"m-slow\"]")],
        TIMERS,
    ));
    let key = gw.key(&[]);
    // A stalled client, a long stream, and a request that finishes soon after the signal.
    let mut stalled = TcpStream::connect(addr(&gw)).await.unwrap();
    stalled.write_all(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{").await.unwrap();
    let resp = gw.post("/v1/chat/completions", &key, &chat("m-slow", true)).send().await.unwrap();
    let mut stream = resp.bytes_stream();
    stream.next().await.unwrap().unwrap();
    let quick_call = tokio::spawn(gw.post("/v1/chat/completions", &key, &chat("m-quick", false)).send());
    tokio::time::sleep(Duration::from_millis(200)).await;
    let took = gw.terminate(Duration::from_secs(10)).expect("exits after SIGTERM");
    println!("SIGTERM with a stalled client and a long stream: exited after {took:?}");
    assert!(took >= Duration::from_millis(1500), "the long stream was given its deadline: {took:?}");
    let quick_resp = quick_call.await.unwrap().expect("the request in flight was answered");
    assert_eq!(quick_resp.status(), 200);
    drop(stream);
    gw.restart();
    let rows = gw.usage_rows(2).await;
    assert_eq!(rows.len(), 2, "both relayed requests were recorded before exit: {rows:?}");
    let (_, open) = gw.admin(reqwest::Method::GET, "/api/admin/reservations?state=reserved", None).await;
    assert_eq!(open["total"], 0, "{open}");
}

/// Posts a raw JSON text to the chat endpoint; expects a 400 and returns its body.
async fn refused_raw(gw: &Gateway, key: &str, text: String) -> Value {
    let resp = gw
        .http
        .post(format!("{}/v1/chat/completions", gw.url))
        .bearer_auth(key)
        .header("content-type", "application/json")
        .body(text)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    resp.json().await.unwrap()
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

#[tokio::test(flavor = "multi_thread")]
async fn huge_and_deep_bodies_are_refused_and_memory_comes_back() {
    let mock = Mock::start("ok").await;
    let gw = Gateway::start(&config(&[("ok", &mock.base_url(), "models = [\"m-ok\"]")], ""));
    let key = gw.key(&[]);
    gw.post("/v1/chat/completions", &key, &chat("m-ok", false)).send().await.unwrap();
    let before = gw.rss_kib();

    let many: Vec<Value> = (0..100_000).map(|i| json!({"role": "user", "content": format!("m{i}")})).collect();
    let resp = gw.post("/v1/chat/completions", &key, &json!({"model": "m-ok", "messages": many})).send().await.unwrap();
    assert_eq!(resp.status(), 400);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "too_many_messages", "{body}");
    let after_many = gw.rss_kib();

    // Millions of tiny values are refused before they are parsed (a 32-byte node for every two bytes).
    let tiny = format!("{{\"model\":\"m-ok\",\"messages\":[],\"metadata\":[{}1]}}", "1,".repeat(2_000_000));
    let body = refused_raw(&gw, &key, tiny).await;
    assert_eq!(body["error"]["code"], "too_many_values", "{body}");
    let peak_refusals = gw.peak_rss_kib();

    let deep = format!(
        "{{\"model\":\"m-ok\",\"messages\":[{{\"role\":\"user\",\"content\":{}1{}}}]}}",
        "[".repeat(5000),
        "]".repeat(5000)
    );
    let body = refused_raw(&gw, &key, deep).await;
    assert_eq!(body["error"]["code"], "invalid_json", "{body}");

    // Four concurrent 16 MB bodies within the caps, relayed.
    let text = "x".repeat(1800);
    let big: Vec<Value> = (0..9_000).map(|_| json!({"role": "user", "content": text})).collect();
    let big = json!({"model": "m-ok", "max_tokens": 4, "messages": big});
    let sends = (0..4).map(|_| gw.post("/v1/chat/completions", &key, &big).send());
    for r in join_all(sends).await {
        assert_eq!(r.unwrap().status(), 200);
    }
    let peak = gw.peak_rss_kib();
    tokio::time::sleep(Duration::from_secs(10)).await;
    let settled = gw.rss_kib();
    println!(
        "memory: before {:.1} MiB; after 100k messages refused {:.1} MiB; peak through the refusals (and 2M values) {:.1} MiB; peak with 4 × 16 MB {:.1} MiB; 10 s later {:.1} MiB",
        mib(before),
        mib(after_many),
        mib(peak_refusals),
        mib(peak),
        mib(settled)
    );
    assert_eq!(mock.calls(), 5, "refused bodies never reached the upstream");
    assert!(settled < before + 64 * 1024, "memory is given back after the burst: {} MiB", mib(settled));
}

#[tokio::test(flavor = "multi_thread")]
async fn completion_ceilings_and_sampling_are_validated_in_the_callers_format() {
    let mock = Mock::start("ok").await;
    let gw = Gateway::start(&config(&[("ok", &mock.base_url(), "models = [\"m-ok\"]")], ""));
    let key = gw.key(&[]);
    let msgs = json!([{ "role": "user", "content": "hi" }]);
    for (bad, param) in [
        (json!({"max_tokens": -1}), "max_tokens"),
        (json!({"max_tokens": 1e30}), "max_tokens"),
        (json!({"max_completion_tokens": 0}), "max_completion_tokens"),
        (json!({"temperature": "hot"}), "temperature"),
    ] {
        let mut body = json!({"model": "m-ok", "messages": msgs});
        body.as_object_mut().unwrap().extend(bad.as_object().unwrap().clone());
        let resp = gw.post("/v1/chat/completions", &key, &body).send().await.unwrap();
        assert_eq!(resp.status(), 400);
        let v: Value = resp.json().await.unwrap();
        assert_eq!(v["error"]["param"], param, "{v}");
        assert_eq!(v["error"]["type"], "invalid_request_error", "{v}");
    }
    let resp = gw
        .post("/v1/messages", &key, &json!({"model": "m-ok", "max_tokens": -1, "messages": msgs}))
        .header("anthropic-version", "2023-06-01")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(
        (v["type"].as_str(), v["error"]["type"].as_str()),
        (Some("error"), Some("invalid_request_error")),
        "{v}"
    );
    let gemini =
        json!({"contents": [{"role": "user", "parts": [{"text": "hi"}]}], "generationConfig": {"maxOutputTokens": -1}});
    let resp = gw.post("/v1beta/models/m-ok:generateContent", &key, &gemini).send().await.unwrap();
    assert_eq!(resp.status(), 400);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["status"], "INVALID_ARGUMENT", "{v}");
    let resp = gw
        .post("/v1/responses", &key, &json!({"model": "m-ok", "input": "hi", "max_output_tokens": 2.5}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    assert_eq!(mock.calls(), 0, "nothing invalid was forwarded");
}

#[tokio::test(flavor = "multi_thread")]
async fn browsers_on_other_origins_may_call_the_relay_but_not_the_admin_api() {
    let mock = Mock::start("ok").await;
    let gw = Gateway::start(&config(&[("ok", &mock.base_url(), "models = [\"m-ok\"]")], ""));
    let key = gw.key(&[]);
    let pre = gw
        .http
        .request(reqwest::Method::OPTIONS, format!("{}/v1/chat/completions", gw.url))
        .header("origin", "https://app.example")
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "authorization, content-type, x-stainless-os")
        .send()
        .await
        .unwrap();
    assert!(pre.status().is_success(), "{}", pre.status());
    let h = pre.headers();
    assert_eq!(h["access-control-allow-origin"], "*");
    assert!(h["access-control-allow-methods"].to_str().unwrap().contains("POST"));
    assert!(h["access-control-allow-headers"].to_str().unwrap().contains("x-stainless-os"));
    let resp = gw
        .post("/v1/chat/completions", &key, &chat("m-ok", false))
        .header("origin", "https://app.example")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["access-control-allow-origin"], "*");
    let exposed = resp.headers()["access-control-expose-headers"].to_str().unwrap().to_string();
    for h in ["x-request-id", "x-ratelimit-remaining-requests", "retry-after"] {
        assert!(exposed.contains(h), "{exposed}");
    }
    let admin = gw
        .http
        .request(reqwest::Method::OPTIONS, format!("{}/api/admin/users", gw.url))
        .header("origin", "https://app.example")
        .header("access-control-request-method", "GET")
        .send()
        .await
        .unwrap();
    assert!(!admin.headers().contains_key("access-control-allow-origin"), "admin stays same-origin");
}
