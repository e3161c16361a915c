//! HTTP-layer tests that need no node: routing, envelopes, limits,
//! validation, OpenAPI coverage, and the serve loop over real sockets
//! (HTTP/1.1, h2c, graceful shutdown). Anything that reaches the node
//! answers 503 here, which the tests use to show validation came first.

use std::collections::BTreeSet;

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use axum::Router;
use deadbolt_api::{
    ErrorCode, ErrorEnvelope, HEADER_IDEMPOTENCY_ACKED_BELOW, HEADER_IDEMPOTENCY_KEY,
    HEADER_REQUEST_TIMEOUT_MS,
};
use http_body_util::BodyExt;
use tower::ServiceExt;

use super::*;

fn detached() -> Router {
    app_detached(ApiSettings {
        body_bytes_max: 1024,
        ..ApiSettings::default()
    })
}

async fn send(
    router: &Router,
    request: Request<Body>,
) -> (StatusCode, axum::http::HeaderMap, Vec<u8>) {
    let response = router.clone().oneshot(request).await.expect("infallible");
    let status = response.status();
    let headers = response.headers().clone();
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes()
        .to_vec();
    (status, headers, body)
}

fn request(method: Method, uri: &str, body: &str) -> Request<Body> {
    Request::builder()
        .method(method)
        .uri(uri)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_owned()))
        .expect("valid request")
}

/// Sends and checks the answer is the envelope with `code`; returns it.
async fn expect_error(router: &Router, req: Request<Body>, code: ErrorCode) -> ErrorEnvelope {
    let (status, headers, body) = send(router, req).await;
    assert_eq!(
        status.as_u16(),
        code.http_status(),
        "{}",
        String::from_utf8_lossy(&body)
    );
    assert_eq!(headers[header::CONTENT_TYPE], "application/json");
    let envelope: ErrorEnvelope = serde_json::from_slice(&body)
        .unwrap_or_else(|e| panic!("not an envelope ({e}): {}", String::from_utf8_lossy(&body)));
    assert_eq!(envelope.error.code, code);
    if code == ErrorCode::Unavailable {
        assert_eq!(headers[header::RETRY_AFTER], "1");
    }
    envelope
}

#[tokio::test]
async fn unknown_routes_are_404_envelopes() {
    let r = detached();
    for uri in ["/", "/v2/locks/a", "/v1/locks/a/b/c/d", "/v1/sessionsx"] {
        let e = expect_error(&r, request(Method::GET, uri, ""), ErrorCode::NotFound).await;
        assert!(e.error.message.contains("no route"), "{e:?}");
    }
}

#[tokio::test]
async fn wrong_methods_are_405_envelopes() {
    let r = detached();
    for (method, uri) in [
        (Method::GET, "/v1/locks/a/acquire"),
        (Method::PUT, "/v1/sessions"),
        (Method::POST, "/health"),
        (Method::DELETE, "/v1/kv/k"),
        (Method::PATCH, "/v1/cluster"),
    ] {
        expect_error(&r, request(method, uri, ""), ErrorCode::MethodNotAllowed).await;
    }
}

