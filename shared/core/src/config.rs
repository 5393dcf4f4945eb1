//! Config-as-code: one TOML file declares relay settings, groups, prices and
//! channels. Parsing is pure: the caller passes the file text and an environment
//! lookup, and every error names the file, the key and what is wrong.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::Deserialize;

use crate::model::{ChannelSpec, ChannelType, Group, KeySelection, Price};

/// Relay behaviour; every field has a default so an empty file is valid.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RelaySettings {
    /// Requests with larger bodies get 413.
    pub max_body_bytes: usize,
    /// How long to wait for an upstream's response headers.
    pub upstream_timeout_ms: u64,
    /// A `: keep-alive` comment is sent when a stream is silent this long.
    pub keepalive_interval_ms: u64,
    /// Upstream attempts per request, over all channels.
    pub max_attempts: u32,
    /// Failed attempts on one channel before moving to another.
    pub attempts_per_channel: u32,
    pub retry_base_ms: u64,
    pub retry_max_ms: u64,
    /// Consecutive failures after which a channel is disabled automatically.
    pub channel_failure_threshold: u32,
    /// Consecutive failures after which a key rests.
    pub key_failure_threshold: u32,
    pub key_rest_seconds: u64,
    /// Completion tokens reserved for a request that sets no `max_tokens`.
    pub default_max_tokens: i64,
    /// How often the local gateway probes every channel (0: never; on AWS an
    /// EventBridge schedule runs the health function instead).
    pub health_check_seconds: u64,
    /// A channel is disabled once `channel_failure_threshold` probes fail within this window.
    pub health_window_seconds: u64,
    /// Lets channel base URLs point at link-local and cloud metadata addresses
    /// (169.254.0.0/16, fe80::/10, fd00:ec2::254); refused by default.
    pub allow_link_local_upstreams: bool,
    /// Messages (or Gemini `contents`, Responses `input` items, embedding
    /// inputs) one request may carry; more is a 400 `too_many_messages`.
    pub max_messages: usize,
    /// Content parts over all of a request's messages; more is a 400 `too_many_parts`.
    pub max_parts: usize,
    /// JSON values (numbers, strings, objects, …) in one body, counted before
    /// it is parsed; more is a 400 `too_many_values`.
    pub max_json_values: usize,
    /// Cross-origin access to the relay routes (`/v1/*`, `/v1beta/*`).
    pub cors: CorsSettings,
}

/// CORS on the relay routes. They authenticate by a key in a header, never by
/// a cookie, so any origin may call them by default.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CorsSettings {
    /// `["*"]` (any), a list of exact origins, or `[]` (no CORS headers at all).
    pub allowed_origins: Vec<String>,
    pub allowed_methods: Vec<String>,
    /// `["*"]` echoes whatever the preflight asks for.
    pub allowed_headers: Vec<String>,
    /// How long a browser may cache a preflight answer.
    pub max_age_seconds: u64,
}

impl Default for CorsSettings {
    fn default() -> Self {
        CorsSettings {
            allowed_origins: vec!["*".into()],
            allowed_methods: ["GET", "POST", "OPTIONS"].map(String::from).to_vec(),
            allowed_headers: vec!["*".into()],
            max_age_seconds: 600,
        }
    }
}

/// The local server's connection limits (`[server]`).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerSettings {
    pub listen: Option<String>,
    /// A request's headers must arrive within this. The clock also runs while a
    /// keep-alive connection waits for its next request: it is the idle timeout too.
    pub header_read_timeout_ms: u64,
    /// A request's whole body must arrive within this (counted from its headers): 408 after.
    pub body_read_timeout_ms: u64,
    /// Open connections at most; past it a new one gets a 503 and is closed.
    /// 0: three quarters of the process's file-descriptor limit.
    pub max_connections: usize,
    /// On SIGTERM/Ctrl-C, running requests and streams get this long to finish.
    pub shutdown_timeout_ms: u64,
    /// Proxies (addresses or CIDR ranges) whose `X-Forwarded-For` / `Forwarded`
    /// headers name the caller. From anyone else those headers are ignored, so
    /// a caller cannot choose the address that IP allowlists, IP rate limits
    /// and logs see.
    pub trusted_proxies: Vec<ipnet::IpNet>,
}

