//! No heap allocation per record on the hot paths (issue 7): a counting global allocator counts
//! the allocations made on the server's shard threads while a real server (in-process, real
//! files, loopback TCP, 1 and 2 shards) answers produce (acks leader and durable), fetch from
//! the in-memory tail, share fetch and share acknowledge, and the Kafka front door's produce
//! and fetch. Each path gets requests of 10 records in one batch, 1,000 records in one batch
//! and 1,000 records in 100 batches; the allocations per request must not grow with them.
//!
//! Counting: only threads named `ringlog-shard-*` count, so the client in this thread does
//! not. Each request's window runs from the previous response to its own, so work a shard
//! does after answering is counted in the next window, never lost. Other shard work (timers,
//! a new in-memory chunk every MiB) can only add to a window, so each shape is judged by its
//! fewest allocations over several requests. With 2 shards every path runs on two partitions
//! owned by different shards: one local to the connection, one reached over shard mail.
//!
//! `RINGLOG_ALLOC_TRACE=1 cargo test --test allocations -- --nocapture` prints a backtrace for
//! every allocation of one more request of each shape, to see where they come from.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

use bytes::Bytes;
use ringlog_engine::batch::BatchBuilder;
use ringlog_net::client::Client;
use ringlog_net::message::create_topic;
use ringlog_net::message::fetch::{self, FetchPartition, FetchTopic};
use ringlog_net::message::produce::Acks;
use ringlog_net::message::share_acknowledge::{AckRange, AckType};
use ringlog_net::message::share_fetch;
use ringlog_net::server::{Server, ServerConfig, ServerHandle};

mod kafka_support;

use kafka_support::Kafka;

/// Counts allocations made on shard threads, then allocates with the system allocator.
struct CountingAllocator;

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

/// Allocations (and reallocations) made on shard threads since the process started.
static SHARD_ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// Set once this thread is known to be a shard thread. Only the positive answer is kept:
    /// a new thread carries its parent's name until it sets its own.
    static ON_SHARD: Cell<bool> = const { Cell::new(false) };
}

/// Name prefix of the server's shard threads (see `ringlog_net::server`).
const SHARD_THREAD_PREFIX: &[u8] = b"ringlog-shard-";

/// Whether the calling thread is a shard thread; allocates nothing.
fn on_shard_thread() -> bool {
    ON_SHARD
        .try_with(|known| {
            if known.get() {
                return true;
            }
            let mut name = [0u8; 16];
            // SAFETY: PR_GET_NAME writes at most 16 bytes (NUL included) into `name`.
            let got = unsafe { libc::prctl(libc::PR_GET_NAME, name.as_mut_ptr()) } == 0;
            let shard = got && name.starts_with(SHARD_THREAD_PREFIX);
            if shard {
                known.set(true);
            }
            shard
        })
        .unwrap_or(false)
}

/// Set while a traced window runs: each counted allocation prints its backtrace.
static TRACING: AtomicBool = AtomicBool::new(false);

thread_local! {
    /// Set while this thread prints a backtrace (which allocates itself).
    static IN_TRACE: Cell<bool> = const { Cell::new(false) };
}

fn count() {
    if on_shard_thread() {
        SHARD_ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        if TRACING.load(Ordering::Relaxed) {
            trace();
        }
    }
}

fn trace() {
    let entered = IN_TRACE
        .try_with(|busy| !busy.replace(true))
        .unwrap_or(false);
    if entered {
        eprintln!(
            "allocation:\n{}",
            std::backtrace::Backtrace::force_capture()
        );
        let _ = IN_TRACE.try_with(|busy| busy.set(false));
    }
}

// SAFETY: every call is forwarded unchanged to the system allocator. Counting touches only an
// atomic and thread-local flags and allocates nothing; the opt-in trace allocates, and its
// thread-local guard keeps it from recursing.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: forwarded with the caller's layout.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: forwarded with the caller's layout.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        // SAFETY: forwarded with the caller's pointer, layout and size.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded with the caller's pointer and layout.
        unsafe { System.dealloc(ptr, layout) }
    }
}

fn shard_allocations() -> u64 {
    SHARD_ALLOCATIONS.load(Ordering::Relaxed)
}

/// The tests share the process-wide counter: one server at a time.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// What one request carries: `records` records in `batches` equal batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Shape {
    records: usize,
    batches: usize,
}

