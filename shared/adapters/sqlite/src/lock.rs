//! Who has a data directory's database open: every [`Db`](crate::Db) holds a
//! shared advisory lock (`flock`) on `<database>.lock` for as long as it is
//! open — a running `oblivious serve`, and a CLI command for the moment it
//! runs. Replacing the database (`oblivious restore`) takes the lock
//! exclusively, without waiting, so it refuses while anything has the
//! database open, and a process that starts meanwhile waits for the
//! replacement to finish. The kernel drops a lock when its process dies, so a
//! crash leaves no stale lock behind. On systems without `flock` (Windows)
//! there is no lock and restore cannot tell.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A held lock; released when dropped (or when the process exits).
#[derive(Debug)]
pub struct DbLock {
    _file: Option<File>,
}

pub fn lock_path(db: &Path) -> PathBuf {
    let mut name = db.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(".lock");
    db.with_file_name(name)
}

#[cfg(unix)]
fn open(db: &Path) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(false).mode(0o600).open(lock_path(db))
}

/// The shared lock every open database holds. Waits (up to `wait`) while a
/// restore holds it exclusively.
pub(crate) fn shared(db: &Path, wait: Duration) -> Result<DbLock, String> {
    #[cfg(unix)]
    {
        use rustix::fs::{flock, FlockOperation};
        let path = lock_path(db);
        let file = open(db).map_err(|e| format!("{}: {e}", path.display()))?;
        let deadline = Instant::now() + wait;
        loop {
            match flock(&file, FlockOperation::NonBlockingLockShared) {
                Ok(()) => return Ok(DbLock { _file: Some(file) }),
                Err(e) if e == rustix::io::Errno::WOULDBLOCK && Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) if e == rustix::io::Errno::WOULDBLOCK => {
                    return Err(format!(
                        "{} is being restored by another process; try again when it is done",
                        db.display()
                    ))
                }
                Err(e) => return Err(format!("cannot lock {}: {e}", path.display())),
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = (db, wait, Instant::now());
        Ok(DbLock { _file: None })
    }
}

/// The exclusive lock, taken only if nothing has the database open.
pub fn exclusive(db: &Path) -> Result<DbLock, String> {
    #[cfg(unix)]
    {
        use rustix::fs::{flock, FlockOperation};
        let path = lock_path(db);
        let file = open(db).map_err(|e| format!("{}: {e}", path.display()))?;
        match flock(&file, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => Ok(DbLock { _file: Some(file) }),
            Err(e) if e == rustix::io::Errno::WOULDBLOCK => Err(format!(
                "{} is open in another process (a running `oblivious serve`, or a CLI command): stop it first",
                db.display()
            )),
            Err(e) => Err(format!("cannot lock {}: {e}", path.display())),
        }
    }
    #[cfg(not(unix))]
    {
        let _ = db;
        Ok(DbLock { _file: None })
    }
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    #[test]
    fn an_exclusive_lock_waits_for_nobody_and_shared_ones_wait_for_it() {
        let dir = std::env::temp_dir().join(format!("obl-lock-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let db = dir.join("x.db");
        let a = shared(&db, Duration::ZERO).unwrap();
        let b = shared(&db, Duration::ZERO).unwrap();
        assert!(exclusive(&db).unwrap_err().contains("open in another process"));
        drop((a, b));
        let x = exclusive(&db).unwrap();
        assert!(shared(&db, Duration::from_millis(100)).unwrap_err().contains("being restored"));
        drop(x);
        assert!(shared(&db, Duration::ZERO).is_ok());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
