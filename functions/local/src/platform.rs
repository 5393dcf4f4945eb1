//! The local platform: SQLite store and outbox queue, in-process hot state, reqwest upstream.

use std::path::{Path, PathBuf};

use oblivious_native::{HttpUpstream, MemoryHot, RandomIds, SystemClock, TokioTasks};
use oblivious_ports::{Platform, Ports, Store};
use oblivious_sqlite::{Db, SqliteQueue, SqliteStore};

pub struct Local;

impl Platform for Local {
    type Store = SqliteStore;
    type Hot = MemoryHot;
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

/// Opens (creating on first use) the data directory and database.
pub fn open(data: &Path) -> Result<(Ports<Local>, SqliteQueue), String> {
    std::fs::create_dir_all(data).map_err(|e| format!("cannot create data directory {}: {e}", data.display()))?;
    let db = Db::open(&db_path(data)).map_err(|e| e.to_string())?;
    let queue = SqliteQueue::new(db.clone());
    let ports = Ports {
        store: SqliteStore::new(db),
        hot: MemoryHot::new(),
        queue: queue.clone(),
        upstream: HttpUpstream::new()?,
        clock: SystemClock,
        ids: RandomIds,
        tasks: TokioTasks,
    };
    Ok((ports, queue))
}

pub const ADMIN: &str = "admin";

/// Makes sure the `admin` user and the `default` group exist.
pub async fn ensure_basics(ports: &Ports<Local>) -> Result<oblivious_core::model::User, String> {
    use oblivious_core::model::{Group, Role};
    let store = &ports.store;
    let s = |e: oblivious_ports::StoreError| e.to_string();
    if !store.groups().await.map_err(s)?.iter().any(|g| g.name == oblivious_core::config::DEFAULT_GROUP) {
        store
            .put_group(Group {
                name: oblivious_core::config::DEFAULT_GROUP.into(),
                ratio_bp: 10_000,
                description: String::new(),
            })
            .await
            .map_err(s)?;
    }
    if let Some(u) = store.user_by_name(ADMIN).await.map_err(s)? {
        return Ok(u);
    }
    let new = oblivious_ports::NewUser {
        name: ADMIN.into(),
        role: Role::Admin,
        group: oblivious_core::config::DEFAULT_GROUP.into(),
        quota: 0,
        unlimited: true,
    };
    match store.create_user(new, oblivious_ports::Clock::now_ms(&ports.clock)).await {
        Ok(u) => Ok(u),
        // Another process (CLI or server) created it first.
        Err(oblivious_ports::StoreError::Conflict(_)) => {
            store.user_by_name(ADMIN).await.map_err(s)?.ok_or_else(|| "admin user vanished".into())
        }
        Err(e) => Err(e.to_string()),
    }
}
