//! The fault schedule: a pure function from (seed, fault mix, cluster size,
//! run length) to timed fault actions. Swarm testing: each seed enables a
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
use crate::seed::{rng_for, Concern};

/// Drift is in parts per million; ±10% is the most the design promises to
/// tolerate (clients shorten leases by their drift allowance).
pub const DRIFT_PPM_MAX: i64 = 100_000;
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
            FaultMix::Calm => &[LatencySpike, ClockSkew, GracefulRestart],
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
        ClockSkew => ((2_000, 10_000), (0, 0)),
        ClockJump => ((2_000, 10_000), (0, 0)),
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
    /// Kill the node and give it an empty disk (restarted by `Restart`).
    WipeDisk {
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
        }
    }
}

/// An action and when it strikes (simulated ms since the run started).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimedAction {
    pub at_ms: u64,
    pub action: FaultAction,
}

/// A node's clock at start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClockSetup {
    pub offset_ms: u64,
    pub drift_ppm: i64,
}

/// Everything the fault side of a run will do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FaultSchedule {
    pub plan: FaultPlan,
    /// Index `i` is node `i + 1`.
    pub clocks: Vec<ClockSetup>,
    /// Sorted by time (stable: equal times keep generation order).
    pub actions: Vec<TimedAction>,
    /// When faults stop; the executor then heals everything.
    pub faults_end_ms: u64,
}

/// Draws an exponential-ish gap with the given mean (deterministic, bounded
/// to 4x the mean so one seed cannot go silent).
fn gap(rng: &mut SplitMix64, mean_ms: u64) -> u64 {
    let mean = mean_ms.max(1);
    // Sum of two uniforms in 0..mean: triangular around the mean, cheap and
    // integer-only (floats are deterministic too, but ints read better).
    (rng.range_u64(0, mean + 1) + rng.range_u64(0, mean + 1)).clamp(1, mean * 4)
}

fn shuffle(nodes: &mut [NodeId], rng: &mut SplitMix64) {
    for i in (1..nodes.len()).rev() {
        let j = rng.range_u64(0, i as u64 + 1) as usize;
        nodes.swap(i, j);
    }
}

/// Splits 1..=n into two non-empty groups in random order.
fn split(n: u64, rng: &mut SplitMix64) -> (Vec<NodeId>, Vec<NodeId>) {
    let mut nodes: Vec<NodeId> = (1..=n).collect();
    shuffle(&mut nodes, rng);
    let cut = rng.range_u64(1, n) as usize;
    let (mut a, mut b) = (nodes[..cut].to_vec(), nodes[cut..].to_vec());
    a.sort_unstable();
    b.sort_unstable();
    (a, b)
}

fn both_ways(a: &[NodeId], b: &[NodeId]) -> Vec<(NodeId, NodeId)> {
    let mut links = Vec::new();
    for &x in a {
        for &y in b {
            links.push((x, y));
            links.push((y, x));
        }
    }
    links
}

