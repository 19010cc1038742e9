//! The broker end to end: a real server (in-process, real files, loopback TCP) and the real
//! client, with 1 and 2 shards.

mod common;

use common::create_topic_at;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use ringlog_net::client::{
    AutoOffsetReset, Client, ClientError, Connection, ConnectionConfig, Consumer, ConsumerConfig,
    Producer, ProducerConfig, ProducerRecord, SeekTo,
};
use ringlog_net::error_code::ErrorCode;
use ringlog_net::message::produce::Acks;
use ringlog_net::message::{alter_topic, create_topic};
use ringlog_net::server::{Server, ServerConfig, ServerHandle};

struct TestServer {
    handle: Option<ServerHandle>,
    dir: tempfile::TempDir,
    shards: usize,
    mail_queue_depth: usize,
    metrics_listen: Option<SocketAddr>,
}

impl TestServer {
    fn start(shards: usize) -> TestServer {
        Self::start_with_metrics(shards, None)
    }

    fn start_with_metrics(shards: usize, metrics_listen: Option<SocketAddr>) -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        let mut server = TestServer {
            handle: None,
            dir,
            shards,
            mail_queue_depth: ServerConfig::default().mail_queue_depth,
            metrics_listen,
        };
        server.restart();
        server
    }

    fn config(&self) -> ServerConfig {
        ServerConfig {
            data_dir: self.dir.path().to_path_buf(),
            listen: "127.0.0.1:0".parse().unwrap(),
            shards: Some(self.shards),
            cache_bytes_per_shard: 8 << 20,
            mail_queue_depth: self.mail_queue_depth,
            // Retention applies within the tests' waits (no topic sets any by default).
            retention_check_interval_ms: 10,
            metrics_listen: self.metrics_listen,
            ..ServerConfig::default()
        }
    }

    fn restart(&mut self) {
        if let Some(handle) = self.handle.take() {
            handle.shutdown();
        }
        self.handle = Some(Server::start(self.config()).unwrap());
    }

    fn addr(&self) -> SocketAddr {
        self.handle.as_ref().unwrap().local_addr()
    }

    fn client(&self) -> Client {
        Client::connect(self.addr()).unwrap()
    }

    fn create_topic(&self, name: &str, partitions: u32) {
        create_topic_at(self.addr(), name, partitions);
    }
}

fn produce_values(
    server: &TestServer,
    topic: &str,
    values: impl Iterator<Item = String>,
    keyed: bool,
) -> usize {
    let config = ProducerConfig {
        linger_ms: 1,
        ..ProducerConfig::default()
    };
    let producer = Producer::connect(server.addr(), topic, config).unwrap();
    let mut count = 0;
    for value in values {
        let record = if keyed {
            ProducerRecord::new(value.as_bytes()).with_key(value.as_bytes())
        } else {
            ProducerRecord::new(value.as_bytes())
        };
        producer.send(&record).unwrap();
        count += 1;
    }
    producer.close().unwrap();
    count
}

/// Reads `count` records from every partition, from `from`: (partition, offset, value).
fn consume(
    server: &TestServer,
    topic: &str,
    from: SeekTo,
    count: usize,
) -> Vec<(u32, i64, String)> {
    let mut consumer = Consumer::connect(server.addr(), ConsumerConfig::default()).unwrap();
    consumer.assign_all(topic).unwrap();
    consumer.seek_all(from).unwrap();
    let mut out = Vec::with_capacity(count);
    poll_until(&mut consumer, &mut out, count);
    out
}

fn check_per_partition_order(records: &[(u32, i64, String)]) {
    let mut last: HashMap<u32, (i64, u64)> = HashMap::new();
    for (partition, offset, value) in records {
        let number: u64 = value.parse().unwrap();
        if let Some((last_offset, last_number)) = last.get(partition) {
            assert_eq!(*offset, last_offset + 1, "offsets are dense per partition");
            assert!(
                number > *last_number,
                "values keep their order per partition"
            );
        }
        last.insert(*partition, (*offset, number));
    }
}

#[test]
fn batches_keep_their_order_through_a_full_queue_between_shards() {
    // A two-slot queue between the shards is full at once, so appends for the other shard's
    // partitions wait for room; they must still reach their partitions in request order (the
    // idempotent producer would see a sequence gap otherwise, and close would fail).
    let mut server = TestServer::start(2);
    server.mail_queue_depth = 2;
    server.restart();
    server.create_topic("order", 32);
    let total = 20_000;
    produce_values(&server, "order", (1..=total).map(|n| n.to_string()), true);
    let records = consume(&server, "order", SeekTo::Earliest, total);
    check_per_partition_order(&records);
    let mut values: Vec<u64> = records.iter().map(|r| r.2.parse().unwrap()).collect();
    values.sort_unstable();
    assert_eq!(values, (1..=total as u64).collect::<Vec<_>>());
}

fn round_trip_and_restart(shards: usize) {
    let mut server = TestServer::start(shards);
    server.create_topic("t", 4);
    let total = 20_000;
    produce_values(&server, "t", (1..=total).map(|n| n.to_string()), false);
    let records = consume(&server, "t", SeekTo::Earliest, total);
    assert_eq!(records.len(), total);
    check_per_partition_order(&records);
    let mut values: Vec<u64> = records.iter().map(|r| r.2.parse().unwrap()).collect();
    values.sort_unstable();
    assert_eq!(values, (1..=total as u64).collect::<Vec<_>>());

    server.restart();
    let again = consume(&server, "t", SeekTo::Earliest, total);
    let mut before = records.clone();
    let mut after = again;
    before.sort();
    after.sort();
    assert_eq!(
        before, after,
        "a restart serves the same records at the same offsets"
    );
}

#[test]
fn round_trip_order_and_restart_one_shard() {
    round_trip_and_restart(1);
}

#[test]
fn round_trip_order_and_restart_two_shards() {
    round_trip_and_restart(2);
}

#[test]
fn metadata_spreads_partitions_over_shards() {
    let server = TestServer::start(2);
    server.create_topic("spread", 4);
    let topics = server.client().metadata(&["spread"]).unwrap();
    let shards: std::collections::HashSet<u16> =
        topics[0].partitions.iter().map(|p| p.shard).collect();
    assert_eq!(topics[0].partitions.len(), 4);
    assert_eq!(shards.len(), 2, "partitions live on both shards");
    let listed = server.client().list_topics().unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].partitions, 4);
}

#[test]
fn a_connection_to_a_shard_is_served_by_that_shard() {
    for shards in [1u16, 2, 3] {
        let server = TestServer::start(usize::from(shards));
        for shard in 0..shards {
            // Several connections each, so that a lucky random placement cannot pass.
            for _ in 0..4 {
                let connection = Connection::connect_to_shard(
                    server.addr(),
                    shard,
                    shards,
                    ConnectionConfig::default(),
                )
                .unwrap();
                let info = Client::from_connection(connection, ConnectionConfig::default())
                    .api_versions("steering-test", "0")
                    .unwrap();
                assert_eq!(info.shard_count, shards);
                assert_eq!(info.connection_shard, shard, "{shards} shards");
            }
        }
        assert!(matches!(
            Connection::connect_to_shard(
                server.addr(),
                shards,
                shards,
                ConnectionConfig::default()
            ),
            Err(ClientError::InvalidArgument(_))
        ));
    }
}

#[test]
fn ordinary_connections_spread_over_the_shards() {
    // connect() picks ephemeral ports of one parity: steering by the port itself would put
    // every ordinary connection on the even shards.
    let server = TestServer::start(2);
    let mut served = [0usize; 2];
    for _ in 0..32 {
        let info = server.client().api_versions("spread-test", "0").unwrap();
        served[usize::from(info.connection_shard)] += 1;
    }
    assert!(served.iter().all(|&count| count > 0), "{served:?}");
}

#[test]
fn a_client_for_one_shards_partitions_connects_to_that_shard() {
    let server = TestServer::start(2);
    server.create_topic("near", 4);
    let owners: Vec<(u32, u16)> = server.client().metadata(&["near"]).unwrap()[0]
        .partitions
        .iter()
        .map(|info| (info.partition, info.shard))
        .collect();
    for (partition, shard) in &owners {
        let mut client = Client::connect_to_partitions(
            server.addr(),
            "near",
            &[*partition],
            ConnectionConfig::default(),
        )
        .unwrap();
        let info = client.api_versions("steering-test", "0").unwrap();
        assert_eq!(info.connection_shard, *shard, "partition {partition}");
    }
    // Partitions of both shards: any shard will do, the connection still works.
    let all: Vec<u32> = owners.iter().map(|(partition, _)| *partition).collect();
    let mut client =
        Client::connect_to_partitions(server.addr(), "near", &all, ConnectionConfig::default())
            .unwrap();
    assert_eq!(client.partition_count("near").unwrap(), 4);
}

#[test]
fn a_client_per_shard_serves_each_shards_partitions() {
    for shards in [1usize, 2, 3] {
        let server = TestServer::start(shards);
        server.create_topic("spread", 6);
        let owners: HashMap<u32, u16> = server.client().metadata(&["spread"]).unwrap()[0]
            .partitions
            .iter()
            .map(|info| (info.partition, info.shard))
            .collect();
        // Asked in a scrambled order, with a partition the topic does not have.
        let asked = [5, 0, 3, 9, 1, 4, 2];
        let clients =
            Client::connect_per_shard(server.addr(), "spread", &asked, ConnectionConfig::default())
                .unwrap();
        assert_eq!(clients.len(), shards, "one connection per shard");
        let mut served = Vec::new();
        for (mut client, partitions) in clients {
            let info = client.api_versions("steering-test", "0").unwrap();
            let known: Vec<&u32> = partitions
                .iter()
                .filter(|p| owners.contains_key(p))
                .collect();
            assert!(!known.is_empty(), "{partitions:?}");
            for partition in known {
                assert_eq!(
                    owners[partition], info.connection_shard,
                    "partition {partition}"
                );
            }
            served.extend(partitions);
        }
        served.sort_unstable();
        assert_eq!(served, [0, 1, 2, 3, 4, 5, 9], "every partition once");
        let none =
            Client::connect_per_shard(server.addr(), "spread", &[], ConnectionConfig::default())
                .unwrap();
        assert_eq!(none.len(), 1, "no partitions: one connection");
        assert!(none[0].1.is_empty());
    }
}

