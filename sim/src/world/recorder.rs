//! Everything a run records, in one place behind one lock: the histories the
//! checkers read, the downstream resource, the timeline and the trace hash.
//! Every record goes through here so that the trace (determinism) and the
//! timeline (replay) see exactly what the checkers see.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::time::Instant;

use crate::check::determinism::TraceHasher;
use crate::history::{
    fmt_time, ClientHistory, ClientId, LockEvent, LockHistory, LockInput, LockOutput, NodeId,
    NodeObservation, OpId, OpInput, OpOutput, RaftHistory, SimTimeNs, Term,
};
use crate::resource::{FencedResource, WriteOutcome};
use crate::timeline::{RoleMark, Timeline, TimelineEvent};

#[derive(Clone)]
pub(crate) struct Recorder {
    start: Instant,
    pub(crate) raft: RaftHistory,
    /// The Raft observations of nodes on another founding's data dir
    /// (`world::foreign`): a history of their own, never merged into `raft`.
    pub(crate) foreign_raft: RaftHistory,
    /// Removals the harness saw committed: node -> when.
    pub(crate) removals: BTreeMap<NodeId, SimTimeNs>,
    /// Hosts given another founding's data dir: (node, when).
    pub(crate) foreign_swaps: Vec<(NodeId, SimTimeNs)>,
    pub(crate) clients: ClientHistory,
    pub(crate) locks: LockHistory,
    pub(crate) resource: FencedResource,
    pub(crate) timeline: Timeline,
    pub(crate) trace: TraceHasher,
    /// (node, term) pairs already recorded as `BecameLeader`.
    leaders_seen: BTreeSet<(NodeId, Term)>,
    /// Ops issued by the final read-back (not workload effects).
    pub(crate) read_back_ops: BTreeSet<OpId>,
    /// Ops the API answered 503 to a client without idempotency keys: by
    /// the contract they were refused before being proposed, so they are
    /// left out of the checked history (if one took effect anyway, the
    /// checkers see an effect nobody asked for).
    pub(crate) not_applied_ops: BTreeSet<OpId>,
    /// Sessions the clients opened: (owning client, opened at), and whether
    /// an `EndSession` op was recorded for them.
    sessions: BTreeMap<String, (ClientId, SimTimeNs, bool)>,
    verbose: bool,
}

/// The recorder shared by the supervisor, the hosts' observers and the
/// clients. madsim runs everything on one thread; the mutex is never held
/// across an await.
#[derive(Clone)]
pub(crate) struct Shared(Arc<Mutex<Recorder>>);