/// `[metrics]`: the Prometheus endpoint. Off unless `listen` is set.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsSettings {
    /// Where `GET /metrics` is served: an address of its own (e.g.
    /// `127.0.0.1:9464`, the default to choose: the gateway's port is often
    /// public), or `main` for the gateway's own port.
    pub listen: Option<String>,
}

/// `[tracing]`: OpenTelemetry traces over OTLP/HTTP. Off unless `otlp_endpoint` is set.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TracingSettings {
    /// The collector's base URL, e.g. `http://127.0.0.1:4318` (spans go to `/v1/traces`).
    pub otlp_endpoint: Option<String>,
    /// Share of requests traced, 0 to 1; a caller's sampled `traceparent` is always followed.
    pub sample_ratio: f64,
    pub service_name: String,
}

impl Default for TracingSettings {
    fn default() -> Self {
        TracingSettings { otlp_endpoint: None, sample_ratio: 1.0, service_name: "oblivious".into() }
    }
}

impl Default for ServerSettings {
    fn default() -> Self {
        ServerSettings {
            listen: None,
            header_read_timeout_ms: 30_000,
            body_read_timeout_ms: 60_000,
            max_connections: 0,
            shutdown_timeout_ms: 30_000,
            trusted_proxies: Vec::new(),
        }
    }
}

impl RelaySettings {
    /// The window failed probes count in (at least a second).
    pub fn health_window(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.health_window_seconds.max(1))
    }
}

impl Default for RelaySettings {
    fn default() -> Self {
        RelaySettings {
            max_body_bytes: 32 * 1024 * 1024,
            upstream_timeout_ms: 120_000,
            keepalive_interval_ms: 15_000,
            max_attempts: 6,
            attempts_per_channel: 2,
            retry_base_ms: 200,
            retry_max_ms: 5_000,
            channel_failure_threshold: 5,
            key_failure_threshold: 3,
            key_rest_seconds: 300,
            default_max_tokens: 1024,
            health_check_seconds: 0,
            health_window_seconds: 600,
            allow_link_local_upstreams: false,
            max_messages: 10_000,
            max_parts: 50_000,
            max_json_values: 500_000,
            cors: CorsSettings::default(),
        }
    }
}

/// Where hot state (caches, counters, rate-limit windows) lives.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HotBackend {
    /// In this process (one gateway).
    #[default]
    Memory,
    /// A Redis server shared by every gateway process.
    Redis,
    /// Upstash Redis over its REST API (HTTPS, no TCP to Redis needed).
    Upstash,
}

#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HotSettings {
    pub backend: HotBackend,
    /// `redis://host:port/db`; `${ENV}` is expanded.
    pub redis_url: Option<String>,
    /// Upstash's REST URL (`https://….upstash.io`); `${ENV}` is expanded.
    pub upstash_url: Option<String>,
    /// Upstash's REST token; `${ENV}` is expanded.
    pub upstash_token: Option<String>,
    /// Prefix for every key, so several deployments can share one server.
    pub key_prefix: String,
}

impl Default for HotSettings {
    fn default() -> Self {
        HotSettings {
            backend: HotBackend::Memory,
            redis_url: None,
            upstash_url: None,
            upstash_token: None,
            key_prefix: "oblivious:".into(),
        }
    }
}

/// Shows every field but the token.
impl fmt::Debug for HotSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HotSettings")
            .field("backend", &self.backend)
            .field("redis_url", &self.redis_url)
            .field("upstash_url", &self.upstash_url)
            .field("upstash_token", &self.upstash_token.as_ref().map(|_| "<redacted>"))
            .field("key_prefix", &self.key_prefix)
            .finish()
    }
}

/// Reservation housekeeping.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BillingSettings {
    /// A reservation still open after this long (its request died with a
    /// crashed process) is refunded by the sweeper.
    pub reservation_timeout_seconds: u64,
    pub sweep_interval_seconds: u64,
}

impl Default for BillingSettings {
    fn default() -> Self {
        BillingSettings { reservation_timeout_seconds: 900, sweep_interval_seconds: 30 }
    }
}

