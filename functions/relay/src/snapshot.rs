//! An immutable view of channels, groups and prices, rebuilt when the store's
//! revision moves, with an index from model name to the channels serving it.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use axum::extract::Request;
use axum::response::Response;
use oblivious_core::config::DEFAULT_GROUP;
use oblivious_core::model::{Channel, ChannelStatus, Group, Price};
use oblivious_core::wire::Inbound;
use oblivious_core::{pattern, ApiError};
use oblivious_ports::{Clock, Ids, Platform, Store, StoreError};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::respond::{error_response_in, json_response};
use crate::Relay;

#[derive(Default)]
pub struct Snapshot {
    pub revision: i64,
    pub channels: Vec<Arc<Channel>>,
    /// Exact model names and aliases → indexes into `channels`.
    by_model: HashMap<String, Vec<usize>>,
    /// Channels with at least one `prefix*` pattern.
    wildcard: Vec<usize>,
    pub groups: HashMap<String, Group>,
    /// Price versions per model or `prefix*` pattern, oldest first.
    prices: HashMap<String, Vec<Price>>,
    /// `prefix*` patterns that have prices, longest prefix first.
    price_patterns: Vec<String>,
}

/// What a snapshot is built from, as the store gives it. Serializable: hot
/// state can hold it (sealed, see `shared.rs`) for instances that start cold.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct Inputs {
    pub channels: Vec<Channel>,
    pub groups: Vec<Group>,
    pub prices: Vec<Price>,
}

impl Inputs {
    pub(crate) async fn read<S: Store>(store: &S) -> Result<Self, StoreError> {
        Ok(Inputs { channels: store.channels().await?, groups: store.groups().await?, prices: store.prices().await? })
    }
}

impl Snapshot {
    pub async fn load<S: Store>(store: &S, revision: i64) -> Result<Self, StoreError> {
        Ok(Self::build(revision, Inputs::read(store).await?))
    }

    /// Indexes channels, groups and prices (from the store or from hot state alike).
    pub(crate) fn build(revision: i64, inputs: Inputs) -> Self {
        let channels: Vec<Arc<Channel>> = inputs.channels.into_iter().map(Arc::new).collect();
        let mut by_model: HashMap<String, Vec<usize>> = HashMap::new();
        let mut wildcard = vec![];
        for (i, c) in channels.iter().enumerate() {
            let names: BTreeSet<&String> = c.spec.models.iter().chain(c.spec.model_mapping.keys()).collect();
            for m in names {
                if pattern::is_wildcard(m) {
                    if wildcard.last() != Some(&i) {
                        wildcard.push(i);
                    }
                } else {
                    by_model.entry(m.clone()).or_default().push(i);
                }
            }
        }
        let groups = inputs.groups.into_iter().map(|g| (g.name.clone(), g)).collect();
        let mut prices: HashMap<String, Vec<Price>> = HashMap::new();
        for p in inputs.prices {
            prices.entry(p.model.clone()).or_default().push(p);
        }
        for versions in prices.values_mut() {
            versions.sort_by_key(|p| (p.effective_at, p.version));
        }
        let mut price_patterns: Vec<String> = prices.keys().filter(|m| pattern::is_wildcard(m)).cloned().collect();
        price_patterns.sort_by_key(|p| std::cmp::Reverse(p.len()));
        Snapshot { revision, channels, by_model, wildcard, groups, prices, price_patterns }
    }

