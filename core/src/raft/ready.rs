//! What the replica hands its caller ([`Ready`] and its parts), and the
//! buffers that collect it between two calls to `ready()`: log writes not yet
//! handed out ([`Unwritten`]) and outputs that need no write ([`Outbox`]).

use super::message::Message;
use super::types::{Entry, HardState, LogIndex, NodeId, SnapshotMeta, Term};

/// What a replica currently is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    Follower,
    PreCandidate,
    Candidate,
    Leader,
}

/// A linearizable read that became safe to serve once the state machine has
/// applied `index` (waiting for that is the caller's job).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadState {
    pub request_id: u64,
    pub index: LogIndex,
}

/// Role, term and leader, reported whenever any of them changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SoftState {
    pub role: Role,
    pub term: Term,
    pub leader: Option<NodeId>,
}

/// A complete snapshot received from the leader, to install.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotToInstall {
    pub meta: SnapshotMeta,
    pub data: Vec<u8>,
}

/// Everything the caller must act on; see the module docs for the order.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Ready {
    /// Non-zero when this batch holds writes; report
    /// [`super::Replica::persisted`] with it once they (and every earlier
    /// batch's) are durable.
    pub persist_seq: u64,
    /// Snapshot to install: replace the state machine and drop the whole
    /// stored log before appending `entries`.
    pub snapshot: Option<SnapshotToInstall>,
    /// Delete stored entries at and after this index before appending.
    pub truncate_from: Option<LogIndex>,
    /// Entries to append, contiguous.
    pub entries: Vec<Entry>,
    /// Hard state to store: when term or vote changed, or when the commit
    /// index moved and this Ready writes entries, a truncation or a
    /// snapshot anyway. A commit-only change is never a write of its own
    /// (the commit index need not be durable: a restarted node learns it
    /// again from the leader, or as a leader by committing its no-op).
    pub hard_state: Option<HardState>,
    /// Messages to send now (they never depend on writes not yet reported
    /// durable).
    pub messages: Vec<(NodeId, Message)>,
    /// Committed entries to apply, in order; always durable locally.
    pub committed: Vec<Entry>,
    /// Reads that became safe (serve once applied >= index).
    pub read_states: Vec<ReadState>,
    /// Reads that will never produce a [`ReadState`] (leadership lost, leader
    /// refused); the client should retry.
    pub failed_reads: Vec<u64>,
    /// Role, term or leader changed.
    pub soft_state: Option<SoftState>,
    /// The leader must send a snapshot but holds no snapshot bytes (e.g.
    /// after a restart): take one and call [`super::Replica::snapshot_taken`].
    pub snapshot_wanted: bool,
}

/// The log writes made in memory that no Ready has handed out yet, and the
/// hard state handed out last (to tell whether term or vote changed since).
#[derive(Debug, Clone)]
pub(crate) struct Unwritten {
    /// First new entry (everything from it to the end of the log is new).
    entries_from: Option<LogIndex>,
    truncate_from: Option<LogIndex>,
    snapshot: Option<SnapshotToInstall>,
    hard_state: HardState,
    /// The embedder asked for the commit index to be stored even without
    /// another write (`Replica::persist_commit_index`).
    commit_wanted: bool,
}

/// The log writes of one Ready.
#[derive(Debug, Default)]
pub(crate) struct LogWrites {
    pub(crate) snapshot: Option<SnapshotToInstall>,
    pub(crate) truncate_from: Option<LogIndex>,
    pub(crate) entries_from: Option<LogIndex>,
}

impl Unwritten {
    /// After a restart: `hard_state` is what storage holds; `entries_from`
    /// is set when the replica wrote entries storage does not hold yet (the
    /// bootstrap membership).
    pub(crate) fn new(hard_state: HardState, entries_from: Option<LogIndex>) -> Self {
        Self {
            entries_from,
            truncate_from: None,
            snapshot: None,
            hard_state,
            commit_wanted: false,
        }
    }

