//! Every limit of deadbolt, in one place: the HTTP contract's (API.md) and
//! the lock state machine's capacities. Both decide answers a client sees
//! (`invalid_request` naming the field, `unavailable`, 410 vs 404), so the
//! server, the state machine and the client import them from here; nothing
//! keeps a copy. Units are in the names.

// ------------------------------------------------- the HTTP contract's ---

/// Shortest session TTL a client may ask for.
pub const SESSION_TTL_MS_MIN: u64 = 1_000;
/// Longest session TTL a client may ask for.
pub const SESSION_TTL_MS_MAX: u64 = 3_600_000;
/// TTL of a session created without `ttl_ms`.
pub const SESSION_TTL_MS_DEFAULT: u64 = 10_000;
/// TTL of the session the server creates for an acquire without `session_id`.
pub const EPHEMERAL_SESSION_TTL_MS_DEFAULT: u64 = 30_000;
/// Longest `wait_ms` of a waiting acquire.
pub const WAIT_MS_MAX: u64 = 300_000;
/// Request deadline when `Request-Timeout-Ms` is absent.
pub const REQUEST_TIMEOUT_MS_DEFAULT: u64 = 5_000;
/// Largest accepted `Request-Timeout-Ms`.
pub const REQUEST_TIMEOUT_MS_MAX: u64 = 60_000;
/// Smallest `Retry-After` a 503 carries.
pub const RETRY_AFTER_SECS_MIN: u64 = 1;
/// Longest idempotency key, in bytes.
pub const IDEMPOTENCY_KEY_BYTES_MAX: usize = 128;
/// Locks per page of `GET /v1/locks` when `limit` is absent. A `u32` like
/// the query field it defaults.
pub const LIST_LIMIT_DEFAULT: u32 = 100;
/// Largest `limit` of `GET /v1/locks`.
pub const LIST_LIMIT_MAX: u32 = 1_000;
/// Shortest name of a lock, key or stack.
pub const NAME_BYTES_MIN: usize = 1;
/// Longest name of a lock, key or stack (names are `[A-Za-z0-9._:/-]`).
pub const NAME_BYTES_MAX: usize = 256;
/// Largest KV value, after an append too.
pub const KV_VALUE_BYTES_MAX: usize = 256 * 1024;
/// Largest stack element.
pub const STACK_ELEMENT_BYTES_MAX: usize = 64 * 1024;
/// Most elements one stack holds.
pub const STACK_ELEMENTS_MAX: usize = 100_000;
/// Default limit on a request body; larger bodies get 413.
pub const BODY_BYTES_MAX_DEFAULT: usize = 1024 * 1024;
/// Largest integer that JSON carries exactly (tokens and indexes stay below).
pub const JSON_SAFE_INTEGER_MAX: u64 = (1 << 53) - 1;

// ------------------------------------ the lock state machine's capacities ---

/// Longest session name, in bytes.
pub const SESSION_NAME_BYTES_MAX: usize = 256;
/// Most live sessions.
pub const SESSIONS_MAX: usize = 1_000_000;
/// Most locks one session holds or waits for, together.
pub const LOCKS_PER_SESSION_MAX: usize = 10_000;
/// Most locks that exist (held or waited for) at once.
pub const LOCKS_MAX: usize = 4_000_000;
/// Longest wait queue of one lock.
pub const WAITERS_PER_LOCK_MAX: usize = 1_024;
/// Most KV keys.
pub const KV_KEYS_MAX: usize = 100_000;
/// Most stacks.
pub const STACKS_MAX: usize = 100_000;
/// How long an idempotency entry outlives its owning session (or, without
/// one, its recording).
pub const IDEMPOTENCY_WINDOW_MS: u64 = 10 * 60 * 1_000;
/// Default bound on kept idempotency outcomes (`serve
/// --idempotency-keys-max`): past it the oldest is evicted. Sized for an
/// effective window of at least 60 s at 10,000 keyed writes per second.
pub const IDEMPOTENCY_KEYS_DEFAULT: u64 = 1_000_000;
/// Smallest and largest settable bound on kept idempotency outcomes.
pub const IDEMPOTENCY_KEYS_MIN: u64 = 100;
pub const IDEMPOTENCY_KEYS_MAX: u64 = 100_000_000;
/// Most key prefixes (clients) with an acknowledged low-water mark. When
/// full, and none has expired, a new prefix records no mark and falls back
/// to the plain window rule.
pub const IDEMPOTENCY_CLIENTS_MAX: usize = 100_000;
/// How long an expired session is remembered (answered 410, not 404).
pub const SESSION_TOMBSTONE_MS: u64 = 10 * 60 * 1_000;
/// Most remembered expired sessions; past it the oldest is forgotten early
/// (it is then answered 404 instead of 410).
pub const SESSION_TOMBSTONES_MAX: usize = 1_000_000;
