//! [`Store`] over DynamoDB: users, keys, channels, groups, prices, config sync.

use oblivious_core::model::{
    Channel, ChannelSpec, ChannelStatus, Group, Id, Price, Source, Token, TokenStatus, UsageRecord, User, UserStatus,
};
use oblivious_ports::{
    Clock, ConfigSnapshot, NewToken, NewUser, Page, Paged, Sealer, Settled, Store, StoreError, StoreResult,
    TokenFilter, TokenPatch, Upstream, UsageFilter, UserPatch,
};
use serde_dynamo::AttributeValue;

use super::{
    backend, from_item, get_n, get_s, key_id, key_meta, n, opt_n, page_of, s, to_item, DynamoStore, Item, Tx, TxEnd,
};

pub(super) const NEW: &str = "attribute_not_exists(#pk)";
pub(super) const NEW_ID: &str = "attribute_not_exists(#id)";
const EXISTS: &str = "attribute_exists(#id)";

pub(super) fn guard(kind: &str, value: &str) -> Item {
    key_meta("unique", &format!("{kind}#{value}"))
}

pub(super) fn guard_item(kind: &str, value: &str, id: Id) -> Item {
    let mut item = guard(kind, value);
    item.insert("ref".into(), n(id));
    item
}

fn attr<T: serde::Serialize>(v: &T) -> StoreResult<AttributeValue> {
    serde_dynamo::to_attribute_value(v).map_err(backend)
}

/// `SET #a = :a, #b = :b` from the fields a patch sets.
#[derive(Default)]
struct Set {
    parts: Vec<String>,
    vals: Vec<(String, AttributeValue)>,
}

impl Set {
    fn field(&mut self, name: &str, v: AttributeValue) {
        self.parts.push(format!("#{name} = :{name}"));
        self.vals.push((format!(":{name}"), v));
    }

    fn expr(&self) -> Option<String> {
        (!self.parts.is_empty()).then(|| format!("SET {}", self.parts.join(", ")))
    }

    fn values(&self) -> Vec<(&str, AttributeValue)> {
        self.vals.iter().map(|(k, v)| (k.as_str(), v.clone())).collect()
    }
}

fn not_found(what: String) -> StoreError {
    StoreError::NotFound(what)
}

impl<U: Upstream, C: Clock> DynamoStore<U, C> {
    pub(crate) async fn user_item(&self, id: Id) -> StoreResult<Option<Item>> {
        self.get("users", key_id(id)).await
    }

    /// A new user's row, its id taken from the `users` sequence.
    pub(super) async fn new_user(&self, u: NewUser, now_ms: i64) -> StoreResult<User> {
        Ok(User {
            id: self.next_id("users").await?,
            name: u.name,
            role: u.role,
            group: u.group,
            status: UserStatus::Enabled,
            quota: u.quota,
            used_quota: 0,
            unlimited: u.unlimited,
            created_at: now_ms,
        })
    }

    /// Adds a new user's row and its name guard to `tx` (the caller bumps the
    /// revision); the guard's item index, whose refusal means the name is taken.
    pub(super) fn put_new_user(&self, tx: &mut Tx, user: &User) -> StoreResult<usize> {
        tx.put(self.table("users"), to_item(user)?, Some(NEW_ID), vec![]);
        Ok(tx.put(self.table("meta"), guard_item("user-name", &user.name, user.id), Some(NEW), vec![]))
    }

    pub(crate) async fn token_item(&self, id: Id) -> StoreResult<Option<Item>> {
        self.get("tokens", key_id(id)).await
    }

    fn channel_from(&self, item: &Item) -> StoreResult<Channel> {
        let spec = self.sealer.open_spec(get_s(item, "spec").unwrap_or_default())?;
        Ok(Channel {
            id: get_n(item, "id").unwrap_or_default(),
            spec,
            status: get_s(item, "status").and_then(ChannelStatus::parse).ok_or_else(|| backend("channel status"))?,
            status_reason: get_s(item, "status_reason").map(str::to_string),
            source: if get_s(item, "source") == Some("config") { Source::Config } else { Source::Api },
            updated_at: get_n(item, "updated_at").unwrap_or_default(),
        })
    }

