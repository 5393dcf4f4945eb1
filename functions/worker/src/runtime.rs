//! The small ports on Workers: the clock (JS `Date`, `setTimeout`), random
//! ids (`crypto.getRandomValues`), background tasks (`spawn_local`, counted so
//! `ctx.wait_until` can hold the isolate), and the `Send` wrappers the ports
//! need around Workers' single-threaded JS futures and streams.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use futures_util::Stream;
use http_body::Frame;
use oblivious_ports::{Clock, Ids, Running, Tasks};
use tokio::sync::oneshot;
use worker::send::{SendFuture, SendWrapper};

/// Workers' clock. `Date.now()` only advances across I/O at the edge (a
/// Spectre mitigation), which is all a latency figure needs.
#[derive(Clone, Copy, Default)]
pub struct WorkerClock;

impl Clock for WorkerClock {
    fn now_us(&self) -> i64 {
        (worker::js_sys::Date::now() * 1000.0) as i64
    }

    fn sleep(&self, d: Duration) -> impl Future<Output = ()> + Send {
        SendFuture::new(worker::Delay::from(d))
    }
}

#[derive(Clone, Copy, Default)]
pub struct WorkerIds;

impl Ids for WorkerIds {
    fn random_u64(&self) -> u64 {
        rand::random()
    }
}

/// Spawns on the isolate's event loop and counts what is running.
#[derive(Clone, Default)]
pub struct WorkerTasks {
    pub running: Running,
}

impl Tasks for WorkerTasks {
    fn spawn(&self, fut: impl Future<Output = ()> + Send + 'static) {
        let guard = self.running.start();
        worker::wasm_bindgen_futures::spawn_local(async move {
            fut.await;
            drop(guard);
        });
    }
}

/// A JS-backed stream made `Send` (Workers run one thread per isolate).
pub struct SendStream<S>(pub SendWrapper<Pin<Box<S>>>);

impl<S: Stream> Stream for SendStream<S> {
    type Item = S::Item;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<S::Item>> {
        self.get_mut().0 .0.as_mut().poll_next(cx)
    }
}

/// The response with a body that reports when it ends or is dropped (the
/// client went away), and the future that resolves then.
pub fn watch_end(resp: http::Response<Body>) -> (http::Response<Body>, impl Future<Output = ()>) {
    let (tx, rx) = oneshot::channel::<()>();
    let resp = resp.map(|inner| Body::new(Watched { inner: Some(inner), ended: Some(tx) }));
    (resp, async move {
        let _ = rx.await;
    })
}

/// Dropping the sender is the signal: with the whole body, or at its end.
struct Watched {
    inner: Option<Body>,
    ended: Option<oneshot::Sender<()>>,
}

impl http_body::Body for Watched {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = self.get_mut();
        let Some(inner) = this.inner.as_mut() else { return Poll::Ready(None) };
        let frame = Pin::new(inner).poll_frame(cx);
        if let Poll::Ready(None) = frame {
            // Dropping the relay's body is what finishes its usage record.
            this.inner = None;
            this.ended = None;
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(|b| b.is_end_stream())
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.as_ref().map(|b| b.size_hint()).unwrap_or_else(|| http_body::SizeHint::with_exact(0))
    }
}
