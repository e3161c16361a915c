//! The snapshot format of the lock state (postcard, versioned, checksummed)
//! and its assembly from the sub-states' parts. The byte layout is stored and
//! sent between nodes: `golden_tests.rs` pins it.

use serde::{Deserialize, Serialize};

use super::holders::Holder;
use super::idempotency::IdempotencyCache;
use super::locks::Locks;
use super::resources::{KvSnap, Resources, StackSnap};
use super::sessions::Sessions;
use super::LockStateMachine;
use crate::codec::{self, DecodeError};
use crate::lock::{Mode, Reply, SessionId};
use crate::raft::LogIndex;

/// Why a snapshot could not be restored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotError {
    #[error("snapshot bytes: {0}")]
    Decode(DecodeError),
    #[error("snapshot is inconsistent: {0}")]
    Inconsistent(String),
}

// The variants above carry their cause in their message (`{0}`), so they do
// not also return it from `source()` (no `#[from]`): a reporter that prints
// the chain, as the CLI and `deadbolt serve` do (`{:#}`), would print the
// cause twice. These `From`s keep `?` working.
impl From<DecodeError> for SnapshotError {
    fn from(error: DecodeError) -> Self {
        SnapshotError::Decode(error)
    }
}

/// The snapshot format. A new version is a new variant; old ones stay
/// decodable.
///
/// `I` is the form of the idempotency entries: owned (`Vec<IdempotencySnap>`,
/// the default) when decoding, a borrowed view of the live cache when
/// encoding (`IdempotencyCache::snapshot_entries`), which writes the same
/// bytes without copying every kept outcome first: at a million outcomes
/// the copy was most of the snapshot's cost on the node's actor.
#[derive(Serialize, Deserialize)]
pub(super) enum SnapshotFile<I = Vec<IdempotencySnap>> {
    V1(SnapshotV1<I>),
    /// V1 plus the acknowledged low-water marks.
    V2(SnapshotV2<I>),
    /// V2 plus each session's last renewal (issue 13, bug 6: a new leader
    /// measures leases from there instead of restarting them).
    V3(SnapshotV3<I>),
    /// V3 plus the idempotency bound and the entries' ages (issue 15: the
    /// bound evicts the oldest outcome instead of refusing new keys).
    V4(SnapshotV4<I>),
}

#[derive(Serialize, Deserialize)]
pub(super) struct SnapshotV4<I = Vec<IdempotencySnap>> {
    pub(super) base: SnapshotV3<I>,
    pub(super) idempotency_bound: BoundSnap,
}

/// The idempotency cache's bound and eviction order.
#[derive(Serialize, Deserialize)]
pub(super) struct BoundSnap {
    /// State time each entry was recorded, in the order of the entries.
    pub(super) recorded_ms: Vec<u64>,
    pub(super) keys_max: u64,
    /// (age_ms, at_ms) of the last eviction the bound forced.
    pub(super) forced: Option<(u64, u64)>,
}

#[derive(Serialize, Deserialize)]
pub(super) struct SnapshotV3<I = Vec<IdempotencySnap>> {
    pub(super) base: SnapshotV2<I>,
    /// State time of each session's last renewal, in the order of
    /// `base.base.sessions`.
    pub(super) renewed_at_ms: Vec<u64>,
}

#[derive(Serialize, Deserialize)]
pub(super) struct SnapshotV2<I = Vec<IdempotencySnap>> {
    pub(super) base: SnapshotV1<I>,
    /// In prefix order.
    pub(super) marks: Vec<MarkSnap>,
}

/// (prefix, acked_below, touched_ms) of one acknowledged low-water mark.
pub(super) type MarkSnap = (String, u64, u64);

