//! Simulated clients: each runs the real `deadbolt-client` over simulated TCP
//! against every node's API, drives a seeded mix of lock, KV and stack
//! operations, and records every invocation and answer (see the crate doc
//! for what is recorded when).
//!
//! Sessions come in two flavours: "managed" (the client crate's `Session`,
//! background keepalive and lost-lease signal) and "manual" (keepalives sent
//! here, and sometimes deliberately stopped so the session expires while the
//! client still thinks it holds its lock). Some clients are "reckless": they
//! keep writing to the downstream resource after their lease is lost, as a
//! paused or partitioned process would; the fencing token must stop them.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use deadbolt_client::api::{
    AcquireRequest, CreateSessionRequest, KvWriteRequest, LockMode as ApiMode, SessionId,
    StackPopRequest, StackPushRequest,
};
use deadbolt_client::{Client, ClientBuilder, Error, Session, SessionOptions};
use deadbolt_runtime::SplitMix64;
use tokio::time::Instant;

use super::recorder::Shared;
use crate::history::{
    ClientId, Fence, KvInput, KvOutput, LockEvent, LockInput, LockMode, LockOutput, OpId, OpInput,
    OpOutput, StackInput, StackOutput,
};

/// Objects the workload touches. Few, so that operations contend.
pub(crate) const LOCKS: u64 = 3;
pub(crate) const FREE_APPEND_KEY: &str = "free-append";
pub(crate) const REGISTER_KEY: &str = "register";
pub(crate) const STACKS: [&str; 2] = ["stack-0", "stack-1"];

pub(crate) fn lock_name(i: u64) -> String {
    format!("lock-{i}")
}
/// Appended to only while holding `lock-i` exclusively, with its token.
pub(crate) fn fenced_key(i: u64) -> String {
    format!("append-{i}")
}
/// The downstream resource guarded by `lock-i`.
fn resource_name(i: u64) -> String {
    format!("db-{i}")
}

/// Every key whose final value the durability check reads back.
pub(crate) fn append_keys() -> Vec<String> {
    let mut keys: Vec<String> = (0..LOCKS).map(fenced_key).collect();
    keys.push(FREE_APPEND_KEY.to_owned());
    keys
}

/// A client built for the simulation: short deadlines so that a run's
/// operations end (with an answer or an unknown outcome) within seconds.
/// About half the clients (by seed) ignore the leader hint, so requests
/// through followers, and their forwarding, stay exercised.
pub(crate) fn build_client(endpoints: &[String], seed: u64, keyed: bool) -> Client {
    ClientBuilder::new(endpoints.iter().cloned())
        .seed(seed)
        .follow_leader(seed % 2 == 0)
        .idempotency_keys(keyed)
        .request_timeout(Duration::from_secs(2))
        .call_timeout(Duration::from_secs(6))
        .attempts_max(6)
        .backoff(Duration::from_millis(50), Duration::from_millis(500))
        .retry_after_max(Duration::from_secs(1))
        .build()
        .expect("the simulation's client configuration is valid")
}

/// About a quarter of the clients (by seed, no extra draw) send no
/// idempotency keys, as a plain HTTP client may: their 503s are taken at the
/// contract's word ("safe to retry": nothing was applied), and any copy of
/// a request the cluster applies twice shows up as an effect without an op.
/// (They found a duplicated `Forward` frame proposed twice: seed 23.)
pub(crate) fn keyed_client(seed: u64) -> bool {
    (seed >> 8) % 4 != 0
}

fn api_mode(mode: LockMode) -> ApiMode {
    match mode {
        LockMode::Exclusive => ApiMode::Exclusive,
        LockMode::Shared => ApiMode::Shared,
    }
}

fn from_api_mode(mode: ApiMode) -> LockMode {
    match mode {
        ApiMode::Exclusive => LockMode::Exclusive,
        ApiMode::Shared => LockMode::Shared,
    }
}

/// Whether an error settles a mutation as "not applied". Everything else
/// (timeouts, lost connections, 503 after an attempt that may have been
/// proposed) leaves the outcome unknown: recording it as unknown is always
/// sound, only slower to check.
fn is_unknown(e: &Error) -> bool {
    e.outcome_unknown() || matches!(e, Error::Unavailable { .. } | Error::Protocol { .. })
}

/// The client's belief about its lease.
struct Lease {
    id: SessionId,
    kind: LeaseKind,
    /// The session's end was recorded (belief lost, deleted or expired).
    ended: Arc<AtomicBool>,
}

