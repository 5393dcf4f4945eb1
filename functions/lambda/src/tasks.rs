//! Background work that must finish inside the invocation. Lambda freezes an
//! environment once the response is done, so a usage event spawned as the
//! stream ends could sit frozen until the next request; the HTTP shell holds
//! the end of each response body until these tasks are idle.

use std::future::Future;

use oblivious_ports::{Running, Tasks};

#[derive(Clone, Default)]
pub struct TrackedTasks {
    running: Running,
}

impl TrackedTasks {
    /// Resolves once no spawned task is running.
    pub async fn idle(&self) {
        self.running.idle().await
    }
}

impl Tasks for TrackedTasks {
    async fn cpu<T: Send + 'static>(&self, work: impl FnOnce() -> T + Send + 'static) -> T {
        match tokio::task::spawn_blocking(work).await {
            Ok(v) => v,
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        }
    }

    fn spawn(&self, fut: impl Future<Output = ()> + Send + 'static) {
        let guard = self.running.start();
        tokio::spawn(async move {
            fut.await;
            drop(guard);
        });
    }
}
