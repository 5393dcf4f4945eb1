//! Channel keys are encrypted at rest by every store: XChaCha20-Poly1305
//! under a 32-byte secret (`OBLIVIOUS_SECRET_KEY`, base64; the SQLite store
//! falls back to a `secret.key` file beside the database). Sealed values read
//! `enc:v1:<base64(nonce ‖ ciphertext)>`; unsealed values are read as they are.

use crate::StoreError;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use oblivious_core::model::ChannelSpec;

const PREFIX: &str = "enc:v1:";
pub const SECRET_ENV: &str = "OBLIVIOUS_SECRET_KEY";

#[derive(Clone)]
pub struct Sealer {
    cipher: XChaCha20Poly1305,
}

fn backend(msg: String) -> StoreError {
    StoreError::Backend(msg)
}

impl Sealer {
    pub fn new(secret: &[u8; 32]) -> Self {
        Sealer { cipher: XChaCha20Poly1305::new(secret.into()) }
    }

    /// The secret from `OBLIVIOUS_SECRET_KEY`, if set.
    pub fn from_env() -> Option<Result<Self, StoreError>> {
        let b64 = std::env::var(SECRET_ENV).ok()?;
        Some(Self::from_base64(&b64))
    }

    pub fn from_base64(b64: &str) -> Result<Self, StoreError> {
        let bytes = B64.decode(b64.trim()).map_err(|e| backend(format!("{SECRET_ENV}: {e}")))?;
        let secret: [u8; 32] =
            bytes.try_into().map_err(|_| backend(format!("{SECRET_ENV} must decode to 32 bytes")))?;
        Ok(Sealer::new(&secret))
    }

    pub fn seal(&self, plain: &str) -> String {
        let nonce_bytes: [u8; 24] = rand::random();
        let nonce = XNonce::from_slice(&nonce_bytes);
        // Encryption with a valid key and nonce cannot fail.
        let ct = self.cipher.encrypt(nonce, plain.as_bytes()).unwrap_or_default();
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
        let plain = self
            .cipher
            .decrypt(XNonce::from_slice(nonce), ct)
            .map_err(|_| backend("cannot decrypt a channel key: wrong secret.key or OBLIVIOUS_SECRET_KEY?".into()))?;
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
}
