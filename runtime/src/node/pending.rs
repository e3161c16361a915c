//! The Raft actor's request bookkeeping: who waits for which log entry,
//! forwarded request, queued acquire or read, and how each is answered.
//! Plain maps and oneshot senders, no IO: the actor decides when, this
//! decides who. Every "take" hands requests back in key order (index,
//! request id, (lock, session)), which is the order the actor answers them
//! in, so a simulated run wakes callers in the same order every time.

use std::collections::BTreeMap;

use deadbolt_core::lock::{Event, Grant, Reply, SessionId};
use deadbolt_core::raft::{LogIndex, NodeId, Term};
use tokio::sync::oneshot;

use super::handle::{ProposeError, ReadContext, ReadFn};

pub(super) type ReplySender = oneshot::Sender<Result<Reply, ProposeError>>;
pub(super) type AdminSender = oneshot::Sender<Result<(), ProposeError>>;
/// Where a read that did not run is answered (with the query, when it may
/// be retried).
pub(super) type ReadFailedSender = oneshot::Sender<(ProposeError, Option<ReadFn>)>;

/// Who asked for a log entry (or a forwarded request) and is answered when
/// it is applied.
pub(super) enum Requester {
    /// A client's proposal, answered with the state machine's reply.
    Client(ReplySender),
    /// A membership or leadership change.
    Admin(AdminSender),
    /// The node's own proposals (expiry, withdraw, address update): nobody
    /// to answer.
    Internal,
}

impl Requester {
    pub(super) fn fail(self, error: ProposeError) {
        match self {
            Requester::Client(tx) => {
                let _ = tx.send(Err(error));
            }
            Requester::Admin(tx) => {
                let _ = tx.send(Err(error));
            }
            Requester::Internal => {}
        }
    }

    /// The caller has given up (dropped its future).
    pub(super) fn is_closed(&self) -> bool {
        match self {
            Requester::Client(tx) => tx.is_closed(),
            Requester::Admin(tx) => tx.is_closed(),
            Requester::Internal => false,
        }
    }

    fn is_client(&self) -> bool {
        matches!(self, Requester::Client(_))
    }
}

/// A request sent to the leader, waiting for its `ForwardReply`.
pub(super) struct Forward {
    /// When it was sent (monotonic ms).
    pub(super) sent_ms: u64,
    /// The leader it was sent to: once another leader is known, no reply
    /// will come.
    pub(super) leader: NodeId,
    pub(super) requester: Requester,
}

/// A linearizable read: waits for the leader's confirmation (its read
/// index), then for this node to apply that index.
pub(super) struct ReadInFlight {
    query: ReadFn,
    failed: ReadFailedSender,
    /// Set once Raft says the read is safe after applying this index.
    index: Option<LogIndex>,
    /// When it was asked (monotonic ms): an unconfirmed read is handed back
    /// for a retry after a bound.
    started_ms: u64,
}

impl ReadInFlight {
    pub(super) fn new(query: ReadFn, failed: ReadFailedSender, started_ms: u64) -> Self {
        Self {
            query,
            failed,
            index: None,
            started_ms,
        }
    }

    pub(super) fn serve(self, context: ReadContext<'_>) {
        (self.query)(context);
    }

    /// Gives the query back with the error, so the handle can retry it
    /// (a read has no effect until it runs).
    pub(super) fn hand_back(self, error: ProposeError) {
        let _ = self.failed.send((error, Some(self.query)));
    }

    pub(super) fn fail(self, error: ProposeError) {
        let _ = self.failed.send((error, None));
    }
}

/// Everything the actor owes an answer, by what the answer waits for.
/// Where an incarnation's request ids start, from a random draw: below 2^62
/// so the sequence never wraps, never 0.
pub(super) fn first_request_id(draw: u64) -> u64 {
    (draw >> 2).max(1)
}

