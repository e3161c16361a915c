//! One running deadbolt node: storage, the Raft node and the HTTP API wired
//! together from a validated [`ServeConfig`]. `deadbolt serve` and the tests
//! start it the same way ([`run`], or [`start`] then [`Server::run_until`]).
//!
//! The data dir holds `identity.json` (cluster id, node id, incarnation,
//! whether a joining node was added, whether it was removed) next to the
//! Raft storage in `raft/`. The identity file is what lets a restarted node
//! resume its stored cluster whatever the membership flags say: founders
//! derive the cluster id's tag from the founder list (the founding nonce
//! their first leader records in the log completes it), a joining node
//! learns the id from the cluster, and neither is recomputed on restart.
//! A node that learns it was removed marks its identity and exits; it never
//! starts on that data dir again. The incarnation is drawn at random
//! when the data dir is created: a wiped data dir comes back as another
//! incarnation, which the cluster refuses (see `deadbolt_runtime::node`).

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _};
use deadbolt_client::api::AddMemberRequest;
use deadbolt_client::ClientBuilder;
use deadbolt_core::codec::Fnv1a64;
use deadbolt_core::raft::NodeId;
use deadbolt_runtime::node::{self, Node, NodeConfig, NodeHandle, StorageChoice};
use deadbolt_runtime::transport::INCARNATION_NONE;
use deadbolt_runtime::{shutdown_channel, ClusterId, Shutdown, ShutdownTrigger, TokioClock};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::config::{Bootstrap, ServeConfig};
use crate::http::{app, serve_http_with, ApiSettings, ServeHttpOptions};

/// Incarnations stay below 2^53 (exact in every JSON reader).
const INCARNATION_MASK: u64 = (1 << 53) - 1;
/// Name of the identity file inside the data dir.
const IDENTITY_FILE: &str = "identity.json";
/// Sub-directory of the data dir that holds the Raft log and snapshots.
const RAFT_DIR: &str = "raft";
/// How long a joining node keeps asking the cluster to add it. Bounded so a
/// wrong `--join` URL ends in an error instead of a node that waits forever.
const JOIN_DEADLINE: Duration = Duration::from_secs(60);
/// Pause between join attempts (the client already retries 503s inside one).
const JOIN_RETRY_PAUSE: Duration = Duration::from_millis(500);
/// In-flight API requests may finish for this long after shutdown; the node
/// is already stopping, so they end quickly anyway (with 503: retry elsewhere).
const HTTP_DRAIN: Duration = Duration::from_secs(3);

/// What the data dir says about the node that owns it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct StoredIdentity {
    cluster_id: String,
    node_id: NodeId,
    /// False for a joining node until the cluster accepted it: a restart
    /// before that asks again.
    joined: bool,
    /// The data dir's random id (below 2^53, so JSON readers keep it
    /// exact). Absent (0) in files written before incarnations existed: one
    /// is drawn on the next start.
    #[serde(default)]
    incarnation: u64,
    /// The node learned it was removed from the cluster: the data dir is
    /// never served again (its promises belong to a membership that no
    /// longer counts it). Absent (false) in older files.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    removed: bool,
}

/// Where a started server listens and who it is, for the banner and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerInfo {
    pub node_id: NodeId,
    pub cluster_id: String,
    /// `http://host:port` of the API as bound.
    pub api_url: String,
    /// Bound peer address.
    pub peer_addr: String,
    pub data_dir: PathBuf,
    /// The data dir already held this node's state.
    pub resumed: bool,
}

/// A started node with its API.
pub struct Server {
    info: ServerInfo,
    node: Node,
    http: JoinHandle<std::io::Result<()>>,
    http_stop: ShutdownTrigger,
}

/// Starts the node and serves the API until `shutdown`, then stops
/// gracefully (a leader hands leadership over first, for at most ~2 s).
pub async fn run(
    api_listener: TcpListener,
    peer_listener: TcpListener,
    config: ServeConfig,
    shutdown: Shutdown,
) -> anyhow::Result<()> {
    start(api_listener, peer_listener, config)
        .await?
        .run_until(shutdown)
        .await
}