/// The validated file.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Config {
    pub server: ServerSettings,
    pub metrics: MetricsSettings,
    pub tracing: TracingSettings,
    pub relay: RelaySettings,
    pub billing: BillingSettings,
    pub hot: HotSettings,
    pub rate_limits: crate::ratelimit::RateLimits,
    pub alerts: crate::alerts::AlertSettings,
    pub auth: crate::auth::AuthSettings,
    pub mail: crate::auth::MailSettings,
    pub groups: Vec<Group>,
    pub prices: Vec<Price>,
    pub channels: Vec<ChannelSpec>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    pub file: String,
    /// Dotted path of the offending key, e.g. `channels[1].base_url`.
    pub key: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            write!(f, "{}: {}", self.file, self.message)
        } else {
            write!(f, "{}: {}: {}", self.file, self.key, self.message)
        }
    }
}

impl std::error::Error for ConfigError {}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    server: ServerSettings,
    #[serde(default)]
    metrics: MetricsSettings,
    #[serde(default)]
    tracing: TracingSettings,
    #[serde(default)]
    relay: RelaySettings,
    #[serde(default)]
    billing: BillingSettings,
    #[serde(default)]
    hot: HotSettings,
    #[serde(default)]
    rate_limits: crate::ratelimit::RateLimits,
    #[serde(default)]
    alerts: crate::alerts::AlertSettings,
    #[serde(default)]
    auth: crate::auth::AuthSettings,
    #[serde(default)]
    mail: crate::auth::MailSettings,
    #[serde(default)]
    groups: BTreeMap<String, RawGroup>,
    #[serde(default)]
    prices: BTreeMap<String, RawPrice>,
    #[serde(default)]
    channels: Vec<RawChannel>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGroup {
    ratio: f64,
    #[serde(default)]
    description: String,
}

/// Prices in USD per 1M tokens (per request, image, audio second), converted
/// to integer units at load.
#[derive(Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawPrice {
    input: f64,
    output: f64,
    cached_input: Option<f64>,
    per_request: f64,
    per_image: f64,
    per_audio_second: f64,
    free: bool,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawChannel {
    name: String,
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    base_url: String,
    #[serde(default)]
    keys: Vec<String>,
    #[serde(default)]
    models: Vec<String>,
    #[serde(default)]
    model_mapping: BTreeMap<String, String>,
    #[serde(default = "one")]
    weight: i64,
    #[serde(default)]
    priority: i64,
    group: Option<OneOrMany>,
    #[serde(default)]
    key_selection: Option<String>,
    api_version: Option<String>,
    region: Option<String>,
    project: Option<String>,
}

fn one() -> i64 {
    1
}

pub const DEFAULT_GROUP: &str = "default";

