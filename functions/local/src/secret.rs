//! `oblivious secret rotate [--finish]`: re-encrypts every channel key under
//! a new secret while gateways keep serving on the same data directory.
//!
//! The design, in three moves:
//!
//! 1. `secret.key` is a keyring: 32-byte keys back to back, the first seals,
//!    every one opens (`oblivious_ports::seal`). It is only ever replaced
//!    whole (temporary file, fsync, rename; mode 0600).
//! 2. `rotate` writes the keyring `[new, old]`, then, in one transaction,
//!    opens every sealed value (each channel's keys: the only values sealed
//!    in a SQLite store) and seals it again under the new key, and bumps the
//!    store revision. A running gateway is never without a working key: its
//!    snapshot holds the keys it already opened, and when it reloads (the
//!    revision moved, within half a second) its sealer re-reads the keyring
//!    first — as it does whenever no key it has opens a value, and before
//!    any write that seals — so it opens the new ciphertexts and seals
//!    anything it writes under the new key. Values a gateway sealed under the
//!    old key in the moment before it saw the new keyring still open, since
//!    the old key stays.
//! 3. `rotate --finish` seals everything again under the first key (catching
//!    such values), checks each opens with that key alone, and only then
//!    rewrites the keyring as `[new]`: from there the old secret opens
//!    nothing stored. A rotation started while one is unfinished finishes it
//!    first, so a keyring holds at most two keys.
//!
//! With `OBLIVIOUS_SECRET_KEY` the secret is not in the data directory and a
//! command cannot change it for running processes: rotate refuses. Two
//! rotations run at the same moment are not guarded against: run one at a time.
//! Backups keep the keyring they were taken with, so they stay readable.

use std::path::Path;

use clap::Subcommand;
use oblivious_sqlite::rotate;

use crate::platform;

#[derive(Subcommand)]
pub enum SecretCmd {
    /// Re-encrypt every channel key under a new secret, with no downtime:
    /// `secret.key` becomes [new, old] and running gateways follow within a
    /// second; `--finish` then drops the old key (a later rotation does too).
    #[command(after_help = "Gateways running on the data directory need no restart. Run one rotation at a time. \
Backups keep the secret they were taken with. Not available when the secret comes from OBLIVIOUS_SECRET_KEY.")]
    Rotate {
        /// Drop the old key once every value is sealed under the new one.
        #[arg(long)]
        finish: bool,
    },
}

pub async fn secret(data: &Path, cmd: SecretCmd) -> Result<(), String> {
    let SecretCmd::Rotate { finish } = cmd;
    let db = platform::db_path(data);
    if !db.is_file() {
        return Err(format!("there is no database at {} (check --data)", db.display()));
    }
    let (ports, _) = platform::open(data, &Default::default()).await?;
    let store = &ports.store;
    let s = |n: usize| if n == 1 { "" } else { "s" };
    if finish {
        let done = rotate::finish(store, data).await.map_err(|e| e.to_string())?;
        if done.dropped == 0 {
            println!(
                "secret.key holds one key: no rotation to finish ({} channel{} sealed under it)",
                done.resealed,
                s(done.resealed)
            );
        } else {
            println!(
                "sealed the keys of {} channel{} under the new secret and dropped {} old key{} from secret.key: \
                 the old secret opens nothing stored",
                done.resealed,
                s(done.resealed),
                done.dropped,
                s(done.dropped)
            );
        }
        return Ok(());
    }
    let (earlier, done) = rotate::rotate(store, data).await.map_err(|e| e.to_string())?;
    if let Some(e) = earlier {
        println!("finished the previous rotation first (dropped {} old key{})", e.dropped, s(e.dropped));
    }
    println!(
        "sealed the keys of {} channel{} under a new secret; secret.key holds the new key and the old one, so \
         gateways running on {} keep working and follow within a second. Run `oblivious secret rotate --finish` \
         to drop the old key",
        done.resealed,
        s(done.resealed),
        data.display()
    );
    Ok(())
}
