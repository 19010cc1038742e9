//! CreateTopics, DeleteTopics, CreatePartitions, DeleteRecords, DescribeConfigs,
//! IncrementalAlterConfigs and AlterConfigs, on the same topic catalog as the native protocol.
//!
//! Topic configs map to ringlog's: `retention.ms`, `retention.bytes` and `segment.bytes` are
//! honoured; settings that only make sense with replicas or that ringlog always has (such as
//! `cleanup.policy=delete`) are accepted; anything else is refused with INVALID_CONFIG rather
//! than silently ignored. Of an existing topic the two retention settings can change, and
//! partitions can be added.

use std::collections::HashSet;
use std::rc::Rc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::alter_configs_request::AlterableConfig as WholeSetConfig;
use kafka_protocol::messages::alter_configs_response::AlterConfigsResourceResponse as WholeSetResponse;
use kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic;
use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::create_topics_response::{
    CreatableTopicConfigs, CreatableTopicResult,
};
use kafka_protocol::messages::delete_records_response::{
    DeleteRecordsPartitionResult, DeleteRecordsTopicResult,
};
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult,
};
use kafka_protocol::messages::incremental_alter_configs_request::AlterableConfig;
use kafka_protocol::messages::incremental_alter_configs_response::AlterConfigsResourceResponse;
use kafka_protocol::messages::{
    AlterConfigsRequest, AlterConfigsResponse, CreatePartitionsRequest, CreatePartitionsResponse,
    CreateTopicsRequest, CreateTopicsResponse, DeleteRecordsRequest, DeleteRecordsResponse,
    DeleteTopicsRequest, DeleteTopicsResponse, DescribeConfigsRequest, DescribeConfigsResponse,
    IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use ringlog_engine::batch::BATCH_BYTES_MAX;
use ringlog_engine::topic::{self, TopicConfig, TopicId, PARTITIONS_MAX};

use super::codec::{kafka_topic_id, respond, str_bytes, KafkaError, KafkaRequest, KafkaResponse};
use super::errors::{failure_code, failure_message, kafka_error};
use super::KafkaShard;
use crate::server::message::TopicChange;
use crate::server::routing;

/// Kafka's config resource types.
const RESOURCE_TOPIC: i8 = 2;
const RESOURCE_BROKER: i8 = 4;

/// Kafka's config sources.
const SOURCE_TOPIC: i8 = 1;
const SOURCE_DEFAULT: i8 = 5;

/// IncrementalAlterConfigs operations (APPEND and SUBTRACT are for list settings).
const OP_SET: i8 = 0;
const OP_DELETE: i8 = 1;

/// Kafka's config value types.
const TYPE_STRING: i8 = 2;
const TYPE_INT: i8 = 3;
const TYPE_LONG: i8 = 5;
const TYPE_LIST: i8 = 7;

/// Topic settings accepted at creation and not acted on: they concern replicas or state what
/// ringlog always does.
const ACCEPTED_SETTINGS: &[(&str, Option<&str>)] = &[
    ("cleanup.policy", Some("delete")),
    ("compression.type", Some("producer")),
    ("message.timestamp.type", Some("CreateTime")),
    ("min.insync.replicas", None),
    ("unclean.leader.election.enable", None),
];

/// A refused topic: the Kafka error and why.
type Refusal = (ResponseError, String);

/// Serves CreateTopics (replication factor 1 or -1; a manual replica assignment may only name
/// broker 0, once per partition).
pub(crate) async fn create_topics(
    kafka: &Rc<KafkaShard>,
    request: &KafkaRequest,
) -> Result<KafkaResponse, KafkaError> {
    let body: CreateTopicsRequest = request.decode_body()?;
    let mut results = Vec::with_capacity(body.topics.len());
    let repeated = repeated_names(
        body.topics
            .iter()
            .map(|creatable| creatable.name.0.as_str()),
    );
    for creatable in &body.topics {
        let name = creatable.name.0.to_string();
        let checked = topic_config(kafka, creatable);
        let outcome = match checked {
            // As Kafka: a name given twice creates nothing, whichever entry would win.
            _ if repeated.contains(name.as_str()) => Err(repeated_refusal(&name)),
            Err(refusal) => Err(refusal),
            Ok(config) if body.validate_only => match kafka.shard.topic(&name) {
                Some(_) => Err((
                    ResponseError::TopicAlreadyExists,
                    format!("topic {name} already exists"),
                )),
                None => Ok(config),
            },
            Ok(config) => routing::create_topic(&kafka.shard, name.clone(), config.clone())
                .await
                .map(|()| config)
                .map_err(|failure| (kafka_error(failure.code), failure.message)),
        };
        let result = CreatableTopicResult::default().with_name(creatable.name.clone());
        results.push(match outcome {
            Ok(config) => result
                // The id the creation gave (version 7 on; none for a validate-only request).
                .with_topic_id(
                    kafka
                        .shard
                        .topic(name.as_str())
                        .map(|entry| kafka_topic_id(entry.config.id))
                        .unwrap_or_default(),
                )
                .with_error_message(None)
                .with_num_partitions(i32::try_from(config.partitions).unwrap_or(i32::MAX))
                .with_replication_factor(1)
                .with_configs(Some(created_configs(
                    &config,
                    &kafka.shard.config.topic_defaults(config.partitions),
                ))),
            Err((error, message)) => result
                .with_error_code(error.code())
                .with_error_message(Some(str_bytes(message))),
        });
    }
    respond(
        request,
        &CreateTopicsResponse::default().with_topics(results),
    )
}

/// The ringlog config for a Kafka topic creation, or why it is refused.
fn topic_config(kafka: &KafkaShard, creatable: &CreatableTopic) -> Result<TopicConfig, Refusal> {
    let name = creatable.name.as_str();
    topic::validate_name(name)
        .map_err(|error| (ResponseError::InvalidTopicException, error.to_string()))?;
    if !matches!(creatable.replication_factor, -1 | 1) {
        return Err((
            ResponseError::InvalidReplicationFactor,
            format!(
                "replication factor {} is not possible on one broker; use 1",
                creatable.replication_factor
            ),
        ));
    }
    let partitions = match (assigned_partitions(creatable)?, creatable.num_partitions) {
        (Some(count), _) => count,
        (None, -1) => 1,
        (None, n) => u32::try_from(n)
            .ok()
            .filter(|n| (1..=PARTITIONS_MAX).contains(n))
            .ok_or_else(|| {
                (
                    ResponseError::InvalidPartitions,
                    format!("partitions must be between 1 and {PARTITIONS_MAX}, got {n}"),
                )
            })?,
    };
    let mut config = kafka.shard.config.topic_defaults(partitions);
    for setting in &creatable.configs {
        apply_setting(&mut config, setting.name.as_str(), setting.value.as_deref())?;
    }
    config
        .validate()
        .map_err(|error| (ResponseError::InvalidConfig, error.to_string()))?;
    Ok(config)
}

/// Serves DeleteRecords (kafka-delete-records, `AdminClient.deleteRecords`): each named
/// partition's log start moves up to the offset given (-1: the high watermark), stored before
/// the answer, which carries the new start as the low watermark. As from Kafka: an offset past
/// the high watermark (or another negative one) is OFFSET_OUT_OF_RANGE, one below the start
/// changes nothing, and a partition that does not exist is UNKNOWN_TOPIC_OR_PARTITION. Segments
/// wholly below the new start go at the next retention pass.
pub(crate) async fn delete_records(
    kafka: &Rc<KafkaShard>,
    request: &KafkaRequest,
) -> Result<KafkaResponse, KafkaError> {
    let body: DeleteRecordsRequest = request.decode_body()?;
    let mut topics = Vec::with_capacity(body.topics.len());
    for topic in &body.topics {
        let name = topic.name.0.as_str();
        let mut partitions = Vec::with_capacity(topic.partitions.len());
        for asked in &topic.partitions {
            let result = DeleteRecordsPartitionResult::default()
                .with_partition_index(asked.partition_index)
                .with_low_watermark(-1);
            let Ok(partition) = u32::try_from(asked.partition_index) else {
                partitions
                    .push(result.with_error_code(ResponseError::UnknownTopicOrPartition.code()));
                continue;
            };
            let outcome = if asked.offset < -1 {
                Err(ResponseError::OffsetOutOfRange.code())
            } else {
                routing::delete_records(&kafka.shard, name, partition, asked.offset)
                    .await
                    .map_err(|failure| failure_code(&failure))
            };
            partitions.push(match outcome {
                Ok(log_start) => result.with_low_watermark(log_start),
                Err(code) => result.with_error_code(code),
            });
        }
        topics.push(
            DeleteRecordsTopicResult::default()
                .with_name(topic.name.clone())
                .with_partitions(partitions),
        );
    }
    respond(
        request,
        &DeleteRecordsResponse::default().with_topics(topics),
    )
}

/// The partition count a manual replica assignment gives (`None` without one), checked as
/// Kafka's controller checks it: numPartitions and replicationFactor -1 (INVALID_REQUEST),
/// then per partition a non-empty list of registered brokers (here only node 0), each once,
/// no partition twice, and partitions numbered 0 to n-1 (INVALID_REPLICA_ASSIGNMENT).
fn assigned_partitions(creatable: &CreatableTopic) -> Result<Option<u32>, Refusal> {
    let assignments = &creatable.assignments;
    if assignments.is_empty() {
        return Ok(None);
    }
    let invalid_request = |what: &str| {
        Err((
            ResponseError::InvalidRequest,
            format!("a manual partition assignment was given, but {what} was not set to -1"),
        ))
    };
    if creatable.replication_factor != -1 {
        return invalid_request("the replication factor");
    }
    if creatable.num_partitions != -1 {
        return invalid_request("numPartitions");
    }
    let count = u32::try_from(assignments.len())
        .ok()
        .filter(|count| *count <= PARTITIONS_MAX)
        .ok_or_else(|| {
            (
                ResponseError::InvalidPartitions,
                format!(
                    "partitions must be between 1 and {PARTITIONS_MAX}, got {}",
                    assignments.len()
                ),
            )
        })?;
    let invalid = |message: String| Err((ResponseError::InvalidReplicaAssignment, message));
    let mut seen: HashSet<i32> = HashSet::with_capacity(assignments.len());
    for assignment in assignments {
        let index = assignment.partition_index;
        if !seen.insert(index) {
            return invalid(format!(
                "found multiple manual partition assignments for partition {index}"
            ));
        }
        match assignment.broker_ids.as_slice() {
            [] => return invalid(format!("partition {index} has an empty replica list")),
            [broker] if broker.0 == 0 => {}
            [broker] => {
                return invalid(format!(
                    "partition {index} names broker {}; ringlog has one broker, node 0",
                    broker.0
                ))
            }
            _ => {
                return invalid(format!(
                    "partition {index} names more than one replica; ringlog has one broker, \
                     node 0, and no replicas"
                ))
            }
        }
    }
    // As many distinct indexes as partitions: one outside 0..n leaves one missing.
    let n = i64::from(count);
    if seen
        .iter()
        .any(|&index| !(0..n).contains(&i64::from(index)))
    {
        return invalid("partitions should be a consecutive 0-based integer sequence".into());
    }
    Ok(Some(count))
}

fn apply_setting(config: &mut TopicConfig, name: &str, value: Option<&str>) -> Result<(), Refusal> {
    let invalid = |why: &str| invalid_setting(name, value, why);
    match name {
        "retention.ms" => config.retention_ms = parse_limit(name, value)?,
        "retention.bytes" => config.retention_bytes = parse_limit(name, value)?,
        "segment.bytes" => {
            config.segment_bytes = u64::try_from(setting_number(name, value)?)
                .map_err(|_| invalid("must be positive"))?;
        }
        _ => match ACCEPTED_SETTINGS.iter().find(|(known, _)| *known == name) {
            Some((_, None)) => {}
            Some((_, Some(only))) if value == Some(*only) => {}
            Some((_, Some(only))) => return Err(invalid(&format!("ringlog supports only {only}"))),
            None => return Err(invalid("not supported by ringlog")),
        },
    }
    Ok(())
}

/// Serves CreatePartitions: adds partitions to topics (without replica assignments: the
/// one broker holds them all). Consumer groups reading a grown topic rebalance.
pub(crate) async fn create_partitions(
    kafka: &Rc<KafkaShard>,
    request: &KafkaRequest,
) -> Result<KafkaResponse, KafkaError> {
    let body: CreatePartitionsRequest = request.decode_body()?;
    let mut results = Vec::with_capacity(body.topics.len());
    let repeated = repeated_names(body.topics.iter().map(|topic| topic.name.0.as_str()));
    for topic in &body.topics {
        let outcome = if repeated.contains(topic.name.0.as_str()) {
            Err(repeated_refusal(topic.name.0.as_str()))
        } else {
            add_partitions(kafka, topic, body.validate_only).await
        };
        let result = CreatePartitionsTopicResult::default().with_name(topic.name.clone());
        results.push(match outcome {
            Ok(()) => result.with_error_message(None),
            Err((error, message)) => result
                .with_error_code(error.code())
                .with_error_message(Some(str_bytes(message))),
        });
    }
    respond(
        request,
        &CreatePartitionsResponse::default().with_results(results),
    )
}

/// The names given more than once in a request: Kafka refuses every entry of such a name
/// (INVALID_REQUEST) and acts on none of them.
fn repeated_names<'a>(names: impl Iterator<Item = &'a str>) -> HashSet<&'a str> {
    let mut seen = HashSet::new();
    names.filter(|name| !seen.insert(*name)).collect()
}

