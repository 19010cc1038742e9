//! The Prometheus metrics endpoint end to end: a real server with `metrics_listen`, real
//! producers, consumer-group commits and a share consumer, scraped over loopback HTTP.

mod common;

use std::collections::{HashMap, HashSet};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use ringlog_net::client::{
    Client, Connection, ConnectionConfig, Consumer, ConsumerConfig, Producer, ProducerConfig,
    ProducerRecord, SeekTo, ShareConsumer, ShareConsumerConfig,
};
use ringlog_net::message::create_topic;
use ringlog_net::message::fetch::{self, FetchPartition, FetchTopic};
use ringlog_net::message::offset_commit::{self, CommitTopic, PartitionOffset};
use ringlog_net::message::share_acknowledge::AckType;
use ringlog_net::server::{Server, ServerConfig, ServerHandle};

use common::create_topic_at;

const DEADLINE: Duration = Duration::from_secs(30);

fn start(shards: usize, dir: &std::path::Path) -> ServerHandle {
    let config = ServerConfig {
        data_dir: dir.to_path_buf(),
        listen: "127.0.0.1:0".parse().unwrap(),
        metrics_listen: Some("127.0.0.1:0".parse().unwrap()),
        shards: Some(shards),
        cache_bytes_per_shard: 8 << 20,
        ..ServerConfig::default()
    };
    Server::start(config).unwrap()
}

/// Sends `request` and returns (status line, headers, body) of the answer.
fn http(addr: SocketAddr, request: &str) -> (String, HashMap<String, String>, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    let mut answer = String::new();
    // The server closes the connection after its answer.
    stream.read_to_string(&mut answer).unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").expect("a head and a body");
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap().to_string();
    let headers = lines
        .map(|line| {
            let (name, value) = line.split_once(": ").expect("a header line");
            (name.to_ascii_lowercase(), value.to_string())
        })
        .collect();
    (status, headers, body.to_string())
}

/// One sample: name, labels, value.
type Sample = (String, Vec<(String, String)>, f64);

/// A scrape, checked against the text format.
struct Scrape {
    samples: Vec<Sample>,
}

impl Scrape {
    fn take(addr: SocketAddr) -> Scrape {
        let (status, headers, body) = http(addr, "GET /metrics HTTP/1.1\r\nHost: ringlog\r\n\r\n");
        assert_eq!(status, "HTTP/1.1 200 OK");
        assert_eq!(
            headers["content-type"],
            "text/plain; version=0.0.4; charset=utf-8"
        );
        assert_eq!(headers["content-length"], body.len().to_string());
        Scrape::parse(&body)
    }

    fn parse(body: &str) -> Scrape {
        let mut typed = Vec::new();
        let mut samples = Vec::new();
        for line in body.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').unwrap();
                assert!(kind == "counter" || kind == "gauge", "{line}");
                assert!(!typed.contains(&name.to_string()), "family {name} twice");
                typed.push(name.to_string());
                continue;
            }
            if line.starts_with("# HELP ") {
                continue;
            }
            let (series, value) = line.rsplit_once(' ').unwrap();
            let value: f64 = value.parse().unwrap_or_else(|_| panic!("value of {line}"));
            let (name, labels) = match series.split_once('{') {
                Some((name, labels)) => {
                    let labels = labels.strip_suffix('}').unwrap();
                    let pairs = labels
                        .split("\",")
                        .map(|pair| {
                            let (label, value) = pair.split_once("=\"").unwrap();
                            (label.to_string(), value.trim_end_matches('"').to_string())
                        })
                        .collect();
                    (name.to_string(), pairs)
                }
                None => (series.to_string(), Vec::new()),
            };
            // Samples follow their family's TYPE line, families do not interleave.
            assert_eq!(typed.last(), Some(&name), "{line}");
            samples.push((name, labels, value));
        }
        Scrape { samples }
    }

    /// Sum of the samples of `name` whose labels include all of `labels`.
    fn sum(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let matching: Vec<f64> = self
            .samples
            .iter()
            .filter(|(sample, sample_labels, _)| {
                sample == name
                    && labels.iter().all(|(label, value)| {
                        sample_labels.iter().any(|(l, v)| l == label && v == value)
                    })
            })
            .map(|(_, _, value)| *value)
            .collect();
        (!matching.is_empty()).then(|| matching.iter().sum())
    }
}

