//! Batches that Kafka producers compress (gzip, snappy, LZ4, zstd) are stored as sent and read
//! by ringlog's own clients: the consumer, the share consumer and `ringlog consume`, against a
//! real server. The batches are built here as Kafka producers build them: records encoded,
//! the records section compressed, the codec bits set and the CRC computed again. The native
//! Producer's own compression (every codec) is read back the same way, and its stored batches
//! are inspected with a raw fetch.

mod common;

use std::io::Write;
use std::time::{Duration, Instant};

use common::{create_topic_at, TestServer};
use ringlog_engine::batch::{self, BatchBuilder, BatchIter, Compression, BATCH_HEADER_BYTES};
use ringlog_engine::compression::DecompressError;
use ringlog_net::client::{
    AutoOffsetReset, Client, ClientError, CompressionType, Consumer, ConsumerConfig,
    ConsumerRecord, Producer, ProducerConfig, ProducerRecord, ShareConsumer, ShareConsumerConfig,
};
use ringlog_net::message::fetch::{self, FetchPartition, FetchTopic};
use ringlog_net::message::produce::Acks;
use ringlog_net::message::share_acknowledge::AckType;
use serde_json::Value;

/// How long a test waits for records it produced before failing.
const DEADLINE: Duration = Duration::from_secs(20);

/// One record as produced and as it must be read back.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Expected {
    offset: i64,
    timestamp_ms: i64,
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    headers: Vec<(String, Option<Vec<u8>>)>,
}

/// How a batch's records section is compressed.
#[derive(Debug, Clone, Copy)]
enum Codec {
    None,
    Gzip,
    /// Xerial framing, as Kafka's Java client writes it (librdkafka writes one raw block).
    SnappyXerial,
    /// One raw snappy block.
    SnappyRaw,
    Lz4,
    Zstd,
}

impl Codec {
    const ALL: [Codec; 6] = [
        Codec::None,
        Codec::Gzip,
        Codec::SnappyXerial,
        Codec::SnappyRaw,
        Codec::Lz4,
        Codec::Zstd,
    ];

    fn id(self) -> i16 {
        match self {
            Codec::None => 0,
            Codec::Gzip => 1,
            Codec::SnappyXerial | Codec::SnappyRaw => 2,
            Codec::Lz4 => 3,
            Codec::Zstd => 4,
        }
    }

    fn compress(self, data: &[u8]) -> Vec<u8> {
        match self {
            Codec::None => data.to_vec(),
            Codec::Gzip => {
                let mut encoder =
                    flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
                encoder.write_all(data).unwrap();
                encoder.finish().unwrap()
            }
            Codec::SnappyXerial => {
                let mut out = b"\x82SNAPPY\0".to_vec();
                out.extend_from_slice(&1i32.to_be_bytes());
                out.extend_from_slice(&1i32.to_be_bytes());
                // Small blocks, so that a batch spans several.
                for chunk in data.chunks(64) {
                    let block = snap::raw::Encoder::new().compress_vec(chunk).unwrap();
                    out.extend_from_slice(&u32::try_from(block.len()).unwrap().to_be_bytes());
                    out.extend_from_slice(&block);
                }
                out
            }
            Codec::SnappyRaw => snap::raw::Encoder::new().compress_vec(data).unwrap(),
            Codec::Lz4 => {
                let mut encoder = lz4_flex::frame::FrameEncoder::new(Vec::new());
                encoder.write_all(data).unwrap();
                encoder.finish().unwrap()
            }
            Codec::Zstd => {
                ruzstd::encoding::compress_to_vec(data, ruzstd::encoding::CompressionLevel::Fastest)
            }
        }
    }
}

/// A batch of `records` (offsets from 0), its records section compressed with `codec`.
fn batch_of(codec: Codec, records: &[Expected]) -> Vec<u8> {
    let mut builder = BatchBuilder::new(Vec::new(), records[0].timestamp_ms);
    for record in records {
        let headers: Vec<(&str, Option<&[u8]>)> = record
            .headers
            .iter()
            .map(|(key, value)| (key.as_str(), value.as_deref()))
            .collect();
        builder
            .push(
                record.timestamp_ms,
                record.key.as_deref(),
                record.value.as_deref(),
                &headers,
            )
            .unwrap();
    }
    let plain = builder.finish().to_vec();
    compress_batch(codec, &plain, None)
}

