//! The HTTP shell: a function's axum router behind `lambda_http`, with the
//! caller's address from the request context, caches refreshed from the
//! store's revision at most once a second, and each response held open until
//! its background work (the usage event) is done and its metrics are printed
//! ([`crate::emf`]).

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

use crate::platform::{Aws, Init};
use crate::tasks::TrackedTasks;

struct Shell {
    relay: Arc<Relay<Aws>>,
    tasks: TrackedTasks,
}

/// The relay function's app: every relay endpoint.
pub fn relay_app(init: &Init) -> Router {
    let routes =
        oblivious_relay::router(init.relay.clone()).merge(oblivious_relay::probes::router(init.relay.clone(), None));
    shell(routes, init)
}

/// The admin function's app: the admin API and the key owner's account endpoints.
pub fn admin_app(init: &Init) -> Router {
    shell(oblivious_admin::router(init.relay.clone()), init)
}

fn shell(routes: Router, init: &Init) -> Router {
    let relay = init.relay.clone();
    let state = Arc::new(Shell { relay: relay.clone(), tasks: init.tasks.clone() });
    oblivious_relay::with_unknown_url(routes, relay).layer(middleware::from_fn_with_state(state, around))
}

/// The caller's address as API Gateway or a Function URL saw it.
fn source_ip(req: &Request) -> Option<std::net::IpAddr> {
    let ip = match req.extensions().get::<RequestContext>()? {
        RequestContext::ApiGatewayV2(c) => c.http.source_ip.clone(),
        RequestContext::ApiGatewayV1(c) => c.identity.source_ip.clone(),
        _ => None,
    };
    ip?.parse().ok()
}

async fn around(State(shell): State<Arc<Shell>>, mut req: Request, next: Next) -> Response {
    if let Some(ip) = source_ip(&req) {
        req.extensions_mut().insert(ClientIp(ip));
    }
    shell.relay.refresh_if_stale().await;
    let resp = next.run(req).await;
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

/// Serves `app` as a streaming Lambda (Function URL in RESPONSE_STREAM mode,
/// or API Gateway; buffered integrations receive the whole body).
pub async fn run(app: Router) -> Result<(), lambda_http::Error> {
    let service = tower::service_fn(move |req: lambda_http::Request| {
        let app = app.clone();
        async move { app.oneshot(req.map(Body::new)).await.map_err(lambda_http::Error::from) }
    });
    lambda_http::run_with_streaming_response(service).await
}
