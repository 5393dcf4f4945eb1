//! A histogram as EMF carries it: distinct values with their counts, at most
//! [`MAX_VALUES`] of them. Values are rounded to [`SIGNIFICANT_DIGITS`] as they
//! are recorded (so near-equal times share a value), and once there are more
//! than [`MAX_VALUES`] distinct ones, the two closest neighbours (relative to
//! their size) merge into their count-weighted mean: counts and the sum stay
//! exact, minimum, maximum and percentiles move by at most the merged gap.

/// EMF's limit on the values of one metric.
pub const MAX_VALUES: usize = 100;

/// Recorded values keep this many significant digits (0.05% at most off).
pub const SIGNIFICANT_DIGITS: i32 = 4;

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Hist {
    /// Distinct finite values, ascending, each with its count (≥ 1).
    points: Vec<(f64, u64)>,
}

impl Hist {
    pub fn is_empty(&self) -> bool {
        self.points.is_empty()
    }

    /// The distinct values and their counts, ascending.
    pub fn points(&self) -> &[(f64, u64)] {
        &self.points
    }

    /// Records `value` `count` times. NaN is dropped (JSON has no NaN);
    /// infinities are clamped to the largest finite values.
    pub fn record(&mut self, value: f64, count: u64) {
        if count == 0 || value.is_nan() {
            return;
        }
        let value = round_significant(value.clamp(f64::MIN, f64::MAX), SIGNIFICANT_DIGITS);
        self.add(value, count);
    }

    /// Adds another histogram's points (already rounded) to this one.
    pub fn merge(&mut self, other: Hist) {
        for (value, count) in other.points {
            self.add(value, count);
        }
    }

    fn add(&mut self, value: f64, count: u64) {
        // -0.0 and 0.0 are one value.
        let value = if value == 0.0 { 0.0 } else { value };
        match self.points.binary_search_by(|(v, _)| v.total_cmp(&value)) {
            Ok(i) => self.points[i].1 = self.points[i].1.saturating_add(count),
            Err(i) => {
                self.points.insert(i, (value, count));
                while self.points.len() > MAX_VALUES {
                    self.merge_closest();
                }
            }
        }
    }

    /// Merges the adjacent pair with the smallest relative gap into its
    /// count-weighted mean (which lies between the two, so order holds).
    fn merge_closest(&mut self) {
        let gap = |i: usize| {
            let (a, b) = (self.points[i].0, self.points[i + 1].0);
            (b - a) / a.abs().max(b.abs()).max(f64::MIN_POSITIVE)
        };
        let Some(i) = (0..self.points.len().saturating_sub(1)).min_by(|&x, &y| gap(x).total_cmp(&gap(y))) else {
            return;
        };
        let ((a, ca), (b, cb)) = (self.points[i], self.points[i + 1]);
        let count = ca.saturating_add(cb);
        let weight = cb as f64 / count as f64;
        self.points[i] = ((a + (b - a) * weight).clamp(a, b), count);
        self.points.remove(i + 1);
    }
}

/// `v` rounded to `digits` significant decimal digits (`v` itself where that
/// is not representable, at the ends of the f64 range).
pub fn round_significant(v: f64, digits: i32) -> f64 {
    if v == 0.0 || !v.is_finite() {
        return v;
    }
    let exponent = v.abs().log10().floor() as i32 - (digits - 1);
    // Dividing or multiplying by an exact power of ten gives the double nearest
    // the decimal, which JSON then prints as the short decimal.
    let rounded = if exponent < 0 {
        let p = 10f64.powi(-exponent);
        (v * p).round() / p
    } else {
        let p = 10f64.powi(exponent);
        (v / p).round() * p
    };
    if rounded.is_finite() {
        rounded
    } else {
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_to_four_significant_digits() {
        assert_eq!(round_significant(0.123456, 4), 0.1235);
        assert_eq!(round_significant(1234.56, 4), 1235.0);
        assert_eq!(round_significant(123456.0, 4), 123500.0);
        assert_eq!(round_significant(-0.0004567, 4), -0.0004567);
        assert_eq!(round_significant(0.25, 4), 0.25);
        assert_eq!(round_significant(5e-324, 4), 5e-324, "too small to scale: kept");
        assert_eq!(round_significant(f64::MAX, 4), f64::MAX, "too large to round: kept");
        assert_eq!(serde_json::json!(round_significant(0.0123456, 4)).to_string(), "0.01235");
    }

    #[test]
    fn equal_values_share_a_point_and_odd_ones_are_tamed() {
        let mut h = Hist::default();
        h.record(0.5, 1);
        h.record(0.50001, 2);
        h.record(-0.0, 1);
        h.record(0.0, 1);
        h.record(f64::NAN, 1);
        h.record(f64::INFINITY, 1);
        h.record(1.0, 0);
        assert_eq!(h.points(), &[(0.0, 2), (0.5, 3), (f64::MAX, 1)]);
    }

    #[test]
    fn many_distinct_values_compact_to_at_most_100_keeping_counts_and_sum() {
        let mut h = Hist::default();
        let mut sum = 0.0;
        // 5,000 distinct times from 1 ms to ~5 minutes, spread over 5 decades.
        for i in 0..5_000u32 {
            let v = round_significant(0.001 * 1.0025f64.powi(i as i32), SIGNIFICANT_DIGITS);
            sum += v * 2.0;
            h.record(v, 2);
        }
        let points = h.points();
        assert!(points.len() <= MAX_VALUES, "{}", points.len());
        assert!(points.len() >= MAX_VALUES - 1, "compaction keeps as many values as allowed");
        assert!(points.windows(2).all(|w| w[0].0 < w[1].0), "ascending and distinct");
        assert_eq!(points.iter().map(|p| p.1).sum::<u64>(), 10_000, "no count lost");
        let kept: f64 = points.iter().map(|(v, c)| v * *c as f64).sum();
        assert!((kept - sum).abs() / sum < 1e-9, "sum kept: {kept} vs {sum}");
        assert!(points[0].0 >= 0.001 && points[0].0 < 0.0015, "the minimum moves little: {}", points[0].0);
        let max = 0.001 * 1.0025f64.powi(4_999);
        assert!(points[points.len() - 1].0 <= max && points[points.len() - 1].0 > max * 0.9);
        // Spread over the range rather than piled at one end: every decade keeps some values.
        for decade in [0.001, 0.01, 0.1, 1.0, 10.0, 100.0] {
            assert!(points.iter().any(|(v, _)| *v >= decade && *v < decade * 10.0) || decade > max, "{decade}");
        }
    }

    #[test]
    fn merging_two_histograms_adds_counts() {
        let (mut a, mut b) = (Hist::default(), Hist::default());
        a.record(1.0, 1);
        b.record(1.0, 2);
        b.record(2.0, 1);
        a.merge(b);
        assert_eq!(a.points(), &[(1.0, 3), (2.0, 1)]);
    }
}
