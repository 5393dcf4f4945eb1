//! The figures of a run, the table and summary printed, and their JSON.

use serde_json::{json, Value};

use crate::load::Run;

/// Targets (this machine, gateway on one core).
const OPEN_P50_MS: f64 = 0.35;
const OPEN_P99_MS: f64 = 0.8;
const CLOSED_RPS: f64 = 15_000.0;
const CPU_MS: f64 = 0.06;
const FIRST_BYTE_MS: f64 = 0.3;
const RSS_MIB: f64 = 32.0;

pub struct Figures {
    pub closed_direct: Run,
    pub closed_gw: Run,
    pub open_direct: Run,
    pub open_gw: Run,
    pub stream_direct: Run,
    pub stream_gw: Run,
    /// One stream at a time through the gateway, 200 and 2 chunks long: the
    /// first byte must not wait for the rest.
    pub lone_long_gw: Run,
    pub lone_short_gw: Run,
    pub cpu_ms_per_request: f64,
    pub rss_mib: f64,
    pub peak_rss_mib: f64,
    pub gateway_requests: u64,
    pub gateway_ok: u64,
    pub upstream_calls: u64,
    pub usage_rows: u64,
}

impl Figures {
    pub fn open_overhead(&self) -> (f64, f64) {
        (self.open_gw.p50 - self.open_direct.p50, self.open_gw.p99 - self.open_direct.p99)
    }

    pub fn first_byte_overhead(&self) -> f64 {
        self.stream_gw.first_byte_p50 - self.stream_direct.first_byte_p50
    }

    /// How much later a long stream's first byte comes than a short one's.
    pub fn held_back_ms(&self) -> f64 {
        self.lone_long_gw.first_byte_p50 - self.lone_short_gw.first_byte_p50
    }

    /// Holding events back would delay the first byte by the stream's length
    /// (here ~200 chunk pauses); allow two pauses of jitter.
    pub fn nothing_held_back(&self) -> bool {
        self.held_back_ms() <= crate::CHUNK_PAUSE.as_secs_f64() * 1000.0 * 2.0
    }

    /// Every request through the gateway answered, with exactly one upstream call each.
    pub fn one_call_each(&self) -> bool {
        self.gateway_ok == self.gateway_requests && self.upstream_calls == self.gateway_requests
    }
}

#[derive(Default)]
pub struct Soak {
    pub rate: u32,
    pub requests: u64,
    pub errors: u64,
    pub p99_max: f64,
    /// Resident memory after each minute, MiB.
    pub rss_mib: Vec<f64>,
}

impl Soak {
    /// Growth from the end of the first minute to the end, percent.
    pub fn growth_percent(&self) -> f64 {
        match (self.rss_mib.first(), self.rss_mib.last()) {
            (Some(a), Some(b)) => pct(*a, *b),
            _ => 0.0,
        }
    }
}

fn mark(met: bool) -> &'static str {
    if met {
        "met"
    } else {
        "NOT met"
    }
}

fn row(out: &mut String, cells: [&str; 5]) {
    out.push_str(&format!(
        "| {:<44} | {:>10} | {:>10} | {:>10} | {:<18} |\n",
        cells[0], cells[1], cells[2], cells[3], cells[4]
    ));
}

