//! Linearizability of the client-visible history against sequential models of
//! locks, fenced KV and stacks: a Wing–Gong search (as in Porcupine) per
//! lock/key/stack, memoised on (linearized set, model state), bounded in
//! steps, with a sound shrinker that reports a minimal failing sub-history.
//!
//! Operations with an unknown outcome may take effect at any point after their
//! invocation or never; they are never required to be linearized and accept
//! any output their model allows.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use crate::history::{
    ClientHistory, ClientOp, Fence, FencingToken, KvInput, KvOutput, LockInput, LockMode,
    LockOutput, OpId, OpInput, OpOutput, SessionId, SimTimeNs, StackInput, StackOutput,
};

/// Limits of the search.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinearizabilityConfig {
    /// Search states explored or stored per partition (and per shrink
    /// attempt) before the answer is "inconclusive"; memory is proportional.
    pub steps_max: u64,
    /// Searches the shrinker may run per failing partition.
    pub shrink_attempts_max: usize,
}

impl Default for LinearizabilityConfig {
    fn default() -> Self {
        Self {
            steps_max: 200_000,
            shrink_attempts_max: 64,
        }
    }
}

/// The object an operation touches; histories are checked per object.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ObjectKey {
    Lock(String),
    Key(String),
    Stack(String),
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ObjectKey::Lock(n) => write!(f, "lock {n:?}"),
            ObjectKey::Key(n) => write!(f, "key {n:?}"),
            ObjectKey::Stack(n) => write!(f, "stack {n:?}"),
        }
    }
}

/// A partition that is not linearizable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinearizabilityViolation {
    pub object: ObjectKey,
    /// Operations of the object in the whole history.
    pub ops_in_partition: usize,
    /// A small sub-history that is already not linearizable, as (op id in the
    /// client history, the op as checked). Ops whose answers arrived after
    /// the cut are shown with an unknown outcome, which is what was checked.
    pub minimal: Vec<(OpId, ClientOp)>,
    /// The longest linearization of `minimal` the search found.
    pub longest_linearization: Vec<OpId>,
}

impl fmt::Display for LinearizabilityViolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{} is not linearizable ({} ops; a failing sub-history of {} ops follows)",
            self.object,
            self.ops_in_partition,
            self.minimal.len()
        )?;
        for (id, op) in &self.minimal {
            writeln!(f, "    #{id:<5} {op}")?;
        }
        let order: Vec<String> = self
            .longest_linearization
            .iter()
            .map(|id| format!("#{id}"))
            .collect();
        write!(
            f,
            "    longest valid order: [{}]; no remaining op can come next",
            order.join(", ")
        )
    }
}

/// What the checker concluded over all partitions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LinearizabilityOutcome {
    pub partitions_checked: usize,
    pub violations: Vec<LinearizabilityViolation>,
    /// Partitions where the step bound was hit, described for the report.
    pub inconclusive: Vec<String>,
    /// Search states explored in total (main searches only).
    pub steps: u64,
}

/// Checks every lock, key and stack of `history` separately.
pub fn check_linearizability(
    history: &ClientHistory,
    config: &LinearizabilityConfig,
) -> LinearizabilityOutcome {
    let mut outcome = LinearizabilityOutcome::default();
    for (object, ids) in partition(history) {
        outcome.partitions_checked += 1;
        let ops: Vec<(OpId, ClientOp)> = ids
            .iter()
            .filter_map(|&id| history.ops.get(id).map(|op| (id, op.clone())))
            .collect();
        let result = match object {
            ObjectKey::Lock(_) => check_partition(&LockModel, &object, &ops, config),
            ObjectKey::Key(_) => check_partition(&KvModel, &object, &ops, config),
            ObjectKey::Stack(_) => check_partition(&StackModel, &object, &ops, config),
        };
        outcome.steps += result.steps;
        match result.verdict {
            PartitionVerdict::Ok => {}
            PartitionVerdict::Inconclusive => outcome.inconclusive.push(format!(
                "{object}: {} ops, step bound {} hit",
                ops.len(),
                config.steps_max
            )),
            PartitionVerdict::Violation(v) => outcome.violations.push(*v),
        }
    }
    outcome
}

