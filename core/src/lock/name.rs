//! Lock names as the state stores them: short names inline (no heap, and no
//! pointer chase each time the B-tree compares keys, which dominated apply
//! time with 1M live locks), long names in one shared allocation.

use std::borrow::Borrow;
use std::cmp::Ordering;
use std::fmt;
use std::sync::Arc;

/// Names up to this many bytes live inside the 24-byte value.
const INLINE_BYTES: usize = 22;

/// A validated lock name. Ordered, compared and borrowed as its bytes, which
/// orders exactly like `str` (so `BTreeMap<LockName, _>` lists by name and is
/// searched with `name.as_bytes()`).
#[derive(Clone)]
pub(crate) enum LockName {
    Inline { len: u8, bytes: [u8; INLINE_BYTES] },
    Shared(Arc<str>),
}

impl LockName {
    pub(crate) fn new(name: &str) -> Self {
        if name.len() <= INLINE_BYTES {
            let mut bytes = [0u8; INLINE_BYTES];
            bytes[..name.len()].copy_from_slice(name.as_bytes());
            LockName::Inline {
                len: name.len() as u8,
                bytes,
            }
        } else {
            LockName::Shared(Arc::from(name))
        }
    }

    pub(crate) fn as_bytes(&self) -> &[u8] {
        match self {
            LockName::Inline { len, bytes } => &bytes[..*len as usize],
            LockName::Shared(s) => s.as_bytes(),
        }
    }

    pub(crate) fn as_str(&self) -> &str {
        match self {
            LockName::Inline { .. } => {
                std::str::from_utf8(self.as_bytes()).expect("built from a str")
            }
            LockName::Shared(s) => s,
        }
    }
}

impl PartialEq for LockName {
    fn eq(&self, other: &Self) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl Eq for LockName {}

impl PartialOrd for LockName {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for LockName {
    fn cmp(&self, other: &Self) -> Ordering {
        self.as_bytes().cmp(other.as_bytes())
    }
}

impl Borrow<[u8]> for LockName {
    fn borrow(&self) -> &[u8] {
        self.as_bytes()
    }
}

impl fmt::Debug for LockName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for LockName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orders_like_str_and_stays_small() {
        assert_eq!(std::mem::size_of::<LockName>(), 24);
        let names = ["", "a", "a/b", "b", &"x".repeat(22), &"x".repeat(23), "y"];
        for a in names {
            for b in names {
                assert_eq!(LockName::new(a).cmp(&LockName::new(b)), a.cmp(b), "{a} {b}");
            }
            assert_eq!(LockName::new(a).as_str(), a);
        }
    }
}
