//! The Raft actor: the one task that owns a node's Raft replica, lock state
//! machine and lease tracker, and drives them with real IO (storage actor,
//! peer actors, clock) following the core's `Ready` ordering contract.
//! (Over 1,000 lines: the event loop, the Ready path and the apply path of
//! one actor read best together; its sub-state has its own files: `pending`,
//! `forward`, `seen_forwards`, `incarnation`, `cluster_time`, `peer_set`,
//! `status`, `observer`.)
//!
//! Event loop (one `biased` select, highest priority first): shutdown,
//! storage durability reports, inbound peer messages, client requests, the
//! timer (Raft deadline or the ~100 ms maintenance tick). After every input
//! the actor drains `ready()`:
//! 1. the writes go to the storage actor as one `WriteBatch` carrying the
//!    Ready's `persist_seq`; the storage actor publishes the highest
//!    `persist_seq` it has synced, which goes straight to
//!    `replica.persisted` — a failed sync is never reported as durable;
//! 2. messages go to the peer actors;
//! 3. committed entries are applied to the lock state machine in order;
//! 4. reads are served once applied reaches their index;
//! 5. role changes are logged; snapshots are taken when asked or past the
//!    threshold.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use deadbolt_core::lock::{
    Acquire, Applied, Command, Configure, Envelope, Event, ExpireSessions, Idempotency,
    LeaseTracker, LockStateMachine, Reply, Withdraw,
};
use deadbolt_core::raft::{
    self, Entry, EntryPayload, LogIndex, NodeId, Ready, Replica, Role, SnapshotToInstall, Term,
};
use tokio::sync::{mpsc, oneshot};

use super::cluster_time::ClusterTime;
use super::forward::{self, unavailable, Forwarded, PeerMessage};
use super::founding;
use super::handle::{LeaderHint, NodeRequest, NodeStatus, ProposeError, ReadContext, ReadFn};
use super::incarnation;
use super::observer::{entry_hash, NodeEvent, NodeObserver, Observer};
use super::peer_set::PeerSet;
use super::pending::{
    AdminSender, Forward, Pending, ReadFailedSender, ReadInFlight, ReplySender, Requester,
};
use super::removal::{Removal, RemovalWatch};
use super::seen_forwards::SeenForwards;
use super::snapshot_policy::SnapshotPolicy;
use super::status::{self, Gauges, LeaderHintPublisher, MetricsSampler};
use crate::clock::Clock;
use crate::latest::{Publisher, Subscriber};
use crate::metrics::NodeMetrics;
use crate::rng::SplitMix64;
use crate::shutdown::Shutdown;
use crate::storage::{Durability, StorageHandle, WriteBatch, WriteRequest};

/// How often the actor runs its maintenance (lease expiry, waiter expiry,
/// sweeps of abandoned requests, learner promotion, address updates).
pub(crate) const MAINTENANCE_INTERVAL_MS: u64 = 100;
/// Most mailbox requests / peer messages handled before draining `ready()`
/// (they then share one batch of writes and appends).
const REQUESTS_PER_TURN_MAX: usize = 256;
const PEER_MESSAGES_PER_TURN_MAX: usize = 256;
/// How long a stopping leader tries to hand leadership over.
const SHUTDOWN_TRANSFER_MS: u64 = 2_000;
/// How long a stopping node waits for its last writes to become durable.
const SHUTDOWN_FLUSH_MS: u64 = 2_000;
/// How long a forwarded request waits for the leader's `ForwardReply`
/// (sent as soon as the leader proposed it) before its caller is told the
/// outcome is unknown.
const FORWARD_REPLY_MS: u64 = 3_000;
/// How long a read may wait for the leader's confirmation before it is
/// handed back for a retry (a few heartbeat rounds).
const READ_CONFIRM_MS: u64 = 1_000;
/// A leader tracking leases stamps an entry at least this many times per
/// shortest tracked TTL (an empty `ExpireSessions`, when nothing else was
/// stamped): state time moves only with stamped entries and a new leader
/// starts from the last stamp, so an idle cluster whose leaders changed
/// faster than the checkpoints would never expire a session. Each leader
/// change postpones an expiry by at most one checkpoint interval plus the
/// election gap; an idle cluster pays one small entry per interval.
const STATE_TIME_CHECKPOINTS_PER_TTL: u64 = 8;
/// Pause before a node proposes again what it asked for and does not see
/// applied yet (its own API address, the configured settings).
const REPROPOSE_AFTER_MS: u64 = 1_000;
/// Longest pause of the timer: also bounds how late a `ManualClock` move is
/// noticed.
const TIMER_MAX_MS: u64 = MAINTENANCE_INTERVAL_MS;

/// Who this node is, as it tells peers, clients and operators.
pub(crate) struct NodeIdentity {
    pub(crate) id: NodeId,
    pub(crate) api_addr: String,
    pub(crate) peer_addr: String,
    /// This node's data dir incarnation (0: none).
    pub(crate) incarnation: u64,
}

/// What the actor drives, as recovered from storage.
pub(crate) struct StartState {
    pub(crate) replica: Replica,
    pub(crate) state: LockStateMachine,
    /// The stored snapshot the state was restored from: (last index, last term).
    pub(crate) snapshot: (LogIndex, Term),
    pub(crate) snapshot_threshold_entries: u64,
    /// Where this incarnation's request ids start (see [`Pending::new`]).
    pub(crate) first_request_id: u64,
    /// The idempotency bound this node proposes while it leads.
    pub(crate) idempotency_keys_max: Option<u64>,
    /// Draws the founding nonce, should this node be the first leader.
    pub(crate) founding_rng: SplitMix64,
    #[cfg(madsim)]
    pub(crate) forward_reply_drops: crate::buggify::ForwardReplyDrops,
}

/// The actor's channels to the node's other tasks.
pub(crate) struct ActorIo {
    pub(crate) storage: StorageHandle,
    pub(crate) peers: PeerSet,
    pub(crate) requests: mpsc::Receiver<NodeRequest>,
    pub(crate) inbound: mpsc::Receiver<(NodeId, PeerMessage)>,
    pub(crate) shutdown: Shutdown,
}

