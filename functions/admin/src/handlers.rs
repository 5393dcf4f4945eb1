//! HTTP handlers. Each checks the admin role, does one store operation, and
//! answers JSON (lists as `{data, page, per_page, total}`) or an OpenAI-shaped error.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::response::Response;
use http::request::Parts;
use oblivious_core::auth::roles;
use oblivious_core::model::UserStatus;
use oblivious_core::model::{Channel, ChannelSpec, ChannelStatus, Group, Id, Price, Role, Token, TokenStatus};
use oblivious_core::money::{self, Bound, MAX_UNITS};
use oblivious_core::{apikey, upstream_url, ApiError, ErrorKind};
use oblivious_ports::{
    Accounts, Clock, Ids, NewUser, Page, Platform, Store, StoreError, TokenFilter, TokenPatch, UsageFilter, UserPatch,
};
use oblivious_relay::{error_response, json_response, Audit, Caller, Relay};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};
use serde_json::{json, Value};

use crate::store_error;
use crate::tokens::{create_token, parse_ips, parse_time, CreateToken};

type R<P> = State<Arc<Relay<P>>>;
type Reply = Result<(u16, Value), ApiError>;

pub(crate) fn respond<P: Platform>(relay: &Relay<P>, reply: Reply) -> Response {
    let request_id = relay.ports.ids.request_id();
    match reply {
        Ok((status, v)) => json_response(status, v.to_string().into(), &request_id),
        Err(e) => error_response(&e, &request_id),
    }
}

/// The caller of an admin route. The relay's `gate` (layered over this
/// router) has already applied the role table; this hands the caller on.
pub(crate) async fn admin<P: Platform>(relay: &Relay<P>, parts: &Parts) -> Result<Arc<Caller>, ApiError> {
    relay.caller(parts).await
}

pub(crate) fn body<T: DeserializeOwned>(raw: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(raw).map_err(|e| ApiError::invalid("invalid_body", format!("Invalid request body: {e}.")))
}

/// The largest admin request body (413 past it).
pub(crate) const MAX_ADMIN_BODY: usize = 1 << 20;

/// Reads and parses a JSON body (413 past `MAX_ADMIN_BODY`). Handlers call it
/// only once the caller is authenticated, so an unauthenticated request is
/// answered without waiting for its body.
pub(crate) async fn json_body<T: DeserializeOwned>(parts: &Parts, raw: Body) -> Result<T, ApiError> {
    body(&oblivious_relay::read_body(parts, raw, MAX_ADMIN_BODY).await?)
}

/// An amount that must be `0..=MAX_UNITS`: negative is `negative_code`,
/// too large is 400 `amount_out_of_range`.
pub(crate) fn units(v: i64, param: &'static str, negative_code: &'static str) -> Result<i64, ApiError> {
    money::check_units(v).map_err(|b| match b {
        Bound::Negative => {
            ApiError::invalid(negative_code, format!("`{param}` must be 0 or more units.")).with_param(param)
        }
        Bound::OutOfRange => out_of_range(param),
    })
}

pub(crate) fn out_of_range(param: &'static str) -> ApiError {
    ApiError::invalid(
        money::OUT_OF_RANGE,
        format!("`{param}` is out of range: amounts and balances are at most {MAX_UNITS} units ($1 billion)."),
    )
    .with_param(param)
}

pub(crate) fn query<T: DeserializeOwned>(parts: &Parts) -> Result<T, ApiError> {
    axum::extract::Query::<T>::try_from_uri(&parts.uri)
        .map(|q| q.0)
        .map_err(|e| ApiError::invalid("invalid_query", format!("Invalid query string: {}.", e.body_text())))
}

pub(crate) fn id(raw: &str) -> Result<Id, ApiError> {
    raw.parse().map_err(|_| ApiError::invalid("invalid_id", format!("`{raw}` is not an id.")))
}

/// Deserializes a present field (even `null`) as `Some`, so absent and null differ.
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

#[derive(Deserialize)]
struct PageQuery {
    page: Option<u64>,
    per_page: Option<u64>,
}

