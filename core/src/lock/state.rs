//! The lock state machine itself: applies committed envelopes, answers read
//! queries, and snapshots/restores itself.
//!
//! Invariants (checked by [`LockStateMachine::check_invariants`] in tests and
//! on restore):
//! - a lock entry exists only while held; nobody waits for a free lock (the
//!   head of a queue is never grantable: it would have been granted);
//! - an exclusive lock has exactly one holder; shared and exclusive holders
//!   never coexist;
//! - every holder and waiter belongs to a live session, and the session's
//!   `held`/`waiting` sets mirror the locks exactly;
//! - a session holds or waits for a lock, never both, and waits once per lock.

use std::collections::{btree_map, BTreeMap, BTreeSet, VecDeque};
use std::ops::Bound;

use serde::{Deserialize, Serialize};

use crate::api::limits::{
    IDEMPOTENCY_CLIENTS_MAX, IDEMPOTENCY_KEYS_MAX, IDEMPOTENCY_KEY_BYTES_MAX,
    IDEMPOTENCY_WINDOW_MS, KV_KEYS_MAX, KV_VALUE_BYTES_MAX, LIST_LIMIT_DEFAULT, LIST_LIMIT_MAX,
    LOCKS_MAX, LOCKS_PER_SESSION_MAX, NAME_BYTES_MAX, SESSIONS_MAX, SESSION_NAME_BYTES_MAX,
    SESSION_TOMBSTONES_MAX, SESSION_TOMBSTONE_MS, SESSION_TTL_MS_MAX, SESSION_TTL_MS_MIN,
    STACKS_MAX, STACK_ELEMENTS_MAX, STACK_ELEMENT_BYTES_MAX, WAITERS_PER_LOCK_MAX, WAIT_MS_MAX,
};
use crate::codec::{self, DecodeError};
use crate::raft::LogIndex;

use super::command::{
    idempotency_key_seq, Acquire, CloseSession, Command, Envelope, ExpireSessions, Fence,
    Keepalive, KvWrite, OpenSession, Owner, Release, StackDelete, StackPop, StackPush, Withdraw,
};
use super::name::LockName;
use super::types::*;

/// One grant. 24 bytes, stored inline for an exclusive lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct Holder {
    session_id: SessionId,
    fencing_token: FencingToken,
    acquired_at_ms: u64,
}

/// The holders of one lock. Inline for the common exclusive case so an idle
/// lock costs no heap besides its name.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Holders {
    Free,
    Exclusive(Holder),
    /// Never empty: an emptied shared set becomes `Free`.
    Shared(Vec<Holder>),
}

impl Holders {
    fn mode(&self) -> Option<Mode> {
        match self {
            Holders::Free => None,
            Holders::Exclusive(_) => Some(Mode::Exclusive),
            Holders::Shared(_) => Some(Mode::Shared),
        }
    }

    fn as_slice(&self) -> &[Holder] {
        match self {
            Holders::Free => &[],
            Holders::Exclusive(h) => std::slice::from_ref(h),
            Holders::Shared(v) => v,
        }
    }

    fn find(&self, session: SessionId) -> Option<&Holder> {
        self.as_slice().iter().find(|h| h.session_id == session)
    }

    fn newest_token(&self) -> Option<FencingToken> {
        self.as_slice().iter().map(|h| h.fencing_token).max()
    }

    fn add(&mut self, mode: Mode, holder: Holder) {
        *self = match (std::mem::replace(self, Holders::Free), mode) {
            (Holders::Free, Mode::Exclusive) => Holders::Exclusive(holder),
            (Holders::Free, Mode::Shared) => Holders::Shared(vec![holder]),
            (Holders::Shared(mut v), Mode::Shared) => {
                v.push(holder);
                Holders::Shared(v)
            }
            (other, _) => panic!("granting {mode:?} to a lock held as {:?}", other.mode()),
        };
    }

