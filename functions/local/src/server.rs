//! The HTTP/1.1 server under `oblivious serve`: hyper with its timers set
//! (axum::serve sets none), a bound on open connections that answers 503
//! instead of running out of descriptors, a deadline on each request body, and
//! a shutdown that stops accepting, lets running requests finish up to a
//! deadline, and then drops what is left.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::Router;
use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use oblivious_core::config::ServerSettings;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tower::ServiceExt;

/// Descriptors kept free of connections: the database, its WAL, upstream calls, logs.
const RESERVED_FDS: u64 = 64;

/// Serves `app` until `shutdown` resolves, then drains as described above.
pub async fn serve(listener: TcpListener, app: Router, s: &ServerSettings, shutdown: impl Future<Output = ()>) {
    let limit = connection_limit(s.max_connections);
    tracing::info!(max_connections = limit, "accepting connections");
    let permits = Arc::new(Semaphore::new(limit));
    let graceful = GracefulShutdown::new();
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new()).header_read_timeout(Duration::from_millis(s.header_read_timeout_ms.max(1)));
    let body_timeout = Duration::from_millis(s.body_read_timeout_ms.max(1));
    let mut conns = JoinSet::new();
    let mut shutdown = std::pin::pin!(shutdown);
    let mut last_warned: Option<std::time::Instant> = None;
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            () = &mut shutdown => break,
        };
        while conns.try_join_next().is_some() {}
        let (tcp, addr) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of descriptors (EMFILE) or a connection reset before accept: wait, then go on.
                if last_warned.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
                    tracing::warn!("accept failed (logged once per 10 s): {e}");
                    last_warned = Some(std::time::Instant::now());
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        // Without it, back-to-back keep-alive requests stall on Nagle + delayed ACK.
        let _ = tcp.set_nodelay(true);
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            conns.spawn(refuse(tcp));
            continue;
        };
        let app = app.clone();
        let svc = tower::service_fn(move |mut req: http::Request<Incoming>| {
            req.extensions_mut().insert(ConnectInfo(addr));
            let req = req.map(|b| Body::new(TimedBody::new(b, body_timeout)));
            app.clone().oneshot(req)
        });
        let conn = graceful.watch(http.serve_connection(TokioIo::new(tcp), TowerToHyperService::new(svc)));
        let open = metrics::gauge!(oblivious_core::telemetry::OPEN_CONNECTIONS);
        open.increment(1.0);
        conns.spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(%addr, "connection ended: {e}");
            }
            open.decrement(1.0);
            drop(permit);
        });
    }
    drop(listener);
    let deadline = Duration::from_millis(s.shutdown_timeout_ms);
    tracing::info!(open = limit - permits.available_permits(), "draining connections");
    if tokio::time::timeout(deadline, graceful.shutdown()).await.is_err() {
        tracing::warn!(
            open = limit - permits.available_permits(),
            "shutdown deadline passed: closing the connections still open"
        );
    }
    conns.abort_all();
    while conns.join_next().await.is_some() {}
}

/// `max_connections`, or (0) three quarters of the descriptor limit after
/// raising the soft limit as far as the hard one allows.
fn connection_limit(configured: usize) -> usize {
    if configured > 0 {
        return configured;
    }
    let fds = rlimit::increase_nofile_limit(u64::MAX).unwrap_or(1024);
    usize::try_from(fds.saturating_sub(RESERVED_FDS) / 4 * 3).unwrap_or(usize::MAX).max(16)
}

/// Over the connection limit: a clear answer, then the connection is closed.
async fn refuse(mut tcp: TcpStream) {
    const BODY: &str = r#"{"error":{"message":"The server is at its connection limit; retry shortly.","type":"server_error","param":null,"code":"too_many_connections"}}"#;
    let head = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\nretry-after: 1\r\nconnection: close\r\n\r\n",
        BODY.len()
    );
    let answer = async {
        tcp.write_all(head.as_bytes()).await?;
        tcp.write_all(BODY.as_bytes()).await?;
        tcp.shutdown().await?;
        // Read what the client sent so closing does not reset the connection before it reads the answer.
        let mut sink = [0u8; 4096];
        while tcp.read(&mut sink).await? > 0 {}
        Ok::<_, std::io::Error>(())
    };
    let _ = tokio::time::timeout(Duration::from_millis(500), answer).await;
}

/// A request body that must arrive whole before a deadline; after it, reading
/// fails with `TimedOut` (the relay and admin answer 408).
struct TimedBody {
    inner: Incoming,
    deadline: Pin<Box<tokio::time::Sleep>>,
}

impl TimedBody {
    fn new(inner: Incoming, within: Duration) -> Self {
        TimedBody { inner, deadline: Box::pin(tokio::time::sleep(within)) }
    }
}

impl HttpBody for TimedBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        match this.deadline.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the request body did not arrive in time",
            ))))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
