//! The gateway benchmark: how much latency and CPU Oblivious adds on top of a
//! direct call to the upstream. Starts the project's mock upstream (in this
//! process) and the release gateway with billing, usage logging and rate
//! limits on, pins the gateway to core 0 and the mock and `oha` to core 1, and
//! measures closed loop, open loop, streaming, CPU, memory and upstream calls,
//! direct and through the gateway. `tests/bench/run.sh` builds and runs it.

#![allow(clippy::print_stdout)] // a report on standard output is the point

mod gateway;
mod load;
mod report;

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use futures_util::stream::{self, StreamExt, TryStreamExt};
use oblivious_mock::{Mock, StreamShape};

use gateway::Gateway;
use load::{Run, Shape};
use report::{Alternating, Figures, Soak};

#[derive(Parser)]
#[command(name = "bench", about = "Oblivious gateway benchmark (direct vs through the gateway)")]
struct Args {
    /// Also measure with a large store (100,000 keys, 10,000 channels, 1,000
    /// priced models) and compare with the small one.
    #[arg(long)]
    scale: bool,
    /// Then hold a steady load for this many seconds (600 for the 10-minute soak).
    #[arg(long, default_value_t = 0)]
    soak: u64,
    /// Requests per second during the soak.
    #[arg(long, default_value_t = 1000)]
    soak_rate: u32,
    /// Seconds of each closed-loop run.
    #[arg(long, default_value_t = 8)]
    seconds: u32,
    /// Add a tokens-per-minute limit (every prompt is then counted with tiktoken).
    #[arg(long)]
    tpm: bool,
    /// Serve Prometheus metrics (`[metrics] listen`), to measure what recording them costs.
    #[arg(long)]
    metrics: bool,
    /// Write the figures here as JSON (for comparing runs).
    #[arg(long)]
    json: Option<PathBuf>,
    /// The gateway binary.
    #[arg(long, default_value = "target/release/oblivious")]
    bin: PathBuf,
}

const MODEL: &str = "m";
const PLAIN: &str =
    r#"{"model":"m","max_tokens":16,"messages":[{"role":"user","content":"Say hello in one short sentence."}]}"#;
const STREAMED: &str = r#"{"model":"m","max_tokens":16,"stream":true,"messages":[{"role":"user","content":"Say hello in one short sentence."}]}"#;
/// Streams: 16 connections, 8 streams each; chunks 1 ms apart, like tokens.
const STREAMS: Shape = Shape::Count { concurrency: 16, count: 128 };
const CHUNK_PAUSE: Duration = Duration::from_millis(1);

/// Where things run: the gateway on one core, everything else on the other.
#[derive(Clone, Copy)]
struct Cores {
    gateway: Option<usize>,
    load: Option<usize>,
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let two = std::thread::available_parallelism().map(|n| n.get() >= 2).unwrap_or(false);
    let taskset = std::process::Command::new("taskset").arg("-V").output().is_ok();
    let cores =
        if two && taskset { Cores { gateway: Some(0), load: Some(1) } } else { Cores { gateway: None, load: None } };
    if let Some(c) = cores.load {
        // This process holds the mock upstream: keep it off the gateway's core.
        let _ = std::process::Command::new("taskset")
            .args(["-a", "-p", "-c", &c.to_string(), &std::process::id().to_string()])
            .output();
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    match runtime.block_on(bench(args, cores)) {
        Ok(true) => std::process::ExitCode::SUCCESS,
        Ok(false) => std::process::ExitCode::from(1),
        Err(e) => {
            eprintln!("bench: {e}");
            std::process::ExitCode::from(2)
        }
    }
}

/// Runs everything asked; true when every check held (targets are reported, not enforced).
async fn bench(args: Args, cores: Cores) -> Result<bool, String> {
    let mock = Mock::start("bench").await;
    mock.set_recording(false);
    eprintln!("mock upstream on {}; gateway {}", mock.base_url(), args.bin.display());
    let (small, small_gw) = measure(&args, &mock, cores, None).await?;
    let mut out = report::table("small store (1 key, 1 channel, 1 price)", &small);
    let mut json = serde_json::json!({ "small": report::json(&small) });
    let mut ok = small.one_call_each();
    if args.scale {
        let scale = Scale { keys: 100_000, channels: 10_000, prices: 1_000 };
        let (big, big_gw) = measure(&args, &mock, cores, Some(scale)).await?;
        out.push_str(&report::table("large store (100,000 keys, 10,000 channels, 1,000 prices)", &big));
        let rounds = alternate(&mock, cores, [&small_gw, &big_gw]).await?;
        out.push_str(&report::compare(&small, &big, &rounds));
        json["large"] = report::json(&big);
        json["alternating"] = report::alternating_json(&rounds);
        ok &= big.one_call_each() && rounds.one_call_each;
    }
    drop(small_gw);
    if args.soak > 0 {
        let soak = soak(&args, &mock, cores).await?;
        out.push_str(&report::soak(&soak));
        json["soak"] = report::soak_json(&soak);
        ok &= soak.errors == 0;
    }
    out.push_str(&report::summary(&small));
    println!("{out}");
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&json).unwrap_or_default())
            .map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(ok)
}

