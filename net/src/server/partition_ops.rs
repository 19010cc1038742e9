//! What the owner of a partition does for produce, fetch and offset requests, whether they came
//! from one of its own connections or from another shard.

use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::rc::Rc;
use std::task::Poll;
use std::time::Duration;

use ringlog_engine::batch::{self, BatchIter};
use ringlog_engine::error::LogError;
use ringlog_engine::log::{Acks, PartitionLog, ReadParts};
use ringlog_engine::producer_state::ProducerError;
use ringlog_engine::reactor::time;

use super::message::{Failure, Fetched, FetchedBytes, OffsetQuery};
use super::shard::Shard;
use super::share::partition::wall_ms;
use crate::error_code::ErrorCode;

/// Maps a storage error to what the client sees.
pub(crate) fn log_failure(error: LogError) -> Failure {
    let code = match &error {
        LogError::OffsetOutOfRange { .. } => ErrorCode::OffsetOutOfRange,
        // A stored batch found damaged is refused as Kafka does (CORRUPT_MESSAGE), not
        // retried: it will not heal, and the consumer must seek past it.
        LogError::InvalidBatch(_)
        | LogError::BatchTooLarge { .. }
        | LogError::Corrupt { .. }
        | LogError::DamagedBatch { .. } => ErrorCode::CorruptBatch,
        LogError::DiskFull { .. } => ErrorCode::DiskFull,
        LogError::Backpressure { .. } => ErrorCode::Throttled,
        LogError::Closed => ErrorCode::ShuttingDown,
        LogError::Producer(refusal) => match refusal {
            ProducerError::InvalidProducerEpoch { .. } => ErrorCode::InvalidProducerEpoch,
            ProducerError::OutOfOrderSequence { .. } => ErrorCode::OutOfOrderSequence,
            ProducerError::DuplicateSequence { .. } => ErrorCode::DuplicateSequence,
            ProducerError::InvalidSequence { .. } => ErrorCode::InvalidRequest,
        },
        _ => ErrorCode::StorageError,
    };
    Failure::new(code, error.to_string())
}

/// Where a produce entry's batches went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Produced {
    /// Offset of the first record of the first batch.
    pub(crate) base_offset: i64,
    /// The partition's log start offset after the append (Kafka's produce response carries
    /// it, so that a producer sees retention move).
    pub(crate) log_start_offset: i64,
}