#[test]
fn equal_keys_land_on_one_partition() {
    let server = TestServer::start(2);
    server.create_topic("keys", 3);
    let producer = Producer::connect(server.addr(), "keys", ProducerConfig::default()).unwrap();
    let mut partitions = HashMap::new();
    for round in 0..3 {
        for key in ["alpha", "beta", "gamma", "delta"] {
            let value = format!("{key}-{round}");
            let handle = producer
                .send(&ProducerRecord::new(value.as_bytes()).with_key(key.as_bytes()))
                .unwrap();
            let partition = handle.wait().unwrap().partition;
            assert_eq!(
                *partitions.entry(key).or_insert(partition),
                partition,
                "key {key} moved"
            );
            // Kafka's default partitioner: murmur2(key) & 0x7fffffff % partitions.
            assert_eq!(
                partition,
                ringlog_net::client::partitioner::partition_for_key(key.as_bytes(), 3)
            );
        }
    }
    producer.close().unwrap();
}

#[test]
fn replay_from_offset_and_timestamp() {
    let server = TestServer::start(1);
    server.create_topic("replay", 1);
    let producer = Producer::connect(server.addr(), "replay", ProducerConfig::default()).unwrap();
    for n in 0..10i64 {
        let value = n.to_string();
        let record = ProducerRecord::new(value.as_bytes())
            .with_partition(0)
            .with_timestamp_ms(1_000_000 + n * 1000);
        producer.send(&record).unwrap().wait().unwrap();
    }
    producer.close().unwrap();
    let mut consumer = Consumer::connect(server.addr(), ConsumerConfig::default()).unwrap();
    consumer.assign("replay", &[0]);
    consumer.seek(0, SeekTo::Offset(7)).unwrap();
    let first = consumer
        .poll(Duration::from_secs(5))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .offset;
    assert_eq!(first, 7);
    consumer.seek(0, SeekTo::Timestamp(1_004_500)).unwrap();
    let first = consumer
        .poll(Duration::from_secs(5))
        .unwrap()
        .next()
        .unwrap()
        .unwrap();
    assert_eq!(first.offset, 5, "first record at or after the timestamp");
    consumer.seek(0, SeekTo::Latest).unwrap();
    assert_eq!(consumer.position(0), Some(10));
}

/// Seeking by time inside one batch lands on the first record at or after the time, not on
/// the batch's first record (which is stamped earlier).
#[test]
fn a_timestamp_inside_a_batch_finds_its_record() {
    let server = TestServer::start(1);
    server.create_topic("within", 1);
    let config = ProducerConfig {
        // One batch: nothing is sent before the flush.
        linger_ms: 60_000,
        ..ProducerConfig::default()
    };
    let producer = Producer::connect(server.addr(), "within", config).unwrap();
    let handles: Vec<_> = (0..10i64)
        .map(|n| {
            let value = n.to_string();
            let record = ProducerRecord::new(value.as_bytes())
                .with_partition(0)
                .with_timestamp_ms(1_000_000 + n * 1000);
            producer.send(&record).unwrap()
        })
        .collect();
    producer.flush().unwrap();
    producer.close().unwrap();
    assert!(handles.iter().all(|h| h.wait().is_ok()));
    let mut consumer = Consumer::connect(server.addr(), ConsumerConfig::default()).unwrap();
    consumer.assign("within", &[0]);
    consumer.seek(0, SeekTo::Timestamp(1_004_500)).unwrap();
    assert_eq!(consumer.position(0), Some(5));
    let first = consumer
        .poll(Duration::from_secs(5))
        .unwrap()
        .next()
        .unwrap()
        .unwrap();
    assert_eq!((first.offset, first.timestamp_ms), (5, 1_005_000));
}

/// A consumer's long poll answers when a record arrives, long before its max_wait. The record
/// is produced only once the poll waits (produced first, the fetch would find it on its first
/// read, and the test would pass with wakes broken): the consumer reads both partitions over
/// one connection, so the shard that does not hold the connection counts the wait it holds for
/// it (`ringlog_shard_remote_waits`), which it asks for in the same pass as the connection's
/// own shard starts waiting.
#[test]
fn long_poll_wakes_when_data_arrives() {
    let server = TestServer::start_with_metrics(2, Some("127.0.0.1:0".parse().unwrap()));
    let metrics = server.handle.as_ref().unwrap().metrics_addr().unwrap();
    server.create_topic("poll", 2);
    let addr = server.addr();
    let mut consumer = Consumer::connect(
        addr,
        ConsumerConfig {
            max_wait_ms: 10_000,
            connection_per_shard: false,
            ..ConsumerConfig::default()
        },
    )
    .unwrap();
    consumer.assign("poll", &[0, 1]);
    consumer.seek_all(SeekTo::Latest).unwrap();
    let producer_thread = std::thread::spawn(move || {
        common::await_remote_waits(metrics, 1, "the consumer's long poll never waited");
        let producer = Producer::connect(addr, "poll", ProducerConfig::default()).unwrap();
        producer
            .send(&ProducerRecord::new(b"wake").with_partition(1))
            .unwrap()
            .wait()
            .unwrap();
        producer.close().unwrap();
    });
    let start = Instant::now();
    let mut got = Vec::new();
    while got.is_empty() {
        for record in consumer.poll(Duration::from_secs(20)).unwrap() {
            got.push(record.unwrap().value.unwrap().to_vec());
        }
        assert!(start.elapsed() < Duration::from_secs(20));
    }
    assert_eq!(got, vec![b"wake".to_vec()]);
    assert!(
        start.elapsed() < Duration::from_secs(9),
        "the poll ended on data, not on max_wait"
    );
    producer_thread.join().unwrap();
}

