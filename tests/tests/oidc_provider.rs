#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test
//! The core's OpenID Connect and GitHub functions (oblivious_core::auth::oidc)
//! against a real, certified OpenID provider (oidc-provider, tests/oidc) and
//! the GitHub stand-in, without the gateway: discovery, the authorization URL,
//! the login, the code exchange, ID-token verification, userinfo.

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use oblivious_core::auth::oidc::{self, ClientAuth, Discovery, IdTokenExpect, Jwks, OidcError};
use oblivious_core::auth::{OidcProvider, ProviderKind};
use oblivious_e2e::oidc::{github_sign_in, sign_in, Browser, Idp};
use serde_json::{json, Value};

/// Where the tests say the gateway's callback is: nothing listens there, the
/// walk stops at the redirect.
const CALLBACK: &str = "http://127.0.0.1:9/api/auth/oidc/test/callback";

fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
}

fn http() -> reqwest::Client {
    reqwest::Client::builder().timeout(std::time::Duration::from_secs(30)).build().unwrap()
}

async fn get(url: &str, bearer: Option<&str>) -> (u16, Vec<u8>) {
    let mut req = http()
        .get(url)
        .header("accept", oidc::GITHUB_API_ACCEPT)
        .header("user-agent", "oblivious-tests")
        .header(oidc::GITHUB_API_VERSION.0, oidc::GITHUB_API_VERSION.1);
    if let Some(t) = bearer {
        req = req.bearer_auth(t);
    }
    let r = req.send().await.unwrap_or_else(|e| panic!("{url}: {e}"));
    (r.status().as_u16(), r.bytes().await.unwrap().to_vec())
}

async fn post_token(endpoint: &str, req: &oidc::TokenRequest) -> Result<oidc::TokenResponse, OidcError> {
    let mut r = http()
        .post(endpoint)
        .header("content-type", oidc::FORM_CONTENT_TYPE)
        .header("accept", "application/json")
        .body(req.body.clone());
    if let Some(a) = &req.authorization {
        r = r.header("authorization", a);
    }
    let r = r.send().await.unwrap();
    let status = r.status().as_u16();
    oidc::parse_token_response(status, &r.bytes().await.unwrap())
}

async fn discover(idp: &Idp) -> (Discovery, Jwks) {
    let (status, body) = get(&oidc::discovery_url(&idp.issuer), None).await;
    assert_eq!(status, 200);
    // The configured issuer with a trailing slash is the same issuer.
    let d = oidc::parse_discovery(&body, &format!("{}/", idp.issuer)).unwrap();
    assert_eq!(d.issuer, idp.issuer);
    assert_eq!(d.code_challenge_methods_supported, ["S256"]);
    let (status, body) = get(&d.jwks_uri, None).await;
    assert_eq!(status, 200);
    (d, oidc::parse_jwks(&body).unwrap())
}

/// One sign-in's secrets, as the gateway would keep them between the redirect and the callback.
struct Pending {
    state: String,
    nonce: String,
    verifier: String,
    url: String,
}

fn begin(endpoint: &str, client_id: &str, seed: u8, nonce: bool) -> Pending {
    let state = oidc::random_token(&[seed; 16]);
    let nonce_value = oidc::random_token(&[seed.wrapping_add(1); 16]);
    let verifier = oidc::pkce_verifier(&[seed.wrapping_add(2); 32]);
    let scopes = vec!["openid".to_string(), "email".into(), "profile".into()];
    let url = oidc::authorization_url(&oidc::AuthorizationRequest {
        endpoint,
        client_id,
        redirect_uri: CALLBACK,
        scopes: &scopes,
        state: &state,
        nonce: nonce.then_some(nonce_value.as_str()),
        code_challenge: &oidc::pkce_challenge(&verifier),
    })
    .unwrap();
    Pending { state, nonce: nonce_value, verifier, url }
}

fn query(url: &str) -> String {
    reqwest::Url::parse(url).unwrap().query().unwrap_or_default().to_string()
}

