//! An in-process cluster of replicas for tests: simulated storage that loses
//! unsynced writes on restart, a message queue the test controls, a toy
//! state machine, and the invariant checker shared by every test.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::codec;
use crate::raft::{
    Config, Entry, EntryPayload, HardState, LogIndex, Member, Membership, Message, NodeId,
    ReadState, Ready, Replica, RestoredState, Role, SnapshotMeta, SnapshotToInstall, Term,
};
use crate::rng::SplitMix64;

/// One Ready's writes, waiting for a simulated fsync.
#[derive(Debug, Clone)]
struct Unsynced {
    seq: u64,
    snapshot: Option<SnapshotToInstall>,
    truncate_from: Option<LogIndex>,
    entries: Vec<Entry>,
    hard_state: Option<HardState>,
}

/// What survives a crash.
#[derive(Debug, Clone, Default)]
pub(crate) struct Durable {
    pub(crate) hard_state: HardState,
    pub(crate) snapshot: Option<(SnapshotMeta, Vec<u8>)>,
    pub(crate) entries: Vec<Entry>,
}

/// The toy state machine: the list of applied commands.
type Applied = Vec<(LogIndex, Vec<u8>)>;

pub(crate) struct Node {
    pub(crate) replica: Replica,
    pub(crate) durable: Durable,
    unsynced: Vec<Unsynced>,
    pub(crate) applied: Applied,
    pub(crate) applied_index: LogIndex,
    pub(crate) up: bool,
    pub(crate) read_states: Vec<ReadState>,
    pub(crate) failed_reads: Vec<u64>,
    /// Commit index seen last in this incarnation (must never decrease).
    last_commit: LogIndex,
    incarnation: u64,
}

