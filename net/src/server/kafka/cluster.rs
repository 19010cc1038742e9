//! ApiVersions, Metadata, DescribeCluster and DescribeLogDirs: the server as a one-broker
//! cluster whose node 0 leads every partition, from one log directory (the data directory).

use std::rc::Rc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::describe_log_dirs_response::{
    DescribeLogDirsPartition, DescribeLogDirsResult, DescribeLogDirsTopic,
};
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, BrokerId, DescribeClusterRequest,
    DescribeClusterResponse, DescribeLogDirsRequest, DescribeLogDirsResponse, MetadataRequest,
    MetadataResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use ringlog_engine::topic::{self, TopicId};

use super::codec::{
    encode_response, kafka_topic_id, respond, str_bytes, KafkaError, KafkaRequest, KafkaResponse,
};
use super::dispatch::ClientInfo;
use super::versions::SUPPORTED_APIS;
use super::{KafkaShard, CLUSTER_ID, NODE_ID};
use crate::server::routing;

fn advertised_apis() -> Vec<ApiVersion> {
    SUPPORTED_APIS
        .iter()
        .map(|api| {
            ApiVersion::default()
                .with_api_key(api.api_key as i16)
                .with_min_version(api.min_version)
                .with_max_version(api.max_version)
        })
        .collect()
}

/// Serves ApiVersions: every api and version in [`SUPPORTED_APIS`].
pub(crate) fn api_versions(request: &KafkaRequest) -> Result<KafkaResponse, KafkaError> {
    // Decoded only to reject a malformed request; the client's name is not needed.
    let _: ApiVersionsRequest = request.decode_body()?;
    let response = ApiVersionsResponse::default().with_api_keys(advertised_apis());
    respond(request, &response)
}

/// The answer to ApiVersions at a version this server does not serve: v0 with
/// UNSUPPORTED_VERSION and the versions it does serve, so the client can retry with one.
pub(crate) fn api_versions_unsupported(correlation_id: i32) -> Result<KafkaResponse, KafkaError> {
    let response = ApiVersionsResponse::default()
        .with_error_code(ResponseError::UnsupportedVersion.code())
        .with_api_keys(advertised_apis());
    encode_response(ApiKey::ApiVersions, correlation_id, 0, &response)
}

/// Serves Metadata: node 0 and the requested topics (all of them when the request asks for
/// every topic). Topics are not created on demand; unknown ones get UNKNOWN_TOPIC_OR_PARTITION.
pub(crate) async fn metadata(
    kafka: &Rc<KafkaShard>,
    client: &ClientInfo,
    request: &KafkaRequest,
) -> Result<KafkaResponse, KafkaError> {
    let body: MetadataRequest = request.decode_body()?;
    let requested: Option<Vec<Requested>> = match body.topics {
        // Version 0 asks for every topic with an empty list; later versions with null.
        Some(topics) if !(topics.is_empty() && request.version() == 0) => Some(
            topics
                .into_iter()
                .map(|t| match t.name {
                    // From version 10 a topic may be named by its id alone (a null name, or
                    // an empty one beside an id).
                    Some(name) if !name.0.is_empty() || t.topic_id.is_nil() => {
                        Requested::Name(name.0.to_string())
                    }
                    _ => Requested::Id(TopicId(t.topic_id.as_u128())),
                })
                .collect(),
        ),
        _ => None,
    };
    let wanted: Vec<Requested> = match requested {
        // Each topic once, as Kafka answers: a name repeated costs the client three bytes
        // and would cost the answer a whole partition list.
        Some(mut wanted) => {
            let mut seen = std::collections::HashSet::with_capacity(wanted.len());
            wanted.retain(|topic| seen.insert(topic.clone()));
            wanted
        }
        None => {
            let mut all: Vec<String> = kafka.shard.topics.borrow().keys().cloned().collect();
            all.sort();
            all.into_iter().map(Requested::Name).collect()
        }
    };
    let topics = wanted
        .into_iter()
        .map(|topic| topic_metadata(kafka, topic))
        .collect();
    let response = MetadataResponse::default()
        .with_brokers(vec![MetadataResponseBroker::default()
            .with_node_id(BrokerId(NODE_ID))
            .with_host(str_bytes(client.advertised.ip().to_string()))
            .with_port(i32::from(client.advertised.port()))])
        .with_cluster_id(Some(str_bytes(CLUSTER_ID)))
        .with_controller_id(BrokerId(NODE_ID))
        .with_topics(topics);
    respond(request, &response)
}

/// A topic a Metadata request asks about.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Requested {
    Name(String),
    Id(TopicId),
}

