//! A running node: `Node::start` wires storage, transport and the Raft actor
//! together; `NodeHandle` (the contract with the server) reaches the actor;
//! `Node::shutdown` stops it gracefully.
//!
//! Tasks of one node: the Raft actor (`actor`), the storage actor, the peer
//! listener and one peer actor per remote member. They share one shutdown
//! signal; `shutdown`/`kill` wait for all of them.

mod actor;
mod cluster_time;
mod config;
mod force_new_cluster;
mod forward;
mod founding;
mod handle;
mod incarnation;
mod observer;
mod peer_set;
mod pending;
mod removal;
mod seen_forwards;
mod snapshot_policy;
mod status;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use deadbolt_core::lock::LockStateMachine;
use deadbolt_core::raft::{LogIndex, Member, Membership, NodeId, Replica, RestoredState, Term};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

pub use config::{
    Bootstrap, LinkFaultsTable, NodeConfig, RaftTiming, StartError, StorageChoice,
    SNAPSHOT_THRESHOLD_ENTRIES_DEFAULT,
};
pub use handle::{
    Joiner, MemberView, NodeHandle, NodeStatus, ProposeError, ReadContext,
    NODE_MAILBOX_REQUESTS_MAX,
};
pub use observer::{entry_hash, NodeEvent, NodeObserver};

use crate::cluster_id::ClusterId;
use crate::latest;
use crate::metrics::NodeMetrics;
use crate::rng::SplitMix64;
use crate::shutdown::{shutdown_channel, Shutdown, ShutdownTrigger};
use crate::storage::{
    spawn_storage_actor, Identity, Recovered, SimStorage, Storage, StorageHandle,
};
use crate::transport::{
    ask_founders, spawn_listener, FounderAnswer, ListenerHandle, Peers, TransportConfig,
    INCARNATION_NONE,
};
use actor::{Actor, ActorIo, NodeIdentity, Reports, StartState};
use force_new_cluster::Forced;
use forward::PeerMessage;
use handle::{LeaderHint, NodeRequest};
use peer_set::PeerSet;

/// Inbound peer messages buffered between the listener and the actor; when
/// full, the listener's connections wait (TCP backpressure).
pub const INBOUND_PEER_MESSAGES_MAX: usize = 4096;
/// How long `Node::shutdown` waits for the actor's graceful stop (leadership
/// transfer and flush are bounded inside it) before forcing the shutdown.
const SHUTDOWN_GRACE_MS: u64 = 5_000;

/// A running node. Drop it (or call [`Node::kill`]) to stop abruptly;
/// [`Node::shutdown`] stops gracefully.
pub struct Node {
    handle: NodeHandle,
    trigger: ShutdownTrigger,
    actor: JoinHandle<Vec<JoinHandle<()>>>,
    storage: JoinHandle<()>,
    listener: ListenerHandle,
}

