//! One lock's entry: who holds it ([`Holders`]) and who waits, in order
//! ([`Queue`]). Sized for a million idle locks: an exclusive holder is
//! inline and an empty queue is one null pointer.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use crate::lock::{FencingToken, Mode, SessionId};

/// One grant. 24 bytes, stored inline for an exclusive lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Holder {
    pub(super) session_id: SessionId,
    pub(super) fencing_token: FencingToken,
    pub(super) acquired_at_ms: u64,
}

/// The holders of one lock. Inline for the common exclusive case so an idle
/// lock costs no heap besides its name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Holders {
    Free,
    Exclusive(Holder),
    /// Never empty: an emptied shared set becomes `Free`.
    Shared(Vec<Holder>),
}

impl Holders {
    /// Holders granted `holder` in `mode`.
    pub(super) fn granted(mode: Mode, holder: Holder) -> Self {
        let mut holders = Holders::Free;
        holders.add(mode, holder);
        holders
    }

    pub(super) fn mode(&self) -> Option<Mode> {
        match self {
            Holders::Free => None,
            Holders::Exclusive(_) => Some(Mode::Exclusive),
            Holders::Shared(_) => Some(Mode::Shared),
        }
    }

    pub(super) fn is_free(&self) -> bool {
        matches!(self, Holders::Free)
    }

    /// Whether a request in `mode` may join these holders.
    pub(super) fn admits(&self, mode: Mode) -> bool {
        match self {
            Holders::Free => true,
            Holders::Shared(_) => mode == Mode::Shared,
            Holders::Exclusive(_) => false,
        }
    }

    pub(super) fn as_slice(&self) -> &[Holder] {
        match self {
            Holders::Free => &[],
            Holders::Exclusive(h) => std::slice::from_ref(h),
            Holders::Shared(v) => v,
        }
    }

    pub(super) fn find(&self, session: SessionId) -> Option<&Holder> {
        self.as_slice().iter().find(|h| h.session_id == session)
    }

    pub(super) fn newest_token(&self) -> Option<FencingToken> {
        self.as_slice().iter().map(|h| h.fencing_token).max()
    }

