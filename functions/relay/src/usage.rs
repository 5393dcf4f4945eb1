//! The usage record of one request: gathered while relaying, completed
//! (tokens counted when the upstream reported none, cost priced at the
//! version the request was reserved at) and published off the response path.
//! A draft dropped without being finished (the client went away while we
//! waited on the upstream) still publishes, so its reservation is settled.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use oblivious_core::count;
use oblivious_core::job::Job;
use oblivious_core::model::{Channel, Price, UsageRecord};
use oblivious_core::pricing::{self, Usage};
use oblivious_core::telemetry;
use oblivious_core::wire::canon;
use oblivious_ports::{Clock, Platform, Queue, Tasks};
use serde_json::{Map, Value};
use tracing::Instrument;

use crate::limits::Admission;
use crate::observe;
use crate::{Endpoint, Principal, Relay};

/// Usage records finished but not yet handed to the queue. Past
/// `BACKLOG_LIMIT`, new requests wait at the door until it drains: a flood
/// the queue cannot absorb (thousands of refused requests a second, each
/// logged) then slows its callers instead of growing memory without bound.
#[derive(Default)]
pub(crate) struct Backlog {
    pending: AtomicUsize,
    drained: tokio::sync::Notify,
}

/// A few MiB of records at most (each ~1-2 KiB with its task).
pub(crate) const BACKLOG_LIMIT: usize = 2048;

impl Backlog {
    /// Returns once the backlog is under its limit.
    pub(crate) async fn admit(&self) {
        loop {
            // Registered before the check, so a drain in between is not missed.
            let mut drained = std::pin::pin!(self.drained.notified());
            drained.as_mut().enable();
            if self.pending.load(Ordering::Acquire) < BACKLOG_LIMIT {
                return;
            }
            drained.await;
        }
    }

    pub(crate) fn pending(&self) -> usize {
        self.pending.load(Ordering::Acquire)
    }

    fn add(&self) {
        self.pending.fetch_add(1, Ordering::AcqRel);
    }

    fn done(&self) {
        if self.pending.fetch_sub(1, Ordering::AcqRel) == BACKLOG_LIMIT {
            self.drained.notify_waiters();
        }
    }
}

pub(crate) struct UsageDraft<P: Platform> {
    pub relay: Arc<Relay<P>>,
    pub request_id: String,
    pub endpoint: Endpoint,
    pub principal: Arc<Principal>,
    /// The request in OpenAI's shape, counted when the upstream reports no usage.
    pub body: Arc<Map<String, Value>>,
    pub requested_model: String,
    pub upstream_model: String,
    /// The channel of the last attempt.
    pub channel: Option<Arc<Channel>>,
    pub key_index: Option<usize>,
    pub started_us: i64,
    pub ttfb_ms: Option<i64>,
    pub stream: bool,
    pub retries: u32,
    /// The price version in force when the request was admitted.
    pub price: Option<Price>,
    pub ratio_bp: i64,
    /// Units held by the reservation (0 when nothing was reserved).
    pub reserved: i64,
    /// Rate-limit slots and windows to release at the end.
    pub admission: Option<Admission>,
    /// An answer reached the client: a whole 2xx body, or a stream that sent
    /// at least one content event. Only then is anything charged.
    pub delivered: bool,
    /// The request's span (the shell's, when it made one): the settlement's parent.
    pub span: tracing::Span,
    finished: bool,
}

impl<P: Platform> UsageDraft<P> {
    pub(crate) fn new(
        relay: Arc<Relay<P>>,
        request_id: String,
        endpoint: Endpoint,
        principal: Arc<Principal>,
        started_us: i64,
    ) -> Self {
        UsageDraft {
            relay,
            request_id,
            endpoint,
            principal,
            body: Arc::default(),
            requested_model: String::new(),
            upstream_model: String::new(),
            channel: None,
            key_index: None,
            started_us,
            ttfb_ms: None,
            stream: false,
            retries: 0,
            price: None,
            ratio_bp: 10_000,
            reserved: 0,
            admission: None,
            delivered: false,
            span: tracing::Span::current(),
            finished: false,
        }
    }