pub fn table(title: &str, f: &Figures) -> String {
    let mut out = format!("\n### {title}\n\n");
    row(&mut out, ["", "direct", "gateway", "overhead", "target"]);
    out.push_str("|---|---:|---:|---:|---|\n");
    let ms = |v: f64| format!("{v:.3}");
    let plus = |v: f64| format!("{v:+.3}");
    let (c, g) = (&f.closed_direct, &f.closed_gw);
    row(
        &mut out,
        [
            "closed loop c=32: req/s",
            &format!("{:.0}", c.rps),
            &format!("{:.0}", g.rps),
            "",
            &format!("≥ {CLOSED_RPS:.0}: {}", mark(g.rps >= CLOSED_RPS)),
        ],
    );
    for (name, d, w) in [("p50", c.p50, g.p50), ("p90", c.p90, g.p90), ("p99", c.p99, g.p99)] {
        row(&mut out, [&format!("closed loop c=32: {name} ms"), &ms(d), &ms(w), &plus(w - d), ""]);
    }
    let (o50, o99) = f.open_overhead();
    row(
        &mut out,
        [
            "open loop 50 req/s: p50 ms",
            &ms(f.open_direct.p50),
            &ms(f.open_gw.p50),
            &plus(o50),
            &format!("≤ {OPEN_P50_MS}: {}", mark(o50 <= OPEN_P50_MS)),
        ],
    );
    row(
        &mut out,
        [
            "open loop 50 req/s: p99 ms",
            &ms(f.open_direct.p99),
            &ms(f.open_gw.p99),
            &plus(o99),
            &format!("≤ {OPEN_P99_MS}: {}", mark(o99 <= OPEN_P99_MS)),
        ],
    );
    let fb = f.first_byte_overhead();
    let (sd, sg) = (&f.stream_direct, &f.stream_gw);
    row(
        &mut out,
        [
            "16 streams × 200 chunks: first byte p50 ms",
            &ms(sd.first_byte_p50),
            &ms(sg.first_byte_p50),
            &plus(fb),
            &format!("≤ {FIRST_BYTE_MS}: {}", mark(fb <= FIRST_BYTE_MS)),
        ],
    );
    row(
        &mut out,
        [
            "16 streams × 200 chunks: first byte p99 ms",
            &ms(sd.first_byte_p99),
            &ms(sg.first_byte_p99),
            &plus(sg.first_byte_p99 - sd.first_byte_p99),
            "",
        ],
    );
    row(&mut out, ["16 streams × 200 chunks: last byte p50 ms", &ms(sd.p50), &ms(sg.p50), &plus(sg.p50 - sd.p50), ""]);
    row(&mut out, ["16 streams × 200 chunks: last byte p99 ms", &ms(sd.p99), &ms(sg.p99), &plus(sg.p99 - sd.p99), ""]);
    row(
        &mut out,
        [
            "lone stream first byte p50: 2 vs 200 chunks",
            &ms(f.lone_short_gw.first_byte_p50),
            &ms(f.lone_long_gw.first_byte_p50),
            &plus(f.held_back_ms()),
            &format!("none held: {}", mark(f.nothing_held_back())),
        ],
    );
    row(
        &mut out,
        [
            "CPU ms per request (closed loop, settled)",
            "",
            &format!("{:.4}", f.cpu_ms_per_request),
            "",
            &format!("≤ {CPU_MS}: {}", mark(f.cpu_ms_per_request <= CPU_MS)),
        ],
    );
    row(
        &mut out,
        [
            "RSS MiB: peak under load / at the end",
            "",
            &format!("{:.1} / {:.1}", f.peak_rss_mib, f.rss_mib),
            "",
            &format!("≤ {RSS_MIB}: {}", mark(f.peak_rss_mib <= RSS_MIB)),
        ],
    );
    row(
        &mut out,
        [
            "upstream calls / requests (all answered 200)",
            "",
            &format!("{} / {}", f.upstream_calls, f.gateway_requests),
            "",
            &format!("one each: {}", mark(f.one_call_each())),
        ],
    );
    out.push_str(&format!(
        "\n{} requests through the gateway, {} answered 200, {} usage rows, no reservation left open.\n",
        f.gateway_requests, f.gateway_ok, f.usage_rows
    ));
    out
}