pub(super) struct Pending {
    /// Log index -> (term it was proposed in, who waits for it).
    proposals: BTreeMap<LogIndex, (Term, Requester)>,
    /// How many of `proposals` are clients' (the `proposals_in_flight` gauge).
    client_proposals: usize,
    /// Requests forwarded to the leader, by request id.
    forwards: BTreeMap<u64, Forward>,
    /// Queued acquires, by (lock, session), until granted or the wait ends.
    /// Several callers may wait for the same queue place (a retried
    /// acquire with the same session): all get the outcome.
    acquires: BTreeMap<(String, SessionId), Vec<ReplySender>>,
    /// Reads by request id (the id Raft's ReadIndex round carries).
    reads: BTreeMap<u64, ReadInFlight>,
    next_request_id: u64,
}

impl Pending {
    /// `first_request_id` must differ between incarnations of a node (draw
    /// it at random, [`first_request_id`]): a leader's link delivers what it
    /// queued for an earlier incarnation, and a reply to that incarnation's
    /// request must never answer one of this one (a wrong grant, a stale
    /// read index).
    pub(super) fn new(first_request_id: u64) -> Self {
        Self {
            proposals: BTreeMap::new(),
            client_proposals: 0,
            forwards: BTreeMap::new(),
            acquires: BTreeMap::new(),
            reads: BTreeMap::new(),
            next_request_id: first_request_id,
        }
    }

    /// Ids for forwards and reads (one sequence: both travel to the leader).
    pub(super) fn next_request_id(&mut self) -> u64 {
        let id = self.next_request_id;
        self.next_request_id = id.checked_add(1).expect("request ids start below 2^62");
        id
    }

    /// Clients' proposals waiting for their entry.
    pub(super) fn client_proposals(&self) -> usize {
        self.client_proposals
    }

    /// Callers waiting in lock queues.
    pub(super) fn acquires_waiting(&self) -> usize {
        self.acquires.values().map(Vec::len).sum()
    }

    // --------------------------------------------------------- proposals ---

    /// Waits for the entry at `index` proposed in `term`. Returns the
    /// requester it displaced: one at the same index from another term is
    /// certainly lost (a leader of a later term holds a different entry
    /// there, and an entry committed before its election would be in its
    /// log: leader completeness).
    pub(super) fn expect_entry(
        &mut self,
        index: LogIndex,
        term: Term,
        requester: Requester,
    ) -> Option<Requester> {
        self.client_proposals += usize::from(requester.is_client());
        let (old_term, old) = self.proposals.insert(index, (term, requester))?;
        assert_ne!(
            old_term, term,
            "two proposals at index {index} in term {term}"
        );
        self.client_proposals -= usize::from(old.is_client());
        Some(old)
    }

    /// [`Self::expect_entry`], telling a displaced requester `lost()`.
    pub(super) fn register(
        &mut self,
        index: LogIndex,
        term: Term,
        requester: Requester,
        lost: impl FnOnce() -> ProposeError,
    ) {
        if let Some(old) = self.expect_entry(index, term, requester) {
            old.fail(lost());
        }
    }

    /// Who waits for the entry at `index`, and the term it was proposed in.
    pub(super) fn take_proposal(&mut self, index: LogIndex) -> Option<(Term, Requester)> {
        let (term, requester) = self.proposals.remove(&index)?;
        self.client_proposals -= usize::from(requester.is_client());
        Some((term, requester))
    }

    /// Who waits for the entry applied at `index` in `term`. A requester of
    /// another term is told `lost()`: another leader's entry took the index.
    pub(super) fn take_applied(
        &mut self,
        index: LogIndex,
        term: Term,
        lost: impl FnOnce() -> ProposeError,
    ) -> Option<Requester> {
        match self.take_proposal(index)? {
            (proposed_in, requester) if proposed_in == term => Some(requester),
            (_, requester) => {
                requester.fail(lost());
                None
            }
        }
    }

    /// Everyone waiting for an entry at or below `index` (a snapshot
    /// replaced them: their replies will never be computed here).
    fn take_proposals_through(&mut self, index: LogIndex) -> Vec<Requester> {
        let kept = self.proposals.split_off(&(index + 1));
        let covered = std::mem::replace(&mut self.proposals, kept);
        let covered: Vec<Requester> = covered.into_values().map(|(_, r)| r).collect();
        self.client_proposals -= covered.iter().filter(|r| r.is_client()).count();
        covered
    }

