//! Native adapters shared by the local binary and (later) the Lambda shells.

mod hot;
mod upstream;

pub use hot::MemoryHot;
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
}

#[derive(Clone, Copy, Debug, Default)]
pub struct TokioTasks;

impl Tasks for TokioTasks {
    fn spawn(&self, fut: impl Future<Output = ()> + Send + 'static) {
        tokio::spawn(fut);
    }
}
