//! Compression of a batch's records section (attributes bits 0-2), for producers, and its
//! decompression, for clients that read records: gzip, snappy, LZ4 and zstd, in the formats
//! Kafka producers write.
//!
//! The broker does neither: batches are stored and served as the producer sent them. The
//! native producer calls [`Compressor::compress`] (through
//! [`crate::batch::BatchBuilder::finish_unsealed_compressed`]) when it closes a batch; clients
//! that read records call [`decompress`] and read the decompressed section with
//! [`crate::batch::decompressed_records`]. Formats:
//!
//! - gzip: one or more gzip members (RFC 1952). Written as one member at the default level (6),
//!   as Java's `GZIPOutputStream` does for Kafka's producer.
//! - snappy: xerial framing (`\x82SNAPPY\0`, two big-endian i32 versions, then blocks of
//!   `u32 BE length | raw snappy`), as Kafka's Java producer writes it through snappy-java's
//!   `SnappyOutputStream`: version 1, compatible version 1, one block per 32 KiB of input.
//!   A section without the magic is read as one raw snappy block, which is what librdkafka
//!   writes.
//! - LZ4: the LZ4 frame format (Kafka's magic-2 batches have the correct header checksum).
//!   Written as Kafka's `Lz4BlockOutputStream` writes it: 64 KiB independent blocks, no block
//!   or content checksums, no content size (Java's reader refuses dependent blocks), an
//!   incompressible block stored as it is.
//! - zstd: one or more zstd frames. Written as one frame by ruzstd, whose only implemented
//!   level is about zstd's level 1 (Kafka's producer uses 3): a little larger, any zstd
//!   reader reads it.
//!
//! Every codec writes into a caller-owned buffer. Decompression stops at a caller-given bound,
//! so a small payload that expands without limit (a "zip bomb") is an error, never an
//! allocation past the bound.

use std::io::{Read, Write};

use thiserror::Error;

use crate::batch::Compression;

/// Why a compressed records section could not be decompressed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DecompressError {
    /// The records would take more than the allowed bytes once decompressed.
    #[error("{codec:?} records decompress to more than {limit_bytes} bytes")]
    TooLarge {
        /// The batch's codec.
        codec: Compression,
        /// The bound in force.
        limit_bytes: usize,
    },
    /// The payload is not valid for its codec.
    #[error("{codec:?} payload is corrupt: {reason}")]
    Corrupt {
        /// The batch's codec.
        codec: Compression,
        /// What the decoder said.
        reason: String,
    },
    /// The codec bits name no codec Kafka defines (or none at all).
    #[error("cannot decompress codec {0:?}")]
    UnsupportedCodec(Compression),
}

/// Why a records section could not be compressed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CompressError {
    /// The codec is none, or one Kafka does not define.
    #[error("cannot compress with codec {0:?}")]
    UnsupportedCodec(Compression),
    /// The encoder failed (it writes to memory, so this is not expected).
    #[error("{codec:?} compression failed: {reason}")]
    Failed {
        /// The codec asked for.
        codec: Compression,
        /// What the encoder said.
        reason: String,
    },
}

/// Xerial snappy framing: magic, then version and compatible version (big-endian i32 each).
const XERIAL_MAGIC: &[u8; 8] = b"\x82SNAPPY\0";
const XERIAL_HEADER_BYTES: usize = 16;
/// The versions snappy-java's `SnappyCodec` writes (DEFAULT_VERSION and
/// MINIMUM_COMPATIBLE_VERSION).
const XERIAL_VERSION: i32 = 1;
const XERIAL_COMPATIBLE_VERSION: i32 = 1;
/// Input bytes per xerial block: `SnappyOutputStream`'s default, which Kafka's producer uses.
const XERIAL_BLOCK_BYTES: usize = 32 * 1024;

/// A gzip member header: magic, deflate, no flags, no mtime, no extra flags, unknown OS.
const GZIP_HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];

