//! Lock safety as granted by the cluster (no two conflicting holds overlap,
//! tokens grow from one hold to the next) and fencing safety downstream (a
//! resource never accepts an older token than one it accepted, nor a token
//! the cluster never issued).

use std::collections::BTreeMap;
use std::fmt;

use crate::history::{
    fmt_time, ClientHistory, ClientId, EventId, Fence, FencingToken, KvInput, KvOutput, LockEvent,
    LockHistory, LockMode, OpId, OpInput, OpOutput, SessionId, SimTimeNs, StackInput, StackOutput,
};
use crate::resource::AcceptedWrite;

/// One interval during which a session certainly held a lock: from the
/// moment its client received the grant to the moment it sent the release or
/// the cluster ended the session (`None`: still held when the run ended).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hold {
    pub lock: String,
    pub session: SessionId,
    pub client: ClientId,
    pub mode: LockMode,
    pub token: FencingToken,
    pub granted_event: EventId,
    pub granted_ns: SimTimeNs,
    pub ended_event: Option<EventId>,
    pub ended_ns: Option<SimTimeNs>,
}

impl Hold {
    fn end(&self) -> SimTimeNs {
        self.ended_ns.unwrap_or(SimTimeNs::MAX)
    }

    fn conflicts_with(&self, other: &Hold) -> bool {
        self.session != other.session
            && (self.mode == LockMode::Exclusive || other.mode == LockMode::Exclusive)
    }
}

impl fmt::Display for Hold {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let end = match (self.ended_event, self.ended_ns) {
            (Some(e), Some(t)) => format!("{} (event #{e})", fmt_time(t)),
            _ => "end of run".to_owned(),
        };
        write!(
            f,
            "session {} (client {}) {} token {} from {} (event #{}) to {}",
            self.session,
            self.client,
            self.mode,
            self.token,
            fmt_time(self.granted_ns),
            self.granted_event,
            end
        )
    }
}

/// A broken lock guarantee.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LockSafetyViolation {
    /// Two conflicting holds of one lock overlapped in time.
    OverlappingHolds {
        lock: String,
        first: Hold,
        second: Hold,
    },
    /// A conflicting hold that began after another ended got a token that is
    /// not larger.
    TokenNotIncreasing {
        lock: String,
        earlier: Hold,
        later: Hold,
    },
}

impl fmt::Display for LockSafetyViolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LockSafetyViolation::OverlappingHolds {
                lock,
                first,
                second,
            } => write!(
                f,
                "lock {lock:?} held by two sessions at once: {first}; and {second}"
            ),
            LockSafetyViolation::TokenNotIncreasing {
                lock,
                earlier,
                later,
            } => write!(
                f,
                "lock {lock:?}: later grant has token {} not above earlier token {}: {earlier}; then {later}",
                later.token, earlier.token
            ),
        }
    }
}

/// Rebuilds the holds of every lock from the recorded events.
pub fn holds(history: &LockHistory) -> Vec<Hold> {
    let mut open: BTreeMap<(String, SessionId), Hold> = BTreeMap::new();
    let mut closed = Vec::new();
    let close = |mut h: Hold, event: EventId, at_ns: SimTimeNs, closed: &mut Vec<Hold>| {
        h.ended_event = Some(event);
        h.ended_ns = Some(at_ns);
        closed.push(h);
    };
    for (event, rec) in history.events.iter().enumerate() {
        let at_ns = rec.at_ns;
        match &rec.event {
            LockEvent::Granted {
                lock,
                session,
                client,
                mode,
                token,
            } => {
                let k = (lock.clone(), session.clone());
                if let Some(h) = open.get(&k) {
                    if h.token == *token && h.mode == *mode {
                        // Re-acquire by the same session: the same hold.
                        continue;
                    }
                }
                if let Some(h) = open.remove(&k) {
                    close(h, event, at_ns, &mut closed);
                }
                open.insert(
                    k,
                    Hold {
                        lock: lock.clone(),
                        session: session.clone(),
                        client: *client,
                        mode: *mode,
                        token: *token,
                        granted_event: event,
                        granted_ns: at_ns,
                        ended_event: None,
                        ended_ns: None,
                    },
                );
            }
            LockEvent::ReleaseSent {
                lock,
                session,
                token,
            } => {
                let k = (lock.clone(), session.clone());
                if open.get(&k).is_some_and(|h| h.token == *token) {
                    if let Some(h) = open.remove(&k) {
                        close(h, event, at_ns, &mut closed);
                    }
                }
            }
            LockEvent::SessionEnded { session } => {
                let keys: Vec<(String, SessionId)> =
                    open.keys().filter(|(_, s)| s == session).cloned().collect();
                for k in keys {
                    if let Some(h) = open.remove(&k) {
                        close(h, event, at_ns, &mut closed);
                    }
                }
            }
            LockEvent::TokenIssued { .. } => {}
        }
    }
    closed.extend(open.into_values());
    closed.sort_by_key(|h| (h.lock.clone(), h.granted_ns, h.granted_event));
    closed
}