#[derive(Clone, Copy)]
struct Scale {
    keys: usize,
    channels: usize,
    prices: usize,
}

/// The gateway's config: one channel to the mock, the model priced, request
/// rate limits on the default group (high enough never to refuse, so every
/// request still counts its windows), plus the large store's channels and
/// prices. `--tpm` adds a tokens-per-minute limit, which makes every prompt
/// counted with tiktoken; `--metrics` serves Prometheus metrics (recording every figure).
fn config(mock: &Mock, scale: Option<Scale>, tpm: bool, metrics: bool) -> String {
    let tpm = if tpm { ", tpm = 10000000000" } else { "" };
    let mut s = String::from(if metrics { "[metrics]\nlisten = \"127.0.0.1:0\"\n\n" } else { "" });
    s += &format!(
        "[prices.\"{MODEL}\"]\ninput = 1\noutput = 2\n\n\
         [rate_limits.groups.default]\nuser = {{ rpm = 100000000, concurrency = 100000{tpm} }}\n\n\
         [[channels]]\nname = \"bench\"\ntype = \"openai\"\nbase_url = \"{}\"\nmodels = [\"{MODEL}\"]\n",
        mock.base_url()
    );
    if let Some(sc) = scale {
        for i in 0..sc.prices.saturating_sub(1) {
            s.push_str(&format!("\n[prices.\"scale-{i}\"]\ninput = 1\noutput = 2\n"));
        }
        for i in 0..sc.channels {
            s.push_str(&format!(
                "\n[[channels]]\nname = \"scale-{i}\"\ntype = \"openai\"\nbase_url = \"{}\"\nmodels = [\"scale-{}\"]\n",
                mock.base_url(),
                i % sc.prices.max(1)
            ));
        }
    }
    s
}

/// Adds `n` keys over 100 users through the admin API.
async fn seed_keys(gw: &Gateway, n: usize) -> Result<(), String> {
    let users = 100.min(n.max(1));
    let mut ids = Vec::with_capacity(users);
    for u in 0..users {
        ids.push(gw.user_and_key(&format!("seed-{u}")).await?.0);
    }
    let ids = &ids;
    stream::iter(0..n.saturating_sub(users))
        .map(|i| async move { gw.key(ids[i % ids.len()], &format!("seed-{i}")).await })
        .buffer_unordered(32)
        .try_for_each(|_| async { Ok(()) })
        .await
}

/// A gateway under load and the key the load uses.
struct Target {
    gw: Gateway,
    key: String,
}

/// Closed-loop rounds that alternate between the small and the large store's
/// gateways (both running, one loaded at a time), so that drift on a shared
/// machine hits both alike; `Alternating` keeps each round's figures.
async fn alternate(mock: &Mock, cores: Cores, targets: [&Target; 2]) -> Result<Alternating, String> {
    eprintln!("alternating closed loops, small / large store, {ROUNDS} rounds of {ROUND_SECONDS} s…");
    let mut rounds = Alternating { one_call_each: true, ..Alternating::default() };
    for _ in 0..ROUNDS {
        for (i, t) in targets.iter().enumerate() {
            let calls = mock.calls();
            let (r, cpu_ms) = closed_loop(&t.gw, &t.key, ROUND_SECONDS, cores.load).await?;
            rounds.one_call_each &= r.ok == r.requests && (mock.calls() - calls) as u64 == r.requests;
            rounds.rps[i].push(r.rps);
            rounds.cpu_ms[i].push(cpu_ms);
        }
    }
    Ok(rounds)
}

const ROUNDS: usize = 3;
const ROUND_SECONDS: u32 = 4;

/// A closed loop (c=32) through `gw` for `seconds`, and the gateway's CPU
/// milliseconds per request until every one of them is settled.
async fn closed_loop(gw: &Gateway, key: &str, seconds: u32, core: Option<usize>) -> Result<(Run, f64), String> {
    let cpu_before = gw.cpu_ms();
    let r = load::run(&gw.chat_url(), key, PLAIN, &Shape::Closed { concurrency: 32, seconds }, core)?;
    gw.settled().await?;
    let cpu_ms_per_request = (gw.cpu_ms() - cpu_before) / r.requests.max(1) as f64;
    Ok((r, cpu_ms_per_request))
}

