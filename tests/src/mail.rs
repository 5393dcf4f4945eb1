//! The mail sink (`tests/mail/sink.py`, started by `.ci/run`): a real SMTP
//! server and a Resend-shaped HTTP mail API on 127.0.0.1 that keep what they
//! receive; the tests read it back here. Tests run in parallel against one
//! sink, so each uses its own recipient ([`address`]) and reads only that.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The login the sink's SMTP server accepts (optional there).
pub const SMTP_USER: &str = "oblivious";
pub const SMTP_PASSWORD: &str = "p@ss w0rd";
/// The Bearer key the sink's `POST /emails` accepts.
pub const API_KEY: &str = "oblivious-test-mail-key";

/// The sink's SMTP `host:port`: `OBLIVIOUS_TEST_SMTP`, else the one `.ci/run` starts.
pub fn smtp_addr() -> String {
    std::env::var("OBLIVIOUS_TEST_SMTP").unwrap_or_else(|_| "127.0.0.1:2525".into())
}

/// The sink's HTTP API: `OBLIVIOUS_TEST_MAIL_API`, else the one `.ci/run` starts.
pub fn api_base() -> String {
    std::env::var("OBLIVIOUS_TEST_MAIL_API").unwrap_or_else(|_| "http://127.0.0.1:2526".into())
}

/// Where a mail API client posts (`mail.api_url`).
pub fn api_url() -> String {
    format!("{}/emails", api_base())
}

/// `mail.smtp_url` for the sink without a login (it has no TLS).
pub fn smtp_url() -> String {
    format!("smtp://{}?tls=none", smtp_addr())
}

/// `mail.smtp_url` for the sink with its login (percent-encoded) and no TLS.
pub fn smtp_url_with_login(password: &str) -> String {
    let encoded: String = password
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    format!("smtp://{SMTP_USER}:{encoded}@{}?tls=none", smtp_addr())
}

/// A recipient no other test uses: `tag-<time>-<n>@example.test`.
pub fn address(tag: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    format!("{tag}-{nanos:x}-{}-{}@example.test", std::process::id(), N.fetch_add(1, Ordering::Relaxed))
}

/// One message as the sink received it (over SMTP or its API).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Received {
    /// `smtp` or `api`.
    pub via: String,
    /// The `From` header (SMTP) or field (API).
    pub from: String,
    /// The envelope recipients (SMTP) or the `to` field (API).
    pub to: Vec<String>,
    /// Decoded (RFC 2047 words become text).
    pub subject: String,
    /// The `text/plain` part decoded, line ends as `\n`.
    pub text: String,
    pub content_type: String,
    /// The SMTP login the client used, if any.
    pub auth_user: Option<String>,
}

impl Received {
    fn from_json(v: &Value) -> Received {
        let s = |k: &str| v[k].as_str().unwrap_or_default().to_string();
        Received {
            via: s("via"),
            from: s("from"),
            to: v["to"]
                .as_array()
                .map(|a| a.iter().filter_map(|t| t.as_str().map(str::to_string)).collect())
                .unwrap_or_default(),
            subject: s("subject"),
            text: s("text"),
            content_type: s("content_type"),
            auth_user: v["auth_user"].as_str().map(str::to_string),
        }
    }
}

/// The messages the sink holds for `to`, oldest first.
pub async fn messages(to: &str) -> Vec<Received> {
    let url = format!("{}/messages", api_base());
    let resp = reqwest::Client::new().get(&url).query(&[("to", to)]).send().await.unwrap_or_else(|e| {
        panic!("the mail sink at {url} is not reachable ({e}); .ci/run starts it: tests/mail/sink.py 2525 2526")
    });
    assert_eq!(resp.status(), 200, "GET {url}");
    let list: Value = resp.json().await.unwrap();
    list.as_array().unwrap().iter().map(Received::from_json).collect()
}

/// The first message to `to`, waiting up to 5 s for it to arrive.
pub async fn wait_for(to: &str) -> Received {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(m) = messages(to).await.into_iter().next() {
            return m;
        }
        assert!(Instant::now() < deadline, "no message to {to} reached the mail sink within 5 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Forgets the messages to `to`.
pub async fn forget(to: &str) {
    let url = format!("{}/messages", api_base());
    let resp = reqwest::Client::new().delete(&url).query(&[("to", to)]).send().await.unwrap();
    assert_eq!(resp.status(), 200, "DELETE {url}");
}
