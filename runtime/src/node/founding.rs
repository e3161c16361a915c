//! The founding nonce (issue 14): the first leader of a cluster draws a
//! random number and records it in the membership, which makes the cluster
//! id (`tag.nonce`, see `crate::cluster_id`) differ between any two
//! foundings, even with identical flags. Founders need no outside help to
//! agree on it: it is one replicated entry. Also the checks that keep a
//! node out of another founding: at start (a joiner configured with a
//! founded id whose stored log holds another nonce) and when a node asks
//! to be added.

use deadbolt_core::raft::Membership;

use super::handle::ProposeError;
use super::StartError;
use crate::cluster_id::ClusterId;

/// The membership with a founding nonce, if `membership` has none yet.
pub(super) fn with_nonce(
    membership: &Membership,
    draw: impl FnOnce() -> u64,
) -> Option<Membership> {
    match membership.founding_nonce() {
        Some(_) => None,
        None => Some(membership.with_founding_nonce(draw())),
    }
}

/// A joining node learned its cluster id (with nonce) from the cluster it
/// joined; its stored log must not hold another founding's nonce.
pub(super) fn check_stored(configured: &ClusterId, stored: &Membership) -> Result<(), StartError> {
    match (configured.nonce(), stored.founding_nonce()) {
        (Some(want), Some(found)) if want != found => Err(StartError::OtherFounding {
            configured: configured.to_string(),
            stored: configured.founded(found).to_string(),
        }),
        _ => Ok(()),
    }
}

/// A node asking to be added says which cluster its data dir belongs to.
pub(super) fn check_joiner(ours: &ClusterId, theirs: Option<&str>) -> Result<(), ProposeError> {
    let Some(theirs) = theirs else {
        return Ok(());
    };
    if ours.compatible(&ClusterId::parse(theirs)) {
        return Ok(());
    }
    Err(ProposeError::InvalidMembership {
        message: format!(
            "the joining node's data dir belongs to cluster {theirs}, this is cluster {ours}: \
             another founding; start it on an empty data dir to join this cluster"
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_nonce_is_drawn_once() {
        let none = Membership::default();
        let next = with_nonce(&none, || 7).expect("drawn");
        assert_eq!(next.founding_nonce(), Some(7));
        assert_eq!(with_nonce(&next, || 8), None);
    }

    #[test]
    fn another_founding_is_refused_naming_both_ids() {
        let ours = ClusterId::parse("t.0000000000000001");
        assert!(check_joiner(&ours, None).is_ok());
        assert!(check_joiner(&ours, Some("t")).is_ok());
        assert!(check_joiner(&ours, Some("t.0000000000000001")).is_ok());
        let Err(ProposeError::InvalidMembership { message }) =
            check_joiner(&ours, Some("t.0000000000000002"))
        else {
            panic!("refused");
        };
        assert!(message.contains("t.0000000000000002") && message.contains("t.0000000000000001"));
        let stored = Membership::default().with_founding_nonce(2);
        assert!(check_stored(&ClusterId::parse("t"), &stored).is_ok());
        assert!(check_stored(&ours, &Membership::default()).is_ok());
        let error = check_stored(&ours, &stored).expect_err("other founding");
        let text = error.to_string();
        assert!(
            text.contains("t.0000000000000001") && text.contains("t.0000000000000002"),
            "{text}"
        );
    }
}
