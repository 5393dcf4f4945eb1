//! The second level of the relay's caches: hot state shared by every instance
//! (Redis on Lambda, Upstash at the edge), so an instance that starts cold
//! builds its snapshot and resolves keys from what a warm one already read
//! instead of reading the tables. Off for the local binary, whose hot state
//! lives in the same process as the first level.
//!
//! | key | holds | TTL |
//! |---|---|---|
//! | `snapshot:{rev}` | the snapshot's inputs at store revision `rev`: channels (with their keys), groups, prices | 10 min |
//! | `principal:{rev}:{key hash}` | the key's token and owner, or that no such key exists | 60 s |
//!
//! Keys name the store's revision and every change these caches depend on
//! bumps it, so an instance that has seen a change never reads an entry from
//! before it: a revoked key is refused as soon as the revision moves. A value
//! is always read from the store after its revision, so it is at least as new
//! as its key says. A cached principal's balances lag as they do in the
//! in-process cache (spending moves the revision only when a key runs out or
//! is revived): the reservation in the store is what enforces balances and
//! spending caps, and the short TTL keeps the shared copy from aging further.
//!
//! Every value is sealed with the store's [`Sealer`] (XChaCha20-Poly1305 under
//! the deployment's secret), so hot state never holds a channel key in clear
//! text, and names its own key inside the seal, so a value copied under
//! another key (an admin's principal under someone else's key hash) is
//! refused. Hot state only saves reads: a failure to reach it, or a value that
//! does not open, is logged and the store answers; a failed write is logged.

use std::time::Duration;

use bytes::Bytes;
use oblivious_core::model::{Token, User};
use oblivious_ports::{Hot, Sealer};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::auth::Principal;
use crate::snapshot::Inputs;

/// Long enough to serve every cold start between two changes; old revisions' entries just expire.
pub(crate) const SNAPSHOT_TTL: Duration = Duration::from_secs(600);
/// Short: the copy of balances and caps it carries is only advisory.
pub(crate) const PRINCIPAL_TTL: Duration = Duration::from_secs(60);

pub(crate) fn snapshot_key(revision: i64) -> String {
    format!("snapshot:{revision}")
}

pub(crate) fn principal_key(revision: i64, key_hash: &str) -> String {
    format!("principal:{revision}:{key_hash}")
}

/// What is sealed: the value and the key it was written under.
#[derive(Serialize)]
struct Envelope<'a, T> {
    key: &'a str,
    value: &'a T,
}

#[derive(Deserialize)]
struct Opened<T> {
    key: String,
    value: T,
}

/// A principal as hot state keeps it. `Token` does not serialize its key
/// hash; the hot key names it, and it is put back on the way out.
#[derive(Serialize, Deserialize)]
struct StoredPrincipal {
    token: serde_json::Value,
    user: User,
}

/// What a read of the shared level found.
pub(crate) enum Lookup<T> {
    Hit(T),
    /// Nothing usable: read the store, then write the entry.
    Miss,
    /// Hot state failed: read the store and skip the write.
    Down,
}

/// Seals, stores, reads and opens the shared entries.
pub(crate) struct SharedCaches {
    sealer: Sealer,
}

impl SharedCaches {
    pub(crate) fn new(sealer: Sealer) -> Self {
        SharedCaches { sealer }
    }

    fn seal<T: Serialize>(&self, key: &str, value: &T) -> Result<Bytes, String> {
        let json = serde_json::to_string(&Envelope { key, value }).map_err(|e| e.to_string())?;
        Ok(Bytes::from(self.sealer.seal(&json)))
    }

    fn open<T: DeserializeOwned>(&self, key: &str, bytes: &[u8]) -> Result<T, String> {
        let text = std::str::from_utf8(bytes).map_err(|_| "not a sealed value".to_string())?;
        let json = self.sealer.open_sealed(text).map_err(|e| e.to_string())?;
        let opened: Opened<T> = serde_json::from_str(&json).map_err(|e| e.to_string())?;
        if opened.key != key {
            return Err("sealed for another key".into());
        }
        Ok(opened.value)
    }

    /// The value under `key`: `Miss` when absent or unreadable (to be
    /// replaced), `Down` when hot state failed (not worth a write either).
    async fn get<H: Hot, T: DeserializeOwned>(&self, hot: &H, what: &str, key: &str) -> Lookup<T> {
        match hot.get_bytes(key).await {
            Ok(Some(bytes)) => match self.open(key, &bytes) {
                Ok(value) => Lookup::Hit(value),
                Err(e) => {
                    tracing::warn!("shared {what} cache: an unreadable entry ({e}), reading the store");
                    Lookup::Miss
                }
            },
            Ok(None) => Lookup::Miss,
            Err(e) => {
                tracing::warn!("shared {what} cache: hot state failed ({e}), reading the store");
                Lookup::Down
            }
        }
    }

