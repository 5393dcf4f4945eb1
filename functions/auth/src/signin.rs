//! Password sign-in with throttling and a growing lockout, then the second
//! factor (a TOTP code or a recovery code) when the account has one, or its
//! enrolment when the user's role requires one.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::response::Response;
use http::request::Parts;
use oblivious_core::auth::{lockout, password, secret, totp};
use oblivious_core::model::{User, UserStatus};
use oblivious_core::ApiError;
use oblivious_ports::{Account, Accounts, Clock, Hot, Platform, Purpose, Store, Tasks};
use oblivious_relay::Audit;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::reply::{self, forbidden, respond, throttled, unauthorized, Reply, Result};
use crate::session::Delivery;
use crate::Auth;

/// A password was right; the second factor is owed within this long.
const SECOND_FACTOR_MS: i64 = 5 * 60_000;
/// Wrong codes allowed on one password sign-in before it starts over.
const CODE_ATTEMPTS: i64 = 5;
pub(crate) const ISSUER: &str = "Oblivious";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SignIn {
    email: String,
    password: String,
    #[serde(default)]
    delivery: Delivery,
}

fn bad_credentials() -> reply::Fail {
    unauthorized("invalid_credentials", "Incorrect email or password.").into()
}

/// `POST /api/auth/signin`.
pub async fn signin<P: Platform>(State(a): State<Arc<Auth<P>>>, parts: Parts, raw: Body) -> Response {
    let reply = async {
        a.throttle_ip(&parts, "signin").await?;
        let req: SignIn = reply::json(&parts, raw).await?;
        let email = req.email.trim().to_lowercase();
        a.throttle_account(&email).await?;
        let store = &a.relay.ports.store;
        let now = a.relay.ports.clock.now_ms();
        let account = store.account_by_email(&email).await?;
        let phc = account.as_ref().and_then(|acct| acct.password_hash.clone());
        if let Some(until) = account.as_ref().and_then(|acct| acct.locked_until).filter(|u| *u > now) {
            return Err(throttled("account_locked", ((until - now) as u64).div_ceil(1000)));
        }
        // Unknown addresses and provider-only accounts cost a full hash too.
        let (pw, hash) = (req.password.clone(), phc.clone().unwrap_or_else(|| password::DECOY.into()));
        let ok = a.relay.ports.tasks.cpu(move || password::verify(&pw, &hash)).await && phc.is_some();
        let Some(account) = account.filter(|_| ok) else {
            if let Some(acct) = store.account_by_email(&email).await? {
                a.failed(&parts, acct.user_id).await?;
            } else {
                let event = Audit::new("sign_in_failed", None, None).detail(json!({ "reason": "unknown_email" }));
                a.relay.audit(&parts, event).await;
            }
            return Err(bad_credentials());
        };
        let user = store.user(account.user_id).await?.ok_or_else(bad_credentials)?;
        if user.status != UserStatus::Enabled {
            return Err(forbidden("user_disabled", "This account is disabled.").into());
        }
        if a.settings().require_verified_email && !account.email_verified {
            return Err(
                forbidden("email_not_verified", "Verify your email address first (see the mail we sent).").into()
            );
        }
        let rehash = phc.as_deref().is_some_and(password::needs_rehash);
        let new_hash = if rehash { Some(a.hash_password(&req.password).await?) } else { None };
        let account = a
            .update_account(user.id, |acct| {
                acct.failed_signins = 0;
                acct.locked_until = None;
                if let Some(h) = &new_hash {
                    acct.password_hash = Some(h.clone());
                }
            })
            .await?;
        a.after_password(&parts, &user, &account, req.delivery).await
    };
    respond(&parts, reply.await)
}

impl<P: Platform> Auth<P> {
    /// One more failed attempt at `user_id`: counted, and locked past the threshold.
    async fn failed(&self, parts: &Parts, user_id: i64) -> Result<()> {
        let s = self.settings();
        let now = self.relay.ports.clock.now_ms();
        let account = self
            .update_account(user_id, |acct| {
                acct.failed_signins += 1;
                let lock = lockout::lock_seconds(acct.failed_signins, s.lockout_threshold, s.lockout_seconds);
                acct.locked_until = lock.map(|secs| now + secs as i64 * 1000);
            })
            .await?;
        let detail = json!({ "failures": account.failed_signins, "locked_until": account.locked_until });
        self.relay.audit(parts, Audit::new("sign_in_failed", None, Some(user_id)).detail(detail)).await;
        Ok(())
    }

