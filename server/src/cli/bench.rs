//! `deadbolt bench`: acquire→release cycles against a running cluster, one
//! session per worker, for each concurrency level in turn. Reports cycles/s,
//! latency percentiles, error counts by code, and fencing-token
//! monotonicity violations (a grant whose token is not above every token
//! granted before it on the same lock while exclusive).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, ValueEnum};
use deadbolt_client::api::LockMode;
use deadbolt_client::{Client, ClientBuilder, SessionOptions};
use serde::Serialize;
use tokio::time::Instant;

use super::{parse_seconds, EXIT_ERROR, EXIT_OK};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Workload {
    /// Every worker cycles its own lock.
    Uncontended,
    /// Every worker cycles the same lock, waiting in its queue.
    Contended,
}

/// Which client the workers are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BenchClient {
    /// The Rust client as shipped: follows the `Deadbolt-Leader` hint and
    /// acknowledges its keys (`Idempotency-Acked-Below`).
    Own,
    /// A client written from the contract alone: worker i talks to endpoint
    /// i mod n (no leader following), a fresh `Idempotency-Key` on every
    /// mutation and no acknowledgements, sessions kept alive.
    Generic,
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Which client the workers are.
    #[arg(long, value_enum, default_value_t = BenchClient::Own)]
    pub client: BenchClient,
    /// Every worker on its own lock (uncontended) or all on one (contended).
    #[arg(long, value_enum, default_value_t = Workload::Uncontended)]
    pub workload: Workload,
    /// Concurrency levels to run, one after the other.
    #[arg(
        short = 'c',
        long = "concurrency",
        value_delimiter = ',',
        default_value = "1,16,64,256"
    )]
    pub concurrency: Vec<usize>,
    /// Seconds measured per level.
    #[arg(long, value_parser = parse_seconds, default_value = "10")]
    pub duration: Duration,
    /// Seconds run before measuring each level (sessions opened, connections
    /// warm, the leader's batches at their steady size); not counted.
    #[arg(long, value_parser = parse_warmup_seconds, default_value = "2")]
    pub warmup: Duration,
    /// Seconds between progress lines during each level (0: none): cycles/s
    /// and errors in the interval, and each node's resident memory and
    /// effective idempotency window from its /metrics. For soaks
    /// (`--duration 1800 --report-every 60`).
    #[arg(long, value_parser = parse_warmup_seconds, default_value = "0")]
    pub report_every: Duration,
}

/// Live totals the workers add to, read by the progress reporter.
#[derive(Debug, Default)]
struct Progress {
    cycles: AtomicU64,
    errors: std::sync::Mutex<BTreeMap<String, u64>>,
}

impl Progress {
    fn error(&self, label: String) {
        let mut errors = self.errors.lock().unwrap_or_else(|e| e.into_inner());
        *errors.entry(label).or_default() += 1;
    }

