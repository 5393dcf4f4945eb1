//! Retry policy: which upstream outcomes are worth another try, and how long to wait.

/// 429 and 5xx are worth retrying; any other 4xx is the caller's problem.
pub fn retryable_status(status: u16) -> bool {
    status == 429 || status >= 500
}

/// Statuses that say the key itself is bad or busy, so it should count toward resting.
pub fn key_fault(status: u16) -> bool {
    matches!(status, 401 | 403 | 429) || status >= 500
}

/// Exponential backoff with jitter: the ceiling doubles per attempt (from `base_ms`,
/// capped at `max_ms`) and the wait is uniform in [ceiling/2, ceiling].
pub fn backoff_ms(attempt: u32, base_ms: u64, max_ms: u64, random: u64) -> u64 {
    let ceiling = base_ms.saturating_mul(1u64 << attempt.min(20)).min(max_ms);
    let half = ceiling / 2;
    half + random % (ceiling - half + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies() {
        assert!(retryable_status(429) && retryable_status(500) && retryable_status(503));
        assert!(!retryable_status(400) && !retryable_status(401) && !retryable_status(404));
        assert!(key_fault(401) && !key_fault(400));
    }

    #[test]
    fn backoff_grows_and_caps() {
        for r in [0, 1, 12345, u64::MAX] {
            let b0 = backoff_ms(0, 100, 2000, r);
            assert!((50..=100).contains(&b0));
            let b3 = backoff_ms(3, 100, 2000, r);
            assert!((400..=800).contains(&b3));
            let b9 = backoff_ms(9, 100, 2000, r);
            assert!((1000..=2000).contains(&b9));
        }
    }
}
