//! Tests of the linearizability checker: hand-made bad histories are rejected
//! with a small witness, good and concurrent ones accepted, and histories
//! produced by a real sequential execution always pass (proptest).

use super::*;
use crate::history::{ClientHistory, Fence, LockMode};
use proptest::prelude::*;

const CONFIG: LinearizabilityConfig = LinearizabilityConfig {
    steps_max: 100_000,
    shrink_attempts_max: 64,
};

/// Builds histories tersely: `op(client, invoke, complete, input, output)`.
#[derive(Default)]
struct H(ClientHistory);

impl H {
    fn op(
        &mut self,
        client: u64,
        invoked_ns: u64,
        completed_ns: Option<u64>,
        input: OpInput,
        output: Option<OpOutput>,
    ) -> &mut Self {
        let id = self.0.invoke(client, invoked_ns, input);
        if let (Some(c), Some(o)) = (completed_ns, output) {
            self.0.complete(id, c, o);
        }
        self
    }
    fn check(&self) -> LinearizabilityOutcome {
        check_linearizability(&self.0, &CONFIG)
    }
}

fn put(key: &str, value: &str, fence: Option<u64>) -> OpInput {
    OpInput::Kv(KvInput::Put {
        key: key.into(),
        value: value.into(),
        fence: fence.map(|token| Fence {
            lock: "L".into(),
            token,
        }),
    })
}
fn append(key: &str, value: &str) -> OpInput {
    OpInput::Kv(KvInput::Append {
        key: key.into(),
        value: value.into(),
        fence: None,
    })
}
fn get(key: &str) -> OpInput {
    OpInput::Kv(KvInput::Get { key: key.into() })
}
fn written(size: usize, last_token: Option<u64>) -> Option<OpOutput> {
    Some(OpOutput::Kv(KvOutput::Written { size, last_token }))
}
fn read(value: &str, last_token: Option<u64>) -> Option<OpOutput> {
    Some(OpOutput::Kv(KvOutput::Read {
        value: value.into(),
        last_token,
    }))
}
fn push(v: &str) -> OpInput {
    OpInput::Stack(StackInput::Push {
        stack: "s".into(),
        value: v.into(),
        fence: None,
    })
}
fn pop() -> OpInput {
    OpInput::Stack(StackInput::Pop {
        stack: "s".into(),
        fence: None,
    })
}
fn pushed(size: usize) -> Option<OpOutput> {
    Some(OpOutput::Stack(StackOutput::Pushed { size }))
}
fn popped(v: &str, size: usize) -> Option<OpOutput> {
    Some(OpOutput::Stack(StackOutput::Popped {
        value: v.into(),
        size,
    }))
}
fn acquire(session: &str, mode: LockMode) -> OpInput {
    OpInput::Lock(LockInput::Acquire {
        lock: "L".into(),
        session: session.into(),
        mode,
    })
}
fn release(session: &str, token: u64) -> OpInput {
    OpInput::Lock(LockInput::Release {
        lock: "L".into(),
        session: session.into(),
        token,
    })
}
fn lock_out(o: LockOutput) -> Option<OpOutput> {
    Some(OpOutput::Lock(o))
}

#[test]
fn rejects_a_stale_read_after_an_acknowledged_write() {
    let mut h = H::default();
    h.op(1, 0, Some(10), put("k", "old", None), written(3, None))
        .op(1, 20, Some(30), put("k", "new", None), written(3, None))
        // Invoked after the second put was acknowledged, yet sees the old value.
        .op(2, 40, Some(50), get("k"), read("old", None))
        // Noise on other objects and keys must not matter.
        .op(
            3,
            0,
            Some(100),
            get("other"),
            Some(OpOutput::Kv(KvOutput::NotFound)),
        )
        .op(3, 5, Some(8), push("x"), pushed(1));
    let out = h.check();
    assert_eq!(out.partitions_checked, 3);
    assert_eq!(out.violations.len(), 1, "{out:?}");
    let v = &out.violations[0];
    assert_eq!(v.object, ObjectKey::Key("k".into()));
    let text = v.to_string();
    assert!(text.contains("key \"k\" is not linearizable"), "{text}");
    assert!(text.contains("get(k) -> \"old\""), "{text}");
    // The first put is needed for "old" to be readable at all, so the
    // witness keeps all three ops.
    assert_eq!(v.minimal.len(), 3, "{text}");
}

