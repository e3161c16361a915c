//! The leader's health view of the membership: which members answered
//! within the last election timeout, how long ago each last answered, how
//! many entries each is behind, and whether the voters that answered make a
//! quorum. One home for the reachability rule: the removal check of
//! [`super::Replica::remove_member`] counts reachable voters the same way.

use std::collections::BTreeMap;

use super::progress::ProgressTracker;
use super::types::{LogIndex, Membership, NodeId};

/// One member's health as the leader sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemberHealth {
    /// Answered the leader within the window (the election timeout); the
    /// leader itself always is.
    pub reachable: bool,
    /// Milliseconds since it last answered (0 for the leader itself);
    /// `None`: it has not answered since this node became leader.
    pub last_contact_ms: Option<u64>,
    /// Entries behind the leader's last log index (not its commit index:
    /// an entry the leader appended but a member has not acknowledged
    /// counts, so a dead member's lag grows with every write).
    pub lag: LogIndex,
}

/// Whether the reachable voters make a quorum.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuorumHealth {
    pub voters: usize,
    /// Voters that answered within the window, the leader counting itself.
    pub reachable_voters: usize,
    /// `reachable_voters` is at least a majority of `voters`: the cluster
    /// can still commit.
    pub ok: bool,
}

/// The leader's health view (see [`super::Replica::health`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterHealth {
    /// Every member, the leader included, by id.
    pub members: BTreeMap<NodeId, MemberHealth>,
    pub quorum: QuorumHealth,
}

/// What [`cluster_health`] reads from the leader, borrowed for one call.
pub(crate) struct LeaderView<'a> {
    pub(crate) self_id: NodeId,
    pub(crate) progress: &'a ProgressTracker,
    pub(crate) last_index: LogIndex,
    pub(crate) now_ms: u64,
    /// How recently a member must have answered to count as reachable.
    pub(crate) window_ms: u64,
}

impl LeaderView<'_> {
    /// The reachability rule: the leader itself, or a member that sent it
    /// anything within the window.
    pub(crate) fn reachable(&self, id: NodeId) -> bool {
        id == self.self_id || self.progress.heard_within(id, self.now_ms, self.window_ms)
    }

    /// Voters of `membership` that are reachable.
    pub(crate) fn reachable_voters(&self, membership: &Membership) -> usize {
        membership.voters().filter(|&v| self.reachable(v)).count()
    }

    fn member(&self, id: NodeId) -> MemberHealth {
        if id == self.self_id {
            return MemberHealth {
                reachable: true,
                last_contact_ms: Some(0),
                lag: 0,
            };
        }
        MemberHealth {
            reachable: self.reachable(id),
            last_contact_ms: self
                .progress
                .last_heard_ms(id)
                .map(|at| self.now_ms.saturating_sub(at)),
            lag: self
                .last_index
                .saturating_sub(self.progress.match_index(id)),
        }
    }
}

/// Every member's health and the quorum summary of `membership`.
pub(crate) fn cluster_health(view: &LeaderView<'_>, membership: &Membership) -> ClusterHealth {
    let members = membership
        .members
        .keys()
        .map(|&id| (id, view.member(id)))
        .collect();
    let voters = membership.voters().count();
    let reachable_voters = view.reachable_voters(membership);
    ClusterHealth {
        members,
        quorum: QuorumHealth {
            voters,
            reachable_voters,
            ok: voters > 0 && reachable_voters >= membership.quorum(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::types::Member;

    fn membership(voters: &[NodeId], learners: &[NodeId]) -> Membership {
        let member = |voter| Member {
            voter,
            peer_addr: "p".into(),
            api_addr: "a".into(),
        };
        let members = voters
            .iter()
            .map(|&v| (v, member(true)))
            .chain(learners.iter().map(|&l| (l, member(false))))
            .collect();
        Membership {
            members,
            incarnations: BTreeMap::new(),
        }
    }

    /// Leader 1 at `now_ms` 10_000 with a 300 ms window; `heard` gives when
    /// each other member last answered.
    fn health(m: &Membership, heard: &[(NodeId, u64)]) -> ClusterHealth {
        let mut progress = ProgressTracker::default();
        progress.reset(m, 1, 11);
        for &(id, at) in heard {
            progress.heard_from(id, at);
        }
        let view = LeaderView {
            self_id: 1,
            progress: &progress,
            last_index: 10,
            now_ms: 10_000,
            window_ms: 300,
        };
        cluster_health(&view, m)
    }

    #[test]
    fn the_leader_is_reachable_and_never_behind() {
        let h = health(&membership(&[1], &[]), &[]);
        assert_eq!(
            h.members[&1],
            MemberHealth {
                reachable: true,
                last_contact_ms: Some(0),
                lag: 0
            }
        );
        assert_eq!(
            h.quorum,
            QuorumHealth {
                voters: 1,
                reachable_voters: 1,
                ok: true
            }
        );
    }

    #[test]
    fn a_member_is_reachable_within_the_window_only() {
        let h = health(&membership(&[1, 2, 3], &[]), &[(2, 9_700), (3, 9_699)]);
        assert!(h.members[&2].reachable, "exactly one window ago");
        assert_eq!(h.members[&2].last_contact_ms, Some(300));
        assert!(!h.members[&3].reachable);
        assert_eq!(h.members[&3].last_contact_ms, Some(301));
        // Nothing acknowledged yet: the whole log is behind.
        assert_eq!(h.members[&3].lag, 10);
        assert_eq!(h.quorum.reachable_voters, 2);
        assert!(h.quorum.ok);
    }

    #[test]
    fn never_heard_from_is_unknown_contact_and_unreachable() {
        let h = health(&membership(&[1, 2, 3], &[]), &[]);
        assert_eq!(h.members[&2].last_contact_ms, None);
        assert!(!h.members[&2].reachable);
        assert_eq!(
            h.quorum,
            QuorumHealth {
                voters: 3,
                reachable_voters: 1,
                ok: false
            }
        );
    }

    #[test]
    fn learners_are_shown_but_do_not_count_for_the_quorum() {
        let h = health(&membership(&[1, 2], &[3]), &[(3, 10_000)]);
        assert!(h.members[&3].reachable);
        assert_eq!(h.members.keys().copied().collect::<Vec<_>>(), [1, 2, 3]);
        assert_eq!(h.quorum.voters, 2);
        assert_eq!(h.quorum.reachable_voters, 1);
        assert!(!h.quorum.ok, "one of two voters is not a majority");
    }

    #[test]
    fn a_clock_behind_the_last_contact_reads_as_zero() {
        let h = health(&membership(&[1, 2], &[]), &[(2, 10_050)]);
        assert_eq!(h.members[&2].last_contact_ms, Some(0));
        assert!(h.members[&2].reachable);
    }
}
