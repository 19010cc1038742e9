//! A bounded run of ringlog's fuzz targets on every `cargo test`: proptest feeds each target
//! random bytes and mutations of valid frames, batches and logs. The targets themselves are
//! `fuzz/src/checks.rs`, shared with the cargo-fuzz binaries for long runs (see the README's
//! Reliability section). `RINGLOG_FUZZ_CASES` scales the number of cases (default 1000 per
//! decoder target, a tenth of that for recovery, which opens a log per case).
//! `RINGLOG_FUZZ_SEEDS_DIR=DIR` makes `write_seeds` store the valid inputs as cargo-fuzz
//! corpus files under `DIR/<target>/` (scripts/fuzz.sh does this).

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

#[test]
fn write_seeds() {
    let Ok(dir) = std::env::var("RINGLOG_FUZZ_SEEDS_DIR") else {
        return;
    };
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
