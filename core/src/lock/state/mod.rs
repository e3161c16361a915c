//! The lock state machine itself: applies committed envelopes, answers read
//! queries, and snapshots/restores itself.
//!
//! [`LockStateMachine`] owns its state in sub-states, each in its own file
//! with its own tests: [`sessions`] (live sessions and tombstones),
//! [`locks`] (the lock table and the waiter deadline index, over the
//! per-lock [`holders`] types), [`resources`] (fenced KV and stacks) and
//! [`idempotency`] (the exactly-once cache). This file holds what spans
//! them: applying a command (a grant changes a lock, its session's mirror,
//! an idempotency entry and the events at once) and the read views.
//! [`snapshot`] is the format, [`invariants`] the structural checks.

mod holders;
mod idempotency;
mod invariants;
mod locks;
mod resources;
mod sessions;
mod snapshot;

use std::collections::BTreeSet;

use self::holders::{Holder, Holders, LockEntry, Waiter};
use self::idempotency::IdempotencyCache;
use self::locks::{Locks, Released, Vacancy};
use self::resources::Resources;
use self::sessions::{check_ttl, Sessions};
pub use self::snapshot::SnapshotError;
use super::command::{
    Acquire, CloseSession, Command, Configure, Envelope, ExpireSessions, Idempotency, Keepalive,
    Owner, Release, Withdraw,
};
use super::name::LockName;
use super::types::{
    validate_name, Applied, Event, FencingToken, Grant, HolderView, KvView, LockError, LockList,
    LockState, LockView, Mode, NotFoundKind, Reply, SessionId, SessionLease, SessionLockView,
    SessionView, SessionWaitView, StackView, ValidateView, WaitEndReason, WaiterView,
};
use crate::api::limits::{
    IDEMPOTENCY_KEYS_MAX, IDEMPOTENCY_KEYS_MIN, LIST_LIMIT_DEFAULT, LIST_LIMIT_MAX,
    LOCKS_PER_SESSION_MAX, NAME_BYTES_MAX, WAIT_MS_MAX,
};
use crate::raft::LogIndex;

/// The replicated state. Every node holds one and applies the committed log
/// to it in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LockStateMachine {
    last_applied: LogIndex,
    /// High-water mark of the envelopes' `now_ms`: never goes back, even if a
    /// new leader's clock is behind the old one's.
    clock_ms: u64,
    sessions: Sessions,
    locks: Locks,
    resources: Resources,
    idempotency: IdempotencyCache,
}

/// What a command handler decides for the proposer.
type Outcome = Result<Reply, LockError>;

/// Who an acquire is for: an existing session, or the ephemeral session
/// (id = the entry's index) it opens if it gets or queues for the lock.
#[derive(Debug, Clone, Copy)]
struct Requester {
    session_id: SessionId,
    ephemeral_ttl_ms: Option<u64>,
}

impl LockStateMachine {
    pub fn new() -> Self {
        Self::default()
    }

    /// The index of the last applied entry (0 before any).
    pub fn last_applied(&self) -> LogIndex {
        self.last_applied
    }

    /// The state's clock: the largest `now_ms` applied so far.
    pub fn clock_ms(&self) -> u64 {
        self.clock_ms
    }

    /// Applies the committed entry at `index`. Indexes must increase.
    pub fn apply(&mut self, index: LogIndex, envelope: &Envelope) -> Applied {
        assert!(
            index > self.last_applied,
            "applying index {index} after {}",
            self.last_applied
        );
        self.last_applied = index;
        self.clock_ms = self.clock_ms.max(envelope.now_ms);
        // Tombstones and idempotency entries whose window has passed.
        self.sessions.prune_tombstones(self.clock_ms);
        self.idempotency.prune(self.clock_ms);

        let mut events = Vec::new();
        let (reply, replayed) = match &envelope.idempotency {
            None => (
                self.dispatch(index, &envelope.command, None, &mut events),
                false,
            ),
            Some(idem) => self.apply_keyed(index, &envelope.command, idem, &mut events),
        };
        // A cached reply changed nothing: it renews nothing either.
        let renewed = if replayed {
            Vec::new()
        } else {
            self.renew_leases(&envelope.command, &reply, &events)
        };
        Applied {
            reply,
            events,
            replayed,
            renewed,
        }
    }

