//! What a replica rebuilds from storage when it starts: its log, the
//! memberships in it and its hard state. A founding member with empty
//! storage first writes the initial membership as entry 1 (bootstrap).

use super::log::RaftLog;
use super::membership_log::MembershipLog;
use super::types::{Entry, EntryPayload, HardState, LogIndex, Membership, SnapshotMeta};

/// What storage held when the process started. Empty storage is
/// `RestoredState::default()`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RestoredState {
    pub hard_state: HardState,
    pub snapshot: Option<SnapshotMeta>,
    /// The entries after the snapshot, contiguous.
    pub entries: Vec<Entry>,
}

/// A replica's starting state, rebuilt from a [`RestoredState`].
#[derive(Debug)]
pub(crate) struct Recovered {
    pub(crate) log: RaftLog,
    pub(crate) memberships: MembershipLog,
    /// Term and vote as stored; the commit index kept within the log.
    pub(crate) hard_state: HardState,
    /// The hard state storage holds (before the bootstrap entry commits).
    pub(crate) stored_hard_state: HardState,
    /// First entry storage does not hold yet (the bootstrap entry).
    pub(crate) unwritten_from: Option<LogIndex>,
}

impl Recovered {
    /// `initial_membership` is used only when storage is empty (a
    /// bootstrapping cluster; a joining node passes an empty one).
    pub(crate) fn new(restored: RestoredState, initial_membership: Membership) -> Self {
        let RestoredState {
            mut hard_state,
            snapshot,
            entries,
        } = restored;
        let storage_empty = snapshot.is_none() && entries.is_empty();
        let (snapshot_index, snapshot_term, base_membership) = match snapshot {
            Some(meta) => (meta.last_index, meta.last_term, meta.membership),
            None if storage_empty => (0, 0, initial_membership),
            None => (0, 0, Membership::default()),
        };
        let mut log = RaftLog::restore(snapshot_index, snapshot_term, entries);
        // Bootstrap: the founding membership becomes entry 1 (term 0), the
        // same on every founding member and committed by definition, so it
        // is stored like any other entry and survives restarts.
        let bootstrap = storage_empty && !base_membership.members.is_empty();
        let base_membership = if bootstrap {
            log.append(&[Entry {
                term: 0,
                index: 1,
                payload: EntryPayload::Membership(base_membership),
            }]);
            hard_state.commit_index = 1;
            Membership::default()
        } else {
            base_membership
        };
        let memberships = MembershipLog::new(base_membership, log.entries());
        // A torn write may have kept the hard state but not every entry; the
        // commit index is recomputed from the cluster in that case.
        let commit_index = hard_state
            .commit_index
            .clamp(snapshot_index, log.last_index());
        let stored_hard_state = HardState {
            commit_index: if bootstrap { 0 } else { commit_index },
            ..hard_state
        };
        Self {
            log,
            memberships,
            hard_state: HardState {
                commit_index,
                ..hard_state
            },
            stored_hard_state,
            unwritten_from: bootstrap.then_some(1),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::types::Member;

    fn founders() -> Membership {
        let mut m = Membership::default();
        m.members.insert(
            1,
            Member {
                voter: true,
                peer_addr: "a:1".into(),
                api_addr: String::new(),
            },
        );
        m
    }

    fn entry(index: LogIndex, term: u64) -> Entry {
        Entry {
            term,
            index,
            payload: EntryPayload::Noop,
        }
    }

    #[test]
    fn a_founder_writes_the_membership_as_committed_entry_1() {
        let r = Recovered::new(RestoredState::default(), founders());
        assert_eq!(r.log.last_index(), 1);
        assert_eq!(r.memberships.latest(), &founders());
        assert_eq!(r.hard_state.commit_index, 1);
        assert_eq!(r.stored_hard_state.commit_index, 0, "not stored yet");
        assert_eq!(r.unwritten_from, Some(1));
    }

    #[test]
    fn a_joiner_starts_empty() {
        let r = Recovered::new(RestoredState::default(), Membership::default());
        assert_eq!(r.log.last_index(), 0);
        assert_eq!(r.unwritten_from, None);
        assert!(r.memberships.latest().members.is_empty());
    }

    #[test]
    fn stored_state_wins_over_the_initial_membership_and_commit_stays_in_the_log() {
        let restored = RestoredState {
            hard_state: HardState {
                term: 3,
                voted_for: Some(1),
                commit_index: 9,
            },
            snapshot: Some(SnapshotMeta {
                last_index: 4,
                last_term: 2,
                membership: founders(),
            }),
            entries: vec![entry(5, 2), entry(6, 3)],
        };
        let r = Recovered::new(restored, Membership::default());
        assert_eq!((r.log.snapshot_index(), r.log.last_index()), (4, 6));
        assert_eq!(r.memberships.latest(), &founders());
        assert_eq!(
            r.hard_state.commit_index, 6,
            "torn tail: clamped to the log"
        );
        assert_eq!(r.stored_hard_state, r.hard_state);
        assert_eq!(r.unwritten_from, None);
    }
}
