//! AWS adapters for the serverless runtime and the edge: the durable store on
//! DynamoDB ([`DynamoStore`]) and the job queue on SQS ([`SqsQueue`]), both
//! over the services' HTTPS JSON APIs signed with SigV4 ([`AwsClient`]). No
//! SDK: outbound HTTP is the `Upstream` port and time the `Clock` port, so the
//! Lambda shells (reqwest) and the Worker (fetch) run the same adapter. Shells
//! build one client per cold start and share it.

mod client;
pub mod dynamo;
pub mod sqs;

pub use client::{credentials_from_env, AwsClient, AwsCredentials, AwsError, Service};
pub use dynamo::{DynamoStore, TABLES};
pub use sqs::SqsQueue;
