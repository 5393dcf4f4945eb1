#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test
//! Channel selection, retries, failover, key rotation and resting, auto-disable.

use std::time::Duration;

use futures_util::future::join_all;
use oblivious_e2e::gateway::{config, json_of};
use oblivious_e2e::mock::Behavior;
use oblivious_e2e::{Gateway, Mock};
use serde_json::{json, Value};

const FAST: &str = "[relay]\nretry_base_ms = 5\nretry_max_ms = 20\nupstream_timeout_ms = 600\n";

fn chat() -> Value {
    json!({ "model": "gpt-4o-mini", "messages": [{ "role": "user", "content": "hi" }] })
}

async fn ask(gw: &Gateway, key: &str) -> (u16, Value) {
    let resp = gw.post("/v1/chat/completions", key, &chat()).send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap())
}

fn channel(models: &str, more: &str) -> String {
    format!("models = [\"{models}\"]\n{more}")
}

#[tokio::test(flavor = "multi_thread")]
async fn weights_spread_traffic() {
    let (a, b) = (Mock::start("a").await, Mock::start("b").await);
    let gw = Gateway::start(&config(
        &[
            ("a", &a.base_url(), &channel("gpt-4o-mini", "weight = 1")),
            ("b", &b.base_url(), &channel("gpt-4o-mini", "weight = 3")),
        ],
        FAST,
    ));
    let key = gw.key(&[]);
    for _ in 0..10 {
        let batch = join_all((0..100).map(|_| ask(&gw, &key))).await;
        assert!(batch.iter().all(|(s, _)| *s == 200));
    }
    let share_b = b.calls() as f64 / 1000.0;
    assert_eq!(a.calls() + b.calls(), 1000, "exactly one upstream call per request");
    assert!((0.70..=0.80).contains(&share_b), "b should get ~75%, got {share_b}");
}

#[tokio::test(flavor = "multi_thread")]
async fn lower_priority_takes_over_when_the_top_fails() {
    let (a, b) = (Mock::start("a").await, Mock::start("b").await);
    a.set(Behavior::Fail(503));
    let gw = Gateway::start(&config(
        &[
            ("a", &a.base_url(), &channel("gpt-4o-mini", "priority = 10")),
            ("b", &b.base_url(), &channel("gpt-4o-mini", "priority = 0")),
        ],
        FAST,
    ));
    let key = gw.key(&[]);
    let (status, body) = ask(&gw, &key).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["served_by"], "b");
    assert_eq!(a.calls(), 2, "two tries on a channel before moving on");
    let rows = gw.usage_rows(1).await;
    assert_eq!(rows[0]["retries"], 2);
    assert_eq!(rows[0]["channel_id"], 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn retries_then_succeeds_and_never_retries_client_errors() {
    let a = Mock::start("a").await;
    let gw = Gateway::start(&config(&[("a", &a.base_url(), &channel("gpt-4o-mini", ""))], FAST));
    let key = gw.key(&[]);
    a.set(Behavior::FailTimes(429, 1));
    let (status, _) = ask(&gw, &key).await;
    assert_eq!(status, 200);
    assert_eq!(a.calls(), 2);

    a.set(Behavior::Fail(400));
    let (status, body) = ask(&gw, &key).await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["message"], "a failing on purpose", "the upstream's own error comes back");
    assert_eq!(a.calls(), 3, "a 400 is not retried");

    a.set(Behavior::Fail(500));
    let (status, body) = ask(&gw, &key).await;
    assert_eq!(status, 500);
    assert_eq!(body["error"]["type"], "server_error");
    assert_eq!(a.calls(), 5, "one channel: two attempts, then give up");
}

