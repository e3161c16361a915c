//! The leader's view of each follower: where its log matches, what is in
//! flight, and what to send it next (flow control: probe, pipelined
//! replicate, snapshot).

use std::collections::BTreeMap;
use std::collections::VecDeque;
use std::ops::Range;

use super::config::{Config, APPEND_ENTRIES_MAX};
use super::log::RaftLog;
use super::message::{
    AppendEntries, AppendEntriesResponse, Heartbeat, InstallSnapshot, InstallSnapshotResponse,
    Message,
};
use super::ready::Outbox;
use super::snapshot::Snapshots;
use super::types::{LogIndex, Membership, NodeId, Term};

/// How the leader is currently feeding one follower.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgressState {
    /// Matching point unknown: one AppendEntries at a time.
    Probe,
    /// Matching: appends are pipelined up to the in-flight window.
    Replicate,
    /// Too far behind the leader's log: a snapshot is being streamed.
    Snapshot,
}

/// Replication progress of one member, as the leader sees it (what
/// [`super::Status`] reports; the API's member status is built from it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicationProgress {
    pub voter: bool,
    pub match_index: LogIndex,
    pub next_index: LogIndex,
    pub state: ProgressState,
}

/// One follower's replication state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Progress {
    match_index: LogIndex,
    next_index: LogIndex,
    state: ProgressState,
    /// Probe: an append is outstanding; wait for its answer or a heartbeat.
    probe_sent: bool,
    /// Replicate: last index of each unacknowledged append, ascending.
    inflight: VecDeque<LogIndex>,
    /// Heard from since the last check-quorum round.
    recent_active: bool,
    /// When the leader last received any message from this member (its
    /// clock as handed in), for the reachability rule of removals.
    last_heard_ms: Option<u64>,
    /// Snapshot state: which snapshot, the acknowledged offset, and whether a
    /// chunk is outstanding (chunks are sent one at a time).
    snapshot_index: LogIndex,
    snapshot_offset: u64,
    snapshot_chunk_sent: bool,
    /// Highest commit index this follower was told it may apply; an empty
    /// append goes out when the leader's commit moves past it.
    commit_sent: LogIndex,
}

impl Progress {
    fn new(next_index: LogIndex) -> Self {
        Self {
            match_index: 0,
            next_index,
            state: ProgressState::Probe,
            probe_sent: false,
            inflight: VecDeque::new(),
            recent_active: true,
            last_heard_ms: None,
            snapshot_index: 0,
            snapshot_offset: 0,
            snapshot_chunk_sent: false,
            commit_sent: 0,
        }
    }

    pub(crate) fn match_index(&self) -> LogIndex {
        self.match_index
    }

    /// Whether the follower was told a lower commit index than `commit`.
    fn commit_behind(&self, commit: LogIndex) -> bool {
        self.commit_sent < commit
    }

    /// The follower answered something: it counts as active this round.
    fn mark_active(&mut self) {
        self.recent_active = true;
    }

    /// Flow control: no append may go out now (a snapshot is streaming, a
    /// probe is outstanding, or the in-flight window is full).
    fn is_paused(&self, inflight_max: usize) -> bool {
        match self.state {
            ProgressState::Snapshot => true,
            ProgressState::Probe => self.probe_sent,
            ProgressState::Replicate => self.inflight.len() >= inflight_max,
        }
    }

    /// An append ending at `last` went out carrying `commit`.
    fn append_sent(&mut self, last: LogIndex, commit: LogIndex) {
        self.commit_sent = self.commit_sent.max(commit.min(last));
        match self.state {
            ProgressState::Probe => self.probe_sent = true,
            ProgressState::Replicate => {
                self.next_index = last + 1;
                self.inflight.push_back(last);
            }
            ProgressState::Snapshot => unreachable!("no append goes out while paused"),
        }
    }

    /// A heartbeat goes out; returns the commit index it may carry (never
    /// past what the follower is known to hold).
    fn heartbeat_sent(&mut self, commit: LogIndex) -> LogIndex {
        let commit = commit.min(self.match_index);
        self.commit_sent = self.commit_sent.max(commit);
        commit
    }

