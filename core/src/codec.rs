//! The one binary encoding of deadbolt: postcard payloads guarded by CRC32C-style
//! checksums. Everything that crosses a wire or reaches a disk goes through here,
//! so the format can change in one place.

use serde::{de::DeserializeOwned, Serialize};

/// Why bytes could not be turned back into a value. Bad bytes are an ordinary
/// error, never a panic.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("checksummed record is {len} bytes, shorter than its {CHECKSUM_BYTES}-byte checksum")]
    Truncated { len: usize },
    #[error("checksum mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    ChecksumMismatch { stored: u32, computed: u32 },
    #[error("malformed payload: {0}")]
    Malformed(String),
}

/// Bytes taken by the checksum that [`encode_checked`] appends.
pub const CHECKSUM_BYTES: usize = 4;

/// Encodes a value with postcard.
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
    postcard::to_allocvec(value).expect("postcard encoding into a Vec cannot fail")
}

/// Decodes a value encoded by [`encode`]. Trailing bytes are an error: a record
/// that does not end where its value ends is not the record we wrote.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, DecodeError> {
    let (value, rest) =
        postcard::take_from_bytes(bytes).map_err(|e| DecodeError::Malformed(e.to_string()))?;
    if !rest.is_empty() {
        return Err(DecodeError::Malformed(format!(
            "{} trailing bytes",
            rest.len()
        )));
    }
    Ok(value)
}

/// Encodes a value and appends a little-endian CRC32 of the payload.
pub fn encode_checked<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
    let mut bytes = encode(value);
    let crc = crc32fast::hash(&bytes);
    bytes.extend_from_slice(&crc.to_le_bytes());
    bytes
}

/// Verifies the checksum written by [`encode_checked`] and decodes the payload.
pub fn decode_checked<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, DecodeError> {
    let payload = verify_checksum(bytes)?;
    decode(payload)
}

/// Splits off and verifies a trailing checksum, returning the payload.
pub fn verify_checksum(bytes: &[u8]) -> Result<&[u8], DecodeError> {
    if bytes.len() < CHECKSUM_BYTES {
        return Err(DecodeError::Truncated { len: bytes.len() });
    }
    let (payload, tail) = bytes.split_at(bytes.len() - CHECKSUM_BYTES);
    let stored = u32::from_le_bytes(tail.try_into().expect("tail is CHECKSUM_BYTES long"));
    let computed = crc32fast::hash(payload);
    if stored != computed {
        return Err(DecodeError::ChecksumMismatch { stored, computed });
    }
    Ok(payload)
}

/// CRC32 of some bytes, for callers that frame records themselves.
pub fn checksum(bytes: &[u8]) -> u32 {
    crc32fast::hash(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn checked_round_trip() {
        let value = (7u64, String::from("lock/a"), vec![1u8, 2, 3]);
        let bytes = encode_checked(&value);
        assert_eq!(decode_checked::<(u64, String, Vec<u8>)>(&bytes), Ok(value));
    }

    #[test]
    fn flipped_byte_is_detected() {
        let mut bytes = encode_checked(&(1u64, 2u64));
        bytes[0] ^= 0x40;
        assert!(matches!(
            decode_checked::<(u64, u64)>(&bytes),
            Err(DecodeError::ChecksumMismatch { .. })
        ));
    }

    #[test]
    fn trailing_bytes_are_refused() {
        let mut bytes = encode(&5u32);
        bytes.push(0);
        assert!(matches!(
            decode::<u32>(&bytes),
            Err(DecodeError::Malformed(_))
        ));
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode_checked::<(u64, String, Vec<u8>)>(&bytes);
            let _ = decode::<(u64, Option<String>)>(&bytes);
        }
    }
}
