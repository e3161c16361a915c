//! A running node: the Raft actor that owns the core and the lock state
//! machine, and the handle everyone else uses to reach it. (The actor itself
//! is being built; the handle's protocol is the contract.)

mod handle;

pub use handle::*;
