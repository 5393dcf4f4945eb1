//! The money paths over DynamoDB. Each is read → check → one conditional
//! transaction: the conditions restate what was read (balance still covers the
//! hold, reservation still open, code still unused), so a concurrent writer
//! makes the transaction fail and the step re-reads instead of double-counting.

use oblivious_core::alerts::Alert;
use oblivious_core::model::{Id, UsageRecord, User};
use oblivious_core::money::clamp_charge;
use oblivious_ports::{
    bounded_balance, spend_periods, Clock, Ledger, LedgerEntry, Page, Paged, RedeemError, RedemptionCode, Reservation,
    Settled, Shortfall, Store, StoreError, StoreResult, Upstream,
};
use serde_dynamo::AttributeValue;

use super::{
    backend, from_item, get_bool, get_n, get_s, key_id, key_meta, n, page_of, s, to_item, DynamoStore, Item, Tx, TxEnd,
    ATTEMPTS,
};

/// A balance holder as read: its id, whether limits apply, and the balance.
struct Holder {
    id: Id,
    unlimited: bool,
    balance: i64,
}

fn holder(item: &Item, balance: &str) -> Holder {
    Holder {
        id: get_n(item, "id").unwrap_or_default(),
        unlimited: get_bool(item, "unlimited"),
        balance: get_n(item, balance).unwrap_or_default(),
    }
}

/// Closed reservations are kept this long (the usage log holds the charge for good), then expire by TTL.
const CLOSED_KEPT_S: i64 = 30 * 86_400;

/// The `ttl` attribute (Unix seconds) of a reservation closed at `closed_ms`.
fn expiry(closed_ms: i64) -> i64 {
    closed_ms / 1000 + CLOSED_KEPT_S
}

fn spend_key(token_id: Id, period: &str) -> Item {
    key_meta(&format!("spend#{token_id}"), period)
}

/// Whether a key's remaining quota crosses zero (caches must re-read it).
fn crosses(before: i64, after: i64) -> bool {
    (before > 0) != (after > 0)
}

impl<U: Upstream, C: Clock> DynamoStore<U, C> {
    async fn spent(&self, token_id: Id, period: &str) -> StoreResult<i64> {
        Ok(self.get("meta", spend_key(token_id, period)).await?.and_then(|i| get_n(&i, "spent")).unwrap_or(0))
    }

    /// Adds `delta` to a holder's balance (`quota` of a user, `remaining_quota`
    /// of a key) unless it is unlimited, and `used` to its spend total; the
    /// condition restates the unlimited flag that was read.
    fn credit(&self, tx: &mut Tx, table: &str, field: &str, h: &Holder, delta: i64, used: i64) {
        let mut parts = Vec::new();
        let mut vals = vec![(":unlimited", AttributeValue::Bool(h.unlimited))];
        if delta != 0 && !h.unlimited {
            parts.push(format!("#{field} = #{field} + :delta"));
            vals.push((":delta", n(delta)));
        }
        if used != 0 {
            parts.push("#used_quota = #used_quota + :used".into());
            vals.push((":used", n(used)));
        }
        if !parts.is_empty() {
            let expr = format!("SET {}", parts.join(", "));
            tx.update(self.table(table), key_id(h.id), &expr, Some("#unlimited = :unlimited"), vals);
        }
    }

    fn add_spend(&self, tx: &mut Tx, token_id: Id, periods: &[String], delta: i64) {
        if delta != 0 {
            for p in periods {
                tx.update(self.table("meta"), spend_key(token_id, p), "ADD #spent :d", None, vec![(":d", n(delta))]);
            }
        }
    }

    async fn holders(&self, user_id: Id, token_id: Id) -> StoreResult<(Option<Holder>, Option<Holder>)> {
        let user = self.user_item(user_id).await?.map(|i| holder(&i, "quota"));
        let token = self.token_item(token_id).await?.map(|i| holder(&i, "remaining_quota"));
        Ok((user, token))
    }

