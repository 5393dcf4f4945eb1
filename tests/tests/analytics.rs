#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test
//! Usage analytics agree with the raw usage rows; CSV export streams.

use std::collections::BTreeMap;

use futures_util::StreamExt;
use oblivious_e2e::gateway::config;
use oblivious_e2e::mock::Behavior;
use oblivious_e2e::{Gateway, Mock};
use serde_json::{json, Value};

fn chat(model: &str) -> Value {
    json!({ "model": model, "max_tokens": 4, "messages": [{ "role": "user", "content": "hi there" }] })
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[i64], p: usize) -> i64 {
    let rank = (sorted.len() * p).div_ceil(100).max(1);
    sorted[rank - 1]
}

#[tokio::test(flavor = "multi_thread")]
async fn stats_match_the_raw_rows() {
    let (ok, bad) = (Mock::start("ok").await, Mock::start("bad").await);
    bad.set(Behavior::Fail(503));
    let gw = Gateway::start(&config(
        &[("ok", &ok.base_url(), "models = [\"m-a\", \"m-b\"]"), ("bad", &bad.base_url(), "models = [\"m-c\"]")],
        "[relay]\nretry_base_ms = 1\nretry_max_ms = 2\nchannel_failure_threshold = 1000\n[prices.\"m-*\"]\ninput = 1\noutput = 2\n",
    ));
    let (k1, k2) = (gw.key(&[]), gw.key(&[]));
    for i in 0..24 {
        let key = if i % 3 == 0 { &k2 } else { &k1 };
        let model = ["m-a", "m-b", "m-a", "m-c"][i % 4];
        gw.post("/v1/chat/completions", key, &chat(model)).send().await.unwrap().bytes().await.unwrap();
    }
    let rows = gw.usage_rows(24).await;
    assert_eq!(rows.len(), 24);

    let stats: Value = gw.get_json("/api/admin/usage/stats?group_by=model&interval=day", &gw.admin_key).await;
    let mut by_model: BTreeMap<String, Vec<&Value>> = BTreeMap::new();
    for r in &rows {
        by_model.entry(r["requested_model"].as_str().unwrap().to_string()).or_default().push(r);
    }
    let series = stats["data"].as_array().unwrap();
    assert_eq!(series.len(), by_model.len());
    for s in series {
        let raw = &by_model[s["key"].as_str().unwrap()];
        let sum = |f: &str| raw.iter().map(|r| r[f].as_i64().unwrap()).sum::<i64>();
        let ok_count = raw.iter().filter(|r| r["status"].as_i64().unwrap() < 400).count() as i64;
        assert_eq!(s["requests"], raw.len() as i64);
        assert_eq!(s["successes"], ok_count);
        assert_eq!(s["errors"], raw.len() as i64 - ok_count);
        assert_eq!(s["prompt_tokens"], sum("prompt_tokens"));
        assert_eq!(s["completion_tokens"], sum("completion_tokens"));
        assert_eq!(s["cost"], sum("cost"));
        let mut lat: Vec<i64> = raw.iter().map(|r| r["latency_ms"].as_i64().unwrap()).collect();
        lat.sort();
        assert_eq!(
            (s["latency_p50"].as_i64(), s["latency_p95"].as_i64(), s["latency_p99"].as_i64()),
            (Some(percentile(&lat, 50)), Some(percentile(&lat, 95)), Some(percentile(&lat, 99)))
        );
        let rate = s["success_rate"].as_f64().unwrap();
        assert!((rate - ok_count as f64 / raw.len() as f64).abs() < 1e-9);
        assert!(s["bucket"].as_str().unwrap().len() == 10, "a day bucket: {s}");
    }
    assert_eq!(
        by_model["m-c"].iter().filter(|r| r["status"] == 503).count(),
        6,
        "the failing model's requests are errors"
    );
    assert_eq!(stats["totals"]["requests"], 24);
    assert_eq!(stats["totals"]["cost"], rows.iter().map(|r| r["cost"].as_i64().unwrap()).sum::<i64>());

    let by_token: Value = gw.get_json("/api/admin/usage/stats?group_by=token", &gw.admin_key).await;
    let counts: Vec<i64> =
        by_token["data"].as_array().unwrap().iter().map(|s| s["requests"].as_i64().unwrap()).collect();
    assert_eq!(counts, [16, 8]);
    let hourly: Value = gw.get_json("/api/admin/usage/stats?interval=hour&group_by=channel", &gw.admin_key).await;
    assert!(hourly["data"][0]["bucket"].as_str().unwrap().ends_with(":00:00Z"));

    // A key's owner sees their own usage only (here both keys are the admin's).
    let own: Value = gw.get_json("/api/usage/stats", &k2).await;
    assert_eq!(own["totals"]["requests"], 24);
    let bad_query = gw.get("/api/admin/usage/stats?group_by=color", &gw.admin_key).send().await.unwrap();
    assert_eq!(bad_query.status(), 400);
}