/// Appends every batch in `batches` (one or more whole RecordBatch v2) to an owned partition;
/// returns the base offset of the first and the log start offset after them. All batches are checked before any is written, so a
/// corrupt one rejects the request for this partition and writes nothing. Offsets are stamped
/// when this future is first polled, before it waits, so requests keep their order.
/// `from_client` (a client's produce; not the server's own copies of stored records): refuse a
/// batch stamped more than `message_timestamp_after_max_ms` ahead of the server's clock, and
/// control and transactional batches.
pub(crate) async fn produce(
    shard: &Rc<Shard>,
    topic: &str,
    partition: u32,
    acks: Acks,
    batches: &mut [u8],
    from_client: bool,
) -> Result<Produced, Failure> {
    let log = shard.local_log(topic, partition)?;
    let corrupt = |e: batch::BatchError| Failure::new(ErrorCode::CorruptBatch, e.to_string());
    let timestamp_max_ms = if from_client {
        let after_max_ms =
            i64::try_from(shard.config.message_timestamp_after_max_ms).unwrap_or(i64::MAX);
        wall_ms().saturating_add(after_max_ms)
    } else {
        i64::MAX
    };
    let mut count = 0usize;
    // Batches whose maxTimestamp is not their records' newest: (index, the records' newest).
    let mut misstated: Vec<(usize, i64)> = Vec::new();
    let mut iter = BatchIter::new(batches);
    for item in iter.by_ref() {
        let (header, bytes) = item.map_err(corrupt)?;
        check_offsets_claimed(&header)?;
        let mut max_timestamp_ms = header.max_timestamp_ms;
        if from_client {
            check_client_kind(&header)?;
            // As Kafka's broker, read every record of a client's batch: one that does not
            // parse would stop every consumer at its offset.
            if let Some(records_max_ms) = check_records(bytes)? {
                if records_max_ms != header.max_timestamp_ms {
                    misstated.push((count, records_max_ms));
                }
                max_timestamp_ms = records_max_ms;
            }
        }
        check_timestamp(max_timestamp_ms, timestamp_max_ms)?;
        count += 1;
    }
    if !iter.remaining().is_empty() || count == 0 {
        return Err(Failure::new(
            ErrorCode::CorruptBatch,
            "produce data must be one or more whole record batches",
        ));
    }
    // All or none: what would refuse one batch whatever the others is checked for all first,
    // so that a refusal does not leave the batches before it stored (a retry would store them
    // twice).
    let mut waits = Vec::with_capacity(count);
    {
        // The batches were checked whole above: the walk sees each of them.
        let sizes = BatchIter::new(batches)
            .without_crc_check()
            .map_while(Result::ok)
            .map(|(h, _)| h.total_bytes());
        let _admitted = log.admit(sizes).map_err(log_failure)?;
        let mut rest = batches;
        let mut index = 0;
        while !rest.is_empty() {
            let header = batch::BatchHeader::parse(rest).map_err(corrupt)?;
            let (this, tail) = rest.split_at_mut(header.total_bytes());
            if let Some(&(_, records_max_ms)) = misstated.iter().find(|(at, _)| *at == index) {
                // Kafka corrects it too: time lookups and retention go by the header.
                batch::set_max_timestamp(this, records_max_ms).map_err(corrupt)?;
            }
            index += 1;
            // Every batch's CRC was checked by the first walk (and set_max_timestamp computes
            // a new one): the log does not take that pass over the bytes again.
            let wait = log.append_crc_checked(this, acks);
            let refused = wait.is_refused();
            waits.push(wait);
            if refused {
                // An idempotent producer's sequence refused: the batches after it would be
                // out of order too; those before it stay (a retry is answered as duplicates).
                break;
            }
            rest = tail;
        }
    }
    let mut produced: Option<Produced> = None;
    for wait in waits {
        let info = wait.await.map_err(log_failure)?;
        let base_offset = produced.map_or(info.base_offset, |first| first.base_offset);
        produced = Some(Produced {
            base_offset,
            log_start_offset: info.log_start_offset,
        });
    }
    produced.ok_or_else(|| Failure::new(ErrorCode::CorruptBatch, "no batches"))
}

/// Refuses a batch whose newest timestamp is past `timestamp_max_ms` (the server's clock plus
/// `message_timestamp_after_max_ms`), as Kafka 4.0 does: retention by age goes by a segment's
/// newest timestamp, so one record stamped years ahead would keep its segment and every later
/// one forever. Whatever type the batch claims: topics here are CreateTime, and a batch is
/// stored as sent (Kafka rewrites a LogAppendTime claim to the topic's type before the same
/// check). -1 (no timestamp) is not ahead of anything.
fn check_timestamp(max_timestamp_ms: i64, timestamp_max_ms: i64) -> Result<(), Failure> {
    if max_timestamp_ms > timestamp_max_ms {
        return Err(Failure::new(
            ErrorCode::InvalidTimestamp,
            format!(
                "a produced batch's timestamp {max_timestamp_ms} is more than message_timestamp_after_max_ms ahead of the server's clock (at most {timestamp_max_ms})"
            ),
        ));
    }
    Ok(())
}

/// The newest record timestamp of an uncompressed batch, once every record was read and
/// found well formed (lengths within the batch, recordsCount records, nothing after them,
/// header counts and keys sound); `None` for a compressed batch, stored as sent.
fn check_records(bytes: &[u8]) -> Result<Option<i64>, Failure> {
    batch::checked_records_max_timestamp(bytes).map_err(|error| {
        Failure::new(
            ErrorCode::InvalidRecord,
            format!("a produced batch holds a malformed record: {error}"),
        )
    })
}