/// A consumer of partitions on two shards has a long poll on each shard's connection; a poll
/// returns the first answer with records and leaves the other long poll on its way for the
/// next poll. Records alternate irregularly between the shards, each produced only after the
/// last one was read: each arrives once, in order, and a zero-timeout poll in between finds
/// nothing.
#[test]
fn a_consumer_of_two_shards_carries_its_long_polls_across_polls() {
    let server = TestServer::start(2);
    server.create_topic("carry", 4);
    let mut by_shard: HashMap<u16, u32> = HashMap::new();
    for info in &server.client().metadata(&["carry"]).unwrap()[0].partitions {
        by_shard.entry(info.shard).or_insert(info.partition);
    }
    let (a, b) = (by_shard[&0], by_shard[&1]);
    let mut consumer = Consumer::connect(server.addr(), ConsumerConfig::default()).unwrap();
    consumer.assign("carry", &[a, b]);
    consumer.seek_all(SeekTo::Latest).unwrap();
    let producer = Producer::connect(server.addr(), "carry", ProducerConfig::default()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    for round in 0..24u32 {
        let partition = if round % 3 == 0 || round % 7 == 0 {
            b
        } else {
            a
        };
        let value = format!("r{round}");
        producer
            .send(&ProducerRecord::new(value.as_bytes()).with_partition(partition))
            .unwrap()
            .wait()
            .unwrap();
        let mut got = Vec::new();
        while got.is_empty() {
            assert!(Instant::now() < deadline, "round {round} never arrived");
            for record in consumer.poll(Duration::from_secs(5)).unwrap() {
                let record = record.unwrap();
                let text = String::from_utf8(record.value.unwrap().to_vec()).unwrap();
                got.push((record.partition, text));
            }
        }
        assert_eq!(got, [(partition, value)], "round {round}");
        assert_eq!(
            consumer.poll(Duration::ZERO).unwrap().count(),
            0,
            "round {round}"
        );
    }
    producer.close().unwrap();
}

/// Produces `numbers` to `topic` at `addr`, number `n` to partition `n % partitions`, and
/// waits until every one is stored.
fn produce_numbers(addr: &str, topic: &str, partitions: u32, numbers: std::ops::Range<u32>) {
    let config = ProducerConfig {
        linger_ms: 1,
        ..ProducerConfig::default()
    };
    let producer = Producer::connect(addr, topic, config).unwrap();
    for n in numbers {
        let value = n.to_string();
        let record = ProducerRecord::new(value.as_bytes()).with_partition(n % partitions);
        producer.send(&record).unwrap();
    }
    producer.close().unwrap();
}

/// Polls `consumer` until `out` holds `count` records (failing the test after 60 s); every
/// poll must succeed.
fn poll_until(consumer: &mut Consumer, out: &mut Vec<(u32, i64, String)>, count: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while out.len() < count {
        assert!(
            Instant::now() < deadline,
            "only {} of {count} records arrived",
            out.len()
        );
        for record in consumer.poll(Duration::from_millis(200)).unwrap() {
            let record = record.unwrap();
            let value = String::from_utf8(record.value.unwrap().to_vec()).unwrap();
            out.push((record.partition, record.offset, value));
        }
    }
}

/// Every number below `count` once, each partition's offsets dense from 0 with its numbers
/// in order.
fn check_every_number_once_in_order(records: &[(u32, i64, String)], count: u32) {
    let mut numbers: Vec<u32> = records.iter().map(|(_, _, v)| v.parse().unwrap()).collect();
    numbers.sort_unstable();
    assert_eq!(numbers, (0..count).collect::<Vec<_>>(), "{records:?}");
    let mut next: HashMap<u32, (i64, u32)> = HashMap::new();
    for (partition, offset, value) in records {
        let number: u32 = value.parse().unwrap();
        let (expected, last) = next.get(partition).copied().unwrap_or((0, 0));
        assert_eq!(*offset, expected, "partition {partition}: {records:?}");
        assert!(number >= last, "partition {partition}: {records:?}");
        next.insert(*partition, (offset + 1, number));
    }
}

/// Creates `topic` with `partitions` partitions on the server at `addr`, produces the numbers
/// below `count` to it, and returns a consumer of all its partitions from the earliest offset.
fn numbers_and_a_consumer(addr: &str, topic: &str, partitions: u32, count: u32) -> Consumer {
    create_topic_at(addr, topic, partitions);
    produce_numbers(addr, topic, partitions, 0..count);
    let config = ConsumerConfig {
        auto_offset_reset: AutoOffsetReset::Earliest,
        ..ConsumerConfig::default()
    };
    let mut consumer = Consumer::connect(addr, config).unwrap();
    consumer.assign_all(topic).unwrap();
    consumer
}

/// A consumer of 4 partitions on 2 shards reads some records, the server restarts in place
/// (by SIGTERM, or SIGKILL with `kill`), more records come: the same consumer reads on, with
/// no poll failing, and returns every record once, in order per partition.
fn a_consumer_reads_on_across_a_restart(kill: bool) {
    let mut server = common::TestServer::start(2);
    let addr = server.addr().to_owned();
    let mut consumer = numbers_and_a_consumer(&addr, "moves", 4, 40);
    let mut got = Vec::new();
    poll_until(&mut consumer, &mut got, 1);
    if kill {
        server.kill_and_restart_in_place();
    } else {
        server.restart_in_place();
    }
    assert_eq!(server.addr(), addr);
    produce_numbers(&addr, "moves", 4, 40..80);
    poll_until(&mut consumer, &mut got, 80);
    check_every_number_once_in_order(&got, 80);
    assert_eq!(
        consumer.poll(Duration::from_millis(100)).unwrap().count(),
        0,
        "nothing twice"
    );
}

#[test]
fn a_consumer_reads_on_across_a_restart_in_place() {
    a_consumer_reads_on_across_a_restart(false);
}

#[test]
fn a_consumer_reads_on_across_a_kill_and_restart_in_place() {
    a_consumer_reads_on_across_a_restart(true);
}

/// While the server is down, polls return no records at their timeout rather than an error;
/// once it is back, reading goes on where it stopped.
#[test]
fn a_poll_while_the_server_is_down_returns_no_records_then_reading_resumes() {
    let mut server = common::TestServer::start(2);
    let addr = server.addr().to_owned();
    let mut consumer = numbers_and_a_consumer(&addr, "outage", 2, 10);
    let mut got = Vec::new();
    poll_until(&mut consumer, &mut got, 10);

    server.stop();
    for timeout in [
        Duration::ZERO,
        Duration::from_millis(300),
        Duration::from_millis(300),
    ] {
        let started = Instant::now();
        let polled = consumer.poll(timeout).map(Iterator::count);
        let took = started.elapsed();
        assert!(matches!(polled, Ok(0)), "{polled:?}");
        assert!(
            took >= timeout,
            "the poll waited for its timeout ({took:?})"
        );
        // Refused connections fail at once: nothing holds the poll much past its timeout.
        assert!(took < timeout + Duration::from_secs(2), "{took:?}");
    }

    server.start_again_in_place();
    produce_numbers(&addr, "outage", 2, 10..20);
    poll_until(&mut consumer, &mut got, 20);
    check_every_number_once_in_order(&got, 20);
}

/// A long poll with `min_bytes` waits for that many bytes, not for the first batch: one
/// batch is there when the fetch starts and a second arrives while it waits; the answer holds
/// both. Before, data at the fetch offset ended the wait at once, so `min_bytes` worked as 1.
/// On 2 shards the partition read is on the other shard than the connection for one of the
/// two partitions.
#[test]
fn a_long_poll_waits_for_min_bytes() {
    use ringlog_net::message::fetch::{self, FetchPartition, FetchTopic};
    for shards in [1, 2] {
        let server = TestServer::start(shards);
        server.create_topic("gather", 2);
        for partition in 0..2 {
            let mut producer_client = server.client();
            let (first, second) = (one_batch(b"first"), one_batch(b"second"));
            producer_client
                .produce("gather", partition, Acks::Durable, &first)
                .unwrap();
            let mut client = server.client();
            let partitions = [FetchPartition {
                partition,
                offset: 0,
                partition_max_bytes: 1 << 20,
            }];
            let topics = [FetchTopic {
                topic: "gather",
                partitions: &partitions,
            }];
            let wanted = u32::try_from(first.len() + second.len()).unwrap();
            let pending = client
                .send_fetch(&fetch::Request {
                    max_wait_ms: 30_000,
                    min_bytes: wanted,
                    max_bytes: 1 << 20,
                    topics: &topics,
                })
                .unwrap();
            // Answered after the fetch was read (requests are read in order): it waits now.
            client.metadata(&["gather"]).unwrap();
            producer_client
                .produce("gather", partition, Acks::Durable, &second)
                .unwrap();
            let result = client.receive_fetch(pending).unwrap();
            let fetched = result.partitions().unwrap().next().unwrap();
            let bases: Vec<i64> = ringlog_engine::batch::BatchIter::new(fetched.batches)
                .map(|batch| batch.unwrap().0.base_offset)
                .collect();
            assert_eq!(bases, [0, 1], "{shards} shards, partition {partition}");
            assert_eq!(fetched.batches.len(), wanted as usize);
        }
    }
}

#[test]
fn unknown_topic_partition_and_offset_errors() {
    let server = TestServer::start(2);
    server.create_topic("known", 2);
    let mut client = server.client();
    let error = client.metadata(&["missing"]).unwrap_err();
    assert_eq!(error.code(), Some(ErrorCode::UnknownTopic), "{error}");
    let batch = one_batch(b"x");
    let error = client
        .produce("missing", 0, Acks::Durable, &batch)
        .unwrap_err();
    assert_eq!(error.code(), Some(ErrorCode::UnknownTopic), "{error}");
    let error = client
        .produce("known", 9, Acks::Durable, &batch)
        .unwrap_err();
    assert_eq!(error.code(), Some(ErrorCode::UnknownPartition), "{error}");
    let strict = ConsumerConfig {
        auto_offset_reset: AutoOffsetReset::Error,
        ..ConsumerConfig::default()
    };
    let mut consumer = Consumer::connect(server.addr(), strict).unwrap();
    consumer.assign("known", &[0]);
    consumer.seek(0, SeekTo::Offset(1000)).unwrap();
    let error = match consumer.poll(Duration::from_secs(1)) {
        Err(error) => error,
        Ok(_) => panic!("an offset past the end is an error"),
    };
    assert_eq!(error.code(), Some(ErrorCode::OffsetOutOfRange), "{error}");
    let error = server
        .client()
        .create_topic(&create_topic::Request {
            name: "known",
            partitions: 1,
            retention_ms: None,
            retention_bytes: None,
            segment_bytes: None,
        })
        .unwrap_err();
    assert_eq!(error.code(), Some(ErrorCode::TopicExists));
    let error = server
        .client()
        .create_topic(&create_topic::Request {
            name: "bad/name",
            partitions: 1,
            retention_ms: None,
            retention_bytes: None,
            segment_bytes: None,
        })
        .unwrap_err();
    assert_eq!(error.code(), Some(ErrorCode::InvalidRequest));
}

/// A raw Fetch of `partitions` of `topic` (min_bytes 1).
fn fetch_from_topic(
    client: &mut Client,
    topic: &str,
    partitions: &[ringlog_net::message::fetch::FetchPartition],
    max_wait_ms: u32,
    max_bytes: u32,
) -> ringlog_net::client::FetchResult {
    use ringlog_net::message::fetch::{self, FetchTopic};
    let topics = [FetchTopic { topic, partitions }];
    client
        .fetch(&fetch::Request {
            max_wait_ms,
            min_bytes: 1,
            max_bytes,
            topics: &topics,
        })
        .unwrap()
}

fn one_batch(value: &[u8]) -> Vec<u8> {
    batch_stamped(1_700_000_000_000, value)
}

/// One record with CreateTime `timestamp_ms`.
fn batch_stamped(timestamp_ms: i64, value: &[u8]) -> Vec<u8> {
    let mut builder = ringlog_engine::batch::BatchBuilder::new(Vec::new(), timestamp_ms);
    builder.push(timestamp_ms, None, Some(value), &[]).unwrap();
    builder.finish().to_vec()
}

/// A record stamped more than `message_timestamp_after_max_ms` (an hour by default) ahead of
/// the server's clock is refused, as Kafka 4.0 does: retention by age goes by a segment's
/// newest timestamp, and one record from a clock years ahead would keep its segment, and all
/// later ones, forever. Records up to the bound, and records without a timestamp, are taken.
#[test]
fn a_timestamp_far_ahead_of_the_server_clock_is_refused() {
    let server = TestServer::start(1);
    server.create_topic("clock", 1);
    let mut client = server.client();
    let now_ms = common::now_ms();
    let hour_ms = 3_600_000;
    let error = client
        .produce(
            "clock",
            0,
            Acks::Durable,
            &batch_stamped(now_ms + 2 * hour_ms, b"ahead"),
        )
        .unwrap_err();
    assert_eq!(error.code(), Some(ErrorCode::InvalidTimestamp), "{error}");
    for timestamp_ms in [now_ms + hour_ms / 2, -1, 0] {
        client
            .produce(
                "clock",
                0,
                Acks::Durable,
                &batch_stamped(timestamp_ms, b"fine"),
            )
            .unwrap();
    }
    let partitions = &client.metadata(&["clock"]).unwrap()[0].partitions;
    assert_eq!(
        partitions[0].high_watermark, 3,
        "only the refused batch is missing"
    );
}

#[test]
fn corrupt_batch_is_rejected_and_nothing_is_written() {
    let server = TestServer::start(1);
    server.create_topic("crc", 1);
    let mut client = server.client();
    let mut batch = one_batch(b"payload");
    let last = batch.len() - 1;
    batch[last] ^= 0x40;
    let error = client.produce("crc", 0, Acks::Durable, &batch).unwrap_err();
    assert_eq!(error.code(), Some(ErrorCode::CorruptBatch), "{error}");
    let topics = client.metadata(&["crc"]).unwrap();
    assert_eq!(
        topics[0].partitions[0].high_watermark, 0,
        "nothing was appended"
    );
    // The connection is still usable after a rejected request.
    client
        .produce("crc", 0, Acks::Durable, &one_batch(b"good"))
        .unwrap();
}

/// `one_batch(value)` with its attributes, lastOffsetDelta and recordsCount replaced (CRC
/// recomputed).
fn batch_claiming(attributes: i16, last_offset_delta: i32, records_count: i32) -> Vec<u8> {
    let mut batch = one_batch(b"marker");
    // RecordBatch v2: crc at 17..21, attributes at 21..23, lastOffsetDelta at 23..27,
    // recordsCount at 57..61.
    batch[21..23].copy_from_slice(&attributes.to_be_bytes());
    batch[23..27].copy_from_slice(&last_offset_delta.to_be_bytes());
    batch[57..61].copy_from_slice(&records_count.to_be_bytes());
    let crc = ringlog_engine::batch::crc_of(&batch);
    batch[17..21].copy_from_slice(&crc.to_be_bytes());
    batch
}

/// Whole batches with a right CRC that the server does not take: claims of offsets their
/// records cannot hold, control batches (the server's to write) and transactional ones (no
/// transactions here). All answer InvalidRecord, which clients do not retry.
#[test]
fn batches_claiming_offsets_they_do_not_hold_are_refused() {
    const CONTROL: i16 = 0x20;
    const TRANSACTIONAL: i16 = 0x10;
    let server = TestServer::start(1);
    server.create_topic("claims", 1);
    let mut client = server.client();
    const GZIP: i16 = 0x01;
    let claims = [
        (CONTROL, i32::MAX, 1),
        (CONTROL, i32::MAX - 1, i32::MAX),
        (CONTROL, 5, 6),
        (0, i32::MAX, 1),
        // Consistent counts, but far more records than the bytes can hold: such batches once
        // made a segment roll every second batch (offsets past 2^32 in a segment).
        (0, i32::MAX - 1, i32::MAX),
        (0, 1_000, 1_001),
        (GZIP, i32::MAX - 1, i32::MAX),
        // Well-formed control and transactional batches, one record at its one offset.
        (CONTROL, 0, 1),
        (TRANSACTIONAL, 0, 1),
        (CONTROL | TRANSACTIONAL, 0, 1),
    ];
    for (attributes, last_offset_delta, records_count) in claims {
        let batch = batch_claiming(attributes, last_offset_delta, records_count);
        let error = client
            .produce("claims", 0, Acks::Durable, &batch)
            .unwrap_err();
        assert_eq!(
            error.code(),
            Some(ErrorCode::InvalidRecord),
            "{attributes:#x} {last_offset_delta} {records_count}: {error}"
        );
        assert!(!error.is_retriable());
    }
    let topics = client.metadata(&["claims"]).unwrap();
    assert_eq!(
        topics[0].partitions[0].high_watermark, 0,
        "nothing appended"
    );
    assert_eq!(
        client
            .produce("claims", 0, Acks::Durable, &batch_claiming(0, 0, 1))
            .unwrap(),
        Some(0)
    );
}

/// An uncompressed batch whose header is consistent (recordsCount = lastOffsetDelta + 1, a
/// right CRC) but whose records are malformed is refused, as Kafka's broker refuses it after
/// reading every record (LogValidator): stored, it would stop every consumer at its offset.
#[test]
fn uncompressed_batches_with_malformed_records_are_refused() {
    use ringlog_engine::batch::{crc_of, validate, validate_records};
    // One record, null key, 20-byte value, no headers, timestamp delta 0, offset delta 0:
    // [61] length, [62] attributes, [63] timestampDelta, [64] offsetDelta, [65] key -1,
    // [66] value length, [67..87] value, [87] headerCount.
    let good = one_batch(&[b'v'; 20]);
    assert_eq!(good.len(), 88);
    assert_eq!((good[65], good[66], good[87]), (0x01, 40, 0x00));
    let fix = |mut batch: Vec<u8>| {
        let length = (batch.len() - 12) as i32;
        batch[8..12].copy_from_slice(&length.to_be_bytes());
        let crc = crc_of(&batch);
        batch[17..21].copy_from_slice(&crc.to_be_bytes());
        batch
    };
    let mut cases: Vec<(&str, Vec<u8>)> = Vec::new();
    // The record's length runs past the end of the batch (63 > 26 bytes left).
    let mut batch = good.clone();
    batch[61] = 0x7e;
    cases.push(("record length past the batch", fix(batch)));
    // Header count -1 (Kafka: "Found invalid number of record headers -1").
    let mut batch = good.clone();
    batch[87] = 0x01;
    cases.push(("negative header count", fix(batch)));
    // recordsCount 2, lastOffsetDelta 1, one record present (Kafka: premature EOF).
    let mut batch = good.clone();
    batch[23..27].copy_from_slice(&1i32.to_be_bytes());
    batch[57..61].copy_from_slice(&2i32.to_be_bytes());
    cases.push(("recordsCount 2 but one record", fix(batch)));
    // Seven bytes after the last of recordsCount records (Kafka: "Incorrect declared batch
    // size, records still remaining in file").
    let mut batch = good.clone();
    batch.extend_from_slice(&[0u8; 7]);
    cases.push(("bytes after the last record", fix(batch)));

    let server = TestServer::start(1);
    server.create_topic("records", 1);
    let mut client = server.client();
    let mut accepted = Vec::new();
    for (name, batch) in &cases {
        // The header is fine, ringlog's own record reader is not.
        validate(batch).unwrap();
        assert!(validate_records(batch).is_err(), "{name}");
        match client.produce("records", 0, Acks::Durable, batch) {
            Ok(offset) => accepted.push(format!(
                "{name}: stored at {offset:?} ({:?})",
                validate_records(batch).unwrap_err()
            )),
            Err(error) => assert!(
                matches!(
                    error.code(),
                    Some(ErrorCode::CorruptBatch) | Some(ErrorCode::InvalidRecord)
                ),
                "{name}: {error}"
            ),
        }
    }
    assert!(
        accepted.is_empty(),
        "batches with malformed records were stored: {accepted:#?}"
    );
}

/// The bound on timestamps ahead of the server's clock holds for every record, not only for
/// the header's maxTimestamp (a header claiming "now" over a record stamped ten years ahead),
/// as Kafka's LogValidator checks each record.
#[test]
fn a_record_far_ahead_is_refused_whatever_the_header_max_claims() {
    let now_ms = common::now_ms();
    let ahead_ms = now_ms + 10 * 365 * 24 * 3_600_000;
    let mut builder = ringlog_engine::batch::BatchBuilder::new(Vec::new(), now_ms);
    builder.push(ahead_ms, None, Some(b"future"), &[]).unwrap();
    let mut batch = builder.finish().to_vec();
    batch[35..43].copy_from_slice(&now_ms.to_be_bytes()); // maxTimestamp
    let crc = ringlog_engine::batch::crc_of(&batch);
    batch[17..21].copy_from_slice(&crc.to_be_bytes());
    let record_ms = {
        let records = ringlog_engine::batch::records(&batch).unwrap();
        let base_ms = records.header().base_timestamp_ms;
        let record = records.into_iter().next().unwrap().unwrap();
        record.timestamp_ms(base_ms)
    };
    assert_eq!(record_ms, ahead_ms);

    let server = TestServer::start(1);
    server.create_topic("ahead", 1);
    let mut client = server.client();
    let result = client.produce("ahead", 0, Acks::Durable, &batch);
    assert_eq!(
        result.as_ref().err().and_then(|e| e.code()),
        Some(ErrorCode::InvalidTimestamp),
        "a record stamped ten years ahead was answered {result:?}"
    );
}

/// A header maxTimestamp that understates the newest record is corrected, as Kafka's broker
/// does (LogValidator sets it from the records): time lookups and retention go by it, and a
/// seek by time would otherwise skip that record (Kafka answers offset 1 here).
#[test]
fn a_seek_by_time_finds_a_record_the_header_max_understates() {
    let mut builder = ringlog_engine::batch::BatchBuilder::new(Vec::new(), 1_000_000);
    builder.push(1_000_000, None, Some(b"0"), &[]).unwrap();
    builder.push(1_002_000, None, Some(b"1"), &[]).unwrap();
    let mut batch = builder.finish().to_vec();
    batch[35..43].copy_from_slice(&1_000_000i64.to_be_bytes()); // maxTimestamp
    let crc = ringlog_engine::batch::crc_of(&batch);
    batch[17..21].copy_from_slice(&crc.to_be_bytes());

    let server = TestServer::start(1);
    server.create_topic("understated", 1);
    let mut client = server.client();
    // Kafka stores the batch (with its maxTimestamp corrected): a refusal is a failure too.
    let stored = client.produce("understated", 0, Acks::Durable, &batch);
    assert_eq!(stored.as_ref().ok(), Some(&Some(0)), "{stored:?}");
    let mut consumer = Consumer::connect(server.addr(), ConsumerConfig::default()).unwrap();
    consumer.assign("understated", &[0]);
    consumer.seek(0, SeekTo::Timestamp(1_001_000)).unwrap();
    assert_eq!(
        consumer.position(0),
        Some(1),
        "the record at offset 1 is stamped 1_002_000 >= 1_001_000"
    );
    // The stored header says so too.
    let partitions = [ringlog_net::message::fetch::FetchPartition {
        partition: 0,
        offset: 0,
        partition_max_bytes: 1 << 20,
    }];
    let result = fetch_from_topic(&mut client, "understated", &partitions, 0, 1 << 20);
    let fetched = result.partitions().unwrap().next().unwrap();
    let header = ringlog_engine::batch::BatchHeader::parse(fetched.batches).unwrap();
    assert_eq!(header.max_timestamp_ms, 1_002_000);
}

fn raw_frame(api: u16, version: u16, correlation_id: u32, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&((8 + body.len()) as u32).to_le_bytes());
    out.extend_from_slice(&api.to_le_bytes());
    out.extend_from_slice(&version.to_le_bytes());
    out.extend_from_slice(&correlation_id.to_le_bytes());
    out.extend_from_slice(body);
    out
}

