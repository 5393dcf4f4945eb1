//! Channel keys are encrypted at rest by every store: XChaCha20-Poly1305
//! under a 32-byte secret (`OBLIVIOUS_SECRET_KEY`, base64; the SQLite store
//! falls back to a `secret.key` file beside the database). Sealed values read
//! `enc:v1:<base64(nonce ‖ ciphertext)>`; unsealed values are read as they are.
//!
//! A [`Sealer`] holds a keyring: the first key seals, every key opens (a
//! value carries no key id; opening tries each key, and the AEAD tag tells
//! the right one). That is what lets a secret rotate with no downtime: the
//! new key goes first, the old one stays until every value has been sealed
//! again (see the local binary's `secret` command). A sealer built with
//! [`Sealer::reloading`] re-reads its keyring from its source when asked
//! ([`Sealer::reload`]) and by itself when no key it holds opens a value, so
//! a process running while another rotated the keyring follows it. Clones
//! share one keyring: a reload is seen by every copy.

use std::sync::{Arc, RwLock};

use crate::StoreError;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use oblivious_core::model::ChannelSpec;

const PREFIX: &str = "enc:v1:";
pub const SECRET_ENV: &str = "OBLIVIOUS_SECRET_KEY";

/// One key of a keyring.
pub type SecretKey = [u8; 32];

/// Where a reloading sealer reads its keyring (first key first).
type Source = dyn Fn() -> Result<Vec<SecretKey>, StoreError> + Send + Sync;

#[derive(Clone)]
pub struct Sealer {
    ring: Arc<RwLock<Arc<Ring>>>,
    source: Option<Arc<Source>>,
}

struct Ring {
    keys: Vec<SecretKey>,
    ciphers: Vec<XChaCha20Poly1305>,
}

impl Ring {
    fn new(keys: Vec<SecretKey>) -> Result<Ring, StoreError> {
        if keys.is_empty() {
            return Err(backend("a keyring needs at least one key".into()));
        }
        let ciphers = keys.iter().map(|k| XChaCha20Poly1305::new(k.into())).collect();
        Ok(Ring { keys, ciphers })
    }

    fn open(&self, nonce: &[u8], ct: &[u8]) -> Option<Vec<u8>> {
        self.ciphers.iter().find_map(|c| c.decrypt(XNonce::from_slice(nonce), ct).ok())
    }
}

fn backend(msg: String) -> StoreError {
    StoreError::Backend(msg)
}

impl Sealer {
    pub fn new(secret: &SecretKey) -> Self {
        Sealer::fixed(Ring { keys: vec![*secret], ciphers: vec![XChaCha20Poly1305::new(secret.into())] })
    }

    fn fixed(ring: Ring) -> Self {
        Sealer { ring: Arc::new(RwLock::new(Arc::new(ring))), source: None }
    }

    /// A keyring: `keys[0]` seals, every key opens.
    pub fn with_keys(keys: Vec<SecretKey>) -> Result<Self, StoreError> {
        Ok(Sealer::fixed(Ring::new(keys)?))
    }

    /// A keyring read from `source` now, and again on [`Sealer::reload`] and
    /// whenever none of its keys opens a value.
    pub fn reloading(
        source: impl Fn() -> Result<Vec<SecretKey>, StoreError> + Send + Sync + 'static,
    ) -> Result<Self, StoreError> {
        let ring = Ring::new(source()?)?;
        Ok(Sealer { ring: Arc::new(RwLock::new(Arc::new(ring))), source: Some(Arc::new(source)) })
    }

    /// The secret from `OBLIVIOUS_SECRET_KEY`, if set.
    pub fn from_env() -> Option<Result<Self, StoreError>> {
        let b64 = std::env::var(SECRET_ENV).ok()?;
        Some(Self::from_base64(&b64))
    }

    pub fn from_base64(b64: &str) -> Result<Self, StoreError> {
        let bytes = B64.decode(b64.trim()).map_err(|e| backend(format!("{SECRET_ENV}: {e}")))?;
        let secret: SecretKey =
            bytes.try_into().map_err(|_| backend(format!("{SECRET_ENV} must decode to 32 bytes")))?;
        Ok(Sealer::new(&secret))
    }