/// The refusal of an entry whose topic the request names more than once.
fn repeated_refusal(name: &str) -> Refusal {
    (
        ResponseError::InvalidRequest,
        format!("topic {name} is named more than once in the request"),
    )
}

/// Grows (or with `validate_only` checks growing) one topic to `topic.count` partitions.
async fn add_partitions(
    kafka: &Rc<KafkaShard>,
    topic: &CreatePartitionsTopic,
    validate_only: bool,
) -> Result<(), Refusal> {
    let name = topic.name.0.as_str();
    let Some(entry) = kafka.shard.topic(name) else {
        return Err((
            ResponseError::UnknownTopicOrPartition,
            format!("unknown topic {name}"),
        ));
    };
    let current = entry.config.partitions;
    let count = u32::try_from(topic.count)
        .ok()
        .filter(|count| (current + 1..=PARTITIONS_MAX).contains(count))
        .ok_or_else(|| {
            (
                ResponseError::InvalidPartitions,
                format!(
                    "topic {name} has {current} partitions; the new count must be more, up to \
                     {PARTITIONS_MAX}, got {}",
                    topic.count
                ),
            )
        })?;
    let elsewhere = topic
        .assignments
        .iter()
        .flatten()
        .any(|assignment| assignment.broker_ids.iter().any(|broker| broker.0 != 0));
    if elsewhere {
        return Err((
            ResponseError::InvalidReplicaAssignment,
            "ringlog has one broker, node 0, and no replicas".to_owned(),
        ));
    }
    if validate_only {
        return Ok(());
    }
    let change = TopicChange {
        partitions: Some(count),
        ..TopicChange::default()
    };
    routing::alter_topic(&kafka.shard, name.to_owned(), change)
        .await
        .map_err(|failure| (kafka_error(failure.code), failure.message))
}

