//! `oblivious serve`: every function's router on one port.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::extract::{ConnectInfo, Request};
use axum::middleware::Next;
use axum::response::Response;
use axum::Router;
use clap::Args;
use oblivious_ports::Clock;
use oblivious_relay::{ClientIp, Relay};
use oblivious_sqlite::SqliteQueue;

use crate::platform::{self, Local};
use crate::telemetry::Metrics;
use oblivious_core::config::ServerSettings;
use oblivious_core::{forwarded, telemetry as t};
use oblivious_relay::probes::Check;
use tracing::Instrument;

#[derive(Args)]
pub struct ServeArgs {
    /// Config file (TOML). Defaults to ./oblivious.toml when it exists.
    #[arg(long, env = "OBLIVIOUS_CONFIG")]
    config: Option<PathBuf>,
    /// Address to listen on [default: the config's server.listen, else 127.0.0.1:8080].
    #[arg(long, env = "OBLIVIOUS_LISTEN")]
    listen: Option<String>,
    /// Where to serve Prometheus metrics (`GET /metrics`): an address, or `main`
    /// for the gateway's own port [default: the config's metrics.listen; off without one].
    #[arg(long, env = "OBLIVIOUS_METRICS_LISTEN")]
    metrics_listen: Option<String>,
}

/// The config file `serve` reads (`--config`, else ./oblivious.toml when it
/// exists) and its contents; read before the log pipeline starts, which it configures.
#[derive(Default)]
pub struct Loaded {
    path: Option<PathBuf>,
    pub config: Option<oblivious_core::config::Config>,
}

pub fn load(args: &ServeArgs) -> Result<Loaded, String> {
    let path = args.config.clone().or_else(|| Some(PathBuf::from("oblivious.toml")).filter(|p| p.exists()));
    let config = path.as_deref().map(crate::config::load).transpose()?;
    Ok(Loaded { path, config })
}

/// Alert settings, replaced when the config file is reloaded.
pub type SharedAlerts = Arc<RwLock<oblivious_core::alerts::AlertSettings>>;

/// How often the server checks the store for changes made elsewhere (the CLI).
const REFRESH_EVERY: Duration = Duration::from_millis(500);

