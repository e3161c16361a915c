//! The operator's side of the reconfiguration episode (issue 14 item 6):
//! tasks that add a joining node, remove a voter (retiring its host once
//! the removal committed) and change a moved node's peer address, each
//! through whichever member runs at that attempt, asked again after
//! transient failures as a person (or `serve --join`) would, and bounded so
//! that a run always ends. Refusals are part of the game; what the cluster
//! does with the changes is judged by the checkers.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use deadbolt_runtime::node::{Joiner, NodeHandle, ProposeError};
use madsim::runtime::Handle;

use super::host::Incarnation;
use super::observe::Views;
use super::recorder::Shared;
use crate::history::NodeId;

/// One attempt of a membership call (the handle retries inside it).
const ATTEMPT_MAX: Duration = Duration::from_secs(3);
/// Pause between two attempts.
const ATTEMPT_PAUSE: Duration = Duration::from_millis(300);
/// How long a join keeps asking to be added (the server's `JOIN_DEADLINE`
/// is of the same order).
const JOIN_MAX: Duration = Duration::from_secs(15);
/// How long the operator keeps asking to promote a joiner (the leader
/// promotes it by itself once it caught up; asking does no harm).
const PROMOTE_MAX: Duration = Duration::from_secs(20);
/// How long a removal is asked for.
const REMOVE_MAX: Duration = Duration::from_secs(10);
/// How long a moved node's new address is asked for: past the end of the
/// faults, since a cluster that lost a second voter cannot commit it until
/// the heal, and the moved node is unreachable until it commits.
const MOVE_MAX: Duration = Duration::from_secs(40);

/// The hosts' current incarnations (node id, state), in id order: each
/// attempt asks the first member that runs a node.
pub(crate) struct Members(pub(crate) Vec<(NodeId, Arc<Mutex<Incarnation>>)>);

impl Members {
    /// A running node's handle, other than `not`'s when another runs.
    fn pick(&self, not: NodeId) -> Option<NodeHandle> {
        let running = |id: &NodeId, c: &Arc<Mutex<Incarnation>>| {
            let c = c.lock().unwrap_or_else(|e| e.into_inner());
            c.handle.clone().map(|h| (*id, h))
        };
        let handles: Vec<(NodeId, NodeHandle)> =
            self.0.iter().filter_map(|(id, c)| running(id, c)).collect();
        handles
            .iter()
            .find(|(id, _)| *id != not)
            .or(handles.first())
            .map(|(_, h)| h.clone())
    }
}

/// What retiring a removed node's host takes.
pub(crate) struct Retire {
    pub(crate) madsim_id: madsim::task::NodeId,
    pub(crate) current: Arc<Mutex<Incarnation>>,
    pub(crate) views: Views,
}

/// Asks `members` to add `joiner` until added (or refused for good), then
/// to promote it until it is a voter, as `serve --join` and an operator
/// would. `serve --join` asks from the joining process: once its host is
/// retired nothing asks any more (simulation seed 1894: an add retried
/// after the answer to an earlier one was lost re-added n4 after its
/// removal had committed and its host was retired).
pub(crate) fn spawn_join(
    members: Members,
    joiner: Joiner,
    joining: Arc<Mutex<Incarnation>>,
    rec: Shared,
) {
    tokio::spawn(async move {
        let id = joiner.id;
        let asked = ask_until(&members, id, JOIN_MAX, OnConflict::GiveUp, |h| {
            let joiner = joiner.clone();
            let retired = joining.lock().unwrap_or_else(|e| e.into_inner()).retired;
            async move {
                if retired {
                    return Err(ProposeError::Stopped {
                        reason: "the joining host was retired".into(),
                    });
                }
                h.add(joiner, ATTEMPT_MAX).await
            }
        })
        .await;
        rec.lock()
            .harness(format!("n{id} join: {}", outcome(&asked)));
        if asked.is_ok() {
            let promote = |h: NodeHandle| async move { h.promote_member(id, ATTEMPT_MAX).await };
            let promoted =
                ask_until(&members, id, PROMOTE_MAX, OnConflict::AskAgain, promote).await;
            rec.lock()
                .harness(format!("n{id} promotion: {}", outcome(&promoted)));
        }
    });
}

