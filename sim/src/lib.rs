//! deadbolt-sim: whole deadbolt clusters under seeded faults, and the checkers
//! that decide whether a simulated run did anything unsafe.
//!
//! The simulation itself ([`world`], built only with `--cfg madsim`): each
//! simulated host runs the real node (Raft actor, storage actor on a
//! `SimDisk`, peer transport with a link-fault table, a `SkewedClock`) and
//! the real HTTP API (`deadbolt_server::http::app` + `serve_http`); clients
//! are the real `deadbolt-client` over simulated TCP. No mocks of our code.
//! What it records is plain data ([`history`]), and the checkers ([`check`])
//! and the simulated downstream resource ([`resource`]) are pure code that
//! builds and is tested in the normal build: a checker must be trusted
//! before it is trusted to judge a run.
//!
//! Code map:
//! - [`seed`]: one seed, independent sub-seeds per concern (faults,
//!   workload, each node, each client, madsim's scheduler, clocks).
//! - [`fault`]: fault mixes (calm, network, chaos; amnesia to test the
//!   checkers), swarm selection per seed, the pure schedule generator,
//!   and the seed's BUGGIFY choices (`fault::Buggify`: fault points inside
//!   runtime and storage, from a stream of their own).
//! - [`timeline`]: the text timeline of a run, one column per node.
//! - [`sweep`]: what a seed implies (`RunSpec`), the `DEADBOLT_SIM_*`
//!   knobs, the regression list, the sweep/soak driver, failure messages
//!   with the replay command.
//! - `world` (madsim only): hosts, clients and workload, the fault
//!   executor, the node observer hook and status polls, the run phases and
//!   the verdict.
//! - `tests/sim.rs` (madsim only): the sweep, the regression list, the
//!   "broken world is caught" test, and replay; each seed runs in a fresh
//!   child process of the test binary.
//!
//! Running it: `cargo sim` (the sweep and regressions),
//! `DEADBOLT_SIM_SEED=N cargo sim --test sim replay -- --nocapture`
//! (one seed, tracing, timeline in `target/sim-timeline-N.txt`),
//! `DEADBOLT_SIM_SOAK_MINUTES=M cargo sim --test sim sweep -- --nocapture`
//! (fresh seeds until time is up). Knobs: `DEADBOLT_SIM_SEEDS`,
//! `DEADBOLT_SIM_FIRST_SEED`, `DEADBOLT_SIM_SECS`, `DEADBOLT_SIM_MIX`,
//! `DEADBOLT_SIM_NODES`, `DEADBOLT_SIM_JOBS`,
//! `DEADBOLT_SIM_DETERMINISM_EVERY`, and madsim's
//! `MADSIM_TEST_CHECK_DETERMINISM` (each run executed twice in one process
//! with madsim comparing every random draw).
//!
//! The checkers: Raft safety ([`check::raft`]), linearizability of locks, KV
//! and stacks ([`check::linearizability`]), lock safety and fencing
//! ([`check::lock_safety`]), durability of acknowledged effects
//! ([`check::durability`]), liveness after faults stop ([`check::liveness`])
//! and determinism of a seed ([`check::determinism`]). Each returns typed
//! violations; [`check::check_run`] runs them all into a
//! [`check::CheckReport`].
//!
//! The harness sees Raft through the node's observer hook
//! (`NodeConfig::observer`, called inside the Raft actor): leaders per term,
//! commit-index advances, every applied entry with an FNV-1a hash of its
//! encoding, snapshot restores; a run with no `Applied` fails as a harness
//! error. `NodeHandle::status()` polls only keep the executor's view of who
//! leads. A lock hold still ends, for the lock-safety checker, when its
//! client stops believing in its lease (not at the cluster's expiry).
//!
//! # What the harness records, and when
//! Times are simulated nanoseconds since the run started. Recording at the
//! wrong moment makes a checker either blind or wrong, so:
//! - [`history::RaftHistory`]: each node's `BecameLeader`, `Applied` (every
//!   applied entry, in order, with a hash of the entry's bytes),
//!   `CommitIndex`, `SnapshotRestored`, `Restarted`; `Truncated` and
//!   `Appended` for every log write of the node, in order (when handed to
//!   storage, not when durable).
//! - [`history::ClientHistory`]: `invoke` just before a request is first
//!   sent, `complete` when its answer arrives; answers that never arrive
//!   (504, lost connection, end of run) stay incomplete. Retries with the same
//!   idempotency key are one op. Requests refused before proposing (503) are
//!   not recorded. Session expiries seen by the cluster are `EndSession` ops.
//!   Final read-backs after healing can be recorded as ordinary reads: then
//!   linearizability also covers the durability of puts.
//! - [`history::LockHistory`]: `Granted` when the client receives a grant,
//!   `ReleaseSent` when it sends a release (not when acknowledged),
//!   `SessionEnded` / `TokenIssued` at the first node's apply of that command.
//! - [`resource::FencedResource`]: every client write to the downstream
//!   resource goes through it.
//! - [`check::determinism::TraceHasher`]: one line per trace event.

pub mod check;
pub mod fault;
pub mod history;
pub mod resource;
pub mod seed;
pub mod sweep;
pub mod timeline;
#[cfg(madsim)]
pub mod world;
