//! The accounts port: what people sign in with. Credentials and settings
//! (one [`Account`] per user), sessions and the refresh tokens that rotate
//! them, single-use [`Ticket`]s (email verification, password reset,
//! invitations, OIDC sign-in state), linked OIDC identities, JWT signing keys
//! and the append-only audit log.
//!
//! Secrets never reach the store in the clear: refresh tokens, tickets and
//! recovery codes arrive hashed, TOTP secrets and signing keys sealed.

use std::future::Future;

use oblivious_core::model::Id;
use serde::{Deserialize, Serialize};

use crate::store::{NewUser, StoreResult};
use oblivious_core::model::User;

/// A person's credentials and settings; `user_id` is the gateway's user.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    pub user_id: Id,
    /// Lowercased; unique among accounts.
    pub email: String,
    pub email_verified: bool,
    /// Argon2id PHC string; `None` for an account that only signs in with a provider.
    pub password_hash: Option<String>,
    pub display_name: String,
    pub settings: Settings,
    /// Sealed TOTP secret (base32 text before sealing), once enrolment started.
    pub totp_secret: Option<String>,
    /// The second factor is required at sign-in (enrolment was confirmed).
    pub totp_enabled: bool,
    /// SHA-256 hex of each unused recovery code.
    pub recovery_codes: Vec<String>,
    /// Failed password sign-ins since the last success (drives the lockout).
    pub failed_signins: i64,
    /// Unix ms; sign-in is refused before it.
    pub locked_until: Option<i64>,
    /// Bumped by every update; [`Accounts::update_account`] compares it.
    pub version: i64,
    pub created_at: i64,
    pub updated_at: i64,
}

impl Account {
    /// A new account as a store first writes it (version 1, no second factor).
    pub fn new(user_id: Id, a: NewAccount, now_ms: i64) -> Account {
        Account {
            user_id,
            email: a.email.to_lowercase(),
            email_verified: a.email_verified,
            password_hash: a.password_hash,
            display_name: a.display_name,
            settings: Settings::default(),
            totp_secret: None,
            totp_enabled: false,
            recovery_codes: Vec::new(),
            failed_signins: 0,
            locked_until: None,
            version: 1,
            created_at: now_ms,
            updated_at: now_ms,
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Settings {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub language: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub theme: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_model: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewAccount {
    pub email: String,
    pub email_verified: bool,
    pub password_hash: Option<String>,
    pub display_name: String,
}

/// A signed-in device. Its current refresh token rotates on every use; every
/// token it ever had stays known, so a reused one is recognised (and revokes it).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    /// Random, unguessable (`ses_…`); the access token carries it.
    pub id: String,
    pub user_id: Id,
    /// SHA-256 hex of the current refresh token.
    pub refresh_hash: String,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub created_at: i64,
    pub last_seen_at: i64,
    /// Unix ms: the refresh token is refused from then on.
    pub expires_at: i64,
    pub revoked_at: Option<i64>,
}

impl Session {
    pub fn active(&self, now_ms: i64) -> bool {
        self.revoked_at.is_none() && now_ms < self.expires_at
    }
}

/// What a refresh token's hash leads to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RefreshLookup {
    /// No session ever had this token.
    Unknown,
    /// The session's current token.
    Current(Session),
    /// A token the session already rotated away from: a replay.
    Reused(Session),
}

/// What a ticket is for. Each purpose is consumed only as itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Purpose {
    VerifyEmail,
    ResetPassword,
    Invite,
    /// OIDC sign-in state: `data` holds the provider, nonce and PKCE verifier.
    OidcState,
    /// A password was right and the second factor is still owed.
    SecondFactor,
    /// The bootstrap root's first sign-in: `user_id` gets an account.
    Setup,
}

impl Purpose {
    pub fn as_str(self) -> &'static str {
        match self {
            Purpose::VerifyEmail => "verify_email",
            Purpose::ResetPassword => "reset_password",
            Purpose::Invite => "invite",
            Purpose::OidcState => "oidc_state",
            Purpose::SecondFactor => "second_factor",
            Purpose::Setup => "setup",
        }
    }

