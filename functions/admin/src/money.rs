//! Balances: admin top-ups, the ledger, redemption codes and reservations,
//! plus what a key's owner may see and do about their own account
//! (`/api/account`, `/api/usage`, `/api/redeem`).

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::response::Response;
use http::request::Parts;
use oblivious_core::model::Id;
use oblivious_core::money::{self, MAX_UNITS};
use oblivious_core::{apikey, ApiError, ErrorKind};
use oblivious_ports::{Clock, Ids, Ledger, Platform, RedeemError, Store, UsageFilter};
use oblivious_relay::{Audit, Relay};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::handlers::{
    admin, id, json_body, listing, out_of_range, page, query, respond, to_value, usage_filter, UsageQuery,
};
use crate::store_error;
use crate::tokens::parse_time;

type R<P> = State<Arc<Relay<P>>>;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TopUp {
    /// Units to add, at most `MAX_UNITS`; negative (an explicit debit) needs a `note`.
    amount: i64,
    #[serde(default)]
    note: String,
}

pub async fn top_up<P: Platform>(State(r): R<P>, Path(raw_id): Path<String>, parts: Parts, raw: Body) -> Response {
    let reply = async {
        let me = admin(&r, &parts).await?;
        let req: TopUp = json_body(&parts, raw).await?;
        if req.amount == 0 {
            return Err(ApiError::invalid("invalid_amount", "amount must not be 0.").with_param("amount"));
        }
        money::check_delta(req.amount).map_err(|_| out_of_range("amount"))?;
        if req.amount < 0 && req.note.trim().is_empty() {
            return Err(ApiError::invalid("note_required", "A negative amount debits the balance; say why in `note`.")
                .with_param("note"));
        }
        let kind = if req.amount > 0 { "topup" } else { "adjust" };
        let now = r.ports.clock.now_ms();
        let user = r
            .ports
            .store
            .adjust_balance(id(&raw_id)?, req.amount, kind, &me.user.name, &req.note, now)
            .await
            .map_err(store_error)?;
        Ok((200, to_value(user)))
    };
    respond(&r, reply.await)
}

#[derive(Deserialize)]
struct LedgerQuery {
    user_id: Option<Id>,
}