    /// Records, at state time, the lease renewals an applied command makes,
    /// and returns the sessions renewed (in id order): the session a reply
    /// opened; a successful keepalive; any acquire by a live session (it
    /// acts, so its client lives); a grant after a wait to an ephemeral
    /// session, whose TTL starts at the grant (nobody could keep it alive
    /// while it waited). The one home of the rule: the leader's
    /// [`crate::lock::LeaseTracker`] follows `Applied::renewed`.
    fn renew_leases(
        &mut self,
        command: &Command,
        reply: &Reply,
        events: &[Event],
    ) -> Vec<SessionId> {
        let mut renewed = BTreeSet::new();
        match (command, reply) {
            (_, Reply::SessionOpened { session_id, .. }) => {
                renewed.insert(*session_id);
            }
            (Command::Keepalive(Keepalive { session_id }), Reply::KeptAlive { .. }) => {
                renewed.insert(*session_id);
            }
            (
                Command::Acquire(Acquire {
                    owner: Owner::Ephemeral { .. },
                    ..
                }),
                Reply::Acquired(Grant { session_id, .. }) | Reply::Queued { session_id, .. },
            ) => {
                renewed.insert(*session_id);
            }
            (
                Command::Acquire(Acquire {
                    owner: Owner::Session(session_id),
                    ..
                }),
                _,
            ) => {
                renewed.insert(*session_id);
            }
            _ => {}
        }
        for event in events {
            if let Event::Granted { session_id, .. } = event {
                if self.is_ephemeral(*session_id) {
                    renewed.insert(*session_id);
                }
            }
        }
        renewed.retain(|id| self.sessions.contains(*id));
        for id in &renewed {
            self.sessions.renew(*id, self.clock_ms);
        }
        renewed.into_iter().collect()
    }

    /// A keyed command: answered from (or refused by) the idempotency cache,
    /// or applied and its reply cached, owned by the session it acts for.
    /// The flag says the reply was answered without applying anything.
    fn apply_keyed(
        &mut self,
        index: LogIndex,
        command: &Command,
        idem: &Idempotency,
        events: &mut Vec<Event>,
    ) -> (Reply, bool) {
        if let Some(answer) = self.idempotency.admit(idem, self.clock_ms) {
            return (answer, true);
        }
        let reply = self.dispatch(index, command, Some(&idem.key), events);
        let owner = command.session_id().or(match &reply {
            Reply::SessionOpened { session_id, .. }
            | Reply::Acquired(Grant { session_id, .. })
            | Reply::Queued { session_id, .. } => Some(*session_id),
            _ => None,
        });
        let owner_live = owner.filter(|id| self.sessions.contains(*id));
        self.idempotency
            .record(idem, reply.clone(), owner_live, self.clock_ms);
        (reply, false)
    }

    fn dispatch(
        &mut self,
        index: LogIndex,
        command: &Command,
        idem_key: Option<&str>,
        events: &mut Vec<Event>,
    ) -> Reply {
        let outcome = match command {
            Command::OpenSession(cmd) => self.sessions.open(index, cmd, self.clock_ms),
            Command::Keepalive(cmd) => self.keepalive(cmd),
            Command::CloseSession(cmd) => self.close_session(index, cmd, events),
            Command::ExpireSessions(cmd) => self.expire_sessions(index, cmd, events),
            Command::Acquire(cmd) => self.acquire(index, cmd, idem_key),
            Command::Release(cmd) => self.release(index, cmd, events),
            Command::Withdraw(cmd) => self.withdraw(index, cmd, events),
            Command::ExpireWaiters => self.expire_waiters(index, events),
            Command::KvPut(cmd) => self.resources.kv_write(cmd, false, &self.locks),
            Command::KvAppend(cmd) => self.resources.kv_write(cmd, true, &self.locks),
            Command::StackPush(cmd) => self.resources.stack_push(cmd, &self.locks),
            Command::StackPop(cmd) => self.resources.stack_pop(cmd, &self.locks),
            Command::StackDelete(cmd) => self.resources.stack_delete(cmd, &self.locks),
            Command::Configure(cmd) => self.configure(cmd),
        };
        outcome.unwrap_or_else(Reply::Error)
    }

