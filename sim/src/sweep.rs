//! How seeds are chosen and reported: the run parameters a seed implies,
//! the environment knobs (`DEADBOLT_SIM_*`), the regression list, the sweep
//! and soak drivers (generic over the function that runs one seed, so they
//! are tested without madsim), and the failure message with its replay
//! command.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::fault::FaultMix;
use crate::seed::{sub_seed, Concern};

/// Simulated seconds of faults and workload per seed in a default sweep.
pub const SECS_DEFAULT: u64 = 20;
/// Seeds per default `cargo test` sweep (over the three mixes): about a
/// minute on 2 idle cores, so the whole CI run stays well under 20 minutes.
/// Scale with `DEADBOLT_SIM_SEEDS` or soak with `just sim-soak`.
pub const SEEDS_DEFAULT: u64 = 600;
/// First seed of a default sweep: fixed, so `cargo test` is reproducible.
pub const FIRST_SEED_DEFAULT: u64 = 1;
/// One seed in this many of a sweep is run twice to check determinism.
pub const DETERMINISM_EVERY_DEFAULT: u64 = 20;
/// The regression list, relative to the sim crate.
pub const REGRESSIONS_FILE: &str = "regressions.txt";

/// Everything one simulated run depends on. A seed implies all of it unless
/// the environment overrides a field; the replay command repeats overrides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunSpec {
    pub seed: u64,
    pub mix: FaultMix,
    pub nodes: u64,
    /// Simulated seconds of workload under faults (heal, restart and
    /// read-back come after).
    pub secs: u64,
    /// Run the seed twice and compare trace hashes.
    pub check_determinism: bool,
    /// Keep the timeline and trace lines, log at debug (replays).
    pub verbose: bool,
    /// Which overrides were given (to repeat them in the replay command).
    pub overrides: Overrides,
}

/// Environment overrides of what a seed implies.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Overrides {
    pub mix: Option<FaultMix>,
    pub nodes: Option<u64>,
    pub secs: Option<u64>,
}

impl RunSpec {
    /// The run a seed implies: mixes rotate with the seed so a sweep over
    /// consecutive seeds covers all three evenly; cluster size is mostly 3,
    /// sometimes 5, rarely 1.
    pub fn for_seed(seed: u64, overrides: &Overrides) -> RunSpec {
        let mix = overrides
            .mix
            .unwrap_or(FaultMix::ALL[(seed % FaultMix::ALL.len() as u64) as usize]);
        let nodes = overrides.nodes.unwrap_or_else(|| {
            match sub_seed(seed, Concern::Faults, u64::MAX) % 20 {
                0 => 1,
                1..=5 => 5,
                _ => 3,
            }
        });
        RunSpec {
            seed,
            mix,
            nodes,
            secs: overrides.secs.unwrap_or(SECS_DEFAULT),
            check_determinism: false,
            verbose: false,
            overrides: overrides.clone(),
        }
    }

    /// The environment a replay needs besides the seed.
    fn env_prefix(&self) -> String {
        let mut env = format!("DEADBOLT_SIM_SEED={}", self.seed);
        if let Some(mix) = self.overrides.mix {
            env.push_str(&format!(" DEADBOLT_SIM_MIX={mix}"));
        }
        if let Some(nodes) = self.overrides.nodes {
            env.push_str(&format!(" DEADBOLT_SIM_NODES={nodes}"));
        }
        if let Some(secs) = self.overrides.secs {
            env.push_str(&format!(" DEADBOLT_SIM_SECS={secs}"));
        }
        env
    }

    /// The one line that replays this run alone with full tracing and a
    /// timeline (plain cargo; `just sim-replay SEED` when nothing was
    /// overridden).
    pub fn replay_command(&self) -> String {
        format!(
            "{} cargo sim --test sim replay -- --nocapture",
            self.env_prefix()
        )
    }

    pub fn just_command(&self) -> Option<String> {
        (self.overrides == Overrides::default()).then(|| format!("just sim-replay {}", self.seed))
    }