    /// Every channel that lists `model`, whatever its status or groups.
    pub fn serving<'a>(&'a self, model: &'a str) -> impl Iterator<Item = &'a Arc<Channel>> + 'a {
        let exact = self.by_model.get(model).map(Vec::as_slice).unwrap_or(&[]);
        let wild = self.wildcard.iter().filter(|&&i| !exact.contains(&i) && self.channels[i].serves(model));
        exact.iter().chain(wild).map(|&i| &self.channels[i])
    }

    /// Whether the channel exists and is enabled (a linear scan: failure paths only).
    pub fn is_enabled(&self, id: oblivious_core::model::Id) -> bool {
        self.channels.iter().any(|c| c.id == id && c.status == ChannelStatus::Enabled)
    }

    /// Enabled channels in `group` that serve `model`.
    pub fn candidates(&self, group: &str, model: &str) -> Vec<Arc<Channel>> {
        self.serving(model)
            .filter(|c| c.status == ChannelStatus::Enabled && c.spec.groups.iter().any(|g| g == group))
            .cloned()
            .collect()
    }

    /// Concrete model names (no patterns) offered to `group`, filtered by a token allowlist.
    pub fn models_for(&self, group: &str, allow: &[String]) -> Vec<String> {
        let mut out = BTreeSet::new();
        for c in &self.channels {
            if c.status != ChannelStatus::Enabled || !c.spec.groups.iter().any(|g| g == group) {
                continue;
            }
            for m in c.spec.models.iter().chain(c.spec.model_mapping.keys()) {
                if !pattern::is_wildcard(m) && pattern::allowed(allow, m) {
                    out.insert(m.clone());
                }
            }
        }
        out.into_iter().collect()
    }

    /// The price in force for `model` at `now_ms`: its own, else the longest
    /// matching `prefix*` pattern's. `None` when nothing prices it.
    pub fn price_for(&self, model: &str, now_ms: i64) -> Option<&Price> {
        let in_force =
            |key: &str| self.prices.get(key)?.iter().rev().find(|p| p.effective_at <= now_ms).filter(|p| !p.retired);
        in_force(model)
            .or_else(|| self.price_patterns.iter().filter(|p| pattern::matches(p, model)).find_map(|p| in_force(p)))
    }

    /// The group's price ratio in basis points (1.0 when the group is unknown).
    pub fn ratio_bp(&self, group: &str) -> i64 {
        self.groups.get(group).or_else(|| self.groups.get(DEFAULT_GROUP)).map_or(10_000, |g| g.ratio_bp)
    }
}

fn model_object(id: &str, style: Inbound) -> serde_json::Value {
    match style {
        Inbound::OpenAi | Inbound::Responses => {
            json!({ "id": id, "object": "model", "created": 0, "owned_by": "oblivious" })
        }
        Inbound::Anthropic => {
            json!({ "type": "model", "id": id, "display_name": id, "created_at": "1970-01-01T00:00:00Z" })
        }
        Inbound::Gemini => json!({
            "name": format!("models/{id}"),
            "displayName": id,
            "supportedGenerationMethods": ["generateContent", "streamGenerateContent", "countTokens", "embedContent"],
        }),
    }
}

/// The models list (or one model with `id`) in the caller's format: what this key may use.
pub(crate) async fn list_models<P: Platform>(
    relay: Arc<Relay<P>>,
    req: Request,
    id: Option<String>,
    style: Inbound,
) -> Response {
    let request_id = relay.ports.ids.request_id();
    let (parts, _) = req.into_parts();
    let principal = match relay.authenticate(&parts).await {
        Ok(p) => p,
        Err(e) => return error_response_in(style, &e, &request_id),
    };
    // Only what the key may use: its group's channels, its allowlist, and a price in force.
    let snapshot = relay.snapshot();
    let now = relay.ports.clock.now_ms();
    let mut models = snapshot.models_for(&principal.user.group, &principal.token.models);
    models.retain(|m| snapshot.price_for(m, now).is_some());
    let body = match id {
        None => {
            let data: Vec<_> = models.iter().map(|m| model_object(m, style)).collect();
            match style {
                Inbound::OpenAi | Inbound::Responses => json!({ "object": "list", "data": data }),
                Inbound::Anthropic => json!({
                    "data": data, "has_more": false,
                    "first_id": models.first(), "last_id": models.last(),
                }),
                Inbound::Gemini => json!({ "models": data }),
            }
        }
        Some(id) if models.contains(&id) => model_object(&id, style),
        Some(id) => {
            let e = ApiError::not_found(
                "model_not_found",
                format!("The model `{id}` does not exist or you do not have access to it."),
            )
            .with_param("model");
            return error_response_in(style, &e, &request_id);
        }
    };
    json_response(200, body.to_string().into(), &request_id)
}
