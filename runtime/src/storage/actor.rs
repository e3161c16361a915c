//! The storage actor: owns a node's `Storage`, takes write requests through a
//! bounded mailbox, and turns everything queued since the last sync into one
//! group of writes and one fsync (group commit), then publishes how far the
//! Raft actor's writes are durable. While the mailbox is empty it advances a
//! pending log compaction one bounded step at a time
//! (`Storage::compact_step`), so dropping a long log never holds a sync
//! back by more than one step.
//!
//! The hand-off follows etcd's asynchronous storage writes: each Raft
//! `Ready` becomes one [`WriteBatch`] carrying its `persist_seq`, and the
//! actor publishes the highest `persist_seq` it has made durable, which the
//! Raft actor hands straight to `Replica::persisted`.

use std::sync::{Arc, Mutex};

use deadbolt_core::raft::{Entry, HardState, LogIndex, SnapshotMeta, SnapshotToInstall};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::{Recovered, Storage, StorageError};
use crate::latest::{self, Publisher, Subscriber};
use crate::shutdown::{wait_for_shutdown, Shutdown};

/// Requests the mailbox holds before `submit` waits (backpressure on Raft).
pub const STORAGE_MAILBOX_REQUESTS_MAX: usize = 1024;
/// Requests written under one fsync at most.
pub const STORAGE_SYNC_REQUESTS_MAX: usize = 512;
/// Upper bounds (microseconds) of the fsync latency histogram buckets; the
/// last bucket of [`StorageStats::sync_latency_buckets`] counts the rest.
pub const SYNC_LATENCY_BUCKETS_US: [u64; 10] = [
    100, 300, 1_000, 3_000, 10_000, 30_000, 100_000, 300_000, 1_000_000, 3_000_000,
];

/// The writes of one Raft `Ready`, applied in this order: `snapshot`, then
/// `truncate_from`, then `entries`; `hard_state` is written after every
/// other write of the sync that carries it, so a crash never leaves a
/// durable commit index pointing past the durable log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteBatch {
    /// The Ready's `persist_seq` (never 0; Readies without writes send
    /// nothing). Published as [`Durability::persisted_seq`] once this batch
    /// and every earlier one are synced.
    pub persist_seq: u64,
    /// A snapshot received from the leader. It *replaces* the stored log:
    /// entries after it are dropped before it is stored, so a crash in
    /// between leaves a prefix of the old log, never a stale tail after the
    /// new snapshot (simulation seed 215).
    pub snapshot: Option<SnapshotToInstall>,
    /// Delete stored entries from this index on (a conflict with the leader).
    pub truncate_from: Option<LogIndex>,
    /// Entries following the last stored index (after the truncation).
    pub entries: Vec<Entry>,
    pub hard_state: Option<HardState>,
}

/// One request for the storage actor. Requests are applied in mailbox order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteRequest {
    /// One Ready's writes.
    Batch(WriteBatch),
    /// A snapshot this node took of its own state: stored, and the log
    /// compacted up to it; entries after it stay.
    SaveSnapshot { meta: SnapshotMeta, data: Vec<u8> },
}

impl WriteRequest {
    fn entries(&self) -> u64 {
        match self {
            WriteRequest::Batch(batch) => batch.entries.len() as u64,
            WriteRequest::SaveSnapshot { .. } => 0,
        }
    }
}

/// What is durable, published after every sync on a latest-value channel
/// ([`crate::latest`], a deterministic `watch`). It never blocks the actor
/// and always holds the latest value: the Raft actor selects on `changed()`
/// and reports `persisted_seq` to its replica. Bounded channels both ways
/// between the two actors could deadlock; this cannot.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Durability {
    /// The highest `persist_seq` whose batch (and so every earlier one,
    /// mailbox order) is synced; 0 before the first.
    pub persisted_seq: u64,
    /// Last index of the durable snapshot (0 if none): how far a snapshot
    /// the node took itself, which has no `persist_seq`, is durable.
    pub snapshot_index: LogIndex,
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
    durability: Subscriber<Durability>,
    stats: Arc<Mutex<StorageStats>>,
}

impl StorageHandle {
    /// Queues a write, waiting while the mailbox is full.
    pub async fn submit(&self, request: WriteRequest) -> Result<(), StorageActorClosed> {
        self.tx.send(request).await.map_err(|_| StorageActorClosed)
    }

