//! Who is calling an account or admin route: an API key's owner or a
//! signed-in person (an access JWT as `Authorization: Bearer` or the
//! `obl_access` cookie). [`gate`] resolves the caller once and applies the
//! role table (`oblivious_core::auth::roles`) to every route it covers, so
//! no handler checks roles on its own.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, RwLock};

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use oblivious_core::auth::jwt;
use oblivious_core::auth::roles::{self, Access};
use oblivious_core::model::{Role, Token, User, UserStatus};
use oblivious_core::{apikey, ApiError, ErrorKind};
use oblivious_ports::{Accounts, Clock, Ids, Platform, SigningKey, Store};

use crate::audit::Origin;
use crate::{error_response, Audit, Relay, RequestId};

/// The access-token cookie (HttpOnly; the refresh cookie is the auth function's).
pub const ACCESS_COOKIE: &str = "obl_access";
/// The CSRF cookie, readable by the page, echoed in [`CSRF_HEADER`] on unsafe methods.
pub const CSRF_COOKIE: &str = "obl_csrf";
pub const CSRF_HEADER: &str = "x-csrf-token";

/// An authenticated caller of an account or admin route.
#[derive(Debug)]
pub struct Caller {
    pub user: User,
    /// The API key, when the caller used one.
    pub token: Option<Token>,
    /// The session id, when the caller is signed in.
    pub session: Option<String>,
}

impl Caller {
    pub fn by_session(&self) -> bool {
        self.session.is_some()
    }

    pub fn role(&self) -> Role {
        self.user.role
    }
}

/// A verification key: kid, key bytes, expiry (Unix ms).
type Key = (String, Vec<u8>, i64);

/// Verification keys for access tokens, loaded from the store (unsealed).
#[derive(Default)]
pub(crate) struct KeyRing {
    keys: RwLock<Arc<Vec<Key>>>,
    /// When the store was last read for an unknown kid (Unix ms), so forged
    /// kids cannot turn every request into a store read.
    loaded_at: AtomicI64,
}

/// An unknown kid reloads the keys at most this often.
const RELOAD_AFTER_MS: i64 = 1000;

impl<P: Platform> Relay<P> {
    /// The caller [`gate`] resolved for this request, or resolves it now.
    pub async fn caller(&self, parts: &http::request::Parts) -> Result<Arc<Caller>, ApiError> {
        if let Some(c) = parts.extensions.get::<Arc<Caller>>() {
            return Ok(c.clone());
        }
        self.resolve_caller(parts).await
    }

    async fn resolve_caller(&self, parts: &http::request::Parts) -> Result<Arc<Caller>, ApiError> {
        let bearer = apikey::extract(&parts.headers, None);
        if let Some(token) = bearer.filter(|t| looks_like_jwt(t)) {
            return self.session_caller(token).await;
        }
        if bearer.is_none() {
            if let Some(token) = cookie(&parts.headers, ACCESS_COOKIE) {
                check_csrf(parts)?;
                return self.session_caller(token).await;
            }
        }
        let p = self.authenticate(parts).await?;
        Ok(Arc::new(Caller { user: p.user.clone(), token: Some(p.token.clone()), session: None }))
    }

    async fn session_caller(&self, token: &str) -> Result<Arc<Caller>, ApiError> {
        let expired =
            || ApiError::new(ErrorKind::InvalidApiKey, "session_expired", "Your session has expired; sign in again.");
        let now = self.ports.clock.now_ms();
        let kid = jwt::kid(token).map_err(|_| expired())?;
        if self.signing_key(&kid).is_none() {
            self.reload_keys(false).await;
        }
        let claims = jwt::verify(token, now / 1000, |k| self.signing_key(k)).map_err(|_| expired())?;
        let store = &self.ports.store;
        let internal = |e: oblivious_ports::StoreError| ApiError::internal(format!("could not check the session: {e}"));
        // Revocation is immediate: the session is read on every call.
        let session = store.session(&claims.sid).await.map_err(internal)?.filter(|s| s.active(now));
        let session = session.ok_or_else(expired)?;
        let user_id: i64 = claims.sub.parse().map_err(|_| expired())?;
        if session.user_id != user_id {
            return Err(expired());
        }
        let user = store.user(user_id).await.map_err(internal)?.ok_or_else(expired)?;
        if user.status != UserStatus::Enabled {
            return Err(ApiError::new(ErrorKind::PermissionDenied, "user_disabled", "This account is disabled."));
        }
        Ok(Arc::new(Caller { user, token: None, session: Some(session.id) }))
    }

    fn signing_key(&self, kid: &str) -> Option<Vec<u8>> {
        let keys = self.keys.keys.read().unwrap_or_else(|p| p.into_inner()).clone();
        let now = self.ports.clock.now_ms();
        keys.iter().find(|(k, _, expires)| k == kid && *expires > now).map(|(_, s, _)| s.clone())
    }

