//! Raft safety over the per-node observations of a run: one leader per term,
//! log matching, committed entries never lost or changed (across restarts
//! too), commit index monotonic between restarts, identical applied sequences.

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Bound::{Excluded, Included};

use crate::history::{
    fmt_time, EventId, LogIndex, NodeId, NodeObservation, RaftHistory, SimTimeNs, Term,
};

/// Where and when an entry (or leadership) was seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Witness {
    pub node: NodeId,
    pub event: EventId,
    pub at_ns: SimTimeNs,
    pub term: Term,
    pub entry_hash: u64,
}

impl fmt::Display for Witness {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "n{} (event #{} at {}: term {}, hash {:#018x})",
            self.node,
            self.event,
            fmt_time(self.at_ns),
            self.term,
            self.entry_hash
        )
    }
}

/// A broken Raft invariant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RaftViolation {
    /// Two different nodes became leader of the same term.
    TwoLeaders {
        term: Term,
        first: Witness,
        second: Witness,
    },
    /// Two log entries with the same index and term differ.
    LogMismatch {
        index: LogIndex,
        first: Witness,
        second: Witness,
    },
    /// Two nodes applied different entries at the same index.
    AppliedDivergence {
        index: LogIndex,
        first: Witness,
        second: Witness,
    },
    /// A committed entry was lost or changed: a node applied (or restored) a
    /// different entry at an index it had applied before (typically after a
    /// restart), or an entry that a node's commit index covered in its log
    /// was later replaced.
    CommittedEntryChanged {
        index: LogIndex,
        before: Witness,
        after: Witness,
    },
    /// A node applied out of sequence (skipped or repeated an index without a
    /// restart or snapshot in between).
    ApplyOutOfOrder {
        node: NodeId,
        expected: LogIndex,
        got: LogIndex,
        event: EventId,
        at_ns: SimTimeNs,
    },
    /// A node deleted an entry from its log and then appended an entry of
    /// the same term at the same index: Raft deletes only on a term
    /// conflict, and two entries of one term at one index are the same
    /// entry (log matching), so the truncation threw away an entry that
    /// matched the leader's (a stale or duplicated append acted on).
    TruncatedMatchingEntry {
        index: LogIndex,
        truncated: Witness,
        replacement: Witness,
    },
    /// A node's commit index went down without a restart in between.
    CommitIndexDecreased {
        node: NodeId,
        from: LogIndex,
        to: LogIndex,
        event: EventId,
        at_ns: SimTimeNs,
    },
}

impl fmt::Display for RaftViolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RaftViolation::TwoLeaders {
                term,
                first,
                second,
            } => write!(
                f,
                "two leaders in term {term}: n{} (event #{} at {}) and n{} (event #{} at {})",
                first.node,
                first.event,
                fmt_time(first.at_ns),
                second.node,
                second.event,
                fmt_time(second.at_ns)
            ),
            RaftViolation::LogMismatch {
                index,
                first,
                second,
            } => write!(
                f,
                "log matching broken at index {index}: {first} vs {second}"
            ),
            RaftViolation::AppliedDivergence {
                index,
                first,
                second,
            } => write!(
                f,
                "nodes applied different entries at index {index}: {first} vs {second}"
            ),
            RaftViolation::CommittedEntryChanged {
                index,
                before,
                after,
            } => write!(
                f,
                "committed entry at index {index} lost or changed: first committed as {before}, later {after}"
            ),
            RaftViolation::ApplyOutOfOrder {
                node,
                expected,
                got,
                event,
                at_ns,
            } => write!(
                f,
                "n{node} applied index {got} but its next index was {expected} (event #{event} at {})",
                fmt_time(*at_ns)
            ),
            RaftViolation::TruncatedMatchingEntry {
                index,
                truncated,
                replacement,
            } => write!(
                f,
                "n{} truncated index {index} and appended an entry of the same term there: \
                 truncated {truncated}, replaced by {replacement}",
                truncated.node
            ),
            RaftViolation::CommitIndexDecreased {
                node,
                from,
                to,
                event,
                at_ns,
            } => write!(
                f,
                "n{node} commit index went back from {from} to {to} without a restart (event #{event} at {})",
                fmt_time(*at_ns)
            ),
        }
    }
}

