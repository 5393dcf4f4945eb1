#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test
//! Money bounds and the admin API's guard rails: every balance change is a
//! ledger entry, amounts are bounded (`MAX_UNITS` = 10^15 units), settlements
//! cannot overflow, admin handlers authenticate before reading a body, and
//! channel base URLs are redacted and kept off link-local addresses.

use std::io::{Read, Write};
use std::time::Duration;

use oblivious_e2e::gateway::{binary, config, temp_dir, STRICT_PRICES};
use oblivious_e2e::{Gateway, Mock};
use reqwest::Method;
use serde_json::{json, Value};

const MAX_UNITS: i64 = 1_000_000_000_000_000;

async fn new_user(gw: &Gateway, body: Value) -> i64 {
    let (status, user) = gw.admin(Method::POST, "/api/admin/users", Some(body)).await;
    assert_eq!(status, 201, "{user}");
    user["id"].as_i64().unwrap()
}

fn code(v: &Value) -> Option<&str> {
    v["error"]["code"].as_str()
}

async fn balance(gw: &Gateway, uid: i64) -> i64 {
    let (status, user) = gw.admin(Method::GET, &format!("/api/admin/users/{uid}"), None).await;
    assert_eq!(status, 200, "{user}");
    user["quota"].as_i64().unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn balances_move_only_through_the_ledger() {
    let gw = Gateway::start(&config(&[], ""));
    let uid = new_user(&gw, json!({ "name": "carol", "quota": 1000 })).await;

    // PATCH cannot set a balance: it points to the top-up route and changes nothing.
    let (s, v) = gw.admin(Method::PATCH, &format!("/api/admin/users/{uid}"), Some(json!({ "quota": 123 }))).await;
    assert_eq!((s, code(&v)), (400, Some("use_topup")), "{v}");
    assert!(v["error"]["message"].as_str().unwrap().contains(&format!("/api/admin/users/{uid}/topup")), "{v}");
    let (s, v) = gw.admin(Method::PATCH, &format!("/api/admin/users/{uid}"), Some(json!({ "quota": -5 }))).await;
    assert_eq!((s, code(&v)), (400, Some("use_topup")), "{v}");
    assert_eq!(balance(&gw, uid).await, 1000);
    // Other fields still patch.
    let (s, v) = gw.admin(Method::PATCH, &format!("/api/admin/users/{uid}"), Some(json!({ "role": "admin" }))).await;
    assert_eq!((s, v["role"].as_str()), (200, Some("admin")), "{v}");

    // A debit is explicit: a negative amount needs a reason.
    let topup = format!("/api/admin/users/{uid}/topup");
    let (s, v) = gw.admin(Method::POST, &topup, Some(json!({ "amount": -300 }))).await;
    assert_eq!((s, code(&v)), (400, Some("note_required")), "{v}");
    let (s, v) = gw.admin(Method::POST, &topup, Some(json!({ "amount": -300, "note": "refund clawback" }))).await;
    assert_eq!((s, v["quota"].as_i64()), (200, Some(700)), "{v}");
    let (_, ledger) = gw.admin(Method::GET, &format!("/api/admin/ledger?user_id={uid}"), None).await;
    let e = &ledger["data"][0];
    assert_eq!(
        (e["delta"].as_i64(), e["balance_after"].as_i64(), e["kind"].as_str(), e["actor"].as_str(), e["note"].as_str()),
        (Some(-300), Some(700), Some("adjust"), Some("admin"), Some("refund clawback")),
        "{ledger}"
    );
    assert_eq!(ledger["total"], 1, "only the top-up route wrote an entry: {ledger}");

    // Negative amounts are refused as on creation, everywhere.
    let (s, v) = gw.admin(Method::POST, "/api/admin/users", Some(json!({ "name": "neg", "quota": -5 }))).await;
    assert_eq!((s, code(&v)), (400, Some("invalid_quota")), "{v}");
    let (s, t) = gw.admin(Method::POST, "/api/admin/tokens", Some(json!({ "name": "t", "quota": 100 }))).await;
    assert_eq!(s, 201, "{t}");
    let tpath = format!("/api/admin/tokens/{}", t["id"]);
    let (s, v) = gw.admin(Method::POST, "/api/admin/tokens", Some(json!({ "name": "t", "quota": -100 }))).await;
    assert_eq!((s, code(&v)), (400, Some("invalid_quota")), "{v}");
    for field in ["quota", "daily_limit", "monthly_limit"] {
        let (s, v) = gw.admin(Method::PATCH, &tpath, Some(json!({ field: -100 }))).await;
        assert_eq!((s, code(&v), v["error"]["param"].as_str()), (400, Some("invalid_quota"), Some(field)), "{v}");
        let (s, v) = gw.admin(Method::PATCH, &tpath, Some(json!({ field: MAX_UNITS + 1 }))).await;
        assert_eq!((s, code(&v)), (400, Some("amount_out_of_range")), "{field}: {v}");
    }
    let (_, t) = gw.admin(Method::GET, &tpath, None).await;
    assert_eq!(t["remaining_quota"], 100, "{t}");
    let (s, v) = gw.admin(Method::PATCH, &tpath, Some(json!({ "quota": MAX_UNITS }))).await;
    assert_eq!((s, v["remaining_quota"].as_i64()), (200, Some(MAX_UNITS)), "{v}");
}

#[tokio::test(flavor = "multi_thread")]
async fn amounts_past_the_bound_are_refused_not_turned_into_reals() {
    let gw = Gateway::start(&config(&[], ""));
    let uid = new_user(&gw, json!({ "name": "dave" })).await;
    let topup = format!("/api/admin/users/{uid}/topup");
    for amount in [json!(i64::MAX), json!(i64::MIN), json!(MAX_UNITS + 1), json!(-MAX_UNITS - 1)] {
        let (s, v) = gw.admin(Method::POST, &topup, Some(json!({ "amount": amount, "note": "x" }))).await;
        assert_eq!((s, code(&v)), (400, Some("amount_out_of_range")), "{amount}: {v}");
    }
    // Up to the bound is fine; past it in sum is refused and changes nothing.
    let (s, v) = gw.admin(Method::POST, &topup, Some(json!({ "amount": MAX_UNITS }))).await;
    assert_eq!((s, v["quota"].as_i64()), (200, Some(MAX_UNITS)), "{v}");
    let (s, v) = gw.admin(Method::POST, &topup, Some(json!({ "amount": MAX_UNITS }))).await;
    assert_eq!((s, code(&v)), (400, Some("amount_out_of_range")), "{v}");
    assert_eq!(balance(&gw, uid).await, MAX_UNITS);
    let (_, ledger) = gw.admin(Method::GET, &format!("/api/admin/ledger?user_id={uid}"), None).await;
    assert_eq!(ledger["total"], 1, "{ledger}");

    // Codes: worth at most the bound, and a redemption that would pass it leaves the code unused.
    let (s, v) = gw.admin(Method::POST, "/api/admin/codes", Some(json!({ "count": 1, "value": i64::MAX }))).await;
    assert_eq!((s, code(&v)), (400, Some("amount_out_of_range")), "{v}");
    let (s, v) = gw.admin(Method::POST, "/api/admin/codes", Some(json!({ "count": 1, "value": 5 }))).await;
    assert_eq!(s, 201, "{v}");
    let the_code = v["codes"][0].as_str().unwrap().to_string();
    let key = gw.key(&["--user", "dave"]);
    let resp = gw.post("/api/redeem", &key, &json!({ "code": the_code })).send().await.unwrap();
    let status = resp.status().as_u16();
    let v: Value = resp.json().await.unwrap();
    assert_eq!((status, code(&v)), (400, Some("amount_out_of_range")), "{v}");
    let (_, codes) = gw.admin(Method::GET, "/api/admin/codes", None).await;
    assert!(codes["data"][0]["redeemed_by"].is_null(), "the code stays unused: {codes}");
    gw.admin(Method::POST, &topup, Some(json!({ "amount": -10, "note": "room for the code" }))).await;
    let v: Value =
        gw.post("/api/redeem", &key, &json!({ "code": the_code })).send().await.unwrap().json().await.unwrap();
    assert_eq!(v["balance"].as_i64(), Some(MAX_UNITS - 5), "{v}");

    // User quotas and prices are bounded too.
    let (s, v) =
        gw.admin(Method::POST, "/api/admin/users", Some(json!({ "name": "big", "quota": MAX_UNITS + 1 }))).await;
    assert_eq!((s, code(&v)), (400, Some("amount_out_of_range")), "{v}");
    let (s, v) = gw.admin(Method::PUT, "/api/admin/prices/m-x", Some(json!({ "per_request": i64::MAX }))).await;
    assert_eq!((s, code(&v)), (400, Some("amount_out_of_range")), "{v}");
    let (s, v) = gw.admin(Method::PUT, "/api/admin/prices/m-x", Some(json!({ "per_request": -1 }))).await;
    assert_eq!((s, code(&v)), (400, Some("invalid_price")), "{v}");

    // Config prices are bounded at load: $1e9 is the most a rate may be.
    let dir = temp_dir("mb-cfg");
    let cfg = dir.join("bad.toml");
    std::fs::write(&cfg, "[prices.\"m\"]\nper_request = 1e13\n").unwrap();
    let (failed, err) = serve_fails(&cfg, &dir);
    assert!(failed && err.contains("per_request"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Runs `serve` on a config expected to be refused; returns whether it exited
/// with an error (within 20 s) and its stderr.
fn serve_fails(cfg: &std::path::Path, dir: &std::path::Path) -> (bool, String) {
    let mut child = std::process::Command::new(binary())
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(cfg)
        .arg("--data")
        .arg(dir.join("data"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break Some(s);
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut err = String::new();
    let _ = child.stderr.take().unwrap().read_to_string(&mut err);
    (status.is_some_and(|s| !s.success()), err)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_charge_past_i64_settles_clamped_and_never_fails() {
    let ok = Mock::start("ok").await;
    // A group ratio of 10^8 on the largest price allowed: the cost saturates at i64::MAX.
    let extra =
        format!("{STRICT_PRICES}\n[relay]\nretry_base_ms = 5\nretry_max_ms = 20\n\n[groups.huge]\nratio = 100000000\n");
    let gw =
        Gateway::start(&config(&[("ok", &ok.base_url(), "models = [\"m-ok\"]\ngroup = \"default,huge\"")], &extra));
    let (s, v) = gw.admin(Method::PUT, "/api/admin/prices/m-ok", Some(json!({ "per_request": MAX_UNITS }))).await;
    assert_eq!(s, 200, "{v}");
    let uid = new_user(&gw, json!({ "name": "whale", "unlimited": true, "group": "huge" })).await;
    gw.settle().await;
    let key = gw.key(&["--user", "whale"]);
    for _ in 0..3 {
        let body = json!({ "model": "m-ok", "max_tokens": 5, "messages": [{ "role": "user", "content": "hi" }] });
        let resp = gw.post("/v1/chat/completions", &key, &body).send().await.unwrap();
        assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
    }
    let rows = gw.usage_rows(3).await;
    assert_eq!(rows.len(), 3);
    assert!(rows.iter().all(|r| r["cost"] == MAX_UNITS), "each charge clamped to the bound: {rows:?}");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (_, open) = gw.admin(Method::GET, "/api/admin/reservations?state=reserved", None).await;
        if open["total"] == 0 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "reservations left open: {open}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (s, user) = gw.admin(Method::GET, &format!("/api/admin/users/{uid}"), None).await;
    assert_eq!((s, user["used_quota"].as_i64()), (200, Some(3 * MAX_UNITS)), "{user}");
    let (s, jobs) = gw.admin(Method::GET, "/api/admin/jobs?state=dead", None).await;
    assert_eq!((s, jobs["total"].as_i64()), (200, Some(0)), "{jobs}");
}

/// Sends raw bytes and returns what came back within `wait`.
fn raw_exchange(url: &str, request: &[u8], wait: Duration) -> String {
    let addr = url.trim_start_matches("http://").trim_end_matches('/');
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(wait)).unwrap();
    s.write_all(request).unwrap();
    let mut buf = vec![0u8; 4096];
    let n = s.read(&mut buf).unwrap_or(0);
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn admin_authenticates_before_reading_the_body() {
    let gw = Gateway::start(&config(&[], ""));
    for path in ["/api/admin/users", "/api/admin/codes", "/api/redeem", "/api/admin/users/1/topup"] {
        let req = format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"a\""
        );
        let started = std::time::Instant::now();
        let answer = raw_exchange(&gw.url, req.as_bytes(), Duration::from_secs(5));
        assert!(answer.starts_with("HTTP/1.1 401"), "{path}: answered at once without the body: {answer:?}");
        assert!(started.elapsed() < Duration::from_secs(3), "{path}: {:?}", started.elapsed());
    }
    // Authenticated: malformed JSON and wrong types are JSON 400s, a huge body a JSON 413.
    let bad = gw
        .http
        .post(format!("{}/api/admin/users", gw.url))
        .bearer_auth(&gw.admin_key)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    let v: Value = bad.json().await.unwrap();
    assert_eq!(code(&v), Some("invalid_body"), "{v}");
    let (s, v) = gw.admin(Method::POST, "/api/admin/users", Some(json!({ "name": 5 }))).await;
    assert_eq!((s, code(&v)), (400, Some("invalid_body")), "{v}");
    let huge = format!("{{\"name\":\"{}\"}}", "x".repeat(2 << 20));
    let big = gw
        .http
        .post(format!("{}/api/admin/users", gw.url))
        .bearer_auth(&gw.admin_key)
        .header("content-type", "application/json")
        .body(huge)
        .send()
        .await
        .unwrap();
    assert_eq!(big.status(), 413);
    let v: Value = big.json().await.unwrap();
    assert!(v["error"]["code"].is_string(), "{v}");
}

#[tokio::test(flavor = "multi_thread")]
async fn channel_urls_are_redacted_and_kept_off_link_local() {
    let gw = Gateway::start(&config(&[], ""));
    let spec = |url: &str| json!({ "name": "creds", "type": "openai", "base_url": url, "keys": ["sk-upstream-secret"], "models": ["m-c"] });
    let (s, ch) =
        gw.admin(Method::POST, "/api/admin/channels", Some(spec("http://user:password@127.0.0.1:9/v1"))).await;
    assert_eq!(s, 201, "{ch}");
    let shown = "http://user:***@127.0.0.1:9/v1";
    assert_eq!(ch["base_url"], shown, "{ch}");
    let id = ch["id"].as_i64().unwrap();
    let (_, got) = gw.admin(Method::GET, &format!("/api/admin/channels/{id}"), None).await;
    assert_eq!(got["base_url"], shown, "{got}");
    let (_, list) = gw.admin(Method::GET, "/api/admin/channels", None).await;
    assert!(!list.to_string().contains("password"), "{list}");
    let (s, patched) =
        gw.admin(Method::PATCH, &format!("/api/admin/channels/{id}"), Some(json!({ "weight": 3 }))).await;
    assert_eq!((s, patched["base_url"].as_str()), (200, Some(shown)), "{patched}");
    let (s, tested) = gw.admin(Method::POST, &format!("/api/admin/channels/{id}/test"), None).await;
    assert_eq!(s, 200, "{tested}");
    assert!(!tested.to_string().contains("password"), "{tested}");
    let (ok, out, err) = gw.cli(&["channel", "list", "--json"]);
    assert!(ok, "{err}");
    assert!(!out.contains("password") && out.contains("user:***@"), "{out}");
    let (ok, out, _) = gw.cli(&["channel", "list"]);
    assert!(ok && !out.contains("password"), "{out}");

    // Link-local and metadata addresses are refused; loopback and private ones are fine.
    for url in ["http://169.254.169.254/latest", "http://[fe80::1]/v1", "http://[fd00:ec2::254]/", "http://2852039166/"]
    {
        let (s, v) = gw.admin(Method::POST, "/api/admin/channels", Some(spec(url))).await;
        assert_eq!((s, code(&v)), (400, Some("invalid_channel")), "{url}: {v}");
        assert!(v["error"]["message"].as_str().unwrap().contains("link-local"), "{v}");
        let (s, v) =
            gw.admin(Method::PATCH, &format!("/api/admin/channels/{id}"), Some(json!({ "base_url": url }))).await;
        assert_eq!((s, code(&v)), (400, Some("invalid_channel")), "{url}: {v}");
    }
    let (s, v) = gw
        .admin(
            Method::POST,
            "/api/admin/channels",
            Some(json!({ "name": "lan", "type": "openai",
            "base_url": "http://10.1.2.3:8000/v1", "keys": ["k"], "models": ["m-l"] })),
        )
        .await;
    assert_eq!(s, 201, "{v}");

    // A config-file channel on a metadata address stops the load, naming the channel…
    let dir = temp_dir("mb-ll");
    let cfg = dir.join("ll.toml");
    let channel = "\n[[channels]]\nname = \"imds\"\ntype = \"openai\"\nbase_url = \"http://169.254.169.254/v1\"\nkeys = [\"k\"]\nmodels = [\"m\"]\n";
    std::fs::write(&cfg, channel).unwrap();
    let (failed, err) = serve_fails(&cfg, &dir);
    assert!(failed && err.contains("imds") && err.contains("link-local"), "{err}");
    // …unless the setting allows it.
    let allowed = Gateway::start(&format!("[relay]\nallow_link_local_upstreams = true\n{channel}"));
    let (s, list) = allowed.admin(Method::GET, "/api/admin/channels", None).await;
    assert_eq!((s, list["total"].as_i64()), (200, Some(1)), "{list}");
    let _ = std::fs::remove_dir_all(&dir);
}