    /// Writes one usage record and settles its request's money, once.
    pub(crate) async fn record_one(&self, u: &UsageRecord) -> StoreResult<Option<Settled>> {
        // What one request may be charged is bounded (as on SQLite), so the
        // usage row and the charge agree and no settlement fails on its value.
        let u = &UsageRecord { cost: clamp_charge(u.cost), ..u.clone() };
        for attempt in 0..ATTEMPTS {
            let held = self.get("reservations", key_request(&u.request_id)).await?;
            let (user, token) = self.holders(u.user_id, u.token_id).await?;
            let mut tx = Tx::default();
            let usage = tx.put(self.table("usage"), to_item(u)?, Some("attribute_not_exists(#request_id)"), vec![]);
            let (give_back, spend, periods) = match &held {
                Some(r) => {
                    let amount = get_n(r, "amount").unwrap_or_default();
                    let state = get_s(r, "state").unwrap_or_default().to_string();
                    let periods = periods_of(r)?;
                    let (give_back, spend) = match state.as_str() {
                        "reserved" => (amount - u.cost, u.cost - amount),
                        // The sweeper refunded it (the request outlived the timeout): charge afresh.
                        "refunded" => (-u.cost, u.cost),
                        _ => (0, 0),
                    };
                    if state != "settled" {
                        let now = self.now_ms();
                        let new_state = if u.cost == 0 { "refunded" } else { "settled" };
                        tx.update(
                            self.table("reservations"),
                            key_request(&u.request_id),
                            "SET #state = :new, #charged = :cost, #closed_at = :now, #ttl = :ttl",
                            Some("#state = :old"),
                            vec![
                                (":new", s(new_state)),
                                (":cost", n(u.cost)),
                                (":now", n(now)),
                                (":old", s(state)),
                                (":ttl", n(expiry(now))),
                            ],
                        );
                    }
                    (give_back, spend, periods)
                }
                None if u.cost > 0 => {
                    let (d, m) = spend_periods(u.created_at);
                    (-u.cost, u.cost, vec![d, m])
                }
                None => (0, 0, vec![]),
            };
            let used = u.cost.max(0);
            if let Some(t) = &token {
                self.credit(&mut tx, "tokens", "remaining_quota", t, give_back, used);
                if !t.unlimited && crosses(t.balance, t.balance + give_back) {
                    self.bump(&mut tx);
                }
            }
            if let Some(h) = &user {
                self.credit(&mut tx, "users", "quota", h, give_back, used);
            }
            self.add_spend(&mut tx, u.token_id, &periods, spend);
            match self.transact(tx).await? {
                TxEnd::Done => {
                    let token = self.token(u.token_id).await?;
                    let user = self.user(u.user_id).await?;
                    return Ok(Some(Settled { token, user }));
                }
                TxEnd::Refused(failed) if failed.contains(&usage) => return Ok(None),
                TxEnd::Refused(_) => self.backoff(attempt).await,
            }
        }
        Err(backend(format!("could not settle {} against concurrent changes", u.request_id)))
    }

    /// Moves a user's balance by the entry's delta (if unchanged since read)
    /// and writes the entry with the balance after, in `tx`.
    async fn balance_entry(&self, tx: &mut Tx, user: &User, entry: LedgerEntry) -> StoreResult<User> {
        let quota = bounded_balance(user.quota, entry.delta)?;
        let after = User { quota, ..user.clone() };
        tx.update(
            self.table("users"),
            key_id(user.id),
            "SET #quota = :new",
            Some("#quota = :old"),
            vec![(":new", n(after.quota)), (":old", n(user.quota))],
        );
        let entry =
            LedgerEntry { id: self.next_id("ledger").await?, user_id: user.id, balance_after: after.quota, ..entry };
        tx.put(self.table("ledger"), to_item(&entry)?, None, vec![]);
        Ok(after)
    }
}

fn entry(delta: i64, kind: &str, actor: &str, note: &str, now_ms: i64) -> LedgerEntry {
    LedgerEntry {
        id: 0,
        user_id: 0,
        delta,
        balance_after: 0,
        kind: kind.into(),
        actor: actor.into(),
        note: note.into(),
        created_at: now_ms,
    }
}

/// The spend periods a reservation counted against.
fn periods_of(reservation: &Item) -> StoreResult<Vec<String>> {
    let Some(p) = reservation.get("periods") else { return Ok(Vec::new()) };
    serde_dynamo::from_attribute_value(p.clone()).map_err(backend)
}

