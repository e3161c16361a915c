//! The leader's view of session leases: when each live session's lease runs
//! out on the leader's own monotonic clock, so it can propose
//! `ExpireSessions`. Pure: the runtime feeds it times and applied commands.
//!
//! The rule: a session expires only after the leader has seen no keepalive
//! for a full TTL on its own clock. A new leader knows nothing of when the old
//! one last heard from a client, so [`LeaseTracker::on_became_leader`] grants
//! every live session a fresh full TTL from the election: a leader change or
//! a clock jump can delay an expiry, never bring it forward.

use std::collections::{BTreeMap, BTreeSet};

use super::command::{Acquire, CloseSession, Command, Envelope, Keepalive, Owner};
use super::state::LockStateMachine;
use super::types::{Applied, Reply, SessionId};

/// Lease deadlines of the live sessions, kept by the leader only.
#[derive(Debug, Clone, Default)]
pub struct LeaseTracker {
    /// session -> (ttl_ms, deadline_ms)
    leases: BTreeMap<SessionId, (u64, u64)>,
    /// (deadline_ms, session), for `expired` in deadline order.
    by_deadline: BTreeSet<(u64, SessionId)>,
}

impl LeaseTracker {
    pub fn new() -> Self {
        Self::default()
    }

    /// Forgets everything and gives every live session (id, ttl_ms) a full
    /// TTL from `now_ms`. Call on winning an election, with
    /// [`super::LockStateMachine::live_sessions`] after applying the log.
    pub fn on_became_leader(
        &mut self,
        now_ms: u64,
        live: impl IntoIterator<Item = (SessionId, u64)>,
    ) {
        self.leases.clear();
        self.by_deadline.clear();
        for (session, ttl_ms) in live {
            self.renew(session, ttl_ms, now_ms);
        }
    }

    /// Restarts the lease of a session (opened, kept alive, or acting).
    pub fn renew(&mut self, session: SessionId, ttl_ms: u64, now_ms: u64) {
        if let Some((_, old)) = self
            .leases
            .insert(session, (ttl_ms, now_ms.saturating_add(ttl_ms)))
        {
            self.by_deadline.remove(&(old, session));
        }
        self.by_deadline
            .insert((now_ms.saturating_add(ttl_ms), session));
    }

    /// Restarts the lease of a known session with its known TTL.
    pub fn on_keepalive(&mut self, session: SessionId, now_ms: u64) {
        if let Some(&(ttl_ms, _)) = self.leases.get(&session) {
            self.renew(session, ttl_ms, now_ms);
        }
    }

    pub fn on_session_ended(&mut self, session: SessionId) {
        if let Some((_, deadline)) = self.leases.remove(&session) {
            self.by_deadline.remove(&(deadline, session));
        }
    }

    /// Feeds one applied entry (leader only): opens, keepalives and acquires
    /// renew leases; ended sessions are forgotten.
    pub fn observe_applied(
        &mut self,
        now_ms: u64,
        envelope: &Envelope,
        applied: &Applied,
        state: &LockStateMachine,
    ) {
        if applied.replayed {
            // A cached reply changed nothing; renewing on it would bring an
            // ended session back to life here (and make this leader propose
            // a pointless `ExpireSessions` for it every maintenance tick).
            return;
        }
        match (&envelope.command, &applied.reply) {
            (_, Reply::SessionOpened { session_id, ttl_ms }) => {
                self.renew(*session_id, *ttl_ms, now_ms)
            }
            (Command::Keepalive(Keepalive { session_id }), Reply::KeptAlive { ttl_ms }) => {
                self.renew(*session_id, *ttl_ms, now_ms)
            }
            (
                Command::Acquire(Acquire {
                    owner: Owner::Ephemeral { ttl_ms },
                    ..
                }),
                Reply::Acquired(super::types::Grant { session_id, .. })
                | Reply::Queued { session_id, .. },
            ) => self.renew(*session_id, *ttl_ms, now_ms),
            (
                Command::Acquire(Acquire {
                    owner: Owner::Session(session_id),
                    ..
                }),
                _,
            ) => self.on_keepalive(*session_id, now_ms),
            _ => {}
        }
        for event in &applied.events {
            match event {
                // A grant after a wait starts the full TTL of a session that
                // could not be kept alive while it waited (an acquire without
                // a session); a session's own client renews its own.
                super::types::Event::Granted { session_id, .. }
                    if state.is_ephemeral(*session_id) =>
                {
                    self.on_keepalive(*session_id, now_ms)
                }
                super::types::Event::SessionExpired { session_id }
                | super::types::Event::SessionClosed { session_id } => {
                    self.on_session_ended(*session_id)
                }
                _ => {}
            }
        }
        if let (Command::CloseSession(CloseSession { session_id }), Reply::SessionClosed) =
            (&envelope.command, &applied.reply)
        {
            self.on_session_ended(*session_id);
        }
    }

