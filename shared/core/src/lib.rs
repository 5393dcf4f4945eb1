//! Oblivious domain core: plain types and pure functions with no I/O, no clock
//! and no randomness of their own (callers pass `now` and random numbers in), so
//! everything here runs unchanged on native and on `wasm32-unknown-unknown`.

pub mod alerts;
pub mod apikey;
pub mod auth;
pub mod authz;
pub mod config;
pub mod count;
pub mod error;
pub mod forwarded;
pub mod job;
pub mod json_size;
pub mod model;
pub mod money;
pub mod pattern;
pub mod pricing;
pub mod provider;
pub mod ratelimit;
pub mod redis_lua;
pub mod retry;
pub mod select;
pub mod sign;
pub mod sse;
pub mod telemetry;
pub mod upstream_url;
pub mod wire;

pub use error::{ApiError, ErrorKind};
