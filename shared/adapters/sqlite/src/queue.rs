//! The in-process queue: `publish` writes the job to the `outbox` table (so a
//! crash loses nothing) and wakes the consumer loop, which deletes the row once
//! the job is done, retries with backoff, and parks a job after too many tries.

use std::sync::Arc;
use std::time::Duration;

use oblivious_core::job::Job;
use oblivious_ports::{PortError, Queue, StoreError};
use rusqlite::params;
use tokio::sync::Notify;

use crate::db::{Cached, Db};

/// Attempts before a job is parked as dead (kept for inspection).
pub const MAX_ATTEMPTS: i64 = 8;

#[derive(Clone)]
pub struct SqliteQueue {
    db: Db,
    wake: Arc<Notify>,
}

#[derive(Debug)]
pub struct OutboxJob {
    pub id: i64,
    pub job: Job,
    pub attempts: i64,
}

impl SqliteQueue {
    pub fn new(db: Db) -> Self {
        SqliteQueue { db, wake: Arc::new(Notify::new()) }
    }

    /// Jobs due at `now_ms`, oldest first. Unparseable rows are parked.
    pub async fn due(&self, now_ms: i64, limit: i64) -> Result<Vec<OutboxJob>, StoreError> {
        self.db
            .write(move |c| {
                let mut st = c.prepare_cached(
                    "SELECT id, payload, attempts FROM outbox WHERE dead = 0 AND next_at <= ?1 ORDER BY id LIMIT ?2",
                )?;
                let rows = st
                    .query_map(params![now_ms, limit], |r| {
                        Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?, r.get::<_, i64>(2)?))
                    })?
                    .collect::<Result<Vec<_>, _>>()?;
                drop(st);
                let mut jobs = Vec::with_capacity(rows.len());
                for (id, payload, attempts) in rows {
                    match serde_json::from_str(&payload) {
                        Ok(job) => jobs.push(OutboxJob { id, job, attempts }),
                        Err(e) => {
                            c.exec(
                                "UPDATE outbox SET dead = 1, last_error = ?1 WHERE id = ?2",
                                params![e.to_string(), id],
                            )?;
                        }
                    }
                }
                Ok(jobs)
            })
            .await
    }

    /// Removes finished jobs.
    pub async fn ack(&self, ids: Vec<i64>) -> Result<(), StoreError> {
        if ids.is_empty() {
            return Ok(());
        }
        self.db
            .write(move |c| {
                let marks = vec!["?"; ids.len()].join(",");
                c.exec(&format!("DELETE FROM outbox WHERE id IN ({marks})"), rusqlite::params_from_iter(ids))?;
                Ok(())
            })
            .await
    }

    /// Records a failed attempt; retries later with backoff, or parks the job
    /// (returns `true` when this attempt parked it).
    pub async fn fail(&self, id: i64, error: String, now_ms: i64) -> Result<bool, StoreError> {
        self.db
            .write(move |c| {
                let attempts: i64 = c.row(
                    "UPDATE outbox SET attempts = attempts + 1, last_error = ?1 WHERE id = ?2 RETURNING attempts",
                    params![error, id],
                    |r| r.get(0),
                )?;
                let dead = attempts >= MAX_ATTEMPTS;
                let delay = 250i64 << attempts.min(10);
                c.exec("UPDATE outbox SET dead = ?1, next_at = ?2 WHERE id = ?3", params![dead, now_ms + delay, id])?;
                if dead {
                    tracing::error!(id, attempts, "job parked after repeated failures");
                }
                Ok(dead)
            })
            .await
    }

    /// Jobs waiting (not parked), and parked.
    pub async fn depth(&self) -> Result<(i64, i64), StoreError> {
        self.db
            .read(|c| {
                Ok(c.row("SELECT COALESCE(SUM(dead = 0), 0), COALESCE(SUM(dead = 1), 0) FROM outbox", [], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })?)
            })
            .await
    }

    /// Resolves when a job is published (or `max` elapses, to pick up retries).
    pub async fn wait(&self, max: Duration) {
        let _ = tokio::time::timeout(max, self.wake.notified()).await;
    }
}

impl Queue for SqliteQueue {
    async fn publish(&self, job: Job) -> Result<(), PortError> {
        let payload = serde_json::to_string(&job).map_err(|e| PortError(e.to_string()))?;
        self.db
            .write(move |c| {
                c.exec(
                    "INSERT INTO outbox (payload, created_at) VALUES (?1, CAST(strftime('%s','now') AS INTEGER) * 1000)",
                    [payload],
                )?;
                Ok(())
            })
            .await
            .map_err(|e| PortError(e.to_string()))?;
        self.wake.notify_one();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use oblivious_core::model::UsageRecord;
    use oblivious_ports::{Ledger, Page};

    #[tokio::test(flavor = "multi_thread")]
    async fn a_job_failing_every_time_is_parked_and_listed() {
        let dir = std::env::temp_dir().join(format!("obl-sqlite-dead-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let db = Db::open(&dir.join("t.db")).unwrap();
        let (queue, store) = (SqliteQueue::new(db.clone()), crate::SqliteStore::new(db));
        let record = UsageRecord { request_id: "req-dead".into(), ..UsageRecord::default() };
        queue.publish(Job::Usage(record)).await.unwrap();
        for attempt in 0..MAX_ATTEMPTS {
            let due = queue.due(i64::MAX, 10).await.unwrap();
            assert_eq!(due.len(), 1, "still retried at attempt {attempt}");
            let parked = queue.fail(due[0].id, "Invalid column type Real".into(), 0).await.unwrap();
            assert_eq!(parked, attempt == MAX_ATTEMPTS - 1, "parked by the last attempt only");
        }
        assert!(queue.due(i64::MAX, 10).await.unwrap().is_empty(), "parked, not retried forever");
        assert_eq!(queue.depth().await.unwrap(), (0, 1));
        let dead = store.dead_jobs(Page { offset: 0, limit: 10 }).await.unwrap();
        assert_eq!(dead.total, 1);
        let job = &dead.items[0];
        assert_eq!((job.kind.as_str(), job.key.as_str(), job.attempts), ("usage", "req-dead", MAX_ATTEMPTS));
        assert_eq!(job.last_error.as_deref(), Some("Invalid column type Real"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
