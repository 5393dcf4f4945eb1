#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test
//! The relay's caches shared through hot state, on the emulated AWS stack
//! (DynamoDB and SQS on moto, Redis): a cold start builds its snapshot and
//! resolves keys from Redis at the store's revision instead of reading the
//! tables; a revoked key is refused at once all the same; Redis holds nothing
//! in clear text; garbage in Redis, or Redis gone, falls back to the store.

use std::io::{BufRead, BufReader, Write};
use std::time::Duration;

use oblivious_aws::Service;
use oblivious_core::apikey;
use oblivious_e2e::aws;
use oblivious_e2e::Mock;
use oblivious_ports::{Hot, Page, Sealer, Store, TokenFilter};
use serde_json::json;
use tokio::sync::watch;

/// "m-free" is free (no reservation, so a request reads no balance); other "m-*" models are priced.
fn config(mock: &Mock) -> String {
    format!(
        "[relay]\nretry_base_ms = 5\nretry_max_ms = 20\n\n[prices.\"m-*\"]\ninput = 1000\noutput = 1000\n\n\
         [prices.\"m-free\"]\nfree = true\n\n[[channels]]\nname = \"up\"\ntype = \"openai\"\nbase_url = \"{}\"\n\
         keys = [\"sk-up-channel-secret\"]\nmodels = [\"m-*\"]\n",
        mock.base_url()
    )
}

const CHANNEL_KEY: &str = "sk-up-channel-secret";

fn chat(model: &str) -> String {
    json!({ "model": model, "max_tokens": 5, "messages": [{ "role": "user", "content": "hi" }] }).to_string()
}

/// One chat request through a cold start's relay app.
async fn ask(init: &oblivious_lambda::Init, key: &str, model: &str) -> aws::Answer {
    let auth = format!("Bearer {key}");
    let headers = [("authorization", auth.as_str()), ("content-type", "application/json")];
    let app = oblivious_lambda::http::relay_app(init);
    aws::invoke(&app, &aws::function_url_event("POST", "/v1/chat/completions", &headers, &chat(model))).await
}

async fn delete_item(st: &aws::Stack, table: &str, id: i64) {
    let body = json!({ "TableName": format!("{}{table}", st.prefix), "Key": { "id": { "N": id.to_string() } } });
    st.aws.call(Service::DynamoDb, "DeleteItem", &body).await.unwrap();
}

async fn token_id(st: &aws::Stack, uid: i64) -> i64 {
    let filter = TokenFilter { user_id: Some(uid), ..Default::default() };
    st.store.tokens(filter, Page { offset: 0, limit: 10 }).await.unwrap().items[0].id
}

/// Waits out the Lambda shell's revision check interval (1 s).
async fn past_refresh_interval() {
    tokio::time::sleep(Duration::from_millis(1100)).await;
}

/// The host:port of the test Redis.
fn redis_addr() -> String {
    let url = oblivious_e2e::gateway::redis_url();
    let rest = url.trim_start_matches("redis://");
    rest.split('/').next().unwrap().to_string()
}

/// A RESP reply, as much of it as these tests read.
#[derive(Debug)]
enum Resp {
    Bytes(Option<Vec<u8>>),
    Array(Vec<Resp>),
    Other,
}

fn read_resp(r: &mut impl BufRead) -> Resp {
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    let (kind, rest) = line.trim_end().split_at(1);
    match kind {
        "$" => {
            let n: i64 = rest.parse().unwrap();
            if n < 0 {
                return Resp::Bytes(None);
            }
            let mut buf = vec![0; n as usize + 2];
            r.read_exact(&mut buf).unwrap();
            buf.truncate(n as usize);
            Resp::Bytes(Some(buf))
        }
        "*" => Resp::Array((0..rest.parse::<i64>().unwrap().max(0)).map(|_| read_resp(r)).collect()),
        _ => Resp::Other,
    }
}

/// Every string value under `prefix` in the test Redis (what `redis-cli --scan` and `GET` would show).
fn redis_values(prefix: &str) -> Vec<(String, Vec<u8>)> {
    let mut conn = std::net::TcpStream::connect(redis_addr()).unwrap();
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut command = |args: &[&[u8]]| {
        let mut out = format!("*{}\r\n", args.len()).into_bytes();
        for a in args {
            out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
            out.extend_from_slice(a);
            out.extend_from_slice(b"\r\n");
        }
        conn.write_all(&out).unwrap();
        read_resp(&mut reader)
    };
    let Resp::Array(keys) = command(&[b"KEYS", format!("{prefix}*").as_bytes()]) else { panic!("KEYS") };
    let mut values = Vec::new();
    for k in keys {
        let Resp::Bytes(Some(k)) = k else { continue };
        if let Resp::Bytes(Some(v)) = command(&[b"GET", &k]) {
            values.push((String::from_utf8_lossy(&k).into_owned(), v));
        }
    }
    values
}