/// Checks that conflicting holds never overlap and that tokens grow from one
/// conflicting hold to the next.
pub fn check_lock_safety(history: &LockHistory) -> Vec<LockSafetyViolation> {
    let all = holds(history);
    let mut by_lock: BTreeMap<&str, Vec<&Hold>> = BTreeMap::new();
    for h in &all {
        by_lock.entry(h.lock.as_str()).or_default().push(h);
    }
    let mut violations = Vec::new();
    for (lock, hs) in by_lock {
        // Sorted by grant time (from `holds`). Pairwise is fine at simulation
        // sizes and keeps the reasoning obvious.
        for (i, a) in hs.iter().enumerate() {
            for b in &hs[i + 1..] {
                if !a.conflicts_with(b) {
                    continue;
                }
                if b.granted_ns < a.end() && a.granted_ns < b.end() {
                    violations.push(LockSafetyViolation::OverlappingHolds {
                        lock: lock.to_owned(),
                        first: (*a).clone(),
                        second: (*b).clone(),
                    });
                } else if a.end() <= b.granted_ns && b.token <= a.token {
                    // `a` ended before `b` was granted, so `b`'s grant
                    // committed after `a`'s: its log index must be larger.
                    violations.push(LockSafetyViolation::TokenNotIncreasing {
                        lock: lock.to_owned(),
                        earlier: (*a).clone(),
                        later: (*b).clone(),
                    });
                }
            }
        }
    }
    violations
}

/// A broken fencing guarantee at a downstream resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FencingViolation {
    /// The resource accepted `write` after already accepting a larger token.
    TokenWentBack {
        previous_index: usize,
        previous: AcceptedWrite,
        write_index: usize,
        write: AcceptedWrite,
    },
    /// The resource accepted a token the cluster had not issued (for that
    /// lock) by the time of the write.
    UnissuedToken {
        write_index: usize,
        write: AcceptedWrite,
        /// When the cluster did issue it, if ever.
        issued_ns: Option<SimTimeNs>,
    },
    /// The cluster's own fenced store (KV or stack) acknowledged a write
    /// carrying `token` although a newer grant of the same lock had already
    /// reached a client before the write was sent: the lock's current token
    /// was newer at every moment the write could have applied.
    StaleWriteAccepted {
        op: OpId,
        what: String,
        lock: String,
        token: FencingToken,
        newer_token: FencingToken,
        newer_granted_ns: SimTimeNs,
        invoked_ns: SimTimeNs,
    },
}

fn fmt_write(w: &AcceptedWrite) -> String {
    format!(
        "client {} wrote {:?} with {}@{} at {}",
        w.client,
        w.resource,
        w.lock,
        w.token,
        fmt_time(w.at_ns)
    )
}

impl fmt::Display for FencingViolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FencingViolation::TokenWentBack {
                previous_index,
                previous,
                write_index,
                write,
            } => write!(
                f,
                "resource accepted an older token: write #{write_index} ({}) after write #{previous_index} ({})",
                fmt_write(write),
                fmt_write(previous)
            ),
            FencingViolation::UnissuedToken {
                write_index,
                write,
                issued_ns,
            } => {
                write!(
                    f,
                    "resource accepted a token the cluster had not issued: write #{write_index} ({})",
                    fmt_write(write)
                )?;
                match issued_ns {
                    Some(t) => write!(f, "; issued only at {}", fmt_time(*t)),
                    None => f.write_str("; never issued"),
                }
            }
            FencingViolation::StaleWriteAccepted {
                op,
                what,
                lock,
                token,
                newer_token,
                newer_granted_ns,
                invoked_ns,
            } => write!(
                f,
                "op #{op} {what} with {lock}@{token} was acknowledged although {lock}@{newer_token} \
                 had been granted at {}, before the write was sent at {}",
                fmt_time(*newer_granted_ns),
                fmt_time(*invoked_ns)
            ),
        }
    }
}

