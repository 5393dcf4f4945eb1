//! The local platform: SQLite store and outbox queue, in-process hot state, reqwest upstream.

use std::path::{Path, PathBuf};

use oblivious_native::{HttpUpstream, MemoryHot, RandomIds, SystemClock, TokioTasks};
use std::time::Duration;

use bytes::Bytes;
use oblivious_core::config::{HotBackend, HotSettings};
use oblivious_ports::{Hit, Hot, Platform, PortError, Ports};
use oblivious_redis::RedisHot;
use oblivious_sqlite::{Db, SqliteQueue, SqliteStore};

pub struct Local;

impl Platform for Local {
    type Store = SqliteStore;
    type Hot = LocalHot;
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

/// Hot state: in this process, or in a Redis shared by several gateways
/// (chosen by `[hot] backend`). A closed enum keeps dispatch static.
pub enum LocalHot {
    Memory(MemoryHot),
    Redis(Box<RedisHot>),
}

macro_rules! on_hot {
    ($self:expr, $h:ident => $e:expr) => {
        match $self {
            LocalHot::Memory($h) => $e,
            LocalHot::Redis($h) => $e,
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
    std::fs::create_dir_all(data).map_err(|e| format!("cannot create data directory {}: {e}", data.display()))?;
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
        },
        queue: queue.clone(),
        upstream: HttpUpstream::new()?,
        clock: SystemClock,
        ids: RandomIds,
        tasks: TokioTasks,
    };
    Ok((ports, queue))
}

pub use oblivious_admin::bootstrap::ADMIN;

/// Makes sure the `admin` user and the `default` group exist.
pub async fn ensure_basics(ports: &Ports<Local>) -> Result<oblivious_core::model::User, String> {
    oblivious_admin::bootstrap::ensure_basics(ports).await
}
