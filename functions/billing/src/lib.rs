//! The billing consumer: takes jobs off the queue and applies them to the store.
//! Each job is idempotent by its request id, so redelivery after a crash or a
//! retry never writes a usage row or charges quota twice.

use oblivious_core::job::Job;
use oblivious_ports::{Store, StoreError};

/// What became of a job.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Applied,
    /// Already applied by an earlier delivery.
    Duplicate,
}

pub async fn consume<S: Store>(store: &S, job: &Job) -> Result<Outcome, StoreError> {
    match job {
        Job::Usage(record) => {
            let fresh = store.record_usage(record).await?;
            if !fresh {
                tracing::debug!(request_id = %record.request_id, "usage already recorded");
            }
            Ok(if fresh { Outcome::Applied } else { Outcome::Duplicate })
        }
    }
}
