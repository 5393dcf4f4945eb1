//! The store conformance suite over SQLite: each case on a fresh database file.

use std::sync::atomic::{AtomicU32, Ordering};

use oblivious_sqlite::{Db, SqliteStore};

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A fresh store in its own directory (left in the temp dir; each run's names differ).
async fn fresh() -> SqliteStore {
    let dir =
        std::env::temp_dir().join(format!("obl-conf-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed)));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    SqliteStore::new(Db::open(&dir.join("store.db")).expect("open"))
}

oblivious_ports::store_conformance!(fresh().await);
