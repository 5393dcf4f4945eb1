//! Passwords: forgotten (a single-use link by mail, the same answer whether
//! or not the address has an account), reset, and changed while signed in.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::response::Response;
use http::request::Parts;
use oblivious_core::ApiError;
use oblivious_ports::{Accounts, Clock, Platform, Purpose};
use oblivious_relay::Audit;
use serde::Deserialize;
use serde_json::json;

use crate::reply::{self, respond, Reply};
use crate::signup::check_password;
use crate::{mail, Auth};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Forgot {
    email: String,
}

/// `POST /api/auth/password/forgot`: 202 either way (no account enumeration);
/// the mail, when there is an account, leaves in the background.
pub async fn forgot<P: Platform>(State(a): State<Arc<Auth<P>>>, parts: Parts, raw: Body) -> Response {
    let reply = async {
        a.throttle_ip(&parts, "forgot").await?;
        let req: Forgot = reply::json(&parts, raw).await?;
        let email = req.email.trim().to_lowercase();
        a.throttle_account(&email).await?;
        let store = &a.relay.ports.store;
        if let Some(acct) = store.account_by_email(&email).await? {
            let s = a.settings();
            // A new link voids the earlier ones.
            store.drop_tickets(acct.user_id, Purpose::ResetPassword).await?;
            let ttl = s.email_link_minutes as i64 * 60_000;
            let data = json!({ "email": acct.email });
            let token = a.ticket(Purpose::ResetPassword, acct.user_id, data, ttl).await?;
            a.send(mail::reset_password(&acct.email, &a.link("reset-password", &token), s.email_link_minutes));
            let event = Audit::new("password_reset_requested", None, Some(acct.user_id));
            a.relay.audit(&parts, event).await;
        }
        Ok(Reply::ok(json!({ "sent": true, "message": "If an account has this address, a reset link is on its way." }))
            .status(202))
    };
    respond(&parts, reply.await)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Reset {
    token: String,
    password: String,
}

/// `POST /api/auth/password/reset`: sets the password, signs out every
/// session, and (the link proved the mailbox) marks the address verified.
pub async fn reset<P: Platform>(State(a): State<Arc<Auth<P>>>, parts: Parts, raw: Body) -> Response {
    let reply = async {
        a.throttle_ip(&parts, "reset").await?;
        let req: Reset = reply::json(&parts, raw).await?;
        let bad =
            || ApiError::invalid("invalid_token", "This reset link is invalid, used or expired; ask for a new one.");
        let store = &a.relay.ports.store;
        // Check the rule before spending the link on a password that fails it.
        check_password(&req.password, "", a.settings().min_password_length)?;
        let ticket = a.take(Purpose::ResetPassword, &req.token).await?.ok_or_else(bad)?;
        let acct = store.account(ticket.user_id).await?.ok_or_else(bad)?;
        check_password(&req.password, &acct.email, a.settings().min_password_length)?;
        let hash = a.hash_password(&req.password).await?;
        a.update_account(acct.user_id, |acct| {
            acct.password_hash = Some(hash.clone());
            acct.email_verified = true;
            acct.failed_signins = 0;
            acct.locked_until = None;
        })
        .await?;
        let ended = store.revoke_sessions(acct.user_id, None, a.relay.ports.clock.now_ms()).await?;
        let event = Audit::new("password_reset", Some(acct.user_id), Some(acct.user_id));
        a.relay.audit(&parts, event.detail(json!({ "sessions_ended": ended }))).await;
        Ok(Reply::ok(json!({ "reset": true, "sessions_ended": ended })))
    };
    respond(&parts, reply.await)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Change {
    current_password: String,
    new_password: String,
}

/// `POST /api/me/password`: needs the current password; ends every other session.
pub async fn change<P: Platform>(State(a): State<Arc<Auth<P>>>, parts: Parts, raw: Body) -> Response {
    let reply = async {
        a.throttle_ip(&parts, "password").await?;
        let req: Change = reply::json(&parts, raw).await?;
        let me = a.relay.caller(&parts).await?;
        let acct = a.my_account(&parts).await?;
        a.reauthenticate(&acct, Some(&req.current_password), None).await?;
        check_password(&req.new_password, &acct.email, a.settings().min_password_length)?;
        let hash = a.hash_password(&req.new_password).await?;
        a.update_account(acct.user_id, |acct| acct.password_hash = Some(hash.clone())).await?;
        let now = a.relay.ports.clock.now_ms();
        let ended = a.relay.ports.store.revoke_sessions(acct.user_id, me.session.as_deref(), now).await?;
        let event = Audit::new("password_change", Some(acct.user_id), Some(acct.user_id));
        a.relay.audit(&parts, event.detail(json!({ "other_sessions_ended": ended }))).await;
        Ok(Reply::ok(json!({ "changed": true, "other_sessions_ended": ended })))
    };
    respond(&parts, reply.await)
}
