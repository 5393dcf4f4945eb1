//! The admin function: JSON CRUD under `/api/admin/` for users, tokens,
//! channels (with test), groups, prices, and the usage log (admin role), and
//! the caller's own keys, balance, usage and redemption.
//! The CLI and the web console are clients of the same operations.

mod analytics;
pub mod bootstrap;
mod handlers;
pub mod money;
pub mod tokens;

use std::sync::Arc;

use axum::routing::{get, post, put};
use axum::Router;
use oblivious_core::{ApiError, ErrorKind};
use oblivious_ports::{Platform, StoreError};
use oblivious_relay::Relay;

pub use handlers::keep_a_root;
pub use money::create_codes;
pub use tokens::{create_token, CreateToken};

pub fn router<P: Platform>(relay: Arc<Relay<P>>) -> Router {
    use handlers::*;
    Router::new()
        .route("/api/admin/users", get(list_users::<P>).post(create_user::<P>))
        .route("/api/admin/users/{id}", get(get_user::<P>).patch(update_user::<P>).delete(delete_user::<P>))
        .route("/api/admin/tokens", get(list_tokens::<P>).post(create_token_h::<P>))
        .route("/api/admin/tokens/{id}", get(get_token::<P>).patch(update_token::<P>).delete(delete_token::<P>))
        .route("/api/admin/tokens/{id}/restore", post(restore_token::<P>))
        // The same operations on the caller's own keys (scoped by the path).
        .route("/api/me/keys", get(list_tokens::<P>).post(create_token_h::<P>))
        .route("/api/me/keys/{id}", get(get_token::<P>).patch(update_token::<P>).delete(delete_token::<P>))
        .route("/api/me/keys/{id}/restore", post(restore_token::<P>))
        .route("/api/admin/channels", get(list_channels::<P>).post(create_channel::<P>))
        .route("/api/admin/channels/{id}", get(get_channel::<P>).patch(update_channel::<P>).delete(delete_channel::<P>))
        .route("/api/admin/channels/{id}/test", post(test_channel::<P>))
        .route("/api/admin/channels/{id}/models", get(fetch_models::<P>))
        .route("/api/admin/groups", get(list_groups::<P>))
        .route("/api/admin/groups/{name}", put(put_group::<P>).delete(delete_group::<P>))
        .route("/api/admin/prices", get(list_prices::<P>))
        .route("/api/admin/prices/{*model}", put(put_price::<P>).delete(delete_price::<P>))
        .route("/api/admin/usage", get(list_usage::<P>))
        .route("/api/admin/users/{id}/topup", post(money::top_up::<P>))
        .route("/api/admin/ledger", get(money::ledger::<P>))
        .route("/api/admin/codes", get(money::list_codes::<P>).post(money::new_codes::<P>))
        .route("/api/admin/reservations", get(money::reservations::<P>))
        .route("/api/admin/alerts", get(money::alerts::<P>))
        .route("/api/admin/jobs", get(money::jobs::<P>))
        .route("/api/account", get(money::account::<P>))
        .route("/api/usage", get(money::own_usage::<P>))
        .route("/api/admin/usage/stats", get(analytics::admin_stats::<P>))
        .route("/api/admin/usage.csv", get(analytics::admin_csv::<P>))
        .route("/api/usage/stats", get(analytics::own_stats::<P>))
        .route("/api/usage.csv", get(analytics::own_csv::<P>))
        .route("/api/redeem", post(money::redeem::<P>))
        .layer(axum::middleware::from_fn_with_state(relay.clone(), oblivious_relay::gate::<P>))
        .with_state(relay)
}

pub(crate) fn store_error(e: StoreError) -> ApiError {
    match e {
        StoreError::NotFound(what) => ApiError::not_found("not_found", format!("{what} not found")),
        // A store refuses a balance that would leave the bounds with this prefix.
        StoreError::Conflict(why) if why.starts_with(oblivious_core::money::OUT_OF_RANGE) => {
            ApiError::invalid(oblivious_core::money::OUT_OF_RANGE, why)
        }
        StoreError::Conflict(why) => ApiError::new(ErrorKind::Conflict, "conflict", why),
        StoreError::Backend(why) => ApiError::internal(why),
    }
}