#[tokio::test]
async fn bodies_over_the_limit_are_413() {
    let r = detached();
    let big = format!(r#"{{"value": "{}"}}"#, "x".repeat(2048));
    expect_error(
        &r,
        request(Method::PUT, "/v1/kv/k", &big),
        ErrorCode::PayloadTooLarge,
    )
    .await;
    expect_error(
        &r,
        request(Method::POST, "/v1/stacks/s/push", &big),
        ErrorCode::PayloadTooLarge,
    )
    .await;
    // Under the limit, the request gets as far as the (missing) node.
    expect_error(
        &r,
        request(Method::PUT, "/v1/kv/k", r#"{"value": "x"}"#),
        ErrorCode::Unavailable,
    )
    .await;
}

#[tokio::test]
async fn malformed_json_names_the_field() {
    let r = detached();
    let cases = [
        ("/v1/locks/a/acquire", r#"{"mode": "sideways"}"#, "mode"),
        ("/v1/locks/a/acquire", r#"{"wait_ms": -1}"#, "wait_ms"),
        ("/v1/locks/a/acquire", r#"{"session_id": 12}"#, "session_id"),
        (
            "/v1/locks/a/release",
            r#"{"fencing_token": 1}"#,
            "session_id",
        ),
        (
            "/v1/locks/a/validate",
            r#"{"fencing_token": "x"}"#,
            "fencing_token",
        ),
        ("/v1/sessions", r#"{"ttl_ms": "long"}"#, "ttl_ms"),
        ("/v1/sessions", r#"{"ttl_ms": 10"#, "body"),
        ("/v1/sessions", "[]", "body"),
        (
            "/v1/cluster/members",
            r#"{"id": 2, "peer_addr": "h:1"}"#,
            "api_addr",
        ),
    ];
    for (uri, body, field) in cases {
        let e = expect_error(
            &r,
            request(Method::POST, uri, body),
            ErrorCode::InvalidRequest,
        )
        .await;
        assert_eq!(
            e.error.details.field.as_deref(),
            Some(field),
            "{uri} {body}: {e:?}"
        );
        assert!(e.error.message.contains(field), "{e:?}");
    }
}

#[tokio::test]
async fn out_of_range_values_name_the_field() {
    let r = detached();
    let cases = [
        (Method::POST, "/v1/sessions", r#"{"ttl_ms": 999}"#, "ttl_ms"),
        (
            Method::POST,
            "/v1/sessions",
            r#"{"ttl_ms": 3600001}"#,
            "ttl_ms",
        ),
        (
            Method::POST,
            "/v1/locks/a/acquire",
            r#"{"wait_ms": 300001}"#,
            "wait_ms",
        ),
        (
            Method::POST,
            "/v1/locks/a/acquire",
            r#"{"ttl_ms": 5}"#,
            "ttl_ms",
        ),
        (
            Method::PUT,
            "/v1/kv/k",
            r#"{"value": "v", "lock": "L"}"#,
            "fencing_token",
        ),
        (
            Method::PUT,
            "/v1/kv/k",
            r#"{"value": "v", "fencing_token": 3}"#,
            "lock",
        ),
        (
            Method::PUT,
            "/v1/kv/k",
            r#"{"value": "v", "lock": "a b", "fencing_token": 3}"#,
            "lock",
        ),
        (Method::GET, "/v1/locks?limit=0", "", "limit"),
        (Method::GET, "/v1/locks?limit=1001", "", "limit"),
        (Method::GET, "/v1/locks?limit=many", "", "limit"),
        (Method::GET, "/v1/sessions/abc", "", "id"),
        (Method::GET, "/v1/sessions/+1", "", "id"),
        (
            Method::POST,
            "/v1/cluster/members",
            r#"{"id": 2, "peer_addr": "nope", "api_addr": "h:1"}"#,
            "peer_addr",
        ),
    ];
    for (method, uri, body, field) in cases {
        let e = expect_error(&r, request(method, uri, body), ErrorCode::InvalidRequest).await;
        assert_eq!(
            e.error.details.field.as_deref(),
            Some(field),
            "{uri} {body}: {e:?}"
        );
    }
    let e = expect_error(
        &r,
        request(Method::DELETE, "/v1/cluster/members/x", ""),
        ErrorCode::InvalidRequest,
    )
    .await;
    assert_eq!(e.error.details.field.as_deref(), Some("path"));
}

#[tokio::test]
async fn bad_names_are_refused_before_the_node() {
    let r = detached();
    let long = "a".repeat(257);
    let cases = [
        (Method::POST, "/v1/locks/a%20b/acquire".to_owned(), "{}"),
        (Method::GET, format!("/v1/locks/{long}"), ""),
        (
            Method::POST,
            "/v1/locks/%C3%A9/release".to_owned(),
            r#"{"session_id": "1"}"#,
        ),
        (Method::GET, "/v1/kv/a%3Fb".to_owned(), ""),
        (
            Method::POST,
            "/v1/stacks/a*b/push".to_owned(),
            r#"{"value": "x"}"#,
        ),
    ];
    for (method, uri, body) in cases {
        let e = expect_error(&r, request(method, &uri, body), ErrorCode::InvalidRequest).await;
        assert!(e.error.details.field.is_some(), "{uri}: {e:?}");
    }
    // A `/` inside a name arrives as %2F and is accepted.
    expect_error(
        &r,
        request(Method::GET, "/v1/locks/jobs%2Fnightly", ""),
        ErrorCode::Unavailable,
    )
    .await;
}

#[tokio::test]
async fn request_timeouts_out_of_range_are_400() {
    let r = detached();
    for value in ["0", "60001", "-5", "soon"] {
        let mut req = request(Method::POST, "/v1/sessions", "{}");
        req.headers_mut()
            .insert(HEADER_REQUEST_TIMEOUT_MS, value.parse().unwrap());
        let e = expect_error(&r, req, ErrorCode::InvalidRequest).await;
        assert_eq!(
            e.error.details.field.as_deref(),
            Some(HEADER_REQUEST_TIMEOUT_MS)
        );
    }
    let mut req = request(Method::GET, "/v1/locks/a", "");
    req.headers_mut()
        .insert(HEADER_REQUEST_TIMEOUT_MS, "60001".parse().unwrap());
    expect_error(&r, req, ErrorCode::InvalidRequest).await;
    let mut req = request(Method::POST, "/v1/sessions", "{}");
    req.headers_mut()
        .insert(HEADER_REQUEST_TIMEOUT_MS, "60000".parse().unwrap());
    expect_error(&r, req, ErrorCode::Unavailable).await;
}

#[tokio::test]
async fn long_idempotency_keys_are_400() {
    let r = detached();
    let mut req = request(Method::POST, "/v1/sessions", "{}");
    req.headers_mut()
        .insert(HEADER_IDEMPOTENCY_KEY, "k".repeat(129).parse().unwrap());
    let e = expect_error(&r, req, ErrorCode::InvalidRequest).await;
    assert_eq!(
        e.error.details.field.as_deref(),
        Some(HEADER_IDEMPOTENCY_KEY)
    );
}

#[tokio::test]
async fn bad_idempotency_acks_are_400() {
    let r = detached();
    // Not a number, and an ack of a reply the client cannot have yet.
    for (key, acked) in [("c-3", "soon"), ("c-3", "4")] {
        let mut req = request(Method::POST, "/v1/sessions", "{}");
        req.headers_mut()
            .insert(HEADER_IDEMPOTENCY_KEY, key.parse().unwrap());
        req.headers_mut()
            .insert(HEADER_IDEMPOTENCY_ACKED_BELOW, acked.parse().unwrap());
        let e = expect_error(&r, req, ErrorCode::InvalidRequest).await;
        assert_eq!(
            e.error.details.field.as_deref(),
            Some(HEADER_IDEMPOTENCY_ACKED_BELOW),
            "{acked}"
        );
    }
}

#[tokio::test]
async fn health_metrics_and_documents_need_no_node() {
    let r = detached();
    let (status, _, body) = send(&r, request(Method::GET, "/health", "")).await;
    assert_eq!((status, body.as_slice()), (StatusCode::OK, &b"{}"[..]));
    expect_error(
        &r,
        request(Method::GET, "/ready", ""),
        ErrorCode::Unavailable,
    )
    .await;
    let (status, _, body) = send(&r, request(Method::GET, "/docs", "")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(String::from_utf8_lossy(&body).contains("/openapi.json"));
    let (status, _, body) = send(&r, request(Method::GET, "/metrics", "")).await;
    assert_eq!(status, StatusCode::OK);
    let text = String::from_utf8(body).unwrap();
    // The requests above were measured, per endpoint and outcome.
    assert!(
        text.contains(r#"endpoint="GET /health",outcome="ok""#),
        "{text}"
    );
    assert!(
        text.contains(r#"endpoint="GET /ready",outcome="unavailable""#),
        "{text}"
    );
}

#[tokio::test]
async fn openapi_covers_every_route_and_only_those() {
    let doc: serde_json::Value = serde_json::from_str(openapi_document()).expect("valid JSON");
    let mut documented = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in item.as_object().expect("path item").keys() {
            if method != "parameters" {
                documented.insert((method.to_uppercase(), path.clone()));
            }
        }
    }
    let served: BTreeSet<_> = route_table()
        .iter()
        .map(|r| (r.method.to_string(), r.path.to_owned()))
        .collect();
    assert_eq!(served, documented);
    // The schemas come from the serving types.
    for schema in [
        "AcquireRequest",
        "ErrorEnvelope",
        "SessionInfo",
        "SessionId",
        "ClusterStatus",
        "QuorumStatus",
    ] {
        assert!(
            doc["components"]["schemas"].get(schema).is_some(),
            "{schema} missing"
        );
    }
    let session = &doc["paths"]["/v1/sessions/{id}"]["get"]["responses"]["200"]["description"];
    assert!(session.as_str().unwrap_or("").contains("expires_in_ms"));
}

#[tokio::test]
async fn every_route_in_the_table_is_served() {
    // Each route answers something other than the 404/405 fallbacks.
    let r = detached();
    for route in route_table() {
        let uri = route
            .path
            .replace("{id}", "1")
            .replace("{name}", "n")
            .replace("{key}", "k");
        let (status, _, body) = send(&r, request(route.method.clone(), &uri, "{}")).await;
        let text = String::from_utf8_lossy(&body);
        assert!(
            status != StatusCode::METHOD_NOT_ALLOWED && !text.contains("no route"),
            "{} {uri}: {status} {text}",
            route.method
        );
    }
}

#[cfg(not(madsim))]
mod over_sockets {
    //! The serve loop with real sockets: HTTP/1.1 and prior-knowledge h2c
    //! on one port, and graceful shutdown.

    use super::*;
    use deadbolt_client::HyperIo;
    use deadbolt_runtime::shutdown_channel;
    use std::time::Duration;
    use tokio::net::{TcpListener, TcpStream};

    use crate::http::serve::SpawnExecutor;

    async fn start() -> (
        std::net::SocketAddr,
        deadbolt_runtime::ShutdownTrigger,
        tokio::task::JoinHandle<std::io::Result<()>>,
    ) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (trigger, shutdown) = shutdown_channel();
        let options = ServeHttpOptions {
            drain_timeout: Duration::from_secs(2),
            ..ServeHttpOptions::default()
        };
        let task = tokio::spawn(serve_http_with(listener, detached(), shutdown, options));
        (addr, trigger, task)
    }

    fn get(path: &str) -> Request<http_body_util::Empty<bytes::Bytes>> {
        Request::builder()
            .uri(path)
            .header(header::HOST, "localhost")
            .body(http_body_util::Empty::new())
            .expect("request")
    }

    #[tokio::test]
    async fn http1_and_h2c_on_one_port_then_graceful_shutdown() {
        let (addr, trigger, task) = start().await;

        let stream = TcpStream::connect(addr).await.expect("connect");
        let (mut h1, conn) = hyper::client::conn::http1::handshake(HyperIo::new(stream))
            .await
            .expect("h1 handshake");
        tokio::spawn(conn);
        let response = h1.send_request(get("/health")).await.expect("h1 request");
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.version(), axum::http::Version::HTTP_11);
        let response = h1.send_request(get("/nope")).await.expect("h1 request");
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        let body = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        let envelope: ErrorEnvelope = serde_json::from_slice(&body).expect("envelope");
        assert_eq!(envelope.error.code, ErrorCode::NotFound);

        let stream = TcpStream::connect(addr).await.expect("connect");
        let (mut h2, conn) =
            hyper::client::conn::http2::handshake(SpawnExecutor, HyperIo::new(stream))
                .await
                .expect("h2c handshake");
        tokio::spawn(conn);
        let response = h2.send_request(get("/health")).await.expect("h2 request");
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.version(), axum::http::Version::HTTP_2);

        trigger.trigger();
        let ended = tokio::time::timeout(Duration::from_secs(5), task).await;
        assert!(matches!(ended, Ok(Ok(Ok(())))), "{ended:?}");
        // No longer accepting.
        assert!(TcpStream::connect(addr).await.is_err());
    }

    /// Serves a router whose only route sleeps `delay` before answering;
    /// the receiver gets one message each time a request reaches the route.
    async fn start_slow(
        delay: Duration,
        drain_timeout: Duration,
    ) -> (
        std::net::SocketAddr,
        deadbolt_runtime::ShutdownTrigger,
        tokio::task::JoinHandle<std::io::Result<()>>,
        tokio::sync::mpsc::UnboundedReceiver<()>,
    ) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (trigger, shutdown) = shutdown_channel();
        let (entered_tx, entered) = tokio::sync::mpsc::unbounded_channel();
        let router = Router::new().route(
            "/slow",
            axum::routing::get(move || {
                let _ = entered_tx.send(());
                async move {
                    tokio::time::sleep(delay).await;
                    "done"
                }
            }),
        );
        let options = ServeHttpOptions {
            drain_timeout,
            connections_max: 1,
        };
        let task = tokio::spawn(serve_http_with(listener, router, shutdown, options));
        (addr, trigger, task, entered)
    }

    /// Waits until a request has reached the slow route (it is in flight).
    async fn wait_entered(entered: &mut tokio::sync::mpsc::UnboundedReceiver<()>) {
        tokio::time::timeout(Duration::from_secs(5), entered.recv())
            .await
            .expect("the request reaches the handler within 5 s")
            .expect("the route is still served");
    }

    async fn h1(
        addr: std::net::SocketAddr,
    ) -> hyper::client::conn::http1::SendRequest<http_body_util::Empty<bytes::Bytes>> {
        let stream = TcpStream::connect(addr).await.expect("connect");
        let (sender, conn) = hyper::client::conn::http1::handshake(HyperIo::new(stream))
            .await
            .expect("handshake");
        tokio::spawn(conn);
        sender
    }

    #[tokio::test]
    async fn connections_beyond_the_limit_wait_for_a_slot() {
        // start_slow serves one connection at a time.
        let (addr, _trigger, _task, _entered) =
            start_slow(Duration::ZERO, Duration::from_secs(1)).await;
        let mut first = h1(addr).await;
        let response = first
            .send_request(get("/slow"))
            .await
            .expect("first served");
        // Read to the end: a dropped unread body makes hyper close the
        // connection, which would free the slot.
        response.into_body().collect().await.expect("body");
        let mut second = h1(addr).await;
        let waiting = tokio::spawn(async move { second.send_request(get("/slow")).await });
        // A bound for something that must not happen (no state to wait
        // for): the second request stays unserved while the first holds
        // the only slot.
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!waiting.is_finished(), "served past the connection limit");
        drop(first);
        let answered = tokio::time::timeout(Duration::from_secs(5), waiting).await;
        assert!(matches!(answered, Ok(Ok(Ok(_)))), "{answered:?}");
    }

    #[tokio::test]
    async fn shutdown_lets_in_flight_requests_finish() {
        let (addr, trigger, task, mut entered) =
            start_slow(Duration::from_millis(300), Duration::from_secs(5)).await;
        let mut sender = h1(addr).await;
        let in_flight = tokio::spawn(async move { sender.send_request(get("/slow")).await });
        wait_entered(&mut entered).await;
        trigger.trigger();
        let response = in_flight
            .await
            .expect("join")
            .expect("answered despite shutdown");
        assert_eq!(response.status(), StatusCode::OK);
        let ended = tokio::time::timeout(Duration::from_secs(5), task).await;
        assert!(matches!(ended, Ok(Ok(Ok(())))), "{ended:?}");
    }

    #[tokio::test]
    async fn shutdown_cuts_requests_that_outlive_the_drain_bound() {
        let (addr, trigger, task, mut entered) =
            start_slow(Duration::from_secs(60), Duration::from_millis(200)).await;
        let mut sender = h1(addr).await;
        let in_flight = tokio::spawn(async move { sender.send_request(get("/slow")).await });
        wait_entered(&mut entered).await;
        let started = tokio::time::Instant::now();
        trigger.trigger();
        let ended = tokio::time::timeout(Duration::from_secs(5), task).await;
        assert!(matches!(ended, Ok(Ok(Ok(())))), "{ended:?}");
        assert!(started.elapsed() < Duration::from_secs(3));
        // The cut request fails instead of hanging.
        let cut = tokio::time::timeout(Duration::from_secs(5), in_flight).await;
        assert!(matches!(cut, Ok(Ok(Err(_)))), "{cut:?}");
    }
}

/// The same serve loop inside the simulator: no real tokio runtime is
/// reached (executor, timer, IO adapter are ours), h2c works, and shutdown
/// drains.
#[cfg(madsim)]
#[tokio::test]
async fn serve_loop_runs_under_madsim() {
    use std::time::Duration;

    use deadbolt_client::HyperIo;
    use deadbolt_runtime::shutdown_channel;
    use madsim::runtime::Handle;
    use tokio::net::{TcpListener, TcpStream};

    use crate::http::serve::SpawnExecutor;

    let handle = Handle::current();
    let server = handle
        .create_node()
        .name("server")
        .ip("10.0.0.1".parse().unwrap())
        .build();
    let client = handle
        .create_node()
        .name("client")
        .ip("10.0.0.2".parse().unwrap())
        .build();
    let (trigger, shutdown) = shutdown_channel();
    let served = server.spawn(async move {
        let listener = TcpListener::bind("10.0.0.1:7070").await.expect("bind");
        serve_http(listener, detached(), shutdown).await
    });
    let checked = client.spawn(async move {
        // The listener may not be bound yet: retry the first connect.
        let stream = loop {
            match TcpStream::connect("10.0.0.1:7070").await {
                Ok(stream) => break stream,
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        };
        let (mut h1, conn) = hyper::client::conn::http1::handshake(HyperIo::new(stream))
            .await
            .expect("h1 handshake");
        tokio::spawn(conn);
        let get = |path: &str| {
            Request::builder()
                .uri(path)
                .header(header::HOST, "server")
                .body(http_body_util::Empty::<bytes::Bytes>::new())
                .expect("request")
        };
        for _ in 0..20 {
            let response = h1.send_request(get("/health")).await.expect("h1");
            assert_eq!(response.status(), StatusCode::OK);
        }
        let response = h1.send_request(get("/nope")).await.expect("h1");
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        let body = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        let envelope: ErrorEnvelope = serde_json::from_slice(&body).expect("envelope");
        assert_eq!(envelope.error.code, ErrorCode::NotFound);

        let stream = TcpStream::connect("10.0.0.1:7070").await.expect("connect");
        let (mut h2, conn) =
            hyper::client::conn::http2::handshake(SpawnExecutor, HyperIo::new(stream))
                .await
                .expect("h2c handshake");
        tokio::spawn(conn);
        let response = h2.send_request(get("/health")).await.expect("h2");
        assert_eq!(response.version(), axum::http::Version::HTTP_2);
    });
    tokio::time::timeout(Duration::from_secs(30), checked)
        .await
        .expect("requests answered in simulated time")
        .expect("client task");
    trigger.trigger();
    let result = tokio::time::timeout(Duration::from_secs(30), served)
        .await
        .expect("serve loop ends after shutdown")
        .expect("server task");
    assert!(result.is_ok(), "{result:?}");
}

/// A body that never arrives.
struct StalledBody;

impl hyper::body::Body for StalledBody {
    type Data = bytes::Bytes;
    type Error = std::convert::Infallible;
    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<bytes::Bytes>, Self::Error>>> {
        std::task::Poll::Pending
    }
}

#[tokio::test]
async fn a_stalled_body_ends_at_the_request_deadline() {
    let r = detached();
    let req = Request::builder()
        .method(Method::POST)
        .uri("/v1/sessions")
        .header(HEADER_REQUEST_TIMEOUT_MS, "100")
        .body(Body::new(StalledBody))
        .expect("request");
    let answered = tokio::time::timeout(std::time::Duration::from_secs(5), async {
        expect_error(&r, req, ErrorCode::InvalidRequest).await
    })
    .await
    .expect("answered at the deadline, not never");
    assert_eq!(answered.error.details.field.as_deref(), Some("body"));
}
