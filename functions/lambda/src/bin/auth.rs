//! The auth function as a Lambda (HTTP API, buffered JSON): sign-up, sign-in,
//! sessions, two-factor, the signed-in user's account (`/api/me*`; its keys,
//! `/api/me/keys*`, are the admin function's) and the account parts of the
//! admin API. At cold start it makes sure the `default` group (which sign-ups
//! join) and the `admin` user exist, as the admin function does: whichever
//! starts first on a new deployment.

use oblivious_lambda::{http, init, init_telemetry, Settings};

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    init_telemetry();
    let init = init(&Settings::from_env()).await?;
    oblivious_admin::bootstrap::ensure_basics(&init.relay.ports).await?;
    http::run_buffered(http::auth_app(&init)).await
}
