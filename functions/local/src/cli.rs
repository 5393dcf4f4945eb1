//! CLI commands. They write the shared SQLite database directly, through the
//! same store port and token logic as the admin API.

use std::path::Path;

use clap::Subcommand;
use oblivious_core::model::{ChannelStatus, Id, TokenStatus};
use oblivious_ports::{Clock, Page, Store, TokenFilter, TokenPatch};
use oblivious_relay::Relay;

use crate::platform;

#[derive(Subcommand)]
pub enum TokenCmd {
    /// Create a key and print it alone on stdout (it is shown only once).
    Create {
        #[arg(long)]
        name: String,
        /// Owning user's name.
        #[arg(long, default_value = platform::ADMIN)]
        user: String,
        /// Quota in units (1 unit = 1 micro-USD).
        #[arg(long, conflicts_with = "unlimited")]
        quota: Option<i64>,
        /// No quota limit (the default when --quota is not given).
        #[arg(long)]
        unlimited: bool,
        /// Allowed models, comma-separated (exact or prefix*).
        #[arg(long, value_delimiter = ',')]
        models: Vec<String>,
        /// Allowed client addresses, comma-separated CIDRs.
        #[arg(long, value_delimiter = ',')]
        ips: Vec<String>,
        /// Expiry, RFC 3339 (e.g. 2027-01-01T00:00:00Z).
        #[arg(long)]
        expires: Option<String>,
        /// Spending cap per UTC day, in units.
        #[arg(long)]
        daily_limit: Option<i64>,
        /// Spending cap per UTC month, in units.
        #[arg(long)]
        monthly_limit: Option<i64>,
    },
    /// List keys.
    List {
        /// Only this user's keys.
        #[arg(long)]
        user: Option<String>,
        /// Include deleted keys.
        #[arg(long)]
        all: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    Disable {
        id: Id,
    },
    Enable {
        id: Id,
    },
    /// Soft-delete (restorable).
    Delete {
        id: Id,
    },
    Restore {
        id: Id,
    },
}

#[derive(Subcommand)]
pub enum ChannelCmd {
    List {
        #[arg(long)]
        json: bool,
    },
    Enable {
        id: Id,
    },
    Disable {
        id: Id,
    },
    /// Send a probe request; a pass re-enables an auto-disabled channel.
    Test {
        id: Id,
    },
    /// List the models the channel's upstream offers.
    Models {
        id: Id,
    },
}

#[derive(Subcommand)]
pub enum CodeCmd {
    /// Generate redemption codes and print them, one per line (shown only once).
    Create {
        /// Units each code credits.
        #[arg(long)]
        value: i64,
        #[arg(long, default_value_t = 1)]
        count: u32,
        /// Expiry, RFC 3339.
        #[arg(long)]
        expires: Option<String>,
        #[arg(long)]
        batch: Option<String>,
    },
}

pub(crate) async fn relay(data: &Path) -> Result<std::sync::Arc<Relay<platform::Local>>, String> {
    let (ports, _) = platform::open(data, &Default::default()).await?;
    platform::ensure_basics(&ports).await?;
    Relay::new(ports, Default::default()).await.map_err(|e| e.to_string())
}

pub(crate) fn s(e: impl std::fmt::Display) -> String {
    e.to_string()
}

fn time(ms: Option<i64>) -> String {
    ms.and_then(chrono::DateTime::from_timestamp_millis)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_else(|| "-".into())
}

pub async fn token(data: &Path, cmd: TokenCmd) -> Result<(), String> {
    let r = relay(data).await?;
    let store = &r.ports.store;
    let user_id = |name: String| async move {
        store
            .user_by_name(&name)
            .await
            .map_err(s)?
            .map(|u| u.id)
            .ok_or_else(|| format!("no user named `{name}` (create one with `oblivious user create`)"))
    };
    match cmd {
        TokenCmd::Create { name, user, quota, unlimited, models, ips, expires, daily_limit, monthly_limit } => {
            let uid = user_id(user).await?;
            let req = oblivious_admin::CreateToken {
                name,
                user_id: Some(uid),
                quota,
                unlimited,
                models,
                ips,
                expires_at: expires,
                daily_limit,
                monthly_limit,
            };
            let (_, key) = oblivious_admin::create_token(store, &r.ports.ids, &r.ports.clock, req, uid)
                .await
                .map_err(|e| e.message)?;
            println!("{key}");
            Ok(())
        }
        TokenCmd::List { user, all, json } => {
            let uid = match user {
                Some(u) => Some(user_id(u).await?),
                None => None,
            };
            let page = Page { offset: 0, limit: u64::MAX >> 1 };
            let tokens = store.tokens(TokenFilter { user_id: uid, include_deleted: all }, page).await.map_err(s)?;
            let now = r.ports.clock.now_ms();
            if json {
                let v: Vec<_> = tokens
                    .items
                    .iter()
                    .map(|t| {
                        let mut v = serde_json::to_value(t).unwrap_or_default();
                        v["status"] = t.effective_status(now).as_str().into();
                        v
                    })
                    .collect();
                println!("{}", serde_json::Value::Array(v));
                return Ok(());
            }
            println!(
                "{:<5} {:<20} {:<6} {:<10} {:<12} {:<10} {:<20} {:<21} KEY",
                "ID", "NAME", "USER", "STATUS", "REMAINING", "USED", "MODELS", "EXPIRES"
            );
            for t in &tokens.items {
                let remaining = if t.unlimited { "unlimited".to_string() } else { t.remaining_quota.to_string() };
                let models = if t.models.is_empty() { "*".to_string() } else { t.models.join(",") };
                println!(
                    "{:<5} {:<20} {:<6} {:<10} {:<12} {:<10} {:<20} {:<21} {}",
                    t.id,
                    t.name,
                    t.user_id,
                    t.effective_status(now).as_str(),
                    remaining,
                    t.used_quota,
                    models,
                    time(t.expires_at),
                    t.key_hint
                );
            }
            Ok(())
        }
        TokenCmd::Disable { id } => set_token_status(&r, id, TokenStatus::Disabled).await,
        TokenCmd::Enable { id } | TokenCmd::Restore { id } => set_token_status(&r, id, TokenStatus::Normal).await,
        TokenCmd::Delete { id } => set_token_status(&r, id, TokenStatus::Deleted).await,
    }
}

async fn set_token_status(r: &Relay<platform::Local>, id: Id, status: TokenStatus) -> Result<(), String> {
    let t =
        r.ports.store.update_token(id, TokenPatch { status: Some(status), ..Default::default() }).await.map_err(s)?;
    eprintln!("token {} ({}) is now {}", t.id, t.name, t.effective_status(r.ports.clock.now_ms()).as_str());
    Ok(())
}

pub async fn channel(data: &Path, cmd: ChannelCmd) -> Result<(), String> {
    let r = relay(data).await?;
    let find = |id: Id| {
        let r = r.clone();
        async move { r.ports.store.channel(id).await.map_err(s)?.ok_or_else(|| format!("no channel {id}")) }
    };
    match cmd {
        ChannelCmd::List { json } => {
            let chans = r.ports.store.channels().await.map_err(s)?;
            if json {
                let v: Vec<_> = chans
                    .iter()
                    .map(|c| {
                        let mut v = serde_json::to_value(c).unwrap_or_default();
                        v["keys"] = c.spec.keys.len().into();
                        v["base_url"] = oblivious_core::upstream_url::redact(&c.spec.base_url).into();
                        if let Some(reason) = &c.status_reason {
                            v["status_reason"] = oblivious_core::upstream_url::redact_in_text(reason).into();
                        }
                        v
                    })
                    .collect();
                println!("{}", serde_json::Value::Array(v));
                return Ok(());
            }
            println!(
                "{:<5} {:<20} {:<8} {:<14} {:<8} {:<7} {:<5} {:<30} REASON",
                "ID", "NAME", "TYPE", "STATUS", "PRIORITY", "WEIGHT", "KEYS", "MODELS"
            );
            for c in &chans {
                println!(
                    "{:<5} {:<20} {:<8} {:<14} {:<8} {:<7} {:<5} {:<30} {}",
                    c.id,
                    c.spec.name,
                    c.spec.kind.as_str(),
                    c.status.as_str(),
                    c.spec.priority,
                    c.spec.weight,
                    c.spec.keys.len(),
                    c.spec.models.join(","),
                    oblivious_core::upstream_url::redact_in_text(c.status_reason.as_deref().unwrap_or(""))
                );
            }
            Ok(())
        }
        ChannelCmd::Enable { id } => {
            r.set_channel_status(&find(id).await?, ChannelStatus::Enabled, None).await.map_err(s)?;
            eprintln!("channel {id} enabled");
            Ok(())
        }
        ChannelCmd::Disable { id } => {
            r.set_channel_status(&find(id).await?, ChannelStatus::Disabled, Some("disabled from the CLI".into()))
                .await
                .map_err(s)?;
            eprintln!("channel {id} disabled");
            Ok(())
        }
        ChannelCmd::Test { id } => {
            let ch = find(id).await?;
            let result = r.test_channel(&ch).await.map_err(s)?;
            println!("{}", serde_json::to_string(&result).map_err(s)?);
            if result.ok {
                Ok(())
            } else {
                Err(format!("channel {id} failed its test: {}", result.message))
            }
        }
        ChannelCmd::Models { id } => {
            let models = r.upstream_models(&find(id).await?).await?;
            for m in models {
                println!("{m}");
            }
            Ok(())
        }
    }
}

pub async fn code(data: &Path, cmd: CodeCmd) -> Result<(), String> {
    let r = relay(data).await?;
    match cmd {
        CodeCmd::Create { value, count, expires, batch } => {
            let expires_at = expires
                .as_deref()
                .map(|e| oblivious_admin::tokens::parse_time(e, "expires"))
                .transpose()
                .map_err(|e| e.message)?;
            let now = r.ports.clock.now_ms();
            let (_, codes) =
                oblivious_admin::create_codes(&r.ports.store, &r.ports.ids, now, count, value, expires_at, batch)
                    .await
                    .map_err(|e| e.message)?;
            for c in codes {
                println!("{c}");
            }
            Ok(())
        }
    }
}
