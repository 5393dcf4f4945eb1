//! AWS adapters for the serverless runtime: the durable store on DynamoDB
//! ([`DynamoStore`]) and the job queue on SQS ([`SqsQueue`]). Both take an
//! SDK client, so the Lambda shells build clients once per cold start.

pub mod dynamo;
pub mod sqs;

pub use dynamo::{DynamoStore, TABLES};
pub use sqs::SqsQueue;

/// SDK configuration from the environment (region, credentials), pointed at
/// `endpoint` when given (an emulator such as moto on 127.0.0.1).
pub async fn sdk_config(endpoint: Option<&str>) -> aws_config::SdkConfig {
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
    if let Some(url) = endpoint {
        loader = loader.endpoint_url(url);
    }
    loader.load().await
}

/// SDK configuration for an emulator at `endpoint` (tests, local runs): fixed
/// dummy credentials and region, nothing read from the environment.
pub async fn emulator_config(endpoint: &str) -> aws_config::SdkConfig {
    let creds = aws_sdk_dynamodb::config::Credentials::new("test", "test", None, None, "emulator");
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(creds)
        .endpoint_url(endpoint)
        .load()
        .await
}
