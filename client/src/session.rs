//! Sessions with a background keepalive and a lost-lease signal, and the
//! `Lock` guard that holds a grant of one.
//!
//! The client can never know that its lease is alive, only that it was: a
//! successful keepalive sent at `t` proves the server's lease ran at least
//! until `t + ttl` by the leader's clock. Clocks drift, so the client trusts
//! the lease until `t + ttl × (1 − drift allowance)` and declares it lost the
//! moment that passes without a newer successful keepalive. Fencing tokens
//! keep downstream resources safe when even that guess is wrong.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use deadbolt_api::limits::{
    SESSION_TTL_MS_DEFAULT, SESSION_TTL_MS_MAX, SESSION_TTL_MS_MIN, WAIT_MS_MAX,
};
use deadbolt_api::{AcquireRequest, AcquireResponse, CreateSessionRequest, LockMode, SessionId};
use tokio::sync::{oneshot, Notify};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::grants::{Acquiring, Grants};
use crate::{waiting, Client, Error};

/// Share of the TTL assumed lost to clock drift between client and leader.
pub const DRIFT_ALLOWANCE_DEFAULT: f64 = 0.1;
/// How often an abandoned waiting call withdraws its session's wait while
/// it is unanswered (its request may reach the cluster after a withdrawal).
const WITHDRAW_AGAIN_AFTER: Duration = Duration::from_secs(1);
/// Shortest pause between keepalive attempts after a failed one.
const KEEPALIVE_RETRY_PAUSE_MIN: Duration = Duration::from_millis(50);

/// The latest instant the lease can be trusted after a successful keepalive
/// (or creation) sent at `sent_at`: `sent_at + ttl × (1 − drift_allowance)`.
pub fn lease_deadline(sent_at: Instant, ttl: Duration, drift_allowance: f64) -> Instant {
    assert!(
        (0.0..1.0).contains(&drift_allowance),
        "drift allowance {drift_allowance} outside [0, 1)"
    );
    sent_at + ttl.mul_f64(1.0 - drift_allowance)
}

/// How the client sees its lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseState {
    /// Known alive until `valid_until` (the deadline of [`lease_deadline`]).
    Alive { valid_until: Instant },
    /// Can no longer be known alive; every lock of the session must be
    /// treated as gone.
    Lost(LostReason),
}

/// Why a lease was lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LostReason {
    /// No successful keepalive before the lease deadline.
    Unconfirmed,
    /// The server said the session expired (410) or is unknown (404).
    Expired,
    /// The session was closed or dropped.
    Closed,
    /// (A lock's loss only.) The grant was released through another
    /// handle of it: a session asking again for what it holds shares one
    /// grant between its handles.
    Released,
}

/// Options of [`Client::session`].
#[derive(Debug, Clone, PartialEq)]
pub struct SessionOptions {
    /// Lease TTL, within the contract's 1 s..=1 h.
    pub ttl: Duration,
    /// A label shown as `session_name` on the session's locks.
    pub name: Option<String>,
    /// Share of the TTL set aside for clock drift, in `[0, 1)`.
    pub drift_allowance: f64,
    /// Time between keepalives; default a third of the TTL.
    pub keepalive_interval: Option<Duration>,
}

impl Default for SessionOptions {
    fn default() -> Self {
        SessionOptions {
            ttl: Duration::from_millis(SESSION_TTL_MS_DEFAULT),
            name: None,
            drift_allowance: DRIFT_ALLOWANCE_DEFAULT,
            keepalive_interval: None,
        }
    }
}

/// True when `state` no longer vouches for the lease at `now`. The instant is
/// checked too, so a keepalive task that has not run yet cannot make a
/// stale lease look alive.
fn is_lost_at(state: &LeaseState, now: Instant) -> bool {
    match state {
        LeaseState::Alive { valid_until } => now >= *valid_until,
        LeaseState::Lost(_) => true,
    }
}

