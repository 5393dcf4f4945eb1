//! Connections, migrations, and running blocking SQLite work off the async runtime.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};

use oblivious_ports::StoreError;

use oblivious_ports::Sealer;
use rusqlite::{Connection, OpenFlags, Params, Row};

const MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("../../../../migrations/0001_init.sql")),
    (2, include_str!("../../../../migrations/0002_billing.sql")),
    (3, include_str!("../../../../migrations/0003_lean_usage_index.sql")),
];
const READERS: usize = 4;

/// Errors inside a database closure: SQL failures or a domain answer.
#[derive(Debug)]
pub(crate) enum DbError {
    Sql(rusqlite::Error),
    Store(StoreError),
}

impl From<rusqlite::Error> for DbError {
    fn from(e: rusqlite::Error) -> Self {
        DbError::Sql(e)
    }
}

impl From<StoreError> for DbError {
    fn from(e: StoreError) -> Self {
        DbError::Store(e)
    }
}

impl From<serde_json::Error> for DbError {
    fn from(e: serde_json::Error) -> Self {
        DbError::Store(StoreError::Backend(format!("bad JSON column: {e}")))
    }
}

impl From<DbError> for StoreError {
    fn from(e: DbError) -> Self {
        match e {
            DbError::Store(s) => s,
            DbError::Sql(rusqlite::Error::SqliteFailure(f, msg))
                if f.code == rusqlite::ErrorCode::ConstraintViolation =>
            {
                StoreError::Conflict(msg.unwrap_or_else(|| "constraint violated".into()))
            }
            DbError::Sql(e) => StoreError::Backend(e.to_string()),
        }
    }
}

pub(crate) type DbResult<T> = Result<T, DbError>;

/// Statements through the connection's prepared-statement cache. The money
/// paths run the same few statements for every request; parsing them each
/// time was the largest share of the writer thread's work.
pub(crate) trait Cached {
    fn exec<P: Params>(&self, sql: &str, params: P) -> rusqlite::Result<usize>;
    fn row<T, P: Params, F: FnOnce(&Row<'_>) -> rusqlite::Result<T>>(
        &self,
        sql: &str,
        params: P,
        f: F,
    ) -> rusqlite::Result<T>;
}

impl Cached for Connection {
    fn exec<P: Params>(&self, sql: &str, params: P) -> rusqlite::Result<usize> {
        self.prepare_cached(sql)?.execute(params)
    }

    fn row<T, P: Params, F: FnOnce(&Row<'_>) -> rusqlite::Result<T>>(
        &self,
        sql: &str,
        params: P,
        f: F,
    ) -> rusqlite::Result<T> {
        self.prepare_cached(sql)?.query_row(params, f)
    }
}

/// Statements kept prepared per connection (the LRU drops the rare ones).
const STATEMENT_CACHE: usize = 256;

/// A shared handle: one writer thread (group commit) and a few reader connections.
#[derive(Clone)]
pub struct Db {
    inner: Arc<Inner>,
}

struct Inner {
    sealer: Sealer,
    writer: mpsc::Sender<Work>,
    readers: Vec<Mutex<Connection>>,
    next_reader: AtomicUsize,
}

/// A write job: runs inside its own savepoint of the writer's current
/// transaction, says whether it succeeded, and leaves a reply to send once the
/// transaction's fate is known.
type Work = Box<dyn FnOnce(&Connection) -> (bool, Reply) + Send>;
type Reply = Box<dyn FnOnce(Result<(), String>) + Send>;

/// Writes waiting together are committed together (group commit), up to this many.
const MAX_BATCH: usize = 256;
/// How long a busy writer waits to gather a batch.
const LINGER: std::time::Duration = std::time::Duration::from_micros(300);
/// A batch with company means load for this long after it.
const BUSY_WINDOW: std::time::Duration = std::time::Duration::from_millis(2);

fn configure(conn: &Connection) -> rusqlite::Result<()> {
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    // Savepoint journals (one per write job) in memory, not in temporary files.
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    Ok(())
}

