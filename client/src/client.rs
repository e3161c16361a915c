//! The `Client`: one method per API endpoint over a shared retry loop that
//! rotates endpoints, backs off, honours Retry-After and bounds every call
//! with a deadline.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use deadbolt_api::limits::{
    REQUEST_TIMEOUT_MS_DEFAULT, REQUEST_TIMEOUT_MS_MAX, RETRY_AFTER_SECS_MIN,
};
use deadbolt_api::{
    AcquireRequest, AcquireResponse, AddMemberRequest, ClusterStatus, CreateSessionRequest,
    CreateSessionResponse, KeepaliveRequest, KeepaliveResponse, KvGetResponse, KvWriteRequest,
    KvWriteResponse, ListLocksQuery, ListLocksResponse, LockState, ReleaseRequest, SessionId,
    SessionInfo, StackGetResponse, StackPopRequest, StackPopResponse, StackPushRequest,
    StackPushResponse, TransferLeaderRequest, UpdateMemberRequest, ValidateRequest,
    ValidateResponse, WithdrawRequest, WithdrawResponse, HEADER_IDEMPOTENCY_ACKED_BELOW,
    HEADER_IDEMPOTENCY_KEY, HEADER_LEADER, HEADER_REQUEST_TIMEOUT_MS, HEADER_RETRY_AFTER,
};
use http_body_util::Full;
use hyper::header::{HeaderValue, CONTENT_TYPE, HOST};
use hyper::{Method, Request};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::time::Instant;

use crate::error::decode_error;
use crate::ids::{default_seed, IdempotencyKey, KeyGenerator, SplitMix64};
use crate::path::{list_locks_path, name_segment};
use crate::pool::{Answer, Endpoint};
use crate::Error;

/// Default bound on one call, retries included (a waiting acquire adds its
/// `wait_ms`).
pub const CALL_TIMEOUT_DEFAULT: Duration = Duration::from_secs(15);
/// Default attempts per call, the first included.
pub const ATTEMPTS_MAX_DEFAULT: u32 = 8;
/// Default first backoff between attempts; it doubles up to the maximum.
pub const BACKOFF_INITIAL_DEFAULT: Duration = Duration::from_millis(50);
/// Default largest backoff between attempts.
pub const BACKOFF_MAX_DEFAULT: Duration = Duration::from_secs(1);
/// Longest Retry-After the client honours; a server asking for more is
/// asked again sooner rather than stalling the caller.
pub const RETRY_AFTER_MAX_DEFAULT: Duration = Duration::from_secs(5);
/// How much longer than the server's own deadline the client waits for one
/// attempt, so the server's 503/504 arrives before the client gives up.
const ATTEMPT_GRACE: Duration = Duration::from_millis(500);

/// Configures and builds a [`Client`].
#[derive(Debug, Clone)]
pub struct ClientBuilder {
    endpoints: Vec<String>,
    seed: Option<u64>,
    request_timeout: Duration,
    call_timeout: Duration,
    attempts_max: u32,
    backoff_initial: Duration,
    backoff_max: Duration,
    retry_after_max: Duration,
    follow_leader: bool,
    idempotency_keys: bool,
    acknowledge_keys: bool,
}

impl ClientBuilder {
    /// A builder for a client of these endpoints (`http://host:port`).
    pub fn new<I, S>(endpoints: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        ClientBuilder {
            endpoints: endpoints.into_iter().map(Into::into).collect(),
            seed: None,
            request_timeout: Duration::from_millis(REQUEST_TIMEOUT_MS_DEFAULT),
            call_timeout: CALL_TIMEOUT_DEFAULT,
            attempts_max: ATTEMPTS_MAX_DEFAULT,
            backoff_initial: BACKOFF_INITIAL_DEFAULT,
            backoff_max: BACKOFF_MAX_DEFAULT,
            retry_after_max: RETRY_AFTER_MAX_DEFAULT,
            follow_leader: true,
            idempotency_keys: true,
            acknowledge_keys: true,
        }
    }

    /// Seeds the client id (hence every idempotency key) and the retry
    /// jitter. Simulations must set it; without it the seed comes from
    /// madsim's seeded rng under `--cfg madsim`, else from time and pid.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// The server-side deadline of each attempt (`Request-Timeout-Ms`),
    /// at most 60 s; default 5 s.
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// Bound on a whole call, retries included; default 15 s.
    pub fn call_timeout(mut self, timeout: Duration) -> Self {
        self.call_timeout = timeout;
        self
    }

