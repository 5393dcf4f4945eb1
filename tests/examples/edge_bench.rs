//! The edge benchmark: first-byte and total time of the same chat request
//! sent straight to the mock upstream and through the worker in workerd
//! (`wrangler dev --local`), and what the worker adds; plus the worker's start.
//! Needs what the tests need (the emulator, Redis, the Upstash REST server —
//! `.ci/run` starts them — and the built worker): run with
//! `cargo run --release -p oblivious-e2e --example edge_bench [-- REQUESTS]`.
#![allow(clippy::unwrap_used)] // a benchmark: a failed unwrap is a failed run

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use oblivious_e2e::aws;
use oblivious_e2e::edge::Worker;
use oblivious_e2e::gateway::{upstash_token, upstash_url};
use oblivious_e2e::Mock;
use oblivious_ports::{Clock, Hot, Ledger, Reservation, Store, TokenFilter};
use serde_json::{json, Value};

/// First byte and whole answer of one request.
async fn timed(req: reqwest::RequestBuilder) -> (Duration, Duration) {
    let t = Instant::now();
    let resp = req.send().await.unwrap();
    assert!(resp.status().is_success(), "{}", resp.status());
    let mut body = resp.bytes_stream();
    let mut first = None;
    while let Some(chunk) = body.next().await {
        chunk.unwrap();
        first.get_or_insert_with(|| t.elapsed());
    }
    (first.unwrap_or_else(|| t.elapsed()), t.elapsed())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// (p50, p90) in ms.
fn percentiles(mut v: Vec<Duration>) -> (f64, f64) {
    v.sort();
    let at = |q: f64| ms(v[((v.len() - 1) as f64 * q).round() as usize]);
    (at(0.5), at(0.9))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let n: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(200);
    let mock = Mock::start("up").await;
    let config = format!(
        "[prices.\"m-*\"]\ninput = 1000\noutput = 1000\n\n[[channels]]\nname = \"up\"\ntype = \"openai\"\nbase_url = \"{}\"\nkeys = [\"sk-up\"]\nmodels = [\"m-*\"]\n",
        mock.base_url()
    );
    let st = aws::stack(&config).await;
    let (uid, key) = aws::customer(&st, 1_000_000_000_000).await;
    let started = Instant::now();
    let w = Worker::start(&st, &[]).await;
    println!("worker start (wrangler + workerd + wasm + first state build): {:.0} ms", ms(started.elapsed()));
    let body = |stream: bool| -> Value {
        json!({ "model": "m-1", "stream": stream, "max_tokens": 16, "messages": [{ "role": "user", "content": "hi" }] })
    };
    let direct = reqwest::Client::new();
    println!("{n} sequential requests each way, after 20 warm-up ones (ms, p50 and p90)");
    for stream in [false, true] {
        for _ in 0..20 {
            timed(w.post("/v1/chat/completions", &key, &body(stream))).await;
        }
        let (mut df, mut dt, mut wf, mut wt) = (vec![], vec![], vec![], vec![]);
        for _ in 0..n {
            let to_mock = direct.post(format!("{}/chat/completions", mock.base_url())).bearer_auth("sk-up");
            let (f, t) = timed(to_mock.json(&body(stream))).await;
            df.push(f);
            dt.push(t);
            let (f, t) = timed(w.post("/v1/chat/completions", &key, &body(stream))).await;
            wf.push(f);
            wt.push(t);
        }
        let kind = if stream { "stream" } else { "non-stream" };
        let (df, dt, wf, wt) = (percentiles(df), percentiles(dt), percentiles(wf), percentiles(wt));
        println!("{kind:>10} direct   first byte {:7.2} {:7.2}   total {:7.2} {:7.2}", df.0, df.1, dt.0, dt.1);
        println!("{kind:>10} worker   first byte {:7.2} {:7.2}   total {:7.2} {:7.2}", wf.0, wf.1, wt.0, wt.1);
        println!(
            "{kind:>10} added    first byte {:7.2} {:7.2}   total {:7.2} {:7.2}",
            wf.0 - df.0,
            wf.1 - df.1,
            wt.0 - dt.0,
            wt.1 - dt.1
        );
    }

    // What the emulated stores cost per call, measured natively: the worker
    // makes these calls on every request (a rate-limit window in Upstash, the
    // reservation in DynamoDB), so they bound what workerd itself adds.
    let clock = oblivious_native::SystemClock;
    let hot = oblivious_upstash::UpstashHot::new(
        oblivious_native::HttpUpstream::new().unwrap(),
        upstash_url(),
        upstash_token(),
        format!("{}bench:", st.prefix),
    );
    let token = st.store.tokens(
        TokenFilter { user_id: Some(uid), ..Default::default() },
        oblivious_ports::Page { offset: 0, limit: 1 },
    );
    let token = token.await.unwrap().items.remove(0);
    let (mut windows, mut holds) = (vec![], vec![]);
    for i in 0..n {
        let t = Instant::now();
        hot.window_hit("bench", 60_000, i64::MAX / 2, 1, clock.now_ms()).await.unwrap();
        windows.push(t.elapsed());
        let hold = Reservation {
            request_id: format!("req_bench_{i}"),
            token_id: token.id,
            user_id: uid,
            amount: 1,
            created_at: clock.now_ms(),
            state: String::new(),
            charged: None,
        };
        let t = Instant::now();
        st.store.reserve(hold).await.unwrap().unwrap();
        holds.push(t.elapsed());
    }
    let (w, h) = (percentiles(windows), percentiles(holds));
    println!("store calls, native: Upstash window (EVALSHA) {:.2} {:.2}   DynamoDB reservation (TransactWriteItems on moto) {:.2} {:.2}", w.0, w.1, h.0, h.1);
}