/// Groups op ids by object. A session end touches every lock: it is copied
/// into each lock partition that mentions its session.
fn partition(history: &ClientHistory) -> BTreeMap<ObjectKey, Vec<OpId>> {
    let mut parts: BTreeMap<ObjectKey, Vec<OpId>> = BTreeMap::new();
    let mut session_locks: BTreeMap<&SessionId, BTreeSet<String>> = BTreeMap::new();
    let mut session_ends: Vec<(OpId, &SessionId)> = Vec::new();
    for (id, op) in history.ops.iter().enumerate() {
        let key = match &op.input {
            OpInput::Lock(LockInput::Acquire { lock, session, .. })
            | OpInput::Lock(LockInput::Release { lock, session, .. }) => {
                session_locks
                    .entry(session)
                    .or_default()
                    .insert(lock.clone());
                ObjectKey::Lock(lock.clone())
            }
            OpInput::Lock(LockInput::Read { lock }) => ObjectKey::Lock(lock.clone()),
            OpInput::Lock(LockInput::EndSession { session }) => {
                session_ends.push((id, session));
                continue;
            }
            OpInput::Kv(KvInput::Put { key, .. })
            | OpInput::Kv(KvInput::Append { key, .. })
            | OpInput::Kv(KvInput::Get { key }) => ObjectKey::Key(key.clone()),
            OpInput::Stack(StackInput::Push { stack, .. })
            | OpInput::Stack(StackInput::Pop { stack, .. })
            | OpInput::Stack(StackInput::Peek { stack }) => ObjectKey::Stack(stack.clone()),
        };
        parts.entry(key).or_default().push(id);
    }
    for (id, session) in session_ends {
        for lock in session_locks.get(session).into_iter().flatten() {
            parts
                .entry(ObjectKey::Lock(lock.clone()))
                .or_default()
                .push(id);
        }
    }
    for ids in parts.values_mut() {
        ids.sort_unstable();
    }
    parts
}

// ---------------------------------------------------------------------------
// Sequential models
// ---------------------------------------------------------------------------

/// A sequential specification. `step` returns every state the object can be
/// in after `input` took effect in `state` and answered `output` (`None`:
/// unknown answer, any allowed); an empty vector means "impossible".
trait Model {
    type State: Clone + Ord + fmt::Debug;
    fn init(&self) -> Self::State;
    fn step(
        &self,
        state: &Self::State,
        input: &OpInput,
        output: Option<&OpOutput>,
    ) -> Vec<Self::State>;
    /// True if the operation cannot have changed the state whatever the state
    /// was: dropping it from a history cannot turn a linearizable history
    /// into a non-linearizable one, so the shrinker may remove it.
    fn has_no_effect(&self, input: &OpInput, output: Option<&OpOutput>) -> bool;
}

/// A fenced write may be accepted only with a token at least the object's
/// `last_token` (0 = never fenced). Whether the token is also the current
/// holder's is a property of the lock, not visible per object: refusals of
/// fresh tokens are therefore allowed.
fn fence_admits(fence: &Option<Fence>, last_token: FencingToken) -> bool {
    fence.as_ref().is_none_or(|f| f.token >= last_token)
}

fn token_after(fence: &Option<Fence>, last_token: FencingToken) -> FencingToken {
    fence.as_ref().map_or(last_token, |f| f.token)
}

#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord)]
struct KvState {
    value: Option<String>,
    /// 0 when never fenced; the API's `null` and `0` are treated alike.
    last_token: FencingToken,
}

struct KvModel;

impl Model for KvModel {
    type State = KvState;

    fn init(&self) -> KvState {
        KvState::default()
    }

