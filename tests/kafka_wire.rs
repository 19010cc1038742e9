//! The Kafka front door spoken directly with the `kafka-protocol` crate against an in-process
//! server (real files, loopback TCP, 2 shards): ApiVersions, Metadata, CreateTopics,
//! DeleteTopics, DescribeConfigs, InitProducerId, Produce, Fetch, ListOffsets, the error codes
//! clients act on, response order, and records crossing between the two protocols.

use std::io::Write;
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::{
    ApiVersionsRequest, ApiVersionsResponse, CreateTopicsRequest, DeleteTopicsRequest,
    DescribeConfigsRequest, FetchRequest, FetchResponse, InitProducerIdRequest, MetadataRequest,
    ResponseHeader, SaslHandshakeRequest, SaslHandshakeResponse,
};
use kafka_protocol::protocol::{Decodable, StrBytes};
use kafka_protocol::records::{Compression, RecordBatchDecoder};
use ringlog_engine::batch::{self, BatchBuilder};
use ringlog_net::client::{
    Consumer, ConsumerConfig, Producer, ProducerConfig, ProducerRecord, SeekTo,
};
use ringlog_net::server::{Server, ServerConfig};

mod common;
mod kafka_support;

use common::await_remote_waits;

use kafka_support::{fetch_request, produce_request, topic_name, TestServer};

const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
const OFFSET_OUT_OF_RANGE: i16 = 1;
const CORRUPT_MESSAGE: i16 = 2;
const INVALID_RECORD: i16 = 87;
const INVALID_TIMESTAMP: i16 = 32;
const MESSAGE_TOO_LARGE: i16 = 10;
const INVALID_REQUIRED_ACKS: i16 = 21;
const UNSUPPORTED_VERSION: i16 = 35;
const INVALID_REQUEST: i16 = 42;
const TOPIC_ALREADY_EXISTS: i16 = 36;
const INVALID_REPLICATION_FACTOR: i16 = 38;
const INVALID_TOPIC_EXCEPTION: i16 = 17;
const INVALID_CONFIG: i16 = 40;

/// One uncompressed batch of `values`, timestamped `timestamp_ms`.
fn batch_of(values: &[&str], timestamp_ms: i64) -> Bytes {
    let mut builder = BatchBuilder::new(Vec::new(), timestamp_ms);
    for value in values {
        builder
            .push(timestamp_ms, Some(b"k"), Some(value.as_bytes()), &[])
            .unwrap();
    }
    Bytes::copy_from_slice(builder.finish())
}

/// One gzip-compressed batch of `values`, as a Kafka client sends it: the header in the clear,
/// the records compressed, attributes saying gzip, the CRC over the compressed bytes.
fn gzip_batch(values: &[&str]) -> Bytes {
    let plain = batch_of(values, 1_700_000_000_000);
    let header = batch::BatchHeader::parse(&plain).unwrap();
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder
        .write_all(&plain[batch::BATCH_HEADER_BYTES..])
        .unwrap();
    let records = encoder.finish().unwrap();
    let compressed = batch::BatchHeader {
        attributes: header.attributes | 1,
        batch_length: (batch::BATCH_HEADER_BYTES - batch::BATCH_OVERHEAD_BYTES + records.len())
            as i32,
        ..header
    };
    let mut out = compressed.to_bytes().to_vec();
    out.extend_from_slice(&records);
    let crc = batch::crc_of(&out);
    out[17..21].copy_from_slice(&crc.to_be_bytes());
    Bytes::from(out)
}

/// Values of every record in `batches` (uncompressed), with their offsets.
fn values_of(batches: &[u8]) -> Vec<(i64, String)> {
    let mut out = Vec::new();
    for item in batch::BatchIter::new(batches) {
        let (header, bytes) = item.unwrap();
        for record in batch::records(bytes).unwrap() {
            let record = record.unwrap();
            let value = String::from_utf8(record.value.unwrap().to_vec()).unwrap();
            out.push((record.offset(header.base_offset), value));
        }
    }
    out
}

fn records_of(response: &FetchResponse) -> Bytes {
    response.responses[0].partitions[0]
        .records
        .clone()
        .unwrap_or_default()
}

#[test]
fn api_versions_advertise_what_is_served() {
    let server = TestServer::start();
    let mut kafka = server.kafka();
    for version in [0, 3] {
        let request = ApiVersionsRequest::default()
            .with_client_software_name(StrBytes::from_static_str("test"))
            .with_client_software_version(StrBytes::from_static_str("1"));
        let response = kafka.call(version, &request);
        assert_eq!(response.error_code, 0);
        let produce = response.api_keys.iter().find(|k| k.api_key == 0).unwrap();
        assert_eq!((produce.min_version, produce.max_version), (3, 11));
        let fetch = response.api_keys.iter().find(|k| k.api_key == 1).unwrap();
        assert_eq!((fetch.min_version, fetch.max_version), (4, 12));
        assert!(
            response.api_keys.iter().any(|k| k.api_key == 18),
            "ApiVersions itself"
        );
        assert!(
            !response.api_keys.iter().any(|k| k.api_key == 17),
            "no SASL"
        );
    }
    // A version from the future: UNSUPPORTED_VERSION in v0, with the versions that are served.
    let correlation_id = kafka.send_raw(18, 99, |_| {});
    let mut frame = kafka.read_frame().unwrap();
    let header = ResponseHeader::decode(&mut frame, 0).unwrap();
    assert_eq!(header.correlation_id, correlation_id);
    let response = ApiVersionsResponse::decode(&mut frame, 0).unwrap();
    assert_eq!(response.error_code, UNSUPPORTED_VERSION);
    assert!(response.api_keys.iter().any(|k| k.api_key == 3));
}

#[test]
fn unsupported_apis_get_unsupported_version_or_a_closed_connection() {
    let server = TestServer::start();
    let mut kafka = server.kafka();
    let request =
        SaslHandshakeRequest::default().with_mechanism(StrBytes::from_static_str("PLAIN"));
    let correlation_id = kafka.send(1, &request);
    let response: SaslHandshakeResponse = kafka.receive::<SaslHandshakeRequest>(1, correlation_id);
    assert_eq!(response.error_code, UNSUPPORTED_VERSION);
    // DescribeAcls (29) has no error to give at this level: the connection closes.
    kafka.send_raw(29, 1, |buf| buf.extend_from_slice(&[0; 16]));
    assert!(kafka.read_frame().is_none(), "connection closed");
}

/// Array counts are read off the wire; a request claiming billions of elements in a few
/// bytes is refused like any truncated request (the connection closes), and nothing else
/// happens: the decoder once reserved memory by the count, and the failed allocation aborted
/// the whole server.
#[test]
fn arrays_claiming_billions_of_elements_only_close_their_connection() {
    let server = TestServer::start();
    let requests: [(i16, i16, &[u8]); 3] = [
        // Metadata v0: topics, i32::MAX of them.
        (3, 0, &[0x7f, 0xff, 0xff, 0xff]),
        // Produce v3: no transactional id, acks 1, timeout 30 s, topic_data of i32::MAX.
        (
            0,
            3,
            &[0xff, 0xff, 0, 1, 0, 0, 0x75, 0x30, 0x7f, 0xff, 0xff, 0xff],
        ),
        // Metadata v12 (flexible): a compact array of 2^32 - 2 topics.
        (3, 12, &[0xff, 0xff, 0xff, 0xff, 0x0f, 0, 0, 0]),
    ];
    for (api_key, version, body) in requests {
        let mut kafka = server.kafka();
        kafka.send_raw(api_key, version, |buf| buf.extend_from_slice(body));
        assert!(
            kafka.read_frame().is_none(),
            "api {api_key} v{version}: connection closed"
        );
    }
    // Every shard still serves.
    for _ in 0..4 {
        let mut kafka = server.kafka();
        let response = kafka.call(0, &MetadataRequest::default());
        assert_eq!(response.brokers.len(), 1);
    }
}

#[test]
fn metadata_describes_one_broker_leading_every_partition() {
    let server = TestServer::start();
    let mut kafka = server.kafka();
    assert_eq!(kafka.create_topic("meta", 3, &[]), 0);
    for version in [1, 4, 9, 12] {
        let request = MetadataRequest::default()
            .with_topics(Some(vec![
                MetadataRequestTopic::default().with_name(Some(topic_name("meta"))),
                MetadataRequestTopic::default().with_name(Some(topic_name("absent"))),
            ]))
            // Version 4 and later may say so; ringlog never creates topics on demand.
            .with_allow_auto_topic_creation(version < 4);
        let response = kafka.call(version, &request);
        assert_eq!(response.brokers.len(), 1);
        assert_eq!(response.brokers[0].node_id.0, 0);
        assert_eq!(
            response.brokers[0].port,
            i32::from(server.kafka_addr().port())
        );
        assert_eq!(response.brokers[0].host.as_str(), "127.0.0.1");
        let meta = &response.topics[0];
        assert_eq!(meta.error_code, 0);
        assert_eq!(meta.partitions.len(), 3);
        for (index, partition) in meta.partitions.iter().enumerate() {
            assert_eq!(partition.partition_index, index as i32);
            assert_eq!(partition.leader_id.0, 0);
            assert_eq!(partition.replica_nodes.len(), 1);
        }
        assert_eq!(response.topics[1].error_code, UNKNOWN_TOPIC_OR_PARTITION);
    }
    // Null topics: every topic. Version 0 says "every topic" with an empty list.
    let all = kafka.call(12, &MetadataRequest::default().with_topics(None));
    assert_eq!(all.topics.len(), 1);
    let all = kafka.call(0, &MetadataRequest::default().with_topics(Some(vec![])));
    assert_eq!(all.topics.len(), 1);
}

/// The id of `topic` in a Metadata v12 answer (nil when unknown).
fn topic_id_of(kafka: &mut kafka_support::Kafka, topic: &str) -> (i16, uuid::Uuid) {
    let request = MetadataRequest::default().with_topics(Some(vec![
        MetadataRequestTopic::default().with_name(Some(topic_name(topic))),
    ]));
    let response = kafka.call(12, &request);
    (response.topics[0].error_code, response.topics[0].topic_id)
}