impl Node {
    /// The toy state machine: installs a snapshot, then applies committed
    /// entries in order and reports them applied.
    fn apply(&mut self, id: NodeId, snapshot: Option<&SnapshotToInstall>, committed: &[Entry]) {
        if let Some(snap) = snapshot {
            let applied: Applied =
                codec::decode(&snap.data).expect("snapshot data is what a node encoded");
            self.applied = applied;
            self.applied_index = snap.meta.last_index;
        }
        for e in committed {
            assert_eq!(
                e.index,
                self.applied_index + 1,
                "node {id}: committed entries arrive in order"
            );
            self.applied_index = e.index;
            if let EntryPayload::Command(c) = &e.payload {
                self.applied.push((e.index, c.clone()));
            }
            self.replica.applied(e.index);
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct InFlight {
    pub(crate) from: NodeId,
    pub(crate) to: NodeId,
    pub(crate) msg: Message,
    pub(crate) deliver_at_ms: u64,
}

/// Global invariant state across the whole run.
#[derive(Default)]
pub(crate) struct Checker {
    leaders: BTreeMap<Term, NodeId>,
    /// (index, term) -> (payload, previous entry's term): same key must mean
    /// same entry and same predecessor (log matching, by induction).
    entries: HashMap<(LogIndex, Term), (EntryPayload, Term)>,
    /// Every entry any node applied: applied sequences must agree.
    pub(crate) committed: BTreeMap<LogIndex, Entry>,
}

impl Checker {
    pub(crate) fn leader_count(&self) -> usize {
        self.leaders.len()
    }
}

pub(crate) struct Network {
    pub(crate) nodes: BTreeMap<NodeId, Node>,
    pub(crate) configs: BTreeMap<NodeId, Config>,
    pub(crate) initial: Membership,
    pub(crate) queue: Vec<InFlight>,
    /// Cut links (from, to).
    pub(crate) cut: BTreeSet<(NodeId, NodeId)>,
    pub(crate) now_ms: u64,
    /// Persist every Ready at once (scenarios) or only on `sync` (random).
    pub(crate) auto_sync: bool,
    pub(crate) checker: Checker,
    pub(crate) rng: SplitMix64,
    /// Extra delay range for sent messages (random test), in ms.
    pub(crate) max_delay_ms: u64,
    /// Chained checksum of every Ready any replica handed out (with the time
    /// and the node): a behaviour fingerprint of the whole run.
    pub(crate) digest: u32,
}

pub(crate) fn member(id: NodeId, voter: bool) -> Member {
    Member {
        voter,
        peer_addr: format!("n{id}:1"),
        api_addr: format!("n{id}:2"),
    }
}

pub(crate) fn test_config(id: NodeId) -> Config {
    Config {
        election_timeout_min_ms: 100,
        election_timeout_max_ms: 200,
        heartbeat_interval_ms: 20,
        ..Config::new(id)
    }
}

impl Network {
    /// `voters` bootstrap together; `learners` start empty and wait to be
    /// added (they are not part of the initial membership).
    pub(crate) fn new(
        voters: &[NodeId],
        extra: &[NodeId],
        seed: u64,
        config: impl Fn(NodeId) -> Config,
    ) -> Self {
        let mut initial = Membership::default();
        for &v in voters {
            initial.members.insert(v, member(v, true));
        }
        let mut net = Network {
            nodes: BTreeMap::new(),
            configs: BTreeMap::new(),
            initial,
            queue: Vec::new(),
            cut: BTreeSet::new(),
            now_ms: 0,
            auto_sync: true,
            checker: Checker::default(),
            rng: SplitMix64::new(seed),
            max_delay_ms: 0,
            digest: 0,
        };
        for &id in voters.iter().chain(extra) {
            net.configs.insert(id, config(id));
            let initial = if voters.contains(&id) {
                net.initial.clone()
            } else {
                Membership::default()
            };
            let replica = Replica::new(
                config(id),
                RestoredState::default(),
                initial,
                seed.wrapping_mul(31).wrapping_add(id),
                0,
            )
            .expect("valid test config");
            net.nodes.insert(
                id,
                Node {
                    replica,
                    durable: Durable::default(),
                    unsynced: Vec::new(),
                    applied: Vec::new(),
                    applied_index: 0,
                    up: true,
                    read_states: Vec::new(),
                    failed_reads: Vec::new(),
                    last_commit: 0,
                    incarnation: 0,
                },
            );
        }
        net
    }

    pub(crate) fn node(&self, id: NodeId) -> &Node {
        self.nodes
            .get(&id)
            .unwrap_or_else(|| panic!("no node {id}"))
    }

    pub(crate) fn node_mut(&mut self, id: NodeId) -> &mut Node {
        self.nodes
            .get_mut(&id)
            .unwrap_or_else(|| panic!("no node {id}"))
    }

    pub(crate) fn ids(&self) -> Vec<NodeId> {
        self.nodes.keys().copied().collect()
    }

    /// Drains every node's Ready until quiet (writes, sends, applies).
    pub(crate) fn process_all(&mut self) {
        for id in self.ids() {
            self.process(id);
        }
    }

    pub(crate) fn process(&mut self, id: NodeId) {
        if !self.node(id).up {
            return;
        }
        let mut rounds = 0;
        while self.node(id).replica.has_ready() {
            rounds += 1;
            assert!(rounds < 10_000, "node {id}: has_ready never settles");
            let ready = self.node_mut(id).replica.ready();
            self.handle_ready(id, ready);
        }
        self.check_node(id);
    }

    fn handle_ready(&mut self, id: NodeId, ready: Ready) {
        let now = self.now_ms;
        self.fold_digest(id, &ready);
        self.check_log_matching(id, &ready.entries);
        if ready.persist_seq > 0 {
            let unsynced = Unsynced {
                seq: ready.persist_seq,
                snapshot: ready.snapshot.clone(),
                truncate_from: ready.truncate_from,
                entries: ready.entries.clone(),
                hard_state: ready.hard_state,
            };
            self.node_mut(id).unsynced.push(unsynced);
        }
        for (to, msg) in ready.messages {
            let delay = if self.max_delay_ms > 0 {
                self.rng.range_u64(0, self.max_delay_ms + 1)
            } else {
                0
            };
            self.queue.push(InFlight {
                from: id,
                to,
                msg,
                deliver_at_ms: now + delay,
            });
        }
        let node = self.node_mut(id);
        node.apply(id, ready.snapshot.as_ref(), &ready.committed);
        node.read_states.extend(ready.read_states);
        node.failed_reads.extend(ready.failed_reads);
        for e in &ready.committed {
            match self.checker.committed.get(&e.index) {
                Some(c) => assert_eq!(c, e, "node {id} applied a different entry at {}", e.index),
                None => {
                    self.checker.committed.insert(e.index, e.clone());
                }
            }
        }
        if ready.snapshot_wanted {
            self.take_snapshot(id);
        }
        if let Some(soft) = ready.soft_state {
            if soft.role == Role::Leader {
                self.check_leader_completeness(id);
            }
        }
        if self.auto_sync {
            self.sync(id);
        }
    }

    /// Log matching registry: every entry that enters any log, with its
    /// predecessor's term; the same (index, term) must always mean the same
    /// entry after the same term.
    fn check_log_matching(&mut self, id: NodeId, entries: &[Entry]) {
        for (i, e) in entries.iter().enumerate() {
            let prev_term = if i == 0 {
                self.node(id)
                    .replica
                    .log_term_at(e.index - 1)
                    .expect("entry's predecessor is in the log")
            } else {
                entries[i - 1].term
            };
            let key = (e.index, e.term);
            match self.checker.entries.get(&key) {
                Some((payload, pt)) => {
                    assert!(
                        payload == &e.payload && *pt == prev_term,
                        "log matching violated at {key:?} on node {id}: had {:?} after term {pt}, now {:?} after term {prev_term}\n{}",
                        payload,
                        e.payload,
                        self.debug_dump()
                    );
                }
                None => {
                    self.checker
                        .entries
                        .insert(key, (e.payload.clone(), prev_term));
                }
            }
        }
    }

    /// Folds one Ready into [`Network::digest`]. Encoded with the codec, not
    /// `Debug`, so renaming a type or a field does not change the digest.
    fn fold_digest(&mut self, id: NodeId, ready: &Ready) {
        let fields = (
            self.now_ms,
            id,
            ready.persist_seq,
            ready.snapshot.as_ref().map(|s| (&s.meta, &s.data)),
            ready.truncate_from,
            &ready.entries,
            ready.hard_state,
            &ready.messages,
            &ready.committed,
            ready
                .read_states
                .iter()
                .map(|r| (r.request_id, r.index))
                .collect::<Vec<_>>(),
            &ready.failed_reads,
            ready.soft_state.map(|s| (s.role as u8, s.term, s.leader)),
            ready.snapshot_wanted,
        );
        let mut bytes = self.digest.to_le_bytes().to_vec();
        bytes.extend(codec::encode(&fields));
        self.digest = codec::checksum(&bytes);
    }

    /// Simulated fsync of everything a node has written.
    pub(crate) fn sync(&mut self, id: NodeId) {
        let node = self.node_mut(id);
        let batches = std::mem::take(&mut node.unsynced);
        let Some(last_seq) = batches.last().map(|b| b.seq) else {
            return;
        };
        for b in batches {
            let d = &mut node.durable;
            if let Some(snap) = b.snapshot {
                d.entries.clear();
                d.snapshot = Some((snap.meta, snap.data));
            }
            if let Some(t) = b.truncate_from {
                d.entries.retain(|e| e.index < t);
            }
            for e in b.entries {
                let expected = d.entries.last().map_or_else(
                    || d.snapshot.as_ref().map_or(0, |s| s.0.last_index),
                    |x| x.index,
                ) + 1;
                assert_eq!(
                    e.index, expected,
                    "node {id}: storage appends are contiguous"
                );
                d.entries.push(e);
            }
            if let Some(hs) = b.hard_state {
                d.hard_state = hs;
            }
        }
        node.replica.persisted(last_seq);
    }

    /// Snapshot of the toy state machine at its applied index; compacts.
    pub(crate) fn take_snapshot(&mut self, id: NodeId) {
        let node = self.node_mut(id);
        let data = codec::encode(&node.applied);
        if let Ok(meta) = node
            .replica
            .snapshot_taken(node.applied_index, data.clone())
        {
            node.durable.entries.retain(|e| e.index > meta.last_index);
            node.durable.snapshot = Some((meta, data));
        }
    }

    /// Crash and restart from durable state only.
    pub(crate) fn restart(&mut self, id: NodeId) {
        let config = self.configs[&id].clone();
        let initial = if self.initial.contains(id) {
            self.initial.clone()
        } else {
            Membership::default()
        };
        let now = self.now_ms;
        let node = self.node_mut(id);
        node.incarnation += 1;
        node.unsynced.clear();
        let restored = RestoredState {
            hard_state: node.durable.hard_state,
            snapshot: node.durable.snapshot.as_ref().map(|s| s.0.clone()),
            entries: node.durable.entries.clone(),
        };
        let (applied, applied_index) = match &node.durable.snapshot {
            Some((meta, data)) => (
                codec::decode(data).expect("own snapshot decodes"),
                meta.last_index,
            ),
            None => (Vec::new(), 0),
        };
        node.applied = applied;
        node.applied_index = applied_index;
        node.read_states.clear();
        node.failed_reads.clear();
        node.replica = Replica::new(
            config,
            restored,
            initial,
            0xDEAD_0000 + id * 1000 + node.incarnation,
            now,
        )
        .expect("valid config");
        node.last_commit = node.replica.commit_index();
        node.up = true;
        // Durable data carries snapshot bytes; the replica starts without
        // them and asks through `snapshot_wanted` when needed.
    }

    pub(crate) fn deliver(&mut self, m: InFlight) {
        let linked = !self.cut.contains(&(m.from, m.to));
        let up = self.nodes.get(&m.to).is_some_and(|n| n.up)
            && self.nodes.get(&m.from).is_some_and(|n| n.up);
        if !linked || !up {
            return;
        }
        let now = self.now_ms;
        if std::env::var("DEADBOLT_RAFT_TRACE").is_ok() {
            eprintln!("{now} {}->{} {:?}", m.from, m.to, m.msg);
        }
        self.node_mut(m.to)
            .replica
            .handle_message(m.from, m.msg, now);
        self.process(m.to);
    }

    /// Delivers everything queued (and what that produces) until quiet, in
    /// send order. Returns how many messages were delivered.
    pub(crate) fn stabilize(&mut self) -> usize {
        self.process_all();
        let mut delivered = 0;
        while !self.queue.is_empty() {
            let batch = std::mem::take(&mut self.queue);
            for m in batch {
                delivered += 1;
                assert!(delivered < 1_000_000, "stabilize does not converge");
                self.deliver(m);
            }
            self.process_all();
        }
        delivered
    }

    /// Ticks every live node at the current time.
    pub(crate) fn tick_all(&mut self) {
        let now = self.now_ms;
        for id in self.ids() {
            let node = self.node_mut(id);
            if node.up {
                node.replica.tick(now);
            }
            self.process(id);
        }
    }

    /// Cuts `a` off from everyone (both directions).
    pub(crate) fn isolate(&mut self, a: NodeId) {
        for b in self.ids() {
            if b != a {
                self.cut.insert((a, b));
                self.cut.insert((b, a));
            }
        }
    }

    pub(crate) fn partition(&mut self, groups: &[Vec<NodeId>]) {
        self.cut.clear();
        for (i, g) in groups.iter().enumerate() {
            for (j, h) in groups.iter().enumerate() {
                if i != j {
                    for &a in g {
                        for &b in h {
                            self.cut.insert((a, b));
                        }
                    }
                }
            }
        }
    }

    /// Live leaders, newest term first.
    pub(crate) fn leaders(&self) -> Vec<NodeId> {
        self.nodes
            .iter()
            .filter(|(_, n)| n.up && n.replica.role() == Role::Leader)
            .map(|(id, n)| (std::cmp::Reverse(n.replica.term()), *id))
            .collect::<BTreeSet<_>>()
            .into_iter()
            .map(|(_, id)| id)
            .collect()
    }

    fn check_node(&mut self, id: NodeId) {
        let node = self.nodes.get_mut(&id).expect("node exists");
        let commit = node.replica.commit_index();
        assert!(
            commit >= node.last_commit,
            "node {id}: commit index went back from {} to {commit}",
            node.last_commit
        );
        node.last_commit = commit;
        if node.replica.role() == Role::Leader {
            let term = node.replica.term();
            let prev = self.checker.leaders.insert(term, id);
            assert!(
                prev.is_none() || prev == Some(id),
                "two leaders in term {term}: {prev:?} and {id}"
            );
        }
    }

    /// A new leader's log holds every entry anyone applied.
    fn check_leader_completeness(&self, id: NodeId) {
        let r = &self.node(id).replica;
        let snapshot_index = r.status().snapshot_index;
        for (index, e) in self.checker.committed.range(snapshot_index + 1..) {
            assert_eq!(
                r.log_term_at(*index),
                Some(e.term),
                "leader {id} (term {}) lacks committed entry {index}",
                r.term()
            );
        }
    }

    /// (index, term) of every entry in a node's log after its snapshot.
    pub(crate) fn log_summary(&self, id: NodeId) -> Vec<(LogIndex, Term)> {
        self.node(id)
            .replica
            .log_entries()
            .iter()
            .map(|e| (e.index, e.term))
            .collect()
    }

    pub(crate) fn debug_dump(&self) -> String {
        let mut out = String::new();
        for (id, n) in &self.nodes {
            let s = n.replica.status();
            out += &format!(
                "node {id} up={} voters={:?} learners={:?} role={:?} term={} leader={:?} commit={} persisted={} last={} snap={} applied={} log={:?}\n",
                n.up,
                s.membership.voters().collect::<Vec<_>>(),
                s.membership.learners().collect::<Vec<_>>(),
                s.role,
                s.term,
                s.leader,
                s.commit_index,
                s.persisted_index,
                s.last_index,
                s.snapshot_index,
                n.applied_index,
                self.log_summary(*id),
            );
        }
        out
    }
}
