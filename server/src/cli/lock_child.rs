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
//!
//! A command can leave the group (`setsid`, `setpgid`: `timeout`, `setsid`,
//! shells with job control do), and group signals then miss it. So the
//! supervisor passes every SIGTERM on to a command outside its group (to
//! the command's own group when it leads one), and the command is started
//! through `lock-child --exec`, which asks for SIGKILL when the supervisor
//! dies and then becomes the command (`exec`, same pid): the SIGKILL that
//! ends the group ends such a command too. What a command forks outside
//! the group, other than into a group the command leads, is out of reach.

use std::os::unix::process::CommandExt as _;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use nix::sys::signal::{kill, killpg, Signal};
use nix::sys::wait::{waitid, Id, WaitPidFlag};
use nix::unistd::{getpgid, getpgrp, getppid, Pid};
use tokio::signal::unix::{signal as signals, Signal as Signals, SignalKind};
use tokio::sync::oneshot;

use super::lock_cmd::{child_exit_code, SELF_EXE};
use super::{EXIT_CANNOT_EXECUTE, EXIT_LEASE_LOST, EXIT_NOT_FOUND};

#[derive(Debug, Args)]
pub struct LockChildArgs {
    /// Pid of the `deadbolt lock` process this supervisor works for.
    #[arg(long)]
    pub parent_pid: u32,
    /// SIGTERM-to-SIGKILL grace once the parent is gone, in ms.
    #[arg(long)]
    pub grace_ms: u64,
    /// Be the command: ask for SIGKILL when the parent (the supervisor)
    /// dies, then exec the command.
    #[arg(long)]
    pub exec: bool,
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

/// Signals the command if it has left this supervisor's group, which group
/// signals then miss: its own group when it leads one, else the command.
/// The command is not reaped before this supervisor is done with it (see
/// `run`), so its pid, and a group it leads, still name it.
fn signal_escaped(command: Pid, signal: Signal) {
    let Ok(group) = getpgid(Some(command)) else {
        return;
    };
    if group == getpgrp() {
        return;
    }
    // Nothing to do on ESRCH (gone) or EPERM (a set-uid command).
    let _ = if group == command {
        killpg(group, signal)
    } else {
        kill(command, signal)
    };
}

/// Ctrl-C, Ctrl-\\ and a hangup, which at a terminal reach the whole
/// foreground group: the command decides what they mean, and the supervisor
/// must outlive it to report the command's status (dying of one, it would
/// report its own death instead).
struct TerminalSignals {
    interrupt: Signals,
    quit: Signals,
    hangup: Signals,
}

impl TerminalSignals {
    fn install() -> anyhow::Result<TerminalSignals> {
        Ok(TerminalSignals {
            interrupt: signals(SignalKind::interrupt()).context("installing the SIGINT handler")?,
            quit: signals(SignalKind::quit()).context("installing the SIGQUIT handler")?,
            hangup: signals(SignalKind::hangup()).context("installing the SIGHUP handler")?,
        })
    }

    /// Resolves when one of them arrives.
    async fn recv(&mut self) {
        tokio::select! {
            _ = self.interrupt.recv() => {}
            _ = self.quit.recv() => {}
            _ = self.hangup.recv() => {}
        }
    }
}

fn parent_alive(parent_pid: u32) -> bool {
    u32::try_from(getppid().as_raw()).is_ok_and(|pid| pid == parent_pid)
}

/// `lock-child --exec`: the command's first moments, in the command's own
/// process. The parent-death signal survives `exec`; the `Command` is this
/// crate's way of exec'ing without `unsafe`.
fn exec_command(args: &LockChildArgs, json: bool) -> anyhow::Result<u8> {
    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).context("asking for a parent-death signal")?;
    if !parent_alive(args.parent_pid) {
        return Ok(EXIT_LEASE_LOST);
    }
    let (program, rest) = args
        .command
        .split_first()
        .context("no command given after --")?;
    // Returns only if the command could not be started.
    let error = std::process::Command::new(program).args(rest).exec();
    let code = exit_code_of_exec_error(&error);
    let error = anyhow::Error::new(error).context(format!("starting {program:?}"));
    super::output::print_error(&error, json);
    Ok(code)
}

