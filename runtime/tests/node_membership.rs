//! Membership through `NodeHandle`: a joining node is added as a learner
//! (the request forwarded by a follower), promoted once caught up, becomes
//! leader by transfer; a member is removed; every member's API address is
//! published.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use common::*;
use deadbolt_core::lock::{Command, KvWrite};
use deadbolt_core::raft::{NodeId, Role};
use deadbolt_runtime::node::{Bootstrap, Node, NodeHandle, StorageChoice};
use deadbolt_runtime::storage::SimDisk;
use deadbolt_runtime::TokioClock;

async fn statuses(
    nodes: &BTreeMap<NodeId, Node>,
) -> Option<Vec<deadbolt_runtime::node::NodeStatus>> {
    let mut out = Vec::new();
    for node in nodes.values() {
        out.push(node.handle().status().await.ok()?);
    }
    Some(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_promote_transfer_and_remove() {
    init_tracing();
    let mut listeners = BTreeMap::new();
    let mut voters = BTreeMap::new();
    for id in 1..=3 {
        let (listener, addr) = bind().await;
        listeners.insert(id, listener);
        voters.insert(id, addr);
    }
    let mut nodes = BTreeMap::new();
    for (id, listener) in listeners {
        let storage = StorageChoice::Sim(SimDisk::new());
        let config = config(
            id,
            storage,
            listener,
            &voters[&id],
            &voters,
            Arc::new(TokioClock::new()),
        );
        nodes.insert(id, start(config).await);
    }
    let leader = eventually("a leader", || async {
        let all = statuses(&nodes).await?;
        all.iter().all(|s| s.ready).then_some(())?;
        all[0].leader
    })
    .await;
    let follower: NodeId = (1..=3).find(|id| *id != leader).expect("a follower");
    let via: NodeHandle = nodes[&follower].handle();
    via.propose(
        Command::KvPut(KvWrite {
            key: "before-join".into(),
            value: "x".into(),
            fence: None,
        }),
        None,
        DEADLINE,
    )
    .await
    .expect("write");

    // Node 4 starts empty and waits to be added.
    let (listener, addr4) = bind().await;
    let mut config4 = config(
        4,
        StorageChoice::Sim(SimDisk::new()),
        listener,
        &addr4,
        &voters,
        Arc::new(TokioClock::new()),
    );
    config4.bootstrap = Bootstrap::Join;
    nodes.insert(4, start(config4).await);
    via.add_member(4, addr4.clone(), "api-4.test:80".into(), None, DEADLINE)
        .await
        .expect("add member through a follower");
    eventually("node 4 promoted and caught up", || async {
        let all = statuses(&nodes).await?;
        let four = all.iter().find(|s| s.id == 4)?;
        let voter = four.members.iter().any(|m| m.id == 4 && m.voter);
        (voter && four.ready && four.members.len() == 4).then_some(())
    })
    .await;
    let kv = nodes[&4]
        .handle()
        .read(DEADLINE, |ctx| ctx.state.kv_get("before-join"))
        .await
        .expect("read on the new node");
    assert_eq!(kv.expect("key").value, "x");

    // Hand leadership to the new node, asked through a follower.
    via.transfer_leader(4, DEADLINE).await.expect("transfer");
    eventually("node 4 leads", || async {
        let status = nodes[&4].handle().status().await.ok()?;
        (status.role == Role::Leader && status.ready).then_some(())
    })
    .await;

    // Every member's API address is known everywhere.
    eventually("api addresses published", || async {
        let status = nodes[&4].handle().status().await.ok()?;
        status
            .members
            .iter()
            .all(|m| m.api_addr == format!("api-{}.test:80", m.id))
            .then_some(())
    })
    .await;

    // Remove a founder; the rest keep working.
    let removed = if follower == 1 { 2 } else { 1 };
    nodes[&4]
        .handle()
        .remove_member(removed, DEADLINE)
        .await
        .expect("remove member");
    let gone = nodes.remove(&removed).expect("removed node");
    gone.shutdown().await;
    eventually("membership of three", || async {
        let status = nodes[&4].handle().status().await.ok()?;
        (status.members.len() == 3 && !status.members.iter().any(|m| m.id == removed)).then_some(())
    })
    .await;
    nodes[&follower]
        .handle()
        .propose(
            Command::KvPut(KvWrite {
                key: "after-remove".into(),
                value: "y".into(),
                fence: None,
            }),
            None,
            DEADLINE,
        )
        .await
        .expect("write after removal");
    for (_, node) in nodes {
        node.shutdown().await;
    }
}
