//! The replicated lock state machine: sessions, exclusive/shared locks with
//! FIFO queues and fencing tokens, fenced KV and stacks, exactly-once replies.
//!
//! # Driving it (the runtime's contract)
//! Every node applies each committed entry, in log order, with
//! [`LockStateMachine::apply`]`(index, &envelope)` and gets an [`Applied`]:
//! the `reply` for the request that proposed the entry and `events` for
//! requests held open elsewhere (a queued acquire finishes on
//! [`Event::Granted`] or [`Event::WaitEnded`] for its session and lock).
//! Applying is a pure function of (state, [`Envelope`], log index); the only
//! time is the leader's `now_ms` inside the envelope, of which the state keeps
//! the high-water mark (`clock_ms`), so a new leader whose clock is behind can
//! never move time back. Entries at or below `last_applied` must not be
//! applied again (e.g. after restoring a snapshot); `apply` asserts it.
//! Reads (`lock`, `list_locks`, `session`, `kv_get`, `stack`, `validate`)
//! are methods on the state, served after ReadIndex.
//!
//! # Expiry rule
//! A session expires after a full TTL of state time with no renewal (open,
//! keepalive, acquire by the session, a grant after a wait to an ephemeral
//! session). The state machine records the state time of each session's
//! last renewal ([`LockStateMachine::session_leases`], reported per entry in
//! [`Applied::renewed`], kept in snapshots); only the leader decides, with a
//! [`LeaseTracker`] started from those records once it has applied the
//! first entry of its term, so a new leader carries every lease on instead
//! of restarting it. State time pauses between leaders, so a leader change
//! or a clock jump can delay an expiry but never bring it forward. An empty
//! `ExpireSessions` is the leader's checkpoint of state time (an idle
//! cluster stamps nothing else). The leader proposes
//! `ExpireSessions{ids}`; the state machine expires exactly the named sessions
//! that are still live (others are ignored), releasing their locks, ending
//! their waits and granting to the next waiters in the same apply. Expired
//! sessions are remembered for [`SESSION_TOMBSTONE_MS`] of state time and
//! answered `session_expired` (410). Waiter deadlines are `clock_ms +
//! wait_ms`; the leader proposes `ExpireWaiters` at
//! [`LockStateMachine::next_waiter_deadline_ms`], or `Withdraw` when the
//! HTTP client goes away.
//!
//! # Rules decided here (beyond the API text)
//! - Fencing token = log index of the grant. Shared waiters granted together
//!   in one apply share that index; an exclusive grant's token is larger than
//!   every earlier token of the lock.
//! - Release by any holder (shared ones too) is allowed; `not_holder` when the
//!   session does not hold it; `stale_token` when the given token is older than
//!   the session's grant (or, for a non-holder, than the newest grant).
//! - A fenced write needs the lock held exclusively with exactly that token
//!   (`not_holder` if free, shared, or a token newer than the grant;
//!   `stale_token` if older, or older than the resource's `last_token`). An
//!   unfenced write to a resource leaves its `last_token` unchanged.
//! - `validate` is true when the token is one of the current holders'.
//! - An acquire without a session opens an ephemeral session (id = the index)
//!   that ends, silently (no tombstone), once it holds and waits for nothing;
//!   a failed try-lock creates no session.
//! - A try-lock by a session already queued answers `lock_held` and keeps the
//!   queue place; asking again with `wait_ms > 0` keeps the place and extends
//!   the deadline to the later one. Changing mode is `invalid_request` on
//!   `mode` ("upgrading or downgrading is not supported").
//! - Idempotency: see `IdempotencyCache` in `state/idempotency.rs`: an entry
//!   lives while its owning session lives and [`IDEMPOTENCY_WINDOW_MS`] after
//!   the later of its recording and the owner's end; past the replicated bound
//!   (`Command::Configure`, default [`IDEMPOTENCY_KEYS_DEFAULT`]) the oldest
//!   outcome is evicted, inside its window or not: a keyed request is never
//!   refused for room. A queued acquire's entry is updated to its final
//!   outcome (grant or wait end), unless it was acknowledged meanwhile.
//!   Acknowledgements (`Idempotency-Acked-Below`,
//!   [`Idempotency::acked_below`]): applying a key `<prefix>-<seq>` (see
//!   [`idempotency_key_seq`]) with `acked_below: n` first drops every entry
//!   `<prefix>-<m>` with `m < n` and raises the prefix's acknowledged low-water
//!   mark to `n` (the max of its acks); a keyed request whose seq is below its
//!   prefix's mark is refused with `invalid_request` on `Idempotency-Key`
//!   ("already acknowledged"), not applied and not cached, so a delayed attempt
//!   of an acknowledged key can never apply twice. A mark is dropped once its
//!   prefix has had no keyed request for [`IDEMPOTENCY_WINDOW_MS`] of state
//!   time; at [`IDEMPOTENCY_CLIENTS_MAX`] (100,000) marks, none expired, a new
//!   prefix records none and falls back to the plain window rule (a retry of an
//!   acknowledged key is then applied as new). Marks are in snapshots. `n >
//!   seq` is `invalid_request` on that header and changes nothing; keys of
//!   other forms ignore it. This is what keeps clients that key every mutation
//!   from filling the cache.
//! - Limits are the `*_MAX` constants of [`crate::api::limits`]; exceeding one
//!   is `invalid_request` naming the field, never a panic.
//!
//! [`SESSION_TOMBSTONE_MS`]: crate::api::limits::SESSION_TOMBSTONE_MS
//! [`IDEMPOTENCY_WINDOW_MS`]: crate::api::limits::IDEMPOTENCY_WINDOW_MS
//! [`IDEMPOTENCY_KEYS_DEFAULT`]: crate::api::limits::IDEMPOTENCY_KEYS_DEFAULT
//! [`IDEMPOTENCY_CLIENTS_MAX`]: crate::api::limits::IDEMPOTENCY_CLIENTS_MAX

mod command;
mod lease;
mod name;
mod state;
mod types;

#[cfg(test)]
mod golden_tests;
#[cfg(test)]
mod model_tests;

pub use command::{
    idempotency_key_seq, Acquire, CloseSession, Command, Configure, Envelope, ExpireSessions,
    Fence, Idempotency, Keepalive, KvWrite, OpenSession, Owner, Release, StackDelete, StackPop,
    StackPush, Withdraw,
};
pub use lease::LeaseTracker;
pub use state::{LockStateMachine, SnapshotError};
pub use types::{
    validate_name, Applied, Event, FencingToken, Grant, HolderView, KvView, LockError, LockList,
    LockState, LockView, Mode, NotFoundKind, Reply, SessionId, SessionLease, SessionLockView,
    SessionView, SessionWaitView, StackView, ValidateView, WaitEndReason, WaiterView,
};