    /// The follower holds the leader's log up to `index`.
    fn append_acked(&mut self, index: LogIndex) {
        if index > self.match_index {
            self.match_index = index;
        }
        self.next_index = self.next_index.max(index + 1);
        while self.inflight.front().is_some_and(|&i| i <= index) {
            self.inflight.pop_front();
        }
        match self.state {
            ProgressState::Probe => self.become_replicate(),
            ProgressState::Snapshot if self.match_index >= self.snapshot_index => {
                self.become_probe()
            }
            _ => {}
        }
    }

    /// The follower refused the append after `index`; `probe_to` is the
    /// leader's best guess of the last matching index (from the follower's
    /// hint). Returns whether a new probe should go out (false for a stale
    /// refusal).
    fn append_rejected(&mut self, index: LogIndex, probe_to: LogIndex) -> bool {
        match self.state {
            ProgressState::Replicate => {
                if index <= self.match_index {
                    return false; // Stale: about entries already matched.
                }
                self.next_index = (probe_to + 1).min(index).max(self.match_index + 1);
                self.become_probe();
            }
            ProgressState::Probe => {
                if index + 1 != self.next_index {
                    return false; // Stale: not the probe we are waiting for.
                }
                self.next_index = (probe_to + 1).min(index).max(self.match_index + 1);
                self.probe_sent = false;
            }
            ProgressState::Snapshot => return false,
        }
        true
    }

    /// The follower answered a heartbeat: it is active, a probe may go out
    /// again, and a full window loses its oldest slot (appends may have been
    /// lost: freeing one lets replication resume).
    fn heartbeat_acked(&mut self, inflight_max: usize) {
        self.recent_active = true;
        self.probe_sent = false;
        if self.state == ProgressState::Replicate && self.inflight.len() >= inflight_max {
            self.inflight.pop_front();
        }
    }

    /// Starts streaming the snapshot at `snapshot_index` from its beginning.
    fn become_snapshot(&mut self, snapshot_index: LogIndex) {
        self.state = ProgressState::Snapshot;
        self.inflight.clear();
        self.snapshot_index = snapshot_index;
        self.snapshot_offset = 0;
        self.snapshot_chunk_sent = false;
    }

    /// The range of the next chunk of the snapshot at `snapshot_index`
    /// (`len` bytes), unless a chunk is still outstanding. A newer snapshot
    /// than the one being sent restarts the stream.
    fn next_snapshot_chunk(
        &mut self,
        snapshot_index: LogIndex,
        len: usize,
        chunk_bytes: usize,
    ) -> Option<Range<usize>> {
        if self.snapshot_chunk_sent {
            return None;
        }
        if self.snapshot_index != snapshot_index {
            self.snapshot_index = snapshot_index;
            self.snapshot_offset = 0;
        }
        let start = (self.snapshot_offset as usize).min(len);
        let end = (start + chunk_bytes).min(len);
        self.snapshot_chunk_sent = true;
        Some(start..end)
    }

    /// The outstanding chunk may have been lost: allow sending it again.
    fn resend_snapshot_chunk(&mut self) {
        self.snapshot_chunk_sent = false;
    }

    /// The follower holds the chunks of snapshot `last_index` up to
    /// `next_offset`. Returns whether the next chunk should go out (false if
    /// the answer is about another snapshot or no snapshot is streaming).
    fn snapshot_chunk_acked(&mut self, last_index: LogIndex, next_offset: u64) -> bool {
        if self.state != ProgressState::Snapshot || last_index != self.snapshot_index {
            return false;
        }
        self.snapshot_offset = next_offset;
        self.snapshot_chunk_sent = false;
        true
    }

    /// The follower holds everything up to `last_index` (it installed a
    /// snapshot, or already held it): probe from there.
    fn snapshot_installed(&mut self, last_index: LogIndex) {
        self.match_index = self.match_index.max(last_index);
        if self.state == ProgressState::Snapshot {
            self.next_index = self.match_index + 1;
            self.become_probe();
        }
    }

    fn become_probe(&mut self) {
        self.state = ProgressState::Probe;
        self.probe_sent = false;
        self.inflight.clear();
        self.next_index = self.next_index.max(self.match_index + 1);
    }

