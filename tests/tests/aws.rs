#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test
//! The Lambda functions on the emulated AWS stack (DynamoDB and SQS on moto,
//! Redis): the relay answers Function URL events (streamed too), publishes
//! usage to SQS, the consumer drains it into DynamoDB with exact money; a
//! poisoned message ends in the dead-letter queue; the health function
//! disables and revives; the sweeper refunds; the auth function runs
//! accounts (sign-up, sign-in, refresh rotation and replay) on DynamoDB behind
//! the HTTP API, routed as Terraform routes it.

use std::time::Duration;

use futures_util::future::join_all;
use oblivious_e2e::aws;
use oblivious_e2e::mock::{Behavior, StreamShape};
use oblivious_e2e::Mock;
use oblivious_ports::{Accounts, AuditFilter, Ledger, Page, Reservation, Store, TokenFilter, UsageFilter};
use serde_json::{json, Value};

/// "m-*" models cost 1000 units a token (input and output).
const PRICED: &str = "[relay]\nretry_base_ms = 5\nretry_max_ms = 20\nchannel_failure_threshold = 2\n\n[prices.\"m-*\"]\ninput = 1000\noutput = 1000\n";

const ALL: Page = Page { offset: 0, limit: 10_000 };

fn config(mock: &Mock) -> String {
    format!("{PRICED}\n[[channels]]\nname = \"up\"\ntype = \"openai\"\nbase_url = \"{}\"\nkeys = [\"sk-up\"]\nmodels = [\"m-*\"]\n", mock.base_url())
}

