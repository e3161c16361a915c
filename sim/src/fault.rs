//! The faults a run suffers: mixes, kinds, the per-seed plan and the actions
//! the executor performs. The schedule itself ([`FaultSchedule::generate`],
//! in `fault/schedule.rs`) is a pure function from (seed, fault mix, cluster
//! size, run length) to timed fault actions. Swarm testing: each seed enables a
//! random subset of the mix's fault kinds, each with its own random
//! intensity, so that rare combinations get seeds of their own instead of
//! being drowned in an average of everything.
//!
//! Nothing here touches madsim: the executor (`world::executor`, madsim
//! builds only) maps each [`FaultAction`] onto the simulator, the transport's
//! `LinkFaults`, the nodes' `SimDisk` and `SkewHandle`.

use std::collections::BTreeMap;
use std::fmt;

use deadbolt_runtime::storage::CrashFault;
use deadbolt_runtime::SplitMix64;

use crate::history::NodeId;

mod buggify;
mod disturbed;
mod schedule;

pub use buggify::Buggify;
pub use schedule::{ClockSetup, FaultSchedule, TimedAction};

/// Drift is in parts per million; ±10% is the most the design promises to
/// tolerate (clients shorten leases by their drift allowance).
pub const DRIFT_PPM_MAX: i64 = 100_000;
/// Largest wall-clock step of the "hours" kind (either way): 12 hours.
pub const WALL_STEP_HOURS_MS_MAX: u64 = 12 * 3_600_000;
/// Largest initial clock offset between nodes.
pub const CLOCK_OFFSET_MS_MAX: u64 = 5_000;
/// Faults start after this much simulated time, so the cluster can elect a
/// first leader and clients can open sessions: faults against a cluster
/// that never started only test start-up.
pub const WARMUP_MS: u64 = 2_000;

/// A preset of fault kinds a sweep draws from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FaultMix {
    /// Latency jitter, clock skew and the odd graceful restart: the happy
    /// path under realistic noise (and the liveness baseline).
    Calm,
    /// Every network fault: partitions of all shapes, loss, latency spikes,
    /// duplication and reordering of Raft frames.
    Network,
    /// Everything: network, crashes with lost or torn writes, pauses,
    /// clock jumps.
    Chaos,
    /// Not a mix of real faults: nodes that lose their whole disk and come
    /// back with the same id (amnesia), which Raft cannot survive. Only
    /// selected by name (`DEADBOLT_SIM_MIX=amnesia`), to prove that the
    /// checkers catch what such a broken world does.
    Amnesia,
}

impl FaultMix {
    pub const ALL: [FaultMix; 3] = [FaultMix::Calm, FaultMix::Network, FaultMix::Chaos];

    pub fn name(self) -> &'static str {
        match self {
            FaultMix::Calm => "calm",
            FaultMix::Network => "network",
            FaultMix::Chaos => "chaos",
            FaultMix::Amnesia => "amnesia",
        }
    }

    /// Whether seeds of this mix may churn leaders ([`FaultKind::LeaderChurn`]).
    /// Not one of [`FaultMix::kinds`]: it is drawn on a stream of its own,
    /// so adding it moved no other kind's draws.
    pub fn churns_leaders(self) -> bool {
        matches!(self, FaultMix::Network | FaultMix::Chaos)
    }

    pub fn parse(s: &str) -> Option<FaultMix> {
        FaultMix::ALL
            .into_iter()
            .chain([FaultMix::Amnesia])
            .find(|m| m.name() == s)
    }

    /// The kinds this mix may enable.
    pub fn kinds(self) -> &'static [FaultKind] {
        use FaultKind::*;
        match self {
            FaultMix::Calm => &[LatencySpike, ClockSkew, GracefulRestart, RollingRestart],
            FaultMix::Network => &[
                Partition,
                OneWayPartition,
                IsolateLeader,
                Bridge,
                FlappingLink,
                PacketLoss,
                LatencySpike,
                FrameFaults,
                ClockSkew,
                ClientPartition,
            ],
            FaultMix::Amnesia => &[Partition, IsolateLeader, Amnesia],
            FaultMix::Chaos => &[
                Partition,
                OneWayPartition,
                IsolateLeader,
                Bridge,
                FlappingLink,
                PacketLoss,
                LatencySpike,
                FrameFaults,
                Crash,
                TornCrash,
                Pause,
                GracefulRestart,
                RollingRestart,
                ClockSkew,
                ClockJump,
                ClientPartition,
            ],
        }
    }
}

