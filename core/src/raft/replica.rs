//! The Raft replica itself: every input (message, tick, proposal, durability
//! report) turns into state changes plus outputs queued for [`Replica::ready`].
//!
//! Over 1,000 lines on purpose: these are the Raft rules that tie the
//! sub-states together (term and role changes, elections, commit, follower
//! appends, snapshot install, membership and transfer), kept in one place as
//! etcd's `raft.go` keeps them; each concern's own state and logic lives in
//! its file (`progress`, `read_only`, `persist`, `ready`, `snapshot`,
//! `membership_log`, `restore`, `timers`, `votes`, `log`).

use std::collections::BTreeMap;

use super::config::{
    Config, ConfigError, APPLY_BATCH_ENTRIES_MAX, PROPOSAL_BATCH_MAX, PROPOSAL_BYTES_MAX,
    UNCOMMITTED_ENTRIES_MAX,
};
use super::error::{
    MembershipError, ProposalRefused, ReadIndexError, SnapshotRefused, TransferError,
};
use super::health::{self, ClusterHealth, LeaderView};
use super::log::RaftLog;
use super::membership_log::MembershipLog;
use super::message::{
    AppendEntries, AppendEntriesResponse, Heartbeat, HeartbeatResponse, InstallSnapshot,
    InstallSnapshotResponse, Message, VoteRequest, VoteResponse,
};
use super::persist::PersistTracker;
use super::progress::{Feed, ProgressTracker, ReplicationProgress};
use super::read_only::ReadOnly;
use super::ready::{
    LogWrites, Outbox, ReadState, Ready, Role, SnapshotToInstall, SoftState, Unwritten,
};
use super::restore::{Recovered, RestoredState};
use super::snapshot::{ChunkReceived, Snapshots};
use super::timers::{Timer, TimerTable};
use super::types::{
    Entry, EntryPayload, HardState, LogIndex, Membership, NodeId, SnapshotMeta, Term,
};
use super::votes::{VoteResult, Votes};

/// A snapshot of the replica's state for operators and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    pub id: NodeId,
    pub role: Role,
    pub term: Term,
    pub leader: Option<NodeId>,
    pub commit_index: LogIndex,
    pub applied_index: LogIndex,
    pub persisted_index: LogIndex,
    pub last_index: LogIndex,
    pub snapshot_index: LogIndex,
    pub membership: Membership,
    /// Only on a leader: every other member's progress.
    pub progress: BTreeMap<NodeId, ReplicationProgress>,
}

/// One Raft replica. See the module docs for the calling contract.
#[derive(Debug)]
pub struct Replica {
    config: Config,
    id: NodeId,
    now_ms: u64,
    timers: TimerTable,

    term: Term,
    voted_for: Option<NodeId>,
    role: Role,
    leader: Option<NodeId>,
    /// When the leader was last heard from (leader stickiness).
    last_leader_contact_ms: Option<u64>,
    votes: Votes,

    log: RaftLog,
    commit_index: LogIndex,
    /// Highest index handed out in `Ready::committed` (or installed snapshot).
    apply_cursor: LogIndex,
    /// Highest index the caller reported applied.
    applied_index: LogIndex,
    memberships: MembershipLog,

    // Leader state.
    progress: ProgressTracker,
    /// First index of this leader's term (its no-op).
    term_start_index: LogIndex,
    transfer_to: Option<NodeId>,
    /// Appends wait for the next `ready()`, so every proposal made before the
    /// caller drains goes out in one AppendEntries.
    broadcast_pending: bool,
    reads: ReadOnly,

    snapshots: Snapshots,
    persist: PersistTracker,
    unwritten: Unwritten,
    outbox: Outbox,
}

impl Replica {
    /// Builds a replica from what storage holds. `initial_membership` is used
    /// only when storage is empty (a bootstrapping cluster; a node joining an
    /// existing cluster passes an empty membership and waits to be contacted).
    pub fn new(
        config: Config,
        restored: RestoredState,
        initial_membership: Membership,
        seed: u64,
        now_ms: u64,
    ) -> Result<Self, ConfigError> {
        config.validate()?;
        let Recovered {
            log,
            memberships,
            hard_state,
            stored_hard_state,
            unwritten_from,
        } = Recovered::new(restored, initial_membership);
        let mut replica = Self {
            id: config.id,
            now_ms,
            timers: TimerTable::new(seed),
            term: hard_state.term,
            voted_for: hard_state.voted_for,
            role: Role::Follower,
            leader: None,
            last_leader_contact_ms: None,
            votes: Votes::default(),
            apply_cursor: log.snapshot_index(),
            applied_index: log.snapshot_index(),
            commit_index: hard_state.commit_index,
            log,
            memberships,
            progress: ProgressTracker::default(),
            term_start_index: 0,
            transfer_to: None,
            broadcast_pending: false,
            reads: ReadOnly::default(),
            snapshots: Snapshots::default(),
            persist: PersistTracker::default(),
            unwritten: Unwritten::new(stored_hard_state, unwritten_from),
            outbox: Outbox::new(SoftState {
                role: Role::Follower,
                term: hard_state.term,
                leader: None,
            }),
            config,
        };
        replica.reset_election_timer();
        Ok(replica)
    }

    pub fn id(&self) -> NodeId {
        self.id
    }

    pub fn role(&self) -> Role {
        self.role
    }

    pub fn term(&self) -> Term {
        self.term
    }

    pub fn leader(&self) -> Option<NodeId> {
        self.leader
    }

    pub fn commit_index(&self) -> LogIndex {
        self.commit_index
    }

    /// Stores the commit index with the next Ready even if nothing else is
    /// written (normally a commit-only change waits for the next write).
    /// For facts a restart must not forget, e.g. that the founding nonce in
    /// the log is committed: a node that restarts not knowing it would claim
    /// no founding at all, which a cluster of another founding with the
    /// same tag cannot refuse.
    pub fn persist_commit_index(&mut self) {
        self.unwritten.want_commit();
    }