/// The lease's latest-value channel. Not `tokio::sync::watch`: with several
/// waiters (the session, each lock, user `select!` loops), watch wakes them
/// in an order drawn from a thread-local rng, which breaks madsim's
/// same-seed-same-run guarantee. A `Notify` wakes waiters in a fixed order.
#[derive(Debug)]
struct LeaseCell {
    state: LeaseState,
    /// Bumped on every publish; subscribers compare it to what they saw.
    version: u64,
    /// The keepalive task is gone (ended, aborted or panicked).
    closed: bool,
}

#[derive(Debug)]
struct LeaseShared {
    cell: Mutex<LeaseCell>,
    notify: Notify,
}

impl LeaseShared {
    fn lock(&self) -> MutexGuard<'_, LeaseCell> {
        // A plain value: a panic elsewhere cannot leave it torn.
        self.cell.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The keepalive task's side; dropping it (the task ended or was aborted)
/// closes the channel, which reads as [`LostReason::Closed`] unless a loss
/// was published first.
#[derive(Debug)]
pub(crate) struct LeasePublisher {
    shared: Arc<LeaseShared>,
}

impl LeasePublisher {
    fn publish(&self, state: LeaseState) {
        {
            let mut cell = self.shared.lock();
            cell.state = state;
            cell.version += 1;
        }
        self.shared.notify.notify_waiters();
    }
}

impl Drop for LeasePublisher {
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.notify.notify_waiters();
    }
}

/// The keepalive task ended and every published state has been seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the session's keepalive task ended")]
pub struct LeaseClosed;

/// A subscriber to a session's lease, for `select!` loops (from
/// [`Session::lease_watch`]). Clones start from the clone's position.
#[derive(Debug, Clone)]
pub struct LeaseWatch {
    shared: Arc<LeaseShared>,
    seen: u64,
}

pub(crate) fn lease_channel(initial: LeaseState) -> (LeasePublisher, LeaseWatch) {
    let shared = Arc::new(LeaseShared {
        cell: Mutex::new(LeaseCell {
            state: initial,
            version: 0,
            closed: false,
        }),
        notify: Notify::new(),
    });
    (
        LeasePublisher {
            shared: shared.clone(),
        },
        LeaseWatch { shared, seen: 0 },
    )
}

impl LeaseWatch {
    /// The last published state, as published (see [`LeaseWatch::current`]
    /// for the state with deadlines and a closed channel taken into account).
    pub fn get(&self) -> LeaseState {
        self.shared.lock().state
    }

    /// The last published state, marked as seen.
    pub fn get_and_update(&mut self) -> LeaseState {
        let cell = self.shared.lock();
        self.seen = cell.version;
        cell.state
    }

    /// The lease now: the last published state, except that a passed
    /// deadline reads as lost even before the keepalive task has said so,
    /// and a keepalive task that is gone without saying why means the
    /// session was closed.
    pub fn current(&self) -> LeaseState {
        let (state, closed) = {
            let cell = self.shared.lock();
            (cell.state, cell.closed)
        };
        match state {
            LeaseState::Lost(_) => state,
            LeaseState::Alive { .. } if closed => LeaseState::Lost(LostReason::Closed),
            LeaseState::Alive { .. } if is_lost_at(&state, Instant::now()) => {
                LeaseState::Lost(LostReason::Unconfirmed)
            }
            LeaseState::Alive { .. } => state,
        }
    }

    /// Whether the lease can no longer be known alive.
    pub fn is_lost(&self) -> bool {
        matches!(self.current(), LeaseState::Lost(_))
    }

    /// Waits for a state newer than the last one seen and returns it;
    /// `Err` once the keepalive task is gone and everything was seen.
    /// Cancel-safe: usable as a `select!` branch.
    pub async fn changed(&mut self) -> Result<LeaseState, LeaseClosed> {
        loop {
            let notified = self.shared.notify.notified();
            tokio::pin!(notified);
            // Register before checking, so a publish in between is not missed.
            notified.as_mut().enable();
            {
                let cell = self.shared.lock();
                if cell.version != self.seen {
                    self.seen = cell.version;
                    return Ok(cell.state);
                }
                if cell.closed {
                    return Err(LeaseClosed);
                }
            }
            notified.await;
        }
    }

