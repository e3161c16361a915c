//! Benchmark: restart time of a one-node cluster from a fjall data dir that
//! holds a snapshot (100k held locks) and 1M log entries after it. Builds the
//! dir directly through `FjallStorage` (fast, deterministic), then times
//! `Node::start` until the node serves a linearizable read that sees the last
//! entry. Prints figures only.
//!
//! `cargo run --release -p deadbolt-runtime --example recovery_bench [entries]`
//! (`RECOVERY_SNAPSHOT_ENTRIES=N` changes the node's snapshot threshold.)

// Under `--cfg madsim` only the empty `main` below is built.
#![cfg_attr(madsim, allow(unused))]

#[cfg(madsim)]
fn main() {}

#[cfg(not(madsim))]
#[tokio::main(flavor = "multi_thread")]
async fn main() -> anyhow::Result<()> {
    use std::collections::BTreeMap;
    use std::sync::atomic::Ordering::Relaxed;
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use deadbolt_core::lock::{
        Acquire, Command, Envelope, KvWrite, LockStateMachine, Mode, OpenSession, Owner, Reply,
    };
    use deadbolt_core::raft::{Entry, EntryPayload, HardState, Member, Membership, SnapshotMeta};
    use deadbolt_runtime::node::{Bootstrap, Node, NodeConfig, StorageChoice};
    use deadbolt_runtime::storage::{FjallStorage, Identity, Storage};
    use deadbolt_runtime::TokioClock;

    // The node logs its recovery phases ("recovered from storage": open,
    // load and restore times) at info; RUST_LOG overrides.
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "deadbolt_runtime::node=info".into()),
        )
        .init();

    const SNAPSHOT_LOCKS: usize = 100_000;
    /// Deadline of one read try while polling for the first read.
    const READ_TRY: Duration = Duration::from_millis(20);
    const APPEND_CHUNK: usize = 10_000;
    let entries: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);

    let tmp = tempfile::tempdir()?;
    let dir = tmp.path().join("node-1");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let peer_addr = listener.local_addr()?.to_string();
    let membership = Membership {
        members: BTreeMap::from([(
            1,
            Member {
                voter: true,
                peer_addr: peer_addr.clone(),
                api_addr: String::new(),
            },
        )]),
        incarnations: BTreeMap::new(),
    };

    // The snapshot: a state machine holding SNAPSHOT_LOCKS locks.
    let built = Instant::now();
    let envelope = |command| Envelope {
        now_ms: 1_000,
        idempotency: None,
        command,
    };
    let mut sm = LockStateMachine::new();
    let session = match sm
        .apply(
            1,
            &envelope(Command::OpenSession(OpenSession {
                ttl_ms: 3_600_000,
                name: "bench".into(),
            })),
        )
        .reply
    {
        Reply::SessionOpened { session_id, .. } => session_id,
        other => anyhow::bail!("open session: {other:?}"),
    };
    for i in 0..SNAPSHOT_LOCKS {
        let acquire = envelope(Command::Acquire(Acquire {
            lock: format!("lock/{i:08}"),
            owner: Owner::Session(session),
            mode: Mode::Exclusive,
            wait_ms: 0,
        }));
        sm.apply(2 + i as u64, &acquire);
    }
    let snapshot_index = 1 + SNAPSHOT_LOCKS as u64;
    let snapshot = sm.snapshot();
    let identity = Identity {
        cluster_id: "recovery".into(),
        node_id: 1,
    };
    {
        let mut storage = FjallStorage::open(&dir, &identity)?;
        storage.load()?;
        storage.save_snapshot(
            &SnapshotMeta {
                last_index: snapshot_index,
                last_term: 1,
                membership: membership.clone(),
            },
            &snapshot,
        )?;
        let mut next = snapshot_index + 1;
        let last = snapshot_index + entries;
        while next <= last {
            let chunk: Vec<Entry> = (next..=last.min(next + APPEND_CHUNK as u64 - 1))
                .map(|index| Entry {
                    term: 1,
                    index,
                    payload: EntryPayload::Command(
                        envelope(Command::KvPut(KvWrite {
                            key: format!("k{}", index % 1024),
                            value: format!("{index}"),
                            fence: None,
                        }))
                        .to_bytes(),
                    ),
                })
                .collect();
            next += chunk.len() as u64;
            storage.append(&chunk)?;
        }
        storage.save_hard_state(&HardState {
            term: 1,
            voted_for: Some(1),
            commit_index: last,
        })?;
        storage.sync()?;
    }
    let dir_bytes = dir_size(&dir);
    println!(
        "data dir: snapshot of {SNAPSHOT_LOCKS} locks ({} KiB) + {entries} log entries, {:.1} MiB on disk, built in {:.1} s",
        snapshot.len() / 1024,
        dir_bytes as f64 / (1024.0 * 1024.0),
        built.elapsed().as_secs_f64()
    );

    let last = snapshot_index + entries;
    let started = Instant::now();
    let config = NodeConfig::new(
        1,
        "recovery",
        StorageChoice::Fjall { dir: dir.clone() },
        listener,
        peer_addr.clone(),
        "127.0.0.1:9001",
        Bootstrap::Founder {
            voters: BTreeMap::from([(1, peer_addr)]),
        },
        Arc::new(TokioClock::new()),
        1,
    );
    // RECOVERY_SNAPSHOT_ENTRIES=N changes the snapshot threshold (replaying
    // 1M entries takes a snapshot every N of them).
    let mut config = config;
    if let Ok(entries) = std::env::var("RECOVERY_SNAPSHOT_ENTRIES") {
        config.snapshot_threshold_entries = entries.parse()?;
    }
    let node = Node::start(config).await?;
    let opened = started.elapsed();
    let handle = node.handle();
    // Phases seen from outside, through the metrics the actor publishes
    // after each turn: replay caught up with the log, then leadership.
    let watcher = {
        let handle = handle.clone();
        tokio::spawn(async move {
            let metrics = handle.metrics();
            let (mut caught_up, mut leader) = (None, None);
            while caught_up.is_none() || leader.is_none() {
                if caught_up.is_none() && metrics.applied_index.load(Relaxed) >= last {
                    caught_up = Some(started.elapsed());
                }
                if leader.is_none() && metrics.leader_changes.load(Relaxed) > 0 {
                    leader = Some(started.elapsed());
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            (caught_up, leader)
        })
    };
    // Poll until a linearizable read sees the last entry applied. Each try
    // is short: `read` retries an unavailable node with a backoff of up to
    // 200 ms, which would measure the backoff rather than the node.
    let key = format!("k{}", last % 1024);
    let want = format!("{last}");
    loop {
        let key = key.clone();
        let seen = handle
            .read(READ_TRY, move |ctx| {
                ctx.state.kv_get(&key).ok().map(|v| v.value)
            })
            .await;
        if matches!(&seen, Ok(Some(v)) if *v == want) {
            break;
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(120),
            "no read of the last entry within 120 s: {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let serving = started.elapsed();
    let (caught_up, leader) = watcher.await?;
    let secs = |d: Option<Duration>| d.map_or(f64::NAN, |d| d.as_secs_f64());
    println!(
        "restart: Node::start returned in {:.2} s; replay caught up at {:.2} s; leader at {:.2} s; first read of the last entry after {:.2} s ({} snapshots taken meanwhile)",
        opened.as_secs_f64(),
        secs(caught_up),
        secs(leader),
        serving.as_secs_f64(),
        handle.metrics().snapshots_taken.load(Relaxed)
    );
    node.shutdown().await;
    Ok(())
}

#[cfg(not(madsim))]
fn dir_size(dir: &std::path::Path) -> u64 {
    let Ok(read) = std::fs::read_dir(dir) else {
        return 0;
    };
    read.flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_size(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}
