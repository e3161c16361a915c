//! Cluster status and membership bodies.

use serde::{Deserialize, Serialize};

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
    /// API extension: the incarnation (random id of the member's data dir)
    /// the membership records for it; absent until recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incarnation: Option<u64>,
    /// Health, on the leader only (other nodes answer null; absent from
    /// older servers): answered the leader within the last election timeout.
    #[serde(default)]
    pub reachable: Option<bool>,
    /// Milliseconds since it last answered the leader (0 for the leader
    /// itself; null on the leader too while it has not answered since that
    /// node became leader).
    #[serde(default)]
    pub last_contact_ms: Option<u64>,
    /// Entries behind the leader's last log index (not its commit index).
    #[serde(default)]
    pub lag: Option<u64>,
}

/// The leader's quorum summary in [`ClusterStatus`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct QuorumStatus {
    pub voters: u64,
    /// Voters that answered the leader within the last election timeout,
    /// the leader counting itself.
    pub reachable_voters: u64,
    /// The reachable voters are a majority: the cluster can commit.
    pub ok: bool,
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
    /// On the leader only (other nodes answer null; absent from older
    /// servers).
    #[serde(default)]
    pub quorum: Option<QuorumStatus>,
}

/// `POST /v1/cluster/members` body: a node joins as a learner and is promoted
/// once it has acknowledged the log up to the leader's commit index.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AddMemberRequest {
    pub id: u64,
    pub peer_addr: String,
    pub api_addr: String,
    /// API extension: the joining node's incarnation (the random id of its
    /// data dir, below 2^53). With it, a retried join of the same data dir
    /// is accepted and another data dir under a member's id is refused
    /// (409 `invalid_membership`); without it, an id that is already a
    /// voter is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incarnation: Option<u64>,
    /// API extension: the cluster the joining node's data dir belongs to
    /// (learned from the cluster it joins, or stored). Another cluster's id
    /// is refused (409 `invalid_membership`, naming both ids).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_id: Option<String>,
}

/// `PATCH /v1/cluster/members/{id}` body: a member's new addresses (absent:
/// unchanged), e.g. after it restarted with other listen flags.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UpdateMemberRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer_addr: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_addr: Option<String>,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::round_trip;
    use serde_json::json;

    fn follower_view() -> ClusterStatus {
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
                incarnation: None,
                reachable: None,
                last_contact_ms: None,
                lag: None,
            }],
            quorum: None,
        }
    }

    #[test]
    fn cluster_status_without_health_fields_still_parses() {
        // What servers before the health view answered.
        let old = json!({"cluster_id": "c1", "version": "0.1.0", "node_id": 1, "leader_id": null,
               "term": 3, "commit_index": 17,
               "members": [{"id": 1, "peer_addr": "127.0.0.1:7071",
                            "api_addr": "127.0.0.1:7070", "role": "learner",
                            "voter": false, "match_index": 5}]});
        let parsed: ClusterStatus = serde_json::from_value(old).expect("old answer parses");
        assert_eq!(parsed, follower_view());
    }

    #[test]
    fn cluster_round_trip() {
        // A follower: the health fields are present and null.
        round_trip(
            json!({"cluster_id": "c1", "version": "0.1.0", "node_id": 1, "leader_id": null,
                   "term": 3, "commit_index": 17,
                   "members": [{"id": 1, "peer_addr": "127.0.0.1:7071",
                                "api_addr": "127.0.0.1:7070", "role": "learner",
                                "voter": false, "match_index": 5, "reachable": null,
                                "last_contact_ms": null, "lag": null}],
                   "quorum": null}),
            follower_view(),
        );
        // The leader.
        let mut leader = follower_view();
        leader.leader_id = Some(1);
        leader.members[0].role = NodeRole::Leader;
        leader.members[0].voter = true;
        leader.members[0].reachable = Some(true);
        leader.members[0].last_contact_ms = Some(0);
        leader.members[0].lag = Some(0);
        leader.quorum = Some(QuorumStatus {
            voters: 1,
            reachable_voters: 1,
            ok: true,
        });
        round_trip(
            json!({"cluster_id": "c1", "version": "0.1.0", "node_id": 1, "leader_id": 1,
                   "term": 3, "commit_index": 17,
                   "members": [{"id": 1, "peer_addr": "127.0.0.1:7071",
                                "api_addr": "127.0.0.1:7070", "role": "leader",
                                "voter": true, "match_index": 5, "reachable": true,
                                "last_contact_ms": 0, "lag": 0}],
                   "quorum": {"voters": 1, "reachable_voters": 1, "ok": true}}),
            leader,
        );
        round_trip(
            json!({"id": 4, "peer_addr": "h:1", "api_addr": "h:2"}),
            AddMemberRequest {
                id: 4,
                peer_addr: "h:1".into(),
                api_addr: "h:2".into(),
                incarnation: None,
                cluster_id: None,
            },
        );
        round_trip(
            json!({"id": 4, "peer_addr": "h:1", "api_addr": "h:2", "incarnation": 77}),
            AddMemberRequest {
                id: 4,
                peer_addr: "h:1".into(),
                api_addr: "h:2".into(),
                incarnation: Some(77),
                cluster_id: None,
            },
        );
        round_trip(
            json!({"peer_addr": "h:3"}),
            UpdateMemberRequest {
                peer_addr: Some("h:3".into()),
                api_addr: None,
            },
        );
        round_trip(json!({"id": 2}), TransferLeaderRequest { id: 2 });
        round_trip(json!({}), EmptyResponse {});
    }
}
