//! Membership that cannot hurt the cluster (issue 14, items 1-4), with real
//! `deadbolt` processes on loopback: each scenario of the issue's "Why" that
//! these items cover failed before them.
//!
//! - Two foundings with identical flags get different cluster ids, and a
//!   node started on a data dir left from the earlier one is refused by the
//!   new one (both sides name both ids) instead of joining and leading it.
//! - Adding a node that never starts (a "phantom voter") leaves it a
//!   learner: the cluster keeps committing, promotion is refused, removal
//!   works.
//! - Removing the last voter, or a voter when the reachable voters left are
//!   below the new quorum, is 409; unknown ids are 404 (`kind` `member`).
//! - A removed node learns it (running, or restarted on its old data dir),
//!   logs `removed from cluster <id>`, exits 1, and refuses to start on
//!   that data dir again; a removed leader hands over first.
//! - A restarted node with a new peer address is fixed with `cluster
//!   update` instead of a remove and re-add.
//! - Item 4, the health view: the leader's `GET /v1/cluster` shows a killed
//!   node unreachable with growing last contact and lag while the quorum
//!   holds, and the quorum lost once a second node dies; `cluster status`
//!   finds the leader from a follower, and without a leader says whose
//!   view it prints.
//! - A node still asking to join stops at once on SIGTERM (it used to
//!   finish its up-to-a-minute join first).
//!
//! Ports are ephemeral, data lives in temp dirs, every wait has a deadline
//! and every process is killed when its guard drops.

// Real processes, sockets and fjall: not a simulation test.
#![cfg(not(madsim))]

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;
use deadbolt_client::api::*;
use deadbolt_client::Client;
use nix::sys::signal::Signal;

const STARTUP: Duration = Duration::from_secs(20);
/// Longer than any election timeout (the default is at most 600 ms).
const PAST_AN_ELECTION_TIMEOUT: Duration = Duration::from_millis(1_500);

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

/// Waits until the cluster behind `c` has a leader, `members` members and
/// a founded id (with its nonce); returns that id.
async fn founded(c: &Client, members: usize) -> String {
    eventually("a leader and a founded cluster id", STARTUP, || async {
        let status = c.cluster_status().await.ok()?;
        let ok = status.leader_id.is_some()
            && status.members.len() == members
            && status.cluster_id.contains('.');
        ok.then_some(status.cluster_id)
    })
    .await
}

async fn put(c: &Client, key: &str, value: &str) {
    let request = KvWriteRequest {
        value: value.into(),
        lock: None,
        fencing_token: None,
    };
    c.kv_put(key, &request)
        .await
        .expect("an acknowledged write");
}

async fn get(c: &Client, key: &str) -> String {
    c.kv_get(key).await.expect("read back").value
}

fn stderr_of(proc: &Proc) -> String {
    std::fs::read_to_string(&proc.stderr).unwrap_or_default()
}

/// `deadbolt cluster remove ID` until it is accepted: a leader elected a
/// moment ago has not heard from every voter yet, and refuses (409) what
/// it cannot yet tell is safe.
async fn remove(url: &str, id: u64) {
    let id = id.to_string();
    eventually(&format!("removal of node {id} accepted"), STARTUP, || {
        let (code, _, _) = cli(url, &["cluster", "remove", &id]);
        async move { (code == 0).then_some(()) }
    })
    .await;
}

/// The leader as the cluster behind `c` reports it, once there is one
/// other than `not`.
async fn leader_other_than(c: &Client, not: u64) -> u64 {
    eventually("a leader", STARTUP, || async {
        let leader = c.cluster_status().await.ok()?.leader_id?;
        (leader != not).then_some(leader)
    })
    .await
}

