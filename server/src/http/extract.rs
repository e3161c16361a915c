//! Request extractors that answer in the API's own terms: JSON bodies whose
//! errors name the field, the `Request-Timeout-Ms` deadline, the
//! `Idempotency-Key` with its fingerprint, path and query parameters. Every
//! rejection is an [`ApiError`], so nothing reaches the client as axum's
//! plain-text defaults.

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method, StatusCode};
use deadbolt_api::{
    validate_name, ErrorCode, HEADER_IDEMPOTENCY_ACKED_BELOW, HEADER_IDEMPOTENCY_KEY,
    HEADER_REQUEST_TIMEOUT_MS, IDEMPOTENCY_KEY_BYTES_MAX, REQUEST_TIMEOUT_MS_DEFAULT,
    REQUEST_TIMEOUT_MS_MAX,
};
use deadbolt_core::codec::Fnv1a64;
use deadbolt_core::lock::{idempotency_key_seq, Idempotency};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::error::ApiError;

/// The request's deadline from `Request-Timeout-Ms` (default 5 s, 1..=60000).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Deadline(pub(crate) Duration);

/// Parses `Request-Timeout-Ms`; absent means the default.
pub(crate) fn parse_deadline(headers: &HeaderMap) -> Result<Deadline, ApiError> {
    let Some(value) = headers.get(HEADER_REQUEST_TIMEOUT_MS) else {
        return Ok(Deadline(Duration::from_millis(REQUEST_TIMEOUT_MS_DEFAULT)));
    };
    let field = HEADER_REQUEST_TIMEOUT_MS;
    let ms: u64 = value
        .to_str()
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .ok_or_else(|| ApiError::invalid(field, "must be an integer number of milliseconds"))?;
    if !(1..=REQUEST_TIMEOUT_MS_MAX).contains(&ms) {
        return Err(ApiError::invalid(
            field,
            format!("{ms} is outside 1..={REQUEST_TIMEOUT_MS_MAX}"),
        ));
    }
    Ok(Deadline(Duration::from_millis(ms)))
}

impl<S: Send + Sync> FromRequestParts<S> for Deadline {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        parse_deadline(&parts.headers)
    }
}

/// Parses `Idempotency-Key`: absent is fine, longer than 128 bytes or not
/// visible ASCII is 400.
pub(crate) fn parse_idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get(HEADER_IDEMPOTENCY_KEY) else {
        return Ok(None);
    };
    let field = HEADER_IDEMPOTENCY_KEY;
    let key = value
        .to_str()
        .map_err(|_| ApiError::invalid(field, "must be visible ASCII"))?;
    if key.is_empty() {
        return Err(ApiError::invalid(field, "must not be empty"));
    }
    if key.len() > IDEMPOTENCY_KEY_BYTES_MAX {
        return Err(ApiError::invalid(
            field,
            format!(
                "is {} bytes, longer than {IDEMPOTENCY_KEY_BYTES_MAX}",
                key.len()
            ),
        ));
    }
    Ok(Some(key.to_owned()))
}

/// Parses `Idempotency-Acked-Below` for the request's `key`: absent is None;
/// not a u64, or above the key's own seq (a client cannot have the outcome of
/// a call it has not made yet), is 400. With no key, or a key not of the form
/// `<prefix>-<seq>`, a valid value is ignored (None), as the contract says.
pub(crate) fn parse_acked_below(
    headers: &HeaderMap,
    key: Option<&str>,
) -> Result<Option<u64>, ApiError> {
    let Some(value) = headers.get(HEADER_IDEMPOTENCY_ACKED_BELOW) else {
        return Ok(None);
    };
    let field = HEADER_IDEMPOTENCY_ACKED_BELOW;
    let acked_below: u64 = value
        .to_str()
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .ok_or_else(|| ApiError::invalid(field, "must be a non-negative integer"))?;
    let Some((_, seq)) = key.and_then(idempotency_key_seq) else {
        return Ok(None);
    };
    if acked_below > seq {
        return Err(ApiError::invalid(
            field,
            format!("{acked_below} is above the Idempotency-Key's sequence number {seq}"),
        ));
    }
    Ok(Some(acked_below))
}

