//! [`Store`] over SQLite.

use oblivious_core::model::{
    Channel, ChannelSpec, ChannelStatus, Group, Id, Price, Source, Token, TokenStatus, UsageRecord, User,
};
use oblivious_ports::{
    ConfigSnapshot, NewToken, NewUser, Page, Paged, Settled, Store, StoreError, StoreResult, TokenFilter, TokenPatch,
    UsageFilter, UserPatch,
};
use rusqlite::types::Value;
use rusqlite::{params, params_from_iter, Connection, OptionalExtension};

use crate::db::{Cached, Db, DbResult};
use crate::rows::{self, CHANNEL_COLS, PRICE_COLS, TOKEN_COLS, USAGE_COLS, USER_COLS};
use oblivious_ports::Sealer;

#[derive(Clone)]
pub struct SqliteStore {
    db: Db,
}

impl SqliteStore {
    pub fn new(db: Db) -> Self {
        SqliteStore { db }
    }

    pub fn db(&self) -> &Db {
        &self.db
    }

    /// A value from the `meta` table (e.g. whether the admin was bootstrapped).
    pub async fn meta(&self, key: &str) -> StoreResult<Option<String>> {
        let key = key.to_string();
        self.db.read(move |c| Ok(c.row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0)).optional()?)).await
    }

    /// How the database's schema differs from this build's migrations: the
    /// versions not applied, and the versions applied that this build does
    /// not know (a newer binary migrated it). Both empty when they match.
    pub async fn schema_drift(&self) -> StoreResult<(Vec<i64>, Vec<i64>)> {
        let applied: Vec<i64> = self
            .db
            .read(|c| {
                let mut stmt = c.prepare("SELECT version FROM schema_migrations ORDER BY version")?;
                let rows = stmt.query_map([], |r| r.get(0))?;
                Ok(rows.collect::<Result<Vec<i64>, _>>()?)
            })
            .await?;
        let known: Vec<i64> = crate::db::MIGRATIONS.iter().map(|(v, _)| *v).collect();
        let pending = known.iter().copied().filter(|v| !applied.contains(v)).collect();
        let unknown = applied.iter().copied().filter(|v| !known.contains(v)).collect();
        Ok((pending, unknown))
    }

    /// Sets `key` only if it is unset; true when this call set it.
    pub async fn set_meta_once(&self, key: &str, value: &str) -> StoreResult<bool> {
        let (key, value) = (key.to_string(), value.to_string());
        self.db
            .write(move |c| Ok(c.exec("INSERT OR IGNORE INTO meta (key, value) VALUES (?1, ?2)", [key, value])? == 1))
            .await
    }
}

fn user_by_id(c: &Connection, id: Id) -> DbResult<Option<User>> {
    Ok(c.row(&format!("SELECT {USER_COLS} FROM users WHERE id = ?1"), [id], rows::user).optional()?)
}

fn token_by_id(c: &Connection, id: Id) -> DbResult<Option<Token>> {
    Ok(c.row(&format!("SELECT {TOKEN_COLS} FROM tokens WHERE id = ?1"), [id], rows::token).optional()?)
}

fn channel_by_id(c: &Connection, id: Id, sealer: &Sealer) -> DbResult<Option<Channel>> {
    Ok(c.row(&format!("SELECT {CHANNEL_COLS} FROM channels WHERE id = ?1"), [id], |r| rows::channel(r, sealer))
        .optional()?)
}

pub(crate) fn found<T>(v: Option<T>, what: impl FnOnce() -> String) -> DbResult<T> {
    v.ok_or_else(|| StoreError::NotFound(what()).into())
}

/// Inserts a user; the `users_ins` trigger bumps the revision, so caches see them.
pub(crate) fn insert_user(c: &Connection, u: &NewUser, now_ms: i64) -> DbResult<User> {
    c.exec(
        "INSERT INTO users (name, role, grp, quota, unlimited, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![u.name, rows::role_str(u.role), u.group, u.quota, u.unlimited, now_ms],
    )?;
    found(user_by_id(c, c.last_insert_rowid())?, || "user".into())
}

pub(crate) fn limit_offset(page: Page) -> (i64, i64) {
    (page.limit.min(i64::MAX as u64) as i64, page.offset.min(i64::MAX as u64) as i64)
}

