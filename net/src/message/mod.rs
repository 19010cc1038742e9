//! Typed message layer: build each request/response body into a reusable
//! [`FlatBufferBuilder`], and read bodies back as verified zero-copy views.
//!
//! One module per api. Each has:
//! - `Request` / `Response`: plain structs borrowing their data; [`Encode::encode`] writes them
//!   as a finished size-prefixed flatbuffer (the frame body) into a builder that is reset first,
//!   so one builder serves a whole connection without reallocating.
//! - `RequestView<'buf>` / `ResponseView<'buf>`: the generated flatbuffer accessors
//!   ([`crate::protocol`]), obtained with [`Decode::decode`], which verifies the body first; a
//!   body that fails verification is a [`DecodeError`], answered with `InvalidRequest`.
//! - For apis with raw record batches after the body (Produce requests, Fetch and ShareFetch
//!   responses), a helper pairing each described entry with its raw bytes after checking that
//!   the described lengths add up to the raw bytes present.
//!
//! Server flow for one request frame (see `net/PROTOCOL.md` for the full walk-through):
//!
//! ```no_run
//! use flatbuffers::FlatBufferBuilder;
//! use ringlog_net::frame::{encode_header, Frame, FrameHeader};
//! use ringlog_net::message::{produce, Decode, Encode, Status};
//!
//! fn answer_produce(frame: &Frame<'_>, fbb: &mut FlatBufferBuilder<'static>, out: &mut Vec<u8>)
//!     -> Result<(), Box<dyn std::error::Error>> {
//!     let request = produce::RequestView::decode(frame.body)?;
//!     let mut results = Vec::new();
//!     for (partition, batches) in produce::batches(&request, frame.raw)? {
//!         // ... append `batches` to the partition's log ...
//!         let _ = batches;
//!         results.push(produce::PartitionResult { partition, base_offset: 0, ..Default::default() });
//!     }
//!     let response = produce::Response {
//!         status: Status::OK,
//!         topic: request.topic(),
//!         partitions: &results,
//!     };
//!     let body = response.encode(fbb);
//!     let header = FrameHeader::response_to(&frame.header, body.len(), 0)?;
//!     out.extend_from_slice(&encode_header(&header));
//!     out.extend_from_slice(body);
//!     Ok(())
//! }
//! ```

use flatbuffers::{FlatBufferBuilder, ForwardsUOffset, Vector, VerifierOptions, WIPOffset};
use thiserror::Error;

use crate::api::ApiKey;
use crate::error_code::ErrorCode;
use crate::protocol;

pub mod alter_topic;
pub mod api_versions;
pub mod configure_group;
pub mod create_topic;
pub mod delete_group;
pub mod delete_offsets;
pub mod delete_records;
pub mod delete_topic;
pub mod describe_group;
pub mod error_response;
pub mod fetch;
pub mod group;
pub mod heartbeat;
pub mod init_producer_id;
pub mod join_group;
pub mod leave_group;
pub mod list_groups;
pub mod list_offsets;
pub mod list_topics;
pub mod metadata;
pub mod offset_commit;
pub mod offset_fetch;
pub mod produce;
pub mod reset_group_offsets;
pub mod share_acknowledge;
pub mod share_fetch;

/// A message that can be written as a frame body.
pub trait Encode {
    /// The api whose frame carries this message.
    const API: ApiKey;

    /// The api version this message is encoded as (the frame header's `version`).
    const VERSION: u16 = 0;

    /// Builds the message into `fbb` and finishes it size-prefixed. `fbb` is empty on entry.
    fn build(&self, fbb: &mut FlatBufferBuilder<'_>);

    /// Resets `fbb`, builds the message and returns the finished body (size prefix included),
    /// ready to follow a frame header.
    fn encode<'b>(&self, fbb: &'b mut FlatBufferBuilder<'_>) -> &'b [u8] {
        fbb.reset();
        self.build(fbb);
        fbb.finished_data()
    }

    /// Raw record batches that follow the body, in order (empty for most messages). Messages
    /// that describe raw bytes by length only (server responses, whose bytes the server sends
    /// from its own buffers) report nothing here.
    fn raw_parts(&self) -> impl Iterator<Item = &[u8]> {
        std::iter::empty()
    }
}

/// A body that can be read, verified, from received bytes.
pub trait Decode<'buf>: Sized {
    /// The api whose frames carry this message.
    const API: ApiKey;

