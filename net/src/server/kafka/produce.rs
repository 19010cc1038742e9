//! Produce and InitProducerId.
//!
//! A produce request's record batches are appended where they arrived: the decoder hands out
//! views of the request frame, the handler notes where each partition's batches lie, drops
//! the views and regains the frame mutably, and the owner stamps base offsets in place (a
//! partition on another shard gets a copy, as on the native path). Batches, compressed ones
//! included, are stored as sent; records are counted from the batch header.

use std::ops::Range;
use std::rc::Rc;

use bytes::{Bytes, BytesMut};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{
    InitProducerIdRequest, InitProducerIdResponse, ProduceRequest, ProduceResponse, ProducerId,
    TopicName,
};
use kafka_protocol::protocol::StrBytes;
use ringlog_engine::batch::{BatchHeader, BATCH_HEADER_BYTES};
use ringlog_engine::log::Acks;

use super::codec::{encode_response, respond, str_bytes, KafkaError, KafkaRequest, KafkaResponse};
use super::errors::{failure_code, failure_message};
use super::KafkaShard;
use crate::server::message::Failure;
use crate::server::partition_ops::Produced;
use crate::server::routing::{self, join_all, BoxedFuture};

/// One partition of a produce request, as planned before anything is written.
struct Planned {
    topic_index: usize,
    partition_index: i32,
    outcome: Plan,
}

enum Plan {
    /// Append the batches at this range of the request frame to this partition.
    Append { partition: u32, range: Range<usize> },
    /// Answer with this error; nothing is written.
    Refuse { code: i16, message: String },
}

/// The Kafka acks value as a durability level; `None` for values Kafka rejects.
fn acks_of(acks: i16) -> Option<Acks> {
    match acks {
        0 => Some(Acks::None),
        1 => Some(Acks::Leader),
        -1 => Some(Acks::Durable),
        _ => None,
    }
}

/// Serves Produce; `Ok(None)` for acks=0, which gets no response.
pub(crate) async fn produce(
    kafka: &Rc<KafkaShard>,
    request: KafkaRequest,
) -> Result<Option<KafkaResponse>, KafkaError> {
    let body: ProduceRequest = request.decode_body()?;
    let acks = acks_of(body.acks);
    let (topics, planned) = plan(kafka, &request.frame, &body, acks);
    drop(body);
    let KafkaRequest {
        api_key,
        header,
        body,
        frame,
    } = request;
    let (correlation_id, version) = (header.correlation_id, header.request_api_version);
    // Only `frame` may still refer to the bytes now (the header's client id and the body were
    // views too), so this normally regains them in place.
    drop((header, body));
    let mut frame = frame
        .try_into_mut()
        .unwrap_or_else(|shared| BytesMut::from(&shared[..]));
    let outcomes = append_all(
        kafka,
        &topics,
        &planned,
        acks.unwrap_or_default(),
        &mut frame,
    )
    .await;
    let response = response(&topics, &planned, outcomes);
    if acks == Some(Acks::None) {
        return match first_refusal(&response) {
            Some(refusal) => Err(KafkaError::RefusedWithoutResponse(refusal)),
            None => Ok(None),
        };
    }
    encode_response(api_key, correlation_id, version, &response).map(Some)
}

/// The first partition error of `response`, as `topic/partition: code (message)`.
fn first_refusal(response: &ProduceResponse) -> Option<String> {
    response.responses.iter().find_map(|topic| {
        let partition = topic
            .partition_responses
            .iter()
            .find(|p| p.error_code != 0)?;
        let message = partition.error_message.as_deref().unwrap_or_default();
        Some(format!(
            "{}/{}: error {} ({message})",
            topic.name.as_str(),
            partition.index,
            partition.error_code
        ))
    })
}

