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

#![cfg(madsim)]

use std::time::Duration;

use deadbolt_sim::sweep::{
    parse_regressions, sweep as run_sweep, Budget, SweepEnv, REGRESSIONS_FILE,
};
use deadbolt_sim::world::run_seed;

fn env() -> SweepEnv {
    SweepEnv::parse(|k| std::env::var(k).ok()).unwrap_or_else(|e| panic!("{e}"))
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
        |spec| run_seed(spec).0,
    );
    eprintln!("deadbolt-sim sweep: {summary}");
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
        let (outcome, _) = run_seed(&spec);
        if let Some(f) = outcome.failure {
            failures.push(deadbolt_sim::sweep::failure_message(&spec, &f));
        }
    }
    eprintln!(
        "deadbolt-sim regressions: {} seed(s) replayed, {} failed",
        list.len(),
        failures.len()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn replay() {
    let env = env();
    let Some(seed) = env.replay_seed else {
        return;
    };
    let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .without_time()
        .with_writer(std::io::stderr)
        .try_init();
    let mut spec = env.spec(seed);
    spec.verbose = true;
    spec.check_determinism = true;
    let wall = std::time::Instant::now();
    let (outcome, record) = run_seed(&spec);
    let wall_secs = wall.elapsed().as_secs_f64();
    if let Some(record) = &record {
        let timeline = record.timeline.render();
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target");
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join(format!("sim-timeline-{seed}.txt"));
        match std::fs::write(&path, &timeline) {
            Ok(()) => eprintln!("timeline written to {}", path.display()),
            Err(e) => eprintln!("could not write {}: {e}", path.display()),
        }
        println!("{timeline}");
        println!("{}", record.summary);
        println!("{}", record.report);
        println!(
            "trace hash {:#018x} over {} events; {:.1} sim-s in {wall_secs:.1} wall-s",
            record.trace.hash, record.trace.events, record.sim_secs
        );
    }
    if let Some(f) = outcome.failure {
        panic!("{}", deadbolt_sim::sweep::failure_message(&spec, &f));
    }
}
