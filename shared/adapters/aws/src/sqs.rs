//! The job queue on SQS. Publishing sends the job as JSON (durable once SQS
//! answers); consumers are Lambdas fed by an event source mapping, which
//! receives, deletes what the handler did not report as failed, and moves a
//! message that keeps failing to the dead-letter queue (`maxReceiveCount` in
//! the redrive policy). `receive`/`delete` serve pollers outside Lambda.

use std::time::Duration;

use aws_sdk_sqs::types::{DeleteMessageBatchRequestEntry, SendMessageBatchRequestEntry};
use aws_sdk_sqs::Client;
use oblivious_core::job::Job;
use oblivious_ports::{PortError, Queue};

fn port(e: impl std::error::Error + 'static) -> PortError {
    PortError(aws_sdk_sqs::error::DisplayErrorContext(e).to_string())
}

/// SQS takes at most 10 messages per batch call.
const BATCH: usize = 10;

#[derive(Clone)]
pub struct SqsQueue {
    client: Client,
    url: String,
}

/// A received message and the handle to delete it.
#[derive(Debug)]
pub struct Received {
    pub message_id: String,
    pub receipt: String,
    pub body: String,
    pub receive_count: u32,
}

impl SqsQueue {
    pub fn new(client: Client, url: impl Into<String>) -> Self {
        SqsQueue { client, url: url.into() }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// Sends jobs in batches of ten; fails if any message was not accepted.
    pub async fn publish_batch(&self, jobs: &[Job]) -> Result<(), PortError> {
        for chunk in jobs.chunks(BATCH) {
            let mut entries = Vec::with_capacity(chunk.len());
            for (i, job) in chunk.iter().enumerate() {
                let body = serde_json::to_string(job).map_err(|e| PortError(e.to_string()))?;
                entries.push(
                    SendMessageBatchRequestEntry::builder()
                        .id(i.to_string())
                        .message_body(body)
                        .build()
                        .map_err(port)?,
                );
            }
            let out = self
                .client
                .send_message_batch()
                .queue_url(&self.url)
                .set_entries(Some(entries))
                .send()
                .await
                .map_err(port)?;
            if let Some(f) = out.failed.first() {
                return Err(PortError(format!("SQS refused a job: {}", f.message.as_deref().unwrap_or(&f.code))));
            }
        }
        Ok(())
    }

    /// Long-polls for up to `max` (≤ 10) messages, hiding them for `visibility`.
    pub async fn receive(&self, max: i32, wait: Duration, visibility: Duration) -> Result<Vec<Received>, PortError> {
        let out = self
            .client
            .receive_message()
            .queue_url(&self.url)
            .max_number_of_messages(max.clamp(1, 10))
            .wait_time_seconds(wait.as_secs().min(20) as i32)
            .visibility_timeout(visibility.as_secs() as i32)
            .message_system_attribute_names(aws_sdk_sqs::types::MessageSystemAttributeName::ApproximateReceiveCount)
            .send()
            .await
            .map_err(port)?;
        Ok(out
            .messages
            .unwrap_or_default()
            .into_iter()
            .map(|m| {
                let receive_count = m
                    .attributes
                    .as_ref()
                    .and_then(|a| a.get(&aws_sdk_sqs::types::MessageSystemAttributeName::ApproximateReceiveCount))
                    .and_then(|c| c.parse().ok())
                    .unwrap_or(1);
                Received {
                    message_id: m.message_id.unwrap_or_default(),
                    receipt: m.receipt_handle.unwrap_or_default(),
                    body: m.body.unwrap_or_default(),
                    receive_count,
                }
            })
            .collect())
    }

    /// Deletes handled messages by receipt handle.
    pub async fn delete(&self, receipts: &[String]) -> Result<(), PortError> {
        for chunk in receipts.chunks(BATCH) {
            let entries = chunk
                .iter()
                .enumerate()
                .map(|(i, r)| DeleteMessageBatchRequestEntry::builder().id(i.to_string()).receipt_handle(r).build())
                .collect::<Result<Vec<_>, _>>()
                .map_err(port)?;
            self.client
                .delete_message_batch()
                .queue_url(&self.url)
                .set_entries(Some(entries))
                .send()
                .await
                .map_err(port)?;
        }
        Ok(())
    }
}

impl Queue for SqsQueue {
    async fn publish(&self, job: Job) -> Result<(), PortError> {
        let body = serde_json::to_string(&job).map_err(|e| PortError(e.to_string()))?;
        self.client.send_message().queue_url(&self.url).message_body(body).send().await.map_err(port)?;
        Ok(())
    }
}
