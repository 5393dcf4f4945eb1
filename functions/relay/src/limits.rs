//! Rate limits at admission: requests and tokens per minute (sliding window)
//! and concurrent requests, per user, token, IP (the caller's group defaults)
//! and per model. A refusal rolls back what this request already counted.
//! The headers OpenAI's SDKs read are set on refusals and successes alike.

use std::net::IpAddr;
use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue};
use oblivious_core::ratelimit::{self, Limits, WINDOW_MS};
use oblivious_core::{ApiError, ErrorKind};
use oblivious_ports::{Clock, Hot, Platform};

use crate::{observe, Principal, Relay};

/// Slots held for a crashed request expire after this long.
const SLOT_TTL: Duration = Duration::from_secs(600);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Requests,
    Tokens,
    Concurrency,
}

impl Kind {
    fn label(self) -> &'static str {
        match self {
            Kind::Requests => "requests",
            Kind::Tokens => "tokens",
            Kind::Concurrency => "concurrency",
        }
    }
}

struct Check {
    key: String,
    what: String,
    /// `user`, `token`, `ip` or `model` (a metric label).
    level: &'static str,
    kind: Kind,
    limit: i64,
}

/// What a request holds until it finishes: concurrency slots to release and
/// its token estimate to correct.
#[derive(Default)]
pub(crate) struct Admission {
    pub headers: HeaderMap,
    slots: Vec<String>,
    token_windows: Vec<String>,
    estimated_tokens: i64,
}

fn checks(out: &mut Vec<Check>, scope: &'static str, id: &str, limits: &Limits) {
    let mut add = |kind, dim: &str, limit: Option<i64>| {
        if let Some(limit) = limit {
            out.push(Check {
                key: format!("rl:{scope}:{id}:{dim}"),
                what: format!("{scope} {dim}"),
                level: scope,
                kind,
                limit,
            });
        }
    };
    add(Kind::Requests, "rpm", limits.rpm);
    add(Kind::Tokens, "tpm", limits.tpm);
    add(Kind::Concurrency, "concurrency", limits.concurrency);
}

fn header(headers: &mut HeaderMap, name: &'static str, value: String) {
    if let Ok(v) = HeaderValue::from_str(&value) {
        headers.insert(HeaderName::from_static(name), v);
    }
}

/// Remembers the tightest window per dimension for the `x-ratelimit-*` headers.
#[derive(Default)]
struct Tightest {
    requests: Option<(i64, i64, i64)>,
    tokens: Option<(i64, i64, i64)>,
}

impl Tightest {
    fn note(&mut self, kind: Kind, limit: i64, count: i64, reset_ms: i64) {
        let slot = match kind {
            Kind::Requests => &mut self.requests,
            Kind::Tokens => &mut self.tokens,
            Kind::Concurrency => return,
        };
        let remaining = (limit - count).max(0);
        if slot.is_none_or(|(l, c, _)| remaining < (l - c).max(0)) {
            *slot = Some((limit, count, reset_ms));
        }
    }

    fn headers(&self) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Some((limit, count, reset)) = self.requests {
            header(&mut h, "x-ratelimit-limit-requests", limit.to_string());
            header(&mut h, "x-ratelimit-remaining-requests", (limit - count).max(0).to_string());
            header(&mut h, "x-ratelimit-reset-requests", ratelimit::reset_header(reset));
        }
        if let Some((limit, count, reset)) = self.tokens {
            header(&mut h, "x-ratelimit-limit-tokens", limit.to_string());
            header(&mut h, "x-ratelimit-remaining-tokens", (limit - count).max(0).to_string());
            header(&mut h, "x-ratelimit-reset-tokens", ratelimit::reset_header(reset));
        }
        h
    }
}