    fn step(&self, s: &KvState, input: &OpInput, output: Option<&OpOutput>) -> Vec<KvState> {
        let OpInput::Kv(input) = input else {
            return vec![];
        };
        let output = match output {
            Some(OpOutput::Kv(o)) => Some(o),
            Some(_) => return vec![],
            None => None,
        };
        match input {
            KvInput::Put { value, fence, .. } | KvInput::Append { value, fence, .. } => {
                let new_value = match input {
                    KvInput::Append { .. } => {
                        format!("{}{value}", s.value.as_deref().unwrap_or(""))
                    }
                    _ => value.clone(),
                };
                let written = KvState {
                    last_token: token_after(fence, s.last_token),
                    value: Some(new_value),
                };
                let may_write = fence_admits(fence, s.last_token);
                match output {
                    Some(KvOutput::Written { size, last_token }) => {
                        let matches = *size == written.value.as_ref().map_or(0, String::len)
                            && last_token.unwrap_or(0) == written.last_token;
                        if may_write && matches {
                            vec![written]
                        } else {
                            vec![]
                        }
                    }
                    Some(KvOutput::Refused) if fence.is_some() => vec![s.clone()],
                    Some(_) => vec![],
                    None => {
                        let mut next = Vec::new();
                        if may_write {
                            next.push(written);
                        }
                        if fence.is_some() {
                            next.push(s.clone());
                        }
                        next
                    }
                }
            }
            KvInput::Get { .. } => {
                let ok = match (output, &s.value) {
                    (None, _) => true,
                    (Some(KvOutput::Read { value, last_token }), Some(v)) => {
                        value == v && last_token.unwrap_or(0) == s.last_token
                    }
                    (Some(KvOutput::NotFound), None) => true,
                    _ => false,
                };
                if ok {
                    vec![s.clone()]
                } else {
                    vec![]
                }
            }
        }
    }

    fn has_no_effect(&self, input: &OpInput, output: Option<&OpOutput>) -> bool {
        matches!(input, OpInput::Kv(KvInput::Get { .. }))
            || matches!(output, Some(OpOutput::Kv(KvOutput::Refused)))
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord)]
struct StackState {
    items: Vec<String>,
    last_token: FencingToken,
}

struct StackModel;

impl Model for StackModel {
    type State = StackState;

    fn init(&self) -> StackState {
        StackState::default()
    }

    fn step(&self, s: &StackState, input: &OpInput, output: Option<&OpOutput>) -> Vec<StackState> {
        let OpInput::Stack(input) = input else {
            return vec![];
        };
        let output = match output {
            Some(OpOutput::Stack(o)) => Some(o),
            Some(_) => return vec![],
            None => None,
        };
        // A 404 and an empty stack are the same to the model: a stack whose
        // last element was popped may or may not still "exist".
        let empty_ok = |o: &StackOutput| {
            s.items.is_empty() && matches!(o, StackOutput::Empty | StackOutput::NotFound)
        };
        match input {
            StackInput::Push { value, fence, .. } => {
                let mut pushed = s.clone();
                pushed.items.push(value.clone());
                pushed.last_token = token_after(fence, s.last_token);
                let may = fence_admits(fence, s.last_token);
                match output {
                    Some(StackOutput::Pushed { size }) if may && *size == pushed.items.len() => {
                        vec![pushed]
                    }
                    Some(StackOutput::Refused) if fence.is_some() => vec![s.clone()],
                    Some(_) => vec![],
                    None => {
                        let mut next = Vec::new();
                        if may {
                            next.push(pushed);
                        }
                        if fence.is_some() {
                            next.push(s.clone());
                        }
                        next
                    }
                }
            }
            StackInput::Pop { fence, .. } => {
                let may = fence_admits(fence, s.last_token);
                let popped = s.items.last().map(|top| {
                    let mut p = s.clone();
                    p.items.pop();
                    p.last_token = token_after(fence, s.last_token);
                    (top, p)
                });
                match output {
                    Some(StackOutput::Popped { value, size }) => match popped {
                        Some((top, p)) if may && top == value && *size == p.items.len() => {
                            vec![p]
                        }
                        _ => vec![],
                    },
                    Some(StackOutput::Refused) if fence.is_some() => vec![s.clone()],
                    Some(o) if empty_ok(o) => vec![s.clone()],
                    Some(_) => vec![],
                    None => {
                        let mut next = Vec::new();
                        match popped {
                            Some((_, p)) if may => next.push(p),
                            Some(_) => {}
                            None => next.push(s.clone()),
                        }
                        if fence.is_some() && !next.contains(s) {
                            next.push(s.clone());
                        }
                        next
                    }
                }
            }
            StackInput::Peek { .. } => {
                let ok = match output {
                    None => true,
                    Some(StackOutput::Peeked { size, top }) => {
                        *size == s.items.len() && top.as_ref() == s.items.last()
                    }
                    Some(o) => empty_ok(o),
                };
                if ok {
                    vec![s.clone()]
                } else {
                    vec![]
                }
            }
        }
    }

