//! Which membership is in force at each log index: the one at the snapshot
//! boundary plus every membership entry after it. A membership takes effect
//! when appended, so truncating the log can bring an older one back.

use super::types::{Entry, EntryPayload, LogIndex, Membership};

#[derive(Debug, Clone, Default)]
pub(crate) struct MembershipLog {
    /// Membership at the snapshot boundary (or the initial one).
    base: Membership,
    /// Membership entries in the log after the snapshot, ascending by index.
    changes: Vec<(LogIndex, Membership)>,
}

impl MembershipLog {
    /// `base` at the snapshot boundary, then the memberships among `entries`
    /// (the log after the snapshot).
    pub(crate) fn new(base: Membership, entries: &[Entry]) -> Self {
        let changes = entries
            .iter()
            .filter_map(|e| match &e.payload {
                EntryPayload::Membership(m) => Some((e.index, m.clone())),
                _ => None,
            })
            .collect();
        Self { base, changes }
    }

    /// The membership in force: the latest one in the log, committed or not.
    pub(crate) fn latest(&self) -> &Membership {
        self.changes.last().map_or(&self.base, |(_, m)| m)
    }

    /// The membership in force at `index`.
    pub(crate) fn at(&self, index: LogIndex) -> &Membership {
        self.changes
            .iter()
            .rev()
            .find(|(i, _)| *i <= index)
            .map_or(&self.base, |(_, m)| m)
    }

    /// Index of the latest membership entry (0 if none after the snapshot).
    pub(crate) fn last_change_index(&self) -> LogIndex {
        self.changes.last().map_or(0, |(i, _)| *i)
    }

    /// The membership the latest change replaced, while that change is not
    /// committed (index after `commit_index`).
    pub(crate) fn previous_if_uncommitted(&self, commit_index: LogIndex) -> Option<&Membership> {
        match self.changes.last() {
            Some((index, _)) if *index > commit_index => Some(self.at(index - 1)),
            _ => None,
        }
    }

    /// `entry` entered the log; returns whether it changed the membership.
    pub(crate) fn appended(&mut self, entry: &Entry) -> bool {
        match &entry.payload {
            EntryPayload::Membership(m) => {
                self.changes.push((entry.index, m.clone()));
                true
            }
            _ => false,
        }
    }

    /// Entries from `from` on left the log; returns whether that changed the
    /// membership in force.
    pub(crate) fn truncate_from(&mut self, from: LogIndex) -> bool {
        let before = self.changes.len();
        self.changes.retain(|(i, _)| *i < from);
        self.changes.len() != before
    }

    /// The log up to `index` became a snapshot: the membership at `index`
    /// becomes the base.
    pub(crate) fn compact_to(&mut self, index: LogIndex) {
        self.base = self.at(index).clone();
        self.changes.retain(|(i, _)| *i > index);
    }

    /// A received snapshot replaced the whole log.
    pub(crate) fn reset(&mut self, base: Membership) {
        self.base = base;
        self.changes.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::types::Member;

    fn voters(ids: &[u64]) -> Membership {
        let mut m = Membership::default();
        for &id in ids {
            m.members.insert(
                id,
                Member {
                    voter: true,
                    peer_addr: String::new(),
                    api_addr: String::new(),
                },
            );
        }
        m
    }

    fn entry(index: LogIndex, payload: EntryPayload) -> Entry {
        Entry {
            term: 1,
            index,
            payload,
        }
    }

    #[test]
    fn memberships_take_effect_when_appended_and_leave_when_truncated() {
        let entries = [
            entry(3, EntryPayload::Noop),
            entry(4, EntryPayload::Membership(voters(&[1, 2]))),
        ];
        let mut log = MembershipLog::new(voters(&[1]), &entries);
        assert_eq!(log.latest(), &voters(&[1, 2]));
        assert_eq!(log.at(3), &voters(&[1]));
        assert_eq!(log.last_change_index(), 4);
        assert_eq!(log.previous_if_uncommitted(3), Some(&voters(&[1])));
        assert_eq!(log.previous_if_uncommitted(4), None);
        assert!(!log.appended(&entry(5, EntryPayload::Noop)));
        assert!(log.appended(&entry(6, EntryPayload::Membership(voters(&[1, 2, 3])))));
        assert_eq!(log.at(5), &voters(&[1, 2]));
        assert!(!log.truncate_from(7));
        assert!(log.truncate_from(6));
        assert_eq!(log.latest(), &voters(&[1, 2]));
    }

    #[test]
    fn a_snapshot_moves_the_base() {
        let entries = [
            entry(2, EntryPayload::Membership(voters(&[1, 2]))),
            entry(5, EntryPayload::Membership(voters(&[1, 2, 3]))),
        ];
        let mut log = MembershipLog::new(voters(&[1]), &entries);
        log.compact_to(4);
        assert_eq!(log.at(4), &voters(&[1, 2]));
        assert_eq!(log.last_change_index(), 5);
        log.reset(voters(&[7]));
        assert_eq!(log.latest(), &voters(&[7]));
        assert_eq!(log.last_change_index(), 0);
    }
}
