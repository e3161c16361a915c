//! The replicated lock state machine: sessions, exclusive/shared locks with
//! FIFO queues and fencing tokens, fenced KV and stacks, exactly-once replies.
//!
//! Every node applies the committed log to a [`LockStateMachine`]; applying is
//! a pure function of (state, [`Envelope`], log index). Time enters only as
//! the leader's timestamp inside the envelope. Session expiry and waiter
//! timeouts are decided by the leader ([`LeaseTracker`], `next_waiter_deadline`)
//! and happen only through committed commands.

mod lease;
mod name;
mod state;
mod types;

#[cfg(test)]
mod model_tests;

pub use lease::LeaseTracker;
pub use state::{LockStateMachine, SnapshotError};
pub use types::*;
