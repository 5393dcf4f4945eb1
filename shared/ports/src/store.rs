//! The durable store port: users, tokens, channels, groups, prices, usage.

use std::future::Future;

use ipnet::IpNet;
use oblivious_core::alerts::Alert;
use oblivious_core::model::{
    Channel, ChannelSpec, ChannelStatus, Group, Id, Price, Role, Token, TokenStatus, UsageRecord, User, UserStatus,
};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error("{0} not found")]
    NotFound(String),
    #[error("conflict: {0}")]
    Conflict(String),
    #[error("store backend failed: {0}")]
    Backend(String),
}

pub type StoreResult<T> = Result<T, StoreError>;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Page {
    pub offset: u64,
    pub limit: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Paged<T> {
    pub items: Vec<T>,
    pub total: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct NewUser {
    pub name: String,
    pub role: Role,
    pub group: String,
    pub quota: i64,
    #[serde(default)]
    pub unlimited: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserPatch {
    pub role: Option<Role>,
    pub unlimited: Option<bool>,
    pub group: Option<String>,
    pub status: Option<UserStatus>,
    pub quota: Option<i64>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewToken {
    pub user_id: Id,
    pub name: String,
    pub key_hash: String,
    pub key_hint: String,
    pub unlimited: bool,
    pub remaining_quota: i64,
    pub models: Vec<String>,
    pub ips: Vec<IpNet>,
    pub expires_at: Option<i64>,
    pub daily_limit: Option<i64>,
    pub monthly_limit: Option<i64>,
}

/// A partial update; `expires_at: Some(None)` clears the expiry.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TokenPatch {
    pub name: Option<String>,
    pub status: Option<TokenStatus>,
    pub unlimited: Option<bool>,
    pub remaining_quota: Option<i64>,
    pub models: Option<Vec<String>>,
    pub ips: Option<Vec<IpNet>>,
    pub expires_at: Option<Option<i64>>,
    pub daily_limit: Option<Option<i64>>,
    pub monthly_limit: Option<Option<i64>>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TokenFilter {
    pub user_id: Option<Id>,
    pub include_deleted: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct UsageFilter {
    pub user_id: Option<Id>,
    pub token_id: Option<Id>,
    pub channel_id: Option<Id>,
    pub model: Option<String>,
    pub status: Option<u16>,
    /// Unix ms, inclusive.
    pub since: Option<i64>,
    /// Unix ms, exclusive.
    pub until: Option<i64>,
}

/// A token and its owner as a usage record left them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settled {
    pub token: Option<Token>,
    pub user: Option<User>,
}

/// What the config file declares; synced into the store in one transaction.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConfigSnapshot {
    pub groups: Vec<Group>,
    pub prices: Vec<Price>,
    pub channels: Vec<ChannelSpec>,
}

pub trait Store: Send + Sync + 'static {
    /// Bumped by every change that cached snapshots depend on (tokens, users,
    /// channels, groups, prices), including changes by other processes.
    fn revision(&self) -> impl Future<Output = StoreResult<i64>> + Send;

    /// What this store seals channel keys with (the deployment's secret).
    /// Whatever keeps a copy of store data outside the store (hot state)
    /// seals it with the same sealer.
    fn sealer(&self) -> crate::Sealer;

    fn user(&self, id: Id) -> impl Future<Output = StoreResult<Option<User>>> + Send;
    fn user_by_name(&self, name: &str) -> impl Future<Output = StoreResult<Option<User>>> + Send;
    fn users(&self, page: Page) -> impl Future<Output = StoreResult<Paged<User>>> + Send;
    fn create_user(&self, user: NewUser, now_ms: i64) -> impl Future<Output = StoreResult<User>> + Send;
    fn update_user(&self, id: Id, patch: UserPatch) -> impl Future<Output = StoreResult<User>> + Send;
    /// Deletes the user and soft-deletes their tokens.
    fn delete_user(&self, id: Id) -> impl Future<Output = StoreResult<()>> + Send;

    fn token(&self, id: Id) -> impl Future<Output = StoreResult<Option<Token>>> + Send;
    fn token_by_hash(&self, key_hash: &str) -> impl Future<Output = StoreResult<Option<Token>>> + Send;
    fn tokens(&self, filter: TokenFilter, page: Page) -> impl Future<Output = StoreResult<Paged<Token>>> + Send;
    fn create_token(&self, token: NewToken, now_ms: i64) -> impl Future<Output = StoreResult<Token>> + Send;
    fn update_token(&self, id: Id, patch: TokenPatch) -> impl Future<Output = StoreResult<Token>> + Send;

    fn channels(&self) -> impl Future<Output = StoreResult<Vec<Channel>>> + Send;
    fn channel(&self, id: Id) -> impl Future<Output = StoreResult<Option<Channel>>> + Send;
    fn create_channel(&self, spec: ChannelSpec, now_ms: i64) -> impl Future<Output = StoreResult<Channel>> + Send;
    /// Replaces an API-declared channel's spec; config channels answer Conflict.
    fn update_channel(
        &self,
        id: Id,
        spec: ChannelSpec,
        now_ms: i64,
    ) -> impl Future<Output = StoreResult<Channel>> + Send;
    fn delete_channel(&self, id: Id) -> impl Future<Output = StoreResult<()>> + Send;
    fn set_channel_status(
        &self,
        id: Id,
        status: ChannelStatus,
        reason: Option<String>,
        now_ms: i64,
    ) -> impl Future<Output = StoreResult<()>> + Send;

    fn groups(&self) -> impl Future<Output = StoreResult<Vec<Group>>> + Send;
    fn put_group(&self, group: Group) -> impl Future<Output = StoreResult<()>> + Send;
    fn delete_group(&self, name: &str) -> impl Future<Output = StoreResult<()>> + Send;
    /// Every price version, oldest first.
    fn prices(&self) -> impl Future<Output = StoreResult<Vec<Price>>> + Send;
    /// Adds a version (effective at `price.effective_at`); returns it with its id.
    fn put_price(&self, price: Price) -> impl Future<Output = StoreResult<Price>> + Send;

    /// Makes the store's config-owned rows match the file: upserts what it
    /// declares (keeping runtime status such as auto-disabled), removes what it
    /// no longer declares. API-declared rows are untouched.
    fn sync_config(&self, config: ConfigSnapshot, now_ms: i64) -> impl Future<Output = StoreResult<()>> + Send;

    /// Writes each record and settles its request's money, all in one
    /// transaction: an open reservation is settled to the cost (the rest
    /// released), a reservation the sweeper already refunded is charged the
    /// cost again, and a request without one is charged the cost. For each
    /// record: the token and user after settling, or `None` (and nothing
    /// changed) when its request id was already recorded.
    fn record_usages(
        &self,
        records: Vec<UsageRecord>,
    ) -> impl Future<Output = StoreResult<Vec<Option<Settled>>>> + Send;
    fn usage(&self, filter: UsageFilter, page: Page) -> impl Future<Output = StoreResult<Paged<UsageRecord>>> + Send;
}

/// Money held for one request between the upstream call and its settlement.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reservation {
    pub request_id: String,
    pub token_id: Id,
    pub user_id: Id,
    pub amount: i64,
    pub created_at: i64,
    /// `reserved`, `settled` or `refunded`.
    #[serde(default)]
    pub state: String,
    /// What was finally charged (settled) — 0 when refunded.
    #[serde(default)]
    pub charged: Option<i64>,
}

/// Why a reservation was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shortfall {
    UserBalance,
    TokenQuota,
    DailyLimit,
    MonthlyLimit,
}

