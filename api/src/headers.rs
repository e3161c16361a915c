//! The HTTP headers of the contract besides the standard ones.

/// Header carrying the client's idempotency key on mutating requests.
pub const HEADER_IDEMPOTENCY_KEY: &str = "Idempotency-Key";
/// Optional header on a keyed mutation: the `Idempotency-Key` is
/// `<prefix>-<decimal seq>` and the client has the final outcome of every
/// `<prefix>-<m>` with `m` below this value, and will never retry those keys,
/// so the cluster may forget them (a retry of one is then a new request).
/// Must be a u64 no greater than the key's own seq; ignored with a key of
/// another form. Keeps a busy client from filling the idempotency cache.
pub const HEADER_IDEMPOTENCY_ACKED_BELOW: &str = "Idempotency-Acked-Below";
/// Header carrying the request's deadline in milliseconds.
pub const HEADER_REQUEST_TIMEOUT_MS: &str = "Request-Timeout-Ms";
/// Header on every answer from a node that knows the leader's API address
/// (an API extension): `host:port` as the leader announced it. A client
/// that has the leader among its endpoints sends there next, sparing the
/// cluster a forwarding hop per request; the hint is never needed for
/// correctness (any node serves any request).
pub const HEADER_LEADER: &str = "Deadbolt-Leader";
/// Header on 503 answers: whole seconds to wait before retrying (at least 1).
pub const HEADER_RETRY_AFTER: &str = "Retry-After";
/// Header on a backup (`GET /v1/cluster/snapshot`, an API extension): the
/// committed log index the backup's state is at.
pub const HEADER_SNAPSHOT_INDEX: &str = "Deadbolt-Snapshot-Index";
