//! What a node says about itself: the [`NodeStatus`] a handle asks for, the
//! metrics gauges and fsync histograms sampled after every turn of the Raft
//! actor, and the leader's API address published to every handle.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use deadbolt_core::api::limits::IDEMPOTENCY_WINDOW_MS;
use deadbolt_core::raft::{self, LogIndex, Membership, NodeId, Role, Term};

use super::handle::{LeaderHint, MemberView, NodeStatus};
use crate::metrics::NodeMetrics;
use crate::storage::StorageStats;

/// This node's own view, answered without a quorum. `ready` (what `/ready`
/// answers): a working node that knows a leader and has applied what it
/// knows committed. `health` is the leader's health view (`None` on other
/// nodes: only the leader hears from every member).
pub(super) fn node_status(
    id: NodeId,
    cluster_id: &str,
    status: raft::Status,
    health: Option<raft::ClusterHealth>,
    storage_failed: bool,
) -> NodeStatus {
    let members = members_view(
        &status.membership,
        &status.progress,
        health.as_ref(),
        status.last_index,
        id,
        status.role,
    );
    let ready =
        !storage_failed && status.leader.is_some() && status.applied_index >= status.commit_index;
    NodeStatus {
        id,
        cluster_id: cluster_id.to_string(),
        role: status.role,
        term: status.term,
        leader: status.leader,
        commit_index: status.commit_index,
        applied_index: status.applied_index,
        members,
        quorum: health.map(|h| h.quorum),
        ready,
    }
}

/// Every member; match indexes are known on the leader only.
fn members_view(
    membership: &Membership,
    progress: &BTreeMap<NodeId, raft::ReplicationProgress>,
    health: Option<&raft::ClusterHealth>,
    last_index: LogIndex,
    self_id: NodeId,
    role: Role,
) -> Vec<MemberView> {
    membership
        .members
        .iter()
        .map(|(id, m)| MemberView {
            id: *id,
            peer_addr: m.peer_addr.clone(),
            api_addr: m.api_addr.clone(),
            voter: m.voter,
            match_index: if role != Role::Leader {
                None
            } else if *id == self_id {
                Some(last_index)
            } else {
                progress.get(id).map(|p| p.match_index)
            },
            incarnation: membership.incarnation(*id),
            health: health.and_then(|h| h.members.get(id).copied()),
        })
        .collect()
}

/// The actor's gauges at the end of a turn.
pub(super) struct Gauges {
    pub(super) term: Term,
    pub(super) role: Role,
    /// A follower without a vote.
    pub(super) learner: bool,
    pub(super) commit_index: LogIndex,
    pub(super) applied_index: LogIndex,
    pub(super) sessions: usize,
    pub(super) locks: usize,
    pub(super) waiters: usize,
    pub(super) proposals_in_flight: usize,
    pub(super) peer_messages_dropped: u64,
    /// How long idempotency outcomes are kept now (see
    /// `LockStateMachine::idempotency_window_ms`; `None`: the full window).
    pub(super) idempotency_window_ms: Option<u64>,
}

/// Writes gauges and the storage actor's sync totals into [`NodeMetrics`].
pub(super) struct MetricsSampler {
    metrics: Arc<NodeMetrics>,
    /// The storage totals already turned into histogram observations.
    last_stats: StorageStats,
}

impl MetricsSampler {
    pub(super) fn new(metrics: Arc<NodeMetrics>) -> Self {
        Self {
            metrics,
            last_stats: StorageStats::default(),
        }
    }

