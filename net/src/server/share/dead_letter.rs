//! Copies archived share records to the group's dead-letter topic: same key, value, timestamp
//! and headers, plus headers saying where the record came from and why it was archived. The
//! copy goes to partition `source partition % dead-letter partitions`, written durably.
//!
//! Records of compressed batches are not decoded here; their copy has no key or value and a
//! [`HEADER_NOTE`] header saying so (the source offset still identifies them). So does the
//! copy of a record that cannot be read back (an offset its batch claims but does not hold, a
//! malformed record): failing on it would fail every later copy too.

use std::rc::Rc;

use ringlog_engine::batch::{self, BatchBuilder, BatchError, BatchIter, TimestampType};
use ringlog_engine::error::LogError;
use ringlog_engine::log::{Acks, PartitionLog};

use super::partition::wall_ms;
use super::window::DeadLetter;
use crate::error_code::ErrorCode;
use crate::server::message::{Failure, ShardCall, ShardReturn};
use crate::server::partition_ops::{self, log_failure};
use crate::server::shard::{unknown_topic, Shard};

/// Header: the share group that archived the record.
pub const HEADER_GROUP: &str = "ringlog.dlq.group";
/// Header: the source topic.
pub const HEADER_TOPIC: &str = "ringlog.dlq.topic";
/// Header: the source partition (decimal).
pub const HEADER_PARTITION: &str = "ringlog.dlq.partition";
/// Header: the source offset (decimal).
pub const HEADER_OFFSET: &str = "ringlog.dlq.offset";
/// Header: deliveries the record had (decimal).
pub const HEADER_DELIVERY_COUNT: &str = "ringlog.dlq.delivery_count";
/// Header: why it was archived (`rejected`, `delivery limit reached`).
pub const HEADER_REASON: &str = "ringlog.dlq.reason";
/// Header: present when the record's content could not be copied.
pub const HEADER_NOTE: &str = "ringlog.dlq.note";

/// Where archived records come from.
pub(crate) struct Source<'a> {
    /// Share group.
    pub(crate) group: &'a str,
    /// Topic.
    pub(crate) topic: &'a str,
    /// Partition.
    pub(crate) partition: u32,
    /// The partition's log.
    pub(crate) log: &'a PartitionLog,
}

/// A copy that failed part way.
#[derive(Debug)]
pub(crate) struct CopyFailure {
    /// How many of the letters, from the first, are done (copied durably, or left out as
    /// removed by retention): only the rest is to be tried again.
    pub(crate) handled: usize,
    /// Why the others were not copied.
    pub(crate) failure: Failure,
}

impl CopyFailure {
    fn before_any(failure: Failure) -> CopyFailure {
        CopyFailure {
            handled: 0,
            failure,
        }
    }
}

