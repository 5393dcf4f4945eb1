#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test
//! The dashboards and alerts in `infra/`: promtool checks and unit-tests the
//! rules, every metric they name is one a real gateway exports, and a real
//! Prometheus started by `infra/stack.sh` scrapes the gateway, counts what it
//! was sent, evaluates every alert without error and runs every dashboard query.
//!
//! promtool and prometheus come from Debian's `prometheus` package (`.ci/run`
//! installs it); without them the tests that need them are skipped, unless `CI=true`.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use oblivious_e2e::gateway::{config, json_of, repo_root, temp_dir};
use oblivious_e2e::mock::Behavior;
use oblivious_e2e::{Gateway, Mock};
use serde_json::{json, Value};

const METRICS: &str = "[metrics]\nlisten = \"127.0.0.1:0\"\n";

/// Whether promtool and prometheus are installed; without them a test is
/// skipped (returns false), except in CI, where it fails.
fn prometheus_installed(test: &str) -> bool {
    let missing: Vec<&str> = ["promtool", "prometheus"]
        .into_iter()
        .filter(|tool| !Command::new(tool).arg("--version").output().is_ok_and(|o| o.status.success()))
        .collect();
    if missing.is_empty() {
        return true;
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "{missing:?} not installed, and CI=true: .ci/run installs Debian's prometheus package"
    );
    eprintln!("skipping {test}: {missing:?} not installed (apt-get install prometheus)");
    false
}

/// `infra/check.sh ARGS` from the repository's root: (success, stdout, stderr).
fn check_sh(args: &[&str]) -> (bool, String, String) {
    let out = Command::new("bash")
        .arg(repo_root().join("infra/check.sh"))
        .args(args)
        .current_dir(repo_root())
        .output()
        .expect("run infra/check.sh");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The metric names the dashboard and the alerts use (`infra/check.sh --names`).
fn referenced_names() -> Vec<String> {
    let (ok, out, err) = check_sh(&["--names"]);
    assert!(ok, "infra/check.sh --names failed: {err}");
    let names: Vec<String> = out.lines().map(str::to_string).collect();
    assert!(names.len() >= 20 && names.iter().all(|n| !n.is_empty() && !n.contains(' ')), "{out}");
    names
}

/// The metric names a Prometheus text exposition holds: sample names, and the
/// families its `# TYPE` lines declare.
fn exposed_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            names.extend(rest.split_whitespace().next().map(str::to_string));
        } else if !line.starts_with('#') && !line.trim().is_empty() {
            names.extend(line.split(['{', ' ']).next().map(str::to_string));
        }
    }
    names
}

/// Whether `name` is exported: as a sample or family, or (a histogram's name) as its `_bucket` series.
fn is_exposed(name: &str, exposed: &BTreeSet<String>) -> bool {
    exposed.contains(name) || exposed.contains(&format!("{name}_bucket"))
}

fn metrics_url(gw: &Gateway) -> String {
    gw.metrics_url.clone().expect("the gateway printed no `Metrics on http://…/metrics` line")
}