    pub(super) fn sample(&mut self, gauges: &Gauges, storage: StorageStats) {
        let m = &self.metrics;
        m.term.store(gauges.term, Ordering::Relaxed);
        m.role
            .store(role_code(gauges.role, gauges.learner), Ordering::Relaxed);
        m.commit_index.store(gauges.commit_index, Ordering::Relaxed);
        m.applied_index
            .store(gauges.applied_index, Ordering::Relaxed);
        m.sessions_active
            .store(gauges.sessions as u64, Ordering::Relaxed);
        m.locks_held.store(gauges.locks as u64, Ordering::Relaxed);
        m.waiters.store(gauges.waiters as u64, Ordering::Relaxed);
        m.proposals_in_flight
            .store(gauges.proposals_in_flight as i64, Ordering::Relaxed);
        m.peer_messages_dropped
            .store(gauges.peer_messages_dropped, Ordering::Relaxed);
        m.idempotency_window_ms.store(
            gauges
                .idempotency_window_ms
                .unwrap_or(IDEMPOTENCY_WINDOW_MS),
            Ordering::Relaxed,
        );
        self.record_syncs(storage);
    }

    /// The storage actor keeps totals; each new sync becomes one histogram
    /// observation, the new totals spread evenly over them.
    fn record_syncs(&mut self, stats: StorageStats) {
        let syncs = stats.syncs.saturating_sub(self.last_stats.syncs);
        if syncs == 0 {
            return;
        }
        let latency_us = stats
            .sync_latency_us_total
            .saturating_sub(self.last_stats.sync_latency_us_total);
        let entries = stats
            .entries_synced
            .saturating_sub(self.last_stats.entries_synced);
        for _ in 0..syncs {
            self.metrics
                .fsync_seconds
                .observe(latency_us as f64 / syncs as f64 / 1e6);
            self.metrics
                .entries_per_fsync
                .observe(entries as f64 / syncs as f64);
        }
        self.last_stats = stats;
    }
}

/// The `role` gauge: 0 follower, 1 candidate, 2 leader, 3 learner.
fn role_code(role: Role, learner: bool) -> u64 {
    match role {
        Role::Leader => 2,
        Role::Candidate | Role::PreCandidate => 1,
        Role::Follower if learner => 3,
        Role::Follower => 0,
    }
}

/// The leader's API address as this node knows it (`None` while unknown or
/// not yet published).
pub(super) fn leader_api_addr<'a>(
    self_id: NodeId,
    self_api_addr: &'a str,
    leader: Option<NodeId>,
    membership: &'a Membership,
) -> Option<&'a str> {
    match leader {
        Some(id) if id == self_id => Some(self_api_addr),
        Some(id) => membership.members.get(&id).map(|m| m.api_addr.as_str()),
        None => None,
    }
    .filter(|addr| !addr.is_empty())
}

/// Hands the leader's API address to every handle, taking the handles'
/// lock only when it changed.
pub(super) struct LeaderHintPublisher {
    hint: LeaderHint,
    /// What `hint` was last set to.
    published: Option<Arc<str>>,
}

impl LeaderHintPublisher {
    pub(super) fn new(hint: LeaderHint) -> Self {
        Self {
            hint,
            published: None,
        }
    }

