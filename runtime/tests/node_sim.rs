//! Three nodes on simulated hosts (madsim) with simulated disks: election,
//! writes through every node, the leader isolated by a partition, a new
//! leader elected and writing, the partition healed and every node
//! converging on the same state. Deterministic: passes
//! `MADSIM_TEST_CHECK_DETERMINISM=1`.
//!
//! `RUSTFLAGS='--cfg madsim' cargo test -p deadbolt-runtime --test node_sim`

#![cfg(madsim)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use deadbolt_core::lock::{Command, Idempotency, KvWrite, Reply};
use deadbolt_core::raft::NodeId;
use deadbolt_runtime::node::{
    Bootstrap, LinkFaultsTable, Node, NodeConfig, NodeHandle, StorageChoice,
};
use deadbolt_runtime::storage::SimDisk;
use deadbolt_runtime::transport::LinkFaults;
use deadbolt_runtime::TokioClock;
use madsim::net::NetSim;
use madsim::runtime::Handle;
use tokio::sync::{mpsc, oneshot};

const DEADLINE: Duration = Duration::from_secs(10);

fn addr(id: NodeId) -> String {
    format!("10.0.0.{id}:7000")
}

/// Starts node `id` on its own simulated host; returns its handle and the
/// madsim node id (for partitions).
async fn start_host(
    id: NodeId,
    voters: &BTreeMap<NodeId, String>,
) -> (NodeHandle, madsim::task::NodeId, oneshot::Sender<()>) {
    start_host_with_faults(id, voters, None).await
}

async fn start_host_with_faults(
    id: NodeId,
    voters: &BTreeMap<NodeId, String>,
    faults: Option<deadbolt_runtime::latest::Subscriber<LinkFaultsTable>>,
) -> (NodeHandle, madsim::task::NodeId, oneshot::Sender<()>) {
    let host = Handle::current()
        .create_node()
        .name(format!("node-{id}"))
        .ip(format!("10.0.0.{id}").parse().expect("ip"))
        .build();
    let voters = voters.clone();
    let (handle_tx, mut handle_rx) = mpsc::channel(1);
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let _task = host.spawn(async move {
        let listener = tokio::net::TcpListener::bind(addr(id)).await.expect("bind");
        let mut config = NodeConfig::new(
            id,
            "sim",
            StorageChoice::Sim(SimDisk::new()),
            listener,
            addr(id),
            format!("10.0.0.{id}:8080"),
            Bootstrap::Founder { voters },
            Arc::new(TokioClock::new()),
            id * 7919,
        );
        config.link_faults = faults;
        let node = Node::start(config).await.expect("start");
        handle_tx.send(node.handle()).await.ok();
        let _ = stop_rx.await;
        node.shutdown().await;
    });
    let handle = handle_rx.recv().await.expect("node started");
    (handle, host.id(), stop_tx)
}

/// Nodes 1-3 as founders on their own hosts: (handles, madsim host of each
/// node id, stop senders).
async fn start_three() -> (
    Vec<NodeHandle>,
    BTreeMap<NodeId, madsim::task::NodeId>,
    Vec<oneshot::Sender<()>>,
) {
    let voters: BTreeMap<NodeId, String> = (1..=3).map(|id| (id, addr(id))).collect();
    let mut handles = Vec::new();
    let mut hosts = BTreeMap::new();
    let mut stops = Vec::new();
    for id in 1..=3 {
        let (handle, host, stop) = start_host(id, &voters).await;
        handles.push(handle);
        hosts.insert(id, host);
        stops.push(stop);
    }
    (handles, hosts, stops)
}

async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let until = tokio::time::Instant::now() + Duration::from_secs(30);
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

async fn leader_among(handles: &[NodeHandle]) -> NodeId {
    eventually("one ready leader", || async {
        let mut leaders = Vec::new();
        for h in handles {
            let s = h.status().await.ok()?;
            if !s.ready {
                return None;
            }
            leaders.push(s.leader?);
        }
        leaders.dedup();
        (leaders.len() == 1).then(|| leaders[0])
    })
    .await
}

