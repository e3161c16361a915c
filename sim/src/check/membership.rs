//! Membership safety under reconfiguration (issue 14 item 6): a node whose
//! removal committed never leads again and, running on its old data dir
//! after the faults heal, has learned it was removed and stopped; a node
//! carrying another founding's data dir never leads and never commits past
//! what its own founding had committed when the disk was taken (this
//! cluster never accepts it, so nothing can feed it a log); once the faults
//! healed, the leader's membership lists no removed node and no voter that
//! never ran (a member added but never started stays a learner).
//!
//! The other founding's Raft observations are a history of their own (the
//! harness routes them by the disk a host runs on): the Raft checker judges
//! each founding alone, and nothing of one is merged into the other.

use std::fmt;

use crate::history::{fmt_time, LogIndex, NodeId, NodeObservation, RaftHistory, SimTimeNs, Term};

/// A node whose removal the harness saw committed (the removal call
/// answered success).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemovedNode {
    pub node: NodeId,
    /// When the removal was known committed.
    pub removed_ns: SimTimeNs,
    /// After the faults healed, the node was still running as a member of
    /// the cluster: it neither learned its removal nor was it retired or
    /// refused a start.
    pub still_serving: bool,
}

/// A host that got the data dir of another founding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForeignNode {
    pub node: NodeId,
    /// When the foreign disk went in (the host was down from then until its
    /// restart on that disk).
    pub swapped_ns: SimTimeNs,
    /// The highest commit index any node of the other founding reached
    /// before its disks were taken: alone, the foreign node can never pass
    /// it.
    pub founding_commit: LogIndex,
}

/// The membership the leader reported after the heal.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FinalMembership {
    pub leader: NodeId,
    pub members: Vec<NodeId>,
    pub voters: Vec<NodeId>,
    /// Every node id a host ever ran under (founders and joiners).
    pub hosts: Vec<NodeId>,
}

/// What the harness knows of the run's reconfigurations.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MembershipInput {
    pub removed: Vec<RemovedNode>,
    pub foreign: Vec<ForeignNode>,
    /// None when no leader answered after the heal (liveness says why).
    pub last: Option<FinalMembership>,
}

/// A broken membership promise.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MembershipViolation {
    /// A node led the cluster after its removal had committed.
    RemovedNodeLed {
        node: NodeId,
        term: Term,
        at_ns: SimTimeNs,
        removed_ns: SimTimeNs,
    },
    /// A removed node still served as a member after the faults healed.
    RemovedNodeKeptServing { node: NodeId, removed_ns: SimTimeNs },
    /// The node on another founding's data dir became a leader.
    ForeignNodeLed {
        node: NodeId,
        term: Term,
        at_ns: SimTimeNs,
    },
    /// The node on another founding's data dir committed or applied past
    /// its founding's commit index: some cluster fed it a log.
    ForeignNodeAdvanced {
        node: NodeId,
        index: LogIndex,
        founding_commit: LogIndex,
        at_ns: SimTimeNs,
    },
    /// After the heal, the leader still lists a node whose removal
    /// committed.
    RemovedNodeListed { node: NodeId, leader: NodeId },
    /// After the heal, a voter no host ever ran: it can never acknowledge,
    /// yet counts in every quorum.
    PhantomVoter { node: NodeId, leader: NodeId },
}

impl fmt::Display for MembershipViolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MembershipViolation::RemovedNodeLed {
                node,
                term,
                at_ns,
                removed_ns,
            } => write!(
                f,
                "n{node} became leader of term {term} at {}, after its removal committed at {}",
                fmt_time(*at_ns),
                fmt_time(*removed_ns)
            ),
            MembershipViolation::RemovedNodeKeptServing { node, removed_ns } => write!(
                f,
                "n{node} was removed at {} but still served on its old data dir after the \
                 faults healed (it never learned it was removed)",
                fmt_time(*removed_ns)
            ),
            MembershipViolation::ForeignNodeLed { node, term, at_ns } => write!(
                f,
                "n{node}, on another founding's data dir, became leader of term {term} at {}",
                fmt_time(*at_ns)
            ),
            MembershipViolation::ForeignNodeAdvanced {
                node,
                index,
                founding_commit,
                at_ns,
            } => write!(
                f,
                "n{node}, on another founding's data dir, reached index {index} at {} though \
                 its founding had committed only {founding_commit}: it was fed a log",
                fmt_time(*at_ns)
            ),
            MembershipViolation::RemovedNodeListed { node, leader } => write!(
                f,
                "after the heal, leader n{leader} still lists n{node}, whose removal committed"
            ),
            MembershipViolation::PhantomVoter { node, leader } => write!(
                f,
                "after the heal, leader n{leader} counts n{node} as a voter, but no node n{node} \
                 ever ran"
            ),
        }
    }
}