#[test]
fn rules_and_dashboard_check() {
    if !prometheus_installed("rules_and_dashboard_check") {
        return;
    }
    let (ok, out, err) = check_sh(&[]);
    assert!(ok, "infra/check.sh failed:\n{out}\n{err}");
    for expected in ["valid prometheus config file syntax", "Unit Testing:", "every alert tested firing and quiet"] {
        assert!(out.contains(expected), "{expected:?} not in infra/check.sh's output:\n{out}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_and_alerts_name_only_exported_metrics() {
    let (good, bad, dead) = (Mock::start("good").await, Mock::start("bad").await, Mock::start("dead").await);
    bad.set(Behavior::Fail(500));
    dead.set(Behavior::Fail(500));
    let extra = format!(
        "{METRICS}
[relay]
retry_base_ms = 5
retry_max_ms = 20
channel_failure_threshold = 2

[billing]
sweep_interval_seconds = 1

[alerts]
thresholds_percent = [90]

[prices.\"m-*\"]
input = 1000
output = 1000

[rate_limits.models.\"m-limited\"]
rpm = 1
"
    );
    let gw = Gateway::start(&config(
        &[
            ("good", &good.base_url(), "models = [\"m-ok\", \"m-flaky\", \"m-limited\"]"),
            ("bad", &bad.base_url(), "models = [\"m-flaky\"]\npriority = 10"),
            ("dead", &dead.base_url(), "models = [\"m-down\"]"),
        ],
        &extra,
    ));
    let key = gw.key(&[]);
    let chat = |model: &str| json!({ "model": model, "max_tokens": 4, "messages": [{ "role": "user", "content": "hi there" }] });
    let status = |resp: reqwest::Response| resp.status().as_u16();

    // Answered; answered after retries and a failover (bad → good); failed on
    // every attempt (5xx answer, `dead` auto-disabled, m-down left without a channel); rate-limited.
    assert_eq!(status(gw.post("/v1/chat/completions", &key, &chat("m-ok")).send().await.unwrap()), 200);
    assert_eq!(status(gw.post("/v1/chat/completions", &key, &chat("m-flaky")).send().await.unwrap()), 200);
    let failed = status(gw.post("/v1/chat/completions", &key, &chat("m-down")).send().await.unwrap());
    assert!(failed >= 500, "m-down answered {failed}");
    assert_eq!(status(gw.post("/v1/chat/completions", &key, &chat("m-limited")).send().await.unwrap()), 200);
    assert_eq!(status(gw.post("/v1/chat/completions", &key, &chat("m-limited")).send().await.unwrap()), 429);
    // A user whose balance falls under 90% of its grant raises a balance alert.
    let (code, user) =
        gw.admin(reqwest::Method::POST, "/api/admin/users", Some(json!({ "name": "erin", "quota": 100_000 }))).await;
    assert!((200..300).contains(&code), "{user}");
    let erin = gw.key(&["--user", "erin"]);
    assert_eq!(status(gw.post("/v1/chat/completions", &erin, &chat("m-ok")).send().await.unwrap()), 200);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, alerts) = gw.admin(reqwest::Method::GET, "/api/admin/alerts", None).await;
        if alerts["data"].as_array().is_some_and(|a| !a.is_empty()) {
            break;
        }
        assert!(Instant::now() < deadline, "no balance alert raised: {alerts}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Some series appear a moment later (the usage consumer, the sweeper's first pass): scrape until all are there.
    let names = referenced_names();
    let url = metrics_url(&gw);
    let deadline = Instant::now() + Duration::from_secs(20);
    let (missing, exposed) = loop {
        let text = gw.http.get(&url).send().await.expect("scrape").text().await.expect("text");
        let exposed = exposed_names(&text);
        let missing: Vec<&String> = names.iter().filter(|n| *n != "up" && !is_exposed(n, &exposed)).collect();
        if missing.is_empty() || Instant::now() > deadline {
            break (missing.into_iter().cloned().collect::<Vec<_>>(), exposed);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert!(
        missing.is_empty(),
        "the dashboard or the alerts use metrics the gateway does not export: {missing:?}\nexported: {exposed:?}"
    );
}

/// A Prometheus started by `infra/stack.sh`, stopped by its pid when dropped.
struct Prometheus {
    pid: u32,
    url: String,
    dir: PathBuf,
}

impl Prometheus {
    /// Starts Prometheus on a free port, scraping `target` every second.
    fn start(target: &str) -> Prometheus {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let dir = temp_dir("prometheus");
        let out = Command::new("bash")
            .arg(repo_root().join("infra/stack.sh"))
            .args(["start", target])
            .env("PROM_PORT", port.to_string())
            .env("PROM_DIR", &dir)
            .env("SCRAPE_INTERVAL", "1s")
            .output()
            .expect("run infra/stack.sh");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let field = |name: &str| stdout.split_whitespace().find_map(|w| w.strip_prefix(name)).map(str::to_string);
        let (Some(pid), Some(url)) = (field("pid="), field("url=")) else {
            let _ = std::fs::remove_dir_all(&dir);
            panic!("infra/stack.sh failed: {stdout}\n{}", String::from_utf8_lossy(&out.stderr));
        };
        let prom = Prometheus { pid: pid.parse().expect("pid"), url, dir };
        assert!(out.status.success() && prom.url == format!("http://127.0.0.1:{port}"), "{stdout}");
        prom
    }

    /// Runs an instant query; the API's whole answer (`status` is `success` or `error`).
    async fn query(&self, http: &reqwest::Client, q: &str) -> Value {
        json_of(http.get(format!("{}/api/v1/query", self.url)).query(&[("query", q)])).await
    }

    /// The first value of a query's answer.
    async fn value(&self, http: &reqwest::Client, q: &str) -> Option<f64> {
        let v = self.query(http, q).await;
        assert_eq!(v["status"], "success", "{q}: {v}");
        v["data"]["result"][0]["value"][1].as_str()?.parse().ok()
    }

    /// Waits until `q`'s first value is `want`; returns the last value seen.
    async fn wait_for(&self, http: &reqwest::Client, q: &str, want: f64, within: Duration) -> Option<f64> {
        let deadline = Instant::now() + within;
        loop {
            let got = self.value(http, q).await;
            if got == Some(want) || Instant::now() > deadline {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    fn alive(&self) -> bool {
        // A zombie (exited, not yet reaped by whoever adopted it) counts as gone.
        std::fs::read_to_string(format!("/proc/{}/stat", self.pid))
            .is_ok_and(|s| s.rsplit(')').next().and_then(|r| r.split_whitespace().next()) != Some("Z"))
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.pid.to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.alive() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        if self.alive() {
            let _ = Command::new("kill").args(["-KILL", &self.pid.to_string()]).status();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The dashboard's queries (panel targets), with its variables as Grafana would fill them in.
fn dashboard_queries() -> Vec<(String, String)> {
    let dash: Value =
        serde_json::from_str(&std::fs::read_to_string(repo_root().join("infra/grafana/oblivious.json")).unwrap())
            .unwrap();
    let mut panels: Vec<&Value> = Vec::new();
    for p in dash["panels"].as_array().unwrap() {
        panels.push(p);
        panels.extend(p["panels"].as_array().into_iter().flatten());
    }
    let mut out = Vec::new();
    for p in panels {
        for t in p["targets"].as_array().into_iter().flatten() {
            let expr = t["expr"]
                .as_str()
                .unwrap()
                .replace("$__rate_interval", "1m")
                .replace("$__range", "5m")
                .replace("$instance", ".*")
                .replace("$job", "oblivious");
            out.push((format!("{} {}", p["title"], t["refId"]), expr));
        }
    }
    assert!(out.len() > 30, "{out:?}");
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_the_gateway() {
    if !prometheus_installed("prometheus_scrapes_the_gateway") {
        return;
    }
    const N: usize = 40;
    let mock = Mock::start("a").await;
    let gw = Gateway::start(&config(&[("a", &mock.base_url(), "models = [\"gpt-4o-mini\"]")], METRICS));
    let metrics = metrics_url(&gw);
    let target = metrics.strip_prefix("http://").and_then(|m| m.strip_suffix("/metrics")).expect("http://ADDR/metrics");
    let prom = Prometheus::start(target);
    let http = reqwest::Client::new();

    // Prometheus applies its targets a few seconds after it starts.
    let up = prom.wait_for(&http, "up{job=\"oblivious\"}", 1.0, Duration::from_secs(30)).await;
    assert_eq!(up, Some(1.0), "Prometheus does not scrape {metrics}");

    let key = gw.key(&[]);
    let body = json!({ "model": "gpt-4o-mini", "messages": [{ "role": "user", "content": "hi" }] });
    for _ in 0..N {
        assert_eq!(gw.post("/v1/chat/completions", &key, &body).send().await.unwrap().status(), 200);
    }
    let q = "sum(oblivious_requests_total{route=\"/v1/chat/completions\"})";
    let got = prom.wait_for(&http, q, N as f64, Duration::from_secs(30)).await;
    assert_eq!(got, Some(N as f64), "{q}");
    // Two more scrapes later it still says N (nothing counted twice).
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(prom.value(&http, q).await, Some(N as f64), "{q}");
    assert_eq!(mock.calls(), N);

    // Every alert rule is loaded and evaluates without error on real series; none fires on a healthy gateway.
    let deadline = Instant::now() + Duration::from_secs(20);
    let rules = loop {
        let v = json_of(http.get(format!("{}/api/v1/rules", prom.url))).await;
        let rules: Vec<Value> = v["data"]["groups"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|g| g["rules"].as_array().unwrap().clone())
            .collect();
        if rules.iter().all(|r| r["health"] != "unknown") || Instant::now() > deadline {
            break rules;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let defined =
        std::fs::read_to_string(repo_root().join("infra/prometheus/alerts.yml")).unwrap().matches("- alert:").count();
    assert!(
        rules.len() == defined && rules.iter().all(|r| r["type"] == "alerting"),
        "{defined} alerts defined, loaded: {rules:?}"
    );
    for r in &rules {
        assert_eq!(r["health"], "ok", "{r}");
    }
    let alerts = prom.query(&http, "ALERTS").await;
    assert_eq!(alerts["data"]["result"], json!([]), "alerts on a healthy gateway: {alerts}");

    // Every dashboard query runs; say which found no series (features this traffic did not use).
    let mut empty = Vec::new();
    for (panel, expr) in dashboard_queries() {
        let v = prom.query(&http, &expr).await;
        assert_eq!(v["status"], "success", "{panel}: {expr}: {v}");
        if v["data"]["result"].as_array().is_none_or(|r| r.is_empty()) {
            empty.push(panel);
        }
    }
    eprintln!("dashboard queries without series after {N} plain requests: {empty:?}");
    for panel in ["\"Requests/s\" \"A\"", "\"Requests/s by route and format\" \"A\"", "\"Resident memory\" \"A\""] {
        assert!(!empty.iter().any(|p| p == panel), "{panel} found no series");
    }
}
