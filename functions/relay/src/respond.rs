//! Response helpers: OpenAI-shaped errors, the request id header, body limits.

use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use http::{HeaderValue, StatusCode};
use oblivious_core::wire::{self, Inbound};
use oblivious_core::{ApiError, ErrorKind};

pub const REQUEST_ID: &str = "x-request-id";

pub fn error_response(err: &ApiError, request_id: &str) -> Response {
    json_response(err.status(), err.openai_body().into(), request_id)
}

/// An error in the caller's own wire format.
pub fn error_response_in(inbound: Inbound, err: &ApiError, request_id: &str) -> Response {
    json_response(err.status(), wire::error_body(inbound, err).to_string().into(), request_id)
}

pub fn json_response(status: u16, body: Bytes, request_id: &str) -> Response {
    let mut resp = Response::new(Body::from(body));
    *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
    resp.headers_mut().insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    set_request_id(&mut resp, request_id);
    resp
}

pub(crate) fn set_request_id(resp: &mut Response, request_id: &str) {
    if let Ok(v) = HeaderValue::from_str(request_id) {
        resp.headers_mut().insert(REQUEST_ID, v);
    }
}

fn too_large(limit: usize) -> ApiError {
    ApiError::new(
        ErrorKind::TooLarge,
        "request_too_large",
        format!("The request body is larger than the {limit}-byte limit."),
    )
}

/// Reads the whole request body, refusing more than `limit` bytes with 413.
pub async fn read_body(parts: &http::request::Parts, body: Body, limit: usize) -> Result<Bytes, ApiError> {
    let declared = parts
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large(limit));
    }
    axum::body::to_bytes(body, limit).await.map_err(|e| {
        let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&e);
        while let Some(s) = source {
            if s.is::<http_body_util::LengthLimitError>() {
                return too_large(limit);
            }
            // The runtime shell ends a body that does not arrive in time with a TimedOut error.
            if s.downcast_ref::<std::io::Error>().is_some_and(|e| e.kind() == std::io::ErrorKind::TimedOut) {
                return ApiError::invalid("request_timeout", "The request body did not arrive in time.")
                    .with_status(408);
            }
            source = s.source();
        }
        ApiError::invalid("body_read_failed", format!("Could not read the request body: {e}"))
    })
}
