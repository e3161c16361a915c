//! The simulation proper (madsim builds only): one seed becomes a cluster of
//! simulated hosts running the real node and HTTP API, clients running the
//! real client crate, a fault schedule executed against them, then heal,
//! liveness probes, a whole-cluster power loss and a read-back, and finally
//! every checker.
//!
//! Phases of a run, in simulated time:
//! 1. `0 .. secs`: workload under the seed's fault schedule.
//! 2. heal everything; clients stop (in-flight operations may end unknown);
//!    probes must succeed within [`LIVENESS_BOUND`].
//! 3. every node loses power at once and restarts; the read-back (KV gets,
//!    stack pops until empty) must show every acknowledged effect.

mod abandoned;
mod executor;
mod foreign;
mod host;
mod impatient;
mod membership;
mod observe;
mod reconfig;
mod recorder;
mod workload;

use std::collections::{BTreeMap, BTreeSet};
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use deadbolt_client::api::{KvWriteRequest, StackPopRequest};
use deadbolt_client::Error;
use deadbolt_runtime::storage::CrashFault;
use madsim::runtime::{Handle, Runtime};
use tokio::time::Instant;

use crate::check::determinism::Trace;
use crate::check::durability::DurabilityInput;
use crate::check::grant_leak::GrantLeakInput;
use crate::check::lease_expiry::{AbandonedSession, LeaseExpiryInput};
use crate::check::linearizability::LinearizabilityConfig;
use crate::check::liveness::{LivenessInput, Probe};
use crate::check::membership::{FinalMembership, ForeignNode, MembershipInput, RemovedNode};
use crate::check::{check_run, CheckReport, RunInputs};
use crate::fault::{Buggify, FaultAction, FaultSchedule};
use crate::history::{
    ClientHistory, ClientId, KvInput, KvOutput, LogIndex, NodeId, OpInput, OpOutput, SimTimeNs,
    StackInput, StackOutput,
};
use crate::seed::{rng_for, sub_seed, Concern};
use crate::sweep::{Failure, RunOutcome, RunSpec};
use crate::timeline::Timeline;

use executor::Executor;
use observe::{spawn_pollers, Views};
use recorder::{Recorder, Shared};
use workload::{build_client, keyed_client, ClientTask};

/// After the faults stop, a leader must be known and probes must complete
/// within this much simulated time.
pub const LIVENESS_BOUND: Duration = Duration::from_secs(20);
/// Longest the read-back after the cluster-wide power loss may take.
const READ_BACK_MAX: Duration = Duration::from_secs(60);
/// How long stopping clients may finish their current operation (the
/// client's call timeout plus a wait).
const CLIENT_STOP_MAX: Duration = Duration::from_secs(10);
/// Violations listed per checker in a sweep's failure message.
const VIOLATIONS_SHOWN_PER_CHECKER: usize = 3;
/// The client id of the harness's own probes and read-backs.
const HARNESS_CLIENT: ClientId = 0;

/// What one run leaves behind for the checkers and the person reading.
pub struct RunRecord {
    pub report: CheckReport,
    pub trace: Trace,
    pub timeline: Timeline,
    pub sim_secs: f64,
    pub ops: u64,
    /// Problems outside the checkers (a node that could not start).
    pub harness_failures: Vec<String>,
    pub summary: String,
}