    fn become_replicate(&mut self) {
        self.state = ProgressState::Replicate;
        self.probe_sent = false;
        self.inflight.clear();
        self.next_index = self.match_index + 1;
    }
}

/// Every other member's [`Progress`], kept only on a leader.
#[derive(Debug, Clone, Default)]
pub(crate) struct ProgressTracker {
    peers: BTreeMap<NodeId, Progress>,
}

/// What a leader feeds its followers from, borrowed from the replica for one
/// call; what is sent goes to `outbox`.
pub(crate) struct Feed<'a> {
    pub(crate) term: Term,
    pub(crate) commit_index: LogIndex,
    pub(crate) log: &'a RaftLog,
    pub(crate) config: &'a Config,
    /// Snapshot bytes for followers behind the log's start (or a request
    /// for them).
    pub(crate) snapshots: &'a mut Snapshots,
    pub(crate) outbox: &'a mut Outbox,
}

impl ProgressTracker {
    /// A new leader starts every other member probing at `next_index`.
    pub(crate) fn reset(&mut self, membership: &Membership, self_id: NodeId, next: LogIndex) {
        self.peers = membership
            .members
            .keys()
            .filter(|&&m| m != self_id)
            .map(|&m| (m, Progress::new(next)))
            .collect();
    }

    pub(crate) fn clear(&mut self) {
        self.peers.clear();
    }

    /// Follows a membership change: drops removed members, starts new ones
    /// probing at `next`, keeps everyone else's state.
    pub(crate) fn sync_members(
        &mut self,
        membership: &Membership,
        self_id: NodeId,
        next: LogIndex,
    ) {
        self.peers.retain(|id, _| membership.contains(*id));
        for &m in membership.members.keys() {
            if m != self_id {
                self.peers.entry(m).or_insert_with(|| Progress::new(next));
            }
        }
    }

    pub(crate) fn get(&self, id: NodeId) -> Option<&Progress> {
        self.peers.get(&id)
    }

    /// The tracked members, ascending.
    pub(crate) fn ids(&self) -> Vec<NodeId> {
        self.peers.keys().copied().collect()
    }

    /// How far `id`'s log is known to match (0 if not tracked).
    pub(crate) fn match_index(&self, id: NodeId) -> LogIndex {
        self.peers.get(&id).map_or(0, |p| p.match_index)
    }

    /// `id` sent the leader a message at `now_ms`.
    pub(crate) fn heard_from(&mut self, id: NodeId, now_ms: u64) {
        if let Some(pr) = self.peers.get_mut(&id) {
            pr.last_heard_ms = Some(now_ms);
        }
    }

    /// When `id` last sent the leader anything (`None`: not since it
    /// became leader, or not tracked).
    pub(crate) fn last_heard_ms(&self, id: NodeId) -> Option<u64> {
        self.peers.get(&id).and_then(|p| p.last_heard_ms)
    }

    /// Whether `id` sent the leader anything within `window_ms` of `now_ms`.
    pub(crate) fn heard_within(&self, id: NodeId, now_ms: u64, window_ms: u64) -> bool {
        self.peers
            .get(&id)
            .and_then(|p| p.last_heard_ms)
            .is_some_and(|at| now_ms.saturating_sub(at) <= window_ms)
    }

    /// Starts a check-quorum round: nobody has been heard from yet.
    pub(crate) fn start_quorum_round(&mut self) {
        for pr in self.peers.values_mut() {
            pr.recent_active = false;
        }
    }

    /// Whether a quorum of voters (counting the leader) was heard from this
    /// round.
    pub(crate) fn quorum_recently_active(&self, membership: &Membership, self_id: NodeId) -> bool {
        let active = membership
            .voters()
            .filter(|v| *v == self_id || self.peers.get(v).is_some_and(|p| p.recent_active))
            .count();
        active >= membership.quorum()
    }

