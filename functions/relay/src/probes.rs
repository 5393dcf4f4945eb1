//! `GET /healthz` (the process answers) and `GET /readyz` (it can serve: the
//! store answers, at least one channel is enabled, and whatever the shell adds
//! — the config file applied, migrations in place). Unauthenticated, for load
//! balancers and orchestrators; they say what failed and nothing secret.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use futures_util::future::{select, Either};
use oblivious_core::model::ChannelStatus;
use oblivious_ports::{Clock, Platform, Store};
use serde_json::{json, Map, Value};

use crate::Relay;

/// How long the store gets to answer a readiness probe.
const STORE_TIMEOUT: Duration = Duration::from_secs(2);

/// One readiness check: its name and, when it fails, why.
pub struct Check {
    pub name: &'static str,
    pub failure: Option<String>,
}

/// Checks only the shell can make, run on every `/readyz`.
pub type ShellChecks = Arc<dyn Fn() -> futures_util::future::BoxFuture<'static, Vec<Check>> + Send + Sync>;

struct Probes<P: Platform> {
    relay: Arc<Relay<P>>,
    shell: Option<ShellChecks>,
}

pub fn router<P: Platform>(relay: Arc<Relay<P>>, shell: Option<ShellChecks>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { crate::json_response(200, r#"{"status":"ok"}"#.into(), "") }))
        .route("/readyz", get(ready::<P>))
        .with_state(Arc::new(Probes { relay, shell }))
}

async fn ready<P: Platform>(State(p): State<Arc<Probes<P>>>) -> Response {
    let mut checks = vec![store(&p.relay).await, channels(&p.relay)];
    if let Some(shell) = &p.shell {
        checks.extend(shell().await);
    }
    let ready = checks.iter().all(|c| c.failure.is_none());
    let mut body = Map::new();
    for c in checks {
        let v = match c.failure {
            None => json!({ "ok": true }),
            Some(why) => json!({ "ok": false, "error": why }),
        };
        body.insert(c.name.into(), v);
    }
    let body = json!({ "status": if ready { "ready" } else { "not_ready" }, "checks": Value::Object(body) });
    crate::json_response(if ready { 200 } else { 503 }, body.to_string().into(), "")
}

async fn store<P: Platform>(relay: &Relay<P>) -> Check {
    let ports = &relay.ports;
    let answered = select(Box::pin(ports.store.revision()), Box::pin(ports.clock.sleep(STORE_TIMEOUT))).await;
    let failure = match answered {
        Either::Left((Ok(_), _)) => None,
        Either::Left((Err(e), _)) => Some(format!("the store failed: {e}")),
        Either::Right(_) => Some(format!("the store did not answer within {} s", STORE_TIMEOUT.as_secs())),
    };
    Check { name: "store", failure }
}

fn channels<P: Platform>(relay: &Relay<P>) -> Check {
    let snapshot = relay.snapshot();
    let enabled = snapshot.channels.iter().filter(|c| c.status == ChannelStatus::Enabled).count();
    let failure = (enabled == 0).then(|| match snapshot.channels.len() {
        0 => "no channel is configured".to_string(),
        n => format!("none of the {n} channels is enabled"),
    });
    Check { name: "channels", failure }
}
