//! `/v1/stacks`: small replicated LIFO lists, optionally fenced.

use axum::extract::State;
use axum::Json;
use deadbolt_api::{
    EmptyResponse, ErrorEnvelope, StackGetResponse, StackPopRequest, StackPopResponse,
    StackPushRequest, StackPushResponse, STACK_ELEMENT_BYTES_MAX,
};
use deadbolt_core::lock::{Command, Reply, StackDelete, StackPop, StackPush};

use super::{fence, propose, read, unexpected, ACKED_BELOW_HEADER_DESCRIPTION};
use crate::http::error::ApiError;
use crate::http::extract::{check_name, Deadline, Mutation, PathParam};
use crate::http::AppState;

/// Push an element (creates the stack).
#[utoipa::path(post, path = "/v1/stacks/{name}/push", tag = "stacks",
    request_body = StackPushRequest,
    params(("name" = String, Path), ("Idempotency-Key" = Option<String>, Header),
        ("Idempotency-Acked-Below" = Option<u64>, Header, description = ACKED_BELOW_HEADER_DESCRIPTION),
           ("Request-Timeout-Ms" = Option<u64>, Header)),
    responses(
        (status = 200, body = StackPushResponse),
        (status = "4XX", body = ErrorEnvelope), (status = "5XX", body = ErrorEnvelope),
    ))]
pub(crate) async fn push(
    State(state): State<AppState>,
    PathParam(name): PathParam<String>,
    request: Mutation<StackPushRequest>,
) -> Result<Json<StackPushResponse>, ApiError> {
    check_name("name", &name)?;
    let body = request.body;
    if body.value.len() > STACK_ELEMENT_BYTES_MAX {
        return Err(ApiError::invalid(
            "value",
            format!(
                "is {} bytes, above {STACK_ELEMENT_BYTES_MAX}",
                body.value.len()
            ),
        ));
    }
    let command = Command::StackPush(StackPush {
        stack: name,
        value: body.value,
        fence: fence(body.lock, body.fencing_token)?,
    });
    match propose(&state, command, request.idempotency, request.deadline).await? {
        Reply::Pushed { size } => Ok(Json(StackPushResponse { size })),
        other => Err(unexpected(other)),
    }
}

/// Pop the top element; 409 `stack_empty` when empty.
#[utoipa::path(post, path = "/v1/stacks/{name}/pop", tag = "stacks",
    request_body(content = StackPopRequest, description = "Empty, `{}` or a fence."),
    params(("name" = String, Path), ("Idempotency-Key" = Option<String>, Header),
        ("Idempotency-Acked-Below" = Option<u64>, Header, description = ACKED_BELOW_HEADER_DESCRIPTION),
           ("Request-Timeout-Ms" = Option<u64>, Header)),
    responses(
        (status = 200, body = StackPopResponse),
        (status = 409, description = "`stack_empty`.", body = ErrorEnvelope),
        (status = "4XX", body = ErrorEnvelope), (status = "5XX", body = ErrorEnvelope),
    ))]
pub(crate) async fn pop(
    State(state): State<AppState>,
    PathParam(name): PathParam<String>,
    request: Mutation<StackPopRequest>,
) -> Result<Json<StackPopResponse>, ApiError> {
    check_name("name", &name)?;
    let command = Command::StackPop(StackPop {
        stack: name,
        fence: fence(request.body.lock, request.body.fencing_token)?,
    });
    match propose(&state, command, request.idempotency, request.deadline).await? {
        Reply::Popped { value, size } => Ok(Json(StackPopResponse { value, size })),
        other => Err(unexpected(other)),
    }
}

/// Size and top element (linearizable); 404 if never pushed or deleted.
#[utoipa::path(get, path = "/v1/stacks/{name}", tag = "stacks",
    params(("name" = String, Path), ("Request-Timeout-Ms" = Option<u64>, Header)),
    responses(
        (status = 200, body = StackGetResponse),
        (status = 404, body = ErrorEnvelope),
        (status = "4XX", body = ErrorEnvelope), (status = "5XX", body = ErrorEnvelope),
    ))]
pub(crate) async fn get(
    State(state): State<AppState>,
    PathParam(name): PathParam<String>,
    Deadline(deadline): Deadline,
) -> Result<Json<StackGetResponse>, ApiError> {
    check_name("name", &name)?;
    let view = read(&state, deadline, move |ctx| ctx.state.stack(&name)).await?;
    Ok(Json(StackGetResponse {
        size: view.size,
        top: view.top,
    }))
}

/// Delete a stack (optionally fenced: same body as pop).
#[utoipa::path(delete, path = "/v1/stacks/{name}", tag = "stacks",
    request_body(content = StackPopRequest, description = "Optional fence; may be empty."),
    params(("name" = String, Path), ("Idempotency-Key" = Option<String>, Header),
        ("Idempotency-Acked-Below" = Option<u64>, Header, description = ACKED_BELOW_HEADER_DESCRIPTION),
           ("Request-Timeout-Ms" = Option<u64>, Header)),
    responses(
        (status = 200, body = EmptyResponse),
        (status = "4XX", body = ErrorEnvelope), (status = "5XX", body = ErrorEnvelope),
    ))]
pub(crate) async fn delete(
    State(state): State<AppState>,
    PathParam(name): PathParam<String>,
    request: Mutation<StackPopRequest>,
) -> Result<Json<EmptyResponse>, ApiError> {
    check_name("name", &name)?;
    let command = Command::StackDelete(StackDelete {
        stack: name,
        fence: fence(request.body.lock, request.body.fencing_token)?,
    });
    match propose(&state, command, request.idempotency, request.deadline).await? {
        Reply::StackDeleted => Ok(Json(EmptyResponse {})),
        other => Err(unexpected(other)),
    }
}
