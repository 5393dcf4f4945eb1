#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test
//! `UpstashHot` against an Upstash-REST server over a real redis-server
//! (`tests/edge/upstash.mjs`, started by `.ci/run`), checked against
//! `RedisHot` on that same Redis: the two adapters must agree key for key.
//!
//! `OBLIVIOUS_TEST_UPSTASH` / `OBLIVIOUS_TEST_UPSTASH_TOKEN` name the server
//! (default: `.ci/run`'s, 127.0.0.1:8079); `OBLIVIOUS_TEST_REDIS` the Redis under it.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use bytes::Bytes;
use oblivious_native::HttpUpstream;
use oblivious_ports::Hot;
use oblivious_redis::RedisHot;
use oblivious_upstash::{Rest, Script, UpstashHot};
use serde_json::{json, Value};

fn upstash_url() -> String {
    std::env::var("OBLIVIOUS_TEST_UPSTASH").unwrap_or_else(|_| "http://127.0.0.1:8079".into())
}

fn upstash_token() -> String {
    std::env::var("OBLIVIOUS_TEST_UPSTASH_TOKEN").unwrap_or_else(|_| "oblivious-test-token".into())
}

fn redis_url() -> String {
    std::env::var("OBLIVIOUS_TEST_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6390/".into())
}

static SEQ: AtomicU32 = AtomicU32::new(0);

/// The flush test holds it for writing, every other test for reading: a
/// `SCRIPT FLUSH` landing between another test's `SCRIPT LOAD` and its
/// `EVALSHA` would fail that test (the TCP adapter retries only once).
static SCRIPTS: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

/// A key prefix no other test (or run) uses.
fn prefix() -> String {
    format!("upstash-test-{}-{}:", std::process::id(), SEQ.fetch_add(1, Ordering::SeqCst))
}

fn hot(prefix: &str) -> UpstashHot<HttpUpstream> {
    UpstashHot::new(HttpUpstream::new().unwrap(), upstash_url(), upstash_token(), prefix)
}

fn rest() -> Rest<HttpUpstream> {
    Rest::new(HttpUpstream::new().unwrap(), upstash_url(), &upstash_token())
}

async fn pttl(key: &str) -> i64 {
    rest().command(&["PTTL", key]).await.unwrap().as_i64().unwrap()
}

#[tokio::test]
async fn counters_and_expiry() {
    let _scripts = SCRIPTS.read().await;
    let p = prefix();
    let h = hot(&p);
    assert_eq!(h.get("a").await.unwrap(), None);
    assert_eq!(h.incr("a", 1, None).await.unwrap(), 1);
    assert_eq!(h.incr("a", 2, None).await.unwrap(), 3);
    assert_eq!(h.incr("a", -5, None).await.unwrap(), -2);
    assert_eq!(h.get("a").await.unwrap(), Some(-2));
    assert_eq!(pttl(&format!("{p}a")).await, -1, "no TTL asked, none set");
    assert_eq!(h.incr("a", 1, Some(Duration::from_secs(60))).await.unwrap(), -1);
    assert_eq!(pttl(&format!("{p}a")).await, -1, "the TTL applies only when the key is created");
    h.del("a").await.unwrap();
    assert_eq!(h.get("a").await.unwrap(), None);
    h.del("a").await.unwrap();

    h.set("b", 7, Some(Duration::from_millis(200))).await.unwrap();
    assert_eq!(h.get("b").await.unwrap(), Some(7));
    h.set("forever", i64::MAX, None).await.unwrap();
    assert_eq!(h.get("forever").await.unwrap(), Some(i64::MAX));
    assert_eq!(pttl(&format!("{p}forever")).await, -1);

    assert_eq!(h.incr("c", 5, Some(Duration::from_millis(200))).await.unwrap(), 5);
    assert_eq!(h.incr("c", 5, Some(Duration::from_secs(60))).await.unwrap(), 10);
    let left = pttl(&format!("{p}c")).await;
    assert!((1..=200).contains(&left), "the first TTL stands: {left} ms left");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(h.get("b").await.unwrap(), None);
    assert_eq!(h.get("c").await.unwrap(), None);
    assert_eq!(h.incr("c", 1, None).await.unwrap(), 1, "an expired counter restarts");
    assert_eq!(h.get("forever").await.unwrap(), Some(i64::MAX));
}

