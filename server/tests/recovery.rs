//! Backup and disaster recovery (issue 14, item 5), with real `deadbolt`
//! processes on loopback:
//!
//! - A backup taken with `deadbolt snapshot save` while writes go on
//!   restores (`deadbolt restore` on three new founders) into a new cluster
//!   with a new id, holding every write acknowledged before the save began,
//!   the held lock with its holder and fencing token, the session and the
//!   stack; new fencing tokens are above every token of the old cluster.
//! - A damaged, truncated or foreign backup file is refused with a clear
//!   error and nothing is written; a data dir that is not empty is refused.
//! - `serve --force-new-cluster` on the last survivor of a 3-node cluster
//!   whose two other nodes were destroyed brings back a serving cluster with
//!   every acknowledged write; new nodes join it; forcing the same data dir
//!   again is refused, and an old member restarted on its data dir learns
//!   it was removed and exits 1.
//! - Forcing a node of a cluster whose other voters answer is refused (it
//!   made the healthy majority exit as removed, review 14r), and forcing a
//!   data dir from before incarnations keeps its incarnation and marker.
//!
//! Ports are ephemeral, data lives in temp dirs, every wait has a deadline
//! and every process is killed when its guard drops.

// Real processes, sockets and fjall: not a simulation test.
#![cfg(not(madsim))]

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use deadbolt_client::api::*;
use deadbolt_client::Client;
use nix::sys::signal::Signal;

const STARTUP: Duration = Duration::from_secs(20);

fn initial_cluster(specs: &[NodeSpec]) -> String {
    specs
        .iter()
        .map(|s| format!("{}={}", s.id, s.peer))
        .collect::<Vec<_>>()
        .join(",")
}

fn urls(specs: &[NodeSpec]) -> Vec<String> {
    specs.iter().map(NodeSpec::url).collect()
}

/// Starts founders `specs` and waits for a founded cluster; returns its id.
async fn found(root: &Path, specs: &[NodeSpec]) -> (BTreeMap<u64, Proc>, String) {
    let flags = initial_cluster(specs);
    let procs = specs
        .iter()
        .map(|s| (s.id, s.spawn(root, &["--initial-cluster", &flags])))
        .collect();
    let id = founded(&client(&urls(specs)), specs.len()).await;
    (procs, id)
}

/// Waits until the cluster behind `c` has a leader, `voters` voters and a
/// founded id (with its nonce); returns that id.
async fn founded(c: &Client, voters: usize) -> String {
    eventually("a leader and a founded cluster id", STARTUP, || async {
        let status = c.cluster_status().await.ok()?;
        let ok = status.leader_id.is_some()
            && status.members.iter().filter(|m| m.voter).count() == voters
            && status.cluster_id.contains('.');
        ok.then_some(status.cluster_id)
    })
    .await
}

fn write(value: &str) -> KvWriteRequest {
    KvWriteRequest {
        value: value.into(),
        lock: None,
        fencing_token: None,
    }
}

async fn put(c: &Client, key: &str, value: &str) {
    c.kv_put(key, &write(value))
        .await
        .expect("an acknowledged write");
}

async fn get(c: &Client, key: &str) -> String {
    c.kv_get(key).await.expect("read back").value
}

fn stderr_of(proc: &Proc) -> String {
    std::fs::read_to_string(&proc.stderr).unwrap_or_default()
}

/// Runs the CLI off the async workers (it blocks until the process ends).
async fn cli_async(endpoints: String, args: Vec<String>) -> (i32, String, String) {
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        cli(&endpoints, &args)
    })
    .await
    .expect("the CLI ran")
}

fn restore_args(file: &Path, spec: &NodeSpec, flags: &str) -> Vec<String> {
    vec![
        "restore".into(),
        file.display().to_string(),
        "--data-dir".into(),
        spec.data_dir.display().to_string(),
        "--node-id".into(),
        spec.id.to_string(),
        "--initial-cluster".into(),
        flags.into(),
    ]
}

