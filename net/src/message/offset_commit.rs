//! OffsetCommit (13): store a consumer group's next offsets, durably, on each partition's shard.

use flatbuffers::FlatBufferBuilder;

use super::{build_topic_partition_errors, opt_string, table_vector};
use super::{Call, Encode, Status, TopicPartitionStatuses};
use crate::api::ApiKey;
use crate::protocol;

/// Verified view of a request body.
pub type RequestView<'buf> = protocol::OffsetCommitRequest<'buf>;
/// Verified view of a response body.
pub type ResponseView<'buf> = protocol::OffsetCommitResponse<'buf>;

/// The next offset the group will consume from a partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionOffset {
    /// Partition id.
    pub partition: u32,
    /// Next offset to consume (last processed + 1).
    pub offset: i64,
}

/// Offsets of one topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommitTopic<'a> {
    /// Topic name.
    pub topic: &'a str,
    /// Partitions and offsets.
    pub partitions: &'a [PartitionOffset],
}

/// OffsetCommit request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request<'a> {
    /// Group name.
    pub group: &'a str,
    /// The member's id; empty (with generation -1) for an administrative commit to an Empty
    /// group.
    pub member_id: &'a str,
    /// Generation from the last JoinGroup, or -1.
    pub generation: i32,
    /// What to commit.
    pub topics: &'a [CommitTopic<'a>],
    /// A static member's instance id (Kafka's `group.instance.id`); empty for a dynamic member.
    pub instance_id: &'a str,
}

impl Encode for Request<'_> {
    const API: ApiKey = ApiKey::OffsetCommit;

    fn build(&self, fbb: &mut FlatBufferBuilder<'_>) {
        let group = Some(fbb.create_string(self.group));
        let member_id = opt_string(fbb, self.member_id);
        let topics = Some(table_vector(fbb, self.topics, |fbb, t| {
            let topic = Some(fbb.create_string(t.topic));
            let partitions = Some(
                fbb.create_vector_from_iter(
                    t.partitions
                        .iter()
                        .map(|p| protocol::PartitionOffset::new(p.offset, p.partition)),
                ),
            );
            protocol::OffsetCommitTopic::create(
                fbb,
                &protocol::OffsetCommitTopicArgs { topic, partitions },
            )
        }));
        let instance_id = opt_string(fbb, self.instance_id);
        let root = protocol::OffsetCommitRequest::create(
            fbb,
            &protocol::OffsetCommitRequestArgs {
                group,
                member_id,
                generation: self.generation,
                topics,
                instance_id,
            },
        );
        fbb.finish_size_prefixed(root, None);
    }
}

impl Call for Request<'_> {
    type Response<'buf> = ResponseView<'buf>;
}

/// OffsetCommit answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Response<'a> {
    /// Top-level result (UnknownGroup, RebalanceInProgress, ...).
    pub status: Status<'a>,
    /// One entry per request topic and partition, in request order (NotAssigned, ...).
    pub topics: &'a [TopicPartitionStatuses<'a>],
}

impl Encode for Response<'_> {
    const API: ApiKey = ApiKey::OffsetCommit;

    fn build(&self, fbb: &mut FlatBufferBuilder<'_>) {
        let error_message = opt_string(fbb, self.status.message);
        let topics = Some(table_vector(fbb, self.topics, build_topic_partition_errors));
        let root = protocol::OffsetCommitResponse::create(
            fbb,
            &protocol::OffsetCommitResponseArgs {
                error_code: self.status.code.as_u16(),
                error_message,
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
    use crate::message::{Decode, PartitionStatus};

    #[test]
    fn round_trips() {
        let offsets = [
            PartitionOffset {
                partition: 0,
                offset: 10,
            },
            PartitionOffset {
                partition: 1,
                offset: 20,
            },
        ];
        let body = round_trip::<_, RequestView>(&Request {
            group: "g",
            member_id: "m",
            generation: 2,
            topics: &[CommitTopic {
                topic: "t",
                partitions: &offsets,
            }],
            instance_id: "pod-0",
        });
        assert_eq!(
            RequestView::decode(body).unwrap().instance_id(),
            Some("pod-0")
        );
        let view = RequestView::decode(body).unwrap();
        let topic = view.topics().unwrap().get(0);
        let read: Vec<_> = topic
            .partitions()
            .unwrap()
            .iter()
            .map(|p| (p.partition(), p.offset()))
            .collect();
        assert_eq!(read, [(0, 10), (1, 20)]);

        let statuses = [
            PartitionStatus {
                partition: 0,
                status: Status::OK,
            },
            PartitionStatus {
                partition: 1,
                status: Status::error(ErrorCode::NotAssigned, "owned by m2"),
            },
        ];
        let body = round_trip::<_, ResponseView>(&Response {
            status: Status::OK,
            topics: &[TopicPartitionStatuses {
                topic: "t",
                partitions: &statuses,
            }],
        });
        let view = ResponseView::decode(body).unwrap();
        let p = view.topics().unwrap().get(0).partitions().unwrap();
        assert_eq!(p.get(0).error_code(), 0);
        assert_eq!(p.get(1).error_code(), ErrorCode::NotAssigned.as_u16());
        assert_eq!(p.get(1).error_message(), Some("owned by m2"));
    }
}
