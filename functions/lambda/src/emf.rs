//! Metrics on Lambda: nothing scrapes a function, so what the functions record
//! through the `metrics` facade (the figures the local binary serves to
//! Prometheus) is printed at the end of each invocation as CloudWatch
//! Embedded Metric Format lines on stdout, which CloudWatch Logs turns into
//! metrics in the namespace `OBLIVIOUS_EMF_NAMESPACE` (default `Oblivious`).
//! On unless `OBLIVIOUS_EMF=0`.
//!
//! Counters are increases since the previous flush, so an invocation whose
//! lines were never printed (the client went away mid-stream, the body was
//! dropped) loses nothing: the next invocation's lines carry it.

use std::future::Future;
use std::io::Write;

use oblivious_native::SystemClock;
use oblivious_ports::Clock;

use crate::env;
use crate::tasks::TrackedTasks;

/// The namespace to install the recorder with, or `None` when turned off.
pub fn namespace(get: impl Fn(&str) -> Option<String>) -> Option<String> {
    let off =
        get(env::EMF).is_some_and(|v| matches!(v.trim().to_ascii_lowercase().as_str(), "0" | "false" | "off" | "no"));
    if off {
        return None;
    }
    Some(get(env::EMF_NAMESPACE).unwrap_or_else(|| oblivious_emf::DEFAULT_NAMESPACE.to_string()))
}

/// Installs the EMF recorder as the process's `metrics` recorder, as the environment says.
pub fn install_from_env() {
    let Some(ns) = namespace(|k| std::env::var(k).ok().filter(|v| !v.trim().is_empty())) else { return };
    if let Err(e) = oblivious_emf::install(&ns) {
        tracing::warn!("EMF metrics off: {e}");
    }
}

/// Prints what was recorded since the last flush as EMF lines on stdout (one
/// write, so no log line lands inside them); nothing when not installed.
pub fn flush() {
    let Some(recorder) = oblivious_emf::installed() else { return };
    let lines = recorder.flush(SystemClock.now_ms());
    if lines.is_empty() {
        return;
    }
    let mut text = lines.join("\n");
    text.push('\n');
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
}

/// Runs an event handler, waits for the background work it started, then
/// flushes: the queue and scheduled functions' lines, one set per batch.
pub async fn flushed<T>(tasks: &TrackedTasks, handler: impl Future<Output = T>) -> T {
    let out = handler.await;
    tasks.idle().await;
    flush();
    out
}