/// Keeps writing `load/<i>` = `<i>` one after the other; `acked` lists the
/// acknowledged `i` in order.
fn start_load(c: Client) -> (tokio::task::JoinHandle<()>, Arc<Mutex<Vec<u64>>>) {
    let acked = Arc::new(Mutex::new(Vec::new()));
    let record = acked.clone();
    let task = tokio::spawn(async move {
        for i in 0u64.. {
            if c.kv_put(&format!("load/{i}"), &write(&i.to_string()))
                .await
                .is_ok()
            {
                record.lock().unwrap().push(i);
            }
        }
    });
    (task, acked)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_taken_under_load_restores_into_a_new_cluster_with_nothing_lost() {
    let root = tempfile::tempdir().expect("tempdir");
    let old_root = root.path().join("old");
    let old: Vec<NodeSpec> = (1..=3).map(|id| NodeSpec::new(id, &old_root)).collect();
    let (_old_procs, old_id) = found(root.path(), &old).await;
    let c = client(&urls(&old));

    let session = c
        .create_session(&CreateSessionRequest {
            ttl_ms: 600_000,
            name: Some("backup-holder".into()),
        })
        .await
        .expect("session")
        .session_id;
    let held = c
        .acquire(
            "orders/db",
            &AcquireRequest {
                session_id: Some(session),
                mode: LockMode::Exclusive,
                wait_ms: 0,
                ttl_ms: None,
            },
        )
        .await
        .expect("lock");
    for value in ["a", "b", "c"] {
        let push = StackPushRequest {
            value: value.into(),
            lock: None,
            fencing_token: None,
        };
        c.stack_push("jobs", &push).await.expect("push");
    }

    // Save through a follower while the load runs.
    let (load, acked) = start_load(client(&urls(&old)));
    eventually("some load acknowledged", STARTUP, || async {
        (acked.lock().unwrap().len() >= 20).then_some(())
    })
    .await;
    let leader = c.cluster_status().await.expect("status").leader_id;
    let follower = old
        .iter()
        .find(|s| Some(s.id) != leader)
        .expect("a follower");
    let file = root.path().join("backup.snapshot");
    let acked_before: Vec<u64> = acked.lock().unwrap().clone();
    let args = vec!["snapshot".into(), "save".into(), file.display().to_string()];
    let (code, out, err) = cli_async(follower.url(), args).await;
    assert_eq!(code, 0, "snapshot save: {out}{err}");
    assert!(out.contains(&old_id), "names the cluster: {out}");
    eventually("more load after the save", STARTUP, || async {
        (acked.lock().unwrap().len() >= acked_before.len() + 10).then_some(())
    })
    .await;
    load.abort();

    // Three new founders restore the same file with the same list.
    let new_root = root.path().join("new");
    let new: Vec<NodeSpec> = (1..=3).map(|id| NodeSpec::new(id, &new_root)).collect();
    let flags = initial_cluster(&new);
    for spec in &new {
        let (code, out, err) = cli_async(String::new(), restore_args(&file, spec, &flags)).await;
        assert_eq!(code, 0, "restore: {out}{err}");
        assert!(out.contains("deadbolt serve"), "says how to start: {out}");
    }
    let (_new_procs, new_id) = found(root.path(), &new).await;
    assert_ne!(
        new_id.split('.').next(),
        old_id.split('.').next(),
        "a restored cluster is a new founding: {new_id} vs {old_id}"
    );

    let r = client(&urls(&new));
    for i in &acked_before {
        assert_eq!(get(&r, &format!("load/{i}")).await, i.to_string());
    }
    let state = r.lock_state("orders/db").await.expect("lock state");
    assert_eq!(state.holders.len(), 1, "{state:?}");
    assert_eq!(state.holders[0].session_id, session);
    assert_eq!(state.holders[0].fencing_token, held.fencing_token);
    let info = r.session_info(session).await.expect("the session lives on");
    assert_eq!(info.name.as_deref(), Some("backup-holder"));
    let stack = r.stack_get("jobs").await.expect("stack");
    assert_eq!((stack.size, stack.top.as_deref()), (3, Some("c")));
    let valid = r
        .validate("orders/db", held.fencing_token)
        .await
        .expect("validate");
    assert!(valid.valid, "{valid:?}");

    // New grants are fenced above every old token, also those the old
    // cluster gave after the backup.
    let old_after = c
        .acquire("after/backup", &AcquireRequest::default())
        .await
        .expect("an old grant after the backup");
    let fresh = r
        .acquire("fresh", &AcquireRequest::default())
        .await
        .expect("a new grant");
    let in_backup = r.lock_state("orders/db").await.expect("state").holders[0].fencing_token;
    assert!(fresh.fencing_token > in_backup);
    let backup_index: u64 = {
        let bytes = std::fs::read(&file).expect("backup");
        let (backup, _) = deadbolt_runtime::backup::Backup::decode(&bytes).expect("decodes");
        backup.index
    };
    assert!(
        fresh.fencing_token > backup_index,
        "{} > {backup_index}",
        fresh.fencing_token
    );
    // (The old cluster's later tokens may be higher: it is another cluster;
    // the floor a restore guarantees is the backup's.)
    let _ = old_after;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_backup_or_a_used_data_dir_is_refused_and_nothing_is_written() {
    let root = tempfile::tempdir().expect("tempdir");
    let spec = NodeSpec::new(1, root.path());
    let _node = spec.spawn(root.path(), &[]);
    let c = client(&[spec.url()]);
    founded(&c, 1).await;
    put(&c, "k", "v").await;
    let file = root.path().join("good.snapshot");
    let save = vec!["snapshot".into(), "save".into(), file.display().to_string()];
    let (code, out, err) = cli_async(spec.url(), save).await;
    assert_eq!(code, 0, "{out}{err}");
    let good = std::fs::read(&file).expect("backup");

    let target = NodeSpec::new(1, &root.path().join("restored"));
    let flags = format!("1={}", target.peer);
    let mut flipped = good.clone();
    let middle = flipped.len() / 2;
    flipped[middle] ^= 0x01;
    let cases: [(&str, Vec<u8>, &str); 4] = [
        ("flipped", flipped, "damaged"),
        ("truncated", good[..good.len() - 7].to_vec(), "damaged"),
        (
            "foreign",
            b"{\"hello\": 1}".to_vec(),
            "not a deadbolt backup",
        ),
        ("empty", Vec::new(), "not a deadbolt backup"),
    ];
    for (name, bytes, expected) in cases {
        let bad = root.path().join(format!("{name}.snapshot"));
        std::fs::write(&bad, bytes).expect("write");
        let (code, out, err) = cli_async(String::new(), restore_args(&bad, &target, &flags)).await;
        assert_eq!(code, 1, "{name}: {out}{err}");
        assert!(err.contains(expected), "{name}: {err}");
        assert!(err.contains("nothing was written"), "{name}: {err}");
        assert!(!target.data_dir.exists(), "{name}: no data dir left behind");
    }

    // --bump-index lifts every new fencing token above the old cluster's
    // later ones.
    let mut bump_args = restore_args(&file, &target, &flags);
    bump_args.extend(["--bump-index".into(), "1000000".into()]);
    let (code, out, err) = cli_async(String::new(), bump_args).await;
    assert_eq!(code, 0, "{out}{err}");
    let restored = target.spawn(root.path(), &["--initial-cluster", &flags]);
    let bumped = client(&[target.url()]);
    founded(&bumped, 1).await;
    assert_eq!(get(&bumped, "k").await, "v");
    let grant = bumped
        .acquire("after-bump", &AcquireRequest::default())
        .await
        .expect("grant");
    assert!(grant.fencing_token > 1_000_000, "{}", grant.fencing_token);
    drop(restored);
    std::fs::remove_dir_all(&target.data_dir).expect("clean");

    // A data dir that holds a node is never written over.
    let (code, out, err) = cli_async(String::new(), restore_args(&file, &spec, &flags)).await;
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains("is not empty"), "{err}");
    assert_eq!(get(&c, "k").await, "v");
    // A list without this node is refused too.
    let other = format!("2={}", target.peer);
    let (code, _, err) = cli_async(String::new(), restore_args(&file, &target, &other)).await;
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("does not list this node"), "{err}");
    assert!(!target.data_dir.exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn force_new_cluster_brings_the_last_survivor_back_with_every_acknowledged_write() {
    let root = tempfile::tempdir().expect("tempdir");
    let specs: Vec<NodeSpec> = (1..=3).map(|id| NodeSpec::new(id, root.path())).collect();
    let (mut procs, cluster_id) = found(root.path(), &specs).await;
    let all = client(&urls(&specs));
    // Node 1 leads while the writes are acknowledged, so it holds them all
    // (a leader holds every committed entry).
    eventually("node 1 leads", STARTUP, || async {
        let _ = all.transfer_leader(1).await;
        let status = all.cluster_status().await.ok()?;
        (status.leader_id == Some(1)).then_some(())
    })
    .await;
    for i in 0..50 {
        put(&all, &format!("k{i}"), &format!("v{i}")).await;
    }

    // Nodes 2 and 3 are lost: 3 with its disk, 2 is kept to try later.
    for id in [2, 3] {
        procs.get_mut(&id).expect("node").kill9();
    }
    std::fs::remove_dir_all(&specs[2].data_dir).expect("destroy node 3's disk");
    let survivor = client(&[specs[0].url()]);
    let mut node1 = procs.remove(&1).expect("node 1");
    node1.kill9();

    let forced = ["--force-new-cluster"];
    let node1 = specs[0].spawn(root.path(), &forced);
    assert_eq!(
        founded(&survivor, 1).await,
        cluster_id,
        "the same cluster, continued"
    );
    for i in 0..50 {
        assert_eq!(get(&survivor, &format!("k{i}")).await, format!("v{i}"));
    }
    put(&survivor, "after", "force").await;

    // New nodes join the one-voter cluster and are promoted.
    let joiners: Vec<NodeSpec> = (4..=5).map(|id| NodeSpec::new(id, root.path())).collect();
    let join = ["--join".to_owned(), specs[0].url()];
    let join: Vec<&str> = join.iter().map(String::as_str).collect();
    let _joined: Vec<Proc> = joiners
        .iter()
        .map(|s| s.spawn(root.path(), &join))
        .collect();
    founded(&survivor, 3).await;
    let rebuilt = client(&[joiners[0].url(), joiners[1].url()]);
    assert_eq!(get(&rebuilt, "after").await, "force");

    // Forcing the same data dir again is refused; without the flag it
    // rejoins its rebuilt cluster.
    let mut node1 = node1;
    node1.signal(Signal::SIGTERM);
    assert!(node1.wait_exit(STARTUP).await.success());
    let mut again = specs[0].spawn(root.path(), &forced);
    let status = again.wait_exit(STARTUP).await;
    assert_eq!(status.code(), Some(1), "{}", again.logs());
    assert!(
        stderr_of(&again).contains("already forced"),
        "{}",
        again.logs()
    );
    let _node1 = specs[0].spawn(root.path(), &[]);
    founded(&survivor, 3).await;
    put(&survivor, "rejoined", "yes").await;

    // The old node 2 restarted on its data dir learns it was removed.
    let mut old = specs[1].spawn(root.path(), &[]);
    let status = old.wait_exit(STARTUP).await;
    assert_eq!(status.code(), Some(1), "{}", old.logs());
    assert!(
        stderr_of(&old).contains(&format!("removed from cluster {cluster_id}")),
        "{}",
        old.logs()
    );
    assert_eq!(get(&rebuilt, "rejoined").await, "yes");
}

/// An operator's mistake: forcing a node of a cluster whose other voters
/// are alive would remove them (they would learn it and exit) with
/// whatever they committed without it. Refused; the cluster keeps serving
/// and the node rejoins as it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forcing_a_node_of_a_cluster_that_has_its_quorum_is_refused() {
    let root = tempfile::tempdir().expect("tempdir");
    let specs: Vec<NodeSpec> = (1..=3).map(|id| NodeSpec::new(id, root.path())).collect();
    let (mut procs, cluster_id) = found(root.path(), &specs).await;
    let all = client(&urls(&specs));
    put(&all, "before", "1").await;
    let node1 = procs.get_mut(&1).expect("node 1");
    node1.signal(Signal::SIGTERM);
    assert!(node1.wait_exit(STARTUP).await.success());
    // What the majority commits without node 1 must survive the mistake.
    let others = client(&urls(&specs[1..]));
    put(&others, "while-1-is-down", "acked").await;

    let mut forced = specs[0].spawn(root.path(), &["--force-new-cluster"]);
    let status = forced.wait_exit(STARTUP).await;
    assert_eq!(status.code(), Some(1), "{}", forced.logs());
    assert!(
        stderr_of(&forced).contains("has not lost its quorum"),
        "{}",
        forced.logs()
    );
    put(&others, "after", "2").await;
    for proc in procs.values_mut().filter(|p| p.name != "node-1") {
        assert!(proc.try_wait().is_none(), "{} still runs", proc.name);
    }
    let flags = initial_cluster(&specs);
    let _node1 = specs[0].spawn(root.path(), &["--initial-cluster", &flags]);
    assert_eq!(founded(&all, 3).await, cluster_id);
    let one = client(&[specs[0].url()]);
    assert_eq!(get(&one, "after").await, "2");
    assert_eq!(get(&one, "while-1-is-down").await, "acked");
}

fn identity_of(spec: &NodeSpec) -> serde_json::Value {
    let text = std::fs::read_to_string(spec.data_dir.join("identity.json")).expect("identity");
    serde_json::from_str(&text).expect("identity json")
}

/// review 14r: a data dir whose identity.json predates incarnations (an
/// upgrade from the previous release: no "incarnation" field) is forced.
/// `start` draws an incarnation and rewrites the identity, but the
/// forced marker is then written from the identity read BEFORE that
/// (`..stored.clone()`), so identity.json goes back to incarnation 0: every
/// later start draws yet another incarnation (the cluster recorded the one
/// the forced node ran with, so the node comes back as "another data dir"
/// under its own id), and that legacy rewrite also drops
/// `forced_new_cluster`, so the "never force twice" guard is gone after one
/// ordinary restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forcing_a_data_dir_from_before_incarnations_keeps_its_incarnation_and_marker() {
    let root = tempfile::tempdir().expect("tempdir");
    let spec = NodeSpec::new(1, root.path());
    let c = client(&[spec.url()]);
    let mut node = spec.spawn(root.path(), &[]);
    founded(&c, 1).await;
    put(&c, "k", "v").await;
    node.signal(Signal::SIGTERM);
    assert!(node.wait_exit(STARTUP).await.success());

    // The previous release's identity.json: no incarnation.
    let mut legacy = identity_of(&spec);
    legacy
        .as_object_mut()
        .expect("object")
        .remove("incarnation");
    std::fs::write(
        spec.data_dir.join("identity.json"),
        serde_json::to_string(&legacy).expect("json"),
    )
    .expect("write legacy identity");

    let mut forced = spec.spawn(root.path(), &["--force-new-cluster"]);
    founded(&c, 1).await;
    assert_eq!(get(&c, "k").await, "v");
    forced.signal(Signal::SIGTERM);
    assert!(
        forced.wait_exit(STARTUP).await.success(),
        "{}",
        forced.logs()
    );
    let after_force = identity_of(&spec);
    assert_eq!(after_force["forced_new_cluster"], true, "{after_force}");
    let incarnation = after_force["incarnation"].as_u64().unwrap_or(0);
    assert_ne!(
        incarnation, 0,
        "the forced start wrote back the legacy identity: {after_force}"
    );

    // An ordinary restart keeps both.
    let mut plain = spec.spawn(root.path(), &[]);
    founded(&c, 1).await;
    plain.signal(Signal::SIGTERM);
    assert!(plain.wait_exit(STARTUP).await.success(), "{}", plain.logs());
    let after_restart = identity_of(&spec);
    assert_eq!(after_restart["incarnation"].as_u64(), Some(incarnation));
    assert_eq!(
        after_restart["forced_new_cluster"], true,
        "the never-force-twice marker was lost: {after_restart}"
    );
}
