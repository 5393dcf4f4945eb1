//! One behaviour for every store: cases over the [`Store`], [`Ledger`] and
//! [`UsageLog`] ports that each backend runs unchanged (SQLite locally,
//! DynamoDB on AWS), concurrency and idempotency included.
//!
//! A backend's test file calls [`store_conformance!`](crate::store_conformance)
//! with an async expression that yields a fresh, empty store; every case
//! becomes its own `#[tokio::test]`.

use std::collections::BTreeSet;

use futures_util::future::join_all;
use oblivious_core::alerts::Alert;
use oblivious_core::model::{
    ChannelSpec, ChannelStatus, ChannelType, Group, KeySelection, Price, Role, Source, TokenStatus, UsageRecord,
    UserStatus,
};

#[path = "conformance_accounts.rs"]
mod accounts_cases;
pub use accounts_cases::*;

use crate::{
    spend_periods, ConfigSnapshot, GroupBy, Interval, Ledger, NewToken, NewUser, Page, RedeemError, Reservation,
    Shortfall, Store, StoreError, TokenFilter, TokenPatch, UsageFilter, UsageLog, UserPatch,
};

/// Everything a conforming store implements.
pub trait FullStore: Store + Ledger + UsageLog + crate::Accounts {}
impl<T: Store + Ledger + UsageLog + crate::Accounts> FullStore for T {}

const ALL: Page = Page { offset: 0, limit: 1000 };
/// 2026-11-24T10:00:00Z, so day and month periods are fixed.
pub const T0: i64 = 1_795_514_400_000;

pub fn new_user(name: &str, quota: i64) -> NewUser {
    NewUser { name: name.into(), role: Role::User, group: "default".into(), quota, unlimited: false }
}

pub fn new_token(user_id: i64, hash: &str, quota: i64) -> NewToken {
    NewToken {
        user_id,
        name: format!("key {hash}"),
        key_hash: hash.into(),
        key_hint: "sk-…".into(),
        unlimited: false,
        remaining_quota: quota,
        models: vec![],
        ips: vec![],
        expires_at: None,
        daily_limit: None,
        monthly_limit: None,
    }
}

pub fn spec(name: &str) -> ChannelSpec {
    ChannelSpec {
        name: name.into(),
        kind: ChannelType::Openai,
        base_url: "http://127.0.0.1:1/v1".into(),
        keys: vec!["sk-upstream".into()],
        models: vec!["gpt-*".into()],
        model_mapping: Default::default(),
        weight: 1,
        priority: 0,
        groups: vec!["default".into()],
        key_selection: KeySelection::Random,
        api_version: None,
        region: None,
        project: None,
    }
}

fn reservation(request_id: &str, token_id: i64, user_id: i64, amount: i64) -> Reservation {
    Reservation {
        request_id: request_id.into(),
        token_id,
        user_id,
        amount,
        created_at: T0,
        state: String::new(),
        charged: None,
    }
}

fn record(request_id: &str, token_id: i64, user_id: i64, cost: i64) -> UsageRecord {
    UsageRecord {
        request_id: request_id.into(),
        created_at: T0,
        endpoint: "/v1/chat/completions".into(),
        user_id,
        token_id,
        requested_model: "gpt-4o".into(),
        upstream_model: "gpt-4o".into(),
        cost,
        status: 200,
        latency_ms: 10,
        ..Default::default()
    }
}

/// A user with `balance` and one key with `quota`.
async fn funded<S: FullStore>(s: &S, name: &str, balance: i64, quota: i64) -> (i64, i64) {
    let u = s.create_user(new_user(name, balance), T0).await.expect("user");
    let t = s.create_token(new_token(u.id, &format!("hash-{name}"), quota), T0).await.expect("token");
    (u.id, t.id)
}

async fn balances<S: FullStore>(s: &S, user: i64, token: i64) -> (i64, i64, i64, i64) {
    let u = s.user(user).await.expect("read").expect("user");
    let t = s.token(token).await.expect("read").expect("token");
    (u.quota, u.used_quota, t.remaining_quota, t.used_quota)
}

