//! Zigzag variable-length integers, as Kafka writes them inside record batches.
//!
//! Kafka encodes the signed fields of a record (lengths, deltas, counts) as the
//! protobuf-style base-128 varint of their zigzag mapping, so small magnitudes of
//! either sign take one byte. An `i32` takes at most [`VARINT_BYTES_MAX`] bytes (a
//! "varint"), an `i64` at most [`VARLONG_BYTES_MAX`] (a "varlong").
//!
//! Decoding is strict where Kafka's own decoder is lenient: an encoding longer than
//! the maximum, or whose last byte carries bits beyond the target width, is an error
//! instead of being silently truncated. No conforming encoder produces either.

use thiserror::Error;

/// Most bytes a zigzag varint of an `i32` can take.
pub const VARINT_BYTES_MAX: usize = 5;

/// Most bytes a zigzag varlong of an `i64` can take.
pub const VARLONG_BYTES_MAX: usize = 10;

/// Why a varint could not be decoded or encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum VarintError {
    /// The input ended while the last byte read still had its continuation bit set.
    #[error(
        "varint truncated: input ended after {read_bytes} byte(s) with the continuation bit set"
    )]
    Truncated {
        /// Bytes examined before the input ran out.
        read_bytes: usize,
    },
    /// The continuation bit was still set on the last byte the type allows.
    #[error("varint longer than {bytes_max} bytes")]
    Overlong {
        /// Most bytes allowed for the type being decoded.
        bytes_max: usize,
    },
    /// The last byte carried bits beyond the width of the type being decoded.
    #[error("varint value does not fit in {bits} bits")]
    Overflow {
        /// Width of the type being decoded.
        bits: u32,
    },
    /// The output slice is shorter than the encoding.
    #[error("output of {available_bytes} byte(s) is too small for a {needed_bytes}-byte varint")]
    BufferTooSmall {
        /// Bytes the encoding needs.
        needed_bytes: usize,
        /// Bytes the output slice holds.
        available_bytes: usize,
    },
}

/// Maps an `i32` to a `u32` so that small magnitudes of either sign are small (0, -1, 1, -2 -> 0, 1, 2, 3).
pub fn zigzag_i32(value: i32) -> u32 {
    ((value << 1) ^ (value >> 31)) as u32
}

/// Inverse of [`zigzag_i32`].
pub fn unzigzag_i32(raw: u32) -> i32 {
    ((raw >> 1) as i32) ^ -((raw & 1) as i32)
}

/// Maps an `i64` to a `u64` so that small magnitudes of either sign are small.
pub fn zigzag_i64(value: i64) -> u64 {
    ((value << 1) ^ (value >> 63)) as u64
}

/// Inverse of [`zigzag_i64`].
pub fn unzigzag_i64(raw: u64) -> i64 {
    ((raw >> 1) as i64) ^ -((raw & 1) as i64)
}

/// Bytes the zigzag varint of `value` takes (1 to [`VARINT_BYTES_MAX`]).
pub fn encoded_len_i32(value: i32) -> usize {
    unsigned_len(u64::from(zigzag_i32(value)))
}

/// Bytes the zigzag varlong of `value` takes (1 to [`VARLONG_BYTES_MAX`]).
pub fn encoded_len_i64(value: i64) -> usize {
    unsigned_len(zigzag_i64(value))
}

/// Writes the zigzag varint of `value` at the start of `out`; returns the bytes written.
#[inline]
pub fn encode_i32(value: i32, out: &mut [u8]) -> Result<usize, VarintError> {
    encode_unsigned(u64::from(zigzag_i32(value)), out)
}

/// Writes the zigzag varlong of `value` at the start of `out`; returns the bytes written.
#[inline]
pub fn encode_i64(value: i64, out: &mut [u8]) -> Result<usize, VarintError> {
    encode_unsigned(zigzag_i64(value), out)
}

/// Decodes a zigzag varint from the start of `bytes`; returns the value and the bytes it took.
#[inline]
pub fn decode_i32(bytes: &[u8]) -> Result<(i32, usize), VarintError> {
    let (raw, len) = decode_unsigned(bytes, VARINT_BYTES_MAX, 32)?;
    // decode_unsigned rejected anything wider than 32 bits, so this cannot truncate.
    debug_assert!(raw <= u64::from(u32::MAX));
    Ok((unzigzag_i32(raw as u32), len))
}

/// Decodes a zigzag varlong from the start of `bytes`; returns the value and the bytes it took.
#[inline]
pub fn decode_i64(bytes: &[u8]) -> Result<(i64, usize), VarintError> {
    let (raw, len) = decode_unsigned(bytes, VARLONG_BYTES_MAX, 64)?;
    Ok((unzigzag_i64(raw), len))
}