    /// Resolves when the lease is lost, with the reason.
    pub async fn lost(mut self) -> LostReason {
        loop {
            match self.get_and_update() {
                LeaseState::Lost(reason) => return reason,
                LeaseState::Alive { valid_until } => {
                    tokio::select! {
                        // The channel first: at a tie, a renewal published
                        // at the deadline instant wins over the timer, the
                        // same way on every run.
                        biased;
                        changed = self.changed() => {
                            if changed.is_err() {
                                return LostReason::Closed;
                            }
                        }
                        // Belt and braces: the keepalive task fires at this
                        // instant too, but the waiter must not depend on it.
                        () = tokio::time::sleep_until(valid_until) => return LostReason::Unconfirmed,
                    }
                }
            }
        }
    }
}

impl Client {
    /// Creates a session and starts its keepalive task.
    pub async fn session(&self, options: SessionOptions) -> Result<Session, Error> {
        let ttl_ms = u64::try_from(options.ttl.as_millis()).unwrap_or(u64::MAX);
        if !(SESSION_TTL_MS_MIN..=SESSION_TTL_MS_MAX).contains(&ttl_ms) {
            return Err(Error::Config(format!(
                "session ttl {ttl_ms} ms is outside {SESSION_TTL_MS_MIN}..={SESSION_TTL_MS_MAX}"
            )));
        }
        if !(0.0..1.0).contains(&options.drift_allowance) {
            return Err(Error::Config(format!(
                "drift allowance {} is outside [0, 1)",
                options.drift_allowance
            )));
        }
        let sent_at = Instant::now();
        let created = self
            .create_session(&CreateSessionRequest {
                ttl_ms,
                name: options.name.clone(),
            })
            .await?;
        // The server's TTL is authoritative; never trust more than we asked.
        let ttl = Duration::from_millis(created.ttl_ms.min(ttl_ms));
        let interval = options.keepalive_interval.unwrap_or(ttl / 3);
        let valid_until = lease_deadline(sent_at, ttl, options.drift_allowance);
        let (tx, rx) = lease_channel(LeaseState::Alive { valid_until });
        let keepalive = tokio::spawn(keep_alive(
            self.clone(),
            created.session_id,
            KeepaliveTiming {
                ttl,
                drift_allowance: options.drift_allowance,
                interval,
            },
            tx,
            sent_at,
        ));
        Ok(Session {
            client: self.clone(),
            grants: Grants::new(self.clone(), created.session_id, rx.clone()),
            id: created.session_id,
            ttl,
            lease: rx,
            keepalive,
            closed: false,
        })
    }
}

struct KeepaliveTiming {
    ttl: Duration,
    drift_allowance: f64,
    interval: Duration,
}