    /// Attempts per call, the first included; default 8.
    pub fn attempts_max(mut self, attempts: u32) -> Self {
        self.attempts_max = attempts;
        self
    }

    /// Backoff between attempts: `initial` doubling up to `max`, jittered
    /// down to half.
    pub fn backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.backoff_initial = initial;
        self.backoff_max = max;
        self
    }

    /// Cap on an honoured Retry-After; default 5 s.
    pub fn retry_after_max(mut self, max: Duration) -> Self {
        self.retry_after_max = max;
        self
    }

    /// Whether calls move to the endpoint a `Deadbolt-Leader` answer names
    /// (default yes: it spares the cluster a forwarding hop per request).
    /// The simulation turns it off for some clients so that forwarding
    /// stays exercised.
    pub fn follow_leader(mut self, follow: bool) -> Self {
        self.follow_leader = follow;
        self
    }

    /// Whether mutations carry an `Idempotency-Key` (default yes). Without
    /// keys the client behaves as the contract allows a plain HTTP client
    /// to: it resends a mutation only after a 503 (refused before it was
    /// proposed) and reports a 504 or a lost connection as an unknown
    /// outcome at once, since resending could apply it twice. The
    /// simulation runs some clients so, to hold the server to what 503
    /// promises.
    pub fn idempotency_keys(mut self, keyed: bool) -> Self {
        self.idempotency_keys = keyed;
        self
    }

    /// Whether keyed requests carry `Idempotency-Acked-Below` (default yes:
    /// an API extension that lets the cluster forget this client's outcomes
    /// early). `deadbolt bench --client generic` turns it off to measure
    /// what a client written from the contract alone gets.
    pub fn acknowledge_keys(mut self, acknowledge: bool) -> Self {
        self.acknowledge_keys = acknowledge;
        self
    }

    pub fn build(self) -> Result<Client, Error> {
        if self.endpoints.is_empty() {
            return Err(Error::Config("no endpoints".into()));
        }
        let endpoints = self
            .endpoints
            .iter()
            .map(|url| Endpoint::parse(url).map_err(Error::Config))
            .collect::<Result<Vec<_>, _>>()?;
        let request_timeout_ms =
            u64::try_from(self.request_timeout.as_millis()).unwrap_or(u64::MAX);
        if !(1..=REQUEST_TIMEOUT_MS_MAX).contains(&request_timeout_ms) {
            return Err(Error::Config(format!(
                "request timeout {request_timeout_ms} ms is outside 1..={REQUEST_TIMEOUT_MS_MAX}"
            )));
        }
        if self.attempts_max == 0 {
            return Err(Error::Config("attempts_max is 0".into()));
        }
        let mut rng = SplitMix64::new(self.seed.unwrap_or_else(default_seed));
        let keys = KeyGenerator::new(KeyGenerator::client_id_from(&mut rng));
        Ok(Client {
            inner: Arc::new(Inner {
                endpoints,
                preferred: AtomicUsize::new(0),
                keys,
                rng: Mutex::new(rng),
                request_timeout_ms,
                config: self,
            }),
        })
    }
}

/// A deadbolt client. Cheap to clone; clones share connections and the
/// idempotency-key sequence.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("client_id", &self.inner.keys.client_id())
            .field("endpoints", &self.inner.config.endpoints)
            .finish()
    }
}

struct Inner {
    endpoints: Vec<Endpoint>,
    /// Where the next call starts: the leader when a node named it
    /// (`Deadbolt-Leader`), else the endpoint that last answered.
    preferred: AtomicUsize,
    keys: KeyGenerator,
    rng: Mutex<SplitMix64>,
    request_timeout_ms: u64,
    config: ClientBuilder,
}

/// A call its owner may send again as the same request (same idempotency
/// key, acknowledged only when the call is dropped).
pub(crate) struct RepeatableCall(Call);

/// One logical call, sent as many times as the retry policy allows.
struct Call {
    method: Method,
    path: String,
    body: Option<Bytes>,
    /// Set on every mutation; the same on every attempt. Dropping the call
    /// acknowledges the key (see [`KeyGenerator`]).
    idempotency_key: Option<IdempotencyKey>,
    /// The server may hold the request this long beyond its deadline.
    wait: Duration,
    retry: bool,
    /// Whether an attempt whose outcome is unknown (504, no answer, lost
    /// connection) may be sent again: only when doing so cannot apply it
    /// twice (a read, or a mutation carrying its idempotency key).
    resend_after_unknown: bool,
}