fn produce(addr: SocketAddr, topic: &str, partition: u32, count: usize) {
    let config = ProducerConfig {
        linger_ms: 1,
        ..ProducerConfig::default()
    };
    let producer = Producer::connect(addr, topic, config).unwrap();
    for n in 0..count {
        let value = format!("value-{n}");
        let record = ProducerRecord::new(value.as_bytes()).with_partition(partition);
        producer.send(&record).unwrap();
    }
    producer.close().unwrap();
}

fn commit(addr: SocketAddr, group: &str, topic: &str, partition: u32, offset: i64) {
    let partitions = [PartitionOffset { partition, offset }];
    let topics = [CommitTopic {
        topic,
        partitions: &partitions,
    }];
    let results = Client::connect(addr)
        .unwrap()
        .commit_offsets(&offset_commit::Request {
            group,
            member_id: "",
            generation: -1,
            topics: &topics,
            instance_id: "",
        })
        .unwrap();
    assert!(results.iter().all(|r| r.result.is_ok()), "{results:?}");
}

fn metrics_show_partitions_groups_and_requests(shards: usize) {
    let dir = tempfile::tempdir().unwrap();
    let server = start(shards, dir.path());
    let addr = server.local_addr();
    let metrics = server.metrics_addr().expect("metrics listener");
    create_topic_at(addr, "metered", 3);
    produce(addr, "metered", 0, 10);
    produce(addr, "metered", 2, 5);
    commit(addr, "billing", "metered", 0, 4);
    let mut share = ShareConsumer::subscribe(
        addr,
        "jobs",
        "metered",
        ShareConsumerConfig {
            max_records: 3,
            max_wait_ms: 100,
            ..ShareConsumerConfig::default()
        },
    )
    .unwrap();
    let deadline = Instant::now() + DEADLINE;
    let mut acquired = 0;
    while acquired == 0 {
        assert!(
            Instant::now() < deadline,
            "the share consumer got no records"
        );
        // Held without acknowledgement: they stay acquired.
        acquired += share.poll(Duration::from_millis(100)).unwrap().len();
    }

    let scrape = Scrape::take(metrics);
    let partition = |p: &'static str| [("topic", "metered"), ("partition", p)];
    assert_eq!(scrape.sum("ringlog_up", &[]), Some(1.0));
    assert_eq!(scrape.sum("ringlog_shards", &[]), Some(shards as f64));
    assert_eq!(
        scrape.sum("ringlog_partition_high_watermark", &partition("0")),
        Some(10.0)
    );
    assert_eq!(
        scrape.sum("ringlog_partition_high_watermark", &partition("1")),
        Some(0.0)
    );
    assert_eq!(
        scrape.sum("ringlog_partition_high_watermark", &partition("2")),
        Some(5.0)
    );
    assert_eq!(
        scrape.sum("ringlog_partition_log_start_offset", &partition("0")),
        Some(0.0)
    );
    let size = scrape
        .sum("ringlog_partition_size_bytes", &partition("0"))
        .unwrap();
    let appended = scrape
        .sum("ringlog_partition_appended_bytes_total", &partition("0"))
        .unwrap();
    assert!(
        size > 0.0 && size == appended,
        "size {size}, appended {appended}"
    );
    assert!(
        scrape
            .sum("ringlog_partition_writes_total", &partition("0"))
            .unwrap()
            >= 1.0
    );
    assert!(
        scrape
            .sum("ringlog_partition_syncs_total", &partition("0"))
            .unwrap()
            >= 1.0
    );
    assert_eq!(
        scrape.sum("ringlog_partition_io_failures_total", &partition("0")),
        Some(0.0)
    );
    let shard_labels: Vec<String> = scrape
        .samples
        .iter()
        .filter(|(name, _, _)| name == "ringlog_partition_high_watermark")
        .map(|(_, labels, _)| labels.iter().find(|(l, _)| l == "shard").unwrap().1.clone())
        .collect();
    assert_eq!(shard_labels.len(), 3, "one sample per partition");
    assert!(shard_labels
        .iter()
        .all(|s| s.parse::<usize>().unwrap() < shards));

    let billing = [
        ("group", "billing"),
        ("topic", "metered"),
        ("partition", "0"),
    ];
    assert_eq!(
        scrape.sum("ringlog_group_committed_offset", &billing),
        Some(4.0)
    );
    assert_eq!(scrape.sum("ringlog_group_lag", &billing), Some(6.0));
    let jobs = [("group", "jobs"), ("topic", "metered")];
    assert_eq!(
        scrape.sum("ringlog_share_group_acquired_records", &jobs),
        Some(acquired as f64)
    );
    assert!(
        scrape
            .sum("ringlog_share_group_in_flight_records", &jobs)
            .unwrap()
            >= acquired as f64
    );
    assert_eq!(scrape.sum("ringlog_share_group_lag", &jobs), Some(15.0));

    let native = |api| [("protocol", "native"), ("api", api)];
    assert!(
        scrape
            .sum("ringlog_requests_total", &native("Produce"))
            .unwrap()
            >= 2.0
    );
    assert!(
        scrape
            .sum("ringlog_requests_total", &native("ShareFetch"))
            .unwrap()
            >= 1.0
    );
    assert_eq!(
        scrape.sum("ringlog_request_errors_total", &native("Produce")),
        Some(0.0)
    );
    assert_eq!(
        scrape.sum("ringlog_shard_read_ahead_extents_max", &[]),
        Some((shards * 128) as f64)
    );

    // A second scrape: counters only grew.
    let fetches = scrape
        .sum("ringlog_requests_total", &native("ShareFetch"))
        .unwrap();
    share.close().unwrap();
    let again = Scrape::take(metrics);
    assert!(
        again
            .sum("ringlog_requests_total", &native("ShareFetch"))
            .unwrap()
            >= fetches
    );
    assert_eq!(
        again.sum("ringlog_partition_high_watermark", &partition("0")),
        Some(10.0)
    );
    server.shutdown();
}

