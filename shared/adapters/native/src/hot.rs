//! In-process hot state: a mutex-guarded map with lazy expiry.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;
use oblivious_core::ratelimit;
use oblivious_ports::{Hit, Hot, PortError};

#[derive(Clone)]
enum Value {
    Int(i64),
    Bytes(Bytes),
}

struct Entry {
    value: Value,
    expires: Option<Instant>,
}

impl Entry {
    fn live(&self, now: Instant) -> bool {
        self.expires.is_none_or(|e| e > now)
    }
}

#[derive(Default)]
pub struct MemoryHot {
    map: Mutex<HashMap<String, Entry>>,
}

/// Above this many keys, each write first drops expired entries.
const SWEEP_ABOVE: usize = 100_000;

impl MemoryHot {
    pub fn new() -> Self {
        Self::default()
    }

    fn with<T>(&self, f: impl FnOnce(&mut HashMap<String, Entry>, Instant) -> T) -> T {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut map, Instant::now())
    }

    fn put(&self, key: &str, value: Value, ttl: Option<Duration>) {
        self.with(|map, now| {
            if map.len() > SWEEP_ABOVE {
                map.retain(|_, e| e.live(now));
            }
            map.insert(key.to_string(), Entry { value, expires: ttl.map(|t| now + t) });
        })
    }

    fn read(&self, key: &str) -> Option<Value> {
        self.with(|map, now| match map.get(key) {
            Some(e) if e.live(now) => Some(e.value.clone()),
            Some(_) => {
                map.remove(key);
                None
            }
            None => None,
        })
    }
}

impl Hot for MemoryHot {
    async fn get(&self, key: &str) -> Result<Option<i64>, PortError> {
        Ok(match self.read(key) {
            Some(Value::Int(i)) => Some(i),
            _ => None,
        })
    }

    async fn incr(&self, key: &str, delta: i64, ttl: Option<Duration>) -> Result<i64, PortError> {
        Ok(self.with(|map, now| {
            let e = map.entry(key.to_string()).or_insert(Entry { value: Value::Int(0), expires: ttl.map(|t| now + t) });
            if !e.live(now) || !matches!(e.value, Value::Int(_)) {
                *e = Entry { value: Value::Int(0), expires: ttl.map(|t| now + t) };
            }
            let Value::Int(v) = &mut e.value else { unreachable!("normalised above") };
            *v += delta;
            *v
        }))
    }

    async fn set(&self, key: &str, value: i64, ttl: Option<Duration>) -> Result<(), PortError> {
        self.put(key, Value::Int(value), ttl);
        Ok(())
    }

    async fn del(&self, key: &str) -> Result<(), PortError> {
        self.with(|map, _| map.remove(key));
        Ok(())
    }

    async fn get_bytes(&self, key: &str) -> Result<Option<Bytes>, PortError> {
        Ok(match self.read(key) {
            Some(Value::Bytes(b)) => Some(b),
            _ => None,
        })
    }

    async fn set_bytes(&self, key: &str, value: Bytes, ttl: Option<Duration>) -> Result<(), PortError> {
        self.put(key, Value::Bytes(value), ttl);
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
        let ttl = Duration::from_millis((2 * window_ms).max(1) as u64);
        let current_key = format!("{key}:{index}");
        let previous_key = format!("{key}:{}", index - 1);
        Ok(self.with(|map, now| {
            let count_of = |map: &HashMap<String, Entry>, k: &str| match map.get(k) {
                Some(Entry { value: Value::Int(v), expires }) if expires.is_none_or(|e| e > now) => *v,
                _ => 0,
            };
            let current = count_of(map, &current_key);
            let before = ratelimit::sliding_count(count_of(map, &previous_key), current, elapsed, window_ms);
            let reset_ms = window_ms - elapsed;
            if cost > 0 && before + cost > limit {
                return Hit { allowed: false, count: before, reset_ms };
            }
            map.insert(current_key, Entry { value: Value::Int(current + cost), expires: Some(now + ttl) });
            Hit { allowed: true, count: before + cost, reset_ms }
        }))
    }

    async fn acquire(&self, key: &str, limit: i64, ttl: Duration) -> Result<Option<i64>, PortError> {
        Ok(self.with(|map, now| {
            let held = match map.get(key) {
                Some(Entry { value: Value::Int(v), expires }) if expires.is_none_or(|e| e > now) => *v,
                _ => 0,
            };
            if held >= limit {
                return None;
            }
            map.insert(key.to_string(), Entry { value: Value::Int(held + 1), expires: Some(now + ttl) });
            Some(held + 1)
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn counters_and_expiry() {
        let h = MemoryHot::new();
        assert_eq!(h.incr("a", 1, None).await.unwrap(), 1);
        assert_eq!(h.incr("a", 2, None).await.unwrap(), 3);
        h.set("b", 7, Some(Duration::from_millis(20))).await.unwrap();
        assert_eq!(h.get("b").await.unwrap(), Some(7));
        tokio::time::sleep(Duration::from_millis(30)).await;
        assert_eq!(h.get("b").await.unwrap(), None);
        assert_eq!(h.incr("b", 1, None).await.unwrap(), 1, "an expired counter restarts");
        h.set_bytes("c", Bytes::from_static(b"x"), None).await.unwrap();
        assert_eq!(h.get_bytes("c").await.unwrap().as_deref(), Some(&b"x"[..]));
        h.del("c").await.unwrap();
        assert_eq!(h.get_bytes("c").await.unwrap(), None);
    }
}