/// Renews the lease every `interval` from the last successful send, retries
/// sooner after a failure, and publishes `Lost` the instant the lease
/// deadline passes or the server says the session is gone.
async fn keep_alive(
    client: Client,
    id: SessionId,
    timing: KeepaliveTiming,
    lease: LeasePublisher,
    created_at: Instant,
) {
    let retry_pause = (timing.interval / 4).max(KEEPALIVE_RETRY_PAUSE_MIN);
    let mut valid_until = lease_deadline(created_at, timing.ttl, timing.drift_allowance);
    let mut next_send = created_at + timing.interval;
    loop {
        let attempt = async {
            tokio::time::sleep_until(next_send).await;
            let sent_at = Instant::now();
            (sent_at, client.keepalive(id).await)
        };
        let outcome = tokio::select! {
            // The deadline first: once it has passed, a keepalive answer
            // arriving at the same instant must not revive the lease.
            biased;
            () = tokio::time::sleep_until(valid_until) => None,
            answer = attempt => Some(answer),
        };
        match outcome {
            None => {
                tracing::warn!(session = %id, "lease lost: no keepalive succeeded in time");
                lease.publish(LeaseState::Lost(LostReason::Unconfirmed));
                return;
            }
            Some((sent_at, Ok(answer))) => {
                let ttl = Duration::from_millis(answer.ttl_ms).min(timing.ttl);
                valid_until = valid_until.max(lease_deadline(sent_at, ttl, timing.drift_allowance));
                lease.publish(LeaseState::Alive { valid_until });
                next_send = sent_at + timing.interval;
            }
            Some((_, Err(Error::SessionExpired { .. } | Error::NotFound { .. }))) => {
                tracing::warn!(session = %id, "lease lost: the server ended the session");
                lease.publish(LeaseState::Lost(LostReason::Expired));
                return;
            }
            Some((_, Err(error))) => {
                tracing::debug!(session = %id, %error, "keepalive failed; retrying");
                next_send = Instant::now() + retry_pause;
            }
        }
    }
}

/// A session on the cluster, kept alive in the background until it is
/// closed, dropped or lost. Dropping it stops the keepalives and deletes the
/// session in the background (best effort); [`Session::close`] does it in
/// the foreground.
#[derive(Debug)]
pub struct Session {
    client: Client,
    grants: Arc<Grants>,
    id: SessionId,
    ttl: Duration,
    lease: LeaseWatch,
    keepalive: JoinHandle<()>,
    closed: bool,
}

impl Session {
    pub fn id(&self) -> SessionId {
        self.id
    }

    /// The TTL the server granted.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// The lease as the client sees it now (a passed deadline reads as lost
    /// even before the keepalive task has said so).
    pub fn lease_state(&self) -> LeaseState {
        self.lease.current()
    }

    /// A subscriber to lease changes, for `select!` loops.
    pub fn lease_watch(&self) -> LeaseWatch {
        self.lease.clone()
    }

    /// Whether the lease can no longer be known alive.
    pub fn is_lost(&self) -> bool {
        self.lease.is_lost()
    }

    /// Resolves when the lease is lost, with the reason.
    pub async fn lost(&self) -> LostReason {
        self.lease.clone().lost().await
    }

    /// Acquires `name` without waiting (`wait_ms` 0): `Error::LockHeld` if
    /// it is held.
    pub async fn try_lock(&self, name: &str, mode: LockMode) -> Result<Lock, Error> {
        self.lock(name, mode, Duration::ZERO).await
    }

    /// Acquires `name`, waiting up to `wait` in the lock's FIFO queue.
    ///
    /// Cancel-safe: a caller that stops waiting (drops the future) leaves
    /// the call running to its outcome in the background, and a grant it
    /// brings is given back unless another [`Lock`] or call of this session
    /// uses the same grant. An answer lost on the way (504, a dropped
    /// connection) is asked for again with the same idempotency key until it
    /// is known or the lease is lost, so the call never ends with a grant
    /// nobody knows of (except for a waiting call with idempotency keys
    /// turned off, where asking again would extend the wait: the unknown
    /// outcome is returned and a grant it hides stays with the session
    /// until the session ends).
    pub async fn lock(&self, name: &str, mode: LockMode, wait: Duration) -> Result<Lock, Error> {
        if self.is_lost() {
            return Err(Error::LeaseLost);
        }
        let lock = self
            .acquire_owned(name, self.acquire_request(mode, wait))
            .await?;
        vouched(lock)
    }

    fn acquire_request(&self, mode: LockMode, wait: Duration) -> AcquireRequest {
        AcquireRequest {
            session_id: Some(self.id),
            mode,
            wait_ms: u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
            ttl_ms: None,
        }
    }