/// Per-node state the checker carries along the history.
#[derive(Debug)]
struct NodeTrack {
    /// The index the node must apply next; 1 after a restart until a snapshot
    /// says otherwise.
    next_apply: LogIndex,
    /// Highest commit index since the last restart.
    commit_index: Option<LogIndex>,
    /// The node's log as its `Appended` observations describe it (cleared
    /// at restart and snapshot, where the harness may not re-record it).
    log: BTreeMap<LogIndex, Witness>,
    /// Entries its last truncations deleted and no append has replaced yet.
    truncated: BTreeMap<LogIndex, Witness>,
}

impl NodeTrack {
    fn new() -> Self {
        NodeTrack {
            next_apply: 1,
            commit_index: None,
            log: BTreeMap::new(),
            truncated: BTreeMap::new(),
        }
    }
}

/// How many truncations the nodes of `history` made (the sweep reports
/// it: a run without any never tested the conflict path).
pub fn count_truncations(history: &RaftHistory) -> usize {
    history
        .events
        .iter()
        .filter(|r| matches!(r.event, NodeObservation::Truncated { .. }))
        .count()
}

/// Checks every Raft invariant over `history`. Returns every violation found,
/// in history order (the first is usually the root cause).
pub fn check_raft(history: &RaftHistory) -> Vec<RaftViolation> {
    let mut check = RaftCheck::default();
    for (event, rec) in history.events.iter().enumerate() {
        let witness = |node, term, entry_hash| Witness {
            node,
            event,
            at_ns: rec.at_ns,
            term,
            entry_hash,
        };
        match rec.event {
            NodeObservation::BecameLeader { node, term } => {
                check.became_leader(witness(node, term, 0));
            }
            NodeObservation::Appended {
                node,
                index,
                term,
                entry_hash,
            } => check.appended(index, witness(node, term, entry_hash)),
            NodeObservation::Applied {
                node,
                index,
                term,
                entry_hash,
            } => check.applied(index, witness(node, term, entry_hash)),
            NodeObservation::SnapshotRestored {
                node,
                last_index,
                last_term,
            } => check.snapshot_restored(last_index, witness(node, last_term, 0)),
            NodeObservation::CommitIndex { node, index } => {
                check.commit_index(index, witness(node, 0, 0));
            }
            NodeObservation::Truncated { node, from } => check.truncated(node, from),
            NodeObservation::Restarted { node } => {
                check.nodes.insert(node, NodeTrack::new());
            }
        }
    }
    check.violations
}

/// What the checker has learned so far along the history, and what it found.
#[derive(Default)]
struct RaftCheck {
    violations: Vec<RaftViolation>,
    leaders: BTreeMap<Term, Witness>,
    /// Every entry seen in any log, by (index, term): log matching.
    log_entries: BTreeMap<(LogIndex, Term), Witness>,
    /// The first applied entry at each index: everyone must apply the same.
    applied: BTreeMap<LogIndex, Witness>,
    /// Entries known committed from a commit index and the log under it.
    committed: BTreeMap<LogIndex, Witness>,
    nodes: BTreeMap<NodeId, NodeTrack>,
}

impl RaftCheck {
    /// At most one leader per term.
    fn became_leader(&mut self, w: Witness) {
        match self.leaders.get(&w.term) {
            Some(first) if first.node != w.node => {
                self.violations.push(RaftViolation::TwoLeaders {
                    term: w.term,
                    first: *first,
                    second: w,
                });
            }
            Some(_) => {}
            None => {
                self.leaders.insert(w.term, w);
            }
        }
    }