impl FaultSchedule {
    /// The schedule of `seed` under `mix` for `nodes` nodes: faults strike in
    /// `[WARMUP_MS, faults_end_ms)`, and each episode's undo is scheduled no
    /// later than `faults_end_ms` (the executor heals everything there anyway).
    pub fn generate(seed: u64, mix: FaultMix, nodes: u64, faults_end_ms: u64) -> FaultSchedule {
        assert!(nodes >= 1, "a cluster has at least one node");
        let mut rng = rng_for(seed, Concern::Faults, 0);
        let plan = FaultPlan::draw(mix, &mut rng);
        // Each kind draws from its own fork: enabling one kind does not move
        // the others' episodes.
        let mut forks: BTreeMap<FaultKind, SplitMix64> = BTreeMap::new();
        for &kind in mix.kinds() {
            forks.insert(kind, rng.fork());
        }
        let mut clock_rng = rng_for(seed, Concern::Clock, 0);
        let clocks = (0..nodes)
            .map(|_| {
                if plan.has(FaultKind::ClockSkew) {
                    ClockSetup {
                        offset_ms: clock_rng.range_u64(0, CLOCK_OFFSET_MS_MAX + 1),
                        drift_ppm: clock_rng.range_u64(0, 2 * DRIFT_PPM_MAX as u64 + 1) as i64
                            - DRIFT_PPM_MAX,
                    }
                } else {
                    ClockSetup {
                        offset_ms: 0,
                        drift_ppm: 0,
                    }
                }
            })
            .collect();
        let mut out = Vec::new();
        let end = faults_end_ms.max(WARMUP_MS);
        let window = (WARMUP_MS, end);

        // Network partitions of every shape share one timeline: overlapping
        // cuts of different shapes would be one shape nobody asked for, and
        // each episode ends with a heal.
        let shapes: Vec<FaultKind> = [
            FaultKind::Partition,
            FaultKind::OneWayPartition,
            FaultKind::IsolateLeader,
            FaultKind::Bridge,
            FaultKind::FlappingLink,
        ]
        .into_iter()
        .filter(|k| plan.has(*k))
        .collect();
        if !shapes.is_empty() && nodes >= 2 {
            let mut net_rng = forks
                .get(&FaultKind::Partition)
                .cloned()
                .unwrap_or_else(|| SplitMix64::new(0));
            net_rng = SplitMix64::new(net_rng.next_u64() ^ shapes.len() as u64);
            let mut t = window.0;
            loop {
                let kind = shapes[net_rng.range_u64(0, shapes.len() as u64) as usize];
                let intensity = plan.kinds[&kind];
                t += gap(&mut net_rng, intensity.mean_gap_ms);
                if t >= window.1 {
                    break;
                }
                let duration = gap(&mut net_rng, intensity.mean_duration_ms);
                let heal_at = (t + duration).min(window.1);
                match kind {
                    FaultKind::Partition => {
                        let (a, b) = split(nodes, &mut net_rng);
                        let links = both_ways(&a, &b);
                        out.push(timed(
                            t,
                            FaultAction::Cut {
                                shape: NetShape::Partition { a, b },
                                links,
                            },
                        ));
                    }
                    FaultKind::OneWayPartition => {
                        let (from, to) = split(nodes, &mut net_rng);
                        let links = from
                            .iter()
                            .flat_map(|&x| to.iter().map(move |&y| (x, y)))
                            .collect();
                        out.push(timed(
                            t,
                            FaultAction::Cut {
                                shape: NetShape::OneWay { from, to },
                                links,
                            },
                        ));
                    }
                    FaultKind::IsolateLeader => out.push(timed(t, FaultAction::IsolateLeader)),
                    FaultKind::Bridge if nodes >= 3 => {
                        let mut all: Vec<NodeId> = (1..=nodes).collect();
                        shuffle(&mut all, &mut net_rng);
                        let bridge = all[0];
                        let rest = &all[1..];
                        let cut = net_rng.range_u64(1, rest.len() as u64) as usize;
                        let mut left = rest[..cut].to_vec();
                        let mut right = rest[cut..].to_vec();
                        left.sort_unstable();
                        right.sort_unstable();
                        let links = both_ways(&left, &right);
                        out.push(timed(
                            t,
                            FaultAction::Cut {
                                shape: NetShape::Bridge {
                                    left,
                                    bridge,
                                    right,
                                },
                                links,
                            },
                        ));
                    }
                    FaultKind::Bridge => {}
                    FaultKind::FlappingLink => {
                        let a = net_rng.range_u64(1, nodes + 1);
                        let mut b = net_rng.range_u64(1, nodes);
                        if b >= a {
                            b += 1;
                        }
                        // Down and up every 50..500 ms until the episode ends.
                        let mut s = t;
                        while s < heal_at {
                            out.push(timed(
                                s,
                                FaultAction::Cut {
                                    shape: NetShape::Flap { a, b },
                                    links: vec![(a, b), (b, a)],
                                },
                            ));
                            let down = net_rng.range_u64(50, 500);
                            let up = net_rng.range_u64(50, 500);
                            out.push(timed((s + down).min(heal_at), FaultAction::HealNetwork));
                            s += down + up;
                        }
                    }
                    _ => unreachable!("only network shapes are drawn here"),
                }
                out.push(timed(heal_at, FaultAction::HealNetwork));
                t = heal_at;
            }
        }

        // Network weather: loss and latency are one madsim config, so one
        // timeline too.
        let weather: Vec<FaultKind> = [FaultKind::PacketLoss, FaultKind::LatencySpike]
            .into_iter()
            .filter(|k| plan.has(*k))
            .collect();
        if !weather.is_empty() {
            let mut w_rng = forks[&weather[0]].clone();
            let mut t = window.0;
            loop {
                let kind = weather[w_rng.range_u64(0, weather.len() as u64) as usize];
                let intensity = plan.kinds[&kind];
                t += gap(&mut w_rng, intensity.mean_gap_ms);
                if t >= window.1 {
                    break;
                }
                let end_at = (t + gap(&mut w_rng, intensity.mean_duration_ms)).min(window.1);
                let action = if kind == FaultKind::PacketLoss {
                    FaultAction::SetNet {
                        // 0.1% .. 20%: TCP under madsim turns loss into
                        // refused connections and retransmission delays.
                        loss_per_million: w_rng.range_u64(1_000, 200_001),
                        latency_min_ms: 1,
                        latency_max_ms: 10,
                    }
                } else {
                    let lo = w_rng.range_u64(1, 200);
                    FaultAction::SetNet {
                        loss_per_million: 0,
                        latency_min_ms: lo,
                        latency_max_ms: lo + w_rng.range_u64(1, 2_000),
                    }
                };
                out.push(timed(t, action));
                out.push(timed(end_at, FaultAction::ResetNet));
                t = end_at;
            }
        }

        if let Some(&intensity) = plan.kinds.get(&FaultKind::ClientPartition) {
            let mut c_rng = forks[&FaultKind::ClientPartition].clone();
            let mut t = window.0;
            loop {
                t += gap(&mut c_rng, intensity.mean_gap_ms);
                if t >= window.1 {
                    break;
                }
                let end_at = (t + gap(&mut c_rng, intensity.mean_duration_ms)).min(window.1);
                for _ in 0..c_rng.range_u64(1, 3) {
                    let from: Vec<NodeId> = (1..=nodes).filter(|_| c_rng.chance(1, 3)).collect();
                    out.push(timed(
                        t,
                        FaultAction::CutClient {
                            client_slot: c_rng.range_u64(0, 8),
                            from,
                            leader: c_rng.chance(2, 3),
                        },
                    ));
                }
                out.push(timed(end_at, FaultAction::HealClients));
                t = end_at;
            }
        }

        if let (Some(&intensity), true) = (plan.kinds.get(&FaultKind::FrameFaults), nodes >= 2) {
            let mut f_rng = forks[&FaultKind::FrameFaults].clone();
            let mut t = window.0;
            loop {
                t += gap(&mut f_rng, intensity.mean_gap_ms);
                if t >= window.1 {
                    break;
                }
                let end_at = (t + gap(&mut f_rng, intensity.mean_duration_ms)).min(window.1);
                // A few links at once, each with its own rates.
                for _ in 0..f_rng.range_u64(1, nodes + 1) {
                    let from = f_rng.range_u64(1, nodes + 1);
                    let mut to = f_rng.range_u64(1, nodes);
                    if to >= from {
                        to += 1;
                    }
                    out.push(timed(
                        t,
                        FaultAction::SetFrameFaults {
                            from,
                            to,
                            drop_per_million: f_rng.range_u64(0, 300_001),
                            duplicate_per_million: f_rng.range_u64(0, 300_001),
                            reorder_per_million: f_rng.range_u64(0, 300_001),
                        },
                    ));
                }
                out.push(timed(end_at, FaultAction::ClearFrameFaults));
                t = end_at;
            }
        }

        // Process faults: each node is busy (down, paused, restarting) during
        // its episode; a new episode picks a node that is free then.
        let process: Vec<FaultKind> = [
            FaultKind::Crash,
            FaultKind::TornCrash,
            FaultKind::Amnesia,
            FaultKind::Pause,
            FaultKind::GracefulRestart,
        ]
        .into_iter()
        .filter(|k| plan.has(*k))
        .collect();
        let mut busy_until: BTreeMap<NodeId, u64> = (1..=nodes).map(|n| (n, 0)).collect();
        for &kind in &process {
            let intensity = plan.kinds[&kind];
            let mut p_rng = forks[&kind].clone();
            let mut t = window.0;
            loop {
                t += gap(&mut p_rng, intensity.mean_gap_ms);
                if t >= window.1 {
                    break;
                }
                let node = p_rng.range_u64(1, nodes + 1);
                if busy_until[&node] > t {
                    continue;
                }
                let end_at = (t + gap(&mut p_rng, intensity.mean_duration_ms)).min(window.1);
                busy_until.insert(node, end_at + 1);
                match kind {
                    FaultKind::Crash | FaultKind::TornCrash => {
                        let fault = match (kind, p_rng.range_u64(0, 4)) {
                            (FaultKind::Crash, 0) => CrashFault::KeepRandomPrefix,
                            (FaultKind::Crash, _) => CrashFault::LoseUnsynced,
                            (_, 0) => CrashFault::CorruptLast,
                            _ => CrashFault::TearLast,
                        };
                        out.push(timed(t, FaultAction::Crash { node, fault }));
                        out.push(timed(end_at, FaultAction::Restart { node }));
                    }
                    FaultKind::Amnesia => {
                        out.push(timed(t, FaultAction::WipeDisk { node }));
                        out.push(timed(end_at, FaultAction::Restart { node }));
                    }
                    FaultKind::Pause => {
                        out.push(timed(t, FaultAction::Pause { node }));
                        out.push(timed(end_at, FaultAction::Resume { node }));
                    }
                    FaultKind::GracefulRestart => {
                        out.push(timed(t, FaultAction::GracefulRestart { node }));
                    }
                    _ => unreachable!("only process kinds are drawn here"),
                }
            }
        }

        for kind in [FaultKind::ClockSkew, FaultKind::ClockJump] {
            let Some(&intensity) = plan.kinds.get(&kind) else {
                continue;
            };
            let mut c_rng = forks[&kind].clone();
            let mut t = window.0;
            loop {
                t += gap(&mut c_rng, intensity.mean_gap_ms);
                if t >= window.1 {
                    break;
                }
                let node = c_rng.range_u64(1, nodes + 1);
                let action = if kind == FaultKind::ClockSkew {
                    FaultAction::SetDrift {
                        node,
                        drift_ppm: c_rng.range_u64(0, 2 * DRIFT_PPM_MAX as u64 + 1) as i64
                            - DRIFT_PPM_MAX,
                    }
                } else {
                    // Wall clock only, either way. A monotonic clock that
                    // leaps ahead while the process keeps running is outside
                    // the lease model (bounded drift): a leader would expire
                    // leases early, which fencing tolerates but clients
                    // cannot detect. A suspended process is `Pause` (the
                    // simulated clock runs on while it sleeps).
                    // `JumpForward` stays available for targeted runs.
                    FaultAction::StepWall {
                        node,
                        delta_ms: c_rng.range_u64(0, 120_001) as i64 - 60_000,
                    }
                };
                out.push(timed(t, action));
            }
        }

        // Stable sort: equal times keep generation order (a cut before the
        // heal that ends a zero-length episode).
        out.sort_by_key(|a| a.at_ms);
        FaultSchedule {
            plan,
            clocks,
            actions: out,
            faults_end_ms: end,
        }
    }
}