/// The cluster id's tag founders agree on without talking: a digest of the
/// sorted `id=peer_addr` founder list. A one-node cluster is a list of one.
/// The founding nonce (recorded by the first leader) completes the id, so
/// two foundings with the same list still differ.
pub fn founder_cluster_id(voters: &BTreeMap<NodeId, String>) -> String {
    // FNV-1a 64: stable across Rust versions and platforms, unlike
    // `DefaultHasher`, which is all this needs (not an adversarial input).
    let mut hash = Fnv1a64::new();
    for (id, addr) in voters {
        hash.write(format!("{id}={addr}\n").as_bytes());
    }
    format!("dbc-{:016x}", hash.finish())
}

/// Opens storage, starts the node and the API, and (for `--join`) asks the
/// cluster to add this node. Returns once the API is served.
pub async fn start(
    api_listener: TcpListener,
    peer_listener: TcpListener,
    config: ServeConfig,
) -> anyhow::Result<Server> {
    let api_addr = api_listener
        .local_addr()
        .context("reading the API listener's address")?;
    let peer_addr = peer_listener
        .local_addr()
        .context("reading the peer listener's address")?;
    let data_dir = config.data_dir.clone();
    let stored = open_data_dir(&config)?;
    let membership = choose_membership(&config, stored.as_ref()).await?;
    let cluster_id = membership.cluster_id.clone();
    let incarnation = match &stored {
        Some(stored) if stored.incarnation != INCARNATION_NONE => stored.incarnation,
        _ => {
            let incarnation = draw_incarnation();
            // `raft/` exists before the identity that says it should: a
            // data dir with an identity and no `raft/` lost its Raft state.
            let raft_dir = data_dir.join(RAFT_DIR);
            std::fs::create_dir_all(&raft_dir)
                .with_context(|| format!("--data-dir: cannot create {}", raft_dir.display()))?;
            write_identity(
                &data_dir,
                &StoredIdentity {
                    cluster_id: cluster_id.clone(),
                    node_id: config.node_id,
                    joined: stored
                        .as_ref()
                        .map_or(membership.join_url.is_none(), |s| s.joined),
                    incarnation,
                    removed: false,
                },
            )?;
            incarnation
        }
    };

    let node = start_node(
        peer_listener,
        &config,
        membership.cluster_id,
        membership.bootstrap,
        incarnation,
    )
    .await?;
    let handle = node.handle();
    if stored.is_some() {
        log_membership_difference(&handle, &config).await;
    }
    let (http, http_stop) = serve_api(api_listener, handle, &config);
    let info = ServerInfo {
        node_id: config.node_id,
        cluster_id: cluster_id.clone(),
        api_url: format!("http://{api_addr}"),
        peer_addr: peer_addr.to_string(),
        data_dir: data_dir.clone(),
        resumed: stored.is_some(),
    };
    let server = Server {
        info,
        node,
        http,
        http_stop,
    };
    if let Some(url) = membership.join_url {
        if let Err(error) = join(&url, &config, incarnation, &cluster_id).await {
            server.stop().await;
            return Err(error);
        }
        write_identity(
            &data_dir,
            &StoredIdentity {
                cluster_id,
                node_id: config.node_id,
                joined: true,
                incarnation,
                removed: false,
            },
        )?;
    }
    tracing::info!(
        node_id = server.info.node_id,
        cluster_id = %server.info.cluster_id,
        api = %server.info.api_url,
        peer = %server.info.peer_addr,
        data_dir = %server.info.data_dir.display(),
        resumed = server.info.resumed,
        "node started"
    );
    Ok(server)
}

