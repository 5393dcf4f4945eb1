#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test
//! Test support: a mock OpenAI-compatible upstream and a harness that runs the
//! real `oblivious` binary on 127.0.0.1, and the emulated AWS stack for the Lambda functions.

pub mod aws;
pub mod edge;
pub mod gateway;
pub mod mail;
pub mod oidc;
pub mod otlp;
pub mod wire_mock;

pub use gateway::Gateway;
pub use oblivious_mock as mock;
pub use oblivious_mock::{Behavior, Mock};
