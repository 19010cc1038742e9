//! Kafka RecordBatch v2 (magic 2): the one record format of ringlog, on disk and on the wire.
//!
//! A batch is a 61-byte big-endian header followed by varint-encoded records:
//!
//! ```text
//! offset  size  field
//!      0     8  baseOffset            \ log overhead (12 bytes), not covered by the CRC
//!      8     4  batchLength           / (bytes after this field)
//!     12     4  partitionLeaderEpoch  not covered by the CRC
//!     16     1  magic (= 2)
//!     17     4  crc                   CRC-32C of bytes 21..end
//!     21     2  attributes            bits 0-2 compression, 3 timestamp type, 4 transactional, 5 control
//!     23     4  lastOffsetDelta
//!     27     8  baseTimestamp
//!     35     8  maxTimestamp
//!     43     8  producerId
//!     51     2  producerEpoch
//!     53     4  baseSequence
//!     57     4  recordsCount
//!     61     -  records (compressed as a whole when the codec bits are non-zero)
//! ```
//!
//! Each record is `length varint | attributes i8 | timestampDelta varlong | offsetDelta varint |
//! keyLength varint (-1 = null) | key | valueLength varint (-1 = null) | value | headerCount varint |
//! headers`, and each header `keyLength varint | key (UTF-8) | valueLength varint (-1 = null) | value`.
//!
//! Batches are never re-encoded: the broker checks them ([`validate`], and reads the records of
//! uncompressed ones: [`checked_records_max_timestamp`], the checks of [`validate_records`]),
//! stamps [`set_base_offset`] (outside the CRC) and serves the bytes as they came (save a
//! maxTimestamp that misstates the records, corrected with [`set_max_timestamp`]). Clients
//! encode with [`BatchBuilder`], split fetched bytes with [`BatchIter`] and read with [`records`]
//! (compressed batches: [`crate::compression::decompress`] their [`records_section`], then
//! [`decompressed_records`]).
//! Nothing here panics or allocates on behalf of the bytes it is given.

use std::iter::FusedIterator;

use thiserror::Error;

use crate::compression::{CompressError, Compressor};
use crate::varint::{self, VarintError};

/// Bytes of baseOffset + batchLength: the part of a batch that batchLength does not count.
pub const BATCH_OVERHEAD_BYTES: usize = 12;

/// Bytes of the fixed batch header, from baseOffset through recordsCount.
pub const BATCH_HEADER_BYTES: usize = 61;

/// Smallest valid batchLength: a header with no records.
pub const BATCH_LENGTH_MIN: i32 = (BATCH_HEADER_BYTES - BATCH_OVERHEAD_BYTES) as i32;

/// Default upper bound on a whole batch (header included) accepted by [`BatchHeader::parse`]
/// and [`BatchIter`], so that a corrupt length can never make a reader wait for or allocate
/// an absurd amount.
pub const BATCH_BYTES_MAX: usize = 64 << 20;

/// The only batch format version ringlog reads and writes.
pub const MAGIC_V2: i8 = 2;

/// A record length or null marker meaning "null" for keys, values and header values.
const NULL_LENGTH: i32 = -1;

/// Byte offsets of the header fields that are read or patched on their own.
const LENGTH_OFFSET: usize = 8;
const PARTITION_LEADER_EPOCH_OFFSET: usize = 12;
const MAGIC_OFFSET: usize = 16;
const CRC_OFFSET: usize = 17;
/// The CRC covers everything from the attributes to the end of the batch.
const CRC_COVERED_FROM: usize = 21;
const PRODUCER_ID_OFFSET: usize = 43;
const PRODUCER_EPOCH_OFFSET: usize = 51;
const BASE_SEQUENCE_OFFSET: usize = 53;
const MAX_TIMESTAMP_OFFSET: usize = 35;

/// Attribute bits.
const COMPRESSION_MASK: i16 = 0x07;
const TIMESTAMP_TYPE_BIT: i16 = 0x08;
const TRANSACTIONAL_BIT: i16 = 0x10;
const CONTROL_BIT: i16 = 0x20;

/// Why bytes are not a valid record batch, or why a record could not be added to one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum BatchError {
    /// Fewer bytes than the operation needs.
    #[error("batch truncated: need {needed_bytes} bytes, have {available_bytes}")]
    Truncated {
        /// Bytes required.
        needed_bytes: usize,
        /// Bytes available.
        available_bytes: usize,
    },
    /// batchLength below the empty-batch size or above the allowed maximum.
    #[error(
        "batchLength {batch_length} out of range (at least 49, whole batch at most {batch_bytes_max} bytes)"
    )]
    BadLength {
        /// The batchLength field as read.
        batch_length: i32,
        /// The whole-batch limit in force.
        batch_bytes_max: usize,
    },
    /// The slice handed over is not exactly one batch long.
    #[error("batch is {total_bytes} bytes by its batchLength but the slice holds {slice_bytes}")]
    LengthMismatch {
        /// batchLength + 12.
        total_bytes: usize,
        /// Length of the slice.
        slice_bytes: usize,
    },
    /// Not a v2 batch (0 and 1 are Kafka's legacy message sets).
    #[error("unsupported magic {0}: only record batch v2 is supported")]
    BadMagic(i8),
    /// The stored CRC does not match the bytes.
    #[error("CRC-32C mismatch: header says {expected:#010x}, bytes give {actual:#010x}")]
    BadCrc {
        /// CRC stored in the header.
        expected: u32,
        /// CRC computed over attributes..end.
        actual: u32,
    },
    /// A header field holds an impossible value.
    #[error("bad batch header: {0}")]
    BadHeader(&'static str),
    /// The compression codec bits name no known codec.
    #[error("unknown compression codec {0} in batch attributes")]
    UnknownCompression(u8),
    /// [`records`] was given a compressed batch: decompress its [`records_section`] and read
    /// it with [`decompressed_records`].
    #[error("batch is compressed with {0:?}; its records cannot be read without decompressing")]
    Compressed(Compression),
    /// A record is malformed.
    #[error("bad record: {0}")]
    BadRecord(&'static str),
    /// A varint inside a record is malformed.
    #[error("bad varint in record: {0}")]
    BadVarint(#[from] VarintError),
    /// [`BatchBuilder::push`]: the record would take the batch past its size limit.
    #[error(
        "record does not fit: batch would be {needed_bytes} bytes, limit is {batch_bytes_max}"
    )]
    TooLarge {
        /// Size the batch would have with the record.
        needed_bytes: usize,
        /// The builder's limit.
        batch_bytes_max: usize,
    },
}

/// Compression codec of a batch (attributes bits 0-2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// Records stored as they are.
    None,
    /// gzip.
    Gzip,
    /// Snappy (xerial framing).
    Snappy,
    /// LZ4 frame.
    Lz4,
    /// Zstandard.
    Zstd,
    /// Codec id 5-7, which Kafka does not define.
    Unknown(u8),
}

impl Compression {
    /// The attributes bits that name this codec.
    pub fn attribute_bits(self) -> i16 {
        match self {
            Compression::None => 0,
            Compression::Gzip => 1,
            Compression::Snappy => 2,
            Compression::Lz4 => 3,
            Compression::Zstd => 4,
            Compression::Unknown(id) => i16::from(id) & COMPRESSION_MASK,
        }
    }

    /// The codec named by batch attributes.
    pub fn from_attributes(attributes: i16) -> Compression {
        match (attributes & COMPRESSION_MASK) as u8 {
            0 => Compression::None,
            1 => Compression::Gzip,
            2 => Compression::Snappy,
            3 => Compression::Lz4,
            4 => Compression::Zstd,
            other => Compression::Unknown(other),
        }
    }
}

/// Whose clock the record timestamps are (attributes bit 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimestampType {
    /// Set by the producer.
    CreateTime,
    /// Set by the broker when it appended the batch.
    LogAppendTime,
}

/// The fixed 61-byte header of a record batch, decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    /// Offset of the first record; stamped by the broker.
    pub base_offset: i64,
    /// Bytes after the batchLength field (whole batch = this + 12).
    pub batch_length: i32,
    /// Leader epoch when the batch was appended; stamped by the broker, -1 from producers.
    pub partition_leader_epoch: i32,
    /// Format version, 2.
    pub magic: i8,
    /// CRC-32C of bytes 21..end as stored.
    pub crc: u32,
    /// Compression, timestamp type, transactional and control bits.
    pub attributes: i16,
    /// Offset of the last record minus `base_offset`.
    pub last_offset_delta: i32,
    /// Timestamp the record timestamp deltas are relative to.
    pub base_timestamp_ms: i64,
    /// Largest record timestamp in the batch.
    pub max_timestamp_ms: i64,
    /// Idempotent producer id, -1 if none.
    pub producer_id: i64,
    /// Idempotent producer epoch, -1 if none.
    pub producer_epoch: i16,
    /// Sequence number of the first record, -1 if none.
    pub base_sequence: i32,
    /// Number of records.
    pub records_count: i32,
}

impl BatchHeader {
    /// Decodes the header at the start of `bytes` (which must hold at least
    /// [`BATCH_HEADER_BYTES`]) and checks magic and that the batch length lies between an
    /// empty batch and [`BATCH_BYTES_MAX`]. Does not check the CRC or that the rest of
    /// the batch is present.
    pub fn parse(bytes: &[u8]) -> Result<BatchHeader, BatchError> {
        BatchHeader::parse_with_max(bytes, BATCH_BYTES_MAX)
    }

