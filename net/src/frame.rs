//! Framing: how requests and responses are delimited on a byte stream.
//!
//! Every frame, request or response, is (all integers little-endian):
//!
//! ```text
//! offset  size  field
//!      0     4  frame_length    bytes after this field (so a frame is 4 + frame_length bytes)
//!      4     2  api             ApiKey; a response echoes its request's api
//!      6     2  version         version of the api's schema
//!      8     4  correlation_id  chosen by the client; the response echoes it
//!     12     4  body_length     flatbuffers' size prefix: bytes of flatbuffer after this field
//!     16     n  flatbuffer      root table <Api>Request or <Api>Response
//! 16 + n     r  raw batches     Kafka RecordBatch v2 bytes described by the body, in order
//! ```
//!
//! The flatbuffer *body* is bytes `12 .. 16 + n`, i.e. a size-prefixed flatbuffer as produced by
//! `FlatBufferBuilder::finish_size_prefixed` and read by `flatbuffers::size_prefixed_root`; the
//! size prefix is what tells where the raw batches start. `r = frame_length - 8 - 4 - n`.
//!
//! [`FrameDecoder::decode`] parses a frame out of received bytes without copying or allocating;
//! it never panics, whatever the input.

use thiserror::Error;

/// Bytes of the `frame_length` field.
pub const FRAME_LENGTH_BYTES: usize = 4;
/// Bytes of the fixed header: frame_length, api, version, correlation_id.
pub const FRAME_HEADER_BYTES: usize = 12;
/// Bytes of the flatbuffer size prefix that starts every body.
pub const BODY_PREFIX_BYTES: usize = 4;
/// Smallest well-formed frame: a header and an empty size-prefixed body.
pub const FRAME_BYTES_MIN: usize = FRAME_HEADER_BYTES + BODY_PREFIX_BYTES;
/// Default bound on a frame's total bytes (length field included): 64 MiB, enough for a fetch
/// response at its default `max_bytes` of 50 MiB.
pub const FRAME_BYTES_MAX_DEFAULT: usize = 64 * 1024 * 1024;
/// Bytes counted by `frame_length` that precede the body: api, version, correlation_id.
const HEADER_AFTER_LENGTH_BYTES: usize = FRAME_HEADER_BYTES - FRAME_LENGTH_BYTES;

/// Why bytes do not form an acceptable frame. Either way the stream cannot be resynchronised:
/// the receiver answers (when it can) and closes the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum FrameError {
    /// The frame announces more bytes than the receiver's `frame_bytes_max`.
    #[error("frame of {frame_bytes} bytes exceeds the limit of {frame_bytes_max} bytes")]
    TooLarge {
        /// Total bytes the frame announced (length field included).
        frame_bytes: u64,
        /// The receiver's limit.
        frame_bytes_max: usize,
    },
    /// The length fields are inconsistent.
    #[error("malformed frame: {0}")]
    Malformed(&'static str),
}

/// The fixed 12-byte frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// Bytes after the length field: 8 + body bytes + raw bytes.
    pub frame_length: u32,
    /// Api id ([`crate::api::ApiKey`]), kept raw so unknown ids can still be answered.
    pub api: u16,
    /// Api version.
    pub version: u16,
    /// Matches a response to its request.
    pub correlation_id: u32,
}

impl FrameHeader {
    /// The header of a frame carrying `body_bytes` of size-prefixed flatbuffer (prefix included)
    /// followed by `raw_bytes` of record batches. Fails when the frame would not fit `u32`.
    pub fn for_message(
        api: u16,
        version: u16,
        correlation_id: u32,
        body_bytes: usize,
        raw_bytes: usize,
    ) -> Result<Self, FrameError> {
        let frame_length = HEADER_AFTER_LENGTH_BYTES
            .checked_add(body_bytes)
            .and_then(|bytes| bytes.checked_add(raw_bytes))
            .and_then(|bytes| u32::try_from(bytes).ok())
            .ok_or(FrameError::TooLarge {
                frame_bytes: (FRAME_HEADER_BYTES as u64)
                    .saturating_add(body_bytes as u64)
                    .saturating_add(raw_bytes as u64),
                frame_bytes_max: FRAME_LENGTH_BYTES + u32::MAX as usize,
            })?;
        Ok(Self {
            frame_length,
            api,
            version,
            correlation_id,
        })
    }

    /// The header of the response to `request`: same api, version and correlation id, carrying
    /// `body_bytes` of body (prefix included) and `raw_bytes` of batches after it.
    pub fn response_to(
        request: &FrameHeader,
        body_bytes: usize,
        raw_bytes: usize,
    ) -> Result<Self, FrameError> {
        Self::for_message(
            request.api,
            request.version,
            request.correlation_id,
            body_bytes,
            raw_bytes,
        )
    }

