//! SimStorage: an in-memory "disk" with a crash model, for the simulation and
//! for plain tests. The disk (`SimDisk`) is a shared handle that outlives the
//! node's tasks, so its durable part survives a simulated crash; writes not
//! yet synced are kept apart and may vanish, or tear, when the disk crashes.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use deadbolt_core::codec;
use deadbolt_core::raft::{Entry, HardState, LogIndex, SnapshotMeta};

use super::{
    check_identity, check_snapshot_len, current_membership, decode_meta, encode_log_record,
    raise_term_to_log, recover_log, validate_identity, Identity, Recovered, Storage, StorageError,
};
use crate::rng::SplitMix64;

const LOCATION: &str = "simdisk";

/// What a crash does to writes that were not synced yet. Hard state and
/// snapshot writes are modelled as atomic (fjall's journal and
/// write-then-rename give us that); only log appends can tear.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrashFault {
    /// Every unsynced write is lost.
    LoseUnsynced,
    /// A random prefix of the unsynced writes reached the platter (the page
    /// cache wrote some of them back before power went).
    KeepRandomPrefix,
    /// A random prefix survives and the next log append is left half written.
    TearLast,
    /// A random prefix survives and the next log append is written whole
    /// but with one flipped byte.
    CorruptLast,
}

/// One durable picture of the disk. Records are stored encoded, exactly as a
/// real backend would, so recovery exercises the same checksum path.
#[derive(Debug, Clone, Default)]
struct Image {
    identity: Option<Vec<u8>>,
    hard_state: Option<Vec<u8>>,
    snapshot: Option<(Vec<u8>, Vec<u8>)>,
    log: BTreeMap<LogIndex, Vec<u8>>,
}

/// A write that is in the "page cache" until the next sync.
#[derive(Debug, Clone)]
enum Op {
    HardState(Vec<u8>),
    Append(LogIndex, Vec<u8>),
    TruncateFrom(LogIndex),
    CompactTo(LogIndex),
}

impl Image {
    fn apply(&mut self, op: &Op) {
        match op {
            Op::HardState(bytes) => self.hard_state = Some(bytes.clone()),
            Op::Append(index, bytes) => {
                self.log.insert(*index, bytes.clone());
            }
            Op::TruncateFrom(index) => {
                self.log.split_off(index);
            }
            Op::CompactTo(index) => {
                self.log = self.log.split_off(&(index.saturating_add(1)));
            }
        }
    }
}

#[derive(Debug, Default)]
struct DiskState {
    durable: Image,
    pending: Vec<Op>,
    /// Bumped on every crash and open; only the newest handle may write.
    generation: u64,
    full: bool,
    fail_next_sync: bool,
    syncs: u64,
    /// Simulated fsync latency (see [`SyncLatency`]) and the stream it
    /// draws from; kept with the disk, so a restart does not replay it.
    sync_latency: Option<(SyncLatency, SplitMix64)>,
}

/// How long a simulated fsync takes (simulation only: the storage actor
/// waits this long between writing a group and syncing it, so a crash can
/// fall between a write and its sync, and sends and syncs interleave). Each
/// sync waits a uniform `min_us..=max_us`; one in `tail_one_in` (0: none)
/// waits up to `tail_max_ms` instead, as a disk stalled by a journal flush
/// or a busy neighbour does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SyncLatency {
    pub min_us: u64,
    pub max_us: u64,
    pub tail_one_in: u64,
    pub tail_max_ms: u64,
}

impl SyncLatency {
    /// No latency: a sync is durable in the instant it is asked for.
    pub const NONE: SyncLatency = SyncLatency {
        min_us: 0,
        max_us: 0,
        tail_one_in: 0,
        tail_max_ms: 0,
    };

    fn draw(&self, rng: &mut SplitMix64) -> std::time::Duration {
        if *self == Self::NONE {
            return std::time::Duration::ZERO;
        }
        if self.tail_one_in > 0 && rng.chance(1, self.tail_one_in) {
            let ms = rng.range_u64(1, self.tail_max_ms.max(1) + 1);
            return std::time::Duration::from_millis(ms);
        }
        let us = rng.range_u64(self.min_us, self.max_us.max(self.min_us) + 1);
        std::time::Duration::from_micros(us)
    }
}

/// The shared simulated disk of one node. Clone it into the node at each
/// (re)start; keep one clone outside to crash it.
#[derive(Debug, Clone, Default)]
pub struct SimDisk {
    state: Arc<Mutex<DiskState>>,
}