/// Closed-loop rounds alternating small, large, small, large…: index 0 is the
/// small store's gateway, 1 the large one's.
#[derive(Default)]
pub struct Alternating {
    pub rps: [Vec<f64>; 2],
    pub cpu_ms: [Vec<f64>; 2],
    pub one_call_each: bool,
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// How far `b` is from `a`, percent of `a` (0 when `a` is 0).
fn pct(a: f64, b: f64) -> f64 {
    if a.abs() > f64::EPSILON {
        (b - a) / a * 100.0
    } else {
        0.0
    }
}

impl Alternating {
    /// Median req/s and CPU ms per request, small then large.
    pub fn medians(&self) -> [(f64, f64); 2] {
        [0, 1].map(|i| (median(&self.rps[i]), median(&self.cpu_ms[i])))
    }
}

/// The large store against the small one. Throughput and CPU come from the
/// alternating rounds (the two one-off runs minutes apart differ by up to
/// ±20% on a shared machine with nothing changed); the open-loop overhead
/// from the two full runs.
pub fn compare(small: &Figures, big: &Figures, rounds: &Alternating) -> String {
    let [(s_rps, s_cpu), (b_rps, b_cpu)] = rounds.medians();
    let (s50, _) = small.open_overhead();
    let (b50, _) = big.open_overhead();
    let within = pct(s_rps, b_rps) >= -10.0 && pct(s_cpu, b_cpu) <= 10.0;
    let list = |v: &[f64], digits: usize| v.iter().map(|x| format!("{x:.digits$}")).collect::<Vec<_>>().join(" ");
    format!(
        "\nlarge vs small store, {} alternating closed-loop rounds (req/s small: {}; large: {}): \
         median req/s {:.0} vs {:.0} ({:+.1}%), CPU per request {:.4} vs {:.4} ms ({:+.1}%) \
         (within 10%: {}); open-loop p50 overhead {:+.3} ms ({:+.1}%).\n",
        rounds.rps[0].len(),
        list(&rounds.rps[0], 0),
        list(&rounds.rps[1], 0),
        s_rps,
        b_rps,
        pct(s_rps, b_rps),
        s_cpu,
        b_cpu,
        pct(s_cpu, b_cpu),
        mark(within),
        b50 - s50,
        pct(s50, b50)
    )
}

pub fn alternating_json(rounds: &Alternating) -> Value {
    let [(s_rps, s_cpu), (b_rps, b_cpu)] = rounds.medians();
    json!({ "small": { "rps": rounds.rps[0], "cpu_ms": rounds.cpu_ms[0], "median_rps": s_rps, "median_cpu_ms": s_cpu },
            "large": { "rps": rounds.rps[1], "cpu_ms": rounds.cpu_ms[1], "median_rps": b_rps, "median_cpu_ms": b_cpu },
            "one_call_each": rounds.one_call_each })
}

pub fn soak(s: &Soak) -> String {
    let rss: Vec<String> = s.rss_mib.iter().map(|r| format!("{r:.1}")).collect();
    format!(
        "\n### soak: {} req/s for {} minute(s)\n\n{} requests, {} not answered 200, worst minute p99 {:.3} ms; \
         RSS per minute (MiB) {}: growth after the first minute {:+.1}% (target under 5%: {}).\n",
        s.rate,
        s.rss_mib.len(),
        s.requests,
        s.errors,
        s.p99_max,
        rss.join(" "),
        s.growth_percent(),
        mark(s.growth_percent() < 5.0)
    )
}

pub fn summary(f: &Figures) -> String {
    let (o50, o99) = f.open_overhead();
    format!(
        "\nsummary: overhead p50 {o50:+.3} ms / p99 {o99:+.3} ms at 50 req/s; {:.0} req/s at c=32 on one core ({:.0} direct); \
         {:.4} CPU-ms/request; first byte {:+.3} ms; peak RSS {:.1} MiB; {} upstream call(s) per request.\n",
        f.closed_gw.rps,
        f.closed_direct.rps,
        f.cpu_ms_per_request,
        f.first_byte_overhead(),
        f.peak_rss_mib,
        if f.one_call_each() { "exactly one" } else { "NOT exactly one" }
    )
}

fn run_json(r: &Run) -> Value {
    json!({
        "requests": r.requests, "ok": r.ok, "rps": r.rps,
        "p50_ms": r.p50, "p90_ms": r.p90, "p99_ms": r.p99,
        "first_byte_p50_ms": r.first_byte_p50, "first_byte_p99_ms": r.first_byte_p99,
    })
}

pub fn json(f: &Figures) -> Value {
    let (o50, o99) = f.open_overhead();
    json!({
        "closed": { "direct": run_json(&f.closed_direct), "gateway": run_json(&f.closed_gw) },
        "open": { "direct": run_json(&f.open_direct), "gateway": run_json(&f.open_gw),
                  "overhead_p50_ms": o50, "overhead_p99_ms": o99 },
        "stream": { "direct": run_json(&f.stream_direct), "gateway": run_json(&f.stream_gw),
                    "lone_200_chunks": run_json(&f.lone_long_gw), "lone_2_chunks": run_json(&f.lone_short_gw),
                    "held_back_ms": f.held_back_ms(),
                    "first_byte_overhead_p50_ms": f.first_byte_overhead() },
        "cpu_ms_per_request": f.cpu_ms_per_request,
        "rss_mib": f.rss_mib, "peak_rss_mib": f.peak_rss_mib,
        "gateway_requests": f.gateway_requests, "gateway_ok": f.gateway_ok,
        "upstream_calls": f.upstream_calls, "usage_rows": f.usage_rows,
    })
}

pub fn soak_json(s: &Soak) -> Value {
    json!({ "rate": s.rate, "requests": s.requests, "errors": s.errors, "p99_max_ms": s.p99_max,
            "rss_mib_per_minute": s.rss_mib, "growth_percent": s.growth_percent() })
}
