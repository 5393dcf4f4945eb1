//! Durable entities. Times are Unix milliseconds; money is integer quota units
//! (1 unit = 1 micro-USD, so 1_000_000 units = $1).

use std::collections::BTreeMap;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

pub type Id = i64;

/// One US dollar in quota units.
pub const UNITS_PER_USD: i64 = 1_000_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// The bootstrap user: everything an admin may do, and managing admins.
    Root,
    Admin,
    User,
}

impl Role {
    /// Higher is more privileged; a role may grant only roles at or below its own.
    pub fn rank(self) -> u8 {
        match self {
            Role::Root => 2,
            Role::Admin => 1,
            Role::User => 0,
        }
    }

    /// At least as privileged as `other`.
    pub fn covers(self, other: Role) -> bool {
        self.rank() >= other.rank()
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Root => "root",
            Role::Admin => "admin",
            Role::User => "user",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UserStatus {
    Enabled,
    Disabled,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    pub id: Id,
    pub name: String,
    pub role: Role,
    pub group: String,
    pub status: UserStatus,
    /// Balance in quota units; requests reserve from it before going upstream.
    pub quota: i64,
    pub used_quota: i64,
    /// No balance is enforced (the bootstrap admin is unlimited).
    #[serde(default)]
    pub unlimited: bool,
    pub created_at: i64,
}

/// The status an operator sets. Expired and exhausted are derived from the
/// token's expiry and remaining quota, see [`Token::effective_status`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenStatus {
    Normal,
    Disabled,
    Expired,
    Exhausted,
    Deleted,
}

impl TokenStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            TokenStatus::Normal => "normal",
            TokenStatus::Disabled => "disabled",
            TokenStatus::Expired => "expired",
            TokenStatus::Exhausted => "exhausted",
            TokenStatus::Deleted => "deleted",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "normal" => TokenStatus::Normal,
            "disabled" => TokenStatus::Disabled,
            "expired" => TokenStatus::Expired,
            "exhausted" => TokenStatus::Exhausted,
            "deleted" => TokenStatus::Deleted,
            _ => return None,
        })
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Token {
    pub id: Id,
    pub user_id: Id,
    pub name: String,
    /// SHA-256 of the full key, hex. The key itself is never stored.
    #[serde(skip_serializing)]
    pub key_hash: String,
    /// `sk-abcd…wxyz`, enough to recognise a key in a list.
    pub key_hint: String,
    /// What the operator set: normal, disabled or deleted.
    pub status: TokenStatus,
    pub unlimited: bool,
    /// Remaining quota units when not unlimited.
    pub remaining_quota: i64,
    pub used_quota: i64,
    /// Allowed models (exact or `prefix*`); empty means every model.
    pub models: Vec<String>,
    /// Allowed client networks; empty means any address.
    pub ips: Vec<IpNet>,
    pub expires_at: Option<i64>,
    /// Spending caps per UTC day and month, in quota units.
    #[serde(default)]
    pub daily_limit: Option<i64>,
    #[serde(default)]
    pub monthly_limit: Option<i64>,
    pub created_at: i64,
}

impl Token {
    /// The state a caller meets at `now_ms`: deleted and disabled win over
    /// expired, which wins over exhausted.
    pub fn effective_status(&self, now_ms: i64) -> TokenStatus {
        match self.status {
            TokenStatus::Deleted | TokenStatus::Disabled => self.status,
            _ if self.expires_at.is_some_and(|t| t <= now_ms) => TokenStatus::Expired,
            _ if !self.unlimited && self.remaining_quota <= 0 => TokenStatus::Exhausted,
            _ => TokenStatus::Normal,
        }
    }
}

pub use crate::provider::ChannelType;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeySelection {
    #[default]
    Random,
    RoundRobin,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChannelStatus {
    Enabled,
    /// Turned off by an operator.
    Disabled,
    /// Turned off by the gateway after repeated failures; a passing test revives it.
    AutoDisabled,
}

impl ChannelStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ChannelStatus::Enabled => "enabled",
            ChannelStatus::Disabled => "disabled",
            ChannelStatus::AutoDisabled => "auto_disabled",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "enabled" => ChannelStatus::Enabled,
            "disabled" => ChannelStatus::Disabled,
            "auto_disabled" => ChannelStatus::AutoDisabled,
            _ => return None,
        })
    }
}

