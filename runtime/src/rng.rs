//! The seeded generator every random choice of the runtime draws from; it is
//! core's (one implementation for Raft, runtime and client).

pub use deadbolt_core::rng::SplitMix64;
