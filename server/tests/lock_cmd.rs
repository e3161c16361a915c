//! `deadbolt lock NAME -- CMD` through the real binary against a scripted
//! API server: the grant reaches the command, and no process the command
//! started (children it forked included) outlives the lock: not when the
//! lease is lost, not when the command exits, not when the CLI itself is
//! killed with SIGKILL (issue 13, bug 3: `sh -c 'sleep 7; ...'` kept running
//! after the lease was lost).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::routing::post;
use axum::{Json, Router};
use deadbolt_client::api::{
    AcquireResponse, CreateSessionResponse, EmptyResponse, ErrorCode, KeepaliveResponse, LockMode,
    SessionId,
};
use deadbolt_server::http::{serve_http, ApiError};

use common::{bin, eventually};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// What the scripted server answers, and what it saw.
#[derive(Default)]
struct Script {
    /// Keepalives answer 410 once set.
    expire: AtomicBool,
    /// Keepalives answer 503 (retryable) once set: the client can no
    /// longer confirm its lease and must stop the command by itself.
    unavailable: AtomicBool,
    /// When the session was last created or kept alive (answered 200): the
    /// server's lease runs out `granted_ttl_ms` after it.
    last_keepalive_ok: Mutex<Option<Instant>>,
    /// The TTL the server grants (0: 1000 ms), whatever the client asks.
    granted_ttl_ms: AtomicU64,
    /// An acquire was received.
    acquire_seen: AtomicBool,
    /// Acquires are held (polled) until this is set, when `hold_acquire` is.
    hold_acquire: AtomicBool,
    acquire_open: AtomicBool,
    /// A pid file; the release handler records whether that pid was alive.
    watch_pid_file: Mutex<Option<PathBuf>>,
    released_while_alive: Mutex<Option<bool>>,
}

impl Script {
    fn granted_ttl_ms(&self) -> u64 {
        match self.granted_ttl_ms.load(Ordering::SeqCst) {
            0 => 1000,
            ttl_ms => ttl_ms,
        }
    }
}

/// A scripted HTTP server (not a node): the answers `lock` needs.
async fn scripted_server(script: Arc<Script>) -> (String, deadbolt_runtime::ShutdownTrigger) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let session_script = script.clone();
    let keepalive_script = script.clone();
    let acquire_script = script.clone();
    let release_script = script;
    let router = Router::new()
        .route(
            "/v1/sessions",
            post(move || {
                let ttl_ms = session_script.granted_ttl_ms();
                *session_script.last_keepalive_ok.lock().expect("lock") = Some(Instant::now());
                async move {
                    (
                        axum::http::StatusCode::CREATED,
                        Json(CreateSessionResponse {
                            session_id: SessionId(7),
                            ttl_ms,
                        }),
                    )
                }
            }),
        )
        .route(
            "/v1/sessions/{id}/keepalive",
            post(move || {
                let script = keepalive_script.clone();
                async move {
                    if script.expire.load(Ordering::SeqCst) {
                        Err(ApiError::new(ErrorCode::SessionExpired, "expired"))
                    } else if script.unavailable.load(Ordering::SeqCst) {
                        Err(ApiError::new(ErrorCode::Unavailable, "no leader"))
                    } else {
                        *script.last_keepalive_ok.lock().expect("lock") = Some(Instant::now());
                        Ok(Json(KeepaliveResponse {
                            ttl_ms: script.granted_ttl_ms(),
                        }))
                    }
                }
            }),
        )
        .route(
            "/v1/sessions/{id}",
            axum::routing::delete(|| async { Json(EmptyResponse {}) }),
        )
        .route(
            "/v1/locks/{name}/acquire",
            post(move || {
                let script = acquire_script.clone();
                async move {
                    script.acquire_seen.store(true, Ordering::SeqCst);
                    if script.hold_acquire.load(Ordering::SeqCst) {
                        eventually(
                            "the test to let the acquire through",
                            Duration::from_secs(20),
                            || {
                                let open = script.acquire_open.load(Ordering::SeqCst);
                                async move { open.then_some(()) }
                            },
                        )
                        .await;
                    }
                    Json(AcquireResponse {
                        lock: "L".into(),
                        mode: LockMode::Exclusive,
                        session_id: SessionId(7),
                        fencing_token: 42,
                    })
                }
            }),
        )
        .route(
            "/v1/locks/{name}/release",
            post(move || {
                let script = release_script.clone();
                async move {
                    let file = script.watch_pid_file.lock().expect("lock").clone();
                    if let Some(file) = file {
                        let alive = read_pid(&file).is_some_and(alive);
                        *script.released_while_alive.lock().expect("lock") = Some(alive);
                    }
                    Json(EmptyResponse {})
                }
            }),
        );
    let (stop, shutdown) = deadbolt_runtime::shutdown_channel();
    tokio::spawn(serve_http(listener, router, shutdown));
    (url, stop)
}

