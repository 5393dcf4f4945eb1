//! The usage record of one request: gathered while relaying, completed
//! (tokens counted when the upstream reported none, cost priced) and published
//! off the response path.

use std::sync::Arc;

use oblivious_core::count;
use oblivious_core::job::Job;
use oblivious_core::model::{Id, UsageRecord};
use oblivious_core::pricing;
use oblivious_ports::{Clock, Platform, Queue, Tasks};
use serde::Deserialize;
use serde_json::Value;

use crate::{Endpoint, Principal, Relay};

/// Usage as OpenAI-compatible upstreams report it.
#[derive(Clone, Copy, Debug, Default, Deserialize)]
pub(crate) struct UpstreamUsage {
    #[serde(default)]
    pub prompt_tokens: i64,
    #[serde(default)]
    pub completion_tokens: i64,
    #[serde(default)]
    pub total_tokens: i64,
}

pub(crate) struct UsageDraft {
    pub request_id: String,
    pub endpoint: Endpoint,
    pub principal: Arc<Principal>,
    pub body: Arc<Value>,
    pub requested_model: String,
    pub upstream_model: String,
    pub channel_id: Option<Id>,
    pub key_index: Option<usize>,
    pub started_us: i64,
    pub ttfb_ms: Option<i64>,
    pub stream: bool,
    pub retries: u32,
}

impl UsageDraft {
    /// Completes the record and publishes it. `completion_text` is what the
    /// client received, counted when the upstream reported no usage.
    pub(crate) fn finish<P: Platform>(
        self,
        relay: &Arc<Relay<P>>,
        status: u16,
        reported: Option<UpstreamUsage>,
        completion_text: String,
        error: Option<String>,
    ) {
        let latency_ms = (relay.ports.clock.now_us() - self.started_us) / 1000;
        let snapshot = relay.snapshot();
        let delivered = status < 400 || !completion_text.is_empty();
        let owner = relay.clone();
        relay.ports.tasks.spawn(async move {
            let model = self.upstream_model.as_str();
            let (prompt, completion, estimated) = match reported {
                Some(u) => (u.prompt_tokens, u.completion_tokens, false),
                None if delivered => {
                    let prompt = match self.endpoint {
                        Endpoint::ChatCompletions => count::count_chat_prompt(model, &self.body),
                        Endpoint::Completions => count::count_input(model, self.body.get("prompt")),
                        Endpoint::Embeddings => count::count_input(model, self.body.get("input")),
                    };
                    (prompt, count::count_text(model, &completion_text), true)
                }
                None => (0, 0, false),
            };
            let total = reported.map(|u| u.total_tokens).filter(|t| *t > 0).unwrap_or(prompt + completion);
            let cost = snapshot
                .prices
                .get(&self.requested_model)
                .map_or(0, |p| pricing::cost(p, snapshot.ratio_bp(&self.principal.user.group), prompt, completion));
            let record = UsageRecord {
                request_id: self.request_id,
                created_at: self.started_us / 1000,
                endpoint: format!("/v1{}", self.endpoint.path()),
                user_id: self.principal.user.id,
                token_id: self.principal.token.id,
                channel_id: self.channel_id,
                key_index: self.key_index.map(|k| k as u32),
                requested_model: self.requested_model,
                upstream_model: self.upstream_model,
                prompt_tokens: prompt,
                completion_tokens: completion,
                total_tokens: total,
                usage_estimated: estimated,
                cost,
                latency_ms,
                ttfb_ms: self.ttfb_ms,
                status,
                stream: self.stream,
                retries: self.retries,
                error,
            };
            let id = record.request_id.clone();
            if let Err(e) = owner.ports.queue.publish(Job::Usage(record)).await {
                tracing::error!(request_id = %id, "could not publish usage: {e}");
            }
        });
    }
}
