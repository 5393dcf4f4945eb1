//! Counting background work (usage events published after a stream ends) so
//! a shell can hold something open until it is done: Lambda the end of its
//! response body, a Worker the isolate (`ctx.wait_until`). Runtime-neutral:
//! each shell spawns with its own executor and holds a [`Running`] guard.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::Notify;

#[derive(Clone, Default)]
pub struct Running {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    count: AtomicUsize,
    idle: Notify,
}

/// One task in flight; dropping it (the task finished, or panicked) counts it out.
pub struct RunningGuard {
    inner: Arc<Inner>,
}

impl Running {
    pub fn start(&self) -> RunningGuard {
        self.inner.count.fetch_add(1, Ordering::AcqRel);
        RunningGuard { inner: self.inner.clone() }
    }

    pub fn count(&self) -> usize {
        self.inner.count.load(Ordering::Acquire)
    }

    /// Resolves once no task is in flight.
    pub async fn idle(&self) {
        loop {
            let notified = self.inner.idle.notified();
            let mut notified = std::pin::pin!(notified);
            notified.as_mut().enable();
            if self.count() == 0 {
                return;
            }
            notified.await;
        }
    }
}

impl Drop for RunningGuard {
    fn drop(&mut self) {
        if self.inner.count.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.inner.idle.notify_waiters();
        }
    }
}
