//! The durable store on DynamoDB: seven tables (see [`TABLES`] and
//! `terraform/dynamodb.tf`), money paths as conditional transactions, usage
//! writes idempotent by request id.
//!
//! | table | key | indexes | holds |
//! |---|---|---|---|
//! | users | id | — | users |
//! | tokens | id | by-user (user_id, id) | API keys |
//! | channels | id | — (read whole into the relay's snapshot) | channels, keys sealed |
//! | meta | pk, sk | — | revision, id sequences, unique guards, groups, prices, spend per period, alerts, codes |
//!
//! A unique value (user name, key hash, channel name) is a guard item in
//! `meta` (`unique` / `token-hash#…`) written in the same transaction as its
//! row: it enforces uniqueness and is the consistent lookup by that value
//! (a GSI read could miss a key created a moment ago).
//! | usage | request_id | by-user (user_id, created_at), by-token (token_id, created_at) | the usage log |
//! | reservations | request_id | by-state (state, created_at) | money held per request |
//! | ledger | user_id, id | — | top-ups, redemptions, adjustments |

mod ledger;
pub mod schema;
mod store;
mod usage;

use std::collections::HashMap;
use std::time::Duration;

use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata};
use aws_sdk_dynamodb::types::{AttributeValue, ConditionCheck, Delete, Put, ReturnValue, TransactWriteItem, Update};
use aws_sdk_dynamodb::Client;
use oblivious_ports::{Sealer, StoreError, StoreResult};
use serde::de::DeserializeOwned;
use serde::Serialize;

pub use schema::TABLES;

pub(crate) type Item = HashMap<String, AttributeValue>;

/// The store over one set of tables, named `{prefix}{table}`.
#[derive(Clone)]
pub struct DynamoStore {
    client: Client,
    prefix: String,
    sealer: Sealer,
}

pub(crate) fn backend(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(e.to_string())
}

pub(crate) fn sdk<E: std::error::Error + 'static>(e: E) -> StoreError {
    StoreError::Backend(DisplayErrorContext(e).to_string())
}

pub(crate) fn n(v: i64) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

pub(crate) fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

pub(crate) fn opt_n(v: Option<i64>) -> AttributeValue {
    v.map_or(AttributeValue::Null(true), n)
}

pub(crate) fn to_item<T: Serialize>(v: &T) -> StoreResult<Item> {
    serde_dynamo::to_item(v).map_err(backend)
}

pub(crate) fn from_item<T: DeserializeOwned>(item: Item) -> StoreResult<T> {
    serde_dynamo::from_item(item).map_err(|e| backend(format!("unreadable item: {e}")))
}

pub(crate) fn key_id(id: i64) -> Item {
    HashMap::from([("id".to_string(), n(id))])
}

pub(crate) fn key_meta(pk: &str, sk: &str) -> Item {
    HashMap::from([("pk".to_string(), s(pk)), ("sk".to_string(), s(sk))])
}

pub(crate) fn get_n(item: &Item, name: &str) -> Option<i64> {
    match item.get(name) {
        Some(AttributeValue::N(v)) => v.parse().ok(),
        _ => None,
    }
}

pub(crate) fn get_s<'a>(item: &'a Item, name: &str) -> Option<&'a str> {
    match item.get(name) {
        Some(AttributeValue::S(v)) => Some(v),
        _ => None,
    }
}

pub(crate) fn get_bool(item: &Item, name: &str) -> bool {
    matches!(item.get(name), Some(AttributeValue::Bool(true)))
}