/// `deadbolt --endpoints URL lock L --ttl-ms 1000 --wait-ms 0 -- sh -c SCRIPT`.
fn lock_command(url: &str, script: &str) -> Command {
    let mut command = Command::new(bin());
    command
        .args([
            "--endpoints",
            url,
            "lock",
            "L",
            "--ttl-ms",
            "1000",
            "--wait-ms",
            "0",
        ])
        .args(["--", "sh", "-c", script])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    command
}

/// `BINARY --endpoints URL lock L --ttl-ms TTL --wait-ms 0 -- ARGV...`, the
/// command run directly (no `sh -c` around it).
fn lock_argv(binary: &Path, url: &str, ttl_ms: u64, argv: &[&str]) -> Command {
    let mut command = Command::new(binary);
    command
        .args(["--endpoints", url, "lock", "L", "--ttl-ms"])
        .arg(ttl_ms.to_string())
        .args(["--wait-ms", "0", "--"])
        .args(argv)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    command
}

/// Processes a test started indirectly, SIGKILLed (after a SIGCONT) when it
/// ends, so that a failing test leaves nothing running.
#[derive(Default)]
struct Leftovers(Mutex<Vec<i32>>);

impl Leftovers {
    fn watch(&self, pid: i32) -> i32 {
        self.0.lock().expect("lock").push(pid);
        pid
    }
}

