//! Requests on their way to the leader's replica: the peer messages that
//! carry a follower's request to the leader and its answer back, the
//! leader's side (proposing on the replica, for itself or on a follower's
//! behalf) and how the replica's refusals become a [`ProposeError`].

use deadbolt_core::lock::{Command, Envelope, Idempotency};
use deadbolt_core::raft::{
    self, LogIndex, MembershipError, Message, NodeId, Replica, Term, TransferError,
};
use serde::{Deserialize, Serialize};

use super::handle::ProposeError;

/// Everything that crosses the peer links: Raft itself, plus the
/// forwarding of client writes and admin requests to the leader.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum PeerMessage {
    Raft(Message),
    /// A follower asks the leader to propose on its behalf.
    Forward {
        request_id: u64,
        request: Forwarded,
    },
    /// Where the leader put the forwarded request: `Some((term, index))`
    /// for a log entry (the follower answers when it applies that index),
    /// `None` when it was done at once (leadership transfer started).
    ForwardReply {
        request_id: u64,
        result: Result<Option<(Term, LogIndex)>, ProposeError>,
    },
    /// The leader tells members its peer address, so a joining node that
    /// knows nobody yet can answer it.
    Announce {
        peer_addr: String,
    },
}

/// A request only the leader can serve.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum Forwarded {
    Propose {
        command: Command,
        idempotency: Option<Idempotency>,
    },
    AddMember {
        id: NodeId,
        peer_addr: String,
        api_addr: String,
    },
    RemoveMember {
        id: NodeId,
    },
    TransferLeader {
        to: NodeId,
    },
    /// Publish a member's own API address (voters unchanged).
    SetApiAddr {
        id: NodeId,
        api_addr: String,
    },
    /// Make a learner a voter (`POST /v1/cluster/members/{id}/promote`).
    Promote {
        id: NodeId,
    },
    /// Change a member's addresses (`PATCH /v1/cluster/members/{id}`).
    SetAddrs {
        id: NodeId,
        peer_addr: Option<String>,
        api_addr: Option<String>,
    },
}

/// The leader's side: `Some((term, index))` of the entry that will answer
/// the request, `None` when it was done at once (nothing to change, or a
/// leadership transfer started).
pub(super) fn serve(
    replica: &mut Replica,
    now_ms: u64,
    request: Forwarded,
) -> Result<Option<(Term, LogIndex)>, ProposeError> {
    match request {
        Forwarded::Propose {
            command,
            idempotency,
        } => propose(replica, now_ms, command, idempotency).map(Some),
        Forwarded::AddMember {
            id,
            peer_addr,
            api_addr,
        } => add_member(replica, id, peer_addr, api_addr),
        Forwarded::RemoveMember { id } => replica
            .remove_member(id)
            .map(Some)
            .map_err(membership_error),
        Forwarded::TransferLeader { to } => transfer(replica, to).map(|()| None),
        Forwarded::SetApiAddr { id, api_addr } => set_addrs(replica, id, None, Some(api_addr)),
        Forwarded::Promote { id } => promote(replica, id),
        Forwarded::SetAddrs {
            id,
            peer_addr,
            api_addr,
        } => set_addrs(replica, id, peer_addr, api_addr),
    }
}

/// Proposes a command; the envelope carries the leader's cluster time
/// (`ClusterTime`), never its wall clock.
pub(super) fn propose(
    replica: &mut Replica,
    now_ms: u64,
    command: Command,
    idempotency: Option<Idempotency>,
) -> Result<(Term, LogIndex), ProposeError> {
    let envelope = Envelope {
        now_ms,
        idempotency,
        command,
    };
    replica.propose(envelope.to_bytes()).map_err(propose_error)
}

