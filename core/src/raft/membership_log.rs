//! Which membership is in force at each log index: the one at the snapshot
//! boundary plus every membership entry after it. A membership takes effect
//! when appended, so truncating the log can bring an older one back.

use std::collections::BTreeSet;

use super::error::MembershipError;
use super::types::{Entry, EntryPayload, LogIndex, Member, Membership, NodeId};

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

    /// Checks a proposed next membership against the one-voter-at-a-time
    /// rule: the previous change is committed, `next` keeps a voter, and at
    /// most one voter is added or removed.
    pub(crate) fn check_change(
        &self,
        next: &Membership,
        commit_index: LogIndex,
    ) -> Result<(), MembershipError> {
        if self.last_change_index() > commit_index {
            return Err(MembershipError::ChangeInProgress);
        }
        let current: BTreeSet<NodeId> = self.latest().voters().collect();
        let wanted: BTreeSet<NodeId> = next.voters().collect();
        if wanted.is_empty() {
            return Err(MembershipError::NoVoters);
        }
        if current.symmetric_difference(&wanted).count() > 1 {
            return Err(MembershipError::MoreThanOneVoterChanged);
        }
        Ok(())
    }

    /// The latest membership plus a learner.
    pub(crate) fn with_learner(
        &self,
        id: NodeId,
        peer_addr: String,
        api_addr: String,
    ) -> Result<Membership, MembershipError> {
        if self.latest().contains(id) {
            return Err(MembershipError::AlreadyMember(id));
        }
        let mut next = self.latest().clone();
        let learner = Member {
            voter: false,
            peer_addr,
            api_addr,
        };
        next.members.insert(id, learner);
        Ok(next)
    }

    /// The latest membership with member `id` a voter.
    pub(crate) fn with_voter(&self, id: NodeId) -> Result<Membership, MembershipError> {
        let mut next = self.latest().clone();
        let Some(member) = next.members.get_mut(&id) else {
            return Err(MembershipError::UnknownMember(id));
        };
        member.voter = true;
        Ok(next)
    }

    /// The latest membership without member `id`.
    pub(crate) fn without(&self, id: NodeId) -> Result<Membership, MembershipError> {
        let mut next = self.latest().clone();
        if next.members.remove(&id).is_none() {
            return Err(MembershipError::UnknownMember(id));
        }
        // A node re-added under this id later is another incarnation.
        next.incarnations.remove(&id);
        Ok(next)
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
            entry(4, EntryPayload::Membership(Membership::of(&[1, 2], &[]))),
        ];
        let mut log = MembershipLog::new(Membership::of(&[1], &[]), &entries);
        assert_eq!(log.latest(), &Membership::of(&[1, 2], &[]));
        assert_eq!(log.at(3), &Membership::of(&[1], &[]));
        assert_eq!(log.last_change_index(), 4);
        assert_eq!(
            log.previous_if_uncommitted(3),
            Some(&Membership::of(&[1], &[]))
        );
        assert_eq!(log.previous_if_uncommitted(4), None);
        assert!(!log.appended(&entry(5, EntryPayload::Noop)));
        assert!(log.appended(&entry(
            6,
            EntryPayload::Membership(Membership::of(&[1, 2, 3], &[]))
        )));
        assert_eq!(log.at(5), &Membership::of(&[1, 2], &[]));
        assert!(!log.truncate_from(7));
        assert!(log.truncate_from(6));
        assert_eq!(log.latest(), &Membership::of(&[1, 2], &[]));
    }

    #[test]
    fn changes_go_one_voter_at_a_time_after_the_previous_one_commits() {
        let entries = [entry(
            4,
            EntryPayload::Membership(Membership::of(&[1, 2], &[])),
        )];
        let log = MembershipLog::new(Membership::of(&[1], &[]), &entries);
        let err = |r: Result<(), MembershipError>| r.expect_err("refused");
        let next = Membership::of(&[1, 2, 3], &[]);
        assert_eq!(
            err(log.check_change(&next, 3)),
            MembershipError::ChangeInProgress
        );
        assert_eq!(log.check_change(&next, 4), Ok(()));
        let two_more = Membership::of(&[1, 2, 3, 4], &[]);
        assert_eq!(
            err(log.check_change(&two_more, 4)),
            MembershipError::MoreThanOneVoterChanged
        );
        let none = Membership::of(&[], &[]);
        assert_eq!(err(log.check_change(&none, 4)), MembershipError::NoVoters);
    }

    #[test]
    fn next_memberships_are_built_from_the_latest() {
        let log = MembershipLog::new(Membership::of(&[1], &[]), &[]);
        assert_eq!(
            log.with_learner(1, String::new(), String::new()),
            Err(MembershipError::AlreadyMember(1))
        );
        let with_learner = log.with_learner(2, "b:1".into(), "b:2".into());
        let with_learner = with_learner.expect("new member");
        assert_eq!(with_learner.learners().collect::<Vec<_>>(), vec![2]);
        assert_eq!(log.with_voter(2), Err(MembershipError::UnknownMember(2)));
        assert_eq!(log.without(2), Err(MembershipError::UnknownMember(2)));
        let log = MembershipLog::new(with_learner, &[]);
        assert_eq!(log.with_voter(2).map(|m| m.quorum()), Ok(2));
        assert_eq!(log.without(1).map(|m| m.voters().count()), Ok(0));
    }

    /// A removed member's incarnation leaves with it: the same id added
    /// again later is a new data dir, recorded afresh.
    #[test]
    fn removing_a_member_forgets_its_incarnation() {
        let mut base = Membership::of(&[1, 2], &[]);
        base.incarnations.insert(1, 11);
        base.incarnations.insert(2, 22);
        let log = MembershipLog::new(base, &[]);
        let next = log.without(2).expect("member 2 exists");
        assert_eq!(next.incarnation(2), None);
        assert_eq!(next.incarnation(1), Some(11));
        // Recording an incarnation changes no voter: a legal change.
        let mut recorded = log.latest().clone();
        recorded.incarnations.insert(2, 23);
        assert_eq!(log.check_change(&recorded, 0), Ok(()));
    }

    #[test]
    fn a_snapshot_moves_the_base() {
        let entries = [
            entry(2, EntryPayload::Membership(Membership::of(&[1, 2], &[]))),
            entry(5, EntryPayload::Membership(Membership::of(&[1, 2, 3], &[]))),
        ];
        let mut log = MembershipLog::new(Membership::of(&[1], &[]), &entries);
        log.compact_to(4);
        assert_eq!(log.at(4), &Membership::of(&[1, 2], &[]));
        assert_eq!(log.last_change_index(), 5);
        log.reset(Membership::of(&[7], &[]));
        assert_eq!(log.latest(), &Membership::of(&[7], &[]));
        assert_eq!(log.last_change_index(), 0);
    }
}