    /// The membership in force: the latest one in the log, committed or not.
    pub fn membership(&self) -> &Membership {
        self.memberships.latest()
    }

    /// The membership in force at the commit index: every later leader has
    /// it (or a successor), unlike the latest one, which may be undone.
    pub fn committed_membership(&self) -> &Membership {
        self.memberships.at(self.commit_index)
    }

    /// The membership in force at `index` (for snapshot metadata).
    pub fn membership_at(&self, index: LogIndex) -> &Membership {
        self.memberships.at(index)
    }

    /// When the caller should call [`Replica::tick`] next, at the latest.
    pub fn next_deadline_ms(&self) -> u64 {
        match self.role {
            Role::Leader => {
                let mut d = self.timers.get(Timer::Heartbeat);
                if self.config.check_quorum {
                    d = d.min(self.timers.get(Timer::CheckQuorum));
                }
                if self.transfer_to.is_some() {
                    d = d.min(self.timers.get(Timer::Transfer));
                }
                d
            }
            _ => self.timers.get(Timer::Election),
        }
    }

    pub fn status(&self) -> Status {
        let membership = self.membership().clone();
        let progress = self.progress.status(&membership);
        Status {
            id: self.id,
            role: self.role,
            term: self.term,
            leader: self.leader,
            commit_index: self.commit_index,
            applied_index: self.applied_index,
            persisted_index: self.log.persisted_index(),
            last_index: self.log.last_index(),
            snapshot_index: self.log.snapshot_index(),
            membership,
            progress,
        }
    }

    /// The leader's health view at `now_ms` (the caller's clock; never
    /// earlier than the last time handed in): who answered within the last
    /// election timeout, how long ago, how far behind, and whether the
    /// voters that answered make a quorum. `None` unless this replica leads:
    /// only the leader hears from every member.
    pub fn health(&self, now_ms: u64) -> Option<ClusterHealth> {
        if self.role != Role::Leader {
            return None;
        }
        let view = self.leader_view(now_ms.max(self.now_ms));
        Some(health::cluster_health(&view, self.membership()))
    }

