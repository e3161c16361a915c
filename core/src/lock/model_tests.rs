//! Proptest state-machine test (long: the reference model, its generators
//! and the comparison are read together): random command sequences go to
//! the real [`LockStateMachine`] and to a small reference model written here
//! from the API contract, without sharing code with it. Replies, events and every
//! observable view must agree, and the safety invariants must hold after each
//! step.
//!
//! The model keeps everything in plain vectors and scans them; it never
//! forgets (test runs stay far inside the 10-minute windows) and checks rules
//! in the order the API contract lists them.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;

use super::*;
use crate::api::limits::{IDEMPOTENCY_WINDOW_MS, KV_VALUE_BYTES_MAX, LIST_LIMIT_MAX};
use crate::raft::LogIndex;

#[derive(Debug, Clone, PartialEq)]
struct MHold {
    session: SessionId,
    mode: Mode,
    token: FencingToken,
    at_ms: u64,
}

#[derive(Debug, Clone, PartialEq)]
struct MWait {
    session: SessionId,
    mode: Mode,
    deadline_ms: u64,
    key: Option<String>,
}

#[derive(Debug, Clone)]
struct MSession {
    name: String,
    ttl_ms: u64,
    ephemeral: bool,
}

/// The reference model.
#[derive(Debug, Default)]
struct Model {
    clock_ms: u64,
    sessions: BTreeMap<SessionId, MSession>,
    expired: BTreeSet<SessionId>,
    /// lock -> holders in grant order; absent or empty = free.
    holds: BTreeMap<String, Vec<MHold>>,
    /// lock -> FIFO queue.
    queues: BTreeMap<String, Vec<MWait>>,
    kv: BTreeMap<String, (String, Option<u64>)>,
    stacks: BTreeMap<String, (Vec<String>, Option<u64>)>,
    cache: BTreeMap<String, (u64, Reply)>,
    /// Acknowledged low-water mark of prefix `c`: (acked_below, touched_ms).
    mark: Option<(u64, u64)>,
}

fn err(e: LockError) -> Reply {
    Reply::Error(e)
}

fn invalid(field: &str) -> Reply {
    err(LockError::InvalidRequest {
        field: field.into(),
        message: String::new(),
    })
}

fn name_ok(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 256
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._:/-".contains(c))
}

impl Model {
    fn session_error(&self, id: SessionId) -> Option<Reply> {
        if self.sessions.contains_key(&id) {
            None
        } else if self.expired.contains(&id) {
            Some(err(LockError::SessionExpired))
        } else {
            Some(err(LockError::NotFound {
                kind: NotFoundKind::Session,
            }))
        }
    }

    fn holders(&self, lock: &str) -> Vec<MHold> {
        self.holds.get(lock).cloned().unwrap_or_default()
    }

    fn queue(&self, lock: &str) -> Vec<MWait> {
        self.queues.get(lock).cloned().unwrap_or_default()
    }

    fn holder_views(&self, lock: &str) -> Vec<HolderView> {
        self.holders(lock)
            .iter()
            .map(|h| HolderView {
                session_id: h.session,
                session_name: self.sessions[&h.session].name.clone(),
                fencing_token: h.token,
                acquired_at_ms: h.at_ms,
            })
            .collect()
    }

    /// Whether a request of `mode` may join the current holders.
    fn compatible(&self, lock: &str, mode: Mode) -> bool {
        let hs = self.holders(lock);
        hs.is_empty() || (mode == Mode::Shared && hs.iter().all(|h| h.mode == Mode::Shared))
    }

    /// Grants from the head of the queue while the head fits.
    fn settle(&mut self, lock: &str, index: LogIndex, events: &mut Vec<Event>) {
        loop {
            let q = self.queue(lock);
            let Some(head) = q.first().cloned() else {
                break;
            };
            if !self.compatible(lock, head.mode) {
                break;
            }
            self.queues.get_mut(lock).unwrap().remove(0);
            self.holds.entry(lock.into()).or_default().push(MHold {
                session: head.session,
                mode: head.mode,
                token: index,
                at_ms: self.clock_ms,
            });
            let grant = Grant {
                session_id: head.session,
                mode: head.mode,
                fencing_token: index,
            };
            // An acknowledged key's entry is gone; nothing to update.
            if let Some(entry) = head.key.as_ref().and_then(|k| self.cache.get_mut(k)) {
                entry.1 = Reply::Acquired(grant);
            }
            events.push(Event::Granted {
                lock: lock.into(),
                session_id: head.session,
                mode: head.mode,
                fencing_token: index,
            });
        }
    }

    fn locks_of(&self, s: SessionId) -> (Vec<String>, Vec<String>) {
        let held = self
            .holds
            .iter()
            .filter(|(_, hs)| hs.iter().any(|h| h.session == s))
            .map(|(l, _)| l.clone())
            .collect();
        let waiting = self
            .queues
            .iter()
            .filter(|(_, q)| q.iter().any(|w| w.session == s))
            .map(|(l, _)| l.clone())
            .collect();
        (held, waiting)
    }

