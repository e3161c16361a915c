//! The leader's view of session leases: when each live session's lease runs
//! out in state time, so it can propose `ExpireSessions`. Pure: the runtime
//! feeds it applied entries and the time it would stamp now.
//!
//! The rule: a session expires only after a full TTL of state time (the
//! cluster's replicated clock, `Envelope.now_ms` as the state machine keeps
//! it) without a renewal. The replicated state records the state time of
//! each session's last renewal ([`SessionLease::renewed_at_ms`], in
//! snapshots too), so a new leader carries every lease on where the log
//! left it: remaining = `ttl - (state_time_now - renewed_at)`, not a fresh
//! TTL from its election (issue 13, bug 6: with leaders changing faster
//! than the TTL, a crashed client's session never expired; etcd #9888).
//!
//! State time advances only by a leader's monotonic clock from the state
//! time it inherited and pauses between leaders, so an expiry is delayed by
//! each election gap (and by a leader's drift), never brought forward; and it
//! is never postponed by more than those gaps. A new leader starts measuring
//! only once it has applied its own first entry (the runtime calls
//! [`LeaseTracker::on_became_leader`] then): every renewal committed by the
//! leaders before it is applied by then. State time moves only with stamped
//! entries, and a new leader starts from the last stamp, so a leader with
//! leases to measure stamps an empty `ExpireSessions` when nothing else was
//! stamped for a fraction of [`LeaseTracker::shortest_ttl_ms`] (the
//! runtime's checkpoint): otherwise an idle cluster whose leaders change
//! fast would lose each leader's time and never expire anything.
//!
//! A session queued by an acquire without a session
//! ([`LockStateMachine::leased_by_its_wait`]) keeps its own rule: its wait
//! carries it, whatever its TTL, under any leader.

use std::collections::{BTreeMap, BTreeSet};

use super::command::{CloseSession, Command, Envelope};
use super::state::LockStateMachine;
use super::types::{Applied, Event, Reply, SessionId, SessionLease};

/// Lease deadlines of the live sessions in state time, kept by the leader
/// only.
#[derive(Debug, Clone, Default)]
pub struct LeaseTracker {
    /// session -> (ttl_ms, deadline_ms)
    leases: BTreeMap<SessionId, (u64, u64)>,
    /// (deadline_ms, session), for `expired` in deadline order.
    by_deadline: BTreeSet<(u64, SessionId)>,
    /// ttl_ms -> how many tracked leases have it, for the shortest.
    ttls: BTreeMap<u64, usize>,
}

impl LeaseTracker {
    pub fn new() -> Self {
        Self::default()
    }

    /// Forgets everything and takes every live session's lease from the
    /// replicated state: it runs out a TTL after its last renewal. Call
    /// when this leader applies the first entry of its term (everything
    /// committed before is applied then).
    pub fn on_became_leader(&mut self, state: &LockStateMachine) {
        self.leases.clear();
        self.by_deadline.clear();
        self.ttls.clear();
        for lease in state.session_leases() {
            self.track(lease);
        }
    }

    /// Runs `lease` out a TTL after its last renewal.
    fn track(&mut self, lease: SessionLease) {
        self.renew(lease.session_id, lease.ttl_ms, lease.renewed_at_ms);
    }

    /// Restarts the lease of a session at state time `now_ms`.
    pub fn renew(&mut self, session: SessionId, ttl_ms: u64, now_ms: u64) {
        let deadline = now_ms.saturating_add(ttl_ms);
        if let Some((old_ttl_ms, old)) = self.leases.insert(session, (ttl_ms, deadline)) {
            self.by_deadline.remove(&(old, session));
            self.forget_ttl(old_ttl_ms);
        }
        self.by_deadline.insert((deadline, session));
        *self.ttls.entry(ttl_ms).or_default() += 1;
    }

    fn forget_ttl(&mut self, ttl_ms: u64) {
        let count = self.ttls.get_mut(&ttl_ms).expect("a tracked TTL");
        *count -= 1;
        if *count == 0 {
            self.ttls.remove(&ttl_ms);
        }
    }

    /// Restarts the lease of a known session with its known TTL.
    pub fn on_keepalive(&mut self, session: SessionId, now_ms: u64) {
        if let Some(&(ttl_ms, _)) = self.leases.get(&session) {
            self.renew(session, ttl_ms, now_ms);
        }
    }

    pub fn on_session_ended(&mut self, session: SessionId) {
        if let Some((ttl_ms, deadline)) = self.leases.remove(&session) {
            self.by_deadline.remove(&(deadline, session));
            self.forget_ttl(ttl_ms);
        }
    }

