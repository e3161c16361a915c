//! The HTTP API v1 wire types: every JSON body, error code, header name and
//! limit of `shared/API.md`, shared by the server (which derives its OpenAPI
//! document from them) and the client.
//!
//! These are plain serde structs and enums on purpose: no behaviour beyond
//! validation of names, so the contract can be read here in one place. Field
//! names and enum spellings are the public contract; extend, never rename.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

// ---------------------------------------------------------------------------
// Headers
// ---------------------------------------------------------------------------

/// Header carrying the client's idempotency key on mutating requests.
pub const HEADER_IDEMPOTENCY_KEY: &str = "Idempotency-Key";
/// Optional header on a keyed mutation: the `Idempotency-Key` is
/// `<prefix>-<decimal seq>` and the client has the final outcome of every
/// `<prefix>-<m>` with `m` below this value, and will never retry those keys,
/// so the cluster may forget them (a retry of one is then a new request).
/// Must be a u64 no greater than the key's own seq; ignored with a key of
/// another form. Keeps a busy client from filling the idempotency cache.
pub const HEADER_IDEMPOTENCY_ACKED_BELOW: &str = "Idempotency-Acked-Below";
/// Header carrying the request's deadline in milliseconds.
pub const HEADER_REQUEST_TIMEOUT_MS: &str = "Request-Timeout-Ms";
/// Header on every answer from a node that knows the leader's API address
/// (an API extension): `host:port` as the leader announced it. A client
/// that has the leader among its endpoints sends there next, sparing the
/// cluster a forwarding hop per request; the hint is never needed for
/// correctness (any node serves any request).
pub const HEADER_LEADER: &str = "Deadbolt-Leader";
/// Header on 503 answers: whole seconds to wait before retrying (at least 1).
pub const HEADER_RETRY_AFTER: &str = "Retry-After";

// ---------------------------------------------------------------------------
// Limits and defaults (all from API.md; units in the names)
// ---------------------------------------------------------------------------

/// Shortest session TTL a client may ask for.
pub const SESSION_TTL_MS_MIN: u64 = 1_000;
/// Longest session TTL a client may ask for.
pub const SESSION_TTL_MS_MAX: u64 = 3_600_000;
/// TTL of a session created without `ttl_ms`.
pub const SESSION_TTL_MS_DEFAULT: u64 = 10_000;
/// TTL of the session the server creates for an acquire without `session_id`.
pub const EPHEMERAL_SESSION_TTL_MS_DEFAULT: u64 = 30_000;
/// Longest `wait_ms` of a waiting acquire.
pub const WAIT_MS_MAX: u64 = 300_000;
/// Request deadline when `Request-Timeout-Ms` is absent.
pub const REQUEST_TIMEOUT_MS_DEFAULT: u64 = 5_000;
/// Largest accepted `Request-Timeout-Ms`.
pub const REQUEST_TIMEOUT_MS_MAX: u64 = 60_000;
/// Smallest `Retry-After` a 503 carries.
pub const RETRY_AFTER_SECS_MIN: u64 = 1;
/// Longest idempotency key.
pub const IDEMPOTENCY_KEY_BYTES_MAX: usize = 128;
/// Locks per page of `GET /v1/locks` when `limit` is absent.
pub const LIST_LIMIT_DEFAULT: u32 = 100;
/// Largest `limit` of `GET /v1/locks`.
pub const LIST_LIMIT_MAX: u32 = 1_000;
/// Shortest name of a lock, key or stack.
pub const NAME_BYTES_MIN: usize = 1;
/// Longest name of a lock, key or stack.
pub const NAME_BYTES_MAX: usize = 256;
/// Largest KV value, after an append too.
pub const KV_VALUE_BYTES_MAX: usize = 256 * 1024;
/// Largest stack element.
pub const STACK_ELEMENT_BYTES_MAX: usize = 64 * 1024;
/// Most elements a stack holds.
pub const STACK_ELEMENTS_MAX: usize = 100_000;
/// Default limit on a request body; larger bodies get 413.
pub const BODY_BYTES_MAX_DEFAULT: usize = 1024 * 1024;
/// Largest integer that JSON carries exactly (tokens and indexes stay below).
pub const JSON_SAFE_INTEGER_MAX: u64 = (1 << 53) - 1;

