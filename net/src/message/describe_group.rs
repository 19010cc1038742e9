//! DescribeGroup (16): members, assignments, committed offsets and lag, or share state.

use flatbuffers::FlatBufferBuilder;

use super::group::{
    build_share_group_config, build_topic_offsets, GroupKind, GroupState, ShareGroupConfig,
    TopicOffsets,
};
use super::{build_topic_partitions, opt_string, table_vector};
use super::{Call, Encode, Status, TopicPartitions};
use crate::api::ApiKey;
use crate::protocol;

/// Verified view of a request body.
pub type RequestView<'buf> = protocol::DescribeGroupRequest<'buf>;
/// Verified view of a response body.
pub type ResponseView<'buf> = protocol::DescribeGroupResponse<'buf>;

/// DescribeGroup request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request<'a> {
    /// Group name.
    pub group: &'a str,
}

impl Encode for Request<'_> {
    const API: ApiKey = ApiKey::DescribeGroup;

    fn build(&self, fbb: &mut FlatBufferBuilder<'_>) {
        let group = Some(fbb.create_string(self.group));
        let root = protocol::DescribeGroupRequest::create(
            fbb,
            &protocol::DescribeGroupRequestArgs { group },
        );
        fbb.finish_size_prefixed(root, None);
    }
}

impl Call for Request<'_> {
    type Response<'buf> = ResponseView<'buf>;
}

/// One member of a group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupMember<'a> {
    /// Member id.
    pub member_id: &'a str,
    /// Client id given at join.
    pub client_id: &'a str,
    /// Assigned partitions (consumer groups).
    pub assignment: &'a [TopicPartitions<'a>],
    /// A static member's instance id; empty for a dynamic member.
    pub instance_id: &'a str,
}

/// State of one share partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SharePartitionState<'a> {
    /// Topic name.
    pub topic: &'a str,
    /// Partition id.
    pub partition: u32,
    /// Every record before this offset is acknowledged or archived.
    pub start_offset: i64,
    /// Partition high watermark.
    pub high_watermark: i64,
    /// Records in the window not yet acknowledged or archived.
    pub in_flight_records: u32,
    /// Of those, records currently acquired by a member.
    pub acquired_records: u32,
}

/// DescribeGroup answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Response<'a> {
    /// Result (UnknownGroup, ...).
    pub status: Status<'a>,
    /// Group name.
    pub group: &'a str,
    /// Consumer or share group.
    pub kind: GroupKind,
    /// Current state.
    pub state: GroupState,
    /// Current generation (consumer groups), -1 otherwise.
    pub generation: i32,
    /// Current members.
    pub members: &'a [GroupMember<'a>],
    /// Committed offsets and lag (consumer groups).
    pub offsets: &'a [TopicOffsets<'a>],
    /// Configuration (share groups).
    pub share_config: Option<ShareGroupConfig<'a>>,
    /// Per-partition share state (share groups).
    pub share_partitions: &'a [SharePartitionState<'a>],
}

impl Encode for Response<'_> {
    const API: ApiKey = ApiKey::DescribeGroup;

    fn build(&self, fbb: &mut FlatBufferBuilder<'_>) {
        let error_message = opt_string(fbb, self.status.message);
        let group = opt_string(fbb, self.group);
        let members = Some(table_vector(fbb, self.members, |fbb, m| {
            let member_id = Some(fbb.create_string(m.member_id));
            let client_id = opt_string(fbb, m.client_id);
            let assignment = Some(table_vector(fbb, m.assignment, build_topic_partitions));
            let instance_id = opt_string(fbb, m.instance_id);
            protocol::GroupMember::create(
                fbb,
                &protocol::GroupMemberArgs {
                    member_id,
                    client_id,
                    assignment,
                    instance_id,
                },
            )
        }));
        let offsets = Some(table_vector(fbb, self.offsets, build_topic_offsets));
        let share_config = self
            .share_config
            .as_ref()
            .map(|c| build_share_group_config(fbb, c));
        let share_partitions = Some(table_vector(fbb, self.share_partitions, |fbb, s| {
            let topic = Some(fbb.create_string(s.topic));
            protocol::SharePartitionState::create(
                fbb,
                &protocol::SharePartitionStateArgs {
                    topic,
                    partition: s.partition,
                    start_offset: s.start_offset,
                    high_watermark: s.high_watermark,
                    in_flight_records: s.in_flight_records,
                    acquired_records: s.acquired_records,
                },
            )
        }));
        let root = protocol::DescribeGroupResponse::create(
            fbb,
            &protocol::DescribeGroupResponseArgs {
                error_code: self.status.code.as_u16(),
                error_message,
                group,
                kind: self.kind.to_wire(),
                state: self.state.to_wire(),
                generation: self.generation,
                members,
                offsets,
                share_config,
                share_partitions,
            },
        );
        fbb.finish_size_prefixed(root, None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::group::{share_group_config, CommittedOffset};
    use crate::message::test_support::round_trip;
    use crate::message::Decode;

    #[test]
    fn round_trips() {
        let body = round_trip::<_, RequestView>(&Request { group: "g" });
        assert_eq!(RequestView::decode(body).unwrap().group(), "g");

        let config = ShareGroupConfig {
            lock_ms: 30_000,
            delivery_limit: 5,
            dead_letter_topic: "dlq",
            in_flight_records_max: 2000,
        };
        let offsets = [CommittedOffset {
            partition: 0,
            committed_offset: 3,
            ..Default::default()
        }];
        let body = round_trip::<_, ResponseView>(&Response {
            status: Status::OK,
            group: "g",
            kind: GroupKind::Share,
            state: GroupState::Stable,
            generation: -1,
            members: &[GroupMember {
                member_id: "m",
                client_id: "c",
                assignment: &[TopicPartitions {
                    topic: "t",
                    partitions: &[0],
                }],
                instance_id: "",
            }],
            offsets: &[TopicOffsets {
                topic: "t",
                partitions: &offsets,
            }],
            share_config: Some(config),
            share_partitions: &[SharePartitionState {
                topic: "t",
                partition: 0,
                start_offset: 7,
                high_watermark: 12,
                in_flight_records: 5,
                acquired_records: 2,
            }],
        });
        let view = ResponseView::decode(body).unwrap();
        assert_eq!(view.group(), Some("g"));
        assert_eq!(GroupKind::from_wire(view.kind()), Some(GroupKind::Share));
        assert_eq!(view.members().unwrap().get(0).member_id(), "m");
        assert_eq!(share_group_config(&view.share_config().unwrap()), config);
        let s = view.share_partitions().unwrap().get(0);
        assert_eq!(
            (
                s.start_offset(),
                s.in_flight_records(),
                s.acquired_records()
            ),
            (7, 5, 2)
        );
        let o = view.offsets().unwrap().get(0).partitions().unwrap().get(0);
        assert_eq!(o.committed_offset(), 3);
    }
}