pub async fn users<S: FullStore>(s: S) {
    let a = s.create_user(new_user("alice", 100), T0).await.expect("create");
    assert_eq!((a.name.as_str(), a.quota, a.used_quota, a.status), ("alice", 100, 0, UserStatus::Enabled));
    assert!(matches!(s.create_user(new_user("alice", 1), T0).await, Err(StoreError::Conflict(_))), "names are unique");
    let b = s.create_user(new_user("bob", 5), T0 + 1).await.expect("create");
    assert!(b.id > a.id, "ids grow");
    assert_eq!(s.user(a.id).await.expect("read"), Some(a.clone()));
    assert_eq!(s.user_by_name("bob").await.expect("read").map(|u| u.id), Some(b.id));
    assert_eq!(s.user_by_name("carol").await.expect("read"), None);
    assert_eq!(s.user(999_999).await.expect("read"), None);

    let page = s.users(Page { offset: 1, limit: 1 }).await.expect("list");
    assert_eq!((page.total, page.items.len(), page.items[0].id), (2, 1, b.id), "ordered by id");

    let rev = s.revision().await.expect("rev");
    let patched = s
        .update_user(a.id, UserPatch { role: Some(Role::Admin), quota: Some(7), ..Default::default() })
        .await
        .expect("patch");
    assert_eq!((patched.role, patched.quota, patched.group.as_str()), (Role::Admin, 7, "default"));
    assert!(s.revision().await.expect("rev") > rev, "a role change invalidates caches");
    assert!(matches!(s.update_user(999_999, UserPatch::default()).await, Err(StoreError::NotFound(_))));

    let t = s.create_token(new_token(b.id, "hb", 1), T0).await.expect("token");
    s.delete_user(b.id).await.expect("delete");
    let gone = s.user(b.id).await.expect("read").expect("kept for history");
    assert_eq!(gone.status, UserStatus::Disabled);
    assert_eq!(s.token(t.id).await.expect("read").expect("token").status, TokenStatus::Deleted);
    assert!(s.create_user(new_user("bob", 1), T0).await.is_ok(), "a deleted user's name is free again");
    assert!(matches!(s.delete_user(999_999).await, Err(StoreError::NotFound(_))));
}

pub async fn tokens<S: FullStore>(s: S) {
    let u = s.create_user(new_user("u", 100), T0).await.expect("user");
    let other = s.create_user(new_user("o", 100), T0).await.expect("user");
    assert!(matches!(s.create_token(new_token(999_999, "x", 1), T0).await, Err(StoreError::NotFound(_))));
    let rev = s.revision().await.expect("rev");
    let mut nt = new_token(u.id, "h1", 50);
    nt.models = vec!["gpt-*".into()];
    nt.ips = vec!["10.0.0.0/8".parse().expect("net")];
    nt.expires_at = Some(T0 + 1000);
    nt.daily_limit = Some(9);
    let t = s.create_token(nt, T0).await.expect("create");
    assert!(s.revision().await.expect("rev") > rev, "a new key invalidates caches");
    assert_eq!(
        (t.status, t.remaining_quota, t.models.clone(), t.expires_at, t.daily_limit, t.monthly_limit),
        (TokenStatus::Normal, 50, vec!["gpt-*".to_string()], Some(T0 + 1000), Some(9), None)
    );
    assert_eq!(t.ips.len(), 1);
    assert!(matches!(s.create_token(new_token(u.id, "h1", 1), T0).await, Err(StoreError::Conflict(_))));
    let by_hash = s.token_by_hash("h1").await.expect("read").expect("found");
    assert_eq!((by_hash.id, by_hash.key_hash.as_str()), (t.id, "h1"));
    assert_eq!(s.token_by_hash("nope").await.expect("read"), None);

    let t2 = s.create_token(new_token(u.id, "h2", 1), T0).await.expect("create");
    s.create_token(new_token(other.id, "h3", 1), T0).await.expect("create");
    let patch = TokenPatch {
        name: Some("renamed".into()),
        status: Some(TokenStatus::Deleted),
        expires_at: Some(None),
        daily_limit: Some(None),
        monthly_limit: Some(Some(77)),
        remaining_quota: Some(3),
        ..Default::default()
    };
    let p = s.update_token(t.id, patch).await.expect("patch");
    assert_eq!(
        (p.name.as_str(), p.status, p.expires_at, p.daily_limit, p.monthly_limit, p.remaining_quota),
        ("renamed", TokenStatus::Deleted, None, None, Some(77), 3)
    );
    let derived = TokenPatch { status: Some(TokenStatus::Expired), ..Default::default() };
    assert!(matches!(s.update_token(t2.id, derived).await, Err(StoreError::Conflict(_))), "derived states");
    assert!(matches!(s.update_token(999_999, TokenPatch::default()).await, Err(StoreError::NotFound(_))));

    let mine = TokenFilter { user_id: Some(u.id), include_deleted: false };
    let listed = s.tokens(mine.clone(), ALL).await.expect("list");
    assert_eq!((listed.total, listed.items[0].id), (1, t2.id), "deleted keys hidden");
    let with_deleted = s.tokens(TokenFilter { include_deleted: true, ..mine }, ALL).await.expect("list");
    assert_eq!(with_deleted.items.iter().map(|t| t.id).collect::<Vec<_>>(), [t.id, t2.id]);
    assert_eq!(s.tokens(TokenFilter::default(), ALL).await.expect("list").total, 2);
    let paged = s.tokens(TokenFilter { include_deleted: true, user_id: None }, Page { offset: 2, limit: 5 }).await;
    assert_eq!(paged.expect("list").items.len(), 1);
}