    /// One acquire call, run in a task of its own so that it reaches its
    /// outcome whether or not the caller still waits for it; the grant
    /// comes back as a [`Lock`], which gives it back if the caller is gone.
    fn acquire_owned(
        &self,
        name: &str,
        request: AcquireRequest,
    ) -> impl std::future::Future<Output = Result<Lock, Error>> + Send + 'static {
        let (grants, name) = (self.grants.clone(), name.to_owned());
        async move {
            let acquiring = grants.begin_acquire(&name).await;
            let (tx, rx) = oneshot::channel();
            // On the session's runtime: the call must reach its outcome
            // even if the caller's runtime goes away with the caller.
            let task = acquire_to_outcome(acquiring, grants.clone(), name, request, tx);
            grants.spawn(task);
            rx.await.unwrap_or_else(|_| {
                Err(Error::Interrupted(
                    "the acquire task ended without an outcome".into(),
                ))
            })
        }
    }

    /// Acquires `name`, waiting as long as it takes (a wait longer than
    /// the API's `wait_ms` cap): rounds of the longest wait, each asked
    /// again before the previous one ends, so the place in the queue is
    /// kept ([`waiting::in_rounds`]).
    pub async fn lock_until_granted(&self, name: &str, mode: LockMode) -> Result<Lock, Error> {
        self.lock_in_rounds(name, mode, Duration::from_millis(WAIT_MS_MAX))
            .await
    }

    /// [`Session::lock_until_granted`] with rounds of `round` (tests use
    /// short ones).
    #[doc(hidden)]
    pub async fn lock_in_rounds(
        &self,
        name: &str,
        mode: LockMode,
        round: Duration,
    ) -> Result<Lock, Error> {
        if self.is_lost() {
            return Err(Error::LeaseLost);
        }
        let request = self.acquire_request(mode, round);
        let ask = || self.acquire_owned(name, request.clone());
        // A lost lease ends the wait: the session cannot be granted anything.
        // Rounds still on their way then run to their outcome on their own.
        let lock = tokio::select! {
            // Fixed order (the simulation replays runs exactly): a grant
            // and a lost lease at the same instant read as the grant, which
            // `vouched` then refuses.
            biased;
            lock = waiting::in_rounds(ask, round) => lock?,
            _ = self.lost() => return Err(Error::LeaseLost),
        };
        vouched(lock)
    }

    /// Stops the keepalives and deletes the session, releasing its locks.
    ///
    /// A failure that may be transient (refused before proposing, or an
    /// unknown outcome) is asked again in the background for as long as the
    /// server's lease may still run (one TTL), whether or not the caller
    /// waits: otherwise the session's locks would stay held until then.
    pub async fn close(mut self) -> Result<(), Error> {
        self.closed = true;
        self.keepalive.abort();
        let (tx, rx) = oneshot::channel();
        self.grants.spawn(delete_until_known(
            self.client.clone(),
            self.id,
            self.ttl,
            Some(tx),
        ));
        rx.await.unwrap_or_else(|_| {
            Err(Error::Interrupted(
                "the delete task ended without an outcome".into(),
            ))
        })
    }
}

/// Deletes session `id`: the first outcome goes to `owner`; a transient
/// failure is asked again while the server's lease may still run (`ttl`).
async fn delete_until_known(
    client: Client,
    id: SessionId,
    ttl: Duration,
    owner: Option<oneshot::Sender<Result<(), Error>>>,
) {
    let until = Instant::now() + ttl;
    let outcome = client
        .delete_session_until_known(id, || Instant::now() < until)
        .await;
    if let Err(error) = &outcome {
        tracing::debug!(session = %id, %error, "deleting a session failed");
    }
    if let Some(owner) = owner {
        let _ = owner.send(outcome);
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.keepalive.abort();
        if !self.closed {
            // On the session's runtime, whichever thread drops it.
            self.grants.spawn(delete_until_known(
                self.client.clone(),
                self.id,
                self.ttl,
                None,
            ));
        }
    }
}

