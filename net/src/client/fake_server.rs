//! A small in-memory server for client tests: one topic, speaks Metadata, Produce, Fetch and
//! ListOffsets with the message layer, keeps batches in memory. Also a usage example of the
//! server-side api (decode a request, encode a response, send raw batches after the body).

use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use flatbuffers::FlatBufferBuilder;
use ringlog_engine::batch::{self, BatchIter};

use crate::api::ApiKey;
use crate::client::connection::{Connection, ConnectionConfig, FrameReader, ResponseFrame};
use crate::error_code::ErrorCode;
use crate::frame::{encode_header, FrameHeader};
use crate::message::{fetch, list_offsets, metadata, produce, Decode, Encode, Status};

/// Knobs for misbehaviour.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Behaviour {
    /// Answer this many produce requests with a top-level Throttled before accepting.
    pub(crate) throttle_produces: usize,
    /// Close the connection instead of answering a produce request.
    pub(crate) close_on_produce: bool,
    /// After answering this many requests of a connection, stop reading it (keeping it open),
    /// as a hung or stopped server does: the client's writes fill the socket buffers. 0: never.
    pub(crate) stall_after_requests: usize,
    /// After answering this many requests of a connection, close it. 0: never.
    pub(crate) close_after_requests: usize,
    /// Connections after the first stall before answering anything (with
    /// `stall_after_requests`: a server that stopped reading stays stopped for clients that
    /// connect again).
    pub(crate) stall_later_connections: bool,
    /// Answer every partition of every fetch with StorageError (a retriable error).
    pub(crate) fail_fetches: bool,
}

/// One stored batch.
#[derive(Debug)]
struct Stored {
    base_offset: i64,
    next_offset: i64,
    max_timestamp_ms: i64,
    bytes: Vec<u8>,
}

#[derive(Debug)]
struct Log {
    topic: String,
    partitions: Vec<Vec<Stored>>,
    throttle_left: usize,
    close_on_produce: bool,
    stall_after_requests: usize,
    close_after_requests: usize,
    stall_later_connections: bool,
    fail_fetches: bool,
    /// Fetch requests answered so far.
    fetches: usize,
    /// Connections accepted so far.
    connections: usize,
}

impl Log {
    fn high_watermark(&self, partition: usize) -> i64 {
        self.partitions[partition]
            .last()
            .map_or(0, |stored| stored.next_offset)
    }
}

#[derive(Debug)]
struct State {
    log: Mutex<Log>,
    appended: Condvar,
}

/// A running fake server.
pub(crate) struct FakeServer {
    pub(crate) addr: SocketAddr,
    state: Arc<State>,
}

impl FakeServer {
    /// Starts serving `topic` with `partitions` partitions on an ephemeral port. Connection
    /// threads end when their client disconnects; the listener lives for the test process.
    pub(crate) fn start(topic: &str, partitions: usize, behaviour: Behaviour) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(State {
            log: Mutex::new(Log {
                topic: topic.to_owned(),
                partitions: (0..partitions).map(|_| Vec::new()).collect(),
                throttle_left: behaviour.throttle_produces,
                close_on_produce: behaviour.close_on_produce,
                stall_after_requests: behaviour.stall_after_requests,
                close_after_requests: behaviour.close_after_requests,
                stall_later_connections: behaviour.stall_later_connections,
                fail_fetches: behaviour.fail_fetches,
                fetches: 0,
                connections: 0,
            }),
            appended: Condvar::new(),
        });
        let served = Arc::clone(&state);
        thread::spawn(move || {
            let state = served;
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                let state = state.clone();
                thread::spawn(move || serve(stream, &state));
            }
        });
        Self { addr, state }
    }

    /// Fetch requests answered so far, on all connections.
    pub(crate) fn fetches(&self) -> usize {
        self.state.log.lock().unwrap().fetches
    }
}