impl Node {
    /// Opens storage, recovers the Raft log and the lock state, and starts
    /// every task of the node.
    pub async fn start(config: NodeConfig) -> Result<Node, StartError> {
        let raft_config = config.raft_config();
        raft_config.validate()?;
        if config.advertise_peer_addr.is_empty() {
            return Err(StartError::InvalidConfig {
                field: "advertise_peer_addr",
                message: "must not be empty".into(),
            });
        }
        let span = tracing::info_span!("node", node_id = config.node_id);
        let _guard = span.enter();

        let (trigger, shutdown) = shutdown_channel();
        let (storage, recovered) = open_storage(&config, &shutdown).await?;
        let founders = founders_to_ask(&config, &recovered);
        let mut rng = SplitMix64::new(config.seed);
        let raft_seed = rng.next_u64();
        let transport_rng = rng.fork();
        let first_request_id = pending::first_request_id(rng.next_u64());
        // Forked last, so the draws above stay what they were.
        let founding_rng = rng.fork();
        let clock = config.clock.clone();
        let replica = Replica::new(
            raft_config,
            recovered.raft,
            initial_membership(&config.bootstrap),
            raft_seed,
            clock.now_ms(),
        )?;
        founding::check_stored(
            &ClusterId::parse(&config.cluster_id),
            replica.committed_membership(),
        )?;
        let start = StartState {
            replica,
            state: recovered.state,
            snapshot: recovered.snapshot,
            snapshot_threshold_entries: config.snapshot_threshold_entries,
            first_request_id,
            idempotency_keys_max: config.idempotency_keys_max,
            founding_rng,
            #[cfg(madsim)]
            forward_reply_drops: crate::buggify::ForwardReplyDrops::new(
                config.sim_drop_forward_reply_one_in,
                config.seed,
            ),
        };
        let (actor, handle, listener, transport) =
            wire_actor(config, start, storage.handle, transport_rng, shutdown);
        drop(_guard);
        // The listener already answers (a founder asking us at the same
        // first start gets an answer at once); the actor has not started.
        if let Some(founders) = founders {
            let asked = check_not_founded(&transport, &founders);
            if let Err(error) = tracing::Instrument::instrument(asked, span.clone()).await {
                drop(actor);
                trigger.trigger();
                let _ = storage.task.await;
                let _ = listener.task.await;
                return Err(error);
            }
        }
        let actor = tokio::spawn(tracing::Instrument::instrument(actor.run(), span));
        Ok(Node {
            handle,
            trigger,
            actor,
            storage: storage.task,
            listener,
        })
    }

    pub fn handle(&self) -> NodeHandle {
        self.handle.clone()
    }

    /// Stops gracefully: refuses new requests, hands leadership over if
    /// leader (bounded ~2 s), flushes storage, then stops every task and
    /// returns when all have ended.
    pub async fn shutdown(self) {
        let (reply, done) = oneshot::channel();
        if self
            .handle
            .requests
            .try_send(NodeRequest::Shutdown { reply })
            .is_ok()
        {
            let _ = tokio::time::timeout(Duration::from_millis(SHUTDOWN_GRACE_MS), done).await;
        }
        self.stop().await;
    }

    /// Stops at once, without leadership transfer or flush: what a crash
    /// looks like to the rest of the cluster (writes already synced stay).
    pub async fn kill(self) {
        self.stop().await;
    }

    async fn stop(self) {
        self.trigger.trigger();
        if let Ok(peer_tasks) = self.actor.await {
            for task in peer_tasks {
                let _ = task.await;
            }
        }
        let _ = self.storage.await;
        let _ = self.listener.task.await;
    }
}

/// The storage actor, running on storage opened and read back.
struct StorageTask {
    handle: StorageHandle,
    task: JoinHandle<()>,
}

/// What storage held, ready for the replica and the state machine.
struct RecoveredState {
    raft: RestoredState,
    state: LockStateMachine,
    /// The snapshot the state was restored from: (last index, last term).
    snapshot: (LogIndex, Term),
}

/// Opens and loads the configured storage, starts its actor, and restores
/// the lock state from the stored snapshot.
async fn open_storage(
    config: &NodeConfig,
    shutdown: &Shutdown,
) -> Result<(StorageTask, RecoveredState), StartError> {
    let identity = Identity {
        cluster_id: config.cluster_id.clone(),
        node_id: config.node_id,
    };
    // Wall time of each recovery phase, for the "recovered" log line.
    let started = tokio::time::Instant::now();
    let opened_ms;
    let (recovered, storage) = match &config.storage {
        #[cfg(not(madsim))]
        StorageChoice::Fjall { dir } => {
            let storage = crate::storage::FjallStorage::open(dir, &identity)?;
            opened_ms = started.elapsed().as_millis();
            load_and_spawn(storage, config, shutdown).await?
        }
        StorageChoice::Sim(disk) => {
            let storage = SimStorage::open(disk.clone(), &identity)?;
            opened_ms = started.elapsed().as_millis();
            load_and_spawn(storage, config, shutdown).await?
        }
    };
    let loaded_ms = started.elapsed().as_millis();
    let entries = recovered.entries.len();
    let recovered = restore_state(recovered)?;
    tracing::info!(
        snapshot_index = recovered.snapshot.0,
        entries,
        open_ms = opened_ms,
        load_ms = loaded_ms - opened_ms,
        restore_ms = started.elapsed().as_millis() - loaded_ms,
        "recovered from storage; entries after the snapshot are applied next"
    );
    Ok((storage, recovered))
}