fn ns(d: Duration) -> SimTimeNs {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Runs `spec` once inside the current madsim runtime.
async fn simulate(spec: RunSpec) -> RunRecord {
    let handle = Handle::current();
    let mut start = Instant::now();
    let schedule = FaultSchedule::generate(spec.seed, spec.mix, spec.nodes, spec.secs * 1_000);
    let joiners = schedule
        .actions
        .iter()
        .filter(|a| matches!(a.action, FaultAction::JoinNode { .. }))
        .count() as u64;
    let rec = Shared::new(spec.nodes + joiners, spec.verbose);
    let buggify = Buggify::draw(spec.seed, spec.mix);
    deadbolt_runtime::buggify::set_enabled(true);
    rec.lock().harness(format!(
        "{spec}: {} fault action(s); {}; {buggify}",
        schedule.actions.len(),
        schedule.plan
    ));

    let other_founding = schedule
        .actions
        .iter()
        .any(|a| matches!(a.action, FaultAction::SwapForeignDisk { .. }));
    let hosts = create_hosts(&handle, &spec, &schedule, &buggify, &rec, other_founding);
    let foreign = if other_founding {
        let other = foreign::found_other_cluster(&hosts, &rec).await;
        // The run proper starts now: the schedule's times, and the
        // recorder's, count from here.
        start = Instant::now();
        rec.restart_clock();
        Some(other)
    } else {
        None
    };
    let views = Views::default();
    let pollers = spawn_pollers(&hosts, &views, &rec);
    // A joiner's API is listed from the start, as an operator would list
    // the address of a node about to join: until it runs, its connections
    // are refused and clients move on to the next endpoint.
    let endpoints: Vec<String> = (1..=spec.nodes + joiners).map(host::api_url).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let (client_tasks, client_hosts) = start_clients(&handle, &spec, &endpoints, &rec, &stop);
    let crashing = start_crashing_client(&handle, &spec, &schedule, &endpoints, &rec, start);
    let impatient = start_impatient_client(&handle, &spec, &schedule, &endpoints, &rec, start);

    // Phase 1: the fault schedule.
    let mut executor = Executor::new(
        spec.seed,
        hosts,
        client_hosts,
        rng_for(spec.seed, Concern::FaultExecution, 0),
        rec.clone(),
        views.clone(),
        buggify,
    );
    let founding_commit = foreign.as_ref().map_or(0, |f| f.commit_index);
    if let Some(other) = foreign {
        executor.foreign_disks = other.disks;
    }
    for action in &schedule.actions {
        let at = start + Duration::from_millis(action.at_ms);
        tokio::time::sleep_until(at).await;
        executor.apply(&action.action).await;
    }
    tokio::time::sleep_until(start + Duration::from_millis(schedule.faults_end_ms)).await;
    let lease_expiry = lease_expiry_input(crashing, &schedule).await;

    // Phase 2: heal, stop the clients, probe.
    executor.heal_all();
    let faults_stopped_ns = rec.now_ns();
    stop_clients(&stop, client_tasks, &rec).await;
    let grant_leak = grant_leak_input(impatient).await;
    let probe_node = handle
        .create_node()
        .name("harness")
        .ip(std::net::IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 2, 1)))
        .build();
    let probe_client = build_client(&endpoints, sub_seed(spec.seed, Concern::Client, 0), true);
    let liveness = {
        let rec2 = rec.clone();
        let views2 = views.clone();
        let client = probe_client.clone();
        probe_node
            .spawn(async move { probe_liveness(client, rec2, views2, faults_stopped_ns).await })
            .await
            .expect("the probe task is not killed")
    };

    let removed_serving = removed_nodes_stop(&executor, &rec).await;
    let last_membership = if changes_membership(&schedule) {
        last_membership(&executor, &views, &rec).await
    } else {
        None
    };

    // Phase 3: power loss everywhere, restart, read back.
    let mut fault_rng = rng_for(spec.seed, Concern::FaultExecution, 1);
    let fault = if fault_rng.chance(1, 2) {
        CrashFault::LoseUnsynced
    } else {
        CrashFault::TearLast
    };
    executor.crash_and_restart_all(fault);
    let read_back = {
        let rec2 = rec.clone();
        probe_node
            .spawn(async move { read_back(probe_client, rec2).await })
            .await
            .expect("the read-back task is not killed")
    };
    let start_errors = executor.start_errors();
    for p in pollers {
        p.abort();
    }
    let sim_secs = start.elapsed().as_secs_f64();
    drop(executor);
    rec.lock().harness("run over");

    let recorder: Recorder = {
        // Client tasks that did not stop in time may still hold the
        // recorder; take a snapshot of everything instead of unwrapping.
        let r = rec.lock();
        r.clone()
    };
    let membership = membership_input(
        &recorder,
        &removed_serving,
        founding_commit,
        last_membership,
    );
    let checked = Checked {
        liveness,
        lease_expiry,
        grant_leak,
        read_back,
        membership,
    };
    finish(&spec, recorder, checked, start_errors, sim_secs)
}

