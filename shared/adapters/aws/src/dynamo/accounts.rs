//! [`Accounts`] over DynamoDB: accounts, sessions and their refresh tokens,
//! tickets, linked identities, signing keys and the audit log.
//!
//! Each row lives where its most frequent lookup finds it with one strongly
//! consistent `GetItem`:
//!
//! - `accounts` (user_id): the account. Its email is claimed by a guard item
//!   in `meta` (`unique` / `email#<email>` → the user id), written and moved in
//!   the same transaction as the row, so it is unique and the consistent
//!   lookup by email. [`Accounts::update_account`] is a put conditioned on
//!   the version that was read.
//! - `sessions` (id): a session, read by the id its access token carries.
//! - `refresh-tokens` (hash): every refresh token a session ever had → the
//!   session; the session row holds the current one, so an older hash is a
//!   replay. Rotation swaps the session's hash conditioned on the old one and
//!   registers the new hash in one transaction.
//! - `user-links` (user_id, sk): what a user's account reaches, listed by a
//!   strongly consistent `Query` of one partition (a GSI read could miss a
//!   session made a moment before "sign out everywhere" or an account
//!   deletion): `session#<id>` for each session and `identity#<provider>#<subject>`
//!   (a copy of the identity, which never changes) for each linked identity,
//!   written and removed in the same transaction as the row.
//! - `identities` (provider_subject = `<provider>#<subject>`): an identity,
//!   found at sign-in by what the provider says.
//! - `tickets` (hash): single-use tokens. Taking one is a `DeleteItem`
//!   returning the old item, so of concurrent takers exactly one gets it;
//!   purpose and expiry are checked on what came back. The `by-user` index
//!   (user_id, purpose) finds the ones a new link voids (old tickets, so its
//!   eventual consistency is harmless; OIDC state tickets all share user 0,
//!   one index partition, which takes ~1000 writes/s).
//! - `signing-keys` (kid): a handful of rows, read by scan.
//! - `audit` (id): append-only, idempotent by id (conditional put). Pages run
//!   newest first by id over indexes sorted by id, each read backwards with
//!   `id < before` as the key condition and the other filters applied to
//!   what comes back, until the page is full:
//!   - `by-actor` (actor_id, id) and `by-target` (target_id, id), sparse (a row
//!     without an actor or target is not in them): one user's rows; `involving`
//!     reads both and merges. Cost grows with that user's rows, not the log's.
//!   - `by-month` (month of `at`, id): the admin listing, one partition per
//!     calendar month, walked from the newest month back through the months
//!     in [since, until) that have rows (marked in `meta`, `audit-month` /
//!     `YYYY-MM`, before the first row of a month is written). A month's rows
//!     share one index partition, so appends are capped near 1000/s — far
//!     above what sign-ins and admin actions make. An `action`, `since` or
//!     `until` filter without a user reads through the months it spans (time
//!     bounds skip whole months); ids and `at` come from the same clock, so
//!     month order is id order (a row whose id and `at` straddle a month
//!     boundary may sort a page late).
//!
//!   Index reads are eventually consistent: a row appended a moment ago may
//!   be missing from a listing for about a second.
//!
//! Rows that only matter until a time carry a `ttl` (Unix s) that
//! `terraform/dynamodb.tf` enables: sessions, their links and refresh tokens
//! a week after the session expires, tickets a day after.

use std::collections::HashMap;
use std::sync::atomic::Ordering;

use chrono::Datelike;
use futures_util::future::join_all;
use oblivious_core::model::{Id, User};
use oblivious_ports::{
    Account, Accounts, AuditEntry, AuditFilter, Clock, Identity, NewAccount, NewUser, Purpose, RefreshLookup, Session,
    SigningKey, StoreError, StoreResult, Ticket, Upstream,
};
use serde_dynamo::AttributeValue;
use serde_json::json;

use super::store::{guard, guard_item, NEW};
use super::{
    from_item, get_n, get_s, key_meta, n, names_in, s, to_item, values, DynamoStore, Item, ItemPage, Tx, TxEnd,
    UpdateItemOutput, ATTEMPTS,
};

/// How long a session's rows outlive its expiry before TTL removes them.
const SESSION_KEPT_S: i64 = 7 * 86_400;
/// How long a ticket's row outlives its expiry (taking one checks the expiry anyway).
const TICKET_KEPT_S: i64 = 86_400;
/// Rows read per audit query page (filters apply after the read).
const AUDIT_PAGE: usize = 200;