/// A retention setting's value: a number, -1 for no limit (as in Kafka).
fn parse_limit(name: &str, value: Option<&str>) -> Result<Option<u64>, Refusal> {
    match setting_number(name, value)? {
        -1 => Ok(None),
        n => u64::try_from(n)
            .map(Some)
            .map_err(|_| invalid_setting(name, value, "must be -1 or positive")),
    }
}

/// A setting's value as a number.
fn setting_number(name: &str, value: Option<&str>) -> Result<i64, Refusal> {
    value
        .and_then(|v| v.trim().parse::<i64>().ok())
        .ok_or_else(|| invalid_setting(name, value, "not a number"))
}

/// INVALID_CONFIG for `name=value`, saying why.
fn invalid_setting(name: &str, value: Option<&str>, why: &str) -> Refusal {
    (
        ResponseError::InvalidConfig,
        format!("{name}={}: {why}", value.unwrap_or("null")),
    )
}

/// Serves IncrementalAlterConfigs for topics: SET or DELETE (back to the server's default)
/// of `retention.ms` and `retention.bytes`. Brokers have no settings that change.
pub(crate) async fn incremental_alter_configs(
    kafka: &Rc<KafkaShard>,
    request: &KafkaRequest,
) -> Result<KafkaResponse, KafkaError> {
    let body: IncrementalAlterConfigsRequest = request.decode_body()?;
    let mut responses = Vec::with_capacity(body.resources.len());
    for resource in &body.resources {
        let name = resource.resource_name.as_str();
        let outcome = match resource.resource_type {
            RESOURCE_TOPIC => alter_topic(kafka, name, &resource.configs, body.validate_only).await,
            other => Err(not_a_topic(other)),
        };
        let (error_code, error_message) = answer_fields(outcome);
        responses.push(
            AlterConfigsResourceResponse::default()
                .with_resource_type(resource.resource_type)
                .with_resource_name(resource.resource_name.clone())
                .with_error_code(error_code)
                .with_error_message(error_message),
        );
    }
    respond(
        request,
        &IncrementalAlterConfigsResponse::default().with_responses(responses),
    )
}

