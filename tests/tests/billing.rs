#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test
//! Money: reserve → settle/refund exactness under concurrency and crashes,
//! price versions and kinds, caps, top-ups and redemption codes.

use std::time::Duration;

use futures_util::future::join_all;
use futures_util::StreamExt;
use oblivious_e2e::gateway::{config, STRICT_PRICES};
use oblivious_e2e::mock::{Behavior, StreamShape};
use oblivious_e2e::{Gateway, Mock};
use serde_json::{json, Value};

/// "m-*" models cost 1000 units a token (input and output).
const PRICED: &str = "[relay]\nretry_base_ms = 5\nretry_max_ms = 20\n\n[prices.\"m-*\"]\ninput = 1000\noutput = 1000\n";

fn chat(model: &str, stream: bool, max_tokens: i64) -> Value {
    json!({ "model": model, "stream": stream, "max_tokens": max_tokens, "messages": [{ "role": "user", "content": "hi there" }] })
}

async fn new_user(gw: &Gateway, name: &str, quota: i64) -> i64 {
    let (status, user) =
        gw.admin(reqwest::Method::POST, "/api/admin/users", Some(json!({ "name": name, "quota": quota }))).await;
    assert_eq!(status, 201, "{user}");
    user["id"].as_i64().unwrap()
}

