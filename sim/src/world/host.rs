//! One simulated server host: a madsim node whose init task starts the real
//! deadbolt node (Raft actor, storage actor on the simulated disk, peer
//! transport) and the real HTTP API in front of it, exactly as `deadbolt
//! serve` wires them. What outlives a crash lives here, outside the init
//! task: the disk, the host's clock and the link-fault table.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use deadbolt_runtime::latest::{self, Publisher};
use deadbolt_runtime::node::{
    Bootstrap, LinkFaultsTable, Node, NodeConfig, NodeHandle, NodeObserver, StartError,
    StorageChoice,
};
use deadbolt_runtime::storage::SimDisk;
use deadbolt_runtime::{
    shutdown_channel, Clock, ShutdownTrigger, SkewHandle, SkewedClock, TokioClock,
};
use deadbolt_server::http::{app, serve_http, ApiSettings};
use madsim::runtime::Handle;

use super::recorder::Shared;
use crate::fault::{Buggify, ClockSetup};
use crate::history::NodeId;
use crate::seed::{rng_for, sub_seed, Concern};
use deadbolt_core::api::limits::IDEMPOTENCY_KEYS_MIN;

pub(crate) const API_PORT: u16 = 7070;
pub(crate) const PEER_PORT: u16 = 7071;
pub(crate) const CLUSTER_ID: &str = "deadbolt-sim";
/// Entries applied between snapshots in the simulation.
const SNAPSHOT_THRESHOLD_ENTRIES: u64 = 50;

pub(crate) fn server_ip(id: NodeId) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 0, 0, id as u8))
}

pub(crate) fn api_url(id: NodeId) -> String {
    format!("http://{}:{API_PORT}", server_ip(id))
}

/// A data dir's incarnation drawn from a seeded stream: non-zero, below
/// 2^53 like the server's.
pub(crate) fn data_dir_incarnation(rng: &mut deadbolt_runtime::SplitMix64) -> u64 {
    (rng.next_u64() & ((1 << 53) - 1)).max(1)
}

/// The state of the node process running on a host right now.
#[derive(Default)]
pub(crate) struct Incarnation {
    /// Set once the node started; cleared when it stops.
    pub(crate) handle: Option<NodeHandle>,
    /// Starts a graceful shutdown of this incarnation.
    pub(crate) graceful: Option<ShutdownTrigger>,
    /// How many times the init task ran (1 = first start).
    pub(crate) started: u64,
    /// `Node::start` refused to start (the message), e.g. storage it could
    /// not recover: a finding, not a fault.
    pub(crate) start_error: Option<String>,
    /// The host's data dir was replaced (`FaultAction::ReplaceDisk`): its
    /// node must be refused from then on, and a refusal to start is the
    /// system working, not a finding.
    pub(crate) disk_replaced: bool,
    /// `Node::start` refused to found afresh on the replaced data dir (the
    /// message): expected, see `disk_replaced`.
    pub(crate) refused: Option<String>,
    /// The node learned it was removed from this cluster (the id): the data
    /// dir is marked, as the server's `identity.json` is, and the host
    /// never starts a node on it again. Cleared with a new data dir.
    pub(crate) removed: Option<String>,
    /// The machine was taken away for good (after its removal): its init
    /// starts nothing any more.
    pub(crate) retired: bool,
}

