//! Client ids, idempotency keys and retry jitter, all drawn from one seeded
//! generator so that a simulated run is a pure function of its seed.

use std::collections::BTreeSet;
#[cfg(not(madsim))]
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use deadbolt_api::limits::IDEMPOTENCY_KEY_BYTES_MAX;
pub(crate) use deadbolt_api::rng::SplitMix64;

/// A seed for callers that gave none: under madsim the simulator's seeded
/// rng, in production the wall clock, the pid and a process-wide counter (two
/// clients built in the same nanosecond still differ).
pub(crate) fn default_seed() -> u64 {
    #[cfg(madsim)]
    {
        madsim::rand::random::<u64>()
    }
    #[cfg(not(madsim))]
    {
        static BUILT: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        let pid = u64::from(std::process::id());
        let n = BUILT.fetch_add(1, Ordering::Relaxed);
        SplitMix64::new(nanos ^ pid.rotate_left(32) ^ n.rotate_left(48)).next_u64()
    }
}

/// Hands out `Idempotency-Key` values: `<client id>-<sequence>`. The client id
/// makes keys unique across clients (keys are cluster-wide); the sequence
/// makes them unique across the calls of one client.
///
/// It also tracks which sequences are outstanding, for
/// `Idempotency-Acked-Below`: every keyed request tells the cluster the
/// lowest outstanding sequence, and the cluster forgets this client's entries
/// below it. Otherwise a busy client fills the cluster's idempotency cache
/// (entries live for the session's life or 10 minutes) and every keyed request
/// is refused until they age out.
///
/// What the ack promises is "I will never retry keys below n", not "I know
/// their outcomes": a call leaves the outstanding set when it is done with
/// its key, whether it got a final answer or gave up (transport errors,
/// timeouts, the caller dropping the future). A call that gave up will never
/// resend its key, so its cached outcome can do no good; keeping it
/// outstanding would instead pin the low-water mark forever.
#[derive(Debug)]
pub(crate) struct KeyGenerator {
    client_id: String,
    seqs: Arc<Mutex<Seqs>>,
}

#[derive(Debug)]
struct Seqs {
    next: u64,
    /// Issued to a call that has not finished with its key yet.
    outstanding: BTreeSet<u64>,
}

/// One call's idempotency key. While it exists its sequence is outstanding;
/// dropping it (the call is over) acknowledges it.
#[derive(Debug)]
pub(crate) struct IdempotencyKey {
    key: String,
    seq: u64,
    seqs: Arc<Mutex<Seqs>>,
}

impl IdempotencyKey {
    pub(crate) fn as_str(&self) -> &str {
        &self.key
    }

    /// The value for `Idempotency-Acked-Below`: the lowest outstanding
    /// sequence, which is at most this key's own (it is outstanding), as the
    /// server requires.
    pub(crate) fn acked_below(&self) -> u64 {
        let seqs = self.seqs.lock().unwrap_or_else(PoisonError::into_inner);
        seqs.outstanding.first().copied().unwrap_or(self.seq)
    }
}

impl Drop for IdempotencyKey {
    fn drop(&mut self) {
        // Never panic in drop: a poisoned set is still a valid set.
        let mut seqs = self.seqs.lock().unwrap_or_else(PoisonError::into_inner);
        seqs.outstanding.remove(&self.seq);
    }
}

impl KeyGenerator {
    pub(crate) fn new(client_id: String) -> Self {
        // 20 digits of u64 plus the dash must still fit the contract's limit.
        assert!(client_id.len() + 21 <= IDEMPOTENCY_KEY_BYTES_MAX);
        KeyGenerator {
            client_id,
            seqs: Arc::new(Mutex::new(Seqs {
                next: 1,
                outstanding: BTreeSet::new(),
            })),
        }
    }

    /// A client id of 16 lowercase hex digits drawn from `rng`.
    pub(crate) fn client_id_from(rng: &mut SplitMix64) -> String {
        format!("{:016x}", rng.next_u64())
    }

    pub(crate) fn client_id(&self) -> &str {
        &self.client_id
    }

    /// The key for one logical call; every retry of the call reuses it.
    /// Outstanding until the returned guard is dropped.
    pub(crate) fn next_key(&self) -> IdempotencyKey {
        let mut seqs = self.seqs.lock().unwrap_or_else(PoisonError::into_inner);
        let seq = seqs.next;
        seqs.next = seq.wrapping_add(1);
        seqs.outstanding.insert(seq);
        IdempotencyKey {
            key: format!("{}-{}", self.client_id, seq),
            seq,
            seqs: Arc::clone(&self.seqs),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_ids_and_keys() {
        let a = KeyGenerator::client_id_from(&mut SplitMix64::new(7));
        let b = KeyGenerator::client_id_from(&mut SplitMix64::new(7));
        let c = KeyGenerator::client_id_from(&mut SplitMix64::new(8));
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(a.len(), 16);
        let keys = KeyGenerator::new(a.clone());
        assert_eq!(keys.next_key().as_str(), format!("{a}-1"));
        assert_eq!(keys.next_key().as_str(), format!("{a}-2"));
    }

    #[test]
    fn keys_fit_the_limit() {
        let keys = KeyGenerator::new("f".repeat(IDEMPOTENCY_KEY_BYTES_MAX - 21));
        keys.seqs.lock().unwrap().next = u64::MAX;
        assert!(keys.next_key().as_str().len() <= IDEMPOTENCY_KEY_BYTES_MAX);
    }

    #[test]
    fn acked_below_is_the_lowest_outstanding_seq() {
        let keys = KeyGenerator::new("c".into());
        let k1 = keys.next_key();
        let k2 = keys.next_key();
        let k3 = keys.next_key();
        assert_eq!(k1.acked_below(), 1, "nothing below 1 to acknowledge");
        assert_eq!(k3.acked_below(), 1);
        // k2 done: 1 is still outstanding, so nothing more is acknowledged.
        drop(k2);
        assert_eq!(k3.acked_below(), 1);
        drop(k1);
        assert_eq!(k3.acked_below(), 3);
        drop(k3);
        let k4 = keys.next_key();
        assert_eq!(k4.acked_below(), 4);
        // Never above the key's own seq, as the server requires.
        let k5 = keys.next_key();
        assert!(k5.acked_below() <= 5);
    }

    #[test]
    fn unit_floats_stay_in_range() {
        let mut rng = SplitMix64::new(1);
        for _ in 0..1000 {
            let x = rng.next_unit();
            assert!((0.0..1.0).contains(&x));
        }
    }
}