    /// Verifies `body` (a size-prefixed flatbuffer, prefix included) and returns the view.
    fn decode(body: &'buf [u8]) -> Result<Self, DecodeError>;
}

/// A request, paired with the view type of its response.
pub trait Call: Encode {
    /// The response's view.
    type Response<'buf>: Decode<'buf> + ResponseStatus;
}

/// What every response view offers: its top-level status.
pub trait ResponseStatus {
    /// The top-level error code and message (fields 0 and 1 of every response table).
    fn status(&self) -> Status<'_>;
}

/// An error code with its message, as carried by responses (top-level and per entry).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Status<'a> {
    /// The code; [`ErrorCode::None`] for success.
    pub code: ErrorCode,
    /// Human-readable detail; empty means none (and nothing is written).
    pub message: &'a str,
}

impl<'a> Status<'a> {
    /// Success.
    pub const OK: Status<'static> = Status {
        code: ErrorCode::None,
        message: "",
    };

    /// An error with a message.
    pub const fn error(code: ErrorCode, message: &'a str) -> Self {
        Self { code, message }
    }

    /// Reads a wire code and optional message.
    pub fn from_wire(code: u16, message: Option<&'a str>) -> Self {
        Self {
            code: ErrorCode::from_u16(code),
            message: message.unwrap_or(""),
        }
    }

    /// True for success.
    pub fn is_ok(&self) -> bool {
        self.code.is_ok()
    }
}

/// A body could not be read: answered with [`ErrorCode::InvalidRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DecodeError {
    /// The flatbuffer failed verification (bounds, alignment, required fields, UTF-8, limits).
    #[error("invalid flatbuffer body: {0}")]
    InvalidBody(#[from] flatbuffers::InvalidFlatbuffer),
    /// The body's size prefix does not match its length.
    #[error("size prefix does not match a body of {body_bytes} bytes")]
    SizePrefixMismatch {
        /// Bytes of the body, prefix included.
        body_bytes: usize,
    },
    /// The raw bytes after the body do not match the lengths the body describes.
    #[error("body describes {described_bytes} raw bytes but the frame carries {actual_bytes}")]
    RawLengthMismatch {
        /// Sum of the lengths described in the body.
        described_bytes: u64,
        /// Raw bytes present after the body.
        actual_bytes: usize,
    },
}

impl DecodeError {
    /// The code to answer with.
    pub fn error_code(&self) -> ErrorCode {
        ErrorCode::InvalidRequest
    }
}

/// Verification limits for received bodies: generous for real messages, tight enough that a
/// hostile body cannot make verification expensive (frames are also bounded in size).
pub const VERIFIER_OPTIONS: VerifierOptions = VerifierOptions {
    max_depth: 16,
    max_tables: 1 << 20,
    max_apparent_size: 1 << 31,
    ignore_missing_null_terminator: false,
};

/// Implements [`Decode`] (and [`ResponseStatus`] for responses) for generated root tables.
macro_rules! decodable {
    ($api:expr, $request:ident, $response:ident) => {
        impl<'buf> Decode<'buf> for protocol::$request<'buf> {
            const API: ApiKey = $api;
            fn decode(body: &'buf [u8]) -> Result<Self, DecodeError> {
                check_size_prefix(body)?;
                Ok(flatbuffers::size_prefixed_root_with_opts::<
                    protocol::$request<'buf>,
                >(&VERIFIER_OPTIONS, body)?)
            }
        }
        impl<'buf> Decode<'buf> for protocol::$response<'buf> {
            const API: ApiKey = $api;
            fn decode(body: &'buf [u8]) -> Result<Self, DecodeError> {
                check_size_prefix(body)?;
                Ok(flatbuffers::size_prefixed_root_with_opts::<
                    protocol::$response<'buf>,
                >(&VERIFIER_OPTIONS, body)?)
            }
        }
        impl<'buf> ResponseStatus for protocol::$response<'buf> {
            fn status(&self) -> Status<'_> {
                Status::from_wire(self.error_code(), self.error_message())
            }
        }
    };
}