    /// Sessions to propose `ExpireSessions` for at `now_ms`: those whose
    /// lease ran out, except sessions whose lease is carried by their wait
    /// ([`LockStateMachine::leased_by_its_wait`]), which get their TTL again
    /// instead (a waiting acquire without a session lives as long as its
    /// `wait_ms`, whatever its TTL, under any leader).
    pub fn due_for_expiry(&mut self, now_ms: u64, state: &LockStateMachine) -> Vec<SessionId> {
        let mut due = self.expired(now_ms);
        due.retain(|session| {
            if state.leased_by_its_wait(*session) {
                self.on_keepalive(*session, now_ms);
                false
            } else {
                true
            }
        });
        due
    }

    /// Sessions whose lease ran out at `now_ms`, in deadline order.
    pub fn expired(&self, now_ms: u64) -> Vec<SessionId> {
        self.by_deadline
            .iter()
            .take_while(|(deadline, _)| *deadline <= now_ms)
            .map(|(_, session)| *session)
            .collect()
    }

    /// Remaining lease of a session (`expires_in_ms` in the API).
    pub fn expires_in_ms(&self, session: SessionId, now_ms: u64) -> Option<u64> {
        self.leases
            .get(&session)
            .map(|(_, deadline)| deadline.saturating_sub(now_ms))
    }