fn key(name: &str, v: AttributeValue) -> Item {
    HashMap::from([(name.to_string(), v)])
}

fn key_user(id: Id) -> Item {
    key("user_id", n(id))
}

fn key_link(user_id: Id, sk: &str) -> Item {
    HashMap::from([("user_id".to_string(), n(user_id)), ("sk".to_string(), s(sk))])
}

fn provider_subject(provider: &str, subject: &str) -> String {
    format!("{provider}#{subject}")
}

fn session_sk(id: &str) -> String {
    format!("session#{id}")
}

fn identity_sk(provider: &str, subject: &str) -> String {
    format!("identity#{provider}#{subject}")
}

/// The `ttl` attribute (Unix s) of a row kept `kept_s` past `expires_ms`.
fn ttl(expires_ms: i64, kept_s: i64) -> AttributeValue {
    n(expires_ms.div_euclid(1000).saturating_add(kept_s))
}

/// An item without its null members: an absent optional is an absent
/// attribute, which conditions test with `attribute_not_exists` and sparse
/// indexes skip (an index key attribute may not be null).
fn item_of<T: serde::Serialize>(v: &T) -> StoreResult<Item> {
    let mut item = to_item(v)?;
    item.retain(|_, v| !matches!(v, AttributeValue::Null(_)));
    Ok(item)
}

fn conflict(what: impl Into<String>) -> StoreError {
    StoreError::Conflict(what.into())
}

/// `(index, "YYYY-MM")` of the calendar month (UTC) of a Unix ms time.
fn month_of(at: i64) -> (i64, String) {
    let t = chrono::DateTime::from_timestamp_millis(at).unwrap_or_default();
    (i64::from(t.year()) * 12 + i64::from(t.month0()), t.format("%Y-%m").to_string())
}

fn audit_keeps(f: &AuditFilter, e: &AuditEntry) -> bool {
    f.actor_id.is_none_or(|u| e.actor_id == Some(u))
        && f.target_id.is_none_or(|u| e.target_id == Some(u))
        && f.involving.is_none_or(|u| e.actor_id == Some(u) || e.target_id == Some(u))
        && f.action.as_ref().is_none_or(|a| &e.action == a)
        && f.since.is_none_or(|t| e.at >= t)
        && f.until.is_none_or(|t| e.at < t)
        && f.before.as_ref().is_none_or(|b| e.id.as_str() < b.as_str())
}

/// Newest (highest id) first, each id once, at most `limit`.
fn newest_first(mut rows: Vec<AuditEntry>, limit: usize) -> Vec<AuditEntry> {
    rows.sort_by(|a, b| b.id.cmp(&a.id));
    rows.dedup_by(|a, b| a.id == b.id);
    rows.truncate(limit);
    rows
}

impl<U: Upstream, C: Clock> DynamoStore<U, C> {
    /// A conditional `UpdateItem`; whether the condition held.
    async fn update_if(
        &self,
        table: &str,
        key: Item,
        expr: &str,
        cond: &str,
        vals: Vec<(&str, AttributeValue)>,
    ) -> StoreResult<bool> {
        let body = json!({
            "TableName": self.table(table),
            "Key": key,
            "UpdateExpression": expr,
            "ConditionExpression": cond,
            "ExpressionAttributeNames": names_in(&[expr, cond]),
            "ExpressionAttributeValues": values(vals),
        });
        Ok(self.write_if("UpdateItem", body).await?.is_some())
    }

    /// A `PutItem` of a new row (none with its key `id_attr`); whether it was new.
    async fn put_new(&self, table: &str, item: Item, id_attr: &str) -> StoreResult<bool> {
        let cond = format!("attribute_not_exists(#{id_attr})");
        let body = json!({
            "TableName": self.table(table),
            "Item": item,
            "ConditionExpression": cond,
            "ExpressionAttributeNames": names_in(&[&cond]),
        });
        Ok(self.write_if("PutItem", body).await?.is_some())
    }

