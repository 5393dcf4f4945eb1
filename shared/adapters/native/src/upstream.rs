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
    async fn send(&self, req: UpstreamRequest) -> Result<UpstreamResponse, UpstreamError> {
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