decodable!(ApiKey::ApiVersions, ApiVersionsRequest, ApiVersionsResponse);
decodable!(ApiKey::Metadata, MetadataRequest, MetadataResponse);
decodable!(ApiKey::CreateTopic, CreateTopicRequest, CreateTopicResponse);
decodable!(ApiKey::DeleteTopic, DeleteTopicRequest, DeleteTopicResponse);
decodable!(ApiKey::ListTopics, ListTopicsRequest, ListTopicsResponse);
decodable!(ApiKey::Produce, ProduceRequest, ProduceResponse);
decodable!(ApiKey::Fetch, FetchRequest, FetchResponse);
decodable!(ApiKey::ListOffsets, ListOffsetsRequest, ListOffsetsResponse);
decodable!(ApiKey::AlterTopic, AlterTopicRequest, AlterTopicResponse);
decodable!(ApiKey::JoinGroup, JoinGroupRequest, JoinGroupResponse);
decodable!(ApiKey::Heartbeat, HeartbeatRequest, HeartbeatResponse);
decodable!(ApiKey::LeaveGroup, LeaveGroupRequest, LeaveGroupResponse);
decodable!(
    ApiKey::OffsetCommit,
    OffsetCommitRequest,
    OffsetCommitResponse
);
decodable!(ApiKey::OffsetFetch, OffsetFetchRequest, OffsetFetchResponse);
decodable!(ApiKey::ListGroups, ListGroupsRequest, ListGroupsResponse);
decodable!(
    ApiKey::DescribeGroup,
    DescribeGroupRequest,
    DescribeGroupResponse
);
decodable!(
    ApiKey::ResetGroupOffsets,
    ResetGroupOffsetsRequest,
    ResetGroupOffsetsResponse
);
decodable!(
    ApiKey::ConfigureGroup,
    ConfigureGroupRequest,
    ConfigureGroupResponse
);
decodable!(ApiKey::DeleteGroup, DeleteGroupRequest, DeleteGroupResponse);
decodable!(ApiKey::ShareFetch, ShareFetchRequest, ShareFetchResponse);
decodable!(
    ApiKey::ShareAcknowledge,
    ShareAcknowledgeRequest,
    ShareAcknowledgeResponse
);
decodable!(
    ApiKey::InitProducerId,
    InitProducerIdRequest,
    InitProducerIdResponse
);
decodable!(
    ApiKey::DeleteRecords,
    DeleteRecordsRequest,
    DeleteRecordsResponse
);
decodable!(
    ApiKey::DeleteOffsets,
    DeleteOffsetsRequest,
    DeleteOffsetsResponse
);

/// Checks that a body's size prefix covers exactly the rest of the body (the frame decoder
/// guarantees this for bodies it cut out; checked again so [`Decode`] stands on its own).
fn check_size_prefix(body: &[u8]) -> Result<(), DecodeError> {
    let prefix = body
        .get(..crate::frame::BODY_PREFIX_BYTES)
        .and_then(|bytes| bytes.try_into().ok())
        .map(u32::from_le_bytes);
    match prefix {
        Some(length) if u64::from(length) + 4 == body.len() as u64 => Ok(()),
        _ => Err(DecodeError::SizePrefixMismatch {
            body_bytes: body.len(),
        }),
    }
}

/// Checks that the lengths a body describes add up to the raw bytes present. Done once per
/// frame, before any slicing, so the per-entry split afterwards cannot run out of bytes.
pub fn check_raw_len(described: impl Iterator<Item = u32>, raw: &[u8]) -> Result<(), DecodeError> {
    let described_bytes: u64 = described.map(u64::from).sum();
    if described_bytes == raw.len() as u64 {
        Ok(())
    } else {
        Err(DecodeError::RawLengthMismatch {
            described_bytes,
            actual_bytes: raw.len(),
        })
    }
}

/// Splits raw bytes front to back into described lengths (after [`check_raw_len`]).
#[derive(Debug, Clone)]
pub struct RawCursor<'a> {
    rest: &'a [u8],
}

impl<'a> RawCursor<'a> {
    /// A cursor at the start of `raw`.
    pub fn new(raw: &'a [u8]) -> Self {
        Self { rest: raw }
    }

    /// The next `len` bytes. After a successful [`check_raw_len`] over the same lengths this
    /// always has them; otherwise it returns what is left (never panics).
    pub fn take(&mut self, len: u32) -> &'a [u8] {
        let len = (len as usize).min(self.rest.len());
        let (taken, rest) = self.rest.split_at(len);
        self.rest = rest;
        taken
    }

    /// Bytes not yet taken.
    pub fn remaining(&self) -> usize {
        self.rest.len()
    }
}

/// Writes `s`, or nothing when it is empty (absent strings read as empty/None).
pub(crate) fn opt_string<'f>(
    fbb: &mut FlatBufferBuilder<'f>,
    s: &str,
) -> Option<WIPOffset<&'f str>> {
    (!s.is_empty()).then(|| fbb.create_string(s))
}

/// Writes a vector of strings, or nothing when `items` is empty.
pub(crate) fn opt_string_vector<'f>(
    fbb: &mut FlatBufferBuilder<'f>,
    items: &[&str],
) -> Option<WIPOffset<Vector<'f, ForwardsUOffset<&'f str>>>> {
    if items.is_empty() {
        return None;
    }
    let offsets: Vec<_> = items.iter().map(|s| fbb.create_string(s)).collect();
    Some(fbb.create_vector(&offsets))
}