/// Where a channel was declared: config-file channels are owned by the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    Config,
    Api,
}

/// What a channel is, as declared (config file or admin API).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelSpec {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: ChannelType,
    /// Empty: the type's default (or, for vertex and bedrock, one built from `region`).
    #[serde(default)]
    pub base_url: String,
    #[serde(default)]
    pub keys: Vec<String>,
    #[serde(default)]
    pub models: Vec<String>,
    #[serde(default)]
    pub model_mapping: BTreeMap<String, String>,
    #[serde(default = "default_weight")]
    pub weight: u32,
    #[serde(default)]
    pub priority: i64,
    #[serde(default = "default_groups")]
    pub groups: Vec<String>,
    #[serde(default)]
    pub key_selection: KeySelection,
    /// Azure `api-version`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    /// Bedrock region, Vertex location.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Vertex project id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
}

fn default_weight() -> u32 {
    1
}

fn default_groups() -> Vec<String> {
    vec![crate::config::DEFAULT_GROUP.to_string()]
}

impl ChannelSpec {
    /// The base URL requests go to: as configured, else the type's default.
    pub fn base_url(&self) -> String {
        if !self.base_url.is_empty() {
            return self.base_url.trim_end_matches('/').to_string();
        }
        let region = self.region.as_deref().unwrap_or("");
        match self.kind {
            ChannelType::Vertex if !region.is_empty() => format!("https://{region}-aiplatform.googleapis.com"),
            ChannelType::Bedrock if !region.is_empty() => format!("https://bedrock-runtime.{region}.amazonaws.com"),
            k => k.info().default_base_url.unwrap_or("").to_string(),
        }
    }

    /// Checks what the type system cannot; returns the offending field and why.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        if self.name.trim().is_empty() {
            return Err(("name", "must not be empty".into()));
        }
        let base = self.base_url();
        if base.is_empty() {
            let need = match self.kind {
                ChannelType::Vertex | ChannelType::Bedrock => "set `region` (or `base_url`)",
                _ => "set `base_url` (this type has no default)",
            };
            return Err(("base_url", format!("{need} for a `{}` channel", self.kind.as_str())));
        }
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(("base_url", format!("`{base}` must start with http:// or https://")));
        }
        if self.kind == ChannelType::Vertex && self.project.is_none() {
            return Err(("project", "a `vertex` channel needs its Google Cloud `project`".into()));
        }
        if self.models.is_empty() && self.model_mapping.is_empty() {
            return Err(("models", "list at least one model (exact name or `prefix*`)".into()));
        }
        if let Some(m) = self.models.iter().find(|m| m.is_empty() || m[..m.len() - 1].contains('*')) {
            return Err(("models", format!("`{m}` is not a model name or `prefix*` pattern")));
        }
        if self.groups.is_empty() {
            return Err(("group", "name at least one group".into()));
        }
        Ok(())
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Channel {
    pub id: Id,
    #[serde(flatten)]
    pub spec: ChannelSpec,
    pub status: ChannelStatus,
    pub status_reason: Option<String>,
    pub source: Source,
    pub updated_at: i64,
}

impl Channel {
    /// The upstream model name for a requested model (alias mapping applied).
    pub fn upstream_model<'a>(&'a self, requested: &'a str) -> &'a str {
        self.spec.model_mapping.get(requested).map(String::as_str).unwrap_or(requested)
    }