    /// [`BatchHeader::parse`] with a caller-chosen limit on the whole batch's size.
    pub fn parse_with_max(bytes: &[u8], batch_bytes_max: usize) -> Result<BatchHeader, BatchError> {
        let header = BatchHeader::decode(bytes)?;
        check_magic(header.magic)?;
        check_batch_length(header.batch_length, batch_bytes_max)?;
        Ok(header)
    }

    /// Encodes the header as it sits at the start of a batch.
    pub fn to_bytes(&self) -> [u8; BATCH_HEADER_BYTES] {
        let mut out = [0u8; BATCH_HEADER_BYTES];
        let fields: [&[u8]; 13] = [
            &self.base_offset.to_be_bytes(),
            &self.batch_length.to_be_bytes(),
            &self.partition_leader_epoch.to_be_bytes(),
            &self.magic.to_be_bytes(),
            &self.crc.to_be_bytes(),
            &self.attributes.to_be_bytes(),
            &self.last_offset_delta.to_be_bytes(),
            &self.base_timestamp_ms.to_be_bytes(),
            &self.max_timestamp_ms.to_be_bytes(),
            &self.producer_id.to_be_bytes(),
            &self.producer_epoch.to_be_bytes(),
            &self.base_sequence.to_be_bytes(),
            &self.records_count.to_be_bytes(),
        ];
        let mut at = 0;
        for field in fields {
            out[at..at + field.len()].copy_from_slice(field);
            at += field.len();
        }
        debug_assert_eq!(at, BATCH_HEADER_BYTES);
        out
    }

    /// Size of the whole batch in bytes: batchLength + 12 (0 + 12 for a negative batchLength,
    /// which [`BatchHeader::parse`] never returns).
    pub fn total_bytes(&self) -> usize {
        usize::try_from(self.batch_length).unwrap_or(0) + BATCH_OVERHEAD_BYTES
    }

    /// Offset of the last record: base offset + lastOffsetDelta.
    pub fn last_offset(&self) -> i64 {
        self.base_offset
            .saturating_add(i64::from(self.last_offset_delta))
    }

    /// Offset that follows this batch: last offset + 1.
    pub fn next_offset(&self) -> i64 {
        self.last_offset().saturating_add(1)
    }

    /// The compression codec of the records.
    pub fn compression(&self) -> Compression {
        Compression::from_attributes(self.attributes)
    }

    /// Whose clock the record timestamps are.
    pub fn timestamp_type(&self) -> TimestampType {
        if self.attributes & TIMESTAMP_TYPE_BIT != 0 {
            TimestampType::LogAppendTime
        } else {
            TimestampType::CreateTime
        }
    }

    /// Whether the batch belongs to a transaction.
    pub fn is_transactional(&self) -> bool {
        self.attributes & TRANSACTIONAL_BIT != 0
    }

    /// Whether the batch holds a transaction marker instead of user records.
    pub fn is_control(&self) -> bool {
        self.attributes & CONTROL_BIT != 0
    }

    /// Reads the header fields without judging them.
    fn decode(bytes: &[u8]) -> Result<BatchHeader, BatchError> {
        if bytes.len() < BATCH_HEADER_BYTES {
            return Err(BatchError::Truncated {
                needed_bytes: BATCH_HEADER_BYTES,
                available_bytes: bytes.len(),
            });
        }
        let mut cursor = Cursor::new(bytes);
        Ok(BatchHeader {
            base_offset: i64::from_be_bytes(cursor.fixed()?),
            batch_length: i32::from_be_bytes(cursor.fixed()?),
            partition_leader_epoch: i32::from_be_bytes(cursor.fixed()?),
            magic: i8::from_be_bytes(cursor.fixed()?),
            crc: u32::from_be_bytes(cursor.fixed()?),
            attributes: i16::from_be_bytes(cursor.fixed()?),
            last_offset_delta: i32::from_be_bytes(cursor.fixed()?),
            base_timestamp_ms: i64::from_be_bytes(cursor.fixed()?),
            max_timestamp_ms: i64::from_be_bytes(cursor.fixed()?),
            producer_id: i64::from_be_bytes(cursor.fixed()?),
            producer_epoch: i16::from_be_bytes(cursor.fixed()?),
            base_sequence: i32::from_be_bytes(cursor.fixed()?),
            records_count: i32::from_be_bytes(cursor.fixed()?),
        })
    }
}

/// Fully checks ONE batch that occupies exactly `bytes`: the slice length matches
/// batchLength, magic is 2, the CRC-32C matches, the codec is known, lastOffsetDelta >= 0,
/// 0 <= recordsCount <= lastOffsetDelta + 1. Reads only the header and runs the CRC; records
/// are not decoded (see [`validate_records`]). The size limit here is the slice itself,
/// [`BATCH_BYTES_MAX`] is not applied.
pub fn validate(bytes: &[u8]) -> Result<BatchHeader, BatchError> {
    structure(bytes, true)
}

/// [`validate`] but for the CRC, for a batch whose CRC was checked already (on its way in,
/// by a checking [`BatchIter`]): the CRC is a pass over every byte, which is not worth taking
/// twice.
pub fn validate_crc_checked(bytes: &[u8]) -> Result<BatchHeader, BatchError> {
    structure(bytes, false)
}

/// Everything [`validate`] checks, and for an uncompressed batch also decodes every record:
/// exactly recordsCount well-formed records that fill the batch, offsetDeltas strictly
/// ascending within 0..=lastOffsetDelta, header keys UTF-8. Compressed batches get only the
/// [`validate`] checks, since ringlog stores them as sent.
pub fn validate_records(bytes: &[u8]) -> Result<BatchHeader, BatchError> {
    let header = validate(bytes)?;
    if header.compression() != Compression::None {
        return Ok(header);
    }
    for record in records(bytes)? {
        for record_header in record?.headers {
            record_header?;
        }
    }
    Ok(header)
}

/// Reads every record of a batch whose header and CRC were checked already (it came from a
/// checking [`BatchIter`]), with the checks of [`validate_records`], and returns the newest
/// record timestamp; `None` for a compressed batch (not decoded: stored as sent).
pub fn checked_records_max_timestamp(bytes: &[u8]) -> Result<Option<i64>, BatchError> {
    let header = BatchHeader::decode(bytes)?;
    if header.compression() != Compression::None {
        return Ok(None);
    }
    let mut max_timestamp_ms = i64::MIN;
    // Reading a record checks its headers too (see `read_record`).
    for record in records(bytes)? {
        max_timestamp_ms = max_timestamp_ms.max(record?.timestamp_ms(header.base_timestamp_ms));
    }
    Ok(Some(max_timestamp_ms))
}

/// Sets a batch's maxTimestamp and recomputes its CRC, which covers it: for a batch whose
/// header disagrees with its records (Kafka's broker corrects it the same way).
pub fn set_max_timestamp(batch: &mut [u8], max_timestamp_ms: i64) -> Result<(), BatchError> {
    patch(batch, MAX_TIMESTAMP_OFFSET, &max_timestamp_ms.to_be_bytes())?;
    seal(batch)
}

/// Stamps the base offset into a batch. The CRC does not cover it, so nothing else changes.
pub fn set_base_offset(batch: &mut [u8], base_offset: i64) -> Result<(), BatchError> {
    patch(batch, 0, &base_offset.to_be_bytes())
}

/// Stamps the partition leader epoch into a batch. The CRC does not cover it either.
pub fn set_partition_leader_epoch(batch: &mut [u8], epoch: i32) -> Result<(), BatchError> {
    patch(batch, PARTITION_LEADER_EPOCH_OFFSET, &epoch.to_be_bytes())
}

/// Stamps the idempotent producer fields (producerId, producerEpoch, baseSequence) into a
/// finished batch and recomputes its CRC, which covers them. For a producer that assigns
/// sequence numbers when a batch is first sent rather than when it is built.
pub fn set_producer_fields(
    batch: &mut [u8],
    producer_id: i64,
    producer_epoch: i16,
    base_sequence: i32,
) -> Result<(), BatchError> {
    if batch.len() < BATCH_HEADER_BYTES {
        return Err(BatchError::Truncated {
            needed_bytes: BATCH_HEADER_BYTES,
            available_bytes: batch.len(),
        });
    }
    patch(batch, PRODUCER_ID_OFFSET, &producer_id.to_be_bytes())?;
    patch(batch, PRODUCER_EPOCH_OFFSET, &producer_epoch.to_be_bytes())?;
    patch(batch, BASE_SEQUENCE_OFFSET, &base_sequence.to_be_bytes())?;
    seal(batch)
}

/// Computes a batch's CRC and stores it: after a change to the bytes it covers, and for a
/// batch from [`BatchBuilder::finish_unsealed`] sent without [`set_producer_fields`].
pub fn seal(batch: &mut [u8]) -> Result<(), BatchError> {
    if batch.len() < BATCH_HEADER_BYTES {
        return Err(BatchError::Truncated {
            needed_bytes: BATCH_HEADER_BYTES,
            available_bytes: batch.len(),
        });
    }
    let crc = crc_of(batch);
    patch(batch, CRC_OFFSET, &crc.to_be_bytes())
}

/// CRC-32C of the part of `batch` the CRC field covers (attributes..end).
pub fn crc_of(batch: &[u8]) -> u32 {
    crc32c::crc32c(batch.get(CRC_COVERED_FROM..).unwrap_or_default())
}