async fn write(handles: &[NodeHandle], count: usize, tag: &str) {
    let mut tasks = Vec::new();
    for (i, handle) in handles.iter().cycle().take(count).enumerate() {
        let handle = handle.clone();
        let command = Command::KvAppend(KvWrite {
            key: format!("{tag}-{}", i % 7),
            value: format!("{i},"),
            fence: None,
        });
        tasks.push(tokio::spawn(async move {
            handle.propose(command, None, DEADLINE).await
        }));
    }
    for task in tasks {
        let reply = task.await.expect("task").expect("write applied");
        assert!(matches!(reply, Reply::KvWritten { .. }), "{reply:?}");
    }
}

#[tokio::test]
async fn partitioned_leader_is_replaced_and_the_cluster_converges() {
    let (handles, hosts, stops) = start_three().await;
    let leader = leader_among(&handles).await;
    write(&handles, 60, "a").await;

    // Isolate the leader; the other two elect a new one and keep writing.
    NetSim::current().clog_node(hosts[&leader]);
    let rest: Vec<NodeHandle> = handles
        .iter()
        .filter(|h| h.id() != leader)
        .cloned()
        .collect();
    let new_leader = eventually("a new leader among the rest", || async {
        let s = rest[0].status().await.ok()?;
        s.leader.filter(|l| *l != leader && s.ready)
    })
    .await;
    assert_ne!(new_leader, leader);
    println!("leader {leader} isolated, new leader {new_leader}");
    write(&rest, 30, "b").await;

    // Heal: everyone converges on one state.
    NetSim::current().unclog_node(hosts[&leader]);
    leader_among(&handles).await;
    write(&handles, 30, "c").await;
    eventually("same applied index everywhere", || async {
        let mut applied = Vec::new();
        for h in &handles {
            let s = h.status().await.ok()?;
            (s.applied_index == s.commit_index).then_some(())?;
            applied.push(s.applied_index);
        }
        applied.dedup();
        (applied.len() == 1).then_some(())
    })
    .await;
    let mut states = Vec::new();
    for h in &handles {
        states.push(
            h.read(DEADLINE, |ctx| ctx.state.snapshot())
                .await
                .expect("read"),
        );
    }
    assert!(states.iter().all(|s| *s == states[0]), "states differ");
    for stop in stops {
        let _ = stop.send(());
    }
}

/// Starts node `id` on a host whose init closure (re-run by madsim on
/// restart) starts the node on `disk`; every start sends its handle.
fn crashable_host(
    id: NodeId,
    voters: &BTreeMap<NodeId, String>,
    disk: SimDisk,
    handles: mpsc::UnboundedSender<NodeHandle>,
) -> madsim::task::NodeId {
    let voters = voters.clone();
    Handle::current()
        .create_node()
        .name(format!("node-{id}"))
        .ip(format!("10.0.0.{id}").parse().expect("ip"))
        .init(move || {
            let (voters, disk, handles) = (voters.clone(), disk.clone(), handles.clone());
            async move {
                let listener = tokio::net::TcpListener::bind(addr(id)).await.expect("bind");
                let config = NodeConfig::new(
                    id,
                    "sim",
                    StorageChoice::Sim(disk),
                    listener,
                    addr(id),
                    format!("10.0.0.{id}:8080"),
                    Bootstrap::Founder { voters },
                    Arc::new(TokioClock::new()),
                    id * 104_729,
                );
                let node = Node::start(config)
                    .await
                    .expect("restart from the simulated disk");
                let _ = handles.send(node.handle());
                // The node lives until the host is killed.
                std::future::pending::<()>().await;
                drop(node);
            }
        })
        .build()
        .id()
}