/// Where the actor reports on itself.
pub(crate) struct Reports {
    pub(crate) metrics: Arc<NodeMetrics>,
    pub(crate) leader_hint: LeaderHint,
    pub(crate) observer: Option<NodeObserver>,
    /// Set (to the cluster id) once the node learns it was removed.
    pub(crate) removed: Publisher<Option<String>>,
}

pub(crate) struct Actor {
    me: NodeIdentity,
    clock: Arc<dyn Clock>,
    replica: Replica,
    state: LockStateMachine,
    /// While leading, from the first entry of its term applied on: when
    /// each session's lease runs out (state time).
    lease: Option<LeaseTracker>,
    /// While leading: the time stamped on proposed entries.
    cluster_time: Option<ClusterTime>,
    io: ActorIo,
    durability: Subscriber<Durability>,
    /// The storage snapshot the node started from: (last index, last term).
    started_from: (LogIndex, Term),

    /// The `persist_seq` of the last batch handed to the storage actor.
    handed_seq: u64,
    /// The index of the last snapshot of our own handed to the storage
    /// actor (it has no `persist_seq`).
    handed_snapshot_index: LogIndex,

    /// Who waits for what: proposals, forwards, queued acquires, reads.
    pending: Pending,
    /// Forwards from other nodes already served (copies are not proposed).
    seen_forwards: SeenForwards,

    applied_index: LogIndex,
    /// When to compact the log: entries and bytes since the last snapshot.
    snapshots: SnapshotPolicy,
    expire_sessions_in_flight: Option<LogIndex>,
    expire_waiters_in_flight: Option<LogIndex>,
    api_addr_asked_at_ms: Option<u64>,
    /// The configured idempotency bound, and when it was last proposed.
    idempotency_keys_max: Option<u64>,
    configure_asked_at_ms: Option<u64>,
    next_maintenance_ms: u64,
    last_leader: Option<NodeId>,

    metrics: Arc<NodeMetrics>,
    sampler: MetricsSampler,
    leader_hint: LeaderHintPublisher,
    observer: Observer,

    /// Draws the founding nonce (see `founding.rs`).
    founding_rng: SplitMix64,
    /// Watches for our removal from the cluster (see `removal.rs`).
    removal: RemovalWatch,
    removed: Publisher<Option<String>>,

    /// Storage failed or the node was removed: it stops acting (the
    /// reason is reported).
    failed: Option<String>,
    /// Graceful shutdown in progress: (give up transfer at, reply).
    stopping: Option<(u64, oneshot::Sender<()>)>,
    /// Simulation only: forwarded replies this node drops.
    #[cfg(madsim)]
    forward_reply_drops: crate::buggify::ForwardReplyDrops,
}

impl Actor {
    pub(crate) fn new(
        me: NodeIdentity,
        clock: Arc<dyn Clock>,
        start: StartState,
        io: ActorIo,
        reports: Reports,
    ) -> Self {
        let now_ms = clock.now_ms();
        let durability = io.storage.durability();
        let (snapshot_index, _) = start.snapshot;
        Self {
            me,
            clock,
            replica: start.replica,
            state: start.state,
            lease: None,
            cluster_time: None,
            io,
            durability,
            started_from: start.snapshot,
            handed_seq: 0,
            handed_snapshot_index: 0,
            pending: Pending::new(start.first_request_id),
            seen_forwards: SeenForwards::default(),
            applied_index: snapshot_index,
            snapshots: SnapshotPolicy::new(start.snapshot_threshold_entries, snapshot_index),
            expire_sessions_in_flight: None,
            expire_waiters_in_flight: None,
            api_addr_asked_at_ms: None,
            idempotency_keys_max: start.idempotency_keys_max,
            configure_asked_at_ms: None,
            next_maintenance_ms: now_ms,
            last_leader: None,
            metrics: reports.metrics.clone(),
            sampler: MetricsSampler::new(reports.metrics),
            leader_hint: LeaderHintPublisher::new(reports.leader_hint),
            observer: Observer::new(reports.observer),
            founding_rng: start.founding_rng,
            removal: RemovalWatch::default(),
            removed: reports.removed,
            failed: None,
            stopping: None,
            #[cfg(madsim)]
            forward_reply_drops: start.forward_reply_drops,
        }
    }

    /// Runs until shutdown; returns the peer actors' tasks to wait for.
    pub(crate) async fn run(mut self) -> Vec<tokio::task::JoinHandle<()>> {
        self.observer.observe(|| NodeEvent::Started);
        let (last_index, last_term) = self.started_from;
        if last_index > 0 {
            self.observer.observe(|| NodeEvent::SnapshotRestored {
                last_index,
                last_term,
            });
        }
        self.io.peers.sync(self.replica.membership());
        if self.is_sole_voter() {
            // Nobody else can win or disrupt an election, so waiting out the
            // election timeout (300-600 ms) would only delay the first write
            // and read after a restart; the vote is persisted while the
            // backlog is applied. Safety does not depend on timing.
            self.replica.campaign_now();
        }
        let graceful = loop {
            self.drain_ready().await;
            self.update_metrics();
            if self.stop_now() {
                break true;
            }
            let now_ms = self.clock.now_ms();
            let wake_ms = self
                .replica
                .next_deadline_ms()
                .min(self.next_maintenance_ms);
            let pause_ms = wake_ms.saturating_sub(now_ms).clamp(1, TIMER_MAX_MS);
            let timer = tokio::time::sleep(Duration::from_millis(pause_ms));
            tokio::select! {
                biased;
                _ = self.io.shutdown.wait() => break false,
                durable = self.durability.changed() => match durable {
                    Ok(durable) => self.on_durable(&durable),
                    Err(_) => self.fail("storage actor ended".into()),
                },
                message = self.io.inbound.recv() => match message {
                    Some((from, message)) => {
                        self.on_peer_message(from, message);
                        for _ in 1..PEER_MESSAGES_PER_TURN_MAX {
                            match self.io.inbound.try_recv() {
                                Ok((from, message)) => self.on_peer_message(from, message),
                                Err(_) => break,
                            }
                        }
                    }
                    // The listener ended: only at shutdown.
                    None => break false,
                },
                request = self.io.requests.recv() => match request {
                    Some(request) => {
                        self.on_request(request);
                        for _ in 1..REQUESTS_PER_TURN_MAX {
                            match self.io.requests.try_recv() {
                                Ok(request) => self.on_request(request),
                                Err(_) => break,
                            }
                        }
                    }
                    // Every handle is gone (the Node too): nobody can ask.
                    None => break false,
                },
                _ = timer => {}
            }
            self.on_time();
        };
        if graceful {
            self.flush().await;
        }
        self.fail_everything(ProposeError::Stopped {
            reason: "node is shutting down".into(),
        });
        if let Some((_, reply)) = self.stopping.take() {
            let _ = reply.send(());
        }
        self.io.peers.close()
    }

