//! Second factor: TOTP (RFC 6238: SHA-1, six digits, 30-second steps, as
//! every authenticator app expects) and single-use recovery codes.

use totp_rs::{Algorithm, Secret, TOTP};

/// How many recovery codes an enrolment hands out.
pub const RECOVERY_CODES: usize = 10;
const STEP: u64 = 30;

fn totp(secret_b32: &str, account: &str, issuer: &str) -> Option<TOTP> {
    let bytes = Secret::Encoded(secret_b32.to_string()).to_bytes().ok()?;
    // `new_unchecked` allows any account name (emails have '@'; ':' is escaped in the URI).
    Some(TOTP::new_unchecked(Algorithm::SHA1, 6, 1, STEP, bytes, Some(issuer.into()), account.replace(':', "")))
}

/// A new secret (base32, as apps type it) from 20 caller-given random bytes.
pub fn new_secret(random: [u8; 20]) -> String {
    Secret::Raw(random.to_vec()).to_encoded().to_string()
}

/// The `otpauth://totp/…` URI an app scans (as a QR code) to enrol.
pub fn uri(secret_b32: &str, account: &str, issuer: &str) -> Option<String> {
    totp(secret_b32, account, issuer).map(|t| t.get_url())
}

/// The time step `code` is valid for at `now_s` (one step of clock skew
/// either way), or `None`. Callers refuse a step already used (replay).
pub fn check(secret_b32: &str, code: &str, now_s: i64) -> Option<u64> {
    let code = code.trim().replace(' ', "");
    if code.len() != 6 || !code.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let t = totp(secret_b32, "x", "x")?;
    let now = u64::try_from(now_s).ok()?;
    let step = now / STEP;
    [step.saturating_sub(1), step, step + 1].into_iter().find(|s| {
        let expected = t.generate(s * STEP);
        crate::auth::secret::equal(expected.as_bytes(), code.as_bytes())
    })
}

/// The code for `now_s` (tests and the CLI's self-check).
pub fn code_at(secret_b32: &str, now_s: i64) -> Option<String> {
    totp(secret_b32, "x", "x").map(|t| t.generate(now_s.max(0) as u64))
}

/// Ten codes like `k7qd-3mzp-wx`, from caller-given randomness.
pub fn recovery_codes(mut random: impl FnMut() -> u8) -> Vec<String> {
    const ALPHABET: &[u8] = b"abcdefghjkmnpqrstuvwxyz23456789";
    (0..RECOVERY_CODES)
        .map(|_| {
            let c: String = (0..10).map(|_| ALPHABET[random() as usize % ALPHABET.len()] as char).collect();
            format!("{}-{}-{}", &c[..4], &c[4..8], &c[8..])
        })
        .collect()
}

/// How a recovery code is compared: lowercased, without spaces or dashes.
pub fn normalize_recovery(code: &str) -> String {
    code.chars().filter(|c| c.is_ascii_alphanumeric()).map(|c| c.to_ascii_lowercase()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc6238_vector_and_skew() {
        // RFC 6238's SHA-1 secret "12345678901234567890"; at 59 s the 8-digit
        // code is 94287082, so the 6-digit one is its last six digits.
        let secret = new_secret(*b"12345678901234567890");
        assert_eq!(secret, "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ");
        assert_eq!(code_at(&secret, 59).unwrap(), "287082");
        assert_eq!(check(&secret, "287082", 59), Some(1));
        assert_eq!(check(&secret, "287 082", 75), Some(1), "a step late is fine");
        assert_eq!(check(&secret, "287082", 125), None, "two steps late is not");
        assert_eq!(check(&secret, "28708", 59), None);
        assert_eq!(check(&secret, "abcdef", 59), None);
        let uri = uri(&secret, "ada@example.com", "Oblivious").unwrap();
        assert!(uri.starts_with("otpauth://totp/Oblivious:ada%40example.com?secret=GEZDG"), "{uri}");
        assert!(uri.contains("issuer=Oblivious"), "{uri}");
    }

    #[test]
    fn recovery_codes_are_distinct_and_normalize() {
        let mut n = 0u8;
        let codes = recovery_codes(|| {
            n = n.wrapping_mul(31).wrapping_add(17);
            n
        });
        assert_eq!(codes.len(), 10);
        assert!(codes.iter().all(|c| c.len() == 12 && c.matches('-').count() == 2));
        assert_eq!(normalize_recovery(" K7QD-3mzp-WX "), "k7qd3mzpwx");
    }
}
