//! Channel and key selection. Callers filter out unhealthy or already-failed
//! candidates and pass a random number in; the choice itself is pure.

use crate::model::KeySelection;

#[derive(Clone, Copy, Debug)]
pub struct Candidate {
    pub priority: i64,
    pub weight: u32,
}

/// Picks among the highest-priority candidates, weighted. Returns an index into
/// `cands`. Zero weights in a tier mean "equal shares".
pub fn pick_channel(cands: &[Candidate], random: u64) -> Option<usize> {
    let top = cands.iter().map(|c| c.priority).max()?;
    let tier = || cands.iter().enumerate().filter(move |(_, c)| c.priority == top);
    let total: u64 = tier().map(|(_, c)| u64::from(c.weight)).sum();
    if total == 0 {
        let n = tier().count() as u64;
        return tier().nth((random % n) as usize).map(|(i, _)| i);
    }
    let mut point = random % total;
    for (i, c) in tier() {
        let w = u64::from(c.weight);
        if point < w {
            return Some(i);
        }
        point -= w;
    }
    None
}

/// Picks a key index among `n` keys for which `usable(i)` holds.
/// Round-robin starts at `counter % n` and walks forward past resting keys.
pub fn pick_key(
    n: usize,
    mode: KeySelection,
    counter: u64,
    random: u64,
    usable: impl Fn(usize) -> bool,
) -> Option<usize> {
    if n == 0 {
        return None;
    }
    let start = match mode {
        KeySelection::RoundRobin => (counter % n as u64) as usize,
        KeySelection::Random => (random % n as u64) as usize,
    };
    (0..n).map(|step| (start + step) % n).find(|&i| usable(i))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn highest_priority_tier_by_weight() {
        let c = [
            Candidate { priority: 0, weight: 100 },
            Candidate { priority: 10, weight: 1 },
            Candidate { priority: 10, weight: 3 },
        ];
        let mut counts = [0; 3];
        for r in 0..4000u64 {
            counts[pick_channel(&c, r).unwrap()] += 1;
        }
        assert_eq!(counts, [0, 1000, 3000]);
        assert_eq!(pick_channel(&c[..1], 7), Some(0));
        assert_eq!(pick_channel(&[], 7), None);
        let zero = [Candidate { priority: 1, weight: 0 }, Candidate { priority: 1, weight: 0 }];
        assert_eq!(pick_channel(&zero, 3), Some(1));
    }

    #[test]
    fn keys_skip_resting() {
        assert_eq!(pick_key(3, KeySelection::RoundRobin, 4, 0, |_| true), Some(1));
        assert_eq!(pick_key(3, KeySelection::RoundRobin, 4, 0, |i| i != 1), Some(2));
        assert_eq!(pick_key(3, KeySelection::Random, 0, 5, |i| i == 0), Some(0));
        assert_eq!(pick_key(3, KeySelection::Random, 0, 5, |_| false), None);
        assert_eq!(pick_key(0, KeySelection::Random, 0, 5, |_| true), None);
    }
}
