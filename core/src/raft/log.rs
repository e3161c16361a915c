//! The replica's in-memory view of its log: a snapshot boundary, the entries
//! after it, and how much of it is known to be durable.

use super::types::{Entry, EntryPayload, LogIndex, Term};

/// Entries `snapshot_index + 1 ..= last_index()`, plus the term of the
/// snapshot boundary so `term_at(snapshot_index)` is always answerable.
#[derive(Debug, Clone, Default)]
pub(crate) struct RaftLog {
    snapshot_index: LogIndex,
    snapshot_term: Term,
    entries: Vec<Entry>,
    /// Highest index known durable and identical to what this log holds.
    persisted_index: LogIndex,
}

impl RaftLog {
    /// A log restored from storage: everything in it is durable.
    pub(crate) fn restore(
        snapshot_index: LogIndex,
        snapshot_term: Term,
        entries: Vec<Entry>,
    ) -> Self {
        for (offset, e) in entries.iter().enumerate() {
            assert_eq!(
                e.index,
                snapshot_index + 1 + offset as u64,
                "restored entries must follow the snapshot without gaps"
            );
        }
        let mut log = Self {
            snapshot_index,
            snapshot_term,
            entries,
            persisted_index: 0,
        };
        log.persisted_index = log.last_index();
        log
    }

    pub(crate) fn snapshot_index(&self) -> LogIndex {
        self.snapshot_index
    }

    pub(crate) fn first_index(&self) -> LogIndex {
        self.snapshot_index + 1
    }

    pub(crate) fn last_index(&self) -> LogIndex {
        self.snapshot_index + self.entries.len() as u64
    }

    pub(crate) fn last_term(&self) -> Term {
        self.entries.last().map_or(self.snapshot_term, |e| e.term)
    }

    pub(crate) fn persisted_index(&self) -> LogIndex {
        self.persisted_index
    }

    /// The term at `index`, or `None` if compacted away or beyond the end.
    pub(crate) fn term_at(&self, index: LogIndex) -> Option<Term> {
        if index == self.snapshot_index {
            return Some(self.snapshot_term);
        }
        self.entry(index).map(|e| e.term)
    }

    pub(crate) fn entry(&self, index: LogIndex) -> Option<&Entry> {
        if index <= self.snapshot_index {
            return None;
        }
        self.entries.get((index - self.snapshot_index - 1) as usize)
    }

    /// Entries in `[from, to]` (inclusive), clamped to what the log holds.
    pub(crate) fn slice(&self, from: LogIndex, to: LogIndex) -> &[Entry] {
        let from = from.max(self.first_index());
        let to = to.min(self.last_index());
        if from > to {
            return &[];
        }
        let start = (from - self.snapshot_index - 1) as usize;
        let end = (to - self.snapshot_index) as usize;
        &self.entries[start..end]
    }

    /// Appends entries that must directly follow the last one.
    pub(crate) fn append(&mut self, entries: &[Entry]) {
        for e in entries {
            assert_eq!(e.index, self.last_index() + 1, "appends are contiguous");
            assert!(
                e.term >= self.last_term(),
                "terms never decrease along the log"
            );
            self.entries.push(e.clone());
        }
    }

    /// Drops `from..` (a real conflict); the durable prefix shrinks with it.
    pub(crate) fn truncate_from(&mut self, from: LogIndex) {
        assert!(
            from > self.snapshot_index,
            "never truncate into the snapshot"
        );
        let keep = (from - self.snapshot_index - 1) as usize;
        self.entries.truncate(keep);
        self.persisted_index = self.persisted_index.min(from - 1);
    }

    /// Marks `..=index` durable, capped at what the log holds.
    pub(crate) fn mark_persisted(&mut self, index: LogIndex) {
        self.persisted_index = self.persisted_index.max(index.min(self.last_index()));
    }

    /// Discards entries up to `index` (covered by a snapshot), keeping the rest.
    pub(crate) fn compact_to(&mut self, index: LogIndex, term: Term) {
        if index <= self.snapshot_index {
            return;
        }
        if index >= self.last_index() {
            self.entries.clear();
        } else {
            let drop = (index - self.snapshot_index) as usize;
            self.entries.drain(..drop);
        }
        self.snapshot_index = index;
        self.snapshot_term = term;
    }

    /// Replaces the whole log with a snapshot boundary (installing a snapshot
    /// that the log does not match). Durable only once storage says so.
    pub(crate) fn reset_to_snapshot(&mut self, index: LogIndex, term: Term) {
        self.entries.clear();
        self.snapshot_index = index;
        self.snapshot_term = term;
        // The snapshot itself is durable only once storage reports it.
        self.persisted_index = self.persisted_index.min(index.saturating_sub(1));
    }

