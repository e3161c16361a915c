//! Shared helpers of the node tests: starting nodes on loopback and polling
//! with deadlines (never sleeping to wait for a condition).

#![allow(dead_code, unreachable_pub)]

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use deadbolt_core::lock::{Command, OpenSession, Reply, SessionId};
use deadbolt_core::raft::NodeId;
use deadbolt_runtime::node::{
    Bootstrap, Node, NodeConfig, NodeHandle, NodeStatus, RaftTiming, StorageChoice,
};
use deadbolt_runtime::Clock;
use tokio::net::TcpListener;

pub const CLUSTER: &str = "test-cluster";
pub const DEADLINE: Duration = Duration::from_secs(10);

/// Logs to the test output when `RUST_LOG` is set.
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

pub async fn bind() -> (TcpListener, String) {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let addr = listener.local_addr().expect("local addr").to_string();
    (listener, addr)
}

pub fn config(
    id: NodeId,
    storage: StorageChoice,
    listener: TcpListener,
    addr: &str,
    voters: &BTreeMap<NodeId, String>,
    clock: Arc<dyn Clock>,
) -> NodeConfig {
    let mut config = NodeConfig::new(
        id,
        CLUSTER,
        storage,
        listener,
        addr,
        format!("api-{id}.test:80"),
        Bootstrap::Founder {
            voters: voters.clone(),
        },
        clock,
        0xdead_b017 + id,
    );
    // Loopback on a busy 2-core machine: keep elections snappy but stable.
    config.raft = RaftTiming {
        election_timeout_min_ms: 300,
        election_timeout_max_ms: 600,
        heartbeat_interval_ms: 60,
    };
    config
}

/// Polls `check` every 10 ms until it returns Some, or panics at `DEADLINE`.
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let until = tokio::time::Instant::now() + DEADLINE;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < until,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

pub async fn wait_ready(handle: &NodeHandle) -> NodeStatus {
    eventually("node ready", || async {
        handle.status().await.ok().filter(|s| s.ready)
    })
    .await
}

pub async fn propose(handle: &NodeHandle, command: Command) -> Reply {
    handle
        .propose(command, None, DEADLINE)
        .await
        .expect("proposal applied")
}

pub async fn open_session(handle: &NodeHandle, ttl_ms: u64) -> SessionId {
    match propose(
        handle,
        Command::OpenSession(OpenSession {
            ttl_ms,
            name: "test".into(),
        }),
    )
    .await
    {
        Reply::SessionOpened { session_id, .. } => session_id,
        other => panic!("expected SessionOpened, got {other:?}"),
    }
}

pub async fn start(config: NodeConfig) -> Node {
    Node::start(config).await.expect("node starts")
}