/// The shapes compared: the first is the reference, the others carry 100 times the records,
/// in one batch and in 100 batches.
const SHAPES: [Shape; 3] = [
    Shape {
        records: 10,
        batches: 1,
    },
    Shape {
        records: 1_000,
        batches: 1,
    },
    Shape {
        records: 1_000,
        batches: 100,
    },
];

impl std::fmt::Display for Shape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let plural = if self.batches == 1 { "" } else { "es" };
        write!(
            f,
            "{} records in {} batch{plural}",
            self.records, self.batches
        )
    }
}

/// Counted requests per block (two blocks per shape).
const BLOCK_ROUNDS: usize = 5;
/// Requests per shape before counting (buffers reach their working size, tasks start).
const WARM_UP_ROUNDS: usize = 3;

/// Consecutive windows of shard allocations, each labelled by the request it ends with.
struct Windows {
    last: u64,
    counts: Vec<(&'static str, u64)>,
}

impl Windows {
    fn new() -> Windows {
        Windows {
            last: shard_allocations(),
            counts: Vec::new(),
        }
    }

    /// Ends the current window (call right after a response arrived).
    fn mark(&mut self, label: &'static str) {
        let now = shard_allocations();
        self.counts.push((label, now - self.last));
        self.last = now;
    }
}

/// Per label, the smallest and the largest allocation count of each shape (in [`SHAPES`]
/// order) over its counted requests.
type Counts = BTreeMap<&'static str, Vec<(u64, u64)>>;

/// The requests [`measure`] makes, in order: `(shape index, counted)`. A warm-up of every
/// shape first, then two blocks of each; the first request of a block is not counted (its
/// window may hold the previous shape's trailing work).
fn schedule() -> Vec<(usize, bool)> {
    let mut plan = Vec::new();
    for shape in (0..SHAPES.len()).rev() {
        plan.extend((0..WARM_UP_ROUNDS).map(|_| (shape, false)));
    }
    for shape in (0..SHAPES.len()).chain(0..SHAPES.len()) {
        plan.extend((0..=BLOCK_ROUNDS).map(|index| (shape, index > 0)));
    }
    if tracing_requested() {
        for shape in 0..SHAPES.len() {
            plan.extend([(shape, false), (shape, true)]);
        }
    }
    plan
}

/// Set to print a backtrace for every allocation counted in one extra request of each shape.
const TRACE_ENV: &str = "RINGLOG_ALLOC_TRACE";

fn tracing_requested() -> bool {
    std::env::var_os(TRACE_ENV).is_some()
}

/// Runs `round` (one request, or one per label) as [`schedule`] says and returns the counts.
fn measure(mut round: impl FnMut(Shape, &mut Windows)) -> Counts {
    let mut windows = Windows::new();
    let mut counts = Counts::new();
    let plan = schedule();
    let traced_from = if tracing_requested() {
        plan.len() - 2 * SHAPES.len()
    } else {
        plan.len()
    };
    for (index, &(shape, counted)) in plan.iter().enumerate() {
        let traced = index >= traced_from && counted;
        if traced {
            eprintln!("--- allocations of a request of {}", SHAPES[shape]);
        }
        TRACING.store(traced, Ordering::Relaxed);
        windows.counts.clear();
        round(SHAPES[shape], &mut windows);
        TRACING.store(false, Ordering::Relaxed);
        if !counted || traced {
            continue;
        }
        for &(label, count) in &windows.counts {
            let per_shape = counts
                .entry(label)
                .or_insert_with(|| vec![(u64::MAX, 0); SHAPES.len()]);
            let (least, most) = &mut per_shape[shape];
            *least = (*least).min(count);
            *most = (*most).max(count);
        }
    }
    counts
}

/// Fails unless every label's fewest allocations per request are the same for every shape.
fn check(path: &str, counts: &Counts) {
    for (label, per_shape) in counts {
        for (shape, (least, most)) in SHAPES.iter().zip(per_shape) {
            eprintln!("{path}, {label}, {shape}: {least} allocations per request (at most {most})");
        }
    }
    for (label, per_shape) in counts {
        let (reference, _) = per_shape[0];
        for (shape, &(least, _)) in SHAPES.iter().zip(per_shape).skip(1) {
            assert!(
                least <= reference,
                "{path}, {label}: {reference} allocations per request with {} but {least} with {shape}: something allocates per record or per batch",
                SHAPES[0],
            );
        }
    }
}

/// The batches of one request of `shape`, with small records.
fn batches(shape: Shape) -> Vec<u8> {
    let mut out = Vec::new();
    let mut builder = BatchBuilder::new(Vec::new(), 1_700_000_000_000);
    for _ in 0..shape.batches {
        builder.reset(1_700_000_000_000);
        for index in 0..shape.records / shape.batches {
            let value = format!("value-{index:05}");
            builder
                .push(1_700_000_000_000, None, Some(value.as_bytes()), &[])
                .expect("a small record fits");
        }
        out.extend_from_slice(builder.finish());
    }
    out
}

fn start(shards: usize, dir: &tempfile::TempDir) -> ServerHandle {
    let config = ServerConfig {
        data_dir: dir.path().to_path_buf(),
        listen: "127.0.0.1:0".parse().expect("address"),
        kafka_listen: Some("127.0.0.1:0".parse().expect("address")),
        shards: Some(shards),
        cache_bytes_per_shard: 64 << 20,
        ..ServerConfig::default()
    };
    Server::start(config).expect("server starts")
}

fn create_topic(client: &mut Client, name: &str, partitions: u32) {
    client
        .create_topic(&create_topic::Request {
            name,
            partitions,
            retention_ms: None,
            retention_bytes: None,
            segment_bytes: Some(64 << 20),
        })
        .expect("topic created");
}

/// Index of `shape` in [`SHAPES`].
fn shape_index(shape: Shape) -> usize {
    SHAPES
        .iter()
        .position(|known| *known == shape)
        .expect("one of SHAPES")
}

/// One request's batches for each of [`SHAPES`], as the tests send them.
struct Requests {
    bytes: Vec<Vec<u8>>,
}

impl Requests {
    fn new() -> Requests {
        Requests {
            bytes: SHAPES.into_iter().map(batches).collect(),
        }
    }

