//! Growing lockout after repeated failed sign-ins.

/// The longest lock, however many failures.
pub const MAX_LOCK_SECONDS: u64 = 3600;

/// Seconds to lock an account after its `failures`-th consecutive failure:
/// none below `threshold`, then `base` doubling per further failure, capped.
pub fn lock_seconds(failures: i64, threshold: i64, base: u64) -> Option<u64> {
    if failures < threshold {
        return None;
    }
    let doublings = (failures - threshold).min(20) as u32;
    Some(base.saturating_mul(1u64 << doublings).min(MAX_LOCK_SECONDS))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_then_caps() {
        assert_eq!(lock_seconds(4, 5, 30), None);
        assert_eq!(lock_seconds(5, 5, 30), Some(30));
        assert_eq!(lock_seconds(6, 5, 30), Some(60));
        assert_eq!(lock_seconds(8, 5, 30), Some(240));
        assert_eq!(lock_seconds(500, 5, 30), Some(3600));
    }
}
