//! The storage edge: the `Storage` trait a node persists its Raft state
//! through, the record format and recovery rules shared by every backend, and
//! the storage actor that batches writes into one sync (group commit).
//!
//! Why a synchronous trait: fjall is a blocking API, and under madsim there
//! are no OS threads (`spawn_blocking` runs inline), so an async trait would
//! only wrap blocking calls. Instead one storage actor owns the `Storage`
//! value and is its only caller; in production it hands each batch to
//! `spawn_blocking` (moving the value in and back out), so fsyncs never stall
//! the async workers, and in the simulation the same code runs inline.

use std::fmt;

use deadbolt_core::codec::{self, DecodeError};
use deadbolt_core::raft::{
    Entry, EntryPayload, HardState, LogIndex, Membership, NodeId, SnapshotMeta, Term,
    SNAPSHOT_BYTES_MAX,
};
use serde::{Deserialize, Serialize};

mod actor;
#[cfg(not(madsim))]
mod fjall;
mod sim;

pub use actor::{
    spawn_storage_actor, Durability, StorageActorClosed, StorageHandle, StorageStats, WriteBatch,
    WriteRequest, STORAGE_MAILBOX_REQUESTS_MAX, STORAGE_SYNC_REQUESTS_MAX, SYNC_LATENCY_BUCKETS_US,
};
#[cfg(not(madsim))]
pub use fjall::FjallStorage;
pub use sim::{CrashFault, SimDisk, SimStorage, SyncLatency};

/// Longest cluster id accepted in a data dir or a handshake.
pub const CLUSTER_ID_BYTES_MAX: usize = 64;

/// Whom a data dir belongs to. Written once when the dir is created and
/// checked on every start, so a node never joins a cluster with another
/// cluster's (or another node's) log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    pub cluster_id: String,
    pub node_id: NodeId,
}

/// Everything a node needs from disk to restart its Raft replica.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recovered {
    pub hard_state: HardState,
    /// The latest durable snapshot and its state machine bytes.
    pub snapshot: Option<(SnapshotMeta, Vec<u8>)>,
    /// Contiguous entries after the snapshot (or from index 1).
    pub entries: Vec<Entry>,
    /// The membership in force: the last membership entry in `entries`, else
    /// the snapshot's. Derived, not stored, so it can never disagree with the log.
    pub membership: Membership,
    /// Index of a torn tail record that recovery dropped, if any (for logs and tests).
    pub truncated_torn_tail_at: Option<LogIndex>,
}

impl Recovered {
    /// (term, index) of the last entry, falling back to the snapshot's.
    pub fn last_log_id(&self) -> (Term, LogIndex) {
        match (self.entries.last(), &self.snapshot) {
            (Some(e), _) => (e.term, e.index),
            (None, Some((meta, _))) => (meta.last_term, meta.last_index),
            (None, None) => (0, 0),
        }
    }
}

/// Why a storage operation failed. Clone so that the storage actor can report
/// one failure to every waiter; IO errors keep their kind and message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StorageError {
    #[error("{op} failed in {location}: {kind:?}: {message}")]
    Io {
        op: &'static str,
        location: String,
        kind: std::io::ErrorKind,
        message: String,
    },
    #[error("disk full while {op} in {location}")]
    DiskFull { op: &'static str, location: String },
    #[error("corrupt committed log record at index {index} in {location}: {reason}")]
    CorruptLogRecord {
        location: String,
        index: LogIndex,
        reason: String,
    },
    #[error("corrupt {what} record in {location}: {reason}")]
    CorruptMetadata {
        location: String,
        what: &'static str,
        reason: String,
    },
    /// fjall's own journal check failed on open: a synced write is damaged
    /// and fjall cannot say which record, so the node refuses to start.
    #[error("journal in {location} is corrupt ({reason}); refusing to start rather than serve damaged data")]
    CorruptJournal { location: String, reason: String },
    #[error("log in {location} is inconsistent: {reason}")]
    Inconsistent { location: String, reason: String },
    #[error("data dir {location} belongs to cluster {found_cluster:?} node {found_node}, but this node is configured as cluster {want_cluster:?} node {want_node}")]
    IdentityMismatch {
        location: String,
        found_cluster: String,
        found_node: NodeId,
        want_cluster: String,
        want_node: NodeId,
    },
    #[error("snapshot of {len} bytes exceeds the {SNAPSHOT_BYTES_MAX}-byte limit")]
    SnapshotTooLarge { len: usize },
    #[error("invalid identity: {0}")]
    InvalidIdentity(String),
    #[error("storage refused writes after an earlier failure ({0}); restart the node to recover from disk")]
    Poisoned(String),
    #[error("simulated disk crashed under this storage handle")]
    Crashed,
}