pub async fn run(data: &Path, args: ServeArgs, loaded: Loaded) -> Result<(), String> {
    let Loaded { path: config_path, config: cfg } = loaded;
    let hot = cfg.as_ref().map(|c| c.hot.clone()).unwrap_or_default();
    let (mut ports, queue) = platform::open(data, &hot).await?;
    if let Some(c) = &cfg {
        ports.mailer = oblivious_native::AnyMailer::from_settings(&c.mail, oblivious_native::HttpUpstream::new()?)
            .map_err(|e| format!("mail: {e}"))?;
    }
    let admin = platform::ensure_basics(&ports).await?;
    let first_key = issue_first_admin_key(&ports, admin.id).await?;
    let relay = Relay::new(ports, cfg.as_ref().map(|c| c.relay.clone()).unwrap_or_default())
        .await
        .map_err(|e| e.to_string())?;
    let alerts: SharedAlerts = Arc::new(RwLock::new(Default::default()));
    let auth = oblivious_auth::Auth::new(relay.clone(), Default::default(), false);
    // `[mail]` is read at start (the mailer is built from it); `[auth]` reloads live.
    let shell = crate::config::Shell { relay: relay.clone(), auth: auth.clone(), alerts: alerts.clone() };
    if let Some(cfg) = &cfg {
        crate::config::apply(&shell, cfg).await?;
    }
    let config_state = crate::config::State::default();
    if let Some(path) = config_path.clone() {
        crate::config::watch(shell.clone(), path, config_state.clone());
    }
    let server = cfg.as_ref().map(|c| c.server.clone()).unwrap_or_default();
    let metrics_listen = args.metrics_listen.or_else(|| cfg.as_ref().and_then(|c| c.metrics.listen.clone()));
    let metrics = match &metrics_listen {
        Some(_) => Some(Arc::new(Metrics::install()?)),
        None => None,
    };

    let listen = args
        .listen
        .or_else(|| cfg.as_ref().and_then(|c| c.server.listen.clone()))
        .unwrap_or_else(|| "127.0.0.1:8080".into());
    let listener =
        tokio::net::TcpListener::bind(&listen).await.map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;

    spawn_refresh(relay.clone());
    spawn_sweeper(relay.clone(), cfg.as_ref().map(|c| c.billing.clone()).unwrap_or_default());
    spawn_health(relay.clone());
    let consumer = spawn_consumer(relay.clone(), queue.clone(), alerts.clone());

    let mut app = app(relay.clone(), auth.clone(), config_state, &server);
    let mut metrics_server = None;
    let metrics_addr = match (metrics_listen.as_deref(), &metrics) {
        (Some("main"), Some(m)) => {
            app = app.merge(metrics_router(relay.clone(), queue.clone(), m.clone()));
            Some(addr)
        }
        (Some(listen), Some(m)) => {
            let l = tokio::net::TcpListener::bind(listen)
                .await
                .map_err(|e| format!("cannot listen on {listen} for metrics: {e}"))?;
            let metrics_addr = l.local_addr().map_err(|e| e.to_string())?;
            let routes = metrics_router(relay.clone(), queue.clone(), m.clone());
            metrics_server = Some(tokio::spawn(async move { axum::serve(l, routes).await }));
            Some(metrics_addr)
        }
        _ => None,
    };
    if let Some(key) = first_key {
        println!("Admin API key (shown once, keep it): {key}");
    }
    if let Some(link) = first_setup_link(&auth, admin.id).await? {
        println!("Root sign-in: choose its email and password at {link} (valid 7 days; `oblivious user setup-link` makes another)");
    }
    if let Some(a) = metrics_addr {
        println!("Metrics on http://{a}/metrics");
    }
    println!("Oblivious listening on http://{addr} (data: {})", data.display());
    tracing::info!(%addr, config = ?config_path, "serving");
    crate::server::serve(listener, app, &server, shutdown_signal()).await;
    // Requests cut off at the deadline still publish their usage: wait for it, then apply it all.
    let flushed = tokio::time::timeout(Duration::from_secs(10), async {
        while relay.usage_pending() > 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    if flushed.is_err() {
        tracing::error!(pending = relay.usage_pending(), "usage records still unpublished at exit");
    }
    consumer.abort();
    if let Some(m) = metrics_server {
        m.abort();
    }
    // Bounded: a job that keeps failing is due again only after its backoff.
    for _ in 0..100 {
        if drain(&relay, &queue, &alerts).await == 0 {
            break;
        }
    }
    tracing::info!("stopped");
    Ok(())
}

pub fn app(
    relay: Arc<Relay<Local>>,
    auth: Arc<oblivious_auth::Auth<Local>>,
    config: crate::config::State,
    server: &ServerSettings,
) -> Router {
    let checks = local_checks(relay.clone(), config);
    let routes = oblivious_relay::router(relay.clone())
        .merge(oblivious_admin::router(relay.clone()))
        .merge(oblivious_auth::router(auth))
        .merge(oblivious_relay::probes::router(relay.clone(), Some(checks)));
    let trusted: Arc<[ipnet::IpNet]> = server.trusted_proxies.clone().into();
    oblivious_relay::with_unknown_url(routes, relay).layer(axum::middleware::from_fn_with_state(trusted, around))
}

/// Every request: the caller's address (through trusted proxies only) and the trace's root span.
async fn around(
    axum::extract::State(trusted): axum::extract::State<Arc<[ipnet::IpNet]>>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    mut req: Request,
    next: Next,
) -> Response {
    let ip = caller(&req, addr, &trusted);
    req.extensions_mut().insert(ClientIp(ip));
    let span = crate::telemetry::request_span(&req);
    next.run(req).instrument(span).await
}

fn caller(req: &Request, peer: SocketAddr, trusted: &[ipnet::IpNet]) -> std::net::IpAddr {
    if trusted.is_empty() {
        return peer.ip();
    }
    let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok());
    forwarded::client_ip(peer.ip(), header("forwarded"), header("x-forwarded-for"), trusted)
}

/// Readiness the local shell adds: the config file as last read, and the schema.
fn local_checks(relay: Arc<Relay<Local>>, config: crate::config::State) -> oblivious_relay::probes::ShellChecks {
    Arc::new(move || {
        let relay = relay.clone();
        let config = config.clone();
        Box::pin(async move {
            let schema = match relay.ports.store.schema_drift().await {
                Ok((pending, unknown)) if pending.is_empty() && unknown.is_empty() => None,
                Ok((pending, unknown)) if unknown.is_empty() => Some(format!("migrations not applied: {pending:?}")),
                Ok((_, unknown)) => Some(format!(
                    "the database has migrations {unknown:?} this build does not know (a newer version migrated it)"
                )),
                Err(e) => Some(format!("cannot read the schema: {e}")),
            };
            vec![Check { name: "migrations", failure: schema }, Check { name: "config", failure: config.error() }]
        })
    })
}

fn metrics_router(relay: Arc<Relay<Local>>, queue: SqliteQueue, metrics: Arc<Metrics>) -> Router {
    Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let (relay, queue, metrics) = (relay.clone(), queue.clone(), metrics.clone());
            async move { scrape(&relay, &queue, &metrics).await }
        }),
    )
}

/// One scrape: gauges read now, then everything in Prometheus's text format.
async fn scrape(relay: &Relay<Local>, queue: &SqliteQueue, metrics: &Metrics) -> Response {
    if let Err(e) = relay.observe().await {
        tracing::warn!("metrics: cannot read the store's gauges: {e}");
    }
    match queue.depth().await {
        Ok((waiting, dead)) => {
            metrics::gauge!(t::QUEUE_DEPTH, "state" => "waiting").set(waiting as f64);
            metrics::gauge!(t::QUEUE_DEPTH, "state" => "dead").set(dead as f64);
        }
        Err(e) => tracing::warn!("metrics: cannot read the queue's depth: {e}"),
    }
    let mut resp = Response::new(axum::body::Body::from(metrics.render()));
    resp.headers_mut()
        .insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"));
    resp
}