    /// A `DeleteItem`, conditional when `cond` is given: the item it removed,
    /// `None` when there was none or the condition failed.
    async fn delete_returning(
        &self,
        table: &str,
        key: Item,
        cond: Option<&str>,
        vals: Vec<(&str, AttributeValue)>,
    ) -> StoreResult<Option<Item>> {
        let body = json!({
            "TableName": self.table(table),
            "Key": key,
            "ConditionExpression": cond,
            "ExpressionAttributeNames": cond.and_then(|c| names_in(&[c])),
            "ExpressionAttributeValues": values(vals),
            "ReturnValues": "ALL_OLD",
        });
        let Some(answer) = self.write_if("DeleteItem", body).await? else { return Ok(None) };
        let out: UpdateItemOutput = serde_json::from_value(answer).map_err(super::backend)?;
        Ok(out.attributes)
    }

    fn account_item(a: &Account) -> StoreResult<Item> {
        item_of(a)
    }

    /// The session's row, its first refresh token and its link, into `tx`.
    fn put_session(&self, tx: &mut Tx, x: &Session) -> StoreResult<()> {
        let mut row = item_of(x)?;
        row.insert("ttl".into(), ttl(x.expires_at, SESSION_KEPT_S));
        tx.put(self.table("sessions"), row, Some("attribute_not_exists(#id)"), vec![]);
        self.put_refresh(tx, &x.refresh_hash, x);
        let mut link = key_link(x.user_id, &session_sk(&x.id));
        link.insert("session_id".into(), s(&x.id));
        link.insert("created_at".into(), n(x.created_at));
        link.insert("ttl".into(), ttl(x.expires_at, SESSION_KEPT_S));
        tx.put(self.table("user-links"), link, None, vec![]);
        Ok(())
    }

    /// Registers a refresh token of the session (refused when the hash is known); its item index.
    fn put_refresh(&self, tx: &mut Tx, hash: &str, x: &Session) -> usize {
        let item = HashMap::from([
            ("hash".to_string(), s(hash)),
            ("session_id".to_string(), s(&x.id)),
            ("user_id".to_string(), n(x.user_id)),
            ("ttl".to_string(), ttl(x.expires_at, SESSION_KEPT_S)),
        ]);
        tx.put(self.table("refresh-tokens"), item, Some("attribute_not_exists(#hash)"), vec![])
    }

    /// The user's links whose sort key starts with `prefix` (all of them for
    /// an empty one: a key condition may not compare with an empty string), consistently.
    async fn links(&self, user_id: Id, prefix: &str) -> StoreResult<Vec<Item>> {
        if prefix.is_empty() {
            return self.query("user-links", None, "#user_id = :u", vec![(":u", n(user_id))]).await;
        }
        let cond = "#user_id = :u AND begins_with(#sk, :prefix)";
        self.query("user-links", None, cond, vec![(":u", n(user_id)), (":prefix", s(prefix))]).await
    }

    /// The ids of the user's sessions (expired and revoked ones too, until TTL removes them).
    async fn session_ids(&self, user_id: Id) -> StoreResult<Vec<String>> {
        let links = self.links(user_id, "session#").await?;
        Ok(links.iter().filter_map(|l| get_s(l, "session_id")).map(str::to_string).collect())
    }

    /// Removes a session or identity row (when it is still this user's) and its link.
    async fn unlink_row(&self, user_id: Id, table: &str, row: Item, link: Item) -> StoreResult<()> {
        let mut tx = Tx::default();
        tx.delete_where(self.table(table), row, Some("#user_id = :u"), vec![(":u", n(user_id))]);
        tx.delete(self.table("user-links"), link.clone(), None);
        if let TxEnd::Refused(_) = self.transact(tx).await? {
            // The row is gone (or was never this user's): drop the stale link alone.
            let mut tx = Tx::default();
            tx.delete(self.table("user-links"), link, None);
            self.transact(tx).await?;
        }
        Ok(())
    }