/// `plain` with its records section compressed by `codec` (or replaced by `payload`), the
/// codec bits, batchLength and CRC set to match.
fn compress_batch(codec: Codec, plain: &[u8], payload: Option<Vec<u8>>) -> Vec<u8> {
    let mut out = plain[..BATCH_HEADER_BYTES].to_vec();
    out.extend(payload.unwrap_or_else(|| codec.compress(&plain[BATCH_HEADER_BYTES..])));
    let batch_length = i32::try_from(out.len() - 12).unwrap();
    out[8..12].copy_from_slice(&batch_length.to_be_bytes());
    let attributes = i16::from_be_bytes([out[21], out[22]]) & !0x07 | codec.id();
    out[21..23].copy_from_slice(&attributes.to_be_bytes());
    batch::seal(&mut out).unwrap();
    out
}

/// Three records per codec, each codec's batch after the last, with keys, null keys, null
/// values, headers and distinct timestamps.
fn records_for(first_offset: i64, codec: Codec) -> Vec<Expected> {
    (0..3)
        .map(|i| {
            let offset = first_offset + i;
            Expected {
                offset,
                timestamp_ms: 1_700_000_000_000 + offset * 7,
                key: (i != 1).then(|| format!("key-{codec:?}-{i}").into_bytes()),
                value: (i != 2)
                    .then(|| format!("value {codec:?} {offset} {}", "x".repeat(100)).into_bytes()),
                headers: vec![
                    ("codec".to_owned(), Some(format!("{codec:?}").into_bytes())),
                    ("empty".to_owned(), None),
                ],
            }
        })
        .collect()
}

/// Produces one batch per codec to partition 0 of `topic`; returns every record in order.
fn produce_every_codec(server: &TestServer, topic: &str) -> Vec<Expected> {
    let mut client = ringlog_net::client::Client::connect(server.addr()).unwrap();
    let mut all = Vec::new();
    for codec in Codec::ALL {
        let mut records = records_for(all.len() as i64, codec);
        let batch = batch_of(codec, &rebase(&records));
        let offset = client
            .produce(topic, 0, Acks::Leader, &batch)
            .unwrap()
            .unwrap();
        assert_eq!(offset, records[0].offset, "{codec:?}");
        all.append(&mut records);
    }
    all
}

/// The records with offsets from 0, as a producer encodes them (the broker stamps the base).
fn rebase(records: &[Expected]) -> Vec<Expected> {
    let base = records[0].offset;
    records
        .iter()
        .map(|r| Expected {
            offset: r.offset - base,
            ..r.clone()
        })
        .collect()
}

/// A member of share group `group` reading `topic`, with short long polls.
fn share_member(server: &TestServer, group: &str, topic: &str) -> ShareConsumer {
    ShareConsumer::subscribe(
        server.addr(),
        group,
        topic,
        ShareConsumerConfig {
            max_wait_ms: 100,
            ..ShareConsumerConfig::default()
        },
    )
    .unwrap()
}

fn consumer(server: &TestServer, topic: &str, config: ConsumerConfig) -> Consumer {
    let mut consumer = Consumer::connect(
        server.addr(),
        ConsumerConfig {
            auto_offset_reset: AutoOffsetReset::Earliest,
            max_wait_ms: 100,
            ..config
        },
    )
    .unwrap();
    consumer.assign(topic, &[0]);
    consumer
}

fn owned(record: &ConsumerRecord<'_>) -> Expected {
    Expected {
        offset: record.offset,
        timestamp_ms: record.timestamp_ms,
        key: record.key.map(<[u8]>::to_vec),
        value: record.value.map(<[u8]>::to_vec),
        headers: record
            .headers
            .clone()
            .map(|h| {
                let h = h.unwrap();
                (h.key.to_owned(), h.value.map(<[u8]>::to_vec))
            })
            .collect(),
    }
}

