//! Sign-up (open, by invitation, or closed), email verification and its
//! resending, and the options a sign-in page shows.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::response::Response;
use http::request::Parts;
use oblivious_core::auth::{password, Registration};
use oblivious_core::model::Role;
use oblivious_core::ApiError;
use oblivious_ports::{Accounts, NewAccount, NewUser, Platform, Purpose, StoreError, Tasks};
use oblivious_relay::{Audit, Origin};
use serde::Deserialize;
use serde_json::json;

use crate::reply::{self, conflict, forbidden, respond, Reply, Result};
use crate::session::Delivery;
use crate::{mail, Auth};

/// `GET /api/auth/options`: what a sign-in page needs to draw itself.
pub async fn options<P: Platform>(State(a): State<Arc<Auth<P>>>, parts: Parts) -> Response {
    let s = a.settings();
    let providers: Vec<_> =
        s.oidc.iter().map(|p| json!({ "name": p.name, "label": p.label(), "kind": p.kind_name() })).collect();
    let body = json!({
        "registration": s.registration_name(),
        "min_password_length": s.min_password_length,
        "require_verified_email": s.require_verified_email,
        "providers": providers,
    });
    respond(&parts, Ok(Reply::ok(body)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SignUp {
    email: String,
    password: String,
    #[serde(default)]
    display_name: Option<String>,
    #[serde(default)]
    invite_code: Option<String>,
    #[serde(default)]
    delivery: Delivery,
}

/// A lowercased address that looks deliverable (one `@`, a dotted domain).
pub(crate) fn email(raw: &str) -> Result<String> {
    let e = raw.trim().to_lowercase();
    let ok = e.len() <= 254
        && !e.chars().any(|c| c.is_whitespace() || c.is_control())
        && e.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty()
                && !domain.contains('@')
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
        });
    if ok {
        Ok(e)
    } else {
        Err(ApiError::invalid("invalid_email", "This is not an email address.").with_param("email").into())
    }
}

pub(crate) fn display_name(raw: Option<&str>, email: &str) -> Result<String> {
    let name = raw.map(str::trim).filter(|n| !n.is_empty()).unwrap_or_else(|| email.split('@').next().unwrap_or(email));
    if name.chars().count() > 64 || name.chars().any(char::is_control) {
        return Err(ApiError::invalid("invalid_display_name", "A display name is at most 64 characters.")
            .with_param("display_name")
            .into());
    }
    Ok(name.to_string())
}

/// Refuses a new password that breaks a rule (400 with the rule's code).
pub(crate) fn check_password(pw: &str, email: &str, min_len: usize) -> Result<()> {
    password::check(pw, email, min_len)
        .map_err(|w| ApiError::invalid(w.code(), w.message()).with_param("password").into())
}

impl<P: Platform> Auth<P> {
    pub(crate) async fn hash_password(&self, pw: &str) -> Result<String> {
        let (pw, salt) = (pw.to_string(), self.random::<16>());
        let hashed = self.relay.ports.tasks.cpu(move || password::hash(&pw, salt)).await;
        Ok(hashed.map_err(|e| ApiError::internal(format!("could not hash the password: {e}")))?)
    }

    /// Credits the configured starting balance through the ledger (so the
    /// balance has a history from its first unit); the user as it is then.
    pub(crate) async fn credit_starting_balance(&self, user_id: i64) -> Option<oblivious_core::model::User> {
        let units = self.settings().starting_balance;
        if units <= 0 {
            return None;
        }
        let now = oblivious_ports::Clock::now_ms(&self.relay.ports.clock);
        let store = &self.relay.ports.store;
        match oblivious_ports::Ledger::adjust_balance(
            store,
            user_id,
            units,
            "topup",
            "sign-up",
            "starting balance",
            now,
        )
        .await
        {
            Ok(u) => Some(u),
            Err(e) => {
                tracing::error!(user = user_id, "starting balance not credited: {e}");
                None
            }
        }
    }

    /// Mails a fresh verification link, voiding earlier ones.
    pub(crate) async fn send_verification(&self, user_id: i64, email: &str) -> Result<()> {
        let s = self.settings();
        self.relay.ports.store.drop_tickets(user_id, Purpose::VerifyEmail).await?;
        let ttl = s.email_link_minutes as i64 * 60_000;
        let token = self.ticket(Purpose::VerifyEmail, user_id, json!({ "email": email }), ttl).await?;
        self.send(mail::verify_email(email, &self.link("verify-email", &token), s.email_link_minutes));
        Ok(())
    }
}

/// `POST /api/auth/signup`: creates the account and its first session in one
/// transaction, and mails a verification link.
pub async fn signup<P: Platform>(State(a): State<Arc<Auth<P>>>, parts: Parts, raw: Body) -> Response {
    let reply = async {
        let s = a.settings();
        if s.registration == Registration::Closed {
            return Err(forbidden("registration_closed", "Sign-up is closed here; ask an admin for an account.").into());
        }
        a.throttle_ip(&parts, "signup").await?;
        let req: SignUp = reply::json(&parts, raw).await?;
        let email = email(&req.email)?;
        let name = display_name(req.display_name.as_deref(), &email)?;
        check_password(&req.password, &email, s.min_password_length)?;
        let store = &a.relay.ports.store;
        if store.account_by_email(&email).await?.is_some() {
            return Err(taken());
        }
        if s.registration == Registration::Invite {
            let code = req.invite_code.as_deref().unwrap_or_default();
            if code.is_empty() || a.take(Purpose::Invite, code).await?.is_none() {
                return Err(ApiError::invalid("invalid_invite", "Sign-up here needs a valid invitation code.")
                    .with_param("invite_code")
                    .into());
            }
        }
        let hash = a.hash_password(&req.password).await?;
        let origin = Origin::of(&parts);
        let (session, refresh) = a.new_session(0, &origin);
        let user = NewUser {
            name: email.clone(),
            role: Role::User,
            group: s.default_group.clone(),
            quota: 0,
            unlimited: false,
        };
        let account =
            NewAccount { email: email.clone(), email_verified: false, password_hash: Some(hash), display_name: name };
        let now = oblivious_ports::Clock::now_ms(&a.relay.ports.clock);
        let (mut user, _) = match store.create_account(user, account, Some(session.clone()), now).await {
            Err(StoreError::Conflict(_)) => return Err(taken()),
            other => other?,
        };
        let session = oblivious_ports::Session { user_id: user.id, ..session };
        if let Some(u) = a.credit_starting_balance(user.id).await {
            user = u;
        }
        a.relay.audit_from(origin.clone(), Audit::new("sign_up", Some(user.id), Some(user.id))).await;
        let sent = a.send_verification(user.id, &email).await.is_ok();
        let extra = json!({ "verification_sent": sent && a.mail_enabled() });
        Ok(a.issue(&user, &session, &refresh, req.delivery, extra).await?.status(201))
    };
    respond(&parts, reply.await)
}

fn taken() -> reply::Fail {
    conflict("email_taken", "An account with this email already exists; sign in or reset the password.").into()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Verify {
    token: String,
}

/// `POST /api/auth/verify`: the link from the verification mail.
pub async fn verify<P: Platform>(State(a): State<Arc<Auth<P>>>, parts: Parts, raw: Body) -> Response {
    let reply = async {
        a.throttle_ip(&parts, "verify").await?;
        let req: Verify = reply::json(&parts, raw).await?;
        let bad = || ApiError::invalid("invalid_token", "This link is invalid, used or expired; ask for a new one.");
        let ticket = a.take(Purpose::VerifyEmail, &req.token).await?.ok_or_else(bad)?;
        let sent_to: serde_json::Value = serde_json::from_str(&ticket.data).unwrap_or_default();
        let sent_to = sent_to["email"].as_str().unwrap_or_default().to_string();
        // The address must still be the one the link was sent to.
        let account = a.update_account(ticket.user_id, |acct| {
            if acct.email == sent_to {
                acct.email_verified = true;
            }
        });
        let account = account.await?;
        if !account.email_verified {
            return Err(bad().into());
        }
        a.relay.audit(&parts, Audit::new("email_verified", Some(ticket.user_id), Some(ticket.user_id))).await;
        Ok(Reply::ok(json!({ "verified": true, "email": account.email })))
    };
    respond(&parts, reply.await)
}

/// `POST /api/me/verify`: mails a new verification link.
pub async fn resend<P: Platform>(State(a): State<Arc<Auth<P>>>, parts: Parts) -> Response {
    let reply = async {
        let me = a.relay.caller(&parts).await?;
        a.throttle_ip(&parts, "resend").await?;
        let account = a.relay.ports.store.account(me.user.id).await?;
        let account = account.ok_or_else(|| ApiError::not_found("no_account", "This user has no sign-in account."))?;
        if account.email_verified {
            return Err(conflict("already_verified", "This address is already verified.").into());
        }
        a.send_verification(me.user.id, &account.email).await?;
        Ok(Reply::ok(json!({ "sent": a.mail_enabled() })).status(202))
    };
    respond(&parts, reply.await)
}

/// How long a setup link printed at first start stays good.
const SETUP_LINK_MS: i64 = 7 * 86_400_000;

impl<P: Platform> Auth<P> {
    /// A link that lets `user_id` (the bootstrap root) choose an email and
    /// password once; the shells print it at first start, the CLI on demand.
    pub async fn setup_link(&self, user_id: i64) -> std::result::Result<String, String> {
        let store = &self.relay.ports.store;
        if store.account(user_id).await.map_err(|e| e.to_string())?.is_some() {
            return Err("this user can already sign in (use `oblivious user passwd`)".into());
        }
        let _ = store.drop_tickets(user_id, Purpose::Setup).await;
        let token = self.ticket(Purpose::Setup, user_id, json!({}), SETUP_LINK_MS).await.map_err(|e| e.0.message)?;
        Ok(self.link("setup", &token))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Setup {
    token: String,
    email: String,
    password: String,
    #[serde(default)]
    display_name: Option<String>,
    #[serde(default)]
    delivery: Delivery,
}

/// `POST /api/auth/setup {token, email, password}`: the setup link's user
/// (root, on a new deployment) gets their sign-in account and a session.
pub async fn setup<P: Platform>(State(a): State<Arc<Auth<P>>>, parts: Parts, raw: Body) -> Response {
    let reply = async {
        a.throttle_ip(&parts, "signup").await?;
        let req: Setup = reply::json(&parts, raw).await?;
        let email = email(&req.email)?;
        let name = display_name(req.display_name.as_deref(), &email)?;
        check_password(&req.password, &email, a.settings().min_password_length)?;
        let store = &a.relay.ports.store;
        if store.account_by_email(&email).await?.is_some() {
            return Err(taken());
        }
        let bad = || ApiError::invalid("invalid_token", "This setup link is invalid, used or expired.");
        let ticket = a.take(Purpose::Setup, &req.token).await?.ok_or_else(bad)?;
        let hash = a.hash_password(&req.password).await?;
        let account =
            NewAccount { email: email.clone(), email_verified: false, password_hash: Some(hash), display_name: name };
        let now = oblivious_ports::Clock::now_ms(&a.relay.ports.clock);
        match store.attach_account(ticket.user_id, account, now).await {
            Err(StoreError::Conflict(_)) => return Err(taken()),
            other => other?,
        };
        let user = oblivious_ports::Store::user(store, ticket.user_id).await?.ok_or_else(bad)?;
        a.relay.audit(&parts, Audit::new("account_setup", Some(user.id), Some(user.id))).await;
        let _ = a.send_verification(user.id, &email).await;
        a.start_session(&parts, &user, req.delivery, "setup", json!({})).await
    };
    respond(&parts, reply.await)
}