pub async fn channels<S: FullStore>(s: S) {
    let rev = s.revision().await.expect("rev");
    let a = s.create_channel(spec("a"), T0).await.expect("create");
    assert!(s.revision().await.expect("rev") > rev);
    assert_eq!((a.spec.clone(), a.status, a.source), (spec("a"), ChannelStatus::Enabled, Source::Api));
    assert!(matches!(s.create_channel(spec("a"), T0).await, Err(StoreError::Conflict(_))), "names are unique");
    let b = s.create_channel(spec("b"), T0).await.expect("create");
    assert_eq!(s.channels().await.expect("list").iter().map(|c| c.id).collect::<Vec<_>>(), [a.id, b.id]);

    let mut renamed = spec("a2");
    renamed.keys = vec!["k1".into(), "k2".into()];
    renamed.model_mapping.insert("alias".into(), "gpt-4o".into());
    let u = s.update_channel(a.id, renamed.clone(), T0 + 5).await.expect("update");
    assert_eq!((u.spec.clone(), u.updated_at), (renamed, T0 + 5));
    assert!(s.create_channel(spec("a"), T0).await.is_ok(), "the old name is free after a rename");
    assert!(matches!(s.update_channel(a.id, spec("b"), T0).await, Err(StoreError::Conflict(_))));

    s.set_channel_status(b.id, ChannelStatus::AutoDisabled, Some("3 failures".into()), T0 + 9).await.expect("status");
    let got = s.channel(b.id).await.expect("read").expect("found");
    assert_eq!(
        (got.status, got.status_reason.as_deref(), got.updated_at),
        (ChannelStatus::AutoDisabled, Some("3 failures"), T0 + 9)
    );
    assert!(matches!(
        s.set_channel_status(999_999, ChannelStatus::Enabled, None, T0).await,
        Err(StoreError::NotFound(_))
    ));

    s.delete_channel(b.id).await.expect("delete");
    assert_eq!(s.channel(b.id).await.expect("read"), None);
    assert!(matches!(s.delete_channel(b.id).await, Err(StoreError::NotFound(_))));
    assert!(s.create_channel(spec("b"), T0).await.is_ok(), "a deleted channel's name is free");
}

