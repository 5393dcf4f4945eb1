//! Sign-in with an OpenID provider (discovery, authorization code + PKCE,
//! state and nonce, the ID token checked against the provider's JWKS) or
//! with GitHub (OAuth2 and its user and email API). The first sign-in makes
//! the account; a verified email links to an existing one; a signed-in user
//! links and unlinks providers. Every outbound call goes through the
//! `Upstream` port.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::response::Response;
use bytes::Bytes;
use futures_util::StreamExt;
use http::request::Parts;
use oblivious_core::auth::oidc::{self, Claims, Discovery, Jwks};
use oblivious_core::auth::{OidcProvider, ProviderKind, Registration};
use oblivious_core::model::{Role, UserStatus};
use oblivious_core::ApiError;
use oblivious_ports::{
    Accounts, Clock, Identity, NewAccount, NewUser, Platform, Purpose, Store, StoreError, Upstream, UpstreamRequest,
};
use oblivious_relay::{Audit, Origin};
use serde_json::{json, Value};

use crate::reply::{self, conflict, respond, Fail, Reply, Result};
use crate::session::Delivery;
use crate::Auth;

/// How long a person has to finish at the provider.
const STATE_MS: i64 = 10 * 60_000;
/// Discovery documents and key sets are read again after this long (and at
/// once when a token names a key the cached set lacks).
const CACHE_MS: i64 = 3_600_000;
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_ANSWER: usize = 1 << 20;

/// A provider's discovery document and key set.
type Metadata = Arc<(Discovery, Jwks)>;

/// Metadata per provider, with when it was read.
#[derive(Default)]
pub(crate) struct ProviderCache {
    map: RwLock<HashMap<String, (Metadata, i64)>>,
}

fn provider_error(e: impl std::fmt::Display) -> Fail {
    ApiError::new(
        oblivious_core::ErrorKind::UpstreamFailed,
        "provider_failed",
        format!("The sign-in provider failed: {e}"),
    )
    .into()
}

impl<P: Platform> Auth<P> {
    fn provider(&self, name: &str) -> Result<OidcProvider> {
        let found = self.settings().oidc.iter().find(|p| p.name == name).cloned();
        Ok(found.ok_or_else(|| ApiError::not_found("unknown_provider", format!("No sign-in provider `{name}`.")))?)
    }

    fn callback_url(&self, name: &str) -> String {
        format!("{}/api/auth/oidc/{name}/callback", self.settings().base_url())
    }

    /// One outbound call: status and body (bounded in size and time).
    async fn call(
        &self,
        method: http::Method,
        url: &str,
        headers: &[(&str, String)],
        body: String,
    ) -> Result<(u16, Bytes)> {
        let mut h = http::HeaderMap::new();
        h.insert(http::header::ACCEPT, http::HeaderValue::from_static("application/json"));
        h.insert(http::header::USER_AGENT, http::HeaderValue::from_static("oblivious"));
        for (k, v) in headers {
            let (Ok(k), Ok(v)) = (http::HeaderName::try_from(*k), http::HeaderValue::from_str(v)) else { continue };
            h.insert(k, v);
        }
        let req = UpstreamRequest { method, url: url.to_string(), headers: h, body: body.into() };
        let clock = &self.relay.ports.clock;
        let work = async {
            let resp = self.relay.ports.upstream.send(req).await.map_err(provider_error)?;
            let mut body = Vec::new();
            let mut stream = resp.body;
            while let Some(chunk) = stream.next().await {
                body.extend_from_slice(&chunk.map_err(provider_error)?);
                if body.len() > MAX_ANSWER {
                    return Err(provider_error("the answer is too large"));
                }
            }
            Ok((resp.status, Bytes::from(body)))
        };
        futures_util::pin_mut!(work);
        let timeout = clock.sleep(CALL_TIMEOUT);
        futures_util::pin_mut!(timeout);
        match futures_util::future::select(work, timeout).await {
            futures_util::future::Either::Left((r, _)) => r,
            futures_util::future::Either::Right(_) => Err(provider_error("no answer in time")),
        }
    }

