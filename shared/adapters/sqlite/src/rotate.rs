//! Re-sealing: every sealed value opened with the whole keyring and sealed
//! again under its first key, in one transaction. The mechanics of
//! `oblivious secret rotate` (whose module explains the design): the keyring
//! file is written first, then the values are re-sealed, and the older keys
//! are dropped only once nothing needs them.

use std::path::Path;

use oblivious_core::model::Id;
use oblivious_ports::seal::SecretKey;
use oblivious_ports::{Store, StoreError, StoreResult, SECRET_ENV};
use rusqlite::params;

use crate::db::Cached;
use crate::seal::{keyring_path, read_keyring, write_keyring};
use crate::SqliteStore;

/// What a rotation step did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rotation {
    /// Channels whose keys were sealed again.
    pub resealed: usize,
    /// Older keys dropped from the keyring.
    pub dropped: usize,
    /// Keys in the keyring now.
    pub keys: usize,
}

impl SqliteStore {
    /// Opens every channel's keys with the keyring and seals them again under
    /// its first key, in one transaction that also bumps the store revision
    /// (running servers then re-read the keyring and their channels); checks
    /// that each value opens with the first key alone. Returns how many channels.
    pub async fn reseal_all(&self) -> StoreResult<usize> {
        let sealer = self.db().sealer_for_sealing();
        self.db()
            .write(move |tx| {
                let rows: Vec<(Id, String, String)> = {
                    let mut st = tx.prepare("SELECT id, name, spec FROM channels ORDER BY id")?;
                    let rows = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
                    rows.collect::<Result<_, _>>()?
                };
                let primary = sealer.primary_only();
                for (id, name, stored) in &rows {
                    let spec = sealer
                        .open_spec(stored)
                        .map_err(|e| StoreError::Backend(format!("channel `{name}` (id {id}): {e}")))?;
                    let sealed = primary.seal_spec(&spec)?;
                    primary.open_spec(&sealed)?;
                    // `updated_at` stays: the channel did not change, only its ciphertext.
                    tx.exec("UPDATE channels SET spec = ?1 WHERE id = ?2", params![sealed, id])?;
                }
                tx.exec("UPDATE revision SET value = value + 1 WHERE id = 1", [])?;
                Ok(rows.len())
            })
            .await
    }
}

fn file_keyring_only() -> StoreResult<()> {
    if std::env::var_os(SECRET_ENV).is_some() {
        return Err(StoreError::Backend(format!(
            "the secret comes from {SECRET_ENV}, which a command cannot change for running servers; \
             unset it to rotate secret.key"
        )));
    }
    Ok(())
}

/// Starts a rotation of the keyring in `dir` (the store's data directory): a
/// new key is generated and written first in the keyring, the current one
/// kept after it, then every value is sealed again under the new key. An
/// unfinished earlier rotation is finished first, so a keyring never holds
/// more than two keys.
pub async fn rotate(store: &SqliteStore, dir: &Path) -> StoreResult<(Option<Rotation>, Rotation)> {
    file_keyring_only()?;
    let path = keyring_path(dir);
    let mut keys = read_keyring(&path)?;
    let earlier = if keys.len() > 1 {
        let done = finish(store, dir).await?;
        keys = read_keyring(&path)?;
        Some(done)
    } else {
        None
    };
    let new: SecretKey = rand::random();
    write_keyring(&path, &[new, keys[0]])?;
    store.sealer().reload()?;
    let resealed = store.reseal_all().await?;
    Ok((earlier, Rotation { resealed, dropped: 0, keys: 2 }))
}

/// Finishes a rotation: seals every value again under the first key (those a
/// process sealed under an older key meanwhile included), then rewrites the
/// keyring with that key alone.
pub async fn finish(store: &SqliteStore, dir: &Path) -> StoreResult<Rotation> {
    file_keyring_only()?;
    let path = keyring_path(dir);
    store.sealer().reload()?;
    let keys = read_keyring(&path)?;
    let resealed = store.reseal_all().await?;
    if keys.len() > 1 {
        write_keyring(&path, &keys[..1])?;
        store.sealer().reload()?;
    }
    Ok(Rotation { resealed, dropped: keys.len() - 1, keys: 1 })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Db;
    use oblivious_ports::conformance::spec;
    use oblivious_ports::Sealer;

    #[tokio::test(flavor = "multi_thread")]
    async fn rotation_reseals_under_the_new_key_and_finishing_drops_the_old() {
        if std::env::var_os(SECRET_ENV).is_some() {
            return;
        }
        let dir = std::env::temp_dir().join(format!("obl-rotate-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let db = dir.join("t.db");
        let cli = SqliteStore::new(Db::open(&db).unwrap());
        // A second handle, as a running server in another process would have.
        let server = SqliteStore::new(Db::open(&db).unwrap());
        let mut s = spec("a");
        s.keys = vec!["sk-a1".into(), "sk-a2".into()];
        let a = server.create_channel(s, 1).await.unwrap();
        let old = read_keyring(&keyring_path(&dir)).unwrap();
        assert_eq!(old.len(), 1);
        let rev = server.revision().await.unwrap();

        let (earlier, r) = rotate(&cli, &dir).await.unwrap();
        assert_eq!((earlier, r.resealed, r.keys), (None, 1, 2));
        let ring = read_keyring(&keyring_path(&dir)).unwrap();
        assert_eq!(ring[1], old[0], "the old key stays, second");
        assert!(server.revision().await.unwrap() > rev, "the revision moved");
        assert_eq!(server.channel(a.id).await.unwrap().unwrap().spec.keys, ["sk-a1", "sk-a2"]);
        // The server seals under the new key now.
        let mut s = spec("b");
        s.keys = vec!["sk-b".into()];
        let b = server.create_channel(s, 2).await.unwrap();
        let raw = |id: Id| -> String {
            rusqlite::Connection::open(&db)
                .unwrap()
                .query_row("SELECT spec FROM channels WHERE id = ?1", [id], |r| r.get(0))
                .unwrap()
        };
        let new_only = Sealer::new(&ring[0]);
        assert!(new_only.open_spec(&raw(a.id)).is_ok() && new_only.open_spec(&raw(b.id)).is_ok());
        assert!(Sealer::new(&old[0]).open_spec(&raw(a.id)).is_err());

        let done = finish(&cli, &dir).await.unwrap();
        assert_eq!((done.resealed, done.dropped, done.keys), (2, 1, 1));
        assert_eq!(read_keyring(&keyring_path(&dir)).unwrap(), vec![ring[0]]);
        assert_eq!(server.channels().await.unwrap().len(), 2);
        assert_eq!(finish(&cli, &dir).await.unwrap().dropped, 0, "nothing more to drop");

        // A second rotation: the keyring is [newer, new].
        let (earlier, _) = rotate(&cli, &dir).await.unwrap();
        assert!(earlier.is_none());
        let third = read_keyring(&keyring_path(&dir)).unwrap();
        assert_eq!(third[1], ring[0]);
        // Rotating again before finishing finishes the earlier one first.
        let (earlier, r) = rotate(&cli, &dir).await.unwrap();
        assert_eq!(earlier.map(|e| e.dropped), Some(1));
        assert_eq!(r.keys, 2);
        assert_eq!(read_keyring(&keyring_path(&dir)).unwrap()[1], third[0]);
        assert_eq!(server.channel(b.id).await.unwrap().unwrap().spec.keys, ["sk-b"]);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