#[tokio::test]
async fn acknowledged_writes_survive_crashes_with_torn_tails() {
    let voters: BTreeMap<NodeId, String> = (1..=3).map(|id| (id, addr(id))).collect();
    let mut disks = BTreeMap::new();
    let mut hosts = BTreeMap::new();
    let mut current: BTreeMap<NodeId, NodeHandle> = BTreeMap::new();
    let mut receivers = BTreeMap::new();
    for id in 1..=3 {
        let disk = SimDisk::new();
        let (tx, mut rx) = mpsc::unbounded_channel();
        hosts.insert(id, crashable_host(id, &voters, disk.clone(), tx));
        current.insert(id, rx.recv().await.expect("started"));
        disks.insert(id, disk);
        receivers.insert(id, rx);
    }
    let mut rng = deadbolt_runtime::SplitMix64::new(7);
    let mut acknowledged = Vec::new();
    for round in 0..6u64 {
        let all: Vec<NodeHandle> = current.values().cloned().collect();
        leader_among(&all).await;
        // Writes in flight while a node crashes: only acknowledged ones count.
        let mut tasks = Vec::new();
        for i in 0..40u64 {
            let handle = all[(i % 3) as usize].clone();
            let key = format!("r{round}-{i}");
            tasks.push(tokio::spawn(async move {
                let command = Command::KvPut(KvWrite {
                    key: key.clone(),
                    value: "v".into(),
                    fence: None,
                });
                handle
                    .propose(command, None, Duration::from_secs(3))
                    .await
                    .ok()
                    .map(|_| key)
            }));
        }
        tokio::time::sleep(Duration::from_millis(rng.range_u64(0, 40))).await;
        let victim = 1 + round % 3;
        Handle::current().kill(hosts[&victim]);
        let fault = match round % 3 {
            0 => deadbolt_runtime::storage::CrashFault::TearLast,
            1 => deadbolt_runtime::storage::CrashFault::KeepRandomPrefix,
            _ => deadbolt_runtime::storage::CrashFault::CorruptLast,
        };
        disks[&victim].crash(fault, &mut rng);
        Handle::current().restart(hosts[&victim]);
        let restarted = receivers
            .get_mut(&victim)
            .expect("receiver")
            .recv()
            .await
            .expect("restarted");
        current.insert(victim, restarted);
        for task in tasks {
            if let Some(key) = task.await.expect("task") {
                acknowledged.push(key);
            }
        }
    }
    let all: Vec<NodeHandle> = current.values().cloned().collect();
    leader_among(&all).await;
    write(&all, 3, "final").await;
    eventually("same applied index everywhere", || async {
        let mut applied = Vec::new();
        for h in &all {
            let s = h.status().await.ok()?;
            (s.applied_index == s.commit_index).then_some(())?;
            applied.push(s.applied_index);
        }
        applied.dedup();
        (applied.len() == 1).then_some(())
    })
    .await;
    assert!(
        acknowledged.len() > 100,
        "most writes were acknowledged: {}",
        acknowledged.len()
    );
    for h in &all {
        let keys = acknowledged.clone();
        let missing = h
            .read(DEADLINE, move |ctx| {
                keys.into_iter()
                    .filter(|k| ctx.state.kv_get(k).is_err())
                    .collect::<Vec<_>>()
            })
            .await
            .expect("read");
        assert!(
            missing.is_empty(),
            "node {} lost acknowledged writes {missing:?}",
            h.id()
        );
    }
    let mut states = Vec::new();
    for h in &all {
        states.push(
            h.read(DEADLINE, |ctx| ctx.state.snapshot())
                .await
                .expect("read"),
        );
    }
    assert!(states.iter().all(|s| *s == states[0]), "states differ");
}