// ---------------------------------------------------------------------------
// Names
// ---------------------------------------------------------------------------

/// Why a lock, key or stack name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("name is empty")]
    Empty,
    #[error("name is {len} bytes, longer than {NAME_BYTES_MAX}")]
    TooLong { len: usize },
    #[error("name has byte {byte:#04x} at offset {offset}; allowed are [A-Za-z0-9._:/-]")]
    BadByte { byte: u8, offset: usize },
}

/// Whether `byte` may appear in a name: `[A-Za-z0-9._:/-]`.
pub fn is_name_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'_' | b':' | b'/' | b'-')
}

/// Checks a lock, key or stack name: 1..=256 bytes of `[A-Za-z0-9._:/-]`.
pub fn validate_name(name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    if name.len() > NAME_BYTES_MAX {
        return Err(NameError::TooLong { len: name.len() });
    }
    match name.bytes().enumerate().find(|&(_, b)| !is_name_byte(b)) {
        Some((offset, byte)) => Err(NameError::BadByte { byte, offset }),
        None => Ok(()),
    }
}

// ---------------------------------------------------------------------------
// Sessions
// ---------------------------------------------------------------------------

/// A session id: a u64 inside, a decimal string in JSON (so JavaScript
/// clients, whose numbers stop at 2^53, never round it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SessionId(pub u64);

// A session id is a decimal string on the wire, whatever the Rust type is.
#[cfg(feature = "openapi")]
impl utoipa::PartialSchema for SessionId {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .pattern(Some("^[0-9]{1,20}$"))
            .description(Some("A session id: the decimal string of a u64."))
            .into()
    }
}

#[cfg(feature = "openapi")]
impl utoipa::ToSchema for SessionId {}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A session id string that is not the decimal of a u64.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("session id {0:?} is not a decimal u64")]
pub struct SessionIdError(pub String);

impl FromStr for SessionId {
    type Err = SessionIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        // u64::from_str accepts a leading '+'; one id must have one spelling.
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(SessionIdError(s.to_owned()));
        }
        s.parse::<u64>()
            .map(SessionId)
            .map_err(|_| SessionIdError(s.to_owned()))
    }
}

impl Serialize for SessionId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for SessionId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

fn session_ttl_ms_default() -> u64 {
    SESSION_TTL_MS_DEFAULT
}

/// `POST /v1/sessions` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CreateSessionRequest {
    /// Lease length, in `SESSION_TTL_MS_MIN..=SESSION_TTL_MS_MAX`; default 10000.
    #[serde(default = "session_ttl_ms_default")]
    pub ttl_ms: u64,
    /// A label for humans (shown as `session_name` on holders).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// `POST /v1/sessions` answer (201).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CreateSessionResponse {
    pub session_id: SessionId,
    /// The session's configured TTL.
    pub ttl_ms: u64,
}

/// `POST /v1/sessions/{id}/keepalive` body: empty or `{}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct KeepaliveRequest {}

/// `POST /v1/sessions/{id}/keepalive` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct KeepaliveResponse {
    /// The session's configured TTL (the lease now runs that long again).
    pub ttl_ms: u64,
}

/// A lock a session holds, in [`SessionInfo`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HeldLock {
    pub lock: String,
    pub mode: LockMode,
    pub fencing_token: u64,
}

/// A lock a session waits for, in [`SessionInfo`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WaitingLock {
    pub lock: String,
    pub mode: LockMode,
}

/// `GET /v1/sessions/{id}` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SessionInfo {
    pub session_id: SessionId,
    /// The name given at creation; null if none.
    pub name: Option<String>,
    pub ttl_ms: u64,
    /// Time left on the lease, by the leader's clock.
    pub expires_in_ms: u64,
    pub locks: Vec<HeldLock>,
    pub waiting: Vec<WaitingLock>,
}

// ---------------------------------------------------------------------------
// Locks
// ---------------------------------------------------------------------------

