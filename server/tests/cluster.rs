//! The user-facing contract with real `deadbolt` processes on loopback:
//! a three-node cluster that loses its leader to `kill -9` in the middle of
//! a stream of fenced appends (nothing acknowledged is lost or applied
//! twice), the killed node's catch-up after restart, a fourth node added by
//! `--join`, session expiry handing a lock to its waiter, `deadbolt lock
//! -- CMD` (children never overlap; the child is killed before the lease
//! could run out when the server stops answering), and a write forwarded to
//! a frozen leader answering 504 whose keyed retry applies once.
//!
//! Ports are ephemeral, data lives in temp dirs, every wait has a deadline
//! and every process is killed when its guard drops.

// Real processes, sockets and fjall: not a simulation test.
#![cfg(not(madsim))]

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use deadbolt_client::api::*;
use deadbolt_client::{Client, Lock, Session, SessionOptions};
use nix::sys::signal::Signal;

const STARTUP: Duration = Duration::from_secs(20);

/// Starts three founders and returns once one of them leads with a quorum.
async fn three_nodes(root: &Path) -> (Vec<NodeSpec>, BTreeMap<u64, Proc>) {
    let specs: Vec<NodeSpec> = (1..=3).map(|id| NodeSpec::new(id, root)).collect();
    let initial = specs
        .iter()
        .map(|s| format!("{}={}", s.id, s.peer))
        .collect::<Vec<_>>()
        .join(",");
    let procs: BTreeMap<u64, Proc> = specs
        .iter()
        .map(|s| (s.id, s.spawn(root, &["--initial-cluster", &initial])))
        .collect();
    for spec in &specs {
        let c = client(&[spec.url()]);
        eventually(
            &format!("node {} ready\n{}", spec.id, procs[&spec.id].logs()),
            STARTUP,
            || async { c.ready(0).await.ok() },
        )
        .await;
    }
    (specs, procs)
}