    /// The provider's discovery document and keys, cached; `fresh` reads them again.
    async fn metadata(&self, p: &OidcProvider, fresh: bool) -> Result<Arc<(Discovery, Jwks)>> {
        let now = self.relay.ports.clock.now_ms();
        if !fresh {
            let map = self.oidc.map.read().unwrap_or_else(|e| e.into_inner());
            if let Some((m, _)) = map.get(&p.name).filter(|(_, at)| now - at < CACHE_MS) {
                return Ok(m.clone());
            }
        }
        let issuer = p.issuer.as_deref().unwrap_or_default();
        let (status, body) = self.call(http::Method::GET, &oidc::discovery_url(issuer), &[], String::new()).await?;
        if status != 200 {
            return Err(provider_error(format!("discovery answered {status}")));
        }
        let discovery = oidc::parse_discovery(&body, issuer).map_err(provider_error)?;
        let (status, body) = self.call(http::Method::GET, &discovery.jwks_uri, &[], String::new()).await?;
        if status != 200 {
            return Err(provider_error(format!("the key set answered {status}")));
        }
        let jwks = oidc::parse_jwks(&body).map_err(provider_error)?;
        let m = Arc::new((discovery, jwks));
        self.oidc.map.write().unwrap_or_else(|e| e.into_inner()).insert(p.name.clone(), (m.clone(), now));
        Ok(m)
    }

    /// The provider's authorization URL, with a state ticket holding the
    /// nonce, PKCE verifier, where to land, and the user linking (if any).
    async fn authorization(&self, p: &OidcProvider, redirect: &str, link_user: Option<i64>) -> Result<String> {
        let verifier = oidc::pkce_verifier(&self.random());
        let nonce = oidc::random_token(&self.random::<16>());
        let data = json!({ "provider": p.name, "nonce": nonce, "verifier": verifier, "redirect": redirect, "link": link_user });
        let state = self.ticket(Purpose::OidcState, link_user.unwrap_or(0), data, STATE_MS).await?;
        let scopes = p.scopes();
        let challenge = oidc::pkce_challenge(&verifier);
        let redirect_uri = self.callback_url(&p.name);
        let endpoint = match p.kind {
            ProviderKind::Oidc => self.metadata(p, false).await?.0.authorization_endpoint.clone(),
            ProviderKind::Github => oidc::GithubEndpoints::for_provider(p).authorize,
        };
        let req = oidc::AuthorizationRequest {
            endpoint: &endpoint,
            client_id: &p.client_id,
            redirect_uri: &redirect_uri,
            scopes: &scopes,
            state: &state,
            nonce: (p.kind == ProviderKind::Oidc).then_some(nonce.as_str()),
            code_challenge: &challenge,
        };
        oidc::authorization_url(&req).map_err(provider_error)
    }

