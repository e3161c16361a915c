//! How a node learns that it was removed from its cluster (issue 14): from
//! its own log (the committed membership no longer lists it, as when a
//! leader removes itself) or from a peer's answer (a member refused our
//! hello because its committed membership, at a commit index at or above
//! ours, lacks us). A removed node stops serving; the embedder exits and
//! refuses to start on that data dir again.
//!
//! A peer's answer is proof only together with our own committed state:
//! if our committed membership at commit index `a` lists us and the peer's
//! at `c >= a` does not, then on the one committed history a later
//! membership removed us. A node that is still joining (its own addition
//! not committed on it) has no such proof and ignores the answer; so does a
//! founder that has committed nothing yet (`a = 0`). The transport takes a
//! notice only from a peer whose cluster id is compatible with ours. Left
//! open: a founder of a new founding that committed its founding entry but
//! not yet its nonce, answered by a stale node of an earlier founding with
//! the same founder list in which it had been removed, exits instead of
//! being refused (it stops; it cannot corrupt anything).

use deadbolt_core::raft::{LogIndex, Membership, NodeId};

use crate::transport::RemovalNotice;

/// How the removal became known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Removal {
    /// Our committed membership no longer lists us.
    FromLog,
    /// A member answered that its committed membership lacks us.
    FromPeer(RemovalNotice),
}

/// Watches the committed membership for our removal.
#[derive(Debug, Default)]
pub(super) struct RemovalWatch {
    /// A committed membership listed us (in this process's life).
    was_member: bool,
}

impl RemovalWatch {
    /// Whether node `me` has been removed, given its committed membership
    /// at `commit_index` and the best removal notice a peer of our cluster
    /// sent.
    pub(super) fn check(
        &mut self,
        me: NodeId,
        committed: &Membership,
        commit_index: LogIndex,
        notice: Option<RemovalNotice>,
    ) -> Option<Removal> {
        let member = committed.contains(me);
        if member {
            self.was_member = true;
        } else if self.was_member {
            return Some(Removal::FromLog);
        }
        let proven = |n: &RemovalNotice| n.commit_index >= commit_index;
        match notice {
            Some(notice) if member && commit_index >= 1 && proven(&notice) => {
                Some(Removal::FromPeer(notice))
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use deadbolt_core::raft::Member;

    fn membership(ids: &[NodeId]) -> Membership {
        let mut m = Membership::default();
        for &id in ids {
            let member = Member {
                voter: true,
                peer_addr: String::new(),
                api_addr: String::new(),
            };
            m.members.insert(id, member);
        }
        m
    }

    fn notice(commit_index: LogIndex) -> Option<RemovalNotice> {
        Some(RemovalNotice {
            from: 1,
            commit_index,
            cluster_id: crate::cluster_id::ClusterId::parse("c"),
        })
    }

    #[test]
    fn the_log_tells_a_member_it_left() {
        let mut watch = RemovalWatch::default();
        // A joiner not yet listed is not "removed".
        assert_eq!(watch.check(3, &membership(&[1, 2]), 4, None), None);
        assert_eq!(watch.check(3, &membership(&[1, 2, 3]), 6, None), None);
        assert_eq!(
            watch.check(3, &membership(&[1, 2]), 9, None),
            Some(Removal::FromLog)
        );
    }

    #[test]
    fn a_peer_answer_counts_only_with_proof() {
        let us = membership(&[1, 2, 3]);
        let mut watch = RemovalWatch::default();
        // The peer is behind us: it may not have our addition yet.
        assert_eq!(watch.check(3, &us, 10, notice(9)), None);
        // Our own addition is not committed here: still joining.
        let joining = membership(&[1, 2]);
        assert_eq!(
            RemovalWatch::default().check(3, &joining, 4, notice(20)),
            None
        );
        // A founder that committed nothing yet.
        assert_eq!(RemovalWatch::default().check(3, &us, 0, notice(12)), None);
        assert!(RemovalWatch::default()
            .check(3, &us, 1, notice(12))
            .is_some());
        assert_eq!(
            watch.check(3, &us, 10, notice(10)),
            Some(Removal::FromPeer(notice(10).expect("some")))
        );
    }
}
