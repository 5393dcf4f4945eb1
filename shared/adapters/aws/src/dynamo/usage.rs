//! Reading the usage log: by key or by user through their time-sorted
//! indexes, the rest by scan; aggregates are computed here (DynamoDB has no
//! GROUP BY). An operator with a large log reads analytics from an export.

use std::collections::BTreeMap;

use oblivious_core::model::UsageRecord;
use oblivious_ports::{Clock, GroupBy, Interval, StoreResult, Upstream, UsageFilter, UsageLog, UsageStat};

use super::{from_item, n, DynamoStore};

fn keep(f: &UsageFilter, r: &UsageRecord) -> bool {
    f.user_id.is_none_or(|v| r.user_id == v)
        && f.token_id.is_none_or(|v| r.token_id == v)
        && f.channel_id.is_none_or(|v| r.channel_id == Some(v))
        && f.model.as_ref().is_none_or(|v| &r.requested_model == v)
        && f.status.is_none_or(|v| r.status == v)
        && f.since.is_none_or(|v| r.created_at >= v)
        && f.until.is_none_or(|v| r.created_at < v)
}

fn bucket(created_at: i64, interval: Option<Interval>) -> String {
    let t = chrono::DateTime::from_timestamp_millis(created_at).unwrap_or_default();
    match interval {
        None => "all".into(),
        Some(Interval::Hour) => t.format("%Y-%m-%dT%H:00:00Z").to_string(),
        Some(Interval::Day) => t.format("%Y-%m-%d").to_string(),
        Some(Interval::Month) => t.format("%Y-%m").to_string(),
    }
}

fn key(r: &UsageRecord, group_by: Option<GroupBy>) -> String {
    match group_by {
        None => String::new(),
        Some(GroupBy::Model) => r.requested_model.clone(),
        Some(GroupBy::Token) => r.token_id.to_string(),
        Some(GroupBy::User) => r.user_id.to_string(),
        Some(GroupBy::Channel) => r.channel_id.map(|c| c.to_string()).unwrap_or_default(),
    }
}

/// Nearest rank: the smallest value with at least `p`% of values at or below it.
fn percentile(sorted: &[i64], p: usize) -> i64 {
    let rank = (sorted.len() * p).div_ceil(100).max(1);
    sorted[rank - 1]
}

impl<U: Upstream, C: Clock> DynamoStore<U, C> {
    /// Every row the filter selects, in no particular order.
    pub(crate) async fn usage_rows(&self, f: &UsageFilter) -> StoreResult<Vec<UsageRecord>> {
        let range = "#created_at BETWEEN :since AND :until";
        let bounds = [(":since", n(f.since.unwrap_or(i64::MIN))), (":until", n(f.until.unwrap_or(i64::MAX)))];
        let items = match (f.token_id, f.user_id) {
            (Some(t), _) => {
                let vals = [vec![(":k", n(t))], bounds.to_vec()].concat();
                self.query("usage", Some("by-token"), &format!("#token_id = :k AND {range}"), vals).await?
            }
            (None, Some(u)) => {
                let vals = [vec![(":k", n(u))], bounds.to_vec()].concat();
                self.query("usage", Some("by-user"), &format!("#user_id = :k AND {range}"), vals).await?
            }
            (None, None) => self.scan("usage").await?,
        };
        let rows = items.into_iter().map(from_item::<UsageRecord>).collect::<StoreResult<Vec<_>>>()?;
        Ok(rows.into_iter().filter(|r| keep(f, r)).collect())
    }
}

impl<U: Upstream, C: Clock> UsageLog for DynamoStore<U, C> {
    async fn usage_stats(
        &self,
        f: UsageFilter,
        group_by: Option<GroupBy>,
        interval: Option<Interval>,
    ) -> StoreResult<Vec<UsageStat>> {
        let mut groups: BTreeMap<(String, String), (UsageStat, Vec<i64>)> = BTreeMap::new();
        for r in self.usage_rows(&f).await? {
            let (b, k) = (bucket(r.created_at, interval), key(&r, group_by));
            let (stat, latencies) = groups
                .entry((b.clone(), k.clone()))
                .or_insert_with(|| (UsageStat { bucket: b, key: k, ..Default::default() }, Vec::new()));
            stat.requests += 1;
            if r.status < 400 {
                stat.successes += 1;
            } else {
                stat.errors += 1;
            }
            stat.prompt_tokens += r.prompt_tokens;
            stat.completion_tokens += r.completion_tokens;
            stat.cost += r.cost;
            latencies.push(r.latency_ms);
        }
        Ok(groups
            .into_values()
            .map(|(mut stat, mut latencies)| {
                latencies.sort_unstable();
                stat.latency_p50 = percentile(&latencies, 50);
                stat.latency_p95 = percentile(&latencies, 95);
                stat.latency_p99 = percentile(&latencies, 99);
                stat
            })
            .collect())
    }

    async fn usage_page(
        &self,
        f: UsageFilter,
        after: Option<(i64, String)>,
        limit: u64,
    ) -> StoreResult<Vec<UsageRecord>> {
        let mut rows: Vec<UsageRecord> = self
            .usage_rows(&f)
            .await?
            .into_iter()
            .filter(|r| after.as_ref().is_none_or(|(t, id)| (r.created_at, &r.request_id) > (*t, id)))
            .collect();
        rows.sort_by(|a, b| (a.created_at, &a.request_id).cmp(&(b.created_at, &b.request_id)));
        rows.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
        Ok(rows)
    }
}