/// The persistence operations Raft needs. Writes are buffered until `sync`
/// unless stated otherwise; only a successful `sync` makes them durable, and
/// after any error the caller must treat everything unsynced as lost.
pub trait Storage: Send + 'static {
    /// Reads back the durable state, dropping a torn tail record and failing
    /// on corruption that could mean serving wrong data.
    fn load(&mut self) -> Result<Recovered, StorageError>;
    /// Appends entries; their indexes must follow the current last index (or
    /// overwrite from a point, in which case `truncate_from` must come first).
    fn append(&mut self, entries: &[Entry]) -> Result<(), StorageError>;
    /// Removes every entry with index >= `index` (a conflict with the leader).
    fn truncate_from(&mut self, index: LogIndex) -> Result<(), StorageError>;
    fn save_hard_state(&mut self, hard_state: &HardState) -> Result<(), StorageError>;
    /// Makes everything written since the last sync durable (one fsync).
    fn sync(&mut self) -> Result<(), StorageError>;
    /// Durably and atomically replaces the snapshot (durable on return, with
    /// everything written before it), then compacts the log up to
    /// `meta.last_index` (see `compact`).
    fn save_snapshot(&mut self, meta: &SnapshotMeta, data: &[u8]) -> Result<(), StorageError>;
    /// Drops log entries with index <= `up_to` (they are covered by a
    /// snapshot), either at once or, if the backend says so through
    /// `compaction_pending`, in bounded steps taken by `compact_step`. Until
    /// then `load` skips them. Durable at the next sync; losing it in a crash
    /// is harmless (the next `load` compacts again).
    fn compact(&mut self, up_to: LogIndex) -> Result<(), StorageError>;
    /// Whether a compaction still has entries to drop (`compact_step` does it).
    fn compaction_pending(&self) -> bool {
        false
    }
    /// Drops the next bounded chunk of a pending compaction. Like `compact`,
    /// durable at the next sync. The storage actor calls it only while no
    /// write waits, so a large compaction never delays a sync by more than
    /// one chunk.
    fn compact_step(&mut self) -> Result<(), StorageError> {
        Ok(())
    }
    /// Simulation only: how long the next sync takes (the storage actor
    /// waits this long between writing a group and syncing it).
    #[cfg(madsim)]
    fn sim_sync_delay(&mut self) -> std::time::Duration {
        std::time::Duration::ZERO
    }
}

pub(crate) fn check_snapshot_len(data: &[u8]) -> Result<(), StorageError> {
    if data.len() > SNAPSHOT_BYTES_MAX {
        return Err(StorageError::SnapshotTooLarge { len: data.len() });
    }
    Ok(())
}

/// Encodes one log record: the entry with a trailing checksum.
pub(crate) fn encode_log_record(entry: &Entry) -> Vec<u8> {
    codec::encode_checked(entry)
}

/// Big-endian index keys sort in log order.
#[cfg(not(madsim))]
pub(crate) fn log_key(index: LogIndex) -> [u8; 8] {
    index.to_be_bytes()
}

/// Checks the stored identity against the configured one.
pub(crate) fn check_identity(
    location: &str,
    found: &Identity,
    want: &Identity,
) -> Result<(), StorageError> {
    if found != want {
        return Err(StorageError::IdentityMismatch {
            location: location.to_string(),
            found_cluster: found.cluster_id.clone(),
            found_node: found.node_id,
            want_cluster: want.cluster_id.clone(),
            want_node: want.node_id,
        });
    }
    Ok(())
}