    /// Queues a write if there is room; gives the request back otherwise.
    // Handed back whole, as `mpsc::Sender::try_send` does: boxing it would
    // cost every caller an allocation to spare the rare full mailbox a copy.
    #[allow(clippy::result_large_err)]
    pub fn try_submit(&self, request: WriteRequest) -> Result<(), WriteRequest> {
        self.tx.try_send(request).map_err(|e| match e {
            mpsc::error::TrySendError::Full(r) | mpsc::error::TrySendError::Closed(r) => r,
        })
    }

    /// A receiver of durability reports (see [`Durability`]).
    pub fn durability(&self) -> Subscriber<Durability> {
        self.durability.clone()
    }

    pub fn stats(&self) -> StorageStats {
        self.stats.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// The index bounds of the stored log, so the actor can check every request
/// against the ordering contract the Raft actor must keep before any IO (a
/// violation is a bug upstream, caught before anything reaches the disk).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct LogBounds {
    snapshot_index: LogIndex,
    last_index: LogIndex,
}

impl LogBounds {
    fn from_recovered(recovered: &Recovered) -> Self {
        let snapshot_index = recovered
            .snapshot
            .as_ref()
            .map_or(0, |(meta, _)| meta.last_index);
        Self {
            snapshot_index,
            last_index: recovered.last_log_id().1.max(snapshot_index),
        }
    }

    /// Applies a request, asserting the ordering contract.
    fn apply(&mut self, request: &WriteRequest) {
        match request {
            WriteRequest::Batch(batch) => {
                if let Some(snapshot) = &batch.snapshot {
                    self.truncate_from(snapshot.meta.last_index + 1);
                    self.save_snapshot(snapshot.meta.last_index);
                }
                if let Some(index) = batch.truncate_from {
                    self.truncate_from(index);
                }
                self.append(&batch.entries);
            }
            WriteRequest::SaveSnapshot { meta, .. } => self.save_snapshot(meta.last_index),
        }
    }

    fn append(&mut self, entries: &[Entry]) {
        for (offset, e) in entries.iter().enumerate() {
            assert_eq!(
                e.index,
                self.last_index + 1 + offset as u64,
                "append must follow the last index (truncate before overwriting)"
            );
        }
        if let Some(last) = entries.last() {
            self.last_index = last.index;
        }
    }

    fn truncate_from(&mut self, index: LogIndex) {
        assert!(
            index > self.snapshot_index,
            "truncating from {index} would cut into the snapshot at {}",
            self.snapshot_index
        );
        self.last_index = self.last_index.min(index - 1);
    }

    /// A stored snapshot keeps the entries after it.
    fn save_snapshot(&mut self, last_index: LogIndex) {
        self.last_index = self.last_index.max(last_index);
        self.snapshot_index = last_index;
    }
}

/// Starts the storage actor on `storage`, which the caller has already
/// loaded (`recovered` is what `load` returned). The actor ends when
/// `shutdown` turns true (or its sender is dropped) or every handle is gone.
pub fn spawn_storage_actor<S: Storage>(
    storage: S,
    recovered: &Recovered,
    shutdown: Shutdown,
) -> (StorageHandle, JoinHandle<()>) {
    let (tx, rx) = mpsc::channel(STORAGE_MAILBOX_REQUESTS_MAX);
    let bounds = LogBounds::from_recovered(recovered);
    let durable = Durability {
        persisted_seq: 0,
        snapshot_index: bounds.snapshot_index,
        error: None,
    };
    let (publisher, durability) = latest::channel(durable.clone());
    let stats = Arc::new(Mutex::new(StorageStats::default()));
    let handle = StorageHandle {
        tx,
        durability,
        stats: stats.clone(),
    };
    let actor = StorageActor {
        storage: Some(storage),
        bounds,
        durable,
        publisher,
        stats,
        rx,
        shutdown,
    };
    // Runs inside the caller's span (which carries the node id).
    let span = tracing::info_span!("storage");
    let task = tokio::spawn(tracing::Instrument::instrument(actor.run(), span));
    (handle, task)
}

/// The actor's state; `storage` is `None` only while a blocking call holds
/// it (or after it was lost with its task).
struct StorageActor<S> {
    storage: Option<S>,
    /// The stored log as the requests written so far left it.
    bounds: LogBounds,
    /// What was last published.
    durable: Durability,
    publisher: Publisher<Durability>,
    stats: Arc<Mutex<StorageStats>>,
    rx: mpsc::Receiver<WriteRequest>,
    shutdown: Shutdown,
}

/// Whether the actor loop goes on.
enum Next {
    Continue,
    Stop,
}

impl<S: Storage> StorageActor<S> {
    async fn run(mut self) {
        loop {
            let compacting = self.durable.error.is_none()
                && self
                    .storage
                    .as_ref()
                    .is_some_and(|s| s.compaction_pending());
            // Writes first; a compaction step only when none waits.
            let first = tokio::select! {
                biased;
                _ = wait_for_shutdown(&mut self.shutdown) => break,
                request = self.rx.recv() => match request {
                    Some(request) => request,
                    None => break,
                },
                () = std::future::ready(()), if compacting => match self.compact_step().await {
                    Next::Continue => continue,
                    Next::Stop => break,
                },
            };
            let mut group = vec![first];
            while group.len() < STORAGE_SYNC_REQUESTS_MAX {
                match self.rx.try_recv() {
                    Ok(request) => group.push(request),
                    Err(_) => break,
                }
            }
            if self.durable.error.is_some() {
                // Poisoned: refuse silently; the error is already published.
                continue;
            }
            if let Next::Stop = self.write(group).await {
                break;
            }
        }
    }

