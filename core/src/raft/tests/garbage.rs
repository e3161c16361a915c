//! Property test: a replica fed arbitrary well-typed but nonsensical
//! messages (wrong terms, indexes, hints, offsets, senders) never panics.
//! Peers are not byzantine, but bugs, old versions and corrupted-but-
//! checksummed frames must not crash a node.

use proptest::prelude::*;

use crate::raft::tests::harness::{test_config, Network};
use crate::raft::{
    AppendEntries, AppendEntriesResponse, Entry, EntryPayload, Heartbeat, HeartbeatResponse,
    InstallSnapshot, InstallSnapshotResponse, Message, SnapshotMeta, VoteRequest, VoteResponse,
};

fn small() -> impl Strategy<Value = u64> {
    prop_oneof![0u64..12, Just(u64::MAX), Just(u64::MAX - 1)]
}

fn vote() -> impl Strategy<Value = VoteRequest> {
    (small(), small(), small(), any::<bool>()).prop_map(|(term, i, t, transfer)| VoteRequest {
        term,
        last_log_index: i,
        last_log_term: t,
        transfer,
    })
}

fn vote_resp() -> impl Strategy<Value = VoteResponse> {
    (small(), any::<bool>()).prop_map(|(term, granted)| VoteResponse { term, granted })
}

fn message() -> impl Strategy<Value = Message> {
    let entries = proptest::collection::vec((small(), small()), 0..4);
    prop_oneof![
        vote().prop_map(Message::PreVote),
        vote().prop_map(Message::RequestVote),
        vote_resp().prop_map(Message::PreVoteResponse),
        vote_resp().prop_map(Message::RequestVoteResponse),
        (small(), small(), small(), entries, small()).prop_map(|(term, pi, pt, es, c)| {
            Message::AppendEntries(AppendEntries {
                term,
                prev_log_index: pi,
                prev_log_term: pt,
                entries: es
                    .into_iter()
                    .map(|(index, term)| Entry {
                        term,
                        index,
                        payload: EntryPayload::Noop,
                    })
                    .collect(),
                leader_commit: c,
            })
        }),
        (small(), small(), any::<bool>(), small(), small()).prop_map(
            |(term, index, success, hi, ht)| {
                Message::AppendEntriesResponse(AppendEntriesResponse {
                    term,
                    index,
                    success,
                    hint_index: hi,
                    hint_term: ht,
                })
            }
        ),
        (small(), small(), small()).prop_map(|(term, commit, read_ctx)| Message::Heartbeat(
            Heartbeat {
                term,
                commit,
                read_ctx
            }
        )),
        (small(), small()).prop_map(|(term, read_ctx)| Message::HeartbeatResponse(
            HeartbeatResponse { term, read_ctx }
        )),
        (
            small(),
            small(),
            small(),
            small(),
            proptest::collection::vec(any::<u8>(), 0..8),
            any::<bool>()
        )
            .prop_map(
                |(term, li, lt, offset, data, done)| Message::InstallSnapshot(InstallSnapshot {
                    term,
                    meta: SnapshotMeta {
                        last_index: li,
                        last_term: lt,
                        membership: Default::default(),
                    },
                    offset,
                    data,
                    done,
                })
            ),
        (small(), small(), small(), any::<bool>()).prop_map(
            |(term, last_index, next_offset, done)| {
                Message::InstallSnapshotResponse(InstallSnapshotResponse {
                    term,
                    last_index,
                    next_offset,
                    done,
                })
            }
        ),
        small().prop_map(|term| Message::TimeoutNow { term }),
        (small(), small()).prop_map(|(term, request_id)| Message::ReadIndex { term, request_id }),
        (small(), small(), proptest::option::of(small())).prop_map(|(term, request_id, index)| {
            Message::ReadIndexResponse {
                term,
                request_id,
                index,
            }
        }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]
    #[test]
    fn arbitrary_messages_never_panic_a_replica(
        msgs in proptest::collection::vec((prop_oneof![Just(2u64), Just(3u64), Just(9u64)], message()), 1..12),
        target in prop_oneof![Just(1u64), Just(2u64)],
    ) {
        let mut net = Network::new(&[1, 2, 3], &[], 3, test_config);
        net.node_mut(1).replica.campaign_now();
        net.stabilize();
        net.node_mut(1).replica.propose(b"a".to_vec()).unwrap();
        net.stabilize();
        net.take_snapshot(1);
        for (from, msg) in msgs {
            net.now_ms += 7;
            let now = net.now_ms;
            let r = &mut net.node_mut(target).replica;
            r.handle_message(from, msg, now);
            r.tick(now);
            while r.has_ready() {
                let ready = r.ready();
                if ready.persist_seq > 0 {
                    r.persisted(ready.persist_seq);
                }
                if let Some(last) = ready.committed.last() {
                    r.applied(last.index);
                }
            }
        }
    }
}