fn chat(stream: bool) -> String {
    json!({ "model": "m-1", "stream": stream, "max_tokens": 20, "messages": [{ "role": "user", "content": "hi there" }] }).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn relay_on_lambda_bills_through_sqs_into_dynamodb() {
    let mock = Mock::start("up").await;
    mock.set_stream(StreamShape {
        pieces: (0..20).map(|i| format!("w{i} ")).collect(),
        interval: Duration::from_millis(5),
        ..StreamShape::default()
    });
    let st = aws::stack(&config(&mock)).await;
    let (uid, key) = aws::customer(&st, 50_000_000).await;
    let relay = oblivious_lambda::http::relay_app(&st.init);
    let auth = format!("Bearer {key}");
    let headers = [("authorization", auth.as_str()), ("content-type", "application/json")];

    let calls = (0..12).map(|i| {
        let ev = aws::function_url_event("POST", "/v1/chat/completions", &headers, &chat(i % 2 == 1));
        let relay = relay.clone();
        async move { (i % 2 == 1, aws::invoke(&relay, &ev).await) }
    });
    for (stream, a) in join_all(calls).await {
        assert_eq!(a.status, 200, "{}", a.text());
        if stream {
            let text = a.text();
            assert!(a.frames.len() > 2, "streamed event by event, got {} frames", a.frames.len());
            assert!(text.contains("w19") && text.trim_end().ends_with("data: [DONE]"), "{text}");
        } else {
            assert_eq!(a.json()["object"], "chat.completion");
        }
    }
    // Other endpoints and refusals answer in the caller's shape on Lambda too.
    let bad =
        aws::invoke(&relay, &aws::function_url_event("POST", "/v1/chat/completions", &headers, "{not json")).await;
    assert_eq!(bad.status, 400);
    assert_eq!(bad.json()["error"]["type"], "invalid_request_error");
    let anon = aws::invoke(&relay, &aws::function_url_event("GET", "/v1/models", &[], "")).await;
    assert_eq!(anon.status, 401);
    let models = aws::invoke(&relay, &aws::function_url_event("GET", "/v1/models", &headers, "")).await;
    assert_eq!(models.status, 200);
    let ready = aws::invoke(&relay, &aws::function_url_event("GET", "/readyz", &[], "")).await;
    assert_eq!((ready.status, ready.json()["checks"]["store"]["ok"].clone()), (200, true.into()), "DynamoDB answers");
    // Browsers on other origins: the relay answers the preflight itself (the Function URL has no CORS of its own).
    let preflight = [("origin", "https://app.example"), ("access-control-request-method", "POST")];
    let pre = aws::invoke(&relay, &aws::function_url_event("OPTIONS", "/v1/chat/completions", &preflight, "")).await;
    assert!((200..300).contains(&pre.status), "{}", pre.status);
    assert_eq!(pre.headers["access-control-allow-origin"], "*");
    // A refusal mid-validation costs nothing and never reaches the upstream on Lambda either.
    let body = r#"{"model":"m-up","max_tokens":-1,"messages":[{"role":"user","content":"hi"}]}"#;
    let bad = aws::invoke(&relay, &aws::function_url_event("POST", "/v1/chat/completions", &headers, body)).await;
    assert_eq!((bad.status, bad.json()["error"]["param"].as_str()), (400, Some("max_tokens")), "{}", bad.text());
    assert_eq!(mock.calls(), 12, "one upstream call per request");

    // Every answered request's usage waits in SQS until the consumer (a separate cold start) drains it.
    assert!(aws::depth(&st.aws, st.queue.url()).await >= 12);
    let consumer = aws::cold_start(&st.settings).await;
    let drained = aws::drain(&st, &consumer, Duration::from_secs(1)).await;
    assert_eq!(drained.failed, 0, "{drained:?}");
    assert_eq!(aws::depth(&st.aws, st.queue.url()).await, 0);

    let rows = st.store.usage(UsageFilter { user_id: Some(uid), ..Default::default() }, ALL).await.unwrap();
    let chats: Vec<_> = rows.items.iter().filter(|r| r.endpoint == "/v1/chat/completions").collect();
    assert_eq!(chats.iter().filter(|r| r.status == 200).count(), 12, "{:?}", rows.items);
    let charged: i64 = rows.items.iter().map(|r| r.cost).sum();
    assert!(chats.iter().filter(|r| r.status == 200).all(|r| r.cost > 0 && r.prompt_tokens > 0));
    let user = st.store.user(uid).await.unwrap().unwrap();
    assert_eq!(
        (user.quota, user.used_quota),
        (50_000_000 - charged, charged),
        "balance moved by exactly the usage log's charges"
    );
    let token =
        st.store.tokens(TokenFilter { user_id: Some(uid), ..Default::default() }, ALL).await.unwrap().items.remove(0);
    assert_eq!(token.used_quota, charged);
    assert_eq!(st.store.reservations(Some("reserved".into()), ALL).await.unwrap().total, 0, "every hold settled");

    // A redelivered batch (SQS is at-least-once) changes nothing.
    for r in &rows.items {
        st.queue.publish_batch(&[oblivious_core::job::Job::Usage(r.clone())]).await.unwrap();
    }
    aws::drain(&st, &consumer, Duration::from_secs(1)).await;
    let again = st.store.user(uid).await.unwrap().unwrap();
    assert_eq!(again.quota, user.quota);
    assert_eq!(
        st.store.usage(UsageFilter { user_id: Some(uid), ..Default::default() }, ALL).await.unwrap().total,
        rows.total
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_poisoned_message_lands_in_the_dead_letter_queue_and_nothing_else_is_lost() {
    let mock = Mock::start("up").await;
    let st = aws::stack(&config(&mock)).await;
    let (uid, _) = aws::customer(&st, 1_000_000).await;
    let token =
        st.store.tokens(TokenFilter { user_id: Some(uid), ..Default::default() }, ALL).await.unwrap().items.remove(0);
    let record = |id: &str, cost| oblivious_core::model::UsageRecord {
        request_id: id.into(),
        created_at: 1_795_514_400_000,
        endpoint: "/v1/chat/completions".into(),
        user_id: uid,
        token_id: token.id,
        requested_model: "m-1".into(),
        upstream_model: "m-1".into(),
        cost,
        status: 200,
        ..Default::default()
    };
    use oblivious_core::job::Job;
    st.queue.publish_batch(&[Job::Usage(record("ok-1", 700))]).await.unwrap();
    aws::sqs(
        &st.aws,
        "SendMessage",
        json!({ "QueueUrl": st.queue.url(), "MessageBody": "{\"kind\":\"usage\",\"broken" }),
    )
    .await;
    st.queue.publish_batch(&[Job::Usage(record("ok-2", 300))]).await.unwrap();

    let consumer = aws::cold_start(&st.settings).await;
    let drained = aws::drain(&st, &consumer, Duration::from_secs(1)).await;
    assert_eq!(drained.failed, aws::MAX_RECEIVES as usize, "the poisoned message failed on each receive: {drained:?}");
    assert_eq!(aws::depth(&st.aws, st.queue.url()).await, 0);
    assert_eq!(aws::depth(&st.aws, &st.dlq_url).await, 1, "parked in the dead-letter queue");
    let user = st.store.user(uid).await.unwrap().unwrap();
    assert_eq!((user.quota, user.used_quota), (1_000_000 - 1000, 1000), "both good jobs applied once");
    assert_eq!(st.store.usage(UsageFilter { user_id: Some(uid), ..Default::default() }, ALL).await.unwrap().total, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_health_function_disables_a_failing_channel_and_revives_it() {
    let mock = Mock::start("up").await;
    let st = aws::stack(&config(&mock)).await;
    let health = aws::cold_start(&st.settings).await;
    let window = Duration::from_secs(60);
    let channel = || async { st.store.channels().await.unwrap().remove(0) };

    let pass = oblivious_lambda::scheduled::health(&health, window).await.unwrap();
    assert_eq!(pass["channels"][0]["probe"]["ok"], true, "{pass}");
    mock.set(Behavior::Fail(500));
    let first = oblivious_lambda::scheduled::health(&health, window).await.unwrap();
    assert_eq!(
        (first["channels"][0]["failures"].as_i64(), first["channels"][0]["action"].as_str()),
        (Some(1), Some("")),
        "{first}"
    );
    assert_eq!(channel().await.status, oblivious_core::model::ChannelStatus::Enabled, "one failure is not enough");
    let second = oblivious_lambda::scheduled::health(&health, window).await.unwrap();
    assert_eq!(second["channels"][0]["action"], "disabled", "{second}");
    let ch = channel().await;
    assert_eq!(ch.status, oblivious_core::model::ChannelStatus::AutoDisabled);
    assert!(ch.status_reason.unwrap_or_default().contains("health check failed 2 times"));

    mock.set(Behavior::Ok);
    let revived = oblivious_lambda::scheduled::health(&health, window).await.unwrap();
    assert_eq!(revived["channels"][0]["action"], "revived", "{revived}");
    assert_eq!(channel().await.status, oblivious_core::model::ChannelStatus::Enabled);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_sweeper_function_refunds_reservations_left_open() {
    let mock = Mock::start("up").await;
    let st = aws::stack(&config(&mock)).await;
    let (uid, _) = aws::customer(&st, 5_000).await;
    let token =
        st.store.tokens(TokenFilter { user_id: Some(uid), ..Default::default() }, ALL).await.unwrap().items.remove(0);
    let hold = |id: &str, created_at| Reservation {
        request_id: id.into(),
        token_id: token.id,
        user_id: uid,
        amount: 1_000,
        created_at,
        state: String::new(),
        charged: None,
    };
    let now = chrono::Utc::now().timestamp_millis();
    st.store.reserve(hold("crashed", now - 3_600_000)).await.unwrap().unwrap();
    st.store.reserve(hold("in-flight", now)).await.unwrap().unwrap();
    let sweeper = aws::cold_start(&st.settings).await;
    let out = oblivious_lambda::scheduled::sweep(&sweeper).await.unwrap();
    assert_eq!(out["refunded"], 1, "only the one older than the timeout");
    assert_eq!(st.store.user(uid).await.unwrap().unwrap().quota, 4_000);
}

/// The real `relay` binary, polling a Lambda runtime API (cargo lambda's) and
/// answering through its Function URL front in streaming mode.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_relay_binary_streams_through_a_lambda_runtime_api() {
    let mock = Mock::start("up").await;
    mock.set_stream(StreamShape {
        pieces: (0..30).map(|i| format!("p{i} ")).collect(),
        interval: Duration::from_millis(20),
        ..StreamShape::default()
    });
    let st = aws::stack(&config(&mock)).await;
    let (uid, key) = aws::customer(&st, 50_000_000).await;
    let (_runtime, port) = aws::lambda_runtime_api();
    let _relay = aws::run_function("relay", port, &st.settings);
    let url = format!("http://127.0.0.1:{port}/lambda-url/_/v1/chat/completions");
    let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap();

    let plain = http
        .post(&url)
        .bearer_auth(&key)
        .body(chat(false))
        .header("content-type", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(plain.status(), 200);
    let body: Value = plain.json().await.unwrap();
    assert_eq!(body["object"], "chat.completion", "{body}");

    let mut stream = http
        .post(&url)
        .bearer_auth(&key)
        .body(chat(true))
        .header("content-type", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    let first = stream.chunk().await.unwrap().expect("a first chunk");
    assert_eq!(mock.completed_streams(), 0, "the first bytes arrived while the upstream was still streaming");
    let mut text = String::from_utf8_lossy(&first).into_owned();
    while let Some(c) = stream.chunk().await.unwrap() {
        text.push_str(&String::from_utf8_lossy(&c));
    }
    assert!(text.contains("p29") && text.trim_end().ends_with("data: [DONE]"), "{text}");

    // The binary published both requests' usage before its invocations ended.
    let consumer = aws::cold_start(&st.settings).await;
    aws::drain(&st, &consumer, Duration::from_secs(1)).await;
    let rows = st.store.usage(UsageFilter { user_id: Some(uid), ..Default::default() }, ALL).await.unwrap();
    assert_eq!(
        rows.items.iter().filter(|r| r.endpoint == "/v1/chat/completions" && r.status == 200).count(),
        2,
        "{:?}",
        rows.items
    );
    assert!(rows.items.iter().any(|r| r.stream));
}

/// `[server] trusted_proxies` names API Gateway's peer as a proxy (as a
/// CloudFront in front would be); `[auth]` as the config file sets it.
const ACCOUNTS: &str = "[server]\ntrusted_proxies = [\"203.0.113.0/24\"]\n\n[auth]\nstarting_balance = 2000000\nmin_password_length = 12\n\n[prices.\"*\"]\nfree = true\n";

fn code(v: &Value) -> &str {
    v["error"]["code"].as_str().unwrap_or("")
}

/// The auth function as its own Lambda (its own cold start; it shares only
/// DynamoDB and Redis with the admin function) behind the HTTP API: every
/// request is an HTTP API event (payload 2.0) sent to the function
/// `terraform/lambda.tf` routes its path to.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_auth_function_signs_up_signs_in_and_rotates_sessions_on_dynamodb() {
    let st = aws::stack(ACCOUNTS).await;
    let auth = aws::cold_start(&st.settings).await;
    let api = aws::HttpApi::new(vec![
        ("admin", oblivious_lambda::http::admin_app(&st.init)),
        ("auth", oblivious_lambda::http::auth_app(&auth)),
    ]);
    for (method, path, function) in [
        ("POST", "/api/auth/signup", "auth"),
        ("POST", "/api/auth/oidc/github/callback", "auth"),
        ("GET", "/api/me", "auth"),
        ("DELETE", "/api/me/sessions/ses_1", "auth"),
        ("POST", "/api/me/2fa/enrol", "auth"),
        ("GET", "/api/me/keys", "admin"),
        ("DELETE", "/api/me/keys/7", "admin"),
        ("POST", "/api/me/keys/7/restore", "admin"),
        ("GET", "/api/admin/audit", "auth"),
        ("POST", "/api/admin/invites", "auth"),
        ("POST", "/api/admin/users/7/2fa-reset", "auth"),
        ("DELETE", "/api/admin/users/7/sessions", "auth"),
        ("GET", "/api/admin/users/7", "admin"),
        ("POST", "/api/admin/users/7/topup", "admin"),
        ("GET", "/api/account", "admin"),
        ("GET", "/api/usage", "admin"),
    ] {
        assert_eq!(api.function_for(method, path), function, "{method} {path} is routed to its owner");
    }

    // Sign-up: `[auth]` of the config applies (a longer minimum, a starting balance).
    let (email, password) = ("Dana@Example.com", "correct horse battery");
    let weak = json!({ "email": email, "password": "eleven-char", "delivery": "body" });
    let short = api.call("POST", "/api/auth/signup", None, Some(weak)).await;
    assert_eq!((short.status, code(&short.body)), (400, "password_too_short"), "{}", short.body);
    let up = json!({ "email": email, "password": password, "display_name": "Dana", "delivery": "body" });
    let up = api.call("POST", "/api/auth/signup", None, Some(up)).await;
    assert_eq!((up.status, up.function.as_str(), up.route_key.as_str()), (201, "auth", "ANY /api/auth/{proxy+}"));
    let up = up.body;
    assert_eq!((up["token_type"].as_str(), up["user"]["quota"].as_i64()), (Some("Bearer"), Some(2_000_000)), "{up}");
    assert_eq!(up["verification_sent"], false, "no [mail]: no link was sent");
    let first_access = up["access_token"].as_str().unwrap().to_string();
    assert!(up["refresh_token"].as_str().unwrap().starts_with("ort_"), "{up}");
    let again = json!({ "email": "dana@example.com", "password": password, "delivery": "body" });
    let taken = api.call("POST", "/api/auth/signup", None, Some(again)).await;
    assert_eq!((taken.status, code(&taken.body)), (409, "email_taken"), "one account per address, across cases");
    let account = st.store.account_by_email("dana@example.com").await.unwrap().expect("the account in DynamoDB");
    assert!(account.password_hash.as_deref().unwrap_or_default().starts_with("$argon2id$"));

    // Sign-in (the address in any case) from behind the trusted proxy: the session records the caller.
    let creds = json!({ "email": "DANA@example.com", "password": password, "delivery": "body" });
    let ev = aws::http_api_event(
        "POST",
        "/api/auth/signin",
        &[("content-type", "application/json"), ("x-forwarded-for", "198.51.100.7")],
        &creds.to_string(),
        "ANY /api/auth/{proxy+}",
    );
    let signed = aws::invoke(&api.apps["auth"], &ev).await;
    assert_eq!(signed.status, 200, "{}", signed.text());
    let signed = signed.json();
    let bad = json!({ "email": email, "password": "not the password", "delivery": "body" });
    let refused = api.call("POST", "/api/auth/signin", None, Some(bad)).await;
    assert_eq!((refused.status, code(&refused.body)), (401, "invalid_credentials"));

    // Refresh: a new refresh token (and access token) each time.
    let first_refresh = signed["refresh_token"].as_str().unwrap().to_string();
    let rotated = api.call("POST", "/api/auth/refresh", None, Some(json!({ "refresh_token": first_refresh }))).await;
    assert_eq!(rotated.status, 200, "{}", rotated.body);
    let second_refresh = rotated.body["refresh_token"].as_str().unwrap().to_string();
    assert_ne!(second_refresh, first_refresh, "rotated on use");
    let rotated_access = rotated.body["access_token"].as_str().unwrap().to_string();
    assert_eq!(api.call("GET", "/api/me", Some(&rotated_access), None).await.status, 200);

    // A replayed refresh token ends its session (access token included) at once.
    let replay = api.call("POST", "/api/auth/refresh", None, Some(json!({ "refresh_token": first_refresh }))).await;
    assert_eq!((replay.status, code(&replay.body)), (401, "refresh_token_reused"), "{}", replay.body);
    let after = api.call("POST", "/api/auth/refresh", None, Some(json!({ "refresh_token": second_refresh }))).await;
    assert_eq!((after.status, code(&after.body)), (401, "invalid_refresh_token"), "{}", after.body);
    let gone = api.call("GET", "/api/me", Some(&rotated_access), None).await;
    assert_eq!((gone.status, code(&gone.body)), (401, "session_expired"), "{}", gone.body);

    // The sign-up session is untouched: GET /api/me with its access token.
    let me = api.call("GET", "/api/me", Some(&first_access), None).await;
    assert_eq!((me.status, me.function.as_str(), me.route_key.as_str()), (200, "auth", "ANY /api/me"), "{}", me.body);
    assert_eq!(me.body["account"]["email"], "dana@example.com");
    assert_eq!(me.body["account"]["display_name"], "Dana");
    assert_eq!(me.body["user"]["id"], up["user"]["id"]);
    assert!(me.body["account"].get("password_hash").is_none(), "{}", me.body);
    let sessions = api.call("GET", "/api/me/sessions", Some(&first_access), None).await;
    assert_eq!(sessions.status, 200, "{}", sessions.body);
    let list = sessions.body["data"].as_array().unwrap();
    assert_eq!(list.len(), 1, "the replayed session is gone: {}", sessions.body);
    assert_eq!(list[0]["ip"], "203.0.113.9", "the last hop API Gateway names: {}", sessions.body);
    let filter = AuditFilter { action: Some("sign_in".into()), ..Default::default() };
    let signed_in_from: Vec<_> = st.store.audit(filter, 100).await.unwrap().into_iter().filter_map(|a| a.ip).collect();
    assert_eq!(signed_in_from, ["198.51.100.7"], "the caller behind the trusted proxy, not the proxy");

    // The admin function (another cold start) takes the same session for the user's keys.
    let keys = api.call("GET", "/api/me/keys", Some(&first_access), None).await;
    assert_eq!((keys.status, keys.function.as_str()), (200, "admin"), "{}", keys.body);
    let made = api.call("POST", "/api/me/keys", Some(&first_access), Some(json!({ "name": "laptop" }))).await;
    assert_eq!((made.status, made.function.as_str()), (201, "admin"), "{}", made.body);
    // A path no function has answers in the API's error shape.
    let nothing = api.call("GET", "/api/auth/nothing-here", None, None).await;
    assert_eq!((nothing.status, nothing.function.as_str()), (404, "auth"), "{}", nothing.body);
}

/// The real `auth` binary (buffered, as the HTTP API invokes it) polling a
/// Lambda runtime API: its cold start and answers through cargo lambda's
/// Function URL front.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_auth_binary_answers_through_a_lambda_runtime_api() {
    let st = aws::stack(ACCOUNTS).await;
    let (_runtime, port) = aws::lambda_runtime_api();
    let _auth = aws::run_function("auth", port, &st.settings);
    let url = |path: &str| format!("http://127.0.0.1:{port}/lambda-url/_{path}");
    let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap();

    let body = json!({ "email": "erin@example.com", "password": "correct horse battery", "delivery": "body" });
    let up = http.post(url("/api/auth/signup")).json(&body).send().await.unwrap();
    assert_eq!(up.status(), 201);
    let up: Value = up.json().await.unwrap();
    assert_eq!(up["verification_sent"], false, "{up}");
    let access = up["access_token"].as_str().unwrap();
    let me = http.get(url("/api/me")).bearer_auth(access).send().await.unwrap();
    assert_eq!(me.status(), 200);
    let me: Value = me.json().await.unwrap();
    assert_eq!(me["account"]["email"], "erin@example.com", "{me}");
    let anon = http.get(url("/api/me")).send().await.unwrap();
    assert_eq!(anon.status(), 401, "a refusal keeps its status through the buffered answer");
}