impl Client {
    /// A client of `endpoints` with default settings.
    pub fn new<I, S>(endpoints: I) -> Result<Client, Error>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        ClientBuilder::new(endpoints).build()
    }

    /// The id that prefixes this client's idempotency keys.
    pub fn client_id(&self) -> &str {
        self.inner.keys.client_id()
    }

    // ----- sessions -----------------------------------------------------

    /// `POST /v1/sessions`.
    pub async fn create_session(
        &self,
        request: &CreateSessionRequest,
    ) -> Result<CreateSessionResponse, Error> {
        self.call_json(&self.mutation(Method::POST, "/v1/sessions".into(), Some(request)))
            .await
    }

    /// `POST /v1/sessions/{id}/keepalive`.
    pub async fn keepalive(&self, session_id: SessionId) -> Result<KeepaliveResponse, Error> {
        let path = format!("/v1/sessions/{session_id}/keepalive");
        self.call_json(&self.mutation(Method::POST, path, Some(&KeepaliveRequest {})))
            .await
    }

    /// `GET /v1/sessions/{id}`.
    pub async fn session_info(&self, session_id: SessionId) -> Result<SessionInfo, Error> {
        self.call_json(&self.read(format!("/v1/sessions/{session_id}")))
            .await
    }

    /// `DELETE /v1/sessions/{id}`: releases everything the session held or
    /// waited for.
    pub async fn delete_session(&self, session_id: SessionId) -> Result<(), Error> {
        let path = format!("/v1/sessions/{session_id}");
        self.call_unit(&self.mutation::<()>(Method::DELETE, path, None))
            .await
    }

    /// [`Client::delete_session`] sent again after every transient failure
    /// (refused before proposing, or unknown outcome) while `keep_asking`
    /// says it still matters. Deleting twice ends nothing more (the second
    /// answer is 404, taken as done), so it is resent even without a key.
    pub(crate) async fn delete_session_until_known(
        &self,
        session_id: SessionId,
        keep_asking: impl Fn() -> bool,
    ) -> Result<(), Error> {
        let path = format!("/v1/sessions/{session_id}");
        let mut call = self.mutation::<()>(Method::DELETE, path, None);
        call.resend_after_unknown = true;
        match self.execute_until_known(&call, true, keep_asking).await {
            Ok(_) | Err(Error::NotFound { .. } | Error::SessionExpired { .. }) => Ok(()),
            Err(error) => Err(error),
        }
    }

    // ----- locks --------------------------------------------------------

    /// `POST /v1/locks/{name}/acquire`. With `wait_ms > 0` the call may last
    /// that much longer.
    pub async fn acquire(
        &self,
        name: &str,
        request: &AcquireRequest,
    ) -> Result<AcquireResponse, Error> {
        let path = format!("/v1/locks/{}/acquire", name_segment(name)?);
        let mut call = self.mutation(Method::POST, path, Some(request));
        call.wait = Duration::from_millis(request.wait_ms);
        self.call_json(&call).await
    }

    /// An acquire that can be sent more than once as the same request
    /// (same idempotency key). A session's try-lock may be sent again after
    /// an unknown outcome even without a key (asking again for what the
    /// session holds returns the same grant); a waiting one may not (asking
    /// again while queued would extend the wait by another `wait_ms`).
    pub(crate) fn acquire_call(
        &self,
        name: &str,
        request: &AcquireRequest,
    ) -> Result<RepeatableCall, Error> {
        let path = format!("/v1/locks/{}/acquire", name_segment(name)?);
        let mut call = self.mutation(Method::POST, path, Some(request));
        call.wait = Duration::from_millis(request.wait_ms);
        call.resend_after_unknown |= request.session_id.is_some() && request.wait_ms == 0;
        Ok(RepeatableCall(call))
    }

    /// `call` (from [`Client::acquire_call`]), sent again after every unknown
    /// outcome (504, no answer, deadline) until the cluster says what
    /// happened, while `keep_asking` says the answer still matters.
    pub(crate) async fn acquire_until_known(
        &self,
        call: &RepeatableCall,
        keep_asking: impl Fn() -> bool,
    ) -> Result<AcquireResponse, Error> {
        let (endpoint, answer) = self
            .execute_until_known(&call.0, false, keep_asking)
            .await?;
        self.parse_answer(endpoint, &answer)
    }

    /// A release of one grant that can be sent more than once. Without an
    /// idempotency key a resend after an unknown outcome may answer
    /// `not_holder` for a release that happened.
    pub(crate) fn release_call(
        &self,
        name: &str,
        session_id: SessionId,
        fencing_token: u64,
    ) -> Result<RepeatableCall, Error> {
        let path = format!("/v1/locks/{}/release", name_segment(name)?);
        let body = ReleaseRequest {
            session_id,
            fencing_token: Some(fencing_token),
            lock: None,
            mode: None,
        };
        let mut call = self.mutation(Method::POST, path, Some(&body));
        call.resend_after_unknown = true;
        Ok(RepeatableCall(call))
    }

    /// `call` (from [`Client::release_call`]) through the usual retries.
    pub(crate) async fn release_once(&self, call: &RepeatableCall) -> Result<(), Error> {
        self.call_unit(&call.0).await
    }

    /// `call` (from [`Client::release_call`]) sent again after every
    /// transient failure (refused before proposing, or unknown outcome)
    /// while `keep_asking` says it still matters.
    pub(crate) async fn release_until_known(
        &self,
        call: &RepeatableCall,
        keep_asking: impl Fn() -> bool,
    ) -> Result<(), Error> {
        self.execute_until_known(&call.0, true, keep_asking)
            .await
            .map(drop)
    }

    /// Sends `call` until it settles: an unknown outcome (and, with
    /// `retry_unavailable`, a refusal before proposing) is sent again after
    /// a pause, as long as resending is safe and `keep_asking()`.
    async fn execute_until_known(
        &self,
        call: &Call,
        retry_unavailable: bool,
        keep_asking: impl Fn() -> bool,
    ) -> Result<(usize, Answer), Error> {
        // Once an attempt's outcome was unknown, a later refusal before
        // proposing (503) says nothing about that attempt: ask on.
        let mut unknown_before = false;
        loop {
            match self.execute(call).await {
                Err(error)
                    if ((error.outcome_unknown() && call.resend_after_unknown)
                        || ((retry_unavailable || unknown_before)
                            && matches!(error, Error::Unavailable { .. })))
                        && keep_asking() =>
                {
                    unknown_before |= error.outcome_unknown();
                    tracing::debug!(path = %call.path, %error, "outcome unknown; asking again");
                    tokio::time::sleep(self.inner.config.backoff_max).await;
                }
                settled => return settled,
            }
        }
    }

    /// `POST /v1/locks/{name}/release`.
    pub async fn release(
        &self,
        name: &str,
        session_id: SessionId,
        fencing_token: Option<u64>,
    ) -> Result<(), Error> {
        let path = format!("/v1/locks/{}/release", name_segment(name)?);
        let body = ReleaseRequest {
            session_id,
            fencing_token,
            lock: None,
            mode: None,
        };
        self.call_unit(&self.mutation(Method::POST, path, Some(&body)))
            .await
    }

    /// `POST /v1/locks/{name}/withdraw` (an extension of the contract):
    /// ends the session's wait for the lock, if it waits.
    pub async fn withdraw(
        &self,
        name: &str,
        session_id: SessionId,
    ) -> Result<WithdrawResponse, Error> {
        self.call_json(&self.withdraw_call(name, session_id)?).await
    }

    /// [`Client::withdraw`] sent again after every transient failure
    /// (refused before proposing, or unknown outcome) while `keep_asking`
    /// says it still matters: a withdrawal applied late could end a wait
    /// asked for after it. Withdrawing twice changes nothing, so it is
    /// resent even without a key.
    pub(crate) async fn withdraw_until_known(
        &self,
        name: &str,
        session_id: SessionId,
        keep_asking: impl Fn() -> bool,
    ) -> Result<WithdrawResponse, Error> {
        let mut call = self.withdraw_call(name, session_id)?;
        call.resend_after_unknown = true;
        let (endpoint, answer) = self.execute_until_known(&call, true, keep_asking).await?;
        self.parse_answer(endpoint, &answer)
    }

    fn withdraw_call(&self, name: &str, session_id: SessionId) -> Result<Call, Error> {
        let path = format!("/v1/locks/{}/withdraw", name_segment(name)?);
        Ok(self.mutation(Method::POST, path, Some(&WithdrawRequest { session_id })))
    }

    /// `GET /v1/locks/{name}` (linearizable).
    pub async fn lock_state(&self, name: &str) -> Result<LockState, Error> {
        let path = format!("/v1/locks/{}", name_segment(name)?);
        self.call_json(&self.read(path)).await
    }

    /// `GET /v1/locks?prefix=&limit=&after=`.
    pub async fn list_locks(&self, query: &ListLocksQuery) -> Result<ListLocksResponse, Error> {
        self.call_json(&self.read(list_locks_path(query))).await
    }

    /// `POST /v1/locks/{name}/validate`. A POST that changes nothing, so it
    /// carries no idempotency key (the server would only store its answer).
    pub async fn validate(
        &self,
        name: &str,
        fencing_token: u64,
    ) -> Result<ValidateResponse, Error> {
        let path = format!("/v1/locks/{}/validate", name_segment(name)?);
        let mut call = self.mutation(Method::POST, path, Some(&ValidateRequest { fencing_token }));
        call.idempotency_key = None;
        call.resend_after_unknown = true;
        self.call_json(&call).await
    }

    // ----- fenced KV ----------------------------------------------------

    /// `PUT /v1/kv/{key}`.
    pub async fn kv_put(
        &self,
        key: &str,
        request: &KvWriteRequest,
    ) -> Result<KvWriteResponse, Error> {
        let path = format!("/v1/kv/{}", name_segment(key)?);
        self.call_json(&self.mutation(Method::PUT, path, Some(request)))
            .await
    }

    /// `POST /v1/kv/{key}/append`.
    pub async fn kv_append(
        &self,
        key: &str,
        request: &KvWriteRequest,
    ) -> Result<KvWriteResponse, Error> {
        let path = format!("/v1/kv/{}/append", name_segment(key)?);
        self.call_json(&self.mutation(Method::POST, path, Some(request)))
            .await
    }

    /// `GET /v1/kv/{key}` (linearizable).
    pub async fn kv_get(&self, key: &str) -> Result<KvGetResponse, Error> {
        let path = format!("/v1/kv/{}", name_segment(key)?);
        self.call_json(&self.read(path)).await
    }

    // ----- stacks -------------------------------------------------------

    /// `POST /v1/stacks/{name}/push`.
    pub async fn stack_push(
        &self,
        name: &str,
        request: &StackPushRequest,
    ) -> Result<StackPushResponse, Error> {
        let path = format!("/v1/stacks/{}/push", name_segment(name)?);
        self.call_json(&self.mutation(Method::POST, path, Some(request)))
            .await
    }

    /// `POST /v1/stacks/{name}/pop`.
    pub async fn stack_pop(
        &self,
        name: &str,
        request: &StackPopRequest,
    ) -> Result<StackPopResponse, Error> {
        let path = format!("/v1/stacks/{}/pop", name_segment(name)?);
        self.call_json(&self.mutation(Method::POST, path, Some(request)))
            .await
    }

    /// `GET /v1/stacks/{name}` (linearizable).
    pub async fn stack_get(&self, name: &str) -> Result<StackGetResponse, Error> {
        let path = format!("/v1/stacks/{}", name_segment(name)?);
        self.call_json(&self.read(path)).await
    }

    /// `DELETE /v1/stacks/{name}`.
    pub async fn stack_delete(&self, name: &str) -> Result<(), Error> {
        let path = format!("/v1/stacks/{}", name_segment(name)?);
        self.call_unit(&self.mutation::<()>(Method::DELETE, path, None))
            .await
    }

    // ----- cluster and operations ----------------------------------------

    /// `GET /v1/cluster`: the view of whichever node answers.
    pub async fn cluster_status(&self) -> Result<ClusterStatus, Error> {
        self.call_json(&self.read("/v1/cluster".into())).await
    }

    /// `POST /v1/cluster/members`.
    pub async fn add_member(&self, request: &AddMemberRequest) -> Result<(), Error> {
        self.call_unit(&self.mutation(Method::POST, "/v1/cluster/members".into(), Some(request)))
            .await
    }

    /// `DELETE /v1/cluster/members/{id}`.
    pub async fn remove_member(&self, id: u64) -> Result<(), Error> {
        let path = format!("/v1/cluster/members/{id}");
        self.call_unit(&self.mutation::<()>(Method::DELETE, path, None))
            .await
    }

    /// `POST /v1/cluster/members/{id}/promote`: 409 `invalid_membership`
    /// until the learner has acknowledged the leader's commit index.
    pub async fn promote_member(&self, id: u64) -> Result<(), Error> {
        let path = format!("/v1/cluster/members/{id}/promote");
        self.call_unit(&self.mutation::<()>(Method::POST, path, None))
            .await
    }

    /// `PATCH /v1/cluster/members/{id}`: changes a member's addresses.
    pub async fn update_member(&self, id: u64, request: &UpdateMemberRequest) -> Result<(), Error> {
        let path = format!("/v1/cluster/members/{id}");
        self.call_unit(&self.mutation(Method::PATCH, path, Some(request)))
            .await
    }

    /// `POST /v1/cluster/leader`.
    pub async fn transfer_leader(&self, id: u64) -> Result<(), Error> {
        let body = TransferLeaderRequest { id };
        self.call_unit(&self.mutation(Method::POST, "/v1/cluster/leader".into(), Some(&body)))
            .await
    }

    /// `GET /v1/cluster/snapshot`: a backup file's bytes (the state at a
    /// committed index; `deadbolt restore` checks and installs them).
    pub async fn snapshot(&self) -> Result<Bytes, Error> {
        let (_, answer) = self
            .execute(&self.read("/v1/cluster/snapshot".into()))
            .await?;
        Ok(answer.body)
    }

    /// `GET /health` on endpoint `index` (one attempt): the process is up.
    pub async fn health(&self, index: usize) -> Result<(), Error> {
        self.probe(index, "/health").await.map(drop)
    }

    /// `GET /ready` on endpoint `index` (one attempt): knows a leader and
    /// has a quorum. A 503 is `Err(Error::Unavailable)`.
    pub async fn ready(&self, index: usize) -> Result<(), Error> {
        self.probe(index, "/ready").await.map(drop)
    }

    /// `GET /metrics` on endpoint `index` (one attempt): Prometheus text.
    pub async fn metrics(&self, index: usize) -> Result<String, Error> {
        self.probe(index, "/metrics").await
    }

    /// `GET /openapi.json` (with retries): the server's OpenAPI document.
    pub async fn openapi(&self) -> Result<String, Error> {
        let answer = self.execute(&self.read("/openapi.json".into())).await?;
        Ok(String::from_utf8_lossy(&answer.1.body).into_owned())
    }

    // ----- the retry loop -----------------------------------------------

    fn read(&self, path: String) -> Call {
        Call {
            method: Method::GET,
            path,
            body: None,
            idempotency_key: None,
            wait: Duration::ZERO,
            retry: true,
            resend_after_unknown: true,
        }
    }

    fn mutation<B: Serialize>(&self, method: Method, path: String, body: Option<&B>) -> Call {
        let keyed = self.inner.config.idempotency_keys;
        Call {
            method,
            path,
            body: body.map(|b| {
                Bytes::from(serde_json::to_vec(b).expect("API request types serialize to JSON"))
            }),
            idempotency_key: keyed.then(|| self.inner.keys.next_key()),
            wait: Duration::ZERO,
            retry: true,
            resend_after_unknown: keyed,
        }
    }

    async fn probe(&self, index: usize, path: &str) -> Result<String, Error> {
        let index = index.min(self.inner.endpoints.len() - 1);
        let mut call = self.read(path.into());
        call.retry = false;
        let (_, answer) = self.execute_from(&call, index).await?;
        Ok(String::from_utf8_lossy(&answer.body).into_owned())
    }

    async fn call_json<T: DeserializeOwned>(&self, call: &Call) -> Result<T, Error> {
        let (endpoint, answer) = self.execute(call).await?;
        self.parse_answer(endpoint, &answer)
    }

    fn parse_answer<T: DeserializeOwned>(
        &self,
        endpoint: usize,
        answer: &Answer,
    ) -> Result<T, Error> {
        serde_json::from_slice(&answer.body).map_err(|e| Error::Protocol {
            endpoint: self.inner.endpoints[endpoint].url.clone(),
            status: answer.status,
            message: format!("answer body does not parse: {e}"),
        })
    }

    async fn call_unit(&self, call: &Call) -> Result<(), Error> {
        self.execute(call).await.map(drop)
    }

    async fn execute(&self, call: &Call) -> Result<(usize, Answer), Error> {
        let start = self.inner.preferred.load(Ordering::Relaxed) % self.inner.endpoints.len();
        self.execute_from(call, start).await
    }

    /// Sends `call` until it gets an answer that settles it: a 2xx, or an
    /// error other than 503/504. Rotates endpoints after 503s, 504s,
    /// connection errors and attempts without an answer.
    async fn execute_from(&self, call: &Call, start: usize) -> Result<(usize, Answer), Error> {
        let inner = &*self.inner;
        let config = &inner.config;
        let endpoints = &inner.endpoints;
        let call_deadline = Instant::now() + config.call_timeout + call.wait;
        let attempts = if call.retry { config.attempts_max } else { 1 };
        let attempt_timeout =
            Duration::from_millis(inner.request_timeout_ms) + call.wait + ATTEMPT_GRACE;
        let mut index = start;
        let mut last_error: Option<Error> = None;
        // The last attempt whose outcome was unknown: a later refusal
        // before proposing (503) does not make the call's outcome known.
        let mut unknown: Option<Error> = None;
        let mut remember = |error: Error| {
            if error.outcome_unknown() {
                unknown = Some(error);
            } else {
                last_error = Some(error);
            }
        };

        for attempt in 0..attempts {
            if attempt > 0 {
                let failed = index;
                index = (index + 1) % endpoints.len();
                // Move the shared preference along too, unless another call
                // already did.
                let _ = inner.preferred.compare_exchange(
                    failed,
                    index,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                );
                let mut resume = Instant::now() + self.backoff(attempt);
                if let Some(not_before) = endpoints[index].not_before() {
                    resume = resume.max(not_before);
                }
                if resume >= call_deadline {
                    break;
                }
                tokio::time::sleep_until(resume).await;
            }
            let endpoint = &endpoints[index];
            let attempt_deadline = (Instant::now() + attempt_timeout).min(call_deadline);
            // madsim has no `timeout_at`; a duration from now is the same.
            let sent = tokio::time::timeout(
                attempt_deadline.saturating_duration_since(Instant::now()),
                endpoint.send(
                    || self.build_request(call, endpoint),
                    call.resend_after_unknown,
                ),
            )
            .await;
            let answer = match sent {
                Err(_) => {
                    tracing::debug!(endpoint = %endpoint.url, path = %call.path, "no answer in time");
                    // A hung connection: do not hand its siblings out again.
                    endpoint.forget_idle();
                    remember(Error::Transport {
                        endpoint: endpoint.url.clone(),
                        cause: format!("no answer within {attempt_timeout:?}").into(),
                    });
                    if !call.resend_after_unknown {
                        break;
                    }
                    continue;
                }
                Ok(Err(source)) => {
                    tracing::debug!(endpoint = %endpoint.url, path = %call.path, error = %source, "transport error");
                    endpoint.forget_idle();
                    remember(Error::Transport {
                        endpoint: endpoint.url.clone(),
                        cause: source,
                    });
                    if !call.resend_after_unknown {
                        break;
                    }
                    continue;
                }
                Ok(Ok(answer)) => answer,
            };
            if answer.resent_after_close {
                // A copy sent on a connection that closed may have been
                // applied: whatever this answer says, that is unknown.
                remember(Error::Transport {
                    endpoint: endpoint.url.clone(),
                    cause: "the connection closed before an answer; the request was sent again"
                        .into(),
                });
            }
            if (200..300).contains(&answer.status) {
                inner.preferred.store(index, Ordering::Relaxed);
                self.follow_leader_hint(index, &answer.headers);
                return Ok((index, answer));
            }
            self.follow_leader_hint(index, &answer.headers);
            let error = decode_error(&endpoint.url, answer.status, &answer.body);
            match error {
                Error::Unavailable { .. } => {
                    let wait = retry_after(&answer.headers).min(config.retry_after_max);
                    endpoint.set_not_before(Instant::now() + wait);
                }
                // Outcome unknown: resending with the same key learns it.
                Error::Timeout { .. } if call.resend_after_unknown => {}
                _ => return Err(error),
            }
            tracing::debug!(endpoint = %endpoint.url, path = %call.path, %error, "retryable answer");
            remember(error);
        }
        Err(match unknown.or(last_error) {
            Some(error) if Instant::now() < call_deadline => error,
            _ => Error::DeadlineExceeded {
                deadline: config.call_timeout + call.wait,
            },
        })
    }

    /// Prefers the leader for the next calls when the node at `answered`
    /// named it (`Deadbolt-Leader`) and it is one of our endpoints: every
    /// request sent to a follower costs the cluster a forwarding hop.
    fn follow_leader_hint(&self, answered: usize, headers: &hyper::HeaderMap) {
        if !self.inner.config.follow_leader {
            return;
        }
        let Some(leader) = headers.get(HEADER_LEADER).and_then(|v| v.to_str().ok()) else {
            return;
        };
        if self.inner.endpoints[answered].authority == leader {
            return;
        }
        if let Some(index) = self
            .inner
            .endpoints
            .iter()
            .position(|e| e.authority == leader)
        {
            self.inner.preferred.store(index, Ordering::Relaxed);
        }
    }

    fn build_request(&self, call: &Call, endpoint: &Endpoint) -> Request<Full<Bytes>> {
        let mut request = Request::new(Full::new(call.body.clone().unwrap_or_default()));
        *request.method_mut() = call.method.clone();
        *request.uri_mut() = call
            .path
            .parse()
            .expect("paths are built from encoded components");
        let headers = request.headers_mut();
        headers.insert(
            HOST,
            HeaderValue::from_str(&endpoint.authority).expect("authority was validated"),
        );
        headers.insert(
            HEADER_REQUEST_TIMEOUT_MS,
            HeaderValue::from(self.inner.request_timeout_ms),
        );
        if call.body.is_some() {
            headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        }
        if let Some(key) = &call.idempotency_key {
            headers.insert(
                HEADER_IDEMPOTENCY_KEY,
                HeaderValue::from_str(key.as_str()).expect("keys are hex digits and a dash"),
            );
            // Computed per attempt: calls that ended meanwhile raise it.
            if self.inner.config.acknowledge_keys {
                headers.insert(
                    HEADER_IDEMPOTENCY_ACKED_BELOW,
                    HeaderValue::from(key.acked_below()),
                );
            }
        }
        request
    }

    /// Backoff before attempt `attempt` (1-based among retries): doubling,
    /// capped, jittered into `[half, full]` from the seeded rng.
    fn backoff(&self, attempt: u32) -> Duration {
        let config = &self.inner.config;
        let doubled = config
            .backoff_initial
            .saturating_mul(1u32 << (attempt - 1).min(16));
        let full = doubled.min(config.backoff_max);
        let unit = self
            .inner
            .rng
            .lock()
            .expect("rng mutex poisoned")
            .next_unit();
        full.mul_f64(0.5 + unit / 2.0)
    }
}

