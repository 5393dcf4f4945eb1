//! Metrics at the edge: nothing scrapes a Worker, so what the relay records
//! through the `metrics` facade (the figures the local binary serves to
//! Prometheus) is written after each request's `ctx.wait_until` work (and
//! each cron run) as CloudWatch Embedded Metric Format lines, one
//! `console.log` each. Workers Logs keeps them (query them there as JSON)
//! and Logpush carries them on (Workers Trace Events, in `Logs`); for
//! CloudWatch to make metrics of them, forward them to CloudWatch Logs
//! (PutLogEvents with the `x-amzn-logs-format: json/emf` header). Bindings:
//! `OBLIVIOUS_EMF=0` turns them off, `OBLIVIOUS_EMF_NAMESPACE` names the
//! namespace (default `Oblivious`).
//!
//! An isolate serves requests concurrently: one request's flush also carries
//! what others finished meanwhile, and counters are increases since the last
//! flush, so nothing is counted twice or lost.

use std::sync::Once;

use worker::Env;

use crate::platform::binding;

/// Installs the recorder, once per isolate (its first request or cron run).
pub fn install(env: &Env) {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let off = binding(env, "OBLIVIOUS_EMF")
            .is_some_and(|v| matches!(v.trim().to_ascii_lowercase().as_str(), "0" | "false" | "off" | "no"));
        if off {
            return;
        }
        let namespace = binding(env, "OBLIVIOUS_EMF_NAMESPACE").unwrap_or_default();
        if let Err(e) = oblivious_emf::install(&namespace) {
            worker::console_error!("EMF metrics off: {e}");
        }
    });
}

/// Logs what was recorded since the last flush, one EMF line per `console.log`.
pub fn flush() {
    let Some(recorder) = oblivious_emf::installed() else { return };
    for line in recorder.flush(worker::js_sys::Date::now() as i64) {
        worker::console_log!("{line}");
    }
}
