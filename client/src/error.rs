//! The client's typed errors, one per API error code, and their decoding from
//! the JSON error envelope.

use std::time::Duration;

use deadbolt_api::{ErrorCode, ErrorEnvelope, LockHolder, NameError, NotFoundKind};

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// 400: the server refused the request (the message names the field).
    #[error("invalid request: {message}")]
    InvalidRequest {
        message: String,
        field: Option<String>,
    },
    /// 404: no such session, lock, key or stack.
    #[error("not found ({}): {message}", kind.map(kind_str).unwrap_or("unknown"))]
    NotFound {
        kind: Option<NotFoundKind>,
        message: String,
    },
    /// 409: the lock was not acquired within `wait_ms`.
    #[error("lock held by {} holder(s)", holders.len())]
    LockHeld { holders: Vec<LockHolder> },
    /// 409: the session/token does not hold the lock exclusively.
    #[error("not the holder: {message}")]
    NotHolder { message: String },
    /// 409: the token is older than the lock's grant or the key's last token.
    #[error("stale fencing token: {message}")]
    StaleToken { message: String },
    /// 410: the session's lease ran out; its locks are gone.
    #[error("session expired: {message}")]
    SessionExpired { message: String },
    /// 409: pop on an empty stack.
    #[error("stack is empty")]
    StackEmpty,
    /// 413: the body is over the server's limit.
    #[error("payload too large: {message}")]
    PayloadTooLarge { message: String },
    /// 405: the server does not serve this method on this path.
    #[error("method not allowed: {message}")]
    MethodNotAllowed { message: String },
    /// 503 on every attempt: no leader or no quorum.
    #[error("cluster unavailable: {message}")]
    Unavailable { message: String },
    /// 504 on the last attempt: the outcome is unknown.
    #[error("the cluster did not commit in time (outcome unknown): {message}")]
    Timeout { message: String },
    /// 504 to an acquire whose own wait ended while its session is still
    /// queued (another request of the session extended the wait): applied,
    /// not granted yet; the session's wait goes on.
    #[error("the wait ended with the session still queued: {message}")]
    StillQueued { message: String },
    /// 409: a membership change refused because it would endanger the
    /// cluster (the message says why and what to do).
    #[error("membership change refused: {message}")]
    InvalidMembership { message: String },
    /// The call's own deadline passed before any answer settled it; the
    /// outcome of a mutation is unknown.
    #[error("no answer within the call's deadline of {deadline:?}")]
    DeadlineExceeded { deadline: Duration },
    /// Could not talk to any endpoint (connect, send or read failed).
    /// The cause is in the message, not also in `source()`: a reporter that
    /// prints the chain (anyhow's `{:#}`) would print it twice.
    #[error("transport error talking to {endpoint}: {cause}")]
    Transport {
        endpoint: String,
        cause: Box<dyn std::error::Error + Send + Sync>,
    },
    /// An answer the contract does not describe (unknown code, bad JSON).
    #[error("unexpected answer from {endpoint}: HTTP {status}: {message}")]
    Protocol {
        endpoint: String,
        status: u16,
        message: String,
    },
    /// The session's lease can no longer be known alive; its locks must be
    /// treated as gone.
    #[error("the session's lease is lost")]
    LeaseLost,
    /// A name the server would refuse; caught before sending.
    /// (The reason is in the message only, as for `Transport`.)
    #[error("invalid name {name:?}: {reason}")]
    InvalidName { name: String, reason: NameError },
    /// The task running a call ended without its outcome (it panicked, or
    /// the runtime is shutting down); for a mutation the outcome is unknown.
    #[error("the call was interrupted: {0}")]
    Interrupted(String),
    /// The client was configured with something it cannot use.
    #[error("invalid client configuration: {0}")]
    Config(String),
}

fn kind_str(kind: NotFoundKind) -> &'static str {
    match kind {
        NotFoundKind::Session => "session",
        NotFoundKind::Lock => "lock",
        NotFoundKind::Key => "key",
        NotFoundKind::Stack => "stack",
        NotFoundKind::Member => "member",
    }
}

