//! Answers: JSON bodies with `Set-Cookie` headers, errors in the API's one
//! shape (`{"error": {message, type, code, param}}`), bodies read with a cap.

use axum::body::Body;
use axum::response::Response;
use http::request::Parts;
use http::HeaderValue;
use oblivious_core::{ApiError, ErrorKind};
use oblivious_relay::RequestId;
use serde::de::DeserializeOwned;
use serde_json::Value;

pub(crate) type Result<T> = std::result::Result<T, Fail>;

/// An error answer, with the seconds for `Retry-After` when throttled.
#[derive(Debug)]
pub(crate) struct Fail(pub ApiError, pub Option<u64>);

impl From<ApiError> for Fail {
    fn from(e: ApiError) -> Self {
        Fail(e, None)
    }
}

impl From<oblivious_ports::StoreError> for Fail {
    fn from(e: oblivious_ports::StoreError) -> Self {
        Fail(store(e), None)
    }
}

/// Account requests are small; anything bigger is refused (413).
pub(crate) const MAX_BODY: usize = 64 * 1024;

pub(crate) struct Reply {
    pub status: u16,
    pub body: Value,
    pub cookies: Vec<String>,
}

impl Reply {
    pub fn ok(body: Value) -> Reply {
        Reply { status: 200, body, cookies: vec![] }
    }

    pub fn status(mut self, status: u16) -> Reply {
        self.status = status;
        self
    }

    pub fn cookies(mut self, cookies: Vec<String>) -> Reply {
        self.cookies = cookies;
        self
    }
}

pub(crate) fn request_id(parts: &Parts) -> String {
    parts.extensions.get::<RequestId>().map(|r| r.0.clone()).unwrap_or_default()
}

pub(crate) fn respond(parts: &Parts, reply: Result<Reply>) -> Response {
    let rid = request_id(parts);
    match reply {
        Ok(r) => {
            let mut resp = oblivious_relay::json_response(r.status, r.body.to_string().into(), &rid);
            for c in r.cookies {
                if let Ok(v) = HeaderValue::from_str(&c) {
                    resp.headers_mut().append(http::header::SET_COOKIE, v);
                }
            }
            resp.headers_mut().insert(http::header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            resp
        }
        Err(Fail(e, retry_after)) => {
            let mut resp = oblivious_relay::error_response(&e, &rid);
            if let Some(secs) = retry_after {
                resp.headers_mut().insert(http::header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
            }
            resp
        }
    }
}

/// Reads and parses a JSON body (413 past [`MAX_BODY`], 400 when malformed).
pub(crate) async fn json<T: DeserializeOwned>(parts: &Parts, raw: Body) -> Result<T> {
    let bytes = oblivious_relay::read_body(parts, raw, MAX_BODY).await?;
    let bytes: &[u8] = if bytes.is_empty() { b"{}" } else { &bytes };
    Ok(serde_json::from_slice(bytes).map_err(|e| invalid_body(&e))?)
}

fn invalid_body(e: &serde_json::Error) -> ApiError {
    ApiError::invalid("invalid_body", format!("Invalid request body: {e}."))
}

pub(crate) fn store(e: oblivious_ports::StoreError) -> ApiError {
    match e {
        oblivious_ports::StoreError::NotFound(what) => ApiError::not_found("not_found", format!("{what} not found")),
        oblivious_ports::StoreError::Conflict(why) => ApiError::new(ErrorKind::Conflict, "conflict", why),
        oblivious_ports::StoreError::Backend(why) => ApiError::internal(why),
    }
}

/// 429 with `Retry-After`.
pub(crate) fn throttled(code: &'static str, retry_after_s: u64) -> Fail {
    Fail(
        ApiError::new(ErrorKind::RateLimited, code, "Too many attempts; wait a moment and try again."),
        Some(retry_after_s),
    )
}

pub(crate) fn unauthorized(code: &'static str, message: &str) -> ApiError {
    ApiError::new(ErrorKind::InvalidApiKey, code, message)
}

pub(crate) fn forbidden(code: &'static str, message: &str) -> ApiError {
    ApiError::new(ErrorKind::PermissionDenied, code, message)
}

pub(crate) fn conflict(code: &'static str, message: &str) -> ApiError {
    ApiError::new(ErrorKind::Conflict, code, message)
}