    /// Up to `limit` audit rows `keep` accepts from one partition of an index,
    /// newest first, below the filter's `before` cursor.
    async fn audit_partition(
        &self,
        index: &str,
        attr: &str,
        value: AttributeValue,
        f: &AuditFilter,
        limit: usize,
    ) -> StoreResult<Vec<AuditEntry>> {
        let mut cond = format!("#{attr} = :k");
        let mut vals = vec![(":k", value)];
        if let Some(before) = &f.before {
            cond.push_str(" AND #id < :before");
            vals.push((":before", s(before)));
        }
        let vals = values(vals);
        let mut out = Vec::new();
        let mut start: Option<Item> = None;
        while out.len() < limit {
            let body = json!({
                "TableName": self.table("audit"),
                "IndexName": index,
                "KeyConditionExpression": cond,
                "ExpressionAttributeNames": names_in(&[&cond]),
                "ExpressionAttributeValues": vals,
                "ScanIndexForward": false,
                "Limit": AUDIT_PAGE,
                "ExclusiveStartKey": start,
            });
            let page: ItemPage = self.call("Query", body).await?;
            for item in page.items {
                let e: AuditEntry = from_item(item)?;
                if audit_keeps(f, &e) && out.len() < limit {
                    out.push(e);
                }
            }
            start = page.last_evaluated_key;
            if start.is_none() {
                break;
            }
        }
        Ok(out)
    }

    /// The admin listing: month partitions from the newest back.
    async fn audit_by_month(&self, f: &AuditFilter, limit: usize) -> StoreResult<Vec<AuditEntry>> {
        let marked = self.query("meta", None, "#pk = :pk", vec![(":pk", s("audit-month"))]).await?;
        let low = f.since.map(|t| month_of(t).1);
        let high = f.until.map(|t| month_of(t.saturating_sub(1)).1);
        let mut months: Vec<String> = marked
            .iter()
            .filter_map(|i| get_s(i, "sk"))
            .filter(|m| low.as_deref().is_none_or(|l| *m >= l) && high.as_deref().is_none_or(|h| *m <= h))
            .map(str::to_string)
            .collect();
        months.sort_unstable_by(|a, b| b.cmp(a));
        let mut out = Vec::new();
        for m in months {
            if out.len() >= limit {
                break;
            }
            let rows = self.audit_partition("by-month", "month", s(m), f, limit - out.len()).await?;
            out.extend(rows);
        }
        Ok(newest_first(out, limit))
    }
}

impl<U: Upstream, C: Clock> Accounts for DynamoStore<U, C> {
    async fn create_account(
        &self,
        user: NewUser,
        account: NewAccount,
        session: Option<Session>,
        now_ms: i64,
    ) -> StoreResult<(User, Account)> {
        let user = self.new_user(user, now_ms).await?;
        let acct = Account::new(user.id, account, now_ms);
        let mut tx = Tx::default();
        let name = self.put_new_user(&mut tx, &user)?;
        let email = tx.put(self.table("meta"), guard_item("email", &acct.email, user.id), Some(NEW), vec![]);
        tx.put(self.table("accounts"), Self::account_item(&acct)?, Some("attribute_not_exists(#user_id)"), vec![]);
        if let Some(x) = session {
            self.put_session(&mut tx, &Session { user_id: user.id, ..x })?;
        }
        self.bump(&mut tx);
        match self.transact(tx).await? {
            TxEnd::Done => Ok((user, acct)),
            TxEnd::Refused(f) if f.contains(&email) => Err(conflict(format!("`{}` has an account", acct.email))),
            TxEnd::Refused(f) if f.contains(&name) => Err(conflict(format!("a user named `{}` exists", user.name))),
            TxEnd::Refused(_) => Err(conflict("the session id or its refresh token is taken")),
        }
    }

    async fn attach_account(&self, user_id: Id, account: NewAccount, now_ms: i64) -> StoreResult<Account> {
        if oblivious_ports::Store::user(self, user_id).await?.is_none() {
            return Err(StoreError::NotFound(format!("user {user_id}")));
        }
        let acct = Account::new(user_id, account, now_ms);
        let mut tx = Tx::default();
        let email = tx.put(self.table("meta"), guard_item("email", &acct.email, user_id), Some(NEW), vec![]);
        tx.put(self.table("accounts"), Self::account_item(&acct)?, Some("attribute_not_exists(#user_id)"), vec![]);
        match self.transact(tx).await? {
            TxEnd::Done => Ok(acct),
            TxEnd::Refused(f) if f.contains(&email) => Err(conflict(format!("`{}` has an account", acct.email))),
            TxEnd::Refused(_) => Err(conflict(format!("user {user_id} already has an account"))),
        }
    }

    async fn account(&self, user_id: Id) -> StoreResult<Option<Account>> {
        self.get("accounts", key_user(user_id)).await?.map(from_item).transpose()
    }

