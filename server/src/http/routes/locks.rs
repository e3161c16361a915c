//! `/v1/locks`: acquire (try or wait), release, inspect, list, validate.

use std::time::Duration;

use axum::extract::State;
use axum::Json;
use deadbolt_api::{
    AcquireRequest, AcquireResponse, EmptyResponse, ErrorCode, ErrorEnvelope, ListLocksQuery,
    ListLocksResponse, LockState, LockStatus, LockWaiter, ReleaseRequest, SessionId,
    ValidateRequest, ValidateResponse, WithdrawRequest, WithdrawResponse, LIST_LIMIT_MAX,
    SESSION_TTL_MS_MAX, SESSION_TTL_MS_MIN, WAIT_MS_MAX,
};
use deadbolt_core::lock::{Acquire, Command, LockView, Owner, Release, Reply, Withdraw};

use super::{
    mode_from_api, mode_to_api, propose, read, unexpected, ACKED_BELOW_HEADER_DESCRIPTION,
};
use crate::http::error::{holder_json, ApiError};
use crate::http::extract::{check_name, Deadline, JsonBody, Mutation, PathParam, QueryParams};
use crate::http::AppState;

pub(crate) fn lock_json(view: LockView) -> LockState {
    LockState {
        lock: view.lock,
        state: match view.state {
            deadbolt_core::lock::LockState::Held => LockStatus::Held,
            deadbolt_core::lock::LockState::Free => LockStatus::Free,
        },
        mode: view.mode.map(mode_to_api),
        holders: view.holders.into_iter().map(holder_json).collect(),
        waiters: view
            .waiters
            .into_iter()
            .map(|w| LockWaiter {
                session_id: SessionId(w.session_id),
                mode: mode_to_api(w.mode),
            })
            .collect(),
    }
}

/// Acquire a lock, waiting up to `wait_ms` in its FIFO queue. Without
/// `session_id` the server opens a session (of `ttl_ms`, default 30000) that
/// owns just this lock and ends when it is released.
#[utoipa::path(post, path = "/v1/locks/{name}/acquire", tag = "locks",
    request_body = AcquireRequest,
    params(
        ("name" = String, Path, description = "Lock name; `/` sent as `%2F`."),
        ("Idempotency-Key" = Option<String>, Header),
        ("Idempotency-Acked-Below" = Option<u64>, Header, description = ACKED_BELOW_HEADER_DESCRIPTION),
        ("Request-Timeout-Ms" = Option<u64>, Header, description = "Deadline; `wait_ms` is added to it."),
    ),
    responses(
        (status = 200, body = AcquireResponse),
        (status = 409, description = "`lock_held`: not acquired within `wait_ms`.", body = ErrorEnvelope),
        (status = "4XX", body = ErrorEnvelope), (status = "5XX", body = ErrorEnvelope),
    ))]
pub(crate) async fn acquire(
    State(state): State<AppState>,
    PathParam(name): PathParam<String>,
    request: Mutation<AcquireRequest>,
) -> Result<Json<AcquireResponse>, ApiError> {
    check_name("name", &name)?;
    let body = request.body;
    if body.wait_ms > WAIT_MS_MAX {
        return Err(ApiError::invalid(
            "wait_ms",
            format!("{} is above {WAIT_MS_MAX}", body.wait_ms),
        ));
    }
    let owner = match body.session_id {
        Some(id) => Owner::Session(id.0),
        None => {
            let ttl_ms = body
                .ttl_ms
                .unwrap_or(state.settings.ephemeral_ttl_ms_default);
            if !(SESSION_TTL_MS_MIN..=SESSION_TTL_MS_MAX).contains(&ttl_ms) {
                return Err(ApiError::invalid(
                    "ttl_ms",
                    format!("{ttl_ms} is outside {SESSION_TTL_MS_MIN}..={SESSION_TTL_MS_MAX}"),
                ));
            }
            Owner::Ephemeral { ttl_ms }
        }
    };
    let command = Command::Acquire(Acquire {
        lock: name.clone(),
        owner,
        mode: mode_from_api(body.mode),
        wait_ms: body.wait_ms,
    });
    // A waiting acquire is answered when its wait ends; dropping this future
    // (client gone) withdraws the waiter inside the runtime.
    let deadline = request.deadline + Duration::from_millis(body.wait_ms);
    let idempotency = request.idempotency.clone();
    let reply = match propose(&state, command, request.idempotency, deadline).await {
        Err(timeout) if timeout.code == ErrorCode::Timeout && body.wait_ms > 0 => {
            match (idempotency, body.session_id) {
                (Some(idem), Some(session)) => {
                    applied_acquire(&state, idem, name.clone(), session.0)
                        .await
                        .ok_or(timeout)?
                }
                _ => return Err(timeout),
            }
        }
        reply => reply?,
    };
    match reply {
        Reply::Acquired(grant) => Ok(Json(AcquireResponse {
            lock: name,
            mode: mode_to_api(grant.mode),
            session_id: SessionId(grant.session_id),
            fencing_token: grant.fencing_token,
        })),
        Reply::Error(error) => Err(error.into()),
        Reply::Queued { .. } => {
            let mut error = ApiError::new(
                ErrorCode::Timeout,
                "the wait did not end before the deadline; the session is still queued \
                 (another request of it extended the wait)",
            );
            error.details.queued = Some(true);
            Err(error)
        }
        other => Err(unexpected(other)),
    }
}