#[test]
fn accepts_concurrent_reads_seeing_either_value() {
    let mut h = H::default();
    h.op(1, 0, Some(10), put("k", "a", None), written(1, None))
        .op(1, 20, Some(60), append("k", "b"), written(2, None))
        .op(2, 25, Some(30), get("k"), read("ab", None))
        .op(3, 30, Some(40), get("k"), read("ab", None))
        .op(4, 21, Some(70), get("k"), read("a", None));
    let out = h.check();
    assert!(out.violations.is_empty(), "{out:?}");
    assert!(out.inconclusive.is_empty());
}

#[test]
fn pending_writes_may_or_may_not_take_effect_but_not_both() {
    let mut base = H::default();
    base.op(1, 0, Some(10), put("k", "a", None), written(1, None))
        .op(2, 20, None, put("k", "b", None), None);
    let mut seen = H(base.0.clone());
    seen.op(3, 100, Some(110), get("k"), read("b", None));
    assert!(seen.check().violations.is_empty());
    let mut unseen = H(base.0.clone());
    unseen.op(3, 100, Some(110), get("k"), read("a", None));
    assert!(unseen.check().violations.is_empty());
    // Seen, then un-seen: no single point works.
    let mut flicker = H(base.0.clone());
    flicker.op(3, 100, Some(110), get("k"), read("b", None)).op(
        3,
        120,
        Some(130),
        get("k"),
        read("a", None),
    );
    assert_eq!(flicker.check().violations.len(), 1);
    // A pending write cannot take effect before it was invoked.
    let mut early = H(base.0);
    early.op(3, 12, Some(15), get("k"), read("b", None));
    assert_eq!(early.check().violations.len(), 1);
}

#[test]
fn fenced_writes_with_stale_tokens_must_be_refused_and_have_no_effect() {
    let mut ok = H::default();
    ok.op(1, 0, Some(10), put("k", "x", Some(5)), written(1, Some(5)))
        .op(
            2,
            20,
            Some(30),
            put("k", "y", Some(3)),
            Some(OpOutput::Kv(KvOutput::Refused)),
        )
        .op(3, 40, Some(50), get("k"), read("x", Some(5)));
    assert!(ok.check().violations.is_empty());

    let mut accepted_stale = H::default();
    accepted_stale
        .op(1, 0, Some(10), put("k", "x", Some(5)), written(1, Some(5)))
        .op(2, 20, Some(30), put("k", "y", Some(3)), written(1, Some(3)));
    assert_eq!(accepted_stale.check().violations.len(), 1);

    let mut refused_but_applied = H::default();
    refused_but_applied
        .op(1, 0, Some(10), put("k", "x", Some(5)), written(1, Some(5)))
        .op(
            2,
            20,
            Some(30),
            put("k", "y", Some(3)),
            Some(OpOutput::Kv(KvOutput::Refused)),
        )
        .op(3, 40, Some(50), get("k"), read("y", Some(5)));
    assert_eq!(refused_but_applied.check().violations.len(), 1);
}

#[test]
fn rejects_popping_a_value_never_pushed() {
    let mut h = H::default();
    h.op(1, 0, Some(10), push("a"), pushed(1))
        .op(2, 20, Some(30), pop(), popped("zzz", 0));
    let out = h.check();
    assert_eq!(out.violations.len(), 1, "{out:?}");
    assert!(out.violations[0].to_string().contains("pop(s) -> \"zzz\""));
}

#[test]
fn rejects_popping_in_the_wrong_order() {
    let mut h = H::default();
    h.op(1, 0, Some(10), push("a"), pushed(1))
        .op(1, 20, Some(30), push("b"), pushed(2))
        .op(2, 40, Some(50), pop(), popped("a", 1));
    assert_eq!(h.check().violations.len(), 1);
    // Concurrent pushes may land in either order.
    let mut c = H::default();
    c.op(1, 0, Some(30), push("a"), pushed(2))
        .op(2, 0, Some(30), push("b"), pushed(1))
        .op(3, 40, Some(50), pop(), popped("a", 1))
        .op(3, 60, Some(70), pop(), popped("b", 0))
        .op(
            3,
            80,
            Some(90),
            pop(),
            Some(OpOutput::Stack(StackOutput::Empty)),
        );
    assert!(c.check().violations.is_empty(), "{:?}", c.check());
}