    /// The earliest deadline, to arm a timer.
    pub fn next_deadline_ms(&self) -> Option<u64> {
        self.by_deadline.first().map(|(deadline, _)| *deadline)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lock::{ExpireSessions, OpenSession};

    #[test]
    fn expires_only_after_a_full_ttl_without_keepalive() {
        let mut t = LeaseTracker::new();
        t.renew(7, 1_000, 0);
        assert!(t.expired(999).is_empty());
        t.on_keepalive(7, 900);
        assert!(t.expired(1_899).is_empty());
        assert_eq!(t.expired(1_900), vec![7]);
        assert_eq!(t.expires_in_ms(7, 1_400), Some(500));
    }

    #[test]
    fn new_leader_grants_a_fresh_full_ttl() {
        let mut t = LeaseTracker::new();
        t.renew(1, 1_000, 0);
        // The new leader's clock may be anywhere; its election restarts leases.
        t.on_became_leader(50_000, [(1, 1_000), (2, 5_000)]);
        assert!(t.expired(50_999).is_empty());
        assert_eq!(t.expired(51_000), vec![1]);
        assert_eq!(t.expired(55_000), vec![1, 2]);
        t.on_session_ended(1);
        assert_eq!(t.next_deadline_ms(), Some(55_000));
    }

    #[test]
    fn drives_expiry_of_the_state_machine_across_a_leader_change() {
        use crate::lock::{Command, Envelope, LockStateMachine, Mode, Owner, Reply};
        let env = |now_ms, command| Envelope {
            now_ms,
            idempotency: None,
            command,
        };
        let mut sm = LockStateMachine::new();
        let mut leader = LeaseTracker::new();
        let open = env(
            0,
            Command::OpenSession(OpenSession {
                ttl_ms: 1_000,
                name: "w".into(),
            }),
        );
        let applied = sm.apply(1, &open);
        leader.observe_applied(0, &open, &applied, &sm);
        let acquire = env(
            0,
            Command::Acquire(Acquire {
                lock: "L".into(),
                owner: Owner::Session(1),
                mode: Mode::Exclusive,
                wait_ms: 0,
            }),
        );
        let applied = sm.apply(2, &acquire);
        leader.observe_applied(600, &acquire, &applied, &sm);
        assert!(
            leader.expired(1_599).is_empty(),
            "the acquire renewed the lease"
        );

        // Leader change at (new clock) 5_000: a fresh full TTL for everyone.
        let mut new_leader = LeaseTracker::new();
        new_leader.on_became_leader(5_000, sm.live_sessions());
        assert!(new_leader.expired(5_999).is_empty());
        let due = new_leader.expired(6_000);
        assert_eq!(due, vec![1]);
        let expire = env(
            6_000,
            Command::ExpireSessions(ExpireSessions { session_ids: due }),
        );
        let applied = sm.apply(3, &expire);
        assert_eq!(applied.reply, Reply::SessionsExpired { count: 1 });
        new_leader.observe_applied(6_000, &expire, &applied, &sm);
        assert_eq!(new_leader.next_deadline_ms(), None);
        assert_eq!(
            sm.lock("L").unwrap().state,
            crate::lock::LockState::Free,
            "expiry released the lock"
        );
    }

    /// Issue 13, bug 8: an acquire without a session that waits longer than
    /// its TTL keeps its place for all of `wait_ms` (nobody can keep its
    /// session alive meanwhile), under the leader that queued it and under a
    /// new one, and a grant after the wait starts its full TTL.
    #[test]
    fn a_waiting_acquire_without_a_session_lives_through_its_wait() {
        use crate::lock::{
            Acquire, Command, Envelope, LockStateMachine, Mode, OpenSession, Owner, Release, Reply,
        };
        let env = |now_ms, command| Envelope {
            now_ms,
            idempotency: None,
            command,
        };
        let mut sm = LockStateMachine::new();
        let mut leader = LeaseTracker::new();
        let open = env(
            0,
            Command::OpenSession(OpenSession {
                ttl_ms: 60_000,
                name: "holder".into(),
            }),
        );
        let applied = sm.apply(1, &open);
        leader.observe_applied(0, &open, &applied, &sm);
        let hold = env(
            0,
            Command::Acquire(Acquire {
                lock: "L".into(),
                owner: Owner::Session(1),
                mode: Mode::Exclusive,
                wait_ms: 0,
            }),
        );
        let applied = sm.apply(2, &hold);
        leader.observe_applied(0, &hold, &applied, &sm);
        let wait = env(
            0,
            Command::Acquire(Acquire {
                lock: "L".into(),
                owner: Owner::Ephemeral { ttl_ms: 1_000 },
                mode: Mode::Exclusive,
                wait_ms: 10_000,
            }),
        );
        let applied = sm.apply(3, &wait);
        let Reply::Queued {
            session_id: waiter, ..
        } = applied.reply
        else {
            panic!("queued: {applied:?}");
        };
        leader.observe_applied(0, &wait, &applied, &sm);

        // Past its TTL, still waiting: not due, under this leader or a new one.
        assert!(!leader.due_for_expiry(1_500, &sm).contains(&waiter));
        let mut new_leader = LeaseTracker::new();
        new_leader.on_became_leader(2_000, sm.live_sessions());
        assert!(!new_leader.due_for_expiry(3_500, &sm).contains(&waiter));

        // Granted at 6_000 (after 6 s of waiting): a full TTL from the grant.
        let release = env(
            6_000,
            Command::Release(Release {
                lock: "L".into(),
                session_id: 1,
                fencing_token: None,
            }),
        );
        let applied = sm.apply(4, &release);
        new_leader.observe_applied(6_000, &release, &applied, &sm);
        assert!(!new_leader.due_for_expiry(6_999, &sm).contains(&waiter));
        assert!(new_leader.due_for_expiry(7_000, &sm).contains(&waiter));
    }
}