    fn has_no_effect(&self, input: &OpInput, output: Option<&OpOutput>) -> bool {
        matches!(input, OpInput::Stack(StackInput::Peek { .. }))
            || matches!(
                output,
                Some(OpOutput::Stack(
                    StackOutput::Refused | StackOutput::Empty | StackOutput::NotFound
                ))
            )
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord)]
struct LockState {
    /// session -> (mode, token; None when granted by an op whose answer was
    /// lost, so its token is unknown).
    holders: BTreeMap<SessionId, (LockMode, Option<FencingToken>)>,
    /// Largest token granted so far: a new grant must be larger (tokens are
    /// the log index of the grant, strictly increasing cluster-wide).
    max_token: FencingToken,
    /// Sessions that ended; they can never be granted again.
    ended: BTreeSet<SessionId>,
}

struct LockModel;

impl LockModel {
    /// May `session` be newly granted `mode` given the other holders?
    fn compatible(s: &LockState, session: &SessionId, mode: LockMode) -> bool {
        s.holders
            .iter()
            .filter(|(h, _)| *h != session)
            .all(|(_, (m, _))| mode == LockMode::Shared && *m == LockMode::Shared)
    }

    /// The states an acquire of `mode` by `session` may lead to.
    fn acquire(
        s: &LockState,
        session: &SessionId,
        mode: LockMode,
        output: Option<&LockOutput>,
    ) -> Vec<LockState> {
        let already = s.holders.get(session).filter(|(m, _)| m == &mode);
        let fresh_ok = !s.ended.contains(session) && Self::compatible(s, session, mode);
        // Waiters are not modelled: a `lock_held` is allowed whenever
        // someone else holds the lock (a FIFO queue ahead may also
        // block a compatible request), or when the session holds it
        // in the other mode (whether a mode change is granted is not
        // part of the contract).
        let held_ok = s.holders.keys().any(|h| h != session)
            || s.holders.get(session).is_some_and(|(m, _)| m != &mode);
        match output {
            Some(LockOutput::Granted { token }) => match already {
                // Re-acquiring in the same mode returns the same token.
                Some((_, Some(t))) if t == token => vec![s.clone()],
                Some((_, None)) => {
                    let mut n = s.clone();
                    n.holders.insert(session.clone(), (mode, Some(*token)));
                    n.max_token = n.max_token.max(*token);
                    vec![n]
                }
                Some(_) => vec![],
                // Shared waiters granted by one apply (a release or
                // an expiry) share that entry's index as token.
                None if fresh_ok
                    && (*token > s.max_token
                        || (mode == LockMode::Shared
                            && *token == s.max_token
                            && s.holders
                                .values()
                                .any(|(m, t)| *m == LockMode::Shared && *t == Some(*token)))) =>
                {
                    let mut n = s.clone();
                    n.holders.insert(session.clone(), (mode, Some(*token)));
                    n.max_token = *token;
                    vec![n]
                }
                None => vec![],
            },
            Some(LockOutput::Held) if held_ok => vec![s.clone()],
            // The harness may not see every expiry; the refusal itself
            // has no effect.
            Some(LockOutput::SessionExpired) => vec![s.clone()],
            Some(_) => vec![],
            None => {
                let mut next = vec![s.clone()];
                if already.is_none() && fresh_ok {
                    let mut n = s.clone();
                    n.holders.insert(session.clone(), (mode, None));
                    next.push(n);
                }
                next
            }
        }
    }

