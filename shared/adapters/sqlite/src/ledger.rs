//! The money paths over SQLite: reserve, settle, sweep, top-ups and codes.
//! Each runs in one IMMEDIATE transaction, so concurrent requests on one key
//! serialize on the write lock and no unit is counted twice or lost.

use oblivious_core::alerts::Alert;
use oblivious_core::model::{Id, Token, UsageRecord, User};
use oblivious_core::money::clamp_charge;
use oblivious_ports::{
    bounded_balance, spend_periods, DeadJob, Ledger, LedgerEntry, Page, Paged, RedeemError, RedemptionCode,
    Reservation, Shortfall, StoreError, StoreResult,
};
use rusqlite::{params, Connection, OptionalExtension};

use crate::db::{Cached, DbResult};
use crate::rows::{self, TOKEN_COLS, USER_COLS};
use crate::SqliteStore;

// Every sum below is wrapped in `CAST(… AS INTEGER)`: SQLite turns an
// overflowing integer sum into a REAL, which the cast saturates back to the
// i64 bounds. The amounts are bounded (`MAX_UNITS`) so this never bites in
// practice, but a column can never turn REAL and fail every later read.

/// Adds `delta` (negative: a charge) to the token's quota and the user's
/// balance, leaving unlimited ones alone.
fn credit(tx: &Connection, token_id: Id, user_id: Id, delta: i64) -> DbResult<()> {
    if delta != 0 {
        tx.exec(
            "UPDATE tokens SET remaining_quota = CAST(remaining_quota + ?1 AS INTEGER) WHERE id = ?2 AND NOT unlimited",
            params![delta, token_id],
        )?;
        tx.exec(
            "UPDATE users SET quota = CAST(quota + ?1 AS INTEGER) WHERE id = ?2 AND NOT unlimited",
            params![delta, user_id],
        )?;
    }
    Ok(())
}

fn add_spend(tx: &Connection, token_id: Id, periods: &[String], delta: i64) -> DbResult<()> {
    if delta != 0 {
        for period in periods {
            tx.exec(
                "INSERT INTO token_spend (token_id, period, spent) VALUES (?1, ?2, ?3)
                 ON CONFLICT (token_id, period) DO UPDATE SET spent = CAST(spent + excluded.spent AS INTEGER)",
                params![token_id, period, delta],
            )?;
        }
    }
    Ok(())
}

fn spent(tx: &Connection, token_id: Id, period: &str) -> DbResult<i64> {
    Ok(tx
        .row("SELECT spent FROM token_spend WHERE token_id = ?1 AND period = ?2", params![token_id, period], |r| {
            r.get(0)
        })
        .optional()?
        .unwrap_or(0))
}