impl Shared {
    pub(crate) fn new(nodes: u64, verbose: bool) -> Shared {
        Shared(Arc::new(Mutex::new(Recorder {
            start: Instant::now(),
            raft: RaftHistory::new(),
            foreign_raft: RaftHistory::new(),
            removals: BTreeMap::new(),
            foreign_swaps: Vec::new(),
            clients: ClientHistory::new(),
            locks: LockHistory::new(),
            resource: FencedResource::new(),
            timeline: Timeline::new(nodes),
            trace: if verbose {
                TraceHasher::keeping_lines()
            } else {
                TraceHasher::new()
            },
            leaders_seen: BTreeSet::new(),
            read_back_ops: BTreeSet::new(),
            not_applied_ops: BTreeSet::new(),
            sessions: BTreeMap::new(),
            verbose,
        })))
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, Recorder> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn now_ns(&self) -> SimTimeNs {
        self.lock().now_ns()
    }

    /// Times count from now: the run proper starts after another founding
    /// was made (`world::foreign`), whose events keep their earlier times
    /// in a history of their own.
    pub(crate) fn restart_clock(&self) {
        let mut r = self.lock();
        r.harness("the run proper starts: times count from here");
        r.start = Instant::now();
    }
}

impl Recorder {
    pub(crate) fn now_ns(&self) -> SimTimeNs {
        u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    fn trace_line(&mut self, at_ns: SimTimeNs, line: &str) {
        self.trace.record(&format!("{at_ns} {line}"));
        if self.verbose {
            tracing::info!(target: "deadbolt_sim", "{} {line}", fmt_time(at_ns));
        }
    }

    pub(crate) fn event(&mut self, event: TimelineEvent) {
        let at = self.now_ns();
        let line = format!("{event:?}");
        self.trace_line(at, &line);
        self.timeline.record(at, event);
    }

    pub(crate) fn observe(&mut self, observation: NodeObservation) {
        let at = self.now_ns();
        if let NodeObservation::BecameLeader { node, term } = observation {
            if !self.leaders_seen.insert((node, term)) {
                return;
            }
            self.timeline.record(
                at,
                TimelineEvent::Role {
                    node,
                    role: RoleMark::Leader,
                    term,
                },
            );
        }
        let line = observation.to_string();
        self.trace_line(at, &line);
        self.raft.record(at, observation);
    }

    /// Records an observation of a node on another founding's data dir:
    /// into that founding's history, traced, kept off the timeline's roles.
    pub(crate) fn observe_foreign(&mut self, observation: NodeObservation) {
        let at = self.now_ns();
        let line = format!("other founding: {observation}");
        self.trace_line(at, &line);
        self.foreign_raft.record(at, observation);
    }

    /// Files `observation` under the founding the node's data dir belongs
    /// to (`host::THIS_FOUNDING` or another).
    pub(crate) fn observe_in(&mut self, founding: u64, observation: NodeObservation) {
        if founding == super::host::THIS_FOUNDING {
            self.observe(observation);
        } else {
            self.observe_foreign(observation);
        }
    }

    pub(crate) fn invoke(&mut self, client: ClientId, input: OpInput) -> OpId {
        let at = self.now_ns();
        let line = format!("c{client} invoke {input}");
        self.trace_line(at, &line);
        let id = self.clients.invoke(client, at, input);
        if self.verbose {
            let what = format!("#{id} {} ...", self.clients.ops[id].input);
            self.timeline
                .record(at, TimelineEvent::Client { client, what });
        }
        id
    }

    pub(crate) fn complete(&mut self, op: OpId, output: OpOutput) {
        let at = self.now_ns();
        let Some(client) = self.clients.ops.get(op).map(|o| o.client) else {
            return;
        };
        let line = format!("c{client} #{op} -> {output}");
        self.trace_line(at, &line);
        let what = format!("#{op} {} -> {output}", self.clients.ops[op].input);
        self.clients.complete(op, at, output);
        self.timeline
            .record(at, TimelineEvent::Client { client, what });
    }

    /// The op ended without a known outcome (timeout, lost connection).
    pub(crate) fn unknown(&mut self, op: OpId, why: &str) {
        self.note_ending(op, &format!("unknown outcome ({why})"));
    }

    /// The op was refused before it was proposed (503 to a client without
    /// idempotency keys, whose client library then gave up or did not
    /// resend): it must have had no effect.
    pub(crate) fn not_applied(&mut self, op: OpId, why: &str) {
        if self.note_ending(op, &format!("not applied ({why})")) {
            self.not_applied_ops.insert(op);
        }
    }

    /// Traces and draws an op that ended without an answer to check;
    /// false for an unknown op id.
    fn note_ending(&mut self, op: OpId, ending: &str) -> bool {
        let at = self.now_ns();
        let Some(o) = self.clients.ops.get(op) else {
            return false;
        };
        let client = o.client;
        let what = format!("#{op} {} -> {ending}", o.input);
        self.trace_line(at, &what);
        self.timeline
            .record(at, TimelineEvent::Client { client, what });
        true
    }

    pub(crate) fn lock_event(&mut self, event: LockEvent) {
        let at = self.now_ns();
        let line = format!("{event:?}");
        self.trace_line(at, &line);
        self.locks.record(at, event);
    }

    pub(crate) fn resource_write(
        &mut self,
        client: ClientId,
        resource: &str,
        lock: &str,
        token: u64,
    ) -> WriteOutcome {
        let at = self.now_ns();
        let outcome = self.resource.write(at, resource, lock, token, client);
        let line = format!("c{client} resource {resource} {lock}@{token} -> {outcome:?}");
        self.trace_line(at, &line);
        if self.verbose {
            self.timeline.record(
                at,
                TimelineEvent::Client {
                    client,
                    what: format!("downstream {resource} with {lock}@{token}: {outcome:?}"),
                },
            );
        }
        outcome
    }

    pub(crate) fn session_opened(&mut self, client: ClientId, session: &str) {
        let at = self.now_ns();
        self.sessions
            .insert(session.to_owned(), (client, at, false));
    }

    /// The latest moment the session is certainly known to have been alive:
    /// the invocation of its last successful operation (an op's effect lies
    /// after its invocation), or its creation.
    fn last_known_alive_ns(&self, session: &str) -> SimTimeNs {
        let opened = self.sessions.get(session).map_or(0, |s| s.1);
        self.clients
            .ops
            .iter()
            .filter(|op| match (&op.input, op.known_output()) {
                (
                    OpInput::Lock(LockInput::Acquire { session: s, .. }),
                    Some(OpOutput::Lock(LockOutput::Granted { .. } | LockOutput::Held)),
                )
                | (
                    OpInput::Lock(LockInput::Release { session: s, .. }),
                    Some(OpOutput::Lock(LockOutput::Released)),
                ) => s == session,
                _ => false,
            })
            .map(|op| op.invoked_ns)
            .fold(opened, u64::max)
    }

    /// Records that `session` ended: an `EndSession` op from the last moment
    /// it was known alive, completed now if `known` (a 410 or a successful
    /// delete), else left open (it may have ended any time after, or not).
    /// Once per session.
    pub(crate) fn session_end_op(&mut self, session: &str, known: bool) {
        let Some(&(client, _, recorded)) = self.sessions.get(session) else {
            return;
        };
        if recorded {
            return;
        }
        let since = self.last_known_alive_ns(session);
        let op = self.invoke(
            client,
            OpInput::Lock(LockInput::EndSession {
                session: session.to_owned(),
            }),
        );
        self.clients.ops[op].invoked_ns = since;
        if known {
            self.complete(op, OpOutput::Lock(LockOutput::Released));
        }
        if let Some(s) = self.sessions.get_mut(session) {
            s.2 = true;
        }
    }

    /// At the end of the workload: every session whose end was not seen may
    /// have expired (or been deleted by a dropped `Session`) unseen.
    pub(crate) fn close_unseen_sessions(&mut self) {
        let open: Vec<String> = self
            .sessions
            .iter()
            .filter(|(_, s)| !s.2)
            .map(|(id, _)| id.clone())
            .collect();
        for session in open {
            self.session_end_op(&session, false);
        }
    }

    pub(crate) fn harness(&mut self, what: impl Into<String>) {
        self.event(TimelineEvent::Harness { what: what.into() });
    }
}