    /// Total bytes of the frame on the wire, length field included.
    pub fn total_bytes(&self) -> usize {
        FRAME_LENGTH_BYTES + self.frame_length as usize
    }

    /// Reads a header from the first 12 bytes of `bytes`; `None` when fewer are present.
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        let header = bytes.get(..FRAME_HEADER_BYTES)?;
        Some(Self {
            frame_length: read_u32(header, 0)?,
            api: read_u16(header, 4)?,
            version: read_u16(header, 6)?,
            correlation_id: read_u32(header, 8)?,
        })
    }
}

/// Writes `header` as its 12 wire bytes.
pub fn encode_header(header: &FrameHeader) -> [u8; FRAME_HEADER_BYTES] {
    let mut bytes = [0u8; FRAME_HEADER_BYTES];
    bytes[0..4].copy_from_slice(&header.frame_length.to_le_bytes());
    bytes[4..6].copy_from_slice(&header.api.to_le_bytes());
    bytes[6..8].copy_from_slice(&header.version.to_le_bytes());
    bytes[8..12].copy_from_slice(&header.correlation_id.to_le_bytes());
    bytes
}

/// Appends a whole frame to `out`: header, `body` (a finished size-prefixed flatbuffer), then
/// each of `raw` in order. Returns the header written.
pub fn write_frame(
    out: &mut Vec<u8>,
    api: u16,
    version: u16,
    correlation_id: u32,
    body: &[u8],
    raw: &[&[u8]],
) -> Result<FrameHeader, FrameError> {
    let raw_bytes = raw.iter().map(|part| part.len()).sum();
    let header = FrameHeader::for_message(api, version, correlation_id, body.len(), raw_bytes)?;
    out.reserve(header.total_bytes());
    out.extend_from_slice(&encode_header(&header));
    out.extend_from_slice(body);
    for part in raw {
        out.extend_from_slice(part);
    }
    Ok(header)
}

/// One complete frame, borrowed from the receive buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<'a> {
    /// The fixed header.
    pub header: FrameHeader,
    /// The size-prefixed flatbuffer, prefix included: pass it to the message layer
    /// ([`crate::message::Decode`]) or `flatbuffers::size_prefixed_root`.
    pub body: &'a [u8],
    /// The raw record batches after the body (possibly empty), as described by the body.
    pub raw: &'a [u8],
    /// Bytes the frame occupies at the start of the buffer; consume these before decoding the
    /// next frame.
    pub total_bytes: usize,
}

/// Parses frames out of received bytes, bounding their size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameDecoder {
    frame_bytes_max: usize,
}

impl Default for FrameDecoder {
    fn default() -> Self {
        Self::new(FRAME_BYTES_MAX_DEFAULT)
    }
}

impl FrameDecoder {
    /// A decoder refusing frames whose total bytes (length field included) exceed
    /// `frame_bytes_max`. Values below [`FRAME_BYTES_MIN`] are raised to it, since no frame is
    /// smaller.
    pub fn new(frame_bytes_max: usize) -> Self {
        Self {
            frame_bytes_max: frame_bytes_max.max(FRAME_BYTES_MIN),
        }
    }

    /// The limit in force.
    pub fn frame_bytes_max(&self) -> usize {
        self.frame_bytes_max
    }

    /// Total bytes of the frame starting at `buf[0]` as soon as its length field has arrived
    /// (to size a receive buffer), `None` before that. Fails as [`FrameDecoder::decode`] would
    /// on the bytes seen so far.
    pub fn peek_total_bytes(&self, buf: &[u8]) -> Result<Option<usize>, FrameError> {
        let Some(frame_length) = read_u32(buf, 0) else {
            return Ok(None);
        };
        let total_bytes = FRAME_LENGTH_BYTES as u64 + u64::from(frame_length);
        if total_bytes > self.frame_bytes_max as u64 {
            return Err(FrameError::TooLarge {
                frame_bytes: total_bytes,
                frame_bytes_max: self.frame_bytes_max,
            });
        }
        if (frame_length as usize) < HEADER_AFTER_LENGTH_BYTES + BODY_PREFIX_BYTES {
            return Err(FrameError::Malformed(
                "frame_length too small for header and body prefix",
            ));
        }
        // Bounded by frame_bytes_max (a usize) just above.
        let total_bytes = total_bytes as usize;
        if let Some(body_length) = read_u32(buf, FRAME_HEADER_BYTES) {
            let body_end = FRAME_BYTES_MIN as u64 + u64::from(body_length);
            if body_end > total_bytes as u64 {
                return Err(FrameError::Malformed("body size prefix exceeds the frame"));
            }
        }
        Ok(Some(total_bytes))
    }

