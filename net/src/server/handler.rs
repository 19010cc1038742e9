//! Request handlers: decode a request, do it (here or on the owning shard), build the response.

use std::rc::Rc;

use flatbuffers::FlatBufferBuilder;
use ringlog_engine::topic::{TopicConfig, PARTITIONS_MAX};

use super::connection::{RawPart, Request, Response};
use super::message::{Failure, OffsetQuery, TopicChange};
use super::shard::{unknown_topic, Shard};
use crate::api::{ApiKey, SUPPORTED_APIS};
use crate::error_code::ErrorCode;
use crate::frame::{encode_header, FrameError, FrameHeader};
use crate::message::{self, Decode, Encode, Status};

/// Serves one request; `None` when the request wants no response (produce with acks none).
pub(crate) async fn handle(shard: &Rc<Shard>, request: Request) -> Option<Response> {
    let header = request.header;
    let api = match ApiKey::try_from(header.api) {
        Ok(api) if api.supports_version(header.version) => api,
        Ok(api) => {
            shard.requests.native(header.api, true);
            let message = format!("{api} version {} is not supported", header.version);
            return Some(error_response(
                &header,
                ErrorCode::UnsupportedVersion,
                &message,
            ));
        }
        Err(_) => {
            shard.requests.native(header.api, true);
            let message = format!("unknown api {}", header.api);
            return Some(error_response(
                &header,
                ErrorCode::UnsupportedVersion,
                &message,
            ));
        }
    };
    let result = match api {
        ApiKey::ApiVersions => Ok(Some(api_versions(shard, &header))),
        ApiKey::Metadata => metadata(shard, &request).await.map(Some),
        ApiKey::CreateTopic => create_topic(shard, &request).await.map(Some),
        ApiKey::DeleteTopic => delete_topic(shard, &request).await.map(Some),
        ApiKey::AlterTopic => alter_topic(shard, &request).await.map(Some),
        ApiKey::ListTopics => Ok(Some(list_topics(shard, &header))),
        ApiKey::Produce => super::produce::handle(shard, request).await,
        ApiKey::Fetch => super::fetch::handle(shard, &request).await.map(Some),
        ApiKey::ListOffsets => super::fetch::list_offsets(shard, &request).await.map(Some),
        ApiKey::InitProducerId => super::producer_ids::handle(shard, &request).await.map(Some),
        ApiKey::DeleteRecords => delete_records(shard, &request).await.map(Some),
        ApiKey::JoinGroup
        | ApiKey::Heartbeat
        | ApiKey::LeaveGroup
        | ApiKey::OffsetCommit
        | ApiKey::OffsetFetch
        | ApiKey::ListGroups
        | ApiKey::DescribeGroup
        | ApiKey::ResetGroupOffsets
        | ApiKey::ConfigureGroup
        | ApiKey::DeleteGroup
        | ApiKey::DeleteOffsets
        | ApiKey::ShareFetch
        | ApiKey::ShareAcknowledge => super::group::handlers::handle(shard, &request, api)
            .await
            .map(Some),
    };
    shard.requests.native(header.api, result.is_err());
    match result {
        Ok(response) => response,
        Err(failure) => Some(error_response(&header, failure.code, &failure.message)),
    }
}

/// Frames `body` (and `raw`) as the response to `header`.
pub(crate) fn respond(header: &FrameHeader, body: &[u8], raw: Vec<RawPart>) -> Response {
    let raw_bytes: usize = raw.iter().map(RawPart::len).sum();
    let frame = match FrameHeader::for_message(
        header.api,
        header.version,
        header.correlation_id,
        body.len(),
        raw_bytes,
    ) {
        Ok(frame) => frame,
        Err(error) => {
            // Fetches are bounded by the frame limit, far below what a frame can say; should
            // that ever fail, the client gets the reason, not a dead shard. An error response
            // is small: this recursion ends at once.
            tracing::error!(%error, api = header.api, "response too large for a frame");
            let text = format!("the response is too large: {error}");
            return error_response(header, ErrorCode::InvalidRequest, &text);
        }
    };
    let mut head = Vec::with_capacity(crate::frame::FRAME_HEADER_BYTES + body.len());
    head.extend_from_slice(&encode_header(&frame));
    head.extend_from_slice(body);
    Response { head, raw }
}

/// A response carrying only an error (readable as any response type).
pub(crate) fn error_response(header: &FrameHeader, code: ErrorCode, text: &str) -> Response {
    let mut fbb = FlatBufferBuilder::new();
    let body = message::error_response::encode(&mut fbb, Status::error(code, text));
    respond(header, body, Vec::new())
}

/// The answer to a frame that cannot be decoded.
pub(crate) fn frame_error_response(header: &FrameHeader, error: &FrameError) -> Response {
    let code = match error {
        FrameError::TooLarge { .. } => ErrorCode::FrameTooLarge,
        _ => ErrorCode::InvalidRequest,
    };
    error_response(header, code, &error.to_string())
}

