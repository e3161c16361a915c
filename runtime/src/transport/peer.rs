//! Outbound peer actors: one task per remote node that connects, handshakes,
//! writes queued messages in batches, and reconnects with capped, jittered
//! exponential backoff. Its queue is bounded and drops on overflow: Raft
//! tolerates lost messages and retries, so a slow peer must never stall the
//! Raft actor.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use deadbolt_core::raft::NodeId;
use serde::{de::DeserializeOwned, Serialize};
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::cluster_id::ClusterId;

use super::{
    check_cluster, check_hello, encode_frame, read_frame, ConnError, Hello, RemovalNotice,
    TransportConfig, WireFrame,
};
use crate::rng::SplitMix64;
use crate::shutdown::{wait_for_shutdown, Shutdown};

/// Bytes gathered into one write (one syscall, one simulated packet).
pub const SEND_BATCH_BYTES_MAX: usize = 1024 * 1024;

#[derive(Debug, Default)]
struct Counters {
    messages_sent: AtomicU64,
    bytes_sent: AtomicU64,
    writes: AtomicU64,
    dropped_queue_full: AtomicU64,
    dropped_disconnected: AtomicU64,
    dropped_too_large: AtomicU64,
    connects: AtomicU64,
    connect_failures: AtomicU64,
    disconnects: AtomicU64,
    fault_dropped: AtomicU64,
    fault_duplicated: AtomicU64,
    fault_reordered: AtomicU64,
}

/// Injected faults on one outbound link, for the simulation (madsim's TCP
/// never loses, duplicates or reorders our frames by itself). Rates are per
/// million messages; choices come from the peer actor's seeded rng.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinkFaults {
    pub drop_per_million: u64,
    pub duplicate_per_million: u64,
    /// A reordered message is held back and sent after the next write.
    pub reorder_per_million: u64,
}

impl LinkFaults {
    fn is_none(&self) -> bool {
        *self == Self::default()
    }
}

fn bump(counter: &AtomicU64, by: u64) {
    counter.fetch_add(by, Ordering::Relaxed);
}

/// Counters of one peer actor (monotonic since start).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeerStats {
    pub messages_sent: u64,
    pub bytes_sent: u64,
    /// Socket writes; `messages_sent / writes` is the batching factor.
    pub writes: u64,
    pub dropped_queue_full: u64,
    /// Dropped because they were queued while the peer was unreachable.
    pub dropped_disconnected: u64,
    pub dropped_too_large: u64,
    pub connects: u64,
    pub connect_failures: u64,
    pub disconnects: u64,
    pub fault_dropped: u64,
    pub fault_duplicated: u64,
    pub fault_reordered: u64,
}

/// The sending side of one peer actor. Dropping every clone stops the actor.
#[derive(Debug)]
pub struct PeerHandle<M> {
    remote_id: NodeId,
    addr: String,
    tx: mpsc::Sender<M>,
    counters: Arc<Counters>,
    faults: Arc<Mutex<LinkFaults>>,
}

impl<M> Clone for PeerHandle<M> {
    fn clone(&self) -> Self {
        Self {
            remote_id: self.remote_id,
            addr: self.addr.clone(),
            tx: self.tx.clone(),
            counters: self.counters.clone(),
            faults: self.faults.clone(),
        }
    }
}

impl<M> PeerHandle<M> {
    /// Queues a message; never waits. Returns false (and counts the drop) if
    /// the queue is full or the actor has stopped.
    pub fn send(&self, message: M) -> bool {
        match self.tx.try_send(message) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                bump(&self.counters.dropped_queue_full, 1);
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }

    /// Changes the injected faults on this link from the next write on.
    pub fn set_faults(&self, faults: LinkFaults) {
        *self.faults.lock().unwrap_or_else(|e| e.into_inner()) = faults;
    }

    pub fn remote_id(&self) -> NodeId {
        self.remote_id
    }

    pub fn addr(&self) -> &str {
        &self.addr
    }

    pub fn stats(&self) -> PeerStats {
        let c = &self.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        PeerStats {
            messages_sent: get(&c.messages_sent),
            bytes_sent: get(&c.bytes_sent),
            writes: get(&c.writes),
            dropped_queue_full: get(&c.dropped_queue_full),
            dropped_disconnected: get(&c.dropped_disconnected),
            dropped_too_large: get(&c.dropped_too_large),
            connects: get(&c.connects),
            connect_failures: get(&c.connect_failures),
            disconnects: get(&c.disconnects),
            fault_dropped: get(&c.fault_dropped),
            fault_duplicated: get(&c.fault_duplicated),
            fault_reordered: get(&c.fault_reordered),
        }
    }
}

