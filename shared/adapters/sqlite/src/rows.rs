//! Row ↔ entity mapping.

use oblivious_core::model::{
    Channel, ChannelStatus, Price, Role, Source, Token, TokenStatus, UsageRecord, User, UserStatus,
};
use rusqlite::Row;

pub(crate) const USER_COLS: &str = "id, name, role, grp, status, quota, used_quota, created_at, unlimited";
pub(crate) const TOKEN_COLS: &str =
    "id, user_id, name, key_hash, key_hint, status, unlimited, remaining_quota, used_quota, models, ips, expires_at, created_at, daily_limit, monthly_limit";
pub(crate) const CHANNEL_COLS: &str = "id, spec, status, status_reason, source, updated_at";
pub(crate) const USAGE_COLS: &str = "request_id, created_at, endpoint, user_id, token_id, channel_id, key_index, \
    requested_model, upstream_model, prompt_tokens, completion_tokens, total_tokens, usage_estimated, cost, \
    latency_ms, ttfb_ms, status, stream, retries, error, cached_tokens, reserved, price_version";
pub(crate) const PRICE_COLS: &str =
    "id, model, effective_at, input_per_m, output_per_m, cached_input_per_m, per_request, \
    per_image, per_audio_second, free, retired";

fn bad(col: usize, what: &str) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(col, rusqlite::types::Type::Text, what.to_string().into())
}

fn json<T: serde::de::DeserializeOwned>(row: &Row, col: usize) -> rusqlite::Result<T> {
    let text: String = row.get(col)?;
    serde_json::from_str(&text)
        .map_err(|e| rusqlite::Error::FromSqlConversionFailure(col, rusqlite::types::Type::Text, Box::new(e)))
}

pub(crate) fn role_str(r: Role) -> &'static str {
    match r {
        Role::Admin => "admin",
        Role::User => "user",
    }
}

pub(crate) fn user_status_str(s: UserStatus) -> &'static str {
    match s {
        UserStatus::Enabled => "enabled",
        UserStatus::Disabled => "disabled",
    }
}

pub(crate) fn user(row: &Row) -> rusqlite::Result<User> {
    let role: String = row.get(2)?;
    let status: String = row.get(4)?;
    Ok(User {
        id: row.get(0)?,
        name: row.get(1)?,
        role: if role == "admin" { Role::Admin } else { Role::User },
        group: row.get(3)?,
        status: if status == "disabled" { UserStatus::Disabled } else { UserStatus::Enabled },
        quota: row.get(5)?,
        used_quota: row.get(6)?,
        created_at: row.get(7)?,
        unlimited: row.get(8)?,
    })
}

pub(crate) fn token(row: &Row) -> rusqlite::Result<Token> {
    let status: String = row.get(5)?;
    Ok(Token {
        id: row.get(0)?,
        user_id: row.get(1)?,
        name: row.get(2)?,
        key_hash: row.get(3)?,
        key_hint: row.get(4)?,
        status: TokenStatus::parse(&status).ok_or_else(|| bad(5, "token status"))?,
        unlimited: row.get(6)?,
        remaining_quota: row.get(7)?,
        used_quota: row.get(8)?,
        models: json(row, 9)?,
        ips: json(row, 10)?,
        expires_at: row.get(11)?,
        created_at: row.get(12)?,
        daily_limit: row.get(13)?,
        monthly_limit: row.get(14)?,
    })
}

pub(crate) fn channel(row: &Row, sealer: &oblivious_ports::Sealer) -> rusqlite::Result<Channel> {
    let stored: String = row.get(1)?;
    let spec = sealer
        .open_spec(&stored)
        .map_err(|e| rusqlite::Error::FromSqlConversionFailure(1, rusqlite::types::Type::Text, e.to_string().into()))?;
    let status: String = row.get(2)?;
    let source: String = row.get(4)?;
    Ok(Channel {
        id: row.get(0)?,
        spec,
        status: ChannelStatus::parse(&status).ok_or_else(|| bad(2, "channel status"))?,
        status_reason: row.get(3)?,
        source: if source == "config" { Source::Config } else { Source::Api },
        updated_at: row.get(5)?,
    })
}

pub(crate) fn usage(row: &Row) -> rusqlite::Result<UsageRecord> {
    Ok(UsageRecord {
        request_id: row.get(0)?,
        created_at: row.get(1)?,
        endpoint: row.get(2)?,
        user_id: row.get(3)?,
        token_id: row.get(4)?,
        channel_id: row.get(5)?,
        key_index: row.get(6)?,
        requested_model: row.get(7)?,
        upstream_model: row.get(8)?,
        prompt_tokens: row.get(9)?,
        completion_tokens: row.get(10)?,
        total_tokens: row.get(11)?,
        usage_estimated: row.get(12)?,
        cost: row.get(13)?,
        latency_ms: row.get(14)?,
        ttfb_ms: row.get(15)?,
        status: row.get(16)?,
        stream: row.get(17)?,
        retries: row.get(18)?,
        error: row.get(19)?,
        cached_tokens: row.get(20)?,
        reserved: row.get(21)?,
        price_version: row.get(22)?,
    })
}

pub(crate) fn price(row: &Row) -> rusqlite::Result<Price> {
    Ok(Price {
        version: row.get(0)?,
        model: row.get(1)?,
        effective_at: row.get(2)?,
        input_per_m: row.get(3)?,
        output_per_m: row.get(4)?,
        cached_input_per_m: row.get(5)?,
        per_request: row.get(6)?,
        per_image: row.get(7)?,
        per_audio_second: row.get(8)?,
        free: row.get(9)?,
        retired: row.get(10)?,
    })
}