    /// The states a release of `token` by `session` may lead to.
    fn release(
        s: &LockState,
        session: &SessionId,
        token: FencingToken,
        output: Option<&LockOutput>,
    ) -> Vec<LockState> {
        let held = s
            .holders
            .get(session)
            .is_some_and(|(_, t)| t.is_none_or(|t| t == token));
        let known_held = s
            .holders
            .get(session)
            .is_some_and(|(_, t)| *t == Some(token));
        let mut released = s.clone();
        released.holders.remove(session);
        match output {
            Some(LockOutput::Released) if held => vec![released],
            Some(LockOutput::ReleaseRefused) if !known_held => vec![s.clone()],
            Some(_) => vec![],
            None if held => vec![released, s.clone()],
            None => vec![s.clone()],
        }
    }

    /// A read must show exactly the holders (and learns unknown tokens).
    fn read(s: &LockState, output: Option<&LockOutput>) -> Vec<LockState> {
        match output {
            None => vec![s.clone()],
            Some(LockOutput::State { holders }) => {
                let mut n = s.clone();
                if holders.len() != s.holders.len() {
                    return vec![];
                }
                for (session, mode, token) in holders {
                    match s.holders.get(session) {
                        Some((m, t)) if m == mode && t.is_none_or(|t| t == *token) => {
                            n.holders.insert(session.clone(), (*mode, Some(*token)));
                        }
                        _ => return vec![],
                    }
                }
                vec![n]
            }
            Some(_) => vec![],
        }
    }
}

impl Model for LockModel {
    type State = LockState;

    fn init(&self) -> LockState {
        LockState::default()
    }

    fn step(&self, s: &LockState, input: &OpInput, output: Option<&OpOutput>) -> Vec<LockState> {
        let OpInput::Lock(input) = input else {
            return vec![];
        };
        let output = match output {
            Some(OpOutput::Lock(o)) => Some(o),
            Some(_) => return vec![],
            None => None,
        };
        match input {
            LockInput::Acquire { session, mode, .. } => Self::acquire(s, session, *mode, output),
            LockInput::Release { session, token, .. } => Self::release(s, session, *token, output),
            LockInput::Read { .. } => Self::read(s, output),
            LockInput::EndSession { session } => {
                let mut n = s.clone();
                n.holders.remove(session);
                n.ended.insert(session.clone());
                vec![n]
            }
        }
    }

    fn has_no_effect(&self, input: &OpInput, output: Option<&OpOutput>) -> bool {
        matches!(input, OpInput::Lock(LockInput::Read { .. }))
            || matches!(
                output,
                Some(OpOutput::Lock(
                    LockOutput::Held | LockOutput::SessionExpired | LockOutput::ReleaseRefused
                ))
            )
    }
}

// ---------------------------------------------------------------------------
// The search
// ---------------------------------------------------------------------------

/// A fixed-size set of op positions.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Bits(Vec<u64>);

impl Bits {
    fn new(n: usize) -> Self {
        Bits(vec![0; n.div_ceil(64)])
    }
    fn contains(&self, i: usize) -> bool {
        self.0[i / 64] & (1 << (i % 64)) != 0
    }
    fn insert(&mut self, i: usize) {
        self.0[i / 64] |= 1 << (i % 64);
    }
    fn count(&self) -> u32 {
        self.0.iter().map(|w| w.count_ones()).sum()
    }
}

enum SearchResult {
    Linearizable,
    /// Positions (into the searched slice) of the longest linearization found.
    NotLinearizable {
        longest: Vec<usize>,
    },
    Inconclusive,
}

/// Wing–Gong search over `ops` (any order). An op may be linearized next
/// only if it was invoked no later than every not-yet-linearized completed
/// op completed; the search succeeds once every completed op is linearized.
fn search<M: Model>(model: &M, ops: &[ClientOp], steps_max: u64, steps: &mut u64) -> SearchResult {
    let candidates = Candidates::new(ops);
    let mut nodes: Vec<SearchNode<M::State>> = vec![SearchNode {
        bits: Bits::new(ops.len()),
        known_done: 0,
        state: model.init(),
        parent: None,
    }];
    let mut visited: BTreeSet<(Bits, M::State)> = BTreeSet::new();
    let mut stack = vec![0usize];
    let mut best = (0u32, 0usize);

    while let Some(at) = stack.pop() {
        *steps += 1;
        if *steps > steps_max {
            return SearchResult::Inconclusive;
        }
        if nodes[at].known_done == candidates.required {
            return SearchResult::Linearizable;
        }
        let count = nodes[at].bits.count();
        if count > best.0 {
            best = (count, at);
        }
        let children = expand(model, ops, &candidates, &nodes[at], at, &mut visited, steps);
        // Push in reverse so that the earliest-invoked candidate is tried
        // first: real executions are usually close to invocation order.
        for child in children.into_iter().rev() {
            nodes.push(child);
            stack.push(nodes.len() - 1);
        }
    }
    SearchResult::NotLinearizable {
        longest: longest_path(&nodes, best.1),
    }
}