/// Starts the actor that delivers messages to `remote_id` at `addr`
/// (`host:port`). It ends on `shutdown` or when every handle is dropped.
pub fn spawn_peer<M>(
    config: Arc<TransportConfig>,
    remote_id: NodeId,
    addr: String,
    rng: SplitMix64,
    shutdown: Shutdown,
) -> (PeerHandle<M>, JoinHandle<()>)
where
    M: Serialize + DeserializeOwned + Send + 'static,
{
    let (tx, rx) = mpsc::channel(config.peer_queue_messages_max.max(1));
    let counters = Arc::new(Counters::default());
    let faults = Arc::new(Mutex::new(LinkFaults::default()));
    let handle = PeerHandle {
        remote_id,
        addr: addr.clone(),
        tx,
        counters: counters.clone(),
        faults: faults.clone(),
    };
    let actor = PeerActor {
        config,
        remote_id,
        addr,
        rng,
        shutdown,
        rx,
        counters,
        faults,
        held: None,
    };
    let span = tracing::info_span!("peer", node_id = actor.config.local_id, peer = remote_id);
    let task = tokio::spawn(tracing::Instrument::instrument(actor.run(), span));
    (handle, task)
}

struct PeerActor<M> {
    config: Arc<TransportConfig>,
    remote_id: NodeId,
    addr: String,
    rng: SplitMix64,
    shutdown: Shutdown,
    rx: mpsc::Receiver<M>,
    counters: Arc<Counters>,
    faults: Arc<Mutex<LinkFaults>>,
    /// An encoded frame held back by an injected reorder.
    held: Option<Vec<u8>>,
}

/// Why a connection (or the wait for one) ended.
enum Ended {
    Shutdown,
    HandlesGone,
    Failed(ConnError),
}