pub(crate) fn page(parts: &Parts) -> Result<(Page, u64, u64), ApiError> {
    let q: PageQuery = query(parts)?;
    let page = q.page.unwrap_or(1).max(1);
    let per_page = q.per_page.unwrap_or(50).clamp(1, 500);
    Ok((Page { offset: (page - 1) * per_page, limit: per_page }, page, per_page))
}

pub(crate) fn listing(items: Vec<Value>, total: u64, page: u64, per_page: u64) -> Value {
    json!({ "data": items, "page": page, "per_page": per_page, "total": total })
}

pub(crate) fn to_value(v: impl serde::Serialize) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}

fn token_view(t: &Token, now_ms: i64) -> Value {
    let mut v = to_value(t);
    v["status"] = json!(t.effective_status(now_ms).as_str());
    v
}

fn channel_view(c: &Channel) -> Value {
    let mut v = to_value(c);
    v["keys"] = json!(c.spec.keys.iter().map(|k| apikey::hint(k)).collect::<Vec<_>>());
    v["base_url"] = json!(upstream_url::redact(&c.spec.base_url));
    if let Some(reason) = &c.status_reason {
        v["status_reason"] = json!(upstream_url::redact_in_text(reason));
    }
    v
}

// ---- users

pub async fn list_users<P: Platform>(State(r): R<P>, parts: Parts) -> Response {
    let reply = async {
        admin(&r, &parts).await?;
        let (pg, page_no, per) = page(&parts)?;
        let users = r.ports.store.users(pg).await.map_err(store_error)?;
        Ok((200, listing(users.items.iter().map(to_value).collect(), users.total, page_no, per)))
    };
    respond(&r, reply.await)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateUser {
    name: String,
    role: Option<Role>,
    group: Option<String>,
    #[serde(default)]
    quota: i64,
    #[serde(default)]
    unlimited: bool,
}

fn check_group<P: Platform>(r: &Relay<P>, group: &str) -> Result<(), ApiError> {
    if r.snapshot().groups.contains_key(group) {
        Ok(())
    } else {
        Err(ApiError::invalid("unknown_group", format!("There is no group `{group}`.")).with_param("group"))
    }
}

pub async fn create_user<P: Platform>(State(r): R<P>, parts: Parts, raw: Body) -> Response {
    let reply = async {
        let me = admin(&r, &parts).await?;
        let req: CreateUser = json_body(&parts, raw).await?;
        if !roles::may_grant(me.role(), Role::User, req.role.unwrap_or(Role::User)) {
            return Err(role_above_yours());
        }
        units(req.quota, "quota", "invalid_quota")?;
        if req.name.trim().is_empty() || req.name.contains('#') {
            return Err(ApiError::invalid("invalid_name", "A user name must be non-empty and must not contain `#`.")
                .with_param("name"));
        }
        let group = req.group.unwrap_or_else(|| oblivious_core::config::DEFAULT_GROUP.into());
        check_group(&r, &group)?;
        let new = NewUser {
            name: req.name.trim().into(),
            role: req.role.unwrap_or(Role::User),
            group,
            quota: req.quota,
            unlimited: req.unlimited,
        };
        let user = r.ports.store.create_user(new, r.ports.clock.now_ms()).await.map_err(store_error)?;
        let event = Audit::new("user_create", Some(me.user.id), Some(user.id));
        r.audit(&parts, event.detail(json!({ "role": user.role, "group": user.group }))).await;
        Ok((201, to_value(user)))
    };
    respond(&r, reply.await)
}

pub async fn get_user<P: Platform>(State(r): R<P>, Path(raw_id): Path<String>, parts: Parts) -> Response {
    let reply = async {
        admin(&r, &parts).await?;
        let user = r.ports.store.user(id(&raw_id)?).await.map_err(store_error)?;
        user.map(|u| (200, to_value(u)))
            .ok_or_else(|| ApiError::not_found("not_found", format!("user {raw_id} not found")))
    };
    respond(&r, reply.await)
}

/// A user PATCH. Balances move only through the ledger: `quota` is refused
/// here (400 `use_topup`) in favour of `POST /api/admin/users/{id}/topup`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UpdateUser {
    role: Option<Role>,
    unlimited: Option<bool>,
    group: Option<String>,
    status: Option<UserStatus>,
    #[serde(default, deserialize_with = "present")]
    quota: Option<Value>,
}

