//! Ports: the capabilities a function may use. Functions are generic over a
//! [`Platform`] that names one adapter per port, so dispatch is static and the
//! same function code runs on SQLite, DynamoDB or the edge.
//!
//! Every future is `Send`: native servers need it, and on wasm32 the worker
//! shell wraps its single-threaded JS futures (which is sound there) instead
//! of every port paying for a `?Send` variant.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use futures_util::Stream;
use oblivious_core::job::Job;

pub mod accounts;
#[cfg(feature = "conformance")]
pub mod conformance;
pub mod mail;
pub mod running;
pub mod seal;
pub mod store;
pub use accounts::*;
pub use mail::{Mail, Mailer};
pub use running::{Running, RunningGuard};
pub use seal::{Sealer, SECRET_ENV};
pub use store::*;

/// Cache with TTL and atomic counters (in-process locally, Redis when distributed).
pub trait Hot: Send + Sync + 'static {
    fn get(&self, key: &str) -> impl Future<Output = Result<Option<i64>, PortError>> + Send;
    /// Adds `delta` and returns the new value; `ttl` applies when the key is created.
    fn incr(&self, key: &str, delta: i64, ttl: Option<Duration>)
        -> impl Future<Output = Result<i64, PortError>> + Send;
    fn set(&self, key: &str, value: i64, ttl: Option<Duration>) -> impl Future<Output = Result<(), PortError>> + Send;
    fn del(&self, key: &str) -> impl Future<Output = Result<(), PortError>> + Send;
    fn get_bytes(&self, key: &str) -> impl Future<Output = Result<Option<Bytes>, PortError>> + Send;
    fn set_bytes(
        &self,
        key: &str,
        value: Bytes,
        ttl: Option<Duration>,
    ) -> impl Future<Output = Result<(), PortError>> + Send;
    /// Sliding-window counter (the previous fixed window weighted by how much
    /// of it still overlaps, plus the current one): adds `cost` unless that
    /// would pass `limit`. A cost ≤ 0 (a correction) always applies. Atomic.
    fn window_hit(
        &self,
        key: &str,
        window_ms: i64,
        limit: i64,
        cost: i64,
        now_ms: i64,
    ) -> impl Future<Output = Result<Hit, PortError>> + Send;
    /// Increments `key` unless it already holds `limit`; the new count, or
    /// `None` when full. `ttl` bounds how long a crashed holder can leak a slot.
    fn acquire(
        &self,
        key: &str,
        limit: i64,
        ttl: Duration,
    ) -> impl Future<Output = Result<Option<i64>, PortError>> + Send;
}

/// Publishes jobs for consumers (usage, billing, …). Publishing is durable:
/// once `publish` returns Ok, the job survives a crash.
pub trait Queue: Send + Sync + 'static {
    fn publish(&self, job: Job) -> impl Future<Output = Result<(), PortError>> + Send;
}

#[derive(Debug)]
pub struct UpstreamRequest {
    pub method: http::Method,
    pub url: String,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

pub type ByteStream = Pin<Box<dyn Stream<Item = Result<Bytes, UpstreamError>> + Send>>;

pub struct UpstreamResponse {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: ByteStream,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum UpstreamError {
    #[error("could not connect: {0}")]
    Connect(String),
    #[error("timed out")]
    Timeout,
    #[error("response body failed: {0}")]
    Body(String),
}

/// Outbound HTTP. Dropping the response body cancels the call.
pub trait Upstream: Send + Sync + 'static {
    fn send(&self, req: UpstreamRequest) -> impl Future<Output = Result<UpstreamResponse, UpstreamError>> + Send;
}

pub trait Clock: Send + Sync + 'static {
    /// Wall-clock time, Unix microseconds.
    fn now_us(&self) -> i64;
    fn now_ms(&self) -> i64 {
        self.now_us() / 1000
    }
    fn sleep(&self, d: Duration) -> impl Future<Output = ()> + Send;
}

pub trait Ids: Send + Sync + 'static {
    fn random_u64(&self) -> u64;
    /// A request id, unique enough to be the idempotency key of a usage record.
    fn request_id(&self) -> String {
        format!("req_{:016x}{:016x}", self.random_u64(), self.random_u64())
    }
}

/// Runs work that must outlive the response (usage events after a stream ends).
pub trait Tasks: Send + Sync + 'static {
    fn spawn(&self, fut: impl Future<Output = ()> + Send + 'static);

    /// Runs CPU-heavy work (password hashing) where it does not stall other
    /// requests: on a blocking thread natively; inline where there is one
    /// thread anyway (the edge).
    fn cpu<T: Send + 'static>(&self, work: impl FnOnce() -> T + Send + 'static) -> impl Future<Output = T> + Send {
        async move { work() }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct PortError(pub String);

/// One adapter per port.
pub trait Platform: Send + Sync + 'static {
    type Store: Store + Ledger + UsageLog + Accounts;
    type Hot: Hot;
    type Mailer: Mailer;
    type Queue: Queue;
    type Upstream: Upstream;
    type Clock: Clock;
    type Ids: Ids;
    type Tasks: Tasks;
}

/// The adapters a function is built over.
pub struct Ports<P: Platform> {
    pub store: P::Store,
    pub hot: P::Hot,
    pub queue: P::Queue,
    pub upstream: P::Upstream,
    pub clock: P::Clock,
    pub ids: P::Ids,
    pub tasks: P::Tasks,
    pub mailer: P::Mailer,
}

/// The outcome of a sliding-window hit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hit {
    pub allowed: bool,
    /// The window's count after the hit (or as it stands, when refused).
    pub count: i64,
    /// Milliseconds until the current window ends.
    pub reset_ms: i64,
}