    // ---------------------------------------------------------- forwards ---

    pub(super) fn insert_forward(&mut self, request_id: u64, forward: Forward) {
        self.forwards.insert(request_id, forward);
    }

    pub(super) fn take_forward(&mut self, request_id: u64) -> Option<Forward> {
        self.forwards.remove(&request_id)
    }

    /// Answers "outcome unknown" (`Timeout`) to every forward matching
    /// `orphaned`: no `ForwardReply` will come for it.
    pub(super) fn fail_forwards_where(&mut self, orphaned: impl Fn(&Forward) -> bool) {
        for forward in self.take_forwards_where(orphaned) {
            forward.requester.fail(ProposeError::Timeout);
        }
    }

    /// Removes and returns every forward matching `orphaned`.
    fn take_forwards_where(&mut self, orphaned: impl Fn(&Forward) -> bool) -> Vec<Forward> {
        let ids: Vec<u64> = self
            .forwards
            .iter()
            .filter(|(_, f)| orphaned(f))
            .map(|(id, _)| *id)
            .collect();
        ids.iter()
            .map(|id| self.forwards.remove(id).expect("listed above"))
            .collect()
    }

    // ---------------------------------------------------------- acquires ---

    /// `tx` waits for the queued acquire of `lock` by `session_id`.
    pub(super) fn wait_for_grant(&mut self, lock: String, session_id: SessionId, tx: ReplySender) {
        self.acquires
            .entry((lock, session_id))
            .or_default()
            .push(tx);
    }

    /// The callers waiting for this queue place (its wait ended).
    fn take_acquire(&mut self, lock: &str, session_id: SessionId) -> Vec<ReplySender> {
        self.acquires
            .remove(&(lock.to_owned(), session_id))
            .unwrap_or_default()
    }

    /// Answers the callers whose queue place an applied entry settled
    /// (granted, or the wait ended otherwise), in event order.
    pub(super) fn end_waits(&mut self, events: &[Event]) {
        for event in events {
            match event {
                Event::Granted {
                    lock,
                    session_id,
                    mode,
                    fencing_token,
                } => {
                    for tx in self.take_acquire(lock, *session_id) {
                        let _ = tx.send(Ok(Reply::Acquired(Grant {
                            session_id: *session_id,
                            mode: *mode,
                            fencing_token: *fencing_token,
                        })));
                    }
                }
                Event::WaitEnded {
                    lock,
                    session_id,
                    reply,
                    ..
                } => {
                    for tx in self.take_acquire(lock, *session_id) {
                        let _ = tx.send(Ok(reply.clone()));
                    }
                }
                Event::SessionExpired { .. } | Event::SessionClosed { .. } => {}
            }
        }
    }

    /// A snapshot from the leader replaced the state through `index`:
    /// requests for entries it covers will never see their reply here, and
    /// queued acquires may have been granted inside it. Their outcome is
    /// unknown (`Timeout`).
    pub(super) fn fail_covered_by_snapshot(&mut self, index: LogIndex) {
        for requester in self.take_proposals_through(index) {
            requester.fail(ProposeError::Timeout);
        }
        for tx in self.take_all_acquires() {
            let _ = tx.send(Err(ProposeError::Timeout));
        }
    }

    fn take_all_acquires(&mut self) -> Vec<ReplySender> {
        std::mem::take(&mut self.acquires)
            .into_values()
            .flatten()
            .collect()
    }

    /// Forgets callers that left; returns the queue places nobody waits for
    /// any more (to withdraw).
    pub(super) fn take_abandoned_acquires(&mut self) -> Vec<(String, SessionId)> {
        let mut gone = Vec::new();
        for (key, senders) in &mut self.acquires {
            senders.retain(|tx| !tx.is_closed());
            if senders.is_empty() {
                gone.push(key.clone());
            }
        }
        for key in &gone {
            self.acquires.remove(key);
        }
        gone
    }

