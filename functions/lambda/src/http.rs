//! The HTTP shell: a function's axum router behind `lambda_http`, with the
//! caller's address from the request context (through `[server]
//! trusted_proxies` when a proxy such as CloudFront is in front), a span per
//! request, caches refreshed from the store's revision at most once a second,
//! and each response held open until its background work (the usage event) is
//! done and its metrics are printed ([`crate::emf`]).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::Router;
use bytes::Bytes;
use http_body::Frame;
use lambda_http::request::RequestContext;
use oblivious_relay::{ClientIp, Relay};
use tower::ServiceExt;
use tracing::Instrument;

use crate::platform::{Aws, Init};
use crate::tasks::TrackedTasks;

struct Shell {
    relay: Arc<Relay<Aws>>,
    tasks: TrackedTasks,
    /// Proxies whose `Forwarded` / `X-Forwarded-For` are believed (`[server] trusted_proxies`).
    trusted: Vec<ipnet::IpNet>,
}

/// The relay function's app: every relay endpoint.
pub fn relay_app(init: &Init) -> Router {
    let routes =
        oblivious_relay::router(init.relay.clone()).merge(oblivious_relay::probes::router(init.relay.clone(), None));
    shell(routes, init)
}

/// The admin function's app: the admin API and the key owner's account
/// endpoints (`/api/account`, `/api/usage*`, `/api/me/keys*`).
pub fn admin_app(init: &Init) -> Router {
    shell(oblivious_admin::router(init.relay.clone()), init)
}

/// The auth function's app: sign-up, sign-in, sessions, two-factor, the
/// signed-in user's account (`/api/me*` but its keys) and the account parts of
/// the admin API (audit, invites, 2FA reset, sessions). `[auth]` and `[mail]`
/// are read from the config at the cold start.
pub fn auth_app(init: &Init) -> Router {
    let auth = oblivious_auth::Auth::new(init.relay.clone(), init.config.auth.clone(), init.config.mail.enabled());
    shell(oblivious_auth::router(auth), init)
}

fn shell(routes: Router, init: &Init) -> Router {
    let relay = init.relay.clone();
    let trusted = init.config.server.trusted_proxies.clone();
    let state = Arc::new(Shell { relay: relay.clone(), tasks: init.tasks.clone(), trusted });
    oblivious_relay::with_unknown_url(routes, relay).layer(middleware::from_fn_with_state(state, around))
}

/// The caller's address: the peer API Gateway or a Function URL saw (the
/// request context), or, when that peer is a trusted proxy, the nearest
/// untrusted hop its forwarding headers name.
fn client_ip(req: &Request, trusted: &[ipnet::IpNet]) -> Option<std::net::IpAddr> {
    let ip = match req.extensions().get::<RequestContext>()? {
        RequestContext::ApiGatewayV2(c) => c.http.source_ip.clone(),
        RequestContext::ApiGatewayV1(c) => c.identity.source_ip.clone(),
        _ => None,
    };
    let peer = ip?.parse().ok()?;
    if trusted.is_empty() {
        return Some(peer);
    }
    let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok());
    Some(oblivious_core::forwarded::client_ip(peer, header("forwarded"), header("x-forwarded-for"), trusted))
}

async fn around(State(shell): State<Arc<Shell>>, mut req: Request, next: Next) -> Response {
    if let Some(ip) = client_ip(&req, &shell.trusted) {
        req.extensions_mut().insert(ClientIp(ip));
    }
    let span = tracing::info_span!("request", method = %req.method(), path = %req.uri().path());
    shell.relay.refresh_if_stale().await;
    let resp = next.run(req).instrument(span).await;
    let tasks = shell.tasks.clone();
    resp.map(|body| Body::new(AfterTasks { inner: Some(body), tasks, wait: None }))
}

/// A body that ends only after the invocation's background tasks have
/// finished and its metrics (recorded as the relay's body ended, and by those
/// tasks) are printed.
struct AfterTasks {
    inner: Option<Body>,
    tasks: TrackedTasks,
    wait: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
}

impl http_body::Body for AfterTasks {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = self.get_mut();
        if let Some(inner) = this.inner.as_mut() {
            match Pin::new(inner).poll_frame(cx) {
                Poll::Ready(None) => {
                    // Dropping the relay's stream is what finishes its usage record.
                    this.inner = None;
                    let tasks = this.tasks.clone();
                    this.wait = Some(Box::pin(async move { tasks.idle().await }));
                }
                other => return other,
            }
        }
        if let Some(wait) = this.wait.as_mut() {
            ready!(wait.as_mut().poll(cx));
            this.wait = None;
            crate::emf::flush();
        }
        Poll::Ready(None)
    }
}

/// Serves `app` as a streaming Lambda: a Function URL in RESPONSE_STREAM mode
/// (the relay), which reads the status and headers from the stream's prelude.
pub async fn run(app: Router) -> Result<(), lambda_http::Error> {
    lambda_http::run_with_streaming_response(service(app)).await
}

/// Serves `app` as a buffered Lambda: API Gateway's HTTP API (payload 2.0,
/// `AWS_PROXY`), which invokes synchronously and expects one JSON answer (a
/// streamed answer there would reach the caller as a 500 or with its prelude
/// in the body), or a Function URL in BUFFERED mode. The whole body is read
/// before the answer is sent, so the invocation's background work is done by then.
pub async fn run_buffered(app: Router) -> Result<(), lambda_http::Error> {
    lambda_http::run(service(app)).await
}

/// The app as a `lambda_http` service.
fn service(
    app: Router,
) -> impl tower::Service<lambda_http::Request, Response = Response, Error = lambda_http::Error, Future: Send> {
    tower::service_fn(move |req: lambda_http::Request| {
        let app = app.clone();
        async move { app.oneshot(req.map(Body::new)).await.map_err(lambda_http::Error::from) }
    })
}