    fn configure(&mut self, cmd: &Configure) -> Outcome {
        let keys_max = cmd.idempotency_keys_max;
        if !(IDEMPOTENCY_KEYS_MIN..=IDEMPOTENCY_KEYS_MAX).contains(&keys_max) {
            return Err(LockError::invalid(
                "idempotency_keys_max",
                format!("must be {IDEMPOTENCY_KEYS_MIN}..={IDEMPOTENCY_KEYS_MAX}"),
            ));
        }
        self.idempotency.set_keys_max(keys_max, self.clock_ms);
        Ok(Reply::Configured)
    }

    /// This state as a snapshot from before the idempotency bound restores
    /// it (see `IdempotencyCache::restore`).
    #[cfg(test)]
    pub(crate) fn with_idempotency_ages_approximated(mut self) -> Self {
        self.idempotency = self.idempotency.with_ages_approximated();
        self
    }

    /// The replicated bound on kept idempotency outcomes.
    pub fn idempotency_keys_max(&self) -> u64 {
        self.idempotency.keys_max()
    }

    /// How long idempotency outcomes are kept now: the age of the last one
    /// the bound forced out within the last window, or `None` when the
    /// bound forced none out lately (the contract's windows hold).
    pub fn idempotency_window_ms(&self) -> Option<u64> {
        self.idempotency.effective_window_ms(self.clock_ms)
    }

    // ---------------------------------------------------------- sessions ---

    fn keepalive(&self, cmd: &Keepalive) -> Outcome {
        let s = self.sessions.live(cmd.session_id)?;
        Ok(Reply::KeptAlive { ttl_ms: s.ttl_ms })
    }

    fn close_session(
        &mut self,
        index: LogIndex,
        cmd: &CloseSession,
        events: &mut Vec<Event>,
    ) -> Outcome {
        self.sessions.live(cmd.session_id)?;
        self.end_session(index, cmd.session_id, false, events);
        Ok(Reply::SessionClosed)
    }

    fn expire_sessions(
        &mut self,
        index: LogIndex,
        cmd: &ExpireSessions,
        events: &mut Vec<Event>,
    ) -> Outcome {
        let mut expiring: Vec<SessionId> = Vec::with_capacity(cmd.session_ids.len());
        for id in &cmd.session_ids {
            if self.sessions.contains(*id) && !expiring.contains(id) {
                expiring.push(*id);
            }
        }
        // "A waiter whose session expires is never granted" (API.md): every
        // expiring session leaves every queue before any of their locks is
        // handed over, or releasing the first session's lock could grant it
        // to a second one expiring in this very entry (sim seed 305: an
        // exclusive and a shared grant with the same token).
        let mut left = BTreeSet::new();
        for id in &expiring {
            left.extend(self.leave_queues(*id, &Reply::Error(LockError::SessionExpired), events));
        }
        for id in &expiring {
            self.end_session(index, *id, true, events);
        }
        for lock in &left {
            self.promote(index, lock, events);
        }
        Ok(Reply::SessionsExpired {
            count: expiring.len() as u64,
        })
    }

    /// Ends a live session: its waits end, its holds are released and handed
    /// to the next waiters, all in this apply.
    fn end_session(
        &mut self,
        index: LogIndex,
        id: SessionId,
        expired: bool,
        events: &mut Vec<Event>,
    ) {
        let final_reply = Reply::Error(if expired {
            LockError::SessionExpired
        } else {
            LockError::NotFound {
                kind: NotFoundKind::Session,
            }
        });
        let left = self.leave_queues(id, &final_reply, events);
        let session = self.sessions.remove(id);
        for lock in &session.held {
            self.locks.remove_holder(lock, id);
        }
        for lock in session.held.iter().chain(&left) {
            self.promote(index, lock, events);
        }
        if expired {
            self.sessions.tombstone(id, self.clock_ms);
            events.push(Event::SessionExpired { session_id: id });
        } else {
            events.push(Event::SessionClosed { session_id: id });
        }
        self.idempotency.owner_ended(id, self.clock_ms);
    }