fn put_channel_config(tx: &Connection, spec: &ChannelSpec, now_ms: i64, sealer: &Sealer) -> DbResult<()> {
    let json = sealer.seal_spec(spec)?;
    let existing: Option<(Id, String, String)> = tx
        .row("SELECT id, spec, source FROM channels WHERE name = ?1", [&spec.name], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .optional()?;
    match existing {
        None => {
            tx.exec(
                "INSERT INTO channels (name, spec, status, source, updated_at) VALUES (?1, ?2, 'enabled', 'config', ?3)",
                params![spec.name, json, now_ms],
            )?;
        }
        // Same spec: leave the row (and its runtime status) alone.
        Some((_, old, source)) if source == "config" && sealer.open_spec(&old).is_ok_and(|o| &o == spec) => {}
        Some((id, _, _)) => {
            tx.exec(
                "UPDATE channels SET spec = ?1, source = 'config', updated_at = ?2 WHERE id = ?3",
                params![json, now_ms, id],
            )?;
        }
    }
    Ok(())
}

impl Store for SqliteStore {
    async fn revision(&self) -> StoreResult<i64> {
        let rev = self.db.read(|c| Ok(c.row("SELECT value FROM revision WHERE id = 1", [], |r| r.get(0))?)).await?;
        self.db.saw_revision(rev);
        Ok(rev)
    }

    fn sealer(&self) -> Sealer {
        self.db.sealer()
    }

    async fn user(&self, id: Id) -> StoreResult<Option<User>> {
        self.db.read(move |c| user_by_id(c, id)).await
    }

    async fn user_by_name(&self, name: &str) -> StoreResult<Option<User>> {
        let name = name.to_string();
        self.db
            .read(move |c| {
                Ok(c.row(&format!("SELECT {USER_COLS} FROM users WHERE name = ?1"), [name], rows::user).optional()?)
            })
            .await
    }

    async fn users(&self, page: Page) -> StoreResult<Paged<User>> {
        self.db
            .read(move |c| {
                let (limit, offset) = limit_offset(page);
                let mut st =
                    c.prepare_cached(&format!("SELECT {USER_COLS} FROM users ORDER BY id LIMIT ?1 OFFSET ?2"))?;
                let items = st.query_map([limit, offset], rows::user)?.collect::<Result<Vec<_>, _>>()?;
                let total: i64 = c.row("SELECT COUNT(*) FROM users", [], |r| r.get(0))?;
                Ok(Paged { items, total: total as u64 })
            })
            .await
    }

    async fn create_user(&self, u: NewUser, now_ms: i64) -> StoreResult<User> {
        self.db.write(move |c| insert_user(c, &u, now_ms)).await
    }

    async fn update_user(&self, id: Id, p: UserPatch) -> StoreResult<User> {
        self.db
            .write(move |tx| {
                found(user_by_id(tx, id)?, || format!("user {id}"))?;
                if let Some(role) = p.role {
                    tx.exec("UPDATE users SET role = ?1 WHERE id = ?2", params![rows::role_str(role), id])?;
                }
                if let Some(group) = p.group {
                    tx.exec("UPDATE users SET grp = ?1 WHERE id = ?2", params![group, id])?;
                }
                if let Some(status) = p.status {
                    tx.exec("UPDATE users SET status = ?1 WHERE id = ?2", params![rows::user_status_str(status), id])?;
                }
                if let Some(quota) = p.quota {
                    tx.exec("UPDATE users SET quota = ?1 WHERE id = ?2", params![quota, id])?;
                }
                if let Some(unlimited) = p.unlimited {
                    tx.exec("UPDATE users SET unlimited = ?1 WHERE id = ?2", params![unlimited, id])?;
                }
                let user = found(user_by_id(tx, id)?, || format!("user {id}"))?;
                Ok(user)
            })
            .await
    }

    async fn delete_user(&self, id: Id) -> StoreResult<()> {
        self.db
            .write(move |tx| {
                // Keep token rows (usage history points at them) but make them unusable.
                tx.exec("UPDATE tokens SET status = 'deleted' WHERE user_id = ?1", [id])?;
                tx.exec("UPDATE users SET status = 'disabled', name = name || '#deleted-' || id WHERE id = ?1", [id])?;
                if tx.changes() == 0 {
                    return Err(StoreError::NotFound(format!("user {id}")).into());
                }
                Ok(())
            })
            .await
    }

    async fn token(&self, id: Id) -> StoreResult<Option<Token>> {
        self.db.read(move |c| token_by_id(c, id)).await
    }

    async fn token_by_hash(&self, key_hash: &str) -> StoreResult<Option<Token>> {
        let key_hash = key_hash.to_string();
        self.db
            .read(move |c| {
                Ok(c.row(&format!("SELECT {TOKEN_COLS} FROM tokens WHERE key_hash = ?1"), [key_hash], rows::token)
                    .optional()?)
            })
            .await
    }

    async fn tokens(&self, filter: TokenFilter, page: Page) -> StoreResult<Paged<Token>> {
        self.db
            .read(move |c| {
                let (limit, offset) = limit_offset(page);
                let filter_sql = "(?1 IS NULL OR user_id = ?1) AND (?2 OR status != 'deleted')";
                let mut st = c.prepare_cached(&format!(
                    "SELECT {TOKEN_COLS} FROM tokens WHERE {filter_sql} ORDER BY id LIMIT ?3 OFFSET ?4"
                ))?;
                let items = st
                    .query_map(params![filter.user_id, filter.include_deleted, limit, offset], rows::token)?
                    .collect::<Result<Vec<_>, _>>()?;
                let total: i64 = c.row(
                    &format!("SELECT COUNT(*) FROM tokens WHERE {filter_sql}"),
                    params![filter.user_id, filter.include_deleted],
                    |r| r.get(0),
                )?;
                Ok(Paged { items, total: total as u64 })
            })
            .await
    }

    async fn create_token(&self, t: NewToken, now_ms: i64) -> StoreResult<Token> {
        self.db
            .write(move |c| {
                found(user_by_id(c, t.user_id)?, || format!("user {}", t.user_id))?;
                c.exec(
                    "INSERT INTO tokens (user_id, name, key_hash, key_hint, status, unlimited, remaining_quota, models, ips,
                        expires_at, created_at, daily_limit, monthly_limit)
                     VALUES (?1, ?2, ?3, ?4, 'normal', ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
                    params![
                        t.user_id,
                        t.name,
                        t.key_hash,
                        t.key_hint,
                        t.unlimited,
                        t.remaining_quota,
                        serde_json::to_string(&t.models)?,
                        serde_json::to_string(&t.ips)?,
                        t.expires_at,
                        now_ms,
                        t.daily_limit,
                        t.monthly_limit
                    ],
                )?;
                found(token_by_id(c, c.last_insert_rowid())?, || "token".into())
            })
            .await
    }

    async fn update_token(&self, id: Id, p: TokenPatch) -> StoreResult<Token> {
        self.db
            .write(move |tx| {
                found(token_by_id(tx, id)?, || format!("token {id}"))?;
                if let Some(name) = p.name {
                    tx.exec("UPDATE tokens SET name = ?1 WHERE id = ?2", params![name, id])?;
                }
                if let Some(status) = p.status {
                    let stored = match status {
                        TokenStatus::Normal | TokenStatus::Disabled | TokenStatus::Deleted => status.as_str(),
                        TokenStatus::Expired | TokenStatus::Exhausted => {
                            return Err(StoreError::Conflict(format!(
                                "`{}` is derived and cannot be set",
                                status.as_str()
                            ))
                            .into())
                        }
                    };
                    tx.exec("UPDATE tokens SET status = ?1 WHERE id = ?2", params![stored, id])?;
                }
                if let Some(unlimited) = p.unlimited {
                    tx.exec("UPDATE tokens SET unlimited = ?1 WHERE id = ?2", params![unlimited, id])?;
                }
                if let Some(q) = p.remaining_quota {
                    tx.exec("UPDATE tokens SET remaining_quota = ?1 WHERE id = ?2", params![q, id])?;
                }
                if let Some(models) = p.models {
                    tx.exec(
                        "UPDATE tokens SET models = ?1 WHERE id = ?2",
                        params![serde_json::to_string(&models)?, id],
                    )?;
                }
                if let Some(ips) = p.ips {
                    tx.exec("UPDATE tokens SET ips = ?1 WHERE id = ?2", params![serde_json::to_string(&ips)?, id])?;
                }
                if let Some(expires_at) = p.expires_at {
                    tx.exec("UPDATE tokens SET expires_at = ?1 WHERE id = ?2", params![expires_at, id])?;
                }
                if let Some(limit) = p.daily_limit {
                    tx.exec("UPDATE tokens SET daily_limit = ?1 WHERE id = ?2", params![limit, id])?;
                }
                if let Some(limit) = p.monthly_limit {
                    tx.exec("UPDATE tokens SET monthly_limit = ?1 WHERE id = ?2", params![limit, id])?;
                }
                let token = found(token_by_id(tx, id)?, || format!("token {id}"))?;
                Ok(token)
            })
            .await
    }

    async fn channels(&self) -> StoreResult<Vec<Channel>> {
        let sealer = self.db.sealer();
        self.db
            .read(move |c| {
                let mut st = c.prepare_cached(&format!("SELECT {CHANNEL_COLS} FROM channels ORDER BY id"))?;
                let v = st.query_map([], |r| rows::channel(r, &sealer))?.collect::<Result<Vec<_>, _>>()?;
                Ok(v)
            })
            .await
    }

    async fn channel(&self, id: Id) -> StoreResult<Option<Channel>> {
        let sealer = self.db.sealer();
        self.db.read(move |c| channel_by_id(c, id, &sealer)).await
    }

    async fn create_channel(&self, spec: ChannelSpec, now_ms: i64) -> StoreResult<Channel> {
        let sealer = self.db.sealer_for_sealing();
        self.db
            .write(move |c| {
                c.exec(
                    "INSERT INTO channels (name, spec, status, source, updated_at) VALUES (?1, ?2, 'enabled', 'api', ?3)",
                    params![spec.name, sealer.seal_spec(&spec)?, now_ms],
                )?;
                found(channel_by_id(c, c.last_insert_rowid(), &sealer)?, || "channel".into())
            })
            .await
    }

    async fn update_channel(&self, id: Id, spec: ChannelSpec, now_ms: i64) -> StoreResult<Channel> {
        let sealer = self.db.sealer_for_sealing();
        self.db
            .write(move |tx| {
                let ch = found(channel_by_id(tx, id, &sealer)?, || format!("channel {id}"))?;
                if ch.source == Source::Config {
                    return Err(StoreError::Conflict(format!(
                        "channel `{}` is declared in the config file; edit the file instead",
                        ch.spec.name
                    ))
                    .into());
                }
                tx.exec(
                    "UPDATE channels SET name = ?1, spec = ?2, updated_at = ?3 WHERE id = ?4",
                    params![spec.name, sealer.seal_spec(&spec)?, now_ms, id],
                )?;
                let ch = found(channel_by_id(tx, id, &sealer)?, || format!("channel {id}"))?;
                Ok(ch)
            })
            .await
    }

    async fn delete_channel(&self, id: Id) -> StoreResult<()> {
        self.db
            .write(move |c| {
                let source: Option<String> =
                    c.row("SELECT source FROM channels WHERE id = ?1", [id], |r| r.get(0)).optional()?;
                match source.as_deref() {
                    None => Err(StoreError::NotFound(format!("channel {id}")).into()),
                    Some("config") => {
                        Err(StoreError::Conflict("this channel is declared in the config file; remove it there".into())
                            .into())
                    }
                    Some(_) => {
                        c.exec("DELETE FROM channels WHERE id = ?1", [id])?;
                        Ok(())
                    }
                }
            })
            .await
    }

    async fn set_channel_status(
        &self,
        id: Id,
        status: ChannelStatus,
        reason: Option<String>,
        now_ms: i64,
    ) -> StoreResult<()> {
        self.db
            .write(move |c| {
                let n = c.exec(
                    "UPDATE channels SET status = ?1, status_reason = ?2, updated_at = ?3 WHERE id = ?4",
                    params![status.as_str(), reason, now_ms, id],
                )?;
                if n == 0 {
                    return Err(StoreError::NotFound(format!("channel {id}")).into());
                }
                Ok(())
            })
            .await
    }

    async fn groups(&self) -> StoreResult<Vec<Group>> {
        self.db
            .read(|c| {
                let mut st = c.prepare_cached("SELECT name, ratio_bp, description FROM user_groups ORDER BY name")?;
                let v = st
                    .query_map([], |r| Ok(Group { name: r.get(0)?, ratio_bp: r.get(1)?, description: r.get(2)? }))?
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(v)
            })
            .await
    }

    async fn put_group(&self, g: Group) -> StoreResult<()> {
        self.db
            .write(move |c| {
                c.exec(
                    "INSERT INTO user_groups (name, ratio_bp, description, source) VALUES (?1, ?2, ?3, 'api')
                     ON CONFLICT (name) DO UPDATE SET ratio_bp = excluded.ratio_bp, description = excluded.description",
                    params![g.name, g.ratio_bp, g.description],
                )?;
                Ok(())
            })
            .await
    }

    async fn delete_group(&self, name: &str) -> StoreResult<()> {
        let name = name.to_string();
        self.db
            .write(move |c| {
                if c.exec("DELETE FROM user_groups WHERE name = ?1", [&name])? == 0 {
                    return Err(StoreError::NotFound(format!("group {name}")).into());
                }
                Ok(())
            })
            .await
    }

    async fn prices(&self) -> StoreResult<Vec<Price>> {
        self.db
            .read(|c| {
                let mut st =
                    c.prepare_cached(&format!("SELECT {PRICE_COLS} FROM price_versions ORDER BY effective_at, id"))?;
                let v = st.query_map([], rows::price)?.collect::<Result<Vec<_>, _>>()?;
                Ok(v)
            })
            .await
    }

    async fn put_price(&self, p: Price) -> StoreResult<Price> {
        self.db.write(move |c| insert_price(c, &p, "api")).await
    }

    async fn sync_config(&self, cfg: ConfigSnapshot, now_ms: i64) -> StoreResult<()> {
        let sealer = self.db.sealer_for_sealing();
        self.db
            .write(move |tx| {
                for g in &cfg.groups {
                    tx.exec(
                        "INSERT INTO user_groups (name, ratio_bp, description, source) VALUES (?1, ?2, ?3, 'config')
                         ON CONFLICT (name) DO UPDATE SET ratio_bp = excluded.ratio_bp, description = excluded.description,
                            source = 'config'
                         WHERE ratio_bp != excluded.ratio_bp OR description != excluded.description OR source != 'config'",
                        params![g.name, g.ratio_bp, g.description],
                    )?;
                }
                let names: Vec<Value> = cfg.groups.iter().map(|g| Value::Text(g.name.clone())).collect();
                delete_missing(tx, "user_groups", "name", &names)?;
                sync_config_prices(tx, &cfg.prices, now_ms)?;
                for spec in &cfg.channels {
                    put_channel_config(tx, spec, now_ms, &sealer)?;
                }
                let names: Vec<Value> = cfg.channels.iter().map(|c| Value::Text(c.name.clone())).collect();
                delete_missing(tx, "channels", "name", &names)?;
                Ok(())
            })
            .await
    }

    async fn record_usages(&self, records: Vec<UsageRecord>) -> StoreResult<Vec<Option<Settled>>> {
        self.db
            .write(move |tx| {
                let mut out = Vec::with_capacity(records.len());
                {
                    let mut insert = tx.prepare_cached(&format!(
                        // Only a repeated request id is skipped; any other violation is an error, never a silent loss.
                        "INSERT INTO usage_log ({USAGE_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10,
                         ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21, ?22, ?23)
                         ON CONFLICT (request_id) DO NOTHING"
                    ))?;
                    for u in &records {
                        let inserted = insert.execute(params![
                            u.request_id,
                            u.created_at,
                            u.endpoint,
                            u.user_id,
                            u.token_id,
                            u.channel_id,
                            u.key_index,
                            u.requested_model,
                            u.upstream_model,
                            u.prompt_tokens,
                            u.completion_tokens,
                            u.total_tokens,
                            u.usage_estimated,
                            oblivious_core::money::clamp_charge(u.cost),
                            u.latency_ms,
                            u.ttfb_ms,
                            u.status,
                            u.stream,
                            u.retries,
                            u.error,
                            u.cached_tokens,
                            u.reserved,
                            u.price_version
                        ])? == 1;
                        if !inserted {
                            out.push(None);
                            continue;
                        }
                        let (token, user) = crate::ledger::settle(tx, u)?;
                        out.push(Some(Settled { token, user }));
                    }
                }
                Ok(out)
            })
            .await
    }

    async fn usage(&self, f: UsageFilter, page: Page) -> StoreResult<Paged<UsageRecord>> {
        self.db
            .read(move |c| {
                let (limit, offset) = limit_offset(page);
                let where_sql = "(?1 IS NULL OR user_id = ?1) AND (?2 IS NULL OR token_id = ?2) AND (?3 IS NULL OR channel_id = ?3)
                    AND (?4 IS NULL OR requested_model = ?4) AND (?5 IS NULL OR status = ?5)
                    AND (?6 IS NULL OR created_at >= ?6) AND (?7 IS NULL OR created_at < ?7)";
                let args = params![f.user_id, f.token_id, f.channel_id, f.model, f.status, f.since, f.until];
                let total: i64 = c.row(&format!("SELECT COUNT(*) FROM usage_log WHERE {where_sql}"), args, |r| r.get(0))?;
                let mut st = c.prepare_cached(&format!(
                    "SELECT {USAGE_COLS} FROM usage_log WHERE {where_sql} ORDER BY created_at DESC, request_id LIMIT ?8 OFFSET ?9"
                ))?;
                let items = st
                    .query_map(
                        params![f.user_id, f.token_id, f.channel_id, f.model, f.status, f.since, f.until, limit, offset],
                        rows::usage,
                    )?
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(Paged { items, total: total as u64 })
            })
            .await
    }
}

