//! Channel and key health: consecutive-failure counters in hot state, key
//! resting, automatic disabling, and the probe behind `channel test`.

use std::time::Duration;

use futures_util::StreamExt;
use oblivious_core::model::{Channel, ChannelStatus, Id};
use oblivious_core::wire::canon::{ChatRequest, Message, Part, Role};
use oblivious_core::wire::{self, Wire};
use oblivious_ports::{Clock, Hot, Platform, Store, StoreError, Upstream};
use serde::Serialize;
use serde_json::json;

use crate::upstream::{self, Op};
use crate::Relay;

fn key_failures(ch: Id, key: usize) -> String {
    format!("kf:{ch}:{key}")
}
fn key_rest(ch: Id, key: usize) -> String {
    format!("kr:{ch}:{key}")
}
fn channel_failures(ch: Id) -> String {
    format!("cf:{ch}")
}
fn probe_failures(ch: Id) -> String {
    format!("pf:{ch}")
}

/// What a scheduled health pass did to one channel.
#[derive(Clone, Debug, Serialize)]
pub struct HealthReport {
    pub channel_id: Id,
    pub channel: String,
    pub probe: ProbeResult,
    /// Failed probes within the window (0 after a pass).
    pub failures: i64,
    /// `disabled`, `revived`, or empty.
    pub action: &'static str,
}

#[derive(Clone, Debug, Serialize)]
pub struct ProbeResult {
    pub ok: bool,
    pub status: Option<u16>,
    pub latency_ms: i64,
    pub model: String,
    pub message: String,
}

impl<P: Platform> Relay<P> {
    /// Which of the channel's keys are not resting.
    pub(crate) async fn usable_keys(&self, ch: &Channel) -> Vec<bool> {
        let mut usable = Vec::with_capacity(ch.spec.keys.len());
        for k in 0..ch.spec.keys.len() {
            let resting = self.ports.hot.get(&key_rest(ch.id, k)).await.ok().flatten().is_some();
            usable.push(!resting);
        }
        usable
    }

    pub(crate) async fn record_success(&self, ch: Id, key: Option<usize>) {
        let hot = &self.ports.hot;
        let _ = hot.del(&channel_failures(ch)).await;
        if let Some(k) = key {
            let _ = hot.del(&key_failures(ch, k)).await;
        }
    }

    /// Counts a failure against the key (which rests after enough in a row) and,
    /// when `channel_fault`, against the channel (which is disabled after enough).
    /// Returns true when this failure disabled the channel.
    pub(crate) async fn record_failure(
        &self,
        ch: &Channel,
        key: Option<usize>,
        reason: &str,
        channel_fault: bool,
    ) -> bool {
        let s = self.settings();
        let hot = &self.ports.hot;
        if let Some(k) = key {
            let n = hot.incr(&key_failures(ch.id, k), 1, None).await.unwrap_or(0);
            if n == i64::from(s.key_failure_threshold) {
                tracing::warn!(channel = %ch.spec.name, key = k, failures = n, "key resting");
                let _ = hot.set(&key_rest(ch.id, k), 1, Some(Duration::from_secs(s.key_rest_seconds))).await;
                let _ = hot.del(&key_failures(ch.id, k)).await;
            }
        }
        if !channel_fault {
            return false;
        }
        let n = hot.incr(&channel_failures(ch.id), 1, None).await.unwrap_or(0);
        // `==`: of concurrent failures, exactly one crosses the threshold.
        if n == i64::from(s.channel_failure_threshold) {
            let why = format!("disabled after {n} consecutive failures; last: {reason}");
            tracing::warn!(channel = %ch.spec.name, "{why}");
            crate::observe::auto_disabled(&ch.spec.name);
            // The counter stays past the threshold (so in-flight failures do not
            // disable it again) until a revival clears it.
            let now = self.ports.clock.now_ms();
            match self.ports.store.set_channel_status(ch.id, ChannelStatus::AutoDisabled, Some(why), now).await {
                Ok(()) => {
                    let _ = self.refresh(false).await;
                }
                Err(e) => {
                    tracing::error!(channel = %ch.spec.name, "could not disable channel: {e}")
                }
            }
            return true;
        }
        false
    }