/// One linearization prefix of the search.
struct SearchNode<S> {
    bits: Bits,
    /// How many ops with a known answer `bits` holds.
    known_done: u32,
    state: S,
    /// Index of the parent in the node list and the op linearized to get
    /// here, to rebuild the longest order for the report.
    parent: Option<(usize, usize)>,
}

/// What the search precomputes about its ops.
struct Candidates {
    /// Positions by invocation time.
    order: Vec<usize>,
    /// Whether each op's answer is known.
    known: Vec<bool>,
    /// How many ops have a known answer (all must be linearized).
    required: u32,
    /// Completed ops by completion time: the first one not yet linearized
    /// bounds which op may go next. Scanning from the front stops early
    /// because linearized ops are mostly the early ones.
    by_completion: Vec<(SimTimeNs, usize)>,
}

impl Candidates {
    fn new(ops: &[ClientOp]) -> Self {
        let n = ops.len();
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_by_key(|&i| (ops[i].invoked_ns, i));
        let known: Vec<bool> = ops.iter().map(|o| o.known_output().is_some()).collect();
        let required = known.iter().filter(|k| **k).count() as u32;
        let mut by_completion: Vec<(SimTimeNs, usize)> = (0..n)
            .filter(|&i| known[i])
            .filter_map(|i| ops[i].completed_ns.map(|c| (c, i)))
            .collect();
        by_completion.sort_unstable();
        Candidates {
            order,
            known,
            required,
            by_completion,
        }
    }

    /// No op invoked after this may be linearized after the prefix `bits`.
    fn deadline(&self, bits: &Bits) -> SimTimeNs {
        self.by_completion
            .iter()
            .find(|(_, i)| !bits.contains(*i))
            .map_or(SimTimeNs::MAX, |(c, _)| *c)
    }
}

/// The unvisited children of `node` (at position `at`): every op that may
/// go next, in invocation order, with every state the model allows.
fn expand<M: Model>(
    model: &M,
    ops: &[ClientOp],
    candidates: &Candidates,
    node: &SearchNode<M::State>,
    at: usize,
    visited: &mut BTreeSet<(Bits, M::State)>,
    steps: &mut u64,
) -> Vec<SearchNode<M::State>> {
    let bits = &node.bits;
    let deadline = candidates.deadline(bits);
    let mut children = Vec::new();
    for &i in &candidates.order {
        if ops[i].invoked_ns > deadline {
            break;
        }
        if bits.contains(i) {
            continue;
        }
        for next in model.step(&node.state, &ops[i].input, ops[i].known_output()) {
            let mut nb = bits.clone();
            nb.insert(i);
            if visited.insert((nb.clone(), next.clone())) {
                // Stored states count as steps too, so the bound also
                // bounds memory.
                *steps += 1;
                children.push(SearchNode {
                    bits: nb,
                    known_done: node.known_done + u32::from(candidates.known[i]),
                    state: next,
                    parent: Some((at, i)),
                });
            }
        }
    }
    children
}

/// The ops linearized on the way from the root to `nodes[at]`, in order.
fn longest_path<S>(nodes: &[SearchNode<S>], mut at: usize) -> Vec<usize> {
    let mut longest = Vec::new();
    while let Some((parent, op)) = nodes[at].parent {
        longest.push(op);
        at = parent;
    }
    longest.reverse();
    longest
}

enum PartitionVerdict {
    Ok,
    Inconclusive,
    Violation(Box<LinearizabilityViolation>),
}

struct PartitionResult {
    verdict: PartitionVerdict,
    steps: u64,
}

