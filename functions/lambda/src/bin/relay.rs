//! The relay as a Lambda: every OpenAI-, Anthropic- and Gemini-shaped endpoint,
//! streamed (Function URL in RESPONSE_STREAM mode).

use oblivious_lambda::{http, init, init_telemetry, Settings};

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    init_telemetry();
    let init = init(&Settings::from_env()).await?;
    http::run(http::relay_app(&init)).await
}