/// Topics have ids (Kafka's UUIDs), kept across restarts and new for a topic created again:
/// Metadata shows them from version 10 and finds a topic by id; DeleteTopics deletes by id.
#[test]
fn topics_have_ids_that_name_them() {
    use kafka_protocol::messages::delete_topics_request::DeleteTopicState;
    let server = TestServer::start();
    let mut kafka = server.kafka();
    assert_eq!(kafka.create_topic("ids", 2, &[]), 0);
    let (code, id) = topic_id_of(&mut kafka, "ids");
    assert_eq!(code, 0);
    assert!(!id.is_nil());
    let server = server.restart();
    let mut kafka = server.kafka();
    assert_eq!(
        topic_id_of(&mut kafka, "ids"),
        (0, id),
        "kept across a restart"
    );
    // By id alone (name null).
    let by_id = MetadataRequest::default().with_topics(Some(vec![
        MetadataRequestTopic::default().with_topic_id(id),
        MetadataRequestTopic::default().with_topic_id(uuid::Uuid::from_u128(7)),
    ]));
    let response = kafka.call(12, &by_id);
    assert_eq!(response.topics[0].error_code, 0);
    assert_eq!(
        response.topics[0].name.as_ref().map(|n| n.0.as_str()),
        Some("ids")
    );
    assert_eq!(response.topics[0].partitions.len(), 2);
    assert_eq!(response.topics[1].error_code, 100, "UNKNOWN_TOPIC_ID");
    // DeleteTopics v6 by id.
    let delete = DeleteTopicsRequest::default()
        .with_topics(vec![DeleteTopicState::default().with_topic_id(id)])
        .with_timeout_ms(10_000);
    let deleted = kafka.call(6, &delete);
    assert_eq!(deleted.responses[0].error_code, 0);
    assert_eq!(
        deleted.responses[0].name.as_ref().map(|n| n.0.as_str()),
        Some("ids")
    );
    assert_eq!(deleted.responses[0].topic_id, id);
    assert_eq!(topic_id_of(&mut kafka, "ids").0, UNKNOWN_TOPIC_OR_PARTITION);
    assert_eq!(kafka.create_topic("ids", 1, &[]), 0);
    let (_, again) = topic_id_of(&mut kafka, "ids");
    assert!(!again.is_nil());
    assert_ne!(again, id, "a topic created again is another topic");
}

#[test]
fn topics_are_created_described_and_deleted() {
    let server = TestServer::start();
    let mut kafka = server.kafka();
    assert_eq!(
        kafka.create_topic("made", 2, &[("retention.ms", "60000")]),
        0
    );
    assert_eq!(kafka.create_topic("made", 2, &[]), TOPIC_ALREADY_EXISTS);
    assert_eq!(
        kafka.create_topic("bad/name", 1, &[]),
        INVALID_TOPIC_EXCEPTION
    );
    assert_eq!(
        kafka.create_topic("odd", 1, &[("cleanup.policy", "compact")]),
        INVALID_CONFIG
    );
    let replicated = CreatableTopic::default()
        .with_name(topic_name("replicated"))
        .with_num_partitions(1)
        .with_replication_factor(3);
    let response = kafka.call(
        5,
        &CreateTopicsRequest::default().with_topics(vec![replicated]),
    );
    assert_eq!(response.topics[0].error_code, INVALID_REPLICATION_FACTOR);

    let describe =
        DescribeConfigsRequest::default().with_resources(vec![DescribeConfigsResource::default()
            .with_resource_type(2)
            .with_resource_name(StrBytes::from_static_str("made"))
            .with_configuration_keys(None)]);
    let described = kafka.call(4, &describe);
    let configs = &described.results[0].configs;
    let retention = configs
        .iter()
        .find(|c| c.name.as_str() == "retention.ms")
        .unwrap();
    assert_eq!(retention.value.as_deref(), Some("60000"));

    // The native protocol sees the same catalog.
    let mut native = ringlog_net::client::Client::connect(server.handle.local_addr()).unwrap();
    assert_eq!(native.partition_count("made").unwrap(), 2);

    let delete = DeleteTopicsRequest::default()
        .with_topic_names(vec![topic_name("made"), topic_name("never")])
        .with_timeout_ms(10_000);
    let deleted = kafka.call(4, &delete);
    assert_eq!(deleted.responses[0].error_code, 0);
    assert_eq!(deleted.responses[1].error_code, UNKNOWN_TOPIC_OR_PARTITION);
    assert_eq!(
        kafka.create_topic("made", 1, &[]),
        0,
        "the name is free again"
    );
}

/// One IncrementalAlterConfigs of topic `name`: (setting, operation, value); the error code.
fn alter_topic_configs(
    kafka: &mut kafka_support::Kafka,
    name: &str,
    settings: &[(&str, i8, Option<&str>)],
    validate_only: bool,
) -> i16 {
    use kafka_protocol::messages::incremental_alter_configs_request::{
        AlterConfigsResource, AlterableConfig,
    };
    use kafka_protocol::messages::IncrementalAlterConfigsRequest;
    let configs = settings
        .iter()
        .map(|&(setting, operation, value)| {
            AlterableConfig::default()
                .with_name(StrBytes::from_string(setting.to_owned()))
                .with_config_operation(operation)
                .with_value(value.map(|v| StrBytes::from_string(v.to_owned())))
        })
        .collect();
    let resource = AlterConfigsResource::default()
        .with_resource_type(2)
        .with_resource_name(StrBytes::from_string(name.to_owned()))
        .with_configs(configs);
    let request = IncrementalAlterConfigsRequest::default()
        .with_resources(vec![resource])
        .with_validate_only(validate_only);
    kafka.call(1, &request).responses[0].error_code
}

/// The value DescribeConfigs gives for topic `name`'s `setting`.
fn topic_setting(kafka: &mut kafka_support::Kafka, name: &str, setting: &str) -> String {
    described_setting(kafka, name, setting).0
}

/// DescribeConfigs of topic `name`'s `setting`: (value, read only).
fn described_setting(
    kafka: &mut kafka_support::Kafka,
    name: &str,
    setting: &str,
) -> (String, bool) {
    let describe =
        DescribeConfigsRequest::default().with_resources(vec![DescribeConfigsResource::default()
            .with_resource_type(2)
            .with_resource_name(StrBytes::from_string(name.to_owned()))
            .with_configuration_keys(None)]);
    let described = kafka.call(4, &describe);
    let config = described.results[0]
        .configs
        .iter()
        .find(|c| c.name.as_str() == setting)
        .unwrap_or_else(|| panic!("{setting} described"));
    let value = config.value.as_deref().unwrap_or_default().to_owned();
    (value, config.read_only)
}

/// A CreatePartitions request growing `name` to `count` partitions.
fn grow_request(name: &str, count: i32) -> kafka_protocol::messages::CreatePartitionsRequest {
    use kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic;
    let topic = CreatePartitionsTopic::default()
        .with_name(topic_name(name))
        .with_count(count);
    kafka_protocol::messages::CreatePartitionsRequest::default()
        .with_topics(vec![topic])
        .with_timeout_ms(10_000)
}

#[test]
fn create_partitions_adds_partitions_that_take_records() {
    const INVALID_PARTITIONS: i16 = 37;
    let server = TestServer::start();
    let mut kafka = server.kafka();
    assert_eq!(kafka.create_topic("wider", 2, &[]), 0);
    let validate = grow_request("wider", 4).with_validate_only(true);
    assert_eq!(kafka.call(3, &validate).results[0].error_code, 0);
    let mut native = ringlog_net::client::Client::connect(server.handle.local_addr()).unwrap();
    assert_eq!(native.partition_count("wider").unwrap(), 2, "validate only");
    assert_eq!(
        kafka.call(3, &grow_request("wider", 4)).results[0].error_code,
        0
    );
    assert_eq!(native.partition_count("wider").unwrap(), 4);
    let (code, base) = kafka.produce(9, -1, "wider", 3, batch_of(&["new"], 1_000));
    assert_eq!((code, base), (0, 0));
    let fetched = kafka.fetch(12, "wider", 3, 0, 0);
    assert_eq!(values_of(&records_of(&fetched)), [(0, "new".to_owned())]);
    for count in [4, 3, 0] {
        let response = kafka.call(3, &grow_request("wider", count));
        assert_eq!(
            response.results[0].error_code, INVALID_PARTITIONS,
            "{count}"
        );
    }
    let response = kafka.call(3, &grow_request("never", 9));
    assert_eq!(response.results[0].error_code, UNKNOWN_TOPIC_OR_PARTITION);
}

