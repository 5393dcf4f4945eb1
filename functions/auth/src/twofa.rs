//! Two-factor enrolment and management for the signed-in user: a TOTP
//! secret (shown once, as text and as an `otpauth://` URI for a QR code),
//! confirmed by a first code, with ten single-use recovery codes.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::response::Response;
use http::request::Parts;
use oblivious_core::auth::{password, secret, totp};
use oblivious_core::ApiError;
use oblivious_ports::{Platform, Store, Tasks};
use oblivious_relay::Audit;
use serde::Deserialize;
use serde_json::json;

use crate::reply::{self, conflict, respond, Reply, Result};
use crate::signin::ISSUER;
use crate::Auth;

impl<P: Platform> Auth<P> {
    /// Stores a new (not yet enabled) secret; returns it and its URI.
    pub(crate) async fn begin_totp(&self, user_id: i64) -> Result<(String, String)> {
        let secret = totp::new_secret(self.random());
        let sealed = self.relay.ports.store.sealer().seal(&secret);
        let acct = self
            .update_account(user_id, |acct| {
                if !acct.totp_enabled {
                    acct.totp_secret = Some(sealed.clone());
                }
            })
            .await?;
        if acct.totp_enabled {
            return Err(conflict("already_enabled", "Two-factor sign-in is already on; turn it off first.").into());
        }
        let uri = totp::uri(&secret, &acct.email, ISSUER).ok_or_else(|| ApiError::internal("bad TOTP secret"))?;
        Ok((secret, uri))
    }

    /// Turns the enrolled secret on and hands out fresh recovery codes.
    pub(crate) async fn enable_totp(&self, parts: &Parts, user_id: i64, action: &'static str) -> Result<Vec<String>> {
        let codes = totp::recovery_codes(|| oblivious_ports::Ids::random_u64(&self.relay.ports.ids) as u8);
        let hashes: Vec<String> = codes.iter().map(|c| secret::hash(&totp::normalize_recovery(c))).collect();
        self.update_account(user_id, |acct| {
            acct.totp_enabled = true;
            acct.recovery_codes = hashes.clone();
        })
        .await?;
        self.relay.audit(parts, Audit::new(action, Some(user_id), Some(user_id))).await;
        Ok(codes)
    }
}

/// `GET /api/me/2fa`.
pub async fn status<P: Platform>(State(a): State<Arc<Auth<P>>>, parts: Parts) -> Response {
    let reply = async {
        let acct = a.my_account(&parts).await?;
        let required = a.settings().require_2fa.contains(&a.relay.caller(&parts).await?.user.role);
        Ok(Reply::ok(json!({
            "enabled": acct.totp_enabled,
            "required": required,
            "recovery_codes_left": acct.recovery_codes.len(),
        })))
    };
    respond(&parts, reply.await)
}

/// `POST /api/me/2fa/enrol`: a new secret to scan; `confirm` turns it on.
pub async fn enrol<P: Platform>(State(a): State<Arc<Auth<P>>>, parts: Parts) -> Response {
    let reply = async {
        let me = a.relay.caller(&parts).await?;
        let (secret, uri) = a.begin_totp(me.user.id).await?;
        Ok(Reply::ok(json!({ "secret": secret, "otpauth_uri": uri })))
    };
    respond(&parts, reply.await)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Code {
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    password: Option<String>,
}

fn wrong_code() -> reply::Fail {
    ApiError::invalid("invalid_code", "That code is not right.").with_param("code").into()
}

/// `POST /api/me/2fa/confirm {code}`: the first code from the app turns it on.
pub async fn confirm<P: Platform>(State(a): State<Arc<Auth<P>>>, parts: Parts, raw: Body) -> Response {
    let reply = async {
        let req: Code = reply::json(&parts, raw).await?;
        a.throttle_ip(&parts, "2fa").await?;
        let acct = a.my_account(&parts).await?;
        if acct.totp_enabled {
            return Err(conflict("already_enabled", "Two-factor sign-in is already on.").into());
        }
        if acct.totp_secret.is_none() {
            return Err(conflict("not_enrolled", "Start with POST /api/me/2fa/enrol.").into());
        }
        if !a.check_totp(&acct, req.code.as_deref().unwrap_or_default()).await? {
            return Err(wrong_code());
        }
        let codes = a.enable_totp(&parts, acct.user_id, "2fa_enabled").await?;
        Ok(Reply::ok(json!({ "enabled": true, "recovery_codes": codes })))
    };
    respond(&parts, reply.await)
}

impl<P: Platform> Auth<P> {
    /// A sensitive change needs proof beyond the session: the password, or
    /// (for provider-only accounts, and with 2FA on) a current code.
    pub(crate) async fn reauthenticate(
        &self,
        acct: &oblivious_ports::Account,
        pw: Option<&str>,
        code: Option<&str>,
    ) -> Result<()> {
        if let (Some(pw), Some(phc)) = (pw, acct.password_hash.clone()) {
            let pw = pw.to_string();
            if self.relay.ports.tasks.cpu(move || password::verify(&pw, &phc)).await {
                return Ok(());
            }
            return Err(ApiError::invalid("wrong_password", "The password is not right.")
                .with_param("password")
                .into());
        }
        if let Some(code) = code {
            if acct.totp_enabled && self.check_totp(acct, code).await? {
                return Ok(());
            }
            return Err(wrong_code());
        }
        Err(ApiError::invalid("reauthentication_required", "Confirm with your `password` (or a 2FA `code`).").into())
    }
}

/// `DELETE /api/me/2fa {password | code}`.
pub async fn disable<P: Platform>(State(a): State<Arc<Auth<P>>>, parts: Parts, raw: Body) -> Response {
    let reply = async {
        let req: Code = reply::json(&parts, raw).await?;
        a.throttle_ip(&parts, "2fa").await?;
        let acct = a.my_account(&parts).await?;
        let me = a.relay.caller(&parts).await?;
        if a.settings().require_2fa.contains(&me.user.role) {
            return Err(reply::forbidden("2fa_required", "Your role requires two-factor sign-in.").into());
        }
        a.reauthenticate(&acct, req.password.as_deref(), req.code.as_deref()).await?;
        a.update_account(acct.user_id, clear_totp).await?;
        a.relay.audit(&parts, Audit::new("2fa_disabled", Some(acct.user_id), Some(acct.user_id))).await;
        Ok(Reply::ok(json!({ "enabled": false })))
    };
    respond(&parts, reply.await)
}

pub(crate) fn clear_totp(acct: &mut oblivious_ports::Account) {
    acct.totp_enabled = false;
    acct.totp_secret = None;
    acct.recovery_codes.clear();
}

/// `POST /api/me/2fa/recovery-codes {code}`: ten new codes; the old ones stop working.
pub async fn regenerate<P: Platform>(State(a): State<Arc<Auth<P>>>, parts: Parts, raw: Body) -> Response {
    let reply = async {
        let req: Code = reply::json(&parts, raw).await?;
        a.throttle_ip(&parts, "2fa").await?;
        let acct = a.my_account(&parts).await?;
        if !acct.totp_enabled {
            return Err(conflict("not_enabled", "Two-factor sign-in is off.").into());
        }
        a.reauthenticate(&acct, req.password.as_deref(), req.code.as_deref()).await?;
        let codes = a.enable_totp(&parts, acct.user_id, "recovery_codes_regenerated").await?;
        Ok(Reply::ok(json!({ "recovery_codes": codes })))
    };
    respond(&parts, reply.await)
}
