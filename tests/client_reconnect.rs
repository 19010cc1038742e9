//! Clients across a server restart: a real `ringlog serve` process is stopped (SIGTERM) or
//! killed (SIGKILL) and started again on the same address and data directory while the
//! client keeps going. Nothing acknowledged is lost and nothing is written twice.

mod common;

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use common::TestServer;
use ringlog_net::client::{
    AckFailure, Client, ClientError, Consumer, ConsumerConfig, DeliveryHandle, Producer,
    ProducerConfig, ProducerRecord, SeekTo, ShareConsumer, ShareConsumerConfig,
};
use ringlog_net::message::share_acknowledge::AckType;

const PARTITIONS: u32 = 4;

/// How the server goes away mid-stream.
#[derive(Clone, Copy, Debug)]
enum Restart {
    Stop,
    Kill,
    /// Stopped, and started again only after the client polled while it was away.
    Outage,
}

fn restart(server: &mut TestServer, how: Restart) {
    match how {
        Restart::Stop => server.restart_in_place(),
        Restart::Kill => server.kill_and_restart_in_place(),
        Restart::Outage => {
            server.stop();
            server.start_again_in_place();
        }
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

/// A server that does not come back: the producer's flush and close end once the records'
/// delivery timeout has passed, failing them with the connection's error, instead of waiting
/// for ever; records sent before the server went are delivered.
#[test]
fn a_producer_gives_up_on_a_server_that_stays_away_after_the_delivery_timeout() {
    let mut server = TestServer::start(1);
    server.ok(&["topic", "create", "gone", "--partitions", "1"]);
    let delivery_timeout = Duration::from_millis(500);
    let config = ProducerConfig {
        delivery_timeout_ms: delivery_timeout.as_millis() as u64,
        ..producer_config()
    };
    let producer = Producer::connect(server.addr(), "gone", config).unwrap();
    let delivered = send_values(&producer, 0..10);
    producer.flush().expect("delivered while the server runs");
    server.stop();
    let started = Instant::now();
    let stranded = send_values(&producer, 10..20);
    let flushed = producer.flush();
    let waited = started.elapsed();
    assert!(flushed.is_err(), "{flushed:?}");
    assert!(
        waited >= delivery_timeout,
        "failed only after the timeout: {waited:?}"
    );
    // The expiry is checked at each connection attempt, at most 1 s apart here (100 ms).
    assert!(
        waited < delivery_timeout + Duration::from_secs(5),
        "{waited:?}"
    );
    for (value, handle) in &stranded {
        let error = handle.wait().unwrap_err();
        assert!(
            matches!(error, ClientError::Io(_) | ClientError::Disconnected),
            "{value}: the connection's error, got {error}"
        );
    }
    for (value, handle) in &delivered {
        assert!(handle.wait().is_ok(), "{value}");
    }
    producer.close().expect("nothing left to fail");
}

/// What a share consumer was given and told, per record (partition, offset).
#[derive(Default)]
struct ShareLedger {
    deliveries: HashMap<(u32, i64), u32>,
    /// Acceptances reported refused.
    refused: HashMap<(u32, i64), u32>,
    refusals: Vec<AckFailure>,
    values: HashSet<String>,
}

impl ShareLedger {
    fn note_refusals(&mut self, failures: Vec<AckFailure>) {
        for failure in &failures {
            for offset in failure.first_offset..=failure.last_offset {
                *self.refused.entry((failure.partition, offset)).or_default() += 1;
            }
        }
        self.refusals.extend(failures);
    }

    /// Polls once and accepts what came (sent with the next poll's fetches); returns how many
    /// records came. A record that comes again must have had every acceptance of it refused.
    fn poll(&mut self, consumer: &mut ShareConsumer) -> usize {
        let batch = consumer
            .poll(Duration::from_millis(200))
            .expect("polls ride out the server's absence");
        // Refusals of the acknowledgements that went with this poll's fetches came with their
        // answers, before any record the refusal made available again.
        self.note_refusals(consumer.take_ack_failures());
        let mut count = 0;
        for record in batch.records() {
            let record = record.expect("a well-formed record");
            let at = (record.partition, record.offset);
            let deliveries = self.deliveries.entry(at).or_default();
            let refused = self.refused.get(&at).copied().unwrap_or(0);
            assert!(
                refused >= *deliveries,
                "{at:?} delivered again after an acceptance not reported refused \
                 ({deliveries} deliveries before, {refused} refusals)"
            );
            *deliveries += 1;
            let value = String::from_utf8(record.value.expect("a value").to_vec()).unwrap();
            self.values.insert(value);
            consumer.acknowledge(record.partition, record.offset, AckType::Accept);
            count += 1;
        }
        count
    }
}

/// Whether the server has every record of every partition of `topic` acknowledged by `group`.
fn all_settled(server: &TestServer, group: &str, partitions: usize) -> bool {
    let Ok(mut client) = Client::connect(server.addr()) else {
        return false;
    };
    let Ok(description) = client.describe_group(group) else {
        return false;
    };
    description.share_partitions.len() == partitions
        && description
            .share_partitions
            .iter()
            .all(|p| p.in_flight_records == 0 && p.start_offset == p.high_watermark)
}

/// A share consumer accepts records of a 4-partition topic on a 2-shard server, which goes
/// away while acceptances are pending and comes back; the same `ShareConsumer` keeps polling
/// without error, every record is delivered and accepted, and a record comes again only
/// after its acceptance was reported refused.
fn a_share_consumer_rides_out_a_restart(how: Restart) {
    let mut server = TestServer::start(2);
    let partitions = PARTITIONS.to_string();
    server.ok(&["topic", "create", "jobs", "--partitions", &partitions]);
    let producer = Producer::connect(server.addr(), "jobs", producer_config()).unwrap();
    let mut sent = send_values(&producer, 0..1_000);
    producer.flush().expect("delivered before the restart");
    let config = ShareConsumerConfig {
        max_records: 50,
        reconnect_backoff_ms: 10,
        reconnect_backoff_max_ms: 100,
        ..ShareConsumerConfig::default()
    };
    let mut consumer = ShareConsumer::subscribe(server.addr(), "workers", "jobs", config).unwrap();
    let mut ledger = ShareLedger::default();
    let deadline = Instant::now() + Duration::from_secs(60);
    // About half is accepted; the last poll's acceptances are pending when the server goes.
    loop {
        assert!(Instant::now() < deadline, "the first half did not come");
        if ledger.poll(&mut consumer) > 0 && ledger.values.len() >= 400 {
            break;
        }
    }
    if let Restart::Outage = how {
        server.stop();
        // While the server is away, polls return nothing at their deadline, not an error.
        for _ in 0..3 {
            assert_eq!(ledger.poll(&mut consumer), 0);
        }
        server.start_again_in_place();
    } else {
        restart(&mut server, how);
    }
    sent.extend(send_values(&producer, 1_000..1_500));
    producer.flush().expect("delivered after the restart");
    loop {
        assert!(
            Instant::now() < deadline,
            "{} of {} values delivered",
            ledger.values.len(),
            sent.len()
        );
        if ledger.poll(&mut consumer) > 0 || ledger.values.len() < sent.len() {
            continue;
        }
        match consumer.flush_acks() {
            Ok(failures) => ledger.note_refusals(failures),
            Err(_) => ledger.note_refusals(consumer.take_ack_failures()),
        }
        if all_settled(&server, "workers", PARTITIONS as usize) {
            break;
        }
    }
    consumer.close().expect("nothing left to send");
    let expected: HashSet<String> = sent.into_iter().map(|(value, _)| value).collect();
    assert_eq!(ledger.values, expected);
    // The acceptances pending across the restart were refused (the restarted server knows
    // neither the member nor its locks), and those records came again.
    assert!(
        !ledger.refusals.is_empty(),
        "no pending acceptance was refused after the restart"
    );
    let redelivered = ledger.deliveries.values().filter(|&&n| n > 1).count();
    assert!(redelivered > 0, "no refused record came again");
    eprintln!(
        "{how:?}: {} records, {redelivered} delivered again, refusals: {:?}",
        ledger.deliveries.len(),
        ledger
            .refusals
            .iter()
            .map(|f| (
                f.partition,
                f.first_offset,
                f.last_offset,
                f.error.to_string()
            ))
            .collect::<Vec<_>>()
    );
    producer.close().unwrap();
}

#[test]
fn a_share_consumer_rides_out_a_server_stop() {
    a_share_consumer_rides_out_a_restart(Restart::Stop);
}

#[test]
fn a_share_consumer_rides_out_a_server_kill() {
    a_share_consumer_rides_out_a_restart(Restart::Kill);
}

#[test]
fn a_share_consumer_rides_out_a_server_outage() {
    a_share_consumer_rides_out_a_restart(Restart::Outage);
}