/// Parses and validates `text` (read from `file`), expanding `${VAR}` and
/// `${VAR:-fallback}` in channel keys and base URLs through `env`.
pub fn parse(file: &str, text: &str, env: impl Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
    let err = |key: String, message: String| ConfigError { file: file.to_string(), key, message };
    let raw: RawFile = toml::from_str(text).map_err(|e| {
        let place = e
            .span()
            .map(|s| {
                let before = &text[..s.start.min(text.len())];
                let line = before.matches('\n').count() + 1;
                let col = before.rsplit('\n').next().map_or(0, str::len) + 1;
                format!("line {line}, column {col}")
            })
            .unwrap_or_default();
        err(place, e.message().to_string())
    })?;

    let mut groups = vec![];
    for (name, g) in &raw.groups {
        if !(g.ratio.is_finite() && g.ratio > 0.0) {
            return Err(err(format!("groups.{name}.ratio"), "must be a number greater than 0".into()));
        }
        groups.push(Group {
            name: name.clone(),
            ratio_bp: (g.ratio * 10_000.0).round() as i64,
            description: g.description.clone(),
        });
    }
    if !raw.groups.contains_key(DEFAULT_GROUP) {
        groups.push(Group { name: DEFAULT_GROUP.into(), ratio_bp: 10_000, description: String::new() });
    }
    let group_names: BTreeSet<&str> = groups.iter().map(|g| g.name.as_str()).collect();

    let mut prices = vec![];
    for (model, p) in &raw.prices {
        let units = |field: &str, usd: f64| {
            if usd.is_finite() && usd >= 0.0 && usd * 1_000_000.0 <= crate::money::MAX_UNITS as f64 {
                Ok((usd * 1_000_000.0).round() as i64)
            } else {
                Err(err(format!("prices.\"{model}\".{field}"), "must be a number from 0 to 1e9 (USD)".into()))
            }
        };
        let price = Price {
            model: model.clone(),
            input_per_m: units("input", p.input)?,
            output_per_m: units("output", p.output)?,
            cached_input_per_m: p.cached_input.map(|c| units("cached_input", c)).transpose()?,
            per_request: units("per_request", p.per_request)?,
            per_image: units("per_image", p.per_image)?,
            per_audio_second: units("per_audio_second", p.per_audio_second)?,
            free: p.free,
            ..Price::default()
        };
        if price.free && !price.same_rates(&Price { free: true, ..Price::default() }) {
            return Err(err(format!("prices.\"{model}\".free"), "a free model cannot also have rates".into()));
        }
        if model.is_empty() || model[..model.len() - 1].contains('*') {
            return Err(err(format!("prices.\"{model}\""), "must be a model name or `prefix*` pattern".into()));
        }
        prices.push(price);
    }

    let mut channels = vec![];
    let mut names = BTreeSet::new();
    for (i, c) in raw.channels.iter().enumerate() {
        let at = |field: &str| format!("channels[{i}].{field}");
        if c.name.trim().is_empty() {
            return Err(err(at("name"), "must not be empty".into()));
        }
        if !names.insert(c.name.as_str()) {
            return Err(err(at("name"), format!("`{}` is declared twice", c.name)));
        }
        let kind = ChannelType::parse(&c.kind).ok_or_else(|| {
            err(at("type"), format!("unknown channel type `{}` (known: {})", c.kind, ChannelType::names()))
        })?;
        let base_url = expand(&c.base_url, &env).map_err(|m| err(at("base_url"), m))?;
        let base_url = base_url.trim_end_matches('/').to_string();
        let mut keys = vec![];
        for (k, key) in c.keys.iter().enumerate() {
            let v = expand(key, &env).map_err(|m| err(format!("channels[{i}].keys[{k}]"), m))?;
            if !v.trim().is_empty() {
                keys.push(v.trim().to_string());
            }
        }
        let weight =
            u32::try_from(c.weight).map_err(|_| err(at("weight"), "must be between 0 and 4294967295".into()))?;
        let groups = match &c.group {
            None => vec![DEFAULT_GROUP.to_string()],
            Some(OneOrMany::One(s)) => s.split(',').map(|g| g.trim().to_string()).filter(|g| !g.is_empty()).collect(),
            Some(OneOrMany::Many(v)) => v.clone(),
        };
        if let Some(g) = groups.iter().find(|g| !group_names.contains(g.as_str())) {
            return Err(err(at("group"), format!("group `{g}` is not declared under [groups]")));
        }
        let key_selection = match c.key_selection.as_deref() {
            None | Some("random") => KeySelection::Random,
            Some("round_robin") => KeySelection::RoundRobin,
            Some(other) => {
                return Err(err(at("key_selection"), format!("`{other}` is not one of random, round_robin")))
            }
        };
        let spec = ChannelSpec {
            name: c.name.clone(),
            kind,
            base_url,
            keys,
            models: c.models.clone(),
            model_mapping: c.model_mapping.clone(),
            weight,
            priority: c.priority,
            groups,
            key_selection,
            api_version: c.api_version.clone(),
            region: c.region.clone(),
            project: c.project.clone(),
        };
        spec.check().map_err(|(field, message)| err(at(field), message))?;
        crate::upstream_url::check_upstream(&spec.base_url(), raw.relay.allow_link_local_upstreams)
            .map_err(|m| err(at("base_url"), format!("channel `{}`: {m}", c.name)))?;
        channels.push(spec);
    }

    let relay = raw.relay;
    if relay.max_attempts == 0 || relay.attempts_per_channel == 0 {
        return Err(err(
            "relay.max_attempts".into(),
            "max_attempts and attempts_per_channel must be at least 1".into(),
        ));
    }
    if relay.keepalive_interval_ms == 0 {
        return Err(err("relay.keepalive_interval_ms".into(), "must be at least 1".into()));
    }
    let mut hot = raw.hot;
    if let Some(url) = &hot.redis_url {
        hot.redis_url = Some(expand(url, &env).map_err(|m| err("hot.redis_url".into(), m))?);
    }
    if hot.backend == HotBackend::Redis && hot.redis_url.as_deref().is_none_or(str::is_empty) {
        return Err(err("hot.redis_url".into(), "required when backend = \"redis\"".into()));
    }
    if let Some(url) = &hot.upstash_url {
        hot.upstash_url = Some(expand(url, &env).map_err(|m| err("hot.upstash_url".into(), m))?);
    }
    if let Some(token) = &hot.upstash_token {
        hot.upstash_token = Some(expand(token, &env).map_err(|m| err("hot.upstash_token".into(), m))?);
    }
    if hot.backend == HotBackend::Upstash {
        match hot.upstash_url.as_deref() {
            None | Some("") => {
                return Err(err("hot.upstash_url".into(), "required when backend = \"upstash\"".into()));
            }
            Some(url) if !(url.starts_with("https://") || url.starts_with("http://")) => {
                return Err(err("hot.upstash_url".into(), format!("`{url}` must start with https:// or http://")));
            }
            Some(_) => {}
        }
        if hot.upstash_token.as_deref().is_none_or(str::is_empty) {
            return Err(err("hot.upstash_token".into(), "required when backend = \"upstash\"".into()));
        }
    }
    let levels = raw.rate_limits.groups.iter().flat_map(|(g, l)| {
        [("user", l.user), ("token", l.token), ("ip", l.ip)]
            .map(move |(lvl, x)| (format!("rate_limits.groups.{g}.{lvl}"), x))
    });
    let models = raw.rate_limits.models.iter().map(|(m, l)| (format!("rate_limits.models.\"{m}\""), *l));
    for (key, limits) in levels.chain(models) {
        if [limits.rpm, limits.tpm, limits.concurrency].iter().flatten().any(|n| *n <= 0) {
            return Err(err(key, "limits must be at least 1 (leave a limit out for none)".into()));
        }
    }
    let mut alerts = raw.alerts;
    if let Some(url) = &alerts.webhook_url {
        let url = expand(url, &env).map_err(|m| err("alerts.webhook_url".into(), m))?;
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(err("alerts.webhook_url".into(), format!("`{url}` must start with http:// or https://")));
        }
        alerts.webhook_url = Some(url);
    }
    if alerts.thresholds_percent.iter().any(|t| !(0..=100).contains(t)) {
        return Err(err("alerts.thresholds_percent".into(), "each threshold is a percent from 0 to 100".into()));
    }
    let tracing = raw.tracing;
    if !(0.0..=1.0).contains(&tracing.sample_ratio) {
        return Err(err("tracing.sample_ratio".into(), "must be a number from 0 to 1".into()));
    }
    if let Some(url) = &tracing.otlp_endpoint {
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(err("tracing.otlp_endpoint".into(), format!("`{url}` must start with http:// or https://")));
        }
    }
    if let Some(listen) = raw.metrics.listen.as_deref().filter(|l| *l != "main") {
        if listen.parse::<std::net::SocketAddr>().is_err() {
            return Err(err(
                "metrics.listen".into(),
                format!("`{listen}` is neither `main` nor an address like 127.0.0.1:9464"),
            ));
        }
    }
    let (auth, mail) = crate::auth::settings_check(raw.auth, raw.mail, &group_names, |v| expand(v, &env))
        .map_err(|(key, message)| err(key, message))?;
    Ok(Config {
        auth,
        mail,
        server: raw.server,
        metrics: raw.metrics,
        tracing,
        relay,
        billing: raw.billing,
        hot,
        rate_limits: raw.rate_limits,
        alerts,
        groups,
        prices,
        channels,
    })
}

