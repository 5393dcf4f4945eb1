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
use oblivious_core::model::{Channel, Id};
use oblivious_core::{authz, count, pricing, retry, select as choose, ApiError, ErrorKind};
use oblivious_ports::{
    ByteStream, Clock, Ids, Ledger, Platform, Reservation, Upstream, UpstreamError, UpstreamResponse,
};
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::health::upstream_request;
use crate::respond::{error_response, json_response, read_body, set_request_id};
use crate::usage::{UpstreamUsage, UsageDraft};
use crate::{stream, ClientIp, Endpoint, Relay};

/// Upstream error bodies are read up to this size (they are relayed or logged).
const ERROR_BODY_LIMIT: usize = 64 * 1024;
/// Upstream non-streamed answers are read up to this size.
const ANSWER_LIMIT: usize = 256 * 1024 * 1024;

/// The parsed, validated client request.
struct Parsed {
    body: Map<String, Value>,
    model: String,
    stream: bool,
    /// The client asked for the final usage chunk itself.
    include_usage: bool,
}

fn parse(endpoint: Endpoint, raw: &[u8]) -> Result<Parsed, ApiError> {
    let value: Value = serde_json::from_slice(raw).map_err(|e| {
        ApiError::invalid("invalid_json", format!("We could not parse the JSON body of your request: {e}."))
    })?;
    let Value::Object(body) = value else {
        return Err(ApiError::invalid("invalid_json", "The request body must be a JSON object."));
    };
    let model = match body.get("model") {
        Some(Value::String(m)) if !m.is_empty() => m.clone(),
        Some(Value::String(_)) | None => {
            return Err(ApiError::invalid("missing_model", "You must provide a model parameter.").with_param("model"))
        }
        Some(_) => {
            return Err(
                ApiError::invalid("invalid_type", "Invalid type for 'model': expected a string.").with_param("model")
            )
        }
    };
    let stream = match body.get("stream") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b && endpoint != Endpoint::Embeddings,
        Some(_) => {
            return Err(ApiError::invalid("invalid_type", "Invalid type for 'stream': expected a boolean.")
                .with_param("stream"))
        }
    };
    let (field, want_array) = match endpoint {
        Endpoint::ChatCompletions => ("messages", true),
        Endpoint::Completions => ("prompt", false),
        Endpoint::Embeddings => ("input", false),
    };
    match body.get(field) {
        None | Some(Value::Null) => {
            return Err(ApiError::invalid(
                "missing_required_parameter",
                format!("Missing required parameter: '{field}'."),
            )
            .with_param(field_param(field)))
        }
        Some(v) if want_array && !v.is_array() => {
            return Err(ApiError::invalid("invalid_type", format!("Invalid type for '{field}': expected an array."))
                .with_param(field_param(field)))
        }
        _ => {}
    }
    let include_usage =
        body.get("stream_options").and_then(|o| o.get("include_usage")).and_then(Value::as_bool) == Some(true);
    Ok(Parsed { body, model, stream, include_usage })
}

fn field_param(field: &str) -> &'static str {
    match field {
        "messages" => "messages",
        "prompt" => "prompt",
        _ => "input",
    }
}

/// The body sent to one channel: its model name, and usage asked for in streams.
fn upstream_body(parsed: &Parsed, upstream_model: &str) -> Bytes {
    let mut body = parsed.body.clone();
    body.insert("model".into(), Value::String(upstream_model.to_string()));
    if parsed.stream {
        let opts = body.entry("stream_options").or_insert_with(|| Value::Object(Map::new()));
        if let Value::Object(o) = opts {
            o.insert("include_usage".into(), Value::Bool(true));
        } else {
            *opts = serde_json::json!({ "include_usage": true });
        }
    }
    serde_json::to_vec(&body).map(Bytes::from).unwrap_or_default()
}

/// Why the last attempt failed.
enum Failure {
    Status(u16, Bytes),
    Transport(UpstreamError),
}

impl Failure {
    fn describe(&self) -> String {
        match self {
            Failure::Status(s, body) => {
                format!("upstream answered {s}: {}", String::from_utf8_lossy(&body[..body.len().min(300)]))
            }
            Failure::Transport(e) => format!("upstream {e}"),
        }
    }

