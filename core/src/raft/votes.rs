//! The votes of one (pre-)election and whether they decide it.

use std::collections::BTreeMap;

use super::types::{Membership, NodeId};

/// What the votes gathered so far decide.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum VoteResult {
    Won,
    Lost,
    Pending,
}

#[derive(Debug, Clone, Default)]
pub(crate) struct Votes {
    /// The first answer of each node: granted or not.
    votes: BTreeMap<NodeId, bool>,
    /// The batch whose durability makes a candidate's own vote count.
    self_vote_seq: u64,
}

impl Votes {
    /// Forgets every answer (a new election, or none any more).
    pub(crate) fn clear(&mut self) {
        self.votes.clear();
    }

    /// Records `from`'s answer; only its first one counts.
    pub(crate) fn record(&mut self, from: NodeId, granted: bool) {
        self.votes.entry(from).or_insert(granted);
    }

    pub(crate) fn contains(&self, id: NodeId) -> bool {
        self.votes.contains_key(&id)
    }

    /// A candidate's own vote counts only once batch `seq` (its new term and
    /// vote) is durable.
    pub(crate) fn await_self_vote(&mut self, seq: u64) {
        self.self_vote_seq = seq;
    }

    pub(crate) fn self_vote_seq(&self) -> u64 {
        self.self_vote_seq
    }

    /// Counts the answers of `membership`'s voters: a quorum of grants wins;
    /// more refusals than the voters who could still be missing loses.
    pub(crate) fn tally(&self, membership: &Membership) -> VoteResult {
        let quorum = membership.quorum();
        let voters = membership.voters().count();
        let granted = self
            .votes
            .iter()
            .filter(|(id, g)| **g && membership.is_voter(**id))
            .count();
        let rejected = self
            .votes
            .iter()
            .filter(|(id, g)| !**g && membership.is_voter(**id))
            .count();
        if granted >= quorum {
            VoteResult::Won
        } else if rejected > voters - quorum {
            VoteResult::Lost
        } else {
            VoteResult::Pending
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_quorum_of_voters_decides_and_first_answers_count() {
        let m = Membership::of(&[1, 2, 3], &[4]);
        let mut v = Votes::default();
        v.record(1, true);
        assert_eq!(v.tally(&m), VoteResult::Pending);
        v.record(4, true);
        assert_eq!(v.tally(&m), VoteResult::Pending, "a learner's vote");
        v.record(2, false);
        v.record(2, true);
        assert_eq!(v.tally(&m), VoteResult::Pending, "the first answer counts");
        v.record(3, true);
        assert_eq!(v.tally(&m), VoteResult::Won);
        v.clear();
        v.record(2, false);
        v.record(3, false);
        assert_eq!(v.tally(&m), VoteResult::Lost);
        assert!(!v.contains(1));
    }
}