fn add_member(
    replica: &mut Replica,
    id: NodeId,
    peer_addr: String,
    api_addr: String,
) -> Result<Option<(Term, LogIndex)>, ProposeError> {
    if let Some(member) = replica.membership().members.get(&id) {
        if member.peer_addr == peer_addr {
            // Already added (a retried join): nothing to do.
            return Ok(None);
        }
    }
    replica
        .add_learner(id, peer_addr, api_addr)
        .map(Some)
        .map_err(membership_error)
}

/// Promotes a learner; a voter already is one (a retried promotion).
fn promote(replica: &mut Replica, id: NodeId) -> Result<Option<(Term, LogIndex)>, ProposeError> {
    if replica.membership().is_voter(id) {
        return Ok(None);
    }
    replica.promote(id).map(Some).map_err(membership_error)
}

/// Replaces a member's peer and/or API address (voters unchanged); nothing
/// to do when they are already so.
fn set_addrs(
    replica: &mut Replica,
    id: NodeId,
    peer_addr: Option<String>,
    api_addr: Option<String>,
) -> Result<Option<(Term, LogIndex)>, ProposeError> {
    let mut next = replica.membership().clone();
    let Some(member) = next.members.get_mut(&id) else {
        return Err(ProposeError::UnknownMember { id });
    };
    let before = member.clone();
    if let Some(peer_addr) = peer_addr {
        member.peer_addr = peer_addr;
    }
    if let Some(api_addr) = api_addr {
        member.api_addr = api_addr;
    }
    if *member == before {
        return Ok(None);
    }
    replica
        .propose_membership(next)
        .map(Some)
        .map_err(membership_error)
}

fn transfer(replica: &mut Replica, to: NodeId) -> Result<(), ProposeError> {
    replica
        .transfer_leadership(to)
        .map_err(|error| match error {
            TransferError::NotLeader { leader_hint } => {
                unavailable(leader_hint, &error.to_string())
            }
            TransferError::NotVoter(_) => ProposeError::Rejected {
                message: error.to_string(),
            },
        })
}

/// Certainly not applied: safe to retry anywhere.
pub(super) fn unavailable(leader: Option<NodeId>, reason: &str) -> ProposeError {
    ProposeError::Unavailable {
        leader,
        reason: reason.to_string(),
    }
}

fn propose_error(error: raft::ProposalRefused) -> ProposeError {
    match error {
        raft::ProposalRefused::NotLeader { leader_hint } => {
            unavailable(leader_hint, &error.to_string())
        }
        raft::ProposalRefused::TransferInProgress | raft::ProposalRefused::Backpressure { .. } => {
            unavailable(None, &error.to_string())
        }
        raft::ProposalRefused::TooLarge { .. } | raft::ProposalRefused::BadBatchSize { .. } => {
            ProposeError::Rejected {
                message: error.to_string(),
            }
        }
    }
}