    /// The highest index a quorum of voters holds, the leader counting
    /// `self_match` for itself; `None` without voters.
    pub(crate) fn quorum_match_index(
        &self,
        membership: &Membership,
        self_id: NodeId,
        self_match: LogIndex,
    ) -> Option<LogIndex> {
        let mut matches: Vec<LogIndex> = membership
            .voters()
            .map(|v| {
                if v == self_id {
                    self_match
                } else {
                    self.match_index(v)
                }
            })
            .collect();
        if matches.is_empty() {
            return None;
        }
        matches.sort_unstable_by(|a, b| b.cmp(a));
        Some(matches[membership.quorum() - 1])
    }

    /// The voter with the longest matching log (the lowest id among equals).
    pub(crate) fn most_caught_up_voter(&self, membership: &Membership) -> Option<NodeId> {
        self.peers
            .iter()
            .filter(|(id, _)| membership.is_voter(**id))
            .max_by_key(|(id, p)| (p.match_index, std::cmp::Reverse(**id)))
            .map(|(id, _)| *id)
    }

    /// Sends every follower what flow control allows: an append carrying the
    /// commit index to one told less, then new entries while the window
    /// lets them go.
    pub(crate) fn broadcast_append(&mut self, feed: &mut Feed<'_>) {
        for peer in self.ids() {
            let behind = self
                .get(peer)
                .is_some_and(|p| p.commit_behind(feed.commit_index));
            self.send_append(peer, behind, feed);
            while self.send_append(peer, false, feed) {}
        }
    }

    /// Sends every follower a heartbeat carrying the ReadIndex round
    /// `read_ctx` (0: none).
    pub(crate) fn broadcast_heartbeat(&mut self, read_ctx: u64, feed: &mut Feed<'_>) {
        for (to, pr) in self.peers.iter_mut() {
            let commit = pr.heartbeat_sent(feed.commit_index);
            let heartbeat = Heartbeat {
                term: feed.term,
                commit,
                read_ctx,
            };
            feed.outbox.send(*to, Message::Heartbeat(heartbeat));
        }
    }

    /// Sends the next AppendEntries (or snapshot chunk) to `to` if flow
    /// control allows. With `allow_empty`, an append carrying no entries is
    /// still sent (to carry the commit index or re-probe). Returns whether an
    /// append with entries went out.
    pub(crate) fn send_append(
        &mut self,
        to: NodeId,
        allow_empty: bool,
        feed: &mut Feed<'_>,
    ) -> bool {
        let Some(pr) = self.peers.get_mut(&to) else {
            return false;
        };
        if pr.is_paused(feed.config.max_inflight_appends) {
            return false;
        }
        let prev_log_index = pr.next_index - 1;
        let Some(prev_log_term) = feed.log.term_at(prev_log_index) else {
            self.start_snapshot(to, feed);
            return false;
        };
        let entries_max = feed.config.max_append_entries.min(APPEND_ENTRIES_MAX);
        let bytes_max = feed.config.max_append_bytes;
        let entries = feed.log.batch_from(pr.next_index, entries_max, bytes_max);
        if entries.is_empty() && !allow_empty {
            return false;
        }
        let last = prev_log_index + entries.len() as u64;
        let has_entries = !entries.is_empty();
        pr.append_sent(last, feed.commit_index);
        let append = AppendEntries {
            term: feed.term,
            prev_log_index,
            prev_log_term,
            entries,
            leader_commit: feed.commit_index,
        };
        feed.outbox.send(to, Message::AppendEntries(append));
        has_entries
    }

    /// `from` acknowledged its log up to `index`. Returns whether the answer
    /// counts: from a tracked member, about entries the log holds.
    pub(crate) fn handle_append_ack(
        &mut self,
        from: NodeId,
        index: LogIndex,
        last_index: LogIndex,
    ) -> bool {
        let Some(pr) = self.peers.get_mut(&from) else {
            return false;
        };
        pr.mark_active();
        if index > last_index {
            return false; // Malformed: acknowledges entries we never sent.
        }
        pr.append_acked(index);
        true
    }

    /// After an acknowledgement: new entries while the window allows, then
    /// an empty append if `to` was told a lower commit index.
    pub(crate) fn send_more(&mut self, to: NodeId, feed: &mut Feed<'_>) {
        while self.send_append(to, false, feed) {}
        let behind = self
            .get(to)
            .is_some_and(|p| p.commit_behind(feed.commit_index));
        if behind {
            self.send_append(to, true, feed);
        }
    }

