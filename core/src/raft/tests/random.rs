//! Seeded randomized runs: 3- and 5-replica clusters under message loss,
//! duplication, reordering, delays, partitions, slow disks and crashes
//! (losing unsynced writes), with every invariant checked after each step,
//! then a healed phase that must converge (liveness).
//!
//! Replay one seed: `DEADBOLT_RAFT_SEED=N cargo test -p deadbolt-core raft_random`.
//! Sweep more: `DEADBOLT_RAFT_SEEDS=20000 [DEADBOLT_RAFT_SEED_START=N] cargo test -p deadbolt-core raft_random`.

use crate::raft::tests::harness::{test_config, Network};
use crate::raft::{LogIndex, NodeId, Role};
use crate::rng::SplitMix64;

/// Seeds per cluster size in a default `cargo test`.
const DEFAULT_SEEDS: u64 = 1000;
/// Fault-phase length in 5 ms steps.
const FAULT_STEPS: u64 = 600;
const STEP_MS: u64 = 5;
/// The healed cluster must converge within this much simulated time (term
/// races between removed nodes and short-logged voters can take seconds).
const HEAL_DEADLINE_MS: u64 = 15_000;

/// Seeds that once failed, replayed on every run (regression list).
/// - 9 (membership): a leader removing itself lost leadership before the
///   removal committed, holding the only complete log; nobody could win.
/// - 1885 (membership, both pre-vote and check-quorum off): a removed
///   leader in an old term never learned the new term (stale-term appends
///   were answered only with pre-vote or check-quorum on).
/// - 5981 (membership): a single-voter leader was elected on its own vote
///   before that vote was durable, crashed, and led the same term again with
///   different entries (its learner held both): log matching violated.
/// - 11330 (membership, pre-vote and check-quorum off): a node whose removal
///   was uncommitted kept campaigning with real votes, deposing every leader
///   before it could commit the removal (livelock); such nodes now pre-vote.
/// - 27737 (membership, pre-vote off): with no leader, a removed node unaware
///   of its removal and a short-logged voter kept bumping the term while the
///   only electable node needed two rounds; it converges, but took over 5 s.
///
/// 1885 and 11330 were found with pre-vote and check-quorum both off; the
/// membership sweep no longer runs that combination (see `run_seed`).
const REGRESSION_SEEDS: &[u64] = &[9, 1885, 5981, 11330, 27737];

struct Faults {
    loss: f64,
    dup: f64,
    hold: f64,
    sync: f64,
    crash: f64,
}

fn chance(rng: &mut SplitMix64, p: f64) -> bool {
    (rng.next_u64() % 1_000_000) as f64 / 1_000_000.0 < p
}

fn pick<T: Copy>(rng: &mut SplitMix64, items: &[T]) -> T {
    items[rng.range_u64(0, items.len() as u64) as usize]
}

/// One full run; panics (with the invariant) on a violation. Returns the
/// run's behaviour digest (every Ready of every replica).
///
/// With `joiners`, those nodes start outside the cluster and the run also
/// adds learners, promotes and removes members at random.
fn run_seed(seed: u64, size: usize, joiners: usize) -> u32 {
    let mut run = Run::new(seed, size, joiners);
    for _ in 0..FAULT_STEPS {
        run.fault_step();
        check_reads(&run.net, &run.reads);
    }
    run.heal();
    check_reads(&run.net, &run.reads);
    if std::env::var("DEADBOLT_RAFT_SEED").is_ok() {
        run.report(seed);
    }
    run.check_applied_sequences_agree();
    run.net.digest
}

/// One seeded run: the cluster, the run's own rng (every random choice,
/// drawn in a fixed order), its fault rates and the reads to check.
struct Run {
    net: Network,
    rng: SplitMix64,
    faults: Faults,
    voters: Vec<NodeId>,
    joiners: usize,
    next_command: u64,
    next_read: u64,
    /// (node, request id, smallest acceptable index)
    reads: Vec<(NodeId, u64, LogIndex)>,
}

