//! The client's HTTP behaviour against a scripted in-test HTTP/1.1 server
//! (hyper's server conn on 127.0.0.1): failover, Retry-After, idempotency
//! keys on retries, deadlines, keep-alive reuse and the lost-lease signal.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use deadbolt_api::{
    AcquireRequest, CreateSessionRequest, ErrorCode, ErrorEnvelope, LockMode, SessionId,
    HEADER_IDEMPOTENCY_ACKED_BELOW, HEADER_IDEMPOTENCY_KEY, HEADER_LEADER,
    HEADER_REQUEST_TIMEOUT_MS,
};
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper::{Request, Response};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio::time::{timeout, Instant};

use crate::io::HyperIo;
use crate::{Client, ClientBuilder, Error, LeaseState, LostReason, SessionOptions};

/// Bound on every test, so a bug hangs nothing.
const TEST_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    headers: hyper::HeaderMap,
    body: Bytes,
}

impl Seen {
    fn key(&self) -> Option<String> {
        self.headers
            .get(HEADER_IDEMPOTENCY_KEY)
            .map(|v| v.to_str().unwrap().to_owned())
    }

    fn acked_below(&self) -> Option<u64> {
        self.headers
            .get(HEADER_IDEMPOTENCY_ACKED_BELOW)
            .map(|v| v.to_str().unwrap().parse().unwrap())
    }
}

