//! Row ↔ entity mapping.

use oblivious_core::model::{
    Channel, ChannelStatus, Price, Role, Source, Token, TokenStatus, UsageRecord, User, UserStatus,
};
use oblivious_ports::{Account, AuditEntry, Identity, Purpose, Session, SigningKey, Ticket};
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
    r.as_str()
}

fn parse_role(s: &str) -> Option<Role> {
    [Role::Root, Role::Admin, Role::User].into_iter().find(|r| r.as_str() == s)
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
        role: parse_role(&role).ok_or_else(|| bad(2, "user role"))?,
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

pub(crate) const ACCOUNT_COLS: &str = "user_id, email, email_verified, password_hash, display_name, settings, \
    totp_secret, totp_enabled, recovery_codes, failed_signins, locked_until, version, created_at, updated_at";
pub(crate) const SESSION_COLS: &str =
    "id, user_id, refresh_hash, ip, user_agent, created_at, last_seen_at, expires_at, revoked_at";
pub(crate) const TICKET_COLS: &str = "hash, purpose, user_id, data, created_at, expires_at";
pub(crate) const IDENTITY_COLS: &str = "provider, subject, user_id, email, created_at";
pub(crate) const SIGNING_KEY_COLS: &str = "kid, secret, created_at, expires_at";
pub(crate) const AUDIT_COLS: &str = "id, at, action, actor_id, target_id, subject, ip, user_agent, request_id, detail";

pub(crate) fn account(row: &Row) -> rusqlite::Result<Account> {
    Ok(Account {
        user_id: row.get(0)?,
        email: row.get(1)?,
        email_verified: row.get(2)?,
        password_hash: row.get(3)?,
        display_name: row.get(4)?,
        settings: json(row, 5)?,
        totp_secret: row.get(6)?,
        totp_enabled: row.get(7)?,
        recovery_codes: json(row, 8)?,
        failed_signins: row.get(9)?,
        locked_until: row.get(10)?,
        version: row.get(11)?,
        created_at: row.get(12)?,
        updated_at: row.get(13)?,
    })
}

pub(crate) fn session(row: &Row) -> rusqlite::Result<Session> {
    Ok(Session {
        id: row.get(0)?,
        user_id: row.get(1)?,
        refresh_hash: row.get(2)?,
        ip: row.get(3)?,
        user_agent: row.get(4)?,
        created_at: row.get(5)?,
        last_seen_at: row.get(6)?,
        expires_at: row.get(7)?,
        revoked_at: row.get(8)?,
    })
}

pub(crate) fn ticket(row: &Row) -> rusqlite::Result<Ticket> {
    let purpose: String = row.get(1)?;
    Ok(Ticket {
        hash: row.get(0)?,
        purpose: Purpose::parse(&purpose).ok_or_else(|| bad(1, "ticket purpose"))?,
        user_id: row.get(2)?,
        data: row.get(3)?,
        created_at: row.get(4)?,
        expires_at: row.get(5)?,
    })
}

pub(crate) fn identity(row: &Row) -> rusqlite::Result<Identity> {
    Ok(Identity {
        provider: row.get(0)?,
        subject: row.get(1)?,
        user_id: row.get(2)?,
        email: row.get(3)?,
        created_at: row.get(4)?,
    })
}

pub(crate) fn signing_key(row: &Row) -> rusqlite::Result<SigningKey> {
    Ok(SigningKey { kid: row.get(0)?, secret: row.get(1)?, created_at: row.get(2)?, expires_at: row.get(3)? })
}

pub(crate) fn audit(row: &Row) -> rusqlite::Result<AuditEntry> {
    Ok(AuditEntry {
        id: row.get(0)?,
        at: row.get(1)?,
        action: row.get(2)?,
        actor_id: row.get(3)?,
        target_id: row.get(4)?,
        subject: row.get(5)?,
        ip: row.get(6)?,
        user_agent: row.get(7)?,
        request_id: row.get(8)?,
        detail: row.get(9)?,
    })
}