    fn end_session(&mut self, s: SessionId, expired: bool, index: LogIndex, ev: &mut Vec<Event>) {
        let final_reply = if expired {
            err(LockError::SessionExpired)
        } else {
            err(LockError::NotFound {
                kind: NotFoundKind::Session,
            })
        };
        let waiting = self.leave_queues(s, &final_reply, ev);
        let (held, _) = self.locks_of(s);
        for l in &held {
            self.holds.get_mut(l).unwrap().retain(|h| h.session != s);
        }
        let affected: BTreeSet<String> = held.into_iter().chain(waiting).collect();
        // The session is gone before the hand-over (its name is not needed).
        self.sessions.remove(&s);
        for l in affected {
            self.settle(&l, index, ev);
        }
        if expired {
            self.expired.insert(s);
            ev.push(Event::SessionExpired { session_id: s });
        } else {
            ev.push(Event::SessionClosed { session_id: s });
        }
    }

    /// Takes `s` out of every queue without handing anything over; returns
    /// the locks it left.
    fn leave_queues(
        &mut self,
        s: SessionId,
        final_reply: &Reply,
        ev: &mut Vec<Event>,
    ) -> Vec<String> {
        let (_, waiting) = self.locks_of(s);
        for l in &waiting {
            let q = self.queues.get_mut(l).unwrap();
            let pos = q.iter().position(|w| w.session == s).unwrap();
            let w = q.remove(pos);
            if let Some(entry) = w.key.and_then(|k| self.cache.get_mut(&k)) {
                entry.1 = final_reply.clone();
            }
            ev.push(Event::WaitEnded {
                lock: l.clone(),
                session_id: s,
                reason: WaitEndReason::SessionGone,
                reply: final_reply.clone(),
            });
        }
        waiting.into_iter().collect()
    }

    fn end_if_idle_ephemeral(&mut self, s: SessionId, index: LogIndex, ev: &mut Vec<Event>) {
        if self.sessions.get(&s).is_some_and(|x| x.ephemeral) {
            let (h, w) = self.locks_of(s);
            if h.is_empty() && w.is_empty() {
                self.end_session(s, false, index, ev);
            }
        }
    }

    fn remove_waiter(
        &mut self,
        lock: &str,
        s: SessionId,
        reason: WaitEndReason,
        index: LogIndex,
        ev: &mut Vec<Event>,
    ) -> bool {
        let Some(pos) = self.queue(lock).iter().position(|w| w.session == s) else {
            return false;
        };
        let final_reply = err(LockError::LockHeld {
            holders: self.holder_views(lock),
        });
        let w = self.queues.get_mut(lock).unwrap().remove(pos);
        if let Some(entry) = w.key.and_then(|k| self.cache.get_mut(&k)) {
            entry.1 = final_reply.clone();
        }
        ev.push(Event::WaitEnded {
            lock: lock.into(),
            session_id: s,
            reason,
            reply: final_reply,
        });
        self.settle(lock, index, ev);
        self.end_if_idle_ephemeral(s, index, ev);
        true
    }

    fn fence(&self, fence: &Option<Fence>, last: Option<u64>) -> Result<Option<u64>, Reply> {
        let Some(f) = fence else { return Ok(None) };
        if !name_ok(&f.lock) {
            return Err(invalid("lock"));
        }
        let hs = self.holders(&f.lock);
        let holder = match hs.as_slice() {
            [h] if h.mode == Mode::Exclusive => h.token,
            _ => return Err(err(LockError::NotHolder)),
        };
        if f.fencing_token < holder {
            return Err(err(LockError::StaleToken {
                current_token: Some(holder),
            }));
        }
        if f.fencing_token > holder {
            return Err(err(LockError::NotHolder));
        }
        if let Some(last) = last.filter(|l| f.fencing_token < *l) {
            return Err(err(LockError::StaleToken {
                current_token: Some(last),
            }));
        }
        Ok(Some(f.fencing_token))
    }