fn key_request(id: &str) -> Item {
    std::collections::HashMap::from([("request_id".to_string(), s(id))])
}

impl<U: Upstream, C: Clock> Ledger for DynamoStore<U, C> {
    async fn reserve(&self, r: Reservation) -> StoreResult<Result<(), Shortfall>> {
        // A hold is at most what a request may be charged (`MAX_UNITS`).
        let r = Reservation { amount: clamp_charge(r.amount), ..r };
        let (day, month) = spend_periods(r.created_at);
        for attempt in 0..ATTEMPTS {
            let user =
                self.user_item(r.user_id).await?.ok_or_else(|| StoreError::NotFound(format!("user {}", r.user_id)))?;
            let token_item = self
                .token_item(r.token_id)
                .await?
                .ok_or_else(|| StoreError::NotFound(format!("token {}", r.token_id)))?;
            let (user, token) = (holder(&user, "quota"), holder(&token_item, "remaining_quota"));
            let (daily, monthly) = (get_n(&token_item, "daily_limit"), get_n(&token_item, "monthly_limit"));
            if !user.unlimited && user.balance < r.amount {
                return Ok(Err(Shortfall::UserBalance));
            }
            if !token.unlimited && token.balance < r.amount {
                return Ok(Err(Shortfall::TokenQuota));
            }
            if let Some(cap) = daily {
                if self.spent(r.token_id, &day).await?.saturating_add(r.amount) > cap {
                    return Ok(Err(Shortfall::DailyLimit));
                }
            }
            if let Some(cap) = monthly {
                if self.spent(r.token_id, &month).await?.saturating_add(r.amount) > cap {
                    return Ok(Err(Shortfall::MonthlyLimit));
                }
            }
            let mut tx = Tx::default();
            let mut refusals = Vec::new();
            let take = vec![(":a", n(r.amount)), (":f", AttributeValue::Bool(false))];
            if !user.unlimited {
                let i = tx.update(
                    self.table("users"),
                    key_id(r.user_id),
                    "SET #quota = #quota - :a",
                    Some("#unlimited = :f AND #quota >= :a"),
                    take.clone(),
                );
                refusals.push((i, Shortfall::UserBalance));
            }
            if !token.unlimited {
                let i = tx.update(
                    self.table("tokens"),
                    key_id(r.token_id),
                    "SET #remaining_quota = #remaining_quota - :a",
                    Some("#unlimited = :f AND #remaining_quota >= :a"),
                    take,
                );
                refusals.push((i, Shortfall::TokenQuota));
                if crosses(token.balance, token.balance - r.amount) {
                    self.bump(&mut tx);
                }
            }
            for (period, cap, why) in [(&day, daily, Shortfall::DailyLimit), (&month, monthly, Shortfall::MonthlyLimit)]
            {
                let cond = cap.map(|_| "attribute_not_exists(#spent) OR #spent <= :room");
                let mut vals = vec![(":a", n(r.amount))];
                if let Some(cap) = cap {
                    vals.push((":room", n(cap - r.amount)));
                }
                let i = tx.update(self.table("meta"), spend_key(r.token_id, period), "ADD #spent :a", cond, vals);
                refusals.push((i, why));
            }
            let held = Reservation { state: "reserved".into(), charged: None, ..r.clone() };
            let mut item = to_item(&held)?;
            item.insert("periods".into(), serde_dynamo::to_attribute_value(vec![&day, &month]).map_err(backend)?);
            let new = tx.put(self.table("reservations"), item, Some("attribute_not_exists(#request_id)"), vec![]);
            match self.transact(tx).await? {
                TxEnd::Done => return Ok(Ok(())),
                TxEnd::Refused(failed) if failed.contains(&new) => {
                    return Err(StoreError::Conflict(format!("request {} already holds a reservation", r.request_id)))
                }
                // Something changed since the read: read again, unless out of patience.
                TxEnd::Refused(failed) if attempt + 1 == ATTEMPTS => {
                    let why =
                        refusals.iter().find(|(i, _)| failed.contains(i)).map_or(Shortfall::UserBalance, |(_, w)| *w);
                    return Ok(Err(why));
                }
                TxEnd::Refused(_) => self.backoff(attempt).await,
            }
        }
        Err(backend("unreachable: the reserve loop always returns"))
    }