    /// Feeds one applied entry (leader only): the sessions it renewed
    /// ([`Applied::renewed`], decided by the state machine) run a TTL from
    /// their recorded renewal; ended sessions are forgotten. A reply
    /// replayed from the idempotency cache renews nothing (a replayed
    /// keepalive once resurrected an ended session here).
    pub fn observe_applied(
        &mut self,
        envelope: &Envelope,
        applied: &Applied,
        state: &LockStateMachine,
    ) {
        for session in &applied.renewed {
            if let Some(lease) = state.session_lease(*session) {
                self.track(lease);
            }
        }
        for event in &applied.events {
            if let Event::SessionExpired { session_id } | Event::SessionClosed { session_id } =
                event
            {
                self.on_session_ended(*session_id);
            }
        }
        if let (Command::CloseSession(CloseSession { session_id }), Reply::SessionClosed) =
            (&envelope.command, &applied.reply)
        {
            self.on_session_ended(*session_id);
        }
    }

    /// Sessions to propose `ExpireSessions` for at state time `now_ms` (the
    /// time the leader would stamp now): those whose lease ran out, except
    /// sessions whose lease is carried by their wait
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

    /// Remaining lease of a session at state time `now_ms` (`expires_in_ms`
    /// in the API).
    pub fn expires_in_ms(&self, session: SessionId, now_ms: u64) -> Option<u64> {
        self.leases
            .get(&session)
            .map(|(_, deadline)| deadline.saturating_sub(now_ms))
    }

    /// The earliest deadline, to arm a timer.
    pub fn next_deadline_ms(&self) -> Option<u64> {
        self.by_deadline.first().map(|(deadline, _)| *deadline)
    }

