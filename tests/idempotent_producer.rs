//! The idempotent producer against a real server (in-process, real files, loopback TCP):
//! InitProducerId hands out ids that stay unique across restarts, a retried batch is answered
//! with its original offset (also after a restart), gaps and fenced epochs are refused, and
//! the client's Producer uses all of it by default.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use ringlog_engine::batch::BatchBuilder;
use ringlog_net::client::{
    Client, Consumer, ConsumerConfig, Producer, ProducerConfig, ProducerRecord, SeekTo,
};
use ringlog_net::error_code::ErrorCode;
use ringlog_net::message::create_topic;
use ringlog_net::message::produce::Acks;
use ringlog_net::server::{Server, ServerConfig, ServerHandle};

struct TestServer {
    handle: Option<ServerHandle>,
    dir: tempfile::TempDir,
}

impl TestServer {
    fn start(shards: usize) -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        let mut server = TestServer { handle: None, dir };
        server.restart_with(shards);
        server
    }

    fn restart_with(&mut self, shards: usize) {
        if let Some(handle) = self.handle.take() {
            handle.shutdown();
        }
        let config = ServerConfig {
            data_dir: self.dir.path().to_path_buf(),
            listen: "127.0.0.1:0".parse().unwrap(),
            shards: Some(shards),
            cache_bytes_per_shard: 8 << 20,
            ..ServerConfig::default()
        };
        self.handle = Some(Server::start(config).unwrap());
    }

    fn client(&self) -> Client {
        Client::connect(self.handle.as_ref().unwrap().local_addr()).unwrap()
    }

    fn create_topic(&self, name: &str, partitions: u32) {
        let request = create_topic::Request {
            name,
            partitions,
            retention_ms: None,
            retention_bytes: None,
            segment_bytes: Some(1 << 20),
        };
        self.client().create_topic(&request).unwrap();
    }
}

fn batch(producer_id: i64, epoch: i16, sequence: i32, values: &[&str]) -> Vec<u8> {
    let mut builder = BatchBuilder::new(Vec::new(), 1_700_000_000_000);
    builder.set_producer_id(producer_id);
    builder.set_producer_epoch(epoch);
    builder.set_base_sequence(sequence);
    for value in values {
        builder
            .push(1_700_000_000_000, None, Some(value.as_bytes()), &[])
            .unwrap();
    }
    builder.finish().to_vec()
}

fn error_code(result: Result<Option<i64>, ringlog_net::client::ClientError>) -> Option<ErrorCode> {
    result.unwrap_err().code()
}

#[test]
fn retries_gaps_epochs_and_restarts() {
    let mut server = TestServer::start(2);
    server.create_topic("idem", 2);
    let mut client = server.client();
    let (producer_id, epoch) = client.init_producer_id(-1, -1).unwrap();
    assert_eq!(epoch, 0);
    let (other_id, _) = client.init_producer_id(-1, -1).unwrap();
    assert_ne!(producer_id, other_id);

    let first = batch(producer_id, 0, 0, &["a", "b"]);
    assert_eq!(
        client.produce("idem", 1, Acks::Durable, &first).unwrap(),
        Some(0)
    );
    // A retry: the same offset, nothing appended.
    assert_eq!(
        client.produce("idem", 1, Acks::Durable, &first).unwrap(),
        Some(0)
    );
    let second = batch(producer_id, 0, 2, &["c"]);
    assert_eq!(
        client.produce("idem", 1, Acks::Durable, &second).unwrap(),
        Some(2)
    );
    let gap = batch(producer_id, 0, 7, &["x"]);
    assert_eq!(
        error_code(client.produce("idem", 1, Acks::Durable, &gap)),
        Some(ErrorCode::OutOfOrderSequence)
    );

    // After a restart the retry is still recognised, and ids are never handed out again.
    drop(client);
    server.restart_with(2);
    let mut client = server.client();
    assert_eq!(
        client.produce("idem", 1, Acks::Durable, &second).unwrap(),
        Some(2)
    );
    assert_eq!(
        client.produce("idem", 1, Acks::Leader, &first).unwrap(),
        Some(0)
    );
    let (after_restart, _) = client.init_producer_id(-1, -1).unwrap();
    assert!(after_restart != producer_id && after_restart != other_id);
    // A different shard count keeps ids unique too.
    drop(client);
    server.restart_with(1);
    let mut client = server.client();
    for _ in 0..5 {
        let (id, _) = client.init_producer_id(-1, -1).unwrap();
        assert!(![producer_id, other_id, after_restart].contains(&id));
    }

    // A bumped epoch fences the old one.
    let (same_id, bumped) = client.init_producer_id(producer_id, 0).unwrap();
    assert_eq!((same_id, bumped), (producer_id, 1));
    let fresh = batch(producer_id, 1, 0, &["d"]);
    assert_eq!(
        client.produce("idem", 1, Acks::Durable, &fresh).unwrap(),
        Some(3)
    );
    let stale = batch(producer_id, 0, 3, &["e"]);
    assert_eq!(
        error_code(client.produce("idem", 1, Acks::Durable, &stale)),
        Some(ErrorCode::InvalidProducerEpoch)
    );
    assert_eq!(
        client.init_producer_id(-1, 3).unwrap_err().code(),
        Some(ErrorCode::InvalidRequest)
    );
    let topics = client.metadata(&["idem"]).unwrap();
    assert_eq!(
        topics[0].partitions[1].high_watermark, 4,
        "every batch appended once"
    );
}

#[test]
fn the_producer_is_idempotent_by_default_and_keeps_order() {
    let server = TestServer::start(2);
    server.create_topic("ordered", 3);
    let addr = server.handle.as_ref().unwrap().local_addr();
    let config = ProducerConfig {
        linger_ms: 1,
        batch_bytes_max: 4096,
        ..ProducerConfig::default()
    };
    let producer = Producer::connect(addr, "ordered", config).unwrap();
    let (producer_id, epoch) = producer.producer_identity().expect("idempotent by default");
    assert!(producer_id >= 0 && epoch == 0);
    let total = 5_000;
    for n in 0..total {
        let value = n.to_string();
        producer
            .send(&ProducerRecord::new(value.as_bytes()).with_key(value.as_bytes()))
            .unwrap();
    }
    producer.close().unwrap();

    let mut consumer = Consumer::connect(addr, ConsumerConfig::default()).unwrap();
    consumer.assign_all("ordered").unwrap();
    consumer.seek_all(SeekTo::Earliest).unwrap();
    let mut last: HashMap<u32, (i64, u64)> = HashMap::new();
    let mut seen = 0;
    let deadline = Instant::now() + Duration::from_secs(30);
    while seen < total {
        assert!(Instant::now() < deadline, "only {seen} of {total} records");
        for record in consumer.poll(Duration::from_millis(200)).unwrap() {
            let record = record.unwrap();
            let number: u64 = std::str::from_utf8(record.value.unwrap())
                .unwrap()
                .parse()
                .unwrap();
            if let Some((offset, previous)) = last.get(&record.partition) {
                assert_eq!(record.offset, offset + 1);
                assert!(number > *previous, "order kept per partition");
            }
            last.insert(record.partition, (record.offset, number));
            seen += 1;
        }
    }
    assert_eq!(seen, total);
}
