//! The typed handle through which the server, tests and the simulation talk
//! to a running node. Every call is a message into the Raft actor's bounded
//! mailbox, answered on a oneshot; deadlines are enforced here, so no call
//! can hang whatever the cluster is doing.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use deadbolt_core::lock::{Command, Idempotency, LeaseTracker, LockStateMachine, Reply};
use deadbolt_core::raft::{self, LogIndex, NodeId, Role, Term};
use tokio::sync::{mpsc, oneshot};

use crate::backup::Backup;
use crate::latest::Subscriber;
use crate::metrics::NodeMetrics;
use crate::transport::ClusterBook;

/// Why a write did not produce a reply. Serializable: a leader answers a
/// forwarded request with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
pub enum ProposeError {
    /// No leader known or no quorum reachable; the command was certainly not
    /// applied, so retrying anywhere is safe (HTTP 503).
    #[error("unavailable: {reason}")]
    Unavailable {
        leader: Option<NodeId>,
        reason: String,
    },
    /// The command was proposed but whether it committed is unknown at the
    /// deadline (HTTP 504): retry with the same idempotency key.
    #[error("timed out; outcome unknown")]
    Timeout,
    /// The cluster refused an administrative change (membership rule, unknown
    /// member, transfer target not caught up...) (HTTP 400/409).
    #[error("rejected: {message}")]
    Rejected { message: String },
    /// The node is shutting down or its storage failed: it serves nothing.
    #[error("node stopped: {reason}")]
    Stopped { reason: String },
    /// A membership change that would endanger the cluster (an id that is
    /// already a voter, another data dir under a member's id) (HTTP 409).
    #[error("invalid membership: {message}")]
    InvalidMembership { message: String },
    /// No member has this id (HTTP 404, kind `member`).
    #[error("node {id} is not a member")]
    UnknownMember { id: NodeId },
}

/// What a linearizable read sees: the state machine after applying at least
/// the read index, and (on the leader) the lease tracker.
pub struct ReadContext<'a> {
    pub state: &'a LockStateMachine,
    /// Only on the leader: when each session's lease runs out.
    pub lease: Option<&'a LeaseTracker>,
    /// State time as the leader would stamp it now (cluster time), for
    /// `expires_in_ms`.
    pub now_ms: u64,
}

/// One member as this node sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberView {
    pub id: NodeId,
    pub peer_addr: String,
    pub api_addr: String,
    pub voter: bool,
    /// Known on the leader only.
    pub match_index: Option<LogIndex>,
    /// The incarnation the membership records for it (None: not yet).
    pub incarnation: Option<u64>,
    /// Reachability, last contact and lag: known on the leader only.
    pub health: Option<raft::MemberHealth>,
}

/// A node asking to be added (`POST /v1/cluster/members`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Joiner {
    pub id: NodeId,
    pub peer_addr: String,
    pub api_addr: String,
    /// The joining data dir's incarnation, if the caller knows it.
    pub incarnation: Option<u64>,
    /// The cluster its data dir belongs to, if it says.
    pub cluster_id: Option<String>,
}

/// This node's own view of the cluster (no ReadIndex round).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeStatus {
    pub id: NodeId,
    pub cluster_id: String,
    pub role: Role,
    pub term: Term,
    pub leader: Option<NodeId>,
    pub commit_index: LogIndex,
    pub applied_index: LogIndex,
    pub members: Vec<MemberView>,
    /// Whether the voters that answered make a quorum: known on the leader
    /// only.
    pub quorum: Option<raft::QuorumHealth>,
    /// Knows a leader that has (as far as this node can tell) a quorum, and
    /// has applied what it knows committed: `/ready` answers 200.
    pub ready: bool,
}

