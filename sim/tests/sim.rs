//! The simulation sweep, the regression list and single-seed replay, run by
//! `cargo sim` (madsim build, release). In a normal build this file is empty:
//! the checkers' own tests run there instead.
//!
//! - `sweep`: `DEADBOLT_SIM_SEEDS` seeds from `DEADBOLT_SIM_FIRST_SEED`
//!   (mixes rotate with the seed), or fresh seeds for
//!   `DEADBOLT_SIM_SOAK_MINUTES` minutes. Skipped when `DEADBOLT_SIM_SEED`
//!   asks for a replay.
//! - `regressions`: every line of `sim/regressions.txt`, with a
//!   determinism check.
//! - `replay`: `DEADBOLT_SIM_SEED` alone, with tracing and the timeline
//!   (printed and written to `target/sim-timeline-SEED.txt`).
//!
//! Every seed runs in a child process of this test binary (the `replay`
//! test in "child" mode). Why: tokio's `select!` draws from a per-thread
//! rng seeded from a process-wide counter, so any unbiased `select!` in the
//! code under test makes the N-th run of a process differ from the first.
//! A fresh process per run makes every run the first, so a seed found in a
//! sweep replays exactly, and the determinism check (two fresh processes,
//! same trace hash) tests what it should.

#![cfg(madsim)]

use std::process::Command;
use std::time::Duration;

use deadbolt_sim::sweep::{
    failure_message, parse_regressions, sweep as run_sweep, Budget, Failure, RunOutcome, RunSpec,
    SweepEnv, REGRESSIONS_FILE,
};
use deadbolt_sim::world::run_seed;

const CHILD_ENV: &str = "DEADBOLT_SIM_CHILD";
const TRACE_FILE_ENV: &str = "DEADBOLT_SIM_TRACE_FILE";

fn env() -> SweepEnv {
    SweepEnv::parse(|k| std::env::var(k).ok()).unwrap_or_else(|e| panic!("{e}"))
}

/// What a child run reported.
struct ChildRun {
    outcome: RunOutcome,
    /// (hash, events) of the run's trace.
    trace: Option<(u64, u64)>,
}

/// Runs `spec` in a fresh process (this binary's `replay` test in child
/// mode) and parses its report.
fn run_in_child(spec: &RunSpec, trace_file: Option<&std::path::Path>) -> ChildRun {
    let died = |why: String| ChildRun {
        outcome: RunOutcome {
            sim_secs: 0.0,
            ops: 0,
            failure: Some(Failure {
                checkers: vec!["crash".into()],
                details: why,
            }),
            inconclusive: 0,
        },
        trace: None,
    };
    let output = match child_command(spec, trace_file).output() {
        Ok(o) => o,
        Err(e) => return died(format!("  could not start the child process: {e}")),
    };
    match parse_child_report(&String::from_utf8_lossy(&output.stdout)) {
        Some(run) => run,
        None => {
            let stderr = String::from_utf8_lossy(&output.stderr);
            let tail: Vec<&str> = stderr.lines().rev().take(30).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            died(format!(
                "  the child process ended ({}) without a result:\n  {}",
                output.status,
                tail.join("\n  ")
            ))
        }
    }
}

