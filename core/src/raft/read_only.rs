//! A leader's linearizable reads (ReadIndex, Raft §6.4), local and forwarded
//! by followers: each waits for a heartbeat round a quorum acknowledged, and
//! on a fresh leader first for its no-op to commit.

use std::collections::{BTreeSet, VecDeque};

use super::config::PENDING_READS_MAX;
use super::message::Message;
use super::ready::{Outbox, ReadState};
use super::types::{LogIndex, Membership, NodeId, Term};

/// A read waiting for a quorum to confirm the leader still leads.
#[derive(Debug, Clone, PartialEq, Eq)]
struct UnconfirmedRead {
    /// `None` for a local read, the follower's id for a forwarded one.
    origin: Option<NodeId>,
    request_id: u64,
    /// The commit index when the read arrived: safe to serve once applied.
    index: LogIndex,
    /// The heartbeat round that confirms it.
    read_ctx: u64,
    /// Voters (and others, filtered when counting) that answered that round
    /// or a later one.
    acks: BTreeSet<NodeId>,
}

/// The reads a leader holds, in arrival order.
#[derive(Debug, Clone, Default)]
pub(crate) struct ReadOnly {
    /// Number of the latest heartbeat round started for a read.
    read_ctx: u64,
    unconfirmed: VecDeque<UnconfirmedRead>,
    /// Reads on a fresh leader, waiting for its no-op to commit: (origin,
    /// request id).
    awaiting_commit: Vec<(Option<NodeId>, u64)>,
}

impl ReadOnly {
    /// Whether [`PENDING_READS_MAX`] reads are already held.
    pub(crate) fn is_full(&self) -> bool {
        self.unconfirmed.len() + self.awaiting_commit.len() >= PENDING_READS_MAX
    }

    pub(crate) fn has_unconfirmed(&self) -> bool {
        !self.unconfirmed.is_empty()
    }

    /// Holds a read until the leader's first entry of its term commits (until
    /// then it does not know the commit index).
    pub(crate) fn await_commit(&mut self, origin: Option<NodeId>, request_id: u64) {
        self.awaiting_commit.push((origin, request_id));
    }

    pub(crate) fn take_awaiting_commit(&mut self) -> Vec<(Option<NodeId>, u64)> {
        std::mem::take(&mut self.awaiting_commit)
    }

    pub(crate) fn has_awaiting_commit(&self) -> bool {
        !self.awaiting_commit.is_empty()
    }

    /// Starts a read at `index` (the commit index), acknowledged by the
    /// leader itself. Returns the heartbeat round that will confirm it.
    pub(crate) fn start(
        &mut self,
        origin: Option<NodeId>,
        request_id: u64,
        index: LogIndex,
        self_id: NodeId,
    ) -> u64 {
        self.read_ctx += 1;
        self.unconfirmed.push_back(UnconfirmedRead {
            origin,
            request_id,
            index,
            read_ctx: self.read_ctx,
            acks: BTreeSet::from([self_id]),
        });
        self.read_ctx
    }

    /// The round a heartbeat should carry: the newest read's (0: none).
    pub(crate) fn latest_ctx(&self) -> u64 {
        self.unconfirmed.back().map_or(0, |r| r.read_ctx)
    }

    /// `from` answered the heartbeat of round `read_ctx`: that confirms
    /// every read of that round and earlier ones.
    pub(crate) fn record_ack(&mut self, from: NodeId, read_ctx: u64) {
        for read in self.unconfirmed.iter_mut() {
            if read.read_ctx <= read_ctx {
                read.acks.insert(from);
            }
        }
    }

    /// Hands out every read a quorum of `membership`'s voters confirmed,
    /// oldest first (a read is confirmed only after every earlier one).
    pub(crate) fn release_confirmed(
        &mut self,
        membership: &Membership,
        term: Term,
        outbox: &mut Outbox,
    ) {
        while let Some(read) = self.pop_confirmed(membership) {
            deliver(read.origin, read.request_id, Some(read.index), term, outbox);
        }
    }