    /// Parses the frame at the start of `buf`.
    ///
    /// Returns `Ok(None)` while the frame is incomplete (read more and call again with the same
    /// start), `Ok(Some(frame))` once it is complete (it occupies `frame.total_bytes` bytes), and
    /// an error as soon as the bytes received show the frame is over the limit or inconsistent.
    /// Allocates nothing and never panics.
    pub fn decode<'a>(&self, buf: &'a [u8]) -> Result<Option<Frame<'a>>, FrameError> {
        let Some(total_bytes) = self.peek_total_bytes(buf)? else {
            return Ok(None);
        };
        let Some(frame_bytes) = buf.get(..total_bytes) else {
            return Ok(None);
        };
        let (Some(header), Some(body_length)) = (
            FrameHeader::decode(frame_bytes),
            read_u32(frame_bytes, FRAME_HEADER_BYTES),
        ) else {
            // peek_total_bytes guarantees total_bytes >= FRAME_BYTES_MIN.
            return Err(FrameError::Malformed("frame shorter than its header"));
        };
        let body_end = usize::try_from(body_length)
            .ok()
            .and_then(|length| FRAME_BYTES_MIN.checked_add(length))
            .ok_or(FrameError::Malformed("body size prefix exceeds the frame"))?;
        let (Some(body), Some(raw)) = (
            frame_bytes.get(FRAME_HEADER_BYTES..body_end),
            frame_bytes.get(body_end..),
        ) else {
            return Err(FrameError::Malformed("body size prefix exceeds the frame"));
        };
        Ok(Some(Frame {
            header,
            body,
            raw,
            total_bytes,
        }))
    }
}

/// Little-endian `u32` at `offset`, `None` when out of bounds.
fn read_u32(bytes: &[u8], offset: usize) -> Option<u32> {
    let field = bytes.get(offset..offset.checked_add(4)?)?;
    Some(u32::from_le_bytes(field.try_into().ok()?))
}

