//! The hook through which a test harness watches a node's Raft actor
//! (the simulation's Raft checker): the events, the observer type, the
//! entry hash every node agrees on, and the actor's side ([`Observer`]),
//! which builds an event only when someone listens.

use std::sync::Arc;

use deadbolt_core::raft::{self, LogIndex, NodeId, Role, Term};

/// What the Raft actor reports to a [`NodeObserver`] (the simulation's Raft
/// checker): plain data, in the order it happened on this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeEvent {
    /// The actor is running (first event of every start).
    Started,
    /// Role, term or known leader changed.
    RoleChanged {
        role: Role,
        term: Term,
        leader: Option<NodeId>,
    },
    /// The commit index advanced to this index (reported before the entries
    /// up to it are applied).
    CommitIndex(LogIndex),
    /// A committed entry was applied (no-op and membership entries too).
    /// `entry_hash` is [`entry_hash`] of the entry: the same on every node.
    Applied {
        index: LogIndex,
        term: Term,
        entry_hash: u64,
    },
    /// The node deletes its log entries from `from` on (a conflict with
    /// the leader's log), before the `Appended` entries that replace them.
    Truncated { from: LogIndex },
    /// The node appends this entry to its log (handed to storage; not
    /// necessarily durable or committed).
    Appended {
        index: LogIndex,
        term: Term,
        entry_hash: u64,
    },
    /// The state machine was replaced by a snapshot (restored from storage
    /// at start, or installed from the leader); the next `Applied` is
    /// `last_index + 1`.
    SnapshotRestored {
        last_index: LogIndex,
        last_term: Term,
    },
}

/// Called synchronously inside the Raft actor: it must not block (take a
/// short lock at most) and cannot await.
pub type NodeObserver = Arc<dyn Fn(NodeEvent) + Send + Sync>;

/// FNV-1a (64-bit) of the entry's postcard encoding: deterministic and the
/// same on every node for the same entry, with no dependency on a hasher's
/// random keys.
pub fn entry_hash(entry: &raft::Entry) -> u64 {
    deadbolt_core::codec::encoded_hash(entry)
}

/// The actor's side of the hook.
pub(super) struct Observer {
    observer: Option<NodeObserver>,
    /// The commit index last reported.
    reported_commit: LogIndex,
}

impl Observer {
    pub(super) fn new(observer: Option<NodeObserver>) -> Self {
        Self {
            observer,
            reported_commit: 0,
        }
    }

    /// Reports to the observer, if any; `event` is only built when there is
    /// one, so a node without an observer pays a branch.
    pub(super) fn observe(&self, event: impl FnOnce() -> NodeEvent) {
        if let Some(observer) = &self.observer {
            observer(event());
        }
    }

    /// Reports `commit` if it is past the last commit index reported.
    pub(super) fn commit_index(&mut self, commit: LogIndex) {
        if self.observer.is_some() && commit > self.reported_commit {
            self.reported_commit = commit;
            self.observe(|| NodeEvent::CommitIndex(commit));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use deadbolt_core::raft::{Entry, EntryPayload};
    use std::sync::Mutex;

    #[test]
    fn entry_hash_is_stable_and_tells_entries_apart() {
        let entry = |term, payload| Entry {
            term,
            index: 7,
            payload,
        };
        let a = entry(2, EntryPayload::Command(vec![1, 2, 3]));
        assert_eq!(entry_hash(&a), entry_hash(&a.clone()));
        assert_ne!(
            entry_hash(&a),
            entry_hash(&entry(3, EntryPayload::Command(vec![1, 2, 3])))
        );
        assert_ne!(entry_hash(&a), entry_hash(&entry(2, EntryPayload::Noop)));
    }

    #[test]
    fn commit_index_is_reported_when_it_advances() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = seen.clone();
        let mut observer = Observer::new(Some(Arc::new(move |event| {
            sink.lock().unwrap().push(event);
        })));
        for commit in [1, 1, 3, 2, 4] {
            observer.commit_index(commit);
        }
        let commits: Vec<NodeEvent> = seen.lock().unwrap().clone();
        assert_eq!(
            commits,
            [1, 3, 4].map(NodeEvent::CommitIndex).to_vec(),
            "only advances are reported"
        );
    }

    #[test]
    fn without_an_observer_no_event_is_built() {
        let mut observer = Observer::new(None);
        observer.observe(|| unreachable!("built without an observer"));
        observer.commit_index(5);
    }
}