    fn errors(&self) -> BTreeMap<String, u64> {
        self.errors
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// One progress line of a level.
#[derive(Debug, Serialize)]
struct ProgressReport {
    elapsed_s: f64,
    cycles_per_second: f64,
    /// Errors in the interval by code (`unavailable`: refusals).
    errors: BTreeMap<String, u64>,
    /// Per endpoint, in the order given: resident memory in MiB.
    rss_mib: Vec<Option<f64>>,
    /// Per endpoint: `deadbolt_idempotency_window_seconds`.
    idempotency_window_s: Vec<Option<f64>>,
}

/// A metric's value in a Prometheus text page.
fn metric(page: &str, name: &str) -> Option<f64> {
    page.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|value| value.trim().parse().ok())
}

/// Prints a [`ProgressReport`] every `every` from `from` until `until`.
async fn report_progress(
    metrics: Client,
    endpoints: usize,
    progress: Arc<Progress>,
    every: Duration,
    from: Instant,
    until: Instant,
    json: bool,
) {
    let (mut cycles_before, mut errors_before) = (0, BTreeMap::new());
    let mut next = from + every;
    while next <= until {
        tokio::time::sleep_until(next).await;
        let cycles = progress.cycles.load(Ordering::Relaxed);
        let errors = progress.errors();
        let interval: BTreeMap<String, u64> = errors
            .iter()
            .map(|(code, n)| {
                (
                    code.clone(),
                    n - errors_before.get(code).copied().unwrap_or(0),
                )
            })
            .filter(|(_, n)| *n > 0)
            .collect();
        let mut report = ProgressReport {
            elapsed_s: (next - from).as_secs_f64(),
            cycles_per_second: (cycles - cycles_before) as f64 / every.as_secs_f64(),
            errors: interval,
            rss_mib: Vec::new(),
            idempotency_window_s: Vec::new(),
        };
        for i in 0..endpoints {
            let page = metrics.metrics(i).await.ok();
            let page = page.as_deref().unwrap_or("");
            report
                .rss_mib
                .push(metric(page, "process_resident_memory_bytes").map(|b| b / (1024.0 * 1024.0)));
            report
                .idempotency_window_s
                .push(metric(page, "deadbolt_idempotency_window_seconds"));
        }
        print_progress(&report, json);
        (cycles_before, errors_before) = (cycles, errors);
        next += every;
    }
}

fn print_progress(report: &ProgressReport, json: bool) {
    if json {
        if let Ok(line) = serde_json::to_string(report) {
            println!("{line}");
        }
        return;
    }
    let show = |values: &[Option<f64>]| -> String {
        let shown: Vec<String> = values
            .iter()
            .map(|v| v.map_or("?".to_owned(), |v| format!("{v:.0}")))
            .collect();
        shown.join("/")
    };
    let errors: Vec<String> = report
        .errors
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    println!(
        "  {:>7.0}s {:>10.1} cycles/s  rss MiB {}  window s {}  errors {}",
        report.elapsed_s,
        report.cycles_per_second,
        show(&report.rss_mib),
        show(&report.idempotency_window_s),
        if errors.is_empty() {
            "-".to_owned()
        } else {
            errors.join(" ")
        }
    );
}

/// Whole seconds, zero allowed (no warmup).
fn parse_warmup_seconds(text: &str) -> Result<Duration, String> {
    text.parse::<u64>()
        .map(Duration::from_secs)
        .map_err(|_| format!("{text:?} is not a whole number of seconds"))
}

/// What one level measured.
#[derive(Debug, Clone, Serialize)]
struct LevelReport {
    client: BenchClient,
    workload: Workload,
    concurrency: usize,
    /// Acquire+release cycles completed in the measured window; in the
    /// contended workload each cycle is one handoff of the shared lock.
    cycles: u64,
    cycles_per_second: f64,
    /// Latency of the whole cycle (acquire, then release).
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    acquire: Latency,
    release: Latency,
    errors: BTreeMap<String, u64>,
    token_violations: u64,
}

/// Percentiles of one operation, in milliseconds.
#[derive(Debug, Clone, Serialize)]
struct Latency {
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
}

impl Latency {
    fn of(sorted_us: &[u64]) -> Self {
        Self {
            p50_ms: percentile_ms(sorted_us, 0.50),
            p99_ms: percentile_ms(sorted_us, 0.99),
            max_ms: sorted_us.last().map_or(0.0, |&us| us as f64 / 1000.0),
        }
    }
}

fn micros(d: Duration) -> u64 {
    d.as_micros().try_into().unwrap_or(u64::MAX)
}

#[derive(Debug, Default)]
struct WorkerStats {
    latencies_us: Vec<u64>,
    acquire_us: Vec<u64>,
    release_us: Vec<u64>,
    errors: BTreeMap<String, u64>,
    violations: u64,
}

fn error_label(error: &deadbolt_client::Error) -> String {
    match error.code() {
        Some(code) => code.as_str().to_owned(),
        None => match error {
            deadbolt_client::Error::DeadlineExceeded { .. } => "deadline_exceeded".into(),
            deadbolt_client::Error::Transport { .. } => "transport".into(),
            deadbolt_client::Error::LeaseLost => "lease_lost".into(),
            _ => "other".into(),
        },
    }
}

async fn worker(
    client: Client,
    workload: Workload,
    lock_name: String,
    measure_from: Instant,
    until: Instant,
    newest_token: Arc<AtomicU64>,
    progress: Arc<Progress>,
) -> WorkerStats {
    let mut stats = WorkerStats::default();
    let session = match client.session(SessionOptions::default()).await {
        Ok(session) => session,
        Err(error) => {
            *stats.errors.entry(error_label(&error)).or_default() += 1;
            return stats;
        }
    };
    let wait = match workload {
        Workload::Uncontended => Duration::ZERO,
        Workload::Contended => Duration::from_secs(10),
    };
    while Instant::now() < until {
        let started = Instant::now();
        // Cycles that start in the warmup are run but not counted.
        let measured = started >= measure_from;
        let lock = match session.lock(&lock_name, LockMode::Exclusive, wait).await {
            Ok(lock) => lock,
            Err(error) => {
                *stats.errors.entry(error_label(&error)).or_default() += 1;
                progress.error(error_label(&error));
                if session.is_lost() {
                    break;
                }
                continue;
            }
        };
        // Exclusive grants of one lock: each must be above every earlier one.
        let acquired = started.elapsed();
        let token = lock.fencing_token();
        let before = newest_token.fetch_max(token, Ordering::SeqCst);
        if before >= token {
            stats.violations += 1;
        }
        let releasing = Instant::now();
        match lock.release().await {
            Ok(()) if measured => {
                progress.cycles.fetch_add(1, Ordering::Relaxed);
                stats.latencies_us.push(micros(started.elapsed()));
                stats.acquire_us.push(micros(acquired));
                stats.release_us.push(micros(releasing.elapsed()));
            }
            Ok(()) => {}
            Err(error) => {
                *stats.errors.entry(error_label(&error)).or_default() += 1;
                progress.error(error_label(&error));
            }
        }
    }
    let _ = session.close().await;
    stats
}

fn percentile_ms(sorted_us: &[u64], p: f64) -> f64 {
    if sorted_us.is_empty() {
        return 0.0;
    }
    let rank = ((p * sorted_us.len() as f64).ceil() as usize).clamp(1, sorted_us.len());
    sorted_us[rank - 1] as f64 / 1000.0
}

/// The client of worker `i`.
fn worker_client(endpoints: &[String], client: BenchClient, i: usize) -> anyhow::Result<Client> {
    let builder = match client {
        BenchClient::Own => ClientBuilder::new(endpoints.iter().cloned()),
        BenchClient::Generic => {
            let start = i % endpoints.len();
            let rotated = endpoints[start..]
                .iter()
                .chain(&endpoints[..start])
                .cloned();
            ClientBuilder::new(rotated)
                .follow_leader(false)
                .acknowledge_keys(false)
        }
    };
    builder.build().context("configuring the client")
}

async fn run_level(
    endpoints: &[String],
    args: &BenchArgs,
    concurrency: usize,
    run: u64,
    json: bool,
) -> anyhow::Result<LevelReport> {
    // The own client is shared by every worker, as an application would.
    let shared_client = worker_client(endpoints, BenchClient::Own, 0)?;
    let measure_from = Instant::now() + args.warmup;
    let until = measure_from + args.duration;
    let progress = Arc::new(Progress::default());
    let reporter = (!args.report_every.is_zero()).then(|| {
        tokio::spawn(report_progress(
            shared_client.clone(),
            endpoints.len(),
            progress.clone(),
            args.report_every,
            measure_from,
            until,
            json,
        ))
    });
    let mut tasks = Vec::with_capacity(concurrency);
    // One counter per lock: one shared lock when contended, one per worker
    // otherwise.
    let shared = Arc::new(AtomicU64::new(0));
    for i in 0..concurrency {
        let (name, newest) = match args.workload {
            Workload::Contended => (format!("bench/{run}/contended"), shared.clone()),
            Workload::Uncontended => (format!("bench/{run}/w{i}"), Arc::new(AtomicU64::new(0))),
        };
        let client = match args.client {
            BenchClient::Own => shared_client.clone(),
            BenchClient::Generic => worker_client(endpoints, args.client, i)?,
        };
        tasks.push(tokio::spawn(worker(
            client,
            args.workload,
            name,
            measure_from,
            until,
            newest,
            progress.clone(),
        )));
    }
    let mut latencies = Vec::new();
    let mut acquire = Vec::new();
    let mut release = Vec::new();
    let mut errors = BTreeMap::new();
    let mut violations = 0;
    for task in tasks {
        match task.await {
            Ok(stats) => {
                latencies.extend(stats.latencies_us);
                acquire.extend(stats.acquire_us);
                release.extend(stats.release_us);
                for (code, n) in stats.errors {
                    *errors.entry(code).or_default() += n;
                }
                violations += stats.violations;
            }
            Err(error) => {
                *errors
                    .entry(format!("worker_panicked: {error}"))
                    .or_default() += 1
            }
        }
    }
    if let Some(reporter) = reporter {
        reporter.abort();
    }
    // Cycles started in the window and finished (workers stop starting new
    // ones at `until`), over the window's length.
    let elapsed = args.duration.as_secs_f64().max(1e-9);
    latencies.sort_unstable();
    acquire.sort_unstable();
    release.sort_unstable();
    Ok(LevelReport {
        client: args.client,
        workload: args.workload,
        concurrency,
        cycles: latencies.len() as u64,
        cycles_per_second: latencies.len() as f64 / elapsed,
        p50_ms: percentile_ms(&latencies, 0.50),
        p99_ms: percentile_ms(&latencies, 0.99),
        max_ms: latencies
            .last()
            .map(|&us| us as f64 / 1000.0)
            .unwrap_or(0.0),
        acquire: Latency::of(&acquire),
        release: Latency::of(&release),
        errors,
        token_violations: violations,
    })
}

pub(super) async fn run(endpoints: Vec<String>, args: BenchArgs, json: bool) -> anyhow::Result<u8> {
    if endpoints.is_empty() {
        anyhow::bail!("no endpoints");
    }
    if args.concurrency.contains(&0) {
        anyhow::bail!("--concurrency levels must be at least 1");
    }
    // Distinct lock names per invocation, so leftovers of an earlier run
    // (locks whose sessions have not expired yet) do not interfere.
    let run = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let mut reports = Vec::new();
    if !json {
        println!(
            "{:<8} {:<12} {:>5} {:>9} {:>10} {:>9} {:>9} {:>9} {:>15} {:>15} {:>10}  errors",
            "client",
            "workload",
            "c",
            "cycles",
            "cycles/s",
            "p50 ms",
            "p99 ms",
            "max ms",
            "acq p50/p99",
            "rel p50/p99",
            "violations"
        );
    }
    for &c in &args.concurrency {
        let report = run_level(&endpoints, &args, c, run, json).await?;
        if json {
            println!("{}", serde_json::to_string(&report)?);
        } else {
            let errors: Vec<String> = report
                .errors
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            println!(
                "{:<8} {:<12} {:>5} {:>9} {:>10.1} {:>9.2} {:>9.2} {:>9.2} {:>15} {:>15} {:>10}  {}",
                format!("{:?}", report.client).to_lowercase(),
                format!("{:?}", report.workload).to_lowercase(),
                report.concurrency,
                report.cycles,
                report.cycles_per_second,
                report.p50_ms,
                report.p99_ms,
                report.max_ms,
                format!("{:.2}/{:.2}", report.acquire.p50_ms, report.acquire.p99_ms),
                format!("{:.2}/{:.2}", report.release.p50_ms, report.release.p99_ms),
                report.token_violations,
                if errors.is_empty() {
                    "-".to_owned()
                } else {
                    errors.join(" ")
                }
            );
        }
        reports.push(report);
    }
    // Fencing violations are a correctness failure, not a performance result.
    let violated = reports.iter().any(|r| r.token_violations > 0);
    Ok(if violated { EXIT_ERROR } else { EXIT_OK })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_are_read_by_exact_name() {
        let page = "# HELP x\nprocess_resident_memory_bytes 1048576\nprocess_resident_memory_bytes_total 9\n";
        assert_eq!(
            metric(page, "process_resident_memory_bytes"),
            Some(1048576.0)
        );
        assert_eq!(metric(page, "deadbolt_idempotency_window_seconds"), None);
    }

    #[test]
    fn percentiles() {
        let v: Vec<u64> = (1..=100).map(|i| i * 1000).collect();
        assert_eq!(percentile_ms(&v, 0.5), 50.0);
        assert_eq!(percentile_ms(&v, 0.99), 99.0);
        assert_eq!(percentile_ms(&[], 0.5), 0.0);
    }
}