pub async fn config_sync<S: FullStore>(s: S) {
    let group = |name: &str, ratio_bp| Group { name: name.into(), ratio_bp, description: String::new() };
    let price = |model: &str, input| Price { model: model.into(), input_per_m: input, ..Default::default() };
    let snap = |channels: Vec<ChannelSpec>, groups: Vec<Group>, prices: Vec<Price>| ConfigSnapshot {
        groups,
        prices,
        channels,
    };
    s.sync_config(snap(vec![spec("a"), spec("b")], vec![group("vip", 8000)], vec![price("m1", 5)]), T0)
        .await
        .expect("sync");
    let api = s.create_channel(spec("c"), T0).await.expect("api channel");
    s.put_group(group("api-group", 10_000)).await.expect("group");
    let all = s.channels().await.expect("list");
    assert!(all.iter().filter(|c| c.spec.name != "c").all(|c| c.source == Source::Config));
    let a = all.iter().find(|c| c.spec.name == "a").expect("a");
    s.set_channel_status(a.id, ChannelStatus::AutoDisabled, Some("down".into()), T0 + 1).await.expect("status");

    let rev = s.revision().await.expect("rev");
    let versions = s.prices().await.expect("prices").len();
    s.sync_config(snap(vec![spec("a"), spec("b")], vec![group("vip", 8000)], vec![price("m1", 5)]), T0 + 2)
        .await
        .expect("sync");
    assert_eq!(s.revision().await.expect("rev"), rev, "an unchanged file changes nothing");
    assert_eq!(s.prices().await.expect("prices").len(), versions);

    let mut a2 = spec("a");
    a2.weight = 5;
    s.sync_config(snap(vec![a2], vec![group("vip", 9000)], vec![price("m2", 1)]), T0 + 3).await.expect("sync");
    let all = s.channels().await.expect("list");
    assert_eq!(all.iter().map(|c| c.spec.name.as_str()).collect::<Vec<_>>(), ["a", "c"]);
    assert_eq!((all[0].spec.weight, all[0].status), (5, ChannelStatus::AutoDisabled), "runtime status survives");
    assert!(matches!(s.update_channel(all[0].id, spec("a"), T0).await, Err(StoreError::Conflict(_))));
    assert!(matches!(s.delete_channel(all[0].id).await, Err(StoreError::Conflict(_))));
    assert!(s.update_channel(api.id, spec("c2"), T0).await.is_ok());
    let groups = s.groups().await.expect("groups");
    assert_eq!(groups, vec![group("api-group", 10_000), group("vip", 9000)], "sorted by name; api rows kept");
    let prices = s.prices().await.expect("prices");
    let m1: Vec<_> = prices.iter().filter(|p| p.model == "m1").collect();
    assert!(m1.last().expect("m1").retired, "a price the file dropped is retired");
    assert!(prices.iter().any(|p| p.model == "m2" && p.input_per_m == 1 && p.effective_at == T0 + 3));

    s.delete_group("vip").await.expect("delete");
    assert!(matches!(s.delete_group("vip").await, Err(StoreError::NotFound(_))));
}

pub async fn prices<S: FullStore>(s: S) {
    let p1 = s
        .put_price(Price { model: "gpt-4o".into(), input_per_m: 5, effective_at: T0 + 100, ..Default::default() })
        .await
        .expect("put");
    let p2 = s
        .put_price(Price { model: "gpt-4o".into(), input_per_m: 3, effective_at: T0, ..Default::default() })
        .await
        .expect("put");
    let p3 = s
        .put_price(Price {
            model: "gpt-*".into(),
            cached_input_per_m: Some(1),
            free: true,
            effective_at: T0,
            ..Default::default()
        })
        .await
        .expect("put");
    assert!(p2.version > p1.version && p3.version > p2.version);
    let all = s.prices().await.expect("prices");
    assert_eq!(all, vec![p2, p3, p1], "oldest effective first, then by version");
}