    // ------------------------------------------------------------ inputs ---

    fn on_time(&mut self) {
        if self.failed.is_some() {
            return;
        }
        let now_ms = self.clock.now_ms();
        if now_ms >= self.replica.next_deadline_ms() {
            self.replica.tick(now_ms);
        }
        if now_ms >= self.next_maintenance_ms {
            self.next_maintenance_ms = now_ms + MAINTENANCE_INTERVAL_MS;
            self.maintain(now_ms);
        }
    }

    fn on_durable(&mut self, durable: &Durability) {
        if let Some(error) = &durable.error {
            self.fail(format!("storage failed: {error}"));
            return;
        }
        if durable.persisted_seq > 0 {
            // Already reported seqs are ignored by the replica.
            self.replica.persisted(durable.persisted_seq);
        }
    }

    fn on_peer_message(&mut self, from: NodeId, message: PeerMessage) {
        if self.failed.is_some() {
            // A node whose storage failed must not vote or acknowledge.
            return;
        }
        match message {
            PeerMessage::Raft(message) => {
                let now_ms = self.clock.now_ms();
                self.replica.handle_message(from, message, now_ms);
            }
            PeerMessage::Forward {
                request_id,
                request,
            } => {
                if !self.seen_forwards.first_time(from, request_id) {
                    tracing::debug!(from, request_id, "a copy of a served forward: ignored");
                    return;
                }
                let result = if self.stopping.is_some() {
                    Err(unavailable(None, "leader is shutting down"))
                } else {
                    let now_ms = self.cluster_now_ms();
                    forward::serve(&mut self.replica, now_ms, request)
                };
                #[cfg(madsim)]
                if self.forward_reply_drops.drop_this() {
                    tracing::debug!(from, request_id, "buggify: forwarded reply dropped");
                    return;
                }
                self.io
                    .peers
                    .send(from, PeerMessage::ForwardReply { request_id, result });
            }
            PeerMessage::ForwardReply { request_id, result } => {
                let Some(Forward { requester, .. }) = self.pending.take_forward(request_id) else {
                    return;
                };
                match result {
                    Ok(Some((term, index))) => {
                        if index <= self.applied_index {
                            // Applied before the answer arrived (reordered
                            // link): its reply is gone, its outcome unknown.
                            requester.fail(ProposeError::Timeout);
                        } else {
                            self.register(index, term, requester);
                        }
                    }
                    Ok(None) => {
                        if let Requester::Admin(tx) = requester {
                            let _ = tx.send(Ok(()));
                        }
                    }
                    Err(error) => requester.fail(error),
                }
            }
            PeerMessage::Announce { peer_addr } => {
                self.io
                    .peers
                    .on_announce(from, peer_addr, self.replica.membership());
            }
        }
    }

    fn on_request(&mut self, request: NodeRequest) {
        match request {
            NodeRequest::Status { reply } => {
                let _ = reply.send(self.status());
            }
            NodeRequest::Shutdown { reply } => self.begin_shutdown(reply),
            request => match self.refusal() {
                Some(error) => refuse(request, error),
                None => self.serve_request(request),
            },
        }
    }

    /// A request that needs a working node (not stopped or stopping).
    fn serve_request(&mut self, request: NodeRequest) {
        match request {
            NodeRequest::Propose {
                command,
                idempotency,
                reply,
            } => self.propose(command, idempotency, reply),
            NodeRequest::Read { query, failed } => self.read(query, failed),
            NodeRequest::AddMember {
                id,
                peer_addr,
                api_addr,
                incarnation: claimed,
                cluster_id,
                reply,
            } => {
                let ours = self.io.peers.cluster().id();
                if let Err(error) = founding::check_joiner(&ours, cluster_id.as_deref()) {
                    let _ = reply.send(Err(error));
                    return;
                }
                // Judged here, on this node's view, before any forwarding:
                // the leader treats a known id at the same address as a
                // retried join.
                let judged = incarnation::check_add_member(self.replica.membership(), id, claimed);
                if let Err(error) = judged {
                    let _ = reply.send(Err(error));
                    return;
                }
                let request = Forwarded::AddMember {
                    id,
                    peer_addr,
                    api_addr,
                };
                self.admin(request, reply);
            }
            NodeRequest::RemoveMember { id, reply } => {
                self.admin(Forwarded::RemoveMember { id }, reply);
            }
            NodeRequest::Promote { id, reply } => {
                self.admin(Forwarded::Promote { id }, reply);
            }
            NodeRequest::SetAddrs {
                id,
                peer_addr,
                api_addr,
                reply,
            } => {
                let request = Forwarded::SetAddrs {
                    id,
                    peer_addr,
                    api_addr,
                };
                self.admin(request, reply);
            }
            NodeRequest::TransferLeader { to, reply } => {
                self.admin(Forwarded::TransferLeader { to }, reply);
            }
            NodeRequest::Status { .. } | NodeRequest::Shutdown { .. } => {
                unreachable!("answered by on_request")
            }
        }
    }

    /// A client's proposal: here on the leader, else forwarded to it.
    fn propose(&mut self, command: Command, idempotency: Option<Idempotency>, reply: ReplySender) {
        if self.replica.role() != Role::Leader {
            let request = Forwarded::Propose {
                command,
                idempotency,
            };
            self.forward(request, Requester::Client(reply));
            return;
        }
        let now_ms = self.cluster_now_ms();
        match forward::propose(&mut self.replica, now_ms, command, idempotency) {
            Ok((term, index)) => {
                self.register(index, term, Requester::Client(reply));
            }
            Err(error) => {
                let _ = reply.send(Err(error));
            }
        }
    }