    /// The line to add to `regressions.txt` for this run.
    pub fn regression_line(&self) -> String {
        let mut line = self.seed.to_string();
        if let Some(mix) = self.overrides.mix {
            line.push_str(&format!(" mix={mix}"));
        }
        if let Some(nodes) = self.overrides.nodes {
            line.push_str(&format!(" nodes={nodes}"));
        }
        if let Some(secs) = self.overrides.secs {
            line.push_str(&format!(" secs={secs}"));
        }
        line
    }
}

impl fmt::Display for RunSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "seed {} (mix {}, {} node(s), {} s)",
            self.seed, self.mix, self.nodes, self.secs
        )
    }
}

/// A bad `DEADBOLT_SIM_*` value: names the variable and the value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvError(pub String);

impl fmt::Display for EnvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The sweep's knobs, from the environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SweepEnv {
    /// `DEADBOLT_SIM_SEED`: replay this seed alone.
    pub replay_seed: Option<u64>,
    /// `DEADBOLT_SIM_SEEDS`: how many seeds the sweep runs.
    pub seeds: u64,
    /// `DEADBOLT_SIM_FIRST_SEED`.
    pub first_seed: u64,
    /// `DEADBOLT_SIM_SOAK_MINUTES`: sweep fresh seeds until time is up.
    pub soak_minutes: Option<u64>,
    /// `DEADBOLT_SIM_JOBS`: seeds run in parallel (default: cores).
    pub jobs: usize,
    /// `DEADBOLT_SIM_DETERMINISM_EVERY`: one seed in N runs twice (0: never).
    pub determinism_every: u64,
    pub overrides: Overrides,
}

fn parse_u64(name: &str, value: Option<String>) -> Result<Option<u64>, EnvError> {
    match value {
        None => Ok(None),
        Some(v) if v.trim().is_empty() => Ok(None),
        Some(v) => v
            .trim()
            .parse::<u64>()
            .map(Some)
            .map_err(|_| EnvError(format!("{name}={v:?} is not a non-negative integer"))),
    }
}

impl SweepEnv {
    /// Reads the knobs through `get` (the process environment in tests:
    /// `SweepEnv::parse(|k| std::env::var(k).ok())`).
    pub fn parse(get: impl Fn(&str) -> Option<String>) -> Result<SweepEnv, EnvError> {
        let mix = match get("DEADBOLT_SIM_MIX") {
            None => None,
            Some(v) if v.trim().is_empty() => None,
            Some(v) => Some(FaultMix::parse(v.trim()).ok_or_else(|| {
                EnvError(format!(
                    "DEADBOLT_SIM_MIX={v:?} is not one of calm, network, chaos"
                ))
            })?),
        };
        let nodes = parse_u64("DEADBOLT_SIM_NODES", get("DEADBOLT_SIM_NODES"))?;
        if let Some(n) = nodes {
            if !matches!(n, 1 | 3 | 5 | 7) {
                return Err(EnvError(format!(
                    "DEADBOLT_SIM_NODES={n} is not a cluster size deadbolt supports (1, 3, 5, 7)"
                )));
            }
        }
        let secs = parse_u64("DEADBOLT_SIM_SECS", get("DEADBOLT_SIM_SECS"))?;
        if secs == Some(0) {
            return Err(EnvError("DEADBOLT_SIM_SECS=0: a run needs time".into()));
        }
        let jobs = parse_u64("DEADBOLT_SIM_JOBS", get("DEADBOLT_SIM_JOBS"))?
            .map(|j| j.max(1) as usize)
            .unwrap_or_else(|| {
                std::thread::available_parallelism()
                    .map(|n| n.get())
                    .unwrap_or(1)
            });
        Ok(SweepEnv {
            replay_seed: parse_u64("DEADBOLT_SIM_SEED", get("DEADBOLT_SIM_SEED"))?,
            seeds: parse_u64("DEADBOLT_SIM_SEEDS", get("DEADBOLT_SIM_SEEDS"))?
                .unwrap_or(SEEDS_DEFAULT),
            first_seed: parse_u64("DEADBOLT_SIM_FIRST_SEED", get("DEADBOLT_SIM_FIRST_SEED"))?
                .unwrap_or(FIRST_SEED_DEFAULT),
            soak_minutes: parse_u64(
                "DEADBOLT_SIM_SOAK_MINUTES",
                get("DEADBOLT_SIM_SOAK_MINUTES"),
            )?,
            jobs,
            determinism_every: parse_u64(
                "DEADBOLT_SIM_DETERMINISM_EVERY",
                get("DEADBOLT_SIM_DETERMINISM_EVERY"),
            )?
            .unwrap_or(DETERMINISM_EVERY_DEFAULT),
            overrides: Overrides { mix, nodes, secs },
        })
    }