impl SimDisk {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, DiskState> {
        // A panic while holding the lock happened in a test that is failing
        // anyway; the disk image itself is still consistent.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Simulates power loss: unsynced writes are dropped or partly applied as
    /// `fault` says, with choices drawn from `rng`. Storage handles opened
    /// before the crash fail from now on with [`StorageError::Crashed`].
    pub fn crash(&self, fault: CrashFault, rng: &mut SplitMix64) {
        let mut state = self.lock();
        let pending = std::mem::take(&mut state.pending);
        state.generation += 1;
        // An injected fsync failure was aimed at the process that just
        // died; left armed, it would poison the next incarnation's first
        // sync, which no supervisor restarts (simulation seeds 1388, 1505).
        state.fail_next_sync = false;
        if fault == CrashFault::LoseUnsynced {
            return;
        }
        let keep = rng.range_u64(0, pending.len() as u64 + 1) as usize;
        for op in &pending[..keep] {
            state.durable.apply(op);
        }
        let Some(Op::Append(index, bytes)) = pending.get(keep) else {
            return;
        };
        // Like a journal, a torn write can only be the newest record: never
        // tear over the middle of the surviving log.
        let beyond_tail = state
            .durable
            .log
            .last_key_value()
            .is_none_or(|(last, _)| index > last);
        if !beyond_tail || bytes.is_empty() {
            return;
        }
        let mut damaged = bytes.clone();
        match fault {
            CrashFault::TearLast => {
                let len = rng.range_u64(0, damaged.len() as u64) as usize;
                damaged.truncate(len);
            }
            CrashFault::CorruptLast => {
                let at = rng.range_u64(0, damaged.len() as u64) as usize;
                damaged[at] ^= 1 << rng.range_u64(0, 8);
            }
            CrashFault::LoseUnsynced | CrashFault::KeepRandomPrefix => return,
        }
        state.durable.log.insert(*index, damaged);
    }

    /// While set, every write fails with [`StorageError::DiskFull`].
    pub fn set_full(&self, full: bool) {
        self.lock().full = full;
    }

    /// The next sync fails; the unsynced writes stay in the "page cache" and
    /// may or may not survive a later crash, as after a real failed fsync.
    /// A crash before that sync disarms it.
    pub fn fail_next_sync(&self) {
        self.lock().fail_next_sync = true;
    }

    /// Gives the disk a simulated fsync latency, drawn from a stream seeded
    /// with `seed` (see [`SyncLatency`]), unless it has one: a restarted
    /// node's disk goes on with its stream instead of replaying it.
    pub fn set_sync_latency(&self, latency: SyncLatency, seed: u64) {
        let mut state = self.lock();
        if state.sync_latency.is_none() {
            state.sync_latency = Some((latency, SplitMix64::new(seed)));
        }
    }

    /// How long the next sync takes (simulation): drawn from the disk's
    /// latency profile, zero without one.
    pub fn draw_sync_delay(&self) -> std::time::Duration {
        match &mut self.lock().sync_latency {
            Some((latency, rng)) => latency.draw(rng),
            None => std::time::Duration::ZERO,
        }
    }

    /// Writes made but not yet synced (the crash window the simulation
    /// aims its crashes at).
    pub fn unsynced_writes(&self) -> usize {
        self.lock().pending.len()
    }

    /// Successful syncs so far (to check group commit).
    pub fn syncs(&self) -> u64 {
        self.lock().syncs
    }

