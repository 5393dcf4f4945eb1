//! CORS on the relay routes, from `[relay.cors]`. Browsers on other origins
//! (a chat UI in client mode, a playground, a notebook) may call them: they
//! authenticate by a key in a header, never by a cookie. Read at start.

use http::{HeaderName, HeaderValue, Method};
use oblivious_core::config::CorsSettings;
use tower_http::cors::{AllowHeaders, AllowMethods, AllowOrigin, CorsLayer};

/// Headers SDKs read from answers.
const EXPOSED: &[&str] = &[
    "x-request-id",
    "x-ratelimit-limit-requests",
    "x-ratelimit-remaining-requests",
    "x-ratelimit-reset-requests",
    "x-ratelimit-limit-tokens",
    "x-ratelimit-remaining-tokens",
    "x-ratelimit-reset-tokens",
    "retry-after",
    "retry-after-ms",
];

/// The layer, or `None` when no origin is allowed.
pub(crate) fn layer(s: &CorsSettings) -> Option<CorsLayer> {
    if s.allowed_origins.is_empty() {
        return None;
    }
    let origin = if s.allowed_origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(s.allowed_origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()))
    };
    let headers = if s.allowed_headers.iter().any(|h| h == "*") {
        AllowHeaders::mirror_request()
    } else {
        AllowHeaders::list(s.allowed_headers.iter().filter_map(|h| HeaderName::try_from(h.as_str()).ok()))
    };
    let methods = AllowMethods::list(s.allowed_methods.iter().filter_map(|m| Method::try_from(m.as_str()).ok()));
    Some(
        CorsLayer::new()
            .allow_origin(origin)
            .allow_methods(methods)
            .allow_headers(headers)
            .expose_headers(EXPOSED.iter().map(|h| HeaderName::from_static(h)).collect::<Vec<_>>())
            .max_age(std::time::Duration::from_secs(s.max_age_seconds)),
    )
}
