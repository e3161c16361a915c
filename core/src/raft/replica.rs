//! The Raft replica itself: every input (message, tick, proposal, durability
//! report) turns into state changes plus outputs queued for [`Replica::ready`].

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use super::config::{
    Config, ConfigError, HELD_MESSAGES_MAX, MAX_APPEND_ENTRIES, PENDING_READS_MAX,
    PROPOSAL_BATCH_MAX, PROPOSAL_BYTES_MAX, SNAPSHOT_BYTES_MAX, UNCOMMITTED_ENTRIES_MAX,
};
use super::log::RaftLog;
use super::message::{
    AppendEntries, AppendEntriesResponse, Heartbeat, HeartbeatResponse, InstallSnapshot,
    InstallSnapshotResponse, Message, VoteRequest, VoteResponse,
};
use super::types::{
    Entry, EntryPayload, HardState, LogIndex, Member, Membership, NodeId, SnapshotMeta, Term,
};
use crate::rng::SplitMix64;

/// Most committed entries handed out in one [`Ready`]; the rest follow in the
/// next one (bounded apply batches).
pub const APPLY_BATCH_ENTRIES_MAX: usize = 1024;
/// A learner may be promoted once its log is within this many entries of the
/// leader's.
pub const PROMOTE_LAG_ENTRIES_MAX: u64 = 64;

/// What a replica currently is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    Follower,
    PreCandidate,
    Candidate,
    Leader,
}

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

/// What storage held when the process started. Empty storage is
/// `RestoredState::default()`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RestoredState {
    pub hard_state: HardState,
    pub snapshot: Option<SnapshotMeta>,
    /// The entries after the snapshot, contiguous.
    pub entries: Vec<Entry>,
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
    /// Non-zero when this batch holds writes; report [`Replica::persisted`]
    /// with it once they (and every earlier batch's) are durable.
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
    /// after a restart): take one and call [`Replica::snapshot_taken`].
    pub snapshot_wanted: bool,
}