    /// Exchanges the code and returns who the provider says signed in.
    async fn claims(&self, p: &OidcProvider, code: &str, data: &Value) -> Result<Claims> {
        let verifier = data["verifier"].as_str().unwrap_or_default();
        let redirect_uri = self.callback_url(&p.name);
        let form = |t: &oidc::TokenRequest| {
            let mut h = vec![("content-type", oidc::FORM_CONTENT_TYPE.to_string())];
            if let Some(a) = &t.authorization {
                h.push(("authorization", a.clone()));
            }
            h
        };
        match p.kind {
            ProviderKind::Oidc => {
                let meta = self.metadata(p, false).await?;
                let t = oidc::token_request(
                    code,
                    &redirect_uri,
                    &p.client_id,
                    &p.client_secret,
                    verifier,
                    meta.0.client_auth(),
                );
                let (status, body) =
                    self.call(http::Method::POST, &meta.0.token_endpoint, &form(&t), t.body.clone()).await?;
                let tokens = oidc::parse_token_response(status, &body).map_err(provider_error)?;
                let id_token = tokens.id_token.ok_or_else(|| provider_error("no ID token in the answer"))?;
                let expect = oidc::IdTokenExpect {
                    issuer: &meta.0.issuer,
                    client_id: &p.client_id,
                    nonce: data["nonce"].as_str().unwrap_or_default(),
                    now: self.relay.ports.clock.now_ms() / 1000,
                };
                match oidc::verify_id_token(&id_token, &meta.1, &expect) {
                    // The provider rotated its keys since we read them.
                    Err(oidc::OidcError::UnknownKid(_)) => {
                        let meta = self.metadata(p, true).await?;
                        Ok(oidc::verify_id_token(&id_token, &meta.1, &expect).map_err(provider_error)?)
                    }
                    other => Ok(other.map_err(provider_error)?),
                }
            }
            ProviderKind::Github => {
                let ends = oidc::GithubEndpoints::for_provider(p);
                let t = oidc::github_token_request(code, &redirect_uri, &p.client_id, &p.client_secret, verifier);
                let (status, body) = self.call(http::Method::POST, &ends.token, &form(&t), t.body.clone()).await?;
                let tokens = oidc::parse_token_response(status, &body).map_err(provider_error)?;
                let auth = [
                    ("authorization", format!("Bearer {}", tokens.access_token)),
                    ("accept", oidc::GITHUB_API_ACCEPT.to_string()),
                    (oidc::GITHUB_API_VERSION.0, oidc::GITHUB_API_VERSION.1.to_string()),
                ];
                let (status, body) = self.call(http::Method::GET, &ends.user, &auth, String::new()).await?;
                let user = oidc::parse_github_user(status, &body).map_err(provider_error)?;
                let (status, body) = self.call(http::Method::GET, &ends.emails, &auth, String::new()).await?;
                let emails = oidc::parse_github_emails(status, &body).map_err(provider_error)?;
                Ok(oidc::github_claims(&user, &emails))
            }
        }
    }
}

/// Where to land after sign-in: a path on the web app, never another site.
fn landing(raw: Option<&str>) -> String {
    match raw {
        Some(p) if p.starts_with('/') && !p.starts_with("//") && !p.contains('\\') && p.len() <= 512 => p.to_string(),
        _ => "/".into(),
    }
}

fn redirect(to: &str, cookies: Vec<String>) -> Response {
    let mut resp = Response::new(axum::body::Body::empty());
    *resp.status_mut() = http::StatusCode::FOUND;
    if let Ok(v) = http::HeaderValue::from_str(to) {
        resp.headers_mut().insert(http::header::LOCATION, v);
    }
    resp.headers_mut().insert(http::header::CACHE_CONTROL, http::HeaderValue::from_static("no-store"));
    for c in cookies {
        if let Ok(v) = http::HeaderValue::from_str(&c) {
            resp.headers_mut().append(http::header::SET_COOKIE, v);
        }
    }
    resp
}

fn query_param(parts: &Parts, key: &str) -> Option<String> {
    let q = parts.uri.query()?;
    url::form_urlencoded::parse(q.as_bytes()).find(|(k, _)| k == key).map(|(_, v)| v.into_owned())
}

/// `GET /api/auth/oidc/{name}/start?redirect=/path`: off to the provider.
pub async fn start<P: Platform>(State(a): State<Arc<Auth<P>>>, Path(name): Path<String>, parts: Parts) -> Response {
    let reply = async {
        a.throttle_ip(&parts, "oidc").await?;
        let p = a.provider(&name)?;
        let to = landing(query_param(&parts, "redirect").as_deref());
        a.authorization(&p, &to, None).await
    };
    match reply.await {
        Ok(url) => redirect(&url, vec![]),
        Err(e) => respond(&parts, Err(e)),
    }
}

/// `POST /api/me/identities/{name}`: `{authorization_url}` to link the provider to this account.
pub async fn link<P: Platform>(State(a): State<Arc<Auth<P>>>, Path(name): Path<String>, parts: Parts) -> Response {
    let reply = async {
        let me = a.relay.caller(&parts).await?;
        let p = a.provider(&name)?;
        let url = a.authorization(&p, "/settings/account", Some(me.user.id)).await?;
        Ok(Reply::ok(json!({ "authorization_url": url })))
    };
    respond(&parts, reply.await)
}

