//! Jobs carried by the queue port from functions to consumers.

use serde::{Deserialize, Serialize};

use crate::model::UsageRecord;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Job {
    /// A finished relay request: write the usage log and charge the quota.
    Usage(UsageRecord),
    /// POST `payload` (JSON) to `url`; retried with backoff until it answers 2xx.
    Webhook { id: String, url: String, payload: String },
}

impl Job {
    /// The key that makes processing idempotent.
    pub fn dedup_key(&self) -> &str {
        match self {
            Job::Usage(u) => &u.request_id,
            Job::Webhook { id, .. } => id,
        }
    }
}