/// Creates the server hosts (each starts its node) and puts skewed clocks
/// on the timeline. With `other_founding`, their first data dirs belong to
/// another founding (`world::foreign`), whose events go to its own history.
fn create_hosts(
    handle: &Handle,
    spec: &RunSpec,
    schedule: &FaultSchedule,
    buggify: &Buggify,
    rec: &Shared,
    other_founding: bool,
) -> Vec<host::Host> {
    let label = if other_founding {
        host::OTHER_FOUNDING
    } else {
        host::THIS_FOUNDING
    };
    let hosts: Vec<host::Host> = (1..=spec.nodes)
        .map(|id| {
            let founding = Arc::new(AtomicU64::new(label));
            let plan = host::HostPlan {
                seed: spec.seed,
                id,
                role: host::HostRole::Founder { nodes: spec.nodes },
                clock_setup: schedule.clocks[(id - 1) as usize],
                founding: founding.clone(),
                buggify: buggify.clone(),
            };
            let observer = observe::node_observer(id, rec.clone(), founding);
            host::create_host(handle, plan, rec.clone(), observer)
        })
        .collect();
    for h in &hosts {
        let setup = schedule.clocks[(h.id - 1) as usize];
        if setup.offset_ms != 0 || setup.drift_ppm != 0 {
            rec.lock().event(crate::timeline::TimelineEvent::Clock {
                node: h.id,
                offset_ms: h.clock_offset_ms(),
                drift_ppm: setup.drift_ppm,
                what: format!(
                    "n{} clock starts {:+} ms off, drift {:+.1}%",
                    h.id,
                    setup.offset_ms,
                    setup.drift_ppm as f64 / 10_000.0
                ),
            });
        }
    }
    hosts
}

/// Starts the clients, each on its own simulated host (so it has its own
/// connections and IP), seeded per client; they run until `stop`. Returns
/// their tasks and their madsim hosts.
fn start_clients(
    handle: &Handle,
    spec: &RunSpec,
    endpoints: &[String],
    rec: &Shared,
    stop: &Arc<AtomicBool>,
) -> (Vec<madsim::task::JoinHandle<()>>, Vec<madsim::task::NodeId>) {
    let mut workload_rng = rng_for(spec.seed, Concern::Workload, 0);
    let clients = workload_rng.range_u64(2, 8);
    let mut client_tasks = Vec::new();
    let mut client_hosts = Vec::new();
    for c in 1..=clients {
        let node = handle
            .create_node()
            .name(format!("c{c}"))
            .ip(std::net::IpAddr::V4(std::net::Ipv4Addr::new(
                10, 0, 1, c as u8,
            )))
            .build();
        client_hosts.push(node.id());
        let client_seed = sub_seed(spec.seed, Concern::Client, c);
        let task = ClientTask {
            id: c,
            client: build_client(endpoints, client_seed, keyed_client(client_seed)),
            keyed: keyed_client(client_seed),
            rec: rec.clone(),
            rng: rng_for(spec.seed, Concern::Workload, c),
            stop: stop.clone(),
            manual: workload_rng.chance(1, 2),
            reckless: workload_rng.chance(1, 3),
            ttl_ms: workload_rng.range_u64(1_000, 5_000),
            values: 0,
        };
        client_tasks.push(node.spawn(async move {
            // Let the cluster elect its first leader.
            tokio::time::sleep(Duration::from_millis(500)).await;
            task.run().await
        }));
    }
    (client_tasks, client_hosts)
}

