//! The gateway under test: the release `oblivious serve` on 127.0.0.1, pinned
//! to its own core, with a fresh data directory; and what /proc says of it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use oblivious_mock::banner::read_banner;

use serde_json::{json, Value};

pub struct Gateway {
    pub url: String,
    pub admin_key: String,
    child: Child,
    dir: PathBuf,
    http: reqwest::Client,
}

impl Gateway {
    /// Starts `bin serve` with `config`, under `taskset -c CORE` when a core is given.
    pub fn start(bin: &Path, config: &str, core: Option<usize>) -> Result<Gateway, String> {
        // One directory per gateway: two may run at once (the alternating rounds).
        static STARTED: AtomicUsize = AtomicUsize::new(0);
        let n = STARTED.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("oblivious-bench-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let config_path = dir.join("oblivious.toml");
        std::fs::write(&config_path, config).map_err(|e| e.to_string())?;
        let mut cmd = match core {
            Some(c) => {
                let mut t = Command::new("taskset");
                t.arg("-c").arg(c.to_string()).arg(bin);
                t
            }
            None => Command::new(bin),
        };
        let mut child = cmd
            .args(["serve", "--listen", "127.0.0.1:0", "--config"])
            .arg(&config_path)
            .arg("--data")
            .arg(dir.join("data"))
            .env("OBLIVIOUS_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", bin.display()))?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        // Startup on a fresh store takes well under a second; a minute means it is stuck.
        let banner = read_banner(stdout, Instant::now() + Duration::from_secs(60));
        let http = reqwest::Client::new();
        let gw = Gateway {
            url: banner.url.unwrap_or_default(),
            admin_key: banner.admin_key.unwrap_or_default(),
            child,
            dir,
            http,
        };
        if gw.url.is_empty() || gw.admin_key.is_empty() {
            return Err("the gateway did not start (no address or admin key on stdout)".into());
        }
        Ok(gw)
    }

    /// Where the load goes: the OpenAI chat endpoint.
    pub fn chat_url(&self) -> String {
        format!("{}/v1/chat/completions", self.url)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// An admin API call; the answer's JSON, or its status and body as the error.
    pub async fn admin(&self, method: reqwest::Method, path: &str, body: Value) -> Result<Value, String> {
        let resp = self
            .http
            .request(method, format!("{}{path}", self.url))
            .bearer_auth(&self.admin_key)
            .json(&body)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let status = resp.status();
        let text = resp.text().await.map_err(|e| e.to_string())?;
        if !status.is_success() {
            return Err(format!("{path}: {status} {text}"));
        }
        serde_json::from_str(&text).map_err(|e| format!("{path}: {e}"))
    }

    /// A user with room for any benchmark, and an API key of its own.
    pub async fn user_and_key(&self, name: &str) -> Result<(i64, String), String> {
        let user = self
            .admin(
                reqwest::Method::POST,
                "/api/admin/users",
                json!({ "name": name, "quota": 1_000_000_000_000_000i64 }),
            )
            .await?;
        let id = user["id"].as_i64().ok_or("no user id")?;
        let key = self.key(id, &format!("{name}-key")).await?;
        Ok((id, key))
    }

    pub async fn key(&self, user_id: i64, name: &str) -> Result<String, String> {
        let token = self
            .admin(
                reqwest::Method::POST,
                "/api/admin/tokens",
                json!({ "name": name, "user_id": user_id, "quota": 1_000_000_000_000_000i64 }),
            )
            .await?;
        token["key"].as_str().map(str::to_string).ok_or_else(|| format!("no key in {token}"))
    }

    /// Waits until every request so far is settled: usage rows written and no
    /// reservation open. Returns the number of usage rows.
    pub async fn settled(&self) -> Result<u64, String> {
        let mut last = None;
        for _ in 0..600 {
            let open =
                self.admin(reqwest::Method::GET, "/api/admin/reservations?state=reserved&per_page=1", Value::Null);
            let rows = self.admin(reqwest::Method::GET, "/api/admin/usage?per_page=1", Value::Null);
            let (open, rows) = (open.await?, rows.await?);
            let rows = rows["total"].as_u64().unwrap_or(0);
            if open["total"] == 0 && last == Some(rows) {
                return Ok(rows);
            }
            last = Some(rows);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err("usage did not settle within a minute".into())
    }

    /// CPU time the process has used so far (user + system), in milliseconds.
    pub fn cpu_ms(&self) -> f64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).unwrap_or_default();
        // Fields after the command name (which may hold spaces) start at field 3.
        let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
        let f: Vec<&str> = after.split_whitespace().collect();
        let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
        (ticks(11) + ticks(12)) * 1000.0 / clock_ticks()
    }

    /// Resident memory now and at its peak (VmRSS, VmHWM), in MiB.
    pub fn rss_mib(&self) -> (f64, f64) {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
                .unwrap_or(0.0)
                / 1024.0
        };
        (field("VmRSS:"), field("VmHWM:"))
    }

    /// Forgets the peak so far (the next VmHWM reading covers only what follows).
    pub fn reset_peak(&self) {
        let _ = std::fs::write(format!("/proc/{}/clear_refs", self.pid()), "5");
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}
