//! What the relay tells operators about itself: metrics through the `metrics`
//! facade (names and labels in `oblivious_core::telemetry`; each call is a
//! no-op until a shell installs a recorder) and gauges read from its caches
//! when a shell asks ([`Relay::observe`]).

use metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram, Unit};
use oblivious_core::model::ChannelStatus;
use oblivious_core::telemetry as t;
use oblivious_core::wire::Inbound;
use oblivious_ports::{Ledger, Page, Platform, StoreError};

use crate::Relay;

/// A span of the request's trace. Spans have a target of their own so log
/// output never carries them and, with no trace exporter installed, they are
/// disabled at their call sites (costing next to nothing).
macro_rules! step {
    ($($args:tt)*) => { tracing::info_span!(target: "oblivious::span", $($args)*) };
}
pub(crate) use step;

/// Gives every metric its help text and unit (Prometheus's `# HELP` lines).
pub fn describe() {
    describe_counter!(t::REQUESTS, "Requests answered, by route, inbound format, model, channel and status.");
    describe_histogram!(t::REQUEST_DURATION, Unit::Seconds, "Time to the whole answer (a stream's end).");
    describe_histogram!(t::TTFB, Unit::Seconds, "Time from the request's arrival to the upstream's answer head.");
    describe_counter!(t::UPSTREAM_ATTEMPTS, "Upstream attempts, by channel and outcome.");
    describe_histogram!(t::UPSTREAM_DURATION, Unit::Seconds, "One upstream attempt, sent to answer head or failure.");
    describe_counter!(t::RETRIES, "Upstream attempts made after a failure.");
    describe_counter!(t::FAILOVERS, "Requests moved to another channel after failures.");
    describe_counter!(t::TOKENS, "Tokens billed, by model, group and kind.");
    describe_counter!(t::SPEND_UNITS, "Money charged in units (1 unit = 1 micro-USD), by model and group.");
    describe_counter!(t::RATE_LIMITED, "Requests refused by a rate limit, by level and kind.");
    describe_counter!(
        t::SWEEPER_REFUNDS,
        "Reservations refunded by the sweeper (their request died with its process)."
    );
    describe_counter!(t::CACHE, "Cache lookups, by cache and result.");
    describe_counter!(t::BALANCE_ALERTS, "Low-balance alerts raised.");
    describe_counter!(t::AUTO_DISABLED, "Channels the gateway disabled after failures.");
    describe_gauge!(t::RESERVATIONS_OPEN, "Reservations held now.");
    describe_gauge!(t::USAGE_BACKLOG, "Usage records finished but not yet queued.");
    describe_gauge!(t::QUEUE_DEPTH, "Jobs on the queue, waiting or dead.");
    describe_gauge!(t::CHANNEL_STATUS, "1 for each channel's current status.");
    describe_gauge!(t::CHANNEL_KEYS_RESTING, "Keys of a channel resting after failures.");
    describe_gauge!(t::MODEL_CHANNELS_ENABLED, "Enabled channels serving each configured model.");
    describe_gauge!(t::OPEN_CONNECTIONS, "Client connections open.");
    describe_gauge!(t::BUILD_INFO, "Always 1, labelled with the version and runtime.");
}

pub(crate) fn format_label(inbound: Inbound) -> &'static str {
    match inbound {
        Inbound::OpenAi => "openai",
        Inbound::Anthropic => "anthropic",
        Inbound::Gemini => "gemini",
        Inbound::Responses => "responses",
    }
}

/// One answered request.
pub(crate) struct Answered<'a> {
    pub route: &'static str,
    pub format: &'static str,
    pub model: &'a str,
    pub channel: &'a str,
    pub status: u16,
    pub seconds: f64,
}

pub(crate) fn request(a: &Answered) {
    let labels = [
        ("route", a.route.to_string()),
        ("format", a.format.to_string()),
        ("model", a.model.to_string()),
        ("channel", a.channel.to_string()),
        ("status", t::status_label(a.status).to_string()),
    ];
    counter!(t::REQUESTS, &labels).increment(1);
    histogram!(t::REQUEST_DURATION, &labels).record(a.seconds);
}