    /// The spec of the `i`-th seed of the sweep.
    pub fn spec(&self, seed: u64) -> RunSpec {
        let mut spec = RunSpec::for_seed(seed, &self.overrides);
        spec.check_determinism = self.determinism_every != 0 && seed % self.determinism_every == 0;
        spec
    }
}

/// One line of `regressions.txt`: `SEED [mix=M] [nodes=N] [secs=S] [# why]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Regression {
    pub seed: u64,
    pub overrides: Overrides,
    pub note: String,
}

impl Regression {
    pub fn spec(&self) -> RunSpec {
        let mut spec = RunSpec::for_seed(self.seed, &self.overrides);
        // Fixed bugs must stay fixed deterministically too.
        spec.check_determinism = true;
        spec
    }
}

/// Parses the regression list; blank lines and `#` comments are skipped.
pub fn parse_regressions(text: &str) -> Result<Vec<Regression>, String> {
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let (body, note) = match raw.split_once('#') {
            Some((b, n)) => (b, n.trim().to_owned()),
            None => (raw, String::new()),
        };
        let mut words = body.split_whitespace();
        let Some(first) = words.next() else {
            continue;
        };
        let line_no = i + 1;
        let seed = first
            .parse::<u64>()
            .map_err(|_| format!("line {line_no}: {first:?} is not a seed"))?;
        let mut overrides = Overrides::default();
        for w in words {
            let (k, v) = w
                .split_once('=')
                .ok_or_else(|| format!("line {line_no}: {w:?} is not key=value"))?;
            match k {
                "mix" => {
                    overrides.mix = Some(
                        FaultMix::parse(v)
                            .ok_or_else(|| format!("line {line_no}: unknown mix {v:?}"))?,
                    )
                }
                "nodes" => {
                    overrides.nodes = Some(
                        v.parse()
                            .map_err(|_| format!("line {line_no}: nodes={v:?}"))?,
                    )
                }
                "secs" => {
                    overrides.secs = Some(
                        v.parse()
                            .map_err(|_| format!("line {line_no}: secs={v:?}"))?,
                    )
                }
                _ => return Err(format!("line {line_no}: unknown key {k:?}")),
            }
        }
        out.push(Regression {
            seed,
            overrides,
            note,
        });
    }
    Ok(out)
}

/// What running one seed produced.
#[derive(Debug, Clone, PartialEq)]
pub struct RunOutcome {
    /// Simulated seconds the run covered (faults, heal and read-back).
    pub sim_secs: f64,
    /// Client operations issued.
    pub ops: u64,
    /// `None`: every checker passed. `Some`: the failing checkers' names and
    /// what they saw (already readable).
    pub failure: Option<Failure>,
    /// Inconclusive checks (reported, not failing).
    pub inconclusive: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// e.g. `["lock-safety", "fencing"]`, or `["panic"]`.
    pub checkers: Vec<String>,
    pub details: String,
}

/// The message a failing seed prints: seed, checkers, what they saw, replay.
pub fn failure_message(spec: &RunSpec, failure: &Failure) -> String {
    let mut msg = format!(
        "deadbolt-sim: {spec} FAILED [{}]\n{}\n",
        failure.checkers.join(", "),
        failure.details.trim_end()
    );
    msg.push_str(&format!("  replay: {}\n", spec.replay_command()));
    if let Some(j) = spec.just_command() {
        msg.push_str(&format!("      or: {j}\n"));
    }
    msg.push_str(&format!(
        "  once fixed, add to sim/{REGRESSIONS_FILE}: {}\n",
        spec.regression_line()
    ));
    msg
}

