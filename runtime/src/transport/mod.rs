//! The peer transport: frames (`frame`), one outbound actor per remote node
//! (`peer`) and the inbound listener (`listener`). Messages are generic (`M`)
//! so the transport does not depend on the Raft message type.
//!
//! Connections are one-way: node A sends to B only on the connection A
//! dialled, and B's listener only reads. Each direction then has exactly one
//! owner, reconnect logic lives in one place, and a broken link in one
//! direction never blocks the other.

use std::time::Duration;

use bytes::BytesMut;
use deadbolt_core::raft::{LogIndex, NodeId};
use serde::de::DeserializeOwned;
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::cluster_id::ClusterId;

mod cluster_book;
mod frame;
mod incarnations;
mod listener;
mod peer;
mod probe;

pub use cluster_book::{ClusterBook, RemovalNotice};
pub use frame::{
    decode_frame, encode_frame, FrameError, Hello, Refusal, WireFrame, FRAME_BYTES_MAX,
    FRAME_VERSION, PROTOCOL_VERSION,
};
pub use incarnations::{IncarnationBook, IncarnationMismatch, INCARNATION_NONE};
pub use listener::{spawn_listener, ListenerHandle, ListenerStats, INBOUND_CONNECTIONS_MAX};
pub use peer::{spawn_peer, LinkFaults, PeerHandle, PeerStats, Peers, SEND_BATCH_BYTES_MAX};
pub use probe::{ask_founders, FounderAnswer};

/// Timing and sizing of the transport; one value shared by a node's actors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransportConfig {
    /// Our cluster id (tag + committed founding nonce) and committed
    /// membership, kept by the Raft actor.
    pub cluster: ClusterBook,
    pub local_id: NodeId,
    /// This node's data dir incarnation, sent in every hello.
    pub incarnation: u64,
    /// What the membership records for each peer (checked in both
    /// directions) and what peers claimed.
    pub incarnations: IncarnationBook,
    pub connect_timeout_ms: u64,
    pub handshake_timeout_ms: u64,
    /// A batch write (and flush) that takes longer drops the connection: under
    /// madsim a clogged link looks like a hang, not an error.
    pub write_timeout_ms: u64,
    /// An inbound connection with no frame for this long is closed.
    pub idle_timeout_ms: u64,
    /// An outbound connection with nothing to send sends a ping this often.
    pub keepalive_ms: u64,
    pub backoff_min_ms: u64,
    pub backoff_max_ms: u64,
    /// Percent of jitter (±) applied to each backoff.
    pub backoff_jitter_pct: u64,
    /// Messages queued per peer before new ones are dropped (Raft retries).
    pub peer_queue_messages_max: usize,
    /// Simulation only (a BUGGIFY point): one write in `.0` (0: never)
    /// stalls up to `.1` ms first, as a congested socket does, so that a
    /// small peer queue overflows and drops.
    #[cfg(madsim)]
    pub sim_write_stall: (u64, u64),
}

impl TransportConfig {
    pub fn new(cluster_id: impl Into<String>, local_id: NodeId) -> Self {
        Self {
            cluster: ClusterBook::new(ClusterId::parse(&cluster_id.into())),
            local_id,
            incarnation: INCARNATION_NONE,
            incarnations: IncarnationBook::new(),
            connect_timeout_ms: 1_000,
            handshake_timeout_ms: 1_000,
            write_timeout_ms: 2_000,
            idle_timeout_ms: 10_000,
            keepalive_ms: 2_000,
            backoff_min_ms: 50,
            backoff_max_ms: 2_000,
            backoff_jitter_pct: 20,
            peer_queue_messages_max: 4_096,
            #[cfg(madsim)]
            sim_write_stall: (0, 0),
        }
    }

    fn hello(&self) -> Hello {
        Hello {
            cluster_id: self.cluster.id().to_string(),
            node_id: self.local_id,
            protocol_version: PROTOCOL_VERSION,
            incarnation: self.incarnation,
        }
    }
}

