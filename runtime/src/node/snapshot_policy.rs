//! When the node compacts its log into a snapshot of its state.
//!
//! A snapshot serializes the whole state on the node's actor, and the state
//! can be large while entries are small: 200,000 kept idempotency outcomes
//! encode to 6.4 MiB in ~0.2 s here (`lock_bench`), so at the default bound
//! of a million, re-encoding the state every 10,000 keyed requests would
//! take most of the actor's time. So besides a minimum entry count, a
//! snapshot waits until the log applied since the last one is at least as
//! large as that snapshot: snapshotting costs at most about what appending
//! did, whatever the state's size, and the log kept beside a snapshot
//! (memory, replay at restart) is never much larger than the snapshot.

use deadbolt_core::raft::LogIndex;

/// What an applied entry costs the log beyond its payload (index, term,
/// framing), so that a log of tiny entries still counts as growing.
const ENTRY_OVERHEAD_BYTES: u64 = 32;

#[derive(Debug)]
pub(super) struct SnapshotPolicy {
    /// Fewest entries between two snapshots.
    threshold_entries: u64,
    /// Index of the last snapshot taken or installed.
    snapshot_index: LogIndex,
    /// Size of the last snapshot this node took (0 until it takes one).
    snapshot_bytes: u64,
    /// Log bytes applied since the last snapshot.
    log_bytes_since: u64,
}

impl SnapshotPolicy {
    pub(super) fn new(threshold_entries: u64, snapshot_index: LogIndex) -> Self {
        SnapshotPolicy {
            threshold_entries: threshold_entries.max(1),
            snapshot_index,
            snapshot_bytes: 0,
            log_bytes_since: 0,
        }
    }

    /// An entry with a payload of `payload_bytes` was applied.
    pub(super) fn applied(&mut self, payload_bytes: usize) {
        let bytes = u64::try_from(payload_bytes).unwrap_or(u64::MAX);
        self.log_bytes_since = self
            .log_bytes_since
            .saturating_add(bytes.saturating_add(ENTRY_OVERHEAD_BYTES));
    }

    /// Entries applied since the last snapshot, given the applied index.
    fn entries_since(&self, applied_index: LogIndex) -> u64 {
        applied_index.saturating_sub(self.snapshot_index)
    }

    /// Whether enough has been applied since the last snapshot for
    /// another: the entry threshold, and as many log bytes as the last
    /// snapshot had.
    pub(super) fn due(&self, applied_index: LogIndex) -> bool {
        self.grown_by(applied_index, 1)
    }

    /// Whether twice that much has been applied: a leader then compacts
    /// even while a follower still lacks some of the entries.
    pub(super) fn overdue(&self, applied_index: LogIndex) -> bool {
        self.grown_by(applied_index, 2)
    }

    fn grown_by(&self, applied_index: LogIndex, factor: u64) -> bool {
        self.entries_since(applied_index) >= self.threshold_entries.saturating_mul(factor)
            && self.log_bytes_since >= self.snapshot_bytes.saturating_mul(factor)
    }

    /// This node took a snapshot of `bytes` at `index`.
    pub(super) fn taken(&mut self, index: LogIndex, bytes: usize) {
        self.snapshot_index = index;
        self.snapshot_bytes = u64::try_from(bytes).unwrap_or(u64::MAX);
        self.log_bytes_since = 0;
    }

    /// A snapshot at `index` could not be taken (the log was compacted
    /// there already): count from there.
    pub(super) fn skipped(&mut self, index: LogIndex) {
        self.snapshot_index = self.snapshot_index.max(index);
        self.log_bytes_since = 0;
    }

    /// The leader's snapshot at `index` replaced the state.
    pub(super) fn installed(&mut self, index: LogIndex) {
        self.snapshot_index = index;
        self.log_bytes_since = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_snapshot_comes_at_the_entry_threshold() {
        let mut policy = SnapshotPolicy::new(10, 0);
        for _ in 0..9 {
            policy.applied(5);
        }
        assert!(!policy.due(9));
        policy.applied(5);
        assert!(policy.due(10));
        assert!(!policy.overdue(10));
        assert!(policy.overdue(20));
    }

    #[test]
    fn a_large_snapshot_waits_for_as_many_log_bytes() {
        let mut policy = SnapshotPolicy::new(10, 0);
        policy.taken(10, 10_000);
        let mut index = 10;
        while policy.log_bytes_since + 36 + ENTRY_OVERHEAD_BYTES < 10_000 {
            policy.applied(36);
            index += 1;
            assert!(!policy.due(index), "at {index}");
        }
        policy.applied(36);
        index += 1;
        assert!(policy.due(index));
        assert!(index - 10 > 10, "later than the entry threshold alone");
        assert!(!policy.overdue(index), "overdue at twice the bytes");
    }

    #[test]
    fn a_small_snapshot_keeps_the_entry_threshold() {
        let mut policy = SnapshotPolicy::new(10, 0);
        policy.taken(10, 1);
        for index in 11..20 {
            policy.applied(1_000);
            assert!(!policy.due(index));
        }
        policy.applied(1_000);
        assert!(policy.due(20));
    }

    #[test]
    fn an_installed_or_skipped_snapshot_restarts_the_count() {
        let mut policy = SnapshotPolicy::new(10, 0);
        policy.applied(100);
        policy.installed(50);
        assert_eq!(policy.entries_since(55), 5);
        assert!(!policy.due(59));
        assert!(policy.due(60));
        policy.skipped(70);
        assert_eq!(policy.entries_since(75), 5);
    }
}