    /// Completes the record and publishes it, once. `completion_text` is what
    /// the client received, counted when the upstream reported no usage.
    pub(crate) fn finish(
        &mut self,
        status: u16,
        reported: Option<canon::Usage>,
        completion_text: String,
        error: Option<String>,
    ) {
        if std::mem::replace(&mut self.finished, true) {
            return;
        }
        let relay = self.relay.clone();
        let latency_ms = (relay.ports.clock.now_us() - self.started_us) / 1000;
        let delivered = self.delivered;
        let endpoint = self.endpoint;
        let body = self.body.clone();
        let price = self.price.take();
        let ratio_bp = self.ratio_bp;
        let admission = self.admission.take();
        let mut record = UsageRecord {
            request_id: std::mem::take(&mut self.request_id),
            created_at: self.started_us / 1000,
            endpoint: endpoint.path().to_string(),
            user_id: self.principal.user.id,
            token_id: self.principal.token.id,
            channel_id: self.channel.as_ref().map(|c| c.id),
            key_index: self.key_index.map(|k| k as u32),
            requested_model: std::mem::take(&mut self.requested_model),
            upstream_model: std::mem::take(&mut self.upstream_model),
            reserved: self.reserved,
            price_version: price.as_ref().map(|p| p.version).filter(|v| *v > 0),
            latency_ms,
            ttfb_ms: self.ttfb_ms,
            status,
            stream: self.stream,
            retries: self.retries,
            error,
            ..UsageRecord::default()
        };
        let channel = self.channel.as_ref().map_or("", |c| c.spec.name.as_str());
        // A model the gateway serves is its own label; anything else a caller typed is `other`.
        let served = self.channel.is_some() || relay.snapshot().serving(&record.requested_model).next().is_some();
        let model_label = telemetry::model_label(&record.requested_model, served).to_string();
        observe::request(&observe::Answered {
            route: endpoint.path(),
            format: observe::format_label(endpoint.inbound()),
            model: &model_label,
            channel,
            status,
            seconds: latency_ms as f64 / 1000.0,
        });
        let channel = channel.to_string();
        let group = self.principal.user.group.clone();
        let owner = relay.clone();
        relay.usage_backlog.add();
        let settle = observe::step!(parent: &self.span, "settle");
        relay.ports.tasks.spawn(
            async move {
                let model = record.upstream_model.as_str();
                let (prompt, completion, cached, estimated) = match reported {
                    Some(u) => (u.input, u.output, u.cached, false),
                    None if delivered => {
                        (count_prompt(endpoint, model, &body), count::count_text(model, &completion_text), 0, true)
                    }
                    None => (0, 0, 0, false),
                };
                record.prompt_tokens = prompt;
                record.completion_tokens = completion;
                record.cached_tokens = cached;
                record.usage_estimated = estimated;
                record.total_tokens = prompt + completion;
                let used = Usage {
                    prompt_tokens: prompt,
                    cached_tokens: cached,
                    completion_tokens: completion,
                    ..Usage::default()
                };
                // The charging rule: nothing delivered, nothing charged — not even a fixed per-request fee.
                record.cost =
                    if delivered { price.as_ref().map_or(0, |p| pricing::cost(p, ratio_bp, &used)) } else { 0 };
                if let Some(a) = admission {
                    owner.release(a, prompt + completion).await;
                }
                observe::billed(&model_label, &group, prompt, completion, cached, record.cost);
                access_log(&record, &channel);
                let id = record.request_id.clone();
                if let Err(e) = owner.ports.queue.publish(Job::Usage(record)).await {
                    tracing::error!(request_id = %id, "could not publish usage: {e}");
                }
                owner.usage_backlog.done();
            }
            .instrument(settle),
        );
    }
}

/// The request's line in the log (target `oblivious::access`, at info): who
/// (user and key ids, never the key), what, where, how it went and what it cost.
fn access_log(r: &UsageRecord, channel: &str) {
    tracing::info!(
        target: "oblivious::access",
        request_id = %r.request_id,
        user_id = r.user_id,
        token_id = r.token_id,
        route = %r.endpoint,
        model = %r.requested_model,
        upstream_model = %r.upstream_model,
        channel,
        status = r.status,
        stream = r.stream,
        retries = r.retries,
        latency_ms = r.latency_ms,
        ttfb_ms = r.ttfb_ms,
        prompt_tokens = r.prompt_tokens,
        completion_tokens = r.completion_tokens,
        cost = r.cost,
        error = r.error.as_deref(),
        "request"
    );
}

/// Prompt tokens as tiktoken counts them (the CPU-heavy way: ~0.5 µs a token),
/// of the request in OpenAI's shape.
pub(crate) fn count_prompt(endpoint: Endpoint, model: &str, body: &Map<String, Value>) -> i64 {
    match endpoint {
        Endpoint::Chat(_) => count::count_chat_prompt(model, body),
        Endpoint::Completions => count::count_input(model, body.get("prompt")),
        _ => count::count_input(model, body.get("input")),
    }
}

impl<P: Platform> Drop for UsageDraft<P> {
    fn drop(&mut self) {
        if !self.finished {
            self.finish(499, None, String::new(), Some("client disconnected".into()));
        }
    }
}

#[cfg(test)]
mod tests {
    use futures_util::FutureExt;

    use super::*;

    #[test]
    fn a_full_backlog_holds_new_requests_until_it_drains() {
        let b = Backlog::default();
        for _ in 0..BACKLOG_LIMIT - 1 {
            b.add();
        }
        assert!(b.admit().now_or_never().is_some(), "under the limit: admitted at once");
        b.add();
        let mut waiting = Box::pin(b.admit());
        assert!(waiting.as_mut().now_or_never().is_none(), "at the limit: waits");
        b.add();
        b.done();
        assert!(waiting.as_mut().now_or_never().is_none(), "still at the limit");
        b.done();
        assert!(waiting.as_mut().now_or_never().is_some(), "one under: the waiter is woken and admitted");
    }
}