impl Error {
    /// The API code this error carries, if it came from the server.
    pub fn code(&self) -> Option<ErrorCode> {
        Some(match self {
            Error::InvalidRequest { .. } => ErrorCode::InvalidRequest,
            Error::NotFound { .. } => ErrorCode::NotFound,
            Error::LockHeld { .. } => ErrorCode::LockHeld,
            Error::NotHolder { .. } => ErrorCode::NotHolder,
            Error::StaleToken { .. } => ErrorCode::StaleToken,
            Error::SessionExpired { .. } => ErrorCode::SessionExpired,
            Error::StackEmpty => ErrorCode::StackEmpty,
            Error::PayloadTooLarge { .. } => ErrorCode::PayloadTooLarge,
            Error::MethodNotAllowed { .. } => ErrorCode::MethodNotAllowed,
            Error::Unavailable { .. } => ErrorCode::Unavailable,
            Error::Timeout { .. } | Error::StillQueued { .. } => ErrorCode::Timeout,
            Error::InvalidMembership { .. } => ErrorCode::InvalidMembership,
            _ => return None,
        })
    }

    /// Whether a mutation that failed so may or may not have been applied.
    pub fn outcome_unknown(&self) -> bool {
        matches!(
            self,
            Error::Timeout { .. }
                | Error::DeadlineExceeded { .. }
                | Error::Transport { .. }
                | Error::Interrupted(_)
        )
    }

    fn from_code(code: ErrorCode, message: String, envelope: Option<ErrorEnvelope>) -> Error {
        let details = envelope.map(|e| e.error.details).unwrap_or_default();
        match code {
            ErrorCode::InvalidRequest => Error::InvalidRequest {
                message,
                field: details.field,
            },
            ErrorCode::NotFound => Error::NotFound {
                kind: details.kind,
                message,
            },
            ErrorCode::LockHeld => Error::LockHeld {
                holders: details.holders.unwrap_or_default(),
            },
            ErrorCode::NotHolder => Error::NotHolder { message },
            ErrorCode::StaleToken => Error::StaleToken { message },
            ErrorCode::SessionExpired => Error::SessionExpired { message },
            ErrorCode::StackEmpty => Error::StackEmpty,
            ErrorCode::PayloadTooLarge => Error::PayloadTooLarge { message },
            ErrorCode::MethodNotAllowed => Error::MethodNotAllowed { message },
            ErrorCode::Unavailable => Error::Unavailable { message },
            ErrorCode::Timeout if details.queued == Some(true) => Error::StillQueued { message },
            ErrorCode::Timeout => Error::Timeout { message },
            ErrorCode::InvalidMembership => Error::InvalidMembership { message },
        }
    }
}