/// Runs one acquire call to its outcome (see [`Session::lock`]) and turns a
/// grant into a [`Lock`] at once, so that whoever drops it (the caller, or
/// this task when the caller is gone) gives the grant back.
///
/// The call is never hung up: only its own answer says exactly whether it
/// was granted. A caller that stops waiting instead ends the session's wait
/// for the lock with a withdrawal (what a disconnect would do), once no
/// other caller of the session waits for that lock (new calls for it wait
/// for the withdrawal), and again while the call is unanswered (it may
/// reach the cluster after the first one); the call is then answered
/// `lock_held`, or with a grant that came first.
async fn acquire_to_outcome(
    mut acquiring: Acquiring,
    grants: Arc<Grants>,
    name: String,
    request: AcquireRequest,
    mut caller: oneshot::Sender<Result<Lock, Error>>,
) {
    let client = grants.client().clone();
    let lease = grants.lease().clone();
    let keep_asking = || !lease.is_lost();
    let call = match client.acquire_call(&name, &request) {
        Ok(call) => call,
        Err(error) => {
            acquiring.failed();
            let _ = caller.send(Err(error));
            return;
        }
    };
    let asked = client.acquire_until_known(&call, keep_asking);
    tokio::pin!(asked);
    let answered = tokio::select! {
        // An answer that arrived is taken even if the caller just left.
        biased;
        outcome = &mut asked => Some(outcome),
        () = caller.closed() => None,
    };
    let mut outcome = match answered {
        Some(outcome) => outcome,
        None if request.wait_ms == 0 => asked.await,
        None => {
            acquiring.abandon();
            loop {
                withdraw_if_nobody_waits(&grants, &name).await;
                tokio::select! {
                    biased;
                    outcome = &mut asked => break outcome,
                    () = tokio::time::sleep(WITHDRAW_AGAIN_AFTER) => {}
                }
            }
        }
    };
    // Applied, and the session still queued after this call's own wait
    // (another call of it extended the wait). A live call of the session
    // owns that wait and will learn its end; if none is left, end the wait
    // and ask this call's key again for what it came to.
    while acquiring.is_abandoned() && matches!(outcome, Err(Error::StillQueued { .. })) {
        if !withdraw_if_nobody_waits(&grants, &name).await {
            break;
        }
        outcome = client.acquire_until_known(&call, keep_asking).await;
    }
    let result = match outcome {
        // A grant in the other mode is not this call's (another request of
        // the session holds the lock so): its handle goes at once.
        Ok(granted) if granted.mode != request.mode => {
            let mode = granted.mode;
            drop(Lock::new(acquiring, name, granted, grants.lease().clone()));
            Err(Error::Protocol {
                endpoint: String::new(),
                status: 200,
                message: format!(
                    "asked for {:?}, answered with a {mode:?} grant",
                    request.mode
                ),
            })
        }
        Ok(granted) => Ok(Lock::new(acquiring, name, granted, grants.lease().clone())),
        Err(error) => {
            acquiring.failed();
            Err(error)
        }
    };
    // A caller that is gone drops the Lock here: given back unless another
    // handle or call of the session shares the grant.
    let _ = caller.send(result);
}

/// Withdraws the session's wait for `name` if every call of the session for
/// it was abandoned (true if it did, whatever the answer).
async fn withdraw_if_nobody_waits(grants: &Arc<Grants>, name: &str) -> bool {
    let Some(_withdrawing) = grants.begin_withdraw(name) else {
        return false;
    };
    let lease = grants.lease().clone();
    let withdrawn = grants
        .client()
        .withdraw_until_known(name, grants.session_id(), || !lease.is_lost())
        .await;
    if let Err(error) = withdrawn {
        tracing::debug!(lock = %name, %error, "withdrawing an abandoned wait failed");
    }
    true
}

/// `lock` unless the lease ran out of proof while the call waited: then the
/// grant cannot be relied on and is given back (on drop).
fn vouched(lock: Lock) -> Result<Lock, Error> {
    if lock.lease.is_lost() {
        return Err(Error::LeaseLost);
    }
    Ok(lock)
}