enum LeaseKind {
    Managed(Session),
    Manual {
        valid_until: Arc<Mutex<Instant>>,
        keepalive_stopped: Arc<AtomicBool>,
        keepalive: tokio::task::JoinHandle<()>,
    },
}

impl Lease {
    fn alive(&self) -> bool {
        if self.ended.load(Ordering::SeqCst) {
            return false;
        }
        match &self.kind {
            LeaseKind::Managed(s) => !s.is_lost(),
            LeaseKind::Manual { valid_until, .. } => {
                Instant::now() < *valid_until.lock().unwrap_or_else(|e| e.into_inner())
            }
        }
    }

    fn stop(self) {
        match self.kind {
            // Dropping stops the keepalives and deletes the session in the
            // background: an end the harness does not see, recorded as an
            // open `EndSession` at the end of the workload.
            LeaseKind::Managed(s) => drop(s),
            LeaseKind::Manual { keepalive, .. } => keepalive.abort(),
        }
    }
}

/// Records `SessionEnded` at the instant the client stops believing in its
/// lease: holds end there from the client's point of view. (With a node
/// observation hook this becomes the first apply of the expiry.)
fn watch_lease(rec: Shared, lease_id: SessionId, kind: &LeaseKind, ended: Arc<AtomicBool>) {
    match kind {
        LeaseKind::Managed(s) => {
            let lost = s.lease_watch();
            tokio::spawn(async move {
                let mut lost = lost;
                loop {
                    let state = lost.get_and_update();
                    match state {
                        deadbolt_client::LeaseState::Lost(_) => break,
                        deadbolt_client::LeaseState::Alive { valid_until } => {
                            tokio::select! {
                                biased;
                                () = tokio::time::sleep_until(valid_until) => break,
                                changed = lost.changed() => if changed.is_err() { break },
                            }
                        }
                    }
                }
                if !ended.swap(true, Ordering::SeqCst) {
                    rec.lock().lock_event(LockEvent::SessionEnded {
                        session: lease_id.to_string(),
                    });
                }
            });
        }
        LeaseKind::Manual { valid_until, .. } => {
            let valid_until = valid_until.clone();
            tokio::spawn(async move {
                loop {
                    let until = *valid_until.lock().unwrap_or_else(|e| e.into_inner());
                    tokio::time::sleep_until(until).await;
                    if ended.load(Ordering::SeqCst) {
                        return;
                    }
                    let now_until = *valid_until.lock().unwrap_or_else(|e| e.into_inner());
                    if now_until <= Instant::now() {
                        break;
                    }
                }
                if !ended.swap(true, Ordering::SeqCst) {
                    rec.lock().lock_event(LockEvent::SessionEnded {
                        session: lease_id.to_string(),
                    });
                }
            });
        }
    }
}

/// A lock held in a lock cycle: its index among the workload's locks, its
/// name, mode and fencing token.
struct Hold {
    i: u64,
    lock: String,
    mode: LockMode,
    token: u64,
}

pub(crate) struct ClientTask {
    pub(crate) id: ClientId,
    pub(crate) client: Client,
    pub(crate) rec: Shared,
    pub(crate) rng: SplitMix64,
    pub(crate) stop: Arc<AtomicBool>,
    /// Uses manual keepalives (and sometimes stops them).
    pub(crate) manual: bool,
    /// Writes downstream even after its lease is lost.
    pub(crate) reckless: bool,
    /// Sends idempotency keys (see [`keyed_client`]).
    pub(crate) keyed: bool,
    pub(crate) ttl_ms: u64,
    pub(crate) values: u64,
}

impl ClientTask {
    fn next_value(&mut self) -> String {
        self.values += 1;
        format!("<c{}-{}>", self.id, self.values)
    }

    fn invoke(&self, input: OpInput) -> OpId {
        self.rec.lock().invoke(self.id, input)
    }

    fn done(&self, op: OpId, output: OpOutput) {
        self.rec.lock().complete(op, output);
    }

    fn unknown(&self, op: OpId, e: &Error) {
        if !self.keyed && matches!(e, Error::Unavailable { .. }) {
            self.rec.lock().not_applied(op, &e.to_string());
        } else {
            self.rec.lock().unknown(op, &e.to_string());
        }
    }