    /// Forgets a channel's consecutive failures and wakes its resting keys.
    pub(crate) async fn clear_health(&self, ch: &Channel) {
        let hot = &self.ports.hot;
        let _ = hot.del(&channel_failures(ch.id)).await;
        for k in 0..ch.spec.keys.len() {
            let _ = hot.del(&key_failures(ch.id, k)).await;
            let _ = hot.del(&key_rest(ch.id, k)).await;
        }
    }

    /// Sets a channel's status; enabling also clears its failure counters and resting keys.
    pub async fn set_channel_status(
        &self,
        ch: &Channel,
        status: ChannelStatus,
        reason: Option<String>,
    ) -> Result<(), StoreError> {
        if status == ChannelStatus::Enabled {
            self.clear_health(ch).await;
        }
        self.ports.store.set_channel_status(ch.id, status, reason, self.ports.clock.now_ms()).await?;
        self.refresh(false).await?;
        Ok(())
    }

    /// Sends one minimal request to the channel (a 1-token chat, or an embedding
    /// for embedding models) with its first usable key. A channel listing only
    /// `prefix*` patterns is probed with the first upstream model they match.
    pub async fn probe(&self, ch: &Channel) -> ProbeResult {
        let named = ch
            .spec
            .models
            .iter()
            .find(|m| !oblivious_core::pattern::is_wildcard(m))
            .map(|m| ch.upstream_model(m).to_string())
            .or_else(|| ch.spec.model_mapping.values().next().cloned());
        let model = match named {
            Some(m) => m,
            // Only `prefix*` patterns: ask the upstream which of its models match.
            None => match self.upstream_models(ch).await {
                Ok(list) => list.into_iter().find(|m| ch.serves(m)).unwrap_or_default(),
                Err(message) => {
                    return ProbeResult { ok: false, status: None, latency_ms: 0, model: String::new(), message }
                }
            },
        };
        let wire = ch.spec.kind.info().wire;
        let (op, body) = if model.contains("embedding") && wire == Wire::OpenAi {
            (Op::OpenAiPath("/embeddings"), json!({ "model": model, "input": "ping" }))
        } else {
            let ping = ChatRequest {
                model: model.clone(),
                messages: vec![Message { role: Role::User, parts: vec![Part::Text("ping".into())] }],
                max_tokens: Some(1),
                ..ChatRequest::default()
            };
            (Op::Chat { stream: false }, wire::build_request(wire, &ping, &model, false).unwrap_or_default())
        };
        let usable = self.usable_keys(ch).await;
        let key = usable.iter().position(|u| *u).or(if ch.spec.keys.is_empty() { None } else { Some(0) });
        let clock = &self.ports.clock;
        let started = clock.now_us();
        let req = match self.upstream_request(ch, key, op, &model, body.to_string().into(), false).await {
            Ok(r) => r,
            Err(message) => {
                return ProbeResult { ok: false, status: None, latency_ms: 0, model, message };
            }
        };
        let timeout = Duration::from_millis(self.settings().upstream_timeout_ms);
        let send = Box::pin(self.ports.upstream.send(req));
        let (status, message) = match futures_util::future::select(send, Box::pin(clock.sleep(timeout))).await {
            futures_util::future::Either::Left((Ok(resp), _)) => {
                let mut body = resp.body;
                let mut text = Vec::new();
                while let Some(Ok(chunk)) = body.next().await {
                    text.extend_from_slice(&chunk);
                    if text.len() > 4096 {
                        break;
                    }
                }
                (Some(resp.status), String::from_utf8_lossy(&text).chars().take(300).collect())
            }
            futures_util::future::Either::Left((Err(e), _)) => (None, e.to_string()),
            futures_util::future::Either::Right(_) => (None, "timed out".to_string()),
        };
        let ok = status.is_some_and(|s| (200..300).contains(&s));
        ProbeResult {
            ok,
            status,
            latency_ms: (clock.now_us() - started) / 1000,
            model,
            message: if ok { "ok".into() } else { message },
        }
    }