    /// A guarded lookup: the row a unique value points at.
    async fn by_guard(&self, kind: &str, value: &str, table: &str) -> StoreResult<Option<Item>> {
        let Some(g) = self.get("meta", guard(kind, value)).await? else { return Ok(None) };
        let Some(id) = get_n(&g, "ref") else { return Ok(None) };
        self.get(table, key_id(id)).await
    }

    fn put_channel(&self, tx: &mut Tx, ch: &Channel, cond: Option<&str>) -> StoreResult<usize> {
        let mut item = key_id(ch.id);
        item.insert("name".into(), s(&ch.spec.name));
        item.insert("spec".into(), s(self.sealer.seal_spec(&ch.spec)?));
        item.insert("status".into(), s(ch.status.as_str()));
        if let Some(reason) = &ch.status_reason {
            item.insert("status_reason".into(), s(reason));
        }
        item.insert("source".into(), s(if ch.source == Source::Config { "config" } else { "api" }));
        item.insert("updated_at".into(), n(ch.updated_at));
        Ok(tx.put(self.table("channels"), item, cond, vec![]))
    }

    /// Writes a channel (new, or replacing one with the same id), moving its name guard when renamed.
    async fn save_channel(&self, ch: Channel, old_name: Option<&str>) -> StoreResult<Channel> {
        let mut tx = Tx::default();
        let renamed = old_name != Some(ch.spec.name.as_str());
        let name_free = renamed
            .then(|| tx.put(self.table("meta"), guard_item("channel-name", &ch.spec.name, ch.id), Some(NEW), vec![]));
        if let (true, Some(old)) = (renamed, old_name) {
            tx.delete(self.table("meta"), guard("channel-name", old), None);
        }
        self.put_channel(&mut tx, &ch, if old_name.is_some() { Some(EXISTS) } else { Some(NEW_ID) })?;
        self.bump(&mut tx);
        match self.transact(tx).await? {
            TxEnd::Done => Ok(ch),
            TxEnd::Refused(failed) if name_free.is_some_and(|i| failed.contains(&i)) => {
                Err(StoreError::Conflict(format!("a channel named `{}` exists", ch.spec.name)))
            }
            TxEnd::Refused(_) => Err(not_found(format!("channel {}", ch.id))),
        }
    }

    async fn channel_items(&self) -> StoreResult<Vec<Channel>> {
        let mut all =
            self.scan("channels").await?.iter().map(|i| self.channel_from(i)).collect::<StoreResult<Vec<_>>>()?;
        all.sort_by_key(|c| c.id);
        Ok(all)
    }

    async fn delete_channel_row(&self, ch: &Channel) -> StoreResult<()> {
        let mut tx = Tx::default();
        tx.delete(self.table("channels"), key_id(ch.id), Some(EXISTS));
        tx.delete(self.table("meta"), guard("channel-name", &ch.spec.name), None);
        self.bump(&mut tx);
        match self.transact(tx).await? {
            TxEnd::Done => Ok(()),
            TxEnd::Refused(_) => Err(not_found(format!("channel {}", ch.id))),
        }
    }

    /// Price versions with the source that wrote them.
    async fn price_rows(&self) -> StoreResult<Vec<(Price, String)>> {
        let items = self.query("meta", None, "#pk = :pk", vec![(":pk", s("price"))]).await?;
        let mut rows = items
            .into_iter()
            .map(|i| {
                let source = get_s(&i, "source").unwrap_or("api").to_string();
                Ok((from_item::<Price>(i)?, source))
            })
            .collect::<StoreResult<Vec<_>>>()?;
        rows.sort_by_key(|(p, _)| (p.effective_at, p.version));
        Ok(rows)
    }

