//! Exactly-once replies: the idempotency cache, its eviction windows and the
//! clients' acknowledged low-water marks.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde::Serialize;

use super::snapshot::{BoundSnap, IdempotencySnap, MarkSnap};
use crate::api::limits::{
    IDEMPOTENCY_CLIENTS_MAX, IDEMPOTENCY_KEYS_DEFAULT, IDEMPOTENCY_KEY_BYTES_MAX,
    IDEMPOTENCY_WINDOW_MS,
};
use crate::lock::{idempotency_key_seq, Idempotency, LockError, Reply, SessionId};

/// A key, stored once and shared by the cache's indexes (the cache holds up
/// to a million of them: one copy per index cost about 70 bytes a key).
type Key = Arc<str>;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct IdempotencyEntry {
    fingerprint: u64,
    reply: Reply,
    pub(super) owner: Option<SessionId>,
    /// None while the owning session lives; then the end of the window.
    pub(super) deadline_ms: Option<u64>,
    /// State time of the recording: the bound evicts the oldest first.
    pub(super) recorded_ms: u64,
}

/// Exactly-once replies. Eviction rule: an entry lives while its owning
/// session lives and for [`IDEMPOTENCY_WINDOW_MS`] after the later of its
/// recording and the session's end (no owner: after its recording). Entries
/// past their window are dropped in deadline order at the start of every
/// apply. Entries are also dropped early when the client acknowledges them:
/// an envelope keyed `<prefix>-<seq>` with `acked_below: Some(n)` drops every
/// `<prefix>-<m>` with `m < n` (the client has their outcomes and promises
/// never to retry them), which is what keeps a busy client from filling the
/// cache. Memory is bounded: past `keys_max` entries (replicated, see
/// [`Self::set_keys_max`]) the oldest recorded outcome is evicted, inside its
/// window or not: keys never cost availability, and the age of the last
/// outcome evicted so is the cluster's effective window
/// ([`Self::effective_window_ms`]).
///
/// Acknowledged low-water marks: per prefix, the largest `acked_below` seen
/// and the state time of the prefix's last keyed request. A keyed request
/// whose seq is below its prefix's mark is refused (`invalid_request` on
/// `Idempotency-Key`, not cached), never applied again: this closes the hole
/// where a delayed attempt of an acknowledged (hence forgotten) key commits
/// after the acknowledgement. A mark is dropped once its prefix has gone
/// [`IDEMPOTENCY_WINDOW_MS`] of state time without a keyed request (a
/// duplicate delayed longer than that is outside the contract's window). At
/// [`IDEMPOTENCY_CLIENTS_MAX`] marks, none expired, a new prefix records no
/// mark: its acknowledged keys fall back to the plain window rule (a retry
/// of one after its acknowledgement is applied as new).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct IdempotencyCache {
    entries: BTreeMap<Key, IdempotencyEntry>,
    by_owner: BTreeSet<(SessionId, Key)>,
    by_deadline: BTreeSet<(u64, Key)>,
    /// (recorded_ms, key) of every entry: eviction order at the bound.
    /// Derived.
    by_age: BTreeSet<(u64, Key)>,
    /// The bound on entries (replicated: every replica evicts alike).
    keys_max: u64,
    /// The last eviction the bound forced on an entry still inside its
    /// window. In snapshots.
    forced: Option<ForcedEviction>,
    /// prefix -> seqs of the entries keyed `<prefix>-<seq>`, so that an
    /// acknowledgement costs O(removed * log n). Derived from the keys, so
    /// snapshots do not carry it.
    by_prefix: BTreeMap<String, BTreeSet<u64>>,
    /// prefix -> its acknowledged low-water mark. In snapshots.
    marks: BTreeMap<String, AckMark>,
    /// (touched_ms, prefix) of every mark, in expiry order. Derived.
    marks_by_touch: BTreeSet<(u64, String)>,
}

