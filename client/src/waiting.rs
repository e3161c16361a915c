//! Waits longer than the API's `wait_ms` cap: overlapping rounds that keep
//! the place in the lock's queue.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

use crate::Error;

/// Pause before asking again after a transient failure.
const TRANSIENT_PAUSE: Duration = Duration::from_millis(500);

/// Waits for a lock as long as it takes, in rounds of `round` (at most the
/// API's `wait_ms` cap); `ask` sends one acquire call waiting `round`. A
/// wait that ends loses its place in the FIFO queue, but asking again while
/// still queued keeps the place and extends the wait, so each round is
/// asked before the previous one ends; the previous round's call then ends
/// on its own deadline (or with the grant, which answers every call waiting
/// for it). Dropping the returned future asks no more rounds; calls already
/// sent are `ask`'s to settle.
pub(crate) async fn in_rounds<T, F, Fut>(mut ask: F, round: Duration) -> Result<T, Error>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, Error>>,
{
    // Ask again early enough for the new deadline to commit before the
    // old one passes, even across a leader change.
    let ask_again_after = round.saturating_sub((round / 5).min(Duration::from_secs(30)));
    let mut ask = || Box::pin(ask());
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
            // Fixed order, so that simulated runs replay exactly.
            biased;
            outcome = &mut newer => match outcome {
                Ok(granted) => return Ok(granted),
                Err(error) if ends_the_wait(&error) => return Err(error),
                Err(error) => match older.take() {
                    Some(call) => newer = call,
                    // The wait ended before it was asked again: queue anew;
                    // or this round's wait ended with the session still
                    // queued: ask again, keeping the place.
                    None if matches!(error, Error::LockHeld { .. } | Error::StillQueued { .. }) => {
                        newer = ask();
                        asked_at = Instant::now();
                    }
                    // The cluster is unreachable or slow for a while (the
                    // client already tried every endpoint): keep asking; the
                    // session's lease decides when waiting is pointless.
                    None if error.outcome_unknown() || matches!(error, Error::Unavailable { .. }) => {
                        tokio::time::sleep(TRANSIENT_PAUSE).await;
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
