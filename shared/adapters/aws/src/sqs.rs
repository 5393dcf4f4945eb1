//! The job queue on SQS. Publishing sends the job as JSON (durable once SQS
//! answers); consumers are Lambdas fed by an event source mapping, which
//! receives, deletes what the handler did not report as failed, and moves a
//! message that keeps failing to the dead-letter queue (`maxReceiveCount` in
//! the redrive policy). `receive`/`delete` serve pollers outside Lambda.

use std::collections::HashMap;
use std::time::Duration;

use oblivious_core::job::Job;
use oblivious_ports::{Clock, PortError, Queue, Upstream};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::client::{AwsClient, AwsError, Service};

fn port(e: AwsError) -> PortError {
    PortError(e.to_string())
}

/// SQS takes at most 10 messages per batch call.
const BATCH: usize = 10;

pub struct SqsQueue<U, C> {
    client: AwsClient<U, C>,
    url: String,
}

impl<U, C> Clone for SqsQueue<U, C> {
    fn clone(&self) -> Self {
        SqsQueue { client: self.client.clone(), url: self.url.clone() }
    }
}

/// A received message and the handle to delete it.
#[derive(Debug)]
pub struct Received {
    pub message_id: String,
    pub receipt: String,
    pub body: String,
    pub receive_count: u32,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct BatchFailure {
    #[serde(default)]
    code: String,
    message: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct SendBatchOutput {
    #[serde(default)]
    failed: Vec<BatchFailure>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Message {
    #[serde(default)]
    message_id: String,
    #[serde(default)]
    receipt_handle: String,
    #[serde(default)]
    body: String,
    #[serde(default)]
    attributes: HashMap<String, String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ReceiveOutput {
    #[serde(default)]
    messages: Vec<Message>,
}

impl<U: Upstream, C: Clock> SqsQueue<U, C> {
    pub fn new(client: AwsClient<U, C>, url: impl Into<String>) -> Self {
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
                entries.push(json!({ "Id": i.to_string(), "MessageBody": body }));
            }
            let body = json!({ "QueueUrl": self.url, "Entries": entries });
            let out: SendBatchOutput =
                self.client.call_as(Service::Sqs, "SendMessageBatch", &body).await.map_err(port)?;
            if let Some(f) = out.failed.first() {
                return Err(PortError(format!("SQS refused a job: {}", f.message.as_deref().unwrap_or(&f.code))));
            }
        }
        Ok(())
    }

    /// Long-polls for up to `max` (≤ 10) messages, hiding them for `visibility`.
    pub async fn receive(&self, max: i32, wait: Duration, visibility: Duration) -> Result<Vec<Received>, PortError> {
        let body = json!({
            "QueueUrl": self.url,
            "MaxNumberOfMessages": max.clamp(1, 10),
            "WaitTimeSeconds": wait.as_secs().min(20),
            "VisibilityTimeout": visibility.as_secs(),
            "MessageSystemAttributeNames": ["ApproximateReceiveCount"],
        });
        let out: ReceiveOutput = self.client.call_as(Service::Sqs, "ReceiveMessage", &body).await.map_err(port)?;
        Ok(out
            .messages
            .into_iter()
            .map(|m| Received {
                receive_count: m.attributes.get("ApproximateReceiveCount").and_then(|c| c.parse().ok()).unwrap_or(1),
                message_id: m.message_id,
                receipt: m.receipt_handle,
                body: m.body,
            })
            .collect())
    }

    /// Deletes handled messages by receipt handle.
    pub async fn delete(&self, receipts: &[String]) -> Result<(), PortError> {
        for chunk in receipts.chunks(BATCH) {
            let entries: Vec<Value> =
                chunk.iter().enumerate().map(|(i, r)| json!({ "Id": i.to_string(), "ReceiptHandle": r })).collect();
            let body = json!({ "QueueUrl": self.url, "Entries": entries });
            self.client.call(Service::Sqs, "DeleteMessageBatch", &body).await.map_err(port)?;
        }
        Ok(())
    }
}

impl<U: Upstream, C: Clock> Queue for SqsQueue<U, C> {
    async fn publish(&self, job: Job) -> Result<(), PortError> {
        let body = serde_json::to_string(&job).map_err(|e| PortError(e.to_string()))?;
        let req = json!({ "QueueUrl": self.url, "MessageBody": body });
        self.client.call(Service::Sqs, "SendMessage", &req).await.map_err(port)?;
        Ok(())
    }
}
