//! The vocabulary of the lock state machine besides the commands (in
//! `command.rs`): replies and events (what an apply produces), read views
//! (what queries answer, 1:1 with the API's JSON). The limits are in
//! [`crate::api::limits`].

use serde::{Deserialize, Serialize};

use crate::api::limits::NAME_BYTES_MAX;
use crate::raft::LogIndex;

/// A session's id: the log index of the command that opened it (shown as a
/// decimal string in the API).
pub type SessionId = LogIndex;
/// A fencing token: the log index of the command that made the grant.
pub type FencingToken = LogIndex;

// ----------------------------------------------------------------- modes ---

/// Lock modes. (Text formats spell them as the API does; postcard uses the
/// variant index.)
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Exclusive,
    Shared,
}

impl Mode {
    /// The API's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Exclusive => "exclusive",
            Mode::Shared => "shared",
        }
    }
}

// --------------------------------------------------------------- replies ---

/// The outcome of one apply for the request that proposed it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reply {
    SessionOpened {
        session_id: SessionId,
        ttl_ms: u64,
    },
    KeptAlive {
        ttl_ms: u64,
    },
    SessionClosed,
    /// How many of the named sessions were live and are now expired.
    SessionsExpired {
        count: u64,
    },
    Acquired(Grant),
    /// The request waits (wait_ms > 0); its outcome comes as an event
    /// ([`Event::Granted`] or [`Event::WaitEnded`]) for `session_id`.
    Queued {
        session_id: SessionId,
        mode: Mode,
        /// 1 = next in line.
        position: u32,
    },
    Released,
    /// `was_waiting` is false when the session was not in the queue (already
    /// granted, timed out, or never asked).
    Withdrawn {
        was_waiting: bool,
    },
    WaitersExpired {
        count: u64,
    },
    KvWritten {
        size: u64,
        last_token: Option<FencingToken>,
    },
    Pushed {
        size: u64,
    },
    Popped {
        value: String,
        size: u64,
    },
    StackDeleted,
    Error(LockError),
    Configured,
}

impl Reply {
    pub fn is_error(&self) -> bool {
        matches!(self, Reply::Error(_))
    }
}

/// A grant as the API shows it in an acquire answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    pub session_id: SessionId,
    pub mode: Mode,
    pub fencing_token: FencingToken,
}

/// What kind of thing was not found (`details.kind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NotFoundKind {
    Session,
    Lock,
    Key,
    Stack,
}

impl NotFoundKind {
    pub fn as_str(self) -> &'static str {
        match self {
            NotFoundKind::Session => "session",
            NotFoundKind::Lock => "lock",
            NotFoundKind::Key => "key",
            NotFoundKind::Stack => "stack",
        }
    }
}

/// Refusals, one variant per API error code the state machine can decide.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum LockError {
    #[error("invalid {field}: {message}")]
    InvalidRequest { field: String, message: String },
    #[error("no such {}", kind.as_str())]
    NotFound { kind: NotFoundKind },
    #[error("lock is held")]
    LockHeld { holders: Vec<HolderView> },
    #[error("this session or token does not hold the lock exclusively")]
    NotHolder,
    #[error("the token is older than the lock's current grant or the last token seen")]
    StaleToken { current_token: Option<FencingToken> },
    #[error("the session's lease ran out")]
    SessionExpired,
    #[error("the stack is empty")]
    StackEmpty,
    /// A refusal that is safe to retry later (nothing was applied).
    #[error("{message}")]
    Unavailable { message: String },
}

impl LockError {
    /// The API's stable error code.
    pub fn code(&self) -> &'static str {
        match self {
            LockError::InvalidRequest { .. } => "invalid_request",
            LockError::NotFound { .. } => "not_found",
            LockError::LockHeld { .. } => "lock_held",
            LockError::NotHolder => "not_holder",
            LockError::StaleToken { .. } => "stale_token",
            LockError::SessionExpired => "session_expired",
            LockError::StackEmpty => "stack_empty",
            LockError::Unavailable { .. } => "unavailable",
        }
    }

    /// The API's HTTP status for this code.
    pub fn http_status(&self) -> u16 {
        match self {
            LockError::InvalidRequest { .. } => 400,
            LockError::NotFound { .. } => 404,
            LockError::LockHeld { .. }
            | LockError::NotHolder
            | LockError::StaleToken { .. }
            | LockError::StackEmpty => 409,
            LockError::SessionExpired => 410,
            LockError::Unavailable { .. } => 503,
        }
    }

    pub(crate) fn invalid(field: &str, message: impl Into<String>) -> Self {
        LockError::InvalidRequest {
            field: field.to_owned(),
            message: message.into(),
        }
    }
}

// ---------------------------------------------------------------- events ---

/// Why a wait ended without a grant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum WaitEndReason {
    TimedOut,
    /// The waiting session expired or was closed.
    SessionGone,
    Withdrawn,
}

