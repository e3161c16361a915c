//! The peer wire format: length-prefixed, versioned, checksummed frames whose
//! body is a postcard-encoded [`WireFrame`] (through `deadbolt_core::codec`).
//!
//! Layout: `len: u32 BE | version: u8 | body | crc32 LE (of version and body)`,
//! where `len` counts everything after itself. The length comes first so a
//! reader can refuse an oversized frame before buffering it.

use bytes::{Buf, BytesMut};
use deadbolt_core::codec;
use deadbolt_core::raft::{LogIndex, NodeId};
use serde::{de::DeserializeOwned, Deserialize, Serialize};

/// Largest frame accepted or sent, counting everything after the length
/// prefix. A Raft message larger than this (a huge append or snapshot chunk)
/// is a bug in the sender's batching, not something to buffer.
pub const FRAME_BYTES_MAX: usize = 8 * 1024 * 1024;
/// Version of the frame layout itself (the byte after the length).
pub const FRAME_VERSION: u8 = 1;
/// Version of the peer protocol, checked in the handshake. 2: the hello
/// carries the sender's incarnation and a listener answers a refused hello
/// with [`WireFrame::Refused`] (a version-1 hello does not decode). 3: a
/// refusal may tell the dialler it was removed (`Refusal::removed_at`), and
/// cluster ids carry the founding nonce once committed.
pub const PROTOCOL_VERSION: u32 = 3;

const LEN_BYTES: usize = 4;
const VERSION_BYTES: usize = 1;
/// Smallest legal value of the length prefix: version, an empty body, checksum.
const FRAME_BYTES_MIN: usize = VERSION_BYTES + codec::CHECKSUM_BYTES;

/// The first frame on every connection, sent by both ends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    pub cluster_id: String,
    pub node_id: NodeId,
    pub protocol_version: u32,
    /// The random id of the sender's data dir (0: none configured).
    pub incarnation: u64,
}

/// A listener's answer to a hello it refuses, instead of its own hello, so
/// the dialler learns why (and a founder starting on an empty data dir
/// learns that its peers hold the cluster).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refusal {
    pub reason: String,
    /// Set when the refusal is an incarnation mismatch: the incarnation the
    /// listener's membership records for the dialler.
    pub recorded_incarnation: Option<u64>,
    /// Set when the dialler is not a member of the listener's committed
    /// membership: the listener's commit index. A dialler whose own
    /// committed membership, at a commit index not above it, includes
    /// itself has been removed since.
    pub removed_at: Option<LogIndex>,
    /// The listener's cluster id (empty where a refusal does not need it):
    /// a dialler believes a removal only from its own cluster.
    pub cluster_id: String,
}

/// What a frame carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum WireFrame<M> {
    Hello(Hello),
    Message(M),
    /// Sent on an idle connection so the receiver's read deadline does not
    /// close a healthy link.
    Ping,
    /// A listener refuses the dialler's hello (then closes).
    Refused(Refusal),
}

/// Why bytes on a connection are not a frame. Any of these closes the connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("frame of {len} bytes exceeds the {FRAME_BYTES_MAX}-byte limit")]
    TooLarge { len: usize },
    #[error("frame of {len} bytes is shorter than the {FRAME_BYTES_MIN}-byte minimum")]
    TooShort { len: usize },
    #[error("unsupported frame version {0} (expected {FRAME_VERSION})")]
    Version(u8),
    #[error("frame checksum mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    Checksum { stored: u32, computed: u32 },
    #[error("malformed frame body: {0}")]
    Malformed(String),
}

/// Appends one encoded frame to `out`; refuses (and leaves `out` unchanged)
/// a frame that would exceed [`FRAME_BYTES_MAX`].
pub fn encode_frame<M: Serialize>(
    frame: &WireFrame<M>,
    out: &mut Vec<u8>,
) -> Result<(), FrameError> {
    let body = codec::encode(frame);
    let len = VERSION_BYTES + body.len() + codec::CHECKSUM_BYTES;
    if len > FRAME_BYTES_MAX {
        return Err(FrameError::TooLarge { len });
    }
    let len_prefix = u32::try_from(len).expect("FRAME_BYTES_MAX fits in u32");
    out.reserve(LEN_BYTES + len);
    out.extend_from_slice(&len_prefix.to_be_bytes());
    let start = out.len();
    out.push(FRAME_VERSION);
    out.extend_from_slice(&body);
    let crc = codec::checksum(&out[start..]);
    out.extend_from_slice(&crc.to_le_bytes());
    Ok(())
}

