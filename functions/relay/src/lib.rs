//! The relay function: OpenAI-, Anthropic- and Gemini-shaped endpoints as an
//! axum router over the ports.
//!
//! Pipeline per request: authenticate → read and parse the body → authorize
//! (token state, IP, model) → pick a channel → convert to its wire format →
//! call upstream with retries and failover → relay the answer (streamed event
//! by event, converted back) → publish a usage event.

mod attempt;
mod audit;
mod auth;
mod caller;
mod cors;
mod credentials;
mod embeddings;
pub mod health;
mod inbound;
mod limits;
mod observe;
pub use observe::describe as describe_metrics;
mod overlay;
pub mod probes;
mod respond;
mod shared;
mod snapshot;
mod stream;
mod tokens;
mod upstream;
mod usage;
mod validate;

use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, RwLock};

use axum::extract::{Path, Request, State};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use oblivious_core::config::RelaySettings;
use oblivious_core::model::{Channel, ChannelStatus};
use oblivious_core::ratelimit::RateLimits;
use oblivious_core::wire::Inbound;
use oblivious_ports::{Clock, Ids, Ledger, Platform, Ports, Store, StoreError};

pub use audit::{Audit, Origin, RequestId};
pub use auth::Principal;
pub use caller::{check_csrf, cookie, gate, Caller, ACCESS_COOKIE, CSRF_COOKIE, CSRF_HEADER};
use inbound::GeminiCall;
pub use respond::{error_response, error_response_in, json_response, read_body, REQUEST_ID};
pub use snapshot::Snapshot;

/// The caller's address, inserted into request extensions by the runtime shell.
#[derive(Clone, Copy, Debug)]
pub struct ClientIp(pub IpAddr);

pub use inbound::Endpoint;

/// Shared state of the relay: ports, settings, and caches of store data.
pub struct Relay<P: Platform> {
    pub ports: Ports<P>,
    settings: RwLock<Arc<RelaySettings>>,
    rate_limits: RwLock<Arc<RateLimits>>,
    snapshot: RwLock<Arc<Snapshot>>,
    auth: auth::AuthCache,
    /// Access-token verification keys.
    keys: caller::KeyRing,
    /// The second cache level in hot state, when instances share it.
    shared: Option<shared::SharedCaches>,
    tokens: credentials::TokenCache,
    usage_backlog: usage::Backlog,
    /// When [`Relay::refresh_if_stale`] last checked the store's revision (Unix ms).
    refreshed_at: AtomicI64,
}

/// How stale cached keys, channels and prices may get before a request
/// re-checks the store's revision, in shells without a poller (Lambda, the edge).
pub const REFRESH_AFTER_MS: i64 = 1000;

impl<P: Platform> Relay<P> {
    /// Builds the relay and loads its first snapshot from the store. Its
    /// caches live in this process only: right for one process (the local
    /// binary), whose hot state is in the same process anyway.
    pub async fn new(ports: Ports<P>, settings: RelaySettings) -> Result<Arc<Self>, StoreError> {
        Self::start(ports, settings, false).await
    }

    /// Like [`Relay::new`], with a second level in hot state shared by every
    /// instance (Lambda, the edge): a cold instance builds its snapshot and
    /// resolves keys from what a warm one already read, sealed with the
    /// store's sealer, and reads the tables only when nobody has yet.
    pub async fn new_shared(ports: Ports<P>, settings: RelaySettings) -> Result<Arc<Self>, StoreError> {
        Self::start(ports, settings, true).await
    }

    async fn start(ports: Ports<P>, settings: RelaySettings, share: bool) -> Result<Arc<Self>, StoreError> {
        let shared = share.then(|| shared::SharedCaches::new(ports.store.sealer()));
        let relay = Arc::new(Relay {
            ports,
            settings: RwLock::new(Arc::new(settings)),
            rate_limits: RwLock::new(Arc::new(RateLimits::default())),
            snapshot: RwLock::new(Arc::new(Snapshot::default())),
            auth: auth::AuthCache::default(),
            keys: caller::KeyRing::default(),
            shared,
            tokens: credentials::TokenCache::default(),
            usage_backlog: usage::Backlog::default(),
            refreshed_at: AtomicI64::new(0),
        });
        relay.refresh(true).await?;
        Ok(relay)
    }

    /// Usage records finished but not yet handed to the queue (a shell waits for 0 before exiting).
    pub fn usage_pending(&self) -> usize {
        self.usage_backlog.pending()
    }