pub async fn ledger<P: Platform>(State(r): R<P>, parts: Parts) -> Response {
    let reply = async {
        admin(&r, &parts).await?;
        let (pg, page_no, per) = page(&parts)?;
        let q: LedgerQuery = query(&parts)?;
        let rows = r.ports.store.ledger(q.user_id, pg).await.map_err(store_error)?;
        Ok((200, listing(rows.items.iter().map(to_value).collect(), rows.total, page_no, per)))
    };
    respond(&r, reply.await)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewCodes {
    count: u32,
    /// Units each code credits.
    value: i64,
    /// RFC 3339.
    expires_at: Option<String>,
    batch: Option<String>,
}

/// Codes are `ob-` + 32 random alphanumerics; only their hashes are stored.
pub const CODE_PREFIX: &str = "ob-";

/// Generates a batch of codes and returns them (shown only this once).
pub async fn create_codes<S: Ledger>(
    store: &S,
    ids: &impl Ids,
    now_ms: i64,
    count: u32,
    value: i64,
    expires_at: Option<i64>,
    batch: Option<String>,
) -> Result<(String, Vec<String>), ApiError> {
    if !(1..=10_000).contains(&count) {
        return Err(ApiError::invalid("invalid_count", "count must be between 1 and 10000.").with_param("count"));
    }
    if value <= 0 {
        return Err(ApiError::invalid("invalid_value", "value must be more than 0 units.").with_param("value"));
    }
    if value > MAX_UNITS {
        return Err(out_of_range("value"));
    }
    if expires_at.is_some_and(|t| t <= now_ms) {
        return Err(ApiError::invalid("invalid_time", "expires_at is in the past.").with_param("expires_at"));
    }
    let batch = batch.unwrap_or_else(|| format!("batch-{now_ms}"));
    let codes: Vec<String> =
        (0..count).map(|_| format!("{CODE_PREFIX}{}", apikey::random_alnum(32, || ids.random_u64() as u8))).collect();
    let stored = codes.iter().map(|c| (apikey::hash(c), apikey::hint(c))).collect();
    store.create_codes(&batch, stored, value, expires_at, now_ms).await.map_err(store_error)?;
    Ok((batch, codes))
}

pub async fn new_codes<P: Platform>(State(r): R<P>, parts: Parts, raw: Body) -> Response {
    let reply = async {
        admin(&r, &parts).await?;
        let req: NewCodes = json_body(&parts, raw).await?;
        let expires_at = req.expires_at.as_deref().map(|s| parse_time(s, "expires_at")).transpose()?;
        let now = r.ports.clock.now_ms();
        let (batch, codes) =
            create_codes(&r.ports.store, &r.ports.ids, now, req.count, req.value, expires_at, req.batch).await?;
        Ok((201, json!({ "batch": batch, "value": req.value, "expires_at": expires_at, "codes": codes })))
    };
    respond(&r, reply.await)
}

pub async fn list_codes<P: Platform>(State(r): R<P>, parts: Parts) -> Response {
    let reply = async {
        admin(&r, &parts).await?;
        let (pg, page_no, per) = page(&parts)?;
        let rows = r.ports.store.codes(pg).await.map_err(store_error)?;
        Ok((200, listing(rows.items.iter().map(to_value).collect(), rows.total, page_no, per)))
    };
    respond(&r, reply.await)
}

#[derive(Deserialize)]
struct ReservationQuery {
    state: Option<String>,
}

pub async fn reservations<P: Platform>(State(r): R<P>, parts: Parts) -> Response {
    let reply = async {
        admin(&r, &parts).await?;
        let (pg, page_no, per) = page(&parts)?;
        let q: ReservationQuery = query(&parts)?;
        let rows = r.ports.store.reservations(q.state, pg).await.map_err(store_error)?;
        Ok((200, listing(rows.items.iter().map(to_value).collect(), rows.total, page_no, per)))
    };
    respond(&r, reply.await)
}

#[derive(Deserialize)]
struct JobQuery {
    state: Option<String>,
}

/// `GET /api/admin/jobs?state=dead`: jobs parked after repeated failures.
pub async fn jobs<P: Platform>(State(r): R<P>, parts: Parts) -> Response {
    let reply = async {
        admin(&r, &parts).await?;
        let (pg, page_no, per) = page(&parts)?;
        let q: JobQuery = query(&parts)?;
        if q.state.as_deref().is_some_and(|s| s != "dead") {
            return Err(ApiError::invalid("invalid_state", "Only `state=dead` jobs are listed.").with_param("state"));
        }
        let rows = r.ports.store.dead_jobs(pg).await.map_err(store_error)?;
        Ok((200, listing(rows.items.iter().map(to_value).collect(), rows.total, page_no, per)))
    };
    respond(&r, reply.await)
}

pub async fn alerts<P: Platform>(State(r): R<P>, parts: Parts) -> Response {
    let reply = async {
        admin(&r, &parts).await?;
        let (pg, page_no, per) = page(&parts)?;
        let rows = r.ports.store.alerts(pg).await.map_err(store_error)?;
        Ok((200, listing(rows.items.iter().map(to_value).collect(), rows.total, page_no, per)))
    };
    respond(&r, reply.await)
}

// ---- the caller's own account

/// `GET /api/account`: the key's owner and the key itself.
pub async fn account<P: Platform>(State(r): R<P>, parts: Parts) -> Response {
    let reply = async {
        let me = r.caller(&parts).await?;
        // The cached principal may lag a little on balances; read them fresh.
        let user = r.ports.store.user(me.user.id).await.map_err(store_error)?;
        let token = match &me.token {
            Some(t) => r.ports.store.token(t.id).await.map_err(store_error)?,
            None => None,
        };
        Ok((200, json!({ "user": user, "token": token })))
    };
    respond(&r, reply.await)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Redeem {
    code: String,
}

pub async fn redeem<P: Platform>(State(r): R<P>, parts: Parts, raw: Body) -> Response {
    let reply = async {
        let me = r.caller(&parts).await?;
        let req: Redeem = json_body(&parts, raw).await?;
        let now = r.ports.clock.now_ms();
        let hash = apikey::hash(req.code.trim());
        match r.ports.store.redeem(&hash, me.user.id, &me.user.name, now).await.map_err(store_error)? {
            Ok(user) => {
                r.audit(&parts, Audit::new("code_redeem", Some(me.user.id), Some(me.user.id))).await;
                Ok((200, json!({ "balance": user.quota, "user": user })))
            }
            Err(RedeemError::Unknown) => {
                Err(ApiError::not_found("code_not_found", "This redemption code does not exist."))
            }
            Err(RedeemError::AlreadyUsed) => Err(ApiError::new(
                ErrorKind::Conflict,
                "code_already_used",
                "This redemption code has already been used.",
            )),
            Err(RedeemError::Expired) => Err(ApiError::invalid("code_expired", "This redemption code has expired.")),
        }
    };
    respond(&r, reply.await)
}

/// `GET /api/usage`: the caller's own usage rows (same filters as the admin's,
/// scoped to their user).
pub async fn own_usage<P: Platform>(State(r): R<P>, parts: Parts) -> Response {
    let reply = async {
        let me = r.caller(&parts).await?;
        let (pg, page_no, per) = page(&parts)?;
        let q: UsageQuery = query(&parts)?;
        let filter = UsageFilter { user_id: Some(me.user.id), ..usage_filter(q)? };
        let rows = r.ports.store.usage(filter, pg).await.map_err(store_error)?;
        let items: Vec<Value> = rows.items.iter().map(to_value).collect();
        Ok((200, listing(items, rows.total, page_no, per)))
    };
    respond(&r, reply.await)
}