impl Shortfall {
    pub fn message(self) -> &'static str {
        match self {
            Shortfall::UserBalance => "Your account balance is too low for this request. Top up, or lower max_tokens.",
            Shortfall::TokenQuota => "This API key's remaining quota is too low for this request.",
            Shortfall::DailyLimit => "This API key has reached its daily spending limit.",
            Shortfall::MonthlyLimit => "This API key has reached its monthly spending limit.",
        }
    }
}

/// A balance change that is not a request's charge (those live in
/// reservations and the usage log).
/// A job the consumer gave up on after repeated failures, kept for an
/// operator (`GET /api/admin/jobs?state=dead`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadJob {
    pub id: i64,
    /// `usage` or `webhook`.
    pub kind: String,
    /// Its idempotency key: a usage record's request id, a webhook's id.
    pub key: String,
    pub attempts: i64,
    pub last_error: Option<String>,
    pub created_at: i64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerEntry {
    pub id: Id,
    pub user_id: Id,
    pub delta: i64,
    pub balance_after: i64,
    /// `topup`, `redeem` or `adjust`.
    pub kind: String,
    /// Who made the change (user name, or `cli`).
    pub actor: String,
    pub note: String,
    pub created_at: i64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RedemptionCode {
    pub id: Id,
    pub batch: String,
    pub code_hint: String,
    pub value: i64,
    pub expires_at: Option<i64>,
    pub redeemed_by: Option<Id>,
    pub redeemed_at: Option<i64>,
    pub created_at: i64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RedeemError {
    Unknown,
    AlreadyUsed,
    Expired,
}

/// `balance + delta` within `±MAX_UNITS`, or the conflict (prefixed
/// `amount_out_of_range`) the admin API answers as a 400. Every store moves
/// an admin's or a code's balance change through it.
pub fn bounded_balance(balance: i64, delta: i64) -> StoreResult<i64> {
    use oblivious_core::money::{checked_balance, MAX_UNITS, OUT_OF_RANGE};
    checked_balance(balance, delta).ok_or_else(|| {
        StoreError::Conflict(format!(
            "{OUT_OF_RANGE}: a balance of {balance} units changed by {delta} leaves ±{MAX_UNITS} units ($1 billion)"
        ))
    })
}

/// Daily/monthly period keys (UTC) for spend caps: `d:2026-11-24`, `m:2026-11`.
pub fn spend_periods(now_ms: i64) -> (String, String) {
    let t = chrono::DateTime::from_timestamp_millis(now_ms).unwrap_or_default();
    (format!("d:{}", t.format("%Y-%m-%d")), format!("m:{}", t.format("%Y-%m")))
}

/// Billing operations, kept apart from CRUD so each backend implements the
/// money paths as atomic units.
pub trait Ledger: Send + Sync + 'static {
    /// Atomically holds `amount` against the user's balance, the token's quota
    /// and its daily/monthly caps (each skipped where unlimited or unset).
    fn reserve(&self, r: Reservation) -> impl Future<Output = StoreResult<Result<(), Shortfall>>> + Send;
    /// Refunds reservations still open that were made before `cutoff_ms`;
    /// returns how many.
    fn sweep_reservations(&self, cutoff_ms: i64, now_ms: i64) -> impl Future<Output = StoreResult<u64>> + Send;
    fn reservations(
        &self,
        state: Option<String>,
        page: Page,
    ) -> impl Future<Output = StoreResult<Paged<Reservation>>> + Send;
    /// Credits (or with a negative delta, debits) a user's balance, with a ledger entry.
    fn adjust_balance(
        &self,
        user_id: Id,
        delta: i64,
        kind: &str,
        actor: &str,
        note: &str,
        now_ms: i64,
    ) -> impl Future<Output = StoreResult<User>> + Send;
    fn ledger(&self, user_id: Option<Id>, page: Page) -> impl Future<Output = StoreResult<Paged<LedgerEntry>>> + Send;
    /// Stores codes by hash: `(code_hash, code_hint)` each worth `value`.
    fn create_codes(
        &self,
        batch: &str,
        codes: Vec<(String, String)>,
        value: i64,
        expires_at: Option<i64>,
        now_ms: i64,
    ) -> impl Future<Output = StoreResult<()>> + Send;
    fn codes(&self, page: Page) -> impl Future<Output = StoreResult<Paged<RedemptionCode>>> + Send;
    /// The lowest alert threshold recorded for `subject` (`user:ID`, `token:ID`).
    fn alert_level(&self, subject: &str) -> impl Future<Output = StoreResult<Option<i64>>> + Send;
    /// Stores new alerts and the subject's level together; returns them with ids.
    fn record_alerts(
        &self,
        subject: &str,
        level: Option<i64>,
        alerts: Vec<Alert>,
    ) -> impl Future<Output = StoreResult<Vec<Alert>>> + Send;
    fn alerts(&self, page: Page) -> impl Future<Output = StoreResult<Paged<Alert>>> + Send;
    /// Jobs parked after too many failed attempts (the local outbox's dead
    /// letters). Stores whose queue keeps its own (AWS: the SQS dead-letter
    /// queue) list none here.
    fn dead_jobs(&self, page: Page) -> impl Future<Output = StoreResult<Paged<DeadJob>>> + Send {
        let _ = page;
        async { Ok(Paged { items: vec![], total: 0 }) }
    }
    /// Marks the code used by `user_id` and credits its value, once.
    fn redeem(
        &self,
        code_hash: &str,
        user_id: Id,
        actor: &str,
        now_ms: i64,
    ) -> impl Future<Output = StoreResult<Result<User, RedeemError>>> + Send;
}

/// How usage statistics are split.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GroupBy {
    Model,
    Token,
    User,
    Channel,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Interval {
    Hour,
    Day,
    Month,
}

/// Aggregates of the usage log over one bucket of time and one key.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct UsageStat {
    /// `2026-11-24T10:00:00Z`, `2026-11-24`, `2026-11`, or `all`.
    pub bucket: String,
    /// The model, token id, user id or channel id; empty when not grouped.
    pub key: String,
    pub requests: i64,
    pub successes: i64,
    pub errors: i64,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub cost: i64,
    /// Nearest-rank latency percentiles, ms.
    pub latency_p50: i64,
    pub latency_p95: i64,
    pub latency_p99: i64,
}

/// Reading the usage log in bulk: aggregates, and keyset pages for exports.
pub trait UsageLog: Send + Sync + 'static {
    fn usage_stats(
        &self,
        filter: UsageFilter,
        group_by: Option<GroupBy>,
        interval: Option<Interval>,
    ) -> impl Future<Output = StoreResult<Vec<UsageStat>>> + Send;
    /// Up to `limit` rows after the `(created_at, request_id)` cursor, oldest first.
    fn usage_page(
        &self,
        filter: UsageFilter,
        after: Option<(i64, String)>,
        limit: u64,
    ) -> impl Future<Output = StoreResult<Vec<UsageRecord>>> + Send;
}
