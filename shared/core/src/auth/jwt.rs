//! Access tokens: compact JWS with HS256 and a key id. The service that signs
//! is the one that verifies, so a shared-secret MAC is enough; keys rotate
//! (the newest signs, every unexpired one verifies) and live sealed in the store.

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

/// The `iss` of every access token.
pub const ISSUER: &str = "oblivious";

/// What an access token says.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    /// The user id, as text (JWT's convention).
    pub sub: String,
    /// The session it belongs to.
    pub sid: String,
    /// Unix seconds.
    pub iat: i64,
    pub exp: i64,
}

#[derive(Serialize, Deserialize)]
struct Header {
    alg: String,
    typ: String,
    kid: String,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum JwtError {
    #[error("not a JWT")]
    Malformed,
    #[error("unsupported algorithm")]
    Algorithm,
    #[error("signed by an unknown key")]
    UnknownKey,
    #[error("bad signature")]
    Signature,
    #[error("expired")]
    Expired,
    #[error("wrong issuer")]
    Issuer,
}

fn mac(key: &[u8], signing_input: &str) -> Vec<u8> {
    // HMAC takes keys of any length, so `new_from_slice` cannot fail.
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(key).unwrap_or_else(|_| unreachable!());
    m.update(signing_input.as_bytes());
    m.finalize().into_bytes().to_vec()
}

/// Signs `claims` with the key `kid`.
pub fn sign(claims: &Claims, kid: &str, key: &[u8]) -> String {
    let header = Header { alg: "HS256".into(), typ: "JWT".into(), kid: kid.into() };
    let enc = |v: &[u8]| B64.encode(v);
    let input = format!(
        "{}.{}",
        enc(&serde_json::to_vec(&header).unwrap_or_default()),
        enc(&serde_json::to_vec(claims).unwrap_or_default())
    );
    let sig = enc(&mac(key, &input));
    format!("{input}.{sig}")
}

/// The key id a token names, read before the key is known.
pub fn kid(token: &str) -> Result<String, JwtError> {
    let head = token.split('.').next().ok_or(JwtError::Malformed)?;
    let header: Header =
        serde_json::from_slice(&B64.decode(head).map_err(|_| JwtError::Malformed)?).map_err(|_| JwtError::Malformed)?;
    if header.alg != "HS256" {
        return Err(JwtError::Algorithm);
    }
    Ok(header.kid)
}

/// Verifies the signature with `key(kid)` and the expiry against `now_s`.
pub fn verify(token: &str, now_s: i64, key: impl Fn(&str) -> Option<Vec<u8>>) -> Result<Claims, JwtError> {
    let mut it = token.split('.');
    let (Some(head), Some(body), Some(sig), None) = (it.next(), it.next(), it.next(), it.next()) else {
        return Err(JwtError::Malformed);
    };
    let kid = kid(token)?;
    let secret = key(&kid).ok_or(JwtError::UnknownKey)?;
    let given = B64.decode(sig).map_err(|_| JwtError::Malformed)?;
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(&secret).map_err(|_| JwtError::Signature)?;
    m.update(head.as_bytes());
    m.update(b".");
    m.update(body.as_bytes());
    // `verify_slice` compares in constant time.
    m.verify_slice(&given).map_err(|_| JwtError::Signature)?;
    let claims: Claims =
        serde_json::from_slice(&B64.decode(body).map_err(|_| JwtError::Malformed)?).map_err(|_| JwtError::Malformed)?;
    if claims.iss != ISSUER {
        return Err(JwtError::Issuer);
    }
    if now_s >= claims.exp {
        return Err(JwtError::Expired);
    }
    Ok(claims)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(exp: i64) -> Claims {
        Claims { iss: ISSUER.into(), sub: "7".into(), sid: "ses_x".into(), iat: 100, exp }
    }

    #[test]
    fn signs_and_verifies_by_kid() {
        let keys = |kid: &str| match kid {
            "k1" => Some(b"one".to_vec()),
            "k2" => Some(b"two".to_vec()),
            _ => None,
        };
        let t = sign(&claims(200), "k2", b"two");
        assert_eq!(kid(&t).unwrap(), "k2");
        assert_eq!(verify(&t, 150, keys).unwrap(), claims(200));
        assert_eq!(verify(&t, 200, keys), Err(JwtError::Expired));
        assert_eq!(verify(&sign(&claims(200), "k3", b"x"), 150, keys), Err(JwtError::UnknownKey));
        assert_eq!(verify(&sign(&claims(200), "k1", b"two"), 150, keys), Err(JwtError::Signature));
        // A changed payload breaks the signature.
        let mut parts: Vec<&str> = t.split('.').collect();
        let forged = B64.encode(serde_json::to_vec(&Claims { sub: "1".into(), ..claims(200) }).unwrap());
        parts[1] = &forged;
        assert_eq!(verify(&parts.join("."), 150, keys), Err(JwtError::Signature));
        assert_eq!(verify("a.b", 150, keys), Err(JwtError::Malformed));
        let none = format!("{}.{}.", B64.encode(br#"{"alg":"none","typ":"JWT","kid":"k1"}"#), parts[1]);
        assert_eq!(verify(&none, 150, keys), Err(JwtError::Algorithm));
        let other = sign(&Claims { iss: "evil".into(), ..claims(200) }, "k1", b"one");
        assert_eq!(verify(&other, 150, keys), Err(JwtError::Issuer));
    }
}