    async fn account_by_email(&self, email: &str) -> StoreResult<Option<Account>> {
        let email = email.to_lowercase();
        let Some(g) = self.get("meta", guard("email", &email)).await? else { return Ok(None) };
        let Some(id) = get_n(&g, "ref") else { return Ok(None) };
        // The claim and the row move together; check anyway rather than answer for another email.
        Ok(self.account(id).await?.filter(|a| a.email == email))
    }

    async fn update_account(&self, account: Account, now_ms: i64) -> StoreResult<Account> {
        let id = account.user_id;
        let stored = self.account(id).await?.ok_or_else(|| StoreError::NotFound(format!("account {id}")))?;
        if stored.version != account.version {
            return Err(conflict(format!("account {id} changed since it was read")));
        }
        let next = Account {
            email: account.email.to_lowercase(),
            version: account.version + 1,
            updated_at: now_ms,
            created_at: stored.created_at,
            ..account
        };
        let mut tx = Tx::default();
        let row = tx.put(
            self.table("accounts"),
            Self::account_item(&next)?,
            Some("#version = :v"),
            vec![(":v", n(stored.version))],
        );
        // The version condition holds only if the row is still the one read,
        // so its email is the claim to give up.
        let claim = (next.email != stored.email).then(|| {
            let claim = tx.put(self.table("meta"), guard_item("email", &next.email, id), Some(NEW), vec![]);
            tx.delete_where(self.table("meta"), guard("email", &stored.email), Some("#ref = :u"), vec![(":u", n(id))]);
            claim
        });
        match self.transact(tx).await? {
            TxEnd::Done => Ok(next),
            TxEnd::Refused(f) if !f.contains(&row) && claim.is_some_and(|c| f.contains(&c)) => {
                Err(conflict(format!("`{}` has an account", next.email)))
            }
            TxEnd::Refused(_) => match self.account(id).await? {
                None => Err(StoreError::NotFound(format!("account {id}"))),
                Some(_) => Err(conflict(format!("account {id} changed since it was read"))),
            },
        }
    }

    /// The account and its email claim first (in one transaction, so the
    /// email is free the moment the account is gone), then each session and
    /// identity with its link; a deletion cut short is finished by the next.
    async fn delete_account(&self, user_id: Id) -> StoreResult<()> {
        let mut removed = false;
        for attempt in 0..ATTEMPTS {
            let Some(acct) = self.account(user_id).await? else {
                removed = true;
                break;
            };
            let mut tx = Tx::default();
            tx.delete_where(
                self.table("accounts"),
                key_user(user_id),
                Some("#version = :v"),
                vec![(":v", n(acct.version))],
            );
            tx.delete_where(
                self.table("meta"),
                guard("email", &acct.email),
                Some("#ref = :u"),
                vec![(":u", n(user_id))],
            );
            match self.transact(tx).await? {
                TxEnd::Done => {
                    removed = true;
                    break;
                }
                TxEnd::Refused(_) => self.backoff(attempt).await,
            }
        }
        if !removed {
            return Err(conflict(format!("account {user_id} kept changing; retry")));
        }
        for link in self.links(user_id, "").await? {
            let Some(sk) = get_s(&link, "sk").map(str::to_string) else { continue };
            let (table, row) = if let Some(id) = sk.strip_prefix("session#") {
                ("sessions", key("id", s(id)))
            } else {
                let ps = match (get_s(&link, "provider"), get_s(&link, "subject")) {
                    (Some(p), Some(sub)) => provider_subject(p, sub),
                    _ => continue,
                };
                ("identities", key("provider_subject", s(ps)))
            };
            self.unlink_row(user_id, table, row, key_link(user_id, &sk)).await?;
        }
        Ok(())
    }

    async fn create_session(&self, session: Session) -> StoreResult<()> {
        let mut tx = Tx::default();
        self.put_session(&mut tx, &session)?;
        match self.transact(tx).await? {
            TxEnd::Done => Ok(()),
            TxEnd::Refused(_) => Err(conflict(format!("session `{}` or its refresh token exists", session.id))),
        }
    }

    async fn session(&self, id: &str) -> StoreResult<Option<Session>> {
        self.get("sessions", key("id", s(id))).await?.map(from_item).transpose()
    }

