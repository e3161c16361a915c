//! Unit tests of each rule of the API contract, one scenario per test,
//! through `apply` (long: one file for the whole contract, in its order).

use super::*;
use crate::api::limits::{
    EPHEMERAL_SESSION_TTL_MS_DEFAULT, IDEMPOTENCY_KEYS_MIN, IDEMPOTENCY_WINDOW_MS,
    KV_VALUE_BYTES_MAX, SESSION_TOMBSTONE_MS, SESSION_TTL_MS_MAX, SESSION_TTL_MS_MIN,
    WAITERS_PER_LOCK_MAX,
};
use crate::codec;
use crate::lock::{
    CloseSession, Fence, Idempotency, Keepalive, KvWrite, LeaseTracker, NotFoundKind, OpenSession,
    StackDelete, StackPop, StackPush,
};

fn not_found(kind: NotFoundKind) -> LockError {
    LockError::NotFound { kind }
}

/// A state plus a log index counter: each `run` applies the next entry.
struct Log {
    sm: LockStateMachine,
    index: LogIndex,
    now_ms: u64,
    /// Check every invariant after each apply (off for the bulk tests, where
    /// it would be quadratic; they check once at the end).
    checked: bool,
}

impl Log {
    fn new() -> Self {
        Log {
            sm: LockStateMachine::new(),
            index: 0,
            now_ms: 1_000,
            checked: true,
        }
    }

    fn apply_keyed(&mut self, command: Command, key: Option<(&str, u64)>) -> Applied {
        self.apply_acked(command, key, None)
    }

    /// Like `apply_keyed`, with an `Idempotency-Acked-Below`.
    fn apply_acked(
        &mut self,
        command: Command,
        key: Option<(&str, u64)>,
        acked_below: Option<u64>,
    ) -> Applied {
        self.index += 1;
        let env = Envelope {
            now_ms: self.now_ms,
            idempotency: key.map(|(k, f)| Idempotency {
                key: k.into(),
                fingerprint: f,
                acked_below,
            }),
            command,
        };
        let applied = self.sm.apply(self.index, &env);
        if self.checked {
            self.sm.check_invariants().expect("invariants hold");
        }
        applied
    }

    fn run(&mut self, command: Command) -> Reply {
        self.apply_keyed(command, None).reply
    }

    fn open(&mut self, name: &str) -> SessionId {
        match self.run(Command::OpenSession(OpenSession {
            ttl_ms: 10_000,
            name: name.into(),
        })) {
            Reply::SessionOpened { session_id, .. } => session_id,
            other => panic!("open failed: {other:?}"),
        }
    }

    fn acquire(&mut self, lock: &str, s: SessionId, mode: Mode, wait_ms: u64) -> Applied {
        self.apply_keyed(
            Command::Acquire(Acquire {
                lock: lock.into(),
                owner: Owner::Session(s),
                mode,
                wait_ms,
            }),
            None,
        )
    }

    fn token(&mut self, lock: &str, s: SessionId, mode: Mode) -> FencingToken {
        match self.acquire(lock, s, mode, 0).reply {
            Reply::Acquired(g) => g.fencing_token,
            other => panic!("not acquired: {other:?}"),
        }
    }

    fn release(&mut self, lock: &str, s: SessionId, token: Option<FencingToken>) -> Applied {
        self.apply_keyed(
            Command::Release(Release {
                lock: lock.into(),
                session_id: s,
                fencing_token: token,
            }),
            None,
        )
    }
}

fn code(reply: &Reply) -> &'static str {
    match reply {
        Reply::Error(e) => e.code(),
        _ => "ok",
    }
}

fn granted(events: &[Event]) -> Vec<(SessionId, FencingToken)> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Granted {
                session_id,
                fencing_token,
                ..
            } => Some((*session_id, *fencing_token)),
            _ => None,
        })
        .collect()
}