    /// Takes a live session out of every wait queue (their final answer is
    /// `final_reply`) without handing anything over; returns the locks it
    /// left, which the caller must `promote`.
    fn leave_queues(
        &mut self,
        id: SessionId,
        final_reply: &Reply,
        events: &mut Vec<Event>,
    ) -> BTreeSet<LockName> {
        let session = self.sessions.get_mut(id).expect("a live session");
        let waiting = std::mem::take(&mut session.waiting);
        for lock in &waiting {
            let waiter = self.locks.take_waiter_of(lock, id);
            if let Some(key) = &waiter.idempotency_key {
                self.idempotency.set_final_reply(key, final_reply.clone());
            }
            events.push(Event::WaitEnded {
                lock: lock.to_string(),
                session_id: id,
                reason: WaitEndReason::SessionGone,
                reply: final_reply.clone(),
            });
        }
        waiting
    }

    /// Ends an ephemeral session that holds and waits for nothing.
    fn end_if_idle_ephemeral(&mut self, index: LogIndex, id: SessionId, events: &mut Vec<Event>) {
        let idle = self
            .sessions
            .get(id)
            .is_some_and(|s| s.ephemeral && s.lock_count() == 0);
        if idle {
            self.end_session(index, id, false, events);
        }
    }

    // ------------------------------------------------------------- locks ---

    fn acquire(&mut self, index: LogIndex, cmd: &Acquire, idem_key: Option<&str>) -> Outcome {
        validate_name("lock", &cmd.lock)?;
        if cmd.wait_ms > WAIT_MS_MAX {
            return Err(LockError::invalid(
                "wait_ms",
                format!("must be 0..={WAIT_MS_MAX}"),
            ));
        }
        let requester = self.requester(index, cmd)?;
        let holder = Holder {
            session_id: requester.session_id,
            fencing_token: index,
            acquired_at_ms: self.clock_ms,
        };
        let name = match self.locks.create_if_vacant(&cmd.lock, cmd.mode, holder)? {
            Vacancy::Created(name) => return Ok(self.granted(requester, name, cmd.mode, index)),
            Vacancy::Exists(name) => name,
        };
        let entry = self.locks.entry(&name);
        if let Some(held) = entry.holders.find(requester.session_id) {
            return regrant(&entry.holders, held, cmd);
        }
        if let Some(pos) = entry.waiters.position(requester.session_id) {
            return self.ask_again(&name, pos, cmd);
        }
        if entry.grants_at_once(cmd.mode) {
            self.locks.add_holder(&name, cmd.mode, holder);
            return Ok(self.granted(requester, name, cmd.mode, index));
        }
        if cmd.wait_ms == 0 {
            return Err(self.lock_held(&entry.holders));
        }
        Locks::check_queue_room(entry)?;
        Ok(self.queue(requester, name, cmd, idem_key))
    }

    /// Queues the requester at the back of the lock's queue; the key of the
    /// acquire will answer with the wait's outcome.
    fn queue(
        &mut self,
        requester: Requester,
        name: LockName,
        cmd: &Acquire,
        idem_key: Option<&str>,
    ) -> Reply {
        let waiter = Waiter {
            session_id: requester.session_id,
            mode: cmd.mode,
            deadline_ms: self.clock_ms.saturating_add(cmd.wait_ms),
            idempotency_key: idem_key.map(Into::into),
        };
        let position = self.locks.enqueue(&name, waiter);
        self.open_ephemeral(requester);
        let session = self
            .sessions
            .get_mut(requester.session_id)
            .expect("live session");
        session.waiting.insert(name);
        Reply::Queued {
            session_id: requester.session_id,
            mode: cmd.mode,
            position,
        }
    }