    async fn open_session(&mut self) -> Option<Lease> {
        let ttl = Duration::from_millis(self.ttl_ms);
        let ended = Arc::new(AtomicBool::new(false));
        let (id, kind) = if self.manual {
            let sent_at = Instant::now();
            let created = self
                .client
                .create_session(&CreateSessionRequest {
                    ttl_ms: self.ttl_ms,
                    name: Some(format!("c{}", self.id)),
                })
                .await
                .ok()?;
            let valid_until = Arc::new(Mutex::new(deadbolt_client::lease_deadline(
                sent_at,
                ttl,
                deadbolt_client::DRIFT_ALLOWANCE_DEFAULT,
            )));
            let keepalive_stopped = Arc::new(AtomicBool::new(false));
            let keepalive = tokio::spawn(manual_keepalive(
                self.client.clone(),
                created.session_id,
                ttl,
                valid_until.clone(),
                keepalive_stopped.clone(),
            ));
            (
                created.session_id,
                LeaseKind::Manual {
                    valid_until,
                    keepalive_stopped,
                    keepalive,
                },
            )
        } else {
            let session = self
                .client
                .session(SessionOptions {
                    ttl,
                    name: Some(format!("c{}", self.id)),
                    ..SessionOptions::default()
                })
                .await
                .ok()?;
            (session.id(), LeaseKind::Managed(session))
        };
        self.rec.lock().session_opened(self.id, &id.to_string());
        watch_lease(self.rec.clone(), id, &kind, ended.clone());
        self.rec.lock().harness(format!(
            "c{} opened session {id} ({}, ttl {} ms)",
            self.id,
            if self.manual { "manual" } else { "managed" },
            self.ttl_ms
        ));
        Some(Lease { id, kind, ended })
    }

    /// The cluster told us the session is gone (410/404): one `EndSession`
    /// op from the last moment it was known alive to now.
    fn session_gone(&self, lease: &Lease) {
        let mut rec = self.rec.lock();
        rec.session_end_op(&lease.id.to_string(), true);
        if !lease.ended.swap(true, Ordering::SeqCst) {
            rec.lock_event(LockEvent::SessionEnded {
                session: lease.id.to_string(),
            });
        }
    }

    /// Deletes the session (recorded as an `EndSession` op; its holds end
    /// when the delete is sent, like a release).
    async fn close_session(&self, lease: Lease) {
        let session = lease.id.to_string();
        if !lease.ended.swap(true, Ordering::SeqCst) {
            self.rec.lock().lock_event(LockEvent::SessionEnded {
                session: session.clone(),
            });
        }
        let id = lease.id;
        lease.stop();
        match self.client.delete_session(id).await {
            // Deleted, or already gone: either way it has ended.
            Ok(()) | Err(Error::SessionExpired { .. } | Error::NotFound { .. }) => {
                self.rec.lock().session_end_op(&session, true)
            }
            // Unknown: recorded as open at the end of the workload.
            Err(_) => {}
        }
    }

    pub(crate) async fn run(mut self) {
        let mut lease: Option<Lease> = None;
        while !self.stop.load(Ordering::SeqCst) {
            if lease.as_ref().is_none_or(|l| !l.alive()) {
                if let Some(old) = lease.take() {
                    old.stop();
                }
                lease = self.open_session().await;
                if lease.is_none() {
                    tokio::time::sleep(Duration::from_millis(self.rng.range_u64(50, 500))).await;
                    continue;
                }
            }
            let roll = self.rng.range_u64(0, 100);
            let current = lease.as_ref().expect("opened above");
            let keep = match roll {
                0..=44 => self.lock_cycle(current).await,
                45..=59 => self.stack_op(None).await.then_some(()).is_some(),
                60..=69 => {
                    self.free_append().await;
                    true
                }
                70..=79 => {
                    self.register_op().await;
                    true
                }
                80..=91 => {
                    self.read_op().await;
                    true
                }
                92..=95 if self.manual => {
                    // Stop keeping alive for a while: longer than the TTL
                    // half of the time, so the session expires under us.
                    if let LeaseKind::Manual {
                        keepalive_stopped, ..
                    } = &current.kind
                    {
                        keepalive_stopped.store(true, Ordering::SeqCst);
                        let pause = self.rng.range_u64(self.ttl_ms / 2, self.ttl_ms * 2);
                        self.rec
                            .lock()
                            .harness(format!("c{} stops keepalives for {pause} ms", self.id));
                        let stopped = keepalive_stopped.clone();
                        tokio::spawn(async move {
                            tokio::time::sleep(Duration::from_millis(pause)).await;
                            stopped.store(false, Ordering::SeqCst);
                        });
                    }
                    true
                }
                _ => false,
            };
            if !keep {
                if let Some(l) = lease.take() {
                    self.close_session(l).await;
                }
            }
            let think = self.rng.range_u64(0, 200);
            tokio::time::sleep(Duration::from_millis(think)).await;
        }
        if let Some(l) = lease.take() {
            l.stop();
        }
    }

