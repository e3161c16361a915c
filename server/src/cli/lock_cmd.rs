//! `deadbolt lock NAME [--shared] [--ttl-ms N] [--wait-ms N] -- CMD ARGS...`:
//! run CMD while holding a lock.
//!
//! The child learns its grant from `DEADBOLT_LOCK`, `DEADBOLT_FENCING_TOKEN`
//! and `DEADBOLT_SESSION_ID`. When the client can no longer vouch for the
//! lease (its lost-lease signal), the child gets SIGTERM and then SIGKILL
//! after a grace period that ends before the server could have let the
//! lease run out: the signal fires at `ttl × (1 − drift)` after the last
//! confirmed keepalive was sent, and the grace is half of the remaining
//! `ttl × drift`.
//!
//! The command runs under a supervisor (`deadbolt lock-child`, see
//! `lock_child.rs`) that leads a process group of its own: every signal
//! goes to the whole group, so processes the command forked stop with it,
//! and the supervisor stops the group by itself if this process dies. When
//! the command exits, whatever it left running in its group is stopped
//! before the lock is released: nothing the command started outlives the
//! lock. A command that leaves the group (`setsid`, `setpgid`, as `timeout`
//! does) still gets SIGTERM and SIGKILL, from the supervisor; what it forks
//! outside the group, other than into a group it leads, is not reached.
//! At a terminal the group gets the foreground (the command can read
//! the terminal, and Ctrl-C reaches it directly) and gives it back at the end.
//! Known gap: Ctrl-Z at a terminal stops the command's group but not this
//! process, which keeps the lease alive and the terminal stays with the
//! stopped group (stop it with SIGTERM to this process from elsewhere);
//! proper job control (stop too, re-check the lease on SIGCONT) is not built.

use std::process::ExitStatus;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use deadbolt_client::api::{AcquireResponse, LockMode, SESSION_TTL_MS_DEFAULT};
use deadbolt_client::{Client, Error, Lock, Session, SessionOptions};
use nix::sys::signal::{killpg, SigSet, Signal};
use nix::unistd::{getpgrp, tcgetpgrp, tcsetpgrp, Pid};
use std::os::unix::process::CommandExt as _;
use tokio::sync::oneshot;

use super::lock_child::lock_child_command;
use super::{EXIT_ERROR, EXIT_LEASE_LOST};

#[derive(Debug, Args)]
pub struct LockArgs {
    /// Lock name.
    pub name: String,
    /// Shared instead of exclusive mode.
    #[arg(long)]
    pub shared: bool,
    /// Lease TTL of the session that holds the lock. `lock` renews it while
    /// the command runs, so it only bounds how long the lock outlives a
    /// `lock` that dies (shorter than `acquire`'s 30 s, which nothing renews).
    #[arg(long, default_value_t = SESSION_TTL_MS_DEFAULT)]
    pub ttl_ms: u64,
    /// Wait at most this long for the lock (default: until it is granted).
    #[arg(long)]
    pub wait_ms: Option<u64>,
    /// The command to run, after `--`.
    #[arg(last = true, required = true, num_args = 1.., value_name = "CMD")]
    pub command: Vec<String>,
}

/// This very binary, for the supervisor. Not `current_exe()`: a binary
/// replaced or removed while `lock` waits (an upgrade) reads there as
/// "/path (deleted)", which cannot be started, while this link still opens
/// the running file, so the supervisor is also of the CLI's own version.
pub(super) const SELF_EXE: &str = "/proc/self/exe";

/// SIGTERM-to-SIGKILL grace: half of the lease margin the client keeps.
pub(super) fn kill_grace(ttl: Duration, drift_allowance: f64) -> Duration {
    ttl.mul_f64(drift_allowance / 2.0)
}

/// Waits for the lock: `wait` if given, else as long as it takes (the
/// client asks again before each longest wait ends, keeping the place in
/// the queue).
async fn acquire(
    session: &Session,
    name: &str,
    mode: LockMode,
    wait: Option<u64>,
) -> Result<Lock, Error> {
    match wait {
        Some(ms) => session.lock(name, mode, Duration::from_millis(ms)).await,
        None => session.lock_until_granted(name, mode).await,
    }
}

/// Exit status to report for the child's own status.
pub(super) fn child_exit_code(status: ExitStatus) -> u8 {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => u8::try_from(code).unwrap_or(EXIT_ERROR),
        // The shell convention for "killed by signal N".
        (None, Some(signal)) => u8::try_from(128 + signal).unwrap_or(EXIT_ERROR),
        (None, None) => EXIT_ERROR,
    }
}

/// Signals the command's process group; true if any member was there.
fn signal_group(group: Pid, signal: Signal) -> bool {
    // ESRCH: every member has exited already.
    killpg(group, signal).is_ok()
}

