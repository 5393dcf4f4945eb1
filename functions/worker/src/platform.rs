//! The edge platform and its state, built once per isolate from the Worker's
//! bindings (`wrangler.toml` vars and `wrangler secret put` secrets) and kept
//! for the isolate's life: the relay with its key, channel and price caches,
//! the auth function (its signing key cached) and the admin function's
//! self-service routes, all over the same ports.

use std::sync::{Arc, OnceLock};

use axum::body::Body;
use axum::Router;
use oblivious_aws::{AwsClient, AwsCredentials, DynamoStore, SqsQueue};
use oblivious_core::config::{self, Config};
use oblivious_core::ApiError;
use oblivious_mailapi::EdgeMailer;
use oblivious_ports::{Platform, Ports, Running, Sealer};
use oblivious_relay::Relay;
use oblivious_upstash::UpstashHot;
use worker::Env;

use crate::fetch::FetchUpstream;
use crate::runtime::{WorkerClock, WorkerIds, WorkerTasks};

pub struct Edge;

impl Platform for Edge {
    type Store = DynamoStore<FetchUpstream, WorkerClock>;
    type Hot = UpstashHot<FetchUpstream>;
    type Mailer = EdgeMailer<FetchUpstream>;
    type Queue = SqsQueue<FetchUpstream, WorkerClock>;
    type Upstream = FetchUpstream;
    type Clock = WorkerClock;
    type Ids = WorkerIds;
    type Tasks = WorkerTasks;
}

/// What an isolate keeps between requests.
pub struct State {
    pub relay: Arc<Relay<Edge>>,
    pub app: Router,
    pub running: Running,
    config: Config,
}

static STATE: OnceLock<Arc<State>> = OnceLock::new();

/// The admin router's self-service routes (the caller's own keys, balance,
/// usage and redemption); the rest of `/api/admin` stays on the `admin`
/// Lambda or the local binary.
const SELF_SERVICE: [&str; 8] = [
    "/api/me/keys",
    "/api/me/keys/{id}",
    "/api/me/keys/{id}/restore",
    "/api/account",
    "/api/usage",
    "/api/usage/stats",
    "/api/usage.csv",
    "/api/redeem",
];

/// The isolate's state, built by its first request.
pub async fn edge(env: &Env) -> Result<Arc<State>, String> {
    if let Some(state) = STATE.get() {
        return Ok(state.clone());
    }
    let state = Arc::new(build(env).await?);
    // Two first requests may race to build; the first one kept wins.
    Ok(STATE.get_or_init(|| state).clone())
}

/// A binding's value: a var or a secret (both are strings to the Worker).
pub(crate) fn binding(env: &Env, name: &str) -> Option<String> {
    env.var(name).ok().map(|v| v.to_string()).filter(|v| !v.is_empty())
}

fn required(env: &Env, name: &str) -> Result<String, String> {
    binding(env, name).ok_or_else(|| format!("the Worker binding {name} is not set (see README: Edge deployment)"))
}

async fn build(env: &Env) -> Result<State, String> {
    let config =
        config::parse("OBLIVIOUS_CONFIG_TOML", &binding(env, "OBLIVIOUS_CONFIG_TOML").unwrap_or_default(), |k| {
            binding(env, k)
        })
        .map_err(|e| e.to_string())?;
    let sealer = Sealer::from_base64(&required(env, oblivious_ports::SECRET_ENV)?).map_err(|e| e.to_string())?;
    let credentials = AwsCredentials {
        access_key_id: required(env, "AWS_ACCESS_KEY_ID")?,
        secret_access_key: required(env, "AWS_SECRET_ACCESS_KEY")?,
        session_token: binding(env, "AWS_SESSION_TOKEN"),
    };
    let region = binding(env, "AWS_REGION").unwrap_or_else(|| "us-east-1".into());
    let aws = AwsClient::new(FetchUpstream, WorkerClock, credentials, region, binding(env, "AWS_ENDPOINT_URL"));
    let tasks = WorkerTasks::default();
    let ports = Ports::<Edge> {
        store: DynamoStore::new(
            aws.clone(),
            binding(env, "OBLIVIOUS_TABLE_PREFIX").unwrap_or_else(|| "oblivious-".into()),
            sealer,
        ),
        hot: UpstashHot::new(
            FetchUpstream,
            required(env, "UPSTASH_REDIS_REST_URL")?,
            required(env, "UPSTASH_REDIS_REST_TOKEN")?,
            binding(env, "OBLIVIOUS_HOT_PREFIX").unwrap_or_else(|| "obl:".into()),
        ),
        queue: SqsQueue::new(aws, required(env, "OBLIVIOUS_USAGE_QUEUE_URL")?),
        upstream: FetchUpstream,
        clock: WorkerClock,
        ids: WorkerIds,
        tasks: tasks.clone(),
        // `[mail]` of the config: an HTTP mail API (a Worker cannot speak SMTP), or off.
        mailer: EdgeMailer::from_settings(FetchUpstream, &config.mail)?,
    };
    let relay = Relay::new_shared(ports, config.relay.clone()).await.map_err(|e| format!("store: {e}"))?;
    relay.set_rate_limits(config.rate_limits.clone());
    // `[auth]` and `[mail]` are read once per isolate, as the rest of the config.
    let auth = oblivious_auth::Auth::new(relay.clone(), config.auth.clone(), config.mail.enabled());
    let mut routes = oblivious_relay::router(relay.clone())
        .merge(oblivious_auth::router(auth))
        .merge(oblivious_relay::probes::router(relay.clone(), None));
    // Of the admin function, only what a signed-in person calls on their own
    // account: those paths go to its router whole (a service, as axum refuses
    // a `Router` in `route_service`), which matches them as it would alone.
    let admin = oblivious_admin::router(relay.clone()).into_service::<Body>();
    for path in SELF_SERVICE {
        routes = routes.route_service(path, admin.clone());
    }
    let app = oblivious_relay::with_unknown_url(routes, relay.clone());
    Ok(State { relay, app, running: tasks.running, config })
}

impl State {
    /// The cron trigger: probes every channel, then refunds reservations
    /// older than the billing timeout (so an all-edge deployment needs no
    /// other scheduler).
    pub async fn scheduled(&self) {
        match self.relay.health_pass(self.relay.settings().health_window()).await {
            Ok(reports) => worker::console_log!("health pass: {} channels probed", reports.len()),
            Err(e) => worker::console_error!("health pass: {e}"),
        }
        match self.relay.sweep(self.config.billing.reservation_timeout_seconds).await {
            Ok(refunded) => worker::console_log!("sweeper: {refunded} reservations refunded"),
            Err(e) => worker::console_error!("sweeper: {e}"),
        }
        self.running.idle().await;
    }
}

/// The answer while the Worker cannot start (a binding missing, the store
/// unreachable): 503 in OpenAI's error shape, retried by clients.
pub fn unavailable(why: &str) -> http::Response<Body> {
    worker::console_error!("edge start failed: {why}");
    let e = ApiError::internal(format!("The gateway is not ready: {why}")).with_status(503);
    oblivious_relay::error_response(&e, "req_edge_start")
}