    /// Acquire, (if exclusive) fenced appends and downstream writes while
    /// holding, release. False when the session should be dropped (an
    /// acquire with an unknown outcome may hold the lock unseen).
    async fn lock_cycle(&mut self, lease: &Lease) -> bool {
        let hold = match self.acquire_lock(lease).await {
            Ok(hold) => hold,
            Err(keep_session) => return keep_session,
        };
        // Hold it for a while, working under the token.
        self.work_under(lease, &hold).await;
        if !lease.alive() {
            // The hold already ended for the checker (lease lost); a new
            // session will be opened.
            return false;
        }
        if self.rng.chance(1, 10) {
            // Walk away without releasing: the session's end frees it.
            return false;
        }
        self.release_lock(lease, hold).await
    }

    /// Draws a lock, a mode and a wait, and acquires. Err(keep the session)
    /// when the cycle ends here without a hold.
    async fn acquire_lock(&mut self, lease: &Lease) -> Result<Hold, bool> {
        let i = self.rng.range_u64(0, LOCKS);
        let lock = lock_name(i);
        let mode = if self.rng.chance(1, 4) {
            LockMode::Shared
        } else {
            LockMode::Exclusive
        };
        let wait_ms = if self.rng.chance(1, 2) {
            0
        } else {
            self.rng.range_u64(100, 3_000)
        };
        let session = lease.id.to_string();
        let op = self.invoke(OpInput::Lock(LockInput::Acquire {
            lock: lock.clone(),
            session: session.clone(),
            mode,
        }));
        let request = AcquireRequest {
            session_id: Some(lease.id),
            mode: api_mode(mode),
            wait_ms,
            ttl_ms: None,
        };
        match self.client.acquire(&lock, &request).await {
            Ok(grant) => {
                self.done(
                    op,
                    OpOutput::Lock(LockOutput::Granted {
                        token: grant.fencing_token,
                    }),
                );
                // A grant that arrives after the lease is believed lost is
                // not relied on (the client crate's `Session::lock` does the
                // same): no hold for the checker.
                if !lease.alive() {
                    return Err(false);
                }
                self.rec.lock().lock_event(LockEvent::Granted {
                    lock: lock.clone(),
                    session,
                    client: self.id,
                    mode: from_api_mode(grant.mode),
                    token: grant.fencing_token,
                });
                Ok(Hold {
                    i,
                    lock,
                    mode,
                    token: grant.fencing_token,
                })
            }
            Err(Error::LockHeld { .. }) => {
                self.done(op, OpOutput::Lock(LockOutput::Held));
                Err(true)
            }
            Err(Error::SessionExpired { .. }) => {
                self.done(op, OpOutput::Lock(LockOutput::SessionExpired));
                self.session_gone(lease);
                Err(false)
            }
            Err(e) => {
                self.unknown(op, &e);
                Err(!is_unknown(&e) && !matches!(e, Error::NotFound { .. }))
            }
        }
    }

    /// Up to three steps of work under the hold (downstream writes, fenced
    /// stack ops and appends if exclusive, reads if shared), each followed
    /// by a pause. A reckless client goes on after it believes its lease
    /// lost.
    async fn work_under(&mut self, lease: &Lease, hold: &Hold) {
        let Hold {
            i,
            ref lock,
            mode,
            token,
        } = *hold;
        let writes = self.rng.range_u64(0, 4);
        for _ in 0..writes {
            let believed = lease.alive();
            if !believed && !self.reckless {
                break;
            }
            if mode == LockMode::Exclusive {
                if self.rng.chance(1, 2) {
                    self.rec
                        .lock()
                        .resource_write(self.id, &resource_name(i), lock, token);
                } else if self.rng.chance(1, 3) {
                    let fence = Fence {
                        lock: lock.clone(),
                        token,
                    };
                    self.stack_op(Some(fence)).await;
                } else {
                    self.fenced_append(i, lock, token).await;
                }
            } else {
                self.read_op().await;
            }
            let pause_ms = self.rng.range_u64(0, 400);
            tokio::time::sleep(Duration::from_millis(pause_ms)).await;
        }
    }

