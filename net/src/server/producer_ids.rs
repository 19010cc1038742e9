//! InitProducerId: producer ids and epochs for idempotent producers.
//!
//! Ids come from the shard's [`ProducerIdAllocator`] (a range of its own, reserved in durable
//! blocks, so an id is never handed out twice, across restarts and shard count changes; no
//! other shard is asked). A request with an existing id and epoch bumps the epoch, which
//! fences older instances of that producer on every partition they write next; at the last
//! epoch a new id is handed out instead. The per-partition checks are the engine's
//! ([`ringlog_engine::producer_state`]). The Kafka front door answers its InitProducerId with
//! [`ProducerIds::init`] too.

use std::rc::Rc;

use flatbuffers::FlatBufferBuilder;
use ringlog_engine::producer_id::{ProducerIdAllocator, ProducerIdError};

use super::connection::{Request, Response};
use super::handler::{decode, respond};
use super::message::Failure;
use super::shard::Shard;
use crate::error_code::ErrorCode;
use crate::message::{init_producer_id, Encode, Status};

/// A shard's producer id source.
#[derive(Debug)]
pub(crate) struct ProducerIds {
    allocator: Result<ProducerIdAllocator, String>,
}

impl ProducerIds {
    /// Opens shard `shard`'s reservation file in `data_dir` (blocking; startup only). An
    /// unreadable file is logged and makes InitProducerId fail with StorageError rather than
    /// risk handing out an id twice.
    pub(crate) fn open(data_dir: &std::path::Path, shard: usize) -> ProducerIds {
        let allocator = ProducerIdAllocator::for_shard(data_dir, shard).map_err(|error| {
            tracing::error!(shard, %error, "producer ids unavailable; idempotent producers will be refused");
            error.to_string()
        });
        ProducerIds { allocator }
    }

    /// The answer to InitProducerId(`producer_id`, `producer_epoch`): `(-1, -1)` asks for a new
    /// producer (epoch 0); an existing id with its epoch gets the next epoch (a new id once
    /// the epoch would overflow).
    pub(crate) async fn init(
        &self,
        producer_id: i64,
        producer_epoch: i16,
    ) -> Result<(i64, i16), Failure> {
        match (producer_id, producer_epoch) {
            (-1, -1) => Ok((self.allocate().await?, 0)),
            (id, epoch) if id >= 0 && epoch >= 0 => {
                if epoch < i16::MAX - 1 {
                    Ok((id, epoch + 1))
                } else {
                    Ok((self.allocate().await?, 0))
                }
            }
            _ => Err(Failure::new(
                ErrorCode::InvalidRequest,
                format!(
                    "InitProducerId takes (-1, -1) or an id with its epoch, got ({producer_id}, {producer_epoch})"
                ),
            )),
        }
    }

    async fn allocate(&self) -> Result<i64, Failure> {
        let allocator = self
            .allocator
            .as_ref()
            .map_err(|message| Failure::new(ErrorCode::StorageError, message.clone()))?;
        allocator.allocate().await.map_err(|error| {
            let code = match &error {
                ProducerIdError::Io { source, .. }
                    if source.raw_os_error() == Some(libc::ENOSPC) =>
                {
                    ErrorCode::DiskFull
                }
                _ => ErrorCode::StorageError,
            };
            Failure::new(code, error.to_string())
        })
    }
}

/// Serves InitProducerId on the shard that received it.
pub(crate) async fn handle(shard: &Rc<Shard>, request: &Request) -> Result<Response, Failure> {
    let (producer_id, producer_epoch) = {
        let view: init_producer_id::RequestView = decode(request.body())?;
        (view.producer_id(), view.producer_epoch())
    };
    let (producer_id, producer_epoch) =
        shard.producer_ids.init(producer_id, producer_epoch).await?;
    let response = init_producer_id::Response {
        status: Status::OK,
        producer_id,
        producer_epoch,
    };
    let mut fbb = FlatBufferBuilder::new();
    Ok(respond(
        &request.header,
        response.encode(&mut fbb),
        Vec::new(),
    ))
}
