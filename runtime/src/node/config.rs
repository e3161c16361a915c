//! What a node is started with (`NodeConfig`) and why a start can fail
//! (`StartError`).

use std::collections::BTreeMap;
#[cfg(not(madsim))]
use std::path::PathBuf;
use std::sync::Arc;

use deadbolt_core::raft::{self, ConfigError, NodeId};
use tokio::net::TcpListener;

use super::observer::NodeObserver;
use crate::clock::Clock;
use crate::latest::Subscriber;
use crate::storage::{SimDisk, StorageError};
use crate::transport::LinkFaults;

/// Default number of log entries applied since the last snapshot before the
/// node takes a new one (and compacts its log).
pub const SNAPSHOT_THRESHOLD_ENTRIES_DEFAULT: u64 = 10_000;

/// Where a node keeps its Raft log, hard state and snapshots.
#[derive(Debug, Clone)]
pub enum StorageChoice {
    /// fjall in this directory (created if missing). Not in the simulation:
    /// fjall starts OS threads.
    #[cfg(not(madsim))]
    Fjall { dir: PathBuf },
    /// The simulated disk (crash model in `storage::sim`).
    Sim(SimDisk),
}

/// How a node comes into being.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bootstrap {
    /// A founder of a new cluster of these voters (id -> peer address); a
    /// one-node cluster is a founder list of one. Every founder builds the
    /// same initial membership from this list (API addresses left empty so
    /// entry 1 is identical everywhere; each node fills in its own later).
    /// Ignored when storage already holds a log.
    Founder { voters: BTreeMap<NodeId, String> },
    /// A node with empty storage that waits to be added by the leader.
    Join,
}

/// Raft timing, in milliseconds of the node's monotonic clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RaftTiming {
    pub election_timeout_min_ms: u64,
    pub election_timeout_max_ms: u64,
    pub heartbeat_interval_ms: u64,
}

impl Default for RaftTiming {
    /// LAN defaults with head-room for a slow fsync: a leader whose disk
    /// stalls for a few tens of milliseconds does not lose its followers.
    fn default() -> Self {
        Self {
            election_timeout_min_ms: 300,
            election_timeout_max_ms: 600,
            heartbeat_interval_ms: 100,
        }
    }
}

/// Injected faults per outbound link (simulation). The node applies the
/// latest table on its maintenance tick.
pub type LinkFaultsTable = BTreeMap<NodeId, LinkFaults>;

/// Everything `Node::start` needs.
pub struct NodeConfig {
    pub node_id: NodeId,
    pub cluster_id: String,
    pub storage: StorageChoice,
    /// Already bound, so a caller can use port 0 and learn the address first.
    pub peer_listener: TcpListener,
    /// `host:port` other nodes dial for Raft traffic.
    pub advertise_peer_addr: String,
    /// `host:port` of this node's HTTP API, published in the membership.
    pub advertise_api_addr: String,
    pub bootstrap: Bootstrap,
    pub raft: RaftTiming,
    pub clock: Arc<dyn Clock>,
    /// Every random choice of the node derives from this.
    pub seed: u64,
    /// The random id of this node's data dir, drawn when it was created and
    /// kept with it (the server's `identity.json`); peers refuse another
    /// incarnation than the membership records for this node id. 0 (the
    /// default) is none: never recorded, nothing checked against it.
    pub incarnation: u64,
    /// Entries applied since the last snapshot before taking a new one.
    pub snapshot_threshold_entries: u64,
    /// Bound on kept idempotency outcomes, proposed while this node leads
    /// (`None`: leave the cluster's as it is).
    pub idempotency_keys_max: Option<u64>,
    /// Make this node the only voter of its stored cluster before it starts
    /// (`serve --force-new-cluster`, see `node::force_new_cluster`).
    pub force_new_cluster: bool,
    /// Most entries, and bytes, in one append to a follower (defaults:
    /// Raft's `APPEND_ENTRIES_MAX` and `APPEND_BYTES_MAX`). The simulation
    /// draws small ones per seed, so that a lagging majority receives
    /// old-term entries without the new leader's no-op (commit-rule
    /// histories), as the in-core random test does.
    pub max_append_entries: usize,
    pub max_append_bytes: usize,
    /// Optional fault table for the simulation's link fault injection.
    pub link_faults: Option<Subscriber<LinkFaultsTable>>,
    /// Optional observer of Raft events (simulation); `None` costs nothing.
    pub observer: Option<NodeObserver>,
    /// Simulation only (a BUGGIFY point): while leading, drop one forwarded
    /// request's reply in this many (0: never), as a lost frame would; the
    /// follower's caller learns "outcome unknown" after its deadline.
    #[cfg(madsim)]
    pub sim_drop_forward_reply_one_in: u64,
    /// Messages queued per peer before new ones are dropped (the
    /// transport's default when `None`; the simulation makes it small).
    pub peer_queue_messages_max: Option<usize>,
    /// Simulation only (a BUGGIFY point): one peer write in `.0` (0: never)
    /// stalls up to `.1` ms first (see `TransportConfig::sim_write_stall`).
    #[cfg(madsim)]
    pub sim_peer_write_stall: (u64, u64),
}