#[tokio::test]
async fn lossy_links_still_converge() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let voters: BTreeMap<NodeId, String> = (1..=3).map(|id| (id, addr(id))).collect();
    let faults = LinkFaults {
        drop_per_million: 50_000,
        duplicate_per_million: 20_000,
        reorder_per_million: 20_000,
    };
    let table: LinkFaultsTable = (1..=3).map(|id| (id, faults)).collect();
    let (publisher, subscriber) = deadbolt_runtime::latest::channel(table);
    let mut handles = Vec::new();
    let mut stops = Vec::new();
    for id in 1..=3 {
        let (handle, _, stop) = start_host_with_faults(id, &voters, Some(subscriber.clone())).await;
        handles.push(handle);
        stops.push(stop);
    }
    leader_among(&handles).await;
    // Writes may time out (a lost forward leaves the outcome unknown); the
    // cluster must still agree on one state.
    let mut tasks = Vec::new();
    for i in 0..90usize {
        let handle = handles[i % 3].clone();
        tasks.push(tokio::spawn(async move {
            let command = Command::KvPut(KvWrite {
                key: format!("k{i}"),
                value: "v".into(),
                fence: None,
            });
            handle
                .propose(command, None, Duration::from_secs(3))
                .await
                .is_ok()
        }));
    }
    let mut ok = 0;
    for task in tasks {
        ok += usize::from(task.await.expect("task"));
    }
    assert!(ok > 45, "most writes succeed despite the faults: {ok}");
    // Heal the links (nodes notice on their next maintenance tick), then
    // write as a client would: retry an unknown outcome with the same
    // idempotency key, which the state machine applies exactly once.
    publisher.publish(LinkFaultsTable::new());
    for (i, handle) in handles.iter().enumerate() {
        let idempotency = Some(Idempotency {
            key: format!("healed-{i}"),
            fingerprint: i as u64,
            acked_below: None,
        });
        let command = Command::KvAppend(KvWrite {
            key: "healed".into(),
            value: format!("{i},"),
            fence: None,
        });
        eventually("a write after healing", || {
            let (handle, command, idempotency) =
                (handle.clone(), command.clone(), idempotency.clone());
            async move {
                handle
                    .propose(command, idempotency, Duration::from_secs(1))
                    .await
                    .ok()
            }
        })
        .await;
    }
    eventually("same applied index everywhere", || async {
        let mut applied = Vec::new();
        for h in &handles {
            let s = h.status().await.ok()?;
            (s.applied_index == s.commit_index).then_some(())?;
            applied.push(s.applied_index);
        }
        applied.dedup();
        (applied.len() == 1).then_some(())
    })
    .await;
    let mut states = Vec::new();
    for h in &handles {
        states.push(
            h.read(DEADLINE, |ctx| ctx.state.snapshot())
                .await
                .expect("read"),
        );
    }
    assert!(states.iter().all(|s| *s == states[0]), "states differ");
    let healed = handles[0]
        .read(DEADLINE, |ctx| ctx.state.kv_get("healed"))
        .await
        .expect("read")
        .expect("key");
    assert_eq!(
        healed.value, "0,1,2,",
        "each retried append applied exactly once"
    );
    for stop in stops {
        let _ = stop.send(());
    }
}

/// A request forwarded to a leader that then vanishes is answered "outcome
/// unknown" as soon as the follower knows another leader (or none), not
/// after the forward's 3 s reply bound; a keyed retry then settles it.
#[tokio::test]
async fn a_forward_to_a_vanished_leader_is_answered_at_the_leader_change() {
    let (handles, hosts, stops) = start_three().await;
    let leader = leader_among(&handles).await;
    let follower = handles
        .iter()
        .find(|h| h.id() != leader)
        .expect("a follower")
        .clone();

    // The leader drops off the network; the follower still names it and
    // forwards into the void.
    NetSim::current().clog_node(hosts[&leader]);
    let idempotency = Idempotency {
        key: "forward-1".into(),
        fingerprint: 7,
        acked_below: None,
    };
    let command = Command::KvPut(KvWrite {
        key: "k".into(),
        value: "v".into(),
        fence: None,
    });
    let started = tokio::time::Instant::now();
    let first = follower
        .propose(command.clone(), Some(idempotency.clone()), DEADLINE)
        .await;
    let waited = started.elapsed();
    assert_eq!(first, Err(deadbolt_runtime::node::ProposeError::Timeout));
    // Election timeouts are 300-600 ms; the forward's own bound is 3 s.
    assert!(
        waited < Duration::from_millis(2_000),
        "answered after {waited:?}"
    );
    let status = follower.status().await.expect("status");
    assert_ne!(status.leader, Some(leader), "{status:?}");

    // The keyed retry goes to the new leader and applies once.
    let reply = follower
        .propose(command, Some(idempotency), DEADLINE)
        .await
        .expect("retry applied");
    assert!(matches!(reply, Reply::KvWritten { .. }), "{reply:?}");
    for stop in stops {
        let _ = stop.send(());
    }
}