pub async fn reserve_and_settle<S: FullStore>(s: S) {
    let (u, t) = funded(&s, "payer", 1000, 500).await;
    assert_eq!(s.reserve(reservation("r1", t, u, 200)).await.expect("reserve"), Ok(()));
    assert_eq!(balances(&s, u, t).await, (800, 0, 300, 0));
    assert_eq!(s.reserve(reservation("r2", t, u, 400)).await.expect("reserve"), Err(Shortfall::TokenQuota));
    assert_eq!(balances(&s, u, t).await, (800, 0, 300, 0), "a refusal holds nothing");

    // Settle below the hold: the rest comes back.
    let rev = s.revision().await.expect("rev");
    let settled = s.record_usages(vec![record("r1", t, u, 150)]).await.expect("record");
    assert_eq!(s.revision().await.expect("rev"), rev, "spending without running out leaves caches valid");
    let after = settled[0].as_ref().expect("first write");
    assert_eq!(after.token.as_ref().map(|t| t.remaining_quota), Some(350));
    assert_eq!(after.user.as_ref().map(|u| u.quota), Some(850));
    assert_eq!(balances(&s, u, t).await, (850, 150, 350, 150));
    assert!(s.record_usages(vec![record("r1", t, u, 150)]).await.expect("again")[0].is_none(), "once only");
    assert_eq!(balances(&s, u, t).await, (850, 150, 350, 150));

    // Above the hold (the real answer was longer): the difference is charged.
    s.reserve(reservation("r3", t, u, 10)).await.expect("reserve").expect("held");
    s.record_usages(vec![record("r3", t, u, 30)]).await.expect("record");
    assert_eq!(balances(&s, u, t).await, (820, 180, 320, 180));

    // A failed request settles at zero: a full refund.
    s.reserve(reservation("r4", t, u, 100)).await.expect("reserve").expect("held");
    s.record_usages(vec![record("r4", t, u, 0)]).await.expect("record");
    assert_eq!(balances(&s, u, t).await, (820, 180, 320, 180));

    // No reservation at all (a free model's estimate, a crashed reserver): charged as recorded.
    s.record_usages(vec![record("r5", t, u, 20)]).await.expect("record");
    assert_eq!(balances(&s, u, t).await, (800, 200, 300, 200));

    let states: Vec<_> = s
        .reservations(None, ALL)
        .await
        .expect("list")
        .items
        .into_iter()
        .map(|r| (r.request_id, r.state, r.charged))
        .collect();
    assert_eq!(
        states,
        vec![
            ("r1".to_string(), "settled".to_string(), Some(150)),
            ("r3".into(), "settled".into(), Some(30)),
            ("r4".into(), "refunded".into(), Some(0)),
        ]
    );
    let rows = s.usage(UsageFilter::default(), ALL).await.expect("usage");
    assert_eq!(rows.total, 4);
    assert_eq!(s.reservations(Some("reserved".into()), ALL).await.expect("list").total, 0);
}

pub async fn reserve_shortfalls<S: FullStore>(s: S) {
    let (u, t) = funded(&s, "poor", 100, 1000).await;
    assert_eq!(s.reserve(reservation("a", t, u, 101)).await.expect("reserve"), Err(Shortfall::UserBalance));
    s.update_user(u, UserPatch { unlimited: Some(true), ..Default::default() }).await.expect("patch");
    assert_eq!(s.reserve(reservation("b", t, u, 500)).await.expect("reserve"), Ok(()));
    assert_eq!(balances(&s, u, t).await, (100, 0, 500, 0), "an unlimited user's balance is untouched");

    let caps = TokenPatch {
        daily_limit: Some(Some(600)),
        monthly_limit: Some(Some(700)),
        unlimited: Some(true),
        ..Default::default()
    };
    s.update_token(t, caps).await.expect("caps");
    assert_eq!(s.reserve(reservation("c", t, u, 101)).await.expect("reserve"), Err(Shortfall::DailyLimit));
    assert_eq!(s.reserve(reservation("d", t, u, 100)).await.expect("reserve"), Ok(()));
    assert_eq!(balances(&s, u, t).await, (100, 0, 500, 0), "an unlimited key's quota is untouched");
    let next_day = Reservation { created_at: T0 + 86_400_000, ..reservation("e", t, u, 101) };
    assert_eq!(s.reserve(next_day).await.expect("reserve"), Err(Shortfall::MonthlyLimit));
    let next_day = Reservation { created_at: T0 + 86_400_000, ..reservation("f", t, u, 100) };
    assert_eq!(s.reserve(next_day).await.expect("reserve"), Ok(()));
    // Refunds give the caps back.
    assert_eq!(s.sweep_reservations(T0 + 2 * 86_400_000, T0).await.expect("sweep"), 3);
    assert_eq!(s.reserve(reservation("g", t, u, 600)).await.expect("reserve"), Ok(()));
    assert!(matches!(s.reserve(reservation("h", t, 999_999, 1)).await, Err(StoreError::NotFound(_))));
    let (day, month) = spend_periods(T0);
    assert!(day.starts_with("d:2026-11-") && month == "m:2026-11");
}