/// Writes a vector of tables built one per item by `build`.
pub(crate) fn table_vector<'f, T, Item>(
    fbb: &mut FlatBufferBuilder<'f>,
    items: &[Item],
    mut build: impl FnMut(&mut FlatBufferBuilder<'f>, &Item) -> WIPOffset<T>,
) -> WIPOffset<Vector<'f, ForwardsUOffset<T>>> {
    let offsets: Vec<_> = items.iter().map(|item| build(fbb, item)).collect();
    fbb.create_vector(&offsets)
}

/// A topic and some of its partitions, as used by group apis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TopicPartitions<'a> {
    /// Topic name.
    pub topic: &'a str,
    /// Partition ids.
    pub partitions: &'a [u32],
}

/// Writes a `TopicPartitions` table.
pub(crate) fn build_topic_partitions<'f>(
    fbb: &mut FlatBufferBuilder<'f>,
    item: &TopicPartitions<'_>,
) -> WIPOffset<protocol::TopicPartitions<'f>> {
    let topic = Some(fbb.create_string(item.topic));
    let partitions = Some(fbb.create_vector(item.partitions));
    protocol::TopicPartitions::create(fbb, &protocol::TopicPartitionsArgs { topic, partitions })
}

/// One partition's status, as used by apis that report only errors per partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PartitionStatus<'a> {
    /// Partition id.
    pub partition: u32,
    /// Its result.
    pub status: Status<'a>,
}

/// A topic's per-partition statuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TopicPartitionStatuses<'a> {
    /// Topic name.
    pub topic: &'a str,
    /// One entry per partition.
    pub partitions: &'a [PartitionStatus<'a>],
}

/// Writes a `TopicPartitionErrors` table.
pub(crate) fn build_topic_partition_errors<'f>(
    fbb: &mut FlatBufferBuilder<'f>,
    item: &TopicPartitionStatuses<'_>,
) -> WIPOffset<protocol::TopicPartitionErrors<'f>> {
    let topic = Some(fbb.create_string(item.topic));
    let partitions = Some(table_vector(fbb, item.partitions, |fbb, p| {
        let error_message = opt_string(fbb, p.status.message);
        protocol::PartitionError::create(
            fbb,
            &protocol::PartitionErrorArgs {
                partition: p.partition,
                error_code: p.status.code.as_u16(),
                error_message,
            },
        )
    }));
    protocol::TopicPartitionErrors::create(
        fbb,
        &protocol::TopicPartitionErrorsArgs { topic, partitions },
    )
}

/// Topic settings, as created and listed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TopicConfig<'a> {
    /// Topic name.
    pub name: &'a str,
    /// Partition count.
    pub partitions: u32,
    /// Age limit of retained data in ms; -1 for unlimited.
    pub retention_ms: i64,
    /// Size limit of retained data per partition in bytes; -1 for unlimited.
    pub retention_bytes: i64,
    /// Segment file size in bytes.
    pub segment_bytes: i64,
}

/// Writes a `TopicConfig` table.
pub(crate) fn build_topic_config<'f>(
    fbb: &mut FlatBufferBuilder<'f>,
    config: &TopicConfig<'_>,
) -> WIPOffset<protocol::TopicConfig<'f>> {
    let name = Some(fbb.create_string(config.name));
    protocol::TopicConfig::create(
        fbb,
        &protocol::TopicConfigArgs {
            name,
            partitions: config.partitions,
            retention_ms: config.retention_ms,
            retention_bytes: config.retention_bytes,
            segment_bytes: config.segment_bytes,
        },
    )
}

/// Reads a `TopicConfig` view into the plain struct.
pub fn topic_config<'a>(view: &protocol::TopicConfig<'a>) -> TopicConfig<'a> {
    TopicConfig {
        name: view.name(),
        partitions: view.partitions(),
        retention_ms: view.retention_ms(),
        retention_bytes: view.retention_bytes(),
        segment_bytes: view.segment_bytes(),
    }
}

/// Result of a share acknowledgement range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AckRangeResult<'a> {
    /// First offset of the range (as requested).
    pub first_offset: i64,
    /// Last offset of the range, inclusive (as requested).
    pub last_offset: i64,
    /// Outcome for the whole range.
    pub status: Status<'a>,
}