/// Authorization URL → login as `login` → code → tokens → verified claims.
async fn full_sign_in(
    idp: &Idp,
    d: &Discovery,
    jwks: &Jwks,
    browser: &Browser,
    login: &str,
    seed: u8,
) -> (oidc::Claims, oidc::TokenResponse, oidc::TokenRequest) {
    let p = begin(&d.authorization_endpoint, &idp.client_id, seed, true);
    let callback = browser.sign_in(&p.url, login).await;
    assert!(callback.starts_with(CALLBACK), "{callback}");
    let code = oidc::parse_callback(&query(&callback), &p.state, Some(&d.issuer)).unwrap();
    let req = oidc::token_request(&code, CALLBACK, &idp.client_id, &idp.client_secret, &p.verifier, d.client_auth());
    let tokens = post_token(&d.token_endpoint, &req).await.unwrap();
    let id_token = tokens.id_token.as_deref().expect("an id_token");
    let expect = IdTokenExpect { issuer: &d.issuer, client_id: &idp.client_id, nonce: &p.nonce, now: now() };
    let claims = oidc::verify_id_token(id_token, jwks, &expect).unwrap();
    (claims, tokens, req)
}

#[tokio::test]
async fn alice_signs_in_and_her_id_token_verifies() {
    let idp = Idp::start().await;
    let (d, jwks) = discover(&idp).await;
    assert_eq!(d.client_auth(), ClientAuth::ClientSecretBasic);
    assert_eq!(jwks.keys.len(), 2, "an RSA and an EC key: {jwks:?}");
    let browser = Browser::new();
    let (claims, tokens, exchange) = full_sign_in(&idp, &d, &jwks, &browser, "alice", 1).await;
    assert_eq!(claims.sub, "alice");
    assert_eq!(claims.email.as_deref(), Some("alice@example.com"));
    assert!(claims.email_verified);
    assert_eq!(claims.name.as_deref(), Some("Alice Example"));
    assert_eq!(claims.preferred_username.as_deref(), Some("alice"));
    let header = tokens.id_token.as_deref().unwrap().split('.').next().unwrap().to_string();
    let header: Value =
        serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(header).unwrap()).unwrap();
    assert_eq!(header["alg"], "RS256");

    // Userinfo says the same.
    let (status, body) = get(d.userinfo_endpoint.as_deref().unwrap(), Some(&tokens.access_token)).await;
    let info = oidc::parse_userinfo(status, &body, "alice").unwrap();
    assert_eq!((info.email.as_deref(), info.email_verified), (Some("alice@example.com"), true));
    assert_eq!(oidc::parse_userinfo(status, &body, "mallory"), Err(OidcError::SubjectMismatch));
    let (status, body) = get(d.userinfo_endpoint.as_deref().unwrap(), Some("not-a-token")).await;
    assert!(matches!(oidc::parse_userinfo(status, &body, "alice"), Err(OidcError::Provider { .. })));

    // The code is single-use, and a replay revokes what it gave (RFC 6749 §4.1.2).
    assert!(matches!(
        post_token(&d.token_endpoint, &exchange).await,
        Err(OidcError::Provider { ref error, .. }) if error == "invalid_grant"
    ));
    let (status, body) = get(d.userinfo_endpoint.as_deref().unwrap(), Some(&tokens.access_token)).await;
    assert!(matches!(
        oidc::parse_userinfo(status, &body, "alice"),
        Err(OidcError::Provider { ref error, .. }) if error == "invalid_token"
    ));

    // Signing in again in the same browser: the provider's session and grant skip both pages.
    let (again, _, _) = full_sign_in(&idp, &d, &jwks, &browser, "alice", 2).await;
    assert_eq!(again.sub, "alice");
    // No page at all this time: a walk that would cancel on the first page gets a code.
    let p = begin(&d.authorization_endpoint, &idp.client_id, 3, true);
    let callback = browser.decline(&p.url).await;
    assert!(oidc::parse_callback(&query(&callback), &p.state, Some(&d.issuer)).is_ok(), "{callback}");
}