/// Checks the writes a resource accepted against the tokens the cluster
/// issued (`TokenIssued` and `Granted` events of `locks`).
pub fn check_fencing(accepted: &[AcceptedWrite], locks: &LockHistory) -> Vec<FencingViolation> {
    let mut issued: BTreeMap<(&str, FencingToken), SimTimeNs> = BTreeMap::new();
    for rec in &locks.events {
        let (lock, token) = match &rec.event {
            LockEvent::TokenIssued { lock, token } | LockEvent::Granted { lock, token, .. } => {
                (lock.as_str(), *token)
            }
            _ => continue,
        };
        let at = issued.entry((lock, token)).or_insert(rec.at_ns);
        *at = (*at).min(rec.at_ns);
    }
    let mut violations = Vec::new();
    let mut largest: BTreeMap<&str, usize> = BTreeMap::new();
    for (i, w) in accepted.iter().enumerate() {
        if let Some(&p) = largest.get(w.resource.as_str()) {
            if w.token < accepted[p].token {
                violations.push(FencingViolation::TokenWentBack {
                    previous_index: p,
                    previous: accepted[p].clone(),
                    write_index: i,
                    write: w.clone(),
                });
            }
        }
        if largest
            .get(w.resource.as_str())
            .is_none_or(|&p| accepted[p].token <= w.token)
        {
            largest.insert(w.resource.as_str(), i);
        }
        let issued_ns = issued.get(&(w.lock.as_str(), w.token)).copied();
        if issued_ns.is_none_or(|t| t > w.at_ns) {
            violations.push(FencingViolation::UnissuedToken {
                write_index: i,
                write: w.clone(),
                issued_ns,
            });
        }
    }
    violations
}