async fn load_and_spawn<S: Storage>(
    mut storage: S,
    config: &NodeConfig,
    shutdown: &Shutdown,
) -> Result<(Recovered, StorageTask), StartError> {
    let mut recovered = storage.load()?;
    if config.force_new_cluster {
        force_new_cluster::check_quorum_lost(config, &recovered).await?;
        match force_new_cluster::force(&mut storage, &mut recovered, config.node_id)? {
            Forced::AlreadyAlone => tracing::warn!(
                "--force-new-cluster: this node already is the only member of its cluster; \
                 nothing to do (remove the flag)"
            ),
            Forced::At(index) => tracing::warn!(
                index,
                "--force-new-cluster: this node is now the only voter of its cluster; every \
                 other member was removed (join new nodes to rebuild it; never restart the old \
                 ones on their data dirs)"
            ),
        }
    }
    let (handle, task) = spawn_storage_actor(storage, &recovered, shutdown.clone());
    Ok((recovered, StorageTask { handle, task }))
}

/// Restores the lock state from the stored snapshot (entries after it are
/// applied by the actor).
fn restore_state(recovered: Recovered) -> Result<RecoveredState, StartError> {
    let Recovered {
        hard_state,
        snapshot,
        entries,
        ..
    } = recovered;
    let (state, snapshot_meta) = match snapshot {
        Some((meta, data)) => {
            let state =
                LockStateMachine::restore(&data).map_err(|error| StartError::CorruptSnapshot {
                    index: meta.last_index,
                    reason: error.to_string(),
                })?;
            (state, Some(meta))
        }
        None => (LockStateMachine::new(), None),
    };
    let snapshot = snapshot_meta
        .as_ref()
        .map_or((0, 0), |m| (m.last_index, m.last_term));
    let raft = RestoredState {
        hard_state,
        snapshot: snapshot_meta,
        entries,
    };
    Ok(RecoveredState {
        raft,
        state,
        snapshot,
    })
}

/// The other founders to ask before founding: only a founder of a
/// multi-node cluster with an incarnation, starting on empty storage.
fn founders_to_ask(
    config: &NodeConfig,
    recovered: &RecoveredState,
) -> Option<BTreeMap<NodeId, String>> {
    let Bootstrap::Founder { voters } = &config.bootstrap else {
        return None;
    };
    let empty = recovered.raft.entries.is_empty() && recovered.raft.snapshot.is_none();
    (empty && voters.len() > 1 && config.incarnation != INCARNATION_NONE).then(|| voters.clone())
}

/// Refuses to found where a fellow founder already holds the cluster with
/// another incarnation of this node (etcd: "member has already been
/// bootstrapped"). Founders that do not answer (the normal first start)
/// do not block; the wait is bounded by the transport's deadlines.
async fn check_not_founded(
    transport: &TransportConfig,
    founders: &BTreeMap<NodeId, String>,
) -> Result<(), StartError> {
    let wait_ms = transport.connect_timeout_ms + transport.handshake_timeout_ms;
    tracing::info!(
        founders = founders.len() - 1,
        wait_ms_max = wait_ms,
        "empty data dir: asking the other founders whether they already hold this cluster"
    );
    for answer in ask_founders(transport, founders).await {
        match answer {
            FounderAnswer::HoldsAnotherIncarnation { node_id, recorded } => {
                return Err(StartError::AlreadyBootstrapped {
                    node_id: transport.local_id,
                    incarnation: transport.incarnation,
                    holder: node_id,
                    recorded,
                });
            }
            FounderAnswer::Accepts { node_id } => {
                tracing::debug!(
                    founder = node_id,
                    "founder does not hold another incarnation of us"
                )
            }
            FounderAnswer::Silent { node_id, why } => {
                tracing::debug!(founder = node_id, %why, "founder did not answer")
            }
        }
    }
    Ok(())
}

