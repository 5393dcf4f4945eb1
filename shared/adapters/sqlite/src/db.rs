//! Connections, migrations, and running blocking SQLite work off the async runtime.

use std::path::Path;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use oblivious_ports::StoreError;

use oblivious_ports::Sealer;
use rusqlite::{Connection, OpenFlags, Params, Row};

pub(crate) const MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("../../../../migrations/0001_init.sql")),
    (2, include_str!("../../../../migrations/0002_billing.sql")),
    (3, include_str!("../../../../migrations/0003_lean_usage_index.sql")),
    (4, include_str!("../../../../migrations/0004_accounts.sql")),
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
    /// The store revision last read ([`Db::saw_revision`]).
    seen_revision: AtomicI64,
    /// Held while this handle is open: tells `oblivious restore` the database is in use.
    _lock: crate::lock::DbLock,
    writer: mpsc::Sender<Work>,
    write: Arc<Writer>,
    readers: Vec<Mutex<Connection>>,
    next_reader: AtomicUsize,
}

/// The one writing connection and what tells a lone write from a busy stream.
struct Writer {
    conn: Mutex<Connection>,
    /// Jobs sent to the writer thread and not yet taken.
    queued: AtomicUsize,
    /// When the last write was asked for, µs since `epoch`.
    last_write_us: AtomicU64,
    epoch: Instant,
}

impl Writer {
    fn now_us(&self) -> u64 {
        self.epoch.elapsed().as_micros() as u64
    }

    /// A write that comes alone (none waiting, none asked for in the last
    /// moment, the connection free) commits right here: the thread hop to the
    /// writer and back costs more than the write. Otherwise it queues for the
    /// writer thread, which commits whatever waits together.
    fn try_inline(&self, work: Work) -> Option<Work> {
        let now = self.now_us();
        let last = self.last_write_us.swap(now, Ordering::Relaxed);
        if now.saturating_sub(last) < ALONE.as_micros() as u64 || self.queued.load(Ordering::SeqCst) > 0 {
            return Some(work);
        }
        let conn = match self.conn.try_lock() {
            Ok(c) => c,
            Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => return Some(work),
        };
        commit(&conn, vec![work]);
        None
    }
}

/// A write job: runs inside its own savepoint of the writer's current
/// transaction, says whether it succeeded, and leaves a reply to send once the
/// transaction's fate is known.
type Work = Box<dyn FnOnce(&Connection) -> (bool, Reply) + Send>;
type Reply = Box<dyn FnOnce(Result<(), String>) + Send>;

/// Writes waiting together are committed together (group commit), up to this many.
const MAX_BATCH: usize = 256;
/// How long a busy writer waits to gather a batch.
const LINGER: Duration = Duration::from_micros(300);
/// A batch with company means load for this long after it.
const BUSY_WINDOW: Duration = Duration::from_millis(2);
/// A write this long after the one before is alone.
const ALONE: Duration = Duration::from_millis(1);

