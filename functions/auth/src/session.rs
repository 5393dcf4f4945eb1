//! Sessions: issuing the access JWT and the refresh token, their cookies,
//! rotation on refresh (a replayed refresh token revokes its session), sign-out.

use std::sync::{Arc, RwLock};

use axum::body::Body;
use axum::extract::State;
use axum::response::Response;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use http::request::Parts;
use oblivious_core::auth::{jwt, secret};
use oblivious_core::model::{Id, User, UserStatus};
use oblivious_ports::{Accounts, Clock, Platform, RefreshLookup, Session, SigningKey, Store};
use oblivious_relay::{check_csrf, cookie, Audit, Origin, CSRF_COOKIE};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::reply::{self, respond, unauthorized, Reply, Result};
use crate::Auth;

pub use oblivious_relay::ACCESS_COOKIE;
/// The refresh-token cookie: sent only to `/api/auth`, never readable by the page.
pub const REFRESH_COOKIE: &str = "obl_refresh";
const REFRESH_PREFIX: &str = "ort_";

/// How the client wants its tokens: as cookies (browsers, the default) or
/// in the JSON body (API clients, which send `Authorization: Bearer`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Delivery {
    #[default]
    Cookie,
    Body,
}

/// A signing key: kid, key bytes, created at (Unix ms).
type Key = Arc<(String, Vec<u8>, i64)>;

/// The signing key in use, cached.
#[derive(Default)]
pub(crate) struct Signer {
    current: RwLock<Option<Key>>,
}

impl<P: Platform> Auth<P> {
    /// The key that signs now; makes a new one when the newest is older than
    /// the rotation period (old keys keep verifying until their tokens expire).
    async fn signing_key(&self) -> Result<Key> {
        let s = self.settings();
        let now = self.relay.ports.clock.now_ms();
        let rotate_ms = s.signing_key_rotation_hours as i64 * 3_600_000;
        let fresh = |k: &(String, Vec<u8>, i64)| now - k.2 < rotate_ms;
        if let Some(k) = self.signer.current.read().unwrap_or_else(|p| p.into_inner()).clone().filter(|k| fresh(k)) {
            return Ok(k);
        }
        let store = &self.relay.ports.store;
        let sealer = store.sealer();
        let newest = store.signing_keys().await?.into_iter().next();
        let opened = newest
            .filter(|k| now - k.created_at < rotate_ms)
            .and_then(|k| Some((k.kid.clone(), B64.decode(sealer.open_sealed(&k.secret).ok()?).ok()?, k.created_at)));
        let key = match opened {
            Some(k) => k,
            None => {
                let bytes: [u8; 32] = self.random();
                let kid = format!("k{}", hex_of(&self.random::<6>()));
                // It signs for one rotation period; its last tokens live one access lifetime more.
                let expires_at = now + rotate_ms + s.access_token_seconds as i64 * 1000 + 60_000;
                let stored = SigningKey {
                    kid: kid.clone(),
                    secret: sealer.seal(&B64.encode(bytes)),
                    created_at: now,
                    expires_at,
                };
                store.add_signing_key(stored).await?;
                let _ = store.prune_signing_keys(now).await;
                self.relay.reload_keys(true).await;
                (kid, bytes.to_vec(), now)
            }
        };
        let key = Arc::new(key);
        *self.signer.current.write().unwrap_or_else(|p| p.into_inner()) = Some(key.clone());
        Ok(key)
    }

    /// A new session for `user_id` (not yet stored) and its refresh token.
    pub(crate) fn new_session(&self, user_id: Id, origin: &Origin) -> (Session, String) {
        let now = self.relay.ports.clock.now_ms();
        let refresh = secret::token(REFRESH_PREFIX, self.random());
        let session = Session {
            id: format!("ses_{}", hex_of(&self.random::<16>())),
            user_id,
            refresh_hash: secret::hash(&refresh),
            ip: origin.ip.clone(),
            user_agent: origin.user_agent.clone(),
            created_at: now,
            last_seen_at: now,
            expires_at: now + self.settings().refresh_token_days as i64 * 86_400_000,
            revoked_at: None,
        };
        (session, refresh)
    }

    /// The answer that hands a session to the client: cookies, or tokens in the body.
    pub(crate) async fn issue(
        &self,
        user: &User,
        session: &Session,
        refresh: &str,
        delivery: Delivery,
        extra: Value,
    ) -> Result<Reply> {
        let s = self.settings();
        let key = self.signing_key().await?;
        let now_s = self.relay.ports.clock.now_ms() / 1000;
        let claims = jwt::Claims {
            iss: jwt::ISSUER.into(),
            sub: user.id.to_string(),
            sid: session.id.clone(),
            iat: now_s,
            exp: now_s + s.access_token_seconds as i64,
        };
        let access = jwt::sign(&claims, &key.0, &key.1);
        let mut body = json!({
            "user": user,
            "session_id": session.id,
            "expires_in": s.access_token_seconds,
        });
        if let (Value::Object(b), Value::Object(e)) = (&mut body, extra) {
            b.extend(e);
        }
        match delivery {
            Delivery::Body => {
                body["access_token"] = json!(access);
                body["token_type"] = json!("Bearer");
                body["refresh_token"] = json!(refresh);
                Ok(Reply::ok(body))
            }
            Delivery::Cookie => {
                let csrf = secret::token("", self.random());
                let refresh_age = (session.expires_at - session.created_at) / 1000;
                let cookies = vec![
                    self.cookie(ACCESS_COOKIE, &access, "/", s.access_token_seconds as i64, true, "Lax"),
                    self.cookie(REFRESH_COOKIE, refresh, "/api/auth", refresh_age, true, "Strict"),
                    self.cookie(CSRF_COOKIE, &csrf, "/", refresh_age, false, "Lax"),
                ];
                body["csrf_token"] = json!(csrf);
                Ok(Reply::ok(body).cookies(cookies))
            }
        }
    }

