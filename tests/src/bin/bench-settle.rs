//! Settle throughput: how many requests per second go through the whole money
//! path (rate-limit windows and reservation on admission, usage event,
//! settlement) with the SQLite store and Redis hot state.
//!
//! `cargo build --release -p oblivious -p oblivious-e2e && target/release/bench-settle [REQUESTS] [CONCURRENCY]`
//! Needs a Redis (`OBLIVIOUS_TEST_REDIS`, default redis://127.0.0.1:6390/).

#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark: failing loudly is right

use std::time::{Duration, Instant};

use futures_util::stream::{self, StreamExt};
use oblivious_e2e::gateway::{config, redis_hot};
use oblivious_e2e::{Gateway, Mock};
use serde_json::{json, Value};

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(20_000);
    let concurrency: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(32);
    if std::env::var("OBLIVIOUS_BIN").is_err() {
        let release = oblivious_e2e::gateway::repo_root().join("target/release/oblivious");
        std::env::set_var("OBLIVIOUS_BIN", release);
    }
    let mock = Mock::start("bench").await;
    let extra = format!(
        "{}\n[prices.\"m\"]\ninput = 1\noutput = 2\n[rate_limits.groups.default]\nuser = {{ rpm = 100000000, tpm = 1000000000, concurrency = 10000 }}\n",
        redis_hot()
    );
    let gw = Gateway::start(&config(&[("bench", &mock.base_url(), "models = [\"m\"]")], &extra));
    let user = gw
        .http
        .post(format!("{}/api/admin/users", gw.url))
        .bearer_auth(&gw.admin_key)
        .json(&json!({ "name": "bench", "quota": 1_000_000_000_000i64 }))
        .send()
        .await
        .unwrap();
    assert_eq!(user.status(), 201);
    let key = gw.key(&["--user", "bench", "--quota", "1000000000000"]);
    let body = json!({ "model": "m", "max_tokens": 16, "messages": [{ "role": "user", "content": "hello there" }] });

    let started = Instant::now();
    let ok = stream::iter(0..n)
        .map(|_| async {
            gw.post("/v1/chat/completions", &key, &body)
                .send()
                .await
                .map(|r| r.status().as_u16() == 200)
                .unwrap_or(false)
        })
        .buffer_unordered(concurrency)
        .filter(|ok| futures_util::future::ready(*ok))
        .count()
        .await;
    let answered = started.elapsed();
    // Settled = no reservation left open and every usage row written.
    loop {
        let open: Value = gw.get_json("/api/admin/reservations?state=reserved&per_page=1", &gw.admin_key).await;
        let rows: Value = gw.get_json("/api/admin/usage?per_page=1", &gw.admin_key).await;
        if open["total"] == 0 && rows["total"].as_u64() == Some(n as u64) {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(600), "settling did not finish");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let settled = started.elapsed();
    let stats: Value = gw.get_json("/api/admin/usage/stats", &gw.admin_key).await;
    println!("requests           {n} (concurrency {concurrency}), {ok} answered 200");
    println!("answered in        {:.2} s  → {:.0} req/s", answered.as_secs_f64(), n as f64 / answered.as_secs_f64());
    println!(
        "all settled in     {:.2} s  → {:.0} settled req/s",
        settled.as_secs_f64(),
        n as f64 / settled.as_secs_f64()
    );
    println!("charged            {} units over {} usage rows", stats["totals"]["cost"], stats["totals"]["requests"]);
    println!("gateway peak RSS   {} MiB", gw.peak_rss_kib() / 1024);
}
