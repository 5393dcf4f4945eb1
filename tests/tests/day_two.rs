#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test
//! Day two: `oblivious backup` under load restores to a database whose
//! balances equal its usage log (open reservations refunded by the sweeper),
//! `oblivious secret rotate` keeps every channel relaying with no restart,
//! and `restore`/`backup` refuse what they must with one clear line.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use oblivious_e2e::gateway::{binary, config, temp_dir};
use oblivious_e2e::mock::StreamShape;
use oblivious_e2e::{Gateway, Mock};
use reqwest::Method;
use serde_json::{json, Value};

/// "m-*" models cost 1000 units a token (input and output).
const PRICED: &str = "[relay]\nretry_base_ms = 5\nretry_max_ms = 20\n\n[prices.\"m-*\"]\ninput = 1000\noutput = 1000\n";

/// Runs the CLI on `data` with `env`; (ok, stdout, stderr).
fn cli_on(data: &Path, args: &[&str], env: &[(&str, &str)]) -> (bool, String, String) {
    let mut c = Command::new(binary());
    c.args(args).arg("--data").arg(data).env("OBLIVIOUS_LOG", "warn");
    for (k, v) in env {
        c.env(k, v);
    }
    let out = c.output().expect("run cli");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The CLI failed with one `error: …` line containing `want`.
fn assert_refused(result: (bool, String, String), want: &str) {
    let (ok, out, err) = result;
    assert!(!ok, "should have failed: {out} {err}");
    let errors: Vec<&str> = err.lines().filter(|l| l.starts_with("error: ")).collect();
    assert_eq!(errors.len(), 1, "one error line: {err:?}");
    assert_eq!(err.trim_end().lines().last(), Some(errors[0]), "the error is the last line: {err:?}");
    assert!(errors[0].contains(want), "{:?} should say {want:?}", errors[0]);
}

fn chat(model: &str, stream: bool) -> Value {
    json!({ "model": model, "stream": stream, "max_tokens": 4, "messages": [{ "role": "user", "content": "hi there" }] })
}

/// One request; true when it answered 200 with a whole body (a stream up to `[DONE]`).
async fn ask(http: &reqwest::Client, url: &str, key: &str, model: &str, stream: bool) -> Result<(), String> {
    let resp = http
        .post(format!("{url}/v1/chat/completions"))
        .bearer_auth(key)
        .json(&chat(model, stream))
        .send()
        .await
        .map_err(|e| format!("{model}: {e}"))?;
    let status = resp.status().as_u16();
    let body = resp.text().await.map_err(|e| format!("{model}: body: {e}"))?;
    if status != 200 {
        return Err(format!("{model}: {status} {body}"));
    }
    if stream && !body.contains("data: [DONE]") {
        return Err(format!("{model}: the stream did not end: {body}"));
    }
    if !stream && serde_json::from_str::<Value>(&body).map_or(true, |v| v["choices"][0].is_null()) {
        return Err(format!("{model}: not an answer: {body}"));
    }
    Ok(())
}

/// Requests in a loop (cycling through `models`, streamed and not) until
/// `stop`; worker `w` starts `w × stagger` late.
fn load(
    gw: &Gateway,
    key: &str,
    models: Vec<String>,
    workers: usize,
    stagger: Duration,
    stop: &Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<(usize, Vec<String>)>> {
    (0..workers)
        .map(|w| {
            let (http, url, key, models, stop) =
                (gw.http.clone(), gw.url.clone(), key.to_string(), models.clone(), stop.clone());
            tokio::spawn(async move {
                let (mut done, mut failed) = (0, Vec::new());
                let mut i = w;
                tokio::time::sleep(stagger * w as u32).await;
                while !stop.load(Ordering::SeqCst) {
                    let model = &models[i % models.len()];
                    if let Err(e) = ask(&http, &url, &key, model, (i / models.len()) % 2 == 1).await {
                        failed.push(e);
                    }
                    done += 1;
                    i += 1;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                (done, failed)
            })
        })
        .collect()
}

async fn finish(handles: Vec<tokio::task::JoinHandle<(usize, Vec<String>)>>) -> (usize, Vec<String>) {
    let mut total = (0, Vec::new());
    for h in handles {
        let (n, f) = h.await.unwrap();
        total.0 += n;
        total.1.extend(f);
    }
    total
}

/// Every page of an admin listing.
async fn all_pages(gw: &Gateway, path: &str) -> Vec<Value> {
    let mut out = Vec::new();
    for page in 1.. {
        let sep = if path.contains('?') { '&' } else { '?' };
        let (status, v) = gw.admin(Method::GET, &format!("{path}{sep}per_page=500&page={page}"), None).await;
        assert_eq!(status, 200, "{path}: {v}");
        let data = v["data"].as_array().unwrap().clone();
        let n = data.len();
        out.extend(data);
        if n < 500 {
            break;
        }
    }
    out
}

/// Per user: balance, Σ cost of their usage rows, their usage rows, Σ amount
/// of their open reservations, and how many.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
struct Books {
    balance: i64,
    charged: i64,
    rows: usize,
    held: i64,
    open: usize,
}

async fn books(gw: &Gateway) -> BTreeMap<i64, Books> {
    let mut out = BTreeMap::new();
    for u in all_pages(gw, "/api/admin/users").await {
        let uid = u["id"].as_i64().unwrap();
        let rows = all_pages(gw, &format!("/api/admin/usage?user_id={uid}")).await;
        let b = Books {
            balance: u["quota"].as_i64().unwrap(),
            charged: rows.iter().map(|r| r["cost"].as_i64().unwrap()).sum(),
            rows: rows.len(),
            ..Books::default()
        };
        out.insert(uid, b);
    }
    for r in all_pages(gw, "/api/admin/reservations?state=reserved").await {
        let b = out.get_mut(&r["user_id"].as_i64().unwrap()).expect("a reservation's user exists");
        b.held += r["amount"].as_i64().unwrap();
        b.open += 1;
    }
    out
}

/// [`books`] once two readings in a row agree (nothing is settling any more).
async fn steady_books(gw: &Gateway) -> BTreeMap<i64, Books> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last = books(gw).await;
    loop {
        tokio::time::sleep(Duration::from_millis(400)).await;
        let now = books(gw).await;
        if now == last {
            return now;
        }
        assert!(Instant::now() < deadline, "the books never settled");
        last = now;
    }
}

/// Waits until no reservation is open.
async fn no_open_reservations(gw: &Gateway) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, open) = gw.admin(Method::GET, "/api/admin/reservations?state=reserved", None).await;
        if open["total"] == 0 {
            return;
        }
        assert!(Instant::now() < deadline, "reservations left open: {open}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The ledger rule, user by user: what they started with, less every usage
/// row's cost, less what open reservations still hold, is their balance.
fn assert_books_balance(start: &BTreeMap<i64, i64>, books: &BTreeMap<i64, Books>, when: &str) {
    assert_eq!(start.keys().collect::<Vec<_>>(), books.keys().collect::<Vec<_>>(), "{when}: the same users");
    for (uid, b) in books {
        assert_eq!(
            b.balance,
            start[uid] - b.charged - b.held,
            "{when}: user {uid}: {b:?}, started with {}",
            start[uid]
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_backup_taken_under_load_restores_to_balances_that_match_the_usage_log() {
    let (ok, slow) = (Mock::start("ok").await, Mock::start("slow").await);
    slow.set_stream(StreamShape {
        pieces: (0..12).map(|i| format!("s{i} ")).collect(),
        interval: Duration::from_millis(100),
        ..Default::default()
    });
    let cfg = config(
        &[("ok", &ok.base_url(), "models = [\"m-ok\"]"), ("slow", &slow.base_url(), "models = [\"m-slow\"]")],
        PRICED,
    );
    let gw = Gateway::start(&cfg);
    let mut keys = Vec::new();
    for (name, quota) in [("alice", 40_000_000), ("bob", 30_000_000), ("carol", 20_000_000)] {
        let (status, u) =
            gw.admin(Method::POST, "/api/admin/users", Some(json!({ "name": name, "quota": quota }))).await;
        assert_eq!(status, 201, "{u}");
        keys.push(gw.key(&["--user", name]));
    }
    let start: BTreeMap<i64, i64> = all_pages(&gw, "/api/admin/users")
        .await
        .iter()
        .map(|u| (u["id"].as_i64().unwrap(), u["quota"].as_i64().unwrap()))
        .collect();
    assert_eq!(start.len(), 4, "the admin and three users");

    let stop = Arc::new(AtomicBool::new(false));
    let models: Vec<String> = ["m-ok", "m-ok", "m-slow", "m-ok", "m-ok", "m-ok"].map(String::from).to_vec();
    let handles: Vec<_> = keys
        .iter()
        .enumerate()
        .flat_map(|(w, k)| load(&gw, k, models.clone(), 6, Duration::from_millis(70 + 23 * w as u64), &stop))
        .collect();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let backup_dir = temp_dir("backup").join("b1");
    let (data, to) = (gw.data_dir(), backup_dir.clone());
    let taken =
        tokio::task::spawn_blocking(move || cli_on(&data, &["backup", to.to_str().unwrap()], &[])).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    stop.store(true, Ordering::SeqCst);
    let (requests, failed) = finish(handles).await;
    assert!(taken.0, "backup failed: {}", taken.2);
    assert!(taken.1.contains(&format!("wrote {}", backup_dir.join("oblivious.db").display())), "{}", taken.1);
    assert!(taken.1.contains("bytes") && taken.1.contains("secret.key"), "{}", taken.1);
    assert!(failed.is_empty(), "{} of {requests} failed: {:?}", failed.len(), &failed[..failed.len().min(5)]);

    // The live gateway's own books balance once everything settled.
    no_open_reservations(&gw).await;
    let live = steady_books(&gw).await;
    assert_books_balance(&start, &live, "live");
    let live_rows: usize = live.values().map(|b| b.rows).sum();

    // Restore into another data directory (over the database its first start
    // made, which is kept aside) and start a gateway on it. The sweeper waits
    // its default 15 minutes: the books are read as the backup holds them.
    let mut restored = Gateway::start(&cfg);
    restored.crash();
    let (ok_restore, out, err) = restored.cli(&["restore", backup_dir.to_str().unwrap()]);
    assert!(ok_restore, "restore failed: {err}");
    assert!(out.contains("restored") && out.contains("oblivious.db.pre-restore"), "{out}");
    assert!(restored.data_dir().join("oblivious.db.pre-restore").exists());
    assert!(restored.data_dir().join("secret.key.pre-restore").exists());
    restored.admin_key = gw.admin_key.clone();
    restored.restart();
    let at_backup = steady_books(&restored).await;
    assert_books_balance(&start, &at_backup, "restored");
    let rows: usize = at_backup.values().map(|b| b.rows).sum();
    let open: usize = at_backup.values().map(|b| b.open).sum();
    assert!(rows > 0 && rows < live_rows, "a snapshot from the middle of the load: {rows} of {live_rows} rows");
    assert!(open > 0, "the backup caught requests in flight (slow streams): {at_backup:?}");
    assert!(out.contains("in flight"), "restore says what the open reservations mean: {out}");
    println!("{requests} requests; the backup holds {rows} of {live_rows} usage rows and {open} open reservations");
    let caught: Vec<Value> = all_pages(&restored, "/api/admin/reservations?state=reserved").await;

    // Those requests died with the backup's moment: the sweeper refunds them,
    // and then balance = start − Σ cost exactly.
    std::fs::write(
        &restored.config,
        format!("{cfg}\n[billing]\nreservation_timeout_seconds = 1\nsweep_interval_seconds = 1\n"),
    )
    .unwrap();
    restored.restart();
    no_open_reservations(&restored).await;
    let swept = steady_books(&restored).await;
    assert_books_balance(&start, &swept, "after the sweep");
    for (uid, b) in &swept {
        let before = &at_backup[uid];
        assert_eq!((b.rows, b.charged, b.open), (before.rows, before.charged, 0), "user {uid}: only refunds moved");
        assert_eq!(b.balance, before.balance + before.held, "user {uid}: every held unit came back");
    }
    let all = all_pages(&restored, "/api/admin/reservations").await;
    for c in &caught {
        let now = all.iter().find(|r| r["request_id"] == c["request_id"]).unwrap();
        assert_eq!((now["state"].as_str(), now["charged"].as_i64()), (Some("refunded"), Some(0)), "{now}");
    }
    // A request on the restored gateway is billed as usual.
    let bob = &keys[1];
    ask(&restored.http, &restored.url, bob, "m-ok", false).await.unwrap();
    no_open_reservations(&restored).await;
    let after = steady_books(&restored).await;
    assert_books_balance(&start, &after, "after a new request");
    let _ = std::fs::remove_dir_all(backup_dir.parent().unwrap());
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn channel_body(name: &str, url: &str) -> Value {
    json!({ "name": name, "type": "openai", "base_url": url, "keys": [format!("sk-{name}")], "models": [format!("m-{name}")] })
}

#[tokio::test(flavor = "multi_thread")]
async fn rotating_the_secret_keeps_every_channel_relaying() {
    let names = ["a", "b", "c", "d", "e", "f"];
    let mut mocks = BTreeMap::new();
    for n in names {
        mocks.insert(n, Mock::start(n).await);
    }
    // a, b, c from the config file; d, e, f through the admin API (d before
    // the rotation, e between it and --finish, f after).
    let declared: Vec<(String, String, String)> = ["a", "b", "c"]
        .iter()
        .map(|n| (n.to_string(), mocks[n].base_url(), format!("keys = [\"sk-{n}\"]\nmodels = [\"m-{n}\"]")))
        .collect();
    let declared: Vec<(&str, &str, &str)> =
        declared.iter().map(|(a, b, c)| (a.as_str(), b.as_str(), c.as_str())).collect();
    let mut gw = Gateway::start(&config(&declared, ""));
    let (s, v) = gw.admin(Method::POST, "/api/admin/channels", Some(channel_body("d", &mocks["d"].base_url()))).await;
    assert_eq!(s, 201, "{v}");
    gw.settle().await;
    let key = gw.key(&[]);
    let secret = gw.data_dir().join("secret.key");
    let old = std::fs::read(&secret).unwrap();
    assert_eq!(old.len(), 32);
    let (ok, _, err) = cli_on(&gw.data_dir(), &["channel", "list"], &[("OBLIVIOUS_SECRET_KEY", &b64(&old))]);
    assert!(ok, "the old secret opens the channels before the rotation: {err}");

    let mut models: Vec<String> = ["a", "b", "c", "d"].iter().map(|n| format!("m-{n}")).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let handles = load(&gw, &key, models.clone(), 8, Duration::ZERO, &stop);
    tokio::time::sleep(Duration::from_millis(700)).await;
    let data = gw.data_dir();
    let rotated = tokio::task::spawn_blocking(move || cli_on(&data, &["secret", "rotate"], &[])).await.unwrap();
    assert!(rotated.0, "rotate failed: {}", rotated.2);
    assert!(rotated.1.contains("sealed the keys of 4 channels"), "{}", rotated.1);
    let ring = std::fs::read(&secret).unwrap();
    assert_eq!(ring.len(), 64, "the keyring is [new, old]");
    assert_eq!(&ring[32..], &old[..]);
    let new = ring[..32].to_vec();
    assert_ne!(new, old);
    tokio::time::sleep(Duration::from_millis(1200)).await;

    // The running gateway seals what it writes now under the new key, and
    // its reloads (this new channel) open the re-sealed values.
    let (s, v) = gw.admin(Method::POST, "/api/admin/channels", Some(channel_body("e", &mocks["e"].base_url()))).await;
    assert_eq!(s, 201, "{v}");
    gw.settle().await;
    ask(&gw.http, &gw.url, &key, "m-e", false).await.unwrap();

    let data = gw.data_dir();
    let finished =
        tokio::task::spawn_blocking(move || cli_on(&data, &["secret", "rotate", "--finish"], &[])).await.unwrap();
    assert!(finished.0, "rotate --finish failed: {}", finished.2);
    assert!(finished.1.contains("dropped 1 old key"), "{}", finished.1);
    assert_eq!(std::fs::read(&secret).unwrap(), new, "the keyring is [new]");
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let (s, v) = gw.admin(Method::POST, "/api/admin/channels", Some(channel_body("f", &mocks["f"].base_url()))).await;
    assert_eq!(s, 201, "{v}");
    gw.settle().await;
    stop.store(true, Ordering::SeqCst);
    let (requests, failed) = finish(handles).await;
    assert!(requests > 100, "load ran all along: {requests}");
    println!("{requests} requests through rotate and --finish, none failed");
    assert!(failed.is_empty(), "{} of {requests} failed: {:?}", failed.len(), &failed[..failed.len().min(5)]);

    models.extend(["m-e".to_string(), "m-f".to_string()]);
    for m in &models {
        for stream in [false, true] {
            ask(&gw.http, &gw.url, &key, m, stream).await.unwrap();
        }
    }
    // A restarted gateway reads every channel, the ones it sealed itself included.
    gw.restart();
    for m in &models {
        for stream in [false, true] {
            ask(&gw.http, &gw.url, &key, m, stream).await.unwrap();
        }
    }
    // Each upstream only ever saw its own key: nothing decrypted wrong.
    for (n, mock) in &mocks {
        let seen = mock.calls_by_key();
        assert_eq!(seen.keys().collect::<Vec<_>>(), vec![&format!("Bearer sk-{n}")], "{n}: {seen:?}");
    }

    let (ok, _, err) = cli_on(&gw.data_dir(), &["channel", "list"], &[("OBLIVIOUS_SECRET_KEY", &b64(&old))]);
    assert!(!ok && err.contains("cannot decrypt"), "the old secret opens nothing stored: {err}");
    let (ok, out, err) =
        cli_on(&gw.data_dir(), &["channel", "list", "--json"], &[("OBLIVIOUS_SECRET_KEY", &b64(&new))]);
    assert!(ok, "{err}");
    assert_eq!(serde_json::from_str::<Value>(&out).unwrap().as_array().unwrap().len(), 6);
    for file in ["oblivious.db", "oblivious.db-wal"] {
        let bytes = std::fs::read(gw.data_dir().join(file)).unwrap_or_default();
        assert!(!bytes.windows(6).any(|w| w == b"\"sk-a\""), "no channel key in the clear in {file}");
    }

    // With nothing to finish, --finish says so; a secret from the environment cannot be rotated.
    let (ok, out, _) = cli_on(&gw.data_dir(), &["secret", "rotate", "--finish"], &[]);
    assert!(ok && out.contains("no rotation to finish"), "{out}");
    assert_refused(
        cli_on(&gw.data_dir(), &["secret", "rotate"], &[("OBLIVIOUS_SECRET_KEY", &b64(&new))]),
        "OBLIVIOUS_SECRET_KEY",
    );
}

/// A copy of backup directory `from` at `to`.
fn copy_backup(from: &Path, to: &Path) -> PathBuf {
    std::fs::create_dir_all(to).unwrap();
    for f in ["oblivious.db", "secret.key"] {
        std::fs::copy(from.join(f), to.join(f)).unwrap();
    }
    to.to_path_buf()
}

#[tokio::test(flavor = "multi_thread")]
async fn restore_refuses_bad_backups_and_backup_refuses_to_overwrite() {
    let mock = Mock::start("x").await;
    let gw = Gateway::start(&config(&[("x", &mock.base_url(), "keys = [\"sk-x\"]\nmodels = [\"m-x\"]")], ""));
    let key = gw.key(&[]);
    let root = temp_dir("bad-backups");
    let good = root.join("good");
    let (ok, out, err) = gw.cli(&["backup", good.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert!(out.contains("wrote") && out.contains("bytes"), "{out}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: PathBuf| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(good.clone()), 0o700);
        assert_eq!(mode(good.join("oblivious.db")), 0o600);
        assert_eq!(mode(good.join("secret.key")), 0o600);
    }
    let before = std::fs::read(good.join("oblivious.db")).unwrap();
    assert_refused(gw.cli(&["backup", good.to_str().unwrap()]), "already holds a backup; pass --force");
    assert_eq!(std::fs::read(good.join("oblivious.db")).unwrap(), before, "left as it was");
    std::fs::write(root.join("a-file"), "x").unwrap();
    assert_refused(gw.cli(&["backup", root.join("a-file").to_str().unwrap()]), "not a directory");
    assert_refused(gw.cli(&["backup", root.to_str().unwrap()]), "is not empty");
    let (ok, _, err) = gw.cli(&["backup", "--force", good.to_str().unwrap()]);
    assert!(ok, "--force replaces it: {err}");
    assert_refused(
        cli_on(&root.join("nowhere"), &["backup", root.join("b").to_str().unwrap()], &[]),
        "there is no database",
    );

    // Never under a running gateway.
    assert_refused(gw.cli(&["restore", good.to_str().unwrap()]), "open in another process");

    let target = root.join("target");
    let restore = |from: &Path| cli_on(&target, &["restore", from.to_str().unwrap()], &[]);
    assert_refused(restore(&root.join("missing")), "not a backup directory");
    std::fs::create_dir_all(root.join("empty-dir")).unwrap();
    assert_refused(restore(&root.join("empty-dir")), "holds no oblivious.db");

    let junk = copy_backup(&good, &root.join("junk"));
    std::fs::write(junk.join("oblivious.db"), (0..20_000u32).map(|i| (i * 7919 % 251) as u8).collect::<Vec<_>>())
        .unwrap();
    assert_refused(restore(&junk), "is not a SQLite database");

    let damaged = copy_backup(&good, &root.join("damaged"));
    let mut bytes = std::fs::read(damaged.join("oblivious.db")).unwrap();
    bytes[4096..].fill(0xA5);
    std::fs::write(damaged.join("oblivious.db"), bytes).unwrap();
    let (ok, _, err) = restore(&damaged);
    assert!(!ok && (err.contains("damaged") || err.contains("integrity check")), "{err}");
    assert_refused(restore(&damaged), "not restoring");

    let unknown = copy_backup(&good, &root.join("unknown"));
    std::fs::write(unknown.join("oblivious.db"), b"").unwrap();
    assert_refused(restore(&unknown), "not an Oblivious database");

    let keyless = copy_backup(&good, &root.join("keyless"));
    std::fs::remove_file(keyless.join("secret.key")).unwrap();
    assert_refused(restore(&keyless), "holds no secret.key");

    let wrong = copy_backup(&good, &root.join("wrong-key"));
    std::fs::write(wrong.join("secret.key"), [42u8; 32]).unwrap();
    assert_refused(restore(&wrong), "channel `x`");
    std::fs::write(wrong.join("secret.key"), [42u8; 33]).unwrap();
    assert_refused(restore(&wrong), "32-byte keys");
    assert!(!target.join("oblivious.db").exists(), "nothing was restored by a refusal");

    // The good one restores, and again over the first (kept aside).
    let (ok, out, err) = restore(&good);
    assert!(ok && out.contains("restored"), "{out} {err}");
    let (ok, out, err) = restore(&good);
    assert!(ok && out.contains("oblivious.db.pre-restore"), "{out} {err}");
    let (ok, out, err) = restore(&good);
    assert!(ok && out.contains("oblivious.db.pre-restore.1"), "{out} {err}");
    let (ok, out, err) = cli_on(&target, &["channel", "list"], &[]);
    assert!(ok && out.contains("x"), "the restored channel opens: {out} {err}");
    let (ok, out, _) = cli_on(&target, &["token", "list"], &[]);
    assert!(ok && out.contains(&key[..7]), "{out}");
    let _ = std::fs::remove_dir_all(&root);
}