pub async fn update_user<P: Platform>(State(r): R<P>, Path(raw_id): Path<String>, parts: Parts, raw: Body) -> Response {
    let reply = async {
        let me = admin(&r, &parts).await?;
        let req: UpdateUser = json_body(&parts, raw).await?;
        if req.quota.is_some() {
            return Err(ApiError::invalid(
                "use_topup",
                format!(
                    "A balance changes only through the ledger: POST /api/admin/users/{raw_id}/topup \
                     {{\"amount\": UNITS, \"note\": \"why\"}} (a negative amount, with a note, debits)."
                ),
            )
            .with_param("quota"));
        }
        let uid = id(&raw_id)?;
        let before = r.ports.store.user(uid).await.map_err(store_error)?.ok_or_else(|| user_not_found(&raw_id))?;
        if !roles::may_grant(me.role(), before.role, req.role.unwrap_or(before.role)) {
            return Err(role_above_yours());
        }
        let demotes_root = req.role.is_some_and(|x| x != Role::Root) || req.status == Some(UserStatus::Disabled);
        if before.role == Role::Root && demotes_root {
            keep_a_root(&r, uid).await?;
        }
        let patch =
            UserPatch { role: req.role, unlimited: req.unlimited, group: req.group, status: req.status, quota: None };
        if let Some(g) = &patch.group {
            check_group(&r, g)?;
        }
        let user = r.ports.store.update_user(uid, patch).await.map_err(store_error)?;
        let _ = r.refresh(false).await;
        let changes = [
            ("role_change", before.role != user.role, json!({ "from": before.role, "to": user.role })),
            ("group_change", before.group != user.group, json!({ "from": before.group, "to": user.group })),
            ("status_change", before.status != user.status, json!({ "from": before.status, "to": user.status })),
            ("unlimited_change", before.unlimited != user.unlimited, json!({ "to": user.unlimited })),
        ];
        for (action, changed, detail) in changes {
            if changed {
                r.audit(&parts, Audit::new(action, Some(me.user.id), Some(uid)).detail(detail)).await;
            }
        }
        Ok((200, to_value(user)))
    };
    respond(&r, reply.await)
}

fn user_not_found(raw_id: &str) -> ApiError {
    ApiError::not_found("not_found", format!("user {raw_id} not found"))
}

fn role_above_yours() -> ApiError {
    ApiError::new(
        ErrorKind::PermissionDenied,
        "role_above_yours",
        "You may not give a role above your own, nor change a user whose role is above yours.",
    )
}

/// Refuses (409 `last_root`) when no other enabled root would be left.
pub async fn keep_a_root<P: Platform>(r: &Relay<P>, leaving: Id) -> Result<(), ApiError> {
    let mut offset = 0;
    loop {
        let page = r.ports.store.users(Page { offset, limit: 500 }).await.map_err(store_error)?;
        let other_root =
            page.items.iter().any(|u| u.role == Role::Root && u.status == UserStatus::Enabled && u.id != leaving);
        if other_root {
            return Ok(());
        }
        offset += page.items.len() as u64;
        if page.items.is_empty() || offset >= page.total {
            return Err(ApiError::new(
                ErrorKind::Conflict,
                "last_root",
                "This is the last root user: make another user root first.",
            ));
        }
    }
}

