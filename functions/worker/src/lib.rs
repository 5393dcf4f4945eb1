//! The edge shell: the relay's router, the auth function's and the admin
//! function's self-service routes behind `#[event(fetch)]`, the health pass
//! and the reservation sweeper behind `#[event(scheduled)]`. Hot state is
//! Upstash Redis over REST, durable state DynamoDB over HTTPS, usage events go
//! to SQS for the same `usage` Lambda that settles the other runtimes' money.
//! Each request and cron run ends by logging its metrics as CloudWatch EMF
//! lines ([`emf`]). Built with `worker-build` (see `wrangler.toml` at the repo root).
#![cfg(target_arch = "wasm32")]

mod emf;
mod fetch;
mod platform;
mod runtime;

use std::net::IpAddr;

use axum::body::Body;
use oblivious_relay::ClientIp;
use tower::ServiceExt;
use worker::{event, Context, Env, HttpRequest, ScheduleContext, ScheduledEvent};

#[event(fetch)]
async fn fetch(req: HttpRequest, env: Env, ctx: Context) -> worker::Result<http::Response<Body>> {
    emf::install(&env);
    let edge = match platform::edge(&env).await {
        Ok(edge) => edge,
        Err(e) => return Ok(platform::unavailable(&e)),
    };
    edge.relay.refresh_if_stale().await;
    let mut req = req.map(Body::new);
    let ip = req.headers().get("cf-connecting-ip").and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<IpAddr>().ok());
    if let Some(ip) = ip {
        req.extensions_mut().insert(ClientIp(ip));
    }
    let resp = match edge.app.clone().oneshot(req).await {
        Ok(resp) => resp,
        Err(never) => match never {},
    };
    // The usage event is published as the body ends (or is dropped on a
    // disconnect); the isolate must live until it is on the queue, and its
    // metrics (recorded as the body ends and by that task) are logged.
    let (resp, ended) = runtime::watch_end(resp);
    let running = edge.running.clone();
    ctx.wait_until(async move {
        ended.await;
        running.idle().await;
        emf::flush();
    });
    Ok(resp)
}

#[event(scheduled)]
async fn scheduled(_event: ScheduledEvent, env: Env, _ctx: ScheduleContext) {
    emf::install(&env);
    match platform::edge(&env).await {
        Ok(edge) => edge.scheduled().await,
        Err(e) => worker::console_error!("scheduled: {e}"),
    }
    emf::flush();
}
