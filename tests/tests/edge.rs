#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test
//! The relay as a Cloudflare Worker: the built wasm in workerd (`wrangler dev
//! --local`), over DynamoDB and SQS on the emulator and Upstash REST over the
//! test Redis. The same cases the other runtimes pass — auth forms and
//! refusals, rate limits, streaming event by event with keep-alives and
//! disconnects, failover, conversion across wire formats, the official SDKs —
//! and exact money after the `usage` Lambda drains what the worker queued.

use std::process::Command;
use std::time::Duration;

use futures_util::future::join_all;
use futures_util::StreamExt;
use oblivious_e2e::aws::{self, Stack};
use oblivious_e2e::edge::Worker;
use oblivious_e2e::gateway::{channel, repo_root};
use oblivious_e2e::mock::{Behavior, StreamShape};
use oblivious_e2e::wire_mock::{Wire, WireMock};
use oblivious_e2e::Mock;
use oblivious_ports::{Ledger, Page, Reservation, Store, TokenFilter, UsageFilter};
use serde_json::{json, Value};

/// "m-*" models cost 1000 units a token (input and output).
const PRICED: &str = "[relay]\nretry_base_ms = 5\nretry_max_ms = 20\nchannel_failure_threshold = 2\nkeepalive_interval_ms = 150\n\n[prices.\"m-*\"]\ninput = 1000\noutput = 1000\n";

const ALL: Page = Page { offset: 0, limit: 10_000 };

fn openai_channel(name: &str, mock: &Mock, models: &str) -> String {
    format!("\n[[channels]]\nname = \"{name}\"\ntype = \"openai\"\nbase_url = \"{}\"\nkeys = [\"sk-{name}\"]\nmodels = [{models}]\n", mock.base_url())
}

fn chat(stream: bool) -> Value {
    json!({ "model": "m-1", "stream": stream, "max_tokens": 20, "messages": [{ "role": "user", "content": "hi there" }] })
}

