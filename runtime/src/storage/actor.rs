//! The storage actor: owns a node's `Storage`, takes write requests through a
//! bounded mailbox, and turns everything queued since the last sync into one
//! batch and one fsync (group commit), then publishes what is now durable.
//! While the mailbox is empty it advances a pending log compaction one
//! bounded step at a time (`Storage::compact_step`), so dropping a long log
//! never holds a sync back by more than one step.

use std::sync::{Arc, Mutex};

use deadbolt_core::raft::{Entry, HardState, LogIndex, SnapshotMeta, Term};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::{Recovered, Storage, StorageError};
use crate::latest::{self, Subscriber};
use crate::shutdown::{wait_for_shutdown, Shutdown};

/// Requests the mailbox holds before `submit` waits (backpressure on Raft).
pub const STORAGE_MAILBOX_REQUESTS_MAX: usize = 1024;
/// Requests folded into one batch (one fsync) at most.
pub const STORAGE_BATCH_REQUESTS_MAX: usize = 512;
/// Upper bounds (microseconds) of the fsync latency histogram buckets; the
/// last bucket of [`StorageStats::sync_latency_buckets`] counts the rest.
pub const SYNC_LATENCY_BUCKETS_US: [u64; 10] = [
    100, 300, 1_000, 3_000, 10_000, 30_000, 100_000, 300_000, 1_000_000, 3_000_000,
];

/// One write for the storage actor. Requests are applied in mailbox order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteRequest {
    /// Entries following the current last index (after a `TruncateFrom` on conflict).
    Append(Vec<Entry>),
    TruncateFrom(LogIndex),
    HardState(HardState),
    /// Replaces the snapshot and drops the log it covers.
    Snapshot {
        meta: SnapshotMeta,
        data: Vec<u8>,
    },
    /// Drops entries up to and including this index.
    Compact(LogIndex),
}

/// What is durable, published after every sync on a latest-value channel
/// ([`crate::latest`], a deterministic `watch`). It never blocks the actor
/// and always holds the latest value, which is exactly
/// "persisted up to": the Raft actor selects on `changed()` and feeds
/// `last_log` to the core (its `advance`). Bounded channels both ways between
/// the two actors could deadlock; this cannot.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PersistState {
    /// (term, index) of the last durable log entry (the snapshot's when the log is empty).
    pub last_log: (Term, LogIndex),
    /// The durable hard state.
    pub hard_state: HardState,
    /// `last_index` of the durable snapshot (0 if none).
    pub snapshot_last_index: LogIndex,
    /// Number of successful syncs so far (changes on every publication).
    pub syncs: u64,
    /// Write requests made durable so far, counted in mailbox order. A
    /// caller that counts what it submitted knows exactly which of its
    /// writes a publication covers (the Raft actor maps this to the core's
    /// `persist_seq`).
    pub requests_synced: u64,
    /// Set once a write or sync failed. From then on the actor refuses every
    /// write: after a failed fsync nothing written since the last good one may
    /// be assumed durable, and retrying could report it as if it were (the
    /// fsyncgate lesson). The node stays up; a restart re-reads the disk.
    pub error: Option<StorageError>,
}

/// Group-commit measurements, cheap to copy out for metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StorageStats {
    pub syncs: u64,
    pub sync_failures: u64,
    pub requests: u64,
    pub entries_synced: u64,
    pub entries_per_sync_max: u64,
    pub sync_latency_us_total: u64,
    pub sync_latency_us_max: u64,
    /// Counts per [`SYNC_LATENCY_BUCKETS_US`] bucket, plus one overflow bucket.
    pub sync_latency_buckets: [u64; SYNC_LATENCY_BUCKETS_US.len() + 1],
}

impl StorageStats {
    /// Mean entries per fsync: the group-commit factor.
    pub fn entries_per_sync(&self) -> f64 {
        if self.syncs == 0 {
            return 0.0;
        }
        self.entries_synced as f64 / self.syncs as f64
    }

