//! The signed-in user's own account: profile and settings, sessions, security
//! events, ledger, and deleting the account.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::response::Response;
use http::request::Parts;
use oblivious_core::model::Role;
use oblivious_core::ApiError;
use oblivious_ports::{Account, Accounts, AuditFilter, Clock, Ledger, Page, Platform, Settings, Store};
use oblivious_relay::Audit;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::reply::{self, respond, Reply, Result};
use crate::signup::display_name;
use crate::Auth;

impl<P: Platform> Auth<P> {
    pub(crate) async fn my_account(&self, parts: &Parts) -> Result<Account> {
        let me = self.relay.caller(parts).await?;
        let acct = self.relay.ports.store.account(me.user.id).await?;
        Ok(acct.ok_or_else(|| ApiError::not_found("no_account", "This user has no sign-in account."))?)
    }
}

/// What a user sees of their account: never a hash or a secret.
pub(crate) fn account_view(a: &Account) -> Value {
    json!({
        "email": a.email,
        "email_verified": a.email_verified,
        "display_name": a.display_name,
        "settings": a.settings,
        "has_password": a.password_hash.is_some(),
        "two_factor": a.totp_enabled,
        "created_at": a.created_at,
    })
}

/// `GET /api/me`.
pub async fn get<P: Platform>(State(a): State<Arc<Auth<P>>>, parts: Parts) -> Response {
    let reply = async {
        let me = a.relay.caller(&parts).await?;
        let store = &a.relay.ports.store;
        let user = store.user(me.user.id).await?;
        let account = store.account(me.user.id).await?;
        let identities = store.identities(me.user.id).await?;
        let linked: Vec<_> = identities
            .iter()
            .map(|i| json!({ "provider": i.provider, "email": i.email, "linked_at": i.created_at }))
            .collect();
        Ok(Reply::ok(json!({
            "user": user,
            "account": account.as_ref().map(account_view),
            "identities": linked,
            "session_id": me.session,
        })))
    };
    respond(&parts, reply.await)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Patch {
    display_name: Option<String>,
    settings: Option<Settings>,
}

const THEMES: &[&str] = &["light", "dark", "system"];

fn check_settings(s: &Settings) -> Result<()> {
    let bad = |param: &'static str, msg: &str| -> Result<()> {
        Err(ApiError::invalid("invalid_settings", msg).with_param(param).into())
    };
    if let Some(lang) = &s.language {
        let ok = (2..=16).contains(&lang.len()) && lang.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
        if !ok {
            return bad("settings.language", "A language is a tag like `en` or `zh-CN`.");
        }
    }
    if s.theme.as_deref().is_some_and(|t| !THEMES.contains(&t)) {
        return bad("settings.theme", "The theme is `light`, `dark` or `system`.");
    }
    if s.default_model.as_deref().is_some_and(|m| m.is_empty() || m.len() > 128) {
        return bad("settings.default_model", "A model name is 1 to 128 characters.");
    }
    Ok(())
}