    // ------------------------------------------------------------- reads ---

    pub(super) fn insert_read(&mut self, request_id: u64, read: ReadInFlight) {
        self.reads.insert(request_id, read);
    }

    /// Raft confirmed the read: it may run once `index` is applied.
    pub(super) fn confirm_read(&mut self, request_id: u64, index: LogIndex) {
        if let Some(read) = self.reads.get_mut(&request_id) {
            read.index = Some(index);
        }
    }

    pub(super) fn take_read(&mut self, request_id: u64) -> Option<ReadInFlight> {
        self.reads.remove(&request_id)
    }

    /// Confirmed reads whose index is applied.
    pub(super) fn take_reads_servable(&mut self, applied_index: LogIndex) -> Vec<ReadInFlight> {
        self.take_reads_where(|r| r.index.is_some_and(|i| i <= applied_index))
    }

    /// Reads still unconfirmed `confirm_ms` after they were asked (a
    /// forwarded ReadIndex or its answer was lost).
    pub(super) fn take_reads_unconfirmed(
        &mut self,
        now_ms: u64,
        confirm_ms: u64,
    ) -> Vec<ReadInFlight> {
        self.take_reads_where(|r| r.index.is_none() && now_ms >= r.started_ms + confirm_ms)
    }

    /// Forgets reads whose caller left.
    pub(super) fn forget_abandoned_reads(&mut self) {
        self.reads.retain(|_, r| !r.failed.is_closed());
    }

    fn take_reads_where(&mut self, due: impl Fn(&ReadInFlight) -> bool) -> Vec<ReadInFlight> {
        let ids: Vec<u64> = self
            .reads
            .iter()
            .filter(|(_, r)| due(r))
            .map(|(id, _)| *id)
            .collect();
        ids.iter()
            .map(|id| self.reads.remove(id).expect("listed above"))
            .collect()
    }

    // ----------------------------------------------------------- failure ---