    /// Resolves an acquire's owner, refusing what no lock state can change:
    /// a dead session or one at its lock limit, a bad ephemeral TTL, no room
    /// for another session.
    fn requester(&self, index: LogIndex, cmd: &Acquire) -> Result<Requester, LockError> {
        match cmd.owner {
            Owner::Session(id) => {
                let s = self.sessions.live(id)?;
                if s.lock_count() >= LOCKS_PER_SESSION_MAX
                    && !s.held.contains(cmd.lock.as_bytes())
                    && !s.waiting.contains(cmd.lock.as_bytes())
                {
                    return Err(LockError::invalid(
                        "lock",
                        format!(
                            "a session holds or waits for at most {LOCKS_PER_SESSION_MAX} locks"
                        ),
                    ));
                }
                Ok(Requester {
                    session_id: id,
                    ephemeral_ttl_ms: None,
                })
            }
            Owner::Ephemeral { ttl_ms } => {
                check_ttl(ttl_ms)?;
                self.sessions.check_room()?;
                Ok(Requester {
                    session_id: index,
                    ephemeral_ttl_ms: Some(ttl_ms),
                })
            }
        }
    }

    /// Opens the ephemeral session of an acquire that gets or queues.
    fn open_ephemeral(&mut self, requester: Requester) {
        if let Some(ttl_ms) = requester.ephemeral_ttl_ms {
            self.sessions
                .insert(requester.session_id, "", ttl_ms, true, self.clock_ms);
        }
    }

    /// The lock `name` was just granted to the requester at `index`: record
    /// it on the (possibly new) session.
    fn granted(
        &mut self,
        requester: Requester,
        name: LockName,
        mode: Mode,
        index: LogIndex,
    ) -> Reply {
        self.open_ephemeral(requester);
        let session = self
            .sessions
            .get_mut(requester.session_id)
            .expect("live session");
        session.held.insert(name);
        Reply::Acquired(Grant {
            session_id: requester.session_id,
            mode,
            fencing_token: index,
        })
    }

    /// An acquire by a session already queued for the lock: a try-lock is
    /// refused and keeps the place; a wait keeps the place and lasts until
    /// the later of the two deadlines.
    fn ask_again(&mut self, name: &LockName, pos: usize, cmd: &Acquire) -> Outcome {
        let entry = self.locks.entry(name);
        let waiter = &entry.waiters[pos];
        if waiter.mode != cmd.mode {
            return Err(mode_change(waiter.mode));
        }
        if cmd.wait_ms == 0 {
            return Err(self.lock_held(&entry.holders));
        }
        let session_id = waiter.session_id;
        let deadline_ms = self.clock_ms.saturating_add(cmd.wait_ms);
        self.locks.extend_wait(name, pos, deadline_ms);
        Ok(Reply::Queued {
            session_id,
            mode: cmd.mode,
            position: pos as u32 + 1,
        })
    }

    fn release(&mut self, index: LogIndex, cmd: &Release, events: &mut Vec<Event>) -> Outcome {
        validate_name("lock", &cmd.lock)?;
        self.sessions.live(cmd.session_id)?;
        let released = self.locks.release(cmd)?;
        let session = self.sessions.get_mut(cmd.session_id).expect("live");
        let removed = session.held.remove(cmd.lock.as_bytes());
        assert!(removed, "session.held mirrors the holders");
        if let Released::Waiters(name) = released {
            self.promote(index, &name, events);
        }
        self.end_if_idle_ephemeral(index, cmd.session_id, events);
        Ok(Reply::Released)
    }

    fn withdraw(&mut self, index: LogIndex, cmd: &Withdraw, events: &mut Vec<Event>) -> Outcome {
        validate_name("lock", &cmd.lock)?;
        self.sessions.live(cmd.session_id)?;
        let was_waiting = self.remove_waiter(
            index,
            &cmd.lock,
            cmd.session_id,
            WaitEndReason::Withdrawn,
            events,
        );
        Ok(Reply::Withdrawn { was_waiting })
    }

    /// Ends every wait whose deadline has come.
    fn expire_waiters(&mut self, index: LogIndex, events: &mut Vec<Event>) -> Outcome {
        let mut count = 0;
        for (_, session, lock) in self.locks.due_waiters(self.clock_ms) {
            let reason = WaitEndReason::TimedOut;
            if self.remove_waiter(index, lock.as_str(), session, reason, events) {
                count += 1;
            }
        }
        Ok(Reply::WaitersExpired { count })
    }

