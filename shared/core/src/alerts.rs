//! Low-balance alerts: which thresholds (percent of the granted amount still
//! left) a balance has newly crossed, given the lowest one already alerted.

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AlertSettings {
    /// Percent left at which to alert, e.g. `[10, 5, 0]`.
    pub thresholds_percent: Vec<i64>,
    /// Where to POST each alert (retried through the queue); none to only record.
    pub webhook_url: Option<String>,
}

impl Default for AlertSettings {
    fn default() -> Self {
        AlertSettings { thresholds_percent: vec![10, 5, 0], webhook_url: None }
    }
}

/// A recorded alert.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Alert {
    #[serde(default)]
    pub id: i64,
    /// `user` or `token`.
    pub kind: String,
    pub subject_id: i64,
    pub name: String,
    pub threshold_percent: i64,
    pub remaining: i64,
    pub total: i64,
    pub created_at: i64,
}

/// Share still left of what was granted (remaining + used), in basis points;
/// `None` when nothing was ever granted.
pub fn left_bp(remaining: i64, used: i64) -> Option<i64> {
    let total = i128::from(remaining.max(0)) + i128::from(used);
    (total > 0).then(|| (i128::from(remaining.max(0)) * 10_000 / total) as i64)
}

/// Given the share left and the lowest threshold alerted so far, returns the
/// new lowest-alerted level and the thresholds crossed since (highest first).
/// A balance that rose above its level (a top-up) re-arms the thresholds above it.
pub fn crossed(left_bp: i64, thresholds: &[i64], last: Option<i64>) -> (Option<i64>, Vec<i64>) {
    let mut sorted: Vec<i64> = thresholds.to_vec();
    sorted.sort_unstable_by(|a, b| b.cmp(a));
    sorted.dedup();
    let reached: Vec<i64> = sorted.iter().copied().filter(|t| left_bp <= t * 100).collect();
    let level = reached.last().copied();
    match (level, last) {
        (None, _) => (None, vec![]),
        (Some(l), Some(prev)) if l >= prev => (Some(l), vec![]),
        (Some(l), prev) => {
            let newly = reached.into_iter().filter(|t| prev.is_none_or(|p| *t < p)).collect();
            (Some(l), newly)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crossing_and_rearming() {
        let t = [10, 5, 0];
        assert_eq!(left_bp(50, 50), Some(5000));
        assert_eq!(left_bp(0, 0), None);
        assert_eq!(left_bp(-5, 100), Some(0));
        assert_eq!(crossed(2000, &t, None), (None, vec![]));
        assert_eq!(crossed(900, &t, None), (Some(10), vec![10]));
        assert_eq!(crossed(800, &t, Some(10)), (Some(10), vec![]));
        assert_eq!(crossed(0, &t, Some(10)), (Some(0), vec![5, 0]));
        assert_eq!(crossed(0, &t, Some(0)), (Some(0), vec![]));
        // Topped up to 7%: 10 stays alerted, 5 and 0 re-arm.
        assert_eq!(crossed(700, &t, Some(0)), (Some(10), vec![]));
        assert_eq!(crossed(400, &t, Some(10)), (Some(5), vec![5]));
        // Topped up above every threshold: all re-arm.
        assert_eq!(crossed(5000, &t, Some(5)), (None, vec![]));
    }
}
