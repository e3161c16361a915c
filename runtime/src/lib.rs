//! deadbolt-runtime: the IO edges that drive the sans-IO core, as tokio
//! actors. Under `--cfg madsim` the very same code runs in the simulator
//! (`tokio` is `madsim-tokio`).
//!
//! Code map:
//! - [`node`]: a running node. `Node::start(NodeConfig)` opens storage,
//!   recovers the log and the lock state (snapshot + entries), and starts
//!   the node's tasks; `Node::shutdown` (graceful: leadership handed over,
//!   storage flushed) and `Node::kill` (abrupt) wait for all of them.
//!   `NodeHandle` is the contract with the server (propose, read, status,
//!   membership, metrics). Inside, `node::actor` is the Raft actor: the only
//!   owner of the Raft `Replica`, the `LockStateMachine` and the leader's
//!   `LeaseTracker`.
//! - [`storage`]: the `Storage` trait, fjall (production) and `SimStorage`
//!   (simulated disk with crashes), and the group-commit storage actor.
//! - [`transport`]: checksummed frames, peer actors (outbound, with
//!   reconnect and drop-on-overflow) and the inbound listener.
//! - [`backup`]: the backup file format and installing one as a new
//!   cluster's founding state (`deadbolt snapshot save` / `restore`).
//! - [`clock`]: the `Clock` trait, tokio-backed and skewed clocks.
//! - [`rng`]: the seeded generator used for every random choice.
//! - [`shutdown`]: the shutdown signal every actor takes.
//! - [`latest`]: a deterministic latest-value channel (`watch` is not
//!   deterministic under madsim with several waiters).
//! - [`metrics`]: the node's counters and histograms (Prometheus text).
//!
//! Tasks and mailboxes of one node:
//! - Raft actor: one `biased` select over, in priority order, shutdown,
//!   storage durability reports (`latest` channel of `Durability`), inbound
//!   peer messages (bounded mpsc fed by the listener), client requests
//!   (bounded `NodeRequest` mailbox, `NODE_MAILBOX_REQUESTS_MAX`; full means
//!   `Unavailable`), and one timer (the replica's next deadline or the
//!   100 ms maintenance tick: lease and waiter expiry, learner promotion,
//!   sweeps of abandoned requests).
//! - Storage actor (bounded `WriteRequest` mailbox; the Raft actor waits
//!   when it is full), listener, one peer actor per other member (bounded
//!   queues that drop on overflow: Raft retries).
//!
//! Durability ordering (the core's `Ready` contract): each `Ready`'s writes
//! go to the storage actor as one `WriteBatch` (snapshot install, truncate,
//! entries, hard state) carrying its `persist_seq`; the storage actor
//! publishes the highest `persist_seq` it has synced and the Raft actor
//! reports exactly that to `persisted` — never after a failed sync, which
//! instead stops the node (`Stopped`). Messages go out at once (the core
//! holds back votes and acknowledgements until `persisted`). Committed
//! entries are applied in order; a client is answered when *its* node
//! applies the entry, with the
//! reply the state machine computed there (followers forward writes to the
//! leader and wait for the index the leader assigned; a different term at
//! that index means the write was lost: `Unavailable`, safe to retry).

#![warn(unreachable_pub)]

pub mod backup;
#[cfg(madsim)]
pub mod buggify;
pub mod clock;
pub mod cluster_id;
pub mod latest;
pub mod metrics;
pub mod node;
pub mod rng;
pub mod shutdown;
pub mod storage;
pub mod transport;

pub use clock::{Clock, ManualClock, SkewHandle, SkewedClock, TokioClock};
pub use cluster_id::ClusterId;
pub use rng::SplitMix64;
pub use shutdown::{shutdown_channel, wait_for_shutdown, Shutdown, ShutdownTrigger};
