//! The tables and indexes, as data: `create_tables` builds them (tests, a
//! first run against an emulator), and the Terraform test checks that
//! `terraform/dynamodb.tf` declares the same ones.

use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType, Projection, ProjectionType,
    ScalarAttributeType,
};
use oblivious_ports::StoreResult;

use super::{sdk, DynamoStore};

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
];

fn schema(key: Key) -> Vec<KeySchemaElement> {
    let elem = |name: &str, kind| {
        KeySchemaElement::builder().attribute_name(name).key_type(kind).build().expect("name and type are set")
    };
    let mut v = vec![elem(key.0, KeyType::Hash)];
    if let Some((range, _)) = key.2 {
        v.push(elem(range, KeyType::Range));
    }
    v
}

fn attrs(key: Key, into: &mut Vec<AttributeDefinition>) {
    let mut add = |name: &str, attr: Attr| {
        if into.iter().all(|d| d.attribute_name() != name) {
            let kind = match attr {
                Attr::S => ScalarAttributeType::S,
                Attr::N => ScalarAttributeType::N,
            };
            into.push(AttributeDefinition::builder().attribute_name(name).attribute_type(kind).build().expect("set"));
        }
    };
    add(key.0, key.1);
    if let Some((name, attr)) = key.2 {
        add(name, attr);
    }
}

impl DynamoStore {
    /// Creates every table that does not exist yet (on-demand billing).
    pub async fn create_tables(&self) -> StoreResult<()> {
        let mut existing = Vec::new();
        let mut start: Option<String> = None;
        loop {
            let page = self.client.list_tables().set_exclusive_start_table_name(start).send().await.map_err(sdk)?;
            existing.extend(page.table_names.unwrap_or_default());
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
            let mut req = self
                .client
                .create_table()
                .table_name(&name)
                .billing_mode(BillingMode::PayPerRequest)
                .set_key_schema(Some(schema(t.key)));
            for (index, key) in t.indexes {
                attrs(*key, &mut defs);
                req = req.global_secondary_indexes(
                    GlobalSecondaryIndex::builder()
                        .index_name(*index)
                        .set_key_schema(Some(schema(*key)))
                        .projection(Projection::builder().projection_type(ProjectionType::All).build())
                        .build()
                        .expect("name, key and projection are set"),
                );
            }
            req.set_attribute_definitions(Some(defs)).send().await.map_err(sdk)?;
        }
        Ok(())
    }
}
