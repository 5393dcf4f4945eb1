//! Cost of a request in quota units, integers only, and the estimate that is
//! reserved before the upstream call.

use crate::model::Price;

/// What a request used.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    pub prompt_tokens: i64,
    /// Of `prompt_tokens`, how many were served from the upstream's cache.
    pub cached_tokens: i64,
    pub completion_tokens: i64,
    pub images: i64,
    pub audio_seconds: i64,
}

/// `Σ tokens × rate / 1M + per-request + per-image + per-audio-second`, times
/// the group ratio (basis points), rounded up so non-zero usage never costs zero.
pub fn cost(price: &Price, ratio_bp: i64, u: &Usage) -> i64 {
    if price.free {
        return 0;
    }
    let cached = u.cached_tokens.clamp(0, u.prompt_tokens.max(0));
    let cached_rate = price.cached_input_per_m.unwrap_or(price.input_per_m);
    let per_million = i128::from(u.prompt_tokens - cached) * i128::from(price.input_per_m)
        + i128::from(cached) * i128::from(cached_rate)
        + i128::from(u.completion_tokens) * i128::from(price.output_per_m);
    let fixed = i128::from(price.per_request)
        + i128::from(u.images) * i128::from(price.per_image)
        + i128::from(u.audio_seconds) * i128::from(price.per_audio_second);
    let base = per_million + fixed * 1_000_000;
    let denom: i128 = 1_000_000 * 10_000;
    let units = (base * i128::from(ratio_bp) + denom - 1).div_euclid(denom);
    i64::try_from(units.max(0)).unwrap_or(i64::MAX)
}

/// What to reserve: the prompt as counted, and the completion at its ceiling
/// (the request's `max_tokens`, or the configured default).
pub fn estimate(price: &Price, ratio_bp: i64, prompt_tokens: i64, max_completion_tokens: i64) -> i64 {
    cost(price, ratio_bp, &Usage { prompt_tokens, completion_tokens: max_completion_tokens, ..Usage::default() })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn price() -> Price {
        Price { model: "m".into(), input_per_m: 2_500_000, output_per_m: 10_000_000, ..Price::default() }
    }

    fn tokens(prompt: i64, completion: i64) -> Usage {
        Usage { prompt_tokens: prompt, completion_tokens: completion, ..Usage::default() }
    }

    #[test]
    fn exact_integer_cost() {
        let p = price();
        // 1000 prompt tokens at $2.50/M = 2500 units; 500 completion at $10/M = 5000 units.
        assert_eq!(cost(&p, 10_000, &tokens(1000, 500)), 7500);
        assert_eq!(cost(&p, 8_000, &tokens(1000, 500)), 6000);
        assert_eq!(cost(&p, 10_000, &tokens(1, 0)), 3); // 2.5 rounds up
        assert_eq!(cost(&p, 10_000, &tokens(0, 0)), 0);
        let fixed = Price { per_request: 40, per_image: 1000, ..p.clone() };
        assert_eq!(cost(&fixed, 10_000, &Usage { images: 2, ..Usage::default() }), 2040);
        assert_eq!(cost(&Price { free: true, ..p.clone() }, 10_000, &tokens(1000, 500)), 0);
    }

    #[test]
    fn cached_tokens_use_their_own_rate() {
        let p = Price { cached_input_per_m: Some(1_250_000), ..price() };
        let u = Usage { prompt_tokens: 1000, cached_tokens: 400, completion_tokens: 0, ..Usage::default() };
        // 600 × 2.5 + 400 × 1.25 = 1500 + 500.
        assert_eq!(cost(&p, 10_000, &u), 2000);
        // Without a cached rate they cost as input.
        assert_eq!(cost(&price(), 10_000, &u), 2500);
        assert_eq!(estimate(&p, 10_000, 1000, 100), 2500 + 1000);
    }
}
