//! A bounded run of ringlog's fuzz targets on every `cargo test`: proptest feeds each target
//! random bytes and mutations of valid frames, batches and logs. The targets themselves are
//! `fuzz/src/checks.rs`, shared with the cargo-fuzz binaries for long runs (see the README's
//! Reliability section). `RINGLOG_FUZZ_CASES` scales the number of cases (default 1000 per
//! decoder target, a tenth of that for recovery, which opens a log per case).
//! `write_seeds` (ignored; run with `--ignored` and `RINGLOG_FUZZ_SEEDS_DIR=DIR`) stores the
//! valid inputs as cargo-fuzz corpus files under `DIR/<target>/` (scripts/fuzz.sh does this).

#[path = "../fuzz/src/checks.rs"]
#[allow(dead_code)]
mod checks;

use proptest::prelude::*;

fn cases(divisor: u32) -> u32 {
    let base = std::env::var("RINGLOG_FUZZ_CASES")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(1000u32);
    (base / divisor).max(1)
}

/// A seed changed by overwrites, a cut and an insertion, as a fuzzer mutates.
fn mutated() -> impl Strategy<Value = Vec<u8>> {
    let seeds = checks::seeds();
    let count = seeds.len();
    (
        0..count,
        prop::collection::vec((any::<u16>(), any::<u8>()), 0..8),
        prop::option::of(any::<u16>()),
        prop::option::of((any::<u16>(), prop::collection::vec(any::<u8>(), 1..16))),
    )
        .prop_map(move |(seed, overwrites, cut, insert)| {
            let mut bytes = seeds[seed].clone();
            if bytes.is_empty() {
                return bytes;
            }
            for (at, value) in overwrites {
                let at = usize::from(at) % bytes.len();
                bytes[at] = value;
            }
            if let Some((at, extra)) = insert {
                let at = usize::from(at) % (bytes.len() + 1);
                bytes.splice(at..at, extra);
            }
            if let Some(cut) = cut {
                bytes.truncate(usize::from(cut) % (bytes.len() + 1));
            }
            bytes
        })
}

fn inputs() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..512),
        mutated(),
        mutated(),
        mutated(),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases(1)))]

    #[test]
    fn frame_decoder(data in inputs()) {
        checks::frame(&data);
    }

    #[test]
    fn request_bodies(data in inputs()) {
        // Frames carry a 12-byte header before the body; feed both the whole input and the
        // part after a header.
        checks::request_body(&data);
        checks::request_body(data.get(12..).unwrap_or_default());
    }

    #[test]
    fn record_batch_decoder(data in inputs()) {
        checks::record_batch(&data);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases(10)))]

    #[test]
    fn recovery_scanner(
        raw in any::<bool>(),
        data in prop_oneof![
            prop::collection::vec(any::<u8>(), 0..100),
            mutated(),
        ],
    ) {
        let mut input = vec![u8::from(!raw)];
        input.extend_from_slice(&data);
        checks::recovery(&input);
    }
}

/// Not a test: a tool scripts/fuzz.sh runs. Ignored, so that `cargo test` lists it as not
/// run rather than as a pass that checked nothing.
#[test]
#[ignore = "writes cargo-fuzz seeds: scripts/fuzz.sh runs it with RINGLOG_FUZZ_SEEDS_DIR"]
fn write_seeds() {
    let dir = std::env::var("RINGLOG_FUZZ_SEEDS_DIR")
        .expect("RINGLOG_FUZZ_SEEDS_DIR names the corpus directory to write the seeds to");
    let seeds = checks::seeds();
    for target in ["frame", "request_body", "record_batch", "recovery"] {
        let target_dir = std::path::Path::new(&dir).join(target);
        std::fs::create_dir_all(&target_dir).unwrap();
        for (n, seed) in seeds.iter().enumerate() {
            let bytes = match target {
                // Recovery inputs: a mode byte (1: the valid log, patched), then patches.
                "recovery" => [&[1u8][..], seed.get(..20).unwrap_or(seed)].concat(),
                "request_body" => seed.get(12..).unwrap_or_default().to_vec(),
                _ => seed.clone(),
            };
            std::fs::write(target_dir.join(format!("seed-{n}")), bytes).unwrap();
        }
    }
}

/// Mutated and random frames, many per connection, sent to a real server (frames for topic
/// "t" reach the produce and fetch paths): the server answers or closes the connection, and
/// afterwards still serves everyone else.
#[test]
fn hostile_frames_never_take_the_server_down() {
    use std::io::{Read, Write};
    use std::time::{Duration, Instant};

    use proptest::test_runner::{Config, TestRunner};
    use ringlog_net::client::Client;
    use ringlog_net::message::create_topic;
    use ringlog_net::message::produce::Acks;
    use ringlog_net::server::{Server, ServerConfig};

    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(ServerConfig {
        data_dir: dir.path().to_path_buf(),
        listen: "127.0.0.1:0".parse().unwrap(),
        shards: Some(2),
        cache_bytes_per_shard: 4 << 20,
        ..ServerConfig::default()
    })
    .unwrap();
    let addr = server.local_addr();
    let topic = create_topic::Request {
        name: "t",
        partitions: 2,
        retention_ms: None,
        retention_bytes: None,
        segment_bytes: Some(1 << 20),
    };
    Client::connect(addr).unwrap().create_topic(&topic).unwrap();
    let mut runner = TestRunner::new(Config::with_cases(cases(20)));
    runner
        .run(&prop::collection::vec(inputs(), 1..16), |frames| {
            let mut stream = std::net::TcpStream::connect(addr).unwrap();
            for frame in &frames {
                if stream.write_all(frame).is_err() {
                    break;
                }
            }
            // Done sending: the server answers what it can, then sees the end.
            let _ = stream.shutdown(std::net::Shutdown::Write);
            stream
                .set_read_timeout(Some(Duration::from_millis(200)))
                .unwrap();
            let deadline = Instant::now() + Duration::from_secs(5);
            let mut buf = [0u8; 4096];
            while Instant::now() < deadline {
                match stream.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
            }
            Ok(())
        })
        .unwrap();
    let mut client = Client::connect(addr).unwrap();
    client.api_versions("after-fuzz", "1").unwrap();
    let mut builder = ringlog_engine::batch::BatchBuilder::new(Vec::new(), 1);
    builder.push(1, None, Some(b"alive"), &[]).unwrap();
    let offset = client
        .produce("t", 0, Acks::Durable, builder.finish())
        .unwrap()
        .unwrap();
    assert!(offset >= 0);
    server.shutdown();
}