    async fn put<H: Hot, T: Serialize>(&self, hot: &H, what: &str, key: &str, value: &T, ttl: Duration) {
        let result = match self.seal(key, value) {
            Ok(bytes) => hot.set_bytes(key, bytes, Some(ttl)).await.map_err(|e| e.to_string()),
            Err(e) => Err(e),
        };
        if let Err(e) = result {
            tracing::warn!("shared {what} cache: could not write an entry ({e})");
        }
    }

    /// The snapshot's inputs at `revision`, if some instance already read them.
    pub(crate) async fn snapshot<H: Hot>(&self, hot: &H, revision: i64) -> Lookup<Inputs> {
        self.get(hot, "snapshot", &snapshot_key(revision)).await
    }

    pub(crate) async fn put_snapshot<H: Hot>(&self, hot: &H, revision: i64, inputs: &Inputs) {
        self.put(hot, "snapshot", &snapshot_key(revision), inputs, SNAPSHOT_TTL).await
    }

    /// The key's principal at `revision` (`Hit(None)`: no such key), if hot state knows it.
    pub(crate) async fn principal<H: Hot>(&self, hot: &H, revision: i64, key_hash: &str) -> Lookup<Option<Principal>> {
        let stored: Option<StoredPrincipal> = match self.get(hot, "key", &principal_key(revision, key_hash)).await {
            Lookup::Hit(stored) => stored,
            Lookup::Miss => return Lookup::Miss,
            Lookup::Down => return Lookup::Down,
        };
        let Some(StoredPrincipal { mut token, user }) = stored else { return Lookup::Hit(None) };
        if let Some(object) = token.as_object_mut() {
            object.insert("key_hash".into(), serde_json::Value::String(key_hash.to_string()));
        }
        match serde_json::from_value::<Token>(token) {
            Ok(token) => Lookup::Hit(Some(Principal { token, user })),
            Err(e) => {
                tracing::warn!("shared key cache: an unreadable entry ({e}), reading the store");
                Lookup::Miss
            }
        }
    }