/// Under leader churn, a client that crashes just after the churn begins
/// (`world/abandoned.rs`), on a host of its own: the task that reports its
/// session. None without churn (the run stays what it was before this
/// client existed).
fn start_crashing_client(
    handle: &Handle,
    spec: &RunSpec,
    schedule: &FaultSchedule,
    endpoints: &[String],
    rec: &Shared,
    start: Instant,
) -> Option<madsim::task::JoinHandle<Option<AbandonedSession>>> {
    let churn_starts_ms = schedule
        .actions
        .iter()
        .find(|a| matches!(a.action, FaultAction::TransferLeader { .. }))?
        .at_ms;
    let node = handle
        .create_node()
        .name("crashing")
        .ip(std::net::IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 3, 1)))
        .build();
    let client = build_client(endpoints, sub_seed(spec.seed, Concern::Client, 1_000), true);
    let watcher = build_client(endpoints, sub_seed(spec.seed, Concern::Client, 1_001), true);
    let rng = rng_for(spec.seed, Concern::Workload, 1_000);
    let plan = abandoned::Plan {
        start,
        churn_starts_ms,
        faults_end_ms: schedule.faults_end_ms,
    };
    let rec = rec.clone();
    Some(node.spawn(abandoned::crash_under_churn(
        client, watcher, rng, plan, rec,
    )))
}

/// In half the seeds (by a bit of the seed: no draw moves), an impatient
/// client of the `Session::lock` family on a host of its own
/// (`world/impatient.rs`), until the faults end.
fn start_impatient_client(
    handle: &Handle,
    spec: &RunSpec,
    schedule: &FaultSchedule,
    endpoints: &[String],
    rec: &Shared,
    start: Instant,
) -> Option<madsim::task::JoinHandle<Option<GrantLeakInput>>> {
    if (spec.seed >> 3) % 2 != 0 {
        return None;
    }
    let node = handle
        .create_node()
        .name("impatient")
        .ip(std::net::IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 3, 2)))
        .build();
    let client = build_client(endpoints, sub_seed(spec.seed, Concern::Client, 2_000), true);
    let rng = rng_for(spec.seed, Concern::Workload, 2_000);
    let until = start + Duration::from_millis(schedule.faults_end_ms);
    let rec = rec.clone();
    Some(node.spawn(async move {
        // Let the cluster elect its first leader.
        tokio::time::sleep(Duration::from_millis(500)).await;
        impatient::run(client, rng, until, rec).await
    }))
}

/// What the impatient client saw at the end (it settles for a few seconds
/// after the faults end, on the healed cluster).
async fn grant_leak_input(
    impatient: Option<madsim::task::JoinHandle<Option<GrantLeakInput>>>,
) -> Option<GrantLeakInput> {
    tokio::time::timeout(Duration::from_secs(30), impatient?)
        .await
        .ok()?
        .ok()?
}

/// What the crashing client's task reported, and the faults that could
/// have stalled its expiry.
async fn lease_expiry_input(
    crashing: Option<madsim::task::JoinHandle<Option<AbandonedSession>>>,
    schedule: &FaultSchedule,
) -> Option<LeaseExpiryInput> {
    // The task watches until the faults end; a call in flight then is cut
    // at that moment too, so this wait is short.
    let session = tokio::time::timeout(Duration::from_secs(5), crashing?)
        .await
        .ok()?
        .ok()??;
    let disturbed_ns = schedule
        .disturbed_intervals_ms()
        .into_iter()
        .map(|(a, b)| (a * 1_000_000, b * 1_000_000))
        .collect();
    Some(LeaseExpiryInput {
        sessions: vec![session],
        disturbed_ns,
    })
}

/// Tells the clients to stop and gives them [`CLIENT_STOP_MAX`] to finish
/// their current operation (one still running stays unknown).
async fn stop_clients(
    stop: &AtomicBool,
    client_tasks: Vec<madsim::task::JoinHandle<()>>,
    rec: &Shared,
) {
    stop.store(true, Ordering::SeqCst);
    let stop_deadline = Instant::now() + CLIENT_STOP_MAX;
    for task in client_tasks {
        let left = stop_deadline.saturating_duration_since(Instant::now());
        if tokio::time::timeout(left, task).await.is_err() {
            // Its in-flight operation stays unknown.
        }
    }
    rec.lock().close_unseen_sessions();
    rec.lock().harness("clients stopped");
}

