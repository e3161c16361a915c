//! Applies fault actions to the simulated world: madsim's network (clogged
//! links, loss, latency), madsim's process control (kill, restart, pause,
//! resume), each host's simulated disk (crash before restart), clock
//! (drift, jumps) and link-fault table (our transport drops, duplicates and
//! reorders Raft frames), and membership changes through a node's handle
//! (joining hosts it creates, removals, moved peer addresses, another
//! founding's data dir; `world::reconfig` runs the operator's side). Every
//! action is recorded in the timeline.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use deadbolt_runtime::node::Joiner;
use deadbolt_runtime::storage::{CrashFault, SimDisk};
use deadbolt_runtime::transport::LinkFaults;
use deadbolt_runtime::SplitMix64;
use madsim::net::NetSim;
use madsim::runtime::Handle;

use super::host::{
    create_host, server_ip, Host, HostPlan, HostRole, API_PORT, OTHER_FOUNDING, THIS_FOUNDING,
};
use super::observe::{node_observer, poll_node, Views};
use super::reconfig;
use super::recorder::Shared;
use crate::fault::{Buggify, ClockSetup, FaultAction};
use crate::history::{NodeId, NodeObservation};
use crate::timeline::TimelineEvent;

/// How long a graceful restart waits for the node to stop by itself before
/// the process is killed anyway.
const GRACEFUL_STOP_MAX: Duration = Duration::from_secs(3);
/// How long one leadership transfer of a churn may take.
const TRANSFER_LEADER_MAX: Duration = Duration::from_secs(1);
/// How long a crash aimed at a sync window waits for one at most, and how
/// often it looks.
const CRASH_AIM_MAX: Duration = Duration::from_millis(500);
const CRASH_AIM_POLL: Duration = Duration::from_micros(200);
/// How far a moved node's peer port moves each time.
const PEER_PORT_STEP: u16 = 100;

pub(crate) struct Executor {
    pub(crate) hosts: Vec<Host>,
    handle: Handle,
    net: Arc<NetSim>,
    rng: SplitMix64,
    rec: Shared,
    views: Views,
    cut: BTreeSet<(NodeId, NodeId)>,
    /// Client hosts (index = client id - 1) and their cut links to nodes.
    clients: Vec<madsim::task::NodeId>,
    client_cut: BTreeSet<(usize, NodeId)>,
    down: BTreeSet<NodeId>,
    paused: BTreeSet<NodeId>,
    /// The run's seed (a joining host's streams derive from it).
    seed: u64,
    /// Data dirs of another founding of the same founder list, by node id
    /// (`world::foreign`; empty unless the schedule swaps one in).
    pub(crate) foreign_disks: BTreeMap<NodeId, SimDisk>,
    /// Status pollers of the hosts that joined during the run.
    pollers: Vec<tokio::task::JoinHandle<()>>,
    /// The seed's fault points inside runtime and storage.
    buggify: Buggify,
}

impl Drop for Executor {
    fn drop(&mut self) {
        for p in &self.pollers {
            p.abort();
        }
    }
}

impl Executor {
    pub(crate) fn new(
        seed: u64,
        hosts: Vec<Host>,
        clients: Vec<madsim::task::NodeId>,
        rng: SplitMix64,
        rec: Shared,
        views: Views,
        buggify: Buggify,
    ) -> Self {
        Executor {
            hosts,
            handle: Handle::current(),
            net: NetSim::current(),
            rng,
            rec,
            views,
            cut: BTreeSet::new(),
            clients,
            client_cut: BTreeSet::new(),
            down: BTreeSet::new(),
            paused: BTreeSet::new(),
            seed,
            foreign_disks: BTreeMap::new(),
            pollers: Vec::new(),
            buggify,
        }
    }

    fn host(&self, id: NodeId) -> &Host {
        &self.hosts[(id - 1) as usize]
    }

    fn cut_links(&mut self, what: String, links: &[(NodeId, NodeId)]) {
        for &(a, b) in links {
            let (ma, mb) = (self.host(a).madsim_id, self.host(b).madsim_id);
            self.net.clog_link(ma, mb);
            self.cut.insert((a, b));
        }
        self.rec.lock().event(TimelineEvent::Network {
            what,
            cut: self.cut.clone(),
        });
    }