pub async fn delete_user<P: Platform>(State(r): R<P>, Path(raw_id): Path<String>, parts: Parts) -> Response {
    let reply = async {
        let me = admin(&r, &parts).await?;
        let uid = id(&raw_id)?;
        if uid == me.user.id {
            return Err(ApiError::new(ErrorKind::Conflict, "conflict", "You cannot delete your own account."));
        }
        let target = r.ports.store.user(uid).await.map_err(store_error)?.ok_or_else(|| user_not_found(&raw_id))?;
        if !me.role().covers(target.role) {
            return Err(role_above_yours());
        }
        if target.role == Role::Root {
            keep_a_root(&r, uid).await?;
        }
        r.ports.store.delete_user(uid).await.map_err(store_error)?;
        match r.ports.store.delete_account(uid).await {
            Ok(()) | Err(StoreError::NotFound(_)) => {}
            Err(e) => return Err(store_error(e)),
        }
        let _ = r.refresh(false).await;
        r.audit(&parts, Audit::new("user_delete", Some(me.user.id), Some(uid))).await;
        Ok((200, json!({ "deleted": uid })))
    };
    respond(&r, reply.await)
}

// ---- tokens

#[derive(Deserialize)]
struct TokenQuery {
    user_id: Option<Id>,
    #[serde(default)]
    include_deleted: bool,
}

pub async fn list_tokens<P: Platform>(State(r): R<P>, parts: Parts) -> Response {
    let reply = async {
        let me = admin(&r, &parts).await?;
        let (pg, page_no, per) = page(&parts)?;
        let q: TokenQuery = query(&parts)?;
        let user_id = owner(&parts, &me).or(q.user_id);
        let filter = TokenFilter { user_id, include_deleted: q.include_deleted };
        let tokens = r.ports.store.tokens(filter, pg).await.map_err(store_error)?;
        let now = r.ports.clock.now_ms();
        Ok((200, listing(tokens.items.iter().map(|t| token_view(t, now)).collect(), tokens.total, page_no, per)))
    };
    respond(&r, reply.await)
}

pub async fn create_token_h<P: Platform>(State(r): R<P>, parts: Parts, raw: Body) -> Response {
    let reply = async {
        let me = admin(&r, &parts).await?;
        let req: CreateToken = json_body(&parts, raw).await?;
        if let Some(own) = owner(&parts, &me) {
            if req.user_id.is_some_and(|u| u != own) {
                return Err(ApiError::invalid("invalid_user", "Your keys are your own: leave user_id out.")
                    .with_param("user_id"));
            }
        }
        let (token, key) = create_token(&r.ports.store, &r.ports.ids, &r.ports.clock, req, me.user.id).await?;
        let mut v = token_view(&token, r.ports.clock.now_ms());
        v["key"] = json!(key);
        Ok((201, v))
    };
    respond(&r, reply.await)
}