/// Lock mode: one exclusive holder, or any number of shared holders.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum LockMode {
    #[default]
    Exclusive,
    Shared,
}

/// `POST /v1/locks/{name}/acquire` body.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AcquireRequest {
    /// The owning session. Omitted: the server creates a session of `ttl_ms`
    /// that owns just this lock and ends when it is released.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<SessionId>,
    /// Default exclusive.
    #[serde(default)]
    pub mode: LockMode,
    /// How long to wait in the FIFO queue, `0..=WAIT_MS_MAX`; 0 is a try-lock.
    #[serde(default)]
    pub wait_ms: u64,
    /// TTL of the session created when `session_id` is omitted (default
    /// `EPHEMERAL_SESSION_TTL_MS_DEFAULT`); ignored with a `session_id`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_ms: Option<u64>,
}

/// `POST /v1/locks/{name}/acquire` answer: the grant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AcquireResponse {
    pub lock: String,
    pub mode: LockMode,
    pub session_id: SessionId,
    /// The Raft log index of the grant: strictly increasing cluster-wide.
    pub fencing_token: u64,
}

/// `POST /v1/locks/{name}/release` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ReleaseRequest {
    pub session_id: SessionId,
    /// The grant being released; a mismatch is `not_holder`/`stale_token`.
    /// Omitted: whatever grant the session holds (for tools that lost it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fencing_token: Option<u64>,
}

/// Whether a lock is held (waiters alone leave it `free`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum LockStatus {
    Free,
    Held,
}

/// One holder of a lock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LockHolder {
    pub session_id: SessionId,
    /// The holding session's name; null if it has none.
    #[serde(default)]
    pub session_name: Option<String>,
    pub fencing_token: u64,
    /// When the grant committed, by the leader's clock (ms since the epoch).
    #[serde(default)]
    pub acquired_at_ms: u64,
}

/// One waiter in a lock's FIFO queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LockWaiter {
    pub session_id: SessionId,
    pub mode: LockMode,
}

/// `GET /v1/locks/{name}` answer (linearizable). A lock nobody holds or
/// waits for is `free` with empty lists, not 404.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LockState {
    pub lock: String,
    pub state: LockStatus,
    /// The holders' mode; null when free.
    pub mode: Option<LockMode>,
    pub holders: Vec<LockHolder>,
    /// In queue order.
    pub waiters: Vec<LockWaiter>,
}

/// `GET /v1/locks` query string.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ListLocksQuery {
    /// Only names starting with this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// Page size; default `LIST_LIMIT_DEFAULT`, at most `LIST_LIMIT_MAX`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
    /// Start after this name (the previous page's `next`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<String>,
}

/// `GET /v1/locks` answer: held or waited-for locks ordered by name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ListLocksResponse {
    pub locks: Vec<LockState>,
    /// The name to pass as `after` for the next page; null on the last page.
    pub next: Option<String>,
}

/// `POST /v1/locks/{name}/validate` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ValidateRequest {
    pub fencing_token: u64,
}

/// `POST /v1/locks/{name}/validate` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ValidateResponse {
    /// Whether `fencing_token` is a current grant of the lock.
    pub valid: bool,
    /// The lock's current grant; null when the lock is free.
    pub current_token: Option<u64>,
}

// ---------------------------------------------------------------------------
// Fenced KV
// ---------------------------------------------------------------------------

/// `PUT /v1/kv/{key}` and `POST /v1/kv/{key}/append` body. `lock` and
/// `fencing_token` go together; both absent is an unfenced write.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct KvWriteRequest {
    /// UTF-8, at most `KV_VALUE_BYTES_MAX` (after an append too).
    pub value: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lock: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fencing_token: Option<u64>,
}

/// `PUT /v1/kv/{key}` and `POST /v1/kv/{key}/append` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct KvWriteResponse {
    pub key: String,
    /// Value size in bytes after the write.
    pub size: u64,
    /// Newest token that wrote the key; null if only unfenced writes did.
    pub last_token: Option<u64>,
}

/// `GET /v1/kv/{key}` answer (linearizable).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct KvGetResponse {
    pub value: String,
    /// Newest token that wrote the key; null if only unfenced writes did.
    pub last_token: Option<u64>,
}