    /// What the reachability rule reads, at `now_ms`.
    fn leader_view(&self, now_ms: u64) -> LeaderView<'_> {
        LeaderView {
            self_id: self.id,
            progress: &self.progress,
            last_index: self.log.last_index(),
            now_ms,
            window_ms: self.config.election_timeout_max_ms,
        }
    }

    // ----- inputs -------------------------------------------------------

    /// Advances time: elections, heartbeats, check-quorum, transfer timeout.
    pub fn tick(&mut self, now_ms: u64) {
        self.advance_clock(now_ms);
        if self.role == Role::Leader {
            self.tick_leader();
        } else if self.timers.is_due(Timer::Election, self.now_ms) {
            self.reset_election_timer();
            if self.promotable() {
                self.campaign(self.use_pre_vote(), false);
            }
        }
    }

    fn tick_leader(&mut self) {
        let now_ms = self.now_ms;
        if self.transfer_to.is_some() && self.timers.is_due(Timer::Transfer, now_ms) {
            self.transfer_to = None;
        }
        if self.config.check_quorum && self.timers.is_due(Timer::CheckQuorum, now_ms) {
            if !self
                .progress
                .quorum_recently_active(self.memberships.latest(), self.id)
            {
                let term = self.term;
                self.become_follower(term, None);
                return;
            }
            self.progress.start_quorum_round();
            let at_ms = now_ms + self.config.election_timeout_min_ms;
            self.timers.set(Timer::CheckQuorum, at_ms);
        }
        if self.timers.is_due(Timer::Heartbeat, now_ms) {
            let at_ms = now_ms + self.config.heartbeat_interval_ms;
            self.timers.set(Timer::Heartbeat, at_ms);
            self.broadcast_heartbeat();
        }
    }

    /// Starts an election now (pre-vote first if configured), e.g. to
    /// bootstrap quickly or in tests. Ignored on a leader or a non-voter.
    pub fn campaign_now(&mut self) {
        if self.role != Role::Leader && self.promotable() {
            self.reset_election_timer();
            self.campaign(self.use_pre_vote(), false);
        }
    }

    /// Appends one command. Returns where it will sit in the log if it commits.
    pub fn propose(&mut self, data: Vec<u8>) -> Result<(Term, LogIndex), ProposalRefused> {
        self.propose_batch(vec![data])
            .map(|(term, first, _)| (term, first))
    }

    /// Appends several commands at once: `(term, first index, last index)`.
    pub fn propose_batch(
        &mut self,
        batch: Vec<Vec<u8>>,
    ) -> Result<(Term, LogIndex, LogIndex), ProposalRefused> {
        self.check_can_propose(batch.len())?;
        if batch.is_empty() || batch.len() > PROPOSAL_BATCH_MAX {
            return Err(ProposalRefused::BadBatchSize {
                count: batch.len(),
                max: PROPOSAL_BATCH_MAX,
            });
        }
        if let Some(big) = batch.iter().find(|d| d.len() > PROPOSAL_BYTES_MAX) {
            return Err(ProposalRefused::TooLarge {
                bytes: big.len(),
                max: PROPOSAL_BYTES_MAX,
            });
        }
        let first = self.log.last_index() + 1;
        let payloads = batch.into_iter().map(EntryPayload::Command).collect();
        self.append_as_leader(payloads);
        Ok((self.term, first, self.log.last_index()))
    }

    /// Asks for a linearizable read. On the leader it is confirmed by a
    /// heartbeat round; on a follower it is forwarded to the leader. Either
    /// way the answer arrives later in `Ready::read_states` (or
    /// `Ready::failed_reads`).
    pub fn read_index(&mut self, request_id: u64) -> Result<(), ReadIndexError> {
        match (self.role, self.leader) {
            (Role::Leader, _) => {
                if self.reads.is_full() {
                    return Err(ReadIndexError::TooManyPending);
                }
                self.start_read(None, request_id);
                Ok(())
            }
            (_, Some(leader)) => {
                let term = self.term;
                self.send(leader, Message::ReadIndex { term, request_id });
                Ok(())
            }
            (_, None) => Err(ReadIndexError::NotLeader { leader_hint: None }),
        }
    }

    /// Hands leadership to `to`: stops taking proposals, brings `to` up to
    /// date, then tells it to campaign at once. Gives up after an election
    /// timeout.
    pub fn transfer_leadership(&mut self, to: NodeId) -> Result<(), TransferError> {
        if self.role != Role::Leader {
            return Err(TransferError::NotLeader {
                leader_hint: self.leader,
            });
        }
        if to == self.id {
            return Ok(());
        }
        if !self.membership().is_voter(to) {
            return Err(TransferError::NotVoter(to));
        }
        self.transfer_to = Some(to);
        let at_ms = self.now_ms + self.config.election_timeout_max_ms;
        self.timers.set(Timer::Transfer, at_ms);
        let caught_up = self
            .progress
            .get(to)
            .is_some_and(|pr| pr.match_index() == self.log.last_index());
        if caught_up {
            let term = self.term;
            self.send(to, Message::TimeoutNow { term });
        } else {
            self.send_append(to, true);
        }
        Ok(())
    }

    /// Proposes a complete next membership, enforcing the one-voter-at-a-time
    /// rule: the previous change must be committed, and so must an entry of
    /// this leader's term (the fix for the single-server-change bug found in
    /// 2015).
    pub fn propose_membership(
        &mut self,
        next: Membership,
    ) -> Result<(Term, LogIndex), MembershipError> {
        if self.role != Role::Leader {
            return Err(MembershipError::NotLeader {
                leader_hint: self.leader,
            });
        }
        if self.transfer_to.is_some() {
            return Err(MembershipError::TransferInProgress);
        }
        if self.commit_index < self.term_start_index {
            return Err(MembershipError::LeaderTermNotCommitted);
        }
        self.memberships.check_change(&next, self.commit_index)?;
        self.check_can_propose(1)?;
        self.append_as_leader(vec![EntryPayload::Membership(next)]);
        Ok((self.term, self.log.last_index()))
    }

    /// Adds a non-voting member that receives the log and catches up.
    pub fn add_learner(
        &mut self,
        id: NodeId,
        peer_addr: String,
        api_addr: String,
    ) -> Result<(Term, LogIndex), MembershipError> {
        let next = self.memberships.with_learner(id, peer_addr, api_addr)?;
        self.propose_membership(next)
    }

    /// Makes a learner a voter, only once it has itself acknowledged the log
    /// up to the commit index: a learner that never answered (a typo, a node
    /// that never started) has acknowledged nothing and is never promoted,
    /// so adding a member can never cost the cluster its quorum.
    pub fn promote(&mut self, id: NodeId) -> Result<(Term, LogIndex), MembershipError> {
        if self.role != Role::Leader {
            return Err(MembershipError::NotLeader {
                leader_hint: self.leader,
            });
        }
        let next = self.memberships.with_voter(id)?;
        let match_index = self.progress.match_index(id);
        // The commit index is at least 1 on a leader (the founding entry),
        // so a learner that never acknowledged anything (match 0) fails here.
        debug_assert!(self.commit_index >= 1);
        if match_index < self.commit_index {
            return Err(MembershipError::NotCaughtUp {
                id,
                match_index,
                commit_index: self.commit_index,
            });
        }
        self.propose_membership(next)
    }

    /// Removes a member (voter or learner). Removing the leader itself makes
    /// it step down once the change commits. Refused when it would leave no
    /// voter, or fewer voters that answered within the last election
    /// timeout (the leader counting itself) than the new quorum.
    pub fn remove_member(&mut self, id: NodeId) -> Result<(Term, LogIndex), MembershipError> {
        if self.role != Role::Leader {
            return Err(MembershipError::NotLeader {
                leader_hint: self.leader,
            });
        }
        let next = self.memberships.without(id)?;
        if self.membership().is_voter(id) {
            self.check_reachable_quorum(id, &next)?;
        }
        self.propose_membership(next)
    }

    /// The reachability rule of [`Replica::remove_member`].
    fn check_reachable_quorum(&self, id: NodeId, next: &Membership) -> Result<(), MembershipError> {
        let voters = next.voters().count();
        if voters == 0 {
            return Err(MembershipError::NoVoters);
        }
        let reachable = self.leader_view(self.now_ms).reachable_voters(next);
        let quorum = next.quorum();
        if reachable < quorum {
            return Err(MembershipError::WouldLoseQuorum {
                id,
                reachable,
                quorum,
                voters,
            });
        }
        Ok(())
    }

    /// The writes of the [`Ready`] numbered `persist_seq` (and of all earlier
    /// ones) are durable: releases held messages, lets the leader count
    /// itself, and lets committed entries up to there be applied.
    pub fn persisted(&mut self, persist_seq: u64) {
        let Some(durable) = self.persist.persisted(persist_seq) else {
            return;
        };
        self.log.mark_persisted(durable);
        match self.role {
            Role::Leader => self.maybe_commit(),
            Role::Candidate if !self.votes.contains(self.id) => {
                self.count_self_vote_if_durable();
                self.tally_votes();
            }
            _ => {}
        }
    }

    /// The state machine has applied everything up to `index`.
    pub fn applied(&mut self, index: LogIndex) {
        assert!(
            index <= self.apply_cursor,
            "applied({index}) beyond what was handed out ({})",
            self.apply_cursor
        );
        self.applied_index = self.applied_index.max(index);
    }

    /// The caller serialized the state machine as of `index` (at most what it
    /// was handed to apply). The log is compacted up to it and the bytes kept
    /// to send to followers that fall behind. Returns the metadata to store
    /// with the snapshot; the caller then deletes stored entries `..=index`.
    pub fn snapshot_taken(
        &mut self,
        index: LogIndex,
        data: Vec<u8>,
    ) -> Result<SnapshotMeta, SnapshotRefused> {
        if index > self.apply_cursor {
            return Err(SnapshotRefused::NotApplied {
                index,
                applied: self.apply_cursor,
            });
        }
        let snapshot_index = self.log.snapshot_index();
        if index < snapshot_index || (index == snapshot_index && self.snapshots.latest().is_some())
        {
            return Err(SnapshotRefused::Stale {
                index,
                snapshot_index,
            });
        }
        let term = self
            .log
            .term_at(index)
            .expect("an applied index at or after the snapshot has a term");
        let meta = SnapshotMeta {
            last_index: index,
            last_term: term,
            membership: self.membership_at(index).clone(),
        };
        self.memberships.compact_to(index);
        self.log.compact_to(index, term);
        self.snapshots.taken(meta.clone(), data);
        Ok(meta)
    }

    /// Whether [`Replica::ready`] has anything to hand out.
    pub fn has_ready(&self) -> bool {
        self.broadcast_pending
            || self.has_unwritten()
            || self.persist.has_releasable()
            || self.apply_cursor < self.appliable_index()
            || self.outbox.has_output(self.soft_state())
            || self.snapshots.is_wanted()
    }

    /// Drains everything the caller must act on, in the order of the module
    /// docs.
    pub fn ready(&mut self) -> Ready {
        if self.broadcast_pending {
            self.broadcast_pending = false;
            if self.role == Role::Leader {
                self.broadcast_append();
            }
        }
        let LogWrites {
            snapshot,
            truncate_from,
            entries_from,
        } = self.unwritten.take_log_writes();
        let entries = match entries_from {
            Some(from) => self.log.slice(from, self.log.last_index()).to_vec(),
            None => Vec::new(),
        };
        // Term and vote must be durable before anything that depends on
        // them goes out. The commit index need not be (Raft recovers it from
        // the cluster; a restarted node just applies less until told), so a
        // commit-only change rides along with the next write instead of
        // costing an fsync of its own (at one proposer that was an extra
        // sync per commit: 0.8 entries per fsync, now 1.0).
        let writes = snapshot.is_some() || truncate_from.is_some() || !entries.is_empty();
        let hard_state = self.unwritten.take_hard_state(self.hard_state(), writes);
        let persist_seq = if writes || hard_state.is_some() {
            self.persist.start_batch(self.log.last_index())
        } else {
            0
        };
        let released = self.persist.take_releasable();
        self.outbox.send_all(released);
        let committed = self.take_committed();
        let soft_state = self.soft_state();
        Ready {
            persist_seq,
            snapshot,
            truncate_from,
            entries,
            hard_state,
            messages: self.outbox.take_messages(),
            committed,
            read_states: self.outbox.take_read_states(),
            failed_reads: self.outbox.take_failed_reads(),
            soft_state: self.outbox.take_soft_state(soft_state),
            snapshot_wanted: self.snapshots.take_wanted(),
        }
    }

    /// The next batch of committed entries to apply: durable here, in order,
    /// at most [`APPLY_BATCH_ENTRIES_MAX`].
    fn take_committed(&mut self) -> Vec<Entry> {
        let appliable = self.appliable_index();
        if self.apply_cursor >= appliable {
            return Vec::new();
        }
        let to = appliable.min(self.apply_cursor + APPLY_BATCH_ENTRIES_MAX as u64);
        let committed = self.log.slice(self.apply_cursor + 1, to).to_vec();
        assert_eq!(
            committed.len() as u64,
            to - self.apply_cursor,
            "committed entries are in the log"
        );
        self.apply_cursor = to;
        committed
    }

    /// Handles one message from a peer.
    pub fn handle_message(&mut self, from: NodeId, msg: Message, now_ms: u64) {
        self.advance_clock(now_ms);
        if from == self.id || from == 0 || !msg.is_well_formed() {
            return;
        }
        if self.role == Role::Leader {
            // Any answer, even a refusal, shows the member is reachable.
            self.progress.heard_from(from, self.now_ms);
        }
        if self.step_term(from, &msg) {
            self.step(from, msg);
        }
    }

    /// The term rules every message passes first (Raft §5.1). Returns whether
    /// the message is still to be handled.
    fn step_term(&mut self, from: NodeId, msg: &Message) -> bool {
        let msg_term = msg.term();
        if msg_term > self.term {
            match msg {
                Message::PreVote(req) | Message::RequestVote(req)
                    if !req.transfer && self.in_leader_lease() =>
                {
                    // Leader stickiness: we hear from a live leader, so a
                    // higher-term candidate is a disruption, not a need.
                    return false;
                }
                Message::PreVote(_) => {}
                Message::PreVoteResponse(r) if r.granted => {}
                Message::AppendEntries(_) | Message::Heartbeat(_) | Message::InstallSnapshot(_) => {
                    self.become_follower(msg_term, Some(from));
                }
                _ => self.become_follower(msg_term, None),
            }
        } else if msg_term < self.term {
            self.refuse_stale(from, msg);
            return false;
        }
        true
    }

    /// Answers a message from an older term with ours.
    fn refuse_stale(&mut self, from: NodeId, msg: &Message) {
        let term = self.term;
        match msg {
            Message::AppendEntries(_) | Message::Heartbeat(_) | Message::InstallSnapshot(_) => {
                // Tell a stale leader about the new term so it steps down
                // (Raft 5.1). Always, not only with pre-vote/check-quorum:
                // a removed stale leader hears from nobody else.
                self.send(
                    from,
                    Message::HeartbeatResponse(HeartbeatResponse { term, read_ctx: 0 }),
                );
            }
            Message::PreVote(_) => {
                let refusal = VoteResponse {
                    term,
                    granted: false,
                };
                self.send(from, Message::PreVoteResponse(refusal));
            }
            Message::RequestVote(_) => {
                let refusal = VoteResponse {
                    term,
                    granted: false,
                };
                self.send(from, Message::RequestVoteResponse(refusal));
            }
            _ => {}
        }
    }

    /// Handles a message of our own term.
    fn step(&mut self, from: NodeId, msg: Message) {
        let leader = self.role == Role::Leader;
        match msg {
            Message::PreVote(req) => self.handle_vote_request(from, req, true),
            Message::RequestVote(req) => self.handle_vote_request(from, req, false),
            Message::PreVoteResponse(r) => {
                // A grant carries the term we would campaign in; a refusal
                // carries the voter's own (not higher) term.
                let expected_term = if r.granted { self.term + 1 } else { self.term };
                if self.role == Role::PreCandidate && r.term == expected_term {
                    self.record_vote(from, r.granted);
                }
            }
            Message::RequestVoteResponse(r) => {
                if self.role == Role::Candidate && r.term == self.term {
                    self.record_vote(from, r.granted);
                }
            }
            Message::AppendEntries(m) => {
                if self.accept_leader(from) {
                    self.handle_append(from, m);
                }
            }
            Message::Heartbeat(m) => {
                if self.accept_leader(from) {
                    self.handle_heartbeat(from, m);
                }
            }
            Message::InstallSnapshot(m) => {
                if self.accept_leader(from) {
                    self.handle_snapshot_chunk(from, m);
                }
            }
            Message::AppendEntriesResponse(r) if leader => self.handle_append_response(from, r),
            Message::HeartbeatResponse(r) if leader => self.handle_heartbeat_response(from, r),
            Message::InstallSnapshotResponse(r) if leader => self.handle_snapshot_response(from, r),
            Message::AppendEntriesResponse(_)
            | Message::HeartbeatResponse(_)
            | Message::InstallSnapshotResponse(_) => {}
            Message::TimeoutNow { .. } => {
                if !leader && self.promotable() {
                    self.campaign(false, true);
                }
            }
            Message::ReadIndex { request_id, .. } => self.handle_read_index(from, request_id),
            Message::ReadIndexResponse {
                request_id, index, ..
            } => match index {
                Some(index) => self.outbox.read_ready(ReadState { request_id, index }),
                None => self.outbox.read_failed(request_id),
            },
        }
    }

    // ----- elections ----------------------------------------------------

    fn campaign(&mut self, pre_vote: bool, transfer: bool) {
        let voters: Vec<NodeId> = self.membership().voters().collect();
        self.votes.clear();
        self.leader = None;
        let vote_term = if pre_vote {
            self.role = Role::PreCandidate;
            self.term + 1
        } else {
            self.role = Role::Candidate;
            self.term += 1;
            self.voted_for = Some(self.id);
            self.term
        };
        if pre_vote {
            self.votes.record(self.id, true);
        } else {
            // Our own vote counts only once the new term and vote are
            // durable: a leader elected on a vote it could forget in a crash
            // could lead the same term twice with different entries (a
            // single-voter cluster would not even wait for a peer).
            self.votes.await_self_vote(self.persist.last_seq() + 1);
            self.count_self_vote_if_durable();
        }
        let req = VoteRequest {
            term: vote_term,
            last_log_index: self.log.last_index(),
            last_log_term: self.log.last_term(),
            transfer,
        };
        let me = self.id;
        for &peer in voters.iter().filter(|&&v| v != me) {
            if pre_vote {
                self.send(peer, Message::PreVote(req.clone()));
            } else {
                // The candidate's own term and vote must be durable first.
                self.send_after_persist(peer, Message::RequestVote(req.clone()));
            }
        }
        self.tally_votes();
    }

    fn count_self_vote_if_durable(&mut self) {
        if self.role == Role::Candidate
            && self.persist.is_durable(self.votes.self_vote_seq())
            && !self.votes.contains(self.id)
        {
            self.votes.record(self.id, true);
        }
    }

    fn handle_vote_request(&mut self, from: NodeId, req: VoteRequest, pre_vote: bool) {
        let can_vote = self.voted_for == Some(from)
            || (self.voted_for.is_none() && self.leader.is_none())
            || (pre_vote && req.term > self.term);
        let granted = can_vote
            && self
                .log
                .is_up_to_date(req.last_log_index, req.last_log_term);
        if pre_vote {
            let term = if granted { req.term } else { self.term };
            self.send(
                from,
                Message::PreVoteResponse(VoteResponse { term, granted }),
            );
            return;
        }
        if granted {
            self.voted_for = Some(from);
            self.reset_election_timer();
        }
        let term = self.term;
        self.send_after_persist(
            from,
            Message::RequestVoteResponse(VoteResponse { term, granted }),
        );
    }

    fn record_vote(&mut self, from: NodeId, granted: bool) {
        if self.membership().is_voter(from) {
            self.votes.record(from, granted);
            self.tally_votes();
        }
    }

    fn tally_votes(&mut self) {
        match self.votes.tally(self.memberships.latest()) {
            VoteResult::Won => match self.role {
                Role::PreCandidate => self.campaign(false, false),
                Role::Candidate => self.become_leader(),
                _ => {}
            },
            VoteResult::Lost => {
                let term = self.term;
                self.become_follower(term, None);
            }
            VoteResult::Pending => {}
        }
    }

    fn become_follower(&mut self, term: Term, leader: Option<NodeId>) {
        assert!(term >= self.term, "term never decreases");
        if term > self.term {
            self.term = term;
            self.voted_for = None;
        }
        if self.role == Role::Leader {
            self.fail_pending_reads();
        }
        self.role = Role::Follower;
        self.leader = leader;
        self.votes.clear();
        self.progress.clear();
        self.transfer_to = None;
        self.reset_election_timer();
        if leader.is_some() {
            self.last_leader_contact_ms = Some(self.now_ms);
        }
    }

    fn become_leader(&mut self) {
        assert_eq!(
            self.role,
            Role::Candidate,
            "only a candidate becomes leader"
        );
        self.role = Role::Leader;
        self.leader = Some(self.id);
        self.votes.clear();
        let next = self.log.last_index() + 1;
        self.progress
            .reset(self.memberships.latest(), self.id, next);
        self.term_start_index = next;
        let now_ms = self.now_ms;
        let heartbeat_at_ms = now_ms + self.config.heartbeat_interval_ms;
        self.timers.set(Timer::Heartbeat, heartbeat_at_ms);
        let check_quorum_at_ms = now_ms + self.config.election_timeout_min_ms;
        self.timers.set(Timer::CheckQuorum, check_quorum_at_ms);
        // The no-op: committing it commits every earlier-term entry, which a
        // leader never does by counting replicas (Raft §5.4.2).
        self.append_as_leader(vec![EntryPayload::Noop]);
    }

    fn accept_leader(&mut self, from: NodeId) -> bool {
        match self.role {
            Role::Leader => return false, // Same term, two leaders: impossible; ignore.
            Role::Candidate | Role::PreCandidate => {
                let term = self.term;
                self.become_follower(term, Some(from));
            }
            Role::Follower => {
                self.leader = Some(from);
                self.last_leader_contact_ms = Some(self.now_ms);
                self.reset_election_timer();
            }
        }
        true
    }

    /// Whether this node may campaign: a voter in its latest membership, or
    /// in the one before it while the latest is uncommitted. The second case
    /// matters when a leader removing itself loses leadership before the
    /// removal commits: it may hold the only complete log, and votes are
    /// still counted in the latest membership (whose majorities overlap the
    /// previous one's), so electing it is safe and keeps the cluster live.
    fn promotable(&self) -> bool {
        if self.membership().is_voter(self.id) {
            return true;
        }
        self.memberships
            .previous_if_uncommitted(self.commit_index)
            .is_some_and(|m| m.is_voter(self.id))
    }

    /// A node that its own latest membership removed (still promotable while
    /// that change is uncommitted) always pre-votes, whatever the config: it
    /// may campaign only to rescue a cluster whose only complete log it holds,
    /// and must not bump everyone's term otherwise (with neither pre-vote nor
    /// check-quorum it would keep deposing leaders before they can commit its
    /// removal: a livelock).
    fn use_pre_vote(&self) -> bool {
        self.config.pre_vote || !self.membership().is_voter(self.id)
    }

    fn in_leader_lease(&self) -> bool {
        if !self.config.check_quorum {
            return false;
        }
        if self.role == Role::Leader {
            return true;
        }
        match (self.leader, self.last_leader_contact_ms) {
            (Some(_), Some(t)) => self.now_ms < t + self.config.election_timeout_min_ms,
            _ => false,
        }
    }

    fn reset_election_timer(&mut self) {
        self.timers.reset_election(
            self.now_ms,
            self.config.election_timeout_min_ms,
            self.config.election_timeout_max_ms,
        );
    }

    // ----- replication: leader side -------------------------------------

    fn check_can_propose(&self, count: usize) -> Result<(), ProposalRefused> {
        if self.role != Role::Leader {
            return Err(ProposalRefused::NotLeader {
                leader_hint: self.leader,
            });
        }
        if self.transfer_to.is_some() {
            return Err(ProposalRefused::TransferInProgress);
        }
        let uncommitted = (self.log.last_index() - self.commit_index) as usize;
        if uncommitted + count > UNCOMMITTED_ENTRIES_MAX {
            return Err(ProposalRefused::Backpressure { uncommitted });
        }
        Ok(())
    }

    fn append_as_leader(&mut self, payloads: Vec<EntryPayload>) {
        let first = self.log.last_index() + 1;
        let entries: Vec<Entry> = payloads
            .into_iter()
            .enumerate()
            .map(|(i, payload)| Entry {
                term: self.term,
                index: first + i as u64,
                payload,
            })
            .collect();
        self.log.append(&entries);
        self.note_appended(&entries, first);
        // Batching: sends happen in `ready()`, so every proposal made before
        // the caller drains goes out in the same AppendEntries.
        self.broadcast_pending = true;
        self.maybe_commit();
    }

    /// Bookkeeping for entries that just entered the log.
    fn note_appended(&mut self, entries: &[Entry], first: LogIndex) {
        self.unwritten.appended(first);
        for e in entries {
            if self.memberships.appended(e) {
                self.on_membership_changed();
            }
        }
    }

    fn on_membership_changed(&mut self) {
        if self.role != Role::Leader {
            return;
        }
        let next = self.log.last_index() + 1;
        self.progress
            .sync_members(self.memberships.latest(), self.id, next);
    }

    /// The sending side of the leader: the followers' progress, fed from
    /// the replica's log, snapshots and outbox.
    fn feed(&mut self) -> (&mut ProgressTracker, Feed<'_>) {
        let feed = Feed {
            term: self.term,
            commit_index: self.commit_index,
            log: &self.log,
            config: &self.config,
            snapshots: &mut self.snapshots,
            outbox: &mut self.outbox,
        };
        (&mut self.progress, feed)
    }

    fn broadcast_append(&mut self) {
        let (progress, mut feed) = self.feed();
        progress.broadcast_append(&mut feed);
    }

    fn broadcast_heartbeat(&mut self) {
        let read_ctx = self.reads.latest_ctx();
        self.broadcast_heartbeat_with(read_ctx);
    }

    fn broadcast_heartbeat_with(&mut self, read_ctx: u64) {
        let (progress, mut feed) = self.feed();
        progress.broadcast_heartbeat(read_ctx, &mut feed);
    }

    /// See [`ProgressTracker::send_append`].
    fn send_append(&mut self, to: NodeId, allow_empty: bool) -> bool {
        let (progress, mut feed) = self.feed();
        progress.send_append(to, allow_empty, &mut feed)
    }

    fn handle_append_response(&mut self, from: NodeId, r: AppendEntriesResponse) {
        if !r.success {
            let (progress, mut feed) = self.feed();
            progress.handle_append_refusal(from, &r, &mut feed);
            return;
        }
        let last_index = self.log.last_index();
        if !self.progress.handle_append_ack(from, r.index, last_index) {
            return;
        }
        self.maybe_commit();
        if self.transfer_to == Some(from)
            && self
                .progress
                .get(from)
                .is_some_and(|p| p.match_index() == last_index)
        {
            let term = self.term;
            self.send(from, Message::TimeoutNow { term });
        }
        let (progress, mut feed) = self.feed();
        progress.send_more(from, &mut feed);
    }

    fn handle_heartbeat_response(&mut self, from: NodeId, r: HeartbeatResponse) {
        let (progress, mut feed) = self.feed();
        if !progress.handle_heartbeat_ack(from, &mut feed) {
            return;
        }
        if r.read_ctx > 0 && self.membership().is_voter(from) {
            self.reads.record_ack(from, r.read_ctx);
            self.release_confirmed_reads();
        }
    }

    /// Commits the highest current-term index a quorum of voters holds.
    fn maybe_commit(&mut self) {
        if self.role != Role::Leader {
            return;
        }
        // The leader counts itself only for what is durable.
        let Some(candidate) = self.progress.quorum_match_index(
            self.memberships.latest(),
            self.id,
            self.log.persisted_index(),
        ) else {
            return;
        };
        if candidate > self.commit_index && self.log.term_at(candidate) == Some(self.term) {
            self.commit_to(candidate);
            self.broadcast_pending = true;
            self.on_leader_commit();
        }
    }

    fn on_leader_commit(&mut self) {
        if self.commit_index >= self.term_start_index && self.reads.has_awaiting_commit() {
            for (origin, id) in self.reads.take_awaiting_commit() {
                self.start_read(origin, id);
            }
        }
        let change_index = self.memberships.last_change_index();
        if !self.membership().is_voter(self.id) && change_index <= self.commit_index {
            // Our removal is committed: step down, and hand over to the most
            // caught-up voter so the cluster does not wait for a timeout.
            let best = self
                .progress
                .most_caught_up_voter(self.memberships.latest());
            let term = self.term;
            if let Some(to) = best {
                self.send_append(to, true);
                self.send(to, Message::TimeoutNow { term });
            }
            self.become_follower(term, None);
        }
    }

    // ----- replication: follower side -----------------------------------

    fn handle_append(&mut self, from: NodeId, m: AppendEntries) {
        let term = self.term;
        if m.prev_log_index < self.commit_index {
            // Everything up to our commit index is already identical to the
            // leader's log; only the part after it can be new.
            let skip = (self.commit_index - m.prev_log_index) as usize;
            if skip >= m.entries.len() {
                let index = self.commit_index;
                self.send_after_persist(from, Message::append_ack(term, index));
                return;
            }
            let prev_log_index = self.commit_index;
            let prev_log_term = m.entries[skip - 1].term;
            if self.log.term_at(prev_log_index) != Some(prev_log_term) {
                // A committed entry differs from the leader's: cannot happen
                // in a correct cluster; refuse rather than corrupt.
                return;
            }
            let entries = m.entries[skip..].to_vec();
            return self.handle_append(
                from,
                AppendEntries {
                    prev_log_index,
                    prev_log_term,
                    entries,
                    ..m
                },
            );
        }
        if self.log.term_at(m.prev_log_index) != Some(m.prev_log_term) {
            self.refuse_append(from, &m);
            return;
        }
        self.append_new_entries(&m.entries);
        let last_new = m.prev_log_index + m.entries.len() as u64;
        self.commit_to(m.leader_commit.min(last_new));
        self.send_after_persist(from, Message::append_ack(term, last_new));
    }

    /// Our log does not hold the entry the append follows: refuse with a hint
    /// of where the logs may match (the last index of a term no newer than
    /// the leader's there), so the leader skips a whole conflicting term.
    fn refuse_append(&mut self, from: NodeId, m: &AppendEntries) {
        let (hint_index, hint_term) = self.log.conflict_hint(m.prev_log_index, m.prev_log_term);
        let term = self.term;
        let refusal = AppendEntriesResponse {
            term,
            index: m.prev_log_index,
            success: false,
            hint_index,
            hint_term,
        };
        self.send(from, Message::AppendEntriesResponse(refusal));
    }

    /// Appends the entries our log lacks (after the append's matching
    /// predecessor), cutting the log at a conflict first. Only a real
    /// conflict truncates: a stale or reordered append never removes newer
    /// matching entries.
    fn append_new_entries(&mut self, entries: &[Entry]) {
        let Some((i, conflict)) = self.log.find_conflict(entries) else {
            return;
        };
        let first = entries[i].index;
        if conflict {
            assert!(
                first > self.commit_index,
                "conflict at committed index {first}"
            );
            self.truncate_from(first);
        }
        self.log.append(&entries[i..]);
        self.note_appended(&entries[i..], first);
    }

    fn handle_heartbeat(&mut self, from: NodeId, m: Heartbeat) {
        let commit = m.commit.min(self.log.last_index());
        self.commit_to(commit);
        let term = self.term;
        let read_ctx = m.read_ctx;
        self.send(
            from,
            Message::HeartbeatResponse(HeartbeatResponse { term, read_ctx }),
        );
    }

    fn truncate_from(&mut self, from: LogIndex) {
        self.log.truncate_from(from);
        self.unwritten.truncated(from);
        self.persist.cap(from - 1);
        if self.memberships.truncate_from(from) {
            self.on_membership_changed();
        }
    }

    fn commit_to(&mut self, index: LogIndex) {
        if index > self.commit_index {
            assert!(index <= self.log.last_index(), "commit beyond the log");
            self.commit_index = index;
        }
    }

    // ----- snapshots ----------------------------------------------------

    fn handle_snapshot_response(&mut self, from: NodeId, r: InstallSnapshotResponse) {
        let (progress, mut feed) = self.feed();
        if progress.handle_snapshot_ack(from, &r, &mut feed) {
            self.maybe_commit();
            self.send_append(from, true);
        }
    }

    fn handle_snapshot_chunk(&mut self, from: NodeId, m: InstallSnapshot) {
        let term = self.term;
        let last_index = m.meta.last_index;
        if last_index <= self.commit_index {
            // We already hold (committed) everything it covers.
            let index = self.commit_index;
            self.send_after_persist(from, Message::snapshot_ack(term, index, 0, true));
            return;
        }
        let SnapshotToInstall { meta, data } = match self.snapshots.receive_chunk(m) {
            ChunkReceived::Incomplete { next_offset } => {
                let ack = Message::snapshot_ack(term, last_index, next_offset, false);
                self.send(from, ack);
                return;
            }
            ChunkReceived::Complete(snapshot) => snapshot,
        };
        if self.log.term_at(meta.last_index) == Some(meta.last_term) {
            // Our log already holds the snapshot's last entry: keep the log
            // (it matches), just commit up to there.
            self.commit_to(meta.last_index);
        } else {
            self.install_snapshot(meta.clone(), data);
        }
        let ack = Message::snapshot_ack(term, meta.last_index, 0, true);
        self.send_after_persist(from, ack);
    }

    fn install_snapshot(&mut self, meta: SnapshotMeta, data: Vec<u8>) {
        assert!(
            meta.last_index > self.commit_index,
            "never install over committed state"
        );
        self.log.reset_to_snapshot(meta.last_index, meta.last_term);
        // Batches handed out before this one wrote a log that no longer
        // matches: their durability says nothing about the snapshot.
        self.persist.cap(meta.last_index - 1);
        self.memberships.reset(meta.membership.clone());
        self.commit_index = meta.last_index;
        self.apply_cursor = meta.last_index;
        self.applied_index = self.applied_index.max(meta.last_index);
        self.snapshots.installed(meta.clone(), data.clone());
        self.unwritten
            .snapshot_installed(SnapshotToInstall { meta, data });
    }

    // ----- reads --------------------------------------------------------

    fn handle_read_index(&mut self, from: NodeId, request_id: u64) {
        if self.role == Role::Leader && !self.reads.is_full() {
            self.start_read(Some(from), request_id);
        } else {
            let term = self.term;
            self.send(
                from,
                Message::ReadIndexResponse {
                    term,
                    request_id,
                    index: None,
                },
            );
        }
    }

    fn start_read(&mut self, origin: Option<NodeId>, request_id: u64) {
        if self.commit_index < self.term_start_index {
            // A fresh leader does not know the commit index until its no-op
            // commits (Raft §6.4).
            self.reads.await_commit(origin, request_id);
            return;
        }
        let ctx = self
            .reads
            .start(origin, request_id, self.commit_index, self.id);
        self.release_confirmed_reads();
        if self.reads.has_unconfirmed() {
            self.broadcast_heartbeat_with(ctx);
        }
    }

    fn release_confirmed_reads(&mut self) {
        let membership = self.memberships.latest();
        self.reads
            .release_confirmed(membership, self.term, &mut self.outbox);
    }

    fn fail_pending_reads(&mut self) {
        self.reads.fail_all(self.term, &mut self.outbox);
    }

    // ----- plumbing -----------------------------------------------------

    fn advance_clock(&mut self, now_ms: u64) {
        // The caller's clock is monotonic; tolerate equal or stale values
        // (e.g. a message stamped before a tick) without moving backwards.
        self.now_ms = self.now_ms.max(now_ms);
    }

    fn hard_state(&self) -> HardState {
        HardState {
            term: self.term,
            voted_for: self.voted_for,
            // Never ahead of the log stored alongside it.
            commit_index: self.commit_index.min(self.log.last_index()),
        }
    }

    fn soft_state(&self) -> SoftState {
        SoftState {
            role: self.role,
            term: self.term,
            leader: self.leader,
        }
    }

    /// Committed entries may be applied only once durable here.
    fn appliable_index(&self) -> LogIndex {
        self.commit_index.min(self.log.persisted_index())
    }

    /// Whether state changed that the next Ready must write.
    fn has_unwritten(&self) -> bool {
        self.unwritten.has_log_writes()
            || self.unwritten.vote_changed(self.term, self.voted_for)
            || self.unwritten.commit_wanted(self.commit_index)
    }

    fn send(&mut self, to: NodeId, msg: Message) {
        self.outbox.send(to, msg);
    }

    /// Queues a message that promises state (a vote, an acknowledgement): it
    /// is released only once everything written so far is durable.
    fn send_after_persist(&mut self, to: NodeId, msg: Message) {
        let unwritten = self.has_unwritten();
        if let Some((to, msg)) = self.persist.send_after_persist(unwritten, to, msg) {
            self.send(to, msg);
        }
    }

    #[cfg(test)]
    pub(crate) fn log_entries(&self) -> &[Entry] {
        self.log.entries()
    }

    #[cfg(test)]
    pub(crate) fn log_term_at(&self, index: LogIndex) -> Option<Term> {
        self.log.term_at(index)
    }
}