    fn apply(&mut self, index: LogIndex, env: &Envelope) -> (Reply, Vec<Event>) {
        self.clock_ms = self.clock_ms.max(env.now_ms);
        if self
            .mark
            .is_some_and(|(_, t)| t + IDEMPOTENCY_WINDOW_MS <= self.clock_ms)
        {
            self.mark = None;
        }
        let mut ev = Vec::new();
        if let Some(idem) = &env.idempotency {
            // Keys are `c-<seq>`; an ack drops the client's lower seqs.
            if let (Some(n), Some(seq)) = (
                idem.acked_below,
                idem.key
                    .strip_prefix("c-")
                    .and_then(|s| s.parse::<u64>().ok()),
            ) {
                if n > seq {
                    return (invalid("Idempotency-Acked-Below"), ev);
                }
            }
            // The mark of prefix `c`: raised by acks, refreshed by every
            // keyed request, gone after a window without one; a key below it
            // is refused and not cached.
            if let Some(seq) = idem
                .key
                .strip_prefix("c-")
                .and_then(|s| s.parse::<u64>().ok())
            {
                let n = idem.acked_below.unwrap_or(0);
                let now = self.clock_ms;
                let mark = match self.mark {
                    Some((m, _)) => Some((m.max(n), now)),
                    None if n > 0 => Some((n, now)),
                    None => None,
                };
                self.mark = mark;
                if mark.is_some_and(|(m, _)| seq < m) {
                    // The ack (if any) still drops entries below it.
                    self.cache.retain(|k, _| {
                        k.strip_prefix("c-")
                            .and_then(|s| s.parse::<u64>().ok())
                            .is_none_or(|m| m >= n)
                    });
                    return (invalid("Idempotency-Key"), ev);
                }
            }
            if let (Some(n), Some(_)) = (
                idem.acked_below,
                idem.key
                    .strip_prefix("c-")
                    .and_then(|s| s.parse::<u64>().ok()),
            ) {
                self.cache.retain(|k, _| {
                    k.strip_prefix("c-")
                        .and_then(|s| s.parse::<u64>().ok())
                        .is_none_or(|m| m >= n)
                });
            }
            if let Some((fp, reply)) = self.cache.get(&idem.key) {
                if *fp == idem.fingerprint {
                    return (reply.clone(), ev);
                }
                return (invalid("Idempotency-Key"), ev);
            }
        }
        let key = env.idempotency.as_ref().map(|i| i.key.clone());
        // A queued waiter records its key before the entry exists; the entry
        // is written right after, so write a placeholder first.
        if let Some(idem) = &env.idempotency {
            self.cache
                .insert(idem.key.clone(), (idem.fingerprint, Reply::Released));
        }
        let reply = self.run(index, &env.command, key.clone(), &mut ev);
        if let Some(k) = key {
            self.cache.get_mut(&k).unwrap().1 = reply.clone();
        }
        (reply, ev)
    }

    fn run(
        &mut self,
        index: LogIndex,
        cmd: &Command,
        key: Option<String>,
        ev: &mut Vec<Event>,
    ) -> Reply {
        match cmd {
            Command::OpenSession(c) => self.open(index, c),
            Command::Keepalive(Keepalive { session_id }) => match self.session_error(*session_id) {
                Some(e) => e,
                None => Reply::KeptAlive {
                    ttl_ms: self.sessions[session_id].ttl_ms,
                },
            },
            Command::CloseSession(CloseSession { session_id }) => {
                match self.session_error(*session_id) {
                    Some(e) => e,
                    None => {
                        self.end_session(*session_id, false, index, ev);
                        Reply::SessionClosed
                    }
                }
            }
            Command::ExpireSessions(c) => self.expire_sessions(c, index, ev),
            Command::Acquire(c) => self.acquire(c, index, key),
            Command::Release(c) => self.release(c, index, ev),
            Command::Withdraw(Withdraw { lock, session_id }) => {
                if !name_ok(lock) {
                    return invalid("lock");
                }
                if let Some(e) = self.session_error(*session_id) {
                    return e;
                }
                let was_waiting =
                    self.remove_waiter(lock, *session_id, WaitEndReason::Withdrawn, index, ev);
                Reply::Withdrawn { was_waiting }
            }
            Command::ExpireWaiters => self.expire_waiters(index, ev),
            Command::KvPut(c) => self.kv_write(c, false),
            Command::KvAppend(c) => self.kv_write(c, true),
            Command::StackPush(c) => self.push(c),
            Command::StackPop(c) => self.pop(c),
            Command::StackDelete(c) => self.delete_stack(c),
            // Not generated: the model's cache is unbounded, the real
            // default bound is never reached here.
            Command::Configure(_) => unreachable!("the model does not configure"),
        }
    }

    fn open(&mut self, index: LogIndex, c: &OpenSession) -> Reply {
        if !(1_000..=3_600_000).contains(&c.ttl_ms) {
            return invalid("ttl_ms");
        }
        self.sessions.insert(
            index,
            MSession {
                name: c.name.clone(),
                ttl_ms: c.ttl_ms,
                ephemeral: false,
            },
        );
        Reply::SessionOpened {
            session_id: index,
            ttl_ms: c.ttl_ms,
        }
    }

    fn expire_sessions(
        &mut self,
        c: &ExpireSessions,
        index: LogIndex,
        ev: &mut Vec<Event>,
    ) -> Reply {
        let mut expiring: Vec<SessionId> = Vec::new();
        for s in &c.session_ids {
            if self.sessions.contains_key(s) && !expiring.contains(s) {
                expiring.push(*s);
            }
        }
        // Every expiring session leaves every queue first: a waiter
        // whose session expires is never granted.
        let mut left = BTreeSet::new();
        for s in &expiring {
            left.extend(self.leave_queues(*s, &err(LockError::SessionExpired), ev));
        }
        for s in &expiring {
            self.end_session(*s, true, index, ev);
        }
        for l in left {
            self.settle(&l, index, ev);
        }
        Reply::SessionsExpired {
            count: expiring.len() as u64,
        }
    }

