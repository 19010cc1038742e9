//! Fetch (with long polling) and ListOffsets.
//!
//! A fetch reads every requested partition once. If that gives fewer than `min_bytes` and the
//! client allows a wait, it waits until any of the partitions has data past the requested
//! offset (or `max_wait_ms` passes) and reads again. Local partitions are sent straight from
//! the shard's buffers; partitions on other shards arrive as copies.

use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::Poll;
use std::time::Duration;

use flatbuffers::FlatBufferBuilder;
use ringlog_engine::reactor::time;

use super::connection::{RawPart, Request, Response};
use super::handler::{decode, offset_query, respond};
use super::message::{Failure, ShardCall, ShardReturn};
use super::partition_ops;
use super::shard::Shard;
use crate::error_code::ErrorCode;
use crate::message::{fetch, list_offsets, Encode, Status};

struct Wanted {
    topic_index: usize,
    partition: u32,
    offset: i64,
    max_bytes: usize,
}

struct Got {
    status: Result<(i64, i64), Failure>,
    raw: Option<RawPart>,
}

impl Got {
    fn bytes(&self) -> usize {
        match &self.raw {
            Some(RawPart::Slice(slice)) => slice.len(),
            Some(RawPart::Owned(bytes)) => bytes.len(),
            None => 0,
        }
    }
}

/// Serves a Fetch request.
pub(crate) async fn handle(shard: &Rc<Shard>, request: &Request) -> Result<Response, Failure> {
    let view: fetch::RequestView = decode(request.body())?;
    let mut topics: Vec<String> = Vec::new();
    let mut wanted: Vec<Wanted> = Vec::new();
    for topic in view.topics().unwrap_or_default() {
        topics.push(topic.topic().to_string());
        for p in topic.partitions().unwrap_or_default() {
            wanted.push(Wanted {
                topic_index: topics.len() - 1,
                partition: p.partition(),
                offset: p.offset(),
                max_bytes: p.partition_max_bytes() as usize,
            });
        }
    }
    let max_wait = Duration::from_millis(u64::from(view.max_wait_ms()));
    let min_bytes = view.min_bytes() as usize;
    let max_bytes = view.max_bytes() as usize;

    let mut got = read_all(shard, &topics, &wanted, max_bytes).await;
    let total: usize = got.iter().map(Got::bytes).sum();
    let any_error = got.iter().any(|g| g.status.is_err());
    if total < min_bytes.max(1) && !max_wait.is_zero() && !any_error && !wanted.is_empty() {
        let _ = time::timeout(max_wait, wait_any(shard, &topics, &wanted, max_wait)).await;
        got = read_all(shard, &topics, &wanted, max_bytes).await;
    }
    Ok(build_response(request, &topics, &wanted, got))
}

async fn read_all(shard: &Rc<Shard>, topics: &[String], wanted: &[Wanted], max_bytes: usize) -> Vec<Got> {
    let mut got = Vec::with_capacity(wanted.len());
    let mut budget = max_bytes;
    for want in wanted {
        // Once the response is full, later partitions are answered without data (their
        // offsets stay where they were), as Kafka does; the first always gets a batch.
        let limit = want.max_bytes.min(budget);
        if limit == 0 && !got.is_empty() {
            got.push(Got { status: Ok((-1, -1)), raw: None });
            continue;
        }
        let one = read_one(shard, &topics[want.topic_index], want, limit.max(1)).await;
        budget = budget.saturating_sub(one.bytes());
        got.push(one);
    }
    got
}