impl Db {
    /// Opens (creating if needed) the database and applies pending migrations.
    pub fn open(path: &Path) -> Result<Db, StoreError> {
        let backend = |e: rusqlite::Error| StoreError::Backend(format!("{}: {e}", path.display()));
        let mut writer = Connection::open(path).map_err(backend)?;
        configure(&writer).map_err(backend)?;
        migrate(&mut writer).map_err(backend)?;
        let mut readers = Vec::with_capacity(READERS);
        for _ in 0..READERS {
            let r =
                Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)
                    .map_err(backend)?;
            r.busy_timeout(std::time::Duration::from_secs(10)).map_err(backend)?;
            r.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
            // Readers serve lookups on cache misses and listings: a small page cache each.
            r.pragma_update(None, "cache_size", -512).map_err(backend)?;
            readers.push(Mutex::new(r));
        }
        let (sender, receiver) = mpsc::channel::<Work>();
        std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || write_loop(writer, receiver))
            .map_err(|e| StoreError::Backend(format!("cannot start the writer thread: {e}")))?;
        let sealer = crate::seal::sealer_for_dir(path.parent().unwrap_or(Path::new(".")))?;
        Ok(Db { inner: Arc::new(Inner { sealer, writer: sender, readers, next_reader: AtomicUsize::new(0) }) })
    }

    /// Encrypts and decrypts secrets stored in this database.
    pub(crate) fn sealer(&self) -> Sealer {
        self.inner.sealer.clone()
    }

    /// Runs `f` atomically on the writer connection. Concurrent writes share
    /// one transaction (each in its own savepoint, so one failing undoes only
    /// itself); the caller hears back only after that transaction committed.
    pub(crate) async fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> DbResult<T> + Send + 'static,
    ) -> Result<T, StoreError> {
        let (reply, answer) = tokio::sync::oneshot::channel::<Result<T, StoreError>>();
        let work: Work = Box::new(move |conn| {
            let result = f(conn);
            let ok = result.is_ok();
            let send: Reply = Box::new(move |committed| {
                let outcome = match (result, committed) {
                    (Ok(v), Ok(())) => Ok(v),
                    (Ok(_), Err(e)) => Err(StoreError::Backend(format!("commit failed: {e}"))),
                    (Err(e), _) => Err(StoreError::from(e)),
                };
                let _ = reply.send(outcome);
            });
            (ok, send)
        });
        self.inner.writer.send(work).map_err(|_| StoreError::Backend("the writer thread has stopped".into()))?;
        answer.await.map_err(|_| StoreError::Backend("the write was abandoned (it panicked)".into()))?
    }

    /// Runs `f` on a reader connection on a blocking thread.
    pub(crate) async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> DbResult<T> + Send + 'static,
    ) -> Result<T, StoreError> {
        let inner = self.inner.clone();
        run_blocking(move || {
            let i = inner.next_reader.fetch_add(1, Ordering::Relaxed) % inner.readers.len();
            let conn = inner.readers[i].lock().unwrap_or_else(|p| p.into_inner());
            f(&conn)
        })
        .await
    }
}

/// The writer thread: takes whatever writes are waiting, runs them in one
/// IMMEDIATE transaction, commits, then answers every caller.
fn write_loop(conn: Connection, jobs: mpsc::Receiver<Work>) {
    // When the last batch had company and ended moments ago.
    let mut busy_until = std::time::Instant::now();
    while let Ok(first) = jobs.recv() {
        let mut batch = vec![first];
        // Under load, wait a moment for more writes: one commit for many.
        // Otherwise commit at once (a lone write should not wait).
        let busy = std::time::Instant::now() < busy_until;
        let linger = if busy { LINGER } else { std::time::Duration::ZERO };
        let deadline = std::time::Instant::now() + linger;
        while batch.len() < MAX_BATCH {
            let next = match deadline.checked_duration_since(std::time::Instant::now()) {
                Some(left) if !left.is_zero() => jobs.recv_timeout(left).ok(),
                _ => jobs.try_recv().ok(),
            };
            match next {
                Some(w) => batch.push(w),
                None => break,
            }
        }
        let after = std::time::Instant::now() + BUSY_WINDOW;
        busy_until = if batch.len() > 1 { after } else { std::time::Instant::now() };
        let run = |sql: &str| conn.exec(sql, []).map(|_| ());
        let in_tx = run("BEGIN IMMEDIATE").is_ok();
        let mut replies = Vec::with_capacity(batch.len());
        for work in batch {
            if run("SAVEPOINT job").is_err() {
                continue;
            }
            match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| work(&conn))) {
                Ok((true, reply)) => {
                    let _ = run("RELEASE job");
                    replies.push(reply);
                }
                Ok((false, reply)) => {
                    let _ = run("ROLLBACK TO job").and_then(|_| run("RELEASE job"));
                    replies.push(reply);
                }
                // The job's caller sees its reply dropped; its changes are undone.
                Err(_) => {
                    let _ = run("ROLLBACK TO job").and_then(|_| run("RELEASE job"));
                }
            }
        }
        let committed = if in_tx {
            run("COMMIT").map_err(|e| {
                let _ = run("ROLLBACK");
                e.to_string()
            })
        } else {
            // BEGIN failed (the lock stayed busy): each savepoint committed on its own.
            Ok(())
        };
        for reply in replies {
            reply(committed.clone());
        }
    }
}

async fn run_blocking<T: Send + 'static>(f: impl FnOnce() -> DbResult<T> + Send + 'static) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StoreError::Backend(format!("database task failed: {e}")))?
        .map_err(StoreError::from)
}

fn migrate(conn: &mut Connection) -> rusqlite::Result<()> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)",
    )?;
    for (version, sql) in MIGRATIONS {
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let done: bool =
            tx.query_row("SELECT EXISTS(SELECT 1 FROM schema_migrations WHERE version = ?1)", [version], |r| r.get(0))?;
        if !done {
            tracing::info!(version, "applying migration");
            tx.execute_batch(sql)?;
            tx.execute(
                "INSERT INTO schema_migrations (version, applied_at) VALUES (?1, strftime('%s','now') * 1000)",
                [version],
            )?;
        }
        tx.commit()?;
    }
    Ok(())
}
