//! Re-sealing: every sealed value opened with the whole keyring and sealed
//! again under its first key, in one transaction. The mechanics of
//! `oblivious secret rotate` (whose module explains the design): the keyring
//! file is written first, then the values are re-sealed, and the older keys
//! are dropped only once nothing needs them.

use std::path::Path;

use oblivious_core::model::Id;
use oblivious_ports::seal::SecretKey;
use oblivious_ports::{Sealer, Store, StoreError, StoreResult, SECRET_ENV};
use rusqlite::types::Value;
use rusqlite::{params, Connection};

use crate::db::{Cached, DbResult};
use crate::seal::{keyring_path, read_keyring, write_keyring};
use crate::SqliteStore;

/// What a rotation step did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rotation {
    /// Channels whose keys were sealed again.
    pub resealed: usize,
    /// Other sealed values (TOTP secrets, signing keys) sealed again.
    pub secrets: usize,
    /// Older keys dropped from the keyring.
    pub dropped: usize,
    /// Keys in the keyring now.
    pub keys: usize,
}

/// A column of single sealed strings, besides the channels' keys.
pub(crate) struct SealedColumn {
    pub table: &'static str,
    pub key: &'static str,
    pub column: &'static str,
    /// What a value is, for errors.
    pub what: &'static str,
    /// More to set when a value is sealed again.
    also: &'static str,
}

pub(crate) const SEALED_COLUMNS: &[SealedColumn] = &[
    // The version moves so that an update read before the rotation (holding
    // the old ciphertext) conflicts instead of writing back a value sealed
    // under a key about to be dropped.
    SealedColumn {
        table: "accounts",
        key: "user_id",
        column: "totp_secret",
        what: "the TOTP secret of user",
        also: ", version = version + 1",
    },
    SealedColumn { table: "signing_keys", key: "kid", column: "secret", what: "signing key", also: "" },
];

/// Every non-null value of `col`, with its row's key.
pub(crate) fn sealed_values(c: &Connection, col: &SealedColumn) -> rusqlite::Result<Vec<(Value, String)>> {
    let (table, key, column) = (col.table, col.key, col.column);
    let mut st =
        c.prepare(&format!("SELECT {key}, {column} FROM {table} WHERE {column} IS NOT NULL ORDER BY {key}"))?;
    let rows = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
    rows.collect()
}

/// A row key for a message.
pub(crate) fn show(key: &Value) -> String {
    match key {
        Value::Integer(i) => i.to_string(),
        Value::Text(t) => format!("`{t}`"),
        other => format!("{other:?}"),
    }
}

/// Seals every value of `col` again under `primary`; how many.
fn reseal_column(tx: &Connection, sealer: &Sealer, primary: &Sealer, col: &SealedColumn) -> DbResult<usize> {
    let values = sealed_values(tx, col)?;
    let sql = format!("UPDATE {} SET {} = ?1{} WHERE {} = ?2", col.table, col.column, col.also, col.key);
    for (key, stored) in &values {
        let plain = sealer.open(stored).map_err(|e| StoreError::Backend(format!("{} {}: {e}", col.what, show(key))))?;
        let sealed = primary.seal(&plain);
        primary.open(&sealed)?;
        tx.exec(&sql, params![sealed, key])?;
    }
    Ok(values.len())
}

impl SqliteStore {
    /// Opens every sealed value (channels' keys, TOTP secrets, signing keys)
    /// with the keyring and seals it again under its first key, in one
    /// transaction that also bumps the store revision (running servers then
    /// re-read the keyring and their channels); checks that each value opens
    /// with the first key alone. Returns how many channels, and how many other values.
    pub async fn reseal_all(&self) -> StoreResult<(usize, usize)> {
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
                let mut secrets = 0;
                for col in SEALED_COLUMNS {
                    secrets += reseal_column(tx, &sealer, &primary, col)?;
                }
                tx.exec("UPDATE revision SET value = value + 1 WHERE id = 1", [])?;
                Ok((rows.len(), secrets))
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
    let (resealed, secrets) = store.reseal_all().await?;
    Ok((earlier, Rotation { resealed, secrets, dropped: 0, keys: 2 }))
}

/// Finishes a rotation: seals every value again under the first key (those a
/// process sealed under an older key meanwhile included), then rewrites the
/// keyring with that key alone.
pub async fn finish(store: &SqliteStore, dir: &Path) -> StoreResult<Rotation> {
    file_keyring_only()?;
    let path = keyring_path(dir);
    store.sealer().reload()?;
    let keys = read_keyring(&path)?;
    let (resealed, secrets) = store.reseal_all().await?;
    if keys.len() > 1 {
        write_keyring(&path, &keys[..1])?;
        store.sealer().reload()?;
    }
    Ok(Rotation { resealed, secrets, dropped: keys.len() - 1, keys: 1 })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Db;
    use oblivious_ports::conformance::{new_account, new_user, spec};
    use oblivious_ports::{Account, Accounts, SigningKey};

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

    #[tokio::test(flavor = "multi_thread")]
    async fn totp_secrets_and_signing_keys_are_resealed_too() {
        if std::env::var_os(SECRET_ENV).is_some() {
            return;
        }
        let dir = std::env::temp_dir().join(format!("obl-rotate-accounts-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let db = dir.join("t.db");
        let store = SqliteStore::new(Db::open(&db).unwrap());
        let sealer = store.sealer();
        let (u, acct) =
            store.create_account(new_user("ada", 0), new_account("ada@example.com"), None, 1).await.unwrap();
        let acct =
            store.update_account(Account { totp_secret: Some(sealer.seal("JBSWY3DP")), ..acct }, 2).await.unwrap();
        let (plain, _) =
            store.create_account(new_user("bob", 0), new_account("bob@example.com"), None, 1).await.unwrap();
        let key = SigningKey { kid: "k1".into(), secret: sealer.seal("a2V5"), created_at: 1, expires_at: i64::MAX };
        store.add_signing_key(key).await.unwrap();
        let old = read_keyring(&keyring_path(&dir)).unwrap();

        let (_, r) = rotate(&store, &dir).await.unwrap();
        assert_eq!((r.resealed, r.secrets), (0, 2), "one TOTP secret (bob has none) and one signing key");
        let raw = |sql: &str| -> String {
            rusqlite::Connection::open(&db).unwrap().query_row(sql, [], |r| r.get(0)).unwrap()
        };
        let totp = raw(&format!("SELECT totp_secret FROM accounts WHERE user_id = {}", u.id));
        let signing = raw("SELECT secret FROM signing_keys WHERE kid = 'k1'");
        let new_only = Sealer::new(&read_keyring(&keyring_path(&dir)).unwrap()[0]);
        assert_eq!(
            (new_only.open(&totp).unwrap().as_str(), new_only.open(&signing).unwrap().as_str()),
            ("JBSWY3DP", "a2V5")
        );
        assert!(Sealer::new(&old[0]).open(&totp).is_err() && Sealer::new(&old[0]).open(&signing).is_err());

        // An update read before the rotation would write back the old ciphertext: it conflicts.
        let stale = store.update_account(acct.clone(), 3).await;
        assert!(matches!(stale, Err(StoreError::Conflict(_))), "{stale:?}");
        assert_eq!(store.account(plain.id).await.unwrap().unwrap().version, 1, "nothing sealed, nothing bumped");

        let done = finish(&store, &dir).await.unwrap();
        assert_eq!((done.secrets, done.keys), (2, 1));
        let now = store.account(u.id).await.unwrap().unwrap();
        assert_eq!(store.sealer().open(now.totp_secret.as_deref().unwrap()).unwrap(), "JBSWY3DP");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
