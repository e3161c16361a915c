//! `serve --force-new-cluster` (issue 14): a surviving node of a cluster
//! that lost its quorum for good becomes the only voter of that cluster,
//! keeping its data, so the cluster can be rebuilt by joining new nodes.
//!
//! Done on the stored log before the replica starts: a membership entry
//! listing only this node is appended at a term above every term the node
//! has seen, and made durable. A one-voter membership takes effect when it
//! is appended, so the node elects itself and commits it, with every entry
//! before it: entries the old cluster had not committed yet become
//! committed too (etcd drops them instead; Raft allows committing any entry
//! a leader holds, and a client that saw no answer had an unknown outcome).
//! The other members are gone from the membership, so they are never dialed
//! again; one that comes back learns it was removed (a member's answer proves
//! it) and stops. The cluster id stays: it is the same cluster, continued.
//!
//! The node must be a voter: a learner may lack committed entries. Forcing
//! is the operator's statement that the other members are gone for good, so
//! it is refused while the voters that answer a hello (with this node) are
//! a quorum: that cluster has not lost its quorum, and forcing one of its
//! nodes would drop the live majority (they would learn they were removed
//! and stop) together with whatever they committed without this node. A
//! quorum of the old members coming back later would still be a second
//! cluster with the same id (as with etcd's flag), which is why the server
//! also refuses to force the same data dir twice.

use std::collections::BTreeMap;

use deadbolt_core::raft::{
    Entry, EntryPayload, HardState, LogIndex, Membership, NodeId, FOUNDING_NONCE_KEY,
};

use super::{NodeConfig, StartError};
use crate::storage::{Recovered, Storage};
use crate::transport::{ask_founders, FounderAnswer, TransportConfig};

/// What forcing did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Forced {
    /// The node already was the only member: nothing written.
    AlreadyAlone,
    /// The one-voter membership was appended at this index.
    At(LogIndex),
}

/// Refuses to force while the stored membership's voters that answer a
/// hello, with this node, are a quorum. Bounded by the transport's connect
/// and handshake deadlines.
pub(super) async fn check_quorum_lost(
    config: &NodeConfig,
    recovered: &Recovered,
) -> Result<(), StartError> {
    let membership = &recovered.membership;
    let voters: BTreeMap<NodeId, String> = membership
        .members
        .iter()
        .filter(|(_, member)| member.voter)
        .map(|(id, member)| (*id, member.peer_addr.clone()))
        .collect();
    if voters.len() <= 1 || !voters.contains_key(&config.node_id) {
        return Ok(()); // `force` itself says what is wrong, or nothing to do
    }
    let mut transport = TransportConfig::new(config.cluster_id.clone(), config.node_id);
    transport.incarnation = config.incarnation;
    transport
        .cluster
        .set_committed(membership, recovered.hard_state.commit_index);
    let answering: Vec<NodeId> = ask_founders(&transport, &voters)
        .await
        .into_iter()
        .filter_map(|answer| match answer {
            FounderAnswer::Accepts { node_id }
            | FounderAnswer::HoldsAnotherIncarnation { node_id, .. } => Some(node_id),
            FounderAnswer::Silent { .. } => None,
        })
        .collect();
    let quorum = voters.len() / 2 + 1;
    if answering.len() + 1 >= quorum {
        return Err(StartError::ForceNewCluster {
            message: format!(
                "voters {answering:?} answered: with this node they are a quorum of the {} \
                 voters, so the cluster has not lost its quorum. Restart its stopped nodes \
                 instead; forcing would remove the live members and whatever they committed \
                 without this node",
                voters.len()
            ),
        });
    }
    tracing::warn!(
        answering = ?answering,
        voters = voters.len(),
        "--force-new-cluster: the voters that answer are fewer than a quorum; forcing"
    );
    Ok(())
}