    /// Starts a ReadIndex round; the read runs once confirmed and applied.
    fn read(&mut self, query: ReadFn, failed: ReadFailedSender) {
        let request_id = self.pending.next_request_id();
        match self.replica.read_index(request_id) {
            Ok(()) => {
                let read = ReadInFlight::new(query, failed, self.clock.now_ms());
                self.pending.insert_read(request_id, read);
            }
            Err(error) => {
                let leader = self.replica.leader();
                let _ = failed.send((unavailable(leader, &error.to_string()), Some(query)));
            }
        }
    }

    fn refusal(&self) -> Option<ProposeError> {
        if let Some(reason) = &self.failed {
            return Some(ProposeError::Stopped {
                reason: reason.clone(),
            });
        }
        if self.stopping.is_some() {
            return Some(ProposeError::Stopped {
                reason: "node is shutting down".into(),
            });
        }
        None
    }

    fn admin(&mut self, request: Forwarded, reply: AdminSender) {
        if self.replica.role() != Role::Leader {
            self.forward(request, Requester::Admin(reply));
            return;
        }
        let now_ms = self.cluster_now_ms();
        match forward::serve(&mut self.replica, now_ms, request) {
            Ok(Some((term, index))) => {
                self.register(index, term, Requester::Admin(reply));
            }
            Ok(None) => {
                let _ = reply.send(Ok(()));
            }
            Err(error) => {
                let _ = reply.send(Err(error));
            }
        }
    }

    /// Sends a request to the leader; the waiter is answered by its
    /// `ForwardReply` and then by the apply of the entry.
    fn forward(&mut self, request: Forwarded, requester: Requester) {
        let leader = match self.replica.leader() {
            Some(leader) if leader != self.me.id => leader,
            leader => {
                requester.fail(unavailable(leader, "no leader known"));
                return;
            }
        };
        let request_id = self.pending.next_request_id();
        if self.io.peers.send(
            leader,
            PeerMessage::Forward {
                request_id,
                request,
            },
        ) {
            let sent_ms = self.clock.now_ms();
            self.pending.insert_forward(
                request_id,
                Forward {
                    sent_ms,
                    leader,
                    requester,
                },
            );
        } else {
            requester.fail(unavailable(Some(leader), "cannot reach the leader"));
        }
    }

    /// Waits for the entry at `index` proposed in `term`; a requester it
    /// displaces (same index, older term) is told its entry was lost.
    fn register(&mut self, index: LogIndex, term: Term, requester: Requester) {
        let leader = self.replica.leader();
        self.pending
            .register(index, term, requester, || lost(leader));
    }

    /// The node's own proposals (expiry, withdraw): from the leader, or
    /// forwarded without anybody waiting.
    fn propose_internal(&mut self, command: Command) -> Option<LogIndex> {
        if self.replica.role() == Role::Leader {
            let now_ms = self.cluster_now_ms();
            match forward::propose(&mut self.replica, now_ms, command, None) {
                Ok((term, index)) => {
                    self.register(index, term, Requester::Internal);
                    Some(index)
                }
                Err(error) => {
                    tracing::debug!(%error, "internal proposal refused");
                    None
                }
            }
        } else {
            self.forward(
                Forwarded::Propose {
                    command,
                    idempotency: None,
                },
                Requester::Internal,
            );
            None
        }
    }

    // ------------------------------------------------------------- ready ---

    async fn drain_ready(&mut self) {
        while self.failed.is_none() && self.replica.has_ready() {
            let ready = self.replica.ready();
            if !self.handle_ready(ready).await {
                return;
            }
        }
        // Checked once the backlog is applied, not after every Ready: a
        // node replaying a long log (restart, catching up) would otherwise
        // serialize the state and rewrite the log every threshold's worth
        // of entries (replaying 1M entries took ~100 snapshots, now one;
        // recovery_bench).
        if self.failed.is_none() && self.snapshot_due() {
            self.take_snapshot().await;
        }
    }

    /// Acts on one `Ready` in the contract's order; false if a snapshot
    /// from the leader could not be installed (the node has failed).
    async fn handle_ready(&mut self, ready: Ready) -> bool {
        let Ready {
            persist_seq,
            snapshot,
            truncate_from,
            entries,
            hard_state,
            messages,
            committed,
            read_states,
            failed_reads,
            soft_state,
            snapshot_wanted,
        } = ready;
        // 1. Writes, in the contract's order.
        if let Some(snapshot) = &snapshot {
            if !self.install_snapshot(snapshot) {
                return false;
            }
        }
        self.observe_log_writes(truncate_from, &entries);
        let batch = WriteBatch {
            persist_seq,
            snapshot,
            truncate_from,
            entries,
            hard_state,
        };
        self.write(batch).await;
        // The membership takes effect on append: know the peers before
        // sending to them.
        self.io.peers.sync(self.replica.membership());
        let founded = self.io.peers.sync_committed(
            self.replica.committed_membership(),
            self.replica.commit_index(),
        );
        if founded {
            // A restart must not forget that the nonce is committed: on a
            // commit index below it, the node would claim no founding, and
            // a cluster of another founding with the same tag would take
            // its data dir (simulation seeds 567 and 474).
            self.replica.persist_commit_index();
        }
        self.refresh_leader_hint();
        // 2. Messages.
        for (to, message) in messages {
            self.io.peers.send(to, PeerMessage::Raft(message));
        }
        // 3. Apply (the observer hears of the commit first).
        self.observer.commit_index(self.replica.commit_index());
        if let Some(last) = committed.last().map(|e| e.index) {
            for entry in committed {
                self.apply(entry);
            }
            self.replica.applied(last);
        }
        // 4. Reads.
        self.settle_reads(read_states, failed_reads);
        // 5. Role changes and snapshots.
        if let Some(soft) = soft_state {
            self.on_soft_state(soft);
        }
        if snapshot_wanted {
            self.take_snapshot().await;
        }
        true
    }