#[test]
fn metrics_with_one_shard() {
    metrics_show_partitions_groups_and_requests(1);
}

#[test]
fn metrics_with_two_shards() {
    metrics_show_partitions_groups_and_requests(2);
}

#[test]
fn other_paths_methods_and_garbage_get_clear_http_errors() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(2, dir.path());
    let metrics = server.metrics_addr().unwrap();
    let (status, _, body) = http(metrics, "GET / HTTP/1.1\r\n\r\n");
    assert_eq!(status, "HTTP/1.1 404 Not Found");
    assert!(body.contains("GET /metrics"), "{body}");
    let (status, headers, _) = http(metrics, "POST /metrics HTTP/1.1\r\n\r\n");
    assert_eq!(status, "HTTP/1.1 405 Method Not Allowed");
    assert_eq!(headers["allow"], "GET, HEAD");
    let (status, _, _) = http(metrics, "\u{1}\u{2} nonsense\r\n\r\n");
    assert_eq!(status, "HTTP/1.1 400 Bad Request");
    let (status, headers, body) = http(metrics, "HEAD /metrics HTTP/1.0\r\n\r\n");
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert!(headers["content-length"].parse::<usize>().unwrap() > 0);
    assert!(body.is_empty(), "HEAD has no body");
    let huge = format!(
        "GET /metrics HTTP/1.1\r\nX-Padding: {}\r\n\r\n",
        "x".repeat(10_000)
    );
    let (status, _, _) = http(metrics, &huge);
    assert_eq!(status, "HTTP/1.1 431 Request Header Fields Too Large");
    // The server still serves scrapes and its clients.
    Scrape::take(metrics);
    Client::connect(server.local_addr())
        .unwrap()
        .list_topics()
        .unwrap();
    server.shutdown();
}

/// Creates `name` with `partitions` partitions and default settings.
fn create_plain_topic(addr: SocketAddr, name: &str, partitions: u32) {
    Client::connect(addr)
        .unwrap()
        .create_topic(&create_topic::Request {
            name,
            partitions,
            retention_ms: None,
            retention_bytes: None,
            segment_bytes: None,
        })
        .unwrap();
}

/// Requests of `api` each shard received, as its metrics count them.
fn requests_per_shard(metrics: SocketAddr, shards: usize, api: &str) -> Vec<f64> {
    let scrape = Scrape::take(metrics);
    (0..shards)
        .map(|shard| {
            let shard = shard.to_string();
            let labels = [
                ("shard", shard.as_str()),
                ("protocol", "native"),
                ("api", api),
            ];
            scrape.sum("ringlog_requests_total", &labels).unwrap_or(0.0)
        })
        .collect()
}

/// Reads every record of `topic` (`expected` of them) with a Consumer.
fn consume_all(addr: SocketAddr, topic: &str, expected: usize, config: ConsumerConfig) {
    let mut consumer = Consumer::connect(addr, config).unwrap();
    let partitions = consumer.assign_all(topic).unwrap();
    consumer.seek_all(SeekTo::Earliest).unwrap();
    let mut seen = HashSet::new();
    let started = Instant::now();
    while seen.len() < expected {
        assert!(
            started.elapsed() < DEADLINE,
            "read {} of {expected}",
            seen.len()
        );
        for record in consumer.poll(Duration::from_millis(200)).unwrap() {
            let record = record.unwrap();
            assert!(record.partition < partitions);
            assert!(seen.insert((record.partition, record.offset)), "{record:?}");
        }
    }
}