impl<M: Serialize + DeserializeOwned + Send + 'static> PeerActor<M> {
    async fn run(mut self) {
        let mut backoff_ms = self.config.backoff_min_ms.max(1);
        let mut was_connected = true;
        let mut last_refusal = String::new();
        loop {
            let mut shutdown = self.shutdown.clone();
            let connected = tokio::select! {
                biased;
                _ = wait_for_shutdown(&mut shutdown) => return,
                result = self.connect() => result,
            };
            match connected {
                Ok((stream, remote_hello)) => {
                    bump(&self.counters.connects, 1);
                    tracing::debug!(addr = %self.addr, "connected");
                    backoff_ms = self.config.backoff_min_ms.max(1);
                    was_connected = true;
                    match self.pump(stream, &remote_hello).await {
                        Ended::Shutdown | Ended::HandlesGone => return,
                        Ended::Failed(error) => {
                            bump(&self.counters.disconnects, 1);
                            tracing::info!(addr = %self.addr, %error, "connection lost; reconnecting");
                        }
                    }
                }
                Err(error) => {
                    bump(&self.counters.connect_failures, 1);
                    let refusal = match &error {
                        ConnError::PeerRefused(refusal) => Some(refusal.reason.clone()),
                        other => other.refusal().map(|r| r.reason),
                    };
                    match refusal {
                        // Warn once per distinct refusal, not on every retry.
                        Some(reason) if reason != last_refusal => {
                            tracing::warn!(addr = %self.addr, %reason, "peer refused");
                            last_refusal = reason;
                        }
                        Some(reason) => {
                            tracing::debug!(addr = %self.addr, %reason, "peer refused again")
                        }
                        // Log the first failure of an outage, not every retry.
                        _ if was_connected => {
                            tracing::info!(addr = %self.addr, %error, "cannot reach peer; retrying")
                        }
                        _ => tracing::debug!(addr = %self.addr, %error, "connect failed"),
                    }
                    was_connected = false;
                }
            }
            let delay_ms = self
                .rng
                .jitter_ms(backoff_ms, self.config.backoff_jitter_pct);
            backoff_ms = backoff_ms
                .saturating_mul(2)
                .min(self.config.backoff_max_ms.max(1));
            if self.wait_backoff(Duration::from_millis(delay_ms)).await {
                return;
            }
        }
    }

    /// Sleeps out a backoff, discarding messages queued meanwhile: they would
    /// be stale by the time we connect, and Raft will send fresh ones.
    /// Returns true if the actor must stop.
    async fn wait_backoff(&mut self, delay: Duration) -> bool {
        let until = Instant::now() + delay;
        loop {
            tokio::select! {
                biased;
                _ = wait_for_shutdown(&mut self.shutdown) => return true,
                _ = tokio::time::sleep_until(until) => return false,
                message = self.rx.recv() => match message {
                    Some(_) => bump(&self.counters.dropped_disconnected, 1),
                    None => return true,
                },
            }
        }
    }

    /// Connects and exchanges hellos, each step under its own deadline;
    /// returns the stream and the peer's hello (its incarnation and cluster
    /// id are checked again before every write). A refusal that says we
    /// were removed is noted in the cluster book for the Raft actor.
    async fn connect(&self) -> Result<(TcpStream, Hello), ConnError> {
        let config = &self.config;
        let mut stream = tokio::time::timeout(
            Duration::from_millis(config.connect_timeout_ms),
            TcpStream::connect(self.addr.as_str()),
        )
        .await
        .map_err(|_| ConnError::Timeout("connect"))??;
        #[cfg(not(madsim))]
        stream.set_nodelay(true)?;
        let mut out = Vec::new();
        encode_frame::<M>(&WireFrame::Hello(config.hello()), &mut out)?;
        write_batch(&mut stream, &out, config.handshake_timeout_ms).await?;
        let mut buf = BytesMut::new();
        let reply = read_frame::<M, _>(
            &mut stream,
            &mut buf,
            Duration::from_millis(config.handshake_timeout_ms),
            "handshake",
        )
        .await?;
        let hello = match reply {
            WireFrame::Hello(hello) => hello,
            WireFrame::Refused(refusal) => {
                let theirs = ClusterId::parse(&refusal.cluster_id);
                let same_cluster = config.cluster.id().compatible(&theirs);
                if let (Some(commit_index), true) = (refusal.removed_at, same_cluster) {
                    let notice = RemovalNotice {
                        from: self.remote_id,
                        commit_index,
                        cluster_id: theirs,
                    };
                    config.cluster.removal_noticed(notice);
                }
                return Err(ConnError::PeerRefused(refusal));
            }
            _ => return Err(ConnError::Protocol("first frame is not a hello")),
        };
        check_hello(config, &hello, Some(self.remote_id))?;
        Ok((stream, hello))
    }

    /// Sends queued messages until the connection fails or the actor stops.
    /// Before each write the peer's incarnation is checked again: the
    /// membership may have recorded another one since the handshake.
    async fn pump(&mut self, stream: TcpStream, remote: &Hello) -> Ended {
        let (mut reader, mut writer) = tokio::io::split(stream);
        let keepalive = Duration::from_millis(self.config.keepalive_ms.max(1));
        let mut next_ping = Instant::now() + keepalive;
        let mut probe = [0u8; 64];
        let mut out = Vec::with_capacity(64 * 1024);
        loop {
            out.clear();
            let mut messages = 0u64;
            let previously_held = self.held.take();
            tokio::select! {
                biased;
                _ = wait_for_shutdown(&mut self.shutdown) => return Ended::Shutdown,
                // The listener never writes after its hello: a read can only
                // end in EOF or an error, which is how we notice a dead peer.
                read = reader.read(&mut probe) => {
                    return Ended::Failed(match read {
                        Ok(0) => ConnError::Closed,
                        Ok(_) => ConnError::Protocol("listener sent data after its hello"),
                        Err(e) => ConnError::Io(e),
                    });
                }
                message = self.rx.recv() => {
                    let Some(message) = message else { return Ended::HandlesGone };
                    // Read when there is something to send, so a change applies at once.
                    let faults = *self.faults.lock().unwrap_or_else(|e| e.into_inner());
                    self.encode_message(&message, faults, &mut out, &mut messages);
                    // Pipeline: fold everything already queued into one write.
                    while out.len() < SEND_BATCH_BYTES_MAX {
                        let Ok(message) = self.rx.try_recv() else { break };
                        self.encode_message(&message, faults, &mut out, &mut messages);
                    }
                }
                _ = tokio::time::sleep_until(next_ping) => {
                    if let Err(e) = encode_frame::<M>(&WireFrame::Ping, &mut out) {
                        return Ended::Failed(e.into());
                    }
                }
            }
            // A frame held back by an injected reorder goes after newer ones.
            if let Some(held) = previously_held {
                out.extend_from_slice(&held);
            }
            // Never write (or flush) nothing: under madsim an empty flush
            // still sends a packet.
            if out.is_empty() {
                continue;
            }
            #[cfg(madsim)]
            self.sim_write_stall().await;
            if let Err(mismatch) = self
                .config
                .incarnations
                .check(self.remote_id, remote.incarnation)
            {
                return Ended::Failed(ConnError::Incarnation(mismatch));
            }
            // Our founding nonce may have committed since the handshake.
            if let Err(error) = check_cluster(&self.config, remote) {
                return Ended::Failed(error);
            }
            if let Err(e) = write_batch(&mut writer, &out, self.config.write_timeout_ms).await {
                return Ended::Failed(e);
            }
            bump(&self.counters.writes, 1);
            bump(&self.counters.bytes_sent, out.len() as u64);
            bump(&self.counters.messages_sent, messages);
            next_ping = Instant::now() + keepalive;
        }
    }

    /// BUGGIFY (simulation only): stall this write a while, so that the
    /// bounded queue fills behind it. No draw when the point is off, so the
    /// other choices of this rng stay where they were.
    #[cfg(madsim)]
    async fn sim_write_stall(&mut self) {
        let (one_in, max_ms) = self.config.sim_write_stall;
        if one_in > 0 && crate::buggify::enabled() && self.rng.chance(1, one_in) {
            let ms = self.rng.range_u64(1, max_ms.max(1) + 1);
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
    }

    fn encode_message(
        &mut self,
        message: &M,
        faults: LinkFaults,
        out: &mut Vec<u8>,
        messages: &mut u64,
    ) {
        const MILLION: u64 = 1_000_000;
        if !faults.is_none() && self.rng.chance(faults.drop_per_million, MILLION) {
            bump(&self.counters.fault_dropped, 1);
            return;
        }
        let start = out.len();
        match encode_frame(&WireFrame::Message(message), out) {
            Ok(()) => *messages += 1,
            Err(error) => {
                bump(&self.counters.dropped_too_large, 1);
                tracing::error!(%error, "dropping a message too large for one frame");
                return;
            }
        }
        if faults.is_none() {
            return;
        }
        if self.rng.chance(faults.duplicate_per_million, MILLION) {
            bump(&self.counters.fault_duplicated, 1);
            out.extend_from_within(start..);
        }
        if self.held.is_none() && self.rng.chance(faults.reorder_per_million, MILLION) {
            bump(&self.counters.fault_reordered, 1);
            self.held = Some(out.split_off(start));
        }
    }
}

