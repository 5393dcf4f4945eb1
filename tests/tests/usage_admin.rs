#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test
//! Usage records, the model list, config reload, and the admin API.

use std::collections::HashSet;

use futures_util::future::join_all;
use oblivious_e2e::gateway::config;
use oblivious_e2e::{Gateway, Mock};
use serde_json::{json, Value};

fn chat(model: &str, stream: bool) -> Value {
    json!({ "model": model, "stream": stream, "messages": [{ "role": "user", "content": "one two three" }] })
}

#[tokio::test(flavor = "multi_thread")]
async fn every_request_leaves_exactly_one_usage_row() {
    let mock = Mock::start("a").await;
    let gw = Gateway::start(&config(
        &[("a", &mock.base_url(), "keys = [\"sk-1\", \"sk-2\"]\nmodels = [\"gpt-4o-mini\", \"text-embedding-3-small\"]\nmodel_mapping = { \"fast\" = \"gpt-4o-mini\" }")],
        "",
    ));
    let key = gw.key(&[]);
    let mut sent = Vec::new();
    for i in 0..30 {
        let req = match i % 3 {
            0 => gw.post("/v1/chat/completions", &key, &chat("gpt-4o-mini", false)),
            1 => gw.post("/v1/chat/completions", &key, &chat("fast", true)),
            _ => gw.post("/v1/embeddings", &key, &json!({ "model": "text-embedding-3-small", "input": ["a b", "c"] })),
        };
        sent.push(req.send());
    }
    let mut ids = HashSet::new();
    for resp in join_all(sent).await {
        let resp = resp.unwrap();
        assert_eq!(resp.status(), 200);
        ids.insert(resp.headers()["x-request-id"].to_str().unwrap().to_string());
        resp.bytes().await.unwrap();
    }
    assert_eq!(ids.len(), 30);
    let rows = gw.usage_rows(30).await;
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let rows_later = gw.usage_rows(30).await;
    assert_eq!(rows.len(), 30);
    assert_eq!(rows_later.len(), 30, "no row is written twice");
    let row_ids: HashSet<String> = rows.iter().map(|r| r["request_id"].as_str().unwrap().to_string()).collect();
    assert_eq!(row_ids, ids, "usage rows are keyed by the x-request-id the client saw");
    for r in &rows {
        assert_eq!(r["status"], 200);
        assert_eq!(r["channel_id"], 1);
        assert!(r["key_index"] == 0 || r["key_index"] == 1);
        assert!(r["latency_ms"].as_i64().unwrap() >= 0);
        assert!(r["ttfb_ms"].is_i64());
        match r["endpoint"].as_str().unwrap() {
            "/v1/embeddings" => {
                assert_eq!((r["prompt_tokens"].as_i64(), r["completion_tokens"].as_i64()), (Some(3), Some(0)))
            }
            _ => assert_eq!((r["prompt_tokens"].as_i64(), r["completion_tokens"].as_i64()), (Some(13), Some(4)), "{r}"),
        }
        if r["requested_model"] == "fast" {
            assert_eq!(r["upstream_model"], "gpt-4o-mini");
            assert_eq!(r["stream"], true);
        }
    }
    assert!(mock.bodies().iter().all(|b| b["model"] != "fast"), "aliases are mapped before the upstream sees them");
    let filtered: Value = gw.get_json("/api/admin/usage?model=fast&per_page=5&page=2", &gw.admin_key).await;
    assert_eq!(filtered["total"], 10);
    assert_eq!(filtered["data"].as_array().unwrap().len(), 5);
}

