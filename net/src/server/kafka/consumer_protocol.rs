//! Kafka's consumer group protocol (KIP-848, a client's `group.protocol=consumer`):
//! ConsumerGroupHeartbeat on ringlog's group coordinator. Members heartbeat instead of joining
//! rebalances; the coordinator answers each with the partitions it may own now (see
//! [`crate::server::group::consumer_membership`]). Commits and offset reads are the classic
//! apis', with the member's epoch in place of a generation. A group's members all use one
//! protocol: a member of the other is INCONSISTENT_GROUP_PROTOCOL while the group has members.

use std::rc::Rc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::consumer_group_heartbeat_response::{Assignment, TopicPartitions};
use kafka_protocol::messages::{ConsumerGroupHeartbeatRequest, ConsumerGroupHeartbeatResponse};
use ringlog_engine::topic::TopicId;

use super::codec::{kafka_topic_id, respond, str_bytes, KafkaError, KafkaRequest, KafkaResponse};
use super::errors::{failure_message, group_failure_code};
use super::groups::{to_coordinator, unexpected_answer};
use super::KafkaShard;
use crate::server::group::assignor::TopicAssignment;
use crate::server::group::consumer_membership::HEARTBEAT_INTERVAL_MS;
use crate::server::group::{GroupCall, GroupReturn};

/// Serves ConsumerGroupHeartbeat through the group's coordinator.
pub(crate) async fn consumer_group_heartbeat(
    kafka: &Rc<KafkaShard>,
    request: &KafkaRequest,
) -> Result<KafkaResponse, KafkaError> {
    let body: ConsumerGroupHeartbeatRequest = request.decode_body()?;
    let refuse = |error: ResponseError, message: &str| {
        ConsumerGroupHeartbeatResponse::default()
            .with_error_code(error.code())
            .with_error_message(Some(str_bytes(message)))
            .with_member_id(Some(body.member_id.clone()))
            .with_member_epoch(body.member_epoch)
    };
    if body
        .subscribed_topic_regex
        .as_ref()
        .is_some_and(|regex| !regex.is_empty())
    {
        let message = "subscriptions by regular expression are not served: name the topics";
        return respond(
            request,
            &refuse(ResponseError::InvalidRegularExpression, message),
        );
    }
    let shard = &kafka.shard;
    let group = body.group_id.0.to_string();
    // Version 0 clients (Kafka 3.7 to 3.9) join without a member id and take the server's;
    // from version 1 clients make their own.
    let member_id = if body.member_id.is_empty() && body.member_epoch == 0 {
        let client_id = request.header.client_id.as_deref().unwrap_or_default();
        str_bytes(shard.groups.new_member_id(client_id))
    } else {
        body.member_id.clone()
    };
    // Owned partitions name topics by id; those of topics gone, and partitions a topic does
    // not have, are owned by no one (and not kept: a claim is bounded by the topics).
    let owned = body.topic_partitions.as_ref().map(|topics| {
        topics
            .iter()
            .filter_map(|topic| {
                let name = shard.topic_name(TopicId(topic.topic_id.as_u128()))?;
                let count = shard.topic(&name)?.config.partitions;
                let mut partitions: Vec<u32> = topic
                    .partitions
                    .iter()
                    .filter_map(|p| u32::try_from(*p).ok())
                    .filter(|p| *p < count)
                    .collect();
                partitions.sort_unstable();
                partitions.dedup();
                Some((name, partitions))
            })
            .collect::<Vec<TopicAssignment>>()
    });
    let call = GroupCall::ConsumerHeartbeat {
        group: group.clone(),
        member_id: member_id.to_string(),
        epoch: body.member_epoch,
        topics: body
            .subscribed_topic_names
            .as_ref()
            .map(|names| names.iter().map(|name| name.0.to_string()).collect()),
        owned,
        // -1 after the join: unchanged.
        rebalance_timeout_ms: u32::try_from(body.rebalance_timeout_ms).ok(),
    };
    let answer = match to_coordinator(shard, &group, call).await {
        Ok(GroupReturn::ConsumerBeat(result)) => result,
        Ok(_) => Err(unexpected_answer()),
        Err(failure) => Err(failure),
    };
    let response = match answer {
        Ok(answer) => ConsumerGroupHeartbeatResponse::default()
            .with_member_id(Some(member_id.clone()))
            .with_member_epoch(answer.epoch)
            .with_heartbeat_interval_ms(HEARTBEAT_INTERVAL_MS)
            .with_assignment(answer.assignment.map(|assignment| {
                Assignment::default().with_topic_partitions(
                    assignment
                        .into_iter()
                        .filter_map(|(topic, partitions)| {
                            let id = shard.topic(&topic)?.config.id;
                            Some(
                                TopicPartitions::default()
                                    .with_topic_id(kafka_topic_id(id))
                                    .with_partitions(
                                        partitions
                                            .into_iter()
                                            .map(|p| i32::try_from(p).unwrap_or(i32::MAX))
                                            .collect(),
                                    ),
                            )
                        })
                        .collect(),
                )
            })),
        Err(failure) => ConsumerGroupHeartbeatResponse::default()
            .with_error_code(group_failure_code(&failure))
            .with_error_message(failure_message(&failure))
            .with_member_id(Some(member_id.clone()))
            .with_member_epoch(body.member_epoch),
    };
    respond(request, &response)
}