/// A server host as the supervisor sees it.
pub(crate) struct Host {
    pub(crate) id: NodeId,
    pub(crate) madsim_id: madsim::task::NodeId,
    /// Swappable only to model amnesia (a node given a blank disk).
    pub(crate) disk: Arc<Mutex<SimDisk>>,
    /// The incarnation of the data dir on `disk` (what `identity.json`
    /// holds in production): amnesia keeps it, a replaced disk draws anew.
    pub(crate) disk_incarnation: Arc<AtomicU64>,
    pub(crate) clock: SkewedClock<TokioClock>,
    pub(crate) skew: SkewHandle<TokioClock>,
    /// The host's true-time reference, to show the clock's offset.
    pub(crate) true_clock: TokioClock,
    pub(crate) link_faults: Arc<Publisher<LinkFaultsTable>>,
    pub(crate) current: Arc<Mutex<Incarnation>>,
    /// The port the node listens on for peers (and advertises): moved by
    /// `FaultAction::MovePeerAddr`.
    pub(crate) peer_port: Arc<AtomicU16>,
    /// Which founding the data dir on `disk` belongs to:
    /// [`THIS_FOUNDING`] or [`OTHER_FOUNDING`]. The observer files the
    /// node's Raft events under it: one history per founding.
    pub(crate) founding: Arc<AtomicU64>,
}

/// The founding of the cluster under test.
pub(crate) const THIS_FOUNDING: u64 = 0;
/// The other founding of the same founder list (`world::foreign`).
pub(crate) const OTHER_FOUNDING: u64 = 1;

/// How a host's node comes into the cluster.
#[derive(Debug, Clone)]
pub(crate) enum HostRole {
    /// One of the founders `1..=nodes`.
    Founder { nodes: u64 },
    /// A blank node joining the cluster of this id, as `serve --join`
    /// does after asking a member for the cluster id.
    Joiner { cluster_id: String },
}

/// Everything `create_host` needs besides the simulator.
pub(crate) struct HostPlan {
    pub(crate) seed: u64,
    pub(crate) id: NodeId,
    pub(crate) role: HostRole,
    pub(crate) clock_setup: ClockSetup,
    /// The founding its first data dir belongs to.
    pub(crate) founding: Arc<AtomicU64>,
    /// The seed's fault points (the disk's sync latency, append limits).
    pub(crate) buggify: Buggify,
}

