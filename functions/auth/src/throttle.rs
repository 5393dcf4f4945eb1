//! Attempts per client IP and per account, on the relay's rate-limit windows
//! in hot state (shared by every instance where hot state is shared).

use http::request::Parts;
use oblivious_core::auth::secret;
use oblivious_ports::{Clock, Hot, Platform};
use oblivious_relay::ClientIp;

use crate::reply::{throttled, Result};
use crate::Auth;

const MINUTE_MS: i64 = 60_000;
/// Attempts at one account per minute, whatever the address they come from.
const PER_ACCOUNT_PER_MINUTE: i64 = 10;

impl<P: Platform> Auth<P> {
    /// Counts one attempt from the caller's IP (429 past the setting). Hot
    /// state being down lets the attempt through: the account lockout still holds.
    pub(crate) async fn throttle_ip(&self, parts: &Parts, what: &str) -> Result<()> {
        let ip = parts.extensions.get::<ClientIp>().map_or_else(|| "unknown".to_string(), |c| c.0.to_string());
        let limit = self.settings().attempts_per_ip_per_minute;
        self.hit(&format!("auth:{what}:ip:{ip}"), limit).await
    }

    /// Counts one attempt at an account, named by its email (hashed: keys
    /// in hot state are not a list of addresses).
    pub(crate) async fn throttle_account(&self, email: &str) -> Result<()> {
        self.hit(&format!("auth:acct:{}", &secret::hash(email)[..32]), PER_ACCOUNT_PER_MINUTE).await
    }

    async fn hit(&self, key: &str, limit: i64) -> Result<()> {
        let now = self.relay.ports.clock.now_ms();
        match self.relay.ports.hot.window_hit(key, MINUTE_MS, limit, 1, now).await {
            Ok(hit) if !hit.allowed => Err(throttled("too_many_attempts", (hit.reset_ms.max(0) as u64).div_ceil(1000))),
            Ok(_) => Ok(()),
            Err(e) => {
                tracing::warn!("sign-in throttle unavailable: {e}");
                Ok(())
            }
        }
    }
}