/// Compresses records sections, keeping codec state from batch to batch. Gzip's deflate state
/// (some hundreds of KiB) and snappy's hash table are made once and reused; the LZ4 and zstd
/// encoders of lz4_flex and ruzstd cannot be reset, so they are made per batch (their tables
/// and buffers, up to a few hundred KiB for ruzstd, are allocated each time). Nothing is
/// allocated per record.
pub struct Compressor {
    /// Made on first use: only producers that gzip pay for it.
    deflate: Option<flate2::Compress>,
    snappy: snap::raw::Encoder,
}

impl std::fmt::Debug for Compressor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Compressor")
            .field("deflate", &self.deflate.is_some())
            .finish_non_exhaustive()
    }
}

impl Default for Compressor {
    fn default() -> Self {
        Compressor::new()
    }
}

impl Compressor {
    /// A compressor with no codec state yet.
    pub fn new() -> Compressor {
        Compressor {
            deflate: None,
            snappy: snap::raw::Encoder::new(),
        }
    }

    /// Appends `input` (a batch's records section) compressed with `codec` to `out`, in the
    /// format Kafka's Java producer writes (see the module docs). `out`'s spare capacity is
    /// used first, so a buffer reused from batch to batch stops growing. On error `out` is as
    /// it was.
    pub fn compress(
        &mut self,
        codec: Compression,
        input: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), CompressError> {
        let start = out.len();
        let result = match codec {
            Compression::Gzip => self.gzip(input, out),
            Compression::Snappy => self.xerial_snappy(input, out),
            Compression::Lz4 => lz4_frame(input, out),
            Compression::Zstd => zstd_frame(input, out),
            Compression::None | Compression::Unknown(_) => {
                Err(CompressError::UnsupportedCodec(codec))
            }
        };
        if result.is_err() {
            out.truncate(start);
        }
        result
    }

