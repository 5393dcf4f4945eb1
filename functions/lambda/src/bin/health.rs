//! The scheduled health check as a Lambda: probes channels, disables those
//! failing within the window, revives those that pass again.

use std::sync::Arc;

use lambda_runtime::{service_fn, LambdaEvent};
use oblivious_lambda::{emf, init, init_telemetry, scheduled, Settings};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    init_telemetry();
    let init = Arc::new(init(&Settings::from_env()).await?);
    let window = init.relay.settings().health_window();
    lambda_runtime::run(service_fn(move |_: LambdaEvent<serde_json::Value>| {
        let init = init.clone();
        async move {
            emf::flushed(&init.tasks, scheduled::health(&init, window)).await.map_err(lambda_runtime::Error::from)
        }
    }))
    .await
}
