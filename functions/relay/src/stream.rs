//! Relays an upstream stream event by event: no buffering beyond one upstream
//! chunk, keep-alive comments while the upstream is silent, and a usage record
//! however the stream ends (including the client hanging up, which drops the
//! upstream call). Every upstream unit is decoded into canonical events (for
//! usage and the text delivered); what the client gets depends on the [`Mode`].

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::{select, Either};
use futures_util::{Stream, StreamExt};
use oblivious_core::sse::encode_data;
use oblivious_core::wire::canon::{Event, Usage};
use oblivious_core::wire::{self, Inbound, StreamDecoder, StreamEncoder};
use oblivious_ports::{ByteStream, Clock, Platform};
use tracing::Instrument;

use crate::usage::UsageDraft;
use crate::Relay;

const KEEPALIVE: &[u8] = b": keep-alive\n\n";

pub(crate) enum Mode {
    /// OpenAI to OpenAI: each event as it came, except the usage chunk we
    /// asked for and the client did not.
    OpenAi { include_usage: bool },
    /// Same format (Anthropic, Gemini): the upstream's bytes as they came.
    Bytes { inbound: Inbound, sse: bool },
    /// Another format: events re-encoded for the client.
    Convert(StreamEncoder),
}

struct StreamState<P: Platform> {
    relay: Arc<Relay<P>>,
    upstream: ByteStream,
    decoder: StreamDecoder,
    mode: Mode,
    events: Vec<Event>,
    usage: Option<Usage>,
    /// Everything the client received as completion text, for counting.
    text: String,
    /// Publishes once: at the end, or when dropped early.
    draft: UsageDraft<P>,
    error: Option<String>,
    ended: bool,
    /// The answer's finish (its stop reason) was sent: a client that hangs up
    /// after it, before the upstream's body ends, read a complete answer.
    complete: bool,
    keepalive: Duration,
}

pub(crate) fn relay_stream<P: Platform>(
    relay: Arc<Relay<P>>,
    upstream: ByteStream,
    draft: UsageDraft<P>,
    decoder: StreamDecoder,
    mode: Mode,
) -> impl Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static {
    let keepalive = Duration::from_millis(relay.settings().keepalive_interval_ms);
    let state = StreamState {
        relay,
        upstream,
        decoder,
        mode,
        events: Vec::new(),
        usage: None,
        text: String::new(),
        draft,
        error: None,
        ended: false,
        complete: false,
        keepalive,
    };
    // Each frame is made inside the request's span: a trace shows the request lasting until its stream ends.
    futures_util::stream::unfold(state, |mut s| async move {
        let span = s.draft.span.clone();
        s.next_frame().instrument(span).await.map(|b| (Ok(b), s))
    })
}

impl<P: Platform> StreamState<P> {
    async fn next_frame(&mut self) -> Option<Bytes> {
        if self.ended {
            return None;
        }
        loop {
            let mut out = Vec::new();
            self.drain_units(&mut out);
            if !out.is_empty() {
                return Some(out.into());
            }
            let tick = Box::pin(self.relay.ports.clock.sleep(self.keepalive));
            let step = match select(self.upstream.next(), tick).await {
                Either::Left((item, _)) => Some(item),
                Either::Right(_) => None,
            };
            match step {
                Some(Some(Ok(chunk))) => {
                    self.decoder.push(&chunk);
                    if matches!(self.mode, Mode::Bytes { .. }) {
                        // Forward as received; the decoder only watches.
                        self.drain_units(&mut Vec::new());
                        return Some(chunk);
                    }
                }
                Some(Some(Err(e))) => {
                    let message = format!("The upstream stream failed: {e}");
                    self.fail(message, &mut out);
                    return Some(out.into());
                }
                Some(None) => {
                    if let Some(unit) = self.decoder.finish(&mut self.events) {
                        self.emit(unit, &mut out);
                    }
                    self.take_events(&mut out);
                    if let Mode::Convert(enc) = &mut self.mode {
                        enc.finish(&mut out, self.error.is_some());
                    }
                    let status = if self.error.is_some() { 502 } else { 200 };
                    self.end(status);
                    return (!out.is_empty()).then(|| out.into());
                }
                None => return Some(Bytes::from_static(KEEPALIVE)),
            }
        }
    }

    fn drain_units(&mut self, out: &mut Vec<u8>) {
        while let Some(unit) = self.decoder.next_unit(&mut self.events) {
            self.emit(unit, out);
        }
    }

    /// Watches the events of one unit and writes what the client should get.
    fn emit(&mut self, unit: oblivious_core::wire::frame::Unit, out: &mut Vec<u8>) {
        let usage_only = !self.events.is_empty()
            && self.events.iter().all(|e| matches!(e, Event::Usage(_) | Event::Start { .. }))
            && self.events.iter().any(|e| matches!(e, Event::Usage(_)));
        if let Mode::OpenAi { include_usage } = self.mode {
            if !usage_only || include_usage {
                if let Some(name) = &unit.event {
                    out.extend_from_slice(b"event: ");
                    out.extend_from_slice(name.as_bytes());
                    out.push(b'\n');
                }
                encode_data(out, &unit.data);
            }
        }
        self.take_events(out);
    }

    fn take_events(&mut self, out: &mut Vec<u8>) {
        for ev in std::mem::take(&mut self.events) {
            match &ev {
                Event::Text(t) | Event::Thinking(t) => {
                    self.text.push_str(t);
                    self.draft.delivered = true;
                }
                Event::ToolCallArgs { delta, .. } => {
                    self.text.push_str(delta);
                    self.draft.delivered = true;
                }
                Event::ToolCallStart { .. } => self.draft.delivered = true,
                Event::Finish(_) => self.complete = true,
                Event::Usage(u) => self.usage = Some(*u),
                Event::Error { message } => self.error = Some(message.clone()),
                _ => {}
            }
            if let Mode::Convert(enc) = &mut self.mode {
                enc.event(&ev, out);
            }
        }
    }

    /// The upstream connection broke: an error in the client's format, then the end.
    fn fail(&mut self, message: String, out: &mut Vec<u8>) {
        match &mut self.mode {
            Mode::Convert(enc) => {
                enc.event(&Event::Error { message: message.clone() }, out);
                enc.finish(out, true);
            }
            Mode::Bytes { inbound, sse } => wire::stream_error(*inbound, *sse, &message, out),
            Mode::OpenAi { .. } => wire::stream_error(Inbound::OpenAi, true, &message, out),
        }
        self.error = Some(message);
        self.end(502);
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
        let (status, error) = match (self.complete, self.error.take()) {
            (true, None) => (200, None),
            (_, error) => (499, Some(error.unwrap_or_else(|| "client disconnected".into()))),
        };
        self.draft.finish(status, self.usage, std::mem::take(&mut self.text), error);
    }
}