    /// Tells the observer (the simulation's Raft checker) how the log
    /// changes: a truncation, then each appended entry.
    fn observe_log_writes(&self, truncate_from: Option<LogIndex>, entries: &[Entry]) {
        if let Some(from) = truncate_from {
            self.observer.observe(|| NodeEvent::Truncated { from });
        }
        for entry in entries {
            self.observer.observe(|| NodeEvent::Appended {
                index: entry.index,
                term: entry.term,
                entry_hash: super::observer::entry_hash(entry),
            });
        }
    }

    /// Replaces the state machine with a snapshot from the leader; false
    /// (and the node fails) if it cannot be restored.
    fn install_snapshot(&mut self, snapshot: &SnapshotToInstall) -> bool {
        let index = snapshot.meta.last_index;
        match LockStateMachine::restore(&snapshot.data) {
            Ok(state) => {
                self.state = state;
                self.on_snapshot_installed(index);
                let last_term = snapshot.meta.last_term;
                self.observer.observe(|| NodeEvent::SnapshotRestored {
                    last_index: index,
                    last_term,
                });
                true
            }
            Err(error) => {
                self.fail(format!(
                    "snapshot at index {index} from the leader cannot be restored: {error}"
                ));
                false
            }
        }
    }

    /// Hands one Ready's writes to the storage actor as one batch (the
    /// storage actor orders them and reports `persist_seq` once durable).
    async fn write(&mut self, batch: WriteBatch) {
        let writes = batch.snapshot.is_some()
            || batch.truncate_from.is_some()
            || !batch.entries.is_empty()
            || batch.hard_state.is_some();
        assert_eq!(
            writes,
            batch.persist_seq > 0,
            "a Ready is numbered exactly when it holds writes"
        );
        if !writes {
            return;
        }
        let persist_seq = batch.persist_seq;
        if self.submit(WriteRequest::Batch(batch)).await {
            self.handed_seq = persist_seq;
        }
    }

    /// Reads Raft confirmed wait for their index; reads it never will are
    /// handed back for a retry.
    fn settle_reads(&mut self, confirmed: Vec<raft::ReadState>, failed: Vec<u64>) {
        for read in confirmed {
            self.pending.confirm_read(read.request_id, read.index);
        }
        for request_id in failed {
            if let Some(read) = self.pending.take_read(request_id) {
                let leader = self.replica.leader();
                read.hand_back(unavailable(
                    leader,
                    "read could not be confirmed by a leader",
                ));
            }
        }
        self.serve_reads();
    }

    /// False (and the node fails) if the storage actor has ended.
    async fn submit(&mut self, request: WriteRequest) -> bool {
        if self.io.storage.submit(request).await.is_err() {
            self.fail("storage actor ended".into());
            return false;
        }
        true
    }

    fn apply(&mut self, entry: Entry) {
        assert!(
            entry.index > self.applied_index,
            "applying index {} after {}",
            entry.index,
            self.applied_index
        );
        self.applied_index = entry.index;
        if self.lease.is_none()
            && self.replica.role() == Role::Leader
            && entry.term == self.replica.term()
        {
            // This leader's first entry: everything its predecessors
            // committed is applied, so the replicated renewals are complete.
            let mut lease = LeaseTracker::new();
            lease.on_became_leader(&self.state);
            self.lease = Some(lease);
        }
        self.observer.observe(|| NodeEvent::Applied {
            index: entry.index,
            term: entry.term,
            entry_hash: entry_hash(&entry),
        });
        let leader = self.replica.leader();
        let requester = self
            .pending
            .take_applied(entry.index, entry.term, || lost(leader));
        if self.expire_sessions_in_flight == Some(entry.index) {
            self.expire_sessions_in_flight = None;
        }
        if self.expire_waiters_in_flight == Some(entry.index) {
            self.expire_waiters_in_flight = None;
        }
        let bytes = match entry.payload {
            EntryPayload::Noop => return,
            EntryPayload::Membership(_) => {
                if let Some(Requester::Admin(tx)) = requester {
                    let _ = tx.send(Ok(()));
                }
                return;
            }
            EntryPayload::Command(bytes) => bytes,
        };
        self.snapshots.applied(bytes.len());
        let envelope = match Envelope::from_bytes(&bytes) {
            Ok(envelope) => envelope,
            Err(error) => {
                // Committed bytes are the same on every node, so skipping is
                // deterministic; it can only be a bug in the proposer.
                tracing::error!(index = entry.index, %error, "undecodable committed command skipped");
                if let Some(requester) = requester {
                    requester.fail(ProposeError::Rejected {
                        message: "command could not be decoded".into(),
                    });
                }
                return;
            }
        };
        let applied = self.state.apply(entry.index, &envelope);
        if let (Some(lease), Role::Leader) = (self.lease.as_mut(), self.replica.role()) {
            lease.observe_applied(&envelope, &applied, &self.state);
        }
        self.on_applied(&envelope, &applied);
        match requester {
            Some(Requester::Client(tx)) => {
                self.answer(&envelope.command, applied.reply, tx);
            }
            Some(Requester::Admin(tx)) => {
                let _ = tx.send(Ok(()));
            }
            Some(Requester::Internal) | None => {}
        }
    }

    /// A proposal answered; a queued acquire keeps its requester waiting.
    fn answer(&mut self, command: &Command, reply: Reply, tx: ReplySender) {
        match (&reply, command) {
            (
                Reply::Queued {
                    session_id, mode, ..
                },
                Command::Acquire(Acquire { lock, .. }),
            ) => {
                if let Some(settled) = self.state.settled_wait(lock, *session_id, *mode) {
                    // A replayed `Queued` for a wait that is already over.
                    let _ = tx.send(Ok(settled));
                } else if tx.is_closed() {
                    // The requester left before the wait began.
                    self.propose_internal(Command::Withdraw(Withdraw {
                        lock: lock.clone(),
                        session_id: *session_id,
                    }));
                } else {
                    self.pending.wait_for_grant(lock.clone(), *session_id, tx);
                }
            }
            _ => {
                let _ = tx.send(Ok(reply));
            }
        }
    }