#[test]
fn rejects_overlapping_exclusive_grants() {
    let mut h = H::default();
    h.op(
        1,
        0,
        Some(10),
        acquire("a", LockMode::Exclusive),
        lock_out(LockOutput::Granted { token: 3 }),
    )
    .op(
        2,
        20,
        Some(30),
        acquire("b", LockMode::Exclusive),
        lock_out(LockOutput::Granted { token: 4 }),
    )
    .op(
        1,
        40,
        Some(50),
        release("a", 3),
        lock_out(LockOutput::Released),
    );
    let out = h.check();
    assert_eq!(out.violations.len(), 1, "{out:?}");
    // A concurrent release makes the same grants fine.
    let mut ok = H::default();
    ok.op(
        1,
        0,
        Some(10),
        acquire("a", LockMode::Exclusive),
        lock_out(LockOutput::Granted { token: 3 }),
    )
    .op(
        2,
        20,
        Some(30),
        acquire("b", LockMode::Exclusive),
        lock_out(LockOutput::Granted { token: 4 }),
    )
    .op(
        1,
        15,
        Some(50),
        release("a", 3),
        lock_out(LockOutput::Released),
    )
    .op(
        3,
        60,
        Some(70),
        acquire("c", LockMode::Shared),
        lock_out(LockOutput::Held),
    );
    assert!(ok.check().violations.is_empty(), "{:?}", ok.check());
}

#[test]
fn shared_holders_coexist_but_not_with_an_exclusive_one() {
    let granted = |token| lock_out(LockOutput::Granted { token });
    let mut ok = H::default();
    ok.op(1, 0, Some(10), acquire("a", LockMode::Shared), granted(3))
        .op(2, 20, Some(30), acquire("b", LockMode::Shared), granted(4))
        .op(
            3,
            40,
            Some(50),
            acquire("c", LockMode::Exclusive),
            lock_out(LockOutput::Held),
        )
        .op(
            4,
            60,
            Some(70),
            OpInput::Lock(LockInput::Read { lock: "L".into() }),
            lock_out(LockOutput::State {
                holders: vec![
                    ("b".into(), LockMode::Shared, 4),
                    ("a".into(), LockMode::Shared, 3),
                ],
            }),
        );
    assert!(ok.check().violations.is_empty(), "{:?}", ok.check());

    let mut bad = H(ok.0.clone());
    bad.op(
        3,
        80,
        Some(90),
        acquire("c", LockMode::Exclusive),
        granted(9),
    );
    assert_eq!(bad.check().violations.len(), 1);
}

#[test]
fn shared_waiters_granted_by_one_release_share_its_token() {
    // Found by the simulation (seed 8): an exclusive holder releases at log
    // index 477 and both queued shared waiters are granted by that entry.
    let granted = |token| lock_out(LockOutput::Granted { token });
    let mut h = H::default();
    h.op(
        1,
        0,
        Some(10),
        acquire("x", LockMode::Exclusive),
        granted(463),
    )
    .op(
        2,
        20,
        Some(60),
        acquire("a", LockMode::Shared),
        granted(477),
    )
    .op(
        3,
        25,
        Some(65),
        acquire("b", LockMode::Shared),
        granted(477),
    )
    .op(
        1,
        30,
        Some(40),
        OpInput::Lock(LockInput::Release {
            lock: "L".into(),
            session: "x".into(),
            token: 463,
        }),
        lock_out(LockOutput::Released),
    );
    assert!(h.check().violations.is_empty(), "{:?}", h.check());
    // An exclusive grant never shares a token.
    let mut bad = H::default();
    bad.op(
        2,
        20,
        Some(60),
        acquire("a", LockMode::Shared),
        granted(477),
    )
    .op(
        3,
        70,
        Some(80),
        acquire("b", LockMode::Exclusive),
        granted(477),
    );
    assert_eq!(bad.check().violations.len(), 1);
}

