//! Usage analytics (totals and time series by model, token, user or channel)
//! and CSV export that streams any number of rows in keyset pages, so memory
//! stays flat. Admins see everything; a key's owner sees their own.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::response::Response;
use bytes::Bytes;
use http::request::Parts;
use http::HeaderValue;
use oblivious_core::model::UsageRecord;
use oblivious_core::ApiError;
use oblivious_ports::{GroupBy, Ids, Interval, Platform, UsageFilter, UsageLog, UsageStat};
use oblivious_relay::Relay;
use serde::Deserialize;
use serde_json::json;

use crate::handlers::{admin, query, respond, to_value, usage_filter, UsageQuery};
use crate::store_error;

type R<P> = State<Arc<Relay<P>>>;

/// Rows per store read while exporting.
const EXPORT_PAGE: u64 = 1000;

#[derive(Deserialize)]
struct StatsQuery {
    group_by: Option<GroupBy>,
    interval: Option<Interval>,
}

/// The caller's scope: everything for an admin on `/api/admin/…`, their own
/// rows otherwise.
async fn scope<P: Platform>(r: &Relay<P>, parts: &Parts, as_admin: bool) -> Result<UsageFilter, ApiError> {
    let q: UsageQuery = query(parts)?;
    let filter = usage_filter(q)?;
    if as_admin {
        admin(r, parts).await?;
        Ok(filter)
    } else {
        let me = r.caller(parts).await?;
        Ok(UsageFilter { user_id: Some(me.user.id), ..filter })
    }
}

fn with_rates(s: &UsageStat) -> serde_json::Value {
    let mut v = to_value(s);
    let rate = |n: i64| if s.requests == 0 { 0.0 } else { n as f64 / s.requests as f64 };
    v["success_rate"] = json!(rate(s.successes));
    v["error_rate"] = json!(rate(s.errors));
    v
}

async fn stats<P: Platform>(r: &Relay<P>, parts: &Parts, as_admin: bool) -> Result<(u16, serde_json::Value), ApiError> {
    let filter = scope(r, parts, as_admin).await?;
    let q: StatsQuery = query(parts)?;
    let store = &r.ports.store;
    let series = store.usage_stats(filter.clone(), q.group_by, q.interval).await.map_err(store_error)?;
    let totals = store.usage_stats(filter, None, None).await.map_err(store_error)?;
    let totals = totals
        .first()
        .map(with_rates)
        .unwrap_or_else(|| with_rates(&UsageStat { bucket: "all".into(), ..UsageStat::default() }));
    Ok((200, json!({ "totals": totals, "data": series.iter().map(with_rates).collect::<Vec<_>>() })))
}

pub async fn admin_stats<P: Platform>(State(r): R<P>, parts: Parts) -> Response {
    respond(&r, stats(&r, &parts, true).await)
}

pub async fn own_stats<P: Platform>(State(r): R<P>, parts: Parts) -> Response {
    respond(&r, stats(&r, &parts, false).await)
}

pub const CSV_HEADER: &str = "request_id,created_at,endpoint,user_id,token_id,channel_id,key_index,requested_model,\
upstream_model,prompt_tokens,cached_tokens,completion_tokens,total_tokens,usage_estimated,reserved,cost,price_version,\
latency_ms,ttfb_ms,status,stream,retries,error\n";

fn field(out: &mut String, s: &str) {
    if s.contains([',', '"', '\n', '\r']) {
        out.push('"');
        out.push_str(&s.replace('"', "\"\""));
        out.push('"');
    } else {
        out.push_str(s);
    }
}

fn opt<T: ToString>(v: Option<T>) -> String {
    v.map(|x| x.to_string()).unwrap_or_default()
}

fn csv_row(out: &mut String, u: &UsageRecord) {
    let cols = [
        u.request_id.clone(),
        u.created_at.to_string(),
        u.endpoint.clone(),
        u.user_id.to_string(),
        u.token_id.to_string(),
        opt(u.channel_id),
        opt(u.key_index),
        u.requested_model.clone(),
        u.upstream_model.clone(),
        u.prompt_tokens.to_string(),
        u.cached_tokens.to_string(),
        u.completion_tokens.to_string(),
        u.total_tokens.to_string(),
        u.usage_estimated.to_string(),
        u.reserved.to_string(),
        u.cost.to_string(),
        opt(u.price_version),
        u.latency_ms.to_string(),
        opt(u.ttfb_ms),
        u.status.to_string(),
        u.stream.to_string(),
        u.retries.to_string(),
        u.error.clone().unwrap_or_default(),
    ];
    for (i, c) in cols.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        field(out, c);
    }
    out.push('\n');
}

async fn export<P: Platform>(r: Arc<Relay<P>>, parts: Parts, as_admin: bool) -> Response {
    let filter = match scope(&r, &parts, as_admin).await {
        Ok(f) => f,
        Err(e) => return respond(&r, Err(e)),
    };
    struct Cursor<P: Platform> {
        relay: Arc<Relay<P>>,
        filter: UsageFilter,
        after: Option<(i64, String)>,
        header: bool,
        done: bool,
    }
    let start = Cursor { relay: r.clone(), filter, after: None, header: true, done: false };
    let body = futures_util::stream::unfold(start, |mut c| async move {
        if c.done {
            return None;
        }
        let mut out = String::new();
        if std::mem::take(&mut c.header) {
            out.push_str(CSV_HEADER);
        }
        match c.relay.ports.store.usage_page(c.filter.clone(), c.after.clone(), EXPORT_PAGE).await {
            Ok(rows) => {
                c.done = (rows.len() as u64) < EXPORT_PAGE;
                for u in &rows {
                    csv_row(&mut out, u);
                }
                c.after = rows.last().map(|u| (u.created_at, u.request_id.clone()));
                Some((Ok::<Bytes, std::io::Error>(Bytes::from(out)), c))
            }
            // Headers are gone: end the body with an error so the client sees a broken download.
            Err(e) => Some((Err(std::io::Error::other(e.to_string())), Cursor { done: true, ..c })),
        }
    });
    let mut resp = Response::new(Body::from_stream(body));
    let h = resp.headers_mut();
    h.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("text/csv; charset=utf-8"));
    h.insert(http::header::CONTENT_DISPOSITION, HeaderValue::from_static("attachment; filename=\"usage.csv\""));
    if let Ok(v) = HeaderValue::from_str(&r.ports.ids.request_id()) {
        h.insert("x-request-id", v);
    }
    resp
}

pub async fn admin_csv<P: Platform>(State(r): R<P>, parts: Parts) -> Response {
    export(r, parts, true).await
}

pub async fn own_csv<P: Platform>(State(r): R<P>, parts: Parts) -> Response {
    export(r, parts, false).await
}
