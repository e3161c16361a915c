//! Micro-benchmark of the lock state machine: heap bytes per idle lock and
//! acquire/release applies per second with 1M live locks, on one core.
//!
//! Run: `cargo run --release -p deadbolt-core --example lock_bench [live_locks]`
//! Memory is measured by a counting global allocator (every heap byte the
//! state holds, including B-tree nodes, names and per-session lock sets).

use std::alloc::System;
use std::time::Instant;

use deadbolt_core::lock::{
    Acquire, Command, Envelope, Idempotency, Keepalive, LockStateMachine, Mode, OpenSession, Owner,
    Release, Reply,
};
use stats_alloc::{Region, StatsAlloc, INSTRUMENTED_SYSTEM};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

const LOCKS_PER_SESSION: usize = 10_000;

/// CPU time this thread has used, in seconds (utime + stime from
/// /proc/thread-self/stat), so figures stay honest on a shared, loaded
/// machine. None where /proc is missing.
fn thread_cpu_s() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").ok()?;
    // Fields after the parenthesised command name; utime and stime are the
    // 14th and 15th fields overall, in clock ticks (100 per second on Linux).
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

fn envelope(now_ms: u64, command: Command) -> Envelope {
    Envelope {
        now_ms,
        idempotency: None,
        command,
    }
}

fn main() {
    let live_locks: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let mut index = 0u64;
    let mut now_ms = 1_000u64;

    let region = Region::new(GLOBAL);
    let mut sm = LockStateMachine::new();
    let mut sessions = Vec::new();
    for _ in 0..live_locks.div_ceil(LOCKS_PER_SESSION) + 1 {
        index += 1;
        let open = envelope(
            now_ms,
            Command::OpenSession(OpenSession {
                ttl_ms: 60_000,
                name: "worker".into(),
            }),
        );
        match sm.apply(index, &open).reply {
            Reply::SessionOpened { session_id, .. } => sessions.push(session_id),
            other => panic!("open: {other:?}"),
        }
    }
    let worker = sessions.pop().expect("one spare session for the hot loop");
    let build = Instant::now();
    for i in 0..live_locks {
        index += 1;
        let acquire = envelope(
            now_ms,
            Command::Acquire(Acquire {
                lock: format!("lock/{i:08}"),
                owner: Owner::Session(sessions[i / LOCKS_PER_SESSION]),
                mode: Mode::Exclusive,
                wait_ms: 0,
            }),
        );
        let applied = sm.apply(index, &acquire);
        assert!(
            matches!(applied.reply, Reply::Acquired(_)),
            "{:?}",
            applied.reply
        );
    }
    let build_s = build.elapsed().as_secs_f64();
    let stats = region.change();
    let held_bytes = stats.bytes_allocated as i64 - stats.bytes_deallocated as i64;
    assert_eq!(sm.lock_count(), live_locks);
    println!(
        "live locks:             {live_locks} in {} sessions",
        sessions.len()
    );
    println!(
        "heap bytes per idle lock: {:.1} (state total {:.1} MiB, counting allocator)",
        held_bytes as f64 / live_locks as f64,
        held_bytes as f64 / (1024.0 * 1024.0)
    );
    println!(
        "build: {:.2} s ({:.0} acquires/s into a growing table)",
        build_s,
        live_locks as f64 / build_s
    );
    let snapshot = sm.snapshot();
    println!(
        "snapshot bytes per idle lock: {:.1}",
        snapshot.len() as f64 / live_locks as f64
    );
    drop(snapshot);

    // Hot loop: acquire then release fresh names that sort between the live
    // ones, so every apply walks the full 1M-entry tree. The envelope (and
    // its String) is built inside the timed loop, as decoding would.
    let pairs: u64 = 2_000_000;
    let start = Instant::now();
    let cpu_start = thread_cpu_s();
    for i in 0..pairs {
        now_ms += 1;
        let name = format!("lock/{:08}x", (i * 7_919) % live_locks as u64);
        index += 1;
        let token = index;
        let acquire = envelope(
            now_ms,
            Command::Acquire(Acquire {
                lock: name.clone(),
                owner: Owner::Session(worker),
                mode: Mode::Exclusive,
                wait_ms: 0,
            }),
        );
        let applied = sm.apply(index, &acquire);
        debug_assert!(matches!(applied.reply, Reply::Acquired(_)));
        index += 1;
        let release = envelope(
            now_ms,
            Command::Release(Release {
                lock: name,
                session_id: worker,
                fencing_token: Some(token),
            }),
        );
        let applied = sm.apply(index, &release);
        debug_assert_eq!(applied.reply, Reply::Released);
    }
    let secs = start.elapsed().as_secs_f64();
    let cpu_secs = thread_cpu_s()
        .zip(cpu_start)
        .map(|(end, start)| end - start);
    let applies = 2 * pairs;
    println!(
        "acquire/release with {live_locks} live locks: {:.2} M applies/s ({:.0} ns/apply, {} applies in {:.2} s)",
        applies as f64 / secs / 1e6,
        secs * 1e9 / applies as f64,
        applies,
        secs
    );
    if let Some(cpu) = cpu_secs {
        println!(
            "  per CPU-second of this thread: {:.2} M applies/s ({:.2} s CPU of {:.2} s wall)",
            applies as f64 / cpu / 1e6,
            cpu,
            secs
        );
    }
    assert_eq!(sm.lock_count(), live_locks);
    drop(sm);
    idempotency_memory();
}

