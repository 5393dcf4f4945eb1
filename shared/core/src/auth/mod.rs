//! Accounts: settings, password hashing, session tokens, second factors and
//! the role table. Pure: callers pass time and randomness in.

pub mod jwt;
pub mod lockout;
pub mod oidc;
pub mod password;
pub mod roles;
pub mod secret;
mod settings;
pub mod totp;

pub use settings::*;
