//! `deadbolt lock NAME -- CMD` through the real binary against a scripted
//! API server: the grant reaches the command, and no process the command
//! started (children it forked included) outlives the lock: not when the
//! lease is lost, not when the command exits, not when the CLI itself is
//! killed with SIGKILL (issue 13, bug 3: `sh -c 'sleep 7; ...'` kept running
//! after the lease was lost).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::routing::post;
use axum::{Json, Router};
use deadbolt_client::api::{
    AcquireResponse, CreateSessionResponse, EmptyResponse, ErrorCode, KeepaliveResponse, LockMode,
    SessionId,
};
use deadbolt_server::http::{serve_http, ApiError};

use common::{bin, eventually};

/// What the scripted server saw.
#[derive(Default)]
struct Script {
    /// Keepalives answer 410 once set.
    expire: AtomicBool,
    /// A pid file; the release handler records whether that pid was alive.
    watch_pid_file: Mutex<Option<PathBuf>>,
    released_while_alive: Mutex<Option<bool>>,
}

/// A scripted HTTP server (not a node): the answers `lock` needs.
async fn scripted_server(script: Arc<Script>) -> (String, deadbolt_runtime::ShutdownTrigger) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let keepalive_script = script.clone();
    let release_script = script;
    let router = Router::new()
        .route(
            "/v1/sessions",
            post(|| async {
                (
                    axum::http::StatusCode::CREATED,
                    Json(CreateSessionResponse {
                        session_id: SessionId(7),
                        ttl_ms: 1000,
                    }),
                )
            }),
        )
        .route(
            "/v1/sessions/{id}/keepalive",
            post(move || {
                let script = keepalive_script.clone();
                async move {
                    if script.expire.load(Ordering::SeqCst) {
                        Err(ApiError::new(ErrorCode::SessionExpired, "expired"))
                    } else {
                        Ok(Json(KeepaliveResponse { ttl_ms: 1000 }))
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
            post(|| async {
                Json(AcquireResponse {
                    lock: "L".into(),
                    mode: LockMode::Exclusive,
                    session_id: SessionId(7),
                    fencing_token: 42,
                })
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
