//! Durability bookkeeping: numbers each [`super::Ready`] that writes
//! (`persist_seq`), learns from `persisted` which log prefix is durable, and
//! holds back the messages (votes, acknowledgements) that promise state not
//! yet durable.

use std::collections::VecDeque;

use super::config::HELD_MESSAGES_MAX;
use super::message::Message;
use super::types::{LogIndex, NodeId};

/// A batch handed to the caller whose durability is not yet reported: the log
/// prefix it makes durable (capped if a later truncation overwrote part).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct PendingPersist {
    seq: u64,
    last_index: LogIndex,
}

#[derive(Debug, Clone, Default)]
pub(crate) struct PersistTracker {
    /// Number of the last batch handed out (0: none yet).
    last_seq: u64,
    /// Highest number the caller reported durable.
    persisted_seq: u64,
    /// Batches handed out and not yet reported durable, ascending.
    pending: VecDeque<PendingPersist>,
    /// Messages waiting until the batch numbered with them is durable.
    held: Vec<(u64, NodeId, Message)>,
}

impl PersistTracker {
    pub(crate) fn last_seq(&self) -> u64 {
        self.last_seq
    }

    /// Whether the batch numbered `seq` (and every earlier one) is durable.
    pub(crate) fn is_durable(&self, seq: u64) -> bool {
        seq <= self.persisted_seq
    }

    /// Numbers a new batch whose writes leave the log ending at `last_index`.
    pub(crate) fn start_batch(&mut self, last_index: LogIndex) -> u64 {
        self.last_seq += 1;
        self.pending.push_back(PendingPersist {
            seq: self.last_seq,
            last_index,
        });
        self.last_seq
    }

    /// The caller reports batches up to `seq` durable. Returns `None` for a
    /// report already covered, else the longest log prefix the newly durable
    /// batches make durable (0 if none).
    pub(crate) fn persisted(&mut self, seq: u64) -> Option<LogIndex> {
        if seq <= self.persisted_seq {
            return None;
        }
        assert!(
            seq <= self.last_seq,
            "persisted({seq}) reports a batch never handed out (last {})",
            self.last_seq
        );
        self.persisted_seq = seq;
        let mut durable = 0;
        while let Some(p) = self.pending.front().copied() {
            if p.seq > seq {
                break;
            }
            self.pending.pop_front();
            durable = durable.max(p.last_index);
        }
        Some(durable)
    }

    /// The log was cut after `limit` (a truncation or a snapshot install):
    /// batches already handed out no longer make anything after it durable.
    pub(crate) fn cap(&mut self, limit: LogIndex) {
        for p in self.pending.iter_mut() {
            p.last_index = p.last_index.min(limit);
        }
    }

    /// Gates a message that promises state: it may go now (returned) if
    /// everything written so far is durable, `unwritten` saying whether
    /// changes wait for the next batch. Otherwise it is held until that batch
    /// is durable, or dropped when [`HELD_MESSAGES_MAX`] are held (the peer
    /// retries; memory stays bounded).
    pub(crate) fn send_after_persist(
        &mut self,
        unwritten: bool,
        to: NodeId,
        msg: Message,
    ) -> Option<(NodeId, Message)> {
        let needed = if unwritten {
            self.last_seq + 1
        } else {
            self.last_seq
        };
        if self.is_durable(needed) {
            return Some((to, msg));
        }
        if self.held.len() < HELD_MESSAGES_MAX {
            self.held.push((needed, to, msg));
        }
        None
    }

    /// Whether a held message may go out.
    pub(crate) fn has_releasable(&self) -> bool {
        self.held.iter().any(|(seq, _, _)| self.is_durable(*seq))
    }

    /// The held messages that may go out now, in the order they were held.
    pub(crate) fn take_releasable(&mut self) -> Vec<(NodeId, Message)> {
        let persisted = self.persisted_seq;
        let (ready, waiting): (Vec<_>, Vec<_>) = self
            .held
            .drain(..)
            .partition(|(seq, _, _)| *seq <= persisted);
        self.held = waiting;
        ready.into_iter().map(|(_, to, msg)| (to, msg)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(term: u64) -> Message {
        Message::TimeoutNow { term }
    }

    #[test]
    fn reports_release_the_log_prefix_of_every_covered_batch() {
        let mut p = PersistTracker::default();
        assert_eq!(p.start_batch(3), 1);
        assert_eq!(p.start_batch(5), 2);
        assert_eq!(p.start_batch(9), 3);
        p.cap(4);
        assert_eq!(
            p.persisted(2),
            Some(4),
            "batch 2 was capped by a truncation"
        );
        assert_eq!(p.persisted(2), None, "already reported");
        assert_eq!(p.persisted(3), Some(4));
        assert!(p.is_durable(3));
        assert_eq!(p.start_batch(6), 4);
        assert_eq!(p.last_seq(), 4);
    }

    #[test]
    #[should_panic(expected = "reports a batch never handed out")]
    fn a_report_beyond_the_last_batch_is_a_bug() {
        PersistTracker::default().persisted(1);
    }

    #[test]
    fn promises_wait_for_the_batch_that_makes_them_true() {
        let mut p = PersistTracker::default();
        assert_eq!(p.send_after_persist(false, 2, msg(1)), Some((2, msg(1))));
        assert_eq!(p.send_after_persist(true, 2, msg(2)), None, "next batch");
        p.start_batch(1);
        assert_eq!(p.send_after_persist(false, 3, msg(3)), None, "batch 1");
        assert!(!p.has_releasable());
        p.persisted(1);
        assert!(p.has_releasable());
        assert_eq!(p.take_releasable(), vec![(2, msg(2)), (3, msg(3))]);
        assert!(!p.has_releasable());
    }

    #[test]
    fn held_messages_are_bounded() {
        let mut p = PersistTracker::default();
        for term in 0..HELD_MESSAGES_MAX as u64 + 5 {
            assert_eq!(p.send_after_persist(true, 2, msg(term)), None);
        }
        p.start_batch(0);
        p.persisted(1);
        assert_eq!(p.take_releasable().len(), HELD_MESSAGES_MAX);
    }
}