/// Header decode plus every check of [`validate`], the CRC only if `verify_crc`. The CRC
/// comes before the field checks so that damage is reported as damage.
fn structure(bytes: &[u8], verify_crc: bool) -> Result<BatchHeader, BatchError> {
    let header = BatchHeader::decode(bytes)?;
    check_magic(header.magic)?;
    check_batch_length(header.batch_length, usize::MAX)?;
    if header.total_bytes() != bytes.len() {
        return Err(BatchError::LengthMismatch {
            total_bytes: header.total_bytes(),
            slice_bytes: bytes.len(),
        });
    }
    if verify_crc {
        let actual = crc_of(bytes);
        if actual != header.crc {
            return Err(BatchError::BadCrc {
                expected: header.crc,
                actual,
            });
        }
    }
    check_fields(&header)?;
    Ok(header)
}

fn check_magic(magic: i8) -> Result<(), BatchError> {
    if magic == MAGIC_V2 {
        Ok(())
    } else {
        Err(BatchError::BadMagic(magic))
    }
}

/// Checks batchLength against the empty batch and the limit; returns the whole batch size.
fn check_batch_length(batch_length: i32, batch_bytes_max: usize) -> Result<usize, BatchError> {
    let bad = BatchError::BadLength {
        batch_length,
        batch_bytes_max,
    };
    if batch_length < BATCH_LENGTH_MIN {
        return Err(bad);
    }
    let total_bytes = usize::try_from(batch_length).map_err(|_| bad)? + BATCH_OVERHEAD_BYTES;
    if total_bytes > batch_bytes_max {
        return Err(bad);
    }
    Ok(total_bytes)
}

/// Header fields that must hold whatever the records look like.
fn check_fields(header: &BatchHeader) -> Result<(), BatchError> {
    if let Compression::Unknown(codec) = header.compression() {
        return Err(BatchError::UnknownCompression(codec));
    }
    if header.last_offset_delta < 0 {
        return Err(BatchError::BadHeader("negative lastOffsetDelta"));
    }
    if header.records_count < 0 {
        return Err(BatchError::BadHeader("negative recordsCount"));
    }
    // Records have distinct offsets within the batch's offset range (compaction may leave fewer).
    if i64::from(header.records_count) > i64::from(header.last_offset_delta) + 1 {
        return Err(BatchError::BadHeader(
            "recordsCount exceeds lastOffsetDelta + 1",
        ));
    }
    Ok(())
}

fn patch(batch: &mut [u8], at: usize, field: &[u8]) -> Result<(), BatchError> {
    let available_bytes = batch.len();
    let dst = batch
        .get_mut(at..at + field.len())
        .ok_or(BatchError::Truncated {
            needed_bytes: at + field.len(),
            available_bytes,
        })?;
    dst.copy_from_slice(field);
    Ok(())
}

/// Splits a byte slice (a fetch response, a segment region) into consecutive batches.
///
/// Yields each whole batch with its header. By default every batch is checked as by
/// [`validate`] (CRC included); [`BatchIter::without_crc_check`] skips the CRC. A trailing
/// incomplete batch ends the iteration cleanly (`None`) and stays in [`BatchIter::remaining`].
/// A batch that can never become valid (bad magic, a length out of range, a CRC mismatch)
/// is yielded as an error once, after which the iterator is exhausted; [`BatchIter::consumed_bytes`]
/// then points at the start of that batch, which is where recovery truncates.
#[derive(Debug, Clone)]
pub struct BatchIter<'a> {
    bytes: &'a [u8],
    position: usize,
    batch_bytes_max: usize,
    verify_crc: bool,
    failed: bool,
}

impl<'a> BatchIter<'a> {
    /// Iterates the batches of `bytes`, checking each CRC, with the [`BATCH_BYTES_MAX`] limit.
    pub fn new(bytes: &'a [u8]) -> BatchIter<'a> {
        BatchIter {
            bytes,
            position: 0,
            batch_bytes_max: BATCH_BYTES_MAX,
            verify_crc: true,
            failed: false,
        }
    }

    /// Uses `batch_bytes_max` as the limit on one whole batch instead of [`BATCH_BYTES_MAX`].
    pub fn with_batch_bytes_max(mut self, batch_bytes_max: usize) -> BatchIter<'a> {
        self.batch_bytes_max = batch_bytes_max;
        self
    }

    /// Skips the CRC check (for bytes whose CRC was already checked, e.g. on their way in).
    pub fn without_crc_check(mut self) -> BatchIter<'a> {
        self.verify_crc = false;
        self
    }

    /// Bytes of the whole batches yielded so far (the start of any error or incomplete tail).
    pub fn consumed_bytes(&self) -> usize {
        self.position
    }

    /// The bytes not yet yielded: empty, an incomplete trailing batch, or the bad batch and
    /// everything after it.
    pub fn remaining(&self) -> &'a [u8] {
        self.bytes.get(self.position..).unwrap_or_default()
    }

    /// The next whole batch at the start of `rest`, `None` if it is incomplete.
    fn next_batch(&self, rest: &'a [u8]) -> Result<Option<(BatchHeader, &'a [u8])>, BatchError> {
        let mut cursor = Cursor::new(rest);
        cursor.skip(LENGTH_OFFSET)?;
        let batch_length = i32::from_be_bytes(cursor.fixed()?);
        // Judge magic as soon as it is there: bytes that are no v2 batch must not be
        // mistaken for a batch still arriving.
        if let Some(&magic) = rest.get(MAGIC_OFFSET) {
            check_magic(magic as i8)?;
        }
        let total_bytes = check_batch_length(batch_length, self.batch_bytes_max)?;
        let Some(batch) = rest.get(..total_bytes) else {
            return Ok(None);
        };
        Ok(Some((structure(batch, self.verify_crc)?, batch)))
    }
}

impl<'a> Iterator for BatchIter<'a> {
    type Item = Result<(BatchHeader, &'a [u8]), BatchError>;

    fn next(&mut self) -> Option<Self::Item> {
        let rest = self.remaining();
        if self.failed || rest.len() < BATCH_OVERHEAD_BYTES {
            return None;
        }
        match self.next_batch(rest) {
            Ok(Some((header, batch))) => {
                self.position += batch.len();
                Some(Ok((header, batch)))
            }
            Ok(None) => None,
            Err(error) => {
                self.failed = true;
                Some(Err(error))
            }
        }
    }
}

impl FusedIterator for BatchIter<'_> {}

/// One record of an uncompressed batch, borrowing from the batch bytes.
#[derive(Debug, Clone)]
pub struct Record<'a> {
    /// Offset of the record minus the batch's base offset.
    pub offset_delta: i32,
    /// Timestamp of the record minus the batch's base timestamp.
    pub timestamp_delta_ms: i64,
    /// Record attributes (unused by Kafka, 0).
    pub attributes: i8,
    /// Key, `None` if null.
    pub key: Option<&'a [u8]>,
    /// Value, `None` if null (a tombstone).
    pub value: Option<&'a [u8]>,
    /// The record's headers, decoded as they are iterated.
    pub headers: HeaderIter<'a>,
}

impl Record<'_> {
    /// Absolute offset of the record in a batch based at `base_offset`.
    pub fn offset(&self, base_offset: i64) -> i64 {
        base_offset.saturating_add(i64::from(self.offset_delta))
    }

    /// Absolute timestamp of the record in a batch whose base timestamp is `base_timestamp_ms`.
    pub fn timestamp_ms(&self, base_timestamp_ms: i64) -> i64 {
        // Encoders compute the delta with wrapping arithmetic (Java longs), so undo it the same way.
        base_timestamp_ms.wrapping_add(self.timestamp_delta_ms)
    }
}

/// One record header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header<'a> {
    /// Header key (never null in Kafka).
    pub key: &'a str,
    /// Header value, `None` if null.
    pub value: Option<&'a [u8]>,
}

/// Iterates a record's headers. Their layout was checked when the record was read, so the
/// only error left is a key that is not UTF-8.
#[derive(Debug, Clone)]
pub struct HeaderIter<'a> {
    cursor: Cursor<'a>,
    headers_left: i32,
}

impl<'a> HeaderIter<'a> {
    /// Headers not yet yielded.
    pub fn headers_left(&self) -> usize {
        usize::try_from(self.headers_left).unwrap_or(0)
    }
}

impl<'a> Iterator for HeaderIter<'a> {
    type Item = Result<Header<'a>, BatchError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.headers_left <= 0 {
            return None;
        }
        self.headers_left -= 1;
        let header = read_header(&mut self.cursor).and_then(|(key, value)| {
            let key = std::str::from_utf8(key)
                .map_err(|_| BatchError::BadRecord("header key is not UTF-8"))?;
            Ok(Header { key, value })
        });
        if header.is_err() {
            self.headers_left = 0;
        }
        Some(header)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (0, Some(self.headers_left()))
    }
}

impl FusedIterator for HeaderIter<'_> {}

/// Reads the records of one uncompressed batch that occupies exactly `batch`, without
/// allocating. Checks the header as [`validate`] does except the CRC (check it first, or get
/// the batch from a checking [`BatchIter`]); each record is checked as it is read, and the
/// iteration ends with an error if the batch holds more or fewer records than recordsCount
/// or offsetDeltas are not strictly ascending within 0..=lastOffsetDelta.
pub fn records(batch: &[u8]) -> Result<RecordIter<'_>, BatchError> {
    let header = structure(batch, false)?;
    let compression = header.compression();
    if compression != Compression::None {
        return Err(BatchError::Compressed(compression));
    }
    let mut cursor = Cursor::new(batch);
    cursor.skip(BATCH_HEADER_BYTES)?;
    Ok(RecordIter {
        header,
        cursor,
        records_left: header.records_count,
        previous_offset_delta: -1,
        failed: false,
    })
}