    /// One bounded compaction step; a failed step poisons like a failed write.
    async fn compact_step(&mut self) -> Next {
        let Some(storage) = self.storage.take() else {
            return Next::Stop;
        };
        match compact_step(storage).await {
            Ok((storage, Ok(()))) => {
                self.storage = Some(storage);
                Next::Continue
            }
            Ok((storage, Err(error))) => {
                self.storage = Some(storage);
                tracing::error!(%error, "log compaction failed; refusing further writes");
                self.poison(error);
                Next::Continue
            }
            Err(error) => {
                tracing::error!(%error, "storage actor lost its storage");
                self.poison(error);
                Next::Stop
            }
        }
    }

    /// Writes a group of requests under one sync and publishes the outcome.
    async fn write(&mut self, group: Vec<WriteRequest>) -> Next {
        // Check the group against the ordering contract before any IO.
        let mut next_bounds = self.bounds;
        let mut persisted_seq = self.durable.persisted_seq;
        for request in &group {
            next_bounds.apply(request);
            if let WriteRequest::Batch(batch) = request {
                assert!(
                    batch.persist_seq > persisted_seq,
                    "persist_seq {} after {persisted_seq}: batches come in Ready order",
                    batch.persist_seq
                );
                persisted_seq = batch.persist_seq;
            }
        }
        let Some(storage) = self.storage.take() else {
            return Next::Stop;
        };
        let requests = group.len() as u64;
        let entries: u64 = group.iter().map(WriteRequest::entries).sum();
        let started = Instant::now();
        let joined = write_group_off_thread(storage, group).await;
        let latency_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        let (storage, result) = match joined {
            Ok(out) => out,
            Err(e) => {
                let error = StorageError::Poisoned(format!("storage task failed: {e}"));
                tracing::error!(%error, "storage actor lost its storage");
                self.poison(error);
                return Next::Stop;
            }
        };
        self.storage = Some(storage);
        match result {
            Ok(()) => {
                self.bounds = next_bounds;
                self.durable.snapshot_index = next_bounds.snapshot_index;
                self.durable.persisted_seq = persisted_seq;
                self.stats().record_sync(entries, requests, latency_us);
            }
            Err(error) => {
                tracing::error!(%error, "storage write failed; refusing further writes");
                self.stats().sync_failures += 1;
                self.durable.error = Some(error);
            }
        }
        self.publisher.publish(self.durable.clone());
        Next::Continue
    }

