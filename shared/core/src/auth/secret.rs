//! Opaque secrets handed to people (refresh tokens, links, codes): random,
//! shown once, stored as SHA-256 hex only.

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use sha2::{Digest, Sha256};

/// `prefix` + 32 random bytes in base64url (256 bits).
pub fn token(prefix: &str, random: [u8; 32]) -> String {
    format!("{prefix}{}", B64.encode(random))
}

/// The stored form of a secret.
pub fn hash(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// Constant-time equality (for codes compared in memory).
pub fn equal(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_hash_and_compare() {
        let t = token("ort_", [1; 32]);
        assert_eq!(t.len(), 4 + 43);
        assert_eq!(hash(&t).len(), 64);
        assert_ne!(hash(&t), hash(&token("ort_", [2; 32])));
        assert!(equal(b"abc", b"abc") && !equal(b"abc", b"abd") && !equal(b"abc", b"ab"));
    }
}
