//! Snapshot bytes on both sides of InstallSnapshot: the latest local
//! snapshot a leader streams to lagging followers, and the one a follower
//! assembles chunk by chunk.

use super::config::SNAPSHOT_BYTES_MAX;
use super::message::InstallSnapshot;
use super::ready::SnapshotToInstall;
use super::types::SnapshotMeta;

/// What a received chunk led to.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum ChunkReceived {
    /// More is needed, from `next_offset` on (also the answer to a chunk that
    /// does not fit what is assembled, and 0 after a snapshot over the size
    /// limit was dropped).
    Incomplete { next_offset: u64 },
    /// The last chunk arrived: the whole snapshot.
    Complete(SnapshotToInstall),
}

#[derive(Debug, Clone, Default)]
pub(crate) struct Snapshots {
    /// Latest local snapshot (taken here or installed from a leader).
    latest: Option<(SnapshotMeta, Vec<u8>)>,
    /// A follower needs a snapshot this node holds no bytes of (e.g. after a
    /// restart): the caller is asked to take one.
    wanted: bool,
    /// A snapshot being received.
    assembly: Option<SnapshotToInstall>,
}

impl Snapshots {
    pub(crate) fn latest(&self) -> Option<&(SnapshotMeta, Vec<u8>)> {
        self.latest.as_ref()
    }

    /// The caller took a snapshot: it is the latest, and no other is wanted.
    pub(crate) fn taken(&mut self, meta: SnapshotMeta, data: Vec<u8>) {
        self.latest = Some((meta, data));
        self.wanted = false;
    }

    /// A snapshot received from the leader is the latest.
    pub(crate) fn installed(&mut self, meta: SnapshotMeta, data: Vec<u8>) {
        self.latest = Some((meta, data));
    }

    pub(crate) fn want(&mut self) {
        self.wanted = true;
    }

    pub(crate) fn is_wanted(&self) -> bool {
        self.wanted
    }

    pub(crate) fn take_wanted(&mut self) -> bool {
        std::mem::take(&mut self.wanted)
    }

    /// Adds a chunk from the leader. A chunk at offset 0 starts over; a chunk
    /// of another snapshot or at another offset than expected is refused with
    /// the offset wanted; a snapshot growing past [`SNAPSHOT_BYTES_MAX`] is
    /// dropped.
    pub(crate) fn receive_chunk(&mut self, m: InstallSnapshot) -> ChunkReceived {
        let same = |a: &SnapshotToInstall| {
            a.meta.last_index == m.meta.last_index && a.meta.last_term == m.meta.last_term
        };
        if m.offset == 0 {
            self.assembly = Some(SnapshotToInstall {
                meta: m.meta.clone(),
                data: Vec::new(),
            });
        }
        let matches_assembly = self.assembly.as_ref().is_some_and(same);
        let expected = match &self.assembly {
            Some(a) if matches_assembly => a.data.len() as u64,
            _ => 0,
        };
        if !matches_assembly || m.offset != expected {
            return ChunkReceived::Incomplete {
                next_offset: expected,
            };
        }
        if expected as usize + m.data.len() > SNAPSHOT_BYTES_MAX {
            self.assembly = None;
            return ChunkReceived::Incomplete { next_offset: 0 };
        }
        let assembly = self.assembly.as_mut().expect("checked same above");
        assembly.data.extend_from_slice(&m.data);
        if !m.done {
            let next_offset = assembly.data.len() as u64;
            return ChunkReceived::Incomplete { next_offset };
        }
        ChunkReceived::Complete(self.assembly.take().expect("checked above"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(last_index: u64, offset: u64, data: &[u8], done: bool) -> InstallSnapshot {
        InstallSnapshot {
            term: 2,
            meta: SnapshotMeta {
                last_index,
                last_term: 1,
                ..SnapshotMeta::default()
            },
            offset,
            data: data.to_vec(),
            done,
        }
    }

    #[test]
    fn chunks_assemble_in_order_and_out_of_order_ones_are_refused() {
        let mut s = Snapshots::default();
        let incomplete = |next_offset| ChunkReceived::Incomplete { next_offset };
        assert_eq!(s.receive_chunk(chunk(9, 2, b"cd", false)), incomplete(0));
        assert_eq!(s.receive_chunk(chunk(9, 0, b"ab", false)), incomplete(2));
        assert_eq!(s.receive_chunk(chunk(9, 4, b"ef", false)), incomplete(2));
        assert_eq!(s.receive_chunk(chunk(8, 2, b"cd", false)), incomplete(0));
        match s.receive_chunk(chunk(9, 2, b"cd", true)) {
            ChunkReceived::Complete(snap) => {
                assert_eq!((snap.meta.last_index, snap.data), (9, b"abcd".to_vec()))
            }
            other => panic!("expected the whole snapshot, got {other:?}"),
        }
        assert_eq!(s.receive_chunk(chunk(9, 2, b"cd", true)), incomplete(0));
    }

    #[test]
    fn a_taken_snapshot_satisfies_a_want() {
        let mut s = Snapshots::default();
        s.want();
        s.installed(SnapshotMeta::default(), vec![1]);
        assert!(
            s.is_wanted(),
            "an installed snapshot does not answer a want"
        );
        s.taken(SnapshotMeta::default(), vec![2]);
        assert!(!s.take_wanted());
        assert_eq!(s.latest().map(|(_, d)| d.clone()), Some(vec![2]));
        s.want();
        assert!(s.take_wanted());
        assert!(!s.is_wanted());
    }
}