    /// The next Ready stores the commit index even if it writes nothing
    /// else (once; a no-op when storage already holds it).
    pub(crate) fn want_commit(&mut self) {
        self.commit_wanted = true;
    }

    /// Whether a commit index that storage lacks was asked to be stored.
    pub(crate) fn commit_wanted(&self, commit_index: LogIndex) -> bool {
        self.commit_wanted && commit_index != self.hard_state.commit_index
    }

    /// Entries from `first` on entered the log.
    pub(crate) fn appended(&mut self, first: LogIndex) {
        self.entries_from = Some(self.entries_from.map_or(first, |f| f.min(first)));
    }

    /// Entries from `from` on left the log: delete them from storage, and do
    /// not write the new entries among them.
    pub(crate) fn truncated(&mut self, from: LogIndex) {
        self.truncate_from = Some(self.truncate_from.map_or(from, |t| t.min(from)));
        if self.entries_from.is_some_and(|f| f >= from) {
            self.entries_from = None;
        }
    }

    /// A received snapshot replaced the whole log: it supersedes every other
    /// unwritten log change.
    pub(crate) fn snapshot_installed(&mut self, snapshot: SnapshotToInstall) {
        self.entries_from = None;
        self.truncate_from = None;
        self.snapshot = Some(snapshot);
    }

    pub(crate) fn has_log_writes(&self) -> bool {
        self.entries_from.is_some() || self.truncate_from.is_some() || self.snapshot.is_some()
    }

    /// Whether term or vote differ from the hard state handed out last (a
    /// commit-only change is not a write of its own).
    pub(crate) fn vote_changed(&self, term: Term, voted_for: Option<NodeId>) -> bool {
        term != self.hard_state.term || voted_for != self.hard_state.voted_for
    }

    pub(crate) fn take_log_writes(&mut self) -> LogWrites {
        LogWrites {
            snapshot: self.snapshot.take(),
            truncate_from: self.truncate_from.take(),
            entries_from: self.entries_from.take(),
        }
    }

    /// The hard state this Ready must store, if any: always when term or vote
    /// changed; a changed commit index only when the Ready `writes` anyway
    /// or the embedder asked for it (`want_commit`).
    pub(crate) fn take_hard_state(
        &mut self,
        current: HardState,
        writes: bool,
    ) -> Option<HardState> {
        let vote_changed = self.vote_changed(current.term, current.voted_for);
        let writes = writes || std::mem::take(&mut self.commit_wanted);
        if vote_changed || (writes && current != self.hard_state) {
            self.hard_state = current;
            Some(current)
        } else {
            None
        }
    }
}

/// Outputs that need no write: messages to send and read results, plus the
/// soft state reported last.
#[derive(Debug, Clone)]
pub(crate) struct Outbox {
    messages: Vec<(NodeId, Message)>,
    read_states: Vec<ReadState>,
    failed_reads: Vec<u64>,
    soft_state: SoftState,
}

impl Outbox {
    pub(crate) fn new(soft_state: SoftState) -> Self {
        Self {
            messages: Vec::new(),
            read_states: Vec::new(),
            failed_reads: Vec::new(),
            soft_state,
        }
    }

    pub(crate) fn send(&mut self, to: NodeId, msg: Message) {
        self.messages.push((to, msg));
    }

    pub(crate) fn send_all(&mut self, messages: Vec<(NodeId, Message)>) {
        self.messages.extend(messages);
    }

    pub(crate) fn read_ready(&mut self, read: ReadState) {
        self.read_states.push(read);
    }

    pub(crate) fn read_failed(&mut self, request_id: u64) {
        self.failed_reads.push(request_id);
    }

    /// Whether messages or read results wait, or `current` differs from the
    /// soft state reported last.
    pub(crate) fn has_output(&self, current: SoftState) -> bool {
        !self.messages.is_empty()
            || !self.read_states.is_empty()
            || !self.failed_reads.is_empty()
            || current != self.soft_state
    }

