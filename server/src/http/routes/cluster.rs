//! `/v1/cluster`: this node's view of the membership, and membership and
//! leadership changes through the node's handle.

use axum::extract::State;
use axum::http::{header, HeaderName};
use axum::response::{IntoResponse, Response};
use axum::Json;
use deadbolt_api::{
    AddMemberRequest, ClusterStatus, EmptyResponse, ErrorEnvelope, MemberStatus, NodeRole,
    QuorumStatus, TransferLeaderRequest, UpdateMemberRequest,
};
use deadbolt_core::raft::Role;
use deadbolt_runtime::node::{Joiner, NodeStatus};

use crate::http::error::ApiError;
use crate::http::extract::{Deadline, JsonBody, PathParam};
use crate::http::AppState;

/// The API's view of a [`NodeStatus`]. A node knows only its own Raft role;
/// it reports the leader it knows as `leader`, other voters as `follower`
/// and non-voters as `learner`.
pub(crate) fn cluster_json(status: NodeStatus) -> ClusterStatus {
    let own_role = match status.role {
        Role::Leader => NodeRole::Leader,
        Role::Candidate | Role::PreCandidate => NodeRole::Candidate,
        Role::Follower => NodeRole::Follower,
    };
    let members = status
        .members
        .into_iter()
        .map(|m| {
            let role = if !m.voter {
                NodeRole::Learner
            } else if m.id == status.id {
                own_role
            } else if Some(m.id) == status.leader {
                NodeRole::Leader
            } else {
                NodeRole::Follower
            };
            MemberStatus {
                id: m.id,
                peer_addr: m.peer_addr,
                api_addr: m.api_addr,
                role,
                voter: m.voter,
                match_index: m.match_index,
                incarnation: m.incarnation,
                reachable: m.health.map(|h| h.reachable),
                last_contact_ms: m.health.and_then(|h| h.last_contact_ms),
                lag: m.health.map(|h| h.lag),
            }
        })
        .collect();
    ClusterStatus {
        cluster_id: status.cluster_id,
        version: env!("CARGO_PKG_VERSION").to_owned(),
        node_id: status.id,
        leader_id: status.leader,
        term: status.term,
        commit_index: status.commit_index,
        members,
        quorum: status.quorum.map(|q| QuorumStatus {
            voters: q.voters as u64,
            reachable_voters: q.reachable_voters as u64,
            ok: q.ok,
        }),
    }
}

/// This node's own view of the cluster (answered without a quorum). The
/// leader adds each member's `reachable`, `last_contact_ms` and `lag`
/// (entries behind its last log index) and the `quorum` summary; other
/// nodes answer null there.
#[utoipa::path(get, path = "/v1/cluster", tag = "cluster",
    responses((status = 200, body = ClusterStatus), (status = "5XX", body = ErrorEnvelope)))]
pub(crate) async fn status(State(state): State<AppState>) -> Result<Json<ClusterStatus>, ApiError> {
    Ok(Json(cluster_json(state.node()?.status().await?)))
}

fn check_host_port(field: &str, text: &str) -> Result<(), ApiError> {
    match text.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => Ok(()),
        _ => Err(ApiError::invalid(
            field,
            format!("{text:?} is not host:port"),
        )),
    }
}

/// Add a node as a learner; it is promoted to voter once it has itself
/// acknowledged the log up to the leader's commit index.
#[utoipa::path(post, path = "/v1/cluster/members", tag = "cluster",
    request_body = AddMemberRequest,
    params(("Request-Timeout-Ms" = Option<u64>, Header)),
    responses(
        (status = 200, body = EmptyResponse),
        (status = "4XX", body = ErrorEnvelope), (status = "5XX", body = ErrorEnvelope),
    ))]
pub(crate) async fn add_member(
    State(state): State<AppState>,
    Deadline(deadline): Deadline,
    JsonBody(body): JsonBody<AddMemberRequest>,
) -> Result<Json<EmptyResponse>, ApiError> {
    if body.id == 0 {
        return Err(ApiError::invalid("id", "must be at least 1"));
    }
    check_host_port("peer_addr", &body.peer_addr)?;
    check_host_port("api_addr", &body.api_addr)?;
    let joiner = Joiner {
        id: body.id,
        peer_addr: body.peer_addr,
        api_addr: body.api_addr,
        incarnation: body.incarnation,
        cluster_id: body.cluster_id,
    };
    state.node()?.add(joiner, deadline).await?;
    Ok(Json(EmptyResponse {}))
}

/// Remove a member.
#[utoipa::path(delete, path = "/v1/cluster/members/{id}", tag = "cluster",
    params(("id" = u64, Path), ("Request-Timeout-Ms" = Option<u64>, Header)),
    responses(
        (status = 200, body = EmptyResponse),
        (status = "4XX", body = ErrorEnvelope), (status = "5XX", body = ErrorEnvelope),
    ))]