fn read_response(stream: &mut TcpStream) -> Option<(u32, ErrorCode)> {
    let mut length = [0u8; 4];
    stream.read_exact(&mut length).ok()?;
    let mut rest = vec![0u8; u32::from_le_bytes(length) as usize];
    stream.read_exact(&mut rest).ok()?;
    let correlation_id = u32::from_le_bytes(rest[4..8].try_into().unwrap());
    let body = &rest[8..];
    let view =
        flatbuffers::size_prefixed_root::<ringlog_net::protocol::ErrorResponse>(body).ok()?;
    Some((correlation_id, ErrorCode::from_u16(view.error_code())))
}

#[test]
fn bad_frames_get_errors_and_other_clients_are_unaffected() {
    let server = TestServer::start(2);
    server.create_topic("safe", 1);
    let bystander = Producer::connect(server.addr(), "safe", ProducerConfig::default()).unwrap();

    // Unknown api: an error response, and the connection stays open.
    let mut stream = TcpStream::connect(server.addr()).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
        .write_all(&raw_frame(999, 0, 7, &[4, 0, 0, 0, 0, 0, 0, 0]))
        .unwrap();
    assert_eq!(
        read_response(&mut stream),
        Some((7, ErrorCode::UnsupportedVersion))
    );
    // Unsupported version of a known api.
    stream
        .write_all(&raw_frame(0, 99, 8, &[4, 0, 0, 0, 0, 0, 0, 0]))
        .unwrap();
    assert_eq!(
        read_response(&mut stream),
        Some((8, ErrorCode::UnsupportedVersion))
    );
    // A body that is not a valid flatbuffer.
    stream
        .write_all(&raw_frame(1, 0, 9, &[4, 0, 0, 0, 0xff, 0xff, 0xff, 0x7f]))
        .unwrap();
    assert_eq!(
        read_response(&mut stream),
        Some((9, ErrorCode::InvalidRequest))
    );
    // A frame over the limit: an error, then the connection closes.
    let mut huge = Vec::new();
    huge.extend_from_slice(&(1u32 << 30).to_le_bytes());
    huge.extend_from_slice(&5u16.to_le_bytes());
    huge.extend_from_slice(&0u16.to_le_bytes());
    huge.extend_from_slice(&10u32.to_le_bytes());
    stream.write_all(&huge).unwrap();
    assert_eq!(
        read_response(&mut stream),
        Some((10, ErrorCode::FrameTooLarge))
    );
    let mut rest = Vec::new();
    assert_eq!(
        stream.read_to_end(&mut rest).unwrap_or(0),
        0,
        "closed after a framing error"
    );

    // Garbage and a disconnect in the middle of a frame.
    let mut garbage = TcpStream::connect(server.addr()).unwrap();
    garbage.write_all(&[3, 0, 0, 0, 1, 2, 3]).unwrap();
    drop(garbage);
    let mut partial = TcpStream::connect(server.addr()).unwrap();
    partial
        .write_all(&raw_frame(5, 0, 1, &[0u8; 64])[..30])
        .unwrap();
    drop(partial);

    // Everyone else still works.
    bystander
        .send(&ProducerRecord::new(b"still fine"))
        .unwrap()
        .wait()
        .unwrap();
    bystander.close().unwrap();
    let records = consume(&server, "safe", SeekTo::Earliest, 1);
    assert_eq!(records[0].2, "still fine");
}