    fn appended(&mut self, index: LogIndex, w: Witness) {
        check_log_matching(&mut self.log_entries, index, w, &mut self.violations);
        let track = self.nodes.entry(w.node).or_insert_with(NodeTrack::new);
        // An append that conflicts with the node's entry at `index`
        // truncates it and everything after it, as in Raft.
        if track.log.get(&index).is_some_and(|e| e.term != w.term) {
            track.log.split_off(&index);
        }
        if let Some(truncated) = track.truncated.remove(&index) {
            if truncated.term == w.term {
                self.violations.push(RaftViolation::TruncatedMatchingEntry {
                    index,
                    truncated,
                    replacement: w,
                });
            }
        }
        track.log.insert(index, w);
    }

    /// The node deletes its entries from `from` on: they wait in
    /// `truncated` for the appends that replace them.
    fn truncated(&mut self, node: NodeId, from: LogIndex) {
        let track = self.nodes.entry(node).or_insert_with(NodeTrack::new);
        let deleted = track.log.split_off(&from);
        track.truncated.extend(deleted);
    }

    /// Applies come in index order per node, and every node applies the
    /// same entry at an index, the one committed there.
    fn applied(&mut self, index: LogIndex, w: Witness) {
        check_log_matching(&mut self.log_entries, index, w, &mut self.violations);
        let track = self.nodes.entry(w.node).or_insert_with(NodeTrack::new);
        if index != track.next_apply {
            self.violations.push(RaftViolation::ApplyOutOfOrder {
                node: w.node,
                expected: track.next_apply,
                got: index,
                event: w.event,
                at_ns: w.at_ns,
            });
        }
        // Resynchronise so that one gap is reported once.
        track.next_apply = index.saturating_add(1);
        let before = self.violations.len();
        check_same_applied(&mut self.applied, index, w, &mut self.violations);
        if self.violations.len() == before {
            check_committed(&mut self.committed, index, w, &mut self.violations);
        }
    }

    /// `last` carries the node and the snapshot's last term (its hash is
    /// unknown).
    fn snapshot_restored(&mut self, last_index: LogIndex, last: Witness) {
        let node = last.node;
        let track = self.nodes.entry(node).or_insert_with(NodeTrack::new);
        // A snapshot may move a node forward, never back below what it
        // has applied since its last restart.
        if last_index.saturating_add(1) < track.next_apply {
            self.violations.push(RaftViolation::ApplyOutOfOrder {
                node,
                expected: track.next_apply,
                got: last_index,
                event: last.event,
                at_ns: last.at_ns,
            });
        }
        track.next_apply = last_index.saturating_add(1);
        track.log.clear();
        track.truncated.clear();
        if last_index > 0 {
            // The hash of a snapshot's last entry is unknown: compare
            // terms only.
            if let Some(before) = self.applied.get(&last_index) {
                if before.term != last.term {
                    let after = Witness {
                        entry_hash: before.entry_hash,
                        ..last
                    };
                    self.violations
                        .push(changed_or_divergent(last_index, *before, after));
                }
            }
        }
    }

    /// `at` carries the node and when (no term or hash).
    fn commit_index(&mut self, index: LogIndex, at: Witness) {
        let node = at.node;
        let track = self.nodes.entry(node).or_insert_with(NodeTrack::new);
        if let Some(from) = track.commit_index {
            if index < from {
                self.violations.push(RaftViolation::CommitIndexDecreased {
                    node,
                    from,
                    to: index,
                    event: at.event,
                    at_ns: at.at_ns,
                });
            }
        }
        // Entries of the node's log up to its commit index are
        // committed: they must be the ones every node applies.
        let from = track.commit_index.unwrap_or(0);
        // `range` panics on inverted bounds: `to` stays at or above
        // `from` (and (from, from] is simply empty).
        let to = index.max(from);
        for (&i, &w) in track.log.range((Excluded(from), Included(to))) {
            match self.applied.get(&i) {
                Some(a) if (a.term, a.entry_hash) != (w.term, w.entry_hash) => {
                    self.violations.push(RaftViolation::CommittedEntryChanged {
                        index: i,
                        before: *a,
                        after: w,
                    });
                }
                _ => check_committed(&mut self.committed, i, w, &mut self.violations),
            }
        }
        track.commit_index = Some(track.commit_index.map_or(index, |c| c.max(index)));
    }
}

