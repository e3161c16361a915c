//! One endpoint's HTTP/1.1 connections: connect, hand out an idle
//! keep-alive connection or a fresh one, take it back after a clean exchange.

use std::sync::Mutex;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::http1::SendRequest;
use hyper::{Request, Response};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::io::HyperIo;

/// Largest response body the client reads; a full page of 1000 locks with
/// their holders and waiters fits with room to spare.
pub(crate) const RESPONSE_BODY_BYTES_MAX: usize = 16 * 1024 * 1024;

/// Idle connections kept per endpoint; more concurrent calls open more
/// connections and close the surplus when they finish.
pub(crate) const IDLE_CONNECTIONS_PER_ENDPOINT_MAX: usize = 8;

pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// An answer read in full.
pub(crate) struct Answer {
    pub(crate) status: u16,
    pub(crate) headers: hyper::HeaderMap,
    pub(crate) body: Bytes,
    /// The request was sent on an idle connection that closed before any
    /// answer and sent again on a new one: the first copy may have reached
    /// the server, so this answer may not be the whole story.
    pub(crate) resent_after_close: bool,
}

/// One HTTP/1.1 connection. Dropping it stops the task that drives it, so a
/// connection to a server that hangs never outlives its user.
struct Connection {
    sender: SendRequest<Full<Bytes>>,
    driver: JoinHandle<()>,
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

/// An endpoint of the cluster and its idle connections.
pub(crate) struct Endpoint {
    /// As configured, for messages (`http://host:port`).
    pub(crate) url: String,
    /// `host:port`, for connecting and for the Host header.
    pub(crate) authority: String,
    idle: Mutex<Vec<Connection>>,
    /// Do not send here before this (from the endpoint's last Retry-After).
    not_before: Mutex<Option<Instant>>,
}

impl Endpoint {
    /// Parses `http://host:port`, `http://host:port/` or `host:port`.
    pub(crate) fn parse(url: &str) -> Result<Endpoint, String> {
        let rest = match url.split_once("://") {
            Some(("http", rest)) => rest,
            Some((scheme, _)) => {
                return Err(format!("endpoint {url:?}: scheme {scheme:?} is not http"))
            }
            None => url,
        };
        let authority = rest.trim_end_matches('/');
        let valid = match authority.rsplit_once(':') {
            Some((host, port)) => {
                !host.is_empty() && !host.contains('/') && port.parse::<u16>().is_ok()
            }
            None => false,
        };
        if !valid {
            return Err(format!("endpoint {url:?} is not http://host:port"));
        }
        Ok(Endpoint {
            url: url.to_owned(),
            authority: authority.to_owned(),
            idle: Mutex::new(Vec::new()),
            not_before: Mutex::new(None),
        })
    }

    pub(crate) fn not_before(&self) -> Option<Instant> {
        *self.not_before.lock().expect("endpoint mutex poisoned")
    }

    pub(crate) fn set_not_before(&self, at: Instant) {
        let mut slot = self.not_before.lock().expect("endpoint mutex poisoned");
        *slot = Some(slot.map_or(at, |old| old.max(at)));
    }

    fn take_idle(&self) -> Option<Connection> {
        let mut idle = self.idle.lock().expect("endpoint mutex poisoned");
        while let Some(conn) = idle.pop() {
            if !conn.sender.is_closed() {
                return Some(conn);
            }
        }
        None
    }

    fn put_idle(&self, conn: Connection) {
        if conn.sender.is_closed() {
            return;
        }
        let mut idle = self.idle.lock().expect("endpoint mutex poisoned");
        if idle.len() < IDLE_CONNECTIONS_PER_ENDPOINT_MAX {
            idle.push(conn);
        }
    }

    /// Drops every idle connection (after a failure: they may be as dead as
    /// the one that failed).
    pub(crate) fn forget_idle(&self) {
        self.idle.lock().expect("endpoint mutex poisoned").clear();
    }

    async fn connect(&self) -> Result<Connection, BoxError> {
        let stream = TcpStream::connect(self.authority.as_str()).await?;
        // Requests are small and latency-bound.
        stream.set_nodelay(true)?;
        let (sender, conn) = hyper::client::conn::http1::handshake(HyperIo::new(stream)).await?;
        let driver = tokio::spawn(async move {
            // The connection ends when the server closes it or its
            // SendRequest is dropped; the error is seen by the request.
            let _ = conn.await;
        });
        Ok(Connection { sender, driver })
    }

    /// Sends one request and reads the whole answer. With `resend_if_closed`,
    /// a kept-alive connection that turns out closed is replaced once by a
    /// fresh one to the same endpoint. The request may have reached the
    /// server before the close, so only a request that cannot apply twice
    /// (a read, a mutation with its idempotency key) may be resent; a
    /// keyless mutation gets the error (the simulation's keyless clients
    /// found the double apply: sim seed 295, network mix, 5 nodes).
    pub(crate) async fn send(
        &self,
        make_request: impl Fn() -> Request<Full<Bytes>>,
        resend_if_closed: bool,
    ) -> Result<Answer, BoxError> {
        let mut resent = false;
        if let Some(mut conn) = self.take_idle() {
            if conn.sender.ready().await.is_ok() {
                match exchange(&mut conn, make_request()).await {
                    Ok(answer) => {
                        self.put_idle(conn);
                        return Ok(answer);
                    }
                    Err(Failure::Closed(e)) if !resend_if_closed => return Err(e),
                    Err(Failure::Closed(_)) => resent = true,
                    Err(Failure::Other(e)) => return Err(e),
                }
            }
        }
        let mut conn = self.connect().await?;
        match exchange(&mut conn, make_request()).await {
            Ok(mut answer) => {
                self.put_idle(conn);
                answer.resent_after_close = resent;
                Ok(answer)
            }
            Err(Failure::Closed(e) | Failure::Other(e)) => Err(e),
        }
    }
}

enum Failure {
    /// The connection was closed before the request got an answer started.
    Closed(BoxError),
    Other(BoxError),
}

async fn exchange(conn: &mut Connection, request: Request<Full<Bytes>>) -> Result<Answer, Failure> {
    let response: Response<hyper::body::Incoming> =
        conn.sender.send_request(request).await.map_err(|e| {
            if e.is_canceled() || e.is_incomplete_message() || e.is_closed() {
                Failure::Closed(e.into())
            } else {
                Failure::Other(e.into())
            }
        })?;
    let (parts, body) = response.into_parts();
    let body = Limited::new(body, RESPONSE_BODY_BYTES_MAX)
        .collect()
        .await
        .map_err(Failure::Other)?
        .to_bytes();
    Ok(Answer {
        status: parts.status.as_u16(),
        headers: parts.headers,
        body,
        resent_after_close: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_endpoints() {
        assert_eq!(
            Endpoint::parse("http://10.0.0.1:7070").unwrap().authority,
            "10.0.0.1:7070"
        );
        assert_eq!(Endpoint::parse("http://h:1/").unwrap().authority, "h:1");
        assert_eq!(Endpoint::parse("h:1").unwrap().authority, "h:1");
        assert!(Endpoint::parse("https://h:1").is_err());
        assert!(Endpoint::parse("http://h").is_err());
        assert!(Endpoint::parse("http://h:x").is_err());
        assert!(Endpoint::parse("http://h:1/v1").is_err());
    }
}
