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
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _};
use deadbolt_client::api::AddMemberRequest;
use deadbolt_client::ClientBuilder;
use deadbolt_core::raft::NodeId;
use deadbolt_runtime::node::{self, Node, NodeConfig, NodeHandle, StorageChoice};
use deadbolt_runtime::transport::INCARNATION_NONE;
use deadbolt_runtime::{shutdown_channel, ClusterId, Shutdown, ShutdownTrigger, TokioClock};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::config::{Bootstrap, ServeConfig};
use crate::data_dir::{
    check_forceable, draw_incarnation, founder_cluster_id, mark_forced, mark_removed,
    open_data_dir, os_seed, restored_cluster_id, write_identity, StoredIdentity, RAFT_DIR,
};
use crate::dir_lock::DataDirLock;
use crate::http::{app, serve_http_with, ApiSettings, ServeHttpOptions};

/// How long a joining node keeps asking the cluster to add it. Bounded so a
/// wrong `--join` URL ends in an error instead of a node that waits forever.
const JOIN_DEADLINE: Duration = Duration::from_secs(60);
/// Pause between join attempts (the client already retries 503s inside one).
const JOIN_RETRY_PAUSE: Duration = Duration::from_millis(500);
/// In-flight API requests may finish for this long after shutdown; the node
/// is already stopping, so they end quickly anyway (with 503: retry elsewhere).
const HTTP_DRAIN: Duration = Duration::from_secs(3);

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
    /// Held until the server is dropped, after the node (fields drop in order).
    _data_dir_lock: DataDirLock,
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
    // Before anything in the dir is read: a dir in use is refused for that
    // reason alone, not for what a second reader makes of it.
    let data_dir_lock = DataDirLock::acquire(&data_dir)?;
    let stored = open_data_dir(&config)?;
    if config.force_new_cluster {
        check_forceable(&config, stored.as_ref())?;
    }
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
                    restored_from: None,
                    forced_new_cluster: false,
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
    if config.force_new_cluster {
        // Read back: the start may have rewritten the identity (an
        // incarnation drawn for an older file).
        if let Err(error) = mark_forced(&data_dir) {
            node.kill().await;
            return Err(error);
        }
    }
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
        _data_dir_lock: data_dir_lock,
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
                restored_from: None,
                forced_new_cluster: false,
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
            let derived = match stored.and_then(|s| s.restored_from.as_deref()) {
                Some(digest) => restored_cluster_id(voters, digest),
                None => founder_cluster_id(voters),
            };
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
    node_config.force_new_cluster = config.force_new_cluster;
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