    /// The node stops serving (shutdown, storage failure): answers everyone.
    /// Proposals, forwards and queued acquires are already in some log and
    /// may still commit under another leader, so their outcome is unknown
    /// (`Timeout`, HTTP 504: a keyed retry settles it). Answering them with
    /// `error` (a 503, "safe to retry") let an unkeyed retry apply twice and
    /// left abandoned waiters to be granted as phantom holders (issue 13,
    /// bug 1; simulation seed 107). Reads change nothing: they get `error`.
    pub(super) fn stop_all(&mut self, error: &ProposeError) {
        for (_, (_, requester)) in std::mem::take(&mut self.proposals) {
            requester.fail(ProposeError::Timeout);
        }
        self.client_proposals = 0;
        for (_, forward) in std::mem::take(&mut self.forwards) {
            forward.requester.fail(ProposeError::Timeout);
        }
        for tx in self.take_all_acquires() {
            let _ = tx.send(Err(ProposeError::Timeout));
        }
        for (_, read) in std::mem::take(&mut self.reads) {
            read.fail(error.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use deadbolt_core::lock::{LockStateMachine, Mode};

    fn client() -> (Requester, oneshot::Receiver<Result<Reply, ProposeError>>) {
        let (tx, rx) = oneshot::channel();
        (Requester::Client(tx), rx)
    }

    fn read(
        started_ms: u64,
    ) -> (
        ReadInFlight,
        oneshot::Receiver<(ProposeError, Option<ReadFn>)>,
    ) {
        let (failed, rx) = oneshot::channel();
        (ReadInFlight::new(Box::new(|_| {}), failed, started_ms), rx)
    }

    fn lost() -> ProposeError {
        ProposeError::Unavailable {
            leader: None,
            reason: "lost".into(),
        }
    }

    #[test]
    fn a_later_term_displaces_a_proposal_and_the_count_follows() {
        let mut pending = Pending::new(1);
        let (first, _rx) = client();
        assert!(pending.expect_entry(5, 1, first).is_none());
        assert!(pending.expect_entry(6, 1, Requester::Internal).is_none());
        assert_eq!(pending.client_proposals(), 1);
        let displaced = pending.expect_entry(5, 2, Requester::Internal);
        assert!(matches!(displaced, Some(Requester::Client(_))));
        assert_eq!(pending.client_proposals(), 0);
        assert!(matches!(
            pending.take_proposal(5),
            Some((2, Requester::Internal))
        ));
        assert!(pending.take_proposal(5).is_none());
    }

    #[test]
    #[should_panic(expected = "two proposals at index 5 in term 1")]
    fn two_proposals_at_one_index_in_one_term_is_a_bug() {
        let mut pending = Pending::new(1);
        pending.expect_entry(5, 1, Requester::Internal);
        pending.expect_entry(5, 1, Requester::Internal);
    }

    #[test]
    fn a_snapshot_takes_the_proposals_it_covers() {
        let mut pending = Pending::new(1);
        let mut receivers = Vec::new();
        for index in [3, 7, 8, 12] {
            let (requester, rx) = client();
            pending.expect_entry(index, 1, requester);
            receivers.push(rx);
        }
        pending.fail_covered_by_snapshot(8);
        assert_eq!(pending.client_proposals(), 1);
        assert_eq!(receivers[0].try_recv(), Ok(Err(ProposeError::Timeout)));
        assert_eq!(receivers[2].try_recv(), Ok(Err(ProposeError::Timeout)));
        assert!(receivers[3].try_recv().is_err(), "index 12 still waits");
        // Applied in another term: the requester learns it was lost.
        assert!(pending.take_applied(12, 2, lost).is_none());
        assert_eq!(receivers[3].try_recv(), Ok(Err(lost())));
    }

    #[test]
    fn request_ids_start_anywhere_but_never_wrap_or_reach_zero() {
        assert_eq!(first_request_id(0), 1);
        let highest = first_request_id(u64::MAX);
        assert!(highest < 1 << 62);
        let mut pending = Pending::new(highest);
        assert_eq!(pending.next_request_id(), highest);
        assert_eq!(pending.next_request_id(), highest + 1);
    }

    #[test]
    fn orphaned_forwards_come_out_in_request_order() {
        let mut pending = Pending::new(1);
        for leader in [2, 3, 2] {
            let id = pending.next_request_id();
            pending.insert_forward(
                id,
                Forward {
                    sent_ms: id * 10,
                    leader,
                    requester: Requester::Internal,
                },
            );
        }
        let orphaned = pending.take_forwards_where(|f| f.leader == 2);
        let sent: Vec<u64> = orphaned.iter().map(|f| f.sent_ms).collect();
        assert_eq!(sent, [10, 30]);
        pending.fail_forwards_where(|_| true);
        assert!(pending.take_forward(2).is_none());
        let id = pending.next_request_id();
        let (requester, mut rx) = client();
        let forward = Forward {
            sent_ms: 0,
            leader: 3,
            requester,
        };
        pending.insert_forward(id, forward);
        pending.fail_forwards_where(|f| f.leader == 3);
        assert_eq!(rx.try_recv(), Ok(Err(ProposeError::Timeout)));
    }

    #[test]
    fn an_acquire_is_withdrawn_only_when_every_caller_left() {
        let mut pending = Pending::new(1);
        let (tx1, rx1) = oneshot::channel();
        let (tx2, rx2) = oneshot::channel();
        pending.wait_for_grant("a".into(), 1, tx1);
        pending.wait_for_grant("a".into(), 1, tx2);
        assert_eq!(pending.acquires_waiting(), 2);
        drop(rx1);
        assert!(pending.take_abandoned_acquires().is_empty());
        assert_eq!(pending.acquires_waiting(), 1);
        drop(rx2);
        assert_eq!(pending.take_abandoned_acquires(), [("a".to_string(), 1)]);
        assert_eq!(pending.acquires_waiting(), 0);
    }

    #[test]
    fn every_caller_of_one_queue_place_gets_the_outcome() {
        let mut pending = Pending::new(1);
        let (tx1, mut rx1) = oneshot::channel();
        let (tx2, mut rx2) = oneshot::channel();
        let (tx3, mut rx3) = oneshot::channel();
        pending.wait_for_grant("a".into(), 1, tx1);
        pending.wait_for_grant("a".into(), 1, tx2);
        pending.wait_for_grant("b".into(), 2, tx3);
        let grant = Grant {
            session_id: 1,
            mode: Mode::Exclusive,
            fencing_token: 9,
        };
        pending.end_waits(&[
            Event::Granted {
                lock: "a".into(),
                session_id: 1,
                mode: Mode::Exclusive,
                fencing_token: 9,
            },
            Event::SessionClosed { session_id: 2 },
        ]);
        assert_eq!(rx1.try_recv(), Ok(Ok(Reply::Acquired(grant))));
        assert_eq!(rx2.try_recv(), Ok(Ok(Reply::Acquired(grant))));
        assert!(rx3.try_recv().is_err(), "b still waits");
        assert_eq!(pending.acquires_waiting(), 1);
        // A snapshot ends every wait: the outcome is unknown here.
        pending.fail_covered_by_snapshot(10);
        assert_eq!(rx3.try_recv(), Ok(Err(ProposeError::Timeout)));
    }

    #[test]
    fn reads_run_once_confirmed_and_applied_and_come_back_unconfirmed() {
        let mut pending = Pending::new(1);
        let (r1, _rx1) = read(0);
        let (r2, mut rx2) = read(0);
        let (r3, rx3) = read(500);
        pending.insert_read(1, r1);
        pending.insert_read(2, r2);
        pending.insert_read(3, r3);
        pending.confirm_read(1, 10);
        assert!(pending.take_reads_servable(9).is_empty());
        let servable = pending.take_reads_servable(10);
        assert_eq!(servable.len(), 1);
        let state = LockStateMachine::new();
        for read in servable {
            read.serve(ReadContext {
                state: &state,
                lease: None,
                now_ms: 0,
            });
        }
        // Read 2 is past the bound, read 3 (asked later) is not.
        let unconfirmed = pending.take_reads_unconfirmed(1_000, 1_000);
        assert_eq!(unconfirmed.len(), 1);
        for read in unconfirmed {
            read.hand_back(lost());
        }
        assert!(matches!(rx2.try_recv(), Ok((_, Some(_)))));
        drop(rx3);
        pending.forget_abandoned_reads();
        assert!(pending.take_read(3).is_none());
    }

    #[test]
    fn stop_all_answers_what_was_proposed_as_outcome_unknown() {
        let mut pending = Pending::new(1);
        let (proposal, mut proposal_rx) = client();
        pending.expect_entry(1, 1, proposal);
        let (forwarded, mut forward_rx) = client();
        pending.insert_forward(
            7,
            Forward {
                sent_ms: 0,
                leader: 2,
                requester: forwarded,
            },
        );
        let (acquire, mut acquire_rx) = oneshot::channel();
        pending.wait_for_grant("a".into(), 1, acquire);
        let (r, mut read_rx) = read(0);
        pending.insert_read(8, r);

        let stopped = ProposeError::Stopped {
            reason: "shutting down".into(),
        };
        pending.stop_all(&stopped);
        // Already proposed or forwarded: never "safe to retry".
        assert_eq!(proposal_rx.try_recv(), Ok(Err(ProposeError::Timeout)));
        assert_eq!(forward_rx.try_recv(), Ok(Err(ProposeError::Timeout)));
        assert_eq!(acquire_rx.try_recv(), Ok(Err(ProposeError::Timeout)));
        assert!(matches!(read_rx.try_recv(), Ok((e, None)) if e == stopped));
        assert_eq!(pending.client_proposals(), 0);
        assert_eq!(pending.acquires_waiting(), 0);
        assert!(pending.take_forward(7).is_none());
    }
}
