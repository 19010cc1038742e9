//! FindCoordinator, JoinGroup, SyncGroup, Heartbeat and LeaveGroup on ringlog's group
//! coordinator: the groups are the ones the native protocol uses (committed offsets are in
//! [`super::offsets`]).
//!
//! Partitions are assigned by the server (the coordinator's assignor), as for native
//! consumers. In Kafka's protocol a member elected leader computes the assignment and hands it
//! over in SyncGroup; ringlog elects no member. Every member is told the leader is
//! [`SERVER_LEADER`], so each sends SyncGroup as a follower and gets the server's assignment,
//! encoded as a ConsumerProtocolAssignment. Of the protocols a member offers, an eager one
//! (range, roundrobin, sticky) is chosen when there is one, since the server moves partitions
//! in one step. Members offering only cooperative-sticky keep their partitions while they
//! rejoin, so the coordinator hands a moved partition over in two rebalances, as Kafka does
//! (see [`crate::server::group::membership`]); a group that also has an eager member moves
//! them in one step. Static members (`group.instance.id`, versions with the field) are the
//! coordinator's too: one restarted within its session timeout takes its old place and
//! partitions without a rebalance, and the member it replaced is FENCED_INSTANCE_ID.

use std::rc::Rc;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::consumer_protocol_assignment::TopicPartition;
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::{
    BrokerId, ConsumerProtocolAssignment, ConsumerProtocolSubscription, FindCoordinatorRequest,
    FindCoordinatorResponse, HeartbeatRequest, HeartbeatResponse, JoinGroupRequest,
    JoinGroupResponse, LeaveGroupRequest, LeaveGroupResponse, SyncGroupRequest, SyncGroupResponse,
    TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

use super::codec::{respond, str_bytes, KafkaError, KafkaRequest, KafkaResponse};
use super::dispatch::ClientInfo;
use super::errors::group_failure_code;
use super::{KafkaShard, NODE_ID};
use crate::error_code::ErrorCode;
use crate::server::group::membership::{MemberRef, StaleGeneration, COOPERATIVE_PROTOCOLS};
use crate::server::group::{
    self, meta::validate_group_name, session_timeout_accepted, GroupCall, GroupReturn, JoinArgs,
};
use crate::server::message::Failure;
use crate::server::shard::Shard;

/// The leader every member is told about: not a member, so none of them assigns.
pub(crate) const SERVER_LEADER: &str = "ringlog-server-assignor";

/// The only group protocol type served.
pub(super) const CONSUMER_PROTOCOL_TYPE: &str = "consumer";

/// Kafka's FindCoordinator key types.
const KEY_TYPE_GROUP: i8 = 0;
const KEY_TYPE_TRANSACTION: i8 = 1;

/// The version of the ConsumerProtocolAssignment the server writes (every client reads it).
const ASSIGNMENT_VERSION: i16 = 0;

/// Sends `call` to the coordinator of `group`.
pub(super) async fn to_coordinator(
    shard: &Rc<Shard>,
    group: &str,
    call: GroupCall,
) -> Result<GroupReturn, Failure> {
    validate_group_name(group)?;
    Ok(group::call(shard, shard.groups.coordinator_of(group), call).await)
}

/// The Kafka code for a group failure of a member: a group the coordinator does not know
/// (for example after a restart) means the member must join again.
pub(super) fn member_failure_code(failure: &Failure) -> i16 {
    match failure.code {
        // Not a member (of a group that no longer exists, or of one that has members while
        // the request came from outside it, generation -1): Kafka's answer to both.
        ErrorCode::UnknownGroup | ErrorCode::GroupNotEmpty => ResponseError::UnknownMemberId.code(),
        _ => group_failure_code(failure),
    }
}

/// The failure for an answer of the wrong kind from the coordinator (a bug).
pub(super) fn unexpected_answer() -> Failure {
    crate::server::routing::unexpected_answer()
}

/// Serves FindCoordinator: node 0 coordinates every group. A transaction coordinator lookup
/// is TRANSACTIONAL_ID_AUTHORIZATION_FAILED (ringlog has no transactions): the answer Kafka
/// gives a transactional id the client may not use, which librdkafka and the Java producer
/// take as fatal, failing `init_transactions()` at once. COORDINATOR_NOT_AVAILABLE, the
/// answer for a coordinator that is not up yet, made them retry the lookup every 500 ms until
/// the call timed out (librdkafka's "retry call to resume").
pub(crate) fn find_coordinator(
    client: &ClientInfo,
    request: &KafkaRequest,
) -> Result<KafkaResponse, KafkaError> {
    let body: FindCoordinatorRequest = request.decode_body()?;
    let host = str_bytes(client.advertised.ip().to_string());
    let port = i32::from(client.advertised.port());
    let available = body.key_type == KEY_TYPE_GROUP;
    let error_code = match body.key_type {
        KEY_TYPE_GROUP => 0,
        KEY_TYPE_TRANSACTION => ResponseError::TransactionalIdAuthorizationFailed.code(),
        _ => ResponseError::CoordinatorNotAvailable.code(),
    };
    // Versions 1+ carry a message (key types other than a group's need version 1).
    let message = (!available)
        .then(|| StrBytes::from_static_str("ringlog coordinates groups only: no transactions"));
    let response = if request.version() >= 4 {
        let coordinators = body
            .coordinator_keys
            .into_iter()
            .map(|key| {
                let coordinator = Coordinator::default()
                    .with_key(key)
                    .with_error_code(error_code);
                if available {
                    coordinator
                        .with_node_id(BrokerId(NODE_ID))
                        .with_host(host.clone())
                        .with_port(port)
                } else {
                    coordinator
                        .with_node_id(BrokerId(-1))
                        .with_port(-1)
                        .with_error_message(message.clone())
                }
            })
            .collect();
        FindCoordinatorResponse::default().with_coordinators(coordinators)
    } else if available {
        FindCoordinatorResponse::default()
            .with_node_id(BrokerId(NODE_ID))
            .with_host(host)
            .with_port(port)
            .with_error_message(None)
    } else {
        FindCoordinatorResponse::default()
            .with_error_code(error_code)
            .with_error_message(message)
            .with_node_id(BrokerId(-1))
            .with_port(-1)
    };
    respond(request, &response)
}

/// The instance id of a static member (Kafka sends null for dynamic ones).
pub(super) fn instance_id(group_instance_id: &Option<StrBytes>) -> Option<String> {
    group_instance_id.as_ref().map(|id| id.to_string())
}

/// The protocol to use of those a member offers: the first eager one, else the first.
fn choose_protocol(names: &[&str]) -> Option<usize> {
    names
        .iter()
        .position(|name| !COOPERATIVE_PROTOCOLS.contains(name))
        .or((!names.is_empty()).then_some(0))
}

/// The topics of a ConsumerProtocolSubscription (an INT16 version, then the versioned body).
fn subscribed_topics(metadata: &Bytes) -> Option<Vec<String>> {
    let mut bytes = metadata.clone();
    if bytes.remaining() < 2 {
        return None;
    }
    let version = bytes.get_i16();
    let subscription = ConsumerProtocolSubscription::decode(&mut bytes, version).ok()?;
    Some(subscription.topics.iter().map(|t| t.to_string()).collect())
}

/// Encodes an assignment as a ConsumerProtocolAssignment (an INT16 version, then the body).
pub(super) fn encode_assignment(assignment: &[(String, Vec<u32>)]) -> Result<Bytes, String> {
    let partitions = assignment
        .iter()
        .map(|(topic, partitions)| {
            TopicPartition::default()
                .with_topic(TopicName(str_bytes(topic.clone())))
                .with_partitions(
                    partitions
                        .iter()
                        .map(|p| i32::try_from(*p).unwrap_or(i32::MAX))
                        .collect(),
                )
        })
        .collect();
    let body = ConsumerProtocolAssignment::default()
        .with_assigned_partitions(partitions)
        .with_user_data(None);
    let mut out = BytesMut::new();
    out.put_i16(ASSIGNMENT_VERSION);
    body.encode(&mut out, ASSIGNMENT_VERSION)
        .map_err(|e| e.to_string())?;
    Ok(out.freeze())
}

/// Serves JoinGroup: joins the member through the coordinator, which answers once the
/// rebalance is complete; the assignment waits on the connection for the SyncGroup.
pub(crate) async fn join_group(
    kafka: &Rc<KafkaShard>,
    client: &ClientInfo,
    request: &KafkaRequest,
) -> Result<KafkaResponse, KafkaError> {
    let body: JoinGroupRequest = request.decode_body()?;
    let group = body.group_id.0.to_string();
    let names: Vec<&str> = body.protocols.iter().map(|p| p.name.as_str()).collect();
    let chosen = choose_protocol(&names).and_then(|index| body.protocols.get(index));
    let refuse = |error: ResponseError| {
        JoinGroupResponse::default()
            .with_error_code(error.code())
            .with_generation_id(-1)
            .with_member_id(body.member_id.clone())
    };
    let Some(protocol) = chosen.filter(|_| body.protocol_type.as_str() == CONSUMER_PROTOCOL_TYPE)
    else {
        return respond(request, &refuse(ResponseError::InconsistentGroupProtocol));
    };
    // The whole subscription, topics that do not exist yet included: they get no partitions
    // until they are created, and creating one rebalances the group, since no member is the
    // leader that would notice it in Kafka.
    let Some(topics) = subscribed_topics(&protocol.metadata) else {
        return respond(request, &refuse(ResponseError::InconsistentGroupProtocol));
    };
    // Kafka's own answer (its clients name the bounds in their error), not INVALID_REQUEST.
    let session_timeout_ms = u32::try_from(body.session_timeout_ms).unwrap_or(0);
    if !session_timeout_accepted(session_timeout_ms) {
        return respond(request, &refuse(ResponseError::InvalidSessionTimeout));
    }
    let args = JoinArgs {
        group: group.clone(),
        member_id: body.member_id.to_string(),
        instance_id: instance_id(&body.group_instance_id),
        client_id: request
            .header
            .client_id
            .as_ref()
            .map(|id| id.to_string())
            .unwrap_or_default(),
        topics,
        session_timeout_ms,
        // Version 0 has no rebalance timeout: Kafka uses the session timeout.
        rebalance_timeout_ms: u32::try_from(if request.version() == 0 {
            body.session_timeout_ms
        } else {
            body.rebalance_timeout_ms
        })
        .unwrap_or(0),
        protocol: protocol.name.to_string(),
        protocols: names.iter().map(|name| name.to_string()).collect(),
    };
    tracing::debug!(%group, member_id = %args.member_id, version = request.version(), "Kafka JoinGroup");
    let joined = match to_coordinator(&kafka.shard, &group, GroupCall::Join(args)).await {
        Ok(GroupReturn::Joined(result)) => result,
        Ok(_) => Err(unexpected_answer()),
        Err(failure) => Err(failure),
    };
    tracing::debug!(%group, outcome = ?joined.as_ref().map(|j| (&j.member_id, j.generation)).map_err(|f| &f.message), "Kafka JoinGroup answered");
    let response = match joined {
        Ok(joined) => {
            client.remember_assignment(
                &group,
                &joined.member_id,
                joined.generation,
                joined.assignment,
            );
            JoinGroupResponse::default()
                .with_generation_id(joined.generation)
                .with_protocol_type(Some(body.protocol_type.clone()))
                .with_protocol_name(Some(protocol.name.clone()))
                .with_leader(StrBytes::from_static_str(SERVER_LEADER))
                .with_member_id(str_bytes(joined.member_id))
        }
        Err(failure) => JoinGroupResponse::default()
            .with_error_code(match failure.code {
                ErrorCode::UnknownGroup => ResponseError::UnknownMemberId.code(),
                _ => group_failure_code(&failure),
            })
            .with_generation_id(-1)
            .with_member_id(body.member_id.clone()),
    };
    respond(request, &response)
}

/// Serves SyncGroup: the member's assignment from its JoinGroup (or, when that answer went to
/// another connection, from the coordinator).
pub(crate) async fn sync_group(
    kafka: &Rc<KafkaShard>,
    client: &ClientInfo,
    request: &KafkaRequest,
) -> Result<KafkaResponse, KafkaError> {
    let body: SyncGroupRequest = request.decode_body()?;
    let group = body.group_id.0.to_string();
    let member = MemberRef {
        member_id: body.member_id.to_string(),
        instance_id: instance_id(&body.group_instance_id),
    };
    // A static member's answer comes from the coordinator, which knows whether a newer
    // member took the instance over since this connection's JoinGroup.
    let remembered = member
        .instance_id
        .is_none()
        .then(|| client.assignment(&group, &member.member_id, body.generation_id))
        .flatten();
    let assignment = match remembered {
        Some(assignment) => Ok(assignment),
        None => {
            assignment_from_coordinator(&kafka.shard, &group, &member, body.generation_id).await
        }
    };
    let response = SyncGroupResponse::default()
        .with_protocol_type(body.protocol_type.clone())
        .with_protocol_name(body.protocol_name.clone());
    let response = match assignment.and_then(|a| {
        encode_assignment(&a).map_err(|message| Failure::new(ErrorCode::Unknown, message))
    }) {
        Ok(bytes) => response.with_assignment(bytes),
        Err(failure) => response.with_error_code(member_failure_code(&failure)),
    };
    respond(request, &response)
}

async fn assignment_from_coordinator(
    shard: &Rc<Shard>,
    group: &str,
    member: &MemberRef,
    generation: i32,
) -> Result<Vec<(String, Vec<u32>)>, Failure> {
    let call = GroupCall::Describe {
        group: group.to_string(),
    };
    let description = match to_coordinator(shard, group, call).await? {
        GroupReturn::Described(result) => result?,
        _ => return Err(unexpected_answer()),
    };
    // As Kafka's coordinator checks: a fenced instance, then the member, then its generation.
    let member_id = member.member_id.as_str();
    if let Some(instance_id) = member.instance_id.as_deref() {
        let holder = description
            .members
            .iter()
            .find(|m| m.instance_id.as_deref() == Some(instance_id));
        if holder.is_some_and(|holder| holder.member_id != member_id) {
            return Err(Failure::new(
                ErrorCode::FencedInstanceId,
                format!("instance {instance_id:?} belongs to a newer member"),
            ));
        }
    }
    let member = description
        .members
        .into_iter()
        .find(|member| member.member_id == member_id)
        .ok_or_else(|| Failure::new(ErrorCode::UnknownMember, format!("no member {member_id}")))?;
    if description.generation != generation {
        // ILLEGAL_GENERATION, as from Kafka: the client forgets its generation and rejoins.
        return Err(Failure::new(
            ErrorCode::NotAssigned,
            format!(
                "generation {generation} is not the group's {}",
                description.generation
            ),
        ));
    }
    Ok(member.assignment)
}

/// Serves Heartbeat.
pub(crate) async fn heartbeat(
    kafka: &Rc<KafkaShard>,
    request: &KafkaRequest,
) -> Result<KafkaResponse, KafkaError> {
    let body: HeartbeatRequest = request.decode_body()?;
    let group = body.group_id.0.to_string();
    let call = GroupCall::Heartbeat {
        group: group.clone(),
        member: MemberRef {
            member_id: body.member_id.to_string(),
            instance_id: instance_id(&body.group_instance_id),
        },
        generation: body.generation_id,
        stale: StaleGeneration::IllegalGeneration,
    };
    let outcome = match to_coordinator(&kafka.shard, &group, call).await {
        Ok(GroupReturn::Done(result)) => result,
        Ok(_) => Err(unexpected_answer()),
        Err(failure) => Err(failure),
    };
    let code = outcome
        .err()
        .map_or(0, |failure| member_failure_code(&failure));
    tracing::trace!(%group, member_id = %body.member_id, generation = body.generation_id, code, "Kafka Heartbeat");
    respond(request, &HeartbeatResponse::default().with_error_code(code))
}

/// Serves LeaveGroup (one member before version 3, a list from version 3, where a static
/// member may be named by its instance id alone, as admin clients remove one).
pub(crate) async fn leave_group(
    kafka: &Rc<KafkaShard>,
    request: &KafkaRequest,
) -> Result<KafkaResponse, KafkaError> {
    let body: LeaveGroupRequest = request.decode_body()?;
    let group = body.group_id.0.to_string();
    let members: Vec<(StrBytes, Option<StrBytes>)> = if request.version() >= 3 {
        body.members
            .iter()
            .map(|m| (m.member_id.clone(), m.group_instance_id.clone()))
            .collect()
    } else {
        vec![(body.member_id.clone(), None)]
    };
    let mut results = Vec::with_capacity(members.len());
    for (member_id, group_instance_id) in members {
        let call = GroupCall::Leave {
            group: group.clone(),
            member: MemberRef {
                member_id: member_id.to_string(),
                instance_id: instance_id(&group_instance_id),
            },
        };
        let outcome = match to_coordinator(&kafka.shard, &group, call).await {
            Ok(GroupReturn::Done(result)) => result,
            Ok(_) => Err(unexpected_answer()),
            Err(failure) => Err(failure),
        };
        results.push((
            member_id,
            group_instance_id,
            outcome.err().map_or(0, |f| member_failure_code(&f)),
        ));
    }
    let response = if request.version() >= 3 {
        LeaveGroupResponse::default().with_members(
            results
                .into_iter()
                .map(|(member_id, group_instance_id, code)| {
                    MemberResponse::default()
                        .with_member_id(member_id)
                        .with_group_instance_id(group_instance_id)
                        .with_error_code(code)
                })
                .collect(),
        )
    } else {
        LeaveGroupResponse::default().with_error_code(results.first().map_or(0, |r| r.2))
    };
    respond(request, &response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eager_protocols_are_preferred() {
        assert_eq!(choose_protocol(&["cooperative-sticky", "range"]), Some(1));
        assert_eq!(choose_protocol(&["range", "roundrobin"]), Some(0));
        assert_eq!(choose_protocol(&["cooperative-sticky"]), Some(0));
        assert_eq!(choose_protocol(&[]), None);
    }

    #[test]
    fn subscriptions_and_assignments_round_trip_through_the_codec() {
        for version in 0..=3i16 {
            let subscription = ConsumerProtocolSubscription::default().with_topics(vec![
                StrBytes::from_static_str("a"),
                StrBytes::from_static_str("b"),
            ]);
            let mut bytes = BytesMut::new();
            bytes.put_i16(version);
            subscription.encode(&mut bytes, version).unwrap();
            assert_eq!(
                subscribed_topics(&bytes.freeze()),
                Some(vec!["a".to_string(), "b".to_string()])
            );
        }
        let mut encoded = encode_assignment(&[("t".into(), vec![0, 2])]).unwrap();
        assert_eq!(encoded.get_i16(), ASSIGNMENT_VERSION);
        let decoded = ConsumerProtocolAssignment::decode(&mut encoded, ASSIGNMENT_VERSION).unwrap();
        assert_eq!(decoded.assigned_partitions[0].partitions, vec![0, 2]);
        assert_eq!(subscribed_topics(&Bytes::from_static(&[0])), None);
    }
}
