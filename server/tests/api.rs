//! (Over 1,000 lines: one test per rule of the whole API contract, in its order.)
//! End-to-end tests of the HTTP API (shared/API.md) against a real one-node
//! cluster: each test starts node 1 on a temporary data dir with
//! `deadbolt_server::server::start` on ephemeral loopback ports (the same
//! path `deadbolt serve` takes), and talks to it through `deadbolt-client`
//! or raw hyper where the test must control headers and bodies. What is
//! decided before a request reaches a node (routing, limits, validation of
//! every field) is also covered without a node in `src/http/tests.rs`;
//! here each error code is produced by the real node.

// Real processes, sockets and fjall: not a simulation test.
#![cfg(not(madsim))]

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::in_process::{start, start_with};
use deadbolt_client::api::*;
use deadbolt_client::{Client, Error, SessionOptions};
use deadbolt_server::config::ServeArgs;
use deadbolt_server::server::start as start_server;
use tokio::net::TcpListener;

/// Bound on every poll for a condition.
const DEADLINE: Duration = Duration::from_secs(10);

/// Polls `check` every 10 ms until it returns Some, or panics at DEADLINE.
async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let until = tokio::time::Instant::now() + DEADLINE;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < until,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// One raw HTTP/1.1 request: (status, headers, body).
async fn raw(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, hyper::HeaderMap, serde_json::Value) {
    common::http_request(&addr.to_string(), method, path, headers, body).await
}

#[tokio::test]
async fn session_lifecycle() {
    let s = start().await;
    let created = s
        .client
        .create_session(&CreateSessionRequest {
            ttl_ms: 5000,
            name: Some("w".into()),
        })
        .await
        .expect("create");
    assert_eq!(created.ttl_ms, 5000);
    let info = s
        .client
        .session_info(created.session_id)
        .await
        .expect("info");
    assert_eq!(info.name.as_deref(), Some("w"));
    assert!(
        info.expires_in_ms <= 5000 && info.expires_in_ms > 0,
        "{info:?}"
    );
    assert_eq!(
        s.client
            .keepalive(created.session_id)
            .await
            .expect("keepalive")
            .ttl_ms,
        5000
    );
    s.client
        .delete_session(created.session_id)
        .await
        .expect("delete");
    let gone = s.client.session_info(created.session_id).await.unwrap_err();
    assert!(
        matches!(gone, Error::NotFound { .. } | Error::SessionExpired { .. }),
        "{gone:?}"
    );
    let (status, _, body) = raw(s.addr, "POST", "/v1/sessions", &[], "{}").await;
    assert_eq!(status, 201, "{body}");
    s.stop().await;
}

#[tokio::test]
async fn exclusive_locks_fence_and_queue() {
    let s = start().await;
    let a = s
        .client
        .session(SessionOptions::default())
        .await
        .expect("session a");
    let b = s
        .client
        .session(SessionOptions::default())
        .await
        .expect("session b");
    let held = a
        .try_lock("jobs/nightly", LockMode::Exclusive)
        .await
        .expect("a locks");
    let refused = b
        .try_lock("jobs/nightly", LockMode::Exclusive)
        .await
        .unwrap_err();
    let Error::LockHeld { holders } = refused else {
        panic!("{refused:?}")
    };
    assert_eq!(holders[0].fencing_token, held.fencing_token());

    let state = s.client.lock_state("jobs/nightly").await.expect("state");
    assert_eq!(state.state, LockStatus::Held);
    assert!(
        s.client
            .validate("jobs/nightly", held.fencing_token())
            .await
            .expect("validate")
            .valid
    );

    // b waits; a releases; b gets a larger token.
    let waiter = tokio::spawn({
        let b_client = s.client.clone();
        let id = b.id();
        async move {
            b_client
                .acquire(
                    "jobs/nightly",
                    &AcquireRequest {
                        session_id: Some(id),
                        wait_ms: 5000,
                        ..Default::default()
                    },
                )
                .await
        }
    });
    eventually("b queued", || async {
        let state = s.client.lock_state("jobs/nightly").await.ok()?;
        (state.waiters.len() == 1).then_some(())
    })
    .await;
    let first = held.fencing_token();
    held.release().await.expect("release");
    let granted = waiter.await.expect("join").expect("b acquires");
    assert!(granted.fencing_token > first);
    assert!(
        !s.client
            .validate("jobs/nightly", first)
            .await
            .expect("validate")
            .valid
    );
    s.stop().await;
}

#[tokio::test]
async fn acquire_without_session_is_ephemeral() {
    let s = start().await;
    let grant = s
        .client
        .acquire("e", &AcquireRequest::default())
        .await
        .expect("ephemeral acquire");
    let info = s
        .client
        .session_info(grant.session_id)
        .await
        .expect("its session");
    assert_eq!(info.ttl_ms, EPHEMERAL_SESSION_TTL_MS_DEFAULT);
    s.client
        .release("e", grant.session_id, Some(grant.fencing_token))
        .await
        .expect("release");
    // Releasing its only lock ends the ephemeral session.
    assert!(s.client.session_info(grant.session_id).await.is_err());
    s.stop().await;
}