    fn acquire(&mut self, c: &Acquire, index: LogIndex, key: Option<String>) -> Reply {
        let Acquire {
            lock,
            owner,
            mode,
            wait_ms,
        } = c;
        if !name_ok(lock) {
            return invalid("lock");
        }
        if *wait_ms > 300_000 {
            return invalid("wait_ms");
        }
        let s = match owner {
            Owner::Session(s) => {
                if let Some(e) = self.session_error(*s) {
                    return e;
                }
                *s
            }
            Owner::Ephemeral { ttl_ms } => {
                if !(1_000..=3_600_000).contains(ttl_ms) {
                    return invalid("ttl_ms");
                }
                index
            }
        };
        if let Some(h) = self.holders(lock).iter().find(|h| h.session == s) {
            if h.mode != *mode {
                return invalid("mode");
            }
            return Reply::Acquired(Grant {
                session_id: s,
                mode: *mode,
                fencing_token: h.token,
            });
        }
        if let Some(pos) = self.queue(lock).iter().position(|w| w.session == s) {
            return self.acquire_again(c, s, pos);
        }
        let grantable = self.queue(lock).is_empty() && self.compatible(lock, *mode);
        if !grantable && *wait_ms == 0 {
            return err(LockError::LockHeld {
                holders: self.holder_views(lock),
            });
        }
        if let Owner::Ephemeral { ttl_ms } = owner {
            let session = MSession {
                name: String::new(),
                ttl_ms: *ttl_ms,
                ephemeral: true,
            };
            self.sessions.insert(s, session);
        }
        if grantable {
            self.grant_now(c, s, index)
        } else {
            self.enqueue(c, s, key)
        }
    }

    /// An acquire by session `s`, already queued at `pos`.
    fn acquire_again(&mut self, c: &Acquire, s: SessionId, pos: usize) -> Reply {
        let now = self.clock_ms;
        let w = &mut self.queues.get_mut(&c.lock).unwrap()[pos];
        if w.mode != c.mode {
            return invalid("mode");
        }
        if c.wait_ms == 0 {
            return err(LockError::LockHeld {
                holders: self.holder_views(&c.lock),
            });
        }
        w.deadline_ms = w.deadline_ms.max(now + c.wait_ms);
        Reply::Queued {
            session_id: s,
            mode: c.mode,
            position: pos as u32 + 1,
        }
    }

    fn grant_now(&mut self, c: &Acquire, s: SessionId, index: LogIndex) -> Reply {
        self.holds.entry(c.lock.clone()).or_default().push(MHold {
            session: s,
            mode: c.mode,
            token: index,
            at_ms: self.clock_ms,
        });
        Reply::Acquired(Grant {
            session_id: s,
            mode: c.mode,
            fencing_token: index,
        })
    }

    fn enqueue(&mut self, c: &Acquire, s: SessionId, key: Option<String>) -> Reply {
        let deadline_ms = self.clock_ms + c.wait_ms;
        let q = self.queues.entry(c.lock.clone()).or_default();
        q.push(MWait {
            session: s,
            mode: c.mode,
            deadline_ms,
            key,
        });
        Reply::Queued {
            session_id: s,
            mode: c.mode,
            position: q.len() as u32,
        }
    }

    fn release(&mut self, c: &Release, index: LogIndex, ev: &mut Vec<Event>) -> Reply {
        let Release {
            lock,
            session_id,
            fencing_token,
        } = c;
        if !name_ok(lock) {
            return invalid("lock");
        }
        if let Some(e) = self.session_error(*session_id) {
            return e;
        }
        let hs = self.holders(lock);
        let newest = hs.iter().map(|h| h.token).max();
        let Some(mine) = hs.iter().find(|h| h.session == *session_id) else {
            return match (fencing_token, newest) {
                (Some(t), Some(n)) if *t < n => err(LockError::StaleToken {
                    current_token: Some(n),
                }),
                _ => err(LockError::NotHolder),
            };
        };
        match fencing_token {
            Some(t) if *t < mine.token => {
                return err(LockError::StaleToken {
                    current_token: Some(mine.token),
                })
            }
            Some(t) if *t > mine.token => return err(LockError::NotHolder),
            _ => {}
        }
        self.holds
            .get_mut(lock)
            .unwrap()
            .retain(|h| h.session != *session_id);
        self.settle(lock, index, ev);
        self.end_if_idle_ephemeral(*session_id, index, ev);
        Reply::Released
    }

    fn expire_waiters(&mut self, index: LogIndex, ev: &mut Vec<Event>) -> Reply {
        let now = self.clock_ms;
        let mut due: Vec<(u64, SessionId, String)> = self
            .queues
            .iter()
            .flat_map(|(l, q)| {
                q.iter()
                    .filter(|w| w.deadline_ms <= now)
                    .map(move |w| (w.deadline_ms, w.session, l.clone()))
            })
            .collect();
        due.sort();
        let mut count = 0;
        for (_, s, l) in due {
            if self.remove_waiter(&l, s, WaitEndReason::TimedOut, index, ev) {
                count += 1;
            }
        }
        Reply::WaitersExpired { count }
    }