#[test]
fn a_grant_whose_answer_was_lost_still_blocks_others() {
    // a's acquire timed out (unknown outcome); b is later refused, which is
    // only explicable if a's grant took effect; then a's session ends.
    let mut h = H::default();
    h.op(1, 0, None, acquire("a", LockMode::Exclusive), None)
        .op(
            2,
            20,
            Some(30),
            acquire("b", LockMode::Exclusive),
            lock_out(LockOutput::Held),
        )
        .op(
            0,
            40,
            Some(50),
            OpInput::Lock(LockInput::EndSession {
                session: "a".into(),
            }),
            lock_out(LockOutput::Released),
        )
        .op(
            2,
            60,
            Some(70),
            acquire("b", LockMode::Exclusive),
            lock_out(LockOutput::Granted { token: 5 }),
        );
    assert!(h.check().violations.is_empty(), "{:?}", h.check());
    // Without the pending acquire, b's refusal has no explanation.
    let mut no_holder = H::default();
    no_holder.op(
        2,
        20,
        Some(30),
        acquire("b", LockMode::Exclusive),
        lock_out(LockOutput::Held),
    );
    assert_eq!(no_holder.check().violations.len(), 1);
}

#[test]
fn lock_tokens_must_increase_and_ended_sessions_lose_their_locks() {
    let mut h = H::default();
    h.op(
        1,
        0,
        Some(10),
        acquire("a", LockMode::Exclusive),
        lock_out(LockOutput::Granted { token: 9 }),
    )
    .op(
        1,
        20,
        Some(30),
        release("a", 9),
        lock_out(LockOutput::Released),
    )
    .op(
        2,
        40,
        Some(50),
        acquire("b", LockMode::Exclusive),
        lock_out(LockOutput::Granted { token: 7 }),
    );
    assert_eq!(h.check().violations.len(), 1);

    let mut expiry = H::default();
    expiry
        .op(
            1,
            0,
            Some(10),
            acquire("a", LockMode::Exclusive),
            lock_out(LockOutput::Granted { token: 3 }),
        )
        .op(
            0,
            20,
            Some(40),
            OpInput::Lock(LockInput::EndSession {
                session: "a".into(),
            }),
            lock_out(LockOutput::Released),
        )
        .op(
            2,
            50,
            Some(60),
            acquire("b", LockMode::Exclusive),
            lock_out(LockOutput::Granted { token: 8 }),
        )
        // The expired holder's release is refused; re-acquire by the same
        // session in the same mode returns the same token.
        .op(
            1,
            70,
            Some(80),
            release("a", 3),
            lock_out(LockOutput::ReleaseRefused),
        )
        .op(
            2,
            90,
            Some(95),
            acquire("b", LockMode::Exclusive),
            lock_out(LockOutput::Granted { token: 8 }),
        )
        .op(
            3,
            96,
            Some(99),
            OpInput::Lock(LockInput::Read { lock: "L".into() }),
            lock_out(LockOutput::State {
                holders: vec![("b".into(), LockMode::Exclusive, 8)],
            }),
        );
    assert!(expiry.check().violations.is_empty(), "{:?}", expiry.check());

    // The ended session cannot be granted again.
    let mut zombie = H(expiry.0.clone());
    zombie.op(
        1,
        200,
        Some(210),
        acquire("a", LockMode::Shared),
        lock_out(LockOutput::Granted { token: 20 }),
    );
    assert_eq!(zombie.check().violations.len(), 1);
}