#[tokio::test]
async fn idempotency_keys_replay_and_refuse_other_bodies() {
    let s = start().await;
    let key = [("Idempotency-Key", "k-1")];
    let (st1, _, one) = raw(s.addr, "POST", "/v1/sessions", &key, r#"{"ttl_ms": 5000}"#).await;
    let (st2, _, two) = raw(
        s.addr,
        "POST",
        "/v1/sessions",
        &key,
        r#"{ "ttl_ms" : 5000 }"#,
    )
    .await;
    assert_eq!((st1, st2), (201, 201));
    assert_eq!(one, two, "same key, same request: the first outcome");
    let (st3, _, three) = raw(s.addr, "POST", "/v1/sessions", &key, r#"{"ttl_ms": 6000}"#).await;
    assert_eq!(st3, 400, "{three}");
    assert_eq!(three["error"]["code"], "invalid_request");
    s.stop().await;
}

#[tokio::test]
async fn acknowledged_idempotency_keys_are_forgotten_and_refused() {
    let s = start().await;
    let body = r#"{"value": "x"}"#;
    let push = |key: &'static str, acked: Option<&'static str>| {
        let mut headers = vec![("Idempotency-Key", key)];
        headers.extend(acked.map(|a| ("Idempotency-Acked-Below", a)));
        let addr = s.addr;
        async move {
            let (status, _, answer) = raw(addr, "POST", "/v1/stacks/s/push", &headers, body).await;
            (status, answer)
        }
    };
    assert_eq!(push("c-1", Some("1")).await.1["size"], 1);
    assert_eq!(push("c-2", Some("1")).await.1["size"], 2);
    // c-3 acknowledges c-1 only.
    assert_eq!(push("c-3", Some("2")).await.1["size"], 3);
    assert_eq!(push("c-2", None).await.1["size"], 2, "c-2 replays");
    // A late duplicate of an acknowledged key is refused, never applied again.
    let (status, answer) = push("c-1", None).await;
    assert_eq!(status, 400, "{answer}");
    assert_eq!(answer["error"]["details"]["field"], "Idempotency-Key");
    // An ack of a reply the client cannot have had yet: 400, nothing applied.
    let (status, answer) = push("c-4", Some("5")).await;
    assert_eq!(status, 400, "{answer}");
    assert_eq!(
        answer["error"]["details"]["field"],
        "Idempotency-Acked-Below"
    );
    assert_eq!(push("c-4", Some("4")).await.1["size"], 4);
    s.stop().await;
}

#[tokio::test]
async fn past_the_idempotency_bound_the_oldest_outcome_goes_and_nothing_is_refused() {
    let s = start_with(ServeArgs {
        idempotency_keys_max: Some(100),
        ..ServeArgs::default()
    })
    .await;
    let push = |key: String| {
        let addr = s.addr;
        async move {
            let headers = [("Idempotency-Key", key.as_str())];
            let (status, _, answer) = raw(
                addr,
                "POST",
                "/v1/stacks/s/push",
                &headers,
                r#"{"value": "x"}"#,
            )
            .await;
            assert_eq!(status, 200, "{answer}");
            answer["size"].as_u64().expect("size")
        }
    };
    // 150 fresh keys through a bound of 100 (the leader proposes it once
    // it leads; a later bound evicts down at once): every one applied.
    let mut size = 0;
    for i in 0..150 {
        size = push(format!("w-{i}")).await;
    }
    assert_eq!(size, 150);
    let window = eventually("a bound-forced window is published", || async {
        let metrics = s.client.metrics(0).await.ok()?;
        Some(window_seconds(&metrics)).filter(|w| *w < 600.0)
    })
    .await;
    assert!(window >= 0.0);
    // The newest outcome is still kept (a retry is answered from it)...
    assert_eq!(push("w-149".into()).await, size);
    // ...and so is the oldest of the last 100, exactly at the boundary: its
    // retry gets the answer it got then (size 51), nothing applies again...
    assert_eq!(push("w-50".into()).await, 51);
    // ...the one before it went: its retry is outside the effective window
    // and applies as a new request.
    assert_eq!(push("w-49".into()).await, size + 1);
    assert_eq!(push("w-0".into()).await, size + 2);
    s.stop().await;
}

fn window_seconds(metrics: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix("deadbolt_idempotency_window_seconds "))
        .expect("the window gauge")
        .parse()
        .expect("a number")
}

#[tokio::test]
async fn fenced_kv_and_stacks() {
    let s = start().await;
    let session = s
        .client
        .session(SessionOptions::default())
        .await
        .expect("session");
    let lock = session
        .try_lock("L", LockMode::Exclusive)
        .await
        .expect("lock");
    let token = lock.fencing_token();
    let write = KvWriteRequest {
        value: "v1".into(),
        lock: Some("L".into()),
        fencing_token: Some(token),
    };
    let written = s.client.kv_put("k", &write).await.expect("fenced put");
    assert_eq!((written.size, written.last_token), (2, Some(token)));
    let stale = KvWriteRequest {
        fencing_token: Some(token - 1),
        ..write.clone()
    };
    assert!(matches!(
        s.client.kv_put("k", &stale).await,
        Err(Error::StaleToken { .. } | Error::NotHolder { .. })
    ));
    assert_eq!(s.client.kv_get("k").await.expect("get").value, "v1");

    let push = StackPushRequest {
        value: "a".into(),
        lock: None,
        fencing_token: None,
    };
    assert_eq!(s.client.stack_push("s", &push).await.expect("push").size, 1);
    assert_eq!(
        s.client
            .stack_pop("s", &StackPopRequest::default())
            .await
            .expect("pop")
            .value,
        "a"
    );
    assert!(matches!(
        s.client.stack_pop("s", &StackPopRequest::default()).await,
        Err(Error::StackEmpty)
    ));
    s.client.stack_delete("s").await.expect("delete");
    assert!(matches!(
        s.client.stack_get("s").await,
        Err(Error::NotFound { .. })
    ));
    s.stop().await;
}

#[tokio::test]
async fn listing_pages_through_locks() {
    let s = start().await;
    let session = s
        .client
        .session(SessionOptions::default())
        .await
        .expect("session");
    let mut held = Vec::new();
    for i in 0..5 {
        held.push(
            session
                .try_lock(&format!("p/{i}"), LockMode::Shared)
                .await
                .expect("lock"),
        );
    }
    let page = s
        .client
        .list_locks(&ListLocksQuery {
            prefix: Some("p/".into()),
            limit: Some(2),
            after: None,
        })
        .await
        .expect("page");
    assert_eq!(page.locks.len(), 2);
    assert_eq!(page.next.as_deref(), Some("p/1"));
    s.stop().await;
}

#[tokio::test]
async fn a_disconnected_waiter_is_withdrawn() {
    let s = start().await;
    let a = s
        .client
        .session(SessionOptions::default())
        .await
        .expect("a");
    let b = s
        .client
        .session(SessionOptions::default())
        .await
        .expect("b");
    let _held = a.try_lock("w", LockMode::Exclusive).await.expect("a holds");
    let wait = b.lock("w", LockMode::Exclusive, Duration::from_secs(30));
    // Give up after 300 ms: the client drops the request (disconnects).
    assert!(tokio::time::timeout(Duration::from_millis(300), wait)
        .await
        .is_err());
    eventually("waiter withdrawn", || async {
        let state = s.client.lock_state("w").await.ok()?;
        state.waiters.is_empty().then_some(())
    })
    .await;
    s.stop().await;
}

/// A resent acquire whose key cached `Queued` (here: one that asked again
/// while queued, whose key never learns the outcome) is answered with how
/// the wait ended, not held open for a wait that is already over.
#[tokio::test]
async fn a_resent_queued_acquire_learns_how_its_wait_ended() {
    let s = start().await;
    let a = s
        .client
        .session(SessionOptions::default())
        .await
        .expect("a");
    let b = new_session(s.addr, 60_000).await;
    let held = a.try_lock("z", LockMode::Exclusive).await.expect("a holds");
    let body = format!(r#"{{"session_id": "{b}", "wait_ms": 10000}}"#);
    let acquire = |key: &'static str| {
        let (addr, body) = (s.addr, body.clone());
        async move {
            let headers = [("Idempotency-Key", key)];
            raw(addr, "POST", "/v1/locks/z/acquire", &headers, &body).await
        }
    };
    let first = tokio::spawn(acquire("b-1"));
    eventually("b queued", || async {
        let state = s.client.lock_state("z").await.ok()?;
        (!state.waiters.is_empty()).then_some(())
    })
    .await;
    // Asking again keeps the place; this key caches `Queued`.
    let again = tokio::spawn(acquire("b-2"));
    tokio::time::sleep(Duration::from_millis(200)).await;
    held.release().await.expect("a releases");
    for call in [first, again] {
        let (status, _, answer) = call.await.expect("call");
        assert_eq!(status, 200, "{answer}");
    }
    // The resend of the re-ask replays `Queued`: it must say "granted" at
    // once, not wait 10 s for a wait that ended.
    let (status, _, answer) = tokio::time::timeout(Duration::from_secs(3), acquire("b-2"))
        .await
        .expect("answered at once");
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["session_id"], b.as_str());
    s.stop().await;
}

