//! `/v1/sessions`: open, inspect, keep alive and close leases.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use deadbolt_api::{
    CreateSessionRequest, CreateSessionResponse, EmptyResponse, ErrorEnvelope, HeldLock,
    KeepaliveRequest, KeepaliveResponse, SessionId, SessionInfo, WaitingLock, SESSION_TTL_MS_MAX,
    SESSION_TTL_MS_MIN,
};
use deadbolt_core::lock::{CloseSession, Command, Keepalive, OpenSession, Reply};

use super::{mode_to_api, propose, read, unexpected, ACKED_BELOW_HEADER_DESCRIPTION};
use crate::http::error::ApiError;
use crate::http::extract::{Deadline, Mutation, PathParam};
use crate::http::AppState;

fn session_id(text: &str) -> Result<SessionId, ApiError> {
    text.parse().map_err(|e| ApiError::invalid("id", e))
}

/// Open a session (a lease kept alive by keepalives).
#[utoipa::path(post, path = "/v1/sessions", tag = "sessions",
    request_body = CreateSessionRequest,
    params(
        ("Idempotency-Key" = Option<String>, Header, description = "Up to 128 bytes; a retry returns the first outcome."),
        ("Idempotency-Acked-Below" = Option<u64>, Header, description = ACKED_BELOW_HEADER_DESCRIPTION),
        ("Request-Timeout-Ms" = Option<u64>, Header, description = "Deadline, 1..=60000, default 5000."),
    ),
    responses(
        (status = 201, body = CreateSessionResponse),
        (status = "4XX", body = ErrorEnvelope), (status = "5XX", body = ErrorEnvelope),
    ))]
pub(crate) async fn create(
    State(state): State<AppState>,
    request: Mutation<CreateSessionRequest>,
) -> Result<(StatusCode, Json<CreateSessionResponse>), ApiError> {
    let body = request.body;
    if !(SESSION_TTL_MS_MIN..=SESSION_TTL_MS_MAX).contains(&body.ttl_ms) {
        return Err(ApiError::invalid(
            "ttl_ms",
            format!(
                "{} is outside {SESSION_TTL_MS_MIN}..={SESSION_TTL_MS_MAX}",
                body.ttl_ms
            ),
        ));
    }
    let command = Command::OpenSession(OpenSession {
        ttl_ms: body.ttl_ms,
        name: body.name.unwrap_or_default(),
    });
    match propose(&state, command, request.idempotency, request.deadline).await? {
        Reply::SessionOpened { session_id, ttl_ms } => Ok((
            StatusCode::CREATED,
            Json(CreateSessionResponse {
                session_id: SessionId(session_id),
                ttl_ms,
            }),
        )),
        other => Err(unexpected(other)),
    }
}

/// Renew a session's lease for its configured TTL.
#[utoipa::path(post, path = "/v1/sessions/{id}/keepalive", tag = "sessions",
    request_body(content = KeepaliveRequest, description = "Empty or `{}`."),
    params(
        ("id" = String, Path, description = "Session id (decimal string)."),
        ("Idempotency-Key" = Option<String>, Header),
        ("Idempotency-Acked-Below" = Option<u64>, Header, description = ACKED_BELOW_HEADER_DESCRIPTION),
        ("Request-Timeout-Ms" = Option<u64>, Header),
    ),
    responses(
        (status = 200, body = KeepaliveResponse),
        (status = 410, description = "The session expired.", body = ErrorEnvelope),
        (status = "4XX", body = ErrorEnvelope), (status = "5XX", body = ErrorEnvelope),
    ))]
pub(crate) async fn keepalive(
    State(state): State<AppState>,
    PathParam(id): PathParam<String>,
    request: Mutation<KeepaliveRequest>,
) -> Result<Json<KeepaliveResponse>, ApiError> {
    let session_id = session_id(&id)?.0;
    let command = Command::Keepalive(Keepalive { session_id });
    match propose(&state, command, request.idempotency, request.deadline).await? {
        Reply::KeptAlive { ttl_ms } => Ok(Json(KeepaliveResponse { ttl_ms })),
        other => Err(unexpected(other)),
    }
}

/// A session's locks, waits and remaining lease. `expires_in_ms` is exact on
/// the leader; any other node reports the full TTL, an upper bound.
#[utoipa::path(get, path = "/v1/sessions/{id}", tag = "sessions",
    params(
        ("id" = String, Path, description = "Session id (decimal string)."),
        ("Request-Timeout-Ms" = Option<u64>, Header),
    ),
    responses(
        (status = 200, body = SessionInfo,
         description = "`expires_in_ms` is measured by the leader's lease tracker when this node leads; \
                        other nodes report the session's TTL (an upper bound)."),
        (status = 404, body = ErrorEnvelope), (status = 410, body = ErrorEnvelope),
        (status = "4XX", body = ErrorEnvelope), (status = "5XX", body = ErrorEnvelope),
    ))]
pub(crate) async fn get(
    State(state): State<AppState>,
    PathParam(id): PathParam<String>,
    Deadline(deadline): Deadline,
) -> Result<Json<SessionInfo>, ApiError> {
    let id = session_id(&id)?;
    let (view, expires_in_ms) = read(&state, deadline, move |ctx| {
        let view = ctx.state.session(id.0)?;
        let expires_in_ms = ctx
            .lease
            .and_then(|lease| lease.expires_in_ms(id.0, ctx.now_ms))
            .unwrap_or(view.ttl_ms);
        Ok((view, expires_in_ms))
    })
    .await?;
    Ok(Json(SessionInfo {
        session_id: id,
        name: (!view.name.is_empty()).then_some(view.name),
        ttl_ms: view.ttl_ms,
        expires_in_ms,
        locks: view
            .locks
            .into_iter()
            .map(|l| HeldLock {
                lock: l.lock,
                mode: mode_to_api(l.mode),
                fencing_token: l.fencing_token,
            })
            .collect(),
        waiting: view
            .waiting
            .into_iter()
            .map(|w| WaitingLock {
                lock: w.lock,
                mode: mode_to_api(w.mode),
            })
            .collect(),
    }))
}

/// Close a session, releasing everything it held or waited for.
#[utoipa::path(delete, path = "/v1/sessions/{id}", tag = "sessions",
    params(
        ("id" = String, Path, description = "Session id (decimal string)."),
        ("Idempotency-Key" = Option<String>, Header),
        ("Idempotency-Acked-Below" = Option<u64>, Header, description = ACKED_BELOW_HEADER_DESCRIPTION),
        ("Request-Timeout-Ms" = Option<u64>, Header),
    ),
    responses(
        (status = 200, body = EmptyResponse),
        (status = "4XX", body = ErrorEnvelope), (status = "5XX", body = ErrorEnvelope),
    ))]
pub(crate) async fn delete(
    State(state): State<AppState>,
    PathParam(id): PathParam<String>,
    request: Mutation<EmptyResponse>,
) -> Result<Json<EmptyResponse>, ApiError> {
    let session_id = session_id(&id)?.0;
    let command = Command::CloseSession(CloseSession { session_id });
    match propose(&state, command, request.idempotency, request.deadline).await? {
        Reply::SessionClosed => Ok(Json(EmptyResponse {})),
        other => Err(unexpected(other)),
    }
}
