//! FjallStorage: production storage on fjall 3 (an LSM tree with a journal).
//! Keyspaces: `log` (big-endian index keys), `meta` (identity, hard state,
//! compaction progress) and `snapshot` (meta + data). Every value is
//! checksummed by our codec on top of fjall's own checks, so bit rot is caught
//! where we can name the index.
//!
//! Compaction is incremental: `compact` only records how far the log may be
//! dropped, and `compact_step` removes at most [`COMPACT_STEP_ENTRIES_MAX`]
//! keys per write batch, together with the durable mark of how far it got.
//! One batch removing ~1M keys used to stall the storage actor for about a
//! second after a restart's snapshot (recovery_bench); in steps, appends and
//! syncs go out between chunks. `load` reads the log from the snapshot's
//! last index on, so entries a compaction has not reached yet cost nothing.

use std::path::{Path, PathBuf};

use ::fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};
use deadbolt_core::codec;
use deadbolt_core::raft::{Entry, HardState, LogIndex, SnapshotMeta};

use super::{
    check_identity, check_snapshot_len, current_membership, decode_meta, encode_log_record,
    io_error, log_key, raise_term_to_log, recover_log, validate_identity, Identity, Recovered,
    Storage, StorageError,
};

/// Most journal bytes fjall keeps before it flushes the memtables that pin
/// the oldest journal (fjall's minimum; its default is 512 MiB). fjall
/// replays every kept journal on open, at ~50 MB/s here: the meta
/// keyspace's tiny hard-state writes never fill a memtable, so under the
/// default a node loaded for a minute kept ~290 MB of journals and took 6 s
/// to reopen.
const JOURNALING_BYTES_MAX: u64 = 64 * 1024 * 1024;
const KEY_IDENTITY: &[u8] = b"identity";
const KEY_HARD_STATE: &[u8] = b"hard_state";
const KEY_SNAPSHOT_META: &[u8] = b"meta";
const KEY_SNAPSHOT_DATA: &[u8] = b"data";
/// In `meta`: every log key at or below this index has been removed.
const KEY_LOG_COMPACTED_TO: &[u8] = b"log_compacted_to";

/// Log keys removed by one `compact_step` (one write batch) at most. At
/// ~1 µs per key on the reference machine a step holds the storage actor
/// for ~15-20 ms, which bounds the extra latency a sync can see behind it.
pub(crate) const COMPACT_STEP_ENTRIES_MAX: usize = 16_384;
/// Log records per chunk handed from the scanning thread to the decoder in
/// `load`.
const SCAN_CHUNK_RECORDS: usize = 4_096;
/// Chunks buffered between the scanner and the decoder: bounds the memory
/// the scanner can run ahead with.
const SCAN_CHUNKS_IN_FLIGHT_MAX: usize = 8;

/// A node's data dir on fjall.
pub struct FjallStorage {
    dir: PathBuf,
    db: Database,
    log: Keyspace,
    meta: Keyspace,
    snapshot: Keyspace,
    /// Entries at or below this index are removed (the durable mark
    /// `KEY_LOG_COMPACTED_TO`, or further in this process). The next step
    /// scans from here: scanning from index 1 would walk the tombstones of
    /// every earlier compaction (an LSM tree keeps them until its own
    /// compaction), a cost that grows with the log's history.
    compacted_to: LogIndex,
    /// The log may be dropped up to here (covered by a durable snapshot).
    compact_target: LogIndex,
}

