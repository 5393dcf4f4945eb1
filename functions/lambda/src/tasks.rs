//! Background work that must finish inside the invocation. Lambda freezes an
//! environment once the response is done, so a usage event spawned as the
//! stream ends could sit frozen until the next request; the HTTP shell holds
//! the end of each response body until these tasks are idle.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use oblivious_ports::Tasks;
use tokio::sync::Notify;

#[derive(Clone, Default)]
pub struct TrackedTasks {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    running: AtomicUsize,
    idle: Notify,
}

impl TrackedTasks {
    /// Resolves once no spawned task is running.
    pub async fn idle(&self) {
        loop {
            let notified = self.inner.idle.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.inner.running.load(Ordering::Acquire) == 0 {
                return;
            }
            notified.await;
        }
    }
}

impl Tasks for TrackedTasks {
    fn spawn(&self, fut: impl Future<Output = ()> + Send + 'static) {
        self.inner.running.fetch_add(1, Ordering::AcqRel);
        let inner = self.inner.clone();
        tokio::spawn(async move {
            fut.await;
            if inner.running.fetch_sub(1, Ordering::AcqRel) == 1 {
                inner.idle.notify_waiters();
            }
        });
    }
}