/// Checks `input` against this cluster's history (`main`) and the other
/// founding's (`foreign`).
pub fn check_membership(
    main: &RaftHistory,
    foreign: &RaftHistory,
    input: &MembershipInput,
) -> Vec<MembershipViolation> {
    let mut violations = Vec::new();
    for removed in &input.removed {
        check_removed(main, removed, &mut violations);
    }
    for node in &input.foreign {
        check_foreign(foreign, node, &mut violations);
    }
    if let Some(last) = &input.last {
        check_last(last, &input.removed, &mut violations);
    }
    violations
}

fn check_last(last: &FinalMembership, removed: &[RemovedNode], out: &mut Vec<MembershipViolation>) {
    let leader = last.leader;
    for r in removed {
        if last.members.contains(&r.node) {
            out.push(MembershipViolation::RemovedNodeListed {
                node: r.node,
                leader,
            });
        }
    }
    for &node in &last.voters {
        if !last.hosts.contains(&node) {
            out.push(MembershipViolation::PhantomVoter { node, leader });
        }
    }
}

fn check_removed(main: &RaftHistory, removed: &RemovedNode, out: &mut Vec<MembershipViolation>) {
    for rec in main.events.iter().filter(|r| r.at_ns > removed.removed_ns) {
        if let NodeObservation::BecameLeader { node, term } = rec.event {
            if node == removed.node {
                out.push(MembershipViolation::RemovedNodeLed {
                    node,
                    term,
                    at_ns: rec.at_ns,
                    removed_ns: removed.removed_ns,
                });
            }
        }
    }
    if removed.still_serving {
        out.push(MembershipViolation::RemovedNodeKeptServing {
            node: removed.node,
            removed_ns: removed.removed_ns,
        });
    }
}