    fn kv_write(&mut self, c: &KvWrite, append: bool) -> Reply {
        let KvWrite { key, value, fence } = c;
        if !name_ok(key) {
            return invalid("key");
        }
        let old = self.kv.get(key).cloned();
        let new_value = match (&old, append) {
            (Some((v, _)), true) => format!("{v}{value}"),
            _ => value.clone(),
        };
        if new_value.len() > KV_VALUE_BYTES_MAX {
            return invalid("value");
        }
        let token = match self.fence(fence, old.as_ref().and_then(|o| o.1)) {
            Ok(t) => t,
            Err(e) => return e,
        };
        let last = token.or(old.and_then(|o| o.1));
        self.kv.insert(key.clone(), (new_value.clone(), last));
        Reply::KvWritten {
            size: new_value.len() as u64,
            last_token: last,
        }
    }

    fn push(&mut self, c: &StackPush) -> Reply {
        if !name_ok(&c.stack) {
            return invalid("stack");
        }
        let last = self.stacks.get(&c.stack).and_then(|s| s.1);
        let token = match self.fence(&c.fence, last) {
            Ok(t) => t,
            Err(e) => return e,
        };
        let s = self.stacks.entry(c.stack.clone()).or_default();
        s.0.push(c.value.clone());
        s.1 = token.or(s.1);
        Reply::Pushed {
            size: s.0.len() as u64,
        }
    }

    fn pop(&mut self, c: &StackPop) -> Reply {
        if !name_ok(&c.stack) {
            return invalid("stack");
        }
        let Some(last) = self.stacks.get(&c.stack).map(|s| s.1) else {
            return err(LockError::NotFound {
                kind: NotFoundKind::Stack,
            });
        };
        let token = match self.fence(&c.fence, last) {
            Ok(t) => t,
            Err(e) => return e,
        };
        let s = self.stacks.get_mut(&c.stack).unwrap();
        let Some(value) = s.0.pop() else {
            return err(LockError::StackEmpty);
        };
        s.1 = token.or(s.1);
        Reply::Popped {
            value,
            size: s.0.len() as u64,
        }
    }

    fn delete_stack(&mut self, c: &StackDelete) -> Reply {
        if !name_ok(&c.stack) {
            return invalid("stack");
        }
        let Some(last) = self.stacks.get(&c.stack).map(|s| s.1) else {
            return err(LockError::NotFound {
                kind: NotFoundKind::Stack,
            });
        };
        if let Err(e) = self.fence(&c.fence, last) {
            return e;
        }
        self.stacks.remove(&c.stack);
        Reply::StackDeleted
    }

    // Views, built independently from the model's vectors.

    fn lock_view(&self, lock: &str) -> LockView {
        let hs = self.holders(lock);
        LockView {
            lock: lock.into(),
            state: if hs.is_empty() {
                LockState::Free
            } else {
                LockState::Held
            },
            mode: hs.first().map(|h| h.mode),
            holders: self.holder_views(lock),
            waiters: self
                .queue(lock)
                .iter()
                .map(|w| WaiterView {
                    session_id: w.session,
                    mode: w.mode,
                })
                .collect(),
        }
    }

    fn lock_names(&self) -> Vec<String> {
        let names: BTreeSet<&String> = self
            .holds
            .iter()
            .filter(|(_, h)| !h.is_empty())
            .map(|(l, _)| l)
            .chain(
                self.queues
                    .iter()
                    .filter(|(_, q)| !q.is_empty())
                    .map(|(l, _)| l),
            )
            .collect();
        names.into_iter().cloned().collect()
    }

    fn session_view(&self, s: SessionId) -> Result<SessionView, LockError> {
        if let Some(Reply::Error(e)) = self.session_error(s) {
            return Err(e);
        }
        let m = &self.sessions[&s];
        let (held, waiting) = self.locks_of(s);
        Ok(SessionView {
            session_id: s,
            name: m.name.clone(),
            ttl_ms: m.ttl_ms,
            ephemeral: m.ephemeral,
            locks: held
                .iter()
                .map(|l| {
                    let h = self.holds[l].iter().find(|h| h.session == s).unwrap();
                    SessionLockView {
                        lock: l.clone(),
                        mode: h.mode,
                        fencing_token: h.token,
                    }
                })
                .collect(),
            waiting: waiting
                .iter()
                .map(|l| SessionWaitView {
                    lock: l.clone(),
                    mode: self.queues[l].iter().find(|w| w.session == s).unwrap().mode,
                })
                .collect(),
        })
    }
}

// ------------------------------------------------------------ generation ---

const LOCKS: [&str; 3] = ["a", "b/c", "d"];
const KEYS: [&str; 2] = ["k1", "k2"];

#[derive(Debug, Clone)]
enum TokenPick {
    None,
    /// The session's current token on the lock (or on any lock if none).
    Current,
    /// A recent log index: often stale, sometimes in the future.
    Back(u64),
}