    async fn insert_price(&self, p: &Price, source: &str) -> StoreResult<Price> {
        let version = self.next_id("prices").await?;
        let price = Price { version, ..p.clone() };
        let mut item = to_item(&price)?;
        item.extend(key_meta("price", &format!("{version:020}")));
        item.insert("source".into(), s(source));
        let mut tx = Tx::default();
        tx.put(self.table("meta"), item, Some(NEW), vec![]);
        self.bump(&mut tx);
        self.transact(tx).await?;
        Ok(price)
    }

    async fn group_rows(&self) -> StoreResult<Vec<(Group, String)>> {
        let items = self.query("meta", None, "#pk = :pk", vec![(":pk", s("group"))]).await?;
        items
            .into_iter()
            .map(|i| {
                let source = get_s(&i, "source").unwrap_or("api").to_string();
                Ok((from_item::<Group>(i)?, source))
            })
            .collect()
    }

    async fn write_group(&self, g: &Group, source: Option<&str>) -> StoreResult<()> {
        let mut tx = Tx::default();
        let source_expr =
            if source.is_some() { "#source = :source" } else { "#source = if_not_exists(#source, :source)" };
        tx.update(
            self.table("meta"),
            key_meta("group", &g.name),
            &format!("SET #name = :name, #ratio_bp = :ratio, #description = :description, {source_expr}"),
            None,
            vec![
                (":name", s(&g.name)),
                (":ratio", n(g.ratio_bp)),
                (":description", s(&g.description)),
                (":source", s(source.unwrap_or("api"))),
            ],
        );
        self.bump(&mut tx);
        self.transact(tx).await.map(|_| ())
    }
}

impl<U: Upstream, C: Clock> Store for DynamoStore<U, C> {
    async fn revision(&self) -> StoreResult<i64> {
        Ok(self.get("meta", key_meta("revision", "-")).await?.and_then(|i| get_n(&i, "value")).unwrap_or(0))
    }

    fn sealer(&self) -> Sealer {
        self.sealer.clone()
    }

    async fn user(&self, id: Id) -> StoreResult<Option<User>> {
        self.user_item(id).await?.map(from_item).transpose()
    }

    async fn user_by_name(&self, name: &str) -> StoreResult<Option<User>> {
        self.by_guard("user-name", name, "users").await?.map(from_item).transpose()
    }

    async fn users(&self, page: Page) -> StoreResult<Paged<User>> {
        let mut all = self.scan("users").await?.into_iter().map(from_item).collect::<StoreResult<Vec<User>>>()?;
        all.sort_by_key(|u| u.id);
        Ok(page_of(all, page))
    }

    async fn create_user(&self, u: NewUser, now_ms: i64) -> StoreResult<User> {
        let user = self.new_user(u, now_ms).await?;
        let mut tx = Tx::default();
        self.put_new_user(&mut tx, &user)?;
        self.bump(&mut tx);
        match self.transact(tx).await? {
            TxEnd::Done => Ok(user),
            TxEnd::Refused(_) => Err(StoreError::Conflict(format!("a user named `{}` exists", user.name))),
        }
    }

    async fn update_user(&self, id: Id, p: UserPatch) -> StoreResult<User> {
        self.user(id).await?.ok_or_else(|| not_found(format!("user {id}")))?;
        let mut set = Set::default();
        if let Some(role) = p.role {
            set.field("role", attr(&role)?);
        }
        if let Some(group) = p.group {
            set.field("group", s(group));
        }
        if let Some(status) = p.status {
            set.field("status", attr(&status)?);
        }
        if let Some(quota) = p.quota {
            set.field("quota", n(quota));
        }
        if let Some(unlimited) = p.unlimited {
            set.field("unlimited", AttributeValue::Bool(unlimited));
        }
        if let Some(expr) = set.expr() {
            let mut tx = Tx::default();
            tx.update(self.table("users"), key_id(id), &expr, Some(EXISTS), set.values());
            self.bump(&mut tx);
            if let TxEnd::Refused(_) = self.transact(tx).await? {
                return Err(not_found(format!("user {id}")));
            }
        }
        self.user(id).await?.ok_or_else(|| not_found(format!("user {id}")))
    }