/// Refuses the batches a client may not produce. Control batches (transaction markers) are the
/// server's to write, and consumers act on them: one from a client could make them skip
/// records. Transactional batches belong to transactions, which this server does not run: their
/// records would never be committed or aborted (Kafka answers both with INVALID_RECORD or
/// refuses the transaction before).
fn check_client_kind(header: &batch::BatchHeader) -> Result<(), Failure> {
    if header.is_control() {
        return Err(Failure::new(
            ErrorCode::InvalidRecord,
            "control batches are written by the server only",
        ));
    }
    if header.is_transactional() {
        return Err(Failure::new(
            ErrorCode::InvalidRecord,
            "transactions are not supported: a transactional batch is refused",
        ));
    }
    Ok(())
}

/// In the first batch of `bytes`, when uncompressed and stamped with CreateTime: the offset and
/// timestamp of its first record at offset `from` or later stamped at or after `timestamp_ms`.
/// `None` for a compressed or LogAppendTime batch (all its records carry the batch's time), or
/// one that does not read.
fn first_record_at_or_after(bytes: &[u8], timestamp_ms: i64, from: i64) -> Option<(i64, i64)> {
    let header = batch::BatchHeader::parse(bytes).ok()?;
    if header.timestamp_type() != batch::TimestampType::CreateTime {
        return None;
    }
    let records = batch::records(bytes.get(..header.total_bytes())?).ok()?;
    records
        .map_while(Result::ok)
        .map(|record| {
            (
                record.offset(header.base_offset),
                record.timestamp_ms(header.base_timestamp_ms),
            )
        })
        .find(|&(offset, stamped_ms)| offset >= from && stamped_ms >= timestamp_ms)
}

/// Smallest encoded record: length, attributes, timestamp delta, offset delta, key length,
/// value length and header count, one byte each.
const RECORD_BYTES_MIN: usize = 7;
/// How much smaller than its records a compressed batch may be: far past what real records
/// compress to, and enough to keep a small batch from claiming billions of offsets.
const COMPRESSION_RATIO_MAX: usize = 1024;

/// Refuses a produced batch whose header claims offsets it does not hold: recordsCount must
/// be lastOffsetDelta + 1 > 0, no more than its bytes can hold, and a control batch holds
/// exactly one record (Kafka's rule for transaction markers). Readers walk the offsets a batch
/// claims (a share fetch settles every control record), and a segment rolls when its offsets
/// pass 2^32, so a claim of 2^31 offsets in a few bytes must not get in.
fn check_offsets_claimed(header: &batch::BatchHeader) -> Result<(), Failure> {
    // In i64: lastOffsetDelta may be i32::MAX.
    let claimed = i64::from(header.last_offset_delta) + 1;
    if header.records_count <= 0 || i64::from(header.records_count) != claimed {
        return Err(Failure::new(
            ErrorCode::InvalidRecord,
            format!(
                "a produced batch needs records_count = last_offset_delta + 1 > 0 (got {} and {})",
                header.records_count, header.last_offset_delta
            ),
        ));
    }
    let payload_bytes = header
        .total_bytes()
        .saturating_sub(batch::BATCH_HEADER_BYTES);
    let holdable = match header.compression() {
        batch::Compression::None => payload_bytes / RECORD_BYTES_MIN,
        // Compressed records are not decoded here; no real data compresses this far.
        _ => payload_bytes.saturating_mul(COMPRESSION_RATIO_MAX) / RECORD_BYTES_MIN,
    };
    if usize::try_from(header.records_count).unwrap_or(usize::MAX) > holdable {
        return Err(Failure::new(
            ErrorCode::InvalidRecord,
            format!(
                "a batch of {} bytes cannot hold {} records",
                header.total_bytes(),
                header.records_count
            ),
        ));
    }
    if header.is_control() && header.records_count != 1 {
        return Err(Failure::new(
            ErrorCode::InvalidRecord,
            format!(
                "a control batch holds exactly one record (got {})",
                header.records_count
            ),
        ));
    }
    Ok(())
}

/// Reads from an owned partition without copying: the slices refer to the shard's buffers
/// (one per chunk or disk read the batches came from).
pub(crate) async fn fetch_local(
    shard: &Rc<Shard>,
    topic: &str,
    partition: u32,
    offset: i64,
    max_bytes: usize,
) -> Result<(Rc<PartitionLog>, ReadParts), Failure> {
    let log = shard.local_log(topic, partition)?;
    let parts = log
        .read_parts(offset, max_bytes)
        .await
        .map_err(log_failure)?;
    Ok((log, parts))
}