pub(crate) fn validate_identity(identity: &Identity) -> Result<(), StorageError> {
    if identity.node_id == 0 {
        return Err(StorageError::InvalidIdentity(
            "node id 0 is reserved".into(),
        ));
    }
    if identity.cluster_id.is_empty() || identity.cluster_id.len() > CLUSTER_ID_BYTES_MAX {
        return Err(StorageError::InvalidIdentity(format!(
            "cluster id must be 1..={CLUSTER_ID_BYTES_MAX} bytes, got {}",
            identity.cluster_id.len()
        )));
    }
    Ok(())
}

/// Decodes a metadata record or names what is corrupt.
pub(crate) fn decode_meta<T: serde::de::DeserializeOwned>(
    location: &str,
    what: &'static str,
    bytes: &[u8],
) -> Result<T, StorageError> {
    codec::decode_checked(bytes).map_err(|e| StorageError::CorruptMetadata {
        location: location.to_string(),
        what,
        reason: e.to_string(),
    })
}

/// What recovery decided about the log records found on disk.
pub(crate) struct RecoveredLog {
    pub entries: Vec<Entry>,
    /// Index of the torn tail record to delete from disk.
    pub torn_tail_at: Option<LogIndex>,
}

/// The recovery rule shared by every backend. A record that fails to decode
/// is a *torn tail* only if it is the very last record and lies beyond the
/// commit index: that is what an interrupted, never-synced append looks like,
/// and nobody can have relied on it. Anything else (a bad record in the
/// middle, or at or below the commit index) is corruption of data that may
/// have been acknowledged, so the node stops with an error naming the place
/// and the index rather than serving or silently dropping it.
///
/// `records` is streamed in index order straight from the backend's scan
/// (a restart reads ~1M records; collecting them first cost a second copy of
/// every record, recovery_bench). Records at or below the snapshot's last
/// index are skipped undecoded: a compaction that had not finished left them.
pub(crate) fn recover_log<B: AsRef<[u8]>>(
    location: &str,
    records: impl IntoIterator<Item = Result<(LogIndex, B), StorageError>>,
    hard_state: &HardState,
    snapshot_last: (Term, LogIndex),
) -> Result<RecoveredLog, StorageError> {
    let mut records = records.into_iter().peekable();
    let mut entries: Vec<Entry> = Vec::with_capacity(records.size_hint().0);
    let mut torn_tail_at = None;
    while let Some(record) = records.next() {
        let (index, bytes) = record?;
        if index <= snapshot_last.1 {
            // Left behind by a compaction that was not yet synced: covered by the snapshot.
            continue;
        }
        let decoded: Result<Entry, DecodeError> = codec::decode_checked(bytes.as_ref());
        let entry = match decoded {
            Ok(entry) if entry.index == index => entry,
            Ok(entry) => {
                return Err(StorageError::CorruptLogRecord {
                    location: location.to_string(),
                    index,
                    reason: format!("record claims index {}", entry.index),
                })
            }
            Err(e) => {
                // A failed read of the next record is reported as itself
                // by the next call; here it only means "not the last".
                let is_last = records.peek().is_none();
                if is_last && index > hard_state.commit_index {
                    tracing::warn!(location, index, error = %e, "dropping torn tail log record");
                    torn_tail_at = Some(index);
                    break;
                }
                return Err(StorageError::CorruptLogRecord {
                    location: location.to_string(),
                    index,
                    reason: e.to_string(),
                });
            }
        };
        let expected = entries
            .last()
            .map_or(snapshot_last.1 + 1, |e: &Entry| e.index + 1);
        if entry.index != expected {
            return Err(StorageError::Inconsistent {
                location: location.to_string(),
                reason: format!("gap: expected index {expected}, found {}", entry.index),
            });
        }
        entries.push(entry);
    }
    let last_index = entries.last().map_or(snapshot_last.1, |e| e.index);
    if last_index < hard_state.commit_index {
        return Err(StorageError::Inconsistent {
            location: location.to_string(),
            reason: format!(
                "log ends at index {last_index} but commit index is {}: committed entries are missing",
                hard_state.commit_index
            ),
        });
    }
    Ok(RecoveredLog {
        entries,
        torn_tail_at,
    })
}