fn topic_metadata(kafka: &KafkaShard, requested: Requested) -> MetadataResponseTopic {
    let name = match requested {
        Requested::Name(name) => name,
        Requested::Id(id) => match kafka.shard.topic_name(id) {
            Some(name) => name,
            None => {
                return MetadataResponseTopic::default()
                    .with_name(None)
                    .with_topic_id(kafka_topic_id(id))
                    .with_error_code(ResponseError::UnknownTopicId.code())
            }
        },
    };
    let topic =
        MetadataResponseTopic::default().with_name(Some(TopicName(str_bytes(name.clone()))));
    if topic::validate_name(&name).is_err() {
        return topic.with_error_code(ResponseError::InvalidTopicException.code());
    }
    let Some(entry) = kafka.shard.topic(&name) else {
        return topic.with_error_code(ResponseError::UnknownTopicOrPartition.code());
    };
    let topic = topic.with_topic_id(kafka_topic_id(entry.config.id));
    let partitions = (0..entry.config.partitions)
        .map(|partition| {
            MetadataResponsePartition::default()
                .with_partition_index(i32::try_from(partition).unwrap_or(i32::MAX))
                .with_leader_id(BrokerId(NODE_ID))
                .with_replica_nodes(vec![BrokerId(NODE_ID)])
                .with_isr_nodes(vec![BrokerId(NODE_ID)])
        })
        .collect();
    topic.with_partitions(partitions)
}

/// DescribeCluster's endpoint type of brokers (2: controllers).
const ENDPOINT_TYPE_BROKER: i8 = 1;

/// Serves DescribeCluster (admin clients): the one broker, which is also the controller.
pub(crate) fn describe_cluster(
    client: &ClientInfo,
    request: &KafkaRequest,
) -> Result<KafkaResponse, KafkaError> {
    let body: DescribeClusterRequest = request.decode_body()?;
    let mut response = DescribeClusterResponse::default()
        .with_cluster_id(str_bytes(CLUSTER_ID))
        .with_controller_id(BrokerId(NODE_ID))
        .with_brokers(vec![DescribeClusterBroker::default()
            .with_broker_id(BrokerId(NODE_ID))
            .with_host(str_bytes(client.advertised.ip().to_string()))
            .with_port(i32::from(client.advertised.port()))]);
    if request.version() >= 1 {
        // This listener is a broker's; asked for controllers, say so, as a Kafka broker does.
        if body.endpoint_type != ENDPOINT_TYPE_BROKER {
            response = response
                .with_error_code(ResponseError::MismatchedEndpointType.code())
                .with_error_message(Some(StrBytes::from_static_str(
                    "this is a broker endpoint, not a controller one",
                )));
        }
        response = response.with_endpoint_type(ENDPOINT_TYPE_BROKER);
    }
    respond(request, &response)
}

/// Serves DescribeLogDirs: the data directory as the broker's one log directory, with the size
/// of each partition asked for (every partition when `topics` is null). Unknown topics and
/// partitions are left out, as Kafka leaves out what a directory does not hold; the volume's
/// sizes (v4) are reported as unknown (-1).
pub(crate) async fn describe_log_dirs(
    kafka: &Rc<KafkaShard>,
    request: &KafkaRequest,
) -> Result<KafkaResponse, KafkaError> {
    let body: DescribeLogDirsRequest = request.decode_body()?;
    let shard = &kafka.shard;
    let wanted: Vec<(String, Option<Vec<i32>>)> = match body.topics {
        Some(topics) => topics
            .into_iter()
            .map(|t| (t.topic.0.to_string(), Some(t.partitions)))
            .collect(),
        None => {
            let mut all: Vec<String> = shard.topics.borrow().keys().cloned().collect();
            all.sort();
            all.into_iter().map(|name| (name, None)).collect()
        }
    };
    let mut topics = Vec::with_capacity(wanted.len());
    for (name, partitions) in wanted {
        let Ok(offsets) = routing::topic_offsets(shard, &name).await else {
            continue;
        };
        let described = offsets
            .iter()
            .filter(|p| {
                let index = i32::try_from(p.partition).unwrap_or(i32::MAX);
                partitions.as_ref().is_none_or(|w| w.contains(&index))
            })
            .map(|p| {
                DescribeLogDirsPartition::default()
                    .with_partition_index(i32::try_from(p.partition).unwrap_or(i32::MAX))
                    .with_partition_size(i64::try_from(p.size_bytes).unwrap_or(i64::MAX))
            })
            .collect();
        topics.push(
            DescribeLogDirsTopic::default()
                .with_name(TopicName(str_bytes(name)))
                .with_partitions(described),
        );
    }
    let result = DescribeLogDirsResult::default()
        .with_log_dir(str_bytes(shard.data_dir.display().to_string()))
        .with_topics(topics)
        .with_total_bytes(-1)
        .with_usable_bytes(-1);
    respond(
        request,
        &DescribeLogDirsResponse::default().with_results(vec![result]),
    )
}