    /// Whether this channel serves `model`: listed (exactly or by `prefix*`), or an alias.
    pub fn serves(&self, model: &str) -> bool {
        self.spec.model_mapping.contains_key(model)
            || self.spec.models.iter().any(|p| crate::pattern::matches(p, model))
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Group {
    pub name: String,
    /// Price multiplier in basis points: 10_000 = 1.0, 8_000 = 0.8.
    pub ratio_bp: i64,
    #[serde(default)]
    pub description: String,
}

/// One version of a model's price, in quota units (micro-USD). Versions are
/// never edited: a change is a new version with its own effective time, and
/// each usage record names the version it was charged at.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Price {
    /// Version id (assigned by the store).
    #[serde(default)]
    pub version: Id,
    /// An exact model name, or `prefix*` (exact names win, then the longest prefix).
    pub model: String,
    /// Unix ms from which this version applies.
    #[serde(default)]
    pub effective_at: i64,
    /// Units per 1M prompt tokens.
    #[serde(default)]
    pub input_per_m: i64,
    /// Units per 1M completion tokens.
    #[serde(default)]
    pub output_per_m: i64,
    /// Units per 1M cached prompt tokens; `None` charges them as input.
    #[serde(default)]
    pub cached_input_per_m: Option<i64>,
    /// Units charged once per request.
    #[serde(default)]
    pub per_request: i64,
    #[serde(default)]
    pub per_image: i64,
    #[serde(default)]
    pub per_audio_second: i64,
    /// Explicitly free (a model with no price at all is refused).
    #[serde(default)]
    pub free: bool,
    /// This version removes the model's price.
    #[serde(default)]
    pub retired: bool,
}

impl Price {
    /// Same charges (ignoring version, time and model name).
    pub fn same_rates(&self, other: &Price) -> bool {
        (
            self.input_per_m,
            self.output_per_m,
            self.cached_input_per_m,
            self.per_request,
            self.per_image,
            self.per_audio_second,
            self.free,
            self.retired,
        ) == (
            other.input_per_m,
            other.output_per_m,
            other.cached_input_per_m,
            other.per_request,
            other.per_image,
            other.per_audio_second,
            other.free,
            other.retired,
        )
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageRecord {
    pub request_id: String,
    pub created_at: i64,
    pub endpoint: String,
    pub user_id: Id,
    pub token_id: Id,
    pub channel_id: Option<Id>,
    pub key_index: Option<u32>,
    pub requested_model: String,
    pub upstream_model: String,
    pub prompt_tokens: i64,
    /// Of the prompt tokens, how many the upstream served from its cache.
    #[serde(default)]
    pub cached_tokens: i64,
    pub completion_tokens: i64,
    pub total_tokens: i64,
    /// True when the counts came from our own tokenizer, not the upstream.
    pub usage_estimated: bool,
    /// Units reserved before the upstream call (settled to `cost`).
    #[serde(default)]
    pub reserved: i64,
    pub cost: i64,
    /// The price version charged (none for refused requests).
    #[serde(default)]
    pub price_version: Option<Id>,
    pub latency_ms: i64,
    pub ttfb_ms: Option<i64>,
    pub status: u16,
    pub stream: bool,
    pub retries: u32,
    pub error: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token() -> Token {
        Token {
            id: 1,
            user_id: 1,
            name: "t".into(),
            key_hash: String::new(),
            key_hint: String::new(),
            status: TokenStatus::Normal,
            unlimited: false,
            remaining_quota: 10,
            used_quota: 0,
            models: vec![],
            ips: vec![],
            expires_at: None,
            daily_limit: None,
            monthly_limit: None,
            created_at: 0,
        }
    }

    #[test]
    fn effective_status_order() {
        let mut t = token();
        assert_eq!(t.effective_status(0), TokenStatus::Normal);
        t.remaining_quota = 0;
        assert_eq!(t.effective_status(0), TokenStatus::Exhausted);
        t.unlimited = true;
        assert_eq!(t.effective_status(0), TokenStatus::Normal);
        t.expires_at = Some(5);
        assert_eq!(t.effective_status(4), TokenStatus::Normal);
        assert_eq!(t.effective_status(5), TokenStatus::Expired);
        t.status = TokenStatus::Disabled;
        assert_eq!(t.effective_status(5), TokenStatus::Disabled);
    }
}