async fn leader_of(c: &Client) -> Option<u64> {
    c.cluster_status().await.ok()?.leader_id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_leader_loses_no_acknowledged_append_and_a_fourth_node_joins() {
    let root = tempfile::tempdir().expect("tempdir");
    let (mut specs, mut procs) = three_nodes(root.path()).await;
    let all: Vec<String> = specs.iter().map(NodeSpec::url).collect();
    let everyone = client(&all);
    let leader = eventually("a leader", STARTUP, || leader_of(&everyone)).await;
    let follower = specs.iter().find(|s| s.id != leader).expect("a follower");

    let (session, lock) = lock_through(follower).await;
    let token = lock.fencing_token();

    // A stream of fenced appends; the leader dies in the middle of it.
    let acked_so_far = Arc::new(AtomicUsize::new(0));
    let stream = tokio::spawn(fenced_appends(
        everyone.clone(),
        token,
        acked_so_far.clone(),
    ));
    eventually("20 appends acknowledged", STARTUP, || async {
        (acked_so_far.load(Ordering::SeqCst) >= 20).then_some(())
    })
    .await;
    procs.get_mut(&leader).expect("leader process").kill9();
    let killed_at = Instant::now();
    let survivors: Vec<String> = specs
        .iter()
        .filter(|s| s.id != leader)
        .map(NodeSpec::url)
        .collect();
    let surviving = client(&survivors);
    let new_leader = new_leader_after_kill(&surviving, leader, killed_at).await;
    let (acknowledged, unknown) = stream.await.expect("the append stream");
    eprintln!(
        "{} appends acknowledged, {} unknown, {:?} after the kill",
        acknowledged.len(),
        unknown.len(),
        killed_at.elapsed()
    );
    assert!(
        acknowledged.len() >= 50,
        "acknowledged {acknowledged:?}, unknown {unknown:?}"
    );

    // Read back: every acknowledged append exactly once, nothing twice.
    let value = surviving.kv_get("journal").await.expect("read back").value;
    assert_applied_once(&value, &acknowledged, &unknown);

    // The killed node restarts on its data dir and catches up.
    let old = specs
        .iter()
        .find(|s| s.id == leader)
        .expect("the killed node's spec");
    let restarted = restart_and_catch_up(root.path(), old, &surviving, new_leader).await;
    procs.insert(leader, restarted);

    // A fourth node joins through a follower's API, serves reads, and
    // resumes its membership after a restart.
    let fourth = NodeSpec::new(4, root.path());
    let all4: Vec<String> = specs
        .iter()
        .map(NodeSpec::url)
        .chain([fourth.url()])
        .collect();
    let everyone = client(&all4);
    let join_url = survivors[0].clone();
    procs.insert(4, fourth.spawn(root.path(), &["--join", &join_url]));
    join_fourth_node(
        root.path(),
        &fourth,
        &mut procs,
        &everyone,
        &join_url,
        &value,
        token,
    )
    .await;
    specs.push(fourth);
    lock.release().await.expect("release");

    sigterm_leader_hands_over(&specs, &all4, &mut procs).await;
    drop(session);
    stop_all(&mut procs).await;
}

/// A session and an exclusive "journal-lock" through `follower` (which
/// forwards to the leader).
async fn lock_through(follower: &NodeSpec) -> (Session, Lock) {
    let via_follower = client(&[follower.url()]);
    let session = via_follower
        .session(SessionOptions {
            ttl: Duration::from_secs(10),
            ..SessionOptions::default()
        })
        .await
        .expect("session through a follower");
    let lock = session
        .try_lock("journal-lock", LockMode::Exclusive)
        .await
        .expect("acquire through a follower");
    (session, lock)
}

/// Graceful stop of every node: each exits 0.
async fn stop_all(procs: &mut BTreeMap<u64, Proc>) {
    for proc in procs.values_mut() {
        proc.signal(Signal::SIGTERM);
    }
    for proc in procs.values_mut() {
        let status = proc.wait_exit(Duration::from_secs(15)).await;
        assert!(status.success(), "{status:?}\n{}", proc.logs());
    }
}

/// Sends 60 fenced appends `i;` to "journal" one after another, counting
/// acknowledgements in `acked_so_far` as they come; returns (acknowledged,
/// unknown outcome).
async fn fenced_appends(
    everyone: Client,
    token: u64,
    acked_so_far: Arc<AtomicUsize>,
) -> (Vec<u32>, Vec<u32>) {
    let (mut acknowledged, mut unknown) = (Vec::new(), Vec::new());
    for i in 0..60u32 {
        let write = KvWriteRequest {
            value: format!("{i};"),
            lock: Some("journal-lock".into()),
            fencing_token: Some(token),
        };
        let sent = Instant::now();
        let result = everyone.kv_append("journal", &write).await;
        if sent.elapsed() > Duration::from_secs(1) {
            eprintln!("append {i} took {:?}", sent.elapsed());
        }
        match result {
            Ok(answer) => {
                assert_eq!(answer.last_token, Some(token));
                acknowledged.push(i);
                acked_so_far.fetch_add(1, Ordering::SeqCst);
            }
            // Retried with the same idempotency key until the call's
            // bound: applied at most once, but we cannot tell.
            Err(error) => {
                eprintln!("append {i}: {error}");
                unknown.push(i);
            }
        }
    }
    (acknowledged, unknown)
}

/// A new leader among the survivors within a few election timeouts
/// (300-600 ms each) of the kill.
async fn new_leader_after_kill(surviving: &Client, killed: u64, killed_at: Instant) -> u64 {
    let new_leader = eventually("a new leader", Duration::from_secs(10), || async {
        let status = surviving.cluster_status().await.ok()?;
        status.leader_id.filter(|id| *id != killed)
    })
    .await;
    let election = killed_at.elapsed();
    eprintln!("node {new_leader} leads {election:?} after node {killed} was killed");
    assert!(
        election < Duration::from_secs(3),
        "election took {election:?}"
    );
    new_leader
}

/// `value` (appends `i;`) holds every acknowledged append exactly once and
/// nothing that was never sent.
fn assert_applied_once(value: &str, acknowledged: &[u32], unknown: &[u32]) {
    let mut seen: BTreeMap<u32, usize> = BTreeMap::new();
    for part in value.split(';').filter(|p| !p.is_empty()) {
        *seen
            .entry(part.parse().expect("an append number"))
            .or_default() += 1;
    }
    for i in acknowledged {
        assert_eq!(seen.get(i), Some(&1), "append {i} in {value:?}");
    }
    for (i, count) in &seen {
        assert_eq!(*count, 1, "append {i} applied {count} times: {value:?}");
        assert!(
            acknowledged.contains(i) || unknown.contains(i),
            "{i} never sent"
        );
    }
}

/// Restarts `old` on its data dir and waits until it follows `new_leader`
/// up to the survivors' commit index.
async fn restart_and_catch_up(
    root: &Path,
    old: &NodeSpec,
    surviving: &Client,
    new_leader: u64,
) -> Proc {
    let restarted = old.spawn(root, &[]);
    let target = surviving
        .cluster_status()
        .await
        .expect("status")
        .commit_index;
    let back = client(&[old.url()]);
    eventually(
        &format!("node {} catches up\n{}", old.id, restarted.logs()),
        STARTUP,
        || async {
            let status = back.cluster_status().await.ok()?;
            (status.leader_id == Some(new_leader) && status.commit_index >= target).then_some(())
        },
    )
    .await;
    restarted
}

/// Node 4 (started with `--join`) becomes a voter, reads `value` from its
/// own view, and after a kill -9 and a restart with the same flags resumes
/// its membership (it does not ask to join again) and catches up.
async fn join_fourth_node(
    root: &Path,
    fourth: &NodeSpec,
    procs: &mut BTreeMap<u64, Proc>,
    everyone: &Client,
    join_url: &str,
    value: &str,
    token: u64,
) {
    eventually(
        &format!("node 4 is a voter\n{}", procs[&4].logs()),
        STARTUP,
        || async {
            let status = everyone.cluster_status().await.ok()?;
            let member = status.members.iter().find(|m| m.id == 4)?;
            (member.voter && member.api_addr == fourth.api).then_some(())
        },
    )
    .await;
    let from_four = client(&[fourth.url()]);
    assert_eq!(
        from_four
            .kv_get("journal")
            .await
            .expect("read via node 4")
            .value,
        value
    );
    procs.get_mut(&4).expect("node 4").kill9();
    let written = everyone
        .kv_append(
            "journal",
            &KvWriteRequest {
                value: "after;".into(),
                lock: Some("journal-lock".into()),
                fencing_token: Some(token),
            },
        )
        .await
        .expect("append while node 4 is down");
    procs.insert(4, fourth.spawn(root, &["--join", join_url]));
    eventually(
        &format!("node 4 is back\n{}", procs[&4].logs()),
        STARTUP,
        || async {
            let got = from_four.kv_get("journal").await.ok()?;
            (got.value.len() == written.size as usize).then_some(())
        },
    )
    .await;
    // The banner comes once start-up returns, maybe after the first answers.
    eventually(
        &format!("node 4's banner says resumed\n{}", procs[&4].logs()),
        STARTUP,
        || async { procs[&4].output().contains("(resumed)").then_some(()) },
    )
    .await;
}

/// SIGTERM to the leader: it hands leadership over (bounded at 2 s) and
/// exits 0; the others have a new leader without waiting out an election
/// timeout of silence. The stopped node leaves `procs`.
async fn sigterm_leader_hands_over(
    specs: &[NodeSpec],
    all: &[String],
    procs: &mut BTreeMap<u64, Proc>,
) {
    let all_client = client(all);
    let current = eventually("a leader", STARTUP, || leader_of(&all_client)).await;
    let others: Vec<String> = specs
        .iter()
        .filter(|s| s.id != current)
        .map(NodeSpec::url)
        .collect();
    let others = client(&others);
    let terminated_at = Instant::now();
    procs[&current].signal(Signal::SIGTERM);
    let successor = eventually("a successor", Duration::from_secs(10), || async {
        let status = others.cluster_status().await.ok()?;
        status.leader_id.filter(|id| *id != current)
    })
    .await;
    let handover = terminated_at.elapsed();
    eprintln!("node {successor} leads {handover:?} after SIGTERM to node {current}");
    assert!(
        handover < Duration::from_secs(2),
        "handover took {handover:?}"
    );
    let proc = procs.get_mut(&current).expect("the leader's process");
    let status = proc.wait_exit(Duration::from_secs(10)).await;
    assert!(status.success(), "{status:?}\n{}", proc.logs());
    assert!(
        terminated_at.elapsed() < Duration::from_secs(5),
        "graceful stop took {:?}",
        terminated_at.elapsed()
    );
    procs.remove(&current);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abandoned_lock_goes_to_its_waiter_after_the_ttl() {
    let root = tempfile::tempdir().expect("tempdir");
    let spec = NodeSpec::new(1, root.path());
    let server = spec.spawn(root.path(), &[]);
    let c = client(&[spec.url()]);
    eventually(&format!("ready\n{}", server.logs()), STARTUP, || async {
        c.ready(0).await.ok()
    })
    .await;

    // A session that never sends a keepalive: its lock must free itself.
    let abandoned = c
        .create_session(&CreateSessionRequest {
            ttl_ms: 1000,
            name: Some("crashed-worker".into()),
        })
        .await
        .expect("session");
    let first = c
        .acquire(
            "abandoned",
            &AcquireRequest {
                session_id: Some(abandoned.session_id),
                ..Default::default()
            },
        )
        .await
        .expect("acquire");
    let waiter = c
        .session(SessionOptions::default())
        .await
        .expect("waiter session");
    let started = Instant::now();
    let granted = waiter
        .lock("abandoned", LockMode::Exclusive, Duration::from_secs(10))
        .await
        .expect("the waiter gets the lock");
    assert!(
        started.elapsed() >= Duration::from_millis(800),
        "granted after {:?}, before the TTL",
        started.elapsed()
    );
    assert!(granted.fencing_token() > first.fencing_token);
    let state = c.lock_state("abandoned").await.expect("state");
    assert_eq!(state.holders.len(), 1);
    assert_eq!(state.holders[0].session_id, waiter.id());
    assert!(c.session_info(abandoned.session_id).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_command_children_never_overlap() {
    let root = tempfile::tempdir().expect("tempdir");
    let spec = NodeSpec::new(1, root.path());
    let server = spec.spawn(root.path(), &[]);
    let c = client(&[spec.url()]);
    eventually(&format!("ready\n{}", server.logs()), STARTUP, || async {
        c.ready(0).await.ok()
    })
    .await;
    let markers = root.path().join("markers");
    // Each child appends start, holds the lock a moment, appends end.
    let child = format!(
        "echo \"start $DEADBOLT_FENCING_TOKEN\" >> {m}; sleep 0.3; echo \"end $DEADBOLT_FENCING_TOKEN\" >> {m}",
        m = markers.display()
    );
    let mut runs: Vec<Proc> = (0..4)
        .map(|i| {
            let mut command = Command::new(bin());
            command.args([
                "--endpoints",
                &spec.url(),
                "lock",
                "critical",
                "--",
                "sh",
                "-c",
                &child,
            ]);
            Proc::spawn(&format!("lock-{i}"), command, root.path())
        })
        .collect();
    for run in &mut runs {
        let status = run.wait_exit(Duration::from_secs(20)).await;
        assert!(status.success(), "{status:?}\n{}", run.logs());
    }
    let text = std::fs::read_to_string(&markers).expect("markers");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 8, "{text}");
    let mut last_token = 0u64;
    for pair in lines.chunks(2) {
        let start = pair[0].strip_prefix("start ").expect(&text);
        let end = pair[1].strip_prefix("end ").expect(&text);
        assert_eq!(start, end, "overlapping children:\n{text}");
        let token: u64 = start.parse().expect("token");
        assert!(token > last_token, "tokens increase:\n{text}");
        last_token = token;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_command_kills_its_child_before_the_lease_can_run_out() {
    let root = tempfile::tempdir().expect("tempdir");
    let spec = NodeSpec::new(1, root.path());
    let mut server = spec.spawn(root.path(), &[]);
    let c = client(&[spec.url()]);
    eventually(&format!("ready\n{}", server.logs()), STARTUP, || async {
        c.ready(0).await.ok()
    })
    .await;
    let pid_file = root.path().join("child.pid");
    const TTL_MS: u64 = 2000;
    let mut command = Command::new(bin());
    command.args([
        "--endpoints",
        &spec.url(),
        "lock",
        "guarded",
        "--ttl-ms",
        &TTL_MS.to_string(),
        "--",
        "sh",
        "-c",
        // `exec`: the pid written is the long-running child itself.
        &format!("echo $$ > {}; exec sleep 60", pid_file.display()),
    ]);
    let mut locker = Proc::spawn("lock", command, root.path());
    let child_pid: i32 = eventually("the child runs", STARTUP, || async {
        std::fs::read_to_string(&pid_file).ok()?.trim().parse().ok()
    })
    .await;

    // The server stops answering (SIGSTOP: no crash, no closed sockets).
    server.signal(Signal::SIGSTOP);
    let stopped_at = Instant::now();
    let child = nix::unistd::Pid::from_raw(child_pid);
    eventually(
        &format!("the child is killed\n{}", locker.logs()),
        Duration::from_millis(TTL_MS),
        || async { nix::sys::signal::kill(child, None).is_err().then_some(()) },
    )
    .await;
    assert!(stopped_at.elapsed() < Duration::from_millis(TTL_MS));
    let status = locker.wait_exit(Duration::from_secs(5)).await;
    assert_eq!(status.code(), Some(4), "lease lost\n{}", locker.logs());
    server.signal(Signal::SIGCONT);
    server.signal(Signal::SIGTERM);
    let status = server.wait_exit(Duration::from_secs(10)).await;
    assert!(status.success(), "{status:?}\n{}", server.logs());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_address_in_use_is_named_with_its_flag() {
    let root = tempfile::tempdir().expect("tempdir");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let taken_addr = taken.local_addr().expect("addr").to_string();
    let free = free_addr();
    for (flag, api, peer) in [
        ("--listen-api", taken_addr.as_str(), free.as_str()),
        ("--listen-peer", free.as_str(), taken_addr.as_str()),
    ] {
        let command = serve_command(1, &root.path().join("data"), api, peer, &[]);
        let mut proc = Proc::spawn(flag.trim_start_matches('-'), command, root.path());
        let status = proc.wait_exit(Duration::from_secs(10)).await;
        let stderr = std::fs::read_to_string(&proc.stderr).unwrap_or_default();
        assert_eq!(status.code(), Some(1), "{stderr}");
        assert!(
            stderr.contains(flag) && stderr.contains(&taken_addr),
            "{stderr}"
        );
    }
}

/// One raw HTTP/1.1 POST with an idempotency key: (status, JSON body).
async fn post_keyed(addr: &str, path: &str, key: &str, body: &str) -> (u16, serde_json::Value) {
    let (status, _, json) =
        http_request(addr, "POST", path, &[("idempotency-key", key)], body).await;
    (status, json)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_forwarded_to_a_frozen_leader_answers_504_and_its_keyed_retry_applies_once() {
    let root = tempfile::tempdir().expect("tempdir");
    let (specs, procs) = three_nodes(root.path()).await;
    let all: Vec<String> = specs.iter().map(NodeSpec::url).collect();
    let everyone = client(&all);
    let leader = eventually("a leader", STARTUP, || leader_of(&everyone)).await;
    let follower = specs.iter().find(|s| s.id != leader).expect("a follower");
    let (path, key, body) = (
        "/v1/kv/e2e-504/append",
        "e2e-504-1",
        r#"{"value": "once;"}"#,
    );

    // SIGSTOP: the leader's sockets stay open and nothing answers. The
    // follower forwards to it; once the other two elect a new leader the
    // forward is orphaned and its outcome unknown: 504.
    procs[&leader].signal(Signal::SIGSTOP);
    let (status, answer) = post_keyed(&follower.api, path, key, body).await;
    assert_eq!(status, 504, "{answer}");
    assert_eq!(answer["error"]["code"], "timeout", "{answer}");

    // The keyed retry, through the same follower, is settled by the new
    // leader.
    eventually("the keyed retry is answered 200", STARTUP, || async {
        let (status, _) = post_keyed(&follower.api, path, key, body).await;
        (status == 200).then_some(())
    })
    .await;
    // The old leader wakes up holding the forward in its socket buffer:
    // whatever it does with it, the write exists once.
    procs[&leader].signal(Signal::SIGCONT);
    let (status, _) = post_keyed(&follower.api, path, key, body).await;
    assert_eq!(status, 200);
    let value = everyone.kv_get("e2e-504").await.expect("read").value;
    assert_eq!(value, "once;");
}
