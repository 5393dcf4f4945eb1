#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test
//! The Lambda functions on the emulated AWS stack (DynamoDB and SQS on moto,
//! Redis): the relay answers Function URL events (streamed too), publishes
//! usage to SQS, the consumer drains it into DynamoDB with exact money; a
//! poisoned message ends in the dead-letter queue; the health function
//! disables and revives; the sweeper refunds.

use std::time::Duration;

use futures_util::future::join_all;
use oblivious_e2e::aws;
use oblivious_e2e::mock::{Behavior, StreamShape};
use oblivious_e2e::Mock;
use oblivious_ports::{Ledger, Page, Reservation, Store, TokenFilter, UsageFilter};
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
