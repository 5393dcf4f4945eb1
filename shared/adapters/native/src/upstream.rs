//! Outbound HTTP with reqwest: pooled keep-alive connections, TCP_NODELAY, and
//! a streamed body that cancels the call when dropped.

use std::time::Duration;

use futures_util::TryStreamExt;
use oblivious_ports::{Upstream, UpstreamError, UpstreamRequest, UpstreamResponse};

#[derive(Clone)]
pub struct HttpUpstream {
    client: reqwest::Client,
}

impl HttpUpstream {
    pub fn new() -> Result<Self, String> {
        let client = reqwest::Client::builder()
            .tcp_nodelay(true)
            .connect_timeout(Duration::from_secs(10))
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(256)
            .build()
            .map_err(|e| e.to_string())?;
        Ok(HttpUpstream { client })
    }
}

fn classify(e: reqwest::Error) -> UpstreamError {
    if e.is_timeout() {
        UpstreamError::Timeout
    } else {
        UpstreamError::Connect(e.to_string())
    }
}

impl Upstream for HttpUpstream {
    async fn send(&self, mut req: UpstreamRequest) -> Result<UpstreamResponse, UpstreamError> {
        pass_trace_context(&mut req.headers);
        let resp = self
            .client
            .request(req.method, &req.url)
            .headers(req.headers)
            .body(req.body)
            .send()
            .await
            .map_err(classify)?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp.bytes_stream().map_err(|e| UpstreamError::Body(e.to_string()));
        Ok(UpstreamResponse { status, headers, body: Box::pin(body) })
    }
}

/// When the call runs in a traced span (OpenTelemetry on), the upstream gets
/// that span as its parent in `traceparent` (W3C trace context).
fn pass_trace_context(headers: &mut http::HeaderMap) {
    use opentelemetry::trace::TraceContextExt;
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    let cx = tracing::Span::current().context();
    if !cx.span().span_context().is_valid() {
        return;
    }
    opentelemetry::global::get_text_map_propagator(|p| p.inject_context(&cx, &mut HeaderInjector(headers)));
}

struct HeaderInjector<'a>(&'a mut http::HeaderMap);

impl opentelemetry::propagation::Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(k), Ok(v)) = (http::HeaderName::from_bytes(key.as_bytes()), http::HeaderValue::from_str(&value)) {
            self.0.insert(k, v);
        }
    }
}