pub(crate) fn decode<'a, T: Decode<'a>>(body: &'a [u8]) -> Result<T, Failure> {
    T::decode(body).map_err(|error| Failure::new(error.error_code(), error.to_string()))
}

fn api_versions(shard: &Shard, header: &FrameHeader) -> Response {
    let apis: Vec<_> = SUPPORTED_APIS.to_vec();
    let response = message::api_versions::Response {
        status: Status::OK,
        server_name: "ringlog",
        server_version: env!("CARGO_PKG_VERSION"),
        shard_count: shard.shard_count as u16,
        apis: &apis,
        frame_bytes_max: u32::try_from(shard.config.frame_bytes_max).unwrap_or(u32::MAX),
        in_flight_requests_max: u32::try_from(shard.config.requests_in_flight_max)
            .unwrap_or(u32::MAX),
        connection_shard: shard.id as u16,
    };
    let mut fbb = FlatBufferBuilder::new();
    respond(header, response.encode(&mut fbb), Vec::new())
}

/// A retention limit from a CreateTopic request: absent takes the server's `default`,
/// negative means no limit.
fn limit_from_wire(
    value: Option<i64>,
    default: Option<u64>,
    what: &str,
) -> Result<Option<u64>, Failure> {
    match value {
        None => Ok(default),
        Some(v) if v < 0 => Ok(None),
        Some(v) => u64::try_from(v)
            .map(Some)
            .map_err(|_| Failure::new(ErrorCode::InvalidConfig, format!("{what} out of range"))),
    }
}

async fn create_topic(shard: &Rc<Shard>, request: &Request) -> Result<Response, Failure> {
    let view: message::create_topic::RequestView = decode(request.body())?;
    let name = view.name().to_string();
    let defaults = shard.config.topic_defaults(view.partitions());
    let config = TopicConfig {
        retention_ms: limit_from_wire(view.retention_ms(), defaults.retention_ms, "retention_ms")?,
        retention_bytes: limit_from_wire(
            view.retention_bytes(),
            defaults.retention_bytes,
            "retention_bytes",
        )?,
        segment_bytes: match view.segment_bytes() {
            Some(bytes) if bytes > 0 => bytes as u64,
            Some(_) => {
                return Err(Failure::new(
                    ErrorCode::InvalidConfig,
                    "segment_bytes must be positive",
                ))
            }
            None => defaults.segment_bytes,
        },
        ..defaults
    };
    super::routing::create_topic(shard, name.clone(), config.clone()).await?;
    let response = message::create_topic::Response {
        status: Status::OK,
        config: Some(wire_config(&name, &config)),
    };
    let mut fbb = FlatBufferBuilder::new();
    Ok(respond(
        &request.header,
        response.encode(&mut fbb),
        Vec::new(),
    ))
}

fn wire_config<'a>(name: &'a str, config: &TopicConfig) -> message::TopicConfig<'a> {
    let signed = |value: Option<u64>| value.map_or(-1, |v| i64::try_from(v).unwrap_or(i64::MAX));
    message::TopicConfig {
        name,
        partitions: config.partitions,
        retention_ms: signed(config.retention_ms),
        retention_bytes: signed(config.retention_bytes),
        segment_bytes: i64::try_from(config.segment_bytes).unwrap_or(i64::MAX),
    }
}

async fn alter_topic(shard: &Rc<Shard>, request: &Request) -> Result<Response, Failure> {
    let view: message::alter_topic::RequestView = decode(request.body())?;
    let name = view.name().to_string();
    // Absent: unchanged; given: as CreateTopic reads it (negative lifts the limit).
    let change = |value: Option<i64>, what| {
        value
            .map(|v| limit_from_wire(Some(v), None, what))
            .transpose()
    };
    let change = TopicChange {
        retention_ms: change(view.retention_ms(), "retention_ms")?,
        retention_bytes: change(view.retention_bytes(), "retention_bytes")?,
        partitions: view.partitions(),
    };
    super::routing::alter_topic(shard, name.clone(), change).await?;
    // Every shard's catalog, this one's too, holds the new config before the call returns.
    let entry = shard.topic(&name).ok_or_else(|| unknown_topic(&name))?;
    let response = message::alter_topic::Response {
        status: Status::OK,
        config: Some(wire_config(&name, &entry.config)),
    };
    let mut fbb = FlatBufferBuilder::new();
    Ok(respond(
        &request.header,
        response.encode(&mut fbb),
        Vec::new(),
    ))
}