/// Turns a non-2xx answer into an [`Error`]. Tolerant by design: a body whose
/// `details` do not parse still yields its code, and a body that is not an
/// envelope at all yields [`Error::Protocol`] (or the code its status implies
/// for 503/504, which proxies may produce without our envelope).
pub(crate) fn decode_error(endpoint: &str, status: u16, body: &[u8]) -> Error {
    if let Ok(envelope) = serde_json::from_slice::<ErrorEnvelope>(body) {
        let (code, message) = (envelope.error.code, envelope.error.message.clone());
        return Error::from_code(code, message, Some(envelope));
    }
    // Second chance: the code and message without the (unparseable) details.
    let loose: Option<(String, String)> = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| {
            let error = v.get("error")?;
            let code = error.get("code")?.as_str()?.to_owned();
            let message = error
                .get("message")
                .and_then(|m| m.as_str())
                .unwrap_or_default()
                .to_owned();
            Some((code, message))
        });
    match loose {
        Some((code, message)) => match ErrorCode::from_code(&code) {
            Some(code) => Error::from_code(code, message, None),
            None => Error::Protocol {
                endpoint: endpoint.to_owned(),
                status,
                message: format!("unknown error code {code:?}: {message}"),
            },
        },
        None => {
            let text = String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
            match status {
                // A server error without our envelope comes from something
                // between us and the node (a proxy's 502, or its 503 after
                // the node reset the connection): the request may have
                // reached the node. Our own 503 always has an envelope.
                504 => Error::Timeout { message: text },
                500..=599 if status != 501 => Error::Timeout {
                    message: format!("HTTP {status} without an error envelope: {text}"),
                },
                _ => Error::Protocol {
                    endpoint: endpoint.to_owned(),
                    status,
                    message: format!("not an error envelope: {text:?}"),
                },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a chain printer (anyhow's `{:#}`) shows: each message, then its
    /// source's, joined by ": ".
    fn chain_text(error: &dyn std::error::Error) -> String {
        let mut text = error.to_string();
        let mut next = error.source();
        while let Some(source) = next {
            text = format!("{text}: {source}");
            next = source.source();
        }
        text
    }

    #[test]
    fn no_message_is_printed_twice_along_the_chain() {
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        let refused_text = refused.to_string();
        let transport = Error::Transport {
            endpoint: "http://127.0.0.1:1".into(),
            cause: Box::new(refused),
        };
        let name = "bad name";
        let invalid = crate::path::name_segment(name).expect_err("a space is refused");
        for (error, part) in [(transport, refused_text), (invalid, "0x20".to_owned())] {
            let text = chain_text(&error);
            assert_eq!(text.matches(&part).count(), 1, "{text}");
        }
    }

    #[test]
    fn a_server_error_without_an_envelope_is_an_unknown_outcome() {
        for status in [500, 502, 503, 504] {
            let error = decode_error("http://n", status, b"Bad Gateway");
            assert!(error.outcome_unknown(), "{status}: {error:?}");
        }
        assert!(!decode_error("http://n", 501, b"").outcome_unknown());
        assert!(!decode_error("http://n", 418, b"").outcome_unknown());
    }
    use deadbolt_api::SessionId;

    fn decode(status: u16, body: &str) -> Error {
        decode_error("h:1", status, body.as_bytes())
    }

    #[test]
    fn decodes_every_code_from_the_envelope() {
        let e = decode(
            409,
            r#"{"error":{"code":"lock_held","message":"held","details":{"holders":[
                {"session_id":"9","session_name":"w","fencing_token":42,"acquired_at_ms":5}]}}}"#,
        );
        match e {
            Error::LockHeld { holders } => {
                assert_eq!(holders.len(), 1);
                assert_eq!(holders[0].session_id, SessionId(9));
                assert_eq!(holders[0].fencing_token, 42);
            }
            other => panic!("expected LockHeld, got {other:?}"),
        }
        let e = decode(
            404,
            r#"{"error":{"code":"not_found","message":"m","details":{"kind":"stack"}}}"#,
        );
        assert!(matches!(
            e,
            Error::NotFound {
                kind: Some(NotFoundKind::Stack),
                ..
            }
        ));
        for code in ErrorCode::ALL {
            let body = format!(r#"{{"error":{{"code":"{code}","message":"m","details":{{}}}}}}"#);
            assert_eq!(decode(code.http_status(), &body).code(), Some(code));
        }
    }

    #[test]
    fn odd_details_still_give_the_code() {
        let e = decode(
            409,
            r#"{"error":{"code":"lock_held","message":"m","details":{"holders":["9"]}}}"#,
        );
        assert!(matches!(e, Error::LockHeld { ref holders } if holders.is_empty()));
    }

    #[test]
    fn unknown_codes_and_garbage_are_protocol_errors() {
        let e = decode(418, r#"{"error":{"code":"teapot","message":"m"}}"#);
        assert!(matches!(e, Error::Protocol { status: 418, .. }));
        // A 5xx without our envelope came from in between: outcome unknown.
        assert!(matches!(decode(500, "oops"), Error::Timeout { .. }));
        assert!(matches!(decode(503, "<html>"), Error::Timeout { .. }));
        assert!(matches!(decode(504, ""), Error::Timeout { .. }));
    }
}