/// A held lock. Use [`Lock::fencing_token`] with every write to a fenced
/// resource, watch [`Lock::lost`], and [`Lock::release`] when done; dropping
/// it releases in the background (best effort) once no other `Lock` or
/// call of the session shares the grant (a session that asks again for a
/// lock it holds gets the same grant: one fencing token, several handles).
/// [`Lock::release`] ends the grant for every handle of it.
#[derive(Debug)]
pub struct Lock {
    grants: Arc<Grants>,
    name: String,
    mode: LockMode,
    session_id: SessionId,
    fencing_token: u64,
    lease: LeaseWatch,
    released: bool,
}

impl Lock {
    /// The handle of the grant an acquire call was answered with.
    pub(crate) fn new(
        acquiring: Acquiring,
        name: String,
        granted: AcquireResponse,
        lease: LeaseWatch,
    ) -> Lock {
        debug_assert_eq!(granted.lock, name, "the server answers for the lock asked");
        Lock {
            grants: acquiring.granted(granted.fencing_token),
            name,
            mode: granted.mode,
            session_id: granted.session_id,
            fencing_token: granted.fencing_token,
            lease,
            released: false,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn mode(&self) -> LockMode {
        self.mode
    }

    pub fn session_id(&self) -> SessionId {
        self.session_id
    }

    /// The grant's fencing token: strictly increasing cluster-wide.
    pub fn fencing_token(&self) -> u64 {
        self.fencing_token
    }

    /// Whether the lock must be treated as lost: the owning session's
    /// lease can no longer be known alive, or the grant was released
    /// through another handle of it.
    pub fn is_lost(&self) -> bool {
        self.lease.is_lost() || self.grants.is_ended(&self.name, self.fencing_token)
    }

    /// Resolves when the lock is lost (see [`Lock::is_lost`]).
    pub async fn lost(&self) -> LostReason {
        tokio::select! {
            biased;
            reason = self.lease.clone().lost() => reason,
            () = self.grants.ended(&self.name, self.fencing_token) => LostReason::Released,
        }
    }

    /// Releases the grant (for every handle of it: they read as lost at
    /// once). Cancel-safe: the release runs to its end in the background
    /// whether or not the caller waits, and a failure whose outcome is
    /// unknown (or a refusal before proposing) returned here is asked again
    /// there while the lease lives.
    pub async fn release(mut self) -> Result<(), Error> {
        self.released = true;
        let outcome = self.grants.release(&self.name, self.fencing_token);
        outcome.await.unwrap_or_else(|_| {
            Err(Error::Interrupted(
                "the release task ended without an outcome".into(),
            ))
        })
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        if !self.released {
            self.grants.handle_dropped(&self.name, self.fencing_token);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadline_is_ttl_less_drift_from_the_send_time() {
        let t = Instant::now();
        let ttl = Duration::from_secs(10);
        assert_eq!(lease_deadline(t, ttl, 0.1), t + Duration::from_secs(9));
        assert_eq!(lease_deadline(t, ttl, 0.0), t + ttl);
        assert_eq!(
            lease_deadline(t, Duration::from_millis(1000), 0.25),
            t + Duration::from_millis(750)
        );
    }

    #[test]
    #[should_panic(expected = "outside [0, 1)")]
    fn drift_of_one_is_refused() {
        lease_deadline(Instant::now(), Duration::from_secs(1), 1.0);
    }

    #[test]
    fn lost_when_the_deadline_passes_or_marked() {
        let t = Instant::now();
        let alive = LeaseState::Alive {
            valid_until: t + Duration::from_secs(1),
        };
        assert!(!is_lost_at(&alive, t));
        assert!(is_lost_at(&alive, t + Duration::from_secs(1)));
        assert!(is_lost_at(&LeaseState::Lost(LostReason::Expired), t));
    }
}