#[derive(Debug, Clone)]
enum Op {
    Open {
        ttl_ms: u64,
    },
    Keepalive(u8),
    Close(u8),
    Expire(Vec<u8>),
    Acquire {
        lock: u8,
        who: Option<u8>,
        mode: Mode,
        wait_ms: u64,
    },
    Release {
        lock: u8,
        who: u8,
        token: TokenPick,
    },
    Withdraw {
        lock: u8,
        who: u8,
    },
    ExpireWaiters,
    Kv {
        key: u8,
        append: bool,
        value: String,
        fence: Option<(u8, u8, TokenPick)>,
    },
    Push {
        value: String,
        fence: Option<(u8, u8, TokenPick)>,
    },
    Pop {
        fence: Option<(u8, u8, TokenPick)>,
    },
    DeleteStack,
    BadName,
}

#[derive(Debug, Clone)]
struct Step {
    op: Op,
    advance_ms: u64,
    /// Some((key seq, fingerprint, acked below)) from a tiny space so keys
    /// collide and retry, and acks (sometimes bogus) forget some of them.
    idem: Option<(u8, u8, Option<u8>)>,
}

fn token_pick() -> impl Strategy<Value = TokenPick> {
    prop_oneof![
        Just(TokenPick::None),
        Just(TokenPick::Current),
        (0u64..4).prop_map(TokenPick::Back),
    ]
}

fn mode() -> impl Strategy<Value = Mode> {
    prop_oneof![Just(Mode::Exclusive), Just(Mode::Shared)]
}

fn fence() -> impl Strategy<Value = Option<(u8, u8, TokenPick)>> {
    prop::option::of((0u8..3, any::<u8>(), token_pick()))
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => prop_oneof![Just(1_000u64), Just(3_000), Just(3_000), Just(0)].prop_map(|ttl_ms| Op::Open { ttl_ms }),
        1 => any::<u8>().prop_map(Op::Keepalive),
        1 => any::<u8>().prop_map(Op::Close),
        1 => prop::collection::vec(any::<u8>(), 0..3).prop_map(Op::Expire),
        6 => (0u8..3, prop::option::weighted(0.85, any::<u8>()), mode(),
              prop_oneof![Just(0u64), Just(0), Just(500), Just(2_000), Just(60_000), Just(400_000)])
            .prop_map(|(lock, who, mode, wait_ms)| Op::Acquire { lock, who, mode, wait_ms }),
        4 => (0u8..3, any::<u8>(), token_pick())
            .prop_map(|(lock, who, token)| Op::Release { lock, who, token }),
        1 => (0u8..3, any::<u8>()).prop_map(|(lock, who)| Op::Withdraw { lock, who }),
        2 => Just(Op::ExpireWaiters),
        2 => (0u8..2, any::<bool>(), "[a-z]{0,3}", fence())
            .prop_map(|(key, append, value, fence)| Op::Kv { key, append, value, fence }),
        1 => ("[a-z]{0,3}", fence()).prop_map(|(value, fence)| Op::Push { value, fence }),
        1 => fence().prop_map(|fence| Op::Pop { fence }),
        1 => Just(Op::DeleteStack),
        1 => Just(Op::BadName),
    ]
}

fn step() -> impl Strategy<Value = Step> {
    (
        op(),
        prop_oneof![
            Just(0u64),
            Just(0),
            Just(0),
            Just(100),
            Just(700),
            Just(2_500)
        ],
        prop::option::weighted(0.2, (0u8..4, 0u8..2, prop::option::of(0u8..5))),
    )
        .prop_map(|(op, advance_ms, idem)| Step {
            op,
            advance_ms,
            idem,
        })
}

/// Chooses session ids and tokens for a generated step from what exists
/// (including dead sessions and a never-opened id).
struct Picker<'a> {
    /// Every session id seen so far, dead ones too.
    ids: &'a [SessionId],
    model: &'a Model,
    index: LogIndex,
    live: Vec<SessionId>,
}

impl<'a> Picker<'a> {
    fn new(ids: &'a [SessionId], model: &'a Model, index: LogIndex) -> Self {
        let live = model.sessions.keys().copied().collect();
        Picker {
            ids,
            model,
            index,
            live,
        }
    }

    /// Mostly live sessions (so queues build up), sometimes any id ever
    /// seen (dead ones too) or one never opened.
    fn who(&self, i: u8) -> SessionId {
        let (live, ids) = (&self.live, self.ids);
        if i < 180 && !live.is_empty() {
            live[i as usize % live.len()]
        } else if ids.is_empty() || i as usize % (ids.len() + 1) == ids.len() {
            999_999
        } else {
            ids[i as usize % ids.len()]
        }
    }

    /// For releases: often a current holder of the lock.
    fn holder_or(&self, lock: &str, i: u8) -> SessionId {
        let hs = self.model.holders(lock);
        if i % 2 == 0 && !hs.is_empty() {
            hs[i as usize / 2 % hs.len()].session
        } else {
            self.who(i)
        }
    }

    fn token(&self, pick: &TokenPick, lock: &str, s: SessionId) -> Option<FencingToken> {
        match pick {
            TokenPick::None => None,
            TokenPick::Current => Some(
                self.model
                    .holders(lock)
                    .iter()
                    .find(|h| h.session == s)
                    .or(self.model.holders(lock).first())
                    .map_or(1, |h| h.token),
            ),
            TokenPick::Back(k) => Some(self.index.saturating_sub(*k)),
        }
    }