    fn heal_network(&mut self) {
        if self.cut.is_empty() {
            return;
        }
        for &(a, b) in &self.cut {
            self.net
                .unclog_link(self.host(a).madsim_id, self.host(b).madsim_id);
        }
        self.cut.clear();
        self.rec.lock().event(TimelineEvent::Network {
            what: "heal".into(),
            cut: BTreeSet::new(),
        });
    }

    fn heal_clients(&mut self) {
        if self.client_cut.is_empty() {
            return;
        }
        for &(client, node) in &self.client_cut {
            let (c, n) = (self.clients[client], self.host(node).madsim_id);
            self.net.unclog_link(c, n);
            self.net.unclog_link(n, c);
        }
        self.client_cut.clear();
        self.rec.lock().harness("net: client links healed");
    }

    fn set_weather(&self, loss_per_million: u64, lo_ms: u64, hi_ms: u64) {
        self.net.update_config(|c| {
            c.packet_loss_rate = loss_per_million as f64 / 1_000_000.0;
            c.send_latency =
                Duration::from_millis(lo_ms)..Duration::from_millis(hi_ms.max(lo_ms + 1));
        });
    }

    /// Kills the process and crashes its disk as `fault` says.
    fn crash(&mut self, node: NodeId, fault: CrashFault, why: String) {
        if self.down.contains(&node) || self.host(node).is_retired() {
            return;
        }
        if self.paused.remove(&node) {
            self.handle.resume(self.host(node).madsim_id);
        }
        self.handle.kill(self.host(node).madsim_id);
        let disk = self.host(node).disk();
        disk.crash(fault, &mut self.rng);
        {
            let mut c = self
                .host(node)
                .current
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            c.handle = None;
            c.graceful = None;
        }
        self.views.forget(node);
        self.down.insert(node);
        self.rec.lock().event(TimelineEvent::Down { node, why });
    }

    /// Waits (a bounded while) until `node`'s disk holds writes not yet
    /// synced, so that the crash lands between a write and its sync (the
    /// window in which an acknowledgement sent too early would be lost).
    /// Returns what to add to the crash's timeline line.
    async fn wait_for_unsynced_writes(&self, node: NodeId) -> String {
        if self.down.contains(&node) {
            return String::new();
        }
        let disk = self.host(node).disk();
        let deadline = tokio::time::Instant::now() + CRASH_AIM_MAX;
        while tokio::time::Instant::now() < deadline {
            let unsynced = disk.unsynced_writes();
            if unsynced > 0 {
                return format!(" with {unsynced} unsynced write(s)");
            }
            tokio::time::sleep(CRASH_AIM_POLL).await;
        }
        " (no write was waiting for its sync)".into()
    }

    fn restart(&mut self, node: NodeId) {
        // A retired host stays off (its init would start nothing anyway).
        if !self.down.remove(&node) || self.host(node).is_retired() {
            return;
        }
        let founding = self.host(node).founding.load(Ordering::SeqCst);
        let mut rec = self.rec.lock();
        rec.observe_in(founding, NodeObservation::Restarted { node });
        rec.event(TimelineEvent::Up { node });
        drop(rec);
        // Kill first (again): madsim's restart alone re-binds into AddrInUse.
        self.handle.kill(self.host(node).madsim_id);
        self.handle.restart(self.host(node).madsim_id);
    }