    async fn delete_user(&self, id: Id) -> StoreResult<()> {
        let user = self.user(id).await?.ok_or_else(|| not_found(format!("user {id}")))?;
        // Keep token rows (usage history points at them) but make them unusable.
        for t in self.query("tokens", Some("by-user"), "#user_id = :u", vec![(":u", n(id))]).await? {
            let Some(tid) = get_n(&t, "id") else { continue };
            let mut tx = Tx::default();
            tx.update(
                self.table("tokens"),
                key_id(tid),
                "SET #status = :deleted",
                Some(EXISTS),
                vec![(":deleted", s("deleted"))],
            );
            self.transact(tx).await?;
        }
        if user.name.contains("#deleted-") {
            return Ok(());
        }
        let mut tx = Tx::default();
        tx.update(
            self.table("users"),
            key_id(id),
            "SET #status = :disabled, #name = :name",
            Some("#name = :old"),
            vec![
                (":disabled", s("disabled")),
                (":name", s(format!("{}#deleted-{id}", user.name))),
                (":old", s(&user.name)),
            ],
        );
        tx.delete(self.table("meta"), guard("user-name", &user.name), None);
        self.bump(&mut tx);
        match self.transact(tx).await? {
            TxEnd::Done => Ok(()),
            TxEnd::Refused(_) => Err(StoreError::Conflict(format!("user {id} changed meanwhile; retry"))),
        }
    }

    async fn token(&self, id: Id) -> StoreResult<Option<Token>> {
        self.token_item(id).await?.map(from_item).transpose()
    }

    async fn token_by_hash(&self, key_hash: &str) -> StoreResult<Option<Token>> {
        self.by_guard("token-hash", key_hash, "tokens").await?.map(from_item).transpose()
    }

    async fn tokens(&self, filter: TokenFilter, page: Page) -> StoreResult<Paged<Token>> {
        let items = match filter.user_id {
            Some(u) => self.query("tokens", Some("by-user"), "#user_id = :u", vec![(":u", n(u))]).await?,
            None => self.scan("tokens").await?,
        };
        let mut all = items
            .into_iter()
            .map(from_item::<Token>)
            .filter(|t| filter.include_deleted || t.as_ref().map_or(true, |t| t.status != TokenStatus::Deleted))
            .collect::<StoreResult<Vec<_>>>()?;
        all.sort_by_key(|t| t.id);
        Ok(page_of(all, page))
    }

    async fn create_token(&self, t: NewToken, now_ms: i64) -> StoreResult<Token> {
        self.user(t.user_id).await?.ok_or_else(|| not_found(format!("user {}", t.user_id)))?;
        let id = self.next_id("tokens").await?;
        let token = Token {
            id,
            user_id: t.user_id,
            name: t.name,
            key_hash: t.key_hash,
            key_hint: t.key_hint,
            status: TokenStatus::Normal,
            unlimited: t.unlimited,
            remaining_quota: t.remaining_quota,
            used_quota: 0,
            models: t.models,
            ips: t.ips,
            expires_at: t.expires_at,
            daily_limit: t.daily_limit,
            monthly_limit: t.monthly_limit,
            created_at: now_ms,
        };
        let mut item = to_item(&token)?;
        item.insert("key_hash".into(), s(&token.key_hash));
        let mut tx = Tx::default();
        tx.put(self.table("tokens"), item, Some(NEW_ID), vec![]);
        let hash = tx.put(self.table("meta"), guard_item("token-hash", &token.key_hash, id), Some(NEW), vec![]);
        tx.check(self.table("users"), key_id(token.user_id), EXISTS, vec![]);
        self.bump(&mut tx);
        match self.transact(tx).await? {
            TxEnd::Done => Ok(token),
            TxEnd::Refused(f) if f.contains(&hash) => Err(StoreError::Conflict("this key already exists".into())),
            TxEnd::Refused(_) => Err(not_found(format!("user {}", token.user_id))),
        }
    }