impl Host {
    pub(crate) fn disk(&self) -> SimDisk {
        self.disk.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The node's clock minus true time, in ms (what the timeline shows).
    pub(crate) fn clock_offset_ms(&self) -> i64 {
        self.clock.now_ms() as i64 - self.true_clock.now_ms() as i64
    }

    pub(crate) fn node_handle(&self) -> Option<NodeHandle> {
        self.current
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .handle
            .clone()
    }

    pub(crate) fn is_retired(&self) -> bool {
        self.current
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retired
    }

    /// The peer address the node listens on now.
    pub(crate) fn peer_addr(&self) -> String {
        peer_addr(self.id, self.peer_port.load(Ordering::SeqCst))
    }
}

pub(crate) fn peer_addr(id: NodeId, port: u16) -> String {
    format!("{}:{port}", server_ip(id))
}

/// What every incarnation of a host's node starts with.
#[derive(Clone)]
struct IncarnationSetup {
    id: NodeId,
    seed: u64,
    disk_incarnation: Arc<AtomicU64>,
    bootstrap: Bootstrap,
    cluster_id: String,
    peer_port: Arc<AtomicU16>,
    current: Arc<Mutex<Incarnation>>,
    /// Records the node's events (`observe::node_observer`); handed in so
    /// that this file does not depend on the observation side.
    observer: NodeObserver,
    rec: Shared,
    buggify: Buggify,
}

/// Creates the host `plan` describes and starts its node, which reports
/// its events to `observer`.
pub(crate) fn create_host(
    handle: &Handle,
    plan: HostPlan,
    rec: Shared,
    observer: NodeObserver,
) -> Host {
    let HostPlan {
        seed,
        id,
        role,
        clock_setup,
        founding,
        buggify,
    } = plan;
    let disk = Arc::new(Mutex::new(SimDisk::new()));
    let disk_incarnation = Arc::new(AtomicU64::new(data_dir_incarnation(&mut rng_for(
        seed,
        Concern::DataDir,
        id,
    ))));
    let true_clock = TokioClock::new();
    let (clock, skew) = SkewedClock::new(
        true_clock.clone(),
        clock_setup.offset_ms,
        clock_setup.drift_ppm,
    );
    let (publisher, _) = latest::channel(LinkFaultsTable::new());
    let link_faults = Arc::new(publisher);
    let current = Arc::new(Mutex::new(Incarnation::default()));
    let (bootstrap, cluster_id) = match role {
        HostRole::Founder { nodes } => {
            let voters: BTreeMap<NodeId, String> =
                (1..=nodes).map(|n| (n, peer_addr(n, PEER_PORT))).collect();
            (Bootstrap::Founder { voters }, CLUSTER_ID.to_owned())
        }
        HostRole::Joiner { cluster_id } => (Bootstrap::Join, cluster_id),
    };
    let peer_port = Arc::new(AtomicU16::new(PEER_PORT));
    let starts = Arc::new(AtomicU64::new(0));
    let setup = IncarnationSetup {
        id,
        seed,
        disk_incarnation: disk_incarnation.clone(),
        bootstrap,
        cluster_id,
        peer_port: peer_port.clone(),
        current: current.clone(),
        observer,
        rec,
        buggify,
    };

    let init = {
        let disk = disk.clone();
        let clock = clock.clone();
        let link_faults = link_faults.clone();
        move || {
            let disk = disk.lock().unwrap_or_else(|e| e.into_inner()).clone();
            let clock: Arc<dyn Clock> = Arc::new(clock.clone());
            let faults = link_faults.subscribe();
            let setup = setup.clone();
            let incarnation = starts.fetch_add(1, Ordering::SeqCst);
            async move { run_incarnation(setup, incarnation, disk, clock, faults).await }
        }
    };
    let node = handle
        .create_node()
        .name(format!("n{id}"))
        .ip(server_ip(id))
        .init(init)
        .build();
    Host {
        id,
        madsim_id: node.id(),
        disk,
        disk_incarnation,
        clock,
        skew,
        true_clock,
        link_faults,
        current,
        peer_port,
        founding,
    }
}

async fn run_incarnation(
    setup: IncarnationSetup,
    incarnation: u64,
    disk: SimDisk,
    clock: Arc<dyn Clock>,
    faults: latest::Subscriber<LinkFaultsTable>,
) {
    let (id, current, rec) = (setup.id, setup.current.clone(), setup.rec.clone());
    if let Some(refusal) = refusal_to_start(&current) {
        rec.lock()
            .harness(format!("n{id} does not start: {refusal}"));
        return;
    }
    let ip = server_ip(id);
    let peer_port = setup.peer_port.load(Ordering::SeqCst);
    // Whatever disk the host has now (a replaced one too) syncs as the
    // seed says; a disk that has its latency keeps its stream.
    disk.set_sync_latency(
        setup.buggify.sync_latency(id),
        setup.buggify.latency_seed(id),
    );
    // A killed incarnation's sockets are gone (kill resets the node's
    // network state), so binding again succeeds.
    let peer_listener = tokio::net::TcpListener::bind(SocketAddr::new(ip, peer_port))
        .await
        .expect("the peer port of a fresh host is free");
    let api_listener = tokio::net::TcpListener::bind(SocketAddr::new(ip, API_PORT))
        .await
        .expect("the API port of a fresh host is free");
    let config = node_config(&setup, incarnation, disk, clock, faults, peer_listener);
    let node = match Node::start(config).await {
        Ok(node) => node,
        Err(error) => {
            let message = error.to_string();
            let mut c = current.lock().unwrap_or_else(|e| e.into_inner());
            c.started += 1;
            if c.disk_replaced && matches!(error, StartError::AlreadyBootstrapped { .. }) {
                rec.lock()
                    .harness(format!("n{id} refused to found afresh: {message}"));
                c.refused = Some(message);
            } else {
                rec.lock()
                    .harness(format!("n{id} failed to start: {message}"));
                c.start_error = Some(message);
            }
            return;
        }
    };
    let (trigger, shutdown) = shutdown_channel();
    {
        let mut c = current.lock().unwrap_or_else(|e| e.into_inner());
        c.handle = Some(node.handle());
        c.graceful = Some(trigger);
        c.started += 1;
    }
    let handle = node.handle();
    let router = app(node.handle(), ApiSettings::default());
    let http = tokio::spawn(serve_http(api_listener, router, shutdown.clone()));
    let mut wait = shutdown;
    // As `deadbolt serve` does: a node that learns it was removed marks its
    // data dir, stops and never starts on it again.
    let removed = tokio::select! {
        biased;
        () = wait.wait() => None,
        cluster_id = handle.removed() => Some(cluster_id),
    };
    if let Some(cluster_id) = &removed {
        rec.lock().harness(format!(
            "n{id} learned it was removed from cluster {cluster_id}; it stops"
        ));
        let trigger = {
            let mut c = current.lock().unwrap_or_else(|e| e.into_inner());
            c.removed = Some(cluster_id.clone());
            c.graceful.take()
        };
        // Stops the API too (a trigger already taken by a graceful restart
        // has fired).
        if let Some(trigger) = trigger {
            trigger.trigger();
        }
    }
    // Graceful stop: the API stops taking requests, the node hands over
    // leadership and flushes.
    node.shutdown().await;
    let _ = http.await;
    let mut c = current.lock().unwrap_or_else(|e| e.into_inner());
    c.handle = None;
    c.graceful = None;
}

/// Why the host must not start a node at all: the machine is retired, or
/// the data dir says its node was removed (as `identity.json` would).
fn refusal_to_start(current: &Mutex<Incarnation>) -> Option<String> {
    let c = current.lock().unwrap_or_else(|e| e.into_inner());
    if c.retired {
        return Some("the host is retired".into());
    }
    c.removed
        .as_ref()
        .map(|cluster_id| format!("its data dir was removed from cluster {cluster_id}"))
}

/// The node's configuration for one incarnation of the host.
fn node_config(
    setup: &IncarnationSetup,
    incarnation: u64,
    disk: SimDisk,
    clock: Arc<dyn Clock>,
    faults: latest::Subscriber<LinkFaultsTable>,
    peer_listener: tokio::net::TcpListener,
) -> NodeConfig {
    let (id, seed) = (setup.id, setup.seed);
    let ip = server_ip(id);
    let peer_port = setup.peer_port.load(Ordering::SeqCst);
    let mut config = NodeConfig::new(
        id,
        setup.cluster_id.clone(),
        StorageChoice::Sim(disk),
        peer_listener,
        peer_addr(id, peer_port),
        format!("{ip}:{API_PORT}"),
        setup.bootstrap.clone(),
        clock,
        // A fresh stream per incarnation: a restarted process does not
        // replay its previous life's random choices.
        sub_seed(seed, Concern::Node, id << 32 | incarnation),
    );
    config.link_faults = Some(faults);
    config.observer = Some(setup.observer.clone());
    config.incarnation = setup.disk_incarnation.load(Ordering::SeqCst);
    // Far below the production default (10 000) so that a 20 s run takes,
    // installs and restores snapshots: the Raft checker then also sees
    // `SnapshotRestored` and applies that resume after one.
    config.snapshot_threshold_entries = SNAPSHOT_THRESHOLD_ENTRIES;
    // One seed in four runs with the smallest idempotency bound, proposed
    // through the log under faults and kept across snapshots (by seed, no
    // extra draw).
    if (seed >> 4) % 4 == 0 {
        config.idempotency_keys_max = Some(IDEMPOTENCY_KEYS_MIN);
    }
    if let Some((entries, bytes)) = setup.buggify.append_limits {
        config.max_append_entries = entries;
        config.max_append_bytes = bytes;
    }
    config.sim_drop_forward_reply_one_in = setup.buggify.drop_forward_reply_one_in;
    if let Some((queue, stall_one_in, stall_ms)) = setup.buggify.peer_queue {
        config.peer_queue_messages_max = Some(queue);
        config.sim_peer_write_stall = (stall_one_in, stall_ms);
    }
    config
}
