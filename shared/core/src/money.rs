//! Bounds on money. Every amount the gateway accepts — a top-up, a code's
//! value, a user's or key's quota, a daily or monthly cap, a price rate — is
//! an integer number of units (1 unit = 1 micro-USD) within `MAX_UNITS`
//! (10^15 units = $1 billion). Balances stay within `±MAX_UNITS` when an
//! admin or a code moves them; a request's charge is clamped to `MAX_UNITS`,
//! so no sum the stores compute can leave `i64`.

/// The largest amount, price rate or balance accepted: 10^15 units = $1 billion.
pub const MAX_UNITS: i64 = 1_000_000_000_000_000;

/// The code (and the prefix of a store's conflict message) for an amount or
/// balance outside the bounds; the admin API answers it as a 400.
pub const OUT_OF_RANGE: &str = "amount_out_of_range";

/// Why an amount was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bound {
    /// Below zero where only 0 or more is meant.
    Negative,
    /// Beyond `±MAX_UNITS`.
    OutOfRange,
}

/// An amount that must be `0..=MAX_UNITS`.
pub fn check_units(v: i64) -> Result<i64, Bound> {
    if v < 0 {
        Err(Bound::Negative)
    } else if v > MAX_UNITS {
        Err(Bound::OutOfRange)
    } else {
        Ok(v)
    }
}

/// A signed change that must be `-MAX_UNITS..=MAX_UNITS`.
pub fn check_delta(v: i64) -> Result<i64, Bound> {
    if (-MAX_UNITS..=MAX_UNITS).contains(&v) {
        Ok(v)
    } else {
        Err(Bound::OutOfRange)
    }
}

/// `balance + delta` if the result stays within `±MAX_UNITS`.
pub fn checked_balance(balance: i64, delta: i64) -> Option<i64> {
    balance.checked_add(delta).filter(|b| (-MAX_UNITS..=MAX_UNITS).contains(b))
}

/// What a settlement may charge for one request: `0..=MAX_UNITS`.
pub fn clamp_charge(cost: i64) -> i64 {
    cost.clamp(0, MAX_UNITS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds() {
        assert_eq!(check_units(0), Ok(0));
        assert_eq!(check_units(MAX_UNITS), Ok(MAX_UNITS));
        assert_eq!(check_units(-1), Err(Bound::Negative));
        assert_eq!(check_units(MAX_UNITS + 1), Err(Bound::OutOfRange));
        assert_eq!(check_units(i64::MAX), Err(Bound::OutOfRange));
        assert_eq!(check_delta(-MAX_UNITS), Ok(-MAX_UNITS));
        assert_eq!(check_delta(i64::MIN), Err(Bound::OutOfRange));
        assert_eq!(checked_balance(MAX_UNITS, 1), None);
        assert_eq!(checked_balance(i64::MAX, i64::MAX), None);
        assert_eq!(checked_balance(5, -10), Some(-5));
        assert_eq!(clamp_charge(i64::MAX), MAX_UNITS);
        assert_eq!(clamp_charge(-3), 0);
    }
}