pub async fn get_token<P: Platform>(State(r): R<P>, Path(raw_id): Path<String>, parts: Parts) -> Response {
    let reply = async {
        let me = admin(&r, &parts).await?;
        let token = scoped_token(&r, &parts, &me, &raw_id).await?;
        Ok((200, token_view(&token, r.ports.clock.now_ms())))
    };
    respond(&r, reply.await)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UpdateToken {
    name: Option<String>,
    status: Option<TokenStatus>,
    /// Sets the remaining quota (and makes the token limited).
    quota: Option<i64>,
    unlimited: Option<bool>,
    models: Option<Vec<String>>,
    ips: Option<Vec<String>>,
    #[serde(default, deserialize_with = "present")]
    expires_at: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    daily_limit: Option<Option<i64>>,
    #[serde(default, deserialize_with = "present")]
    monthly_limit: Option<Option<i64>>,
}

/// On `/api/me/…` routes, the caller's own user id: what every key operation is scoped to.
fn owner(parts: &Parts, me: &Caller) -> Option<Id> {
    parts.uri.path().starts_with("/api/me/").then_some(me.user.id)
}

/// The token `raw_id`, which must be the caller's own on `/api/me/…` (404 otherwise).
async fn scoped_token<P: Platform>(r: &Relay<P>, parts: &Parts, me: &Caller, raw_id: &str) -> Result<Token, ApiError> {
    let token = r.ports.store.token(id(raw_id)?).await.map_err(store_error)?;
    token
        .filter(|t| owner(parts, me).is_none_or(|own| t.user_id == own))
        .ok_or_else(|| ApiError::not_found("not_found", format!("token {raw_id} not found")))
}

async fn patch_token<P: Platform>(r: &Relay<P>, token_id: Id, patch: TokenPatch) -> Reply {
    let token = r.ports.store.update_token(token_id, patch).await.map_err(store_error)?;
    let _ = r.refresh(false).await;
    Ok((200, token_view(&token, r.ports.clock.now_ms())))
}

pub async fn update_token<P: Platform>(
    State(r): R<P>,
    Path(raw_id): Path<String>,
    parts: Parts,
    raw: Body,
) -> Response {
    let reply = async {
        let me = admin(&r, &parts).await?;
        let token = scoped_token(&r, &parts, &me, &raw_id).await?;
        let req: UpdateToken = json_body(&parts, raw).await?;
        crate::tokens::check_caps(req.quota, req.daily_limit.flatten(), req.monthly_limit.flatten())?;
        if matches!(req.status, Some(TokenStatus::Expired | TokenStatus::Exhausted)) {
            return Err(ApiError::invalid(
                "invalid_status",
                "expired and exhausted follow from expiry and quota; set normal, disabled or deleted.",
            )
            .with_param("status"));
        }
        let expires_at = match req.expires_at {
            None => None,
            Some(None) => Some(None),
            Some(Some(s)) => Some(Some(parse_time(&s, "expires_at")?)),
        };
        let patch = TokenPatch {
            name: req.name,
            status: req.status,
            unlimited: req.unlimited.or(req.quota.map(|_| false)),
            remaining_quota: req.quota,
            models: req.models,
            ips: req.ips.as_deref().map(parse_ips).transpose()?,
            expires_at,
            daily_limit: req.daily_limit,
            monthly_limit: req.monthly_limit,
        };
        patch_token(&r, token.id, patch).await
    };
    respond(&r, reply.await)
}

pub async fn delete_token<P: Platform>(State(r): R<P>, Path(raw_id): Path<String>, parts: Parts) -> Response {
    let reply = async {
        let me = admin(&r, &parts).await?;
        let token = scoped_token(&r, &parts, &me, &raw_id).await?;
        patch_token(&r, token.id, TokenPatch { status: Some(TokenStatus::Deleted), ..Default::default() }).await
    };
    respond(&r, reply.await)
}

pub async fn restore_token<P: Platform>(State(r): R<P>, Path(raw_id): Path<String>, parts: Parts) -> Response {
    let reply = async {
        let me = admin(&r, &parts).await?;
        let token = scoped_token(&r, &parts, &me, &raw_id).await?;
        patch_token(&r, token.id, TokenPatch { status: Some(TokenStatus::Normal), ..Default::default() }).await
    };
    respond(&r, reply.await)
}

// ---- channels

async fn channel_or_404<P: Platform>(r: &Relay<P>, raw_id: &str) -> Result<Channel, ApiError> {
    r.ports
        .store
        .channel(id(raw_id)?)
        .await
        .map_err(store_error)?
        .ok_or_else(|| ApiError::not_found("not_found", format!("channel {raw_id} not found")))
}

fn checked_spec<P: Platform>(r: &Relay<P>, v: Value) -> Result<ChannelSpec, ApiError> {
    let mut spec: ChannelSpec =
        serde_json::from_value(v).map_err(|e| ApiError::invalid("invalid_body", format!("Invalid channel: {e}.")))?;
    spec.base_url = spec.base_url.trim_end_matches('/').to_string();
    spec.check().map_err(|(field, msg)| ApiError::invalid("invalid_channel", format!("{field}: {msg}")))?;
    upstream_url::check_upstream(&spec.base_url(), r.settings().allow_link_local_upstreams)
        .map_err(|msg| ApiError::invalid("invalid_channel", format!("base_url: {msg}")).with_param("base_url"))?;
    for g in &spec.groups {
        check_group(r, g)?;
    }
    Ok(spec)
}

pub async fn list_channels<P: Platform>(State(r): R<P>, parts: Parts) -> Response {
    let reply = async {
        admin(&r, &parts).await?;
        let (_, page_no, per) = page(&parts)?;
        let all = r.ports.store.channels().await.map_err(store_error)?;
        let total = all.len() as u64;
        let items = all.iter().skip(((page_no - 1) * per) as usize).take(per as usize).map(channel_view).collect();
        Ok((200, listing(items, total, page_no, per)))
    };
    respond(&r, reply.await)
}

pub async fn create_channel<P: Platform>(State(r): R<P>, parts: Parts, raw: Body) -> Response {
    let reply = async {
        admin(&r, &parts).await?;
        let spec = checked_spec(&r, json_body(&parts, raw).await?)?;
        let ch = r.ports.store.create_channel(spec, r.ports.clock.now_ms()).await.map_err(store_error)?;
        let _ = r.refresh(false).await;
        Ok((201, channel_view(&ch)))
    };
    respond(&r, reply.await)
}

pub async fn get_channel<P: Platform>(State(r): R<P>, Path(raw_id): Path<String>, parts: Parts) -> Response {
    let reply = async {
        admin(&r, &parts).await?;
        Ok((200, channel_view(&channel_or_404(&r, &raw_id).await?)))
    };
    respond(&r, reply.await)
}

/// `{"status": "enabled"|"disabled"}` switches a channel; any other field
/// replaces that part of an API channel's spec.
pub async fn update_channel<P: Platform>(
    State(r): R<P>,
    Path(raw_id): Path<String>,
    parts: Parts,
    raw: Body,
) -> Response {
    let reply = async {
        admin(&r, &parts).await?;
        let mut patch: serde_json::Map<String, Value> = json_body(&parts, raw).await?;
        let mut ch = channel_or_404(&r, &raw_id).await?;
        let status = patch.remove("status");
        if !patch.is_empty() {
            let mut spec = to_value(&ch.spec);
            for (k, v) in patch {
                spec[k] = v;
            }
            let spec = checked_spec(&r, spec)?;
            ch = r.ports.store.update_channel(ch.id, spec, r.ports.clock.now_ms()).await.map_err(store_error)?;
        }
        if let Some(s) = status {
            let status = match s.as_str() {
                Some("enabled") => ChannelStatus::Enabled,
                Some("disabled") => ChannelStatus::Disabled,
                _ => {
                    return Err(ApiError::invalid("invalid_status", "status must be `enabled` or `disabled`.")
                        .with_param("status"))
                }
            };
            let reason = (status == ChannelStatus::Disabled).then(|| "disabled by an admin".to_string());
            r.set_channel_status(&ch, status, reason).await.map_err(store_error)?;
        }
        let _ = r.refresh(false).await;
        Ok((200, channel_view(&channel_or_404(&r, &raw_id).await?)))
    };
    respond(&r, reply.await)
}

pub async fn delete_channel<P: Platform>(State(r): R<P>, Path(raw_id): Path<String>, parts: Parts) -> Response {
    let reply = async {
        admin(&r, &parts).await?;
        r.ports.store.delete_channel(id(&raw_id)?).await.map_err(store_error)?;
        let _ = r.refresh(false).await;
        Ok((200, json!({ "deleted": raw_id })))
    };
    respond(&r, reply.await)
}

pub async fn test_channel<P: Platform>(State(r): R<P>, Path(raw_id): Path<String>, parts: Parts) -> Response {
    let reply = async {
        admin(&r, &parts).await?;
        let ch = channel_or_404(&r, &raw_id).await?;
        let result = r.test_channel(&ch).await.map_err(store_error)?;
        let after = channel_or_404(&r, &raw_id).await?;
        // An upstream error may quote the URL, credentials and all.
        let result =
            serde_json::from_str(&upstream_url::redact_in_text(&to_value(result).to_string())).unwrap_or(Value::Null);
        Ok((200, json!({ "result": result, "channel": channel_view(&after) })))
    };
    respond(&r, reply.await)
}

/// The models the channel's upstream lists (to fill in or check `models`).
pub async fn fetch_models<P: Platform>(State(r): R<P>, Path(raw_id): Path<String>, parts: Parts) -> Response {
    let reply = async {
        admin(&r, &parts).await?;
        let ch = channel_or_404(&r, &raw_id).await?;
        let models = r.upstream_models(&ch).await.map_err(|m| {
            ApiError::new(ErrorKind::UpstreamFailed, "upstream_error", format!("could not list models: {m}"))
        })?;
        Ok((200, json!({ "channel": ch.spec.name, "models": models })))
    };
    respond(&r, reply.await)
}

// ---- groups and prices

pub async fn list_groups<P: Platform>(State(r): R<P>, parts: Parts) -> Response {
    let reply = async {
        admin(&r, &parts).await?;
        let groups = r.ports.store.groups().await.map_err(store_error)?;
        let n = groups.len() as u64;
        Ok((200, listing(groups.iter().map(to_value).collect(), n, 1, n.max(1))))
    };
    respond(&r, reply.await)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PutGroup {
    /// 10_000 = 1.0.
    ratio_bp: i64,
    #[serde(default)]
    description: String,
}

pub async fn put_group<P: Platform>(State(r): R<P>, Path(name): Path<String>, parts: Parts, raw: Body) -> Response {
    let reply = async {
        admin(&r, &parts).await?;
        let req: PutGroup = json_body(&parts, raw).await?;
        if req.ratio_bp <= 0 {
            return Err(ApiError::invalid("invalid_ratio", "ratio_bp must be greater than 0 (10000 = 1.0).")
                .with_param("ratio_bp"));
        }
        let group = Group { name, ratio_bp: req.ratio_bp, description: req.description };
        r.ports.store.put_group(group.clone()).await.map_err(store_error)?;
        let _ = r.refresh(false).await;
        Ok((200, to_value(group)))
    };
    respond(&r, reply.await)
}

pub async fn delete_group<P: Platform>(State(r): R<P>, Path(name): Path<String>, parts: Parts) -> Response {
    let reply = async {
        admin(&r, &parts).await?;
        r.ports.store.delete_group(&name).await.map_err(store_error)?;
        let _ = r.refresh(false).await;
        Ok((200, json!({ "deleted": name })))
    };
    respond(&r, reply.await)
}

#[derive(Deserialize)]
struct PriceQuery {
    #[serde(default)]
    history: bool,
}

/// The prices in force now (one per model or pattern), or with `?history=true`
/// every version, future ones included.
pub async fn list_prices<P: Platform>(State(r): R<P>, parts: Parts) -> Response {
    let reply = async {
        admin(&r, &parts).await?;
        let q: PriceQuery = query(&parts)?;
        let all = r.ports.store.prices().await.map_err(store_error)?;
        let now = r.ports.clock.now_ms();
        let items: Vec<Value> = if q.history {
            all.iter().map(to_value).collect()
        } else {
            let mut current: std::collections::BTreeMap<&str, &Price> = Default::default();
            for p in all.iter().filter(|p| p.effective_at <= now) {
                current.insert(&p.model, p);
            }
            current.values().filter(|p| !p.retired).map(to_value).collect()
        };
        let n = items.len() as u64;
        Ok((200, listing(items, n, 1, n.max(1))))
    };
    respond(&r, reply.await)
}

/// A new price version. Rates are integer units (per 1M tokens, or per
/// request/image/audio second); `effective_at` (RFC 3339 or Unix ms) defaults to now.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PutPrice {
    #[serde(default)]
    input_per_m: i64,
    #[serde(default)]
    output_per_m: i64,
    cached_input_per_m: Option<i64>,
    #[serde(default)]
    per_request: i64,
    #[serde(default)]
    per_image: i64,
    #[serde(default)]
    per_audio_second: i64,
    #[serde(default)]
    free: bool,
    effective_at: Option<Value>,
}

fn time_value(v: &Value, param: &'static str) -> Result<i64, ApiError> {
    match v {
        Value::Number(n) => {
            n.as_i64().ok_or_else(|| ApiError::invalid("invalid_time", "expected Unix milliseconds").with_param(param))
        }
        Value::String(s) => parse_time(s, param),
        _ => Err(ApiError::invalid("invalid_time", "expected RFC 3339 or Unix milliseconds").with_param(param)),
    }
}

async fn add_price_version<P: Platform>(r: &Relay<P>, price: Price) -> Reply {
    let stored = r.ports.store.put_price(price).await.map_err(store_error)?;
    let _ = r.refresh(false).await;
    Ok((200, to_value(stored)))
}

pub async fn put_price<P: Platform>(State(r): R<P>, Path(model): Path<String>, parts: Parts, raw: Body) -> Response {
    let reply = async {
        admin(&r, &parts).await?;
        let req: PutPrice = json_body(&parts, raw).await?;
        let rates = [
            req.input_per_m,
            req.output_per_m,
            req.cached_input_per_m.unwrap_or(0),
            req.per_request,
            req.per_image,
            req.per_audio_second,
        ];
        if rates.iter().any(|x| *x < 0) {
            return Err(ApiError::invalid("invalid_price", "Prices are quota units and must be 0 or more."));
        }
        if rates.iter().any(|x| *x > MAX_UNITS) {
            return Err(out_of_range("price"));
        }
        if req.free && rates.iter().any(|x| *x != 0) {
            return Err(ApiError::invalid("invalid_price", "A free model cannot also have rates."));
        }
        if model.is_empty() || model[..model.len() - 1].contains('*') {
            return Err(ApiError::invalid("invalid_model", "Price a model name or a `prefix*` pattern."));
        }
        let effective_at = match &req.effective_at {
            Some(v) => time_value(v, "effective_at")?,
            None => r.ports.clock.now_ms(),
        };
        let price = Price {
            version: 0,
            model,
            effective_at,
            input_per_m: req.input_per_m,
            output_per_m: req.output_per_m,
            cached_input_per_m: req.cached_input_per_m,
            per_request: req.per_request,
            per_image: req.per_image,
            per_audio_second: req.per_audio_second,
            free: req.free,
            retired: false,
        };
        add_price_version(&r, price).await
    };
    respond(&r, reply.await)
}

/// Retires the model's price from now on (a new version; history is kept).
pub async fn delete_price<P: Platform>(State(r): R<P>, Path(model): Path<String>, parts: Parts) -> Response {
    let reply = async {
        admin(&r, &parts).await?;
        let now = r.ports.clock.now_ms();
        if r.snapshot().price_for(&model, now).is_none_or(|p| p.model != model) {
            return Err(ApiError::not_found("not_found", format!("`{model}` has no price in force")));
        }
        add_price_version(&r, Price { model, effective_at: now, retired: true, ..Price::default() }).await
    };
    respond(&r, reply.await)
}

// ---- usage

#[derive(Deserialize)]
pub(crate) struct UsageQuery {
    user_id: Option<Id>,
    token_id: Option<Id>,
    channel_id: Option<Id>,
    model: Option<String>,
    status: Option<u16>,
    since: Option<String>,
    until: Option<String>,
}

/// A time given as Unix milliseconds or RFC 3339.
fn time_param(v: Option<String>, param: &'static str) -> Result<Option<i64>, ApiError> {
    v.map(|s| s.parse::<i64>().or_else(|_| parse_time(&s, param))).transpose()
}

pub(crate) fn usage_filter(q: UsageQuery) -> Result<UsageFilter, ApiError> {
    Ok(UsageFilter {
        user_id: q.user_id,
        token_id: q.token_id,
        channel_id: q.channel_id,
        model: q.model,
        status: q.status,
        since: time_param(q.since, "since")?,
        until: time_param(q.until, "until")?,
    })
}

pub async fn list_usage<P: Platform>(State(r): R<P>, parts: Parts) -> Response {
    let reply = async {
        admin(&r, &parts).await?;
        let (pg, page_no, per) = page(&parts)?;
        let q: UsageQuery = query(&parts)?;
        let rows = r.ports.store.usage(usage_filter(q)?, pg).await.map_err(store_error)?;
        Ok((200, listing(rows.items.iter().map(to_value).collect(), rows.total, page_no, per)))
    };
    respond(&r, reply.await)
}
