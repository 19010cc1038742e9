//! OffsetFetch (14): a consumer group's committed offsets and lag.

use flatbuffers::FlatBufferBuilder;

use super::group::{build_topic_offsets, TopicOffsets};
use super::{build_topic_partitions, opt_string, table_vector};
use super::{Call, Encode, Status, TopicPartitions};
use crate::api::ApiKey;
use crate::protocol;

/// Verified view of a request body.
pub type RequestView<'buf> = protocol::OffsetFetchRequest<'buf>;
/// Verified view of a response body.
pub type ResponseView<'buf> = protocol::OffsetFetchResponse<'buf>;

/// OffsetFetch request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request<'a> {
    /// Group name.
    pub group: &'a str,
    /// Partitions to report; empty for every partition the group has committed.
    pub topics: &'a [TopicPartitions<'a>],
}

impl Encode for Request<'_> {
    const API: ApiKey = ApiKey::OffsetFetch;

    fn build(&self, fbb: &mut FlatBufferBuilder<'_>) {
        let group = Some(fbb.create_string(self.group));
        let topics = (!self.topics.is_empty())
            .then(|| table_vector(fbb, self.topics, build_topic_partitions));
        let root = protocol::OffsetFetchRequest::create(
            fbb,
            &protocol::OffsetFetchRequestArgs { group, topics },
        );
        fbb.finish_size_prefixed(root, None);
    }
}

impl Call for Request<'_> {
    type Response<'buf> = ResponseView<'buf>;
}

/// OffsetFetch answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Response<'a> {
    /// Top-level result.
    pub status: Status<'a>,
    /// Committed offsets and lag per topic.
    pub topics: &'a [TopicOffsets<'a>],
}

impl Encode for Response<'_> {
    const API: ApiKey = ApiKey::OffsetFetch;

    fn build(&self, fbb: &mut FlatBufferBuilder<'_>) {
        let error_message = opt_string(fbb, self.status.message);
        let topics = Some(table_vector(fbb, self.topics, build_topic_offsets));
        let root = protocol::OffsetFetchResponse::create(
            fbb,
            &protocol::OffsetFetchResponseArgs {
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
    use crate::message::group::CommittedOffset;
    use crate::message::test_support::round_trip;
    use crate::message::Decode;

    #[test]
    fn round_trips() {
        let body = round_trip::<_, RequestView>(&Request {
            group: "g",
            topics: &[],
        });
        assert!(RequestView::decode(body).unwrap().topics().is_none());
        let body = round_trip::<_, RequestView>(&Request {
            group: "g",
            topics: &[TopicPartitions {
                topic: "t",
                partitions: &[1],
            }],
        });
        assert_eq!(
            RequestView::decode(body).unwrap().topics().unwrap().len(),
            1
        );

        let offsets = [CommittedOffset {
            partition: 1,
            committed_offset: 5,
            high_watermark: 9,
            lag: 4,
            ..Default::default()
        }];
        let body = round_trip::<_, ResponseView>(&Response {
            status: Status::OK,
            topics: &[TopicOffsets {
                topic: "t",
                partitions: &offsets,
            }],
        });
        let view = ResponseView::decode(body).unwrap();
        let p = view.topics().unwrap().get(0).partitions().unwrap().get(0);
        assert_eq!(
            (
                p.partition(),
                p.committed_offset(),
                p.high_watermark(),
                p.lag()
            ),
            (1, 5, 9, 4)
        );
    }
}
