//! The durable store on DynamoDB: fifteen tables (see [`TABLES`] and
//! `terraform/dynamodb.tf`), money paths as conditional transactions, usage
//! writes idempotent by request id.
//!
//! | table | key | indexes | holds |
//! |---|---|---|---|
//! | users | id | — | users |
//! | tokens | id | by-user (user_id, id) | API keys |
//! | channels | id | — (read whole into the relay's snapshot) | channels, keys sealed |
//! | meta | pk, sk | — | revision, id sequences, unique guards, groups, prices, spend per period, alerts, codes, audit months |
//! | usage | request_id | by-user (user_id, created_at), by-token (token_id, created_at) | the usage log |
//! | reservations | request_id | by-state (state, created_at) | money held per request |
//! | ledger | user_id, id | — | top-ups, redemptions, adjustments |
//! | accounts | user_id | — | credentials and settings (email unique through a guard in meta) |
//! | sessions | id | — | signed-in devices |
//! | user-links | user_id, sk | — | a user's sessions and identities, listed consistently |
//! | refresh-tokens | hash | — | every refresh token a session ever had |
//! | tickets | hash | by-user (user_id, purpose) | single-use tokens |
//! | identities | provider_subject | — | linked OIDC identities |
//! | signing-keys | kid | — | JWT signing keys, sealed |
//! | audit | id | by-month (month, id), by-actor (actor_id, id), by-target (target_id, id) | the audit log |
//!
//! A unique value (user name, key hash, channel name, account email) is a
//! guard item in `meta` (`unique` / `token-hash#…`) written in the same
//! transaction as its row: it enforces uniqueness and is the consistent lookup
//! by that value (a GSI read could miss a key created a moment ago). The
//! account tables' layout is explained in [`accounts`].

mod accounts;
mod ledger;
pub mod schema;
mod store;
mod usage;

use std::collections::HashMap;
use std::sync::atomic::AtomicI64;
use std::sync::Arc;
use std::time::Duration;

use oblivious_ports::{Clock, Sealer, StoreError, StoreResult, Upstream};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_dynamo::AttributeValue;
use serde_json::{json, Value};

use crate::client::{AwsClient, AwsError, Service};

pub use schema::TABLES;

pub(crate) type Item = HashMap<String, AttributeValue>;

/// The store over one set of tables, named `{prefix}{table}`.
pub struct DynamoStore<U, C> {
    client: AwsClient<U, C>,
    prefix: String,
    sealer: Sealer,
    /// The audit month this process last marked in `meta` (see [`accounts`]), shared by clones.
    audit_month: Arc<AtomicI64>,
}

impl<U, C> Clone for DynamoStore<U, C> {
    fn clone(&self) -> Self {
        DynamoStore {
            client: self.client.clone(),
            prefix: self.prefix.clone(),
            sealer: self.sealer.clone(),
            audit_month: self.audit_month.clone(),
        }
    }
}