/// Asks `members` to remove voter `id` until committed or refused; once
/// committed, records it for the membership checker and retires the host
/// if asked to.
pub(crate) fn spawn_remove(members: Members, id: NodeId, retire: Option<Retire>, rec: Shared) {
    tokio::spawn(async move {
        let remove = |h: NodeHandle| async move { h.remove_member(id, ATTEMPT_MAX).await };
        let removed = match ask_until(&members, id, REMOVE_MAX, OnConflict::AskAgain, remove).await
        {
            // It was a voter when the operator started: an earlier attempt
            // whose answer was lost removed it.
            Err(ProposeError::UnknownMember { .. }) => Ok(()),
            other => other,
        };
        let mut r = rec.lock();
        r.harness(format!("removal of n{id}: {}", outcome(&removed)));
        if removed.is_err() {
            return;
        }
        let now = r.now_ns();
        r.removals.insert(id, now);
        drop(r);
        if let Some(retire) = retire {
            retire_host(id, retire, &rec);
        }
    });
}

/// Switches a removed node's host off for good.
fn retire_host(id: NodeId, retire: Retire, rec: &Shared) {
    {
        let mut c = retire.current.lock().unwrap_or_else(|e| e.into_inner());
        c.retired = true;
        c.handle = None;
        c.graceful = None;
    }
    Handle::current().kill(retire.madsim_id);
    retire.views.forget(id);
    rec.lock().event(crate::timeline::TimelineEvent::Down {
        node: id,
        why: "retired after its removal".into(),
    });
}

/// Asks `members` to record `peer_addr` as node `id`'s peer address until
/// committed.
pub(crate) fn spawn_move(members: Members, id: NodeId, peer_addr: String, rec: Shared) {
    tokio::spawn(async move {
        let moved = ask_until(&members, id, MOVE_MAX, OnConflict::AskAgain, |h| {
            let peer_addr = peer_addr.clone();
            async move {
                h.set_member_addrs(id, Some(peer_addr), None, ATTEMPT_MAX)
                    .await
            }
        })
        .await;
        rec.lock()
            .harness(format!("n{id} address change: {}", outcome(&moved)));
    });
}

/// Whether a 409 ends the asking: a join refused stays refused (the
/// server's `--join` stops there too), while a promotion or removal refused
/// now (not caught up, quorum not reachable) may pass once faults heal.
#[derive(Clone, Copy, PartialEq, Eq)]
enum OnConflict {
    GiveUp,
    AskAgain,
}

/// Calls `call` on a running member (preferably not `about`) until it
/// succeeds, is refused for good (404, or 409 with `GiveUp`) or `max`
/// passes.
async fn ask_until<F, Fut>(
    members: &Members,
    about: NodeId,
    max: Duration,
    on_conflict: OnConflict,
    mut call: F,
) -> Result<(), ProposeError>
where
    F: FnMut(NodeHandle) -> Fut,
    Fut: std::future::Future<Output = Result<(), ProposeError>>,
{
    let until = tokio::time::Instant::now() + max;
    let mut last = ProposeError::Timeout;
    while tokio::time::Instant::now() < until {
        if let Some(handle) = members.pick(about) {
            match call(handle).await {
                Ok(()) => return Ok(()),
                Err(e @ ProposeError::UnknownMember { .. }) => return Err(e),
                Err(e @ ProposeError::InvalidMembership { .. })
                    if on_conflict == OnConflict::GiveUp =>
                {
                    return Err(e)
                }
                Err(e) => last = e,
            }
        }
        tokio::time::sleep(ATTEMPT_PAUSE).await;
    }
    Err(last)
}

fn outcome(result: &Result<(), ProposeError>) -> String {
    match result {
        Ok(()) => "done".into(),
        Err(e) => format!("gave up ({e})"),
    }
}
