//! Another founding of the same founder list, for the run whose schedule
//! swaps its data dir in (`FaultAction::SwapForeignDisk`, issue 14 item 6):
//! before the run proper, the hosts found a cluster on disks of their own
//! (same addresses, same cluster tag, same data dir incarnations; only the
//! founding nonce differs), commit its nonce, and lose power at once (the
//! harshest moment: each node knew the nonce committed only just before).
//! Those disks are kept aside; the run then founds the cluster under test on blank disks.
//! The other founding's Raft events go to a history of their own (each
//! host's founding label), which the Raft checker judges alone.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::time::Duration;

use deadbolt_runtime::storage::{CrashFault, SimDisk};
use deadbolt_runtime::SplitMix64;
use madsim::runtime::Handle;

use super::host::{Host, THIS_FOUNDING};
use super::recorder::Shared;
use crate::history::{LogIndex, NodeId, NodeObservation};

/// Longest the other founding may take to commit its nonce everywhere.
const FOUNDING_MAX: Duration = Duration::from_secs(5);
/// How often the founding's progress is looked at.
const POLL: Duration = Duration::from_millis(50);

/// What the other founding left: each node's data dir, and the highest
/// commit index any of its nodes reached.
pub(crate) struct OtherFounding {
    pub(crate) disks: BTreeMap<NodeId, SimDisk>,
    pub(crate) commit_index: LogIndex,
}

/// Lets `hosts` (started on disks labelled as the other founding) found
/// their cluster until every node knows the founding nonce, then powers
/// them off, keeps their disks and starts every host again on a blank disk
/// of this founding. Before the fix of seeds 567 and 474 a node's disk did
/// not yet store the commit index covering its nonce at that moment: it
/// claimed no founding, and the cluster under test took it in.
pub(crate) async fn found_other_cluster(hosts: &[Host], rec: &Shared) -> OtherFounding {
    let deadline = tokio::time::Instant::now() + FOUNDING_MAX;
    while tokio::time::Instant::now() < deadline && !every_node_knows_its_nonce(hosts) {
        tokio::time::sleep(POLL).await;
    }
    rec.lock().harness(format!(
        "the other founding: {} (its disks are kept aside)",
        cluster_ids(hosts).join(", ")
    ));
    let handle = Handle::current();
    // The crash mode draws nothing for LoseUnsynced.
    let mut no_draws = SplitMix64::new(0);
    let mut disks = BTreeMap::new();
    for host in hosts {
        handle.kill(host.madsim_id);
        let disk = host.disk();
        disk.crash(CrashFault::LoseUnsynced, &mut no_draws);
        disks.insert(host.id, disk);
        *host.disk.lock().unwrap_or_else(|e| e.into_inner()) = SimDisk::new();
        host.founding.store(THIS_FOUNDING, Ordering::SeqCst);
        let mut c = host.current.lock().unwrap_or_else(|e| e.into_inner());
        c.handle = None;
        c.graceful = None;
    }
    for host in hosts {
        handle.restart(host.madsim_id);
    }
    let commit_index = rec
        .lock()
        .foreign_raft
        .events
        .iter()
        .filter_map(|r| match r.event {
            NodeObservation::CommitIndex { index, .. } => Some(index),
            _ => None,
        })
        .max()
        .unwrap_or(0);
    OtherFounding {
        disks,
        commit_index,
    }
}

fn cluster_ids(hosts: &[Host]) -> Vec<String> {
    hosts
        .iter()
        .filter_map(|h| {
            h.node_handle()
                .map(|n| format!("n{}: {}", h.id, n.cluster_id()))
        })
        .collect()
}

/// Whether every host runs a node whose cluster id carries the committed
/// founding nonce (`<tag>.<nonce>`).
fn every_node_knows_its_nonce(hosts: &[Host]) -> bool {
    hosts.iter().all(|h| {
        h.node_handle()
            .is_some_and(|n| n.cluster_id().contains('.'))
    })
}
