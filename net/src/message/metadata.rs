//! Metadata (1): topics, their partitions, owning shards, log start offsets and high watermarks.

use flatbuffers::FlatBufferBuilder;

use super::{opt_string, opt_string_vector, table_vector, Call, Encode, Status};
use crate::api::ApiKey;
use crate::protocol;

/// Verified view of a request body.
pub type RequestView<'buf> = protocol::MetadataRequest<'buf>;
/// Verified view of a response body.
pub type ResponseView<'buf> = protocol::MetadataResponse<'buf>;

/// Asks for some topics, or every topic when `topics` is empty.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Request<'a> {
    /// Topic names; empty for all.
    pub topics: &'a [&'a str],
}

impl Encode for Request<'_> {
    const API: ApiKey = ApiKey::Metadata;

    fn build(&self, fbb: &mut FlatBufferBuilder<'_>) {
        let topics = opt_string_vector(fbb, self.topics);
        let root =
            protocol::MetadataRequest::create(fbb, &protocol::MetadataRequestArgs { topics });
        fbb.finish_size_prefixed(root, None);
    }
}

impl Call for Request<'_> {
    type Response<'buf> = ResponseView<'buf>;
}

/// One partition's metadata.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PartitionMetadata<'a> {
    /// Partition id.
    pub partition: u32,
    /// Per-partition result.
    pub status: Status<'a>,
    /// Shard that owns the partition.
    pub shard: u16,
    /// First offset still stored.
    pub log_start_offset: i64,
    /// Offset the next record will get.
    pub high_watermark: i64,
    /// Bytes of the partition's segments.
    pub size_bytes: u64,
}

/// One topic's metadata.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TopicMetadata<'a> {
    /// Topic name.
    pub name: &'a str,
    /// Per-topic result (UnknownTopic for a requested topic that does not exist).
    pub status: Status<'a>,
    /// Its partitions, in id order.
    pub partitions: &'a [PartitionMetadata<'a>],
}

/// Metadata answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Response<'a> {
    /// Top-level result.
    pub status: Status<'a>,
    /// Shards serving the broker.
    pub shard_count: u16,
    /// One entry per requested topic, or every topic.
    pub topics: &'a [TopicMetadata<'a>],
}

impl Encode for Response<'_> {
    const API: ApiKey = ApiKey::Metadata;

    fn build(&self, fbb: &mut FlatBufferBuilder<'_>) {
        let error_message = opt_string(fbb, self.status.message);
        let topics = Some(table_vector(fbb, self.topics, |fbb, topic| {
            let name = Some(fbb.create_string(topic.name));
            let error_message = opt_string(fbb, topic.status.message);
            let partitions = Some(table_vector(fbb, topic.partitions, |fbb, p| {
                let error_message = opt_string(fbb, p.status.message);
                protocol::PartitionMetadata::create(
                    fbb,
                    &protocol::PartitionMetadataArgs {
                        partition: p.partition,
                        error_code: p.status.code.as_u16(),
                        error_message,
                        shard: p.shard,
                        log_start_offset: p.log_start_offset,
                        high_watermark: p.high_watermark,
                        size_bytes: p.size_bytes,
                    },
                )
            }));
            protocol::TopicMetadata::create(
                fbb,
                &protocol::TopicMetadataArgs {
                    name,
                    error_code: topic.status.code.as_u16(),
                    error_message,
                    partitions,
                },
            )
        }));
        let root = protocol::MetadataResponse::create(
            fbb,
            &protocol::MetadataResponseArgs {
                error_code: self.status.code.as_u16(),
                error_message,
                shard_count: self.shard_count,
                topics,
            },
        );
        fbb.finish_size_prefixed(root, None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error_code::ErrorCode;
    use crate::message::test_support::round_trip;
    use crate::message::Decode;

    #[test]
    fn request_round_trip() {
        let body = round_trip::<_, RequestView>(&Request {
            topics: &["a", "b"],
        });
        let view = RequestView::decode(body).unwrap();
        let topics: Vec<_> = view.topics().unwrap().iter().collect();
        assert_eq!(topics, ["a", "b"]);

        let body = round_trip::<_, RequestView>(&Request::default());
        assert!(RequestView::decode(body).unwrap().topics().is_none());
    }

    #[test]
    fn response_round_trip() {
        let partitions = [
            PartitionMetadata {
                partition: 0,
                status: Status::OK,
                shard: 1,
                log_start_offset: 10,
                high_watermark: 20,
                size_bytes: 4096,
            },
            PartitionMetadata {
                partition: 1,
                status: Status::error(ErrorCode::StorageError, "eio"),
                shard: 0,
                log_start_offset: -1,
                high_watermark: -1,
                size_bytes: 0,
            },
        ];
        let topics = [
            TopicMetadata {
                name: "t",
                status: Status::OK,
                partitions: &partitions,
            },
            TopicMetadata {
                name: "missing",
                status: Status::error(ErrorCode::UnknownTopic, ""),
                partitions: &[],
            },
        ];
        let body = round_trip::<_, ResponseView>(&Response {
            status: Status::OK,
            shard_count: 2,
            topics: &topics,
        });
        let view = ResponseView::decode(body).unwrap();
        assert_eq!(view.shard_count(), 2);
        let topics = view.topics().unwrap();
        assert_eq!(topics.len(), 2);
        let t = topics.get(0);
        assert_eq!(t.name(), "t");
        let p = t.partitions().unwrap();
        assert_eq!(p.get(0).shard(), 1);
        assert_eq!(p.get(0).log_start_offset(), 10);
        assert_eq!(p.get(0).size_bytes(), 4096);
        assert_eq!(p.get(0).high_watermark(), 20);
        assert_eq!(p.get(1).error_code(), ErrorCode::StorageError.as_u16());
        assert_eq!(p.get(1).error_message(), Some("eio"));
        assert_eq!(topics.get(1).error_code(), ErrorCode::UnknownTopic.as_u16());
        assert_eq!(topics.get(1).error_message(), None);
    }
}