fn configure(conn: &Connection) -> rusqlite::Result<()> {
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    conn.busy_timeout(Duration::from_secs(10))?;
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
        let lock = crate::lock::shared(path, Duration::from_secs(30)).map_err(StoreError::Backend)?;
        let mut writer = Connection::open(path).map_err(backend)?;
        configure(&writer).map_err(backend)?;
        migrate(&mut writer).map_err(backend)?;
        let mut readers = Vec::with_capacity(READERS);
        for _ in 0..READERS {
            let r =
                Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)
                    .map_err(backend)?;
            r.busy_timeout(Duration::from_secs(10)).map_err(backend)?;
            r.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
            // Readers serve lookups on cache misses and listings: a small page cache each.
            r.pragma_update(None, "cache_size", -512).map_err(backend)?;
            readers.push(Mutex::new(r));
        }
        let (sender, receiver) = mpsc::channel::<Work>();
        let write = Arc::new(Writer {
            conn: Mutex::new(writer),
            queued: AtomicUsize::new(0),
            last_write_us: AtomicU64::new(0),
            epoch: Instant::now(),
        });
        let thread_side = write.clone();
        std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || write_loop(&thread_side, receiver))
            .map_err(|e| StoreError::Backend(format!("cannot start the writer thread: {e}")))?;
        let sealer = crate::seal::sealer_for_dir(path.parent().unwrap_or(Path::new(".")))?;
        let inner = Inner {
            sealer,
            seen_revision: AtomicI64::new(i64::MIN),
            _lock: lock,
            writer: sender,
            write,
            readers,
            next_reader: AtomicUsize::new(0),
        };
        Ok(Db { inner: Arc::new(inner) })
    }

    /// Encrypts and decrypts secrets stored in this database.
    pub(crate) fn sealer(&self) -> Sealer {
        self.inner.sealer.clone()
    }

    /// The sealer with its keyring re-read first (a small file), for writes
    /// that seal: they seal under the newest key even in the moment between
    /// a rotation writing the keyring and this process's next refresh.
    pub(crate) fn sealer_for_sealing(&self) -> Sealer {
        let sealer = self.sealer();
        if let Err(e) = sealer.reload() {
            tracing::warn!("cannot re-read the keyring: {e}");
        }
        sealer
    }

    /// Notes a revision read from the store: when it moved (a key rotation
    /// bumps it), the keyring is re-read, so a server polling the revision
    /// follows a rotation made by another process.
    pub(crate) fn saw_revision(&self, rev: i64) {
        if self.inner.seen_revision.swap(rev, Ordering::Relaxed) != rev {
            if let Err(e) = self.inner.sealer.reload() {
                tracing::warn!("cannot re-read the keyring: {e}");
            }
        }
    }

    /// Runs `f` atomically on the writer connection. Concurrent writes share
    /// one transaction (each in its own savepoint, so one failing undoes only
    /// itself); the caller hears back only after that transaction committed.
    /// A lone write commits on the caller's thread (see [`Writer::try_inline`]).
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
        if let Some(work) = self.inner.write.try_inline(work) {
            self.inner.write.queued.fetch_add(1, Ordering::SeqCst);
            self.inner.writer.send(work).map_err(|_| StoreError::Backend("the writer thread has stopped".into()))?;
        }
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

/// The writer thread: takes whatever writes are waiting and commits them together.
fn write_loop(writer: &Writer, jobs: mpsc::Receiver<Work>) {
    // When the last batch had company and ended moments ago.
    let mut busy_until = Instant::now();
    while let Ok(first) = jobs.recv() {
        let mut batch = vec![first];
        // Under load, wait a moment for more writes: one commit for many.
        // Otherwise commit at once (a lone write should not wait).
        let linger = if Instant::now() < busy_until { LINGER } else { Duration::ZERO };
        let deadline = Instant::now() + linger;
        while batch.len() < MAX_BATCH {
            let next = match deadline.checked_duration_since(Instant::now()) {
                Some(left) if !left.is_zero() => jobs.recv_timeout(left).ok(),
                _ => jobs.try_recv().ok(),
            };
            match next {
                Some(w) => batch.push(w),
                None => break,
            }
        }
        writer.queued.fetch_sub(batch.len(), Ordering::SeqCst);
        busy_until = if batch.len() > 1 { Instant::now() + BUSY_WINDOW } else { Instant::now() };
        commit(&writer.conn.lock().unwrap_or_else(|p| p.into_inner()), batch);
    }
}

/// Runs the jobs in one IMMEDIATE transaction, each in its own savepoint,
/// commits, then answers every caller.
fn commit(conn: &Connection, batch: Vec<Work>) {
    let run = |sql: &str| conn.exec(sql, []).map(|_| ());
    let in_tx = run("BEGIN IMMEDIATE").is_ok();
    let mut replies = Vec::with_capacity(batch.len());
    for work in batch {
        if run("SAVEPOINT job").is_err() {
            continue;
        }
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| work(conn))) {
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