enum Reply {
    Answer {
        status: u16,
        headers: Vec<(&'static str, String)>,
        body: String,
    },
    /// Never answer.
    Hang,
}

fn ok(body: &str) -> Reply {
    Reply::Answer {
        status: 200,
        headers: vec![],
        body: body.into(),
    }
}

fn api_error(code: ErrorCode, extra: Vec<(&'static str, String)>) -> Reply {
    Reply::Answer {
        status: code.http_status(),
        headers: extra,
        body: serde_json::to_string(&ErrorEnvelope::new(code, "scripted")).unwrap(),
    }
}

fn unavailable(retry_after_secs: u64) -> Reply {
    api_error(
        ErrorCode::Unavailable,
        vec![("retry-after", retry_after_secs.to_string())],
    )
}

type Script = dyn Fn(usize, &Seen) -> Reply + Send + Sync;

/// A scripted server: answers the n-th request (0-based) with `script`.
struct TestServer {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    connections: Arc<AtomicUsize>,
    accept: JoinHandle<()>,
}

impl TestServer {
    async fn start(script: impl Fn(usize, &Seen) -> Reply + Send + Sync + 'static) -> TestServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(AtomicUsize::new(0));
        let script: Arc<Script> = Arc::new(script);
        let (seen2, connections2) = (seen.clone(), connections.clone());
        let accept = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                connections2.fetch_add(1, Ordering::SeqCst);
                let (seen, script) = (seen2.clone(), script.clone());
                tokio::spawn(async move {
                    let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                        let (seen, script) = (seen.clone(), script.clone());
                        async move {
                            let (parts, body) = req.into_parts();
                            let body = body.collect().await.unwrap().to_bytes();
                            let request = Seen {
                                method: parts.method.to_string(),
                                path: parts.uri.to_string(),
                                headers: parts.headers,
                                body,
                            };
                            let n = {
                                let mut seen = seen.lock().unwrap();
                                seen.push(request.clone());
                                seen.len() - 1
                            };
                            match script(n, &request) {
                                Reply::Hang => std::future::pending().await,
                                Reply::Answer {
                                    status,
                                    headers,
                                    body,
                                } => {
                                    let mut response = Response::new(Full::new(Bytes::from(body)));
                                    *response.status_mut() =
                                        hyper::StatusCode::from_u16(status).unwrap();
                                    for (name, value) in headers {
                                        response.headers_mut().insert(name, value.parse().unwrap());
                                    }
                                    Ok::<_, Infallible>(response)
                                }
                            }
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(HyperIo::new(stream), service)
                        .await;
                });
            }
        });
        TestServer {
            addr,
            seen,
            connections,
            accept,
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// An address where nothing listens: connecting is refused.
async fn dead_endpoint() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    format!("http://{addr}")
}

fn builder(endpoints: Vec<String>) -> ClientBuilder {
    ClientBuilder::new(endpoints)
        .seed(42)
        .backoff(Duration::from_millis(10), Duration::from_millis(50))
}

const CREATED: &str = r#"{"session_id": "5", "ttl_ms": 10000}"#;

#[tokio::test]
async fn fails_over_to_the_next_endpoint_on_503_with_the_same_key() {
    timeout(TEST_TIMEOUT, async {
        let a = TestServer::start(|_, _| unavailable(5)).await;
        let b = TestServer::start(|_, _| ok(CREATED)).await;
        let client = builder(vec![a.url(), b.url()]).build().unwrap();
        let started = Instant::now();
        let created = client
            .create_session(&CreateSessionRequest {
                ttl_ms: 10000,
                name: None,
            })
            .await
            .unwrap();
        assert_eq!(created.session_id, SessionId(5));
        // Retry-After applies to the node that sent it, not to the next one.
        assert!(started.elapsed() < Duration::from_secs(1));
        let (sa, sb) = (a.seen(), b.seen());
        assert_eq!((sa.len(), sb.len()), (1, 1));
        assert!(sa[0].key().is_some());
        assert_eq!(sa[0].key(), sb[0].key());
        assert_eq!(sa[0].body, sb[0].body);
        // The next call starts at the endpoint that answered.
        client.keepalive(SessionId(5)).await.unwrap();
        assert_eq!((a.seen().len(), b.seen().len()), (1, 2));
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn fails_over_on_connection_refused() {
    timeout(TEST_TIMEOUT, async {
        let b = TestServer::start(|_, _| ok(CREATED)).await;
        let client = builder(vec![dead_endpoint().await, b.url()])
            .build()
            .unwrap();
        client
            .create_session(&CreateSessionRequest {
                ttl_ms: 10000,
                name: None,
            })
            .await
            .unwrap();
        assert_eq!(b.seen().len(), 1);
        // All endpoints dead: a transport error after the attempts run out.
        let client = builder(vec![dead_endpoint().await])
            .attempts_max(3)
            .build()
            .unwrap();
        let err = client.session_info(SessionId(1)).await.unwrap_err();
        assert!(matches!(err, Error::Transport { .. }), "{err:?}");
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn honours_retry_after_and_reuses_the_key() {
    timeout(TEST_TIMEOUT, async {
        let server =
            TestServer::start(|n, _| if n == 0 { unavailable(1) } else { ok(CREATED) }).await;
        let client = builder(vec![server.url()]).build().unwrap();
        let started = Instant::now();
        client
            .create_session(&CreateSessionRequest {
                ttl_ms: 10000,
                name: None,
            })
            .await
            .unwrap();
        assert!(started.elapsed() >= Duration::from_secs(1));
        let seen = server.seen();
        assert_eq!(seen.len(), 2);
        assert_eq!(seen[0].key(), seen[1].key());
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn retries_504_with_the_same_key_and_new_calls_get_new_keys() {
    timeout(TEST_TIMEOUT, async {
        let server = TestServer::start(|n, _| {
            if n < 2 {
                api_error(ErrorCode::Timeout, vec![])
            } else {
                ok(r#"{"size": 1}"#)
            }
        })
        .await;
        let client = builder(vec![server.url()]).build().unwrap();
        let push = deadbolt_api::StackPushRequest {
            value: "x".into(),
            lock: None,
            fencing_token: None,
        };
        assert_eq!(client.stack_push("s", &push).await.unwrap().size, 1);
        assert_eq!(client.stack_push("s", &push).await.unwrap().size, 1);
        assert_eq!(client.stack_get("s").await.unwrap().top, None);
        let seen = server.seen();
        assert_eq!(seen.len(), 5);
        let first = seen[0].key().unwrap();
        assert!(first.starts_with(client.client_id()));
        assert!(seen[..3].iter().all(|s| s.key().as_ref() == Some(&first)));
        assert_ne!(seen[3].key(), Some(first.clone()));
        assert_eq!(seen[4].method, "GET");
        assert_eq!(seen[4].key(), None);
        // Every keyed attempt acknowledges the calls that are over: nothing
        // before the first, the first once it has its answer.
        let client_id = client.client_id();
        assert_eq!(first, format!("{client_id}-1"));
        assert!(seen[..3].iter().all(|s| s.acked_below() == Some(1)));
        assert_eq!(seen[3].key(), Some(format!("{client_id}-2")));
        assert_eq!(seen[3].acked_below(), Some(2));
        assert_eq!(seen[4].acked_below(), None);
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn api_errors_are_typed_and_not_retried() {
    timeout(TEST_TIMEOUT, async {
        let server = TestServer::start(|_, _| Reply::Answer {
            status: 409,
            headers: vec![],
            body: r#"{"error": {"code": "lock_held", "message": "held", "details": {"holders": [
                {"session_id": "9", "session_name": null, "fencing_token": 42, "acquired_at_ms": 1}]}}}"#
                .into(),
        })
        .await;
        let client = builder(vec![server.url()]).build().unwrap();
        let err = client
            .acquire("jobs/nightly", &AcquireRequest::default())
            .await
            .unwrap_err();
        match err {
            Error::LockHeld { holders } => assert_eq!(holders[0].fencing_token, 42),
            other => panic!("expected LockHeld, got {other:?}"),
        }
        let seen = server.seen();
        assert_eq!(seen.len(), 1);
        // The slash in the name travels encoded; Host and deadline are set.
        assert_eq!(seen[0].path, "/v1/locks/jobs%2Fnightly/acquire");
        assert_eq!(seen[0].headers["host"], server.addr.to_string());
        assert_eq!(seen[0].headers[HEADER_REQUEST_TIMEOUT_MS], "5000");
        assert_eq!(seen[0].headers["content-type"], "application/json");
        // Bad names never leave the client.
        let err = client.lock_state("no spaces").await.unwrap_err();
        assert!(matches!(err, Error::InvalidName { .. }));
        assert_eq!(server.seen().len(), 1);
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn the_call_deadline_holds_against_a_server_that_never_answers() {
    timeout(TEST_TIMEOUT, async {
        let server = TestServer::start(|_, _| Reply::Hang).await;
        let client = builder(vec![server.url()])
            .request_timeout(Duration::from_millis(100))
            .call_timeout(Duration::from_millis(800))
            .build()
            .unwrap();
        let started = Instant::now();
        let err = client.cluster_status().await.unwrap_err();
        let elapsed = started.elapsed();
        assert!(matches!(err, Error::DeadlineExceeded { .. }), "{err:?}");
        assert!(elapsed >= Duration::from_millis(800), "{elapsed:?}");
        assert!(elapsed < Duration::from_millis(1500), "{elapsed:?}");
        // Each attempt (100 ms + grace) gave up and tried again.
        assert!(server.seen().len() >= 2);
    })
    .await
    .unwrap();
}

const NEW_SESSION: CreateSessionRequest = CreateSessionRequest {
    ttl_ms: 10000,
    name: None,
};

#[tokio::test]
async fn calls_follow_the_leader_hint_to_a_known_endpoint() {
    timeout(TEST_TIMEOUT, async {
        let leader = TestServer::start(|_, _| ok(CREATED)).await;
        let leader_authority = leader.addr.to_string();
        let follower = TestServer::start(move |_, _| Reply::Answer {
            status: 201,
            headers: vec![(HEADER_LEADER, leader_authority.clone())],
            body: CREATED.into(),
        })
        .await;
        let stranger = TestServer::start(|_, _| Reply::Answer {
            status: 201,
            headers: vec![(HEADER_LEADER, "10.9.9.9:1".into())],
            body: CREATED.into(),
        })
        .await;

        // The first call lands on the follower, which names the leader.
        let client = builder(vec![follower.url(), leader.url()]).build().unwrap();
        for _ in 0..3 {
            client.create_session(&NEW_SESSION).await.unwrap();
        }
        assert_eq!(follower.seen().len(), 1);
        assert_eq!(leader.seen().len(), 2);

        // A leader that is not among the endpoints changes nothing.
        let client = builder(vec![stranger.url(), leader.url()]).build().unwrap();
        for _ in 0..3 {
            client.create_session(&NEW_SESSION).await.unwrap();
        }
        assert_eq!(stranger.seen().len(), 3);
        assert_eq!(leader.seen().len(), 2);

        // A client told not to follow stays where it is.
        let client = builder(vec![follower.url(), leader.url()])
            .follow_leader(false)
            .build()
            .unwrap();
        for _ in 0..3 {
            client.create_session(&NEW_SESSION).await.unwrap();
        }
        assert_eq!(follower.seen().len(), 4);
        assert_eq!(leader.seen().len(), 2);
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn keep_alive_connections_are_reused() {
    timeout(TEST_TIMEOUT, async {
        let server = TestServer::start(|_, _| ok(r#"{"valid": true, "current_token": 3}"#)).await;
        let client = builder(vec![server.url()]).build().unwrap();
        for _ in 0..5 {
            assert!(client.validate("L", 3).await.unwrap().valid);
        }
        assert_eq!(server.connections.load(Ordering::SeqCst), 1);
        assert_eq!(server.seen()[0].key(), None);
    })
    .await
    .unwrap();
}

/// Scripted session server: creation and locks answer; keepalives answer
/// 200 while `healthy`, else 503 (or 410 when `expired`).
async fn session_server(
    ttl_ms: u64,
    healthy: Arc<AtomicBool>,
    expired: Arc<AtomicBool>,
) -> TestServer {
    TestServer::start(move |_, seen| {
        if seen.path.ends_with("/keepalive") {
            if expired.load(Ordering::SeqCst) {
                api_error(ErrorCode::SessionExpired, vec![])
            } else if healthy.load(Ordering::SeqCst) {
                ok(&format!(r#"{{"ttl_ms": {ttl_ms}}}"#))
            } else {
                unavailable(1)
            }
        } else if seen.path == "/v1/sessions" {
            ok(&format!(r#"{{"session_id": "5", "ttl_ms": {ttl_ms}}}"#))
        } else if seen.path.ends_with("/acquire") {
            ok(r#"{"lock": "L", "mode": "exclusive", "session_id": "5", "fencing_token": 77}"#)
        } else {
            ok("{}")
        }
    })
    .await
}

#[tokio::test]
async fn lease_is_lost_when_keepalives_fail() {
    timeout(TEST_TIMEOUT, async {
        let healthy = Arc::new(AtomicBool::new(false));
        let expired = Arc::new(AtomicBool::new(false));
        let server = session_server(1000, healthy, expired).await;
        let client = builder(vec![server.url()]).build().unwrap();
        let sent = Instant::now();
        let session = client
            .session(SessionOptions {
                ttl: Duration::from_millis(1000),
                ..SessionOptions::default()
            })
            .await
            .unwrap();
        let lock = session.try_lock("L", LockMode::Exclusive).await.unwrap();
        assert_eq!(lock.fencing_token(), 77);
        assert!(!lock.is_lost());
        let reason = lock.lost().await;
        let elapsed = sent.elapsed();
        assert_eq!(reason, LostReason::Unconfirmed);
        // TTL × (1 − 0.1) from the creation's send time, and not much later.
        assert!(elapsed >= Duration::from_millis(900), "{elapsed:?}");
        assert!(elapsed < Duration::from_millis(1300), "{elapsed:?}");
        assert!(session.is_lost());
        assert_eq!(
            session.lease_state(),
            LeaseState::Lost(LostReason::Unconfirmed)
        );
        assert!(matches!(
            session.try_lock("L", LockMode::Exclusive).await,
            Err(Error::LeaseLost)
        ));
        assert!(server
            .seen()
            .iter()
            .any(|s| s.path == "/v1/sessions/5/keepalive"));
        drop(lock);
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn keepalives_extend_the_lease_until_the_server_ends_it() {
    timeout(TEST_TIMEOUT, async {
        let healthy = Arc::new(AtomicBool::new(true));
        let expired = Arc::new(AtomicBool::new(false));
        let server = session_server(1000, healthy, expired.clone()).await;
        let client = builder(vec![server.url()]).build().unwrap();
        let session = client
            .session(SessionOptions {
                ttl: Duration::from_millis(1000),
                ..SessionOptions::default()
            })
            .await
            .unwrap();
        // Three TTLs pass; keepalives every ~333 ms keep it alive.
        let lost = timeout(Duration::from_millis(3000), session.lost()).await;
        assert!(
            lost.is_err(),
            "lease lost while keepalives succeed: {lost:?}"
        );
        assert!(!session.is_lost());
        let keepalives = server
            .seen()
            .iter()
            .filter(|s| s.path.ends_with("/keepalive"))
            .count();
        assert!((7..=10).contains(&keepalives), "{keepalives} keepalives");
        expired.store(true, Ordering::SeqCst);
        assert_eq!(session.lost().await, LostReason::Expired);
        // Closing deletes the session.
        session.close().await.unwrap();
        let last = server.seen().pop().unwrap();
        assert_eq!(
            (last.method.as_str(), last.path.as_str()),
            ("DELETE", "/v1/sessions/5")
        );
        assert!(last.key().is_some());
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn dropping_a_session_deletes_it_in_the_background() {
    timeout(TEST_TIMEOUT, async {
        let server = session_server(
            1000,
            Arc::new(AtomicBool::new(true)),
            Arc::new(AtomicBool::new(false)),
        )
        .await;
        let client: Client = builder(vec![server.url()]).build().unwrap();
        let session = client.session(SessionOptions::default()).await.unwrap();
        drop(session);
        // Poll with a deadline rather than sleeping a guess.
        let deadline = Instant::now() + Duration::from_secs(2);
        while !server.seen().iter().any(|s| s.method == "DELETE") {
            assert!(Instant::now() < deadline, "no DELETE after drop");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn lease_is_lost_on_time_when_keepalives_hang() {
    timeout(TEST_TIMEOUT, async {
        // A clogged link looks like this: requests go out, nothing comes back.
        let server = TestServer::start(|_, seen| {
            if seen.path.ends_with("/keepalive") {
                Reply::Hang
            } else {
                ok(r#"{"session_id": "5", "ttl_ms": 2000}"#)
            }
        })
        .await;
        let client = builder(vec![server.url()]).build().unwrap();
        let sent = Instant::now();
        let session = client
            .session(SessionOptions {
                ttl: Duration::from_millis(2000),
                drift_allowance: 0.25,
                ..SessionOptions::default()
            })
            .await
            .unwrap();
        assert_eq!(session.lost().await, LostReason::Unconfirmed);
        let elapsed = sent.elapsed();
        // 2000 ms × (1 − 0.25) from the creation's send time.
        assert!(elapsed >= Duration::from_millis(1500), "{elapsed:?}");
        assert!(elapsed < Duration::from_millis(1800), "{elapsed:?}");
    })
    .await
    .unwrap();
}

/// An exclusive `Session::lock` whose first answer was lost (504) is asked
/// again with its key; a server that answered with a grant in the other
/// mode (a shared grant the session took meanwhile through another call;
/// see the server test
/// `a_resent_exclusive_acquire_is_never_answered_with_a_shared_grant`)
/// must never have it handed out as the exclusive lock asked for.
#[tokio::test]
async fn an_exclusive_lock_is_never_a_shared_grant() {
    timeout(TEST_TIMEOUT, async {
        let acquires = Arc::new(AtomicUsize::new(0));
        let server = TestServer::start({
            let acquires = acquires.clone();
            move |_, seen| {
                if seen.path == "/v1/sessions" {
                    ok(CREATED)
                } else if seen.path.ends_with("/acquire") {
                    if acquires.fetch_add(1, Ordering::SeqCst) == 0 {
                        api_error(ErrorCode::Timeout, vec![])
                    } else {
                        ok(r#"{"lock": "L", "mode": "shared", "session_id": "5", "fencing_token": 77}"#)
                    }
                } else {
                    ok("{}")
                }
            }
        })
        .await;
        let client = builder(vec![server.url()]).attempts_max(1).build().unwrap();
        let session = client.session(SessionOptions::default()).await.unwrap();
        let asked = session
            .lock("L", deadbolt_api::LockMode::Exclusive, Duration::from_millis(100))
            .await;
        if let Ok(lock) = &asked {
            assert_eq!(
                lock.mode(),
                deadbolt_api::LockMode::Exclusive,
                "Session::lock(Exclusive) returned a shared grant as held"
            );
        }
    })
    .await
    .unwrap();
}

/// A proxy's 503 without our envelope (Envoy's "upstream connect error or
/// disconnect/reset before headers": the node may have read and applied
/// the request) is an unknown outcome, asked again with the key, never
/// "not applied" with a committed grant left to the session, held by
/// nobody, for the session's life.
#[tokio::test]
async fn a_proxys_503_never_leaves_a_grant_held_by_nobody() {
    timeout(TEST_TIMEOUT, async {
        let acquires = Arc::new(AtomicUsize::new(0));
        let server = TestServer::start({
            let acquires = acquires.clone();
            move |_, seen| {
                if seen.path == "/v1/sessions" {
                    ok(CREATED)
                } else if seen.path.ends_with("/acquire") {
                    if acquires.fetch_add(1, Ordering::SeqCst) == 0 {
                        Reply::Answer {
                            status: 503,
                            headers: vec![],
                            body: "upstream connect error or disconnect/reset before headers. \
                                   reset reason: connection termination"
                                .into(),
                        }
                    } else {
                        // What the cluster did with the first copy.
                        ok(r#"{"lock": "L", "mode": "exclusive", "session_id": "5", "fencing_token": 77}"#)
                    }
                } else {
                    ok("{}")
                }
            }
        })
        .await;
        let client = builder(vec![server.url()]).attempts_max(1).build().unwrap();
        let session = client.session(SessionOptions::default()).await.unwrap();
        let asked = session
            .try_lock("L", deadbolt_api::LockMode::Exclusive)
            .await;
        drop(asked);
        tokio::time::sleep(Duration::from_millis(500)).await;
        let seen = server.seen();
        let asked_again = seen.iter().filter(|s| s.path.ends_with("/acquire")).count() > 1;
        let released = seen.iter().any(|s| s.path.ends_with("/release"));
        assert!(
            asked_again || released,
            "the acquire's outcome is unknown, yet it was neither asked again nor given back: {:?}",
            seen.iter().map(|s| s.path.clone()).collect::<Vec<_>>()
        );
    })
    .await
    .unwrap();
}

/// A dropped `Session`'s background delete refused for a moment (an
/// election: 503 past the call's attempts) is asked again, like a dropped
/// `Lock`'s give-back, rather than leaving every lock the session held to
/// nobody until its TTL runs out (up to an hour).
#[tokio::test]
async fn a_dropped_sessions_delete_is_asked_again_after_a_503() {
    timeout(TEST_TIMEOUT, async {
        let deletes = Arc::new(AtomicUsize::new(0));
        let server = TestServer::start({
            let deletes = deletes.clone();
            move |_, seen| {
                if seen.path == "/v1/sessions" {
                    ok(CREATED)
                } else if seen.method == "DELETE" {
                    if deletes.fetch_add(1, Ordering::SeqCst) == 0 {
                        unavailable(1)
                    } else {
                        ok("{}")
                    }
                } else {
                    ok("{}")
                }
            }
        })
        .await;
        let client = builder(vec![server.url()]).attempts_max(1).build().unwrap();
        let session = client.session(SessionOptions::default()).await.unwrap();
        drop(session);
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert!(
            deletes.load(Ordering::SeqCst) >= 2,
            "the dropped session's delete was refused once and never asked again"
        );
    })
    .await
    .unwrap();
}
