//! Why the replica refused a call. Each refusal leaves the replica unchanged:
//! nothing was appended, sent or compacted.

use super::types::{LogIndex, NodeId};

/// Why a proposal was refused (named apart from the runtime's `ProposeError`,
/// which a node's callers see). Nothing was appended.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProposalRefused {
    #[error("not the leader (leader hint: {leader_hint:?})")]
    NotLeader { leader_hint: Option<NodeId> },
    #[error("proposal is {bytes} bytes, more than {max}")]
    TooLarge { bytes: usize, max: usize },
    #[error("{count} proposals in one batch, more than {max} (or none)")]
    BadBatchSize { count: usize, max: usize },
    #[error("leadership transfer in progress")]
    TransferInProgress,
    #[error("{uncommitted} entries await commit; retry later")]
    Backpressure { uncommitted: usize },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReadIndexError {
    #[error("no leader known to serve the read (leader hint: {leader_hint:?})")]
    NotLeader { leader_hint: Option<NodeId> },
    #[error("too many reads pending")]
    TooManyPending,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransferError {
    #[error("not the leader (leader hint: {leader_hint:?})")]
    NotLeader { leader_hint: Option<NodeId> },
    #[error("node {0} is not a voter")]
    NotVoter(NodeId),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MembershipError {
    #[error("not the leader (leader hint: {leader_hint:?})")]
    NotLeader { leader_hint: Option<NodeId> },
    #[error("the previous membership change is not committed yet")]
    ChangeInProgress,
    #[error("the leader has not committed an entry of its own term yet")]
    LeaderTermNotCommitted,
    #[error("a change may add or remove at most one voter")]
    MoreThanOneVoterChanged,
    #[error("the membership would have no voters")]
    NoVoters,
    #[error("node {0} is not a member")]
    UnknownMember(NodeId),
    #[error("node {0} is already a member")]
    AlreadyMember(NodeId),
    #[error("node {id} is not caught up (match {match_index}, leader last {last_index})")]
    NotCaughtUp {
        id: NodeId,
        match_index: LogIndex,
        last_index: LogIndex,
    },
    #[error("leadership transfer in progress")]
    TransferInProgress,
    #[error(transparent)]
    Propose(#[from] ProposalRefused),
}

/// Why [`super::Replica::snapshot_taken`] refused the caller's snapshot
/// (named apart from the lock state machine's `SnapshotError`, which is about
/// decoding one). The log was not compacted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotRefused {
    #[error("snapshot index {index} is beyond what was handed out to apply ({applied})")]
    NotApplied { index: LogIndex, applied: LogIndex },
    #[error("snapshot index {index} is not newer than the current snapshot ({snapshot_index})")]
    Stale {
        index: LogIndex,
        snapshot_index: LogIndex,
    },
}
