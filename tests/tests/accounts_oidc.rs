#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test
//! Sign-in with a real OpenID provider (`oidc-provider` on 127.0.0.1) and
//! the GitHub preset's stand-in, through the whole redirect flow: the first
//! sign-in makes the account, a verified email links to an existing one, an
//! unverified one does not, the state works once, a provider unlinks.

use std::time::{Duration, Instant};

use oblivious_e2e::gateway::{config, note_secret};
use oblivious_e2e::oidc::{github_sign_in, Idp};
use oblivious_e2e::{Gateway, Mock};
use reqwest::Method;
use serde_json::{json, Value};

/// A client that sees redirects instead of following them.
fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap()
}

async fn start() -> (Mock, Idp, Gateway, reqwest::Client) {
    let mock = Mock::start("a").await;
    let idp = Idp::start().await;
    let channels = [("a", mock.base_url(), "models = [\"gpt-4o-mini\"]")];
    let channels: Vec<(&str, &str, &str)> = channels.iter().map(|(a, b, c)| (*a, b.as_str(), *c)).collect();
    let providers = format!("{}\n{}", idp.oidc_toml("test"), idp.github_toml("gh"));
    let gw = Gateway::start(&config(&channels, &format!("[auth]\ncookie_secure = false\n\n{providers}")));
    // The callback URL names the gateway's own port, known only now: reload with it.
    let text = config(&channels, &format!("[auth]\ncookie_secure = false\nbase_url = \"{}\"\n\n{providers}", gw.url));
    std::fs::write(&gw.config, text).unwrap();
    let http = no_redirects();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = http.get(format!("{}/api/auth/oidc/test/start", gw.url)).send().await.unwrap();
        let at = r.headers().get("location").map(|l| l.to_str().unwrap().to_string()).unwrap_or_default();
        if at.contains(&urlencode(&gw.url)) {
            break;
        }
        assert!(Instant::now() < deadline, "the config reload with base_url did not apply: {at}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    (mock, idp, gw, http)
}

/// `s` as it appears in a query string (what a base URL needs escaped).
fn urlencode(s: &str) -> String {
    s.replace(':', "%3A").replace('/', "%2F")
}

/// Starts at the gateway, walks the provider as `login`, returns the
/// gateway's final redirect and the access cookie it set (if any).
async fn oidc_sign_in(gw: &Gateway, http: &reqwest::Client, provider: &str, login: &str) -> (String, Option<String>) {
    let r = http.get(format!("{}/api/auth/oidc/{provider}/start?redirect=/chat", gw.url)).send().await.unwrap();
    assert_eq!(r.status(), 302, "{provider} start");
    let authorize = r.headers()["location"].to_str().unwrap().to_string();
    let callback = if provider == "gh" {
        github_sign_in(&authorize, login).await
    } else {
        oblivious_e2e::oidc::sign_in(&authorize, login).await
    };
    assert!(callback.starts_with(&format!("{}/api/auth/oidc/{provider}/callback?", gw.url)), "{callback}");
    follow_callback(http, &callback).await
}

async fn follow_callback(http: &reqwest::Client, callback: &str) -> (String, Option<String>) {
    let r = http.get(callback).send().await.unwrap();
    assert_eq!(r.status(), 302, "the callback redirects to the app");
    let to = r.headers()["location"].to_str().unwrap().to_string();
    let access = r
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|c| c.to_str().ok())
        .find_map(|c| c.strip_prefix("obl_access="))
        .map(|c| c.split(';').next().unwrap().to_string());
    if let Some(a) = &access {
        note_secret(a);
    }
    (to, access)
}