/// Serves AlterConfigs, the older whole-set form of IncrementalAlterConfigs that
/// kafka-python's `alter_configs` and older tools send: a topic's settings become exactly those
/// given, so retention.ms and retention.bytes left out go back to the server's defaults, as in
/// Kafka. Settings ringlog fixes are taken at the values it has (as at creation), segment.bytes
/// only at the topic's own; anything else is INVALID_CONFIG.
pub(crate) async fn alter_configs(
    kafka: &Rc<KafkaShard>,
    request: &KafkaRequest,
) -> Result<KafkaResponse, KafkaError> {
    let body: AlterConfigsRequest = request.decode_body()?;
    let mut responses = Vec::with_capacity(body.resources.len());
    for resource in &body.resources {
        let name = resource.resource_name.as_str();
        let outcome = match resource.resource_type {
            RESOURCE_TOPIC => match whole_set_as_changes(kafka, name, &resource.configs) {
                Ok(changes) => alter_topic(kafka, name, &changes, body.validate_only).await,
                Err(refusal) => Err(refusal),
            },
            other => Err(not_a_topic(other)),
        };
        let (error_code, error_message) = answer_fields(outcome);
        responses.push(
            WholeSetResponse::default()
                .with_resource_type(resource.resource_type)
                .with_resource_name(resource.resource_name.clone())
                .with_error_code(error_code)
                .with_error_message(error_message),
        );
    }
    respond(
        request,
        &AlterConfigsResponse::default().with_responses(responses),
    )
}