/// FNV-1a, 64 bit: a fixed function (no per-process seed), so every node
/// computes the same fingerprint for the same request, today and after an
/// upgrade. Parts are separated by a 0xff byte, which UTF-8 never contains.
pub fn fingerprint(method: &Method, path: &str, canonical_body: &[u8]) -> u64 {
    let mut hash = Fnv1a64::new();
    for part in [method.as_str().as_bytes(), path.as_bytes(), canonical_body] {
        hash.write(part);
        hash.write(&[0xff]);
    }
    hash.finish()
}

/// Percent-decodes a request path so that `%2f` and `%2F` fingerprint the
/// same. Invalid escapes are kept as written.
pub(crate) fn decode_path(path: &str) -> String {
    let bytes = path.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parses a JSON body; an empty body reads as `{}` (keepalive, pop and the
/// other endpoints whose fields are all optional accept it). Errors name the
/// field: `mode: unknown variant ...`, `session_id: missing`, and a field no
/// body type knows (`sesion_id`) is refused rather than ignored: ignoring it
/// would run the request with a default in its place (a throwaway session
/// instead of the one meant). Done here, not with `deny_unknown_fields` on
/// each type, so it holds for every body at once, while the same types stay
/// lenient where the client reads them (answers may grow).
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let bytes: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        bytes
    };
    // serde would also read a struct from a JSON array; the API speaks objects.
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(ApiError::invalid("body", "must be a JSON object"));
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let mut unknown: Option<String> = None;
    let mut note_unknown = |path: serde_ignored::Path<'_>| {
        unknown.get_or_insert_with(|| path.to_string());
    };
    let tracked = serde_ignored::Deserializer::new(&mut de, &mut note_unknown);
    let value = serde_path_to_error::deserialize::<_, T>(tracked).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let text = inner.to_string();
        // "." is the root; "?" means serde_json stopped before knowing where.
        let field = if path == "." || path == "?" {
            // serde reports a missing field at its parent; name it anyway.
            text.split_once("missing field `")
                .and_then(|(_, rest)| rest.split_once('`'))
                .map(|(name, _)| name.to_owned())
                .unwrap_or_else(|| "body".to_owned())
        } else {
            path
        };
        ApiError::invalid(field, text)
    })?;
    if let Some(field) = unknown {
        return Err(ApiError::invalid(
            field,
            "unknown field (a misspelling?); this body has no such field",
        ));
    }
    de.end().map_err(|e| {
        ApiError::invalid("body", format!("trailing data after the JSON value: {e}"))
    })?;
    Ok(value)
}

/// Reads the body within the request's deadline, so a client that trickles
/// its body cannot hold a connection slot and a handler forever.
async fn read_body<S: Send + Sync>(
    request: Request,
    state: &S,
    deadline: Duration,
) -> Result<Bytes, ApiError> {
    let read = Bytes::from_request(request, state);
    let Ok(result) = tokio::time::timeout(deadline, read).await else {
        return Err(ApiError::invalid(
            "body",
            "not received within the request deadline",
        ));
    };
    result.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                ErrorCode::PayloadTooLarge,
                "the request body is larger than this server's limit",
            )
        } else {
            ApiError::invalid("body", rejection.body_text())
        }
    })
}

/// A JSON body, for endpoints that do not mutate (validate).
#[derive(Debug)]
pub(crate) struct JsonBody<T>(pub(crate) T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;
    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        let Deadline(deadline) = parse_deadline(request.headers())?;
        let bytes = read_body(request, state, deadline).await?;
        parse_json(&bytes).map(JsonBody)
    }
}

/// A mutating request: its typed body, its deadline and its idempotency key
/// with the request's fingerprint (method, decoded path and the body
/// re-serialized from the typed value, so whitespace and field order do not
/// change it while any difference in meaning does).
#[derive(Debug)]
pub(crate) struct Mutation<T> {
    pub(crate) body: T,
    pub(crate) deadline: Duration,
    pub(crate) idempotency: Option<Idempotency>,
}

impl<T: DeserializeOwned + Serialize, S: Send + Sync> FromRequest<S> for Mutation<T> {
    type Rejection = ApiError;
    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        let Deadline(deadline) = parse_deadline(request.headers())?;
        let key = parse_idempotency_key(request.headers())?;
        let acked_below = parse_acked_below(request.headers(), key.as_deref())?;
        let method = request.method().clone();
        let path = decode_path(request.uri().path());
        let bytes = read_body(request, state, deadline).await?;
        let body: T = parse_json(&bytes)?;
        let idempotency = key.map(|key| {
            let canonical = serde_json::to_vec(&body).expect("a parsed body serializes");
            Idempotency {
                key,
                fingerprint: fingerprint(&method, &path, &canonical),
                acked_below,
            }
        });
        Ok(Mutation {
            body,
            deadline,
            idempotency,
        })
    }
}