    /// Whether a candidate's log is at least as up to date as ours (§5.4.1).
    pub(crate) fn is_up_to_date(&self, last_index: LogIndex, last_term: Term) -> bool {
        last_term > self.last_term()
            || (last_term == self.last_term() && last_index >= self.last_index())
    }

    /// The largest index `<= index` whose term is `<= term` (for backtracking);
    /// stops at the snapshot boundary.
    pub(crate) fn last_index_with_term_at_most(&self, index: LogIndex, term: Term) -> LogIndex {
        let mut i = index.min(self.last_index());
        while i > self.snapshot_index {
            match self.term_at(i) {
                Some(t) if t <= term => return i,
                _ => i -= 1,
            }
        }
        i
    }

    /// Where `entries`, which follow an entry this log holds, first differ
    /// from it: the position of the first entry the log lacks, and whether
    /// the log holds another entry there (a conflict: cut the log before
    /// appending). `None` when the log already holds them all: entries with
    /// the same index and term are identical (log matching).
    pub(crate) fn find_conflict(&self, entries: &[Entry]) -> Option<(usize, bool)> {
        entries
            .iter()
            .enumerate()
            .find_map(|(i, e)| match self.term_at(e.index) {
                Some(t) if t == e.term => None,
                Some(_) => Some((i, true)),
                None => Some((i, false)),
            })
    }

    /// A follower's hint for a leader whose append at `index` (term `term`)
    /// did not match: the last index at or before it whose term is at most
    /// `term`, and that term (0 if unknown), so the leader can skip a whole
    /// conflicting term.
    pub(crate) fn conflict_hint(&self, index: LogIndex, term: Term) -> (LogIndex, Term) {
        let hint_index = self.last_index_with_term_at_most(index.min(self.last_index()), term);
        (hint_index, self.term_at(hint_index).unwrap_or(0))
    }

    pub(crate) fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// Entries from `from` on for one AppendEntries: at most `entries_max`
    /// and `bytes_max` bytes (roughly, as encoded), but always one if any
    /// (a single larger entry still goes alone, so the log makes progress).
    pub(crate) fn batch_from(
        &self,
        from: LogIndex,
        entries_max: usize,
        bytes_max: usize,
    ) -> Vec<Entry> {
        let to = from + entries_max as u64 - 1;
        let mut bytes = 0usize;
        let mut batch = Vec::new();
        for e in self.slice(from, to) {
            let size = entry_size_bytes(e);
            if !batch.is_empty() && bytes + size > bytes_max {
                break;
            }
            bytes += size;
            batch.push(e.clone());
        }
        batch
    }
}

/// Rough encoded size of an entry, for batching limits.
fn entry_size_bytes(e: &Entry) -> usize {
    const OVERHEAD: usize = 24;
    OVERHEAD
        + match &e.payload {
            EntryPayload::Noop => 0,
            EntryPayload::Command(d) => d.len(),
            EntryPayload::Membership(m) => m
                .members
                .values()
                .map(|x| 16 + x.peer_addr.len() + x.api_addr.len())
                .sum(),
        }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn command(index: LogIndex, bytes: usize) -> Entry {
        Entry {
            term: 1,
            index,
            payload: EntryPayload::Command(vec![0; bytes]),
        }
    }

    #[test]
    fn conflicts_and_hints() {
        let term_3 = Entry {
            term: 3,
            ..command(3, 0)
        };
        let entries = vec![command(1, 0), command(2, 0), term_3];
        let log = RaftLog::restore(0, 0, entries.clone());
        assert_eq!(log.find_conflict(&entries[1..]), None);
        let newer = [Entry {
            term: 4,
            ..command(3, 0)
        }];
        assert_eq!(log.find_conflict(&newer), Some((0, true)));
        let more = [entries[2].clone(), command(4, 0)];
        assert_eq!(log.find_conflict(&more), Some((1, false)));
        assert_eq!(
            log.conflict_hint(9, 3),
            (3, 3),
            "past the end: from the last"
        );
        assert_eq!(log.conflict_hint(3, 2), (2, 1), "skips the newer term");
        assert_eq!(log.conflict_hint(3, 0), (0, 0));
    }

    #[test]
    fn batches_are_bounded_by_count_and_bytes_but_never_empty() {
        let entries: Vec<Entry> = (1..=6).map(|i| command(i, 100)).collect();
        let log = RaftLog::restore(0, 0, entries);
        let indexes = |b: Vec<Entry>| b.iter().map(|e| e.index).collect::<Vec<_>>();
        assert_eq!(indexes(log.batch_from(2, 3, 10_000)), vec![2, 3, 4]);
        assert_eq!(
            indexes(log.batch_from(2, 10, 250)),
            vec![2, 3],
            "124 bytes each"
        );
        assert_eq!(indexes(log.batch_from(5, 10, 1)), vec![5], "one alone");
        assert_eq!(indexes(log.batch_from(7, 10, 10_000)), Vec::<u64>::new());
    }
}