/// Why a config change of a resource other than a topic is refused: brokers take theirs from
/// the config file, other resource types are not served.
fn not_a_topic(resource_type: i8) -> Refusal {
    let message = if resource_type == RESOURCE_BROKER {
        "ringlog's broker settings are set in its config file".to_owned()
    } else {
        format!("config resource type {resource_type} is not served")
    };
    (ResponseError::InvalidRequest, message)
}

/// A config change's outcome as both AlterConfigs responses carry it: (error code, message).
fn answer_fields(outcome: Result<(), Refusal>) -> (i16, Option<StrBytes>) {
    match outcome {
        Ok(()) => (0, None),
        Err((error, message)) => (error.code(), Some(str_bytes(message))),
    }
}

/// The incremental changes that make topic `name`'s settings exactly `configs`: each retention
/// setting given is set, each left out goes back to its default; the others are checked.
fn whole_set_as_changes(
    kafka: &KafkaShard,
    name: &str,
    configs: &[WholeSetConfig],
) -> Result<Vec<AlterableConfig>, Refusal> {
    let Some(entry) = kafka.shard.topic(name) else {
        return Err((
            ResponseError::UnknownTopicOrPartition,
            format!("unknown topic {name}"),
        ));
    };
    let mut scratch = entry.config.clone();
    let mut changes = Vec::with_capacity(2);
    for setting in configs {
        let key = setting.name.as_str();
        let value = setting.value.as_deref();
        match key {
            "retention.ms" | "retention.bytes" => changes.push(
                AlterableConfig::default()
                    .with_name(setting.name.clone())
                    .with_config_operation(OP_SET)
                    .with_value(setting.value.clone()),
            ),
            "segment.bytes" => {
                if value.and_then(|v| v.parse::<u64>().ok()) != Some(entry.config.segment_bytes) {
                    return Err(invalid_setting(
                        key,
                        value,
                        &format!(
                            "fixed at creation ({} for this topic)",
                            entry.config.segment_bytes
                        ),
                    ));
                }
            }
            _ => apply_setting(&mut scratch, key, value)?,
        }
    }
    for key in ["retention.ms", "retention.bytes"] {
        if !configs.iter().any(|setting| setting.name.as_str() == key) {
            changes.push(
                AlterableConfig::default()
                    .with_name(StrBytes::from_static_str(key))
                    .with_config_operation(OP_DELETE),
            );
        }
    }
    Ok(changes)
}