    async fn sessions(&self, user_id: Id, now_ms: i64) -> StoreResult<Vec<Session>> {
        let ids = self.session_ids(user_id).await?;
        let read = join_all(ids.iter().map(|id| self.session(id))).await;
        let mut out: Vec<Session> = read
            .into_iter()
            .collect::<StoreResult<Vec<_>>>()?
            .into_iter()
            .flatten()
            .filter(|x| x.user_id == user_id && x.active(now_ms))
            .collect();
        out.sort_by(|a, b| b.created_at.cmp(&a.created_at).then_with(|| a.id.cmp(&b.id)));
        Ok(out)
    }

    async fn session_by_refresh(&self, refresh_hash: &str) -> StoreResult<RefreshLookup> {
        let Some(r) = self.get("refresh-tokens", key("hash", s(refresh_hash))).await? else {
            return Ok(RefreshLookup::Unknown);
        };
        let Some(id) = get_s(&r, "session_id") else { return Ok(RefreshLookup::Unknown) };
        Ok(match self.session(id).await? {
            // Its session was removed (with the account, or by TTL long after expiry).
            None => RefreshLookup::Unknown,
            Some(x) if x.refresh_hash == refresh_hash => RefreshLookup::Current(x),
            Some(x) => RefreshLookup::Reused(x),
        })
    }

    /// An `ip` or `user_agent` of `None` keeps the one recorded before.
    async fn rotate_session(
        &self,
        id: &str,
        old_hash: &str,
        new_hash: &str,
        ip: Option<String>,
        user_agent: Option<String>,
        now_ms: i64,
    ) -> StoreResult<Option<Session>> {
        let Some(cur) = self.session(id).await? else { return Ok(None) };
        if cur.refresh_hash != old_hash || cur.revoked_at.is_some() {
            return Ok(None);
        }
        let next = Session {
            refresh_hash: new_hash.into(),
            last_seen_at: now_ms,
            ip: ip.or(cur.ip),
            user_agent: user_agent.or(cur.user_agent),
            ..cur
        };
        let mut parts = vec!["#refresh_hash = :new", "#last_seen_at = :now"];
        let mut vals = vec![(":new", s(new_hash)), (":now", n(now_ms)), (":old", s(old_hash))];
        if let Some(ip) = &next.ip {
            parts.push("#ip = :ip");
            vals.push((":ip", s(ip)));
        }
        if let Some(ua) = &next.user_agent {
            parts.push("#user_agent = :ua");
            vals.push((":ua", s(ua)));
        }
        let mut tx = Tx::default();
        // The condition restates what was read: still this token, still not revoked.
        let swap = tx.update(
            self.table("sessions"),
            key("id", s(id)),
            &format!("SET {}", parts.join(", ")),
            Some("#refresh_hash = :old AND attribute_not_exists(#revoked_at)"),
            vals,
        );
        self.put_refresh(&mut tx, new_hash, &next);
        match self.transact(tx).await? {
            TxEnd::Done => Ok(Some(next)),
            TxEnd::Refused(f) if f.contains(&swap) => Ok(None),
            TxEnd::Refused(_) => Err(conflict("the new refresh token is already known")),
        }
    }

    async fn revoke_session(&self, id: &str, now_ms: i64) -> StoreResult<()> {
        let cond = "attribute_exists(#id) AND attribute_not_exists(#revoked_at)";
        if self
            .update_if("sessions", key("id", s(id)), "SET #revoked_at = :now", cond, vec![(":now", n(now_ms))])
            .await?
        {
            return Ok(());
        }
        match self.session(id).await? {
            Some(_) => Ok(()),
            None => Err(StoreError::NotFound(format!("session {id}"))),
        }
    }

    async fn revoke_sessions(&self, user_id: Id, except: Option<&str>, now_ms: i64) -> StoreResult<u64> {
        let ids = self.session_ids(user_id).await?;
        let cond = "#user_id = :u AND attribute_not_exists(#revoked_at) AND #expires_at > :now";
        let revokes = ids.iter().filter(|id| Some(id.as_str()) != except).map(|id| {
            let vals = vec![(":u", n(user_id)), (":now", n(now_ms))];
            self.update_if("sessions", key("id", s(id)), "SET #revoked_at = :now", cond, vals)
        });
        let done = join_all(revokes).await.into_iter().collect::<StoreResult<Vec<bool>>>()?;
        Ok(done.into_iter().filter(|r| *r).count() as u64)
    }