/// The membership a founder writes as entry 1 (empty for a joining node,
/// and ignored when storage already holds a log).
fn initial_membership(bootstrap: &Bootstrap) -> Membership {
    match bootstrap {
        Bootstrap::Founder { voters } => founding_membership(voters),
        Bootstrap::Join => Membership::default(),
    }
}

/// The membership founders of `voters` start with: the same on every
/// founder (a restored cluster's snapshot carries it too).
pub fn founding_membership(voters: &BTreeMap<NodeId, String>) -> Membership {
    Membership {
        members: voters
            .iter()
            .map(|(id, peer_addr)| {
                let member = Member {
                    voter: true,
                    peer_addr: peer_addr.clone(),
                    // Empty everywhere so entry 1 is identical on every
                    // founder; published later.
                    api_addr: String::new(),
                };
                (*id, member)
            })
            .collect(),
        // Not known to every founder yet (each data dir drew its own): the
        // leader records them from the handshakes it sees.
        incarnations: Default::default(),
    }
}

/// Starts the peer listener and builds the actor with its mailboxes and
/// the handle that reaches it.
fn wire_actor(
    config: NodeConfig,
    start: StartState,
    storage: StorageHandle,
    transport_rng: SplitMix64,
    shutdown: Shutdown,
) -> (Actor, NodeHandle, ListenerHandle, Arc<TransportConfig>) {
    let mut transport = TransportConfig::new(config.cluster_id.clone(), config.node_id);
    transport.incarnation = config.incarnation;
    if let Some(max) = config.peer_queue_messages_max {
        transport.peer_queue_messages_max = max;
    }
    #[cfg(madsim)]
    {
        transport.sim_write_stall = config.sim_peer_write_stall;
    }
    // Checked from the first hello on, before the actor syncs anything.
    transport
        .incarnations
        .set_recorded(start.replica.membership());
    let book = transport.incarnations.clone();
    // The first hello already carries the committed founding nonce.
    transport.cluster.set_committed(
        start.replica.committed_membership(),
        start.replica.commit_index(),
    );
    let cluster = transport.cluster.clone();
    let transport = Arc::new(transport);
    let (inbound_tx, inbound_rx) = mpsc::channel(INBOUND_PEER_MESSAGES_MAX);
    let listener = spawn_listener::<PeerMessage>(
        config.peer_listener,
        transport.clone(),
        inbound_tx,
        shutdown.clone(),
    );
    let peers = Peers::new(transport.clone(), transport_rng, shutdown.clone());
    let (requests_tx, requests_rx) = mpsc::channel(NODE_MAILBOX_REQUESTS_MAX);
    let metrics = Arc::new(NodeMetrics::default());
    let leader_hint = LeaderHint::default();
    let (removed, removed_sub) = latest::channel(None);
    let me = NodeIdentity {
        id: config.node_id,
        api_addr: config.advertise_api_addr,
        peer_addr: config.advertise_peer_addr,
        incarnation: config.incarnation,
    };
    let io = ActorIo {
        storage,
        peers: PeerSet::new(
            config.node_id,
            peers,
            config.link_faults,
            book,
            cluster.clone(),
        ),
        requests: requests_rx,
        inbound: inbound_rx,
        shutdown,
    };
    let reports = Reports {
        metrics: metrics.clone(),
        leader_hint: leader_hint.clone(),
        observer: config.observer,
        removed,
    };
    let actor = Actor::new(me, config.clock, start, io, reports);
    let handle = NodeHandle {
        id: config.node_id,
        cluster,
        removed: removed_sub,
        requests: requests_tx,
        metrics,
        leader_hint,
    };
    (actor, handle, listener, transport)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::{Clock, ManualClock};
    use crate::storage::SimDisk;

    async fn start_single(disk: &SimDisk, clock: &ManualClock) -> Node {
        Node::start(config_of(disk, clock, &[]).await)
            .await
            .expect("node starts")
    }

    /// Node 1 as a founder with `others` (peer addresses nobody listens on).
    async fn config_of(disk: &SimDisk, clock: &ManualClock, others: &[NodeId]) -> NodeConfig {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let addr = listener.local_addr().expect("local addr").to_string();
        let mut voters = BTreeMap::from([(1, addr.clone())]);
        for &id in others {
            voters.insert(id, format!("127.0.0.1:{}", 9 + id));
        }
        NodeConfig::new(
            1,
            "c",
            StorageChoice::Sim(disk.clone()),
            listener,
            addr,
            "api.test:80",
            Bootstrap::Founder { voters },
            Arc::new(clock.clone()),
            7,
        )
    }

    /// Polls (real time, bounded) until the node knows itself leader.
    async fn wait_leader(handle: &NodeHandle) {
        let until = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(status) = handle.status().await {
                if status.ready && status.leader == Some(1) {
                    return;
                }
            }
            assert!(tokio::time::Instant::now() < until, "no leader");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// A sole voter campaigns at start, at first boot and on restart: its
    /// clock never moves here, so waiting for the election timeout would
    /// never elect it.
    #[tokio::test]
    async fn sole_voter_is_elected_without_an_election_timeout() {
        let disk = SimDisk::new();
        let clock = ManualClock::new(1_000);
        let node = start_single(&disk, &clock).await;
        wait_leader(&node.handle()).await;
        node.shutdown().await;
        let node = start_single(&disk, &clock).await;
        wait_leader(&node.handle()).await;
        assert_eq!(clock.now_ms(), 1_000, "the clock never moved");
        node.shutdown().await;
    }

    /// The last survivor of a three-voter cluster cannot commit alone;
    /// forced, it is the only voter, serves writes with what it had, and a
    /// second forced start changes nothing.
    #[tokio::test]
    async fn a_forced_survivor_becomes_the_only_voter_and_serves() {
        let disk = SimDisk::new();
        let clock = ManualClock::new(1_000);
        let node = Node::start(config_of(&disk, &clock, &[2, 3]).await)
            .await
            .expect("starts");
        let status = node.handle().status().await.expect("status");
        assert_eq!(status.members.len(), 3);
        assert!(!status.ready, "one of three voters has no quorum");
        node.kill().await;

        for _ in 0..2 {
            let mut config = config_of(&disk, &clock, &[2, 3]).await;
            config.force_new_cluster = true;
            let node = Node::start(config).await.expect("forced start");
            let handle = node.handle();
            wait_leader(&handle).await;
            let members: Vec<NodeId> = handle
                .status()
                .await
                .expect("status")
                .members
                .iter()
                .map(|m| m.id)
                .collect();
            assert_eq!(members, vec![1]);
            let open =
                deadbolt_core::lock::Command::OpenSession(deadbolt_core::lock::OpenSession {
                    ttl_ms: 10_000,
                    name: String::new(),
                });
            handle
                .propose(open, None, Duration::from_secs(5))
                .await
                .expect("a write commits");
            node.shutdown().await;
        }
    }

    #[tokio::test]
    async fn a_node_that_is_no_member_is_not_forced() {
        let disk = SimDisk::new();
        let clock = ManualClock::new(1_000);
        let mut config = config_of(&disk, &clock, &[2, 3]).await;
        // Node 1 joins: its stored membership (none yet) does not list it.
        config.bootstrap = Bootstrap::Join;
        config.force_new_cluster = true;
        let Err(error) = Node::start(config).await else {
            panic!("forcing a node that is no member must be refused");
        };
        assert!(error.to_string().contains("not a member"), "{error}");
    }
}