/// Writes and flushes one batch under a deadline.
pub(crate) async fn write_batch<W: AsyncWrite + Unpin>(
    writer: &mut W,
    bytes: &[u8],
    timeout_ms: u64,
) -> Result<(), ConnError> {
    debug_assert!(!bytes.is_empty(), "empty writes cost a packet under madsim");
    tokio::time::timeout(Duration::from_millis(timeout_ms), async {
        writer.write_all(bytes).await?;
        writer.flush().await
    })
    .await
    .map_err(|_| ConnError::Timeout("write"))?
    .map_err(ConnError::Io)
}

/// A node's outbound side: one peer actor per remote node, keyed by id.
#[derive(Debug)]
pub struct Peers<M> {
    config: Arc<TransportConfig>,
    rng: SplitMix64,
    shutdown: Shutdown,
    peers: BTreeMap<NodeId, PeerHandle<M>>,
    /// Every peer actor started (replaced ones end once their handle drops),
    /// so a node can wait for all of them at shutdown.
    tasks: Vec<JoinHandle<()>>,
}

impl<M: Serialize + DeserializeOwned + Send + 'static> Peers<M> {
    /// `rng` seeds every peer's backoff jitter (one fork per peer).
    pub fn new(config: Arc<TransportConfig>, rng: SplitMix64, shutdown: Shutdown) -> Self {
        Self {
            config,
            rng,
            shutdown,
            peers: BTreeMap::new(),
            tasks: Vec::new(),
        }
    }

    /// Starts (or, if the address changed, restarts) the actor for `id`.
    pub fn set_peer(&mut self, id: NodeId, addr: &str) {
        if id == self.config.local_id || self.peers.get(&id).is_some_and(|p| p.addr() == addr) {
            return;
        }
        self.tasks.retain(|t| !t.is_finished());
        let (handle, task) = spawn_peer(
            self.config.clone(),
            id,
            addr.to_string(),
            self.rng.fork(),
            self.shutdown.clone(),
        );
        // Replacing the old handle drops it, which stops the old actor.
        self.peers.insert(id, handle);
        self.tasks.push(task);
    }

    /// Stops the actor for `id` (a member that left).
    pub fn remove_peer(&mut self, id: NodeId) {
        self.peers.remove(&id);
    }

    /// Sets the injected faults on the link to `to` (false if unknown).
    pub fn set_faults(&self, to: NodeId, faults: LinkFaults) -> bool {
        self.peers.get(&to).map(|p| p.set_faults(faults)).is_some()
    }

    /// Queues `message` for `to`; false if unknown or dropped.
    pub fn send(&self, to: NodeId, message: M) -> bool {
        self.peers.get(&to).is_some_and(|p| p.send(message))
    }

    pub fn stats(&self) -> BTreeMap<NodeId, PeerStats> {
        self.peers.iter().map(|(id, p)| (*id, p.stats())).collect()
    }

    /// Stops every peer actor (drops their handles) and returns their tasks
    /// to wait for.
    pub fn close(mut self) -> Vec<JoinHandle<()>> {
        self.peers.clear();
        std::mem::take(&mut self.tasks)
    }
}