fn check_foreign(foreign: &RaftHistory, swapped: &ForeignNode, out: &mut Vec<MembershipViolation>) {
    let after = foreign
        .events
        .iter()
        .filter(|r| r.at_ns >= swapped.swapped_ns && r.event.node() == swapped.node);
    for rec in after {
        let (node, at_ns) = (swapped.node, rec.at_ns);
        let index = match rec.event {
            NodeObservation::BecameLeader { term, .. } => {
                out.push(MembershipViolation::ForeignNodeLed { node, term, at_ns });
                continue;
            }
            NodeObservation::CommitIndex { index, .. } | NodeObservation::Applied { index, .. } => {
                index
            }
            _ => continue,
        };
        if index > swapped.founding_commit {
            out.push(MembershipViolation::ForeignNodeAdvanced {
                node,
                index,
                founding_commit: swapped.founding_commit,
                at_ns,
            });
            // One is enough: the rest of its log follows from it.
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::NodeObservation as O;

    fn history(events: Vec<(SimTimeNs, NodeObservation)>) -> RaftHistory {
        let mut h = RaftHistory::new();
        for (at, e) in events {
            h.record(at, e);
        }
        h
    }

    fn removed(node: NodeId, removed_ns: SimTimeNs, still_serving: bool) -> MembershipInput {
        MembershipInput {
            removed: vec![RemovedNode {
                node,
                removed_ns,
                still_serving,
            }],
            foreign: vec![],
            last: None,
        }
    }

    #[test]
    fn a_removed_node_that_led_before_its_removal_is_fine() {
        let main = history(vec![
            (10, O::BecameLeader { node: 2, term: 3 }),
            (50, O::BecameLeader { node: 1, term: 4 }),
        ]);
        let v = check_membership(&main, &RaftHistory::new(), &removed(2, 20, false));
        assert_eq!(v, vec![]);
    }

    #[test]
    fn a_removed_node_must_never_lead_again_nor_keep_serving() {
        let main = history(vec![
            (10, O::BecameLeader { node: 2, term: 3 }),
            (50, O::BecameLeader { node: 2, term: 5 }),
        ]);
        let v = check_membership(&main, &RaftHistory::new(), &removed(2, 20, true));
        assert!(
            matches!(
                v.as_slice(),
                [
                    MembershipViolation::RemovedNodeLed {
                        node: 2,
                        term: 5,
                        at_ns: 50,
                        ..
                    },
                    MembershipViolation::RemovedNodeKeptServing { node: 2, .. }
                ]
            ),
            "{v:?}"
        );
        assert!(v[0].to_string().contains("after its removal committed"));
    }

    fn foreign(node: NodeId) -> MembershipInput {
        MembershipInput {
            removed: vec![],
            foreign: vec![ForeignNode {
                node,
                swapped_ns: 100,
                founding_commit: 4,
            }],
            last: None,
        }
    }

    #[test]
    fn after_the_heal_no_removed_member_and_no_voter_that_never_ran() {
        let last = |members: Vec<NodeId>, voters: Vec<NodeId>| MembershipInput {
            last: Some(FinalMembership {
                leader: 1,
                members,
                voters,
                hosts: vec![1, 2, 3, 4],
            }),
            ..removed(2, 20, false)
        };
        let none = RaftHistory::new();
        // A learner that never ran is fine; a removed node gone is fine.
        let ok = last(vec![1, 3, 4, 100], vec![1, 3, 4]);
        assert_eq!(check_membership(&none, &none, &ok), vec![]);
        let bad = last(vec![1, 2, 3, 100], vec![1, 3, 100]);
        let v = check_membership(&none, &none, &bad);
        assert_eq!(
            v,
            vec![
                MembershipViolation::RemovedNodeListed { node: 2, leader: 1 },
                MembershipViolation::PhantomVoter {
                    node: 100,
                    leader: 1
                }
            ]
        );
        assert!(v[1].to_string().contains("no node n100 ever ran"));
    }

    #[test]
    fn a_foreign_node_alone_replays_its_founding_and_no_more() {
        // The founding's own life before the swap is not judged here.
        let other = history(vec![
            (10, O::BecameLeader { node: 3, term: 2 }),
            (20, O::CommitIndex { node: 3, index: 4 }),
            (150, O::Restarted { node: 3 }),
            (160, O::CommitIndex { node: 3, index: 4 }),
            (
                170,
                O::Applied {
                    node: 3,
                    index: 4,
                    term: 2,
                    entry_hash: 9,
                },
            ),
            // Another node of that founding is none of this check's
            // business.
            (180, O::CommitIndex { node: 1, index: 9 }),
        ]);
        let v = check_membership(&RaftHistory::new(), &other, &foreign(3));
        assert_eq!(v, vec![]);
    }

    #[test]
    fn a_foreign_node_that_leads_or_is_fed_a_log_is_caught() {
        let other = history(vec![
            (150, O::BecameLeader { node: 3, term: 7 }),
            (160, O::CommitIndex { node: 3, index: 5 }),
            (170, O::CommitIndex { node: 3, index: 6 }),
        ]);
        let v = check_membership(&RaftHistory::new(), &other, &foreign(3));
        assert!(
            matches!(
                v.as_slice(),
                [
                    MembershipViolation::ForeignNodeLed {
                        node: 3,
                        term: 7,
                        ..
                    },
                    MembershipViolation::ForeignNodeAdvanced {
                        node: 3,
                        index: 5,
                        founding_commit: 4,
                        ..
                    }
                ]
            ),
            "{v:?}"
        );
        assert!(v[1].to_string().contains("it was fed a log"));
    }
}