impl std::fmt::Debug for FjallStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FjallStorage")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl FjallStorage {
    /// Opens (or creates) the data dir. A new dir is stamped durably with
    /// `identity`; an existing one must carry the same cluster and node id.
    pub fn open(dir: &Path, identity: &Identity) -> Result<Self, StorageError> {
        validate_identity(identity)?;
        let location = dir.display().to_string();
        // Journal writes are persisted only by our explicit `sync` (group commit).
        let db = Database::builder(dir)
            .manual_journal_persist(true)
            .max_journaling_size(JOURNALING_BYTES_MAX)
            .open()
            .map_err(|e| fjall_error("open data dir", &location, e))?;
        let open_keyspace = |name: &str| {
            db.keyspace(name, KeyspaceCreateOptions::default)
                .map_err(|e| fjall_error("open keyspace", &location, e))
        };
        let log = open_keyspace("log")?;
        let meta = open_keyspace("meta")?;
        let snapshot = open_keyspace("snapshot")?;
        let mut storage = Self {
            dir: dir.to_path_buf(),
            db,
            log,
            meta,
            snapshot,
            compacted_to: 0,
            compact_target: 0,
        };
        match storage.get(&storage.meta.clone(), KEY_IDENTITY, "read identity")? {
            Some(bytes) => {
                let found: Identity = decode_meta(&storage.meta_location(), "identity", &bytes)?;
                check_identity(&location, &found, identity)?;
            }
            None => {
                storage
                    .meta
                    .insert(KEY_IDENTITY, codec::encode_checked(identity))
                    .map_err(|e| fjall_error("write identity", &location, e))?;
                storage.sync()?;
            }
        }
        let meta = storage.meta.clone();
        if let Some(bytes) = storage.get(&meta, KEY_LOG_COMPACTED_TO, "read compaction mark")? {
            storage.compacted_to =
                decode_meta(&storage.meta_location(), "log compaction mark", &bytes)?;
        }
        storage.compact_target = storage.compacted_to;
        Ok(storage)
    }

    fn location(&self, keyspace: &Keyspace) -> String {
        keyspace.path().display().to_string()
    }

    fn meta_location(&self) -> String {
        self.location(&self.meta)
    }

    fn get(
        &self,
        keyspace: &Keyspace,
        key: &[u8],
        op: &'static str,
    ) -> Result<Option<Vec<u8>>, StorageError> {
        keyspace
            .get(key)
            .map(|v| v.map(|v| v.to_vec()))
            .map_err(|e| fjall_error(op, &self.location(keyspace), e))
    }

    /// The log records from `from` on, in index order, as stored (streamed,
    /// not collected: a restart reads ~1M of them).
    fn log_records_from(
        &self,
        from: LogIndex,
    ) -> impl Iterator<Item = Result<(LogIndex, ::fjall::Slice), StorageError>> + '_ {
        let location = self.location(&self.log);
        self.log.range(log_key(from)..).map(move |guard| {
            let (key, value) = guard
                .into_inner()
                .map_err(|e| fjall_error("read log", &location, e))?;
            Ok((log_index(&location, &key)?, value))
        })
    }

    /// Removes the log keys in `range` in one atomic batch.
    fn remove_log_range(
        &mut self,
        range: impl std::ops::RangeBounds<[u8; 8]>,
        op: &'static str,
    ) -> Result<(), StorageError> {
        let location = self.location(&self.log);
        let mut batch = self.db.batch();
        for guard in self.log.range(range) {
            let key = guard.key().map_err(|e| fjall_error(op, &location, e))?;
            batch.remove(&self.log, key);
        }
        batch.commit().map_err(|e| fjall_error(op, &location, e))
    }

    /// Writes raw bytes as a log record (tests of corruption detection).
    #[cfg(test)]
    fn put_raw_log_record(&mut self, index: LogIndex, bytes: Vec<u8>) {
        self.log.insert(log_key(index), bytes).expect("test write");
        self.sync().expect("test sync");
    }
}

