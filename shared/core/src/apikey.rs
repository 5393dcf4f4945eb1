//! API keys: `sk-` + 48 random alphanumerics, stored as SHA-256 hex.

use sha2::{Digest, Sha256};

pub const PREFIX: &str = "sk-";
pub const RANDOM_LEN: usize = 48;
const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

/// Builds a key from caller-supplied random bytes (one byte per character).
pub fn generate(random: impl FnMut() -> u8) -> String {
    format!("{PREFIX}{}", random_alnum(RANDOM_LEN, random))
}

/// `len` alphanumerics; rejection sampling keeps every character uniform.
pub fn random_alnum(len: usize, mut random: impl FnMut() -> u8) -> String {
    let mut out = String::with_capacity(len);
    let limit = (256 / ALPHABET.len() * ALPHABET.len()) as u8; // 248
    while out.len() < len {
        let b = random();
        if b < limit {
            out.push(ALPHABET[b as usize % ALPHABET.len()] as char);
        }
    }
    out
}

pub fn hash(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// `sk-abcd…wxyz`: recognisable, useless to an attacker.
pub fn hint(key: &str) -> String {
    let n = key.len();
    if n < 12 {
        return "sk-…".into();
    }
    format!("{}…{}", &key[..7], &key[n - 4..])
}

/// Finds the caller's key in the forms the three big SDKs send it:
/// `Authorization: Bearer`, `x-api-key`, `x-goog-api-key`, or `?key=`.
pub fn extract<'a>(headers: &'a http::HeaderMap, query: Option<&'a str>) -> Option<&'a str> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim);
    if let Some(auth) = header("authorization") {
        let mut parts = auth.splitn(2, ' ');
        if let (Some(scheme), Some(value)) = (parts.next(), parts.next()) {
            if scheme.eq_ignore_ascii_case("bearer") && !value.trim().is_empty() {
                return Some(value.trim());
            }
        }
    }
    if let Some(k) = header("x-api-key").filter(|k| !k.is_empty()) {
        return Some(k);
    }
    if let Some(k) = header("x-goog-api-key").filter(|k| !k.is_empty()) {
        return Some(k);
    }
    query?
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(k, _)| *k == "key")
        .map(|(_, v)| v)
        .filter(|v| !v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_have_the_shape() {
        let mut n = 0u8;
        let key = generate(|| {
            n = n.wrapping_add(37);
            n
        });
        assert!(key.starts_with("sk-"));
        assert_eq!(key.len(), 51);
        assert!(key[3..].bytes().all(|b| b.is_ascii_alphanumeric()));
        assert_eq!(hash(&key).len(), 64);
        assert_eq!(hint(&key).chars().count(), 12);
    }

    #[test]
    fn extracts_each_form() {
        let mut h = http::HeaderMap::new();
        assert_eq!(extract(&h, Some("a=1&key=sk-q")), Some("sk-q"));
        h.insert("x-goog-api-key", "sk-g".parse().unwrap());
        assert_eq!(extract(&h, None), Some("sk-g"));
        h.insert("x-api-key", "sk-x".parse().unwrap());
        assert_eq!(extract(&h, None), Some("sk-x"));
        h.insert("authorization", "Bearer sk-b".parse().unwrap());
        assert_eq!(extract(&h, None), Some("sk-b"));
        h.insert("authorization", "Basic abc".parse().unwrap());
        assert_eq!(extract(&h, None), Some("sk-x"));
    }
}