impl fmt::Display for FaultMix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One kind of fault that swarm selection switches on or off per seed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FaultKind {
    /// Two groups that cannot talk either way.
    Partition,
    /// One group's messages to another are lost; the reverse path works.
    OneWayPartition,
    /// The current leader is cut off from everyone (resolved when it
    /// strikes).
    IsolateLeader,
    /// Two halves that cannot talk, and one node that talks to both.
    Bridge,
    /// One link going down and up quickly, many times.
    FlappingLink,
    /// madsim packet loss (a new connection over a lost packet is refused).
    PacketLoss,
    /// madsim send latency raised for a while.
    LatencySpike,
    /// Drop, duplicate and reorder Raft frames in our transport.
    FrameFaults,
    /// Kill a node, losing its unsynced writes, restart it later.
    Crash,
    /// Kill a node leaving a torn (or corrupt) last log append.
    TornCrash,
    /// Stall a node's tasks; it wakes up believing what it believed.
    Pause,
    /// Shut a node down cleanly and start it again.
    GracefulRestart,
    /// Every node shut down cleanly and started again, one after another,
    /// under load (a rolling upgrade): leadership moves at every step.
    RollingRestart,
    /// Per-node initial clock offset and drift, drift changes during the run.
    ClockSkew,
    /// The wall clock steps forward or backward (NTP corrections).
    ClockJump,
    /// A node loses its whole disk and restarts with the same id (only in
    /// the `amnesia` mix: a broken world for testing the checkers).
    Amnesia,
    /// A client cannot reach some nodes (often the leader): its calls fail
    /// over to the others, which forward, and retries carry the same
    /// idempotency key through another node.
    ClientPartition,
    /// Stretches of leadership transfers, one every fraction of a session
    /// TTL: a new leader must not restart every lease (issue 13, bug 6).
    /// Enabled in a quarter of the seeds of the mixes that
    /// [`FaultMix::churns_leaders`], from its own random stream.
    LeaderChurn,
}

/// How often a kind strikes and how long each episode lasts, drawn per seed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Intensity {
    /// Mean simulated time between two episodes of this kind.
    pub mean_gap_ms: u64,
    /// Mean length of one episode.
    pub mean_duration_ms: u64,
}

/// The kinds a seed enabled, with their intensities (the "swarm").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FaultPlan {
    pub mix: FaultMix,
    pub kinds: BTreeMap<FaultKind, Intensity>,
}

impl FaultPlan {
    /// Enables each of the mix's kinds with probability 1/2 (at least one),
    /// each with a random intensity between "rare" and "relentless".
    pub fn draw(mix: FaultMix, rng: &mut SplitMix64) -> FaultPlan {
        let mut kinds = BTreeMap::new();
        let available = mix.kinds();
        for &kind in available {
            if rng.chance(1, 2) {
                kinds.insert(kind, draw_intensity(kind, rng));
            }
        }
        if kinds.is_empty() {
            let kind = available[rng.range_u64(0, available.len() as u64) as usize];
            kinds.insert(kind, draw_intensity(kind, rng));
        }
        FaultPlan { mix, kinds }
    }

    /// Enables [`FaultKind::LeaderChurn`] in a quarter of the seeds of a mix
    /// that churns leaders, drawing from `rng` alone: a stream of its own,
    /// so every other kind of every seed is drawn as before.
    pub fn draw_leader_churn(&mut self, rng: &mut SplitMix64) {
        if self.mix.churns_leaders() && rng.chance(1, 4) {
            let kind = FaultKind::LeaderChurn;
            self.kinds.insert(kind, draw_intensity(kind, rng));
        }
    }

    pub fn has(&self, kind: FaultKind) -> bool {
        self.kinds.contains_key(&kind)
    }
}