#[test]
fn shrinking_removes_noise_and_keeps_a_true_witness() {
    let mut h = H::default();
    let mut t = 0;
    for i in 0..30 {
        h.op(
            1,
            t,
            Some(t + 5),
            put("k", &format!("v{i}"), None),
            written(format!("v{i}").len(), None),
        )
        .op(
            2,
            t + 6,
            Some(t + 8),
            get("k"),
            read(&format!("v{i}"), None),
        );
        t += 10;
    }
    // The bug: a read of a value overwritten long ago.
    h.op(3, t + 100, Some(t + 110), get("k"), read("v3", None));
    for i in 0..10 {
        h.op(4, t + 200 + i, Some(t + 300), get("k"), read("v29", None));
    }
    let out = h.check();
    assert_eq!(out.violations.len(), 1);
    let v = &out.violations[0];
    assert_eq!(v.ops_in_partition, 71);
    // Later ops are cut off and reads that do not matter are dropped: what is
    // left is the puts up to the stale read, and the stale read itself.
    assert!(v.minimal.len() <= 31, "{}", v);
    assert!(v.minimal.iter().any(|(id, _)| *id == 60), "{}", v);
    assert!(v.minimal.iter().all(
        |(_, op)| !matches!(op.input, OpInput::Kv(KvInput::Get { .. })) || op.invoked_ns >= t
    ));
}

#[test]
fn step_bound_gives_inconclusive_not_a_verdict() {
    let mut h = H::default();
    // Many concurrent appends: a large search space.
    for i in 0..12 {
        h.op(i, 0, Some(100), append("k", &format!("<{i}>")), None);
    }
    h.op(99, 200, Some(210), get("k"), read("impossible", None));
    let out = check_linearizability(
        &h.0,
        &LinearizabilityConfig {
            steps_max: 50,
            shrink_attempts_max: 4,
        },
    );
    assert!(out.violations.is_empty());
    assert_eq!(out.inconclusive.len(), 1, "{out:?}");
    assert!(out.inconclusive[0].contains("step bound 50 hit"));
}

// ---------------------------------------------------------------------------
// Property: any history produced by a real sequential execution passes
// ---------------------------------------------------------------------------

#[derive(Debug, Clone)]
enum Gen {
    Put(u8, Option<u64>),
    Append(u8),
    Get,
    Push(u8),
    Pop,
    Peek,
    Acquire(u8, bool),
    Release(u8, bool),
    ReadLock,
    End(u8),
}

fn gen_op() -> impl Strategy<Value = Gen> {
    prop_oneof![
        (0u8..4, proptest::option::of(1u64..6)).prop_map(|(v, f)| Gen::Put(v, f)),
        (0u8..4).prop_map(Gen::Append),
        Just(Gen::Get),
        (0u8..4).prop_map(Gen::Push),
        Just(Gen::Pop),
        Just(Gen::Peek),
        (0u8..3, any::<bool>()).prop_map(|(s, x)| Gen::Acquire(s, x)),
        (0u8..3, any::<bool>()).prop_map(|(s, good)| Gen::Release(s, good)),
        Just(Gen::ReadLock),
        (0u8..3).prop_map(Gen::End),
    ]
}

/// The reference fenced KV write: refused with a stale token, else applied.
fn kv_write(
    kv: &mut Option<String>,
    kv_token: &mut u64,
    input: OpInput,
    value: String,
    fence: Option<u64>,
    is_append: bool,
) -> (OpInput, OpOutput) {
    if fence.is_some_and(|t| t < *kv_token) {
        return (input, OpOutput::Kv(KvOutput::Refused));
    }
    let new = if is_append {
        format!("{}{value}", kv.clone().unwrap_or_default())
    } else {
        value
    };
    *kv_token = fence.unwrap_or(*kv_token);
    let size = new.len();
    *kv = Some(new);
    let last_token = (*kv_token > 0).then_some(*kv_token);
    (input, OpOutput::Kv(KvOutput::Written { size, last_token }))
}

/// Executes `ops` one after another at times 100, 200, ... against plain
/// reference implementations and records each with a random interval around
/// its execution point (overlapping its neighbours); some answers are lost.
fn execute(ops: &[(Gen, u64, u64, bool)]) -> ClientHistory {
    let mut h = ClientHistory::new();
    let mut reference = Reference {
        next_token: 1,
        ..Reference::default()
    };
    for (k, (g, before, after, lost)) in ops.iter().enumerate() {
        let at = 1_000 + 100 * k as u64;
        let (input, output) = reference.execute(k, g);
        let id = h.invoke(k as u64, at - before, input);
        if !lost {
            h.complete(id, at + after, output);
        }
    }
    h
}