impl Run {
    fn new(seed: u64, size: usize, joiners: usize) -> Self {
        let mut rng = SplitMix64::new(seed ^ 0x5EED_0000_0000);
        let founders: Vec<NodeId> = (1..=(size - joiners) as u64).collect();
        let extra: Vec<NodeId> = ((size - joiners) as u64 + 1..=size as u64).collect();
        let voters: Vec<NodeId> = (1..=size as u64).collect();
        let mut pre_vote = chance(&mut rng, 0.8);
        let check_quorum = chance(&mut rng, 0.8);
        if joiners > 0 && !check_quorum {
            // With neither guard, a removed node that never learned of its
            // removal keeps bumping the term and can livelock the cluster
            // (Raft dissertation 4.2.3). Safety holds regardless (the other
            // sweeps run that combination); liveness needs one of the two.
            pre_vote = true;
        }
        let max_append_entries = rng.range_u64(1, 8) as usize;
        let max_inflight = rng.range_u64(1, 5) as usize;
        let mut net = Network::new(&founders, &extra, seed, |id| {
            let mut c = test_config(id);
            c.pre_vote = pre_vote;
            c.check_quorum = check_quorum;
            c.max_append_entries = max_append_entries;
            c.max_inflight_appends = max_inflight;
            c.snapshot_chunk_bytes = 64;
            c
        });
        net.auto_sync = false;
        net.max_delay_ms = rng.range_u64(0, 30);
        let faults = Faults {
            loss: rng.range_u64(0, 20) as f64 / 100.0,
            dup: rng.range_u64(0, 5) as f64 / 100.0,
            hold: rng.range_u64(0, 40) as f64 / 100.0,
            sync: rng.range_u64(20, 90) as f64 / 100.0,
            crash: rng.range_u64(0, 10) as f64 / 1000.0,
        };
        Self {
            net,
            rng,
            faults,
            voters,
            joiners,
            next_command: 0,
            next_read: 0,
            reads: Vec::new(),
        }
    }

    /// One 5 ms step under faults: ticks, deliveries, syncs and restarts,
    /// then one random action.
    fn fault_step(&mut self) {
        let net = &mut self.net;
        let rng = &mut self.rng;
        net.now_ms += STEP_MS;
        net.tick_all();
        deliver_some(net, rng, &self.faults);
        for id in net.ids() {
            if net.node(id).up && chance(rng, self.faults.sync) {
                net.sync(id);
                net.process(id);
            } else if !net.node(id).up && chance(rng, 0.1) {
                net.restart(id);
                net.process(id);
            }
        }
        let action = self.rng.range_u64(0, 100);
        match action {
            0..=29 => self.propose(),
            30..=33 => self.crash(),
            34..=37 => self.cut_links(),
            38..=41 => {
                let id = pick(&mut self.rng, &self.voters);
                if self.net.node(id).up {
                    self.net.take_snapshot(id);
                }
            }
            42..=47 => self.read(),
            48..=51 if self.joiners > 0 => self.change_membership(),
            52..=53 => {
                let leaders = self.net.leaders();
                if let Some(&l) = leaders.first() {
                    let to = pick(&mut self.rng, &self.voters);
                    let _ = self.net.node_mut(l).replica.transfer_leadership(to);
                    self.net.process(l);
                }
            }
            _ => {}
        }
    }

    /// Mostly at a leader; sometimes at a follower (refused).
    fn propose(&mut self) {
        let leaders = self.net.leaders();
        let id = match leaders.first() {
            Some(&l) if chance(&mut self.rng, 0.9) => l,
            _ => pick(&mut self.rng, &self.voters),
        };
        if self.net.node(id).up {
            self.next_command += 1;
            let data = format!("c{}", self.next_command).into_bytes();
            let _ = self.net.node_mut(id).replica.propose(data);
            self.net.process(id);
        }
    }

    fn crash(&mut self) {
        let id = pick(&mut self.rng, &self.voters);
        if self.net.node(id).up && chance(&mut self.rng, self.faults.crash * 25.0) {
            self.net.node_mut(id).up = false;
        }
    }

    /// Heals, isolates one node, or splits the voters in two.
    fn cut_links(&mut self) {
        match self.rng.range_u64(0, 3) {
            0 => self.net.cut.clear(),
            1 => {
                self.net.cut.clear();
                let id = pick(&mut self.rng, &self.voters);
                self.net.isolate(id);
            }
            _ => {
                let mut a = Vec::new();
                let mut b = Vec::new();
                for &v in &self.voters {
                    if chance(&mut self.rng, 0.5) {
                        a.push(v)
                    } else {
                        b.push(v)
                    }
                }
                self.net.partition(&[a, b]);
            }
        }
    }

