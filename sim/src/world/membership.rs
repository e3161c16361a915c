//! Membership changes as fault actions (issue 14): an operator adds a
//! member that never starts, asks to promote it and removes it, through a
//! node's handle, while the other faults run. The promotion must be
//! refused: a learner that never acknowledged anything is never a voter
//! (before issue 14 it was promoted at once, and a one-node cluster lost
//! its quorum for good).

use std::time::Duration;

use deadbolt_runtime::node::NodeHandle;

use crate::fault::FaultAction;
use crate::history::NodeId;

/// How long one membership request may take (retries included): bounded,
/// so a cluster without a leader does not hold a task forever.
const MEMBERSHIP_CALL_MAX: Duration = Duration::from_secs(3);

/// Where the phantom member claims to listen: an address no host has.
fn phantom_addrs(id: NodeId) -> (String, String) {
    (format!("10.99.0.{id}:7071"), format!("10.99.0.{id}:7070"))
}

/// Runs a membership action on its own task (a slow cluster must not hold
/// up the schedule). Refusals and timeouts are part of the game, except a
/// promotion of a node that never started, which is a violation.
pub(super) fn spawn_change(handle: NodeHandle, action: FaultAction) {
    tokio::spawn(async move {
        match action {
            FaultAction::AddMember { id } => {
                let (peer_addr, api_addr) = phantom_addrs(id);
                let _ = handle
                    .add_member(id, peer_addr, api_addr, None, MEMBERSHIP_CALL_MAX)
                    .await;
            }
            FaultAction::PromoteMember { id } => {
                let promoted = handle.promote_member(id, MEMBERSHIP_CALL_MAX).await;
                assert!(
                    promoted.is_err(),
                    "member n{id} never started, yet it was promoted to voter"
                );
            }
            FaultAction::RemoveMember { id } => {
                let _ = handle.remove_member(id, MEMBERSHIP_CALL_MAX).await;
            }
            other => unreachable!("not a membership action: {other}"),
        }
    });
}
