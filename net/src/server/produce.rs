//! Produce: append each partition's raw batches on the shard that owns it.

use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::rc::Rc;
use std::task::Poll;

use flatbuffers::FlatBufferBuilder;
use ringlog_engine::log::Acks as LogAcks;

use super::connection::{Request, Response};
use super::handler::{decode, respond};
use super::message::{Failure, ShardCall, ShardReturn};
use super::partition_ops;
use super::shard::Shard;
use crate::error_code::ErrorCode;
use crate::message::produce::{self, Acks};
use crate::message::{Encode, Status};

fn log_acks(acks: Acks) -> LogAcks {
    match acks {
        Acks::None => LogAcks::None,
        Acks::Leader => LogAcks::Leader,
        Acks::Durable => LogAcks::Durable,
    }
}

/// Appends and answers; `Ok(None)` for acks none (no response is sent).
pub(crate) async fn handle(shard: &Rc<Shard>, mut request: Request) -> Result<Option<Response>, Failure> {
    let (topic, acks, entries) = {
        let view: produce::RequestView = decode(request.body())?;
        let acks = Acks::from_wire(view.acks())
            .ok_or_else(|| Failure::new(ErrorCode::InvalidRequest, "unknown acks value"))?;
        let mut entries = Vec::new();
        let mut start = 0usize;
        for entry in view.partitions().unwrap_or_default() {
            let end = start + entry.batch_bytes() as usize;
            entries.push((entry.partition(), start..end));
            start = end;
        }
        let raw_bytes = request.payload.len() - request.body_bytes;
        if start != raw_bytes {
            return Err(Failure::new(
                ErrorCode::InvalidRequest,
                format!("body describes {start} bytes of batches but the frame carries {raw_bytes}"),
            ));
        }
        (view.topic().to_string(), acks, entries)
    };
    // Start every partition's append before waiting on any: the first poll of each future
    // stamps its offsets (or sends it to the owner), in request order, so requests on one
    // connection keep their order per partition even when one of them waits for an fsync.
    let mut appends: Vec<Pin<Box<dyn Future<Output = Result<i64, Failure>> + '_>>> = Vec::with_capacity(entries.len());
    let mut rest = request.raw_mut();
    let mut consumed = 0usize;
    for (partition, range) in &entries {
        debug_assert_eq!(range.start, consumed);
        let (this, tail) = std::mem::take(&mut rest).split_at_mut(range.len());
        rest = tail;
        consumed = range.end;
        appends.push(Box::pin(append(shard, &topic, *partition, acks, this)));
    }
    let outcomes = join_all(appends).await;
    let results: Vec<(u32, Result<i64, Failure>)> = entries.iter().map(|(p, _)| *p).zip(outcomes).collect();
    if acks == Acks::None {
        return Ok(None);
    }
    let partitions: Vec<produce::PartitionResult> = results
        .iter()
        .map(|(partition, result)| match result {
            Ok(base_offset) => produce::PartitionResult {
                partition: *partition,
                base_offset: *base_offset,
                ..Default::default()
            },
            Err(failure) => produce::PartitionResult {
                partition: *partition,
                status: Status::error(failure.code, &failure.message),
                ..Default::default()
            },
        })
        .collect();
    let response = produce::Response {
        status: Status::OK,
        topic: &topic,
        partitions: &partitions,
    };
    let mut fbb = FlatBufferBuilder::new();
    Ok(Some(respond(&request.header, response.encode(&mut fbb), Vec::new())))
}

/// Polls every future, in order, until all are done; returns their outputs in order.
async fn join_all<T>(mut futures: Vec<Pin<Box<dyn Future<Output = T> + '_>>>) -> Vec<T> {
    let mut outputs: Vec<Option<T>> = futures.iter().map(|_| None).collect();
    poll_fn(|cx| {
        let mut pending = false;
        for (future, output) in futures.iter_mut().zip(outputs.iter_mut()) {
            if output.is_none() {
                match future.as_mut().poll(cx) {
                    Poll::Ready(value) => *output = Some(value),
                    Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    })
    .await;
    outputs.into_iter().map(|o| o.expect("every future completed")).collect()
}

async fn append(shard: &Rc<Shard>, topic: &str, partition: u32, acks: Acks, batches: &mut [u8]) -> Result<i64, Failure> {
    let owner = shard.owner(topic, partition);
    if owner == shard.id {
        return partition_ops::produce(shard, topic, partition, log_acks(acks), batches).await;
    }
    if shard.topic(topic).is_none() {
        return Err(super::shard::unknown_topic(topic));
    }
    let call = ShardCall::Produce {
        topic: topic.to_string(),
        partition,
        acks: log_acks(acks),
        batches: batches.to_vec(),
    };
    match shard.call(owner, call).await {
        ShardReturn::Produced(result) => result,
        _ => Err(Failure::new(ErrorCode::Unknown, "internal: unexpected shard answer")),
    }
}
