//! ListGroups, DescribeGroups and DeleteGroups: the group administration of Kafka's admin
//! clients (`kafka-consumer-groups`, AdminClient, confluent-kafka) on ringlog's groups, the
//! same ones `ringlog group` shows.
//!
//! Consumer groups are classic-protocol groups of protocol type `consumer`; share groups are
//! listed with type `share` (KIP-932) and an empty protocol type. Members are described with
//! their assignment as a ConsumerProtocolAssignment, the form SyncGroup hands out.

use std::rc::Rc;

use bytes::Bytes;
use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::{
    DeleteGroupsRequest, DeleteGroupsResponse, DescribeGroupsRequest, DescribeGroupsResponse,
    GroupId, ListGroupsRequest, ListGroupsResponse,
};
use kafka_protocol::protocol::StrBytes;

use super::codec::{respond, str_bytes, KafkaError, KafkaRequest, KafkaResponse};
use super::errors::{failure_message, group_failure_code};
use super::groups::{encode_assignment, to_coordinator, unexpected_answer, CONSUMER_PROTOCOL_TYPE};
use super::KafkaShard;
use crate::error_code::ErrorCode;
use crate::message::group::{GroupKind, GroupState};
use crate::server::group::handlers::all_groups;
use crate::server::group::{GroupCall, GroupDescription, GroupReturn};
use crate::server::message::Failure;

/// `authorized_operations` when the client did not ask for them (Kafka's INT32_MIN).
pub(super) const AUTHORIZED_OPERATIONS_OMITTED: i32 = i32::MIN;

/// Kafka's group type (KIP-848 / KIP-932 names): `consumer` for a consumer group whose members
/// use the consumer group protocol, `classic` for the others.
fn type_name(kind: GroupKind, consumer_protocol: bool) -> &'static str {
    match (kind, consumer_protocol) {
        (GroupKind::Consumer, false) => "classic",
        (GroupKind::Consumer, true) => "consumer",
        (GroupKind::Share, _) => "share",
    }
}

fn protocol_type(kind: GroupKind) -> &'static str {
    match kind {
        GroupKind::Consumer => CONSUMER_PROTOCOL_TYPE,
        GroupKind::Share => "",
    }
}

/// Whether `value` passes a filter (an empty filter passes everything); Kafka compares
/// states and types without regard to case.
fn passes(filter: &[StrBytes], value: &str) -> bool {
    filter.is_empty() || filter.iter().any(|f| f.eq_ignore_ascii_case(value))
}

/// Serves ListGroups: every group, filtered by state (v4+) and type (v5+).
pub(crate) async fn list_groups(
    kafka: &Rc<KafkaShard>,
    request: &KafkaRequest,
) -> Result<KafkaResponse, KafkaError> {
    let body: ListGroupsRequest = request.decode_body()?;
    let response = match all_groups(&kafka.shard).await {
        Ok(listings) => {
            let groups = listings
                .into_iter()
                .filter(|l| passes(&body.states_filter, l.state.name()))
                .filter(|l| passes(&body.types_filter, type_name(l.kind, l.consumer_protocol)))
                .map(|l| {
                    ListedGroup::default()
                        .with_group_id(GroupId(str_bytes(l.name)))
                        .with_protocol_type(StrBytes::from_static_str(protocol_type(l.kind)))
                        .with_group_state(StrBytes::from_static_str(l.state.name()))
                        .with_group_type(StrBytes::from_static_str(type_name(
                            l.kind,
                            l.consumer_protocol,
                        )))
                })
                .collect();
            ListGroupsResponse::default().with_groups(groups)
        }
        Err(failure) => ListGroupsResponse::default().with_error_code(group_failure_code(&failure)),
    };
    respond(request, &response)
}

