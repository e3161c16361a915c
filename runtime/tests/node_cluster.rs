//! Three nodes in one process over real TCP on loopback, each on fjall in a
//! temp dir: election, 10k concurrent commands (through the leader and
//! through followers, which forward), a node killed and restarted from its
//! data dir catching up through a snapshot after the leader compacted its
//! log, identical applied states everywhere, and a graceful leader shutdown
//! handing leadership over.
//!
//! Not in the simulation: fjall starts OS threads (see MADSIM-NOTES).

#![cfg(not(madsim))]

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use common::*;
use deadbolt_core::lock::{Command, KvWrite, Reply};
use deadbolt_core::raft::{NodeId, Role};
use deadbolt_runtime::node::{Node, NodeHandle, StorageChoice};
use deadbolt_runtime::TokioClock;

const SNAPSHOT_THRESHOLD: u64 = 1_000;

struct Cluster {
    voters: BTreeMap<NodeId, String>,
    dirs: BTreeMap<NodeId, PathBuf>,
    nodes: BTreeMap<NodeId, Node>,
    _tmp: tempfile::TempDir,
}

impl Cluster {
    async fn start() -> Cluster {
        let tmp = tempfile::tempdir().expect("tempdir");
        let mut listeners = BTreeMap::new();
        let mut voters = BTreeMap::new();
        for id in 1..=3 {
            let (listener, addr) = bind().await;
            listeners.insert(id, listener);
            voters.insert(id, addr);
        }
        let dirs: BTreeMap<NodeId, PathBuf> = (1..=3)
            .map(|id| (id, tmp.path().join(format!("node-{id}"))))
            .collect();
        let mut cluster = Cluster {
            voters,
            dirs,
            nodes: BTreeMap::new(),
            _tmp: tmp,
        };
        for (id, listener) in listeners {
            cluster.start_node(id, listener).await;
        }
        cluster
    }

    async fn start_node(&mut self, id: NodeId, listener: tokio::net::TcpListener) {
        let storage = StorageChoice::Fjall {
            dir: self.dirs[&id].clone(),
        };
        let mut config = config(
            id,
            storage,
            listener,
            &self.voters[&id],
            &self.voters,
            Arc::new(TokioClock::new()),
        );
        config.snapshot_threshold_entries = SNAPSHOT_THRESHOLD;
        self.nodes.insert(id, start(config).await);
    }

    async fn restart(&mut self, id: NodeId) {
        let listener = tokio::net::TcpListener::bind(&self.voters[&id])
            .await
            .expect("rebind the same peer port");
        self.start_node(id, listener).await;
    }

    fn handle(&self, id: NodeId) -> NodeHandle {
        self.nodes[&id].handle()
    }

    /// Every running node agrees on one leader and is ready.
    async fn leader(&self) -> NodeId {
        eventually("one leader seen by all", || async {
            let mut leaders = Vec::new();
            for node in self.nodes.values() {
                let status = node.handle().status().await.ok()?;
                if !status.ready {
                    return None;
                }
                leaders.push(status.leader?);
            }
            leaders.dedup();
            (leaders.len() == 1).then(|| leaders[0])
        })
        .await
    }

    /// Waits until every running node has applied the same index, then
    /// returns their state machine snapshots.
    async fn converged_states(&self) -> BTreeMap<NodeId, Vec<u8>> {
        eventually("all nodes applied the same index", || async {
            let mut applied = Vec::new();
            for node in self.nodes.values() {
                let status = node.handle().status().await.ok()?;
                if status.applied_index != status.commit_index {
                    return None;
                }
                applied.push(status.applied_index);
            }
            applied.dedup();
            (applied.len() == 1).then_some(())
        })
        .await;
        let mut states = BTreeMap::new();
        for (id, node) in &self.nodes {
            let bytes = node
                .handle()
                .read(DEADLINE, |ctx| ctx.state.snapshot())
                .await
                .expect("read");
            states.insert(*id, bytes);
        }
        states
    }
}