fn check_log_matching(
    log_entries: &mut BTreeMap<(LogIndex, Term), Witness>,
    index: LogIndex,
    w: Witness,
    violations: &mut Vec<RaftViolation>,
) {
    match log_entries.get(&(index, w.term)) {
        Some(first) if first.entry_hash != w.entry_hash => {
            violations.push(RaftViolation::LogMismatch {
                index,
                first: *first,
                second: w,
            });
        }
        Some(_) => {}
        None => {
            log_entries.insert((index, w.term), w);
        }
    }
}

fn check_same_applied(
    applied: &mut BTreeMap<LogIndex, Witness>,
    index: LogIndex,
    w: Witness,
    violations: &mut Vec<RaftViolation>,
) {
    match applied.get(&index) {
        Some(first) if (first.term, first.entry_hash) != (w.term, w.entry_hash) => {
            violations.push(changed_or_divergent(index, *first, w));
        }
        Some(_) => {}
        None => {
            applied.insert(index, w);
        }
    }
}

/// Compares `w` with the entry known committed at `index`, if any.
fn check_committed(
    committed: &mut BTreeMap<LogIndex, Witness>,
    index: LogIndex,
    w: Witness,
    violations: &mut Vec<RaftViolation>,
) {
    match committed.get(&index) {
        Some(first) if (first.term, first.entry_hash) != (w.term, w.entry_hash) => {
            violations.push(RaftViolation::CommittedEntryChanged {
                index,
                before: *first,
                after: w,
            });
        }
        Some(_) => {}
        None => {
            committed.insert(index, w);
        }
    }
}