/// On the very first start, issues the admin's key and returns it (to print once).
async fn issue_first_admin_key(ports: &oblivious_ports::Ports<Local>, admin_id: i64) -> Result<Option<String>, String> {
    if !ports.store.set_meta_once("admin_key_issued", "1").await.map_err(|e| e.to_string())? {
        return Ok(None);
    }
    let req = oblivious_admin::CreateToken { name: "admin".into(), ..Default::default() };
    let (_, key) = oblivious_admin::create_token(&ports.store, &ports.ids, &ports.clock, req, admin_id)
        .await
        .map_err(|e| e.message)?;
    Ok(Some(key))
}

/// The root user's setup link, made at the first start only.
async fn first_setup_link(auth: &oblivious_auth::Auth<Local>, root_id: i64) -> Result<Option<String>, String> {
    if !auth.relay.ports.store.set_meta_once("root_setup_issued", "1").await.map_err(|e| e.to_string())? {
        return Ok(None);
    }
    auth.setup_link(root_id).await.map(Some)
}

fn spawn_refresh(relay: Arc<Relay<Local>>) {
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(REFRESH_EVERY).await;
            if let Err(e) = relay.refresh(false).await {
                tracing::warn!("refresh failed: {e}");
            }
        }
    });
}

/// Refunds reservations whose requests died with a crashed process.
fn spawn_sweeper(relay: Arc<Relay<Local>>, billing: oblivious_core::config::BillingSettings) {
    tokio::spawn(async move {
        loop {
            match relay.sweep(billing.reservation_timeout_seconds).await {
                Ok(0) => {}
                Ok(n) => tracing::warn!(refunded = n, "refunded reservations left open"),
                Err(e) => tracing::error!("reservation sweep failed: {e}"),
            }
            tokio::time::sleep(Duration::from_secs(billing.sweep_interval_seconds.max(1))).await;
        }
    });
}

/// Probes every channel each `[relay] health_check_seconds` (read live; 0 is off),
/// as the AWS deployment's scheduled health function does.
fn spawn_health(relay: Arc<Relay<Local>>) {
    tokio::spawn(async move {
        loop {
            let s = relay.settings();
            if s.health_check_seconds == 0 {
                tokio::time::sleep(Duration::from_secs(5)).await;
                continue;
            }
            tokio::time::sleep(Duration::from_secs(s.health_check_seconds)).await;
            match relay.health_pass(s.health_window()).await {
                Ok(reports) => {
                    for r in reports.iter().filter(|r| !r.action.is_empty()) {
                        tracing::warn!(channel = %r.channel, action = r.action, "health check: {}", r.probe.message);
                    }
                }
                Err(e) => tracing::error!("health check failed: {e}"),
            }
        }
    });
}

/// Applies queued jobs (usage records) as they are published.
fn spawn_consumer(relay: Arc<Relay<Local>>, queue: SqliteQueue, alerts: SharedAlerts) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            if drain(&relay, &queue, &alerts).await == 0 {
                queue.wait(Duration::from_secs(1)).await;
            }
        }
    })
}

/// Processes every job that is due; returns how many were attempted.
async fn drain(relay: &Relay<Local>, queue: &SqliteQueue, alerts: &SharedAlerts) -> usize {
    let jobs = match queue.due(relay.ports.clock.now_ms(), 512).await {
        Ok(j) => j,
        Err(e) => {
            tracing::error!("cannot read the outbox: {e}");
            tokio::time::sleep(Duration::from_secs(1)).await;
            return 0;
        }
    };
    let settings = alerts.read().unwrap_or_else(|p| p.into_inner()).clone();
    let batch: Vec<_> = jobs.iter().map(|j| j.job.clone()).collect();
    let results = oblivious_billing::consume(&relay.ports, &settings, &batch).await;
    let mut done = Vec::with_capacity(jobs.len());
    for (j, result) in jobs.iter().zip(results) {
        match result {
            Ok(_) => done.push(j.id),
            Err(e) => {
                tracing::warn!(job = j.id, attempts = j.attempts, "job failed: {e}");
                match queue.fail(j.id, e.clone(), relay.ports.clock.now_ms()).await {
                    Ok(true) => {
                        // Parked for good (listed at /api/admin/jobs?state=dead): tell the operator.
                        if let Some(alert) = oblivious_billing::dead_job_alert(&settings, &j.job, j.attempts + 1, &e) {
                            if let Err(e) = oblivious_ports::Queue::publish(&relay.ports.queue, alert).await {
                                tracing::error!(job = j.id, "cannot queue the dead-job alert: {e}");
                            }
                        }
                    }
                    Ok(false) => {}
                    Err(e) => tracing::error!(job = j.id, "cannot update the outbox: {e}"),
                }
            }
        }
    }
    if let Err(e) = queue.ack(done).await {
        // The jobs will run again; applying them is idempotent.
        tracing::error!("cannot update the outbox: {e}");
    }
    jobs.len()
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutting down");
}
