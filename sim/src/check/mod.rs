//! The checkers: pure functions from what a run recorded to the violations it
//! contains, plus the [`Violation`] and [`CheckReport`] types they share.
//!
//! Each checker lives in its own module and returns its own typed violation;
//! [`Violation`] wraps them so a run's report can list everything at once and
//! a person can read it (`Display`).

pub mod determinism;
pub mod durability;
pub mod grant_leak;
pub mod lease_expiry;
pub mod linearizability;
pub mod liveness;
pub mod lock_safety;
pub mod membership;
pub mod raft;

use std::fmt;

use crate::history::{ClientHistory, LockHistory, RaftHistory};
use crate::resource::AcceptedWrite;

pub use determinism::DeterminismViolation;
pub use durability::DurabilityViolation;
pub use grant_leak::GrantLeakViolation;
pub use lease_expiry::LeaseExpiryViolation;
pub use linearizability::LinearizabilityViolation;
pub use liveness::LivenessViolation;
pub use lock_safety::{FencingViolation, LockSafetyViolation};
pub use membership::MembershipViolation;
pub use raft::RaftViolation;

/// Which checker spoke.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Checker {
    Raft,
    Linearizability,
    LockSafety,
    Fencing,
    Durability,
    Liveness,
    LeaseExpiry,
    GrantLeak,
    Membership,
    Determinism,
}

impl fmt::Display for Checker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Checker::Raft => "raft",
            Checker::Linearizability => "linearizability",
            Checker::LockSafety => "lock-safety",
            Checker::Fencing => "fencing",
            Checker::Durability => "durability",
            Checker::Liveness => "liveness",
            Checker::LeaseExpiry => "lease-expiry",
            Checker::GrantLeak => "grant-leak",
            Checker::Membership => "membership",
            Checker::Determinism => "determinism",
        })
    }
}

/// Something unsafe (or dead) that a checker found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Violation {
    Raft(RaftViolation),
    Linearizability(Box<LinearizabilityViolation>),
    LockSafety(LockSafetyViolation),
    Fencing(FencingViolation),
    Durability(DurabilityViolation),
    Liveness(LivenessViolation),
    LeaseExpiry(LeaseExpiryViolation),
    GrantLeak(GrantLeakViolation),
    Membership(MembershipViolation),
    Determinism(DeterminismViolation),
}

impl Violation {
    pub fn checker(&self) -> Checker {
        match self {
            Violation::Raft(_) => Checker::Raft,
            Violation::Linearizability(_) => Checker::Linearizability,
            Violation::LockSafety(_) => Checker::LockSafety,
            Violation::Fencing(_) => Checker::Fencing,
            Violation::Durability(_) => Checker::Durability,
            Violation::Liveness(_) => Checker::Liveness,
            Violation::LeaseExpiry(_) => Checker::LeaseExpiry,
            Violation::GrantLeak(_) => Checker::GrantLeak,
            Violation::Membership(_) => Checker::Membership,
            Violation::Determinism(_) => Checker::Determinism,
        }
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}] ", self.checker())?;
        match self {
            Violation::Raft(v) => v.fmt(f),
            Violation::Linearizability(v) => v.fmt(f),
            Violation::LockSafety(v) => v.fmt(f),
            Violation::Fencing(v) => v.fmt(f),
            Violation::Durability(v) => v.fmt(f),
            Violation::Liveness(v) => v.fmt(f),
            Violation::LeaseExpiry(v) => v.fmt(f),
            Violation::GrantLeak(v) => v.fmt(f),
            Violation::Membership(v) => v.fmt(f),
            Violation::Determinism(v) => v.fmt(f),
        }
    }
}

impl std::error::Error for Violation {}

