//! ListTopics (4): every topic with its retention configuration.

use flatbuffers::FlatBufferBuilder;

use super::{build_topic_config, opt_string, table_vector, Call, Encode, Status, TopicConfig};
use crate::api::ApiKey;
use crate::protocol;

/// Verified view of a request body.
pub type RequestView<'buf> = protocol::ListTopicsRequest<'buf>;
/// Verified view of a response body.
pub type ResponseView<'buf> = protocol::ListTopicsResponse<'buf>;

/// Lists every topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Request;

impl Encode for Request {
    const API: ApiKey = ApiKey::ListTopics;

    fn build(&self, fbb: &mut FlatBufferBuilder<'_>) {
        let root = protocol::ListTopicsRequest::create(fbb, &protocol::ListTopicsRequestArgs {});
        fbb.finish_size_prefixed(root, None);
    }
}

impl Call for Request {
    type Response<'buf> = ResponseView<'buf>;
}

/// ListTopics answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Response<'a> {
    /// Top-level result.
    pub status: Status<'a>,
    /// Every topic, sorted by name.
    pub topics: &'a [TopicConfig<'a>],
}

impl Encode for Response<'_> {
    const API: ApiKey = ApiKey::ListTopics;

    fn build(&self, fbb: &mut FlatBufferBuilder<'_>) {
        let error_message = opt_string(fbb, self.status.message);
        let topics = Some(table_vector(fbb, self.topics, build_topic_config));
        let root = protocol::ListTopicsResponse::create(
            fbb,
            &protocol::ListTopicsResponseArgs {
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
    use crate::message::test_support::round_trip;
    use crate::message::{topic_config, Decode};

    #[test]
    fn round_trips() {
        round_trip::<_, RequestView>(&Request);
        let topics = [
            TopicConfig {
                name: "a",
                partitions: 1,
                retention_ms: -1,
                retention_bytes: -1,
                segment_bytes: 1 << 20,
            },
            TopicConfig {
                name: "b",
                partitions: 8,
                retention_ms: 1000,
                retention_bytes: 1 << 30,
                segment_bytes: 1 << 28,
            },
        ];
        let body = round_trip::<_, ResponseView>(&Response {
            status: Status::OK,
            topics: &topics,
        });
        let view = ResponseView::decode(body).unwrap();
        let read: Vec<_> = view
            .topics()
            .unwrap()
            .iter()
            .map(|t| topic_config(&t))
            .collect();
        assert_eq!(read, topics);
    }
}