    /// `from` refused an append: back off to its hint and probe again.
    pub(crate) fn handle_append_refusal(
        &mut self,
        from: NodeId,
        r: &AppendEntriesResponse,
        feed: &mut Feed<'_>,
    ) {
        let Some(pr) = self.peers.get_mut(&from) else {
            return;
        };
        pr.mark_active();
        // Fast backtracking: jump over the follower's conflicting term.
        let probe_to = if r.hint_term > 0 {
            feed.log
                .last_index_with_term_at_most(r.hint_index, r.hint_term)
        } else {
            r.hint_index
        };
        if pr.append_rejected(r.index, probe_to) {
            self.send_append(from, true, feed);
        }
    }

    /// `from` answered a heartbeat: resend a chunk that may have been lost,
    /// or catch it up. Returns false if `from` is not tracked.
    pub(crate) fn handle_heartbeat_ack(&mut self, from: NodeId, feed: &mut Feed<'_>) -> bool {
        let Some(pr) = self.peers.get_mut(&from) else {
            return false;
        };
        pr.heartbeat_acked(feed.config.max_inflight_appends);
        if pr.state == ProgressState::Snapshot {
            pr.resend_snapshot_chunk();
            self.send_snapshot_chunk(from, feed);
        } else if pr.match_index < feed.log.last_index() {
            self.send_append(from, true, feed);
        }
        true
    }

    /// `from` answered a snapshot chunk: the next chunk goes out, or, once
    /// it holds the log up to the snapshot, it probes from there. Returns
    /// whether its match index moved that way.
    pub(crate) fn handle_snapshot_ack(
        &mut self,
        from: NodeId,
        r: &InstallSnapshotResponse,
        feed: &mut Feed<'_>,
    ) -> bool {
        let Some(pr) = self.peers.get_mut(&from) else {
            return false;
        };
        pr.mark_active();
        if r.done {
            if r.last_index > feed.log.last_index() {
                return false;
            }
            pr.snapshot_installed(r.last_index);
            return true;
        }
        if pr.snapshot_chunk_acked(r.last_index, r.next_offset) {
            self.send_snapshot_chunk(from, feed);
        }
        false
    }

    /// `to` needs entries the log no longer holds: stream the latest
    /// snapshot, or ask for one if there are no bytes to send.
    fn start_snapshot(&mut self, to: NodeId, feed: &mut Feed<'_>) {
        let Some((meta, _)) = feed.snapshots.latest() else {
            feed.snapshots.want();
            return;
        };
        let snapshot_index = meta.last_index;
        let pr = self.peers.get_mut(&to).expect("caller checked");
        pr.become_snapshot(snapshot_index);
        self.send_snapshot_chunk(to, feed);
    }

    /// Sends `to` the next chunk of the latest snapshot, unless one is
    /// outstanding.
    pub(crate) fn send_snapshot_chunk(&mut self, to: NodeId, feed: &mut Feed<'_>) {
        let Some((meta, data)) = feed.snapshots.latest() else {
            feed.snapshots.want();
            return;
        };
        let Some(pr) = self.peers.get_mut(&to) else {
            return;
        };
        let chunk_bytes = feed.config.snapshot_chunk_bytes;
        let Some(range) = pr.next_snapshot_chunk(meta.last_index, data.len(), chunk_bytes) else {
            return;
        };
        let chunk = InstallSnapshot {
            term: feed.term,
            meta: meta.clone(),
            offset: range.start as u64,
            data: data[range.clone()].to_vec(),
            done: range.end == data.len(),
        };
        feed.outbox.send(to, Message::InstallSnapshot(chunk));
    }