    /// Flips a byte of a durable log record (tests of corruption detection).
    pub fn corrupt_durable_log_record(&self, index: LogIndex) -> bool {
        let mut state = self.lock();
        match state.durable.log.get_mut(&index) {
            Some(bytes) if !bytes.is_empty() => {
                bytes[0] ^= 0x55;
                true
            }
            _ => false,
        }
    }
}

/// Log entries one `compact_step` drops at most: small, so that the
/// simulation's frequent compactions take several steps interleaved with
/// appends, syncs and crashes, as fjall's long ones do in production.
const COMPACT_STEP_ENTRIES_MAX: LogIndex = 16;

/// A node's view of its [`SimDisk`]: what it has written (synced or not).
#[derive(Debug)]
pub struct SimStorage {
    disk: SimDisk,
    generation: u64,
    view: Image,
    /// The log may be dropped up to here (covered by a snapshot);
    /// `compact_step` gets there in chunks.
    compact_target: LogIndex,
}

impl SimStorage {
    /// Opens the disk after a (re)start: the view is what survived. A fresh
    /// disk is stamped with `identity` (durably); a used one must match it.
    pub fn open(disk: SimDisk, identity: &Identity) -> Result<Self, StorageError> {
        validate_identity(identity)?;
        let mut state = disk.lock();
        // Whatever was unsynced when the previous incarnation stopped without a
        // crash (a clean shutdown) is still in the "page cache": keep it.
        let mut view = state.durable.clone();
        for op in &state.pending {
            view.apply(op);
        }
        match &view.identity {
            Some(bytes) => {
                let found: Identity = decode_meta(LOCATION, "identity", bytes)?;
                check_identity(LOCATION, &found, identity)?;
            }
            None => {
                let bytes = codec::encode_checked(identity);
                state.durable.identity = Some(bytes.clone());
                view.identity = Some(bytes);
            }
        }
        // A new incarnation owns the disk: any handle left from the previous
        // one (a task not yet dropped) must not write behind its back.
        state.generation += 1;
        let generation = state.generation;
        drop(state);
        Ok(Self {
            disk,
            generation,
            view,
            compact_target: 0,
        })
    }

    /// Records a write in the page cache, unless the disk crashed or is full.
    fn write(&mut self, op: Op) -> Result<(), StorageError> {
        let mut state = self.disk.lock();
        if state.generation != self.generation {
            return Err(StorageError::Crashed);
        }
        if state.full {
            return Err(StorageError::DiskFull {
                op: "write",
                location: LOCATION.into(),
            });
        }
        self.view.apply(&op);
        state.pending.push(op);
        Ok(())
    }

    fn sync_locked(&self, state: &mut DiskState) -> Result<(), StorageError> {
        if state.generation != self.generation {
            return Err(StorageError::Crashed);
        }
        if std::mem::take(&mut state.fail_next_sync) {
            return Err(StorageError::Io {
                op: "fsync",
                location: LOCATION.into(),
                kind: std::io::ErrorKind::Other,
                message: "injected fsync failure".into(),
            });
        }
        let pending = std::mem::take(&mut state.pending);
        for op in &pending {
            state.durable.apply(op);
        }
        state.syncs += 1;
        Ok(())
    }
}

impl Storage for SimStorage {
    fn load(&mut self) -> Result<Recovered, StorageError> {
        let hard_state: HardState = match &self.view.hard_state {
            Some(bytes) => decode_meta(LOCATION, "hard state", bytes)?,
            None => HardState::default(),
        };
        let snapshot = match &self.view.snapshot {
            Some((meta, data)) => {
                let meta: SnapshotMeta = decode_meta(LOCATION, "snapshot meta", meta)?;
                let data = codec::verify_checksum(data)
                    .map_err(|e| StorageError::CorruptMetadata {
                        location: LOCATION.into(),
                        what: "snapshot data",
                        reason: e.to_string(),
                    })?
                    .to_vec();
                Some((meta, data))
            }
            None => None,
        };
        let snapshot_last = snapshot
            .as_ref()
            .map_or((0, 0), |(m, _): &(SnapshotMeta, _)| {
                (m.last_term, m.last_index)
            });
        let records = self.view.log.iter().map(|(i, b)| Ok((*i, b)));
        let log = recover_log(LOCATION, records, &hard_state, snapshot_last)?;
        if let Some(index) = log.torn_tail_at {
            // Repair durably, so a second crash cannot resurrect the torn record.
            self.write(Op::TruncateFrom(index))?;
            self.sync()?;
        }
        // Finish a compaction that a crash cut short (its steps were not
        // synced), in steps, as FjallStorage does.
        self.compact_target = snapshot_last.1;
        let membership = current_membership(snapshot.as_ref().map(|(m, _)| m), &log.entries);
        let hard_state = raise_term_to_log(hard_state, &log.entries);
        Ok(Recovered {
            hard_state,
            snapshot,
            entries: log.entries,
            membership,
            truncated_torn_tail_at: log.torn_tail_at,
        })
    }

    fn append(&mut self, entries: &[Entry]) -> Result<(), StorageError> {
        for entry in entries {
            self.write(Op::Append(entry.index, encode_log_record(entry)))?;
        }
        Ok(())
    }

    fn truncate_from(&mut self, index: LogIndex) -> Result<(), StorageError> {
        self.write(Op::TruncateFrom(index))
    }