    async fn put_ticket(&self, ticket: Ticket) -> StoreResult<()> {
        let mut item = item_of(&ticket)?;
        item.insert("ttl".into(), ttl(ticket.expires_at, TICKET_KEPT_S));
        if self.put_new("tickets", item, "hash").await? {
            Ok(())
        } else {
            Err(conflict("this ticket exists"))
        }
    }

    async fn take_ticket(&self, hash: &str, purpose: Purpose, now_ms: i64) -> StoreResult<Option<Ticket>> {
        let Some(item) = self.delete_returning("tickets", key("hash", s(hash)), None, vec![]).await? else {
            return Ok(None);
        };
        let ticket: Ticket = from_item(item)?;
        Ok((ticket.purpose == purpose && now_ms < ticket.expires_at).then_some(ticket))
    }

    async fn drop_tickets(&self, user_id: Id, purpose: Purpose) -> StoreResult<u64> {
        let vals = || vec![(":u", n(user_id)), (":p", s(purpose.as_str()))];
        let found = self.query("tickets", Some("by-user"), "#user_id = :u AND #purpose = :p", vals()).await?;
        let mut dropped = 0;
        for t in found {
            let Some(hash) = get_s(&t, "hash") else { continue };
            // The index may lag: the condition restates what it said.
            let cond = Some("#user_id = :u AND #purpose = :p");
            if self.delete_returning("tickets", key("hash", s(hash)), cond, vals()).await?.is_some() {
                dropped += 1;
            }
        }
        Ok(dropped)
    }

    async fn link_identity(&self, identity: Identity) -> StoreResult<()> {
        let ps = provider_subject(&identity.provider, &identity.subject);
        let mut row = item_of(&identity)?;
        row.insert("provider_subject".into(), s(&ps));
        let mut link = item_of(&identity)?;
        link.extend(key_link(identity.user_id, &identity_sk(&identity.provider, &identity.subject)));
        let mut tx = Tx::default();
        tx.put(self.table("identities"), row, Some("attribute_not_exists(#provider_subject)"), vec![]);
        tx.put(self.table("user-links"), link, None, vec![]);
        match self.transact(tx).await? {
            TxEnd::Done => Ok(()),
            TxEnd::Refused(_) => Err(conflict(format!("this {} identity is linked already", identity.provider))),
        }
    }

    async fn identity(&self, provider: &str, subject: &str) -> StoreResult<Option<Identity>> {
        let k = key("provider_subject", s(provider_subject(provider, subject)));
        self.get("identities", k).await?.map(from_item).transpose()
    }

    async fn identities(&self, user_id: Id) -> StoreResult<Vec<Identity>> {
        let links = self.links(user_id, "identity#").await?;
        let mut out = links.into_iter().map(from_item::<Identity>).collect::<StoreResult<Vec<_>>>()?;
        out.sort_by(|a, b| (a.created_at, &a.provider, &a.subject).cmp(&(b.created_at, &b.provider, &b.subject)));
        Ok(out)
    }

    async fn unlink_identity(&self, user_id: Id, provider: &str) -> StoreResult<()> {
        let links = self.links(user_id, &format!("identity#{provider}#")).await?;
        let mut found = false;
        for link in links {
            let identity: Identity = from_item(link)?;
            if identity.provider != provider {
                continue;
            }
            found = true;
            let row = key("provider_subject", s(provider_subject(provider, &identity.subject)));
            let link = key_link(user_id, &identity_sk(provider, &identity.subject));
            self.unlink_row(user_id, "identities", row, link).await?;
        }
        if found {
            Ok(())
        } else {
            Err(StoreError::NotFound(format!("user {user_id} has no {provider} identity")))
        }
    }

    async fn signing_keys(&self) -> StoreResult<Vec<SigningKey>> {
        let mut keys = self.scan("signing-keys").await?.into_iter().map(from_item).collect::<StoreResult<Vec<_>>>()?;
        keys.sort_by(|a: &SigningKey, b| (b.created_at, &b.kid).cmp(&(a.created_at, &a.kid)));
        Ok(keys)
    }

    async fn add_signing_key(&self, key: SigningKey) -> StoreResult<()> {
        if self.put_new("signing-keys", item_of(&key)?, "kid").await? {
            Ok(())
        } else {
            Err(conflict(format!("signing key `{}` exists", key.kid)))
        }
    }