    fn fence(&self, f: &Option<(u8, u8, TokenPick)>) -> Option<Fence> {
        f.as_ref().and_then(|(l, w, pick)| {
            let lock = LOCKS[*l as usize];
            self.token(pick, lock, self.who(*w)).map(|t| Fence {
                lock: lock.into(),
                fencing_token: t,
            })
        })
    }
}

/// Turns a generated step into a concrete command.
fn concretize(op: &Op, ids: &[SessionId], model: &Model, index: LogIndex) -> Command {
    let pick = Picker::new(ids, model, index);
    let who = |w: u8| pick.who(w);
    match op {
        Op::Open { ttl_ms } => Command::OpenSession(OpenSession {
            ttl_ms: *ttl_ms,
            name: format!("n{index}"),
        }),
        Op::Keepalive(w) => Command::Keepalive(Keepalive {
            session_id: who(*w),
        }),
        Op::Close(w) => Command::CloseSession(CloseSession {
            session_id: who(*w),
        }),
        Op::Expire(ws) => Command::ExpireSessions(ExpireSessions {
            session_ids: ws.iter().map(|w| who(*w)).collect(),
        }),
        Op::Acquire {
            lock,
            who: w,
            mode,
            wait_ms,
        } => Command::Acquire(Acquire {
            lock: LOCKS[*lock as usize].into(),
            owner: match w {
                Some(w) => Owner::Session(who(*w)),
                None => Owner::Ephemeral { ttl_ms: 30_000 },
            },
            mode: *mode,
            wait_ms: *wait_ms,
        }),
        Op::Release {
            lock,
            who: w,
            token: token_pick,
        } => {
            let lock = LOCKS[*lock as usize];
            let session_id = pick.holder_or(lock, *w);
            Command::Release(Release {
                lock: lock.into(),
                session_id,
                fencing_token: pick.token(token_pick, lock, session_id),
            })
        }
        Op::Withdraw { lock, who: w } => Command::Withdraw(Withdraw {
            lock: LOCKS[*lock as usize].into(),
            session_id: who(*w),
        }),
        Op::ExpireWaiters => Command::ExpireWaiters,
        Op::Kv { .. } | Op::Push { .. } | Op::Pop { .. } | Op::DeleteStack => {
            resource_command(op, &pick)
        }
        Op::BadName => Command::Acquire(Acquire {
            lock: "bad name".into(),
            owner: Owner::Session(who(0)),
            mode: Mode::Exclusive,
            wait_ms: 0,
        }),
    }
}

/// The KV and stack steps of [`concretize`].
fn resource_command(op: &Op, pick: &Picker<'_>) -> Command {
    match op {
        Op::Kv {
            key,
            append,
            value,
            fence: f,
        } => {
            let key = KEYS[*key as usize].to_owned();
            let (value, fence) = (value.clone(), pick.fence(f));
            if *append {
                Command::KvAppend(KvWrite { key, value, fence })
            } else {
                Command::KvPut(KvWrite { key, value, fence })
            }
        }
        Op::Push { value, fence: f } => Command::StackPush(StackPush {
            stack: "s".into(),
            value: value.clone(),
            fence: pick.fence(f),
        }),
        Op::Pop { fence: f } => Command::StackPop(StackPop {
            stack: "s".into(),
            fence: pick.fence(f),
        }),
        Op::DeleteStack => Command::StackDelete(StackDelete {
            stack: "s".into(),
            fence: None,
        }),
        other => unreachable!("not a resource step: {other:?}"),
    }
}

/// Error messages are for humans: compare replies by code and field only.
fn normalize(reply: &Reply) -> Reply {
    match reply {
        Reply::Error(LockError::InvalidRequest { field, .. }) => invalid(field),
        other => other.clone(),
    }
}

fn normalize_events(events: &[Event]) -> Vec<String> {
    let mut v: Vec<String> = events
        .iter()
        .map(|e| match e {
            Event::WaitEnded {
                lock,
                session_id,
                reason,
                reply,
            } => format!("{:?}", (lock, session_id, reason, normalize(reply))),
            other => format!("{other:?}"),
        })
        .collect();
    v.sort();
    v
}

fn run_case(steps: &[Step], snapshot_at: usize) -> Result<(), TestCaseError> {
    let mut sm = LockStateMachine::new();
    let mut model = Model {
        clock_ms: 1_000,
        ..Model::default()
    };
    let mut ids: Vec<SessionId> = Vec::new();
    let mut now_ms = 1_000;
    let mut seen_tokens: BTreeMap<String, FencingToken> = BTreeMap::new();
    for (i, step) in steps.iter().enumerate() {
        let index = i as LogIndex + 1;
        now_ms += step.advance_ms;
        let env = Envelope {
            now_ms,
            idempotency: step.idem.map(|(k, f, acked_below)| Idempotency {
                key: format!("c-{k}"),
                fingerprint: f as u64,
                acked_below: acked_below.map(u64::from),
            }),
            command: concretize(&step.op, &ids, &model, index),
        };
        let real = sm.apply(index, &env);
        let (reply, events) = model.apply(index, &env);
        prop_assert_eq!(
            normalize(&real.reply),
            normalize(&reply),
            "step {} {:?}",
            i,
            env
        );
        prop_assert_eq!(
            normalize_events(&real.events),
            normalize_events(&events),
            "step {} {:?}",
            i,
            env
        );
        if let Reply::SessionOpened { session_id, .. }
        | Reply::Acquired(Grant { session_id, .. })
        | Reply::Queued { session_id, .. } = real.reply
        {
            if !ids.contains(&session_id) {
                ids.push(session_id);
            }
        }

        // Structural invariants of the real state.
        sm.check_invariants().map_err(TestCaseError::fail)?;
        // Observable state agrees with the model.
        check_lock_views(&sm, &model, index, &mut seen_tokens)?;
        check_other_views(&sm, &model, &ids)?;
        if i == snapshot_at {
            sm = snapshot_round_trip(sm, i)?;
        }
    }
    Ok(())
}