#[test]
fn a_fetch_of_partitions_on_both_shards_keeps_the_response_limits() {
    use ringlog_net::message::fetch::FetchPartition;
    let server = TestServer::start(2);
    server.create_topic("limits", 2);
    let mut client = server.client();
    // One 10 KB batch in each partition (one per shard).
    let value = vec![7u8; 10_000];
    for partition in 0..2 {
        let mut builder = ringlog_engine::batch::BatchBuilder::new(Vec::new(), 0);
        builder.push(0, None, Some(&value), &[]).unwrap();
        client
            .produce("limits", partition, Acks::Leader, builder.finish())
            .unwrap();
    }
    let fetched_bytes = |client: &mut Client, partition_max_bytes: u32, max_bytes: u32| {
        let partitions: Vec<FetchPartition> = (0..2)
            .map(|partition| FetchPartition {
                partition,
                offset: 0,
                partition_max_bytes,
            })
            .collect();
        let result = fetch_from_topic(client, "limits", &partitions, 0, max_bytes);
        let sizes: Vec<(usize, i64, i64)> = result
            .partitions()
            .unwrap()
            .map(|fetched| {
                let marks = (fetched.high_watermark, fetched.log_start_offset);
                (fetched.batches.len(), marks.0, marks.1)
            })
            .collect();
        sizes
    };
    // Partition limits that fit the response (read at once): each partition gets at least
    // one batch, over its own limit, while the response has room for it.
    let both = fetched_bytes(&mut client, 5_000, 1 << 20);
    assert!(both.iter().all(|&(bytes, ..)| bytes > 10_000), "{both:?}");
    // Once the response has no room left for the second partition's batch (read at once, one
    // by one, or when the first batch alone passes the limit), that partition gets nothing,
    // but its watermarks all the same (as from Kafka: consumers compute their lag from
    // them); only the first batch of the response may pass its limit.
    for (partition_max_bytes, max_bytes) in [
        (5_000, 12_000),
        (1 << 20, 12_000),
        (5_000, 10_000),
        (1 << 20, 10_000),
    ] {
        let first_only = fetched_bytes(&mut client, partition_max_bytes, max_bytes);
        assert!(first_only[0].0 > 10_000, "{first_only:?}");
        assert_eq!(first_only[1], (0, 1, 0), "{first_only:?}");
    }
}

#[test]
fn client_that_never_reads_does_not_block_others() {
    let server = TestServer::start(1);
    server.create_topic("flood", 1);
    produce_values(
        &server,
        "flood",
        (0..2000).map(|n| format!("{n:0>512}")),
        false,
    );
    // A client pipelines fetches and never reads the responses.
    let mut lazy = TcpStream::connect(server.addr()).unwrap();
    let mut fbb = flatbuffers::FlatBufferBuilder::new();
    use ringlog_net::message::{fetch, Encode};
    let partitions = [fetch::FetchPartition {
        partition: 0,
        offset: 0,
        partition_max_bytes: 1 << 20,
    }];
    let topics = [fetch::FetchTopic {
        topic: "flood",
        partitions: &partitions,
    }];
    let request = fetch::Request {
        max_wait_ms: 0,
        min_bytes: 1,
        max_bytes: 1 << 20,
        topics: &topics,
    };
    let body = request.encode(&mut fbb).to_vec();
    lazy.set_write_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    for correlation_id in 0..10_000u32 {
        if lazy
            .write_all(&raw_frame(6, 0, correlation_id, &body))
            .is_err()
        {
            break; // The server stopped reading from us: back-pressure works.
        }
    }
    // Others are served meanwhile.
    let records = consume(&server, "flood", SeekTo::Earliest, 10);
    assert!(records.len() >= 10);
    drop(lazy);
}

#[test]
fn second_server_on_the_same_data_dir_is_refused() {
    let server = TestServer::start(1);
    let error = match Server::start(server.config()) {
        Err(error) => error.to_string(),
        Ok(_) => panic!("a second server started on a locked data dir"),
    };
    assert!(
        error.contains("in use by another ringlog server"),
        "{error}"
    );
}