/// Reads from an owned partition for another shard: the bytes are lent (no copy), or copied
/// into an owned vector when every loan is out.
pub(crate) async fn fetch_for_shard(
    shard: &Rc<Shard>,
    topic: &str,
    partition: u32,
    offset: i64,
    max_bytes: usize,
) -> Result<Fetched, Failure> {
    let (log, parts) = fetch_local(shard, topic, partition, offset, max_bytes).await?;
    let bytes = if parts.is_empty() {
        FetchedBytes::Copied(Vec::new())
    } else {
        shard.lend(parts)
    };
    Ok(Fetched {
        bytes,
        high_watermark: log.high_watermark(),
        log_start_offset: log.log_start_offset(),
    })
}

/// Waits until any of the owned partitions `targets` (topic, partition, offset) has data at
/// its offset, or `max_wait` passes (`None`: the caller bounds the wait). One timer however
/// many targets: a fetch naming thousands of partitions must not fill the ring with timers.
/// A target that is not (or no longer) here ends the wait at once: the read after it says why.
pub(crate) async fn wait_for_any(
    shard: &Rc<Shard>,
    targets: &[(String, u32, i64)],
    max_wait: Option<Duration>,
) {
    let mut waits = Vec::with_capacity(targets.len());
    for (topic, partition, offset) in targets {
        match shard.local_log(topic, *partition) {
            Ok(log) => waits.push(log.wait_for_offset(*offset)),
            Err(_) => return,
        }
    }
    if waits.is_empty() {
        return;
    }
    let any = poll_fn(|cx| {
        // Polls every wait per wake: the caller names each partition once.
        for wait in &mut waits {
            if Pin::new(wait).poll(cx).is_ready() {
                return Poll::Ready(());
            }
        }
        Poll::Pending
    });
    match max_wait {
        // Elapsed is the normal outcome of a long poll with no new data.
        Some(max_wait) => drop(time::timeout(max_wait, any).await),
        None => any.await,
    }
}

/// Moves the log start of an owned partition to `offset` (-1: the high watermark), stored
/// before the answer; returns the new log start offset.
pub(crate) async fn delete_records(
    shard: &Rc<Shard>,
    topic: &str,
    partition: u32,
    offset: i64,
) -> Result<i64, Failure> {
    let log = shard.local_log(topic, partition)?;
    let offset = if offset == -1 {
        log.high_watermark()
    } else {
        offset
    };
    log.delete_records(offset).await.map_err(log_failure)
}

/// Resolves an offset query on an owned partition: `(offset, timestamp_ms)`. A timestamp query
/// answers the first record stamped at or after the time, with its timestamp, as Kafka's
/// ListOffsets does (within a compressed batch, which the server does not decompress: the
/// batch's first offset and newest timestamp); other queries answer timestamp -1.
pub(crate) async fn list_offset(
    shard: &Rc<Shard>,
    topic: &str,
    partition: u32,
    query: OffsetQuery,
) -> Result<(i64, i64), Failure> {
    let log = shard.local_log(topic, partition)?;
    match query {
        OffsetQuery::Earliest => Ok((log.log_start_offset(), -1)),
        OffsetQuery::Latest => Ok((log.high_watermark(), -1)),
        OffsetQuery::Timestamp(timestamp_ms) => {
            let found = log
                .batch_for_timestamp(timestamp_ms)
                .await
                .map_err(log_failure)?;
            let Some((base_offset, max_timestamp_ms)) = found else {
                // -1 marks "none that late" for the callers that must tell (Kafka answers -1).
                return Ok((log.high_watermark(), -1));
            };
            // The batch's max timestamp is at least `timestamp_ms`, so never -1. A batch that
            // cannot be read now is answered at its granularity: a fetch from there reports
            // the damage. A batch the log start (DeleteRecords) cuts is searched from there.
            let from = base_offset.max(log.log_start_offset());
            let record = match log.read(from, 1).await {
                Ok(slice) => first_record_at_or_after(slice.bytes(), timestamp_ms, from),
                Err(_) => None,
            };
            Ok(record.unwrap_or((from, max_timestamp_ms)))
        }
    }
}
