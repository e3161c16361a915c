//! An impatient client leaves nothing behind: once every `Lock` of its
//! session is gone and its calls have had time to settle, a session whose
//! lease the client still trusts holds no lock and waits for nothing.
//!
//! Issue 13 (suspected item 2): a `Session::lock` future dropped after its
//! grant committed left the lock with the session for its whole life; four
//! reviews of the fix then found grants released under live handles, grants
//! held by nobody, and abandoned waits left queued, all with callers that
//! give up (timeouts), drop handles, and release while other calls of the
//! same session are in flight. The simulation's impatient client
//! (`world/impatient.rs`) does all of that under faults.

use std::fmt;

use crate::history::SessionId;

/// What the harness saw of the impatient client's session at the end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrantLeakInput {
    pub session: SessionId,
    /// Locks the session still held (name and fencing token).
    pub held: Vec<(String, u64)>,
    /// Locks it still waited for.
    pub waiting: Vec<String>,
    /// How long after the last handle was dropped the harness looked.
    pub settled_ms: u64,
}

/// The session kept something nobody of the client knows of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrantLeakViolation {
    pub input: GrantLeakInput,
}

impl fmt::Display for GrantLeakViolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let i = &self.input;
        write!(
            f,
            "impatient client's live session {} still held {:?} and waited for {:?} {} ms \
             after its last Lock was dropped (a grant held by nobody, or an abandoned wait)",
            i.session, i.held, i.waiting, i.settled_ms
        )
    }
}

pub fn check_grant_leak(input: &GrantLeakInput) -> Vec<GrantLeakViolation> {
    if input.held.is_empty() && input.waiting.is_empty() {
        Vec::new()
    } else {
        vec![GrantLeakViolation {
            input: input.clone(),
        }]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn anything_held_or_waited_for_is_a_violation() {
        let clean = GrantLeakInput {
            session: "7".into(),
            held: Vec::new(),
            waiting: Vec::new(),
            settled_ms: 8_000,
        };
        assert!(check_grant_leak(&clean).is_empty());
        let held = GrantLeakInput {
            held: vec![("imp/0".into(), 42)],
            ..clean.clone()
        };
        assert_eq!(check_grant_leak(&held).len(), 1);
        let waiting = GrantLeakInput {
            waiting: vec!["imp/1".into()],
            ..clean
        };
        assert_eq!(check_grant_leak(&waiting).len(), 1);
    }
}
