//! One relayed request: validate, choose a channel, call upstream with retries
//! and failover, and hand the answer back (streamed or whole).

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::response::Response;
use bytes::Bytes;
use futures_util::future::{select, Either};
use futures_util::StreamExt;
use oblivious_core::config::RelaySettings;
use oblivious_core::model::{Channel, ChannelType, Id, Price};
use oblivious_core::wire::canon::{ChatResponse, Part};
use oblivious_core::wire::{self, openai, Inbound, StreamDecoder, StreamEncoder, Wire};
use oblivious_core::{authz, pricing, retry, select as choose, telemetry, ApiError, ErrorKind};
use oblivious_ports::{
    ByteStream, Clock, Ids, Ledger, Platform, Reservation, Upstream, UpstreamError, UpstreamResponse,
};
use serde_json::{Map, Value};
use tracing::Instrument;

use crate::embeddings;
use crate::inbound::{self, GeminiCall, Parsed};
use crate::observe::{self, step};
use crate::overlay::Overlay;
use crate::respond::{error_response_in, json_response, read_body, set_request_id};
use crate::upstream::Op;
use crate::usage::{count_prompt, UsageDraft};
use crate::{stream, ClientIp, Endpoint, Principal, Relay};

/// W3C trace context headers, passed upstream.
const TRACE_HEADERS: [&str; 2] = ["traceparent", "tracestate"];
/// Upstream error bodies are read up to this size (they are relayed or logged).
const ERROR_BODY_LIMIT: usize = 64 * 1024;
/// A balance that covers this many byte-bound holds is held against without counting.
const HOLDS_COVERED: i64 = 1000;
/// Upstream non-streamed answers are read up to this size.
const ANSWER_LIMIT: usize = 256 * 1024 * 1024;

/// The body and framing of one attempt on one channel.
struct Outgoing {
    op: Op,
    body: Bytes,
    wire: Wire,
    /// The channel speaks the client's format and gets the client's own body:
    /// answers go back as they came.
    passthrough: bool,
}

/// The request for `ch`: the client's body with the channel's model name when
/// the channel speaks the client's format, else converted through the canonical model.
fn outgoing(parsed: &mut Parsed, ch: &Channel, upstream_model: &str) -> Result<Outgoing, ApiError> {
    let info = ch.spec.kind.info();
    let wire = info.wire;
    let stream = parsed.stream;
    let endpoint = parsed.endpoint;
    let json = |v: &Value| Bytes::from(serde_json::to_vec(v).unwrap_or_default());
    let model = || Value::String(upstream_model.to_string());
    let out = match endpoint {
        Endpoint::Chat(inbound) if inbound.wire() == wire => {
            let body = &parsed.body;
            let overlay = match wire {
                Wire::OpenAi if stream && info.stream_options => {
                    let mut opts = match body.get("stream_options") {
                        Some(Value::Object(o)) => o.clone(),
                        _ => Map::new(),
                    };
                    opts.insert("include_usage".into(), Value::Bool(true));
                    Overlay { base: body, set: vec![("model", model()), ("stream_options", opts.into())], remove: &[] }
                }
                Wire::OpenAi if !info.stream_options => {
                    Overlay { base: body, set: vec![("model", model())], remove: &["stream_options"] }
                }
                Wire::OpenAi | Wire::Anthropic => Overlay { base: body, set: vec![("model", model())], remove: &[] },
                _ => Overlay { base: body, set: vec![], remove: &[] },
            };
            Outgoing { op: Op::Chat { stream }, body: overlay.to_bytes(), wire, passthrough: true }
        }
        // OpenAI's own Responses API where the channel has it; every other channel gets chat.
        Endpoint::Chat(Inbound::Responses) if matches!(ch.spec.kind, ChannelType::Openai | ChannelType::Azure) => {
            let body = Overlay { base: &parsed.body, set: vec![("model", model())], remove: &[] }.to_bytes();
            Outgoing { op: Op::OpenAiPath("/responses"), body, wire: Wire::Responses, passthrough: true }
        }
        Endpoint::Chat(_) => {
            let canon = parsed.canonical()?;
            let mut v = wire::build_request(wire, canon, upstream_model, stream)?;
            if wire == Wire::OpenAi && stream && !info.stream_options {
                if let Some(o) = v.as_object_mut() {
                    o.remove("stream_options");
                }
            }
            Outgoing { op: Op::Chat { stream }, body: json(&v), wire, passthrough: false }
        }
        Endpoint::GeminiEmbed { batch } if wire == Wire::Gemini => {
            let mut body = (*parsed.body).clone();
            if batch {
                // Each request names its model; point them all at the channel's.
                if let Some(Value::Array(reqs)) = body.get_mut("requests") {
                    for r in reqs.iter_mut().filter_map(Value::as_object_mut) {
                        r.insert("model".into(), format!("models/{upstream_model}").into());
                    }
                }
            }
            let method = if batch { "batchEmbedContents" } else { "embedContent" };
            Outgoing { op: Op::GeminiMethod(method), body: json(&Value::Object(body)), wire, passthrough: true }
        }
        Endpoint::GeminiEmbed { .. } => {
            let (op, v) = embeddings::from_gemini(&parsed.body, upstream_model);
            Outgoing { op, body: json(&v), wire, passthrough: false }
        }
        Endpoint::Embeddings if wire != Wire::OpenAi => {
            let (op, v) = embeddings::from_openai(&parsed.body, wire, upstream_model)?;
            Outgoing { op, body: json(&v), wire, passthrough: false }
        }
        Endpoint::Transcriptions => {
            let body = parsed.raw.clone().unwrap_or_default();
            Outgoing { op: Op::OpenAiPath(endpoint.openai_path()), body, wire, passthrough: true }
        }
        _ => {
            let mut set = vec![("model", model())];
            if stream && endpoint == Endpoint::Completions && info.stream_options {
                set.push(("stream_options", serde_json::json!({ "include_usage": true })));
            }
            let body = Overlay { base: &parsed.body, set, remove: &[] }.to_bytes();
            Outgoing { op: Op::OpenAiPath(endpoint.openai_path()), body, wire, passthrough: true }
        }
    };
    Ok(out)
}