#[test]
fn exclusive_lock_refuses_a_second_holder_and_names_the_holder() {
    let mut log = Log::new();
    let a = log.open("a");
    let b = log.open("b");
    let t = log.token("L", a, Mode::Exclusive);
    assert_eq!(t, log.index, "the token is the grant's log index");
    match log.acquire("L", b, Mode::Exclusive, 0).reply {
        Reply::Error(LockError::LockHeld { holders }) => {
            assert_eq!(holders.len(), 1);
            assert_eq!(holders[0].session_id, a);
            assert_eq!(holders[0].session_name, "a");
            assert_eq!(holders[0].fencing_token, t);
            assert_eq!(holders[0].acquired_at_ms, 1_000);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        code(&log.acquire("L", b, Mode::Shared, 0).reply),
        "lock_held"
    );
}

#[test]
fn reacquire_in_same_mode_returns_same_grant_and_mode_change_is_refused() {
    let mut log = Log::new();
    let a = log.open("a");
    let t = log.token("L", a, Mode::Shared);
    assert_eq!(log.token("L", a, Mode::Shared), t);
    match log.acquire("L", a, Mode::Exclusive, 0).reply {
        Reply::Error(LockError::InvalidRequest { field, message }) => {
            assert_eq!(field, "mode");
            assert!(message.contains("not supported"), "{message}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn shared_holders_coexist_and_a_queued_writer_blocks_later_readers() {
    let mut log = Log::new();
    let (r1, r2, w, r3) = (
        log.open("r1"),
        log.open("r2"),
        log.open("w"),
        log.open("r3"),
    );
    let t1 = log.token("L", r1, Mode::Shared);
    let t2 = log.token("L", r2, Mode::Shared);
    assert!(t2 > t1);
    let q = log.acquire("L", w, Mode::Exclusive, 5_000).reply;
    assert!(matches!(q, Reply::Queued { position: 1, .. }), "{q:?}");
    // No writer starvation: a reader arriving after the writer queues.
    let q = log.acquire("L", r3, Mode::Shared, 5_000).reply;
    assert!(matches!(q, Reply::Queued { position: 2, .. }), "{q:?}");
    assert_eq!(
        code(&log.acquire("L", r3, Mode::Shared, 0).reply),
        "lock_held"
    );

    assert!(granted(&log.release("L", r1, Some(t1)).events).is_empty());
    let done = log.release("L", r2, Some(t2));
    assert_eq!(granted(&done.events), vec![(w, log.index)]);
    let tw = log.index;
    let done = log.release("L", w, Some(tw));
    assert_eq!(granted(&done.events), vec![(r3, log.index)]);
    assert!(log.index > tw, "tokens strictly increase");
}

#[test]
fn waiters_are_granted_in_fifo_order_and_consecutive_readers_together() {
    let mut log = Log::new();
    let s: Vec<SessionId> = (0..5).map(|i| log.open(&format!("s{i}"))).collect();
    let t = log.token("L", s[0], Mode::Exclusive);
    log.acquire("L", s[1], Mode::Shared, 1_000);
    log.acquire("L", s[2], Mode::Shared, 1_000);
    log.acquire("L", s[3], Mode::Exclusive, 1_000);
    log.acquire("L", s[4], Mode::Shared, 1_000);
    let done = log.release("L", s[0], Some(t));
    let i = log.index;
    assert_eq!(granted(&done.events), vec![(s[1], i), (s[2], i)]);
    let view = log.sm.lock("L").unwrap();
    assert_eq!(view.mode, Some(Mode::Shared));
    assert_eq!(
        view.waiters,
        vec![
            WaiterView {
                session_id: s[3],
                mode: Mode::Exclusive
            },
            WaiterView {
                session_id: s[4],
                mode: Mode::Shared
            },
        ]
    );
}

#[test]
fn asking_again_while_queued_keeps_the_place() {
    let mut log = Log::new();
    let (a, b, c) = (log.open("a"), log.open("b"), log.open("c"));
    log.token("L", a, Mode::Exclusive);
    log.acquire("L", b, Mode::Exclusive, 1_000);
    log.acquire("L", c, Mode::Exclusive, 1_000);
    let again = log.acquire("L", b, Mode::Exclusive, 9_000).reply;
    assert!(
        matches!(again, Reply::Queued { position: 1, .. }),
        "{again:?}"
    );
    assert_eq!(
        code(&log.acquire("L", b, Mode::Shared, 1_000).reply),
        "invalid_request"
    );
}

#[test]
fn expiry_releases_hands_over_and_ends_waits() {
    let mut log = Log::new();
    let (a, b, c) = (log.open("a"), log.open("b"), log.open("c"));
    log.token("L", a, Mode::Exclusive);
    log.token("M", c, Mode::Exclusive);
    log.acquire("L", b, Mode::Exclusive, 60_000);
    log.acquire("M", a, Mode::Exclusive, 60_000);
    let done = log.apply_keyed(
        Command::ExpireSessions(ExpireSessions {
            session_ids: vec![a, 999],
        }),
        None,
    );
    assert_eq!(done.reply, Reply::SessionsExpired { count: 1 });
    assert_eq!(granted(&done.events), vec![(b, log.index)]);
    assert!(done.events.contains(&Event::WaitEnded {
        lock: "M".into(),
        session_id: a,
        reason: WaitEndReason::SessionGone,
        reply: Reply::Error(LockError::SessionExpired),
    }));
    assert!(done
        .events
        .contains(&Event::SessionExpired { session_id: a }));
    // 410 for the expired session, its waits gone, never granted M.
    assert_eq!(log.sm.session(a), Err(LockError::SessionExpired));
    assert_eq!(
        code(&log.run(Command::Keepalive(Keepalive { session_id: a }))),
        "session_expired"
    );
    assert!(log.sm.lock("M").unwrap().waiters.is_empty());
    // Expiring it again is ignored.
    let again = log.run(Command::ExpireSessions(ExpireSessions {
        session_ids: vec![a],
    }));
    assert_eq!(again, Reply::SessionsExpired { count: 0 });
    // After the tombstone window the session is simply unknown.
    log.now_ms += SESSION_TOMBSTONE_MS;
    log.run(Command::ExpireWaiters);
    assert_eq!(log.sm.session(a), Err(not_found(NotFoundKind::Session)));
}

#[test]
fn a_waiter_expiring_in_the_same_entry_as_the_holder_is_never_granted() {
    // Sim seed 305: expiring the holder handed the lock to a waiter whose
    // session expired in the same entry, and then on to a shared waiter, so
    // an exclusive and a shared grant carried the same token.
    let mut log = Log::new();
    let (a, b, c) = (log.open("a"), log.open("b"), log.open("c"));
    log.token("L", a, Mode::Exclusive);
    log.acquire("L", b, Mode::Exclusive, 60_000);
    log.acquire("L", c, Mode::Shared, 60_000);
    let done = log.apply_keyed(
        Command::ExpireSessions(ExpireSessions {
            session_ids: vec![a, b, a],
        }),
        None,
    );
    assert_eq!(done.reply, Reply::SessionsExpired { count: 2 });
    assert_eq!(
        granted(&done.events),
        vec![(c, log.index)],
        "only c is granted"
    );
    let state = log.sm.lock("L").unwrap();
    assert_eq!(state.holders.len(), 1);
    assert_eq!(state.holders[0].session_id, c);
    assert!(state.waiters.is_empty());
}

#[test]
fn closing_a_session_releases_everything() {
    let mut log = Log::new();
    let (a, b) = (log.open("a"), log.open("b"));
    log.token("L", a, Mode::Shared);
    log.acquire("L", b, Mode::Exclusive, 1_000);
    let done = log.apply_keyed(Command::CloseSession(CloseSession { session_id: a }), None);
    assert_eq!(done.reply, Reply::SessionClosed);
    assert_eq!(granted(&done.events), vec![(b, log.index)]);
    assert_eq!(log.sm.session(a), Err(not_found(NotFoundKind::Session)));
}

#[test]
fn waiter_timeout_and_withdraw_end_the_wait() {
    let mut log = Log::new();
    let (a, b, c) = (log.open("a"), log.open("b"), log.open("c"));
    log.token("L", a, Mode::Exclusive);
    log.acquire("L", b, Mode::Exclusive, 500);
    log.acquire("L", c, Mode::Exclusive, 2_000);
    assert_eq!(log.sm.next_waiter_deadline_ms(), Some(1_500));
    log.now_ms = 1_499;
    assert_eq!(
        log.run(Command::ExpireWaiters),
        Reply::WaitersExpired { count: 0 }
    );
    log.now_ms = 1_500;
    let done = log.apply_keyed(Command::ExpireWaiters, None);
    assert_eq!(done.reply, Reply::WaitersExpired { count: 1 });
    assert!(matches!(
        &done.events[..],
        [Event::WaitEnded { session_id, reason: WaitEndReason::TimedOut, reply: Reply::Error(LockError::LockHeld { .. }), .. }] if *session_id == b
    ));
    let done = log.apply_keyed(
        Command::Withdraw(Withdraw {
            lock: "L".into(),
            session_id: c,
        }),
        None,
    );
    assert_eq!(done.reply, Reply::Withdrawn { was_waiting: true });
    assert_eq!(done.events.len(), 1);
    assert!(log.sm.lock("L").unwrap().waiters.is_empty());
    let again = log.run(Command::Withdraw(Withdraw {
        lock: "L".into(),
        session_id: c,
    }));
    assert_eq!(again, Reply::Withdrawn { was_waiting: false });
}

#[test]
fn release_checks_holder_and_token() {
    let mut log = Log::new();
    let (a, b) = (log.open("a"), log.open("b"));
    assert_eq!(code(&log.release("L", a, None).reply), "not_holder");
    let t1 = log.token("L", a, Mode::Exclusive);
    assert_eq!(code(&log.release("L", b, None).reply), "not_holder");
    assert_eq!(code(&log.release("L", a, Some(t1 + 1)).reply), "not_holder");
    assert_eq!(log.release("L", a, Some(t1)).reply, Reply::Released);
    let t2 = log.token("L", b, Mode::Exclusive);
    // a comes back with its old token: stale.
    assert_eq!(
        log.release("L", a, Some(t1)).reply,
        Reply::Error(LockError::StaleToken {
            current_token: Some(t2)
        })
    );
    assert_eq!(code(&log.release("L", 12345, None).reply), "not_found");
}

#[test]
fn fenced_kv_accepts_only_the_current_exclusive_token() {
    let mut log = Log::new();
    let (a, b) = (log.open("a"), log.open("b"));
    let put = |lock: &str, token| {
        Command::KvPut(KvWrite {
            key: "k".into(),
            value: "v".into(),
            fence: Some(Fence {
                lock: lock.into(),
                fencing_token: token,
            }),
        })
    };
    assert_eq!(code(&log.run(put("L", 1))), "not_holder");
    let t1 = log.token("L", a, Mode::Exclusive);
    assert_eq!(
        log.run(put("L", t1)),
        Reply::KvWritten {
            size: 1,
            last_token: Some(t1)
        }
    );
    log.release("L", a, Some(t1));
    let t2 = log.token("L", b, Mode::Exclusive);
    assert_eq!(code(&log.run(put("L", t1))), "stale_token");
    let append = Command::KvAppend(KvWrite {
        key: "k".into(),
        value: "w".into(),
        fence: Some(Fence {
            lock: "L".into(),
            fencing_token: t2,
        }),
    });
    assert_eq!(
        log.run(append),
        Reply::KvWritten {
            size: 2,
            last_token: Some(t2)
        }
    );
    // The key saw t2: a holder of another lock with an older token is stale.
    log.release("L", b, Some(t2));
    let t3 = log.token("M", a, Mode::Exclusive);
    assert!(t3 > t2);
    let tm_old = t3; // newest, fine
    assert_eq!(code(&log.run(put("M", tm_old))), "ok");
    // A shared holder cannot fence.
    let ts = log.token("S", a, Mode::Shared);
    assert_eq!(code(&log.run(put("S", ts))), "not_holder");
    // Unfenced writes are plain values.
    let plain = Command::KvPut(KvWrite {
        key: "k".into(),
        value: "x".into(),
        fence: None,
    });
    assert_eq!(
        log.run(plain),
        Reply::KvWritten {
            size: 1,
            last_token: Some(t3)
        }
    );
    assert_eq!(log.sm.kv_get("k").unwrap().value, "x");
    assert_eq!(log.sm.kv_get("nope"), Err(not_found(NotFoundKind::Key)));
}

#[test]
fn fenced_key_refuses_an_older_token_from_another_lock() {
    let mut log = Log::new();
    let a = log.open("a");
    let old = log.token("A", a, Mode::Exclusive);
    let newer = log.token("B", a, Mode::Exclusive);
    let put = |lock: &str, token| {
        Command::KvPut(KvWrite {
            key: "k".into(),
            value: "v".into(),
            fence: Some(Fence {
                lock: lock.into(),
                fencing_token: token,
            }),
        })
    };
    assert_eq!(code(&log.run(put("B", newer))), "ok");
    assert_eq!(
        log.run(put("A", old)),
        Reply::Error(LockError::StaleToken {
            current_token: Some(newer)
        })
    );
}

#[test]
fn stacks_push_pop_and_refuse_when_empty_or_unknown() {
    let mut log = Log::new();
    let pop = || {
        Command::StackPop(StackPop {
            stack: "s".into(),
            fence: None,
        })
    };
    assert_eq!(code(&log.run(pop())), "not_found");
    let push = |v: &str| {
        Command::StackPush(StackPush {
            stack: "s".into(),
            value: v.into(),
            fence: None,
        })
    };
    assert_eq!(log.run(push("a")), Reply::Pushed { size: 1 });
    assert_eq!(log.run(push("b")), Reply::Pushed { size: 2 });
    assert_eq!(
        log.sm.stack("s").unwrap(),
        StackView {
            size: 2,
            top: Some("b".into())
        }
    );
    assert_eq!(
        log.run(pop()),
        Reply::Popped {
            value: "b".into(),
            size: 1
        }
    );
    assert_eq!(
        log.run(pop()),
        Reply::Popped {
            value: "a".into(),
            size: 0
        }
    );
    assert_eq!(code(&log.run(pop())), "stack_empty");
    assert_eq!(
        log.run(Command::StackDelete(StackDelete {
            stack: "s".into(),
            fence: None
        })),
        Reply::StackDeleted
    );
    assert_eq!(log.sm.stack("s"), Err(not_found(NotFoundKind::Stack)));
}

#[test]
fn idempotent_retry_returns_the_cached_reply_errors_included() {
    let mut log = Log::new();
    let (a, b) = (log.open("a"), log.open("b"));
    let push = Command::StackPush(StackPush {
        stack: "s".into(),
        value: "x".into(),
        fence: None,
    });
    let first = log.apply_keyed(push.clone(), Some(("k1", 7))).reply;
    let retry = log.apply_keyed(push.clone(), Some(("k1", 7))).reply;
    assert_eq!(first, retry);
    assert_eq!(log.sm.stack("s").unwrap().size, 1, "applied once");
    // Another body under the same key.
    assert_eq!(
        code(&log.apply_keyed(push, Some(("k1", 8))).reply),
        "invalid_request"
    );
    // An error is cached too, even once the cause is gone.
    log.token("L", a, Mode::Exclusive);
    let acq = Command::Acquire(Acquire {
        lock: "L".into(),
        owner: Owner::Session(b),
        mode: Mode::Exclusive,
        wait_ms: 0,
    });
    assert_eq!(
        code(&log.apply_keyed(acq.clone(), Some(("k2", 1))).reply),
        "lock_held"
    );
    log.run(Command::CloseSession(CloseSession { session_id: a }));
    assert_eq!(
        code(&log.apply_keyed(acq, Some(("k2", 1))).reply),
        "lock_held"
    );
}

#[test]
fn a_queued_acquire_retry_returns_its_final_outcome() {
    let mut log = Log::new();
    let (a, b) = (log.open("a"), log.open("b"));
    let t = log.token("L", a, Mode::Exclusive);
    let acq = Command::Acquire(Acquire {
        lock: "L".into(),
        owner: Owner::Session(b),
        mode: Mode::Exclusive,
        wait_ms: 5_000,
    });
    let queued = log.apply_keyed(acq.clone(), Some(("k", 1))).reply;
    assert!(matches!(queued, Reply::Queued { .. }));
    assert_eq!(log.apply_keyed(acq.clone(), Some(("k", 1))).reply, queued);
    log.release("L", a, Some(t));
    let grant = Grant {
        session_id: b,
        mode: Mode::Exclusive,
        fencing_token: log.index,
    };
    assert_eq!(
        log.apply_keyed(acq, Some(("k", 1))).reply,
        Reply::Acquired(grant)
    );
}

#[test]
fn idempotency_entries_outlive_their_session_by_the_window() {
    let mut log = Log::new();
    let a = log.open("a");
    let keep = Command::Keepalive(Keepalive { session_id: a });
    log.apply_keyed(keep.clone(), Some(("k", 1)));
    // Inside the session's life: kept however long.
    log.now_ms += 3 * IDEMPOTENCY_WINDOW_MS;
    assert_eq!(
        log.apply_keyed(keep.clone(), Some(("k", 1))).reply,
        Reply::KeptAlive { ttl_ms: 10_000 }
    );
    log.run(Command::CloseSession(CloseSession { session_id: a }));
    log.now_ms += IDEMPOTENCY_WINDOW_MS - 1;
    assert_eq!(
        log.apply_keyed(keep.clone(), Some(("k", 1))).reply,
        Reply::KeptAlive { ttl_ms: 10_000 }
    );
    log.now_ms += 1;
    // Window passed: the key is forgotten, the command applies afresh.
    assert_eq!(
        code(&log.apply_keyed(keep, Some(("k", 1))).reply),
        "not_found"
    );
}

/// Sets the replicated bound on kept idempotency outcomes.
fn bound_idempotency(log: &mut Log, keys_max: u64) {
    let reply = log.run(Command::Configure(crate::lock::Configure {
        idempotency_keys_max: keys_max,
    }));
    assert_eq!(reply, Reply::Configured);
    assert_eq!(log.sm.idempotency_keys_max(), keys_max);
}

#[test]
fn past_the_bound_the_oldest_outcome_goes_and_no_key_is_ever_refused() {
    let mut log = Log::new();
    bound_idempotency(&mut log, IDEMPOTENCY_KEYS_MIN);
    let start_ms = log.now_ms;
    for i in 0..IDEMPOTENCY_KEYS_MIN {
        let r = log
            .apply_keyed(push("x"), Some((&format!("key{i}"), 0)))
            .reply;
        assert!(!r.is_error(), "{r:?}");
        log.now_ms += 10;
    }
    assert_eq!(
        log.sm.idempotency_window_ms(),
        None,
        "nothing forced out yet"
    );
    // One more: the oldest outcome (key0) makes room; nothing is refused.
    let r = log.apply_keyed(push("x"), Some(("new", 0))).reply;
    assert!(!r.is_error(), "{r:?}");
    assert_eq!(log.sm.idempotency.len(), IDEMPOTENCY_KEYS_MIN as usize);
    assert!(log.sm.idempotency.entry("key0").is_none());
    assert_eq!(
        log.sm.idempotency_window_ms(),
        Some(log.now_ms - start_ms),
        "the effective window is the evicted outcome's age"
    );
    // A retry just inside the window is answered from the cache...
    let size = log.sm.stack("s").unwrap().size;
    assert!(log.apply_keyed(push("x"), Some(("key1", 0))).replayed);
    assert_eq!(log.sm.stack("s").unwrap().size, size);
    // ...a retry of the evicted one is outside it: applied as new.
    assert!(!log.apply_keyed(push("x"), Some(("key0", 0))).replayed);
    assert_eq!(log.sm.stack("s").unwrap().size, size + 1);
    // A smaller bound evicts at once; out-of-range bounds are refused.
    bound_idempotency(&mut log, IDEMPOTENCY_KEYS_MIN);
    let refused = log.run(Command::Configure(crate::lock::Configure {
        idempotency_keys_max: IDEMPOTENCY_KEYS_MIN - 1,
    }));
    assert_eq!(code(&refused), "invalid_request");
    assert_eq!(log.sm.idempotency_keys_max(), IDEMPOTENCY_KEYS_MIN);
    // The bound and the ages survive a snapshot.
    let restored = LockStateMachine::restore(&log.sm.snapshot()).expect("restores");
    assert_eq!(restored, log.sm);
    log.sm.check_invariants().unwrap();
}

fn push(value: &str) -> Command {
    Command::StackPush(StackPush {
        stack: "s".into(),
        value: value.into(),
        fence: None,
    })
}

#[test]
fn acknowledged_entries_are_forgotten_and_unacknowledged_kept() {
    let mut log = Log::new();
    for seq in 1..=4 {
        log.apply_keyed(push("x"), Some((&format!("c-{seq}"), 1)));
    }
    log.apply_keyed(push("x"), Some(("other-1", 1)));
    log.apply_keyed(push("x"), Some(("plain", 1)));
    assert_eq!(log.sm.stack("s").unwrap().size, 6);
    // c-5 acknowledges c-1 and c-2 (c-3 and c-4 are still outstanding).
    log.apply_acked(push("x"), Some(("c-5", 1)), Some(3));
    assert_eq!(log.sm.stack("s").unwrap().size, 7);
    // Unacknowledged keys, other prefixes and keys of other forms: cached.
    for key in ["c-3", "c-4", "c-5", "other-1", "plain"] {
        log.apply_keyed(push("x"), Some((key, 1)));
    }
    assert_eq!(
        log.sm.stack("s").unwrap().size,
        7,
        "retries applied nothing"
    );
    // A retry of an acknowledged key is refused, never applied again.
    let r = log.apply_keyed(push("x"), Some(("c-1", 1))).reply;
    assert_acked_refusal(&r);
    assert_eq!(log.sm.stack("s").unwrap().size, 7);
    // An ack on a retry of a cached key still counts, and an ack equal to
    // the key's own seq keeps the key itself.
    log.apply_acked(push("x"), Some(("c-5", 1)), Some(5));
    assert_eq!(log.sm.stack("s").unwrap().size, 7);
    log.apply_keyed(push("x"), Some(("c-5", 1)));
    assert_eq!(log.sm.stack("s").unwrap().size, 7, "c-5 is still cached");
    let r = log.apply_keyed(push("x"), Some(("c-4", 1))).reply;
    assert_acked_refusal(&r);
    assert_eq!(log.sm.stack("s").unwrap().size, 7, "c-4 was acknowledged");
    assert!(log.sm.idempotency.entry("c-4").is_none(), "not cached");
    // Snapshots rebuild the prefix index.
    let restored = LockStateMachine::restore(&log.sm.snapshot()).unwrap();
    assert_eq!(restored, log.sm);
}

fn assert_acked_refusal(reply: &Reply) {
    match reply {
        Reply::Error(LockError::InvalidRequest { field, message }) => {
            assert_eq!(field, "Idempotency-Key");
            assert!(message.contains("already acknowledged"), "{message}");
        }
        other => panic!("expected the acknowledged-key refusal, got {other:?}"),
    }
}

#[test]
fn a_delayed_attempt_of_an_acknowledged_key_is_refused_not_applied_twice() {
    let mut log = Log::new();
    // Attempt 2 of p-5 reaches the leader and applies; attempt 1 sits in a
    // forwarding queue on another node.
    let r = log.apply_keyed(push("x"), Some(("p-5", 7))).reply;
    assert!(!r.is_error(), "{r:?}");
    assert_eq!(log.sm.stack("s").unwrap().size, 1);
    // The client has the reply and acknowledges below 6: p-5 is forgotten.
    log.now_ms += 1_000;
    log.apply_acked(push("y"), Some(("p-6", 8)), Some(6));
    assert_eq!(log.sm.stack("s").unwrap().size, 2);
    assert!(log.sm.idempotency.entry("p-5").is_none());
    // Attempt 1 finally commits: refused, not applied, not cached.
    log.now_ms += 1_000;
    let r = log.apply_keyed(push("x"), Some(("p-5", 7))).reply;
    assert_acked_refusal(&r);
    assert_eq!(log.sm.stack("s").unwrap().size, 2, "applied exactly once");
    assert!(log.sm.idempotency.entry("p-5").is_none());
    // Other prefixes are unaffected; the mark survives a snapshot.
    let r = log.apply_keyed(push("z"), Some(("q-1", 1))).reply;
    assert!(!r.is_error(), "{r:?}");
    let restored = LockStateMachine::restore(&log.sm.snapshot()).unwrap();
    assert_eq!(restored, log.sm);
    let mut again = Log {
        sm: restored,
        index: log.index,
        now_ms: log.now_ms,
        checked: true,
    };
    let r = again.apply_keyed(push("x"), Some(("p-5", 7))).reply;
    assert_acked_refusal(&r);
    assert_eq!(again.sm.stack("s").unwrap().size, 3);
}

#[test]
fn an_acknowledged_mark_expires_a_window_after_its_prefix_was_last_used() {
    let mut log = Log::new();
    log.apply_keyed(push("x"), Some(("p-1", 1)));
    log.apply_acked(push("x"), Some(("p-2", 1)), Some(2));
    assert_eq!(log.sm.idempotency.mark_count(), 1);
    // Any keyed request of the prefix keeps the mark alive.
    log.now_ms += IDEMPOTENCY_WINDOW_MS - 1;
    assert_acked_refusal(&log.apply_keyed(push("x"), Some(("p-1", 1))).reply);
    log.now_ms += IDEMPOTENCY_WINDOW_MS - 1;
    assert_acked_refusal(&log.apply_keyed(push("x"), Some(("p-1", 1))).reply);
    assert_eq!(log.sm.stack("s").unwrap().size, 2);
    // A whole window without one: the mark (and the p-2 entry) are gone, so
    // the plain window rule applies again.
    log.now_ms += IDEMPOTENCY_WINDOW_MS;
    log.run(Command::Keepalive(Keepalive { session_id: 999 }));
    // No mark left (its expiry index too: the Log checks invariants).
    assert_eq!(log.sm.idempotency.mark_count(), 0);
    let r = log.apply_keyed(push("x"), Some(("p-1", 1))).reply;
    assert!(!r.is_error(), "{r:?}");
    assert_eq!(log.sm.stack("s").unwrap().size, 3);
    log.sm.check_invariants().unwrap();
}

#[test]
fn an_ack_beyond_the_keys_own_seq_is_refused_and_changes_nothing() {
    let mut log = Log::new();
    log.apply_keyed(push("x"), Some(("c-1", 1)));
    let r = log.apply_acked(push("x"), Some(("c-2", 1)), Some(3)).reply;
    assert_eq!(code(&r), "invalid_request");
    assert_eq!(log.sm.stack("s").unwrap().size, 1);
    log.apply_keyed(push("x"), Some(("c-1", 1)));
    assert_eq!(log.sm.stack("s").unwrap().size, 1, "c-1 still cached");
    // An ack on a key of another form is ignored.
    log.apply_acked(push("x"), Some(("plain", 1)), Some(99));
    assert_eq!(log.sm.stack("s").unwrap().size, 2);
    log.apply_keyed(push("x"), Some(("c-1", 1)));
    assert_eq!(log.sm.stack("s").unwrap().size, 2);
}

#[test]
fn a_long_stream_of_acknowledged_requests_never_fills_the_cache() {
    let mut log = Log::new();
    log.checked = false;
    let a = log.open("a");
    bound_idempotency(&mut log, 1_000);
    // 16 clients interleaved, each with a few calls in flight, all in one
    // session (so no entry expires by time): 3x the cache's capacity, and
    // the bound never has to force an outcome out.
    let clients = 16u64;
    let total = 3 * 1_000;
    for i in 0..total {
        let client = i % clients;
        let seq = i / clients + 1;
        let cmd = Command::Keepalive(Keepalive { session_id: a });
        let key = format!("{client:016x}-{seq}");
        let r = log.apply_acked(cmd, Some((&key, 0)), Some(seq.saturating_sub(3).max(1)));
        assert!(!r.reply.is_error(), "request {i}: {:?}", r.reply);
    }
    log.sm.check_invariants().unwrap();
    assert!(log.sm.idempotency.len() <= 4 * clients as usize);
    assert_eq!(log.sm.idempotency_window_ms(), None);
}

#[test]
fn entries_of_ephemeral_sessions_expire_a_window_after_the_session_ends() {
    let mut log = Log::new();
    let acq = Command::Acquire(Acquire {
        lock: "L".into(),
        owner: Owner::Ephemeral {
            ttl_ms: EPHEMERAL_SESSION_TTL_MS_DEFAULT,
        },
        mode: Mode::Exclusive,
        wait_ms: 0,
    });
    let Reply::Acquired(g) = log.apply_keyed(acq.clone(), Some(("e-1", 1))).reply else {
        panic!()
    };
    let entry = log.sm.idempotency.entry("e-1").expect("cached");
    assert_eq!((entry.owner, entry.deadline_ms), (Some(g.session_id), None));
    log.now_ms += 2 * IDEMPOTENCY_WINDOW_MS;
    log.release("L", g.session_id, Some(g.fencing_token));
    assert_eq!(log.sm.session_count(), 0);
    let ended = log.now_ms;
    assert_eq!(
        log.sm.idempotency.entry("e-1").expect("cached").deadline_ms,
        Some(ended + IDEMPOTENCY_WINDOW_MS)
    );
    log.now_ms += IDEMPOTENCY_WINDOW_MS;
    log.run(Command::ExpireWaiters);
    assert!(log.sm.idempotency.len() == 0);
}

#[test]
fn acquire_without_a_session_creates_one_that_ends_with_the_lock() {
    let mut log = Log::new();
    let acq = Command::Acquire(Acquire {
        lock: "L".into(),
        owner: Owner::Ephemeral {
            ttl_ms: EPHEMERAL_SESSION_TTL_MS_DEFAULT,
        },
        mode: Mode::Exclusive,
        wait_ms: 0,
    });
    let Reply::Acquired(g) = log.run(acq.clone()) else {
        panic!()
    };
    assert_eq!(g.session_id, log.index);
    assert_eq!(log.sm.session(g.session_id).unwrap().ttl_ms, 30_000);
    // A second ephemeral try-lock fails and leaves no session behind.
    assert_eq!(code(&log.run(acq)), "lock_held");
    assert_eq!(log.sm.session_count(), 1);
    let done = log.release("L", g.session_id, Some(g.fencing_token));
    assert!(done.events.contains(&Event::SessionClosed {
        session_id: g.session_id
    }));
    assert_eq!(log.sm.session_count(), 0);
}

#[test]
fn limits_are_error_replies() {
    let mut log = Log::new();
    let a = log.open("a");
    for bad in ["", "has space", "é", &"x".repeat(NAME_BYTES_MAX + 1)] {
        assert_eq!(
            code(&log.acquire(bad, a, Mode::Exclusive, 0).reply),
            "invalid_request"
        );
    }
    assert_eq!(
        code(
            &log.acquire(&"x".repeat(NAME_BYTES_MAX), a, Mode::Exclusive, 0)
                .reply
        ),
        "ok"
    );
    assert_eq!(
        code(&log.acquire("ok:a/b-c_d.e", a, Mode::Exclusive, 0).reply),
        "ok"
    );
    assert_eq!(
        code(&log.acquire("w", a, Mode::Exclusive, WAIT_MS_MAX + 1).reply),
        "invalid_request"
    );
    for ttl_ms in [SESSION_TTL_MS_MIN - 1, SESSION_TTL_MS_MAX + 1] {
        let r = log.run(Command::OpenSession(OpenSession {
            ttl_ms,
            name: String::new(),
        }));
        assert_eq!(
            r,
            Reply::Error(LockError::invalid("ttl_ms", "must be 1000..=3600000"))
        );
    }
    let big = "v".repeat(KV_VALUE_BYTES_MAX + 1);
    assert_eq!(
        code(&log.run(Command::KvPut(KvWrite {
            key: "k".into(),
            value: big,
            fence: None
        }))),
        "invalid_request"
    );
    let half = "v".repeat(KV_VALUE_BYTES_MAX / 2 + 1);
    let app = Command::KvAppend(KvWrite {
        key: "k".into(),
        value: half,
        fence: None,
    });
    assert_eq!(code(&log.run(app.clone())), "ok");
    assert_eq!(code(&log.run(app)), "invalid_request");
    // A full queue.
    log.checked = false;
    let h = log.open("h");
    log.token("Q", h, Mode::Exclusive);
    for i in 0..WAITERS_PER_LOCK_MAX {
        let s = log.open(&format!("w{i}"));
        assert!(matches!(
            log.acquire("Q", s, Mode::Exclusive, 1_000).reply,
            Reply::Queued { .. }
        ));
    }
    let s = log.open("late");
    match log.acquire("Q", s, Mode::Exclusive, 1_000).reply {
        Reply::Error(LockError::InvalidRequest { field, .. }) => assert_eq!(field, "wait_ms"),
        other => panic!("{other:?}"),
    }
    log.sm.check_invariants().unwrap();
}

#[test]
fn locks_per_session_limit() {
    let mut log = Log::new();
    log.checked = false;
    let a = log.open("a");
    for i in 0..LOCKS_PER_SESSION_MAX {
        log.token(&format!("l{i}"), a, Mode::Exclusive);
    }
    assert_eq!(
        code(&log.acquire("one-more", a, Mode::Exclusive, 0).reply),
        "invalid_request"
    );
    // Re-acquiring a held one still answers its grant.
    assert_eq!(code(&log.acquire("l0", a, Mode::Exclusive, 0).reply), "ok");
    log.sm.check_invariants().unwrap();
}

#[test]
fn list_pages_by_name_with_prefix() {
    let mut log = Log::new();
    let a = log.open("a");
    for name in ["a/1", "a/2", "a/3", "b/1"] {
        log.token(name, a, Mode::Exclusive);
    }
    let page = log.sm.list_locks("a/", Some(2), None).unwrap();
    let names: Vec<&str> = page.locks.iter().map(|l| l.lock.as_str()).collect();
    assert_eq!(names, ["a/1", "a/2"]);
    assert_eq!(page.next.as_deref(), Some("a/2"));
    let page = log.sm.list_locks("a/", Some(2), Some("a/2")).unwrap();
    assert_eq!(page.locks.len(), 1);
    assert_eq!(page.next, None);
    assert_eq!(
        log.sm.list_locks("", Some(100), None).unwrap().locks.len(),
        4
    );
    assert!(log
        .sm
        .list_locks("", Some(LIST_LIMIT_MAX as usize + 1), None)
        .is_err());
    let free = log.sm.lock("zzz").unwrap();
    assert!(free.state == LockState::Free && free.holders.is_empty() && free.waiters.is_empty());
}

#[test]
fn validate_answers_for_the_current_holder() {
    let mut log = Log::new();
    let a = log.open("a");
    assert_eq!(
        log.sm.validate("L", 1).unwrap(),
        ValidateView {
            valid: false,
            current_token: None
        }
    );
    let t = log.token("L", a, Mode::Exclusive);
    assert_eq!(
        log.sm.validate("L", t).unwrap(),
        ValidateView {
            valid: true,
            current_token: Some(t)
        }
    );
    assert!(!log.sm.validate("L", t - 1).unwrap().valid);
}

#[test]
fn session_view_lists_locks_and_waits() {
    let mut log = Log::new();
    let (a, b) = (log.open("a"), log.open("b"));
    let t = log.token("L", a, Mode::Exclusive);
    log.acquire("L", b, Mode::Shared, 1_000);
    let v = log.sm.session(a).unwrap();
    assert_eq!(
        v.locks,
        vec![SessionLockView {
            lock: "L".into(),
            mode: Mode::Exclusive,
            fencing_token: t
        }]
    );
    let v = log.sm.session(b).unwrap();
    assert_eq!(
        v.waiting,
        vec![SessionWaitView {
            lock: "L".into(),
            mode: Mode::Shared
        }]
    );
}

#[test]
fn snapshot_round_trips_and_continues_like_the_whole_log() {
    let mut log = Log::new();
    let (a, b) = (log.open("a"), log.open("b"));
    log.token("L", a, Mode::Exclusive);
    log.apply_keyed(
        Command::Acquire(Acquire {
            lock: "L".into(),
            owner: Owner::Session(b),
            mode: Mode::Shared,
            wait_ms: 9_000,
        }),
        Some(("q", 3)),
    );
    log.run(Command::KvPut(KvWrite {
        key: "k".into(),
        value: "v".into(),
        fence: None,
    }));
    log.run(Command::StackPush(StackPush {
        stack: "s".into(),
        value: "x".into(),
        fence: None,
    }));
    log.run(Command::ExpireSessions(ExpireSessions {
        session_ids: vec![a],
    }));
    let bytes = log.sm.snapshot();
    let restored = LockStateMachine::restore(&bytes).unwrap();
    assert_eq!(restored, log.sm);

    let mut other = Log {
        sm: restored,
        index: log.index,
        now_ms: log.now_ms,
        checked: true,
    };
    let rest = [
        Command::Release(Release {
            lock: "L".into(),
            session_id: b,
            fencing_token: None,
        }),
        Command::ExpireWaiters,
    ];
    for cmd in rest {
        assert_eq!(log.run(cmd.clone()), other.run(cmd));
    }
    assert_eq!(log.sm, other.sm);

    let mut flipped = bytes.clone();
    flipped[3] ^= 1;
    assert!(LockStateMachine::restore(&flipped).is_err());
    assert!(LockStateMachine::restore(&[]).is_err());
}

#[test]
fn clock_never_goes_back_with_a_lagging_leader() {
    let mut log = Log::new();
    let (a, b) = (log.open("a"), log.open("b"));
    log.token("L", a, Mode::Exclusive);
    log.now_ms = 10_000;
    log.acquire("L", b, Mode::Exclusive, 1_000);
    log.now_ms = 500; // new leader, clock behind
    log.run(Command::ExpireWaiters);
    assert_eq!(log.sm.clock_ms(), 10_000);
    assert_eq!(log.sm.lock("L").unwrap().waiters.len(), 1);
}

#[test]
fn times_at_the_end_of_the_clock_do_not_overflow() {
    let mut log = Log::new();
    let (a, b) = (log.open("a"), log.open("b"));
    log.token("L", a, Mode::Exclusive);
    log.now_ms = u64::MAX;
    log.apply_keyed(
        Command::Acquire(Acquire {
            lock: "L".into(),
            owner: Owner::Session(b),
            mode: Mode::Exclusive,
            wait_ms: WAIT_MS_MAX,
        }),
        Some(("k", 1)),
    );
    log.run(Command::ExpireSessions(ExpireSessions {
        session_ids: vec![a],
    }));
    log.run(Command::ExpireWaiters);
    log.run(Command::CloseSession(CloseSession { session_id: b }));
    let mut lease = LeaseTracker::new();
    lease.renew(1, SESSION_TTL_MS_MAX, u64::MAX);
    assert_eq!(lease.expired(u64::MAX), vec![1]);
}

proptest::proptest! {
    #[test]
    fn restore_of_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512)) {
        let _ = LockStateMachine::restore(&bytes);
        // With a valid checksum too, so the decoder itself is exercised.
        let mut checked = bytes.clone();
        checked.extend_from_slice(&codec::checksum(&bytes).to_le_bytes());
        let _ = LockStateMachine::restore(&checked);
    }
}

/// Issue 13, bug 7: retries answered from the idempotency cache after their
/// session ended (a replayed `SessionOpened` or `KeptAlive`) must not bring
/// the session back in the leader's lease tracker, which would then propose
/// an `ExpireSessions` for it at every maintenance tick.
#[test]
fn a_replayed_reply_does_not_resurrect_an_ended_session_in_the_lease_tracker() {
    let mut log = Log::new();
    let mut tracker = LeaseTracker::new();
    let feed =
        |log: &mut Log, tracker: &mut LeaseTracker, command: Command, key: Option<(&str, u64)>| {
            let envelope = Envelope {
                now_ms: log.now_ms,
                idempotency: None,
                command: command.clone(),
            };
            let applied = log.apply_keyed(command, key);
            tracker.observe_applied(&envelope, &applied, &log.sm);
            applied
        };
    let open = Command::OpenSession(OpenSession {
        ttl_ms: 10_000,
        name: "s".into(),
    });
    let Reply::SessionOpened { session_id, .. } =
        feed(&mut log, &mut tracker, open.clone(), Some(("c-1", 1))).reply
    else {
        panic!("open failed");
    };
    let keepalive = Command::Keepalive(Keepalive { session_id });
    assert!(!feed(&mut log, &mut tracker, keepalive.clone(), Some(("c-2", 2))).replayed);
    let close = Command::CloseSession(CloseSession { session_id });
    assert_eq!(
        feed(&mut log, &mut tracker, close, None).reply,
        Reply::SessionClosed
    );
    assert!(tracker.expired(u64::MAX).is_empty());

    let replayed = feed(&mut log, &mut tracker, keepalive, Some(("c-2", 2)));
    assert!(replayed.replayed, "{replayed:?}");
    assert!(feed(&mut log, &mut tracker, open, Some(("c-1", 1))).replayed);
    assert_eq!(tracker.expired(u64::MAX), Vec::<SessionId>::new());
    assert_eq!(tracker.next_deadline_ms(), None);
}

/// Issue 13, bug 5: one client filling the idempotency cache (with keys
/// inside their window, or owned by its live session, which never expire)
/// must not cost another client its lease: a keyed keepalive is answered (and renews) whatever the cache
/// holds. A keepalive is idempotent by nature, so it needs no cached reply.
#[test]
fn a_full_idempotency_cache_never_refuses_a_keepalive() {
    let mut log = Log::new();
    bound_idempotency(&mut log, IDEMPOTENCY_KEYS_MIN);
    let victim = log.open("victim");
    for i in 0..IDEMPOTENCY_KEYS_MIN {
        let cmd = Command::KvPut(KvWrite {
            key: "k".into(),
            value: String::new(),
            fence: None,
        });
        let r = log.apply_keyed(cmd, Some((&format!("hog-{i}"), 0))).reply;
        assert!(!r.is_error(), "{r:?}");
    }
    let keepalive = Command::Keepalive(Keepalive { session_id: victim });
    let applied = log.apply_keyed(keepalive.clone(), Some(("victim-1", 7)));
    assert!(
        matches!(applied.reply, Reply::KeptAlive { .. }),
        "{:?}",
        applied.reply
    );
    // A retry with the same key renews again rather than being refused.
    let again = log.apply_keyed(keepalive, Some(("victim-1", 7)));
    assert!(matches!(again.reply, Reply::KeptAlive { .. }), "{again:?}");
    log.sm.check_invariants().expect("invariants hold");
}

/// Issue 13, bug 6: the replicated state records, in state time, when each
/// session's lease was last renewed (what a new leader measures from), by
/// one rule: open, keepalive, any acquire by the session, a grant after a
/// wait to an ephemeral session; a replayed reply and other commands renew
/// nothing, and the time never goes back.
#[test]
fn the_state_records_each_lease_renewal_in_state_time() {
    let mut log = Log::new();
    let renewed_at = |log: &Log, s| log.sm.session_lease(s).map(|l| l.renewed_at_ms);
    let a = log.open("a");
    let b = log.open("b");
    assert_eq!(renewed_at(&log, a), Some(1_000));

    log.now_ms = 2_000;
    let keepalive = Command::Keepalive(Keepalive { session_id: a });
    let applied = log.apply_keyed(keepalive.clone(), Some(("a-1", 1)));
    assert_eq!(applied.renewed, vec![a]);
    assert_eq!(renewed_at(&log, a), Some(2_000));
    assert_eq!(
        renewed_at(&log, b),
        Some(1_000),
        "only the session kept alive"
    );

    // A retry answered from the cache is history, not a sign of life.
    log.now_ms = 3_000;
    let replayed = log.apply_keyed(keepalive, Some(("a-1", 1)));
    assert!(
        replayed.replayed && replayed.renewed.is_empty(),
        "{replayed:?}"
    );
    assert_eq!(renewed_at(&log, a), Some(2_000));

    // Any acquire by the session renews it, a refused one too (it acts).
    log.token("L", a, Mode::Exclusive);
    assert_eq!(renewed_at(&log, a), Some(3_000));
    log.now_ms = 3_500;
    let refused = log.acquire("L", b, Mode::Exclusive, 0);
    assert_eq!(code(&refused.reply), "lock_held");
    assert_eq!(refused.renewed, vec![b]);

    // A waiting acquire without a session: renewed when queued and again
    // when granted, not by the release that granted it to anyone else.
    log.now_ms = 4_000;
    let wait = log.apply_keyed(
        Command::Acquire(Acquire {
            lock: "L".into(),
            owner: Owner::Ephemeral { ttl_ms: 1_000 },
            mode: Mode::Exclusive,
            wait_ms: 10_000,
        }),
        None,
    );
    let Reply::Queued { session_id: e, .. } = wait.reply else {
        panic!("not queued: {wait:?}");
    };
    assert_eq!(wait.renewed, vec![e]);
    log.now_ms = 9_000;
    let release = log.release("L", a, None);
    assert_eq!(granted(&release.events).len(), 1);
    assert_eq!(
        release.renewed,
        vec![e],
        "the releasing session is not renewed"
    );
    assert_eq!(renewed_at(&log, e), Some(9_000));
    assert_eq!(renewed_at(&log, a), Some(3_000));

    // A stamp behind state time (a new leader that had not applied its
    // predecessor's last entries) renews at state time, never earlier.
    log.now_ms = 8_000;
    log.run(Command::Keepalive(Keepalive { session_id: b }));
    assert_eq!(renewed_at(&log, b), Some(9_000));

    // And the snapshot keeps it.
    let restored = LockStateMachine::restore(&log.sm.snapshot()).expect("restores");
    assert_eq!(restored, log.sm);
}