    /// The models the channel's upstream offers, from its own listing endpoint.
    pub async fn upstream_models(&self, ch: &Channel) -> Result<Vec<String>, String> {
        let Some(url) = upstream::models_url(ch) else {
            return Ok(ch.spec.models.clone());
        };
        let key = if ch.spec.keys.is_empty() { None } else { Some(0) };
        let mut req = self.upstream_request(ch, key, Op::Chat { stream: false }, "", Default::default(), false).await?;
        req.method = http::Method::GET;
        req.url = url;
        req.headers.remove(http::header::CONTENT_TYPE);
        let timeout = Duration::from_millis(self.settings().upstream_timeout_ms);
        let send = Box::pin(self.ports.upstream.send(req));
        let resp = match futures_util::future::select(send, Box::pin(self.ports.clock.sleep(timeout))).await {
            futures_util::future::Either::Left((r, _)) => r.map_err(|e| e.to_string())?,
            futures_util::future::Either::Right(_) => return Err("timed out".into()),
        };
        let status = resp.status;
        let mut body = resp.body;
        let mut bytes = Vec::new();
        while let Some(chunk) = body.next().await {
            bytes.extend_from_slice(&chunk.map_err(|e| e.to_string())?);
            if bytes.len() > 8 << 20 {
                return Err("model list larger than 8 MiB".into());
            }
        }
        if !(200..300).contains(&status) {
            return Err(format!(
                "upstream answered {status}: {}",
                String::from_utf8_lossy(&bytes[..bytes.len().min(300)])
            ));
        }
        let v: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| format!("unreadable model list: {e}"))?;
        Ok(upstream::model_ids(&v))
    }

    /// Probes a channel; a pass re-enables an auto-disabled channel.
    pub async fn test_channel(&self, ch: &Channel) -> Result<ProbeResult, StoreError> {
        let result = self.probe(ch).await;
        if result.ok {
            self.record_success(ch.id, None).await;
            if ch.status == ChannelStatus::AutoDisabled {
                self.set_channel_status(ch, ChannelStatus::Enabled, None).await?;
            }
        }
        Ok(result)
    }

    /// One scheduled pass: probes every channel an operator has not turned
    /// off. A failed probe counts against the channel, which is disabled once
    /// `channel_failure_threshold` probes fail within `window`; a passing probe
    /// clears the count and revives a channel the gateway had disabled.
    pub async fn health_pass(&self, window: Duration) -> Result<Vec<HealthReport>, StoreError> {
        self.refresh(false).await?;
        let threshold = i64::from(self.settings().channel_failure_threshold.max(1));
        let channels: Vec<_> =
            self.snapshot().channels.iter().filter(|c| c.status != ChannelStatus::Disabled).cloned().collect();
        let probes = futures_util::future::join_all(channels.iter().map(|c| self.probe(c))).await;
        let mut reports = Vec::with_capacity(channels.len());
        for (ch, probe) in channels.iter().zip(probes) {
            let hot = &self.ports.hot;
            let (failures, action) = if probe.ok {
                let _ = hot.del(&probe_failures(ch.id)).await;
                self.record_success(ch.id, None).await;
                if ch.status == ChannelStatus::AutoDisabled {
                    self.set_channel_status(ch, ChannelStatus::Enabled, None).await?;
                    (0, "revived")
                } else {
                    (0, "")
                }
            } else {
                let n = hot.incr(&probe_failures(ch.id), 1, Some(window)).await.unwrap_or(0);
                if n >= threshold && ch.status == ChannelStatus::Enabled {
                    let why =
                        format!("health check failed {n} times within {}s; last: {}", window.as_secs(), probe.message);
                    tracing::warn!(channel = %ch.spec.name, "{why}");
                    crate::observe::auto_disabled(&ch.spec.name);
                    let now = self.ports.clock.now_ms();
                    self.ports.store.set_channel_status(ch.id, ChannelStatus::AutoDisabled, Some(why), now).await?;
                    (n, "disabled")
                } else {
                    (n, "")
                }
            };
            reports.push(HealthReport { channel_id: ch.id, channel: ch.spec.name.clone(), probe, failures, action });
        }
        self.refresh(false).await?;
        Ok(reports)
    }
}