// ---------------------------------------------------------------------------
// Stacks
// ---------------------------------------------------------------------------

/// `POST /v1/stacks/{name}/push` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StackPushRequest {
    /// UTF-8, at most `STACK_ELEMENT_BYTES_MAX`.
    pub value: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lock: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fencing_token: Option<u64>,
}

/// `POST /v1/stacks/{name}/push` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StackPushResponse {
    /// Elements after the push.
    pub size: u64,
}

/// `POST /v1/stacks/{name}/pop` body: empty, `{}`, or a fence.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StackPopRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lock: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fencing_token: Option<u64>,
}

/// `POST /v1/stacks/{name}/pop` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StackPopResponse {
    pub value: String,
    /// Elements after the pop.
    pub size: u64,
}

/// `GET /v1/stacks/{name}` answer (linearizable).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StackGetResponse {
    pub size: u64,
    /// The top element; null when the stack is empty.
    pub top: Option<String>,
}

// ---------------------------------------------------------------------------
// Cluster
// ---------------------------------------------------------------------------

/// A node's Raft role, as it sees itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum NodeRole {
    Leader,
    Follower,
    Candidate,
    Learner,
}

/// One member in [`ClusterStatus`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MemberStatus {
    pub id: u64,
    /// `host:port` of the peer (Raft) listener.
    pub peer_addr: String,
    /// `host:port` of the HTTP API.
    pub api_addr: String,
    pub role: NodeRole,
    pub voter: bool,
    /// Replication progress as the answering node knows it (a leader knows
    /// every member's; others may report null).
    pub match_index: Option<u64>,
}

/// `GET /v1/cluster` answer: the answering node's own view.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ClusterStatus {
    pub cluster_id: String,
    /// The server's version string.
    pub version: String,
    pub node_id: u64,
    /// Null when this node knows no leader.
    pub leader_id: Option<u64>,
    pub term: u64,
    pub commit_index: u64,
    pub members: Vec<MemberStatus>,
}

/// `POST /v1/cluster/members` body: a node joins as a learner and is promoted
/// once caught up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AddMemberRequest {
    pub id: u64,
    pub peer_addr: String,
    pub api_addr: String,
}

/// `POST /v1/cluster/leader` body: transfer leadership to `id`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TransferLeaderRequest {
    pub id: u64,
}

/// The body of 200 answers the contract gives no fields: `{}` (session and
/// stack DELETE, release, member add/remove, leader transfer). Readers must
/// ignore fields they do not know, so these may grow.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EmptyResponse {}

// ---------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------

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
}

impl ErrorCode {
    /// Every code, for tables and tests.
    pub const ALL: [ErrorCode; 11] = [
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
    ];

    /// The HTTP status that carries this code.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorCode::InvalidRequest => 400,
            ErrorCode::NotFound => 404,
            ErrorCode::LockHeld
            | ErrorCode::NotHolder
            | ErrorCode::StaleToken
            | ErrorCode::StackEmpty => 409,
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
    use serde::de::DeserializeOwned;
    use serde_json::{json, Value};

    /// Parses `example`, checks it equals `expected`, and that serializing
    /// gives back the same JSON value.
    fn round_trip<T>(example: Value, expected: T)
    where
        T: Serialize + DeserializeOwned + PartialEq + fmt::Debug,
    {
        let parsed: T = serde_json::from_value(example.clone()).expect("example parses");
        assert_eq!(parsed, expected);
        assert_eq!(serde_json::to_value(&parsed).expect("serializes"), example);
    }

