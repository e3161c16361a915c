//! An impatient client: the Rust client's `Session::lock` family used the
//! way hurried applications use it, under the run's faults. It gives up on
//! calls (timeouts around `lock`, `lock_in_rounds` and `release`), drops
//! handles, asks twice for the same lock from two tasks, and releases one
//! handle of a grant another task still holds; a second session holds the
//! same locks for a while so that its calls wait. At the end the harness
//! looks at what the session still holds (`check::grant_leak`).

use std::sync::Arc;
use std::time::Duration;

use deadbolt_client::api::LockMode;
use deadbolt_client::{Client, Error, Lock, Session, SessionOptions};
use deadbolt_runtime::SplitMix64;
use tokio::time::Instant;

use super::recorder::Shared;
use crate::check::grant_leak::GrantLeakInput;

/// The impatient client's locks (nobody else uses them).
const NAMES: [&str; 3] = ["imp/0", "imp/1", "imp/2"];
/// Long enough to outlive most faults of a run: a lease lost on the way
/// ends the client's duty to give anything back, and the verdict with it.
const TTL: Duration = Duration::from_secs(20);
/// After the last handle is dropped: time for give-backs and withdrawals
/// (asked again after failures) to reach the healed cluster.
const SETTLE: Duration = Duration::from_secs(8);

/// Runs until `until`, lets everything settle, and reports what the
/// session still holds; None if it could not open its sessions or its
/// lease was lost (then nothing is owed any more).
pub(crate) async fn run(
    client: Client,
    mut rng: SplitMix64,
    until: Instant,
    rec: Shared,
) -> Option<GrantLeakInput> {
    let options = SessionOptions {
        ttl: TTL,
        name: Some("impatient".into()),
        ..SessionOptions::default()
    };
    let (impatient, other) = loop {
        if Instant::now() >= until {
            return None;
        }
        let opened = async {
            let a = client.session(options.clone()).await?;
            let b = client.session(options.clone()).await?;
            Ok::<_, Error>((a, b))
        };
        match opened.await {
            Ok(sessions) => break sessions,
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    };
    let (impatient, other) = (Arc::new(impatient), Arc::new(other));
    rec.lock().harness(format!(
        "impatient client's session {} (contender {})",
        impatient.id(),
        other.id()
    ));
    let mut held: Vec<Lock> = Vec::new();
    while Instant::now() < until {
        let name = NAMES[rng.range_u64(0, NAMES.len() as u64) as usize];
        let mode = if rng.chance(1, 3) {
            LockMode::Shared
        } else {
            LockMode::Exclusive
        };
        let patience = Duration::from_millis(rng.range_u64(0, 1_500));
        match rng.range_u64(0, 6) {
            // The contender holds the lock a while, so that waits happen.
            0 => {
                let (other, hold) = (other.clone(), rng.range_u64(100, 2_000));
                drop(tokio::spawn(async move {
                    if let Ok(lock) = other.try_lock(name, mode).await {
                        tokio::time::sleep(Duration::from_millis(hold)).await;
                        drop(lock);
                    }
                }));
            }
            // A waiting lock its caller may give up on.
            1 | 2 => {
                let wait = Duration::from_millis(rng.range_u64(0, 3_000));
                let call = impatient.lock(name, mode, wait);
                if let Ok(Ok(lock)) = tokio::time::timeout(patience, call).await {
                    held.push(lock);
                }
            }
            // Rounds, given up on.
            3 => {
                let round = Duration::from_millis(rng.range_u64(500, 2_000));
                let call = impatient.lock_in_rounds(name, mode, round);
                if let Ok(Ok(lock)) = tokio::time::timeout(patience, call).await {
                    held.push(lock);
                }
            }
            // Two tasks of the session ask at once; one gives up.
            4 => {
                let twin = impatient.clone();
                let wait = Duration::from_millis(rng.range_u64(0, 2_000));
                let eager = tokio::spawn(async move { twin.lock(name, mode, wait).await.ok() });
                let _ = tokio::time::timeout(patience, impatient.lock(name, mode, wait)).await;
                if let Ok(Some(lock)) = eager.await {
                    held.push(lock);
                }
            }
            // Let go of a handle: dropped, or released (maybe given up on).
            _ => {
                if !held.is_empty() {
                    let lock = held.swap_remove(rng.range_u64(0, held.len() as u64) as usize);
                    if rng.chance(1, 2) {
                        drop(lock);
                    } else {
                        let _ = tokio::time::timeout(patience, lock.release()).await;
                    }
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(rng.range_u64(0, 300))).await;
    }
    drop(held);
    tokio::time::sleep(SETTLE).await;
    verdict(&client, &impatient, &rec).await
}

/// What the session still holds, if the client still trusts its lease.
async fn verdict(client: &Client, session: &Session, rec: &Shared) -> Option<GrantLeakInput> {
    if session.is_lost() {
        rec.lock().harness(format!(
            "impatient client's lease {} was lost: no verdict",
            session.id()
        ));
        return None;
    }
    let info = client.session_info(session.id()).await.ok()?;
    let input = GrantLeakInput {
        session: session.id().to_string(),
        held: info
            .locks
            .iter()
            .map(|l| (l.lock.clone(), l.fencing_token))
            .collect(),
        waiting: info.waiting.iter().map(|w| w.lock.clone()).collect(),
        settled_ms: SETTLE.as_millis() as u64,
    };
    rec.lock().harness(format!(
        "impatient client's session {} at the end: holds {:?}, waits for {:?}",
        input.session, input.held, input.waiting
    ));
    Some(input)
}