    async fn update_token(&self, id: Id, p: TokenPatch) -> StoreResult<Token> {
        self.token(id).await?.ok_or_else(|| not_found(format!("token {id}")))?;
        let mut set = Set::default();
        if let Some(name) = p.name {
            set.field("name", s(name));
        }
        if let Some(status) = p.status {
            if matches!(status, TokenStatus::Expired | TokenStatus::Exhausted) {
                return Err(StoreError::Conflict(format!("`{}` is derived and cannot be set", status.as_str())));
            }
            set.field("status", s(status.as_str()));
        }
        if let Some(unlimited) = p.unlimited {
            set.field("unlimited", AttributeValue::Bool(unlimited));
        }
        if let Some(q) = p.remaining_quota {
            set.field("remaining_quota", n(q));
        }
        if let Some(models) = p.models {
            set.field("models", attr(&models)?);
        }
        if let Some(ips) = p.ips {
            set.field("ips", attr(&ips)?);
        }
        if let Some(expires_at) = p.expires_at {
            set.field("expires_at", opt_n(expires_at));
        }
        if let Some(limit) = p.daily_limit {
            set.field("daily_limit", opt_n(limit));
        }
        if let Some(limit) = p.monthly_limit {
            set.field("monthly_limit", opt_n(limit));
        }
        if let Some(expr) = set.expr() {
            let mut tx = Tx::default();
            tx.update(self.table("tokens"), key_id(id), &expr, Some(EXISTS), set.values());
            self.bump(&mut tx);
            if let TxEnd::Refused(_) = self.transact(tx).await? {
                return Err(not_found(format!("token {id}")));
            }
        }
        self.token(id).await?.ok_or_else(|| not_found(format!("token {id}")))
    }

    async fn channels(&self) -> StoreResult<Vec<Channel>> {
        self.channel_items().await
    }

    async fn channel(&self, id: Id) -> StoreResult<Option<Channel>> {
        self.get("channels", key_id(id)).await?.map(|i| self.channel_from(&i)).transpose()
    }

    async fn create_channel(&self, spec: ChannelSpec, now_ms: i64) -> StoreResult<Channel> {
        let id = self.next_id("channels").await?;
        let ch = Channel {
            id,
            spec,
            status: ChannelStatus::Enabled,
            status_reason: None,
            source: Source::Api,
            updated_at: now_ms,
        };
        self.save_channel(ch, None).await
    }

    async fn update_channel(&self, id: Id, spec: ChannelSpec, now_ms: i64) -> StoreResult<Channel> {
        let ch = self.channel(id).await?.ok_or_else(|| not_found(format!("channel {id}")))?;
        if ch.source == Source::Config {
            return Err(StoreError::Conflict(format!(
                "channel `{}` is declared in the config file; edit the file instead",
                ch.spec.name
            )));
        }
        let old = ch.spec.name.clone();
        self.save_channel(Channel { spec, updated_at: now_ms, ..ch }, Some(&old)).await
    }

    async fn delete_channel(&self, id: Id) -> StoreResult<()> {
        let ch = self.channel(id).await?.ok_or_else(|| not_found(format!("channel {id}")))?;
        if ch.source == Source::Config {
            return Err(StoreError::Conflict("this channel is declared in the config file; remove it there".into()));
        }
        self.delete_channel_row(&ch).await
    }

    async fn set_channel_status(
        &self,
        id: Id,
        status: ChannelStatus,
        reason: Option<String>,
        now_ms: i64,
    ) -> StoreResult<()> {
        let mut tx = Tx::default();
        tx.update(
            self.table("channels"),
            key_id(id),
            "SET #status = :status, #status_reason = :reason, #updated_at = :now",
            Some(EXISTS),
            vec![
                (":status", s(status.as_str())),
                (":reason", reason.map_or(AttributeValue::Null(true), s)),
                (":now", n(now_ms)),
            ],
        );
        self.bump(&mut tx);
        match self.transact(tx).await? {
            TxEnd::Done => Ok(()),
            TxEnd::Refused(_) => Err(not_found(format!("channel {id}"))),
        }
    }

    async fn groups(&self) -> StoreResult<Vec<Group>> {
        Ok(self.group_rows().await?.into_iter().map(|(g, _)| g).collect())
    }

