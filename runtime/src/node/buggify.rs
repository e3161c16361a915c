//! Simulation-only fault points inside the Raft actor (FoundationDB's
//! BUGGIFY), compiled only under `cfg(madsim)`: a leader that drops a
//! forwarded request's reply, as a lost frame would.

use crate::rng::SplitMix64;

/// Decides which forwarded replies a leader drops; its own stream, so the
/// node's other draws stay where they were.
pub(crate) struct ForwardReplyDrops {
    one_in: u64,
    rng: SplitMix64,
}

impl ForwardReplyDrops {
    /// Drops one reply in `one_in` (0: never); `node_seed` is the node's.
    pub(crate) fn new(one_in: u64, node_seed: u64) -> Self {
        Self {
            one_in,
            rng: SplitMix64::new(node_seed ^ 0xb066_1f7e_f0e4_a4d1),
        }
    }

    /// Whether to drop the reply about to be sent.
    pub(super) fn drop_this(&mut self) -> bool {
        self.one_in > 0 && self.rng.chance(1, self.one_in)
    }
}