/// The wait a 503 asks for: `Retry-After` in whole seconds, at least 1 (an
/// HTTP-date or garbage counts as the minimum).
pub(crate) fn retry_after(headers: &hyper::HeaderMap) -> Duration {
    let secs = headers
        .get(HEADER_RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(RETRY_AFTER_SECS_MIN)
        .max(RETRY_AFTER_SECS_MIN);
    Duration::from_secs(secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_parsing() {
        let mut h = hyper::HeaderMap::new();
        assert_eq!(retry_after(&h), Duration::from_secs(1));
        h.insert(HEADER_RETRY_AFTER, HeaderValue::from_static("3"));
        assert_eq!(retry_after(&h), Duration::from_secs(3));
        h.insert(HEADER_RETRY_AFTER, HeaderValue::from_static("0"));
        assert_eq!(retry_after(&h), Duration::from_secs(1));
        h.insert(
            HEADER_RETRY_AFTER,
            HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"),
        );
        assert_eq!(retry_after(&h), Duration::from_secs(1));
    }

    #[test]
    fn config_is_checked() {
        assert!(matches!(
            Client::new(Vec::<String>::new()),
            Err(Error::Config(_))
        ));
        assert!(matches!(
            Client::new(["https://h:1"]),
            Err(Error::Config(_))
        ));
        let too_long = ClientBuilder::new(["h:1"]).request_timeout(Duration::from_secs(61));
        assert!(matches!(too_long.build(), Err(Error::Config(_))));
    }

    #[test]
    fn backoff_doubles_within_bounds() {
        let client = ClientBuilder::new(["h:1"])
            .seed(1)
            .backoff(Duration::from_millis(100), Duration::from_millis(400))
            .build()
            .unwrap();
        for (attempt, full_ms) in [(1, 100), (2, 200), (3, 400), (4, 400), (40, 400)] {
            let b = client.backoff(attempt);
            assert!(b >= Duration::from_millis(full_ms / 2) && b <= Duration::from_millis(full_ms));
        }
    }

    #[test]
    fn seeded_clients_have_the_same_id() {
        let a = ClientBuilder::new(["h:1"]).seed(9).build().unwrap();
        let b = ClientBuilder::new(["h:1"]).seed(9).build().unwrap();
        assert_eq!(a.client_id(), b.client_id());
    }
}