    /// The error the caller sees: an upstream's own OpenAI-shaped body when it
    /// has one, else ours.
    fn into_response(self, attempts: u32, request_id: &str) -> (u16, Response, String) {
        let described = self.describe();
        match self {
            Failure::Status(status, body) => {
                let is_openai_error = serde_json::from_slice::<Value>(&body)
                    .ok()
                    .is_some_and(|v| v.get("error").is_some_and(Value::is_object));
                if is_openai_error {
                    return (status, json_response(status, body, request_id), described);
                }
                let e = ApiError::new(
                    ErrorKind::UpstreamFailed,
                    "upstream_error",
                    format!("{described} (after {attempts} attempts)"),
                )
                .with_status(status);
                (status, error_response(&e, request_id), described)
            }
            Failure::Transport(UpstreamError::Timeout) => {
                let e = ApiError::new(
                    ErrorKind::UpstreamTimeout,
                    "upstream_timeout",
                    format!("The upstream did not answer in time (after {attempts} attempts)."),
                );
                (504, error_response(&e, request_id), described)
            }
            Failure::Transport(other) => {
                let code =
                    if matches!(other, UpstreamError::Connect(_)) { "upstream_unreachable" } else { "upstream_failed" };
                let e = ApiError::new(
                    ErrorKind::UpstreamFailed,
                    code,
                    format!("upstream {other} (after {attempts} attempts)"),
                );
                (502, error_response(&e, request_id), described)
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

pub(crate) async fn handle<P: Platform>(relay: Arc<Relay<P>>, endpoint: Endpoint, req: Request) -> Response {
    let request_id = relay.ports.ids.request_id();
    let started_us = relay.ports.clock.now_us();
    let (parts, body) = req.into_parts();
    let principal = match relay.authenticate(&parts).await {
        Ok(p) => p,
        Err(e) => {
            tracing::debug!(request_id, code = e.code, "refused");
            return error_response(&e, &request_id);
        }
    };
    let settings = relay.settings();
    let mut draft = UsageDraft::new(relay.clone(), request_id.clone(), endpoint, principal.clone(), started_us);
    let refuse = |mut draft: UsageDraft<P>, e: ApiError| {
        draft.finish(e.status(), None, String::new(), Some(e.message.clone()));
        error_response(&e, &request_id)
    };
    let parsed = match read_body(&parts, body, settings.max_body_bytes).await.and_then(|raw| parse(endpoint, &raw)) {
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
    let candidates = snapshot.candidates(&principal.user.group, &parsed.model);
    if candidates.is_empty() {
        let e = if snapshot.serving(&parsed.model).next().is_some() {
            ApiError::new(
                ErrorKind::NoChannel,
                "no_available_channel",
                format!("No channel for group `{}` can serve `{}` right now.", principal.user.group, parsed.model),
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
    let body = Value::Object(parsed.body.clone());
    let model = parsed.model.as_str();
    // Counting the prompt costs CPU (and loads a tokenizer): only when a price
    // or a tokens-per-minute limit needs the estimate.
    let priced = snapshot.price_for(model, relay.ports.clock.now_ms()).is_some_and(|p| !p.free);
    let needs_count = priced || relay.rate_limits().counts_tokens(&principal.user.group, model);
    let completion = match endpoint {
        Endpoint::ChatCompletions | Endpoint::Completions => max_tokens(&parsed.body, &settings),
        Endpoint::Embeddings => 0,
    };
    let prompt = match endpoint {
        _ if !needs_count => 0,
        Endpoint::ChatCompletions => count::count_chat_prompt(model, &body),
        Endpoint::Completions => count::count_input(model, body.get("prompt")),
        Endpoint::Embeddings => count::count_input(model, body.get("input")),
    };
    draft.body = Arc::new(body);
    let ip = parts.extensions.get::<ClientIp>().map(|c| c.0);
    let admission = match relay.admit_rate(&principal, ip, model, prompt + completion).await {
        Ok(a) => a,
        Err((e, headers)) => {
            let mut resp = refuse(draft, e);
            resp.headers_mut().extend(headers);
            return resp;
        }
    };
    let limit_headers = admission.headers.clone();
    draft.admission = Some(admission);
    if let Err(e) = admit(&relay, &snapshot, &parsed, prompt, completion, &mut draft).await {
        let mut resp = refuse(draft, e);
        resp.headers_mut().extend(limit_headers);
        return resp;
    }
    drop(snapshot);
    let mut resp = run(relay.clone(), endpoint, &settings, parsed, candidates, draft).await;
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

/// The completion ceiling a request sets, or the configured default.
fn max_tokens(body: &Map<String, Value>, settings: &RelaySettings) -> i64 {
    ["max_completion_tokens", "max_tokens"]
        .iter()
        .find_map(|k| body.get(*k).and_then(Value::as_i64))
        .filter(|n| *n >= 0)
        .unwrap_or(settings.default_max_tokens)
}

async fn run<P: Platform>(
    relay: Arc<Relay<P>>,
    endpoint: Endpoint,
    settings: &RelaySettings,
    parsed: Parsed,
    candidates: Vec<Arc<Channel>>,
    mut draft: UsageDraft<P>,
) -> Response {
    let ports = &relay.ports;
    let request_id = draft.request_id.clone();
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
                match choose::pick_channel(&weights, ports.ids.random_u64()) {
                    Some(i) => {
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
        draft.channel_id = Some(ch.id);
        draft.key_index = key;
        draft.upstream_model = upstream_model.clone();
        draft.retries = attempts - 1;
        let req = upstream_request(&ch, key, endpoint.path(), upstream_body(&parsed, &upstream_model));
        let sent = select(Box::pin(ports.upstream.send(req)), Box::pin(ports.clock.sleep(timeout))).await;
        let outcome = match sent {
            Either::Left((r, _)) => r,
            Either::Right(_) => Err(UpstreamError::Timeout),
        };
        let failure = match outcome {
            Ok(resp) if (200..300).contains(&resp.status) => {
                draft.ttfb_ms = Some((ports.clock.now_us() - draft.started_us) / 1000);
                match deliver(&relay, &ch, key, &parsed, resp, draft).await {
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
                let f = Failure::Status(status, body);
                if !retry::retryable_status(status) {
                    if retry::key_fault(status) {
                        let _ = relay.record_failure(&ch, key, &f.describe(), false).await;
                    }
                    let (status, response, described) = f.into_response(attempts, &request_id);
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
        Some(f) => f.into_response(attempts, &request_id),
        None => {
            let e = ApiError::new(
                ErrorKind::NoChannel,
                "no_available_channel",
                format!("Every channel for `{}` is resting or failed; try again shortly.", parsed.model),
            );
            let described = e.message.clone();
            (e.status(), error_response(&e, &request_id), described)
        }
    };
    draft.finish(status, None, String::new(), Some(described));
    response
}

#[derive(Deserialize)]
struct Answer {
    usage: Option<UpstreamUsage>,
    #[serde(default)]
    choices: Vec<AnswerChoice>,
}

#[derive(Deserialize)]
struct AnswerChoice {
    message: Option<AnswerMessage>,
    text: Option<String>,
}

#[derive(Deserialize)]
struct AnswerMessage {
    content: Option<String>,
}

/// Relays a successful upstream answer. A non-streamed body that fails before
/// it is complete is still retryable (nothing has reached the client yet).
async fn deliver<P: Platform>(
    relay: &Arc<Relay<P>>,
    ch: &Arc<Channel>,
    key: Option<usize>,
    parsed: &Parsed,
    resp: UpstreamResponse,
    mut draft: UsageDraft<P>,
) -> Result<Response, (UsageDraft<P>, Failure)> {
    let content_type = resp.headers.get(http::header::CONTENT_TYPE).cloned();
    let is_sse =
        content_type.as_ref().and_then(|v| v.to_str().ok()).is_some_and(|v| v.starts_with("text/event-stream"));
    if parsed.stream && is_sse {
        relay.record_success(ch.id, key).await;
        let request_id = draft.request_id.clone();
        let body = stream::relay_stream(relay.clone(), resp.body, draft, parsed.include_usage);
        let mut response = Response::new(Body::from_stream(body));
        let h = response.headers_mut();
        h.insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("text/event-stream; charset=utf-8"));
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
    let (usage, text) = match serde_json::from_slice::<Answer>(&bytes) {
        Ok(a) => {
            let text: String = a
                .choices
                .iter()
                .filter_map(|c| c.message.as_ref().and_then(|m| m.content.clone()).or_else(|| c.text.clone()))
                .collect();
            (a.usage, text)
        }
        Err(_) => (None, String::new()),
    };
    let request_id = draft.request_id.clone();
    draft.finish(resp.status, usage, text, None);
    let mut response = json_response(resp.status, bytes, &request_id);
    if let Some(ct) = content_type {
        response.headers_mut().insert(http::header::CONTENT_TYPE, ct);
    }
    Ok(response)
}