    #[test]
    fn sessions_round_trip() {
        round_trip(
            json!({"ttl_ms": 10000, "name": "worker-7"}),
            CreateSessionRequest {
                ttl_ms: 10000,
                name: Some("worker-7".into()),
            },
        );
        let defaulted: CreateSessionRequest = serde_json::from_str("{}").unwrap();
        assert_eq!(defaulted.ttl_ms, SESSION_TTL_MS_DEFAULT);
        round_trip(
            json!({"session_id": "18446744073709551615", "ttl_ms": 10000}),
            CreateSessionResponse {
                session_id: SessionId(u64::MAX),
                ttl_ms: 10000,
            },
        );
        round_trip(json!({}), KeepaliveRequest {});
        round_trip(
            json!({"ttl_ms": 10000}),
            KeepaliveResponse { ttl_ms: 10000 },
        );
        round_trip(
            json!({"session_id": "7", "name": "worker-7", "ttl_ms": 10000,
                   "expires_in_ms": 8000,
                   "locks": [{"lock": "a/b", "mode": "exclusive", "fencing_token": 42}],
                   "waiting": [{"lock": "c", "mode": "shared"}]}),
            SessionInfo {
                session_id: SessionId(7),
                name: Some("worker-7".into()),
                ttl_ms: 10000,
                expires_in_ms: 8000,
                locks: vec![HeldLock {
                    lock: "a/b".into(),
                    mode: LockMode::Exclusive,
                    fencing_token: 42,
                }],
                waiting: vec![WaitingLock {
                    lock: "c".into(),
                    mode: LockMode::Shared,
                }],
            },
        );
    }

    #[test]
    fn session_id_is_a_decimal_string() {
        assert!(serde_json::from_value::<SessionId>(json!(7)).is_err());
        assert!(serde_json::from_value::<SessionId>(json!("+7")).is_err());
        assert!(serde_json::from_value::<SessionId>(json!("")).is_err());
        assert!(serde_json::from_value::<SessionId>(json!("18446744073709551616")).is_err());
        assert_eq!("0042".parse::<SessionId>(), Ok(SessionId(42)));
    }

    #[test]
    fn locks_round_trip() {
        round_trip(
            json!({"session_id": "3", "mode": "shared", "wait_ms": 0}),
            AcquireRequest {
                session_id: Some(SessionId(3)),
                mode: LockMode::Shared,
                wait_ms: 0,
                ttl_ms: None,
            },
        );
        let bare: AcquireRequest = serde_json::from_str("{}").unwrap();
        assert_eq!(bare, AcquireRequest::default());
        assert_eq!(bare.mode, LockMode::Exclusive);
        round_trip(
            json!({"lock": "jobs/nightly", "mode": "exclusive", "session_id": "3",
                   "fencing_token": 42}),
            AcquireResponse {
                lock: "jobs/nightly".into(),
                mode: LockMode::Exclusive,
                session_id: SessionId(3),
                fencing_token: 42,
            },
        );
        round_trip(
            json!({"session_id": "3", "fencing_token": 42}),
            ReleaseRequest {
                session_id: SessionId(3),
                fencing_token: Some(42),
            },
        );
        let held = LockState {
            lock: "L".into(),
            state: LockStatus::Held,
            mode: Some(LockMode::Exclusive),
            holders: vec![LockHolder {
                session_id: SessionId(3),
                session_name: None,
                fencing_token: 42,
                acquired_at_ms: 1_700_000_000_000,
            }],
            waiters: vec![LockWaiter {
                session_id: SessionId(4),
                mode: LockMode::Shared,
            }],
        };
        round_trip(
            json!({"lock": "L", "state": "held", "mode": "exclusive",
                   "holders": [{"session_id": "3", "session_name": null,
                                "fencing_token": 42, "acquired_at_ms": 1_700_000_000_000u64}],
                   "waiters": [{"session_id": "4", "mode": "shared"}]}),
            held.clone(),
        );
        round_trip(
            json!({"lock": "F", "state": "free", "mode": null, "holders": [], "waiters": []}),
            LockState {
                lock: "F".into(),
                state: LockStatus::Free,
                mode: None,
                holders: vec![],
                waiters: vec![],
            },
        );
        round_trip(
            json!({"locks": [serde_json::to_value(&held).unwrap()], "next": null}),
            ListLocksResponse {
                locks: vec![held],
                next: None,
            },
        );
        round_trip(
            json!({"prefix": "jobs/", "limit": 10}),
            ListLocksQuery {
                prefix: Some("jobs/".into()),
                limit: Some(10),
                after: None,
            },
        );
        round_trip(
            json!({"fencing_token": 42}),
            ValidateRequest { fencing_token: 42 },
        );
        round_trip(
            json!({"valid": true, "current_token": 42}),
            ValidateResponse {
                valid: true,
                current_token: Some(42),
            },
        );
    }

