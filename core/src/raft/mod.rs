//! One Raft replica as a pure state machine (work in progress: the types that
//! storage and transport share come first; the replica follows).

mod types;

pub use types::*;
