//! The incarnations a node's transport checks peers against: the ones the
//! replicated membership records (set by the Raft actor) and the ones peers
//! claimed in their handshakes (for the leader to record).
//!
//! An incarnation is the random id a data dir draws when it is created. A
//! node whose disk was wiped comes back under the same node id and flags but
//! with a new incarnation; refusing it in the handshake, on both sides, is
//! what keeps it from voting or acknowledging entries as if it remembered
//! what its previous incarnation promised.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex};

use deadbolt_core::raft::{Membership, NodeId};

/// Incarnation 0 means "none": a node configured without one (tests,
/// benches) claims 0 and is never recorded.
pub const INCARNATION_NONE: u64 = 0;

/// A peer claimed another incarnation than the membership records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IncarnationMismatch {
    pub node_id: NodeId,
    pub claimed: u64,
    pub recorded: u64,
}

impl fmt::Display for IncarnationMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "node {} claims incarnation {:#018x}, but the membership records incarnation \
             {:#018x} for it: its data dir is not the one that joined the cluster (wiped or \
             replaced?); remove node {} from the cluster and add it again (--join) with an \
             empty data dir",
            self.node_id, self.claimed, self.recorded, self.node_id
        )
    }
}

#[derive(Debug, Default)]
struct Book {
    /// From the membership in force (latest appended).
    recorded: BTreeMap<NodeId, u64>,
    /// The latest incarnation each peer claimed in an accepted handshake.
    claimed: BTreeMap<NodeId, u64>,
}

/// Shared between the Raft actor (which sets what is recorded) and the
/// transport's tasks (which check and report claims). Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct IncarnationBook {
    inner: Arc<Mutex<Book>>,
}

/// Two handles are equal when they share one book.
impl PartialEq for IncarnationBook {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }
}

impl Eq for IncarnationBook {}

impl IncarnationBook {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Book> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes the incarnations recorded in `membership` (called whenever the
    /// membership in force changes).
    pub fn set_recorded(&self, membership: &Membership) {
        let mut book = self.lock();
        book.recorded = membership.incarnations.clone();
        // Claims of nodes that left are of no use to anyone.
        book.claimed.retain(|id, _| membership.contains(*id));
    }

    /// Whether `node_id` may talk to us claiming `claimed`: refused only
    /// when the membership records another incarnation for it.
    pub fn check(&self, node_id: NodeId, claimed: u64) -> Result<(), IncarnationMismatch> {
        match self.lock().recorded.get(&node_id) {
            Some(&recorded) if recorded != claimed => Err(IncarnationMismatch {
                node_id,
                claimed,
                recorded,
            }),
            _ => Ok(()),
        }
    }

    /// Notes what `node_id` claimed in an accepted handshake.
    pub fn claimed(&self, node_id: NodeId, claimed: u64) {
        if claimed != INCARNATION_NONE {
            self.lock().claimed.insert(node_id, claimed);
        }
    }

    /// Members of `membership` with no recorded incarnation whose claim (or,
    /// for `me`, own incarnation) is known: what a leader should record.
    pub fn unrecorded(&self, membership: &Membership, me: (NodeId, u64)) -> BTreeMap<NodeId, u64> {
        let book = self.lock();
        let mut known = book.claimed.clone();
        if me.1 != INCARNATION_NONE {
            known.insert(me.0, me.1);
        }
        known
            .into_iter()
            .filter(|(id, _)| membership.contains(*id) && membership.incarnation(*id).is_none())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use deadbolt_core::raft::Member;

    use super::*;

    fn membership(ids: &[NodeId], recorded: &[(NodeId, u64)]) -> Membership {
        let member = Member {
            voter: true,
            peer_addr: String::new(),
            api_addr: String::new(),
        };
        Membership {
            members: ids.iter().map(|&id| (id, member.clone())).collect(),
            incarnations: recorded.iter().copied().collect(),
        }
    }

    #[test]
    fn only_a_recorded_different_incarnation_is_refused() {
        let book = IncarnationBook::new();
        assert_eq!(book.check(2, 7), Ok(()), "nothing recorded: accepted");
        book.set_recorded(&membership(&[1, 2], &[(2, 7)]));
        assert_eq!(book.check(2, 7), Ok(()));
        let refused = book.check(2, 8).expect_err("another incarnation");
        assert_eq!((refused.claimed, refused.recorded), (8, 7));
        let message = refused.to_string();
        assert!(message.contains("node 2") && message.contains("0x0000000000000008"));
        assert_eq!(
            book.check(2, INCARNATION_NONE).map_err(|m| m.recorded),
            Err(7)
        );
        assert_eq!(book.check(1, 99), Ok(()), "node 1 is not recorded yet");
    }

    #[test]
    fn claims_of_unrecorded_members_are_what_a_leader_records() {
        let book = IncarnationBook::new();
        let m = membership(&[1, 2, 3], &[(3, 33)]);
        book.set_recorded(&m);
        book.claimed(2, 22);
        book.claimed(3, 34);
        book.claimed(4, 44);
        book.claimed(1, INCARNATION_NONE);
        assert_eq!(
            book.unrecorded(&m, (1, 11)),
            BTreeMap::from([(1, 11), (2, 22)]),
            "recorded 3 and non-member 4 are left out"
        );
        assert_eq!(book.unrecorded(&m, (1, INCARNATION_NONE)).len(), 1);
        book.set_recorded(&membership(&[1, 3], &[]));
        assert!(
            book.unrecorded(&m, (1, INCARNATION_NONE)).is_empty(),
            "2 left"
        );
    }
}