/// Polls until `count` items (records or errors) came, failing after [`DEADLINE`].
fn poll_items(consumer: &mut Consumer, count: usize) -> Vec<Result<Expected, ClientError>> {
    let deadline = Instant::now() + DEADLINE;
    let mut items = Vec::new();
    while items.len() < count {
        assert!(
            Instant::now() < deadline,
            "only {} items: {items:?}",
            items.len()
        );
        for item in consumer.poll(Duration::from_millis(200)).unwrap() {
            items.push(item.map(|record| owned(&record)));
        }
    }
    items
}

#[test]
fn every_codec_is_read_by_the_consumer_the_share_consumer_and_consume() {
    let server = TestServer::start(1);
    create_topic_at(server.addr(), "zipped", 1);
    let expected = produce_every_codec(&server, "zipped");

    let mut plain = consumer(&server, "zipped", ConsumerConfig::default());
    let read: Vec<Expected> = poll_items(&mut plain, expected.len())
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert_eq!(read, expected);

    // The share consumer acquires offset ranges; the records of those ranges come out of the
    // compressed batches, and acknowledging them by offset leaves nothing in flight.
    let mut share = share_member(&server, "sharers", "zipped");
    let deadline = Instant::now() + DEADLINE;
    let mut shared = Vec::new();
    while shared.len() < expected.len() {
        assert!(Instant::now() < deadline, "share consumer got {shared:?}");
        let batch = share.poll(Duration::from_millis(200)).unwrap();
        for record in batch.records() {
            let record = record.unwrap();
            assert_eq!(record.delivery_count, 1);
            shared.push(Expected {
                offset: record.offset,
                timestamp_ms: record.timestamp_ms,
                key: record.key.map(<[u8]>::to_vec),
                value: record.value.map(<[u8]>::to_vec),
                headers: record
                    .headers
                    .map(|h| {
                        let h = h.unwrap();
                        (h.key.to_owned(), h.value.map(<[u8]>::to_vec))
                    })
                    .collect(),
            });
            share.acknowledge(record.partition, record.offset, AckType::Accept);
        }
    }
    assert_eq!(shared, expected);
    assert!(share.flush_acks().unwrap().is_empty());
    share.close().unwrap();

    // `ringlog consume` prints every record, headers included: alone (the Consumer), as a
    // group member (the GroupConsumer) and as a share group member (the ShareConsumer).
    let count = expected.len().to_string();
    let json = ["--count", &count, "--format", "json"];
    let out = server.ok(&[&["consume", "zipped", "--from", "earliest"][..], &json].concat());
    let grouped = server.ok(&[
        &["consume", "zipped", "--group", "g", "--from", "earliest"][..],
        &json,
    ]
    .concat());
    assert_eq!(grouped, out);
    let shared = server.ok(&[&["consume", "zipped", "--share-group", "cli"][..], &json].concat());
    assert_eq!(shared, out);
    let lines: Vec<Value> = out
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(lines.len(), expected.len(), "{out}");
    for (line, record) in lines.iter().zip(&expected) {
        assert_eq!(line["offset"].as_i64(), Some(record.offset), "{line}");
        assert_eq!(
            line["timestamp"].as_i64(),
            Some(record.timestamp_ms),
            "{line}"
        );
        let text = |bytes: &Option<Vec<u8>>| {
            bytes
                .as_ref()
                .map(|b| String::from_utf8(b.clone()).unwrap())
        };
        assert_eq!(
            line["key"].as_str().map(str::to_owned),
            text(&record.key),
            "{line}"
        );
        assert_eq!(
            line["value"].as_str().map(str::to_owned),
            text(&record.value),
            "{line}"
        );
        assert_eq!(line["headers"][0]["key"], "codec", "{line}");
        assert_eq!(line["headers"][1]["value"], Value::Null, "{line}");
    }
}