pub async fn sweep_and_late_settle<S: FullStore>(s: S) {
    let (u, t) = funded(&s, "late", 1000, 1000).await;
    s.reserve(reservation("old", t, u, 300)).await.expect("reserve").expect("held");
    s.reserve(Reservation { created_at: T0 + 60_000, ..reservation("new", t, u, 100) })
        .await
        .expect("r")
        .expect("held");
    assert_eq!(balances(&s, u, t).await, (600, 0, 600, 0));
    assert_eq!(s.sweep_reservations(T0 + 1, T0 + 120_000).await.expect("sweep"), 1, "only the old one");
    assert_eq!(balances(&s, u, t).await, (900, 0, 900, 0));
    assert_eq!(s.sweep_reservations(T0 + 1, T0 + 120_000).await.expect("sweep"), 0, "once");
    let open = s.reservations(Some("reserved".into()), ALL).await.expect("list");
    assert_eq!(open.items.iter().map(|r| r.request_id.as_str()).collect::<Vec<_>>(), ["new"]);
    // The swept request finishes after all: charged afresh, once.
    s.record_usages(vec![record("old", t, u, 250), record("new", t, u, 50)]).await.expect("record");
    assert_eq!(balances(&s, u, t).await, (700, 300, 700, 300));
    assert!(s.record_usages(vec![record("old", t, u, 250)]).await.expect("again")[0].is_none());
    assert_eq!(balances(&s, u, t).await, (700, 300, 700, 300));
}

pub async fn concurrent_reserves<S: FullStore>(s: S) {
    let (u, t) = funded(&s, "race", 1000, 100_000).await;
    let attempts = (0..40).map(|i| s.reserve(reservation(&format!("c{i}"), t, u, 100)));
    let results = join_all(attempts).await;
    let held = results.iter().filter(|r| matches!(r, Ok(Ok(())))).count();
    let refused = results.iter().filter(|r| matches!(r, Ok(Err(Shortfall::UserBalance)))).count();
    assert_eq!((held, refused), (10, 30), "{results:?}");
    assert_eq!(balances(&s, u, t).await, (0, 0, 99_000, 0));
    // Every holder settles concurrently, twice each: each charge lands once.
    let ids: Vec<String> = (0..40).map(|i| format!("c{i}")).collect();
    let settles = ids.iter().chain(ids.iter()).map(|id| s.record_usages(vec![record(id, t, u, 60)]));
    let written = join_all(settles).await.into_iter().map(|r| r.expect("record")).filter(|v| v[0].is_some()).count();
    assert_eq!(written, 40);
    // 10 held 100 and settled 60 (+40 back each); 30 had no hold and were charged 60.
    assert_eq!(balances(&s, u, t).await, (1000 - 40 * 60, 40 * 60, 100_000 - 40 * 60, 40 * 60));
    assert_eq!(s.usage(UsageFilter::default(), ALL).await.expect("usage").total, 40);
}

pub async fn redemption<S: FullStore>(s: S) {
    let (u, _) = funded(&s, "redeemer", 0, 0).await;
    s.create_codes("b1", vec![("hash-a".into(), "AAAA…".into()), ("hash-b".into(), "BBBB…".into())], 500, None, T0)
        .await
        .expect("codes");
    s.create_codes("b2", vec![("hash-x".into(), "XXXX…".into())], 5, Some(T0 + 10), T0).await.expect("codes");
    let attempts = (0..10).map(|_| s.redeem("hash-a", u, "redeemer", T0 + 1));
    let results = join_all(attempts).await;
    let ok = results.iter().filter(|r| matches!(r, Ok(Ok(_)))).count();
    let used = results.iter().filter(|r| matches!(r, Ok(Err(RedeemError::AlreadyUsed)))).count();
    assert_eq!((ok, used), (1, 9), "{results:?}");
    assert_eq!(s.user(u).await.expect("read").expect("user").quota, 500);
    assert_eq!(s.redeem("nope", u, "r", T0).await.expect("redeem"), Err(RedeemError::Unknown));
    assert_eq!(s.redeem("hash-x", u, "r", T0 + 10).await.expect("redeem"), Err(RedeemError::Expired));
    let codes = s.codes(ALL).await.expect("codes");
    assert_eq!(codes.total, 3);
    assert_eq!(codes.items[0].batch, "b1");
    assert_eq!((codes.items[0].redeemed_by, codes.items[0].redeemed_at), (Some(u), Some(T0 + 1)));
    assert_eq!(codes.items[1].redeemed_by, None);
    let ledger = s.ledger(Some(u), ALL).await.expect("ledger");
    assert_eq!(ledger.items.len(), 1);
    assert_eq!(
        (ledger.items[0].kind.as_str(), ledger.items[0].delta, ledger.items[0].balance_after),
        ("redeem", 500, 500)
    );
    assert!(matches!(
        s.create_codes("b3", vec![("hash-a".into(), "A".into())], 1, None, T0).await,
        Err(StoreError::Conflict(_))
    ));
}

