//! Lock bodies: acquire, release, state, listing, validation.

use serde::{Deserialize, Serialize};

use crate::session::SessionId;

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
    /// The grant's lock, so that an acquire answer is itself a release body;
    /// if given, it must be the lock of the path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lock: Option<String>,
    /// The grant's mode, accepted for the same reason and not checked (a
    /// session holds a lock in one mode only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<LockMode>,
}

/// `POST /v1/locks/{name}/withdraw` body (an extension of the contract):
/// ends the session's wait for the lock, if it waits, as a disconnect of
/// its caller would. Waiting calls for it are answered `lock_held`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WithdrawRequest {
    pub session_id: SessionId,
}

/// `POST /v1/locks/{name}/withdraw` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WithdrawResponse {
    /// Whether the session was queued for the lock (false: it held it
    /// already, its wait had ended, or it never asked).
    pub was_waiting: bool,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::round_trip;
    use serde_json::json;

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
                lock: None,
                mode: None,
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
}