/// Copies `letters` (records of `source`, in offset order) to `dead_letter_topic`, durably.
/// Letters whose records retention removed meanwhile are left out (there is nothing left to
/// copy); any other failure (a read, the topic, the write) stops the copy, and the letters
/// not copied yet are to be tried again.
pub(crate) async fn copy(
    shard: &Rc<Shard>,
    source: &Source<'_>,
    dead_letter_topic: &str,
    letters: &[DeadLetter],
) -> Result<(), CopyFailure> {
    debug_assert!(letters.windows(2).all(|w| w[0].offset < w[1].offset));
    let entry = shard
        .topic(dead_letter_topic)
        .ok_or_else(|| CopyFailure::before_any(unknown_topic(dead_letter_topic)))?;
    let partition = source.partition % entry.config.partitions.max(1);
    let mut builder = BatchBuilder::new(Vec::new(), wall_ms());
    // Each copy batch fits one of the dead-letter topic's segments: a larger one would be
    // refused every time, holding the share partition back for good. A single record that
    // cannot fit is copied without its content, with a note saying why.
    let segment_bytes = usize::try_from(entry.config.segment_bytes).unwrap_or(usize::MAX);
    builder.set_batch_bytes_max(segment_bytes.min(batch::BATCH_BYTES_MAX));
    let mut batches = Vec::new();
    // Index in `letters` of each record copied, in the order of the records.
    let mut copied: Vec<usize> = Vec::with_capacity(letters.len());
    for (index, letter) in letters.iter().enumerate() {
        let read = match source.log.read(letter.offset, 1).await {
            Ok(slice) => Ok(slice),
            Err(LogError::OffsetOutOfRange { log_start, .. }) if letter.offset < log_start => {
                continue;
            }
            // Damaged on disk since it was delivered: no later sweep would read it either, so
            // the copy says why it has no content instead of holding the letter back.
            Err(error @ LogError::DamagedBatch { .. }) => Err(log_failure(error)),
            Err(error) => return Err(CopyFailure::before_any(log_failure(error))),
        };
        let bytes = read
            .as_ref()
            .map(|slice| slice.bytes())
            .map_err(Clone::clone);
        add_letter(&mut builder, &mut batches, bytes, source, letter)
            .map_err(CopyFailure::before_any)?;
        copied.push(index);
    }
    if builder.record_count() > 0 {
        batches.extend_from_slice(builder.finish());
    }
    if batches.is_empty() {
        return Ok(());
    }
    produce(shard, dead_letter_topic, partition, batches)
        .await
        .map_err(|(records_appended, failure)| CopyFailure {
            // Up to the letter of the first record not appended (letters left out before it
            // are done too).
            handled: usize::try_from(records_appended)
                .ok()
                .and_then(|appended| copied.get(appended).copied())
                .unwrap_or(letters.len()),
            failure,
        })
}

/// Finds the record of `letter` in `read` (whole batches starting with its batch) and adds its
/// copy to `builder`, moving full batches to `batches`; a record that cannot be copied (or
/// read) gets a copy with no content and a note saying why.
fn add_letter(
    builder: &mut BatchBuilder,
    batches: &mut Vec<u8>,
    read: Result<&[u8], Failure>,
    source: &Source<'_>,
    letter: &DeadLetter,
) -> Result<(), Failure> {
    let partition = source.partition.to_string();
    let offset = letter.offset.to_string();
    let delivery_count = letter.delivery_count.to_string();
    let mut extra: Vec<(&str, Option<&[u8]>)> = vec![
        (HEADER_GROUP, Some(source.group.as_bytes())),
        (HEADER_TOPIC, Some(source.topic.as_bytes())),
        (HEADER_PARTITION, Some(partition.as_bytes())),
        (HEADER_OFFSET, Some(offset.as_bytes())),
        (HEADER_DELIVERY_COUNT, Some(delivery_count.as_bytes())),
        (HEADER_REASON, Some(letter.reason.as_str().as_bytes())),
    ];
    let copied = read.and_then(|read| add_record(builder, batches, read, source, letter, &extra));
    let Err(failure) = copied else {
        return Ok(());
    };
    let note = format!("content not copied: {}", failure.message);
    extra.push((HEADER_NOTE, Some(note.as_bytes())));
    push(builder, batches, wall_ms(), None, None, &extra)
}

