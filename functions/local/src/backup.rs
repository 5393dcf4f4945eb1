//! `oblivious backup PATH` and `oblivious restore PATH`.
//!
//! A backup is a directory (created mode 0700) holding two files, mode 0600:
//! `oblivious.db`, one consistent snapshot of the database taken while the
//! gateway keeps serving (SQLite's online backup API, in steps, over one
//! pinned read transaction: see `oblivious_sqlite::backup`), and `secret.key`,
//! the keyring that opens the channel keys sealed in it. Without the second
//! the first is a database whose upstream keys cannot be read, so they are
//! written and restored together. When the secret comes from
//! `OBLIVIOUS_SECRET_KEY` it is not written (it was kept out of the data
//! directory on purpose) and the same variable is needed to restore.
//!
//! Restore checks the backup first (integrity, migrations this build knows,
//! every channel's keys open with the backup's secret), refuses while
//! anything has the data directory's database open (every open database holds
//! a shared lock that restore takes exclusively: `oblivious_sqlite::lock`),
//! and keeps what it replaces as `oblivious.db.pre-restore` and
//! `secret.key.pre-restore` (`.1`, `.2`… when those names are taken).

use std::path::{Path, PathBuf};

use clap::Args;
use oblivious_ports::seal::SecretKey;
use oblivious_ports::{Sealer, SECRET_ENV};
use oblivious_sqlite::backup::{backup_database, checkpoint, verify_database, Verified};
use oblivious_sqlite::seal::{keyring_path, read_keyring, write_keyring, SECRET_FILE};

use crate::platform::{self, DB_FILE};

#[derive(Args)]
pub struct BackupArgs {
    /// Directory to write the backup into (created, mode 0700): it receives
    /// `oblivious.db` and `secret.key`, both mode 0600. Keep them together.
    pub path: PathBuf,
    /// Replace the backup already in PATH (or write into a directory that is not empty).
    #[arg(long)]
    pub force: bool,
}

#[derive(Args)]
#[command(after_help = "\
The backup is checked first: PRAGMA integrity_check, schema migrations this binary knows, and every \
channel's keys opening with the backup's secret.key (or OBLIVIOUS_SECRET_KEY when set). \
Restore refuses while anything has the database open — every running `oblivious serve` and every CLI \
command holds a lock on DATA/oblivious.db.lock — so stop the gateway first; there is no override. \
The database and secret it replaces are kept as oblivious.db.pre-restore and secret.key.pre-restore. \
Requests that were in flight when the backup was taken still hold their reservations: the gateway \
refunds them once they are older than [billing] reservation_timeout_seconds.")]
pub struct RestoreArgs {
    /// A backup directory (holding `oblivious.db` and `secret.key`).
    pub path: PathBuf,
}

fn env_secret() -> bool {
    std::env::var_os(SECRET_ENV).is_some()
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T, String> + Send + 'static) -> Result<T, String> {
    tokio::task::spawn_blocking(f).await.map_err(|e| format!("the task failed: {e}"))?
}

pub async fn backup(data: &Path, args: BackupArgs) -> Result<(), String> {
    let data = data.to_path_buf();
    blocking(move || run_backup(&data, &args)).await
}

pub async fn restore(data: &Path, args: RestoreArgs) -> Result<(), String> {
    let data = data.to_path_buf();
    blocking(move || run_restore(&data, &args.path)).await
}

fn keyring(path: &Path) -> Result<Vec<SecretKey>, String> {
    read_keyring(path).map_err(|e| e.to_string())
}

fn create_private_dir(dir: &Path) -> Result<(), String> {
    let mut b = std::fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
    b.create(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))
}

fn run_backup(data: &Path, args: &BackupArgs) -> Result<(), String> {
    let db = platform::db_path(data);
    if !db.is_file() {
        return Err(format!("there is no database at {} (check --data)", db.display()));
    }
    let dir = &args.path;
    let (db_out, key_out) = (dir.join(DB_FILE), dir.join(SECRET_FILE));
    if dir.exists() {
        if !dir.is_dir() {
            return Err(format!("{} exists and is not a directory (a backup is a directory)", dir.display()));
        }
        let ours = db_out.exists() || key_out.exists();
        let empty = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?.next().is_none();
        if ours && !args.force {
            return Err(format!("{} already holds a backup; pass --force to replace it", dir.display()));
        }
        if !empty && !args.force {
            return Err(format!("{} is not empty; choose a new directory or pass --force", dir.display()));
        }
    } else {
        create_private_dir(dir)?;
    }
    let secret = keyring_path(data);
    // The keyring before and after the copy: a rotation finishing meanwhile
    // may have sealed the snapshot's values under either.
    let before = if env_secret() { Vec::new() } else { keyring(&secret)? };
    let partial = dir.join(format!(".{DB_FILE}.partial"));
    let _ = std::fs::remove_file(&partial);
    let written = (|| {
        let bytes = backup_database(&db, &partial, |_| ())?;
        let (sealer, keys) = if env_secret() {
            (Sealer::from_env().ok_or("the secret is gone")?.map_err(|e| e.to_string())?, None)
        } else {
            let mut keys = keyring(&secret)?;
            for k in before {
                if !keys.contains(&k) {
                    keys.push(k);
                }
            }
            (Sealer::with_keys(keys.clone()).map_err(|e| e.to_string())?, Some(keys))
        };
        let verified = verify_database(&partial, Some(&sealer))
            .map_err(|e| format!("the copy failed its check, nothing was written: {e}"))?;
        if let Some(keys) = &keys {
            write_keyring(&key_out, keys).map_err(|e| e.to_string())?;
        }
        std::fs::rename(&partial, &db_out).map_err(|e| format!("cannot write {}: {e}", db_out.display()))?;
        Ok::<_, String>((bytes, verified, keys.map(|k| k.len())))
    })();
    let (bytes, verified, keys) = written.inspect_err(|_| {
        let _ = std::fs::remove_file(&partial);
    })?;
    println!(
        "wrote {} ({bytes} bytes, schema version {}, {} channels)",
        db_out.display(),
        verified.schema_version,
        verified.channels
    );
    match keys {
        Some(n) => println!(
            "wrote {} ({n} key{}): keep it with the database, whose channel keys cannot be read without it",
            key_out.display(),
            if n == 1 { "" } else { "s" }
        ),
        None => println!(
            "the channel keys are sealed with {SECRET_ENV}, which is not saved: keep it to restore this backup"
        ),
    }
    Ok(())
}

