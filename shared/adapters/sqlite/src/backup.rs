//! Online backups of the database file, and checking a backup before it is restored.
//!
//! The copy uses SQLite's online backup API rather than `VACUUM INTO`: it
//! copies pages as they are (no rebuild, so it costs disk reads and writes,
//! not CPU) and goes in steps ([`STEP_PAGES`] pages, then a pause), so a
//! large database does not take the disk from a serving gateway in one
//! burst. A backup step on its own restarts from the first page whenever
//! another connection writes between steps — with a gateway writing every
//! request, it would never finish — so the source connection first opens a
//! read transaction and keeps it for the whole copy: every step reads that
//! one snapshot, which makes the copy consistent (one instant of the
//! database, whole transactions only) and lets it finish. In WAL mode a
//! reader blocks no writer; the only cost to the gateway is that the WAL
//! cannot be checkpointed past the snapshot until the copy ends, so it grows
//! meanwhile. The copy is then switched to a rollback journal, so the backup
//! is one self-contained file.

use std::path::Path;
use std::time::Duration;

use oblivious_ports::Sealer;
use rusqlite::backup::{Backup, Progress, StepResult};
use rusqlite::{Connection, ErrorCode, OpenFlags};

/// Pages copied per step (4 MiB with SQLite's default 4 KiB pages).
pub const STEP_PAGES: i32 = 1024;
/// The pause between steps.
pub const STEP_PAUSE: Duration = Duration::from_millis(5);

fn open_existing(path: &Path) -> Result<Connection, String> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags).map_err(|e| describe(path, e))?;
    conn.busy_timeout(Duration::from_secs(10)).map_err(|e| describe(path, e))?;
    Ok(conn)
}

/// A SQLite error about the file at `path`, in words.
fn describe(path: &Path, e: rusqlite::Error) -> String {
    let p = path.display();
    match e.sqlite_error_code() {
        Some(ErrorCode::NotADatabase) => format!("{p} is not a SQLite database"),
        Some(ErrorCode::DatabaseCorrupt) => format!("{p} is damaged: {e}"),
        Some(ErrorCode::CannotOpen) => format!("cannot open {p}: {e}"),
        _ => format!("{p}: {e}"),
    }
}

/// Copies the database at `src` (which a gateway may be using) into `dest`,
/// a new file, as one consistent snapshot; `progress` hears after each step.
/// Returns the copy's size in bytes.
pub fn backup_database(src: &Path, dest: &Path, mut progress: impl FnMut(Progress)) -> Result<u64, String> {
    if !src.is_file() {
        return Err(format!("there is no database at {}", src.display()));
    }
    let source = open_existing(src)?;
    // Pin one snapshot for the whole copy (see the module comment).
    source
        .execute_batch("BEGIN")
        .and_then(|()| source.query_row("SELECT COUNT(*) FROM sqlite_master", [], |r| r.get::<_, i64>(0)))
        .map_err(|e| describe(src, e))?;
    crate::seal::private_options().open(dest).map_err(|e| format!("cannot create {}: {e}", dest.display()))?;
    let mut target = Connection::open(dest).map_err(|e| describe(dest, e))?;
    {
        let backup = Backup::new(&source, &mut target).map_err(|e| describe(src, e))?;
        loop {
            let step = backup.step(STEP_PAGES).map_err(|e| describe(src, e))?;
            progress(backup.progress());
            match step {
                StepResult::Done => break,
                StepResult::More | StepResult::Busy | StepResult::Locked => std::thread::sleep(STEP_PAUSE),
                _ => std::thread::sleep(STEP_PAUSE),
            }
        }
    }
    let _ = source.execute_batch("COMMIT");
    drop(source);
    let mode: String =
        target.query_row("PRAGMA journal_mode = DELETE", [], |r| r.get(0)).map_err(|e| describe(dest, e))?;
    if !mode.eq_ignore_ascii_case("delete") {
        return Err(format!("{}: could not leave WAL mode (still {mode})", dest.display()));
    }
    target.close().map_err(|(_, e)| describe(dest, e))?;
    let file = std::fs::File::open(dest).map_err(|e| format!("{}: {e}", dest.display()))?;
    file.sync_all().map_err(|e| format!("{}: {e}", dest.display()))?;
    crate::seal::sync_dir(dest).map_err(|e| format!("{}: {e}", dest.display()))?;
    Ok(file.metadata().map_err(|e| format!("{}: {e}", dest.display()))?.len())
}

/// What [`verify_database`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The latest migration applied.
    pub schema_version: i64,
    /// Channels whose keys opened.
    pub channels: usize,
    /// Reservations still open (requests in flight when the copy was taken)
    /// and the units they hold.
    pub open_reservations: (i64, i64),
}