    fn save_hard_state(&mut self, hard_state: &HardState) -> Result<(), StorageError> {
        self.write(Op::HardState(codec::encode_checked(hard_state)))
    }

    fn sync(&mut self) -> Result<(), StorageError> {
        let disk = self.disk.clone();
        let mut state = disk.lock();
        self.sync_locked(&mut state)
    }

    fn save_snapshot(&mut self, meta: &SnapshotMeta, data: &[u8]) -> Result<(), StorageError> {
        check_snapshot_len(data)?;
        let disk = self.disk.clone();
        let mut state = disk.lock();
        if state.full {
            return Err(StorageError::DiskFull {
                op: "save snapshot",
                location: LOCATION.into(),
            });
        }
        // Write-fsync-rename-fsync: everything before it is synced first, then
        // the snapshot replaces the old one in one step.
        self.sync_locked(&mut state)?;
        let mut data_record = data.to_vec();
        data_record.extend_from_slice(&codec::checksum(data).to_le_bytes());
        let snapshot = (codec::encode_checked(meta), data_record);
        state.durable.snapshot = Some(snapshot.clone());
        self.view.snapshot = Some(snapshot);
        drop(state);
        self.compact(meta.last_index)
    }

    fn compact(&mut self, up_to: LogIndex) -> Result<(), StorageError> {
        self.compact_target = self.compact_target.max(up_to);
        Ok(())
    }

    fn compaction_pending(&self) -> bool {
        self.view
            .log
            .keys()
            .next()
            .is_some_and(|first| *first <= self.compact_target)
    }

    fn compact_step(&mut self) -> Result<(), StorageError> {
        let Some(&first) = self.view.log.keys().next() else {
            return Ok(());
        };
        if first > self.compact_target {
            return Ok(());
        }
        let up_to = self
            .compact_target
            .min(first + COMPACT_STEP_ENTRIES_MAX - 1);
        self.write(Op::CompactTo(up_to))
    }