    fn record_sync(&mut self, entries: u64, requests: u64, latency_us: u64) {
        self.syncs += 1;
        self.requests += requests;
        self.entries_synced += entries;
        self.entries_per_sync_max = self.entries_per_sync_max.max(entries);
        self.sync_latency_us_total += latency_us;
        self.sync_latency_us_max = self.sync_latency_us_max.max(latency_us);
        let bucket = SYNC_LATENCY_BUCKETS_US
            .iter()
            .position(|bound| latency_us <= *bound)
            .unwrap_or(SYNC_LATENCY_BUCKETS_US.len());
        self.sync_latency_buckets[bucket] += 1;
    }
}

/// The storage actor has stopped (shutdown or a lost task); the request was not taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("storage actor has stopped")]
pub struct StorageActorClosed;

/// The typed handle to a storage actor.
#[derive(Debug, Clone)]
pub struct StorageHandle {
    tx: mpsc::Sender<WriteRequest>,
    persisted: Subscriber<PersistState>,
    stats: Arc<Mutex<StorageStats>>,
}

impl StorageHandle {
    /// Queues a write, waiting while the mailbox is full.
    pub async fn submit(&self, request: WriteRequest) -> Result<(), StorageActorClosed> {
        self.tx.send(request).await.map_err(|_| StorageActorClosed)
    }

    /// Queues a write if there is room; gives the request back otherwise.
    pub fn try_submit(&self, request: WriteRequest) -> Result<(), WriteRequest> {
        self.tx.try_send(request).map_err(|e| match e {
            mpsc::error::TrySendError::Full(r) | mpsc::error::TrySendError::Closed(r) => r,
        })
    }

    /// A receiver of durability reports (see [`PersistState`]).
    pub fn persisted(&self) -> Subscriber<PersistState> {
        self.persisted.clone()
    }

