//! Lua scripts for Redis-backed hot state, here so the TCP (`oblivious-redis`) and
//! REST (`oblivious-upstash`) adapters run the very same text against one server.

/// Adds `cost` to the current fixed window unless the sliding count would pass
/// the limit (see [`crate::ratelimit::sliding_count`]).
/// KEYS: current window, previous window. ARGV: window ms, limit, cost, ms elapsed.
/// Returns `{allowed (0|1), count}`.
pub const WINDOW: &str = r#"
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
local previous = tonumber(redis.call('GET', KEYS[2]) or '0')
local window, limit, cost, elapsed = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local overlap = window - elapsed
if overlap < 0 then overlap = 0 end
local before = math.floor(previous * overlap / window) + current
if cost > 0 and before + cost > limit then
  return {0, before}
end
redis.call('INCRBY', KEYS[1], cost)
redis.call('PEXPIRE', KEYS[1], window * 2)
return {1, before + cost}
"#;

/// Increments a slot counter unless it already holds the limit.
/// KEYS: the counter. ARGV: limit, ttl ms. Returns the new count, or -1 when full.
pub const ACQUIRE: &str = r#"
local held = tonumber(redis.call('GET', KEYS[1]) or '0')
if held >= tonumber(ARGV[1]) then
  return -1
end
local n = redis.call('INCR', KEYS[1])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return n
"#;