/// Totals of a sweep.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SweepSummary {
    pub seeds: u64,
    pub ops: u64,
    pub sim_secs: f64,
    pub wall_secs: f64,
    pub inconclusive: u64,
    /// Failure messages, in seed order.
    pub failures: Vec<(u64, String)>,
}

impl SweepSummary {
    pub fn sim_per_wall(&self) -> f64 {
        if self.wall_secs > 0.0 {
            self.sim_secs / self.wall_secs
        } else {
            0.0
        }
    }

    pub fn seeds_per_minute(&self) -> f64 {
        if self.wall_secs > 0.0 {
            self.seeds as f64 * 60.0 / self.wall_secs
        } else {
            0.0
        }
    }
}

impl fmt::Display for SweepSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} seed(s), {} failed, {} client ops, {:.0} sim-s in {:.1} wall-s: \
             {:.1} sim-s per wall-s, {:.1} seeds/min, {} inconclusive check(s)",
            self.seeds,
            self.failures.len(),
            self.ops,
            self.sim_secs,
            self.wall_secs,
            self.sim_per_wall(),
            self.seeds_per_minute(),
            self.inconclusive
        )
    }
}

/// When a sweep stops taking new seeds.
#[derive(Debug, Clone, Copy)]
pub enum Budget {
    /// Exactly these many seeds.
    Seeds(u64),
    /// New seeds until this much wall time has passed (soak).
    WallTime(Duration),
}

