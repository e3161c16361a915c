//! Backups (issue 14): the file `GET /v1/cluster/snapshot` serves and
//! `deadbolt snapshot save` writes, and how `deadbolt restore` turns one
//! into the storage of a new cluster's founder.
//!
//! A backup is the lock state machine's snapshot at a committed index (taken
//! after a ReadIndex round, so it holds every write acknowledged before the
//! request began), framed as: a magic line naming the format, then one
//! checksummed postcard record (`codec::encode_checked`). Decoding checks
//! the magic, the checksum and then rebuilds the state machine with all its
//! invariant checks, so a damaged or foreign file is refused before anything
//! is written anywhere.
//!
//! A restored cluster starts from the backup's state at the backup's index:
//! its first new entry is `index + 1`, so every fencing token it hands out
//! is larger than every token in the backup (tokens are log indexes). Its
//! terms start again at [`RESTORED_TERM`]: a restored cluster is a new
//! founding with its own history, and nothing compares its terms with the
//! old cluster's (the cluster id differs, so no node of the old cluster can
//! talk Raft with it).

use deadbolt_core::codec::{self, DecodeError};
use deadbolt_core::lock::LockStateMachine;
use deadbolt_core::raft::{HardState, LogIndex, Membership, NodeId, SnapshotMeta, Term};
use serde::{Deserialize, Serialize};

use crate::storage::{Storage, StorageError};

/// First line of every backup file: what it is and its format version.
pub const BACKUP_MAGIC: &[u8] = b"deadbolt backup v1\n";
/// The term of a restored cluster's snapshot; its first leader's term is
/// higher.
pub const RESTORED_TERM: Term = 1;

/// Largest `bump_index` a restore accepts: far above any index a cluster
/// reaches, far below overflow, and exact in every JSON reader.
pub const BUMP_INDEX_MAX: u64 = 1 << 50;

/// A backup as it travels: where it came from and the state machine bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Backup {
    /// The cluster the backup was taken from (for the operator; a restore
    /// founds a new one).
    pub cluster_id: String,
    /// The node that served the backup.
    pub node_id: NodeId,
    /// The committed index the state is at (`LockStateMachine::last_applied`).
    pub index: LogIndex,
    /// `LockStateMachine::snapshot` bytes (versioned and checksummed too).
    pub state: Vec<u8>,
}

/// Why bytes are not a usable backup. Each names what is wrong.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("not a deadbolt backup (it does not start with {expected:?})")]
    NotABackup { expected: &'static str },
    #[error("the backup is damaged: {0}")]
    Damaged(DecodeError),
    #[error("the backup's state cannot be restored: {0}")]
    BadState(String),
    #[error("the backup says index {claimed}, but its state is at index {actual}")]
    IndexMismatch { claimed: LogIndex, actual: LogIndex },
}

// The variants above carry their cause in their message (`{0}`), so they do
// not also return it from `source()` (no `#[from]`): a reporter that prints
// the chain, as the CLI and `deadbolt serve` do (`{:#}`), would print the
// cause twice. These `From`s keep `?` working.
impl From<DecodeError> for BackupError {
    fn from(error: DecodeError) -> Self {
        BackupError::Damaged(error)
    }
}

impl Backup {
    /// Takes the state machine as it is now (it must be at a committed index).
    pub fn of(cluster_id: String, node_id: NodeId, state: &LockStateMachine) -> Backup {
        Backup {
            cluster_id,
            node_id,
            index: state.last_applied(),
            state: state.snapshot(),
        }
    }

    /// The file's bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut bytes = BACKUP_MAGIC.to_vec();
        bytes.extend_from_slice(&codec::encode_checked(self));
        bytes
    }

    /// Reads a file's bytes and proves the state restorable; returns the
    /// backup and the state it holds.
    pub fn decode(bytes: &[u8]) -> Result<(Backup, LockStateMachine), BackupError> {
        let record = bytes
            .strip_prefix(BACKUP_MAGIC)
            .ok_or(BackupError::NotABackup {
                expected: "deadbolt backup v1",
            })?;
        let backup: Backup = codec::decode_checked(record)?;
        let state = LockStateMachine::restore(&backup.state)
            .map_err(|error| BackupError::BadState(error.to_string()))?;
        if state.last_applied() != backup.index {
            return Err(BackupError::IndexMismatch {
                claimed: backup.index,
                actual: state.last_applied(),
            });
        }
        Ok((backup, state))
    }

    /// A stable digest of the backup (FNV-1a of its encoding): founders
    /// restoring the same file agree on it without talking, so it can
    /// tell their cluster apart from the one the backup came from.
    pub fn digest(&self) -> u64 {
        codec::encoded_hash(self)
    }
}

