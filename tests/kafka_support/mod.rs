//! Shared by the Kafka protocol tests: an in-process server with a Kafka listener, and a
//! minimal blocking Kafka client built on the `kafka-protocol` crate.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::produce_response::PartitionProduceResponse;
use kafka_protocol::messages::{
    ApiKey, CreateTopicsRequest, FetchRequest, FetchResponse, ListOffsetsRequest, ProduceRequest,
    RequestHeader, ResponseHeader, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes};
use ringlog_net::server::{Server, ServerConfig, ServerHandle};

/// A server with both listeners on loopback, 2 shards, in a temporary directory.
pub struct TestServer {
    pub handle: ServerHandle,
    _dir: tempfile::TempDir,
}

impl TestServer {
    /// Starts a server.
    pub fn start() -> TestServer {
        Self::start_with(|_| {})
    }

    /// Starts a server with `change` made to the test configuration.
    pub fn start_with(change: impl FnOnce(&mut ServerConfig)) -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Self::config(dir.path());
        change(&mut config);
        TestServer {
            handle: Server::start(config).unwrap(),
            _dir: dir,
        }
    }

    /// Shuts the server down and starts a new one on the same directory (new ports).
    pub fn restart(self) -> TestServer {
        let TestServer { handle, _dir: dir } = self;
        handle.shutdown();
        TestServer {
            handle: Server::start(Self::config(dir.path())).unwrap(),
            _dir: dir,
        }
    }

    fn config(dir: &Path) -> ServerConfig {
        ServerConfig {
            data_dir: dir.to_path_buf(),
            listen: "127.0.0.1:0".parse().unwrap(),
            kafka_listen: Some("127.0.0.1:0".parse().unwrap()),
            shards: Some(2),
            cache_bytes_per_shard: 8 << 20,
            ..ServerConfig::default()
        }
    }

    /// The Kafka listener.
    pub fn kafka_addr(&self) -> SocketAddr {
        self.handle.kafka_addr().unwrap()
    }

    /// A new Kafka connection.
    pub fn kafka(&self) -> Kafka {
        Kafka::connect(self.kafka_addr())
    }
}

/// A minimal blocking Kafka client: one request at a time unless sent and read separately.
pub struct Kafka {
    stream: TcpStream,
    next_correlation_id: i32,
}

impl Kafka {
    /// Connects to `addr`.
    pub fn connect(addr: SocketAddr) -> Kafka {
        let stream = TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        Kafka {
            stream,
            next_correlation_id: 1,
        }
    }

    /// Wraps a connected stream.
    pub fn from_stream(stream: TcpStream) -> Kafka {
        Kafka {
            stream,
            next_correlation_id: 1,
        }
    }

    /// Sends `request` at `version` without waiting; returns its correlation id.
    pub fn send<R: Request>(&mut self, version: i16, request: &R) -> i32 {
        self.send_raw(R::KEY, version, |buf| request.encode(buf, version).unwrap())
    }

    /// [`Self::send`], `None` when the server closed the connection already.
    pub fn try_send<R: Request>(&mut self, version: i16, request: &R) -> Option<i32> {
        self.try_send_raw(R::KEY, version, |buf| request.encode(buf, version).unwrap())
    }

    pub fn send_raw(
        &mut self,
        api_key: i16,
        version: i16,
        body: impl FnOnce(&mut BytesMut),
    ) -> i32 {
        self.try_send_raw(api_key, version, body)
            .expect("the request was written")
    }

    fn try_send_raw(
        &mut self,
        api_key: i16,
        version: i16,
        body: impl FnOnce(&mut BytesMut),
    ) -> Option<i32> {
        let correlation_id = self.next_correlation_id;
        self.next_correlation_id += 1;
        let header = RequestHeader::default()
            .with_request_api_key(api_key)
            .with_request_api_version(version)
            .with_correlation_id(correlation_id)
            .with_client_id(Some(StrBytes::from_static_str("kafka-wire-test")));
        let header_version = ApiKey::try_from(api_key)
            .map(|key| key.request_header_version(version))
            .unwrap_or(1);
        let mut buf = BytesMut::new();
        header.encode(&mut buf, header_version).unwrap();
        body(&mut buf);
        let mut frame = (buf.len() as i32).to_be_bytes().to_vec();
        frame.extend_from_slice(&buf);
        self.stream.write_all(&frame).ok()?;
        Some(correlation_id)
    }

    /// Reads the next response, which must answer `correlation_id`.
    pub fn receive<R: Request>(&mut self, version: i16, correlation_id: i32) -> R::Response {
        let mut frame = self.read_frame().expect("a response");
        let header =
            ResponseHeader::decode(&mut frame, R::Response::header_version(version)).unwrap();
        assert_eq!(
            header.correlation_id, correlation_id,
            "responses come in request order"
        );
        let response = R::Response::decode(&mut frame, version).unwrap();
        assert!(!frame.has_remaining(), "the whole response was decoded");
        response
    }