/// The header and the records section (the bytes after the fixed header) of one batch that
/// occupies exactly `batch`, whatever its codec, the header checked as [`records`] checks it.
/// For a compressed batch the section is what [`crate::compression::decompress`] takes.
pub fn records_section(batch: &[u8]) -> Result<(BatchHeader, &[u8]), BatchError> {
    let header = structure(batch, false)?;
    let section = batch.get(BATCH_HEADER_BYTES..).unwrap_or_default();
    Ok((header, section))
}

/// Reads the records of a compressed batch whose header is `header` from its decompressed
/// records section (see [`crate::compression`]), without allocating; each record is checked
/// as [`records`] checks it.
pub fn decompressed_records<'a>(header: &BatchHeader, section: &'a [u8]) -> RecordIter<'a> {
    RecordIter {
        header: *header,
        cursor: Cursor::new(section),
        records_left: header.records_count,
        previous_offset_delta: -1,
        failed: false,
    }
}

/// Iterator over the records of a batch; see [`records`] and [`decompressed_records`].
#[derive(Debug, Clone)]
pub struct RecordIter<'a> {
    header: BatchHeader,
    cursor: Cursor<'a>,
    records_left: i32,
    previous_offset_delta: i32,
    failed: bool,
}

impl<'a> RecordIter<'a> {
    /// The batch header, for the base offset and timestamp the records are relative to.
    pub fn header(&self) -> &BatchHeader {
        &self.header
    }

    /// Reads the next record and checks its offset delta.
    fn next_record(&mut self) -> Result<Record<'a>, BatchError> {
        if self.cursor.is_empty() {
            return Err(BatchError::BadRecord(
                "batch ends before recordsCount records",
            ));
        }
        let record = read_record(&mut self.cursor)?;
        if record.offset_delta <= self.previous_offset_delta {
            return Err(BatchError::BadRecord("offsetDelta not strictly ascending"));
        }
        if record.offset_delta > self.header.last_offset_delta {
            return Err(BatchError::BadRecord("offsetDelta beyond lastOffsetDelta"));
        }
        self.previous_offset_delta = record.offset_delta;
        Ok(record)
    }
}

impl<'a> Iterator for RecordIter<'a> {
    type Item = Result<Record<'a>, BatchError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        let item = if self.records_left > 0 {
            self.records_left -= 1;
            self.next_record()
        } else if !self.cursor.is_empty() {
            Err(BatchError::BadRecord(
                "bytes after the last of recordsCount records",
            ))
        } else {
            return None;
        };
        self.failed = item.is_err();
        Some(item)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        // One more item is possible: the error for trailing bytes.
        let left = usize::try_from(self.records_left).unwrap_or(0);
        (0, Some(left + 1))
    }
}

impl FusedIterator for RecordIter<'_> {}

/// Reads one length-prefixed record and checks that its fields exactly fill that length.
fn read_record<'a>(cursor: &mut Cursor<'a>) -> Result<Record<'a>, BatchError> {
    let length = usize::try_from(cursor.varint()?)
        .map_err(|_| BatchError::BadRecord("negative record length"))?;
    let body = cursor.take(length).ok_or(BatchError::BadRecord(
        "record length runs past the end of the batch",
    ))?;
    let mut body = Cursor::new(body);
    let attributes = i8::from_be_bytes(
        body.fixed()
            .map_err(|_| BatchError::BadRecord("record too short for its attributes"))?,
    );
    let timestamp_delta_ms = body.varlong()?;
    let offset_delta = body.varint()?;
    let key = read_nullable(&mut body, "key runs past the end of the record")?;
    let value = read_nullable(&mut body, "value runs past the end of the record")?;
    let header_count = body.varint()?;
    if header_count < 0 {
        return Err(BatchError::BadRecord("negative header count"));
    }
    let headers = HeaderIter {
        cursor: body.clone(),
        headers_left: header_count,
    };
    // Walk the headers once so that the record is known to be well formed before it is
    // handed out; each takes at least two bytes, so a huge count fails fast.
    for _ in 0..header_count {
        read_header(&mut body)?;
    }
    if !body.is_empty() {
        return Err(BatchError::BadRecord(
            "record has bytes after its last header",
        ));
    }
    Ok(Record {
        offset_delta,
        timestamp_delta_ms,
        attributes,
        key,
        value,
        headers,
    })
}

/// Reads one header's key and value bytes.
fn read_header<'a>(cursor: &mut Cursor<'a>) -> Result<(&'a [u8], Option<&'a [u8]>), BatchError> {
    let key_length = usize::try_from(cursor.varint()?)
        .map_err(|_| BatchError::BadRecord("negative header key length"))?;
    let key = cursor.take(key_length).ok_or(BatchError::BadRecord(
        "header key runs past the end of the record",
    ))?;
    let value = read_nullable(cursor, "header value runs past the end of the record")?;
    Ok((key, value))
}

/// Reads `length varint | bytes` where length -1 means null.
fn read_nullable<'a>(
    cursor: &mut Cursor<'a>,
    past_end: &'static str,
) -> Result<Option<&'a [u8]>, BatchError> {
    let length = cursor.varint()?;
    if length == NULL_LENGTH {
        return Ok(None);
    }
    let length = usize::try_from(length).map_err(|_| BatchError::BadRecord("length below -1"))?;
    cursor
        .take(length)
        .map(Some)
        .ok_or(BatchError::BadRecord(past_end))
}

/// A read position in a byte slice whose reads fail instead of panicking.
#[derive(Debug, Clone)]
struct Cursor<'a> {
    bytes: &'a [u8],
    position: usize,
}

impl<'a> Cursor<'a> {
    fn new(bytes: &'a [u8]) -> Cursor<'a> {
        Cursor { bytes, position: 0 }
    }

    fn rest(&self) -> &'a [u8] {
        self.bytes.get(self.position..).unwrap_or_default()
    }

    fn is_empty(&self) -> bool {
        self.rest().is_empty()
    }

    /// The next `length` bytes, `None` if fewer remain.
    fn take(&mut self, length: usize) -> Option<&'a [u8]> {
        let taken = self.rest().get(..length)?;
        self.position += length;
        Some(taken)
    }

    fn skip(&mut self, length: usize) -> Result<(), BatchError> {
        self.fixed_slice(length).map(|_| ())
    }

    fn fixed_slice(&mut self, length: usize) -> Result<&'a [u8], BatchError> {
        let available_bytes = self.bytes.len();
        self.take(length).ok_or(BatchError::Truncated {
            needed_bytes: self.position.saturating_add(length),
            available_bytes,
        })
    }

    /// The next `N` bytes as an array, for big-endian header fields.
    fn fixed<const N: usize>(&mut self) -> Result<[u8; N], BatchError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.fixed_slice(N)?);
        Ok(out)
    }

    fn varint(&mut self) -> Result<i32, BatchError> {
        let (value, length) = varint::decode_i32(self.rest())?;
        self.position += length;
        Ok(value)
    }

    fn varlong(&mut self) -> Result<i64, BatchError> {
        let (value, length) = varint::decode_i64(self.rest())?;
        self.position += length;
        Ok(value)
    }
}

/// Encodes records into a v2 batch inside a caller-owned buffer that is reused from batch
/// to batch, so a warmed-up builder allocates nothing per record.
///
/// Records go straight into the buffer behind a placeholder header; [`BatchBuilder::finish`]
/// fills the header and CRC. Producer fields default to -1 (not idempotent), attributes to 0
/// (uncompressed, create time), the partition leader epoch to -1 and the base offset to 0,
/// as Kafka's producer sends them.
#[derive(Debug)]
pub struct BatchBuilder {
    buf: Vec<u8>,
    base_timestamp_ms: i64,
    max_timestamp_ms: Option<i64>,
    record_count: i32,
    producer_id: i64,
    producer_epoch: i16,
    base_sequence: i32,
    attributes: i16,
    batch_bytes_max: usize,
    /// Set once the records section is compressed: it takes no more records.
    compressed: Option<Compression>,
}

impl BatchBuilder {
    /// Starts a batch in `buf` (its contents are discarded, its capacity kept) whose record
    /// timestamps are relative to `base_timestamp_ms`.
    pub fn new(buf: Vec<u8>, base_timestamp_ms: i64) -> BatchBuilder {
        let mut builder = BatchBuilder {
            buf,
            base_timestamp_ms,
            max_timestamp_ms: None,
            record_count: 0,
            producer_id: -1,
            producer_epoch: -1,
            base_sequence: -1,
            attributes: 0,
            batch_bytes_max: BATCH_BYTES_MAX,
            compressed: None,
        };
        builder.reset(base_timestamp_ms);
        builder
    }

    /// Drops the records and starts a new batch in the same buffer. Producer fields,
    /// attributes and the size limit are kept (advance the base sequence yourself).
    pub fn reset(&mut self, base_timestamp_ms: i64) {
        self.buf.clear();
        self.buf.resize(BATCH_HEADER_BYTES, 0);
        self.base_timestamp_ms = base_timestamp_ms;
        self.max_timestamp_ms = None;
        self.record_count = 0;
        self.compressed = None;
    }

    /// Gives the buffer back (holding the last finished batch if `finish` was the last call).
    pub fn into_buf(self) -> Vec<u8> {
        self.buf
    }

    /// Sets the idempotent producer id.
    pub fn set_producer_id(&mut self, producer_id: i64) {
        self.producer_id = producer_id;
    }

