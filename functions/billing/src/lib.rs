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
use oblivious_ports::{Clock, Ledger, Platform, Ports, Queue, Settled, Store, Upstream, UpstreamRequest};

/// What became of a job.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Applied,
    /// Already applied by an earlier delivery.
    Duplicate,
}

const WEBHOOK_TIMEOUT: Duration = Duration::from_secs(10);

/// Applies a batch of jobs; one result per job, in order. Usage records are
/// written in one transaction; should that fail, each is tried alone so one
/// bad record cannot hold the others back. An `Err` leaves its job queued.
/// Alerts are checked once per user and token per batch, on their final
/// balances (a failed check is logged: the money is already settled).
pub async fn consume<P: Platform>(
    ports: &Ports<P>,
    settings: &AlertSettings,
    jobs: &[Job],
) -> Vec<Result<Outcome, String>> {
    let mut results: Vec<Option<Result<Outcome, String>>> = vec![None; jobs.len()];
    let usage: Vec<(usize, &UsageRecord)> =
        jobs.iter().enumerate().filter_map(|(i, j)| if let Job::Usage(u) = j { Some((i, u)) } else { None }).collect();
    let mut balances = Balances::new();
    if !usage.is_empty() {
        let records: Vec<UsageRecord> = usage.iter().map(|(_, u)| (*u).clone()).collect();
        match ports.store.record_usages(records).await {
            Ok(settled) => {
                for ((i, u), s) in usage.iter().zip(settled) {
                    results[*i] = Some(Ok(note(&mut balances, u, s)));
                }
            }
            Err(e) if usage.len() > 1 => {
                tracing::warn!("usage batch failed, applying one by one: {e}");
                for (i, u) in &usage {
                    results[*i] = Some(match ports.store.record_usages(vec![(*u).clone()]).await {
                        Ok(mut s) => Ok(note(&mut balances, u, s.pop().flatten())),
                        Err(e) => Err(e.to_string()),
                    });
                }
            }
            Err(e) => results[usage[0].0] = Some(Err(e.to_string())),
        }
    }
    if let Err(e) = check_alerts(ports, settings, balances).await {
        tracing::error!("balance alerts not checked: {e}");
    }
    for (i, job) in jobs.iter().enumerate() {
        if let Job::Webhook { url, payload, .. } = job {
            results[i] = Some(deliver(ports, url, payload).await.map(|()| Outcome::Applied));
        }
    }
    results.into_iter().map(|r| r.unwrap_or_else(|| Err("job not handled".into()))).collect()
}

/// Latest balance per limited subject: (kind, id) → (name, remaining, used).
type Balances = std::collections::BTreeMap<(&'static str, i64), (String, i64, i64)>;

/// Records what a settled usage row left behind, for the alert check.
fn note(balances: &mut Balances, u: &UsageRecord, settled: Option<Settled>) -> Outcome {
    let Some(settled) = settled else {
        tracing::debug!(request_id = %u.request_id, "usage already recorded");
        return Outcome::Duplicate;
    };
    if u.cost > 0 {
        if let Some(t) = settled.token.filter(|t| !t.unlimited) {
            balances.insert(("token", t.id), (t.name, t.remaining_quota, t.used_quota));
        }
        if let Some(user) = settled.user.filter(|u| !u.unlimited) {
            balances.insert(("user", user.id), (user.name, user.quota, user.used_quota));
        }
    }
    Outcome::Applied
}

/// Compares each subject's share left with the thresholds.
async fn check_alerts<P: Platform>(
    ports: &Ports<P>,
    settings: &AlertSettings,
    balances: Balances,
) -> Result<(), String> {
    let store = &ports.store;
    let s = |e: oblivious_ports::StoreError| e.to_string();
    let now = ports.clock.now_ms();
    for ((kind, id), (name, remaining, used)) in balances {
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
            metrics::counter!(oblivious_core::telemetry::BALANCE_ALERTS, "kind" => kind).increment(1);
            if let Some(url) = &settings.webhook_url {
                let payload = serde_json::json!({ "type": "balance_alert", "alert": alert }).to_string();
                let job = Job::Webhook { id: format!("alert-{}", alert.id), url: url.clone(), payload };
                ports.queue.publish(job).await.map_err(|e| e.to_string())?;
            }
        }
    }
    Ok(())
}

/// The alert for a job the queue parked after its last attempt (a dead
/// letter): a webhook to the alerts URL. None for webhooks themselves (their
/// own failure is what parked them) or without a URL; the parking is logged either way.
pub fn dead_job_alert(settings: &AlertSettings, job: &Job, attempts: i64, error: &str) -> Option<Job> {
    let url = settings.webhook_url.as_ref()?;
    let kind = match job {
        Job::Usage(_) => "usage",
        Job::Webhook { .. } => return None,
    };
    let key = job.dedup_key();
    let payload = serde_json::json!({
        "type": "job_dead",
        "job": { "kind": kind, "key": key, "attempts": attempts, "error": error },
    });
    Some(Job::Webhook { id: format!("dead-{key}"), url: url.clone(), payload: payload.to_string() })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_parked_usage_job_raises_a_webhook_alert_and_a_parked_webhook_does_not() {
        let usage = Job::Usage(UsageRecord { request_id: "req-1".into(), ..UsageRecord::default() });
        assert!(dead_job_alert(&AlertSettings::default(), &usage, 8, "boom").is_none(), "no URL, no webhook");
        let settings =
            AlertSettings { webhook_url: Some("http://127.0.0.1:1/hook".into()), ..AlertSettings::default() };
        let Some(Job::Webhook { id, url, payload }) = dead_job_alert(&settings, &usage, 8, "boom") else {
            panic!("a webhook job")
        };
        assert_eq!((id.as_str(), url.as_str()), ("dead-req-1", "http://127.0.0.1:1/hook"));
        let v: serde_json::Value = serde_json::from_str(&payload).unwrap();
        assert_eq!(v["type"], "job_dead");
        assert_eq!((v["job"]["kind"].as_str(), v["job"]["attempts"].as_i64()), (Some("usage"), Some(8)));
        let hook = Job::Webhook { id: "x".into(), url: "u".into(), payload: "{}".into() };
        assert!(dead_job_alert(&settings, &hook, 8, "boom").is_none());
    }
}