    pub(crate) async fn apply(&mut self, action: &FaultAction) {
        match action {
            FaultAction::Cut { shape, links } => self.cut_links(shape.to_string(), links),
            FaultAction::IsolateLeader => self.isolate_leader(),
            FaultAction::HealNetwork => self.heal_network(),
            FaultAction::CutClient {
                client_slot,
                from,
                leader,
            } => self.cut_client(*client_slot, from, *leader),
            FaultAction::HealClients => self.heal_clients(),
            FaultAction::SetNet {
                loss_per_million,
                latency_min_ms,
                latency_max_ms,
            } => {
                self.set_weather(*loss_per_million, *latency_min_ms, *latency_max_ms);
                self.rec.lock().harness(action.to_string());
            }
            FaultAction::ResetNet => {
                self.set_weather(0, 1, 10);
                self.rec.lock().harness(action.to_string());
            }
            FaultAction::SetFrameFaults {
                from,
                to,
                drop_per_million,
                duplicate_per_million,
                reorder_per_million,
            } => {
                let faults = LinkFaults {
                    drop_per_million: *drop_per_million,
                    duplicate_per_million: *duplicate_per_million,
                    reorder_per_million: *reorder_per_million,
                };
                let to = *to;
                self.host(*from).link_faults.update(|t| {
                    t.insert(to, faults);
                });
                self.rec.lock().harness(action.to_string());
            }
            FaultAction::ClearFrameFaults => {
                for h in &self.hosts {
                    h.link_faults.update(|t| t.clear());
                }
                self.rec.lock().harness(action.to_string());
            }
            FaultAction::Crash { node, fault } => {
                let why = if self.buggify.crash_in_sync_window {
                    self.wait_for_unsynced_writes(*node).await
                } else {
                    String::new()
                };
                self.crash(*node, *fault, format!("crash ({fault:?}){why}"));
            }
            FaultAction::WipeDisk { node } => self.wipe_disk(*node),
            FaultAction::ReplaceDisk { node } => self.replace_disk(*node),
            FaultAction::Restart { node } => self.restart(*node),
            FaultAction::Pause { node } => self.pause(*node),
            FaultAction::Resume { node } => self.resume(*node),
            FaultAction::GracefulRestart { node } => {
                if self.down.contains(node) || self.paused.contains(node) {
                    return;
                }
                self.graceful_restart(*node).await;
            }
            FaultAction::SetDrift { node, drift_ppm } => {
                self.host(*node).skew.set_drift_ppm(*drift_ppm);
                self.clock_event(*node, action.to_string());
            }
            FaultAction::JumpForward { node, ms } => {
                self.host(*node).skew.jump_forward_ms(*ms);
                self.clock_event(*node, action.to_string());
            }
            FaultAction::StepWall { node, delta_ms } => {
                self.host(*node).skew.step_wall_ms(*delta_ms);
                self.clock_event(*node, action.to_string());
            }
            FaultAction::TransferLeader { pick } => self.transfer_leader(*pick),
            FaultAction::AddMember { .. }
            | FaultAction::PromoteMember { .. }
            | FaultAction::RemoveMember { .. } => self.change_membership(action),
            FaultAction::JoinNode { id } => self.join_node(*id),
            FaultAction::RemoveVoter { id, retire } => self.remove_voter(*id, *retire),
            FaultAction::RemoveLeader { retire } => match self.views.leader() {
                Some(leader) => self.remove_voter(leader, *retire),
                None => self
                    .rec
                    .lock()
                    .harness("remove the leader: no leader known, skipped"),
            },
            FaultAction::TransferLeaderTo { id } => self.transfer_leader_to(*id),
            FaultAction::StopNode { node } => {
                self.crash(*node, CrashFault::LoseUnsynced, "switched off".into());
            }
            FaultAction::StartNode { node } => self.restart(*node),
            FaultAction::MovePeerAddr { node } => self.move_peer_addr(*node).await,
            FaultAction::SwapForeignDisk { node } => self.swap_foreign_disk(*node),
            FaultAction::FailSync { node } => {
                self.host(*node).disk().fail_next_sync();
                self.rec.lock().harness(action.to_string());
            }
            FaultAction::RestartAfterFailedSync { node } => {
                if !self.down.contains(node) {
                    self.crash(*node, CrashFault::KeepRandomPrefix, action.to_string());
                    self.restart(*node);
                }
            }
        }
    }

    /// Every host's current incarnation, for tasks that pick a running
    /// member on each attempt.
    fn members(&self) -> reconfig::Members {
        reconfig::Members(
            self.hosts
                .iter()
                .map(|h| (h.id, h.current.clone()))
                .collect(),
        )
    }

