//! One node on the simulated disk, end to end through `NodeHandle`:
//! proposals, linearizable reads, a waiting acquire handed over on release,
//! a waiter withdrawn when its caller leaves, session expiry decided by the
//! leader's lease tracker, restart from the same disk, and shutdown.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use deadbolt_core::lock::{Acquire, Command, LockError, Mode, OpenSession, Owner, Release, Reply};
use deadbolt_runtime::node::{NodeHandle, ProposeError, StorageChoice};
use deadbolt_runtime::storage::SimDisk;
use deadbolt_runtime::{Clock, ManualClock, TokioClock};

async fn single(
    disk: &SimDisk,
    clock: Arc<dyn Clock>,
) -> (deadbolt_runtime::node::Node, NodeHandle) {
    let (listener, addr) = bind().await;
    let voters = BTreeMap::from([(1, addr.clone())]);
    let node = start(config(
        1,
        StorageChoice::Sim(disk.clone()),
        listener,
        &addr,
        &voters,
        clock,
    ))
    .await;
    let handle = node.handle();
    (node, handle)
}

fn acquire(lock: &str, session: u64, wait_ms: u64) -> Command {
    Command::Acquire(Acquire {
        lock: lock.into(),
        owner: Owner::Session(session),
        mode: Mode::Exclusive,
        wait_ms,
    })
}