    /// Reads the signing keys from the store (throttled unless `force`): the
    /// auth function calls it after adding one, a verifier on an unknown kid.
    pub async fn reload_keys(&self, force: bool) {
        let now = self.ports.clock.now_ms();
        let last = self.keys.loaded_at.load(Ordering::Relaxed);
        if !force && now - last < RELOAD_AFTER_MS {
            return;
        }
        self.keys.loaded_at.store(now, Ordering::Relaxed);
        match self.ports.store.signing_keys().await {
            Ok(stored) => {
                let sealer = self.ports.store.sealer();
                let open = |k: &SigningKey| {
                    let b64 = sealer.open_sealed(&k.secret).ok()?;
                    Some((k.kid.clone(), B64.decode(b64).ok()?, k.expires_at))
                };
                let keys: Vec<_> = stored.iter().filter_map(open).collect();
                *self.keys.keys.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(keys);
            }
            Err(e) => tracing::warn!("could not load signing keys: {e}"),
        }
    }
}

fn looks_like_jwt(t: &str) -> bool {
    t.starts_with("ey") && t.matches('.').count() == 2
}

/// A cookie's value from the `Cookie` headers.
pub fn cookie<'a>(headers: &'a http::HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim())
        .filter(|v| !v.is_empty())
}

/// Cookie callers on unsafe methods must echo the CSRF cookie in a header
/// (another site can make the browser send cookies, not read them).
pub fn check_csrf(parts: &http::request::Parts) -> Result<(), ApiError> {
    if matches!(parts.method, http::Method::GET | http::Method::HEAD | http::Method::OPTIONS) {
        return Ok(());
    }
    let cookie = cookie(&parts.headers, CSRF_COOKIE);
    let header = parts.headers.get(CSRF_HEADER).and_then(|v| v.to_str().ok());
    match (cookie, header) {
        (Some(c), Some(h)) if oblivious_core::auth::secret::equal(c.as_bytes(), h.as_bytes()) => Ok(()),
        _ => Err(ApiError::new(
            ErrorKind::PermissionDenied,
            "csrf_failed",
            format!("Send the `{CSRF_COOKIE}` cookie's value in the `{CSRF_HEADER}` header."),
        )),
    }
}

/// Middleware over the account and admin routers: resolves the caller and
/// applies the role table. Public routes get the caller when one is signed
/// in and are not refused when none is.
pub async fn gate<P: Platform>(State(relay): State<Arc<Relay<P>>>, req: Request, next: Next) -> Response {
    let Some(access) = roles::access(req.uri().path()) else {
        return next.run(req).await;
    };
    let (mut parts, body) = req.into_parts();
    let request_id = relay.ports.ids.request_id();
    parts.extensions.insert(RequestId(request_id.clone()));
    match (access, relay.resolve_caller(&parts).await) {
        (_, Ok(caller)) if access.allows(caller.role(), caller.by_session()) => {
            parts.extensions.insert(caller);
        }
        (Access::Public, _) => {}
        (Access::Session, Ok(_)) => {
            let e = ApiError::new(
                ErrorKind::PermissionDenied,
                "session_required",
                "Sign in to do this: an API key cannot manage the account.",
            );
            return error_response(&e, &request_id);
        }
        (_, Ok(_)) => {
            let e = ApiError::new(ErrorKind::PermissionDenied, "admin_only", "This endpoint is for admins.");
            return error_response(&e, &request_id);
        }
        (_, Err(e)) => return error_response(&e, &request_id),
    }
    // A successful admin change is audited here, once for every route.
    let change = access != Access::Public && !matches!(parts.method, http::Method::GET | http::Method::HEAD);
    let audit = change.then(|| {
        let actor = parts.extensions.get::<Arc<Caller>>().map(|c| c.user.id);
        (crate::audit::admin_action(&parts.method, parts.uri.path()), actor, Origin::of(&parts))
    });
    let mut resp = next.run(Request::from_parts(parts, body)).await;
    crate::respond::set_request_id(&mut resp, &request_id);
    if let Some((Some((action, target, subject)), actor, origin)) = audit {
        if resp.status().is_success() {
            relay.audit_from(origin, Audit::new(action, actor, target).subject(subject)).await;
        }
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_and_csrf() {
        let mut h = http::HeaderMap::new();
        h.append(http::header::COOKIE, "a=1; obl_csrf=tok; obl_access=ey.x.y".parse().unwrap());
        assert_eq!(cookie(&h, "obl_access"), Some("ey.x.y"));
        assert_eq!(cookie(&h, "b"), None);
        let req = |method: &str, header: Option<&str>| {
            let mut b = http::Request::builder().method(method).uri("/api/me");
            b = b.header(http::header::COOKIE, "obl_csrf=tok");
            if let Some(v) = header {
                b = b.header(CSRF_HEADER, v);
            }
            b.body(()).unwrap().into_parts().0
        };
        assert!(check_csrf(&req("GET", None)).is_ok());
        assert!(check_csrf(&req("POST", Some("tok"))).is_ok());
        assert_eq!(check_csrf(&req("POST", Some("nope"))).unwrap_err().code, "csrf_failed");
        assert_eq!(check_csrf(&req("DELETE", None)).unwrap_err().code, "csrf_failed");
        assert!(looks_like_jwt("eyJh.eyJz.sig") && !looks_like_jwt("sk-abc"));
    }
}