    async fn put_group(&self, g: Group) -> StoreResult<()> {
        self.write_group(&g, None).await
    }

    async fn delete_group(&self, name: &str) -> StoreResult<()> {
        let mut tx = Tx::default();
        tx.delete(self.table("meta"), key_meta("group", name), Some("attribute_exists(#pk)"));
        self.bump(&mut tx);
        match self.transact(tx).await? {
            TxEnd::Done => Ok(()),
            TxEnd::Refused(_) => Err(not_found(format!("group {name}"))),
        }
    }

    async fn prices(&self) -> StoreResult<Vec<Price>> {
        Ok(self.price_rows().await?.into_iter().map(|(p, _)| p).collect())
    }

    async fn put_price(&self, p: Price) -> StoreResult<Price> {
        self.insert_price(&p, "api").await
    }

    /// Step by step rather than in one transaction (DynamoDB caps one at 100
    /// items); every step is idempotent, so a sync cut short is finished by the next.
    async fn sync_config(&self, cfg: ConfigSnapshot, now_ms: i64) -> StoreResult<()> {
        let groups = self.group_rows().await?;
        for g in &cfg.groups {
            let same = groups.iter().any(|(have, source)| have == g && source == "config");
            if !same {
                self.write_group(g, Some("config")).await?;
            }
        }
        for (g, source) in &groups {
            if source == "config" && !cfg.groups.iter().any(|c| c.name == g.name) {
                self.delete_group(&g.name).await?;
            }
        }

        // The version in force per model now, and where it came from.
        let mut current: Vec<(Price, String)> = Vec::new();
        for (p, source) in self.price_rows().await? {
            if p.effective_at <= now_ms {
                current.retain(|(c, _)| c.model != p.model);
                current.push((p, source));
            }
        }
        for p in &cfg.prices {
            let in_force = current.iter().find(|(c, _)| c.model == p.model);
            if !in_force.is_some_and(|(c, source)| c.same_rates(p) && source == "config") {
                self.insert_price(&Price { effective_at: now_ms, ..p.clone() }, "config").await?;
            }
        }
        for (c, source) in &current {
            if source == "config" && !c.retired && !cfg.prices.iter().any(|p| p.model == c.model) {
                let retired = Price { model: c.model.clone(), effective_at: now_ms, retired: true, ..Price::default() };
                self.insert_price(&retired, "config").await?;
            }
        }

        let existing = self.channel_items().await?;
        for spec in &cfg.channels {
            match existing.iter().find(|c| c.spec.name == spec.name) {
                // Same spec: leave the row (and its runtime status) alone.
                Some(c) if c.source == Source::Config && &c.spec == spec => {}
                Some(c) => {
                    let ch = Channel { spec: spec.clone(), source: Source::Config, updated_at: now_ms, ..c.clone() };
                    self.save_channel(ch, Some(&c.spec.name)).await?;
                }
                None => {
                    let id = self.next_id("channels").await?;
                    let ch = Channel {
                        id,
                        spec: spec.clone(),
                        status: ChannelStatus::Enabled,
                        status_reason: None,
                        source: Source::Config,
                        updated_at: now_ms,
                    };
                    self.save_channel(ch, None).await?;
                }
            }
        }
        for c in &existing {
            if c.source == Source::Config && !cfg.channels.iter().any(|s| s.name == c.spec.name) {
                self.delete_channel_row(c).await?;
            }
        }
        Ok(())
    }

    async fn record_usages(&self, records: Vec<UsageRecord>) -> StoreResult<Vec<Option<Settled>>> {
        let mut out = Vec::with_capacity(records.len());
        for u in &records {
            out.push(self.record_one(u).await?);
        }
        Ok(out)
    }

    async fn usage(&self, f: UsageFilter, page: Page) -> StoreResult<Paged<UsageRecord>> {
        let mut rows = self.usage_rows(&f).await?;
        rows.sort_by(|a, b| b.created_at.cmp(&a.created_at).then_with(|| a.request_id.cmp(&b.request_id)));
        Ok(page_of(rows, page))
    }
}