    /// Takes a session out of a lock's queue; true if it was there. Its
    /// final answer is `lock_held` with the current holders.
    fn remove_waiter(
        &mut self,
        index: LogIndex,
        lock: &str,
        session_id: SessionId,
        reason: WaitEndReason,
        events: &mut Vec<Event>,
    ) -> bool {
        let Some((name, waiter)) = self.locks.take_waiter(lock, session_id) else {
            return false;
        };
        let final_reply = Reply::Error(self.lock_held(&self.locks.entry(&name).holders));
        let session = self
            .sessions
            .get_mut(session_id)
            .expect("waiter's session is live");
        session.waiting.remove(&name);
        if let Some(key) = &waiter.idempotency_key {
            self.idempotency.set_final_reply(key, final_reply.clone());
        }
        events.push(Event::WaitEnded {
            lock: name.to_string(),
            session_id,
            reason,
            reply: final_reply,
        });
        self.promote(index, &name, events);
        self.end_if_idle_ephemeral(index, session_id, events);
        true
    }

    /// Grants the lock to the waiters at the head of its queue that fit, at
    /// token `index`, and tells their sessions, keys and requests.
    fn promote(&mut self, index: LogIndex, name: &LockName, events: &mut Vec<Event>) {
        for waiter in self.locks.grant_waiters(name, index, self.clock_ms) {
            let session = self
                .sessions
                .get_mut(waiter.session_id)
                .expect("every waiter belongs to a live session");
            session.waiting.remove(name);
            session.held.insert(name.clone());
            let grant = Grant {
                session_id: waiter.session_id,
                mode: waiter.mode,
                fencing_token: index,
            };
            if let Some(key) = &waiter.idempotency_key {
                self.idempotency
                    .set_final_reply(key, Reply::Acquired(grant));
            }
            events.push(Event::Granted {
                lock: name.to_string(),
                session_id: waiter.session_id,
                mode: waiter.mode,
                fencing_token: index,
            });
        }
    }

    /// `lock_held`, naming the holders.
    fn lock_held(&self, holders: &Holders) -> LockError {
        LockError::LockHeld {
            holders: self.holder_views(holders),
        }
    }

    fn holder_views(&self, holders: &Holders) -> Vec<HolderView> {
        holders
            .as_slice()
            .iter()
            .map(|h| HolderView {
                session_id: h.session_id,
                session_name: self
                    .sessions
                    .get(h.session_id)
                    .map(|s| s.name.to_string())
                    .unwrap_or_default(),
                fencing_token: h.fencing_token,
                acquired_at_ms: h.acquired_at_ms,
            })
            .collect()
    }

    // ----------------------------------------------------------- queries ---

    /// `GET /v1/locks/{name}`: a lock nobody holds or waits for is free.
    pub fn lock(&self, name: &str) -> Result<LockView, LockError> {
        validate_name("lock", name)?;
        Ok(match self.locks.get(name) {
            Some(entry) => self.lock_view(name, entry),
            None => LockView {
                lock: name.to_owned(),
                state: LockState::Free,
                mode: None,
                holders: Vec::new(),
                waiters: Vec::new(),
            },
        })
    }

    fn lock_view(&self, name: &str, entry: &LockEntry) -> LockView {
        LockView {
            lock: name.to_owned(),
            state: if entry.holders.is_free() {
                LockState::Free
            } else {
                LockState::Held
            },
            mode: entry.holders.mode(),
            holders: self.holder_views(&entry.holders),
            waiters: entry
                .waiters
                .iter()
                .map(|w| WaiterView {
                    session_id: w.session_id,
                    mode: w.mode,
                })
                .collect(),
        }
    }

