//! `length` framing: a big-endian header that counts the payload only, then the payload.
//!
//! ```text
//! u32 (default):                       u16 (--length-bytes 2):
//! +--------+--------+--------+--------+   +--------+--------+
//! |      payload length (BE)          |   | length (BE)     |
//! +--------+--------+--------+--------+   +--------+--------+
//! |      payload ...                  |   | payload ...     |
//! +-----------------------------------+   +-----------------+
//! ```
//!
//! The header is checked against the limit before anything is kept, and nothing is ever
//! reserved for the announced size: the buffer grows with the bytes that actually arrive.
//! tokio-util's `LengthDelimitedCodec` (still the encoder here) reserves the whole announced
//! frame as soon as the header arrives, so 2,000 peers that send a 1 MiB header and nothing
//! else would cost 2 GB of address space. Errors name the size and the limit, and a reply that
//! does not fit the header width or the limit is refused, never sent with a wrapped header.

use bytes::{Buf, Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder, LengthDelimitedCodec};

use super::FrameError;

/// The width of the length header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum LengthWidth {
    /// Two bytes: frames of up to 65,535 bytes.
    U16,
    /// Four bytes (the default).
    #[default]
    U32,
}

impl LengthWidth {
    /// Header size in bytes.
    pub fn bytes(self) -> usize {
        match self {
            LengthWidth::U16 => 2,
            LengthWidth::U32 => 4,
        }
    }

    /// The largest payload the header can count.
    pub fn max_payload(self) -> u64 {
        match self {
            LengthWidth::U16 => u64::from(u16::MAX),
            LengthWidth::U32 => u64::from(u32::MAX),
        }
    }
}

/// Decodes and encodes length-prefixed frames.
///
/// ```
/// use bytes::BytesMut;
/// use tokio_util::codec::{Decoder, Encoder};
/// use socketkit::codec::{LengthCodec, LengthWidth};
///
/// let mut codec = LengthCodec::new(LengthWidth::U16, 1024);
/// let mut wire = BytesMut::new();
/// codec.encode(&b"Hi!"[..], &mut wire)?;
/// assert_eq!(&wire[..], b"\x00\x03Hi!");
/// assert_eq!(&codec.decode(&mut wire)?.unwrap()[..], b"Hi!");
/// # Ok::<(), socketkit::codec::FrameError>(())
/// ```
#[derive(Debug)]
pub struct LengthCodec {
    inner: LengthDelimitedCodec,
    width: LengthWidth,
    /// The most one frame may carry: the smaller of the limit and what the header can count.
    limit: usize,
}

impl LengthCodec {
    /// A codec with a `width` header and frames of at most `max_frame` bytes.
    pub fn new(width: LengthWidth, max_frame: usize) -> LengthCodec {
        let limit = max_frame.min(usize::try_from(width.max_payload()).unwrap_or(usize::MAX));
        let inner = LengthDelimitedCodec::builder()
            .length_field_length(width.bytes())
            .max_frame_length(limit)
            .big_endian()
            .new_codec();
        LengthCodec {
            inner,
            width,
            limit,
        }
    }

    /// The header's announced size, if the header has arrived.
    fn announced(&self, src: &BytesMut) -> Option<u64> {
        let header = src.get(..self.width.bytes())?;
        Some(header.iter().fold(0u64, |n, b| (n << 8) | u64::from(*b)))
    }
}

impl Decoder for LengthCodec {
    type Item = Bytes;
    type Error = FrameError;

    /// The header stays in `src` until its whole frame has arrived, so the codec keeps no state
    /// between calls and never reserves: what `src` holds is what the peer sent.
    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Bytes>, FrameError> {
        let Some(size) = self.announced(src) else {
            return Ok(None);
        };
        if size > self.limit as u64 {
            return Err(FrameError::FrameTooLong {
                size,
                limit: self.limit,
            });
        }
        let size = size as usize; // at most `limit`, a usize
        if src.len() - self.width.bytes() < size {
            return Ok(None);
        }
        src.advance(self.width.bytes());
        Ok(Some(src.split_to(size).freeze()))
    }
}

impl Encoder<&[u8]> for LengthCodec {
    type Error = FrameError;