fn sealed(bytes: &[u8]) -> bool {
    bytes.starts_with(b"enc:v1:")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cold_start_serves_from_redis_what_another_instance_read_from_the_tables() {
    let mock = Mock::start("up").await;
    let st = aws::stack(&config(&mock)).await;
    let (uid, key) = aws::customer(&st, 1_000_000).await;
    let rev = st.store.revision().await.unwrap();

    // The first cold start reads the tables and fills Redis.
    let first = aws::cold_start(&st.settings).await;
    let a = ask(&first, &key, "m-free").await;
    assert_eq!(a.status, 200, "{}", a.text());
    let hot = &st.init.relay.ports.hot;
    let hash = apikey::hash(&key);
    let snapshot_entry = hot.get_bytes(&format!("snapshot:{rev}")).await.unwrap().expect("the snapshot is shared");
    let principal_entry = hot.get_bytes(&format!("principal:{rev}:{hash}")).await.unwrap().expect("the key is shared");
    assert!(sealed(&snapshot_entry) && sealed(&principal_entry));

    // The tables lose the channel, the key and its owner behind the revision's back.
    let channels = st.store.channels().await.unwrap();
    assert_eq!(channels.len(), 1);
    delete_item(&st, "channels", channels[0].id).await;
    delete_item(&st, "tokens", token_id(&st, uid).await).await;
    delete_item(&st, "users", uid).await;
    assert!(st.store.channels().await.unwrap().is_empty());
    assert!(st.store.token_by_hash(&hash).await.unwrap().is_none());
    assert_eq!(st.store.revision().await.unwrap(), rev, "nothing told the caches");

    // A second cold start still routes the same key and model: from Redis, at the same revision.
    let second = aws::cold_start(&st.settings).await;
    assert_eq!(second.relay.snapshot().revision, rev);
    assert_eq!(second.relay.snapshot().channels.len(), 1, "the snapshot came from Redis");
    let b = ask(&second, &key, "m-free").await;
    assert_eq!(b.status, 200, "{}", b.text());
    assert_eq!(b.json()["object"], "chat.completion");
    let by_key = mock.calls_by_key();
    assert_eq!(
        by_key.get(&format!("Bearer {CHANNEL_KEY}")),
        Some(&2),
        "the channel key opened from Redis works upstream"
    );

    // An unknown key is shared too (as unknown), and refused.
    let c = ask(&second, "sk-nobody-has-this-key-0000000000", "m-free").await;
    assert_eq!(c.status, 401, "{}", c.text());
    let negative = format!("principal:{rev}:{}", apikey::hash("sk-nobody-has-this-key-0000000000"));
    assert!(hot.get_bytes(&negative).await.unwrap().is_some_and(|v| sealed(&v)));

    // Nothing under this stack's prefix holds the channel key or the customer's key in clear text
    // (both have a `-`, which base64 does not: no false alarm), and every cache entry is sealed.
    let values = redis_values(&st.settings.hot_prefix);
    assert!(values.len() >= 3, "{values:?}");
    for (k, v) in &values {
        let text = String::from_utf8_lossy(v);
        for secret in [CHANNEL_KEY, key.as_str()] {
            assert!(!text.contains(secret), "{k} holds {secret} in clear text");
        }
        if k.contains("snapshot:") || k.contains("principal:") {
            assert!(sealed(v), "{k} is not sealed");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_revoked_key_is_refused_at_once_by_an_instance_that_had_it_cached() {
    let mock = Mock::start("up").await;
    let st = aws::stack(&config(&mock)).await;
    let (uid, key) = aws::customer(&st, 1_000_000).await;
    let rev = st.store.revision().await.unwrap();
    let warm = aws::cold_start(&st.settings).await;
    assert_eq!(ask(&warm, &key, "m-1").await.status, 200, "priced: the reservation reads the balances");
    assert_eq!(ask(&warm, &key, "m-free").await.status, 200, "served from the instance's own cache");

    let root = aws::admin_key(&st).await;
    let path = format!("/api/admin/tokens/{}", token_id(&st, uid).await);
    let (status, body) = aws::admin(&st, &root, "PATCH", &path, json!({ "status": "disabled" })).await;
    assert_eq!(status, 200, "{body}");
    assert!(st.store.revision().await.unwrap() > rev, "the change bumped the revision");
    let stale = st.init.relay.ports.hot.get_bytes(&format!("principal:{rev}:{}", apikey::hash(&key))).await;
    assert!(stale.unwrap().is_some(), "Redis still holds the key as it was, under the old revision");

    // A new instance refuses it straight away; the warm one as soon as it checks the revision.
    let cold = aws::cold_start(&st.settings).await;
    let refused = ask(&cold, &key, "m-free").await;
    assert_eq!((refused.status, refused.json()["error"]["code"].as_str()), (403, Some("token_disabled")));
    past_refresh_interval().await;
    let refused = ask(&warm, &key, "m-free").await;
    assert_eq!((refused.status, refused.json()["error"]["code"].as_str()), (403, Some("token_disabled")));
    assert_eq!(mock.calls(), 2, "no refused request reached the upstream");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn garbage_in_redis_falls_back_to_the_store_and_is_replaced() {
    let mock = Mock::start("up").await;
    let st = aws::stack(&config(&mock)).await;
    let (_, key) = aws::customer(&st, 1_000_000).await;
    let rev = st.store.revision().await.unwrap();
    let hot = &st.init.relay.ports.hot;
    let snapshot_key = format!("snapshot:{rev}");
    let principal_key = format!("principal:{rev}:{}", apikey::hash(&key));
    // Bytes that are no sealed value, and a value sealed under another deployment's secret.
    hot.set_bytes(&snapshot_key, bytes::Bytes::from_static(b"\x00\xffnot a snapshot"), None).await.unwrap();
    let foreign = Sealer::new(&[1; 32]).seal(&json!({ "key": principal_key, "value": null }).to_string());
    hot.set_bytes(&principal_key, foreign.clone().into(), None).await.unwrap();

    let cold = aws::cold_start(&st.settings).await;
    assert_eq!(cold.relay.snapshot().channels.len(), 1, "the snapshot came from the store");
    let a = ask(&cold, &key, "m-1").await;
    assert_eq!(a.status, 200, "{}", a.text());
    let snapshot = hot.get_bytes(&snapshot_key).await.unwrap().unwrap();
    let principal = hot.get_bytes(&principal_key).await.unwrap().unwrap();
    assert!(sealed(&snapshot) && !snapshot.ends_with(b"not a snapshot"), "replaced by a good entry");
    assert!(sealed(&principal) && principal != foreign.as_bytes(), "replaced by a good entry");

    // Plain JSON in the right shape is not trusted either: values must be sealed.
    let plain = json!({ "key": principal_key, "value": null }).to_string();
    hot.set_bytes(&principal_key, plain.into(), None).await.unwrap();
    let again = aws::cold_start(&st.settings).await;
    assert_eq!(ask(&again, &key, "m-1").await.status, 200, "not taken for an unknown key");
}

/// A TCP proxy to the test Redis that can be cut: open connections are
/// dropped and new ones closed at once, as when Redis goes away.
struct Proxy {
    port: u16,
    cut: watch::Sender<bool>,
}

async fn proxy() -> Proxy {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (cut, watching) = watch::channel(false);
    let target = redis_addr();
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            if *watching.borrow() {
                continue; // dropped: closed at once
            }
            let mut cut = watching.clone();
            let target = target.clone();
            tokio::spawn(async move {
                let Ok(mut server) = tokio::net::TcpStream::connect(&target).await else { return };
                tokio::select! {
                    _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                    _ = cut.wait_for(|c| *c) => {}
                }
            });
        }
    });
    Proxy { port, cut }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_redis_gone_requests_are_served_from_the_store() {
    let mock = Mock::start("up").await;
    let st = aws::stack(&config(&mock)).await;
    let (uid, key) = aws::customer(&st, 1_000_000).await;
    let link = proxy().await;
    let settings = oblivious_lambda::Settings {
        redis_url: Some(format!("redis://127.0.0.1:{}/", link.port)),
        ..st.settings.clone()
    };
    let cold = aws::cold_start(&settings).await;
    link.cut.send(true).unwrap();

    // A key this instance never saw: Redis cannot say, the store does.
    let a = ask(&cold, &key, "m-1").await;
    assert_eq!(a.status, 200, "{}", a.text());

    // A change moves the revision: the snapshot and the key are read again, from the store.
    let root = aws::admin_key(&st).await;
    let path = format!("/api/admin/tokens/{}", token_id(&st, uid).await);
    let (status, body) = aws::admin(&st, &root, "PATCH", &path, json!({ "models": ["m-other"] })).await;
    assert_eq!(status, 200, "{body}");
    past_refresh_interval().await;
    let refused = ask(&cold, &key, "m-1").await;
    assert_eq!(refused.status, 403, "the new allowlist applies: {}", refused.text());
    assert_eq!(cold.relay.snapshot().revision, st.store.revision().await.unwrap(), "the snapshot was reloaded");
    let allowed = ask(&cold, &key, "m-other").await;
    assert_eq!(allowed.status, 200, "{}", allowed.text());
    assert_eq!(mock.calls(), 2, "the refused request never reached the upstream");
}
