//! Commands: what the replicated log carries to the lock state machine,
//! each inside an [`Envelope`] with the leader's clock and the request's
//! idempotency key. Their postcard encoding is stored and replicated: change
//! it only with a new format.

use serde::{Deserialize, Serialize};

use super::types::{FencingToken, Mode, SessionId};

/// What the leader proposes: one command plus the leader's timestamp and the
/// request's idempotency key. Applying it is a pure function of (state,
/// envelope, log index).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// The leader's clock when it proposed this entry. The state machine keeps
    /// the high-water mark of these (`clock_ms`) and uses only that, for waiter
    /// deadlines, `acquired_at_ms` and the idempotency and tombstone windows.
    pub now_ms: u64,
    pub idempotency: Option<Idempotency>,
    pub command: Command,
}

impl Envelope {
    /// The bytes of a Raft entry's command payload (postcard, via
    /// [`crate::codec`]; Raft's own log records carry the checksum).
    pub fn to_bytes(&self) -> Vec<u8> {
        crate::codec::encode(self)
    }

    /// Parses a Raft entry's command payload; bad bytes are an error.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, crate::codec::DecodeError> {
        crate::codec::decode(bytes)
    }
}

/// The `Idempotency-Key` of a request and a fingerprint of it (a hash of
/// method, path and body computed by the server): the same key with another
/// fingerprint is `invalid_request`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Idempotency {
    pub key: String,
    pub fingerprint: u64,
    /// `Idempotency-Acked-Below`: for a key `<prefix>-<seq>` (see
    /// [`idempotency_key_seq`]), the client has the final outcome of every
    /// `<prefix>-<m>` with `m` below this, and will never retry those keys, so
    /// their entries may be forgotten. Ignored for keys not of that form.
    #[serde(default)]
    pub acked_below: Option<u64>,
}

/// Splits an idempotency key of the form `<prefix>-<seq>` (non-empty prefix,
/// `seq` a canonical decimal u64: digits only, no leading zero) into its
/// parts. Only keys of this form take part in acknowledgements; requiring the
/// canonical spelling keeps one seq per prefix (`a-7` and `a-07` would
/// otherwise both claim seq 7).
pub fn idempotency_key_seq(key: &str) -> Option<(&str, u64)> {
    let (prefix, seq) = key.rsplit_once('-')?;
    if prefix.is_empty()
        || seq.is_empty()
        || !seq.bytes().all(|b| b.is_ascii_digit())
        || (seq.len() > 1 && seq.starts_with('0'))
    {
        return None;
    }
    Some((prefix, seq.parse().ok()?))
}

/// Who asks for a lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Owner {
    /// An existing session.
    Session(SessionId),
    /// No `session_id` given: this command opens a session (id = its log
    /// index) that owns just this lock and ends once it holds and waits for
    /// nothing.
    Ephemeral { ttl_ms: u64 },
}

/// A fenced mutation's guard: the lock and the token the writer holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fence {
    pub lock: String,
    pub fencing_token: FencingToken,
}

/// Everything the replicated log can ask the lock state machine to do. Each
/// variant wraps a struct of its fields, so a handler takes one argument;
/// postcard encodes a newtype variant of a struct exactly like the struct
/// variant it replaced (`golden_tests.rs` holds the bytes).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    OpenSession(OpenSession),
    Keepalive(Keepalive),
    CloseSession(CloseSession),
    ExpireSessions(ExpireSessions),
    Acquire(Acquire),
    Release(Release),
    Withdraw(Withdraw),
    ExpireWaiters,
    /// Replaces the key's value.
    KvPut(KvWrite),
    /// Appends to the key's value (creating the key).
    KvAppend(KvWrite),
    StackPush(StackPush),
    StackPop(StackPop),
    StackDelete(StackDelete),
    /// Cluster-wide settings every replica must apply alike.
    Configure(Configure),
}

impl Command {
    /// The existing session this command acts for, if any (owns its
    /// idempotency entry).
    pub fn session_id(&self) -> Option<SessionId> {
        match self {
            Command::Keepalive(Keepalive { session_id })
            | Command::CloseSession(CloseSession { session_id })
            | Command::Release(Release { session_id, .. })
            | Command::Withdraw(Withdraw { session_id, .. }) => Some(*session_id),
            Command::Acquire(Acquire {
                owner: Owner::Session(id),
                ..
            }) => Some(*id),
            _ => None,
        }
    }
}

/// Opens a session; its id is the entry's log index.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpenSession {
    pub ttl_ms: u64,
    pub name: String,
}

/// Renews a session's lease (the leader's [`super::LeaseTracker`] keeps
/// the time; the state machine only checks the session is live).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Keepalive {
    pub session_id: SessionId,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CloseSession {
    pub session_id: SessionId,
}

/// Proposed by the leader's [`super::LeaseTracker`]; ids no longer live
/// are ignored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExpireSessions {
    pub session_ids: Vec<SessionId>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Acquire {
    pub lock: String,
    pub owner: Owner,
    pub mode: Mode,
    /// 0 is a try-lock.
    pub wait_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Release {
    pub lock: String,
    pub session_id: SessionId,
    /// None: whatever grant the session holds.
    pub fencing_token: Option<FencingToken>,
}

/// The waiting request ended (client gone or `wait_ms` passed on the
/// leader): leave the queue if still in it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Withdraw {
    pub lock: String,
    pub session_id: SessionId,
}

/// The fields of [`Command::KvPut`] and [`Command::KvAppend`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvWrite {
    pub key: String,
    pub value: String,
    pub fence: Option<Fence>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StackPush {
    pub stack: String,
    pub value: String,
    pub fence: Option<Fence>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StackPop {
    pub stack: String,
    pub fence: Option<Fence>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StackDelete {
    pub stack: String,
    pub fence: Option<Fence>,
}

/// Settings that change how every replica applies entries, so they travel
/// through the log (the leader proposes its configured values when they
/// differ from the state's).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Configure {
    /// Bound on kept idempotency outcomes (the oldest is evicted past it).
    pub idempotency_keys_max: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn envelope_round_trips() {
        let env = Envelope {
            now_ms: 42,
            idempotency: Some(Idempotency {
                key: "k".into(),
                fingerprint: 7,
                acked_below: Some(3),
            }),
            command: Command::Acquire(Acquire {
                lock: "a/b".into(),
                owner: Owner::Ephemeral { ttl_ms: 30_000 },
                mode: Mode::Shared,
                wait_ms: 5,
            }),
        };
        assert_eq!(Envelope::from_bytes(&env.to_bytes()), Ok(env));
    }

    #[test]
    fn idempotency_key_seq_accepts_only_canonical_prefix_dash_seq() {
        assert_eq!(idempotency_key_seq("ab12-7"), Some(("ab12", 7)));
        assert_eq!(idempotency_key_seq("a-b-0"), Some(("a-b", 0)));
        for bad in [
            "7",
            "-7",
            "a-",
            "a-07",
            "a-+7",
            "a-x",
            "a-99999999999999999999",
        ] {
            assert_eq!(idempotency_key_seq(bad), None, "{bad}");
        }
    }

    proptest! {
        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
            let _ = Envelope::from_bytes(&bytes);
        }
    }
}