/// DeleteRecords: each entry on its partition's owner, in request order.
async fn delete_records(shard: &Rc<Shard>, request: &Request) -> Result<Response, Failure> {
    let view: message::delete_records::RequestView = decode(request.body())?;
    let topic = view.topic();
    if shard.topic(topic).is_none() {
        return Err(unknown_topic(topic));
    }
    let asked = view.partitions().unwrap_or_default();
    if asked.len() > PARTITIONS_MAX as usize {
        return Err(Failure::new(
            ErrorCode::InvalidRequest,
            format!(
                "{} entries; a topic has at most {PARTITIONS_MAX} partitions",
                asked.len()
            ),
        ));
    }
    let mut outcomes = Vec::with_capacity(asked.len());
    for entry in asked {
        let partition = entry.partition();
        let outcome = super::routing::delete_records(shard, topic, partition, entry.offset()).await;
        outcomes.push((partition, outcome));
    }
    let results: Vec<message::delete_records::PartitionResult<'_>> = outcomes
        .iter()
        .map(|(partition, outcome)| match outcome {
            Ok(log_start_offset) => message::delete_records::PartitionResult {
                partition: *partition,
                status: Status::OK,
                log_start_offset: *log_start_offset,
            },
            Err(failure) => message::delete_records::PartitionResult {
                partition: *partition,
                status: Status::error(failure.code, &failure.message),
                log_start_offset: -1,
            },
        })
        .collect();
    let response = message::delete_records::Response {
        status: Status::OK,
        results: &results,
    };
    let mut fbb = FlatBufferBuilder::new();
    Ok(respond(
        &request.header,
        response.encode(&mut fbb),
        Vec::new(),
    ))
}

async fn delete_topic(shard: &Rc<Shard>, request: &Request) -> Result<Response, Failure> {
    let view: message::delete_topic::RequestView = decode(request.body())?;
    let name = view.name().to_string();
    super::routing::delete_topic(shard, name).await?;
    let response = message::delete_topic::Response { status: Status::OK };
    let mut fbb = FlatBufferBuilder::new();
    Ok(respond(
        &request.header,
        response.encode(&mut fbb),
        Vec::new(),
    ))
}

fn list_topics(shard: &Shard, header: &FrameHeader) -> Response {
    let topics = shard.topics.borrow();
    let mut names: Vec<&String> = topics.keys().collect();
    names.sort();
    let configs: Vec<message::TopicConfig> = names
        .iter()
        .map(|name| wire_config(name, &topics[*name].config))
        .collect();
    let response = message::list_topics::Response {
        status: Status::OK,
        topics: &configs,
    };
    let mut fbb = FlatBufferBuilder::new();
    respond(header, response.encode(&mut fbb), Vec::new())
}

async fn metadata(shard: &Rc<Shard>, request: &Request) -> Result<Response, Failure> {
    let view: message::metadata::RequestView = decode(request.body())?;
    let requested: Vec<String> = match view.topics() {
        Some(topics) if !topics.is_empty() => topics.iter().map(str::to_string).collect(),
        _ => {
            let mut all: Vec<String> = shard.topics.borrow().keys().cloned().collect();
            all.sort();
            all
        }
    };
    // Gather (name, status, partitions) first; the message structs borrow from these.
    let mut gathered: Vec<(
        String,
        Option<Failure>,
        Vec<super::message::PartitionOffsets>,
    )> = Vec::new();
    for name in requested {
        match super::routing::topic_offsets(shard, &name).await {
            Ok(partitions) => gathered.push((name, None, partitions)),
            Err(failure) => gathered.push((name, Some(failure), Vec::new())),
        }
    }
    let partition_lists: Vec<Vec<message::metadata::PartitionMetadata>> = gathered
        .iter()
        .map(|(name, _, partitions)| {
            partitions
                .iter()
                .map(|p| message::metadata::PartitionMetadata {
                    partition: p.partition,
                    status: Status::OK,
                    shard: shard.owner(name, p.partition) as u16,
                    log_start_offset: p.log_start_offset,
                    high_watermark: p.high_watermark,
                    size_bytes: p.size_bytes,
                })
                .collect()
        })
        .collect();
    let topics: Vec<message::metadata::TopicMetadata> = gathered
        .iter()
        .zip(&partition_lists)
        .map(
            |((name, failure, _), partitions)| message::metadata::TopicMetadata {
                name,
                status: failure
                    .as_ref()
                    .map_or(Status::OK, |f| Status::error(f.code, &f.message)),
                partitions,
            },
        )
        .collect();
    let response = message::metadata::Response {
        status: Status::OK,
        shard_count: shard.shard_count as u16,
        topics: &topics,
    };
    let mut fbb = FlatBufferBuilder::new();
    Ok(respond(
        &request.header,
        response.encode(&mut fbb),
        Vec::new(),
    ))
}

/// Parses an offset query from the wire.
pub(crate) fn offset_query(
    spec: crate::protocol::OffsetSpec,
    value: i64,
) -> Result<OffsetQuery, Failure> {
    use crate::protocol::OffsetSpec;
    match spec {
        OffsetSpec::Earliest => Ok(OffsetQuery::Earliest),
        OffsetSpec::Latest => Ok(OffsetQuery::Latest),
        OffsetSpec::Timestamp => Ok(OffsetQuery::Timestamp(value)),
        _ => Err(Failure::new(
            ErrorCode::InvalidRequest,
            "ListOffsets takes earliest, latest or timestamp",
        )),
    }
}
