//! One Raft replica as a pure state machine: no IO, no clock reads, no
//! spawning, no randomness beyond the seed it is handed.
//!
//! # Code map
//! - `types`: ids, entries, hard state, membership, snapshot metadata
//!   (shared with storage and transport).
//! - [`message`]: the peer messages, their encoding and their semantic
//!   checks ([`WIRE_NUMBER_MAX`]).
//! - `config`: [`Config`], its validation, and the named limits
//!   ([`APPEND_INFLIGHT_MAX`], [`APPEND_BYTES_MAX`], [`APPEND_ENTRIES_MAX`],
//!   [`SNAPSHOT_CHUNK_BYTES`], ...).
//! - `replica`: [`Replica`], the Raft rules; it owns one sub-state per
//!   concern, each in its own file with its own tests:
//!   - `log`: the in-memory log (durable prefix, batches, conflict search);
//!   - `restore`: [`RestoredState`] and the rebuild (and bootstrap) at start;
//!   - `membership_log`: the membership in force at each index, and the
//!     one-voter-at-a-time rule;
//!   - `progress`: the leader's view of each follower and what to send it
//!     next (probe / replicate / snapshot flow control, in-flight window);
//!   - `read_only`: ReadIndex rounds, local and forwarded;
//!   - `persist`: `persist_seq` numbering and the votes and acks held back
//!     until durable;
//!   - `ready`: [`Ready`] and its parts, and the buffers it drains;
//!   - `snapshot`: snapshot bytes sent to followers and assembled from a
//!     leader;
//!   - `timers`: deadlines and the seeded election jitter ([`crate::rng`]);
//!   - `votes`: one election's votes and their tally;
//!   - `error`: why a call was refused ([`ProposalRefused`], ...).
//!
//! # Driving a replica
//! Inputs: [`Replica::handle_message`], [`Replica::tick`] (with `now_ms` from
//! a monotonic clock, at the latest at [`Replica::next_deadline_ms`]),
//! [`Replica::propose`] / [`Replica::propose_batch`], [`Replica::read_index`],
//! [`Replica::transfer_leadership`], the membership calls,
//! [`Replica::persisted`], [`Replica::applied`] and
//! [`Replica::snapshot_taken`]. After any input, drain [`Replica::ready`]
//! while [`Replica::has_ready`] is true.
//!
//! # The `Ready` ordering contract
//! For each [`Ready`], in this order:
//! 1. **Write** (may be asynchronous, but batches are made durable in the
//!    order they were handed out): if `snapshot` is set, install it into the
//!    state machine and replace the stored log with it; then delete stored
//!    entries from `truncate_from`; then append `entries`; then store
//!    `hard_state` (set when term or vote changed; a commit index that
//!    moved rides along only with other writes, since it need not be
//!    durable and an fsync of its own per commit would cost a sync per
//!    entry at low concurrency). When these writes, and those of every earlier `Ready`,
//!    are durable, call [`Replica::persisted`]`(persist_seq)` (skip when
//!    `persist_seq == 0`: nothing to write).
//! 2. **Send** `messages` right away, without waiting for step 1. They never
//!    depend on unpersisted local state: votes, vote requests and
//!    append/snapshot acknowledgements are held inside the replica until
//!    `persisted` covers the state they promise, and come out of a later
//!    `ready()`. A leader's AppendEntries go out before its own write is
//!    durable (safe: the leader counts itself toward a commit only for what
//!    `persisted` reported).
//! 3. **Apply** `committed` in order, after the `snapshot` of the same Ready
//!    if any. They are committed and already durable locally (a replica
//!    never hands out entries beyond what `persisted` covered). Report
//!    progress with [`Replica::applied`].
//! 4. **Reads**: each [`ReadState`] may be served once the state machine
//!    has applied `index` — waiting for that is the caller's job.
//!    `failed_reads` will never complete; the client should retry.
//! 5. `soft_state` reports role/term/leader changes (a leader that steps
//!    down fails its pending reads in the same Ready). `snapshot_wanted`
//!    asks the caller to take a snapshot ([`Replica::snapshot_taken`]) so a
//!    lagging follower can be caught up.
//!
//! After a crash, rebuild with [`Replica::new`] from what storage holds:
//! anything not reported through `persisted` may be lost, and that is safe.
//! A received snapshot counts as installed once its Ready is reported
//! persisted (there is no separate "snapshot installed" call).
//!
//! # Bootstrapping and membership
//! A founding member (empty storage, non-empty initial membership) writes
//! that membership as entry 1 with term 0, identical on every founder and
//! committed by definition; a joining node starts with an empty membership
//! and waits for the leader. A membership takes effect when appended. Changes
//! go one voter at a time (learners first, then promotion), only after the
//! previous change and an entry of the leader's term committed. A leader that
//! removed itself steps down once the removal commits, handing over with
//! TimeoutNow. Leader stickiness needs `check_quorum` (followers that heard
//! from a leader within the minimum election timeout ignore higher-term
//! (pre-)votes); `pre_vote` keeps a partitioned node's term from rising.
//! A forwarded read whose answer is lost never completes: the caller times
//! it out.
//!
//! # Example: the driving loop of a single-node cluster
//! ```
//! use deadbolt_core::raft::*;
//! let mut membership = Membership::default();
//! membership.members.insert(1, Member { voter: true, peer_addr: "a:1".into(), api_addr: "a:2".into() });
//! let mut replica = Replica::new(Config::new(1), RestoredState::default(), membership, 42, 0).unwrap();
//! let mut now_ms = 0;
//! let mut applied = Vec::new();
//! while applied.len() < 3 {
//!     now_ms = replica.next_deadline_ms().max(now_ms);
//!     replica.tick(now_ms);
//!     if replica.role() == Role::Leader && applied.len() == 2 {
//!         let _ = replica.propose(b"hello".to_vec());
//!     }
//!     while replica.has_ready() {
//!         let ready = replica.ready();
//!         // 1. write ready.snapshot / truncate_from / entries / hard_state, then:
//!         if ready.persist_seq > 0 {
//!             replica.persisted(ready.persist_seq);
//!         }
//!         // 2. send ready.messages (none here); 3. apply:
//!         for entry in ready.committed {
//!             replica.applied(entry.index);
//!             applied.push(entry);
//!         }
//!     }
//! }
//! assert_eq!(applied[2].payload, EntryPayload::Command(b"hello".to_vec()));
//! ```
//!
//! # Invariants asserted
//! The term never decreases; a conflict never truncates a committed entry;
//! the commit index never passes the log; entries handed out for applying
//! are durable locally; a leader counts itself only for durable entries (and
//! a candidate its own vote only once durable); a leader commits by counting
//! replicas only entries of its own term.