    fn read(&mut self) {
        let id = pick(&mut self.rng, &self.voters);
        if self.net.node(id).up {
            self.next_read += 1;
            let floor = self
                .net
                .checker
                .committed
                .keys()
                .next_back()
                .copied()
                .unwrap_or(0);
            let read = self.next_read;
            if self.net.node_mut(id).replica.read_index(read).is_ok() {
                self.reads.push((id, read, floor));
            }
            self.net.process(id);
        }
    }

    /// Adds a learner, promotes one, or removes a member, at the leader.
    fn change_membership(&mut self) {
        if let Some(&l) = self.net.leaders().first() {
            let id = pick(&mut self.rng, &self.voters);
            let membership = self.net.node(l).replica.membership().clone();
            let r = &mut self.net.node_mut(l).replica;
            let _ = match membership.members.get(&id) {
                None => r.add_learner(id, format!("n{id}:1"), format!("n{id}:2")),
                Some(m) if !m.voter => r.promote(id),
                Some(_) => r.remove_member(id),
            };
            self.net.process(l);
        }
    }

    /// Heal: everything up, no faults, disks keep up. The cluster must elect
    /// a leader, commit a fresh command and bring every replica to it.
    fn heal(&mut self) {
        let net = &mut self.net;
        net.cut.clear();
        for id in net.ids() {
            if !net.node(id).up {
                net.restart(id);
            }
        }
        let calm = Faults {
            loss: 0.0,
            dup: 0.0,
            hold: 0.0,
            sync: 1.0,
            crash: 0.0,
        };
        let deadline = net.now_ms + HEAL_DEADLINE_MS;
        let mut final_index: Option<(NodeId, LogIndex)> = None;
        loop {
            assert!(
                net.now_ms < deadline,
                "liveness: no convergence {HEAL_DEADLINE_MS} ms after healing\n{}",
                net.debug_dump()
            );
            net.now_ms += STEP_MS;
            net.tick_all();
            deliver_some(net, &mut self.rng, &calm);
            for id in net.ids() {
                net.sync(id);
                net.process(id);
            }
            let leaders = net.leaders();
            let Some(&leader) = leaders.first() else {
                continue;
            };
            match final_index {
                Some((l, _)) if l == leader && net.node(l).replica.role() == Role::Leader => {}
                _ => {
                    if let Ok((_, index)) = net.node_mut(leader).replica.propose(b"final".to_vec())
                    {
                        final_index = Some((leader, index));
                    }
                    net.process(leader);
                }
            }
            let Some((_, index)) = final_index else {
                continue;
            };
            // Every current member converges; removed nodes are left behind.
            let members = net.node(leader).replica.membership().clone();
            let done = net
                .nodes
                .iter()
                .filter(|(id, _)| members.contains(**id))
                .all(|(_, n)| n.applied_index >= index && n.replica.leader() == Some(leader));
            if done {
                break;
            }
        }
    }

    fn report(&self, seed: u64) {
        let net = &self.net;
        let done_reads = net
            .nodes
            .values()
            .map(|n| n.read_states.len())
            .sum::<usize>();
        eprintln!(
            "seed {seed}: {} leaders over {} terms, {} entries applied, {done_reads} reads served, now {} ms\n{}",
            net.checker.leader_count(),
            net.nodes.values().map(|n| n.replica.term()).max().unwrap_or(0),
            net.checker.committed.len(),
            net.now_ms,
            net.debug_dump()
        );
    }

    /// Applied sequences are identical on every node.
    fn check_applied_sequences_agree(&self) {
        let first = self
            .net
            .nodes
            .values()
            .next()
            .expect("nodes")
            .applied
            .clone();
        for (id, n) in &self.net.nodes {
            let len = first.len().min(n.applied.len());
            assert_eq!(
                n.applied[..len],
                first[..len],
                "node {id} applied a different sequence"
            );
        }
    }
}

/// Delivers due messages in random order; some are held back (reordering,
/// delay), lost or duplicated.
fn deliver_some(net: &mut Network, rng: &mut SplitMix64, faults: &Faults) {
    let now = net.now_ms;
    let (due, later): (Vec<_>, Vec<_>) = std::mem::take(&mut net.queue)
        .into_iter()
        .partition(|m| m.deliver_at_ms <= now);
    net.queue = later;
    let mut due = due;
    // Fisher-Yates with the run's rng: reordering.
    for i in (1..due.len()).rev() {
        let j = rng.range_u64(0, i as u64 + 1) as usize;
        due.swap(i, j);
    }
    for m in due {
        if chance(rng, faults.hold) {
            let mut m = m;
            m.deliver_at_ms = now + rng.range_u64(1, 40);
            net.queue.push(m);
            continue;
        }
        if chance(rng, faults.loss) {
            continue;
        }
        if chance(rng, faults.dup) {
            let mut copy = m.clone();
            copy.deliver_at_ms = now + rng.range_u64(0, 50);
            net.queue.push(copy);
        }
        net.deliver(m);
    }
}