pub async fn balance_ledger<S: FullStore>(s: S) {
    let (u, _) = funded(&s, "ledgered", 10, 0).await;
    let (v, _) = funded(&s, "other", 0, 0).await;
    let after = s.adjust_balance(u, 90, "topup", "admin", "welcome", T0).await.expect("topup");
    assert_eq!(after.quota, 100);
    s.adjust_balance(u, -30, "adjust", "cli", "fix", T0 + 1).await.expect("adjust");
    s.adjust_balance(v, 5, "topup", "admin", "", T0 + 2).await.expect("topup");
    let adds = (0..10).map(|i| s.adjust_balance(u, 1, "topup", "admin", "", T0 + 10 + i));
    assert!(join_all(adds).await.iter().all(|r| r.is_ok()));
    assert_eq!(s.user(u).await.expect("read").expect("user").quota, 80);
    let mine = s.ledger(Some(u), Page { offset: 0, limit: 100 }).await.expect("ledger");
    assert_eq!(mine.total, 12);
    let last_two: Vec<_> =
        mine.items.iter().rev().take(2).map(|e| (e.delta, e.balance_after, e.kind.as_str())).collect();
    assert_eq!(last_two, vec![(90, 100, "topup"), (-30, 70, "adjust")], "newest first");
    let afters: BTreeSet<i64> = mine.items.iter().take(10).map(|e| e.balance_after).collect();
    assert_eq!(afters, (71..=80).collect(), "each concurrent top-up saw its own balance");
    assert_eq!(s.ledger(None, Page { offset: 0, limit: 1 }).await.expect("ledger").total, 13);
    assert!(matches!(s.adjust_balance(999_999, 1, "topup", "a", "", T0).await, Err(StoreError::NotFound(_))));
}

pub async fn alerts<S: FullStore>(s: S) {
    assert_eq!(s.alert_level("user:1").await.expect("level"), None);
    let alert = |t| Alert {
        id: 0,
        kind: "user".into(),
        subject_id: 1,
        name: "u".into(),
        threshold_percent: t,
        remaining: 5,
        total: 100,
        created_at: T0,
    };
    let stored = s.record_alerts("user:1", Some(10), vec![alert(10)]).await.expect("record");
    assert!(stored[0].id > 0);
    let stored2 = s.record_alerts("user:1", Some(5), vec![alert(5)]).await.expect("record");
    assert!(stored2[0].id > stored[0].id);
    assert_eq!(s.alert_level("user:1").await.expect("level"), Some(5));
    s.record_alerts("user:1", None, vec![]).await.expect("reset");
    assert_eq!(s.alert_level("user:1").await.expect("level"), None);
    let all = s.alerts(ALL).await.expect("alerts");
    assert_eq!((all.total, all.items[0].threshold_percent, all.items[1].threshold_percent), (2, 10, 5));
}

