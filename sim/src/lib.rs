//! deadbolt-sim: whole deadbolt clusters under seeded faults, and the checkers
//! that decide whether a simulated run did anything unsafe.
//!
//! The simulation itself (madsim hosts running the real server stack, fault
//! injection, seed sweeps) is built only with `--cfg madsim` and lives behind
//! that cfg. What it records is plain data ([`history`]), and the checkers
//! ([`check`]) and the simulated downstream resource ([`resource`]) are pure
//! code that builds and is tested in the normal build: a checker must be
//! trusted before it is trusted to judge a run.
//!
//! The checkers: Raft safety ([`check::raft`]), linearizability of locks, KV
//! and stacks ([`check::linearizability`]), lock safety and fencing
//! ([`check::lock_safety`]), durability of acknowledged effects
//! ([`check::durability`]), liveness after faults stop ([`check::liveness`])
//! and determinism of a seed ([`check::determinism`]). Each returns typed
//! violations; [`check::check_run`] runs them all into a
//! [`check::CheckReport`].
//!
//! # What the harness records, and when
//! Times are simulated nanoseconds since the run started. Recording at the
//! wrong moment makes a checker either blind or wrong, so:
//! - [`history::RaftHistory`]: each node's `BecameLeader`, `Applied` (every
//!   applied entry, in order, with a hash of the entry's bytes),
//!   `CommitIndex`, `SnapshotRestored`, `Restarted`; `Appended` optionally,
//!   but then for every append of that node, in order.
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