#[tokio::test(flavor = "multi_thread")]
async fn timeouts_and_dead_upstreams_fail_over() {
    let (slow, good) = (Mock::start("slow").await, Mock::start("good").await);
    slow.set(Behavior::Stall(Duration::from_secs(3)));
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let gw = Gateway::start(&config(
        &[
            ("dead", &format!("http://{dead}/v1"), &channel("gpt-4o-mini", "priority = 20")),
            ("slow", &slow.base_url(), &channel("gpt-4o-mini", "priority = 10")),
            ("good", &good.base_url(), &channel("gpt-4o-mini", "priority = 0")),
        ],
        FAST,
    ));
    let key = gw.key(&[]);
    let (status, body) = ask(&gw, &key).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["served_by"], "good");
    assert_eq!(slow.calls(), 2);

    let hang = Mock::start("hang").await;
    hang.set(Behavior::Hangup);
    let gw2 = Gateway::start(&config(&[("hang", &hang.base_url(), &channel("gpt-4o-mini", ""))], FAST));
    let key2 = gw2.key(&[]);
    let (status, body) = ask(&gw2, &key2).await;
    assert_eq!(status, 502, "{body}");
    let code = body["error"]["code"].as_str().unwrap();
    assert!(code == "upstream_failed" || code == "upstream_unreachable", "{body}");
    assert_eq!(hang.calls(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn keys_rotate_and_a_failing_key_rests() {
    let a = Mock::start("a").await;
    let gw = Gateway::start(&config(
        &[(
            "a",
            &a.base_url(),
            &channel("gpt-4o-mini", "keys = [\"k0\", \"k1\", \"k2\"]\nkey_selection = \"round_robin\""),
        )],
        FAST,
    ));
    let key = gw.key(&[]);
    for _ in 0..30 {
        assert_eq!(ask(&gw, &key).await.0, 200);
    }
    let by_key = a.calls_by_key();
    for k in ["k0", "k1", "k2"] {
        assert_eq!(by_key[&format!("Bearer {k}")], 10, "{by_key:?}");
    }

    let b = Mock::start("b").await;
    b.fail_key("bad");
    let gw = Gateway::start(&config(
        &[("b", &b.base_url(), &channel("gpt-4o-mini", "keys = [\"bad\", \"good\"]\nkey_selection = \"round_robin\""))],
        FAST,
    ));
    let key = gw.key(&[]);
    for _ in 0..20 {
        assert_eq!(ask(&gw, &key).await.0, 200, "a bad key is retried on the good one");
    }
    assert_eq!(b.calls_by_key()["Bearer bad"], 3, "the bad key rests after 3 failures in a row");
}

#[tokio::test(flavor = "multi_thread")]
async fn failing_channels_are_disabled_and_revived_by_a_test() {
    let (a, b) = (Mock::start("a").await, Mock::start("b").await);
    a.set(Behavior::Fail(502));
    let extra = format!("{FAST}channel_failure_threshold = 3\n");
    let gw = Gateway::start(&config(
        &[
            ("a", &a.base_url(), &channel("gpt-4o-mini", "priority = 10")),
            ("b", &b.base_url(), &channel("gpt-4o-mini", "")),
        ],
        &extra,
    ));
    let key = gw.key(&[]);
    for _ in 0..2 {
        assert_eq!(ask(&gw, &key).await.0, 200);
    }
    assert_eq!(a.calls(), 3, "disabled at the third failure in a row");
    let (_, out, _) = gw.cli(&["channel", "list", "--json"]);
    let list: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(list[0]["status"], "auto_disabled");
    assert!(list[0]["status_reason"].as_str().unwrap().contains("3 consecutive failures"), "{}", list[0]);
    for _ in 0..5 {
        assert_eq!(ask(&gw, &key).await.1["served_by"], "b");
    }
    assert_eq!(a.calls(), 3, "a disabled channel gets no traffic");

    let (ok, _, _) = gw.cli(&["channel", "test", "1"]);
    assert!(!ok, "the test fails while the upstream fails");
    a.set(Behavior::Ok);
    let (ok, out, err) = gw.cli(&["channel", "test", "1"]);
    assert!(ok, "{out} {err}");
    gw.settle().await;
    assert_eq!(ask(&gw, &key).await.1["served_by"], "a", "revived by the CLI while the server runs");

    // The same through the admin API.
    a.set(Behavior::Fail(502));
    for _ in 0..2 {
        ask(&gw, &key).await;
    }
    let ch: Value = gw.get_json("/api/admin/channels/1", &gw.admin_key).await;
    assert_eq!(ch["status"], "auto_disabled");
    assert!(ch["keys"].as_array().unwrap().is_empty());
    a.set(Behavior::Ok);
    let tested: Value =
        json_of(gw.http.post(format!("{}/api/admin/channels/1/test", gw.url)).bearer_auth(&gw.admin_key)).await;
    assert_eq!(tested["result"]["ok"], true, "{tested}");
    assert_eq!(tested["channel"]["status"], "enabled");
    assert_eq!(ask(&gw, &key).await.1["served_by"], "a");
}