/// Adds the copy of the record of `letter` in `read`, with the `extra` headers.
fn add_record(
    builder: &mut BatchBuilder,
    batches: &mut Vec<u8>,
    read: &[u8],
    source: &Source<'_>,
    letter: &DeadLetter,
    extra: &[(&str, Option<&[u8]>)],
) -> Result<(), Failure> {
    let corrupt = |error: BatchError| Failure::new(ErrorCode::CorruptBatch, error.to_string());
    for item in BatchIter::new(read).without_crc_check() {
        let (header, bytes) = item.map_err(corrupt)?;
        if header.next_offset() <= letter.offset || header.base_offset > letter.offset {
            continue;
        }
        let records = match batch::records(bytes) {
            Ok(records) => records,
            Err(BatchError::Compressed(_)) => {
                let mut headers = extra.to_vec();
                headers.push((
                    HEADER_NOTE,
                    Some(b"compressed source batch: content not copied"),
                ));
                return push(
                    builder,
                    batches,
                    header.max_timestamp_ms,
                    None,
                    None,
                    &headers,
                );
            }
            Err(error) => return Err(corrupt(error)),
        };
        for record in records {
            let record = record.map_err(corrupt)?;
            if record.offset(header.base_offset) != letter.offset {
                continue;
            }
            let timestamp_ms = match header.timestamp_type() {
                TimestampType::LogAppendTime => header.max_timestamp_ms,
                TimestampType::CreateTime => record.timestamp_ms(header.base_timestamp_ms),
            };
            let mut headers: Vec<(&str, Option<&[u8]>)> = Vec::new();
            for original in record.headers.clone() {
                let original = original.map_err(corrupt)?;
                headers.push((original.key, original.value));
            }
            headers.extend_from_slice(extra);
            return push(
                builder,
                batches,
                timestamp_ms,
                record.key,
                record.value,
                &headers,
            );
        }
    }
    Err(Failure::new(
        ErrorCode::Unknown,
        format!(
            "record {} of {}/{} not found in the log",
            letter.offset, source.topic, source.partition
        ),
    ))
}

/// Adds a record, starting a new batch when the current one is full.
fn push(
    builder: &mut BatchBuilder,
    batches: &mut Vec<u8>,
    timestamp_ms: i64,
    key: Option<&[u8]>,
    value: Option<&[u8]>,
    headers: &[(&str, Option<&[u8]>)],
) -> Result<(), Failure> {
    if builder.push(timestamp_ms, key, value, headers).is_ok() {
        return Ok(());
    }
    if builder.record_count() > 0 {
        batches.extend_from_slice(builder.finish());
        builder.reset(timestamp_ms);
    }
    builder
        .push(timestamp_ms, key, value, headers)
        .map_err(|error| Failure::new(ErrorCode::CorruptBatch, error.to_string()))
}

/// Appends `batches` to the dead-letter partition, on whichever shard owns it, one batch per
/// append: a partition takes the batches of one append all or none, up to its unflushed
/// bound, and the copies of a whole window could pass it. A failure part way is returned
/// with the number of records appended before it, which stay (the retry starts after them).
async fn produce(
    shard: &Rc<Shard>,
    topic: &str,
    partition: u32,
    mut batches: Vec<u8>,
) -> Result<(), (u64, Failure)> {
    let mut rest = &mut batches[..];
    let mut records_appended = 0u64;
    // Bounded: every round takes one whole batch off `rest`.
    while !rest.is_empty() {
        let header = batch::BatchHeader::parse(rest).map_err(|error| {
            let failure = Failure::new(ErrorCode::CorruptBatch, error.to_string());
            (records_appended, failure)
        })?;
        let (one, tail) = rest.split_at_mut(header.total_bytes().min(rest.len()));
        produce_batch(shard, topic, partition, one)
            .await
            .map_err(|failure| (records_appended, failure))?;
        records_appended += u64::try_from(header.records_count).unwrap_or(0);
        rest = tail;
    }
    Ok(())
}

/// Appends one batch to the dead-letter partition.
async fn produce_batch(
    shard: &Rc<Shard>,
    topic: &str,
    partition: u32,
    batch: &mut [u8],
) -> Result<(), Failure> {
    // Copies keep their records' timestamps, which the partition took when they were
    // produced: bounded again by the clock of now, a record stamped ahead under an earlier
    // bound (or none) would be refused at every sweep and never archived.
    let owner = shard.owner(topic, partition);
    if owner == shard.id {
        return partition_ops::produce(shard, topic, partition, Acks::Durable, batch, false)
            .await
            .map(|_| ());
    }
    let call = ShardCall::Produce {
        topic: topic.to_string(),
        partition,
        acks: Acks::Durable,
        batches: batch.to_vec(),
        from_client: false,
    };
    match shard.call(owner, call).await {
        ShardReturn::Produced(result) => result.map(|_| ()),
        _ => Err(Failure::new(
            ErrorCode::Unknown,
            "internal: unexpected shard answer",
        )),
    }
}