#[test]
fn a_corrupt_payload_is_an_error_in_its_place_and_reading_goes_on() {
    let server = TestServer::start(1);
    create_topic_at(server.addr(), "broken", 1);
    let mut client = ringlog_net::client::Client::connect(server.addr()).unwrap();
    let good = records_for(0, Codec::Gzip);
    client
        .produce("broken", 0, Acks::Leader, &batch_of(Codec::Gzip, &good))
        .unwrap();
    // A whole, CRC-correct batch whose payload is not LZ4: the server stores it as sent.
    let plain = batch_of(Codec::None, &rebase(&records_for(3, Codec::Lz4)));
    let corrupt = compress_batch(Codec::Lz4, &plain, Some(b"not an lz4 frame".to_vec()));
    client.produce("broken", 0, Acks::Leader, &corrupt).unwrap();
    let after = records_for(6, Codec::Zstd);
    client
        .produce(
            "broken",
            0,
            Acks::Leader,
            &batch_of(Codec::Zstd, &rebase(&after)),
        )
        .unwrap();

    let mut consumer = consumer(&server, "broken", ConsumerConfig::default());
    let items = poll_items(&mut consumer, 7);
    for (item, record) in items[..3].iter().zip(&good) {
        assert_eq!(item.as_ref().unwrap(), record);
    }
    match &items[3] {
        Err(ClientError::Decompress {
            partition: 0,
            base_offset: 3,
            source:
                DecompressError::Corrupt {
                    codec: Compression::Lz4,
                    ..
                },
        }) => {}
        other => panic!("{other:?}"),
    }
    for (item, record) in items[4..].iter().zip(&after) {
        assert_eq!(item.as_ref().unwrap(), record);
    }
}

#[test]
fn a_batch_past_the_decompression_bound_is_an_error_and_batches_past_it_together_wait() {
    let server = TestServer::start(1);
    create_topic_at(server.addr(), "bombs", 1);
    let mut client = ringlog_net::client::Client::connect(server.addr()).unwrap();
    // Two batches of ~400 decompressed bytes: together past a 600-byte bound, so the second
    // waits for the next poll; then one of 100 KiB of zeros, past the bound alone.
    let first = records_for(0, Codec::Zstd);
    let second = records_for(3, Codec::SnappyXerial);
    for (codec, records) in [(Codec::Zstd, &first), (Codec::SnappyXerial, &second)] {
        client
            .produce("bombs", 0, Acks::Leader, &batch_of(codec, &rebase(records)))
            .unwrap();
    }
    let bomb = Expected {
        offset: 0,
        timestamp_ms: 1_700_000_000_000,
        key: None,
        value: Some(vec![0; 100 << 10]),
        headers: Vec::new(),
    };
    let bomb_batch = batch_of(Codec::Zstd, &[bomb]);
    assert!(bomb_batch.len() < 600, "{}", bomb_batch.len());
    client
        .produce("bombs", 0, Acks::Leader, &bomb_batch)
        .unwrap();

    let mut consumer = consumer(
        &server,
        "bombs",
        ConsumerConfig {
            decompressed_bytes_max: 600,
            ..ConsumerConfig::default()
        },
    );
    let first_poll: Vec<_> = consumer
        .poll(DEADLINE)
        .unwrap()
        .map(|item| owned(&item.unwrap()))
        .collect();
    assert_eq!(
        first_poll, first,
        "the second batch waits for the next poll"
    );
    assert_eq!(consumer.position(0), Some(3));
    let items = poll_items(&mut consumer, 4);
    for (item, record) in items[..3].iter().zip(&second) {
        assert_eq!(item.as_ref().unwrap(), record);
    }
    match &items[3] {
        Err(ClientError::Decompress {
            partition: 0,
            base_offset: 6,
            source:
                DecompressError::TooLarge {
                    codec: Compression::Zstd,
                    limit_bytes: 600,
                },
        }) => {}
        other => panic!("{other:?}"),
    }
    assert_eq!(
        items[3].as_ref().unwrap_err().to_string(),
        "batch at offset 6 of partition 0: Zstd records decompress to more than 600 bytes"
    );
}

