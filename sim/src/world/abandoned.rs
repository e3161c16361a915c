//! A client that crashes under leader churn, and the harness watching its
//! session: it opens a short-TTL session, keeps it alive, stops every
//! keepalive for good just after the churn begins (the process died), and a
//! separate watcher asks the cluster every 100 ms whether the session still
//! lives. `check::lease_expiry` judges when it ended.

use std::time::Duration;

use deadbolt_client::api::{CreateSessionRequest, SessionId};
use deadbolt_client::{Client, Error};
use deadbolt_runtime::SplitMix64;
use tokio::time::Instant;

use super::recorder::Shared;
use crate::check::lease_expiry::AbandonedSession;
use crate::history::SimTimeNs;

/// How often the watcher asks whether the session still lives.
const WATCH_EVERY: Duration = Duration::from_millis(100);
/// The crash comes this long after the first leadership transfer.
const CRASH_AFTER_CHURN_STARTS: Duration = Duration::from_millis(300);

/// When the crashed client lives and how the harness watches it, in
/// simulated time since the run started.
pub(crate) struct Plan {
    /// The run's start (`Instant` of time 0).
    pub(crate) start: Instant,
    /// The first leadership transfer of the schedule.
    pub(crate) churn_starts_ms: u64,
    /// The faults end here; the watch ends with them.
    pub(crate) faults_end_ms: u64,
}

/// Runs the crashing client (`client`) and the watcher (`watcher`): the
/// session it abandoned and what became of it, or None if no session could
/// be opened before the crash.
pub(crate) async fn crash_under_churn(
    client: Client,
    watcher: Client,
    mut rng: SplitMix64,
    plan: Plan,
    rec: Shared,
) -> Option<AbandonedSession> {
    let ttl_ms = rng.range_u64(1_000, 2_001);
    let crash_at =
        plan.start + Duration::from_millis(plan.churn_starts_ms) + CRASH_AFTER_CHURN_STARTS;
    let watch_until = plan.start + Duration::from_millis(plan.faults_end_ms);
    let (session_id, last_ack_ns) = keep_alive_until(&client, ttl_ms, crash_at, &rec).await?;
    drop(client);
    let watched_until_ns = ns_since(plan.start, watch_until);
    let session = AbandonedSession {
        session: session_id.to_string(),
        ttl_ms,
        last_ack_ns,
        gone_ns: watch(&watcher, session_id, watch_until, &rec).await,
        watched_until_ns,
    };
    rec.lock().harness(format!(
        "crashed client's session {session_id}: {}",
        session
            .gone_ns
            .map_or("still live when the faults ended".into(), |g| format!(
                "ended by {} ms",
                g / 1_000_000
            ))
    ));
    Some(session)
}

/// Opens the session (retrying) and keeps it alive every third of its TTL
/// until `crash_at`: its id and when the last acknowledgement arrived.
async fn keep_alive_until(
    client: &Client,
    ttl_ms: u64,
    crash_at: Instant,
    rec: &Shared,
) -> Option<(SessionId, SimTimeNs)> {
    let request = CreateSessionRequest {
        ttl_ms,
        name: Some("crashing".into()),
    };
    let session_id = loop {
        if Instant::now() >= crash_at {
            return None;
        }
        match client.create_session(&request).await {
            Ok(created) => break created.session_id,
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    };
    let mut last_ack_ns = rec.now_ns();
    rec.lock().harness(format!(
        "crashing client opened session {session_id} (ttl {ttl_ms} ms)"
    ));
    loop {
        let next = Instant::now() + Duration::from_millis(ttl_ms / 3);
        if next >= crash_at {
            tokio::time::sleep_until(crash_at).await;
            break;
        }
        tokio::time::sleep_until(next).await;
        // A call still running at the crash dies with the process: its
        // answer never reaches anyone.
        let call = tokio::time::timeout(
            crash_at.saturating_duration_since(Instant::now()),
            client.keepalive(session_id),
        );
        match call.await {
            Ok(Ok(_)) => last_ack_ns = rec.now_ns(),
            Ok(Err(Error::SessionExpired { .. } | Error::NotFound { .. })) => return None,
            Ok(Err(_)) => {}
            Err(_) => break,
        }
    }
    rec.lock().harness(format!(
        "crashing client dies: no more keepalives for session {session_id}"
    ));
    Some((session_id, last_ack_ns))
}

/// Asks every [`WATCH_EVERY`] until the cluster says the session is gone
/// (then the time of that answer) or `until`.
async fn watch(
    client: &Client,
    session_id: SessionId,
    until: Instant,
    rec: &Shared,
) -> Option<SimTimeNs> {
    while Instant::now() < until {
        let call = tokio::time::timeout(
            until.saturating_duration_since(Instant::now()),
            client.session_info(session_id),
        );
        match call.await {
            Ok(Err(Error::SessionExpired { .. } | Error::NotFound { .. })) => {
                return Some(rec.now_ns());
            }
            Ok(_) => {}
            Err(_) => return None,
        }
        tokio::time::sleep(WATCH_EVERY).await;
    }
    None
}

fn ns_since(start: Instant, at: Instant) -> SimTimeNs {
    u64::try_from(at.saturating_duration_since(start).as_nanos()).unwrap_or(u64::MAX)
}
