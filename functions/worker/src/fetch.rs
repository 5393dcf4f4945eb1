//! Outbound HTTP on the Workers fetch API: the upstream providers and the
//! REST/HTTPS APIs of Upstash, DynamoDB and SQS all go through it. Bodies
//! stream as they arrive; dropping one (the client went away) aborts the fetch.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::Stream;
use http::{HeaderMap, HeaderName, HeaderValue};
use oblivious_ports::{Upstream, UpstreamError, UpstreamRequest, UpstreamResponse};
use worker::send::{SendFuture, SendWrapper};
use worker::{AbortController, ByteStream, Fetch, Headers, Method, Request, RequestInit};

use crate::runtime::SendStream;

#[derive(Clone, Copy, Default)]
pub struct FetchUpstream;

impl Upstream for FetchUpstream {
    fn send(&self, req: UpstreamRequest) -> impl Future<Output = Result<UpstreamResponse, UpstreamError>> + Send {
        SendFuture::new(send(req))
    }
}

fn connect(e: worker::Error) -> UpstreamError {
    UpstreamError::Connect(e.to_string())
}

async fn send(req: UpstreamRequest) -> Result<UpstreamResponse, UpstreamError> {
    let headers = Headers::new();
    for (name, value) in &req.headers {
        let value = String::from_utf8_lossy(value.as_bytes());
        headers.append(name.as_str(), &value).map_err(connect)?;
    }
    let mut init = RequestInit::new();
    init.with_method(Method::from(req.method.as_str().to_string())).with_headers(headers);
    if !req.body.is_empty() {
        init.with_body(Some(worker::js_sys::Uint8Array::from(req.body.as_ref()).into()));
    }
    let request = Request::new_with_init(&req.url, &init).map_err(connect)?;
    let controller = AbortController::default();
    let mut resp = Fetch::Request(request).send_with_signal(&controller.signal()).await.map_err(connect)?;
    let mut headers = HeaderMap::new();
    for (name, value) in resp.headers().entries() {
        if let (Ok(name), Ok(value)) = (HeaderName::from_bytes(name.as_bytes()), HeaderValue::from_str(&value)) {
            headers.append(name, value);
        }
    }
    // A response without a body (204, HEAD) has no stream to read.
    let body = Aborting { inner: resp.stream().ok(), controller: Some(controller) };
    Ok(UpstreamResponse {
        status: resp.status_code(),
        headers,
        body: Box::pin(SendStream(SendWrapper::new(Box::pin(body)))),
    })
}

/// The response body; aborts the fetch if dropped before its end.
struct Aborting {
    inner: Option<ByteStream>,
    controller: Option<AbortController>,
}

impl Stream for Aborting {
    type Item = Result<Bytes, UpstreamError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        let Some(inner) = this.inner.as_mut() else {
            this.controller = None;
            return Poll::Ready(None);
        };
        match Pin::new(inner).poll_next(cx) {
            Poll::Ready(Some(Ok(chunk))) => Poll::Ready(Some(Ok(Bytes::from(chunk)))),
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(UpstreamError::Body(e.to_string())))),
            Poll::Ready(None) => {
                this.inner = None;
                this.controller = None;
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl Drop for Aborting {
    fn drop(&mut self) {
        if let Some(controller) = self.controller.take() {
            controller.abort();
        }
    }
}