    pub fn parse(s: &str) -> Option<Purpose> {
        [
            Purpose::VerifyEmail,
            Purpose::ResetPassword,
            Purpose::Invite,
            Purpose::OidcState,
            Purpose::SecondFactor,
            Purpose::Setup,
        ]
        .into_iter()
        .find(|p| p.as_str() == s)
    }
}

/// A single-use, expiring token, stored by its hash.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ticket {
    /// SHA-256 hex of the token the user holds.
    pub hash: String,
    pub purpose: Purpose,
    /// The user it is for (the issuing admin for an invitation; 0 for OIDC state).
    pub user_id: Id,
    /// Purpose-specific JSON (the email it was sent to, OIDC nonce and verifier, …).
    pub data: String,
    pub created_at: i64,
    pub expires_at: i64,
}

/// An external identity linked to a user.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    /// The provider's name in config (`github`, `google`, …).
    pub provider: String,
    /// The provider's stable subject (`sub`, or GitHub's numeric id).
    pub subject: String,
    pub user_id: Id,
    pub email: Option<String>,
    pub created_at: i64,
}

/// A JWT signing key. Newest signs; every unexpired one verifies.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SigningKey {
    pub kid: String,
    /// Sealed key bytes (base64 before sealing).
    pub secret: String,
    pub created_at: i64,
    /// Unix ms after which no token it signed is still valid: stop verifying.
    pub expires_at: i64,
}

/// One audit row. Ids sort by time (the caller makes them from the clock), so
/// keyset pages run newest first by id.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub id: String,
    pub at: i64,
    /// `sign_in`, `sign_in_failed`, `key_create`, … (see the auth function).
    pub action: String,
    /// The user who acted; `None` for an anonymous or unknown caller.
    pub actor_id: Option<Id>,
    /// The user acted upon, when there is one.
    pub target_id: Option<Id>,
    /// What else was acted upon (`token:12`, `channel:3`, `price:gpt-4o`).
    pub subject: Option<String>,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub request_id: Option<String>,
    /// Small JSON object of details (never a secret).
    pub detail: String,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct AuditFilter {
    pub actor_id: Option<Id>,
    pub target_id: Option<Id>,
    /// Rows where the user is actor or target (a user's own security events).
    pub involving: Option<Id>,
    pub action: Option<String>,
    /// Unix ms, inclusive.
    pub since: Option<i64>,
    /// Unix ms, exclusive.
    pub until: Option<i64>,
    /// Keyset cursor: only ids strictly below it.
    pub before: Option<String>,
}

