//! The live sessions, and the tombstones that keep answering `session_expired`
//! (410, not 404) for a while after one expired.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use super::snapshot::SessionSnap;
use super::Outcome;
use crate::api::limits::{
    LOCKS_PER_SESSION_MAX, SESSIONS_MAX, SESSION_NAME_BYTES_MAX, SESSION_TOMBSTONES_MAX,
    SESSION_TOMBSTONE_MS, SESSION_TTL_MS_MAX, SESSION_TTL_MS_MIN,
};
use crate::lock::name::LockName;
use crate::lock::{LockError, NotFoundKind, OpenSession, Reply, SessionId};
use crate::raft::LogIndex;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Session {
    pub(super) name: Box<str>,
    pub(super) ttl_ms: u64,
    pub(super) ephemeral: bool,
    /// State time of the last entry that renewed the lease (open, keepalive,
    /// acquire by the session, grant to an ephemeral session): a new leader
    /// measures the lease from here, not from its election.
    pub(super) renewed_at_ms: u64,
    /// Mirrors the lock table: the locks this session holds...
    pub(super) held: BTreeSet<LockName>,
    /// ...and those it waits for (never both for one lock).
    pub(super) waiting: BTreeSet<LockName>,
}

impl Session {
    pub(super) fn lock_count(&self) -> usize {
        self.held.len() + self.waiting.len()
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Sessions {
    live: BTreeMap<SessionId, Session>,
    tombstones: Tombstones,
}

/// Expired sessions, remembered for [`SESSION_TOMBSTONE_MS`] of state time
/// and at most [`SESSION_TOMBSTONES_MAX`] of them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Tombstones {
    /// Expired session -> expiry time.
    expired_at: BTreeMap<SessionId, u64>,
    /// The same, in expiry order (state time never decreases).
    order: VecDeque<(u64, SessionId)>,
}

impl Sessions {
    /// The live session `id`, or why there is none: expired (410) or unknown.
    pub(super) fn live(&self, id: SessionId) -> Result<&Session, LockError> {
        match self.live.get(&id) {
            Some(s) => Ok(s),
            None if self.tombstones.expired_at.contains_key(&id) => Err(LockError::SessionExpired),
            None => Err(LockError::NotFound {
                kind: NotFoundKind::Session,
            }),
        }
    }

    pub(super) fn get(&self, id: SessionId) -> Option<&Session> {
        self.live.get(&id)
    }

    pub(super) fn get_mut(&mut self, id: SessionId) -> Option<&mut Session> {
        self.live.get_mut(&id)
    }

    pub(super) fn contains(&self, id: SessionId) -> bool {
        self.live.contains_key(&id)
    }

    pub(super) fn len(&self) -> usize {
        self.live.len()
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = (SessionId, &Session)> + '_ {
        self.live.iter().map(|(id, s)| (*id, s))
    }

    /// Refuses a new session once [`SESSIONS_MAX`] live.
    pub(super) fn check_room(&self) -> Result<(), LockError> {
        if self.live.len() >= SESSIONS_MAX {
            return Err(LockError::invalid(
                "session",
                format!("at most {SESSIONS_MAX} live sessions"),
            ));
        }
        Ok(())
    }

    /// `OpenSession` applied at `index` at state time `now_ms`: the
    /// session's id is the index.
    pub(super) fn open(&mut self, index: LogIndex, cmd: &OpenSession, now_ms: u64) -> Outcome {
        check_ttl(cmd.ttl_ms)?;
        if cmd.name.len() > SESSION_NAME_BYTES_MAX {
            return Err(LockError::invalid(
                "name",
                format!("at most {SESSION_NAME_BYTES_MAX} bytes"),
            ));
        }
        self.check_room()?;
        self.insert(index, &cmd.name, cmd.ttl_ms, false, now_ms);
        Ok(Reply::SessionOpened {
            session_id: index,
            ttl_ms: cmd.ttl_ms,
        })
    }

    /// A new session, its lease renewed at `renewed_at_ms`.
    pub(super) fn insert(
        &mut self,
        id: SessionId,
        name: &str,
        ttl_ms: u64,
        ephemeral: bool,
        renewed_at_ms: u64,
    ) {
        let old = self.live.insert(
            id,
            Session {
                name: name.into(),
                ttl_ms,
                ephemeral,
                renewed_at_ms,
                held: BTreeSet::new(),
                waiting: BTreeSet::new(),
            },
        );
        assert!(old.is_none(), "session id {id} reused");
    }