/// Length of the base-128 encoding of `raw`.
fn unsigned_len(raw: u64) -> usize {
    // `| 1` makes zero count as one significant bit, hence one byte.
    let significant_bits = 64 - (raw | 1).leading_zeros();
    // significant_bits.div_ceil(7) for 1..=64 bits, without the division (run for every
    // field of every record a producer adds).
    ((significant_bits * 9 + 64) / 64) as usize
}

/// Writes the base-128 encoding of `raw`, low groups first, at the start of `out` (nothing
/// when it does not fit); returns its length. Byte by byte into the room checked first: the
/// varints of a record are one or two bytes, which a fixed buffer and a copy of it would cost
/// several times over (this runs for every field of every record a producer adds).
#[inline]
fn encode_unsigned(mut raw: u64, out: &mut [u8]) -> Result<usize, VarintError> {
    let len = unsigned_len(raw);
    let available_bytes = out.len();
    let dst = out.get_mut(..len).ok_or(VarintError::BufferTooSmall {
        needed_bytes: len,
        available_bytes,
    })?;
    let (last, groups) = dst
        .split_last_mut()
        .expect("an encoding takes at least one byte");
    for slot in groups {
        *slot = (raw as u8 & 0x7f) | 0x80;
        raw >>= 7;
    }
    debug_assert!(raw < 0x80, "unsigned_len counted every group");
    *last = raw as u8;
    Ok(len)
}

/// Decodes a base-128 integer of at most `bytes_max` bytes and `bits` bits. Encodings of one
/// or two bytes (most fields of a record: lengths, deltas, counts) are decoded on the spot;
/// every type allows at least five bytes and 14 bits, so their checks cannot fail.
#[inline]
fn decode_unsigned(bytes: &[u8], bytes_max: usize, bits: u32) -> Result<(u64, usize), VarintError> {
    debug_assert!(bytes_max >= 3 && bits >= 14);
    match *bytes {
        [first, ..] if first & 0x80 == 0 => Ok((u64::from(first), 1)),
        [first, second, ..] if second & 0x80 == 0 => {
            Ok((u64::from(first & 0x7f) | u64::from(second) << 7, 2))
        }
        _ => decode_unsigned_long(bytes, bytes_max, bits),
    }
}