pub(crate) async fn remove_member(
    State(state): State<AppState>,
    PathParam(id): PathParam<u64>,
    Deadline(deadline): Deadline,
) -> Result<Json<EmptyResponse>, ApiError> {
    state.node()?.remove_member(id, deadline).await?;
    Ok(Json(EmptyResponse {}))
}

/// Make a learner a voter: 409 `invalid_membership` until it has itself
/// acknowledged the log up to the leader's commit index; a voter is left
/// as it is.
#[utoipa::path(post, path = "/v1/cluster/members/{id}/promote", tag = "cluster",
    params(("id" = u64, Path), ("Request-Timeout-Ms" = Option<u64>, Header)),
    responses(
        (status = 200, body = EmptyResponse),
        (status = "4XX", body = ErrorEnvelope), (status = "5XX", body = ErrorEnvelope),
    ))]
pub(crate) async fn promote_member(
    State(state): State<AppState>,
    PathParam(id): PathParam<u64>,
    Deadline(deadline): Deadline,
) -> Result<Json<EmptyResponse>, ApiError> {
    state.node()?.promote_member(id, deadline).await?;
    Ok(Json(EmptyResponse {}))
}

/// Change a member's peer and/or API address.
#[utoipa::path(patch, path = "/v1/cluster/members/{id}", tag = "cluster",
    request_body = UpdateMemberRequest,
    params(("id" = u64, Path), ("Request-Timeout-Ms" = Option<u64>, Header)),
    responses(
        (status = 200, body = EmptyResponse),
        (status = "4XX", body = ErrorEnvelope), (status = "5XX", body = ErrorEnvelope),
    ))]
pub(crate) async fn update_member(
    State(state): State<AppState>,
    PathParam(id): PathParam<u64>,
    Deadline(deadline): Deadline,
    JsonBody(body): JsonBody<UpdateMemberRequest>,
) -> Result<Json<EmptyResponse>, ApiError> {
    if body.peer_addr.is_none() && body.api_addr.is_none() {
        return Err(ApiError::invalid(
            "peer_addr",
            "give peer_addr and/or api_addr",
        ));
    }
    for (field, addr) in [("peer_addr", &body.peer_addr), ("api_addr", &body.api_addr)] {
        if let Some(addr) = addr {
            check_host_port(field, addr)?;
        }
    }
    state
        .node()?
        .set_member_addrs(id, body.peer_addr, body.api_addr, deadline)
        .await?;
    Ok(Json(EmptyResponse {}))
}

/// Transfer leadership to a member.
#[utoipa::path(post, path = "/v1/cluster/leader", tag = "cluster",
    request_body = TransferLeaderRequest,
    params(("Request-Timeout-Ms" = Option<u64>, Header)),
    responses(
        (status = 200, body = EmptyResponse),
        (status = "4XX", body = ErrorEnvelope), (status = "5XX", body = ErrorEnvelope),
    ))]
pub(crate) async fn transfer_leader(
    State(state): State<AppState>,
    Deadline(deadline): Deadline,
    JsonBody(body): JsonBody<TransferLeaderRequest>,
) -> Result<Json<EmptyResponse>, ApiError> {
    state.node()?.transfer_leader(body.id, deadline).await?;
    Ok(Json(EmptyResponse {}))
}

/// A backup of the cluster's state for `deadbolt restore`: the state
/// machine at a committed index, taken after a ReadIndex round (so it holds
/// every write acknowledged before the request), as one checksummed file.
/// `Deadbolt-Snapshot-Index` gives the index.
#[utoipa::path(get, path = "/v1/cluster/snapshot", tag = "cluster",
    params(("Request-Timeout-Ms" = Option<u64>, Header)),
    responses(
        (status = 200, content_type = "application/octet-stream", body = Vec<u8>,
            headers(("Deadbolt-Snapshot-Index" = u64, description = "the committed index of the state"))),
        (status = "5XX", body = ErrorEnvelope),
    ))]
pub(crate) async fn snapshot(
    State(state): State<AppState>,
    Deadline(deadline): Deadline,
) -> Result<Response, ApiError> {
    let backup = state.node()?.backup(deadline).await?;
    let file_name = format!(
        "attachment; filename=\"deadbolt-{}-{}.snapshot\"",
        backup.cluster_id, backup.index
    );
    let headers = [
        (header::CONTENT_TYPE, "application/octet-stream".to_owned()),
        (header::CONTENT_DISPOSITION, file_name),
        (
            HeaderName::from_static("deadbolt-snapshot-index"),
            backup.index.to_string(),
        ),
    ];
    Ok((headers, backup.encode()).into_response())
}