/// Writes `backup` into empty storage as the founding state of a new
/// cluster whose voters are `founders`: the snapshot at the backup's
/// index (committed: it is where the cluster begins) and nothing else.
/// Durable on return; on error the storage may hold part of it and must be
/// discarded (the caller restores into a fresh dir only). A backup of a
/// cluster that never applied a command (index 0) is placed at index 1:
/// index 0 means "no snapshot" to the log. `bump_index` places it that
/// much higher still (etcd's `--bump-revision`): the old cluster may have
/// handed out tokens above the backup's index after the backup was taken,
/// and a resource that saw one refuses every lower token.
pub fn install<S: Storage>(
    storage: &mut S,
    backup: &Backup,
    founders: Membership,
    bump_index: u64,
) -> Result<(), StorageError> {
    assert!(
        founders.voters().next().is_some(),
        "a restored cluster needs founders"
    );
    assert!(bump_index <= BUMP_INDEX_MAX, "bump checked by the caller");
    let index = backup.index.max(1) + bump_index;
    let meta = SnapshotMeta {
        last_index: index,
        last_term: RESTORED_TERM,
        membership: founders,
    };
    storage.save_hard_state(&HardState {
        term: RESTORED_TERM,
        voted_for: None,
        commit_index: index,
    })?;
    storage.save_snapshot(&meta, &backup.state)?;
    storage.sync()
}

#[cfg(test)]
mod tests {
    use deadbolt_core::lock::{Command, Envelope, OpenSession};
    use deadbolt_core::raft::Member;

    use super::*;
    use crate::storage::{Identity, SimDisk, SimStorage};

    /// A backup of a state that applied one session at index 7.
    fn backup() -> Backup {
        let mut state = LockStateMachine::new();
        let open = Envelope {
            now_ms: 1_000,
            idempotency: None,
            command: Command::OpenSession(OpenSession {
                ttl_ms: 10_000,
                name: "worker".into(),
            }),
        };
        state.apply(7, &open);
        Backup::of("dbc-1.0000000000000007".into(), 2, &state)
    }

    #[test]
    fn round_trips() {
        let original = backup();
        let (decoded, state) = Backup::decode(&original.encode()).expect("decodes");
        assert_eq!(decoded, original);
        assert_eq!(state.last_applied(), original.index);
    }

    #[test]
    fn a_damaged_or_foreign_file_is_refused() {
        let bytes = backup().encode();
        let mut flipped = bytes.clone();
        let last = flipped.len() - 10;
        flipped[last] ^= 0x40;
        assert!(matches!(
            Backup::decode(&flipped),
            Err(BackupError::Damaged(_))
        ));
        assert!(matches!(
            Backup::decode(&bytes[..bytes.len() - 3]),
            Err(BackupError::Damaged(_))
        ));
        assert!(matches!(
            Backup::decode(b"{\"not\": \"a backup\"}"),
            Err(BackupError::NotABackup { .. })
        ));
        assert!(matches!(
            Backup::decode(BACKUP_MAGIC),
            Err(BackupError::Damaged(_))
        ));
    }

    #[test]
    fn an_index_that_disagrees_with_the_state_is_refused() {
        let mut lying = backup();
        lying.index += 5;
        assert!(matches!(
            Backup::decode(&lying.encode()),
            Err(BackupError::IndexMismatch { .. })
        ));
    }

    #[test]
    fn installed_storage_recovers_as_the_backup_at_its_index() {
        let disk = SimDisk::new();
        let identity = Identity {
            cluster_id: "dbr-1".into(),
            node_id: 1,
        };
        let mut storage = SimStorage::open(disk.clone(), &identity).expect("opens");
        let mut founders = Membership::default();
        let member = Member {
            voter: true,
            peer_addr: "10.0.0.1:7071".into(),
            api_addr: String::new(),
        };
        founders.members.insert(1, member);
        let original = backup();
        install(&mut storage, &original, founders.clone(), 0).expect("installs");
        drop(storage);
        let mut storage = SimStorage::open(disk, &identity).expect("reopens");
        let recovered = storage.load().expect("loads");
        let (meta, data) = recovered.snapshot.expect("a snapshot");
        assert_eq!(meta.last_index, 7);
        assert_eq!(meta.membership, founders);
        assert_eq!(data, original.state);
        assert_eq!(recovered.hard_state.commit_index, original.index);
        assert!(recovered.entries.is_empty());
    }
}