/// Why a proposal was refused. Nothing was appended.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProposeError {
    #[error("not the leader (leader hint: {leader_hint:?})")]
    NotLeader { leader_hint: Option<NodeId> },
    #[error("proposal is {bytes} bytes, more than {max}")]
    TooLarge { bytes: usize, max: usize },
    #[error("{count} proposals in one batch, more than {max} (or none)")]
    BadBatchSize { count: usize, max: usize },
    #[error("leadership transfer in progress")]
    TransferInProgress,
    #[error("{uncommitted} entries await commit; retry later")]
    Backpressure { uncommitted: usize },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReadIndexError {
    #[error("no leader known to serve the read (leader hint: {leader_hint:?})")]
    NotLeader { leader_hint: Option<NodeId> },
    #[error("too many reads pending")]
    TooManyPending,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransferError {
    #[error("not the leader (leader hint: {leader_hint:?})")]
    NotLeader { leader_hint: Option<NodeId> },
    #[error("node {0} is not a voter")]
    NotVoter(NodeId),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MembershipError {
    #[error("not the leader (leader hint: {leader_hint:?})")]
    NotLeader { leader_hint: Option<NodeId> },
    #[error("the previous membership change is not committed yet")]
    ChangeInProgress,
    #[error("the leader has not committed an entry of its own term yet")]
    LeaderTermNotCommitted,
    #[error("a change may add or remove at most one voter")]
    MoreThanOneVoterChanged,
    #[error("the membership would have no voters")]
    NoVoters,
    #[error("node {0} is not a member")]
    UnknownMember(NodeId),
    #[error("node {0} is already a member")]
    AlreadyMember(NodeId),
    #[error("node {id} is not caught up (match {match_index}, leader last {last_index})")]
    NotCaughtUp {
        id: NodeId,
        match_index: LogIndex,
        last_index: LogIndex,
    },
    #[error("leadership transfer in progress")]
    TransferInProgress,
    #[error(transparent)]
    Propose(#[from] ProposeError),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotError {
    #[error("snapshot index {index} is beyond what was handed out to apply ({applied})")]
    NotApplied { index: LogIndex, applied: LogIndex },
    #[error("snapshot index {index} is not newer than the current snapshot ({snapshot_index})")]
    Stale {
        index: LogIndex,
        snapshot_index: LogIndex,
    },
}

/// Replication progress of one member, as the leader sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberStatus {
    pub voter: bool,
    pub match_index: LogIndex,
    pub next_index: LogIndex,
    pub state: ProgressState,
}

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
    pub progress: BTreeMap<NodeId, MemberStatus>,
}

#[derive(Debug, Clone)]
struct Progress {
    match_index: LogIndex,
    next_index: LogIndex,
    state: ProgressState,
    /// Probe: an append is outstanding; wait for its answer or a heartbeat.
    probe_sent: bool,
    /// Replicate: last index of each unacknowledged append, ascending.
    inflight: VecDeque<LogIndex>,
    /// Heard from since the last check-quorum round.
    recent_active: bool,
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
            snapshot_index: 0,
            snapshot_offset: 0,
            snapshot_chunk_sent: false,
            commit_sent: 0,
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

#[derive(Debug, Clone)]
struct PendingRead {
    /// `None` for a local read, the follower's id for a forwarded one.
    origin: Option<NodeId>,
    request_id: u64,
    index: LogIndex,
    read_ctx: u64,
    acks: BTreeSet<NodeId>,
}

/// A snapshot being received chunk by chunk.
#[derive(Debug, Clone)]
struct SnapshotAssembly {
    meta: SnapshotMeta,
    data: Vec<u8>,
}

/// A batch handed to the caller whose durability is not yet reported: the log
/// prefix it makes durable (capped if a later truncation overwrote part).
#[derive(Debug, Clone, Copy)]
struct PendingPersist {
    seq: u64,
    last_index: LogIndex,
}

/// One Raft replica. See the module docs for the calling contract.
#[derive(Debug)]
pub struct Replica {
    config: Config,
    id: NodeId,
    rng: SplitMix64,
    now_ms: u64,

    term: Term,
    voted_for: Option<NodeId>,
    role: Role,
    leader: Option<NodeId>,

    log: RaftLog,
    commit_index: LogIndex,
    /// Highest index handed out in `Ready::committed` (or installed snapshot).
    apply_cursor: LogIndex,
    /// Highest index the caller reported applied.
    applied_index: LogIndex,

    /// Membership at the snapshot boundary (or the initial one).
    base_membership: Membership,
    /// Membership entries in the log after the snapshot, ascending by index.
    membership_log: Vec<(LogIndex, Membership)>,

    election_deadline_ms: u64,
    heartbeat_deadline_ms: u64,
    check_quorum_deadline_ms: u64,
    last_leader_contact_ms: Option<u64>,

    votes: BTreeMap<NodeId, bool>,
    progress: BTreeMap<NodeId, Progress>,
    /// First index of this leader's term (its no-op).
    term_start_index: LogIndex,
    /// The Ready whose durability makes a candidate's own vote count.
    self_vote_seq: u64,
    transfer_to: Option<NodeId>,
    transfer_deadline_ms: u64,
    broadcast_pending: bool,

    read_ctx: u64,
    pending_reads: VecDeque<PendingRead>,
    /// Reads on a fresh leader, waiting for its no-op to commit.
    reads_awaiting_commit: Vec<(Option<NodeId>, u64)>,

    /// Latest local snapshot bytes (taken here or installed from a leader).
    snapshot: Option<(SnapshotMeta, Vec<u8>)>,
    snapshot_wanted: bool,
    assembly: Option<SnapshotAssembly>,

    // Outputs not yet drained.
    messages: Vec<(NodeId, Message)>,
    held: Vec<(u64, NodeId, Message)>,
    read_states: Vec<ReadState>,
    failed_reads: Vec<u64>,
    last_hard_state: HardState,
    last_soft_state: SoftState,
    unwritten_from: Option<LogIndex>,
    unwritten_truncate: Option<LogIndex>,
    unwritten_snapshot: Option<SnapshotToInstall>,
    last_persist_seq: u64,
    persisted_seq: u64,
    pending_persists: VecDeque<PendingPersist>,
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
        let RestoredState {
            hard_state,
            snapshot,
            entries,
        } = restored;
        let storage_empty = snapshot.is_none() && entries.is_empty();
        let (snapshot_index, snapshot_term, base_membership) = match snapshot {
            Some(meta) => (meta.last_index, meta.last_term, meta.membership),
            None if storage_empty => (0, 0, initial_membership),
            None => (0, 0, Membership::default()),
        };
        let mut log = RaftLog::restore(snapshot_index, snapshot_term, entries);
        // Bootstrap: the founding membership becomes entry 1 (term 0), the
        // same on every founding member and committed by definition, so it
        // is stored like any other entry and survives restarts.
        let bootstrap = storage_empty && !base_membership.members.is_empty();
        let mut hard_state = hard_state;
        if bootstrap {
            log.append(&[Entry {
                term: 0,
                index: 1,
                payload: EntryPayload::Membership(base_membership.clone()),
            }]);
            hard_state.commit_index = 1;
        }
        let base_membership = if bootstrap {
            Membership::default()
        } else {
            base_membership
        };
        let membership_log = log
            .entries()
            .iter()
            .filter_map(|e| match &e.payload {
                EntryPayload::Membership(m) => Some((e.index, m.clone())),
                _ => None,
            })
            .collect();
        // A torn write may have kept the hard state but not every entry; the
        // commit index is recomputed from the cluster in that case.
        let commit_index = hard_state
            .commit_index
            .clamp(snapshot_index, log.last_index());
        let restored_hard_state = HardState {
            commit_index: if bootstrap { 0 } else { commit_index },
            ..hard_state
        };
        let id = config.id;
        let mut replica = Self {
            rng: SplitMix64::new(seed),
            id,
            now_ms,
            term: hard_state.term,
            voted_for: hard_state.voted_for,
            role: Role::Follower,
            leader: None,
            log,
            commit_index,
            apply_cursor: snapshot_index,
            applied_index: snapshot_index,
            base_membership,
            membership_log,
            election_deadline_ms: 0,
            heartbeat_deadline_ms: 0,
            check_quorum_deadline_ms: 0,
            last_leader_contact_ms: None,
            votes: BTreeMap::new(),
            progress: BTreeMap::new(),
            term_start_index: 0,
            self_vote_seq: 0,
            transfer_to: None,
            transfer_deadline_ms: 0,
            broadcast_pending: false,
            read_ctx: 0,
            pending_reads: VecDeque::new(),
            reads_awaiting_commit: Vec::new(),
            snapshot: None,
            snapshot_wanted: false,
            assembly: None,
            messages: Vec::new(),
            held: Vec::new(),
            read_states: Vec::new(),
            failed_reads: Vec::new(),
            last_hard_state: restored_hard_state,
            last_soft_state: SoftState {
                role: Role::Follower,
                term: hard_state.term,
                leader: None,
            },
            unwritten_from: bootstrap.then_some(1),
            unwritten_truncate: None,
            unwritten_snapshot: None,
            last_persist_seq: 0,
            persisted_seq: 0,
            pending_persists: VecDeque::new(),
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

    /// The membership in force: the latest one in the log, committed or not.
    pub fn membership(&self) -> &Membership {
        self.membership_log
            .last()
            .map_or(&self.base_membership, |(_, m)| m)
    }

    /// The membership in force at `index` (for snapshot metadata).
    pub fn membership_at(&self, index: LogIndex) -> &Membership {
        self.membership_log
            .iter()
            .rev()
            .find(|(i, _)| *i <= index)
            .map_or(&self.base_membership, |(_, m)| m)
    }

    /// When the caller should call [`Replica::tick`] next, at the latest.
    pub fn next_deadline_ms(&self) -> u64 {
        match self.role {
            Role::Leader => {
                let mut d = self.heartbeat_deadline_ms;
                if self.config.check_quorum {
                    d = d.min(self.check_quorum_deadline_ms);
                }
                if self.transfer_to.is_some() {
                    d = d.min(self.transfer_deadline_ms);
                }
                d
            }
            _ => self.election_deadline_ms,
        }
    }

    pub fn status(&self) -> Status {
        let membership = self.membership().clone();
        let progress = self
            .progress
            .iter()
            .map(|(id, pr)| {
                (
                    *id,
                    MemberStatus {
                        voter: membership.is_voter(*id),
                        match_index: pr.match_index,
                        next_index: pr.next_index,
                        state: pr.state,
                    },
                )
            })
            .collect();
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

    // ----- inputs -------------------------------------------------------

    /// Advances time: elections, heartbeats, check-quorum, transfer timeout.
    pub fn tick(&mut self, now_ms: u64) {
        self.advance_clock(now_ms);
        if self.role == Role::Leader {
            if self.transfer_to.is_some() && self.now_ms >= self.transfer_deadline_ms {
                self.transfer_to = None;
            }
            if self.config.check_quorum && self.now_ms >= self.check_quorum_deadline_ms {
                if !self.quorum_recently_active() {
                    let term = self.term;
                    self.become_follower(term, None);
                    return;
                }
                for pr in self.progress.values_mut() {
                    pr.recent_active = false;
                }
                self.check_quorum_deadline_ms = self.now_ms + self.config.election_timeout_min_ms;
            }
            if self.now_ms >= self.heartbeat_deadline_ms {
                self.heartbeat_deadline_ms = self.now_ms + self.config.heartbeat_interval_ms;
                self.broadcast_heartbeat();
            }
        } else if self.now_ms >= self.election_deadline_ms {
            self.reset_election_timer();
            if self.promotable() {
                self.campaign(self.use_pre_vote(), false);
            }
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
    pub fn propose(&mut self, data: Vec<u8>) -> Result<(Term, LogIndex), ProposeError> {
        self.propose_batch(vec![data])
            .map(|(term, first, _)| (term, first))
    }

    /// Appends several commands at once: `(term, first index, last index)`.
    pub fn propose_batch(
        &mut self,
        batch: Vec<Vec<u8>>,
    ) -> Result<(Term, LogIndex, LogIndex), ProposeError> {
        self.check_can_propose(batch.len())?;
        if batch.is_empty() || batch.len() > PROPOSAL_BATCH_MAX {
            return Err(ProposeError::BadBatchSize {
                count: batch.len(),
                max: PROPOSAL_BATCH_MAX,
            });
        }
        if let Some(big) = batch.iter().find(|d| d.len() > PROPOSAL_BYTES_MAX) {
            return Err(ProposeError::TooLarge {
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
                if self.pending_reads.len() + self.reads_awaiting_commit.len() >= PENDING_READS_MAX
                {
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
        self.transfer_deadline_ms = self.now_ms + self.config.election_timeout_max_ms;
        let caught_up = self
            .progress
            .get(&to)
            .is_some_and(|pr| pr.match_index == self.log.last_index());
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
        let change_index = self.membership_log.last().map_or(0, |(i, _)| *i);
        if change_index > self.commit_index {
            return Err(MembershipError::ChangeInProgress);
        }
        let current: BTreeSet<NodeId> = self.membership().voters().collect();
        let wanted: BTreeSet<NodeId> = next.voters().collect();
        if wanted.is_empty() {
            return Err(MembershipError::NoVoters);
        }
        if current.symmetric_difference(&wanted).count() > 1 {
            return Err(MembershipError::MoreThanOneVoterChanged);
        }
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
        if self.membership().contains(id) {
            return Err(MembershipError::AlreadyMember(id));
        }
        let mut next = self.membership().clone();
        next.members.insert(
            id,
            Member {
                voter: false,
                peer_addr,
                api_addr,
            },
        );
        self.propose_membership(next)
    }

    /// Makes a caught-up learner a voter.
    pub fn promote(&mut self, id: NodeId) -> Result<(Term, LogIndex), MembershipError> {
        if self.role != Role::Leader {
            return Err(MembershipError::NotLeader {
                leader_hint: self.leader,
            });
        }
        let mut next = self.membership().clone();
        let Some(member) = next.members.get_mut(&id) else {
            return Err(MembershipError::UnknownMember(id));
        };
        let match_index = self.progress.get(&id).map_or(0, |p| p.match_index);
        let last_index = self.log.last_index();
        if match_index + PROMOTE_LAG_ENTRIES_MAX < last_index {
            return Err(MembershipError::NotCaughtUp {
                id,
                match_index,
                last_index,
            });
        }
        member.voter = true;
        self.propose_membership(next)
    }

    /// Removes a member (voter or learner). Removing the leader itself makes
    /// it step down once the change commits.
    pub fn remove_member(&mut self, id: NodeId) -> Result<(Term, LogIndex), MembershipError> {
        let mut next = self.membership().clone();
        if next.members.remove(&id).is_none() {
            return Err(MembershipError::UnknownMember(id));
        }
        self.propose_membership(next)
    }

    /// The writes of the [`Ready`] numbered `persist_seq` (and of all earlier
    /// ones) are durable: releases held messages, lets the leader count
    /// itself, and lets committed entries up to there be applied.
    pub fn persisted(&mut self, persist_seq: u64) {
        if persist_seq <= self.persisted_seq {
            return;
        }
        assert!(
            persist_seq <= self.last_persist_seq,
            "persisted({persist_seq}) reports a batch never handed out (last {})",
            self.last_persist_seq
        );
        self.persisted_seq = persist_seq;
        while let Some(p) = self.pending_persists.front().copied() {
            if p.seq > persist_seq {
                break;
            }
            self.pending_persists.pop_front();
            self.log.mark_persisted(p.last_index);
        }
        match self.role {
            Role::Leader => self.maybe_commit(),
            Role::Candidate if !self.votes.contains_key(&self.id) => {
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
    ) -> Result<SnapshotMeta, SnapshotError> {
        if index > self.apply_cursor {
            return Err(SnapshotError::NotApplied {
                index,
                applied: self.apply_cursor,
            });
        }
        let snapshot_index = self.log.snapshot_index();
        if index < snapshot_index || (index == snapshot_index && self.snapshot.is_some()) {
            return Err(SnapshotError::Stale {
                index,
                snapshot_index: self.log.snapshot_index(),
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
        self.base_membership = meta.membership.clone();
        self.membership_log.retain(|(i, _)| *i > index);
        self.log.compact_to(index, term);
        self.snapshot = Some((meta.clone(), data));
        self.snapshot_wanted = false;
        Ok(meta)
    }

    /// Whether [`Replica::ready`] has anything to hand out.
    pub fn has_ready(&self) -> bool {
        self.broadcast_pending
            || !self.messages.is_empty()
            || self.unwritten_from.is_some()
            || self.unwritten_truncate.is_some()
            || self.unwritten_snapshot.is_some()
            || self.vote_unwritten()
            || self
                .held
                .iter()
                .any(|(seq, _, _)| *seq <= self.persisted_seq)
            || self.apply_cursor < self.appliable_index()
            || !self.read_states.is_empty()
            || !self.failed_reads.is_empty()
            || self.soft_state() != self.last_soft_state
            || self.snapshot_wanted
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
        let mut ready = Ready {
            snapshot: self.unwritten_snapshot.take(),
            truncate_from: self.unwritten_truncate.take(),
            ..Ready::default()
        };
        if let Some(from) = self.unwritten_from.take() {
            ready.entries = self.log.slice(from, self.log.last_index()).to_vec();
        }
        // Term and vote must be durable before anything that depends on
        // them goes out. The commit index need not be (Raft recovers it from
        // the cluster; a restarted node just applies less until told), so a
        // commit-only change rides along with the next write instead of
        // costing an fsync of its own (at one proposer that was an extra
        // sync per commit: 0.8 entries per fsync, now 1.0).
        let hard_state = self.hard_state();
        let writes =
            ready.snapshot.is_some() || ready.truncate_from.is_some() || !ready.entries.is_empty();
        if self.vote_unwritten() || (writes && hard_state != self.last_hard_state) {
            self.last_hard_state = hard_state;
            ready.hard_state = Some(hard_state);
        }
        if ready.snapshot.is_some()
            || ready.truncate_from.is_some()
            || !ready.entries.is_empty()
            || ready.hard_state.is_some()
        {
            self.last_persist_seq += 1;
            ready.persist_seq = self.last_persist_seq;
            self.pending_persists.push_back(PendingPersist {
                seq: self.last_persist_seq,
                last_index: self.log.last_index(),
            });
        }
        self.release_held();
        ready.messages = std::mem::take(&mut self.messages);
        let appliable = self.appliable_index();
        if self.apply_cursor < appliable {
            let to = appliable.min(self.apply_cursor + APPLY_BATCH_ENTRIES_MAX as u64);
            ready.committed = self.log.slice(self.apply_cursor + 1, to).to_vec();
            assert_eq!(
                ready.committed.len() as u64,
                to - self.apply_cursor,
                "committed entries are in the log"
            );
            self.apply_cursor = to;
        }
        ready.read_states = std::mem::take(&mut self.read_states);
        ready.failed_reads = std::mem::take(&mut self.failed_reads);
        let soft = self.soft_state();
        if soft != self.last_soft_state {
            self.last_soft_state = soft;
            ready.soft_state = Some(soft);
        }
        ready.snapshot_wanted = std::mem::take(&mut self.snapshot_wanted);
        ready
    }

    /// Handles one message from a peer.
    pub fn handle_message(&mut self, from: NodeId, msg: Message, now_ms: u64) {
        self.advance_clock(now_ms);
        if from == self.id || from == 0 || !well_formed(&msg) {
            return;
        }
        let msg_term = msg.term();
        if msg_term > self.term {
            match &msg {
                Message::PreVote(req) | Message::RequestVote(req)
                    if !req.transfer && self.in_leader_lease() =>
                {
                    // Leader stickiness: we hear from a live leader, so a
                    // higher-term candidate is a disruption, not a need.
                    return;
                }
                Message::PreVote(_) => {}
                Message::PreVoteResponse(r) if r.granted => {}
                Message::AppendEntries(_) | Message::Heartbeat(_) | Message::InstallSnapshot(_) => {
                    self.become_follower(msg_term, Some(from));
                }
                _ => self.become_follower(msg_term, None),
            }
        } else if msg_term < self.term {
            match msg {
                Message::AppendEntries(_) | Message::Heartbeat(_) | Message::InstallSnapshot(_) => {
                    // Tell a stale leader about the new term so it steps down
                    // (Raft 5.1). Always, not only with pre-vote/check-quorum:
                    // a removed stale leader hears from nobody else.
                    let term = self.term;
                    self.send(
                        from,
                        Message::HeartbeatResponse(HeartbeatResponse { term, read_ctx: 0 }),
                    );
                }
                Message::PreVote(_) => {
                    let term = self.term;
                    self.send(
                        from,
                        Message::PreVoteResponse(VoteResponse {
                            term,
                            granted: false,
                        }),
                    );
                }
                Message::RequestVote(_) => {
                    let term = self.term;
                    self.send(
                        from,
                        Message::RequestVoteResponse(VoteResponse {
                            term,
                            granted: false,
                        }),
                    );
                }
                _ => {}
            }
            return;
        }

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
                    let commit = m.commit.min(self.log.last_index());
                    self.commit_to(commit);
                    let term = self.term;
                    self.send(
                        from,
                        Message::HeartbeatResponse(HeartbeatResponse {
                            term,
                            read_ctx: m.read_ctx,
                        }),
                    );
                }
            }
            Message::InstallSnapshot(m) => {
                if self.accept_leader(from) {
                    self.handle_snapshot_chunk(from, m);
                }
            }
            Message::AppendEntriesResponse(r) => {
                if self.role == Role::Leader {
                    self.handle_append_response(from, r);
                }
            }
            Message::HeartbeatResponse(r) => {
                if self.role == Role::Leader {
                    self.handle_heartbeat_response(from, r);
                }
            }
            Message::InstallSnapshotResponse(r) => {
                if self.role == Role::Leader {
                    self.handle_snapshot_response(from, r);
                }
            }
            Message::TimeoutNow { .. } => {
                if self.role != Role::Leader && self.promotable() {
                    self.campaign(false, true);
                }
            }
            Message::ReadIndex { request_id, .. } => {
                let full = self.pending_reads.len() + self.reads_awaiting_commit.len()
                    >= PENDING_READS_MAX;
                if self.role == Role::Leader && !full {
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
            Message::ReadIndexResponse {
                request_id, index, ..
            } => match index {
                Some(index) => self.read_states.push(ReadState { request_id, index }),
                None => self.failed_reads.push(request_id),
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
            self.votes.insert(self.id, true);
        } else {
            // Our own vote counts only once the new term and vote are
            // durable: a leader elected on a vote it could forget in a crash
            // could lead the same term twice with different entries (a
            // single-voter cluster would not even wait for a peer).
            self.self_vote_seq = self.last_persist_seq + 1;
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
            let msg = if pre_vote {
                Message::PreVote(req.clone())
            } else {
                Message::RequestVote(req.clone())
            };
            if pre_vote {
                self.send(peer, msg);
            } else {
                // The candidate's own term and vote must be durable first.
                self.send_after_persist(peer, msg);
            }
        }
        self.tally_votes();
    }

    fn count_self_vote_if_durable(&mut self) {
        if self.role == Role::Candidate
            && self.persisted_seq >= self.self_vote_seq
            && !self.votes.contains_key(&self.id)
        {
            self.votes.insert(self.id, true);
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
            self.votes.entry(from).or_insert(granted);
            self.tally_votes();
        }
    }

    fn tally_votes(&mut self) {
        let membership = self.membership();
        let quorum = membership.quorum();
        let voters = membership.voters().count();
        let granted = self
            .votes
            .iter()
            .filter(|(id, g)| **g && membership.is_voter(**id))
            .count();
        let rejected = self
            .votes
            .iter()
            .filter(|(id, g)| !**g && membership.is_voter(**id))
            .count();
        if granted >= quorum {
            match self.role {
                Role::PreCandidate => self.campaign(false, false),
                Role::Candidate => self.become_leader(),
                _ => {}
            }
        } else if rejected > voters - quorum {
            let term = self.term;
            self.become_follower(term, None);
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
        let members: Vec<NodeId> = self.membership().members.keys().copied().collect();
        self.progress = members
            .into_iter()
            .filter(|&m| m != self.id)
            .map(|m| (m, Progress::new(next)))
            .collect();
        self.term_start_index = next;
        self.heartbeat_deadline_ms = self.now_ms + self.config.heartbeat_interval_ms;
        self.check_quorum_deadline_ms = self.now_ms + self.config.election_timeout_min_ms;
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
        match self.membership_log.last() {
            Some((index, _)) if *index > self.commit_index => {
                self.membership_at(index - 1).is_voter(self.id)
            }
            _ => false,
        }
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

    fn quorum_recently_active(&self) -> bool {
        let membership = self.membership();
        let active = membership
            .voters()
            .filter(|v| *v == self.id || self.progress.get(v).is_some_and(|p| p.recent_active))
            .count();
        active >= membership.quorum()
    }

    fn reset_election_timer(&mut self) {
        let jitter = self.rng.range_u64(
            self.config.election_timeout_min_ms,
            self.config.election_timeout_max_ms,
        );
        self.election_deadline_ms = self.now_ms + jitter;
    }

    // ----- replication: leader side -------------------------------------

    fn check_can_propose(&self, count: usize) -> Result<(), ProposeError> {
        if self.role != Role::Leader {
            return Err(ProposeError::NotLeader {
                leader_hint: self.leader,
            });
        }
        if self.transfer_to.is_some() {
            return Err(ProposeError::TransferInProgress);
        }
        let uncommitted = (self.log.last_index() - self.commit_index) as usize;
        if uncommitted + count > UNCOMMITTED_ENTRIES_MAX {
            return Err(ProposeError::Backpressure { uncommitted });
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
        self.unwritten_from = Some(self.unwritten_from.map_or(first, |f| f.min(first)));
        for e in entries {
            if let EntryPayload::Membership(m) = &e.payload {
                self.membership_log.push((e.index, m.clone()));
                self.on_membership_changed();
            }
        }
    }

    fn on_membership_changed(&mut self) {
        if self.role != Role::Leader {
            return;
        }
        let members: Vec<NodeId> = self.membership().members.keys().copied().collect();
        let next = self.log.last_index() + 1;
        self.progress.retain(|id, _| members.contains(id));
        for m in members {
            if m != self.id {
                self.progress
                    .entry(m)
                    .or_insert_with(|| Progress::new(next));
            }
        }
    }

    fn broadcast_append(&mut self) {
        let peers: Vec<NodeId> = self.progress.keys().copied().collect();
        for peer in peers {
            let behind = self
                .progress
                .get(&peer)
                .is_some_and(|p| p.commit_sent < self.commit_index);
            self.send_append(peer, behind);
            while self.send_append(peer, false) {}
        }
    }

    fn broadcast_heartbeat(&mut self) {
        let read_ctx = self.pending_reads.back().map_or(0, |r| r.read_ctx);
        self.broadcast_heartbeat_with(read_ctx);
    }

    fn broadcast_heartbeat_with(&mut self, read_ctx: u64) {
        let term = self.term;
        let commit_index = self.commit_index;
        let sends: Vec<(NodeId, Message)> = self
            .progress
            .iter_mut()
            .map(|(id, pr)| {
                let commit = commit_index.min(pr.match_index);
                pr.commit_sent = pr.commit_sent.max(commit);
                (
                    *id,
                    Message::Heartbeat(Heartbeat {
                        term,
                        commit,
                        read_ctx,
                    }),
                )
            })
            .collect();
        for (to, msg) in sends {
            self.send(to, msg);
        }
    }

    /// Sends the next AppendEntries (or snapshot chunk) to `to` if flow
    /// control allows. With `allow_empty`, an append carrying no entries is
    /// still sent (to carry the commit index or re-probe). Returns whether an
    /// append with entries went out.
    fn send_append(&mut self, to: NodeId, allow_empty: bool) -> bool {
        let Some(pr) = self.progress.get(&to) else {
            return false;
        };
        match pr.state {
            ProgressState::Snapshot => return false,
            ProgressState::Probe if pr.probe_sent => return false,
            ProgressState::Replicate if pr.inflight.len() >= self.config.max_inflight_appends => {
                return false
            }
            _ => {}
        }
        let prev_log_index = pr.next_index - 1;
        let Some(prev_log_term) = self.log.term_at(prev_log_index) else {
            self.start_snapshot(to);
            return false;
        };
        let entries = self.batch_from(pr.next_index);
        if entries.is_empty() && !allow_empty {
            return false;
        }
        let last = prev_log_index + entries.len() as u64;
        let has_entries = !entries.is_empty();
        let msg = Message::AppendEntries(AppendEntries {
            term: self.term,
            prev_log_index,
            prev_log_term,
            entries,
            leader_commit: self.commit_index,
        });
        let pr = self.progress.get_mut(&to).expect("checked above");
        pr.commit_sent = pr.commit_sent.max(self.commit_index.min(last));
        match pr.state {
            ProgressState::Probe => pr.probe_sent = true,
            ProgressState::Replicate => {
                pr.next_index = last + 1;
                pr.inflight.push_back(last);
            }
            ProgressState::Snapshot => unreachable!("returned above"),
        }
        self.send(to, msg);
        has_entries
    }

    fn batch_from(&self, from: LogIndex) -> Vec<Entry> {
        let to = from + self.config.max_append_entries.min(MAX_APPEND_ENTRIES) as u64 - 1;
        let mut bytes = 0usize;
        let mut batch = Vec::new();
        for e in self.log.slice(from, to) {
            let size = entry_size_bytes(e);
            if !batch.is_empty() && bytes + size > self.config.max_append_bytes {
                break;
            }
            bytes += size;
            batch.push(e.clone());
        }
        batch
    }

    fn handle_append_response(&mut self, from: NodeId, r: AppendEntriesResponse) {
        let last_index = self.log.last_index();
        let Some(pr) = self.progress.get_mut(&from) else {
            return;
        };
        pr.recent_active = true;
        if r.success {
            if r.index > last_index {
                return; // Malformed: acknowledges entries we never sent.
            }
            if r.index > pr.match_index {
                pr.match_index = r.index;
            }
            pr.next_index = pr.next_index.max(r.index + 1);
            while pr.inflight.front().is_some_and(|&i| i <= r.index) {
                pr.inflight.pop_front();
            }
            match pr.state {
                ProgressState::Probe => pr.become_replicate(),
                ProgressState::Snapshot if pr.match_index >= pr.snapshot_index => pr.become_probe(),
                _ => {}
            }
            self.maybe_commit();
            if self.transfer_to == Some(from)
                && self
                    .progress
                    .get(&from)
                    .is_some_and(|p| p.match_index == last_index)
            {
                let term = self.term;
                self.send(from, Message::TimeoutNow { term });
            }
            while self.send_append(from, false) {}
            let behind = self
                .progress
                .get(&from)
                .is_some_and(|p| p.commit_sent < self.commit_index);
            if behind {
                self.send_append(from, true);
            }
        } else {
            // Fast backtracking: jump over the follower's conflicting term.
            let probe_to = if r.hint_term > 0 {
                self.log
                    .last_index_with_term_at_most(r.hint_index, r.hint_term)
            } else {
                r.hint_index
            };
            let pr = self.progress.get_mut(&from).expect("looked up above");
            match pr.state {
                ProgressState::Replicate => {
                    if r.index <= pr.match_index {
                        return; // Stale: about entries already matched.
                    }
                    pr.next_index = (probe_to + 1).min(r.index).max(pr.match_index + 1);
                    pr.become_probe();
                }
                ProgressState::Probe => {
                    if r.index + 1 != pr.next_index {
                        return; // Stale: not the probe we are waiting for.
                    }
                    pr.next_index = (probe_to + 1).min(r.index).max(pr.match_index + 1);
                    pr.probe_sent = false;
                }
                ProgressState::Snapshot => return,
            }
            self.send_append(from, true);
        }
    }

    fn handle_heartbeat_response(&mut self, from: NodeId, r: HeartbeatResponse) {
        let last_index = self.log.last_index();
        let Some(pr) = self.progress.get_mut(&from) else {
            return;
        };
        pr.recent_active = true;
        pr.probe_sent = false;
        if pr.state == ProgressState::Replicate
            && pr.inflight.len() >= self.config.max_inflight_appends
        {
            // Appends may have been lost: free a slot so replication resumes.
            pr.inflight.pop_front();
        }
        if pr.state == ProgressState::Snapshot {
            // The outstanding chunk may have been lost: resend it.
            pr.snapshot_chunk_sent = false;
            self.send_snapshot_chunk(from);
        } else if pr.match_index < last_index {
            self.send_append(from, true);
        }
        if r.read_ctx > 0 && self.membership().is_voter(from) {
            for read in self.pending_reads.iter_mut() {
                if read.read_ctx <= r.read_ctx {
                    read.acks.insert(from);
                }
            }
            self.release_confirmed_reads();
        }
    }

    /// Commits the highest current-term index a quorum of voters holds.
    fn maybe_commit(&mut self) {
        if self.role != Role::Leader {
            return;
        }
        let membership = self.membership();
        let mut matches: Vec<LogIndex> = membership
            .voters()
            .map(|v| {
                if v == self.id {
                    // The leader counts itself only for what is durable.
                    self.log.persisted_index()
                } else {
                    self.progress.get(&v).map_or(0, |p| p.match_index)
                }
            })
            .collect();
        if matches.is_empty() {
            return;
        }
        matches.sort_unstable_by(|a, b| b.cmp(a));
        let candidate = matches[membership.quorum() - 1];
        if candidate > self.commit_index && self.log.term_at(candidate) == Some(self.term) {
            self.commit_to(candidate);
            self.broadcast_pending = true;
            self.on_leader_commit();
        }
    }

    fn on_leader_commit(&mut self) {
        if self.commit_index >= self.term_start_index && !self.reads_awaiting_commit.is_empty() {
            for (origin, id) in std::mem::take(&mut self.reads_awaiting_commit) {
                self.start_read(origin, id);
            }
        }
        let change_index = self.membership_log.last().map_or(0, |(i, _)| *i);
        if !self.membership().is_voter(self.id) && change_index <= self.commit_index {
            // Our removal is committed: step down, and hand over to the most
            // caught-up voter so the cluster does not wait for a timeout.
            let best = self
                .progress
                .iter()
                .filter(|(id, _)| self.membership().is_voter(**id))
                .max_by_key(|(id, p)| (p.match_index, std::cmp::Reverse(**id)))
                .map(|(id, _)| *id);
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
                self.send_after_persist(from, append_ack(term, index));
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
            let hint_index = m.prev_log_index.min(self.log.last_index());
            let hint_index = self
                .log
                .last_index_with_term_at_most(hint_index, m.prev_log_term);
            let hint_term = self.log.term_at(hint_index).unwrap_or(0);
            self.send(
                from,
                Message::AppendEntriesResponse(AppendEntriesResponse {
                    term,
                    index: m.prev_log_index,
                    success: false,
                    hint_index,
                    hint_term,
                }),
            );
            return;
        }
        // Truncate only at a real conflict: entries we already hold with the
        // same term are identical (log matching) and are kept, so a stale or
        // reordered append never removes newer matching entries.
        let mut new_from = None;
        for (i, e) in m.entries.iter().enumerate() {
            match self.log.term_at(e.index) {
                Some(t) if t == e.term => continue,
                Some(_) => {
                    assert!(
                        e.index > self.commit_index,
                        "conflict at committed index {}",
                        e.index
                    );
                    self.truncate_from(e.index);
                    new_from = Some(i);
                    break;
                }
                None => {
                    new_from = Some(i);
                    break;
                }
            }
        }
        if let Some(i) = new_from {
            let first = m.entries[i].index;
            self.log.append(&m.entries[i..]);
            self.note_appended(&m.entries[i..], first);
        }
        let last_new = m.prev_log_index + m.entries.len() as u64;
        self.commit_to(m.leader_commit.min(last_new));
        self.send_after_persist(from, append_ack(term, last_new));
    }

    fn truncate_from(&mut self, from: LogIndex) {
        self.log.truncate_from(from);
        self.unwritten_truncate = Some(self.unwritten_truncate.map_or(from, |t| t.min(from)));
        if let Some(f) = self.unwritten_from {
            if f >= from {
                self.unwritten_from = None;
            }
        }
        self.cap_pending_persists(from - 1);
        let before = self.membership_log.len();
        self.membership_log.retain(|(i, _)| *i < from);
        if self.membership_log.len() != before {
            self.on_membership_changed();
        }
    }

    /// Earlier batches no longer make anything after `limit` durable.
    fn cap_pending_persists(&mut self, limit: LogIndex) {
        for p in self.pending_persists.iter_mut() {
            p.last_index = p.last_index.min(limit);
        }
    }

    fn commit_to(&mut self, index: LogIndex) {
        if index > self.commit_index {
            assert!(index <= self.log.last_index(), "commit beyond the log");
            self.commit_index = index;
        }
    }

    // ----- snapshots ----------------------------------------------------

    fn start_snapshot(&mut self, to: NodeId) {
        let Some((meta, _)) = &self.snapshot else {
            self.snapshot_wanted = true;
            return;
        };
        let snapshot_index = meta.last_index;
        let pr = self.progress.get_mut(&to).expect("caller checked");
        pr.state = ProgressState::Snapshot;
        pr.inflight.clear();
        pr.snapshot_index = snapshot_index;
        pr.snapshot_offset = 0;
        pr.snapshot_chunk_sent = false;
        self.send_snapshot_chunk(to);
    }

    fn send_snapshot_chunk(&mut self, to: NodeId) {
        let Some((meta, data)) = &self.snapshot else {
            self.snapshot_wanted = true;
            return;
        };
        let Some(pr) = self.progress.get_mut(&to) else {
            return;
        };
        if pr.snapshot_chunk_sent {
            return;
        }
        if pr.snapshot_index != meta.last_index {
            // A newer snapshot replaced the one being sent: start over.
            pr.snapshot_index = meta.last_index;
            pr.snapshot_offset = 0;
        }
        let start = (pr.snapshot_offset as usize).min(data.len());
        let end = (start + self.config.snapshot_chunk_bytes).min(data.len());
        pr.snapshot_chunk_sent = true;
        let msg = Message::InstallSnapshot(InstallSnapshot {
            term: self.term,
            meta: meta.clone(),
            offset: start as u64,
            data: data[start..end].to_vec(),
            done: end == data.len(),
        });
        self.send(to, msg);
    }

    fn handle_snapshot_response(&mut self, from: NodeId, r: InstallSnapshotResponse) {
        let last_index = self.log.last_index();
        let Some(pr) = self.progress.get_mut(&from) else {
            return;
        };
        pr.recent_active = true;
        if r.done {
            if r.last_index > last_index {
                return;
            }
            pr.match_index = pr.match_index.max(r.last_index);
            if pr.state == ProgressState::Snapshot {
                pr.next_index = pr.match_index + 1;
                pr.become_probe();
            }
            self.maybe_commit();
            self.send_append(from, true);
            return;
        }
        if pr.state == ProgressState::Snapshot && r.last_index == pr.snapshot_index {
            pr.snapshot_offset = r.next_offset;
            pr.snapshot_chunk_sent = false;
            self.send_snapshot_chunk(from);
        }
    }

    fn handle_snapshot_chunk(&mut self, from: NodeId, m: InstallSnapshot) {
        let term = self.term;
        let last_index = m.meta.last_index;
        if last_index <= self.commit_index {
            // We already hold (committed) everything it covers.
            let index = self.commit_index;
            self.send_after_persist(from, snapshot_ack(term, index, 0, true));
            return;
        }
        let same = |a: &SnapshotAssembly| {
            a.meta.last_index == m.meta.last_index && a.meta.last_term == m.meta.last_term
        };
        if m.offset == 0 {
            self.assembly = Some(SnapshotAssembly {
                meta: m.meta.clone(),
                data: Vec::new(),
            });
        }
        let matches_assembly = self.assembly.as_ref().is_some_and(same);
        let expected = match &self.assembly {
            Some(a) if matches_assembly => a.data.len() as u64,
            _ => 0,
        };
        if !matches_assembly || m.offset != expected {
            self.send(from, snapshot_ack(term, last_index, expected, false));
            return;
        }
        if expected as usize + m.data.len() > SNAPSHOT_BYTES_MAX {
            self.assembly = None;
            self.send(from, snapshot_ack(term, last_index, 0, false));
            return;
        }
        let assembly = self.assembly.as_mut().expect("checked same above");
        assembly.data.extend_from_slice(&m.data);
        if !m.done {
            let next = assembly.data.len() as u64;
            self.send(from, snapshot_ack(term, last_index, next, false));
            return;
        }
        let SnapshotAssembly { meta, data } = self.assembly.take().expect("checked above");
        if self.log.term_at(meta.last_index) == Some(meta.last_term) {
            // Our log already holds the snapshot's last entry: keep the log
            // (it matches), just commit up to there.
            self.commit_to(meta.last_index);
        } else {
            self.install_snapshot(meta.clone(), data);
        }
        self.send_after_persist(from, snapshot_ack(term, meta.last_index, 0, true));
    }

    fn install_snapshot(&mut self, meta: SnapshotMeta, data: Vec<u8>) {
        assert!(
            meta.last_index > self.commit_index,
            "never install over committed state"
        );
        self.log.reset_to_snapshot(meta.last_index, meta.last_term);
        // Batches handed out before this one wrote a log that no longer
        // matches: their durability says nothing about the snapshot.
        self.cap_pending_persists(meta.last_index - 1);
        self.unwritten_from = None;
        self.unwritten_truncate = None;
        self.base_membership = meta.membership.clone();
        self.membership_log.clear();
        self.commit_index = meta.last_index;
        self.apply_cursor = meta.last_index;
        self.applied_index = self.applied_index.max(meta.last_index);
        self.snapshot = Some((meta.clone(), data.clone()));
        self.unwritten_snapshot = Some(SnapshotToInstall { meta, data });
    }

    // ----- reads --------------------------------------------------------

    fn start_read(&mut self, origin: Option<NodeId>, request_id: u64) {
        if self.commit_index < self.term_start_index {
            // A fresh leader does not know the commit index until its no-op
            // commits (Raft §6.4).
            self.reads_awaiting_commit.push((origin, request_id));
            return;
        }
        self.read_ctx += 1;
        let mut acks = BTreeSet::new();
        acks.insert(self.id);
        self.pending_reads.push_back(PendingRead {
            origin,
            request_id,
            index: self.commit_index,
            read_ctx: self.read_ctx,
            acks,
        });
        self.release_confirmed_reads();
        if !self.pending_reads.is_empty() {
            let ctx = self.read_ctx;
            self.broadcast_heartbeat_with(ctx);
        }
    }

    fn release_confirmed_reads(&mut self) {
        loop {
            let membership = self.membership();
            let confirmed = self.pending_reads.front().is_some_and(|r| {
                r.acks.iter().filter(|id| membership.is_voter(**id)).count() >= membership.quorum()
            });
            if !confirmed {
                break;
            }
            let read = self.pending_reads.pop_front().expect("front exists");
            self.deliver_read(read.origin, read.request_id, Some(read.index));
        }
    }

    fn deliver_read(&mut self, origin: Option<NodeId>, request_id: u64, index: Option<LogIndex>) {
        match (origin, index) {
            (None, Some(index)) => self.read_states.push(ReadState { request_id, index }),
            (None, None) => self.failed_reads.push(request_id),
            (Some(to), index) => {
                let term = self.term;
                self.send(
                    to,
                    Message::ReadIndexResponse {
                        term,
                        request_id,
                        index,
                    },
                );
            }
        }
    }

    fn fail_pending_reads(&mut self) {
        let reads: Vec<(Option<NodeId>, u64)> = self
            .pending_reads
            .drain(..)
            .map(|r| (r.origin, r.request_id))
            .chain(self.reads_awaiting_commit.drain(..))
            .collect();
        for (origin, id) in reads {
            self.deliver_read(origin, id, None);
        }
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

    fn has_unwritten(&self) -> bool {
        self.unwritten_from.is_some()
            || self.unwritten_truncate.is_some()
            || self.unwritten_snapshot.is_some()
            || self.vote_unwritten()
    }

    /// Whether term or vote changed since the last hard state handed out
    /// (a commit-only change is not a write of its own; see `ready`).
    fn vote_unwritten(&self) -> bool {
        self.term != self.last_hard_state.term || self.voted_for != self.last_hard_state.voted_for
    }

    fn send(&mut self, to: NodeId, msg: Message) {
        self.messages.push((to, msg));
    }

    /// Queues a message that promises state (a vote, an acknowledgement): it
    /// is released only once everything written so far is durable.
    fn send_after_persist(&mut self, to: NodeId, msg: Message) {
        let needed = if self.has_unwritten() {
            self.last_persist_seq + 1
        } else {
            self.last_persist_seq
        };
        if needed <= self.persisted_seq {
            self.send(to, msg);
        } else if self.held.len() < HELD_MESSAGES_MAX {
            self.held.push((needed, to, msg));
        }
        // Else dropped: the peer retries, and memory stays bounded.
    }

    fn release_held(&mut self) {
        let persisted = self.persisted_seq;
        let (ready, waiting): (Vec<_>, Vec<_>) = self
            .held
            .drain(..)
            .partition(|(seq, _, _)| *seq <= persisted);
        self.held = waiting;
        self.messages
            .extend(ready.into_iter().map(|(_, to, msg)| (to, msg)));
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

fn append_ack(term: Term, index: LogIndex) -> Message {
    Message::AppendEntriesResponse(AppendEntriesResponse {
        term,
        index,
        success: true,
        hint_index: 0,
        hint_term: 0,
    })
}

fn snapshot_ack(term: Term, last_index: LogIndex, next_offset: u64, done: bool) -> Message {
    Message::InstallSnapshotResponse(InstallSnapshotResponse {
        term,
        last_index,
        next_offset,
        done,
    })
}

/// Rough encoded size of an entry, for batching limits.
fn entry_size_bytes(e: &Entry) -> usize {
    const OVERHEAD: usize = 24;
    OVERHEAD
        + match &e.payload {
            EntryPayload::Noop => 0,
            EntryPayload::Command(d) => d.len(),
            EntryPayload::Membership(m) => m
                .members
                .values()
                .map(|x| 16 + x.peer_addr.len() + x.api_addr.len())
                .sum(),
        }
}

/// Largest term, index, offset or id a message may carry. Real values are
/// far below; the bound keeps `+ 1` arithmetic on peer-supplied numbers from
/// overflowing.
pub const WIRE_NUMBER_MAX: u64 = 1 << 62;

/// Semantic checks on a decoded message from outside: a malformed one is
/// dropped instead of tripping an assertion or overflowing.
fn well_formed(msg: &Message) -> bool {
    let ok = |values: &[u64]| values.iter().all(|v| *v <= WIRE_NUMBER_MAX);
    match msg {
        Message::PreVote(m) | Message::RequestVote(m) => {
            ok(&[m.term, m.last_log_index, m.last_log_term])
        }
        Message::PreVoteResponse(m) | Message::RequestVoteResponse(m) => ok(&[m.term]),
        Message::AppendEntries(m) => {
            if m.entries.len() > MAX_APPEND_ENTRIES
                || !ok(&[m.term, m.prev_log_index, m.prev_log_term, m.leader_commit])
                || m.prev_log_term > m.term
            {
                return false;
            }
            let mut prev_term = m.prev_log_term;
            for (i, e) in m.entries.iter().enumerate() {
                if e.index != m.prev_log_index + 1 + i as u64
                    || e.term < prev_term
                    || e.term > m.term
                {
                    return false;
                }
                prev_term = e.term;
            }
            true
        }
        Message::AppendEntriesResponse(m) => ok(&[m.term, m.index, m.hint_index, m.hint_term]),
        Message::Heartbeat(m) => ok(&[m.term, m.commit]),
        Message::HeartbeatResponse(m) => ok(&[m.term]),
        Message::InstallSnapshot(m) => {
            ok(&[m.term, m.meta.last_index, m.meta.last_term, m.offset])
                && m.meta.last_term <= m.term
                && m.meta.last_index > 0
        }
        Message::InstallSnapshotResponse(m) => ok(&[m.term, m.last_index, m.next_offset]),
        Message::TimeoutNow { term } | Message::ReadIndex { term, .. } => ok(&[*term]),
        Message::ReadIndexResponse { term, index, .. } => ok(&[*term, index.unwrap_or(0)]),
    }
}