fn membership_error(error: MembershipError) -> ProposeError {
    match error {
        MembershipError::NotLeader { leader_hint } => unavailable(leader_hint, &error.to_string()),
        MembershipError::ChangeInProgress
        | MembershipError::LeaderTermNotCommitted
        | MembershipError::TransferInProgress => unavailable(None, &error.to_string()),
        MembershipError::Propose(inner) => propose_error(inner),
        MembershipError::UnknownMember(id) => ProposeError::UnknownMember { id },
        // Changes that would endanger the cluster: 409.
        MembershipError::NoVoters
        | MembershipError::WouldLoseQuorum { .. }
        | MembershipError::NotCaughtUp { .. } => ProposeError::InvalidMembership {
            message: error.to_string(),
        },
        MembershipError::MoreThanOneVoterChanged | MembershipError::AlreadyMember(_) => {
            ProposeError::Rejected {
                message: error.to_string(),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use deadbolt_core::raft::{Member, Membership, RestoredState, Role};

    fn replica(campaign: bool) -> Replica {
        let mut membership = Membership::default();
        membership.members.insert(
            1,
            Member {
                voter: true,
                peer_addr: "a:1".into(),
                api_addr: String::new(),
            },
        );
        let mut replica = Replica::new(
            raft::Config::new(1),
            RestoredState::default(),
            membership,
            7,
            0,
        )
        .expect("valid config");
        if campaign {
            replica.campaign_now();
        }
        // Everything is durable at once; apply what commits.
        while replica.has_ready() {
            let ready = replica.ready();
            if ready.persist_seq > 0 {
                replica.persisted(ready.persist_seq);
            }
            if let Some(last) = ready.committed.last() {
                replica.applied(last.index);
            }
        }
        replica
    }

    fn put() -> Forwarded {
        Forwarded::Propose {
            command: Command::KvPut(deadbolt_core::lock::KvWrite {
                key: "k".into(),
                value: "v".into(),
                fence: None,
            }),
            idempotency: None,
        }
    }

    #[test]
    fn the_leader_proposes_and_answers_no_ops_at_once() {
        let mut leader = replica(true);
        assert_eq!(leader.role(), Role::Leader);
        let now_ms = 5;
        let (term, index) = serve(&mut leader, now_ms, put())
            .expect("proposed")
            .expect("an entry");
        assert_eq!((term, index), (leader.term(), leader.status().last_index));
        // A retried join of a known member, and an address already
        // published, change nothing.
        let again = Forwarded::AddMember {
            id: 1,
            peer_addr: "a:1".into(),
            api_addr: "x".into(),
        };
        assert_eq!(serve(&mut leader, now_ms, again), Ok(None));
        let same = Forwarded::SetApiAddr {
            id: 1,
            api_addr: String::new(),
        };
        assert_eq!(serve(&mut leader, now_ms, same), Ok(None));
        let stranger = Forwarded::SetApiAddr {
            id: 9,
            api_addr: "x".into(),
        };
        assert_eq!(
            serve(&mut leader, now_ms, stranger),
            Err(ProposeError::UnknownMember { id: 9 })
        );
        // Promoting a voter is a retried promotion; an unknown id is 404.
        assert_eq!(
            serve(&mut leader, now_ms, Forwarded::Promote { id: 1 }),
            Ok(None)
        );
        assert_eq!(
            serve(&mut leader, now_ms, Forwarded::Promote { id: 9 }),
            Err(ProposeError::UnknownMember { id: 9 })
        );
        let moved = Forwarded::SetAddrs {
            id: 1,
            peer_addr: Some("b:2".into()),
            api_addr: None,
        };
        assert!(matches!(serve(&mut leader, now_ms, moved), Ok(Some(_))));
        assert_eq!(leader.membership().members[&1].peer_addr, "b:2");
    }

    #[test]
    fn a_follower_refuses_with_a_retryable_error() {
        let mut follower = replica(false);
        let now_ms = 5;
        assert!(matches!(
            serve(&mut follower, now_ms, put()),
            Err(ProposeError::Unavailable { .. })
        ));
        assert!(matches!(
            serve(&mut follower, now_ms, Forwarded::TransferLeader { to: 1 }),
            Err(ProposeError::Unavailable { .. })
        ));
    }

    #[test]
    fn refusals_map_to_retry_or_reject() {
        let not_leader = raft::ProposalRefused::NotLeader {
            leader_hint: Some(3),
        };
        assert!(matches!(
            propose_error(not_leader),
            ProposeError::Unavailable {
                leader: Some(3),
                ..
            }
        ));
        assert!(matches!(
            propose_error(raft::ProposalRefused::TooLarge { bytes: 9, max: 1 }),
            ProposeError::Rejected { .. }
        ));
        assert!(matches!(
            membership_error(MembershipError::ChangeInProgress),
            ProposeError::Unavailable { leader: None, .. }
        ));
        assert!(matches!(
            membership_error(MembershipError::NoVoters),
            ProposeError::InvalidMembership { .. }
        ));
        assert_eq!(
            membership_error(MembershipError::UnknownMember(4)),
            ProposeError::UnknownMember { id: 4 }
        );
    }
}
