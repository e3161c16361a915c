//! Simulation-only fault points inside the runtime (FoundationDB's
//! BUGGIFY), compiled only under `cfg(madsim)`: the switch the simulation
//! turns off when its fault window ends (a heal must heal these too), and
//! the Raft actor's point that drops a forwarded request's reply. The
//! transport's write stall and the simulated disk's latency live with
//! their code; each point is also off unless the node's config turns it on.

use std::sync::atomic::{AtomicBool, Ordering};

use crate::rng::SplitMix64;

/// One simulated world runs per process (the simulation runs each seed in
/// a child process), so one switch serves every node of it.
static ENABLED: AtomicBool = AtomicBool::new(true);

/// Turns every fault point on or off (the simulation: on at the start of a
/// run, off when its faults stop).
pub fn set_enabled(on: bool) {
    ENABLED.store(on, Ordering::SeqCst);
}

/// Whether fault points may fire now.
pub fn enabled() -> bool {
    ENABLED.load(Ordering::SeqCst)
}

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
    pub(crate) fn drop_this(&mut self) -> bool {
        self.one_in > 0 && enabled() && self.rng.chance(1, self.one_in)
    }
}