pub trait Accounts: Send + Sync + 'static {
    /// Creates the user and their account in one transaction, with a first
    /// session when given one (its `user_id` is set to the new user's):
    /// nothing is left half-made. `Conflict` when the email, the user name or
    /// the session id is taken.
    fn create_account(
        &self,
        user: NewUser,
        account: NewAccount,
        session: Option<Session>,
        now_ms: i64,
    ) -> impl Future<Output = StoreResult<(User, Account)>> + Send;
    /// Gives an existing user (the bootstrap root, a user an admin made) a
    /// sign-in account. `NotFound` without the user; `Conflict` when the user
    /// already has an account or the email is taken.
    fn attach_account(
        &self,
        user_id: Id,
        account: NewAccount,
        now_ms: i64,
    ) -> impl Future<Output = StoreResult<Account>> + Send;
    fn account(&self, user_id: Id) -> impl Future<Output = StoreResult<Option<Account>>> + Send;
    /// By email, compared lowercased.
    fn account_by_email(&self, email: &str) -> impl Future<Output = StoreResult<Option<Account>>> + Send;
    /// Writes `account` if the stored version is still `account.version`;
    /// returns it with the version bumped and `updated_at = now_ms`.
    /// `Conflict` when another update came first or the new email is taken;
    /// `NotFound` when there is no such account.
    fn update_account(&self, account: Account, now_ms: i64) -> impl Future<Output = StoreResult<Account>> + Send;
    /// Removes the account, its sessions and identities (the email is free
    /// again); the user row stays for the usage history. A no-op when there
    /// is no account.
    fn delete_account(&self, user_id: Id) -> impl Future<Output = StoreResult<()>> + Send;

    /// `Conflict` when the id exists.
    fn create_session(&self, session: Session) -> impl Future<Output = StoreResult<()>> + Send;
    fn session(&self, id: &str) -> impl Future<Output = StoreResult<Option<Session>>> + Send;
    /// Every session of the user that is active at `now_ms`, newest first
    /// (ties by id).
    fn sessions(&self, user_id: Id, now_ms: i64) -> impl Future<Output = StoreResult<Vec<Session>>> + Send;
    fn session_by_refresh(&self, refresh_hash: &str) -> impl Future<Output = StoreResult<RefreshLookup>> + Send;
    /// Swaps the current refresh token from `old_hash` to `new_hash` and marks
    /// the session seen (a `None` ip or user agent keeps the last one),
    /// atomically; `None` when `old_hash` is no longer current (another
    /// rotation won) or the session is revoked. Expiry is the caller's check.
    fn rotate_session(
        &self,
        id: &str,
        old_hash: &str,
        new_hash: &str,
        ip: Option<String>,
        user_agent: Option<String>,
        now_ms: i64,
    ) -> impl Future<Output = StoreResult<Option<Session>>> + Send;
    /// Revokes one session (no-op when already revoked); `NotFound` when unknown.
    fn revoke_session(&self, id: &str, now_ms: i64) -> impl Future<Output = StoreResult<()>> + Send;
    /// Revokes every active session of the user but `except`; how many.
    fn revoke_sessions(
        &self,
        user_id: Id,
        except: Option<&str>,
        now_ms: i64,
    ) -> impl Future<Output = StoreResult<u64>> + Send;

    /// `Conflict` when the hash exists.
    fn put_ticket(&self, ticket: Ticket) -> impl Future<Output = StoreResult<()>> + Send;
    /// Takes the ticket if it exists, has this purpose and has not expired;
    /// removes it either way when found (single use). Atomic: of concurrent
    /// consumers, one gets it.
    fn take_ticket(
        &self,
        hash: &str,
        purpose: Purpose,
        now_ms: i64,
    ) -> impl Future<Output = StoreResult<Option<Ticket>>> + Send;
    /// Drops the user's unused tickets of a purpose (a new reset link voids the old).
    fn drop_tickets(&self, user_id: Id, purpose: Purpose) -> impl Future<Output = StoreResult<u64>> + Send;

    /// `Conflict` when (provider, subject) is linked to anyone already.
    fn link_identity(&self, identity: Identity) -> impl Future<Output = StoreResult<()>> + Send;
    fn identity(&self, provider: &str, subject: &str) -> impl Future<Output = StoreResult<Option<Identity>>> + Send;
    fn identities(&self, user_id: Id) -> impl Future<Output = StoreResult<Vec<Identity>>> + Send;
    /// `NotFound` when the user has no identity at that provider.
    fn unlink_identity(&self, user_id: Id, provider: &str) -> impl Future<Output = StoreResult<()>> + Send;

    /// Every stored signing key, newest first.
    fn signing_keys(&self) -> impl Future<Output = StoreResult<Vec<SigningKey>>> + Send;
    /// `Conflict` when the kid exists.
    fn add_signing_key(&self, key: SigningKey) -> impl Future<Output = StoreResult<()>> + Send;
    /// Forgets keys that expired before `now_ms`; how many.
    fn prune_signing_keys(&self, now_ms: i64) -> impl Future<Output = StoreResult<u64>> + Send;

    /// Appends a row; idempotent by id.
    fn append_audit(&self, entry: AuditEntry) -> impl Future<Output = StoreResult<()>> + Send;
    /// Rows matching `filter`, newest (highest id) first, at most `limit`.
    fn audit(&self, filter: AuditFilter, limit: u64) -> impl Future<Output = StoreResult<Vec<AuditEntry>>> + Send;
}