/// Bound on the look at a timed-out acquire's key (it is only a refinement
/// of the 504 that is otherwise answered).
const APPLIED_LOOK_MS: u64 = 1_000;

/// What a keyed waiting acquire whose deadline passed came to, if it was
/// applied: its outcome (a grant, or `lock_held` for a wait that ended), or
/// `Queued` if the session still waits (another request of it extended the
/// wait). `None`: not known to be applied.
async fn applied_acquire(
    state: &AppState,
    idem: deadbolt_core::lock::Idempotency,
    lock: String,
    session: deadbolt_core::lock::SessionId,
) -> Option<Reply> {
    let look = read(state, Duration::from_millis(APPLIED_LOOK_MS), move |ctx| {
        Ok(ctx
            .state
            .acquire_outcome(&idem.key, idem.fingerprint, &lock, session))
    });
    look.await.ok().flatten()
}

/// Release a grant.
#[utoipa::path(post, path = "/v1/locks/{name}/release", tag = "locks",
    request_body = ReleaseRequest,
    params(
        ("name" = String, Path),
        ("Idempotency-Key" = Option<String>, Header),
        ("Idempotency-Acked-Below" = Option<u64>, Header, description = ACKED_BELOW_HEADER_DESCRIPTION),
        ("Request-Timeout-Ms" = Option<u64>, Header),
    ),
    responses(
        (status = 200, body = EmptyResponse),
        (status = "4XX", body = ErrorEnvelope), (status = "5XX", body = ErrorEnvelope),
    ))]
pub(crate) async fn release(
    State(state): State<AppState>,
    PathParam(name): PathParam<String>,
    request: Mutation<ReleaseRequest>,
) -> Result<Json<EmptyResponse>, ApiError> {
    check_name("name", &name)?;
    if let Some(lock) = request.body.lock.as_deref().filter(|lock| *lock != name) {
        return Err(ApiError::invalid(
            "lock",
            format!("names lock {lock:?}, but the path releases {name:?}"),
        ));
    }
    let command = Command::Release(Release {
        lock: name,
        session_id: request.body.session_id.0,
        fencing_token: request.body.fencing_token,
    });
    match propose(&state, command, request.idempotency, request.deadline).await? {
        Reply::Released => Ok(Json(EmptyResponse {})),
        other => Err(unexpected(other)),
    }
}

/// End the session's wait for the lock, if it waits (an extension of the
/// contract: what a disconnect of the waiting caller does, for a client
/// that must stop waiting without losing the call's answer).
#[utoipa::path(post, path = "/v1/locks/{name}/withdraw", tag = "locks",
    request_body = WithdrawRequest,
    params(
        ("name" = String, Path),
        ("Idempotency-Key" = Option<String>, Header),
        ("Idempotency-Acked-Below" = Option<u64>, Header, description = ACKED_BELOW_HEADER_DESCRIPTION),
        ("Request-Timeout-Ms" = Option<u64>, Header),
    ),
    responses(
        (status = 200, body = WithdrawResponse),
        (status = "4XX", body = ErrorEnvelope), (status = "5XX", body = ErrorEnvelope),
    ))]
