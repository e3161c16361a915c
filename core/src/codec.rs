//! The one binary encoding of deadbolt: postcard payloads guarded by CRC32C-style
//! checksums. Everything that crosses a wire or reaches a disk goes through here,
//! so the format can change in one place. Also the one stable hash of bytes
//! ([`fnv1a64`]) and of an encoded value ([`encoded_hash`]).

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

/// FNV-1a, 64 bit, fed in pieces: a fixed function (no per-process key,
/// unlike std's `DefaultHasher`), so the same bytes hash the same on every
/// node, in every process and after an upgrade. Used for request
/// fingerprints, founder cluster ids, applied-entry hashes and simulation
/// trace hashes. Not for adversarial input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fnv1a64 {
    hash: u64,
}

impl Fnv1a64 {
    /// The hash of no bytes.
    pub const OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;

    pub const fn new() -> Self {
        Self {
            hash: Self::OFFSET_BASIS,
        }
    }

    /// Feeds `bytes`; feeding in pieces equals feeding them joined.
    pub fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.hash ^= u64::from(byte);
            self.hash = self.hash.wrapping_mul(Self::PRIME);
        }
    }

    /// The hash of everything fed so far.
    pub fn finish(&self) -> u64 {
        self.hash
    }
}

impl Default for Fnv1a64 {
    fn default() -> Self {
        Self::new()
    }
}

/// FNV-1a (64-bit) of some bytes; see [`Fnv1a64`].
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut hasher = Fnv1a64::new();
    hasher.write(bytes);
    hasher.finish()
}

/// [`fnv1a64`] of a value's [`encode`]d bytes: the same on every node for
/// the same value (e.g. a Raft log entry's `entry_hash`).
pub fn encoded_hash<T: Serialize + ?Sized>(value: &T) -> u64 {
    fnv1a64(&encode(value))
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

    #[test]
    fn fnv1a64_matches_the_reference_values() {
        // From the FNV reference test vectors.
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x8594_4171_f739_67e8);
        let mut pieces = Fnv1a64::new();
        pieces.write(b"foo");
        pieces.write(b"");
        pieces.write(b"bar");
        assert_eq!(pieces.finish(), fnv1a64(b"foobar"));
        assert_eq!(encoded_hash(&7u8), fnv1a64(&[7]));
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode_checked::<(u64, String, Vec<u8>)>(&bytes);
            let _ = decode::<(u64, Option<String>)>(&bytes);
        }
    }
}
