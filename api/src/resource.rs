//! Fenced KV and stack bodies.

use serde::{Deserialize, Serialize};

// ---------------------------------------------------------------------------
// Fenced KV
// ---------------------------------------------------------------------------

/// `PUT /v1/kv/{key}` and `POST /v1/kv/{key}/append` body. `lock` and
/// `fencing_token` go together; both absent is an unfenced write.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct KvWriteRequest {
    /// UTF-8, at most `KV_VALUE_BYTES_MAX` (after an append too).
    pub value: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lock: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fencing_token: Option<u64>,
}

/// `PUT /v1/kv/{key}` and `POST /v1/kv/{key}/append` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct KvWriteResponse {
    pub key: String,
    /// Value size in bytes after the write.
    pub size: u64,
    /// Newest token that wrote the key; null if only unfenced writes did.
    pub last_token: Option<u64>,
}

/// `GET /v1/kv/{key}` answer (linearizable).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct KvGetResponse {
    pub value: String,
    /// Newest token that wrote the key; null if only unfenced writes did.
    pub last_token: Option<u64>,
}

// ---------------------------------------------------------------------------
// Stacks
// ---------------------------------------------------------------------------

/// `POST /v1/stacks/{name}/push` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StackPushRequest {
    /// UTF-8, at most `STACK_ELEMENT_BYTES_MAX`.
    pub value: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lock: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fencing_token: Option<u64>,
}

/// `POST /v1/stacks/{name}/push` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StackPushResponse {
    /// Elements after the push.
    pub size: u64,
}

/// `POST /v1/stacks/{name}/pop` body: empty, `{}`, or a fence.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StackPopRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lock: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fencing_token: Option<u64>,
}

/// `POST /v1/stacks/{name}/pop` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StackPopResponse {
    pub value: String,
    /// Elements after the pop.
    pub size: u64,
}

/// `GET /v1/stacks/{name}` answer (linearizable).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct StackGetResponse {
    pub size: u64,
    /// The top element; null when the stack is empty.
    pub top: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::round_trip;
    use serde_json::json;

    #[test]
    fn kv_and_stacks_round_trip() {
        round_trip(
            json!({"value": "v", "lock": "L", "fencing_token": 42}),
            KvWriteRequest {
                value: "v".into(),
                lock: Some("L".into()),
                fencing_token: Some(42),
            },
        );
        round_trip(
            json!({"value": "v"}),
            KvWriteRequest {
                value: "v".into(),
                lock: None,
                fencing_token: None,
            },
        );
        round_trip(
            json!({"key": "k", "size": 1, "last_token": 42}),
            KvWriteResponse {
                key: "k".into(),
                size: 1,
                last_token: Some(42),
            },
        );
        round_trip(
            json!({"value": "v", "last_token": 42}),
            KvGetResponse {
                value: "v".into(),
                last_token: Some(42),
            },
        );
        round_trip(
            json!({"value": "x"}),
            StackPushRequest {
                value: "x".into(),
                lock: None,
                fencing_token: None,
            },
        );
        round_trip(json!({"size": 1}), StackPushResponse { size: 1 });
        round_trip(json!({}), StackPopRequest::default());
        round_trip(
            json!({"value": "x", "size": 0}),
            StackPopResponse {
                value: "x".into(),
                size: 0,
            },
        );
        round_trip(
            json!({"size": 0, "top": null}),
            StackGetResponse { size: 0, top: None },
        );
    }
}
