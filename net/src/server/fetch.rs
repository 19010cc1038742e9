//! Fetch (with long polling) and ListOffsets.
//!
//! A fetch reads every requested partition once. If that gives fewer than `min_bytes` and the
//! client allows a wait, it waits until any of the partitions has data past the requested
//! offset (or `max_wait_ms` passes) and reads again. Local partitions are sent straight from
//! the shard's buffers; partitions on other shards arrive as copies.

use std::rc::Rc;
use std::time::Duration;

use flatbuffers::FlatBufferBuilder;

use super::connection::{RawPart, Request, Response};
use super::handler::{decode, offset_query, respond};
use super::message::Failure;
use super::routing::{self, FetchLimits, PartitionRead, ReadTarget};
use super::shard::Shard;
use crate::message::{fetch, list_offsets, Encode, Status};

/// Serves a Fetch request.
pub(crate) async fn handle(shard: &Rc<Shard>, request: &Request) -> Result<Response, Failure> {
    let view: fetch::RequestView = decode(request.body())?;
    let mut topics: Vec<String> = Vec::new();
    let mut wanted: Vec<ReadTarget> = Vec::new();
    for topic in view.topics().unwrap_or_default() {
        topics.push(topic.topic().to_string());
        for p in topic.partitions().unwrap_or_default() {
            wanted.push(ReadTarget {
                topic_index: topics.len() - 1,
                partition: p.partition(),
                offset: p.offset(),
                max_bytes: p.partition_max_bytes() as usize,
            });
        }
    }
    // The whole response frame stays within the frame limit the client also applies (and so
    // far below the 4 GiB a frame header can say), however much the request asks for.
    let bytes_max = data_bytes_max(shard.config.frame_bytes_max, wanted.len());
    for target in &mut wanted {
        target.max_bytes = target.max_bytes.min(bytes_max);
    }
    let limits = FetchLimits {
        max_bytes: (view.max_bytes() as usize).min(bytes_max),
        min_bytes: view.min_bytes() as usize,
        max_wait: Duration::from_millis(u64::from(view.max_wait_ms())),
    };
    let got =
        routing::read_with_long_poll(shard, &topics, &wanted, limits, request.hangup.wait()).await;
    Ok(build_response(request, &topics, &wanted, got))
}

/// Room a fetch response's frame keeps for each partition result (its fields and an error
/// message, which names the topic), so that the batches and the results together fit a frame.
const RESULT_BYTES_MAX: usize = 512;

/// Bytes of batches a fetch response of `partitions` results may carry within a frame of
/// `frame_bytes_max`.
fn data_bytes_max(frame_bytes_max: usize, partitions: usize) -> usize {
    let results_bytes = RESULT_BYTES_MAX.saturating_mul(partitions.saturating_add(8));
    frame_bytes_max.saturating_sub(results_bytes)
}

/// An offset and its timestamp, or why not.
type OffsetResult = Result<(i64, i64), Failure>;

fn build_response(
    request: &Request,
    topics: &[String],
    wanted: &[ReadTarget],
    mut got: Vec<PartitionRead>,
) -> Response {
    let sizes: Vec<usize> = got.iter().map(PartitionRead::bytes).collect();
    let raw: Vec<RawPart> = got.iter_mut().flat_map(|g| g.raw.drain(..)).collect();
    let mut per_topic: Vec<Vec<fetch::PartitionResult>> =
        topics.iter().map(|_| Vec::new()).collect();
    for ((want, got), &bytes) in wanted.iter().zip(&got).zip(&sizes) {
        let result = match &got.status {
            Ok((high_watermark, log_start_offset)) => fetch::PartitionResult {
                partition: want.partition,
                status: Status::OK,
                high_watermark: *high_watermark,
                log_start_offset: *log_start_offset,
                batch_bytes: bytes as u32,
            },
            Err(failure) => fetch::PartitionResult {
                partition: want.partition,
                status: Status::error(failure.code, &failure.message),
                high_watermark: -1,
                log_start_offset: -1,
                batch_bytes: 0,
            },
        };
        per_topic[want.topic_index].push(result);
    }
    let topic_results: Vec<fetch::TopicResult> = topics
        .iter()
        .zip(&per_topic)
        .map(|(topic, partitions)| fetch::TopicResult { topic, partitions })
        .collect();
    let response = fetch::Response {
        status: Status::OK,
        topics: &topic_results,
    };
    let mut fbb = FlatBufferBuilder::new();
    respond(&request.header, response.encode(&mut fbb), raw)
}

/// Serves a ListOffsets request.
pub(crate) async fn list_offsets(
    shard: &Rc<Shard>,
    request: &Request,
) -> Result<Response, Failure> {
    let view: list_offsets::RequestView = decode(request.body())?;
    let topic = view.topic().to_string();
    let mut results: Vec<(u32, OffsetResult)> = Vec::new();
    for query in view.partitions().unwrap_or_default() {
        let partition = query.partition();
        let result = match offset_query(query.spec(), query.value()) {
            Err(failure) => Err(failure),
            Ok(query) => routing::list_offset(shard, &topic, partition, query).await,
        };
        results.push((partition, result));
    }
    let partitions: Vec<list_offsets::PartitionResult> = results
        .iter()
        .map(|(partition, result)| match result {
            Ok((offset, timestamp_ms)) => list_offsets::PartitionResult {
                partition: *partition,
                status: Status::OK,
                offset: *offset,
                timestamp_ms: *timestamp_ms,
            },
            Err(failure) => list_offsets::PartitionResult {
                partition: *partition,
                status: Status::error(failure.code, &failure.message),
                offset: -1,
                timestamp_ms: -1,
            },
        })
        .collect();
    let response = list_offsets::Response {
        status: Status::OK,
        topic: &topic,
        partitions: &partitions,
    };
    let mut fbb = FlatBufferBuilder::new();
    Ok(respond(
        &request.header,
        response.encode(&mut fbb),
        Vec::new(),
    ))
}
