//! The one seeded random number generator of deadbolt (SplitMix64): Raft's
//! election jitter, the runtime's backoff and fault choices, the client's ids
//! and retry jitter all draw from it, so every random decision replays from a
//! seed. Pure: the caller hands in the seed.

/// SplitMix64: tiny, fast, statistically fine for jitter and fault injection,
/// and trivially reproducible. Not for cryptography. `thread_rng` is never used
/// in deadbolt: a simulation run must be a pure function of its seed.
#[derive(Debug, Clone)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A value in `lo..hi` (`lo` when the range is empty). The modulo bias is
    /// negligible for the small ranges used here.
    pub fn range_u64(&mut self, lo: u64, hi: u64) -> u64 {
        if hi <= lo {
            return lo;
        }
        lo + self.next_u64() % (hi - lo)
    }

    /// True with probability `numerator / denominator`.
    pub fn chance(&mut self, numerator: u64, denominator: u64) -> bool {
        denominator != 0 && self.range_u64(0, denominator) < numerator
    }

    /// `base_ms` shifted by a uniform jitter of up to `±jitter_pct` percent.
    pub fn jitter_ms(&mut self, base_ms: u64, jitter_pct: u64) -> u64 {
        let spread = base_ms.saturating_mul(jitter_pct.min(100)) / 100;
        let offset = self.range_u64(0, spread.saturating_mul(2).saturating_add(1));
        base_ms.saturating_sub(spread).saturating_add(offset)
    }

    /// A float in `[0, 1)`.
    pub fn next_unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// An independent generator derived from this one (e.g. one per peer
    /// actor), so adding a consumer does not shift everyone else's sequence
    /// more than one draw.
    pub fn fork(&mut self) -> Self {
        Self::new(self.next_u64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_sequence() {
        let mut a = SplitMix64::new(42);
        let mut b = SplitMix64::new(42);
        for _ in 0..100 {
            assert_eq!(a.next_u64(), b.next_u64());
        }
    }

    #[test]
    fn jitter_stays_in_bounds() {
        let mut rng = SplitMix64::new(7);
        for _ in 0..1000 {
            let v = rng.jitter_ms(1000, 10);
            assert!((900..=1100).contains(&v), "{v}");
        }
        assert_eq!(rng.range_u64(5, 5), 5);
    }
}
