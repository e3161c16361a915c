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

use std::process::ExitStatus;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use deadbolt_client::api::{LockMode, SESSION_TTL_MS_DEFAULT, WAIT_MS_MAX};
use deadbolt_client::{Client, Error, Lock, Session, SessionOptions};
use tokio::sync::oneshot;

use super::{EXIT_ERROR, EXIT_LEASE_LOST};

#[derive(Debug, Args)]
pub struct LockArgs {
    /// Lock name.
    pub name: String,
    /// Shared instead of exclusive mode.
    #[arg(long)]
    pub shared: bool,
    /// Lease TTL of the session that holds the lock.
    #[arg(long, default_value_t = SESSION_TTL_MS_DEFAULT)]
    pub ttl_ms: u64,
    /// Wait at most this long for the lock (default: until it is granted).
    #[arg(long)]
    pub wait_ms: Option<u64>,
    /// The command to run, after `--`.
    #[arg(last = true, required = true, num_args = 1.., value_name = "CMD")]
    pub command: Vec<String>,
}

/// SIGTERM-to-SIGKILL grace: half of the lease margin the client keeps.
pub(super) fn kill_grace(ttl: Duration, drift_allowance: f64) -> Duration {
    ttl.mul_f64(drift_allowance / 2.0)
}

/// Waits for the lock: `wait` if given, else in `WAIT_MS_MAX` rounds until
/// granted (a round that ends `lock_held` asks again; the queue place is
/// kept across rounds by the state machine).
async fn acquire(
    session: &Session,
    name: &str,
    mode: LockMode,
    wait: Option<u64>,
) -> Result<Lock, Error> {
    match wait {
        Some(ms) => session.lock(name, mode, Duration::from_millis(ms)).await,
        None => loop {
            match session
                .lock(name, mode, Duration::from_millis(WAIT_MS_MAX))
                .await
            {
                Err(Error::LockHeld { .. }) => continue,
                other => break other,
            }
        },
    }
}

/// Exit status to report for the child's own status.
fn child_exit_code(status: ExitStatus) -> u8 {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => u8::try_from(code).unwrap_or(EXIT_ERROR),
        // The shell convention for "killed by signal N".
        (None, Some(signal)) => u8::try_from(128 + signal).unwrap_or(EXIT_ERROR),
        (None, None) => EXIT_ERROR,
    }
}

fn signal(pid: u32, signal: nix::sys::signal::Signal) {
    let Ok(pid) = i32::try_from(pid) else { return };
    // The child may have exited a moment ago; then there is nothing to do.
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal);
}

