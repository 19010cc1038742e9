//! Decompression of the records section of compressed batches (attributes bits 0-2), as Kafka
//! producers write them: gzip, snappy, LZ4 and zstd.
//!
//! The broker never decompresses: batches are stored and served as the producer sent them.
//! Only clients that read records call [`decompress`], and they read the decompressed section
//! with [`crate::batch::decompressed_records`]. Formats, as Kafka's Java client and librdkafka
//! write them:
//!
//! - gzip: one or more gzip members (RFC 1952).
//! - snappy: xerial framing (`\x82SNAPPY\0`, two big-endian i32 versions, then blocks of
//!   `u32 BE length | raw snappy`), which both Java and librdkafka write; a section without
//!   the magic is read as one raw snappy block, as librdkafka also accepts.
//! - LZ4: the LZ4 frame format (Kafka's magic-2 batches have the correct header checksum).
//! - zstd: one or more zstd frames.
//!
//! Every codec writes into a caller-owned buffer and stops at a caller-given bound, so a
//! small payload that expands without limit (a "zip bomb") is an error, never an allocation
//! past the bound.

use std::io::Read;

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

/// Xerial snappy framing: magic, then version and compatible version (big-endian i32 each).
const XERIAL_MAGIC: &[u8; 8] = b"\x82SNAPPY\0";
const XERIAL_HEADER_BYTES: usize = 16;

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