impl NodeConfig {
    /// A config with defaults for everything but identity, storage and
    /// addresses. (Every argument is required and of a distinct type or
    /// role; a builder would only hide that.)
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        node_id: NodeId,
        cluster_id: impl Into<String>,
        storage: StorageChoice,
        peer_listener: TcpListener,
        advertise_peer_addr: impl Into<String>,
        advertise_api_addr: impl Into<String>,
        bootstrap: Bootstrap,
        clock: Arc<dyn Clock>,
        seed: u64,
    ) -> Self {
        Self {
            node_id,
            cluster_id: cluster_id.into(),
            storage,
            peer_listener,
            advertise_peer_addr: advertise_peer_addr.into(),
            advertise_api_addr: advertise_api_addr.into(),
            bootstrap,
            raft: RaftTiming::default(),
            clock,
            seed,
            incarnation: crate::transport::INCARNATION_NONE,
            snapshot_threshold_entries: SNAPSHOT_THRESHOLD_ENTRIES_DEFAULT,
            idempotency_keys_max: None,
            force_new_cluster: false,
            max_append_entries: raft::APPEND_ENTRIES_MAX,
            max_append_bytes: raft::APPEND_BYTES_MAX,
            link_faults: None,
            observer: None,
            #[cfg(madsim)]
            sim_drop_forward_reply_one_in: 0,
            peer_queue_messages_max: None,
            #[cfg(madsim)]
            sim_peer_write_stall: (0, 0),
        }
    }

    pub(crate) fn raft_config(&self) -> raft::Config {
        let mut config = raft::Config::new(self.node_id);
        config.election_timeout_min_ms = self.raft.election_timeout_min_ms;
        config.election_timeout_max_ms = self.raft.election_timeout_max_ms;
        config.heartbeat_interval_ms = self.raft.heartbeat_interval_ms;
        config.max_append_entries = self.max_append_entries;
        config.max_append_bytes = self.max_append_bytes;
        config
    }
}

/// Why a node did not start. Each variant names the offending setting or
/// the damaged record.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("invalid raft timing: {0}")]
    RaftConfig(ConfigError),
    #[error("invalid {field}: {message}")]
    InvalidConfig {
        field: &'static str,
        message: String,
    },
    #[error("storage: {0}")]
    Storage(StorageError),
    #[error("stored snapshot at index {index} cannot be restored: {reason}")]
    CorruptSnapshot { index: u64, reason: String },
    /// A founder on an empty data dir whose fellow founders already hold
    /// the cluster with another incarnation of it: its data dir was wiped
    /// or replaced, and founding afresh would let it vote and acknowledge
    /// as if it remembered what its previous incarnation promised.
    #[error(
        "node {node_id} has an empty data dir (incarnation {incarnation:#018x}), but node \
         {holder} already holds this cluster with incarnation {recorded:#018x} of node \
         {node_id}: its data was wiped or replaced, and founding afresh could lose \
         acknowledged writes. To bring it back: remove node {node_id} from the cluster \
         (`deadbolt cluster remove {node_id}` against a running member), then start it on \
         an empty data dir with `--join <API URL of a running member>` instead of \
         --initial-cluster"
    )]
    AlreadyBootstrapped {
        node_id: u64,
        incarnation: u64,
        holder: u64,
        recorded: u64,
    },
    /// The data dir holds a log of another founding than the cluster id
    /// this node was configured with (it joined one cluster, its log says
    /// another).
    #[error(
        "the data dir belongs to cluster {stored}, but this node was configured for cluster \
         {configured}: another founding; use that cluster's data dir, or an empty one to join"
    )]
    OtherFounding { configured: String, stored: String },
    #[error("--force-new-cluster refused: {message}")]
    ForceNewCluster { message: String },
}

// The variants above carry their cause in their message (`{0}`), so they do
// not also return it from `source()` (no `#[from]`): a reporter that prints
// the chain, as the CLI and `deadbolt serve` do (`{:#}`), would print the
// cause twice. These `From`s keep `?` working.
impl From<ConfigError> for StartError {
    fn from(error: ConfigError) -> Self {
        StartError::RaftConfig(error)
    }
}
impl From<StorageError> for StartError {
    fn from(error: StorageError) -> Self {
        StartError::Storage(error)
    }
}