#[test]
fn retention_changes_through_incremental_alter_configs() {
    const SET: i8 = 0;
    const DELETE: i8 = 1;
    let server = TestServer::start();
    let mut kafka = server.kafka();
    assert_eq!(
        kafka.create_topic("aged", 1, &[("retention.ms", "60000")]),
        0
    );
    let settings = [
        ("retention.bytes", SET, Some("1048576")),
        ("retention.ms", DELETE, None),
    ];
    assert_eq!(alter_topic_configs(&mut kafka, "aged", &settings, true), 0);
    assert_eq!(topic_setting(&mut kafka, "aged", "retention.ms"), "60000");
    assert_eq!(alter_topic_configs(&mut kafka, "aged", &settings, false), 0);
    assert_eq!(topic_setting(&mut kafka, "aged", "retention.ms"), "-1");
    assert_eq!(
        topic_setting(&mut kafka, "aged", "retention.bytes"),
        "1048576"
    );
    // The native protocol sees the change.
    let mut native = ringlog_net::client::Client::connect(server.handle.local_addr()).unwrap();
    let topics = native.list_topics().unwrap();
    let aged = topics.iter().find(|t| t.name == "aged").unwrap();
    assert_eq!((aged.retention_ms, aged.retention_bytes), (-1, 1 << 20));

    let refused = [
        ("segment.bytes", SET, Some("2097152")),
        ("retention.ms", SET, Some("soon")),
        ("retention.ms", SET, Some("0")),
        ("retention.ms", 2, Some("1")),
    ];
    for setting in refused {
        let code = alter_topic_configs(&mut kafka, "aged", &[setting], false);
        assert_eq!(code, INVALID_CONFIG, "{setting:?}");
    }
    let settings = [("retention.ms", SET, Some("1000"))];
    let code = alter_topic_configs(&mut kafka, "never", &settings, false);
    assert_eq!(code, UNKNOWN_TOPIC_OR_PARTITION);
    assert_eq!(topic_setting(&mut kafka, "aged", "retention.ms"), "-1");
    // DescribeConfigs says which settings an alter may change: segment.bytes, refused above,
    // is read only (it said writable before).
    for (setting, read_only) in [
        ("retention.ms", false),
        ("retention.bytes", false),
        ("segment.bytes", true),
        ("max.message.bytes", true),
    ] {
        let (_, described) = described_setting(&mut kafka, "aged", setting);
        assert_eq!(described, read_only, "{setting}");
    }
}

/// AlterConfigs, the whole-set form (kafka-python's `alter_configs`): the topic's settings
/// become those given, the retention setting left out back to its default; settings ringlog
/// fixes only at their values.
#[test]
fn alter_configs_sets_the_whole_set_of_a_topic() {
    use kafka_protocol::messages::alter_configs_request::{AlterConfigsResource, AlterableConfig};
    use kafka_protocol::messages::AlterConfigsRequest;
    let alter = |kafka: &mut kafka_support::Kafka, settings: &[(&str, &str)], validate_only| {
        let configs = settings
            .iter()
            .map(|&(name, value)| {
                AlterableConfig::default()
                    .with_name(StrBytes::from_string(name.to_owned()))
                    .with_value(Some(StrBytes::from_string(value.to_owned())))
            })
            .collect();
        let resource = AlterConfigsResource::default()
            .with_resource_type(2)
            .with_resource_name(StrBytes::from_static_str("whole"))
            .with_configs(configs);
        let request = AlterConfigsRequest::default()
            .with_resources(vec![resource])
            .with_validate_only(validate_only);
        kafka.call(2, &request).responses[0].error_code
    };
    let server = TestServer::start();
    let mut kafka = server.kafka();
    assert_eq!(
        kafka.create_topic("whole", 1, &[("retention.ms", "60000")]),
        0
    );
    let segment = topic_setting(&mut kafka, "whole", "segment.bytes");
    assert_eq!(
        alter(&mut kafka, &[("retention.bytes", "1048576")], true),
        0
    );
    assert_eq!(topic_setting(&mut kafka, "whole", "retention.ms"), "60000");
    let kept = [("retention.bytes", "1048576"), ("cleanup.policy", "delete")];
    assert_eq!(alter(&mut kafka, &kept, false), 0);
    assert_eq!(topic_setting(&mut kafka, "whole", "retention.ms"), "-1");
    assert_eq!(
        topic_setting(&mut kafka, "whole", "retention.bytes"),
        "1048576"
    );
    let own = [
        ("retention.ms", "5000"),
        ("segment.bytes", segment.as_str()),
    ];
    assert_eq!(alter(&mut kafka, &own, false), 0);
    assert_eq!(topic_setting(&mut kafka, "whole", "retention.ms"), "5000");
    assert_eq!(topic_setting(&mut kafka, "whole", "retention.bytes"), "-1");
    for setting in [
        ("segment.bytes", "1024"),
        ("cleanup.policy", "compact"),
        ("max.compaction.lag.ms", "5"),
    ] {
        assert_eq!(
            alter(&mut kafka, &[setting], false),
            INVALID_CONFIG,
            "{setting:?}"
        );
    }
    assert_eq!(topic_setting(&mut kafka, "whole", "retention.ms"), "5000");
}

#[test]
fn produce_and_fetch_round_trip_on_both_shards() {
    let server = TestServer::start();
    let mut kafka = server.kafka();
    assert_eq!(kafka.create_topic("rt", 4, &[]), 0);
    for partition in 0..4 {
        // Flexible (v9) and classic (v3) produce; offsets continue across batches.
        let (code, base) = kafka.produce(9, -1, "rt", partition, batch_of(&["a", "b", "c"], 1_000));
        assert_eq!((code, base), (0, 0));
        let (code, base) = kafka.produce(3, 1, "rt", partition, batch_of(&["d", "e"], 2_000));
        assert_eq!((code, base), (0, 3));
        for version in [4, 11, 12] {
            let response = kafka.fetch(version, "rt", partition, 0, 0);
            let data = &response.responses[0].partitions[0];
            assert_eq!(data.error_code, 0);
            assert_eq!(data.high_watermark, 5);
            assert_eq!(data.last_stable_offset, 5);
            let values = values_of(&records_of(&response));
            let expected: Vec<(i64, String)> = ["a", "b", "c", "d", "e"]
                .iter()
                .enumerate()
                .map(|(i, v)| (i as i64, v.to_string()))
                .collect();
            assert_eq!(values, expected, "partition {partition} v{version}");
        }
        // From the middle of a batch: the whole batch comes back, as from Kafka.
        let response = kafka.fetch(12, "rt", partition, 4, 0);
        assert_eq!(
            values_of(&records_of(&response)).first().map(|v| v.0),
            Some(3)
        );
    }
}

/// A produce answer carries the partition's log start offset (from produce v5), as Kafka's
/// does, not -1.
#[test]
fn produce_answers_carry_the_log_start_offset() {
    let server = TestServer::start();
    let mut kafka = server.kafka();
    assert_eq!(kafka.create_topic("start", 1, &[]), 0);
    for expected_base in [0, 1] {
        let answer = kafka.produce_partition(9, -1, "start", 0, batch_of(&["v"], 1_000));
        assert_eq!(
            (
                answer.error_code,
                answer.base_offset,
                answer.log_start_offset
            ),
            (0, expected_base, 0)
        );
    }
}

/// Fetch versions before 10 predate zstd: a partition holding a zstd batch answers
/// UNSUPPORTED_COMPRESSION_TYPE there, as from Kafka, and its records from version 10 on.
#[test]
fn zstd_batches_are_refused_to_fetch_versions_before_10() {
    const UNSUPPORTED_COMPRESSION_TYPE: i16 = 76;
    const ZSTD: i16 = 4;
    let server = TestServer::start();
    let mut kafka = server.kafka();
    assert_eq!(kafka.create_topic("zs", 2, &[]), 0);
    // The server stores compressed records as sent without decoding them: a gzip batch
    // relabelled zstd is as good as a real one here.
    let mut zstd = gzip_batch(&["one", "two"]).to_vec();
    let attributes = i16::from_be_bytes([zstd[21], zstd[22]]) & !0x07 | ZSTD;
    zstd[21..23].copy_from_slice(&attributes.to_be_bytes());
    let crc = batch::crc_of(&zstd);
    zstd[17..21].copy_from_slice(&crc.to_be_bytes());
    assert_eq!(kafka.produce(9, -1, "zs", 0, Bytes::from(zstd)).0, 0);
    assert_eq!(kafka.produce(9, -1, "zs", 1, gzip_batch(&["three"])).0, 0);
    let old = kafka.fetch(9, "zs", 0, 0, 0);
    assert_eq!(
        old.responses[0].partitions[0].error_code,
        UNSUPPORTED_COMPRESSION_TYPE
    );
    assert!(records_of(&old).is_empty());
    let new = kafka.fetch(10, "zs", 0, 0, 0);
    assert_eq!(new.responses[0].partitions[0].error_code, 0);
    assert!(!records_of(&new).is_empty());
    // Other codecs are served to the older versions as before.
    let gzip = kafka.fetch(9, "zs", 1, 0, 0);
    assert_eq!(gzip.responses[0].partitions[0].error_code, 0);
    assert!(!records_of(&gzip).is_empty());
}

#[test]
fn compressed_batches_are_stored_and_served_as_sent() {
    let server = TestServer::start();
    let mut kafka = server.kafka();
    assert_eq!(kafka.create_topic("gz", 1, &[]), 0);
    let sent = gzip_batch(&["one", "two", "three"]);
    assert_eq!(kafka.produce(9, -1, "gz", 0, sent.clone()).0, 0);
    assert_eq!(
        kafka.produce(9, -1, "gz", 0, sent.clone()),
        (0, 3),
        "3 records counted from the header"
    );
    let served = records_of(&kafka.fetch(12, "gz", 0, 0, 0));
    // Byte for byte what was sent, but for the base offset the broker stamps.
    assert_eq!(served.len(), 2 * sent.len());
    assert_eq!(served[8..sent.len()], sent[8..]);
    assert_eq!(served[sent.len() + 8..], sent[8..]);
    let second = batch::BatchHeader::parse(&served[sent.len()..]).unwrap();
    assert_eq!((second.base_offset, second.records_count), (3, 3));
    // A client decompresses what it fetched.
    let first = RecordBatchDecoder::decode(&mut served.slice(..sent.len())).unwrap();
    assert_eq!(first.compression, Compression::Gzip);
    let values: Vec<&[u8]> = first
        .records
        .iter()
        .map(|r| r.value.as_deref().unwrap())
        .collect();
    assert_eq!(values, [&b"one"[..], b"two", b"three"]);
}

