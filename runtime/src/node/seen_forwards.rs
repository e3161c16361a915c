//! The forwarded requests a node has already served, so a `Forward` frame
//! that arrives twice is proposed once.
//!
//! Why: a forwarded mutation without an idempotency key has nothing else
//! that would stop a second copy from being applied again (a pop popping
//! twice, an append appending twice). TCP does not duplicate, but the
//! simulated network does, and a dropped-and-reopened link is the kind of
//! place a resend could creep in later: the leader refuses copies by
//! construction instead of relying on the link. A copy gets no answer (the
//! first one was answered); the follower's forward timeout covers a lost
//! first answer.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use deadbolt_core::raft::NodeId;

/// How many request ids are remembered per sending node. Copies arrive
/// right behind their original (the same batch on the same link), so a
/// short memory is enough; it bounds the memory a chatty follower costs.
pub(super) const SEEN_FORWARDS_PER_NODE_MAX: usize = 4_096;

/// Recently served request ids per sending node.
#[derive(Debug, Default)]
pub(super) struct SeenForwards {
    by_node: BTreeMap<NodeId, Recent>,
}

#[derive(Debug, Default)]
struct Recent {
    ids: BTreeSet<u64>,
    /// The same ids in arrival order, to forget the oldest first.
    order: VecDeque<u64>,
}

impl SeenForwards {
    /// Records `(from, request_id)`; false if it was seen before (a copy).
    pub(super) fn first_time(&mut self, from: NodeId, request_id: u64) -> bool {
        let recent = self.by_node.entry(from).or_default();
        if !recent.ids.insert(request_id) {
            return false;
        }
        recent.order.push_back(request_id);
        if recent.order.len() > SEEN_FORWARDS_PER_NODE_MAX {
            let oldest = recent.order.pop_front().expect("longer than the bound");
            recent.ids.remove(&oldest);
        }
        debug_assert_eq!(recent.ids.len(), recent.order.len());
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_copy_is_refused_per_sender_and_memory_is_bounded() {
        let mut seen = SeenForwards::default();
        assert!(seen.first_time(2, 10));
        assert!(!seen.first_time(2, 10), "a copy from the same node");
        assert!(seen.first_time(3, 10), "another node's request 10");
        for id in 11..11 + SEEN_FORWARDS_PER_NODE_MAX as u64 {
            assert!(seen.first_time(2, id));
        }
        assert!(!seen.first_time(2, 11), "still remembered");
        assert!(seen.first_time(2, 10), "the oldest was forgotten");
        assert_eq!(seen.by_node[&2].ids.len(), SEEN_FORWARDS_PER_NODE_MAX);
    }
}
