//! Loading the config file and applying it: parse, sync into the store, and
//! hand relay settings to the relay. Reloaded on change and on SIGHUP.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use oblivious_core::config::{self, Config};
use oblivious_ports::{Clock, ConfigSnapshot, Store};
use oblivious_relay::Relay;

use crate::platform::Local;
use crate::serve::SharedAlerts;

pub fn load(path: &Path) -> Result<Config, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
    config::parse(&path.display().to_string(), &text, |k| std::env::var(k).ok()).map_err(|e| e.to_string())
}

/// What a config (re)load updates.
#[derive(Clone)]
pub struct Shell {
    pub relay: Arc<Relay<Local>>,
    pub auth: Arc<oblivious_auth::Auth<Local>>,
    pub alerts: SharedAlerts,
}

pub async fn apply(shell: &Shell, cfg: &Config) -> Result<(), String> {
    let (relay, alerts) = (&shell.relay, &shell.alerts);
    let snapshot =
        ConfigSnapshot { groups: cfg.groups.clone(), prices: cfg.prices.clone(), channels: cfg.channels.clone() };
    relay.ports.store.sync_config(snapshot, relay.ports.clock.now_ms()).await.map_err(|e| e.to_string())?;
    relay.set_settings(cfg.relay.clone());
    relay.set_rate_limits(cfg.rate_limits.clone());
    shell.auth.set_settings(cfg.auth.clone(), cfg.mail.enabled());
    *alerts.write().unwrap_or_else(|p| p.into_inner()) = cfg.alerts.clone();
    relay.refresh(false).await.map_err(|e| e.to_string())?;
    Ok(())
}

/// Whether the config file as last read was applied (`/readyz` reports it).
#[derive(Clone, Default)]
pub struct State(Arc<std::sync::Mutex<Option<String>>>);

impl State {
    pub fn error(&self) -> Option<String> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn set(&self, error: Option<String>) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = error;
    }
}

fn mtime(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// Re-applies the file when its modification time changes or on SIGHUP. A
/// file that no longer validates is reported and the running config is kept.
pub fn watch(shell: Shell, path: PathBuf, state: State) {
    tokio::spawn(async move {
        let mut seen = mtime(&path);
        #[cfg(unix)]
        let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
        loop {
            #[cfg(unix)]
            let hangup = async {
                match hup.as_mut() {
                    Some(s) => {
                        s.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            #[cfg(not(unix))]
            let hangup = std::future::pending::<()>();
            let forced = tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(1)) => false,
                _ = hangup => true,
            };
            let now = mtime(&path);
            if !forced && now == seen {
                continue;
            }
            seen = now;
            let outcome = match load(&path) {
                Ok(cfg) => match apply(&shell, &cfg).await {
                    Ok(()) => {
                        tracing::info!(file = %path.display(), channels = cfg.channels.len(), "config reloaded");
                        None
                    }
                    Err(e) => {
                        tracing::error!("config not applied: {e}");
                        Some(format!("not applied: {e}"))
                    }
                },
                Err(e) => {
                    tracing::error!("config not reloaded, keeping the running one: {e}");
                    Some(format!("the file no longer loads, the running config is the last good one: {e}"))
                }
            };
            state.set(outcome);
        }
    });
}
