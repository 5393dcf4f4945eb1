#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test
//! Accounts over real HTTP: sign-up with mail through a real SMTP sink,
//! verification, sign-in, refresh rotation and replay, two-factor with codes
//! and recovery codes, cookies and CSRF, lockout, password reset, the role
//! table for sessions and keys, and the audit rows each step leaves.

use oblivious_core::auth::totp;
use oblivious_e2e::gateway::{config, note_secret};
use oblivious_e2e::{mail, Gateway, Mock};
use reqwest::Method;
use serde_json::{json, Value};

const PASSWORD: &str = "violet-harbor-42";

fn auth_config(extra: &str) -> String {
    format!(
        "[mail]\nsmtp_url = \"{}\"\nfrom = \"Oblivious <no-reply@example.test>\"\n\n\
         [auth]\nbase_url = \"http://app.example.test\"\nstarting_balance = 2000000\nlockout_threshold = 3\n{extra}\n",
        mail::smtp_url()
    )
}

async fn start(extra: &str) -> (Mock, Gateway) {
    let mock = Mock::start("a").await;
    let models = "models = [\"gpt-4o-mini\"]";
    let gw = Gateway::start(&config(&[("a", &mock.base_url(), models)], &auth_config(extra)));
    (mock, gw)
}

async fn call(gw: &Gateway, method: Method, path: &str, bearer: Option<&str>, body: Option<Value>) -> (u16, Value) {
    let mut req = gw.http.request(method, format!("{}{path}", gw.url));
    if let Some(b) = bearer {
        req = req.bearer_auth(b);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    assert!(resp.headers().contains_key("x-request-id"), "{path}: every answer has a request id");
    let text = resp.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or_else(|_| panic!("{path}: not JSON: {text}")))
}

fn code(v: &Value) -> &str {
    v["error"]["code"].as_str().unwrap_or("")
}

/// The token in the one link of a mail.
fn link_token(text: &str) -> String {
    let at = text.find("token=").expect("a link with a token") + "token=".len();
    text[at..].split_whitespace().next().unwrap().to_string()
}

/// Signs up (tokens in the body) and returns the answer.
async fn sign_up(gw: &Gateway, email: &str) -> Value {
    let body = json!({ "email": email, "password": PASSWORD, "display_name": "Ada", "delivery": "body" });
    let (status, v) = call(gw, Method::POST, "/api/auth/signup", None, Some(body)).await;
    assert_eq!(status, 201, "{v}");
    note_secret(v["access_token"].as_str().unwrap());
    note_secret(v["refresh_token"].as_str().unwrap());
    v
}

async fn sign_in(gw: &Gateway, email: &str, password: &str) -> (u16, Value) {
    let body = json!({ "email": email, "password": password, "delivery": "body" });
    call(gw, Method::POST, "/api/auth/signin", None, Some(body)).await
}