    /// Releases the hold. False when the session should be dropped.
    async fn release_lock(&mut self, lease: &Lease, hold: Hold) -> bool {
        let Hold { lock, token, .. } = hold;
        let session = lease.id.to_string();
        self.rec.lock().lock_event(LockEvent::ReleaseSent {
            lock: lock.clone(),
            session: session.clone(),
            token,
        });
        let op = self.invoke(OpInput::Lock(LockInput::Release {
            lock: lock.clone(),
            session,
            token,
        }));
        match self.client.release(&lock, lease.id, Some(token)).await {
            Ok(()) => {
                self.done(op, OpOutput::Lock(LockOutput::Released));
                true
            }
            Err(Error::SessionExpired { .. }) => {
                self.done(op, OpOutput::Lock(LockOutput::ReleaseRefused));
                self.session_gone(lease);
                false
            }
            Err(e @ (Error::NotHolder { .. } | Error::StaleToken { .. })) => {
                self.done(op, OpOutput::Lock(LockOutput::ReleaseRefused));
                let _ = e;
                true
            }
            Err(e) => {
                self.unknown(op, &e);
                false
            }
        }
    }

    async fn fenced_append(&mut self, i: u64, lock: &str, token: u64) {
        let key = fenced_key(i);
        let value = self.next_value();
        let fence = Fence {
            lock: lock.to_owned(),
            token,
        };
        let op = self.invoke(OpInput::Kv(KvInput::Append {
            key: key.clone(),
            value: value.clone(),
            fence: Some(fence),
        }));
        let request = KvWriteRequest {
            value,
            lock: Some(lock.to_owned()),
            fencing_token: Some(token),
        };
        match self.client.kv_append(&key, &request).await {
            Ok(w) => self.done(
                op,
                OpOutput::Kv(KvOutput::Written {
                    size: w.size as usize,
                    last_token: w.last_token,
                }),
            ),
            Err(
                Error::NotHolder { .. } | Error::StaleToken { .. } | Error::SessionExpired { .. },
            ) => self.done(op, OpOutput::Kv(KvOutput::Refused)),
            Err(e) => self.unknown(op, &e),
        }
    }

    async fn free_append(&mut self) {
        let value = self.next_value();
        let op = self.invoke(OpInput::Kv(KvInput::Append {
            key: FREE_APPEND_KEY.into(),
            value: value.clone(),
            fence: None,
        }));
        let request = KvWriteRequest {
            value,
            lock: None,
            fencing_token: None,
        };
        match self.client.kv_append(FREE_APPEND_KEY, &request).await {
            Ok(w) => self.done(
                op,
                OpOutput::Kv(KvOutput::Written {
                    size: w.size as usize,
                    last_token: w.last_token,
                }),
            ),
            Err(e) => self.unknown(op, &e),
        }
    }

    async fn register_op(&mut self) {
        if self.rng.chance(1, 2) {
            let value = self.next_value();
            let op = self.invoke(OpInput::Kv(KvInput::Put {
                key: REGISTER_KEY.into(),
                value: value.clone(),
                fence: None,
            }));
            let request = KvWriteRequest {
                value,
                lock: None,
                fencing_token: None,
            };
            match self.client.kv_put(REGISTER_KEY, &request).await {
                Ok(w) => self.done(
                    op,
                    OpOutput::Kv(KvOutput::Written {
                        size: w.size as usize,
                        last_token: w.last_token,
                    }),
                ),
                Err(e) => self.unknown(op, &e),
            }
        } else {
            self.get(REGISTER_KEY).await;
        }
    }

    async fn get(&mut self, key: &str) {
        let op = self.invoke(OpInput::Kv(KvInput::Get { key: key.into() }));
        match self.client.kv_get(key).await {
            Ok(r) => self.done(
                op,
                OpOutput::Kv(KvOutput::Read {
                    value: r.value,
                    last_token: r.last_token,
                }),
            ),
            Err(Error::NotFound { .. }) => self.done(op, OpOutput::Kv(KvOutput::NotFound)),
            Err(e) => self.unknown(op, &e),
        }
    }