/// Waits for a leader and runs probe operations after the heal.
async fn probe_liveness(
    client: deadbolt_client::Client,
    rec: Shared,
    views: Views,
    faults_stopped_ns: SimTimeNs,
) -> LivenessInput {
    let bound = ns(LIVENESS_BOUND);
    let deadline_ns = faults_stopped_ns + bound;
    let mut first_leader_ns = None;
    while rec.now_ns() < deadline_ns {
        if views.leader().is_some() {
            first_leader_ns = Some(rec.now_ns());
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut probes = Vec::new();
    for (i, name) in ["append after heal", "second append after heal"]
        .iter()
        .enumerate()
    {
        let invoked_ns = rec.now_ns();
        let value = format!("<probe-{i}>");
        let op = rec.lock().invoke(
            HARNESS_CLIENT,
            OpInput::Kv(KvInput::Append {
                key: "probe".into(),
                value: value.clone(),
                fence: None,
            }),
        );
        let mut completed_ns = None;
        // Retry until the bound: an unknown outcome is retried with a new
        // call (the probe key is not checked for exactly-once).
        while rec.now_ns() < deadline_ns {
            let request = KvWriteRequest {
                value: value.clone(),
                lock: None,
                fencing_token: None,
            };
            match client.kv_append("probe", &request).await {
                Ok(w) => {
                    rec.lock().complete(
                        op,
                        OpOutput::Kv(KvOutput::Written {
                            size: w.size as usize,
                            last_token: w.last_token,
                        }),
                    );
                    completed_ns = Some(rec.now_ns());
                    break;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
        probes.push(Probe {
            name: (*name).to_owned(),
            invoked_ns,
            completed_ns,
        });
    }
    LivenessInput {
        faults_stopped_ns,
        first_leader_ns,
        probes,
        bound_ns: bound,
    }
}

/// What the read-back found: final values, final stacks (bottom first).
struct ReadBack {
    values: BTreeMap<String, String>,
    stacks: BTreeMap<String, Vec<String>>,
    complete: bool,
}

/// Reads every append key and empties every stack (pops are recorded, so
/// linearizability covers them too).
async fn read_back(client: deadbolt_client::Client, rec: Shared) -> ReadBack {
    let deadline = Instant::now() + READ_BACK_MAX;
    let mut out = ReadBack {
        values: BTreeMap::new(),
        stacks: BTreeMap::new(),
        complete: true,
    };
    for key in workload::append_keys() {
        let mut done = false;
        while !done && Instant::now() < deadline {
            let op = rec.lock().invoke(
                HARNESS_CLIENT,
                OpInput::Kv(KvInput::Get { key: key.clone() }),
            );
            rec.lock().read_back_ops.insert(op);
            match client.kv_get(&key).await {
                Ok(r) => {
                    rec.lock().complete(
                        op,
                        OpOutput::Kv(KvOutput::Read {
                            value: r.value.clone(),
                            last_token: r.last_token,
                        }),
                    );
                    out.values.insert(key.clone(), r.value);
                    done = true;
                }
                Err(Error::NotFound { .. }) => {
                    rec.lock().complete(op, OpOutput::Kv(KvOutput::NotFound));
                    done = true;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
        out.complete &= done;
    }
    for stack in workload::STACKS {
        let mut popped = Vec::new();
        let mut done = false;
        while !done && Instant::now() < deadline {
            let op = rec.lock().invoke(
                HARNESS_CLIENT,
                OpInput::Stack(StackInput::Pop {
                    stack: stack.into(),
                    fence: None,
                }),
            );
            rec.lock().read_back_ops.insert(op);
            match client.stack_pop(stack, &StackPopRequest::default()).await {
                Ok(r) => {
                    rec.lock().complete(
                        op,
                        OpOutput::Stack(StackOutput::Popped {
                            value: r.value.clone(),
                            size: r.size as usize,
                        }),
                    );
                    popped.push(r.value);
                }
                Err(Error::StackEmpty) => {
                    rec.lock().complete(op, OpOutput::Stack(StackOutput::Empty));
                    done = true;
                }
                Err(Error::NotFound { .. }) => {
                    rec.lock()
                        .complete(op, OpOutput::Stack(StackOutput::NotFound));
                    done = true;
                }
                // Unknown: a retried pop may pop another element, so the
                // read-back of this stack is incomplete.
                Err(_) => {
                    out.complete = false;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
        out.complete &= done;
        popped.reverse();
        out.stacks.insert(stack.to_owned(), popped);
    }
    out
}

/// How long removed nodes get, after the liveness probes, to learn their
/// removal from the healed cluster and stop.
const REMOVED_NODES_STOP_MAX: Duration = Duration::from_secs(10);

/// Waits (bounded) until no node whose removal committed still serves on
/// its old data dir; returns those that still do. Waits not at all in a
/// run without removals.
async fn removed_nodes_stop(executor: &Executor, rec: &Shared) -> BTreeSet<NodeId> {
    let deadline = Instant::now() + REMOVED_NODES_STOP_MAX;
    loop {
        let removed: Vec<NodeId> = rec.lock().removals.keys().copied().collect();
        let serving: BTreeSet<NodeId> = removed
            .into_iter()
            .filter(|&n| executor.hosts[(n - 1) as usize].node_handle().is_some())
            .collect();
        if serving.is_empty() || Instant::now() >= deadline {
            if !serving.is_empty() {
                rec.lock()
                    .harness(format!("removed nodes still serving: {serving:?}"));
            }
            return serving;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Whether the schedule changes the membership (the phantom member or a
/// reconfiguration story).
fn changes_membership(schedule: &FaultSchedule) -> bool {
    schedule
        .actions
        .iter()
        .any(|a| a.action.is_reconfiguration() || matches!(a.action, FaultAction::AddMember { .. }))
}

/// The membership as the leader reports it after the heal (None without
/// a leader that answers).
async fn last_membership(
    executor: &Executor,
    views: &Views,
    rec: &Shared,
) -> Option<FinalMembership> {
    let leader = views.leader()?;
    let handle = executor.hosts[(leader - 1) as usize].node_handle()?;
    let status = handle.status().await.ok()?;
    let members: Vec<NodeId> = status.members.iter().map(|m| m.id).collect();
    let voters: Vec<NodeId> = status
        .members
        .iter()
        .filter(|m| m.voter)
        .map(|m| m.id)
        .collect();
    rec.lock().harness(format!(
        "membership after the heal (n{leader}'s view): members {members:?}, voters {voters:?}"
    ));
    Some(FinalMembership {
        leader,
        members,
        voters,
        hosts: executor.hosts.iter().map(|h| h.id).collect(),
    })
}

/// The membership checker's input: None in a run that did not change its
/// membership.
fn membership_input(
    recorder: &Recorder,
    removed_serving: &BTreeSet<NodeId>,
    founding_commit: LogIndex,
    last: Option<FinalMembership>,
) -> Option<MembershipInput> {
    if recorder.removals.is_empty() && recorder.foreign_swaps.is_empty() && last.is_none() {
        return None;
    }
    let removed = recorder
        .removals
        .iter()
        .map(|(&node, &removed_ns)| RemovedNode {
            node,
            removed_ns,
            still_serving: removed_serving.contains(&node),
        })
        .collect();
    let foreign = recorder
        .foreign_swaps
        .iter()
        .map(|&(node, swapped_ns)| ForeignNode {
            node,
            swapped_ns,
            founding_commit,
        })
        .collect();
    Some(MembershipInput {
        removed,
        foreign,
        last,
    })
}

/// What the harness measured for the checkers besides the recorder.
struct Checked {
    liveness: LivenessInput,
    lease_expiry: Option<LeaseExpiryInput>,
    grant_leak: Option<GrantLeakInput>,
    read_back: ReadBack,
    membership: Option<MembershipInput>,
}

fn finish(
    spec: &RunSpec,
    recorder: Recorder,
    checked: Checked,
    start_errors: Vec<(u64, String)>,
    sim_secs: f64,
) -> RunRecord {
    let read_back = checked.read_back;
    // Durability compares the workload's effects (not the read-back's own
    // pops) with what was read back.
    let durability = read_back.complete.then(|| {
        let mut workload_only = ClientHistory::new();
        workload_only.ops = recorder
            .clients
            .ops
            .iter()
            .enumerate()
            .filter(|(id, op)| {
                !recorder.read_back_ops.contains(id)
                    && !recorder.not_applied_ops.contains(id)
                    && op.client != HARNESS_CLIENT
            })
            .map(|(_, op)| op.clone())
            .collect();
        DurabilityInput::from_history(&workload_only, read_back.values, read_back.stacks)
    });
    // Ops refused before proposing (503 to keyless clients) must have had no
    // effect: the checkers judge the history without them.
    let mut checked_clients = ClientHistory::new();
    checked_clients.ops = recorder
        .clients
        .ops
        .iter()
        .enumerate()
        .filter(|(id, _)| !recorder.not_applied_ops.contains(id))
        .map(|(_, op)| op.clone())
        .collect();
    let inputs = RunInputs {
        raft: &recorder.raft,
        clients: &checked_clients,
        locks: &recorder.locks,
        accepted_writes: recorder.resource.accepted(),
        durability: durability.as_ref(),
        liveness: Some(&checked.liveness),
        lease_expiry: checked.lease_expiry.as_ref(),
        grant_leak: checked.grant_leak.as_ref(),
        foreign_raft: (!recorder.foreign_raft.events.is_empty()).then_some(&recorder.foreign_raft),
        membership: checked.membership.as_ref(),
    };
    let report = check_run(&inputs, &LinearizabilityConfig::default());
    let mut harness_failures = Vec::new();
    for (node, error) in start_errors {
        harness_failures.push(format!("n{node} could not start: {error}"));
    }
    // The Raft checker compares applied sequences only if the node observer
    // reported them: a run without a single `Applied` means the hook is not
    // wired, and "no divergence" would mean nothing.
    if !recorder
        .raft
        .events
        .iter()
        .any(|e| matches!(e.event, crate::history::NodeObservation::Applied { .. }))
    {
        harness_failures
            .push("no applied entries observed: the Raft checker saw no apply sequence".into());
    }
    if !read_back.complete {
        harness_failures.push(
            "read-back after the cluster-wide restart did not finish (durability unchecked)".into(),
        );
    }
    let completed = recorder
        .clients
        .ops
        .iter()
        .filter(|o| o.completed_ns.is_some())
        .count();
    let summary = format!(
        "{spec}: {} ops ({} answered), {} lock events, {} downstream writes ({} refused stale), {} raft observations, {} log truncations",
        recorder.clients.ops.len(),
        completed,
        recorder.locks.events.len(),
        recorder.resource.accepted().len(),
        recorder.resource.rejected_count(),
        recorder.raft.events.len(),
        crate::check::raft::count_truncations(&recorder.raft),
    );
    RunRecord {
        report,
        ops: recorder.clients.ops.len() as u64,
        trace: recorder.trace.finish(),
        timeline: recorder.timeline,
        sim_secs,
        harness_failures,
        summary,
    }
}

/// Specs of runs in flight, by madsim seed: `Runtime::check_determinism`
/// takes a plain `fn`, which finds its spec here.
fn specs() -> &'static Mutex<BTreeMap<u64, RunSpec>> {
    static SPECS: OnceLock<Mutex<BTreeMap<u64, RunSpec>>> = OnceLock::new();
    SPECS.get_or_init(|| Mutex::new(BTreeMap::new()))
}

async fn simulate_registered() -> RunRecord {
    let seed = Handle::current().seed();
    let spec = specs()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(&seed)
        .cloned()
        .expect("the spec was registered before the runtime started");
    simulate(spec).await
}

fn madsim_seed(spec: &RunSpec) -> u64 {
    sub_seed(spec.seed, Concern::Scheduler, 0)
}

/// One madsim runtime for `spec`, on its own thread (panics are caught and
/// returned as the message).
fn run_once(spec: &RunSpec) -> Result<RunRecord, String> {
    let seed = madsim_seed(spec);
    specs()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(seed, spec.clone());
    let madsim_check = std::env::var_os("MADSIM_TEST_CHECK_DETERMINISM").is_some();
    let time_limit = Duration::from_secs(spec.secs + 600);
    let result = std::thread::Builder::new()
        .name(format!("sim-seed-{}", spec.seed))
        .stack_size(64 << 20)
        .spawn(move || {
            std::panic::catch_unwind(AssertUnwindSafe(|| {
                if madsim_check {
                    Runtime::check_determinism(seed, madsim::Config::default(), simulate_registered)
                } else {
                    let mut rt = Runtime::with_seed_and_config(seed, madsim::Config::default());
                    rt.set_time_limit(time_limit);
                    rt.block_on(simulate_registered())
                }
            }))
        })
        .expect("spawning a simulation thread")
        .join();
    specs()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(&seed);
    match result {
        Ok(Ok(record)) => Ok(record),
        Ok(Err(panic)) | Err(panic) => Err(panic_text(&panic)),
    }
}

fn panic_text(panic: &Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "(non-string panic payload)".to_owned()
    }
}

/// Runs one seed once in this process and judges it (every checker but
/// determinism, which needs a second run in a fresh process: see
/// `tests/sim.rs`). Never panics: a panic in the simulation is a failure.
pub fn run_seed(spec: &RunSpec) -> (RunOutcome, Option<RunRecord>) {
    let record = match run_once(spec) {
        Ok(r) => r,
        Err(panic) => {
            return (
                RunOutcome {
                    sim_secs: 0.0,
                    ops: 0,
                    failure: Some(Failure {
                        checkers: vec!["panic".into()],
                        details: format!("  the simulation panicked: {panic}"),
                    }),
                    inconclusive: 0,
                },
                None,
            )
        }
    };
    let mut checkers: BTreeSet<String> = record
        .report
        .violations
        .iter()
        .map(|v| v.checker().to_string())
        .collect();
    // A broken run can violate the same property hundreds of times: show
    // the first few per checker, count the rest.
    let mut details: Vec<String> = Vec::new();
    let mut shown: BTreeMap<String, usize> = BTreeMap::new();
    for v in &record.report.violations {
        let n = shown.entry(v.checker().to_string()).or_default();
        *n += 1;
        if *n <= VIOLATIONS_SHOWN_PER_CHECKER {
            details.push(format!("  {v}"));
        }
    }
    for (checker, n) in &shown {
        if *n > VIOLATIONS_SHOWN_PER_CHECKER {
            details.push(format!(
                "  [{checker}] ... and {} more (the replay shows all)",
                n - VIOLATIONS_SHOWN_PER_CHECKER
            ));
        }
    }
    if !record.harness_failures.is_empty() {
        checkers.insert("node-start/read-back".into());
        details.extend(record.harness_failures.iter().map(|f| format!("  {f}")));
    }
    let failure = (!checkers.is_empty()).then(|| Failure {
        checkers: checkers.into_iter().collect(),
        details: format!("  {}\n{}", record.summary, details.join("\n")),
    });
    (
        RunOutcome {
            sim_secs: record.sim_secs,
            ops: record.ops,
            failure,
            inconclusive: record.report.inconclusive.len() as u64,
        },
        Some(record),
    )
}