    /// A new host with a blank disk joins through a running member, as
    /// `serve --join` does: it starts as a joiner of the cluster id that
    /// member names, then asks to be added (`reconfig::spawn_join`).
    fn join_node(&mut self, id: NodeId) {
        assert_eq!(
            id,
            self.hosts.len() as NodeId + 1,
            "joiners come in id order"
        );
        let member = self
            .hosts
            .iter()
            .filter(|h| !self.down.contains(&h.id) && !self.paused.contains(&h.id))
            .find_map(|h| h.node_handle());
        let Some(member) = member else {
            self.rec
                .lock()
                .harness(format!("n{id} cannot join: no member up, skipped"));
            return;
        };
        let cluster_id = member.cluster_id();
        let founding = Arc::new(AtomicU64::new(THIS_FOUNDING));
        let plan = HostPlan {
            seed: self.seed,
            id,
            role: HostRole::Joiner {
                cluster_id: cluster_id.clone(),
            },
            clock_setup: ClockSetup {
                offset_ms: 0,
                drift_ppm: 0,
            },
            founding: founding.clone(),
            buggify: self.buggify.clone(),
        };
        let observer = node_observer(id, self.rec.clone(), founding);
        let host = create_host(&self.handle, plan, self.rec.clone(), observer);
        let joiner = Joiner {
            id,
            peer_addr: host.peer_addr(),
            api_addr: format!("{}:{}", server_ip(id), API_PORT),
            incarnation: Some(host.disk_incarnation.load(Ordering::SeqCst)),
            cluster_id: Some(cluster_id),
        };
        self.pollers.push(tokio::spawn(poll_node(
            id,
            host.current.clone(),
            self.views.clone(),
            self.rec.clone(),
        )));
        self.rec.lock().event(TimelineEvent::Up { node: id });
        let joining = host.current.clone();
        self.hosts.push(host);
        reconfig::spawn_join(self.members(), joiner, joining, self.rec.clone());
    }

    /// Removes voter `id` through whichever member runs, asked until
    /// committed or refused; with `retire`, its host is switched off for
    /// good once the removal committed.
    fn remove_voter(&mut self, id: NodeId, retire: bool) {
        let Some(host) = self.hosts.get((id - 1) as usize) else {
            return;
        };
        let retire = retire.then(|| reconfig::Retire {
            madsim_id: host.madsim_id,
            current: host.current.clone(),
            views: self.views.clone(),
        });
        self.rec.lock().harness(format!("removing voter n{id}"));
        reconfig::spawn_remove(self.members(), id, retire, self.rec.clone());
    }

    /// Asks the node that leads now to hand leadership to `id`.
    fn transfer_leader_to(&mut self, id: NodeId) {
        let leader = self.views.leader();
        let handle = leader.and_then(|l| self.host(l).node_handle());
        let (Some(leader), Some(handle)) = (leader, handle) else {
            self.rec.lock().harness(format!(
                "leadership transfer to n{id}: no leader known, skipped"
            ));
            return;
        };
        if leader == id {
            return;
        }
        self.rec
            .lock()
            .harness(format!("leadership transfer n{leader} -> n{id}"));
        tokio::spawn(async move {
            let _ = handle.transfer_leader(id, TRANSFER_LEADER_MAX).await;
        });
    }

    /// Stops the node cleanly, moves its peer listener to the next port
    /// and starts it again; the operator then changes its peer address in
    /// the membership (PATCH), asked until committed. A node that is down
    /// comes back on the new port whenever it restarts.
    async fn move_peer_addr(&mut self, node: NodeId) {
        if self.host(node).is_retired() {
            return;
        }
        let was_up = !self.down.contains(&node);
        if was_up {
            self.resume(node);
            self.graceful_stop(node).await;
        }
        let port = self.host(node).peer_port.load(Ordering::SeqCst) + PEER_PORT_STEP;
        self.host(node).peer_port.store(port, Ordering::SeqCst);
        let peer_addr = self.host(node).peer_addr();
        self.rec
            .lock()
            .harness(format!("n{node} now listens for peers on {peer_addr}"));
        if was_up {
            self.restart(node);
        }
        reconfig::spawn_move(self.members(), node, peer_addr, self.rec.clone());
    }

    /// Kills the node and puts its namesake's data dir of another founding
    /// under it (same incarnation), then starts it on that disk.
    fn swap_foreign_disk(&mut self, node: NodeId) {
        let Some(disk) = self.foreign_disks.get(&node).cloned() else {
            return;
        };
        self.crash(
            node,
            CrashFault::LoseUnsynced,
            "data dir swapped for another founding's".into(),
        );
        let host = self.host(node);
        *host.disk.lock().unwrap_or_else(|e| e.into_inner()) = disk;
        host.founding.store(OTHER_FOUNDING, Ordering::SeqCst);
        host.current
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .removed = None;
        let mut rec = self.rec.lock();
        let now = rec.now_ns();
        rec.foreign_swaps.push((node, now));
        drop(rec);
        self.restart(node);
    }