fn serve(stream: TcpStream, state: &State) {
    let connection = Connection::from_stream(
        stream.try_clone().unwrap(),
        ConnectionConfig {
            request_timeout_ms: 60_000,
            ..ConnectionConfig::default()
        },
    )
    .unwrap();
    let (_, mut reader): (_, FrameReader) = connection.split().unwrap();
    let mut out = stream;
    let mut fbb = FlatBufferBuilder::new();
    let (stall_after, close_after, stall_at_once) = {
        let mut log = state.log.lock().unwrap();
        log.connections += 1;
        let later = log.connections > 1;
        (
            log.stall_after_requests,
            log.close_after_requests,
            later && log.stall_later_connections,
        )
    };
    let mut answered = 0;
    loop {
        if close_after > 0 && answered == close_after {
            return;
        }
        if stall_at_once || (stall_after > 0 && answered == stall_after) {
            // Holds the socket open and never reads again (park may wake spuriously).
            loop {
                thread::park();
            }
        }
        answered += 1;
        let Ok(request) = reader.read_frame() else {
            return;
        };
        let header = *request.header();
        let (body, raw) = match ApiKey::try_from(header.api) {
            Ok(ApiKey::Metadata) => (metadata_response(state, &mut fbb), Vec::new()),
            Ok(ApiKey::Produce) if state.log.lock().unwrap().close_on_produce => return,
            Ok(ApiKey::Produce) => match produce_response(state, &request, &mut fbb) {
                Some(body) => (body, Vec::new()),
                None => continue, // acks none: no response
            },
            Ok(ApiKey::Fetch) => fetch_response(state, &request, &mut fbb),
            Ok(ApiKey::ListOffsets) => {
                (list_offsets_response(state, &request, &mut fbb), Vec::new())
            }
            _ => (
                crate::message::error_response::encode(
                    &mut fbb,
                    Status::error(ErrorCode::UnsupportedVersion, "fake server"),
                )
                .to_vec(),
                Vec::new(),
            ),
        };
        let frame_header = FrameHeader::for_message(
            header.api,
            header.version,
            header.correlation_id,
            body.len(),
            raw.len(),
        )
        .unwrap();
        // Header + body, then the raw batches as a separate write, as a real server sends
        // them from its own buffers.
        let mut head = encode_header(&frame_header).to_vec();
        head.extend_from_slice(&body);
        if out.write_all(&head).is_err() || out.write_all(&raw).is_err() {
            return;
        }
    }
}

fn metadata_response(state: &State, fbb: &mut FlatBufferBuilder<'static>) -> Vec<u8> {
    let log = state.log.lock().unwrap();
    let partitions: Vec<metadata::PartitionMetadata> = (0..log.partitions.len())
        .map(|p| metadata::PartitionMetadata {
            partition: p as u32,
            status: Status::OK,
            shard: 0,
            log_start_offset: 0,
            high_watermark: log.high_watermark(p),
            size_bytes: 0,
        })
        .collect();
    let topics = [metadata::TopicMetadata {
        name: &log.topic,
        status: Status::OK,
        partitions: &partitions,
    }];
    metadata::Response {
        status: Status::OK,
        shard_count: 1,
        topics: &topics,
    }
    .encode(fbb)
    .to_vec()
}

fn produce_response(
    state: &State,
    request: &ResponseFrame,
    fbb: &mut FlatBufferBuilder<'static>,
) -> Option<Vec<u8>> {
    let view = produce::RequestView::decode(request.body()).unwrap();
    let acks = produce::Acks::from_wire(view.acks()).unwrap();
    let mut log = state.log.lock().unwrap();
    if log.throttle_left > 0 {
        log.throttle_left -= 1;
        let body = produce::Response {
            status: Status::error(ErrorCode::Throttled, "busy"),
            topic: view.topic(),
            partitions: &[],
        }
        .encode(fbb)
        .to_vec();
        return Some(body);
    }
    let mut results = Vec::new();
    for (partition, bytes) in produce::batches(&view, request.raw()).unwrap() {
        let base_offset = log.high_watermark(partition as usize);
        let mut next_offset = base_offset;
        for item in BatchIter::new(bytes) {
            let (header, batch_bytes) = item.unwrap();
            let mut stored = batch_bytes.to_vec();
            batch::set_base_offset(&mut stored, next_offset).unwrap();
            let count = i64::from(header.last_offset_delta) + 1;
            log.partitions[partition as usize].push(Stored {
                base_offset: next_offset,
                next_offset: next_offset + count,
                max_timestamp_ms: header.max_timestamp_ms,
                bytes: stored,
            });
            next_offset += count;
        }
        results.push(produce::PartitionResult {
            partition,
            base_offset,
            log_start_offset: 0,
            ..Default::default()
        });
    }
    state.appended.notify_all();
    (acks != produce::Acks::None).then(|| {
        produce::Response {
            status: Status::OK,
            topic: view.topic(),
            partitions: &results,
        }
        .encode(fbb)
        .to_vec()
    })
}