/// Expands `${VAR}` and `${VAR:-fallback}`; a missing variable without a fallback is an error.
pub(crate) fn expand(value: &str, env: &impl Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after.find('}').ok_or_else(|| "unclosed `${` in value".to_string())?;
        let expr = &after[..end];
        let (name, fallback) = match expr.split_once(":-") {
            Some((n, f)) => (n, Some(f)),
            None => (expr, None),
        };
        match (env(name), fallback) {
            (Some(v), _) => out.push_str(&v),
            (None, Some(f)) => out.push_str(f),
            (None, None) => return Err(format!("environment variable `{name}` is not set")),
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        (name == "KEY").then(|| "sk-env".to_string())
    }

    #[test]
    fn parses_a_full_file() {
        let text = r#"
[relay]
max_attempts = 3
[groups.vip]
ratio = 0.8
[prices."gpt-4o"]
input = 2.5
output = 10
[[channels]]
name = "a"
type = "openai"
base_url = "http://127.0.0.1:9/v1/"
keys = ["${KEY}", "lit", "${NOPE:-}"]
models = ["gpt-4o", "text-*"]
model_mapping = { "fast" = "gpt-4o-mini" }
group = "default,vip"
key_selection = "round_robin"
"#;
        let c = parse("o.toml", text, env).unwrap();
        assert_eq!(c.relay.max_attempts, 3);
        assert_eq!(c.relay.attempts_per_channel, 2);
        assert_eq!(c.groups.len(), 2);
        assert_eq!(c.groups.iter().find(|g| g.name == "vip").unwrap().ratio_bp, 8000);
        assert_eq!(c.prices[0].input_per_m, 2_500_000);
        let ch = &c.channels[0];
        assert_eq!(ch.base_url, "http://127.0.0.1:9/v1");
        assert_eq!(ch.keys, vec!["sk-env", "lit"]);
        assert_eq!(ch.groups, vec!["default", "vip"]);
        assert_eq!(ch.weight, 1);
        assert_eq!(ch.key_selection, KeySelection::RoundRobin);
    }

    #[test]
    fn errors_name_file_key_and_problem() {
        let base = "[[channels]]\nname = \"a\"\ntype = \"openai\"\nmodels = [\"m\"]\n";
        let e = parse("o.toml", &format!("{base}base_url = \"ftp://x\"\n"), env).unwrap_err();
        assert_eq!(e.to_string(), "o.toml: channels[0].base_url: `ftp://x` must start with http:// or https://");
        let e =
            parse("o.toml", &format!("{base}base_url = \"http://x\"\nkeys = [\"${{MISSING}}\"]\n"), env).unwrap_err();
        assert_eq!(e.key, "channels[0].keys[0]");
        assert!(e.message.contains("MISSING"));
        let e = parse("o.toml", &format!("{base}base_url = \"http://x\"\ngroup = \"gold\"\n"), env).unwrap_err();
        assert!(e.message.contains("gold"));
        let e = parse("o.toml", &format!("{base}base_url = \"http://x\"\nwieght = 3\n"), env).unwrap_err();
        assert_eq!(e.key, "line 6, column 1");
        assert!(e.message.contains("wieght"), "{e}");
        let e = parse("o.toml", "[groups.vip]\nratio = -1\n", env).unwrap_err();
        assert_eq!(e.key, "groups.vip.ratio");
    }

    #[test]
    fn upstash_hot_state_needs_url_and_token() {
        let text =
            "[hot]\nbackend = \"upstash\"\nupstash_url = \"https://eu1-x.upstash.io/\"\nupstash_token = \"${KEY}\"\n";
        let c = parse("o.toml", text, env).unwrap();
        assert_eq!(c.hot.backend, HotBackend::Upstash);
        assert_eq!(c.hot.upstash_url.as_deref(), Some("https://eu1-x.upstash.io/"));
        assert_eq!(c.hot.upstash_token.as_deref(), Some("sk-env"));
        assert!(!format!("{c:?}").contains("sk-env"), "the token is not in Debug output");
        let e = parse("o.toml", "[hot]\nbackend = \"upstash\"\nupstash_token = \"t\"\n", env).unwrap_err();
        assert_eq!(e.to_string(), "o.toml: hot.upstash_url: required when backend = \"upstash\"");
        let e = parse("o.toml", "[hot]\nbackend = \"upstash\"\nupstash_url = \"https://x\"\n", env).unwrap_err();
        assert_eq!(e.to_string(), "o.toml: hot.upstash_token: required when backend = \"upstash\"");
        let e =
            parse("o.toml", "[hot]\nbackend = \"upstash\"\nupstash_url = \"redis://x\"\nupstash_token = \"t\"\n", env)
                .unwrap_err();
        assert_eq!(e.key, "hot.upstash_url");
        let e = parse("o.toml", "[hot]\nupstash_token = \"${NOPE}\"\n", env).unwrap_err();
        assert_eq!(e.key, "hot.upstash_token");
        assert!(e.message.contains("NOPE"));
    }
}

#[cfg(test)]
mod example {
    /// The README points new users at this file: it must stay valid.
    #[test]
    fn the_example_config_is_valid() {
        let text = include_str!("../../../oblivious.example.toml");
        let cfg = super::parse("oblivious.example.toml", text, |_| None).unwrap();
        assert_eq!(cfg.channels.len(), 1);
        assert!(cfg.prices.iter().any(|p| p.model == "fast"), "the alias the example maps is priced");
        assert!(!cfg.rate_limits.is_empty());
    }
}
