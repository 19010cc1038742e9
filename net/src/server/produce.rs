//! Produce: append each partition's raw batches on the shard that owns it.

use std::rc::Rc;

use flatbuffers::FlatBufferBuilder;
use ringlog_engine::log::Acks as LogAcks;

use super::connection::{Request, Response};
use super::handler::{decode, respond};
use super::message::Failure;
use super::partition_ops::Produced;
use super::routing::{self, join_all, BoxedFuture};
use super::shard::Shard;
use crate::error_code::ErrorCode;
use crate::message::produce::{self, Acks};
use crate::message::{check_raw_len, Encode, Status};

fn log_acks(acks: Acks) -> LogAcks {
    match acks {
        Acks::None => LogAcks::None,
        Acks::Leader => LogAcks::Leader,
        Acks::Durable => LogAcks::Durable,
    }
}

/// Appends and answers; `Ok(None)` for acks none (no response is sent).
pub(crate) async fn handle(
    shard: &Rc<Shard>,
    mut request: Request,
) -> Result<Option<Response>, Failure> {
    let (topic, acks, entries) = {
        let view: produce::RequestView = decode(request.body())?;
        let acks = Acks::from_wire(view.acks())
            .ok_or_else(|| Failure::new(ErrorCode::InvalidRequest, "unknown acks value"))?;
        let described = view.partitions().unwrap_or_default();
        let raw = request.raw();
        check_raw_len(described.iter().map(|entry| entry.batch_bytes()), raw)
            .map_err(|error| Failure::new(error.error_code(), error.to_string()))?;
        let mut entries = Vec::with_capacity(described.len());
        let mut start = 0usize;
        for entry in described {
            let end = start + entry.batch_bytes() as usize;
            entries.push((entry.partition(), start..end));
            start = end;
        }
        (view.topic().to_string(), acks, entries)
    };
    // Start every partition's append before waiting on any: the first poll of each future
    // stamps its offsets (or sends it to the owner), in request order, so requests on one
    // connection keep their order per partition even when one of them waits for an fsync.
    let mut appends: Vec<BoxedFuture<'_, Result<Produced, Failure>>> =
        Vec::with_capacity(entries.len());
    let mut rest = request.raw_mut();
    let mut consumed = 0usize;
    for (partition, range) in &entries {
        debug_assert_eq!(range.start, consumed);
        let (this, tail) = std::mem::take(&mut rest).split_at_mut(range.len());
        rest = tail;
        consumed = range.end;
        appends.push(Box::pin(routing::append(
            shard,
            &topic,
            *partition,
            log_acks(acks),
            this,
        )));
    }
    let outcomes = join_all(appends).await;
    let results: Vec<(u32, Result<Produced, Failure>)> =
        entries.iter().map(|(p, _)| *p).zip(outcomes).collect();
    if acks == Acks::None {
        return Ok(None);
    }
    let partitions: Vec<produce::PartitionResult> = results
        .iter()
        .map(|(partition, result)| match result {
            Ok(produced) => produce::PartitionResult {
                partition: *partition,
                base_offset: produced.base_offset,
                log_start_offset: produced.log_start_offset,
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
    Ok(Some(respond(
        &request.header,
        response.encode(&mut fbb),
        Vec::new(),
    )))
}