    fn cookie(&self, name: &str, value: &str, path: &str, max_age: i64, http_only: bool, same_site: &str) -> String {
        let secure = if self.settings().cookie_secure { "; Secure" } else { "" };
        let http_only = if http_only { "; HttpOnly" } else { "" };
        format!("{name}={value}; Path={path}; Max-Age={max_age}; SameSite={same_site}{http_only}{secure}")
    }

    /// `Set-Cookie` headers that clear the session's cookies.
    pub(crate) fn clear_cookies(&self) -> Vec<String> {
        vec![
            self.cookie(ACCESS_COOKIE, "", "/", 0, true, "Lax"),
            self.cookie(REFRESH_COOKIE, "", "/api/auth", 0, true, "Strict"),
            self.cookie(CSRF_COOKIE, "", "/", 0, false, "Lax"),
        ]
    }

    /// Stores a new session for `user` and answers with it (sign-in's last step).
    pub(crate) async fn start_session(
        &self,
        parts: &Parts,
        user: &User,
        delivery: Delivery,
        method: &str,
        extra: Value,
    ) -> Result<Reply> {
        let origin = Origin::of(parts);
        let (session, refresh) = self.new_session(user.id, &origin);
        self.relay.ports.store.create_session(session.clone()).await?;
        let event = Audit::new("sign_in", Some(user.id), Some(user.id)).subject(format!("session:{}", session.id));
        self.relay.audit_from(origin, event.detail(json!({ "method": method }))).await;
        self.issue(user, &session, &refresh, delivery, extra).await
    }
}

pub(crate) fn hex_of(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RefreshReq {
    refresh_token: Option<String>,
}

/// `POST /api/auth/refresh`: a new access token and refresh token for the
/// refresh token in the body (tokens come back in the body) or the cookie
/// (cookies come back; the CSRF header is required).
pub async fn refresh<P: Platform>(State(a): State<Arc<Auth<P>>>, parts: Parts, raw: Body) -> Response {
    let reply = async {
        let req: RefreshReq = reply::json(&parts, raw).await?;
        let (token, delivery) = match req.refresh_token {
            Some(t) => (t, Delivery::Body),
            None => {
                check_csrf(&parts)?;
                let t = cookie(&parts.headers, REFRESH_COOKIE)
                    .ok_or_else(|| unauthorized("missing_refresh_token", "Send a refresh token."))?;
                (t.to_string(), Delivery::Cookie)
            }
        };
        let invalid = || unauthorized("invalid_refresh_token", "This session has ended; sign in again.");
        let store = &a.relay.ports.store;
        let now = a.relay.ports.clock.now_ms();
        let old_hash = secret::hash(&token);
        let session = match store.session_by_refresh(&old_hash).await? {
            RefreshLookup::Unknown => return Err(invalid().into()),
            RefreshLookup::Reused(s) => return Err(replayed(&a, &parts, s).await),
            RefreshLookup::Current(s) if !s.active(now) => return Err(invalid().into()),
            RefreshLookup::Current(s) => s,
        };
        let user = store.user(session.user_id).await?.filter(|u| u.status == UserStatus::Enabled);
        let user = user.ok_or_else(invalid)?;
        let origin = Origin::of(&parts);
        let (next, refresh) = a.new_session(user.id, &origin);
        let rotated =
            store.rotate_session(&session.id, &old_hash, &next.refresh_hash, origin.ip, origin.user_agent, now).await?;
        // Another request rotated this token first: two holders of one token.
        let rotated = match rotated {
            Some(s) => s,
            None => return Err(replayed(&a, &parts, session).await),
        };
        a.issue(&user, &rotated, &refresh, delivery, json!({})).await
    };
    respond(&parts, reply.await)
}

/// A refresh token used twice: someone else has it. The session ends.
async fn replayed<P: Platform>(a: &Auth<P>, parts: &Parts, s: Session) -> reply::Fail {
    let now = a.relay.ports.clock.now_ms();
    if let Err(e) = a.relay.ports.store.revoke_session(&s.id, now).await {
        tracing::error!("could not revoke a replayed session: {e}");
    }
    let event = Audit::new("refresh_reuse", None, Some(s.user_id)).subject(format!("session:{}", s.id));
    a.relay.audit(parts, event).await;
    unauthorized("refresh_token_reused", "This refresh token was already used; the session is revoked. Sign in again.")
        .into()
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct SignOut {
    /// Ends every session of the user, this one included.
    #[serde(default)]
    everywhere: bool,
}

/// `POST /api/auth/signout`: ends this session (or all of them) and clears the cookies.
pub async fn signout<P: Platform>(State(a): State<Arc<Auth<P>>>, parts: Parts, raw: Body) -> Response {
    let reply = async {
        let req: SignOut = reply::json(&parts, raw).await?;
        let caller = a.relay.caller(&parts).await?;
        let sid = caller.session.clone().ok_or_else(|| unauthorized("session_required", "Sign in first."))?;
        let now = a.relay.ports.clock.now_ms();
        let store = &a.relay.ports.store;
        let ended = if req.everywhere {
            store.revoke_sessions(caller.user.id, None, now).await?
        } else {
            store.revoke_session(&sid, now).await?;
            1
        };
        let action = if req.everywhere { "sign_out_everywhere" } else { "sign_out" };
        let event = Audit::new(action, Some(caller.user.id), Some(caller.user.id)).subject(format!("session:{sid}"));
        a.relay.audit(&parts, event).await;
        Ok(Reply::ok(json!({ "signed_out": ended })).cookies(a.clear_cookies()))
    };
    respond(&parts, reply.await)
}