/// Heap bytes per kept idempotency outcome: a fresh state, one session
/// whose keepalives carry keys shaped like the Rust client's
/// (`<16 hex>-<seq>`, 64 prefixes) and no acknowledgements (a client that
/// only follows the contract), so every outcome is kept (owned by the live
/// session) and nothing else grows.
fn idempotency_memory() {
    const OUTCOMES: u64 = 200_000;
    let mut sm = LockStateMachine::new();
    let open = Envelope {
        now_ms: 1_000,
        idempotency: None,
        command: Command::OpenSession(OpenSession {
            ttl_ms: 60_000,
            name: "worker".into(),
        }),
    };
    let Reply::SessionOpened { session_id, .. } = sm.apply(1, &open).reply else {
        panic!("the session opens");
    };
    let region = Region::new(GLOBAL);
    for i in 0..OUTCOMES {
        let envelope = Envelope {
            now_ms: 1_000 + i / 100,
            idempotency: Some(Idempotency {
                key: format!("{:016x}-{}", i % 64, i / 64 + 1),
                fingerprint: i,
                acked_below: None,
            }),
            command: Command::Keepalive(Keepalive { session_id }),
        };
        let applied = sm.apply(i + 2, &envelope);
        debug_assert!(!applied.reply.is_error());
    }
    let stats = region.change();
    let held = stats.bytes_allocated as i64 - stats.bytes_deallocated as i64;
    println!(
        "heap bytes per kept idempotency outcome: {:.1} ({OUTCOMES} outcomes, {:.1} MiB; the default bound of 1,000,000 would hold about {:.0} MiB)",
        held as f64 / OUTCOMES as f64,
        held as f64 / (1024.0 * 1024.0),
        held as f64 / OUTCOMES as f64 * 1_000_000.0 / (1024.0 * 1024.0)
    );
    // What a snapshot of that state costs the node (taken every
    // `snapshot_threshold_entries` applied entries, on the node's actor).
    let started = Instant::now();
    let bytes = sm.snapshot();
    let taken = started.elapsed();
    println!(
        "snapshot with {OUTCOMES} kept outcomes: {:.1} MiB in {:.1} ms ({:.0} ns per outcome)",
        bytes.len() as f64 / (1024.0 * 1024.0),
        taken.as_secs_f64() * 1e3,
        taken.as_nanos() as f64 / OUTCOMES as f64
    );
}
