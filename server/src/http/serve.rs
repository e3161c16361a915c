//! The serve loop: accept on our `tokio::net::TcpListener` (madsim's under
//! `--cfg madsim`), and drive hyper's HTTP/1.1 and prior-knowledge h2c
//! connections ourselves with an executor and a timer that go through our
//! tokio. `axum::serve`, hyper-util's `TokioExecutor`/`TokioTimer` and tower
//! timeout layers would reach the real tokio runtime, which the simulator
//! does not have (see shared/MADSIM-NOTES.md).
//!
//! Shutdown is graceful: stop accepting, ask every connection to finish its
//! in-flight requests, and cut whatever is still open after a bound.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use deadbolt_client::HyperIo;
use deadbolt_runtime::{shutdown_channel, Shutdown};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, Semaphore};

/// How long in-flight requests may run on after shutdown by default. Longer
/// than the default request deadline, shorter than most supervisors' kill
/// timeouts. A waiting acquire may be cut: its client retries elsewhere.
pub const DRAIN_TIMEOUT_DEFAULT: Duration = Duration::from_secs(10);
/// How long a client may take to send a request's headers.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Connections served at once by default; past it, accepting waits (the
/// kernel's backlog holds newcomers) instead of growing without bound.
pub const CONNECTIONS_MAX_DEFAULT: usize = 4096;
/// Pause after a failed accept (out of file descriptors...), so the loop
/// does not spin while the condition lasts.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// Tunables of [`serve_http_with`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServeHttpOptions {
    pub drain_timeout: Duration,
    pub connections_max: usize,
}

impl Default for ServeHttpOptions {
    fn default() -> Self {
        ServeHttpOptions {
            drain_timeout: DRAIN_TIMEOUT_DEFAULT,
            connections_max: CONNECTIONS_MAX_DEFAULT,
        }
    }
}

/// Runs hyper's tasks (HTTP/2 streams) on our tokio.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SpawnExecutor;

impl<F> hyper::rt::Executor<F> for SpawnExecutor
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    fn execute(&self, future: F) {
        tokio::spawn(future);
    }
}

/// hyper's timer (header read timeout, HTTP/2 keep-alive) on our tokio.
#[derive(Debug, Clone, Copy)]
struct SleepTimer;

struct TimerSleep(Pin<Box<tokio::time::Sleep>>);

impl Future for TimerSleep {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        self.0.as_mut().poll(cx)
    }
}

impl hyper::rt::Sleep for TimerSleep {}

impl hyper::rt::Timer for SleepTimer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn hyper::rt::Sleep>> {
        Box::pin(TimerSleep(Box::pin(tokio::time::sleep(duration))))
    }

    fn sleep_until(&self, deadline: Instant) -> Pin<Box<dyn hyper::rt::Sleep>> {
        let now = Instant::now();
        self.sleep(deadline.saturating_duration_since(now))
    }

    fn reset(&self, sleep: &mut Pin<Box<dyn hyper::rt::Sleep>>, new_deadline: Instant) {
        *sleep = self.sleep_until(new_deadline);
    }
}

/// Serves `router` on `listener` until `shutdown`, then drains for at most
/// [`DRAIN_TIMEOUT_DEFAULT`].
pub async fn serve_http(
    listener: TcpListener,
    router: Router,
    shutdown: Shutdown,
) -> std::io::Result<()> {
    serve_http_with(listener, router, shutdown, ServeHttpOptions::default()).await
}

/// [`serve_http`] with explicit options.
pub async fn serve_http_with(
    listener: TcpListener,
    router: Router,
    mut shutdown: Shutdown,
    options: ServeHttpOptions,
) -> std::io::Result<()> {
    let local = listener.local_addr()?;
    tracing::info!(%local, "serving the HTTP API");
    // Every connection task holds a sender; when all are gone, the drain is
    // over. `hard_stop` cuts the ones that outlive the drain bound.
    let (alive_tx, mut alive_rx) = mpsc::channel::<()>(1);
    let (hard_stop, hard_stopped) = shutdown_channel();
    let slots = Arc::new(Semaphore::new(options.connections_max.max(1)));
    loop {
        let slot = tokio::select! {
            biased;
            () = shutdown.wait() => break,
            slot = slots.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
        };
        let accepted = tokio::select! {
            biased;
            () = shutdown.wait() => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(pair) => pair,
            Err(error) => {
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(router.clone());
        let alive = alive_tx.clone();
        let graceful = shutdown.clone();
        let hard = hard_stopped.clone();
        tokio::spawn(async move {
            serve_connection(stream, peer, service, graceful, hard, alive).await;
            // The slot frees when the connection is over.
            drop(slot);
        });
    }
    drop(listener);
    drop(alive_tx);
    tracing::info!("stopped accepting; draining connections");
    let drained = tokio::time::timeout(options.drain_timeout, alive_rx.recv()).await;
    if drained.is_err() {
        tracing::warn!(
            drain_timeout_ms = options.drain_timeout.as_millis() as u64,
            "connections still open after the drain bound; closing them"
        );
        hard_stop.trigger();
        // The cut connections drop their senders promptly.
        let _ = tokio::time::timeout(Duration::from_secs(1), alive_rx.recv()).await;
    }
    Ok(())
}

async fn serve_connection(
    stream: tokio::net::TcpStream,
    peer: std::net::SocketAddr,
    service: TowerToHyperService<Router>,
    mut graceful: Shutdown,
    mut hard: Shutdown,
    _alive: mpsc::Sender<()>,
) {
    let mut builder = auto::Builder::new(SpawnExecutor);
    builder
        .http1()
        .timer(SleepTimer)
        .header_read_timeout(HEADER_READ_TIMEOUT);
    builder.http2().timer(SleepTimer);
    let connection = builder.serve_connection(HyperIo::new(stream), service);
    tokio::pin!(connection);
    // Biased (the same order on every run under madsim), shutdown first: a
    // connection that is ready at the moment shutdown arrives is still
    // polled to completion after `graceful_shutdown`.
    let result = tokio::select! {
        biased;
        () = graceful.wait() => {
            // Finish in-flight requests, refuse new ones on this connection.
            connection.as_mut().graceful_shutdown();
            tokio::select! {
                biased;
                () = hard.wait() => Ok(()),
                result = connection.as_mut() => result,
            }
        }
        result = connection.as_mut() => result,
    };
    if let Err(error) = result {
        tracing::debug!(%peer, %error, "connection ended with an error");
    }
}
