//! The peers a node talks to: one peer actor per other member of the
//! membership in force, plus a leader that announced itself before this
//! node knew it (a joining node), with the simulation's link faults applied
//! to each link.

use std::collections::BTreeMap;

use deadbolt_core::raft::{LogIndex, Member, Membership, NodeId};
use tokio::task::JoinHandle;

use super::config::LinkFaultsTable;
use super::forward::PeerMessage;
use crate::latest::Subscriber;
use crate::transport::{ClusterBook, IncarnationBook, Peers};

pub(super) struct PeerSet {
    /// This node (never a peer of itself).
    id: NodeId,
    peers: Peers<PeerMessage>,
    /// What `peers` was last set to: id -> peer address.
    synced: BTreeMap<NodeId, String>,
    /// The last leader that announced its address.
    announced: Option<(NodeId, String)>,
    link_faults: Option<Subscriber<LinkFaultsTable>>,
    applied_link_faults: LinkFaultsTable,
    /// The transport's incarnation checks, kept equal to the membership's
    /// records by `sync`.
    book: IncarnationBook,
    /// What `book` was last set to.
    synced_incarnations: BTreeMap<NodeId, u64>,
    /// The transport's cluster id and committed membership, kept by
    /// `sync_committed`.
    cluster: ClusterBook,
    /// The commit index `cluster` was last set at.
    synced_commit: LogIndex,
}

impl PeerSet {
    pub(super) fn new(
        id: NodeId,
        peers: Peers<PeerMessage>,
        link_faults: Option<Subscriber<LinkFaultsTable>>,
        book: IncarnationBook,
        cluster: ClusterBook,
    ) -> Self {
        Self {
            id,
            peers,
            synced: BTreeMap::new(),
            announced: None,
            link_faults,
            applied_link_faults: LinkFaultsTable::new(),
            book,
            synced_incarnations: BTreeMap::new(),
            cluster,
            synced_commit: 0,
        }
    }

    /// The transport's view of the cluster (id, committed membership,
    /// removal notices from peers).
    pub(super) fn cluster(&self) -> &ClusterBook {
        &self.cluster
    }

    /// Keeps the transport's cluster id and committed membership equal to
    /// the membership in force at `commit_index` (checked on every Ready;
    /// only a moved commit index costs anything). True when this completed
    /// the cluster id with the founding nonce.
    pub(super) fn sync_committed(
        &mut self,
        committed: &Membership,
        commit_index: LogIndex,
    ) -> bool {
        if commit_index == self.synced_commit {
            return false;
        }
        let had_nonce = self.cluster.id().nonce().is_some();
        self.cluster.set_committed(committed, commit_index);
        self.synced_commit = commit_index;
        !had_nonce && self.cluster.id().nonce().is_some()
    }

    /// The incarnations the transport checks and the claims it saw.
    pub(super) fn book(&self) -> &IncarnationBook {
        &self.book
    }

    /// Queues `message` for `to`; false if `to` is unknown or the message
    /// was dropped (Raft retries).
    pub(super) fn send(&self, to: NodeId, message: PeerMessage) -> bool {
        self.peers.send(to, message)
    }

    /// Keeps one peer actor per other member of `membership` (plus an
    /// announcing leader not in it), and the transport's incarnation checks
    /// equal to the incarnations `membership` records.
    pub(super) fn sync(&mut self, membership: &Membership) {
        if membership.incarnations != self.synced_incarnations {
            self.book.set_recorded(membership);
            self.synced_incarnations = membership.incarnations.clone();
        }
        // The common case, checked on every Ready without allocating.
        if in_sync(self.id, &membership.members, &self.announced, &self.synced) {
            return;
        }
        let wanted = wanted(self.id, &membership.members, &self.announced);
        if wanted == self.synced {
            return;
        }
        for id in self.synced.keys() {
            if !wanted.contains_key(id) {
                self.peers.remove_peer(*id);
            }
        }
        for (id, addr) in &wanted {
            self.peers.set_peer(*id, addr);
        }
        self.synced = wanted;
        // Faults are per link: reapply to new links.
        self.applied_link_faults.clear();
    }

    /// A leader told us its address (it may not be in our membership yet).
    pub(super) fn on_announce(&mut self, from: NodeId, peer_addr: String, membership: &Membership) {
        if self.announced.as_ref() != Some(&(from, peer_addr.clone())) {
            self.announced = Some((from, peer_addr));
            self.sync(membership);
        }
    }

