//! The one error type of the HTTP layer and its rendering as the API's error
//! envelope (`{"error": {"code", "message", "details"}}`), with `Retry-After`
//! on every 503.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use deadbolt_api::{
    ErrorBody, ErrorCode, ErrorDetails, ErrorEnvelope, LockHolder, NotFoundKind, SessionId,
    RETRY_AFTER_SECS_MIN,
};
use deadbolt_core::lock::{self, HolderView, LockError};
use deadbolt_runtime::node::ProposeError;

/// A refusal on its way to the client: code, message and details.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
    pub details: ErrorDetails,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError {
            code,
            message: message.into(),
            details: ErrorDetails::default(),
        }
    }

    /// 400 naming the offending field in the message and in `details.field`.
    pub fn invalid(field: impl Into<String>, message: impl std::fmt::Display) -> Self {
        let field = field.into();
        let mut error = ApiError::new(ErrorCode::InvalidRequest, format!("{field}: {message}"));
        error.details.field = Some(field);
        error
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        ApiError::new(ErrorCode::Unavailable, message)
    }

    pub fn not_found_route(method: &str, path: &str) -> Self {
        ApiError::new(ErrorCode::NotFound, format!("no route {method} {path}"))
    }
}

/// The API's spelling of a state-machine lock holder.
pub(crate) fn holder_json(holder: HolderView) -> LockHolder {
    LockHolder {
        session_id: SessionId(holder.session_id),
        session_name: (!holder.session_name.is_empty()).then_some(holder.session_name),
        fencing_token: holder.fencing_token,
        acquired_at_ms: holder.acquired_at_ms,
    }
}

fn not_found_kind(kind: lock::NotFoundKind) -> NotFoundKind {
    match kind {
        lock::NotFoundKind::Session => NotFoundKind::Session,
        lock::NotFoundKind::Lock => NotFoundKind::Lock,
        lock::NotFoundKind::Key => NotFoundKind::Key,
        lock::NotFoundKind::Stack => NotFoundKind::Stack,
    }
}

impl From<LockError> for ApiError {
    fn from(error: LockError) -> Self {
        let message = error.to_string();
        match error {
            LockError::InvalidRequest { field, message } => ApiError::invalid(field, message),
            LockError::NotFound { kind } => {
                let mut e = ApiError::new(ErrorCode::NotFound, message);
                e.details.kind = Some(not_found_kind(kind));
                e
            }
            LockError::LockHeld { holders } => {
                let mut e = ApiError::new(ErrorCode::LockHeld, message);
                e.details.holders = Some(holders.into_iter().map(holder_json).collect());
                e
            }
            LockError::NotHolder => ApiError::new(ErrorCode::NotHolder, message),
            LockError::StaleToken { current_token } => {
                let message = match current_token {
                    Some(t) => format!("{message} (current token {t})"),
                    None => message,
                };
                ApiError::new(ErrorCode::StaleToken, message)
            }
            LockError::SessionExpired => ApiError::new(ErrorCode::SessionExpired, message),
            LockError::StackEmpty => ApiError::new(ErrorCode::StackEmpty, message),
            LockError::Unavailable { message } => ApiError::unavailable(message),
        }
    }
}

impl From<ProposeError> for ApiError {
    fn from(error: ProposeError) -> Self {
        match error {
            ProposeError::Unavailable { leader, reason } => {
                // The reason may say it already (`no leader known`): once.
                let hint = deadbolt_core::raft::leader_text(&leader);
                ApiError::unavailable(if reason.contains(&hint) {
                    reason
                } else {
                    format!("{reason} ({hint})")
                })
            }
            ProposeError::Timeout => ApiError::new(
                ErrorCode::Timeout,
                "the cluster did not answer in time; the outcome is unknown unless retried \
                 with the same Idempotency-Key",
            ),
            // Administrative refusals (membership rules, unknown member,
            // target not caught up) are the caller's to fix: 400.
            ProposeError::Rejected { message } => ApiError::new(ErrorCode::InvalidRequest, message),
            ProposeError::InvalidMembership { message } => {
                ApiError::new(ErrorCode::InvalidMembership, message)
            }
            ProposeError::UnknownMember { id } => {
                let mut e =
                    ApiError::new(ErrorCode::NotFound, format!("node {id} is not a member"));
                e.details.kind = Some(NotFoundKind::Member);
                e
            }
            ProposeError::Stopped { reason } => {
                ApiError::unavailable(format!("node stopped: {reason}"))
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.code.http_status())
            .expect("every error code maps to a valid HTTP status");
        let code = self.code;
        let envelope = ErrorEnvelope {
            error: ErrorBody {
                code,
                message: self.message,
                details: self.details,
            },
        };
        let body = serde_json::to_vec(&envelope).expect("the envelope serializes");
        let mut response = (status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if code == ErrorCode::Unavailable {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS_MIN));
        }
        // The metrics middleware labels the outcome with the code.
        response.extensions_mut().insert(code);
        response
    }
}
