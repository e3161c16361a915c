//! Handlers, one module per resource of API.md, and the two ways they reach
//! the node: [`propose`] for writes and [`read`] for linearizable reads.

pub(crate) mod cluster;
pub(crate) mod kv;
pub(crate) mod locks;
pub(crate) mod ops;
pub(crate) mod sessions;
pub(crate) mod stacks;

use std::time::Duration;

use deadbolt_api::{ErrorCode, LockMode};
use deadbolt_core::lock::{Command, Fence, Idempotency, LockError, Mode, Reply};
use deadbolt_runtime::node::ReadContext;

use super::error::ApiError;
use super::extract::check_name;
use super::AppState;

/// The OpenAPI description of the `Idempotency-Acked-Below` header, which
/// every keyed mutation takes.
pub(crate) const ACKED_BELOW_HEADER_DESCRIPTION: &str = "Optional: the key is `<prefix>-<seq>` \
    and the client has the final outcome of every `<prefix>-<m>` with m below this value (at most \
    seq) and will never retry them; the cluster may forget them.";

/// Replicates `command` and returns its reply; a state-machine refusal
/// becomes its API error.
pub(crate) async fn propose(
    state: &AppState,
    command: Command,
    idempotency: Option<Idempotency>,
    deadline: Duration,
) -> Result<Reply, ApiError> {
    match state
        .node()?
        .propose(command, idempotency, deadline)
        .await?
    {
        Reply::Error(error) => Err(error.into()),
        reply => Ok(reply),
    }
}

/// A linearizable read through the node.
pub(crate) async fn read<T: Send + 'static>(
    state: &AppState,
    deadline: Duration,
    query: impl FnOnce(ReadContext<'_>) -> Result<T, LockError> + Send + 'static,
) -> Result<T, ApiError> {
    Ok(state.node()?.read(deadline, query).await??)
}

/// A reply of another kind than the command produces: the runtime broke its
/// contract. The command may have applied, so this is reported as an
/// unknown outcome (504), which a keyed retry resolves.
pub(crate) fn unexpected(reply: Reply) -> ApiError {
    tracing::error!(?reply, "the node answered with a reply of the wrong kind");
    ApiError::new(
        ErrorCode::Timeout,
        "the node's answer could not be interpreted; the outcome is unknown",
    )
}

pub(crate) fn mode_from_api(mode: LockMode) -> Mode {
    match mode {
        LockMode::Exclusive => Mode::Exclusive,
        LockMode::Shared => Mode::Shared,
    }
}

pub(crate) fn mode_to_api(mode: Mode) -> LockMode {
    match mode {
        Mode::Exclusive => LockMode::Exclusive,
        Mode::Shared => LockMode::Shared,
    }
}

/// The optional `lock` + `fencing_token` pair of fenced writes: both or
/// neither.
pub(crate) fn fence(lock: Option<String>, token: Option<u64>) -> Result<Option<Fence>, ApiError> {
    match (lock, token) {
        (None, None) => Ok(None),
        (Some(lock), Some(fencing_token)) => {
            check_name("lock", &lock)?;
            Ok(Some(Fence {
                lock,
                fencing_token,
            }))
        }
        (Some(_), None) => Err(ApiError::invalid(
            "fencing_token",
            "is required when lock is given",
        )),
        (None, Some(_)) => Err(ApiError::invalid(
            "lock",
            "is required when fencing_token is given",
        )),
    }
}
