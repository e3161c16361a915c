//! The inbound listener: accepts peer connections, checks each handshake,
//! and delivers `(from, message)` to the node's inbound channel.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use deadbolt_core::raft::NodeId;
use serde::{de::DeserializeOwned, Serialize};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinHandle;

use super::peer::write_batch;
use super::{
    check_cluster, check_hello, encode_frame, read_frame, ConnError, Refusal, TransportConfig,
    WireFrame,
};
use crate::shutdown::{wait_for_shutdown, Shutdown};

/// Inbound connections served at once; more are closed on accept. A cluster
/// has at most a handful of peers, so this only bounds misbehaving clients.
pub const INBOUND_CONNECTIONS_MAX: usize = 64;

#[derive(Debug, Default)]
struct Counters {
    accepted: AtomicU64,
    rejected_over_limit: AtomicU64,
    refused_handshake: AtomicU64,
    bad_frames: AtomicU64,
    messages_delivered: AtomicU64,
}

/// Counters of the listener (monotonic since start).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListenerStats {
    pub accepted: u64,
    pub rejected_over_limit: u64,
    pub refused_handshake: u64,
    /// Connections closed because of a garbage, truncated or oversized frame.
    pub bad_frames: u64,
    pub messages_delivered: u64,
}

/// The running listener: its task and its counters.
#[derive(Debug)]
pub struct ListenerHandle {
    pub task: JoinHandle<()>,
    counters: Arc<Counters>,
}

impl ListenerHandle {
    pub fn stats(&self) -> ListenerStats {
        let c = &self.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        ListenerStats {
            accepted: get(&c.accepted),
            rejected_over_limit: get(&c.rejected_over_limit),
            refused_handshake: get(&c.refused_handshake),
            bad_frames: get(&c.bad_frames),
            messages_delivered: get(&c.messages_delivered),
        }
    }
}

