//! Clients across a server restart: a real `ringlog serve` process is stopped (SIGTERM) or
//! killed (SIGKILL) and started again on the same address and data directory while the
//! client keeps going. Nothing acknowledged is lost and nothing is written twice.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::TestServer;
use ringlog_net::client::{
    Consumer, ConsumerConfig, DeliveryHandle, Producer, ProducerConfig, ProducerRecord, SeekTo,
};

const PARTITIONS: u32 = 4;

/// How the server goes away mid-stream.
#[derive(Clone, Copy, Debug)]
enum Restart {
    Stop,
    Kill,
}

fn restart(server: &mut TestServer, how: Restart) {
    match how {
        Restart::Stop => server.restart_in_place(),
        Restart::Kill => server.kill_and_restart_in_place(),
    }
}

fn producer_config() -> ProducerConfig {
    ProducerConfig {
        linger_ms: 1,
        // Small batches: many requests in flight when the server goes away.
        batch_bytes_max: 4 * 1024,
        reconnect_backoff_ms: 10,
        reconnect_backoff_max_ms: 100,
        ..ProducerConfig::default()
    }
}

fn send_values(producer: &Producer, range: std::ops::Range<u32>) -> Vec<(String, DeliveryHandle)> {
    range
        .map(|i| {
            let value = format!("value-{i:06}");
            let record = ProducerRecord::new(value.as_bytes()).with_key(value.as_bytes());
            let handle = producer.send(&record).expect("the producer takes records");
            (value, handle)
        })
        .collect()
}

/// Every record of `topic` from the start: value to (partition, offset), failing on a value
/// seen twice.
fn read_all(server: &TestServer, topic: &str, count: usize) -> HashMap<String, (u32, i64)> {
    let mut consumer = Consumer::connect(server.addr(), ConsumerConfig::default()).unwrap();
    consumer.assign_all(topic).unwrap();
    consumer.seek_all(SeekTo::Earliest).unwrap();
    let mut seen = HashMap::with_capacity(count);
    let deadline = Instant::now() + Duration::from_secs(60);
    while seen.len() < count {
        assert!(
            Instant::now() < deadline,
            "only {} of {count} records arrived",
            seen.len()
        );
        for record in consumer.poll(Duration::from_millis(200)).unwrap() {
            let record = record.unwrap();
            let value = String::from_utf8(record.value.unwrap().to_vec()).unwrap();
            let at = (record.partition, record.offset);
            if let Some(earlier) = seen.insert(value.clone(), at) {
                panic!("{value} written twice: at {earlier:?} and {at:?}");
            }
        }
    }
    seen
}

/// A producer sends records, the server goes away with requests in flight and comes back;
/// the same producer delivers every record, each written once, at the offset its handle
/// reports.
fn a_producer_rides_out_a_restart(how: Restart, shards: usize) {
    let mut server = TestServer::start(shards);
    let partitions = PARTITIONS.to_string();
    server.ok(&["topic", "create", "events", "--partitions", &partitions]);
    let producer = Producer::connect(server.addr(), "events", producer_config()).unwrap();
    let mut sent = send_values(&producer, 0..2_000);
    producer.flush().expect("delivered before the restart");
    // Sent without waiting: most are buffered or in flight when the server goes away.
    sent.extend(send_values(&producer, 2_000..6_000));
    restart(&mut server, how);
    sent.extend(send_values(&producer, 6_000..8_000));
    producer
        .flush()
        .expect("every record delivered across the restart");
    producer.close().unwrap();

    let stored = read_all(&server, "events", sent.len());
    assert_eq!(stored.len(), sent.len());
    for (value, handle) in &sent {
        let delivered = handle.wait().unwrap();
        let at = stored.get(value).copied();
        assert_eq!(
            at,
            Some((delivered.partition, delivered.offset)),
            "{value} stored where its handle says"
        );
    }
}

#[test]
fn a_producer_rides_out_a_server_stop_one_shard() {
    a_producer_rides_out_a_restart(Restart::Stop, 1);
}

#[test]
fn a_producer_rides_out_a_server_stop_two_shards() {
    a_producer_rides_out_a_restart(Restart::Stop, 2);
}

#[test]
fn a_producer_rides_out_a_server_kill_two_shards() {
    a_producer_rides_out_a_restart(Restart::Kill, 2);
}