#[test]
fn list_offsets_earliest_latest_and_by_timestamp() {
    let server = TestServer::start();
    let mut kafka = server.kafka();
    assert_eq!(kafka.create_topic("times", 2, &[]), 0);
    for partition in 0..2 {
        for (round, base_ms) in [10_000i64, 20_000, 30_000].iter().enumerate() {
            let (code, base) =
                kafka.produce(9, -1, "times", partition, batch_of(&["x", "y"], *base_ms));
            assert_eq!((code, base), (0, 2 * round as i64));
        }
        // Earliest and latest have no timestamp (-1), as from Kafka.
        assert_eq!(
            kafka.list_offset_with_timestamp("times", partition, -2),
            (0, 0, -1)
        );
        assert_eq!(
            kafka.list_offset_with_timestamp("times", partition, -1),
            (0, 6, -1)
        );
        // By timestamp: the batch found and its timestamp. The Java consumer's
        // offsetsForTimes refuses a found offset with a negative timestamp.
        assert_eq!(
            kafka.list_offset_with_timestamp("times", partition, 20_000),
            (0, 2, 20_000)
        );
        assert_eq!(
            kafka.list_offset_with_timestamp("times", partition, 25_000),
            (0, 4, 30_000)
        );
        assert_eq!(
            kafka.list_offset_with_timestamp("times", partition, 0),
            (0, 0, 10_000)
        );
        assert_eq!(
            kafka.list_offset_with_timestamp("times", partition, 99_000),
            (0, -1, -1),
            "none that late: offset and timestamp unknown, as from Kafka"
        );
    }
    // Within a batch: the first record at or after the time, with its own timestamp, as
    // Kafka's broker answers (not the batch's first record, stamped earlier).
    let mut builder = BatchBuilder::new(Vec::new(), 40_000);
    for (stamp_ms, value) in [(40_000, "a"), (40_010, "b"), (40_020, "c")] {
        builder
            .push(stamp_ms, None, Some(value.as_bytes()), &[])
            .unwrap();
    }
    let spread = Bytes::copy_from_slice(builder.finish());
    assert_eq!(kafka.produce(9, -1, "times", 0, spread), (0, 6));
    assert_eq!(
        kafka.list_offset_with_timestamp("times", 0, 40_005),
        (0, 7, 40_010)
    );
    assert_eq!(
        kafka.list_offset_with_timestamp("times", 0, 40_020),
        (0, 8, 40_020)
    );
    assert_eq!(
        kafka.list_offset_with_timestamp("times", 0, 35_000),
        (0, 6, 40_000)
    );
    assert_eq!(
        kafka.list_offset("times", 7, -1).0,
        UNKNOWN_TOPIC_OR_PARTITION
    );
    assert_eq!(
        kafka.list_offset("nowhere", 0, -1).0,
        UNKNOWN_TOPIC_OR_PARTITION
    );
}

#[test]
fn errors_map_to_kafka_codes() {
    let server = TestServer::start();
    let mut kafka = server.kafka();
    assert_eq!(
        kafka.create_topic("errs", 2, &[("segment.bytes", "1048576")]),
        0
    );
    let good = batch_of(&["v"], 1_000);
    assert_eq!(
        kafka.produce(9, -1, "nowhere", 0, good.clone()).0,
        UNKNOWN_TOPIC_OR_PARTITION
    );
    assert_eq!(
        kafka.produce(9, -1, "errs", 9, good.clone()).0,
        UNKNOWN_TOPIC_OR_PARTITION
    );
    assert_eq!(
        kafka.produce(9, 2, "errs", 0, good.clone()).0,
        INVALID_REQUIRED_ACKS
    );
    let mut corrupt = good.to_vec();
    let last = corrupt.len() - 1;
    corrupt[last] ^= 0xff;
    assert_eq!(
        kafka.produce(9, -1, "errs", 0, Bytes::from(corrupt)).0,
        CORRUPT_MESSAGE
    );
    // A whole batch with a right CRC but a header claiming more records than its bytes hold,
    // and a control batch (transaction markers are the broker's): INVALID_RECORD, which
    // clients do not retry.
    for (attributes, last_offset_delta) in [(0i16, 1_000i32), (0x20, 0)] {
        let mut claiming = good.to_vec();
        claiming[21..23].copy_from_slice(&attributes.to_be_bytes());
        claiming[23..27].copy_from_slice(&last_offset_delta.to_be_bytes());
        claiming[57..61].copy_from_slice(&(last_offset_delta + 1).to_be_bytes());
        let crc = batch::crc_of(&claiming);
        claiming[17..21].copy_from_slice(&crc.to_be_bytes());
        assert_eq!(
            kafka.produce(9, -1, "errs", 0, Bytes::from(claiming)).0,
            INVALID_RECORD,
            "attributes {attributes:#x}, last offset delta {last_offset_delta}"
        );
    }
    let big = "x".repeat(1_200_000);
    assert_eq!(
        kafka.produce(9, -1, "errs", 1, batch_of(&[&big], 1_000)).0,
        MESSAGE_TOO_LARGE
    );
    // Stamped a day ahead of the server's clock (Kafka 4.0 allows an hour by default).
    let day_ahead_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
        + 24 * 3_600_000;
    assert_eq!(
        kafka
            .produce(9, -1, "errs", 1, batch_of(&["v"], day_ahead_ms))
            .0,
        INVALID_TIMESTAMP
    );
    // Nothing was written by the refused requests.
    assert_eq!(kafka.list_offset("errs", 0, -1), (0, 0));
    assert_eq!(kafka.list_offset("errs", 1, -1), (0, 0));
    assert_eq!(kafka.produce(9, -1, "errs", 0, good).0, 0);
    let fetched = kafka.fetch(12, "errs", 0, 5, 0);
    assert_eq!(
        fetched.responses[0].partitions[0].error_code,
        OFFSET_OUT_OF_RANGE
    );
    let fetched = kafka.fetch(12, "nowhere", 0, 0, 0);
    assert_eq!(
        fetched.responses[0].partitions[0].error_code,
        UNKNOWN_TOPIC_OR_PARTITION
    );
}

/// A fetch waits out max_wait when nothing arrives, and data produced while it waits answers
/// it long before, through the wake of the partition's owner: the connection's own shard for
/// one partition, the other shard for the other.
///
/// The record must be produced only once the fetch waits: produced first, the fetch finds it
/// on its first read and answers without any wake, so the test passes with wakes broken. A
/// native client learns that the fetch was read by a metadata call on the same connection
/// (answered out of order); a Kafka connection answers in request order, so nothing sent
/// after the fetch on it answers first. What shows the wait instead is the server's
/// `ringlog_shard_remote_waits`: the fetch names both partitions, which the 2 shards own
/// apart, so one is owned by the other shard, which counts the wait it holds for this
/// connection; the server asks for that wait in the same pass as it starts waiting on its
/// own partition (routing::wait_any). Once a scrape counts it, both partitions are waited on.
#[test]
fn fetch_long_polls_until_data_arrives() {
    let server = TestServer::start_with(|config| {
        config.metrics_listen = Some("127.0.0.1:0".parse().unwrap());
    });
    let metrics = server.handle.metrics_addr().unwrap();
    let mut kafka = server.kafka();
    assert_eq!(kafka.create_topic("poll", 2, &[]), 0);
    for partition in 0..2 {
        // Nothing arrives: the fetch waits out max_wait and answers empty.
        let started = Instant::now();
        let response = kafka.fetch(12, "poll", partition, 0, 300);
        assert!(started.elapsed() >= Duration::from_millis(300));
        assert!(records_of(&response).is_empty());
    }
    // One connection for both rounds: its shard owns one partition and not the other, so one
    // round is woken on the connection's shard and the other across shards.
    let mut waiting = server.kafka();
    for partition in 0..2 {
        // The previous round's wait on the other shard is gone (answered or cancelled).
        await_remote_waits(metrics, 0, "a finished fetch still waits on another shard");
        // Both partitions, each from after the records produced to it so far.
        let mut request = fetch_request("poll", 0, 0, 20_000);
        request.topics[0].partitions = (0..2)
            .map(|other| {
                request.topics[0].partitions[0]
                    .clone()
                    .with_partition(other)
                    .with_fetch_offset(i64::from(other < partition))
            })
            .collect();
        let correlation_id = waiting.send(12, &request);
        await_remote_waits(
            metrics,
            1,
            "the fetch never waited on the shard of its other partition",
        );
        // Data arrives while the fetch waits: it answers with it, long before max_wait.
        let started = Instant::now();
        assert_eq!(
            kafka
                .produce(9, 1, "poll", partition, batch_of(&["late"], 1_000))
                .0,
            0
        );
        let response = waiting.receive::<FetchRequest>(12, correlation_id);
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the fetch answered after {:?}, at its max_wait (20 s): the record did not wake it",
            started.elapsed()
        );
        let fetched: Vec<(i32, Vec<(i64, String)>)> = response.responses[0]
            .partitions
            .iter()
            .map(|answer| {
                let records = answer.records.clone().unwrap_or_default();
                (answer.partition_index, values_of(&records))
            })
            .collect();
        let expected: Vec<(i32, Vec<(i64, String)>)> = (0..2)
            .map(|other| {
                let values = if other == partition {
                    vec![(0, "late".to_string())]
                } else {
                    Vec::new()
                };
                (other, values)
            })
            .collect();
        assert_eq!(fetched, expected);
    }
}

#[test]
fn responses_keep_request_order_and_acks_zero_gets_none() {
    let server = TestServer::start();
    let mut kafka = server.kafka();
    assert_eq!(kafka.create_topic("order", 1, &[]), 0);
    // A long poll first, then a quick request: the quick answer waits its turn.
    let slow = kafka.send(12, &fetch_request("order", 0, 0, 400));
    let quick = kafka.send(12, &MetadataRequest::default().with_topics(None));
    let fetched = kafka.receive::<FetchRequest>(12, slow);
    assert!(records_of(&fetched).is_empty());
    assert_eq!(kafka.receive::<MetadataRequest>(12, quick).topics.len(), 1);
    // acks=0: no response at all; the next request's answer is the next frame.
    kafka.send(
        9,
        &produce_request(0, "order", 0, batch_of(&["fire", "forget"], 1_000)),
    );
    let after = kafka.send(12, &MetadataRequest::default().with_topics(None));
    kafka.receive::<MetadataRequest>(12, after);
    let values = values_of(&records_of(&kafka.fetch(12, "order", 0, 0, 5_000)));
    assert_eq!(values.len(), 2);
    // acks=0 refused (here: no such topic): with no response to carry the error, the
    // connection is closed, as Kafka does, so the client notices and refreshes its metadata.
    kafka.send(
        9,
        &produce_request(0, "missing", 0, batch_of(&["lost"], 1_000)),
    );
    kafka.send(12, &MetadataRequest::default().with_topics(None));
    assert!(kafka.read_frame().is_none(), "the connection is closed");
}

