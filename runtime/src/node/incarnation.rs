//! The membership rules about incarnations (the random id each data dir
//! draws when it is created): which `AddMember` requests a node accepts, and
//! which claimed incarnations a leader records in the membership. The
//! transport enforces what is recorded (`transport::IncarnationBook`).

use deadbolt_core::raft::{Membership, NodeId};

use super::handle::ProposeError;
use crate::transport::IncarnationBook;

/// Whether member `id` may be added at `peer_addr` by a request carrying
/// `incarnation` (None: an operator's request, which cannot tell a retry
/// from a new data dir). A new id is always fine; an existing one only as
/// a retry of the same join.
pub(super) fn check_add_member(
    membership: &Membership,
    id: NodeId,
    incarnation: Option<u64>,
) -> Result<(), ProposeError> {
    let Some(member) = membership.members.get(&id) else {
        return Ok(());
    };
    let recorded = membership.incarnation(id);
    let refuse = |why: String| {
        Err(ProposeError::InvalidMembership {
            message: format!(
                "{why}; to give node {id} a new data dir, remove it first \
                 (DELETE /v1/cluster/members/{id}), then join again"
            ),
        })
    };
    match (incarnation, recorded) {
        (Some(wanted), Some(recorded)) if wanted == recorded => Ok(()),
        (Some(wanted), Some(recorded)) => refuse(format!(
            "node {id} is already a member with incarnation {recorded:#018x}; this request \
             is for incarnation {wanted:#018x}, another data dir"
        )),
        (_, _) if member.voter => refuse(format!(
            "node {id} is already a voter{}",
            if incarnation.is_some() {
                " and its incarnation is not recorded yet, so a retried join cannot be told \
                 from a new data dir"
            } else {
                ""
            }
        )),
        // A learner not recorded yet: a retried join (the leader
        // treats the same address as a no-op).
        (_, _) => Ok(()),
    }
}

/// The membership a leader should propose to record the incarnations that
/// members claimed in accepted handshakes (and its own), if any member is
/// not recorded yet. First claim wins: once recorded, another incarnation
/// under that id is refused until the member is removed.
pub(super) fn with_claimed_incarnations(
    membership: &Membership,
    book: &IncarnationBook,
    me: (NodeId, u64),
) -> Option<Membership> {
    let unrecorded = book.unrecorded(membership, me);
    if unrecorded.is_empty() {
        return None;
    }
    let mut next = membership.clone();
    next.incarnations.extend(unrecorded);
    Some(next)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use deadbolt_core::raft::Member;

    use super::*;

    fn membership() -> Membership {
        let member = |voter| Member {
            voter,
            peer_addr: "p:1".into(),
            api_addr: String::new(),
        };
        Membership {
            members: BTreeMap::from([(1, member(true)), (2, member(true)), (3, member(false))]),
            incarnations: BTreeMap::from([(1, 11)]),
        }
    }

    fn refused(result: Result<(), ProposeError>) -> String {
        match result {
            Err(ProposeError::InvalidMembership { message }) => message,
            other => panic!("expected a 409 refusal, got {other:?}"),
        }
    }

    #[test]
    fn a_member_id_is_refused_unless_it_is_the_same_data_dir() {
        let m = membership();
        assert_eq!(check_add_member(&m, 4, None), Ok(()), "a new id");
        assert_eq!(check_add_member(&m, 1, Some(11)), Ok(()), "a retried join");
        let message = refused(check_add_member(&m, 1, Some(12)));
        assert!(
            message.contains("0x000000000000000b") && message.contains("0x000000000000000c"),
            "{message}"
        );
        assert!(message.contains("remove it first"), "{message}");
        assert!(refused(check_add_member(&m, 1, None)).contains("already a voter"));
        assert!(refused(check_add_member(&m, 2, Some(5))).contains("not recorded yet"));
        assert_eq!(
            check_add_member(&m, 3, Some(5)),
            Ok(()),
            "a learner's retry"
        );
        assert_eq!(check_add_member(&m, 3, None), Ok(()));
    }

    #[test]
    fn a_leader_records_what_members_claimed() {
        let m = membership();
        let book = IncarnationBook::new();
        book.set_recorded(&m);
        assert_eq!(with_claimed_incarnations(&m, &book, (1, 11)), None);
        book.claimed(2, 22);
        let next = with_claimed_incarnations(&m, &book, (1, 11)).expect("2 to record");
        assert_eq!(next.incarnations, BTreeMap::from([(1, 11), (2, 22)]));
        assert_eq!(next.members, m.members, "only incarnations change");
    }
}
