//! Admin account operations: the audit log, invitations, resetting a
//! user's second factor, ending a user's sessions.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::response::Response;
use http::request::Parts;
use oblivious_core::ApiError;
use oblivious_ports::{Accounts, AuditFilter, Clock, Platform, Purpose, Store};
use oblivious_relay::Audit;
use serde::Deserialize;
use serde_json::json;

use crate::me::{audit_page, audit_query};
use crate::reply::{self, forbidden, respond, Reply, Result};
use crate::Auth;

/// `GET /api/admin/audit?actor_id=&target_id=&action=&since=&until=&before=&limit=`.
pub async fn audit<P: Platform>(State(a): State<Arc<Auth<P>>>, parts: Parts) -> Response {
    let reply = async {
        let q = audit_query(&parts)?;
        let filter = AuditFilter {
            actor_id: q.actor_id,
            target_id: q.target_id,
            action: q.action,
            since: q.since,
            until: q.until,
            before: q.before,
            involving: None,
        };
        audit_page(&a, filter, q.limit).await
    };
    respond(&parts, reply.await)
}

fn user_id(raw: &str) -> Result<i64> {
    raw.parse().map_err(|_| ApiError::invalid("invalid_id", format!("`{raw}` is not a user id.")).into())
}

/// The target user, who must not outrank the admin.
async fn target<P: Platform>(a: &Auth<P>, parts: &Parts, raw: &str) -> Result<oblivious_core::model::User> {
    let me = a.relay.caller(parts).await?;
    let user = a.relay.ports.store.user(user_id(raw)?).await?;
    let user = user.ok_or_else(|| ApiError::not_found("not_found", format!("user {raw} not found")))?;
    if !me.user.role.covers(user.role) {
        return Err(forbidden("role_above_yours", "You may not change a user whose role is above yours.").into());
    }
    Ok(user)
}

/// `POST /api/admin/users/{id}/2fa-reset`: turns the user's second factor off
/// (they lost the device) and ends their sessions.
pub async fn reset_2fa<P: Platform>(State(a): State<Arc<Auth<P>>>, Path(id): Path<String>, parts: Parts) -> Response {
    let reply = async {
        let me = a.relay.caller(&parts).await?;
        let user = target(&a, &parts, &id).await?;
        a.update_account(user.id, crate::twofa::clear_totp).await?;
        let ended = a.relay.ports.store.revoke_sessions(user.id, None, a.relay.ports.clock.now_ms()).await?;
        a.relay.audit(&parts, Audit::new("2fa_reset", Some(me.user.id), Some(user.id))).await;
        Ok(Reply::ok(json!({ "two_factor": false, "sessions_ended": ended })))
    };
    respond(&parts, reply.await)
}

/// `DELETE /api/admin/users/{id}/sessions`: signs the user out everywhere.
pub async fn revoke_sessions<P: Platform>(
    State(a): State<Arc<Auth<P>>>,
    Path(id): Path<String>,
    parts: Parts,
) -> Response {
    let reply = async {
        let me = a.relay.caller(&parts).await?;
        let user = target(&a, &parts, &id).await?;
        let ended = a.relay.ports.store.revoke_sessions(user.id, None, a.relay.ports.clock.now_ms()).await?;
        let event = Audit::new("sessions_revoked", Some(me.user.id), Some(user.id));
        a.relay.audit(&parts, event.detail(json!({ "sessions_ended": ended }))).await;
        Ok(Reply::ok(json!({ "sessions_ended": ended })))
    };
    respond(&parts, reply.await)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Invites {
    #[serde(default = "one")]
    count: u32,
    /// Days until unused codes expire.
    #[serde(default = "week")]
    days: u32,
}

fn one() -> u32 {
    1
}

fn week() -> u32 {
    7
}

/// `POST /api/admin/invites {count?, days?}`: invitation codes for
/// `registration = "invite"`, each good for one sign-up (shown once).
pub async fn invites<P: Platform>(State(a): State<Arc<Auth<P>>>, parts: Parts, raw: Body) -> Response {
    let reply = async {
        let me = a.relay.caller(&parts).await?;
        let req: Invites = reply::json(&parts, raw).await?;
        if !(1..=500).contains(&req.count) || !(1..=365).contains(&req.days) {
            return Err(ApiError::invalid("invalid_invites", "count is 1 to 500, days 1 to 365.").into());
        }
        let ttl = req.days as i64 * 86_400_000;
        let mut codes = Vec::with_capacity(req.count as usize);
        for _ in 0..req.count {
            codes.push(a.ticket(Purpose::Invite, me.user.id, json!({}), ttl).await?);
        }
        let expires_at = a.relay.ports.clock.now_ms() + ttl;
        Ok(Reply::ok(json!({ "codes": codes, "expires_at": expires_at })).status(201))
    };
    respond(&parts, reply.await)
}