    pub(super) fn add(&mut self, mode: Mode, holder: Holder) {
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
    pub(super) fn remove(&mut self, session: SessionId) -> bool {
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
pub(super) struct Waiter {
    pub(super) session_id: SessionId,
    pub(super) mode: Mode,
    pub(super) deadline_ms: u64,
    /// The idempotency key of the acquire that queued it: its cached reply
    /// becomes the wait's final outcome.
    pub(super) idempotency_key: Option<Box<str>>,
}

/// A lock's FIFO queue, boxed only while someone waits: an idle lock pays
/// 8 bytes for it instead of an inline `VecDeque`'s 32 (smaller B-tree
/// values also mean less memory moved on every insert and remove).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
// The box is the point: it keeps the empty case at 8 bytes.
#[allow(clippy::box_collection)]
pub(super) struct Queue(Option<Box<VecDeque<Waiter>>>);

static EMPTY_QUEUE: VecDeque<Waiter> = VecDeque::new();

impl std::ops::Deref for Queue {
    type Target = VecDeque<Waiter>;

    fn deref(&self) -> &VecDeque<Waiter> {
        self.0.as_deref().unwrap_or(&EMPTY_QUEUE)
    }
}

impl Queue {
    pub(super) fn make_mut(&mut self) -> &mut VecDeque<Waiter> {
        self.0.get_or_insert_with(Box::default)
    }

    /// Frees the box once the queue is empty.
    fn tidy(&mut self) {
        if self.0.as_ref().is_some_and(|q| q.is_empty()) {
            self.0 = None;
        }
    }

    /// True if the box is kept although nobody waits (an invariant breach).
    pub(super) fn keeps_empty_box(&self) -> bool {
        self.0.as_ref().is_some_and(|q| q.is_empty())
    }

    pub(super) fn position(&self, session: SessionId) -> Option<usize> {
        self.iter().position(|w| w.session_id == session)
    }

    pub(super) fn remove(&mut self, pos: usize) -> Option<Waiter> {
        let waiter = self.make_mut().remove(pos);
        self.tidy();
        waiter
    }

    pub(super) fn pop_front(&mut self) -> Option<Waiter> {
        let waiter = self.make_mut().pop_front();
        self.tidy();
        waiter
    }
}

/// The value of one lock in the lock table. Exists only while the lock is
/// held (a free lock has no waiters: its head would have been granted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct LockEntry {
    pub(super) holders: Holders,
    pub(super) waiters: Queue,
}

impl LockEntry {
    /// Whether a new request in `mode` is granted at once: nobody queues
    /// ahead (FIFO, so no writer starvation) and the holders admit it.
    pub(super) fn grants_at_once(&self, mode: Mode) -> bool {
        self.waiters.is_empty() && self.holders.admits(mode)
    }
}

/// Short constructors for the unit tests of this folder.
#[cfg(test)]
pub(super) mod test_values {
    use super::*;

    pub(in crate::lock::state) fn holder(
        session_id: SessionId,
        fencing_token: FencingToken,
    ) -> Holder {
        Holder {
            session_id,
            fencing_token,
            acquired_at_ms: 0,
        }
    }

    pub(in crate::lock::state) fn waiter(
        session_id: SessionId,
        mode: Mode,
        deadline_ms: u64,
    ) -> Waiter {
        Waiter {
            session_id,
            mode,
            deadline_ms,
            idempotency_key: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::test_values::holder;
    use super::*;

    fn waiter(session_id: SessionId) -> Waiter {
        super::test_values::waiter(session_id, Mode::Shared, 0)
    }

    #[test]
    fn an_idle_lock_entry_stays_small() {
        // 24 (inline holder + tag) + 8 (queue box) + 8: the B-tree value of a lock.
        assert_eq!(std::mem::size_of::<LockEntry>(), 40);
    }

    #[test]
    fn shared_holders_join_and_leave_and_an_emptied_set_is_free() {
        let mut holders = Holders::granted(Mode::Shared, holder(1, 5));
        assert!(holders.admits(Mode::Shared) && !holders.admits(Mode::Exclusive));
        holders.add(Mode::Shared, holder(2, 7));
        assert_eq!(holders.newest_token(), Some(7));
        assert_eq!(holders.find(1).map(|h| h.fencing_token), Some(5));
        assert!(!holders.remove(3));
        assert!(holders.remove(1));
        assert_eq!(holders.mode(), Some(Mode::Shared));
        assert!(holders.remove(2));
        assert!(holders.is_free() && holders.admits(Mode::Exclusive));
    }

    #[test]
    fn an_exclusive_holder_admits_nobody() {
        let mut holders = Holders::granted(Mode::Exclusive, holder(1, 5));
        assert!(!holders.admits(Mode::Shared) && !holders.admits(Mode::Exclusive));
        assert!(!holders.remove(2));
        assert!(holders.remove(1));
        assert_eq!(holders.mode(), None);
    }

    #[test]
    #[should_panic(expected = "granting Shared to a lock held as Some(Exclusive)")]
    fn granting_past_an_exclusive_holder_is_a_bug() {
        let mut holders = Holders::granted(Mode::Exclusive, holder(1, 5));
        holders.add(Mode::Shared, holder(2, 6));
    }

    #[test]
    fn the_queue_box_is_freed_once_empty() {
        let mut queue = Queue::default();
        queue.make_mut().push_back(waiter(1));
        queue.make_mut().push_back(waiter(2));
        assert_eq!(queue.position(2), Some(1));
        assert_eq!(queue.remove(0).map(|w| w.session_id), Some(1));
        assert!(!queue.keeps_empty_box());
        assert_eq!(queue.pop_front().map(|w| w.session_id), Some(2));
        assert_eq!(queue, Queue::default(), "no box left behind");
        assert!(queue.pop_front().is_none());
    }

    #[test]
    fn a_queued_waiter_blocks_a_request_the_holders_would_admit() {
        let mut entry = LockEntry {
            holders: Holders::granted(Mode::Shared, holder(1, 5)),
            waiters: Queue::default(),
        };
        assert!(entry.grants_at_once(Mode::Shared));
        entry.waiters.make_mut().push_back(waiter(2));
        assert!(!entry.grants_at_once(Mode::Shared));
    }
}