    /// The shortest TTL among the tracked leases: the leader stamps state
    /// time at least a few times per such TTL (the runtime's checkpoints),
    /// since a lease runs out in state time and only stamped entries move it.
    pub fn shortest_ttl_ms(&self) -> Option<u64> {
        self.ttls.first_key_value().map(|(ttl_ms, _)| *ttl_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lock::{
        Acquire, Command, Envelope, ExpireSessions, Keepalive, LockStateMachine, Mode, OpenSession,
        Owner, Release, Reply,
    };

    fn env(now_ms: u64, command: Command) -> Envelope {
        Envelope {
            now_ms,
            idempotency: None,
            command,
        }
    }

    /// A state machine and the entries applied to it, with the leader's
    /// tracker (if any) fed as the runtime feeds it.
    struct Cluster {
        sm: LockStateMachine,
        index: u64,
    }

    impl Cluster {
        fn new() -> Self {
            Cluster {
                sm: LockStateMachine::new(),
                index: 0,
            }
        }

        fn apply(&mut self, now_ms: u64, command: Command, leader: &mut LeaseTracker) -> Applied {
            self.index += 1;
            let envelope = env(now_ms, command);
            let applied = self.sm.apply(self.index, &envelope);
            leader.observe_applied(&envelope, &applied, &self.sm);
            applied
        }

        fn open(&mut self, now_ms: u64, ttl_ms: u64, leader: &mut LeaseTracker) -> SessionId {
            let open = Command::OpenSession(OpenSession {
                ttl_ms,
                name: "s".into(),
            });
            match self.apply(now_ms, open, leader).reply {
                Reply::SessionOpened { session_id, .. } => session_id,
                other => panic!("{other:?}"),
            }
        }

        /// Another client's entry: only moves state time on.
        fn tick(&mut self, now_ms: u64, leader: &mut LeaseTracker) {
            let probe = Command::Keepalive(Keepalive { session_id: 999 });
            self.apply(now_ms, probe, leader);
        }
    }

    #[test]
    fn knows_the_shortest_ttl_tracked() {
        let mut t = LeaseTracker::new();
        assert_eq!(t.shortest_ttl_ms(), None);
        t.renew(1, 5_000, 0);
        t.renew(2, 2_000, 0);
        t.renew(3, 2_000, 0);
        assert_eq!(t.shortest_ttl_ms(), Some(2_000));
        t.on_session_ended(2);
        assert_eq!(t.shortest_ttl_ms(), Some(2_000));
        t.renew(3, 9_000, 10);
        assert_eq!(t.shortest_ttl_ms(), Some(5_000));
        t.on_session_ended(1);
        t.on_session_ended(3);
        assert_eq!(t.shortest_ttl_ms(), None);
    }

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

    /// Issue 13, bug 6: leaders changing every 300 ms of state time, far
    /// below the 1 s TTL. Each new leader takes the lease from the
    /// replicated state, so it runs out a TTL after the last keepalive
    /// (the old rule gave a fresh TTL at every election: never).
    #[test]
    fn leader_churn_faster_than_the_ttl_does_not_restart_leases() {
        let mut c = Cluster::new();
        let mut leader = LeaseTracker::new();
        let s = c.open(0, 1_000, &mut leader);
        c.apply(
            600,
            Command::Keepalive(Keepalive { session_id: s }),
            &mut leader,
        );
        let mut due_at = None;
        for now_ms in (700..5_000).step_by(300) {
            // A new leader, elected and past its first entry at `now_ms`.
            c.tick(now_ms, &mut leader);
            leader = LeaseTracker::new();
            leader.on_became_leader(&c.sm);
            assert_eq!(
                leader.expires_in_ms(s, now_ms),
                Some(1_600_u64.saturating_sub(now_ms))
            );
            if due_at.is_none() && leader.due_for_expiry(now_ms, &c.sm) == vec![s] {
                due_at = Some(now_ms);
            }
        }
        assert_eq!(
            due_at,
            Some(1_600),
            "the first leader at or past 600 + 1_000"
        );
    }

    /// A new leader's state time starts where the log's stamps left it, so
    /// a lease it inherits runs out no earlier than a TTL of state time
    /// after the renewal: an election gap delays it, nothing brings it
    /// forward, and a renewal it applies after its election (committed by
    /// the previous leader) still counts.
    #[test]
    fn an_inherited_lease_is_never_brought_forward() {
        let mut c = Cluster::new();
        let mut old = LeaseTracker::new();
        let s = c.open(10_000, 5_000, &mut old);
        c.tick(14_000, &mut old);
        let mut new_leader = LeaseTracker::new();
        new_leader.on_became_leader(&c.sm);
        assert!(new_leader.due_for_expiry(14_999, &c.sm).is_empty());
        // A keepalive of the old leader's, applied after the election.
        let keepalive = Command::Keepalive(Keepalive { session_id: s });
        c.apply(14_500, keepalive, &mut new_leader);
        assert!(new_leader.due_for_expiry(19_499, &c.sm).is_empty());
        assert_eq!(new_leader.due_for_expiry(19_500, &c.sm), vec![s]);
    }

    #[test]
    fn drives_expiry_of_the_state_machine_across_a_leader_change() {
        let mut c = Cluster::new();
        let mut leader = LeaseTracker::new();
        let s = c.open(0, 1_000, &mut leader);
        let acquire = Command::Acquire(Acquire {
            lock: "L".into(),
            owner: Owner::Session(s),
            mode: Mode::Exclusive,
            wait_ms: 0,
        });
        let applied = c.apply(600, acquire, &mut leader);
        assert_eq!(applied.renewed, vec![s], "the acquire renewed the lease");
        assert!(leader.expired(1_599).is_empty());

        // Leader change at state time 1_200: the lease keeps its deadline.
        c.tick(1_200, &mut leader);
        let mut new_leader = LeaseTracker::new();
        new_leader.on_became_leader(&c.sm);
        assert!(new_leader.expired(1_599).is_empty());
        let due = new_leader.due_for_expiry(1_600, &c.sm);
        assert_eq!(due, vec![s]);
        let expire = Command::ExpireSessions(ExpireSessions { session_ids: due });
        let applied = c.apply(1_600, expire, &mut new_leader);
        assert_eq!(applied.reply, Reply::SessionsExpired { count: 1 });
        assert_eq!(new_leader.next_deadline_ms(), None);
        assert_eq!(
            c.sm.lock("L").unwrap().state,
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
        let mut c = Cluster::new();
        let mut leader = LeaseTracker::new();
        let holder = c.open(0, 60_000, &mut leader);
        let hold = Command::Acquire(Acquire {
            lock: "L".into(),
            owner: Owner::Session(holder),
            mode: Mode::Exclusive,
            wait_ms: 0,
        });
        c.apply(0, hold, &mut leader);
        let wait = Command::Acquire(Acquire {
            lock: "L".into(),
            owner: Owner::Ephemeral { ttl_ms: 1_000 },
            mode: Mode::Exclusive,
            wait_ms: 10_000,
        });
        let Reply::Queued {
            session_id: waiter, ..
        } = c.apply(0, wait, &mut leader).reply
        else {
            panic!("not queued");
        };

        // Past its TTL, still waiting: not due, under this leader or a new one.
        assert!(!leader.due_for_expiry(1_500, &c.sm).contains(&waiter));
        c.tick(2_000, &mut leader);
        let mut new_leader = LeaseTracker::new();
        new_leader.on_became_leader(&c.sm);
        assert!(!new_leader.due_for_expiry(3_500, &c.sm).contains(&waiter));

        // Granted at 6_000 (after 6 s of waiting): a full TTL from the grant.
        let release = Command::Release(Release {
            lock: "L".into(),
            session_id: holder,
            fencing_token: None,
        });
        let applied = c.apply(6_000, release, &mut new_leader);
        assert_eq!(applied.renewed, vec![waiter], "the grant renewed it");
        assert!(!new_leader.due_for_expiry(6_999, &c.sm).contains(&waiter));
        assert!(new_leader.due_for_expiry(7_000, &c.sm).contains(&waiter));
    }
}
