//! DeleteOffsets (24): forgets a consumer group's committed offsets of some partitions, as
//! Kafka's OffsetDelete does. The offsets of a topic a member of the group subscribes to stay
//! (each of its partitions answers GroupSubscribedToTopic); a partition the topic lacks is
//! UnknownPartition; one where the group committed nothing is a success. Each forgotten offset
//! is durable before the answer.

use flatbuffers::FlatBufferBuilder;

use super::{build_topic_partition_errors, build_topic_partitions, opt_string, table_vector};
use super::{Call, Encode, Status, TopicPartitionStatuses, TopicPartitions};
use crate::api::ApiKey;
use crate::protocol;

/// Verified view of a request body.
pub type RequestView<'buf> = protocol::DeleteOffsetsRequest<'buf>;
/// Verified view of a response body.
pub type ResponseView<'buf> = protocol::DeleteOffsetsResponse<'buf>;

/// DeleteOffsets request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request<'a> {
    /// Group name.
    pub group: &'a str,
    /// Partitions per topic; an empty partition list names every partition of the topic.
    pub topics: &'a [TopicPartitions<'a>],
}

impl Encode for Request<'_> {
    const API: ApiKey = ApiKey::DeleteOffsets;

    fn build(&self, fbb: &mut FlatBufferBuilder<'_>) {
        let group = Some(fbb.create_string(self.group));
        let topics = Some(table_vector(fbb, self.topics, build_topic_partitions));
        let root = protocol::DeleteOffsetsRequest::create(
            fbb,
            &protocol::DeleteOffsetsRequestArgs { group, topics },
        );
        fbb.finish_size_prefixed(root, None);
    }
}

impl Call for Request<'_> {
    type Response<'buf> = ResponseView<'buf>;
}

/// DeleteOffsets answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Response<'a> {
    /// Whole-request result (UnknownGroup, InvalidGroupKind).
    pub status: Status<'a>,
    /// One entry per request topic, its partitions in request order (or every partition).
    pub topics: &'a [TopicPartitionStatuses<'a>],
}

impl Encode for Response<'_> {
    const API: ApiKey = ApiKey::DeleteOffsets;

    fn build(&self, fbb: &mut FlatBufferBuilder<'_>) {
        let error_message = opt_string(fbb, self.status.message);
        let topics = Some(table_vector(fbb, self.topics, build_topic_partition_errors));
        let root = protocol::DeleteOffsetsResponse::create(
            fbb,
            &protocol::DeleteOffsetsResponseArgs {
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
    fn request_and_response_round_trip() {
        let partitions = [0u32, 3];
        let topics = [
            TopicPartitions {
                topic: "t",
                partitions: &partitions,
            },
            TopicPartitions {
                topic: "all",
                partitions: &[],
            },
        ];
        let body = round_trip::<_, RequestView>(&Request {
            group: "g",
            topics: &topics,
        });
        let view = RequestView::decode(body).unwrap();
        assert_eq!(view.group(), "g");
        let read: Vec<(&str, Vec<u32>)> = view
            .topics()
            .unwrap()
            .iter()
            .map(|t| {
                let partitions = t
                    .partitions()
                    .map(|p| p.iter().collect())
                    .unwrap_or_default();
                (t.topic(), partitions)
            })
            .collect();
        assert_eq!(read, [("t", vec![0, 3]), ("all", vec![])]);

        let statuses = [
            PartitionStatus {
                partition: 0,
                status: Status::OK,
            },
            PartitionStatus {
                partition: 3,
                status: Status::error(ErrorCode::GroupSubscribedToTopic, "read by members"),
            },
        ];
        let answers = [TopicPartitionStatuses {
            topic: "t",
            partitions: &statuses,
        }];
        let body = round_trip::<_, ResponseView>(&Response {
            status: Status::OK,
            topics: &answers,
        });
        let view = ResponseView::decode(body).unwrap();
        let topic = view.topics().unwrap().get(0);
        assert_eq!(topic.topic(), "t");
        let codes: Vec<(u32, u16)> = topic
            .partitions()
            .unwrap()
            .iter()
            .map(|p| (p.partition(), p.error_code()))
            .collect();
        assert_eq!(
            codes,
            [(0, 0), (3, ErrorCode::GroupSubscribedToTopic.as_u16())]
        );
    }
}