/// Why the last attempt failed.
enum Failure {
    Status(u16, Bytes, Wire),
    Transport(UpstreamError),
}

impl Failure {
    fn describe(&self) -> String {
        match self {
            Failure::Status(s, body, _) => {
                format!("upstream answered {s}: {}", String::from_utf8_lossy(&body[..body.len().min(300)]))
            }
            Failure::Transport(e) => format!("upstream {e}"),
        }
    }

    /// The error the caller sees, in its own format: the upstream's own body
    /// when it speaks that format, else its message in ours.
    fn into_response(self, inbound: Inbound, attempts: u32, request_id: &str) -> (u16, Response, String) {
        let described = self.describe();
        match self {
            Failure::Status(status, body, wire) => {
                let parsed = serde_json::from_slice::<Value>(&body).ok();
                let message = parsed.as_ref().and_then(|v| wire::parse_error(wire, v));
                if wire == inbound.wire() && message.is_some() {
                    return (status, json_response(status, body, request_id), described);
                }
                let message = match message {
                    Some(m) => format!("upstream answered {status}: {m}"),
                    None => format!("{described} (after {attempts} attempts)"),
                };
                let e = ApiError::new(wire::kind_for_status(status), "upstream_error", message).with_status(status);
                (status, error_response_in(inbound, &e, request_id), described)
            }
            Failure::Transport(UpstreamError::Timeout) => {
                let e = ApiError::new(
                    ErrorKind::UpstreamTimeout,
                    "upstream_timeout",
                    format!("The upstream did not answer in time (after {attempts} attempts)."),
                );
                (504, error_response_in(inbound, &e, request_id), described)
            }
            Failure::Transport(other) => {
                let code =
                    if matches!(other, UpstreamError::Connect(_)) { "upstream_unreachable" } else { "upstream_failed" };
                let e = ApiError::new(
                    ErrorKind::UpstreamFailed,
                    code,
                    format!("upstream {other} (after {attempts} attempts)"),
                );
                (502, error_response_in(inbound, &e, request_id), described)
            }
        }
    }
}

