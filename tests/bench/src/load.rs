//! Load from `oha`, a real HTTP load generator, read from its JSON summary.

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

/// How to drive one measurement.
pub enum Shape {
    /// As fast as `concurrency` connections go, for `seconds`.
    Closed { concurrency: u32, seconds: u32 },
    /// `rate` requests a second, `count` of them, latency corrected (the time a
    /// request waited for its slot counts).
    Open { rate: u32, count: u32 },
    /// `count` requests over `concurrency` connections.
    Count { concurrency: u32, count: u32 },
}

/// What one run measured. Times in milliseconds.
#[derive(Clone, Debug, Default)]
pub struct Run {
    pub requests: u64,
    pub ok: u64,
    pub rps: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub first_byte_p50: f64,
    pub first_byte_p99: f64,
}

/// The `oha` binary: `OHA`, else the project's tool folder, else `PATH`.
pub fn oha() -> PathBuf {
    if let Ok(p) = std::env::var("OHA") {
        return PathBuf::from(p);
    }
    let local = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.tools/bin/oha");
    if local.exists() {
        local
    } else {
        PathBuf::from("oha")
    }
}

/// POSTs `body` to `url` with `key` in the shape given; `oha` runs on `core` when given.
pub fn run(url: &str, key: &str, body: &str, shape: &Shape, core: Option<usize>) -> Result<Run, String> {
    let mut cmd = match core {
        Some(c) => {
            let mut t = Command::new("taskset");
            t.arg("-c").arg(c.to_string()).arg(oha());
            t
        }
        None => Command::new(oha()),
    };
    cmd.args(["--no-tui", "--output-format", "json", "-m", "POST", "-T", "application/json"]);
    cmd.arg("-H").arg(format!("authorization: Bearer {key}")).arg("-d").arg(body);
    match shape {
        Shape::Closed { concurrency, seconds } => {
            // Requests under way at the deadline finish and count (`-w`), so
            // the upstream's call count can be compared exactly.
            cmd.args(["-c", &concurrency.to_string(), "-z", &format!("{seconds}s"), "-w"]);
        }
        Shape::Open { rate, count } => {
            cmd.args(["-c", "8", "-q", &rate.to_string(), "-n", &count.to_string(), "--latency-correction"]);
        }
        Shape::Count { concurrency, count } => {
            cmd.args(["-c", &concurrency.to_string(), "-n", &count.to_string()]);
        }
    }
    let out = cmd.arg(url).output().map_err(|e| format!("cannot run oha ({}): {e}", oha().display()))?;
    if !out.status.success() {
        return Err(format!("oha failed: {}", String::from_utf8_lossy(&out.stderr)));
    }
    let v: Value = serde_json::from_slice(&out.stdout).map_err(|e| format!("oha's JSON: {e}"))?;
    Ok(parse(&v))
}

fn parse(v: &Value) -> Run {
    let ms = |section: &str, p: &str| v[section][p].as_f64().unwrap_or(f64::NAN) * 1000.0;
    let codes = v["statusCodeDistribution"].as_object();
    let count = |f: &dyn Fn(&str) -> bool| -> u64 {
        codes.into_iter().flatten().filter(|(k, _)| f(k)).filter_map(|(_, n)| n.as_u64()).sum()
    };
    let errors: u64 = v["errorDistribution"].as_object().into_iter().flatten().filter_map(|(_, n)| n.as_u64()).sum();
    Run {
        requests: count(&|_| true) + errors,
        ok: count(&|k| k == "200"),
        rps: v["summary"]["requestsPerSec"].as_f64().unwrap_or(0.0),
        p50: ms("latencyPercentiles", "p50"),
        p90: ms("latencyPercentiles", "p90"),
        p99: ms("latencyPercentiles", "p99"),
        first_byte_p50: ms("firstBytePercentiles", "p50"),
        first_byte_p99: ms("firstBytePercentiles", "p99"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_ohas_summary() {
        let v = serde_json::json!({
            "summary": { "requestsPerSec": 1234.5 },
            "latencyPercentiles": { "p50": 0.001, "p90": 0.002, "p99": 0.004 },
            "firstBytePercentiles": { "p50": 0.0005, "p99": 0.001 },
            "statusCodeDistribution": { "200": 90, "429": 10 },
            "errorDistribution": { "connection closed": 2 }
        });
        let r = parse(&v);
        assert_eq!((r.requests, r.ok), (102, 90));
        assert_eq!((r.p50, r.p90, r.p99), (1.0, 2.0, 4.0));
        assert_eq!((r.first_byte_p50, r.first_byte_p99), (0.5, 1.0));
        assert_eq!(r.rps, 1234.5);
    }
}