/// Little-endian `u16` at `offset`, `None` when out of bounds.
fn read_u16(bytes: &[u8], offset: usize) -> Option<u16> {
    let field = bytes.get(offset..offset.checked_add(2)?)?;
    Some(u16::from_le_bytes(field.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A size-prefixed "body" of `n` opaque bytes.
    fn body(n: usize) -> Vec<u8> {
        let mut body = (n as u32).to_le_bytes().to_vec();
        body.extend((0..n).map(|i| i as u8));
        body
    }

    fn frame_bytes(correlation_id: u32, body: &[u8], raw: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        write_frame(&mut out, 6, 0, correlation_id, body, raw).unwrap();
        out
    }

    #[test]
    fn decodes_a_complete_frame() {
        let body = body(8);
        let bytes = frame_bytes(42, &body, &[b"abc", b"de"]);
        let frame = FrameDecoder::default().decode(&bytes).unwrap().unwrap();
        assert_eq!(frame.header.api, 6);
        assert_eq!(frame.header.correlation_id, 42);
        assert_eq!(frame.body, &body[..]);
        assert_eq!(frame.raw, b"abcde");
        assert_eq!(frame.total_bytes, bytes.len());
        assert_eq!(frame.header.total_bytes(), bytes.len());
    }

    #[test]
    fn incomplete_until_the_last_byte() {
        let bytes = frame_bytes(1, &body(20), &[b"raw bytes"]);
        let decoder = FrameDecoder::default();
        for end in 0..bytes.len() {
            assert_eq!(decoder.decode(&bytes[..end]), Ok(None), "prefix {end}");
        }
        assert!(decoder.decode(&bytes).unwrap().is_some());
    }

    #[test]
    fn too_large_is_reported_from_the_length_field_alone() {
        let decoder = FrameDecoder::new(1024);
        let length = 2000u32.to_le_bytes();
        assert_eq!(
            decoder.decode(&length),
            Err(FrameError::TooLarge {
                frame_bytes: 2004,
                frame_bytes_max: 1024
            })
        );
        assert_eq!(decoder.decode(&length[..3]), Ok(None));
    }

    #[test]
    fn limit_counts_the_length_field() {
        let bytes = frame_bytes(1, &body(4), &[]);
        assert!(FrameDecoder::new(bytes.len()).decode(&bytes).is_ok());
        assert!(matches!(
            FrameDecoder::new(bytes.len() - 1).decode(&bytes),
            Err(FrameError::TooLarge { .. })
        ));
    }

    #[test]
    fn body_prefix_beyond_frame_is_malformed_early() {
        let mut bytes = frame_bytes(1, &body(4), &[]);
        bytes[12..16].copy_from_slice(&100u32.to_le_bytes());
        // Detected with only the header and prefix received.
        assert!(matches!(
            FrameDecoder::default().decode(&bytes[..16]),
            Err(FrameError::Malformed(_))
        ));
        bytes[12..16].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            FrameDecoder::default().decode(&bytes),
            Err(FrameError::Malformed(_))
        ));
    }

    #[test]
    fn frame_too_short_for_body_prefix_is_malformed() {
        let mut bytes = encode_header(&FrameHeader {
            frame_length: 8,
            api: 0,
            version: 0,
            correlation_id: 0,
        })
        .to_vec();
        assert!(matches!(
            FrameDecoder::default().decode(&bytes),
            Err(FrameError::Malformed(_))
        ));
        bytes[0..4].copy_from_slice(&0u32.to_le_bytes());
        assert!(matches!(
            FrameDecoder::default().decode(&bytes),
            Err(FrameError::Malformed(_))
        ));
    }

    #[test]
    fn back_to_back_frames() {
        let mut bytes = frame_bytes(1, &body(3), &[b"x"]);
        bytes.extend(frame_bytes(2, &body(0), &[]));
        let decoder = FrameDecoder::default();
        let first = decoder.decode(&bytes).unwrap().unwrap();
        assert_eq!(first.header.correlation_id, 1);
        assert_eq!(first.raw, b"x");
        let rest = &bytes[first.total_bytes..];
        let second = decoder.decode(rest).unwrap().unwrap();
        assert_eq!(second.header.correlation_id, 2);
        assert_eq!(second.total_bytes, rest.len());
        assert!(second.raw.is_empty());
    }

    #[test]
    fn response_header_echoes_the_request() {
        let request = FrameHeader::for_message(7, 0, 99, 20, 0).unwrap();
        let response = FrameHeader::response_to(&request, 16, 100).unwrap();
        assert_eq!(
            (response.api, response.version, response.correlation_id),
            (7, 0, 99)
        );
        assert_eq!(response.total_bytes(), FRAME_HEADER_BYTES + 16 + 100);
    }

    #[test]
    fn header_for_message_rejects_u32_overflow() {
        assert!(matches!(
            FrameHeader::for_message(0, 0, 0, usize::MAX, 1),
            Err(FrameError::TooLarge { .. })
        ));
        assert!(FrameHeader::for_message(0, 0, 0, u32::MAX as usize, 0).is_err());
        assert!(FrameHeader::for_message(0, 0, 0, u32::MAX as usize - 8, 0).is_ok());
    }

    proptest! {
        #[test]
        fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256),
                        frame_bytes_max in 0usize..512) {
            let decoder = FrameDecoder::new(frame_bytes_max);
            if let Ok(Some(frame)) = decoder.decode(&bytes) {
                prop_assert!(frame.total_bytes <= bytes.len());
                prop_assert!(frame.total_bytes <= decoder.frame_bytes_max());
                prop_assert_eq!(
                    FRAME_HEADER_BYTES + frame.body.len() + frame.raw.len(),
                    frame.total_bytes
                );
            }
            let _ = decoder.peek_total_bytes(&bytes);
        }

        #[test]
        fn never_panics_on_plausible_headers(frame_length in 0u32..64, body_length in any::<u32>(),
                                             tail in proptest::collection::vec(any::<u8>(), 0..64)) {
            let mut bytes = frame_length.to_le_bytes().to_vec();
            bytes.extend([0u8; 8]);
            bytes.extend(body_length.to_le_bytes());
            bytes.extend(tail);
            let _ = FrameDecoder::new(1 << 20).decode(&bytes);
        }

        #[test]
        fn round_trip(api in any::<u16>(), version in any::<u16>(), correlation_id in any::<u32>(),
                      body_len in 0usize..64,
                      raw in proptest::collection::vec(any::<u8>(), 0..128),
                      trailing in proptest::collection::vec(any::<u8>(), 0..32)) {
            let body = body(body_len);
            let mut bytes = Vec::new();
            let header = write_frame(&mut bytes, api, version, correlation_id, &body, &[&raw]).unwrap();
            let total = bytes.len();
            bytes.extend(&trailing);
            let frame = FrameDecoder::default().decode(&bytes).unwrap().unwrap();
            prop_assert_eq!(frame.header, header);
            prop_assert_eq!(frame.header.api, api);
            prop_assert_eq!(frame.header.version, version);
            prop_assert_eq!(frame.header.correlation_id, correlation_id);
            prop_assert_eq!(frame.body, &body[..]);
            prop_assert_eq!(frame.raw, &raw[..]);
            prop_assert_eq!(frame.total_bytes, total);
        }
    }
}