/// This test binary in child mode for `spec`, with exactly the run's
/// `DEADBOLT_SIM_*` overrides in its environment.
fn child_command(spec: &RunSpec, trace_file: Option<&std::path::Path>) -> Command {
    let exe = std::env::current_exe().expect("the test binary knows its path");
    let mut cmd = Command::new(exe);
    cmd.args(["replay", "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, "1")
        .env("DEADBOLT_SIM_SEED", spec.seed.to_string())
        .env_remove("DEADBOLT_SIM_SOAK_MINUTES")
        .env_remove("RUST_LOG");
    for (key, value) in [
        (
            "DEADBOLT_SIM_MIX",
            spec.overrides.mix.map(|m| m.to_string()),
        ),
        (
            "DEADBOLT_SIM_NODES",
            spec.overrides.nodes.map(|n| n.to_string()),
        ),
        (
            "DEADBOLT_SIM_SECS",
            spec.overrides.secs.map(|s| s.to_string()),
        ),
    ] {
        match value {
            Some(v) => cmd.env(key, v),
            None => cmd.env_remove(key),
        };
    }
    match trace_file {
        Some(path) => cmd.env(TRACE_FILE_ENV, path),
        None => cmd.env_remove(TRACE_FILE_ENV),
    };
    cmd
}

/// The `@@` lines a child printed (see `child`); None without a result line.
fn parse_child_report(stdout: &str) -> Option<ChildRun> {
    let mut result = None;
    let mut checkers = Vec::new();
    let mut details = Vec::new();
    // libtest may print "test replay ... " on the line our output starts.
    let ours = stdout.lines().filter_map(|l| l.find("@@").map(|i| &l[i..]));
    for line in ours {
        if let Some(rest) = line.strip_prefix("@@result ") {
            let f: Vec<&str> = rest.split_whitespace().collect();
            if f.len() == 5 {
                result = Some((
                    f[0].parse::<f64>().unwrap_or(0.0),
                    f[1].parse::<u64>().unwrap_or(0),
                    f[2].parse::<u64>().unwrap_or(0),
                    u64::from_str_radix(f[3], 16).unwrap_or(0),
                    f[4].parse::<u64>().unwrap_or(0),
                ));
            }
        } else if let Some(rest) = line.strip_prefix("@@checkers ") {
            checkers = rest.split(',').map(str::to_owned).collect();
        } else if let Some(rest) = line.strip_prefix("@@detail ") {
            details.push(rest.to_owned());
        }
    }
    let (sim_secs, ops, inconclusive, hash, events) = result?;
    Some(ChildRun {
        outcome: RunOutcome {
            sim_secs,
            ops,
            failure: (!checkers.is_empty()).then(|| Failure {
                checkers,
                details: details.join("\n"),
            }),
            inconclusive,
        },
        trace: (events > 0).then_some((hash, events)),
    })
}

/// Runs `spec` in a child and, if asked, again in a second child; different
/// trace hashes fail the seed.
fn run_checked(spec: &RunSpec) -> RunOutcome {
    let first = run_in_child(spec, None);
    let mut outcome = first.outcome;
    if spec.check_determinism {
        let second = run_in_child(spec, None);
        if first.trace != second.trace {
            let line = format!(
                "  [determinism] same seed, different traces: run 1 {:?}, run 2 {:?} \
                 (hash, events); the replay shows the first differing event",
                first.trace, second.trace
            );
            match &mut outcome.failure {
                Some(f) => {
                    f.checkers.push("determinism".into());
                    f.details.push('\n');
                    f.details.push_str(&line);
                }
                None => {
                    outcome.failure = Some(Failure {
                        checkers: vec!["determinism".into()],
                        details: line,
                    })
                }
            }
        }
    }
    outcome
}

#[test]
fn sweep() {
    let env = env();
    if env.replay_seed.is_some() {
        eprintln!("DEADBOLT_SIM_SEED is set: the sweep is skipped (see `replay`)");
        return;
    }
    let (first, budget, progress) = match env.soak_minutes {
        Some(minutes) => {
            // A soak explores new seeds: start where the wall clock says
            // (printed, so any failure is still a plain seed to replay).
            let first = std::env::var("DEADBOLT_SIM_FIRST_SEED")
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or_else(|| {
                    std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map(|d| d.as_secs() * 1_000)
                        .unwrap_or(1)
                });
            eprintln!("deadbolt-sim soak: {minutes} minute(s) from seed {first}");
            (
                first,
                Budget::WallTime(Duration::from_secs(minutes * 60)),
                Some(Duration::from_secs(30)),
            )
        }
        None => (
            env.first_seed,
            Budget::Seeds(env.seeds),
            Some(Duration::from_secs(60)),
        ),
    };
    let summary = run_sweep(
        first,
        budget,
        env.jobs,
        progress,
        |seed| env.spec(seed),
        run_checked,
    );
    eprintln!("deadbolt-sim sweep: {summary}");
    // libtest hides a passing test's output: keep the numbers somewhere.
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/sim-sweep-summary.txt");
    let _ = std::fs::write(&path, format!("{summary}\n"));
    assert!(
        summary.failures.is_empty(),
        "{} seed(s) failed:\n{}",
        summary.failures.len(),
        summary
            .failures
            .iter()
            .map(|(_, m)| m.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// The checkers must catch a world that is known broken: nodes that lose
/// their whole disk (amnesia) break Raft, so a few such seeds must fail, and
/// for the right reasons. A harness that passes everything proves nothing.
#[test]
fn a_broken_world_is_caught() {
    if env().replay_seed.is_some() {
        return;
    }
    let overrides = deadbolt_sim::sweep::Overrides {
        mix: Some(deadbolt_sim::fault::FaultMix::Amnesia),
        nodes: Some(3),
        secs: Some(20),
    };
    let mut caught: std::collections::BTreeMap<String, u64> = Default::default();
    for seed in 1..=8 {
        let spec = RunSpec::for_seed(seed, &overrides);
        if let Some(f) = run_in_child(&spec, None).outcome.failure {
            for c in f.checkers {
                *caught.entry(c).or_default() += 1;
            }
        }
    }
    eprintln!("deadbolt-sim amnesia seeds 1..=8 caught by: {caught:?}");
    for checker in ["raft", "linearizability", "durability", "lock-safety"] {
        assert!(
            caught.get(checker).copied().unwrap_or(0) > 0,
            "no amnesia seed was caught by {checker}: {caught:?}"
        );
    }
}

#[test]
fn regressions() {
    if env().replay_seed.is_some() {
        return;
    }
    let path = format!("{}/{REGRESSIONS_FILE}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {path}: {e}"));
    let list = parse_regressions(&text).unwrap_or_else(|e| panic!("{path}: {e}"));
    let mut failures = Vec::new();
    for r in &list {
        let spec = r.spec();
        if let Some(f) = run_checked(&spec).failure {
            failures.push(failure_message(&spec, &f));
        }
    }
    eprintln!(
        "deadbolt-sim regressions: {} seed(s) replayed, {} failed",
        list.len(),
        failures.len()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Child mode: one run, results on stdout for the parent.
fn child(spec: &RunSpec) {
    let (outcome, record) = run_seed(spec);
    let (hash, events) = record
        .as_ref()
        .map_or((0, 0), |r| (r.trace.hash, r.trace.events));
    if let (Some(path), Some(r)) = (std::env::var_os(TRACE_FILE_ENV), &record) {
        if let Some(lines) = &r.trace.lines {
            let _ = std::fs::write(path, lines.join("\n"));
        }
    }
    println!(
        "@@result {} {} {} {hash:x} {events}",
        outcome.sim_secs, outcome.ops, outcome.inconclusive
    );
    if let Some(f) = outcome.failure {
        println!("@@checkers {}", f.checkers.join(","));
        for line in f.details.lines() {
            println!("@@detail {line}");
        }
    }
}

#[test]
fn replay() {
    let env = env();
    let Some(seed) = env.replay_seed else {
        return;
    };
    let mut spec = env.spec(seed);
    if std::env::var_os(CHILD_ENV).is_some() {
        spec.check_determinism = false;
        // Trace lines are kept only when someone will diff them.
        spec.verbose = std::env::var_os(TRACE_FILE_ENV).is_some();
        child(&spec);
        return;
    }
    let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .without_time()
        .with_writer(std::io::stderr)
        .try_init();
    spec.verbose = true;
    let wall = std::time::Instant::now();
    let (mut outcome, record) = run_seed(&spec);
    let wall_secs = wall.elapsed().as_secs_f64();
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target");
    let _ = std::fs::create_dir_all(&dir);
    if let Some(record) = &record {
        let timeline = record.timeline.render();
        let path = dir.join(format!("sim-timeline-{seed}.txt"));
        match std::fs::write(&path, &timeline) {
            Ok(()) => eprintln!("timeline written to {}", path.display()),
            Err(e) => eprintln!("could not write {}: {e}", path.display()),
        }
        println!("{timeline}");
        println!("{}", record.summary);
        println!("{}", record.report);
        println!(
            "trace hash {:#018x} over {} events; {:.1} sim-s in {wall_secs:.2} wall-s",
            record.trace.hash, record.trace.events, record.sim_secs
        );
        // Determinism: the same seed in a fresh process must trace the
        // same; on a difference, show the first differing event.
        let trace_path = dir.join(format!("sim-trace-{seed}.txt"));
        let again = run_in_child(&spec, Some(&trace_path));
        if let Some(f) = &again.outcome.failure {
            eprintln!(
                "the fresh process reported: {} {}",
                f.checkers.join(","),
                f.details
            );
        }
        if again.trace != Some((record.trace.hash, record.trace.events)) {
            let theirs = std::fs::read_to_string(&trace_path).unwrap_or_default();
            let mine = record.trace.lines.clone().unwrap_or_default();
            let first_diff = mine
                .iter()
                .zip(theirs.lines())
                .position(|(a, b)| a != b)
                .unwrap_or(mine.len().min(theirs.lines().count()));
            let line = format!(
                "  [determinism] a fresh process traced differently ({:?} vs {:?}) from event #{first_diff}:\n    here:  {}\n    there: {}",
                Some((record.trace.hash, record.trace.events)),
                again.trace,
                mine.get(first_diff).map_or("(end)", |s| s.as_str()),
                theirs.lines().nth(first_diff).unwrap_or("(end)")
            );
            match &mut outcome.failure {
                Some(f) => {
                    f.checkers.push("determinism".into());
                    f.details.push('\n');
                    f.details.push_str(&line);
                }
                None => {
                    outcome.failure = Some(Failure {
                        checkers: vec!["determinism".into()],
                        details: line,
                    })
                }
            }
        } else {
            println!("determinism: a fresh process traced the same");
        }
    }
    if let Some(f) = outcome.failure {
        panic!("{}", failure_message(&spec, &f));
    }
}