/// Takes one complete frame off the front of `buf`. `Ok(None)` means more
/// bytes are needed; an error means the stream is not ours (or is damaged)
/// and the connection must close. Never panics, whatever `buf` holds.
pub fn decode_frame<M: DeserializeOwned>(
    buf: &mut BytesMut,
) -> Result<Option<WireFrame<M>>, FrameError> {
    let Some(prefix) = buf.get(..LEN_BYTES) else {
        return Ok(None);
    };
    let len = u32::from_be_bytes(prefix.try_into().expect("slice is LEN_BYTES long")) as usize;
    if len > FRAME_BYTES_MAX {
        return Err(FrameError::TooLarge { len });
    }
    if len < FRAME_BYTES_MIN {
        return Err(FrameError::TooShort { len });
    }
    if buf.len() < LEN_BYTES + len {
        return Ok(None);
    }
    buf.advance(LEN_BYTES);
    let frame = buf.split_to(len);
    let (checked, crc) = frame.split_at(len - codec::CHECKSUM_BYTES);
    let stored = u32::from_le_bytes(crc.try_into().expect("CHECKSUM_BYTES long"));
    let computed = codec::checksum(checked);
    if stored != computed {
        return Err(FrameError::Checksum { stored, computed });
    }
    if checked[0] != FRAME_VERSION {
        return Err(FrameError::Version(checked[0]));
    }
    codec::decode(&checked[VERSION_BYTES..])
        .map(Some)
        .map_err(|e| FrameError::Malformed(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    type Msg = (u64, String, Vec<u8>);

    fn hello() -> WireFrame<Msg> {
        WireFrame::Hello(Hello {
            cluster_id: "c".into(),
            node_id: 2,
            protocol_version: PROTOCOL_VERSION,
            incarnation: 9,
        })
    }

    #[test]
    fn frames_round_trip_across_arbitrary_splits() {
        let frames = vec![
            hello(),
            WireFrame::Message((7, "x".into(), vec![1, 2, 3])),
            WireFrame::Ping,
        ];
        let mut wire = Vec::new();
        for f in &frames {
            encode_frame(f, &mut wire).unwrap();
        }
        for split in 0..wire.len() {
            let mut buf = BytesMut::new();
            let mut got = Vec::new();
            for chunk in [&wire[..split], &wire[split..]] {
                buf.extend_from_slice(chunk);
                while let Some(f) = decode_frame::<Msg>(&mut buf).unwrap() {
                    got.push(f);
                }
            }
            assert_eq!(got, frames);
            assert!(buf.is_empty());
        }
    }

    #[test]
    fn damaged_frames_are_errors() {
        let mut wire = Vec::new();
        encode_frame(&hello(), &mut wire).unwrap();
        let mut flipped = BytesMut::from(&wire[..]);
        flipped[6] ^= 1;
        assert!(matches!(
            decode_frame::<Msg>(&mut flipped),
            Err(FrameError::Checksum { .. })
        ));
        let mut huge = BytesMut::from(&u32::MAX.to_be_bytes()[..]);
        assert!(matches!(
            decode_frame::<Msg>(&mut huge),
            Err(FrameError::TooLarge { .. })
        ));
        let big = WireFrame::Message((0u64, String::new(), vec![0u8; FRAME_BYTES_MAX]));
        let mut out = Vec::new();
        assert!(matches!(
            encode_frame(&big, &mut out),
            Err(FrameError::TooLarge { .. })
        ));
        assert!(out.is_empty());
    }

    proptest! {
        #[test]
        fn decoder_never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let mut buf = BytesMut::from(&bytes[..]);
            // Decode until the decoder wants more bytes or gives up.
            while let Ok(Some(_)) = decode_frame::<Msg>(&mut buf) {}
        }

        #[test]
        fn decoder_never_panics_on_valid_prefix_and_garbage(
            len in 0u32..2048,
            version in any::<u8>(),
            body in proptest::collection::vec(any::<u8>(), 0..2048),
        ) {
            let mut buf = BytesMut::new();
            buf.extend_from_slice(&len.to_be_bytes());
            buf.extend_from_slice(&[version]);
            buf.extend_from_slice(&body);
            while let Ok(Some(_)) = decode_frame::<Msg>(&mut buf) {}
        }

        #[test]
        fn messages_round_trip(msg in (any::<u64>(), ".{0,40}", proptest::collection::vec(any::<u8>(), 0..300))) {
            let mut wire = Vec::new();
            encode_frame(&WireFrame::Message(msg.clone()), &mut wire).unwrap();
            let mut buf = BytesMut::from(&wire[..]);
            prop_assert_eq!(decode_frame::<Msg>(&mut buf), Ok(Some(WireFrame::Message(msg))));
        }
    }
}