    fn on_applied(&mut self, envelope: &Envelope, applied: &Applied) {
        if matches!(
            (&envelope.command, &applied.reply),
            (Command::Acquire(_), Reply::Acquired(_))
        ) {
            self.metrics.grants.fetch_add(1, Ordering::Relaxed);
        }
        for event in &applied.events {
            match event {
                Event::Granted { .. } => {
                    self.metrics.handoffs.fetch_add(1, Ordering::Relaxed);
                }
                Event::SessionExpired { .. } => {
                    self.metrics
                        .session_expiries
                        .fetch_add(1, Ordering::Relaxed);
                }
                Event::WaitEnded { .. } | Event::SessionClosed { .. } => {}
            }
        }
        self.pending.end_waits(&applied.events);
    }

    /// A snapshot from the leader replaced the state: requests for entries
    /// it covers will never see their reply here.
    fn on_snapshot_installed(&mut self, index: LogIndex) {
        tracing::info!(
            node_id = self.me.id,
            index,
            "installed snapshot from the leader"
        );
        self.metrics
            .snapshots_installed
            .fetch_add(1, Ordering::Relaxed);
        self.pending.fail_covered_by_snapshot(index);
        self.applied_index = self.applied_index.max(index);
        self.snapshots.installed(index);
    }

    fn serve_reads(&mut self) {
        let servable = self.pending.take_reads_servable(self.applied_index);
        if servable.is_empty() {
            return;
        }
        let is_leader = self.replica.role() == Role::Leader;
        let now_ms = self.cluster_now_ms();
        for read in servable {
            read.serve(ReadContext {
                state: &self.state,
                lease: self.lease.as_ref().filter(|_| is_leader),
                now_ms,
            });
        }
    }

    fn on_soft_state(&mut self, soft: raft::SoftState) {
        self.observer.observe(|| NodeEvent::RoleChanged {
            role: soft.role,
            term: soft.term,
            leader: soft.leader,
        });
        if soft.leader != self.last_leader {
            self.last_leader = soft.leader;
            self.fail_forwards_to_other_leaders(soft.leader);
            self.metrics.leader_changes.fetch_add(1, Ordering::Relaxed);
            tracing::info!(
                node_id = self.me.id,
                term = soft.term,
                leader = ?soft.leader,
                role = ?soft.role,
                "leader changed"
            );
        }
        // Only the leader measures leases; a new one starts once it applies
        // the first entry of its term (see `apply`), from the renewals the
        // log recorded, not from its election.
        self.lease = None;
        if soft.role == Role::Leader {
            self.cluster_time = Some(ClusterTime::start(
                self.state.clock_ms(),
                self.clock.now_ms(),
                self.clock.wall_ms(),
            ));
            self.expire_sessions_in_flight = None;
            self.expire_waiters_in_flight = None;
            self.next_maintenance_ms = self.clock.now_ms();
        } else {
            self.cluster_time = None;
        }
        self.api_addr_asked_at_ms = None;
    }

    /// This node is the only voter of the membership it recovered.
    fn is_sole_voter(&self) -> bool {
        let mut voters = self
            .replica
            .membership()
            .members
            .iter()
            .filter(|(_, m)| m.voter);
        matches!(voters.next(), Some((id, _)) if *id == self.me.id) && voters.next().is_none()
    }

    /// Due by the [`SnapshotPolicy`], and (on a leader) every follower
    /// already holds the entries the compaction drops — else a follower
    /// with appends in flight would need a whole snapshot. A follower
    /// lagging until the snapshot is overdue does not hold it back longer.
    fn snapshot_due(&self) -> bool {
        if !self.snapshots.due(self.applied_index) {
            return false;
        }
        if self.replica.role() != Role::Leader || self.snapshots.overdue(self.applied_index) {
            return true;
        }
        self.replica
            .status()
            .progress
            .values()
            .all(|p| p.match_index >= self.applied_index)
    }

    async fn take_snapshot(&mut self) {
        let index = self.applied_index;
        let data = self.state.snapshot();
        match self.replica.snapshot_taken(index, data.clone()) {
            Ok(meta) => {
                self.snapshots.taken(index, data.len());
                self.metrics.snapshots_taken.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(
                    node_id = self.me.id,
                    index,
                    bytes = data.len(),
                    "snapshot taken"
                );
                if self.submit(WriteRequest::SaveSnapshot { meta, data }).await {
                    self.handed_snapshot_index = index;
                }
            }
            Err(error) => {
                tracing::debug!(node_id = self.me.id, %error, "snapshot not taken");
                self.snapshots.skipped(index);
            }
        }
    }

    // ------------------------------------------------------- maintenance ---

    fn maintain(&mut self, now_ms: u64) {
        self.sweep_abandoned();
        self.io.peers.apply_link_faults();
        self.check_removed();
        if self.stopping.is_some() {
            return;
        }
        if self.replica.role() == Role::Leader {
            self.lead();
        }
        self.publish_api_addr(now_ms);
    }

    /// Requests forwarded to a leader that is no longer ours will get no
    /// `ForwardReply`: their callers learn "outcome unknown" now (the old
    /// leader may have appended them; a retry with the idempotency key
    /// settles it) instead of after `FORWARD_REPLY_MS`.
    fn fail_forwards_to_other_leaders(&mut self, leader: Option<NodeId>) {
        self.pending
            .fail_forwards_where(|f| Some(f.leader) != leader);
    }

    /// Requests whose caller gave up: forget them; a queued acquire whose
    /// caller left is withdrawn from the queue.
    fn sweep_abandoned(&mut self) {
        // A lost `Forward` or `ForwardReply` leaves nobody to answer. After
        // a bound the caller learns the truth, "outcome unknown", and can
        // retry with its idempotency key; internal requests are forgotten
        // (maintenance proposes them again if still needed).
        let now_ms = self.clock.now_ms();
        self.pending.fail_forwards_where(|f| {
            f.requester.is_closed() || now_ms >= f.sent_ms + FORWARD_REPLY_MS
        });
        self.pending.forget_abandoned_reads();
        // A forwarded ReadIndex or its answer may be lost (Raft tolerates
        // loss; the core never completes such a read): hand the query back
        // so the handle retries, through whichever leader is current.
        for read in self.pending.take_reads_unconfirmed(now_ms, READ_CONFIRM_MS) {
            let leader = self.replica.leader();
            read.hand_back(unavailable(
                leader,
                "read not confirmed by a leader in time",
            ));
        }
        for (lock, session_id) in self.pending.take_abandoned_acquires() {
            self.propose_internal(Command::Withdraw(Withdraw { lock, session_id }));
        }
    }

