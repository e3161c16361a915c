//! deadbolt-core: the pure, deterministic heart of deadbolt.
//!
//! Two state machines live here, both sans-IO: [`raft`] (one Raft replica) and
//! [`lock`] (the replicated lock state machine applied to the committed log).
//! Nothing in this crate does IO, reads a clock, spawns, sleeps or draws
//! randomness it was not handed; iteration order that can reach an output is
//! deterministic. That is what lets the runtime drive it with real IO and the
//! simulation drive it under seeded faults with exact replay.
//!
//! [`codec`] is the one place where bytes are produced and parsed; [`rng`]
//! is the one seeded random generator (Raft, runtime and client share it).
//! [`api`] is the `deadbolt-api` crate (the HTTP API's wire types and every
//! limit, shared by the server and the client, which does not depend on
//! this crate), re-exported so `deadbolt_core::api::..` paths keep working.

pub use deadbolt_api as api;
/// The one seeded generator; it lives in `deadbolt-api` (see that crate's
/// docs for why) so the client shares it without compiling Raft.
pub use deadbolt_api::rng;

pub mod codec;
pub mod lock;
pub mod raft;