/// Stops what the command left behind in its group after it exited: SIGTERM,
/// then SIGKILL once `grace` has passed with members still there.
async fn stop_leftovers(group: Pid, grace: Duration) {
    if !signal_group(group, Signal::SIGTERM) {
        return;
    }
    tracing::info!("the command left processes running; stopping them");
    let deadline = tokio::time::Instant::now() + grace;
    // Bounded poll: the group is gone once its last member is reaped (by init,
    // since their parent, the supervisor, has exited).
    while tokio::time::Instant::now() < deadline {
        if killpg(group, None).is_err() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    signal_group(group, Signal::SIGKILL);
}

/// The terminal's foreground, lent to the command's group while it runs when
/// this process has it (stdin is a terminal and this process's group is its
/// foreground), so the command can read the terminal and gets Ctrl-C.
struct Foreground {
    own_group: Pid,
}

impl Foreground {
    fn lend_to(group: Pid) -> Option<Foreground> {
        let stdin = std::io::stdin();
        let own_group = getpgrp();
        if tcgetpgrp(&stdin).ok()? != own_group {
            return None;
        }
        tcsetpgrp(&stdin, group).ok()?;
        Some(Foreground { own_group })
    }
}

impl Drop for Foreground {
    fn drop(&mut self) {
        // A background group that sets the foreground gets SIGTTOU unless it
        // blocks it (POSIX tcsetpgrp); block it around the call only, on this
        // thread, so no child inherits the mask.
        let mut ttou = SigSet::empty();
        ttou.add(Signal::SIGTTOU);
        let blocked = ttou.thread_block().is_ok();
        let _ = tcsetpgrp(std::io::stdin(), self.own_group);
        if blocked {
            let _ = ttou.thread_unblock();
        }
    }
}

pub(super) async fn run(client: Client, args: LockArgs, json: bool) -> anyhow::Result<u8> {
    let options = SessionOptions {
        ttl: Duration::from_millis(args.ttl_ms),
        name: Some(format!("deadbolt lock {}", args.name)),
        ..SessionOptions::default()
    };
    let drift_allowance = options.drift_allowance;
    let session = client.session(options).await.context("opening a session")?;
    // From the TTL the server granted, which the lease deadline uses too:
    // a grace from a longer TTL asked for would outlast the lease.
    let grace = kill_grace(session.ttl(), drift_allowance);
    let mode = if args.shared {
        LockMode::Shared
    } else {
        LockMode::Exclusive
    };
    let lock = acquire(&session, &args.name, mode, args.wait_ms).await?;
    tracing::info!(lock = %args.name, token = lock.fencing_token(), "acquired; running the command");
    if json {
        // The grant, as `acquire --json` prints it, before the command's own
        // output: a script learns the token without parsing the command's.
        super::output::print_json(&AcquireResponse {
            lock: args.name.clone(),
            mode,
            session_id: session.id(),
            fencing_token: lock.fencing_token(),
        });
    }

    if args.command.is_empty() {
        anyhow::bail!("no command given after --");
    }
    // Spawned from the thread that drives this future, which lives as long
    // as the process (the parent-death signal follows the spawning thread).
    let grace_ms = u64::try_from(grace.as_millis()).unwrap_or(u64::MAX);
    let mut child = lock_child_command(false, json, grace_ms, &args.command)
        .env("DEADBOLT_LOCK", &args.name)
        .env("DEADBOLT_FENCING_TOKEN", lock.fencing_token().to_string())
        .env("DEADBOLT_SESSION_ID", session.id().to_string())
        .process_group(0)
        .spawn()
        .context("starting the command's supervisor (deadbolt lock-child)")?;
    let group = Pid::from_raw(i32::try_from(child.id()).context("child pid out of range")?);
    let foreground = Foreground::lend_to(group);
    // std's wait blocks; a thread reports the exit so the runtime stays free
    // to watch the lease.
    let (exited_tx, mut exited) = oneshot::channel();
    std::thread::spawn(move || {
        let _ = exited_tx.send(child.wait());
    });

    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    let status = loop {
        tokio::select! {
            // The command's exit first: once it has exited there is nothing
            // left to stop but its leftovers, handled after the loop.
            biased;
            status = &mut exited => break Some(status.context("waiting for the command")??),
            reason = lock.lost() => {
                eprintln!("deadbolt: lease lost ({reason:?}); stopping the command");
                signal_group(group, Signal::SIGTERM);
                let exited_in_grace = tokio::time::timeout(grace, &mut exited).await.is_ok();
                // The command, or its leftovers, which had their SIGTERM with
                // the rest: the lease margin leaves no time for a second grace.
                signal_group(group, Signal::SIGKILL);
                if !exited_in_grace {
                    let _ = exited.await;
                }
                break None;
            }
            // Asked to stop: pass it on to the command, keep the lock until
            // it exits, then release as usual.
            _ = tokio::signal::ctrl_c() => { signal_group(group, Signal::SIGTERM); }
            _ = terminate.recv() => { signal_group(group, Signal::SIGTERM); }
        }
    };
    drop(foreground);
    let Some(status) = status else {
        if json {
            println!(
                r#"{{"error": {{"code": "lease_lost", "message": "lease lost; command stopped"}}}}"#
            );
        }
        return Ok(EXIT_LEASE_LOST);
    };
    stop_leftovers(group, grace).await;
    if let Err(error) = lock.release().await {
        tracing::warn!(%error, "releasing the lock failed; the session's end releases it");
    }
    if let Err(error) = session.close().await {
        tracing::warn!(%error, "closing the session failed; its lease will run out");
    }
    Ok(child_exit_code(status))
}

// The tests that run a command go through the real binary (the supervisor
// is the binary itself): `server/tests/lock_cmd.rs`.
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grace_ends_before_the_lease_can_run_out() {
        let ttl = Duration::from_secs(10);
        let grace = kill_grace(ttl, 0.1);
        assert_eq!(grace, Duration::from_millis(500));
        // lost fires at ttl×0.9 after sending; SIGKILL at ttl×0.95 < ttl.
        assert!(ttl.mul_f64(0.9) + grace < ttl);
    }
}