/// Checks every partition (topic known, partition in range, batches present and not too
/// large) and notes where its batches lie in `frame`.
fn plan(
    kafka: &KafkaShard,
    frame: &Bytes,
    body: &ProduceRequest,
    acks: Option<Acks>,
) -> (Vec<String>, Vec<Planned>) {
    let mut topics = Vec::with_capacity(body.topic_data.len());
    let mut planned = Vec::new();
    let mut frame_cursor = 0usize;
    for topic in &body.topic_data {
        let name = topic.name.0.to_string();
        let config = kafka.shard.topic(&name).map(|entry| entry.config.clone());
        for data in &topic.partition_data {
            let refuse = |error: ResponseError, message: String| Plan::Refuse {
                code: error.code(),
                message,
            };
            let outcome = if acks.is_none() {
                refuse(
                    ResponseError::InvalidRequiredAcks,
                    format!("acks must be 0, 1 or -1, not {}", body.acks),
                )
            } else if let Some(config) = &config {
                match u32::try_from(data.index).ok().filter(|p| *p < config.partitions) {
                    None => refuse(
                        ResponseError::UnknownTopicOrPartition,
                        format!("topic {name} has no partition {}", data.index),
                    ),
                    Some(partition) => match data.records.as_ref().filter(|r| !r.is_empty()) {
                        None => refuse(ResponseError::CorruptMessage, "no record batches".into()),
                        Some(records) => match oversized_batch(records, config.segment_bytes) {
                            Some(bytes) => refuse(
                                ResponseError::MessageTooLarge,
                                format!(
                                    "a batch of {bytes} bytes is larger than the topic's segments ({} bytes)",
                                    config.segment_bytes
                                ),
                            ),
                            None => match range_in(frame, records, frame_cursor) {
                                Some(range) => {
                                    frame_cursor = range.end;
                                    Plan::Append { partition, range }
                                }
                                None => refuse(
                                    ResponseError::CorruptMessage,
                                    "record batches outside the request".into(),
                                ),
                            },
                        },
                    },
                }
            } else {
                refuse(
                    ResponseError::UnknownTopicOrPartition,
                    format!("unknown topic {name}"),
                )
            };
            planned.push(Planned {
                topic_index: topics.len(),
                partition_index: data.index,
                outcome,
            });
        }
        topics.push(name);
    }
    (topics, planned)
}

/// Where `part` (a view the decoder took of `frame`) lies in `frame`, if at or after `from`.
fn range_in(frame: &Bytes, part: &Bytes, from: usize) -> Option<Range<usize>> {
    let start = (part.as_ptr() as usize).checked_sub(frame.as_ptr() as usize)?;
    let end = start.checked_add(part.len())?;
    (start >= from && end <= frame.len()).then_some(start..end)
}

/// The size of the first batch in `records` larger than `limit_bytes` (the log refuses those;
/// Kafka clients expect MESSAGE_TOO_LARGE). Malformed batches are left to the log's checks.
fn oversized_batch(records: &[u8], limit_bytes: u64) -> Option<usize> {
    let mut rest = records;
    while rest.len() >= BATCH_HEADER_BYTES {
        let header = BatchHeader::parse_with_max(rest, usize::MAX).ok()?;
        let bytes = header.total_bytes();
        if bytes as u64 > limit_bytes {
            return Some(bytes);
        }
        rest = rest.get(bytes..)?;
    }
    None
}

/// Starts every planned append in request order, then waits for all of them.
async fn append_all(
    kafka: &Rc<KafkaShard>,
    topics: &[String],
    planned: &[Planned],
    acks: Acks,
    frame: &mut [u8],
) -> Vec<Option<Result<Produced, Failure>>> {
    let shard = &kafka.shard;
    let mut appends: Vec<BoxedFuture<'_, Option<Result<Produced, Failure>>>> =
        Vec::with_capacity(planned.len());
    let mut rest: &mut [u8] = frame;
    let mut consumed = 0usize;
    for entry in planned {
        let Plan::Append { partition, range } = &entry.outcome else {
            appends.push(Box::pin(async { None }));
            continue;
        };
        // Ranges ascend (checked by `plan`), so the frame splits into disjoint pieces.
        let (_, tail) = std::mem::take(&mut rest).split_at_mut(range.start - consumed);
        let (batches, tail) = tail.split_at_mut(range.len());
        rest = tail;
        consumed = range.end;
        let topic = &topics[entry.topic_index];
        appends.push(Box::pin(async move {
            Some(routing::append(shard, topic, *partition, acks, batches).await)
        }));
    }
    join_all(appends).await
}

fn response(
    topics: &[String],
    planned: &[Planned],
    outcomes: Vec<Option<Result<Produced, Failure>>>,
) -> ProduceResponse {
    let mut per_topic: Vec<Vec<PartitionProduceResponse>> =
        topics.iter().map(|_| Vec::new()).collect();
    for (entry, outcome) in planned.iter().zip(outcomes) {
        let partition = PartitionProduceResponse::default().with_index(entry.partition_index);
        let partition = match (&entry.outcome, outcome) {
            (Plan::Refuse { code, message }, _) => partition
                .with_error_code(*code)
                .with_base_offset(-1)
                .with_error_message(Some(str_bytes(message.clone()))),
            (Plan::Append { .. }, Some(Ok(produced))) => partition
                .with_base_offset(produced.base_offset)
                .with_log_start_offset(produced.log_start_offset),
            (Plan::Append { .. }, Some(Err(failure))) => partition
                .with_error_code(failure_code(&failure))
                .with_base_offset(-1)
                .with_error_message(failure_message(&failure)),
            (Plan::Append { .. }, None) => partition
                .with_error_code(ResponseError::UnknownServerError.code())
                .with_base_offset(-1),
        };
        per_topic[entry.topic_index].push(partition);
    }
    let responses = topics
        .iter()
        .zip(per_topic)
        .map(|(name, partitions)| {
            TopicProduceResponse::default()
                .with_name(TopicName(StrBytes::from_string(name.clone())))
                .with_partition_responses(partitions)
        })
        .collect();
    ProduceResponse::default().with_responses(responses)
}

