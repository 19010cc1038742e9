//! The bodies of ringlog's fuzz targets, shared by the cargo-fuzz binaries
//! (`fuzz/fuzz_targets/`) and the bounded proptest run of every `cargo test`
//! (`tests/fuzz_bounded.rs`, which includes this file). Each function takes any bytes and
//! panics only when ringlog misbehaves: a decoder that panics, accepts something inconsistent,
//! or a recovery that serves a batch that is not valid.

use std::rc::Rc;
use std::sync::OnceLock;

use ringlog_engine::batch::{self, BatchBuilder, BatchHeader, BatchIter};
use ringlog_engine::cache::ChunkCache;
use ringlog_engine::error::LogError;
use ringlog_engine::log::{Acks, LogConfig, PartitionLog};
use ringlog_engine::producer_snapshot;
use ringlog_engine::reactor::{block_on, RingConfig};
use ringlog_net::api::ApiKey;
use ringlog_net::frame::{FrameDecoder, FrameHeader, FRAME_HEADER_BYTES};
use ringlog_net::message::{self, Decode};

/// Frame size limit the frame target decodes with: small, so that "too large" is reachable.
const FRAME_BYTES_MAX: usize = 1 << 16;

/// The frame decoder: every frame it returns lies within the input and its parts add up; a
/// shorter prefix of a complete frame is never a complete frame; a stream of frames decodes
/// front to back.
pub fn frame(data: &[u8]) {
    let decoder = FrameDecoder::new(FRAME_BYTES_MAX);
    let _ = FrameHeader::decode(data);
    let mut rest = data;
    // Bounded: every round consumes at least a frame header.
    while let Ok(Some(frame)) = decoder.decode(rest) {
        assert!(frame.total_bytes <= rest.len() && frame.total_bytes <= FRAME_BYTES_MAX);
        assert_eq!(
            FRAME_HEADER_BYTES + frame.body.len() + frame.raw.len(),
            frame.total_bytes
        );
        let shorter = &rest[..frame.total_bytes - 1];
        assert!(
            !matches!(decoder.decode(shorter), Ok(Some(_))),
            "a prefix of a frame decoded as a whole frame"
        );
        assert_eq!(
            decoder.peek_total_bytes(rest).ok().flatten(),
            Some(frame.total_bytes)
        );
        request_body_and_raw(frame.body, frame.raw);
        rest = &rest[frame.total_bytes..];
    }
}

/// Every request and response body type: decoding verifies the flatbuffer; a body that passes
/// is walked completely (its `Debug` output reads every field), and a produce request's raw
/// bytes are split as the server splits them.
pub fn request_body(data: &[u8]) {
    // The first bytes are the body (its own size prefix says how long); the rest is raw.
    let body_bytes = data
        .get(..4)
        .map(|prefix| u32::from_le_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]) as usize)
        .map_or(data.len(), |length| {
            length.saturating_add(4).min(data.len())
        });
    let (body, raw) = data.split_at(body_bytes);
    request_body_and_raw(body, raw);
    request_body_and_raw(data, &[]);
}

fn walk<'a, V: Decode<'a> + std::fmt::Debug>(body: &'a [u8]) {
    if let Ok(view) = V::decode(body) {
        let mut sink = String::new();
        std::fmt::write(&mut sink, format_args!("{view:?}")).ok();
    }
}

macro_rules! walk_all {
    ($body:expr; $($module:ident),* $(,)?) => {
        $(
            walk::<message::$module::RequestView>($body);
            walk::<message::$module::ResponseView>($body);
        )*
    };
}

