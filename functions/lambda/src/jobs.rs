//! The usage consumer's handler: an SQS batch in, the billing consumer over
//! it, and the messages to retry out (partial batch failures). A message that
//! cannot be read fails every time, so SQS moves it to the dead-letter queue
//! after the redrive policy's `maxReceiveCount`; nothing else in its batch waits.

use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent};
use oblivious_core::job::Job;

use crate::platform::Init;

pub async fn handle(init: &Init, event: SqsEvent) -> SqsBatchResponse {
    let mut failed: Vec<String> = Vec::new();
    let mut jobs = Vec::with_capacity(event.records.len());
    let mut ids = Vec::with_capacity(event.records.len());
    for m in event.records {
        let id = m.message_id.unwrap_or_default();
        match serde_json::from_str::<Job>(m.body.as_deref().unwrap_or("")) {
            Ok(job) => {
                jobs.push(job);
                ids.push(id);
            }
            Err(e) => {
                tracing::error!(message_id = %id, "unreadable job, left for the dead-letter queue: {e}");
                failed.push(id);
            }
        }
    }
    let results = oblivious_billing::consume(&init.relay.ports, &init.config.alerts, &jobs).await;
    for (id, result) in ids.into_iter().zip(results) {
        if let Err(e) = result {
            tracing::warn!(message_id = %id, "job failed, SQS will redeliver it: {e}");
            failed.push(id);
        }
    }
    let mut response = SqsBatchResponse::default();
    response.batch_item_failures = failed
        .into_iter()
        .map(|id| {
            let mut f = BatchItemFailure::default();
            f.item_identifier = id;
            f
        })
        .collect();
    response
}
