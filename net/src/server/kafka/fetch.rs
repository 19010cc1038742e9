//! Fetch (long poll with max_wait, min_bytes and max_bytes; read_uncommitted, and since
//! ringlog has no transactions read_committed sees the same) and ListOffsets.
//!
//! Batches are served as stored. Fetch sessions (KIP-227) are not kept: every response says
//! session 0, which tells clients to send full fetch requests.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::list_offsets_request::ListOffsetsTopic;
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::{
    FetchRequest, FetchResponse, ListOffsetsRequest, ListOffsetsResponse, TopicName,
};
use ringlog_engine::batch::{BatchHeader, Compression, BATCH_HEADER_BYTES};

use super::codec::{respond, KafkaError, KafkaRequest, KafkaResponse};
use super::errors::failure_code;
use super::{splice, KafkaShard};
use crate::server::connection::RawPart;
use crate::server::latch::Latch;
use crate::server::message::OffsetQuery;
use crate::server::routing::{self, FetchLimits, PartitionRead, ReadTarget};

/// The first Fetch version whose clients read zstd batches (KIP-110). Kafka answers an older
/// fetch of a partition holding one with UNSUPPORTED_COMPRESSION_TYPE, which such a client
/// reports, instead of records it cannot decode.
const ZSTD_FETCH_VERSION_MIN: i16 = 10;

/// KIP-227 session epochs of a full fetch: one that opens a session, and one that asks for
/// none (closing the session it names).
const SESSION_EPOCH_INITIAL: i32 = 0;
const SESSION_EPOCH_FINAL: i32 = -1;

/// Kafka's ListOffsets timestamps that ask for the log end and the log start.
const LATEST_TIMESTAMP: i64 = -1;
const EARLIEST_TIMESTAMP: i64 = -2;
/// The lookups of ListOffsets versions 7 to 9 (max timestamp, earliest local, latest tiered),
/// -3 down to -5.
const MAX_TIMESTAMP: i64 = -3;
const LATEST_TIERED_TIMESTAMP: i64 = -5;

/// Where one requested partition's answer comes from.
enum Source {
    /// Index into the read targets.
    Read(usize),
    /// A partition number no topic can have.
    Invalid,
}

/// Serves Fetch; a long poll ends early once `hangup` is set (the client went away).
pub(crate) async fn fetch(
    kafka: &Rc<KafkaShard>,
    request: &KafkaRequest,
    hangup: &Latch,
) -> Result<KafkaResponse, KafkaError> {
    let body: FetchRequest = request.decode_body()?;
    // A full fetch (epoch 0 or -1) is served whatever session it names, as by Kafka, which
    // closes that session first; only an incremental one needs a session, and none is kept.
    let full_fetch = matches!(
        body.session_epoch,
        SESSION_EPOCH_INITIAL | SESSION_EPOCH_FINAL
    );
    if request.version() >= 7 && !full_fetch {
        let response =
            FetchResponse::default().with_error_code(ResponseError::FetchSessionIdNotFound.code());
        return respond(request, &response);
    }
    let mut topics: Vec<String> = Vec::with_capacity(body.topics.len());
    let mut targets: Vec<ReadTarget> = Vec::new();
    let mut sources: Vec<(usize, i32, Source)> = Vec::new();
    // Kafka keys a fetch by partition (FetchRequest.fetchData, an insertion-ordered map): a
    // partition named twice is read once, with the offset and max bytes of the last place it
    // is named, and answered once, where it was first named. By partition, the index of its
    // source; no map for one partition, which cannot repeat.
    let named: usize = body.topics.iter().map(|t| t.partitions.len()).sum();
    let mut first_named: HashMap<(&str, i32), usize> = if named > 1 {
        HashMap::with_capacity(named)
    } else {
        HashMap::new()
    };
    for topic in &body.topics {
        topics.push(topic.topic.0.to_string());
        let topic_index = topics.len() - 1;
        for partition in &topic.partitions {
            if named > 1 {
                match first_named.entry((topic.topic.0.as_str(), partition.partition)) {
                    Entry::Occupied(first) => {
                        if let Some((_, _, Source::Read(index))) = sources.get(*first.get()) {
                            if let Some(target) = targets.get_mut(*index) {
                                target.offset = partition.fetch_offset;
                                target.max_bytes =
                                    usize::try_from(partition.partition_max_bytes).unwrap_or(0);
                            }
                        }
                        continue;
                    }
                    Entry::Vacant(slot) => {
                        slot.insert(sources.len());
                    }
                }
            }
            let source = match u32::try_from(partition.partition) {
                Ok(number) => {
                    targets.push(ReadTarget {
                        topic_index,
                        partition: number,
                        offset: partition.fetch_offset,
                        max_bytes: usize::try_from(partition.partition_max_bytes).unwrap_or(0),
                    });
                    Source::Read(targets.len() - 1)
                }
                Err(_) => Source::Invalid,
            };
            sources.push((topic_index, partition.partition, source));
        }
    }
    let min_bytes = usize::try_from(body.min_bytes).unwrap_or(0);
    let limits = FetchLimits {
        // Bounded by the frame limit, so one response never holds more than a request may.
        max_bytes: usize::try_from(body.max_bytes)
            .unwrap_or(0)
            .min(kafka.shard.config.frame_bytes_max),
        min_bytes,
        // min_bytes 0 asks for an answer at once, whatever max_wait says.
        max_wait: if min_bytes == 0 {
            Duration::ZERO
        } else {
            Duration::from_millis(u64::try_from(body.max_wait_ms).unwrap_or(0))
        },
    };
    let reads =
        routing::read_with_long_poll(&kafka.shard, &topics, &targets, limits, hangup.wait()).await;
    let zstd_readable = request.version() >= ZSTD_FETCH_VERSION_MIN;
    let (response, spliced) = fetch_response(&topics, &sources, reads, zstd_readable);
    splice::encode_fetch(
        request.header.correlation_id,
        request.version(),
        &response,
        spliced,
    )
}