fn altered_retention_applies_to_open_partitions_and_survives_restart(shards: usize) {
    let mut server = TestServer::start(shards);
    server.create_topic("shrinking", 2);
    let producer =
        Producer::connect(server.addr(), "shrinking", ProducerConfig::default()).unwrap();
    let value = vec![b'r'; 1000];
    for _ in 0..6 * 1024 {
        let record = ProducerRecord::new(&value).with_partition(1);
        producer.send(&record).unwrap();
    }
    producer.close().unwrap();
    let log_start = |server: &TestServer| {
        let topics = server.client().metadata(&["shrinking"]).unwrap();
        topics[0].partitions[1].log_start_offset
    };
    assert_eq!(log_start(&server), 0);

    let mut client = server.client();
    let altered = client
        .alter_topic(&alter_topic::Request {
            name: "shrinking",
            retention_ms: None,
            retention_bytes: Some(2 << 20),
            partitions: None,
        })
        .unwrap();
    assert_eq!(
        (
            altered.retention_ms,
            altered.retention_bytes,
            altered.segment_bytes
        ),
        (-1, 2 << 20, 1 << 20)
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while log_start(&server) == 0 {
        assert!(Instant::now() < deadline, "retention never ran");
        std::thread::yield_now();
    }

    server.restart();
    let topics = server.client().list_topics().unwrap();
    let shrinking = topics.iter().find(|t| t.name == "shrinking").unwrap();
    assert_eq!(shrinking.retention_bytes, 2 << 20, "the change persists");
    let mut client = server.client();
    let lift = alter_topic::Request {
        name: "shrinking",
        retention_ms: Some(3_600_000),
        retention_bytes: Some(-1),
        partitions: None,
    };
    let altered = client.alter_topic(&lift).unwrap();
    assert_eq!(
        (altered.retention_ms, altered.retention_bytes),
        (3_600_000, -1)
    );

    let unknown = alter_topic::Request {
        name: "never",
        ..lift
    };
    let error = client.alter_topic(&unknown).unwrap_err();
    assert_eq!(error.code(), Some(ErrorCode::UnknownTopic));
    let zero = alter_topic::Request {
        retention_ms: Some(0),
        ..lift
    };
    let error = client.alter_topic(&zero).unwrap_err();
    assert_eq!(error.code(), Some(ErrorCode::InvalidConfig));
}

#[test]
fn altered_retention_applies_one_shard() {
    altered_retention_applies_to_open_partitions_and_survives_restart(1);
}

#[test]
fn altered_retention_applies_two_shards() {
    altered_retention_applies_to_open_partitions_and_survives_restart(2);
}

#[test]
fn delete_topic_then_recreate_starts_empty() {
    let server = TestServer::start(2);
    server.create_topic("gone", 2);
    produce_values(&server, "gone", (0..100).map(|n| n.to_string()), false);
    server.client().delete_topic("gone").unwrap();
    let error: ClientError = server.client().metadata(&["gone"]).unwrap_err();
    assert_eq!(error.code(), Some(ErrorCode::UnknownTopic));
    server.create_topic("gone", 2);
    let topics = server.client().metadata(&["gone"]).unwrap();
    assert!(topics[0].partitions.iter().all(|p| p.high_watermark == 0));
}

/// The longest names Kafka's rules allow (249 characters) are deleted too, and a topic created
/// again under the name starts empty, before and after a restart.
#[test]
fn a_topic_with_the_longest_name_is_deleted_and_recreated_empty() {
    let mut server = TestServer::start(2);
    let name = "n".repeat(249);
    server.create_topic(&name, 2);
    produce_values(&server, &name, (0..10).map(|n| n.to_string()), false);
    server.client().delete_topic(&name).unwrap();
    server.create_topic(&name, 2);
    let topics = server.client().metadata(&[name.as_str()]).unwrap();
    assert!(topics[0].partitions.iter().all(|p| p.high_watermark == 0));
    server.restart();
    let topics = server.client().metadata(&[name.as_str()]).unwrap();
    assert!(topics[0].partitions.iter().all(|p| p.high_watermark == 0));
}

/// Adding partitions that one shard fails to open leaves the topic as it was: the partitions
/// another shard opened for it are not listed (a producer partitioning by key over the listed
/// count would send to partitions that do not exist), and a retry once the cause is gone adds
/// them all.
#[test]
fn partitions_added_by_a_failed_alter_are_not_listed() {
    let server = TestServer::start(2);
    server.create_topic("grow", 2);
    let topics = server.client().metadata(&["grow"]).unwrap();
    // Partition p + 2 has the owner of partition p; shard 1 opens its partitions after shard 0.
    let failing = 2 + topics[0]
        .partitions
        .iter()
        .find(|p| p.shard == 1)
        .unwrap()
        .partition;
    let blocker = server.dir.path().join("grow").join(failing.to_string());
    std::fs::write(&blocker, b"not a partition directory").unwrap();
    let grow = alter_topic::Request {
        name: "grow",
        retention_ms: None,
        retention_bytes: None,
        partitions: Some(4),
    };
    let error = server.client().alter_topic(&grow).unwrap_err();
    assert_eq!(error.code(), Some(ErrorCode::StorageError), "{error}");
    let listed: Vec<u32> = server.client().metadata(&["grow"]).unwrap()[0]
        .partitions
        .iter()
        .map(|p| p.partition)
        .collect();
    assert_eq!(listed, [0, 1]);
    std::fs::remove_file(&blocker).unwrap();
    let altered = server.client().alter_topic(&grow).unwrap();
    assert_eq!(altered.partitions, 4);
    let listed: Vec<u32> = server.client().metadata(&["grow"]).unwrap()[0]
        .partitions
        .iter()
        .map(|p| p.partition)
        .collect();
    assert_eq!(listed, [0, 1, 2, 3]);
}

/// A create that one shard fails leaves no topic behind: not one known to some shards only
/// (a create again says it exists, yet its partitions on the other shard are unknown), nor
/// one that a restart brings back. Once the cause is gone, the same create succeeds.
#[test]
fn a_create_that_fails_on_one_shard_leaves_no_half_topic() {
    let mut server = TestServer::start(2);
    // Shard 1 opens its partitions after shard 0 (the catalog shard).
    let failing = (0..2)
        .find(|&p| ringlog_engine::topic::owner_shard("half", p, 2) == 1)
        .unwrap();
    let topic_dir = server.dir.path().join("half");
    std::fs::create_dir(&topic_dir).unwrap();
    let blocker = topic_dir.join(failing.to_string());
    std::fs::write(&blocker, b"not a partition directory").unwrap();
    let request = create_topic::Request {
        name: "half",
        partitions: 2,
        retention_ms: None,
        retention_bytes: None,
        segment_bytes: Some(1 << 20),
    };
    let error = server.client().create_topic(&request).unwrap_err();
    assert_eq!(error.code(), Some(ErrorCode::StorageError), "{error}");
    let error = server.client().metadata(&["half"]).unwrap_err();
    assert_eq!(error.code(), Some(ErrorCode::UnknownTopic), "{error}");
    assert!(server.client().list_topics().unwrap().is_empty());
    server.restart();
    let error = server.client().metadata(&["half"]).unwrap_err();
    assert_eq!(error.code(), Some(ErrorCode::UnknownTopic), "{error}");
    std::fs::remove_file(&blocker).unwrap();
    server.client().create_topic(&request).unwrap();
    produce_values(&server, "half", (0..10).map(|n| n.to_string()), false);
    let topics = server.client().metadata(&["half"]).unwrap();
    assert_eq!(topics[0].partitions.len(), 2);
}

#[test]
fn a_second_server_cannot_share_the_port() {
    let server = TestServer::start(2);
    let other_dir = tempfile::tempdir().unwrap();
    let config = ServerConfig {
        data_dir: other_dir.path().to_path_buf(),
        listen: server.addr(),
        shards: Some(1),
        ..ServerConfig::default()
    };
    let error = match Server::start(config) {
        Err(error) => error.to_string(),
        Ok(_) => panic!("a second server joined the first one's port through SO_REUSEPORT"),
    };
    assert!(error.contains("cannot listen on"), "{error}");
}

#[test]
fn batches_spanning_several_memory_chunks_are_served_in_order() {
    let server = TestServer::start(1);
    server.create_topic("chunks", 1);
    let mut client = server.client();
    let large = vec![b'L'; 700_000];
    let mut expected = Vec::new();
    for round in 0..3 {
        let small = format!("small-{round}").into_bytes();
        for value in [&large, &small] {
            let offset = client
                .produce("chunks", 0, Acks::Durable, &one_batch(value))
                .unwrap();
            expected.push((offset.unwrap(), value.len()));
        }
    }
    let mut consumer = Consumer::connect(server.addr(), ConsumerConfig::default()).unwrap();
    consumer.assign("chunks", &[0]);
    consumer.seek(0, SeekTo::Earliest).unwrap();
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while got.len() < expected.len() {
        assert!(Instant::now() < deadline, "got only {got:?}");
        for record in consumer.poll(Duration::from_millis(200)).unwrap() {
            let record = record.unwrap();
            got.push((record.offset, record.value.unwrap().len()));
        }
    }
    assert_eq!(got, expected);
}

/// A fetch may name a partition any number of times: its response stays within the frame
/// limit whatever `max_bytes` says (a response past 4 GiB once took the shard down).
#[test]
fn a_fetch_naming_a_partition_thousands_of_times_stays_within_the_frame_limit() {
    use ringlog_net::message::fetch::FetchPartition;
    let server = TestServer::start(1);
    server.create_topic("repeated", 1);
    let mut client = server.client();
    let value = vec![3u8; 500_000];
    let mut builder = ringlog_engine::batch::BatchBuilder::new(Vec::new(), 0);
    builder.push(0, None, Some(&value), &[]).unwrap();
    let batch = builder.finish().to_vec();
    client.produce("repeated", 0, Acks::Leader, &batch).unwrap();
    // 9,000 times 500 KB: 4.5 GB asked for.
    let partitions = vec![
        FetchPartition {
            partition: 0,
            offset: 0,
            partition_max_bytes: u32::MAX,
        };
        9_000
    ];
    let result = fetch_from_topic(&mut client, "repeated", &partitions, 0, u32::MAX);
    let sizes: Vec<usize> = result
        .partitions()
        .unwrap()
        .map(|fetched| fetched.batches.len())
        .collect();
    assert_eq!(sizes.len(), 9_000);
    let total: usize = sizes.iter().sum();
    let frame_bytes_max = ServerConfig::default().frame_bytes_max;
    assert!(total > 0 && total <= frame_bytes_max, "{total} bytes");
    assert!(sizes.iter().all(|&size| size == 0 || size == batch.len()));
    // The shard is alive.
    client.list_topics().unwrap();
}

/// A long poll naming one partition thousands of times arms one wait, not one timer per
/// entry: the shard's writes go on, and the poll wakes for the new record.
#[test]
fn a_long_poll_naming_a_partition_many_times_still_wakes_for_new_data() {
    use ringlog_net::message::fetch::{self, FetchPartition, FetchTopic};
    let server = TestServer::start(1);
    server.create_topic("polled", 1);
    let mut client = server.client();
    // More entries than the ring has operation slots (16,384).
    let partitions = vec![
        FetchPartition {
            partition: 0,
            offset: 0,
            partition_max_bytes: 1 << 20,
        };
        20_000
    ];
    let topics = [FetchTopic {
        topic: "polled",
        partitions: &partitions,
    }];
    let pending = client
        .send_fetch(&fetch::Request {
            max_wait_ms: 60_000,
            min_bytes: 1,
            max_bytes: 1 << 20,
            topics: &topics,
        })
        .unwrap();
    // Answered after the fetch was read (requests are read in order): it waits now, and only
    // a wake answers it long before its max_wait (the case the timer flood broke: the
    // record's write queued behind the timers until they expired).
    client.metadata(&["polled"]).unwrap();
    let started = Instant::now();
    let mut producer = server.client();
    let mut builder = ringlog_engine::batch::BatchBuilder::new(Vec::new(), 0);
    builder.push(0, None, Some(b"wake up"), &[]).unwrap();
    producer
        .produce("polled", 0, Acks::Leader, builder.finish())
        .unwrap();
    let result = client.receive_fetch(pending).unwrap();
    let waited = started.elapsed();
    let total: usize = result
        .partitions()
        .unwrap()
        .map(|fetched| fetched.batches.len())
        .sum();
    assert!(total > 0, "the long poll returned the record");
    assert!(
        waited < Duration::from_secs(30),
        "the poll ended on its max_wait, not on the record ({waited:?})"
    );
}

/// A partition takes the batches of one produce request all or none: a refusal of one does
/// not leave those before it stored (a retry would store them twice).
#[test]
fn the_batches_of_a_refused_produce_are_stored_none_of_them() {
    let server = TestServer::start(1);
    server.create_topic("atomic", 1);
    let mut client = server.client();
    let high_watermark =
        |client: &mut Client| client.metadata(&["atomic"]).unwrap()[0].partitions[0].high_watermark;
    // A small batch, then one larger than the topic's 1 MiB segments.
    let mut request = one_batch(b"small");
    request.extend_from_slice(&one_batch(&vec![1u8; 1_100_000]));
    let error = client
        .produce("atomic", 0, Acks::Durable, &request)
        .unwrap_err();
    assert_eq!(error.code(), Some(ErrorCode::CorruptBatch), "{error}");
    assert_eq!(high_watermark(&mut client), 0);
    // Twenty batches of 900 KB, more than a partition holds unwritten (16 MiB): with nothing
    // waiting they are taken whole, as one batch of any size would be.
    let mut request = Vec::new();
    for _ in 0..20 {
        request.extend_from_slice(&one_batch(&vec![2u8; 900_000]));
    }
    assert_eq!(
        client
            .produce("atomic", 0, Acks::Durable, &request)
            .unwrap(),
        Some(0)
    );
    assert_eq!(high_watermark(&mut client), 20);
}

/// A batch damaged on disk after it was acknowledged (here the first of a closed segment, which
/// recovery checks only from its last index entry) is never served: the fetch that reaches it
/// fails with `CorruptBatch` naming the file, and a consumer that seeks past it goes on.
#[test]
fn a_batch_damaged_on_disk_is_refused_and_the_rest_is_served() {
    check_damaged_batch_refused_and_the_rest_served(0);
}

/// The same for the last batch of a closed segment, which recovery does check: the damage
/// costs that batch only. Before, the restart cut the segment there and dropped every later
/// segment, acknowledged records included (offsets 2 and 3 here, and the offsets were handed
/// out again to the next records produced).
#[test]
fn damage_found_at_restart_in_a_closed_segment_loses_only_the_damaged_batch() {
    check_damaged_batch_refused_and_the_rest_served(1);
}

/// Four 400 KB batches of one record each in 1 MiB segments (two per segment), a byte of
/// batch `damaged` (0 or 1, in the closed segment 0) changed on disk while the server is
/// down: after a restart a consumer gets every record but that one and is told of the damage.
fn check_damaged_batch_refused_and_the_rest_served(damaged: usize) {
    let mut server = TestServer::start(1);
    server.create_topic("damaged", 1);
    let mut client = server.client();
    // 400 KB batches in 1 MiB segments: two per segment, the third rolls.
    let values: Vec<Vec<u8>> = (0..4u8).map(|n| vec![b'a' + n; 400_000]).collect();
    let batches: Vec<Vec<u8>> = values.iter().map(|value| one_batch(value)).collect();
    for batch in &batches {
        client.produce("damaged", 0, Acks::Durable, batch).unwrap();
    }
    drop(client);
    server.handle.take().unwrap().shutdown();
    let segment = server.dir.path().join("damaged/0/00000000000000000000.log");
    let damaged_at: usize =
        batches[..damaged].iter().map(Vec::len).sum::<usize>() + batches[damaged].len() / 2;
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&segment)
        .unwrap();
    std::os::unix::fs::FileExt::write_all_at(&file, b"?", damaged_at as u64).unwrap();
    drop(file);
    server.restart();
    let partitions = &server.client().metadata(&["damaged"]).unwrap()[0].partitions;
    assert_eq!(partitions[0].high_watermark, 4, "nothing was dropped");

    let mut consumer = Consumer::connect(server.addr(), ConsumerConfig::default()).unwrap();
    consumer.assign("damaged", &[0]);
    consumer.seek(0, SeekTo::Offset(0)).unwrap();
    let mut served = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    let error = loop {
        assert!(
            Instant::now() < deadline,
            "the damage was never reported ({served:?})"
        );
        match consumer.poll(Duration::from_millis(200)) {
            Ok(records) => {
                for record in records {
                    served.push(record.unwrap().offset);
                }
            }
            Err(error) => break error,
        }
    };
    assert_eq!(error.code(), Some(ErrorCode::CorruptBatch), "{error}");
    assert!(
        error.to_string().contains("00000000000000000000.log"),
        "{error}"
    );
    let before: Vec<i64> = (0..damaged as i64).collect();
    assert_eq!(served, before, "nothing from the damaged batch");
    consumer
        .seek(0, SeekTo::Offset(damaged as i64 + 1))
        .unwrap();
    let mut after = Vec::new();
    while after.len() < 3 - damaged {
        assert!(Instant::now() < deadline, "only {after:?} after the damage");
        for record in consumer.poll(Duration::from_millis(200)).unwrap() {
            let record = record.unwrap();
            assert_eq!(record.value.unwrap(), values[record.offset as usize]);
            after.push(record.offset);
        }
    }
    let expected: Vec<i64> = (damaged as i64 + 1..4).collect();
    assert_eq!(after, expected);
}