/// The first suffix ("", ".1", ".2"…) free for both `.pre-restore` names.
fn aside_names(data: &Path) -> (PathBuf, PathBuf) {
    (0..)
        .map(|n| if n == 0 { String::new() } else { format!(".{n}") })
        .map(|s| (data.join(format!("{DB_FILE}.pre-restore{s}")), data.join(format!("{SECRET_FILE}.pre-restore{s}"))))
        .find(|(db, key)| !db.exists() && !key.exists())
        .unwrap_or_else(|| {
            (data.join(format!("{DB_FILE}.pre-restore")), data.join(format!("{SECRET_FILE}.pre-restore")))
        })
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_os_string();
    s.push(suffix);
    PathBuf::from(s)
}

fn rename(from: &Path, to: &Path) -> Result<(), String> {
    std::fs::rename(from, to).map_err(|e| format!("cannot move {} to {}: {e}", from.display(), to.display()))
}

fn run_restore(data: &Path, from: &Path) -> Result<(), String> {
    if !from.is_dir() {
        return Err(format!(
            "{} is not a backup directory (one written by `oblivious backup`, holding {DB_FILE} and {SECRET_FILE})",
            from.display()
        ));
    }
    let (backup_db, backup_key) = (from.join(DB_FILE), from.join(SECRET_FILE));
    if !backup_db.is_file() {
        return Err(format!("{} holds no {DB_FILE}: not a backup", from.display()));
    }
    let keys = if backup_key.exists() {
        Some(keyring(&backup_key)?)
    } else if env_secret() {
        None
    } else {
        return Err(format!(
            "{} holds no {SECRET_FILE} and {SECRET_ENV} is not set: the channel keys in the backup could not be read",
            from.display()
        ));
    };
    let sealer = match (&keys, Sealer::from_env()) {
        (_, Some(env)) => env.map_err(|e| e.to_string())?,
        (Some(keys), None) => Sealer::with_keys(keys.clone()).map_err(|e| e.to_string())?,
        (None, None) => return Err(format!("{SECRET_ENV} is not set")),
    };
    let Verified { schema_version, channels, open_reservations } =
        verify_database(&backup_db, Some(&sealer)).map_err(|e| format!("not restoring: {e}"))?;

    create_private_dir(data)?;
    let db = platform::db_path(data);
    let _lock = oblivious_sqlite::lock::exclusive(&db).map_err(|e| format!("not restoring: {e}"))?;
    // Copy into the data directory first, so the switch below is renames only.
    let incoming = data.join(format!(".{DB_FILE}.restoring"));
    let _ = std::fs::remove_file(&incoming);
    let copied = copy_private(&backup_db, &incoming);
    let bytes = copied.inspect_err(|_| {
        let _ = std::fs::remove_file(&incoming);
    })?;

    let (db_aside, key_aside) = aside_names(data);
    let mut kept = Vec::new();
    if db.exists() {
        // Every commit into the file itself, so the file alone is the old database.
        checkpoint(&db).map_err(|e| format!("cannot close the current database: {e}"))?;
        rename(&db, &db_aside)?;
        let wal = with_suffix(&db, "-wal");
        if wal.exists() {
            rename(&wal, &with_suffix(&db_aside, "-wal"))?;
        }
        let _ = std::fs::remove_file(with_suffix(&db, "-shm"));
        kept.push(db_aside.display().to_string());
    }
    let secret = keyring_path(data);
    if let Some(keys) = &keys {
        if secret.exists() {
            rename(&secret, &key_aside)?;
            kept.push(key_aside.display().to_string());
        }
        write_keyring(&secret, keys).map_err(|e| e.to_string())?;
    }
    rename(&incoming, &db)?;
    oblivious_sqlite::seal::sync_dir(&db).map_err(|e| format!("{}: {e}", data.display()))?;

    println!(
        "restored {} into {} ({bytes} bytes, schema version {schema_version}, {channels} channels)",
        from.display(),
        db.display()
    );
    if !kept.is_empty() {
        println!("kept what it replaced as {}", kept.join(" and "));
    }
    let (open, held) = open_reservations;
    if open > 0 {
        println!(
            "{open} requests were in flight when the backup was taken; the gateway refunds the {held} units they hold \
             once they are older than [billing] reservation_timeout_seconds"
        );
    }
    Ok(())
}

/// Copies `from` to the new file `to` (mode 0600) and syncs it; its size.
fn copy_private(from: &Path, to: &Path) -> Result<u64, String> {
    let mut src = std::fs::File::open(from).map_err(|e| format!("{}: {e}", from.display()))?;
    let mut dst =
        oblivious_sqlite::seal::private_file(to).map_err(|e| format!("cannot create {}: {e}", to.display()))?;
    let n = std::io::copy(&mut src, &mut dst).map_err(|e| format!("cannot copy {}: {e}", from.display()))?;
    dst.sync_all().map_err(|e| format!("{}: {e}", to.display()))?;
    Ok(n)
}
