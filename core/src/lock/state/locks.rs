//! The lock table: every held lock's [`LockEntry`] by name, and the index of
//! every waiter's deadline. The sessions' mirror of it is kept by the state
//! machine, which calls these methods and then updates the sessions.

use std::collections::{btree_map, BTreeMap, BTreeSet};
use std::ops::Bound;

use super::holders::{Holder, Holders, LockEntry, Queue, Waiter};
use super::invariants::Mirror;
use super::sessions::Sessions;
use super::snapshot::{LockSnap, WaiterSnap};
use crate::api::limits::{LOCKS_MAX, WAITERS_PER_LOCK_MAX};
use crate::lock::name::LockName;
use crate::lock::{validate_name, Fence, FencingToken, LockError, Mode, Release, SessionId};
use crate::raft::LogIndex;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Locks {
    entries: BTreeMap<LockName, LockEntry>,
    /// (deadline_ms, session, lock) of every waiter.
    waiter_deadlines: BTreeSet<(u64, SessionId, LockName)>,
}

/// What [`Locks::create_if_vacant`] found.
pub(super) enum Vacancy {
    /// Nobody held or waited for the lock: it now exists, granted.
    Created(LockName),
    /// The lock exists; its stored name.
    Exists(LockName),
}

/// What [`Locks::release`] left behind.
pub(super) enum Released {
    /// Waiters may now be granted the lock.
    Waiters(LockName),
    /// Nobody waits (the entry is gone if nobody holds either).
    Done,
}

impl Locks {
    pub(super) fn len(&self) -> usize {
        self.entries.len()
    }

    pub(super) fn get(&self, lock: &str) -> Option<&LockEntry> {
        self.entries.get(lock.as_bytes())
    }

    /// The entry of a lock known to exist.
    pub(super) fn entry(&self, name: &LockName) -> &LockEntry {
        &self.entries[name]
    }