    fn stats(&self) -> std::sync::MutexGuard<'_, StorageStats> {
        // Plain counters: a panic elsewhere cannot leave them torn.
        self.stats.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn poison(&mut self, error: StorageError) {
        self.durable.error = Some(error);
        self.publisher.publish(self.durable.clone());
    }
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

/// Writes a group and syncs it off the async workers, handing the storage
/// back with the outcome (`Err` only if the blocking task was lost).
#[cfg(not(madsim))]
async fn write_group_off_thread<S: Storage>(
    mut storage: S,
    group: Vec<WriteRequest>,
) -> Result<(S, Result<(), StorageError>), tokio::task::JoinError> {
    run_blocking(move || {
        let result = write_group(&mut storage, &group).and_then(|()| storage.sync());
        (storage, result)
    })
    .await
}

/// The simulation's version: the group is written, then the actor waits the
/// disk's simulated fsync latency before syncing, so that the Raft actor
/// goes on sending while the writes are not yet durable, and a crash can
/// fall in between (the disk then loses, keeps or tears them as its crash
/// model says). Nothing is reported durable before the sync returns.
#[cfg(madsim)]
async fn write_group_off_thread<S: Storage>(
    mut storage: S,
    group: Vec<WriteRequest>,
) -> Result<(S, Result<(), StorageError>), std::convert::Infallible> {
    let written = write_group(&mut storage, &group);
    if written.is_ok() {
        let delay = storage.sim_sync_delay();
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
    }
    let result = written.and_then(|()| storage.sync());
    Ok((storage, result))
}

/// Writes a group of requests, to be synced once. The hard state is written
/// after everything else (only its last value counts), so a crash can never
/// leave a durable commit index pointing past the durable log.
fn write_group<S: Storage>(storage: &mut S, group: &[WriteRequest]) -> Result<(), StorageError> {
    let mut hard_state = None;
    for request in group {
        match request {
            WriteRequest::Batch(batch) => {
                if let Some(snapshot) = &batch.snapshot {
                    // `save_snapshot` alone keeps entries after the
                    // snapshot (right for our own); a received one replaces
                    // the log, whose tail may be another history. Truncating
                    // first: `save_snapshot` makes the truncation durable
                    // with the snapshot, and a crash before it leaves the old
                    // log and snapshot, never a stale tail after the new one.
                    storage.truncate_from(snapshot.meta.last_index + 1)?;
                    storage.save_snapshot(&snapshot.meta, &snapshot.data)?;
                }
                if let Some(index) = batch.truncate_from {
                    storage.truncate_from(index)?;
                }
                if !batch.entries.is_empty() {
                    storage.append(&batch.entries)?;
                }
                if let Some(hs) = batch.hard_state {
                    hard_state = Some(hs);
                }
            }
            WriteRequest::SaveSnapshot { meta, data } => storage.save_snapshot(meta, data)?,
        }
    }
    if let Some(hs) = hard_state {
        storage.save_hard_state(&hs)?;
    }
    Ok(())
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

    /// A batch of entries only.
    fn append(persist_seq: u64, entries: Vec<Entry>) -> WriteRequest {
        WriteRequest::Batch(WriteBatch {
            persist_seq,
            snapshot: None,
            truncate_from: None,
            entries,
            hard_state: None,
        })
    }

    fn batch(persist_seq: u64) -> WriteBatch {
        WriteBatch {
            persist_seq,
            snapshot: None,
            truncate_from: None,
            entries: Vec::new(),
            hard_state: None,
        }
    }

    fn snapshot_meta(last_index: LogIndex, last_term: u64) -> SnapshotMeta {
        SnapshotMeta {
            last_index,
            last_term,
            membership: Default::default(),
        }
    }

    async fn wait_for(
        rx: &mut Subscriber<Durability>,
        pred: impl Fn(&Durability) -> bool,
    ) -> Durability {
        tokio::time::timeout(Duration::from_secs(5), rx.wait_for(|s| pred(s)))
            .await
            .expect("durability within 5 s")
            .expect("actor alive")
            .clone()
    }

    async fn stopped(task: JoinHandle<()>) {
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .unwrap()
            .unwrap();
    }

    #[test]
    fn log_bounds_follow_truncations_and_snapshots() {
        let mut bounds = LogBounds {
            snapshot_index: 0,
            last_index: 0,
        };
        bounds.apply(&append(1, (1..=10).map(|i| entry(1, i)).collect()));
        let mut conflict = batch(2);
        conflict.truncate_from = Some(6);
        conflict.entries = vec![entry(2, 6)];
        bounds.apply(&WriteRequest::Batch(conflict));
        assert_eq!(bounds.last_index, 6);
        // Our own snapshot keeps the entries after it.
        bounds.apply(&WriteRequest::SaveSnapshot {
            meta: snapshot_meta(4, 1),
            data: Vec::new(),
        });
        assert_eq!((bounds.snapshot_index, bounds.last_index), (4, 6));
        // A received one replaces the log, wherever it ended.
        for at in [5, 20] {
            let mut received = bounds;
            let mut install = batch(3);
            install.snapshot = Some(SnapshotToInstall {
                meta: snapshot_meta(at, 3),
                data: Vec::new(),
            });
            install.entries = vec![entry(3, at + 1)];
            received.apply(&WriteRequest::Batch(install));
            assert_eq!((received.snapshot_index, received.last_index), (at, at + 1));
        }
    }

    #[test]
    #[should_panic(expected = "would cut into the snapshot at 4")]
    fn truncating_into_the_snapshot_is_a_bug() {
        let mut bounds = LogBounds {
            snapshot_index: 4,
            last_index: 6,
        };
        let mut truncate = batch(1);
        truncate.truncate_from = Some(4);
        bounds.apply(&WriteRequest::Batch(truncate));
    }

    #[tokio::test]
    async fn group_commit_syncs_queued_batches_together() {
        let disk = SimDisk::new();
        let (s, r) = open(&disk);
        let (_stop_tx, stop) = shutdown_channel();
        let (handle, task) = spawn_storage_actor(s, &r, stop);
        let mut rx = handle.durability();
        // Queue many batches without yielding: the actor sees them together.
        for i in 1..=100 {
            handle.try_submit(append(i, vec![entry(1, i)])).unwrap();
        }
        let mut vote = batch(101);
        vote.hard_state = Some(HardState {
            term: 1,
            voted_for: Some(1),
            commit_index: 0,
        });
        handle.try_submit(WriteRequest::Batch(vote)).unwrap();
        wait_for(&mut rx, |s| s.persisted_seq == 101).await;
        let stats = handle.stats();
        assert!(stats.syncs < 10, "{stats:?}");
        assert_eq!(stats.entries_synced, 100);
        assert_eq!(disk.syncs(), stats.syncs);

        // A conflict: truncation then entries of a new term, one batch.
        let mut conflict = batch(102);
        conflict.truncate_from = Some(51);
        conflict.entries = vec![entry(2, 51)];
        handle.submit(WriteRequest::Batch(conflict)).await.unwrap();
        wait_for(&mut rx, |s| s.persisted_seq == 102).await;
        let mut shorter = batch(103);
        shorter.truncate_from = Some(40);
        handle.submit(WriteRequest::Batch(shorter)).await.unwrap();
        let snapshot = WriteRequest::SaveSnapshot {
            meta: snapshot_meta(30, 1),
            data: b"sm".to_vec(),
        };
        handle.submit(snapshot).await.unwrap();
        let s = wait_for(&mut rx, |s| s.snapshot_index == 30).await;
        assert_eq!(s.persisted_seq, 103);
        drop(handle);
        stopped(task).await;

        let (_, r) = open(&disk);
        assert_eq!(r.entries.first().map(|e| e.index), Some(31));
        assert_eq!(r.last_log_id(), (1, 39));
        assert_eq!(r.hard_state.voted_for, Some(1));
    }

    /// A snapshot received from the leader over a longer log of another
    /// history (simulation seed 215): the stale tail goes, and the batch's
    /// entries follow the snapshot.
    #[tokio::test]
    async fn a_received_snapshot_replaces_a_longer_log() {
        let disk = SimDisk::new();
        let (s, r) = open(&disk);
        let (_stop_tx, stop) = shutdown_channel();
        let (handle, task) = spawn_storage_actor(s, &r, stop);
        let mut rx = handle.durability();
        handle
            .submit(append(1, (1..=10).map(|i| entry(1, i)).collect()))
            .await
            .unwrap();
        let mut install = batch(2);
        install.snapshot = Some(SnapshotToInstall {
            meta: snapshot_meta(5, 2),
            data: b"sm".to_vec(),
        });
        install.entries = vec![entry(2, 6)];
        handle.submit(WriteRequest::Batch(install)).await.unwrap();
        let s = wait_for(&mut rx, |s| s.persisted_seq == 2).await;
        assert_eq!(s.snapshot_index, 5);
        drop(handle);
        stopped(task).await;
        let (_, r) = open(&disk);
        assert_eq!(r.snapshot.map(|(m, _)| m.last_index), Some(5));
        assert_eq!(r.entries, vec![entry(2, 6)], "no stale tail");
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
        handle.submit(append(1, vec![entry(1, 2)])).await.unwrap();
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
        let mut rx = handle.durability();
        handle.submit(append(1, vec![entry(1, 1)])).await.unwrap();
        wait_for(&mut rx, |s| s.persisted_seq == 1).await;
        disk.fail_next_sync();
        handle.submit(append(2, vec![entry(1, 2)])).await.unwrap();
        let s = wait_for(&mut rx, |s| s.error.is_some()).await;
        assert_eq!(s.persisted_seq, 1, "a failed sync must not advance");
        // Later writes are refused, never reported as durable.
        handle.submit(append(3, vec![entry(1, 3)])).await.unwrap();
        stop_tx.trigger();
        stopped(task).await;
        assert_eq!(rx.get().persisted_seq, 1);
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
    /// most, not for the whole compaction. (Normal build only: under madsim
    /// a step runs inline, so a step waiting for the test's next permit
    /// would block the test that sends it.)
    #[cfg(not(madsim))]
    #[tokio::test]
    async fn writes_go_out_between_compaction_steps() {
        let disk = SimDisk::new();
        let (s, r, permits, events) = stepped(&disk);
        let (_stop_tx, stop) = shutdown_channel();
        let (handle, task) = spawn_storage_actor(s, &r, stop);
        let mut rx = handle.durability();
        handle
            .submit(append(1, (1..=100).map(|i| entry(1, i)).collect()))
            .await
            .unwrap();
        let snapshot = WriteRequest::SaveSnapshot {
            meta: snapshot_meta(100, 1),
            data: b"sm".to_vec(),
        };
        handle.submit(snapshot).await.unwrap();
        wait_for(&mut rx, |s| s.snapshot_index == 100).await;
        permits.send(Ok(())).unwrap();
        wait_for_events(&events, |e| e.contains(&"step")).await;
        // Step 2 may already wait for its permit: the append queues behind it.
        handle.submit(append(2, vec![entry(1, 101)])).await.unwrap();
        permits.send(Ok(())).unwrap();
        wait_for(&mut rx, |s| s.persisted_seq == 2).await;
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
        stopped(task).await;
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
        let mut rx = handle.durability();
        handle.submit(append(1, vec![entry(1, 1)])).await.unwrap();
        let snapshot = WriteRequest::SaveSnapshot {
            meta: snapshot_meta(1, 1),
            data: b"sm".to_vec(),
        };
        handle.submit(snapshot).await.unwrap();
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
        handle.submit(append(2, vec![entry(1, 2)])).await.unwrap();
        stop_tx.trigger();
        stopped(task).await;
        assert_eq!(rx.get().persisted_seq, 1, "nothing after the failure");
    }

    /// Crashes the disk at a random moment under a running actor: every
    /// batch the actor reported as persisted is recovered, with the entries
    /// that were written, and the hard state is never older than the one
    /// reported.
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
            let rx = handle.durability();
            let mut written: Vec<Entry> = Vec::new();
            let mut term = 1;
            // What each batch left written: (entries, hard state term),
            // indexed by persist_seq (seq 0: nothing).
            let mut after_seq = vec![(0, 0)];
            let mut reported = Durability::default();
            let steps = rng.range_u64(1, 60);
            for _ in 0..steps {
                let seq = after_seq.len() as u64;
                match rng.range_u64(0, 8) {
                    0..=3 => {
                        let n = rng.range_u64(1, 6);
                        let entries: Vec<_> = (0..n)
                            .map(|k| entry(term, written.len() as u64 + 1 + k))
                            .collect();
                        written.extend(entries.iter().cloned());
                        after_seq.push((written.len(), after_seq[seq as usize - 1].1));
                        handle.submit(append(seq, entries)).await.unwrap();
                    }
                    4 | 5 => {
                        term += 1;
                        let durable = after_seq[rx.get().persisted_seq as usize].0;
                        let mut vote = batch(seq);
                        vote.hard_state = Some(HardState {
                            term,
                            voted_for: Some(1),
                            commit_index: durable as u64,
                        });
                        after_seq.push((written.len(), term));
                        handle.submit(WriteRequest::Batch(vote)).await.unwrap();
                    }
                    6 => {
                        for _ in 0..rng.range_u64(1, 4) {
                            tokio::task::yield_now().await;
                        }
                    }
                    _ => {
                        // Wait for durability, as Raft does before acking.
                        let want = seq - 1;
                        let mut rx = rx.clone();
                        wait_for(&mut rx, |s| s.persisted_seq >= want).await;
                    }
                }
                reported = rx.get();
            }
            disk.crash(faults[rng.range_u64(0, 4) as usize], &mut rng);
            // The pre-crash report is what Raft acted on.
            stop_tx.trigger();
            stopped(task).await;
            let (_, recovered) = open(&disk);
            let (durable, durable_term) = after_seq[reported.persisted_seq as usize];
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
            assert!(recovered.hard_state.term >= durable_term, "seed {seed}");
        }
        assert!(
            seeds_with_reports > 20,
            "only {seeds_with_reports} seeds saw a report"
        );
    }
}