/// `DELETE /api/me/identities/{name}`: unless it is the only way left to sign in.
pub async fn unlink<P: Platform>(State(a): State<Arc<Auth<P>>>, Path(name): Path<String>, parts: Parts) -> Response {
    let reply = async {
        let me = a.relay.caller(&parts).await?;
        let store = &a.relay.ports.store;
        let acct = a.my_account(&parts).await?;
        let linked = store.identities(me.user.id).await?;
        if acct.password_hash.is_none() && linked.len() <= 1 {
            return Err(
                conflict("last_sign_in_method", "Set a password first: this is your only way to sign in.").into()
            );
        }
        store.unlink_identity(me.user.id, &name).await?;
        let event =
            Audit::new("provider_unlink", Some(me.user.id), Some(me.user.id)).subject(format!("provider:{name}"));
        a.relay.audit(&parts, event).await;
        Ok(Reply::ok(json!({ "unlinked": name })))
    };
    respond(&parts, reply.await)
}

/// `GET /api/auth/oidc/{name}/callback?code&state`: the provider sends the
/// browser back here. Answers with a redirect to the web app: signed in (the
/// session's cookies set), on to the second factor, or with `?error=`.
pub async fn callback<P: Platform>(State(a): State<Arc<Auth<P>>>, Path(name): Path<String>, parts: Parts) -> Response {
    let base = a.settings().base_url().to_string();
    match finish(&a, &name, &parts).await {
        Ok((to, cookies)) => redirect(&format!("{base}{to}"), cookies),
        Err(Fail(e, _)) => {
            tracing::info!(provider = %name, code = e.code, "OIDC sign-in refused: {}", e.message);
            redirect(&format!("{base}/signin?error={}", e.code), vec![])
        }
    }
}

async fn finish<P: Platform>(a: &Auth<P>, name: &str, parts: &Parts) -> Result<(String, Vec<String>)> {
    a.throttle_ip(parts, "oidc").await?;
    let p = a.provider(name)?;
    let query = parts.uri.query().unwrap_or_default();
    let state = query_param(parts, "state").unwrap_or_default();
    let bad_state = || ApiError::invalid("invalid_state", "This sign-in expired or was already used; start again.");
    let ticket = a.take(Purpose::OidcState, &state).await?.ok_or_else(bad_state)?;
    let data: Value = serde_json::from_str(&ticket.data).unwrap_or_default();
    if data["provider"] != json!(p.name) {
        return Err(bad_state().into());
    }
    let issuer = match p.kind {
        ProviderKind::Oidc => Some(a.metadata(&p, false).await?.0.issuer.clone()),
        ProviderKind::Github => None,
    };
    let code = oidc::parse_callback(query, &state, issuer.as_deref()).map_err(|e| match e {
        oidc::OidcError::Provider { .. } => ApiError::invalid("provider_declined", e.to_string()),
        e => ApiError::invalid("invalid_callback", e.to_string()),
    })?;
    let claims = a.claims(&p, &code, &data).await?;
    let to = landing(data["redirect"].as_str());
    let store = &a.relay.ports.store;
    let origin = Origin::of(parts);
    let now = a.relay.ports.clock.now_ms();
    let identity = |user_id| Identity {
        provider: p.name.clone(),
        subject: claims.sub.clone(),
        user_id,
        email: claims.email.clone(),
        created_at: now,
    };

    // Linking from a signed-in account.
    if let Some(user_id) = data["link"].as_i64() {
        match store.link_identity(identity(user_id)).await {
            Err(StoreError::Conflict(_)) => {
                return Err(conflict("identity_taken", "This account at the provider is linked to another user.").into())
            }
            other => other?,
        }
        let event = Audit::new("provider_link", Some(user_id), Some(user_id)).subject(format!("provider:{}", p.name));
        a.relay.audit_from(origin, event).await;
        return Ok((to, vec![]));
    }

    let user_id = match store.identity(&p.name, &claims.sub).await? {
        Some(known) => known.user_id,
        None => new_or_linked(a, &p, &claims, identity, origin.clone()).await?,
    };
    let user = store.user(user_id).await?.filter(|u| u.status == UserStatus::Enabled);
    let user = user.ok_or_else(|| reply::forbidden("user_disabled", "This account is disabled."))?;
    let acct = store.account(user.id).await?;
    let second = acct.as_ref().is_some_and(|x| x.totp_enabled) || a.settings().require_2fa.contains(&user.role);
    if second {
        // The provider vouched for the first factor; the second is still ours to ask.
        let enrol = !acct.as_ref().is_some_and(|x| x.totp_enabled);
        let data = json!({ "attempts": 0, "enrol": enrol, "delivery": false });
        let ticket = a.ticket(Purpose::SecondFactor, user.id, data, 5 * 60_000).await?;
        return Ok((format!("/signin?second_factor={ticket}&enrol={enrol}"), vec![]));
    }
    let r = a.start_session(parts, &user, Delivery::Cookie, &format!("oidc:{}", p.name), json!({})).await?;
    Ok((to, r.cookies))
}

