//! The structural invariants of the lock state, checked after every apply in
//! tests and on every restore:
//! - a lock entry exists only while held; nobody waits for a free lock (the
//!   head of a queue is never grantable: it would have been granted);
//! - an exclusive lock has exactly one holder; shared and exclusive holders
//!   never coexist;
//! - every holder and waiter belongs to a live session, and the session's
//!   `held`/`waiting` sets mirror the locks exactly;
//! - a session holds or waits for a lock, never both, and waits once per lock;
//! - every index (waiter deadlines, tombstones, idempotency) mirrors what it
//!   indexes, and every limit holds.
//!
//! Each sub-state checks its own fields; what spans two of them (the
//! sessions' mirror of the lock table, liveness of owners) is here.

use std::collections::{BTreeMap, BTreeSet};

use super::sessions::Sessions;
use super::LockStateMachine;
use crate::lock::name::LockName;
use crate::lock::SessionId;

/// Each session's locks as the lock table records them: what the sessions'
/// own `held`/`waiting` sets must equal.
#[derive(Debug, Default)]
pub(super) struct Mirror<'a> {
    held: BTreeMap<SessionId, BTreeSet<&'a str>>,
    waiting: BTreeMap<SessionId, BTreeSet<&'a str>>,
}

impl<'a> Mirror<'a> {
    /// `session` holds `name`.
    pub(super) fn hold(&mut self, session: SessionId, name: &'a LockName) -> Result<(), String> {
        if !self.held.entry(session).or_default().insert(name.as_str()) {
            return Err(format!("lock {name} held twice by {session}"));
        }
        Ok(())
    }

    /// `session` waits for `name` (after its holders were recorded).
    pub(super) fn wait(&mut self, session: SessionId, name: &'a LockName) -> Result<(), String> {
        if self
            .held
            .get(&session)
            .is_some_and(|s| s.contains(name.as_str()))
        {
            return Err(format!("{session} holds and waits for {name}"));
        }
        if !self
            .waiting
            .entry(session)
            .or_default()
            .insert(name.as_str())
        {
            return Err(format!("{session} waits twice for {name}"));
        }
        Ok(())
    }

    /// Every live session's sets equal what the lock table says.
    fn check_against(mut self, sessions: &Sessions) -> Result<(), String> {
        for (id, s) in sessions.iter() {
            let held: BTreeSet<&str> = s.held.iter().map(|n| n.as_str()).collect();
            let waiting: BTreeSet<&str> = s.waiting.iter().map(|n| n.as_str()).collect();
            if held != self.held.remove(&id).unwrap_or_default() {
                return Err(format!("session {id}: held set out of sync"));
            }
            if waiting != self.waiting.remove(&id).unwrap_or_default() {
                return Err(format!("session {id}: waiting set out of sync"));
            }
        }
        Ok(())
    }
}

/// Checks every invariant of `state`; Err names the first violation.
pub(super) fn check(state: &LockStateMachine) -> Result<(), String> {
    let is_live = |id| state.sessions.contains(id);
    let mirror = state.locks.check(is_live)?;
    mirror.check_against(&state.sessions)?;
    state.sessions.check(state.last_applied, state.clock_ms)?;
    state.idempotency.check(is_live, state.clock_ms)?;
    state.resources.check()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mirror_refuses_double_holds_and_hold_plus_wait() {
        let (a, b) = (LockName::new("a"), LockName::new("b"));
        let mut mirror = Mirror::default();
        mirror.hold(1, &a).unwrap();
        assert!(mirror.hold(1, &a).is_err());
        assert!(mirror.wait(1, &a).is_err());
        mirror.wait(1, &b).unwrap();
        assert!(mirror.wait(1, &b).is_err());
    }

    #[test]
    fn sessions_must_mirror_the_lock_table() {
        let a = LockName::new("a");
        let mut sessions = Sessions::default();
        sessions.insert(1, "", 10_000, false, 0);
        let mut mirror = Mirror::default();
        mirror.hold(1, &a).unwrap();
        assert!(mirror.check_against(&sessions).is_err());
        sessions.get_mut(1).expect("live").held.insert(a.clone());
        let mut mirror = Mirror::default();
        mirror.hold(1, &a).unwrap();
        assert_eq!(mirror.check_against(&sessions), Ok(()));
    }
}