/// `#word` placeholders of an expression, each naming the attribute `word`
/// (so reserved words such as `name`, `status` or `state` need no care).
fn names_in(exprs: &[&str]) -> Option<HashMap<String, String>> {
    let mut names = HashMap::new();
    for expr in exprs {
        let mut rest = *expr;
        while let Some(i) = rest.find('#') {
            let word: String = rest[i + 1..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
            rest = &rest[i + 1 + word.len()..];
            names.insert(format!("#{word}"), word);
        }
    }
    (!names.is_empty()).then_some(names)
}

fn values(vals: Vec<(&str, AttributeValue)>) -> Option<HashMap<String, AttributeValue>> {
    (!vals.is_empty()).then(|| vals.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
}

/// How a transaction ended.
pub(crate) enum TxEnd {
    Done,
    /// The conditions that failed, by item index.
    Refused(Vec<usize>),
}

/// A write transaction under construction (at most 100 items, each item once).
#[derive(Default)]
pub(crate) struct Tx {
    items: Vec<TransactWriteItem>,
}

impl Tx {
    pub fn put(&mut self, table: String, item: Item, cond: Option<&str>, vals: Vec<(&str, AttributeValue)>) -> usize {
        let names = cond.and_then(|c| names_in(&[c]));
        let put = Put::builder()
            .table_name(table)
            .set_item(Some(item))
            .set_condition_expression(cond.map(str::to_string))
            .set_expression_attribute_names(names)
            .set_expression_attribute_values(values(vals))
            .build()
            .expect("table and item are set");
        self.items.push(TransactWriteItem::builder().put(put).build());
        self.items.len() - 1
    }

    pub fn update(
        &mut self,
        table: String,
        key: Item,
        expr: &str,
        cond: Option<&str>,
        vals: Vec<(&str, AttributeValue)>,
    ) -> usize {
        let names = names_in(&[expr, cond.unwrap_or("")]);
        let update = Update::builder()
            .table_name(table)
            .set_key(Some(key))
            .update_expression(expr)
            .set_condition_expression(cond.map(str::to_string))
            .set_expression_attribute_names(names)
            .set_expression_attribute_values(values(vals))
            .build()
            .expect("table, key and expression are set");
        self.items.push(TransactWriteItem::builder().update(update).build());
        self.items.len() - 1
    }

    pub fn delete(&mut self, table: String, key: Item, cond: Option<&str>) -> usize {
        let names = cond.and_then(|c| names_in(&[c]));
        let delete = Delete::builder()
            .table_name(table)
            .set_key(Some(key))
            .set_condition_expression(cond.map(str::to_string))
            .set_expression_attribute_names(names)
            .build()
            .expect("table and key are set");
        self.items.push(TransactWriteItem::builder().delete(delete).build());
        self.items.len() - 1
    }

    pub fn check(&mut self, table: String, key: Item, cond: &str, vals: Vec<(&str, AttributeValue)>) -> usize {
        let check = ConditionCheck::builder()
            .table_name(table)
            .set_key(Some(key))
            .condition_expression(cond)
            .set_expression_attribute_names(names_in(&[cond]))
            .set_expression_attribute_values(values(vals))
            .build()
            .expect("table, key and condition are set");
        self.items.push(TransactWriteItem::builder().condition_check(check).build());
        self.items.len() - 1
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

/// Attempts for an optimistic read-then-transact step before giving up.
const ATTEMPTS: u32 = 12;

impl DynamoStore {
    /// A store over tables named `{prefix}users`, `{prefix}tokens`, …
    pub fn new(client: Client, prefix: impl Into<String>, sealer: Sealer) -> Self {
        DynamoStore { client, prefix: prefix.into(), sealer }
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    pub(crate) fn table(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    /// Runs a transaction; conflicts with concurrent transactions are retried here.
    pub(crate) async fn transact(&self, tx: Tx) -> StoreResult<TxEnd> {
        if tx.is_empty() {
            return Ok(TxEnd::Done);
        }
        for attempt in 0..ATTEMPTS {
            let sent = self.client.transact_write_items().set_transact_items(Some(tx.items.clone())).send().await;
            let err = match sent {
                Ok(_) => return Ok(TxEnd::Done),
                Err(e) => e.into_service_error(),
            };
            if let aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError::TransactionCanceledException(
                cancel,
            ) = &err
            {
                let reasons = cancel.cancellation_reasons();
                let failed: Vec<usize> = reasons
                    .iter()
                    .enumerate()
                    .filter(|(_, r)| r.code() == Some("ConditionalCheckFailed"))
                    .map(|(i, _)| i)
                    .collect();
                if !failed.is_empty() {
                    return Ok(TxEnd::Refused(failed));
                }
                if !reasons.iter().any(|r| r.code() == Some("TransactionConflict")) {
                    return Err(sdk(err));
                }
            } else if err.code() != Some("TransactionInProgressException") {
                return Err(sdk(err));
            }
            backoff(attempt).await;
        }
        Err(backend("the transaction kept conflicting with concurrent writes"))
    }

    pub(crate) async fn get(&self, table: &str, key: Item) -> StoreResult<Option<Item>> {
        let out = self
            .client
            .get_item()
            .table_name(self.table(table))
            .set_key(Some(key))
            .consistent_read(true)
            .send()
            .await
            .map_err(sdk)?;
        Ok(out.item)
    }

    /// Every item of a query (all pages).
    pub(crate) async fn query(
        &self,
        table: &str,
        index: Option<&str>,
        key_cond: &str,
        vals: Vec<(&str, AttributeValue)>,
    ) -> StoreResult<Vec<Item>> {
        let mut out = Vec::new();
        let mut start = None;
        let vals = values(vals);
        loop {
            let page = self
                .client
                .query()
                .table_name(self.table(table))
                .set_index_name(index.map(str::to_string))
                .key_condition_expression(key_cond)
                .set_expression_attribute_names(names_in(&[key_cond]))
                .set_expression_attribute_values(vals.clone())
                .set_consistent_read(index.is_none().then_some(true))
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(sdk)?;
            out.extend(page.items.unwrap_or_default());
            start = page.last_evaluated_key;
            if start.is_none() {
                return Ok(out);
            }
        }
    }

    /// Every item of a table (all pages).
    pub(crate) async fn scan(&self, table: &str) -> StoreResult<Vec<Item>> {
        let mut out = Vec::new();
        let mut start = None;
        loop {
            let page = self
                .client
                .scan()
                .table_name(self.table(table))
                .consistent_read(true)
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(sdk)?;
            out.extend(page.items.unwrap_or_default());
            start = page.last_evaluated_key;
            if start.is_none() {
                return Ok(out);
            }
        }
    }

    /// The next id of a sequence (`users`, `tokens`, …), from an atomic counter.
    pub(crate) async fn next_id(&self, seq: &str) -> StoreResult<i64> {
        Ok(*self.next_ids(seq, 1).await?.start())
    }

    /// `count` consecutive ids of a sequence, reserved in one atomic update.
    pub(crate) async fn next_ids(&self, seq: &str, count: usize) -> StoreResult<std::ops::RangeInclusive<i64>> {
        let count = i64::try_from(count.max(1)).unwrap_or(i64::MAX);
        let out = self
            .client
            .update_item()
            .table_name(self.table("meta"))
            .set_key(Some(key_meta("seq", seq)))
            .update_expression("ADD #value :count")
            .set_expression_attribute_names(names_in(&["#value"]))
            .expression_attribute_values(":count", n(count))
            .return_values(ReturnValue::UpdatedNew)
            .send()
            .await
            .map_err(sdk)?;
        let last = out
            .attributes
            .as_ref()
            .and_then(|a| get_n(a, "value"))
            .ok_or_else(|| backend("sequence without a value"))?;
        Ok(last - count + 1..=last)
    }

    /// Adds the revision bump (caches re-read) to a transaction.
    pub(crate) fn bump(&self, tx: &mut Tx) {
        tx.update(self.table("meta"), key_meta("revision", "-"), "ADD #value :one", None, vec![(":one", n(1))]);
    }
}

pub(crate) async fn backoff(attempt: u32) {
    let ms = 5u64 << attempt.min(6);
    tokio::time::sleep(Duration::from_millis(ms + rand::random::<u64>() % ms)).await;
}

/// Offset/limit over rows already sorted in memory.
pub(crate) fn page_of<T>(rows: Vec<T>, page: oblivious_ports::Page) -> oblivious_ports::Paged<T> {
    let total = rows.len() as u64;
    let items = rows
        .into_iter()
        .skip(usize::try_from(page.offset).unwrap_or(usize::MAX))
        .take(usize::try_from(page.limit).unwrap_or(usize::MAX))
        .collect();
    oblivious_ports::Paged { items, total }
}
