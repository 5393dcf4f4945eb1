//! Cost of a request in quota units, integers only.

use crate::model::Price;

/// `(prompt × input + completion × output) / 1M + per_request`, times the group
/// ratio (basis points), rounded up so a non-zero usage never costs zero.
pub fn cost(price: &Price, ratio_bp: i64, prompt_tokens: i64, completion_tokens: i64) -> i64 {
    let tokens = i128::from(prompt_tokens) * i128::from(price.input_per_m)
        + i128::from(completion_tokens) * i128::from(price.output_per_m);
    let base = tokens + i128::from(price.per_request) * 1_000_000;
    let scaled = base * i128::from(ratio_bp);
    let denom: i128 = 1_000_000 * 10_000;
    let units = (scaled + denom - 1).div_euclid(denom);
    i64::try_from(units).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_integer_cost() {
        let p = Price {
            model: "m".into(),
            input_per_m: 2_500_000,
            output_per_m: 10_000_000,
            per_request: 0,
        };
        // 1000 prompt tokens at $2.50/M = 2500 units; 500 completion at $10/M = 5000 units.
        assert_eq!(cost(&p, 10_000, 1000, 500), 7500);
        assert_eq!(cost(&p, 8_000, 1000, 500), 6000);
        assert_eq!(cost(&p, 10_000, 1, 0), 3); // 2.5 rounds up
        assert_eq!(cost(&p, 10_000, 0, 0), 0);
        let fixed = Price {
            per_request: 40,
            ..p
        };
        assert_eq!(cost(&fixed, 10_000, 0, 0), 40);
    }
}
