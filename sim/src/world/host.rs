//! One simulated server host: a madsim node whose init task starts the real
//! deadbolt node (Raft actor, storage actor on the simulated disk, peer
//! transport) and the real HTTP API in front of it, exactly as `deadbolt
//! serve` wires them. What outlives a crash lives here, outside the init
//! task: the disk, the host's clock and the link-fault table.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
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
use crate::fault::ClockSetup;
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
}

/// What every incarnation of a host's node starts with.
#[derive(Clone)]
struct IncarnationSetup {
    id: NodeId,
    seed: u64,
    disk_incarnation: Arc<AtomicU64>,
    voters: BTreeMap<NodeId, String>,
    current: Arc<Mutex<Incarnation>>,
    /// Records the node's events (`observe::node_observer`); handed in so
    /// that this file does not depend on the observation side.
    observer: NodeObserver,
    rec: Shared,
}

/// Creates host `id` of a cluster of `nodes` and starts its node, which
/// reports its events to `observer`.
pub(crate) fn create_host(
    handle: &Handle,
    seed: u64,
    id: NodeId,
    nodes: u64,
    clock_setup: ClockSetup,
    rec: Shared,
    observer: NodeObserver,
) -> Host {
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
    let voters: BTreeMap<NodeId, String> = (1..=nodes)
        .map(|n| (n, format!("{}:{PEER_PORT}", server_ip(n))))
        .collect();
    let starts = Arc::new(AtomicU64::new(0));
    let setup = IncarnationSetup {
        id,
        seed,
        disk_incarnation: disk_incarnation.clone(),
        voters,
        current: current.clone(),
        observer,
        rec,
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
    }
}

async fn run_incarnation(
    setup: IncarnationSetup,
    incarnation: u64,
    disk: SimDisk,
    clock: Arc<dyn Clock>,
    faults: latest::Subscriber<LinkFaultsTable>,
) {
    let IncarnationSetup {
        id,
        seed,
        disk_incarnation,
        voters,
        current,
        observer,
        rec,
    } = setup;
    let ip = server_ip(id);
    // A killed incarnation's sockets are gone (kill resets the node's
    // network state), so binding again succeeds.
    let peer_listener = tokio::net::TcpListener::bind(SocketAddr::new(ip, PEER_PORT))
        .await
        .expect("the peer port of a fresh host is free");
    let api_listener = tokio::net::TcpListener::bind(SocketAddr::new(ip, API_PORT))
        .await
        .expect("the API port of a fresh host is free");
    let mut config = NodeConfig::new(
        id,
        CLUSTER_ID,
        StorageChoice::Sim(disk),
        peer_listener,
        format!("{ip}:{PEER_PORT}"),
        format!("{ip}:{API_PORT}"),
        Bootstrap::Founder { voters },
        clock,
        // A fresh stream per incarnation: a restarted process does not
        // replay its previous life's random choices.
        sub_seed(seed, Concern::Node, id << 32 | incarnation),
    );
    config.link_faults = Some(faults);
    config.observer = Some(observer);
    config.incarnation = disk_incarnation.load(Ordering::SeqCst);
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
    let router = app(node.handle(), ApiSettings::default());
    let http = tokio::spawn(serve_http(api_listener, router, shutdown.clone()));
    let mut wait = shutdown;
    wait.wait().await;
    // Graceful stop: the API stops taking requests, the node hands over
    // leadership and flushes.
    node.shutdown().await;
    let _ = http.await;
    let mut c = current.lock().unwrap_or_else(|e| e.into_inner());
    c.handle = None;
    c.graceful = None;
}
