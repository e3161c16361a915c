//! Why the replica refused a call. Each refusal leaves the replica unchanged:
//! nothing was appended, sent or compacted.

use super::types::{LogIndex, NodeId};

/// The leader hint as people read it: `leader is node 3`, not `Some(3)`.
/// The server's API errors add the same words when the reason lacks them.
pub fn leader_text(leader_hint: &Option<NodeId>) -> String {
    match leader_hint {
        Some(id) => format!("leader is node {id}"),
        None => "no leader known".to_owned(),
    }
}

/// Why a proposal was refused (named apart from the runtime's `ProposeError`,
/// which a node's callers see). Nothing was appended.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProposalRefused {
    #[error("not the leader ({})", leader_text(leader_hint))]
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
    #[error("not the leader, cannot serve the read ({})", leader_text(leader_hint))]
    NotLeader { leader_hint: Option<NodeId> },
    #[error("too many reads pending")]
    TooManyPending,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransferError {
    #[error("not the leader ({})", leader_text(leader_hint))]
    NotLeader { leader_hint: Option<NodeId> },
    #[error("node {0} is not a voter")]
    NotVoter(NodeId),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MembershipError {
    #[error("not the leader ({})", leader_text(leader_hint))]
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
    #[error(
        "node {id} has not acknowledged the log up to the commit index (acknowledged \
         {match_index}, commit index {commit_index}); a learner is promoted only once it has"
    )]
    NotCaughtUp {
        id: NodeId,
        match_index: LogIndex,
        commit_index: LogIndex,
    },
    /// Removing voter `id` would leave fewer voters that answered the
    /// leader within the last election timeout than the new membership's
    /// quorum: the cluster could not commit afterwards.
    #[error(
        "removing node {id} would leave {reachable} reachable voter(s), fewer than the quorum of \
         {quorum} of the remaining {voters} voter(s); bring the unreachable voters back (or \
         remove them first)"
    )]
    WouldLoseQuorum {
        id: NodeId,
        reachable: usize,
        quorum: usize,
        voters: usize,
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