    /// Proposes `ExpireSessions` for the sessions whose lease ran out in
    /// state time, or, with leases to measure and nothing stamped for an
    /// eighth of the shortest TTL ([`STATE_TIME_CHECKPOINTS_PER_TTL`]), an
    /// empty one: a checkpoint of state time, which only stamped entries
    /// move.
    fn expire_sessions(&mut self) {
        if self.expire_sessions_in_flight.is_some() {
            return;
        }
        let state_now_ms = self.cluster_now_ms();
        let Some(lease) = self.lease.as_mut() else {
            return;
        };
        let expired = lease.due_for_expiry(state_now_ms, &self.state);
        let checkpoint_due = lease.shortest_ttl_ms().is_some_and(|ttl_ms| {
            state_now_ms >= self.state.clock_ms() + ttl_ms / STATE_TIME_CHECKPOINTS_PER_TTL
        });
        if !expired.is_empty() || checkpoint_due {
            self.expire_sessions_in_flight =
                self.propose_internal(Command::ExpireSessions(ExpireSessions {
                    session_ids: expired,
                }));
        }
    }

    /// The stamp for an entry proposed now (see `cluster_time.rs`). Off the
    /// leader nothing is proposed (the replica refuses); state time then.
    fn cluster_now_ms(&self) -> u64 {
        let state_ms = self.state.clock_ms();
        self.cluster_time
            .map_or(state_ms, |t| t.now_ms(self.clock.now_ms(), state_ms))
    }

    fn lead(&mut self) {
        self.expire_sessions();
        if self.expire_waiters_in_flight.is_none()
            && self
                .state
                .next_waiter_deadline_ms()
                .is_some_and(|d| d <= self.cluster_now_ms())
        {
            self.expire_waiters_in_flight = self.propose_internal(Command::ExpireWaiters);
        }
        self.configure(self.clock.now_ms());
        // Promote learners that acknowledged the commit index, one at a
        // time (the core refuses more, and refuses any that did not).
        let status = self.replica.status();
        for (id, progress) in &status.progress {
            if !progress.voter && progress.match_index >= status.commit_index {
                match self.replica.promote(*id) {
                    Ok(_) => {
                        tracing::info!(node_id = self.me.id, learner = id, "promoting learner");
                        break;
                    }
                    Err(error) => {
                        tracing::debug!(node_id = self.me.id, learner = id, %error, "not promoted yet")
                    }
                }
            }
        }
        self.record_founding_nonce();
        self.record_incarnations();
        // Let every member (a joining one especially) know where we are.
        for id in status.membership.members.keys() {
            if *id != self.me.id {
                self.io.peers.send(
                    *id,
                    PeerMessage::Announce {
                        peer_addr: self.me.peer_addr.clone(),
                    },
                );
            }
        }
    }

    /// Settings every replica must apply alike travel through the log: the
    /// leader proposes its configured idempotency bound when the state's
    /// differs (nodes configured differently: the last leader's wins).
    fn configure(&mut self, now_ms: u64) {
        let Some(keys_max) = self.idempotency_keys_max else {
            return;
        };
        if self.state.idempotency_keys_max() == keys_max
            || self
                .configure_asked_at_ms
                .is_some_and(|at| now_ms < at + REPROPOSE_AFTER_MS)
        {
            return;
        }
        self.configure_asked_at_ms = Some(now_ms);
        tracing::info!(keys_max, "proposing the configured idempotency bound");
        self.propose_internal(Command::Configure(Configure {
            idempotency_keys_max: keys_max,
        }));
    }

    /// The first leader of a founding records its nonce (`founding.rs`);
    /// refused while another change is in flight, tried again next tick.
    fn record_founding_nonce(&mut self) {
        let rng = &mut self.founding_rng;
        let Some(next) = founding::with_nonce(self.replica.membership(), || rng.next_u64()) else {
            return;
        };
        match self.replica.propose_membership(next) {
            Ok((_, index)) => {
                tracing::info!(node_id = self.me.id, index, "recording the founding nonce")
            }
            Err(error) => tracing::debug!(%error, "founding nonce not recorded yet"),
        }
    }

    /// Stops the node for good once it learns it was removed (from its log
    /// or a peer's answer, `removal.rs`); the embedder exits.
    fn check_removed(&mut self) {
        if self.failed.is_some() {
            return;
        }
        let mut cluster = self.io.peers.cluster().id();
        let Some(how) = self.removal.check(
            self.me.id,
            self.replica.committed_membership(),
            self.replica.commit_index(),
            self.io.peers.cluster().removal_notice(),
        ) else {
            return;
        };
        if let Removal::FromPeer(notice) = &how {
            // The peer may know the founding nonce we never committed.
            if notice.cluster_id.nonce().is_some() {
                cluster = notice.cluster_id.clone();
            }
        }
        tracing::error!(node_id = self.me.id, cluster_id = %cluster, ?how, "removed from cluster {cluster}");
        self.removed.publish(Some(cluster.to_string()));
        self.fail(format!("removed from cluster {cluster}"));
    }

    /// Records in the membership the incarnations members claimed in
    /// accepted handshakes (and ours): from then on the transport refuses
    /// any other data dir under their ids. Refused while another change is
    /// in flight; the next maintenance tick tries again.
    fn record_incarnations(&mut self) {
        let me = (self.me.id, self.me.incarnation);
        let membership = self.replica.membership();
        let Some(next) =
            incarnation::with_claimed_incarnations(membership, self.io.peers.book(), me)
        else {
            return;
        };
        match self.replica.propose_membership(next) {
            Ok((_, index)) => {
                tracing::info!(node_id = self.me.id, index, "recording member incarnations")
            }
            Err(error) => tracing::debug!(%error, "member incarnations not recorded yet"),
        }
    }

