//! Counters, gauges and histograms a node keeps about itself, and their
//! Prometheus text rendering. Lock-free atomics: the actors update them on
//! the hot path; `/metrics` reads them whenever it likes.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

/// A histogram with fixed upper bounds (Prometheus `le` buckets).
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    /// Non-cumulative counts per bucket, plus one for +Inf.
    counts: Vec<AtomicU64>,
    sum_micros: AtomicU64,
    count: AtomicU64,
}

/// Latency buckets in seconds: 100 µs .. 10 s.
pub const LATENCY_BUCKETS_SECONDS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];
/// Batch-size buckets (entries per fsync).
pub const BATCH_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0];

impl Histogram {
    pub fn new(bounds: &'static [f64]) -> Self {
        assert!(
            bounds.windows(2).all(|w| w[0] < w[1]),
            "histogram bounds must increase"
        );
        Histogram {
            bounds,
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_micros: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }

    /// Records one observation (seconds for latencies, a count for sizes).
    pub fn observe(&self, value: f64) {
        let bucket = self
            .bounds
            .iter()
            .position(|bound| value <= *bound)
            .unwrap_or(self.bounds.len());
        self.counts[bucket].fetch_add(1, Ordering::Relaxed);
        self.sum_micros
            .fetch_add((value * 1e6).max(0.0) as u64, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// Sum of the observations (microsecond resolution).
    pub fn sum(&self) -> f64 {
        self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6
    }

    /// Appends the `_bucket`, `_sum` and `_count` lines; `labels` is either
    /// empty or `key="value",...` without braces.
    pub fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        let mut cumulative = 0;
        for (i, bound) in self.bounds.iter().enumerate() {
            cumulative += self.counts[i].load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels}{sep}le=\"{bound}\"}} {cumulative}"
            );
        }
        cumulative += self.counts[self.bounds.len()].load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {cumulative}"
        );
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let braces = |l: &str| {
            if l.is_empty() {
                String::new()
            } else {
                format!("{{{l}}}")
            }
        };
        let _ = writeln!(out, "{name}_sum{} {sum}", braces(labels));
        let _ = writeln!(out, "{name}_count{} {cumulative}", braces(labels));
    }
}

/// What a node measures about itself.
#[derive(Debug)]
pub struct NodeMetrics {
    pub term: AtomicU64,
    /// 0 follower, 1 candidate, 2 leader, 3 learner (see `render`).
    pub role: AtomicU64,
    pub commit_index: AtomicU64,
    pub applied_index: AtomicU64,
    pub proposals_in_flight: AtomicI64,
    pub fsync_seconds: Histogram,
    pub entries_per_fsync: Histogram,
    pub sessions_active: AtomicU64,
    pub locks_held: AtomicU64,
    pub waiters: AtomicU64,
    /// Grants made at once on acquire.
    pub grants: AtomicU64,
    /// Grants made to a queued waiter when the lock was handed over.
    pub handoffs: AtomicU64,
    pub session_expiries: AtomicU64,
    pub leader_changes: AtomicU64,
    pub peer_messages_dropped: AtomicU64,
    /// How long idempotency outcomes are kept now: the age of the last one
    /// the bound forced out lately, else the contract's window.
    pub idempotency_window_ms: AtomicU64,
    /// Snapshots this node took of its own state (log compactions).
    pub snapshots_taken: AtomicU64,
    /// Snapshots received from a leader and installed.
    pub snapshots_installed: AtomicU64,
}

impl Default for NodeMetrics {
    fn default() -> Self {
        NodeMetrics {
            term: AtomicU64::new(0),
            role: AtomicU64::new(0),
            commit_index: AtomicU64::new(0),
            applied_index: AtomicU64::new(0),
            proposals_in_flight: AtomicI64::new(0),
            fsync_seconds: Histogram::new(LATENCY_BUCKETS_SECONDS),
            entries_per_fsync: Histogram::new(BATCH_BUCKETS),
            sessions_active: AtomicU64::new(0),
            locks_held: AtomicU64::new(0),
            waiters: AtomicU64::new(0),
            grants: AtomicU64::new(0),
            handoffs: AtomicU64::new(0),
            session_expiries: AtomicU64::new(0),
            leader_changes: AtomicU64::new(0),
            peer_messages_dropped: AtomicU64::new(0),
            idempotency_window_ms: AtomicU64::new(0),
            snapshots_taken: AtomicU64::new(0),
            snapshots_installed: AtomicU64::new(0),
        }
    }
}