    pub(crate) fn status(&self, membership: &Membership) -> BTreeMap<NodeId, ReplicationProgress> {
        self.peers
            .iter()
            .map(|(id, pr)| {
                (
                    *id,
                    ReplicationProgress {
                        voter: membership.is_voter(*id),
                        match_index: pr.match_index,
                        next_index: pr.next_index,
                        state: pr.state,
                    },
                )
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::ready::{Role, SoftState};
    use crate::raft::types::{Entry, EntryPayload, SnapshotMeta};

    #[test]
    fn a_probe_sends_one_append_then_waits() {
        let mut pr = Progress::new(5);
        assert!(!pr.is_paused(4));
        pr.append_sent(6, 3);
        assert!(pr.is_paused(4), "one probe outstanding");
        assert_eq!(pr.next_index, 5, "a probe does not advance next_index");
        pr.heartbeat_acked(4);
        assert!(!pr.is_paused(4), "a heartbeat answer allows a new probe");
    }

    #[test]
    fn an_ack_switches_to_replicate_and_the_window_fills() {
        let mut pr = Progress::new(5);
        pr.append_sent(6, 0);
        pr.append_acked(6);
        assert_eq!(pr.state, ProgressState::Replicate);
        assert_eq!((pr.match_index(), pr.next_index), (6, 7));
        pr.append_sent(8, 0);
        pr.append_sent(10, 0);
        assert!(pr.is_paused(2), "two appends in flight fill a window of 2");
        assert_eq!(pr.next_index, 11, "replicate advances next_index");
        pr.append_acked(8);
        assert!(!pr.is_paused(2));
        pr.append_sent(12, 0);
        pr.heartbeat_acked(2);
        assert!(!pr.is_paused(2), "a heartbeat frees the oldest slot");
    }

    #[test]
    fn a_rejection_backtracks_and_stale_ones_are_ignored() {
        let mut pr = Progress::new(5);
        pr.append_sent(6, 0);
        pr.append_acked(6);
        pr.append_sent(9, 0);
        assert!(!pr.append_rejected(6, 2), "about entries already matched");
        assert!(pr.append_rejected(9, 7));
        assert_eq!(pr.state, ProgressState::Probe);
        assert_eq!(pr.next_index, 8);
        assert!(!pr.append_rejected(9, 3), "not the probe we wait for");
        assert!(pr.append_rejected(7, 3));
        assert_eq!(pr.next_index, 7, "never below match_index + 1");
    }

    #[test]
    fn snapshot_chunks_go_one_at_a_time_and_restart_for_a_newer_snapshot() {
        let mut pr = Progress::new(5);
        pr.become_snapshot(40);
        assert!(pr.is_paused(16));
        assert_eq!(pr.next_snapshot_chunk(40, 100, 64), Some(0..64));
        assert_eq!(pr.next_snapshot_chunk(40, 100, 64), None, "one outstanding");
        assert!(!pr.snapshot_chunk_acked(39, 64), "another snapshot");
        assert!(pr.snapshot_chunk_acked(40, 64));
        assert_eq!(pr.next_snapshot_chunk(40, 100, 64), Some(64..100));
        pr.resend_snapshot_chunk();
        assert_eq!(pr.next_snapshot_chunk(50, 30, 64), Some(0..30));
        pr.snapshot_installed(50);
        assert_eq!(pr.state, ProgressState::Probe);
        assert_eq!((pr.match_index(), pr.next_index), (50, 51));
    }

    #[test]
    fn commit_sent_tracks_what_the_follower_was_told() {
        let mut pr = Progress::new(5);
        assert_eq!(pr.heartbeat_sent(9), 0, "never past the follower's match");
        pr.append_sent(6, 9);
        assert!(!pr.commit_behind(6));
        assert!(pr.commit_behind(7));
    }

    fn log_of(last_index: LogIndex) -> RaftLog {
        let entries = (1..=last_index)
            .map(|index| Entry {
                term: 1,
                index,
                payload: EntryPayload::Noop,
            })
            .collect();
        RaftLog::restore(0, 0, entries)
    }

    fn soft_state() -> SoftState {
        SoftState {
            role: Role::Leader,
            term: 1,
            leader: Some(1),
        }
    }

    #[test]
    fn appends_follow_flow_control_and_the_batch_limit() {
        let mut config = Config::new(1);
        config.max_append_entries = 2;
        let log = log_of(5);
        let mut snapshots = Snapshots::default();
        let mut outbox = Outbox::new(soft_state());
        let mut feed = Feed {
            term: 1,
            commit_index: 3,
            log: &log,
            config: &config,
            snapshots: &mut snapshots,
            outbox: &mut outbox,
        };
        let mut t = ProgressTracker::default();
        t.reset(&Membership::of(&[1, 2], &[]), 1, 2);
        assert!(
            t.send_append(2, false, &mut feed),
            "a probe with entries 2..=3"
        );
        assert!(
            !t.send_append(2, true, &mut feed),
            "the probe is outstanding"
        );
        let sent = feed.outbox.take_messages();
        let [(2, Message::AppendEntries(append))] = sent.as_slice() else {
            panic!("one append to 2, got {sent:?}");
        };
        assert_eq!((append.prev_log_index, append.entries.len()), (1, 2));
        assert_eq!(append.leader_commit, 3);
        t.peers.get_mut(&2).expect("tracked").append_acked(3);
        t.broadcast_append(&mut feed);
        let sent = feed.outbox.take_messages();
        assert_eq!(sent.len(), 1, "entries 4..=5 in one append: {sent:?}");
        t.broadcast_heartbeat(7, &mut feed);
        let sent = feed.outbox.take_messages();
        let [(2, Message::Heartbeat(heartbeat))] = sent.as_slice() else {
            panic!("one heartbeat to 2, got {sent:?}");
        };
        assert_eq!((heartbeat.commit, heartbeat.read_ctx), (3, 7));
    }

    #[test]
    fn a_follower_behind_the_log_gets_the_snapshot_or_asks_for_one() {
        let config = Config::new(1);
        let mut log = log_of(5);
        log.compact_to(4, 1);
        let mut snapshots = Snapshots::default();
        let mut outbox = Outbox::new(soft_state());
        let mut t = ProgressTracker::default();
        t.reset(&Membership::of(&[1, 2], &[]), 1, 2);
        let mut feed = Feed {
            term: 1,
            commit_index: 5,
            log: &log,
            config: &config,
            snapshots: &mut snapshots,
            outbox: &mut outbox,
        };
        assert!(!t.send_append(2, true, &mut feed));
        assert!(feed.snapshots.is_wanted(), "no bytes to send");
        assert_eq!(t.get(2).map(|p| p.state), Some(ProgressState::Probe));
        let meta = SnapshotMeta {
            last_index: 4,
            last_term: 1,
            membership: Membership::default(),
        };
        feed.snapshots.taken(meta, vec![7; 10]);
        assert!(!t.send_append(2, true, &mut feed));
        assert_eq!(t.get(2).map(|p| p.state), Some(ProgressState::Snapshot));
        let sent = feed.outbox.take_messages();
        let [(2, Message::InstallSnapshot(chunk))] = sent.as_slice() else {
            panic!("one chunk to 2, got {sent:?}");
        };
        assert!(chunk.done && chunk.data.len() == 10);
    }

    #[test]
    fn the_tracker_counts_quorums_over_voters_only() {
        let m = Membership::of(&[1, 2, 3], &[4]);
        let mut t = ProgressTracker::default();
        t.reset(&m, 1, 10);
        assert_eq!(t.ids(), vec![2, 3, 4]);
        for (id, index) in [(2, 7), (4, 9)] {
            let pr = t.peers.get_mut(&id).expect("tracked");
            pr.append_sent(index, 0);
            pr.append_acked(index);
        }
        assert_eq!(t.quorum_match_index(&m, 1, 8), Some(7));
        assert_eq!(t.quorum_match_index(&Membership::of(&[], &[2]), 1, 8), None);
        assert_eq!(t.most_caught_up_voter(&m), Some(2));
        t.start_quorum_round();
        assert!(!t.quorum_recently_active(&m, 1));
        t.peers.get_mut(&4).expect("tracked").mark_active();
        assert!(!t.quorum_recently_active(&m, 1), "a learner does not count");
        t.peers.get_mut(&3).expect("tracked").mark_active();
        assert!(t.quorum_recently_active(&m, 1));
        t.sync_members(&Membership::of(&[1, 3, 5], &[]), 1, 12);
        assert_eq!(t.ids(), vec![3, 5]);
        assert_eq!(t.get(5).map(|p| p.next_index), Some(12));
        assert_eq!(t.match_index(2), 0, "removed");
    }
}