/// The lock listing and every lock's view equal the model's, and the safety
/// properties hold on them.
fn check_lock_views(
    sm: &LockStateMachine,
    model: &Model,
    index: LogIndex,
    seen_tokens: &mut BTreeMap<String, FencingToken>,
) -> Result<(), TestCaseError> {
    let names = model.lock_names();
    let listed = sm
        .list_locks("", Some(LIST_LIMIT_MAX as usize), None)
        .unwrap();
    let listed_names: Vec<String> = listed.locks.iter().map(|l| l.lock.clone()).collect();
    prop_assert_eq!(&listed_names, &names);
    for l in LOCKS {
        let view = sm.lock(l).unwrap();
        prop_assert_eq!(&view, &model.lock_view(l));
        // Safety: one exclusive holder at most, never mixed.
        let excl = view
            .holders
            .iter()
            .filter(|_| view.mode == Some(Mode::Exclusive))
            .count();
        prop_assert!(excl <= 1);
        // Tokens only move forward per lock; a new grant carries this index.
        for h in &view.holders {
            let prev = seen_tokens.get(l).copied().unwrap_or(0);
            prop_assert!(h.fencing_token <= index);
            if h.fencing_token > prev {
                prop_assert_eq!(h.fencing_token, index, "new grant with an old index");
            }
        }
        if let Some(max) = view.holders.iter().map(|h| h.fencing_token).max() {
            let prev = seen_tokens.entry(l.to_owned()).or_insert(0);
            *prev = (*prev).max(max);
        }
        // Holders and waiters belong to live sessions.
        for s in view
            .holders
            .iter()
            .map(|h| h.session_id)
            .chain(view.waiters.iter().map(|w| w.session_id))
        {
            prop_assert!(sm.session(s).is_ok(), "dead session {} on {}", s, l);
        }
        prop_assert_eq!(
            sm.validate(l, index).unwrap().valid,
            view.holders.iter().any(|h| h.fencing_token == index)
        );
    }
    Ok(())
}

/// Every session ever seen (and one never opened), the keys and the stack
/// read as the model says.
fn check_other_views(
    sm: &LockStateMachine,
    model: &Model,
    ids: &[SessionId],
) -> Result<(), TestCaseError> {
    for s in ids.iter().copied().chain([999_999]) {
        prop_assert_eq!(sm.session(s), model.session_view(s));
    }
    for k in KEYS {
        let expect = model.kv.get(k).map(|(v, t)| KvView {
            value: v.clone(),
            last_token: *t,
        });
        prop_assert_eq!(sm.kv_get(k).ok(), expect);
    }
    let expect = model.stacks.get("s").map(|(items, _)| StackView {
        size: items.len() as u64,
        top: items.last().cloned(),
    });
    prop_assert_eq!(sm.stack("s").ok(), expect);
    Ok(())
}

/// Snapshot round trip: the restored state equals `sm` and the run goes on
/// from it (so continuing from a snapshot must equal the whole log).
/// Damaged payloads behind a valid checksum are refused or restored to a
/// consistent state, never a panic.
fn snapshot_round_trip(sm: LockStateMachine, i: usize) -> Result<LockStateMachine, TestCaseError> {
    let restored = LockStateMachine::restore(&sm.snapshot())
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assert_eq!(&restored, &sm);
    let bytes = restored.snapshot();
    let payload_len = bytes.len() - crate::codec::CHECKSUM_BYTES;
    for k in 0..16usize {
        let mut payload = bytes[..payload_len].to_vec();
        let pos = (k * 7_919 + i * 31) % payload.len();
        payload[pos] = payload[pos].wrapping_add(1 + k as u8);
        if k % 4 == 3 {
            payload.truncate(pos);
        }
        let crc = crate::codec::checksum(&payload);
        payload.extend_from_slice(&crc.to_le_bytes());
        if let Ok(damaged) = LockStateMachine::restore(&payload) {
            prop_assert!(damaged.check_invariants().is_ok());
        }
    }
    Ok(restored)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn state_machine_agrees_with_the_model(steps in prop::collection::vec(step(), 1..120), snapshot_at in 0usize..120) {
        run_case(&steps, snapshot_at)?;
    }
}