    /// Renews the lease of live session `id` at state time `now_ms` (never
    /// back: state time only moves forward).
    pub(super) fn renew(&mut self, id: SessionId, now_ms: u64) {
        let session = self.live.get_mut(&id).expect("renewing a live session");
        session.renewed_at_ms = session.renewed_at_ms.max(now_ms);
    }

    pub(super) fn remove(&mut self, id: SessionId) -> Session {
        self.live.remove(&id).expect("ending a live session")
    }

    /// Remembers that `id` expired at `at_ms`; past the cap the oldest
    /// tombstone is forgotten early.
    pub(super) fn tombstone(&mut self, id: SessionId, at_ms: u64) {
        let t = &mut self.tombstones;
        t.expired_at.insert(id, at_ms);
        t.order.push_back((at_ms, id));
        if t.order.len() > SESSION_TOMBSTONES_MAX {
            let (_, oldest) = t.order.pop_front().expect("non-empty");
            t.expired_at.remove(&oldest);
        }
    }

    /// Forgets tombstones older than [`SESSION_TOMBSTONE_MS`] at `now_ms`.
    pub(super) fn prune_tombstones(&mut self, now_ms: u64) {
        let t = &mut self.tombstones;
        while let Some(&(at, session)) = t.order.front() {
            if at.saturating_add(SESSION_TOMBSTONE_MS) > now_ms {
                break;
            }
            t.order.pop_front();
            t.expired_at.remove(&session);
        }
    }

    /// This sub-state's own invariants (the mirror of the lock table is
    /// checked in `invariants.rs`).
    pub(super) fn check(&self, last_applied: LogIndex, clock_ms: u64) -> Result<(), String> {
        for (id, s) in &self.live {
            if s.renewed_at_ms > clock_ms {
                return Err(format!("session {id} renewed in the future"));
            }
            if s.lock_count() > LOCKS_PER_SESSION_MAX {
                return Err(format!("session {id} has too many locks"));
            }
            if self.tombstones.expired_at.contains_key(id) {
                return Err(format!("session {id} is live and tombstoned"));
            }
            if *id > last_applied {
                return Err(format!("session {id} from the future"));
            }
        }
        if self.live.len() > SESSIONS_MAX {
            return Err("too many sessions".into());
        }
        let t = &self.tombstones;
        if t.expired_at.len() != t.order.len()
            || t.order
                .iter()
                .any(|(at, id)| t.expired_at.get(id) != Some(at))
            || !t
                .order
                .iter()
                .zip(t.order.iter().skip(1))
                .all(|(a, b)| a.0 <= b.0)
        {
            return Err("tombstone index out of sync".into());
        }
        Ok(())
    }

    /// The sessions (by id), their renewal times (in the same order) and the
    /// tombstones (in expiry order) for a snapshot.
    pub(super) fn to_snapshot(&self) -> (Vec<SessionSnap>, Vec<u64>, Vec<(u64, SessionId)>) {
        let renewed_at_ms = self.live.values().map(|s| s.renewed_at_ms).collect();
        let sessions = self
            .live
            .iter()
            .map(|(id, s)| SessionSnap {
                id: *id,
                name: s.name.to_string(),
                ttl_ms: s.ttl_ms,
                ephemeral: s.ephemeral,
            })
            .collect();
        let tombstones = self.tombstones.order.iter().copied().collect();
        (sessions, renewed_at_ms, tombstones)
    }