    /// Sets the idempotent producer epoch.
    pub fn set_producer_epoch(&mut self, producer_epoch: i16) {
        self.producer_epoch = producer_epoch;
    }

    /// Sets the sequence number of the batch's first record.
    pub fn set_base_sequence(&mut self, base_sequence: i32) {
        self.base_sequence = base_sequence;
    }

    /// Marks the batch as part of a transaction (attributes bit 4).
    pub fn set_transactional(&mut self, transactional: bool) {
        if transactional {
            self.attributes |= TRANSACTIONAL_BIT;
        } else {
            self.attributes &= !TRANSACTIONAL_BIT;
        }
    }

    /// Limits the whole batch to `batch_bytes_max` bytes (at most what batchLength can say);
    /// [`BatchBuilder::push`] refuses records beyond it.
    pub fn set_batch_bytes_max(&mut self, batch_bytes_max: usize) {
        let representable = i32::MAX as usize + BATCH_OVERHEAD_BYTES;
        self.batch_bytes_max = batch_bytes_max.min(representable);
    }

    /// Records added since the batch was started.
    pub fn record_count(&self) -> usize {
        usize::try_from(self.record_count).unwrap_or(0)
    }

    /// Size of the batch if it were finished now.
    pub fn bytes_len(&self) -> usize {
        self.buf.len()
    }

    /// Appends a record. Its offset delta is the number of records before it, its timestamp
    /// is stored relative to the base timestamp. Fails with [`BatchError::TooLarge`], leaving
    /// the batch as it was, when the record would take the batch past its size limit; finish
    /// the batch and push into a new one (a record that does not fit an empty batch never will).
    pub fn push(
        &mut self,
        timestamp_ms: i64,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[(&str, Option<&[u8]>)],
    ) -> Result<(), BatchError> {
        if let Some(codec) = self.compressed {
            return Err(BatchError::Compressed(codec));
        }
        let offset_delta = self.record_count;
        // Java longs wrap; do the same so that any timestamp round-trips.
        let timestamp_delta_ms = timestamp_ms.wrapping_sub(self.base_timestamp_ms);
        let body_bytes = record_body_bytes(timestamp_delta_ms, offset_delta, key, value, headers);
        let too_large = |needed_bytes| BatchError::TooLarge {
            needed_bytes,
            batch_bytes_max: self.batch_bytes_max,
        };
        let body_length = i32::try_from(body_bytes).map_err(|_| too_large(usize::MAX))?;
        let record_bytes = varint::encoded_len_i32(body_length) + body_bytes;
        let needed_bytes = self.buf.len().saturating_add(record_bytes);
        if needed_bytes > self.batch_bytes_max || offset_delta == i32::MAX {
            return Err(too_large(needed_bytes));
        }
        // From here on every length fits an i32: the whole batch does.
        let start = self.buf.len();
        self.buf.resize(start + record_bytes, 0);
        let mut out = RecordWriter {
            out: &mut self.buf[start..],
            at: 0,
        };
        out.varint(i64::from(body_length));
        out.byte(0); // record attributes, unused
        out.varint(timestamp_delta_ms);
        out.varint(i64::from(offset_delta));
        out.nullable(key);
        out.nullable(value);
        out.varint(headers.len() as i64);
        for &(header_key, header_value) in headers {
            out.nullable(Some(header_key.as_bytes()));
            out.nullable(header_value);
        }
        debug_assert_eq!(out.at, record_bytes);
        self.record_count += 1;
        self.max_timestamp_ms = Some(
            self.max_timestamp_ms
                .map_or(timestamp_ms, |max| max.max(timestamp_ms)),
        );
        Ok(())
    }

    /// Fills the header (lastOffsetDelta, max timestamp, count, length, CRC) and returns the
    /// finished batch. More records may still be pushed and the batch finished again.
    /// A batch with no records is valid but Kafka producers never send one.
    pub fn finish(&mut self) -> &[u8] {
        self.finish_unsealed();
        let crc = crc_of(&self.buf);
        self.buf[CRC_OFFSET..CRC_COVERED_FROM].copy_from_slice(&crc.to_be_bytes());
        &self.buf
    }

    /// [`BatchBuilder::finish_unsealed`] with the records section compressed by `codec` (as
    /// Kafka's producer does when it closes a batch): the section is compressed into
    /// `scratch` (cleared first; reuse it from batch to batch) and copied back behind the
    /// header, and the codec bits and batchLength are set. The CRC is left 0, as there.
    ///
    /// When the compressed section is not smaller than the plain one, the batch is left
    /// uncompressed (codec bits 0), as librdkafka does (Kafka's Java producer keeps it
    /// compressed): a batch never grows past its size limit, and readers have nothing to
    /// decompress. [`Compression::None`] finishes the batch uncompressed. On error the batch
    /// is finished uncompressed and may be sent as such.
    ///
    /// Once compressed, the batch takes no more records ([`BatchBuilder::push`] fails with
    /// [`BatchError::Compressed`]) until [`BatchBuilder::reset`].
    pub fn finish_unsealed_compressed(
        &mut self,
        codec: Compression,
        compressor: &mut Compressor,
        scratch: &mut Vec<u8>,
    ) -> Result<&[u8], CompressError> {
        self.finish_unsealed();
        if codec == Compression::None || self.compressed.is_some() {
            return Ok(&self.buf);
        }
        scratch.clear();
        compressor.compress(codec, &self.buf[BATCH_HEADER_BYTES..], scratch)?;
        if scratch.len() >= self.buf.len() - BATCH_HEADER_BYTES {
            return Ok(&self.buf);
        }
        self.buf.truncate(BATCH_HEADER_BYTES);
        self.buf.extend_from_slice(scratch);
        let attributes = (self.attributes & !COMPRESSION_MASK) | codec.attribute_bits();
        let batch_length = length_i32(self.buf.len() - BATCH_OVERHEAD_BYTES);
        self.buf[LENGTH_OFFSET..LENGTH_OFFSET + 4].copy_from_slice(&batch_length.to_be_bytes());
        self.buf[CRC_COVERED_FROM..CRC_COVERED_FROM + 2].copy_from_slice(&attributes.to_be_bytes());
        self.compressed = Some(codec);
        Ok(&self.buf)
    }

    /// [`BatchBuilder::finish`] but for the CRC, which is left 0: for a batch whose producer
    /// fields are stamped before it is sent ([`set_producer_fields`] computes the CRC then,
    /// [`seal`] does if they are not), so that the CRC pass over every byte is taken once.
    /// Not a valid batch until then.
    pub fn finish_unsealed(&mut self) -> &[u8] {
        debug_assert!(
            self.buf.len() >= BATCH_HEADER_BYTES && self.buf.len() <= self.batch_bytes_max
        );
        let header = BatchHeader {
            base_offset: 0,
            batch_length: length_i32(self.buf.len() - BATCH_OVERHEAD_BYTES),
            partition_leader_epoch: -1,
            magic: MAGIC_V2,
            crc: 0,
            attributes: self.attributes | self.compressed.map_or(0, Compression::attribute_bits),
            last_offset_delta: (self.record_count - 1).max(0),
            base_timestamp_ms: self.base_timestamp_ms,
            max_timestamp_ms: self.max_timestamp_ms.unwrap_or(self.base_timestamp_ms),
            producer_id: self.producer_id,
            producer_epoch: self.producer_epoch,
            base_sequence: self.base_sequence,
            records_count: self.record_count,
        };
        // The buffer always starts with the header placeholder (see reset).
        self.buf[..BATCH_HEADER_BYTES].copy_from_slice(&header.to_bytes());
        &self.buf
    }
}

/// Bytes of a record after its length varint. Saturates instead of overflowing so that an
/// absurd record is refused by the size check.
fn record_body_bytes(
    timestamp_delta_ms: i64,
    offset_delta: i32,
    key: Option<&[u8]>,
    value: Option<&[u8]>,
    headers: &[(&str, Option<&[u8]>)],
) -> usize {
    let fixed =
        1 + varint::encoded_len_i64(timestamp_delta_ms) + varint::encoded_len_i32(offset_delta);
    let mut total = fixed
        .saturating_add(nullable_bytes(key))
        .saturating_add(nullable_bytes(value))
        .saturating_add(varint::encoded_len_i32(length_i32(headers.len())));
    for &(header_key, header_value) in headers {
        total = total
            .saturating_add(nullable_bytes(Some(header_key.as_bytes())))
            .saturating_add(nullable_bytes(header_value));
    }
    total
}

/// Encoded size of `length varint | bytes` (or the null marker).
fn nullable_bytes(bytes: Option<&[u8]>) -> usize {
    match bytes {
        None => varint::encoded_len_i32(NULL_LENGTH),
        Some(bytes) => varint::encoded_len_i32(length_i32(bytes.len())).saturating_add(bytes.len()),
    }
}

/// Writes a record into the bytes made for it (as many as [`record_body_bytes`] and its length
/// say), through a slice and a position that stay in registers: pushed onto the Vec one by one,
/// every byte would reload the Vec's length and capacity (a byte store may alias them).
/// Writes past the end are dropped, which the sizes computed beforehand rule out.
struct RecordWriter<'a> {
    out: &'a mut [u8],
    at: usize,
}