fn insert_price(c: &Connection, p: &Price, source: &str) -> DbResult<Price> {
    c.exec(
        "INSERT INTO price_versions (model, effective_at, input_per_m, output_per_m, cached_input_per_m, per_request,
            per_image, per_audio_second, free, retired, source, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?2)",
        params![
            p.model,
            p.effective_at,
            p.input_per_m,
            p.output_per_m,
            p.cached_input_per_m,
            p.per_request,
            p.per_image,
            p.per_audio_second,
            p.free,
            p.retired,
            source
        ],
    )?;
    Ok(Price { version: c.last_insert_rowid(), ..p.clone() })
}

/// Adds a version, effective now, for each config price whose rates differ
/// from the one in force; retires config prices the file no longer declares.
fn sync_config_prices(tx: &Connection, prices: &[Price], now_ms: i64) -> DbResult<()> {
    let mut current: Vec<(Price, String)> = Vec::new();
    {
        let mut st = tx.prepare_cached(&format!(
            "SELECT {PRICE_COLS}, source FROM price_versions v WHERE effective_at <= ?1 AND id = (
                SELECT id FROM price_versions w WHERE w.model = v.model AND w.effective_at <= ?1
                ORDER BY effective_at DESC, id DESC LIMIT 1)"
        ))?;
        let rows = st.query_map([now_ms], |r| Ok((rows::price(r)?, r.get::<_, String>(11)?)))?;
        for row in rows {
            current.push(row?);
        }
    }
    for p in prices {
        let in_force = current.iter().find(|(c, _)| c.model == p.model);
        let unchanged = in_force.is_some_and(|(c, source)| c.same_rates(p) && source == "config");
        if !unchanged {
            insert_price(tx, &Price { effective_at: now_ms, ..p.clone() }, "config")?;
        }
    }
    for (c, source) in &current {
        if source == "config" && !c.retired && !prices.iter().any(|p| p.model == c.model) {
            let retired = Price { model: c.model.clone(), effective_at: now_ms, retired: true, ..Price::default() };
            insert_price(tx, &retired, "config")?;
        }
    }
    Ok(())
}