/// `count` KvPut commands from `concurrency` tasks, spread over `handles`.
async fn write_many(handles: &[NodeHandle], count: usize, concurrency: usize, tag: &str) {
    let mut tasks = Vec::new();
    for worker in 0..concurrency {
        let handle = handles[worker % handles.len()].clone();
        let tag = tag.to_string();
        tasks.push(tokio::spawn(async move {
            let mut i = worker;
            while i < count {
                let command = Command::KvPut(KvWrite {
                    key: format!("{tag}-{}", i % 997),
                    value: format!("{i}"),
                    fence: None,
                });
                let reply = handle
                    .propose(command, None, DEADLINE)
                    .await
                    .unwrap_or_else(|e| panic!("write {i} via node {}: {e}", handle.id()));
                assert!(matches!(reply, Reply::KvWritten { .. }), "{reply:?}");
                i += concurrency;
            }
        }));
    }
    for task in tasks {
        task.await.expect("writer task");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_replicate_restart_and_catch_up_by_snapshot() {
    init_tracing();
    let mut cluster = Cluster::start().await;
    let leader = cluster.leader().await;
    let followers: Vec<NodeId> = (1..=3).filter(|id| *id != leader).collect();

    // Founders publish their API addresses once a leader exists.
    eventually("api addresses published", || async {
        let status = cluster.handle(leader).status().await.ok()?;
        status
            .members
            .iter()
            .all(|m| m.api_addr == format!("api-{}.test:80", m.id))
            .then_some(())
    })
    .await;
    // Every node names the leader's API address for clients to go to.
    let leader_api = format!("api-{leader}.test:80");
    for id in 1..=3 {
        eventually("the leader hint", || async {
            (cluster.handle(id).leader_api_addr().as_deref() == Some(leader_api.as_str()))
                .then_some(())
        })
        .await;
    }

    // A write through a follower is forwarded to the leader.
    let reply = cluster
        .handle(followers[0])
        .propose(
            Command::KvPut(KvWrite {
                key: "via-follower".into(),
                value: "1".into(),
                fence: None,
            }),
            None,
            DEADLINE,
        )
        .await
        .expect("forwarded write");
    assert!(matches!(reply, Reply::KvWritten { .. }), "{reply:?}");

    // 10k commands, 64 at a time, through all three nodes.
    let handles: Vec<NodeHandle> = (1..=3).map(|id| cluster.handle(id)).collect();
    write_many(&handles, 10_000, 64, "a").await;
    let states = cluster.converged_states().await;
    assert!(states.values().all(|s| *s == states[&1]), "states differ");

    // Kill a follower (no flush), write enough for the leader to compact its
    // log past the follower's position, restart the follower from disk.
    let victim = followers[1];
    cluster.nodes.remove(&victim).expect("victim").kill().await;
    let handles: Vec<NodeHandle> = cluster.nodes.values().map(Node::handle).collect();
    write_many(&handles, 3 * SNAPSHOT_THRESHOLD as usize, 16, "b").await;
    cluster.restart(victim).await;
    let states = cluster.converged_states().await;
    assert!(
        states.values().all(|s| *s == states[&1]),
        "states differ after catch-up"
    );
    let installed = cluster
        .handle(victim)
        .metrics()
        .snapshots_installed
        .load(Ordering::Relaxed);
    assert!(
        installed >= 1,
        "the restarted node caught up through a snapshot"
    );
    let taken = cluster
        .handle(leader)
        .metrics()
        .snapshots_taken
        .load(Ordering::Relaxed);
    assert!(taken >= 1, "the leader compacted its log");

    // Graceful shutdown of the leader hands leadership to another node,
    // and writes continue.
    let old_leader = cluster.leader().await;
    cluster
        .nodes
        .remove(&old_leader)
        .expect("leader")
        .shutdown()
        .await;
    let new_leader = cluster.leader().await;
    assert_ne!(new_leader, old_leader);
    let status = cluster.handle(new_leader).status().await.expect("status");
    assert_eq!(status.role, Role::Leader);
    let handles: Vec<NodeHandle> = cluster.nodes.values().map(Node::handle).collect();
    write_many(&handles, 200, 8, "c").await;
    let states = cluster.converged_states().await;
    assert!(states.values().all(|s| *s == states[&new_leader]));

    for (_, node) in std::mem::take(&mut cluster.nodes) {
        node.shutdown().await;
    }
}
