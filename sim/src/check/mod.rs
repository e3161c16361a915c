//! The checkers: pure functions from what a run recorded to the violations it
//! contains, plus the [`Violation`] and [`CheckReport`] types they share.
//!
//! Each checker lives in its own module and returns its own typed violation;
//! [`Violation`] wraps them so a run's report can list everything at once and
//! a person can read it (`Display`).

pub mod determinism;
pub mod durability;
pub mod linearizability;
pub mod liveness;
pub mod lock_safety;
pub mod raft;

use std::fmt;

pub use determinism::DeterminismViolation;
pub use durability::DurabilityViolation;
pub use linearizability::LinearizabilityViolation;
pub use liveness::LivenessViolation;
pub use lock_safety::{FencingViolation, LockSafetyViolation};
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
            Violation::Determinism(v) => v.fmt(f),
        }
    }
}

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