/// Creates the data dir if needed and reads its identity, refusing a dir
/// that belongs to another node id.
fn open_data_dir(config: &ServeConfig) -> anyhow::Result<Option<StoredIdentity>> {
    let data_dir = &config.data_dir;
    std::fs::create_dir_all(data_dir).with_context(|| {
        format!(
            "--data-dir {}: cannot create the data directory",
            data_dir.display()
        )
    })?;
    let stored = read_identity(data_dir)?;
    if let Some(stored) = &stored {
        if stored.removed {
            bail!(
                "--data-dir {}: node {} was removed from cluster {}; refusing to start on this \
                 data dir again. To bring the node back: empty the data dir and start it with \
                 --join <API URL of a running member>",
                data_dir.display(),
                stored.node_id,
                stored.cluster_id
            );
        }
        // The Raft state is gone but the identity says the node had some:
        // starting would promise nothing it promised before.
        if stored.joined && !data_dir.join(RAFT_DIR).exists() {
            bail!(
                "--data-dir {}: holds {IDENTITY_FILE} of node {} but no {RAFT_DIR}/ (its Raft \
                 state was deleted); refusing to start as if it had promised nothing. Remove \
                 node {} from the cluster, empty the data dir and start it with --join",
                data_dir.display(),
                stored.node_id,
                stored.node_id
            );
        }
        if stored.node_id != config.node_id {
            bail!(
                "--data-dir {}: holds node {} of cluster {}, but --node-id is {}; \
                 use that node's id or another data dir",
                data_dir.display(),
                stored.node_id,
                stored.cluster_id,
                config.node_id
            );
        }
    }
    Ok(stored)
}

/// Which cluster this node belongs to and how it enters it.
struct Membership {
    cluster_id: String,
    bootstrap: node::Bootstrap,
    /// Set when the node still has to ask this URL to add it.
    join_url: Option<String>,
}

/// Decides the cluster from the flags and what the data dir holds: stored
/// state wins over membership flags, and a `--join` URL of another cluster
/// is refused.
async fn choose_membership(
    config: &ServeConfig,
    stored: Option<&StoredIdentity>,
) -> anyhow::Result<Membership> {
    let data_dir = &config.data_dir;
    Ok(match (&config.bootstrap, stored) {
        (Bootstrap::Founder { voters }, stored) => {
            let derived = founder_cluster_id(voters);
            let cluster_id = match stored {
                Some(stored) if stored.cluster_id != derived => {
                    tracing::warn!(
                        stored = %stored.cluster_id,
                        from_flags = %derived,
                        "the data dir belongs to another founder list than --initial-cluster \
                         describes; resuming the stored cluster (membership flags are ignored \
                         once a node has state)"
                    );
                    stored.cluster_id.clone()
                }
                _ => derived,
            };
            let bootstrap = node::Bootstrap::Founder {
                voters: voters.clone(),
            };
            Membership {
                cluster_id,
                bootstrap,
                join_url: None,
            }
        }
        (Bootstrap::Join { url }, Some(stored)) if stored.joined => {
            // Already a member: resume. A --join URL of another cluster is
            // a mistake worth refusing; an unreachable one is not (the
            // node's own cluster may be the one that is down).
            match remote_cluster_id(url).await {
                Ok(remote) if !ClusterId::compatible_text(&remote, &stored.cluster_id) => bail!(
                    "--data-dir {}: holds cluster {}, but --join {url} is cluster {remote}",
                    data_dir.display(),
                    stored.cluster_id
                ),
                Ok(_) => {}
                Err(error) => {
                    tracing::info!(%url, error = %format!("{error:#}"), "cannot check the --join URL; resuming the stored cluster")
                }
            }
            tracing::info!(%url, cluster_id = %stored.cluster_id, "already a member; --join ignored on restart");
            Membership {
                cluster_id: stored.cluster_id.clone(),
                bootstrap: node::Bootstrap::Join,
                join_url: None,
            }
        }
        (Bootstrap::Join { url }, stored) => {
            let remote = remote_cluster_id(url).await?;
            if let Some(stored) = stored {
                if !ClusterId::compatible_text(&stored.cluster_id, &remote) {
                    bail!(
                        "--data-dir {}: holds cluster {}, but --join {url} is cluster {remote}",
                        data_dir.display(),
                        stored.cluster_id
                    );
                }
            }
            Membership {
                cluster_id: remote,
                bootstrap: node::Bootstrap::Join,
                join_url: Some(url.clone()),
            }
        }
    })
}