fn changed_or_divergent(index: LogIndex, first: Witness, second: Witness) -> RaftViolation {
    if first.node == second.node {
        RaftViolation::CommittedEntryChanged {
            index,
            before: first,
            after: second,
        }
    } else {
        RaftViolation::AppliedDivergence {
            index,
            first,
            second,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::NodeObservation as O;

    fn history(events: Vec<NodeObservation>) -> RaftHistory {
        let mut h = RaftHistory::new();
        for (i, e) in events.into_iter().enumerate() {
            h.record(i as u64 * 1_000_000, e);
        }
        h
    }

    fn applied(node: NodeId, index: LogIndex, term: Term, entry_hash: u64) -> NodeObservation {
        O::Applied {
            node,
            index,
            term,
            entry_hash,
        }
    }

    fn good_run() -> Vec<NodeObservation> {
        vec![
            O::BecameLeader { node: 1, term: 1 },
            O::CommitIndex { node: 1, index: 2 },
            applied(1, 1, 1, 0xa),
            applied(1, 2, 1, 0xb),
            applied(2, 1, 1, 0xa),
            applied(2, 2, 1, 0xb),
            O::Restarted { node: 1 },
            O::CommitIndex { node: 1, index: 1 },
            applied(1, 1, 1, 0xa),
            O::BecameLeader { node: 2, term: 2 },
            O::CommitIndex { node: 2, index: 3 },
            applied(2, 3, 2, 0xc),
            applied(1, 2, 1, 0xb),
            applied(1, 3, 2, 0xc),
            O::Restarted { node: 2 },
            O::SnapshotRestored {
                node: 2,
                last_index: 3,
                last_term: 2,
            },
            applied(2, 4, 2, 0xd),
        ]
    }

    #[test]
    fn accepts_a_good_run_with_restarts_and_snapshots() {
        assert_eq!(check_raft(&history(good_run())), vec![]);
    }

    #[test]
    fn rejects_two_leaders_in_one_term() {
        let v = check_raft(&history(vec![
            O::BecameLeader { node: 1, term: 3 },
            O::BecameLeader { node: 2, term: 3 },
        ]));
        assert!(
            matches!(v.as_slice(), [RaftViolation::TwoLeaders { term: 3, first, second }]
                if first.node == 1 && second.node == 2 && second.event == 1),
            "{v:?}"
        );
        assert!(v[0].to_string().contains("two leaders in term 3"));
    }

    #[test]
    fn rejects_divergent_applied_entries() {
        let v = check_raft(&history(vec![
            applied(1, 1, 1, 0xa),
            applied(2, 1, 1, 0xbad),
        ]));
        assert!(
            v.iter()
                .any(|v| matches!(v, RaftViolation::AppliedDivergence { index: 1, .. })),
            "{v:?}"
        );
        // Same index and term, different content: log matching too.
        assert!(v
            .iter()
            .any(|v| matches!(v, RaftViolation::LogMismatch { index: 1, .. })));
    }

    #[test]
    fn rejects_uncommitted_log_mismatch() {
        let v = check_raft(&history(vec![
            O::Appended {
                node: 1,
                index: 5,
                term: 2,
                entry_hash: 1,
            },
            O::Appended {
                node: 3,
                index: 5,
                term: 2,
                entry_hash: 2,
            },
            // A different term at the same index is normal (overwritten tail).
            O::Appended {
                node: 2,
                index: 5,
                term: 3,
                entry_hash: 9,
            },
        ]));
        assert_eq!(v.len(), 1, "{v:?}");
        assert!(matches!(v[0], RaftViolation::LogMismatch { index: 5, .. }));
    }

    /// Raft deletes only on a term conflict: a truncated entry that
    /// comes back with its own term was thrown away for nothing (a stale
    /// append acted on). A replacement of another term is the normal case.
    #[test]
    fn rejects_a_truncation_replaced_by_the_same_term() {
        let appended = |node, index, term, entry_hash| O::Appended {
            node,
            index,
            term,
            entry_hash,
        };
        let v = check_raft(&history(vec![
            appended(1, 4, 2, 0x4),
            appended(1, 5, 2, 0x5),
            appended(1, 6, 2, 0x6),
            O::Truncated { node: 1, from: 5 },
            appended(1, 5, 3, 0x35),
            O::Truncated { node: 1, from: 6 },
            appended(1, 6, 3, 0x36),
        ]));
        assert!(v.is_empty(), "a conflict of terms is no violation: {v:?}");
        let v = check_raft(&history(vec![
            appended(1, 4, 2, 0x4),
            appended(1, 5, 2, 0x5),
            O::Truncated { node: 1, from: 5 },
            appended(1, 5, 2, 0x5),
        ]));
        assert!(
            matches!(v.as_slice(), [RaftViolation::TruncatedMatchingEntry { index: 5, truncated, replacement }]
                if truncated.event == 1 && replacement.event == 3),
            "{v:?}"
        );
        assert!(v[0].to_string().contains("same term"), "{}", v[0]);
        // A restart forgets what was truncated before it.
        let v = check_raft(&history(vec![
            appended(1, 5, 2, 0x5),
            O::Truncated { node: 1, from: 5 },
            O::Restarted { node: 1 },
            appended(1, 5, 2, 0x5),
        ]));
        assert!(v.is_empty(), "{v:?}");
        assert_eq!(
            count_truncations(&history(vec![O::Truncated { node: 2, from: 1 }])),
            1
        );
    }

    #[test]
    fn rejects_a_committed_entry_lost_after_restart() {
        // n1 applied index 2 from term 1, crashed, and after the restart the
        // entry at index 2 is a different one: the committed entry was lost.
        let v = check_raft(&history(vec![
            applied(1, 1, 1, 0xa),
            applied(1, 2, 1, 0xb),
            O::Restarted { node: 1 },
            applied(1, 1, 1, 0xa),
            applied(1, 2, 2, 0xe),
        ]));
        assert!(
            matches!(v.as_slice(), [RaftViolation::CommittedEntryChanged { index: 2, before, after }]
                if before.event == 1 && after.event == 4),
            "{v:?}"
        );
        assert!(v[0].to_string().contains("lost or changed"));
    }

    #[test]
    fn rejects_a_snapshot_that_contradicts_applied_entries() {
        let v = check_raft(&history(vec![
            applied(1, 1, 1, 0xa),
            applied(2, 1, 1, 0xa),
            O::Restarted { node: 2 },
            O::SnapshotRestored {
                node: 2,
                last_index: 1,
                last_term: 7,
            },
        ]));
        assert!(
            matches!(
                v.as_slice(),
                [RaftViolation::AppliedDivergence { index: 1, .. }]
            ),
            "{v:?}"
        );
    }

    #[test]
    fn rejects_a_committed_entry_replaced_before_anyone_applied_it() {
        // n1 leads term 2, appends index 3 and commits it, then crashes
        // before applying; n2 (term 3) overwrites index 3 and applies it.
        let v = check_raft(&history(vec![
            O::BecameLeader { node: 1, term: 2 },
            O::Appended {
                node: 1,
                index: 3,
                term: 2,
                entry_hash: 0x33,
            },
            O::CommitIndex { node: 1, index: 3 },
            O::Restarted { node: 1 },
            O::BecameLeader { node: 2, term: 3 },
            O::Appended {
                node: 2,
                index: 3,
                term: 3,
                entry_hash: 0x99,
            },
            applied(2, 1, 1, 0xa),
            applied(2, 2, 1, 0xb),
            applied(2, 3, 3, 0x99),
        ]));
        assert!(
            matches!(v.as_slice(), [RaftViolation::CommittedEntryChanged { index: 3, before, after }]
                if before.node == 1 && before.event == 1 && after.node == 2),
            "{v:?}"
        );
    }

    #[test]
    fn a_truncated_uncommitted_tail_is_not_a_loss() {
        let v = check_raft(&history(vec![
            O::Appended {
                node: 1,
                index: 1,
                term: 1,
                entry_hash: 0xa,
            },
            O::Appended {
                node: 1,
                index: 2,
                term: 1,
                entry_hash: 0xb,
            },
            O::CommitIndex { node: 1, index: 1 },
            // n1's uncommitted index 2 is replaced by a term 2 entry.
            O::Appended {
                node: 1,
                index: 2,
                term: 2,
                entry_hash: 0xc,
            },
            O::CommitIndex { node: 1, index: 2 },
            applied(1, 1, 1, 0xa),
            applied(1, 2, 2, 0xc),
            applied(3, 1, 1, 0xa),
            applied(3, 2, 2, 0xc),
        ]));
        assert_eq!(v, vec![]);
    }

    #[test]
    fn rejects_apply_gaps_without_snapshot() {
        let v = check_raft(&history(vec![
            applied(1, 1, 1, 0xa),
            applied(1, 3, 1, 0xc),
            O::Restarted { node: 1 },
            // After a restart, re-applying must start at 1 (or after a snapshot).
            applied(1, 2, 1, 0xb),
        ]));
        assert_eq!(v.len(), 2, "{v:?}");
        assert!(matches!(
            v[0],
            RaftViolation::ApplyOutOfOrder {
                node: 1,
                expected: 2,
                got: 3,
                ..
            }
        ));
        assert!(matches!(
            v[1],
            RaftViolation::ApplyOutOfOrder {
                expected: 1,
                got: 2,
                ..
            }
        ));
    }

    #[test]
    fn rejects_commit_index_going_back_without_restart() {
        let v = check_raft(&history(vec![
            O::Appended {
                node: 2,
                index: 4,
                term: 1,
                entry_hash: 4,
            },
            O::CommitIndex { node: 2, index: 5 },
            O::CommitIndex { node: 2, index: 4 },
        ]));
        assert!(
            matches!(
                v.as_slice(),
                [RaftViolation::CommitIndexDecreased {
                    node: 2,
                    from: 5,
                    to: 4,
                    event: 2,
                    ..
                }]
            ),
            "{v:?}"
        );
        // The same drop across a restart is fine.
        let ok = check_raft(&history(vec![
            O::CommitIndex { node: 2, index: 5 },
            O::Restarted { node: 2 },
            O::CommitIndex { node: 2, index: 4 },
        ]));
        assert_eq!(ok, vec![]);
    }

    use proptest::prelude::*;

    /// A correct run: one committed log (terms non-decreasing, one leader per
    /// term), three nodes applying it at their own pace with crashes,
    /// snapshots and commit-index reports, then all catching up.
    fn correct_run(steps: &[(u8, u8)], terms: &[bool]) -> Vec<NodeObservation> {
        let mut term = 1;
        let entry_terms: Vec<Term> = terms
            .iter()
            .map(|bump| {
                term += u64::from(*bump);
                term
            })
            .collect();
        let entry = |i: LogIndex| (entry_terms[(i - 1) as usize], i.wrapping_mul(0x9e37_79b9));
        let n = entry_terms.len() as u64;
        let mut out = Vec::new();
        let mut led = BTreeMap::new();
        let mut applied_at: BTreeMap<NodeId, LogIndex> = BTreeMap::new();
        let mut commit: BTreeMap<NodeId, LogIndex> = BTreeMap::new();
        let apply = |out: &mut Vec<NodeObservation>, node, i| {
            let (term, hash) = entry(i);
            out.push(applied(node, i, term, hash));
        };
        for &(node, action) in steps {
            let node = NodeId::from(node % 3 + 1);
            let a = applied_at.get(&node).copied().unwrap_or(0);
            let c = commit.get(&node).copied().unwrap_or(0);
            match action % 4 {
                0 if c < n => {
                    commit.insert(node, c + 1);
                    out.push(O::CommitIndex { node, index: c + 1 });
                    let t = entry(c + 1).0;
                    led.entry(t).or_insert_with(|| {
                        out.push(O::BecameLeader {
                            node: t % 3 + 1,
                            term: t,
                        });
                    });
                }
                1 if a < c => {
                    applied_at.insert(node, a + 1);
                    apply(&mut out, node, a + 1);
                }
                2 => {
                    out.push(O::Restarted { node });
                    commit.insert(node, 0);
                    // The snapshot covers a prefix of what was applied.
                    let snap = a / 2;
                    applied_at.insert(node, snap);
                    if snap > 0 {
                        out.push(O::SnapshotRestored {
                            node,
                            last_index: snap,
                            last_term: entry(snap).0,
                        });
                    }
                }
                _ => {}
            }
        }
        for node in 1..=3 {
            let from = applied_at.get(&node).copied().unwrap_or(0);
            for i in from + 1..=n {
                apply(&mut out, node, i);
            }
        }
        out
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn correct_runs_pass_and_any_changed_apply_is_caught(
            steps in proptest::collection::vec((any::<u8>(), any::<u8>()), 0..120),
            terms in proptest::collection::vec(proptest::bool::weighted(0.2), 1..30),
            pick in any::<proptest::sample::Index>(),
        ) {
            let run = correct_run(&steps, &terms);
            let v = check_raft(&history(run.clone()));
            prop_assert!(v.is_empty(), "{}", v[0]);

            let applies: Vec<usize> = run
                .iter()
                .enumerate()
                .filter(|(_, e)| matches!(e, O::Applied { .. }))
                .map(|(i, _)| i)
                .collect();
            let mut bad = run;
            if let O::Applied { entry_hash, .. } = &mut bad[applies[pick.index(applies.len())]] {
                *entry_hash ^= 1;
            }
            prop_assert!(!check_raft(&history(bad)).is_empty());
        }
    }
}