/// Deletes config-owned rows of `table` whose `key` is not in `keep`.
fn delete_missing(tx: &Connection, table: &str, key: &str, keep: &[Value]) -> DbResult<()> {
    let placeholders = vec!["?"; keep.len()].join(",");
    let sql = if keep.is_empty() {
        format!("DELETE FROM {table} WHERE source = 'config'")
    } else {
        format!("DELETE FROM {table} WHERE source = 'config' AND {key} NOT IN ({placeholders})")
    };
    tx.exec(&sql, params_from_iter(keep.iter()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use oblivious_ports::conformance::spec;

    #[tokio::test(flavor = "multi_thread")]
    async fn channel_keys_are_encrypted_at_rest() {
        let dir = std::env::temp_dir().join(format!("obl-sqlite-seal-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let s = SqliteStore::new(Db::open(&dir.join("t.db")).unwrap());
        let mut secret = spec("secret");
        secret.keys = vec!["sk-upstream-very-secret".into()];
        let ch = s.create_channel(secret, 1).await.unwrap();
        assert_eq!(s.channel(ch.id).await.unwrap().unwrap().spec.keys, ["sk-upstream-very-secret"]);
        let raw: String = rusqlite::Connection::open(dir.join("t.db"))
            .unwrap()
            .row("SELECT spec FROM channels WHERE id = ?1", [ch.id], |r| r.get(0))
            .unwrap();
        assert!(!raw.contains("very-secret") && raw.contains("enc:v1:"), "{raw}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
