//! The one API error type. It knows its HTTP status and renders the caller's
//! wire format (OpenAI `{"error":{...}}` for every endpoint in this crate today).

use serde_json::json;

/// What went wrong, in terms a client can act on. Each kind has one status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// 400: the request body or parameters are wrong.
    InvalidRequest,
    /// 401: no key, or a key we do not know.
    InvalidApiKey,
    /// 403: the key exists but may not do this (disabled, expired, model or IP).
    PermissionDenied,
    /// 404: unknown model or route.
    NotFound,
    /// 409: the change conflicts with current state.
    Conflict,
    /// 413: the body is over the configured limit.
    TooLarge,
    /// 429: the key's quota is used up.
    InsufficientQuota,
    /// 429: too many requests.
    RateLimited,
    /// 500: our own fault.
    Internal,
    /// 502: every upstream attempt failed.
    UpstreamFailed,
    /// 503: no channel can serve the model right now.
    NoChannel,
    /// 504: the upstream did not answer in time.
    UpstreamTimeout,
}

impl ErrorKind {
    pub fn status(self) -> u16 {
        match self {
            ErrorKind::InvalidRequest => 400,
            ErrorKind::InvalidApiKey => 401,
            ErrorKind::PermissionDenied => 403,
            ErrorKind::NotFound => 404,
            ErrorKind::Conflict => 409,
            ErrorKind::TooLarge => 413,
            ErrorKind::InsufficientQuota | ErrorKind::RateLimited => 429,
            ErrorKind::Internal => 500,
            ErrorKind::UpstreamFailed => 502,
            ErrorKind::NoChannel => 503,
            ErrorKind::UpstreamTimeout => 504,
        }
    }

    /// OpenAI's `error.type` for this kind.
    fn openai_type(self) -> &'static str {
        match self {
            ErrorKind::InvalidRequest
            | ErrorKind::NotFound
            | ErrorKind::Conflict
            | ErrorKind::TooLarge
            | ErrorKind::InvalidApiKey => "invalid_request_error",
            ErrorKind::PermissionDenied => "permission_error",
            ErrorKind::InsufficientQuota => "insufficient_quota",
            ErrorKind::RateLimited => "requests",
            ErrorKind::Internal | ErrorKind::NoChannel => "server_error",
            ErrorKind::UpstreamFailed | ErrorKind::UpstreamTimeout => "upstream_error",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{kind:?} ({code}): {message}")]
pub struct ApiError {
    pub kind: ErrorKind,
    /// Machine-readable code, e.g. `invalid_api_key`, `model_not_found`.
    pub code: &'static str,
    pub message: String,
    pub param: Option<&'static str>,
    /// Overrides the kind's status, used to pass an upstream's own status through.
    pub status_override: Option<u16>,
}

impl ApiError {
    pub fn new(kind: ErrorKind, code: &'static str, message: impl Into<String>) -> Self {
        ApiError { kind, code, message: message.into(), param: None, status_override: None }
    }

    pub fn with_param(mut self, param: &'static str) -> Self {
        self.param = Some(param);
        self
    }

    pub fn with_status(mut self, status: u16) -> Self {
        self.status_override = Some(status);
        self
    }

    pub fn status(&self) -> u16 {
        self.status_override.unwrap_or_else(|| self.kind.status())
    }

    pub fn invalid(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidRequest, code, message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Internal, "internal_error", message)
    }

    pub fn not_found(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(ErrorKind::NotFound, code, message)
    }

    /// OpenAI's error body: `{"error":{"message","type","param","code"}}`.
    pub fn openai_json(&self) -> serde_json::Value {
        json!({
            "error": {
                "message": self.message,
                "type": self.kind.openai_type(),
                "param": self.param,
                "code": self.code,
            }
        })
    }

    pub fn openai_body(&self) -> String {
        self.openai_json().to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_openai_shape() {
        let e = ApiError::new(ErrorKind::InvalidApiKey, "invalid_api_key", "bad key");
        assert_eq!(e.status(), 401);
        let v = e.openai_json();
        assert_eq!(v["error"]["code"], "invalid_api_key");
        assert_eq!(v["error"]["type"], "invalid_request_error");
        assert_eq!(v["error"]["message"], "bad key");
        assert!(v["error"]["param"].is_null());
        assert_eq!(e.clone().with_status(503).status(), 503);
    }
}
