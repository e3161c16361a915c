//! Session bodies, and [`SessionId`]: a u64 that is a decimal string on the wire.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::limits::SESSION_TTL_MS_DEFAULT;
use crate::lock::LockMode;

/// A session id: a u64 inside, a decimal string in JSON (so JavaScript
/// clients, whose numbers stop at 2^53, never round it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SessionId(pub u64);

// A session id is a decimal string on the wire, whatever the Rust type is.
#[cfg(feature = "openapi")]
impl utoipa::PartialSchema for SessionId {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .pattern(Some("^[0-9]{1,20}$"))
            .description(Some("A session id: the decimal string of a u64."))
            .into()
    }
}

#[cfg(feature = "openapi")]
impl utoipa::ToSchema for SessionId {}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A session id string that is not the decimal of a u64.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("session id {0:?} is not a decimal u64")]
pub struct SessionIdError(pub String);

impl FromStr for SessionId {
    type Err = SessionIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        // u64::from_str accepts a leading '+'; one id must have one spelling.
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(SessionIdError(s.to_owned()));
        }
        s.parse::<u64>()
            .map(SessionId)
            .map_err(|_| SessionIdError(s.to_owned()))
    }
}

impl Serialize for SessionId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for SessionId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

fn session_ttl_ms_default() -> u64 {
    SESSION_TTL_MS_DEFAULT
}

/// `POST /v1/sessions` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CreateSessionRequest {
    /// Lease length, in `SESSION_TTL_MS_MIN..=SESSION_TTL_MS_MAX`; default 10000.
    #[serde(default = "session_ttl_ms_default")]
    pub ttl_ms: u64,
    /// A label for humans (shown as `session_name` on holders).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// `POST /v1/sessions` answer (201).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CreateSessionResponse {
    pub session_id: SessionId,
    /// The session's configured TTL.
    pub ttl_ms: u64,
}

/// `POST /v1/sessions/{id}/keepalive` body: empty or `{}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct KeepaliveRequest {}

/// `POST /v1/sessions/{id}/keepalive` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct KeepaliveResponse {
    /// The session's configured TTL (the lease now runs that long again).
    pub ttl_ms: u64,
}

/// A lock a session holds, in [`SessionInfo`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HeldLock {
    pub lock: String,
    pub mode: LockMode,
    pub fencing_token: u64,
}

/// A lock a session waits for, in [`SessionInfo`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WaitingLock {
    pub lock: String,
    pub mode: LockMode,
}

/// `GET /v1/sessions/{id}` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SessionInfo {
    pub session_id: SessionId,
    /// The name given at creation; null if none.
    pub name: Option<String>,
    pub ttl_ms: u64,
    /// Time left on the lease, by the leader's clock.
    pub expires_in_ms: u64,
    pub locks: Vec<HeldLock>,
    pub waiting: Vec<WaitingLock>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::round_trip;
    use serde_json::json;

    #[test]
    fn sessions_round_trip() {
        round_trip(
            json!({"ttl_ms": 10000, "name": "worker-7"}),
            CreateSessionRequest {
                ttl_ms: 10000,
                name: Some("worker-7".into()),
            },
        );
        let defaulted: CreateSessionRequest = serde_json::from_str("{}").unwrap();
        assert_eq!(defaulted.ttl_ms, SESSION_TTL_MS_DEFAULT);
        round_trip(
            json!({"session_id": "18446744073709551615", "ttl_ms": 10000}),
            CreateSessionResponse {
                session_id: SessionId(u64::MAX),
                ttl_ms: 10000,
            },
        );
        round_trip(json!({}), KeepaliveRequest {});
        round_trip(
            json!({"ttl_ms": 10000}),
            KeepaliveResponse { ttl_ms: 10000 },
        );
        round_trip(
            json!({"session_id": "7", "name": "worker-7", "ttl_ms": 10000,
                   "expires_in_ms": 8000,
                   "locks": [{"lock": "a/b", "mode": "exclusive", "fencing_token": 42}],
                   "waiting": [{"lock": "c", "mode": "shared"}]}),
            SessionInfo {
                session_id: SessionId(7),
                name: Some("worker-7".into()),
                ttl_ms: 10000,
                expires_in_ms: 8000,
                locks: vec![HeldLock {
                    lock: "a/b".into(),
                    mode: LockMode::Exclusive,
                    fencing_token: 42,
                }],
                waiting: vec![WaitingLock {
                    lock: "c".into(),
                    mode: LockMode::Shared,
                }],
            },
        );
    }

    #[test]
    fn session_id_is_a_decimal_string() {
        assert!(serde_json::from_value::<SessionId>(json!(7)).is_err());
        assert!(serde_json::from_value::<SessionId>(json!("+7")).is_err());
        assert!(serde_json::from_value::<SessionId>(json!("")).is_err());
        assert!(serde_json::from_value::<SessionId>(json!("18446744073709551616")).is_err());
        assert_eq!("0042".parse::<SessionId>(), Ok(SessionId(42)));
    }
}