    /// Locks named `prefix*` in name order, from after `after` if given.
    pub(super) fn range_from<'a>(
        &'a self,
        prefix: &'a str,
        after: Option<&'a str>,
    ) -> impl Iterator<Item = (&'a LockName, &'a LockEntry)> + 'a {
        let start = match after {
            Some(after) if after >= prefix => Bound::Excluded(after.as_bytes()),
            _ => Bound::Included(prefix.as_bytes()),
        };
        self.entries
            .range::<[u8], _>((start, Bound::Unbounded))
            .take_while(move |(name, _)| name.as_bytes().starts_with(prefix.as_bytes()))
    }

    /// The uncontended fast path: a lock nobody holds or waits for is
    /// created granted to `holder`, in a single traversal of the (possibly
    /// 1M-entry) tree; otherwise the existing lock's name is returned.
    pub(super) fn create_if_vacant(
        &mut self,
        lock: &str,
        mode: Mode,
        holder: Holder,
    ) -> Result<Vacancy, LockError> {
        let full = self.entries.len() >= LOCKS_MAX;
        match self.entries.entry(LockName::new(lock)) {
            btree_map::Entry::Occupied(occupied) => Ok(Vacancy::Exists(occupied.key().clone())),
            btree_map::Entry::Vacant(_) if full => Err(LockError::invalid(
                "lock",
                format!("at most {LOCKS_MAX} locks may be held or waited for"),
            )),
            btree_map::Entry::Vacant(vacant) => {
                let name = vacant.key().clone();
                vacant.insert(LockEntry {
                    holders: Holders::granted(mode, holder),
                    waiters: Queue::default(),
                });
                Ok(Vacancy::Created(name))
            }
        }
    }

    pub(super) fn add_holder(&mut self, name: &LockName, mode: Mode, holder: Holder) {
        let entry = self.entries.get_mut(name).expect("lock exists");
        entry.holders.add(mode, holder);
    }

    /// Removes `session`'s hold on a lock it holds (its session ends).
    pub(super) fn remove_holder(&mut self, name: &LockName, session: SessionId) {
        let entry = self.entries.get_mut(name).expect("held lock exists");
        let removed = entry.holders.remove(session);
        assert!(removed, "session.held mirrors the holders");
    }

    /// Refuses a new waiter when the lock's queue is full.
    pub(super) fn check_queue_room(entry: &LockEntry) -> Result<(), LockError> {
        if entry.waiters.len() >= WAITERS_PER_LOCK_MAX {
            return Err(LockError::invalid(
                "wait_ms",
                format!("the lock's queue is full ({WAITERS_PER_LOCK_MAX} waiters)"),
            ));
        }
        Ok(())
    }

    /// Queues `waiter` at the back; returns its position (1 = next).
    pub(super) fn enqueue(&mut self, name: &LockName, waiter: Waiter) -> u32 {
        let entry = self.entries.get_mut(name).expect("lock exists");
        self.waiter_deadlines
            .insert((waiter.deadline_ms, waiter.session_id, name.clone()));
        entry.waiters.make_mut().push_back(waiter);
        entry.waiters.len() as u32
    }

    /// Moves the deadline of the waiter at `pos` to `deadline_ms` if that
    /// is later (a wait lasts until the later of two asks).
    pub(super) fn extend_wait(&mut self, name: &LockName, pos: usize, deadline_ms: u64) {
        let entry = self.entries.get_mut(name).expect("lock exists");
        let waiter = &mut entry.waiters.make_mut()[pos];
        if deadline_ms <= waiter.deadline_ms {
            return;
        }
        self.waiter_deadlines
            .remove(&(waiter.deadline_ms, waiter.session_id, name.clone()));
        waiter.deadline_ms = deadline_ms;
        self.waiter_deadlines
            .insert((deadline_ms, waiter.session_id, name.clone()));
    }

    /// Takes `session` out of `lock`'s queue, if it waits there.
    pub(super) fn take_waiter(
        &mut self,
        lock: &str,
        session: SessionId,
    ) -> Option<(LockName, Waiter)> {
        let (name, entry) = self.entries.get_key_value(lock.as_bytes())?;
        entry.waiters.position(session)?;
        let name = name.clone();
        let waiter = self.take_waiter_of(&name, session);
        Some((name, waiter))
    }

    /// Takes `session` out of the queue of `name`, where it waits.
    pub(super) fn take_waiter_of(&mut self, name: &LockName, session: SessionId) -> Waiter {
        let entry = self.entries.get_mut(name).expect("waited-for lock exists");
        let pos = entry
            .waiters
            .position(session)
            .expect("session.waiting mirrors the queue");
        let waiter = entry.waiters.remove(pos).expect("position is in range");
        let removed = self
            .waiter_deadlines
            .remove(&(waiter.deadline_ms, session, name.clone()));
        assert!(removed, "waiter deadline indexed");
        waiter
    }

    /// Grants the lock to waiters at the head of its queue while they fit
    /// (FIFO: a shared waiter behind an exclusive one waits), each with
    /// token `index`; then drops the entry if nobody holds it. Returns the
    /// granted waiters in grant order.
    pub(super) fn grant_waiters(
        &mut self,
        name: &LockName,
        index: LogIndex,
        now_ms: u64,
    ) -> Vec<Waiter> {
        let mut granted = Vec::new();
        let Some(entry) = self.entries.get_mut(name) else {
            return granted;
        };
        while let Some(head) = entry.waiters.front() {
            if !entry.holders.admits(head.mode) {
                break;
            }
            let waiter = entry.waiters.pop_front().expect("has a head");
            let removed = self.waiter_deadlines.remove(&(
                waiter.deadline_ms,
                waiter.session_id,
                name.clone(),
            ));
            assert!(removed, "waiter deadline indexed");
            let holder = Holder {
                session_id: waiter.session_id,
                fencing_token: index,
                acquired_at_ms: now_ms,
            };
            entry.holders.add(waiter.mode, holder);
            granted.push(waiter);
        }
        if entry.holders.is_free() {
            assert!(entry.waiters.is_empty(), "a free lock has no waiters");
            self.entries.remove(name);
        }
        granted
    }

    /// `Release` of a lock: checks that the session holds it with the given
    /// token (the lock's name is validated by the caller) and drops the
    /// hold, in one traversal for the common case.
    pub(super) fn release(&mut self, cmd: &Release) -> Result<Released, LockError> {
        let btree_map::Entry::Occupied(mut occupied) = self.entries.entry(LockName::new(&cmd.lock))
        else {
            return Err(LockError::NotHolder);
        };
        let entry = occupied.get_mut();
        let newest = entry.holders.newest_token();
        let Some(holder) = entry.holders.find(cmd.session_id) else {
            return Err(match (cmd.fencing_token, newest) {
                (Some(t), Some(current)) if t < current => LockError::StaleToken {
                    current_token: Some(current),
                },
                _ => LockError::NotHolder,
            });
        };
        if let Some(t) = cmd.fencing_token {
            if t < holder.fencing_token {
                return Err(LockError::StaleToken {
                    current_token: Some(holder.fencing_token),
                });
            }
            if t > holder.fencing_token {
                return Err(LockError::NotHolder);
            }
        }
        entry.holders.remove(cmd.session_id);
        if !entry.waiters.is_empty() {
            return Ok(Released::Waiters(occupied.key().clone()));
        }
        if entry.holders.is_free() {
            occupied.remove();
        }
        Ok(Released::Done)
    }

    /// Checks an optional fence against the lock it names and a resource's
    /// last token; returns the token to record.
    pub(super) fn check_fence(
        &self,
        fence: &Option<Fence>,
        last_token: Option<FencingToken>,
    ) -> Result<Option<FencingToken>, LockError> {
        let Some(fence) = fence else {
            return Ok(None);
        };
        validate_name("lock", &fence.lock)?;
        let holder = match self.get(&fence.lock).map(|e| &e.holders) {
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

    /// The earliest waiter deadline.
    pub(super) fn next_waiter_deadline_ms(&self) -> Option<u64> {
        self.waiter_deadlines.first().map(|(d, _, _)| *d)
    }

    /// Every waiter whose deadline is at or before `now_ms`, earliest first.
    pub(super) fn due_waiters(&self, now_ms: u64) -> Vec<(u64, SessionId, LockName)> {
        self.waiter_deadlines
            .iter()
            .take_while(|(deadline, _, _)| *deadline <= now_ms)
            .cloned()
            .collect()
    }

    /// This sub-state's own invariants; returns each session's locks as the
    /// table records them, for `invariants.rs` to compare with the sessions.
    pub(super) fn check(&self, is_live: impl Fn(SessionId) -> bool) -> Result<Mirror<'_>, String> {
        let mut mirror = Mirror::default();
        let mut deadlines = BTreeSet::new();
        if self.entries.len() > LOCKS_MAX {
            return Err("too many locks".into());
        }
        for (name, entry) in &self.entries {
            check_entry(name, entry)?;
            for h in entry.holders.as_slice() {
                if !is_live(h.session_id) {
                    return Err(format!("lock {name} held by dead session {}", h.session_id));
                }
                mirror.hold(h.session_id, name)?;
            }
            for w in entry.waiters.iter() {
                if !is_live(w.session_id) {
                    return Err(format!(
                        "lock {name} awaited by dead session {}",
                        w.session_id
                    ));
                }
                mirror.wait(w.session_id, name)?;
                deadlines.insert((w.deadline_ms, w.session_id, name.clone()));
            }
        }
        if deadlines != self.waiter_deadlines {
            return Err("waiter deadline index out of sync".into());
        }
        Ok(mirror)
    }

    /// Every lock, by name, for a snapshot.
    pub(super) fn to_snapshot(&self) -> Vec<LockSnap> {
        self.entries
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
            .collect()
    }

    /// Rebuilds the lock table and fills in the sessions' held and waiting
    /// sets; a holder or waiter of an unknown session is an error.
    pub(super) fn restore(snaps: Vec<LockSnap>, sessions: &mut Sessions) -> Result<Self, String> {
        let mut locks = Locks::default();
        for l in snaps {
            let name = LockName::new(&l.name);
            let holders = match (l.mode, l.holders.as_slice()) {
                (Some(Mode::Exclusive), [h]) => Holders::Exclusive(*h),
                (Some(Mode::Shared), hs) if !hs.is_empty() => Holders::Shared(hs.to_vec()),
                _ => return Err(format!("lock {name}: bad holders")),
            };
            for h in holders.as_slice() {
                let s = sessions
                    .get_mut(h.session_id)
                    .ok_or_else(|| format!("lock {name} held by unknown session"))?;
                s.held.insert(name.clone());
            }
            let mut waiters = Queue::default();
            for w in l.waiters {
                let s = sessions
                    .get_mut(w.session_id)
                    .ok_or_else(|| format!("lock {name} awaited by unknown session"))?;
                s.waiting.insert(name.clone());
                locks
                    .waiter_deadlines
                    .insert((w.deadline_ms, w.session_id, name.clone()));
                waiters.make_mut().push_back(Waiter {
                    session_id: w.session_id,
                    mode: w.mode,
                    deadline_ms: w.deadline_ms,
                    idempotency_key: w.idempotency_key.map(Into::into),
                });
            }
            let entry = LockEntry { holders, waiters };
            if locks.entries.insert(name.clone(), entry).is_some() {
                return Err(format!("lock {name} twice"));
            }
        }
        Ok(locks)
    }
}