/// The first sign-in with this identity: the account with its verified
/// email, else a new account (when sign-up is open).
async fn new_or_linked<P: Platform>(
    a: &Auth<P>,
    p: &OidcProvider,
    claims: &Claims,
    identity: impl Fn(i64) -> Identity,
    origin: Origin,
) -> Result<i64> {
    let store = &a.relay.ports.store;
    let email = claims.email.as_deref().map(str::to_lowercase);
    let existing = match &email {
        Some(e) => store.account_by_email(e).await?,
        None => None,
    };
    if let Some(acct) = existing {
        if !claims.email_verified {
            return Err(conflict(
                "email_not_verified_by_provider",
                "An account has this email, and the provider has not verified it: sign in with your password and link the provider from your settings.",
            )
            .into());
        }
        store.link_identity(identity(acct.user_id)).await?;
        let event = Audit::new("provider_link", Some(acct.user_id), Some(acct.user_id))
            .subject(format!("provider:{}", p.name))
            .detail(json!({ "by": "verified_email" }));
        a.relay.audit_from(origin, event).await;
        return Ok(acct.user_id);
    }
    let s = a.settings();
    if s.registration != Registration::Open {
        return Err(
            reply::forbidden("registration_closed", "Sign-up is closed here; ask an admin for an account.").into()
        );
    }
    let email = email.ok_or_else(|| ApiError::invalid("no_email", "The provider shared no email address."))?;
    let display = claims.name.clone().or_else(|| claims.preferred_username.clone());
    let display = crate::signup::display_name(display.as_deref(), &email)?;
    let user =
        NewUser { name: email.clone(), role: Role::User, group: s.default_group.clone(), quota: 0, unlimited: false };
    let acct = NewAccount {
        email: email.clone(),
        email_verified: claims.email_verified,
        password_hash: None,
        display_name: display,
    };
    let now = a.relay.ports.clock.now_ms();
    let (user, _) = match store.create_account(user, acct, None, now).await {
        Err(StoreError::Conflict(_)) => {
            return Err(conflict("email_taken", "An account with this email already exists.").into())
        }
        other => other?,
    };
    store.link_identity(identity(user.id)).await?;
    a.credit_starting_balance(user.id).await;
    let event = Audit::new("sign_up", Some(user.id), Some(user.id)).detail(json!({ "provider": p.name }));
    a.relay.audit_from(origin, event).await;
    Ok(user.id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn landing_stays_on_the_app() {
        assert_eq!(landing(Some("/chat/3?x=1")), "/chat/3?x=1");
        assert_eq!(landing(Some("//evil.example")), "/");
        assert_eq!(landing(Some("https://evil.example")), "/");
        assert_eq!(landing(Some("/\\evil")), "/");
        assert_eq!(landing(None), "/");
    }
}