async fn actions(gw: &Gateway, access: &str) -> Vec<String> {
    let (status, v) = call(gw, Method::GET, "/api/me/audit?limit=200", Some(access), None).await;
    assert_eq!(status, 200, "{v}");
    v["data"].as_array().unwrap().iter().map(|r| r["action"].as_str().unwrap().to_string()).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn sign_up_verify_sign_in_refresh_and_a_replay_revokes_the_session() {
    let (_mock, gw) = start("").await;
    let email = mail::address("ada");
    let up = sign_up(&gw, &email).await;
    assert_eq!(up["user"]["quota"], 2_000_000, "the starting balance: {up}");
    assert_eq!(up["verification_sent"], true);
    assert_eq!(up["token_type"], "Bearer");

    // The mail arrives at the SMTP sink; its link verifies the address once.
    let m = mail::wait_for(&email).await;
    assert_eq!(m.subject, "Verify your email address");
    assert!(m.from.contains("no-reply@example.test"), "{}", m.from);
    assert!(m.text.contains("http://app.example.test/verify-email?token="), "{}", m.text);
    let token = link_token(&m.text);
    let access = up["access_token"].as_str().unwrap();
    let (_, me) = call(&gw, Method::GET, "/api/me", Some(access), None).await;
    assert_eq!(me["account"]["email_verified"], false);
    assert_eq!(me["account"]["email"], email.to_lowercase());
    assert!(me["account"].get("password_hash").is_none(), "no hash is shown: {me}");
    let (status, v) = call(&gw, Method::POST, "/api/auth/verify", None, Some(json!({ "token": token }))).await;
    assert_eq!((status, v["verified"].clone()), (200, json!(true)), "{v}");
    let (status, v) = call(&gw, Method::POST, "/api/auth/verify", None, Some(json!({ "token": token }))).await;
    assert_eq!((status, code(&v)), (400, "invalid_token"), "single use");
    let (_, me) = call(&gw, Method::GET, "/api/me", Some(access), None).await;
    assert_eq!(me["account"]["email_verified"], true);

    // Sign-in: the email in any case.
    let (status, signed) = sign_in(&gw, &email.to_uppercase(), PASSWORD).await;
    assert_eq!(status, 200, "{signed}");
    let first_refresh = signed["refresh_token"].as_str().unwrap().to_string();
    let (status, rotated) =
        call(&gw, Method::POST, "/api/auth/refresh", None, Some(json!({ "refresh_token": first_refresh }))).await;
    assert_eq!(status, 200, "{rotated}");
    let second_refresh = rotated["refresh_token"].as_str().unwrap().to_string();
    assert_ne!(second_refresh, first_refresh, "rotated on every use");
    let new_access = rotated["access_token"].as_str().unwrap().to_string();
    assert_eq!(call(&gw, Method::GET, "/api/me", Some(&new_access), None).await.0, 200);

    // Replaying the first token ends the whole session: the newer token and its access token too.
    let (status, v) =
        call(&gw, Method::POST, "/api/auth/refresh", None, Some(json!({ "refresh_token": first_refresh }))).await;
    assert_eq!((status, code(&v)), (401, "refresh_token_reused"), "{v}");
    let (status, v) =
        call(&gw, Method::POST, "/api/auth/refresh", None, Some(json!({ "refresh_token": second_refresh }))).await;
    assert_eq!((status, code(&v)), (401, "invalid_refresh_token"), "the family is revoked: {v}");
    let (status, v) = call(&gw, Method::GET, "/api/me", Some(&new_access), None).await;
    assert_eq!((status, code(&v)), (401, "session_expired"), "revocation is immediate: {v}");
    // The sign-up session is untouched.
    assert_eq!(call(&gw, Method::GET, "/api/me", Some(access), None).await.0, 200);

    // Sessions: listed, one revoked, then sign-out everywhere.
    let (_, list) = call(&gw, Method::GET, "/api/me/sessions", Some(access), None).await;
    let sessions = list["data"].as_array().unwrap();
    assert_eq!(sessions.len(), 1, "the replayed one is gone: {list}");
    assert_eq!(sessions[0]["current"], true);
    let (status, v) = call(&gw, Method::DELETE, "/api/me/sessions/ses_nope", Some(access), None).await;
    assert_eq!((status, code(&v)), (404, "not_found"));
    let (status, _) =
        call(&gw, Method::POST, "/api/auth/signout", Some(access), Some(json!({ "everywhere": true }))).await;
    assert_eq!(status, 200);
    assert_eq!(call(&gw, Method::GET, "/api/me", Some(access), None).await.0, 401);

    let (_, again) = sign_in(&gw, &email, PASSWORD).await;
    let got = actions(&gw, again["access_token"].as_str().unwrap()).await;
    for want in ["sign_up", "email_verified", "sign_in", "refresh_reuse", "sign_out_everywhere"] {
        assert!(got.iter().any(|a| a == want), "audit has {want}: {got:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn two_factor_with_a_code_and_with_a_recovery_code() {
    let (_mock, gw) = start("").await;
    let email = mail::address("totp");
    let up = sign_up(&gw, &email).await;
    let access = up["access_token"].as_str().unwrap();
    let (status, enrol) = call(&gw, Method::POST, "/api/me/2fa/enrol", Some(access), None).await;
    assert_eq!(status, 200, "{enrol}");
    let secret = enrol["secret"].as_str().unwrap().to_string();
    assert!(enrol["otpauth_uri"].as_str().unwrap().starts_with("otpauth://totp/Oblivious:"), "{enrol}");
    let now = || std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    let (status, v) =
        call(&gw, Method::POST, "/api/me/2fa/confirm", Some(access), Some(json!({ "code": "000000" }))).await;
    assert_eq!((status, code(&v)), (400, "invalid_code"));
    let first = totp::code_at(&secret, now()).unwrap();
    let (status, confirmed) =
        call(&gw, Method::POST, "/api/me/2fa/confirm", Some(access), Some(json!({ "code": first }))).await;
    assert_eq!(status, 200, "{confirmed}");
    let recovery: Vec<String> =
        confirmed["recovery_codes"].as_array().unwrap().iter().map(|c| c.as_str().unwrap().to_string()).collect();
    assert_eq!(recovery.len(), 10);

    // The password alone is not enough now.
    let (status, step) = sign_in(&gw, &email, PASSWORD).await;
    assert_eq!(status, 200);
    assert_eq!(step["second_factor_required"], true, "{step}");
    assert!(step.get("access_token").is_none());
    let ticket = step["ticket"].as_str().unwrap().to_string();
    // A wrong code costs an attempt, not the sign-in.
    let (status, v) = call(
        &gw,
        Method::POST,
        "/api/auth/signin/second-factor",
        None,
        Some(json!({ "ticket": ticket, "code": "123456" })),
    )
    .await;
    assert_eq!((status, code(&v)), (401, "invalid_code"), "{v}");
    // The code just used to confirm is spent: codes are single use.
    let (status, v) = call(
        &gw,
        Method::POST,
        "/api/auth/signin/second-factor",
        None,
        Some(json!({ "ticket": ticket, "code": first })),
    )
    .await;
    assert_eq!((status, code(&v)), (401, "invalid_code"), "a replayed code: {v}");
    let (status, v) = call(
        &gw,
        Method::POST,
        "/api/auth/signin/second-factor",
        None,
        Some(json!({ "ticket": ticket, "recovery_code": recovery[0].to_uppercase() })),
    )
    .await;
    assert_eq!(status, 200, "a recovery code (any case): {v}");
    let access2 = v["access_token"].as_str().unwrap().to_string();
    let (_, status2fa) = call(&gw, Method::GET, "/api/me/2fa", Some(&access2), None).await;
    assert_eq!((status2fa["enabled"].clone(), status2fa["recovery_codes_left"].clone()), (json!(true), json!(9)));

    // The same recovery code is refused next time; a fresh TOTP code works.
    let (_, step) = sign_in(&gw, &email, PASSWORD).await;
    let ticket = step["ticket"].as_str().unwrap().to_string();
    let (status, v) = call(
        &gw,
        Method::POST,
        "/api/auth/signin/second-factor",
        None,
        Some(json!({ "ticket": ticket, "recovery_code": recovery[0] })),
    )
    .await;
    assert_eq!((status, code(&v)), (401, "invalid_code"));
    // Wait for the next 30-second step, so the code differs from the one used to confirm.
    let step_now = now() / 30;
    while now() / 30 == step_now {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let fresh = totp::code_at(&secret, now()).unwrap();
    let (status, v) = call(
        &gw,
        Method::POST,
        "/api/auth/signin/second-factor",
        None,
        Some(json!({ "ticket": ticket, "code": fresh })),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    let got = actions(&gw, v["access_token"].as_str().unwrap()).await;
    for want in ["2fa_enabled", "recovery_code_used", "second_factor_failed", "sign_in"] {
        assert!(got.iter().any(|a| a == want), "audit has {want}: {got:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_key_made_with_a_session_works_with_the_openai_sdk_and_cannot_manage_the_account() {
    let (_mock, gw) = start("").await;
    let up = sign_up(&gw, &mail::address("dev")).await;
    let access = up["access_token"].as_str().unwrap();
    let (status, made) =
        call(&gw, Method::POST, "/api/me/keys", Some(access), Some(json!({ "name": "laptop", "quota": 500000 }))).await;
    assert_eq!(status, 201, "{made}");
    let key = made["key"].as_str().unwrap().to_string();
    note_secret(&key);
    let (status, v) =
        call(&gw, Method::POST, "/api/me/keys", Some(access), Some(json!({ "name": "x", "user_id": 1 }))).await;
    assert_eq!((status, code(&v)), (400, "invalid_user"), "no keys for others");

    let python = std::env::var("OBLIVIOUS_PYTHON")
        .unwrap_or_else(|_| oblivious_e2e::gateway::repo_root().join(".venv/bin/python").display().to_string());
    let script = oblivious_e2e::gateway::repo_root().join("tests/sdk/openai_user_key.py");
    let url = format!("{}/v1", gw.url);
    let k = key.clone();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(&python).arg(&script).arg(&url).arg(&k).output()
    })
    .await
    .unwrap()
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("models ok"),
        "the SDK chats with the user's key:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The key reads the balance and usage, but not the account's security.
    let (status, account) = call(&gw, Method::GET, "/api/account", Some(&key), None).await;
    assert_eq!(status, 200, "{account}");
    assert_eq!(call(&gw, Method::GET, "/api/usage", Some(&key), None).await.0, 200);
    for (method, path) in [(Method::GET, "/api/me"), (Method::GET, "/api/me/keys"), (Method::POST, "/api/me/2fa/enrol")]
    {
        let (status, v) = call(&gw, method, path, Some(&key), None).await;
        assert_eq!((status, code(&v)), (403, "session_required"), "{path}: {v}");
    }
    // The session sees its usage and its key; the key was spent from the one balance.
    let (_, keys) = call(&gw, Method::GET, "/api/me/keys", Some(access), None).await;
    assert_eq!(keys["data"].as_array().unwrap().len(), 1, "{keys}");
    let (_, usage) = call(&gw, Method::GET, "/api/usage", Some(access), None).await;
    assert!(
        usage["total"].as_u64().unwrap() >= 1 || usage["data"].as_array().is_some_and(|d| !d.is_empty()),
        "{usage}"
    );
    let (status, v) = call(&gw, Method::DELETE, &format!("/api/me/keys/{}", made["id"]), Some(access), None).await;
    assert_eq!(status, 200, "{v}");
    let (_, log) = call(&gw, Method::GET, "/api/admin/audit?action=key_create", Some(&gw.admin_key), None).await;
    assert!(!log["data"].as_array().unwrap().is_empty(), "key_create is audited: {log}");
}

#[tokio::test(flavor = "multi_thread")]
async fn every_admin_route_refuses_a_user_session_and_a_user_key() {
    let (_mock, gw) = start("").await;
    let up = sign_up(&gw, &mail::address("plain")).await;
    let access = up["access_token"].as_str().unwrap().to_string();
    let (_, made) = call(&gw, Method::POST, "/api/me/keys", Some(&access), Some(json!({ "name": "k" }))).await;
    let key = made["key"].as_str().unwrap().to_string();
    note_secret(&key);
    let routes = [
        (Method::GET, "/api/admin/users"),
        (Method::POST, "/api/admin/users"),
        (Method::PATCH, "/api/admin/users/1"),
        (Method::DELETE, "/api/admin/users/1"),
        (Method::GET, "/api/admin/tokens"),
        (Method::POST, "/api/admin/tokens"),
        (Method::GET, "/api/admin/channels"),
        (Method::POST, "/api/admin/channels"),
        (Method::POST, "/api/admin/channels/1/test"),
        (Method::PUT, "/api/admin/groups/vip"),
        (Method::PUT, "/api/admin/prices/gpt-4o"),
        (Method::GET, "/api/admin/usage"),
        (Method::GET, "/api/admin/usage/stats"),
        (Method::POST, "/api/admin/users/1/topup"),
        (Method::GET, "/api/admin/ledger"),
        (Method::POST, "/api/admin/codes"),
        (Method::GET, "/api/admin/reservations"),
        (Method::GET, "/api/admin/audit"),
        (Method::POST, "/api/admin/invites"),
        (Method::POST, "/api/admin/users/1/2fa-reset"),
        (Method::DELETE, "/api/admin/users/1/sessions"),
    ];
    for (method, path) in routes {
        for who in [&access, &key] {
            let (status, v) = call(&gw, method.clone(), path, Some(who), Some(json!({}))).await;
            assert_eq!((status, code(&v)), (403, "admin_only"), "{method} {path}: {v}");
        }
    }
    // The admin key passes the same gate.
    assert_eq!(call(&gw, Method::GET, "/api/admin/audit", Some(&gw.admin_key), None).await.0, 200);
    // No caller at all: 401.
    let (status, v) = call(&gw, Method::GET, "/api/admin/users", None, None).await;
    assert_eq!((status, code(&v)), (401, "missing_api_key"));
}

#[tokio::test(flavor = "multi_thread")]
async fn repeated_failures_lock_the_account_and_reset_restores_it() {
    let (_mock, gw) = start("").await;
    let email = mail::address("lock");
    sign_up(&gw, &email).await;
    let (_, old) = sign_in(&gw, &email, PASSWORD).await;
    let old_access = old["access_token"].as_str().unwrap().to_string();
    for _ in 0..3 {
        let (status, v) = sign_in(&gw, &email, "wrong-password-1").await;
        assert_eq!((status, code(&v)), (401, "invalid_credentials"));
    }
    // Locked: even the right password waits, with Retry-After.
    let resp = gw
        .http
        .post(format!("{}/api/auth/signin", gw.url))
        .json(&json!({ "email": email, "password": PASSWORD, "delivery": "body" }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 429);
    let retry: u64 = resp.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=30).contains(&retry), "{retry}");
    let v: Value = resp.json().await.unwrap();
    assert_eq!(code(&v), "account_locked");

    // Reset answers the same for an unknown address and sends nothing there.
    let ghost = mail::address("ghost");
    let (s1, a1) = call(&gw, Method::POST, "/api/auth/password/forgot", None, Some(json!({ "email": ghost }))).await;
    mail::forget(&email).await;
    let (s2, a2) = call(&gw, Method::POST, "/api/auth/password/forgot", None, Some(json!({ "email": email }))).await;
    assert_eq!((s1, &a1), (s2, &a2), "no account enumeration");
    assert_eq!(s1, 202);
    let m = mail::wait_for(&email).await;
    assert_eq!(m.subject, "Reset your password");
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(mail::messages(&ghost).await.is_empty());
    let token = link_token(&m.text);
    let (status, v) =
        call(&gw, Method::POST, "/api/auth/password/reset", None, Some(json!({ "token": token, "password": "short" })))
            .await;
    assert_eq!((status, code(&v)), (400, "password_too_short"), "a weak password keeps the link: {v}");
    let new_password = "copper-lantern-77";
    let (status, v) = call(
        &gw,
        Method::POST,
        "/api/auth/password/reset",
        None,
        Some(json!({ "token": token, "password": new_password })),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    let (status, v) = call(
        &gw,
        Method::POST,
        "/api/auth/password/reset",
        None,
        Some(json!({ "token": token, "password": new_password })),
    )
    .await;
    assert_eq!((status, code(&v)), (400, "invalid_token"), "the link works once");
    assert_eq!(call(&gw, Method::GET, "/api/me", Some(&old_access), None).await.0, 401, "sessions end on reset");
    assert_eq!(sign_in(&gw, &email, PASSWORD).await.0, 401);
    let (status, fresh) = sign_in(&gw, &email, new_password).await;
    assert_eq!(status, 200, "the reset lifted the lock: {fresh}");
    let got = actions(&gw, fresh["access_token"].as_str().unwrap()).await;
    for want in ["sign_in_failed", "password_reset_requested", "password_reset"] {
        assert!(got.iter().any(|a| a == want), "audit has {want}: {got:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn browser_cookies_need_the_csrf_header_on_changes() {
    let (_mock, gw) = start("cookie_secure = false\n").await;
    let email = mail::address("web");
    sign_up(&gw, &email).await;
    let resp = gw
        .http
        .post(format!("{}/api/auth/signin", gw.url))
        .json(&json!({ "email": email, "password": PASSWORD }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let cookies: Vec<String> =
        resp.headers().get_all("set-cookie").iter().map(|c| c.to_str().unwrap().to_string()).collect();
    let body: Value = resp.json().await.unwrap();
    assert!(body.get("access_token").is_none() && body.get("refresh_token").is_none(), "cookies only: {body}");
    let find = |name: &str| cookies.iter().find(|c| c.starts_with(&format!("{name}="))).unwrap().clone();
    let (access, refresh, csrf) = (find("obl_access"), find("obl_refresh"), find("obl_csrf"));
    assert!(access.contains("HttpOnly") && access.contains("SameSite=Lax") && access.contains("Path=/;"), "{access}");
    assert!(
        refresh.contains("HttpOnly") && refresh.contains("SameSite=Strict") && refresh.contains("Path=/api/auth"),
        "{refresh}"
    );
    assert!(!csrf.contains("HttpOnly"), "the page reads the CSRF cookie: {csrf}");
    let value = |c: &str| c.split(';').next().unwrap().split_once('=').unwrap().1.to_string();
    let jar = format!("obl_access={}; obl_csrf={}; obl_refresh={}", value(&access), value(&csrf), value(&refresh));
    note_secret(&value(&access));
    note_secret(&value(&refresh));

    let with = |m: Method, path: &str| gw.http.request(m, format!("{}{path}", gw.url)).header("cookie", jar.clone());
    assert_eq!(with(Method::GET, "/api/me").send().await.unwrap().status(), 200);
    let refused = with(Method::PATCH, "/api/me").json(&json!({ "display_name": "A" })).send().await.unwrap();
    assert_eq!(refused.status(), 403);
    assert_eq!(code(&refused.json::<Value>().await.unwrap()), "csrf_failed");
    let ok = with(Method::PATCH, "/api/me")
        .header("x-csrf-token", value(&csrf))
        .json(&json!({ "display_name": "Ada Web", "settings": { "theme": "dark", "language": "zh-CN" } }))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    let v: Value = ok.json().await.unwrap();
    assert_eq!((v["display_name"].clone(), v["settings"]["theme"].clone()), (json!("Ada Web"), json!("dark")));
    // Refresh by cookie needs the header too, and answers with new cookies.
    assert_eq!(with(Method::POST, "/api/auth/refresh").send().await.unwrap().status(), 403);
    let r = with(Method::POST, "/api/auth/refresh").header("x-csrf-token", value(&csrf)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers().get_all("set-cookie").iter().any(|c| c.to_str().unwrap().starts_with("obl_refresh=ort_")));
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_input_gets_a_clear_error_and_makes_nothing() {
    let (_mock, gw) = start("").await;
    let signup = |body: Value| call(&gw, Method::POST, "/api/auth/signup", None, Some(body));
    let email = mail::address("bad");
    for (pw, want) in [
        ("short", "password_too_short"),
        ("aaaaaaaaaaaaaaaa", "password_too_common"),
        (email.as_str(), "password_same_as_email"),
    ] {
        let (status, v) = signup(json!({ "email": email, "password": pw })).await;
        assert_eq!((status, code(&v)), (400, want), "{v}");
    }
    let (status, v) = signup(json!({ "email": "not-an-address", "password": PASSWORD })).await;
    assert_eq!((status, code(&v)), (400, "invalid_email"));
    let (status, v) = signup(json!({ "email": 7, "password": PASSWORD })).await;
    assert_eq!((status, code(&v)), (400, "invalid_body"));
    let (status, v) = signup(json!({ "email": email, "password": PASSWORD, "role": "root" })).await;
    assert_eq!((status, code(&v)), (400, "invalid_body"), "no smuggled fields: {v}");
    let raw = gw
        .http
        .post(format!("{}/api/auth/signup", gw.url))
        .header("content-type", "application/json")
        .body("{\"email\":");
    let resp = raw.send().await.unwrap();
    assert_eq!(resp.status(), 400);
    let big = "x".repeat(70 * 1024);
    let (status, v) = signup(json!({ "email": email, "password": big })).await;
    assert_eq!((status, code(&v)), (413, "request_too_large"), "{v}");
    // Nothing was made by any of that; then the real one, then the same email again.
    let (status, v) = sign_in(&gw, &email, PASSWORD).await;
    assert_eq!((status, code(&v)), (401, "invalid_credentials"));
    sign_up(&gw, &email).await;
    let (status, v) = signup(json!({ "email": email.to_uppercase(), "password": PASSWORD })).await;
    assert_eq!((status, code(&v)), (409, "email_taken"));
    let (status, v) = call(&gw, Method::GET, "/api/me", Some("eyJhbGciOiJIUzI1NiJ9.e30.x"), None).await;
    assert_eq!((status, code(&v)), (401, "session_expired"), "{v}");
    let (status, v) =
        call(&gw, Method::POST, "/api/auth/refresh", None, Some(json!({ "refresh_token": "ort_nope" }))).await;
    assert_eq!((status, code(&v)), (401, "invalid_refresh_token"));
    let (status, v) =
        call(&gw, Method::POST, "/api/auth/signin/second-factor", None, Some(json!({ "ticket": "x", "code": "1" })))
            .await;
    assert_eq!((status, code(&v)), (401, "invalid_ticket"));
}

#[tokio::test(flavor = "multi_thread")]
async fn closed_and_invite_only_registration() {
    let (_mock, gw) = start("registration = \"invite\"\n").await;
    let email = mail::address("inv");
    let (status, v) =
        call(&gw, Method::POST, "/api/auth/signup", None, Some(json!({ "email": email, "password": PASSWORD }))).await;
    assert_eq!((status, code(&v)), (400, "invalid_invite"));
    let (status, inv) =
        call(&gw, Method::POST, "/api/admin/invites", Some(&gw.admin_key), Some(json!({ "count": 2 }))).await;
    assert_eq!(status, 201, "{inv}");
    let code0 = inv["codes"][0].as_str().unwrap().to_string();
    note_secret(&code0);
    let body = json!({ "email": email, "password": PASSWORD, "invite_code": code0, "delivery": "body" });
    let (status, v) = call(&gw, Method::POST, "/api/auth/signup", None, Some(body.clone())).await;
    assert_eq!(status, 201, "{v}");
    let other = json!({ "email": mail::address("inv2"), "password": PASSWORD, "invite_code": code0 });
    let (status, v) = call(&gw, Method::POST, "/api/auth/signup", None, Some(other)).await;
    assert_eq!((status, code(&v)), (400, "invalid_invite"), "an invitation works once");
    let (_, opts) = call(&gw, Method::GET, "/api/auth/options", None, None).await;
    assert_eq!(opts["registration"], "invite");
}