/// Kafka request bodies as the Kafka listener decodes them (the patched kafka-protocol,
/// `vendor/kafka-protocol`): whatever the bytes claim, decoding answers Ok or Err, never
/// panics, and never reserves memory by a count it read (a 4-byte array count of i32::MAX
/// once made the allocation fail and the process abort).
fn kafka_request_body(api: i16, version: i16, body: &[u8]) {
    use kafka_protocol::messages::*;
    use kafka_protocol::protocol::Decodable;
    fn decode<T: Decodable>(body: &[u8], version: i16) {
        let mut bytes = bytes::Bytes::copy_from_slice(body);
        let _ = T::decode(&mut bytes, version);
    }
    let Ok(api_key) = ApiKey::try_from(api) else {
        return;
    };
    let versions = api_key.valid_versions();
    let span = i32::from(versions.max) - i32::from(versions.min) + 1;
    let version = versions.min + i16::try_from(i32::from(version).rem_euclid(span)).unwrap_or(0);
    // The requests the Kafka listener serves.
    match api_key {
        ApiKey::Produce => decode::<ProduceRequest>(body, version),
        ApiKey::Fetch => decode::<FetchRequest>(body, version),
        ApiKey::ListOffsets => decode::<ListOffsetsRequest>(body, version),
        ApiKey::Metadata => decode::<MetadataRequest>(body, version),
        ApiKey::OffsetCommit => decode::<OffsetCommitRequest>(body, version),
        ApiKey::OffsetFetch => decode::<OffsetFetchRequest>(body, version),
        ApiKey::FindCoordinator => decode::<FindCoordinatorRequest>(body, version),
        ApiKey::JoinGroup => decode::<JoinGroupRequest>(body, version),
        ApiKey::Heartbeat => decode::<HeartbeatRequest>(body, version),
        ApiKey::LeaveGroup => decode::<LeaveGroupRequest>(body, version),
        ApiKey::SyncGroup => decode::<SyncGroupRequest>(body, version),
        ApiKey::DescribeGroups => decode::<DescribeGroupsRequest>(body, version),
        ApiKey::ListGroups => decode::<ListGroupsRequest>(body, version),
        ApiKey::ApiVersions => decode::<ApiVersionsRequest>(body, version),
        ApiKey::CreateTopics => decode::<CreateTopicsRequest>(body, version),
        ApiKey::DeleteTopics => decode::<DeleteTopicsRequest>(body, version),
        ApiKey::DeleteRecords => decode::<DeleteRecordsRequest>(body, version),
        ApiKey::InitProducerId => decode::<InitProducerIdRequest>(body, version),
        ApiKey::DescribeConfigs => decode::<DescribeConfigsRequest>(body, version),
        ApiKey::AlterConfigs => decode::<AlterConfigsRequest>(body, version),
        ApiKey::DescribeLogDirs => decode::<DescribeLogDirsRequest>(body, version),
        ApiKey::CreatePartitions => decode::<CreatePartitionsRequest>(body, version),
        ApiKey::DeleteGroups => decode::<DeleteGroupsRequest>(body, version),
        ApiKey::IncrementalAlterConfigs => decode::<IncrementalAlterConfigsRequest>(body, version),
        ApiKey::DescribeCluster => decode::<DescribeClusterRequest>(body, version),
        ApiKey::OffsetDelete => decode::<OffsetDeleteRequest>(body, version),
        ApiKey::ConsumerGroupHeartbeat => decode::<ConsumerGroupHeartbeatRequest>(body, version),
        ApiKey::ShareGroupHeartbeat => decode::<ShareGroupHeartbeatRequest>(body, version),
        ApiKey::ShareGroupDescribe => decode::<ShareGroupDescribeRequest>(body, version),
        ApiKey::ShareFetch => decode::<ShareFetchRequest>(body, version),
        ApiKey::ShareAcknowledge => decode::<ShareAcknowledgeRequest>(body, version),
        _ => {}
    }
}

/// A body that starts with counts a decoder may read as array lengths: huge ones (i32::MAX,
/// an unsigned varint of 2^32 - 1) and random bytes around them.
fn kafka_bodies() -> impl Strategy<Value = Vec<u8>> {
    let huge = prop_oneof![
        Just(vec![0x7f, 0xff, 0xff, 0xff]),
        Just(vec![0xff, 0xff, 0xff, 0xff, 0x0f]),
        Just(vec![0xff, 0xff]),
        Just(Vec::new()),
    ];
    (
        prop::collection::vec(any::<u8>(), 0..16),
        huge,
        prop::collection::vec(any::<u8>(), 0..48),
    )
        .prop_map(|(before, huge, after)| [before, huge, after].concat())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases(1)))]

    #[test]
    fn kafka_request_decoder(api in 0i16..100, version in any::<i16>(), body in kafka_bodies()) {
        kafka_request_body(api, version, &body);
    }
}