    async fn prune_signing_keys(&self, now_ms: i64) -> StoreResult<u64> {
        let mut pruned = 0;
        for k in self.scan("signing-keys").await? {
            if get_n(&k, "expires_at").is_some_and(|t| t < now_ms) {
                let Some(kid) = get_s(&k, "kid") else { continue };
                let cond = Some("#expires_at < :now");
                let gone = self.delete_returning("signing-keys", key("kid", s(kid)), cond, vec![(":now", n(now_ms))]);
                if gone.await?.is_some() {
                    pruned += 1;
                }
            }
        }
        Ok(pruned)
    }

    async fn append_audit(&self, entry: AuditEntry) -> StoreResult<()> {
        let (index, month) = month_of(entry.at);
        // The month is listed before its first row is written, so no row is unreachable.
        if self.audit_month.load(Ordering::Relaxed) != index {
            let body = json!({ "TableName": self.table("meta"), "Item": key_meta("audit-month", &month) });
            self.call::<serde_json::Value>("PutItem", body).await?;
            self.audit_month.store(index, Ordering::Relaxed);
        }
        let mut item = item_of(&entry)?;
        item.insert("month".into(), s(month));
        // Idempotent by id: a row already there stays as first written.
        self.put_new("audit", item, "id").await?;
        Ok(())
    }

    async fn audit(&self, filter: AuditFilter, limit: u64) -> StoreResult<Vec<AuditEntry>> {
        let limit = usize::try_from(limit).unwrap_or(usize::MAX);
        if limit == 0 {
            return Ok(Vec::new());
        }
        let f = &filter;
        if let Some(u) = f.actor_id {
            return self.audit_partition("by-actor", "actor_id", n(u), f, limit).await;
        }
        if let Some(u) = f.target_id {
            return self.audit_partition("by-target", "target_id", n(u), f, limit).await;
        }
        if let Some(u) = f.involving {
            let mut rows = self.audit_partition("by-actor", "actor_id", n(u), f, limit).await?;
            rows.extend(self.audit_partition("by-target", "target_id", n(u), f, limit).await?);
            return Ok(newest_first(rows, limit));
        }
        self.audit_by_month(f, limit).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: &str, at: i64, actor: Option<Id>, target: Option<Id>) -> AuditEntry {
        AuditEntry {
            id: id.into(),
            at,
            action: "sign_in".into(),
            actor_id: actor,
            target_id: target,
            subject: None,
            ip: None,
            user_agent: None,
            request_id: None,
            detail: "{}".into(),
        }
    }

    #[test]
    fn months_are_utc_calendar_months_in_order() {
        // 2026-11-24T10:00:00Z, the last ms of 2026-11 and the first of 2026-12.
        assert_eq!(month_of(1_795_514_400_000).1, "2026-11");
        let (nov, dec) = (month_of(1_796_083_199_999), month_of(1_796_083_200_000));
        assert_eq!((nov.1.as_str(), dec.1.as_str()), ("2026-11", "2026-12"));
        assert_eq!(dec.0, nov.0 + 1);
    }

    #[test]
    fn audit_rows_without_an_actor_or_target_leave_those_index_keys_absent() {
        let item = item_of(&row("a1", 0, None, Some(2))).unwrap_or_default();
        assert!(!item.contains_key("actor_id") && !item.contains_key("subject"));
        assert_eq!(get_n(&item, "target_id"), Some(2));
    }

    #[test]
    fn audit_filters_and_merge() {
        let f = AuditFilter { involving: Some(1), before: Some("a3".into()), since: Some(10), ..Default::default() };
        assert!(audit_keeps(&f, &row("a2", 10, None, Some(1))));
        assert!(!audit_keeps(&f, &row("a3", 10, Some(1), None)), "not below the cursor");
        assert!(!audit_keeps(&f, &row("a1", 9, Some(1), None)), "before since");
        assert!(!audit_keeps(&f, &row("a2", 10, Some(2), Some(3))), "not involved");
        let merged =
            newest_first(vec![row("a1", 0, None, None), row("a3", 0, None, None), row("a1", 0, None, None)], 5);
        assert_eq!(merged.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(), ["a3", "a1"]);
    }

    #[test]
    fn ttls_are_unix_seconds_after_expiry() {
        assert_eq!(ttl(10_999, 5), n(15));
    }
}