pub(crate) async fn withdraw(
    State(state): State<AppState>,
    PathParam(name): PathParam<String>,
    request: Mutation<WithdrawRequest>,
) -> Result<Json<WithdrawResponse>, ApiError> {
    check_name("name", &name)?;
    let command = Command::Withdraw(Withdraw {
        lock: name,
        session_id: request.body.session_id.0,
    });
    match propose(&state, command, request.idempotency, request.deadline).await? {
        Reply::Withdrawn { was_waiting } => Ok(Json(WithdrawResponse { was_waiting })),
        other => Err(unexpected(other)),
    }
}

/// A lock's linearizable state; a lock nobody holds or waits for is `free`.
#[utoipa::path(get, path = "/v1/locks/{name}", tag = "locks",
    params(("name" = String, Path), ("Request-Timeout-Ms" = Option<u64>, Header)),
    responses(
        (status = 200, body = LockState),
        (status = "4XX", body = ErrorEnvelope), (status = "5XX", body = ErrorEnvelope),
    ))]
pub(crate) async fn get(
    State(state): State<AppState>,
    PathParam(name): PathParam<String>,
    Deadline(deadline): Deadline,
) -> Result<Json<LockState>, ApiError> {
    check_name("name", &name)?;
    let view = read(&state, deadline, move |ctx| ctx.state.lock(&name)).await?;
    Ok(Json(lock_json(view)))
}

/// Held or waited-for locks, by name.
#[utoipa::path(get, path = "/v1/locks", tag = "locks",
    params(
        ("prefix" = Option<String>, Query, description = "Only names starting with this."),
        ("limit" = Option<u32>, Query, description = "1..=1000, default 100."),
        ("after" = Option<String>, Query, description = "The previous page's `next`."),
        ("Request-Timeout-Ms" = Option<u64>, Header),
    ),
    responses(
        (status = 200, body = ListLocksResponse),
        (status = "4XX", body = ErrorEnvelope), (status = "5XX", body = ErrorEnvelope),
    ))]
pub(crate) async fn list(
    State(state): State<AppState>,
    QueryParams(query): QueryParams<ListLocksQuery>,
    Deadline(deadline): Deadline,
) -> Result<Json<ListLocksResponse>, ApiError> {
    if let Some(limit) = query.limit {
        if limit == 0 || limit > LIST_LIMIT_MAX {
            return Err(ApiError::invalid(
                "limit",
                format!("{limit} is outside 1..={LIST_LIMIT_MAX}"),
            ));
        }
    }
    let list = read(&state, deadline, move |ctx| {
        ctx.state.list_locks(
            query.prefix.as_deref().unwrap_or(""),
            query.limit.map(|l| l as usize),
            query.after.as_deref(),
        )
    })
    .await?;
    Ok(Json(ListLocksResponse {
        locks: list.locks.into_iter().map(lock_json).collect(),
        next: list.next,
    }))
}

/// Whether a fencing token still holds the lock (a linearizable read).
#[utoipa::path(post, path = "/v1/locks/{name}/validate", tag = "locks",
    request_body = ValidateRequest,
    params(("name" = String, Path), ("Request-Timeout-Ms" = Option<u64>, Header)),
    responses(
        (status = 200, body = ValidateResponse),
        (status = "4XX", body = ErrorEnvelope), (status = "5XX", body = ErrorEnvelope),
    ))]
pub(crate) async fn validate(
    State(state): State<AppState>,
    PathParam(name): PathParam<String>,
    Deadline(deadline): Deadline,
    JsonBody(body): JsonBody<ValidateRequest>,
) -> Result<Json<ValidateResponse>, ApiError> {
    check_name("name", &name)?;
    let token = body.fencing_token;
    let view = read(&state, deadline, move |ctx| {
        ctx.state.validate(&name, token)
    })
    .await?;
    Ok(Json(ValidateResponse {
        valid: view.valid,
        current_token: view.current_token,
    }))
}