/// An outcome evicted by the bound before its window ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct ForcedEviction {
    /// How long it had been kept.
    pub(super) age_ms: u64,
    /// State time of the eviction.
    pub(super) at_ms: u64,
}

impl Default for IdempotencyCache {
    fn default() -> Self {
        IdempotencyCache {
            entries: BTreeMap::new(),
            by_owner: BTreeSet::new(),
            by_deadline: BTreeSet::new(),
            by_age: BTreeSet::new(),
            keys_max: IDEMPOTENCY_KEYS_DEFAULT,
            forced: None,
            by_prefix: BTreeMap::new(),
            marks: BTreeMap::new(),
            marks_by_touch: BTreeSet::new(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct AckMark {
    /// Max of every `acked_below` seen for the prefix.
    acked_below: u64,
    /// State time of the prefix's last keyed request.
    touched_ms: u64,
}

impl IdempotencyCache {
    /// The gate of a keyed request at state time `now_ms`: `Some(reply)`
    /// answers it without applying it (a refusal, or the reply cached for
    /// its key); `None` means apply it, then [`Self::record`] the reply.
    /// Acknowledgements take effect here, first: they may make room for
    /// this very key.
    pub(super) fn admit(&mut self, idem: &Idempotency, now_ms: u64) -> Option<Reply> {
        if let Some(refusal) = refusal(idem) {
            return Some(Reply::Error(refusal));
        }
        // Marks: an acknowledged key is refused for good (within the mark's
        // lifetime), not forgotten and applied again.
        if let Some((prefix, seq)) = idempotency_key_seq(&idem.key) {
            let acked_below = idem.acked_below.unwrap_or(0);
            let mark = self.touch_mark(prefix, acked_below, now_ms);
            if acked_below > 0 {
                self.acknowledge(prefix, acked_below);
            }
            if mark.is_some_and(|below| seq < below) {
                return Some(Reply::Error(LockError::invalid(
                    "Idempotency-Key",
                    "key was already acknowledged by its client (Idempotency-Acked-Below); a \
                     retry of an acknowledged request is refused, not applied again",
                )));
            }
        }
        if let Some(entry) = self.entries.get(idem.key.as_str()) {
            return Some(if entry.fingerprint == idem.fingerprint {
                entry.reply.clone()
            } else {
                Reply::Error(LockError::invalid(
                    "Idempotency-Key",
                    "reused with another method, path or body",
                ))
            });
        }
        None
    }

    /// Caches the reply of an admitted request. With a live `owner` the
    /// entry lives as long as the owner does; otherwise its window starts
    /// at `now_ms`. Past the bound the oldest entry makes room.
    pub(super) fn record(
        &mut self,
        idem: &Idempotency,
        reply: Reply,
        owner: Option<SessionId>,
        now_ms: u64,
    ) {
        let deadline_ms = match owner {
            Some(_) => None,
            None => Some(now_ms.saturating_add(IDEMPOTENCY_WINDOW_MS)),
        };
        let entry = IdempotencyEntry {
            fingerprint: idem.fingerprint,
            reply,
            owner,
            deadline_ms,
            recorded_ms: now_ms,
        };
        self.insert(idem.key.as_str().into(), entry);
        self.evict_over_bound(now_ms);
    }

    /// Sets the bound (a replicated command: every replica evicts alike)
    /// and evicts down to it.
    pub(super) fn set_keys_max(&mut self, keys_max: u64, now_ms: u64) {
        assert!(keys_max > 0, "the state machine validates the bound");
        self.keys_max = keys_max;
        self.evict_over_bound(now_ms);
    }

    pub(super) fn keys_max(&self) -> u64 {
        self.keys_max
    }

    /// Evicts the oldest entries while there are more than the bound.
    fn evict_over_bound(&mut self, now_ms: u64) {
        while self.entries.len() as u64 > self.keys_max {
            let (recorded_ms, key) = self
                .by_age
                .first()
                .cloned()
                .expect("by_age mirrors entries");
            self.remove(&key);
            self.forced = Some(ForcedEviction {
                age_ms: now_ms.saturating_sub(recorded_ms),
                at_ms: now_ms,
            });
        }
    }

    /// How long outcomes are kept at `now_ms`: the age of the last one the
    /// bound forced out, if that happened within the last window; `None`
    /// when the bound forced nothing out lately (the contract's windows hold).
    pub(super) fn effective_window_ms(&self, now_ms: u64) -> Option<u64> {
        self.forced
            .filter(|f| f.at_ms.saturating_add(IDEMPOTENCY_WINDOW_MS) > now_ms)
            .map(|f| f.age_ms)
    }

    fn insert(&mut self, key: Key, entry: IdempotencyEntry) {
        match (entry.deadline_ms, entry.owner) {
            (Some(deadline), _) => {
                self.by_deadline.insert((deadline, key.clone()));
            }
            (None, Some(owner)) => {
                self.by_owner.insert((owner, key.clone()));
            }
            (None, None) => panic!("idempotency entry {key} has neither owner nor deadline"),
        }
        self.by_age.insert((entry.recorded_ms, key.clone()));
        if let Some((prefix, seq)) = idempotency_key_seq(&key) {
            self.by_prefix
                .entry(prefix.to_owned())
                .or_default()
                .insert(seq);
        }
        let old = self.entries.insert(key, entry);
        assert!(old.is_none(), "idempotency key recorded twice");
    }

    /// Forgets `key` from every index.
    fn remove(&mut self, key: &str) {
        let Some((key, entry)) = self.entries.remove_entry(key) else {
            return;
        };
        self.unindex_prefix(&key);
        match (entry.deadline_ms, entry.owner) {
            (Some(deadline), _) => {
                self.by_deadline.remove(&(deadline, key.clone()));
            }
            (None, Some(owner)) => {
                self.by_owner.remove(&(owner, key.clone()));
            }
            (None, None) => {}
        }
        self.by_age.remove(&(entry.recorded_ms, key));
    }

    fn unindex_prefix(&mut self, key: &str) {
        if let Some((prefix, seq)) = idempotency_key_seq(key) {
            if let Some(seqs) = self.by_prefix.get_mut(prefix) {
                seqs.remove(&seq);
                if seqs.is_empty() {
                    self.by_prefix.remove(prefix);
                }
            }
        }
    }

    /// The client behind `prefix` has the outcomes of every seq below
    /// `acked_below`: drop their entries.
    fn acknowledge(&mut self, prefix: &str, acked_below: u64) {
        let Some(seqs) = self.by_prefix.get_mut(prefix) else {
            return;
        };
        let kept = seqs.split_off(&acked_below);
        let dropped = std::mem::replace(seqs, kept);
        for seq in dropped {
            self.remove(&format!("{prefix}-{seq}"));
        }
    }

    /// A keyed request of `prefix` at `now_ms`, acknowledging below
    /// `acked_below` (0: none): raises the prefix's mark (creating it if
    /// there is room) and refreshes its time. Returns the mark, if any.
    fn touch_mark(&mut self, prefix: &str, acked_below: u64, now_ms: u64) -> Option<u64> {
        let room = self.marks.len() < IDEMPOTENCY_CLIENTS_MAX;
        let mark = match self.marks.get_mut(prefix) {
            Some(mark) => {
                self.marks_by_touch
                    .remove(&(mark.touched_ms, prefix.to_owned()));
                mark
            }
            None if acked_below > 0 && room => {
                self.marks.entry(prefix.to_owned()).or_insert(AckMark {
                    acked_below: 0,
                    touched_ms: now_ms,
                })
            }
            None => return None,
        };
        mark.acked_below = mark.acked_below.max(acked_below);
        mark.touched_ms = now_ms;
        let below = mark.acked_below;
        self.marks_by_touch.insert((now_ms, prefix.to_owned()));
        Some(below)
    }

    fn insert_mark(&mut self, prefix: String, mark: AckMark) {
        self.marks_by_touch
            .insert((mark.touched_ms, prefix.clone()));
        self.marks.insert(prefix, mark);
    }

    /// The owner ended at `now_ms`: its entries' windows start now.
    pub(super) fn owner_ended(&mut self, owner: SessionId, now_ms: u64) {
        let keys: Vec<(SessionId, Key)> = self
            .by_owner
            .range((owner, Key::from(""))..)
            .take_while(|(o, _)| *o == owner)
            .cloned()
            .collect();
        for item in keys {
            self.by_owner.remove(&item);
            let deadline = now_ms.saturating_add(IDEMPOTENCY_WINDOW_MS);
            let entry = self
                .entries
                .get_mut(&item.1)
                .expect("by_owner mirrors entries");
            entry.deadline_ms = Some(deadline);
            self.by_deadline.insert((deadline, item.1));
        }
    }

    /// Drops the entries and marks whose window has passed at `now_ms`.
    pub(super) fn prune(&mut self, now_ms: u64) {
        while let Some((deadline, _)) = self.by_deadline.first() {
            if *deadline > now_ms {
                break;
            }
            let (_, key) = self.by_deadline.first().cloned().expect("first exists");
            self.remove(&key);
        }
        while let Some((touched, _)) = self.marks_by_touch.first() {
            if touched.saturating_add(IDEMPOTENCY_WINDOW_MS) > now_ms {
                break;
            }
            let (_, prefix) = self.marks_by_touch.pop_first().expect("first exists");
            self.marks.remove(&prefix);
        }
    }

    /// The reply recorded for `key` if the request that recorded it had
    /// this fingerprint.
    pub(super) fn recorded(&self, key: &str, fingerprint: u64) -> Option<&Reply> {
        self.entries
            .get(key)
            .filter(|entry| entry.fingerprint == fingerprint)
            .map(|entry| &entry.reply)
    }

    /// A queued acquire ended: its key now answers with the final outcome
    /// (unless the key was acknowledged meanwhile).
    pub(super) fn set_final_reply(&mut self, key: &str, reply: Reply) {
        if let Some(entry) = self.entries.get_mut(key) {
            entry.reply = reply;
        }
    }

    #[cfg(test)]
    pub(super) fn entry(&self, key: &str) -> Option<&IdempotencyEntry> {
        self.entries.get(key)
    }

    /// The cache as a snapshot older than the bound restores it (default
    /// bound, ages taken from the windows).
    /// The entries as a snapshot holds them once decoded (through the
    /// bytes of the borrowed view, which must read back as owned entries).
    #[cfg(test)]
    pub(super) fn owned_entries(&self) -> Vec<IdempotencySnap> {
        let bytes = crate::codec::encode(&self.snapshot_entries());
        crate::codec::decode(&bytes).expect("the view reads back as owned entries")
    }

    #[cfg(test)]
    pub(super) fn with_ages_approximated(&self) -> Self {
        let entries = self.owned_entries();
        let (marks, _) = self.to_snapshot();
        Self::restore(entries, marks, None).expect("a valid cache restores")
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.entries.len()
    }

    #[cfg(test)]
    pub(super) fn mark_count(&self) -> usize {
        self.marks.len()
    }

    /// Every index mirrors the entries; an owned entry's owner is live
    /// (`is_live`); marks are valid and inside their window at `now_ms`.
    pub(super) fn check(
        &self,
        is_live: impl Fn(SessionId) -> bool,
        now_ms: u64,
    ) -> Result<(), String> {
        for (key, e) in &self.entries {
            let ok = match (e.owner, e.deadline_ms) {
                (Some(o), None) => is_live(o) && self.by_owner.contains(&(o, key.clone())),
                (_, Some(d)) => self.by_deadline.contains(&(d, key.clone())),
                (None, None) => false,
            };
            if !ok {
                return Err(format!("idempotency entry {key:?} out of sync"));
            }
        }
        if self.by_owner.len() + self.by_deadline.len() != self.entries.len()
            || self.by_age.len() != self.entries.len()
            || self
                .entries
                .iter()
                .any(|(k, e)| !self.by_age.contains(&(e.recorded_ms, k.clone())))
        {
            return Err("idempotency indexes out of sync".into());
        }
        if self.entries.len() as u64 > self.keys_max {
            return Err(format!(
                "{} idempotency entries over the bound of {}",
                self.entries.len(),
                self.keys_max
            ));
        }
        self.check_prefix_index()?;
        self.check_marks(now_ms)
    }

    fn check_prefix_index(&self) -> Result<(), String> {
        let mut seq_keys = 0;
        for key in self.entries.keys() {
            if let Some((prefix, seq)) = idempotency_key_seq(key) {
                seq_keys += 1;
                if !self
                    .by_prefix
                    .get(prefix)
                    .is_some_and(|seqs| seqs.contains(&seq))
                {
                    return Err(format!("idempotency entry {key:?} missing from by_prefix"));
                }
            }
        }
        let indexed: usize = self.by_prefix.values().map(BTreeSet::len).sum();
        if indexed != seq_keys || self.by_prefix.values().any(BTreeSet::is_empty) {
            return Err("idempotency prefix index out of sync".into());
        }
        Ok(())
    }

    fn check_marks(&self, now_ms: u64) -> Result<(), String> {
        if self.marks.len() > IDEMPOTENCY_CLIENTS_MAX
            || self.marks_by_touch.len() != self.marks.len()
        {
            return Err("idempotency marks out of sync".into());
        }
        for (prefix, mark) in &self.marks {
            if idempotency_key_seq(&format!("{prefix}-1")) != Some((prefix.as_str(), 1)) {
                return Err(format!("idempotency mark of bad prefix {prefix:?}"));
            }
            if mark.acked_below == 0
                || mark.touched_ms > now_ms
                || mark.touched_ms.saturating_add(IDEMPOTENCY_WINDOW_MS) <= now_ms
                || !self
                    .marks_by_touch
                    .contains(&(mark.touched_ms, prefix.clone()))
            {
                return Err(format!("idempotency mark of {prefix:?} out of sync"));
            }
            let cached_below = self
                .by_prefix
                .get(prefix)
                .and_then(|seqs| seqs.first())
                .is_some_and(|seq| *seq < mark.acked_below);
            if cached_below {
                return Err(format!("idempotency entry of {prefix:?} below its mark"));
            }
        }
        Ok(())
    }

    /// The entries for a snapshot, in key order, as a view that serializes
    /// exactly like `Vec<IdempotencySnap>` without copying them.
    pub(super) fn snapshot_entries(&self) -> impl Serialize + '_ {
        EntriesView(&self.entries)
    }

    /// The marks (by prefix) and the bound with its ages for a snapshot.
    pub(super) fn to_snapshot(&self) -> (Vec<MarkSnap>, BoundSnap) {
        let marks = self
            .marks
            .iter()
            .map(|(prefix, m)| (prefix.clone(), m.acked_below, m.touched_ms))
            .collect();
        let bound = BoundSnap {
            recorded_ms: self.entries.values().map(|e| e.recorded_ms).collect(),
            keys_max: self.keys_max,
            forced: self.forced.map(|f| (f.age_ms, f.at_ms)),
        };
        (marks, bound)
    }

    /// Rebuilds the cache and its derived indexes from a snapshot. Without
    /// `bound` (a snapshot older than the bound) the default bound applies
    /// and entries count as recorded when their window began (owned ones
    /// at 0: oldest).
    pub(super) fn restore(
        entries: Vec<IdempotencySnap>,
        marks: Vec<MarkSnap>,
        bound: Option<BoundSnap>,
    ) -> Result<Self, String> {
        let mut cache = IdempotencyCache::default();
        let recorded: Vec<u64> = match &bound {
            Some(b) if b.recorded_ms.len() != entries.len() => {
                return Err("idempotency ages do not match the entries".into())
            }
            Some(b) => b.recorded_ms.clone(),
            None => entries
                .iter()
                .map(|e| {
                    e.deadline_ms
                        .map_or(0, |d| d.saturating_sub(IDEMPOTENCY_WINDOW_MS))
                })
                .collect(),
        };
        for (e, recorded_ms) in entries.into_iter().zip(recorded) {
            if e.owner.is_none() && e.deadline_ms.is_none() {
                return Err(format!("idempotency entry {:?} never expires", e.key));
            }
            if cache.entries.contains_key(e.key.as_str()) {
                return Err(format!("idempotency entry {:?} twice", e.key));
            }
            let entry = IdempotencyEntry {
                fingerprint: e.fingerprint,
                reply: e.reply,
                owner: e.owner,
                deadline_ms: e.deadline_ms,
                recorded_ms,
            };
            cache.insert(e.key.into(), entry);
        }
        if let Some(b) = bound {
            if b.keys_max == 0 || cache.entries.len() as u64 > b.keys_max {
                return Err(format!("idempotency bound {} does not hold", b.keys_max));
            }
            cache.keys_max = b.keys_max;
            cache.forced = b
                .forced
                .map(|(age_ms, at_ms)| ForcedEviction { age_ms, at_ms });
        }
        for (prefix, acked_below, touched_ms) in marks {
            if cache.marks.contains_key(&prefix) {
                return Err(format!("idempotency mark of {prefix:?} twice"));
            }
            let mark = AckMark {
                acked_below,
                touched_ms,
            };
            cache.insert_mark(prefix, mark);
        }
        Ok(cache)
    }
}

/// Refusals that depend on the request alone: a key of the wrong length, or
/// an acknowledgement beyond the key's own seq (the server refuses that too;
/// refusing it here keeps the rule independent of which server proposed).
fn refusal(idem: &Idempotency) -> Option<LockError> {
    if idem.key.is_empty() || idem.key.len() > IDEMPOTENCY_KEY_BYTES_MAX {
        return Some(LockError::invalid(
            "Idempotency-Key",
            format!("must be 1..={IDEMPOTENCY_KEY_BYTES_MAX} bytes"),
        ));
    }
    if let (Some(acked_below), Some((_, seq))) = (idem.acked_below, idempotency_key_seq(&idem.key))
    {
        if acked_below > seq {
            return Some(LockError::invalid(
                "Idempotency-Acked-Below",
                "must not exceed the sequence number of the Idempotency-Key",
            ));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn idem(key: &str, fingerprint: u64, acked_below: Option<u64>) -> Idempotency {
        Idempotency {
            key: key.into(),
            fingerprint,
            acked_below,
        }
    }

    /// Admits and records `key` with an owner-less entry at `now_ms`.
    fn apply(cache: &mut IdempotencyCache, idem: &Idempotency, now_ms: u64) -> Option<Reply> {
        let answer = cache.admit(idem, now_ms);
        if answer.is_none() {
            cache.record(idem, Reply::Released, None, now_ms);
        }
        answer
    }

    #[test]
    fn a_retry_gets_the_cached_reply_and_another_fingerprint_is_refused() {
        let mut cache = IdempotencyCache::default();
        assert_eq!(apply(&mut cache, &idem("k", 1, None), 0), None);
        assert_eq!(cache.admit(&idem("k", 1, None), 5), Some(Reply::Released));
        assert!(matches!(
            cache.admit(&idem("k", 2, None), 5),
            Some(Reply::Error(LockError::InvalidRequest { .. }))
        ));
        let long = "k".repeat(IDEMPOTENCY_KEY_BYTES_MAX + 1);
        assert!(cache.admit(&idem(&long, 1, None), 5).is_some());
        assert!(cache.admit(&idem("", 1, None), 5).is_some());
        cache.check(|_| true, 5).unwrap();
    }

    #[test]
    fn an_owned_entry_waits_for_its_owner_then_for_the_window() {
        let mut cache = IdempotencyCache::default();
        let key = idem("k", 1, None);
        assert_eq!(cache.admit(&key, 0), None);
        cache.record(&key, Reply::Released, Some(7), 0);
        cache.prune(10 * IDEMPOTENCY_WINDOW_MS);
        assert_eq!(cache.entry("k").map(|e| e.deadline_ms), Some(None));
        cache.owner_ended(7, 100);
        assert_eq!(
            cache.entry("k").map(|e| e.deadline_ms),
            Some(Some(100 + IDEMPOTENCY_WINDOW_MS))
        );
        cache.prune(100 + IDEMPOTENCY_WINDOW_MS - 1);
        assert_eq!(cache.len(), 1);
        cache.prune(100 + IDEMPOTENCY_WINDOW_MS);
        assert_eq!(cache.len(), 0);
        cache.check(|_| false, 100 + IDEMPOTENCY_WINDOW_MS).unwrap();
    }

    #[test]
    fn an_ack_drops_lower_seqs_of_its_prefix_and_refuses_them_later() {
        let mut cache = IdempotencyCache::default();
        for key in ["c-1", "c-2", "c-3", "d-1"] {
            apply(&mut cache, &idem(key, 1, None), 0);
        }
        apply(&mut cache, &idem("c-4", 1, Some(3)), 0);
        assert!(cache.entry("c-1").is_none() && cache.entry("c-2").is_none());
        assert!(cache.entry("c-3").is_some() && cache.entry("d-1").is_some());
        assert_eq!(cache.mark_count(), 1);
        assert!(matches!(
            cache.admit(&idem("c-2", 1, None), 1),
            Some(Reply::Error(LockError::InvalidRequest { .. }))
        ));
        assert!(matches!(
            cache.admit(&idem("c-9", 1, Some(10)), 1),
            Some(Reply::Error(LockError::InvalidRequest { .. }))
        ));
        cache.check(|_| true, 1).unwrap();
        let entries = cache.owned_entries();
        let (marks, bound) = cache.to_snapshot();
        assert_eq!(
            IdempotencyCache::restore(entries, marks, Some(bound)),
            Ok(cache.clone())
        );
        cache.prune(1 + IDEMPOTENCY_WINDOW_MS);
        assert_eq!((cache.len(), cache.mark_count()), (0, 0));
    }

    #[test]
    fn a_restore_refuses_duplicates_and_immortal_entries() {
        let snap = |key: &str, deadline_ms| IdempotencySnap {
            key: key.into(),
            fingerprint: 1,
            reply: Reply::Released,
            owner: None,
            deadline_ms,
        };
        assert!(IdempotencyCache::restore(vec![snap("k", None)], vec![], None).is_err());
        assert!(IdempotencyCache::restore(
            vec![snap("k", Some(1)), snap("k", Some(2))],
            vec![],
            None
        )
        .is_err());
        let marks = vec![("c".into(), 1, 0), ("c".into(), 2, 0)];
        assert!(IdempotencyCache::restore(vec![], marks, None).is_err());
    }
}

/// The cache's entries serialized as a sequence of [`IdempotencySnap`]s.
struct EntriesView<'a>(&'a BTreeMap<Key, IdempotencyEntry>);

/// An [`IdempotencySnap`] borrowed from the live entry: the same fields in
/// the same order, so the same bytes (`&str` and `&Reply` serialize as
/// `String` and `Reply` do; `golden_tests.rs` pins it).
#[derive(Serialize)]
struct IdempotencySnapRef<'a> {
    key: &'a str,
    fingerprint: u64,
    reply: &'a Reply,
    owner: Option<SessionId>,
    deadline_ms: Option<u64>,
}

impl Serialize for EntriesView<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.0.iter().map(|(key, entry)| IdempotencySnapRef {
            key,
            fingerprint: entry.fingerprint,
            reply: &entry.reply,
            owner: entry.owner,
            deadline_ms: entry.deadline_ms,
        }))
    }
}
