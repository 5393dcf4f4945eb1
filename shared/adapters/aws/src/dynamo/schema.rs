//! The tables and indexes, as data: `create_tables` builds them (tests, a
//! first run against an emulator), and the Terraform test checks that
//! `terraform/dynamodb.tf` declares the same ones.

use oblivious_ports::{Clock, StoreResult, Upstream};
use serde::Deserialize;
use serde_json::{json, Value};

use super::DynamoStore;

#[derive(Clone, Copy, Debug)]
pub enum Attr {
    S,
    N,
}

/// A key: partition attribute and optional sort attribute.
pub type Key = (&'static str, Attr, Option<(&'static str, Attr)>);

#[derive(Debug)]
pub struct TableSpec {
    pub name: &'static str,
    pub key: Key,
    pub indexes: &'static [(&'static str, Key)],
}

pub const TABLES: &[TableSpec] = &[
    TableSpec { name: "users", key: ("id", Attr::N, None), indexes: &[] },
    TableSpec {
        name: "tokens",
        key: ("id", Attr::N, None),
        indexes: &[("by-user", ("user_id", Attr::N, Some(("id", Attr::N))))],
    },
    TableSpec { name: "channels", key: ("id", Attr::N, None), indexes: &[] },
    TableSpec { name: "meta", key: ("pk", Attr::S, Some(("sk", Attr::S))), indexes: &[] },
    TableSpec {
        name: "usage",
        key: ("request_id", Attr::S, None),
        indexes: &[
            ("by-user", ("user_id", Attr::N, Some(("created_at", Attr::N)))),
            ("by-token", ("token_id", Attr::N, Some(("created_at", Attr::N)))),
        ],
    },
    TableSpec {
        name: "reservations",
        key: ("request_id", Attr::S, None),
        indexes: &[("by-state", ("state", Attr::S, Some(("created_at", Attr::N))))],
    },
    TableSpec { name: "ledger", key: ("user_id", Attr::N, Some(("id", Attr::N))), indexes: &[] },
    // The account tables (see `accounts.rs` for the layout and access patterns).
    TableSpec { name: "accounts", key: ("user_id", Attr::N, None), indexes: &[] },
    TableSpec { name: "sessions", key: ("id", Attr::S, None), indexes: &[] },
    TableSpec { name: "user-links", key: ("user_id", Attr::N, Some(("sk", Attr::S))), indexes: &[] },
    TableSpec { name: "refresh-tokens", key: ("hash", Attr::S, None), indexes: &[] },
    TableSpec {
        name: "tickets",
        key: ("hash", Attr::S, None),
        indexes: &[("by-user", ("user_id", Attr::N, Some(("purpose", Attr::S))))],
    },
    TableSpec { name: "identities", key: ("provider_subject", Attr::S, None), indexes: &[] },
    TableSpec { name: "signing-keys", key: ("kid", Attr::S, None), indexes: &[] },
    TableSpec {
        name: "audit",
        key: ("id", Attr::S, None),
        indexes: &[
            ("by-month", ("month", Attr::S, Some(("id", Attr::S)))),
            ("by-actor", ("actor_id", Attr::N, Some(("id", Attr::S)))),
            ("by-target", ("target_id", Attr::N, Some(("id", Attr::S)))),
        ],
    },
];

fn schema(key: Key) -> Vec<Value> {
    let mut v = vec![json!({ "AttributeName": key.0, "KeyType": "HASH" })];
    if let Some((range, _)) = key.2 {
        v.push(json!({ "AttributeName": range, "KeyType": "RANGE" }));
    }
    v
}

fn attrs(key: Key, into: &mut Vec<Value>) {
    let mut add = |name: &str, attr: Attr| {
        if into.iter().all(|d| d["AttributeName"] != name) {
            let kind = match attr {
                Attr::S => "S",
                Attr::N => "N",
            };
            into.push(json!({ "AttributeName": name, "AttributeType": kind }));
        }
    };
    add(key.0, key.1);
    if let Some((name, attr)) = key.2 {
        add(name, attr);
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ListTablesOutput {
    #[serde(default)]
    table_names: Vec<String>,
    last_evaluated_table_name: Option<String>,
}

impl<U: Upstream, C: Clock> DynamoStore<U, C> {
    /// Creates every table that does not exist yet (on-demand billing).
    pub async fn create_tables(&self) -> StoreResult<()> {
        let mut existing = Vec::new();
        let mut start: Option<String> = None;
        loop {
            let page: ListTablesOutput = self.call("ListTables", json!({ "ExclusiveStartTableName": start })).await?;
            existing.extend(page.table_names);
            start = page.last_evaluated_table_name;
            if start.is_none() {
                break;
            }
        }
        for t in TABLES {
            let name = self.table(t.name);
            if existing.contains(&name) {
                continue;
            }
            let mut defs = Vec::new();
            attrs(t.key, &mut defs);
            let mut indexes = Vec::new();
            for (index, key) in t.indexes {
                attrs(*key, &mut defs);
                indexes.push(json!({
                    "IndexName": index,
                    "KeySchema": schema(*key),
                    "Projection": { "ProjectionType": "ALL" },
                }));
            }
            let body = json!({
                "TableName": name,
                "BillingMode": "PAY_PER_REQUEST",
                "KeySchema": schema(t.key),
                "AttributeDefinitions": defs,
                // The API refuses an empty list.
                "GlobalSecondaryIndexes": (!indexes.is_empty()).then_some(indexes),
            });
            self.call::<Value>("CreateTable", body).await?;
        }
        Ok(())
    }
}