/// Drains the queue with the `usage` consumer and checks the books: every
/// hold settled, and the user's balance and the key's spend moved by exactly
/// the usage log's charges. Returns the user's usage rows.
async fn books_balance(st: &Stack, uid: i64, quota: i64) -> Vec<oblivious_core::model::UsageRecord> {
    let consumer = aws::cold_start(&st.settings).await;
    let drained = aws::drain(st, &consumer, Duration::from_secs(1)).await;
    assert_eq!(drained.failed, 0, "{drained:?}");
    let rows = st.store.usage(UsageFilter { user_id: Some(uid), ..Default::default() }, ALL).await.unwrap().items;
    let charged: i64 = rows.iter().map(|r| r.cost).sum();
    let user = st.store.user(uid).await.unwrap().unwrap();
    assert_eq!((user.quota, user.used_quota), (quota - charged, charged), "balance moved by the usage log's charges");
    let token =
        st.store.tokens(TokenFilter { user_id: Some(uid), ..Default::default() }, ALL).await.unwrap().items.remove(0);
    assert_eq!(token.used_quota, charged);
    assert_eq!(st.store.reservations(Some("reserved".into()), ALL).await.unwrap().total, 0, "every hold settled");
    rows
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_edge_relay_authenticates_converts_and_bills_to_the_unit() {
    let mock = Mock::start("up").await;
    mock.set_stream(StreamShape {
        pieces: (0..20).map(|i| format!("w{i} ")).collect(),
        interval: Duration::from_millis(5),
        ..StreamShape::default()
    });
    let st = aws::stack(&format!("{PRICED}{}", openai_channel("up", &mock, "\"m-*\""))).await;
    let quota = 500_000_000;
    let (uid, key) = aws::customer(&st, quota).await;
    let w = Worker::start(&st, &[]).await;
    let url = |p: &str| format!("{}{p}", w.url);

    // Every auth form, and refusals in the caller's own shape.
    let ready: Value = w.http.get(url("/readyz")).send().await.unwrap().json().await.unwrap();
    assert_eq!(ready["status"], "ready", "{ready}");
    let anon = w.http.get(url("/v1/models")).send().await.unwrap();
    assert_eq!(anon.status(), 401);
    assert_eq!(anon.json::<Value>().await.unwrap()["error"]["code"], "missing_api_key");
    let bad = w.post("/v1/chat/completions", "sk-not-a-key", &chat(false)).send().await.unwrap();
    assert_eq!(bad.status(), 401);
    let anthropic = json!({ "model": "m-1", "max_tokens": 20, "messages": [{ "role": "user", "content": "hi" }] });
    let msg = w.http.post(url("/v1/messages")).header("x-api-key", &key).header("anthropic-version", "2023-06-01");
    let msg = msg.json(&anthropic).send().await.unwrap();
    assert_eq!(msg.status(), 200);
    let msg: Value = msg.json().await.unwrap();
    assert_eq!((msg["type"].as_str(), msg["role"].as_str()), (Some("message"), Some("assistant")), "{msg}");
    let no_key = w.http.post(url("/v1/messages")).json(&anthropic).send().await.unwrap();
    assert_eq!(no_key.status(), 401);
    assert_eq!(no_key.json::<Value>().await.unwrap()["type"], "error", "Anthropic's error shape");
    let gemini = json!({ "contents": [{ "role": "user", "parts": [{ "text": "hi" }] }] });
    let by_header = w.http.post(url("/v1beta/models/m-1:generateContent")).header("x-goog-api-key", &key);
    let g: Value = by_header.json(&gemini).send().await.unwrap().json().await.unwrap();
    assert!(g["candidates"][0]["content"]["parts"][0]["text"].as_str().unwrap().contains("w19"), "{g}");
    let by_query = w.http.post(url(&format!("/v1beta/models/m-1:streamGenerateContent?alt=sse&key={key}")));
    let g = by_query.json(&gemini).send().await.unwrap();
    assert_eq!(g.status(), 200);
    assert!(g.text().await.unwrap().starts_with("data: "), "Gemini SSE");
    let malformed = w.http.post(url("/v1/chat/completions")).bearer_auth(&key).body("{not json").send().await.unwrap();
    assert_eq!(malformed.status(), 400);
    let unknown = w.http.get(url("/v2/nothing")).send().await.unwrap();
    assert_eq!(unknown.status(), 404);

    // A stream arrives event by event, with the usage chunk when asked.
    let mut body = chat(true);
    body["stream_options"] = json!({ "include_usage": true });
    let resp = w.post("/v1/chat/completions", &key, &body).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let kind = resp.headers()["content-type"].to_str().unwrap().to_string();
    assert!(kind.starts_with("text/event-stream"), "{kind}");
    let mut chunks = 0;
    let mut text = String::new();
    let mut stream = resp.bytes_stream();
    while let Some(c) = stream.next().await {
        chunks += 1;
        text.push_str(&String::from_utf8_lossy(&c.unwrap()));
    }
    assert!(chunks > 3, "streamed in {chunks} chunks: {text}");
    assert!(text.contains("\"usage\":{") && text.trim_end().ends_with("data: [DONE]"), "{text}");

    // 100 concurrent requests on one key, half of them streamed.
    let calls = (0..100).map(|i| {
        let req = w.post("/v1/chat/completions", &key, &chat(i % 2 == 1));
        async move {
            let resp = req.send().await.unwrap();
            let status = resp.status().as_u16();
            (status, resp.text().await.unwrap())
        }
    });
    for (status, text) in join_all(calls).await {
        assert_eq!(status, 200, "{text}");
        assert!(text.contains("w19"), "{text}");
    }

    let rows = books_balance(&st, uid, quota).await;
    let answered = rows.iter().filter(|r| r.status == 200).count();
    assert_eq!(answered, 104, "every answered request has its usage row");
    assert!(rows.iter().filter(|r| r.status == 200).all(|r| r.cost > 0));
    assert!(rows.iter().filter(|r| r.status != 200).all(|r| r.cost == 0), "refusals cost nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn edge_streams_keep_alive_cancel_on_disconnect_and_fail_over() {
    let broken = Mock::start("broken").await;
    broken.set(Behavior::Fail(500));
    let slow = Mock::start("slow").await;
    slow.set_stream(StreamShape {
        pieces: (0..8).map(|i| format!("s{i} ")).collect(),
        interval: Duration::from_millis(400),
        ..StreamShape::default()
    });
    let backup = Mock::start("backup").await;
    let config = format!(
        "{PRICED}{}{}{}\n[rate_limits.groups.default]\ntoken = {{ rpm = 1000 }}\n",
        openai_channel("broken", &broken, "\"m-fail\""),
        openai_channel("backup", &backup, "\"m-fail\""),
        openai_channel("slow", &slow, "\"m-slow\""),
    );
    // The broken channel is tried first (higher priority) and fails over.
    let config = config.replacen("name = \"broken\"", "name = \"broken\"\npriority = 10", 1);
    let st = aws::stack(&config).await;
    let quota = 500_000_000;
    let (uid, key) = aws::customer(&st, quota).await;
    let w = Worker::start(&st, &[]).await;

    for _ in 0..3 {
        let r = w.post(
            "/v1/chat/completions",
            &key,
            &json!({ "model": "m-fail", "max_tokens": 10, "messages": [{ "role": "user", "content": "hi" }] }),
        );
        let r = r.send().await.unwrap();
        assert_eq!(r.status(), 200, "failed over to the backup");
    }
    assert!(broken.calls() >= 1 && backup.calls() == 3, "{} {}", broken.calls(), backup.calls());

    // A silent upstream: keep-alive comments flow while it thinks.
    let req = json!({ "model": "m-slow", "stream": true, "max_tokens": 50, "messages": [{ "role": "user", "content": "hi" }] });
    let text = w.post("/v1/chat/completions", &key, &req).send().await.unwrap().text().await.unwrap();
    assert!(text.matches(": keep-alive").count() >= 3, "{text}");
    assert!(text.contains("s7") && text.trim_end().ends_with("data: [DONE]"), "{text}");

    // A client that hangs up mid-stream cancels the upstream fetch.
    let before = slow.cancelled();
    let resp = w.post("/v1/chat/completions", &key, &req).send().await.unwrap();
    let mut stream = resp.bytes_stream();
    let first = stream.next().await.unwrap().unwrap();
    assert!(!first.is_empty());
    drop(stream);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while slow.cancelled() == before {
        assert!(std::time::Instant::now() < deadline, "the upstream was not cancelled");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Its usage still reaches the queue (the isolate waits for it).
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rows = books_balance(&st, uid, quota).await;
    assert_eq!(rows.len(), 5, "{rows:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn edge_rate_limits_and_the_cron_run_health_and_the_sweeper() {
    let up = Mock::start("up").await;
    let flaky = Mock::start("flaky").await;
    let config = format!(
        "{PRICED}{}{}\n[rate_limits.groups.default]\ntoken = {{ rpm = 3 }}\n",
        openai_channel("up", &up, "\"m-1\""),
        openai_channel("flaky", &flaky, "\"m-flaky\""),
    );
    let st = aws::stack(&config).await;
    let (uid, key) = aws::customer(&st, 500_000_000).await;
    let w = Worker::start(&st, &[]).await;

    let mut statuses = vec![];
    for _ in 0..4 {
        let r = w.post("/v1/chat/completions", &key, &chat(false)).send().await.unwrap();
        statuses.push(r.status().as_u16());
        if r.status() == 429 {
            assert!(r.headers().contains_key("retry-after"));
            let body: Value = r.json().await.unwrap();
            assert!(body["error"]["message"].as_str().unwrap().contains("token rpm"), "{body}");
        }
    }
    assert_eq!(statuses, [200, 200, 200, 429], "the window holds in Upstash across isolates");

    // A reservation left open long ago, and a channel that fails its probes.
    let token =
        st.store.tokens(TokenFilter { user_id: Some(uid), ..Default::default() }, ALL).await.unwrap().items.remove(0);
    let old = Reservation {
        request_id: "req_left_open".into(),
        token_id: token.id,
        user_id: uid,
        amount: 7_000,
        created_at: 1_000,
        state: String::new(),
        charged: None,
    };
    st.store.reserve(old).await.unwrap().unwrap();
    flaky.set(Behavior::Fail(500));
    for _ in 0..2 {
        assert_eq!(w.scheduled().await, 200, "{}", w.output());
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let open = st.store.reservations(Some("reserved".into()), ALL).await.unwrap();
        let flaky_status =
            st.store.channels().await.unwrap().into_iter().find(|c| c.spec.name == "flaky").unwrap().status;
        if open.items.iter().all(|r| r.request_id != "req_left_open")
            && flaky_status != oblivious_core::model::ChannelStatus::Enabled
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "cron did not sweep and disable: {flaky_status:?}\n{}",
            w.output()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let refunded = st.store.reservations(Some("refunded".into()), ALL).await.unwrap();
    assert!(refunded.items.iter().any(|r| r.request_id == "req_left_open"));
}

fn python_sdk(script: &str, args: &[&str]) -> String {
    let python = std::env::var("OBLIVIOUS_PYTHON")
        .unwrap_or_else(|_| repo_root().join(".venv/bin/python").display().to_string());
    let out = Command::new(&python)
        .arg(repo_root().join("tests/sdk").join(script))
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {python} (run the README's test command to create .venv): {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{script} {args:?} failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_official_sdks_talk_to_the_worker() {
    let mock = Mock::start("a").await;
    let broken = Mock::start("broken").await;
    broken.set_stream(StreamShape { cut_after: Some(1), ..Default::default() });
    let an = WireMock::start(Wire::Anthropic).await;
    let ge = WireMock::start(Wire::Gemini).await;
    let config = [
        "[prices.\"*\"]\nfree = true\n".to_string(),
        openai_channel("a", &mock, "\"gpt-4o-mini\", \"text-embedding-3-small\""),
        openai_channel("broken", &broken, "\"broken-stream\""),
        channel("anthropic", "anthropic", &an.base_url(), "keys = [\"sk-ant\"]\nmodels = [\"claude-x\"]"),
        channel("gemini", "gemini", &ge.base_url(), "keys = [\"g-key\"]\nmodels = [\"gemini-x\"]"),
    ]
    .concat();
    let st = aws::stack(&config).await;
    let (_, key) = aws::customer(&st, 1_000_000).await;
    let w = Worker::start(&st, &[]).await;
    let base = w.url.clone();
    let out = tokio::task::spawn_blocking(move || {
        let openai = python_sdk("openai_sdk.py", &[&format!("{base}/v1"), &key]);
        let claude = python_sdk("anthropic_sdk.py", &[&base, &key, "claude-x"]);
        let converted = python_sdk("anthropic_sdk.py", &[&base, &key, "gemini-x"]);
        format!("{openai}\n{claude}\n{converted}")
    })
    .await
    .unwrap();
    assert!(out.contains("mid-stream error ok"), "{out}");
    assert_eq!(out.matches("errors ok").count(), 2, "{out}");
}

/// The time one request takes, and its status and JSON answer.
async fn timed(req: reqwest::RequestBuilder) -> (Duration, u16, Value) {
    let started = std::time::Instant::now();
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let v: Value = resp.json().await.unwrap();
    (started.elapsed(), status, v)
}

fn median_ms(mut v: Vec<Duration>) -> f64 {
    v.sort();
    v[v.len() / 2].as_secs_f64() * 1000.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn accounts_at_the_edge_sign_up_sign_in_rotate_and_revoke_on_replay() {
    use oblivious_e2e::gateway::note_secret;
    // No `[mail]`: sign-up answers without sending a link.
    let st = aws::stack("[auth]\nstarting_balance = 1000000\n").await;
    let w = Worker::start(&st, &[]).await;
    let url = |p: &str| format!("{}{p}", w.url);
    let post = |p: &str, body: Value| w.http.post(url(p)).json(&body);
    let password = "violet-harbor-42";

    // Sign-up, three accounts (the first also makes the signing key): one Argon2 hash each.
    let mut signups = Vec::new();
    let mut emails = Vec::new();
    let mut first = Value::Null;
    for i in 0..3 {
        let email = format!("edge-{i}-{}@example.test", st.prefix.trim_end_matches('-'));
        let body = json!({ "email": email, "password": password, "display_name": "Ada", "delivery": "body" });
        let (took, status, up) = timed(post("/api/auth/signup", body)).await;
        assert_eq!(status, 201, "{up}\n{}", w.output());
        assert_eq!(up["token_type"], "Bearer");
        assert_eq!(up["verification_sent"], false, "mail is off: {up}");
        assert_eq!(up["user"]["quota"], 1_000_000, "the starting balance: {up}");
        note_secret(up["access_token"].as_str().unwrap());
        note_secret(up["refresh_token"].as_str().unwrap());
        signups.push(took);
        emails.push(email);
        if i == 0 {
            first = up;
        }
    }
    let access = first["access_token"].as_str().unwrap().to_string();
    let (_, status, me) = timed(w.http.get(url("/api/me")).bearer_auth(&access)).await;
    assert_eq!(status, 200, "{me}");
    assert_eq!(me["account"]["email"], emails[0]);
    assert!(me["account"].get("password_hash").is_none(), "no hash is shown: {me}");

    // Sign-in (one Argon2 verification each), and a wrong password.
    let mut signins = Vec::new();
    let mut signed = Value::Null;
    for _ in 0..5 {
        let body = json!({ "email": emails[1].to_uppercase(), "password": password, "delivery": "body" });
        let (took, status, v) = timed(post("/api/auth/signin", body)).await;
        assert_eq!(status, 200, "{v}");
        note_secret(v["access_token"].as_str().unwrap());
        note_secret(v["refresh_token"].as_str().unwrap());
        signins.push(took);
        signed = v;
    }
    let wrong = json!({ "email": emails[2], "password": "not-the-password", "delivery": "body" });
    let (_, status, v) = timed(post("/api/auth/signin", wrong)).await;
    assert_eq!((status, v["error"]["code"].as_str()), (401, Some("invalid_credentials")), "{v}");

    // Refresh rotates the token (no hash: the store and JWT work alone); a replay revokes the session.
    let first_refresh = signed["refresh_token"].as_str().unwrap().to_string();
    let mut token = first_refresh.clone();
    let mut refreshes = Vec::new();
    let mut new_access = String::new();
    for _ in 0..5 {
        let (took, status, v) = timed(post("/api/auth/refresh", json!({ "refresh_token": token }))).await;
        assert_eq!(status, 200, "{v}");
        let next = v["refresh_token"].as_str().unwrap().to_string();
        assert_ne!(next, token, "rotated on every use");
        note_secret(&next);
        token = next;
        new_access = v["access_token"].as_str().unwrap().to_string();
        refreshes.push(took);
    }
    let (_, status, me) = timed(w.http.get(url("/api/me")).bearer_auth(&new_access)).await;
    assert_eq!((status, me["account"]["email"].clone()), (200, json!(emails[1])), "{me}");
    let (_, status, v) = timed(post("/api/auth/refresh", json!({ "refresh_token": first_refresh }))).await;
    assert_eq!((status, v["error"]["code"].as_str()), (401, Some("refresh_token_reused")), "{v}");
    let (_, status, v) = timed(post("/api/auth/refresh", json!({ "refresh_token": token }))).await;
    assert_eq!((status, v["error"]["code"].as_str()), (401, Some("invalid_refresh_token")), "the family: {v}");
    let (_, status, v) = timed(w.http.get(url("/api/me")).bearer_auth(&new_access)).await;
    assert_eq!((status, v["error"]["code"].as_str()), (401, Some("session_expired")), "{v}");

    // The admin function's self-service routes: a key of one's own, used on the relay.
    let (_, status, account) = timed(w.http.get(url("/api/account")).bearer_auth(&access)).await;
    assert_eq!(status, 200, "{account}");
    let made = w.http.post(url("/api/me/keys")).bearer_auth(&access).json(&json!({ "name": "edge" }));
    let (_, status, made) = timed(made).await;
    assert_eq!(status, 201, "{made}");
    let key = made["key"].as_str().unwrap();
    note_secret(key);
    assert_eq!(w.http.get(url("/v1/models")).bearer_auth(key).send().await.unwrap().status(), 200);
    // The rest of the admin API stays on the `admin` Lambda or the local binary.
    let (_, status, v) = timed(w.http.get(url("/api/admin/users")).bearer_auth(&access)).await;
    assert_eq!((status, v["error"]["code"].as_str()), (404, Some("unknown_url")), "{v}");

    let (up, inn, re) = (median_ms(signups.clone()), median_ms(signins.clone()), median_ms(refreshes));
    eprintln!(
        "edge accounts (workerd, wall time per request, ms): sign-up {:?} (median {up:.1}), sign-in median {inn:.1} \
         (min {:.1}), refresh median {re:.1}; sign-in − refresh = {:.1} (one Argon2 hash and sign-in's extra store calls)",
        signups.iter().map(|d| (d.as_secs_f64() * 10_000.0).round() / 10.0).collect::<Vec<_>>(),
        signins.iter().min().unwrap().as_secs_f64() * 1000.0,
        inn - re,
    );
}