#[test]
fn init_producer_id_hands_out_ids_and_bumps_epochs() {
    let server = TestServer::start();
    let mut kafka = server.kafka();
    let request = InitProducerIdRequest::default()
        .with_transactional_id(None)
        .with_transaction_timeout_ms(60_000);
    let first = kafka.call(4, &request);
    let second = kafka.call(2, &request);
    assert_eq!(first.error_code, 0);
    assert!(first.producer_id.0 >= 0);
    assert_eq!(first.producer_epoch, 0);
    assert_ne!(first.producer_id, second.producer_id);
    let bump = kafka.call(
        4,
        &request
            .clone()
            .with_producer_id(first.producer_id)
            .with_producer_epoch(first.producer_epoch),
    );
    assert_eq!(
        (bump.producer_id, bump.producer_epoch),
        (first.producer_id, 1)
    );
}

/// An idempotent batch of `values` of producer `producer_id` (epoch 0) from `sequence` on.
fn idempotent_batch_of(producer_id: i64, sequence: i32, values: &[&str]) -> Bytes {
    let mut builder = BatchBuilder::new(Vec::new(), 1_000);
    builder.set_producer_id(producer_id);
    builder.set_producer_epoch(0);
    builder.set_base_sequence(sequence);
    for value in values {
        builder
            .push(1_000, None, Some(value.as_bytes()), &[])
            .unwrap();
    }
    Bytes::copy_from_slice(builder.finish())
}

/// Java and librdkafka producers count DUPLICATE_SEQUENCE_NUMBER as delivered. A batch from
/// before the partition's first batch of a producer (refused for now, retried after a later
/// one was taken) was never written: it must get OUT_OF_ORDER_SEQUENCE_NUMBER, as from Kafka.
#[test]
fn a_batch_before_the_first_one_taken_is_out_of_order_not_a_duplicate() {
    const OUT_OF_ORDER_SEQUENCE_NUMBER: i16 = 45;
    const DUPLICATE_SEQUENCE_NUMBER: i16 = 46;
    let server = TestServer::start();
    let mut kafka = server.kafka();
    assert_eq!(kafka.create_topic("idem", 1, &[]), 0);
    let init = InitProducerIdRequest::default()
        .with_transactional_id(None)
        .with_transaction_timeout_ms(60_000);
    let producer_id = kafka.call(4, &init).producer_id.0;
    let later = idempotent_batch_of(producer_id, 2, &["c", "d"]);
    assert_eq!(kafka.produce(9, -1, "idem", 0, later.clone()), (0, 0));
    let first = idempotent_batch_of(producer_id, 0, &["a", "b"]);
    let (code, _) = kafka.produce(9, -1, "idem", 0, first);
    assert_ne!(
        code, DUPLICATE_SEQUENCE_NUMBER,
        "a and b were never written"
    );
    assert_eq!(code, OUT_OF_ORDER_SEQUENCE_NUMBER);
    // A retry of the batch that was written is still answered with its offset.
    assert_eq!(kafka.produce(9, -1, "idem", 0, later), (0, 0));
    let values = values_of(&records_of(&kafka.fetch(12, "idem", 0, 0, 0)));
    assert_eq!(values, vec![(0, "c".to_string()), (1, "d".to_string())]);
}

#[test]
fn records_cross_between_the_protocols() {
    let server = TestServer::start();
    let mut kafka = server.kafka();
    assert_eq!(kafka.create_topic("cross", 2, &[]), 0);

    // Kafka in, native out.
    assert_eq!(
        kafka
            .produce(9, -1, "cross", 1, batch_of(&["from-kafka"], 1_000))
            .0,
        0
    );
    let mut consumer =
        Consumer::connect(server.handle.local_addr(), ConsumerConfig::default()).unwrap();
    consumer.assign("cross", &[1]);
    consumer.seek(1, SeekTo::Earliest).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let record = loop {
        assert!(Instant::now() < deadline);
        if let Some(record) = consumer.poll(Duration::from_millis(200)).unwrap().next() {
            break record.unwrap();
        }
    };
    assert_eq!(record.value, Some(&b"from-kafka"[..]));
    assert_eq!(record.offset, 0);

    // Native in, Kafka out.
    let producer = Producer::connect(
        server.handle.local_addr(),
        "cross",
        ProducerConfig::default(),
    )
    .unwrap();
    producer
        .send(&ProducerRecord::new(b"from-native").with_partition(0))
        .unwrap()
        .wait()
        .unwrap();
    producer.close().unwrap();
    let values = values_of(&records_of(&kafka.fetch(12, "cross", 0, 0, 5_000)));
    assert_eq!(values, vec![(0, "from-native".to_string())]);
}

#[test]
fn large_record_sets_are_served_from_storage_in_every_fetch_version() {
    let server = TestServer::start();
    let mut kafka = server.kafka();
    assert_eq!(kafka.create_topic("big", 4, &[]), 0);
    // Partitions 0 and 1 get batches large enough to be sent from where they are stored,
    // 2 and 3 small ones; the partitions live on both shards.
    let large = "L".repeat(100_000);
    for partition in 0..4 {
        let value = if partition < 2 {
            large.as_str()
        } else {
            "small"
        };
        for round in 0..3 {
            let values = [value, &format!("{partition}-{round}")];
            assert_eq!(
                kafka
                    .produce(9, 1, "big", partition, batch_of(&values, 1_000))
                    .0,
                0
            );
        }
    }
    let partitions = (0..4)
        .map(|partition| {
            kafka_protocol::messages::fetch_request::FetchPartition::default()
                .with_partition(partition)
                .with_fetch_offset(0)
                .with_partition_max_bytes(1 << 20)
        })
        .collect();
    let request = FetchRequest::default()
        .with_replica_id((-1).into())
        .with_max_bytes(4 << 20)
        .with_topics(vec![
            kafka_protocol::messages::fetch_request::FetchTopic::default()
                .with_topic(topic_name("big"))
                .with_partitions(partitions),
        ]);
    for version in [4, 7, 11, 12] {
        let response = kafka.call(version, &request);
        let topic = &response.responses[0];
        assert_eq!(topic.partitions.len(), 4);
        for (partition, data) in topic.partitions.iter().enumerate() {
            assert_eq!(
                (data.partition_index, data.error_code, data.high_watermark),
                (partition as i32, 0, 6)
            );
            let values = values_of(data.records.as_ref().unwrap());
            let expected_value = if partition < 2 {
                large.clone()
            } else {
                "small".to_string()
            };
            let expected: Vec<(i64, String)> = (0..3)
                .flat_map(|round| {
                    [
                        (2 * round, expected_value.clone()),
                        (2 * round + 1, format!("{partition}-{round}")),
                    ]
                })
                .collect();
            assert_eq!(values, expected, "partition {partition}, fetch v{version}");
        }
    }
}

#[test]
fn every_advertised_version_answers() {
    use kafka_protocol::messages::delete_topics_request::DeleteTopicState;
    use kafka_protocol::messages::DescribeClusterRequest;

    let server = TestServer::start();
    let mut kafka = server.kafka();
    assert_eq!(kafka.create_topic("versions", 1, &[]), 0);
    for version in 0..=4 {
        let request = ApiVersionsRequest::default();
        assert_eq!(
            kafka.call(version, &request).error_code,
            0,
            "ApiVersions v{version}"
        );
    }
    for version in 0..=12 {
        let topics = vec![MetadataRequestTopic::default().with_name(Some(topic_name("versions")))];
        let response = kafka.call(
            version,
            &MetadataRequest::default().with_topics(Some(topics)),
        );
        assert_eq!(response.topics[0].error_code, 0, "Metadata v{version}");
    }
    for (offset, version) in (3..=11).enumerate() {
        let (code, base) = kafka.produce(version, -1, "versions", 0, batch_of(&["v"], 1_000));
        assert_eq!((code, base), (0, offset as i64), "Produce v{version}");
    }
    for version in 4..=12 {
        let response = kafka.fetch(version, "versions", 0, 0, 0);
        assert_eq!(
            values_of(&records_of(&response)).len(),
            9,
            "Fetch v{version}"
        );
    }
    for version in 1..=6 {
        let request = kafka_protocol::messages::ListOffsetsRequest::default()
            .with_replica_id((-1).into())
            .with_topics(vec![
                kafka_protocol::messages::list_offsets_request::ListOffsetsTopic::default()
                    .with_name(topic_name("versions"))
                    .with_partitions(vec![
                    kafka_protocol::messages::list_offsets_request::ListOffsetsPartition::default()
                        .with_timestamp(-1),
                ]),
            ]);
        let response = kafka.call(version, &request);
        let partition = &response.topics[0].partitions[0];
        assert_eq!(
            (partition.error_code, partition.offset),
            (0, 9),
            "ListOffsets v{version}"
        );
    }
    for version in 2..=7 {
        let name = format!("created-v{version}");
        let topic = CreatableTopic::default()
            .with_name(topic_name(&name))
            .with_num_partitions(1)
            .with_replication_factor(1);
        let response = kafka.call(
            version,
            &CreateTopicsRequest::default().with_topics(vec![topic]),
        );
        assert_eq!(response.topics[0].error_code, 0, "CreateTopics v{version}");
    }
    for version in 0..=3 {
        let response = kafka.call(version, &grow_request("versions", 2 + i32::from(version)));
        assert_eq!(
            response.results[0].error_code, 0,
            "CreatePartitions v{version}"
        );
    }
    for version in 0..=1 {
        use kafka_protocol::messages::incremental_alter_configs_request::AlterConfigsResource;
        use kafka_protocol::messages::IncrementalAlterConfigsRequest;
        let resource = AlterConfigsResource::default()
            .with_resource_type(2)
            .with_resource_name(StrBytes::from_static_str("versions"));
        let request = IncrementalAlterConfigsRequest::default().with_resources(vec![resource]);
        let response = kafka.call(version, &request);
        assert_eq!(
            response.responses[0].error_code, 0,
            "IncrementalAlterConfigs v{version}"
        );
    }
    for version in 1..=6 {
        let name = topic_name(&format!("created-v{}", version + 1));
        let request = if version >= 6 {
            DeleteTopicsRequest::default()
                .with_topics(vec![DeleteTopicState::default().with_name(Some(name))])
        } else {
            DeleteTopicsRequest::default().with_topic_names(vec![name])
        };
        let response = kafka.call(version, &request);
        assert_eq!(
            response.responses[0].error_code, 0,
            "DeleteTopics v{version}"
        );
    }
    for version in 1..=4 {
        let request = DescribeConfigsRequest::default().with_resources(vec![
            DescribeConfigsResource::default()
                .with_resource_type(2)
                .with_resource_name(StrBytes::from_static_str("versions"))
                .with_configuration_keys(None),
        ]);
        let response = kafka.call(version, &request);
        assert_eq!(
            response.results[0].error_code, 0,
            "DescribeConfigs v{version}"
        );
        assert!(!response.results[0].configs.is_empty());
    }
    for version in 0..=1 {
        let response = kafka.call(version, &DescribeClusterRequest::default());
        assert_eq!(
            (response.error_code, response.brokers.len()),
            (0, 1),
            "DescribeCluster v{version}"
        );
    }
    for version in 0..=4 {
        let request = InitProducerIdRequest::default().with_transactional_id(None);
        let response = kafka.call(version, &request);
        assert_eq!(response.error_code, 0, "InitProducerId v{version}");
    }
}