/// Starts the Raft node on fjall storage in the data dir.
async fn start_node(
    peer_listener: TcpListener,
    config: &ServeConfig,
    cluster_id: String,
    bootstrap: node::Bootstrap,
    incarnation: u64,
) -> anyhow::Result<Node> {
    let mut node_config = NodeConfig::new(
        config.node_id,
        cluster_id.clone(),
        StorageChoice::Fjall {
            dir: config.data_dir.join(RAFT_DIR),
        },
        peer_listener,
        config.advertise_peer.clone(),
        config.advertise_api.clone(),
        bootstrap,
        Arc::new(TokioClock::new()),
        os_seed(),
    );
    node_config.idempotency_keys_max = Some(config.idempotency_keys_max);
    node_config.incarnation = incarnation;
    Node::start(node_config).await.with_context(|| {
        format!(
            "--data-dir {}: starting node {} of cluster {cluster_id}",
            config.data_dir.display(),
            config.node_id
        )
    })
}

/// Serves the API of `handle` on `api_listener` until the returned trigger
/// fires.
fn serve_api(
    api_listener: TcpListener,
    handle: NodeHandle,
    config: &ServeConfig,
) -> (JoinHandle<std::io::Result<()>>, ShutdownTrigger) {
    let settings = ApiSettings {
        body_bytes_max: config.max_body_bytes,
        ..ApiSettings::default()
    };
    let (http_stop, http_shutdown) = shutdown_channel();
    let options = ServeHttpOptions {
        drain_timeout: HTTP_DRAIN,
        ..ServeHttpOptions::default()
    };
    let http = tokio::spawn(serve_http_with(
        api_listener,
        app(handle, settings),
        http_shutdown,
        options,
    ));
    (http, http_stop)
}

impl Server {
    pub fn info(&self) -> &ServerInfo {
        &self.info
    }

    pub fn handle(&self) -> NodeHandle {
        self.node.handle()
    }

    /// Serves until `shutdown`, then stops gracefully. A node that learns
    /// it was removed from its cluster marks its data dir as removed (it
    /// never starts on it again), stops, and returns the error `removed
    /// from cluster <id>` (the binary exits 1).
    pub async fn run_until(self, mut shutdown: Shutdown) -> anyhow::Result<()> {
        let handle = self.node.handle();
        let removed = tokio::select! {
            biased;
            () = shutdown.wait() => None,
            cluster_id = handle.removed() => Some(cluster_id),
        };
        let Some(cluster_id) = removed else {
            tracing::info!("shutting down");
            self.stop().await;
            tracing::info!("stopped");
            return Ok(());
        };
        let marked = mark_removed(&self.info.data_dir);
        self.stop().await;
        marked?;
        bail!("removed from cluster {cluster_id}")
    }

    /// Graceful stop: the node refuses new requests and hands leadership
    /// over while the API drains what is in flight.
    pub async fn stop(self) {
        self.http_stop.trigger();
        let http = self.http;
        let ((), served) = tokio::join!(self.node.shutdown(), http);
        match served {
            Ok(Ok(())) => {}
            Ok(Err(error)) => tracing::warn!(%error, "the API server ended with an error"),
            Err(error) => tracing::warn!(%error, "the API server task failed"),
        }
    }
}

fn identity_path(data_dir: &Path) -> PathBuf {
    data_dir.join(IDENTITY_FILE)
}

fn read_identity(data_dir: &Path) -> anyhow::Result<Option<StoredIdentity>> {
    let path = identity_path(data_dir);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            // An empty `raft/` is a start cut short before its identity.
            let raft_state = std::fs::read_dir(data_dir.join(RAFT_DIR))
                .is_ok_and(|mut entries| entries.next().is_some());
            if raft_state {
                bail!(
                    "--data-dir {}: holds Raft state but no {IDENTITY_FILE}; refusing to guess \
                     which cluster it belongs to",
                    data_dir.display()
                );
            }
            return Ok(None);
        }
        Err(error) => {
            return Err(error).with_context(|| format!("--data-dir: reading {}", path.display()))
        }
    };
    let identity = serde_json::from_str(&text)
        .with_context(|| format!("--data-dir: {} is not a deadbolt identity", path.display()))?;
    Ok(Some(identity))
}

