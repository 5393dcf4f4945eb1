//! Rate-limit configuration and the sliding-window arithmetic shared by every
//! hot-state backend.

use std::collections::BTreeMap;

use serde::Deserialize;

/// Limits of one subject (a user, a token, an IP, a model); unset means none.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Requests per minute.
    pub rpm: Option<i64>,
    /// Tokens (prompt + completion) per minute.
    pub tpm: Option<i64>,
    /// Requests in flight at once.
    pub concurrency: Option<i64>,
}

impl Limits {
    pub fn is_empty(&self) -> bool {
        self.rpm.is_none() && self.tpm.is_none() && self.concurrency.is_none()
    }
}

/// The defaults a group's members get, per level.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GroupLimits {
    pub user: Limits,
    pub token: Limits,
    pub ip: Limits,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimits {
    /// Per group (the `default` entry applies to groups without their own).
    pub groups: BTreeMap<String, GroupLimits>,
    /// Per model, over all callers.
    pub models: BTreeMap<String, Limits>,
}

impl RateLimits {
    pub fn for_group(&self, group: &str) -> Option<&GroupLimits> {
        self.groups.get(group).or_else(|| self.groups.get(crate::config::DEFAULT_GROUP))
    }

    pub fn is_empty(&self) -> bool {
        self.groups.is_empty() && self.models.is_empty()
    }

    /// Whether a tokens-per-minute limit applies to this group or model.
    pub fn counts_tokens(&self, group: &str, model: &str) -> bool {
        let group_tpm = self.for_group(group).is_some_and(|g| [g.user, g.token, g.ip].iter().any(|l| l.tpm.is_some()));
        group_tpm || self.models.get(model).is_some_and(|l| l.tpm.is_some())
    }
}

pub const WINDOW_MS: i64 = 60_000;

/// The fixed window `now_ms` falls in, and how far into it we are.
pub fn window_of(now_ms: i64, window_ms: i64) -> (i64, i64) {
    (now_ms.div_euclid(window_ms), now_ms.rem_euclid(window_ms))
}

/// The sliding count: the previous window's count weighted by the share of
/// it still inside the sliding window, plus the current window's.
pub fn sliding_count(previous: i64, current: i64, elapsed_ms: i64, window_ms: i64) -> i64 {
    let overlap = (window_ms - elapsed_ms).clamp(0, window_ms);
    (i128::from(previous) * i128::from(overlap) / i128::from(window_ms)) as i64 + current
}

/// `6m0s`, `1.5s`, `120ms`: the duration format of OpenAI's reset headers.
pub fn reset_header(ms: i64) -> String {
    let ms = ms.max(0);
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let (m, rest) = (ms / 60_000, ms % 60_000);
    let (whole, frac) = (rest / 1000, rest % 1000);
    let secs = if frac == 0 {
        format!("{whole}s")
    } else {
        format!("{whole}.{}s", format!("{frac:03}").trim_end_matches('0'))
    };
    if m > 0 {
        format!("{m}m{secs}")
    } else {
        secs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sliding_weights_the_previous_window() {
        assert_eq!(sliding_count(100, 10, 0, 60_000), 110);
        assert_eq!(sliding_count(100, 10, 30_000, 60_000), 60);
        assert_eq!(sliding_count(100, 10, 60_000, 60_000), 10);
        assert_eq!(window_of(125_000, 60_000), (2, 5_000));
    }

    #[test]
    fn reset_format() {
        assert_eq!(reset_header(120), "120ms");
        assert_eq!(reset_header(1000), "1s");
        assert_eq!(reset_header(1500), "1.5s");
        assert_eq!(reset_header(360_000), "6m0s");
        assert_eq!(reset_header(61_250), "1m1.25s");
    }
}