#[test]
fn fetches_walk_batches_across_in_memory_chunk_boundaries() {
    let server = TestServer::start();
    let mut kafka = server.kafka();
    assert_eq!(kafka.create_topic("span", 1, &[]), 0);
    // Three batches of about 700 KB: the second and third each start a new 1 MiB chunk.
    let large = "L".repeat(700_000);
    for round in 0..3 {
        let values = [large.as_str(), &format!("small-{round}")];
        assert_eq!(
            kafka.produce(9, 1, "span", 0, batch_of(&values, 1_000)).0,
            0
        );
    }
    let mut offset = 0;
    let mut seen = Vec::new();
    while offset < 6 {
        let response = kafka.fetch(12, "span", 0, offset, 0);
        let values = values_of(&records_of(&response));
        assert!(!values.is_empty(), "no progress at offset {offset}");
        for (at, value) in values {
            if at >= offset {
                seen.push((at, value.len()));
            }
        }
        offset = seen.last().map_or(offset, |(at, _)| at + 1);
    }
    let expected: Vec<(i64, usize)> = (0..3)
        .flat_map(|round| [(2 * round, 700_000), (2 * round + 1, 7)])
        .collect();
    assert_eq!(seen, expected);
}

#[test]
fn describe_log_dirs_reports_partition_sizes() {
    use kafka_protocol::messages::describe_log_dirs_request::DescribableLogDirTopic;
    use kafka_protocol::messages::DescribeLogDirsRequest;

    let server = TestServer::start();
    let mut kafka = server.kafka();
    assert_eq!(kafka.create_topic("sized", 2, &[]), 0);
    let batch = batch_of(&["a", "b", "c"], 1_000);
    let (code, _) = kafka.produce(9, -1, "sized", 0, batch.clone());
    assert_eq!(code, 0);
    for version in 1..=4 {
        let response = kafka.call(
            version,
            &DescribeLogDirsRequest::default().with_topics(None),
        );
        assert_eq!(response.results.len(), 1, "DescribeLogDirs v{version}");
        let dir = &response.results[0];
        assert_eq!(dir.error_code, 0);
        assert!(!dir.log_dir.is_empty());
        let topic = dir
            .topics
            .iter()
            .find(|t| t.name.0.as_str() == "sized")
            .unwrap();
        let sizes: Vec<(i32, i64)> = topic
            .partitions
            .iter()
            .map(|p| (p.partition_index, p.partition_size))
            .collect();
        assert_eq!(
            sizes,
            [(0, batch.len() as i64), (1, 0)],
            "DescribeLogDirs v{version}"
        );
    }
    let only = vec![
        DescribableLogDirTopic::default()
            .with_topic(topic_name("sized"))
            .with_partitions(vec![0]),
        DescribableLogDirTopic::default()
            .with_topic(topic_name("missing"))
            .with_partitions(vec![0]),
    ];
    let response = kafka.call(
        4,
        &DescribeLogDirsRequest::default().with_topics(Some(only)),
    );
    let topics = &response.results[0].topics;
    assert_eq!(topics.len(), 1, "unknown topics are left out");
    assert_eq!(topics[0].partitions.len(), 1);
    assert_eq!(topics[0].partitions[0].partition_index, 0);
}

/// Whether a new Kafka connection to `addr` is refused (closed without an answer) rather than
/// served.
fn kafka_connection_refused(addr: std::net::SocketAddr) -> bool {
    let Ok(stream) = std::net::TcpStream::connect(addr) else {
        return true;
    };
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut probe = kafka_support::Kafka::from_stream(stream);
    if probe.try_send(3, &ApiVersionsRequest::default()).is_none() {
        return true;
    }
    // Refused connections are closed at once; a served one answers.
    probe.read_frame().is_none()
}

/// A two-shard server taking two connections, at most `requests_in_flight_max` requests of
/// each at once, with a Kafka listener; an admin connection holding one of the two, which
/// made the two-partition topic "quiet".
fn server_of_two_kafka_connections(
    dir: &std::path::Path,
    requests_in_flight_max: usize,
) -> (
    ringlog_net::server::ServerHandle,
    std::net::SocketAddr,
    kafka_support::Kafka,
) {
    let server = Server::start(ServerConfig {
        data_dir: dir.to_path_buf(),
        listen: "127.0.0.1:0".parse().unwrap(),
        kafka_listen: Some("127.0.0.1:0".parse().unwrap()),
        shards: Some(2),
        cache_bytes_per_shard: 8 << 20,
        connections_max: 2,
        requests_in_flight_max,
        ..ServerConfig::default()
    })
    .unwrap();
    let addr = server.kafka_addr().unwrap();
    let mut admin = kafka_support::Kafka::connect(addr);
    assert_eq!(admin.create_topic("quiet", 2, &[]), 0);
    (server, addr, admin)
}

/// Waits until the Kafka listener at `addr` takes a new connection; fails with `what` after
/// 10 s.
fn await_a_free_kafka_connection(addr: std::net::SocketAddr, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while kafka_connection_refused(addr) {
        assert!(Instant::now() < deadline, "{what}");
        std::thread::yield_now();
    }
}

/// A Kafka consumer that closes its connection during a long poll frees it at once, as a
/// native one does: the server cannot tell a client that closed from one that only shut
/// its sending half, and the fetch would otherwise hold a descriptor and a place under
/// `connections_max` for its whole max_wait (here 24 days).
#[test]
fn a_kafka_client_gone_during_a_long_poll_frees_its_connection() {
    let dir = tempfile::tempdir().unwrap();
    let in_flight_max = ServerConfig::default().requests_in_flight_max;
    // The admin holds one of the two connections throughout.
    let (server, addr, mut admin) = server_of_two_kafka_connections(dir.path(), in_flight_max);
    for partition in 0..2 {
        let mut gone = kafka_support::Kafka::connect(addr);
        gone.send(12, &fetch_request("quiet", partition, 0, i32::MAX));
        drop(gone);
        await_a_free_kafka_connection(
            addr,
            "a client gone during a long poll still holds its connection",
        );
    }
    let asked = admin.send(3, &ApiVersionsRequest::default());
    let versions = admin.receive::<ApiVersionsRequest>(3, asked);
    assert_eq!(versions.error_code, 0);
    server.shutdown();
}

/// As `a_kafka_client_gone_during_a_long_poll_frees_its_connection`, but the client pipelines
/// one request more than `requests_in_flight_max` behind the long poll before it goes away:
/// the reader waits for a free slot instead of receiving, never sees the close, and the fetch
/// holds the connection for its whole max_wait.
#[test]
fn a_kafka_client_gone_with_a_request_queued_behind_a_long_poll_frees_its_connection() {
    let dir = tempfile::tempdir().unwrap();
    let (server, addr, mut admin) = server_of_two_kafka_connections(dir.path(), 1);
    let mut gone = kafka_support::Kafka::connect(addr);
    gone.send(12, &fetch_request("quiet", 0, 0, i32::MAX));
    gone.send(3, &ApiVersionsRequest::default());
    drop(gone);
    await_a_free_kafka_connection(
        addr,
        "a client gone with a request queued behind a long poll still holds its connection",
    );
    let asked = admin.send(3, &ApiVersionsRequest::default());
    let versions = admin.receive::<ApiVersionsRequest>(3, asked);
    assert_eq!(versions.error_code, 0);
    server.shutdown();
}

/// Kafka answers each topic of a Metadata request once (KafkaApis collects the names into a
/// set). Answering every repeat makes the response grow with request entries times the topic's
/// partitions: a request of a few bytes per repeat asks for a whole partition list each time.
#[test]
fn metadata_answers_a_repeated_topic_once() {
    let server = TestServer::start();
    let mut kafka = server.kafka();
    assert_eq!(kafka.create_topic("wide", 32, &[]), 0);
    let repeats = 2_000;
    let topics = (0..repeats)
        .map(|_| MetadataRequestTopic::default().with_name(Some(topic_name("wide"))))
        .collect();
    let request = MetadataRequest::default().with_topics(Some(topics));
    let response = kafka.call(1, &request);
    let partitions: usize = response.topics.iter().map(|t| t.partitions.len()).sum();
    assert_eq!(
        (response.topics.len(), partitions),
        (1, 32),
        "one answer per distinct topic, as from Kafka"
    );
}

