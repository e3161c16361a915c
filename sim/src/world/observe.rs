//! Raft observations of each node. The node's observer hook
//! ([`node_observer`]) records into the `RaftHistory` synchronously inside
//! the Raft actor: leaders per term, every commit-index advance, every
//! log truncation and appended entry, every applied entry with its hash,
//! every snapshot restore. A status poll every
//! 50 ms still keeps the harness's view of each node (who leads, for the
//! fault executor), but records nothing: a poll sees the node late and
//! would only repeat what the hook said.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use deadbolt_core::raft::Role;
use deadbolt_runtime::node::{NodeEvent, NodeObserver};

use super::host::{Host, Incarnation};
use super::recorder::Shared;
use crate::history::{LogIndex, NodeId, NodeObservation, SimTimeNs, Term};
use crate::timeline::{RoleMark, TimelineEvent};

/// How often each node is asked for its status.
pub(crate) const POLL_INTERVAL: Duration = Duration::from_millis(50);
/// A node that does not answer its status within this is paused, stuck or
/// dead; the next poll tries again.
const POLL_TIMEOUT: Duration = Duration::from_millis(200);

/// What the harness last saw of a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct NodeView {
    pub(crate) role: RoleMark,
    pub(crate) term: Term,
    pub(crate) commit_index: LogIndex,
    pub(crate) leader: Option<NodeId>,
    pub(crate) at_ns: SimTimeNs,
}

#[derive(Clone, Default)]
pub(crate) struct Views(Arc<Mutex<BTreeMap<NodeId, NodeView>>>);

impl Views {
    pub(crate) fn get(&self) -> BTreeMap<NodeId, NodeView> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Forget a node's view (it crashed or restarted).
    pub(crate) fn forget(&self, node: NodeId) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&node);
    }

    /// The node that leads in the highest term seen, if any.
    pub(crate) fn leader(&self) -> Option<NodeId> {
        self.get()
            .iter()
            .filter(|(_, v)| v.role == RoleMark::Leader)
            .max_by_key(|(_, v)| v.term)
            .map(|(n, _)| *n)
    }
}

fn mark(role: Role) -> RoleMark {
    match role {
        Role::Leader => RoleMark::Leader,
        Role::Follower => RoleMark::Follower,
        Role::Candidate | Role::PreCandidate => RoleMark::Candidate,
    }
}

/// Polls `host` forever (the supervisor drops the task at the end).
pub(crate) async fn poll_node(
    id: NodeId,
    current: Arc<Mutex<Incarnation>>,
    views: Views,
    rec: Shared,
) {
    let mut interval = tokio::time::interval(POLL_INTERVAL);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        let handle = current
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .handle
            .clone();
        let Some(handle) = handle else {
            continue;
        };
        let Ok(Ok(status)) = tokio::time::timeout(POLL_TIMEOUT, handle.status()).await else {
            continue;
        };
        let role = mark(status.role);
        let at_ns = rec.now_ns();
        views.0.lock().unwrap_or_else(|e| e.into_inner()).insert(
            id,
            NodeView {
                role,
                term: status.term,
                commit_index: status.commit_index,
                leader: status.leader,
                at_ns,
            },
        );
    }
}

/// The observer given to every incarnation of node `id`: translates the
/// node's events into `RaftHistory` observations as `lib.rs` prescribes
/// (`Restarted` is recorded by the fault executor before the restart, so a
/// new incarnation's events follow it), filed under the founding its data
/// dir belongs to now (`founding`, the host's label): one history per
/// founding.
pub(crate) fn node_observer(id: NodeId, rec: Shared, founding: Arc<AtomicU64>) -> NodeObserver {
    Arc::new(move |event: NodeEvent| {
        let founding = founding.load(Ordering::SeqCst);
        let mut rec = rec.lock();
        let observation = match event {
            NodeEvent::Started => return,
            NodeEvent::RoleChanged { role, term, .. } => {
                let role = mark(role);
                if role != RoleMark::Leader {
                    rec.event(TimelineEvent::Role {
                        node: id,
                        role,
                        term,
                    });
                    return;
                }
                // Also puts the leader on the timeline.
                NodeObservation::BecameLeader { node: id, term }
            }
            NodeEvent::CommitIndex(index) => NodeObservation::CommitIndex { node: id, index },
            NodeEvent::Truncated { from } => NodeObservation::Truncated { node: id, from },
            NodeEvent::Appended {
                index,
                term,
                entry_hash,
            } => NodeObservation::Appended {
                node: id,
                index,
                term,
                entry_hash,
            },
            NodeEvent::Applied {
                index,
                term,
                entry_hash,
            } => NodeObservation::Applied {
                node: id,
                index,
                term,
                entry_hash,
            },
            NodeEvent::SnapshotRestored {
                last_index,
                last_term,
            } => NodeObservation::SnapshotRestored {
                node: id,
                last_index,
                last_term,
            },
        };
        rec.observe_in(founding, observation);
    })
}

/// Spawns a poller per host on the supervisor.
pub(crate) fn spawn_pollers(
    hosts: &[Host],
    views: &Views,
    rec: &Shared,
) -> Vec<tokio::task::JoinHandle<()>> {
    hosts
        .iter()
        .map(|h| {
            tokio::spawn(poll_node(
                h.id,
                h.current.clone(),
                views.clone(),
                rec.clone(),
            ))
        })
        .collect()
}