#[tokio::test(flavor = "multi_thread")]
async fn csv_export_of_100k_rows_streams_in_flat_memory() {
    let mock = Mock::start("a").await;
    let gw = Gateway::start(&config(&[("a", &mock.base_url(), "models = [\"m\"]")], ""));
    // 100k rows with a 300-byte error each: ~45 MB of CSV.
    let db = gw.data_dir().join("oblivious.db");
    let seed = format!(
        "import sqlite3\nc = sqlite3.connect({db:?}, timeout=30)\nc.executemany('INSERT INTO usage_log (request_id, created_at, endpoint, user_id, token_id, requested_model, upstream_model, prompt_tokens, completion_tokens, total_tokens, usage_estimated, cost, latency_ms, status, stream, retries, error) VALUES (?, ?, \"/v1/chat/completions\", 1, 1, \"m\", \"m\", 10, 5, 15, 0, 7, 3, 200, 0, 0, ?)', ((f'seed-{{i:06d}}', 1700000000000 + i, 'x, \"quoted\" ' * 25) for i in range(100000)))\nc.commit()\n",
        db = db.display().to_string()
    );
    let out = std::process::Command::new("python3").arg("-c").arg(&seed).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let before = gw.peak_rss_kib();
    let resp = gw.get("/api/admin/usage.csv", &gw.admin_key).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers()["content-type"].to_str().unwrap().starts_with("text/csv"));
    let mut body = resp.bytes_stream();
    let (mut bytes, mut lines, mut first_line) = (0usize, 0usize, String::new());
    while let Some(chunk) = body.next().await {
        let chunk = chunk.unwrap();
        if first_line.is_empty() {
            first_line = String::from_utf8_lossy(&chunk).lines().next().unwrap_or_default().to_string();
        }
        bytes += chunk.len();
        lines += chunk.iter().filter(|b| **b == b'\n').count();
    }
    let after = gw.peak_rss_kib();
    assert!(first_line.starts_with("request_id,created_at,"));
    assert_eq!(lines, 100_001, "a header and every row");
    assert!(bytes > 40_000_000, "{bytes} bytes");
    let growth_mib = (after.saturating_sub(before)) / 1024;
    assert!(growth_mib < 16, "peak RSS grew {growth_mib} MiB exporting {} MiB", bytes / (1 << 20));

    // The caller's own export is scoped to their rows.
    let key = gw.key(&[]);
    let own = gw.get("/api/usage.csv", &key).send().await.unwrap().text().await.unwrap();
    assert_eq!(own.lines().count(), 100_001, "all seeded rows are the admin's (user 1)");
    let other_user = gw
        .http
        .post(format!("{}/api/admin/users", gw.url))
        .bearer_auth(&gw.admin_key)
        .json(&json!({ "name": "zed" }))
        .send()
        .await
        .unwrap();
    assert_eq!(other_user.status(), 201);
    let zed = gw.key(&["--user", "zed"]);
    let none = gw.get("/api/usage.csv", &zed).send().await.unwrap().text().await.unwrap();
    assert_eq!(none.lines().count(), 1, "only the header");
}
