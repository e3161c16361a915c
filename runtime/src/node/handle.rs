//! The typed handle through which the server, tests and the simulation talk
//! to a running node. Every call is a message into the Raft actor's bounded
//! mailbox, answered on a oneshot; deadlines are enforced here, so no call
//! can hang whatever the cluster is doing.

use std::sync::Arc;
use std::time::Duration;

use deadbolt_core::lock::{Command, Idempotency, LeaseTracker, LockStateMachine, Reply};
use deadbolt_core::raft::{LogIndex, NodeId, Role, Term};
use tokio::sync::{mpsc, oneshot};

use crate::metrics::NodeMetrics;

/// Why a write did not produce a reply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
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
}

/// What a linearizable read sees: the state machine after applying at least
/// the read index, and (on the leader) the lease tracker.
pub struct ReadContext<'a> {
    pub state: &'a LockStateMachine,
    /// Only on the leader: when each session's lease runs out.
    pub lease: Option<&'a LeaseTracker>,
    /// The node's monotonic clock, for `expires_in_ms`.
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
    /// Knows a leader that has (as far as this node can tell) a quorum, and
    /// has applied what it knows committed: `/ready` answers 200.
    pub ready: bool,
}

type ReadFn = Box<dyn FnOnce(ReadContext<'_>) + Send>;

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
    Read {
        query: ReadFn,
        failed: oneshot::Sender<ProposeError>,
    },
    Status {
        reply: oneshot::Sender<NodeStatus>,
    },
    AddMember {
        id: NodeId,
        peer_addr: String,
        api_addr: String,
        reply: oneshot::Sender<Result<(), ProposeError>>,
    },
    RemoveMember {
        id: NodeId,
        reply: oneshot::Sender<Result<(), ProposeError>>,
    },
    TransferLeader {
        to: NodeId,
        reply: oneshot::Sender<Result<(), ProposeError>>,
    },
}

/// A cheap, cloneable handle on a running node.
#[derive(Clone)]
pub struct NodeHandle {
    pub(crate) id: NodeId,
    pub(crate) cluster_id: Arc<str>,
    pub(crate) requests: mpsc::Sender<NodeRequest>,
    pub(crate) metrics: Arc<NodeMetrics>,
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

    pub fn cluster_id(&self) -> &str {
        &self.cluster_id
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
        let (reply, answer) = oneshot::channel();
        self.call(
            NodeRequest::Propose {
                command,
                idempotency,
                reply,
            },
            answer,
            deadline,
        )
        .await?
    }

    /// A linearizable read: `query` runs on the state machine once it has
    /// applied everything committed before the read began.
    pub async fn read<R: Send + 'static>(
        &self,
        deadline: Duration,
        query: impl FnOnce(ReadContext<'_>) -> R + Send + 'static,
    ) -> Result<R, ProposeError> {
        let (result_tx, result_rx) = oneshot::channel();
        let (failed, failed_rx) = oneshot::channel();
        let query: ReadFn = Box::new(move |ctx| {
            let _ = result_tx.send(query(ctx));
        });
        self.send(NodeRequest::Read { query, failed }).await?;
        let wait = async {
            tokio::select! {
                biased;
                Ok(value) = result_rx => Ok(value),
                Ok(error) = failed_rx => Err(error),
                else => Err(stopped()),
            }
        };
        tokio::time::timeout(deadline, wait)
            .await
            .unwrap_or(Err(ProposeError::Timeout))
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

    /// Adds a learner that is promoted to voter once caught up.
    pub async fn add_member(
        &self,
        id: NodeId,
        peer_addr: String,
        api_addr: String,
        deadline: Duration,
    ) -> Result<(), ProposeError> {
        let (reply, answer) = oneshot::channel();
        let request = NodeRequest::AddMember {
            id,
            peer_addr,
            api_addr,
            reply,
        };
        self.call(request, answer, deadline).await?
    }

    pub async fn remove_member(&self, id: NodeId, deadline: Duration) -> Result<(), ProposeError> {
        let (reply, answer) = oneshot::channel();
        self.call(NodeRequest::RemoveMember { id, reply }, answer, deadline)
            .await?
    }

    pub async fn transfer_leader(
        &self,
        to: NodeId,
        deadline: Duration,
    ) -> Result<(), ProposeError> {
        let (reply, answer) = oneshot::channel();
        self.call(NodeRequest::TransferLeader { to, reply }, answer, deadline)
            .await?
    }

    async fn send(&self, request: NodeRequest) -> Result<(), ProposeError> {
        self.requests.send(request).await.map_err(|_| stopped())
    }

    async fn call<T>(
        &self,
        request: NodeRequest,
        answer: oneshot::Receiver<T>,
        deadline: Duration,
    ) -> Result<T, ProposeError> {
        let exchange = async {
            self.send(request).await?;
            answer.await.map_err(|_| stopped())
        };
        tokio::time::timeout(deadline, exchange)
            .await
            .unwrap_or(Err(ProposeError::Timeout))
    }
}
