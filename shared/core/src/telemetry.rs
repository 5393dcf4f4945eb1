//! The names and labels of every metric the platform records, in one place:
//! the functions record them (through the `metrics` facade), the shells export
//! them (Prometheus, CloudWatch EMF), and `infra/` charts and alerts on them.
//!
//! Labels are bounded: routes, formats, statuses, levels and outcomes are fixed
//! sets; models are the configured ones (anything else is `other`); channels
//! and groups are the operator's. No user, key or request id is ever a label.

/// Requests answered. Labels: route, format, model, channel, status.
pub const REQUESTS: &str = "oblivious_requests_total";
/// Time to the whole answer (the end of the stream for streams), seconds. Same labels.
pub const REQUEST_DURATION: &str = "oblivious_request_duration_seconds";
/// Time from the request's arrival to the upstream's answer head, seconds. Labels: route, model, channel.
pub const TTFB: &str = "oblivious_ttfb_seconds";
/// Upstream attempts. Labels: channel, outcome ([`outcome`]).
pub const UPSTREAM_ATTEMPTS: &str = "oblivious_upstream_attempts_total";
/// One upstream attempt, sent to answer head (or failure), seconds. Labels: channel, outcome.
pub const UPSTREAM_DURATION: &str = "oblivious_upstream_duration_seconds";
/// Attempts after a failure (on the same channel or another). Labels: channel.
pub const RETRIES: &str = "oblivious_retries_total";
/// Requests moved from one channel to another after failures. Labels: model.
pub const FAILOVERS: &str = "oblivious_failovers_total";
/// Tokens billed. Labels: model, group, kind (`prompt`, `completion`, `cached`).
pub const TOKENS: &str = "oblivious_tokens_total";
/// Money charged, in units (1 unit = 1 micro-USD). Labels: model, group.
pub const SPEND_UNITS: &str = "oblivious_spend_units_total";
/// Requests refused by a rate limit. Labels: level (`user`, `token`, `ip`, `model`), kind (`requests`, `tokens`, `concurrency`).
pub const RATE_LIMITED: &str = "oblivious_rate_limited_total";
/// Reservations refunded by the sweeper (their request died with its process).
pub const SWEEPER_REFUNDS: &str = "oblivious_sweeper_refunds_total";
/// Lookups in a cache. Labels: cache (`principal`, `shared_snapshot`, `shared_principal`), result (`hit`, `miss`).
pub const CACHE: &str = "oblivious_cache_requests_total";
/// Low-balance alerts raised. Labels: kind (`user`, `token`).
pub const BALANCE_ALERTS: &str = "oblivious_balance_alerts_total";
/// Channels the gateway disabled after failures. Labels: channel.
pub const AUTO_DISABLED: &str = "oblivious_channel_auto_disabled_total";

/// Reservations held now (gauge).
pub const RESERVATIONS_OPEN: &str = "oblivious_reservations_open";
/// Usage records finished but not yet on the queue (gauge).
pub const USAGE_BACKLOG: &str = "oblivious_usage_backlog";
/// Jobs on the queue (gauge). Labels: state (`waiting`, `dead`).
pub const QUEUE_DEPTH: &str = "oblivious_queue_depth";
/// 1 for each channel's current status (gauge). Labels: channel, status (`enabled`, `disabled`, `auto_disabled`).
pub const CHANNEL_STATUS: &str = "oblivious_channel_status";
/// Keys of a channel resting after failures (gauge). Labels: channel.
pub const CHANNEL_KEYS_RESTING: &str = "oblivious_channel_keys_resting";
/// Enabled channels serving each configured model (gauge). Labels: model.
pub const MODEL_CHANNELS_ENABLED: &str = "oblivious_model_channels_enabled";
/// Client connections open (gauge).
pub const OPEN_CONNECTIONS: &str = "oblivious_open_connections";
/// Always 1 (gauge). Labels: version, runtime (`local`, `lambda`, `edge`).
pub const BUILD_INFO: &str = "oblivious_build_info";

/// Histogram buckets for request and upstream times, seconds: LLM answers run
/// from milliseconds (errors, caches) to minutes (long streams).
pub const SECONDS_BUCKETS: &[f64] =
    &[0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0];

/// The label a model gets: its own name when the gateway serves it, else
/// `other` (a caller may send any string as a model).
pub fn model_label(model: &str, served: bool) -> &str {
    if served {
        model
    } else {
        "other"
    }
}

/// The outcome label of one upstream attempt.
pub fn outcome(status: Option<u16>, timed_out: bool) -> &'static str {
    match (status, timed_out) {
        (_, true) => "timeout",
        (None, false) => "transport",
        (Some(s), _) if (200..300).contains(&s) => "ok",
        (Some(429), _) => "http_429",
        (Some(s), _) if s >= 500 => "http_5xx",
        (Some(_), _) => "http_4xx",
    }
}

/// A status code as a label: the code itself (a bounded set of three digits).
pub fn status_label(status: u16) -> &'static str {
    match status {
        200 => "200",
        400 => "400",
        401 => "401",
        402 => "402",
        403 => "403",
        404 => "404",
        408 => "408",
        413 => "413",
        429 => "429",
        499 => "499",
        500 => "500",
        502 => "502",
        503 => "503",
        504 => "504",
        s if (200..300).contains(&s) => "2xx",
        s if (400..500).contains(&s) => "4xx",
        _ => "5xx",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_and_statuses_are_bounded_sets() {
        assert_eq!(outcome(Some(200), false), "ok");
        assert_eq!(outcome(Some(429), false), "http_429");
        assert_eq!(outcome(Some(503), false), "http_5xx");
        assert_eq!(outcome(Some(401), false), "http_4xx");
        assert_eq!(outcome(None, true), "timeout");
        assert_eq!(outcome(None, false), "transport");
        assert_eq!(status_label(201), "2xx");
        assert_eq!(status_label(418), "4xx");
        assert_eq!(status_label(599), "5xx");
        assert_eq!(model_label("gpt-x", false), "other");
    }
}