/// Changes (or with `validate_only` checks) one topic's retention settings.
async fn alter_topic(
    kafka: &Rc<KafkaShard>,
    name: &str,
    configs: &[AlterableConfig],
    validate_only: bool,
) -> Result<(), Refusal> {
    let Some(entry) = kafka.shard.topic(name) else {
        return Err((
            ResponseError::UnknownTopicOrPartition,
            format!("unknown topic {name}"),
        ));
    };
    let defaults = kafka.shard.config.topic_defaults(entry.config.partitions);
    let mut change = TopicChange::default();
    for setting in configs {
        let setting_name = setting.name.as_str();
        let (slot, default) = match setting_name {
            "retention.ms" => (&mut change.retention_ms, defaults.retention_ms),
            "retention.bytes" => (&mut change.retention_bytes, defaults.retention_bytes),
            _ => {
                return Err((
                    ResponseError::InvalidConfig,
                    format!(
                        "{setting_name}: ringlog changes only retention.ms and retention.bytes \
                         of an existing topic"
                    ),
                ))
            }
        };
        *slot = Some(match setting.config_operation {
            OP_SET => parse_limit(setting_name, setting.value.as_deref())?,
            OP_DELETE => default,
            other => {
                return Err((
                    ResponseError::InvalidConfig,
                    format!("{setting_name}: operation {other} applies to list settings only"),
                ))
            }
        });
    }
    if validate_only {
        return change
            .applied_to(&entry.config)
            .validate()
            .map_err(|error| (ResponseError::InvalidConfig, error.to_string()));
    }
    routing::alter_topic(&kafka.shard, name.to_owned(), change)
        .await
        .map_err(|failure| (kafka_error(failure.code), failure.message))
}