/// Writes a vector of `AckRangeResult` tables.
pub(crate) fn build_ack_results<'f>(
    fbb: &mut FlatBufferBuilder<'f>,
    results: &[AckRangeResult<'_>],
) -> WIPOffset<Vector<'f, ForwardsUOffset<protocol::AckRangeResult<'f>>>> {
    table_vector(fbb, results, |fbb, r| {
        let error_message = opt_string(fbb, r.status.message);
        protocol::AckRangeResult::create(
            fbb,
            &protocol::AckRangeResultArgs {
                first_offset: r.first_offset,
                last_offset: r.last_offset,
                error_code: r.status.code.as_u16(),
                error_message,
            },
        )
    })
}

#[cfg(test)]
pub(crate) mod test_support {
    use super::*;

    /// Encodes `message` and decodes the body as `V`, as a receiver would. The body is leaked
    /// so views of any lifetime can borrow it (tests only).
    pub fn round_trip<M: Encode, V: Decode<'static>>(message: &M) -> &'static [u8] {
        let mut fbb = FlatBufferBuilder::new();
        let body: &'static [u8] = Box::leak(message.encode(&mut fbb).to_vec().into_boxed_slice());
        assert_eq!(V::API, M::API, "view and message belong to different apis");
        V::decode(body).expect("round trip must verify");
        body
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Reads everything a receiver would read from a fetch response, so that a malformed body
    /// that passed verification would show up as a panic.
    fn read_fetch_response(body: &[u8], raw: &[u8]) {
        if let Ok(view) = fetch::ResponseView::decode(body) {
            let _ = view.error_message();
            if let Ok(partitions) = fetch::partitions(&view, raw) {
                for p in partitions {
                    let _ = (p.topic, p.status, p.batches.len());
                }
            }
        }
    }

    /// Same for a produce request.
    fn read_produce_request(body: &[u8], raw: &[u8]) {
        if let Ok(view) = produce::RequestView::decode(body) {
            let _ = (view.topic(), view.acks(), view.timeout_ms());
            if let Ok(batches) = produce::batches(&view, raw) {
                for (partition, bytes) in batches {
                    let _ = (partition, bytes.len());
                }
            }
        }
    }

    fn valid_fetch_response() -> Vec<u8> {
        let partitions = [
            fetch::PartitionResult {
                partition: 1,
                batch_bytes: 3,
                status: Status::error(ErrorCode::OffsetOutOfRange, "message"),
                ..Default::default()
            },
            fetch::PartitionResult::default(),
        ];
        let topics = [fetch::TopicResult {
            topic: "topic",
            partitions: &partitions,
        }];
        let mut fbb = FlatBufferBuilder::new();
        fetch::Response {
            status: Status::OK,
            topics: &topics,
        }
        .encode(&mut fbb)
        .to_vec()
    }

    proptest! {
        #[test]
        fn decoding_arbitrary_bytes_never_panics(
            body in proptest::collection::vec(any::<u8>(), 0..256),
            raw in proptest::collection::vec(any::<u8>(), 0..16),
        ) {
            read_fetch_response(&body, &raw);
            read_produce_request(&body, &raw);
            let _ = metadata::ResponseView::decode(&body);
            let _ = share_fetch::ResponseView::decode(&body);
        }

        #[test]
        fn decoding_corrupted_bodies_never_panics(
            flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8),
        ) {
            let mut body = valid_fetch_response();
            let len = body.len();
            for (at, value) in flips {
                // Keep the size prefix so corruption reaches the verifier.
                let index = 4 + at % (len - 4);
                body[index] = value;
            }
            read_fetch_response(&body, b"abc");
        }
    }

    #[test]
    fn raw_len_check() {
        assert!(check_raw_len([3u32, 4].into_iter(), &[0; 7]).is_ok());
        assert_eq!(
            check_raw_len([3u32, 4].into_iter(), &[0; 6]),
            Err(DecodeError::RawLengthMismatch {
                described_bytes: 7,
                actual_bytes: 6
            })
        );
        // Lengths that would overflow u32 when summed are still compared exactly.
        assert!(check_raw_len([u32::MAX, u32::MAX].into_iter(), &[]).is_err());
    }

    #[test]
    fn raw_cursor_never_overruns() {
        let mut cursor = RawCursor::new(b"abcdef");
        assert_eq!(cursor.take(2), b"ab");
        assert_eq!(cursor.take(10), b"cdef");
        assert_eq!(cursor.take(1), b"");
        assert_eq!(cursor.remaining(), 0);
    }

    #[test]
    fn garbage_bodies_are_decode_errors() {
        for body in [&b""[..], b"\x04\0\0\0abcd", b"\xff\xff\xff\xff", &[0u8; 64]] {
            assert!(produce::RequestView::decode(body).is_err());
            assert!(fetch::ResponseView::decode(body).is_err());
        }
    }
}
