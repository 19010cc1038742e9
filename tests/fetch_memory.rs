//! The server's memory for one fetch is bounded by the fetch's `max_bytes`, however many
//! partition entries the request names. Alone in its binary: it reads the process's peak
//! resident memory, which other tests running beside it would move.

mod common;

use common::create_topic_at;
use ringlog_net::client::Client;
use ringlog_net::message::fetch::{self, FetchPartition, FetchTopic};
use ringlog_net::message::produce::Acks;
use ringlog_net::server::{Server, ServerConfig};

/// Peak resident memory of this process (the server runs in it), in bytes.
fn peak_rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status
        .lines()
        .find(|line| line.starts_with("VmHWM:"))
        .unwrap();
    let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib * 1024
}

/// 2,000 entries alternating between two partitions on two shards, each with
/// `partition_max_bytes` 0 and one 256 KiB batch: every read returns at least that batch, so
/// reading all entries at once (their limits sum to 0) held ~1,000 copies of the other
/// shard's batch, ~240 MiB for a 1 MiB answer; a 64 MiB request with MiB batches would ask
/// for terabytes. The entries must be read one after another against the response budget.
#[test]
fn a_fetch_naming_partitions_many_times_holds_no_more_than_its_max_bytes() {
    const ENTRIES: u32 = 2_000;
    const VALUE_BYTES: usize = 256 << 10;
    let dir = tempfile::tempdir().unwrap();
    let config = ServerConfig {
        data_dir: dir.path().to_path_buf(),
        listen: "127.0.0.1:0".parse().unwrap(),
        shards: Some(2),
        ..ServerConfig::default()
    };
    let handle = Server::start(config).unwrap();
    let addr = handle.local_addr();
    create_topic_at(addr, "wide", 2);
    let mut client = Client::connect(addr).unwrap();
    let value = vec![b'v'; VALUE_BYTES];
    for partition in 0..2 {
        let mut builder = ringlog_engine::batch::BatchBuilder::new(Vec::new(), 0);
        builder.push(0, None, Some(&value), &[]).unwrap();
        client
            .produce("wide", partition, Acks::Leader, builder.finish())
            .unwrap();
    }
    let partitions: Vec<FetchPartition> = (0..ENTRIES)
        .map(|i| FetchPartition {
            partition: i % 2,
            offset: 0,
            partition_max_bytes: 0,
        })
        .collect();
    let topics = [FetchTopic {
        topic: "wide",
        partitions: &partitions,
    }];
    let before = peak_rss_bytes();
    let result = client
        .fetch(&fetch::Request {
            max_wait_ms: 0,
            min_bytes: 0,
            max_bytes: 1 << 20,
            topics: &topics,
        })
        .unwrap();
    let grown = peak_rss_bytes().saturating_sub(before);
    let served: usize = result
        .partitions()
        .unwrap()
        .map(|fetched| fetched.batches.len())
        .sum();
    assert!(
        grown < 64 << 20,
        "a fetch answered with {served} bytes made the server's peak memory grow by {} MiB",
        grown >> 20
    );
    handle.shutdown();
}
