//! The usage consumer as a Lambda: SQS batches of usage (and webhook) jobs,
//! applied idempotently; failed messages reported back for redelivery.

use std::sync::Arc;

use aws_lambda_events::event::sqs::SqsEvent;
use lambda_runtime::{service_fn, LambdaEvent};
use oblivious_lambda::{emf, init, init_telemetry, jobs, Settings};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    init_telemetry();
    let init = Arc::new(init(&Settings::from_env()).await?);
    lambda_runtime::run(service_fn(move |event: LambdaEvent<SqsEvent>| {
        let init = init.clone();
        async move { Ok::<_, lambda_runtime::Error>(emf::flushed(&init.tasks, jobs::handle(&init, event.payload)).await) }
    }))
    .await
}
