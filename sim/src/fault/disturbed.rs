//! When a schedule may keep the cluster from committing: the intervals in
//! which any fault other than leader churn, clocks or client links is in
//! force. A liveness bound measured across a fault (a lease that must run
//! out) is stretched by them; leader churn itself is what such a bound is
//! about, so it never stretches one.

use std::collections::BTreeSet;

use super::{FaultAction, FaultSchedule};
use crate::history::NodeId;

/// How long a graceful restart may disturb the cluster: the executor waits
/// up to 3 s for the node to stop, then restarts it at once.
const GRACEFUL_RESTART_DISTURBS_MS: u64 = 3_000;

/// What is in force while the schedule plays.
#[derive(Default)]
struct InForce {
    network_cut: bool,
    weather: bool,
    frame_faults: bool,
    down: BTreeSet<NodeId>,
    paused: BTreeSet<NodeId>,
}

impl InForce {
    fn any(&self) -> bool {
        self.network_cut
            || self.weather
            || self.frame_faults
            || !self.down.is_empty()
            || !self.paused.is_empty()
    }

    /// Applies `action` (leader churn, clocks and client links change
    /// nothing here).
    fn apply(&mut self, action: &FaultAction) {
        match action {
            FaultAction::Cut { .. } | FaultAction::IsolateLeader => self.network_cut = true,
            FaultAction::HealNetwork => self.network_cut = false,
            FaultAction::SetNet { .. } => self.weather = true,
            FaultAction::ResetNet => self.weather = false,
            FaultAction::SetFrameFaults { .. } => self.frame_faults = true,
            FaultAction::ClearFrameFaults => self.frame_faults = false,
            // A replaced data dir is refused after its restart: its node
            // is gone for good, which a quorum of the others rides out.
            FaultAction::Crash { node, .. }
            | FaultAction::WipeDisk { node }
            | FaultAction::ReplaceDisk { node } => {
                self.down.insert(*node);
            }
            FaultAction::Restart { node } | FaultAction::StartNode { node } => {
                self.down.remove(node);
            }
            // A node whose fsync failed stops acting at its next sync,
            // until its supervisor restarts it.
            FaultAction::StopNode { node } | FaultAction::FailSync { node } => {
                self.down.insert(*node);
            }
            FaultAction::RestartAfterFailedSync { node } => {
                self.down.remove(node);
            }
            FaultAction::Pause { node } => {
                self.paused.insert(*node);
            }
            FaultAction::Resume { node } => {
                self.paused.remove(node);
            }
            FaultAction::CutClient { .. }
            | FaultAction::HealClients
            | FaultAction::GracefulRestart { .. }
            | FaultAction::SetDrift { .. }
            | FaultAction::JumpForward { .. }
            | FaultAction::StepWall { .. }
            | FaultAction::TransferLeader { .. }
            | FaultAction::AddMember { .. }
            | FaultAction::PromoteMember { .. }
            | FaultAction::RemoveMember { .. }
            | FaultAction::JoinNode { .. }
            | FaultAction::RemoveVoter { .. }
            | FaultAction::RemoveLeader { .. }
            | FaultAction::TransferLeaderTo { .. }
            | FaultAction::MovePeerAddr { .. }
            | FaultAction::SwapForeignDisk { .. } => {}
        }
    }
}

impl FaultSchedule {
    /// The disjoint, sorted `[start, end)` intervals (ms since the run
    /// started) in which a fault that can stall commits is in force. Every
    /// fault ends at `faults_end_ms` (the executor heals everything).
    pub fn disturbed_intervals_ms(&self) -> Vec<(u64, u64)> {
        let mut raw: Vec<(u64, u64)> = Vec::new();
        let mut in_force = InForce::default();
        let mut since: Option<u64> = None;
        for timed in &self.actions {
            // A removal (a leader's: an election), a moved address (the
            // node unreachable until the change commits), a swapped disk
            // and a forced transfer stall commits for a moment too.
            if let FaultAction::GracefulRestart { .. }
            | FaultAction::RemoveVoter { .. }
            | FaultAction::RemoveLeader { .. }
            | FaultAction::TransferLeaderTo { .. }
            | FaultAction::MovePeerAddr { .. }
            | FaultAction::SwapForeignDisk { .. } = timed.action
            {
                let end = (timed.at_ms + GRACEFUL_RESTART_DISTURBS_MS).min(self.faults_end_ms);
                raw.push((timed.at_ms, end.max(timed.at_ms)));
            }
            in_force.apply(&timed.action);
            match (since, in_force.any()) {
                (None, true) => since = Some(timed.at_ms),
                (Some(start), false) => {
                    raw.push((start, timed.at_ms));
                    since = None;
                }
                _ => {}
            }
        }
        if let Some(start) = since {
            raw.push((start, self.faults_end_ms.max(start)));
        }
        merge(raw)
    }
}

/// Sorts and merges overlapping or touching intervals.
fn merge(mut raw: Vec<(u64, u64)>) -> Vec<(u64, u64)> {
    raw.sort_unstable();
    let mut out: Vec<(u64, u64)> = Vec::with_capacity(raw.len());
    for (start, end) in raw {
        match out.last_mut() {
            Some(last) if start <= last.1 => last.1 = last.1.max(end),
            _ => out.push((start, end)),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fault::{FaultMix, FaultPlan, TimedAction};
    use std::collections::BTreeMap;

    fn schedule(actions: Vec<(u64, FaultAction)>) -> FaultSchedule {
        FaultSchedule {
            plan: FaultPlan {
                mix: FaultMix::Chaos,
                kinds: BTreeMap::new(),
            },
            clocks: vec![],
            actions: actions
                .into_iter()
                .map(|(at_ms, action)| TimedAction { at_ms, action })
                .collect(),
            faults_end_ms: 20_000,
        }
    }

    #[test]
    fn overlapping_faults_make_one_interval_and_churn_none() {
        let s = schedule(vec![
            (1_000, FaultAction::TransferLeader { pick: 0 }),
            (2_000, FaultAction::IsolateLeader),
            (2_500, FaultAction::Pause { node: 2 }),
            (3_000, FaultAction::HealNetwork),
            (4_000, FaultAction::Resume { node: 2 }),
            (
                5_000,
                FaultAction::SetDrift {
                    node: 1,
                    drift_ppm: 5,
                },
            ),
            (6_000, FaultAction::GracefulRestart { node: 3 }),
            (
                19_000,
                FaultAction::Crash {
                    node: 1,
                    fault: deadbolt_runtime::storage::CrashFault::LoseUnsynced,
                },
            ),
        ]);
        assert_eq!(
            s.disturbed_intervals_ms(),
            vec![(2_000, 4_000), (6_000, 9_000), (19_000, 20_000)]
        );
    }

    #[test]
    fn generated_schedules_give_sorted_disjoint_intervals_in_the_window() {
        for seed in 0..200 {
            let s = FaultSchedule::generate(seed, FaultMix::Chaos, 3, 20_000);
            let d = s.disturbed_intervals_ms();
            assert!(d.iter().all(|(a, b)| a <= b && *b <= 20_000), "{d:?}");
            assert!(d.windows(2).all(|w| w[0].1 < w[1].0), "{d:?}");
        }
    }
}
