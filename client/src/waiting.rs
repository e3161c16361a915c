//! How a session waits for a lock without ever leaving a grant behind: the
//! acquire runs in a task of its own that outlives a caller who stops
//! waiting, and waits longer than the API's `wait_ms` cap run in
//! overlapping rounds that keep the place in the queue.

use std::future::Future;
use std::time::Duration;

use deadbolt_api::{AcquireRequest, AcquireResponse, LockMode, SessionId};
use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::session::spawn_if_runtime;
use crate::{Client, Error};

/// How long an abandoned acquire's clean-up keeps checking for the wait to
/// be withdrawn or granted (the server withdraws it when it notices the
/// closed connection, a round trip or two later).
const GIVE_BACK_ATTEMPTS_MAX: u32 = 20;

/// Runs `acquire` (for `session`, on lock `name`) in a task of its own, so
/// that a caller who stops waiting (a dropped future: a `timeout`, a
/// `select!`) never leaves its session holding a grant nobody knows of.
/// The task then drops the request (the server withdraws a wait whose
/// connection closes) and gives back a grant that won that race
/// ([`give_back_abandoned`]); a grant whose answer arrives after the caller
/// left is released at once.
pub(crate) async fn acquire_or_give_back<F>(
    client: &Client,
    name: &str,
    session: SessionId,
    acquire: F,
) -> Result<AcquireResponse, Error>
where
    F: Future<Output = Result<AcquireResponse, Error>> + Send + 'static,
{
    let (mut tx, rx) = oneshot::channel();
    let (task_client, lock) = (client.clone(), name.to_owned());
    drop(tokio::spawn(async move {
        let outcome = tokio::select! {
            outcome = acquire => outcome,
            () = tx.closed() => {
                give_back_abandoned(&task_client, &lock, session).await;
                return;
            }
        };
        if let Err(Ok(granted)) = tx.send(outcome) {
            release_unwanted(&task_client, &lock, granted).await;
        }
    }));
    let mut answer = Answer {
        rx,
        unread: Some((client.clone(), name.to_owned())),
    };
    let outcome = (&mut answer.rx).await;
    answer.unread = None;
    outcome.unwrap_or_else(|_| {
        // The task was dropped mid-call (its runtime is shutting down).
        Err(Error::Timeout {
            message: "the acquire was cut short: outcome unknown".into(),
        })
    })
}

/// Waits for `name` as long as it takes, in rounds of `round` (at most the
/// API's `wait_ms` cap). A wait that ends loses its place in the FIFO
/// queue, but asking again while still queued keeps the place and extends
/// the wait, so each round is asked before the previous one ends; the
/// previous round's call then ends on its own deadline (or with the grant,
/// which answers every call waiting for it).
pub(crate) async fn in_rounds(
    client: &Client,
    name: &str,
    session: SessionId,
    mode: LockMode,
    round: Duration,
) -> Result<AcquireResponse, Error> {
    let request = AcquireRequest {
        session_id: Some(session),
        mode,
        wait_ms: u64::try_from(round.as_millis()).unwrap_or(u64::MAX),
        ttl_ms: None,
    };
    // Ask again early enough for the new deadline to commit before the
    // old one passes, even across a leader change.
    let ask_again_after = round.saturating_sub((round / 5).min(Duration::from_secs(30)));
    let ask = || Box::pin(client.acquire(name, &request));
    // At most two calls wait at once: the newest round and the one it
    // extended (which ends on its own call deadline, or with the grant).
    let mut newer = ask();
    let mut older = None;
    let mut asked_at = Instant::now();
    loop {
        let older_settles = async {
            match older.as_mut() {
                Some(call) => call.await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            outcome = &mut newer => match outcome {
                Ok(granted) => return Ok(granted),
                Err(error) if ends_the_wait(&error) => return Err(error),
                Err(error) => match older.take() {
                    Some(call) => newer = call,
                    // The wait ended before it was asked again: queue anew.
                    None if matches!(error, Error::LockHeld { .. }) => {
                        newer = ask();
                        asked_at = Instant::now();
                    }
                    None => return Err(error),
                },
            },
            outcome = older_settles => match outcome {
                Ok(granted) => return Ok(granted),
                Err(error) if ends_the_wait(&error) => return Err(error),
                Err(_) => older = None,
            },
            () = tokio::time::sleep_until(asked_at + ask_again_after) => {
                older = Some(std::mem::replace(&mut newer, ask()));
                asked_at = Instant::now();
            }
        }
    }
}

/// Errors after which no round can succeed.
fn ends_the_wait(error: &Error) -> bool {
    matches!(
        error,
        Error::SessionExpired { .. }
            | Error::NotFound { .. }
            | Error::InvalidRequest { .. }
            | Error::InvalidName { .. }
            | Error::LeaseLost
    )
}

/// The caller's end of an acquire task: dropped unread (the caller left),
/// it gives back a grant that had already arrived.
struct Answer {
    rx: oneshot::Receiver<Result<AcquireResponse, Error>>,
    /// Set until the answer is read.
    unread: Option<(Client, String)>,
}

impl Drop for Answer {
    fn drop(&mut self) {
        let Some((client, name)) = self.unread.take() else {
            return;
        };
        // Closing first makes every later send fail (the task then cleans
        // up); what was sent before is still here to read.
        self.rx.close();
        if let Ok(Ok(granted)) = self.rx.try_recv() {
            spawn_if_runtime(async move { release_unwanted(&client, &name, granted).await });
        }
    }
}

async fn release_unwanted(client: &Client, name: &str, granted: AcquireResponse) {
    let token = Some(granted.fencing_token);
    if let Err(error) = client.release(name, granted.session_id, token).await {
        tracing::warn!(lock = %name, %error, "releasing a grant nobody waited for failed");
    }
}

/// After a caller stopped waiting for `name`: once the session no longer
/// waits for it, releases the lock if the grant won the race. Best effort
/// and bounded; a lost session releases everything anyway.
async fn give_back_abandoned(client: &Client, name: &str, session: SessionId) {
    for attempt in 0..GIVE_BACK_ATTEMPTS_MAX {
        let pause = Duration::from_millis(50 << attempt.min(4));
        let info = match client.session_info(session).await {
            Ok(info) => info,
            Err(error) if error.outcome_unknown() || matches!(error, Error::Unavailable { .. }) => {
                tokio::time::sleep(pause).await;
                continue;
            }
            // Expired, closed: nothing is held.
            Err(_) => return,
        };
        if info.waiting.iter().any(|w| w.lock == name) {
            tokio::time::sleep(pause).await;
            continue;
        }
        if let Some(held) = info.locks.iter().find(|l| l.lock == name) {
            let token = Some(held.fencing_token);
            if let Err(error) = client.release(name, session, token).await {
                tracing::warn!(lock = %name, %error, "giving back an abandoned grant failed");
            }
        }
        return;
    }
    tracing::warn!(lock = %name, %session, "an abandoned wait was never withdrawn; the session may hold the lock");
}
