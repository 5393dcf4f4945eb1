//! The durable store port: users, tokens, channels, groups, prices, usage.

use std::future::Future;

use ipnet::IpNet;
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
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserPatch {
    pub role: Option<Role>,
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
    fn prices(&self) -> impl Future<Output = StoreResult<Vec<Price>>> + Send;
    fn put_price(&self, price: Price) -> impl Future<Output = StoreResult<()>> + Send;
    fn delete_price(&self, model: &str) -> impl Future<Output = StoreResult<()>> + Send;

    /// Makes the store's config-owned rows match the file: upserts what it
    /// declares (keeping runtime status such as auto-disabled), removes what it
    /// no longer declares. API-declared rows are untouched.
    fn sync_config(&self, config: ConfigSnapshot, now_ms: i64) -> impl Future<Output = StoreResult<()>> + Send;

    /// Writes the record and charges its cost to the token and its user, in one
    /// transaction. Returns false (and changes nothing) when the request id was
    /// already recorded.
    fn record_usage(&self, record: &UsageRecord) -> impl Future<Output = StoreResult<bool>> + Send;
    fn usage(&self, filter: UsageFilter, page: Page) -> impl Future<Output = StoreResult<Paged<UsageRecord>>> + Send;
}