/// Plain sequential implementations of one key, one stack and one lock.
#[derive(Default)]
struct Reference {
    kv: Option<String>,
    kv_token: u64,
    stack: Vec<String>,
    holders: BTreeMap<String, (LockMode, u64)>,
    ended: BTreeSet<String>,
    /// The last token granted (grants grow it by 1..=3).
    next_token: u64,
}

impl Reference {
    /// Runs op number `k` and returns it with its answer.
    fn execute(&mut self, k: usize, g: &Gen) -> (OpInput, OpOutput) {
        match g {
            Gen::Put(..) | Gen::Append(_) | Gen::Get => self.kv_op(g),
            Gen::Push(_) | Gen::Pop | Gen::Peek => self.stack_op(g),
            Gen::Acquire(..) | Gen::Release(..) | Gen::ReadLock | Gen::End(_) => self.lock_op(k, g),
        }
    }

    fn kv_op(&mut self, g: &Gen) -> (OpInput, OpOutput) {
        match g {
            Gen::Put(v, fence) => {
                let value = format!("<{v}>");
                let input = put("k", &value, *fence);
                kv_write(
                    &mut self.kv,
                    &mut self.kv_token,
                    input,
                    value,
                    *fence,
                    false,
                )
            }
            Gen::Append(v) => {
                let value = format!("<{v}>");
                let input = append("k", &value);
                kv_write(&mut self.kv, &mut self.kv_token, input, value, None, true)
            }
            Gen::Get => (
                get("k"),
                match &self.kv {
                    Some(v) => OpOutput::Kv(KvOutput::Read {
                        value: v.clone(),
                        last_token: (self.kv_token > 0).then_some(self.kv_token),
                    }),
                    None => OpOutput::Kv(KvOutput::NotFound),
                },
            ),
            _ => unreachable!("not a KV op: {g:?}"),
        }
    }

    fn stack_op(&mut self, g: &Gen) -> (OpInput, OpOutput) {
        match g {
            Gen::Push(v) => {
                self.stack.push(format!("<{v}>"));
                (
                    push(&format!("<{v}>")),
                    OpOutput::Stack(StackOutput::Pushed {
                        size: self.stack.len(),
                    }),
                )
            }
            Gen::Pop => (
                pop(),
                match self.stack.pop() {
                    Some(value) => OpOutput::Stack(StackOutput::Popped {
                        value,
                        size: self.stack.len(),
                    }),
                    None => OpOutput::Stack(StackOutput::Empty),
                },
            ),
            Gen::Peek => (
                OpInput::Stack(StackInput::Peek { stack: "s".into() }),
                OpOutput::Stack(StackOutput::Peeked {
                    size: self.stack.len(),
                    top: self.stack.last().cloned(),
                }),
            ),
            _ => unreachable!("not a stack op: {g:?}"),
        }
    }