/// The response, with the large record sets left out to be spliced in at the given flat
/// partition positions.
fn fetch_response(
    topics: &[String],
    sources: &[(usize, i32, Source)],
    reads: Vec<PartitionRead>,
    zstd_readable: bool,
) -> (FetchResponse, Vec<(usize, Vec<RawPart>)>) {
    let mut reads: Vec<Option<PartitionRead>> = reads.into_iter().map(Some).collect();
    let mut per_topic: Vec<Vec<PartitionData>> = topics.iter().map(|_| Vec::new()).collect();
    let mut spliced = Vec::new();
    // Sources are in request order, topic by topic: the order the partitions are encoded in.
    for (flat_index, (topic_index, partition_index, source)) in sources.iter().enumerate() {
        let partition = PartitionData::default().with_partition_index(*partition_index);
        let read = match source {
            Source::Read(index) => reads.get_mut(*index).and_then(Option::take),
            Source::Invalid => None,
        };
        let partition = match read {
            Some(PartitionRead { status: Ok(_), raw }) if !zstd_readable && holds_zstd(&raw) => {
                failed_partition(partition, ResponseError::UnsupportedCompressionType.code())
            }
            Some(PartitionRead {
                status: Ok((high_watermark, log_start_offset)),
                raw,
            }) => partition
                .with_high_watermark(high_watermark)
                // No transactions: everything below the high watermark is stable.
                .with_last_stable_offset(high_watermark)
                .with_log_start_offset(log_start_offset)
                .with_records(Some(if splice::raw_len(&raw) >= splice::SPLICE_MIN_BYTES {
                    spliced.push((flat_index, raw));
                    splice::placeholder()
                } else {
                    records(&raw)
                })),
            Some(PartitionRead {
                status: Err(failure),
                ..
            }) => failed_partition(partition, failure_code(&failure)),
            None => failed_partition(partition, ResponseError::UnknownTopicOrPartition.code()),
        };
        per_topic[*topic_index].push(partition);
    }
    // A topic entry left without partitions (each was named before, or it named none) is not
    // answered, as by Kafka, whose answer lists the partitions it read.
    let responses = topics
        .iter()
        .zip(per_topic)
        .filter(|(_, partitions)| !partitions.is_empty())
        .map(|(name, partitions)| {
            FetchableTopicResponse::default()
                .with_topic(TopicName(super::codec::str_bytes(name.clone())))
                .with_partitions(partitions)
        })
        .collect();
    (FetchResponse::default().with_responses(responses), spliced)
}

fn failed_partition(partition: PartitionData, code: i16) -> PartitionData {
    partition
        .with_error_code(code)
        .with_high_watermark(-1)
        .with_records(Some(Bytes::new()))
}

/// Whether a read holds a zstd batch. Reads hold whole batches; a part that does not parse
/// ends the walk of that part (the client's own checks then see it).
fn holds_zstd(raw: &[RawPart]) -> bool {
    raw.iter().any(|part| {
        let mut rest = part.bytes();
        while rest.len() >= BATCH_HEADER_BYTES {
            let Ok(header) = BatchHeader::parse_with_max(rest, usize::MAX) else {
                return false;
            };
            if header.compression() == Compression::Zstd {
                return true;
            }
            let Some(next) = rest.get(header.total_bytes()..) else {
                return false;
            };
            rest = next;
        }
        false
    })
}