    fn encode(&mut self, payload: &[u8], dst: &mut BytesMut) -> Result<(), FrameError> {
        if payload.len() > self.limit {
            return Err(FrameError::ReplyTooLong {
                size: payload.len(),
                limit: self.limit,
            });
        }
        Ok(self.inner.encode(payload, dst)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn frame(width: LengthWidth, payload: &[u8]) -> Vec<u8> {
        let mut wire = BytesMut::new();
        LengthCodec::new(width, 1 << 20)
            .encode(payload, &mut wire)
            .unwrap();
        wire.to_vec()
    }

    #[test]
    fn headers_count_the_payload_only() {
        assert_eq!(frame(LengthWidth::U32, b"abc"), b"\x00\x00\x00\x03abc");
        assert_eq!(frame(LengthWidth::U16, b""), b"\x00\x00");
    }

    #[test]
    fn the_limit_and_one_past_it() {
        let mut codec = LengthCodec::new(LengthWidth::U32, 4);
        let mut ok = BytesMut::from(&b"\x00\x00\x00\x04abcd"[..]);
        assert_eq!(&codec.decode(&mut ok).unwrap().unwrap()[..], b"abcd");
        let mut over = BytesMut::from(&b"\x00\x00\x00\x05"[..]);
        assert!(matches!(
            codec.decode(&mut over),
            Err(FrameError::FrameTooLong { size: 5, limit: 4 })
        ));
    }

    #[test]
    fn a_header_announcing_four_gigabytes_is_refused_before_any_allocation() {
        let mut codec = LengthCodec::new(LengthWidth::U32, 1 << 20);
        let mut buf = BytesMut::from(&b"\xff\xff\xff\xff"[..]);
        let capacity = buf.capacity();
        assert!(matches!(
            codec.decode(&mut buf),
            Err(FrameError::FrameTooLong {
                size: 0xFFFF_FFFF,
                ..
            })
        ));
        assert_eq!(
            buf.capacity(),
            capacity,
            "memory was reserved for the frame"
        );
    }

    #[test]
    fn an_announced_frame_is_not_reserved_before_its_bytes_arrive() {
        let mut codec = LengthCodec::new(LengthWidth::U32, 1 << 20);
        let mut buf = BytesMut::new();
        buf.extend_from_slice(b"\x00\x10\x00\x00"); // 1 MiB announced, nothing of it sent
        assert!(codec.decode(&mut buf).unwrap().is_none());
        assert_eq!(
            buf.len(),
            4,
            "the header waits in the buffer with its frame"
        );
        assert!(
            buf.capacity() < 1024,
            "{} bytes reserved for a frame not sent",
            buf.capacity()
        );
    }

    #[test]
    fn a_reply_that_outgrows_its_header_is_refused() {
        let mut codec = LengthCodec::new(LengthWidth::U16, usize::MAX);
        let mut out = BytesMut::new();
        let reply = vec![b'x'; 65_536];
        assert!(matches!(
            codec.encode(&reply[..], &mut out),
            Err(FrameError::ReplyTooLong {
                size: 65_536,
                limit: 65_535
            })
        ));
        assert!(out.is_empty(), "nothing may be written for a refused reply");
        assert!(codec.encode(&reply[..65_535], &mut out).is_ok());
    }

    proptest! {
        /// Fed as a session feeds it (the bytes appended as they arrive), the buffer never
        /// holds much more than the bytes received, whatever the header announced.
        #[test]
        fn memory_follows_the_bytes_received_not_the_header(
            announced in 1usize..(4 << 20),
            chunks in proptest::collection::vec(1usize..70_000, 1..40),
        ) {
            let mut codec = LengthCodec::new(LengthWidth::U32, 4 << 20);
            let mut buf = BytesMut::new();
            buf.extend_from_slice(&(announced as u32).to_be_bytes());
            let mut sent = 0;
            for chunk in chunks {
                let chunk = chunk.min(announced - sent);
                buf.extend_from_slice(&vec![b'x'; chunk]);
                sent += chunk;
                let frame = codec.decode(&mut buf).unwrap();
                if sent == announced {
                    prop_assert_eq!(frame.map(|f| f.len()), Some(announced));
                    break;
                }
                prop_assert!(frame.is_none());
                // BytesMut at most doubles its capacity to fit what is appended.
                prop_assert!(
                    buf.capacity() <= 2 * buf.len() + 16,
                    "{} bytes of capacity for {} received", buf.capacity(), buf.len()
                );
            }
        }

        #[test]
        fn frames_survive_any_split(
            payloads in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40), 0..5),
            wide in any::<bool>(),
        ) {
            let width = if wide { LengthWidth::U32 } else { LengthWidth::U16 };
            let wire: Vec<u8> = payloads.iter().flat_map(|p| frame(width, p)).collect();
            for cut in 0..=wire.len() {
                let mut codec = LengthCodec::new(width, 64);
                let mut buf = BytesMut::new();
                let mut got = Vec::new();
                for piece in [&wire[..cut], &wire[cut..]] {
                    buf.extend_from_slice(piece);
                    while let Some(frame) = codec.decode(&mut buf).unwrap() {
                        got.push(frame.to_vec());
                    }
                }
                prop_assert_eq!(&got, &payloads);
                prop_assert!(buf.is_empty());
            }
        }
    }
}
