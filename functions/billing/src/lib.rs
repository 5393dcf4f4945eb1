//! The billing consumer: takes jobs off the queue and applies them. Usage
//! records are idempotent by request id (a redelivery after a crash or a
//! retry never writes a row or moves money twice); a charge that leaves a
//! user or token under an alert threshold records an alert and queues its
//! webhook; webhooks are retried by the queue until they answer 2xx.

use std::time::Duration;

use futures_util::future::{select, Either};
use oblivious_core::alerts::{self, Alert, AlertSettings};
use oblivious_core::job::Job;
use oblivious_core::model::UsageRecord;
use oblivious_ports::{Clock, Ledger, Platform, Ports, Queue, Store, Upstream, UpstreamRequest};

/// What became of a job.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Applied,
    /// Already applied by an earlier delivery.
    Duplicate,
}

const WEBHOOK_TIMEOUT: Duration = Duration::from_secs(10);

/// Applies one job. An `Err` leaves the job on the queue to be retried.
pub async fn consume<P: Platform>(ports: &Ports<P>, settings: &AlertSettings, job: &Job) -> Result<Outcome, String> {
    match job {
        Job::Usage(record) => {
            let fresh = ports.store.record_usage(record).await.map_err(|e| e.to_string())?;
            if !fresh {
                tracing::debug!(request_id = %record.request_id, "usage already recorded");
                return Ok(Outcome::Duplicate);
            }
            if record.cost > 0 {
                check_alerts(ports, settings, record).await.map_err(|e| format!("alerts: {e}"))?;
            }
            Ok(Outcome::Applied)
        }
        Job::Webhook { url, payload, .. } => deliver(ports, url, payload).await.map(|()| Outcome::Applied),
    }
}

/// Compares the token's and the user's share left with the thresholds.
async fn check_alerts<P: Platform>(ports: &Ports<P>, settings: &AlertSettings, u: &UsageRecord) -> Result<(), String> {
    let store = &ports.store;
    let s = |e: oblivious_ports::StoreError| e.to_string();
    let mut subjects = Vec::new();
    if let Some(t) = store.token(u.token_id).await.map_err(s)?.filter(|t| !t.unlimited) {
        subjects.push(("token", t.id, t.name, t.remaining_quota, t.used_quota));
    }
    if let Some(user) = store.user(u.user_id).await.map_err(s)?.filter(|u| !u.unlimited) {
        subjects.push(("user", user.id, user.name, user.quota, user.used_quota));
    }
    let now = ports.clock.now_ms();
    for (kind, id, name, remaining, used) in subjects {
        let Some(left) = alerts::left_bp(remaining, used) else { continue };
        let subject = format!("{kind}:{id}");
        let last = store.alert_level(&subject).await.map_err(s)?;
        let (level, newly) = alerts::crossed(left, &settings.thresholds_percent, last);
        if level == last && newly.is_empty() {
            continue;
        }
        let raised: Vec<Alert> = newly
            .into_iter()
            .map(|threshold_percent| Alert {
                id: 0,
                kind: kind.to_string(),
                subject_id: id,
                name: name.clone(),
                threshold_percent,
                remaining,
                total: remaining.max(0) + used,
                created_at: now,
            })
            .collect();
        let stored = store.record_alerts(&subject, level, raised).await.map_err(s)?;
        for alert in stored {
            tracing::warn!(kind, id, threshold = alert.threshold_percent, remaining, "balance alert");
            if let Some(url) = &settings.webhook_url {
                let payload = serde_json::json!({ "type": "balance_alert", "alert": alert }).to_string();
                let job = Job::Webhook { id: format!("alert-{}", alert.id), url: url.clone(), payload };
                ports.queue.publish(job).await.map_err(|e| e.to_string())?;
            }
        }
    }
    Ok(())
}

async fn deliver<P: Platform>(ports: &Ports<P>, url: &str, payload: &str) -> Result<(), String> {
    let mut headers = http::HeaderMap::new();
    headers.insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
    let req = UpstreamRequest {
        method: http::Method::POST,
        url: url.to_string(),
        headers,
        body: bytes::Bytes::from(payload.to_string()),
    };
    let send = Box::pin(ports.upstream.send(req));
    match select(send, Box::pin(ports.clock.sleep(WEBHOOK_TIMEOUT))).await {
        Either::Left((Ok(resp), _)) if (200..300).contains(&resp.status) => Ok(()),
        Either::Left((Ok(resp), _)) => Err(format!("webhook answered {}", resp.status)),
        Either::Left((Err(e), _)) => Err(format!("webhook: {e}")),
        Either::Right(_) => Err("webhook timed out".into()),
    }
}