    async fn sweep_reservations(&self, cutoff_ms: i64, now_ms: i64) -> StoreResult<u64> {
        let open = self
            .query(
                "reservations",
                Some("by-state"),
                "#state = :reserved AND #created_at < :cutoff",
                vec![(":reserved", s("reserved")), (":cutoff", n(cutoff_ms))],
            )
            .await?;
        let mut swept = 0;
        for r in open {
            let held: Reservation = from_item(r.clone())?;
            let periods = periods_of(&r)?;
            for attempt in 0..ATTEMPTS {
                let (user, token) = self.holders(held.user_id, held.token_id).await?;
                let mut tx = Tx::default();
                let close = tx.update(
                    self.table("reservations"),
                    key_request(&held.request_id),
                    "SET #state = :refunded, #charged = :zero, #closed_at = :now, #ttl = :ttl",
                    Some("#state = :reserved"),
                    vec![
                        (":refunded", s("refunded")),
                        (":zero", n(0)),
                        (":now", n(now_ms)),
                        (":reserved", s("reserved")),
                        (":ttl", n(expiry(now_ms))),
                    ],
                );
                if let Some(t) = &token {
                    self.credit(&mut tx, "tokens", "remaining_quota", t, held.amount, 0);
                    if !t.unlimited && crosses(t.balance, t.balance + held.amount) {
                        self.bump(&mut tx);
                    }
                }
                if let Some(u) = &user {
                    self.credit(&mut tx, "users", "quota", u, held.amount, 0);
                }
                self.add_spend(&mut tx, held.token_id, &periods, -held.amount);
                match self.transact(tx).await? {
                    TxEnd::Done => {
                        swept += 1;
                        break;
                    }
                    // Settled (or swept) by someone else meanwhile.
                    TxEnd::Refused(failed) if failed.contains(&close) => break,
                    TxEnd::Refused(_) => self.backoff(attempt).await,
                }
            }
        }
        Ok(swept)
    }

    async fn reservations(&self, state: Option<String>, page: Page) -> StoreResult<Paged<Reservation>> {
        let items = match &state {
            Some(st) => self.query("reservations", Some("by-state"), "#state = :s", vec![(":s", s(st))]).await?,
            None => self.scan("reservations").await?,
        };
        let mut all = items.into_iter().map(from_item::<Reservation>).collect::<StoreResult<Vec<_>>>()?;
        all.sort_by(|a, b| (a.created_at, &a.request_id).cmp(&(b.created_at, &b.request_id)));
        Ok(page_of(all, page))
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
        for attempt in 0..ATTEMPTS {
            let user = self.user(user_id).await?.ok_or_else(|| StoreError::NotFound(format!("user {user_id}")))?;
            let mut tx = Tx::default();
            let after = self.balance_entry(&mut tx, &user, entry(delta, kind, actor, note, now_ms)).await?;
            match self.transact(tx).await? {
                TxEnd::Done => return Ok(after),
                TxEnd::Refused(_) => self.backoff(attempt).await,
            }
        }
        Err(backend(format!("could not adjust user {user_id}'s balance against concurrent changes")))
    }

    async fn ledger(&self, user_id: Option<Id>, page: Page) -> StoreResult<Paged<LedgerEntry>> {
        let items = match user_id {
            Some(u) => self.query("ledger", None, "#user_id = :u", vec![(":u", n(u))]).await?,
            None => self.scan("ledger").await?,
        };
        let mut all = items.into_iter().map(from_item::<LedgerEntry>).collect::<StoreResult<Vec<_>>>()?;
        all.sort_by_key(|e| std::cmp::Reverse(e.id));
        Ok(page_of(all, page))
    }