/// Waits until no reservation is open; returns all of them.
async fn settled_reservations(gw: &Gateway) -> Vec<Value> {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let (_, open) = gw.admin(reqwest::Method::GET, "/api/admin/reservations?state=reserved", None).await;
        if open["total"] == 0 || std::time::Instant::now() > deadline {
            assert_eq!(open["total"], 0, "reservations left open: {open}");
            let (_, all) = gw.admin(reqwest::Method::GET, "/api/admin/reservations?per_page=500", None).await;
            return all["data"].as_array().unwrap().clone();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn three_hundred_concurrent_requests_settle_to_the_unit() {
    let (ok, bad, slow) = (Mock::start("ok").await, Mock::start("bad").await, Mock::start("slow").await);
    bad.set(Behavior::Fail(500));
    slow.set_stream(StreamShape {
        pieces: (0..20).map(|i| format!("s{i} ")).collect(),
        interval: Duration::from_millis(40),
        ..Default::default()
    });
    let gw = Gateway::start(&config(
        &[
            ("ok", &ok.base_url(), "models = [\"m-ok\"]"),
            ("bad", &bad.base_url(), "models = [\"m-fail\"]"),
            ("slow", &slow.base_url(), "models = [\"m-slow\"]"),
        ],
        PRICED,
    ));
    let uid = new_user(&gw, "alice", 3_000_000).await;
    let key = gw.key(&["--user", "alice", "--quota", "1500000"]);

    let calls = (0..300).map(|i| {
        let (gw, key) = (&gw, key.clone());
        async move {
            let (model, stream, max) = match i % 6 {
                0 | 1 => ("m-ok", false, 4),
                2 | 3 => ("m-ok", true, 4),
                4 => ("m-fail", false, 4),
                _ => ("m-slow", true, 30),
            };
            let resp = gw.post("/v1/chat/completions", &key, &chat(model, stream, max)).send().await.unwrap();
            let status = resp.status().as_u16();
            let rid = resp.headers()["x-request-id"].to_str().unwrap().to_string();
            if model == "m-slow" && status == 200 {
                // Hang up after the first event.
                let mut body = resp.bytes_stream();
                body.next().await;
                return (499, rid, model, false);
            }
            let body = resp.bytes().await.unwrap();
            // Once the gateway has seen the key run out (its cache follows the
            // store within a refresh), it refuses at the key check, before a
            // request is metered: those leave no usage row.
            let at_key_check = status == 429
                && serde_json::from_slice::<Value>(&body)
                    .is_ok_and(|v| v["error"]["message"] == "This API key has used up its quota.");
            (status, rid, model, at_key_check)
        }
    });
    let answers = join_all(calls).await;
    let statuses: Vec<u16> = answers.iter().map(|a| a.0).collect();
    let count = |s: u16| statuses.iter().filter(|x| **x == s).count();
    assert!(count(200) > 20, "some succeed: {statuses:?}");
    assert!(count(429) > 20, "the quota covers only part: {statuses:?}");
    assert!(count(500) > 0 && count(499) > 0, "{statuses:?}");

    let reservations = settled_reservations(&gw).await;
    let metered: Vec<_> = answers.iter().filter(|a| !a.3).collect();
    let rows = gw.usage_rows(metered.len()).await;
    let missing: Vec<_> = metered.iter().filter(|a| !rows.iter().any(|r| r["request_id"] == a.1.as_str())).collect();
    assert!(missing.is_empty(), "requests without a usage row: {missing:?}");
    assert_eq!(rows.len(), metered.len(), "every metered request left one usage row");
    let charged: i64 = rows.iter().map(|r| r["cost"].as_i64().unwrap()).sum();
    assert!(charged > 0);
    for r in &rows {
        let (status, cost) = (r["status"].as_i64().unwrap(), r["cost"].as_i64().unwrap());
        if status == 500 || status == 429 {
            assert_eq!(cost, 0, "failed and refused requests cost nothing: {r}");
        }
    }
    for res in &reservations {
        let row = rows.iter().find(|r| r["request_id"] == res["request_id"]).expect("a row per reservation");
        assert_eq!(res["charged"], row["cost"], "{res} vs {row}");
        let want = if row["cost"] == 0 { "refunded" } else { "settled" };
        assert_eq!(res["state"], want);
    }

    let (_, user) = gw.admin(reqwest::Method::GET, &format!("/api/admin/users/{uid}"), None).await;
    let (_, token) = gw.admin(reqwest::Method::GET, "/api/admin/tokens/2", None).await;
    assert_eq!(user["used_quota"], charged);
    assert_eq!(user["quota"], 3_000_000 - charged, "the balance moved by exactly the usage log's charges");
    assert_eq!(token["used_quota"], charged);
    assert_eq!(token["remaining_quota"], 1_500_000 - charged);
    // The documented allowance: a request may cost more than its reservation
    // when the upstream counts more prompt tokens than our estimate (4 here,
    // 4000 units), so the key may end that far below zero per settled request.
    let settled = reservations.iter().filter(|r| r["state"] == "settled").count() as i64;
    assert!(token["remaining_quota"].as_i64().unwrap() >= -4000 * settled);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_crash_mid_request_is_refunded_by_the_sweeper() {
    let (ok, slow) = (Mock::start("ok").await, Mock::start("slow").await);
    slow.set_stream(StreamShape {
        pieces: (0..100).map(|i| format!("s{i} ")).collect(),
        interval: Duration::from_millis(100),
        ..Default::default()
    });
    let extra = format!("{PRICED}\n[billing]\nreservation_timeout_seconds = 2\nsweep_interval_seconds = 1\n");
    let mut gw = Gateway::start(&config(
        &[("ok", &ok.base_url(), "models = [\"m-ok\"]"), ("slow", &slow.base_url(), "models = [\"m-slow\"]")],
        &extra,
    ));
    let uid = new_user(&gw, "carol", 1_000_000).await;
    let key = gw.key(&["--user", "carol"]);
    for _ in 0..3 {
        assert_eq!(gw.post("/v1/chat/completions", &key, &chat("m-ok", false, 4)).send().await.unwrap().status(), 200);
    }
    let resp = gw.post("/v1/chat/completions", &key, &chat("m-slow", true, 200)).send().await.unwrap();
    let mut body = resp.bytes_stream();
    body.next().await.unwrap().unwrap();
    gw.usage_rows(3).await;
    gw.crash();
    drop(body);
    gw.restart();

    let reservations = settled_reservations(&gw).await;
    assert_eq!(reservations.len(), 4);
    let crashed =
        reservations.iter().find(|r| r["amount"].as_i64().unwrap() > 200_000).expect("the slow request's reservation");
    assert_eq!((crashed["state"].as_str(), crashed["charged"].as_i64()), (Some("refunded"), Some(0)));
    let rows = gw.usage_rows(3).await;
    assert_eq!(rows.len(), 3, "no usage row lost or written twice");
    let charged: i64 = rows.iter().map(|r| r["cost"].as_i64().unwrap()).sum();
    assert_eq!(charged, 3 * 16_000);
    let (_, user) = gw.admin(reqwest::Method::GET, &format!("/api/admin/users/{uid}"), None).await;
    assert_eq!(user["quota"], 1_000_000 - charged);
}

#[tokio::test(flavor = "multi_thread")]
async fn prices_are_versioned_and_every_kind_is_charged_right() {
    let mock = Mock::start("a").await;
    let gw = Gateway::start(&config(
        &[("a", &mock.base_url(), "models = [\"std\", \"cached\", \"fixed\", \"gift\", \"nope\"]")],
        STRICT_PRICES,
    ));
    let key = gw.key(&[]);
    let put = |model: &str, body: Value| {
        let path = format!("/api/admin/prices/{model}");
        let gw = &gw;
        async move { gw.admin(reqwest::Method::PUT, &path, Some(body)).await }
    };
    let ask = |model: &'static str| {
        let (gw, key) = (&gw, key.clone());
        async move {
            let resp = gw.post("/v1/chat/completions", &key, &chat(model, false, 4)).send().await.unwrap();
            let status = resp.status().as_u16();
            let rid = resp.headers()["x-request-id"].to_str().unwrap().to_string();
            let body: Value = resp.json().await.unwrap();
            (status, rid, body)
        }
    };
    let row = |rid: String| {
        let gw = &gw;
        async move {
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            loop {
                let rows = gw.usage_rows(0).await;
                if let Some(r) = rows.into_iter().find(|r| r["request_id"] == rid.as_str()) {
                    return r;
                }
                assert!(std::time::Instant::now() < deadline, "no usage row for {rid}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };

    let (status, _, body) = ask("nope").await;
    assert_eq!((status, body["error"]["code"].as_str()), (403, Some("model_not_priced")));

    // 12 prompt tokens (as the mock counts them), 4 completion tokens.
    let (s, v1) = put("std", json!({ "input_per_m": 1_000_000_000, "output_per_m": 0 })).await;
    assert_eq!(s, 200, "{v1}");
    let (_, rid, _) = ask("std").await;
    let first = row(rid).await;
    assert_eq!((first["cost"].as_i64(), &first["price_version"]), (Some(12_000), &v1["version"]));
    let (_, v2) = put("std", json!({ "input_per_m": 2_000_000_000_i64, "output_per_m": 0 })).await;
    let soon = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64 + 1500;
    let (_, v3) =
        put("std", json!({ "input_per_m": 3_000_000_000_i64, "output_per_m": 0, "effective_at": soon })).await;
    let (_, rid, _) = ask("std").await;
    let second = row(rid).await;
    assert_eq!(
        (second["cost"].as_i64(), &second["price_version"]),
        (Some(24_000), &v2["version"]),
        "a future version is not in force yet"
    );
    tokio::time::sleep(Duration::from_millis(1600)).await;
    let (_, rid, _) = ask("std").await;
    let third = row(rid).await;
    assert_eq!((third["cost"].as_i64(), &third["price_version"]), (Some(36_000), &v3["version"]));
    let (_, history) = gw.admin(reqwest::Method::GET, "/api/admin/prices?history=true", None).await;
    assert_eq!(history["data"].as_array().unwrap().iter().filter(|p| p["model"] == "std").count(), 3);
    let (_, current) = gw.admin(reqwest::Method::GET, "/api/admin/prices", None).await;
    let std_now: Vec<_> = current["data"].as_array().unwrap().iter().filter(|p| p["model"] == "std").collect();
    assert_eq!(std_now.len(), 1);
    assert_eq!(std_now[0]["version"], v3["version"]);

    put("cached", json!({ "input_per_m": 1_000_000_000, "cached_input_per_m": 100_000_000 })).await;
    mock.set_cached_tokens(10);
    let (_, rid, _) = ask("cached").await;
    let r = row(rid).await;
    assert_eq!((r["cached_tokens"].as_i64(), r["cost"].as_i64()), (Some(10), Some(2 * 1000 + 10 * 100)));
    mock.set_cached_tokens(0);

    put("fixed", json!({ "per_request": 777 })).await;
    let (_, rid, _) = ask("fixed").await;
    assert_eq!(row(rid).await["cost"], 777);

    let (s, bad) = put("gift", json!({ "free": true, "input_per_m": 5 })).await;
    assert_eq!((s, bad["error"]["code"].as_str()), (400, Some("invalid_price")));
    put("gift", json!({ "free": true })).await;
    let (_, rid, _) = ask("gift").await;
    let r = row(rid).await;
    assert_eq!((r["cost"].as_i64(), r["reserved"].as_i64()), (Some(0), Some(0)));

    let (s, _) = gw.admin(reqwest::Method::DELETE, "/api/admin/prices/std", None).await;
    assert_eq!(s, 200);
    assert_eq!(ask("std").await.0, 403, "a retired price refuses the model again");
    let listed = gw.get_json("/v1/models", &key).await;
    let ids: Vec<&str> = listed["data"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["cached", "fixed", "gift"], "unpriced and retired models are not offered");
}

#[tokio::test(flavor = "multi_thread")]
async fn codes_redeem_once_top_ups_revive_and_caps_hold() {
    let mock = Mock::start("a").await;
    let gw = Gateway::start(&config(&[("a", &mock.base_url(), "models = [\"m-ok\"]")], PRICED));
    let uid = new_user(&gw, "bob", 0).await;
    let key = gw.key(&["--user", "bob"]);
    let ask = || async {
        gw.post("/v1/chat/completions", &key, &chat("m-ok", false, 4)).send().await.unwrap().status().as_u16()
    };
    assert_eq!(ask().await, 429, "no balance yet");

    let (s, made) =
        gw.admin(reqwest::Method::POST, "/api/admin/codes", Some(json!({ "count": 1, "value": 50_000 }))).await;
    assert_eq!(s, 201, "{made}");
    let code = made["codes"][0].as_str().unwrap().to_string();
    let redeems = (0..20).map(|_| {
        let (gw, key, code) = (&gw, key.clone(), code.clone());
        async move {
            let resp = gw
                .http
                .post(format!("{}/api/redeem", gw.url))
                .bearer_auth(&key)
                .json(&json!({ "code": code }))
                .send()
                .await
                .unwrap();
            let status = resp.status().as_u16();
            (status, resp.json::<Value>().await.unwrap())
        }
    });
    let results = join_all(redeems).await;
    assert_eq!(results.iter().filter(|(s, _)| *s == 200).count(), 1, "{results:?}");
    assert!(results
        .iter()
        .filter(|(s, _)| *s != 200)
        .all(|(s, b)| *s == 409 && b["error"]["code"] == "code_already_used"));
    let (_, ledger) = gw.admin(reqwest::Method::GET, &format!("/api/admin/ledger?user_id={uid}"), None).await;
    assert_eq!(ledger["total"], 1);
    assert_eq!(
        (ledger["data"][0]["kind"].as_str(), ledger["data"][0]["delta"].as_i64()),
        (Some("redeem"), Some(50_000))
    );

    let unknown = gw
        .http
        .post(format!("{}/api/redeem", gw.url))
        .bearer_auth(&key)
        .json(&json!({ "code": "ob-nope" }))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);
    let soon = oblivious_e2e::gateway::rfc3339_in(1);
    let (_, expiring) = gw
        .admin(reqwest::Method::POST, "/api/admin/codes", Some(json!({ "count": 1, "value": 5, "expires_at": soon })))
        .await;
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let late = gw
        .http
        .post(format!("{}/api/redeem", gw.url))
        .bearer_auth(&key)
        .json(&json!({ "code": expiring["codes"][0] }))
        .send()
        .await
        .unwrap();
    assert_eq!(late.status(), 400);
    assert_eq!(late.json::<Value>().await.unwrap()["error"]["code"], "code_expired");

    // 50_000 buys three requests (16_000 each), not a fourth.
    for _ in 0..3 {
        assert_eq!(ask().await, 200);
    }
    assert_eq!(ask().await, 429);
    // The third request settles (12_000 reserved → 16_000 charged) off the response path.
    settled_reservations(&gw).await;
    let (s, topped) = gw
        .admin(
            reqwest::Method::POST,
            &format!("/api/admin/users/{uid}/topup"),
            Some(json!({ "amount": 30_000, "note": "goodwill" })),
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(topped["quota"], 50_000 - 48_000 + 30_000);
    let (ok, out, err) = gw.cli(&["user", "topup", "bob", "50000"]);
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "82000");
    assert_eq!(ask().await, 200, "topping up revives the account");
    let (_, ledger) = gw.admin(reqwest::Method::GET, &format!("/api/admin/ledger?user_id={uid}"), None).await;
    let kinds: Vec<_> = ledger["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["kind"].as_str().unwrap().to_string(), e["actor"].as_str().unwrap().to_string()))
        .collect();
    assert_eq!(
        kinds,
        [("topup".to_string(), "cli".to_string()), ("topup".into(), "admin".into()), ("redeem".into(), "bob".into())]
    );

    let capped = gw.key(&["--user", "bob", "--daily-limit", "20000"]);
    let ask_capped =
        || async { gw.post("/v1/chat/completions", &capped, &chat("m-ok", false, 4)).send().await.unwrap() };
    assert_eq!(ask_capped().await.status(), 200);
    gw.usage_rows(0).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let refused = ask_capped().await;
    assert_eq!(refused.status(), 429);
    let body: Value = refused.json().await.unwrap();
    assert!(body["error"]["message"].as_str().unwrap().contains("daily"), "{body}");
    let account: Value = gw.get_json("/api/account", &capped).await;
    assert_eq!(account["user"]["name"], "bob");
    assert_eq!(account["token"]["daily_limit"], 20000);
    let own: Value = gw.get_json("/api/usage", &capped).await;
    assert!(own["data"].as_array().unwrap().iter().all(|r| r["user_id"] == uid));
}

#[tokio::test(flavor = "multi_thread")]
async fn low_balances_raise_alerts_and_webhooks_are_retried() {
    use std::sync::{Arc, Mutex};
    // A webhook receiver that fails its first delivery.
    let received: Arc<Mutex<Vec<Value>>> = Arc::default();
    let attempts = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (rx, tries) = (received.clone(), attempts.clone());
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |body: axum::Json<Value>| {
            let (rx, tries) = (rx.clone(), tries.clone());
            async move {
                if tries.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 {
                    return axum::http::StatusCode::INTERNAL_SERVER_ERROR;
                }
                rx.lock().unwrap().push(body.0);
                axum::http::StatusCode::OK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let mock = Mock::start("a").await;
    let extra = format!("{PRICED}\n[alerts]\nthresholds_percent = [10, 5, 0]\nwebhook_url = \"{hook}\"\n");
    let gw = Gateway::start(&config(&[("a", &mock.base_url(), "models = [\"m-ok\"]")], &extra));
    let uid = new_user(&gw, "dora", 100_000).await;
    let key = gw.key(&["--user", "dora"]);
    // Each request costs 16_000: after six, 4_000 (4%) is left.
    for _ in 0..6 {
        assert_eq!(gw.post("/v1/chat/completions", &key, &chat("m-ok", false, 4)).send().await.unwrap().status(), 200);
    }
    gw.usage_rows(6).await;
    gw.admin(reqwest::Method::POST, &format!("/api/admin/users/{uid}/topup"), Some(json!({ "amount": 8_000 }))).await;
    assert_eq!(gw.post("/v1/chat/completions", &key, &chat("m-ok", false, 4)).send().await.unwrap().status(), 200);

    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while received.lock().unwrap().len() < 3 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (_, alerts) = gw.admin(reqwest::Method::GET, "/api/admin/alerts", None).await;
    let thresholds: Vec<i64> =
        alerts["data"].as_array().unwrap().iter().map(|a| a["threshold_percent"].as_i64().unwrap()).collect();
    assert_eq!(thresholds, [10, 5, 0], "{alerts}");
    assert!(alerts["data"].as_array().unwrap().iter().all(|a| a["kind"] == "user" && a["name"] == "dora"));
    let got = received.lock().unwrap().clone();
    let mut delivered: Vec<i64> = got.iter().map(|b| b["alert"]["threshold_percent"].as_i64().unwrap()).collect();
    delivered.sort();
    assert_eq!(delivered, [0, 5, 10], "each alert delivered once, the failed delivery retried: {got:?}");
    assert!(attempts.load(std::sync::atomic::Ordering::SeqCst) >= 4);
    assert!(got.iter().all(|b| b["type"] == "balance_alert"));
}