/// `PATCH /api/me {display_name?, settings?}` (settings replace as a whole).
pub async fn patch<P: Platform>(State(a): State<Arc<Auth<P>>>, parts: Parts, raw: Body) -> Response {
    let reply = async {
        let req: Patch = reply::json(&parts, raw).await?;
        let acct = a.my_account(&parts).await?;
        let name = req.display_name.as_deref().map(|n| display_name(Some(n), &acct.email)).transpose()?;
        if let Some(s) = &req.settings {
            check_settings(s)?;
        }
        let acct = a
            .update_account(acct.user_id, |acct| {
                if let Some(n) = &name {
                    acct.display_name = n.clone();
                }
                if let Some(s) = &req.settings {
                    acct.settings = s.clone();
                }
            })
            .await?;
        Ok(Reply::ok(account_view(&acct)))
    };
    respond(&parts, reply.await)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Confirm {
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    code: Option<String>,
}

/// `DELETE /api/me {password | code}`: the account goes (sign-in, sessions,
/// keys); the user row stays, disabled, for the usage history.
pub async fn delete<P: Platform>(State(a): State<Arc<Auth<P>>>, parts: Parts, raw: Body) -> Response {
    let reply = async {
        let req: Confirm = reply::json(&parts, raw).await?;
        a.throttle_ip(&parts, "password").await?;
        let me = a.relay.caller(&parts).await?;
        let acct = a.my_account(&parts).await?;
        a.reauthenticate(&acct, req.password.as_deref(), req.code.as_deref()).await?;
        if me.user.role == Role::Root {
            oblivious_admin::keep_a_root(&a.relay, me.user.id).await?;
        }
        let store = &a.relay.ports.store;
        store.revoke_sessions(me.user.id, None, a.relay.ports.clock.now_ms()).await?;
        store.delete_user(me.user.id).await?;
        store.delete_account(me.user.id).await?;
        let _ = a.relay.refresh(false).await;
        a.relay.audit(&parts, Audit::new("account_delete", Some(me.user.id), Some(me.user.id))).await;
        Ok(Reply::ok(json!({ "deleted": true })).cookies(a.clear_cookies()))
    };
    respond(&parts, reply.await)
}

/// `GET /api/me/sessions`: active sessions, this one marked.
pub async fn sessions<P: Platform>(State(a): State<Arc<Auth<P>>>, parts: Parts) -> Response {
    let reply = async {
        let me = a.relay.caller(&parts).await?;
        let now = a.relay.ports.clock.now_ms();
        let list = a.relay.ports.store.sessions(me.user.id, now).await?;
        let data: Vec<_> = list
            .iter()
            .map(|s| {
                json!({
                    "id": s.id,
                    "current": me.session.as_deref() == Some(s.id.as_str()),
                    "ip": s.ip,
                    "user_agent": s.user_agent,
                    "created_at": s.created_at,
                    "last_seen_at": s.last_seen_at,
                    "expires_at": s.expires_at,
                })
            })
            .collect();
        Ok(Reply::ok(json!({ "data": data })))
    };
    respond(&parts, reply.await)
}

/// `DELETE /api/me/sessions/{id}`: one of the user's own sessions (404 for anyone else's).
pub async fn revoke<P: Platform>(State(a): State<Arc<Auth<P>>>, Path(id): Path<String>, parts: Parts) -> Response {
    let reply = async {
        let me = a.relay.caller(&parts).await?;
        let store = &a.relay.ports.store;
        let found = store.session(&id).await?.filter(|s| s.user_id == me.user.id);
        let s = found.ok_or_else(|| ApiError::not_found("not_found", "No such session."))?;
        store.revoke_session(&s.id, a.relay.ports.clock.now_ms()).await?;
        let event =
            Audit::new("session_revoke", Some(me.user.id), Some(me.user.id)).subject(format!("session:{}", s.id));
        a.relay.audit(&parts, event).await;
        Ok(Reply::ok(json!({ "revoked": s.id })))
    };
    respond(&parts, reply.await)
}

/// `DELETE /api/me/sessions/others`: signs out every other device.
pub async fn revoke_others<P: Platform>(State(a): State<Arc<Auth<P>>>, parts: Parts) -> Response {
    let reply = async {
        let me = a.relay.caller(&parts).await?;
        let now = a.relay.ports.clock.now_ms();
        let ended = a.relay.ports.store.revoke_sessions(me.user.id, me.session.as_deref(), now).await?;
        let event = Audit::new("sign_out_others", Some(me.user.id), Some(me.user.id));
        a.relay.audit(&parts, event.detail(json!({ "sessions_ended": ended }))).await;
        Ok(Reply::ok(json!({ "revoked": ended })))
    };
    respond(&parts, reply.await)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AuditQuery {
    pub before: Option<String>,
    pub limit: Option<u64>,
    pub action: Option<String>,
    pub actor_id: Option<i64>,
    pub target_id: Option<i64>,
    pub since: Option<i64>,
    pub until: Option<i64>,
}

/// One keyset page of audit rows: `{data, next}` (`next` is the `before` of the next page).
pub(crate) async fn audit_page<P: Platform>(a: &Auth<P>, filter: AuditFilter, limit: Option<u64>) -> Result<Reply> {
    let limit = limit.unwrap_or(50).clamp(1, 200);
    let rows = a.relay.ports.store.audit(filter, limit).await?;
    let next = (rows.len() as u64 == limit).then(|| rows.last().map(|r| r.id.clone())).flatten();
    let data: Vec<Value> = rows
        .into_iter()
        .map(|r| {
            let detail: Value = serde_json::from_str(&r.detail).unwrap_or(Value::Null);
            json!({
                "id": r.id, "at": r.at, "action": r.action, "actor_id": r.actor_id, "target_id": r.target_id,
                "subject": r.subject, "ip": r.ip, "user_agent": r.user_agent, "request_id": r.request_id,
                "detail": detail,
            })
        })
        .collect();
    Ok(Reply::ok(json!({ "data": data, "next": next })))
}

pub(crate) fn audit_query(parts: &Parts) -> Result<AuditQuery> {
    axum::extract::Query::<AuditQuery>::try_from_uri(&parts.uri)
        .map(|q| q.0)
        .map_err(|e| ApiError::invalid("invalid_query", format!("Invalid query: {e}.")).into())
}

/// `GET /api/me/audit`: the user's own security events, newest first.
pub async fn audit<P: Platform>(State(a): State<Arc<Auth<P>>>, parts: Parts) -> Response {
    let reply = async {
        let me = a.relay.caller(&parts).await?;
        let q = audit_query(&parts)?;
        let filter = AuditFilter {
            involving: Some(me.user.id),
            action: q.action,
            since: q.since,
            until: q.until,
            before: q.before,
            ..Default::default()
        };
        audit_page(&a, filter, q.limit).await
    };
    respond(&parts, reply.await)
}

/// `GET /api/me/ledger?page=&per_page=`: the user's own balance history.
pub async fn ledger<P: Platform>(State(a): State<Arc<Auth<P>>>, parts: Parts) -> Response {
    let reply = async {
        let me = a.relay.caller(&parts).await?;
        #[derive(Deserialize)]
        struct Q {
            page: Option<u64>,
            per_page: Option<u64>,
        }
        let q = axum::extract::Query::<Q>::try_from_uri(&parts.uri)
            .map_err(|e| ApiError::invalid("invalid_query", format!("Invalid query: {e}.")))?;
        let per = q.per_page.unwrap_or(50).clamp(1, 500);
        let page_no = q.page.unwrap_or(1).max(1);
        let rows =
            a.relay.ports.store.ledger(Some(me.user.id), Page { offset: (page_no - 1) * per, limit: per }).await?;
        Ok(Reply::ok(json!({ "data": rows.items, "total": rows.total, "page": page_no, "per_page": per })))
    };
    respond(&parts, reply.await)
}