/// Runs `first_seed..` on `jobs` threads until the budget is spent, each
/// seed through `run` (which must not panic: wrap the simulation). Prints
/// each failure as it happens and progress every `progress_every`.
pub fn sweep<F>(
    first_seed: u64,
    budget: Budget,
    jobs: usize,
    progress_every: Option<Duration>,
    spec_of: impl Fn(u64) -> RunSpec + Send + Sync,
    run: F,
) -> SweepSummary
where
    F: Fn(&RunSpec) -> RunOutcome + Send + Sync,
{
    let start = Instant::now();
    let next = AtomicU64::new(first_seed);
    let stop = AtomicBool::new(false);
    let summary = Arc::new(Mutex::new(SweepSummary::default()));
    let last_progress = Mutex::new(Instant::now());
    std::thread::scope(|scope| {
        for _ in 0..jobs.max(1) {
            scope.spawn(|| loop {
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                let seed = next.fetch_add(1, Ordering::Relaxed);
                match budget {
                    Budget::Seeds(n) if seed >= first_seed.saturating_add(n) => return,
                    Budget::WallTime(d) if start.elapsed() >= d => return,
                    _ => {}
                }
                let spec = spec_of(seed);
                let outcome = run(&spec);
                let mut s = summary.lock().unwrap_or_else(|e| e.into_inner());
                s.seeds += 1;
                s.ops += outcome.ops;
                s.sim_secs += outcome.sim_secs;
                s.inconclusive += outcome.inconclusive;
                if let Some(failure) = &outcome.failure {
                    let msg = failure_message(&spec, failure);
                    eprintln!("{msg}");
                    s.failures.push((seed, msg));
                }
                if let Some(every) = progress_every {
                    let mut last = last_progress.lock().unwrap_or_else(|e| e.into_inner());
                    if last.elapsed() >= every {
                        *last = Instant::now();
                        let mut snapshot = s.clone();
                        snapshot.wall_secs = start.elapsed().as_secs_f64();
                        eprintln!("deadbolt-sim progress: {snapshot}");
                    }
                }
            });
        }
    });
    let mut s = Arc::try_unwrap(summary)
        .map(|m| m.into_inner().unwrap_or_else(|e| e.into_inner()))
        .unwrap_or_else(|arc| arc.lock().unwrap_or_else(|e| e.into_inner()).clone());
    s.wall_secs = start.elapsed().as_secs_f64();
    s.failures.sort_by_key(|(seed, _)| *seed);
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn env_defaults_and_errors() {
        let e = SweepEnv::parse(env(&[])).unwrap();
        assert_eq!(e.seeds, SEEDS_DEFAULT);
        assert_eq!(e.replay_seed, None);
        assert_eq!(e.overrides, Overrides::default());
        let e = SweepEnv::parse(env(&[
            ("DEADBOLT_SIM_SEED", "77"),
            ("DEADBOLT_SIM_MIX", "chaos"),
            ("DEADBOLT_SIM_SECS", "5"),
        ]))
        .unwrap();
        assert_eq!(e.replay_seed, Some(77));
        let spec = e.spec(77);
        assert_eq!(spec.mix, FaultMix::Chaos);
        assert_eq!(spec.secs, 5);
        assert_eq!(
            spec.replay_command(),
            "DEADBOLT_SIM_SEED=77 DEADBOLT_SIM_MIX=chaos DEADBOLT_SIM_SECS=5 \
             cargo sim --test sim replay -- --nocapture"
        );
        assert_eq!(spec.just_command(), None);
        assert_eq!(spec.regression_line(), "77 mix=chaos secs=5");
        let err = SweepEnv::parse(env(&[("DEADBOLT_SIM_SEEDS", "many")])).unwrap_err();
        assert!(err.0.contains("DEADBOLT_SIM_SEEDS=\"many\""), "{err}");
        assert!(SweepEnv::parse(env(&[("DEADBOLT_SIM_NODES", "4")])).is_err());
        assert!(SweepEnv::parse(env(&[("DEADBOLT_SIM_MIX", "storm")])).is_err());
    }

    #[test]
    fn seeds_rotate_mixes_and_replay_plainly() {
        let o = Overrides::default();
        let mixes: Vec<FaultMix> = (0..3).map(|s| RunSpec::for_seed(s, &o).mix).collect();
        assert_eq!(mixes, FaultMix::ALL.to_vec());
        let sizes: std::collections::BTreeSet<u64> =
            (0..200).map(|s| RunSpec::for_seed(s, &o).nodes).collect();
        assert_eq!(sizes, [1, 3, 5].into_iter().collect());
        let spec = RunSpec::for_seed(12, &o);
        assert_eq!(spec.just_command().as_deref(), Some("just sim-replay 12"));
        assert_eq!(spec.regression_line(), "12");
    }

    #[test]
    fn regressions_parse() {
        let text =
            "# seeds that once failed\n\n42 # fencing lost on torn write\n7 mix=network secs=9\n";
        let r = parse_regressions(text).unwrap();
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].seed, 42);
        assert_eq!(r[0].note, "fencing lost on torn write");
        assert_eq!(r[1].overrides.mix, Some(FaultMix::Network));
        assert_eq!(r[1].overrides.secs, Some(9));
        assert!(r[1].spec().check_determinism);
        assert!(parse_regressions("x").is_err());
        assert!(parse_regressions("1 color=red").is_err());
    }

    #[test]
    fn the_checked_in_regression_list_parses() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/regressions.txt");
        let text = std::fs::read_to_string(path).expect("sim/regressions.txt exists");
        parse_regressions(&text).expect("sim/regressions.txt parses");
    }

    #[test]
    fn sweep_runs_every_seed_once_and_reports_failures() {
        let summary = sweep(
            10,
            Budget::Seeds(30),
            3,
            None,
            |seed| RunSpec::for_seed(seed, &Overrides::default()),
            |spec| RunOutcome {
                sim_secs: 2.0,
                ops: spec.seed,
                failure: (spec.seed % 7 == 0).then(|| Failure {
                    checkers: vec!["raft".into()],
                    details: "two leaders".into(),
                }),
                inconclusive: 0,
            },
        );
        assert_eq!(summary.seeds, 30);
        assert_eq!(summary.ops, (10..40).sum::<u64>());
        let failed: Vec<u64> = summary.failures.iter().map(|(s, _)| *s).collect();
        assert_eq!(failed, vec![14, 21, 28, 35]);
        let msg = &summary.failures[0].1;
        assert!(msg.contains("seed 14") && msg.contains("[raft]"), "{msg}");
        assert!(msg.contains("DEADBOLT_SIM_SEED=14 cargo sim"), "{msg}");
        assert!(msg.contains("just sim-replay 14"), "{msg}");
        assert!(summary.to_string().contains("30 seed(s), 4 failed"));
    }
}