async fn me(gw: &Gateway, access: &str) -> Value {
    let r = gw.http.get(format!("{}/api/me", gw.url)).header("cookie", format!("obl_access={access}")).send().await;
    let r = r.unwrap();
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn openid_sign_in_creates_links_and_refuses_what_it_should() {
    let (_mock, idp, gw, http) = start().await;

    // The first sign-in makes the account, verified by the provider, and lands where asked.
    let (to, access) = oidc_sign_in(&gw, &http, "test", "alice").await;
    assert_eq!(to, format!("{}/chat", gw.url));
    let alice = me(&gw, &access.expect("signed in")).await;
    assert_eq!(alice["account"]["email"], "alice@example.com");
    assert_eq!(alice["account"]["email_verified"], true);
    assert_eq!(alice["account"]["has_password"], false);
    assert_eq!(alice["identities"][0]["provider"], "test");
    let alice_id = alice["user"]["id"].as_i64().unwrap();

    // Again: the same user, found by the identity.
    let (_, access) = oidc_sign_in(&gw, &http, "test", "alice").await;
    assert_eq!(me(&gw, &access.unwrap()).await["user"]["id"], alice_id);

    // GitHub's verified primary email is alice's too: it links to her account.
    let (_, access) = oidc_sign_in(&gw, &http, "gh", "alice").await;
    let again = me(&gw, access.as_deref().unwrap()).await;
    assert_eq!(again["user"]["id"], alice_id, "{again}");
    let mut providers: Vec<_> = again["identities"].as_array().unwrap().iter().map(|i| i["provider"].clone()).collect();
    providers.sort_by_key(|p| p.to_string());
    assert_eq!(providers, [json!("gh"), json!("test")]);

    // A password account whose email the provider has not verified is not taken over.
    let body = json!({ "email": "bob@example.com", "password": "violet-harbor-42", "delivery": "body" });
    let (status, _) =
        (gw.http.post(format!("{}/api/auth/signup", gw.url)).json(&body).send().await.unwrap().status(), ());
    assert_eq!(status, 201);
    let (to, access) = oidc_sign_in(&gw, &http, "test", "bob").await;
    assert_eq!(to, format!("{}/signin?error=email_not_verified_by_provider", gw.url));
    assert!(access.is_none());

    // A verified email links to the password account that has it.
    let body = json!({ "email": "carol@example.com", "password": "violet-harbor-42", "delivery": "body" });
    let made: Value =
        gw.http.post(format!("{}/api/auth/signup", gw.url)).json(&body).send().await.unwrap().json().await.unwrap();
    note_secret(made["access_token"].as_str().unwrap());
    note_secret(made["refresh_token"].as_str().unwrap());
    idp.add_account("carol", "carol@example.com", true, Some("Carol")).await;
    let (_, access) = oidc_sign_in(&gw, &http, "test", "carol").await;
    let carol = me(&gw, access.as_deref().unwrap()).await;
    assert_eq!(carol["user"]["id"], made["user"]["id"], "linked by verified email");
    assert_eq!(carol["account"]["has_password"], true);

    // A state works once: replaying a callback is refused.
    let r = http.get(format!("{}/api/auth/oidc/test/start", gw.url)).send().await.unwrap();
    let callback = oblivious_e2e::oidc::sign_in(r.headers()["location"].to_str().unwrap(), "alice").await;
    let (_, first) = follow_callback(&http, &callback).await;
    assert!(first.is_some());
    let (to, replay) = follow_callback(&http, &callback).await;
    assert_eq!((to, replay), (format!("{}/signin?error=invalid_state", gw.url), None));
    let (status, _) = (http.get(format!("{}/api/auth/oidc/nope/start", gw.url)).send().await.unwrap().status(), ());
    assert_eq!(status, 404, "an unknown provider");

    // Unlinking: fine while another way to sign in is left; the last one stays.
    let csrf = "t0k";
    let jar = format!("obl_access={}; obl_csrf={csrf}", access.as_deref().unwrap());
    let unlink = |p: &str| {
        gw.http
            .request(Method::DELETE, format!("{}/api/me/identities/{p}", gw.url))
            .header("cookie", jar.clone())
            .header("x-csrf-token", csrf)
    };
    assert_eq!(unlink("test").send().await.unwrap().status(), 200, "carol has a password");
    let (_, alice_access) = oidc_sign_in(&gw, &http, "gh", "alice").await;
    let jar = format!("obl_access={}; obl_csrf={csrf}", alice_access.unwrap());
    let del = |p: &str| {
        gw.http
            .request(Method::DELETE, format!("{}/api/me/identities/{p}", gw.url))
            .header("cookie", jar.clone())
            .header("x-csrf-token", csrf)
    };
    assert_eq!(del("gh").send().await.unwrap().status(), 200);
    let last = del("test").send().await.unwrap();
    assert_eq!(last.status(), 409);
    let v: Value = last.json().await.unwrap();
    assert_eq!(v["error"]["code"], "last_sign_in_method");

    let (_, log) = (0, gw.admin(Method::GET, "/api/admin/audit?action=provider_link", None).await.1);
    let rows = log["data"].as_array().unwrap();
    assert!(rows.iter().any(|r| r["detail"]["by"] == "verified_email"), "{log}");
}