    #[cfg(madsim)]
    fn sim_sync_delay(&mut self) -> std::time::Duration {
        self.disk.draw_sync_delay()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use deadbolt_core::raft::EntryPayload;

    fn identity() -> Identity {
        Identity {
            cluster_id: "c1".into(),
            node_id: 1,
        }
    }

    fn entry(term: u64, index: u64) -> Entry {
        Entry {
            term,
            index,
            payload: EntryPayload::Command(vec![index as u8; (index % 7) as usize + 1]),
        }
    }

    #[test]
    fn round_trip_and_snapshot() {
        let disk = SimDisk::new();
        let mut s = SimStorage::open(disk.clone(), &identity()).unwrap();
        let entries: Vec<_> = (1..=10).map(|i| entry(1, i)).collect();
        s.append(&entries).unwrap();
        let hs = HardState {
            term: 1,
            voted_for: Some(1),
            commit_index: 8,
        };
        s.save_hard_state(&hs).unwrap();
        s.sync().unwrap();
        let meta = SnapshotMeta {
            last_index: 5,
            last_term: 1,
            membership: Default::default(),
        };
        s.save_snapshot(&meta, b"state").unwrap();
        s.sync().unwrap();
        drop(s);
        disk.crash(CrashFault::LoseUnsynced, &mut SplitMix64::new(1));
        let mut s = SimStorage::open(disk, &identity()).unwrap();
        let r = s.load().unwrap();
        assert_eq!(r.hard_state, hs);
        assert_eq!(r.snapshot, Some((meta, b"state".to_vec())));
        assert_eq!(r.entries, entries[5..].to_vec());
        assert_eq!(r.last_log_id(), (1, 10));
    }

    /// A compaction goes in steps of at most `COMPACT_STEP_ENTRIES_MAX`; one
    /// cut short by a crash (steps not synced) is picked up again after
    /// `load`, which meanwhile serves only the entries after the snapshot.
    #[test]
    fn compaction_goes_in_steps_and_resumes_after_a_crash() {
        let disk = SimDisk::new();
        let mut s = SimStorage::open(disk.clone(), &identity()).unwrap();
        let entries: Vec<_> = (1..=50).map(|i| entry(1, i)).collect();
        s.append(&entries).unwrap();
        s.sync().unwrap();
        let meta = SnapshotMeta {
            last_index: 40,
            last_term: 1,
            membership: Default::default(),
        };
        s.save_snapshot(&meta, b"state").unwrap();
        assert!(s.compaction_pending());
        s.compact_step().unwrap();
        assert_eq!(
            s.view.log.keys().next(),
            Some(&(COMPACT_STEP_ENTRIES_MAX + 1))
        );
        s.sync().unwrap();
        s.compact_step().unwrap();
        // The second step is lost in the crash; the first one was synced.
        drop(s);
        disk.crash(CrashFault::LoseUnsynced, &mut SplitMix64::new(1));
        let mut s = SimStorage::open(disk, &identity()).unwrap();
        let r = s.load().unwrap();
        assert_eq!(r.entries, entries[40..].to_vec());
        assert_eq!(
            s.view.log.keys().next(),
            Some(&(COMPACT_STEP_ENTRIES_MAX + 1))
        );
        let mut steps = 0;
        while s.compaction_pending() {
            s.compact_step().unwrap();
            steps += 1;
        }
        assert_eq!(steps, 2, "24 covered entries left, 16 per step");
        assert_eq!(s.view.log.keys().next(), Some(&41));
    }

    #[test]
    fn identity_mismatch_is_refused() {
        let disk = SimDisk::new();
        SimStorage::open(disk.clone(), &identity()).unwrap();
        let other = Identity {
            cluster_id: "c2".into(),
            node_id: 1,
        };
        assert!(matches!(
            SimStorage::open(disk, &other),
            Err(StorageError::IdentityMismatch { .. })
        ));
    }

    #[test]
    fn unsynced_writes_vanish_and_old_handles_die() {
        let disk = SimDisk::new();
        let mut s = SimStorage::open(disk.clone(), &identity()).unwrap();
        s.append(&[entry(1, 1)]).unwrap();
        s.sync().unwrap();
        s.append(&[entry(1, 2)]).unwrap();
        disk.crash(CrashFault::LoseUnsynced, &mut SplitMix64::new(1));
        assert_eq!(s.append(&[entry(1, 3)]), Err(StorageError::Crashed));
        let r = SimStorage::open(disk, &identity()).unwrap().load().unwrap();
        assert_eq!(r.entries, vec![entry(1, 1)]);
    }

    #[test]
    fn corrupt_committed_record_names_the_index() {
        let disk = SimDisk::new();
        let mut s = SimStorage::open(disk.clone(), &identity()).unwrap();
        s.append(&(1..=5).map(|i| entry(1, i)).collect::<Vec<_>>())
            .unwrap();
        s.save_hard_state(&HardState {
            term: 1,
            voted_for: None,
            commit_index: 5,
        })
        .unwrap();
        s.sync().unwrap();
        assert!(disk.corrupt_durable_log_record(3));
        let err = SimStorage::open(disk, &identity())
            .unwrap()
            .load()
            .unwrap_err();
        assert!(
            matches!(err, StorageError::CorruptLogRecord { index: 3, .. }),
            "{err}"
        );
    }

    #[test]
    fn failed_sync_is_an_error_not_a_success() {
        let disk = SimDisk::new();
        let mut s = SimStorage::open(disk.clone(), &identity()).unwrap();
        s.append(&[entry(1, 1)]).unwrap();
        disk.fail_next_sync();
        assert!(matches!(s.sync(), Err(StorageError::Io { .. })));
        disk.set_full(true);
        assert!(matches!(
            s.append(&[entry(1, 2)]),
            Err(StorageError::DiskFull { .. })
        ));
    }

    /// Random workloads crashed at random points: every entry and hard state
    /// that was synced survives; unsynced entries may vanish; a torn or
    /// corrupted tail is dropped, never served.
    #[test]
    fn crash_recovery_never_loses_synced_entries() {
        let faults = [
            CrashFault::LoseUnsynced,
            CrashFault::KeepRandomPrefix,
            CrashFault::TearLast,
            CrashFault::CorruptLast,
        ];
        for seed in 0..500u64 {
            let mut rng = SplitMix64::new(seed);
            let disk = SimDisk::new();
            let mut s = SimStorage::open(disk.clone(), &identity()).unwrap();
            let mut written: Vec<Entry> = Vec::new();
            let mut ever_written: Vec<Entry> = Vec::new();
            let mut synced_len = 0usize;
            let mut synced_hs = HardState::default();
            let mut term = 1;
            let steps = rng.range_u64(1, 40);
            for _ in 0..steps {
                match rng.range_u64(0, 10) {
                    0..=5 => {
                        let n = rng.range_u64(1, 5);
                        let batch: Vec<_> = (0..n)
                            .map(|k| entry(term, written.len() as u64 + 1 + k))
                            .collect();
                        s.append(&batch).unwrap();
                        ever_written.extend(batch.iter().cloned());
                        written.extend(batch);
                    }
                    6 => {
                        // Conflict: drop part of the unsynced tail and bump the term.
                        let floor = synced_len as u64 + 1;
                        let from = rng.range_u64(floor, written.len() as u64 + 2);
                        if from <= written.len() as u64 {
                            s.truncate_from(from).unwrap();
                            written.truncate(from as usize - 1);
                            term += 1;
                        }
                    }
                    _ => {
                        // Commit only what is already durable, as Raft would.
                        let hs = HardState {
                            term,
                            voted_for: Some(1),
                            commit_index: synced_len as u64,
                        };
                        s.save_hard_state(&hs).unwrap();
                        s.sync().unwrap();
                        synced_len = written.len();
                        synced_hs = hs;
                    }
                }
            }
            let fault = faults[rng.range_u64(0, 4) as usize];
            disk.crash(fault, &mut rng);
            let mut s = SimStorage::open(disk.clone(), &identity()).unwrap();
            let r = s
                .load()
                .unwrap_or_else(|e| panic!("seed {seed} {fault:?}: {e}"));
            assert!(
                r.entries.len() >= synced_len,
                "seed {seed} {fault:?}: lost synced entries ({} < {synced_len})",
                r.entries.len()
            );
            assert_eq!(
                r.entries[..synced_len],
                written[..synced_len],
                "seed {seed}"
            );
            for e in &r.entries {
                assert!(
                    ever_written.contains(e),
                    "seed {seed} {fault:?}: recovered an entry never written: {e:?}"
                );
            }
            assert!(r.hard_state.term >= synced_hs.term, "seed {seed}");
            assert!(r.hard_state.commit_index >= synced_hs.commit_index);
            // Recovery repaired the disk: a second load sees the same log.
            let again = SimStorage::open(disk, &identity()).unwrap().load().unwrap();
            assert_eq!(again.entries, r.entries, "seed {seed}");
        }
    }

    /// A disk's sync latency stays within its profile, has a tail only when
    /// asked, continues its stream when set again (a restart), and the
    /// unsynced writes it counts are what a crash would lose.
    #[test]
    fn sync_latency_and_the_crash_window() {
        use std::time::Duration;
        let disk = SimDisk::new();
        assert_eq!(
            disk.draw_sync_delay(),
            Duration::ZERO,
            "no profile: instant"
        );
        let profile = SyncLatency {
            min_us: 100,
            max_us: 900,
            tail_one_in: 4,
            tail_max_ms: 50,
        };
        disk.set_sync_latency(profile, 7);
        let draws: Vec<Duration> = (0..400).map(|_| disk.draw_sync_delay()).collect();
        let tails = draws
            .iter()
            .filter(|d| **d >= Duration::from_millis(1))
            .count();
        assert!((50..150).contains(&tails), "{tails} tails of 400");
        assert!(draws
            .iter()
            .all(|d| *d >= Duration::from_micros(100) && *d <= Duration::from_millis(50)));
        // Set again (a restarted node): the stream goes on, no replay.
        let replayed = SimDisk::new();
        replayed.set_sync_latency(profile, 7);
        disk.set_sync_latency(SyncLatency::NONE, 1);
        assert_ne!(disk.draw_sync_delay(), Duration::ZERO, "kept its profile");
        assert_eq!(
            replayed.draw_sync_delay(),
            draws[0],
            "same seed, same stream"
        );

        let mut s = SimStorage::open(disk.clone(), &identity()).unwrap();
        s.append(&[entry(1, 1), entry(1, 2)]).unwrap();
        assert_eq!(disk.unsynced_writes(), 2);
        s.sync().unwrap();
        assert_eq!(disk.unsynced_writes(), 0);
        s.append(&[entry(1, 3)]).unwrap();
        assert_eq!(disk.unsynced_writes(), 1);
        drop(s);
        disk.crash(CrashFault::LoseUnsynced, &mut SplitMix64::new(3));
        let r = SimStorage::open(disk, &identity()).unwrap().load().unwrap();
        assert_eq!(r.last_log_id(), (1, 2), "the unsynced write was lost");
    }
}