pub async fn usage_queries<S: FullStore>(s: S) {
    let (u1, t1) = funded(&s, "a", 1_000_000, 1_000_000).await;
    let (u2, t2) = funded(&s, "b", 1_000_000, 1_000_000).await;
    let hour = 3_600_000;
    let mut rows = Vec::new();
    for i in 0..30i64 {
        let (u, t) = if i % 3 == 0 { (u2, t2) } else { (u1, t1) };
        rows.push(UsageRecord {
            created_at: T0 + (i % 2) * hour + i,
            requested_model: if i % 5 == 0 { "m-b".into() } else { "m-a".into() },
            channel_id: (i % 4 != 0).then_some(7),
            status: if i % 10 == 9 { 502 } else { 200 },
            latency_ms: i + 1,
            prompt_tokens: 2,
            completion_tokens: 3,
            ..record(&format!("q{i:02}"), t, u, i)
        });
    }
    s.record_usages(rows.clone()).await.expect("record");
    let by_user = s
        .usage(UsageFilter { user_id: Some(u2), ..Default::default() }, Page { offset: 0, limit: 3 })
        .await
        .expect("usage");
    assert_eq!(by_user.total, 10);
    let ids: Vec<_> = by_user.items.iter().map(|r| r.request_id.as_str()).collect();
    assert_eq!(ids, ["q27", "q21", "q15"], "newest first");
    assert_eq!(by_user.items[0], rows[27]);
    let f = UsageFilter {
        token_id: Some(t1),
        model: Some("m-a".into()),
        status: Some(200),
        since: Some(T0 + hour),
        until: Some(T0 + hour + 100),
        ..Default::default()
    };
    let got = s.usage(f, ALL).await.expect("usage");
    let expect: Vec<_> = rows
        .iter()
        .filter(|r| r.token_id == t1 && r.requested_model == "m-a" && r.status == 200 && r.created_at >= T0 + hour)
        .map(|r| r.request_id.clone())
        .collect();
    assert_eq!(got.total as usize, expect.len());
    assert_eq!(s.usage(UsageFilter { channel_id: Some(7), ..Default::default() }, ALL).await.expect("usage").total, 22);

    let stats = s.usage_stats(UsageFilter::default(), Some(GroupBy::Model), Some(Interval::Hour)).await.expect("stats");
    let keys: Vec<_> = stats.iter().map(|r| (r.bucket.as_str(), r.key.as_str(), r.requests)).collect();
    assert_eq!(
        keys,
        vec![
            ("2026-11-24T10:00:00Z", "m-a", 12),
            ("2026-11-24T10:00:00Z", "m-b", 3),
            ("2026-11-24T11:00:00Z", "m-a", 12),
            ("2026-11-24T11:00:00Z", "m-b", 3)
        ]
    );
    let all = s.usage_stats(UsageFilter::default(), None, None).await.expect("stats");
    assert_eq!(all.len(), 1);
    let a = &all[0];
    assert_eq!((a.bucket.as_str(), a.key.as_str(), a.requests, a.successes, a.errors), ("all", "", 30, 27, 3));
    assert_eq!((a.prompt_tokens, a.completion_tokens, a.cost), (60, 90, (0..30).sum::<i64>()));
    assert_eq!((a.latency_p50, a.latency_p95, a.latency_p99), (15, 29, 30), "nearest rank");
    let by_channel =
        s.usage_stats(UsageFilter::default(), Some(GroupBy::Channel), Some(Interval::Day)).await.expect("stats");
    assert_eq!(
        by_channel.iter().map(|r| (r.bucket.as_str(), r.key.as_str(), r.requests)).collect::<Vec<_>>(),
        vec![("2026-11-24", "", 8), ("2026-11-24", "7", 22)]
    );
    let by_user =
        s.usage_stats(UsageFilter::default(), Some(GroupBy::User), Some(Interval::Month)).await.expect("stats");
    assert_eq!(by_user.iter().map(|r| r.requests).sum::<i64>(), 30);
    assert_eq!(by_user.len(), 2);
    assert_eq!(by_user.iter().find(|r| r.key == u1.to_string()).map(|r| r.requests), Some(20));

    // Keyset pages walk every row once, oldest first.
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = s.usage_page(UsageFilter::default(), after.clone(), 7).await.expect("page");
        if page.is_empty() {
            break;
        }
        after = page.last().map(|r| (r.created_at, r.request_id.clone()));
        seen.extend(page.into_iter().map(|r| r.request_id));
    }
    let mut expect: Vec<_> = rows.iter().map(|r| (r.created_at, r.request_id.clone())).collect();
    expect.sort();
    assert_eq!(seen, expect.into_iter().map(|(_, id)| id).collect::<Vec<_>>());
}

/// Expands to one `#[tokio::test]` per case; `$fresh` is an async expression
/// yielding a new, empty store.
#[macro_export]
macro_rules! store_conformance {
    ($fresh:expr) => {
        $crate::store_conformance!(@cases $fresh; users tokens channels config_sync prices reserve_and_settle
            reserve_shortfalls sweep_and_late_settle concurrent_reserves redemption balance_ledger alerts usage_queries
            accounts sessions tickets identities signing_keys audit_log account_roles);
    };
    (@cases $fresh:expr; $($case:ident)*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $case() {
                $crate::conformance::$case($fresh).await;
            }
        )*
    };
}
