//! Passwords: the policy a new one must meet, and Argon2id hashing.
//!
//! Parameters: m = 19 MiB, t = 2, p = 1 (OWASP's first recommended Argon2id
//! setting). They fit a Lambda (one vCPU share) and a paid Worker's CPU
//! budget; they live in each PHC string, so raising them later re-hashes a
//! user's password at their next sign-in ([`needs_rehash`]).

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};

pub const MEMORY_KIB: u32 = 19 * 1024;
pub const ITERATIONS: u32 = 2;
pub const LANES: u32 = 1;
/// Longer passwords are refused (hashing cost and request size stay bounded).
pub const MAX_LEN: usize = 256;

fn hasher() -> Argon2<'static> {
    let params = Params::new(MEMORY_KIB, ITERATIONS, LANES, None).unwrap_or_default();
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

/// Why a new password is refused; each is its own 400 `code`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Weak {
    TooShort(usize),
    TooLong,
    SameAsEmail,
    Common,
}

impl Weak {
    pub fn code(&self) -> &'static str {
        match self {
            Weak::TooShort(_) => "password_too_short",
            Weak::TooLong => "password_too_long",
            Weak::SameAsEmail => "password_same_as_email",
            Weak::Common => "password_too_common",
        }
    }

    pub fn message(&self) -> String {
        match self {
            Weak::TooShort(n) => format!("The password must be at least {n} characters long."),
            Weak::TooLong => format!("The password must be at most {MAX_LEN} characters long."),
            Weak::SameAsEmail => "The password must not be your email address.".into(),
            Weak::Common => "This password is too common; choose another.".into(),
        }
    }
}

/// The most used passwords of public breach lists that pass a length check.
const COMMON: &[&str] = &[
    "1234567890",
    "12345678910",
    "123456789a",
    "1q2w3e4r5t",
    "qwertyuiop",
    "password1",
    "password12",
    "password123",
    "password1234",
    "iloveyou12",
    "0987654321",
    "1111111111",
    "0000000000",
    "abcdefghij",
    "qwerty1234",
    "1qaz2wsx3edc",
    "zaq12wsxcde3",
    "letmein123",
    "welcome123",
    "administrator",
    "passw0rd123",
    "qwerty123456",
    "1234qwer",
    "asdfghjkl1",
    "changeme123",
];

/// Checks a new password against the rules (lengths in characters).
pub fn check(password: &str, email: &str, min_len: usize) -> Result<(), Weak> {
    let len = password.chars().count();
    if len < min_len {
        return Err(Weak::TooShort(min_len));
    }
    if len > MAX_LEN {
        return Err(Weak::TooLong);
    }
    let lower = password.to_lowercase();
    if !email.is_empty() && (lower == email.to_lowercase() || lower == local_part(email)) {
        return Err(Weak::SameAsEmail);
    }
    let distinct = lower.chars().collect::<std::collections::BTreeSet<_>>().len();
    if distinct < 3 || COMMON.contains(&lower.as_str()) {
        return Err(Weak::Common);
    }
    Ok(())
}

fn local_part(email: &str) -> String {
    email.split('@').next().unwrap_or_default().to_lowercase()
}

/// The PHC string of `password` under the current parameters; `salt` is 16
/// random bytes from the caller.
pub fn hash(password: &str, salt: [u8; 16]) -> Result<String, String> {
    let salt = SaltString::encode_b64(&salt).map_err(|e| e.to_string())?;
    hasher().hash_password(password.as_bytes(), &salt).map(|h| h.to_string()).map_err(|e| e.to_string())
}

/// Whether `password` matches `phc` (constant-time in the comparison).
/// A malformed PHC string never matches.
pub fn verify(password: &str, phc: &str) -> bool {
    match PasswordHash::new(phc) {
        Ok(parsed) => hasher().verify_password(password.as_bytes(), &parsed).is_ok(),
        Err(_) => false,
    }
}

/// A stored hash made with weaker parameters than today's.
pub fn needs_rehash(phc: &str) -> bool {
    let Ok(parsed) = PasswordHash::new(phc) else { return true };
    let Ok(params) = Params::try_from(&parsed) else { return true };
    parsed.algorithm.as_str() != "argon2id"
        || params.m_cost() < MEMORY_KIB
        || params.t_cost() < ITERATIONS
        || params.p_cost() < LANES
}

/// A hash of nothing anyone knows, verified against when the email is
/// unknown, so a sign-in takes as long whether or not the account exists.
pub const DECOY: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$b2JsaXZpb3VzLWRlY295$tC1/uW8pjZ9cHqQeLf6V0yQyR1b8mN7fZbE3m3lW5zM";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_verify_and_carry_their_parameters() {
        let phc = hash("correct horse battery", [7; 16]).unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
        assert!(verify("correct horse battery", &phc));
        assert!(!verify("correct horse batterz", &phc));
        assert!(!verify("x", "not a phc string"));
        assert!(!needs_rehash(&phc));
        let weak = "$argon2id$v=19$m=4096,t=1,p=1$c2FsdHNhbHQ$ZmFrZWhhc2g";
        assert!(needs_rehash(weak));
        assert!(!verify("anything", DECOY));
        assert!(PasswordHash::new(DECOY).is_ok(), "the decoy parses, so it costs a full hash");
    }

    #[test]
    fn policy_rules_each_have_a_code() {
        let e = "ada@example.com";
        assert_eq!(check("short", e, 10).unwrap_err().code(), "password_too_short");
        assert_eq!(check(&"a1b".repeat(100), e, 10).unwrap_err(), Weak::TooLong);
        assert_eq!(check("ADA@example.com", e, 10).unwrap_err(), Weak::SameAsEmail);
        assert_eq!(check("aaaaaaaaaaaa", e, 10).unwrap_err(), Weak::Common);
        assert_eq!(check("Password123", e, 10).unwrap_err(), Weak::Common);
        assert!(check("violet-harbor-42", e, 10).is_ok());
        // Characters, not bytes: ten CJK characters are ten.
        assert!(check("我的密码很长很安全吧", e, 10).is_ok());
    }
}