    /// Rebuilds the sessions (holding and waiting for nothing yet: restoring
    /// the locks fills that in), renewed at `renewed_at_ms` (one per
    /// session, in order), and the tombstones.
    pub(super) fn restore(
        sessions: Vec<SessionSnap>,
        renewed_at_ms: Vec<u64>,
        tombstones: Vec<(u64, SessionId)>,
    ) -> Result<Self, String> {
        if renewed_at_ms.len() != sessions.len() {
            return Err(format!(
                "{} renewal times for {} sessions",
                renewed_at_ms.len(),
                sessions.len()
            ));
        }
        let mut restored = Sessions::default();
        for (s, renewed_at_ms) in sessions.into_iter().zip(renewed_at_ms) {
            if s.name.len() > SESSION_NAME_BYTES_MAX {
                return Err(format!("session {} name too long", s.id));
            }
            if restored.contains(s.id) {
                return Err(format!("session {} twice", s.id));
            }
            restored.insert(s.id, &s.name, s.ttl_ms, s.ephemeral, renewed_at_ms);
        }
        let t = &mut restored.tombstones;
        for (at, id) in tombstones {
            if t.expired_at.insert(id, at).is_some() {
                return Err(format!("tombstone {id} twice"));
            }
            t.order.push_back((at, id));
        }
        Ok(restored)
    }
}

/// Checks a requested session TTL against the API's range.
pub(super) fn check_ttl(ttl_ms: u64) -> Result<(), LockError> {
    if !(SESSION_TTL_MS_MIN..=SESSION_TTL_MS_MAX).contains(&ttl_ms) {
        return Err(LockError::invalid(
            "ttl_ms",
            format!("must be {SESSION_TTL_MS_MIN}..={SESSION_TTL_MS_MAX}"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(sessions: &mut Sessions, id: SessionId, ttl_ms: u64, name: &str) -> Outcome {
        sessions.open(
            id,
            &OpenSession {
                ttl_ms,
                name: name.into(),
            },
            500,
        )
    }

    #[test]
    fn open_checks_ttl_and_name_and_uses_the_index_as_id() {
        let mut sessions = Sessions::default();
        assert_eq!(
            open(&mut sessions, 7, 10_000, "w"),
            Ok(Reply::SessionOpened {
                session_id: 7,
                ttl_ms: 10_000
            })
        );
        assert_eq!(sessions.live(7).map(|s| &*s.name), Ok("w"));
        let too_long = "n".repeat(SESSION_NAME_BYTES_MAX + 1);
        for (ttl_ms, name, field) in [
            (SESSION_TTL_MS_MIN - 1, "", "ttl_ms"),
            (SESSION_TTL_MS_MAX + 1, "", "ttl_ms"),
            (10_000, too_long.as_str(), "name"),
        ] {
            match open(&mut sessions, 8, ttl_ms, name) {
                Err(LockError::InvalidRequest { field: f, .. }) => assert_eq!(f, field),
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(sessions.len(), 1);
        assert_eq!(sessions.live(7).map(|s| s.renewed_at_ms), Ok(500));
        sessions.check(8, 500).unwrap();
        assert!(sessions.check(6, 500).is_err(), "an id from the future");
        assert!(sessions.check(8, 499).is_err(), "renewed in the future");
    }

    #[test]
    fn a_tombstone_answers_expired_until_its_window_passes() {
        let mut sessions = Sessions::default();
        sessions.insert(3, "", 10_000, false, 0);
        sessions.remove(3);
        sessions.tombstone(3, 1_000);
        assert_eq!(sessions.live(3).err(), Some(LockError::SessionExpired));
        assert_eq!(
            sessions.live(4).err(),
            Some(LockError::NotFound {
                kind: NotFoundKind::Session
            })
        );
        sessions.prune_tombstones(1_000 + SESSION_TOMBSTONE_MS - 1);
        assert_eq!(sessions.live(3).err(), Some(LockError::SessionExpired));
        sessions.prune_tombstones(1_000 + SESSION_TOMBSTONE_MS);
        assert!(matches!(sessions.live(3), Err(LockError::NotFound { .. })));
        sessions.check(3, 0).unwrap();
    }

    #[test]
    fn a_renewal_never_moves_back() {
        let mut sessions = Sessions::default();
        sessions.insert(1, "", 10_000, false, 100);
        sessions.renew(1, 700);
        sessions.renew(1, 600);
        assert_eq!(sessions.live(1).map(|s| s.renewed_at_ms), Ok(700));
    }

    #[test]
    fn snapshot_round_trips_and_duplicates_are_refused() {
        let mut sessions = Sessions::default();
        sessions.insert(1, "a", 10_000, false, 40);
        sessions.insert(2, "", 30_000, true, 0);
        sessions.insert(3, "b", 10_000, false, 90);
        sessions.remove(2);
        sessions.tombstone(2, 5);
        let (live, renewed, tombstones) = sessions.to_snapshot();
        assert_eq!(renewed, vec![40, 90]);
        assert_eq!(
            Sessions::restore(live.clone(), renewed.clone(), tombstones.clone()),
            Ok(sessions)
        );
        let twice = vec![live[0].clone(), live[0].clone()];
        assert!(Sessions::restore(twice, vec![0, 0], vec![]).is_err());
        assert!(Sessions::restore(vec![], vec![], vec![(5, 2), (6, 2)]).is_err());
        assert!(
            Sessions::restore(live, vec![40], tombstones).is_err(),
            "a renewal time per session"
        );
    }
}