    /// `GET /v1/locks?prefix&limit&after`: held or waited-for locks by name.
    pub fn list_locks(
        &self,
        prefix: &str,
        limit: Option<usize>,
        after: Option<&str>,
    ) -> Result<LockList, LockError> {
        let limit = limit.unwrap_or(LIST_LIMIT_DEFAULT as usize);
        if limit == 0 || limit > LIST_LIMIT_MAX as usize {
            return Err(LockError::invalid(
                "limit",
                format!("must be 1..={LIST_LIMIT_MAX}"),
            ));
        }
        if prefix.len() > NAME_BYTES_MAX {
            return Err(LockError::invalid("prefix", "longer than a name"));
        }
        let mut iter = self.locks.range_from(prefix, after);
        let locks: Vec<LockView> = iter
            .by_ref()
            .take(limit)
            .map(|(name, entry)| self.lock_view(name.as_str(), entry))
            .collect();
        let next = match iter.next() {
            Some(_) => locks.last().map(|l| l.lock.clone()),
            None => None,
        };
        Ok(LockList { locks, next })
    }

    /// `GET /v1/sessions/{id}` (without `expires_in_ms`).
    pub fn session(&self, id: SessionId) -> Result<SessionView, LockError> {
        let s = self.sessions.live(id)?;
        let locks = s
            .held
            .iter()
            .map(|name| {
                let entry = self.locks.entry(name);
                let h = entry.holders.find(id).expect("held mirrors holders");
                SessionLockView {
                    lock: name.to_string(),
                    mode: entry.holders.mode().expect("held"),
                    fencing_token: h.fencing_token,
                }
            })
            .collect();
        let waiting = s
            .waiting
            .iter()
            .map(|name| {
                let entry = self.locks.entry(name);
                let pos = entry
                    .waiters
                    .position(id)
                    .expect("waiting mirrors the queue");
                SessionWaitView {
                    lock: name.to_string(),
                    mode: entry.waiters[pos].mode,
                }
            })
            .collect();
        Ok(SessionView {
            session_id: id,
            name: s.name.to_string(),
            ttl_ms: s.ttl_ms,
            ephemeral: s.ephemeral,
            locks,
            waiting,
        })
    }

    /// How a wait of `session` for `lock` in `mode` ended, if it did: `None`
    /// while it still waits; else its grant if it holds the lock in that
    /// mode, or `lock_held` (a hold in the other mode, taken by another
    /// request of the session, is not this wait's grant).
    /// A `Queued` reply replayed from the idempotency cache (a resent
    /// acquire, or one that asked again while queued, whose key never
    /// learns the outcome) is answered with this when its wait is over, so
    /// that nobody waits for a wait that already ended.
    pub fn settled_wait(&self, lock: &str, session: SessionId, mode: Mode) -> Option<Reply> {
        let view = self.lock(lock).ok()?;
        if view.waiters.iter().any(|w| w.session_id == session) {
            return None;
        }
        let held = view.holders.iter().find(|h| h.session_id == session);
        Some(match (held, view.mode) {
            (Some(holder), Some(held_mode)) if held_mode == mode => Reply::Acquired(Grant {
                session_id: session,
                mode,
                fencing_token: holder.fencing_token,
            }),
            _ => Reply::Error(LockError::LockHeld {
                holders: view.holders,
            }),
        })
    }

    /// What a keyed acquire of `session` for `lock` came to, if it was
    /// applied (its key is recorded with this fingerprint): the wait's
    /// outcome once it ended (see [`Self::settled_wait`]), `Queued` while
    /// the session still waits. For a node whose caller's deadline passed
    /// before the answer: "applied and still waiting" is not an unknown
    /// outcome.
    pub fn acquire_outcome(
        &self,
        key: &str,
        fingerprint: u64,
        lock: &str,
        session: SessionId,
    ) -> Option<Reply> {
        match self.idempotency.recorded(key, fingerprint)? {
            queued @ Reply::Queued { mode, .. } => Some(
                self.settled_wait(lock, session, *mode)
                    .unwrap_or_else(|| queued.clone()),
            ),
            reply => Some(reply.clone()),
        }
    }

    pub fn is_ephemeral(&self, session: SessionId) -> bool {
        self.sessions.get(session).is_some_and(|s| s.ephemeral)
    }

    /// Whether a session's lease is carried by its wait rather than by
    /// keepalives: an ephemeral session (opened by an acquire without a
    /// session) that is queued. Nobody can keep it alive while it waits; its
    /// wait deadline ends it (`ExpireWaiters`, then it holds and waits for
    /// nothing and closes), and its TTL starts over at the grant.
    pub fn leased_by_its_wait(&self, session: SessionId) -> bool {
        self.sessions
            .get(session)
            .is_some_and(|s| s.ephemeral && !s.waiting.is_empty())
    }

