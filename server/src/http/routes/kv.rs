//! `/v1/kv`: small replicated values, optionally fenced by a lock's token.

use axum::extract::State;
use axum::Json;
use deadbolt_api::{
    ErrorEnvelope, KvGetResponse, KvWriteRequest, KvWriteResponse, KV_VALUE_BYTES_MAX,
};
use deadbolt_core::lock::{Command, KvWrite, Reply};

use super::{fence, propose, read, unexpected, ACKED_BELOW_HEADER_DESCRIPTION};
use crate::http::error::ApiError;
use crate::http::extract::{check_name, Deadline, Mutation, PathParam};
use crate::http::AppState;

/// Checks a write and builds its command (`append` chooses the kind).
fn write_command(key: &str, body: KvWriteRequest, append: bool) -> Result<Command, ApiError> {
    check_name("key", key)?;
    if body.value.len() > KV_VALUE_BYTES_MAX {
        return Err(ApiError::invalid(
            "value",
            format!("is {} bytes, above {KV_VALUE_BYTES_MAX}", body.value.len()),
        ));
    }
    let fence = fence(body.lock, body.fencing_token)?;
    let (key, value) = (key.to_owned(), body.value);
    Ok(if append {
        Command::KvAppend(KvWrite { key, value, fence })
    } else {
        Command::KvPut(KvWrite { key, value, fence })
    })
}

async fn write(
    state: AppState,
    key: String,
    request: Mutation<KvWriteRequest>,
    append: bool,
) -> Result<Json<KvWriteResponse>, ApiError> {
    let command = write_command(&key, request.body, append)?;
    match propose(&state, command, request.idempotency, request.deadline).await? {
        Reply::KvWritten { size, last_token } => Ok(Json(KvWriteResponse {
            key,
            size,
            last_token,
        })),
        other => Err(unexpected(other)),
    }
}

/// Set a key's value; with `lock` + `fencing_token`, only if that token
/// holds the lock exclusively and is not older than the key's last token.
#[utoipa::path(put, path = "/v1/kv/{key}", tag = "kv",
    request_body = KvWriteRequest,
    params(("key" = String, Path), ("Idempotency-Key" = Option<String>, Header),
        ("Idempotency-Acked-Below" = Option<u64>, Header, description = ACKED_BELOW_HEADER_DESCRIPTION),
           ("Request-Timeout-Ms" = Option<u64>, Header)),
    responses(
        (status = 200, body = KvWriteResponse),
        (status = "4XX", body = ErrorEnvelope), (status = "5XX", body = ErrorEnvelope),
    ))]
pub(crate) async fn put(
    State(state): State<AppState>,
    PathParam(key): PathParam<String>,
    request: Mutation<KvWriteRequest>,
) -> Result<Json<KvWriteResponse>, ApiError> {
    write(state, key, request, false).await
}

/// Append to a key's value (fenced like `PUT`).
#[utoipa::path(post, path = "/v1/kv/{key}/append", tag = "kv",
    request_body = KvWriteRequest,
    params(("key" = String, Path), ("Idempotency-Key" = Option<String>, Header),
        ("Idempotency-Acked-Below" = Option<u64>, Header, description = ACKED_BELOW_HEADER_DESCRIPTION),
           ("Request-Timeout-Ms" = Option<u64>, Header)),
    responses(
        (status = 200, body = KvWriteResponse),
        (status = "4XX", body = ErrorEnvelope), (status = "5XX", body = ErrorEnvelope),
    ))]
pub(crate) async fn append(
    State(state): State<AppState>,
    PathParam(key): PathParam<String>,
    request: Mutation<KvWriteRequest>,
) -> Result<Json<KvWriteResponse>, ApiError> {
    write(state, key, request, true).await
}

/// A key's value and last token (linearizable).
#[utoipa::path(get, path = "/v1/kv/{key}", tag = "kv",
    params(("key" = String, Path), ("Request-Timeout-Ms" = Option<u64>, Header)),
    responses(
        (status = 200, body = KvGetResponse),
        (status = 404, body = ErrorEnvelope),
        (status = "4XX", body = ErrorEnvelope), (status = "5XX", body = ErrorEnvelope),
    ))]
pub(crate) async fn get(
    State(state): State<AppState>,
    PathParam(key): PathParam<String>,
    Deadline(deadline): Deadline,
) -> Result<Json<KvGetResponse>, ApiError> {
    check_name("key", &key)?;
    let view = read(&state, deadline, move |ctx| ctx.state.kv_get(&key)).await?;
    Ok(Json(KvGetResponse {
        value: view.value,
        last_token: view.last_token,
    }))
}
