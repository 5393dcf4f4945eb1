//! The relay function: `/v1/chat/completions`, `/v1/completions`,
//! `/v1/embeddings` and `/v1/models`, as an axum router over the ports.
//!
//! Pipeline per request: authenticate → read and parse the body → authorize
//! (token state, IP, model) → pick a channel → call upstream with retries and
//! failover → relay the answer (streamed event by event) → publish a usage event.

mod attempt;
mod auth;
pub mod health;
mod limits;
mod respond;
mod snapshot;
mod stream;
mod usage;

use std::net::IpAddr;
use std::sync::{Arc, RwLock};

use axum::extract::{Path, Request, State};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use oblivious_core::config::RelaySettings;
use oblivious_core::model::{Channel, ChannelStatus};
use oblivious_core::ratelimit::RateLimits;
use oblivious_ports::{Platform, Ports, StoreError};

pub use auth::Principal;
pub use respond::{error_response, json_response, REQUEST_ID};
pub use snapshot::Snapshot;

/// The caller's address, inserted into request extensions by the runtime shell.
#[derive(Clone, Copy, Debug)]
pub struct ClientIp(pub IpAddr);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endpoint {
    ChatCompletions,
    Completions,
    Embeddings,
}

impl Endpoint {
    pub fn path(self) -> &'static str {
        match self {
            Endpoint::ChatCompletions => "/chat/completions",
            Endpoint::Completions => "/completions",
            Endpoint::Embeddings => "/embeddings",
        }
    }
}

/// Shared state of the relay: ports, settings, and caches of store data.
pub struct Relay<P: Platform> {
    pub ports: Ports<P>,
    settings: RwLock<Arc<RelaySettings>>,
    rate_limits: RwLock<Arc<RateLimits>>,
    snapshot: RwLock<Arc<Snapshot>>,
    auth: auth::AuthCache,
}

impl<P: Platform> Relay<P> {
    /// Builds the relay and loads its first snapshot from the store.
    pub async fn new(ports: Ports<P>, settings: RelaySettings) -> Result<Arc<Self>, StoreError> {
        let relay = Arc::new(Relay {
            ports,
            settings: RwLock::new(Arc::new(settings)),
            rate_limits: RwLock::new(Arc::new(RateLimits::default())),
            snapshot: RwLock::new(Arc::new(Snapshot::default())),
            auth: auth::AuthCache::default(),
        });
        relay.refresh(true).await?;
        Ok(relay)
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
        let store = &self.ports.store;
        let rev = oblivious_ports::Store::revision(store).await?;
        if !force && rev == self.snapshot().revision {
            return Ok(false);
        }
        self.auth.clear();
        let snap = Snapshot::load(store, rev).await?;
        let before = self.snapshot();
        let revived: Vec<Arc<Channel>> = snap
            .channels
            .iter()
            .filter(|c| c.status == ChannelStatus::Enabled)
            .filter(|c| !before.channels.iter().any(|b| b.id == c.id && b.status == ChannelStatus::Enabled))
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
}

pub fn router<P: Platform>(relay: Arc<Relay<P>>) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(chat::<P>))
        .route("/v1/completions", post(completions::<P>))
        .route("/v1/embeddings", post(embeddings::<P>))
        .route("/v1/models", get(list_models::<P>))
        .route("/v1/models/{*id}", get(get_model::<P>))
        .with_state(relay)
}

async fn chat<P: Platform>(State(r): State<Arc<Relay<P>>>, req: Request) -> Response {
    attempt::handle(r, Endpoint::ChatCompletions, req).await
}

async fn completions<P: Platform>(State(r): State<Arc<Relay<P>>>, req: Request) -> Response {
    attempt::handle(r, Endpoint::Completions, req).await
}

async fn embeddings<P: Platform>(State(r): State<Arc<Relay<P>>>, req: Request) -> Response {
    attempt::handle(r, Endpoint::Embeddings, req).await
}

async fn list_models<P: Platform>(State(r): State<Arc<Relay<P>>>, req: Request) -> Response {
    snapshot::list_models(r, req, None).await
}

async fn get_model<P: Platform>(State(r): State<Arc<Relay<P>>>, Path(id): Path<String>, req: Request) -> Response {
    snapshot::list_models(r, req, Some(id)).await
}