    /// Every live session's lease: (id, ttl_ms, renewed_at_ms), the state
    /// time of its last renewal. What a new leader's lease tracker starts
    /// from.
    pub fn session_leases(&self) -> impl Iterator<Item = SessionLease> + '_ {
        self.sessions.iter().map(|(id, s)| SessionLease {
            session_id: id,
            ttl_ms: s.ttl_ms,
            renewed_at_ms: s.renewed_at_ms,
        })
    }

    /// This state as a snapshot older than version 3 restores it: every
    /// session renewed at the state's time.
    #[cfg(test)]
    pub(crate) fn with_leases_renewed_at_its_clock(mut self) -> Self {
        let ids: Vec<SessionId> = self.sessions.iter().map(|(id, _)| id).collect();
        for id in ids {
            self.sessions.get_mut(id).expect("live").renewed_at_ms = self.clock_ms;
        }
        self
    }

    /// The lease of live session `id`, if any.
    pub fn session_lease(&self, id: SessionId) -> Option<SessionLease> {
        self.sessions.get(id).map(|s| SessionLease {
            session_id: id,
            ttl_ms: s.ttl_ms,
            renewed_at_ms: s.renewed_at_ms,
        })
    }

    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    pub fn lock_count(&self) -> usize {
        self.locks.len()
    }

    /// `GET /v1/kv/{key}`.
    pub fn kv_get(&self, key: &str) -> Result<KvView, LockError> {
        self.resources.kv_get(key)
    }

    /// `GET /v1/stacks/{name}`.
    pub fn stack(&self, name: &str) -> Result<StackView, LockError> {
        self.resources.stack(name)
    }

    /// `POST /v1/locks/{name}/validate`.
    pub fn validate(&self, lock: &str, token: FencingToken) -> Result<ValidateView, LockError> {
        validate_name("lock", lock)?;
        let holders = self.locks.get(lock).map(|e| &e.holders);
        Ok(ValidateView {
            valid: holders.is_some_and(|h| h.as_slice().iter().any(|h| h.fencing_token == token)),
            current_token: holders.and_then(Holders::newest_token),
        })
    }

    /// The earliest waiter deadline: when the leader should propose
    /// `ExpireWaiters`.
    pub fn next_waiter_deadline_ms(&self) -> Option<u64> {
        self.locks.next_waiter_deadline_ms()
    }

    // ------------------------------------------- invariants and snapshots ---

    /// Checks every structural invariant (see `invariants.rs`); Err names
    /// the first violation.
    pub fn check_invariants(&self) -> Result<(), String> {
        invariants::check(self)
    }

    /// The whole state as bytes: a versioned postcard payload with a checksum.
    pub fn snapshot(&self) -> Vec<u8> {
        snapshot::encode(self)
    }

    /// Rebuilds a state from [`Self::snapshot`] bytes. Bad bytes and
    /// inconsistent contents are errors, never panics.
    pub fn restore(bytes: &[u8]) -> Result<Self, SnapshotError> {
        let state = snapshot::decode(bytes)?;
        state
            .check_invariants()
            .map_err(SnapshotError::Inconsistent)?;
        Ok(state)
    }
}

/// An acquire by a session that already holds the lock: the same grant
/// again in the same mode; a mode change is refused.
fn regrant(holders: &Holders, held: &Holder, cmd: &Acquire) -> Outcome {
    let held_mode = holders.mode().expect("has a holder");
    if held_mode != cmd.mode {
        return Err(mode_change(held_mode));
    }
    Ok(Reply::Acquired(Grant {
        session_id: held.session_id,
        mode: cmd.mode,
        fencing_token: held.fencing_token,
    }))
}

fn mode_change(held: Mode) -> LockError {
    LockError::invalid(
        "mode",
        format!(
            "this session already has the lock in {} mode; upgrading or downgrading is not \
             supported: release it first",
            held.as_str()
        ),
    )
}

#[cfg(test)]
mod tests;