/// A consumer of partitions on every shard fetches each shard's partitions over a connection
/// to that shard: every shard receives fetches. With `connection_per_shard` off, one shard
/// receives them all.
fn a_consumer_fetches_from_every_shard(shards: usize) {
    let dir = tempfile::tempdir().unwrap();
    let server = start(shards, dir.path());
    let addr = server.local_addr();
    let metrics = server.metrics_addr().expect("metrics listener");
    let partitions = 2 * shards as u32;
    create_plain_topic(addr, "spread", partitions);
    let mut client = Client::connect(addr).unwrap();
    let owners: HashSet<u16> = client.metadata(&["spread"]).unwrap()[0]
        .partitions
        .iter()
        .map(|p| p.shard)
        .collect();
    assert_eq!(owners.len(), shards, "the topic lives on every shard");
    for partition in 0..partitions {
        produce(addr, "spread", partition, 5);
    }
    let expected = 5 * partitions as usize;

    let connections_before = Scrape::take(metrics)
        .sum("ringlog_connections", &[])
        .expect("a connection count");
    consume_all(addr, "spread", expected, ConsumerConfig::default());
    // The consumer's last fetches may still wait out their long poll, and are counted when
    // they end: once its connections are closed, none is left to be counted during the next
    // phase.
    await_metric(metrics, "ringlog_connections", &[], connections_before);
    let per_shard = requests_per_shard(metrics, shards, "Fetch");
    assert!(
        per_shard.iter().all(|&fetches| fetches >= 1.0),
        "{per_shard:?}"
    );

    let one_connection = ConsumerConfig {
        connection_per_shard: false,
        ..ConsumerConfig::default()
    };
    consume_all(addr, "spread", expected, one_connection);
    let after = requests_per_shard(metrics, shards, "Fetch");
    let grew = after.iter().zip(&per_shard).filter(|(a, b)| a > b).count();
    assert_eq!(grew, 1, "before {per_shard:?}, after {after:?}");
    server.shutdown();
}

/// A Producer of a topic whose partitions all live on one shard of several sends its batches
/// over a connection to that shard, wherever its first connection landed: the other shard
/// receives no Produce request. Twelve producers, so that without the steering some would
/// land elsewhere (all on the owner by chance: 1 in 4,096).
#[test]
fn producers_of_a_one_shard_topic_send_to_that_shard() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(2, dir.path());
    let addr = server.local_addr();
    let metrics = server.metrics_addr().expect("metrics listener");
    create_plain_topic(addr, "single", 1);
    let owner = Client::connect(addr)
        .unwrap()
        .metadata(&["single"])
        .unwrap()[0]
        .partitions[0]
        .shard;
    for index in 0..12 {
        let producer = Producer::connect(addr, "single", ProducerConfig::default()).unwrap();
        let value = format!("record {index}");
        producer
            .send(&ProducerRecord::new(value.as_bytes()))
            .unwrap();
        producer.close().unwrap();
    }
    let per_shard = requests_per_shard(metrics, 2, "Produce");
    let other = 1 - usize::from(owner);
    assert_eq!(per_shard[other], 0.0, "owner {owner}: {per_shard:?}");
    assert!(per_shard[usize::from(owner)] >= 12.0, "{per_shard:?}");
    server.shutdown();
}

#[test]
fn a_consumer_fetches_from_every_shard_of_two() {
    a_consumer_fetches_from_every_shard(2);
}

#[test]
fn a_consumer_fetches_from_every_shard_of_three() {
    a_consumer_fetches_from_every_shard(3);
}

/// Polls the scrape until `shard`'s `ringlog_shard_remote_waits` is `expected`.
fn await_remote_waits(metrics: SocketAddr, shard: &str, expected: f64) {
    await_metric(
        metrics,
        "ringlog_shard_remote_waits",
        &[("shard", shard)],
        expected,
    );
}

/// Polls the scrape until the sum of `name` over the samples with `labels` is `expected`.
fn await_metric(metrics: SocketAddr, name: &str, labels: &[(&str, &str)], expected: f64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let value = Scrape::take(metrics).sum(name, labels);
        if value == Some(expected) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{name} {labels:?} is {value:?}, expected {expected}"
        );
        std::thread::yield_now();
    }
}

