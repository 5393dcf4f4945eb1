//! The local platform: SQLite store and outbox queue, in-process hot state, reqwest upstream.

use std::path::{Path, PathBuf};

use oblivious_native::{AnyMailer, HttpUpstream, MemoryHot, NoMailer, RandomIds, SystemClock, TokioTasks};
use std::time::Duration;

use bytes::Bytes;
use oblivious_core::config::{HotBackend, HotSettings};
use oblivious_ports::{Hit, Hot, Platform, PortError, Ports};
use oblivious_redis::RedisHot;
use oblivious_sqlite::{Db, SqliteQueue, SqliteStore};
use oblivious_upstash::UpstashHot;

pub struct Local;

impl Platform for Local {
    type Store = SqliteStore;
    type Hot = LocalHot;
    type Mailer = AnyMailer;
    type Queue = SqliteQueue;
    type Upstream = HttpUpstream;
    type Clock = SystemClock;
    type Ids = RandomIds;
    type Tasks = TokioTasks;
}

pub const DB_FILE: &str = "oblivious.db";

pub fn db_path(data: &Path) -> PathBuf {
    data.join(DB_FILE)
}

/// Hot state: in this process, or in a Redis shared by several gateways,
/// over TCP or Upstash's REST API (chosen by `[hot] backend`). A closed enum
/// keeps dispatch static.
pub enum LocalHot {
    Memory(MemoryHot),
    Redis(Box<RedisHot>),
    Upstash(UpstashHot<HttpUpstream>),
}

macro_rules! on_hot {
    ($self:expr, $h:ident => $e:expr) => {
        match $self {
            LocalHot::Memory($h) => $e,
            LocalHot::Redis($h) => $e,
            LocalHot::Upstash($h) => $e,
        }
    };
}

impl Hot for LocalHot {
    async fn get(&self, key: &str) -> Result<Option<i64>, PortError> {
        on_hot!(self, h => h.get(key).await)
    }
    async fn incr(&self, key: &str, delta: i64, ttl: Option<Duration>) -> Result<i64, PortError> {
        on_hot!(self, h => h.incr(key, delta, ttl).await)
    }
    async fn set(&self, key: &str, value: i64, ttl: Option<Duration>) -> Result<(), PortError> {
        on_hot!(self, h => h.set(key, value, ttl).await)
    }
    async fn del(&self, key: &str) -> Result<(), PortError> {
        on_hot!(self, h => h.del(key).await)
    }
    async fn get_bytes(&self, key: &str) -> Result<Option<Bytes>, PortError> {
        on_hot!(self, h => h.get_bytes(key).await)
    }
    async fn set_bytes(&self, key: &str, value: Bytes, ttl: Option<Duration>) -> Result<(), PortError> {
        on_hot!(self, h => h.set_bytes(key, value, ttl).await)
    }
    async fn window_hit(
        &self,
        key: &str,
        window_ms: i64,
        limit: i64,
        cost: i64,
        now_ms: i64,
    ) -> Result<Hit, PortError> {
        on_hot!(self, h => h.window_hit(key, window_ms, limit, cost, now_ms).await)
    }
    async fn acquire(&self, key: &str, limit: i64, ttl: Duration) -> Result<Option<i64>, PortError> {
        on_hot!(self, h => h.acquire(key, limit, ttl).await)
    }
}

/// Opens (creating on first use) the data directory and database, and
/// connects the hot state.
pub async fn open(data: &Path, hot: &HotSettings) -> Result<(Ports<Local>, SqliteQueue), String> {
    let mut dir = std::fs::DirBuilder::new();
    dir.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut dir, 0o700);
    dir.create(data).map_err(|e| format!("cannot create data directory {}: {e}", data.display()))?;
    private_files(data)?;
    let db = Db::open(&db_path(data)).map_err(|e| e.to_string())?;
    let queue = SqliteQueue::new(db.clone());
    let ports = Ports {
        store: SqliteStore::new(db),
        hot: match hot.backend {
            HotBackend::Memory => LocalHot::Memory(MemoryHot::new()),
            HotBackend::Redis => {
                let url = hot.redis_url.as_deref().unwrap_or_default();
                LocalHot::Redis(Box::new(
                    RedisHot::connect(url, &hot.key_prefix).await.map_err(|e| format!("hot state: {e}"))?,
                ))
            }
            HotBackend::Upstash => {
                let upstash = UpstashHot::new(
                    HttpUpstream::new()?,
                    hot.upstash_url.as_deref().unwrap_or_default(),
                    hot.upstash_token.as_deref().unwrap_or_default(),
                    &hot.key_prefix,
                );
                upstash.ping().await.map_err(|e| format!("hot state: {e}"))?;
                LocalHot::Upstash(upstash)
            }
        },
        queue: queue.clone(),
        upstream: HttpUpstream::new()?,
        clock: SystemClock,
        ids: RandomIds,
        tasks: TokioTasks,
        // Off here (`open` sees no config); `serve` sets `[mail]`'s.
        mailer: AnyMailer::Off(NoMailer),
    };
    Ok((ports, queue))
}

/// Makes the data directory 0700 and the database (with its `-wal` and `-shm`)
/// and `secret.key` 0600, tightening what an older start left looser (logged).
/// The database file is created 0600 before SQLite opens it, and SQLite gives
/// the `-wal` and `-shm` files it creates the database file's mode.
#[cfg(unix)]
fn private_files(data: &Path) -> Result<(), String> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let tighten = |path: &Path, mode: u32| -> Result<(), String> {
        let now = match std::fs::metadata(path) {
            Ok(m) => m.permissions().mode() & 0o777,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(format!("{}: {e}", path.display())),
        };
        if now & !mode != 0 {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
                .map_err(|e| format!("cannot restrict {} to {mode:o}: {e}", path.display()))?;
            tracing::warn!("{} was mode {now:o}; now {mode:o}", path.display());
        }
        Ok(())
    };
    tighten(data, 0o700)?;
    let db = db_path(data);
    match std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&db) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(format!("cannot create {}: {e}", db.display())),
    }
    for file in [format!("{DB_FILE}-wal"), format!("{DB_FILE}-shm"), DB_FILE.to_string(), "secret.key".to_string()] {
        tighten(&data.join(file), 0o600)?;
    }
    Ok(())
}

#[cfg(not(unix))]
fn private_files(_data: &Path) -> Result<(), String> {
    Ok(())
}

pub use oblivious_admin::bootstrap::ADMIN;

/// Makes sure the `admin` user and the `default` group exist.
pub async fn ensure_basics(ports: &Ports<Local>) -> Result<oblivious_core::model::User, String> {
    oblivious_admin::bootstrap::ensure_basics(ports).await
}