fn fetch_response(
    state: &State,
    request: &ResponseFrame,
    fbb: &mut FlatBufferBuilder<'static>,
) -> (Vec<u8>, Vec<u8>) {
    let view = fetch::RequestView::decode(request.body()).unwrap();
    let deadline = Instant::now() + Duration::from_millis(u64::from(view.max_wait_ms()));
    let mut log = state.log.lock().unwrap();
    log.fetches += 1;
    loop {
        let mut raw = Vec::new();
        let mut topics_out = Vec::new();
        let mut all_results = Vec::new();
        let mut any_error = false;
        for topic in view.topics().unwrap_or_default() {
            let mut results = Vec::new();
            for wanted in topic.partitions().unwrap_or_default() {
                let p = wanted.partition() as usize;
                let hw = log.high_watermark(p);
                let mut result = fetch::PartitionResult {
                    partition: wanted.partition(),
                    high_watermark: hw,
                    log_start_offset: 0,
                    ..Default::default()
                };
                if log.fail_fetches {
                    result.status = Status::error(ErrorCode::StorageError, "failing disk");
                    any_error = true;
                } else if wanted.offset() > hw {
                    result.status = Status::error(ErrorCode::OffsetOutOfRange, "beyond end");
                    any_error = true;
                } else {
                    let start = raw.len();
                    for stored in log.partitions[p]
                        .iter()
                        .filter(|s| s.next_offset > wanted.offset())
                    {
                        if raw.len() > start
                            && raw.len() - start + stored.bytes.len()
                                > wanted.partition_max_bytes() as usize
                        {
                            break;
                        }
                        raw.extend_from_slice(&stored.bytes);
                    }
                    result.batch_bytes = (raw.len() - start) as u32;
                }
                results.push(result);
            }
            all_results.push((topic.topic(), results));
        }
        // Errors are answered at once, like data.
        if !raw.is_empty() || any_error || Instant::now() >= deadline {
            for (topic, results) in &all_results {
                topics_out.push(fetch::TopicResult {
                    topic,
                    partitions: results,
                });
            }
            let response = fetch::Response {
                status: Status::OK,
                topics: &topics_out,
            };
            assert_eq!(response.raw_bytes(), raw.len() as u64);
            return (response.encode(fbb).to_vec(), raw);
        }
        let wait = deadline.saturating_duration_since(Instant::now());
        log = state.appended.wait_timeout(log, wait).unwrap().0;
    }
}

fn list_offsets_response(
    state: &State,
    request: &ResponseFrame,
    fbb: &mut FlatBufferBuilder<'static>,
) -> Vec<u8> {
    let view = list_offsets::RequestView::decode(request.body()).unwrap();
    let log = state.log.lock().unwrap();
    let results: Vec<list_offsets::PartitionResult> = view
        .partitions()
        .unwrap_or_default()
        .iter()
        .map(|query| {
            let p = query.partition() as usize;
            let hw = log.high_watermark(p);
            let offset = match list_offsets::OffsetSpec::from_wire(query.spec(), query.value()) {
                Some(list_offsets::OffsetSpec::Earliest) => 0,
                Some(list_offsets::OffsetSpec::Timestamp(ms)) => log.partitions[p]
                    .iter()
                    .find(|s| s.max_timestamp_ms >= ms)
                    .map_or(hw, |s| s.base_offset),
                _ => hw,
            };
            list_offsets::PartitionResult {
                partition: query.partition(),
                offset,
                ..Default::default()
            }
        })
        .collect();
    list_offsets::Response {
        status: Status::OK,
        topic: view.topic(),
        partitions: &results,
    }
    .encode(fbb)
    .to_vec()
}
