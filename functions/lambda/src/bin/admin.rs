//! The admin API as a Lambda (HTTP API, buffered JSON). At cold start it makes sure the
//! `default` group and `admin` user exist and syncs the config's channels,
//! groups and prices into the store.

use oblivious_lambda::{http, init, init_telemetry, scheduled, Settings};

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    init_telemetry();
    let init = init(&Settings::from_env()).await?;
    oblivious_admin::bootstrap::ensure_basics(&init.relay.ports).await?;
    scheduled::sync_config(&init).await?;
    http::run_buffered(http::admin_app(&init)).await
}