/// Kafka's ConfigHelper.describeConfigs treats an empty `configuration_keys` list like null:
/// every setting. (kafka-protocol's own default for the field is an empty list.)
#[test]
fn describe_configs_with_an_empty_key_list_describes_every_setting() {
    let server = TestServer::start();
    let mut kafka = server.kafka();
    assert_eq!(kafka.create_topic("keys", 1, &[]), 0);
    let request =
        DescribeConfigsRequest::default().with_resources(vec![DescribeConfigsResource::default()
            .with_resource_type(2)
            .with_resource_name(StrBytes::from_static_str("keys"))
            .with_configuration_keys(Some(vec![]))]);
    let response = kafka.call(4, &request);
    assert_eq!(response.results[0].error_code, 0);
    assert!(
        !response.results[0].configs.is_empty(),
        "an empty key list asks for every setting, as null does"
    );
}

/// DeleteTopics v6 by topic id: Kafka answers an unknown id with UNKNOWN_TOPIC_ID *and the
/// id* (ControllerApis.deleteTopics), and the Java admin finds each result's future by
/// `result.topicId()`; a nil id there leaves the caller with "did not contain a result".
#[test]
fn delete_topics_by_id_answers_with_the_id() {
    use kafka_protocol::messages::DeleteTopicsResponse;
    let server = TestServer::start();
    let mut kafka = server.kafka();
    let id: [u8; 16] = *b"0123456789abcdef";
    // DeleteTopics v6 body (flexible): topics [name: null, topic_id], timeout_ms, no tags.
    let correlation_id = kafka.send_raw(20, 6, |buf| {
        buf.extend_from_slice(&[2]); // compact array of 1
        buf.extend_from_slice(&[0]); // null name
        buf.extend_from_slice(&id);
        buf.extend_from_slice(&[0]); // tagged fields
        buf.extend_from_slice(&10_000i32.to_be_bytes());
        buf.extend_from_slice(&[0]); // tagged fields
    });
    let response: DeleteTopicsResponse = kafka.receive::<DeleteTopicsRequest>(6, correlation_id);
    let result = &response.responses[0];
    assert_eq!(result.error_code, 100, "UNKNOWN_TOPIC_ID");
    assert_eq!(
        result.topic_id.as_bytes(),
        &id,
        "the result names the id it answers"
    );
}

/// Kafka refuses every entry of a name given twice in one CreateTopics with INVALID_REQUEST
/// ("Duplicate topic name.") and creates neither (ControllerApis.createTopics).
#[test]
fn create_topics_refuses_a_name_given_twice() {
    let server = TestServer::start();
    let mut kafka = server.kafka();
    let entry = |partitions| {
        CreatableTopic::default()
            .with_name(topic_name("twice"))
            .with_num_partitions(partitions)
            .with_replication_factor(1)
    };
    let request = CreateTopicsRequest::default()
        .with_topics(vec![entry(1), entry(4)])
        .with_timeout_ms(10_000);
    let response = kafka.call(7, &request);
    let codes: Vec<i16> = response.topics.iter().map(|t| t.error_code).collect();
    assert!(
        codes.iter().all(|code| *code == 42),
        "INVALID_REQUEST for the duplicated name, got {codes:?}"
    );
    let topics = vec![MetadataRequestTopic::default().with_name(Some(topic_name("twice")))];
    let metadata = kafka.call(1, &MetadataRequest::default().with_topics(Some(topics)));
    assert_eq!(
        metadata.topics[0].error_code, UNKNOWN_TOPIC_OR_PARTITION,
        "nothing was created"
    );
}

/// CreateTopics with a manual replica assignment (kafka-topics --replica-assignment 0,0,0):
/// taken when every partition names broker 0 alone, checked otherwise as Kafka's controller
/// checks it.
#[test]
fn create_topics_takes_a_replica_assignment_naming_broker_zero() {
    use kafka_protocol::messages::create_topics_request::CreatableReplicaAssignment;
    use kafka_protocol::messages::BrokerId;
    const INVALID_REPLICA_ASSIGNMENT: i16 = 39;

    let server = TestServer::start();
    let mut kafka = server.kafka();
    let mut create =
        |name: &'static str, partitions: i32, factor: i16, brokers: &[(i32, &[i32])]| {
            let assignments = brokers
                .iter()
                .map(|(index, ids)| {
                    CreatableReplicaAssignment::default()
                        .with_partition_index(*index)
                        .with_broker_ids(ids.iter().map(|id| BrokerId(*id)).collect())
                })
                .collect();
            let topic = CreatableTopic::default()
                .with_name(topic_name(name))
                .with_num_partitions(partitions)
                .with_replication_factor(factor)
                .with_assignments(assignments);
            let request = CreateTopicsRequest::default()
                .with_topics(vec![topic])
                .with_timeout_ms(10_000);
            let response = kafka.call(7, &request);
            let topic = &response.topics[0];
            (topic.error_code, topic.num_partitions)
        };
    let three: &[(i32, &[i32])] = &[(0, &[0]), (2, &[0]), (1, &[0])];
    assert_eq!(create("placed", -1, -1, three), (0, 3));
    assert_eq!(create("counted", 3, -1, three).0, INVALID_REQUEST);
    assert_eq!(create("factored", -1, 1, three).0, INVALID_REQUEST);
    for bad in [
        &[(0, &[1][..])][..],
        &[(0, &[0, 0][..])],
        &[(0, &[][..])],
        &[(0, &[0][..]), (0, &[0][..])],
        &[(0, &[0][..]), (2, &[0][..])],
        &[(-1, &[0][..])],
    ] {
        assert_eq!(
            create("refused", -1, -1, bad).0,
            INVALID_REPLICA_ASSIGNMENT,
            "{bad:?}"
        );
    }
    let mut native = ringlog_net::client::Client::connect(server.handle.local_addr()).unwrap();
    assert_eq!(native.partition_count("placed").unwrap(), 3);
    assert!(
        native.partition_count("refused").is_err(),
        "nothing created"
    );
}