    /// Leadership is lost: every read fails, the unconfirmed ones first.
    pub(crate) fn fail_all(&mut self, term: Term, outbox: &mut Outbox) {
        let reads: Vec<(Option<NodeId>, u64)> = self
            .unconfirmed
            .drain(..)
            .map(|r| (r.origin, r.request_id))
            .chain(self.awaiting_commit.drain(..))
            .collect();
        for (origin, request_id) in reads {
            deliver(origin, request_id, None, term, outbox);
        }
    }

    /// The oldest read, once a quorum of `membership`'s voters confirmed it.
    fn pop_confirmed(&mut self, membership: &Membership) -> Option<UnconfirmedRead> {
        let confirmed = self.unconfirmed.front().is_some_and(|r| {
            r.acks.iter().filter(|id| membership.is_voter(**id)).count() >= membership.quorum()
        });
        if confirmed {
            self.unconfirmed.pop_front()
        } else {
            None
        }
    }
}

/// Hands out a read's result (`None`: failed): a local read as a
/// [`ReadState`] or a failed read, a forwarded one as the answer to its
/// follower.
fn deliver(
    origin: Option<NodeId>,
    request_id: u64,
    index: Option<LogIndex>,
    term: Term,
    outbox: &mut Outbox,
) {
    match (origin, index) {
        (None, Some(index)) => outbox.read_ready(ReadState { request_id, index }),
        (None, None) => outbox.read_failed(request_id),
        (Some(to), index) => {
            let answer = Message::ReadIndexResponse {
                term,
                request_id,
                index,
            };
            outbox.send(to, answer);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::ready::{Role, SoftState};

    fn outbox() -> Outbox {
        Outbox::new(SoftState {
            role: Role::Leader,
            term: 2,
            leader: Some(1),
        })
    }

    fn answer(request_id: u64, index: Option<LogIndex>) -> Message {
        Message::ReadIndexResponse {
            term: 2,
            request_id,
            index,
        }
    }

    #[test]
    fn a_read_is_confirmed_by_a_quorum_of_its_round_or_a_later_one() {
        let m = Membership::of(&[1, 2, 3], &[]);
        let mut out = outbox();
        let mut reads = ReadOnly::default();
        assert_eq!(reads.latest_ctx(), 0);
        assert_eq!(reads.start(None, 10, 5, 1), 1);
        assert_eq!(reads.start(Some(3), 11, 6, 1), 2);
        assert_eq!(reads.latest_ctx(), 2);
        reads.release_confirmed(&m, 2, &mut out);
        assert!(out.take_read_states().is_empty(), "only the leader acked");
        reads.record_ack(9, 2);
        reads.release_confirmed(&m, 2, &mut out);
        assert!(
            out.take_read_states().is_empty(),
            "a non-voter does not count"
        );
        reads.record_ack(2, 1);
        reads.release_confirmed(&m, 2, &mut out);
        let local = ReadState {
            request_id: 10,
            index: 5,
        };
        assert_eq!(out.take_read_states(), vec![local], "round 1 confirmed");
        assert!(out.take_messages().is_empty(), "round 2 is not");
        reads.record_ack(3, 2);
        reads.release_confirmed(&m, 2, &mut out);
        assert_eq!(out.take_messages(), vec![(3, answer(11, Some(6)))]);
        assert!(!reads.has_unconfirmed());
    }

    #[test]
    fn reads_are_bounded_and_fail_in_order() {
        let mut out = outbox();
        let mut reads = ReadOnly::default();
        reads.await_commit(Some(2), 7);
        reads.await_commit(None, 6);
        reads.start(None, 8, 1, 1);
        assert!(reads.has_awaiting_commit());
        reads.fail_all(2, &mut out);
        assert_eq!(out.take_failed_reads(), vec![8, 6]);
        assert_eq!(out.take_messages(), vec![(2, answer(7, None))]);
        assert!(!reads.has_unconfirmed() && !reads.has_awaiting_commit());
        for id in 0..PENDING_READS_MAX as u64 {
            assert!(!reads.is_full());
            reads.await_commit(None, id);
        }
        assert!(reads.is_full());
        assert_eq!(reads.take_awaiting_commit().len(), PENDING_READS_MAX);
        assert!(!reads.is_full());
    }
}