    pub fn stats(&self) -> StorageStats {
        self.stats.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// Term of every index, stored as runs (terms change rarely), so the actor
/// can name the (term, index) of the log tail after a truncation.
#[derive(Debug, Default, Clone)]
struct TermRuns {
    base: (Term, LogIndex),
    /// (first index, term) of each run after `base`, ascending.
    runs: Vec<(LogIndex, Term)>,
    last_index: LogIndex,
}

impl TermRuns {
    fn from_recovered(recovered: &Recovered) -> Self {
        let base = recovered
            .snapshot
            .as_ref()
            .map_or((0, 0), |(m, _)| (m.last_term, m.last_index));
        let mut runs = Self {
            base,
            runs: Vec::new(),
            last_index: base.1,
        };
        runs.append(&recovered.entries);
        runs
    }

    /// Applies a request to the model, asserting the ordering contract the
    /// Raft actor must keep (a violation is a bug upstream, caught before
    /// anything reaches the disk).
    fn apply(&mut self, request: &WriteRequest) {
        match request {
            WriteRequest::Append(entries) => {
                for (offset, e) in entries.iter().enumerate() {
                    assert_eq!(
                        e.index,
                        self.last_index + 1 + offset as u64,
                        "append must follow the last index (send TruncateFrom before overwriting)"
                    );
                }
                self.append(entries);
            }
            WriteRequest::TruncateFrom(index) => {
                assert!(
                    *index > self.base.1,
                    "truncating from {index} would cut into the snapshot at {}",
                    self.base.1
                );
                self.truncate_from(*index);
            }
            WriteRequest::Snapshot { meta, .. } => self.reset_to_snapshot(meta),
            WriteRequest::HardState(_) | WriteRequest::Compact(_) => {}
        }
    }

    fn append(&mut self, entries: &[Entry]) {
        for e in entries {
            self.truncate_from(e.index);
            if self.runs.last().is_none_or(|(_, t)| *t != e.term) {
                self.runs.push((e.index, e.term));
            }
            self.last_index = e.index;
        }
    }

    fn truncate_from(&mut self, index: LogIndex) {
        while self.runs.last().is_some_and(|(start, _)| *start >= index) {
            self.runs.pop();
        }
        self.last_index = self.last_index.min(index.saturating_sub(1));
    }

    fn reset_to_snapshot(&mut self, meta: &SnapshotMeta) {
        if self.last_index <= meta.last_index {
            self.runs.clear();
            self.last_index = meta.last_index;
        } else {
            let keep_from = self
                .runs
                .iter()
                .rposition(|(start, _)| *start <= meta.last_index + 1)
                .unwrap_or(0);
            self.runs.drain(..keep_from);
        }
        self.base = (meta.last_term, meta.last_index);
    }

    fn last(&self) -> (Term, LogIndex) {
        match self.runs.last() {
            Some((_, term)) if self.last_index > self.base.1 => (*term, self.last_index),
            _ => self.base,
        }
    }
}

/// Starts the storage actor on `storage`, which the caller has already
/// loaded (`recovered` is what `load` returned). The actor ends when
/// `shutdown` turns true (or its sender is dropped) or every handle is gone.
pub fn spawn_storage_actor<S: Storage>(
    storage: S,
    recovered: &Recovered,
    mut shutdown: Shutdown,
) -> (StorageHandle, JoinHandle<()>) {
    let (tx, mut rx) = mpsc::channel(STORAGE_MAILBOX_REQUESTS_MAX);
    let terms = TermRuns::from_recovered(recovered);
    let initial = PersistState {
        last_log: terms.last(),
        hard_state: recovered.hard_state,
        snapshot_last_index: terms.base.1,
        syncs: 0,
        requests_synced: 0,
        error: None,
    };
    let (persisted_tx, persisted) = latest::channel(initial.clone());
    let stats = Arc::new(Mutex::new(StorageStats::default()));
    let handle = StorageHandle {
        tx,
        persisted,
        stats: stats.clone(),
    };
    // Runs inside the caller's span (which carries the node id).
    let span = tracing::info_span!("storage");
    let task = tokio::spawn(tracing::Instrument::instrument(
        async move {
            let mut storage = Some(storage);
            let mut terms = terms;
            let mut state = initial;
            loop {
                let compacting = state.error.is_none()
                    && storage.as_ref().is_some_and(|s| s.compaction_pending());
                // Writes first; a compaction step only when none waits.
                let first = tokio::select! {
                    biased;
                    _ = wait_for_shutdown(&mut shutdown) => break,
                    request = rx.recv() => match request {
                        Some(request) => request,
                        None => break,
                    },
                    () = std::future::ready(()), if compacting => {
                        let Some(owned) = storage.take() else {
                            break;
                        };
                        match compact_step(owned).await {
                            Ok((owned, Ok(()))) => storage = Some(owned),
                            Ok((owned, Err(error))) => {
                                storage = Some(owned);
                                tracing::error!(%error, "log compaction failed; refusing further writes");
                                state.error = Some(error);
                                persisted_tx.publish(state.clone());
                            }
                            Err(error) => {
                                tracing::error!(%error, "storage actor lost its storage");
                                state.error = Some(error);
                                persisted_tx.publish(state.clone());
                                break;
                            }
                        }
                        continue;
                    }
                };
                let mut batch = vec![first];
                while batch.len() < STORAGE_BATCH_REQUESTS_MAX {
                    match rx.try_recv() {
                        Ok(request) => batch.push(request),
                        Err(_) => break,
                    }
                }
                if state.error.is_some() {
                    // Poisoned: refuse silently; the error is already published.
                    continue;
                }
                // Check the batch against the ordering contract before any IO.
                let mut next_terms = terms.clone();
                for request in &batch {
                    next_terms.apply(request);
                }
                let Some(mut owned) = storage.take() else {
                    break;
                };
                let requests = batch.len() as u64;
                let entries: u64 = batch
                    .iter()
                    .map(|r| match r {
                        WriteRequest::Append(e) => e.len() as u64,
                        _ => 0,
                    })
                    .sum();
                let started = Instant::now();
                let joined = run_blocking(move || {
                    let result = apply_batch(&mut owned, &batch);
                    (owned, batch, result)
                })
                .await;
                let latency_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
                let (owned, batch, result) = match joined {
                    Ok(out) => out,
                    Err(e) => {
                        let error = StorageError::Poisoned(format!("storage task failed: {e}"));
                        tracing::error!(%error, "storage actor lost its storage");
                        state.error = Some(error);
                        persisted_tx.publish(state.clone());
                        break;
                    }
                };
                storage = Some(owned);
                match result {
                    Ok(()) => {
                        terms = next_terms;
                        for request in &batch {
                            if let WriteRequest::HardState(hs) = request {
                                state.hard_state = *hs;
                            }
                        }
                        state.last_log = terms.last();
                        state.snapshot_last_index = terms.base.1;
                        state.syncs += 1;
                        state.requests_synced += requests;
                        stats
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .record_sync(entries, requests, latency_us);
                    }
                    Err(error) => {
                        tracing::error!(%error, "storage write failed; refusing further writes");
                        stats
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .sync_failures += 1;
                        state.error = Some(error);
                    }
                }
                persisted_tx.publish(state.clone());
            }
        },
        span,
    ));
    (handle, task)
}

/// Runs one bounded compaction step off the async workers and hands the
/// storage back with its outcome (`Err` only if the blocking task was lost).
async fn compact_step<S: Storage>(
    mut storage: S,
) -> Result<(S, Result<(), StorageError>), StorageError> {
    run_blocking(move || {
        let result = storage.compact_step();
        (storage, result)
    })
    .await
    .map_err(|e| StorageError::Poisoned(format!("storage task failed: {e}")))
}

/// Runs blocking storage work off the async workers in production. Under
/// madsim there are no threads to move it to, and the simulated disk does not
/// block, so it runs inline.
#[cfg(not(madsim))]
async fn run_blocking<R: Send + 'static>(
    work: impl FnOnce() -> R + Send + 'static,
) -> Result<R, tokio::task::JoinError> {
    tokio::task::spawn_blocking(work).await
}

#[cfg(madsim)]
async fn run_blocking<R: Send + 'static>(
    work: impl FnOnce() -> R + Send + 'static,
) -> Result<R, std::convert::Infallible> {
    Ok(work())
}

