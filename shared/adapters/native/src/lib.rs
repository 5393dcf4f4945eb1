//! Native adapters shared by the local binary and (later) the Lambda shells.

mod hot;
mod mail;
mod upstream;

pub use hot::MemoryHot;
pub use mail::{AnyMailer, SmtpMailer};
pub use oblivious_mailapi::{HttpMailer, NoMailer};
pub use upstream::HttpUpstream;

use std::future::Future;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use oblivious_ports::{Clock, Ids, Tasks};

#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_us(&self) -> i64 {
        SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros() as i64).unwrap_or(0)
    }

    fn sleep(&self, d: Duration) -> impl Future<Output = ()> + Send {
        tokio::time::sleep(d)
    }
}

#[derive(Clone, Copy, Debug, Default)]
pub struct RandomIds;

impl Ids for RandomIds {
    fn random_u64(&self) -> u64 {
        rand::random()
    }

    /// Time first (milliseconds), then 80 random bits: ids sort by time, so
    /// the stores' request-id indexes grow at their right edge instead of
    /// dirtying a random page per request.
    fn request_id(&self) -> String {
        let ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        let (a, b): (u64, u16) = (rand::random(), rand::random());
        format!("req_{ms:012x}{a:016x}{b:04x}")
    }
}

#[derive(Clone, Copy, Debug, Default)]
pub struct TokioTasks;

impl Tasks for TokioTasks {
    async fn cpu<T: Send + 'static>(&self, work: impl FnOnce() -> T + Send + 'static) -> T {
        match tokio::task::spawn_blocking(work).await {
            Ok(v) => v,
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        }
    }

    fn spawn(&self, fut: impl Future<Output = ()> + Send + 'static) {
        tokio::spawn(fut);
    }
}