fn request_body_and_raw(body: &[u8], raw: &[u8]) {
    walk_all!(body;
        alter_topic, api_versions, configure_group, create_topic, delete_group, delete_offsets,
        delete_records,
        delete_topic, describe_group, fetch, heartbeat, init_producer_id, join_group,
        leave_group, list_groups, list_offsets, list_topics, metadata, offset_commit,
        offset_fetch, produce, reset_group_offsets, share_acknowledge, share_fetch,
    );
    if let Ok(view) = message::produce::RequestView::decode(body) {
        if let Ok(entries) = message::produce::batches(&view, raw) {
            let mut described = 0usize;
            for (_, bytes) in entries {
                described += bytes.len();
                record_batch(bytes);
            }
            assert_eq!(described, raw.len(), "produce entries cover the raw bytes");
        }
    }
    if let Ok(view) = message::fetch::ResponseView::decode(body) {
        if let Ok(entries) = message::fetch::partitions(&view, raw) {
            let described: usize = entries.map(|entry| entry.batches.len()).sum();
            assert_eq!(described, raw.len(), "fetch entries cover the raw bytes");
        }
    }
}

/// The record batch decoder: validation, iteration, records and headers never panic, agree
/// with each other, and re-stamping producer fields keeps a valid batch valid.
pub fn record_batch(data: &[u8]) {
    let _ = BatchHeader::parse(data);
    let valid = batch::validate(data);
    let with_records = batch::validate_records(data);
    if with_records.is_ok() {
        assert!(valid.is_ok(), "records valid but header invalid");
    }
    let mut iter = BatchIter::new(data);
    let mut consumed = 0usize;
    for item in iter.by_ref() {
        let Ok((header, bytes)) = item else { break };
        assert_eq!(bytes.len(), header.total_bytes());
        consumed += bytes.len();
        assert!(
            batch::validate(bytes).is_ok(),
            "the iterator yields valid batches"
        );
        if let Ok(records) = batch::records(bytes) {
            for record in records {
                let Ok(record) = record else { break };
                let _ = record.offset(header.base_offset);
                for record_header in record.headers {
                    if record_header.is_err() {
                        break;
                    }
                }
            }
        }
    }
    assert_eq!(consumed, iter.consumed_bytes());
    if let Ok(header) = valid {
        let mut stamped = data.to_vec();
        batch::set_producer_fields(&mut stamped, 5, 6, 7).unwrap();
        let restamped = batch::validate(&stamped).unwrap();
        assert_eq!(restamped.records_count, header.records_count);
    }
}

/// The recovery scanner: a partition directory built from the input (either raw bytes as a
/// segment file, or a valid multi-segment log with index and producer snapshot files, patched
/// at positions the input chooses) is opened; everything served must be valid batches at
/// dense offsets (damage kept in a closed segment is reported with the offsets it holds, and
/// the read goes on after them), the log must take appends afterwards, and a second open must
/// serve the same and report the same damage.
pub fn recovery(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let files = if mode & 1 == 0 {
        vec![("00000000000000000000.log".to_string(), rest.to_vec())]
    } else {
        patched_log(rest)
    };
    let _ = producer_snapshot::decode(rest, 100);
    let dir = tempfile::tempdir().unwrap();
    for (name, bytes) in &files {
        std::fs::write(dir.path().join(name), bytes).unwrap();
    }
    let path = dir.path().to_path_buf();
    let first = open_and_read(&path, true);
    let second = open_and_read(&path, false);
    assert_eq!(
        first.0.len() + 1,
        second.0.len(),
        "the appended batch was kept"
    );
    assert_eq!(
        first.0[..],
        second.0[..first.0.len()],
        "a second open serves the same"
    );
    assert_eq!(first.1, second.1, "a second open reports the same damage");
}

/// What a read of a recovered log gave: the batches served, and the offset ranges refused as
/// damaged.
type ReadBack = (Vec<Vec<u8>>, Vec<(i64, i64)>);

