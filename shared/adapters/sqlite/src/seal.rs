//! The secret that seals channel keys in a SQLite store: `OBLIVIOUS_SECRET_KEY`
//! when set, else `secret.key` beside the database (created on first open,
//! mode 0600).
//!
//! `secret.key` is a keyring: one or more 32-byte keys back to back, the one
//! that seals first (a file of one key, as every start before rotation
//! existed wrote, is a keyring of one). It is only ever replaced whole
//! ([`write_keyring`]: a temporary file, fsync, rename), so a reader sees the
//! old keyring or the new one, never a mix. The store's sealer re-reads it
//! when the store's revision moves, before it seals, and when no key it has
//! opens a value (see `oblivious_ports::seal`).

use std::io::Write;
use std::path::{Path, PathBuf};

use oblivious_ports::seal::SecretKey;
use oblivious_ports::{Sealer, StoreError};

pub const SECRET_FILE: &str = "secret.key";

fn backend(msg: String) -> StoreError {
    StoreError::Backend(msg)
}

pub fn keyring_path(dir: &Path) -> PathBuf {
    dir.join(SECRET_FILE)
}

/// The keys in a keyring file, the sealing one first.
pub fn read_keyring(path: &Path) -> Result<Vec<SecretKey>, StoreError> {
    let bytes = std::fs::read(path).map_err(|e| backend(format!("{}: {e}", path.display())))?;
    parse_keyring(&bytes)
        .ok_or_else(|| backend(format!("{} does not hold 32-byte keys (it has {} bytes)", path.display(), bytes.len())))
}

fn parse_keyring(bytes: &[u8]) -> Option<Vec<SecretKey>> {
    let chunks = bytes.chunks_exact(32);
    if bytes.is_empty() || !chunks.remainder().is_empty() {
        return None;
    }
    chunks.map(|c| <SecretKey>::try_from(c).ok()).collect()
}

/// Replaces the keyring file at `path` atomically: written to a temporary
/// file beside it (mode 0600), synced, renamed over it, and the directory synced.
pub fn write_keyring(path: &Path, keys: &[SecretKey]) -> Result<(), StoreError> {
    let bytes: Vec<u8> = keys.iter().flatten().copied().collect();
    write_private(path, &bytes).map_err(|e| backend(format!("cannot write {}: {e}", path.display())))
}

/// Writes `bytes` to `path` through a temporary file and a rename, mode 0600.
pub(crate) fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = path.with_file_name(format!(".{name}.tmp-{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let written = (|| {
        let mut f = private_options().open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        sync_dir(path)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

/// Creates the new file `path` (refusing an existing one), mode 0600.
pub fn private_file(path: &Path) -> std::io::Result<std::fs::File> {
    private_options().open(path)
}

/// Options that create a new file with mode 0600 (refusing an existing one).
pub(crate) fn private_options() -> std::fs::OpenOptions {
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut o, 0o600);
    o
}

/// Makes a rename or a new file in `path`'s directory durable.
pub fn sync_dir(path: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::File::open(dir)?.sync_all()?;
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

/// The secret from `OBLIVIOUS_SECRET_KEY`, else the keyring in `secret.key`
/// in `dir` (created with one new key on first use; a process racing another
/// waits for its write), re-read when it changes.
pub fn sealer_for_dir(dir: &Path) -> Result<Sealer, StoreError> {
    if let Some(sealer) = Sealer::from_env() {
        return sealer;
    }
    let path = keyring_path(dir);
    match std::fs::OpenOptions::new().write(true).create_new(true).open(&path) {
        Ok(mut f) => {
            let secret: SecretKey = rand::random();
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                let _ = f.set_permissions(std::fs::Permissions::from_mode(0o600));
            }
            f.write_all(&secret)
                .and_then(|()| f.sync_all())
                .map_err(|e| backend(format!("{}: {e}", path.display())))?;
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let mut tries = 0;
            while std::fs::read(&path).ok().and_then(|b| parse_keyring(&b)).is_none() && tries < 50 {
                std::thread::sleep(std::time::Duration::from_millis(20));
                tries += 1;
            }
        }
        Err(e) => return Err(backend(format!("{}: {e}", path.display()))),
    }
    Sealer::reloading(move || read_keyring(&path))
}

/// The sealer `dir`'s database is read with, without creating anything:
/// `OBLIVIOUS_SECRET_KEY` when set, else the keyring in `secret.key`.
pub fn existing_sealer(dir: &Path) -> Result<Sealer, StoreError> {
    if let Some(sealer) = Sealer::from_env() {
        return sealer;
    }
    Sealer::with_keys(read_keyring(&keyring_path(dir))?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyrings_round_trip_and_bad_files_are_refused() {
        let dir = std::env::temp_dir().join(format!("obl-keyring-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = keyring_path(&dir);
        write_keyring(&path, &[[1; 32], [2; 32]]).unwrap();
        assert_eq!(read_keyring(&path).unwrap(), vec![[1; 32], [2; 32]]);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        }
        write_keyring(&path, &[[3; 32]]).unwrap();
        assert_eq!(read_keyring(&path).unwrap(), vec![[3; 32]]);
        std::fs::write(&path, [0u8; 33]).unwrap();
        assert!(read_keyring(&path).unwrap_err().to_string().contains("33 bytes"));
        std::fs::write(&path, []).unwrap();
        assert!(read_keyring(&path).is_err());
        let leftovers: Vec<_> = std::fs::read_dir(&dir).unwrap().flatten().map(|e| e.file_name()).collect();
        assert_eq!(leftovers.len(), 1, "no temporary file left: {leftovers:?}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
