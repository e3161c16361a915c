//! Replica configuration, its validation, and the named limits that bound
//! every message, batch and queue the Raft core produces or holds.

use super::types::NodeId;

/// Most AppendEntries a leader keeps unacknowledged per follower in the
/// replicate state (the pipelining window).
pub const APPEND_INFLIGHT_MAX: usize = 16;
/// Most encoded entry payload bytes in one AppendEntries (a single larger
/// entry is still sent alone, so the log always makes progress).
pub const APPEND_BYTES_MAX: usize = 1024 * 1024;
/// Most entries in one AppendEntries.
pub const APPEND_ENTRIES_MAX: usize = 256;
/// Bytes of snapshot data per InstallSnapshot chunk.
pub const SNAPSHOT_CHUNK_BYTES: usize = 512 * 1024;
/// Largest snapshot a follower will assemble in memory, and the largest the
/// runtime stores (fjall keeps a snapshot in one value, limited to 4 GiB; a
/// lock table far beyond this means something else is wrong).
pub const SNAPSHOT_BYTES_MAX: usize = 1024 * 1024 * 1024;
/// Largest single proposal payload.
pub const PROPOSAL_BYTES_MAX: usize = APPEND_BYTES_MAX;
/// Most proposals accepted in one `propose_batch` call.
pub const PROPOSAL_BATCH_MAX: usize = APPEND_ENTRIES_MAX;
/// Most entries a leader holds that are appended but not yet committed;
/// beyond it proposals are refused (back-pressure instead of unbounded memory).
pub const UNCOMMITTED_ENTRIES_MAX: usize = 4096;
/// Most ReadIndex requests waiting on a leader (local plus forwarded).
pub const PENDING_READS_MAX: usize = 4096;
/// Most messages held back waiting for durability before they are dropped
/// (Raft tolerates message loss; memory must stay bounded).
pub const HELD_MESSAGES_MAX: usize = 4096;
/// Most committed entries handed out in one `Ready`; the rest follow in the
/// next one (bounded apply batches).
pub const APPLY_BATCH_ENTRIES_MAX: usize = 1024;

/// How one replica behaves. Times are milliseconds of the caller's monotonic
/// clock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// This replica's id; never 0.
    pub id: NodeId,
    /// Election timeouts are drawn uniformly from `[min, max)` each time the
    /// timer is reset.
    pub election_timeout_min_ms: u64,
    pub election_timeout_max_ms: u64,
    /// How often a leader heartbeats; must be well below the election timeout.
    pub heartbeat_interval_ms: u64,
    /// Run a pre-vote round before a real election so a node that cannot win
    /// never bumps the term (a rejoining partitioned node cannot disrupt).
    pub pre_vote: bool,
    /// A leader that has not heard from a majority within an election timeout
    /// steps down; followers that heard from a leader within the minimum
    /// election timeout refuse (pre-)votes (leader stickiness).
    ///
    /// Turn off at most one of `pre_vote` and `check_quorum`: with neither, a
    /// removed node that never learned of its removal keeps bumping the term
    /// and can stop the cluster from making progress (safety is unaffected).
    pub check_quorum: bool,
    /// Pipelining window; at most [`APPEND_INFLIGHT_MAX`].
    pub max_inflight_appends: usize,
    /// Entries per AppendEntries; at most [`APPEND_ENTRIES_MAX`].
    pub max_append_entries: usize,
    /// Payload bytes per AppendEntries; at most [`APPEND_BYTES_MAX`].
    pub max_append_bytes: usize,
    /// Snapshot chunk size; at most [`SNAPSHOT_CHUNK_BYTES`].
    pub snapshot_chunk_bytes: usize,
}

/// A configuration that cannot work, named by field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("id must not be 0")]
    ZeroId,
    #[error("election_timeout_min_ms ({min}) must be > 0 and < election_timeout_max_ms ({max})")]
    ElectionTimeoutRange { min: u64, max: u64 },
    #[error("heartbeat_interval_ms ({heartbeat}) must be > 0 and at most half of election_timeout_min_ms ({min})")]
    HeartbeatTooSlow { heartbeat: u64, min: u64 },
    #[error("{field} ({value}) must be between 1 and {max}")]
    LimitOutOfRange {
        field: &'static str,
        value: usize,
        max: usize,
    },
}

impl Config {
    /// Sensible defaults for a LAN cluster: 150-300 ms elections, 50 ms
    /// heartbeats, pre-vote and check-quorum on, limits at their maxima.
    pub fn new(id: NodeId) -> Self {
        Self {
            id,
            election_timeout_min_ms: 150,
            election_timeout_max_ms: 300,
            heartbeat_interval_ms: 50,
            pre_vote: true,
            check_quorum: true,
            max_inflight_appends: APPEND_INFLIGHT_MAX,
            max_append_entries: APPEND_ENTRIES_MAX,
            max_append_bytes: APPEND_BYTES_MAX,
            snapshot_chunk_bytes: SNAPSHOT_CHUNK_BYTES,
        }
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.id == 0 {
            return Err(ConfigError::ZeroId);
        }
        if self.election_timeout_min_ms == 0
            || self.election_timeout_min_ms >= self.election_timeout_max_ms
        {
            return Err(ConfigError::ElectionTimeoutRange {
                min: self.election_timeout_min_ms,
                max: self.election_timeout_max_ms,
            });
        }
        if self.heartbeat_interval_ms == 0
            || self.heartbeat_interval_ms * 2 > self.election_timeout_min_ms
        {
            return Err(ConfigError::HeartbeatTooSlow {
                heartbeat: self.heartbeat_interval_ms,
                min: self.election_timeout_min_ms,
            });
        }
        let limits = [
            (
                "max_inflight_appends",
                self.max_inflight_appends,
                APPEND_INFLIGHT_MAX,
            ),
            (
                "max_append_entries",
                self.max_append_entries,
                APPEND_ENTRIES_MAX,
            ),
            ("max_append_bytes", self.max_append_bytes, APPEND_BYTES_MAX),
            (
                "snapshot_chunk_bytes",
                self.snapshot_chunk_bytes,
                SNAPSHOT_CHUNK_BYTES,
            ),
        ];
        for (field, value, max) in limits {
            if value == 0 || value > max {
                return Err(ConfigError::LimitOutOfRange { field, value, max });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate_and_bad_values_are_named() {
        assert_eq!(Config::new(1).validate(), Ok(()));
        assert_eq!(Config::new(0).validate(), Err(ConfigError::ZeroId));
        let mut c = Config::new(1);
        c.election_timeout_max_ms = 150;
        assert!(matches!(
            c.validate(),
            Err(ConfigError::ElectionTimeoutRange { .. })
        ));
        let mut c = Config::new(1);
        c.heartbeat_interval_ms = 100;
        assert!(matches!(
            c.validate(),
            Err(ConfigError::HeartbeatTooSlow { .. })
        ));
        let mut c = Config::new(1);
        c.max_inflight_appends = APPEND_INFLIGHT_MAX + 1;
        assert!(matches!(
            c.validate(),
            Err(ConfigError::LimitOutOfRange {
                field: "max_inflight_appends",
                ..
            })
        ));
    }
}