impl RecordWriter<'_> {
    fn byte(&mut self, byte: u8) {
        if let Some(slot) = self.out.get_mut(self.at) {
            *slot = byte;
        }
        self.at += 1;
    }

    /// The zigzag varint of `value`: i32 values give the same bytes as a varint, i64 as a
    /// varlong.
    fn varint(&mut self, value: i64) {
        let rest = self.out.get_mut(self.at..).unwrap_or_default();
        self.at +=
            varint::encode_i64(value, rest).unwrap_or_else(|_| varint::encoded_len_i64(value));
    }

    /// `length varint | bytes`, or the null marker.
    fn nullable(&mut self, bytes: Option<&[u8]>) {
        let Some(bytes) = bytes else {
            self.varint(i64::from(NULL_LENGTH));
            return;
        };
        self.varint(i64::from(length_i32(bytes.len())));
        if let Some(slot) = self.out.get_mut(self.at..self.at + bytes.len()) {
            slot.copy_from_slice(bytes);
        }
        self.at += bytes.len();
    }
}

/// A length as Kafka stores it. Lengths that do not fit saturate; they only occur in records
/// that the size check then refuses, so nothing saturated is ever written.
fn length_i32(length: usize) -> i32 {
    i32::try_from(length).unwrap_or(i32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Batches encoded by kafka-python 3.0.12's DefaultRecordBatchBuilder (a port of Kafka's
    /// Java encoder), which writes partitionLeaderEpoch 0 where Java writes -1.
    const KAFKA_PYTHON_BATCH_1: &str = "00000000000000000000004c0000000002c6eaf9190000000000010000018bcfe568000000018bcfe56805ffffffffffffffffffffffffffff0000000216000000010a68656c6c6f001c000a02026b010402680276026e01";

    fn unhex(hex: &str) -> Vec<u8> {
        (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn producer_fields_are_stamped_with_a_new_crc() {
        let mut builder = BatchBuilder::new(Vec::new(), 5);
        builder.push(5, Some(b"k"), Some(b"v"), &[]).unwrap();
        builder.push(6, None, Some(b"w"), &[]).unwrap();
        let mut batch = builder.finish().to_vec();
        set_producer_fields(&mut batch, 42, 3, 1_000).unwrap();
        let header = validate_records(&batch).unwrap();
        assert_eq!(
            (
                header.producer_id,
                header.producer_epoch,
                header.base_sequence
            ),
            (42, 3, 1_000)
        );
        assert!(set_producer_fields(&mut batch[..60], 1, 1, 1).is_err());
    }

    #[test]
    fn an_unsealed_batch_is_valid_once_stamped_or_sealed() {
        let mut builder = BatchBuilder::new(Vec::new(), 5);
        builder.push(5, Some(b"k"), Some(b"v"), &[]).unwrap();
        let sealed = builder.finish().to_vec();
        let mut unsealed = builder.finish_unsealed().to_vec();
        assert!(matches!(
            validate(&unsealed),
            Err(BatchError::BadCrc { .. })
        ));
        let header = validate_crc_checked(&unsealed).unwrap();
        assert_eq!((header.crc, header.records_count), (0, 1));
        let mut stamped = unsealed.clone();
        seal(&mut unsealed).unwrap();
        assert_eq!(unsealed, sealed);
        set_producer_fields(&mut stamped, 42, 3, 1_000).unwrap();
        assert_eq!(validate_records(&stamped).unwrap().producer_id, 42);
        assert!(seal(&mut unsealed[..60]).is_err());
    }

    #[test]
    fn a_compressed_batch_reads_back_and_takes_no_more_records() {
        let mut compressor = Compressor::new();
        let mut scratch = Vec::new();
        let value = vec![b'v'; 300];
        for codec in [
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ] {
            let mut builder = BatchBuilder::new(Vec::new(), 1_000);
            builder.set_transactional(false);
            for i in 0..20i64 {
                builder
                    .push(1_000 + i, Some(b"key"), Some(&value), &[("h", Some(b"x"))])
                    .unwrap();
            }
            let plain = builder.finish().to_vec();
            let mut batch = builder
                .finish_unsealed_compressed(codec, &mut compressor, &mut scratch)
                .unwrap()
                .to_vec();
            assert!(batch.len() < plain.len() / 4, "{codec:?}: {}", batch.len());
            seal(&mut batch).unwrap();
            let header = validate(&batch).unwrap();
            assert_eq!(header.compression(), codec);
            assert_eq!(header.total_bytes(), batch.len());
            assert_eq!((header.records_count, header.last_offset_delta), (20, 19));
            assert_eq!(header.max_timestamp_ms, 1_019);
            let mut section = Vec::new();
            crate::compression::decompress(
                codec,
                &batch[BATCH_HEADER_BYTES..],
                &mut section,
                1 << 20,
            )
            .unwrap();
            assert_eq!(section, plain[BATCH_HEADER_BYTES..], "{codec:?}");
            // Finishing again keeps the codec bits; pushing is refused until reset.
            assert_eq!(
                BatchHeader::parse(builder.finish()).unwrap().compression(),
                codec
            );
            assert_eq!(
                builder.push(2_000, None, None, &[]),
                Err(BatchError::Compressed(codec))
            );
            builder.reset(3_000);
            builder.push(3_000, None, Some(b"plain"), &[]).unwrap();
            let again = builder.finish();
            assert_eq!(validate(again).unwrap().compression(), Compression::None);
        }
    }

    #[test]
    fn a_section_that_does_not_shrink_is_sent_plain() {
        let mut compressor = Compressor::new();
        let mut scratch = Vec::new();
        let mut builder = BatchBuilder::new(Vec::new(), 1);
        builder.push(1, None, Some(b"x"), &[]).unwrap();
        let plain = builder.finish().to_vec();
        for codec in [
            Compression::None,
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ] {
            let mut batch = builder
                .finish_unsealed_compressed(codec, &mut compressor, &mut scratch)
                .unwrap()
                .to_vec();
            seal(&mut batch).unwrap();
            assert_eq!(batch, plain, "{codec:?}");
        }
        assert_eq!(
            builder.finish_unsealed_compressed(
                Compression::Unknown(6),
                &mut compressor,
                &mut scratch
            ),
            Err(CompressError::UnsupportedCodec(Compression::Unknown(6)))
        );
    }

    fn fix_crc(batch: &mut [u8]) {
        let crc = crc_of(batch);
        batch[CRC_OFFSET..CRC_COVERED_FROM].copy_from_slice(&crc.to_be_bytes());
    }

    /// An owned record for comparisons.
    #[derive(Debug, Clone, PartialEq)]
    struct OwnedRecord {
        timestamp_ms: i64,
        key: Option<Vec<u8>>,
        value: Option<Vec<u8>>,
        headers: Vec<(String, Option<Vec<u8>>)>,
    }

    fn build(base_timestamp_ms: i64, input: &[OwnedRecord]) -> Vec<u8> {
        let mut builder = BatchBuilder::new(Vec::new(), base_timestamp_ms);
        for record in input {
            push_owned(&mut builder, record);
        }
        builder.finish().to_vec()
    }

    fn push_owned(builder: &mut BatchBuilder, record: &OwnedRecord) {
        let headers: Vec<(&str, Option<&[u8]>)> = record
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_deref()))
            .collect();
        builder
            .push(
                record.timestamp_ms,
                record.key.as_deref(),
                record.value.as_deref(),
                &headers,
            )
            .unwrap();
    }

    fn read_back(batch: &[u8]) -> Vec<OwnedRecord> {
        let iter = records(batch).unwrap();
        let base_timestamp_ms = iter.header().base_timestamp_ms;
        iter.map(|record| {
            let record = record.unwrap();
            OwnedRecord {
                timestamp_ms: record.timestamp_ms(base_timestamp_ms),
                key: record.key.map(<[u8]>::to_vec),
                value: record.value.map(<[u8]>::to_vec),
                headers: record
                    .headers
                    .map(|h| {
                        let h = h.unwrap();
                        (h.key.to_owned(), h.value.map(<[u8]>::to_vec))
                    })
                    .collect(),
            }
        })
        .collect()
    }

    fn sample(n: usize) -> Vec<OwnedRecord> {
        (0..n)
            .map(|i| OwnedRecord {
                timestamp_ms: 1_000 + i as i64,
                key: (i % 3 != 0).then(|| format!("key-{i}").into_bytes()),
                value: (i % 4 != 1).then(|| vec![i as u8; i * 7]),
                headers: (0..i % 3)
                    .map(|h| (format!("h{h}"), (h % 2 == 0).then(|| vec![h as u8; h])))
                    .collect(),
            })
            .collect()
    }

    fn bytes_strategy(max_len: usize) -> impl Strategy<Value = Option<Vec<u8>>> {
        proptest::option::of(proptest::collection::vec(any::<u8>(), 0..max_len))
    }

    fn record_strategy() -> impl Strategy<Value = OwnedRecord> {
        (
            any::<i64>(),
            bytes_strategy(40),
            bytes_strategy(300),
            proptest::collection::vec(("\\PC{0,6}", bytes_strategy(20)), 0..4),
        )
            .prop_map(|(timestamp_ms, key, value, headers)| OwnedRecord {
                timestamp_ms,
                key,
                value,
                headers,
            })
    }

    #[test]
    fn batch_matches_kafka_python_encoding_byte_for_byte() {
        let expected = unhex(KAFKA_PYTHON_BATCH_1);
        let mut builder = BatchBuilder::new(Vec::new(), 1_700_000_000_000);
        builder
            .push(1_700_000_000_000, None, Some(b"hello"), &[])
            .unwrap();
        builder
            .push(
                1_700_000_000_005,
                Some(b"k"),
                None,
                &[("h", Some(b"v")), ("n", None)],
            )
            .unwrap();
        let mut ours = builder.finish().to_vec();
        set_partition_leader_epoch(&mut ours, 0).unwrap();
        assert_eq!(ours, expected);

        let header = validate_records(&expected).unwrap();
        assert_eq!(header.total_bytes(), 88);
        assert_eq!(header.batch_length, 76);
        assert_eq!(header.crc, 0xc6ea_f919);
        assert_eq!(header.last_offset_delta, 1);
        assert_eq!(header.max_timestamp_ms, 1_700_000_000_005);
        assert_eq!(
            (
                header.producer_id,
                header.producer_epoch,
                header.base_sequence
            ),
            (-1, -1, -1)
        );
        let read = read_back(&expected);
        assert_eq!(read[0].value.as_deref(), Some(&b"hello"[..]));
        assert_eq!(read[1].key.as_deref(), Some(&b"k"[..]));
        assert_eq!(
            read[1].headers,
            vec![
                ("h".to_owned(), Some(b"v".to_vec())),
                ("n".to_owned(), None)
            ]
        );
    }

    #[test]
    fn batch_matches_kafka_python_transactional_encoding() {
        // Transactional, idempotent, empty key/value, a timestamp before the base, a 200-byte value.
        let mut expected = unhex(concat!(
            "0000000000000000000001100000000002e17ec5df00100000000100000174876e800000000174876e8000",
            "0000000000001092000700000064000000020c000000000000ac0300cf0f02066b65799003"
        ));
        expected.extend_from_slice(&[b'v'; 200]);
        expected.extend_from_slice(&unhex("02026100"));
        let mut builder = BatchBuilder::new(Vec::new(), 1_600_000_000_000);
        builder.set_transactional(true);
        builder.set_producer_id(4242);
        builder.set_producer_epoch(7);
        builder.set_base_sequence(100);
        builder
            .push(1_600_000_000_000, Some(b""), Some(b""), &[])
            .unwrap();
        builder
            .push(
                1_599_999_999_000,
                Some(b"key"),
                Some(&[b'v'; 200]),
                &[("a", Some(b""))],
            )
            .unwrap();
        let mut ours = builder.finish().to_vec();
        set_partition_leader_epoch(&mut ours, 0).unwrap();
        assert_eq!(ours, expected);
        let header = validate_records(&expected).unwrap();
        assert!(header.is_transactional() && !header.is_control());
        assert_eq!(header.timestamp_type(), TimestampType::CreateTime);
        assert_eq!(header.max_timestamp_ms, 1_600_000_000_000);
        assert_eq!(read_back(&expected)[1].timestamp_ms, 1_599_999_999_000);
    }

    #[test]
    fn batch_header_layout_offsets() {
        let header = BatchHeader {
            base_offset: 0x0102_0304_0506_0708,
            batch_length: 49,
            partition_leader_epoch: 0x1112_1314,
            magic: 2,
            crc: 0x2122_2324,
            attributes: 0x3132,
            last_offset_delta: 0x4142_4344,
            base_timestamp_ms: 0x5152_5354_5556_5758,
            max_timestamp_ms: 0x6162_6364_6566_6768,
            producer_id: 0x7172_7374_7576_7778,
            producer_epoch: 0x0a0b,
            base_sequence: 0x1a1b_1c1d,
            records_count: 0x2a2b_2c2d,
        };
        let bytes = header.to_bytes();
        assert_eq!(bytes[0..8], [1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(bytes[8..12], [0, 0, 0, 49]);
        assert_eq!(bytes[12..16], [0x11, 0x12, 0x13, 0x14]);
        assert_eq!(bytes[16], 2);
        assert_eq!(bytes[17..21], [0x21, 0x22, 0x23, 0x24]);
        assert_eq!(bytes[21..23], [0x31, 0x32]);
        assert_eq!(bytes[23..27], [0x41, 0x42, 0x43, 0x44]);
        assert_eq!(bytes[27], 0x51);
        assert_eq!(bytes[35], 0x61);
        assert_eq!(bytes[43], 0x71);
        assert_eq!(bytes[51..53], [0x0a, 0x0b]);
        assert_eq!(bytes[53..57], [0x1a, 0x1b, 0x1c, 0x1d]);
        assert_eq!(bytes[57..61], [0x2a, 0x2b, 0x2c, 0x2d]);
        assert_eq!(BatchHeader::parse(&bytes), Ok(header));
        assert_eq!(header.compression(), Compression::Snappy);
        assert_eq!(BATCH_LENGTH_MIN, 49);
    }

    #[test]
    fn batch_crc32c_is_castagnoli() {
        assert_eq!(crc32c::crc32c(b"123456789"), 0xe306_9283);
    }

    #[test]
    fn batch_round_trips_sample_records_and_empty_batch() {
        for n in [0, 1, 2, 17] {
            let input = sample(n);
            let batch = build(1_000, &input);
            let header = validate_records(&batch).unwrap();
            assert_eq!(header.records_count as usize, n);
            assert_eq!(header.last_offset_delta as usize, n.saturating_sub(1));
            assert_eq!(read_back(&batch), input);
        }
    }

    #[test]
    fn batch_round_trips_a_large_value() {
        let input = vec![OwnedRecord {
            timestamp_ms: 5,
            key: Some(vec![7; 70_000]),
            value: Some((0..1 << 20).map(|i| i as u8).collect()),
            headers: vec![("big".into(), Some(vec![1; 100_000]))],
        }];
        let batch = build(5, &input);
        validate_records(&batch).unwrap();
        assert_eq!(read_back(&batch), input);
    }

    #[test]
    fn batch_every_single_bit_flip_is_caught_or_harmless() {
        let batch = build(10, &sample(4));
        for byte in 0..batch.len() {
            for bit in 0..8 {
                let mut flipped = batch.clone();
                flipped[byte] ^= 1 << bit;
                let result = validate(&flipped);
                match byte {
                    // baseOffset and partitionLeaderEpoch are stamped by the broker, outside the CRC.
                    0..8 | 12..16 => assert!(result.is_ok()),
                    8..12 => assert!(matches!(
                        result,
                        Err(BatchError::LengthMismatch { .. } | BatchError::BadLength { .. })
                    )),
                    16 => assert_eq!(result, Err(BatchError::BadMagic(2 ^ (1 << bit)))),
                    _ => assert!(
                        matches!(result, Err(BatchError::BadCrc { .. })),
                        "byte {byte} bit {bit}: {result:?}"
                    ),
                }
            }
        }
    }

    #[test]
    fn batch_set_base_offset_keeps_crc_valid() {
        let mut batch = build(10, &sample(3));
        set_base_offset(&mut batch, 1_000_000).unwrap();
        set_partition_leader_epoch(&mut batch, 9).unwrap();
        let header = validate(&batch).unwrap();
        assert_eq!(header.base_offset, 1_000_000);
        assert_eq!(header.partition_leader_epoch, 9);
        assert_eq!(header.last_offset(), 1_000_002);
        assert_eq!(header.next_offset(), 1_000_003);
        assert!(set_base_offset(&mut [0u8; 7], 1).is_err());
        assert!(set_partition_leader_epoch(&mut [0u8; 15], 1).is_err());
    }

    fn concatenated(batches: usize) -> (Vec<u8>, Vec<usize>) {
        let mut bytes = Vec::new();
        let mut ends = Vec::new();
        for i in 0..batches {
            let mut batch = build(i as i64, &sample(i + 1));
            set_base_offset(&mut batch, bytes.len() as i64).unwrap();
            bytes.extend_from_slice(&batch);
            ends.push(bytes.len());
        }
        (bytes, ends)
    }

    #[test]
    fn batch_iter_splits_concatenated_batches() {
        let (bytes, ends) = concatenated(4);
        let mut iter = BatchIter::new(&bytes);
        let mut start = 0;
        for &end in &ends {
            let (header, batch) = iter.next().unwrap().unwrap();
            assert_eq!(batch, &bytes[start..end]);
            assert_eq!(header.base_offset, start as i64);
            start = end;
        }
        assert!(iter.next().is_none());
        assert_eq!(iter.consumed_bytes(), bytes.len());
        assert!(iter.remaining().is_empty());
    }

    #[test]
    fn batch_iter_yields_only_whole_batches_at_every_truncation_point() {
        let (bytes, ends) = concatenated(3);
        for cut in 0..=bytes.len() {
            let mut iter = BatchIter::new(&bytes[..cut]);
            let whole: Vec<_> = iter.by_ref().map(|item| item.unwrap().1.len()).collect();
            let expected_whole = ends.iter().filter(|&&end| end <= cut).count();
            assert_eq!(whole.len(), expected_whole, "cut {cut}");
            let consumed = ends
                .iter()
                .copied()
                .filter(|&end| end <= cut)
                .max()
                .unwrap_or(0);
            assert_eq!(iter.consumed_bytes(), consumed);
            assert_eq!(iter.remaining().len(), cut - consumed);
        }
    }

    #[test]
    fn batch_iter_stops_with_an_error_at_zeroed_preallocated_tail() {
        let (mut bytes, ends) = concatenated(2);
        bytes.extend_from_slice(&[0u8; 4096]);
        let mut iter = BatchIter::new(&bytes);
        assert!(iter.next().unwrap().is_ok());
        assert!(iter.next().unwrap().is_ok());
        assert_eq!(iter.next(), Some(Err(BatchError::BadMagic(0))));
        assert_eq!(iter.next(), None);
        assert_eq!(iter.consumed_bytes(), ends[1]);
    }

    #[test]
    fn batch_iter_reports_a_corrupt_batch_and_where_it_starts() {
        let (mut bytes, ends) = concatenated(3);
        bytes[ends[0] + 70] ^= 0x40;
        let mut iter = BatchIter::new(&bytes);
        assert!(iter.next().unwrap().is_ok());
        assert!(matches!(iter.next(), Some(Err(BatchError::BadCrc { .. }))));
        assert_eq!(iter.next(), None);
        assert_eq!(iter.consumed_bytes(), ends[0]);
        // Without the CRC check the damage goes unseen at this level.
        assert_eq!(BatchIter::new(&bytes).without_crc_check().count(), 3);
    }

    #[test]
    fn batch_iter_refuses_silly_lengths_without_waiting_for_them() {
        let mut header = BatchHeader::parse(&build(0, &[])).unwrap().to_bytes();
        header[8..12].copy_from_slice(&i32::MAX.to_be_bytes());
        let mut iter = BatchIter::new(&header);
        assert_eq!(
            iter.next(),
            Some(Err(BatchError::BadLength {
                batch_length: i32::MAX,
                batch_bytes_max: BATCH_BYTES_MAX
            }))
        );
        // With a larger limit it is merely incomplete.
        assert_eq!(
            BatchIter::new(&header)
                .with_batch_bytes_max(usize::MAX)
                .next(),
            None
        );
        header[8..12].copy_from_slice(&(-5i32).to_be_bytes());
        assert!(matches!(
            BatchIter::new(&header).next(),
            Some(Err(BatchError::BadLength { .. }))
        ));
        assert!(matches!(
            BatchHeader::parse(&header),
            Err(BatchError::BadLength { .. })
        ));
    }

    #[test]
    fn batch_compressed_batches_are_validated_but_not_decoded() {
        let mut batch = build(0, &sample(3));
        batch[22] |= 3; // lz4
        fix_crc(&mut batch);
        assert_eq!(
            validate_records(&batch).map(|h| h.compression()),
            Ok(Compression::Lz4)
        );
        assert_eq!(
            records(&batch).err(),
            Some(BatchError::Compressed(Compression::Lz4))
        );
        batch[22] |= 7;
        fix_crc(&mut batch);
        assert_eq!(validate(&batch), Err(BatchError::UnknownCompression(7)));
    }

    #[test]
    fn batch_record_count_must_match_records() {
        let mut batch = build(0, &sample(3));
        batch[57..61].copy_from_slice(&2i32.to_be_bytes());
        fix_crc(&mut batch);
        assert_eq!(
            validate_records(&batch),
            Err(BatchError::BadRecord(
                "bytes after the last of recordsCount records"
            ))
        );
        batch[57..61].copy_from_slice(&3i32.to_be_bytes());
        batch[23..27].copy_from_slice(&5i32.to_be_bytes());
        batch.extend_from_slice(&[]);
        fix_crc(&mut batch);
        validate_records(&batch).unwrap(); // a compacted-looking gap at the end is fine
        batch[57..61].copy_from_slice(&4i32.to_be_bytes());
        fix_crc(&mut batch);
        assert_eq!(
            validate_records(&batch),
            Err(BatchError::BadRecord(
                "batch ends before recordsCount records"
            ))
        );
        batch[57..61].copy_from_slice(&7i32.to_be_bytes());
        fix_crc(&mut batch);
        assert_eq!(
            validate(&batch),
            Err(BatchError::BadHeader(
                "recordsCount exceeds lastOffsetDelta + 1"
            ))
        );
    }

    #[test]
    fn batch_offset_deltas_must_ascend_within_last_offset_delta() {
        // Both records have offsetDelta 0: patch the second record's offset delta byte.
        let mut builder = BatchBuilder::new(Vec::new(), 0);
        builder.push(0, None, None, &[]).unwrap();
        builder.push(0, None, None, &[]).unwrap();
        let mut batch = builder.finish().to_vec();
        // Each record: len, attrs, tsDelta, offsetDelta, key -1, value -1, headers 0 = 7 bytes.
        assert_eq!(batch.len(), BATCH_HEADER_BYTES + 14);
        assert_eq!(batch[BATCH_HEADER_BYTES + 7 + 3], 0x02);
        batch[BATCH_HEADER_BYTES + 7 + 3] = 0x00;
        fix_crc(&mut batch);
        assert_eq!(
            validate_records(&batch),
            Err(BatchError::BadRecord("offsetDelta not strictly ascending"))
        );
        batch[BATCH_HEADER_BYTES + 7 + 3] = 0x04; // delta 2 > lastOffsetDelta 1
        fix_crc(&mut batch);
        assert_eq!(
            validate_records(&batch),
            Err(BatchError::BadRecord("offsetDelta beyond lastOffsetDelta"))
        );
        batch[BATCH_HEADER_BYTES + 7 + 4] = 0x03; // key length -2
        fix_crc(&mut batch);
        assert_eq!(
            validate_records(&batch),
            Err(BatchError::BadRecord("length below -1"))
        );
    }

    #[test]
    fn batch_header_keys_must_be_utf8() {
        let mut builder = BatchBuilder::new(Vec::new(), 0);
        builder.push(0, None, None, &[("x", None)]).unwrap();
        let mut batch = builder.finish().to_vec();
        let at = batch.iter().rposition(|&b| b == b'x').unwrap();
        batch[at] = 0xff;
        fix_crc(&mut batch);
        assert_eq!(
            validate_records(&batch),
            Err(BatchError::BadRecord("header key is not UTF-8"))
        );
    }

    #[test]
    fn batch_builder_refuses_records_past_its_limit_and_stays_valid() {
        let mut builder = BatchBuilder::new(Vec::new(), 0);
        builder.set_batch_bytes_max(200);
        builder.push(0, None, Some(&[1; 100]), &[]).unwrap();
        let before = builder.bytes_len();
        let error = builder.push(0, None, Some(&[1; 100]), &[]).unwrap_err();
        assert!(matches!(
            error,
            BatchError::TooLarge {
                batch_bytes_max: 200,
                ..
            }
        ));
        assert_eq!(builder.bytes_len(), before);
        assert_eq!(builder.record_count(), 1);
        let batch = builder.finish().to_vec();
        assert_eq!(batch.len(), before);
        validate_records(&batch).unwrap();
    }

    #[test]
    fn batch_builder_reuses_its_buffer_without_reallocating() {
        let input = sample(20);
        let mut builder = BatchBuilder::new(Vec::new(), 0);
        for record in &input {
            push_owned(&mut builder, record);
        }
        let first = builder.finish().to_vec();
        let mut buf = builder.into_buf();
        let (pointer, capacity) = (buf.as_ptr(), buf.capacity());
        buf.extend_from_slice(b"stale bytes are discarded");
        let mut builder = BatchBuilder::new(buf, 0);
        for _ in 0..3 {
            builder.reset(0);
            for record in &input {
                push_owned(&mut builder, record);
            }
            assert_eq!(builder.bytes_len(), first.len());
            assert_eq!(builder.finish(), &first[..]);
        }
        let buf = builder.into_buf();
        assert_eq!((buf.as_ptr(), buf.capacity()), (pointer, capacity));
    }

    #[test]
    fn batch_finish_can_be_called_again_after_more_pushes() {
        let input = sample(5);
        let mut builder = BatchBuilder::new(Vec::new(), 1_000);
        push_owned(&mut builder, &input[0]);
        validate_records(builder.finish()).unwrap();
        for record in &input[1..] {
            push_owned(&mut builder, record);
        }
        assert_eq!(builder.finish(), &build(1_000, &input)[..]);
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

        #[test]
        fn batch_round_trips_arbitrary_records(
            base_timestamp_ms: i64,
            input in proptest::collection::vec(record_strategy(), 0..12),
        ) {
            let batch = build(base_timestamp_ms, &input);
            let header = validate_records(&batch).unwrap();
            prop_assert_eq!(header.records_count as usize, input.len());
            let max = input.iter().map(|r| r.timestamp_ms).max().unwrap_or(base_timestamp_ms);
            prop_assert_eq!(header.max_timestamp_ms, max);
            prop_assert_eq!(read_back(&batch), input);
            let mut iter = BatchIter::new(&batch);
            prop_assert_eq!(iter.next(), Some(Ok((header, &batch[..]))));
            prop_assert_eq!(iter.next(), None);
        }

        #[test]
        fn batch_readers_never_panic_on_arbitrary_bytes(
            bytes in proptest::collection::vec(any::<u8>(), 0..200),
        ) {
            exercise(&bytes);
        }

        #[test]
        fn batch_readers_never_panic_on_mutated_batches(
            input in proptest::collection::vec(record_strategy(), 1..4),
            edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
            recrc: bool,
        ) {
            let mut batch = build(0, &input);
            for (index, byte) in edits {
                let at = index.index(batch.len());
                batch[at] = byte;
            }
            if recrc {
                fix_crc(&mut batch);
            }
            exercise(&batch);
        }
    }

    /// Runs every reader over `bytes`, draining every iterator.
    fn exercise(bytes: &[u8]) {
        let _ = BatchHeader::parse(bytes);
        let _ = validate(bytes);
        let _ = validate_records(bytes);
        let mut iter = BatchIter::new(bytes);
        for (_, batch) in iter.by_ref().flatten() {
            let _ = validate_records(batch);
        }
        assert!(iter.consumed_bytes() <= bytes.len());
        if let Ok(records) = records(bytes) {
            for record in records.flatten() {
                record.headers.for_each(drop);
            }
        }
    }
}