/// Serves DescribeGroups. An unknown group is reported as Kafka does: state Dead before
/// version 6, GROUP_ID_NOT_FOUND from it.
pub(crate) async fn describe_groups(
    kafka: &Rc<KafkaShard>,
    request: &KafkaRequest,
) -> Result<KafkaResponse, KafkaError> {
    let body: DescribeGroupsRequest = request.decode_body()?;
    let mut groups = Vec::with_capacity(body.groups.len());
    for name in body.groups {
        let group = name.0.to_string();
        let call = GroupCall::Describe {
            group: group.clone(),
        };
        let described = match to_coordinator(&kafka.shard, &group, call).await {
            Ok(GroupReturn::Described(result)) => result,
            Ok(_) => Err(unexpected_answer()),
            Err(failure) => Err(failure),
        };
        let entry = match described {
            Ok(description) => described_group(name, description),
            Err(failure) if failure.code == ErrorCode::UnknownGroup && request.version() < 6 => {
                DescribedGroup::default()
                    .with_group_id(name)
                    .with_group_state(StrBytes::from_static_str(GroupState::Dead.name()))
            }
            // error_message exists from v6 on; set before, the response cannot be encoded.
            Err(failure) => DescribedGroup::default()
                .with_group_id(name)
                .with_error_code(group_failure_code(&failure))
                .with_error_message(
                    (request.version() >= 6)
                        .then(|| failure_message(&failure))
                        .flatten(),
                ),
        };
        groups.push(entry.with_authorized_operations(AUTHORIZED_OPERATIONS_OMITTED));
    }
    respond(
        request,
        &DescribeGroupsResponse::default().with_groups(groups),
    )
}

fn described_group(name: GroupId, description: GroupDescription) -> DescribedGroup {
    let members = description
        .members
        .into_iter()
        .map(|member| {
            let assignment = match description.kind {
                GroupKind::Consumer => encode_assignment(&member.assignment).unwrap_or_default(),
                GroupKind::Share => Bytes::new(),
            };
            DescribedGroupMember::default()
                .with_member_id(str_bytes(member.member_id))
                .with_group_instance_id(member.instance_id.map(str_bytes))
                .with_client_id(str_bytes(member.client_id))
                .with_member_assignment(assignment)
        })
        .collect();
    // As Kafka: the assignor of a stable group (empty while it rebalances or is empty).
    let protocol = match description.state {
        GroupState::Stable => description.protocol,
        _ => String::new(),
    };
    DescribedGroup::default()
        .with_group_id(name)
        .with_group_state(StrBytes::from_static_str(description.state.name()))
        .with_protocol_type(StrBytes::from_static_str(protocol_type(description.kind)))
        .with_protocol_data(str_bytes(protocol))
        .with_members(members)
}

/// Serves DeleteGroups: each group goes with its committed offsets, if it has no members
/// (NON_EMPTY_GROUP otherwise, GROUP_ID_NOT_FOUND for an unknown one).
pub(crate) async fn delete_groups(
    kafka: &Rc<KafkaShard>,
    request: &KafkaRequest,
) -> Result<KafkaResponse, KafkaError> {
    let body: DeleteGroupsRequest = request.decode_body()?;
    let mut results = Vec::with_capacity(body.groups_names.len());
    for name in body.groups_names {
        let group = name.0.to_string();
        let call = GroupCall::Delete {
            group: group.clone(),
        };
        let outcome: Result<(), Failure> = match to_coordinator(&kafka.shard, &group, call).await {
            Ok(GroupReturn::Done(result)) => result,
            Ok(_) => Err(unexpected_answer()),
            Err(failure) => Err(failure),
        };
        let code = match &outcome {
            Ok(()) => 0,
            Err(failure) => group_failure_code(failure),
        };
        tracing::debug!(%group, code, "Kafka DeleteGroups");
        results.push(
            DeletableGroupResult::default()
                .with_group_id(name)
                .with_error_code(code),
        );
    }
    respond(
        request,
        &DeleteGroupsResponse::default().with_results(results),
    )
}
