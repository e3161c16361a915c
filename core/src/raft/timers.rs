//! The replica's deadlines, in the caller's monotonic milliseconds, and the
//! seeded draw of election timeouts (the replica's only randomness).

use crate::rng::SplitMix64;

/// One deadline of the replica.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Timer {
    /// A follower or candidate campaigns when it passes.
    Election,
    /// A leader heartbeats when it passes.
    Heartbeat,
    /// A leader checks it heard from a quorum when it passes.
    CheckQuorum,
    /// A leadership transfer is abandoned when it passes.
    Transfer,
}

const TIMER_COUNT: usize = 4;

#[derive(Debug, Clone)]
pub(crate) struct TimerTable {
    deadlines_ms: [u64; TIMER_COUNT],
    /// Draws election timeouts, from the seed the caller handed in.
    rng: SplitMix64,
}

impl TimerTable {
    /// Every deadline at 0 (the caller sets them before relying on them).
    pub(crate) fn new(seed: u64) -> Self {
        Self {
            deadlines_ms: [0; TIMER_COUNT],
            rng: SplitMix64::new(seed),
        }
    }

    pub(crate) fn get(&self, timer: Timer) -> u64 {
        self.deadlines_ms[timer as usize]
    }

    pub(crate) fn set(&mut self, timer: Timer, at_ms: u64) {
        self.deadlines_ms[timer as usize] = at_ms;
    }

    pub(crate) fn is_due(&self, timer: Timer, now_ms: u64) -> bool {
        now_ms >= self.get(timer)
    }

    /// Sets the election deadline a timeout drawn uniformly from
    /// `[min_ms, max_ms)` after `now_ms`, so replicas rarely time out together.
    pub(crate) fn reset_election(&mut self, now_ms: u64, min_ms: u64, max_ms: u64) {
        let jitter = self.rng.range_u64(min_ms, max_ms);
        self.set(Timer::Election, now_ms + jitter);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn election_timeouts_are_jittered_within_bounds_and_replay_from_the_seed() {
        let mut a = TimerTable::new(7);
        let mut b = TimerTable::new(7);
        for now in [0, 10, 500] {
            a.reset_election(now, 150, 300);
            b.reset_election(now, 150, 300);
            let at = a.get(Timer::Election);
            assert!((now + 150..now + 300).contains(&at));
            assert_eq!(at, b.get(Timer::Election));
            assert!(!a.is_due(Timer::Election, at - 1));
            assert!(a.is_due(Timer::Election, at));
        }
    }

    #[test]
    fn timers_are_independent() {
        let mut t = TimerTable::new(1);
        t.set(Timer::Heartbeat, 20);
        t.set(Timer::Transfer, 30);
        assert_eq!(t.get(Timer::Heartbeat), 20);
        assert_eq!(t.get(Timer::Transfer), 30);
        assert_eq!(t.get(Timer::CheckQuorum), 0);
    }
}