impl Storage for FjallStorage {
    fn load(&mut self) -> Result<Recovered, StorageError> {
        let meta_location = self.meta_location();
        let hard_state: HardState = match self.get(&self.meta, KEY_HARD_STATE, "read hard state")? {
            Some(bytes) => decode_meta(&meta_location, "hard state", &bytes)?,
            None => HardState::default(),
        };
        let snapshot_location = self.location(&self.snapshot);
        let snapshot = match self.get(&self.snapshot, KEY_SNAPSHOT_META, "read snapshot")? {
            Some(meta) => {
                let meta: SnapshotMeta = decode_meta(&snapshot_location, "snapshot meta", &meta)?;
                let data = self
                    .get(&self.snapshot, KEY_SNAPSHOT_DATA, "read snapshot")?
                    .ok_or_else(|| StorageError::CorruptMetadata {
                        location: snapshot_location.clone(),
                        what: "snapshot data",
                        reason: "missing".into(),
                    })?;
                let data = codec::verify_checksum(&data)
                    .map_err(|e| StorageError::CorruptMetadata {
                        location: snapshot_location.clone(),
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
        let log_location = self.location(&self.log);
        // Records at or below the snapshot are not even read: a compaction
        // cut short by a crash (or still in its steps) left them behind.
        let from = snapshot_last.1.saturating_add(1);
        let this: &Self = self;
        let log = std::thread::scope(|scope| {
            // Pipelined: one thread walks the LSM tree while this one
            // checks and decodes (each is about half of the load time).
            let (chunks_tx, chunks_rx) = std::sync::mpsc::sync_channel(SCAN_CHUNKS_IN_FLIGHT_MAX);
            scope.spawn(move || {
                let mut chunk = Vec::with_capacity(SCAN_CHUNK_RECORDS);
                for record in this.log_records_from(from) {
                    let failed = record.is_err();
                    chunk.push(record);
                    if chunk.len() == SCAN_CHUNK_RECORDS || failed {
                        let full =
                            std::mem::replace(&mut chunk, Vec::with_capacity(SCAN_CHUNK_RECORDS));
                        // A closed channel: the decoder stopped at an error.
                        if chunks_tx.send(full).is_err() || failed {
                            return;
                        }
                    }
                }
                let _ = chunks_tx.send(chunk);
            });
            recover_log(
                &log_location,
                chunks_rx.into_iter().flatten(),
                &hard_state,
                snapshot_last,
            )
        })?;
        if let Some(index) = log.torn_tail_at {
            self.truncate_from(index)?;
            self.sync()?;
        }
        if snapshot_last.1 > 0 {
            // Finish a compaction that was cut short by a crash, in steps.
            self.compact(snapshot_last.1)?;
        }
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
        let mut batch = self.db.batch();
        for entry in entries {
            batch.insert(&self.log, log_key(entry.index), encode_log_record(entry));
        }
        batch
            .commit()
            .map_err(|e| fjall_error("append", &self.location(&self.log), e))
    }

    fn truncate_from(&mut self, index: LogIndex) -> Result<(), StorageError> {
        self.remove_log_range(log_key(index).., "truncate log")
    }

    fn save_hard_state(&mut self, hard_state: &HardState) -> Result<(), StorageError> {
        self.meta
            .insert(KEY_HARD_STATE, codec::encode_checked(hard_state))
            .map_err(|e| fjall_error("write hard state", &self.meta_location(), e))
    }

    fn sync(&mut self) -> Result<(), StorageError> {
        // fdatasync, as etcd does on Linux: it flushes the data and the
        // metadata needed to read it back (size, block allocation), skipping
        // only timestamps, which recovery never reads. fjall makes new
        // journals durable (file and directory) itself with a full fsync.
        self.db
            .persist(PersistMode::SyncData)
            .map_err(|e| fjall_error("fsync", &self.dir.display().to_string(), e))
    }

    fn save_snapshot(&mut self, meta: &SnapshotMeta, data: &[u8]) -> Result<(), StorageError> {
        check_snapshot_len(data)?;
        // Meta and data go in one write batch: fjall's journal applies a
        // batch atomically, which gives the write-fsync-rename guarantee
        // (all of the new snapshot or all of the old one) without files.
        let mut data_record = data.to_vec();
        data_record.extend_from_slice(&codec::checksum(data).to_le_bytes());
        let mut batch = self.db.batch();
        batch.insert(
            &self.snapshot,
            KEY_SNAPSHOT_META,
            codec::encode_checked(meta),
        );
        batch.insert(&self.snapshot, KEY_SNAPSHOT_DATA, data_record);
        batch
            .commit()
            .map_err(|e| fjall_error("write snapshot", &self.location(&self.snapshot), e))?;
        self.sync()?;
        self.compact(meta.last_index)
    }

    fn compact(&mut self, up_to: LogIndex) -> Result<(), StorageError> {
        self.compact_target = self.compact_target.max(up_to);
        Ok(())
    }

    fn compaction_pending(&self) -> bool {
        self.compact_target > self.compacted_to
    }

    fn compact_step(&mut self) -> Result<(), StorageError> {
        if !self.compaction_pending() {
            return Ok(());
        }
        let location = self.location(&self.log);
        let from = log_key(self.compacted_to + 1);
        let to = log_key(self.compact_target);
        let mut batch = self.db.batch();
        let mut removed = 0;
        // Where this step stops: the target, unless the chunk fills first.
        let mut reached = self.compact_target;
        for guard in self.log.range(from..=to) {
            let key = guard
                .key()
                .map_err(|e| fjall_error("compact log", &location, e))?;
            let index = log_index(&location, &key)?;
            batch.remove(&self.log, key);
            removed += 1;
            if removed == COMPACT_STEP_ENTRIES_MAX {
                reached = index;
                break;
            }
        }
        // The mark rides in the same batch as the removals it describes, so
        // it can never claim more than the disk holds after a crash.
        batch.insert(
            &self.meta,
            KEY_LOG_COMPACTED_TO,
            codec::encode_checked(&reached),
        );
        batch
            .commit()
            .map_err(|e| fjall_error("compact log", &location, e))?;
        self.compacted_to = reached;
        Ok(())
    }
}

/// The index a log key encodes.
fn log_index(location: &str, key: &[u8]) -> Result<LogIndex, StorageError> {
    <[u8; 8]>::try_from(key)
        .map(LogIndex::from_be_bytes)
        .map_err(|_| StorageError::Inconsistent {
            location: location.to_string(),
            reason: format!("log key of {} bytes", key.len()),
        })
}

fn fjall_error(op: &'static str, location: &str, e: ::fjall::Error) -> StorageError {
    match e {
        ::fjall::Error::Io(io) => io_error(op, location, &io),
        ::fjall::Error::JournalRecovery(reason) => StorageError::CorruptJournal {
            location: location.to_string(),
            reason: format!("{reason:?}"),
        },
        ::fjall::Error::Poisoned => StorageError::Poisoned(format!(
            "fjall refused {op} in {location} after an earlier failed write"
        )),
        other => StorageError::Io {
            op,
            location: location.to_string(),
            kind: std::io::ErrorKind::Other,
            message: other.to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use deadbolt_core::raft::{EntryPayload, Member, Membership};

    fn identity() -> Identity {
        Identity {
            cluster_id: "prod".into(),
            node_id: 3,
        }
    }

    fn entry(term: u64, index: u64) -> Entry {
        Entry {
            term,
            index,
            payload: EntryPayload::Command(format!("cmd {index}").into_bytes()),
        }
    }

    #[test]
    fn round_trip_restart_snapshot_and_compaction() {
        let dir = tempfile::tempdir().unwrap();
        let entries: Vec<_> = (1..=20).map(|i| entry(1 + i / 10, i)).collect();
        let hs = HardState {
            term: 3,
            voted_for: Some(2),
            commit_index: 15,
        };
        let mut membership = Membership::default();
        membership.members.insert(
            3,
            Member {
                voter: true,
                peer_addr: "127.0.0.1:1".into(),
                api_addr: "127.0.0.1:2".into(),
            },
        );
        {
            let mut s = FjallStorage::open(dir.path(), &identity()).unwrap();
            assert_eq!(s.load().unwrap(), Recovered::default());
            s.append(&entries).unwrap();
            s.truncate_from(18).unwrap();
            s.append(&[Entry {
                term: 3,
                index: 18,
                payload: EntryPayload::Membership(membership.clone()),
            }])
            .unwrap();
            s.save_hard_state(&hs).unwrap();
            s.sync().unwrap();
        }
        let meta = SnapshotMeta {
            last_index: 10,
            last_term: 2,
            membership: Membership::default(),
        };
        {
            let mut s = FjallStorage::open(dir.path(), &identity()).unwrap();
            let r = s.load().unwrap();
            assert_eq!(r.hard_state, hs);
            assert_eq!(r.entries.len(), 18);
            assert_eq!(r.entries[..17], entries[..17]);
            assert_eq!(r.last_log_id(), (3, 18));
            assert_eq!(r.membership, membership);
            s.save_snapshot(&meta, b"machine").unwrap();
            s.sync().unwrap();
        }
        let mut s = FjallStorage::open(dir.path(), &identity()).unwrap();
        let r = s.load().unwrap();
        assert_eq!(r.snapshot, Some((meta, b"machine".to_vec())));
        assert_eq!(r.entries.first().map(|e| e.index), Some(11));
        assert_eq!(r.last_log_id(), (3, 18));
    }

    #[test]
    fn flipped_byte_in_committed_record_names_the_index() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut s = FjallStorage::open(dir.path(), &identity()).unwrap();
            s.append(&(1..=5).map(|i| entry(1, i)).collect::<Vec<_>>())
                .unwrap();
            s.save_hard_state(&HardState {
                term: 1,
                voted_for: None,
                commit_index: 5,
            })
            .unwrap();
            s.sync().unwrap();
            let mut bad = encode_log_record(&entry(1, 4));
            bad[2] ^= 0x08;
            s.put_raw_log_record(4, bad);
        }
        let mut s = FjallStorage::open(dir.path(), &identity()).unwrap();
        let err = s.load().unwrap_err();
        match &err {
            StorageError::CorruptLogRecord {
                location, index, ..
            } => {
                assert_eq!(*index, 4);
                assert!(
                    location.contains(&dir.path().display().to_string()),
                    "{err}"
                );
            }
            other => panic!("expected corruption, got {other}"),
        }
        assert!(err.to_string().contains("index 4"), "{err}");
    }

    /// Flips a byte of a committed record in the files fjall wrote: whether
    /// fjall's journal checksum or ours catches it, opening fails loudly and
    /// the damaged entry is never served.
    #[test]
    fn flipped_byte_on_disk_is_never_served() {
        let dir = tempfile::tempdir().unwrap();
        let target = entry(1, 3);
        {
            let mut s = FjallStorage::open(dir.path(), &identity()).unwrap();
            s.append(&(1..=5).map(|i| entry(1, i)).collect::<Vec<_>>())
                .unwrap();
            s.save_hard_state(&HardState {
                term: 1,
                voted_for: None,
                commit_index: 5,
            })
            .unwrap();
            s.sync().unwrap();
        }
        let needle = encode_log_record(&target);
        let mut flipped = false;
        let mut stack = vec![dir.path().to_path_buf()];
        while let Some(path) = stack.pop() {
            if path.is_dir() {
                stack.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
                continue;
            }
            let mut bytes = std::fs::read(&path).unwrap();
            if let Some(at) = bytes.windows(needle.len()).position(|w| w == needle) {
                bytes[at + needle.len() / 2] ^= 0x20;
                std::fs::write(&path, bytes).unwrap();
                flipped = true;
            }
        }
        assert!(flipped, "record bytes not found on disk");
        let outcome = FjallStorage::open(dir.path(), &identity()).and_then(|mut s| s.load());
        match outcome {
            Ok(r) => panic!("served a damaged log: {:?}", r.entries),
            Err(StorageError::CorruptLogRecord { index, .. }) => assert_eq!(index, 3),
            Err(other) => {
                // fjall's journal checksum caught it first (the record was
                // still in the journal): the error names the data dir.
                assert!(
                    matches!(other, StorageError::CorruptJournal { .. }),
                    "{other}"
                );
                let text = other.to_string();
                assert!(text.contains(&dir.path().display().to_string()), "{text}");
            }
        }
    }

    #[test]
    fn torn_tail_beyond_commit_is_truncated() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut s = FjallStorage::open(dir.path(), &identity()).unwrap();
            s.append(&(1..=5).map(|i| entry(1, i)).collect::<Vec<_>>())
                .unwrap();
            s.save_hard_state(&HardState {
                term: 1,
                voted_for: None,
                commit_index: 3,
            })
            .unwrap();
            s.sync().unwrap();
            let mut torn = encode_log_record(&entry(1, 6));
            torn.truncate(torn.len() / 2);
            s.put_raw_log_record(6, torn);
        }
        let mut s = FjallStorage::open(dir.path(), &identity()).unwrap();
        let r = s.load().unwrap();
        assert_eq!(r.truncated_torn_tail_at, Some(6));
        assert_eq!(r.last_log_id(), (1, 5));
        drop(s);
        let r = FjallStorage::open(dir.path(), &identity())
            .unwrap()
            .load()
            .unwrap();
        assert_eq!(r.truncated_torn_tail_at, None, "repair was durable");
    }

    fn log_keys(s: &FjallStorage) -> usize {
        s.log.iter().count()
    }

    /// A compaction stopped after its first step (a crash, or a restart
    /// before the actor got to the rest) resumes from its durable mark:
    /// the reopened log serves exactly the entries after the snapshot, and
    /// the remaining steps remove exactly the covered keys.
    #[test]
    fn chunked_compaction_interrupted_by_restart_resumes_from_its_mark() {
        let dir = tempfile::tempdir().unwrap();
        let step = COMPACT_STEP_ENTRIES_MAX as u64;
        let last = 2 * step + 100;
        let snapshot_at = last - 50;
        let entries: Vec<_> = (1..=last).map(|i| entry(1, i)).collect();
        let meta = SnapshotMeta {
            last_index: snapshot_at,
            last_term: 1,
            membership: Membership::default(),
        };
        {
            let mut s = FjallStorage::open(dir.path(), &identity()).unwrap();
            s.load().unwrap();
            for chunk in entries.chunks(4096) {
                s.append(chunk).unwrap();
            }
            s.save_hard_state(&HardState {
                term: 1,
                voted_for: None,
                commit_index: last,
            })
            .unwrap();
            s.save_snapshot(&meta, b"machine").unwrap();
            assert!(s.compaction_pending(), "compaction is left to the steps");
            assert_eq!(log_keys(&s), last as usize, "save_snapshot removed nothing");
            s.compact_step().unwrap();
            assert_eq!(s.compacted_to, step);
            s.sync().unwrap();
        }
        let mut s = FjallStorage::open(dir.path(), &identity()).unwrap();
        assert_eq!(s.compacted_to, step, "the mark is durable");
        let r = s.load().unwrap();
        assert_eq!(r.entries[..], entries[snapshot_at as usize..]);
        assert_eq!(r.snapshot, Some((meta.clone(), b"machine".to_vec())));
        assert!(s.compaction_pending(), "load resumes the compaction");
        assert_eq!(log_keys(&s), (last - step) as usize);
        let mut steps = 0;
        while s.compaction_pending() {
            s.compact_step().unwrap();
            steps += 1;
            assert!(steps <= 2, "more steps than chunks");
        }
        assert_eq!(s.compacted_to, snapshot_at);
        assert_eq!(log_keys(&s), 50, "exactly the covered keys are gone");
        // Writes interleave with a compaction: nothing after the snapshot is touched.
        s.append(&[entry(2, last + 1)]).unwrap();
        s.sync().unwrap();
        drop(s);
        let mut s = FjallStorage::open(dir.path(), &identity()).unwrap();
        let r = s.load().unwrap();
        assert_eq!(r.entries.first().map(|e| e.index), Some(snapshot_at + 1));
        assert_eq!(r.last_log_id(), (2, last + 1));
        assert!(!s.compaction_pending());
    }

    /// A damaged compaction mark is named, never guessed around.
    #[test]
    fn corrupt_compaction_mark_is_named() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = FjallStorage::open(dir.path(), &identity()).unwrap();
            let mut bad = codec::encode_checked(&7u64);
            bad[0] ^= 0x40;
            s.meta.insert(KEY_LOG_COMPACTED_TO, bad).unwrap();
            s.db.persist(PersistMode::SyncAll).unwrap();
        }
        let err = FjallStorage::open(dir.path(), &identity()).unwrap_err();
        assert!(
            matches!(
                err,
                StorageError::CorruptMetadata {
                    what: "log compaction mark",
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn mismatching_identity_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        drop(FjallStorage::open(dir.path(), &identity()).unwrap());
        let err = FjallStorage::open(
            dir.path(),
            &Identity {
                cluster_id: "prod".into(),
                node_id: 4,
            },
        )
        .unwrap_err();
        assert!(
            matches!(
                err,
                StorageError::IdentityMismatch {
                    found_node: 3,
                    want_node: 4,
                    ..
                }
            ),
            "{err}"
        );
        let err = FjallStorage::open(
            dir.path(),
            &Identity {
                cluster_id: "staging".into(),
                node_id: 3,
            },
        )
        .unwrap_err();
        assert!(err.to_string().contains("staging"), "{err}");
    }
}