    /// Founders start with empty API addresses (so entry 1 is identical on
    /// all of them); each node then publishes its own.
    fn publish_api_addr(&mut self, now_ms: u64) {
        let Some(leader) = self.replica.leader() else {
            return;
        };
        let Some(member) = self.replica.membership().members.get(&self.me.id) else {
            return;
        };
        if member.api_addr == self.me.api_addr {
            return;
        }
        if self
            .api_addr_asked_at_ms
            .is_some_and(|at| now_ms < at + REPROPOSE_AFTER_MS)
        {
            return;
        }
        self.api_addr_asked_at_ms = Some(now_ms);
        let request = Forwarded::SetApiAddr {
            id: self.me.id,
            api_addr: self.me.api_addr.clone(),
        };
        if leader == self.me.id {
            let now_ms = self.cluster_now_ms();
            if let Err(error) = forward::serve(&mut self.replica, now_ms, request) {
                tracing::debug!(%error, "api address not published yet");
            }
        } else {
            self.forward(request, Requester::Internal);
        }
    }

    /// Publishes the leader's API address to the handles when it changed
    /// (a new leader, or the leader published its address).
    fn refresh_leader_hint(&mut self) {
        let api_addr = status::leader_api_addr(
            self.me.id,
            &self.me.api_addr,
            self.replica.leader(),
            self.replica.membership(),
        );
        self.leader_hint.publish(api_addr);
    }

    // ------------------------------------------------- status & metrics ---

    fn status(&self) -> NodeStatus {
        status::node_status(
            self.me.id,
            &self.io.peers.cluster().id().to_string(),
            self.replica.status(),
            self.replica.health(self.clock.now_ms()),
            self.failed.is_some(),
        )
    }

    fn update_metrics(&mut self) {
        let gauges = Gauges {
            term: self.replica.term(),
            role: self.replica.role(),
            learner: !self.replica.membership().is_voter(self.me.id),
            commit_index: self.replica.commit_index(),
            applied_index: self.applied_index,
            sessions: self.state.session_count(),
            locks: self.state.lock_count(),
            waiters: self.pending.acquires_waiting(),
            proposals_in_flight: self.pending.client_proposals(),
            peer_messages_dropped: self.io.peers.messages_dropped(),
            idempotency_window_ms: self.state.idempotency_window_ms(),
        };
        self.sampler.sample(&gauges, self.io.storage.stats());
    }

    // ---------------------------------------------- failure & shutdown ---

    /// Storage failed: stop acting for good (no acks, votes or proposals),
    /// with one error line. A restart re-reads the disk.
    fn fail(&mut self, reason: String) {
        if self.failed.is_some() {
            return;
        }
        tracing::error!(node_id = self.me.id, %reason, "node stops serving");
        self.failed = Some(reason.clone());
        self.fail_everything(ProposeError::Stopped { reason });
    }

    fn fail_everything(&mut self, error: ProposeError) {
        self.pending.stop_all(&error);
    }

    fn begin_shutdown(&mut self, reply: oneshot::Sender<()>) {
        if self.stopping.is_some() {
            return;
        }
        let now_ms = self.clock.now_ms();
        self.stopping = Some((now_ms + SHUTDOWN_TRANSFER_MS, reply));
        if self.replica.role() != Role::Leader || self.failed.is_some() {
            return;
        }
        // Hand over to the most caught-up voter.
        let status = self.replica.status();
        let target = status
            .progress
            .iter()
            .filter(|(_, p)| p.voter)
            .max_by_key(|(id, p)| (p.match_index, std::cmp::Reverse(**id)))
            .map(|(id, _)| *id);
        if let Some(to) = target {
            tracing::info!(
                node_id = self.me.id,
                to,
                "shutting down: transferring leadership"
            );
            if let Err(error) = self.replica.transfer_leadership(to) {
                tracing::warn!(node_id = self.me.id, %error, "leadership transfer refused");
            }
        }
    }

    /// Whether a graceful shutdown may finish now.
    fn stop_now(&mut self) -> bool {
        let Some((give_up_ms, _)) = &self.stopping else {
            return false;
        };
        let has_other_voter = self
            .replica
            .membership()
            .voters()
            .any(|id| id != self.me.id);
        self.replica.role() != Role::Leader
            || !has_other_voter
            || self.failed.is_some()
            || self.clock.now_ms() >= *give_up_ms
    }

    /// Waits (bounded) until everything handed to storage is durable.
    async fn flush(&mut self) {
        if self.failed.is_some() {
            return;
        }
        let (seq, snapshot_index) = (self.handed_seq, self.handed_snapshot_index);
        let wait = self.durability.wait_for(|d| {
            (d.persisted_seq >= seq && d.snapshot_index >= snapshot_index) || d.error.is_some()
        });
        if tokio::time::timeout(Duration::from_millis(SHUTDOWN_FLUSH_MS), wait)
            .await
            .is_err()
        {
            tracing::warn!(
                node_id = self.me.id,
                "storage not flushed within the shutdown bound"
            );
        }
    }
}

/// Answers a request the node will not serve (stopped or stopping).
fn refuse(request: NodeRequest, error: ProposeError) {
    match request {
        NodeRequest::Propose { reply, .. } => {
            let _ = reply.send(Err(error));
        }
        NodeRequest::Read { failed, .. } => {
            let _ = failed.send((error, None));
        }
        NodeRequest::AddMember { reply, .. }
        | NodeRequest::RemoveMember { reply, .. }
        | NodeRequest::Promote { reply, .. }
        | NodeRequest::SetAddrs { reply, .. }
        | NodeRequest::TransferLeader { reply, .. } => {
            let _ = reply.send(Err(error));
        }
        NodeRequest::Status { .. } | NodeRequest::Shutdown { .. } => {
            unreachable!("answered by on_request")
        }
    }
}

/// An entry proposed for a requester was replaced by another leader's.
fn lost(leader: Option<NodeId>) -> ProposeError {
    unavailable(leader, "not applied (leadership changed); retry")
}
