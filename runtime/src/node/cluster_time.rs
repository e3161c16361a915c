//! The time a leader stamps on the entries it proposes (`Envelope.now_ms`):
//! the state machine's time carried on by this node's monotonic clock, never
//! its wall clock.
//!
//! State time drives every time-limited rule inside the state machine
//! (idempotency windows, acknowledgement marks, waiter deadlines, session
//! tombstones) and only moves forward (the highest stamp seen). Stamping
//! the wall clock let one leader's bad clock decide for everybody: a leader
//! hours ahead (a bad clock at boot, an NTP step) expired every idempotency
//! window at once, so a retry seconds later applied twice; a leader behind
//! froze state time. Carried on by a monotonic clock, state time advances by
//! the real time that passes while a leader leads (within its drift), pauses
//! between leaders (later expiry, never earlier), and ignores wall steps.
//!
//! The wall clock is read once in a cluster's life: a cluster whose state
//! time is still 0 starts from the first leader's wall clock, so the
//! `*_at_ms` fields the API shows read as dates.

/// One leadership's clock; a new leader starts a new one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct ClusterTime {
    /// State time when this leadership began (or the wall clock, for a
    /// cluster that had no time yet).
    base_state_ms: u64,
    /// This node's monotonic clock at that moment.
    base_monotonic_ms: u64,
}

impl ClusterTime {
    pub(super) fn start(state_ms: u64, monotonic_ms: u64, wall_ms: u64) -> ClusterTime {
        ClusterTime {
            base_state_ms: if state_ms == 0 { wall_ms } else { state_ms },
            base_monotonic_ms: monotonic_ms,
        }
    }

    /// The stamp for an entry proposed now: never below the state time
    /// already applied here (the state machine keeps the highest anyway; this
    /// keeps this node's own comparisons consistent with it).
    pub(super) fn now_ms(&self, monotonic_ms: u64, state_ms: u64) -> u64 {
        let elapsed = monotonic_ms.saturating_sub(self.base_monotonic_ms);
        self.base_state_ms.saturating_add(elapsed).max(state_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advances_with_the_monotonic_clock_from_state_time() {
        let t = ClusterTime::start(50_000, 1_000, 9_999_999);
        assert_eq!(t.now_ms(1_000, 50_000), 50_000);
        assert_eq!(t.now_ms(4_000, 50_000), 53_000);
    }

    #[test]
    fn a_fresh_cluster_starts_from_the_wall_clock_once() {
        let t = ClusterTime::start(0, 7, 1_796_000_000_000);
        assert_eq!(t.now_ms(1_007, 0), 1_796_000_001_000);
    }

    #[test]
    fn never_below_the_state_time_applied() {
        // A new leader that had not applied its predecessor's last stamps.
        let t = ClusterTime::start(10_000, 0, 0);
        assert_eq!(t.now_ms(500, 12_000), 12_000);
        assert_eq!(t.now_ms(3_000, 12_000), 13_000);
    }
}
