//! Member identity with real `deadbolt` processes on loopback (issue 13,
//! bug 2): a voter whose data dir was wiped and that comes back under the
//! same flags is refused (a founder by its fellow founders, a joiner by the
//! cluster it asks), so it can never vote or acknowledge as if it
//! remembered what it promised; a join retried by the same data dir is
//! still accepted, and an operator's add of an id that is already a voter
//! is refused.
//!
//! Ports are ephemeral, data lives in temp dirs, every wait has a deadline
//! and every process is killed when its guard drops.

// Real processes, sockets and fjall: not a simulation test.
#![cfg(not(madsim))]

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use common::*;
use deadbolt_client::api::*;
use deadbolt_client::Client;

const STARTUP: Duration = Duration::from_secs(20);

/// What a wiped disk leaves: nothing.
fn wipe(spec: &NodeSpec) {
    std::fs::remove_dir_all(&spec.data_dir).expect("wipe the data dir");
}

/// Three founders, each serving, and every member's incarnation recorded
/// in the membership the cluster agreed on.
async fn three_recorded_founders(root: &Path) -> (Vec<NodeSpec>, BTreeMap<u64, Proc>, String) {
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
    let all = client(&specs.iter().map(NodeSpec::url).collect::<Vec<_>>());
    eventually("every founder's incarnation recorded", STARTUP, || async {
        let status = all.cluster_status().await.ok()?;
        let recorded = status.members.iter().all(|m| m.incarnation.is_some());
        (status.leader_id.is_some() && status.members.len() == 3 && recorded).then_some(())
    })
    .await;
    (specs, procs, initial)
}

/// A write acknowledged by the cluster, to read back at the end.
async fn acknowledged_write(c: &Client) {
    c.kv_put(
        "acknowledged",
        &KvWriteRequest {
            value: "before the wipe".into(),
            lock: None,
            fencing_token: None,
        },
    )
    .await
    .expect("a write the cluster acknowledged");
}

async fn still_there(c: &Client) {
    let got = c.kv_get("acknowledged").await.expect("read back");
    assert_eq!(got.value, "before the wipe");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wiped_founder_is_refused_while_its_peers_hold_the_cluster() {
    let root = tempfile::tempdir().expect("tempdir");
    let (specs, mut procs, initial) = three_recorded_founders(root.path()).await;
    let all = client(&specs.iter().map(NodeSpec::url).collect::<Vec<_>>());
    acknowledged_write(&all).await;

    // Node 2 loses its disk and is started again with the very same flags.
    procs.get_mut(&2).expect("node 2").kill9();
    wipe(&specs[1]);
    let mut again = specs[1].spawn(root.path(), &["--initial-cluster", &initial]);
    let status = again.wait_exit(STARTUP).await;
    let logs = again.logs();
    assert!(
        !status.success(),
        "the wiped founder must not start\n{logs}"
    );
    for needle in ["already holds this cluster", "cluster remove 2", "--join"] {
        assert!(logs.contains(needle), "missing {needle:?}\n{logs}");
    }

    // The others never stopped serving, and nothing was lost.
    let others = client(&[specs[0].url(), specs[2].url()]);
    still_there(&others).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_under_a_voters_id_is_refused_and_a_retried_join_accepted() {
    let root = tempfile::tempdir().expect("tempdir");
    let (specs, mut procs, _) = three_recorded_founders(root.path()).await;
    let founders: Vec<String> = specs.iter().map(NodeSpec::url).collect();
    let all = client(&founders);
    acknowledged_write(&all).await;

    // Node 4 joins and becomes a voter with its incarnation recorded.
    let fourth = NodeSpec::new(4, root.path());
    procs.insert(4, fourth.spawn(root.path(), &["--join", &founders[0]]));
    let recorded = eventually(
        &format!("node 4 a recorded voter\n{}", procs[&4].logs()),
        STARTUP,
        || async {
            let status = all.cluster_status().await.ok()?;
            let four = status.members.iter().find(|m| m.id == 4)?;
            four.voter.then_some(four.incarnation).flatten()
        },
    )
    .await;

    // The same data dir asking again (an answer lost on the way): accepted.
    let retry = AddMemberRequest {
        id: 4,
        peer_addr: fourth.peer.clone(),
        api_addr: fourth.api.clone(),
        incarnation: Some(recorded),
        cluster_id: None,
    };
    all.add_member(&retry).await.expect("a retried join");

    // An operator adding an id that is already a voter: 409.
    let (status, _, body) = http_request(
        &specs[0].api,
        "POST",
        "/v1/cluster/members",
        &[],
        &format!(
            r#"{{"id": 2, "peer_addr": "{}", "api_addr": "{}"}}"#,
            specs[1].peer, specs[1].api
        ),
    )
    .await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], "invalid_membership", "{body}");

    // Node 4 loses its disk and asks to join again under its id: refused,
    // and it says why.
    procs.get_mut(&4).expect("node 4").kill9();
    wipe(&fourth);
    let mut again = fourth.spawn(root.path(), &["--join", &founders[0]]);
    let exit = again.wait_exit(STARTUP).await;
    let logs = again.logs();
    assert!(!exit.success(), "the wiped joiner must not start\n{logs}");
    for needle in ["refused node 4", "already a member", "remove it first"] {
        assert!(logs.contains(needle), "missing {needle:?}\n{logs}");
    }
    still_there(&all).await;
}