    /// Hands a membership action to the first node that is up and not
    /// paused (a follower forwards it to the leader); skipped when none is.
    fn change_membership(&mut self, action: &FaultAction) {
        let handle = self
            .hosts
            .iter()
            .filter(|h| !self.down.contains(&h.id) && !self.paused.contains(&h.id))
            .find_map(|h| h.node_handle());
        let Some(handle) = handle else {
            self.rec
                .lock()
                .harness(format!("{action}: no node up, skipped"));
            return;
        };
        self.rec.lock().harness(action.to_string());
        super::membership::spawn_change(handle, action.clone());
    }

    /// Asks the node that leads now (as the pollers last saw) to hand
    /// leadership to the `pick`-th other node that is up; skipped when no
    /// leader is known. The transfer runs on its own task: a leader that
    /// cannot finish it must not hold up the schedule.
    fn transfer_leader(&mut self, pick: u64) {
        let Some(leader) = self.views.leader() else {
            self.rec
                .lock()
                .harness("leadership transfer: no leader known, skipped");
            return;
        };
        let others: Vec<NodeId> = self
            .hosts
            .iter()
            .map(|h| h.id)
            .filter(|&n| n != leader && !self.down.contains(&n))
            .collect();
        let (Some(handle), false) = (self.host(leader).node_handle(), others.is_empty()) else {
            return;
        };
        let to = others[(pick % others.len() as u64) as usize];
        self.rec
            .lock()
            .harness(format!("leadership transfer n{leader} -> n{to}"));
        tokio::spawn(async move {
            // Refused or timed out: the churn goes on with the next one.
            let _ = handle.transfer_leader(to, TRANSFER_LEADER_MAX).await;
        });
    }

    /// Cuts the node that leads now (as the pollers last saw) from every
    /// other node; skipped when no leader is known.
    fn isolate_leader(&mut self) {
        let Some(leader) = self.views.leader() else {
            self.rec
                .lock()
                .harness("isolate the leader: no leader known, skipped");
            return;
        };
        let others: Vec<NodeId> = self
            .hosts
            .iter()
            .map(|h| h.id)
            .filter(|&n| n != leader)
            .collect();
        let links: Vec<(NodeId, NodeId)> = others
            .iter()
            .flat_map(|&o| [(leader, o), (o, leader)])
            .collect();
        self.cut_links(format!("isolate leader n{leader}"), &links);
    }

    /// Cuts client `client_slot` (modulo the number of clients) from `from`
    /// and, if `leader`, from the node that leads now, both ways.
    fn cut_client(&mut self, client_slot: u64, from: &[NodeId], leader: bool) {
        if self.clients.is_empty() {
            return;
        }
        let client = (client_slot as usize) % self.clients.len();
        let mut nodes: BTreeSet<NodeId> = from.iter().copied().collect();
        if leader {
            nodes.extend(self.views.leader());
        }
        for &node in &nodes {
            let (c, n) = (self.clients[client], self.host(node).madsim_id);
            self.net.clog_link(c, n);
            self.net.clog_link(n, c);
            self.client_cut.insert((client, node));
        }
        let names: Vec<String> = nodes.iter().map(|n| format!("n{n}")).collect();
        self.rec.lock().harness(format!(
            "net: client c{} cut from {{{}}}",
            client + 1,
            names.join(",")
        ));
    }

    /// Kills the node and gives it a blank disk (amnesia).
    fn wipe_disk(&mut self, node: NodeId) {
        self.crash(node, CrashFault::LoseUnsynced, "wiped: blank disk".into());
        *self
            .host(node)
            .disk
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = deadbolt_runtime::storage::SimDisk::new();
    }