    #[test]
    fn kv_and_stacks_round_trip() {
        round_trip(
            json!({"value": "v", "lock": "L", "fencing_token": 42}),
            KvWriteRequest {
                value: "v".into(),
                lock: Some("L".into()),
                fencing_token: Some(42),
            },
        );
        round_trip(
            json!({"value": "v"}),
            KvWriteRequest {
                value: "v".into(),
                lock: None,
                fencing_token: None,
            },
        );
        round_trip(
            json!({"key": "k", "size": 1, "last_token": 42}),
            KvWriteResponse {
                key: "k".into(),
                size: 1,
                last_token: Some(42),
            },
        );
        round_trip(
            json!({"value": "v", "last_token": 42}),
            KvGetResponse {
                value: "v".into(),
                last_token: Some(42),
            },
        );
        round_trip(
            json!({"value": "x"}),
            StackPushRequest {
                value: "x".into(),
                lock: None,
                fencing_token: None,
            },
        );
        round_trip(json!({"size": 1}), StackPushResponse { size: 1 });
        round_trip(json!({}), StackPopRequest::default());
        round_trip(
            json!({"value": "x", "size": 0}),
            StackPopResponse {
                value: "x".into(),
                size: 0,
            },
        );
        round_trip(
            json!({"size": 0, "top": null}),
            StackGetResponse { size: 0, top: None },
        );
    }

    #[test]
    fn cluster_round_trip() {
        round_trip(
            json!({"cluster_id": "c1", "version": "0.1.0", "node_id": 1, "leader_id": null,
                   "term": 3, "commit_index": 17,
                   "members": [{"id": 1, "peer_addr": "127.0.0.1:7071",
                                "api_addr": "127.0.0.1:7070", "role": "learner",
                                "voter": false, "match_index": 5}]}),
            ClusterStatus {
                cluster_id: "c1".into(),
                version: "0.1.0".into(),
                node_id: 1,
                leader_id: None,
                term: 3,
                commit_index: 17,
                members: vec![MemberStatus {
                    id: 1,
                    peer_addr: "127.0.0.1:7071".into(),
                    api_addr: "127.0.0.1:7070".into(),
                    role: NodeRole::Learner,
                    voter: false,
                    match_index: Some(5),
                }],
            },
        );
        round_trip(
            json!({"id": 4, "peer_addr": "h:1", "api_addr": "h:2"}),
            AddMemberRequest {
                id: 4,
                peer_addr: "h:1".into(),
                api_addr: "h:2".into(),
            },
        );
        round_trip(json!({"id": 2}), TransferLeaderRequest { id: 2 });
        round_trip(json!({}), EmptyResponse {});
    }

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
        ];
        for (code, (spelling, status)) in ErrorCode::ALL.into_iter().zip(table) {
            assert_eq!(code.as_str(), spelling);
            assert_eq!(code.http_status(), status);
            assert_eq!(serde_json::to_value(code).unwrap(), json!(spelling));
            assert_eq!(ErrorCode::from_code(spelling), Some(code));
        }
        assert_eq!(ErrorCode::from_code("teapot"), None);
    }

    #[test]
    fn names() {
        assert_eq!(validate_name("jobs/nightly-1.x:y_z"), Ok(()));
        assert_eq!(validate_name(""), Err(NameError::Empty));
        assert_eq!(validate_name(&"a".repeat(256)), Ok(()));
        assert_eq!(
            validate_name(&"a".repeat(257)),
            Err(NameError::TooLong { len: 257 })
        );
        assert_eq!(
            validate_name("a b"),
            Err(NameError::BadByte {
                byte: b' ',
                offset: 1
            })
        );
        assert_eq!(
            validate_name("é"),
            Err(NameError::BadByte {
                byte: 0xc3,
                offset: 0
            })
        );
        assert!(validate_name("a%2Fb").is_err());
    }
}
