//! The error envelope of every non-2xx answer and the stable error codes.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::lock::LockHolder;

/// The stable error codes. Each has one HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// 400: malformed JSON, bad name, out-of-range value.
    InvalidRequest,
    /// 404: no such session, lock, key or stack (`details.kind`).
    NotFound,
    /// 409: not acquired within `wait_ms` (`details.holders`).
    LockHeld,
    /// 409: this session/token does not hold the lock exclusively.
    NotHolder,
    /// 409: token older than the lock's grant or the key's `last_token`.
    StaleToken,
    /// 410: the session's lease ran out; its locks are gone.
    SessionExpired,
    /// 409: pop on an empty stack.
    StackEmpty,
    /// 413: body over the limit.
    PayloadTooLarge,
    /// 405: wrong method on a known path.
    MethodNotAllowed,
    /// 503: no leader or no quorum now; safe to retry (Retry-After set).
    Unavailable,
    /// 504: not committed in time; outcome unknown unless retried with the
    /// same idempotency key.
    Timeout,
    /// 409: a membership change refused because it would endanger the
    /// cluster (e.g. adding an id that is already a voter, or another data
    /// dir under a member's id).
    InvalidMembership,
}

impl ErrorCode {
    /// Every code, for tables and tests.
    pub const ALL: [ErrorCode; 12] = [
        ErrorCode::InvalidRequest,
        ErrorCode::NotFound,
        ErrorCode::LockHeld,
        ErrorCode::NotHolder,
        ErrorCode::StaleToken,
        ErrorCode::SessionExpired,
        ErrorCode::StackEmpty,
        ErrorCode::PayloadTooLarge,
        ErrorCode::MethodNotAllowed,
        ErrorCode::Unavailable,
        ErrorCode::Timeout,
        ErrorCode::InvalidMembership,
    ];

    /// The HTTP status that carries this code.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorCode::InvalidRequest => 400,
            ErrorCode::NotFound => 404,
            ErrorCode::LockHeld
            | ErrorCode::NotHolder
            | ErrorCode::StaleToken
            | ErrorCode::StackEmpty
            | ErrorCode::InvalidMembership => 409,
            ErrorCode::SessionExpired => 410,
            ErrorCode::PayloadTooLarge => 413,
            ErrorCode::MethodNotAllowed => 405,
            ErrorCode::Unavailable => 503,
            ErrorCode::Timeout => 504,
        }
    }

    /// The code as it appears in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidRequest => "invalid_request",
            ErrorCode::NotFound => "not_found",
            ErrorCode::LockHeld => "lock_held",
            ErrorCode::NotHolder => "not_holder",
            ErrorCode::StaleToken => "stale_token",
            ErrorCode::SessionExpired => "session_expired",
            ErrorCode::StackEmpty => "stack_empty",
            ErrorCode::PayloadTooLarge => "payload_too_large",
            ErrorCode::MethodNotAllowed => "method_not_allowed",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Timeout => "timeout",
            ErrorCode::InvalidMembership => "invalid_membership",
        }
    }

    /// The code spelled `s`, if it is one we know.
    pub fn from_code(s: &str) -> Option<ErrorCode> {
        ErrorCode::ALL.into_iter().find(|c| c.as_str() == s)
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a `not_found` error was about (`details.kind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum NotFoundKind {
    Session,
    Lock,
    Key,
    Stack,
    /// A cluster member (`/v1/cluster/members/{id}`).
    Member,
}

/// `error.details`: structured context; every field optional, `{}` allowed.
/// Readers ignore fields they do not know.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorDetails {
    /// With `not_found`: what was missing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<NotFoundKind>,
    /// With `lock_held`: who holds the lock.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub holders: Option<Vec<LockHolder>>,
    /// With `invalid_request`: the offending field, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// With `timeout` on an acquire (an extension of the contract): true
    /// when the request was applied and its session is still queued after
    /// the request's own wait (another request of the session extended the
    /// wait), so the outcome is known: waiting, not granted yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queued: Option<bool>,
}

/// `error` inside [`ErrorEnvelope`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorBody {
    pub code: ErrorCode,
    /// For humans; not stable.
    pub message: String,
    #[serde(default)]
    pub details: ErrorDetails,
}

/// The body of every non-2xx answer: `{"error": {"code", "message", "details"}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorEnvelope {
    pub error: ErrorBody,
}

impl ErrorEnvelope {
    /// An envelope with empty details.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ErrorEnvelope {
            error: ErrorBody {
                code,
                message: message.into(),
                details: ErrorDetails::default(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::round_trip;
    use serde_json::json;

    #[test]
    fn error_envelope_round_trip() {
        round_trip(
            json!({"error": {"code": "not_found", "message": "no such session",
                             "details": {"kind": "session"}}}),
            ErrorEnvelope {
                error: ErrorBody {
                    code: ErrorCode::NotFound,
                    message: "no such session".into(),
                    details: ErrorDetails {
                        kind: Some(NotFoundKind::Session),
                        ..ErrorDetails::default()
                    },
                },
            },
        );
        round_trip(
            json!({"error": {"code": "unavailable", "message": "no leader", "details": {}}}),
            ErrorEnvelope::new(ErrorCode::Unavailable, "no leader"),
        );
        // Unknown detail fields are ignored; missing details default to {}.
        let parsed: ErrorEnvelope = serde_json::from_value(
            json!({"error": {"code": "timeout", "message": "m", "details": {"x": 1}}}),
        )
        .unwrap();
        assert_eq!(parsed, ErrorEnvelope::new(ErrorCode::Timeout, "m"));
        let parsed: ErrorEnvelope =
            serde_json::from_value(json!({"error": {"code": "timeout", "message": "m"}})).unwrap();
        assert_eq!(parsed, ErrorEnvelope::new(ErrorCode::Timeout, "m"));
    }

    #[test]
    fn error_codes_spell_and_map_as_the_contract_says() {
        let table = [
            ("invalid_request", 400),
            ("not_found", 404),
            ("lock_held", 409),
            ("not_holder", 409),
            ("stale_token", 409),
            ("session_expired", 410),
            ("stack_empty", 409),
            ("payload_too_large", 413),
            ("method_not_allowed", 405),
            ("unavailable", 503),
            ("timeout", 504),
            ("invalid_membership", 409),
        ];
        for (code, (spelling, status)) in ErrorCode::ALL.into_iter().zip(table) {
            assert_eq!(code.as_str(), spelling);
            assert_eq!(code.http_status(), status);
            assert_eq!(serde_json::to_value(code).unwrap(), json!(spelling));
            assert_eq!(ErrorCode::from_code(spelling), Some(code));
        }
        assert_eq!(ErrorCode::from_code("teapot"), None);
    }
}
