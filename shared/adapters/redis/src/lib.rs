//! [`Hot`] over Redis, shared by every gateway process that points at the same
//! server: counters and windows are atomic on the server (INCRBY, MULTI, Lua),
//! so limits hold across processes.

use std::time::Duration;

use bytes::Bytes;
use oblivious_core::{ratelimit, redis_lua};
use oblivious_ports::{Hit, Hot, PortError};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{AsyncCommands, Script};

/// How long one Redis call (or connection attempt) may take: far more than a
/// healthy server needs, far less than a request can wait.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(1);

#[derive(Clone)]
pub struct RedisHot {
    conn: ConnectionManager,
    prefix: String,
    window: Script,
    acquire: Script,
}

fn port(e: redis::RedisError) -> PortError {
    PortError(format!("redis: {e}"))
}

impl RedisHot {
    /// Connects (reconnecting on its own later) to `url`; every key is put under `prefix`.
    ///
    /// Calls and connection attempts time out (after [`CALL_TIMEOUT`]) and a
    /// lost connection is retried once before a call fails: with Redis gone,
    /// a call fails within seconds (callers fall back or let the request
    /// through) instead of waiting for ever.
    pub async fn connect(url: &str, prefix: &str) -> Result<Self, PortError> {
        let client = redis::Client::open(url).map_err(port)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(CALL_TIMEOUT)
            .set_response_timeout(CALL_TIMEOUT)
            .set_number_of_retries(1);
        let conn = ConnectionManager::new_with_config(client, config).await.map_err(port)?;
        Ok(RedisHot {
            conn,
            prefix: prefix.to_string(),
            window: Script::new(redis_lua::WINDOW),
            acquire: Script::new(redis_lua::ACQUIRE),
        })
    }

    fn key(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }
}

fn ms(d: Duration) -> u64 {
    (d.as_millis() as u64).max(1)
}

impl Hot for RedisHot {
    async fn get(&self, key: &str) -> Result<Option<i64>, PortError> {
        self.conn.clone().get(self.key(key)).await.map_err(port)
    }

    async fn incr(&self, key: &str, delta: i64, ttl: Option<Duration>) -> Result<i64, PortError> {
        let key = self.key(key);
        let mut pipe = redis::pipe();
        pipe.atomic();
        if let Some(ttl) = ttl {
            // Starts the key (with its TTL) only if it does not exist yet.
            pipe.cmd("SET").arg(&key).arg(0).arg("NX").arg("PX").arg(ms(ttl)).ignore();
        }
        pipe.cmd("INCRBY").arg(&key).arg(delta);
        let (n,): (i64,) = pipe.query_async(&mut self.conn.clone()).await.map_err(port)?;
        Ok(n)
    }

    async fn set(&self, key: &str, value: i64, ttl: Option<Duration>) -> Result<(), PortError> {
        let mut conn = self.conn.clone();
        match ttl {
            Some(t) => conn.pset_ex(self.key(key), value, ms(t)).await.map_err(port),
            None => conn.set(self.key(key), value).await.map_err(port),
        }
    }

    async fn del(&self, key: &str) -> Result<(), PortError> {
        self.conn.clone().del(self.key(key)).await.map_err(port)
    }

    async fn get_bytes(&self, key: &str) -> Result<Option<Bytes>, PortError> {
        let v: Option<Vec<u8>> = self.conn.clone().get(self.key(key)).await.map_err(port)?;
        Ok(v.map(Bytes::from))
    }

    async fn set_bytes(&self, key: &str, value: Bytes, ttl: Option<Duration>) -> Result<(), PortError> {
        let mut conn = self.conn.clone();
        match ttl {
            Some(t) => conn.pset_ex(self.key(key), value.to_vec(), ms(t)).await.map_err(port),
            None => conn.set(self.key(key), value.to_vec()).await.map_err(port),
        }
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
        let (allowed, count): (i64, i64) = self
            .window
            .key(self.key(&format!("{key}:{index}")))
            .key(self.key(&format!("{key}:{}", index - 1)))
            .arg(window_ms)
            .arg(limit)
            .arg(cost)
            .arg(elapsed)
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(port)?;
        Ok(Hit { allowed: allowed == 1, count, reset_ms: window_ms - elapsed })
    }

    async fn acquire(&self, key: &str, limit: i64, ttl: Duration) -> Result<Option<i64>, PortError> {
        let n: i64 = self
            .acquire
            .key(self.key(key))
            .arg(limit)
            .arg(ms(ttl))
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(port)?;
        Ok((n >= 0).then_some(n))
    }
}
