//! The secret that seals channel keys in a SQLite store: `OBLIVIOUS_SECRET_KEY`
//! when set, else `secret.key` beside the database (created on first open,
//! mode 0600).

use std::io::Write;
use std::path::Path;

use oblivious_ports::{Sealer, StoreError};

fn backend(msg: String) -> StoreError {
    StoreError::Backend(msg)
}

/// The secret from `OBLIVIOUS_SECRET_KEY`, else `secret.key` in `dir`
/// (created on first use; a process racing another waits for its write).
pub fn sealer_for_dir(dir: &Path) -> Result<Sealer, StoreError> {
    if let Some(sealer) = Sealer::from_env() {
        return sealer;
    }
    let path = dir.join("secret.key");
    match std::fs::OpenOptions::new().write(true).create_new(true).open(&path) {
        Ok(mut f) => {
            let secret: [u8; 32] = rand::random();
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                let _ = f.set_permissions(std::fs::Permissions::from_mode(0o600));
            }
            f.write_all(&secret)
                .and_then(|()| f.sync_all())
                .map_err(|e| backend(format!("{}: {e}", path.display())))?;
            Ok(Sealer::new(&secret))
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            for _ in 0..50 {
                let bytes = std::fs::read(&path).map_err(|e| backend(format!("{}: {e}", path.display())))?;
                if let Ok(secret) = <[u8; 32]>::try_from(bytes.as_slice()) {
                    return Ok(Sealer::new(&secret));
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(backend(format!("{} does not hold a 32-byte secret", path.display())))
        }
        Err(e) => Err(backend(format!("{}: {e}", path.display()))),
    }
}
