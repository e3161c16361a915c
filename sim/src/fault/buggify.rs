//! The seed's BUGGIFY choices (FoundationDB's name): fault points inside the
//! runtime and storage that the schedule's timed actions cannot reach,
//! each switched on in some seeds only, drawn from a stream of their own
//! ([`Concern::Buggify`]) so that no other draw of any seed moved. Pure: the
//! executor and the hosts (`world`, madsim only) apply them; production
//! builds never see them.

use deadbolt_runtime::storage::SyncLatency;

use super::FaultMix;
use crate::history::NodeId;
use crate::seed::{rng_for, Concern};

/// One seed in this many keeps the old instant-durable simulated disk.
const INSTANT_DISK_ONE_IN: u64 = 4;
/// Of the seeds with a slow disk, one in this many has long-tailed syncs.
const TAIL_ONE_IN: u64 = 2;
/// One seed in this many limits appends to a few entries (as the in-core
/// random test does: 1..=8), one in [`SMALL_APPEND_BYTES_ONE_IN`] also to
/// a few KiB.
const SMALL_APPENDS_ONE_IN: u64 = 2;
const SMALL_APPEND_BYTES_ONE_IN: u64 = 4;
/// Of the chaos seeds with a slow disk, one in this many times its crashes
/// into a write's sync window.
const CRASH_IN_SYNC_WINDOW_ONE_IN: u64 = 2;
/// One seed in this many (every mix but amnesia) drops forwarded replies.
const DROP_FORWARD_REPLIES_ONE_IN: u64 = 4;
/// One seed in this many (every mix but amnesia) gives every peer link a
/// queue of a few messages and stalls some of its writes, so it overflows.
const PEER_QUEUE_OVERFLOW_ONE_IN: u64 = 4;

/// What a seed switched on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Buggify {
    seed: u64,
    /// Whether the disks take time to sync (each node draws its own profile).
    pub slow_disks: bool,
    /// Whether those syncs have long tails (tens to hundreds of ms).
    pub sync_tails: bool,
    /// `(max entries, max bytes)` of one append, when not Raft's defaults.
    pub append_limits: Option<(usize, usize)>,
    /// A crash waits (a bounded while) for its node to hold written but
    /// unsynced data, so it lands between a write and its sync.
    pub crash_in_sync_window: bool,
    /// A leader drops one forwarded request's reply in this many (0: none);
    /// the follower's caller learns "outcome unknown" and retries.
    pub drop_forward_reply_one_in: u64,
    /// Peer links queue this many messages at most, and one write in `.1`
    /// stalls up to `.2` ms first, so the queue overflows (Raft retries).
    pub peer_queue: Option<(usize, u64, u64)>,
}

impl Buggify {
    /// The choices of `seed` under `mix`.
    pub fn draw(seed: u64, mix: FaultMix) -> Buggify {
        let mut rng = rng_for(seed, Concern::Buggify, 0);
        let slow_disks = !rng.chance(1, INSTANT_DISK_ONE_IN);
        let sync_tails = slow_disks && rng.chance(1, TAIL_ONE_IN);
        let small_entries = rng.chance(1, SMALL_APPENDS_ONE_IN);
        let small_bytes = rng.chance(1, SMALL_APPEND_BYTES_ONE_IN);
        let entries = rng.range_u64(1, 9) as usize;
        let bytes = rng.range_u64(512, 8 * 1024 + 1) as usize;
        let append_limits = match (small_entries, small_bytes) {
            (false, false) => None,
            (true, false) => Some((entries, deadbolt_core::raft::APPEND_BYTES_MAX)),
            (false, true) => Some((deadbolt_core::raft::APPEND_ENTRIES_MAX, bytes)),
            (true, true) => Some((entries, bytes)),
        };
        let crash_in_sync_window =
            rng.chance(1, CRASH_IN_SYNC_WINDOW_ONE_IN) && slow_disks && mix == FaultMix::Chaos;
        let drop_forward_reply_one_in =
            if mix != FaultMix::Amnesia && rng.chance(1, DROP_FORWARD_REPLIES_ONE_IN) {
                rng.range_u64(2, 20)
            } else {
                0
            };
        // Drawn last, so the choices above stay what they were.
        let peer_queue = if mix != FaultMix::Amnesia && rng.chance(1, PEER_QUEUE_OVERFLOW_ONE_IN) {
            Some((
                rng.range_u64(2, 33) as usize,
                rng.range_u64(20, 101),
                rng.range_u64(30, 201),
            ))
        } else {
            None
        };
        Buggify {
            peer_queue,
            seed,
            slow_disks,
            sync_tails,
            append_limits,
            crash_in_sync_window,
            drop_forward_reply_one_in,
        }
    }