    /// One gzip member: header, raw deflate from the reused state, CRC-32 and length.
    fn gzip(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<(), CompressError> {
        const CODEC: Compression = Compression::Gzip;
        out.extend_from_slice(&GZIP_HEADER);
        let deflate = self
            .deflate
            .get_or_insert_with(|| flate2::Compress::new(flate2::Compression::default(), false));
        deflate.reset();
        let mut consumed = 0;
        loop {
            // compress_vec writes into spare capacity only; most input shrinks to under half.
            out.reserve((input.len() - consumed) / 2 + 1024);
            let (in_before, out_before) = (deflate.total_in(), deflate.total_out());
            let status = deflate
                .compress_vec(&input[consumed..], out, flate2::FlushCompress::Finish)
                .map_err(|error| failed(CODEC, error))?;
            let took = usize::try_from(deflate.total_in() - in_before).unwrap_or(usize::MAX);
            consumed = consumed.saturating_add(took).min(input.len());
            match status {
                flate2::Status::StreamEnd => break,
                _ if took == 0 && deflate.total_out() == out_before => {
                    return Err(failed(CODEC, "deflate made no progress"));
                }
                _ => {}
            }
        }
        let mut crc = flate2::Crc::new();
        crc.update(input);
        out.extend_from_slice(&crc.sum().to_le_bytes());
        // ISIZE is the input length modulo 2^32 (RFC 1952).
        out.extend_from_slice(&(input.len() as u32).to_le_bytes());
        Ok(())
    }

    /// Xerial framing, as snappy-java's `SnappyOutputStream` writes it for Kafka.
    fn xerial_snappy(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<(), CompressError> {
        const CODEC: Compression = Compression::Snappy;
        out.extend_from_slice(XERIAL_MAGIC);
        out.extend_from_slice(&XERIAL_VERSION.to_be_bytes());
        out.extend_from_slice(&XERIAL_COMPATIBLE_VERSION.to_be_bytes());
        for chunk in input.chunks(XERIAL_BLOCK_BYTES) {
            let at = out.len();
            let body = at + 4;
            out.resize(body + snap::raw::max_compress_len(chunk.len()), 0);
            let written = self
                .snappy
                .compress(chunk, &mut out[body..])
                .map_err(|error| failed(CODEC, error))?;
            // A block of 32 KiB compresses to well under 4 GiB.
            let length = u32::try_from(written).map_err(|error| failed(CODEC, error))?;
            out[at..body].copy_from_slice(&length.to_be_bytes());
            out.truncate(body + written);
        }
        Ok(())
    }
}

/// An LZ4 frame as Kafka's `Lz4BlockOutputStream` writes it (see the module docs).
fn lz4_frame(input: &[u8], out: &mut Vec<u8>) -> Result<(), CompressError> {
    const CODEC: Compression = Compression::Lz4;
    let info = lz4_flex::frame::FrameInfo::new()
        .block_size(lz4_flex::frame::BlockSize::Max64KB)
        .block_mode(lz4_flex::frame::BlockMode::Independent)
        .block_checksums(false)
        .content_checksum(false);
    let mut encoder = lz4_flex::frame::FrameEncoder::with_frame_info(info, out);
    encoder
        .write_all(input)
        .map_err(|error| failed(CODEC, error))?;
    encoder.finish().map_err(|error| failed(CODEC, error))?;
    Ok(())
}

/// One zstd frame (with its content checksum).
fn zstd_frame(input: &[u8], out: &mut Vec<u8>) -> Result<(), CompressError> {
    // ruzstd's encoder unwraps its reads and writes: a slice and a Vec never fail them.
    let mut encoder =
        ruzstd::encoding::FrameCompressor::new(ruzstd::encoding::CompressionLevel::Fastest);
    encoder.set_source(input);
    encoder.set_drain(out);
    encoder.compress();
    Ok(())
}

fn failed(codec: Compression, reason: impl ToString) -> CompressError {
    CompressError::Failed {
        codec,
        reason: reason.to_string(),
    }
}

/// Appends the decompressed form of `input` (a batch's records section compressed with
/// `codec`) to `out`, at most `limit_bytes` bytes of it. On error `out` is as it was.
pub fn decompress(
    codec: Compression,
    input: &[u8],
    out: &mut Vec<u8>,
    limit_bytes: usize,
) -> Result<(), DecompressError> {
    let start = out.len();
    let result = match codec {
        Compression::Gzip => read_bounded(
            codec,
            flate2::read::MultiGzDecoder::new(input),
            out,
            limit_bytes,
        ),
        Compression::Snappy => snappy(input, out, limit_bytes),
        Compression::Lz4 => read_bounded(
            codec,
            lz4_flex::frame::FrameDecoder::new(input),
            out,
            limit_bytes,
        ),
        Compression::Zstd => zstd(input, out, limit_bytes),
        Compression::None | Compression::Unknown(_) => {
            Err(DecompressError::UnsupportedCodec(codec))
        }
    };
    if result.is_err() {
        out.truncate(start);
    }
    result
}

/// Reads `reader` to its end onto `out`, failing once more than `limit_bytes` came out.
fn read_bounded(
    codec: Compression,
    reader: impl Read,
    out: &mut Vec<u8>,
    limit_bytes: usize,
) -> Result<(), DecompressError> {
    // One byte past the bound tells "exactly at the bound" from "over it".
    let cap = u64::try_from(limit_bytes)
        .unwrap_or(u64::MAX)
        .saturating_add(1);
    let read = reader
        .take(cap)
        .read_to_end(out)
        .map_err(|error| corrupt(codec, error))?;
    if read > limit_bytes {
        return Err(DecompressError::TooLarge { codec, limit_bytes });
    }
    Ok(())
}

fn corrupt(codec: Compression, reason: impl ToString) -> DecompressError {
    DecompressError::Corrupt {
        codec,
        reason: reason.to_string(),
    }
}

/// Xerial-framed or raw snappy. Raw snappy states its decompressed length up front, so the
/// bound is checked before anything is allocated.
fn snappy(input: &[u8], out: &mut Vec<u8>, limit_bytes: usize) -> Result<(), DecompressError> {
    const CODEC: Compression = Compression::Snappy;
    let start = out.len();
    let mut decoder = snap::raw::Decoder::new();
    let mut block = |block: &[u8], out: &mut Vec<u8>| -> Result<(), DecompressError> {
        let length = snap::raw::decompress_len(block).map_err(|error| corrupt(CODEC, error))?;
        let at = out.len();
        if (at - start).saturating_add(length) > limit_bytes {
            return Err(DecompressError::TooLarge {
                codec: CODEC,
                limit_bytes,
            });
        }
        out.resize(at + length, 0);
        let written = decoder
            .decompress(block, &mut out[at..])
            .map_err(|error| corrupt(CODEC, error))?;
        out.truncate(at + written);
        Ok(())
    };
    let Some(framed) = input.strip_prefix(XERIAL_MAGIC) else {
        return block(input, out);
    };
    let Some(mut blocks) = framed.get(XERIAL_HEADER_BYTES - XERIAL_MAGIC.len()..) else {
        return Err(corrupt(CODEC, "xerial header truncated"));
    };
    while !blocks.is_empty() {
        let Some((length, after)) = blocks.split_first_chunk::<4>() else {
            return Err(corrupt(CODEC, "xerial block length truncated"));
        };
        let length = usize::try_from(u32::from_be_bytes(*length)).unwrap_or(usize::MAX);
        let Some(body) = after.get(..length) else {
            return Err(corrupt(
                CODEC,
                "xerial block runs past the end of the batch",
            ));
        };
        block(body, out)?;
        blocks = &after[length..];
    }
    Ok(())
}

/// One or more zstd frames, one after another.
fn zstd(input: &[u8], out: &mut Vec<u8>, limit_bytes: usize) -> Result<(), DecompressError> {
    const CODEC: Compression = Compression::Zstd;
    let start = out.len();
    let mut rest = input;
    loop {
        let mut frame = ruzstd::decoding::StreamingDecoder::new(&mut rest)
            .map_err(|error| corrupt(CODEC, error))?;
        let left = limit_bytes - (out.len() - start);
        read_bounded(CODEC, &mut frame, out, left).map_err(|error| match error {
            // Reported against the whole section's bound, not what was left of it.
            DecompressError::TooLarge { .. } => DecompressError::TooLarge {
                codec: CODEC,
                limit_bytes,
            },
            other => other,
        })?;
        let decoder = frame.into_frame_decoder();
        // The streaming decoder does not compare the content checksum itself.
        if let (Some(stated), Some(computed)) = (
            decoder.get_checksum_from_data(),
            decoder.get_calculated_checksum(),
        ) {
            if stated != computed {
                return Err(corrupt(CODEC, "content checksum mismatch"));
            }
        }
        if rest.is_empty() {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::io::Write;

    proptest! {
        /// Any bytes, behind each codec's magic so that the decoders get past their first
        /// check: an error that leaves `out` alone, or at most the bound; never a panic.
        #[test]
        fn arbitrary_payloads_never_panic_nor_pass_the_bound(
            codec in 1i16..=4,
            with_magic in any::<bool>(),
            bytes in proptest::collection::vec(any::<u8>(), 0..512),
        ) {
            let codec = Compression::from_attributes(codec);
            let magic: &[u8] = match (with_magic, codec) {
                (false, _) => b"",
                (true, Compression::Gzip) => b"\x1f\x8b\x08\0\0\0\0\0\0\xff",
                (true, Compression::Snappy) => b"\x82SNAPPY\0\0\0\0\x01\0\0\0\x01",
                (true, Compression::Lz4) => b"\x04\x22\x4d\x18",
                (true, _) => b"\x28\xb5\x2f\xfd",
            };
            let input = [magic, &bytes].concat();
            let mut out = b"kept".to_vec();
            match decompress(codec, &input, &mut out, 4096) {
                Ok(()) => prop_assert!(out.len() <= 4 + 4096),
                Err(_) => prop_assert_eq!(&out[..], b"kept"),
            }
        }
    }

    fn sample() -> Vec<u8> {
        (0..10_000u32)
            .flat_map(|i| (i % 97).to_be_bytes())
            .collect()
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        encoder.write_all(data).unwrap();
        encoder.finish().unwrap()
    }

    fn xerial(data: &[u8], block_bytes: usize) -> Vec<u8> {
        let mut out = XERIAL_MAGIC.to_vec();
        out.extend_from_slice(&1i32.to_be_bytes());
        out.extend_from_slice(&1i32.to_be_bytes());
        for chunk in data.chunks(block_bytes) {
            let block = snap::raw::Encoder::new().compress_vec(chunk).unwrap();
            out.extend_from_slice(&u32::try_from(block.len()).unwrap().to_be_bytes());
            out.extend_from_slice(&block);
        }
        out
    }

    fn lz4(data: &[u8]) -> Vec<u8> {
        let mut encoder = lz4_flex::frame::FrameEncoder::new(Vec::new());
        encoder.write_all(data).unwrap();
        encoder.finish().unwrap()
    }

    fn zstd(data: &[u8]) -> Vec<u8> {
        ruzstd::encoding::compress_to_vec(data, ruzstd::encoding::CompressionLevel::Fastest)
    }

    fn all_codecs(data: &[u8]) -> Vec<(Compression, Vec<u8>)> {
        vec![
            (Compression::Gzip, gzip(data)),
            (Compression::Snappy, xerial(data, 32 * 1024)),
            (
                Compression::Snappy,
                snap::raw::Encoder::new().compress_vec(data).unwrap(),
            ),
            (Compression::Lz4, lz4(data)),
            (Compression::Zstd, zstd(data)),
        ]
    }

    #[test]
    fn compressed_sections_decompress_to_the_input_with_one_compressor_reused() {
        let mut compressor = Compressor::new();
        let mut out = Vec::new();
        // Several sizes, across block boundaries, each compressed by the same compressor.
        for data in [sample(), b"x".to_vec(), sample().repeat(2), Vec::new()] {
            for codec in [
                Compression::Gzip,
                Compression::Snappy,
                Compression::Lz4,
                Compression::Zstd,
            ] {
                out.clear();
                out.extend_from_slice(b"kept");
                compressor.compress(codec, &data, &mut out).unwrap();
                assert_eq!(&out[..4], b"kept", "{codec:?}");
                let mut back = Vec::new();
                decompress(codec, &out[4..], &mut back, data.len()).unwrap();
                assert_eq!(back, data, "{codec:?} of {} bytes", data.len());
            }
        }
    }

    #[test]
    fn compressed_sections_have_the_headers_kafka_writes() {
        let data = sample();
        let mut compressor = Compressor::new();
        let compress = |compressor: &mut Compressor, codec| {
            let mut out = Vec::new();
            compressor.compress(codec, &data, &mut out).unwrap();
            out
        };
        // snappy-java's SnappyCodec header, then 32 KiB blocks with big-endian lengths.
        let snappy = compress(&mut compressor, Compression::Snappy);
        assert_eq!(&snappy[..16], b"\x82SNAPPY\0\0\0\0\x01\0\0\0\x01");
        let first = u32::from_be_bytes(snappy[16..20].try_into().unwrap()) as usize;
        let mut block = Vec::new();
        decompress(
            Compression::Snappy,
            &snappy[20..20 + first],
            &mut block,
            data.len(),
        )
        .unwrap();
        assert_eq!(block.len(), 32 * 1024);
        // LZ4 frame magic, FLG version 1 with independent blocks and nothing else, BD 64 KiB
        // blocks, and the descriptor checksum, as Kafka's Lz4BlockOutputStream writes them.
        let lz4 = compress(&mut compressor, Compression::Lz4);
        assert_eq!(&lz4[..7], [0x04, 0x22, 0x4d, 0x18, 0x60, 0x40, 0x82]);
        assert_eq!(&lz4[lz4.len() - 4..], [0, 0, 0, 0], "end mark, no checksum");
        let gzip = compress(&mut compressor, Compression::Gzip);
        assert_eq!(&gzip[..3], [0x1f, 0x8b, 8]);
        let zstd = compress(&mut compressor, Compression::Zstd);
        assert_eq!(&zstd[..4], [0x28, 0xb5, 0x2f, 0xfd]);
        for codec in [Compression::None, Compression::Unknown(5)] {
            let mut out = b"kept".to_vec();
            assert_eq!(
                compressor.compress(codec, &data, &mut out),
                Err(CompressError::UnsupportedCodec(codec))
            );
            assert_eq!(out, b"kept");
        }
    }

    #[test]
    fn every_codec_round_trips_and_appends() {
        let data = sample();
        for (codec, compressed) in all_codecs(&data) {
            let mut out = b"kept".to_vec();
            decompress(codec, &compressed, &mut out, data.len()).unwrap();
            assert_eq!(&out[..4], b"kept", "{codec:?}");
            assert_eq!(&out[4..], &data[..], "{codec:?}");
        }
    }

    #[test]
    fn concatenated_gzip_members_and_zstd_frames_are_read_whole() {
        let data = sample();
        let (first, second) = data.split_at(1234);
        for (codec, compressed) in [
            (Compression::Gzip, [gzip(first), gzip(second)].concat()),
            (Compression::Zstd, [zstd(first), zstd(second)].concat()),
        ] {
            let mut out = Vec::new();
            decompress(codec, &compressed, &mut out, data.len()).unwrap();
            assert_eq!(out, data, "{codec:?}");
        }
    }

    #[test]
    fn one_byte_over_the_bound_is_too_large_and_leaves_out_alone() {
        let data = sample();
        for (codec, compressed) in all_codecs(&data) {
            let mut out = b"kept".to_vec();
            let error = decompress(codec, &compressed, &mut out, data.len() - 1).unwrap_err();
            assert_eq!(
                error,
                DecompressError::TooLarge {
                    codec,
                    limit_bytes: data.len() - 1
                }
            );
            assert_eq!(out, b"kept", "{codec:?}");
        }
    }

    #[test]
    fn a_bomb_stops_at_the_bound() {
        let zeros = vec![0u8; 8 << 20];
        for (codec, compressed) in all_codecs(&zeros) {
            assert!(compressed.len() < 1 << 20, "{codec:?}");
            let mut out = Vec::new();
            let error = decompress(codec, &compressed, &mut out, 1 << 20).unwrap_err();
            assert!(
                matches!(error, DecompressError::TooLarge { .. }),
                "{codec:?}"
            );
            assert!(out.capacity() <= 4 << 20, "{codec:?}: {}", out.capacity());
        }
    }

    #[test]
    fn corrupt_payloads_are_errors_not_panics() {
        let data = sample();
        for (codec, compressed) in all_codecs(&data) {
            // Nothing at all is zero LZ4 frames (no bytes) or an error; either way the record
            // reader then finds fewer records than the batch header counts.
            let mut out = Vec::new();
            let _ = decompress(codec, &[], &mut out, data.len());
            assert!(out.is_empty(), "{codec:?}");
            for cut in [1, compressed.len() / 2, compressed.len() - 1] {
                let mut out = Vec::new();
                match decompress(codec, &compressed[..cut], &mut out, data.len()) {
                    Err(_) => assert!(out.is_empty(), "{codec:?} cut at {cut}"),
                    // lz4_flex forgives a frame cut in its end mark, after the last block:
                    // then every byte is there.
                    Ok(()) => assert_eq!(out, data, "{codec:?} cut at {cut}"),
                }
            }
            let mut flipped = compressed.clone();
            let middle = flipped.len() / 2;
            flipped[middle] ^= 0x5a;
            let mut out = Vec::new();
            // A flipped byte may still decode (to other bytes); it must never panic.
            let _ = decompress(codec, &flipped, &mut out, data.len());
        }
        let mut out = Vec::new();
        assert_eq!(
            decompress(Compression::Unknown(6), b"x", &mut out, 10),
            Err(DecompressError::UnsupportedCodec(Compression::Unknown(6)))
        );
    }
}