/// Appends (durably) a membership of `me` alone to the stored log and
/// updates `recovered` to match.
pub(super) fn force<S: Storage>(
    storage: &mut S,
    recovered: &mut Recovered,
    me: NodeId,
) -> Result<Forced, StartError> {
    let refuse = |message: String| Err(StartError::ForceNewCluster { message });
    let membership = &recovered.membership;
    if !membership.contains(me) {
        return refuse(format!(
            "node {me} is not a member of the membership stored in its data dir (members: {:?}); \
             nothing to keep",
            membership.members.keys().collect::<Vec<_>>()
        ));
    }
    if !membership.is_voter(me) {
        return refuse(format!(
            "node {me} is a learner: it may lack committed entries, so it cannot continue the \
             cluster alone; force a node that was a voter"
        ));
    }
    if membership.members.len() == 1 {
        return Ok(Forced::AlreadyAlone);
    }
    let alone = alone(membership, me);
    let (last_term, last_index) = recovered.last_log_id();
    let term = recovered.hard_state.term.max(last_term) + 1;
    let entry = Entry {
        term,
        index: last_index + 1,
        payload: EntryPayload::Membership(alone.clone()),
    };
    let hard_state = HardState {
        term,
        voted_for: None,
        commit_index: recovered.hard_state.commit_index,
    };
    storage.append(std::slice::from_ref(&entry))?;
    storage.save_hard_state(&hard_state)?;
    storage.sync()?;
    recovered.entries.push(entry);
    recovered.hard_state = hard_state;
    recovered.membership = alone;
    Ok(Forced::At(last_index + 1))
}

/// `membership` with every member but `me` removed (their recorded
/// incarnations with them; the founding nonce stays).
fn alone(membership: &Membership, me: NodeId) -> Membership {
    let mut alone = membership.clone();
    alone.members.retain(|&id, _| id == me);
    alone
        .incarnations
        .retain(|&id, _| id == me || id == FOUNDING_NONCE_KEY);
    assert!(
        alone.members.len() == 1 && alone.is_voter(me),
        "forcing leaves exactly this voter"
    );
    alone
}

#[cfg(test)]
mod tests {
    use deadbolt_core::raft::Member;

    use super::*;
    use crate::storage::{Identity, SimDisk, SimStorage};

    fn member(voter: bool) -> Member {
        Member {
            voter,
            peer_addr: "10.0.0.9:7071".into(),
            api_addr: String::new(),
        }
    }

    /// Storage holding a founding entry of voters 1, 2 and learner 3, at term 4.
    fn founded() -> (SimStorage, Recovered) {
        let identity = Identity {
            cluster_id: "c".into(),
            node_id: 1,
        };
        let mut storage = SimStorage::open(SimDisk::new(), &identity).expect("opens");
        let mut membership = Membership::default().with_founding_nonce(7);
        membership.members.insert(1, member(true));
        membership.members.insert(2, member(true));
        membership.members.insert(3, member(false));
        membership.incarnations.insert(2, 22);
        let entry = Entry {
            term: 3,
            index: 1,
            payload: EntryPayload::Membership(membership),
        };
        storage.append(&[entry]).expect("append");
        storage
            .save_hard_state(&HardState {
                term: 4,
                voted_for: Some(2),
                commit_index: 1,
            })
            .expect("hard state");
        storage.sync().expect("sync");
        let recovered = storage.load().expect("load");
        (storage, recovered)
    }

    #[test]
    fn a_voter_is_left_alone_at_a_new_term_durably() {
        let (mut storage, mut recovered) = founded();
        assert_eq!(
            force(&mut storage, &mut recovered, 1).expect("forced"),
            Forced::At(2)
        );
        let reloaded = storage.load().expect("reload");
        assert_eq!(reloaded, recovered);
        let alone = &reloaded.membership;
        assert_eq!(alone.members.keys().copied().collect::<Vec<_>>(), vec![1]);
        assert_eq!(
            alone.founding_nonce(),
            Some(7),
            "the same cluster, continued"
        );
        assert!(!alone.incarnations.contains_key(&2));
        assert_eq!(reloaded.entries.last().map(|e| e.term), Some(5));
        assert_eq!(reloaded.hard_state.voted_for, None);
        assert_eq!(
            force(&mut storage, &mut recovered, 1).expect("again"),
            Forced::AlreadyAlone
        );
    }

    #[test]
    fn a_learner_is_refused() {
        let (mut storage, mut recovered) = founded();
        let before = recovered.clone();
        let error = force(&mut storage, &mut recovered, 3).expect_err("a learner");
        assert!(error.to_string().contains("learner"), "{error}");
        assert_eq!(recovered, before);
        assert_eq!(storage.load().expect("reload"), before, "nothing written");
    }
}