/// The records a compressing producer sends: keys (one in ten null), values that compress
/// (one in seven null), two headers (one of them null) and distinct timestamps.
fn producer_records(codec: CompressionType, count: i64) -> Vec<Expected> {
    (0..count)
        .map(|offset| Expected {
            offset,
            timestamp_ms: 1_700_000_000_000 + offset * 3,
            key: (offset % 10 != 3).then(|| format!("key-{}", offset % 17).into_bytes()),
            value: (offset % 7 != 5)
                .then(|| format!("{codec:?} record {offset}: {}", "abc".repeat(60)).into_bytes()),
            headers: vec![
                ("n".to_owned(), Some(offset.to_string().into_bytes())),
                ("none".to_owned(), None),
            ],
        })
        .collect()
}

/// Every batch stored in partition 0 of `topic`, as the server serves them (a raw fetch).
fn stored_batches(server: &TestServer, topic: &str) -> Vec<Vec<u8>> {
    let mut client = Client::connect(server.addr()).unwrap();
    let wanted = [FetchPartition {
        partition: 0,
        offset: 0,
        partition_max_bytes: 8 << 20,
    }];
    let topics = [FetchTopic {
        topic,
        partitions: &wanted,
    }];
    let result = client
        .fetch(&fetch::Request {
            max_wait_ms: 0,
            min_bytes: 1,
            max_bytes: 8 << 20,
            topics: &topics,
        })
        .unwrap();
    let partition = result.partitions().unwrap().next().unwrap();
    BatchIter::new(partition.batches)
        .map(|batch| batch.unwrap().1.to_vec())
        .collect()
}

/// The native Producer with each codec: the consumer reads every record back intact, the
/// stored batches carry the codec bits (and the idempotent producer's id and sequences), and
/// a compressed batch sent again is answered with its first offset, not written twice.
#[test]
fn the_producer_compresses_with_every_codec_and_consumers_read_it_back() {
    let server = TestServer::start(2);
    for codec in [
        CompressionType::Gzip,
        CompressionType::Snappy,
        CompressionType::Lz4,
        CompressionType::Zstd,
    ] {
        let topic = format!("produced-{codec:?}").to_lowercase();
        create_topic_at(server.addr(), &topic, 1);
        let expected = producer_records(codec, 400);
        let producer = Producer::connect(
            server.addr(),
            &topic,
            ProducerConfig {
                compression: codec,
                acks: Acks::Leader,
                // Several batches (by their uncompressed size).
                batch_bytes_max: 16 << 10,
                ..ProducerConfig::default()
            },
        )
        .unwrap();
        let mut handles = Vec::new();
        for record in &expected {
            let headers: Vec<(&str, Option<&[u8]>)> = record
                .headers
                .iter()
                .map(|(key, value)| (key.as_str(), value.as_deref()))
                .collect();
            let mut sent = ProducerRecord::new(record.value.as_deref().unwrap_or_default())
                .with_partition(0)
                .with_headers(&headers)
                .with_timestamp_ms(record.timestamp_ms);
            sent.value = record.value.as_deref();
            if let Some(key) = &record.key {
                sent = sent.with_key(key);
            }
            handles.push(producer.send(&sent).unwrap());
        }
        producer.flush().unwrap();
        let offsets: Vec<i64> = handles.iter().map(|h| h.wait().unwrap().offset).collect();
        assert_eq!(offsets, (0..400).collect::<Vec<_>>(), "{codec:?}");
        producer.close().unwrap();

        let mut reader = consumer(&server, &topic, ConsumerConfig::default());
        let read: Vec<Expected> = poll_items(&mut reader, expected.len())
            .into_iter()
            .map(Result::unwrap)
            .collect();
        assert_eq!(read, expected, "{codec:?}");

        let batches = stored_batches(&server, &topic);
        assert!(batches.len() > 2, "{codec:?}: {} batches", batches.len());
        let mut next_sequence = 0;
        for stored in &batches {
            let header = batch::validate(stored).unwrap();
            assert_eq!(header.compression(), codec.codec(), "{header:?}");
            assert!(header.producer_id >= 0, "idempotent: {header:?}");
            assert_eq!(header.base_sequence, next_sequence, "{header:?}");
            next_sequence += header.records_count;
        }

        // The last batch again, as the producer would retry it: its first offset comes
        // back and nothing is appended.
        let mut retry = batches.last().unwrap().clone();
        let first_offset = batch::validate(&retry).unwrap().base_offset;
        batch::set_base_offset(&mut retry, 0).unwrap();
        let mut client = Client::connect(server.addr()).unwrap();
        assert_eq!(
            client.produce(&topic, 0, Acks::Leader, &retry).unwrap(),
            Some(first_offset),
            "{codec:?}"
        );
        let topics = client.metadata(&[topic.as_str()]).unwrap();
        assert_eq!(topics[0].partitions[0].high_watermark, 400, "{codec:?}");
    }
}