fn check_partition<M: Model>(
    model: &M,
    object: &ObjectKey,
    ops: &[(OpId, ClientOp)],
    config: &LinearizabilityConfig,
) -> PartitionResult {
    let mut steps = 0;
    let plain: Vec<ClientOp> = ops.iter().map(|(_, op)| op.clone()).collect();
    let verdict = match search(model, &plain, config.steps_max, &mut steps) {
        SearchResult::Linearizable => PartitionVerdict::Ok,
        SearchResult::Inconclusive => PartitionVerdict::Inconclusive,
        SearchResult::NotLinearizable { .. } => {
            let minimal = shrink(model, ops.to_vec(), config);
            let plain: Vec<ClientOp> = minimal.iter().map(|(_, op)| op.clone()).collect();
            let mut scratch = 0;
            let longest = match search(model, &plain, config.steps_max, &mut scratch) {
                SearchResult::NotLinearizable { longest } => {
                    longest.into_iter().map(|i| minimal[i].0).collect()
                }
                _ => Vec::new(),
            };
            PartitionVerdict::Violation(Box::new(LinearizabilityViolation {
                object: object.clone(),
                ops_in_partition: ops.len(),
                minimal,
                longest_linearization: longest,
            }))
        }
    };
    PartitionResult { verdict, steps }
}

/// The history cut at time `t`: ops invoked after `t` removed, answers that
/// arrived after `t` forgotten. If the full history is linearizable, so is
/// every cut (ops answered by `t` precede every removed op, and forgotten
/// answers only widen what is allowed), so a failing cut is a true witness.
fn cut(ops: &[(OpId, ClientOp)], t: SimTimeNs) -> Vec<(OpId, ClientOp)> {
    ops.iter()
        .filter(|(_, op)| op.invoked_ns <= t)
        .map(|(id, op)| {
            let mut op = op.clone();
            if op.completed_ns.is_some_and(|c| c > t) {
                op.completed_ns = None;
                op.output = None;
            }
            (*id, op)
        })
        .collect()
}

/// Shrinks a failing history soundly: first the earliest failing cut
/// (binary search; failing is monotone in the cut time), then greedy removal
/// of ops that cannot have changed the state. Bounded by
/// `shrink_attempts_max` searches; an inconclusive attempt counts as "does
/// not fail", which keeps the result a true witness.
fn shrink<M: Model>(
    model: &M,
    ops: Vec<(OpId, ClientOp)>,
    config: &LinearizabilityConfig,
) -> Vec<(OpId, ClientOp)> {
    let mut attempts = 0usize;
    let fails = |candidate: &[(OpId, ClientOp)], attempts: &mut usize| -> bool {
        if *attempts >= config.shrink_attempts_max {
            return false;
        }
        *attempts += 1;
        let plain: Vec<ClientOp> = candidate.iter().map(|(_, op)| op.clone()).collect();
        let mut steps = 0;
        matches!(
            search(model, &plain, config.steps_max, &mut steps),
            SearchResult::NotLinearizable { .. }
        )
    };

    let mut times: Vec<SimTimeNs> = ops
        .iter()
        .flat_map(|(_, op)| [Some(op.invoked_ns), op.completed_ns])
        .flatten()
        .collect();
    times.sort_unstable();
    times.dedup();
    // Smallest index into `times` whose cut fails; the last time (the whole
    // history, known to fail) is the fallback.
    let (mut lo, mut hi) = (0usize, times.len().saturating_sub(1));
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if fails(&cut(&ops, times[mid]), &mut attempts) {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    let mut current = match times.get(hi) {
        Some(&t) if hi + 1 < times.len() => cut(&ops, t),
        _ => ops,
    };

    let mut i = 0;
    while i < current.len() {
        let (_, op) = &current[i];
        if model.has_no_effect(&op.input, op.known_output()) {
            let mut candidate = current.clone();
            candidate.remove(i);
            if fails(&candidate, &mut attempts) {
                current = candidate;
                continue;
            }
        }
        i += 1;
    }
    current
}

/// Renders ops as the report does; useful in test failure messages.
pub fn render_ops(ops: &[(OpId, ClientOp)]) -> String {
    ops.iter().map(|(id, op)| format!("#{id} {op}\n")).collect()
}

#[cfg(test)]
mod tests;