pub(crate) fn ttfb(route: &'static str, model: &str, channel: &str, seconds: f64) {
    histogram!(t::TTFB, "route" => route, "model" => model.to_string(), "channel" => channel.to_string())
        .record(seconds);
}

/// One upstream attempt, sent to answer head (or failure).
pub(crate) fn attempt(channel: &str, outcome: &'static str, seconds: f64, retry: bool) {
    counter!(t::UPSTREAM_ATTEMPTS, "channel" => channel.to_string(), "outcome" => outcome).increment(1);
    histogram!(t::UPSTREAM_DURATION, "channel" => channel.to_string(), "outcome" => outcome).record(seconds);
    if retry {
        counter!(t::RETRIES, "channel" => channel.to_string()).increment(1);
    }
}

pub(crate) fn failover(model: &str) {
    counter!(t::FAILOVERS, "model" => model.to_string()).increment(1);
}

/// What a request was billed: tokens by kind and money, by model and group.
pub(crate) fn billed(model: &str, group: &str, prompt: i64, completion: i64, cached: i64, cost: i64) {
    for (kind, n) in [("prompt", prompt), ("completion", completion), ("cached", cached)] {
        if n > 0 {
            counter!(t::TOKENS, "model" => model.to_string(), "group" => group.to_string(), "kind" => kind)
                .increment(n as u64);
        }
    }
    if cost > 0 {
        counter!(t::SPEND_UNITS, "model" => model.to_string(), "group" => group.to_string()).increment(cost as u64);
    }
}

pub(crate) fn rate_limited(level: &'static str, kind: &'static str) {
    counter!(t::RATE_LIMITED, "level" => level, "kind" => kind).increment(1);
}

pub(crate) fn cache(cache: &'static str, hit: bool) {
    counter!(t::CACHE, "cache" => cache, "result" => if hit { "hit" } else { "miss" }).increment(1);
}

pub(crate) fn auto_disabled(channel: &str) {
    counter!(t::AUTO_DISABLED, "channel" => channel.to_string()).increment(1);
}

pub(crate) fn swept(refunded: u64) {
    counter!(t::SWEEPER_REFUNDS).increment(refunded);
}

impl<P: Platform> Relay<P> {
    /// Sets the gauges: each channel's status and resting keys, the enabled
    /// channels of every configured model, the usage backlog and the
    /// reservations open. A shell calls it before it exports (a scrape, the
    /// end of a scheduled run).
    pub async fn observe(&self) -> Result<(), StoreError> {
        let snapshot = self.snapshot();
        let mut models = std::collections::BTreeMap::<&str, u32>::new();
        for ch in &snapshot.channels {
            for status in [ChannelStatus::Enabled, ChannelStatus::Disabled, ChannelStatus::AutoDisabled] {
                let on = if ch.status == status { 1.0 } else { 0.0 };
                gauge!(t::CHANNEL_STATUS, "channel" => ch.spec.name.clone(), "status" => status.as_str()).set(on);
            }
            let resting = self.usable_keys(ch).await.iter().filter(|u| !**u).count();
            gauge!(t::CHANNEL_KEYS_RESTING, "channel" => ch.spec.name.clone()).set(resting as f64);
            let enabled = u32::from(ch.status == ChannelStatus::Enabled);
            for m in ch.spec.models.iter().chain(ch.spec.model_mapping.keys()) {
                *models.entry(m.as_str()).or_default() += enabled;
            }
        }
        for (model, n) in models {
            gauge!(t::MODEL_CHANNELS_ENABLED, "model" => model.to_string()).set(f64::from(n));
        }
        gauge!(t::USAGE_BACKLOG).set(self.usage_pending() as f64);
        let open = self.ports.store.reservations(Some("reserved".into()), Page { offset: 0, limit: 1 }).await?;
        gauge!(t::RESERVATIONS_OPEN).set(open.total as f64);
        Ok(())
    }
}