    /// Node `node`'s disk: none, or a base latency of tens of µs to a few
    /// ms, with (in tailed seeds) one sync in 20-200 stalling up to 30-400 ms.
    pub fn sync_latency(&self, node: NodeId) -> SyncLatency {
        if !self.slow_disks {
            return SyncLatency::NONE;
        }
        let mut rng = rng_for(self.seed, Concern::Buggify, node);
        let min_us = rng.range_u64(20, 500);
        let max_us = min_us + rng.range_u64(0, 5_000);
        let (tail_one_in, tail_max_ms) = if self.sync_tails {
            (rng.range_u64(20, 201), rng.range_u64(30, 401))
        } else {
            (0, 0)
        };
        SyncLatency {
            min_us,
            max_us,
            tail_one_in,
            tail_max_ms,
        }
    }

    /// The seed of node `node`'s latency stream (its disk keeps it across
    /// restarts).
    pub fn latency_seed(&self, node: NodeId) -> u64 {
        rng_for(self.seed, Concern::Buggify, node).next_u64() ^ 0x5eed_d15c
    }
}

impl std::fmt::Display for Buggify {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut on = Vec::new();
        if self.slow_disks {
            on.push(if self.sync_tails {
                "slow disks with long tails".to_string()
            } else {
                "slow disks".to_string()
            });
        }
        if let Some((entries, bytes)) = self.append_limits {
            on.push(format!(
                "appends of at most {entries} entries / {bytes} bytes"
            ));
        }
        if self.crash_in_sync_window {
            on.push("crashes aimed between a write and its sync".into());
        }
        if self.drop_forward_reply_one_in > 0 {
            on.push(format!(
                "one forwarded reply in {} dropped",
                self.drop_forward_reply_one_in
            ));
        }
        if let Some((queue, one_in, ms)) = self.peer_queue {
            on.push(format!(
                "peer queues of {queue} messages, one write in {one_in} stalled up to {ms} ms"
            ));
        }
        if on.is_empty() {
            return f.write_str("buggify: none");
        }
        write!(f, "buggify: {}", on.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each point is on in some seeds and off in others, in about the
    /// share its constant names.
    #[test]
    fn every_point_is_on_in_some_seeds_only() {
        let draws: Vec<Buggify> = (0..2_000)
            .map(|seed| Buggify::draw(seed, FaultMix::ALL[seed as usize % 3]))
            .collect();
        let share = |f: &dyn Fn(&Buggify) -> bool| {
            draws.iter().filter(|b| f(b)).count() as f64 / draws.len() as f64
        };
        let slow = share(&|b| b.slow_disks);
        assert!((0.70..0.80).contains(&slow), "{slow}");
        let tails = share(&|b| b.sync_tails);
        assert!((0.33..0.43).contains(&tails), "{tails}");
        let small = share(&|b| b.append_limits.is_some());
        assert!((0.57..0.67).contains(&small), "{small}");
        let aimed = share(&|b| b.crash_in_sync_window);
        assert!((0.09..0.16).contains(&aimed), "{aimed}");
        let dropped = share(&|b| b.drop_forward_reply_one_in > 0);
        assert!((0.20..0.30).contains(&dropped), "{dropped}");
        let queues = share(&|b| b.peer_queue.is_some());
        assert!((0.20..0.30).contains(&queues), "{queues}");
        assert!(draws.iter().all(|b| b
            .append_limits
            .is_none_or(|(e, b)| (1..=8).contains(&e) || b <= 8 * 1024)));
    }

    #[test]
    fn disks_differ_by_node_and_seed_and_replay() {
        let b = Buggify::draw(7, FaultMix::Chaos);
        let c = Buggify::draw(8, FaultMix::Chaos);
        assert_eq!(b, Buggify::draw(7, FaultMix::Chaos));
        let slow: Vec<&Buggify> = [&b, &c].into_iter().filter(|b| b.slow_disks).collect();
        for b in slow {
            assert_ne!(b.sync_latency(1), b.sync_latency(2));
            assert_eq!(b.sync_latency(3), b.sync_latency(3));
        }
    }

    /// What each seed switches on is part of what the seed means.
    #[test]
    fn choices_of_seeds_0_to_2000_are_pinned() {
        let mut hasher = crate::check::determinism::TraceHasher::new();
        for seed in 0..2_000 {
            for mix in FaultMix::ALL.into_iter().chain([FaultMix::Amnesia]) {
                let b = Buggify::draw(seed, mix);
                hasher.record(&format!("{b:?} {:?}", b.sync_latency(1)));
            }
        }
        assert_eq!(
            hasher.hash(),
            0xc4d5_7608_9899_8cdb,
            "{:#018x}",
            hasher.hash()
        );
    }
}