/// [`decode_unsigned`] for any length, with the checks of the last byte a type allows.
fn decode_unsigned_long(
    bytes: &[u8],
    bytes_max: usize,
    bits: u32,
) -> Result<(u64, usize), VarintError> {
    let mut raw = 0u64;
    for (index, &byte) in bytes.iter().take(bytes_max).enumerate() {
        let shift = 7 * index as u32;
        let group = u64::from(byte & 0x7f);
        if index + 1 == bytes_max {
            // The last byte the type allows must end the encoding and may only carry
            // the bits that remain of the type's width.
            if byte & 0x80 != 0 {
                return Err(VarintError::Overlong { bytes_max });
            }
            if group >> (bits - shift) != 0 {
                return Err(VarintError::Overflow { bits });
            }
        }
        raw |= group << shift;
        if byte & 0x80 == 0 {
            return Ok((raw, index + 1));
        }
    }
    Err(VarintError::Truncated {
        read_bytes: bytes.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn encode32(value: i32) -> Vec<u8> {
        let mut out = [0u8; VARINT_BYTES_MAX];
        let len = encode_i32(value, &mut out).unwrap();
        out[..len].to_vec()
    }

    fn encode64(value: i64) -> Vec<u8> {
        let mut out = [0u8; VARLONG_BYTES_MAX];
        let len = encode_i64(value, &mut out).unwrap();
        out[..len].to_vec()
    }

    #[test]
    fn varint_known_vectors() {
        assert_eq!(encode32(0), [0x00]);
        assert_eq!(encode32(-1), [0x01]);
        assert_eq!(encode32(1), [0x02]);
        assert_eq!(encode32(-2), [0x03]);
        assert_eq!(encode32(63), [0x7e]);
        assert_eq!(encode32(-64), [0x7f]);
        assert_eq!(encode32(64), [0x80, 0x01]);
        assert_eq!(encode32(150), [0xac, 0x02]);
        assert_eq!(encode32(300), [0xd8, 0x04]);
        assert_eq!(encode32(i32::MAX), [0xfe, 0xff, 0xff, 0xff, 0x0f]);
        assert_eq!(encode32(i32::MIN), [0xff, 0xff, 0xff, 0xff, 0x0f]);
        assert_eq!(encode64(-1000), [0xcf, 0x0f]);
        assert_eq!(
            encode64(i64::MIN),
            [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]
        );
        assert_eq!(decode_i32(&[0xd8, 0x04, 0xff]), Ok((300, 2)));
        assert_eq!(decode_i64(&[0x01]), Ok((-1, 1)));
    }

    #[test]
    fn varint_zigzag_matches_kafka_mapping() {
        for (value, raw) in [
            (0, 0u32),
            (-1, 1),
            (1, 2),
            (-2, 3),
            (i32::MAX, u32::MAX - 1),
            (i32::MIN, u32::MAX),
        ] {
            assert_eq!(zigzag_i32(value), raw);
            assert_eq!(unzigzag_i32(raw), value);
        }
        assert_eq!(zigzag_i64(i64::MIN), u64::MAX);
        assert_eq!(unzigzag_i64(u64::MAX - 1), i64::MAX);
    }

    #[test]
    fn varint_rejects_truncated_overlong_and_overflowing_input() {
        assert_eq!(
            decode_i32(&[]),
            Err(VarintError::Truncated { read_bytes: 0 })
        );
        assert_eq!(
            decode_i32(&[0x80, 0x80]),
            Err(VarintError::Truncated { read_bytes: 2 })
        );
        assert_eq!(
            decode_i32(&[0x80, 0x80, 0x80, 0x80, 0x80, 0x00]),
            Err(VarintError::Overlong { bytes_max: 5 })
        );
        // Fifth byte 0x10 would be bit 32.
        assert_eq!(
            decode_i32(&[0xff, 0xff, 0xff, 0xff, 0x10]),
            Err(VarintError::Overflow { bits: 32 })
        );
        assert_eq!(
            decode_i64(&[0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x02]),
            Err(VarintError::Overflow { bits: 64 })
        );
        assert_eq!(
            decode_i64(&[0x80; 11]),
            Err(VarintError::Overlong { bytes_max: 10 })
        );
        // A padded but in-range encoding is accepted, as Kafka does.
        assert_eq!(decode_i32(&[0x82, 0x00]), Ok((1, 2)));
    }

    #[test]
    fn encoded_length_is_seven_bits_a_byte_at_every_width() {
        assert_eq!(unsigned_len(0), 1);
        for bits in 1..=64u32 {
            let lowest = 1u64 << (bits - 1);
            let highest = u64::MAX >> (64 - bits);
            let bytes = bits.div_ceil(7) as usize;
            assert_eq!(
                (unsigned_len(lowest), unsigned_len(highest)),
                (bytes, bytes)
            );
        }
    }

    #[test]
    fn varint_encode_into_slice_checks_room() {
        let mut out = [0u8; 1];
        assert_eq!(
            encode_i32(300, &mut out),
            Err(VarintError::BufferTooSmall {
                needed_bytes: 2,
                available_bytes: 1
            })
        );
        let mut out = [0u8; 10];
        assert_eq!(encode_i64(i64::MAX, &mut out), Ok(10));
        assert_eq!(decode_i64(&out), Ok((i64::MAX, 10)));
    }

    proptest! {
        #[test]
        fn varint_i32_round_trips(value: i32, tail: Vec<u8>) {
            let mut bytes = encode32(value);
            prop_assert_eq!(bytes.len(), encoded_len_i32(value));
            let len = bytes.len();
            bytes.extend_from_slice(&tail);
            prop_assert_eq!(decode_i32(&bytes), Ok((value, len)));
            let mut fixed = [0u8; VARINT_BYTES_MAX];
            prop_assert_eq!(encode_i32(value, &mut fixed), Ok(len));
            prop_assert_eq!(&fixed[..len], &bytes[..len]);
        }

        #[test]
        fn varint_i64_round_trips(value: i64, tail: Vec<u8>) {
            let mut bytes = encode64(value);
            prop_assert_eq!(bytes.len(), encoded_len_i64(value));
            let len = bytes.len();
            bytes.extend_from_slice(&tail);
            prop_assert_eq!(decode_i64(&bytes), Ok((value, len)));
        }

        #[test]
        fn varint_decode_never_panics(bytes: Vec<u8>) {
            if let Ok((value, len)) = decode_i32(&bytes) {
                prop_assert!(len <= VARINT_BYTES_MAX && len <= bytes.len());
                prop_assert!(encoded_len_i32(value) <= len);
            }
            if let Ok((value, len)) = decode_i64(&bytes) {
                prop_assert!(len <= VARLONG_BYTES_MAX && len <= bytes.len());
                prop_assert!(encoded_len_i64(value) <= len);
            }
        }
    }
}
