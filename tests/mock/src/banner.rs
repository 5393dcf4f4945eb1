//! What `oblivious serve` prints when it starts: the address it listens on
//! and, on a data directory's first start, the admin key. Read the same way by
//! the end-to-end tests' launcher and the bench's.

use std::io::{BufRead, BufReader, Read};
use std::time::Instant;

#[derive(Debug, Default)]
pub struct Banner {
    pub url: Option<String>,
    pub admin_key: Option<String>,
    /// Printed before the address when `[metrics] listen` is set.
    pub metrics_url: Option<String>,
    /// The root user's setup link, printed on a data directory's first start.
    pub setup_link: Option<String>,
}

/// Reads the gateway's stdout up to its "listening on" line (or until a line
/// arrives after `deadline`), then drains the rest on a thread so the child
/// never blocks on a full pipe.
pub fn read_banner(stdout: impl Read + Send + 'static, deadline: Instant) -> Banner {
    let mut lines = BufReader::new(stdout).lines();
    let mut banner = Banner::default();
    while banner.url.is_none() && Instant::now() < deadline {
        let Some(Ok(line)) = lines.next() else { break };
        if let Some(k) = line.split_whitespace().find(|w| w.starts_with("sk-")) {
            banner.admin_key = Some(k.to_string());
        }
        if line.starts_with("Root sign-in:") {
            banner.setup_link = line.split_whitespace().find(|w| w.starts_with("http")).map(str::to_string);
        }
        if let Some(rest) = line.strip_prefix("Metrics on ") {
            banner.metrics_url = rest.split_whitespace().next().map(str::to_string);
        }
        if let Some(rest) = line.strip_prefix("Oblivious listening on ") {
            banner.url = rest.split_whitespace().next().map(str::to_string);
        }
    }
    std::thread::spawn(move || for _ in lines {});
    banner
}
