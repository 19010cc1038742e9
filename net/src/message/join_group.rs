//! JoinGroup (10): join or rejoin a consumer group; the coordinator computes the assignment and
//! answers once the group is stable.

use flatbuffers::FlatBufferBuilder;

use super::{build_topic_partitions, opt_string, opt_string_vector, table_vector};
use super::{Call, Encode, Status, TopicPartitions};
use crate::api::ApiKey;
use crate::protocol;

/// Verified view of a request body.
pub type RequestView<'buf> = protocol::JoinGroupRequest<'buf>;
/// Verified view of a response body.
pub type ResponseView<'buf> = protocol::JoinGroupResponse<'buf>;

/// Default session timeout (schema default).
pub const SESSION_TIMEOUT_MS_DEFAULT: u32 = 10_000;
/// Default rebalance timeout (schema default).
pub const REBALANCE_TIMEOUT_MS_DEFAULT: u32 = 30_000;

/// JoinGroup request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request<'a> {
    /// Group name.
    pub group: &'a str,
    /// Empty on the first join; the server-given id afterwards.
    pub member_id: &'a str,
    /// Free-form client id shown by DescribeGroup.
    pub client_id: &'a str,
    /// Topics the member subscribes to.
    pub topics: &'a [&'a str],
    /// The member is removed when no heartbeat arrives for this long.
    pub session_timeout_ms: u32,
    /// How long the coordinator waits for members to rejoin during a rebalance.
    pub rebalance_timeout_ms: u32,
    /// A static member's instance id (Kafka's `group.instance.id`); empty for a dynamic member.
    pub instance_id: &'a str,
}

impl Encode for Request<'_> {
    const API: ApiKey = ApiKey::JoinGroup;

    fn build(&self, fbb: &mut FlatBufferBuilder<'_>) {
        let group = Some(fbb.create_string(self.group));
        let member_id = opt_string(fbb, self.member_id);
        let client_id = opt_string(fbb, self.client_id);
        let topics = opt_string_vector(fbb, self.topics);
        let instance_id = opt_string(fbb, self.instance_id);
        let root = protocol::JoinGroupRequest::create(
            fbb,
            &protocol::JoinGroupRequestArgs {
                group,
                member_id,
                client_id,
                topics,
                session_timeout_ms: self.session_timeout_ms,
                rebalance_timeout_ms: self.rebalance_timeout_ms,
                instance_id,
            },
        );
        fbb.finish_size_prefixed(root, None);
    }
}

impl Call for Request<'_> {
    type Response<'buf> = ResponseView<'buf>;
}

/// JoinGroup answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Response<'a> {
    /// Result.
    pub status: Status<'a>,
    /// The member's id (use it for every later call).
    pub member_id: &'a str,
    /// Generation of the group's assignment.
    pub generation: i32,
    /// How often to send Heartbeat.
    pub heartbeat_interval_ms: u32,
    /// Partitions assigned to this member.
    pub assignment: &'a [TopicPartitions<'a>],
}

impl Encode for Response<'_> {
    const API: ApiKey = ApiKey::JoinGroup;

    fn build(&self, fbb: &mut FlatBufferBuilder<'_>) {
        let error_message = opt_string(fbb, self.status.message);
        let member_id = opt_string(fbb, self.member_id);
        let assignment = Some(table_vector(fbb, self.assignment, build_topic_partitions));
        let root = protocol::JoinGroupResponse::create(
            fbb,
            &protocol::JoinGroupResponseArgs {
                error_code: self.status.code.as_u16(),
                error_message,
                member_id,
                generation: self.generation,
                heartbeat_interval_ms: self.heartbeat_interval_ms,
                assignment,
            },
        );
        fbb.finish_size_prefixed(root, None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::test_support::round_trip;
    use crate::message::Decode;

    #[test]
    fn round_trips() {
        let body = round_trip::<_, RequestView>(&Request {
            group: "g",
            member_id: "",
            client_id: "cli",
            topics: &["a", "b"],
            session_timeout_ms: SESSION_TIMEOUT_MS_DEFAULT,
            rebalance_timeout_ms: 5_000,
            instance_id: "pod-0",
        });
        let view = RequestView::decode(body).unwrap();
        assert_eq!(view.group(), "g");
        assert_eq!(view.member_id(), None);
        assert_eq!(view.topics().unwrap().len(), 2);
        assert_eq!(view.session_timeout_ms(), SESSION_TIMEOUT_MS_DEFAULT);
        assert_eq!(view.rebalance_timeout_ms(), 5_000);

        let body = round_trip::<_, ResponseView>(&Response {
            status: Status::OK,
            member_id: "m-1",
            generation: 3,
            heartbeat_interval_ms: 3_000,
            assignment: &[TopicPartitions {
                topic: "a",
                partitions: &[0, 2],
            }],
        });
        let view = ResponseView::decode(body).unwrap();
        assert_eq!(view.member_id(), Some("m-1"));
        assert_eq!(view.generation(), 3);
        let assigned = view.assignment().unwrap().get(0);
        assert_eq!(assigned.topic(), "a");
        assert_eq!(
            assigned.partitions().unwrap().iter().collect::<Vec<_>>(),
            [0, 2]
        );
    }
}