    /// The next frame, or `None` when the server closed the connection.
    pub fn read_frame(&mut self) -> Option<Bytes> {
        let mut size = [0u8; 4];
        self.stream.read_exact(&mut size).ok()?;
        let mut frame = vec![0u8; i32::from_be_bytes(size) as usize];
        self.stream.read_exact(&mut frame).unwrap();
        Some(Bytes::from(frame))
    }

    /// Sends `request` and reads its response.
    pub fn call<R: Request>(&mut self, version: i16, request: &R) -> R::Response {
        let correlation_id = self.send(version, request);
        self.receive::<R>(version, correlation_id)
    }

    /// CreateTopics for one topic; returns its error code.
    pub fn create_topic(&mut self, name: &str, partitions: i32, configs: &[(&str, &str)]) -> i16 {
        let topic = CreatableTopic::default()
            .with_name(topic_name(name))
            .with_num_partitions(partitions)
            .with_replication_factor(1)
            .with_configs(
                configs
                    .iter()
                    .map(|(key, value)| {
                        CreatableTopicConfig::default()
                            .with_name(StrBytes::from_string(key.to_string()))
                            .with_value(Some(StrBytes::from_string(value.to_string())))
                    })
                    .collect(),
            );
        let request = CreateTopicsRequest::default()
            .with_topics(vec![topic])
            .with_timeout_ms(10_000);
        let response = self.call(7, &request);
        response.topics[0].error_code
    }

    /// Produces `records` (whole batches) to one partition; returns (error code, base offset).
    pub fn produce(
        &mut self,
        version: i16,
        acks: i16,
        topic: &str,
        partition: i32,
        records: Bytes,
    ) -> (i16, i64) {
        let partition = self.produce_partition(version, acks, topic, partition, records);
        (partition.error_code, partition.base_offset)
    }

    /// Produces `records` (whole batches) to one partition; returns the partition's answer.
    pub fn produce_partition(
        &mut self,
        version: i16,
        acks: i16,
        topic: &str,
        partition: i32,
        records: Bytes,
    ) -> PartitionProduceResponse {
        let request = produce_request(acks, topic, partition, records);
        let mut response = self.call(version, &request);
        response
            .responses
            .swap_remove(0)
            .partition_responses
            .swap_remove(0)
    }

    /// Fetches one partition (min_bytes 1).
    pub fn fetch(
        &mut self,
        version: i16,
        topic: &str,
        partition: i32,
        offset: i64,
        max_wait_ms: i32,
    ) -> FetchResponse {
        let request = fetch_request(topic, partition, offset, max_wait_ms);
        self.call(version, &request)
    }

    /// ListOffsets v6 for one partition: (error code, offset).
    pub fn list_offset(&mut self, topic: &str, partition: i32, timestamp: i64) -> (i16, i64) {
        let (code, offset, _) = self.list_offset_with_timestamp(topic, partition, timestamp);
        (code, offset)
    }

    /// ListOffsets v6 for one partition: (error code, offset, timestamp).
    pub fn list_offset_with_timestamp(
        &mut self,
        topic: &str,
        partition: i32,
        timestamp: i64,
    ) -> (i16, i64, i64) {
        let request = ListOffsetsRequest::default()
            .with_replica_id((-1).into())
            .with_topics(vec![ListOffsetsTopic::default()
                .with_name(topic_name(topic))
                .with_partitions(vec![ListOffsetsPartition::default()
                    .with_partition_index(partition)
                    .with_timestamp(timestamp)])]);
        let response = self.call(6, &request);
        let partition = &response.topics[0].partitions[0];
        (partition.error_code, partition.offset, partition.timestamp)
    }
}

/// A topic name for the codec.
pub fn topic_name(name: &str) -> TopicName {
    TopicName(StrBytes::from_string(name.to_string()))
}

/// A produce request for one partition.
pub fn produce_request(acks: i16, topic: &str, partition: i32, records: Bytes) -> ProduceRequest {
    ProduceRequest::default()
        .with_transactional_id(None)
        .with_acks(acks)
        .with_timeout_ms(10_000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(topic_name(topic))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(partition)
                .with_records(Some(records))])])
}

/// A fetch request for one partition.
pub fn fetch_request(topic: &str, partition: i32, offset: i64, max_wait_ms: i32) -> FetchRequest {
    FetchRequest::default()
        .with_replica_id((-1).into())
        .with_max_wait_ms(max_wait_ms)
        .with_min_bytes(1)
        .with_max_bytes(1 << 20)
        .with_topics(vec![FetchTopic::default()
            .with_topic(topic_name(topic))
            .with_partitions(vec![FetchPartition::default()
                .with_partition(partition)
                .with_fetch_offset(offset)
                .with_partition_max_bytes(1 << 20)])])
}
