//! Benchmark: memory per held lock at the node level. A one-node fjall
//! cluster; 100 sessions acquire 1M locks (10k each) through `NodeHandle`
//! and keep them, idle. Reports the process RSS (and heap bytes from a
//! counting allocator) before, after, and after a further idle period with
//! snapshots taken, so growth that is not the state itself shows up.
//!
//! `cargo run --release -p deadbolt-runtime --example node_memory [locks]`

// Under `--cfg madsim` only the empty `main` below is built.
#![cfg_attr(madsim, allow(unused))]

use std::alloc::System;

use stats_alloc::{StatsAlloc, INSTRUMENTED_SYSTEM};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

#[cfg(madsim)]
fn main() {}

/// Resident set size of this process in bytes (VmRSS), 0 where /proc is missing.
#[cfg(not(madsim))]
fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

#[cfg(not(madsim))]
fn heap_bytes() -> i64 {
    let stats = GLOBAL.stats();
    stats.bytes_allocated as i64 - stats.bytes_deallocated as i64
}

#[cfg(not(madsim))]
#[tokio::main(flavor = "multi_thread")]
async fn main() -> anyhow::Result<()> {
    use std::collections::BTreeMap;
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use deadbolt_core::lock::{Acquire, Command, Mode, OpenSession, Owner, Reply};
    use deadbolt_runtime::node::{Bootstrap, Node, NodeConfig, StorageChoice};
    use deadbolt_runtime::TokioClock;

    const LOCKS_PER_SESSION: usize = 10_000;
    const IN_FLIGHT: usize = 256;
    const DEADLINE: Duration = Duration::from_secs(30);
    let locks: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);

    let tmp = tempfile::tempdir()?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let peer_addr = listener.local_addr()?.to_string();
    let config = NodeConfig::new(
        1,
        "memory",
        StorageChoice::Fjall {
            dir: tmp.path().join("node-1"),
        },
        listener,
        peer_addr.clone(),
        "127.0.0.1:9001",
        Bootstrap::Founder {
            voters: BTreeMap::from([(1, peer_addr)]),
        },
        Arc::new(TokioClock::new()),
        1,
    );
    let node = Node::start(config).await?;
    let handle = node.handle();
    // Wait for leadership: the first proposal retries until then.
    let mut sessions = Vec::new();
    for _ in 0..locks.div_ceil(LOCKS_PER_SESSION) {
        let reply = handle
            .propose(
                Command::OpenSession(OpenSession {
                    ttl_ms: 3_600_000,
                    name: "idle".into(),
                }),
                None,
                DEADLINE,
            )
            .await?;
        match reply {
            Reply::SessionOpened { session_id, .. } => sessions.push(session_id),
            other => anyhow::bail!("open session: {other:?}"),
        }
    }
    let rss_before = rss_bytes();
    let heap_before = heap_bytes();
    let started = Instant::now();
    let sessions = Arc::new(sessions);
    let mut tasks = Vec::new();
    for worker in 0..IN_FLIGHT {
        let handle = handle.clone();
        let sessions = sessions.clone();
        tasks.push(tokio::spawn(async move {
            let mut i = worker;
            while i < locks {
                let reply = handle
                    .propose(
                        Command::Acquire(Acquire {
                            lock: format!("lock/{i:08}"),
                            owner: Owner::Session(sessions[i / LOCKS_PER_SESSION]),
                            mode: Mode::Exclusive,
                            wait_ms: 0,
                        }),
                        None,
                        DEADLINE,
                    )
                    .await?;
                anyhow::ensure!(matches!(reply, Reply::Acquired(_)), "acquire: {reply:?}");
                i += IN_FLIGHT;
            }
            anyhow::Ok(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    let build_s = started.elapsed().as_secs_f64();
    let held = handle.read(DEADLINE, |ctx| ctx.state.lock_count()).await?;
    anyhow::ensure!(held == locks, "{held} locks held, wanted {locks}");
    let report = |label: &str| {
        let rss = rss_bytes();
        let heap = heap_bytes();
        println!(
            "{label:<28} RSS {:>8.1} MiB ({:>6.0} B/lock)   heap {:>8.1} MiB ({:>6.0} B/lock)",
            rss as f64 / 1048576.0,
            (rss as f64 - rss_before as f64) / locks as f64,
            heap as f64 / 1048576.0,
            (heap - heap_before) as f64 / locks as f64,
        );
    };
    println!(
        "one node, fjall; {} sessions; {locks} locks acquired through NodeHandle in {build_s:.1} s ({:.0}/s)",
        sessions.len(),
        locks as f64 / build_s
    );
    println!(
        "{:<28} RSS {:>8.1} MiB   heap {:>8.1} MiB",
        "before (sessions open)",
        rss_before as f64 / 1048576.0,
        heap_before as f64 / 1048576.0
    );
    report("after acquiring");
    // Idle: keepalives are not needed (1 h TTL); the node keeps running its
    // maintenance. Memory must stay flat.
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_secs(5)).await;
        report("idle +5 s");
    }
    node.shutdown().await;
    Ok(())
}