#[tokio::test]
async fn any_bytes_round_trip_and_expire() {
    let _scripts = SCRIPTS.read().await;
    let h = hot(&prefix());
    let every_byte: Vec<u8> = (0..=255u8).rev().chain(0..=255).collect();
    assert!(std::str::from_utf8(&every_byte).is_err());
    for value in [every_byte.clone(), vec![0xff, 0xfe, 0x00, 0x80], vec![0], vec![], b"plain text".to_vec()] {
        h.set_bytes("v", Bytes::from(value.clone()), None).await.unwrap();
        assert_eq!(h.get_bytes("v").await.unwrap().as_deref(), Some(&value[..]));
    }
    let big: Vec<u8> = (0..100_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect();
    h.set_bytes("big", Bytes::from(big.clone()), None).await.unwrap();
    assert_eq!(h.get_bytes("big").await.unwrap().as_deref(), Some(&big[..]));
    assert_eq!(h.get_bytes("missing").await.unwrap(), None);
    h.del("v").await.unwrap();
    assert_eq!(h.get_bytes("v").await.unwrap(), None);

    h.set_bytes("brief", Bytes::from_static(b"\xc3\x28gone"), Some(Duration::from_millis(150))).await.unwrap();
    assert_eq!(h.get_bytes("brief").await.unwrap().as_deref(), Some(&b"\xc3\x28gone"[..]));
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert_eq!(h.get_bytes("brief").await.unwrap(), None);
}

/// Both adapters on one Redis, one prefix: each reads what the other wrote.
#[tokio::test]
async fn shares_keys_with_the_tcp_adapter() {
    let _scripts = SCRIPTS.read().await;
    let p = prefix();
    let up = hot(&p);
    let tcp = RedisHot::connect(&redis_url(), &p).await.unwrap();
    let odd = Bytes::from_static(b"\x00\xff\x80 not utf-8 \xc3\x28");
    up.set_bytes("from-rest", odd.clone(), None).await.unwrap();
    assert_eq!(tcp.get_bytes("from-rest").await.unwrap(), Some(odd.clone()), "stored raw, not encoded");
    tcp.set_bytes("from-tcp", odd.clone(), None).await.unwrap();
    assert_eq!(up.get_bytes("from-tcp").await.unwrap(), Some(odd));
    up.incr("n", 4, Some(Duration::from_secs(60))).await.unwrap();
    assert_eq!(tcp.incr("n", 1, None).await.unwrap(), 5);
    assert_eq!(up.get("n").await.unwrap(), Some(5));
    for _ in 0..2 {
        assert!(up.window_hit("w", 60_000, 3, 1, 1_000).await.unwrap().allowed);
    }
    assert_eq!(tcp.window_hit("w", 60_000, 3, 1, 1_000).await.unwrap().count, 3);
    assert!(!up.window_hit("w", 60_000, 3, 1, 1_000).await.unwrap().allowed, "one window for both");
    assert_eq!(tcp.acquire("slot", 2, Duration::from_secs(60)).await.unwrap(), Some(1));
    assert_eq!(up.acquire("slot", 2, Duration::from_secs(60)).await.unwrap(), Some(2));
    assert_eq!(tcp.acquire("slot", 2, Duration::from_secs(60)).await.unwrap(), None);
}

/// The same calls give the same answers on both adapters.
#[tokio::test]
async fn windows_and_slots_match_the_tcp_adapter() {
    let _scripts = SCRIPTS.read().await;
    let up = hot(&prefix());
    let tcp = RedisHot::connect(&redis_url(), &prefix()).await.unwrap();
    let window = 60_000;
    // Window 0 at 10 s (ends at 10), then window 1 at 90 s, where half of window 0's 10 still counts.
    let calls = [
        (5, 10_000),
        (3, 10_000),
        (3, 10_000),
        (-2, 10_000),
        (4, 10_000),
        (2, 90_000),
        (4, 90_000),
        (1, 90_000),
        (2, 90_000),
    ];
    for (cost, now) in calls {
        let a = up.window_hit("w", window, 10, cost, now).await.unwrap();
        let b = tcp.window_hit("w", window, 10, cost, now).await.unwrap();
        assert_eq!(a, b, "cost {cost} at {now} ms");
    }
    let a = up.window_hit("w", window, 10, 1, 90_000).await.unwrap();
    assert_eq!((a.allowed, a.count, a.reset_ms), (false, 10, 30_000));

    let ttl = Duration::from_millis(200);
    for expect in [Some(1), Some(2), None, None] {
        assert_eq!(up.acquire("s", 2, ttl).await.unwrap(), expect);
        assert_eq!(tcp.acquire("s", 2, ttl).await.unwrap(), expect);
    }
    assert_eq!(up.incr("s", -1, None).await.unwrap(), 1, "a release");
    assert_eq!(up.acquire("s", 2, ttl).await.unwrap(), Some(2));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(up.acquire("s", 2, ttl).await.unwrap(), Some(1), "a crashed holder's slots expire");
}

/// Used by this test only, so no other test can load it between the flush and the checks.
const FLUSH_PROBE: &str = "return {KEYS[1], ARGV[1], 'flush probe'}";

#[tokio::test]
async fn evalsha_falls_back_to_eval_after_script_flush() {
    let _scripts = SCRIPTS.write().await;
    let rest = rest();
    let probe = Script::new(FLUSH_PROBE);
    rest.command(&["SCRIPT", "FLUSH"]).await.unwrap();
    assert_eq!(rest.command(&["SCRIPT", "EXISTS", probe.sha()]).await.unwrap(), json!([0]));
    let v = rest.eval(&probe, &["k"], &["a".into()]).await.unwrap();
    assert_eq!(v, json!(["k", "a", "flush probe"]), "EVALSHA said NOSCRIPT; EVAL ran it");
    assert_eq!(rest.command(&["SCRIPT", "EXISTS", probe.sha()]).await.unwrap(), json!([1]), "and cached it");
    assert_eq!(rest.eval(&probe, &["k2"], &["b".into()]).await.unwrap(), json!(["k2", "b", "flush probe"]));

    // Every script of the adapter survives a flush.
    let h = hot(&prefix());
    rest.command(&["SCRIPT", "FLUSH"]).await.unwrap();
    assert!(h.window_hit("w", 1_000, 5, 1, 0).await.unwrap().allowed);
    rest.command(&["SCRIPT", "FLUSH"]).await.unwrap();
    let hit = h.window_hit("w", 1_000, 5, 1, 0).await.unwrap();
    assert_eq!((hit.allowed, hit.count), (true, 2));
    rest.command(&["SCRIPT", "FLUSH"]).await.unwrap();
    h.set_bytes("b", Bytes::from_static(b"\xfe"), None).await.unwrap();
    rest.command(&["SCRIPT", "FLUSH"]).await.unwrap();
    assert_eq!(h.get_bytes("b").await.unwrap().as_deref(), Some(&b"\xfe"[..]));
    rest.command(&["SCRIPT", "FLUSH"]).await.unwrap();
    assert_eq!(h.acquire("a", 1, Duration::from_secs(5)).await.unwrap(), Some(1));
    rest.command(&["SCRIPT", "FLUSH"]).await.unwrap();
    assert_eq!(h.incr("i", 2, Some(Duration::from_secs(5))).await.unwrap(), 2);
}

#[tokio::test]
async fn errors_are_port_errors_without_the_token() {
    let _scripts = SCRIPTS.read().await;
    let secret = "not-the-token-s3cr3t";
    let h = UpstashHot::new(HttpUpstream::new().unwrap(), upstash_url(), secret, prefix());
    let e = h.ping().await.unwrap_err();
    assert!(e.0.contains("401") && e.0.contains("token was refused"), "{e}");
    hot(&prefix()).ping().await.unwrap();
    let e = h.get("k").await.unwrap_err();
    assert!(e.0.contains("401") && e.0.contains("token was refused"), "{e}");
    assert!(!e.0.contains(secret), "{e}");
    let e = h.window_hit("w", 1_000, 5, 1, 0).await.unwrap_err();
    assert!(e.0.contains("401") && !e.0.contains(secret), "{e}");

    // A command error names the command and what the server said.
    let p = prefix();
    rest().command(&["HSET", &format!("{p}hash"), "f", "v"]).await.unwrap();
    rest().command(&["SET", &format!("{p}word"), "abc"]).await.unwrap();
    let h = hot(&p);
    let e = h.get("hash").await.unwrap_err();
    assert!(e.0.starts_with("upstash: GET: ") && e.0.contains("WRONGTYPE"), "{e}");
    let e = h.get("word").await.unwrap_err();
    assert!(e.0.contains("expected an integer"), "{e}");
    let e = h.incr("word", 1, None).await.unwrap_err();
    assert!(e.0.contains("INCRBY") && e.0.contains("not an integer"), "{e}");
    let e = h.get_bytes("hash").await.unwrap_err();
    assert!(e.0.contains("WRONGTYPE"), "{e}");

    // Nobody listening: a connection error, still a PortError.
    let gone = UpstashHot::new(HttpUpstream::new().unwrap(), "http://127.0.0.1:9", upstash_token(), "x:");
    let e = gone.get("k").await.unwrap_err();
    assert!(e.0.starts_with("upstash: could not connect"), "{e}");
    assert!(!e.0.contains(&upstash_token()), "{e}");
    let bad_header = UpstashHot::new(HttpUpstream::new().unwrap(), upstash_url(), "line\nbreak", "x:");
    let e = bad_header.get("k").await.unwrap_err();
    assert!(e.0.contains("not a valid header value") && !e.0.contains("break"), "{e}");
}

#[tokio::test]
async fn pipeline_answers_each_command() {
    let _scripts = SCRIPTS.read().await;
    let p = prefix();
    let rest = rest();
    let k = format!("{p}k");
    let replies = rest
        .pipeline(&[vec!["SET", &k, "v"], vec!["GET", &k], vec!["HGET", &k, "f"], vec!["INCR", &format!("{p}n")]])
        .await
        .unwrap();
    assert_eq!(replies[0], Ok(Value::from("OK")));
    assert_eq!(replies[1], Ok(Value::from("v")));
    assert!(replies[2].as_ref().unwrap_err().contains("WRONGTYPE"), "{:?}", replies[2]);
    assert_eq!(replies[3], Ok(Value::from(1)));
}