/// One path parameter; a value axum cannot decode is 400, not plain text.
#[derive(Debug)]
pub(crate) struct PathParam<T>(pub(crate) T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for PathParam<T> {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Path::<T>::from_request_parts(parts, state)
            .await
            .map(|Path(value)| PathParam(value))
            .map_err(|rejection| ApiError::invalid("path", rejection.body_text()))
    }
}

/// A query string; errors name the parameter when serde says which.
#[derive(Debug)]
pub(crate) struct QueryParams<T>(pub(crate) T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for QueryParams<T> {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        Query::<T>::try_from_uri(&parts.uri)
            .map(|Query(value)| QueryParams(value))
            .map_err(|rejection| {
                let text = rejection.body_text();
                let detail = text
                    .strip_prefix("Failed to deserialize query string: ")
                    .unwrap_or(&text);
                match detail.split_once(": ") {
                    Some((field, message))
                        if field.bytes().all(|b| b.is_ascii_lowercase() || b == b'_') =>
                    {
                        ApiError::invalid(field, message)
                    }
                    _ => ApiError::invalid("query", detail),
                }
            })
    }
}

/// Checks a lock, key or stack name, naming `field` when it is refused.
pub(crate) fn check_name(field: &str, name: &str) -> Result<(), ApiError> {
    validate_name(name).map_err(|e| ApiError::invalid(field, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use deadbolt_api::{AcquireRequest, CreateSessionRequest};

    #[test]
    fn fingerprint_is_stable_and_sensitive() {
        let a = fingerprint(&Method::POST, "/v1/locks/a/acquire", br#"{"wait_ms":0}"#);
        assert_eq!(
            a,
            fingerprint(&Method::POST, "/v1/locks/a/acquire", br#"{"wait_ms":0}"#)
        );
        assert_ne!(
            a,
            fingerprint(&Method::PUT, "/v1/locks/a/acquire", br#"{"wait_ms":0}"#)
        );
        assert_ne!(
            a,
            fingerprint(&Method::POST, "/v1/locks/b/acquire", br#"{"wait_ms":0}"#)
        );
        assert_ne!(
            a,
            fingerprint(&Method::POST, "/v1/locks/a/acquire", br#"{"wait_ms":1}"#)
        );
        // Moving bytes between parts changes it (the separator).
        assert_ne!(
            fingerprint(&Method::POST, "/x", b"y"),
            fingerprint(&Method::POST, "/xy", b"")
        );
        // The FNV-1a reference value of the empty input, with our separators.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in b"GET\xff\xff\xff" {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x100_0000_01b3);
        }
        assert_eq!(fingerprint(&Method::GET, "", b""), h);
    }

    #[test]
    fn canonical_bodies_ignore_spelling() {
        let one: AcquireRequest = parse_json(br#"{ "wait_ms": 5, "mode": "shared" }"#).unwrap();
        let two: AcquireRequest = parse_json(br#"{"mode":"shared","wait_ms":5}"#).unwrap();
        assert_eq!(
            serde_json::to_vec(&one).unwrap(),
            serde_json::to_vec(&two).unwrap()
        );
    }

    #[test]
    fn json_errors_name_the_field() {
        let e = parse_json::<AcquireRequest>(br#"{"mode": "sideways"}"#).unwrap_err();
        assert_eq!(e.details.field.as_deref(), Some("mode"));
        let e = parse_json::<AcquireRequest>(br#"{"wait_ms": "soon"}"#).unwrap_err();
        assert_eq!(e.details.field.as_deref(), Some("wait_ms"));
        let e = parse_json::<AcquireRequest>(br#"{"session_id": 7}"#).unwrap_err();
        assert_eq!(e.details.field.as_deref(), Some("session_id"));
        let e = parse_json::<deadbolt_api::ReleaseRequest>(b"{}").unwrap_err();
        assert_eq!(e.details.field.as_deref(), Some("session_id"));
        let e = parse_json::<CreateSessionRequest>(b"{").unwrap_err();
        assert_eq!(e.details.field.as_deref(), Some("body"));
        let e = parse_json::<CreateSessionRequest>(b"{} x").unwrap_err();
        assert_eq!(e.details.field.as_deref(), Some("body"));
        assert!(parse_json::<CreateSessionRequest>(b"").is_ok());
    }

    #[test]
    fn unknown_fields_are_refused_by_name() {
        let e = parse_json::<AcquireRequest>(br#"{"sesion_id": "999"}"#).unwrap_err();
        assert_eq!(e.details.field.as_deref(), Some("sesion_id"));
        assert!(
            e.message.starts_with("sesion_id: unknown field"),
            "{}",
            e.message
        );
        // Bodies without fields of their own too (keepalive, session DELETE).
        let e = parse_json::<deadbolt_api::KeepaliveRequest>(br#"{"ttl": 1}"#).unwrap_err();
        assert_eq!(e.details.field.as_deref(), Some("ttl"));
        let e = parse_json::<deadbolt_api::EmptyResponse>(br#"{"x": 1}"#).unwrap_err();
        assert_eq!(e.details.field.as_deref(), Some("x"));
        let known = parse_json::<AcquireRequest>(br#"{"session_id": "9", "wait_ms": 5}"#);
        assert_eq!(known.expect("known fields").wait_ms, 5);
        assert!(parse_json::<CreateSessionRequest>(b" \n").is_ok());
    }

    #[test]
    fn deadlines() {
        let mut h = HeaderMap::new();
        assert_eq!(parse_deadline(&h).unwrap().0, Duration::from_secs(5));
        h.insert(HEADER_REQUEST_TIMEOUT_MS, "60000".parse().unwrap());
        assert_eq!(parse_deadline(&h).unwrap().0, Duration::from_secs(60));
        for bad in ["0", "60001", "-1", "soon", ""] {
            h.insert(HEADER_REQUEST_TIMEOUT_MS, bad.parse().unwrap());
            let e = parse_deadline(&h).unwrap_err();
            assert_eq!(
                e.details.field.as_deref(),
                Some(HEADER_REQUEST_TIMEOUT_MS),
                "{bad}"
            );
        }
    }

    #[test]
    fn idempotency_keys() {
        let mut h = HeaderMap::new();
        assert_eq!(parse_idempotency_key(&h).unwrap(), None);
        h.insert(HEADER_IDEMPOTENCY_KEY, "k".repeat(128).parse().unwrap());
        assert_eq!(
            parse_idempotency_key(&h).unwrap().map(|k| k.len()),
            Some(128)
        );
        h.insert(HEADER_IDEMPOTENCY_KEY, "k".repeat(129).parse().unwrap());
        assert!(parse_idempotency_key(&h).is_err());
    }

    #[test]
    fn acked_below_is_validated_against_the_key() {
        let mut h = HeaderMap::new();
        assert_eq!(parse_acked_below(&h, Some("c-5")).unwrap(), None);
        h.insert(HEADER_IDEMPOTENCY_ACKED_BELOW, "5".parse().unwrap());
        assert_eq!(parse_acked_below(&h, Some("c-5")).unwrap(), Some(5));
        // Keys of another form (or none): the header changes nothing.
        assert_eq!(parse_acked_below(&h, Some("plain")).unwrap(), None);
        assert_eq!(parse_acked_below(&h, None).unwrap(), None);
        // An ack of a reply the client cannot have had yet.
        let e = parse_acked_below(&h, Some("c-4")).unwrap_err();
        assert_eq!(
            e.details.field.as_deref(),
            Some(HEADER_IDEMPOTENCY_ACKED_BELOW)
        );
        for bad in ["-1", "x", "", "18446744073709551616"] {
            h.insert(HEADER_IDEMPOTENCY_ACKED_BELOW, bad.parse().unwrap());
            let e = parse_acked_below(&h, Some("c-5")).unwrap_err();
            assert_eq!(
                e.details.field.as_deref(),
                Some(HEADER_IDEMPOTENCY_ACKED_BELOW),
                "{bad}"
            );
        }
    }

    #[test]
    fn paths_decode_for_fingerprints() {
        assert_eq!(
            decode_path("/v1/locks/a%2Fb/acquire"),
            "/v1/locks/a/b/acquire"
        );
        assert_eq!(decode_path("/v1/locks/a%2fb"), "/v1/locks/a/b");
        assert_eq!(decode_path("/x%2"), "/x%2");
        assert_eq!(decode_path("/x%zz"), "/x%zz");
    }
}