impl<P: Platform> Relay<P> {
    /// Counts the request against every limit that applies, or refuses it
    /// (429 with `Retry-After`) and undoes what it counted.
    pub(crate) async fn admit_rate(
        &self,
        principal: &Principal,
        ip: Option<IpAddr>,
        model: &str,
        estimated_tokens: i64,
    ) -> Result<Admission, (ApiError, HeaderMap)> {
        let limits = self.rate_limits();
        if limits.is_empty() {
            return Ok(Admission::default());
        }
        let mut list = Vec::new();
        if let Some(g) = limits.for_group(&principal.user.group) {
            checks(&mut list, "user", &principal.user.id.to_string(), &g.user);
            checks(&mut list, "token", &principal.token.id.to_string(), &g.token);
            if let Some(ip) = ip {
                checks(&mut list, "ip", &ip.to_string(), &g.ip);
            }
        }
        if let Some(m) = limits.models.get(model) {
            checks(&mut list, "model", model, m);
        }
        let hot = &self.ports.hot;
        let now = self.ports.clock.now_ms();
        let mut admission = Admission { estimated_tokens, ..Admission::default() };
        let mut counted: Vec<(&Check, i64)> = Vec::new();
        let mut tightest = Tightest::default();
        for check in &list {
            let cost = if check.kind == Kind::Tokens { estimated_tokens.max(1) } else { 1 };
            let (allowed, retry_ms) = match check.kind {
                Kind::Concurrency => match hot.acquire(&check.key, check.limit, SLOT_TTL).await {
                    Ok(Some(_)) => (true, 0),
                    Ok(None) => (false, 1000),
                    Err(e) => {
                        tracing::warn!("rate limit backend failed, letting the request through: {e}");
                        continue;
                    }
                },
                _ => match hot.window_hit(&check.key, WINDOW_MS, check.limit, cost, now).await {
                    Ok(hit) => {
                        tightest.note(check.kind, check.limit, hit.count, hit.reset_ms);
                        // Wait until enough of the window has slid past.
                        (hit.allowed, hit.reset_ms.min(WINDOW_MS))
                    }
                    Err(e) => {
                        tracing::warn!("rate limit backend failed, letting the request through: {e}");
                        continue;
                    }
                },
            };
            if !allowed {
                observe::rate_limited(check.level, check.kind.label());
                for (done, cost) in counted {
                    self.undo(done, cost, now).await;
                }
                let mut headers = tightest.headers();
                header(&mut headers, "retry-after", ((retry_ms + 999) / 1000).max(1).to_string());
                header(&mut headers, "retry-after-ms", retry_ms.max(1).to_string());
                let e = ApiError::new(
                    ErrorKind::RateLimited,
                    "rate_limit_exceeded",
                    format!(
                        "Rate limit reached for {}: limit {}. Try again in {} ms.",
                        check.what, check.limit, retry_ms
                    ),
                );
                return Err((e, headers));
            }
            counted.push((check, cost));
        }
        for (check, _) in &counted {
            match check.kind {
                Kind::Concurrency => admission.slots.push(check.key.clone()),
                Kind::Tokens => admission.token_windows.push(check.key.clone()),
                Kind::Requests => {}
            }
        }
        admission.headers = tightest.headers();
        Ok(admission)
    }

    async fn undo(&self, check: &Check, cost: i64, now: i64) {
        let hot = &self.ports.hot;
        let _ = match check.kind {
            Kind::Concurrency => hot.incr(&check.key, -1, None).await.map(|_| ()),
            _ => hot.window_hit(&check.key, WINDOW_MS, i64::MAX, -cost, now).await.map(|_| ()),
        };
    }

    /// At the end of a request: frees its slots and corrects its token
    /// estimate to what it really used.
    pub(crate) async fn release(&self, admission: Admission, used_tokens: i64) {
        let hot = &self.ports.hot;
        for slot in &admission.slots {
            let _ = hot.incr(slot, -1, None).await;
        }
        let correction = used_tokens - admission.estimated_tokens.max(1);
        if correction != 0 {
            let now = self.ports.clock.now_ms();
            for key in &admission.token_windows {
                // i64::MAX: a correction is applied whatever the limit.
                let _ = hot.window_hit(key, WINDOW_MS, i64::MAX, correction, now).await;
            }
        }
    }
}
