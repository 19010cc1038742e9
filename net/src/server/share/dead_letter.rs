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

/// Copies `letters` (records of `source`) to `dead_letter_topic`, durably. Letters whose
/// records retention removed meanwhile are left out (there is nothing left to copy); any
/// other failure (a read, the topic, the write) fails the whole copy, to be tried again.
pub(crate) async fn copy(
    shard: &Rc<Shard>,
    source: &Source<'_>,
    dead_letter_topic: &str,
    letters: &[DeadLetter],
) -> Result<(), Failure> {
    let entry = shard
        .topic(dead_letter_topic)
        .ok_or_else(|| unknown_topic(dead_letter_topic))?;
    let partition = source.partition % entry.config.partitions.max(1);
    let mut sorted = letters.to_vec();
    sorted.sort_by_key(|letter| letter.offset);
    let mut builder = BatchBuilder::new(Vec::new(), wall_ms());
    // Each copy batch fits one of the dead-letter topic's segments: a larger one would be
    // refused every time, holding the share partition back for good. A single record that
    // cannot fit is copied without its content, with a note saying why.
    let segment_bytes = usize::try_from(entry.config.segment_bytes).unwrap_or(usize::MAX);
    builder.set_batch_bytes_max(segment_bytes.min(batch::BATCH_BYTES_MAX));
    let mut batches = Vec::new();
    for letter in &sorted {
        let slice = match source.log.read(letter.offset, 1).await {
            Ok(slice) => slice,
            Err(LogError::OffsetOutOfRange { log_start, .. }) if letter.offset < log_start => {
                continue;
            }
            Err(error @ LogError::DamagedBatch { .. }) => {
                // Damaged on disk since it was delivered: no later sweep would read it either,
                // so the copy says why it has no content instead of holding the letter back.
                let unreadable = Err(log_failure(error));
                add_letter(&mut builder, &mut batches, unreadable, source, letter)?;
                continue;
            }
            Err(error) => return Err(log_failure(error)),
        };
        add_letter(
            &mut builder,
            &mut batches,
            Ok(slice.bytes()),
            source,
            letter,
        )?;
    }
    if builder.record_count() > 0 {
        batches.extend_from_slice(builder.finish());
    }
    if batches.is_empty() {
        return Ok(());
    }
    produce(shard, dead_letter_topic, partition, batches).await
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
/// bound, and the copies of a whole window could pass it. A failure part way leaves the
/// batches before it copied; the retry copies them again (at least once).
async fn produce(
    shard: &Rc<Shard>,
    topic: &str,
    partition: u32,
    mut batches: Vec<u8>,
) -> Result<(), Failure> {
    let mut rest = &mut batches[..];
    // Bounded: every round takes one whole batch off `rest`.
    while !rest.is_empty() {
        let header = batch::BatchHeader::parse(rest)
            .map_err(|error| Failure::new(ErrorCode::CorruptBatch, error.to_string()))?;
        let (one, tail) = rest.split_at_mut(header.total_bytes().min(rest.len()));
        produce_batch(shard, topic, partition, one).await?;
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
    let owner = shard.owner(topic, partition);
    if owner == shard.id {
        return partition_ops::produce(shard, topic, partition, Acks::Durable, batch)
            .await
            .map(|_| ());
    }
    let call = ShardCall::Produce {
        topic: topic.to_string(),
        partition,
        acks: Acks::Durable,
        batches: batch.to_vec(),
    };
    match shard.call(owner, call).await {
        ShardReturn::Produced(result) => result.map(|_| ()),
        _ => Err(Failure::new(
            ErrorCode::Unknown,
            "internal: unexpected shard answer",
        )),
    }
}