    fn of(&self, shape: Shape) -> &[u8] {
        &self.bytes[shape_index(shape)]
    }
}

fn produce_paths(client: &mut Client, partitions: u32, requests: &Requests) {
    create_topic(client, "produce", partitions);
    for partition in 0..partitions {
        for acks in [Acks::Leader, Acks::Durable] {
            let counts = measure(|shape, windows| {
                client
                    .produce("produce", partition, acks, requests.of(shape))
                    .expect("produced");
                windows.mark("produce");
            });
            check(&format!("partition {partition}, acks {acks:?}"), &counts);
        }
    }
}

/// Fetch: the batches of each shape at the tail, read again and again from memory.
fn fetch_path(client: &mut Client, partitions: u32, requests: &Requests) {
    create_topic(client, "fetch", partitions);
    for partition in 0..partitions {
        let offsets: Vec<i64> = SHAPES
            .into_iter()
            .map(|shape| {
                client
                    .produce("fetch", partition, Acks::Durable, requests.of(shape))
                    .expect("produced")
                    .expect("an offset")
            })
            .collect();
        let counts = measure(|shape, windows| {
            // Just this shape's batches: the first batch, then as many as fit.
            let bytes = requests.of(shape).len() as u32;
            let wanted = [FetchPartition {
                partition,
                offset: offsets[shape_index(shape)],
                partition_max_bytes: bytes,
            }];
            let topics = [FetchTopic {
                topic: "fetch",
                partitions: &wanted,
            }];
            let result = client
                .fetch(&fetch::Request {
                    max_wait_ms: 0,
                    min_bytes: 1,
                    max_bytes: bytes,
                    topics: &topics,
                })
                .expect("fetched");
            windows.mark("fetch");
            let got = result
                .partitions()
                .expect("partitions")
                .next()
                .expect("one partition");
            // The server stamped offsets into them: compare lengths.
            assert_eq!(got.batches.len(), bytes as usize, "the batches of {shape}");
        });
        check(&format!("partition {partition}"), &counts);
    }
}

/// Share groups: each round acquires the next request's batches (produced in the order
/// [`schedule`] asks for them), then accepts them.
fn share_paths(client: &mut Client, partitions: u32, requests: &Requests) {
    create_topic(client, "share", partitions);
    for partition in 0..partitions {
        for (shape, _) in schedule() {
            client
                .produce(
                    "share",
                    partition,
                    Acks::Durable,
                    requests.of(SHAPES[shape]),
                )
                .expect("produced");
        }
    }
    for partition in 0..partitions {
        let counts = measure(|shape, windows| {
            let result = client
                .share_fetch(&share_fetch::Request {
                    group: "share",
                    member_id: "member",
                    topic: "share",
                    partition,
                    max_records: shape.records as u32,
                    max_wait_ms: 0,
                    max_bytes: 1 << 20,
                    acks: &[],
                })
                .expect("share fetched");
            windows.mark("share fetch");
            let acquired = result.acquired().expect("acquired ranges");
            assert_eq!(acquired.len(), 1, "{acquired:?}");
            let range = acquired[0];
            let records = range.last_offset - range.first_offset + 1;
            assert_eq!(records as usize, shape.records, "{acquired:?}");
            let bytes = result.batches().expect("batches").len();
            assert_eq!(bytes, requests.of(shape).len(), "the batches of {shape}");
            let acks = client
                .share_acknowledge(
                    "share",
                    "member",
                    "share",
                    partition,
                    &[AckRange {
                        first_offset: range.first_offset,
                        last_offset: range.last_offset,
                        ack_type: AckType::Accept,
                    }],
                )
                .expect("acknowledged");
            windows.mark("share acknowledge");
            assert!(acks.iter().all(|ack| ack.result.is_ok()), "{acks:?}");
        });
        check(&format!("partition {partition}"), &counts);
    }
}

/// The Kafka front door: produce (acks -1, v9) and fetch (v12) of the same batches.
fn kafka_paths(client: &mut Client, kafka: &mut Kafka, partitions: u32, requests: &Requests) {
    create_topic(client, "kafka", partitions);
    let records: Vec<Bytes> = requests.bytes.iter().cloned().map(Bytes::from).collect();
    for partition in 0..partitions {
        let mut offsets = vec![0i64; SHAPES.len()];
        let counts = measure(|shape, windows| {
            let index = shape_index(shape);
            let (code, offset) =
                kafka.produce(9, -1, "kafka", partition as i32, records[index].clone());
            windows.mark("kafka produce");
            assert_eq!(code, 0, "error code");
            offsets[index] = offset;
        });
        check(&format!("partition {partition}"), &counts);
        let counts = measure(|shape, windows| {
            let index = shape_index(shape);
            let bytes = records[index].len() as i32;
            let mut request =
                kafka_support::fetch_request("kafka", partition as i32, offsets[index], 0);
            request.max_bytes = bytes;
            request.topics[0].partitions[0].partition_max_bytes = bytes;
            let response = kafka.call(12, &request);
            windows.mark("kafka fetch");
            let data = &response.responses[0].partitions[0];
            assert_eq!(data.error_code, 0, "error code");
            let got = data.records.as_ref().map_or(0, Bytes::len);
            assert_eq!(got, bytes as usize, "the batches of {shape}");
        });
        check(&format!("partition {partition}"), &counts);
    }
}

fn hot_paths(shards: usize) {
    let _one = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let dir = tempfile::tempdir().expect("temporary directory");
    let before_start = shard_allocations();
    let server = start(shards, &dir);
    // A shard allocates as it starts: nothing counted means no thread was taken for a shard
    // thread, and every comparison below would hold with nothing measured (0 <= 0).
    assert!(
        shard_allocations() > before_start,
        "no allocation counted on a shard thread: are they still named {:?}?",
        String::from_utf8_lossy(SHARD_THREAD_PREFIX)
    );
    let mut client = Client::connect(server.local_addr()).expect("connect");
    let mut kafka = Kafka::connect(server.kafka_addr().expect("Kafka listener"));
    // With 2 shards the two partitions of a topic have different owners.
    let partitions = shards as u32;
    let requests = Requests::new();
    produce_paths(&mut client, partitions, &requests);
    fetch_path(&mut client, partitions, &requests);
    share_paths(&mut client, partitions, &requests);
    kafka_paths(&mut client, &mut kafka, partitions, &requests);
    drop((client, kafka));
    server.shutdown();
}

#[test]
fn no_allocation_per_record_one_shard() {
    hot_paths(1);
}

#[test]
fn no_allocation_per_record_two_shards() {
    hot_paths(2);
}