impl From<RaftViolation> for Violation {
    fn from(v: RaftViolation) -> Self {
        Violation::Raft(v)
    }
}
impl From<LinearizabilityViolation> for Violation {
    fn from(v: LinearizabilityViolation) -> Self {
        Violation::Linearizability(Box::new(v))
    }
}
impl From<LockSafetyViolation> for Violation {
    fn from(v: LockSafetyViolation) -> Self {
        Violation::LockSafety(v)
    }
}
impl From<FencingViolation> for Violation {
    fn from(v: FencingViolation) -> Self {
        Violation::Fencing(v)
    }
}
impl From<DurabilityViolation> for Violation {
    fn from(v: DurabilityViolation) -> Self {
        Violation::Durability(v)
    }
}
impl From<LivenessViolation> for Violation {
    fn from(v: LivenessViolation) -> Self {
        Violation::Liveness(v)
    }
}
impl From<LeaseExpiryViolation> for Violation {
    fn from(v: LeaseExpiryViolation) -> Self {
        Violation::LeaseExpiry(v)
    }
}
impl From<GrantLeakViolation> for Violation {
    fn from(v: GrantLeakViolation) -> Self {
        Violation::GrantLeak(v)
    }
}
impl From<MembershipViolation> for Violation {
    fn from(v: MembershipViolation) -> Self {
        Violation::Membership(v)
    }
}
impl From<DeterminismViolation> for Violation {
    fn from(v: DeterminismViolation) -> Self {
        Violation::Determinism(v)
    }
}

/// A check that could neither pass nor fail, e.g. a linearizability search
/// that hit its step bound. Counted so that "unknown" never looks like "ok".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inconclusive {
    pub checker: Checker,
    pub what: String,
}

impl fmt::Display for Inconclusive {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}] inconclusive: {}", self.checker, self.what)
    }
}

/// Everything every checker said about one run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CheckReport {
    /// The checkers that ran, in the order they ran.
    pub ran: Vec<Checker>,
    pub violations: Vec<Violation>,
    pub inconclusive: Vec<Inconclusive>,
}

impl CheckReport {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds the outcome of one checker.
    pub fn add<V: Into<Violation>>(&mut self, checker: Checker, violations: Vec<V>) {
        self.ran.push(checker);
        self.violations
            .extend(violations.into_iter().map(Into::into));
    }

    /// Adds the outcome of the linearizability checker, inconclusive
    /// partitions included.
    pub fn add_linearizability(&mut self, outcome: linearizability::LinearizabilityOutcome) {
        self.ran.push(Checker::Linearizability);
        for v in outcome.violations {
            self.violations.push(v.into());
        }
        for what in outcome.inconclusive {
            self.inconclusive.push(Inconclusive {
                checker: Checker::Linearizability,
                what,
            });
        }
    }

    /// No violation. Inconclusive checks do not fail a run but are reported.
    pub fn is_ok(&self) -> bool {
        self.violations.is_empty()
    }

    pub fn violations_of(&self, checker: Checker) -> impl Iterator<Item = &Violation> {
        self.violations
            .iter()
            .filter(move |v| v.checker() == checker)
    }
}

impl fmt::Display for CheckReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<String> = self.ran.iter().map(|c| c.to_string()).collect();
        writeln!(
            f,
            "checks run: {}; {} violation(s), {} inconclusive",
            names.join(", "),
            self.violations.len(),
            self.inconclusive.len()
        )?;
        for v in &self.violations {
            writeln!(f, "{v}")?;
        }
        for i in &self.inconclusive {
            writeln!(f, "{i}")?;
        }
        Ok(())
    }
}

/// Everything one run recorded, as the harness hands it to [`check_run`].
/// Durability and liveness are optional: a run without a heal phase has no
/// inputs for them. Determinism needs two runs: see
/// [`determinism::check_determinism`].
#[derive(Debug, Clone, Copy)]
pub struct RunInputs<'a> {
    pub raft: &'a RaftHistory,
    pub clients: &'a ClientHistory,
    pub locks: &'a LockHistory,
    /// `FencedResource::accepted()`, possibly joined with other fenced
    /// stores' accepted writes.
    pub accepted_writes: &'a [AcceptedWrite],
    pub durability: Option<&'a durability::DurabilityInput>,
    pub liveness: Option<&'a liveness::LivenessInput>,
    /// Sessions of crashed clients watched under leader churn.
    pub lease_expiry: Option<&'a lease_expiry::LeaseExpiryInput>,
    /// What the impatient client's session held at the end.
    pub grant_leak: Option<&'a grant_leak::GrantLeakInput>,
    /// The Raft observations of nodes running another founding's data
    /// dir: checked as a history of their own, never merged with `raft`.
    pub foreign_raft: Option<&'a RaftHistory>,
    /// Removed nodes and foreign data dirs of a reconfiguring run.
    pub membership: Option<&'a membership::MembershipInput>,
}