#[derive(Serialize, Deserialize)]
pub(super) struct SnapshotV1<I = Vec<IdempotencySnap>> {
    pub(super) last_applied: LogIndex,
    pub(super) clock_ms: u64,
    pub(super) sessions: Vec<SessionSnap>,
    /// (expired_at_ms, session) in expiry order.
    pub(super) tombstones: Vec<(u64, SessionId)>,
    pub(super) locks: Vec<LockSnap>,
    pub(super) kv: Vec<KvSnap>,
    pub(super) stacks: Vec<StackSnap>,
    pub(super) idempotency: I,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct SessionSnap {
    pub(super) id: SessionId,
    pub(super) name: String,
    pub(super) ttl_ms: u64,
    pub(super) ephemeral: bool,
}

#[derive(Serialize, Deserialize)]
pub(super) struct LockSnap {
    pub(super) name: String,
    pub(super) mode: Option<Mode>,
    pub(super) holders: Vec<Holder>,
    pub(super) waiters: Vec<WaiterSnap>,
}

#[derive(Serialize, Deserialize)]
pub(super) struct WaiterSnap {
    pub(super) session_id: SessionId,
    pub(super) mode: Mode,
    pub(super) deadline_ms: u64,
    pub(super) idempotency_key: Option<String>,
}

#[derive(Serialize, Deserialize)]
pub(super) struct IdempotencySnap {
    pub(super) key: String,
    pub(super) fingerprint: u64,
    pub(super) reply: Reply,
    pub(super) owner: Option<SessionId>,
    pub(super) deadline_ms: Option<u64>,
}

/// The whole state as checksummed bytes (always the newest version).
pub(super) fn encode(state: &LockStateMachine) -> Vec<u8> {
    let (sessions, renewed_at_ms, tombstones) = state.sessions.to_snapshot();
    let (kv, stacks) = state.resources.to_snapshot();
    let (marks, idempotency_bound) = state.idempotency.to_snapshot();
    let idempotency = state.idempotency.snapshot_entries();
    let base = SnapshotV1 {
        last_applied: state.last_applied,
        clock_ms: state.clock_ms,
        sessions,
        tombstones,
        locks: state.locks.to_snapshot(),
        kv,
        stacks,
        idempotency,
    };
    codec::encode_checked(&SnapshotFile::V4(SnapshotV4 {
        base: SnapshotV3 {
            base: SnapshotV2 { base, marks },
            renewed_at_ms,
        },
        idempotency_bound,
    }))
}

/// Decodes snapshot bytes of any version into a state. Only the structure
/// is checked here; the caller checks every invariant.
///
/// A snapshot older than V3 does not say when its sessions were last
/// renewed: they count as renewed at its state time, so a leader after it
/// gives each a full TTL from there (at most the old rule's delay, never an
/// earlier expiry). One older than V4 carries no idempotency bound nor ages
/// (see `IdempotencyCache::restore`).
pub(super) fn decode(bytes: &[u8]) -> Result<LockStateMachine, SnapshotError> {
    let (snap, bound) = match codec::decode_checked::<SnapshotFile>(bytes)? {
        SnapshotFile::V1(base) => (
            renewed_at_snapshot_time(SnapshotV2 {
                base,
                marks: Vec::new(),
            }),
            None,
        ),
        SnapshotFile::V2(snap) => (renewed_at_snapshot_time(snap), None),
        SnapshotFile::V3(snap) => (snap, None),
        SnapshotFile::V4(snap) => (snap.base, Some(snap.idempotency_bound)),
    };
    from_snapshot(snap, bound).map_err(SnapshotError::Inconsistent)
}

fn renewed_at_snapshot_time(base: SnapshotV2) -> SnapshotV3 {
    let renewed_at_ms = vec![base.base.clock_ms; base.base.sessions.len()];
    SnapshotV3 {
        base,
        renewed_at_ms,
    }
}

fn from_snapshot(snap: SnapshotV3, bound: Option<BoundSnap>) -> Result<LockStateMachine, String> {
    let SnapshotV3 {
        base: SnapshotV2 { base, marks },
        renewed_at_ms,
    } = snap;
    let mut sessions = Sessions::restore(base.sessions, renewed_at_ms, base.tombstones)?;
    let locks = Locks::restore(base.locks, &mut sessions)?;
    Ok(LockStateMachine {
        last_applied: base.last_applied,
        clock_ms: base.clock_ms,
        sessions,
        locks,
        resources: Resources::restore(base.kv, base.stacks),
        idempotency: IdempotencyCache::restore(base.idempotency, marks, bound)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v1_with_one_lock(holder_session: SessionId) -> SnapshotV1 {
        SnapshotV1 {
            last_applied: 5,
            clock_ms: 0,
            sessions: vec![SessionSnap {
                id: 3,
                name: "a".into(),
                ttl_ms: 10_000,
                ephemeral: false,
            }],
            tombstones: vec![],
            locks: vec![LockSnap {
                name: "L".into(),
                mode: Some(Mode::Exclusive),
                holders: vec![Holder {
                    session_id: holder_session,
                    fencing_token: 4,
                    acquired_at_ms: 0,
                }],
                waiters: vec![],
            }],
            kv: vec![],
            stacks: vec![],
            idempotency: vec![],
        }
    }

    #[test]
    fn a_version_1_snapshot_decodes_without_marks() {
        let bytes = codec::encode_checked(&SnapshotFile::V1(v1_with_one_lock(3)));
        let state = decode(&bytes).expect("decodes");
        assert_eq!(state.last_applied(), 5);
        assert_eq!(
            state.session_lease(3).map(|l| l.renewed_at_ms),
            Some(0),
            "renewed at the snapshot's state time"
        );
        assert_eq!(state.lock("L").map(|l| l.holders.len()), Ok(1));
        state.check_invariants().unwrap();
        // Re-encoding writes the newest version.
        assert_eq!(LockStateMachine::restore(&encode(&state)), Ok(state));
    }

    #[test]
    fn a_version_2_snapshot_counts_its_sessions_renewed_at_its_state_time() {
        let base = SnapshotV1 {
            clock_ms: 70_000,
            ..v1_with_one_lock(3)
        };
        let bytes = codec::encode_checked(&SnapshotFile::V2(SnapshotV2 {
            base,
            marks: vec![],
        }));
        let state = decode(&bytes).expect("decodes");
        assert_eq!(
            state.session_lease(3).map(|l| l.renewed_at_ms),
            Some(70_000)
        );
        state.check_invariants().unwrap();
    }

    #[test]
    fn a_version_3_snapshot_without_a_renewal_per_session_is_refused() {
        let bytes = codec::encode_checked(&SnapshotFile::V3(SnapshotV3 {
            base: SnapshotV2 {
                base: v1_with_one_lock(3),
                marks: vec![],
            },
            renewed_at_ms: vec![],
        }));
        assert!(matches!(
            LockStateMachine::restore(&bytes),
            Err(SnapshotError::Inconsistent(_))
        ));
    }

    #[test]
    fn inconsistent_snapshot_is_refused() {
        // A lock held by a session the snapshot does not have.
        let snap = SnapshotV1 {
            sessions: vec![],
            ..v1_with_one_lock(3)
        };
        let bytes = codec::encode_checked(&SnapshotFile::V1(snap));
        assert!(matches!(
            LockStateMachine::restore(&bytes),
            Err(SnapshotError::Inconsistent(_))
        ));
    }
}