async fn read_one(shard: &Rc<Shard>, topic: &str, want: &Wanted, max_bytes: usize) -> Got {
    let owner = shard.owner(topic, want.partition);
    if owner == shard.id {
        return match partition_ops::fetch_local(shard, topic, want.partition, want.offset, max_bytes).await {
            Ok((log, slice)) => Got {
                status: Ok((log.high_watermark(), log.log_start_offset())),
                raw: (slice.len() > 0).then_some(RawPart::Slice(slice)),
            },
            Err(failure) => Got { status: Err(failure), raw: None },
        };
    }
    if shard.topic(topic).is_none() {
        return Got { status: Err(super::shard::unknown_topic(topic)), raw: None };
    }
    let call = ShardCall::Fetch {
        topic: topic.to_string(),
        partition: want.partition,
        offset: want.offset,
        max_bytes,
    };
    match shard.call(owner, call).await {
        ShardReturn::Fetched(Ok(fetched)) => Got {
            status: Ok((fetched.high_watermark, fetched.log_start_offset)),
            raw: (!fetched.bytes.is_empty()).then_some(RawPart::Owned(fetched.bytes)),
        },
        ShardReturn::Fetched(Err(failure)) => Got { status: Err(failure), raw: None },
        _ => Got {
            status: Err(Failure::new(ErrorCode::Unknown, "internal: unexpected shard answer")),
            raw: None,
        },
    }
}

type WaitFuture<'a> = Pin<Box<dyn Future<Output = ()> + 'a>>;

/// Completes when any wanted partition has data at its offset.
async fn wait_any(shard: &Rc<Shard>, topics: &[String], wanted: &[Wanted], max_wait: Duration) {
    let max_wait_ms = u32::try_from(max_wait.as_millis()).unwrap_or(u32::MAX);
    let mut waits: Vec<WaitFuture> = Vec::with_capacity(wanted.len());
    for want in wanted {
        let topic = topics[want.topic_index].clone();
        let shard = Rc::clone(shard);
        let (partition, offset) = (want.partition, want.offset);
        waits.push(Box::pin(async move {
            let owner = shard.owner(&topic, partition);
            if owner == shard.id {
                let _ = partition_ops::wait_for_data(&shard, &topic, partition, offset, max_wait_ms).await;
            } else {
                let call = ShardCall::WaitForData { topic, partition, offset, max_wait_ms };
                let _ = shard.call(owner, call).await;
            }
        }));
    }
    std::future::poll_fn(|cx| {
        for wait in waits.iter_mut() {
            if wait.as_mut().poll(cx).is_ready() {
                return Poll::Ready(());
            }
        }
        Poll::Pending
    })
    .await
}

fn build_response(request: &Request, topics: &[String], wanted: &[Wanted], mut got: Vec<Got>) -> Response {
    let sizes: Vec<usize> = got.iter().map(Got::bytes).collect();
    let raw: Vec<RawPart> = got.iter_mut().filter_map(|g| g.raw.take()).collect();
    let mut per_topic: Vec<Vec<fetch::PartitionResult>> = topics.iter().map(|_| Vec::new()).collect();
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
pub(crate) async fn list_offsets(shard: &Rc<Shard>, request: &Request) -> Result<Response, Failure> {
    let view: list_offsets::RequestView = decode(request.body())?;
    let topic = view.topic().to_string();
    let mut results: Vec<(u32, Result<(i64, i64), Failure>)> = Vec::new();
    for query in view.partitions().unwrap_or_default() {
        let partition = query.partition();
        let result = match offset_query(query.spec(), query.value()) {
            Err(failure) => Err(failure),
            Ok(query) => {
                let owner = shard.owner(&topic, partition);
                if owner == shard.id {
                    partition_ops::list_offset(shard, &topic, partition, query).await
                } else if shard.topic(&topic).is_none() {
                    Err(super::shard::unknown_topic(&topic))
                } else {
                    let call = ShardCall::ListOffset { topic: topic.clone(), partition, query };
                    match shard.call(owner, call).await {
                        ShardReturn::Offset(result) => result,
                        _ => Err(Failure::new(ErrorCode::Unknown, "internal: unexpected shard answer")),
                    }
                }
            }
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
    Ok(respond(&request.header, response.encode(&mut fbb), Vec::new()))
}