/// SIGTERM and wait for a clean exit.
async fn stop(proc: &mut Proc) {
    proc.signal(Signal::SIGTERM);
    let status = proc.wait_exit(Duration::from_secs(10)).await;
    assert!(status.success(), "{} stops cleanly: {status}", proc.name);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_founding_with_identical_flags_is_another_cluster() {
    let root = tempfile::tempdir().expect("tempdir");
    let first_root = root.path().join("first");
    let second_root = root.path().join("second");
    std::fs::create_dir_all(&first_root).expect("mkdir");
    std::fs::create_dir_all(&second_root).expect("mkdir");
    // The same ids and addresses both times; only the data dirs differ.
    let specs: Vec<NodeSpec> = (1..=3).map(|id| NodeSpec::new(id, &first_root)).collect();
    let flags = initial_cluster(&specs);

    // The first founding: three nodes, one write, then all stopped.
    let mut first: BTreeMap<u64, Proc> = specs
        .iter()
        .map(|s| (s.id, s.spawn(&first_root, &["--initial-cluster", &flags])))
        .collect();
    let all = client(&urls(&specs));
    let first_id = founded(&all, 3).await;
    put(&all, "founding", "first").await;
    for proc in first.values_mut() {
        stop(proc).await;
    }

    // The second founding: nodes 1 and 2 on empty data dirs, same flags.
    let second_specs: Vec<NodeSpec> = specs
        .iter()
        .map(|s| NodeSpec {
            id: s.id,
            api: s.api.clone(),
            peer: s.peer.clone(),
            data_dir: second_root.join(format!("data-{}", s.id)),
        })
        .collect();
    let mut second: BTreeMap<u64, Proc> = second_specs[..2]
        .iter()
        .map(|s| (s.id, s.spawn(&second_root, &["--initial-cluster", &flags])))
        .collect();
    let both = client(&urls(&second_specs[..2]));
    let second_id = founded(&both, 3).await;
    assert_ne!(
        first_id, second_id,
        "two foundings with identical flags must not share a cluster id"
    );
    put(&both, "founding", "second").await;

    // Node 3 of the first founding comes back on its old data dir under
    // the same flags: refused on both sides, never a member of the second.
    let stale = specs[2].spawn(&first_root, &["--initial-cluster", &flags]);
    let names_both = |text: &str| text.contains(&first_id) && text.contains(&second_id);
    eventually(
        "the stale node says it was refused, naming both ids",
        STARTUP,
        || {
            let text = stderr_of(&stale);
            async move { names_both(&text).then_some(()) }
        },
    )
    .await;
    eventually(
        "the second founding refused it, naming both ids",
        STARTUP,
        || {
            let text: String = second.values().map(stderr_of).collect();
            async move { names_both(&text).then_some(()) }
        },
    )
    .await;
    tokio::time::sleep(PAST_AN_ELECTION_TIMEOUT * 2).await;
    let status = both.cluster_status().await.expect("status");
    assert_eq!(status.cluster_id, second_id);
    assert!(
        matches!(status.leader_id, Some(1 | 2)),
        "the second founding keeps its own leader: {status:?}"
    );
    let third = status.members.iter().find(|m| m.id == 3).expect("member 3");
    assert_eq!(
        third.incarnation, None,
        "the stale data dir was never recorded"
    );
    assert_eq!(get(&both, "founding").await, "second");
    let stale_view = client(&[specs[2].url()])
        .cluster_status()
        .await
        .expect("status");
    assert_eq!(stale_view.cluster_id, first_id);
    assert_ne!(stale_view.leader_id, Some(3), "the stale node leads nobody");
    for proc in second.values_mut() {
        stop(proc).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adding_a_node_that_never_starts_keeps_the_cluster_available() {
    let root = tempfile::tempdir().expect("tempdir");
    let spec = NodeSpec::new(1, root.path());
    let _node = spec.spawn(root.path(), &[]);
    let c = client(&[spec.url()]);
    founded(&c, 1).await;
    put(&c, "k", "before").await;

    // The README's add, for a node that is not running (a typo, say).
    let (phantom_peer, phantom_api) = (free_addr(), free_addr());
    let add = [
        "cluster",
        "add",
        "--id",
        "9",
        "--peer-addr",
        &phantom_peer,
        "--api-addr",
        &phantom_api,
    ];
    let (code, out, err) = cli(&spec.url(), &add);
    assert_eq!(code, 0, "add: {out}{err}");
    tokio::time::sleep(PAST_AN_ELECTION_TIMEOUT).await;
    let status = c.cluster_status().await.expect("status");
    let phantom = status.members.iter().find(|m| m.id == 9).expect("added");
    assert!(
        !phantom.voter,
        "a node that never answered is never promoted"
    );
    assert_eq!(status.leader_id, Some(1));
    put(&c, "k", "after").await;

    let (code, out, err) = cli(&spec.url(), &["cluster", "promote", "9"]);
    assert_eq!(
        code, 1,
        "promote of a silent learner is refused: {out}{err}"
    );
    assert!(err.contains("acknowledged"), "{err}");
    let (code, _, err) = cli(&spec.url(), &["cluster", "promote", "1"]);
    assert_eq!(code, 0, "promoting a voter changes nothing: {err}");
    remove(&spec.url(), 9).await;
    let status = c.cluster_status().await.expect("status");
    assert_eq!(status.members.len(), 1);
    assert_eq!(get(&c, "k").await, "after");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removals_that_would_lose_the_quorum_are_refused() {
    let root = tempfile::tempdir().expect("tempdir");
    let specs: Vec<NodeSpec> = (1..=3).map(|id| NodeSpec::new(id, root.path())).collect();
    let flags = initial_cluster(&specs);
    let mut procs: BTreeMap<u64, Proc> = specs
        .iter()
        .map(|s| (s.id, s.spawn(root.path(), &["--initial-cluster", &flags])))
        .collect();
    let all = client(&urls(&specs));
    founded(&all, 3).await;
    let api = &specs[0].api;

    // Unknown ids: 404, kind member.
    for (method, path, body) in [
        ("DELETE", "/v1/cluster/members/7", ""),
        ("POST", "/v1/cluster/members/7/promote", ""),
        (
            "PATCH",
            "/v1/cluster/members/7",
            r#"{"api_addr": "127.0.0.1:1"}"#,
        ),
    ] {
        let (status, _, json) = http_request(api, method, path, &[], body).await;
        assert_eq!(status, 404, "{method} {path}: {json}");
        assert_eq!(json["error"]["code"], "not_found", "{json}");
        assert_eq!(json["error"]["details"]["kind"], "member", "{json}");
    }

    // Node 3 dies; the leader has not heard from it for an election
    // timeout. Removing node 2 would leave {1, 3}: one reachable voter of
    // a quorum of two.
    procs.get_mut(&3).expect("node 3").kill9();
    let leader = leader_other_than(&all, 3).await;
    tokio::time::sleep(PAST_AN_ELECTION_TIMEOUT).await;
    let leader = specs.iter().find(|s| s.id == leader).expect("a leader");
    let other = specs
        .iter()
        .find(|s| s.id != leader.id && s.id != 3)
        .expect("the other live node");
    let path = format!("/v1/cluster/members/{}", other.id);
    let (status, _, json) = http_request(&leader.api, "DELETE", &path, &[], "").await;
    assert_eq!(status, 409, "{json}");
    assert_eq!(json["error"]["code"], "invalid_membership", "{json}");
    put(&all, "still", "available").await;

    // Removing the dead node leaves two reachable voters: fine.
    remove(&leader.url(), 3).await;
    put(&all, "after", "removal").await;
    // Then the other one (one voter left, reachable), but never the last.
    remove(&leader.url(), other.id).await;
    let path = format!("/v1/cluster/members/{}", leader.id);
    let (status, _, json) = http_request(&leader.api, "DELETE", &path, &[], "").await;
    assert_eq!(status, 409, "the last voter: {json}");
    assert_eq!(json["error"]["code"], "invalid_membership", "{json}");
    let only = client(&[leader.url()]);
    put(&only, "last", "voter").await;
    assert_eq!(get(&only, "after").await, "removal");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_node_exits_and_never_starts_on_its_data_dir_again() {
    let root = tempfile::tempdir().expect("tempdir");
    let specs: Vec<NodeSpec> = (1..=3).map(|id| NodeSpec::new(id, root.path())).collect();
    let flags = initial_cluster(&specs);
    let mut procs: BTreeMap<u64, Proc> = specs
        .iter()
        .map(|s| (s.id, s.spawn(root.path(), &["--initial-cluster", &flags])))
        .collect();
    let all = client(&urls(&specs));
    let cluster_id = founded(&all, 3).await;
    let removed_line = format!("removed from cluster {cluster_id}");

    // Node 2 is stopped, removed while down, then restarted on its data
    // dir: a peer's answer tells it.
    stop(procs.get_mut(&2).expect("node 2")).await;
    remove(&specs[0].url(), 2).await;
    let mut again = specs[1].spawn(root.path(), &["--initial-cluster", &flags]);
    let status = again.wait_exit(STARTUP).await;
    assert_eq!(status.code(), Some(1), "{}", again.logs());
    assert!(
        stderr_of(&again).contains(&removed_line),
        "{}",
        again.logs()
    );

    // Node 3 is removed while it runs: it learns it and exits 1.
    put(&all, "k", "v").await;
    remove(&specs[0].url(), 3).await;
    let third = procs.get_mut(&3).expect("node 3");
    let status = third.wait_exit(STARTUP).await;
    assert_eq!(status.code(), Some(1), "{}", third.logs());
    assert!(stderr_of(third).contains(&removed_line), "{}", third.logs());

    // Neither starts on its data dir again.
    for spec in &specs[1..] {
        let mut refused = spec.spawn(root.path(), &["--initial-cluster", &flags]);
        let status = refused.wait_exit(Duration::from_secs(10)).await;
        assert_eq!(status.code(), Some(1), "{}", refused.logs());
        assert!(
            stderr_of(&refused).contains("was removed from cluster"),
            "{}",
            refused.logs()
        );
    }
    let one = client(&[specs[0].url()]);
    assert_eq!(get(&one, "k").await, "v");
    let status = one.cluster_status().await.expect("status");
    assert_eq!(status.members.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_restarted_on_another_peer_port_is_updated_in_place() {
    let root = tempfile::tempdir().expect("tempdir");
    let specs: Vec<NodeSpec> = (1..=3).map(|id| NodeSpec::new(id, root.path())).collect();
    let flags = initial_cluster(&specs);
    let mut procs: BTreeMap<u64, Proc> = specs
        .iter()
        .map(|s| (s.id, s.spawn(root.path(), &["--initial-cluster", &flags])))
        .collect();
    let all = client(&urls(&specs));
    founded(&all, 3).await;

    // Node 3 comes back listening elsewhere (new flags, same data dir).
    stop(procs.get_mut(&3).expect("node 3")).await;
    let moved = NodeSpec {
        id: 3,
        api: free_addr(),
        peer: free_addr(),
        data_dir: specs[2].data_dir.clone(),
    };
    procs.insert(3, moved.spawn(root.path(), &["--initial-cluster", &flags]));
    let update = [
        "cluster",
        "update",
        "3",
        "--peer-addr",
        &moved.peer,
        "--api-addr",
        &moved.api,
    ];
    let (code, out, err) = cli(&specs[0].url(), &update);
    assert_eq!(code, 0, "{out}{err}");
    put(&all, "k", "written after the move").await;
    let written = all.cluster_status().await.expect("status").commit_index;
    // The moved node catches up through its new address.
    let third = client(&[moved.url()]);
    eventually("the moved node catches up", STARTUP, || async {
        let status = third.cluster_status().await.ok()?;
        let listed = status.members.iter().find(|m| m.id == 3)?;
        let updated = listed.peer_addr == moved.peer && listed.api_addr == moved.api;
        (updated && status.leader_id.is_some() && status.commit_index >= written).then_some(())
    })
    .await;
    let status = all.cluster_status().await.expect("status");
    assert!(status.members.iter().all(|m| m.voter), "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_the_leader_hands_over_and_the_old_leader_exits() {
    let root = tempfile::tempdir().expect("tempdir");
    let specs: Vec<NodeSpec> = (1..=3).map(|id| NodeSpec::new(id, root.path())).collect();
    let flags = initial_cluster(&specs);
    let mut procs: BTreeMap<u64, Proc> = specs
        .iter()
        .map(|s| (s.id, s.spawn(root.path(), &["--initial-cluster", &flags])))
        .collect();
    let all = client(&urls(&specs));
    let cluster_id = founded(&all, 3).await;
    put(&all, "k", "before").await;
    let leader = leader_other_than(&all, 0).await;
    remove(&specs[0].url(), leader).await;

    let old = procs.get_mut(&leader).expect("the old leader");
    let status = old.wait_exit(STARTUP).await;
    assert_eq!(status.code(), Some(1), "{}", old.logs());
    let line = format!("removed from cluster {cluster_id}");
    assert!(stderr_of(old).contains(&line), "{}", old.logs());
    let rest: Vec<String> = specs
        .iter()
        .filter(|s| s.id != leader)
        .map(NodeSpec::url)
        .collect();
    let rest = client(&rest);
    let new_leader = leader_other_than(&rest, leader).await;
    assert_ne!(new_leader, leader);
    put(&rest, "k", "after").await;
    assert_eq!(get(&rest, "k").await, "after");
    let status = rest.cluster_status().await.expect("status");
    assert_eq!(status.members.len(), 2, "{status:?}");
}

/// `GET /v1/cluster` of the node at `api`, as raw JSON (so that missing
/// fields show, and this file compiled before the health view existed).
async fn cluster_json(api: &str) -> serde_json::Value {
    let (status, _, json) = http_request(api, "GET", "/v1/cluster", &[], "").await;
    assert_eq!(status, 200, "{json}");
    json
}

/// Member `id` of a `/v1/cluster` answer.
fn member_json(view: &serde_json::Value, id: u64) -> serde_json::Value {
    view["members"]
        .as_array()
        .and_then(|ms| ms.iter().find(|m| m["id"] == id))
        .cloned()
        .unwrap_or_else(|| panic!("member {id} in {view}"))
}

/// Issue 14 item 4: the leader's `GET /v1/cluster` shows which member is
/// down (unreachable, last contact growing, lag growing) and whether a
/// quorum is up; other nodes answer null there; `cluster status` asks the
/// leader wherever it is pointed, and says whose view it prints when no
/// leader is left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leader_shows_which_node_is_down_and_whether_the_quorum_is_up() {
    let root = tempfile::tempdir().expect("tempdir");
    let specs: Vec<NodeSpec> = (1..=3).map(|id| NodeSpec::new(id, root.path())).collect();
    let flags = initial_cluster(&specs);
    let mut procs: BTreeMap<u64, Proc> = specs
        .iter()
        .map(|s| (s.id, s.spawn(root.path(), &["--initial-cluster", &flags])))
        .collect();
    let all = client(&urls(&specs));
    founded(&all, 3).await;
    let leader_id = leader_other_than(&all, 0).await;
    let spec = |id: u64| specs.iter().find(|s| s.id == id).expect("a node");
    let leader = spec(leader_id);
    let followers: Vec<u64> = specs
        .iter()
        .map(|s| s.id)
        .filter(|&id| id != leader_id)
        .collect();
    let (down, survivor_follower) = (followers[0], followers[1]);

    // All up: everyone reachable, the quorum whole (and every API address
    // published, as `cluster status` follows them).
    let view = eventually("every member reachable", STARTUP, || async {
        let view = cluster_json(&leader.api).await;
        let whole = view["quorum"]["reachable_voters"] == 3;
        let published = (1..=3).all(|id| member_json(&view, id)["api_addr"] != "");
        (whole && published).then_some(view)
    })
    .await;
    assert_eq!(
        view["quorum"],
        serde_json::json!({"voters": 3, "reachable_voters": 3, "ok": true})
    );
    for id in 1..=3 {
        let m = member_json(&view, id);
        assert_eq!(m["reachable"], true, "{view}");
        assert!(m["last_contact_ms"].is_u64(), "{view}");
        assert!(m["lag"].is_u64(), "{view}");
    }
    // The follower `cluster status` will be pointed at knows where the
    // leader's API is.
    eventually("the leader's API address applied", STARTUP, || async {
        let view = cluster_json(&spec(survivor_follower).api).await;
        (member_json(&view, leader_id)["api_addr"] == leader.api.as_str()).then_some(())
    })
    .await;
    // A follower answers its own view: the fields are there, and null.
    let view = cluster_json(&spec(down).api).await;
    assert!(view["quorum"].is_null(), "{view}");
    assert!(view.get("quorum").is_some(), "present: {view}");
    for id in 1..=3 {
        let m = member_json(&view, id);
        for field in ["reachable", "last_contact_ms", "lag"] {
            assert_eq!(
                m.get(field),
                Some(&serde_json::Value::Null),
                "{field}: {view}"
            );
        }
    }

    // One follower dies: unreachable, its last contact and lag grow, and
    // the quorum holds.
    procs.get_mut(&down).expect("a follower").kill9();
    put(&all, "while-down", "1").await;
    let first = eventually("the dead node unreachable", STARTUP, || async {
        let view = cluster_json(&leader.api).await;
        (member_json(&view, down)["reachable"] == false).then_some(view)
    })
    .await;
    let dead = member_json(&first, down);
    let (contact, lag) = (
        dead["last_contact_ms"].as_u64().expect("heard from before"),
        dead["lag"].as_u64().expect("a lag"),
    );
    assert!(contact > 0 && lag > 0, "{first}");
    assert_eq!(
        first["quorum"],
        serde_json::json!({"voters": 3, "reachable_voters": 2, "ok": true})
    );
    assert_eq!(member_json(&first, survivor_follower)["reachable"], true);
    put(&all, "while-down", "2").await;
    put(&all, "while-down", "3").await;
    let later = eventually("last contact and lag grown", STARTUP, || async {
        let view = cluster_json(&leader.api).await;
        let dead = member_json(&view, down);
        let grown = dead["last_contact_ms"].as_u64()? > contact && dead["lag"].as_u64()? > lag;
        grown.then_some(view)
    })
    .await;
    assert_eq!(later["quorum"]["ok"], true, "{later}");

    // `cluster status`, pointed at the other follower only, finds the
    // leader and prints its table; --json prints the leader's answer.
    let (code, out, err) = cli(&spec(survivor_follower).url(), &["cluster", "status"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains(&format!("leader node {leader_id};")), "{out}");
    assert!(
        !out.contains("this is node"),
        "the leader's own view: {out}"
    );
    let row = out
        .lines()
        .find(|l| l.split_whitespace().next() == Some(&down.to_string()))
        .unwrap_or_else(|| panic!("a row for node {down}: {out}"));
    assert!(row.contains(" NO "), "{row}");
    assert!(
        out.contains("quorum: ok (2 of 3 voters reachable, 2 needed)"),
        "{out}"
    );
    let (code, out, err) = cli(
        &spec(survivor_follower).url(),
        &["cluster", "status", "--json"],
    );
    assert_eq!(code, 0, "{out}{err}");
    let json: serde_json::Value = serde_json::from_str(out.trim()).expect("JSON");
    assert_eq!(json["node_id"], leader_id, "{json}");
    assert_eq!(json["quorum"]["ok"], true, "{json}");

    // A second follower dies: the quorum is lost. The leader reports it
    // until check-quorum makes it step down; then it answers its own view,
    // with nulls.
    procs
        .get_mut(&survivor_follower)
        .expect("the other follower")
        .kill9();
    eventually("the quorum lost, or no leader left", STARTUP, || async {
        let view = cluster_json(&leader.api).await;
        let lost = view["quorum"]["ok"] == false && view["quorum"]["reachable_voters"] == 1;
        let stepped_down = view["leader_id"] != leader_id && view["quorum"].is_null();
        (lost || stepped_down).then_some(())
    })
    .await;
    eventually("the last node steps down", STARTUP, || async {
        let view = cluster_json(&leader.api).await;
        (view["leader_id"] != leader_id).then_some(())
    })
    .await;
    let view = cluster_json(&leader.api).await;
    assert!(view["quorum"].is_null(), "{view}");
    assert!(member_json(&view, down)["reachable"].is_null(), "{view}");
    let (code, out, err) = cli(&leader.url(), &["cluster", "status"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains(&format!("this is node {leader_id}'s view")),
        "{out}"
    );
    assert!(out.contains("quorum: unknown"), "{out}");
}

/// A node still asking to join (here: a cluster without a quorum, so the
/// join keeps being retried for up to a minute) stops at once on SIGTERM
/// instead of finishing its start-up first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_joining_node_stops_at_once_on_sigterm() {
    let root = tempfile::tempdir().expect("tempdir");
    let specs: Vec<NodeSpec> = (1..=3).map(|id| NodeSpec::new(id, root.path())).collect();
    // Only node 1 of three founders runs: no leader, ever.
    let _lonely = specs[0].spawn(
        root.path(),
        &["--initial-cluster", &initial_cluster(&specs)],
    );
    let one = client(&[specs[0].url()]);
    eventually("node 1 answers", STARTUP, || async {
        one.cluster_status().await.ok()
    })
    .await;
    let joiner = NodeSpec::new(4, root.path());
    let mut joining = joiner.spawn(root.path(), &["--join", &specs[0].url()]);
    eventually("the joiner asks", STARTUP, || async {
        stderr_of(&joining)
            .contains("recovered from storage")
            .then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    joining.signal(Signal::SIGTERM);
    let status = joining.wait_exit(Duration::from_secs(5)).await;
    assert!(status.success(), "{status}\n{}", joining.logs());
    assert!(stderr_of(&joining).contains("stopped during start-up"));
}