/// Runs every single-run checker and gathers their findings.
pub fn check_run(
    inputs: &RunInputs<'_>,
    config: &linearizability::LinearizabilityConfig,
) -> CheckReport {
    let mut report = CheckReport::new();
    let mut raft_violations = raft::check_raft(inputs.raft);
    if let Some(foreign) = inputs.foreign_raft {
        // One history per founding: each must be a correct Raft run alone.
        raft_violations.extend(raft::check_raft(foreign));
    }
    report.add(Checker::Raft, raft_violations);
    report.add_linearizability(linearizability::check_linearizability(
        inputs.clients,
        config,
    ));
    report.add(
        Checker::LockSafety,
        lock_safety::check_lock_safety(inputs.locks),
    );
    let mut fencing = lock_safety::check_fencing(inputs.accepted_writes, inputs.locks);
    fencing.extend(lock_safety::check_cluster_fencing(
        inputs.clients,
        inputs.locks,
    ));
    report.add(Checker::Fencing, fencing);
    if let Some(d) = inputs.durability {
        report.add(Checker::Durability, durability::check_durability(d));
    }
    if let Some(l) = inputs.liveness {
        report.add(Checker::Liveness, liveness::check_liveness(l));
    }
    if let Some(e) = inputs.lease_expiry {
        report.add(Checker::LeaseExpiry, lease_expiry::check_lease_expiry(e));
    }
    if let Some(g) = inputs.grant_leak {
        report.add(Checker::GrantLeak, grant_leak::check_grant_leak(g));
    }
    if let Some(m) = inputs.membership {
        let none = RaftHistory::new();
        let foreign = inputs.foreign_raft.unwrap_or(&none);
        report.add(
            Checker::Membership,
            membership::check_membership(inputs.raft, foreign, m),
        );
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::{
        KvInput, KvOutput, LockEvent, LockMode, NodeObservation, OpInput, OpOutput,
    };
    use crate::resource::FencedResource;

    #[test]
    fn a_clean_run_passes_and_a_bad_one_is_reported_per_checker() {
        let mut raft = RaftHistory::new();
        raft.record(1, NodeObservation::BecameLeader { node: 1, term: 1 });
        let mut clients = ClientHistory::new();
        let put = clients.invoke(
            1,
            10,
            OpInput::Kv(KvInput::Put {
                key: "k".into(),
                value: "v".into(),
                fence: None,
            }),
        );
        clients.complete(
            put,
            20,
            OpOutput::Kv(KvOutput::Written {
                size: 1,
                last_token: None,
            }),
        );
        let mut locks = LockHistory::new();
        locks.record(
            30,
            LockEvent::Granted {
                lock: "L".into(),
                session: "a".into(),
                client: 1,
                mode: LockMode::Exclusive,
                token: 2,
            },
        );
        let mut resource = FencedResource::new();
        resource.write(40, "db", "L", 2, 1);
        let config = linearizability::LinearizabilityConfig::default();
        let inputs = RunInputs {
            raft: &raft,
            clients: &clients,
            locks: &locks,
            accepted_writes: resource.accepted(),
            durability: None,
            liveness: None,
            lease_expiry: None,
            grant_leak: None,
            foreign_raft: None,
            membership: None,
        };
        let report = check_run(&inputs, &config);
        assert!(report.is_ok(), "{report}");
        assert_eq!(report.ran.len(), 4);

        // Break two checkers at once.
        raft.record(50, NodeObservation::BecameLeader { node: 2, term: 1 });
        let get = clients.invoke(2, 60, OpInput::Kv(KvInput::Get { key: "k".into() }));
        clients.complete(get, 70, OpOutput::Kv(KvOutput::NotFound));
        let liveness = liveness::LivenessInput {
            faults_stopped_ns: 100,
            first_leader_ns: None,
            probes: vec![],
            bound_ns: 10,
        };
        let accepted = resource.accepted();
        let inputs = RunInputs {
            raft: &raft,
            clients: &clients,
            locks: &locks,
            accepted_writes: accepted,
            durability: None,
            liveness: Some(&liveness),
            lease_expiry: None,
            grant_leak: None,
            foreign_raft: None,
            membership: None,
        };
        let report = check_run(&inputs, &config);
        assert_eq!(report.violations.len(), 3, "{report}");
        assert_eq!(report.violations_of(Checker::Raft).count(), 1);
        assert_eq!(report.violations_of(Checker::Linearizability).count(), 1);
        assert_eq!(report.violations_of(Checker::Liveness).count(), 1);
        let text = report.to_string();
        assert!(text.contains("3 violation(s)"), "{text}");
        assert!(text.contains("[raft] two leaders in term 1"), "{text}");
    }
}