fn timed(at_ms: u64, action: FaultAction) -> TimedAction {
    TimedAction { at_ms, action }
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
    fn same_seed_same_schedule_and_mixes_differ() {
        for seed in 0..200 {
            for mix in FaultMix::ALL {
                let a = FaultSchedule::generate(seed, mix, 3, 20_000);
                let b = FaultSchedule::generate(seed, mix, 3, 20_000);
                assert_eq!(a, b);
                for kind in a.plan.kinds.keys() {
                    assert!(mix.kinds().contains(kind), "{mix} enabled {kind:?}");
                }
            }
        }
    }

    #[test]
    fn schedules_are_sorted_bounded_and_balanced() {
        for seed in 0..300 {
            for nodes in [1, 3, 5] {
                let s = FaultSchedule::generate(seed, FaultMix::Chaos, nodes, 20_000);
                assert!(s.actions.windows(2).all(|w| w[0].at_ms <= w[1].at_ms));
                let mut down: BTreeMap<NodeId, bool> = BTreeMap::new();
                let mut paused: BTreeMap<NodeId, bool> = BTreeMap::new();
                for a in &s.actions {
                    assert!(a.at_ms >= WARMUP_MS && a.at_ms <= 20_000, "{a:?}");
                    match &a.action {
                        FaultAction::Crash { node, .. } | FaultAction::WipeDisk { node } => {
                            assert!(!down.insert(*node, true).unwrap_or(false), "{seed}: {a:?}");
                            assert!(!paused.get(node).copied().unwrap_or(false));
                        }
                        FaultAction::Restart { node } => {
                            assert!(down.insert(*node, false).unwrap_or(false));
                        }
                        FaultAction::Pause { node } => {
                            assert!(!paused.insert(*node, true).unwrap_or(false));
                            assert!(!down.get(node).copied().unwrap_or(false));
                        }
                        FaultAction::Resume { node } => {
                            assert!(paused.insert(*node, false).unwrap_or(false));
                        }
                        FaultAction::Cut { links, .. } => {
                            assert!(links.iter().all(|(x, y)| x != y
                                && (1..=nodes).contains(x)
                                && (1..=nodes).contains(y)));
                        }
                        FaultAction::SetDrift { drift_ppm, .. } => {
                            assert!(drift_ppm.abs() <= DRIFT_PPM_MAX)
                        }
                        _ => {}
                    }
                }
                // Every episode is undone by the end of the fault window.
                assert!(down.values().all(|d| !d), "seed {seed}: {down:?}");
                assert!(paused.values().all(|p| !p), "seed {seed}: {paused:?}");
                assert_eq!(s.clocks.len(), nodes as usize);
            }
        }
    }

    #[test]
    fn swarm_enables_varied_subsets() {
        let mut subsets = std::collections::BTreeSet::new();
        for seed in 0..100 {
            let s = FaultSchedule::generate(seed, FaultMix::Chaos, 3, 10_000);
            assert!(!s.plan.kinds.is_empty());
            subsets.insert(s.plan.kinds.keys().copied().collect::<Vec<_>>());
        }
        assert!(
            subsets.len() > 50,
            "only {} distinct subsets",
            subsets.len()
        );
        let calm = FaultSchedule::generate(7, FaultMix::Calm, 3, 10_000);
        assert!(calm.actions.iter().all(|a| !matches!(
            a.action,
            FaultAction::Crash { .. } | FaultAction::Cut { .. } | FaultAction::Pause { .. }
        )));
    }

    /// `generate` is a pure function of its inputs, and every run's
    /// schedule depends on the exact order of its random draws: this pins
    /// the schedules of seeds 0..2000 for every mix and cluster size, so a
    /// restructuring of `generate` that moves a draw is caught here (a
    /// deliberate change of the generator updates the hash).
    #[test]
    fn schedules_of_seeds_0_to_2000_are_pinned() {
        let mut hasher = crate::check::determinism::TraceHasher::new();
        for seed in 0..2_000 {
            for mix in FaultMix::ALL.into_iter().chain([FaultMix::Amnesia]) {
                for nodes in [1, 3, 5, 7] {
                    let schedule = FaultSchedule::generate(seed, mix, nodes, 20_000);
                    hasher.record(&format!("{schedule:?}"));
                }
            }
        }
        assert_eq!(
            hasher.hash(),
            SCHEDULES_OF_SEEDS_0_TO_2000_HASH,
            "{:#018x}",
            hasher.hash()
        );
    }

    /// The hash of the schedules above, as generated before `generate` was
    /// split into steps.
    const SCHEDULES_OF_SEEDS_0_TO_2000_HASH: u64 = 0xc9b4_471a_e675_b4ce;

    #[test]
    fn mix_names_round_trip() {
        for mix in FaultMix::ALL {
            assert_eq!(FaultMix::parse(mix.name()), Some(mix));
        }
        assert_eq!(FaultMix::parse("nope"), None);
    }
}
