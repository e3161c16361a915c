//! Builds request paths and query strings: names go into one path segment,
//! so `/` inside a name is sent as `%2F`, as the contract requires.

use std::fmt::Write;

use deadbolt_api::{validate_name, ListLocksQuery};

use crate::Error;

/// Bytes sent as they are inside a path segment or query value. This is RFC
/// 3986 "unreserved" plus `:`, which is legal in a segment and common in
/// names; everything else (`/` first of all) is percent-encoded.
fn is_plain(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~' | b':')
}

/// Percent-encodes `s` for use as one path segment or one query value.
pub fn encode_component(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for byte in s.bytes() {
        if is_plain(byte) {
            out.push(char::from(byte));
        } else {
            write!(out, "%{byte:02X}").expect("writing to a String cannot fail");
        }
    }
    out
}

/// Checks `name` against the contract's name rules and encodes it as a
/// segment.
pub(crate) fn name_segment(name: &str) -> Result<String, Error> {
    validate_name(name).map_err(|reason| Error::InvalidName {
        name: name.to_owned(),
        reason,
    })?;
    Ok(encode_component(name))
}

/// `/v1/locks?...` for a list query.
pub(crate) fn list_locks_path(query: &ListLocksQuery) -> String {
    let mut path = String::from("/v1/locks");
    let mut sep = '?';
    let mut push = |key: &str, value: &str| {
        path.push(sep);
        path.push_str(key);
        path.push('=');
        path.push_str(&encode_component(value));
        sep = '&';
    };
    if let Some(prefix) = &query.prefix {
        push("prefix", prefix);
    }
    if let Some(limit) = query.limit {
        push("limit", &limit.to_string());
    }
    if let Some(after) = &query.after {
        push("after", after);
    }
    path
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slash_is_encoded_in_names() {
        assert_eq!(name_segment("jobs/nightly").unwrap(), "jobs%2Fnightly");
        assert_eq!(name_segment("a:b.c_d-e").unwrap(), "a:b.c_d-e");
        assert!(matches!(name_segment(""), Err(Error::InvalidName { .. })));
        assert!(matches!(
            name_segment("a b"),
            Err(Error::InvalidName { .. })
        ));
        assert_eq!(encode_component("a b%/é"), "a%20b%25%2F%C3%A9");
    }

    #[test]
    fn list_query() {
        assert_eq!(list_locks_path(&ListLocksQuery::default()), "/v1/locks");
        let q = ListLocksQuery {
            prefix: Some("jobs/".into()),
            limit: Some(10),
            after: Some("jobs/a".into()),
        };
        assert_eq!(
            list_locks_path(&q),
            "/v1/locks?prefix=jobs%2F&limit=10&after=jobs%2Fa"
        );
    }
}
