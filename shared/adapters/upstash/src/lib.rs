//! [`Hot`] over Upstash Redis's REST API, for runtimes without TCP to Redis
//! (the Cloudflare Worker) and anywhere HTTPS is easier. All HTTP goes through
//! the [`Upstream`] port: reqwest natively, the Workers fetch API at the edge.
//!
//! It behaves like `oblivious-redis` on the same server, key for key: counters
//! are plain Redis integers, windows and slots run the same Lua
//! ([`oblivious_core::redis_lua`]), so a gateway on TCP and a worker on REST
//! can share one database and its limits.
//!
//! Two things REST cannot do the way TCP does, and what is done instead:
//! - **`incr` with a TTL** is `SET NX PX` + `INCRBY` in one `MULTI` on TCP;
//!   here it is one Lua script, which is just as atomic (a pipeline is not).
//! - **Bytes.** JSON carries strings, not bytes: a value that is not UTF-8
//!   cannot be sent as a JSON string, nor read back as one. Base64-encoding
//!   values before `SET` would round-trip, but would store base64 text where
//!   `oblivious-redis` stores the raw bytes, so the two adapters would read each
//!   other's values as garbage; and the `Upstash-Encoding: base64` response
//!   header only helps reads (and not every Upstash-compatible server has it).
//!   So bytes travel as hex in both directions and two small Lua scripts turn
//!   them into raw bytes on the server and back: Redis holds exactly what
//!   `oblivious-redis` would, and any byte string round-trips.

pub mod rest;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use oblivious_core::{ratelimit, redis_lua};
use oblivious_ports::{Hit, Hot, PortError, Upstream};
use serde_json::Value;

pub use rest::{Rest, Script};

/// `SET key 0 NX PX ttl` then `INCRBY key delta`, atomically.
/// KEYS: the counter. ARGV: delta, ttl ms. Returns the new value.
const INCR_LUA: &str = r#"
redis.call('SET', KEYS[1], 0, 'NX', 'PX', ARGV[2])
return redis.call('INCRBY', KEYS[1], ARGV[1])
"#;

/// Stores the bytes whose hex is ARGV[1], with a TTL of ARGV[2] ms when given.
const SET_HEX_LUA: &str = r#"
local raw = (string.gsub(ARGV[1], '%x%x', function(h) return string.char(tonumber(h, 16)) end))
if ARGV[2] then
  redis.call('SET', KEYS[1], raw, 'PX', ARGV[2])
else
  redis.call('SET', KEYS[1], raw)
end
return 1
"#;

/// The value at KEYS[1] as hex, or nil.
const GET_HEX_LUA: &str = r#"
local v = redis.call('GET', KEYS[1])
if not v then return false end
return (string.gsub(v, '.', function(c) return string.format('%02x', string.byte(c)) end))
"#;

struct Inner<U> {
    rest: Rest<U>,
    prefix: String,
    window: Script,
    acquire: Script,
    incr: Script,
    set_hex: Script,
    get_hex: Script,
}

/// Hot state on an Upstash (or Upstash-compatible) REST endpoint. Cheap to clone.
pub struct UpstashHot<U> {
    inner: Arc<Inner<U>>,
}

impl<U> Clone for UpstashHot<U> {
    fn clone(&self) -> Self {
        UpstashHot { inner: Arc::clone(&self.inner) }
    }
}

impl<U: Upstream> UpstashHot<U> {
    /// `url`: the REST URL (https://….upstash.io); `token`: the REST token; every key under `prefix`.
    pub fn new(upstream: U, url: impl Into<String>, token: impl Into<String>, prefix: impl Into<String>) -> Self {
        let token = token.into();
        UpstashHot {
            inner: Arc::new(Inner {
                rest: Rest::new(upstream, url, &token),
                prefix: prefix.into(),
                window: Script::new(redis_lua::WINDOW),
                acquire: Script::new(redis_lua::ACQUIRE),
                incr: Script::new(INCR_LUA),
                set_hex: Script::new(SET_HEX_LUA),
                get_hex: Script::new(GET_HEX_LUA),
            }),
        }
    }

    /// Checks the URL and token with a `PING`, so a wrong one shows at startup.
    pub async fn ping(&self) -> Result<(), PortError> {
        match self.rest().command(&["PING"]).await? {
            Value::String(s) if s == "PONG" => Ok(()),
            v => Err(PortError(format!("upstash: PING: expected PONG, got {}", shown(&v)))),
        }
    }

