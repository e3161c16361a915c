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
//! violations; [`check::CheckReport`] gathers them for one run.

pub mod check;
pub mod history;
pub mod resource;