    fn lock_op(&mut self, k: usize, g: &Gen) -> (OpInput, OpOutput) {
        match g {
            Gen::Acquire(s, exclusive) => {
                let session = format!("s{s}");
                let mode = if *exclusive {
                    LockMode::Exclusive
                } else {
                    LockMode::Shared
                };
                let out = if self.ended.contains(&session) {
                    LockOutput::SessionExpired
                } else if let Some((_, t)) = self.holders.get(&session).filter(|(m, _)| *m == mode)
                {
                    LockOutput::Granted { token: *t }
                } else if self
                    .holders
                    .iter()
                    .filter(|(h, _)| **h != session)
                    .all(|(_, (m, _))| mode == LockMode::Shared && *m == LockMode::Shared)
                {
                    self.next_token += 1 + k as u64 % 3;
                    self.holders
                        .insert(session.clone(), (mode, self.next_token));
                    LockOutput::Granted {
                        token: self.next_token,
                    }
                } else {
                    LockOutput::Held
                };
                (acquire(&session, mode), OpOutput::Lock(out))
            }
            Gen::Release(s, good) => {
                let session = format!("s{s}");
                let token = match self.holders.get(&session) {
                    Some((_, t)) if *good => *t,
                    _ => 1_000_000,
                };
                let out = if self.holders.get(&session).is_some_and(|(_, t)| *t == token) {
                    self.holders.remove(&session);
                    LockOutput::Released
                } else {
                    LockOutput::ReleaseRefused
                };
                (release(&session, token), OpOutput::Lock(out))
            }
            Gen::ReadLock => (
                OpInput::Lock(LockInput::Read { lock: "L".into() }),
                OpOutput::Lock(LockOutput::State {
                    holders: self
                        .holders
                        .iter()
                        .map(|(s, (m, t))| (s.clone(), *m, *t))
                        .collect(),
                }),
            ),
            Gen::End(s) => {
                let session = format!("s{s}");
                self.holders.remove(&session);
                self.ended.insert(session.clone());
                (
                    OpInput::Lock(LockInput::EndSession { session }),
                    OpOutput::Lock(LockOutput::Released),
                )
            }
            _ => unreachable!("not a lock op: {g:?}"),
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn sequential_executions_are_always_linearizable(
        ops in proptest::collection::vec(
            (gen_op(), 0u64..250, 0u64..250, proptest::bool::weighted(0.1)),
            0..24,
        )
    ) {
        let h = execute(&ops);
        let out = check_linearizability(&h, &CONFIG);
        prop_assert!(out.violations.is_empty(), "{}", out.violations[0]);
        prop_assert!(out.inconclusive.is_empty(), "{:?}", out.inconclusive);
    }
}

#[test]
fn a_long_concurrent_history_is_decided_within_the_default_bound() {
    // A fixed pseudo-random mix (an LCG: no dependency, same every run) of
    // 600 ops overlapping by up to ~5 neighbours, across all three models.
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = |n: u64| {
        x = x
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (x >> 33) % n
    };
    let ops: Vec<(Gen, u64, u64, bool)> = (0..600)
        .map(|_| {
            let g = match next(10) {
                0 => Gen::Put(next(4) as u8, None),
                1 => Gen::Append(next(4) as u8),
                2 => Gen::Get,
                3 => Gen::Push(next(4) as u8),
                4 => Gen::Pop,
                5 => Gen::Peek,
                6 => Gen::Acquire(next(3) as u8, next(2) == 0),
                7 => Gen::Release(next(3) as u8, true),
                8 => Gen::ReadLock,
                _ => Gen::Get,
            };
            (g, next(250), next(250), next(20) == 0)
        })
        .collect();
    let h = execute(&ops);
    let out = check_linearizability(&h, &LinearizabilityConfig::default());
    assert!(out.violations.is_empty(), "{}", out.violations[0]);
    assert!(out.inconclusive.is_empty(), "{:?}", out.inconclusive);
    assert_eq!(out.partitions_checked, 3);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Reading or popping a value nobody ever wrote is always caught, however
    /// the rest of the history overlaps.
    #[test]
    fn reads_of_values_never_written_are_always_rejected(
        ops in proptest::collection::vec(
            (gen_op(), 0u64..250, 0u64..250, proptest::bool::weighted(0.1)),
            1..24,
        ),
        pick in any::<proptest::sample::Index>(),
    ) {
        let mut h = execute(&ops);
        let readers: Vec<usize> = h
            .ops
            .iter()
            .enumerate()
            .filter(|(_, op)| {
                matches!(
                    op.known_output(),
                    Some(OpOutput::Kv(KvOutput::Read { .. }))
                        | Some(OpOutput::Stack(StackOutput::Popped { .. }))
                )
            })
            .map(|(i, _)| i)
            .collect();
        if readers.is_empty() {
            // Nothing to corrupt (rejecting would exhaust proptest's budget).
            return Ok(());
        }
        match &mut h.ops[readers[pick.index(readers.len())]].output {
            Some(OpOutput::Kv(KvOutput::Read { value, .. }))
            | Some(OpOutput::Stack(StackOutput::Popped { value, .. })) => {
                *value = "<never written>".into();
            }
            _ => unreachable!("filtered above"),
        }
        let out = check_linearizability(&h, &CONFIG);
        prop_assert_eq!(out.violations.len(), 1);
        prop_assert!(out.inconclusive.is_empty());
        // The witness contains the corrupted op.
        prop_assert!(out.violations[0]
            .minimal
            .iter()
            .any(|(_, op)| op.to_string().contains("<never written>")));
    }
}