/// Why a connection ended or could not start. Internal: the actors log it and
/// reconnect (outbound) or drop the connection (inbound).
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConnError {
    #[error("{0} timed out")]
    Timeout(&'static str),
    #[error("io error: {0}")]
    Io(std::io::Error),
    #[error("bad frame: {0}")]
    Frame(FrameError),
    #[error("connection closed by peer")]
    Closed,
    #[error("handshake refused: {0}")]
    Refused(String),
    #[error("handshake refused: {0}")]
    Incarnation(IncarnationMismatch),
    #[error("the peer refused us: {}", .0.reason)]
    PeerRefused(Refusal),
    /// The dialler is not in our committed membership (at this commit index).
    #[error("not a member of the committed membership at index {0}")]
    NotMember(LogIndex),
    #[error("protocol error: {0}")]
    Protocol(&'static str),
}

// The variants above carry their cause in their message (`{0}`), so they do
// not also return it from `source()` (no `#[from]`): a reporter that prints
// the chain, as the CLI and `deadbolt serve` do (`{:#}`), would print the
// cause twice. These `From`s keep `?` working.
impl From<std::io::Error> for ConnError {
    fn from(error: std::io::Error) -> Self {
        ConnError::Io(error)
    }
}
impl From<FrameError> for ConnError {
    fn from(error: FrameError) -> Self {
        ConnError::Frame(error)
    }
}

/// Reads the next frame, waiting at most `timeout`. `buf` carries bytes
/// already read past the previous frame.
pub(crate) async fn read_frame<M, R>(
    stream: &mut R,
    buf: &mut BytesMut,
    timeout: Duration,
    what: &'static str,
) -> Result<WireFrame<M>, ConnError>
where
    M: DeserializeOwned,
    R: AsyncRead + Unpin,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(frame) = decode_frame(buf)? {
            return Ok(frame);
        }
        buf.reserve(64 * 1024);
        // madsim has no `timeout_at`; a remaining-time timeout is equivalent.
        let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
        let read = tokio::time::timeout(remaining, stream.read_buf(buf))
            .await
            .map_err(|_| ConnError::Timeout(what))??;
        if read == 0 {
            return Err(ConnError::Closed);
        }
    }
}

/// Checks a peer's hello against our config; `expected` is the node we
/// dialled (None on the listening side).
pub(crate) fn check_hello(
    config: &TransportConfig,
    hello: &Hello,
    expected: Option<NodeId>,
) -> Result<(), ConnError> {
    if hello.protocol_version != PROTOCOL_VERSION {
        return Err(ConnError::Refused(format!(
            "node {} speaks protocol version {}, we speak {PROTOCOL_VERSION}",
            hello.node_id, hello.protocol_version
        )));
    }
    check_cluster(config, hello)?;
    if hello.node_id == 0 || hello.node_id == config.local_id {
        return Err(ConnError::Refused(format!(
            "peer claims node id {}, which is invalid or our own",
            hello.node_id
        )));
    }
    if let Some(expected) = expected {
        if hello.node_id != expected {
            return Err(ConnError::Refused(format!(
                "dialled node {expected} but node {} answered",
                hello.node_id
            )));
        }
    }
    config
        .incarnations
        .check(hello.node_id, hello.incarnation)
        .map_err(ConnError::Incarnation)?;
    config
        .incarnations
        .claimed(hello.node_id, hello.incarnation);
    Ok(())
}

/// Whether the peer's cluster (as its hello said) is compatible with ours
/// as we know it now: checked in the handshake and again before every
/// message, since our founding nonce may commit while a connection is open.
pub(crate) fn check_cluster(config: &TransportConfig, hello: &Hello) -> Result<(), ConnError> {
    let ours = config.cluster.id();
    if ours.compatible(&ClusterId::parse(&hello.cluster_id)) {
        return Ok(());
    }
    Err(ConnError::Refused(format!(
        "node {} belongs to cluster {}, we are cluster {ours}: another founding (a data dir \
         left from an earlier cluster?); refusing to talk Raft with it",
        hello.node_id, hello.cluster_id
    )))
}

impl ConnError {
    /// What a listener tells a dialler it refuses (None: not a refusal).
    pub(crate) fn refusal(&self) -> Option<Refusal> {
        match self {
            ConnError::Refused(reason) => Some(Refusal {
                reason: reason.clone(),
                recorded_incarnation: None,
                removed_at: None,
                cluster_id: String::new(),
            }),
            ConnError::Incarnation(mismatch) => Some(Refusal {
                reason: mismatch.to_string(),
                recorded_incarnation: Some(mismatch.recorded),
                removed_at: None,
                cluster_id: String::new(),
            }),
            ConnError::NotMember(commit_index) => Some(Refusal {
                reason: self.to_string(),
                recorded_incarnation: None,
                removed_at: Some(*commit_index),
                cluster_id: String::new(),
            }),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests;