/// Serves peers on `listener` until `shutdown`. Every accepted message is
/// sent to `inbound` as `(sender node id, message)`; when `inbound` is full
/// the connection waits (TCP backpressure) rather than dropping.
pub fn spawn_listener<M>(
    listener: TcpListener,
    config: Arc<TransportConfig>,
    inbound: mpsc::Sender<(NodeId, M)>,
    mut shutdown: Shutdown,
) -> ListenerHandle
where
    M: Serialize + DeserializeOwned + Send + 'static,
{
    let counters = Arc::new(Counters::default());
    let task_counters = counters.clone();
    let span = tracing::info_span!("listener", node_id = config.local_id);
    let task = tokio::spawn(tracing::Instrument::instrument(
        async move {
            let counters = task_counters;
            let slots = Arc::new(Semaphore::new(INBOUND_CONNECTIONS_MAX));
            loop {
                let accepted = tokio::select! {
                    biased;
                    _ = wait_for_shutdown(&mut shutdown) => return,
                    accepted = listener.accept() => accepted,
                };
                let (stream, remote) = match accepted {
                    Ok(pair) => pair,
                    Err(error) => {
                        // E.g. out of file descriptors: pause instead of spinning.
                        tracing::warn!(node_id = config.local_id, %error, "accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let Ok(permit) = slots.clone().try_acquire_owned() else {
                    counters.rejected_over_limit.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(node_id = config.local_id, %remote, "too many inbound connections; closing");
                    continue;
                };
                counters.accepted.fetch_add(1, Ordering::Relaxed);
                let connection = Connection {
                    config: config.clone(),
                    inbound: inbound.clone(),
                    shutdown: shutdown.clone(),
                    counters: counters.clone(),
                    remote,
                };
                let span = tracing::info_span!("peer_conn", %remote);
                tokio::spawn(tracing::Instrument::instrument(
                    async move {
                        connection.serve(stream).await;
                        drop(permit);
                    },
                    span,
                ));
            }
        },
        span,
    ));
    ListenerHandle { task, counters }
}

struct Connection<M> {
    config: Arc<TransportConfig>,
    inbound: mpsc::Sender<(NodeId, M)>,
    shutdown: Shutdown,
    counters: Arc<Counters>,
    remote: SocketAddr,
}

impl<M: Serialize + DeserializeOwned + Send + 'static> Connection<M> {
    async fn serve(mut self, stream: TcpStream) {
        let mut shutdown = self.shutdown.clone();
        let result = tokio::select! {
            biased;
            _ = wait_for_shutdown(&mut shutdown) => return,
            result = self.run(stream) => result,
        };
        let remote = self.remote;
        let node_id = self.config.local_id;
        match result {
            Ok(()) => {}
            Err(ConnError::Closed) => {
                tracing::debug!(node_id, %remote, "peer closed the connection")
            }
            Err(
                error @ (ConnError::Refused(_)
                | ConnError::Incarnation(_)
                | ConnError::NotMember(_)),
            ) => {
                self.counters
                    .refused_handshake
                    .fetch_add(1, Ordering::Relaxed);
                tracing::warn!(node_id, %remote, reason = %error, "refused peer");
            }
            Err(ConnError::Frame(error)) => {
                self.counters.bad_frames.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(node_id, %remote, %error, "closing connection after a bad frame");
            }
            Err(error) => tracing::info!(node_id, %remote, %error, "closing peer connection"),
        }
    }

    async fn run(&mut self, mut stream: TcpStream) -> Result<(), ConnError> {
        let config = self.config.clone();
        let mut buf = BytesMut::new();
        let first = read_frame::<M, _>(
            &mut stream,
            &mut buf,
            Duration::from_millis(config.handshake_timeout_ms),
            "handshake",
        )
        .await?;
        let WireFrame::Hello(hello) = first else {
            return Err(ConnError::Protocol("first frame is not a hello"));
        };
        // Judge, then answer: our hello, or why we refuse (so the dialler
        // can say, and a founder on an empty data dir learns that we hold
        // its cluster); then refuse by closing.
        let judged = check_hello(&config, &hello, None).and_then(|()| {
            // One of ours, but not a member any more: tell it, with our
            // commit index as the proof it checks.
            match config.cluster.removal_proof(hello.node_id) {
                Some(commit_index) => Err(ConnError::NotMember(commit_index)),
                None => Ok(()),
            }
        });
        let answer = match judged.as_ref().err().and_then(ConnError::refusal) {
            Some(refusal) => WireFrame::Refused(Refusal {
                cluster_id: config.cluster.id().to_string(),
                ..refusal
            }),
            None => WireFrame::Hello(config.hello()),
        };
        let mut out = Vec::new();
        encode_frame::<M>(&answer, &mut out)?;
        write_batch(&mut stream, &out, config.handshake_timeout_ms).await?;
        judged?;
        let from = hello.node_id;
        tracing::debug!(node_id = config.local_id, peer = from, remote = %self.remote, "peer connected");
        let idle = Duration::from_millis(config.idle_timeout_ms);
        loop {
            match read_frame::<M, _>(&mut stream, &mut buf, idle, "idle read").await? {
                WireFrame::Message(message) => {
                    // The membership may have recorded another incarnation
                    // since the handshake: nothing of a stale one counts.
                    config
                        .incarnations
                        .check(from, hello.incarnation)
                        .map_err(ConnError::Incarnation)?;
                    // Our founding nonce may have committed since.
                    check_cluster(&config, &hello)?;
                    // Removed since it connected: close, so that it dials
                    // again and hears why in the handshake.
                    if let Some(commit_index) = config.cluster.removal_proof(from) {
                        return Err(ConnError::NotMember(commit_index));
                    }
                    if self.inbound.send((from, message)).await.is_err() {
                        // The node stopped taking messages: it is shutting down.
                        return Ok(());
                    }
                    self.counters
                        .messages_delivered
                        .fetch_add(1, Ordering::Relaxed);
                }
                WireFrame::Ping => {}
                WireFrame::Hello(_) => return Err(ConnError::Protocol("second hello")),
                WireFrame::Refused(_) => {
                    return Err(ConnError::Protocol("a dialler sent a refusal"))
                }
            }
        }
    }
}