fn draw_intensity(kind: FaultKind, rng: &mut SplitMix64) -> Intensity {
    use FaultKind::*;
    // (gap range, duration range) in ms: durations straddle the election
    // timeout and the session TTLs so that some faults are shorter than a
    // lease and some longer.
    let ((gap_lo, gap_hi), (dur_lo, dur_hi)) = match kind {
        Partition | OneWayPartition | IsolateLeader | Bridge => ((1_000, 8_000), (300, 6_000)),
        FlappingLink => ((2_000, 10_000), (1_000, 5_000)),
        PacketLoss | LatencySpike | FrameFaults => ((1_000, 8_000), (500, 5_000)),
        Crash | TornCrash => ((1_500, 10_000), (200, 5_000)),
        Amnesia => ((500, 3_000), (100, 1_000)),
        ClientPartition => ((1_000, 6_000), (500, 6_000)),
        Pause => ((1_500, 10_000), (200, 8_000)),
        GracefulRestart => ((3_000, 15_000), (100, 2_000)),
        // Duration: the pause between two nodes of one rolling restart.
        RollingRestart => ((10_000, 25_000), (300, 3_000)),
        ClockSkew => ((2_000, 10_000), (0, 0)),
        ClockJump => ((2_000, 10_000), (0, 0)),
        // Long stretches (several TTLs of the abandoned session) with short
        // breaks between them.
        LeaderChurn => ((1_000, 4_000), (8_000, 16_000)),
    };
    Intensity {
        mean_gap_ms: rng.range_u64(gap_lo, gap_hi + 1),
        mean_duration_ms: rng.range_u64(dur_lo, dur_hi + 1),
    }
}

/// Why some links are cut: kept for the timeline and failure reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetShape {
    Partition {
        a: Vec<NodeId>,
        b: Vec<NodeId>,
    },
    OneWay {
        from: Vec<NodeId>,
        to: Vec<NodeId>,
    },
    Bridge {
        left: Vec<NodeId>,
        bridge: NodeId,
        right: Vec<NodeId>,
    },
    Flap {
        a: NodeId,
        b: NodeId,
    },
}

impl fmt::Display for NetShape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NetShape::Partition { a, b } => write!(f, "partition {} | {}", set(a), set(b)),
            NetShape::OneWay { from, to } => write!(f, "one-way {} -/-> {}", set(from), set(to)),
            NetShape::Bridge {
                left,
                bridge,
                right,
            } => write!(f, "bridge {} <- n{bridge} -> {}", set(left), set(right)),
            NetShape::Flap { a, b } => write!(f, "flap n{a} <-/-> n{b}"),
        }
    }
}

fn set(nodes: &[NodeId]) -> String {
    let names: Vec<String> = nodes.iter().map(|n| format!("n{n}")).collect();
    format!("{{{}}}", names.join(","))
}