pub(crate) type ReadFn = Box<dyn FnOnce(ReadContext<'_>) + Send>;

/// Most requests waiting in a node's mailbox; beyond it callers get
/// `Unavailable` at once (and `propose` retries until its deadline).
pub const NODE_MAILBOX_REQUESTS_MAX: usize = 4096;
/// First and largest pause between retries of an `Unavailable` answer
/// (no leader yet, mailbox full): short, so a request arriving during an
/// election still succeeds soon after it ends.
const RETRY_BACKOFF_MIN_MS: u64 = 10;
const RETRY_BACKOFF_MAX_MS: u64 = 200;

/// Requests the Raft actor serves. A closed set: the actor's `select!` loop
/// matches on it.
pub(crate) enum NodeRequest {
    /// Propose `command`; the leader stamps its clock into the envelope. A
    /// waiting acquire that is queued is answered when its wait ends.
    Propose {
        command: Command,
        idempotency: Option<Idempotency>,
        reply: oneshot::Sender<Result<Reply, ProposeError>>,
    },
    /// Serve `query` after a ReadIndex round, once applied reaches the index.
    /// On failure the query comes back with the error, so the handle can
    /// retry it (a read has no side effect until it runs).
    Read {
        query: ReadFn,
        failed: oneshot::Sender<(ProposeError, Option<ReadFn>)>,
    },
    Status {
        reply: oneshot::Sender<NodeStatus>,
    },
    AddMember {
        id: NodeId,
        peer_addr: String,
        api_addr: String,
        /// The joining data dir's incarnation, if the caller knows it.
        incarnation: Option<u64>,
        /// The cluster the joining data dir belongs to, if it says.
        cluster_id: Option<String>,
        reply: oneshot::Sender<Result<(), ProposeError>>,
    },
    RemoveMember {
        id: NodeId,
        reply: oneshot::Sender<Result<(), ProposeError>>,
    },
    /// Make a learner that acknowledged the commit index a voter.
    Promote {
        id: NodeId,
        reply: oneshot::Sender<Result<(), ProposeError>>,
    },
    /// Change a member's addresses (None: keep).
    SetAddrs {
        id: NodeId,
        peer_addr: Option<String>,
        api_addr: Option<String>,
        reply: oneshot::Sender<Result<(), ProposeError>>,
    },
    TransferLeader {
        to: NodeId,
        reply: oneshot::Sender<Result<(), ProposeError>>,
    },
    /// Graceful stop: refuse new requests, hand leadership over, flush
    /// storage, then answer (the actor ends right after).
    Shutdown {
        reply: oneshot::Sender<()>,
    },
}

/// A cheap, cloneable handle on a running node.
#[derive(Clone)]
pub struct NodeHandle {
    pub(crate) id: NodeId,
    /// The cluster id as the node knows it now (the founding nonce joins
    /// it once committed).
    pub(crate) cluster: ClusterBook,
    /// Set once the node learned it was removed from the cluster: its
    /// cluster id.
    pub(crate) removed: Subscriber<Option<String>>,
    pub(crate) requests: mpsc::Sender<NodeRequest>,
    pub(crate) metrics: Arc<NodeMetrics>,
    pub(crate) leader_hint: LeaderHint,
}

/// The API address (`host:port`) of the leader as this node last saw it,
/// shared by the Raft actor (writer) and every handle (readers). Servers
/// pass it to clients so they can send to the leader directly instead of
/// paying a forwarding hop on every request.
#[derive(Clone, Default)]
pub(crate) struct LeaderHint(Arc<Mutex<Option<Arc<str>>>>);

impl LeaderHint {
    pub(crate) fn get(&self) -> Option<Arc<str>> {
        // A plain value: a panic elsewhere cannot leave it torn.
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub(crate) fn set(&self, api_addr: Option<Arc<str>>) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = api_addr;
    }
}

fn stopped() -> ProposeError {
    ProposeError::Stopped {
        reason: "the node's actor has ended".into(),
    }
}

impl NodeHandle {
    pub fn id(&self) -> NodeId {
        self.id
    }

    pub fn cluster_id(&self) -> String {
        self.cluster.id().to_string()
    }

    /// Resolves once the node learned it was removed from its cluster
    /// (it has stopped serving): the cluster's id. Pending forever
    /// otherwise, also after the node stopped for another reason.
    pub async fn removed(&self) -> String {
        let mut removed = self.removed.clone();
        match removed.wait_for(Option::is_some).await {
            Ok(Some(cluster_id)) => cluster_id,
            _ => std::future::pending().await,
        }
    }

    /// The leader's API address (`host:port`) as this node last saw it;
    /// `None` while no leader is known or it has not published its address.
    /// Read without a message to the actor: cheap enough for every request.
    pub fn leader_api_addr(&self) -> Option<Arc<str>> {
        self.leader_hint.get()
    }

    pub fn metrics(&self) -> &NodeMetrics {
        &self.metrics
    }

    /// Replicates `command` and returns its reply once applied on this node.
    /// Followers forward to the leader. For an `Acquire` with `wait_ms > 0`
    /// the reply comes when the wait ends (`Acquired` or an error), so the
    /// deadline must cover `wait_ms`; dropping the future while queued
    /// withdraws the waiter.
    pub async fn propose(
        &self,
        command: Command,
        idempotency: Option<Idempotency>,
        deadline: Duration,
    ) -> Result<Reply, ProposeError> {
        let command = &command;
        let idempotency = &idempotency;
        self.retrying(deadline, |remaining| async move {
            let (reply, answer) = oneshot::channel();
            let request = NodeRequest::Propose {
                command: command.clone(),
                idempotency: idempotency.clone(),
                reply,
            };
            self.call(request, answer, remaining).await?
        })
        .await
    }

    /// Runs `attempt` until it answers something other than `Unavailable`
    /// or the deadline passes. Safe because `Unavailable` means the request
    /// certainly had no effect. At the deadline the last `Unavailable` is
    /// returned if no attempt was in flight (still "certainly not applied"),
    /// `Timeout` otherwise.
    async fn retrying<T, F, Fut>(
        &self,
        deadline: Duration,
        mut attempt: F,
    ) -> Result<T, ProposeError>
    where
        F: FnMut(Duration) -> Fut,
        Fut: std::future::Future<Output = Result<T, ProposeError>>,
    {
        let until = tokio::time::Instant::now() + deadline;
        let mut backoff_ms = RETRY_BACKOFF_MIN_MS;
        loop {
            let remaining = until.saturating_duration_since(tokio::time::Instant::now());
            if remaining.is_zero() {
                return Err(ProposeError::Timeout);
            }
            match attempt(remaining).await {
                Err(error @ ProposeError::Unavailable { .. }) => {
                    let remaining = until.saturating_duration_since(tokio::time::Instant::now());
                    let pause = Duration::from_millis(backoff_ms);
                    if pause >= remaining {
                        return Err(error);
                    }
                    tokio::time::sleep(pause).await;
                    backoff_ms = (backoff_ms * 2).min(RETRY_BACKOFF_MAX_MS);
                }
                other => return other,
            }
        }
    }

    /// A linearizable read: `query` runs on the state machine once it has
    /// applied everything committed before the read began.
    pub async fn read<R: Send + 'static>(
        &self,
        deadline: Duration,
        query: impl FnOnce(ReadContext<'_>) -> R + Send + 'static,
    ) -> Result<R, ProposeError> {
        let (result_tx, mut result_rx) = oneshot::channel();
        let mut query: ReadFn = Box::new(move |ctx| {
            let _ = result_tx.send(query(ctx));
        });
        let until = tokio::time::Instant::now() + deadline;
        let mut backoff_ms = RETRY_BACKOFF_MIN_MS;
        loop {
            let (failed, failed_rx) = oneshot::channel();
            // If the request does not get in, the query is gone with it.
            self.send(NodeRequest::Read { query, failed })?;
            let wait = async {
                tokio::select! {
                    biased;
                    Ok(value) = &mut result_rx => Ok(value),
                    Ok(failure) = failed_rx => Err(failure),
                    else => Err((stopped(), None)),
                }
            };
            let remaining = until.saturating_duration_since(tokio::time::Instant::now());
            match tokio::time::timeout(remaining, wait).await {
                Err(_) => return Err(ProposeError::Timeout),
                Ok(Ok(value)) => return Ok(value),
                Ok(Err((error @ ProposeError::Unavailable { .. }, Some(back)))) => {
                    let remaining = until.saturating_duration_since(tokio::time::Instant::now());
                    let pause = Duration::from_millis(backoff_ms);
                    if pause >= remaining {
                        return Err(error);
                    }
                    tokio::time::sleep(pause).await;
                    backoff_ms = (backoff_ms * 2).min(RETRY_BACKOFF_MAX_MS);
                    query = back;
                }
                Ok(Err((error, _))) => return Err(error),
            }
        }
    }

    /// A backup of the state machine at a committed index: taken after a
    /// ReadIndex round, so it holds every write acknowledged before the
    /// call began. The state is encoded on the actor (like a snapshot).
    pub async fn backup(&self, deadline: Duration) -> Result<Backup, ProposeError> {
        let cluster_id = self.cluster_id();
        let node_id = self.id;
        self.read(deadline, move |ctx| {
            Backup::of(cluster_id, node_id, ctx.state)
        })
        .await
    }

    /// This node's own view; answered without a quorum.
    pub async fn status(&self) -> Result<NodeStatus, ProposeError> {
        let (reply, answer) = oneshot::channel();
        self.call(
            NodeRequest::Status { reply },
            answer,
            Duration::from_secs(5),
        )
        .await
    }

    /// Adds a learner, promoted to voter once it acknowledged the commit
    /// index (never, if it never answers). With the joiner's
    /// `incarnation`, a retry of the same data dir is accepted and another
    /// data dir under a member's id refused; without it, an id that is
    /// already a voter is refused.
    pub async fn add_member(
        &self,
        id: NodeId,
        peer_addr: String,
        api_addr: String,
        incarnation: Option<u64>,
        deadline: Duration,
    ) -> Result<(), ProposeError> {
        let joiner = Joiner {
            id,
            peer_addr,
            api_addr,
            incarnation,
            cluster_id: None,
        };
        self.add(joiner, deadline).await
    }

    /// [`NodeHandle::add_member`] with everything a joining node says of
    /// itself: a `cluster_id` of another founding is refused
    /// (`InvalidMembership`, naming both ids).
    pub async fn add(&self, joiner: Joiner, deadline: Duration) -> Result<(), ProposeError> {
        let joiner = &joiner;
        self.retrying(deadline, |remaining| async move {
            let (reply, answer) = oneshot::channel();
            let request = NodeRequest::AddMember {
                id: joiner.id,
                peer_addr: joiner.peer_addr.clone(),
                api_addr: joiner.api_addr.clone(),
                incarnation: joiner.incarnation,
                cluster_id: joiner.cluster_id.clone(),
                reply,
            };
            self.call(request, answer, remaining).await?
        })
        .await
    }

    pub async fn remove_member(&self, id: NodeId, deadline: Duration) -> Result<(), ProposeError> {
        self.retrying(deadline, |remaining| async move {
            let (reply, answer) = oneshot::channel();
            self.call(NodeRequest::RemoveMember { id, reply }, answer, remaining)
                .await?
        })
        .await
    }

    /// Promotes learner `id`; refused (`InvalidMembership`) until it has
    /// acknowledged the leader's commit index. A voter is left as it is.
    pub async fn promote_member(&self, id: NodeId, deadline: Duration) -> Result<(), ProposeError> {
        self.retrying(deadline, |remaining| async move {
            let (reply, answer) = oneshot::channel();
            self.call(NodeRequest::Promote { id, reply }, answer, remaining)
                .await?
        })
        .await
    }

    /// Changes member `id`'s peer and/or API address (None: unchanged).
    pub async fn set_member_addrs(
        &self,
        id: NodeId,
        peer_addr: Option<String>,
        api_addr: Option<String>,
        deadline: Duration,
    ) -> Result<(), ProposeError> {
        let (peer_addr, api_addr) = (&peer_addr, &api_addr);
        self.retrying(deadline, |remaining| async move {
            let (reply, answer) = oneshot::channel();
            let request = NodeRequest::SetAddrs {
                id,
                peer_addr: peer_addr.clone(),
                api_addr: api_addr.clone(),
                reply,
            };
            self.call(request, answer, remaining).await?
        })
        .await
    }

    pub async fn transfer_leader(
        &self,
        to: NodeId,
        deadline: Duration,
    ) -> Result<(), ProposeError> {
        self.retrying(deadline, |remaining| async move {
            let (reply, answer) = oneshot::channel();
            self.call(NodeRequest::TransferLeader { to, reply }, answer, remaining)
                .await?
        })
        .await
    }

    /// Never waits: a full mailbox means the node is overloaded, which is
    /// `Unavailable` (certainly not applied), not a timeout.
    fn send(&self, request: NodeRequest) -> Result<(), ProposeError> {
        self.requests.try_send(request).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => ProposeError::Unavailable {
                leader: None,
                reason: "node mailbox full".into(),
            },
            mpsc::error::TrySendError::Closed(_) => stopped(),
        })
    }

    async fn call<T>(
        &self,
        request: NodeRequest,
        answer: oneshot::Receiver<T>,
        deadline: Duration,
    ) -> Result<T, ProposeError> {
        self.send(request)?;
        let exchange = async { answer.await.map_err(|_| stopped()) };
        tokio::time::timeout(deadline, exchange)
            .await
            .unwrap_or(Err(ProposeError::Timeout))
    }
}
