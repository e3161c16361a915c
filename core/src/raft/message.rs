//! The messages replicas exchange, and their one encoding (through
//! [`crate::codec`]). Every message carries the sender's term.

use serde::{Deserialize, Serialize};

use super::config::APPEND_ENTRIES_MAX;
use super::types::{Entry, LogIndex, SnapshotMeta, Term};
use crate::codec::{self, DecodeError};

/// Largest term, index, offset or id a message may carry. Real values are
/// far below; the bound keeps `+ 1` arithmetic on peer-supplied numbers from
/// overflowing.
pub const WIRE_NUMBER_MAX: u64 = 1 << 62;

/// A request for a (pre-)vote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VoteRequest {
    /// For a pre-vote: the term the sender would campaign in (its term + 1);
    /// the sender's own term is not changed by a pre-vote.
    pub term: Term,
    pub last_log_index: LogIndex,
    pub last_log_term: Term,
    /// Set by a leadership transfer: voters skip the leader-stickiness check.
    pub transfer: bool,
}

/// The answer to a [`VoteRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VoteResponse {
    /// The request's term when granted, the voter's term otherwise.
    pub term: Term,
    pub granted: bool,
}

/// Log replication from the leader.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppendEntries {
    pub term: Term,
    pub prev_log_index: LogIndex,
    pub prev_log_term: Term,
    /// Consecutive entries starting at `prev_log_index + 1`; may be empty.
    pub entries: Vec<Entry>,
    pub leader_commit: LogIndex,
}

/// The answer to [`AppendEntries`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppendEntriesResponse {
    pub term: Term,
    /// On success: the last index the request covered, now durable here. On
    /// rejection: the request's `prev_log_index`, so the leader can discard
    /// stale rejections.
    pub index: LogIndex,
    pub success: bool,
    /// On rejection: the largest index at or below `prev_log_index` whose term
    /// is at most the request's `prev_log_term`, and that term (fast
    /// backtracking: the leader skips whole conflicting terms at once).
    pub hint_index: LogIndex,
    pub hint_term: Term,
}

/// Leader liveness and commit propagation; also confirms leadership for
/// ReadIndex through `read_ctx`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeat {
    pub term: Term,
    /// The leader's commit index capped at what this follower is known to
    /// hold, so the follower never commits entries it may not have.
    pub commit: LogIndex,
    pub read_ctx: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeartbeatResponse {
    pub term: Term,
    pub read_ctx: u64,
}

/// One chunk of a snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstallSnapshot {
    pub term: Term,
    pub meta: SnapshotMeta,
    /// Byte offset of `data` within the whole snapshot.
    pub offset: u64,
    pub data: Vec<u8>,
    /// This is the last chunk.
    pub done: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstallSnapshotResponse {
    pub term: Term,
    /// Which snapshot this answers (its `last_index`).
    pub last_index: LogIndex,
    /// The offset the follower expects next.
    pub next_offset: u64,
    /// The snapshot is installed and durable here.
    pub done: bool,
}

/// Everything a replica sends to another.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Message {
    PreVote(VoteRequest),
    PreVoteResponse(VoteResponse),
    RequestVote(VoteRequest),
    RequestVoteResponse(VoteResponse),
    AppendEntries(AppendEntries),
    AppendEntriesResponse(AppendEntriesResponse),
    Heartbeat(Heartbeat),
    HeartbeatResponse(HeartbeatResponse),
    InstallSnapshot(InstallSnapshot),
    InstallSnapshotResponse(InstallSnapshotResponse),
    /// Leadership transfer: campaign now, skipping pre-vote.
    TimeoutNow {
        term: Term,
    },
    /// A follower forwards a linearizable read to the leader.
    ReadIndex {
        term: Term,
        request_id: u64,
    },
    /// The leader's answer: the read is safe once the follower has applied
    /// `index`; `None` if the leader could not serve it.
    ReadIndexResponse {
        term: Term,
        request_id: u64,
        index: Option<LogIndex>,
    },
}

impl Message {
    /// The sender's term (for a pre-vote, the term it would campaign in).
    pub fn term(&self) -> Term {
        match self {
            Message::PreVote(m) | Message::RequestVote(m) => m.term,
            Message::PreVoteResponse(m) | Message::RequestVoteResponse(m) => m.term,
            Message::AppendEntries(m) => m.term,
            Message::AppendEntriesResponse(m) => m.term,
            Message::Heartbeat(m) => m.term,
            Message::HeartbeatResponse(m) => m.term,
            Message::InstallSnapshot(m) => m.term,
            Message::InstallSnapshotResponse(m) => m.term,
            Message::TimeoutNow { term }
            | Message::ReadIndex { term, .. }
            | Message::ReadIndexResponse { term, .. } => *term,
        }
    }

