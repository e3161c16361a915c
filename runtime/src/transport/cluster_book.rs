//! What a node's transport knows of the cluster it belongs to: its cluster
//! id (the configured tag plus the committed founding nonce) and the
//! committed membership, which the handshake checks peers against, plus
//! what peers answered about our own removal.
//!
//! Set by the Raft actor from the membership in force at its commit index
//! (never the latest appended one: an uncommitted nonce or removal may be
//! undone by the next leader, and a node that refused that leader would be
//! stuck with it); read by the listener and the peer actors.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use deadbolt_core::raft::{LogIndex, Membership, NodeId};

use crate::cluster_id::ClusterId;

/// A peer told us, with proof, that we are no longer a member: at its
/// commit index `commit_index` its committed membership lacks us.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemovalNotice {
    pub from: NodeId,
    pub commit_index: LogIndex,
    /// The peer's cluster id (compatible with ours; it may know the
    /// founding nonce where we do not).
    pub cluster_id: ClusterId,
}

#[derive(Debug)]
struct Book {
    id: ClusterId,
    /// Members of the committed membership (empty until something is).
    members: BTreeSet<NodeId>,
    commit_index: LogIndex,
    /// The latest removal notice a peer sent us.
    removal: Option<RemovalNotice>,
}

/// Shared between the Raft actor and the transport's tasks; cheap to clone.
#[derive(Debug, Clone)]
pub struct ClusterBook {
    inner: Arc<Mutex<Book>>,
}

/// Two handles are equal when they share one book.
impl PartialEq for ClusterBook {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }
}

impl Eq for ClusterBook {}

impl ClusterBook {
    /// A book for the configured id (a tag, or a founded id for a node that
    /// joined a founded cluster).
    pub fn new(id: ClusterId) -> Self {
        let book = Book {
            id,
            members: BTreeSet::new(),
            commit_index: 0,
            removal: None,
        };
        Self {
            inner: Arc::new(Mutex::new(book)),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Book> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The cluster id as this node knows it now.
    pub fn id(&self) -> ClusterId {
        self.lock().id.clone()
    }

    /// Takes the committed membership (at `commit_index`): its founding
    /// nonce, once there is one, completes the id. A nonce that differs
    /// from the configured one is the caller's to refuse before this.
    pub fn set_committed(&self, membership: &Membership, commit_index: LogIndex) {
        let mut book = self.lock();
        if let Some(nonce) = membership.founding_nonce() {
            if book.id.nonce() != Some(nonce) {
                book.id = book.id.founded(nonce);
            }
        }
        if !membership.members.keys().eq(book.members.iter()) {
            book.members = membership.members.keys().copied().collect();
        }
        book.commit_index = commit_index;
    }

    /// If `node_id` is not in our committed membership, our commit index:
    /// the proof a removed node needs (it compares it with its own).
    pub fn removal_proof(&self, node_id: NodeId) -> Option<LogIndex> {
        let book = self.lock();
        let knows_members = !book.members.is_empty() && book.commit_index > 0;
        (knows_members && !book.members.contains(&node_id)).then_some(book.commit_index)
    }

    /// A peer answered that we are not a member at its commit index.
    pub fn removal_noticed(&self, notice: RemovalNotice) {
        let mut book = self.lock();
        let newer = book
            .removal
            .as_ref()
            .is_none_or(|old| old.commit_index < notice.commit_index);
        if newer {
            book.removal = Some(notice);
        }
    }

    /// The best removal notice received so far.
    pub fn removal_notice(&self) -> Option<RemovalNotice> {
        self.lock().removal.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use deadbolt_core::raft::Member;

    fn membership(ids: &[NodeId], nonce: Option<u64>) -> Membership {
        let mut m = Membership::default();
        for &id in ids {
            let member = Member {
                voter: true,
                peer_addr: String::new(),
                api_addr: String::new(),
            };
            m.members.insert(id, member);
        }
        match nonce {
            Some(n) => m.with_founding_nonce(n),
            None => m,
        }
    }

    #[test]
    fn the_committed_nonce_completes_the_id() {
        let book = ClusterBook::new(ClusterId::parse("dbc-1"));
        assert_eq!(book.id().to_string(), "dbc-1");
        book.set_committed(&membership(&[1, 2], None), 1);
        assert_eq!(book.id().nonce(), None);
        book.set_committed(&membership(&[1, 2], Some(9)), 3);
        assert_eq!(book.id().to_string(), "dbc-1.0000000000000009");
    }

    #[test]
    fn removal_proofs_need_a_committed_membership() {
        let book = ClusterBook::new(ClusterId::parse("c"));
        assert_eq!(book.removal_proof(3), None, "knows no membership yet");
        book.set_committed(&membership(&[1, 2], None), 5);
        assert_eq!(book.removal_proof(2), None);
        assert_eq!(book.removal_proof(3), Some(5));
        assert_eq!(book.removal_notice(), None);
        let notice = |commit_index| RemovalNotice {
            from: 1,
            commit_index,
            cluster_id: ClusterId::parse("c"),
        };
        book.removal_noticed(notice(7));
        book.removal_noticed(notice(6));
        assert_eq!(book.removal_notice(), Some(notice(7)));
    }
}