/// Serves InitProducerId for idempotent producers with the shard's producer ids (the same
/// source as the native api): a new id, or the next epoch of the id the producer presents
/// (KIP-360). The log deduplicates retried batches by producer id, epoch and sequence.
/// Transactions are not supported: a transactional id is refused.
pub(crate) async fn init_producer_id(
    kafka: &KafkaShard,
    request: &KafkaRequest,
) -> Result<KafkaResponse, KafkaError> {
    let body: InitProducerIdRequest = request.decode_body()?;
    let response = if body.transactional_id.is_some() {
        InitProducerIdResponse::default()
            .with_error_code(ResponseError::TransactionalIdAuthorizationFailed.code())
    } else {
        match kafka
            .shard
            .producer_ids
            .init(body.producer_id.0, body.producer_epoch)
            .await
        {
            Ok((producer_id, producer_epoch)) => InitProducerIdResponse::default()
                .with_producer_id(ProducerId(producer_id))
                .with_producer_epoch(producer_epoch),
            Err(failure) => {
                InitProducerIdResponse::default().with_error_code(failure_code(&failure))
            }
        }
    };
    respond(request, &response)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringlog_engine::batch::BatchBuilder;

    fn batch(values: &[&[u8]]) -> Vec<u8> {
        let mut builder = BatchBuilder::new(Vec::new(), 1_000);
        for value in values {
            builder.push(1_000, None, Some(value), &[]).unwrap();
        }
        builder.finish().to_vec()
    }

    #[test]
    fn the_request_frame_is_regained_in_place_once_decoded() {
        use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
        use kafka_protocol::protocol::{Decodable, Encodable};
        let sent = batch(&[b"x", b"y"]);
        let request = ProduceRequest::default()
            .with_transactional_id(None)
            .with_acks(1)
            .with_topic_data(vec![TopicProduceData::default()
                .with_name(TopicName(StrBytes::from_static_str("t")))
                .with_partition_data(vec![PartitionProduceData::default()
                    .with_index(0)
                    .with_records(Some(Bytes::from(sent.clone())))])]);
        let mut encoded = BytesMut::new();
        request.encode(&mut encoded, 9).unwrap();
        let frame = Bytes::from(encoded.to_vec());
        let address = frame.as_ptr();
        let decoded = ProduceRequest::decode(&mut frame.clone(), 9).unwrap();
        let records = decoded.topic_data[0].partition_data[0]
            .records
            .as_ref()
            .unwrap();
        let range = range_in(&frame, records, 0).unwrap();
        drop(decoded);
        let regained = frame.try_into_mut().expect("no view of the frame is left");
        assert_eq!(regained.as_ptr(), address, "the same memory, not a copy");
        assert_eq!(&regained[range], &sent[..]);
    }

    #[test]
    fn acks_map_to_durability() {
        assert_eq!(acks_of(0), Some(Acks::None));
        assert_eq!(acks_of(1), Some(Acks::Leader));
        assert_eq!(acks_of(-1), Some(Acks::Durable));
        assert_eq!(acks_of(2), None);
    }

    #[test]
    fn oversized_batches_are_found_by_their_header() {
        let mut two = batch(&[b"a"]);
        let second = batch(&[&[7u8; 300]]);
        two.extend_from_slice(&second);
        assert_eq!(oversized_batch(&two, 1 << 20), None);
        assert_eq!(oversized_batch(&two, 200), Some(second.len()));
        assert_eq!(oversized_batch(b"short", 1), None);
    }

    #[test]
    fn ranges_are_found_inside_the_frame_only() {
        let frame = Bytes::from(vec![0u8; 100]);
        let part = frame.slice(10..30);
        assert_eq!(range_in(&frame, &part, 0), Some(10..30));
        assert_eq!(range_in(&frame, &part, 11), None);
        let elsewhere = Bytes::from(vec![0u8; 10]);
        assert_eq!(range_in(&frame, &elsewhere, 0), None);
    }
}