#[tokio::test]
async fn a_wait_longer_than_one_round_keeps_its_place_in_the_queue() {
    let s = start().await;
    let session = || s.client.session(SessionOptions::default());
    let (a, b, c) = (
        session().await.expect("a"),
        session().await.expect("b"),
        session().await.expect("c"),
    );
    let held = a.try_lock("q", LockMode::Exclusive).await.expect("a holds");
    // b waits "forever" in rounds of 1 s; c queues behind it for 4 s.
    let b_waits = b.lock_in_rounds("q", LockMode::Exclusive, Duration::from_secs(1));
    let c_waits = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        c.lock("q", LockMode::Exclusive, Duration::from_secs(4))
            .await
    };
    let release_later = async {
        // Three of b's rounds end before a lets go.
        tokio::time::sleep(Duration::from_millis(3_500)).await;
        let state = s.client.lock_state("q").await.expect("state");
        let queue: Vec<_> = state.waiters.iter().map(|w| w.session_id).collect();
        assert_eq!(queue, [b.id(), c.id()], "b kept its place ahead of c");
        held.release().await.expect("a releases");
    };
    let (b_lock, _, ()) = tokio::join!(b_waits, async { drop(c_waits.await) }, release_later);
    let b_lock = b_lock.expect("b is granted first");
    assert_eq!(b_lock.session_id(), b.id());
    s.stop().await;
}

