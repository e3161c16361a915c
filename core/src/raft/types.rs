//! The Raft vocabulary shared by the core, storage and the wire: ids, entries,
//! hard state, membership and snapshot metadata. Everything here is plain data
//! with serde derives, encoded only through [`crate::codec`].

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A node's id within its cluster. 0 is never a valid id.
pub type NodeId = u64;
/// A Raft term.
pub type Term = u64;
/// A position in the replicated log; the first entry has index 1.
pub type LogIndex = u64;

/// One replicated log entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub term: Term,
    pub index: LogIndex,
    pub payload: EntryPayload,
}

/// What an entry carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum EntryPayload {
    /// Appended by every new leader: committing it commits everything before it
    /// (a leader never commits earlier-term entries by counting replicas).
    Noop,
    /// An application command, opaque to Raft (an encoded lock command).
    Command(Vec<u8>),
    /// The complete next membership. Takes effect on every node as soon as it
    /// is appended to that node's log, not when committed.
    Membership(Membership),
}

/// The state Raft must make durable before it answers votes or appends.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HardState {
    pub term: Term,
    pub voted_for: Option<NodeId>,
    pub commit_index: LogIndex,
}

/// One member of the cluster and how to reach it. Raft itself looks only at
/// `voter`; the addresses ride along so that every node learns how to reach a
/// member that joined later.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// Voters count toward quorums; learners only receive the log.
    pub voter: bool,
    /// `host:port` of the member's peer (Raft) listener.
    pub peer_addr: String,
    /// `host:port` of the member's HTTP API.
    pub api_addr: String,
}

/// A complete cluster configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Membership {
    pub members: BTreeMap<NodeId, Member>,
    /// The incarnation (the random id of a member's data dir) recorded for
    /// each member; a member without one is not recorded yet. Raft ignores
    /// it; the transport refuses a peer claiming another incarnation, so a
    /// member whose disk was wiped cannot vote or acknowledge as if it
    /// remembered its promises. Keys are always members (`without` drops
    /// them), except [`FOUNDING_NONCE_KEY`].
    pub incarnations: BTreeMap<NodeId, u64>,
}

/// The key under which [`Membership::incarnations`] holds the cluster's
/// founding nonce. Node id 0 is never a member, so the key cannot collide
/// with a member's incarnation; keeping the nonce there leaves the encoding
/// of memberships (log entries, snapshot metadata) unchanged, so a data dir
/// written before founding nonces existed decodes as it is (its first
/// leader then records one).
pub const FOUNDING_NONCE_KEY: NodeId = 0;

impl Membership {
    /// Ids of the voting members, in ascending order.
    pub fn voters(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.members
            .iter()
            .filter(|(_, m)| m.voter)
            .map(|(id, _)| *id)
    }

    /// Ids of the non-voting members, in ascending order.
    pub fn learners(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.members
            .iter()
            .filter(|(_, m)| !m.voter)
            .map(|(id, _)| *id)
    }

    pub fn is_voter(&self, id: NodeId) -> bool {
        self.members.get(&id).is_some_and(|m| m.voter)
    }

    pub fn contains(&self, id: NodeId) -> bool {
        self.members.contains_key(&id)
    }

    /// Votes needed for a majority of the voters.
    pub fn quorum(&self) -> usize {
        self.voters().count() / 2 + 1
    }

    /// The incarnation recorded for member `id`, if any.
    pub fn incarnation(&self, id: NodeId) -> Option<u64> {
        assert_ne!(id, FOUNDING_NONCE_KEY, "node id 0 is never a member");
        self.incarnations.get(&id).copied()
    }

    /// The random number the cluster's first leader drew when it was
    /// founded (None until one is recorded). With the founder list's tag it
    /// makes the cluster id, which differs between any two foundings.
    pub fn founding_nonce(&self) -> Option<u64> {
        self.incarnations.get(&FOUNDING_NONCE_KEY).copied()
    }

    /// This membership with `nonce` recorded as the founding nonce.
    pub fn with_founding_nonce(&self, nonce: u64) -> Membership {
        let mut next = self.clone();
        next.incarnations.insert(FOUNDING_NONCE_KEY, nonce);
        next
    }
}

#[cfg(test)]
impl Membership {
    /// These voters and learners, with empty addresses (unit tests).
    pub(crate) fn of(voters: &[NodeId], learners: &[NodeId]) -> Membership {
        let member = |voter| Member {
            voter,
            peer_addr: String::new(),
            api_addr: String::new(),
        };
        let voters = voters.iter().map(|&id| (id, member(true)));
        let learners = learners.iter().map(|&id| (id, member(false)));
        Membership {
            members: voters.chain(learners).collect(),
            incarnations: BTreeMap::new(),
        }
    }
}

/// Describes a snapshot: the state machine after applying every entry up to
/// and including `last_index`, and the membership in force at that point.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotMeta {
    pub last_index: LogIndex,
    pub last_term: Term,
    pub membership: Membership,
}
