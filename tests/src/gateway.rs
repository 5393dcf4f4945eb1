//! Runs the real `oblivious` binary on 127.0.0.1 with a fresh data directory.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::mock::banner::read_banner;
use serde_json::Value;

/// The `oblivious` binary: `OBLIVIOUS_BIN`, else the workspace's debug build
/// (which `cargo test --workspace` builds, since the binary's package has tests).
pub fn binary() -> PathBuf {
    if let Ok(p) = std::env::var("OBLIVIOUS_BIN") {
        return PathBuf::from(p);
    }
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let bin = target.join("debug/oblivious");
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build -p oblivious` (or the README's test command)",
        bin.display()
    );
    bin
}

/// Sends a request and reads its answer as JSON (any status).
pub async fn json_of(req: reqwest::RequestBuilder) -> Value {
    req.send().await.expect("request").json().await.expect("JSON body")
}

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

static SEQ: AtomicUsize = AtomicUsize::new(0);

pub fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "oblivious-e2e-{}-{}-{tag}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::SeqCst)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

pub struct Gateway {
    pub url: String,
    pub admin_key: String,
    /// The root user's setup link from the first start.
    pub setup_link: Option<String>,
    pub dir: PathBuf,
    pub config: PathBuf,
    /// `/metrics`, when the config serves it on an address of its own (or `main`).
    pub metrics_url: Option<String>,
    launch: Launch,
    child: Child,
    pub http: reqwest::Client,
    /// The first process on a data directory removes it when dropped.
    owns_dir: bool,
}

/// `OBLIVIOUS_TEST_LOG_DIR`: where every gateway of a suite run logs (instead
/// of the test's stderr) and where each API key the tests made is listed
/// (`keys.txt`), so `tests/secrets_in_logs.sh` can show none reached a log.
fn suite_log_dir() -> Option<PathBuf> {
    let dir = PathBuf::from(std::env::var_os("OBLIVIOUS_TEST_LOG_DIR")?);
    std::fs::create_dir_all(&dir).expect("create OBLIVIOUS_TEST_LOG_DIR");
    Some(dir)
}

/// Lists a key the tests made, for the secrets check.
pub fn note_secret(secret: &str) {
    if secret.is_empty() {
        return;
    }
    if let Some(dir) = suite_log_dir() {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new().create(true).append(true).open(dir.join("keys.txt")).expect("keys.txt");
        writeln!(f, "{secret}").expect("write keys.txt");
    }
}

/// How to start a gateway beyond its config: extra `serve` arguments and
/// environment, where its stderr (the log) goes, an open-file limit.
#[derive(Clone, Debug, Default)]
pub struct Launch {
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    /// Appends stderr to this file instead of the test's own stderr.
    pub log_file: Option<PathBuf>,
    /// `ulimit -n` (soft and hard) for the process.
    pub nofile: Option<u32>,
}

/// What a started process reported.
struct Spawned {
    child: Child,
    url: String,
    admin_key: Option<String>,
    setup_link: Option<String>,
    metrics_url: Option<String>,
}

/// Spawns `oblivious serve` and reads its address (and, on a first start, the
/// admin key) from stdout.
fn spawn(dir: &Path, config_path: &Path, launch: &Launch) -> Spawned {
    let mut command = match launch.nofile {
        Some(n) => {
            let mut c = Command::new("bash");
            c.args(["-c", &format!("ulimit -n {n} && exec \"$0\" \"$@\"")]).arg(binary());
            c
        }
        None => Command::new(binary()),
    };
    let suite_log = suite_log_dir()
        .map(|d| d.join(format!("gw-{}-{}.log", std::process::id(), SEQ.fetch_add(1, Ordering::SeqCst))));
    let stderr = match launch.log_file.as_ref().or(suite_log.as_ref()) {
        Some(path) => {
            Stdio::from(std::fs::OpenOptions::new().create(true).append(true).open(path).expect("open the log file"))
        }
        None => Stdio::inherit(),
    };
    // Collected for the secrets check, a suite's logs are at info (every request's line).
    let default_level = if suite_log.is_some() { "info" } else { "warn" };
    let mut child = command
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(config_path)
        .arg("--data")
        .arg(dir.join("data"))
        .args(&launch.args)
        .env("OBLIVIOUS_LOG", std::env::var("OBLIVIOUS_LOG").unwrap_or_else(|_| default_level.into()))
        .envs(launch.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .expect("spawn oblivious");
    let stdout = child.stdout.take().expect("stdout");
    let banner = read_banner(stdout, Instant::now() + Duration::from_secs(30));
    Spawned {
        child,
        url: banner.url.expect("gateway did not report its address"),
        admin_key: banner.admin_key,
        setup_link: banner.setup_link,
        metrics_url: banner.metrics_url,
    }
}

impl Gateway {
    /// Starts the gateway with `config` (TOML) written to its config file.
    pub fn start(config: &str) -> Gateway {
        Gateway::launch(config, Launch::default())
    }

    /// Starts the gateway under an open-file limit of `nofile` (soft and hard).
    pub fn start_limited(config: &str, nofile: Option<u32>) -> Gateway {
        Gateway::launch(config, Launch { nofile, ..Launch::default() })
    }

    /// Starts the gateway as `launch` says.
    pub fn launch(config: &str, launch: Launch) -> Gateway {
        let dir = temp_dir("gw");
        let config_path = dir.join("oblivious.toml");
        std::fs::write(&config_path, config).expect("write config");
        let s = spawn(&dir, &config_path, &launch);
        let http = reqwest::Client::builder().pool_max_idle_per_host(0).build().expect("client");
        let admin_key = s.admin_key.expect("gateway did not print the admin key");
        note_secret(&admin_key);
        Gateway {
            url: s.url,
            setup_link: s.setup_link,
            admin_key,
            metrics_url: s.metrics_url,
            dir: dir.clone(),
            config: config_path,
            child: s.child,
            http,
            owns_dir: true,
            launch,
        }
    }

    /// A second gateway process on the same data directory and config.
    pub fn second(&self) -> Gateway {
        let s = spawn(&self.dir, &self.config, &self.launch);
        let child = s.child;
        Gateway {
            url: s.url,
            setup_link: None,
            metrics_url: s.metrics_url,
            launch: self.launch.clone(),
            admin_key: self.admin_key.clone(),
            dir: self.dir.clone(),
            config: self.config.clone(),
            child,
            http: self.http.clone(),
            owns_dir: false,
        }
    }

    /// Kills the process with SIGKILL (no graceful shutdown, like a crash).
    pub fn crash(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts the gateway again on the same data directory and config file.
    pub fn restart(&mut self) {
        self.crash();
        let s = spawn(&self.dir, &self.config, &self.launch);
        self.child = s.child;
        self.url = s.url;
        self.metrics_url = s.metrics_url;
    }

    /// Sends SIGTERM; returns how long the process took to exit, or `None` if
    /// it was still running after `within`.
    pub fn terminate(&mut self, within: Duration) -> Option<Duration> {
        let start = Instant::now();
        let _ = Command::new("kill").args(["-TERM", &self.pid().to_string()]).status();
        while start.elapsed() < within {
            if let Ok(Some(_)) = self.child.try_wait() {
                return Some(start.elapsed());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Resident memory now (VmRSS), KiB.
    pub fn rss_kib(&self) -> u64 {
        self.status_kib("VmRSS:")
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Peak resident memory of the gateway process (VmHWM), KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        self.status_kib("VmHWM:")
    }

    /// One KiB figure of `/proc/PID/status`.
    fn status_kib(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// Runs the CLI against this gateway's data directory; returns (ok, stdout, stderr).
    pub fn cli(&self, args: &[&str]) -> (bool, String, String) {
        let out = Command::new(binary()).args(args).arg("--data").arg(self.data_dir()).output().expect("run cli");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Runs the CLI with `input` on its stdin.
    pub fn cli_with_stdin(&self, args: &[&str], input: &str) -> (bool, String, String) {
        use std::io::Write;
        let mut child = Command::new(binary())
            .args(args)
            .arg("--data")
            .arg(self.data_dir())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run cli");
        child.stdin.take().expect("stdin").write_all(input.as_bytes()).expect("write stdin");
        let out = child.wait_with_output().expect("cli output");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Creates a key with the CLI and returns it.
    pub fn key(&self, extra: &[&str]) -> String {
        let mut args = vec!["token", "create", "--name", "test"];
        args.extend_from_slice(extra);
        let (ok, out, err) = self.cli(&args);
        assert!(ok, "token create failed: {err}");
        let key = out.trim().to_string();
        assert!(key.starts_with("sk-") && !key.contains('\n'), "stdout is the key alone: {out:?}");
        note_secret(&key);
        key
    }

    pub fn post(&self, path: &str, key: &str, body: &Value) -> reqwest::RequestBuilder {
        self.http.post(format!("{}{path}", self.url)).bearer_auth(key).json(body)
    }

    pub fn get(&self, path: &str, key: &str) -> reqwest::RequestBuilder {
        self.http.get(format!("{}{path}", self.url)).bearer_auth(key)
    }

    /// `GET path` with `key`, as JSON.
    pub async fn get_json(&self, path: &str, key: &str) -> Value {
        json_of(self.get(path, key)).await
    }

    /// An admin API call: status and JSON body (`null` when there is none).
    pub async fn admin(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut req = self.http.request(method, format!("{}{path}", self.url)).bearer_auth(&self.admin_key);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("request");
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    /// `GET /api/admin/usage` rows, waiting until at least `n` are there.
    pub async fn usage_rows(&self, n: usize) -> Vec<Value> {
        // Generous: on a loaded machine the consumer can lag; it returns as soon as the rows are there.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let v: Value = self
                .get("/api/admin/usage?per_page=500", &self.admin_key)
                .send()
                .await
                .expect("usage")
                .json()
                .await
                .expect("json");
            let rows = v["data"].as_array().cloned().unwrap_or_default();
            if rows.len() >= n || Instant::now() > deadline {
                return rows;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until the server has applied a change made by the CLI or the config file.
    pub async fn settle(&self) {
        tokio::time::sleep(Duration::from_millis(1300)).await;
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if self.owns_dir {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// RFC 3339 for `secs` seconds from now (rounded up to the next whole second).
pub fn rfc3339_in(secs: u64) -> String {
    let t = chrono::Utc::now() + chrono::Duration::seconds(secs as i64 + 1);
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// The Redis server for tests: `OBLIVIOUS_TEST_REDIS`, else the one `.ci/run`
/// starts on port 6390.
pub fn redis_url() -> String {
    std::env::var("OBLIVIOUS_TEST_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6390/".into())
}

/// A `[hot]` section on the test Redis with a key prefix of its own.
pub fn redis_hot() -> String {
    format!(
        "[hot]\nbackend = \"redis\"\nredis_url = \"{}\"\nkey_prefix = \"test-{}-{}:\"\n",
        redis_url(),
        std::process::id(),
        SEQ.fetch_add(1, Ordering::SeqCst)
    )
}

/// The Upstash-REST server for tests (`tests/edge/upstash.mjs` over the test
/// Redis): `OBLIVIOUS_TEST_UPSTASH` and `OBLIVIOUS_TEST_UPSTASH_TOKEN`, else
/// the one `.ci/run` starts on port 8079 with its token.
pub fn upstash_url() -> String {
    std::env::var("OBLIVIOUS_TEST_UPSTASH").unwrap_or_else(|_| "http://127.0.0.1:8079".into())
}

pub fn upstash_token() -> String {
    std::env::var("OBLIVIOUS_TEST_UPSTASH_TOKEN").unwrap_or_else(|_| "oblivious-test-token".into())
}

/// A `[hot]` section on the test Upstash server with a key prefix of its own.
pub fn upstash_hot() -> String {
    format!(
        "[hot]\nbackend = \"upstash\"\nupstash_url = \"{}\"\nupstash_token = \"{}\"\nkey_prefix = \"test-{}-{}:\"\n",
        upstash_url(),
        upstash_token(),
        std::process::id(),
        SEQ.fetch_add(1, Ordering::SeqCst)
    )
}

/// Put this in a config's `extra` to leave unpriced models unpriced.
pub const STRICT_PRICES: &str = "# strict prices";

/// One `[[channels]]` block of any type; `more` holds extra TOML lines (keys, models…).
pub fn channel(name: &str, kind: &str, base_url: &str, more: &str) -> String {
    format!("\n[[channels]]\nname = \"{name}\"\ntype = \"{kind}\"\nbase_url = \"{base_url}\"\n{more}\n")
}

/// A config with one channel per `(name, base_url, extra TOML lines)`. Unless
/// `extra` contains [`STRICT_PRICES`], every model is declared free (unpriced
/// models are refused), so tests that are not about money need not price anything.
pub fn config(channels: &[(&str, &str, &str)], extra: &str) -> String {
    let mut s = format!("{extra}\n");
    if !extra.contains(STRICT_PRICES) {
        s.push_str("\n[prices.\"*\"]\nfree = true\n");
    }
    for (name, url, more) in channels {
        s.push_str(&channel(name, "openai", url, more));
    }
    s
}
