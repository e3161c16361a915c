//! deadbolt-api: the HTTP API v1 wire contract, shared by the server (which
//! derives its OpenAPI document from these types, feature `openapi`) and the
//! client: every JSON body, error code, header name and limit of
//! `shared/API.md`, and name validation.
//!
//! These are plain serde structs and enums on purpose: no behaviour beyond
//! validation of names, so the contract can be read here in one place. Field
//! names and enum spellings are the public contract; extend, never rename.
//!
//! A leaf crate (serde and thiserror only), so the client compiles no Raft
//! and the pure core carries no `utoipa`. `deadbolt-core` depends on it and
//! re-exports it as `deadbolt_core::api`.
//!
//! [`rng`] lives here too although it is not wire format: the one seeded
//! generator (`SplitMix64`) is needed by the core (election jitter), the
//! runtime and the client (ids, retry jitter), and a simulation replays only
//! if they all draw from the same algorithm. This is the one crate below
//! both the core and the client, and 80 lines do not earn a crate of their
//! own; the core re-exports it as `deadbolt_core::rng`.

mod cluster;
mod error;
mod headers;
pub mod limits;
mod lock;
mod name;
mod resource;
pub mod rng;
mod session;

pub use cluster::{
    AddMemberRequest, ClusterStatus, EmptyResponse, MemberStatus, NodeRole, QuorumStatus,
    TransferLeaderRequest, UpdateMemberRequest,
};
pub use error::{ErrorBody, ErrorCode, ErrorDetails, ErrorEnvelope, NotFoundKind};
pub use headers::{
    HEADER_IDEMPOTENCY_ACKED_BELOW, HEADER_IDEMPOTENCY_KEY, HEADER_LEADER,
    HEADER_REQUEST_TIMEOUT_MS, HEADER_RETRY_AFTER, HEADER_SNAPSHOT_INDEX,
};
// The contract's limits, also at the root where `api::X` imports have always
// found them; their one definition is in [`limits`].
pub use limits::{
    BODY_BYTES_MAX_DEFAULT, EPHEMERAL_SESSION_TTL_MS_DEFAULT, IDEMPOTENCY_KEY_BYTES_MAX,
    JSON_SAFE_INTEGER_MAX, KV_VALUE_BYTES_MAX, LIST_LIMIT_DEFAULT, LIST_LIMIT_MAX, NAME_BYTES_MAX,
    NAME_BYTES_MIN, REQUEST_TIMEOUT_MS_DEFAULT, REQUEST_TIMEOUT_MS_MAX, RETRY_AFTER_SECS_MIN,
    SESSION_TTL_MS_DEFAULT, SESSION_TTL_MS_MAX, SESSION_TTL_MS_MIN, STACK_ELEMENTS_MAX,
    STACK_ELEMENT_BYTES_MAX, WAIT_MS_MAX,
};
pub use lock::{
    AcquireRequest, AcquireResponse, ListLocksQuery, ListLocksResponse, LockHolder, LockMode,
    LockState, LockStatus, LockWaiter, ReleaseRequest, ValidateRequest, ValidateResponse,
    WithdrawRequest, WithdrawResponse,
};
pub use name::{is_name_byte, validate_name, NameError};
pub use resource::{
    KvGetResponse, KvWriteRequest, KvWriteResponse, StackGetResponse, StackPopRequest,
    StackPopResponse, StackPushRequest, StackPushResponse,
};
pub use session::{
    CreateSessionRequest, CreateSessionResponse, HeldLock, KeepaliveRequest, KeepaliveResponse,
    SessionId, SessionIdError, SessionInfo, WaitingLock,
};

/// Parses `example`, checks it equals `expected`, and that serializing
/// gives back the same JSON value.
#[cfg(test)]
fn round_trip<T>(example: serde_json::Value, expected: T)
where
    T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
{
    let parsed: T = serde_json::from_value(example.clone()).expect("example parses");
    assert_eq!(parsed, expected);
    assert_eq!(serde_json::to_value(&parsed).expect("serializes"), example);
}
