//! What a simulated run records: plain data that the harness appends to while
//! the run goes on and that the checkers in [`crate::check`] read afterwards.
//!
//! Nothing here knows about madsim, HTTP or the real client: the harness
//! translates what it sees into these types, so the checkers stay pure and can
//! be tested with hand-made histories. Times are simulated nanoseconds since
//! the start of the run (`*_ns`); ids are positions in the recording order so
//! that a violation can point at "event #17".

use std::fmt;

pub use deadbolt_core::raft::{LogIndex, NodeId, Term};

/// Simulated time: nanoseconds since the start of the run.
pub type SimTimeNs = u64;
/// A simulated client (one task issuing requests one at a time).
pub type ClientId = u64;
/// A fencing token as the cluster hands it out (the log index of the grant).
pub type FencingToken = u64;
/// A session id exactly as the cluster returned it.
pub type SessionId = String;
/// Position of an event in the vector it was recorded into.
pub type EventId = usize;
/// Position of a client operation in [`ClientHistory::ops`].
pub type OpId = usize;

/// Renders a simulated time as milliseconds with microsecond precision.
pub fn fmt_time(at_ns: SimTimeNs) -> String {
    format!("{}.{:06}ms", at_ns / 1_000_000, at_ns % 1_000_000)
}

// ---------------------------------------------------------------------------
// Raft observations
// ---------------------------------------------------------------------------

/// Something one node reported about its Raft state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeObservation {
    /// The node won an election for `term`.
    BecameLeader { node: NodeId, term: Term },
    /// The node appended an entry to its log (not necessarily committed).
    /// Optional: feeds the log-matching check on uncommitted entries.
    Appended {
        node: NodeId,
        index: LogIndex,
        term: Term,
        entry_hash: u64,
    },
    /// The node deleted its log entries from `from` on (a conflict with
    /// the leader's log); the `Appended` entries that replace them follow.
    Truncated { node: NodeId, from: LogIndex },
    /// The node applied a committed entry to its state machine.
    Applied {
        node: NodeId,
        index: LogIndex,
        term: Term,
        entry_hash: u64,
    },
    /// The node's state machine was replaced by a snapshot covering every entry
    /// up to `last_index` (installed from the leader or restored at restart);
    /// the node's next `Applied` is `last_index + 1`.
    SnapshotRestored {
        node: NodeId,
        last_index: LogIndex,
        last_term: Term,
    },
    /// The node's commit index is now `index`.
    CommitIndex { node: NodeId, index: LogIndex },
    /// The node crashed and started again: its volatile state (commit index,
    /// applied position) starts over and it re-applies from snapshot and log.
    Restarted { node: NodeId },
}

impl NodeObservation {
    pub fn node(&self) -> NodeId {
        match self {
            NodeObservation::BecameLeader { node, .. }
            | NodeObservation::Appended { node, .. }
            | NodeObservation::Truncated { node, .. }
            | NodeObservation::Applied { node, .. }
            | NodeObservation::SnapshotRestored { node, .. }
            | NodeObservation::CommitIndex { node, .. }
            | NodeObservation::Restarted { node } => *node,
        }
    }
}

impl fmt::Display for NodeObservation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NodeObservation::BecameLeader { node, term } => {
                write!(f, "n{node} became leader of term {term}")
            }
            NodeObservation::Appended {
                node,
                index,
                term,
                entry_hash,
            } => write!(
                f,
                "n{node} appended index {index} term {term} hash {entry_hash:#018x}"
            ),
            NodeObservation::Truncated { node, from } => {
                write!(f, "n{node} truncated its log from index {from}")
            }
            NodeObservation::Applied {
                node,
                index,
                term,
                entry_hash,
            } => write!(
                f,
                "n{node} applied index {index} term {term} hash {entry_hash:#018x}"
            ),
            NodeObservation::SnapshotRestored {
                node,
                last_index,
                last_term,
            } => write!(
                f,
                "n{node} restored snapshot up to index {last_index} term {last_term}"
            ),
            NodeObservation::CommitIndex { node, index } => {
                write!(f, "n{node} commit index {index}")
            }
            NodeObservation::Restarted { node } => write!(f, "n{node} restarted"),
        }
    }
}

/// One recorded item with the simulated time it was seen at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recorded<T> {
    pub at_ns: SimTimeNs,
    pub event: T,
}

/// Every Raft observation of a run, in the order the harness saw them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RaftHistory {
    pub events: Vec<Recorded<NodeObservation>>,
}

impl RaftHistory {
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends an observation and returns its event id.
    pub fn record(&mut self, at_ns: SimTimeNs, event: NodeObservation) -> EventId {
        self.events.push(Recorded { at_ns, event });
        self.events.len() - 1
    }
}

// ---------------------------------------------------------------------------
// Client operations (the input of the linearizability checker)
// ---------------------------------------------------------------------------

/// `exclusive` or `shared`, as in the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LockMode {
    Exclusive,
    Shared,
}

impl fmt::Display for LockMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LockMode::Exclusive => "exclusive",
            LockMode::Shared => "shared",
        })
    }
}