    pub fn settings(&self) -> Arc<RelaySettings> {
        self.settings.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn set_settings(&self, s: RelaySettings) {
        *self.settings.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(s);
    }

    pub fn rate_limits(&self) -> Arc<RateLimits> {
        self.rate_limits.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn set_rate_limits(&self, limits: RateLimits) {
        *self.rate_limits.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(limits);
    }

    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Reloads channels, groups and prices and drops cached keys when the
    /// store's revision moved (or always, with `force`).
    pub async fn refresh(&self, force: bool) -> Result<bool, StoreError> {
        self.refreshed_at.store(self.ports.clock.now_ms(), Ordering::Relaxed);
        let rev = self.ports.store.revision().await?;
        if !force && rev == self.snapshot().revision {
            return Ok(false);
        }
        self.auth.clear(rev);
        let snap = self.load_snapshot(rev).await?;
        let before = self.snapshot();
        // An instance's first load revives nothing: cold instances (a new
        // isolate, a new Lambda) start all the time and must not wipe the
        // failure history other instances share in hot state.
        let first_load = before.revision == 0 && before.channels.is_empty();
        let enabled_before: HashSet<_> =
            before.channels.iter().filter(|b| b.status == ChannelStatus::Enabled).map(|b| b.id).collect();
        let revived: Vec<Arc<Channel>> = snap
            .channels
            .iter()
            .filter(|c| !first_load && c.status == ChannelStatus::Enabled && !enabled_before.contains(&c.id))
            .cloned()
            .collect();
        *self.snapshot.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(snap);
        // A channel (re-)enabled anywhere, e.g. by the CLI in another process,
        // starts with a clean failure history and rested keys.
        for c in revived {
            self.clear_health(&c).await;
        }
        Ok(true)
    }

    /// [`Relay::refresh`] at most once per [`REFRESH_AFTER_MS`]; a failure is
    /// logged and the request goes on with the caches it has.
    pub async fn refresh_if_stale(&self) {
        let now = self.ports.clock.now_ms();
        if now - self.refreshed_at.load(Ordering::Relaxed) < REFRESH_AFTER_MS {
            return;
        }
        if let Err(e) = self.refresh(false).await {
            tracing::warn!("refresh failed: {e}");
        }
    }

    /// Refunds reservations still open after `timeout_seconds` (their request
    /// died with its process); returns how many.
    pub async fn sweep(&self, timeout_seconds: u64) -> Result<u64, StoreError> {
        let now = self.ports.clock.now_ms();
        let cutoff = now - (timeout_seconds as i64).saturating_mul(1000);
        let refunded = self.ports.store.sweep_reservations(cutoff, now).await?;
        observe::swept(refunded);
        Ok(refunded)
    }

    /// The snapshot at `rev`: from the shared level when it has it, else from
    /// the store (then shared, for the next cold instance).
    async fn load_snapshot(&self, rev: i64) -> Result<Snapshot, StoreError> {
        let Some(shared) = &self.shared else {
            return Snapshot::load(&self.ports.store, rev).await;
        };
        let share = match shared.snapshot(&self.ports.hot, rev).await {
            shared::Lookup::Hit(inputs) => {
                observe::cache("shared_snapshot", true);
                return Ok(Snapshot::build(rev, inputs));
            }
            shared::Lookup::Miss => true,
            shared::Lookup::Down => false,
        };
        observe::cache("shared_snapshot", false);
        // Read after `rev` was: at least as new as the entry's key says.
        let inputs = snapshot::Inputs::read(&self.ports.store).await?;
        if share {
            shared.put_snapshot(&self.ports.hot, rev, &inputs).await;
        }
        Ok(Snapshot::build(rev, inputs))
    }
}

pub fn router<P: Platform>(relay: Arc<Relay<P>>) -> Router {
    let routes = Router::new()
        .route("/v1/chat/completions", post(openai::<P>))
        .route("/v1/completions", post(openai::<P>))
        .route("/v1/embeddings", post(openai::<P>))
        .route("/v1/responses", post(openai::<P>))
        .route("/v1/images/generations", post(openai::<P>))
        .route("/v1/audio/speech", post(openai::<P>))
        .route("/v1/audio/transcriptions", post(openai::<P>))
        .route("/v1/moderations", post(openai::<P>))
        .route("/v1/rerank", post(openai::<P>))
        .route("/v1/messages", post(messages::<P>))
        .route("/v1/messages/count_tokens", post(anthropic_count::<P>))
        .route("/v1/models", get(list_models::<P>))
        .route("/v1/models/{*id}", get(get_model::<P>).post(gemini::<P>))
        .route("/v1beta/models", get(gemini_models::<P>))
        .route("/v1beta/models/{*id}", get(gemini_model::<P>).post(gemini::<P>));
    let routes = match cors::layer(&relay.settings().cors) {
        Some(layer) => routes.layer(layer),
        None => routes,
    };
    routes.with_state(relay)
}

/// Adds the answer for any URL no route serves: 404 `unknown_url` in OpenAI's shape.
pub fn with_unknown_url<P: Platform>(router: Router, relay: Arc<Relay<P>>) -> Router {
    router.fallback(move |req: Request| {
        let relay = relay.clone();
        async move {
            let e = oblivious_core::ApiError::not_found(
                "unknown_url",
                format!("Unknown request URL: {} {}.", req.method(), req.uri().path()),
            );
            error_response(&e, &relay.ports.ids.request_id())
        }
    })
}

async fn openai<P: Platform>(State(r): State<Arc<Relay<P>>>, req: Request) -> Response {
    let endpoint = match req.uri().path() {
        "/v1/chat/completions" => Endpoint::Chat(Inbound::OpenAi),
        "/v1/completions" => Endpoint::Completions,
        "/v1/embeddings" => Endpoint::Embeddings,
        "/v1/responses" => Endpoint::Chat(Inbound::Responses),
        "/v1/images/generations" => Endpoint::Images,
        "/v1/audio/speech" => Endpoint::Speech,
        "/v1/audio/transcriptions" => Endpoint::Transcriptions,
        "/v1/moderations" => Endpoint::Moderations,
        _ => Endpoint::Rerank,
    };
    attempt::handle(r, endpoint, None, req).await
}

async fn messages<P: Platform>(State(r): State<Arc<Relay<P>>>, req: Request) -> Response {
    attempt::handle(r, Endpoint::Chat(Inbound::Anthropic), None, req).await
}

async fn anthropic_count<P: Platform>(State(r): State<Arc<Relay<P>>>, req: Request) -> Response {
    tokens::count(r, Inbound::Anthropic, None, req).await
}

/// `POST /v1beta/models/{model}:{method}` (and the same under `/v1/models/`).
async fn gemini<P: Platform>(State(r): State<Arc<Relay<P>>>, Path(id): Path<String>, req: Request) -> Response {
    let sse = req.uri().query().is_some_and(|q| q.split('&').any(|p| p == "alt=sse"));
    let (model, method) = id.rsplit_once(':').unwrap_or((id.as_str(), ""));
    let call = GeminiCall { model: model.to_string(), stream: method == "streamGenerateContent", sse };
    let endpoint = match method {
        "generateContent" | "streamGenerateContent" => Endpoint::Chat(Inbound::Gemini),
        "embedContent" => Endpoint::GeminiEmbed { batch: false },
        "batchEmbedContents" => Endpoint::GeminiEmbed { batch: true },
        "countTokens" => return tokens::count(r, Inbound::Gemini, Some(call), req).await,
        other => {
            let e = oblivious_core::ApiError::not_found(
                "unknown_method",
                format!("Method `{other}` is not served here (generateContent, streamGenerateContent, countTokens, embedContent, batchEmbedContents)."),
            );
            return respond::error_response_in(Inbound::Gemini, &e, &r.ports.ids.request_id());
        }
    };
    attempt::handle(r, endpoint, Some(call), req).await
}

async fn list_models<P: Platform>(State(r): State<Arc<Relay<P>>>, req: Request) -> Response {
    let style = if req.headers().contains_key("anthropic-version") { Inbound::Anthropic } else { Inbound::OpenAi };
    snapshot::list_models(r, req, None, style).await
}

async fn get_model<P: Platform>(State(r): State<Arc<Relay<P>>>, Path(id): Path<String>, req: Request) -> Response {
    let style = if req.headers().contains_key("anthropic-version") { Inbound::Anthropic } else { Inbound::OpenAi };
    snapshot::list_models(r, req, Some(id), style).await
}

async fn gemini_models<P: Platform>(State(r): State<Arc<Relay<P>>>, req: Request) -> Response {
    snapshot::list_models(r, req, None, Inbound::Gemini).await
}

async fn gemini_model<P: Platform>(State(r): State<Arc<Relay<P>>>, Path(id): Path<String>, req: Request) -> Response {
    let id = id.trim_start_matches("models/").to_string();
    snapshot::list_models(r, req, Some(id), Inbound::Gemini).await
}