pub(super) async fn run(client: Client, args: LockArgs, json: bool) -> anyhow::Result<u8> {
    let options = SessionOptions {
        ttl: Duration::from_millis(args.ttl_ms),
        name: Some(format!("deadbolt lock {}", args.name)),
        ..SessionOptions::default()
    };
    let grace = kill_grace(options.ttl, options.drift_allowance);
    let session = client.session(options).await.context("opening a session")?;
    let mode = if args.shared {
        LockMode::Shared
    } else {
        LockMode::Exclusive
    };
    let lock = acquire(&session, &args.name, mode, args.wait_ms).await?;
    tracing::info!(lock = %args.name, token = lock.fencing_token(), "acquired; running the command");

    let (program, rest) = args
        .command
        .split_first()
        .context("no command given after --")?;
    let mut child = std::process::Command::new(program)
        .args(rest)
        .env("DEADBOLT_LOCK", &args.name)
        .env("DEADBOLT_FENCING_TOKEN", lock.fencing_token().to_string())
        .env("DEADBOLT_SESSION_ID", session.id().to_string())
        .spawn()
        .with_context(|| format!("starting {program:?}"))?;
    let pid = child.id();
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
            // The command's exit first: once it has exited (and been reaped)
            // there is nothing left to stop, and its pid may already be reused.
            biased;
            status = &mut exited => break Some(status.context("waiting for the command")??),
            reason = lock.lost() => {
                eprintln!("deadbolt: lease lost ({reason:?}); stopping the command");
                signal(pid, nix::sys::signal::Signal::SIGTERM);
                if tokio::time::timeout(grace, &mut exited).await.is_err() {
                    signal(pid, nix::sys::signal::Signal::SIGKILL);
                    let _ = exited.await;
                }
                break None;
            }
            // Asked to stop: pass it on to the command, keep the lock until
            // it exits, then release as usual.
            _ = tokio::signal::ctrl_c() => signal(pid, nix::sys::signal::Signal::SIGTERM),
            _ = terminate.recv() => signal(pid, nix::sys::signal::Signal::SIGTERM),
        }
    };
    let Some(status) = status else {
        if json {
            println!(
                r#"{{"error": {{"code": "lease_lost", "message": "lease lost; command stopped"}}}}"#
            );
        }
        return Ok(EXIT_LEASE_LOST);
    };
    if let Err(error) = lock.release().await {
        tracing::warn!(%error, "releasing the lock failed; the session's end releases it");
    }
    if let Err(error) = session.close().await {
        tracing::warn!(%error, "closing the session failed; its lease will run out");
    }
    Ok(child_exit_code(status))
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    use axum::routing::post;
    use axum::{Json, Router};
    use deadbolt_client::api::{
        AcquireResponse, CreateSessionResponse, EmptyResponse, ErrorCode, KeepaliveResponse,
        SessionId,
    };

    use crate::http::{serve_http, ApiError};

    /// A scripted HTTP server (not a node): the few answers `lock` needs,
    /// with keepalives that start answering 410 once `expire` is set.
    async fn scripted_server(
        expire: Arc<AtomicBool>,
    ) -> (String, deadbolt_runtime::ShutdownTrigger) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
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
                    let expire = expire.clone();
                    async move {
                        if expire.load(Ordering::SeqCst) {
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
                post(|| async { Json(EmptyResponse {}) }),
            );
        let (stop, shutdown) = deadbolt_runtime::shutdown_channel();
        tokio::spawn(serve_http(listener, router, shutdown));
        (url, stop)
    }

    fn args(command: &[&str]) -> LockArgs {
        LockArgs {
            name: "L".into(),
            shared: false,
            ttl_ms: 1000,
            wait_ms: Some(0),
            command: command.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[tokio::test]
    async fn runs_the_command_with_the_grant_and_returns_its_status() {
        let (url, _stop) = scripted_server(Arc::new(AtomicBool::new(false))).await;
        let client = Client::new([url]).expect("client");
        let script = r#"test "$DEADBOLT_LOCK" = L && test "$DEADBOLT_FENCING_TOKEN" = 42 && test "$DEADBOLT_SESSION_ID" = 7 && exit 7"#;
        let code = run(client, args(&["sh", "-c", script]), false)
            .await
            .expect("ran");
        assert_eq!(code, 7);
    }

    #[tokio::test]
    async fn a_lost_lease_stops_the_command_even_if_it_ignores_sigterm() {
        let expire = Arc::new(AtomicBool::new(false));
        let (url, _stop) = scripted_server(expire.clone()).await;
        let client = Client::new([url]).expect("client");
        expire.store(true, Ordering::SeqCst);
        let started = tokio::time::Instant::now();
        // `trap "" TERM` is inherited through exec: only SIGKILL ends it.
        let command = ["sh", "-c", "trap '' TERM; exec sleep 30"];
        let code =
            tokio::time::timeout(Duration::from_secs(10), run(client, args(&command), false))
                .await
                .expect("the command was stopped")
                .expect("ran");
        assert_eq!(code, EXIT_LEASE_LOST);
        // Stopped within the lease (1 s TTL) rather than after 30 s.
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
    }

    #[test]
    fn grace_ends_before_the_lease_can_run_out() {
        let ttl = Duration::from_secs(10);
        let grace = kill_grace(ttl, 0.1);
        assert_eq!(grace, Duration::from_millis(500));
        // lost fires at ttl×0.9 after sending; SIGKILL at ttl×0.95 < ttl.
        assert!(ttl.mul_f64(0.9) + grace < ttl);
    }
}