/// Writes the identity durably: temp file, fsync, rename.
fn write_identity(data_dir: &Path, identity: &StoredIdentity) -> anyhow::Result<()> {
    let path = identity_path(data_dir);
    let temp = data_dir.join(format!("{IDENTITY_FILE}.tmp"));
    let context = || {
        format!(
            "--data-dir {}: cannot write {IDENTITY_FILE} (is the directory writable?)",
            data_dir.display()
        )
    };
    let text = serde_json::to_string_pretty(identity).expect("identity serializes");
    let mut file = std::fs::File::create(&temp).with_context(context)?;
    file.write_all(text.as_bytes()).with_context(context)?;
    file.sync_all().with_context(context)?;
    std::fs::rename(&temp, &path).with_context(context)?;
    if let Ok(dir) = std::fs::File::open(data_dir) {
        // Makes the rename durable; not every platform can fsync a directory.
        let _ = dir.sync_all();
    }
    Ok(())
}

/// Records in the identity that this data dir's node was removed.
fn mark_removed(data_dir: &Path) -> anyhow::Result<()> {
    let identity = read_identity(data_dir)?.context("--data-dir: identity vanished")?;
    write_identity(
        data_dir,
        &StoredIdentity {
            removed: true,
            ..identity
        },
    )
}

/// A seed from the OS (time and pid): production nodes need distinct
/// election jitter, not replayability (the simulation passes its own).
fn os_seed() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    nanos ^ (u64::from(std::process::id()) << 32)
}

/// A new data dir's incarnation: random (not replayable, like `os_seed`),
/// non-zero and below 2^53 so that JSON readers keep it exact.
fn draw_incarnation() -> u64 {
    let mut hash = Fnv1a64::new();
    hash.write(&os_seed().to_le_bytes());
    // Two processes started in the same nanosecond still differ by stack
    // address (ASLR).
    let here = &hash as *const Fnv1a64 as usize;
    hash.write(&here.to_le_bytes());
    let mut rng = deadbolt_runtime::SplitMix64::new(hash.finish());
    loop {
        let incarnation = rng.next_u64() & INCARNATION_MASK;
        if incarnation != INCARNATION_NONE {
            return incarnation;
        }
    }
}

/// A restarted node resumes its stored membership; say so when the flags
/// describe another one.
async fn log_membership_difference(handle: &NodeHandle, config: &ServeConfig) {
    let Bootstrap::Founder { voters } = &config.bootstrap else {
        return;
    };
    let Ok(status) = handle.status().await else {
        return;
    };
    let stored: BTreeMap<NodeId, String> = status
        .members
        .iter()
        .filter(|m| m.voter)
        .map(|m| (m.id, m.peer_addr.clone()))
        .collect();
    if !stored.is_empty() && &stored != voters {
        tracing::warn!(
            ?stored,
            from_flags = ?voters,
            "resuming the stored membership; the membership flags differ and are ignored"
        );
    }
}

async fn remote_cluster_id(url: &str) -> anyhow::Result<String> {
    let client = ClientBuilder::new([url])
        .call_timeout(Duration::from_secs(10))
        .build()
        .with_context(|| format!("--join {url}: not a usable API URL"))?;
    let status = client
        .cluster_status()
        .await
        .with_context(|| format!("--join {url}: cannot read GET /v1/cluster"))?;
    Ok(status.cluster_id)
}