/// A long poll naming partitions of two shards waits on the other shard too; when data on
/// its own shard answers it, that wait ends with it. Before, it stayed (a waiter per
/// partition and a timer) for the fetch's whole max_wait: busy consumers piled them up.
#[test]
fn a_fetch_answered_early_ends_its_wait_on_the_other_shard() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(2, dir.path());
    let addr = server.local_addr();
    let metrics = server.metrics_addr().expect("metrics listener");
    create_plain_topic(addr, "waits", 4);
    let mut admin = Client::connect(addr).unwrap();
    let owners = &admin.metadata(&["waits"]).unwrap()[0].partitions;
    let on_shard = |shard| owners.iter().find(|p| p.shard == shard).unwrap().partition;
    let (near, far) = (on_shard(0), on_shard(1));
    let connection = Connection::connect_to_shard(addr, 0, 2, ConnectionConfig::default()).unwrap();
    let mut consumer = Client::from_connection(connection, ConnectionConfig::default());
    let info = consumer.api_versions("metrics-test", "1").unwrap();
    assert_eq!(info.connection_shard, 0);
    let partitions = [near, far].map(|partition| FetchPartition {
        partition,
        offset: 0,
        partition_max_bytes: 1 << 20,
    });
    let topics = [FetchTopic {
        topic: "waits",
        partitions: &partitions,
    }];
    let pending = consumer
        .send_fetch(&fetch::Request {
            max_wait_ms: 120_000,
            min_bytes: 1,
            max_bytes: 1 << 20,
            topics: &topics,
        })
        .unwrap();
    await_remote_waits(metrics, "1", 1.0);
    produce(addr, "waits", near, 1);
    let answer = consumer.receive_fetch(pending).unwrap();
    let got: Vec<u32> = answer
        .partitions()
        .unwrap()
        .filter(|p| !p.batches.is_empty())
        .map(|p| p.partition)
        .collect();
    assert_eq!(got, [near]);
    await_remote_waits(metrics, "1", 0.0);
    server.shutdown();
}

/// Acquires and accepts every record of `topic` (`expected` of them) with a ShareConsumer.
fn share_all(addr: SocketAddr, topic: &str, expected: usize, config: ShareConsumerConfig) {
    let mut consumer = ShareConsumer::subscribe(addr, "spread-workers", topic, config).unwrap();
    let mut seen = HashSet::new();
    let started = Instant::now();
    while seen.len() < expected {
        assert!(
            started.elapsed() < DEADLINE,
            "read {} of {expected}",
            seen.len()
        );
        let batch = consumer.poll(Duration::from_millis(200)).unwrap();
        let records: Vec<(u32, i64)> = batch
            .records()
            .map(|record| {
                let record = record.unwrap();
                (record.partition, record.offset)
            })
            .collect();
        for (partition, offset) in records {
            assert!(
                seen.insert((partition, offset)),
                "{partition}/{offset} twice"
            );
            consumer.acknowledge(partition, offset, AckType::Accept);
        }
    }
    assert!(
        consumer.close().unwrap().is_empty(),
        "every acknowledgement taken"
    );
}

/// A share consumer of partitions on every shard fetches and acknowledges each partition over
/// a connection to its shard: every shard receives ShareFetch and ShareAcknowledge requests.
/// With `connection_per_shard` off, one shard receives them all.
#[test]
fn a_share_consumer_fetches_from_every_shard() {
    let shards = 2;
    let dir = tempfile::tempdir().unwrap();
    let server = start(shards, dir.path());
    let addr = server.local_addr();
    let metrics = server.metrics_addr().expect("metrics listener");
    create_plain_topic(addr, "jobs", 4);
    for partition in 0..4 {
        produce(addr, "jobs", partition, 5);
    }
    share_all(addr, "jobs", 20, ShareConsumerConfig::default());
    for api in ["ShareFetch", "ShareAcknowledge"] {
        let per_shard = requests_per_shard(metrics, shards, api);
        assert!(
            per_shard.iter().all(|&count| count >= 1.0),
            "{api}: {per_shard:?}"
        );
    }
    for partition in 0..4 {
        produce(addr, "jobs", partition, 5);
    }
    let before = requests_per_shard(metrics, shards, "ShareFetch");
    let one_connection = ShareConsumerConfig {
        connection_per_shard: false,
        ..ShareConsumerConfig::default()
    };
    share_all(addr, "jobs", 20, one_connection);
    let after = requests_per_shard(metrics, shards, "ShareFetch");
    let grew = after.iter().zip(&before).filter(|(a, b)| a > b).count();
    assert_eq!(grew, 1, "before {before:?}, after {after:?}");
    server.shutdown();
}