/// Applies one batch and syncs once. The hard state is written after the
/// entries (only its last value counts), so a crash can never leave a
/// durable commit index pointing past the durable log.
fn apply_batch<S: Storage>(storage: &mut S, batch: &[WriteRequest]) -> Result<(), StorageError> {
    let mut hard_state = None;
    for request in batch {
        match request {
            WriteRequest::Append(entries) => storage.append(entries)?,
            WriteRequest::TruncateFrom(index) => storage.truncate_from(*index)?,
            WriteRequest::HardState(hs) => hard_state = Some(*hs),
            WriteRequest::Snapshot { meta, data } => storage.save_snapshot(meta, data)?,
            WriteRequest::Compact(index) => storage.compact(*index)?,
        }
    }
    if let Some(hs) = hard_state {
        storage.save_hard_state(&hs)?;
    }
    storage.sync()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shutdown::shutdown_channel;
    use crate::storage::{Identity, SimDisk, SimStorage};
    use deadbolt_core::raft::EntryPayload;
    use std::time::Duration;

    fn entry(term: u64, index: u64) -> Entry {
        Entry {
            term,
            index,
            payload: EntryPayload::Noop,
        }
    }

    fn open(disk: &SimDisk) -> (SimStorage, Recovered) {
        let identity = Identity {
            cluster_id: "c".into(),
            node_id: 1,
        };
        let mut s = SimStorage::open(disk.clone(), &identity).unwrap();
        let r = s.load().unwrap();
        (s, r)
    }

    async fn wait_for(
        rx: &mut Subscriber<PersistState>,
        pred: impl Fn(&PersistState) -> bool,
    ) -> PersistState {
        tokio::time::timeout(Duration::from_secs(5), rx.wait_for(|s| pred(s)))
            .await
            .expect("persisted state within 5 s")
            .expect("actor alive")
            .clone()
    }

    #[tokio::test]
    async fn group_commit_batches_queued_writes() {
        let disk = SimDisk::new();
        let (s, r) = open(&disk);
        let (_stop_tx, stop) = shutdown_channel();
        let (handle, task) = spawn_storage_actor(s, &r, stop);
        let mut rx = handle.persisted();
        // Queue many requests without yielding: the actor sees them together.
        for i in 1..=100 {
            handle
                .try_submit(WriteRequest::Append(vec![entry(1, i)]))
                .unwrap();
        }
        handle
            .try_submit(WriteRequest::HardState(HardState {
                term: 1,
                voted_for: Some(1),
                commit_index: 0,
            }))
            .unwrap();
        let state = wait_for(&mut rx, |s| s.last_log == (1, 100)).await;
        assert_eq!(state.hard_state.voted_for, Some(1));
        let stats = handle.stats();
        assert!(stats.syncs < 10, "{stats:?}");
        assert_eq!(stats.entries_synced, 100);
        assert_eq!(disk.syncs(), stats.syncs);

        // Truncation then append of a new term reports the new tail.
        handle.submit(WriteRequest::TruncateFrom(51)).await.unwrap();
        handle
            .submit(WriteRequest::Append(vec![entry(2, 51)]))
            .await
            .unwrap();
        wait_for(&mut rx, |s| s.last_log == (2, 51)).await;
        handle.submit(WriteRequest::TruncateFrom(40)).await.unwrap();
        wait_for(&mut rx, |s| s.last_log == (1, 39)).await;
        handle
            .submit(WriteRequest::Snapshot {
                meta: SnapshotMeta {
                    last_index: 30,
                    last_term: 1,
                    membership: Default::default(),
                },
                data: b"sm".to_vec(),
            })
            .await
            .unwrap();
        let s = wait_for(&mut rx, |s| s.snapshot_last_index == 30).await;
        assert_eq!(s.last_log, (1, 39));
        drop(handle);
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .unwrap()
            .unwrap();

        let (_, r) = open(&disk);
        assert_eq!(r.entries.first().map(|e| e.index), Some(31));
        assert_eq!(r.last_log_id(), (1, 39));
    }

    /// An append that skips or overwrites without a truncation is a bug in
    /// the Raft actor: the storage actor stops loudly before any IO. (Under
    /// madsim a task panic fails the whole simulation, which is the point,
    /// so this test runs only in the normal build.)
    #[cfg(not(madsim))]
    #[tokio::test]
    async fn out_of_order_append_crashes_the_actor_before_io() {
        let disk = SimDisk::new();
        let (s, r) = open(&disk);
        let (_stop_tx, stop) = shutdown_channel();
        let (handle, task) = spawn_storage_actor(s, &r, stop);
        handle
            .submit(WriteRequest::Append(vec![entry(1, 2)]))
            .await
            .unwrap();
        let joined = tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .unwrap();
        assert!(joined.is_err_and(|e| e.is_panic()));
        assert_eq!(disk.syncs(), 0, "nothing reached the disk");
    }

    #[tokio::test]
    async fn failed_sync_poisons_and_is_reported() {
        let disk = SimDisk::new();
        let (s, r) = open(&disk);
        let (stop_tx, stop) = shutdown_channel();
        let (handle, task) = spawn_storage_actor(s, &r, stop);
        let mut rx = handle.persisted();
        handle
            .submit(WriteRequest::Append(vec![entry(1, 1)]))
            .await
            .unwrap();
        wait_for(&mut rx, |s| s.last_log == (1, 1)).await;
        disk.fail_next_sync();
        handle
            .submit(WriteRequest::Append(vec![entry(1, 2)]))
            .await
            .unwrap();
        let s = wait_for(&mut rx, |s| s.error.is_some()).await;
        assert_eq!(s.last_log, (1, 1), "a failed sync must not advance");
        // Later writes are refused, never reported as durable.
        handle
            .submit(WriteRequest::Append(vec![entry(1, 3)]))
            .await
            .unwrap();
        stop_tx.trigger();
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(rx.get().last_log, (1, 1));
        assert_eq!(handle.stats().sync_failures, 1);
    }

    /// A storage whose compaction takes ten steps, each waiting for the
    /// test's permit, and which records the order of what it did.
    struct SteppedCompaction {
        inner: SimStorage,
        target: LogIndex,
        done: LogIndex,
        permits: std::sync::mpsc::Receiver<Result<(), StorageError>>,
        events: Events,
    }

    impl SteppedCompaction {
        fn record(&self, event: &'static str) {
            self.events.lock().unwrap().push(event);
        }
    }

    impl Storage for SteppedCompaction {
        fn load(&mut self) -> Result<Recovered, StorageError> {
            self.inner.load()
        }
        fn append(&mut self, entries: &[Entry]) -> Result<(), StorageError> {
            self.record("append");
            self.inner.append(entries)
        }
        fn truncate_from(&mut self, index: LogIndex) -> Result<(), StorageError> {
            self.inner.truncate_from(index)
        }
        fn save_hard_state(&mut self, hard_state: &HardState) -> Result<(), StorageError> {
            self.inner.save_hard_state(hard_state)
        }
        fn sync(&mut self) -> Result<(), StorageError> {
            self.inner.sync()
        }
        fn save_snapshot(&mut self, meta: &SnapshotMeta, data: &[u8]) -> Result<(), StorageError> {
            self.record("snapshot");
            self.inner.save_snapshot(meta, data)?;
            self.compact(meta.last_index)
        }
        fn compact(&mut self, up_to: LogIndex) -> Result<(), StorageError> {
            self.target = self.target.max(up_to);
            Ok(())
        }
        fn compaction_pending(&self) -> bool {
            self.done < self.target
        }
        fn compact_step(&mut self) -> Result<(), StorageError> {
            let permit = self.permits.recv().expect("test hands out permits");
            self.record("step");
            permit?;
            self.done = (self.done + self.target.div_ceil(10)).min(self.target);
            Ok(())
        }
    }

    type Permits = std::sync::mpsc::Sender<Result<(), StorageError>>;
    type Events = Arc<Mutex<Vec<&'static str>>>;

    fn stepped(disk: &SimDisk) -> (SteppedCompaction, Recovered, Permits, Events) {
        let (inner, recovered) = open(disk);
        let (permit_tx, permits) = std::sync::mpsc::channel();
        let events = Arc::new(Mutex::new(Vec::new()));
        let storage = SteppedCompaction {
            inner,
            target: 0,
            done: 0,
            permits,
            events: events.clone(),
        };
        (storage, recovered, permit_tx, events)
    }

    async fn wait_for_events(events: &Mutex<Vec<&'static str>>, pred: impl Fn(&[&str]) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !pred(&events.lock().unwrap()) {
            assert!(Instant::now() < deadline, "{:?}", events.lock().unwrap());
            tokio::task::yield_now().await;
        }
    }

    /// A write that arrives during a long compaction waits for one step at
    /// most, not for the whole compaction.
    #[tokio::test]
    async fn writes_go_out_between_compaction_steps() {
        let disk = SimDisk::new();
        let (s, r, permits, events) = stepped(&disk);
        let (_stop_tx, stop) = shutdown_channel();
        let (handle, task) = spawn_storage_actor(s, &r, stop);
        let mut rx = handle.persisted();
        handle
            .submit(WriteRequest::Append(
                (1..=100).map(|i| entry(1, i)).collect(),
            ))
            .await
            .unwrap();
        handle
            .submit(WriteRequest::Snapshot {
                meta: SnapshotMeta {
                    last_index: 100,
                    last_term: 1,
                    membership: Default::default(),
                },
                data: b"sm".to_vec(),
            })
            .await
            .unwrap();
        wait_for(&mut rx, |s| s.snapshot_last_index == 100).await;
        permits.send(Ok(())).unwrap();
        wait_for_events(&events, |e| e.contains(&"step")).await;
        // Step 2 may already wait for its permit: the append queues behind it.
        handle
            .submit(WriteRequest::Append(vec![entry(1, 101)]))
            .await
            .unwrap();
        permits.send(Ok(())).unwrap();
        wait_for(&mut rx, |s| s.last_log == (1, 101)).await;
        let steps_before_append = {
            let events = events.lock().unwrap();
            let at = events.iter().rposition(|e| *e == "append").unwrap();
            events[..at].iter().filter(|e| **e == "step").count()
        };
        assert!(steps_before_append <= 2, "{:?}", events.lock().unwrap());
        for _ in 0..8 {
            permits.send(Ok(())).unwrap();
        }
        wait_for_events(&events, |e| {
            e.iter().filter(|e| **e == "step").count() == 10
        })
        .await;
        drop(handle);
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .unwrap()
            .unwrap();
        let (_, r) = open(&disk);
        assert_eq!(r.last_log_id(), (1, 101));
    }

    /// A failed compaction step is a failed write: the actor refuses every
    /// later write and reports nothing more as durable.
    #[tokio::test]
    async fn failed_compaction_step_poisons() {
        let disk = SimDisk::new();
        let (s, r, permits, _events) = stepped(&disk);
        let (stop_tx, stop) = shutdown_channel();
        let (handle, task) = spawn_storage_actor(s, &r, stop);
        let mut rx = handle.persisted();
        handle
            .submit(WriteRequest::Append(vec![entry(1, 1)]))
            .await
            .unwrap();
        handle.submit(WriteRequest::Compact(1)).await.unwrap();
        permits
            .send(Err(StorageError::DiskFull {
                op: "compact log",
                location: "test".into(),
            }))
            .unwrap();
        let s = wait_for(&mut rx, |s| s.error.is_some()).await;
        assert!(
            matches!(s.error, Some(StorageError::DiskFull { .. })),
            "{s:?}"
        );
        handle
            .submit(WriteRequest::Append(vec![entry(1, 2)]))
            .await
            .unwrap();
        stop_tx.trigger();
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(rx.get().last_log, (1, 1), "nothing after the failure");
    }

    /// Crashes the disk at a random moment under a running actor: every
    /// (term, index) the actor reported as persisted is recovered, with the
    /// entries that were written, and the hard state is never older than
    /// the one reported.
    #[tokio::test]
    async fn reported_persistence_survives_random_crashes() {
        use crate::rng::SplitMix64;
        use crate::storage::CrashFault;
        let faults = [
            CrashFault::LoseUnsynced,
            CrashFault::KeepRandomPrefix,
            CrashFault::TearLast,
            CrashFault::CorruptLast,
        ];
        let mut seeds_with_reports = 0;
        for seed in 0..60u64 {
            let mut rng = SplitMix64::new(seed);
            let disk = SimDisk::new();
            let (s, r) = open(&disk);
            let (stop_tx, stop) = shutdown_channel();
            let (handle, task) = spawn_storage_actor(s, &r, stop);
            let rx = handle.persisted();
            let mut written: Vec<Entry> = Vec::new();
            let mut term = 1;
            let mut reported = PersistState::default();
            let steps = rng.range_u64(1, 60);
            for _ in 0..steps {
                match rng.range_u64(0, 8) {
                    0..=3 => {
                        let n = rng.range_u64(1, 6);
                        let batch: Vec<_> = (0..n)
                            .map(|k| entry(term, written.len() as u64 + 1 + k))
                            .collect();
                        written.extend(batch.iter().cloned());
                        handle.submit(WriteRequest::Append(batch)).await.unwrap();
                    }
                    4 | 5 => {
                        term += 1;
                        let hs = HardState {
                            term,
                            voted_for: Some(1),
                            commit_index: rx.get().last_log.1,
                        };
                        handle.submit(WriteRequest::HardState(hs)).await.unwrap();
                    }
                    6 => {
                        for _ in 0..rng.range_u64(1, 4) {
                            tokio::task::yield_now().await;
                        }
                    }
                    _ => {
                        // Wait for durability, as Raft does before acking.
                        let want = written.len() as u64;
                        let mut rx = rx.clone();
                        wait_for(&mut rx, |s| s.last_log.1 >= want).await;
                    }
                }
                reported = rx.get();
            }
            disk.crash(faults[rng.range_u64(0, 4) as usize], &mut rng);
            // The pre-crash report is what Raft acted on.
            stop_tx.trigger();
            tokio::time::timeout(Duration::from_secs(5), task)
                .await
                .unwrap()
                .unwrap();
            let (_, recovered) = open(&disk);
            let durable = reported.last_log.1 as usize;
            seeds_with_reports += usize::from(durable > 0);
            assert!(
                recovered.entries.len() >= durable,
                "seed {seed}: reported {durable} persisted, recovered {}",
                recovered.entries.len()
            );
            assert_eq!(
                recovered.entries[..durable],
                written[..durable],
                "seed {seed}"
            );
            assert!(
                recovered.hard_state.term >= reported.hard_state.term,
                "seed {seed}"
            );
        }
        assert!(
            seeds_with_reports > 20,
            "only {seeds_with_reports} seeds saw a report"
        );
    }
}