/// Asks the cluster behind `url` to add this node as a learner (the leader
/// promotes it once caught up). Retries until [`JOIN_DEADLINE`]: the
/// cluster may be electing, or still catching up a previous joiner. A
/// refusal (409: the id is a member with another data dir) ends it at once.
async fn join(
    url: &str,
    config: &ServeConfig,
    incarnation: u64,
    cluster_id: &str,
) -> anyhow::Result<()> {
    let client = ClientBuilder::new([url])
        .call_timeout(Duration::from_secs(15))
        .build()
        .with_context(|| format!("--join {url}: not a usable API URL"))?;
    let request = AddMemberRequest {
        id: config.node_id,
        peer_addr: config.advertise_peer.clone(),
        api_addr: config.advertise_api.clone(),
        incarnation: Some(incarnation),
        cluster_id: Some(cluster_id.to_owned()),
    };
    let until = tokio::time::Instant::now() + JOIN_DEADLINE;
    loop {
        let error = match client.add_member(&request).await {
            Ok(()) => {
                tracing::info!(%url, "joined the cluster as a learner");
                return Ok(());
            }
            Err(error @ deadbolt_client::Error::InvalidMembership { .. }) => {
                return Err(anyhow::Error::new(error).context(format!(
                    "--join {url}: the cluster refused node {}",
                    config.node_id
                )));
            }
            Err(error) => error,
        };
        // A retry after an attempt whose answer was lost finds us a member:
        // this data dir, not another one under our id.
        if let Ok(status) = client.cluster_status().await {
            let us = status.members.iter().find(|m| m.id == config.node_id);
            let ours = us.is_some_and(|m| match m.incarnation {
                Some(recorded) => recorded == incarnation,
                None => !m.voter && m.peer_addr == request.peer_addr,
            });
            if ours {
                tracing::info!(%url, "joined the cluster as a learner");
                return Ok(());
            }
        }
        if tokio::time::Instant::now() + JOIN_RETRY_PAUSE >= until {
            return Err(anyhow::Error::new(error).context(format!(
                "--join {url}: the cluster did not add node {} within {} s",
                config.node_id,
                JOIN_DEADLINE.as_secs()
            )));
        }
        tracing::warn!(%url, %error, "join attempt failed; retrying");
        tokio::time::sleep(JOIN_RETRY_PAUSE).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn founders_agree_on_the_cluster_id() {
        let a = BTreeMap::from([(2, "b:2".to_string()), (1, "a:1".to_string())]);
        let b = BTreeMap::from([(1, "a:1".to_string()), (2, "b:2".to_string())]);
        assert_eq!(founder_cluster_id(&a), founder_cluster_id(&b));
        let other = BTreeMap::from([(1, "a:1".to_string())]);
        assert_ne!(founder_cluster_id(&a), founder_cluster_id(&other));
        assert!(founder_cluster_id(&a).len() <= 64);
    }

    #[test]
    fn incarnations_are_non_zero_json_exact_and_differ() {
        let a = draw_incarnation();
        let b = draw_incarnation();
        for x in [a, b] {
            assert!(x != INCARNATION_NONE && x <= INCARNATION_MASK, "{x:#x}");
        }
        assert_ne!(a, b);
    }

    #[test]
    fn identity_round_trips_and_refuses_garbage() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(read_identity(dir.path()).expect("empty dir"), None);
        let identity = StoredIdentity {
            cluster_id: "dbc-1".into(),
            node_id: 3,
            joined: false,
            incarnation: 42,
            removed: false,
        };
        write_identity(dir.path(), &identity).expect("write");
        assert_eq!(
            read_identity(dir.path()).expect("read"),
            Some(identity.clone())
        );
        // Written before incarnations existed: read as none (one is drawn).
        let legacy = r#"{"cluster_id": "dbc-1", "node_id": 3, "joined": true}"#;
        std::fs::write(identity_path(dir.path()), legacy).expect("write");
        let read = read_identity(dir.path()).expect("read").expect("some");
        assert_eq!(read.incarnation, INCARNATION_NONE);
        std::fs::write(identity_path(dir.path()), "nope").expect("write");
        let error = format!("{:#}", read_identity(dir.path()).expect_err("garbage"));
        assert!(error.contains("--data-dir"), "{error}");
    }
}