/// Every completed read returned an index at least as new as anything
/// committed before it was asked (linearizability of ReadIndex).
fn check_reads(net: &Network, reads: &[(NodeId, u64, LogIndex)]) {
    for &(id, req, floor) in reads {
        for rs in net
            .node(id)
            .read_states
            .iter()
            .filter(|r| r.request_id == req)
        {
            assert!(
                rs.index >= floor,
                "node {id}: read {req} returned index {} below {floor}, committed before it was asked",
                rs.index
            );
        }
    }
}

fn seeds() -> Vec<u64> {
    if let Ok(s) = std::env::var("DEADBOLT_RAFT_SEED") {
        let seed = s.parse().expect("DEADBOLT_RAFT_SEED is a number");
        return vec![seed];
    }
    let count = std::env::var("DEADBOLT_RAFT_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(DEFAULT_SEEDS);
    let start: u64 = std::env::var("DEADBOLT_RAFT_SEED_START")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    REGRESSION_SEEDS
        .iter()
        .copied()
        .chain(start..start + count)
        .collect()
}

fn sweep(size: usize, joiners: usize) {
    let seeds = seeds();
    for &seed in &seeds {
        let result = std::panic::catch_unwind(|| {
            run_seed(seed, size, joiners);
        });
        if let Err(p) = result {
            let msg = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            let name = if joiners > 0 {
                "membership"
            } else if size == 3 {
                "3"
            } else {
                "5"
            };
            panic!(
                "raft random run failed: {size} replicas, seed {seed}: {msg}\n\
                 replay: DEADBOLT_RAFT_SEED={seed} cargo test -p deadbolt-core raft_random_{name}"
            );
        }
    }
    // No wall-clock timing here: core reads no clock, not even in tests
    // (`cargo test` reports the time taken).
    eprintln!(
        "raft_random ({size} replicas, {joiners} joiners): {} seeds passed",
        seeds.len()
    );
}

#[test]
fn raft_random_3() {
    sweep(3, 0);
}

#[test]
fn raft_random_5() {
    sweep(5, 0);
}

/// Three founders, two joiners; learners added, promoted and members
/// removed at random (including the leader) under the same faults.
#[test]
fn raft_random_membership() {
    sweep(5, 2);
}

/// Seeds per cluster shape in the digest test (three shapes).
const DIGEST_SEEDS: u64 = 100;
/// The digest of `DIGEST_SEEDS` seeds of each shape. A change means the
/// replica (or the harness) behaves differently: if that is intended, say
/// so in the commit and record the new value. Recorded again when
/// `Membership` grew its `incarnations` map (issue 13, bug 2: one more
/// byte in every membership entry, no other change): 0x8e63_802b; and
/// when promotion started waiting for the learner's own acknowledgement of
/// the commit index and removals for a reachable quorum (issue 14: the
/// membership-churn runs promote and remove at other moments); before that,
/// recorded before the replica was split into sub-state structs (issue 12):
/// 0x0d06_e379.
const DIGEST: u32 = 0x7862_c75e;

/// Every Ready of every replica over a few hundred seeded runs, hashed:
/// a pure refactoring must leave it unchanged. `DEADBOLT_RAFT_DIGEST_SEEDS=N`
/// prints the digest of N seeds per shape instead (no check).
#[test]
fn raft_random_digest_is_unchanged() {
    let count = std::env::var("DEADBOLT_RAFT_DIGEST_SEEDS")
        .ok()
        .map(|s| s.parse().expect("DEADBOLT_RAFT_DIGEST_SEEDS is a number"));
    let mut bytes = Vec::new();
    for (size, joiners) in [(3, 0), (5, 0), (5, 2)] {
        for seed in 0..count.unwrap_or(DIGEST_SEEDS) {
            bytes.extend(run_seed(seed, size, joiners).to_le_bytes());
        }
    }
    let digest = crate::codec::checksum(&bytes);
    eprintln!(
        "raft digest of {} seeds per shape: {digest:#010x}",
        count.unwrap_or(DIGEST_SEEDS)
    );
    if count.is_none() {
        assert_eq!(digest, DIGEST, "the replica's behaviour changed");
    }
}