    /// Removes a session's hold; true if it held.
    fn remove(&mut self, session: SessionId) -> bool {
        match self {
            Holders::Free => false,
            Holders::Exclusive(h) if h.session_id == session => {
                *self = Holders::Free;
                true
            }
            Holders::Exclusive(_) => false,
            Holders::Shared(v) => {
                let Some(pos) = v.iter().position(|h| h.session_id == session) else {
                    return false;
                };
                v.remove(pos);
                if v.is_empty() {
                    *self = Holders::Free;
                }
                true
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Waiter {
    session_id: SessionId,
    mode: Mode,
    deadline_ms: u64,
    /// The idempotency key of the acquire that queued it: its cached reply
    /// becomes the wait's final outcome.
    idempotency_key: Option<Box<str>>,
}

/// A lock's FIFO queue, boxed only while someone waits: an idle lock pays
/// 8 bytes for it instead of an inline `VecDeque`'s 32 (smaller B-tree
/// values also mean less memory moved on every insert and remove).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
// The box is the point: it keeps the empty case at 8 bytes.
#[allow(clippy::box_collection)]
struct Queue(Option<Box<VecDeque<Waiter>>>);

static EMPTY_QUEUE: VecDeque<Waiter> = VecDeque::new();

impl std::ops::Deref for Queue {
    type Target = VecDeque<Waiter>;

    fn deref(&self) -> &VecDeque<Waiter> {
        self.0.as_deref().unwrap_or(&EMPTY_QUEUE)
    }
}

impl Queue {
    fn make_mut(&mut self) -> &mut VecDeque<Waiter> {
        self.0.get_or_insert_with(Box::default)
    }

    /// Frees the box once the queue is empty.
    fn tidy(&mut self) {
        if self.0.as_ref().is_some_and(|q| q.is_empty()) {
            self.0 = None;
        }
    }

    fn remove(&mut self, pos: usize) -> Option<Waiter> {
        let waiter = self.make_mut().remove(pos);
        self.tidy();
        waiter
    }

    fn pop_front(&mut self) -> Option<Waiter> {
        let waiter = self.make_mut().pop_front();
        self.tidy();
        waiter
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct LockEntry {
    holders: Holders,
    waiters: Queue,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Session {
    name: Box<str>,
    ttl_ms: u64,
    ephemeral: bool,
    held: BTreeSet<LockName>,
    waiting: BTreeSet<LockName>,
}

impl Session {
    fn lock_count(&self) -> usize {
        self.held.len() + self.waiting.len()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct KvEntry {
    value: String,
    last_token: Option<FencingToken>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct StackEntry {
    items: Vec<String>,
    last_token: Option<FencingToken>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct IdempotencyEntry {
    fingerprint: u64,
    reply: Reply,
    owner: Option<SessionId>,
    /// None while the owning session lives; then the end of the window.
    deadline_ms: Option<u64>,
}

/// Exactly-once replies. Eviction rule: an entry lives while its owning
/// session lives and for [`IDEMPOTENCY_WINDOW_MS`] after the later of its
/// recording and the session's end (no owner: after its recording). Entries
/// past their window are dropped in deadline order at the start of every
/// apply. Entries are also dropped early when the client acknowledges them:
/// an envelope keyed `<prefix>-<seq>` with `acked_below: Some(n)` drops every
/// `<prefix>-<m>` with `m < n` (the client has their outcomes and promises
/// never to retry them), which is what keeps a busy client from filling the
/// cache. At [`IDEMPOTENCY_KEYS_MAX`] a new key is refused with `unavailable`
/// rather than forgetting a key inside its window.
///
/// Acknowledged low-water marks: per prefix, the largest `acked_below` seen
/// and the state time of the prefix's last keyed request. A keyed request
/// whose seq is below its prefix's mark is refused (`invalid_request` on
/// `Idempotency-Key`, not cached), never applied again: this closes the hole
/// where a delayed attempt of an acknowledged (hence forgotten) key commits
/// after the acknowledgement. A mark is dropped once its prefix has gone
/// [`IDEMPOTENCY_WINDOW_MS`] of state time without a keyed request (a
/// duplicate delayed longer than that is outside the contract's window). At
/// [`IDEMPOTENCY_CLIENTS_MAX`] marks, none expired, a new prefix records no
/// mark: its acknowledged keys fall back to the plain window rule (a retry
/// of one after its acknowledgement is applied as new).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct IdempotencyCache {
    entries: BTreeMap<String, IdempotencyEntry>,
    by_owner: BTreeSet<(SessionId, String)>,
    by_deadline: BTreeSet<(u64, String)>,
    /// prefix -> seqs of the entries keyed `<prefix>-<seq>`, so that an
    /// acknowledgement costs O(removed * log n). Derived from the keys, so
    /// snapshots do not carry it.
    by_prefix: BTreeMap<String, BTreeSet<u64>>,
    /// prefix -> its acknowledged low-water mark. In snapshots.
    marks: BTreeMap<String, AckMark>,
    /// (touched_ms, prefix) of every mark, in expiry order. Derived.
    marks_by_touch: BTreeSet<(u64, String)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct AckMark {
    /// Max of every `acked_below` seen for the prefix.
    acked_below: u64,
    /// State time of the prefix's last keyed request.
    touched_ms: u64,
}

impl IdempotencyCache {
    fn insert(&mut self, key: String, entry: IdempotencyEntry) {
        match (entry.deadline_ms, entry.owner) {
            (Some(deadline), _) => {
                self.by_deadline.insert((deadline, key.clone()));
            }
            (None, Some(owner)) => {
                self.by_owner.insert((owner, key.clone()));
            }
            (None, None) => panic!("idempotency entry {key} has neither owner nor deadline"),
        }
        if let Some((prefix, seq)) = idempotency_key_seq(&key) {
            self.by_prefix
                .entry(prefix.to_owned())
                .or_default()
                .insert(seq);
        }
        let old = self.entries.insert(key, entry);
        assert!(old.is_none(), "idempotency key recorded twice");
    }

    /// Forgets `key` from every index.
    fn remove(&mut self, key: &str) {
        let Some(entry) = self.entries.remove(key) else {
            return;
        };
        match (entry.deadline_ms, entry.owner) {
            (Some(deadline), _) => {
                self.by_deadline.remove(&(deadline, key.to_owned()));
            }
            (None, Some(owner)) => {
                self.by_owner.remove(&(owner, key.to_owned()));
            }
            (None, None) => {}
        }
        self.unindex_prefix(key);
    }

    fn unindex_prefix(&mut self, key: &str) {
        if let Some((prefix, seq)) = idempotency_key_seq(key) {
            if let Some(seqs) = self.by_prefix.get_mut(prefix) {
                seqs.remove(&seq);
                if seqs.is_empty() {
                    self.by_prefix.remove(prefix);
                }
            }
        }
    }

    /// The client behind `prefix` has the outcomes of every seq below
    /// `acked_below`: drop their entries.
    fn acknowledge(&mut self, prefix: &str, acked_below: u64) {
        let Some(seqs) = self.by_prefix.get_mut(prefix) else {
            return;
        };
        let kept = seqs.split_off(&acked_below);
        let dropped = std::mem::replace(seqs, kept);
        for seq in dropped {
            self.remove(&format!("{prefix}-{seq}"));
        }
    }

    /// A keyed request of `prefix` at `now_ms`, acknowledging below
    /// `acked_below` (0: none): raises the prefix's mark (creating it if
    /// there is room) and refreshes its time. Returns the mark, if any.
    fn touch_mark(&mut self, prefix: &str, acked_below: u64, now_ms: u64) -> Option<u64> {
        let room = self.marks.len() < IDEMPOTENCY_CLIENTS_MAX;
        let mark = match self.marks.get_mut(prefix) {
            Some(mark) => {
                self.marks_by_touch
                    .remove(&(mark.touched_ms, prefix.to_owned()));
                mark
            }
            None if acked_below > 0 && room => {
                self.marks.entry(prefix.to_owned()).or_insert(AckMark {
                    acked_below: 0,
                    touched_ms: now_ms,
                })
            }
            None => return None,
        };
        mark.acked_below = mark.acked_below.max(acked_below);
        mark.touched_ms = now_ms;
        let below = mark.acked_below;
        self.marks_by_touch.insert((now_ms, prefix.to_owned()));
        Some(below)
    }

    fn insert_mark(&mut self, prefix: String, mark: AckMark) {
        self.marks_by_touch
            .insert((mark.touched_ms, prefix.clone()));
        self.marks.insert(prefix, mark);
    }

    /// The owner ended at `now_ms`: its entries' windows start now.
    fn owner_ended(&mut self, owner: SessionId, now_ms: u64) {
        let keys: Vec<(SessionId, String)> = self
            .by_owner
            .range((owner, String::new())..)
            .take_while(|(o, _)| *o == owner)
            .cloned()
            .collect();
        for item in keys {
            self.by_owner.remove(&item);
            let deadline = now_ms.saturating_add(IDEMPOTENCY_WINDOW_MS);
            let entry = self
                .entries
                .get_mut(&item.1)
                .expect("by_owner mirrors entries");
            entry.deadline_ms = Some(deadline);
            self.by_deadline.insert((deadline, item.1));
        }
    }

    fn prune(&mut self, now_ms: u64) {
        while let Some((deadline, _)) = self.by_deadline.first() {
            if *deadline > now_ms {
                break;
            }
            let (_, key) = self.by_deadline.pop_first().expect("first exists");
            self.entries.remove(&key);
            self.unindex_prefix(&key);
        }
        while let Some((touched, _)) = self.marks_by_touch.first() {
            if touched.saturating_add(IDEMPOTENCY_WINDOW_MS) > now_ms {
                break;
            }
            let (_, prefix) = self.marks_by_touch.pop_first().expect("first exists");
            self.marks.remove(&prefix);
        }
    }

    fn set_final_reply(&mut self, key: &str, reply: Reply) {
        if let Some(entry) = self.entries.get_mut(key) {
            entry.reply = reply;
        }
    }
}

/// The replicated state. Every node holds one and applies the committed log
/// to it in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LockStateMachine {
    last_applied: LogIndex,
    /// High-water mark of the envelopes' `now_ms`: never goes back, even if a
    /// new leader's clock is behind the old one's.
    clock_ms: u64,
    sessions: BTreeMap<SessionId, Session>,
    /// Expired sessions -> expiry time, answered 410.
    tombstones: BTreeMap<SessionId, u64>,
    /// The same, in expiry order (clock_ms never decreases).
    tombstone_order: VecDeque<(u64, SessionId)>,
    locks: BTreeMap<LockName, LockEntry>,
    /// (deadline_ms, session, lock) of every waiter.
    waiter_deadlines: BTreeSet<(u64, SessionId, LockName)>,
    kv: BTreeMap<String, KvEntry>,
    stacks: BTreeMap<String, StackEntry>,
    idempotency: IdempotencyCache,
}

/// Why a snapshot could not be restored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotError {
    #[error("snapshot bytes: {0}")]
    Decode(#[from] DecodeError),
    #[error("snapshot is inconsistent: {0}")]
    Inconsistent(String),
}

type Outcome = Result<Reply, LockError>;

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
        self.prune();

        let mut events = Vec::new();
        let Some(idem) = &envelope.idempotency else {
            let reply = self
                .dispatch(index, &envelope.command, None, &mut events)
                .unwrap_or_else(Reply::Error);
            return Applied { reply, events };
        };

        if idem.key.is_empty() || idem.key.len() > IDEMPOTENCY_KEY_BYTES_MAX {
            let e = LockError::invalid(
                "Idempotency-Key",
                format!("must be 1..={IDEMPOTENCY_KEY_BYTES_MAX} bytes"),
            );
            return Applied {
                reply: Reply::Error(e),
                events,
            };
        }
        // Acknowledgements first: they may make room for this very key. The
        // server refuses an ack beyond the key's own seq; refuse it here too
        // so the rule does not depend on which server proposed the entry.
        if let (Some(acked_below), Some((_, seq))) =
            (idem.acked_below, idempotency_key_seq(&idem.key))
        {
            if acked_below > seq {
                let e = LockError::invalid(
                    "Idempotency-Acked-Below",
                    "must not exceed the sequence number of the Idempotency-Key",
                );
                return Applied {
                    reply: Reply::Error(e),
                    events,
                };
            }
        }
        // Marks: an acknowledged key is refused for good (within the mark's
        // lifetime), not forgotten and applied again.
        if let Some((prefix, seq)) = idempotency_key_seq(&idem.key) {
            let acked_below = idem.acked_below.unwrap_or(0);
            let mark = self
                .idempotency
                .touch_mark(prefix, acked_below, self.clock_ms);
            if acked_below > 0 {
                self.idempotency.acknowledge(prefix, acked_below);
            }
            if mark.is_some_and(|below| seq < below) {
                let e = LockError::invalid(
                    "Idempotency-Key",
                    "key was already acknowledged by its client (Idempotency-Acked-Below); a \
                     retry of an acknowledged request is refused, not applied again",
                );
                return Applied {
                    reply: Reply::Error(e),
                    events,
                };
            }
        }
        if let Some(entry) = self.idempotency.entries.get(&idem.key) {
            let reply = if entry.fingerprint == idem.fingerprint {
                entry.reply.clone()
            } else {
                Reply::Error(LockError::invalid(
                    "Idempotency-Key",
                    "reused with another method, path or body",
                ))
            };
            return Applied { reply, events };
        }
        if self.idempotency.entries.len() >= IDEMPOTENCY_KEYS_MAX {
            let e = LockError::Unavailable {
                message: "idempotency cache full of keys inside their window".into(),
            };
            return Applied {
                reply: Reply::Error(e),
                events,
            };
        }

        let reply = self
            .dispatch(index, &envelope.command, Some(&idem.key), &mut events)
            .unwrap_or_else(Reply::Error);
        let owner = envelope.command.session_id().or(match &reply {
            Reply::SessionOpened { session_id, .. }
            | Reply::Acquired(Grant { session_id, .. })
            | Reply::Queued { session_id, .. } => Some(*session_id),
            _ => None,
        });
        let owner_live = owner.filter(|id| self.sessions.contains_key(id));
        let deadline_ms = match owner_live {
            Some(_) => None,
            None => Some(self.clock_ms.saturating_add(IDEMPOTENCY_WINDOW_MS)),
        };
        self.idempotency.insert(
            idem.key.clone(),
            IdempotencyEntry {
                fingerprint: idem.fingerprint,
                reply: reply.clone(),
                owner: owner_live,
                deadline_ms,
            },
        );
        Applied { reply, events }
    }

    /// Drops tombstones and idempotency entries whose window has passed.
    fn prune(&mut self) {
        let now = self.clock_ms;
        while let Some(&(at, session)) = self.tombstone_order.front() {
            if at.saturating_add(SESSION_TOMBSTONE_MS) > now {
                break;
            }
            self.tombstone_order.pop_front();
            self.tombstones.remove(&session);
        }
        self.idempotency.prune(now);
    }

    fn dispatch(
        &mut self,
        index: LogIndex,
        command: &Command,
        idem_key: Option<&str>,
        events: &mut Vec<Event>,
    ) -> Outcome {
        match command {
            Command::OpenSession(OpenSession { ttl_ms, name }) => {
                self.open_session(index, *ttl_ms, name)
            }
            Command::Keepalive(Keepalive { session_id }) => {
                let s = self.live_session(*session_id)?;
                Ok(Reply::KeptAlive { ttl_ms: s.ttl_ms })
            }
            Command::CloseSession(CloseSession { session_id }) => {
                self.live_session(*session_id)?;
                self.end_session(index, *session_id, false, events);
                Ok(Reply::SessionClosed)
            }
            Command::ExpireSessions(ExpireSessions { session_ids }) => {
                let mut expiring: Vec<SessionId> = Vec::with_capacity(session_ids.len());
                for id in session_ids {
                    if self.sessions.contains_key(id) && !expiring.contains(id) {
                        expiring.push(*id);
                    }
                }
                // "A waiter whose session expires is never granted" (API.md):
                // every expiring session leaves every queue before any of
                // their locks is handed over, or releasing the first session's
                // lock could grant it to a second one expiring in this very
                // entry (sim seed 305: an exclusive and a shared grant with
                // the same token).
                let mut left = BTreeSet::new();
                for id in &expiring {
                    left.extend(self.leave_queues(
                        *id,
                        &Reply::Error(LockError::SessionExpired),
                        events,
                    ));
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
            Command::Acquire(Acquire {
                lock,
                owner,
                mode,
                wait_ms,
            }) => self.acquire(index, lock, *owner, *mode, *wait_ms, idem_key),
            Command::Release(Release {
                lock,
                session_id,
                fencing_token,
            }) => self.release(index, lock, *session_id, *fencing_token, events),
            Command::Withdraw(Withdraw { lock, session_id }) => {
                validate_name("lock", lock)?;
                self.live_session(*session_id)?;
                let was_waiting =
                    self.remove_waiter(index, lock, *session_id, WaitEndReason::Withdrawn, events);
                Ok(Reply::Withdrawn { was_waiting })
            }
            Command::ExpireWaiters => {
                let due: Vec<(u64, SessionId, LockName)> = self
                    .waiter_deadlines
                    .iter()
                    .take_while(|(deadline, _, _)| *deadline <= self.clock_ms)
                    .cloned()
                    .collect();
                let mut count = 0;
                for (_, session, lock) in due {
                    if self.remove_waiter(
                        index,
                        lock.as_str(),
                        session,
                        WaitEndReason::TimedOut,
                        events,
                    ) {
                        count += 1;
                    }
                }
                Ok(Reply::WaitersExpired { count })
            }
            Command::KvPut(KvWrite { key, value, fence }) => {
                self.kv_write(key, value, fence, false)
            }
            Command::KvAppend(KvWrite { key, value, fence }) => {
                self.kv_write(key, value, fence, true)
            }
            Command::StackPush(StackPush {
                stack,
                value,
                fence,
            }) => self.stack_push(stack, value, fence),
            Command::StackPop(StackPop { stack, fence }) => self.stack_pop(stack, fence),
            Command::StackDelete(StackDelete { stack, fence }) => {
                validate_name("stack", stack)?;
                let last = match self.stacks.get(stack.as_str()) {
                    Some(s) => s.last_token,
                    None => return Err(not_found(NotFoundKind::Stack)),
                };
                self.check_fence(fence, last)?;
                self.stacks.remove(stack.as_str());
                Ok(Reply::StackDeleted)
            }
        }
    }

    // ---------------------------------------------------------- sessions ---

    fn live_session(&self, id: SessionId) -> Result<&Session, LockError> {
        match self.sessions.get(&id) {
            Some(s) => Ok(s),
            None if self.tombstones.contains_key(&id) => Err(LockError::SessionExpired),
            None => Err(not_found(NotFoundKind::Session)),
        }
    }

    fn open_session(&mut self, index: LogIndex, ttl_ms: u64, name: &str) -> Outcome {
        check_ttl(ttl_ms)?;
        if name.len() > SESSION_NAME_BYTES_MAX {
            return Err(LockError::invalid(
                "name",
                format!("at most {SESSION_NAME_BYTES_MAX} bytes"),
            ));
        }
        if self.sessions.len() >= SESSIONS_MAX {
            return Err(LockError::invalid(
                "session",
                format!("at most {SESSIONS_MAX} live sessions"),
            ));
        }
        self.insert_session(index, name, ttl_ms, false);
        Ok(Reply::SessionOpened {
            session_id: index,
            ttl_ms,
        })
    }

    fn insert_session(&mut self, id: SessionId, name: &str, ttl_ms: u64, ephemeral: bool) {
        let old = self.sessions.insert(
            id,
            Session {
                name: name.into(),
                ttl_ms,
                ephemeral,
                held: BTreeSet::new(),
                waiting: BTreeSet::new(),
            },
        );
        assert!(old.is_none(), "session id {id} reused");
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
            not_found(NotFoundKind::Session)
        });
        let left = self.leave_queues(id, &final_reply, events);
        let session = self.sessions.remove(&id).expect("ending a live session");
        for lock in &session.held {
            let entry = self
                .locks
                .get_mut(lock.as_bytes())
                .expect("held lock exists");
            let removed = entry.holders.remove(id);
            assert!(removed, "session.held mirrors the holders");
        }
        for lock in session.held.iter().chain(&left) {
            self.promote(index, lock, events);
        }
        if expired {
            self.tombstones.insert(id, self.clock_ms);
            self.tombstone_order.push_back((self.clock_ms, id));
            if self.tombstone_order.len() > SESSION_TOMBSTONES_MAX {
                let (_, oldest) = self.tombstone_order.pop_front().expect("non-empty");
                self.tombstones.remove(&oldest);
            }
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
        let session = self.sessions.get_mut(&id).expect("a live session");
        let waiting = std::mem::take(&mut session.waiting);
        for lock in &waiting {
            let entry = self
                .locks
                .get_mut(lock.as_bytes())
                .expect("waited-for lock exists");
            let pos = entry
                .waiters
                .iter()
                .position(|w| w.session_id == id)
                .expect("session.waiting mirrors the queue");
            let waiter = entry.waiters.remove(pos).expect("position is in range");
            let removed = self
                .waiter_deadlines
                .remove(&(waiter.deadline_ms, id, lock.clone()));
            assert!(removed, "waiter deadline indexed");
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
            .get(&id)
            .is_some_and(|s| s.ephemeral && s.lock_count() == 0);
        if idle {
            self.end_session(index, id, false, events);
        }
    }

    // ------------------------------------------------------------- locks ---

    #[allow(clippy::too_many_arguments)]
    fn acquire(
        &mut self,
        index: LogIndex,
        lock: &str,
        owner: Owner,
        mode: Mode,
        wait_ms: u64,
        idem_key: Option<&str>,
    ) -> Outcome {
        validate_name("lock", lock)?;
        if wait_ms > WAIT_MS_MAX {
            return Err(LockError::invalid(
                "wait_ms",
                format!("must be 0..={WAIT_MS_MAX}"),
            ));
        }
        let now = self.clock_ms;
        let (session_id, ephemeral_ttl) = match owner {
            Owner::Session(id) => {
                let s = self.live_session(id)?;
                if s.lock_count() >= LOCKS_PER_SESSION_MAX
                    && !s.held.contains(lock.as_bytes())
                    && !s.waiting.contains(lock.as_bytes())
                {
                    return Err(LockError::invalid(
                        "lock",
                        format!(
                            "a session holds or waits for at most {LOCKS_PER_SESSION_MAX} locks"
                        ),
                    ));
                }
                (id, None)
            }
            Owner::Ephemeral { ttl_ms } => {
                check_ttl(ttl_ms)?;
                if self.sessions.len() >= SESSIONS_MAX {
                    return Err(LockError::invalid(
                        "session",
                        format!("at most {SESSIONS_MAX} live sessions"),
                    ));
                }
                (index, Some(ttl_ms))
            }
        };

        // Fast path, the common uncontended case: a free lock is granted with
        // a single traversal of the (possibly 1M-entry) tree.
        let locks_full = self.locks.len() >= LOCKS_MAX;
        if let btree_map::Entry::Vacant(vacant) = self.locks.entry(LockName::new(lock)) {
            if locks_full {
                return Err(LockError::invalid(
                    "lock",
                    format!("at most {LOCKS_MAX} locks may be held or waited for"),
                ));
            }
            let holder = Holder {
                session_id,
                fencing_token: index,
                acquired_at_ms: now,
            };
            let mut holders = Holders::Free;
            holders.add(mode, holder);
            let name = vacant.key().clone();
            vacant.insert(LockEntry {
                holders,
                waiters: Queue::default(),
            });
            if let Some(ttl_ms) = ephemeral_ttl {
                self.insert_session(session_id, "", ttl_ms, true);
            }
            let session = self.sessions.get_mut(&session_id).expect("live session");
            session.held.insert(name);
            return Ok(Reply::Acquired(Grant {
                session_id,
                mode,
                fencing_token: index,
            }));
        }

        // The lock exists: one lookup for the analysis; the name is kept so
        // the change below needs a single further traversal.
        let found = self.locks.get_key_value(lock.as_bytes());
        let existing_name: Option<LockName> = found.map(|(name, _)| name.clone());
        let entry = found.map(|(_, entry)| entry);
        let grantable = match &entry {
            None => true,
            Some(entry) => {
                if let Some(h) = entry.holders.find(session_id) {
                    let held_mode = entry.holders.mode().expect("has a holder");
                    if held_mode != mode {
                        return Err(mode_change(held_mode));
                    }
                    return Ok(Reply::Acquired(Grant {
                        session_id,
                        mode,
                        fencing_token: h.fencing_token,
                    }));
                }
                if let Some(pos) = entry
                    .waiters
                    .iter()
                    .position(|w| w.session_id == session_id)
                {
                    let waiter = &entry.waiters[pos];
                    if waiter.mode != mode {
                        return Err(mode_change(waiter.mode));
                    }
                    if wait_ms == 0 {
                        // A try-lock by a queued session: not acquired, and
                        // the earlier wait keeps its place.
                        return Err(LockError::LockHeld {
                            holders: self.holder_views(&entry.holders),
                        });
                    }
                    // Asking again keeps the place; the wait lasts until the
                    // later of the two deadlines.
                    let new_deadline = now.saturating_add(wait_ms);
                    if new_deadline > waiter.deadline_ms {
                        let name = self
                            .locks
                            .get_key_value(lock.as_bytes())
                            .expect("exists")
                            .0
                            .clone();
                        let entry = self.locks.get_mut(lock.as_bytes()).expect("exists");
                        let waiter = &mut entry.waiters.make_mut()[pos];
                        self.waiter_deadlines.remove(&(
                            waiter.deadline_ms,
                            session_id,
                            name.clone(),
                        ));
                        waiter.deadline_ms = new_deadline;
                        self.waiter_deadlines
                            .insert((new_deadline, session_id, name));
                    }
                    return Ok(Reply::Queued {
                        session_id,
                        mode,
                        position: pos as u32 + 1,
                    });
                }
                entry.waiters.is_empty()
                    && match entry.holders {
                        Holders::Free => true,
                        Holders::Shared(_) => mode == Mode::Shared,
                        Holders::Exclusive(_) => false,
                    }
            }
        };

        if !grantable && wait_ms == 0 {
            let entry = self
                .locks
                .get(lock.as_bytes())
                .expect("not grantable means it exists");
            return Err(LockError::LockHeld {
                holders: self.holder_views(&entry.holders),
            });
        }
        if existing_name.is_none() && self.locks.len() >= LOCKS_MAX {
            return Err(LockError::invalid(
                "lock",
                format!("at most {LOCKS_MAX} locks may be held or waited for"),
            ));
        }
        if !grantable {
            let entry = self.locks.get(lock.as_bytes()).expect("exists");
            if entry.waiters.len() >= WAITERS_PER_LOCK_MAX {
                return Err(LockError::invalid(
                    "wait_ms",
                    format!("the lock's queue is full ({WAITERS_PER_LOCK_MAX} waiters)"),
                ));
            }
        }

        if let Some(ttl_ms) = ephemeral_ttl {
            self.insert_session(session_id, "", ttl_ms, true);
        }
        let session = self.sessions.get_mut(&session_id).expect("live session");
        if grantable {
            let holder = Holder {
                session_id,
                fencing_token: index,
                acquired_at_ms: now,
            };
            let name = match existing_name {
                Some(name) => {
                    let entry = self.locks.get_mut(&name).expect("exists");
                    entry.holders.add(mode, holder);
                    name
                }
                None => {
                    let name: LockName = LockName::new(lock);
                    let mut holders = Holders::Free;
                    holders.add(mode, holder);
                    let old = self.locks.insert(
                        name.clone(),
                        LockEntry {
                            holders,
                            waiters: Queue::default(),
                        },
                    );
                    assert!(old.is_none(), "lock {name} created twice");
                    name
                }
            };
            session.held.insert(name);
            Ok(Reply::Acquired(Grant {
                session_id,
                mode,
                fencing_token: index,
            }))
        } else {
            let name = existing_name.expect("not grantable means it exists");
            let entry = self.locks.get_mut(&name).expect("exists");
            let deadline_ms = now.saturating_add(wait_ms);
            entry.waiters.make_mut().push_back(Waiter {
                session_id,
                mode,
                deadline_ms,
                idempotency_key: idem_key.map(Into::into),
            });
            let position = entry.waiters.len() as u32;
            session.waiting.insert(name.clone());
            self.waiter_deadlines
                .insert((deadline_ms, session_id, name));
            Ok(Reply::Queued {
                session_id,
                mode,
                position,
            })
        }
    }

    fn release(
        &mut self,
        index: LogIndex,
        lock: &str,
        session_id: SessionId,
        token: Option<FencingToken>,
        events: &mut Vec<Event>,
    ) -> Outcome {
        validate_name("lock", lock)?;
        self.live_session(session_id)?;
        // One traversal finds, changes and (usually) removes the entry.
        let btree_map::Entry::Occupied(mut occupied) = self.locks.entry(LockName::new(lock)) else {
            return Err(LockError::NotHolder);
        };
        let entry = occupied.get_mut();
        let newest = entry.holders.newest_token();
        let Some(holder) = entry.holders.find(session_id) else {
            return Err(match (token, newest) {
                (Some(t), Some(current)) if t < current => LockError::StaleToken {
                    current_token: Some(current),
                },
                _ => LockError::NotHolder,
            });
        };
        if let Some(t) = token {
            if t < holder.fencing_token {
                return Err(LockError::StaleToken {
                    current_token: Some(holder.fencing_token),
                });
            }
            if t > holder.fencing_token {
                return Err(LockError::NotHolder);
            }
        }
        entry.holders.remove(session_id);
        let has_waiters = !entry.waiters.is_empty();
        let now_free = matches!(entry.holders, Holders::Free);
        let session = self.sessions.get_mut(&session_id).expect("live");
        let removed = session.held.remove(lock.as_bytes());
        assert!(removed, "session.held mirrors the holders");
        if has_waiters {
            let name = occupied.key().clone();
            self.promote(index, &name, events);
        } else if now_free {
            occupied.remove();
        }
        self.end_if_idle_ephemeral(index, session_id, events);
        Ok(Reply::Released)
    }

    /// Takes a session out of a lock's queue; true if it was there.
    fn remove_waiter(
        &mut self,
        index: LogIndex,
        lock: &str,
        session_id: SessionId,
        reason: WaitEndReason,
        events: &mut Vec<Event>,
    ) -> bool {
        let Some((name, entry)) = self.locks.get_key_value(lock.as_bytes()) else {
            return false;
        };
        let name = name.clone();
        let Some(pos) = entry
            .waiters
            .iter()
            .position(|w| w.session_id == session_id)
        else {
            return false;
        };
        let final_reply = Reply::Error(LockError::LockHeld {
            holders: self.holder_views(&entry.holders),
        });
        let entry = self.locks.get_mut(&name).expect("exists");
        let waiter = entry.waiters.remove(pos).expect("in range");
        let removed = self
            .waiter_deadlines
            .remove(&(waiter.deadline_ms, session_id, name.clone()));
        assert!(removed, "waiter deadline indexed");
        let session = self
            .sessions
            .get_mut(&session_id)
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

    /// Grants the lock to waiters at the head of its queue while they fit
    /// (FIFO: a shared waiter behind an exclusive one waits), then drops the
    /// entry if nobody holds or waits for it.
    fn promote(&mut self, index: LogIndex, name: &LockName, events: &mut Vec<Event>) {
        let Some(entry) = self.locks.get_mut(name) else {
            return;
        };
        while let Some(head) = entry.waiters.front() {
            let fits = matches!(
                (&entry.holders, head.mode),
                (Holders::Free, _) | (Holders::Shared(_), Mode::Shared)
            );
            if !fits {
                break;
            }
            let waiter = entry.waiters.pop_front().expect("has a head");
            let removed = self.waiter_deadlines.remove(&(
                waiter.deadline_ms,
                waiter.session_id,
                name.clone(),
            ));
            assert!(removed, "waiter deadline indexed");
            entry.holders.add(
                waiter.mode,
                Holder {
                    session_id: waiter.session_id,
                    fencing_token: index,
                    acquired_at_ms: self.clock_ms,
                },
            );
            let session = self
                .sessions
                .get_mut(&waiter.session_id)
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
        if matches!(entry.holders, Holders::Free) {
            assert!(entry.waiters.is_empty(), "a free lock has no waiters");
            self.locks.remove(name);
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
                    .get(&h.session_id)
                    .map(|s| s.name.to_string())
                    .unwrap_or_default(),
                fencing_token: h.fencing_token,
                acquired_at_ms: h.acquired_at_ms,
            })
            .collect()
    }

    // ------------------------------------------------- fenced KV, stacks ---

    /// Checks an optional fence against a lock and a resource's last token;
    /// returns the token to record.
    fn check_fence(
        &self,
        fence: &Option<Fence>,
        last_token: Option<FencingToken>,
    ) -> Result<Option<FencingToken>, LockError> {
        let Some(fence) = fence else {
            return Ok(None);
        };
        validate_name("lock", &fence.lock)?;
        let holder = match self.locks.get(fence.lock.as_bytes()).map(|e| &e.holders) {
            Some(Holders::Exclusive(h)) => h,
            _ => return Err(LockError::NotHolder),
        };
        if fence.fencing_token < holder.fencing_token {
            return Err(LockError::StaleToken {
                current_token: Some(holder.fencing_token),
            });
        }
        if fence.fencing_token > holder.fencing_token {
            return Err(LockError::NotHolder);
        }
        if let Some(last) = last_token {
            if fence.fencing_token < last {
                return Err(LockError::StaleToken {
                    current_token: Some(last),
                });
            }
        }
        Ok(Some(fence.fencing_token))
    }

    fn kv_write(&mut self, key: &str, value: &str, fence: &Option<Fence>, append: bool) -> Outcome {
        validate_name("key", key)?;
        let existing = self.kv.get(key);
        let size = match (append, existing) {
            (true, Some(e)) => e.value.len() + value.len(),
            _ => value.len(),
        };
        if size > KV_VALUE_BYTES_MAX {
            return Err(LockError::invalid(
                "value",
                format!("a value is at most {KV_VALUE_BYTES_MAX} bytes"),
            ));
        }
        let token = self.check_fence(fence, existing.and_then(|e| e.last_token))?;
        if existing.is_none() && self.kv.len() >= KV_KEYS_MAX {
            return Err(LockError::invalid(
                "key",
                format!("at most {KV_KEYS_MAX} keys"),
            ));
        }
        let entry = self.kv.entry(key.to_owned()).or_insert(KvEntry {
            value: String::new(),
            last_token: None,
        });
        if append {
            entry.value.push_str(value);
        } else {
            entry.value = value.to_owned();
        }
        if token.is_some() {
            entry.last_token = token;
        }
        Ok(Reply::KvWritten {
            size: entry.value.len() as u64,
            last_token: entry.last_token,
        })
    }

    fn stack_push(&mut self, stack: &str, value: &str, fence: &Option<Fence>) -> Outcome {
        validate_name("stack", stack)?;
        if value.len() > STACK_ELEMENT_BYTES_MAX {
            return Err(LockError::invalid(
                "value",
                format!("a stack element is at most {STACK_ELEMENT_BYTES_MAX} bytes"),
            ));
        }
        let existing = self.stacks.get(stack);
        let token = self.check_fence(fence, existing.and_then(|s| s.last_token))?;
        match existing {
            None if self.stacks.len() >= STACKS_MAX => {
                return Err(LockError::invalid(
                    "stack",
                    format!("at most {STACKS_MAX} stacks"),
                ))
            }
            Some(s) if s.items.len() >= STACK_ELEMENTS_MAX => {
                return Err(LockError::invalid(
                    "stack",
                    format!("a stack holds at most {STACK_ELEMENTS_MAX} elements"),
                ))
            }
            _ => {}
        }
        let entry = self.stacks.entry(stack.to_owned()).or_insert(StackEntry {
            items: Vec::new(),
            last_token: None,
        });
        entry.items.push(value.to_owned());
        if token.is_some() {
            entry.last_token = token;
        }
        Ok(Reply::Pushed {
            size: entry.items.len() as u64,
        })
    }

    fn stack_pop(&mut self, stack: &str, fence: &Option<Fence>) -> Outcome {
        validate_name("stack", stack)?;
        let Some(existing) = self.stacks.get(stack) else {
            return Err(not_found(NotFoundKind::Stack));
        };
        let token = self.check_fence(fence, existing.last_token)?;
        let entry = self.stacks.get_mut(stack).expect("exists");
        let Some(value) = entry.items.pop() else {
            return Err(LockError::StackEmpty);
        };
        if token.is_some() {
            entry.last_token = token;
        }
        Ok(Reply::Popped {
            value,
            size: entry.items.len() as u64,
        })
    }

    // ----------------------------------------------------------- queries ---

    /// `GET /v1/locks/{name}`: a lock nobody holds or waits for is free.
    pub fn lock(&self, name: &str) -> Result<LockView, LockError> {
        validate_name("lock", name)?;
        Ok(match self.locks.get(name.as_bytes()) {
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
            state: match entry.holders {
                Holders::Free => LockState::Free,
                _ => LockState::Held,
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
        let start = match after {
            Some(after) if after >= prefix => Bound::Excluded(after.as_bytes()),
            _ => Bound::Included(prefix.as_bytes()),
        };
        let mut iter = self
            .locks
            .range::<[u8], _>((start, Bound::Unbounded))
            .take_while(|(name, _)| name.as_bytes().starts_with(prefix.as_bytes()));
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
        let s = self.live_session(id)?;
        let locks = s
            .held
            .iter()
            .map(|name| {
                let entry = &self.locks[name];
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
                let w = self.locks[name]
                    .waiters
                    .iter()
                    .find(|w| w.session_id == id)
                    .expect("waiting mirrors the queue");
                SessionWaitView {
                    lock: name.to_string(),
                    mode: w.mode,
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

    /// Every live session and its TTL, for [`super::LeaseTracker::on_became_leader`].
    pub fn live_sessions(&self) -> impl Iterator<Item = (SessionId, u64)> + '_ {
        self.sessions.iter().map(|(id, s)| (*id, s.ttl_ms))
    }

    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    pub fn lock_count(&self) -> usize {
        self.locks.len()
    }

    /// `GET /v1/kv/{key}`.
    pub fn kv_get(&self, key: &str) -> Result<KvView, LockError> {
        validate_name("key", key)?;
        let e = self.kv.get(key).ok_or(not_found(NotFoundKind::Key))?;
        Ok(KvView {
            value: e.value.clone(),
            last_token: e.last_token,
        })
    }

    /// `GET /v1/stacks/{name}`.
    pub fn stack(&self, name: &str) -> Result<StackView, LockError> {
        validate_name("stack", name)?;
        let s = self
            .stacks
            .get(name)
            .ok_or(not_found(NotFoundKind::Stack))?;
        Ok(StackView {
            size: s.items.len() as u64,
            top: s.items.last().cloned(),
        })
    }

    /// `POST /v1/locks/{name}/validate`.
    pub fn validate(&self, lock: &str, token: FencingToken) -> Result<ValidateView, LockError> {
        validate_name("lock", lock)?;
        let holders = self.locks.get(lock.as_bytes()).map(|e| &e.holders);
        Ok(ValidateView {
            valid: holders.is_some_and(|h| h.as_slice().iter().any(|h| h.fencing_token == token)),
            current_token: holders.and_then(Holders::newest_token),
        })
    }

    /// The earliest waiter deadline: when the leader should propose
    /// `ExpireWaiters`.
    pub fn next_waiter_deadline_ms(&self) -> Option<u64> {
        self.waiter_deadlines.first().map(|(d, _, _)| *d)
    }

    // ------------------------------------------------------- invariants ---

    /// Checks every structural invariant (module doc); Err names the first
    /// violation.
    pub fn check_invariants(&self) -> Result<(), String> {
        let mut held: BTreeMap<SessionId, BTreeSet<&str>> = BTreeMap::new();
        let mut waiting: BTreeMap<SessionId, BTreeSet<&str>> = BTreeMap::new();
        let mut deadlines = BTreeSet::new();
        if self.locks.len() > LOCKS_MAX {
            return Err("too many locks".into());
        }
        for (name, entry) in &self.locks {
            if validate_name("lock", name.as_str()).is_err() {
                return Err(format!("bad lock name {name:?}"));
            }
            match &entry.holders {
                Holders::Free => return Err(format!("lock {name} exists but is free")),
                Holders::Shared(v) if v.is_empty() => {
                    return Err(format!("lock {name} has an empty shared set"))
                }
                _ => {}
            }
            if entry.waiters.len() > WAITERS_PER_LOCK_MAX {
                return Err(format!("lock {name} has too many waiters"));
            }
            if let (Holders::Shared(_), Some(head)) = (&entry.holders, entry.waiters.front()) {
                if head.mode == Mode::Shared {
                    return Err(format!("lock {name}: grantable shared waiter at the head"));
                }
            }
            for h in entry.holders.as_slice() {
                if !self.sessions.contains_key(&h.session_id) {
                    return Err(format!("lock {name} held by dead session {}", h.session_id));
                }
                if !held.entry(h.session_id).or_default().insert(name.as_str()) {
                    return Err(format!("lock {name} held twice by {}", h.session_id));
                }
            }
            if entry.waiters.0.as_ref().is_some_and(|q| q.is_empty()) {
                return Err(format!("lock {name} keeps an empty queue box"));
            }
            for w in entry.waiters.iter() {
                if !self.sessions.contains_key(&w.session_id) {
                    return Err(format!(
                        "lock {name} awaited by dead session {}",
                        w.session_id
                    ));
                }
                if held
                    .get(&w.session_id)
                    .is_some_and(|s| s.contains(name.as_str()))
                {
                    return Err(format!("{} holds and waits for {name}", w.session_id));
                }
                if !waiting
                    .entry(w.session_id)
                    .or_default()
                    .insert(name.as_str())
                {
                    return Err(format!("{} waits twice for {name}", w.session_id));
                }
                deadlines.insert((w.deadline_ms, w.session_id, name.clone()));
            }
        }
        if deadlines != self.waiter_deadlines {
            return Err("waiter deadline index out of sync".into());
        }
        for (id, s) in &self.sessions {
            let h: BTreeSet<&str> = s.held.iter().map(|n| n.as_str()).collect();
            let w: BTreeSet<&str> = s.waiting.iter().map(|n| n.as_str()).collect();
            if h != held.remove(id).unwrap_or_default() {
                return Err(format!("session {id}: held set out of sync"));
            }
            if w != waiting.remove(id).unwrap_or_default() {
                return Err(format!("session {id}: waiting set out of sync"));
            }
            if s.lock_count() > LOCKS_PER_SESSION_MAX {
                return Err(format!("session {id} has too many locks"));
            }
            if self.tombstones.contains_key(id) {
                return Err(format!("session {id} is live and tombstoned"));
            }
            if *id > self.last_applied {
                return Err(format!("session {id} from the future"));
            }
        }
        if self.sessions.len() > SESSIONS_MAX {
            return Err("too many sessions".into());
        }
        if self.tombstones.len() != self.tombstone_order.len()
            || self
                .tombstone_order
                .iter()
                .any(|(at, id)| self.tombstones.get(id) != Some(at))
            || !self
                .tombstone_order
                .iter()
                .zip(self.tombstone_order.iter().skip(1))
                .all(|(a, b)| a.0 <= b.0)
        {
            return Err("tombstone index out of sync".into());
        }
        for (key, e) in &self.idempotency.entries {
            let ok = match (e.owner, e.deadline_ms) {
                (Some(o), None) => {
                    self.sessions.contains_key(&o)
                        && self.idempotency.by_owner.contains(&(o, key.clone()))
                }
                (_, Some(d)) => self.idempotency.by_deadline.contains(&(d, key.clone())),
                (None, None) => false,
            };
            if !ok {
                return Err(format!("idempotency entry {key:?} out of sync"));
            }
        }
        if self.idempotency.by_owner.len() + self.idempotency.by_deadline.len()
            != self.idempotency.entries.len()
        {
            return Err("idempotency indexes out of sync".into());
        }
        let mut seq_keys = 0;
        for key in self.idempotency.entries.keys() {
            if let Some((prefix, seq)) = idempotency_key_seq(key) {
                seq_keys += 1;
                if !self
                    .idempotency
                    .by_prefix
                    .get(prefix)
                    .is_some_and(|seqs| seqs.contains(&seq))
                {
                    return Err(format!("idempotency entry {key:?} missing from by_prefix"));
                }
            }
        }
        let indexed: usize = self.idempotency.by_prefix.values().map(BTreeSet::len).sum();
        if indexed != seq_keys || self.idempotency.by_prefix.values().any(BTreeSet::is_empty) {
            return Err("idempotency prefix index out of sync".into());
        }
        let marks = &self.idempotency.marks;
        if marks.len() > IDEMPOTENCY_CLIENTS_MAX
            || self.idempotency.marks_by_touch.len() != marks.len()
        {
            return Err("idempotency marks out of sync".into());
        }
        for (prefix, mark) in marks {
            if idempotency_key_seq(&format!("{prefix}-1")) != Some((prefix.as_str(), 1)) {
                return Err(format!("idempotency mark of bad prefix {prefix:?}"));
            }
            if mark.acked_below == 0
                || mark.touched_ms > self.clock_ms
                || mark.touched_ms.saturating_add(IDEMPOTENCY_WINDOW_MS) <= self.clock_ms
                || !self
                    .idempotency
                    .marks_by_touch
                    .contains(&(mark.touched_ms, prefix.clone()))
            {
                return Err(format!("idempotency mark of {prefix:?} out of sync"));
            }
            let cached_below = self
                .idempotency
                .by_prefix
                .get(prefix)
                .and_then(|seqs| seqs.first())
                .is_some_and(|seq| *seq < mark.acked_below);
            if cached_below {
                return Err(format!("idempotency entry of {prefix:?} below its mark"));
            }
        }
        for (key, e) in &self.kv {
            if validate_name("key", key).is_err() || e.value.len() > KV_VALUE_BYTES_MAX {
                return Err(format!("bad kv entry {key:?}"));
            }
        }
        for (name, s) in &self.stacks {
            if validate_name("stack", name).is_err() || s.items.len() > STACK_ELEMENTS_MAX {
                return Err(format!("bad stack {name:?}"));
            }
        }
        Ok(())
    }

    // --------------------------------------------------------- snapshots ---

    /// The whole state as bytes: a versioned postcard payload with a checksum.
    pub fn snapshot(&self) -> Vec<u8> {
        codec::encode_checked(&SnapshotFile::V2(self.to_snapshot()))
    }

    /// Rebuilds a state from [`Self::snapshot`] bytes. Bad bytes and
    /// inconsistent contents are errors, never panics.
    pub fn restore(bytes: &[u8]) -> Result<Self, SnapshotError> {
        let snap = match codec::decode_checked::<SnapshotFile>(bytes)? {
            SnapshotFile::V1(base) => SnapshotV2 {
                base,
                marks: Vec::new(),
            },
            SnapshotFile::V2(snap) => snap,
        };
        let state = Self::from_snapshot(snap).map_err(SnapshotError::Inconsistent)?;
        state
            .check_invariants()
            .map_err(SnapshotError::Inconsistent)?;
        Ok(state)
    }

    fn to_snapshot(&self) -> SnapshotV2 {
        let base = SnapshotV1 {
            last_applied: self.last_applied,
            clock_ms: self.clock_ms,
            sessions: self
                .sessions
                .iter()
                .map(|(id, s)| SessionSnap {
                    id: *id,
                    name: s.name.to_string(),
                    ttl_ms: s.ttl_ms,
                    ephemeral: s.ephemeral,
                })
                .collect(),
            tombstones: self.tombstone_order.iter().copied().collect(),
            locks: self
                .locks
                .iter()
                .map(|(name, e)| LockSnap {
                    name: name.to_string(),
                    mode: e.holders.mode(),
                    holders: e.holders.as_slice().to_vec(),
                    waiters: e
                        .waiters
                        .iter()
                        .map(|w| WaiterSnap {
                            session_id: w.session_id,
                            mode: w.mode,
                            deadline_ms: w.deadline_ms,
                            idempotency_key: w.idempotency_key.as_deref().map(str::to_owned),
                        })
                        .collect(),
                })
                .collect(),
            kv: self
                .kv
                .iter()
                .map(|(k, e)| (k.clone(), e.value.clone(), e.last_token))
                .collect(),
            stacks: self
                .stacks
                .iter()
                .map(|(k, s)| (k.clone(), s.items.clone(), s.last_token))
                .collect(),
            idempotency: self
                .idempotency
                .entries
                .iter()
                .map(|(k, e)| IdempotencySnap {
                    key: k.clone(),
                    fingerprint: e.fingerprint,
                    reply: e.reply.clone(),
                    owner: e.owner,
                    deadline_ms: e.deadline_ms,
                })
                .collect(),
        };
        SnapshotV2 {
            base,
            marks: self
                .idempotency
                .marks
                .iter()
                .map(|(prefix, m)| (prefix.clone(), m.acked_below, m.touched_ms))
                .collect(),
        }
    }

    fn from_snapshot(snap: SnapshotV2) -> Result<Self, String> {
        let SnapshotV2 { base: snap, marks } = snap;
        let mut state = LockStateMachine {
            last_applied: snap.last_applied,
            clock_ms: snap.clock_ms,
            ..Self::default()
        };
        for s in snap.sessions {
            if s.name.len() > SESSION_NAME_BYTES_MAX {
                return Err(format!("session {} name too long", s.id));
            }
            if state.sessions.contains_key(&s.id) {
                return Err(format!("session {} twice", s.id));
            }
            state.insert_session(s.id, &s.name, s.ttl_ms, s.ephemeral);
        }
        for (at, id) in snap.tombstones {
            if state.tombstones.insert(id, at).is_some() {
                return Err(format!("tombstone {id} twice"));
            }
            state.tombstone_order.push_back((at, id));
        }
        for l in snap.locks {
            let name: LockName = LockName::new(&l.name);
            let holders = match (l.mode, l.holders.as_slice()) {
                (Some(Mode::Exclusive), [h]) => Holders::Exclusive(*h),
                (Some(Mode::Shared), hs) if !hs.is_empty() => Holders::Shared(hs.to_vec()),
                _ => return Err(format!("lock {name}: bad holders")),
            };
            for h in holders.as_slice() {
                let s = state
                    .sessions
                    .get_mut(&h.session_id)
                    .ok_or_else(|| format!("lock {name} held by unknown session"))?;
                s.held.insert(name.clone());
            }
            let mut waiters = Queue::default();
            for w in l.waiters {
                let s = state
                    .sessions
                    .get_mut(&w.session_id)
                    .ok_or_else(|| format!("lock {name} awaited by unknown session"))?;
                s.waiting.insert(name.clone());
                state
                    .waiter_deadlines
                    .insert((w.deadline_ms, w.session_id, name.clone()));
                waiters.make_mut().push_back(Waiter {
                    session_id: w.session_id,
                    mode: w.mode,
                    deadline_ms: w.deadline_ms,
                    idempotency_key: w.idempotency_key.map(Into::into),
                });
            }
            if state
                .locks
                .insert(name.clone(), LockEntry { holders, waiters })
                .is_some()
            {
                return Err(format!("lock {name} twice"));
            }
        }
        for (key, value, last_token) in snap.kv {
            state.kv.insert(key, KvEntry { value, last_token });
        }
        for (name, items, last_token) in snap.stacks {
            state.stacks.insert(name, StackEntry { items, last_token });
        }
        for e in snap.idempotency {
            if e.owner.is_none() && e.deadline_ms.is_none() {
                return Err(format!("idempotency entry {:?} never expires", e.key));
            }
            if state.idempotency.entries.contains_key(&e.key) {
                return Err(format!("idempotency entry {:?} twice", e.key));
            }
            state.idempotency.insert(
                e.key,
                IdempotencyEntry {
                    fingerprint: e.fingerprint,
                    reply: e.reply,
                    owner: e.owner,
                    deadline_ms: e.deadline_ms,
                },
            );
        }
        for (prefix, acked_below, touched_ms) in marks {
            if state.idempotency.marks.contains_key(&prefix) {
                return Err(format!("idempotency mark of {prefix:?} twice"));
            }
            state.idempotency.insert_mark(
                prefix,
                AckMark {
                    acked_below,
                    touched_ms,
                },
            );
        }
        Ok(state)
    }
}

/// The snapshot format. A new version is a new variant; old ones stay
/// decodable.
#[derive(Serialize, Deserialize)]
enum SnapshotFile {
    V1(SnapshotV1),
    /// V1 plus the acknowledged low-water marks.
    V2(SnapshotV2),
}

#[derive(Serialize, Deserialize)]
struct SnapshotV2 {
    base: SnapshotV1,
    /// (prefix, acked_below, touched_ms), in prefix order.
    marks: Vec<(String, u64, u64)>,
}

#[derive(Serialize, Deserialize)]
struct SnapshotV1 {
    last_applied: LogIndex,
    clock_ms: u64,
    sessions: Vec<SessionSnap>,
    /// (expired_at_ms, session) in expiry order.
    tombstones: Vec<(u64, SessionId)>,
    locks: Vec<LockSnap>,
    kv: Vec<(String, String, Option<FencingToken>)>,
    stacks: Vec<(String, Vec<String>, Option<FencingToken>)>,
    idempotency: Vec<IdempotencySnap>,
}

#[derive(Serialize, Deserialize)]
struct SessionSnap {
    id: SessionId,
    name: String,
    ttl_ms: u64,
    ephemeral: bool,
}

#[derive(Serialize, Deserialize)]
struct LockSnap {
    name: String,
    mode: Option<Mode>,
    holders: Vec<Holder>,
    waiters: Vec<WaiterSnap>,
}

#[derive(Serialize, Deserialize)]
struct WaiterSnap {
    session_id: SessionId,
    mode: Mode,
    deadline_ms: u64,
    idempotency_key: Option<String>,
}

#[derive(Serialize, Deserialize)]
struct IdempotencySnap {
    key: String,
    fingerprint: u64,
    reply: Reply,
    owner: Option<SessionId>,
    deadline_ms: Option<u64>,
}

fn not_found(kind: NotFoundKind) -> LockError {
    LockError::NotFound { kind }
}

fn check_ttl(ttl_ms: u64) -> Result<(), LockError> {
    if !(SESSION_TTL_MS_MIN..=SESSION_TTL_MS_MAX).contains(&ttl_ms) {
        return Err(LockError::invalid(
            "ttl_ms",
            format!("must be {SESSION_TTL_MS_MIN}..={SESSION_TTL_MS_MAX}"),
        ));
    }
    Ok(())
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
