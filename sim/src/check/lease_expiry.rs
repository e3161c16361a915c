//! Leases of crashed clients run out: a session whose client stopped all
//! keepalives must end within a bound after its last acknowledged
//! keepalive, however often the leader changes meanwhile (issue 13, bug 6:
//! every new leader restarted every lease, so leaders changing faster than
//! the TTL kept a dead client's session and locks forever).
//!
//! The bound: twice the TTL (state time pauses between leaders and runs
//! with a leader's clock, drift included) plus [`SLACK_MS`] (commit,
//! the leader's maintenance tick, the harness's polling), stretched by
//! every fault that could stall commits inside the window
//! ([`crate::fault::FaultSchedule::disturbed_intervals_ms`]) and a
//! recovery allowance for each. Leader churn itself stretches nothing: it
//! is what the bound is about.

use std::fmt;

use crate::history::{fmt_time, SessionId, SimTimeNs};

const MS: u64 = 1_000_000;
/// Commit latency, the leader's 100 ms maintenance tick, the 100 ms poll.
pub const SLACK_MS: u64 = 2_000;
/// After a stalling fault ends: an election and a commit.
pub const RECOVERY_MS: u64 = 1_500;

/// A session whose client crashed (stopped keepalives for good), and what
/// the harness saw of it afterwards.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AbandonedSession {
    pub session: SessionId,
    pub ttl_ms: u64,
    /// When the last keepalive (or the open) the cluster acknowledged was
    /// answered: the lease cannot have been renewed later.
    pub last_ack_ns: SimTimeNs,
    /// First moment the cluster answered that the session is gone.
    pub gone_ns: Option<SimTimeNs>,
    /// The harness watched until then (no verdict on a deadline past it).
    pub watched_until_ns: SimTimeNs,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LeaseExpiryInput {
    pub sessions: Vec<AbandonedSession>,
    /// Sorted, disjoint `[start, end)` intervals in which a fault that can
    /// stall commits was in force.
    pub disturbed_ns: Vec<(SimTimeNs, SimTimeNs)>,
}

/// A dead client's session outlived its bound.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseExpiryViolation {
    pub session: AbandonedSession,
    pub deadline_ns: SimTimeNs,
}

impl fmt::Display for LeaseExpiryViolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = &self.session;
        write!(
            f,
            "session {} (ttl {} ms) of a crashed client, last keepalive acknowledged at {}, \
             should have ended by {} but ",
            s.session,
            s.ttl_ms,
            fmt_time(s.last_ack_ns),
            fmt_time(self.deadline_ns)
        )?;
        match s.gone_ns {
            Some(gone) => write!(f, "ended only at {}", fmt_time(gone)),
            None => write!(f, "was still live at {}", fmt_time(s.watched_until_ns)),
        }
    }
}

/// The latest moment `session` may still be live.
pub fn expiry_deadline_ns(session: &AbandonedSession, disturbed_ns: &[(u64, u64)]) -> SimTimeNs {
    let from = session.last_ack_ns;
    let base = from + (2 * session.ttl_ms + SLACK_MS) * MS;
    // Each stalling fault inside the window stretches it, which may bring
    // the next one in: iterate to the fixed point (at most one round per
    // interval).
    let mut deadline = base;
    loop {
        let stretch: u64 = disturbed_ns
            .iter()
            .filter(|&&(start, end)| start < deadline && end > from)
            .map(|&(start, end)| end.min(deadline) - start.max(from) + RECOVERY_MS * MS)
            .sum();
        let next = base + stretch;
        if next <= deadline {
            return deadline;
        }
        deadline = next;
    }
}

pub fn check_lease_expiry(input: &LeaseExpiryInput) -> Vec<LeaseExpiryViolation> {
    let mut violations = Vec::new();
    for session in &input.sessions {
        let deadline_ns = expiry_deadline_ns(session, &input.disturbed_ns);
        let late = match session.gone_ns {
            Some(gone) => gone > deadline_ns,
            // Still live when the harness stopped watching: a verdict only
            // if the deadline had passed by then.
            None => session.watched_until_ns > deadline_ns,
        };
        if late {
            violations.push(LeaseExpiryViolation {
                session: session.clone(),
                deadline_ns,
            });
        }
    }
    violations
}

#[cfg(test)]
mod tests {
    use super::*;

    fn abandoned(gone_ms: Option<u64>, watched_until_ms: u64) -> AbandonedSession {
        AbandonedSession {
            session: "7".into(),
            ttl_ms: 1_000,
            last_ack_ns: 3_000 * MS,
            gone_ns: gone_ms.map(|g| g * MS),
            watched_until_ns: watched_until_ms * MS,
        }
    }

    fn check(session: AbandonedSession, disturbed_ms: &[(u64, u64)]) -> Vec<LeaseExpiryViolation> {
        check_lease_expiry(&LeaseExpiryInput {
            sessions: vec![session],
            disturbed_ns: disturbed_ms.iter().map(|(a, b)| (a * MS, b * MS)).collect(),
        })
    }

    #[test]
    fn an_undisturbed_lease_must_end_within_twice_its_ttl_and_the_slack() {
        // 3_000 + 2 * 1_000 + 2_000 = 7_000.
        assert!(check(abandoned(Some(7_000), 20_000), &[]).is_empty());
        let v = check(abandoned(Some(7_001), 20_000), &[]);
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].deadline_ns, 7_000 * MS);
        assert!(v[0].to_string().contains("ended only at 7001"), "{}", v[0]);
        let v = check(abandoned(None, 20_000), &[]);
        assert!(v[0].to_string().contains("still live"), "{}", v[0]);
    }

    #[test]
    fn no_verdict_before_the_deadline_passed() {
        assert!(check(abandoned(None, 6_999), &[]).is_empty());
    }

    #[test]
    fn stalling_faults_in_the_window_stretch_it_and_chain() {
        // The first interval (2 s inside the window) stretches the deadline
        // to 7_000 + 2_000 + 1_500 = 10_500, which brings in the second
        // (500 ms + 1_500): 12_500. The third starts after that.
        let disturbed = [(4_000, 6_000), (10_000, 10_500), (12_600, 15_000)];
        let session = abandoned(Some(12_500), 20_000);
        assert_eq!(
            expiry_deadline_ns(&session, &disturbed.map(|(a, b)| (a * MS, b * MS))),
            12_500 * MS
        );
        assert!(check(session, &disturbed).is_empty());
        assert_eq!(check(abandoned(Some(12_501), 20_000), &disturbed).len(), 1);
        // Before the last acknowledged keepalive: no stretch.
        assert_eq!(
            check(abandoned(Some(7_001), 20_000), &[(0, 2_999)]).len(),
            1
        );
    }
}