/// Opens the log in `dir`, reads every batch (checking it), optionally appends one, closes.
/// Returns what was read before the append.
fn open_and_read(dir: &std::path::Path, append: bool) -> ReadBack {
    let dir = dir.to_path_buf();
    block_on(RingConfig::default(), async move {
        let log = PartitionLog::open(dir, recovery_config(), Rc::new(ChunkCache::new(1 << 20)))
            .await
            .expect("a damaged log opens (damage is cut away)");
        let (mut served, mut damaged) = (Vec::new(), Vec::new());
        let mut offset = log.log_start_offset();
        while offset < log.high_watermark() {
            let slice = match log.read(offset, 1 << 20).await {
                Ok(slice) => slice,
                Err(LogError::DamagedBatch {
                    base_offset,
                    last_offset,
                    ..
                }) => {
                    assert_eq!(base_offset, offset, "the damage starts where the read did");
                    assert!(last_offset >= offset && last_offset < log.high_watermark());
                    damaged.push((base_offset, last_offset));
                    offset = last_offset + 1;
                    continue;
                }
                Err(error) => panic!("a read below the end failed: {error}"),
            };
            assert!(!slice.is_empty());
            for item in BatchIter::new(slice.bytes()) {
                let (header, bytes) = item.expect("served batches are valid");
                if header.next_offset() <= offset {
                    continue;
                }
                assert!(header.base_offset <= offset, "offsets are dense");
                offset = header.next_offset();
                served.push(bytes.to_vec());
            }
        }
        assert_eq!(offset, log.high_watermark());
        if append {
            let mut batch = plain_batch(b"after recovery");
            log.append(&mut batch, Acks::Durable)
                .await
                .expect("a recovered log takes appends");
        }
        log.close().await.expect("close");
        (served, damaged)
    })
    .unwrap()
}

fn recovery_config() -> LogConfig {
    LogConfig {
        segment_bytes: 16 * 1024,
        preallocate_step_bytes: 8 * 1024,
        index_interval_bytes: 1024,
        chunk_bytes: 8 * 1024,
        ..LogConfig::default()
    }
}

fn plain_batch(value: &[u8]) -> Vec<u8> {
    let mut builder = BatchBuilder::new(Vec::new(), now_ms());
    builder
        .push(now_ms(), Some(b"k"), Some(value), &[("h", Some(b"v"))])
        .unwrap();
    builder.finish().to_vec()
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as i64)
}

/// The files of a valid log (several segments, indexes, producer snapshots), built once.
fn valid_log() -> &'static [(String, Vec<u8>)] {
    static LOG: OnceLock<Vec<(String, Vec<u8>)>> = OnceLock::new();
    LOG.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_path_buf();
        block_on(RingConfig::default(), async move {
            let log =
                PartitionLog::open(path, recovery_config(), Rc::new(ChunkCache::new(1 << 20)))
                    .await
                    .unwrap();
            for n in 0..60i32 {
                let mut builder = BatchBuilder::new(Vec::new(), now_ms());
                builder.set_producer_id(i64::from(n % 3));
                builder.set_producer_epoch(0);
                builder.set_base_sequence(n / 3 * 4);
                for record in 0..4 {
                    let value = format!("value {n} {record}").repeat(8);
                    builder
                        .push(now_ms(), None, Some(value.as_bytes()), &[])
                        .unwrap();
                }
                let mut batch = builder.finish().to_vec();
                log.append(&mut batch, Acks::Leader).await.unwrap();
            }
            log.close().await.unwrap();
        })
        .unwrap();
        let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|entry| {
                let entry = entry.unwrap();
                let name = entry.file_name().into_string().unwrap();
                (name, std::fs::read(entry.path()).unwrap())
            })
            .collect();
        files.sort();
        files
    })
}

/// The valid log with damage a crash (or a lost file) can cause, chosen by `data` in 5-byte
/// records `(kind, position high, position low, scale, value)`: a byte of the last segment
/// overwritten, any file cut short, or a byte of a producer snapshot overwritten. (Closed
/// segments and indexes are written once and synced before they count; flipping their bits
/// is disk rot, which reads detect and refuse; a closed segment cut short is kept, and its
/// lost offsets refused.)
fn patched_log(data: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut files = valid_log().to_vec();
    let last_log = files.iter().rposition(|(name, _)| name.ends_with(".log"));
    let snapshots: Vec<usize> = (0..files.len())
        .filter(|at| files[*at].0.ends_with(producer_snapshot::SNAPSHOT_SUFFIX))
        .collect();
    for patch in data.chunks_exact(5) {
        let target = match patch[0] % 4 {
            0 | 1 => last_log,
            2 => Some(usize::from(patch[0] / 4) % files.len()),
            _ => snapshots
                .get(usize::from(patch[0] / 4) % snapshots.len().max(1))
                .copied(),
        };
        let Some(target) = target else { continue };
        let bytes = &mut files[target].1;
        if bytes.is_empty() {
            continue;
        }
        let position = usize::from(u16::from_be_bytes([patch[1], patch[2]]))
            * usize::from(patch[3].max(1))
            % bytes.len();
        if patch[0] % 4 == 2 {
            bytes.truncate(position);
        } else {
            bytes[position] = patch[4];
        }
    }
    files
}

