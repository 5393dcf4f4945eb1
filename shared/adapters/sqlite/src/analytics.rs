//! Usage aggregates (with nearest-rank latency percentiles from window
//! functions) and keyset pages for streaming exports.

use oblivious_core::model::UsageRecord;
use oblivious_ports::{GroupBy, Interval, StoreResult, UsageFilter, UsageLog, UsageStat};
use rusqlite::params;

use crate::rows::{self, USAGE_COLS};
use crate::SqliteStore;

/// The filter's WHERE clause over ?1..?7.
const FILTER: &str =
    "(?1 IS NULL OR user_id = ?1) AND (?2 IS NULL OR token_id = ?2) AND (?3 IS NULL OR channel_id = ?3)
    AND (?4 IS NULL OR requested_model = ?4) AND (?5 IS NULL OR status = ?5)
    AND (?6 IS NULL OR created_at >= ?6) AND (?7 IS NULL OR created_at < ?7)";

impl UsageLog for SqliteStore {
    async fn usage_stats(
        &self,
        f: UsageFilter,
        group_by: Option<GroupBy>,
        interval: Option<Interval>,
    ) -> StoreResult<Vec<UsageStat>> {
        let bucket = match interval {
            None => "'all'",
            Some(Interval::Hour) => "strftime('%Y-%m-%dT%H:00:00Z', created_at / 1000, 'unixepoch')",
            Some(Interval::Day) => "strftime('%Y-%m-%d', created_at / 1000, 'unixepoch')",
            Some(Interval::Month) => "strftime('%Y-%m', created_at / 1000, 'unixepoch')",
        };
        let key = match group_by {
            None => "''",
            Some(GroupBy::Model) => "requested_model",
            Some(GroupBy::Token) => "CAST(token_id AS TEXT)",
            Some(GroupBy::User) => "CAST(user_id AS TEXT)",
            Some(GroupBy::Channel) => "COALESCE(CAST(channel_id AS TEXT), '')",
        };
        let sql = format!(
            "WITH r AS (
                SELECT {bucket} AS bucket, {key} AS k, status, prompt_tokens, completion_tokens, cost, latency_ms,
                    ROW_NUMBER() OVER (PARTITION BY {bucket}, {key} ORDER BY latency_ms) AS rn,
                    COUNT(*) OVER (PARTITION BY {bucket}, {key}) AS n
                FROM usage_log WHERE {FILTER})
             SELECT bucket, k, COUNT(*), SUM(status < 400), SUM(status >= 400), SUM(prompt_tokens),
                SUM(completion_tokens), SUM(cost),
                MIN(CASE WHEN rn * 100 >= n * 50 THEN latency_ms END),
                MIN(CASE WHEN rn * 100 >= n * 95 THEN latency_ms END),
                MIN(CASE WHEN rn * 100 >= n * 99 THEN latency_ms END)
             FROM r GROUP BY bucket, k ORDER BY bucket, k"
        );
        self.db()
            .read(move |c| {
                let mut st = c.prepare_cached(&sql)?;
                let rows = st
                    .query_map(
                        params![f.user_id, f.token_id, f.channel_id, f.model, f.status, f.since, f.until],
                        |r| {
                            Ok(UsageStat {
                                bucket: r.get(0)?,
                                key: r.get(1)?,
                                requests: r.get(2)?,
                                successes: r.get(3)?,
                                errors: r.get(4)?,
                                prompt_tokens: r.get(5)?,
                                completion_tokens: r.get(6)?,
                                cost: r.get(7)?,
                                latency_p50: r.get(8)?,
                                latency_p95: r.get(9)?,
                                latency_p99: r.get(10)?,
                            })
                        },
                    )?
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(rows)
            })
            .await
    }

    async fn usage_page(
        &self,
        f: UsageFilter,
        after: Option<(i64, String)>,
        limit: u64,
    ) -> StoreResult<Vec<UsageRecord>> {
        let (after_t, after_id) = after.map_or((None, None), |(t, id)| (Some(t), Some(id)));
        self.db()
            .read(move |c| {
                let mut st = c.prepare_cached(&format!(
                    "SELECT {USAGE_COLS} FROM usage_log WHERE {FILTER}
                        AND (?8 IS NULL OR (created_at, request_id) > (?8, ?9))
                     ORDER BY created_at, request_id LIMIT ?10"
                ))?;
                let rows = st
                    .query_map(
                        params![
                            f.user_id,
                            f.token_id,
                            f.channel_id,
                            f.model,
                            f.status,
                            f.since,
                            f.until,
                            after_t,
                            after_id,
                            limit.min(i64::MAX as u64) as i64
                        ],
                        rows::usage,
                    )?
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(rows)
            })
            .await
    }
}