/// One thing the executor does to the world.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FaultAction {
    /// Cut these directed links (src -> dst), in addition to any cut already.
    Cut {
        shape: NetShape,
        links: Vec<(NodeId, NodeId)>,
    },
    /// Cut the node that leads at this moment from every other node.
    IsolateLeader,
    /// Restore every cut link.
    HealNetwork,
    /// Cut client `client_slot` (modulo the number of clients, which the
    /// workload decides) from these nodes, both ways; `leader: true` adds
    /// whoever leads when it strikes.
    CutClient {
        client_slot: u64,
        from: Vec<NodeId>,
        leader: bool,
    },
    /// Restore every cut client link.
    HealClients,
    /// madsim network weather: loss rate and send latency range.
    SetNet {
        loss_per_million: u64,
        latency_min_ms: u64,
        latency_max_ms: u64,
    },
    /// Back to madsim's default weather (no loss, 1..10 ms).
    ResetNet,
    /// Drop/duplicate/reorder Raft frames on `from`'s link to `to`.
    SetFrameFaults {
        from: NodeId,
        to: NodeId,
        drop_per_million: u64,
        duplicate_per_million: u64,
        reorder_per_million: u64,
    },
    ClearFrameFaults,
    /// Power loss: kill the node and crash its disk as `fault` says.
    Crash {
        node: NodeId,
        fault: CrashFault,
    },
    /// Kill the node and give it an empty disk but keep its identity
    /// (restarted by `Restart`): amnesia, a world Raft cannot survive.
    WipeDisk {
        node: NodeId,
    },
    /// Kill the node and give it a new, empty data dir (a new incarnation)
    /// under the same id and flags (restarted by `Restart`): an operator's
    /// mistake the cluster must refuse, not suffer.
    ReplaceDisk {
        node: NodeId,
    },
    Restart {
        node: NodeId,
    },
    Pause {
        node: NodeId,
    },
    Resume {
        node: NodeId,
    },
    /// Clean shutdown (a leader hands over first) and start again.
    GracefulRestart {
        node: NodeId,
    },
    SetDrift {
        node: NodeId,
        drift_ppm: i64,
    },
    /// Both clocks leap forward (the process was suspended).
    JumpForward {
        node: NodeId,
        ms: u64,
    },
    /// The wall clock alone steps (NTP correction).
    StepWall {
        node: NodeId,
        delta_ms: i64,
    },
    /// The node that leads now hands leadership to another voter: the
    /// `pick`-th of the others (modulo their number).
    TransferLeader {
        pick: u64,
    },
    /// An operator adds member `id`, a node that never starts (issue 14:
    /// it must stay a learner, and the cluster available).
    AddMember {
        id: NodeId,
    },
    /// An operator asks to promote member `id`; for a node that never
    /// started this must be refused (the executor asserts it).
    PromoteMember {
        id: NodeId,
    },
    /// An operator removes member `id`.
    RemoveMember {
        id: NodeId,
    },
    /// A new host `id` with a blank disk joins the way `serve --join` does
    /// (issue 14 item 6): it starts as a joiner with the cluster id a
    /// running member names, asks that member to add it (a learner, with
    /// its incarnation and cluster id), catches up and is promoted.
    JoinNode {
        id: NodeId,
    },
    /// An operator removes voter `id` (asked until the cluster commits it
    /// or refuses it for good); with `retire`, the host is then switched
    /// off for good once the removal is known committed.
    RemoveVoter {
        id: NodeId,
        retire: bool,
    },
    /// The same for whichever node leads when it strikes (skipped when no
    /// leader is known).
    RemoveLeader {
        retire: bool,
    },
    /// The node that leads now hands leadership to `id` (e.g. a joiner).
    TransferLeaderTo {
        id: NodeId,
    },
    /// Kill the node without a disk fault (it stays down until
    /// `StartNode`): a machine switched off, e.g. while it is removed.
    StopNode {
        node: NodeId,
    },
    /// Start a node stopped by `StopNode` again, on its old data dir.
    StartNode {
        node: NodeId,
    },
    /// The node is stopped cleanly and started again listening for peers
    /// on another port; the operator then changes its peer address in the
    /// membership through a member's handle (PATCH), asked until committed.
    MovePeerAddr {
        node: NodeId,
    },
    /// Kill the node and put the data dir of its namesake in another
    /// founding of the same founder list (same tag, same incarnation, other
    /// founding nonce) under it, then start it: it must never be accepted,
    /// talk Raft with this cluster or lead it. The run founds that other
    /// cluster first (`world::foreign`).
    SwapForeignDisk {
        node: NodeId,
    },
    /// BUGGIFY (issue 20 item 3): the node's next fsync fails. The node
    /// must stop acting (the storage actor's poison path), never
    /// acknowledge what the failed sync covered.
    FailSync {
        node: NodeId,
    },
    /// The node's supervisor restarts the process that stopped after a
    /// failed fsync: killed (what the failed sync covered may or may not
    /// have reached the disk) and started again on its data dir.
    RestartAfterFailedSync {
        node: NodeId,
    },
}

/// The id of the member the membership episode adds: never a host's.
pub const PHANTOM_NODE_ID: NodeId = 100;

impl FaultAction {
    /// Whether this action belongs to the reconfiguration episode (issue 14
    /// item 6, `FaultSchedule`'s own stream): the pin test takes them out
    /// to show that every other draw stayed where it was.
    pub fn is_reconfiguration(&self) -> bool {
        matches!(
            self,
            FaultAction::JoinNode { .. }
                | FaultAction::RemoveVoter { .. }
                | FaultAction::RemoveLeader { .. }
                | FaultAction::TransferLeaderTo { .. }
                | FaultAction::StopNode { .. }
                | FaultAction::StartNode { .. }
                | FaultAction::MovePeerAddr { .. }
                | FaultAction::SwapForeignDisk { .. }
        )
    }

    /// Whether this action is a BUGGIFY episode (issue 20, its own stream):
    /// the pin test takes them out to show that nothing else moved.
    pub fn is_buggify(&self) -> bool {
        matches!(
            self,
            FaultAction::FailSync { .. } | FaultAction::RestartAfterFailedSync { .. }
        )
    }
}

