//! The AWS Lambda shells. Each binary in `src/bin/` is one function: it builds
//! its ports once per cold start ([`init`]) and hands events to the same
//! function code the local runtime runs. Each invocation ends by printing
//! its metrics as CloudWatch EMF lines ([`emf`]).
//!
//! | binary | trigger | runs |
//! |---|---|---|
//! | `relay` | Function URL (RESPONSE_STREAM) | the relay router, streamed |
//! | `admin` | HTTP API | the admin router (and the config sync) |
//! | `auth` | HTTP API (same API, its own routes) | the auth router: sign-up, sign-in, sessions, `/api/me*` |
//! | `usage` | SQS (usage queue) | the billing consumer, partial batch failures |
//! | `health` | EventBridge schedule | channel probes: disable and revive |
//! | `sweeper` | EventBridge schedule | refunds reservations left open |

pub mod emf;
pub mod env;
pub mod http;
pub mod jobs;
pub mod platform;
pub mod scheduled;
pub mod tasks;

pub use env::Settings;
pub use platform::{init, init_with, Aws, Init};

/// A function's telemetry, set up first thing in `main`: logs ([`init_tracing`])
/// and metrics as CloudWatch EMF lines on stdout ([`emf`]; off with `OBLIVIOUS_EMF=0`).
pub fn init_telemetry() {
    init_tracing();
    emf::install_from_env();
}

/// Logs as JSON lines to CloudWatch (level from `RUST_LOG`, default info).
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).without_time().with_ansi(false).try_init();
}