    pub(super) fn publish(&mut self, api_addr: Option<&str>) {
        if api_addr == self.published.as_deref() {
            return;
        }
        self.published = api_addr.map(Arc::from);
        self.hint.set(self.published.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use deadbolt_core::raft::{Member, ProgressState, ReplicationProgress};

    fn membership() -> Membership {
        let member = |api: &str| Member {
            voter: true,
            peer_addr: "p".into(),
            api_addr: api.into(),
        };
        Membership {
            members: BTreeMap::from([(1, member("api-1")), (2, member(""))]),
            incarnations: BTreeMap::new(),
        }
    }

    fn raft_status(role: Role, leader: Option<NodeId>, applied: LogIndex) -> raft::Status {
        let progress = BTreeMap::from([(
            2,
            ReplicationProgress {
                voter: true,
                match_index: 7,
                next_index: 8,
                state: ProgressState::Replicate,
            },
        )]);
        raft::Status {
            id: 1,
            role,
            term: 3,
            leader,
            commit_index: 9,
            applied_index: applied,
            persisted_index: 10,
            last_index: 10,
            snapshot_index: 0,
            membership: membership(),
            progress,
        }
    }

    #[test]
    fn ready_needs_a_leader_the_backlog_applied_and_working_storage() {
        let status = |leader, applied, failed| {
            node_status(
                1,
                "c",
                raft_status(Role::Follower, leader, applied),
                None,
                failed,
            )
            .ready
        };
        assert!(status(Some(2), 9, false));
        assert!(!status(None, 9, false), "no leader");
        assert!(!status(Some(2), 8, false), "behind its commit index");
        assert!(!status(Some(2), 9, true), "storage failed");
    }

    #[test]
    fn match_indexes_are_shown_on_the_leader_only() {
        let on_leader = node_status(1, "c", raft_status(Role::Leader, Some(1), 9), None, false);
        let matches: Vec<_> = on_leader.members.iter().map(|m| m.match_index).collect();
        assert_eq!(matches, [Some(10), Some(7)]);
        let on_follower = node_status(1, "c", raft_status(Role::Follower, Some(2), 9), None, false);
        assert!(on_follower.members.iter().all(|m| m.match_index.is_none()));
    }

    #[test]
    fn the_health_view_is_passed_through_per_member() {
        let member = |reachable, lag| raft::MemberHealth {
            reachable,
            last_contact_ms: Some(if reachable { 0 } else { 900 }),
            lag,
        };
        let quorum = raft::QuorumHealth {
            voters: 2,
            reachable_voters: 1,
            ok: false,
        };
        let health = raft::ClusterHealth {
            members: BTreeMap::from([(1, member(true, 0)), (2, member(false, 3))]),
            quorum,
        };
        let status = node_status(
            1,
            "c",
            raft_status(Role::Leader, Some(1), 9),
            Some(health),
            false,
        );
        let got: Vec<_> = status.members.iter().map(|m| m.health).collect();
        assert_eq!(got, [Some(member(true, 0)), Some(member(false, 3))]);
        assert_eq!(status.quorum, Some(quorum));
        let on_follower = node_status(1, "c", raft_status(Role::Follower, Some(2), 9), None, false);
        assert!(on_follower.members.iter().all(|m| m.health.is_none()));
        assert_eq!(on_follower.quorum, None);
    }

    #[test]
    fn new_syncs_become_histogram_observations() {
        let metrics = Arc::new(NodeMetrics::default());
        let mut sampler = MetricsSampler::new(metrics.clone());
        let stats = |syncs, entries_synced, sync_latency_us_total| StorageStats {
            syncs,
            entries_synced,
            sync_latency_us_total,
            ..StorageStats::default()
        };
        sampler.record_syncs(stats(2, 10, 2_000));
        sampler.record_syncs(stats(2, 10, 2_000));
        assert_eq!(metrics.fsync_seconds.count(), 2);
        assert_eq!(metrics.entries_per_fsync.sum(), 10.0);
        sampler.record_syncs(stats(3, 13, 3_000));
        assert_eq!(metrics.entries_per_fsync.count(), 3);
        assert_eq!(metrics.entries_per_fsync.sum(), 13.0);
        assert!((metrics.fsync_seconds.sum() - 0.003).abs() < 1e-9);
    }

    #[test]
    fn the_leader_hint_names_a_published_api_address() {
        let m = membership();
        assert_eq!(leader_api_addr(2, "me", Some(2), &m), Some("me"));
        assert_eq!(leader_api_addr(2, "me", Some(1), &m), Some("api-1"));
        assert_eq!(leader_api_addr(1, "me", Some(2), &m), None, "unpublished");
        assert_eq!(leader_api_addr(1, "me", None, &m), None);
        let hint = LeaderHint::default();
        let mut publisher = LeaderHintPublisher::new(hint.clone());
        publisher.publish(Some("api-1"));
        assert_eq!(hint.get().as_deref(), Some("api-1"));
        publisher.publish(None);
        assert_eq!(hint.get(), None);
    }

    #[test]
    fn role_gauge_tells_learners_apart() {
        assert_eq!(role_code(Role::Leader, false), 2);
        assert_eq!(role_code(Role::PreCandidate, false), 1);
        assert_eq!(role_code(Role::Follower, false), 0);
        assert_eq!(role_code(Role::Follower, true), 3);
    }
}
