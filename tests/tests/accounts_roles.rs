#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test
//! Roles and the operator's CLI: the root's setup link from the first start,
//! `oblivious user create|passwd|role|disable|enable|2fa-reset|setup-link`,
//! no one granting above their own role, and the last root staying root.

use oblivious_core::auth::totp;
use oblivious_e2e::gateway::{config, note_secret};
use oblivious_e2e::{Gateway, Mock};
use reqwest::Method;
use serde_json::{json, Value};

const PASSWORD: &str = "violet-harbor-42";

async fn call(gw: &Gateway, method: Method, path: &str, bearer: &str, body: Option<Value>) -> (u16, Value) {
    let mut req = gw.http.request(method, format!("{}{path}", gw.url)).bearer_auth(bearer);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

async fn sign_in(gw: &Gateway, email: &str, password: &str) -> (u16, Value) {
    let body = json!({ "email": email, "password": password, "delivery": "body" });
    let resp = gw.http.post(format!("{}/api/auth/signin", gw.url)).json(&body).send().await.unwrap();
    let status = resp.status().as_u16();
    let v: Value = resp.json().await.unwrap();
    if let Some(t) = v["access_token"].as_str() {
        note_secret(t);
        note_secret(v["refresh_token"].as_str().unwrap());
    }
    (status, v)
}

fn code(v: &Value) -> &str {
    v["error"]["code"].as_str().unwrap_or("")
}

#[tokio::test(flavor = "multi_thread")]
async fn root_setup_cli_and_the_role_rules() {
    let mock = Mock::start("a").await;
    let gw = Gateway::start(&config(&[("a", &mock.base_url(), "models = [\"gpt-4o-mini\"]")], ""));

    // First start: a setup link for root; it sets root's email and password once.
    let link = gw.setup_link.clone().expect("the first start prints the root's setup link");
    let token = link.split("token=").nth(1).unwrap().to_string();
    note_secret(&token);
    let body = json!({ "token": token, "email": "root@example.test", "password": PASSWORD, "delivery": "body" });
    let resp = gw.http.post(format!("{}/api/auth/setup", gw.url)).json(&body).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let root: Value = resp.json().await.unwrap();
    assert_eq!(root["user"]["role"], "root", "{root}");
    note_secret(root["access_token"].as_str().unwrap());
    note_secret(root["refresh_token"].as_str().unwrap());
    let other = json!({ "token": token, "email": "root2@example.test", "password": PASSWORD });
    let again = gw.http.post(format!("{}/api/auth/setup", gw.url)).json(&other).send().await.unwrap();
    assert_eq!(again.status(), 400, "the link works once");
    let root_access = root["access_token"].as_str().unwrap().to_string();
    let root_id = root["user"]["id"].as_i64().unwrap();

    // The CLI makes an admin who can sign in (the password on stdin, never an argument).
    let (ok, out, err) = gw.cli_with_stdin(
        &["user", "create", "ops", "--role", "admin", "--email", "ops@example.test"],
        &format!("{PASSWORD}\n"),
    );
    assert!(ok, "{err}");
    let ops_id: i64 = out.trim().parse().unwrap();
    let (status, ops) = sign_in(&gw, "ops@example.test", PASSWORD).await;
    assert_eq!((status, ops["user"]["role"].as_str()), (200, Some("admin")), "{ops}");
    let ops_access = ops["access_token"].as_str().unwrap().to_string();
    let (ok, out, _) = gw.cli(&["user", "list"]);
    assert!(ok && out.contains("ops@example.test") && out.contains("root"), "{out}");

    // An admin may make admins, not roots, and may not touch a root.
    let (_, plain) = call(&gw, Method::POST, "/api/admin/users", &ops_access, Some(json!({ "name": "plain" }))).await;
    let plain_id = plain["id"].as_i64().unwrap();
    let (status, v) =
        call(&gw, Method::PATCH, &format!("/api/admin/users/{plain_id}"), &ops_access, Some(json!({ "role": "root" })))
            .await;
    assert_eq!((status, code(&v)), (403, "role_above_yours"), "{v}");
    let (status, _) = call(
        &gw,
        Method::PATCH,
        &format!("/api/admin/users/{plain_id}"),
        &ops_access,
        Some(json!({ "role": "admin" })),
    )
    .await;
    assert_eq!(status, 200);
    let (status, v) = call(
        &gw,
        Method::PATCH,
        &format!("/api/admin/users/{root_id}"),
        &ops_access,
        Some(json!({ "status": "disabled" })),
    )
    .await;
    assert_eq!((status, code(&v)), (403, "role_above_yours"));
    let (status, v) = call(&gw, Method::DELETE, &format!("/api/admin/users/{root_id}"), &ops_access, None).await;
    assert_eq!((status, code(&v)), (403, "role_above_yours"));
    let (status, v) =
        call(&gw, Method::POST, "/api/admin/users", &ops_access, Some(json!({ "name": "r2", "role": "root" }))).await;
    assert_eq!((status, code(&v)), (403, "role_above_yours"));

    // The last root cannot be demoted or disabled, by the API or the CLI.
    let (status, v) = call(
        &gw,
        Method::PATCH,
        &format!("/api/admin/users/{root_id}"),
        &root_access,
        Some(json!({ "role": "admin" })),
    )
    .await;
    assert_eq!((status, code(&v)), (409, "last_root"), "{v}");
    let (ok, _, err) = gw.cli(&["user", "role", "admin", "user"]);
    assert!(!ok && err.contains("last root"), "{err}");
    let (ok, _, err) = gw.cli(&["user", "disable", "root@example.test"]);
    assert!(!ok && err.contains("last root"), "{err}");
    // With a second root, the first may step down.
    let (ok, _, err) = gw.cli(&["user", "role", "ops@example.test", "root"]);
    assert!(ok, "{err}");
    let (status, v) = call(
        &gw,
        Method::PATCH,
        &format!("/api/admin/users/{root_id}"),
        &root_access,
        Some(json!({ "role": "admin" })),
    )
    .await;
    assert_eq!((status, v["role"].as_str()), (200, Some("admin")), "{v}");
    let (_, log) = call(&gw, Method::GET, "/api/admin/audit?action=role_change", &gw.admin_key, None).await;
    assert!(log["data"].as_array().unwrap().len() >= 2, "role changes are audited: {log}");

    // The CLI: disable ends sessions and refuses sign-in; enable restores it.
    assert!(gw.cli(&["user", "role", "admin", "root"]).0, "the bootstrap user is root again");
    let (ok, _, err) = gw.cli(&["user", "disable", "ops@example.test"]);
    assert!(ok, "{err}");
    let (status, v) = call(&gw, Method::GET, "/api/me", &ops_access, None).await;
    assert_eq!(status, 401, "{v}");
    let (status, v) = sign_in(&gw, "ops@example.test", PASSWORD).await;
    assert_eq!((status, code(&v)), (403, "user_disabled"));
    assert!(gw.cli(&["user", "enable", "ops"]).0);
    assert_eq!(sign_in(&gw, "ops@example.test", PASSWORD).await.0, 200);

    // passwd sets a new password and ends sessions; 2fa-reset turns a lost factor off.
    let (_, s) = sign_in(&gw, "ops@example.test", PASSWORD).await;
    let access = s["access_token"].as_str().unwrap().to_string();
    let (_, enrol) = call(&gw, Method::POST, "/api/me/2fa/enrol", &access, None).await;
    let secret = enrol["secret"].as_str().unwrap();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    let (status, _) = call(
        &gw,
        Method::POST,
        "/api/me/2fa/confirm",
        &access,
        Some(json!({ "code": totp::code_at(secret, now).unwrap() })),
    )
    .await;
    assert_eq!(status, 200);
    let (_, step) = sign_in(&gw, "ops@example.test", PASSWORD).await;
    assert_eq!(step["second_factor_required"], true);
    let (ok, _, err) = gw.cli(&["user", "2fa-reset", "ops"]);
    assert!(ok, "{err}");
    let (status, v) = sign_in(&gw, "ops@example.test", PASSWORD).await;
    assert!(status == 200 && v.get("access_token").is_some(), "no second factor now: {v}");
    let new_password = "copper-lantern-77";
    let (ok, _, err) = gw.cli_with_stdin(&["user", "passwd", "ops@example.test"], &format!("{new_password}\n"));
    assert!(ok, "{err}");
    assert_eq!(call(&gw, Method::GET, "/api/me", v["access_token"].as_str().unwrap(), None).await.0, 401);
    assert_eq!(sign_in(&gw, "ops@example.test", PASSWORD).await.0, 401);
    assert_eq!(sign_in(&gw, "ops@example.test", new_password).await.0, 200);
    let (ok, _, err) = gw.cli_with_stdin(&["user", "passwd", "ops"], "short\n");
    assert!(!ok && err.contains("at least"), "the CLI keeps the password rules: {err}");
    let (ok, _, err) = gw.cli(&["user", "setup-link"]);
    assert!(!ok && err.contains("already sign in"), "root has an account now: {err}");
    let _ = ops_id;
}