#[tokio::test]
async fn proposes_reads_hands_over_and_restarts() {
    init_tracing();
    let disk = SimDisk::new();
    let (node, handle) = single(&disk, Arc::new(TokioClock::new())).await;
    let status = wait_ready(&handle).await;
    assert_eq!(status.leader, Some(1));

    let s1 = open_session(&handle, 60_000).await;
    let s2 = open_session(&handle, 60_000).await;
    let first = match propose(&handle, acquire("a", s1, 0)).await {
        Reply::Acquired(grant) => grant,
        other => panic!("{other:?}"),
    };
    // s2 waits; its answer comes when s1 releases.
    let waiter = {
        let handle = handle.clone();
        tokio::spawn(async move {
            handle
                .propose(acquire("a", s2, 30_000), None, DEADLINE)
                .await
        })
    };
    eventually("s2 queued", || async {
        let view = handle
            .read(DEADLINE, |ctx| ctx.state.lock("a"))
            .await
            .ok()?
            .ok()?;
        (view.waiters.len() == 1).then_some(())
    })
    .await;
    assert!(!waiter.is_finished());
    let released = propose(
        &handle,
        Command::Release(Release {
            lock: "a".into(),
            session_id: s1,
            fencing_token: Some(first.fencing_token),
        }),
    )
    .await;
    assert_eq!(released, Reply::Released);
    let second = match waiter.await.expect("task").expect("granted") {
        Reply::Acquired(grant) => grant,
        other => panic!("{other:?}"),
    };
    assert_eq!(second.session_id, s2);
    assert!(second.fencing_token > first.fencing_token);
    assert_eq!(
        handle
            .metrics()
            .handoffs
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );

    // A waiter whose caller gives up (drops its future once queued) is
    // withdrawn from the queue.
    let s3 = open_session(&handle, 60_000).await;
    let gives_up = {
        let handle = handle.clone();
        tokio::spawn(async move {
            handle
                .propose(acquire("a", s3, 30_000), None, DEADLINE)
                .await
        })
    };
    eventually("s3 queued", || async {
        let view = handle
            .read(DEADLINE, |ctx| ctx.state.lock("a"))
            .await
            .ok()?
            .ok()?;
        (view.waiters.len() == 1).then_some(())
    })
    .await;
    gives_up.abort();
    let withdrawn = || async {
        let view = handle
            .read(DEADLINE, |ctx| ctx.state.lock("a"))
            .await
            .ok()?
            .ok()?;
        view.waiters.is_empty().then_some(())
    };
    eventually("s3 withdrawn", withdrawn).await;
    // A deadline that passes while queued: outcome unknown, and withdrawn.
    let gave_up = handle
        .propose(acquire("a", s3, 30_000), None, Duration::from_millis(300))
        .await;
    assert_eq!(gave_up, Err(ProposeError::Timeout));
    eventually("s3 withdrawn after its deadline", withdrawn).await;

    // The lease tracker is visible to reads on the leader.
    let expires = handle
        .read(DEADLINE, move |ctx| {
            ctx.lease.and_then(|l| l.expires_in_ms(s1, ctx.now_ms))
        })
        .await
        .expect("read");
    assert!(expires.is_some_and(|ms| ms > 50_000), "{expires:?}");

    let before = handle
        .read(DEADLINE, |ctx| ctx.state.snapshot())
        .await
        .unwrap();
    node.shutdown().await;
    assert!(matches!(
        handle.status().await,
        Err(ProposeError::Stopped { .. })
    ));

    // Restart from the same disk: the state comes back from the log.
    let (node, handle) = single(&disk, Arc::new(TokioClock::new())).await;
    wait_ready(&handle).await;
    let view = handle
        .read(DEADLINE, |ctx| ctx.state.lock("a"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(view.holders.len(), 1);
    assert_eq!(view.holders[0].session_id, s2);
    let after = handle
        .read(DEADLINE, |ctx| ctx.state.snapshot())
        .await
        .unwrap();
    assert_eq!(before, after, "restarted state equals the state before");
    node.shutdown().await;
}

#[tokio::test]
async fn session_expires_through_the_leader_tracker() {
    init_tracing();
    let disk = SimDisk::new();
    let clock = ManualClock::new(1_000);
    let (node, handle) = single(&disk, Arc::new(clock.clone())).await;
    // The election timer runs on the manual clock: move it until elected.
    eventually("leader on the manual clock", || {
        clock.advance_ms(50);
        let handle = handle.clone();
        async move { handle.status().await.ok().filter(|s| s.ready) }
    })
    .await;
    let session = open_session(&handle, 1_000).await;
    let live = handle
        .read(DEADLINE, move |ctx| ctx.state.session(session).is_ok())
        .await
        .unwrap();
    assert!(live);
    // Not yet: the lease has time left.
    clock.advance_ms(900);
    let live = handle
        .read(DEADLINE, move |ctx| ctx.state.session(session).is_ok())
        .await
        .unwrap();
    assert!(live);
    clock.advance_ms(200);
    // Time keeps moving (a little per poll): expiry is measured in
    // replicated time, which an idle leader first checkpoints (one
    // maintenance tick) before the next tick finds the lease run out.
    eventually("session expired", || {
        clock.advance_ms(10);
        let handle = handle.clone();
        async move {
            let gone = handle
                .read(DEADLINE, move |ctx| ctx.state.session(session))
                .await
                .ok()?;
            matches!(
                gone,
                Err(LockError::SessionExpired) | Err(LockError::NotFound { .. })
            )
            .then_some(())
        }
    })
    .await;
    assert_eq!(
        handle
            .metrics()
            .session_expiries
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );

    // A bounded wait ends when the leader proposes ExpireWaiters.
    let holder = open_session(&handle, 60_000).await;
    let waiter = open_session(&handle, 60_000).await;
    let held = propose(&handle, acquire("w", holder, 0)).await;
    assert!(matches!(held, Reply::Acquired(_)), "{held:?}");
    let wait = {
        let handle = handle.clone();
        tokio::spawn(async move {
            handle
                .propose(acquire("w", waiter, 500), None, DEADLINE)
                .await
        })
    };
    eventually("waiter queued", || async {
        let view = handle
            .read(DEADLINE, |ctx| ctx.state.lock("w"))
            .await
            .ok()?
            .ok()?;
        (view.waiters.len() == 1).then_some(())
    })
    .await;
    clock.advance_ms(600);
    let ended = wait.await.expect("task").expect("wait ended with a reply");
    assert!(
        !matches!(ended, Reply::Acquired(_) | Reply::Queued { .. }),
        "{ended:?}"
    );
    node.shutdown().await;
}

#[tokio::test]
async fn storage_failure_stops_the_node_without_panicking() {
    init_tracing();
    let disk = SimDisk::new();
    let (node, handle) = single(&disk, Arc::new(TokioClock::new())).await;
    wait_ready(&handle).await;
    disk.fail_next_sync();
    let failed = handle
        .propose(
            Command::OpenSession(OpenSession {
                ttl_ms: 10_000,
                name: "x".into(),
            }),
            None,
            DEADLINE,
        )
        .await;
    // Proposed before the failure: in a cluster the entry may already be on
    // other nodes and commit there, so the outcome is unknown (504), never
    // "safe to retry" (issue 13, bug 1).
    assert!(matches!(failed, Err(ProposeError::Timeout)), "{failed:?}");
    // Anything after the failure is refused before it is proposed.
    let refused = handle
        .propose(
            Command::OpenSession(OpenSession {
                ttl_ms: 10_000,
                name: "y".into(),
            }),
            None,
            DEADLINE,
        )
        .await;
    assert!(
        matches!(refused, Err(ProposeError::Stopped { .. })),
        "{refused:?}"
    );
    let read = handle.read(DEADLINE, |_| ()).await;
    assert!(
        matches!(read, Err(ProposeError::Stopped { .. })),
        "{read:?}"
    );
    let status = handle.status().await.expect("status still answers");
    assert!(!status.ready);
    node.shutdown().await;
}

#[tokio::test]
async fn shutdown_ends_every_task_and_a_corrupt_record_fails_the_start() {
    init_tracing();
    let disk = SimDisk::new();
    let (listener, addr) = bind().await;
    let voters = BTreeMap::from([(1, addr.clone())]);
    let clock: Arc<dyn Clock> = Arc::new(TokioClock::new());
    let storage = || StorageChoice::Sim(disk.clone());
    let node = start(config(
        1,
        storage(),
        listener,
        &addr,
        &voters,
        clock.clone(),
    ))
    .await;
    let handle = node.handle();
    wait_ready(&handle).await;
    for _ in 0..3 {
        open_session(&handle, 10_000).await;
    }
    node.shutdown().await;
    // Every task has ended: the actor (its mailbox is closed) and the
    // listener (the peer port is free again).
    assert!(matches!(
        handle.status().await,
        Err(ProposeError::Stopped { .. })
    ));
    let listener = tokio::net::TcpListener::bind(&addr)
        .await
        .expect("peer port released by the listener task");

    // A damaged committed record is a start error that names it.
    assert!(disk.corrupt_durable_log_record(2));
    let started =
        deadbolt_runtime::node::Node::start(config(1, storage(), listener, &addr, &voters, clock))
            .await;
    match started {
        Err(deadbolt_runtime::node::StartError::Storage(error)) => {
            let message = error.to_string();
            assert!(message.contains("index 2"), "{message}");
        }
        Err(other) => panic!("unexpected start error: {other}"),
        Ok(_) => panic!("started on a corrupt log"),
    }
}