/// The records of a batch a share member cannot decompress are acquired by it but never
/// handed out, so it cannot acknowledge them: they must not stay locked to it (in flight,
/// holding back the share partition) until the lock ends. A corrupt batch is rejected, as
/// Kafka's share consumer rejects a corrupt batch.
#[test]
fn a_share_member_rejects_the_records_of_a_batch_it_cannot_decompress() {
    share_member_rejects_an_unreadable_lz4_batch(|_| b"not an lz4 frame".to_vec());
}

/// A compressed batch is checked whole once decompressed, since the server could not check its
/// records when it was produced: one whose records are malformed (here the second claims more
/// bytes than the batch holds) is unreadable as a whole, and a share member rejects its
/// acquired records rather than leave those after the bad spot locked until their lease ends.
#[test]
fn a_share_member_rejects_the_records_of_a_batch_whose_decompressed_records_are_malformed() {
    share_member_rejects_an_unreadable_lz4_batch(|section| {
        let (first_length, length_bytes) = ringlog_engine::varint::decode_i32(section).unwrap();
        let first_end = length_bytes + usize::try_from(first_length).unwrap();
        let mut malformed = section[..first_end].to_vec();
        // A record length of about a billion bytes, then nothing.
        malformed.extend_from_slice(&[0xfe, 0xff, 0xff, 0xff, 0x07]);
        Codec::Lz4.compress(&malformed)
    });
}

/// Produces an LZ4 batch of offsets 0 to 2 whose payload is `payload(records section)`, then
/// a good zstd batch of 3 to 5; a share member reads 3 to 5 and one error, accepts 3 to 5, and
/// nothing is left in flight.
fn share_member_rejects_an_unreadable_lz4_batch(payload: impl Fn(&[u8]) -> Vec<u8>) {
    let server = TestServer::start(1);
    create_topic_at(server.addr(), "cracked", 1);
    let mut client = Client::connect(server.addr()).unwrap();
    let plain = batch_of(Codec::None, &records_for(0, Codec::Lz4));
    let corrupt = compress_batch(
        Codec::Lz4,
        &plain,
        Some(payload(&plain[BATCH_HEADER_BYTES..])),
    );
    client
        .produce("cracked", 0, Acks::Leader, &corrupt)
        .unwrap();
    let after = records_for(3, Codec::Zstd);
    client
        .produce(
            "cracked",
            0,
            Acks::Leader,
            &batch_of(Codec::Zstd, &rebase(&after)),
        )
        .unwrap();

    let mut share = share_member(&server, "menders", "cracked");
    let deadline = Instant::now() + DEADLINE;
    let (mut read, mut failed) = (Vec::new(), Vec::new());
    while read.len() < after.len() || failed.is_empty() {
        assert!(
            Instant::now() < deadline,
            "read {read:?}, failed {failed:?}"
        );
        let batch = share.poll(Duration::from_millis(200)).unwrap();
        for item in batch.records() {
            match item {
                Ok(record) => {
                    read.push(record.offset);
                    share.acknowledge(record.partition, record.offset, AckType::Accept);
                }
                Err(error) => failed.push(error.to_string()),
            }
        }
    }
    assert_eq!(read, vec![3, 4, 5]);
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert!(share.flush_acks().unwrap().is_empty());
    let state = &client.describe_group("menders").unwrap().share_partitions[0];
    assert_eq!(
        (state.start_offset, state.in_flight_records),
        (6, 0),
        "{state:?}"
    );
    share.close().unwrap();
}