/// DeleteRecords moves each partition's log start as Kafka does: reads below it are out of
/// range, ListOffsets earliest answers it, -1 means the high watermark, past the high
/// watermark is OFFSET_OUT_OF_RANGE, and a restart keeps it.
#[test]
fn delete_records_moves_the_log_start_and_a_restart_keeps_it() {
    use kafka_protocol::messages::delete_records_request::{
        DeleteRecordsPartition, DeleteRecordsTopic,
    };
    use kafka_protocol::messages::DeleteRecordsRequest;
    const OFFSET_OUT_OF_RANGE: i16 = 1;

    let mut server = TestServer::start();
    let mut kafka = server.kafka();
    assert_eq!(kafka.create_topic("trimmed", 2, &[]), 0);
    for partition in 0..2 {
        for round in 0..3 {
            let (code, base) =
                kafka.produce(9, -1, "trimmed", partition, batch_of(&["a", "b"], 1_000));
            assert_eq!((code, base), (0, 2 * round));
        }
    }
    let delete = |kafka: &mut kafka_support::Kafka, asks: &[(&'static str, i32, i64)]| {
        let topics = asks
            .iter()
            .map(|(topic, partition, offset)| {
                DeleteRecordsTopic::default()
                    .with_name(topic_name(topic))
                    .with_partitions(vec![DeleteRecordsPartition::default()
                        .with_partition_index(*partition)
                        .with_offset(*offset)])
            })
            .collect();
        let request = DeleteRecordsRequest::default()
            .with_topics(topics)
            .with_timeout_ms(10_000);
        let response = kafka.call(2, &request);
        response
            .topics
            .iter()
            .map(|t| (t.partitions[0].error_code, t.partitions[0].low_watermark))
            .collect::<Vec<_>>()
    };
    // Inside a batch (offset 3 of the batch 2..=3), all of partition 1, then errors.
    let answers = delete(
        &mut kafka,
        &[
            ("trimmed", 0, 3),
            ("trimmed", 1, -1),
            ("trimmed", 0, 7),
            ("trimmed", 0, -2),
            ("trimmed", 5, 0),
            ("nope", 0, 0),
        ],
    );
    assert_eq!(
        answers,
        [
            (0, 3),
            (0, 6),
            (OFFSET_OUT_OF_RANGE, -1),
            (OFFSET_OUT_OF_RANGE, -1),
            (UNKNOWN_TOPIC_OR_PARTITION, -1),
            (UNKNOWN_TOPIC_OR_PARTITION, -1),
        ]
    );
    assert_eq!(
        delete(&mut kafka, &[("trimmed", 0, 1)]),
        [(0, 3)],
        "never backwards"
    );
    let check = |kafka: &mut kafka_support::Kafka| {
        assert_eq!(kafka.list_offset("trimmed", 0, -2), (0, 3));
        assert_eq!(kafka.list_offset("trimmed", 1, -2), (0, 6));
        // By time, from the start on, as Kafka searches (the batch 2..=3 is cut by it).
        assert_eq!(kafka.list_offset("trimmed", 0, 0).1, 3);
        assert_eq!(
            kafka.list_offset("trimmed", 1, 0),
            (0, -1),
            "none left: -1, as from Kafka"
        );
        let below = kafka.fetch(12, "trimmed", 0, 2, 0);
        assert_eq!(
            below.responses[0].partitions[0].error_code,
            OFFSET_OUT_OF_RANGE
        );
        let from = kafka.fetch(12, "trimmed", 0, 3, 0);
        let partition = &from.responses[0].partitions[0];
        assert_eq!((partition.error_code, partition.log_start_offset), (0, 3));
    };
    check(&mut kafka);
    drop(kafka);
    server = server.restart();
    check(&mut server.kafka());
}

/// DescribeCluster v1 asking for controllers (endpoint_type 2) at a broker listener: Kafka
/// answers MISMATCHED_ENDPOINT_TYPE (AuthHelper.computeDescribeClusterResponse), so an admin
/// client bootstrapped with `bootstrap.controllers` learns it reached the wrong endpoint.
#[test]
fn describe_cluster_for_controllers_is_a_mismatched_endpoint() {
    use kafka_protocol::messages::DescribeClusterRequest;
    let server = TestServer::start();
    let mut kafka = server.kafka();
    let response = kafka.call(1, &DescribeClusterRequest::default().with_endpoint_type(2));
    assert_eq!(response.error_code, 114, "MISMATCHED_ENDPOINT_TYPE");
}

/// DeleteTopics and CreatePartitions naming a topic twice refuse both entries
/// (INVALID_REQUEST) and act on neither, as Kafka does: the topic keeps its partitions and
/// stays.
#[test]
fn delete_topics_and_create_partitions_refuse_a_name_given_twice() {
    let server = TestServer::start();
    let mut kafka = server.kafka();
    assert_eq!(kafka.create_topic("kept", 1, &[]), 0);
    let mut grow = grow_request("kept", 2);
    let twice = grow.topics[0].clone().with_count(3);
    grow.topics.push(twice);
    let grown = kafka.call(3, &grow);
    let codes: Vec<i16> = grown.results.iter().map(|r| r.error_code).collect();
    assert_eq!(codes, [42, 42], "INVALID_REQUEST for both entries");
    let delete = DeleteTopicsRequest::default()
        .with_topic_names(vec![topic_name("kept"), topic_name("kept")])
        .with_timeout_ms(10_000);
    let deleted = kafka.call(4, &delete);
    let codes: Vec<i16> = deleted.responses.iter().map(|r| r.error_code).collect();
    assert_eq!(codes, [42, 42], "INVALID_REQUEST for both entries");
    let topics = vec![MetadataRequestTopic::default().with_name(Some(topic_name("kept")))];
    let metadata = kafka.call(1, &MetadataRequest::default().with_topics(Some(topics)));
    assert_eq!(metadata.topics[0].error_code, 0, "the topic stays");
    assert_eq!(
        metadata.topics[0].partitions.len(),
        1,
        "and keeps its partitions"
    );
}

/// KIP-227: a full fetch (session epoch 0 or -1) is served whatever session id it names (a
/// Kafka broker closes that session first); only an incremental fetch (any other epoch) needs
/// a session, and this server keeps none: FETCH_SESSION_ID_NOT_FOUND, after which clients
/// send full fetches.
#[test]
fn full_fetches_are_served_whatever_session_they_name() {
    const FETCH_SESSION_ID_NOT_FOUND: i16 = 70;
    let server = TestServer::start();
    let mut kafka = server.kafka();
    assert_eq!(kafka.create_topic("sessions", 1, &[]), 0);
    assert_eq!(
        kafka.produce(9, -1, "sessions", 0, batch_of(&["a", "b"], 1_000)),
        (0, 0)
    );
    for version in [7, 12] {
        for (session_id, session_epoch) in [(0, -1), (0, 0), (7, -1), (7, 0)] {
            let request = fetch_request("sessions", 0, 0, 0)
                .with_session_id(session_id)
                .with_session_epoch(session_epoch);
            let response = kafka.call(version, &request);
            let what = format!("v{version}, session {session_id} epoch {session_epoch}");
            assert_eq!((response.error_code, response.session_id), (0, 0), "{what}");
            assert_eq!(values_of(&records_of(&response)).len(), 2, "{what}");
        }
        for (session_id, session_epoch) in [(0, 1), (7, 1), (7, 5), (0, -2)] {
            let request = fetch_request("sessions", 0, 0, 0)
                .with_session_id(session_id)
                .with_session_epoch(session_epoch);
            let response = kafka.call(version, &request);
            assert_eq!(
                (response.error_code, response.responses.len()),
                (FETCH_SESSION_ID_NOT_FOUND, 0),
                "v{version}, session {session_id} epoch {session_epoch}"
            );
        }
    }
}

/// ListOffsets timestamps below -2 ask for lookups newer versions added (-3 max timestamp from
/// v7, -4 earliest local from v8, -5 latest tiered from v9) or none at all: Kafka answers
/// UNSUPPORTED_VERSION for each at the versions served here, which clients report as such,
/// not INVALID_REQUEST.
#[test]
fn list_offsets_special_timestamps_of_later_versions_are_unsupported() {
    let server = TestServer::start();
    let mut kafka = server.kafka();
    assert_eq!(kafka.create_topic("special", 1, &[]), 0);
    assert_eq!(
        kafka.produce(9, -1, "special", 0, batch_of(&["a"], 1_000)),
        (0, 0)
    );
    // Max timestamp (v7), earliest local (v8), latest tiered (v9): lookups of versions this
    // listener does not serve.
    for timestamp in [-3, -4, -5] {
        assert_eq!(
            kafka.list_offset_with_timestamp("special", 0, timestamp),
            (UNSUPPORTED_VERSION, -1, -1),
            "timestamp {timestamp}"
        );
    }
    // Any other negative timestamp names no lookup.
    for timestamp in [-6, -1000] {
        assert_eq!(
            kafka.list_offset_with_timestamp("special", 0, timestamp).0,
            INVALID_REQUEST,
            "timestamp {timestamp}"
        );
    }
    assert_eq!(
        kafka.list_offset_with_timestamp("special", 0, -1),
        (0, 1, -1)
    );
}

/// A partition named more than once in one ListOffsets request is INVALID_REQUEST at each
/// place it is named, in a topic repeated or not, as Kafka answers from version 1 (its
/// ListOffsetsRequest.duplicatePartitions, checked before anything else); the partitions
/// named once are answered as usual.
#[test]
fn list_offsets_answers_a_partition_named_twice_invalid_request() {
    use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
    let server = TestServer::start();
    let mut kafka = server.kafka();
    assert_eq!(kafka.create_topic("dups", 3, &[]), 0);
    assert_eq!(
        kafka.produce(9, -1, "dups", 2, batch_of(&["a"], 1_000)),
        (0, 0)
    );
    let latest = |partition: i32| {
        ListOffsetsPartition::default()
            .with_partition_index(partition)
            .with_timestamp(-1)
    };
    let request = kafka_protocol::messages::ListOffsetsRequest::default()
        .with_replica_id((-1).into())
        .with_topics(vec![
            ListOffsetsTopic::default()
                .with_name(topic_name("dups"))
                .with_partitions(vec![latest(0), latest(2), latest(0), latest(1)]),
            // The same topic again: partition 1 is named twice across its two entries; so is
            // partition 7, which the topic lacks (the duplicate is found first, as in Kafka).
            ListOffsetsTopic::default()
                .with_name(topic_name("dups"))
                .with_partitions(vec![latest(1), latest(7), latest(7)]),
        ]);
    for version in 1..=6 {
        let response = kafka.call(version, &request);
        let answers: Vec<Vec<(i32, i16)>> = response
            .topics
            .iter()
            .map(|topic| {
                topic
                    .partitions
                    .iter()
                    .map(|p| (p.partition_index, p.error_code))
                    .collect()
            })
            .collect();
        assert_eq!(
            answers,
            [
                vec![
                    (0, INVALID_REQUEST),
                    (2, 0),
                    (0, INVALID_REQUEST),
                    (1, INVALID_REQUEST)
                ],
                vec![
                    (1, INVALID_REQUEST),
                    (7, INVALID_REQUEST),
                    (7, INVALID_REQUEST)
                ],
            ],
            "ListOffsets v{version}"
        );
        assert_eq!(response.topics[0].partitions[1].offset, 1, "v{version}");
    }
}

/// A fetched partition as a test compares it: index, error code, records with their offsets.
type FetchedPartition = (i32, i16, Vec<(i64, String)>);

/// Kafka keys a fetch by partition (FetchRequest.fetchData is a map): a partition named twice
/// is read once, from the offset (and with the max bytes) of the last place it is named, and
/// answered once, where it was first named.
#[test]
fn fetch_answers_a_partition_named_twice_once_from_its_last_offset() {
    use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
    let server = TestServer::start();
    let mut kafka = server.kafka();
    assert_eq!(kafka.create_topic("fdups", 2, &[]), 0);
    assert_eq!(
        kafka.produce(9, -1, "fdups", 0, batch_of(&["a"], 1_000)),
        (0, 0)
    );
    assert_eq!(
        kafka.produce(9, -1, "fdups", 0, batch_of(&["b"], 1_000)),
        (0, 1)
    );
    assert_eq!(
        kafka.produce(9, -1, "fdups", 1, batch_of(&["c"], 1_000)),
        (0, 0)
    );
    let at = |partition: i32, offset: i64| {
        FetchPartition::default()
            .with_partition(partition)
            .with_fetch_offset(offset)
            .with_partition_max_bytes(1 << 20)
    };
    let request = fetch_request("fdups", 0, 0, 0).with_topics(vec![
        FetchTopic::default()
            .with_topic(topic_name("fdups"))
            .with_partitions(vec![at(0, 0), at(1, 0)]),
        FetchTopic::default()
            .with_topic(topic_name("fdups"))
            .with_partitions(vec![at(0, 1)]),
    ]);
    for version in [4, 12] {
        let response = kafka.call(version, &request);
        let answered: Vec<Vec<FetchedPartition>> = response
            .responses
            .iter()
            .map(|topic| {
                topic
                    .partitions
                    .iter()
                    .map(|p| {
                        let records = p.records.clone().unwrap_or_default();
                        (p.partition_index, p.error_code, values_of(&records))
                    })
                    .collect()
            })
            .collect();
        // One topic entry: the second named only partition 0 again.
        assert_eq!(
            answered,
            [vec![
                (0, 0, vec![(1, "b".to_string())]),
                (1, 0, vec![(0, "c".to_string())])
            ]],
            "Fetch v{version}"
        );
    }
}
