//! The scheduled reservation sweeper as a Lambda: refunds money held by
//! requests that never settled.

use std::sync::Arc;

use lambda_runtime::{service_fn, LambdaEvent};
use oblivious_lambda::{emf, init, init_telemetry, scheduled, Settings};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    init_telemetry();
    let init = Arc::new(init(&Settings::from_env()).await?);
    lambda_runtime::run(service_fn(move |_: LambdaEvent<serde_json::Value>| {
        let init = init.clone();
        async move { emf::flushed(&init.tasks, scheduled::sweep(&init)).await.map_err(lambda_runtime::Error::from) }
    }))
    .await
}