impl NodeMetrics {
    /// Appends this node's metrics in Prometheus text format.
    pub fn render(&self, out: &mut String) {
        let gauge = |out: &mut String, name: &str, help: &str, value: String| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
            );
        };
        let counter = |out: &mut String, name: &str, help: &str, value: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
            );
        };
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        gauge(
            out,
            "deadbolt_raft_term",
            "Current Raft term.",
            load(&self.term).to_string(),
        );
        gauge(
            out,
            "deadbolt_raft_role",
            "0 follower, 1 candidate, 2 leader, 3 learner.",
            load(&self.role).to_string(),
        );
        gauge(
            out,
            "deadbolt_raft_commit_index",
            "Highest index known committed.",
            load(&self.commit_index).to_string(),
        );
        gauge(
            out,
            "deadbolt_raft_applied_index",
            "Highest index applied to the lock state machine.",
            load(&self.applied_index).to_string(),
        );
        gauge(
            out,
            "deadbolt_proposals_in_flight",
            "Proposals waiting to be applied.",
            self.proposals_in_flight.load(Ordering::Relaxed).to_string(),
        );
        gauge(
            out,
            "deadbolt_idempotency_window_seconds",
            "How long idempotency outcomes are kept now (the age of the last one evicted early by the bound, else the contract's window).",
            format!("{:.3}", load(&self.idempotency_window_ms) as f64 / 1_000.0),
        );
        gauge(
            out,
            "deadbolt_sessions_active",
            "Live sessions.",
            load(&self.sessions_active).to_string(),
        );
        gauge(
            out,
            "deadbolt_locks_held",
            "Locks with at least one holder.",
            load(&self.locks_held).to_string(),
        );
        gauge(
            out,
            "deadbolt_lock_waiters",
            "Queued lock requests.",
            load(&self.waiters).to_string(),
        );
        counter(
            out,
            "deadbolt_lock_grants_total",
            "Locks granted at once.",
            load(&self.grants),
        );
        counter(
            out,
            "deadbolt_lock_handoffs_total",
            "Locks handed to a queued waiter.",
            load(&self.handoffs),
        );
        counter(
            out,
            "deadbolt_session_expiries_total",
            "Sessions expired by the leader.",
            load(&self.session_expiries),
        );
        counter(
            out,
            "deadbolt_leader_changes_total",
            "Leadership changes seen by this node.",
            load(&self.leader_changes),
        );
        counter(
            out,
            "deadbolt_peer_messages_dropped_total",
            "Peer messages dropped on a full outbound queue.",
            load(&self.peer_messages_dropped),
        );
        counter(
            out,
            "deadbolt_snapshots_taken_total",
            "Snapshots taken of the local state (log compactions).",
            load(&self.snapshots_taken),
        );
        counter(
            out,
            "deadbolt_snapshots_installed_total",
            "Snapshots received from a leader and installed.",
            load(&self.snapshots_installed),
        );
        let _ = writeln!(out, "# HELP deadbolt_fsync_seconds Storage sync latency.\n# TYPE deadbolt_fsync_seconds histogram");
        self.fsync_seconds.render(out, "deadbolt_fsync_seconds", "");
        let _ = writeln!(out, "# HELP deadbolt_entries_per_fsync Log entries made durable by one sync.\n# TYPE deadbolt_entries_per_fsync histogram");
        self.entries_per_fsync
            .render(out, "deadbolt_entries_per_fsync", "");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let h = Histogram::new(&[1.0, 2.0]);
        for v in [0.5, 1.5, 1.7, 9.0] {
            h.observe(v);
        }
        let mut out = String::new();
        h.render(&mut out, "x", "op=\"a\"");
        assert!(out.contains("x_bucket{op=\"a\",le=\"1\"} 1"), "{out}");
        assert!(out.contains("x_bucket{op=\"a\",le=\"2\"} 3"), "{out}");
        assert!(out.contains("x_bucket{op=\"a\",le=\"+Inf\"} 4"), "{out}");
        assert!(out.contains("x_count{op=\"a\"} 4"), "{out}");
    }
}