    pub(crate) async fn put_principal<H: Hot>(
        &self,
        hot: &H,
        revision: i64,
        key_hash: &str,
        found: Option<&Principal>,
    ) {
        let stored = match found {
            None => None,
            Some(p) => match serde_json::to_value(&p.token) {
                Ok(token) => Some(StoredPrincipal { token, user: p.user.clone() }),
                Err(e) => {
                    tracing::warn!("shared key cache: could not write an entry ({e})");
                    return;
                }
            },
        };
        self.put(hot, "key", &principal_key(revision, key_hash), &stored, PRINCIPAL_TTL).await
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::collections::BTreeMap;

    use futures_util::FutureExt;
    use oblivious_core::model::{
        Channel, ChannelSpec, ChannelStatus, ChannelType, Group, KeySelection, Price, Role, Source, TokenStatus,
        UserStatus,
    };

    use super::*;

    fn caches() -> SharedCaches {
        SharedCaches::new(Sealer::new(&[9; 32]))
    }

    fn inputs() -> Inputs {
        let spec = ChannelSpec {
            name: "vertex-eu".into(),
            kind: ChannelType::Vertex,
            base_url: String::new(),
            keys: vec!["sk-upstream-one".into(), "{\"private_key\":\"-----BEGIN\"}".into()],
            models: vec!["gemini-*".into(), "text-embedding-004".into()],
            model_mapping: BTreeMap::from([("fast".to_string(), "gemini-2.0-flash".to_string())]),
            weight: 3,
            priority: -2,
            groups: vec!["default".into(), "vip".into()],
            key_selection: KeySelection::RoundRobin,
            api_version: Some("2024-06-01".into()),
            region: Some("europe-west4".into()),
            project: Some("p-1".into()),
        };
        let channel = Channel {
            id: 7,
            spec,
            status: ChannelStatus::AutoDisabled,
            status_reason: Some("probe failed".into()),
            source: Source::Api,
            updated_at: 1_700_000_000_123,
        };
        let plain = Channel {
            id: 8,
            spec: ChannelSpec {
                kind: ChannelType::Openai,
                name: "plain".into(),
                keys: vec![],
                api_version: None,
                region: None,
                project: None,
                ..channel.spec.clone()
            },
            status: ChannelStatus::Enabled,
            status_reason: None,
            source: Source::Config,
            ..channel.clone()
        };
        Inputs {
            channels: vec![channel, plain],
            groups: vec![Group { name: "vip".into(), ratio_bp: 8_000, description: "friends".into() }],
            prices: vec![Price {
                version: 3,
                model: "gemini-*".into(),
                effective_at: 5,
                input_per_m: 100,
                output_per_m: 400,
                cached_input_per_m: Some(25),
                ..Price::default()
            }],
        }
    }

    fn principal() -> Principal {
        Principal {
            token: Token {
                id: 11,
                user_id: 12,
                name: "ci".into(),
                key_hash: "ab12".into(),
                key_hint: "sk-ab…yz".into(),
                status: TokenStatus::Normal,
                unlimited: false,
                remaining_quota: 900,
                used_quota: 100,
                models: vec!["gpt-*".into()],
                ips: vec!["10.0.0.0/8".parse().unwrap()],
                expires_at: Some(9_999),
                daily_limit: Some(50),
                monthly_limit: None,
                created_at: 1,
            },
            user: User {
                id: 12,
                name: "carol".into(),
                role: Role::User,
                group: "vip".into(),
                status: UserStatus::Enabled,
                quota: 5_000,
                used_quota: 10,
                unlimited: false,
                created_at: 2,
            },
        }
    }

    #[test]
    fn snapshot_inputs_round_trip_sealed_with_channel_keys() {
        let c = caches();
        let key = snapshot_key(41);
        let sealed = c.seal(&key, &inputs()).unwrap();
        let text = std::str::from_utf8(&sealed).unwrap();
        assert!(text.starts_with("enc:v1:"));
        // (`-`, `{` and `"` are not base64, so these cannot appear by chance.)
        assert!(!text.contains("sk-upstream-one") && !text.contains("{\"private_key\""));
        let back: Inputs = c.open(&key, &sealed).unwrap();
        assert_eq!(back, inputs(), "channels (keys included), groups and prices come back as they were");
    }

    #[test]
    fn a_value_opens_only_under_its_own_key_and_secret() {
        let c = caches();
        let sealed = c.seal(&snapshot_key(41), &inputs()).unwrap();
        assert!(c.open::<Inputs>(&snapshot_key(42), &sealed).is_err(), "another revision's key");
        let other = SharedCaches::new(Sealer::new(&[10; 32]));
        assert!(other.open::<Inputs>(&snapshot_key(41), &sealed).is_err(), "another secret");
        let clear = serde_json::to_vec(&serde_json::json!({ "key": snapshot_key(41), "value": inputs() })).unwrap();
        assert!(c.open::<Inputs>(&snapshot_key(41), &clear).is_err(), "an unsealed value is refused");
        assert!(c.open::<Inputs>(&snapshot_key(41), b"\xff\xfe garbage").is_err());
    }

    #[test]
    fn principals_and_unknown_keys_round_trip_and_stay_bound_to_their_key() {
        // The in-process hot state answers at once: no runtime needed.
        let hot = oblivious_native::MemoryHot::new();
        let c = caches();
        let p = principal();
        c.put_principal(&hot, 3, "ab12", Some(&p)).now_or_never().unwrap();
        c.put_principal(&hot, 3, "ffff", None).now_or_never().unwrap();
        let Lookup::Hit(Some(back)) = c.principal(&hot, 3, "ab12").now_or_never().unwrap() else { panic!("a hit") };
        assert_eq!((back.token, back.user), (p.token.clone(), p.user.clone()), "the key hash is put back");
        assert!(matches!(c.principal(&hot, 3, "ffff").now_or_never().unwrap(), Lookup::Hit(None)), "a negative entry");
        assert!(matches!(c.principal(&hot, 4, "ab12").now_or_never().unwrap(), Lookup::Miss), "another revision");
        // A principal copied under another key hash does not open there.
        let moved = hot.get_bytes(&principal_key(3, "ab12")).now_or_never().unwrap().unwrap().unwrap();
        let text = String::from_utf8(moved.to_vec()).unwrap();
        assert!(text.starts_with("enc:v1:") && !text.contains("\"carol\""), "sealed");
        hot.set_bytes(&principal_key(3, "cd34"), moved, None).now_or_never().unwrap().unwrap();
        assert!(matches!(c.principal(&hot, 3, "cd34").now_or_never().unwrap(), Lookup::Miss));
    }
}