/// A partition that cannot be opened stops the start, and the error names the shard that
/// owns it and the topic.
#[test]
fn a_start_that_fails_names_the_shard_and_the_topic() {
    let mut server = TestServer::start(2);
    server.create_topic("broken", 2);
    let topics = server.client().metadata(&["broken"]).unwrap();
    // A partition of shard 1, so that the shard named is not the first one by chance.
    let partition = topics[0]
        .partitions
        .iter()
        .find(|p| p.shard == 1)
        .unwrap()
        .partition;
    server.handle.take().unwrap().shutdown();
    // Its directory becomes a file: its log cannot be opened.
    let partition_dir = server.dir.path().join(format!("broken/{partition}"));
    std::fs::remove_dir_all(&partition_dir).unwrap();
    std::fs::write(&partition_dir, b"not a directory").unwrap();
    let error = match Server::start(server.config()) {
        Err(error) => error,
        Ok(_) => panic!("a partition that cannot be opened stops the start"),
    };
    let message = error.to_string();
    let expected = "shard 1 failed to start: topic broken:";
    assert!(message.starts_with(expected), "{message}");
}

/// A one-shard server whose frame limit is `frame_bytes_max`, in a directory of its own.
fn one_shard_server_framed_at(frame_bytes_max: usize) -> (tempfile::TempDir, ServerHandle) {
    let dir = tempfile::tempdir().unwrap();
    let config = ServerConfig {
        data_dir: dir.path().to_path_buf(),
        listen: "127.0.0.1:0".parse().unwrap(),
        shards: Some(1),
        cache_bytes_per_shard: 8 << 20,
        frame_bytes_max,
        ..ServerConfig::default()
    };
    let handle = Server::start(config).unwrap();
    (dir, handle)
}

/// The response of a fetch of two partitions fits the frame limit the server advertises,
/// however large their first batches are: with one 40 KB batch in each partition and a
/// 64 KiB limit, the second partition's batch does not fit what the first left (served, it
/// would make a ~80 KB frame that a client holding the advertised limit cannot receive).
#[test]
fn a_fetch_of_two_partitions_fits_the_advertised_frame_limit() {
    use ringlog_net::message::fetch::FetchPartition;
    let frame_bytes_max = 64 << 10;
    let (_dir, handle) = one_shard_server_framed_at(frame_bytes_max);
    let addr = handle.local_addr();
    create_topic_at(addr, "framed", 2);
    let client_config = ConnectionConfig {
        frame_bytes_max,
        ..ConnectionConfig::default()
    };
    let mut producer = Client::connect_with(addr, client_config).unwrap();
    let advertised = producer
        .api_versions("broker-test", "0")
        .unwrap()
        .frame_bytes_max as usize;
    assert_eq!(advertised, frame_bytes_max);
    let value = vec![5u8; 40_000];
    for partition in 0..2 {
        let mut builder = ringlog_engine::batch::BatchBuilder::new(Vec::new(), 0);
        builder.push(0, None, Some(&value), &[]).unwrap();
        producer
            .produce("framed", partition, Acks::Leader, builder.finish())
            .unwrap();
    }
    let mut client = Client::connect_with(addr, client_config).unwrap();
    let partitions: Vec<FetchPartition> = (0..2)
        .map(|partition| FetchPartition {
            partition,
            offset: 0,
            partition_max_bytes: u32::MAX,
        })
        .collect();
    use ringlog_net::message::fetch::{self, FetchTopic};
    let topics = [FetchTopic {
        topic: "framed",
        partitions: &partitions,
    }];
    let result = client.fetch(&fetch::Request {
        max_wait_ms: 0,
        min_bytes: 1,
        max_bytes: u32::MAX,
        topics: &topics,
    });
    match result {
        Ok(result) => {
            let len = result.frame().raw().len();
            assert!(len <= advertised, "response frame {len} > {advertised}");
        }
        Err(error) => panic!("a fetch within the advertised limits failed: {error}"),
    }
    handle.shutdown();
}

/// The same with one partition and a long poll: after a first round of 30 KB, a 40 KB batch
/// arriving does not fit what is left of the response (served, the frame would be ~70 KB
/// against the advertised 64 KiB).
#[test]
fn a_long_poll_of_one_partition_fits_the_advertised_frame_limit() {
    use ringlog_net::message::fetch::{self, FetchPartition, FetchTopic};
    let frame_bytes_max = 64 << 10;
    let (_dir, handle) = one_shard_server_framed_at(frame_bytes_max);
    let addr = handle.local_addr();
    create_topic_at(addr, "polled", 1);
    let client_config = ConnectionConfig {
        frame_bytes_max,
        ..ConnectionConfig::default()
    };
    let batch_of = |bytes: usize| {
        let mut builder = ringlog_engine::batch::BatchBuilder::new(Vec::new(), 0);
        builder.push(0, None, Some(&vec![9u8; bytes]), &[]).unwrap();
        builder.finish().to_vec()
    };
    let mut producer = Client::connect_with(addr, client_config).unwrap();
    producer
        .produce("polled", 0, Acks::Leader, &batch_of(30_000))
        .unwrap();
    let mut client = Client::connect_with(addr, client_config).unwrap();
    let partitions = [FetchPartition {
        partition: 0,
        offset: 0,
        partition_max_bytes: u32::MAX,
    }];
    let topics = [FetchTopic {
        topic: "polled",
        partitions: &partitions,
    }];
    let pending = client
        .send_fetch(&fetch::Request {
            max_wait_ms: 30_000,
            min_bytes: 60_000,
            max_bytes: u32::MAX,
            topics: &topics,
        })
        .unwrap();
    // Answered after the fetch was read (requests are read in order): it waits now.
    client.metadata(&["polled"]).unwrap();
    producer
        .produce("polled", 0, Acks::Leader, &batch_of(40_000))
        .unwrap();
    match client.receive_fetch(pending) {
        Ok(result) => {
            let len = result.frame().raw().len();
            assert!(
                len <= frame_bytes_max,
                "response frame {len} > {frame_bytes_max}"
            );
        }
        Err(error) => panic!("a long poll within the advertised limits failed: {error}"),
    }
    handle.shutdown();
}