impl Drop for Leftovers {
    fn drop(&mut self) {
        for &pid in self.0.lock().expect("lock").iter() {
            if alive(pid) {
                let _ = kill(Pid::from_raw(pid), Signal::SIGCONT);
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
        }
    }
}

fn read_pid(file: &Path) -> Option<i32> {
    std::fs::read_to_string(file).ok()?.trim().parse().ok()
}

/// Whether `pid` runs (a zombie waiting for its reaper does not).
fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state is the first field after the parenthesised command name.
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

/// Waits for the CLI to exit, at most `bound`; its exit code.
async fn exit_code(mut cli: std::process::Child, bound: Duration) -> i32 {
    let status = eventually("the CLI to exit", bound, || {
        let status = cli.try_wait().expect("try_wait");
        async move { status }
    })
    .await;
    status.code().unwrap_or(-1)
}

async fn pid_written(file: &Path) -> i32 {
    eventually(
        "the command to write its pid",
        Duration::from_secs(10),
        || {
            let pid = read_pid(file);
            async move { pid }
        },
    )
    .await
}

async fn gone(pid: i32, bound: Duration) {
    eventually(&format!("process {pid} to be gone"), bound, || async move {
        (!alive(pid)).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_command_gets_the_grant_and_its_status_is_the_exit_code() {
    let (url, _stop) = scripted_server(Arc::default()).await;
    let script = r#"test "$DEADBOLT_LOCK" = L && test "$DEADBOLT_FENCING_TOKEN" = 42 && test "$DEADBOLT_SESSION_ID" = 7 && exit 7"#;
    let cli = lock_command(&url, script).spawn().expect("spawn");
    assert_eq!(exit_code(cli, Duration::from_secs(20)).await, 7);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_lease_stops_the_command_and_what_it_forked_even_if_they_ignore_sigterm() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pid_file = dir.path().join("grandchild.pid");
    let script = Arc::new(Script::default());
    let (url, _stop) = scripted_server(script.clone()).await;
    // Both the shell and its background child ignore SIGTERM (inherited).
    let command = format!(
        "trap '' TERM; sleep 300 & echo $! > {}; wait",
        pid_file.display()
    );
    let cli = lock_command(&url, &command).spawn().expect("spawn");
    let grandchild = pid_written(&pid_file).await;
    assert!(alive(grandchild));
    script.expire.store(true, Ordering::SeqCst);
    // Lost within the 1 s TTL, SIGKILL after the grace: well under 10 s.
    assert_eq!(exit_code(cli, Duration::from_secs(10)).await, 4);
    gone(grandchild, Duration::from_secs(2)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_the_command_leaves_running_is_stopped_before_the_release() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pid_file = dir.path().join("leftover.pid");
    let script = Arc::new(Script::default());
    *script.watch_pid_file.lock().expect("lock") = Some(pid_file.clone());
    let (url, _stop) = scripted_server(script.clone()).await;
    let command = format!("sleep 300 & echo $! > {}; exit 0", pid_file.display());
    let cli = lock_command(&url, &command).spawn().expect("spawn");
    assert_eq!(exit_code(cli, Duration::from_secs(20)).await, 0);
    let leftover = read_pid(&pid_file).expect("pid written");
    gone(leftover, Duration::from_secs(2)).await;
    assert_eq!(
        *script.released_while_alive.lock().expect("lock"),
        Some(false),
        "the release must come after the leftover process is gone"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_cli_takes_the_command_and_what_it_forked_with_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pid_file = dir.path().join("grandchild.pid");
    let (url, _stop) = scripted_server(Arc::default()).await;
    let command = format!("sleep 300 & echo $! > {}; wait", pid_file.display());
    let mut cli = lock_command(&url, &command).spawn().expect("spawn");
    let grandchild = pid_written(&pid_file).await;
    assert!(alive(grandchild));
    cli.kill().expect("SIGKILL the CLI");
    cli.wait().expect("reap the CLI");
    gone(grandchild, Duration::from_secs(5)).await;
}

/// Finding 1. The supervisor stops the group when the CLI dies, but sends
/// SIGKILL only if the command itself outlives the grace: a command that
/// dies of the SIGTERM leaves whatever ignores SIGTERM running, lock gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_cli_kills_forked_processes_that_ignore_sigterm_even_if_the_command_does_not() {
    let leftovers = Leftovers::default();
    let dir = tempfile::tempdir().expect("tempdir");
    let pid_file = dir.path().join("grandchild.pid");
    let (url, _stop) = scripted_server(Arc::default()).await;
    // The shell dies of SIGTERM; its background child ignores it.
    let command = format!(
        r#"sh -c 'trap "" TERM; exec sleep 300' & echo $! > {}; wait"#,
        pid_file.display()
    );
    let mut cli = lock_command(&url, &command).spawn().expect("spawn");
    let grandchild = leftovers.watch(pid_written(&pid_file).await);
    assert!(alive(grandchild));
    cli.kill().expect("SIGKILL the CLI");
    cli.wait().expect("reap the CLI");
    // The supervisor's grace is 50 ms here (1 s TTL).
    gone(grandchild, Duration::from_secs(5)).await;
}

/// Finding 2. A command that leads a process group of its own (`timeout`
/// does, as do `setsid` and shells with job control) is not signalled at
/// all on lease loss: the group signal reaches only the supervisor, which
/// ignores SIGTERM while the CLI lives. Before ffb0b56 the CLI signalled the
/// command's pid, and `timeout` passed the SIGTERM on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_lease_stops_a_command_that_leads_its_own_process_group() {
    let leftovers = Leftovers::default();
    let dir = tempfile::tempdir().expect("tempdir");
    let pid_file = dir.path().join("sleep.pid");
    let script = Arc::new(Script::default());
    let (url, _stop) = scripted_server(script.clone()).await;
    let inner = format!("echo $$ > {}; exec sleep 300", pid_file.display());
    let cli = lock_argv(
        Path::new(bin()),
        &url,
        1000,
        &["timeout", "300", "sh", "-c", &inner],
    )
    .spawn()
    .expect("spawn");
    let sleep = leftovers.watch(pid_written(&pid_file).await);
    script.expire.store(true, Ordering::SeqCst);
    assert_eq!(exit_code(cli, Duration::from_secs(10)).await, 4);
    gone(sleep, Duration::from_secs(2)).await;
}

/// Finding 2, the same through SIGTERM to the CLI (systemd stopping a unit):
/// the CLI passes it to the group, the command in its own group never gets
/// it, and the CLI holds the lock for as long as the command runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_to_the_cli_reaches_a_command_that_leads_its_own_process_group() {
    let leftovers = Leftovers::default();
    let dir = tempfile::tempdir().expect("tempdir");
    let pid_file = dir.path().join("sleep.pid");
    let (url, _stop) = scripted_server(Arc::default()).await;
    let inner = format!("echo $$ > {}; exec sleep 300", pid_file.display());
    let cli = lock_argv(
        Path::new(bin()),
        &url,
        1000,
        &["timeout", "300", "sh", "-c", &inner],
    )
    .spawn()
    .expect("spawn");
    let cli_pid = leftovers.watch(i32::try_from(cli.id()).expect("pid"));
    let sleep = leftovers.watch(pid_written(&pid_file).await);
    kill(Pid::from_raw(cli_pid), Signal::SIGTERM).expect("SIGTERM the CLI");
    gone(sleep, Duration::from_secs(5)).await;
    // timeout passes the SIGTERM on and reports it as its own death by it.
    assert_eq!(exit_code(cli, Duration::from_secs(5)).await, 128 + 15);
}

/// Finding 3. The supervisor is started from `current_exe()`, resolved only
/// once the lock is granted: a binary replaced or removed while `lock`
/// waits (a package upgrade) reads as "/path (deleted)", the supervisor
/// cannot start, and the command never runs though the lock was granted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_command_runs_even_if_the_binary_was_replaced_while_waiting() {
    let dir = tempfile::tempdir().expect("tempdir");
    let copy = dir.path().join("deadbolt");
    std::fs::copy(bin(), &copy).expect("copy the binary");
    let script = Arc::new(Script::default());
    script.hold_acquire.store(true, Ordering::SeqCst);
    let (url, _stop) = scripted_server(script.clone()).await;
    let cli = lock_argv(
        &copy,
        &url,
        1000,
        &[
            "sh",
            "-c",
            r#"test "$DEADBOLT_FENCING_TOKEN" = 42 && exit 7"#,
        ],
    )
    .spawn()
    .expect("spawn");
    eventually(
        "the CLI to ask for the lock",
        Duration::from_secs(10),
        || {
            let seen = script.acquire_seen.load(Ordering::SeqCst);
            async move { seen.then_some(()) }
        },
    )
    .await;
    // An upgrade: the new binary is renamed over the old one.
    let new = dir.path().join("deadbolt.new");
    std::fs::copy(bin(), &new).expect("copy the new binary");
    std::fs::rename(&new, &copy).expect("replace the binary");
    script.acquire_open.store(true, Ordering::SeqCst);
    assert_eq!(exit_code(cli, Duration::from_secs(20)).await, 7);
}

/// Finding 4. The SIGKILL grace is computed from the TTL asked for, not the
/// one the server granted (the client itself trusts only the granted one):
/// asking 60 s and getting 4 s gives a 3 s grace, so the command is killed
/// ~6.6 s after the last keepalive, ~2.6 s after the server let the lease
/// run out (the right grace, 200 ms, kills it at ~3.8 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_command_is_dead_before_the_granted_lease_can_run_out() {
    let leftovers = Leftovers::default();
    let dir = tempfile::tempdir().expect("tempdir");
    let pid_file = dir.path().join("sleep.pid");
    let script = Arc::new(Script::default());
    script.granted_ttl_ms.store(4000, Ordering::SeqCst);
    let (url, _stop) = scripted_server(script.clone()).await;
    let inner = format!(
        "trap '' TERM; echo $$ > {}; exec sleep 300",
        pid_file.display()
    );
    let cli = lock_argv(Path::new(bin()), &url, 60_000, &["sh", "-c", &inner])
        .spawn()
        .expect("spawn");
    let sleep = leftovers.watch(pid_written(&pid_file).await);
    script.unavailable.store(true, Ordering::SeqCst);
    // Polled every 5 ms: `eventually`'s 20 ms is coarse next to the margin.
    let deadline = Instant::now() + Duration::from_secs(15);
    while alive(sleep) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    let died = Instant::now();
    let last_ok = script
        .last_keepalive_ok
        .lock()
        .expect("lock")
        .expect("keepalives were answered");
    assert!(!alive(sleep), "still running after 15 s");
    let after = died.duration_since(last_ok);
    assert!(
        after < Duration::from_millis(4000),
        "the command died {after:?} after the last keepalive; the server's lease (4 s) ran out before"
    );
    assert_eq!(exit_code(cli, Duration::from_secs(5)).await, 4);
}

/// Finding 5. `--json` errors are JSON (API.md), but a command that cannot
/// be started is now reported by the supervisor, which never heard of
/// `--json`: a plain-text line. Before ffb0b56 it was JSON.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_that_cannot_start_is_reported_in_json_with_json() {
    let (url, _stop) = scripted_server(Arc::default()).await;
    let output = Command::new(bin())
        .args(["--json", "--endpoints", &url, "lock", "L", "--wait-ms", "0"])
        .args(["--", "/nonexistent/command"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .expect("run the CLI");
    // 127 as a shell's "command not found" (issue 18).
    assert_eq!(output.status.code(), Some(127));
    let stderr = String::from_utf8_lossy(&output.stderr);
    let last = stderr.lines().last().unwrap_or_default();
    let error: serde_json::Value = serde_json::from_str(last)
        .unwrap_or_else(|e| panic!("stderr's last line is not JSON ({e}): {stderr}"));
    assert!(
        error["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("/nonexistent/command")),
        "{error}"
    );
}

/// The CLI at a terminal (a pty it controls, its group in the foreground,
/// as a login shell's job) running `sh -c SCRIPT`, once the command's group
/// has the terminal.
struct AtTerminal {
    cli: std::process::Child,
    master: std::fs::File,
    cli_group: Pid,
    command_group: Pid,
}

async fn lock_at_a_terminal(url: &str, script: &str, leftovers: &Leftovers) -> AtTerminal {
    use nix::unistd::tcgetpgrp;

    let pty = nix::pty::openpty(None, None).expect("openpty");
    let slave = std::fs::File::from(pty.slave);
    let master = std::fs::File::from(pty.master);
    // A session of its own with the pty as its controlling terminal.
    let cli = Command::new("setsid")
        .arg("--ctty")
        .arg(bin())
        .args(["--endpoints", url, "lock", "L", "--ttl-ms", "1000"])
        .args(["--wait-ms", "0", "--", "sh", "-c", script])
        .stdin(slave.try_clone().expect("dup"))
        .stdout(slave.try_clone().expect("dup"))
        .stderr(slave)
        .spawn()
        .expect("spawn");
    let cli_group = Pid::from_raw(leftovers.watch(i32::try_from(cli.id()).expect("pid")));
    let command_group = eventually(
        "the command's group to get the terminal",
        Duration::from_secs(5),
        || {
            let foreground = tcgetpgrp(&master).ok().filter(|g| *g != cli_group);
            async move { foreground }
        },
    )
    .await;
    // The supervisor leads the command's group.
    leftovers.watch(command_group.as_raw());
    AtTerminal {
        cli,
        master,
        cli_group,
        command_group,
    }
}

/// Finding 7. Ctrl-\ (SIGQUIT) and a hangup (SIGHUP) reach the whole
/// foreground group, the supervisor included, which handles SIGINT that way
/// but dies of these: the CLI then reports the supervisor's death (131)
/// instead of the command's status, although the command handled the
/// signal and chose its exit code.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_backslash_at_a_terminal_exits_with_the_command_status() {
    use std::io::Write as _;

    let leftovers = Leftovers::default();
    let dir = tempfile::tempdir().expect("tempdir");
    let pid_file = dir.path().join("sh.pid");
    let sleep_file = dir.path().join("sleep.pid");
    let (url, _stop) = scripted_server(Arc::default()).await;
    // `sleep &` ignores SIGQUIT (a non-interactive shell's background job):
    // a leftover, stopped before the release.
    let script = format!(
        "trap 'exit 9' QUIT; sleep 300 & echo $! > {}; echo $$ > {}; wait",
        sleep_file.display(),
        pid_file.display()
    );
    let mut terminal = lock_at_a_terminal(&url, &script, &leftovers).await;
    // The command's group, not the CLI's, has the terminal.
    assert_ne!(terminal.command_group, terminal.cli_group);
    leftovers.watch(pid_written(&pid_file).await);
    leftovers.watch(pid_written(&sleep_file).await);
    terminal.master.write_all(b"\x1c").expect("Ctrl-\\");
    assert_eq!(exit_code(terminal.cli, Duration::from_secs(10)).await, 9);
}

/// Finding 2, with a command that ignores SIGTERM in a session of its own
/// (`setsid`): only a SIGKILL aimed at it ends it, and the group's SIGKILL
/// misses it (the CLI before ffb0b56 sent its SIGKILL to the command's pid).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_lease_kills_a_command_in_its_own_session_that_ignores_sigterm() {
    let leftovers = Leftovers::default();
    let dir = tempfile::tempdir().expect("tempdir");
    let pid_file = dir.path().join("sleep.pid");
    let script = Arc::new(Script::default());
    let (url, _stop) = scripted_server(script.clone()).await;
    let inner = format!(
        "trap '' TERM; echo $$ > {}; exec sleep 300",
        pid_file.display()
    );
    let cli = lock_argv(
        Path::new(bin()),
        &url,
        1000,
        &["setsid", "sh", "-c", &inner],
    )
    .spawn()
    .expect("spawn");
    let sleep = leftovers.watch(pid_written(&pid_file).await);
    script.expire.store(true, Ordering::SeqCst);
    assert_eq!(exit_code(cli, Duration::from_secs(10)).await, 4);
    gone(sleep, Duration::from_secs(2)).await;
}
