//! Relays an upstream SSE stream event by event: no buffering beyond one
//! upstream chunk, keep-alive comments while the upstream is silent, the usage
//! chunk kept back unless the client asked for it, an error event in OpenAI's
//! shape when the upstream fails mid-stream, and a usage record however the
//! stream ends (including the client hanging up, which drops the upstream call).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::{select, Either};
use futures_util::{Stream, StreamExt};
use oblivious_core::sse::{encode_data, SseDecoder, SseEvent};
use oblivious_core::{ApiError, ErrorKind};
use oblivious_ports::{ByteStream, Clock, Platform};
use serde::Deserialize;
use serde_json::Value;

use crate::usage::{UpstreamUsage, UsageDraft};
use crate::Relay;

const KEEPALIVE: &[u8] = b": keep-alive\n\n";

#[derive(Deserialize)]
struct Chunk {
    #[serde(default)]
    choices: Vec<ChunkChoice>,
    usage: Option<UpstreamUsage>,
    error: Option<Value>,
}

#[derive(Deserialize)]
struct ChunkChoice {
    delta: Option<Delta>,
    text: Option<String>,
}

#[derive(Deserialize)]
struct Delta {
    content: Option<String>,
    reasoning_content: Option<String>,
    #[serde(default)]
    tool_calls: Vec<ToolCallDelta>,
}

#[derive(Deserialize)]
struct ToolCallDelta {
    function: Option<FunctionDelta>,
}

#[derive(Deserialize)]
struct FunctionDelta {
    arguments: Option<String>,
}

struct StreamState<P: Platform> {
    relay: Arc<Relay<P>>,
    upstream: ByteStream,
    decoder: SseDecoder,
    include_usage: bool,
    usage: Option<UpstreamUsage>,
    /// Everything the client received as completion text, for counting.
    text: String,
    /// Publishes once: at the end, or when dropped early.
    draft: UsageDraft<P>,
    error: Option<String>,
    ended: bool,
    keepalive: Duration,
}

pub(crate) fn relay_stream<P: Platform>(
    relay: Arc<Relay<P>>,
    upstream: ByteStream,
    draft: UsageDraft<P>,
    include_usage: bool,
) -> impl Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static {
    let keepalive = Duration::from_millis(relay.settings().keepalive_interval_ms);
    let state = StreamState {
        relay,
        upstream,
        decoder: SseDecoder::new(),
        include_usage,
        usage: None,
        text: String::new(),
        draft,
        error: None,
        ended: false,
        keepalive,
    };
    futures_util::stream::unfold(state, |mut s| async move { s.next_frame().await.map(|b| (Ok(b), s)) })
}

impl<P: Platform> StreamState<P> {
    async fn next_frame(&mut self) -> Option<Bytes> {
        if self.ended {
            return None;
        }
        loop {
            let mut out = Vec::new();
            while let Some(ev) = self.decoder.next_event() {
                self.forward(ev, &mut out);
            }
            if !out.is_empty() {
                return Some(out.into());
            }
            let tick = Box::pin(self.relay.ports.clock.sleep(self.keepalive));
            let step = match select(self.upstream.next(), tick).await {
                Either::Left((item, _)) => Some(item),
                Either::Right(_) => None,
            };
            match step {
                Some(Some(Ok(chunk))) => self.decoder.push(&chunk),
                Some(Some(Err(e))) => {
                    let err = ApiError::new(
                        ErrorKind::UpstreamFailed,
                        "upstream_stream_failed",
                        format!("The upstream stream failed: {e}"),
                    );
                    encode_data(&mut out, &err.openai_body());
                    self.error = Some(err.message);
                    self.end(502);
                    return Some(out.into());
                }
                Some(None) => {
                    if let Some(ev) = self.decoder.finish() {
                        self.forward(ev, &mut out);
                    }
                    let status = if self.error.is_some() { 502 } else { 200 };
                    self.end(status);
                    return (!out.is_empty()).then(|| out.into());
                }
                None => return Some(Bytes::from_static(KEEPALIVE)),
            }
        }
    }

    /// Appends the event for the client (unless it is a usage chunk it did not ask for).
    fn forward(&mut self, ev: SseEvent, out: &mut Vec<u8>) {
        if ev.data != "[DONE]" {
            if let Ok(chunk) = serde_json::from_str::<Chunk>(&ev.data) {
                for c in &chunk.choices {
                    if let Some(t) = &c.text {
                        self.text.push_str(t);
                    }
                    if let Some(d) = &c.delta {
                        for t in [&d.content, &d.reasoning_content].into_iter().flatten() {
                            self.text.push_str(t);
                        }
                        for call in &d.tool_calls {
                            if let Some(a) = call.function.as_ref().and_then(|f| f.arguments.as_ref()) {
                                self.text.push_str(a);
                            }
                        }
                    }
                }
                if let Some(e) = &chunk.error {
                    self.error = Some(e.get("message").and_then(Value::as_str).unwrap_or("upstream error").to_string());
                }
                if chunk.usage.is_some() {
                    self.usage = chunk.usage;
                    if chunk.choices.is_empty() && !self.include_usage {
                        return;
                    }
                }
            }
        }
        if let Some(name) = &ev.event {
            out.extend_from_slice(b"event: ");
            out.extend_from_slice(name.as_bytes());
            out.push(b'\n');
        }
        encode_data(out, &ev.data);
    }

    fn end(&mut self, status: u16) {
        self.ended = true;
        self.draft.finish(status, self.usage, std::mem::take(&mut self.text), self.error.take());
    }
}

impl<P: Platform> Drop for StreamState<P> {
    /// The client went away before the end: the upstream call is dropped with
    /// us, and what was delivered so far is still recorded (and charged).
    fn drop(&mut self) {
        self.draft.finish(499, self.usage, std::mem::take(&mut self.text), Some("client disconnected".into()));
    }
}