    fn ring(&self) -> Arc<Ring> {
        self.ring.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Re-reads the keyring from its source; true when it changed. A sealer
    /// without a source keeps its keys (`Ok(false)`).
    pub fn reload(&self) -> Result<bool, StoreError> {
        let Some(source) = &self.source else {
            return Ok(false);
        };
        let keys = source()?;
        if keys == self.ring().keys {
            return Ok(false);
        }
        *self.ring.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(Ring::new(keys)?);
        Ok(true)
    }

    /// The keys held, the sealing one first.
    pub fn keys(&self) -> Vec<SecretKey> {
        self.ring().keys.clone()
    }

    /// A sealer with only this one's first key, that never reloads (to check
    /// that every value opens without the older keys).
    pub fn primary_only(&self) -> Sealer {
        Sealer::new(&self.ring().keys[0])
    }

    pub fn seal(&self, plain: &str) -> String {
        let nonce_bytes: [u8; 24] = rand::random();
        let nonce = XNonce::from_slice(&nonce_bytes);
        // Encryption with a valid key and nonce cannot fail.
        let ct = self.ring().ciphers[0].encrypt(nonce, plain.as_bytes()).unwrap_or_default();
        let mut out = nonce_bytes.to_vec();
        out.extend_from_slice(&ct);
        format!("{PREFIX}{}", B64.encode(out))
    }

    pub fn open(&self, stored: &str) -> Result<String, StoreError> {
        let Some(b64) = stored.strip_prefix(PREFIX) else {
            return Ok(stored.to_string());
        };
        let bytes = B64.decode(b64).map_err(|e| backend(format!("sealed value: {e}")))?;
        if bytes.len() < 24 {
            return Err(backend("sealed value too short".into()));
        }
        let (nonce, ct) = bytes.split_at(24);
        let plain = match self.ring().open(nonce, ct) {
            Some(p) => Some(p),
            // Sealed under a key this process has not seen yet (another
            // process rotated the keyring): read it again, once.
            None if self.reload().unwrap_or(false) => self.ring().open(nonce, ct),
            None => None,
        };
        let plain = plain
            .ok_or_else(|| backend("cannot decrypt a channel key: wrong secret.key or OBLIVIOUS_SECRET_KEY?".into()))?;
        String::from_utf8(plain).map_err(|e| backend(format!("sealed value: {e}")))
    }

    /// Like [`Sealer::open`], but a value that is not sealed is an error rather
    /// than read as it is: for places (hot state) that only ever hold sealed values.
    pub fn open_sealed(&self, stored: &str) -> Result<String, StoreError> {
        if !stored.starts_with(PREFIX) {
            return Err(backend("not a sealed value".into()));
        }
        self.open(stored)
    }

    /// The spec as stored: JSON with every key sealed.
    pub fn seal_spec(&self, spec: &ChannelSpec) -> Result<String, StoreError> {
        let sealed = ChannelSpec { keys: spec.keys.iter().map(|k| self.seal(k)).collect(), ..spec.clone() };
        serde_json::to_string(&sealed).map_err(|e| backend(e.to_string()))
    }

    pub fn open_spec(&self, stored: &str) -> Result<ChannelSpec, StoreError> {
        let mut spec: ChannelSpec =
            serde_json::from_str(stored).map_err(|e| backend(format!("bad channel JSON: {e}")))?;
        spec.keys = spec.keys.iter().map(|k| self.open(k)).collect::<Result<_, _>>()?;
        Ok(spec)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[test]
    fn seals_and_opens() {
        let s = Sealer::new(&[7; 32]);
        let sealed = s.seal("sk-upstream-secret");
        assert!(sealed.starts_with(PREFIX) && !sealed.contains("secret"));
        assert_ne!(sealed, s.seal("sk-upstream-secret"), "a fresh nonce every time");
        assert_eq!(s.open(&sealed).unwrap(), "sk-upstream-secret");
        assert_eq!(s.open("plain").unwrap(), "plain");
        assert!(Sealer::new(&[8; 32]).open(&sealed).is_err());
        assert_eq!(s.open_sealed(&sealed).unwrap(), "sk-upstream-secret");
        assert!(s.open_sealed("plain").is_err(), "strict: an unsealed value is refused");
    }

    #[test]
    fn a_keyring_seals_with_its_first_key_and_opens_with_any() {
        let (old, new) = (Sealer::new(&[1; 32]), Sealer::new(&[2; 32]));
        let ring = Sealer::with_keys(vec![[2; 32], [1; 32]]).unwrap();
        let under_old = old.seal("a");
        assert_eq!(ring.open(&under_old).unwrap(), "a");
        let under_ring = ring.seal("b");
        assert_eq!(new.open(&under_ring).unwrap(), "b", "the first key seals");
        assert!(old.open(&under_ring).is_err());
        assert!(ring.primary_only().open(&under_old).is_err(), "only the first key");
        assert!(Sealer::with_keys(vec![]).is_err());
    }

    #[test]
    fn a_reloading_sealer_follows_its_source() {
        let file = Arc::new(Mutex::new(vec![[1u8; 32]]));
        let read = file.clone();
        let s = Sealer::reloading(move || Ok(read.lock().unwrap().clone())).unwrap();
        let copy = s.clone();
        let under_old = s.seal("a");
        // Another process rotates: new key first, the old one kept.
        *file.lock().unwrap() = vec![[2; 32], [1; 32]];
        let under_new = Sealer::new(&[2; 32]).seal("b");
        assert_eq!(copy.open(&under_new).unwrap(), "b", "an unknown key makes it reload");
        assert_eq!(s.keys(), vec![[2; 32], [1; 32]], "clones share the keyring");
        assert_eq!(Sealer::new(&[2; 32]).open(&s.seal("c")).unwrap(), "c", "now seals under the new key");
        assert_eq!(s.open(&under_old).unwrap(), "a");
        // The rotation finishes: the old key goes.
        *file.lock().unwrap() = vec![[2; 32]];
        assert!(s.reload().unwrap());
        assert!(!s.reload().unwrap(), "unchanged");
        assert!(s.open(&under_old).is_err());
        assert!(Sealer::new(&[3; 32]).reload().is_ok_and(|changed| !changed), "no source: nothing to reload");
    }
}