pub(crate) fn backend(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(e.to_string())
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

/// A request object without its absent (null) members: the API refuses an
/// empty `ExpressionAttributeValues` or a null `ConditionExpression`.
fn request(mut v: Value) -> Value {
    if let Value::Object(fields) = &mut v {
        fields.retain(|_, f| !f.is_null());
    }
    v
}

pub(crate) fn aws(e: AwsError) -> StoreError {
    StoreError::Backend(e.to_string())
}

/// A page of Query or Scan.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ItemPage {
    #[serde(default)]
    items: Vec<Item>,
    last_evaluated_key: Option<Item>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct GetItemOutput {
    item: Option<Item>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct UpdateItemOutput {
    attributes: Option<Item>,
}

/// How a transaction ended.
pub(crate) enum TxEnd {
    Done,
    /// The conditions that failed, by item index.
    Refused(Vec<usize>),
}

/// A write transaction under construction (at most 100 items, each item once):
/// `TransactItems` entries as the API takes them.
#[derive(Default)]
pub(crate) struct Tx {
    items: Vec<Value>,
}

impl Tx {
    fn push(&mut self, kind: &str, op: Value) -> usize {
        self.items.push(json!({ kind: request(op) }));
        self.items.len() - 1
    }

    pub fn put(&mut self, table: String, item: Item, cond: Option<&str>, vals: Vec<(&str, AttributeValue)>) -> usize {
        let op = json!({
            "TableName": table,
            "Item": item,
            "ConditionExpression": cond,
            "ExpressionAttributeNames": cond.and_then(|c| names_in(&[c])),
            "ExpressionAttributeValues": values(vals),
        });
        self.push("Put", op)
    }

    pub fn update(
        &mut self,
        table: String,
        key: Item,
        expr: &str,
        cond: Option<&str>,
        vals: Vec<(&str, AttributeValue)>,
    ) -> usize {
        let op = json!({
            "TableName": table,
            "Key": key,
            "UpdateExpression": expr,
            "ConditionExpression": cond,
            "ExpressionAttributeNames": names_in(&[expr, cond.unwrap_or("")]),
            "ExpressionAttributeValues": values(vals),
        });
        self.push("Update", op)
    }

    pub fn delete(&mut self, table: String, key: Item, cond: Option<&str>) -> usize {
        self.delete_where(table, key, cond, vec![])
    }

    /// [`delete`](Self::delete) with values for its condition.
    pub fn delete_where(
        &mut self,
        table: String,
        key: Item,
        cond: Option<&str>,
        vals: Vec<(&str, AttributeValue)>,
    ) -> usize {
        let op = json!({
            "TableName": table,
            "Key": key,
            "ConditionExpression": cond,
            "ExpressionAttributeNames": cond.and_then(|c| names_in(&[c])),
            "ExpressionAttributeValues": values(vals),
        });
        self.push("Delete", op)
    }

    pub fn check(&mut self, table: String, key: Item, cond: &str, vals: Vec<(&str, AttributeValue)>) -> usize {
        let op = json!({
            "TableName": table,
            "Key": key,
            "ConditionExpression": cond,
            "ExpressionAttributeNames": names_in(&[cond]),
            "ExpressionAttributeValues": values(vals),
        });
        self.push("ConditionCheck", op)
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

/// The `Code` of each item's cancellation reason (`None` for an item that passed).
fn cancellation_codes(body: &Value) -> Vec<String> {
    body.get("CancellationReasons")
        .and_then(Value::as_array)
        .map(|reasons| {
            reasons.iter().map(|r| r.get("Code").and_then(Value::as_str).unwrap_or("None").to_string()).collect()
        })
        .unwrap_or_default()
}

/// Attempts for an optimistic read-then-transact step before giving up.
const ATTEMPTS: u32 = 12;

impl<U: Upstream, C: Clock> DynamoStore<U, C> {
    /// A store over tables named `{prefix}users`, `{prefix}tokens`, …
    pub fn new(client: AwsClient<U, C>, prefix: impl Into<String>, sealer: Sealer) -> Self {
        DynamoStore { client, prefix: prefix.into(), sealer, audit_month: Arc::new(AtomicI64::new(i64::MIN)) }
    }

    pub fn client(&self) -> &AwsClient<U, C> {
        &self.client
    }

    pub(crate) fn table(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    /// One DynamoDB operation, its answer read as `T`.
    pub(crate) async fn call<T: DeserializeOwned>(&self, operation: &str, body: Value) -> StoreResult<T> {
        self.client.call_as(Service::DynamoDb, operation, &request(body)).await.map_err(aws)
    }

    /// Runs a transaction; conflicts with concurrent transactions are retried here.
    pub(crate) async fn transact(&self, tx: Tx) -> StoreResult<TxEnd> {
        if tx.is_empty() {
            return Ok(TxEnd::Done);
        }
        let body = json!({ "TransactItems": tx.items });
        for attempt in 0..ATTEMPTS {
            let err = match self.client.call(Service::DynamoDb, "TransactWriteItems", &body).await {
                Ok(_) => return Ok(TxEnd::Done),
                Err(e) => e,
            };
            match &err {
                AwsError::Service { code, body, .. } if code == "TransactionCanceledException" => {
                    let reasons = cancellation_codes(body);
                    let failed: Vec<usize> = reasons
                        .iter()
                        .enumerate()
                        .filter(|(_, r)| r.as_str() == "ConditionalCheckFailed")
                        .map(|(i, _)| i)
                        .collect();
                    if !failed.is_empty() {
                        return Ok(TxEnd::Refused(failed));
                    }
                    if !reasons.iter().any(|r| r == "TransactionConflict") {
                        return Err(aws(err));
                    }
                }
                AwsError::Service { code, .. } if code == "TransactionInProgressException" => {}
                _ => return Err(aws(err)),
            }
            self.backoff(attempt).await;
        }
        Err(backend("the transaction kept conflicting with concurrent writes"))
    }

    /// One conditional write (`PutItem`, `UpdateItem`, `DeleteItem`): its
    /// answer, or `None` when its condition failed.
    pub(crate) async fn write_if(&self, operation: &str, body: Value) -> StoreResult<Option<Value>> {
        match self.client.call(Service::DynamoDb, operation, &request(body)).await {
            Ok(answer) => Ok(Some(answer)),
            Err(e) if e.code() == Some("ConditionalCheckFailedException") => Ok(None),
            Err(e) => Err(aws(e)),
        }
    }

    pub(crate) async fn get(&self, table: &str, key: Item) -> StoreResult<Option<Item>> {
        let body = json!({ "TableName": self.table(table), "Key": key, "ConsistentRead": true });
        Ok(self.call::<GetItemOutput>("GetItem", body).await?.item)
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
        let mut start: Option<Item> = None;
        let vals = values(vals);
        loop {
            let body = json!({
                "TableName": self.table(table),
                "IndexName": index,
                "KeyConditionExpression": key_cond,
                "ExpressionAttributeNames": names_in(&[key_cond]),
                "ExpressionAttributeValues": vals,
                // Global secondary indexes only read eventually consistent.
                "ConsistentRead": index.is_none().then_some(true),
                "ExclusiveStartKey": start,
            });
            let page: ItemPage = self.call("Query", body).await?;
            out.extend(page.items);
            start = page.last_evaluated_key;
            if start.is_none() {
                return Ok(out);
            }
        }
    }

    /// Every item of a table (all pages).
    pub(crate) async fn scan(&self, table: &str) -> StoreResult<Vec<Item>> {
        let mut out = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            let body = json!({ "TableName": self.table(table), "ConsistentRead": true, "ExclusiveStartKey": start });
            let page: ItemPage = self.call("Scan", body).await?;
            out.extend(page.items);
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
        let body = json!({
            "TableName": self.table("meta"),
            "Key": key_meta("seq", seq),
            "UpdateExpression": "ADD #value :count",
            "ExpressionAttributeNames": names_in(&["#value"]),
            "ExpressionAttributeValues": { ":count": n(count) },
            "ReturnValues": "UPDATED_NEW",
        });
        let out: UpdateItemOutput = self.call("UpdateItem", body).await?;
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

    /// Waits before another optimistic attempt: 5 ms doubling up to 320 ms, plus jitter.
    pub(crate) async fn backoff(&self, attempt: u32) {
        let ms = 5u64 << attempt.min(6);
        self.client.clock().sleep(Duration::from_millis(ms + self.client.jitter(ms))).await;
    }

    /// Wall-clock time from the client's clock, Unix ms.
    pub(crate) fn now_ms(&self) -> i64 {
        self.client.clock().now_ms()
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transaction_items_are_dynamodb_json_without_absent_members() {
        let mut tx = Tx::default();
        let put = tx.put("t".into(), key_id(1), None, vec![]);
        let upd = tx.update("t".into(), key_id(2), "SET #state = :s", Some("#state = :old"), vec![(":s", s("a"))]);
        assert_eq!((put, upd), (0, 1));
        assert_eq!(tx.items[0], json!({ "Put": { "TableName": "t", "Item": { "id": { "N": "1" } } } }));
        assert_eq!(
            tx.items[1],
            json!({ "Update": {
                "TableName": "t",
                "Key": { "id": { "N": "2" } },
                "UpdateExpression": "SET #state = :s",
                "ConditionExpression": "#state = :old",
                "ExpressionAttributeNames": { "#state": "state" },
                "ExpressionAttributeValues": { ":s": { "S": "a" } },
            } })
        );
    }

    #[test]
    fn cancellation_reasons_are_read_by_item() {
        let body = json!({
            "__type": "com.amazonaws.dynamodb.v20120810#TransactionCanceledException",
            "CancellationReasons": [{ "Code": "None" }, { "Code": "ConditionalCheckFailed", "Message": "The conditional request failed" }, {}],
        });
        assert_eq!(cancellation_codes(&body), ["None", "ConditionalCheckFailed", "None"]);
        assert!(cancellation_codes(&json!({})).is_empty());
    }

    #[test]
    fn pages_read_items_and_the_next_key() {
        let page: ItemPage = serde_json::from_value(json!({
            "Items": [{ "id": { "N": "1" }, "gone": { "NULL": true }, "on": { "BOOL": true }, "tags": { "L": [{ "S": "x" }] } }],
            "Count": 1,
            "LastEvaluatedKey": { "id": { "N": "1" } },
        }))
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(get_n(&page.items[0], "id"), Some(1));
        assert!(get_bool(&page.items[0], "on"));
        assert_eq!(page.last_evaluated_key, Some(key_id(1)));
    }
}