/// One topic setting as Kafka names and types it: (name, value, type, differs from the
/// server's default).
type Setting = (&'static str, String, i8, bool);

/// A topic's settings as Kafka describes them, each compared with `defaults`, what a topic
/// that sets nothing gets.
fn settings(config: &TopicConfig, defaults: &TopicConfig) -> Vec<Setting> {
    let limit = |value: Option<u64>| value.map_or_else(|| "-1".to_string(), |v| v.to_string());
    // The largest batch the log takes: a segment, and no batch may exceed BATCH_BYTES_MAX.
    let max_message_bytes = config.segment_bytes.min(BATCH_BYTES_MAX as u64);
    vec![
        ("cleanup.policy", "delete".into(), TYPE_LIST, false),
        ("compression.type", "producer".into(), TYPE_STRING, false),
        (
            "max.message.bytes",
            max_message_bytes.to_string(),
            TYPE_INT,
            false,
        ),
        (
            "message.timestamp.type",
            "CreateTime".into(),
            TYPE_STRING,
            false,
        ),
        (
            "retention.bytes",
            limit(config.retention_bytes),
            TYPE_LONG,
            config.retention_bytes != defaults.retention_bytes,
        ),
        (
            "retention.ms",
            limit(config.retention_ms),
            TYPE_LONG,
            config.retention_ms != defaults.retention_ms,
        ),
        (
            "segment.bytes",
            config.segment_bytes.to_string(),
            TYPE_INT,
            config.segment_bytes != defaults.segment_bytes,
        ),
    ]
}

fn source(set: bool) -> i8 {
    if set {
        SOURCE_TOPIC
    } else {
        SOURCE_DEFAULT
    }
}

/// Only the values IncrementalAlterConfigs can change are writable: the two retention
/// settings (`segment.bytes` is set at creation only, see [`alter_topic`]).
fn read_only(name: &str) -> bool {
    !matches!(name, "retention.ms" | "retention.bytes")
}

fn created_configs(config: &TopicConfig, defaults: &TopicConfig) -> Vec<CreatableTopicConfigs> {
    settings(config, defaults)
        .into_iter()
        .map(|(name, value, _, set)| {
            CreatableTopicConfigs::default()
                .with_name(StrBytes::from_static_str(name))
                .with_value(Some(str_bytes(value)))
                .with_read_only(read_only(name))
                .with_config_source(source(set))
        })
        .collect()
}

/// Serves DeleteTopics (by name; ringlog topics have no ids).
pub(crate) async fn delete_topics(
    kafka: &Rc<KafkaShard>,
    request: &KafkaRequest,
) -> Result<KafkaResponse, KafkaError> {
    let body: DeleteTopicsRequest = request.decode_body()?;
    // Version 6 names topics in `topics` (by name or id); earlier versions in `topic_names`.
    let names: Vec<(Option<TopicName>, _)> = if request.version() >= 6 {
        body.topics
            .into_iter()
            .map(|t| (t.name, t.topic_id))
            .collect()
    } else {
        body.topic_names
            .into_iter()
            .map(|name| (Some(name), Default::default()))
            .collect()
    };
    let mut responses = Vec::with_capacity(names.len());
    let repeated: HashSet<String> = repeated_names(
        names
            .iter()
            .filter_map(|(name, _)| name.as_ref().map(|name| name.0.as_str())),
    )
    .into_iter()
    .map(str::to_owned)
    .collect();
    for (name, topic_id) in names {
        // A topic named by id alone is deleted under the name it has now.
        let Some(name) = name.or_else(|| {
            let id = TopicId(topic_id.as_u128());
            (!id.is_nil())
                .then(|| kafka.shard.topic_name(id))
                .flatten()
                .map(|name| TopicName(str_bytes(name)))
        }) else {
            // Answered with the id asked for: clients match results to their requests by it.
            responses.push(
                DeletableTopicResult::default()
                    .with_name(None)
                    .with_topic_id(topic_id)
                    .with_error_code(ResponseError::UnknownTopicId.code()),
            );
            continue;
        };
        // Version 6 answers carry the topic's id however it was named.
        let known_id = kafka
            .shard
            .topic(name.0.as_str())
            .map(|entry| kafka_topic_id(entry.config.id));
        let result = DeletableTopicResult::default()
            .with_name(Some(name.clone()))
            .with_topic_id(known_id.unwrap_or(topic_id));
        if repeated.contains(name.0.as_str()) {
            let (error, message) = repeated_refusal(name.0.as_str());
            responses.push(
                result
                    .with_error_code(error.code())
                    .with_error_message(Some(str_bytes(message))),
            );
            continue;
        }
        responses.push(
            match routing::delete_topic(&kafka.shard, name.0.to_string()).await {
                Ok(()) => result,
                Err(failure) => result
                    .with_error_code(failure_code(&failure))
                    .with_error_message(failure_message(&failure)),
            },
        );
    }
    respond(
        request,
        &DeleteTopicsResponse::default().with_responses(responses),
    )
}

/// Serves DescribeConfigs for topics (their settings) and the broker (no settings to show).
pub(crate) async fn describe_configs(
    kafka: &Rc<KafkaShard>,
    request: &KafkaRequest,
) -> Result<KafkaResponse, KafkaError> {
    let body: DescribeConfigsRequest = request.decode_body()?;
    let include_type = request.version() >= 3;
    let mut results = Vec::with_capacity(body.resources.len());
    // Each resource once: a repeat costs the client a few bytes and the answer every setting.
    let mut seen = HashSet::with_capacity(body.resources.len());
    for resource in &body.resources {
        if !seen.insert((resource.resource_type, resource.resource_name.as_str())) {
            continue;
        }
        let result = DescribeConfigsResult::default()
            .with_resource_type(resource.resource_type)
            .with_resource_name(resource.resource_name.clone())
            .with_error_message(None);
        let wanted = |name: &str| {
            resource
                .configuration_keys
                .as_ref()
                // None or empty: every setting, as Kafka.
                .is_none_or(|keys| keys.is_empty() || keys.iter().any(|key| key.as_str() == name))
        };
        results.push(match resource.resource_type {
            RESOURCE_BROKER => result,
            RESOURCE_TOPIC => match kafka.shard.topic(resource.resource_name.as_str()) {
                None => result
                    .with_error_code(ResponseError::UnknownTopicOrPartition.code())
                    .with_error_message(Some(str_bytes(format!(
                        "unknown topic {}",
                        resource.resource_name.as_str()
                    )))),
                Some(entry) => {
                    let defaults = kafka.shard.config.topic_defaults(entry.config.partitions);
                    let configs = settings(&entry.config, &defaults)
                        .into_iter()
                        .filter(|(name, ..)| wanted(name))
                        .map(|(name, value, config_type, set)| {
                            let described = DescribeConfigsResourceResult::default()
                                .with_name(StrBytes::from_static_str(name))
                                .with_value(Some(str_bytes(value)))
                                .with_read_only(read_only(name))
                                .with_config_source(source(set))
                                .with_documentation(None);
                            if include_type {
                                described.with_config_type(config_type)
                            } else {
                                described
                            }
                        })
                        .collect();
                    result.with_configs(configs)
                }
            },
            other => result
                .with_error_code(ResponseError::InvalidRequest.code())
                .with_error_message(Some(str_bytes(format!(
                    "config resource type {other} is not served"
                )))),
        });
    }
    respond(
        request,
        &DescribeConfigsResponse::default().with_results(results),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_map_to_the_topic_config() {
        let mut config = TopicConfig::new(3);
        apply_setting(&mut config, "retention.ms", Some("60000")).unwrap();
        apply_setting(&mut config, "retention.bytes", Some("-1")).unwrap();
        apply_setting(&mut config, "segment.bytes", Some("2097152")).unwrap();
        apply_setting(&mut config, "cleanup.policy", Some("delete")).unwrap();
        apply_setting(&mut config, "min.insync.replicas", Some("2")).unwrap();
        assert_eq!(config.retention_ms, Some(60_000));
        assert_eq!(config.retention_bytes, None);
        assert_eq!(config.segment_bytes, 2 << 20);
        let refused = apply_setting(&mut config, "cleanup.policy", Some("compact")).unwrap_err();
        assert_eq!(refused.0, ResponseError::InvalidConfig);
        assert!(apply_setting(&mut config, "segment.ms", Some("1")).is_err());
        assert!(apply_setting(&mut config, "retention.ms", Some("soon")).is_err());
    }

    #[test]
    fn described_settings_say_which_were_set() {
        let mut config = TopicConfig::new(1);
        config.retention_ms = Some(1000);
        let settings = settings(&config, &TopicConfig::new(1));
        let retention = settings.iter().find(|s| s.0 == "retention.ms").unwrap();
        assert_eq!((retention.1.as_str(), retention.3), ("1000", true));
        let bytes = settings.iter().find(|s| s.0 == "retention.bytes").unwrap();
        assert_eq!((bytes.1.as_str(), bytes.3), ("-1", false));
    }
}
