//! Creating API keys: shared by `POST /api/admin/tokens` and `oblivious token create`.

use ipnet::IpNet;
use oblivious_core::apikey;
use oblivious_core::model::{Id, Token};
use oblivious_core::ApiError;
use oblivious_ports::{Clock, Ids, NewToken, Store};
use serde::Deserialize;

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateToken {
    pub name: String,
    /// Owner; the admin API defaults it to the caller.
    pub user_id: Option<Id>,
    /// Quota units; absent (or `unlimited: true`) means unlimited.
    pub quota: Option<i64>,
    #[serde(default)]
    pub unlimited: bool,
    #[serde(default)]
    pub models: Vec<String>,
    /// CIDRs or bare addresses.
    #[serde(default)]
    pub ips: Vec<String>,
    /// RFC 3339.
    pub expires_at: Option<String>,
    /// Spending caps per UTC day and month, in units.
    pub daily_limit: Option<i64>,
    pub monthly_limit: Option<i64>,
}

pub fn parse_ips(ips: &[String]) -> Result<Vec<IpNet>, ApiError> {
    ips.iter()
        .map(|s| {
            let s = s.trim();
            s.parse::<IpNet>().or_else(|_| s.parse::<std::net::IpAddr>().map(IpNet::from)).map_err(|_| {
                ApiError::invalid("invalid_ip", format!("`{s}` is not an IP address or CIDR range")).with_param("ips")
            })
        })
        .collect()
}

pub fn parse_time(s: &str, param: &'static str) -> Result<i64, ApiError> {
    chrono::DateTime::parse_from_rfc3339(s.trim())
        .map(|t| t.timestamp_millis())
        .map_err(|e| ApiError::invalid("invalid_time", format!("`{s}` is not an RFC 3339 time: {e}")).with_param(param))
}

/// Creates a token and returns it with its key, which is not stored and so
/// can be shown only this once.
/// A key's quota and spending caps are caps, not money: each `0..=MAX_UNITS`,
/// the same on creation and on PATCH.
pub(crate) fn check_caps(quota: Option<i64>, daily: Option<i64>, monthly: Option<i64>) -> Result<(), ApiError> {
    for (v, param) in [(quota, "quota"), (daily, "daily_limit"), (monthly, "monthly_limit")] {
        if let Some(v) = v {
            crate::handlers::units(v, param, "invalid_quota")?;
        }
    }
    Ok(())
}

pub async fn create_token<S: Store>(
    store: &S,
    ids: &impl Ids,
    clock: &impl Clock,
    req: CreateToken,
    default_user: Id,
) -> Result<(Token, String), ApiError> {
    if req.name.trim().is_empty() {
        return Err(ApiError::invalid("invalid_name", "A token needs a name.").with_param("name"));
    }
    check_caps(req.quota, req.daily_limit, req.monthly_limit)?;
    let now = clock.now_ms();
    let expires_at = req.expires_at.as_deref().map(|s| parse_time(s, "expires_at")).transpose()?;
    if expires_at.is_some_and(|t| t <= now) {
        return Err(ApiError::invalid("invalid_time", "expires_at is in the past.").with_param("expires_at"));
    }
    let unlimited = req.unlimited || req.quota.is_none();
    let key = apikey::generate(|| ids.random_u64() as u8);
    let token = store
        .create_token(
            NewToken {
                user_id: req.user_id.unwrap_or(default_user),
                name: req.name.trim().to_string(),
                key_hash: apikey::hash(&key),
                key_hint: apikey::hint(&key),
                unlimited,
                remaining_quota: req.quota.unwrap_or(0),
                models: req.models.iter().map(|m| m.trim().to_string()).filter(|m| !m.is_empty()).collect(),
                ips: parse_ips(&req.ips)?,
                expires_at,
                daily_limit: req.daily_limit,
                monthly_limit: req.monthly_limit,
            },
            now,
        )
        .await
        .map_err(crate::store_error)?;
    Ok((token, key))
}