/// The batch bytes of a small read as the codec takes them (a copy of local bytes).
fn records(raw: &[RawPart]) -> Bytes {
    match raw {
        [] => Bytes::new(),
        [one] => Bytes::copy_from_slice(one.bytes()),
        parts => {
            let mut bytes = Vec::with_capacity(splice::raw_len(parts));
            for part in parts {
                bytes.extend_from_slice(part.bytes());
            }
            Bytes::from(bytes)
        }
    }
}

/// The ringlog query for a Kafka ListOffsets timestamp.
fn offset_query(timestamp: i64) -> Option<OffsetQuery> {
    match timestamp {
        LATEST_TIMESTAMP => Some(OffsetQuery::Latest),
        EARLIEST_TIMESTAMP => Some(OffsetQuery::Earliest),
        t if t >= 0 => Some(OffsetQuery::Timestamp(t)),
        _ => None,
    }
}

/// Serves ListOffsets: earliest (-2), latest (-1) and by timestamp (the first record at or
/// after it, with its timestamp, see `partition_ops::list_offset`; offset -1 when there is
/// none, as from Kafka). A partition named twice is INVALID_REQUEST wherever it is named.
pub(crate) async fn list_offsets(
    kafka: &Rc<KafkaShard>,
    request: &KafkaRequest,
) -> Result<KafkaResponse, KafkaError> {
    let body: ListOffsetsRequest = request.decode_body()?;
    let duplicates = duplicate_partitions(&body.topics);
    let mut topics = Vec::with_capacity(body.topics.len());
    for topic in &body.topics {
        let name = topic.name.0.to_string();
        let mut partitions = Vec::with_capacity(topic.partitions.len());
        for query in &topic.partitions {
            let partition =
                ListOffsetsPartitionResponse::default().with_partition_index(query.partition_index);
            // Before any other check, as in Kafka.
            if duplicates.contains(&(topic.name.0.as_str(), query.partition_index)) {
                partitions.push(partition.with_error_code(ResponseError::InvalidRequest.code()));
                continue;
            }
            let Ok(number) = u32::try_from(query.partition_index) else {
                partitions
                    .push(partition.with_error_code(ResponseError::UnknownTopicOrPartition.code()));
                continue;
            };
            let Some(offset_query) = offset_query(query.timestamp) else {
                // Max timestamp (-3), earliest local (-4) and latest tiered (-5) are lookups of
                // versions 7 to 9, which Kafka answers UNSUPPORTED_VERSION at older ones; any
                // other negative timestamp names no lookup.
                let code = if (LATEST_TIERED_TIMESTAMP..=MAX_TIMESTAMP).contains(&query.timestamp) {
                    ResponseError::UnsupportedVersion
                } else {
                    ResponseError::InvalidRequest
                };
                partitions.push(partition.with_error_code(code.code()));
                continue;
            };
            let partition =
                match routing::list_offset(&kafka.shard, &name, number, offset_query).await {
                    // No batch that late: Kafka answers offset -1 (the Java consumer's
                    // offsetsForTimes then gives null); a log end offset beside timestamp -1
                    // makes it throw "Invalid negative timestamp".
                    Ok((_, -1)) if matches!(offset_query, OffsetQuery::Timestamp(_)) => {
                        partition.with_offset(-1).with_timestamp(-1)
                    }
                    Ok((offset, timestamp_ms)) => {
                        partition.with_offset(offset).with_timestamp(timestamp_ms)
                    }
                    Err(failure) => partition.with_error_code(failure_code(&failure)),
                };
            partitions.push(partition);
        }
        topics.push(
            ListOffsetsTopicResponse::default()
                .with_name(topic.name.clone())
                .with_partitions(partitions),
        );
    }
    respond(request, &ListOffsetsResponse::default().with_topics(topics))
}

/// The partitions a ListOffsets request names more than once, in one topic entry or across
/// entries of the same topic. Kafka (ListOffsetsRequest.duplicatePartitions) answers each
/// place they are named INVALID_REQUEST from version 1: which of the lookups would the
/// client's one answer be for?
fn duplicate_partitions(topics: &[ListOffsetsTopic]) -> HashSet<(&str, i32)> {
    let mut seen = HashSet::new();
    let mut duplicates = HashSet::new();
    for topic in topics {
        for partition in &topic.partitions {
            let key = (topic.name.0.as_str(), partition.partition_index);
            if !seen.insert(key) {
                duplicates.insert(key);
            }
        }
    }
    duplicates
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_offsets_timestamps() {
        assert_eq!(offset_query(-1), Some(OffsetQuery::Latest));
        assert_eq!(offset_query(-2), Some(OffsetQuery::Earliest));
        assert_eq!(offset_query(1234), Some(OffsetQuery::Timestamp(1234)));
        assert_eq!(offset_query(-3), None);
    }
}