#[tokio::test(flavor = "multi_thread")]
async fn models_list_what_the_key_may_use_and_config_edits_apply_live() {
    let mock = Mock::start("a").await;
    let gw =
        Gateway::start(&config(&[("a", &mock.base_url(), "models = [\"gpt-4o-mini\", \"gpt-4o\", \"o1-*\"]")], ""));
    let all = gw.key(&[]);
    let narrow = gw.key(&["--models", "gpt-4o-mini"]);
    let ids = |v: Value| {
        v["data"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap().to_string()).collect::<Vec<_>>()
    };
    let list: Value = gw.get_json("/v1/models", &all).await;
    assert_eq!(list["object"], "list");
    assert_eq!(ids(list), ["gpt-4o", "gpt-4o-mini"]);
    let list: Value = gw.get_json("/v1/models", &narrow).await;
    assert_eq!(ids(list), ["gpt-4o-mini"]);
    let one: Value = gw.get_json("/v1/models/gpt-4o-mini", &narrow).await;
    assert_eq!(one["id"], "gpt-4o-mini");
    let resp = gw.get("/v1/models/gpt-4o", &narrow).send().await.unwrap();
    assert_eq!(resp.status(), 404);
    assert_eq!(resp.json::<Value>().await.unwrap()["error"]["code"], "model_not_found");

    // Edit the file: a new model appears without a restart.
    let b = Mock::start("b").await;
    let text = config(
        &[
            ("a", &mock.base_url(), "models = [\"gpt-4o-mini\", \"gpt-4o\", \"o1-*\"]"),
            ("b", &b.base_url(), "models = [\"new-model\"]"),
        ],
        "",
    );
    std::fs::write(&gw.config, text).unwrap();
    gw.settle().await;
    let list: Value = gw.get_json("/v1/models", &all).await;
    assert!(ids(list).contains(&"new-model".to_string()));
    let resp = gw.post("/v1/chat/completions", &all, &chat("new-model", false)).send().await.unwrap();
    assert_eq!(resp.json::<Value>().await.unwrap()["served_by"], "b");

    // A broken edit is refused and the running config stays.
    std::fs::write(&gw.config, "[[channels]]\nname = \"x\"\n").unwrap();
    gw.settle().await;
    let resp = gw.post("/v1/chat/completions", &all, &chat("new-model", false)).send().await.unwrap();
    assert_eq!(resp.status(), 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn admin_api_manages_everything_and_only_admins_may_use_it() {
    let mock = Mock::start("a").await;
    let gw = Gateway::start(&config(
        &[("a", &mock.base_url(), "models = [\"gpt-4o-mini\"]\ngroup = [\"default\", \"vip\"]")],
        "[groups.vip]\nratio = 0.8\n",
    ));
    let admin = gw.admin_key.clone();
    let api = |method: reqwest::Method, path: &str, body: Option<Value>| {
        let mut req = gw.http.request(method, format!("{}{path}", gw.url)).bearer_auth(&admin);
        if let Some(b) = body {
            req = req.json(&b);
        }
        req
    };
    use reqwest::Method as M;

    let user: Value = gw
        .admin(M::POST, "/api/admin/users", Some(json!({ "name": "alice", "group": "vip", "quota": 100_000 })))
        .await
        .1;
    assert_eq!(user["group"], "vip");
    let uid = user["id"].as_i64().unwrap();
    let bad = api(M::POST, "/api/admin/users", Some(json!({ "name": "bob", "group": "nope" }))).send().await.unwrap();
    assert_eq!(bad.status(), 400);
    let dup = api(M::POST, "/api/admin/users", Some(json!({ "name": "alice" }))).send().await.unwrap();
    assert_eq!(dup.status(), 409);

    let tok: Value = gw
        .admin(M::POST, "/api/admin/tokens", Some(json!({ "name": "alice-key", "user_id": uid, "quota": 1_000_000 })))
        .await
        .1;
    let alice_key = tok["key"].as_str().unwrap().to_string();
    assert!(alice_key.starts_with("sk-") && alice_key.len() >= 43);
    assert!(tok.get("key_hash").is_none());
    let tid = tok["id"].as_i64().unwrap();
    let fetched: Value = gw.admin(M::GET, &format!("/api/admin/tokens/{tid}"), None).await.1;
    assert!(fetched.get("key").is_none(), "the key is shown once");
    assert_eq!(fetched["remaining_quota"], 1_000_000);

    // Not an admin.
    let resp = gw.get("/api/admin/users", &alice_key).send().await.unwrap();
    assert_eq!(resp.status(), 403);
    assert_eq!(resp.json::<Value>().await.unwrap()["error"]["code"], "admin_only");
    assert_eq!(gw.get("/api/admin/users", "sk-nope").send().await.unwrap().status(), 401);

    let resp = gw.post("/v1/chat/completions", &alice_key, &chat("gpt-4o-mini", false)).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let patched: Value = gw
        .admin(M::PATCH, &format!("/api/admin/tokens/{tid}"), Some(json!({ "status": "disabled", "models": ["x"] })))
        .await
        .1;
    assert_eq!(patched["status"], "disabled");
    assert_eq!(
        gw.post("/v1/chat/completions", &alice_key, &chat("gpt-4o-mini", false)).send().await.unwrap().status(),
        403
    );
    api(M::PATCH, &format!("/api/admin/tokens/{tid}"), Some(json!({ "status": "normal", "models": [] })))
        .send()
        .await
        .unwrap();
    assert_eq!(gw.admin(M::DELETE, &format!("/api/admin/tokens/{tid}"), None).await.0, 200);
    assert_eq!(
        gw.post("/v1/chat/completions", &alice_key, &chat("gpt-4o-mini", false)).send().await.unwrap().status(),
        401
    );
    let list: Value = gw.admin(M::GET, &format!("/api/admin/tokens?user_id={uid}"), None).await.1;
    assert_eq!(list["total"], 0, "deleted keys are hidden by default");
    let list: Value = gw.admin(M::GET, &format!("/api/admin/tokens?user_id={uid}&include_deleted=true"), None).await.1;
    assert_eq!(list["data"][0]["status"], "deleted");
    api(M::POST, &format!("/api/admin/tokens/{tid}/restore"), None).send().await.unwrap();
    assert_eq!(
        gw.post("/v1/chat/completions", &alice_key, &chat("gpt-4o-mini", false)).send().await.unwrap().status(),
        200
    );

    // Channels: config ones are read-only except their status; API ones are editable.
    let created = api(M::POST, "/api/admin/channels", Some(json!({ "name": "extra", "type": "openai", "base_url": mock.base_url(), "keys": ["sk-secret-upstream-key"], "models": ["extra-model"], "groups": ["vip"] })))
        .send().await.unwrap();
    assert_eq!(created.status(), 201);
    let created: Value = created.json().await.unwrap();
    assert_ne!(created["keys"][0], "sk-secret-upstream-key", "keys are never shown");
    let cid = created["id"].as_i64().unwrap();
    assert_eq!(
        gw.post("/v1/chat/completions", &alice_key, &chat("extra-model", false)).send().await.unwrap().status(),
        200
    );
    let renamed: Value =
        gw.admin(M::PATCH, &format!("/api/admin/channels/{cid}"), Some(json!({ "models": ["other-model"] }))).await.1;
    assert_eq!(renamed["models"], json!(["other-model"]));
    assert_eq!(gw.admin(M::PATCH, "/api/admin/channels/1", Some(json!({ "weight": 9 }))).await.0, 409);
    let off: Value = gw.admin(M::PATCH, "/api/admin/channels/1", Some(json!({ "status": "disabled" }))).await.1;
    assert_eq!(off["status"], "disabled");
    assert_eq!(
        gw.post("/v1/chat/completions", &alice_key, &chat("gpt-4o-mini", false)).send().await.unwrap().status(),
        503
    );
    api(M::PATCH, "/api/admin/channels/1", Some(json!({ "status": "enabled" }))).send().await.unwrap();
    assert_eq!(
        gw.admin(
            M::POST,
            "/api/admin/channels",
            Some(json!({ "name": "x", "type": "openai", "base_url": "ftp://x", "models": ["m"] }))
        )
        .await
        .0,
        400
    );
    assert_eq!(gw.admin(M::DELETE, &format!("/api/admin/channels/{cid}"), None).await.0, 200);
    assert_eq!(gw.admin(M::DELETE, "/api/admin/channels/1", None).await.0, 409);
    assert_eq!(gw.admin(M::GET, "/api/admin/channels/999", None).await.0, 404);

    // Groups and prices.
    assert_eq!(gw.admin(M::PUT, "/api/admin/groups/gold", Some(json!({ "ratio_bp": 5000 }))).await.0, 200);
    assert_eq!(
        gw.admin(
            M::PUT,
            "/api/admin/prices/gpt-4o-mini",
            Some(json!({ "input_per_m": 1_000_000_000, "output_per_m": 0 }))
        )
        .await
        .0,
        200
    );
    let groups: Value = gw.admin(M::GET, "/api/admin/groups", None).await.1;
    assert_eq!(groups["total"], 3);
    let unknown =
        api(M::PATCH, &format!("/api/admin/users/{uid}"), Some(json!({ "group": "zzz" }))).send().await.unwrap();
    assert_eq!(unknown.status(), 400);
    let resp = gw.post("/v1/chat/completions", &alice_key, &chat("gpt-4o-mini", false)).send().await.unwrap();
    let rid = resp.headers()["x-request-id"].to_str().unwrap().to_string();
    assert_eq!(resp.status(), 200);
    let rows = gw.usage_rows(5).await;
    let row = rows.iter().find(|r| r["request_id"] == rid.as_str()).expect("row");
    // 13 prompt tokens at 1000 units each, at alice's vip ratio 0.8.
    assert_eq!(row["cost"], 10_400);
    let bad_price =
        api(M::PUT, "/api/admin/prices/x", Some(json!({ "input_per_m": -1, "output_per_m": 0 }))).send().await.unwrap();
    assert_eq!(bad_price.status(), 400);
    let malformed =
        gw.http.post(format!("{}/api/admin/users", gw.url)).bearer_auth(&admin).body("{").send().await.unwrap();
    assert_eq!(malformed.status(), 400);
    assert_eq!(malformed.json::<Value>().await.unwrap()["error"]["code"], "invalid_body");
    let page: Value = gw.admin(M::GET, "/api/admin/users?per_page=1&page=2", None).await.1;
    assert_eq!((page["total"].as_i64(), page["data"][0]["name"].as_str()), (Some(2), Some("alice")));
}