/// Settles the money of a request whose usage row was just written (inside
/// `record_usage`'s transaction), and returns the key and its owner as they
/// stand after the charge (for the balance alerts).
pub(crate) fn settle(tx: &Connection, u: &UsageRecord) -> DbResult<(Option<Token>, Option<User>)> {
    // What one request may be charged is bounded, so no settlement can fail on its value.
    let cost = clamp_charge(u.cost);
    let held: Option<(i64, String, String)> = tx
        .row("SELECT amount, state, periods FROM reservations WHERE request_id = ?1", [&u.request_id], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .optional()?;
    // Balance back (+) or further charge (-), and spend to add to the key's periods.
    let (give_back, spend, periods) = match &held {
        Some((amount, state, periods)) => {
            let periods: Vec<String> = serde_json::from_str(periods)?;
            match state.as_str() {
                "reserved" => (amount - cost, cost - amount, periods),
                // The sweeper refunded it (the request outlived the timeout): charge afresh.
                "refunded" => (-cost, cost, periods),
                _ => (0, 0, periods),
            }
        }
        None if cost > 0 => {
            let (d, m) = spend_periods(u.created_at);
            (-cost, cost, vec![d, m])
        }
        None => (0, 0, vec![]),
    };
    add_spend(tx, u.token_id, &periods, spend)?;
    if held.as_ref().is_some_and(|(_, state, _)| state != "settled") {
        let new_state = if cost == 0 { "refunded" } else { "settled" };
        let closed_at =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
        tx.exec(
            "UPDATE reservations SET state = ?1, charged = ?2, closed_at = ?3 WHERE request_id = ?4",
            params![new_state, cost, closed_at, u.request_id],
        )?;
    }
    // One statement per row: the balance move (unlimited ones keep theirs), the use, the row after.
    let token = tx
        .row(
            &format!(
                "UPDATE tokens SET remaining_quota = CAST(remaining_quota + CASE WHEN unlimited THEN 0 ELSE ?1 END AS INTEGER),
                 used_quota = CAST(used_quota + ?2 AS INTEGER) WHERE id = ?3 RETURNING {TOKEN_COLS}"
            ),
            params![give_back, cost, u.token_id],
            rows::token,
        )
        .optional()?;
    let user = tx
        .row(
            &format!(
                "UPDATE users SET quota = CAST(quota + CASE WHEN unlimited THEN 0 ELSE ?1 END AS INTEGER),
                 used_quota = CAST(used_quota + ?2 AS INTEGER) WHERE id = ?3 RETURNING {USER_COLS}"
            ),
            params![give_back, cost, u.user_id],
            rows::user,
        )
        .optional()?;
    Ok((token, user))
}

fn reservation(row: &rusqlite::Row) -> rusqlite::Result<Reservation> {
    Ok(Reservation {
        request_id: row.get(0)?,
        token_id: row.get(1)?,
        user_id: row.get(2)?,
        amount: row.get(3)?,
        created_at: row.get(4)?,
        state: row.get(5)?,
        charged: row.get(6)?,
    })
}

fn user_row(c: &Connection, id: Id) -> DbResult<User> {
    c.row(&format!("SELECT {USER_COLS} FROM users WHERE id = ?1"), [id], rows::user)
        .optional()?
        .ok_or_else(|| StoreError::NotFound(format!("user {id}")).into())
}

fn write_ledger(
    c: &Connection,
    user: &User,
    delta: i64,
    kind: &str,
    actor: &str,
    note: &str,
    now_ms: i64,
) -> DbResult<()> {
    c.exec(
        "INSERT INTO balance_ledger (user_id, delta, balance_after, kind, actor, note, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![user.id, delta, user.quota, kind, actor, note, now_ms],
    )?;
    Ok(())
}

impl Ledger for SqliteStore {
    async fn alert_level(&self, subject: &str) -> StoreResult<Option<i64>> {
        let subject = subject.to_string();
        self.db()
            .read(move |c| {
                Ok(c.row("SELECT level FROM alert_levels WHERE subject = ?1", [subject], |r| r.get(0))
                    .optional()?
                    .flatten())
            })
            .await
    }

    async fn record_alerts(&self, subject: &str, level: Option<i64>, alerts: Vec<Alert>) -> StoreResult<Vec<Alert>> {
        let subject = subject.to_string();
        self.db()
            .write(move |tx| {
                tx.exec(
                    "INSERT INTO alert_levels (subject, level) VALUES (?1, ?2)
                     ON CONFLICT (subject) DO UPDATE SET level = excluded.level",
                    params![subject, level],
                )?;
                let mut stored = Vec::with_capacity(alerts.len());
                for a in alerts {
                    tx.exec(
                        "INSERT INTO alerts (kind, subject_id, name, threshold_percent, remaining, total, created_at)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                        params![a.kind, a.subject_id, a.name, a.threshold_percent, a.remaining, a.total, a.created_at],
                    )?;
                    stored.push(Alert { id: tx.last_insert_rowid(), ..a });
                }
                Ok(stored)
            })
            .await
    }

    async fn alerts(&self, page: Page) -> StoreResult<Paged<Alert>> {
        self.db()
            .read(move |c| {
                let mut st = c.prepare_cached(
                    "SELECT id, kind, subject_id, name, threshold_percent, remaining, total, created_at FROM alerts
                     ORDER BY id LIMIT ?1 OFFSET ?2",
                )?;
                let items = st
                    .query_map(params![page.limit.min(i64::MAX as u64) as i64, page.offset as i64], |r| {
                        Ok(Alert {
                            id: r.get(0)?,
                            kind: r.get(1)?,
                            subject_id: r.get(2)?,
                            name: r.get(3)?,
                            threshold_percent: r.get(4)?,
                            remaining: r.get(5)?,
                            total: r.get(6)?,
                            created_at: r.get(7)?,
                        })
                    })?
                    .collect::<Result<Vec<_>, _>>()?;
                let total: i64 = c.row("SELECT COUNT(*) FROM alerts", [], |r| r.get(0))?;
                Ok(Paged { items, total: total as u64 })
            })
            .await
    }

    async fn reserve(&self, r: Reservation) -> StoreResult<Result<(), Shortfall>> {
        // A hold is at most what a request may be charged (`MAX_UNITS`).
        let r = Reservation { amount: clamp_charge(r.amount), ..r };
        self.db()
            .write(move |tx| {
                let (balance, user_unlimited): (i64, bool) = tx
                    .row("SELECT quota, unlimited FROM users WHERE id = ?1", [r.user_id], |x| {
                        Ok((x.get(0)?, x.get(1)?))
                    })
                    .optional()?
                    .ok_or_else(|| StoreError::NotFound(format!("user {}", r.user_id)))?;
                if !user_unlimited && balance < r.amount {
                    return Ok(Err(Shortfall::UserBalance));
                }
                type Caps = (i64, bool, Option<i64>, Option<i64>);
                let (remaining, token_unlimited, daily, monthly): Caps = tx
                    .row(
                        "SELECT remaining_quota, unlimited, daily_limit, monthly_limit FROM tokens WHERE id = ?1",
                        [r.token_id],
                        |x| Ok((x.get(0)?, x.get(1)?, x.get(2)?, x.get(3)?)),
                    )
                    .optional()?
                    .ok_or_else(|| StoreError::NotFound(format!("token {}", r.token_id)))?;
                if !token_unlimited && remaining < r.amount {
                    return Ok(Err(Shortfall::TokenQuota));
                }
                let (day, month) = spend_periods(r.created_at);
                if daily.is_some_and(|cap| spent(tx, r.token_id, &day).is_ok_and(|s| s.saturating_add(r.amount) > cap))
                {
                    return Ok(Err(Shortfall::DailyLimit));
                }
                if monthly
                    .is_some_and(|cap| spent(tx, r.token_id, &month).is_ok_and(|s| s.saturating_add(r.amount) > cap))
                {
                    return Ok(Err(Shortfall::MonthlyLimit));
                }
                let periods = vec![day, month];
                credit(tx, r.token_id, r.user_id, -r.amount)?;
                add_spend(tx, r.token_id, &periods, r.amount)?;
                tx.exec(
                    "INSERT INTO reservations (request_id, token_id, user_id, amount, state, periods, created_at)
                     VALUES (?1, ?2, ?3, ?4, 'reserved', ?5, ?6)",
                    params![
                        r.request_id,
                        r.token_id,
                        r.user_id,
                        r.amount,
                        serde_json::to_string(&periods)?,
                        r.created_at
                    ],
                )?;
                Ok(Ok(()))
            })
            .await
    }

    async fn sweep_reservations(&self, cutoff_ms: i64, now_ms: i64) -> StoreResult<u64> {
        self.db()
            .write(move |tx| {
                let open: Vec<(String, Id, Id, i64, String)> = {
                    let mut st = tx.prepare_cached(
                        "SELECT request_id, token_id, user_id, amount, periods FROM reservations
                         WHERE state = 'reserved' AND created_at < ?1",
                    )?;
                    let rows =
                        st.query_map([cutoff_ms], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)))?;
                    rows.collect::<Result<_, _>>()?
                };
                for (request_id, token_id, user_id, amount, periods) in &open {
                    let periods: Vec<String> = serde_json::from_str(periods)?;
                    credit(tx, *token_id, *user_id, *amount)?;
                    add_spend(tx, *token_id, &periods, -amount)?;
                    tx.exec(
                        "UPDATE reservations SET state = 'refunded', charged = 0, closed_at = ?1 WHERE request_id = ?2",
                        params![now_ms, request_id],
                    )?;
                }
                Ok(open.len() as u64)
            })
            .await
    }

    async fn reservations(&self, state: Option<String>, page: Page) -> StoreResult<Paged<Reservation>> {
        self.db()
            .read(move |c| {
                let mut st = c.prepare_cached(
                    "SELECT request_id, token_id, user_id, amount, created_at, state, charged FROM reservations
                     WHERE ?1 IS NULL OR state = ?1 ORDER BY created_at, request_id LIMIT ?2 OFFSET ?3",
                )?;
                let items = st
                    .query_map(params![state, page.limit.min(i64::MAX as u64) as i64, page.offset as i64], reservation)?
                    .collect::<Result<Vec<_>, _>>()?;
                let total: i64 =
                    c.row("SELECT COUNT(*) FROM reservations WHERE ?1 IS NULL OR state = ?1", [&state], |r| r.get(0))?;
                Ok(Paged { items, total: total as u64 })
            })
            .await
    }

    async fn adjust_balance(
        &self,
        user_id: Id,
        delta: i64,
        kind: &str,
        actor: &str,
        note: &str,
        now_ms: i64,
    ) -> StoreResult<User> {
        let (kind, actor, note) = (kind.to_string(), actor.to_string(), note.to_string());
        self.db()
            .write(move |tx| {
                let before = user_row(tx, user_id)?;
                let quota = bounded_balance(before.quota, delta)?;
                tx.exec("UPDATE users SET quota = ?1 WHERE id = ?2", params![quota, user_id])?;
                let user = User { quota, ..before };
                write_ledger(tx, &user, delta, &kind, &actor, &note, now_ms)?;
                Ok(user)
            })
            .await
    }

    async fn dead_jobs(&self, page: Page) -> StoreResult<Paged<DeadJob>> {
        self.db()
            .read(move |c| {
                let mut st = c.prepare_cached(
                    "SELECT id, payload, attempts, last_error, created_at FROM outbox WHERE dead = 1
                     ORDER BY id LIMIT ?1 OFFSET ?2",
                )?;
                let items = st
                    .query_map(params![page.limit.min(i64::MAX as u64) as i64, page.offset as i64], |r| {
                        let payload: String = r.get(1)?;
                        let v: serde_json::Value = serde_json::from_str(&payload).unwrap_or_default();
                        let text = |k: &str| v.get(k).and_then(|x| x.as_str()).map(str::to_string);
                        Ok(DeadJob {
                            id: r.get(0)?,
                            kind: text("kind").unwrap_or_else(|| "unreadable".into()),
                            key: text("request_id").or_else(|| text("id")).unwrap_or_default(),
                            attempts: r.get(2)?,
                            last_error: r.get(3)?,
                            created_at: r.get(4)?,
                        })
                    })?
                    .collect::<Result<Vec<_>, _>>()?;
                let total: i64 = c.row("SELECT COUNT(*) FROM outbox WHERE dead = 1", [], |r| r.get(0))?;
                Ok(Paged { items, total: total as u64 })
            })
            .await
    }

    async fn ledger(&self, user_id: Option<Id>, page: Page) -> StoreResult<Paged<LedgerEntry>> {
        self.db()
            .read(move |c| {
                let mut st = c.prepare_cached(
                    "SELECT id, user_id, delta, balance_after, kind, actor, note, created_at FROM balance_ledger
                     WHERE ?1 IS NULL OR user_id = ?1 ORDER BY id DESC LIMIT ?2 OFFSET ?3",
                )?;
                let items = st
                    .query_map(params![user_id, page.limit.min(i64::MAX as u64) as i64, page.offset as i64], |r| {
                        Ok(LedgerEntry {
                            id: r.get(0)?,
                            user_id: r.get(1)?,
                            delta: r.get(2)?,
                            balance_after: r.get(3)?,
                            kind: r.get(4)?,
                            actor: r.get(5)?,
                            note: r.get(6)?,
                            created_at: r.get(7)?,
                        })
                    })?
                    .collect::<Result<Vec<_>, _>>()?;
                let total: i64 =
                    c.row("SELECT COUNT(*) FROM balance_ledger WHERE ?1 IS NULL OR user_id = ?1", [user_id], |r| {
                        r.get(0)
                    })?;
                Ok(Paged { items, total: total as u64 })
            })
            .await
    }

    async fn create_codes(
        &self,
        batch: &str,
        codes: Vec<(String, String)>,
        value: i64,
        expires_at: Option<i64>,
        now_ms: i64,
    ) -> StoreResult<()> {
        let batch = batch.to_string();
        self.db()
            .write(move |tx| {
                for (hash, hint) in &codes {
                    tx.exec(
                        "INSERT INTO redemption_codes (code_hash, code_hint, batch, value, expires_at, created_at)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                        params![hash, hint, batch, value, expires_at, now_ms],
                    )?;
                }
                Ok(())
            })
            .await
    }

    async fn codes(&self, page: Page) -> StoreResult<Paged<RedemptionCode>> {
        self.db()
            .read(move |c| {
                let mut st = c.prepare_cached(
                    "SELECT id, batch, code_hint, value, expires_at, redeemed_by, redeemed_at, created_at
                     FROM redemption_codes ORDER BY id LIMIT ?1 OFFSET ?2",
                )?;
                let items = st
                    .query_map(params![page.limit.min(i64::MAX as u64) as i64, page.offset as i64], |r| {
                        Ok(RedemptionCode {
                            id: r.get(0)?,
                            batch: r.get(1)?,
                            code_hint: r.get(2)?,
                            value: r.get(3)?,
                            expires_at: r.get(4)?,
                            redeemed_by: r.get(5)?,
                            redeemed_at: r.get(6)?,
                            created_at: r.get(7)?,
                        })
                    })?
                    .collect::<Result<Vec<_>, _>>()?;
                let total: i64 = c.row("SELECT COUNT(*) FROM redemption_codes", [], |r| r.get(0))?;
                Ok(Paged { items, total: total as u64 })
            })
            .await
    }

    async fn redeem(
        &self,
        code_hash: &str,
        user_id: Id,
        actor: &str,
        now_ms: i64,
    ) -> StoreResult<Result<User, RedeemError>> {
        let (code_hash, actor) = (code_hash.to_string(), actor.to_string());
        self.db()
            .write(move |tx| {
                type CodeRow = (Id, i64, Option<i64>, Option<Id>, String);
                let code: Option<CodeRow> = tx
                    .row(
                        "SELECT id, value, expires_at, redeemed_by, code_hint FROM redemption_codes WHERE code_hash = ?1",
                        [&code_hash],
                        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
                    )
                    .optional()?;
                let Some((id, value, expires_at, redeemed_by, hint)) = code else {
                    return Ok(Err(RedeemError::Unknown));
                };
                if redeemed_by.is_some() {
                    return Ok(Err(RedeemError::AlreadyUsed));
                }
                if expires_at.is_some_and(|t| t <= now_ms) {
                    return Ok(Err(RedeemError::Expired));
                }
                let claimed = tx.exec(
                    "UPDATE redemption_codes SET redeemed_by = ?1, redeemed_at = ?2 WHERE id = ?3 AND redeemed_by IS NULL",
                    params![user_id, now_ms, id],
                )?;
                if claimed == 0 {
                    return Ok(Err(RedeemError::AlreadyUsed));
                }
                let before = user_row(tx, user_id)?;
                // Out of bounds: the error rolls the claim back, so the code stays unused.
                let quota = bounded_balance(before.quota, value)?;
                tx.exec("UPDATE users SET quota = ?1 WHERE id = ?2", params![quota, user_id])?;
                let user = User { quota, ..before };
                write_ledger(tx, &user, value, "redeem", &actor, &format!("code {hint}"), now_ms)?;
                Ok(Ok(user))
            })
            .await
    }
}