/// Restores "no entry's term exceeds the current term" after a crash. The
/// actor writes the hard state after the entries of a batch (so a durable
/// commit index never points past the durable log); a crash between the two
/// can leave entries of a term the hard state has not reached. Nothing was
/// acknowledged from that unsynced batch, and raising a term with no vote is
/// always allowed in Raft, so recovery raises it.
pub(crate) fn raise_term_to_log(mut hard_state: HardState, entries: &[Entry]) -> HardState {
    if let Some(last) = entries.last() {
        if last.term > hard_state.term {
            tracing::info!(
                from = hard_state.term,
                to = last.term,
                "raising recovered term to the last log entry's term"
            );
            hard_state.term = last.term;
            hard_state.voted_for = None;
        }
    }
    hard_state
}

/// The membership in force after the snapshot and the recovered entries.
pub(crate) fn current_membership(snapshot: Option<&SnapshotMeta>, entries: &[Entry]) -> Membership {
    entries
        .iter()
        .rev()
        .find_map(|e| match &e.payload {
            EntryPayload::Membership(m) => Some(m.clone()),
            _ => None,
        })
        .or_else(|| snapshot.map(|s| s.membership.clone()))
        .unwrap_or_default()
}

/// Maps an IO error to a typed storage error, keeping "disk full" distinct.
#[cfg(not(madsim))]
pub(crate) fn io_error(op: &'static str, location: &str, e: &std::io::Error) -> StorageError {
    if e.kind() == std::io::ErrorKind::StorageFull {
        return StorageError::DiskFull {
            op,
            location: location.to_string(),
        };
    }
    StorageError::Io {
        op,
        location: location.to_string(),
        kind: e.kind(),
        message: e.to_string(),
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cluster {:?} node {}", self.cluster_id, self.node_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(index: LogIndex) -> Result<(LogIndex, Vec<u8>), StorageError> {
        Ok((
            index,
            encode_log_record(&Entry {
                term: 1,
                index,
                payload: EntryPayload::Noop,
            }),
        ))
    }

    fn torn(index: LogIndex) -> Result<(LogIndex, Vec<u8>), StorageError> {
        let (index, mut bytes) = record(index)?;
        bytes.truncate(bytes.len() / 2);
        Ok((index, bytes))
    }

    fn read_failure() -> Result<(LogIndex, Vec<u8>), StorageError> {
        Err(StorageError::Io {
            op: "read log",
            location: "test".into(),
            kind: std::io::ErrorKind::Other,
            message: "injected".into(),
        })
    }

    fn hard_state(commit_index: LogIndex) -> HardState {
        HardState {
            term: 1,
            voted_for: None,
            commit_index,
        }
    }

    /// The streamed rule decides exactly as the collected one did: a bad
    /// record is a torn tail only when nothing follows it, and a read
    /// failure during the scan is reported as itself.
    #[test]
    fn streamed_records_keep_the_torn_tail_rule() {
        let log = recover_log("t", [record(1), record(2), torn(3)], &hard_state(2), (0, 0))
            .expect("torn tail beyond the commit index is dropped");
        assert_eq!(log.entries.len(), 2);
        assert_eq!(log.torn_tail_at, Some(3));

        let err = recover_log("t", [record(1), torn(2), record(3)], &hard_state(1), (0, 0))
            .map(|_| ())
            .unwrap_err();
        assert!(
            matches!(err, StorageError::CorruptLogRecord { index: 2, .. }),
            "{err}"
        );

        // A failed read after a bad record: the record is not known to be
        // the last, so it is corruption, not a torn tail.
        let err = recover_log(
            "t",
            [record(1), torn(2), read_failure()],
            &hard_state(1),
            (0, 0),
        )
        .map(|_| ())
        .unwrap_err();
        assert!(
            matches!(err, StorageError::CorruptLogRecord { index: 2, .. }),
            "{err}"
        );

        let err = recover_log("t", [record(1), read_failure()], &hard_state(1), (0, 0))
            .map(|_| ())
            .unwrap_err();
        assert!(matches!(err, StorageError::Io { .. }), "{err}");

        // Records the snapshot covers are skipped without being decoded.
        let log = recover_log("t", [torn(1), record(2), record(3)], &hard_state(3), (1, 1))
            .expect("covered records are not read");
        assert_eq!(log.entries.first().map(|e| e.index), Some(2));
    }
}