/// What an apply did to parties other than the proposer, so the runtime can
/// finish requests it holds open.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Event {
    /// A queued waiter got the lock.
    Granted {
        lock: String,
        session_id: SessionId,
        mode: Mode,
        fencing_token: FencingToken,
    },
    /// A waiter left the queue without the lock; `reply` is its final answer
    /// (also what its idempotency key now returns).
    WaitEnded {
        lock: String,
        session_id: SessionId,
        reason: WaitEndReason,
        reply: Reply,
    },
    SessionExpired {
        session_id: SessionId,
    },
    /// Closed by request, or an ephemeral session that holds and waits for
    /// nothing any more.
    SessionClosed {
        session_id: SessionId,
    },
}

/// The result of applying one committed entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    pub reply: Reply,
    pub events: Vec<Event>,
    /// The reply was answered from the idempotency cache (a retry of a
    /// request already applied): the entry changed nothing, so whoever
    /// follows effects (the leader's lease tracker) must ignore it. A
    /// replayed `SessionOpened` or `KeptAlive` is history, not a sign of life.
    pub replayed: bool,
    /// Sessions whose lease this entry renewed (in id order), at the
    /// state's `clock_ms` after it ([`SessionLease::renewed_at_ms`]).
    pub renewed: Vec<SessionId>,
}

/// A live session's lease as the replicated state records it: renewed at
/// state time `renewed_at_ms`, it runs out at `renewed_at_ms + ttl_ms` of
/// state time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionLease {
    pub session_id: SessionId,
    pub ttl_ms: u64,
    pub renewed_at_ms: u64,
}

// ----------------------------------------------------------------- views ---

/// One holder of a lock (`holders[]` in the API).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HolderView {
    pub session_id: SessionId,
    pub session_name: String,
    pub fencing_token: FencingToken,
    pub acquired_at_ms: u64,
}

/// One waiter of a lock (`waiters[]` in the API), in queue order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WaiterView {
    pub session_id: SessionId,
    pub mode: Mode,
}

/// `GET /v1/locks/{name}`. A lock nobody holds or waits for is free with
/// empty lists.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockView {
    pub lock: String,
    pub state: LockState,
    /// None when free.
    pub mode: Option<Mode>,
    pub holders: Vec<HolderView>,
    pub waiters: Vec<WaiterView>,
}

/// `state` of a lock view.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LockState {
    Free,
    Held,
}

/// `GET /v1/locks?prefix&limit&after`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockList {
    pub locks: Vec<LockView>,
    /// The name to pass as `after` for the next page; None at the end.
    pub next: Option<String>,
}

/// A lock a session holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionLockView {
    pub lock: String,
    pub mode: Mode,
    pub fencing_token: FencingToken,
}

/// A lock a session waits for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionWaitView {
    pub lock: String,
    pub mode: Mode,
}

/// `GET /v1/sessions/{id}`, without `expires_in_ms`: only the leader's
/// [`super::LeaseTracker`] knows that.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionView {
    pub session_id: SessionId,
    pub name: String,
    pub ttl_ms: u64,
    pub ephemeral: bool,
    pub locks: Vec<SessionLockView>,
    pub waiting: Vec<SessionWaitView>,
}

/// `GET /v1/kv/{key}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvView {
    pub value: String,
    pub last_token: Option<FencingToken>,
}

/// `GET /v1/stacks/{name}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StackView {
    pub size: u64,
    pub top: Option<String>,
}

/// `POST /v1/locks/{name}/validate`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ValidateView {
    /// True when the token is one of the current holders' tokens.
    pub valid: bool,
    /// The lock's newest grant among its current holders; None when free.
    pub current_token: Option<FencingToken>,
}

/// Checks a lock, key or stack name (the rule is [`crate::api::validate_name`])
/// and words a refusal as the state machine's `invalid_request` on `field`.
pub fn validate_name(field: &str, name: &str) -> Result<(), LockError> {
    use crate::api::NameError;
    crate::api::validate_name(name).map_err(|e| match e {
        NameError::Empty | NameError::TooLong { .. } => {
            LockError::invalid(field, format!("must be 1..={NAME_BYTES_MAX} bytes"))
        }
        NameError::BadByte { .. } => LockError::invalid(field, "may contain only [A-Za-z0-9._:/-]"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_match_the_api() {
        let cases = [
            (LockError::invalid("f", "m"), "invalid_request", 400),
            (
                LockError::NotFound {
                    kind: NotFoundKind::Stack,
                },
                "not_found",
                404,
            ),
            (LockError::LockHeld { holders: vec![] }, "lock_held", 409),
            (LockError::NotHolder, "not_holder", 409),
            (
                LockError::StaleToken {
                    current_token: None,
                },
                "stale_token",
                409,
            ),
            (LockError::SessionExpired, "session_expired", 410),
            (LockError::StackEmpty, "stack_empty", 409),
        ];
        for (e, code, status) in cases {
            assert_eq!((e.code(), e.http_status()), (code, status));
        }
    }
}