#[tokio::test]
async fn the_deadline_covers_wait_ms() {
    let s = start().await;
    let a = s
        .client
        .session(SessionOptions::default())
        .await
        .expect("a");
    let b = s
        .client
        .session(SessionOptions::default())
        .await
        .expect("b");
    let _held = a.try_lock("d", LockMode::Exclusive).await.expect("a holds");
    let body = format!(r#"{{"session_id": "{}", "wait_ms": 1500}}"#, b.id());
    let started = tokio::time::Instant::now();
    let (status, _, answer) = raw(
        s.addr,
        "POST",
        "/v1/locks/d/acquire",
        &[("Request-Timeout-Ms", "500")],
        &body,
    )
    .await;
    // Not a 504 after 500 ms: the wait runs its 1500 ms and ends lock_held.
    assert_eq!(status, 409, "{answer}");
    assert_eq!(answer["error"]["code"], "lock_held");
    assert!(started.elapsed() >= Duration::from_millis(1400));
    s.stop().await;
}

#[tokio::test]
async fn operations_endpoints() {
    let s = start().await;
    let (status, _, _) = raw(s.addr, "GET", "/ready", &[], "").await;
    assert_eq!(status, 200);
    let cluster = s.client.cluster_status().await.expect("cluster");
    assert_eq!(cluster.node_id, 1);
    assert_eq!(cluster.leader_id, Some(1));
    assert_eq!(cluster.members.len(), 1);
    assert_eq!(cluster.members[0].role, NodeRole::Leader);
    let metrics = s.client.metrics(0).await.expect("metrics");
    assert!(metrics.contains("deadbolt_raft_term"));
    assert!(metrics.contains(
        "deadbolt_http_request_duration_seconds_bucket{endpoint=\"GET /v1/cluster\",outcome=\"ok\""
    ));
    let doc: serde_json::Value =
        serde_json::from_str(&s.client.openapi().await.expect("doc")).expect("json");
    assert!(doc["paths"]["/v1/locks/{name}/acquire"]["post"].is_object());
    s.stop().await;
}

/// Asserts an error envelope with this status and code; returns `details`.
fn expect_code(
    (status, _, body): &(u16, hyper::HeaderMap, serde_json::Value),
    want_status: u16,
    want_code: &str,
) -> serde_json::Value {
    assert_eq!(*status, want_status, "{body}");
    assert_eq!(body["error"]["code"], want_code, "{body}");
    assert!(body["error"]["message"].is_string(), "{body}");
    body["error"]["details"].clone()
}

async fn post(
    addr: SocketAddr,
    path: &str,
    body: &str,
) -> (u16, hyper::HeaderMap, serde_json::Value) {
    raw(addr, "POST", path, &[], body).await
}

async fn new_session(addr: SocketAddr, ttl_ms: u64) -> String {
    let (status, _, body) = post(addr, "/v1/sessions", &format!(r#"{{"ttl_ms": {ttl_ms}}}"#)).await;
    assert_eq!(status, 201, "{body}");
    body["session_id"].as_str().expect("session id").to_owned()
}

#[tokio::test]
async fn every_error_code_from_a_real_node() {
    let s = start().await;
    let a = new_session(s.addr, 60_000).await;
    let b = new_session(s.addr, 60_000).await;
    expect_invalid_request(s.addr).await;
    expect_not_found(s.addr).await;
    let token = expect_lock_held(s.addr, &a, &b).await;
    expect_not_holder(s.addr, &a, &b, token).await;
    expect_stale_token(s.addr, &a, &b, token).await;
    expect_stack_empty(s.addr).await;
    expect_payload_too_large_and_method_not_allowed(s.addr).await;
    s.stop().await;
}

/// invalid_request: malformed JSON, a bad name, an out-of-range value.
async fn expect_invalid_request(addr: SocketAddr) {
    let r = post(addr, "/v1/sessions", "{").await;
    expect_code(&r, 400, "invalid_request");
    let r = post(addr, "/v1/locks/bad%20name/acquire", "{}").await;
    expect_code(&r, 400, "invalid_request");
    let r = post(addr, "/v1/sessions", r#"{"ttl_ms": 5}"#).await;
    let message = r.2["error"]["message"].to_string();
    expect_code(&r, 400, "invalid_request");
    assert!(message.contains("ttl_ms"), "{message}");
}

/// not_found, with its kind.
async fn expect_not_found(addr: SocketAddr) {
    let r = raw(addr, "GET", "/v1/sessions/987654321", &[], "").await;
    assert_eq!(expect_code(&r, 404, "not_found")["kind"], "session");
    let r = raw(addr, "GET", "/v1/kv/nothing-here", &[], "").await;
    assert_eq!(expect_code(&r, 404, "not_found")["kind"], "key");
    let r = raw(addr, "GET", "/v1/stacks/nothing-here", &[], "").await;
    assert_eq!(expect_code(&r, 404, "not_found")["kind"], "stack");
    let r = raw(addr, "GET", "/v2/nothing", &[], "").await;
    expect_code(&r, 404, "not_found");
}

/// lock_held lists the holders: `a` takes lock L, `b` is refused; `a`
/// re-acquiring in the same mode gets the same token, which is returned.
async fn expect_lock_held(addr: SocketAddr, a: &str, b: &str) -> u64 {
    let r = post(
        addr,
        "/v1/locks/L/acquire",
        &format!(r#"{{"session_id": "{a}"}}"#),
    )
    .await;
    assert_eq!(r.0, 200, "{}", r.2);
    let token = r.2["fencing_token"].as_u64().expect("token");
    let r = post(
        addr,
        "/v1/locks/L/acquire",
        &format!(r#"{{"session_id": "{b}"}}"#),
    )
    .await;
    let details = expect_code(&r, 409, "lock_held");
    assert_eq!(details["holders"][0]["fencing_token"], token, "{details}");
    // Re-acquiring in the same mode returns the same token.
    let r = post(
        addr,
        "/v1/locks/L/acquire",
        &format!(r#"{{"session_id": "{a}"}}"#),
    )
    .await;
    assert_eq!(r.2["fencing_token"], token, "{}", r.2);
    token
}

/// not_holder: `b` releases `a`'s lock; a fenced write under a lock held
/// shared.
async fn expect_not_holder(addr: SocketAddr, a: &str, b: &str, token: u64) {
    let r = post(
        addr,
        "/v1/locks/L/release",
        &format!(r#"{{"session_id": "{b}", "fencing_token": {token}}}"#),
    )
    .await;
    expect_code(&r, 409, "not_holder");
    let r = post(
        addr,
        "/v1/locks/S/acquire",
        &format!(r#"{{"session_id": "{a}", "mode": "shared"}}"#),
    )
    .await;
    let shared = r.2["fencing_token"].as_u64().expect("shared token");
    let r = raw(
        addr,
        "PUT",
        "/v1/kv/k",
        &[],
        &format!(r#"{{"value": "x", "lock": "S", "fencing_token": {shared}}}"#),
    )
    .await;
    expect_code(&r, 409, "not_holder");
}

/// stale_token: L (held by `a` with `token`) is granted again since.
async fn expect_stale_token(addr: SocketAddr, a: &str, b: &str, token: u64) {
    let r = post(
        addr,
        "/v1/locks/L/release",
        &format!(r#"{{"session_id": "{a}", "fencing_token": {token}}}"#),
    )
    .await;
    assert_eq!(r.0, 200, "{}", r.2);
    let r = post(
        addr,
        "/v1/locks/L/acquire",
        &format!(r#"{{"session_id": "{b}"}}"#),
    )
    .await;
    let newer = r.2["fencing_token"].as_u64().expect("token");
    assert!(newer > token);
    let r = raw(
        addr,
        "PUT",
        "/v1/kv/k",
        &[],
        &format!(r#"{{"value": "x", "lock": "L", "fencing_token": {token}}}"#),
    )
    .await;
    expect_code(&r, 409, "stale_token");
    let r = post(
        addr,
        "/v1/locks/L/validate",
        &format!(r#"{{"fencing_token": {token}}}"#),
    )
    .await;
    assert_eq!(
        (r.2["valid"].clone(), r.2["current_token"].clone()),
        (false.into(), newer.into()),
        "{}",
        r.2
    );
}

/// stack_empty.
async fn expect_stack_empty(addr: SocketAddr) {
    let r = post(addr, "/v1/stacks/st/push", r#"{"value": "v"}"#).await;
    assert_eq!(r.2["size"], 1, "{}", r.2);
    let r = post(addr, "/v1/stacks/st/pop", "").await;
    assert_eq!(r.2["value"], "v", "{}", r.2);
    let r = post(addr, "/v1/stacks/st/pop", "").await;
    expect_code(&r, 409, "stack_empty");
}

/// payload_too_large (default limit 1 MiB) and method_not_allowed.
async fn expect_payload_too_large_and_method_not_allowed(addr: SocketAddr) {
    let big = format!(r#"{{"value": "{}"}}"#, "x".repeat(1024 * 1024 + 1));
    let r = raw(addr, "PUT", "/v1/kv/big", &[], &big).await;
    expect_code(&r, 413, "payload_too_large");
    let r = raw(addr, "DELETE", "/v1/locks/L/acquire", &[], "").await;
    expect_code(&r, 405, "method_not_allowed");
}

#[tokio::test]
async fn an_expired_session_answers_410_and_frees_its_locks() {
    let s = start().await;
    let a = new_session(s.addr, 1000).await;
    let r = post(
        s.addr,
        "/v1/locks/lease/acquire",
        &format!(r#"{{"session_id": "{a}"}}"#),
    )
    .await;
    assert_eq!(r.0, 200, "{}", r.2);
    let r = eventually("the lease runs out", || async {
        let r = raw(s.addr, "GET", &format!("/v1/sessions/{a}"), &[], "").await;
        (r.0 != 200).then_some(r)
    })
    .await;
    expect_code(&r, 410, "session_expired");
    let r = post(s.addr, &format!("/v1/sessions/{a}/keepalive"), "").await;
    expect_code(&r, 410, "session_expired");
    let state = s.client.lock_state("lease").await.expect("state");
    assert_eq!(state.state, LockStatus::Free, "{state:?}");
    s.stop().await;
}

#[tokio::test]
async fn shared_holders_coexist_and_a_queued_writer_blocks_later_readers() {
    let s = start().await;
    let [a, b, c, d] = [
        new_session(s.addr, 60_000).await,
        new_session(s.addr, 60_000).await,
        new_session(s.addr, 60_000).await,
        new_session(s.addr, 60_000).await,
    ];
    for id in [&a, &b] {
        let r = post(
            s.addr,
            "/v1/locks/rw/acquire",
            &format!(r#"{{"session_id": "{id}", "mode": "shared"}}"#),
        )
        .await;
        assert_eq!(r.0, 200, "{}", r.2);
    }
    let writer = tokio::spawn({
        let addr = s.addr;
        let c = c.clone();
        async move {
            post(
                addr,
                "/v1/locks/rw/acquire",
                &format!(r#"{{"session_id": "{c}", "wait_ms": 10000}}"#),
            )
            .await
        }
    });
    eventually("the writer queued", || async {
        let state = s.client.lock_state("rw").await.ok()?;
        (state.waiters.len() == 1).then_some(())
    })
    .await;
    let r = post(
        s.addr,
        "/v1/locks/rw/acquire",
        &format!(r#"{{"session_id": "{d}", "mode": "shared"}}"#),
    )
    .await;
    expect_code(&r, 409, "lock_held");
    // Deleting the readers' sessions releases them; the writer gets it.
    for id in [&a, &b] {
        let r = raw(s.addr, "DELETE", &format!("/v1/sessions/{id}"), &[], "").await;
        assert_eq!(r.0, 200, "{}", r.2);
    }
    let granted = writer.await.expect("join");
    assert_eq!(granted.0, 200, "{}", granted.2);
    assert_eq!(granted.2["mode"], "exclusive");
    let info = s
        .client
        .session_info(SessionId(c.parse().expect("numeric id")))
        .await;
    let info = info.expect("c's session");
    assert_eq!(info.locks.len(), 1, "{info:?}");
    s.stop().await;
}

#[tokio::test]
async fn kv_appends_and_the_value_limit() {
    let s = start().await;
    let r = raw(s.addr, "PUT", "/v1/kv/log", &[], r#"{"value": "a"}"#).await;
    assert_eq!((r.0, r.2["size"].clone()), (200, 1.into()), "{}", r.2);
    let r = post(s.addr, "/v1/kv/log/append", r#"{"value": "b"}"#).await;
    assert_eq!((r.0, r.2["size"].clone()), (200, 2.into()), "{}", r.2);
    let got = s.client.kv_get("log").await.expect("get");
    assert_eq!(got.value, "ab");
    // 256 KiB is the most a value may hold, appends included.
    let chunk = "x".repeat(200 * 1024);
    let r = post(
        s.addr,
        "/v1/kv/log/append",
        &format!(r#"{{"value": "{chunk}"}}"#),
    )
    .await;
    assert_eq!(r.0, 200, "{}", r.2);
    let r = post(
        s.addr,
        "/v1/kv/log/append",
        &format!(r#"{{"value": "{chunk}"}}"#),
    )
    .await;
    expect_code(&r, 400, "invalid_request");
    // `lock` without `fencing_token` is refused: they go together.
    let r = post(
        s.addr,
        "/v1/kv/log/append",
        r#"{"value": "c", "lock": "L"}"#,
    )
    .await;
    expect_code(&r, 400, "invalid_request");
    s.stop().await;
}

#[tokio::test]
async fn cluster_endpoints_through_the_node() {
    let s = start().await;
    let r = raw(s.addr, "GET", "/v1/cluster", &[], "").await;
    assert_eq!(r.0, 200);
    for field in [
        "cluster_id",
        "version",
        "node_id",
        "leader_id",
        "term",
        "commit_index",
    ] {
        assert!(!r.2[field].is_null(), "{field} missing: {}", r.2);
    }
    // A founder publishes its API address once it leads (entry 1 is
    // identical on every founder, so it cannot carry it).
    let r = eventually("the API address is published", || async {
        let r = raw(s.addr, "GET", "/v1/cluster", &[], "").await;
        (r.2["members"][0]["api_addr"] != "").then_some(r)
    })
    .await;
    let member = &r.2["members"][0];
    assert_eq!(member["api_addr"], s.addr.to_string(), "{}", r.2);
    // Every answer names the leader's API address (here: this node's own),
    // errors included.
    for path in ["/v1/cluster", "/v1/locks/nope"] {
        let r = raw(s.addr, "GET", path, &[], "").await;
        assert_eq!(
            r.1.get(HEADER_LEADER).and_then(|v| v.to_str().ok()),
            Some(s.addr.to_string().as_str()),
            "{path}"
        );
    }
    assert_eq!(member["voter"], true);
    let r = post(
        s.addr,
        "/v1/cluster/members",
        r#"{"id": 2, "peer_addr": "nowhere", "api_addr": "127.0.0.1:1"}"#,
    )
    .await;
    expect_code(&r, 400, "invalid_request");
    let r = post(s.addr, "/v1/cluster/leader", r#"{"id": 9}"#).await;
    expect_code(&r, 400, "invalid_request");
    let r = raw(s.addr, "GET", "/health", &[], "").await;
    assert_eq!(r.0, 200);
    s.stop().await;
}

#[tokio::test]
async fn without_a_quorum_the_node_answers_503_with_retry_after() {
    // Node 1 of three founders whose peers never start: no leader, ever.
    let data = tempfile::tempdir().expect("temp dir");
    let api = TcpListener::bind("127.0.0.1:0").await.expect("bind api");
    let peer = TcpListener::bind("127.0.0.1:0").await.expect("bind peer");
    let addr = api.local_addr().expect("addr");
    let peer_addr = peer.local_addr().expect("peer addr");
    let config = ServeArgs {
        data_dir: Some(data.path().join("node")),
        listen_api: Some(addr.to_string()),
        listen_peer: Some(peer_addr.to_string()),
        initial_cluster: Some(format!("1={peer_addr},2=127.0.0.1:9,3=127.0.0.1:11")),
        ..Default::default()
    }
    .resolve()
    .expect("valid settings");
    let server = start_server(api, peer, config)
        .await
        .expect("server starts");
    let r = raw(
        addr,
        "POST",
        "/v1/sessions",
        &[("Request-Timeout-Ms", "500")],
        "{}",
    )
    .await;
    expect_code(&r, 503, "unavailable");
    let retry_after: u64 = r.1["retry-after"]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("whole seconds");
    assert!(retry_after >= 1);
    assert_eq!(raw(addr, "GET", "/ready", &[], "").await.0, 503);
    assert_eq!(raw(addr, "GET", "/health", &[], "").await.0, 200);
    server.stop().await;
}

#[tokio::test]
async fn a_restart_resumes_the_stored_state_and_refuses_another_node_id() {
    let data = tempfile::tempdir().expect("temp dir");
    let dir = data.path().join("node");
    let settings = |api: SocketAddr, peer: SocketAddr, node_id: u64| ServeArgs {
        node_id: Some(node_id),
        data_dir: Some(dir.clone()),
        listen_api: Some(api.to_string()),
        listen_peer: Some(peer.to_string()),
        ..Default::default()
    };
    let bind_pair = || async {
        let api = TcpListener::bind("127.0.0.1:0").await.expect("bind api");
        let peer = TcpListener::bind("127.0.0.1:0").await.expect("bind peer");
        let (a, p) = (
            api.local_addr().expect("addr"),
            peer.local_addr().expect("addr"),
        );
        (api, peer, a, p)
    };
    let (api, peer, a, p) = bind_pair().await;
    let server = start_server(api, peer, settings(a, p, 1).resolve().expect("valid"))
        .await
        .expect("first start");
    let first_cluster = server.info().cluster_id.clone();
    let client = Client::new([format!("http://{a}")]).expect("client");
    client
        .kv_put(
            "kept",
            &KvWriteRequest {
                value: "yes".into(),
                lock: None,
                fencing_token: None,
            },
        )
        .await
        .expect("put");
    server.stop().await;

    // Other ports, so the flags describe another one-node cluster: the
    // stored one wins.
    let (api, peer, a, p) = bind_pair().await;
    let server = start_server(api, peer, settings(a, p, 1).resolve().expect("valid"))
        .await
        .expect("restart");
    assert!(server.info().resumed);
    assert_eq!(server.info().cluster_id, first_cluster);
    let client = Client::new([format!("http://{a}")]).expect("client");
    let kept = eventually("the write survives the restart", || async {
        client.kv_get("kept").await.ok()
    })
    .await;
    assert_eq!(kept.value, "yes");
    server.stop().await;

    let (api, peer, a, p) = bind_pair().await;
    let error = start_server(api, peer, settings(a, p, 2).resolve().expect("valid"))
        .await
        .err()
        .expect("another node id is refused");
    let error = format!("{error:#}");
    assert!(
        error.contains("--data-dir") && error.contains("--node-id"),
        "{error}"
    );
}

#[tokio::test]
async fn an_unwritable_data_dir_is_named() {
    let data = tempfile::tempdir().expect("temp dir");
    let file = data.path().join("a-file");
    std::fs::write(&file, "not a dir").expect("write");
    let api = TcpListener::bind("127.0.0.1:0").await.expect("bind api");
    let peer = TcpListener::bind("127.0.0.1:0").await.expect("bind peer");
    let config = ServeArgs {
        data_dir: Some(file.join("sub")),
        listen_api: Some(api.local_addr().expect("addr").to_string()),
        listen_peer: Some(peer.local_addr().expect("addr").to_string()),
        ..Default::default()
    }
    .resolve()
    .expect("valid settings");
    let error = start_server(api, peer, config)
        .await
        .err()
        .expect("refused");
    let error = format!("{error:#}");
    assert!(
        error.contains("--data-dir") && error.contains("a-file"),
        "{error}"
    );
}

#[tokio::test]
async fn joining_another_cluster_with_a_used_data_dir_is_refused() {
    // Node 1's data dir of one cluster...
    let data = tempfile::tempdir().expect("temp dir");
    let dir = data.path().join("node");
    let api = TcpListener::bind("127.0.0.1:0").await.expect("bind api");
    let peer = TcpListener::bind("127.0.0.1:0").await.expect("bind peer");
    let config = ServeArgs {
        data_dir: Some(dir.clone()),
        listen_api: Some(api.local_addr().expect("addr").to_string()),
        listen_peer: Some(peer.local_addr().expect("addr").to_string()),
        ..Default::default()
    }
    .resolve()
    .expect("valid");
    let first = start_server(api, peer, config)
        .await
        .expect("first cluster");
    first.stop().await;
    // ...asked to join another, running cluster.
    let other = start().await;
    let api = TcpListener::bind("127.0.0.1:0").await.expect("bind api");
    let peer = TcpListener::bind("127.0.0.1:0").await.expect("bind peer");
    let config = ServeArgs {
        data_dir: Some(dir),
        listen_api: Some(api.local_addr().expect("addr").to_string()),
        listen_peer: Some(peer.local_addr().expect("addr").to_string()),
        join: Some(format!("http://{}", other.addr)),
        ..Default::default()
    }
    .resolve()
    .expect("valid");
    let error = start_server(api, peer, config)
        .await
        .err()
        .expect("another cluster's data dir is refused");
    let error = format!("{error:#}");
    assert!(
        error.contains("--data-dir") && error.contains("--join"),
        "{error}"
    );
    other.stop().await;
}

/// Issue 13, bug 8: an acquire without a session whose `wait_ms` is longer
/// than its `ttl_ms` keeps waiting (nobody can keep its session alive while
/// it waits), and the grant starts its full TTL.
#[tokio::test]
async fn a_waiting_acquire_without_a_session_outlives_its_ttl() {
    let s = start().await;
    let a = s
        .client
        .session(SessionOptions::default())
        .await
        .expect("a");
    let held = a.try_lock("w", LockMode::Exclusive).await.expect("a holds");
    let addr = s.addr;
    let waiter = tokio::spawn(async move {
        post(
            addr,
            "/v1/locks/w/acquire",
            r#"{"ttl_ms": 1000, "wait_ms": 5000}"#,
        )
        .await
    });
    // The scenario is the passing of time: the waiter's 1 s TTL runs out
    // twice over while it waits.
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    held.release().await.expect("a releases");
    let (status, _, grant) = waiter.await.expect("waiter task");
    assert_eq!(status, 200, "{grant}");
    let session = grant["session_id"].as_str().expect("session id").to_owned();
    let (status, _, info) = raw(addr, "GET", &format!("/v1/sessions/{session}"), &[], "").await;
    assert_eq!(status, 200, "{info}");
    let left = info["expires_in_ms"].as_u64().expect("expires_in_ms");
    assert!(
        left > 500,
        "a full TTL from the grant, not what the wait left: {info}"
    );
    s.stop().await;
}

/// A keyed waiting acquire resent after its wait ended (what the Rust
/// client does after any unknown outcome) is answered from the lock's state
/// now (`settled_wait`), but only with a grant in the mode it asked for: an
/// exclusive request answered with a shared grant the session took
/// meanwhile would believe it excludes everybody while others share.
#[tokio::test]
async fn a_resent_exclusive_acquire_is_never_answered_with_a_shared_grant() {
    let s = start().await;
    let holder = s
        .client
        .create_session(&CreateSessionRequest {
            ttl_ms: 30_000,
            name: None,
        })
        .await
        .expect("holder");
    let asker = s
        .client
        .create_session(&CreateSessionRequest {
            ttl_ms: 30_000,
            name: None,
        })
        .await
        .expect("asker");
    let grant = s
        .client
        .acquire(
            "rx",
            &AcquireRequest {
                session_id: Some(holder.session_id),
                mode: LockMode::Exclusive,
                wait_ms: 0,
                ttl_ms: None,
            },
        )
        .await
        .expect("holder takes rx");
    let sid = serde_json::to_string(&asker.session_id).expect("id");
    let body = format!(r#"{{"session_id": {sid}, "mode": "exclusive", "wait_ms": 300}}"#);
    // The session waits (key 1), then asks again while queued (key 2: a
    // second task of it, or the next round of `lock_until_granted`).
    let first = tokio::spawn({
        let (addr, body) = (s.addr, body.clone());
        async move {
            let key = [("Idempotency-Key", "rx-exclusive-1")];
            raw(addr, "POST", "/v1/locks/rx/acquire", &key, &body).await
        }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let key = [("Idempotency-Key", "rx-exclusive-2")];
    let (st2, _, again) = raw(s.addr, "POST", "/v1/locks/rx/acquire", &key, &body).await;
    let (st1, _, first) = first.await.expect("joined");
    assert_eq!(
        (st1, st2),
        (409, 409),
        "the wait ends unanswered: {first} {again}"
    );
    s.client
        .release("rx", holder.session_id, Some(grant.fencing_token))
        .await
        .expect("holder lets go");
    let shared = s
        .client
        .acquire(
            "rx",
            &AcquireRequest {
                session_id: Some(asker.session_id),
                mode: LockMode::Shared,
                wait_ms: 0,
                ttl_ms: None,
            },
        )
        .await
        .expect("asker shares rx");
    assert_eq!(shared.mode, LockMode::Shared);
    // The exclusive request, resent with its key (its first answer lost).
    let (st2, _, second) = raw(s.addr, "POST", "/v1/locks/rx/acquire", &key, &body).await;
    assert!(
        !(st2 == 200 && second["mode"] == "shared"),
        "an exclusive acquire answered with a shared grant: {st2} {second}"
    );
    s.stop().await;
}