    /// The password was right: a session, or a ticket for the second factor.
    async fn after_password(&self, parts: &Parts, user: &User, acct: &Account, delivery: Delivery) -> Result<Reply> {
        let required = self.settings().require_2fa.contains(&user.role);
        if !acct.totp_enabled && !required {
            return self.start_session(parts, user, delivery, "password", json!({})).await;
        }
        let enrol = !acct.totp_enabled;
        let data = json!({ "attempts": 0, "enrol": enrol, "delivery": delivery == Delivery::Body });
        let ticket = self.ticket(Purpose::SecondFactor, user.id, data, SECOND_FACTOR_MS).await?;
        Ok(Reply::ok(json!({ "second_factor_required": true, "enrolment_required": enrol, "ticket": ticket })))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Ticketed {
    ticket: String,
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    recovery_code: Option<String>,
}

fn expired() -> reply::Fail {
    unauthorized("invalid_ticket", "This sign-in has expired; enter your password again.").into()
}

/// `POST /api/auth/signin/enrol`: a user whose role requires a second
/// factor sets one up in the middle of signing in.
pub async fn enrol<P: Platform>(State(a): State<Arc<Auth<P>>>, parts: Parts, raw: Body) -> Response {
    let reply = async {
        a.throttle_ip(&parts, "signin").await?;
        let req: Ticketed = reply::json(&parts, raw).await?;
        let ticket = a.take(Purpose::SecondFactor, &req.ticket).await?.ok_or_else(expired)?;
        let data: Value = serde_json::from_str(&ticket.data).unwrap_or_default();
        if data["enrol"] != json!(true) {
            return Err(expired());
        }
        let (secret, uri) = a.begin_totp(ticket.user_id).await?;
        // The same ticket then takes the first code.
        a.relay.ports.store.put_ticket(ticket).await?;
        Ok(Reply::ok(json!({ "secret": secret, "otpauth_uri": uri })))
    };
    respond(&parts, reply.await)
}

/// `POST /api/auth/signin/second-factor` `{ticket, code | recovery_code}`.
pub async fn second_factor<P: Platform>(State(a): State<Arc<Auth<P>>>, parts: Parts, raw: Body) -> Response {
    let reply = async {
        a.throttle_ip(&parts, "signin").await?;
        let req: Ticketed = reply::json(&parts, raw).await?;
        let ticket = a.take(Purpose::SecondFactor, &req.ticket).await?.ok_or_else(expired)?;
        let data: Value = serde_json::from_str(&ticket.data).unwrap_or_default();
        let delivery = if data["delivery"] == json!(true) { Delivery::Body } else { Delivery::Cookie };
        let store = &a.relay.ports.store;
        let user = store.user(ticket.user_id).await?.filter(|u| u.status == UserStatus::Enabled);
        let user = user.ok_or_else(expired)?;
        let account = store.account(user.id).await?.ok_or_else(expired)?;
        let passed = match (req.code.as_deref(), req.recovery_code.as_deref()) {
            (Some(code), None) => a.check_totp(&account, code).await?.then_some("totp"),
            (None, Some(code)) if account.totp_enabled => {
                a.use_recovery_code(&parts, user.id, code).await?.then_some("recovery_code")
            }
            _ => return Err(ApiError::invalid("invalid_body", "Send `code` (from the app) or `recovery_code`.").into()),
        };
        let Some(method) = passed else {
            let attempts = data["attempts"].as_i64().unwrap_or(0) + 1;
            let event = Audit::new("second_factor_failed", None, Some(user.id)).detail(json!({ "attempts": attempts }));
            a.relay.audit(&parts, event).await;
            if attempts >= CODE_ATTEMPTS {
                a.failed(&parts, user.id).await?;
                return Err(expired());
            }
            // A typo costs an attempt, not the whole sign-in: the same ticket stays good.
            let mut data = data;
            data["attempts"] = json!(attempts);
            store.put_ticket(oblivious_ports::Ticket { data: data.to_string(), ..ticket }).await?;
            return Err(unauthorized("invalid_code", "That code is not right; try again.").into());
        };
        let mut extra = json!({});
        if !account.totp_enabled {
            // Enrolment during sign-in ends here: the first right code turns it on.
            extra["recovery_codes"] = json!(a.enable_totp(&parts, user.id, "2fa_enabled").await?);
        }
        a.start_session(&parts, &user, delivery, &format!("password+{method}"), extra).await
    };
    respond(&parts, reply.await)
}

impl<P: Platform> Auth<P> {
    /// Whether `code` is the account's current TOTP code, not used before.
    pub(crate) async fn check_totp(&self, acct: &Account, code: &str) -> Result<bool> {
        let Some(sealed) = acct.totp_secret.as_deref() else { return Ok(false) };
        let secret = self.relay.ports.store.sealer().open_sealed(sealed)?;
        let now_s = self.relay.ports.clock.now_ms() / 1000;
        let Some(step) = totp::check(&secret, code, now_s) else { return Ok(false) };
        // One code, one use: a second sign-in with the same code is refused.
        let key = format!("auth:totp:{}:{step}", acct.user_id);
        let uses = self.relay.ports.hot.incr(&key, 1, Some(std::time::Duration::from_secs(120))).await;
        Ok(uses.map_or(true, |n| n == 1))
    }

    /// Uses up a recovery code (single use through the account's version).
    pub(crate) async fn use_recovery_code(&self, parts: &Parts, user_id: i64, code: &str) -> Result<bool> {
        let hash = secret::hash(&totp::normalize_recovery(code));
        let mut found = false;
        let acct = self
            .update_account(user_id, |acct| {
                let before = acct.recovery_codes.len();
                acct.recovery_codes.retain(|h| !secret::equal(h.as_bytes(), hash.as_bytes()));
                found = acct.recovery_codes.len() < before;
            })
            .await;
        let acct = acct?;
        // `found` is what the write that won saw.
        if found {
            let detail = json!({ "left": acct.recovery_codes.len() });
            self.relay
                .audit(parts, Audit::new("recovery_code_used", Some(user_id), Some(user_id)).detail(detail))
                .await;
        }
        Ok(found)
    }
}
