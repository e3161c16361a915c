//! Liveness after the faults stop: a leader must emerge and probe operations
//! must complete within a bounded simulated time.

use std::fmt;

use crate::history::{fmt_time, NodeObservation, RaftHistory, SimTimeNs};

/// One operation issued after the faults stopped to prove progress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    pub name: String,
    pub invoked_ns: SimTimeNs,
    pub completed_ns: Option<SimTimeNs>,
}

/// What the harness measured after healing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LivenessInput {
    pub faults_stopped_ns: SimTimeNs,
    /// First moment after `faults_stopped_ns` at which a leader was known
    /// (the heal time itself if a leader survived the faults).
    pub first_leader_ns: Option<SimTimeNs>,
    pub probes: Vec<Probe>,
    /// Both the leader and every probe must be done within this long after
    /// the faults stopped.
    pub bound_ns: SimTimeNs,
}

/// The cluster did not recover in time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LivenessViolation {
    NoLeader {
        faults_stopped_ns: SimTimeNs,
    },
    LeaderTooLate {
        faults_stopped_ns: SimTimeNs,
        leader_ns: SimTimeNs,
        bound_ns: SimTimeNs,
    },
    ProbeNotCompleted {
        probe: Probe,
    },
    ProbeTooLate {
        probe: Probe,
        faults_stopped_ns: SimTimeNs,
        bound_ns: SimTimeNs,
    },
}

impl fmt::Display for LivenessViolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LivenessViolation::NoLeader { faults_stopped_ns } => write!(
                f,
                "no leader emerged after the faults stopped at {}",
                fmt_time(*faults_stopped_ns)
            ),
            LivenessViolation::LeaderTooLate {
                faults_stopped_ns,
                leader_ns,
                bound_ns,
            } => write!(
                f,
                "first leader at {}, {} after the faults stopped at {} (bound {})",
                fmt_time(*leader_ns),
                fmt_time(leader_ns.saturating_sub(*faults_stopped_ns)),
                fmt_time(*faults_stopped_ns),
                fmt_time(*bound_ns)
            ),
            LivenessViolation::ProbeNotCompleted { probe } => write!(
                f,
                "probe {:?} invoked at {} never completed",
                probe.name,
                fmt_time(probe.invoked_ns)
            ),
            LivenessViolation::ProbeTooLate {
                probe,
                faults_stopped_ns,
                bound_ns,
            } => write!(
                f,
                "probe {:?} completed at {}, more than {} after the faults stopped at {}",
                probe.name,
                probe.completed_ns.map_or("?".into(), fmt_time),
                fmt_time(*bound_ns),
                fmt_time(*faults_stopped_ns)
            ),
        }
    }
}

/// The first election won at or after `after_ns`, from the Raft history: a
/// convenient `first_leader_ns` when the harness forces an election at heal
/// time. A leader that survived the faults wins no new election, so a harness
/// that keeps it should pass the heal time instead.
pub fn first_election_at_or_after(raft: &RaftHistory, after_ns: SimTimeNs) -> Option<SimTimeNs> {
    raft.events
        .iter()
        .filter(|r| r.at_ns >= after_ns)
        .find(|r| matches!(r.event, NodeObservation::BecameLeader { .. }))
        .map(|r| r.at_ns)
}

pub fn check_liveness(input: &LivenessInput) -> Vec<LivenessViolation> {
    let mut violations = Vec::new();
    let deadline = input.faults_stopped_ns.saturating_add(input.bound_ns);
    match input.first_leader_ns {
        None => violations.push(LivenessViolation::NoLeader {
            faults_stopped_ns: input.faults_stopped_ns,
        }),
        Some(leader_ns) if leader_ns > deadline => {
            violations.push(LivenessViolation::LeaderTooLate {
                faults_stopped_ns: input.faults_stopped_ns,
                leader_ns,
                bound_ns: input.bound_ns,
            })
        }
        Some(_) => {}
    }
    for probe in &input.probes {
        match probe.completed_ns {
            None => violations.push(LivenessViolation::ProbeNotCompleted {
                probe: probe.clone(),
            }),
            Some(c) if c > deadline => violations.push(LivenessViolation::ProbeTooLate {
                probe: probe.clone(),
                faults_stopped_ns: input.faults_stopped_ns,
                bound_ns: input.bound_ns,
            }),
            Some(_) => {}
        }
    }
    violations
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    fn input(first_leader_ns: Option<u64>, probes: Vec<Probe>) -> LivenessInput {
        LivenessInput {
            faults_stopped_ns: 1_000 * MS,
            first_leader_ns,
            probes,
            bound_ns: 5_000 * MS,
        }
    }

    fn probe(completed_ms: Option<u64>) -> Probe {
        Probe {
            name: "acquire probe".into(),
            invoked_ns: 1_500 * MS,
            completed_ns: completed_ms.map(|c| c * MS),
        }
    }

    #[test]
    fn finds_the_first_election_after_heal() {
        let mut raft = RaftHistory::new();
        raft.record(5, NodeObservation::BecameLeader { node: 1, term: 1 });
        raft.record(20, NodeObservation::Restarted { node: 1 });
        raft.record(30, NodeObservation::BecameLeader { node: 2, term: 2 });
        assert_eq!(first_election_at_or_after(&raft, 10), Some(30));
        assert_eq!(first_election_at_or_after(&raft, 31), None);
    }

    #[test]
    fn accepts_prompt_recovery() {
        assert_eq!(
            check_liveness(&input(Some(1_300 * MS), vec![probe(Some(1_600))])),
            vec![]
        );
    }

    #[test]
    fn rejects_no_leader_after_heal() {
        let v = check_liveness(&input(None, vec![probe(None)]));
        assert!(matches!(v[0], LivenessViolation::NoLeader { .. }), "{v:?}");
        assert!(matches!(v[1], LivenessViolation::ProbeNotCompleted { .. }));
        assert!(v[0].to_string().contains("no leader emerged"));
    }

    #[test]
    fn rejects_slow_leader_and_slow_probe() {
        let v = check_liveness(&input(Some(7_000 * MS), vec![probe(Some(6_001))]));
        assert!(
            matches!(v[0], LivenessViolation::LeaderTooLate { .. }),
            "{v:?}"
        );
        assert!(matches!(v[1], LivenessViolation::ProbeTooLate { .. }));
    }
}