    fn key(&self, key: &str) -> String {
        format!("{}{key}", self.inner.prefix)
    }

    fn rest(&self) -> &Rest<U> {
        &self.inner.rest
    }
}

fn ms(d: Duration) -> String {
    (d.as_millis() as u64).max(1).to_string()
}

/// A reply, cut short for an error message.
fn shown(v: &Value) -> String {
    v.to_string().chars().take(80).collect()
}

fn bad(what: &str, v: &Value) -> PortError {
    PortError(format!("upstash: {what}: expected an integer, got {}", shown(v)))
}

/// A Redis integer: a JSON number, or a string of digits (what `GET` gives).
fn int(what: &str, v: &Value) -> Result<i64, PortError> {
    match v {
        Value::Number(n) => n.as_i64().ok_or_else(|| bad(what, v)),
        Value::String(s) => s.parse().map_err(|_| bad(what, v)),
        _ => Err(bad(what, v)),
    }
}

impl<U: Upstream> Hot for UpstashHot<U> {
    async fn get(&self, key: &str) -> Result<Option<i64>, PortError> {
        match self.rest().command(&["GET", &self.key(key)]).await? {
            Value::Null => Ok(None),
            v => int("GET", &v).map(Some),
        }
    }

    async fn incr(&self, key: &str, delta: i64, ttl: Option<Duration>) -> Result<i64, PortError> {
        let key = self.key(key);
        let v = match ttl {
            Some(ttl) => self.rest().eval(&self.inner.incr, &[&key], &[delta.to_string(), ms(ttl)]).await?,
            None => self.rest().command(&["INCRBY", &key, &delta.to_string()]).await?,
        };
        int("INCRBY", &v)
    }

    async fn set(&self, key: &str, value: i64, ttl: Option<Duration>) -> Result<(), PortError> {
        let (key, value) = (self.key(key), value.to_string());
        match ttl {
            Some(t) => self.rest().command(&["SET", &key, &value, "PX", &ms(t)]).await?,
            None => self.rest().command(&["SET", &key, &value]).await?,
        };
        Ok(())
    }

    async fn del(&self, key: &str) -> Result<(), PortError> {
        self.rest().command(&["DEL", &self.key(key)]).await?;
        Ok(())
    }

    async fn get_bytes(&self, key: &str) -> Result<Option<Bytes>, PortError> {
        match self.rest().eval(&self.inner.get_hex, &[&self.key(key)], &[]).await? {
            Value::Null => Ok(None),
            Value::String(h) => hex::decode(h)
                .map(|b| Some(Bytes::from(b)))
                .map_err(|e| PortError(format!("upstash: GET: the server's hex is malformed: {e}"))),
            v => Err(PortError(format!("upstash: GET: expected hex, got {}", shown(&v)))),
        }
    }

    async fn set_bytes(&self, key: &str, value: Bytes, ttl: Option<Duration>) -> Result<(), PortError> {
        let mut args = vec![hex::encode(&value)];
        args.extend(ttl.map(ms));
        self.rest().eval(&self.inner.set_hex, &[&self.key(key)], &args).await?;
        Ok(())
    }

    async fn window_hit(
        &self,
        key: &str,
        window_ms: i64,
        limit: i64,
        cost: i64,
        now_ms: i64,
    ) -> Result<Hit, PortError> {
        let (index, elapsed) = ratelimit::window_of(now_ms, window_ms);
        let current = self.key(&format!("{key}:{index}"));
        let previous = self.key(&format!("{key}:{}", index - 1));
        let args = [window_ms, limit, cost, elapsed].map(|n| n.to_string());
        let v = self.rest().eval(&self.inner.window, &[&current, &previous], &args).await?;
        match v.as_array().map(Vec::as_slice) {
            Some([allowed, count]) => Ok(Hit {
                allowed: int("window", allowed)? == 1,
                count: int("window", count)?,
                reset_ms: window_ms - elapsed,
            }),
            _ => Err(PortError(format!("upstash: window: expected [allowed, count], got {}", shown(&v)))),
        }
    }

    async fn acquire(&self, key: &str, limit: i64, ttl: Duration) -> Result<Option<i64>, PortError> {
        let v = self.rest().eval(&self.inner.acquire, &[&self.key(key)], &[limit.to_string(), ms(ttl)]).await?;
        let n = int("acquire", &v)?;
        Ok((n >= 0).then_some(n))
    }
}