impl fmt::Display for FaultAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FaultAction::Cut { shape, .. } => write!(f, "{shape}"),
            FaultAction::IsolateLeader => f.write_str("isolate the leader"),
            FaultAction::HealNetwork => f.write_str("heal network"),
            FaultAction::CutClient {
                client_slot,
                from,
                leader,
            } => write!(
                f,
                "client slot {client_slot} cut from {}{}",
                set(from),
                if *leader { " and the leader" } else { "" }
            ),
            FaultAction::HealClients => f.write_str("client links healed"),
            FaultAction::SetNet {
                loss_per_million,
                latency_min_ms,
                latency_max_ms,
            } => write!(
                f,
                "net loss {:.2}% latency {latency_min_ms}..{latency_max_ms}ms",
                *loss_per_million as f64 / 10_000.0
            ),
            FaultAction::ResetNet => f.write_str("net weather back to normal"),
            FaultAction::SetFrameFaults {
                from,
                to,
                drop_per_million,
                duplicate_per_million,
                reorder_per_million,
            } => write!(
                f,
                "frames n{from}->n{to}: drop {}% dup {}% reorder {}%",
                drop_per_million / 10_000,
                duplicate_per_million / 10_000,
                reorder_per_million / 10_000
            ),
            FaultAction::ClearFrameFaults => f.write_str("frame faults cleared"),
            FaultAction::Crash { node, fault } => write!(f, "crash n{node} ({fault:?})"),
            FaultAction::WipeDisk { node } => write!(f, "n{node} loses its whole disk"),
            FaultAction::ReplaceDisk { node } => {
                write!(f, "n{node} gets a new, empty data dir (same id and flags)")
            }
            FaultAction::Restart { node } => write!(f, "restart n{node}"),
            FaultAction::Pause { node } => write!(f, "pause n{node}"),
            FaultAction::Resume { node } => write!(f, "resume n{node}"),
            FaultAction::GracefulRestart { node } => write!(f, "graceful restart n{node}"),
            FaultAction::SetDrift { node, drift_ppm } => write!(
                f,
                "n{node} clock drift {:+.1}%",
                *drift_ppm as f64 / 10_000.0
            ),
            FaultAction::JumpForward { node, ms } => write!(f, "n{node} clock jumps +{ms}ms"),
            FaultAction::StepWall { node, delta_ms } => {
                write!(f, "n{node} wall clock steps {delta_ms:+}ms")
            }
            FaultAction::TransferLeader { pick } => {
                write!(f, "leadership transfer (pick {pick})")
            }
            FaultAction::AddMember { id } => write!(f, "add member n{id} (never starts)"),
            FaultAction::PromoteMember { id } => write!(f, "promote member n{id}"),
            FaultAction::RemoveMember { id } => write!(f, "remove member n{id}"),
            FaultAction::JoinNode { id } => write!(f, "n{id} joins with a blank disk"),
            FaultAction::RemoveVoter { id, retire } => write!(
                f,
                "remove voter n{id}{}",
                if *retire {
                    " (then retire its host)"
                } else {
                    ""
                }
            ),
            FaultAction::RemoveLeader { retire } => write!(
                f,
                "remove the leader{}",
                if *retire {
                    " (then retire its host)"
                } else {
                    ""
                }
            ),
            FaultAction::TransferLeaderTo { id } => write!(f, "leadership transfer to n{id}"),
            FaultAction::StopNode { node } => write!(f, "n{node} switched off"),
            FaultAction::StartNode { node } => write!(f, "n{node} switched on (old data dir)"),
            FaultAction::MovePeerAddr { node } => {
                write!(
                    f,
                    "n{node} restarts on another peer port; its address is changed"
                )
            }
            FaultAction::SwapForeignDisk { node } => {
                write!(f, "n{node} gets the data dir of another founding")
            }
            FaultAction::FailSync { node } => write!(f, "n{node}'s next fsync fails"),
            FaultAction::RestartAfterFailedSync { node } => {
                write!(
                    f,
                    "n{node} restarted by its supervisor after the failed fsync"
                )
            }
        }
    }
}

impl fmt::Display for FaultPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "mix {}:", self.mix)?;
        for (kind, i) in &self.kinds {
            write!(
                f,
                " {kind:?}(every ~{}ms, ~{}ms)",
                i.mean_gap_ms, i.mean_duration_ms
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mix_names_round_trip() {
        for mix in FaultMix::ALL {
            assert_eq!(FaultMix::parse(mix.name()), Some(mix));
        }
        assert_eq!(FaultMix::parse("nope"), None);
    }
}