    async fn create_codes(
        &self,
        batch: &str,
        codes: Vec<(String, String)>,
        value: i64,
        expires_at: Option<i64>,
        now_ms: i64,
    ) -> StoreResult<()> {
        for chunk in codes.chunks(100) {
            let ids = self.next_ids("codes", chunk.len()).await?;
            let mut tx = Tx::default();
            for ((hash, hint), id) in chunk.iter().zip(ids) {
                let code = RedemptionCode {
                    id,
                    batch: batch.into(),
                    code_hint: hint.clone(),
                    value,
                    expires_at,
                    redeemed_by: None,
                    redeemed_at: None,
                    created_at: now_ms,
                };
                let mut item = to_item(&code)?;
                // Absent until redeemed, so the claim can test for it.
                item.remove("redeemed_by");
                item.remove("redeemed_at");
                item.extend(key_meta("code", hash));
                tx.put(self.table("meta"), item, Some("attribute_not_exists(#pk)"), vec![]);
            }
            if let TxEnd::Refused(_) = self.transact(tx).await? {
                return Err(StoreError::Conflict("a code in this batch already exists".into()));
            }
        }
        Ok(())
    }

    async fn codes(&self, page: Page) -> StoreResult<Paged<RedemptionCode>> {
        let items = self.query("meta", None, "#pk = :pk", vec![(":pk", s("code"))]).await?;
        let mut all = items.into_iter().map(from_item::<RedemptionCode>).collect::<StoreResult<Vec<_>>>()?;
        all.sort_by_key(|c| c.id);
        Ok(page_of(all, page))
    }

    async fn alert_level(&self, subject: &str) -> StoreResult<Option<i64>> {
        Ok(self.get("meta", key_meta("alert-level", subject)).await?.and_then(|i| get_n(&i, "level")))
    }

    async fn record_alerts(&self, subject: &str, level: Option<i64>, alerts: Vec<Alert>) -> StoreResult<Vec<Alert>> {
        let mut tx = Tx::default();
        let mut item = key_meta("alert-level", subject);
        item.insert("level".into(), level.map_or(AttributeValue::Null(true), n));
        tx.put(self.table("meta"), item, None, vec![]);
        let mut stored = Vec::with_capacity(alerts.len());
        let first = match alerts.len() {
            0 => 0,
            k => *self.next_ids("alerts", k).await?.start(),
        };
        for (id, a) in (first..).zip(alerts) {
            let a = Alert { id, ..a };
            let mut item = to_item(&a)?;
            item.extend(key_meta("alert", &format!("{:020}", a.id)));
            tx.put(self.table("meta"), item, None, vec![]);
            stored.push(a);
        }
        self.transact(tx).await?;
        Ok(stored)
    }

    async fn alerts(&self, page: Page) -> StoreResult<Paged<Alert>> {
        let items = self.query("meta", None, "#pk = :pk", vec![(":pk", s("alert"))]).await?;
        let all = items.into_iter().map(from_item::<Alert>).collect::<StoreResult<Vec<_>>>()?;
        Ok(page_of(all, page))
    }

    async fn redeem(
        &self,
        code_hash: &str,
        user_id: Id,
        actor: &str,
        now_ms: i64,
    ) -> StoreResult<Result<User, RedeemError>> {
        let Some(item) = self.get("meta", key_meta("code", code_hash)).await? else {
            return Ok(Err(RedeemError::Unknown));
        };
        let code: RedemptionCode = from_item(item)?;
        if code.redeemed_by.is_some() {
            return Ok(Err(RedeemError::AlreadyUsed));
        }
        if code.expires_at.is_some_and(|t| t <= now_ms) {
            return Ok(Err(RedeemError::Expired));
        }
        for attempt in 0..ATTEMPTS {
            let user = self.user(user_id).await?.ok_or_else(|| StoreError::NotFound(format!("user {user_id}")))?;
            let mut tx = Tx::default();
            let claim = tx.update(
                self.table("meta"),
                key_meta("code", code_hash),
                "SET #redeemed_by = :u, #redeemed_at = :now",
                Some("attribute_not_exists(#redeemed_at)"),
                vec![(":u", n(user_id)), (":now", n(now_ms))],
            );
            let note = format!("code {}", code.code_hint);
            let after = self.balance_entry(&mut tx, &user, entry(code.value, "redeem", actor, &note, now_ms)).await?;
            match self.transact(tx).await? {
                TxEnd::Done => return Ok(Ok(after)),
                TxEnd::Refused(failed) if failed.contains(&claim) => return Ok(Err(RedeemError::AlreadyUsed)),
                TxEnd::Refused(_) => self.backoff(attempt).await,
            }
        }
        Err(backend(format!("could not redeem for user {user_id} against concurrent changes")))
    }
}