/// Fencing inside the cluster: every acknowledged fenced KV or stack write
/// must carry the lock's current token when it applies. A grant of a newer
/// token that a client received before the write was sent proves the
/// write's token was stale at every point the write could have applied.
pub fn check_cluster_fencing(
    clients: &ClientHistory,
    locks: &LockHistory,
) -> Vec<FencingViolation> {
    // Earliest receipt of each (lock, token) grant, sorted by token.
    let mut grants: BTreeMap<&str, BTreeMap<FencingToken, SimTimeNs>> = BTreeMap::new();
    for rec in &locks.events {
        if let LockEvent::Granted {
            lock, token, mode, ..
        } = &rec.event
        {
            // A shared grant does not invalidate an exclusive token for
            // writes (writes need an exclusive holder anyway), but it does
            // mean a newer grant exists: count both.
            let _ = mode;
            let at = grants
                .entry(lock.as_str())
                .or_default()
                .entry(*token)
                .or_insert(rec.at_ns);
            *at = (*at).min(rec.at_ns);
        }
    }
    let mut violations = Vec::new();
    for (id, op) in clients.ops.iter().enumerate() {
        let (fence, acked) = match (&op.input, op.known_output()) {
            (
                OpInput::Kv(KvInput::Put { fence, .. } | KvInput::Append { fence, .. }),
                Some(OpOutput::Kv(KvOutput::Written { .. })),
            ) => (fence, true),
            (
                OpInput::Stack(StackInput::Push { fence, .. } | StackInput::Pop { fence, .. }),
                Some(OpOutput::Stack(StackOutput::Pushed { .. } | StackOutput::Popped { .. })),
            ) => (fence, true),
            _ => (&None, false),
        };
        let (Some(Fence { lock, token }), true) = (fence, acked) else {
            continue;
        };
        let newer = grants.get(lock.as_str()).and_then(|by_token| {
            by_token
                .range(token + 1..)
                .map(|(t, at)| (*t, *at))
                .filter(|(_, at)| *at < op.invoked_ns)
                .min_by_key(|(_, at)| *at)
        });
        if let Some((newer_token, newer_granted_ns)) = newer {
            violations.push(FencingViolation::StaleWriteAccepted {
                op: id,
                what: op.input.to_string(),
                lock: lock.clone(),
                token: *token,
                newer_token,
                newer_granted_ns,
                invoked_ns: op.invoked_ns,
            });
        }
    }
    violations
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::LockMode;
    use crate::resource::{FencedResource, WriteOutcome};

    #[test]
    fn cluster_fencing_rejects_a_stale_write_acknowledged_after_a_newer_grant() {
        let mut locks = LockHistory::new();
        let grant = |token| LockEvent::Granted {
            lock: "L".into(),
            session: format!("s{token}"),
            client: 1,
            mode: LockMode::Exclusive,
            token,
        };
        locks.record(10, grant(5));
        locks.record(100, grant(9));
        let mut clients = ClientHistory::new();
        let mut append = |invoked: u64, token: u64| {
            let id = clients.invoke(
                1,
                invoked,
                OpInput::Kv(KvInput::Append {
                    key: "k".into(),
                    value: format!("<{invoked}>"),
                    fence: Some(Fence {
                        lock: "L".into(),
                        token,
                    }),
                }),
            );
            clients.complete(
                id,
                invoked + 5,
                OpOutput::Kv(KvOutput::Written {
                    size: 1,
                    last_token: Some(token),
                }),
            );
        };
        append(50, 5); // before the newer grant: fine
        append(95, 5); // concurrent with it (grant received later): fine
        append(120, 9); // the new holder: fine
        append(130, 5); // stale and acknowledged: violation
        let v = check_cluster_fencing(&clients, &locks);
        assert_eq!(v.len(), 1, "{v:?}");
        assert!(v[0]
            .to_string()
            .contains("L@5 was acknowledged although L@9"));
    }

    fn granted(
        lock: &str,
        session: &str,
        client: ClientId,
        mode: LockMode,
        token: u64,
    ) -> LockEvent {
        LockEvent::Granted {
            lock: lock.into(),
            session: session.into(),
            client,
            mode,
            token,
        }
    }

    fn release(lock: &str, session: &str, token: u64) -> LockEvent {
        LockEvent::ReleaseSent {
            lock: lock.into(),
            session: session.into(),
            token,
        }
    }

    fn history(events: Vec<(u64, LockEvent)>) -> LockHistory {
        let mut h = LockHistory::new();
        for (at, e) in events {
            h.record(at, e);
        }
        h
    }

    #[test]
    fn accepts_handovers_expiry_and_shared_holders() {
        use LockMode::*;
        let h = history(vec![
            (10, granted("L", "a", 1, Exclusive, 3)),
            (20, release("L", "a", 3)),
            (30, granted("L", "b", 2, Exclusive, 7)),
            // b's session expires (cluster decision), c takes over.
            (
                40,
                LockEvent::SessionEnded {
                    session: "b".into(),
                },
            ),
            (50, granted("L", "c", 3, Exclusive, 9)),
            (55, granted("L", "c", 3, Exclusive, 9)), // re-acquire, same hold
            (60, release("L", "c", 9)),
            (70, granted("L", "d", 4, Shared, 11)),
            (71, granted("L", "e", 5, Shared, 12)),
            (80, granted("M", "a", 1, Exclusive, 13)),
        ]);
        assert_eq!(check_lock_safety(&h), vec![]);
        assert_eq!(holds(&h).len(), 6);
    }

    #[test]
    fn rejects_overlapping_exclusive_grants() {
        let h = history(vec![
            (10, granted("L", "a", 1, LockMode::Exclusive, 3)),
            (15, granted("L", "b", 2, LockMode::Exclusive, 5)),
            (20, release("L", "a", 3)),
        ]);
        let v = check_lock_safety(&h);
        assert!(
            matches!(v.as_slice(), [LockSafetyViolation::OverlappingHolds { lock, first, second }]
                if lock == "L" && first.session == "a" && second.session == "b"),
            "{v:?}"
        );
        let text = v[0].to_string();
        assert!(text.contains("held by two sessions at once"), "{text}");
    }

    #[test]
    fn rejects_shared_overlapping_exclusive() {
        let h = history(vec![
            (10, granted("L", "a", 1, LockMode::Shared, 3)),
            (15, granted("L", "b", 2, LockMode::Exclusive, 5)),
        ]);
        assert_eq!(check_lock_safety(&h).len(), 1);
    }

    #[test]
    fn rejects_tokens_going_down_between_holds() {
        let h = history(vec![
            (10, granted("L", "a", 1, LockMode::Exclusive, 8)),
            (20, release("L", "a", 8)),
            (30, granted("L", "b", 2, LockMode::Exclusive, 5)),
        ]);
        let v = check_lock_safety(&h);
        assert!(
            matches!(
                v.as_slice(),
                [LockSafetyViolation::TokenNotIncreasing { .. }]
            ),
            "{v:?}"
        );
    }

    #[test]
    fn accepts_a_fenced_resource_used_by_a_paused_stale_holder() {
        let mut locks = LockHistory::new();
        let mut r = FencedResource::new();
        locks.record(10, granted("L", "a", 1, LockMode::Exclusive, 3));
        assert_eq!(r.write(11, "db", "L", 3, 1), WriteOutcome::Accepted);
        // a is paused; its session expires and b gets the lock.
        locks.record(
            20,
            LockEvent::SessionEnded {
                session: "a".into(),
            },
        );
        locks.record(30, granted("L", "b", 2, LockMode::Exclusive, 6));
        assert_eq!(r.write(31, "db", "L", 6, 2), WriteOutcome::Accepted);
        // a wakes up, still believing it holds the lock: refused.
        assert!(matches!(
            r.write(40, "db", "L", 3, 1),
            WriteOutcome::Rejected { .. }
        ));
        assert_eq!(check_fencing(r.accepted(), &locks), vec![]);
        assert_eq!(check_lock_safety(&locks), vec![]);
    }

    fn write(at_ns: u64, token: u64) -> AcceptedWrite {
        AcceptedWrite {
            at_ns,
            resource: "db".into(),
            lock: "L".into(),
            token,
            client: 1,
        }
    }

    #[test]
    fn rejects_a_downstream_accepting_an_older_token() {
        let locks = history(vec![
            (
                1,
                LockEvent::TokenIssued {
                    lock: "L".into(),
                    token: 3,
                },
            ),
            (
                2,
                LockEvent::TokenIssued {
                    lock: "L".into(),
                    token: 6,
                },
            ),
        ]);
        let accepted = vec![write(10, 6), write(20, 3)];
        let v = check_fencing(&accepted, &locks);
        assert!(
            matches!(
                v.as_slice(),
                [FencingViolation::TokenWentBack {
                    previous_index: 0,
                    write_index: 1,
                    ..
                }]
            ),
            "{v:?}"
        );
        assert!(v[0].to_string().contains("older token"));
    }

    #[test]
    fn rejects_invented_and_premature_tokens() {
        let locks = history(vec![(
            50,
            LockEvent::TokenIssued {
                lock: "L".into(),
                token: 6,
            },
        )]);
        // Token 6 used before the cluster issued it; token 9 never issued;
        // token 6 of another lock is not L's token.
        let mut other_lock = write(60, 6);
        other_lock.lock = "M".into();
        other_lock.resource = "other".into();
        let accepted = vec![write(10, 6), write(60, 9), other_lock];
        let v = check_fencing(&accepted, &locks);
        assert_eq!(v.len(), 3, "{v:?}");
        assert!(matches!(
            v[0],
            FencingViolation::UnissuedToken {
                issued_ns: Some(50),
                ..
            }
        ));
        assert!(matches!(
            v[1],
            FencingViolation::UnissuedToken {
                issued_ns: None,
                ..
            }
        ));
    }

    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Back-to-back exclusive holds (each ended by a release or an expiry
        /// before the next grant) pass; pulling any later grant back before
        /// the previous hold ended is caught.
        #[test]
        fn handovers_pass_and_any_early_grant_is_caught(
            holds in proptest::collection::vec((1u64..50, 1u64..50, any::<bool>()), 2..20),
            pick in any::<proptest::sample::Index>(),
        ) {
            let mut events = Vec::new();
            let (mut t, mut token) = (0, 0);
            for (k, (gap, len, expire)) in holds.iter().enumerate() {
                let session = format!("s{k}");
                t += gap;
                token += gap;
                events.push((t, granted("L", &session, k as u64, LockMode::Exclusive, token)));
                t += len;
                events.push((t, if *expire {
                    LockEvent::SessionEnded { session }
                } else {
                    release("L", &session, token)
                }));
            }
            prop_assert_eq!(check_lock_safety(&history(events.clone())), vec![]);

            // Move grant k (k >= 1) to just before the previous hold ended.
            let k = 1 + pick.index(holds.len() - 1);
            let previous_end = events[2 * k - 1].0;
            events[2 * k].0 = previous_end - 1;
            events.sort_by_key(|(at, _)| *at);
            let v = check_lock_safety(&history(events));
            prop_assert!(
                v.iter().any(|v| matches!(v, LockSafetyViolation::OverlappingHolds { .. })),
                "{:?}", v
            );
        }
    }
}