/// The shell's exit status for a command it could not run: 127 not found,
/// 126 found but not executable (POSIX "Command Search and Execution").
fn exit_code_of_exec_error(error: &std::io::Error) -> u8 {
    match error.kind() {
        std::io::ErrorKind::NotFound => EXIT_NOT_FOUND,
        _ => EXIT_CANNOT_EXECUTE,
    }
}

/// `deadbolt lock-child [--exec] [--json] --parent-pid <this process>
/// --grace-ms G -- CMD`: the one place that writes this hidden command's
/// flags, for the CLI (starting the supervisor) and the supervisor
/// (starting the command). With `json`, its errors are printed as the
/// CLI's would be.
pub(super) fn lock_child_command(
    exec: bool,
    json: bool,
    grace_ms: u64,
    command: &[String],
) -> std::process::Command {
    let mut child = std::process::Command::new(SELF_EXE);
    child.arg0("deadbolt").arg("lock-child");
    if exec {
        child.arg("--exec");
    }
    if json {
        child.arg("--json");
    }
    child
        .arg("--parent-pid")
        .arg(std::process::id().to_string())
        .arg("--grace-ms")
        .arg(grace_ms.to_string())
        .arg("--")
        .args(command);
    child
}

/// Starts the command through `lock-child --exec` (see the module notes).
fn start_command(args: &LockChildArgs, json: bool) -> anyhow::Result<std::process::Child> {
    // Spawned from the thread that drives `run`, which lives as long as the
    // process (the parent-death signal follows the spawning thread).
    lock_child_command(true, json, args.grace_ms, &args.command)
        .spawn()
        .context("starting the command (deadbolt lock-child --exec)")
}

pub(super) async fn run(args: LockChildArgs, json: bool) -> anyhow::Result<u8> {
    if args.exec {
        return exec_command(&args, json);
    }
    // Handlers first, so that a SIGTERM between the two calls below is seen.
    let mut terminate =
        signals(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut from_terminal = TerminalSignals::install()?;
    nix::sys::prctl::set_pdeathsig(Signal::SIGTERM).context("asking for a parent-death signal")?;
    // The parent may have died before the request above took effect.
    if !parent_alive(args.parent_pid) {
        return Ok(EXIT_LEASE_LOST);
    }

    let mut child = start_command(&args, json)?;
    let command = Pid::from_raw(i32::try_from(child.id()).context("child pid out of range")?);
    // waitid blocks; a thread reports the exit so the runtime stays free to
    // watch for signals. WNOWAIT leaves the command a zombie until
    // `child.wait()` below, so `signal_escaped` cannot hit a reused pid.
    let (exited_tx, mut exited) = oneshot::channel();
    std::thread::spawn(move || {
        let _ = exited_tx.send(waitid(
            Id::Pid(command),
            WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT,
        ));
    });

    loop {
        tokio::select! {
            biased;
            exited_now = &mut exited => {
                exited_now
                    .context("waiting for the command")?
                    .context("waiting for the command")?;
                let status = child.wait().context("reaping the command")?;
                return Ok(child_exit_code(status));
            }
            _ = terminate.recv() => {
                if parent_alive(args.parent_pid) {
                    // The CLI signalled the group, which a command outside
                    // it missed; the CLI escalates if needed (its SIGKILL
                    // ends this supervisor, and so the command).
                    signal_escaped(command, Signal::SIGTERM);
                    continue;
                }
                eprintln!("deadbolt: the lock holder process is gone; stopping the command");
                signal_group(Signal::SIGTERM);
                signal_escaped(command, Signal::SIGTERM);
                let grace = Duration::from_millis(args.grace_ms);
                let _ = tokio::time::timeout(grace, &mut exited).await;
                // Whether or not the command went within the grace: what it
                // forked may ignore SIGTERM, and the lease leaves no time for
                // a second grace (the same rule as the CLI's lease-lost path).
                // This ends the supervisor too.
                signal_escaped(command, Signal::SIGKILL);
                signal_group(Signal::SIGKILL);
                return Ok(EXIT_LEASE_LOST);
            }
            () = from_terminal.recv() => {}
        }
    }
}
