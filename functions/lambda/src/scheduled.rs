//! The scheduled functions' work (EventBridge calls them; the event itself
//! carries nothing they need).

use std::time::Duration;

use oblivious_ports::{Clock, ConfigSnapshot, Store};
use serde_json::{json, Value};

use crate::platform::Init;

/// Probes every channel; disables the failing, revives the recovered.
pub async fn health(init: &Init, window: Duration) -> Result<Value, String> {
    let reports = init.relay.health_pass(window).await.map_err(|e| e.to_string())?;
    Ok(json!({ "channels": reports }))
}

/// Refunds reservations older than the billing timeout.
pub async fn sweep(init: &Init) -> Result<Value, String> {
    let refunded =
        init.relay.sweep(init.config.billing.reservation_timeout_seconds).await.map_err(|e| e.to_string())?;
    if refunded > 0 {
        tracing::warn!(refunded, "refunded reservations left open");
    }
    Ok(json!({ "refunded": refunded }))
}

/// Makes the store's config-owned channels, groups and prices match the
/// config (the admin function does this at cold start).
pub async fn sync_config(init: &Init) -> Result<(), String> {
    let c = &init.config;
    let snapshot = ConfigSnapshot { groups: c.groups.clone(), prices: c.prices.clone(), channels: c.channels.clone() };
    let store = &init.relay.ports.store;
    store.sync_config(snapshot, init.relay.ports.clock.now_ms()).await.map_err(|e| e.to_string())?;
    init.relay.refresh(false).await.map_err(|e| e.to_string())?;
    Ok(())
}