/// The optional `"lock"` + `"fencing_token"` pair of a fenced mutation.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Fence {
    pub lock: String,
    pub token: FencingToken,
}

/// A lock operation as the client sent it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LockInput {
    Acquire {
        lock: String,
        session: SessionId,
        mode: LockMode,
    },
    Release {
        lock: String,
        session: SessionId,
        token: FencingToken,
    },
    /// `GET /v1/locks/{name}`.
    Read { lock: String },
    /// The session ended: `DELETE /v1/sessions/{id}` by a client, or an expiry
    /// decided by the cluster (invoke = the last moment the session was known
    /// alive, completion = the first moment it was known gone, e.g. a 410).
    /// It applies to every lock, so the checker copies it into each lock's
    /// sub-history that mentions the session.
    EndSession { session: SessionId },
}

/// How a lock operation answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LockOutput {
    Granted {
        token: FencingToken,
    },
    /// 409 `lock_held`.
    Held,
    /// 200 on release or session end.
    Released,
    /// Any refusal of a release (`not_holder`, `stale_token`,
    /// `session_expired`); the model requires only that it had no effect and
    /// that the release could not have succeeded.
    ReleaseRefused,
    /// 410 `session_expired` on acquire.
    SessionExpired,
    /// The holders a read returned, as (session, mode, token).
    State {
        holders: Vec<(SessionId, LockMode, FencingToken)>,
    },
}

/// A fenced-KV operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KvInput {
    Put {
        key: String,
        value: String,
        fence: Option<Fence>,
    },
    Append {
        key: String,
        value: String,
        fence: Option<Fence>,
    },
    Get {
        key: String,
    },
}

/// How a KV operation answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KvOutput {
    /// 200: `size` is the value's length in bytes after the write;
    /// `last_token` the key's token after it (an unfenced write leaves it
    /// unchanged; `None` and `Some(0)` both mean "never fenced").
    Written {
        size: usize,
        last_token: Option<FencingToken>,
    },
    /// 409 `stale_token` or `not_holder`: the write must have had no effect.
    Refused,
    Read {
        value: String,
        last_token: Option<FencingToken>,
    },
    /// 404 on get.
    NotFound,
}

/// A replicated-stack operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StackInput {
    Push {
        stack: String,
        value: String,
        fence: Option<Fence>,
    },
    Pop {
        stack: String,
        fence: Option<Fence>,
    },
    /// `GET /v1/stacks/{name}`.
    Peek {
        stack: String,
    },
}

/// How a stack operation answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StackOutput {
    Pushed {
        size: usize,
    },
    Popped {
        value: String,
        size: usize,
    },
    /// 409 `stack_empty`.
    Empty,
    /// 404 (never pushed): the API and the model treat it as empty.
    NotFound,
    /// Fenced mutation refused: no effect.
    Refused,
    Peeked {
        size: usize,
        top: Option<String>,
    },
}

/// Any client operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpInput {
    Lock(LockInput),
    Kv(KvInput),
    Stack(StackInput),
}

/// Any client answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpOutput {
    Lock(LockOutput),
    Kv(KvOutput),
    Stack(StackOutput),
}

/// One client operation from invocation to (maybe) completion.
///
/// `completed_ns == None` (or `output == None`) means the outcome is unknown
/// (504, connection lost, run ended): the operation may or may not have taken
/// effect, at any point after `invoked_ns`. Requests known not to have been
/// applied (503 before proposing) should simply not be recorded. A request
/// retried with the same idempotency key is one operation spanning all tries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientOp {
    pub client: ClientId,
    pub invoked_ns: SimTimeNs,
    pub completed_ns: Option<SimTimeNs>,
    pub input: OpInput,
    pub output: Option<OpOutput>,
}

impl ClientOp {
    /// The answer, only if the operation completed with one.
    pub fn known_output(&self) -> Option<&OpOutput> {
        self.completed_ns.and(self.output.as_ref())
    }
}

/// The client-visible history of a run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientHistory {
    pub ops: Vec<ClientOp>,
}

impl ClientHistory {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records an invocation; complete it later with [`ClientHistory::complete`].
    pub fn invoke(&mut self, client: ClientId, invoked_ns: SimTimeNs, input: OpInput) -> OpId {
        self.ops.push(ClientOp {
            client,
            invoked_ns,
            completed_ns: None,
            input,
            output: None,
        });
        self.ops.len() - 1
    }

    /// Records the answer of `op`. Unknown ids are ignored (returns false)
    /// rather than panicking: the harness is outside data to this module.
    pub fn complete(&mut self, op: OpId, completed_ns: SimTimeNs, output: OpOutput) -> bool {
        match self.ops.get_mut(op) {
            Some(o) => {
                o.completed_ns = Some(completed_ns);
                o.output = Some(output);
                true
            }
            None => false,
        }
    }
}

// ---------------------------------------------------------------------------
// Lock holds as granted by the cluster (the input of the lock-safety checker)
// ---------------------------------------------------------------------------