/// Valid inputs to start mutating from: frames of every kind of request the client sends,
/// batches, and recovery patches.
pub fn seeds() -> Vec<Vec<u8>> {
    use message::{
        alter_topic, create_topic, delete_records, fetch, init_producer_id, metadata, produce,
        Encode,
    };
    let mut out = Vec::new();
    let batch = plain_batch(b"seed");
    let mut fbb = flatbuffers::FlatBufferBuilder::new();
    let mut push_frame = |body: &[u8], raw: &[u8], api: u16| {
        let header = FrameHeader::for_message(api, 0, 1, body.len(), raw.len()).unwrap();
        let mut frame = ringlog_net::frame::encode_header(&header).to_vec();
        frame.extend_from_slice(body);
        frame.extend_from_slice(raw);
        out.push(frame);
    };
    let entries = [produce::PartitionBatches {
        partition: 0,
        batches: &batch,
    }];
    let produce_request = produce::Request {
        acks: produce::Acks::Durable,
        timeout_ms: 1000,
        topic: "t",
        partitions: &entries,
    };
    push_frame(
        produce_request.encode(&mut fbb),
        &batch,
        ApiKey::Produce.as_u16(),
    );
    let fetch_partitions = [fetch::FetchPartition {
        partition: 0,
        offset: 5,
        partition_max_bytes: 1 << 20,
    }];
    let fetch_topics = [fetch::FetchTopic {
        topic: "t",
        partitions: &fetch_partitions,
    }];
    let fetch_request = fetch::Request {
        max_wait_ms: 100,
        min_bytes: 1,
        max_bytes: 1 << 20,
        topics: &fetch_topics,
    };
    push_frame(fetch_request.encode(&mut fbb), &[], ApiKey::Fetch.as_u16());
    let metadata_request = metadata::Request {
        topics: &["a", "b"],
    };
    push_frame(
        metadata_request.encode(&mut fbb),
        &[],
        ApiKey::Metadata.as_u16(),
    );
    let create = create_topic::Request {
        name: "topic",
        partitions: 3,
        retention_ms: Some(1000),
        retention_bytes: None,
        segment_bytes: Some(1 << 20),
    };
    push_frame(create.encode(&mut fbb), &[], ApiKey::CreateTopic.as_u16());
    let alter = alter_topic::Request {
        name: "topic",
        retention_ms: None,
        retention_bytes: Some(1 << 20),
        partitions: Some(4),
    };
    push_frame(alter.encode(&mut fbb), &[], ApiKey::AlterTopic.as_u16());
    push_frame(
        init_producer_id::Request::default().encode(&mut fbb),
        &[],
        ApiKey::InitProducerId.as_u16(),
    );
    let before = [
        delete_records::DeleteBefore {
            partition: 0,
            offset: 5,
        },
        delete_records::DeleteBefore {
            partition: 2,
            offset: delete_records::HIGH_WATERMARK,
        },
    ];
    let delete = delete_records::Request {
        topic: "topic",
        partitions: &before,
    };
    push_frame(delete.encode(&mut fbb), &[], ApiKey::DeleteRecords.as_u16());
    out.push(batch);
    out.push(vec![1, 0, 0, 0, 100, 7, 0x10, 0x20, 3, 0, 0, 5, 9]);
    out
}