/// The server serves a later partition of a fetch only what still fits the response, so a
/// consumer must not always ask for a busy partition first: with a backlog of ten responses
/// on partition 0, partition 1's record arrives within the first two, not after the backlog.
#[test]
fn a_consumer_reaches_every_partition_while_one_has_a_backlog() {
    let server = TestServer::start(1);
    server.create_topic("backlog", 2);
    let mut client = server.client();
    let value = vec![b'x'; 10_000];
    for (partition, batches) in [(0u32, 10), (1, 1)] {
        for _ in 0..batches {
            let mut builder = ringlog_engine::batch::BatchBuilder::new(Vec::new(), 0);
            builder.push(0, None, Some(&value), &[]).unwrap();
            client
                .produce("backlog", partition, Acks::Leader, builder.finish())
                .unwrap();
        }
    }
    // Room for one 10 KB batch per response.
    let config = ConsumerConfig {
        max_bytes: 15_000,
        ..ConsumerConfig::default()
    };
    let mut consumer = Consumer::connect(server.addr(), config).unwrap();
    consumer.assign_all("backlog").unwrap();
    consumer.seek_all(SeekTo::Earliest).unwrap();
    let mut seen_before = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    'polls: loop {
        assert!(Instant::now() < deadline, "partition 1's record never came");
        for record in consumer.poll(Duration::from_millis(200)).unwrap() {
            if record.unwrap().partition == 1 {
                break 'polls;
            }
            seen_before += 1;
        }
    }
    assert!(
        seen_before <= 2,
        "{seen_before} records of partition 0 came before partition 1's"
    );
}

/// `min_bytes` 0 answers at once, as in Kafka, even when the client allows a wait: the record
/// produced after the fetch was read is not in its answer.
#[test]
fn a_fetch_with_min_bytes_zero_does_not_wait() {
    use ringlog_net::message::fetch::{self, FetchPartition, FetchTopic};
    let server = TestServer::start(1);
    server.create_topic("eager", 1);
    let mut client = server.client();
    let partitions = [FetchPartition {
        partition: 0,
        offset: 0,
        partition_max_bytes: 1 << 20,
    }];
    let topics = [FetchTopic {
        topic: "eager",
        partitions: &partitions,
    }];
    let pending = client
        .send_fetch(&fetch::Request {
            max_wait_ms: 60_000,
            min_bytes: 0,
            max_bytes: 1 << 20,
            topics: &topics,
        })
        .unwrap();
    // Answered after the fetch was read (requests are read in order).
    client.metadata(&["eager"]).unwrap();
    let mut producer = server.client();
    let mut builder = ringlog_engine::batch::BatchBuilder::new(Vec::new(), 0);
    builder.push(0, None, Some(b"late"), &[]).unwrap();
    producer
        .produce("eager", 0, Acks::Leader, builder.finish())
        .unwrap();
    let result = client.receive_fetch(pending).unwrap();
    let fetched = result.partitions().unwrap().next().unwrap();
    assert!(
        fetched.batches.is_empty(),
        "the fetch waited for the record"
    );
}

/// Sets the immutable attribute on a directory (a rename of it then fails with EPERM, as
/// one can with ENOSPC or EIO) and clears it when dropped, so the temporary directory can
/// be removed however the test ends. Needs CAP_LINUX_IMMUTABLE (root) and a file system
/// that keeps the attribute (ext4, xfs, btrfs, tmpfs).
struct Immutable(std::path::PathBuf);

impl Immutable {
    /// Sets the attribute; the reason when it cannot be set.
    fn set(path: std::path::PathBuf) -> Result<Immutable, String> {
        let output = std::process::Command::new("chattr")
            .arg("+i")
            .arg(&path)
            .output()
            .map_err(|error| format!("chattr: {error}"))?;
        if output.status.success() {
            Ok(Immutable(path))
        } else {
            Err(format!(
                "chattr +i {}: {} {}",
                path.display(),
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            ))
        }
    }
}

impl Drop for Immutable {
    fn drop(&mut self) {
        let _ = std::process::Command::new("chattr")
            .arg("-i")
            .arg(&self.0)
            .status();
    }
}

/// A delete whose rename into the graveyard fails (a full disk, an I/O error; here an
/// immutable directory) leaves the topic served, records and all, so that deleting it again
/// works and a create of the same name never starts over its partitions.
#[test]
fn a_delete_that_fails_to_rename_keeps_the_topic_and_its_data() {
    // Without the capability the attribute cannot be set: said, not passed silently. With
    // it (root, as in CI) a chattr that fails is this test's failure.
    if !common::has_capability(common::CAP_LINUX_IMMUTABLE) {
        common::skip(
            "a_delete_that_fails_to_rename_keeps_the_topic_and_its_data",
            "no CAP_LINUX_IMMUTABLE to make the topic directory immutable (run as root)",
        );
        return;
    }
    let server = TestServer::start(2);
    server.create_topic("undead", 2);
    produce_values(&server, "undead", (0..100).map(|n| n.to_string()), false);
    let topic_dir = server.dir.path().join("undead");
    let immutable = Immutable::set(topic_dir).unwrap_or_else(|why| panic!("{why}"));
    let error = server.client().delete_topic("undead").unwrap_err();
    assert_eq!(error.code(), Some(ErrorCode::StorageError), "{error}");
    let refused = server
        .client()
        .create_topic(&create_topic::Request {
            name: "undead",
            partitions: 2,
            retention_ms: None,
            retention_bytes: None,
            segment_bytes: None,
        })
        .unwrap_err();
    assert_eq!(refused.code(), Some(ErrorCode::TopicExists), "{refused}");
    drop(immutable);
    let records = consume(&server, "undead", SeekTo::Earliest, 100);
    assert_eq!(records.len(), 100);
    server.client().delete_topic("undead").unwrap();
    server.create_topic("undead", 2);
    let topics = server.client().metadata(&["undead"]).unwrap();
    let watermarks: Vec<i64> = topics[0]
        .partitions
        .iter()
        .map(|p| p.high_watermark)
        .collect();
    assert!(
        watermarks.iter().all(|&hw| hw == 0),
        "the recreated topic serves the deleted topic's records: high watermarks {watermarks:?}"
    );
}

/// A topic whose metadata the start cannot read is skipped (with a warning), its records left
/// on disk; a create of its name is refused rather than serving them as a new topic's.
#[test]
fn a_create_does_not_take_over_a_topic_directory_the_start_skipped() {
    let mut server = TestServer::start(2);
    server.create_topic("garbled", 2);
    produce_values(&server, "garbled", (0..10).map(|n| n.to_string()), false);
    std::fs::write(
        server.dir.path().join("garbled").join("topic.toml"),
        b"not = [toml",
    )
    .unwrap();
    server.restart();
    assert!(server.client().metadata(&["garbled"]).is_err());
    let refused = server
        .client()
        .create_topic(&create_topic::Request {
            name: "garbled",
            partitions: 2,
            retention_ms: None,
            retention_bytes: None,
            segment_bytes: None,
        })
        .unwrap_err();
    assert_eq!(refused.code(), Some(ErrorCode::StorageError), "{refused}");
    assert!(refused.to_string().contains("does not serve"), "{refused}");
}

/// The bound on timestamps ahead of the server's clock holds whatever timestamp type a
/// client's batch claims. Topics here are CreateTime (DescribeConfigs says so, and no other
/// value is taken); Kafka's LogValidator rewrites a produced batch's timestamp type to the
/// topic's and checks its records' timestamps against message.timestamp.after.max.ms, so a
/// client cannot store a batch whose max timestamp is years ahead by setting the LogAppendTime
/// attribute bit. Stored as sent, that batch pins retention by age: its segment and every later
/// one are never past retention.ms.
#[test]
fn a_log_append_time_batch_from_a_client_cannot_carry_a_timestamp_far_ahead() {
    use ringlog_net::message::fetch::FetchPartition;
    let server = TestServer::start(1);
    server.create_topic("clock-lat", 1);
    let mut client = server.client();
    let now_ms = common::now_ms();
    let hour_ms = 3_600_000;
    let ten_years_ms = 10 * 365 * 24 * hour_ms;
    let mut batch = batch_stamped(now_ms + ten_years_ms, b"ahead");
    // attributes (bytes 21..23): timestamp type bit 3 = LogAppendTime; CRC (17..21) again.
    batch[22] |= 0x08;
    let crc = ringlog_engine::batch::crc_of(&batch);
    batch[17..21].copy_from_slice(&crc.to_be_bytes());
    match client.produce("clock-lat", 0, Acks::Durable, &batch) {
        Err(error) => assert_eq!(error.code(), Some(ErrorCode::InvalidTimestamp), "{error}"),
        Ok(_) => {
            let partitions = [FetchPartition {
                partition: 0,
                offset: 0,
                partition_max_bytes: 1 << 20,
            }];
            let result = fetch_from_topic(&mut client, "clock-lat", &partitions, 0, 1 << 20);
            let fetched = result.partitions().unwrap().next().unwrap();
            let header = ringlog_engine::batch::BatchHeader::parse(fetched.batches).unwrap();
            assert!(
                header.max_timestamp_ms <= now_ms + 2 * hour_ms,
                "stored with max timestamp {} ({:?}), {} ms ahead of the server's clock",
                header.max_timestamp_ms,
                header.timestamp_type(),
                header.max_timestamp_ms - now_ms
            );
        }
    }
}