#[tokio::test]
async fn bobs_email_is_not_verified() {
    let idp = Idp::start().await;
    let (d, jwks) = discover(&idp).await;
    let (claims, _, _) = full_sign_in(&idp, &d, &jwks, &Browser::new(), "bob", 3).await;
    assert_eq!(claims.sub, "bob");
    assert_eq!(claims.email.as_deref(), Some("bob@example.com"));
    assert!(!claims.email_verified);

    idp.add_account("carol", "carol@example.com", true, None).await;
    let (claims, _, _) = full_sign_in(&idp, &d, &jwks, &Browser::new(), "carol", 4).await;
    assert_eq!((claims.email.as_deref(), claims.email_verified, claims.name), (Some("carol@example.com"), true, None));
}

#[tokio::test]
async fn a_tampered_or_misdirected_token_is_refused() {
    let idp = Idp::start().await;
    let (d, jwks) = discover(&idp).await;
    let p = begin(&d.authorization_endpoint, &idp.client_id, 5, true);
    let code = oidc::parse_callback(&query(&sign_in(&p.url, "bob").await), &p.state, Some(&d.issuer)).unwrap();
    let req = oidc::token_request(&code, CALLBACK, &idp.client_id, &idp.client_secret, &p.verifier, d.client_auth());
    let token = post_token(&d.token_endpoint, &req).await.unwrap().id_token.unwrap();
    let expect = IdTokenExpect { issuer: &d.issuer, client_id: &idp.client_id, nonce: &p.nonce, now: now() };
    assert!(oidc::verify_id_token(&token, &jwks, &expect).is_ok());

    // bob claims a verified address: the provider's signature no longer holds.
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let parts: Vec<&str> = token.split('.').collect();
    let mut payload: Value = serde_json::from_slice(&b64.decode(parts[1]).unwrap()).unwrap();
    payload["email_verified"] = json!(true);
    let forged = format!("{}.{}.{}", parts[0], b64.encode(payload.to_string()), parts[2]);
    assert_eq!(oidc::verify_id_token(&forged, &jwks, &expect), Err(OidcError::BadSignature));
    // The same claims unsigned.
    let unsigned = format!("{}.{}.", b64.encode(r#"{"alg":"none"}"#), b64.encode(payload.to_string()));
    assert_eq!(oidc::verify_id_token(&unsigned, &jwks, &expect), Err(OidcError::AlgNone));

    let wrong_nonce = IdTokenExpect { nonce: "another sign-in's nonce", ..expect };
    assert_eq!(oidc::verify_id_token(&token, &jwks, &wrong_nonce), Err(OidcError::NonceMismatch));
    let other_client = IdTokenExpect { client_id: "someone-else", ..expect };
    assert_eq!(oidc::verify_id_token(&token, &jwks, &other_client), Err(OidcError::WrongAudience));
    let other_issuer = IdTokenExpect { issuer: "http://127.0.0.1:1", ..expect };
    assert!(matches!(oidc::verify_id_token(&token, &jwks, &other_issuer), Err(OidcError::WrongIssuer { .. })));
    let later = IdTokenExpect { now: now() + 86_400, ..expect };
    assert!(matches!(oidc::verify_id_token(&token, &jwks, &later), Err(OidcError::Expired { .. })));
    // After a key rotation the old kid is gone.
    let rotated = Jwks { keys: jwks.keys.iter().filter(|k| k.kty != "RSA").cloned().collect() };
    assert_eq!(oidc::verify_id_token(&token, &rotated, &expect), Err(OidcError::UnknownKid("rs256".into())));
}

#[tokio::test]
async fn pkce_is_enforced_and_a_refusal_reaches_the_callback() {
    let idp = Idp::start().await;
    let (d, _) = discover(&idp).await;

    // Without a code challenge the provider refuses the request (PKCE required).
    let p = begin(&d.authorization_endpoint, &idp.client_id, 6, true);
    let mut url = reqwest::Url::parse(&p.url).unwrap();
    let kept: Vec<(String, String)> =
        url.query_pairs().into_owned().filter(|(k, _)| !k.starts_with("code_challenge")).collect();
    url.query_pairs_mut().clear().extend_pairs(kept);
    let callback = sign_in(url.as_str(), "alice").await;
    assert!(matches!(
        oidc::parse_callback(&query(&callback), &p.state, Some(&d.issuer)),
        Err(OidcError::Provider { ref error, .. }) if error == "invalid_request"
    ));

    // The wrong verifier does not redeem the code.
    let p = begin(&d.authorization_endpoint, &idp.client_id, 7, true);
    let code = oidc::parse_callback(&query(&sign_in(&p.url, "alice").await), &p.state, Some(&d.issuer)).unwrap();
    let wrong = oidc::pkce_verifier(&[0xee; 32]);
    let req = oidc::token_request(&code, CALLBACK, &idp.client_id, &idp.client_secret, &wrong, d.client_auth());
    assert!(matches!(
        post_token(&d.token_endpoint, &req).await,
        Err(OidcError::Provider { ref error, .. }) if error == "invalid_grant"
    ));
    // Nor does the wrong secret.
    let p = begin(&d.authorization_endpoint, &idp.client_id, 8, true);
    let callback = sign_in(&p.url, "alice").await;
    // A callback for another sign-in's state is refused before its code is used.
    assert_eq!(oidc::parse_callback(&query(&callback), "another state", None), Err(OidcError::StateMismatch));
    let code = oidc::parse_callback(&query(&callback), &p.state, Some(&d.issuer)).unwrap();
    let req = oidc::token_request(&code, CALLBACK, &idp.client_id, "not-the-secret", &p.verifier, d.client_auth());
    assert!(matches!(
        post_token(&d.token_endpoint, &req).await,
        Err(OidcError::Provider { ref error, .. }) if error == "invalid_client"
    ));

    // The person cancels: the callback carries access_denied.
    let p = begin(&d.authorization_endpoint, &idp.client_id, 9, true);
    let callback = Browser::new().decline(&p.url).await;
    assert!(matches!(
        oidc::parse_callback(&query(&callback), &p.state, Some(&d.issuer)),
        Err(OidcError::Provider { ref error, .. }) if error == "access_denied"
    ));
}

#[tokio::test]
async fn client_secret_post_and_es256_id_tokens() {
    let idp = Idp::start().await;
    let (d, jwks) = discover(&idp).await;
    idp.register_client(json!({
        "client_id": "es256-client",
        "client_secret": "es256-secret",
        "redirect_uris": [CALLBACK],
        "token_endpoint_auth_method": "client_secret_post",
        "id_token_signed_response_alg": "ES256",
    }))
    .await;
    let p = begin(&d.authorization_endpoint, "es256-client", 10, true);
    let code = oidc::parse_callback(&query(&sign_in(&p.url, "alice").await), &p.state, Some(&d.issuer)).unwrap();
    // oidc-provider takes client_secret_basic from any secret client (and refuses both at once).
    let basic = oidc::token_request(
        &code,
        CALLBACK,
        "es256-client",
        "es256-secret",
        &p.verifier,
        ClientAuth::ClientSecretBasic,
    );
    assert!(post_token(&d.token_endpoint, &basic).await.is_ok());

    let p = begin(&d.authorization_endpoint, "es256-client", 11, true);
    let code = oidc::parse_callback(&query(&sign_in(&p.url, "alice").await), &p.state, Some(&d.issuer)).unwrap();
    let req =
        oidc::token_request(&code, CALLBACK, "es256-client", "es256-secret", &p.verifier, ClientAuth::ClientSecretPost);
    assert!(req.authorization.is_none());
    let token = post_token(&d.token_endpoint, &req).await.unwrap().id_token.unwrap();
    let header: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(token.split('.').next().unwrap()).unwrap(),
    )
    .unwrap();
    assert_eq!((header["alg"].as_str(), header["kid"].as_str()), (Some("ES256"), Some("es256")));
    let expect = IdTokenExpect { issuer: &d.issuer, client_id: "es256-client", nonce: &p.nonce, now: now() };
    let claims = oidc::verify_id_token(&token, &jwks, &expect).unwrap();
    assert_eq!((claims.sub.as_str(), claims.email_verified), ("alice", true));
}

fn github_preset(idp: &Idp) -> OidcProvider {
    OidcProvider {
        name: "github".into(),
        kind: ProviderKind::Github,
        display_name: None,
        issuer: None,
        client_id: idp.client_id.clone(),
        client_secret: idp.client_secret.clone(),
        scopes: vec![],
        github_url: Some(idp.github_url.clone()),
        github_api_url: Some(idp.github_api_url.clone()),
    }
}

async fn github_flow(idp: &Idp, login: &str, seed: u8) -> oidc::Claims {
    let preset = github_preset(idp);
    let e = oidc::GithubEndpoints::for_provider(&preset);
    let state = oidc::random_token(&[seed; 16]);
    let verifier = oidc::pkce_verifier(&[seed.wrapping_add(1); 32]);
    let scopes = preset.scopes();
    let url = oidc::authorization_url(&oidc::AuthorizationRequest {
        endpoint: &e.authorize,
        client_id: &preset.client_id,
        redirect_uri: CALLBACK,
        scopes: &scopes,
        state: &state,
        nonce: None,
        code_challenge: &oidc::pkce_challenge(&verifier),
    })
    .unwrap();
    let callback = github_sign_in(&url, login).await;
    let code = oidc::parse_callback(&query(&callback), &state, None).unwrap();

    let wrong = oidc::github_token_request(&code, CALLBACK, &preset.client_id, &preset.client_secret, "wrong-verifier");
    assert!(matches!(
        post_token(&e.token, &wrong).await,
        Err(OidcError::Provider { ref error, .. }) if error == "bad_verification_code"
    ));
    // The stand-in spends the code on any attempt, as GitHub does: sign in again.
    let callback = github_sign_in(&url, login).await;
    let code = oidc::parse_callback(&query(&callback), &state, None).unwrap();
    let req = oidc::github_token_request(&code, CALLBACK, &preset.client_id, &preset.client_secret, &verifier);
    let tokens = post_token(&e.token, &req).await.unwrap();
    assert!(tokens.id_token.is_none());

    let (status, body) = get(&e.user, Some(&tokens.access_token)).await;
    let user = oidc::parse_github_user(status, &body).unwrap();
    let (status, body) = get(&e.emails, Some(&tokens.access_token)).await;
    let emails = oidc::parse_github_emails(status, &body).unwrap();
    oidc::github_claims(&user, &emails)
}

#[tokio::test]
async fn github_preset_against_the_stand_in() {
    let idp = Idp::start().await;
    let alice = github_flow(&idp, "alice", 20).await;
    assert_eq!(alice.sub, "1001");
    assert_eq!((alice.email.as_deref(), alice.email_verified), (Some("alice@example.com"), true));
    assert_eq!((alice.name.as_deref(), alice.preferred_username.as_deref()), (Some("Alice Example"), Some("alice")));

    let bob = github_flow(&idp, "bob", 30).await;
    assert_eq!(bob.sub, "1002");
    assert_eq!((bob.email.as_deref(), bob.email_verified), (Some("bob@example.com"), false));
    assert_eq!(bob.name.as_deref(), Some("bob"), "no name on GitHub: the login");

    // Without a token the API refuses, with GitHub's message.
    let e = oidc::GithubEndpoints::for_provider(&github_preset(&idp));
    let (status, body) = get(&e.user, Some("gho_bogus")).await;
    assert_eq!(
        oidc::parse_github_user(status, &body),
        Err(OidcError::Http { what: "GitHub's /user", status: 401, message: Some("Bad credentials".into()) })
    );
}
