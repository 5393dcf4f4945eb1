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
/// A body in one chunk is kept as it came; one in several is gathered once
/// into a buffer sized from `Content-Length` (no doubling, no second copy).
pub async fn read_body(parts: &http::request::Parts, body: Body, limit: usize) -> Result<Bytes, ApiError> {
    use futures_util::StreamExt;
    let declared = parts
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large(limit));
    }
    let mut stream = body.into_data_stream();
    let (mut first, mut joined): (Option<Bytes>, Vec<u8>) = (None, Vec::new());
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(read_error)?;
        let len = first.as_ref().map_or(0, Bytes::len) + joined.len() + chunk.len();
        if len > limit {
            return Err(too_large(limit));
        }
        match first.take() {
            None if joined.is_empty() => first = Some(chunk),
            earlier => {
                if let Some(earlier) = earlier {
                    joined.reserve(declared.map_or(len, |n| n as usize).max(len));
                    joined.extend_from_slice(&earlier);
                }
                joined.extend_from_slice(&chunk);
            }
        }
    }
    Ok(first.unwrap_or_else(|| joined.into()))
}

fn read_error(e: axum::Error) -> ApiError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&e);
    while let Some(s) = source {
        // The runtime shell ends a body that does not arrive in time with a TimedOut error.
        if s.downcast_ref::<std::io::Error>().is_some_and(|e| e.kind() == std::io::ErrorKind::TimedOut) {
            return ApiError::invalid("request_timeout", "The request body did not arrive in time.").with_status(408);
        }
        source = s.source();
    }
    ApiError::invalid("body_read_failed", format!("Could not read the request body: {e}"))
}
