//! Benchmark: three nodes on loopback with fjall in a temp dir; commands/s
//! and commit latency (p50/p99) at 1, 16, 64 and 256 concurrent proposers,
//! plus fsyncs/s and entries per fsync from the leader's storage metrics.
//! Prints figures only; nothing here asserts on timing.
//!
//! `cargo run --release -p deadbolt-runtime --example cluster_bench`
//! (`BENCH_SNAPSHOT_ENTRIES=N` changes the snapshot threshold.)

// Under `--cfg madsim` only the empty `main` below is built.
#![cfg_attr(madsim, allow(unused))]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use deadbolt_core::lock::{Command, KvWrite};
use deadbolt_core::raft::NodeId;
use deadbolt_runtime::node::{Bootstrap, Node, NodeConfig, NodeHandle, StorageChoice};
use deadbolt_runtime::TokioClock;

const ROUND: Duration = Duration::from_secs(5);
const DEADLINE: Duration = Duration::from_secs(10);

/// fjall cannot run in the simulation; the benchmark is production-only.
#[cfg(madsim)]
fn main() {}

#[cfg(not(madsim))]
#[tokio::main(flavor = "multi_thread")]
async fn main() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let mut listeners = BTreeMap::new();
    let mut voters = BTreeMap::new();
    for id in 1..=3u64 {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        voters.insert(id, listener.local_addr()?.to_string());
        listeners.insert(id, listener);
    }
    let snapshot_entries: Option<u64> = std::env::var("BENCH_SNAPSHOT_ENTRIES")
        .ok()
        .map(|v| v.parse())
        .transpose()?;
    let mut nodes: BTreeMap<NodeId, Node> = BTreeMap::new();
    for (id, listener) in listeners {
        let mut config = NodeConfig::new(
            id,
            "bench",
            StorageChoice::Fjall {
                dir: tmp.path().join(format!("node-{id}")),
            },
            listener,
            voters[&id].clone(),
            format!("127.0.0.1:{}", 9000 + id),
            Bootstrap::Founder {
                voters: voters.clone(),
            },
            Arc::new(TokioClock::new()),
            id,
        );
        if let Some(entries) = snapshot_entries {
            config.snapshot_threshold_entries = entries;
        }
        nodes.insert(id, Node::start(config).await?);
    }
    let leader = wait_for_leader(&nodes).await?;
    let handle = nodes[&leader].handle();
    println!(
        "3 nodes on loopback, fjall in {}, leader {leader}",
        tmp.path().display()
    );
    println!(
        "{:>11} {:>10} {:>9} {:>9} {:>9} {:>10} {:>13}",
        "proposers", "cmds/s", "p50 ms", "p99 ms", "max ms", "fsyncs/s", "entries/fsync"
    );
    for concurrency in [1usize, 16, 64, 256] {
        round(&handle, concurrency).await?;
    }
    for (_, node) in nodes {
        node.shutdown().await;
    }
    Ok(())
}

async fn wait_for_leader(nodes: &BTreeMap<NodeId, Node>) -> anyhow::Result<NodeId> {
    let until = Instant::now() + Duration::from_secs(10);
    while Instant::now() < until {
        let mut leaders = Vec::new();
        for node in nodes.values() {
            let status = node.handle().status().await?;
            if status.ready {
                leaders.extend(status.leader);
            }
        }
        leaders.dedup();
        if leaders.len() == 1 && nodes.len() == 3 {
            return Ok(leaders[0]);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    anyhow::bail!("no leader within 10 s")
}

async fn round(handle: &NodeHandle, concurrency: usize) -> anyhow::Result<()> {
    let fsync_before = handle.metrics().fsync_seconds.count();
    let storage_entries_before = entries_synced(handle);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for worker in 0..concurrency {
        let handle = handle.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut i = 0u64;
            while started.elapsed() < ROUND {
                let command = Command::KvPut(KvWrite {
                    key: format!("k{worker}-{}", i % 64),
                    value: format!("{i}"),
                    fence: None,
                });
                let sent = Instant::now();
                handle.propose(command, None, DEADLINE).await?;
                latencies.push(sent.elapsed());
                i += 1;
            }
            anyhow::Ok(latencies)
        }));
    }
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await??);
    }
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort();
    let pct = |p: f64| {
        let i = ((latencies.len() as f64 * p) as usize).min(latencies.len() - 1);
        latencies[i].as_secs_f64() * 1e3
    };
    let fsyncs = handle.metrics().fsync_seconds.count() - fsync_before;
    let entries = entries_synced(handle) - storage_entries_before;
    println!(
        "{:>11} {:>10.0} {:>9.2} {:>9.2} {:>9.2} {:>10.0} {:>13.1}",
        concurrency,
        latencies.len() as f64 / elapsed,
        pct(0.50),
        pct(0.99),
        latencies.last().map_or(0.0, |d| d.as_secs_f64() * 1e3),
        fsyncs as f64 / elapsed,
        if fsyncs == 0 {
            0.0
        } else {
            entries / fsyncs as f64
        },
    );
    Ok(())
}

/// Entries made durable by the leader's storage so far (the sum of the
/// entries-per-fsync histogram).
fn entries_synced(handle: &NodeHandle) -> f64 {
    handle.metrics().entries_per_fsync.sum()
}