    pub(crate) fn take_messages(&mut self) -> Vec<(NodeId, Message)> {
        std::mem::take(&mut self.messages)
    }

    pub(crate) fn take_read_states(&mut self) -> Vec<ReadState> {
        std::mem::take(&mut self.read_states)
    }

    pub(crate) fn take_failed_reads(&mut self) -> Vec<u64> {
        std::mem::take(&mut self.failed_reads)
    }

    /// `current` if it differs from the soft state reported last.
    pub(crate) fn take_soft_state(&mut self, current: SoftState) -> Option<SoftState> {
        if current == self.soft_state {
            return None;
        }
        self.soft_state = current;
        Some(current)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hard_state(term: Term, voted_for: Option<NodeId>, commit_index: LogIndex) -> HardState {
        HardState {
            term,
            voted_for,
            commit_index,
        }
    }

    #[test]
    fn a_truncation_drops_new_entries_after_it_and_a_snapshot_supersedes_all() {
        let mut u = Unwritten::new(HardState::default(), None);
        assert!(!u.has_log_writes());
        u.appended(7);
        u.appended(5);
        u.truncated(6);
        let w = u.take_log_writes();
        assert_eq!((w.truncate_from, w.entries_from), (Some(6), Some(5)));
        assert!(!u.has_log_writes());
        u.appended(8);
        u.truncated(8);
        u.truncated(9);
        let w = u.take_log_writes();
        assert_eq!((w.truncate_from, w.entries_from), (Some(8), None));
        u.appended(3);
        u.truncated(2);
        let meta = SnapshotMeta::default();
        u.snapshot_installed(SnapshotToInstall {
            meta,
            data: vec![1],
        });
        let w = u.take_log_writes();
        assert_eq!((w.truncate_from, w.entries_from), (None, None));
        assert!(w.snapshot.is_some());
    }

    #[test]
    fn a_commit_only_change_rides_along_with_other_writes() {
        let mut u = Unwritten::new(hard_state(2, Some(1), 4), None);
        assert_eq!(u.take_hard_state(hard_state(2, Some(1), 5), false), None);
        let moved = hard_state(2, Some(1), 5);
        assert_eq!(u.take_hard_state(moved, true), Some(moved));
        assert_eq!(u.take_hard_state(moved, true), None, "already handed out");
        assert!(u.vote_changed(3, None));
        let voted = hard_state(3, None, 5);
        assert_eq!(u.take_hard_state(voted, false), Some(voted));
        assert!(!u.vote_changed(3, None));
    }

    #[test]
    fn a_wanted_commit_index_is_stored_without_other_writes_once() {
        let mut u = Unwritten::new(hard_state(2, Some(1), 4), None);
        let moved = hard_state(2, Some(1), 6);
        assert!(!u.commit_wanted(6));
        u.want_commit();
        assert!(u.commit_wanted(6));
        assert!(!u.commit_wanted(4), "storage holds it already");
        assert_eq!(u.take_hard_state(moved, false), Some(moved));
        assert!(!u.commit_wanted(7), "asked once");
        assert_eq!(u.take_hard_state(hard_state(2, Some(1), 7), false), None);
    }

    #[test]
    fn the_soft_state_is_reported_once_per_change() {
        let soft = SoftState {
            role: Role::Follower,
            term: 1,
            leader: None,
        };
        let mut out = Outbox::new(soft);
        assert!(!out.has_output(soft));
        let led = SoftState {
            leader: Some(2),
            ..soft
        };
        assert!(out.has_output(led));
        assert_eq!(out.take_soft_state(led), Some(led));
        assert_eq!(out.take_soft_state(led), None);
        out.send(2, Message::TimeoutNow { term: 1 });
        out.read_failed(4);
        assert!(out.has_output(led));
        assert_eq!(out.take_messages().len(), 1);
        assert_eq!(out.take_failed_reads(), vec![4]);
        assert!(!out.has_output(led));
    }
}