/// What the harness saw about lock ownership.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LockEvent {
    /// A client received a grant (record at the moment the 200 arrived).
    Granted {
        lock: String,
        session: SessionId,
        client: ClientId,
        mode: LockMode,
        token: FencingToken,
    },
    /// A client sent a release. The hold ends here for the checker: the
    /// release may commit any time after this, and its acknowledgement can
    /// arrive after the next holder's grant, so the ack is too late a bound.
    ReleaseSent {
        lock: String,
        session: SessionId,
        token: FencingToken,
    },
    /// The cluster ended the session (expiry or delete): record at the first
    /// moment any node applied that command, which precedes every grant that
    /// depends on it.
    SessionEnded { session: SessionId },
    /// The cluster granted `token` for `lock` (record at the first apply on any
    /// node). Feeds the "no invented tokens" part of the fencing check.
    TokenIssued { lock: String, token: FencingToken },
}

/// Every lock event of a run, in recording order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LockHistory {
    pub events: Vec<Recorded<LockEvent>>,
}

impl LockHistory {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn record(&mut self, at_ns: SimTimeNs, event: LockEvent) -> EventId {
        self.events.push(Recorded { at_ns, event });
        self.events.len() - 1
    }
}

// ---------------------------------------------------------------------------
// Readable renderings (used by violation reports)
// ---------------------------------------------------------------------------

fn fmt_fence(fence: &Option<Fence>) -> String {
    match fence {
        Some(Fence { lock, token }) => format!(", fenced by {lock}@{token}"),
        None => String::new(),
    }
}

impl fmt::Display for OpInput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OpInput::Lock(LockInput::Acquire {
                lock,
                session,
                mode,
            }) => write!(f, "acquire({lock}, {mode}, session {session})"),
            OpInput::Lock(LockInput::Release {
                lock,
                session,
                token,
            }) => write!(f, "release({lock}, token {token}, session {session})"),
            OpInput::Lock(LockInput::Read { lock }) => write!(f, "read-lock({lock})"),
            OpInput::Lock(LockInput::EndSession { session }) => {
                write!(f, "end-session({session})")
            }
            OpInput::Kv(KvInput::Put { key, value, fence }) => {
                write!(f, "put({key}, {value:?}{})", fmt_fence(fence))
            }
            OpInput::Kv(KvInput::Append { key, value, fence }) => {
                write!(f, "append({key}, {value:?}{})", fmt_fence(fence))
            }
            OpInput::Kv(KvInput::Get { key }) => write!(f, "get({key})"),
            OpInput::Stack(StackInput::Push {
                stack,
                value,
                fence,
            }) => write!(f, "push({stack}, {value:?}{})", fmt_fence(fence)),
            OpInput::Stack(StackInput::Pop { stack, fence }) => {
                write!(f, "pop({stack}{})", fmt_fence(fence))
            }
            OpInput::Stack(StackInput::Peek { stack }) => write!(f, "peek({stack})"),
        }
    }
}

impl fmt::Display for OpOutput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OpOutput::Lock(LockOutput::Granted { token }) => write!(f, "granted token {token}"),
            OpOutput::Lock(LockOutput::Held) => f.write_str("lock_held"),
            OpOutput::Lock(LockOutput::Released) => f.write_str("released"),
            OpOutput::Lock(LockOutput::ReleaseRefused) => f.write_str("release refused"),
            OpOutput::Lock(LockOutput::SessionExpired) => f.write_str("session_expired"),
            OpOutput::Lock(LockOutput::State { holders }) => {
                let hs: Vec<String> = holders
                    .iter()
                    .map(|(s, m, t)| format!("{s}:{m}@{t}"))
                    .collect();
                write!(f, "holders [{}]", hs.join(", "))
            }
            OpOutput::Kv(KvOutput::Written { size, last_token }) => {
                write!(f, "ok size {size} last_token {last_token:?}")
            }
            OpOutput::Kv(KvOutput::Refused) => f.write_str("refused (stale_token/not_holder)"),
            OpOutput::Kv(KvOutput::Read { value, last_token }) => {
                write!(f, "{value:?} last_token {last_token:?}")
            }
            OpOutput::Kv(KvOutput::NotFound) => f.write_str("not_found"),
            OpOutput::Stack(StackOutput::Pushed { size }) => write!(f, "ok size {size}"),
            OpOutput::Stack(StackOutput::Popped { value, size }) => {
                write!(f, "{value:?} size {size}")
            }
            OpOutput::Stack(StackOutput::Empty) => f.write_str("stack_empty"),
            OpOutput::Stack(StackOutput::NotFound) => f.write_str("not_found"),
            OpOutput::Stack(StackOutput::Refused) => {
                f.write_str("refused (stale_token/not_holder)")
            }
            OpOutput::Stack(StackOutput::Peeked { size, top }) => {
                write!(f, "size {size} top {top:?}")
            }
        }
    }
}

impl fmt::Display for ClientOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let end = match self.completed_ns {
            Some(c) => fmt_time(c),
            None => "?".to_owned(),
        };
        write!(
            f,
            "client {} [{} .. {}] {} -> ",
            self.client,
            fmt_time(self.invoked_ns),
            end,
            self.input
        )?;
        match self.known_output() {
            Some(o) => o.fmt(f),
            None => f.write_str("(unknown outcome)"),
        }
    }
}
