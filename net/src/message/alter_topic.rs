//! AlterTopic (8): changes a topic's retention, or adds partitions. The segment size is
//! fixed at creation.

use flatbuffers::FlatBufferBuilder;

use super::{build_topic_config, opt_string, Call, Encode, Status, TopicConfig};
use crate::api::ApiKey;
use crate::protocol;

/// Verified view of a request body.
pub type RequestView<'buf> = protocol::AlterTopicRequest<'buf>;
/// Verified view of a response body.
pub type ResponseView<'buf> = protocol::AlterTopicResponse<'buf>;

/// Changes a topic's retention or partition count. `None` settings stay as they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Request<'a> {
    /// Topic name.
    pub name: &'a str,
    /// Age limit in ms; -1 for unlimited.
    pub retention_ms: Option<i64>,
    /// Size limit per partition in bytes; -1 for unlimited.
    pub retention_bytes: Option<i64>,
    /// New partition count (at least the current one).
    pub partitions: Option<u32>,
}

impl Encode for Request<'_> {
    const API: ApiKey = ApiKey::AlterTopic;

    fn build(&self, fbb: &mut FlatBufferBuilder<'_>) {
        let name = Some(fbb.create_string(self.name));
        let root = protocol::AlterTopicRequest::create(
            fbb,
            &protocol::AlterTopicRequestArgs {
                name,
                retention_ms: self.retention_ms,
                retention_bytes: self.retention_bytes,
                partitions: self.partitions,
            },
        );
        fbb.finish_size_prefixed(root, None);
    }
}

impl Call for Request<'_> {
    type Response<'buf> = ResponseView<'buf>;
}

/// AlterTopic answer: the topic's configuration after the change (absent on error).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Response<'a> {
    /// Result (UnknownTopic, InvalidConfig, ...).
    pub status: Status<'a>,
    /// Configuration in force.
    pub config: Option<TopicConfig<'a>>,
}

impl Encode for Response<'_> {
    const API: ApiKey = ApiKey::AlterTopic;

    fn build(&self, fbb: &mut FlatBufferBuilder<'_>) {
        let error_message = opt_string(fbb, self.status.message);
        let config = self.config.as_ref().map(|c| build_topic_config(fbb, c));
        let root = protocol::AlterTopicResponse::create(
            fbb,
            &protocol::AlterTopicResponseArgs {
                error_code: self.status.code.as_u16(),
                error_message,
                config,
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
    fn request_round_trip() {
        let body = round_trip::<_, RequestView>(&Request {
            name: "orders",
            retention_ms: Some(-1),
            retention_bytes: None,
            partitions: Some(8),
        });
        let view = RequestView::decode(body).unwrap();
        assert_eq!(
            (view.name(), view.retention_ms(), view.retention_bytes()),
            ("orders", Some(-1), None)
        );
        assert_eq!(view.partitions(), Some(8));
    }

    #[test]
    fn response_round_trip() {
        let config = TopicConfig {
            name: "orders",
            partitions: 4,
            retention_ms: 3_600_000,
            retention_bytes: -1,
            segment_bytes: 1 << 30,
        };
        let body = round_trip::<_, ResponseView>(&Response {
            status: Status::OK,
            config: Some(config),
        });
        let view = ResponseView::decode(body).unwrap();
        assert_eq!(topic_config(&view.config().unwrap()), config);
    }
}