    /// Applies the latest link-fault table, if it changed (simulation).
    pub(super) fn apply_link_faults(&mut self) {
        let Some(table) = self.link_faults.as_ref().map(|s| s.get()) else {
            return;
        };
        if table == self.applied_link_faults {
            return;
        }
        for (to, faults) in &table {
            self.peers.set_faults(*to, *faults);
        }
        for to in self.applied_link_faults.keys() {
            if !table.contains_key(to) {
                self.peers.set_faults(*to, Default::default());
            }
        }
        self.applied_link_faults = table;
    }

    /// Messages dropped on every link so far (full queue, no connection,
    /// too large).
    pub(super) fn messages_dropped(&self) -> u64 {
        self.peers
            .stats()
            .values()
            .map(|s| s.dropped_queue_full + s.dropped_disconnected + s.dropped_too_large)
            .sum()
    }

    /// Stops every peer actor; returns their tasks to wait for.
    pub(super) fn close(self) -> Vec<JoinHandle<()>> {
        self.peers.close()
    }
}

/// The peers `sync` would set: every other member at its address, plus the
/// announcing leader when the membership does not name it.
fn wanted(
    id: NodeId,
    members: &BTreeMap<NodeId, Member>,
    announced: &Option<(NodeId, String)>,
) -> BTreeMap<NodeId, String> {
    let mut wanted: BTreeMap<NodeId, String> = members
        .iter()
        .filter(|(member, _)| **member != id)
        .map(|(member, m)| (*member, m.peer_addr.clone()))
        .collect();
    if let Some((leader, addr)) = announced {
        wanted.entry(*leader).or_insert_with(|| addr.clone());
    }
    wanted
}

/// Whether `synced` already is [`wanted`], without building it.
fn in_sync(
    id: NodeId,
    members: &BTreeMap<NodeId, Member>,
    announced: &Option<(NodeId, String)>,
    synced: &BTreeMap<NodeId, String>,
) -> bool {
    let mut expected = 0;
    for (member, m) in members.iter().filter(|(member, _)| **member != id) {
        if synced.get(member) != Some(&m.peer_addr) {
            return false;
        }
        expected += 1;
    }
    if let Some((leader, addr)) = announced {
        if !members.contains_key(leader) || *leader == id {
            if synced.get(leader) != Some(addr) {
                return false;
            }
            expected += 1;
        }
    }
    expected == synced.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members(list: &[(NodeId, &str)]) -> BTreeMap<NodeId, Member> {
        list.iter()
            .map(|(id, addr)| {
                let member = Member {
                    voter: true,
                    peer_addr: addr.to_string(),
                    api_addr: String::new(),
                };
                (*id, member)
            })
            .collect()
    }

    fn peers(list: &[(NodeId, &str)]) -> BTreeMap<NodeId, String> {
        list.iter().map(|(id, a)| (*id, a.to_string())).collect()
    }

    #[test]
    fn every_other_member_and_an_unknown_leader_are_peers() {
        let m = members(&[(1, "a"), (2, "b"), (3, "c")]);
        assert_eq!(wanted(1, &m, &None), peers(&[(2, "b"), (3, "c")]));
        // A leader the membership does not know yet (we are joining).
        let announced = Some((4, "d".to_string()));
        assert_eq!(
            wanted(1, &m, &announced),
            peers(&[(2, "b"), (3, "c"), (4, "d")])
        );
        // The membership's address wins over an announcement.
        let announced = Some((2, "old".to_string()));
        assert_eq!(wanted(1, &m, &announced), peers(&[(2, "b"), (3, "c")]));
    }

    /// `in_sync` is the allocation-free form of `wanted(..) == synced`.
    #[test]
    fn in_sync_agrees_with_wanted() {
        let memberships = [
            members(&[]),
            members(&[(1, "a")]),
            members(&[(1, "a"), (2, "b")]),
            members(&[(1, "a"), (2, "b"), (3, "c")]),
            members(&[(2, "b2"), (3, "c")]),
        ];
        let announcements = [
            None,
            Some((1, "a".into())),
            Some((2, "b".into())),
            Some((4, "d".into())),
        ];
        let synced = [
            peers(&[]),
            peers(&[(2, "b")]),
            peers(&[(2, "b"), (3, "c")]),
            peers(&[(2, "b2"), (3, "c")]),
            peers(&[(2, "b"), (3, "c"), (4, "d")]),
            peers(&[(2, "b"), (4, "d")]),
        ];
        for m in &memberships {
            for announced in &announcements {
                for s in &synced {
                    assert_eq!(
                        in_sync(1, m, announced, s),
                        wanted(1, m, announced) == *s,
                        "{m:?} {announced:?} {s:?}"
                    );
                }
            }
        }
    }
}