/// One entry's own invariants: a valid name, held, a bounded queue whose
/// head could not be granted, no empty queue box.
fn check_entry(name: &LockName, entry: &LockEntry) -> Result<(), String> {
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
    if entry.waiters.keeps_empty_box() {
        return Err(format!("lock {name} keeps an empty queue box"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::holders::test_values::{holder, waiter};
    use super::*;

    fn created(locks: &mut Locks, lock: &str, mode: Mode, h: Holder) -> LockName {
        match locks.create_if_vacant(lock, mode, h) {
            Ok(Vacancy::Created(name)) => name,
            _ => panic!("{lock} not created"),
        }
    }

    #[test]
    fn queue_and_deadline_index_move_together() {
        let mut locks = Locks::default();
        let name = created(&mut locks, "L", Mode::Exclusive, holder(1, 1));
        assert!(matches!(
            locks.create_if_vacant("L", Mode::Exclusive, holder(2, 2)),
            Ok(Vacancy::Exists(_))
        ));
        assert_eq!(locks.enqueue(&name, waiter(2, Mode::Shared, 500)), 1);
        assert_eq!(locks.enqueue(&name, waiter(3, Mode::Shared, 300)), 2);
        assert_eq!(locks.next_waiter_deadline_ms(), Some(300));
        locks.extend_wait(&name, 1, 200);
        assert_eq!(locks.next_waiter_deadline_ms(), Some(300), "never earlier");
        locks.extend_wait(&name, 1, 900);
        assert_eq!(locks.due_waiters(600).len(), 1);
        let (_, w) = locks.take_waiter("L", 2).expect("waits");
        assert_eq!(w.deadline_ms, 500);
        assert!(locks.take_waiter("L", 2).is_none());
        assert_eq!(locks.next_waiter_deadline_ms(), Some(900));
    }

    #[test]
    fn release_hands_over_to_consecutive_shared_waiters_then_drops_the_lock() {
        let mut locks = Locks::default();
        let name = created(&mut locks, "L", Mode::Exclusive, holder(1, 1));
        locks.enqueue(&name, waiter(2, Mode::Shared, 9));
        locks.enqueue(&name, waiter(3, Mode::Shared, 9));
        locks.enqueue(&name, waiter(4, Mode::Exclusive, 9));
        let release = |session_id, fencing_token| Release {
            lock: "L".into(),
            session_id,
            fencing_token,
        };
        assert_eq!(
            locks.release(&release(1, Some(0))).err(),
            Some(LockError::StaleToken {
                current_token: Some(1)
            })
        );
        assert!(matches!(
            locks.release(&release(1, None)),
            Ok(Released::Waiters(_))
        ));
        let granted: Vec<SessionId> = locks
            .grant_waiters(&name, 5, 0)
            .iter()
            .map(|w| w.session_id)
            .collect();
        assert_eq!(granted, vec![2, 3], "the exclusive waiter stays queued");
        assert_eq!(locks.check_fence(&None, None), Ok(None));
        assert!(matches!(
            locks.release(&release(2, None)),
            Ok(Released::Waiters(_))
        ));
        assert!(locks.grant_waiters(&name, 6, 0).is_empty());
        assert!(matches!(
            locks.release(&release(3, Some(5))),
            Ok(Released::Waiters(_))
        ));
        assert_eq!(locks.grant_waiters(&name, 7, 0).len(), 1);
        assert!(matches!(
            locks.release(&release(4, Some(7))),
            Ok(Released::Done)
        ));
        assert_eq!(locks.len(), 0, "a free lock without waiters is gone");
        assert_eq!(
            locks.release(&release(4, None)).err(),
            Some(LockError::NotHolder)
        );
    }

    #[test]
    fn a_fence_needs_the_exclusive_grant_and_no_newer_write() {
        let mut locks = Locks::default();
        created(&mut locks, "L", Mode::Exclusive, holder(1, 10));
        created(&mut locks, "S", Mode::Shared, holder(1, 11));
        let fence = |lock: &str, fencing_token| {
            Some(Fence {
                lock: lock.into(),
                fencing_token,
            })
        };
        assert_eq!(locks.check_fence(&fence("L", 10), Some(9)), Ok(Some(10)));
        assert_eq!(
            locks.check_fence(&fence("L", 10), Some(12)),
            Err(LockError::StaleToken {
                current_token: Some(12)
            })
        );
        assert_eq!(
            locks.check_fence(&fence("L", 9), None),
            Err(LockError::StaleToken {
                current_token: Some(10)
            })
        );
        assert_eq!(
            locks.check_fence(&fence("L", 11), None),
            Err(LockError::NotHolder)
        );
        assert_eq!(
            locks.check_fence(&fence("S", 11), None),
            Err(LockError::NotHolder)
        );
        assert_eq!(
            locks.check_fence(&fence("free", 1), None),
            Err(LockError::NotHolder)
        );
    }

    #[test]
    fn check_catches_a_stale_deadline_index_and_dead_sessions() {
        let mut locks = Locks::default();
        let name = created(&mut locks, "L", Mode::Exclusive, holder(1, 1));
        locks.enqueue(&name, waiter(2, Mode::Shared, 9));
        assert!(locks.check(|_| true).is_ok());
        assert!(locks.check(|id| id != 2).is_err());
        locks.waiter_deadlines.clear();
        assert!(locks.check(|_| true).is_err());
    }
}