    /// Short name for logs and test traces.
    pub fn kind(&self) -> &'static str {
        match self {
            Message::PreVote(_) => "PreVote",
            Message::PreVoteResponse(_) => "PreVoteResponse",
            Message::RequestVote(_) => "RequestVote",
            Message::RequestVoteResponse(_) => "RequestVoteResponse",
            Message::AppendEntries(_) => "AppendEntries",
            Message::AppendEntriesResponse(_) => "AppendEntriesResponse",
            Message::Heartbeat(_) => "Heartbeat",
            Message::HeartbeatResponse(_) => "HeartbeatResponse",
            Message::InstallSnapshot(_) => "InstallSnapshot",
            Message::InstallSnapshotResponse(_) => "InstallSnapshotResponse",
            Message::TimeoutNow { .. } => "TimeoutNow",
            Message::ReadIndex { .. } => "ReadIndex",
            Message::ReadIndexResponse { .. } => "ReadIndexResponse",
        }
    }

    /// Encodes for the wire (framing and checksums are the transport's job).
    pub fn encode(&self) -> Vec<u8> {
        codec::encode(self)
    }

    /// Decodes bytes from the wire; bad bytes are an error, never a panic.
    /// Semantic checks (entry indexes consecutive, ...) are
    /// `Message::is_well_formed`'s; the replica drops malformed messages.
    pub fn decode(bytes: &[u8]) -> Result<Message, DecodeError> {
        codec::decode(bytes)
    }

    /// Semantic checks on a decoded message from outside: a malformed one is
    /// dropped instead of tripping an assertion or overflowing.
    pub(crate) fn is_well_formed(&self) -> bool {
        let ok = |values: &[u64]| values.iter().all(|v| *v <= WIRE_NUMBER_MAX);
        match self {
            Message::PreVote(m) | Message::RequestVote(m) => {
                ok(&[m.term, m.last_log_index, m.last_log_term])
            }
            Message::PreVoteResponse(m) | Message::RequestVoteResponse(m) => ok(&[m.term]),
            Message::AppendEntries(m) => {
                if m.entries.len() > APPEND_ENTRIES_MAX
                    || !ok(&[m.term, m.prev_log_index, m.prev_log_term, m.leader_commit])
                    || m.prev_log_term > m.term
                {
                    return false;
                }
                let mut prev_term = m.prev_log_term;
                for (i, e) in m.entries.iter().enumerate() {
                    if e.index != m.prev_log_index + 1 + i as u64
                        || e.term < prev_term
                        || e.term > m.term
                    {
                        return false;
                    }
                    prev_term = e.term;
                }
                true
            }
            Message::AppendEntriesResponse(m) => ok(&[m.term, m.index, m.hint_index, m.hint_term]),
            Message::Heartbeat(m) => ok(&[m.term, m.commit]),
            Message::HeartbeatResponse(m) => ok(&[m.term]),
            Message::InstallSnapshot(m) => {
                ok(&[m.term, m.meta.last_index, m.meta.last_term, m.offset])
                    && m.meta.last_term <= m.term
                    && m.meta.last_index > 0
            }
            Message::InstallSnapshotResponse(m) => ok(&[m.term, m.last_index, m.next_offset]),
            Message::TimeoutNow { term } | Message::ReadIndex { term, .. } => ok(&[*term]),
            Message::ReadIndexResponse { term, index, .. } => ok(&[*term, index.unwrap_or(0)]),
        }
    }

    /// A follower's acknowledgement: its log matches the leader's up to
    /// `index`.
    pub(crate) fn append_ack(term: Term, index: LogIndex) -> Message {
        Message::AppendEntriesResponse(AppendEntriesResponse {
            term,
            index,
            success: true,
            hint_index: 0,
            hint_term: 0,
        })
    }

    /// A follower's answer to a snapshot chunk: the offset it wants next, or
    /// `done` once it holds everything up to `last_index`.
    pub(crate) fn snapshot_ack(
        term: Term,
        last_index: LogIndex,
        next_offset: u64,
        done: bool,
    ) -> Message {
        Message::InstallSnapshotResponse(InstallSnapshotResponse {
            term,
            last_index,
            next_offset,
            done,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::types::{EntryPayload, Member, Membership};
    use proptest::prelude::*;

    fn sample() -> Vec<Message> {
        let mut membership = Membership::default();
        membership.members.insert(
            1,
            Member {
                voter: true,
                peer_addr: "a:1".into(),
                api_addr: "a:2".into(),
            },
        );
        vec![
            Message::PreVote(VoteRequest {
                term: 3,
                last_log_index: 9,
                last_log_term: 2,
                transfer: false,
            }),
            Message::AppendEntries(AppendEntries {
                term: 3,
                prev_log_index: 4,
                prev_log_term: 2,
                entries: vec![
                    Entry {
                        term: 3,
                        index: 5,
                        payload: EntryPayload::Command(vec![1, 2]),
                    },
                    Entry {
                        term: 3,
                        index: 6,
                        payload: EntryPayload::Membership(membership.clone()),
                    },
                ],
                leader_commit: 4,
            }),
            Message::InstallSnapshot(InstallSnapshot {
                term: 3,
                meta: SnapshotMeta {
                    last_index: 7,
                    last_term: 2,
                    membership,
                },
                offset: 0,
                data: vec![9; 10],
                done: true,
            }),
            Message::ReadIndexResponse {
                term: 1,
                request_id: 5,
                index: Some(3),
            },
        ]
    }

    #[test]
    fn messages_round_trip() {
        for m in sample() {
            assert_eq!(Message::decode(&m.encode()), Ok(m));
        }
    }

    proptest! {
        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = Message::decode(&bytes);
        }

        #[test]
        fn decoding_mutated_messages_never_panics(
            which in 0usize..4,
            flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8),
            cut in any::<usize>(),
        ) {
            let mut bytes = sample()[which].encode();
            for (pos, xor) in flips {
                let len = bytes.len();
                bytes[pos % len] ^= xor;
            }
            let keep = cut % (bytes.len() + 1);
            let _ = Message::decode(&bytes[..keep]);
            let _ = Message::decode(&bytes);
        }
    }
}