    /// Kills the node and gives it a new, empty data dir under the same id
    /// and flags (an operator's mistake).
    fn replace_disk(&mut self, node: NodeId) {
        self.crash(
            node,
            CrashFault::LoseUnsynced,
            "data dir replaced: blank disk".into(),
        );
        let incarnation = super::host::data_dir_incarnation(&mut self.rng);
        let host = self.host(node);
        *host.disk.lock().unwrap_or_else(|e| e.into_inner()) =
            deadbolt_runtime::storage::SimDisk::new();
        host.disk_incarnation
            .store(incarnation, std::sync::atomic::Ordering::SeqCst);
        let mut current = host.current.lock().unwrap_or_else(|e| e.into_inner());
        current.disk_replaced = true;
        // A new data dir carries no mark of an earlier removal.
        current.removed = None;
    }

    fn pause(&mut self, node: NodeId) {
        if self.down.contains(&node) || !self.paused.insert(node) {
            return;
        }
        self.handle.pause(self.host(node).madsim_id);
        self.rec.lock().event(TimelineEvent::Paused { node });
    }

    fn resume(&mut self, node: NodeId) {
        if self.paused.remove(&node) {
            self.handle.resume(self.host(node).madsim_id);
            self.rec.lock().event(TimelineEvent::Resumed { node });
        }
    }

    fn clock_event(&self, node: NodeId, what: String) {
        let host = self.host(node);
        let event = TimelineEvent::Clock {
            node,
            offset_ms: host.clock_offset_ms(),
            drift_ppm: host.skew.drift_ppm(),
            what,
        };
        self.rec.lock().event(event);
    }

    /// Asks the node to stop (leader hands over, storage flushes), waits a
    /// bounded time, then stops the process and starts it again.
    async fn graceful_restart(&mut self, node: NodeId) {
        if self.graceful_stop(node).await {
            self.restart(node);
        }
    }

    /// Asks the node to stop, waits a bounded time, then stops the process
    /// (it is down afterwards). False if no node was running there.
    async fn graceful_stop(&mut self, node: NodeId) -> bool {
        let trigger = self
            .host(node)
            .current
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .graceful
            .take();
        let Some(trigger) = trigger else {
            return false;
        };
        self.rec
            .lock()
            .harness(format!("n{node} graceful shutdown requested"));
        trigger.trigger();
        let deadline = tokio::time::Instant::now() + GRACEFUL_STOP_MAX;
        while tokio::time::Instant::now() < deadline {
            if self.host(node).node_handle().is_none() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Everything was flushed by a clean shutdown; a crash that loses
        // unsynced writes loses nothing more.
        self.crash(node, CrashFault::LoseUnsynced, "graceful stop".into());
        true
    }

    /// Ends every fault: network healed, weather and frame faults reset,
    /// paused nodes resumed, crashed nodes restarted. Clock drift stays: a
    /// host's clock is part of its environment, not a fault that ends.
    pub(crate) fn heal_all(&mut self) {
        // The fault points inside the nodes stop firing too (a dropped
        // forwarded reply after the heal would leave the read-back's pop
        // with an unknown outcome: seed 504). The disks keep their latency:
        // a slow disk is no fault.
        deadbolt_runtime::buggify::set_enabled(false);
        self.heal_network();
        self.heal_clients();
        self.set_weather(0, 1, 10);
        for h in &self.hosts {
            h.link_faults.update(|t| t.clear());
        }
        let paused: Vec<NodeId> = self.paused.iter().copied().collect();
        for node in paused {
            self.paused.remove(&node);
            self.handle.resume(self.host(node).madsim_id);
            self.rec.lock().event(TimelineEvent::Resumed { node });
        }
        let down: Vec<NodeId> = self.down.iter().copied().collect();
        for node in down {
            self.restart(node);
        }
        self.rec.lock().harness("all faults healed");
    }

    /// Power loss on every node at once, then every node restarts: what
    /// was acknowledged must have been durable on a majority.
    pub(crate) fn crash_and_restart_all(&mut self, fault: CrashFault) {
        let ids: Vec<NodeId> = self.hosts.iter().map(|h| h.id).collect();
        for &node in &ids {
            self.crash(
                node,
                fault,
                format!("power loss of the whole cluster ({fault:?})"),
            );
        }
        for &node in &ids {
            self.restart(node);
        }
    }

    pub(crate) fn start_errors(&self) -> Vec<(NodeId, String)> {
        self.hosts
            .iter()
            .filter_map(|h| {
                let c = h.current.lock().unwrap_or_else(|e| e.into_inner());
                c.start_error.clone().map(|e| (h.id, e))
            })
            .collect()
    }
}