async fn measure(args: &Args, mock: &Mock, cores: Cores, scale: Option<Scale>) -> Result<(Figures, Target), String> {
    mock.set_stream(StreamShape::default());
    let gw = Gateway::start(&args.bin, &config(mock, scale, args.tpm, args.metrics), cores.gateway)?;
    if let Some(sc) = scale {
        eprintln!("seeding {} keys…", sc.keys);
        seed_keys(&gw, sc.keys).await?;
    }
    let (_, key) = gw.user_and_key("bench").await?;
    let direct = format!("{}/chat/completions", mock.base_url());
    let through = gw.chat_url();
    let run = |url: &str, key: &str, body: &str, shape: Shape| load::run(url, key, body, &shape, cores.load);
    let calls_before = mock.calls();

    eprintln!("warming up…");
    let warm = run(&through, &key, PLAIN, Shape::Closed { concurrency: 32, seconds: 2 })?;
    gw.settled().await?;
    gw.reset_peak();

    eprintln!("closed loop, c=32, {} s each…", args.seconds);
    let closed = Shape::Closed { concurrency: 32, seconds: args.seconds };
    let closed_direct = run(&direct, "mock", PLAIN, closed)?;
    let (closed_gw, cpu_ms_per_request) = closed_loop(&gw, &key, args.seconds, cores.load).await?;

    eprintln!("open loop, 50 req/s…");
    let open = || Shape::Open { rate: 50, count: 500 };
    let open_direct = run(&direct, "mock", PLAIN, open())?;
    let open_gw = run(&through, &key, PLAIN, open())?;

    eprintln!("streaming, 16 × 200 chunks…");
    let pieces = |n: usize| (0..n).map(|i| format!(" w{i}")).collect::<Vec<_>>();
    mock.set_stream(StreamShape { pieces: pieces(200), interval: CHUNK_PAUSE, ..StreamShape::default() });
    let stream_direct = run(&direct, "mock", STREAMED, STREAMS)?;
    let stream_gw = run(&through, &key, STREAMED, STREAMS)?;
    // Held back? A lone stream's first byte, 200 chunks long and 2 chunks long.
    let lone = || Shape::Count { concurrency: 1, count: 20 };
    let lone_long_gw = run(&through, &key, STREAMED, lone())?;
    mock.set_stream(StreamShape { pieces: pieces(2), interval: CHUNK_PAUSE, ..StreamShape::default() });
    let lone_short_gw = run(&through, &key, STREAMED, lone())?;

    let usage_rows = gw.settled().await?;
    let (rss_mib, peak_rss_mib) = gw.rss_mib();
    let gateway_requests = [&warm, &closed_gw, &open_gw, &stream_gw, &lone_long_gw, &lone_short_gw]
        .iter()
        .map(|r| r.requests)
        .sum::<u64>();
    let gateway_ok =
        [&warm, &closed_gw, &open_gw, &stream_gw, &lone_long_gw, &lone_short_gw].iter().map(|r| r.ok).sum::<u64>();
    let direct_requests = [&closed_direct, &open_direct, &stream_direct].iter().map(|r| r.requests).sum::<u64>();
    let upstream_calls = (mock.calls() - calls_before) as u64 - direct_requests;
    let figures = Figures {
        closed_direct,
        closed_gw,
        open_direct,
        open_gw,
        stream_direct,
        stream_gw,
        lone_long_gw,
        lone_short_gw,
        cpu_ms_per_request,
        rss_mib,
        peak_rss_mib,
        gateway_requests,
        gateway_ok,
        upstream_calls,
        usage_rows,
    };
    Ok((figures, Target { gw, key }))
}

/// Steady open-loop load through the gateway, a minute at a time, reading
/// memory after each minute.
async fn soak(args: &Args, mock: &Mock, cores: Cores) -> Result<Soak, String> {
    mock.set_stream(StreamShape::default());
    let gw = Gateway::start(&args.bin, &config(mock, None, args.tpm, args.metrics), cores.gateway)?;
    let (_, key) = gw.user_and_key("soak").await?;
    let through = gw.chat_url();
    let mut soak = Soak { rate: args.soak_rate, ..Soak::default() };
    let mut left = args.soak;
    while left > 0 {
        let secs = left.min(60);
        left -= secs;
        eprintln!("soak: {} s left…", left + secs);
        let shape = Shape::Open { rate: args.soak_rate, count: (args.soak_rate as u64 * secs) as u32 };
        let r: Run = load::run(&through, &key, PLAIN, &shape, cores.load)?;
        soak.requests += r.requests;
        soak.errors += r.requests - r.ok;
        soak.p99_max = soak.p99_max.max(r.p99);
        soak.rss_mib.push(gw.rss_mib().0);
    }
    gw.settled().await?;
    Ok(soak)
}