async fn read_limited(mut body: ByteStream, limit: usize) -> Result<Bytes, UpstreamError> {
    let mut out = Vec::new();
    while let Some(chunk) = body.next().await {
        let chunk = chunk?;
        if out.len() + chunk.len() > limit {
            return Err(UpstreamError::Body(format!("answer larger than {limit} bytes")));
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out.into())
}

pub(crate) async fn handle<P: Platform>(
    relay: Arc<Relay<P>>,
    endpoint: Endpoint,
    gemini: Option<GeminiCall>,
    req: Request,
) -> Response {
    let request_id = relay.ports.ids.request_id();
    let started_us = relay.ports.clock.now_us();
    let inbound = endpoint.inbound();
    let (parts, body) = req.into_parts();
    let principal = match relay.authenticate(&parts).instrument(step!("auth")).await {
        Ok(p) => p,
        Err(e) => {
            tracing::debug!(request_id, code = e.code, "refused");
            return error_response_in(inbound, &e, &request_id);
        }
    };
    // Every request from here on leaves a usage record: none admitted while
    // the records not yet queued are at their limit.
    relay.usage_backlog.admit().await;
    let settings = relay.settings();
    let mut draft = UsageDraft::new(relay.clone(), request_id.clone(), endpoint, principal.clone(), started_us);
    let refuse = |mut draft: UsageDraft<P>, e: ApiError| {
        draft.finish(e.status(), None, String::new(), Some(e.message.clone()));
        error_response_in(inbound, &e, &request_id)
    };
    let content_type = parts.headers.get(http::header::CONTENT_TYPE);
    let mut body_len = 0i64;
    let parsed = read_body(&parts, body, settings.max_body_bytes).await.and_then(|raw| {
        body_len = raw.len() as i64;
        inbound::parse(endpoint, raw, content_type, gemini.as_ref(), &settings)
    });
    let parsed = match parsed {
        Ok(p) => p,
        Err(e) => return refuse(draft, e),
    };
    draft.requested_model = parsed.model.clone();
    draft.upstream_model = parsed.model.clone();
    draft.stream = parsed.stream;
    if let Err(e) = authz::check_model(&principal.token, &parsed.model) {
        return refuse(draft, e);
    }
    let snapshot = relay.snapshot();
    let mut candidates = snapshot.candidates(&principal.user.group, &parsed.model);
    candidates.retain(|c| endpoint.served_by(c.spec.kind.info().wire));
    if candidates.is_empty() {
        let e = if snapshot.serving(&parsed.model).next().is_some() {
            ApiError::new(
                ErrorKind::NoChannel,
                "no_available_channel",
                format!(
                    "No channel for group `{}` can serve `{}` on {} right now.",
                    principal.user.group,
                    parsed.model,
                    endpoint.path()
                ),
            )
        } else {
            ApiError::not_found(
                "model_not_found",
                format!("The model `{}` does not exist or you do not have access to it.", parsed.model),
            )
            .with_param("model")
        };
        return refuse(draft, e);
    }
    let model = parsed.model.as_str();
    let completion = if endpoint.generates_text() { max_tokens(&parsed, &settings) } else { 0 };
    let body = parsed.openai_body();
    let price = snapshot.price_for(model, relay.ports.clock.now_ms()).filter(|p| !p.free);
    let prompt = if relay.rate_limits().counts_tokens(&principal.user.group, model) {
        // A tokens-per-minute window is charged the prompt as counted.
        count_prompt(endpoint, model, &body)
    } else if let Some(price) = price {
        let ratio_bp = snapshot.ratio_bp(&principal.user.group);
        prompt_for_hold(&principal, price, ratio_bp, body_len, completion)
            .unwrap_or_else(|| count_prompt(endpoint, model, &body))
    } else {
        0
    };
    draft.body = body;
    let ip = parts.extensions.get::<ClientIp>().map(|c| c.0);
    let admission = match relay.admit_rate(&principal, ip, model, prompt + completion).instrument(step!("limits")).await
    {
        Ok(a) => a,
        Err((e, headers)) => {
            let mut resp = refuse(draft, e);
            resp.headers_mut().extend(headers);
            return resp;
        }
    };
    let limit_headers = admission.headers.clone();
    draft.admission = Some(admission);
    if let Err(e) = admit(&relay, &snapshot, &parsed, prompt, completion, &mut draft).instrument(step!("reserve")).await
    {
        let mut resp = refuse(draft, e);
        resp.headers_mut().extend(limit_headers);
        return resp;
    }
    drop(snapshot);
    // A caller's trace context goes upstream as it came (a shell tracing the
    // request replaces it with its own span's, the caller's child).
    let trace: Vec<_> = TRACE_HEADERS
        .iter()
        .filter_map(|h| parts.headers.get(*h).map(|v| (http::HeaderName::from_static(h), v.clone())))
        .collect();
    let mut resp = run(relay.clone(), &settings, parsed, candidates, &trace, draft).await;
    resp.headers_mut().extend(limit_headers);
    resp
}

/// Prices the request and reserves its estimated cost: the prompt as counted
/// plus the completion at its ceiling (`max_tokens`/`max_completion_tokens`,
/// else the configured default). Unpriced models are refused.
async fn admit<P: Platform>(
    relay: &Relay<P>,
    snapshot: &crate::Snapshot,
    parsed: &Parsed,
    prompt: i64,
    completion: i64,
    draft: &mut UsageDraft<P>,
) -> Result<(), ApiError> {
    let now = relay.ports.clock.now_ms();
    let price = snapshot.price_for(&parsed.model, now).cloned().ok_or_else(|| {
        ApiError::new(
            ErrorKind::PermissionDenied,
            "model_not_priced",
            format!("The model `{}` has no price set; an operator must price it or mark it free.", parsed.model),
        )
        .with_param("model")
    })?;
    let ratio_bp = snapshot.ratio_bp(&draft.principal.user.group);
    draft.ratio_bp = ratio_bp;
    if price.free {
        draft.price = Some(price);
        return Ok(());
    }
    let amount = pricing::estimate(&price, ratio_bp, prompt, completion);
    draft.price = Some(price);
    if amount == 0 {
        return Ok(());
    }
    let reservation = Reservation {
        request_id: draft.request_id.clone(),
        token_id: draft.principal.token.id,
        user_id: draft.principal.user.id,
        amount,
        created_at: now,
        state: String::new(),
        charged: None,
    };
    match relay.ports.store.reserve(reservation).await {
        Ok(Ok(())) => {
            draft.reserved = amount;
            Ok(())
        }
        Ok(Err(short)) => Err(ApiError::new(ErrorKind::InsufficientQuota, "insufficient_quota", short.message())),
        Err(e) => Err(ApiError::internal(format!("could not reserve quota: {e}"))),
    }
}

/// The prompt size to hold money for, without counting: the request body's
/// length in bytes, which no token count exceeds (every token spans at least
/// one byte of the text, and the text is part of the body). Used when the
/// caller's balances, as last seen, cover a thousand such holds, so the
/// over-hold refuses nothing even with many requests in flight; the
/// settlement charges the upstream's count. `None` (count exactly) when
/// money is closer than that or the token has spending caps.
fn prompt_for_hold(principal: &Principal, price: &Price, ratio_bp: i64, body_len: i64, completion: i64) -> Option<i64> {
    let (user, token) = (&principal.user, &principal.token);
    if token.daily_limit.is_some() || token.monthly_limit.is_some() {
        return None;
    }
    let hold = pricing::estimate(price, ratio_bp, body_len, completion);
    let covers = |unlimited: bool, balance: i64| unlimited || hold.saturating_mul(HOLDS_COVERED) <= balance;
    (covers(user.unlimited, user.quota) && covers(token.unlimited, token.remaining_quota)).then_some(body_len)
}

/// The completion ceiling a request sets, or the configured default.
fn max_tokens(parsed: &Parsed, settings: &RelaySettings) -> i64 {
    let declared = match &parsed.canon {
        Some(c) => c.max_tokens,
        None => {
            ["max_completion_tokens", "max_tokens"].iter().find_map(|k| parsed.body.get(*k).and_then(Value::as_i64))
        }
    };
    declared.filter(|n| *n >= 0).unwrap_or(settings.default_max_tokens)
}

async fn run<P: Platform>(
    relay: Arc<Relay<P>>,
    settings: &RelaySettings,
    mut parsed: Parsed,
    candidates: Vec<Arc<Channel>>,
    trace: &[(http::HeaderName, http::HeaderValue)],
    mut draft: UsageDraft<P>,
) -> Response {
    let ports = &relay.ports;
    let request_id = draft.request_id.clone();
    let inbound = parsed.endpoint.inbound();
    let mut exhausted: Vec<Id> = Vec::new();
    let mut current: Option<Arc<Channel>> = None;
    let mut fails_here = 0u32;
    let mut attempts = 0u32;
    let mut last: Option<Failure> = None;
    let timeout = Duration::from_millis(settings.upstream_timeout_ms);

    while attempts < settings.max_attempts {
        if fails_here >= settings.attempts_per_channel {
            if let Some(c) = current.take() {
                exhausted.push(c.id);
            }
            fails_here = 0;
        }
        let ch = match &current {
            Some(c) => c.clone(),
            None => {
                let open: Vec<&Arc<Channel>> = candidates.iter().filter(|c| !exhausted.contains(&c.id)).collect();
                let weights: Vec<choose::Candidate> = open
                    .iter()
                    .map(|c| choose::Candidate { priority: c.spec.priority, weight: c.spec.weight })
                    .collect();
                let picked = step!("select", candidates = open.len())
                    .in_scope(|| choose::pick_channel(&weights, ports.ids.random_u64()));
                match picked {
                    Some(i) => {
                        if last.is_some() {
                            observe::failover(&parsed.model);
                        }
                        current = Some(open[i].clone());
                        open[i].clone()
                    }
                    None => break,
                }
            }
        };
        let key = if ch.spec.keys.is_empty() {
            None
        } else {
            let usable = relay.usable_keys(&ch).await;
            let counter = match ch.spec.key_selection {
                oblivious_core::model::KeySelection::RoundRobin => {
                    oblivious_ports::Hot::incr(&ports.hot, &format!("rr:{}", ch.id), 1, None).await.unwrap_or(0) as u64
                }
                oblivious_core::model::KeySelection::Random => 0,
            };
            match choose::pick_key(ch.spec.keys.len(), ch.spec.key_selection, counter, ports.ids.random_u64(), |k| {
                usable[k]
            }) {
                Some(k) => Some(k),
                None => {
                    // Every key of this channel is resting: try the next channel.
                    exhausted.push(ch.id);
                    current = None;
                    fails_here = 0;
                    continue;
                }
            }
        };
        if fails_here > 0 {
            let wait = retry::backoff_ms(
                fails_here - 1,
                settings.retry_base_ms,
                settings.retry_max_ms,
                ports.ids.random_u64(),
            );
            ports.clock.sleep(Duration::from_millis(wait)).await;
        }
        attempts += 1;
        let upstream_model = ch.upstream_model(&parsed.model).to_string();
        draft.channel = Some(ch.clone());
        draft.key_index = key;
        draft.upstream_model = upstream_model.clone();
        draft.retries = attempts - 1;
        let out =
            match step!("convert", channel = %ch.spec.name).in_scope(|| outgoing(&mut parsed, &ch, &upstream_model)) {
                Ok(o) => o,
                Err(e) => {
                    // The request cannot be said in this channel's format: a client error, not the channel's.
                    draft.finish(e.status(), None, String::new(), Some(e.message.clone()));
                    return error_response_in(inbound, &e, &request_id);
                }
            };
        // A converted Gemini stream is always asked for as SSE; passthrough keeps the caller's framing.
        let sse = parsed.gemini_sse || !out.passthrough;
        let req = match relay.upstream_request(&ch, key, out.op, &upstream_model, out.body.clone(), sse).await {
            Ok(mut r) => {
                for (name, value) in trace {
                    r.headers.insert(name.clone(), value.clone());
                }
                if let Some(ct) = &parsed.content_type {
                    // A multipart upload keeps its boundary.
                    r.headers.insert(http::header::CONTENT_TYPE, ct.clone());
                }
                r
            }
            Err(message) => {
                let f = Failure::Transport(UpstreamError::Connect(message));
                observe::attempt(&ch.spec.name, "transport", 0.0, attempts > 1);
                tracing::info!(request_id, channel = %ch.spec.name, attempt = attempts, "{}", f.describe());
                fails_here += 1;
                relay.record_failure(&ch, key, &f.describe(), true).await;
                last = Some(f);
                continue;
            }
        };
        let sent_us = ports.clock.now_us();
        let span = step!("upstream", channel = %ch.spec.name, attempt = attempts, outcome = tracing::field::Empty);
        // Made inside the span, so a shell's upstream can pass its trace context on.
        let send = span.in_scope(|| ports.upstream.send(req)).instrument(span.clone());
        let sent = select(Box::pin(send), Box::pin(ports.clock.sleep(timeout))).await;
        let outcome = match sent {
            Either::Left((r, _)) => r,
            Either::Right(_) => Err(UpstreamError::Timeout),
        };
        let label = match &outcome {
            Ok(r) => telemetry::outcome(Some(r.status), false),
            Err(e) => telemetry::outcome(None, matches!(e, UpstreamError::Timeout)),
        };
        span.record("outcome", label);
        let took_s = (ports.clock.now_us() - sent_us) as f64 / 1e6;
        observe::attempt(&ch.spec.name, label, took_s, attempts > 1);
        let failure = match outcome {
            Ok(resp) if (200..300).contains(&resp.status) => {
                let ttfb_us = ports.clock.now_us() - draft.started_us;
                draft.ttfb_ms = Some(ttfb_us / 1000);
                observe::ttfb(parsed.endpoint.path(), &parsed.model, &ch.spec.name, ttfb_us as f64 / 1e6);
                match deliver(&relay, &ch, key, &parsed, &out, resp, draft).await {
                    Ok(response) => return response,
                    Err((d, f)) => {
                        draft = d;
                        f
                    }
                }
            }
            Ok(resp) => {
                let status = resp.status;
                let body = read_limited(resp.body, ERROR_BODY_LIMIT).await.unwrap_or_default();
                let f = Failure::Status(status, body, out.wire);
                if !retry::retryable_status(status) {
                    if retry::key_fault(status) {
                        let _ = relay.record_failure(&ch, key, &f.describe(), false).await;
                    }
                    let (status, response, described) = f.into_response(inbound, attempts, &request_id);
                    draft.finish(status, None, String::new(), Some(described));
                    return response;
                }
                f
            }
            Err(e) => Failure::Transport(e),
        };
        tracing::info!(request_id, channel = %ch.spec.name, attempt = attempts, "{}", failure.describe());
        fails_here += 1;
        let disabled = relay.record_failure(&ch, key, &failure.describe(), true).await;
        if disabled || !relay.snapshot().is_enabled(ch.id) {
            // Disabled (by us or by a concurrent request): no more tries on it.
            fails_here = settings.attempts_per_channel;
        }
        last = Some(failure);
    }

    let (status, response, described) = match last {
        Some(f) => f.into_response(inbound, attempts, &request_id),
        None => {
            let e = ApiError::new(
                ErrorKind::NoChannel,
                "no_available_channel",
                format!("Every channel for `{}` is resting or failed; try again shortly.", parsed.model),
            );
            let described = e.message.clone();
            (e.status(), error_response_in(inbound, &e, &request_id), described)
        }
    };
    draft.finish(status, None, String::new(), Some(described));
    response
}

/// Relays a successful upstream answer, converted to the client's format when
/// the channel speaks another. A non-streamed body that fails before it is
/// complete is still retryable (nothing has reached the client yet).
async fn deliver<P: Platform>(
    relay: &Arc<Relay<P>>,
    ch: &Arc<Channel>,
    key: Option<usize>,
    parsed: &Parsed,
    out: &Outgoing,
    resp: UpstreamResponse,
    mut draft: UsageDraft<P>,
) -> Result<Response, (UsageDraft<P>, Failure)> {
    let content_type = resp.headers.get(http::header::CONTENT_TYPE).cloned();
    let ct = content_type.as_ref().and_then(|v| v.to_str().ok()).unwrap_or("");
    let is_stream = ct.starts_with("text/event-stream")
        || ct.starts_with("application/vnd.amazon.eventstream")
        || (out.wire == Wire::Gemini && parsed.stream);
    let inbound = parsed.endpoint.inbound();
    if parsed.stream && is_stream && parsed.endpoint.generates_text() {
        relay.record_success(ch.id, key).await;
        let request_id = draft.request_id.clone();
        let mode = match (out.passthrough, out.wire) {
            (true, Wire::OpenAi) => stream::Mode::OpenAi { include_usage: parsed.include_usage },
            (true, _) => stream::Mode::Bytes { inbound, sse: parsed.gemini_sse },
            (false, _) => stream::Mode::Convert(StreamEncoder::new(
                inbound,
                &parsed.model,
                relay.ports.clock.now_ms() / 1000,
                parsed.include_usage,
                parsed.gemini_sse,
            )),
        };
        // Gemini without alt=sse answers a JSON array (passthrough keeps the client's framing).
        let json_array = out.wire == Wire::Gemini && !parsed.gemini_sse && out.passthrough;
        let decoder = StreamDecoder::new(out.wire, json_array);
        let body = stream::relay_stream(relay.clone(), resp.body, draft, decoder, mode);
        let mut response = Response::new(Body::from_stream(body));
        let h = response.headers_mut();
        let framing = if inbound == Inbound::Gemini && !parsed.gemini_sse {
            "application/json; charset=utf-8"
        } else {
            "text/event-stream; charset=utf-8"
        };
        h.insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static(framing));
        h.insert(http::header::CACHE_CONTROL, http::HeaderValue::from_static("no-cache"));
        h.insert("x-accel-buffering", http::HeaderValue::from_static("no"));
        set_request_id(&mut response, &request_id);
        return Ok(response);
    }
    let bytes = match read_limited(resp.body, ANSWER_LIMIT).await {
        Ok(b) => b,
        Err(e) => return Err((draft, Failure::Transport(e))),
    };
    relay.record_success(ch.id, key).await;
    // A whole 2xx answer is in hand: it is delivered (and charged) from here on.
    draft.delivered = true;
    let request_id = draft.request_id.clone();
    let passthrough = |bytes: Bytes| {
        let mut response = json_response(resp.status, bytes, &request_id);
        if let Some(ct) = content_type {
            response.headers_mut().insert(http::header::CONTENT_TYPE, ct);
        }
        response
    };
    // Relayed as it came from an upstream that counted: its usage is all we read
    // (the choices are skipped, not built into a tree).
    if out.passthrough && out.wire == Wire::OpenAi {
        if let Some(usage) = openai::reported_usage(&bytes) {
            draft.finish(resp.status, Some(usage), String::new(), None);
            return Ok(passthrough(bytes));
        }
    }
    let value = serde_json::from_slice::<Value>(&bytes).ok();
    if !parsed.endpoint.generates_text() || out.op == Op::OpenAiPath("/completions") {
        // Relayed as it came (embeddings, images, audio…), converted only for Gemini embedding callers.
        let usage = value.as_ref().and_then(|v| embeddings::reported_usage(out.wire, v));
        let text = value.as_ref().map(completion_text).unwrap_or_default();
        if !out.passthrough {
            // Embeddings converted on the way out come back in the caller's shape, with the tokens the row bills.
            let v = value.unwrap_or_default();
            let body = embeddings::answer(
                parsed.endpoint,
                out.wire,
                &v,
                usage,
                &draft.body,
                &parsed.model,
                &draft.upstream_model,
            );
            draft.finish(resp.status, usage, text, None);
            return Ok(json_response(200, body.to_string().into(), &request_id));
        }
        draft.finish(resp.status, usage, text, None);
        return Ok(passthrough(bytes));
    }
    let answer = value.as_ref().map(|v| wire::parse_response(out.wire, v)).unwrap_or_default();
    draft.finish(resp.status, answer.usage, answer_text(&answer), None);
    if out.passthrough {
        return Ok(passthrough(bytes));
    }
    let body = wire::render_response(inbound, &answer, &parsed.model, relay.ports.clock.now_ms() / 1000);
    Ok(json_response(200, body.to_string().into(), &request_id))
}

/// Everything generated, for counting when the upstream reported no usage.
fn answer_text(a: &ChatResponse) -> String {
    a.parts
        .iter()
        .map(|p| match p {
            Part::Text(t) | Part::Thinking { text: t, .. } => t.as_str(),
            Part::ToolCall { arguments, .. } => arguments.as_str(),
            _ => "",
        })
        .collect()
}

/// Text of an OpenAI completions answer.
fn completion_text(v: &Value) -> String {
    v.get("choices")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|c| c.get("text").and_then(Value::as_str))
        .collect()
}