mod config;
mod error;
mod health;
mod log;
mod membership_log;
pub mod message;
mod persist;
mod progress;
mod read_only;
mod ready;
mod replica;
mod restore;
mod snapshot;
mod timers;
mod types;
mod votes;

#[cfg(test)]
mod tests;

pub use config::{
    Config, ConfigError, APPEND_BYTES_MAX, APPEND_ENTRIES_MAX, APPEND_INFLIGHT_MAX,
    APPLY_BATCH_ENTRIES_MAX, HELD_MESSAGES_MAX, PENDING_READS_MAX, PROPOSAL_BATCH_MAX,
    PROPOSAL_BYTES_MAX, SNAPSHOT_BYTES_MAX, SNAPSHOT_CHUNK_BYTES, UNCOMMITTED_ENTRIES_MAX,
};
pub use error::{
    leader_text, MembershipError, ProposalRefused, ReadIndexError, SnapshotRefused, TransferError,
};
pub use health::{ClusterHealth, MemberHealth, QuorumHealth};
pub use message::{
    AppendEntries, AppendEntriesResponse, Heartbeat, HeartbeatResponse, InstallSnapshot,
    InstallSnapshotResponse, Message, VoteRequest, VoteResponse, WIRE_NUMBER_MAX,
};
pub use progress::{ProgressState, ReplicationProgress};
pub use ready::{ReadState, Ready, Role, SnapshotToInstall, SoftState};
pub use replica::{Replica, Status};
pub use restore::RestoredState;
pub use types::{
    Entry, EntryPayload, HardState, LogIndex, Member, Membership, NodeId, SnapshotMeta, Term,
    FOUNDING_NONCE_KEY,
};
