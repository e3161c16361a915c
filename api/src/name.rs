//! Lock, key and stack names: `[A-Za-z0-9._:/-]`, 1..=256 bytes.

use crate::limits::NAME_BYTES_MAX;

/// Why a lock, key or stack name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("name is empty")]
    Empty,
    #[error("name is {len} bytes, longer than {NAME_BYTES_MAX}")]
    TooLong { len: usize },
    #[error("name has byte {byte:#04x} at offset {offset}; allowed are [A-Za-z0-9._:/-]")]
    BadByte { byte: u8, offset: usize },
}

/// Whether `byte` may appear in a name: `[A-Za-z0-9._:/-]`.
pub fn is_name_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'_' | b':' | b'/' | b'-')
}

/// Checks a lock, key or stack name: 1..=256 bytes of `[A-Za-z0-9._:/-]`.
pub fn validate_name(name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    if name.len() > NAME_BYTES_MAX {
        return Err(NameError::TooLong { len: name.len() });
    }
    match name.bytes().enumerate().find(|&(_, b)| !is_name_byte(b)) {
        Some((offset, byte)) => Err(NameError::BadByte { byte, offset }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(validate_name("jobs/nightly-1.x:y_z"), Ok(()));
        assert_eq!(validate_name(""), Err(NameError::Empty));
        assert_eq!(validate_name(&"a".repeat(256)), Ok(()));
        assert_eq!(
            validate_name(&"a".repeat(257)),
            Err(NameError::TooLong { len: 257 })
        );
        assert_eq!(
            validate_name("a b"),
            Err(NameError::BadByte {
                byte: b' ',
                offset: 1
            })
        );
        assert_eq!(
            validate_name("é"),
            Err(NameError::BadByte {
                byte: 0xc3,
                offset: 0
            })
        );
        assert!(validate_name("a%2Fb").is_err());
    }
}