/// Checks that `path` is a sound Oblivious database this build can run:
/// `PRAGMA integrity_check` passes, every migration it records is one this
/// build knows, and, with a `sealer`, every sealed value (channels' keys,
/// TOTP secrets, signing keys) opens with it.
pub fn verify_database(path: &Path, sealer: Option<&Sealer>) -> Result<Verified, String> {
    if !path.is_file() {
        return Err(format!("there is no database at {}", path.display()));
    }
    let conn = open_existing(path)?;
    let p = path.display();
    let problems: Vec<String> = conn
        .prepare("PRAGMA integrity_check")
        .and_then(|mut st| st.query_map([], |r| r.get::<_, String>(0))?.collect())
        .map_err(|e| describe(path, e))?;
    if problems.first().map(String::as_str) != Some("ok") {
        let first = problems.first().cloned().unwrap_or_default();
        return Err(format!("{p} fails its integrity check ({} problems; first: {first})", problems.len()));
    }
    let has_migrations: bool = conn
        .query_row(
            "SELECT EXISTS(SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations')",
            [],
            |r| r.get(0),
        )
        .map_err(|e| describe(path, e))?;
    if !has_migrations {
        return Err(format!("{p} is not an Oblivious database (it has no schema_migrations table)"));
    }
    let applied: Vec<i64> = conn
        .prepare("SELECT version FROM schema_migrations ORDER BY version")
        .and_then(|mut st| st.query_map([], |r| r.get(0))?.collect())
        .map_err(|e| describe(path, e))?;
    let known: Vec<i64> = crate::db::MIGRATIONS.iter().map(|(v, _)| *v).collect();
    let unknown: Vec<String> = applied.iter().filter(|v| !known.contains(v)).map(|v| v.to_string()).collect();
    if !unknown.is_empty() {
        return Err(format!(
            "{p} was written by a newer Oblivious: schema version {} is unknown to this binary (it knows 1 to {})",
            unknown.join(", "),
            known.last().copied().unwrap_or(0)
        ));
    }
    let Some(&schema_version) = applied.last() else {
        return Err(format!("{p} is not an Oblivious database (no migration was ever applied)"));
    };
    let mut channels = 0;
    if let Some(sealer) = sealer {
        let rows: Vec<(String, String)> = conn
            .prepare("SELECT name, spec FROM channels ORDER BY id")
            .and_then(|mut st| st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?.collect())
            .map_err(|e| describe(path, e))?;
        for (name, spec) in rows {
            sealer
                .open_spec(&spec)
                .map_err(|_| format!("the keys of channel `{name}` in {p} do not open with its secret"))?;
            channels += 1;
        }
        for col in crate::rotate::SEALED_COLUMNS {
            // A backup from before the table existed has nothing of it to check.
            let present: bool = conn
                .query_row(
                    "SELECT EXISTS(SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?1)",
                    [col.table],
                    |r| r.get(0),
                )
                .map_err(|e| describe(path, e))?;
            if !present {
                continue;
            }
            for (key, stored) in crate::rotate::sealed_values(&conn, col).map_err(|e| describe(path, e))? {
                sealer.open(&stored).map_err(|_| {
                    format!("{} {} in {p} does not open with its secret", col.what, crate::rotate::show(&key))
                })?;
            }
        }
    }
    let open_reservations = conn
        .query_row("SELECT COUNT(*), COALESCE(SUM(amount), 0) FROM reservations WHERE state = 'reserved'", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap_or((0, 0));
    Ok(Verified { schema_version, channels, open_reservations })
}

/// Folds the WAL of the database at `path` (which nothing else may have
/// open) into the file and removes it, so the file alone holds every commit.
pub fn checkpoint(path: &Path) -> Result<(), String> {
    let conn = open_existing(path)?;
    conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get::<_, i64>(0)).map_err(|e| describe(path, e))?;
    conn.close().map_err(|(_, e)| describe(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Db, SqliteStore};
    use oblivious_ports::conformance::spec;
    use oblivious_ports::{Accounts, SigningKey, Store};

    fn temp(tag: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("obl-backup-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_backup_taken_under_writes_is_one_consistent_snapshot() {
        let dir = temp("live");
        let db = dir.join("live.db");
        let store = SqliteStore::new(Db::open(&db).unwrap());
        let mut s = spec("c");
        s.keys = vec!["sk-c".into()];
        store.create_channel(s, 1).await.unwrap();
        // Another connection writes all the while, in transactions of two rows
        // that must land together.
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let writer = {
            let (db, stop) = (db.clone(), stop.clone());
            std::thread::spawn(move || {
                let c = Connection::open(&db).unwrap();
                c.busy_timeout(Duration::from_secs(10)).unwrap();
                c.execute_batch("CREATE TABLE IF NOT EXISTS pairs (n INTEGER, pad BLOB)").unwrap();
                let mut n = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    c.execute_batch(&format!(
                        "BEGIN IMMEDIATE; INSERT INTO pairs VALUES ({n}, randomblob(3000)); INSERT INTO pairs VALUES ({n}, randomblob(3000)); COMMIT;"
                    ))
                    .unwrap();
                    n += 1;
                }
                n
            })
        };
        std::thread::sleep(Duration::from_millis(300));
        let mut steps = 0;
        let copy = dir.join("copy.db");
        let size = backup_database(&db, &copy, |_| steps += 1).unwrap();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let written = writer.join().unwrap();
        assert!(size > 0 && steps >= 1, "{size} {steps}");
        let sealer = store.sealer();
        let v = verify_database(&copy, Some(&sealer)).unwrap();
        assert_eq!((v.schema_version, v.channels), (crate::db::MIGRATIONS.len() as i64, 1));
        let c = Connection::open(&copy).unwrap();
        let (rows, odd): (i64, i64) = c
            .query_row(
                "SELECT COUNT(*), (SELECT COUNT(*) FROM (SELECT n FROM pairs GROUP BY n HAVING COUNT(*) != 2)) FROM pairs",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert!(rows > 0 && rows < 2 * written, "a snapshot from the middle: {rows} of {}", 2 * written);
        assert_eq!(odd, 0, "whole transactions only");
        let mode: String = c.query_row("PRAGMA journal_mode", [], |r| r.get(0)).unwrap();
        assert_eq!(mode, "delete", "one self-contained file");
        assert!(backup_database(&db, &copy, |_| ()).unwrap_err().contains("cannot create"), "never overwrites");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn verification_names_what_is_wrong() {
        let dir = temp("verify");
        let junk = dir.join("junk.db");
        std::fs::write(&junk, vec![7u8; 8192]).unwrap();
        assert!(verify_database(&junk, None).unwrap_err().contains("is not a SQLite database"));
        assert!(verify_database(&dir.join("none.db"), None).unwrap_err().contains("there is no database"));

        let empty = dir.join("empty.db");
        Connection::open(&empty).unwrap().execute_batch("CREATE TABLE t (x)").unwrap();
        assert!(verify_database(&empty, None).unwrap_err().contains("not an Oblivious database"));

        let newer = dir.join("newer.db");
        drop(Db::open(&newer).unwrap());
        Connection::open(&newer)
            .unwrap()
            .execute_batch("INSERT INTO schema_migrations (version, applied_at) VALUES (999, 0)")
            .unwrap();
        let e = verify_database(&newer, None).unwrap_err();
        assert!(e.contains("newer Oblivious") && e.contains("999"), "{e}");

        let sealed = dir.join("sealed.db");
        let store = SqliteStore::new(Db::open(&sealed).unwrap());
        let rt = tokio::runtime::Runtime::new().unwrap();
        let mut s = spec("x");
        s.keys = vec!["sk-x".into()];
        rt.block_on(store.create_channel(s, 1)).unwrap();
        drop((store, rt));
        let e = verify_database(&sealed, Some(&Sealer::new(&[9; 32]))).unwrap_err();
        assert!(e.contains("channel `x`") && e.contains("do not open"), "{e}");

        let signing = dir.join("signing.db");
        let store = SqliteStore::new(Db::open(&signing).unwrap());
        let rt = tokio::runtime::Runtime::new().unwrap();
        let key = SigningKey { kid: "k1".into(), secret: store.sealer().seal("a2V5"), created_at: 1, expires_at: 2 };
        rt.block_on(store.add_signing_key(key)).unwrap();
        let sealer = store.sealer();
        drop((store, rt));
        assert!(verify_database(&signing, Some(&sealer)).is_ok());
        let e = verify_database(&signing, Some(&Sealer::new(&[9; 32]))).unwrap_err();
        assert!(e.contains("signing key `k1`") && e.contains("does not open"), "{e}");

        // A damaged page: garbage over the middle of the file.
        let damaged = dir.join("damaged.db");
        let c = Connection::open(&damaged).unwrap();
        c.execute_batch("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, applied_at INTEGER); CREATE TABLE t (x TEXT); CREATE INDEX tx ON t (x);").unwrap();
        for i in 0..2000 {
            c.execute("INSERT INTO t VALUES (?1)", [format!("row {i} {}", "x".repeat(50))]).unwrap();
        }
        drop(c);
        let mut bytes = std::fs::read(&damaged).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid..mid + 4096].fill(0xA5);
        std::fs::write(&damaged, bytes).unwrap();
        let e = verify_database(&damaged, None).unwrap_err();
        assert!(e.contains("integrity check") || e.contains("damaged"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
