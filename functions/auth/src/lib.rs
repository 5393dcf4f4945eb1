//! The auth function: people's accounts, as a router over the ports.
//!
//! Sign-up and sign-in with email and password (Argon2id), email
//! verification and password reset through the `Mailer` port, sessions (a
//! short-lived HS256 access JWT and a rotating refresh token whose reuse
//! revokes the session), TOTP second factor with recovery codes, OpenID
//! Connect and GitHub sign-in, the signed-in user's own profile, sessions and
//! security events, and the admin's audit log. Who may call which route is
//! the relay's `gate` over the role table; every handler here starts after it.

mod admin;
mod mail;
mod me;
mod oidc;
mod password;
mod reply;
mod session;
mod signin;
mod signup;
mod throttle;
mod twofa;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use axum::routing::{delete, get, post};
use axum::Router;
use oblivious_core::auth::AuthSettings;
use oblivious_ports::{Ids, Platform};
use oblivious_relay::Relay;

pub use session::{ACCESS_COOKIE, REFRESH_COOKIE};

/// The function's state: the relay (ports and caches) and the `[auth]` settings.
pub struct Auth<P: Platform> {
    pub relay: Arc<Relay<P>>,
    settings: RwLock<Arc<AuthSettings>>,
    /// Whether `[mail]` is set (answers say whether a link was sent).
    mail_on: AtomicBool,
    signer: session::Signer,
    oidc: oidc::ProviderCache,
}

impl<P: Platform> Auth<P> {
    pub fn new(relay: Arc<Relay<P>>, settings: AuthSettings, mail_on: bool) -> Arc<Self> {
        let settings = RwLock::new(Arc::new(settings));
        Arc::new(Auth {
            relay,
            settings,
            mail_on: AtomicBool::new(mail_on),
            signer: session::Signer::default(),
            oidc: oidc::ProviderCache::default(),
        })
    }

    fn mail_enabled(&self) -> bool {
        self.mail_on.load(Ordering::Relaxed)
    }

    pub fn settings(&self) -> Arc<AuthSettings> {
        self.settings.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Live reload: new settings apply to the next request.
    pub fn set_settings(&self, s: AuthSettings, mail_on: bool) {
        *self.settings.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(s);
        self.mail_on.store(mail_on, Ordering::Relaxed);
    }

    fn random<const N: usize>(&self) -> [u8; N] {
        let ids = &self.relay.ports.ids;
        let mut out = [0u8; N];
        for chunk in out.chunks_mut(8) {
            let r = ids.random_u64().to_le_bytes();
            chunk.copy_from_slice(&r[..chunk.len()]);
        }
        out
    }
}

pub fn router<P: Platform>(auth: Arc<Auth<P>>) -> Router {
    let gate = axum::middleware::from_fn_with_state(auth.relay.clone(), oblivious_relay::gate::<P>);
    Router::new()
        .route("/api/auth/options", get(signup::options::<P>))
        .route("/api/auth/signup", post(signup::signup::<P>))
        .route("/api/auth/verify", post(signup::verify::<P>))
        .route("/api/auth/setup", post(signup::setup::<P>))
        .route("/api/auth/signin", post(signin::signin::<P>))
        .route("/api/auth/signin/second-factor", post(signin::second_factor::<P>))
        .route("/api/auth/signin/enrol", post(signin::enrol::<P>))
        .route("/api/auth/refresh", post(session::refresh::<P>))
        .route("/api/auth/signout", post(session::signout::<P>))
        .route("/api/auth/oidc/{name}/start", get(oidc::start::<P>))
        .route("/api/auth/oidc/{name}/callback", get(oidc::callback::<P>))
        .route("/api/me/identities/{name}", post(oidc::link::<P>).delete(oidc::unlink::<P>))
        .route("/api/auth/password/forgot", post(password::forgot::<P>))
        .route("/api/auth/password/reset", post(password::reset::<P>))
        .route("/api/me", get(me::get::<P>).patch(me::patch::<P>).delete(me::delete::<P>))
        .route("/api/me/verify", post(signup::resend::<P>))
        .route("/api/me/password", post(password::change::<P>))
        .route("/api/me/sessions", get(me::sessions::<P>))
        .route("/api/me/sessions/others", delete(me::revoke_others::<P>))
        .route("/api/me/sessions/{id}", delete(me::revoke::<P>))
        .route("/api/me/2fa", get(twofa::status::<P>).delete(twofa::disable::<P>))
        .route("/api/me/2fa/enrol", post(twofa::enrol::<P>))
        .route("/api/me/2fa/confirm", post(twofa::confirm::<P>))
        .route("/api/me/2fa/recovery-codes", post(twofa::regenerate::<P>))
        .route("/api/me/audit", get(me::audit::<P>))
        .route("/api/me/ledger", get(me::ledger::<P>))
        .route("/api/admin/audit", get(admin::audit::<P>))
        .route("/api/admin/invites", post(admin::invites::<P>))
        .route("/api/admin/users/{id}/2fa-reset", post(admin::reset_2fa::<P>))
        .route("/api/admin/users/{id}/sessions", delete(admin::revoke_sessions::<P>))
        .layer(gate)
        .with_state(auth)
}

impl<P: Platform> Auth<P> {
    /// Stores a single-use ticket and returns the token its holder gets.
    async fn ticket(
        &self,
        purpose: oblivious_ports::Purpose,
        user_id: oblivious_core::model::Id,
        data: serde_json::Value,
        ttl_ms: i64,
    ) -> reply::Result<String> {
        use oblivious_ports::{Accounts, Clock};
        let token = oblivious_core::auth::secret::token("otk_", self.random());
        let now = self.relay.ports.clock.now_ms();
        let ticket = oblivious_ports::Ticket {
            hash: oblivious_core::auth::secret::hash(&token),
            purpose,
            user_id,
            data: data.to_string(),
            created_at: now,
            expires_at: now + ttl_ms,
        };
        self.relay.ports.store.put_ticket(ticket).await?;
        Ok(token)
    }

    /// Takes a ticket by the token its holder sent (`None`: unknown, used or expired).
    async fn take(
        &self,
        purpose: oblivious_ports::Purpose,
        token: &str,
    ) -> reply::Result<Option<oblivious_ports::Ticket>> {
        use oblivious_ports::{Accounts, Clock};
        let now = self.relay.ports.clock.now_ms();
        let hash = oblivious_core::auth::secret::hash(token.trim());
        Ok(self.relay.ports.store.take_ticket(&hash, purpose, now).await?)
    }

    /// Writes `account` with `change` applied, re-reading and re-applying
    /// when a concurrent update won (compare-and-set on the version).
    async fn update_account(
        &self,
        user_id: oblivious_core::model::Id,
        mut change: impl FnMut(&mut oblivious_ports::Account),
    ) -> reply::Result<oblivious_ports::Account> {
        use oblivious_ports::{Accounts, Clock, StoreError};
        let store = &self.relay.ports.store;
        for _ in 0..5 {
            let mut account = store
                .account(user_id)
                .await?
                .ok_or_else(|| oblivious_core::ApiError::not_found("not_found", "This account does not exist."))?;
            change(&mut account);
            match store.update_account(account, self.relay.ports.clock.now_ms()).await {
                Err(StoreError::Conflict(_)) => continue,
                other => return Ok(other?),
            }
        }
        Err(reply::conflict("busy", "The account is being changed by another request; try again.").into())
    }
}
