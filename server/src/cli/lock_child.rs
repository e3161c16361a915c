//! `deadbolt lock-child` (hidden): the supervisor that `deadbolt lock` runs
//! its command under, so that the command and every process it forks stop
//! with the lease, and with the CLI itself if the CLI dies.
//!
//! The CLI starts this supervisor as the leader of a new process group; the
//! command inherits the group, and so does everything it forks, so one
//! `killpg` reaches them all. The supervisor asks the kernel for SIGTERM when
//! its parent dies (`PR_SET_PDEATHSIG`): if the CLI is killed, even by
//! SIGKILL, nobody keeps the lease alive any more, so the supervisor passes
//! SIGTERM to the group and SIGKILLs it after the grace. (The parent-death
//! signal is requested here rather than in the command itself because that
//! would need `pre_exec`, i.e. `unsafe`, which the workspace forbids.)
//!
//! While the CLI lives, it alone decides: a SIGTERM it sends to the group
//! reaches the supervisor too, which then only waits for the command.

use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use nix::sys::signal::{killpg, Signal};
use nix::unistd::{getpgrp, getppid};
use tokio::sync::oneshot;

use super::lock_cmd::child_exit_code;
use super::EXIT_LEASE_LOST;

#[derive(Debug, Args)]
pub struct LockChildArgs {
    /// Pid of the `deadbolt lock` process this supervisor works for.
    #[arg(long)]
    pub parent_pid: u32,
    /// SIGTERM-to-SIGKILL grace once the parent is gone, in ms.
    #[arg(long)]
    pub grace_ms: u64,
    /// The command to run, after `--`.
    #[arg(last = true, required = true, num_args = 1.., value_name = "CMD")]
    pub command: Vec<String>,
}

/// Signals this supervisor's whole process group (itself included: its own
/// SIGTERM is caught below, and a SIGKILL is meant to end it too).
fn signal_group(signal: Signal) {
    // ESRCH cannot happen (this process is in the group); nothing to do on
    // EPERM either.
    let _ = killpg(getpgrp(), signal);
}

fn parent_alive(parent_pid: u32) -> bool {
    u32::try_from(getppid().as_raw()).is_ok_and(|pid| pid == parent_pid)
}

pub(super) async fn run(args: LockChildArgs) -> anyhow::Result<u8> {
    // Handlers first, so that a SIGTERM between the two calls below is seen.
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    // Ctrl-C at a terminal reaches the whole foreground group; the command
    // decides what SIGINT means, the supervisor must outlive it to report
    // the command's status.
    let mut interrupt = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
        .context("installing the SIGINT handler")?;
    nix::sys::prctl::set_pdeathsig(Signal::SIGTERM).context("asking for a parent-death signal")?;
    // The parent may have died before the request above took effect.
    if !parent_alive(args.parent_pid) {
        return Ok(EXIT_LEASE_LOST);
    }

    let (program, rest) = args
        .command
        .split_first()
        .context("no command given after --")?;
    let mut child = std::process::Command::new(program)
        .args(rest)
        .spawn()
        .with_context(|| format!("starting {program:?}"))?;
    // std's wait blocks; a thread reports the exit so the runtime stays free
    // to watch for signals.
    let (exited_tx, mut exited) = oneshot::channel();
    std::thread::spawn(move || {
        let _ = exited_tx.send(child.wait());
    });

    loop {
        tokio::select! {
            biased;
            status = &mut exited => {
                let status = status.context("waiting for the command")??;
                return Ok(child_exit_code(status));
            }
            _ = terminate.recv() => {
                if parent_alive(args.parent_pid) {
                    // The CLI signalled the group; it escalates if needed.
                    continue;
                }
                eprintln!("deadbolt: the lock holder process is gone; stopping the command");
                signal_group(Signal::SIGTERM);
                let grace = Duration::from_millis(args.grace_ms);
                let _ = tokio::time::timeout(grace, &mut exited).await;
                // Whether or not the command went within the grace: what it
                // forked may ignore SIGTERM, and the lease leaves no time for
                // a second grace (the same rule as the CLI's lease-lost path).
                // This ends the supervisor too.
                signal_group(Signal::SIGKILL);
                return Ok(EXIT_LEASE_LOST);
            }
            _ = interrupt.recv() => {}
        }
    }
}