    async fn read_op(&mut self) {
        match self.rng.range_u64(0, 3) {
            0 => {
                let lock = lock_name(self.rng.range_u64(0, LOCKS));
                let op = self.invoke(OpInput::Lock(LockInput::Read { lock: lock.clone() }));
                match self.client.lock_state(&lock).await {
                    Ok(state) => {
                        let mode = state.mode.map(from_api_mode).unwrap_or(LockMode::Exclusive);
                        let holders = state
                            .holders
                            .iter()
                            .map(|h| (h.session_id.to_string(), mode, h.fencing_token))
                            .collect();
                        self.done(op, OpOutput::Lock(LockOutput::State { holders }))
                    }
                    Err(e) => self.unknown(op, &e),
                }
            }
            1 => {
                let key = if self.rng.chance(1, 2) {
                    FREE_APPEND_KEY.to_owned()
                } else {
                    fenced_key(self.rng.range_u64(0, LOCKS))
                };
                self.get(&key).await;
            }
            _ => {
                let stack = STACKS[self.rng.range_u64(0, STACKS.len() as u64) as usize];
                let op = self.invoke(OpInput::Stack(StackInput::Peek {
                    stack: stack.into(),
                }));
                match self.client.stack_get(stack).await {
                    Ok(s) => self.done(
                        op,
                        OpOutput::Stack(StackOutput::Peeked {
                            size: s.size as usize,
                            top: s.top,
                        }),
                    ),
                    Err(Error::NotFound { .. }) => {
                        self.done(op, OpOutput::Stack(StackOutput::NotFound))
                    }
                    Err(e) => self.unknown(op, &e),
                }
            }
        }
    }

    /// A push or a pop, fenced when `fence` is given. Returns true (kept for
    /// symmetry with the other steps).
    async fn stack_op(&mut self, fence: Option<Fence>) -> bool {
        let stack = STACKS[self.rng.range_u64(0, STACKS.len() as u64) as usize];
        let (lock, fencing_token) = match &fence {
            Some(f) => (Some(f.lock.clone()), Some(f.token)),
            None => (None, None),
        };
        if self.rng.chance(3, 5) {
            let value = self.next_value();
            let op = self.invoke(OpInput::Stack(StackInput::Push {
                stack: stack.into(),
                value: value.clone(),
                fence,
            }));
            let request = StackPushRequest {
                value,
                lock,
                fencing_token,
            };
            match self.client.stack_push(stack, &request).await {
                Ok(r) => self.done(
                    op,
                    OpOutput::Stack(StackOutput::Pushed {
                        size: r.size as usize,
                    }),
                ),
                Err(
                    Error::NotHolder { .. }
                    | Error::StaleToken { .. }
                    | Error::SessionExpired { .. },
                ) => self.done(op, OpOutput::Stack(StackOutput::Refused)),
                Err(e) => self.unknown(op, &e),
            }
        } else {
            let op = self.invoke(OpInput::Stack(StackInput::Pop {
                stack: stack.into(),
                fence,
            }));
            let request = StackPopRequest {
                lock,
                fencing_token,
            };
            match self.client.stack_pop(stack, &request).await {
                Ok(r) => self.done(
                    op,
                    OpOutput::Stack(StackOutput::Popped {
                        value: r.value,
                        size: r.size as usize,
                    }),
                ),
                Err(Error::StackEmpty) => self.done(op, OpOutput::Stack(StackOutput::Empty)),
                Err(Error::NotFound { .. }) => {
                    self.done(op, OpOutput::Stack(StackOutput::NotFound))
                }
                Err(
                    Error::NotHolder { .. }
                    | Error::StaleToken { .. }
                    | Error::SessionExpired { .. },
                ) => self.done(op, OpOutput::Stack(StackOutput::Refused)),
                Err(e) => self.unknown(op, &e),
            }
        }
        true
    }
}

/// Keepalives every third of the TTL unless stopped; extends the believed
/// lease exactly as the client crate does (from the send time, less the
/// drift allowance).
async fn manual_keepalive(
    client: Client,
    id: SessionId,
    ttl: Duration,
    valid_until: Arc<Mutex<Instant>>,
    stopped: Arc<AtomicBool>,
) {
    let interval = ttl / 3;
    loop {
        tokio::time::sleep(interval).await;
        if stopped.load(Ordering::SeqCst) {
            continue;
        }
        let sent_at = Instant::now();
        match client.keepalive(id).await {
            Ok(answer) => {
                let ttl = Duration::from_millis(answer.ttl_ms).min(ttl);
                let until = deadbolt_client::lease_deadline(
                    sent_at,
                    ttl,
                    deadbolt_client::DRIFT_ALLOWANCE_DEFAULT,
                );
                let mut v = valid_until.lock().unwrap_or_else(|e| e.into_inner());
                *v = (*v).max(until);
            }
            Err(Error::SessionExpired { .. } | Error::NotFound { .. }) => return,
            Err(_) => {}
        }
    }
}
