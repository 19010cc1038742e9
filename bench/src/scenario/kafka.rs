//! The `kafka` scenario: the same records through ringlog's two front doors, side by side in
//! one run. The embedded server listens for the native protocol and, on a free loopback port,
//! for Kafka clients; then, in this order:
//!
//! 1. native produce: the bench's producer threads (as in `produce`; by default the client's
//!    batching `Producer`, which takes one record at a time as librdkafka does) send records
//!    to `bench-kafka-native` until `--total-bytes` (default 256 MiB) or `--duration-s`;
//! 2. native consume: one fetcher (as in `consume`) reads that topic from the earliest offset;
//! 3. Kafka consume: `kcat -C -e` reads the same topic through the Kafka listener;
//! 4. Kafka produce: `--producers` kcat processes (`kcat -P -l FILE`) send as many records of
//!    the same size to `bench-kafka-front-door`, with the native producer's batch size, linger
//!    and acks. The input file is written before the clock starts.
//!
//! Both consumers read the same batches right after they were written, so both are served from
//! the server's memory when the topic fits it. Every leg's record count is checked: produce
//! against the topic's high watermarks, consume against the consumer's own count.
//!
//! kcat legs are timed from spawn to exit, kcat's start-up included (the notes give it,
//! measured with `kcat -L`); native legs from the start gate to the last completion. MB/s counts
//! record values (records x record size) on both sides. The headline result is the Kafka
//! produce, and its ratio is to the native produce.

use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ChildStdout;
use std::time::{Duration, Instant};

use ringlog_net::client::Client;

use super::control::RunControl;
use super::fetcher::{Fetcher, StartAt};
use super::kcat::{self, KcatProcess, LengthCounter, ProduceSettings};
use super::producers::{describe, producer_threads, ProducerPlan, ProducerThread};
use super::recorder::merge_all;
use super::server::{high_watermarks, pin_load_thread, BenchServer};
use super::threads::join_all;
use super::{Scenario, ScenarioContext, ScenarioError, ScenarioResult};
use crate::front_doors::{Direction, FrontDoorComparison, LegFigures};
use crate::latency::LatencyHistogram;
use crate::options::RunConfig;
use crate::progress::ProgressCounter;
use crate::throughput::{ThroughputTimeline, THROUGHPUT_INTERVAL_MS};
use crate::units::format_bytes;

/// Topic the native producers write (and both consumers read), after `bench-`.
const NATIVE_TOPIC: &str = "kafka-native";
/// Topic kcat produces to, after `bench-`.
const KAFKA_TOPIC: &str = "kafka-front-door";
/// Shortest time a kcat leg is given before it counts as hung.
const KCAT_TIME_MIN: Duration = Duration::from_secs(60);
/// A kcat leg may take this many times as long as its native counterpart before it counts as hung.
const KCAT_SLOWDOWN_MAX: u32 = 50;
/// How long kcat's metadata request (the start-up probe) may take.
const KCAT_PROBE_TIME_MAX: Duration = Duration::from_secs(30);
/// How long produced records may take to show in the high watermarks after the producer
/// finished (acks none: nothing waited for them).
const SETTLE_TIME_MAX: Duration = Duration::from_secs(30);
/// Pause between two looks at the high watermarks while they settle.
const SETTLE_POLL_INTERVAL: Duration = Duration::from_millis(10);
/// Bytes read from kcat's stdout at once.
const STDOUT_CHUNK_BYTES: usize = 64 * 1024;

/// The `kafka` scenario.
#[derive(Debug, Default)]
pub struct Kafka {
    server: Option<BenchServer>,
    kcat: PathBuf,
    /// Directory for kcat's input and stderr files (removed with the scenario).
    work_dir: Option<tempfile::TempDir>,
    native_topic: String,
    kafka_topic: String,
    producers: Vec<ProducerThread>,
    notes: Vec<String>,
}

/// What the native produce measured.
struct NativeProduce {
    figures: LegFigures,
    /// Acknowledgement latencies (for the notes: kcat has none to compare with).
    latency: LatencyHistogram,
    /// Record batch bytes written (what the server stores and the consumers read).
    batch_bytes: u64,
}

impl Scenario for Kafka {
    fn prepare(&mut self, context: &ScenarioContext<'_>) -> Result<(), ScenarioError> {
        let config = context.config;
        let path_var = std::env::var_os("PATH");
        self.kcat = kcat::find_kcat(path_var.as_deref())
            .ok_or_else(|| ScenarioError::Unavailable(kcat::unavailable_message()))?;
        let mut server = BenchServer::start_with(config, context.data_dir, true)?;
        self.native_topic = server.create_named_topic(NATIVE_TOPIC, config.partitions)?;
        self.kafka_topic = server.create_named_topic(KAFKA_TOPIC, config.partitions)?;
        let work_parent = context.data_dir.parent().unwrap_or(context.data_dir);
        let work_dir = tempfile::Builder::new()
            .prefix("kcat-")
            .tempdir_in(work_parent)
            .map_err(|source| ScenarioError::Io {
                context: format!(
                    "create a directory for kcat under {}",
                    work_parent.display()
                ),
                source,
            })?;
        let bootstrap = kafka_address(&server)?;
        let startup = probe_kcat(&self.kcat, bootstrap, &self.kafka_topic, work_dir.path())?;
        self.notes.push(format!(
            "{} at {bootstrap}; its start-up (kcat -L, metadata only) took {:.0} ms, counted in \
             each kcat leg's time",
            kcat_version(&self.kcat),
            startup.as_secs_f64() * 1000.0
        ));
        self.producers =
            producer_threads(&ProducerPlan::of_run(config), &server, &self.native_topic)?;
        self.work_dir = Some(work_dir);
        self.server = Some(server);
        Ok(())
    }

    fn run(&mut self, context: &ScenarioContext<'_>) -> Result<ScenarioResult, ScenarioError> {
        let config = context.config;
        let (Some(server), Some(work_dir)) = (self.server.as_ref(), self.work_dir.as_ref()) else {
            return Err(ScenarioError::Failed("kafka ran before prepare".into()));
        };
        let work_dir = work_dir.path();
        let bootstrap = kafka_address(server)?;
        let native = self.native_produce(config, &context.progress)?;
        let records = native.figures.records;
        let mut client = server.client()?;
        settle_records(&mut client, &self.native_topic, records)?;
        let watermarks = high_watermarks(&mut client, &self.native_topic)?;
        let native_consume = native_consume(
            server,
            &self.native_topic,
            watermarks,
            records,
            config.record_size_bytes,
        )?;
        let deadline_after = |native: &LegFigures| {
            KCAT_TIME_MIN.max(Duration::from_secs_f64(native.seconds) * KCAT_SLOWDOWN_MAX)
        };
        let consumer = KcatConsumer {
            kcat: &self.kcat,
            bootstrap,
            topic: &self.native_topic,
            record_size_bytes: config.record_size_bytes,
            cpu: server.load_cpu(0),
            stderr_path: work_dir.join("consume.stderr"),
        };
        let kafka_consume = consumer.run(records, deadline_after(&native_consume))?;
        let producer = KcatProducer {
            kcat: &self.kcat,
            bootstrap,
            topic: &self.kafka_topic,
            config,
            work_dir,
        };
        let (kafka_produce, kafka_throughput) = producer.run(
            server,
            records,
            deadline_after(&native.figures),
            &context.progress,
        )?;
        let front_doors = vec![
            FrontDoorComparison::new(Direction::Produce, native.figures, kafka_produce),
            FrontDoorComparison::new(Direction::Consume, native_consume, kafka_consume),
        ];
        let mut notes = self.notes.clone();
        notes.extend(self.leg_notes(config, server, &native));
        Ok(ScenarioResult {
            records,
            bytes: kafka_produce.bytes,
            seconds: kafka_produce.seconds,
            latency: LatencyHistogram::new(),
            throughput: kafka_throughput,
            notes,
            front_doors,
            memory: None,
        })
    }
}

impl Kafka {
    /// Leg 1: the native producer threads, as `produce` runs them.
    fn native_produce(
        &self,
        config: &RunConfig,
        progress: &ProgressCounter,
    ) -> Result<NativeProduce, ScenarioError> {
        let control = RunControl::new(self.producers.len(), config.stop, progress.clone());
        let outcomes = std::thread::scope(|scope| {
            let handles = self
                .producers
                .iter()
                .map(|producer| scope.spawn(|| producer.run(&control)))
                .collect();
            control.open();
            join_all(handles)
        })?;
        let merged = merge_all(outcomes.into_iter().map(|(recorder, _)| recorder))
            .ok_or_else(|| ScenarioError::Failed("no native producer ran".into()))?;
        let records = merged.records();
        if records == 0 {
            return Err(ScenarioError::Failed(
                "the native producers acknowledged no record".into(),
            ));
        }
        let seconds = merged.active_seconds();
        let batch_bytes = merged.bytes();
        let result = merged.into_result(seconds, Vec::new());
        Ok(NativeProduce {
            figures: value_figures(records, config.record_size_bytes, seconds),
            latency: result.latency,
            batch_bytes,
        })
    }

    /// The notes on how each leg ran.
    fn leg_notes(
        &self,
        config: &RunConfig,
        server: &BenchServer,
        native: &NativeProduce,
    ) -> Vec<String> {
        let latency = native.latency.summary();
        vec![
            format!(
                "produce: native: {}; p50 {} us, p99 {} us",
                describe(&self.producers),
                latency.p50,
                latency.p99
            ),
            format!(
                "produce: kafka: {} kcat -P process(es) reading one record per line from a file \
                 written beforehand, librdkafka acks={} linger.ms={} batch.size={} (the native \
                 settings), other settings librdkafka's defaults (no idempotence); kcat reports \
                 no latency, so only throughput is compared",
                config.producers,
                kcat::librdkafka_acks(config.acks),
                config.linger_ms,
                config.batch_bytes
            ),
            format!(
                "consume: both read {} (the native producers' batches) from the earliest offset \
                 right after it was written, one consumer each: native the fetcher of `consume` \
                 (client defaults: 1 MiB per partition, 500 ms long poll), kafka kcat -C -e with \
                 librdkafka's defaults, printing each value's length, which the bench counts and \
                 checks. The native fetcher only walks batch headers while librdkafka makes a \
                 message of every record, so this ratio is much about the clients' work",
                self.native_topic
            ),
            cache_note(server, native.batch_bytes),
            server.placement_note(),
            "MB/s here counts record values (records x record size) on both sides; the headline \
             result is the Kafka produce, its ratio is to the native produce (MB = 10^6 bytes)"
                .to_string(),
        ]
    }
}

/// The Kafka listener's address.
fn kafka_address(server: &BenchServer) -> Result<SocketAddr, ScenarioError> {
    server.kafka_address().ok_or_else(|| {
        ScenarioError::Setup("the embedded server has no Kafka listener".to_string())
    })
}

/// `records` records of `record_size_bytes` value bytes each in `seconds`.
fn value_figures(records: u64, record_size_bytes: u32, seconds: f64) -> LegFigures {
    LegFigures::new(
        records,
        records.saturating_mul(u64::from(record_size_bytes)),
        seconds,
    )
}

/// Fails unless the partitions' high watermarks add up to `records` (offsets start at 0 in a
/// new topic, one per record).
fn check_records(watermarks: &[i64], records: u64, topic: &str) -> Result<(), ScenarioError> {
    let held: i64 = watermarks.iter().sum();
    if u64::try_from(held).ok() == Some(records) {
        return Ok(());
    }
    Err(ScenarioError::Failed(format!(
        "{topic} holds {held} records, but {records} were produced"
    )))
}

/// Waits (up to [`SETTLE_TIME_MAX`]) until `topic` holds `records` records, then checks it
/// holds exactly that many.
fn settle_records(client: &mut Client, topic: &str, records: u64) -> Result<(), ScenarioError> {
    let deadline = Instant::now() + SETTLE_TIME_MAX;
    loop {
        let watermarks = high_watermarks(client, topic)?;
        let held = u64::try_from(watermarks.iter().sum::<i64>()).unwrap_or(0);
        if held >= records || Instant::now() >= deadline {
            return check_records(&watermarks, records, topic);
        }
        std::thread::sleep(SETTLE_POLL_INTERVAL);
    }
}

/// Runs `kcat -L` once: checks kcat can talk to the listener and returns how long it took.
fn probe_kcat(
    kcat: &Path,
    bootstrap: SocketAddr,
    topic: &str,
    work_dir: &Path,
) -> Result<Duration, ScenarioError> {
    let args = kcat::metadata_args(bootstrap, topic);
    let started = Instant::now();
    let mut process = [KcatProcess::spawn(
        kcat,
        &args,
        &work_dir.join("probe.stderr"),
        false,
        "metadata probe",
    )?];
    let exited = kcat::wait_all(&mut process, started + KCAT_PROBE_TIME_MAX, |_| Ok(())).map_err(
        |error| ScenarioError::Setup(format!("kcat cannot use the Kafka listener: {error}")),
    )?;
    Ok(exited.saturating_duration_since(started))
}

/// kcat's version line (`Version 1.7.1 (... librdkafka 2.0.2 ...)`), or its name.
fn kcat_version(kcat: &Path) -> String {
    let output = std::process::Command::new(kcat).arg("-V").output();
    let text = output
        .map(|output| String::from_utf8_lossy(&output.stdout).into_owned())
        .unwrap_or_default();
    text.lines()
        .find(|line| line.starts_with("Version"))
        .map_or_else(
            || format!("kcat {}", kcat.display()),
            |line| format!("kcat {} {}", kcat.display(), line.trim()),
        )
}

/// Leg 2: one native fetcher reads `topic` up to `end_offsets`.
fn native_consume(
    server: &BenchServer,
    topic: &str,
    end_offsets: Vec<i64>,
    records: u64,
    record_size_bytes: u32,
) -> Result<LegFigures, ScenarioError> {
    let partitions = u32::try_from(end_offsets.len()).unwrap_or(u32::MAX);
    let fetcher = Fetcher {
        address: server.address(),
        topic: topic.to_owned(),
        partitions: (0..partitions).collect(),
        start_at: StartAt::Earliest,
        end_offsets: Some(end_offsets),
        repeat: false,
        cpu: server.load_cpu(0),
        expected: None,
    };
    let control = RunControl::with_limits(1, None, None, ProgressCounter::default());
    let outcomes = std::thread::scope(|scope| {
        let handle = scope.spawn(|| fetcher.run(&control));
        control.open();
        join_all(vec![handle])
    })?;
    let recorder = merge_all(outcomes.into_iter().map(|(recorder, _)| recorder))
        .ok_or_else(|| ScenarioError::Failed("the native consumer did not run".into()))?;
    if recorder.records() != records {
        return Err(ScenarioError::Failed(format!(
            "the native consumer read {} records of {topic}, not {records}",
            recorder.records()
        )));
    }
    Ok(value_figures(
        records,
        record_size_bytes,
        recorder.active_seconds(),
    ))
}

/// Leg 3: `kcat -C -e` reads a topic through the Kafka listener.
struct KcatConsumer<'a> {
    kcat: &'a Path,
    bootstrap: SocketAddr,
    topic: &'a str,
    record_size_bytes: u32,
    /// Core kcat runs on (as the native consumer's thread).
    cpu: Option<usize>,
    stderr_path: PathBuf,
}

impl KcatConsumer<'_> {
    /// Reads every record; fails unless there are `records` of the right length.
    fn run(&self, records: u64, time_max: Duration) -> Result<LegFigures, ScenarioError> {
        let args = kcat::consume_args(self.bootstrap, self.topic);
        let started = Instant::now();
        let mut process = spawn_on(self.cpu, || {
            KcatProcess::spawn(self.kcat, &args, &self.stderr_path, true, "consume")
        })?;
        let stdout = process
            .take_stdout()
            .ok_or_else(|| ScenarioError::Failed("kcat's stdout was not captured".into()))?;
        let mut processes = [process];
        let (exited, counted) = std::thread::scope(|scope| {
            let reader = scope.spawn(|| count_lengths(stdout, self.record_size_bytes));
            let exited = kcat::wait_all(&mut processes, started + time_max, |_| Ok(()));
            let counted = reader
                .join()
                .map_err(|_| ScenarioError::Failed("kcat's output reader panicked".into()))
                .and_then(|counted| counted);
            (exited, counted)
        });
        let exited = exited?;
        let counts = counted?;
        if counts.records != records || counts.wrong_length > 0 {
            return Err(ScenarioError::Failed(format!(
                "kcat read {} records of {} ({} not {} bytes long), not {records}",
                counts.records, self.topic, counts.wrong_length, self.record_size_bytes
            )));
        }
        let seconds = exited.saturating_duration_since(started).as_secs_f64();
        Ok(value_figures(records, self.record_size_bytes, seconds))
    }
}

/// Counts kcat's `%S\n` output lines (value lengths of `record_size_bytes` expected) until it
/// closes its stdout.
fn count_lengths(
    mut stdout: ChildStdout,
    record_size_bytes: u32,
) -> Result<kcat::LengthCounts, ScenarioError> {
    let mut counter = LengthCounter::new(record_size_bytes);
    let mut chunk = vec![0u8; STDOUT_CHUNK_BYTES];
    loop {
        match stdout.read(&mut chunk) {
            Ok(0) => return Ok(counter.counts()),
            Ok(read) => {
                counter.feed(&chunk[..read]);
            }
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
            Err(source) => {
                return Err(ScenarioError::Io {
                    context: "read kcat's output".into(),
                    source,
                })
            }
        }
    }
}

/// Leg 4: `--producers` kcat processes produce the records of a file.
struct KcatProducer<'a> {
    kcat: &'a Path,
    bootstrap: SocketAddr,
    topic: &'a str,
    config: &'a RunConfig,
    work_dir: &'a Path,
}

impl KcatProducer<'_> {
    /// Writes the input, then produces `records` records with `--producers` kcat processes
    /// (each pinned like the native producer thread of its index); fails unless the topic
    /// then holds exactly `records` records. Returns the figures and the throughput over time
    /// as the server's high watermarks showed it.
    fn run(
        &self,
        server: &BenchServer,
        records: u64,
        time_max: Duration,
        progress: &ProgressCounter,
    ) -> Result<(LegFigures, ThroughputTimeline), ScenarioError> {
        let config = self.config;
        let processes_count = u64::from(config.producers.max(1));
        let input = self.work_dir.join("records.txt");
        kcat::write_input_file(
            &input,
            config.record_size_bytes,
            records.div_ceil(processes_count),
        )?;
        let settings = ProduceSettings {
            acks: config.acks,
            linger_ms: config.linger_ms,
            batch_bytes: config.batch_bytes,
        };
        let mut client = server.client()?;
        let started = Instant::now();
        let mut watch =
            WatermarkWatch::new(self.topic, config.record_size_bytes, progress, started);
        let mut processes = Vec::with_capacity(config.producers as usize);
        for index in 0..processes_count {
            let count = records / processes_count + u64::from(index < records % processes_count);
            // One process reads the whole file; several each stop after their share.
            let limit = (processes_count > 1).then_some(count);
            let args = kcat::produce_args(self.bootstrap, self.topic, &input, limit, settings);
            let stderr_path = self.work_dir.join(format!("produce-{index}.stderr"));
            let what = format!("produce {index}");
            let cpu = server.load_cpu(index as usize);
            processes.push(spawn_on(cpu, || {
                KcatProcess::spawn(self.kcat, &args, &stderr_path, false, &what)
            })?);
        }
        let exited = kcat::wait_all(&mut processes, started + time_max, |now| {
            watch.tick(&mut client, now)
        })?;
        let seconds = exited.saturating_duration_since(started).as_secs_f64();
        settle_records(&mut client, self.topic, records)?;
        Ok((
            value_figures(records, config.record_size_bytes, seconds),
            watch.throughput,
        ))
    }
}

/// The Kafka produce's progress as the server sees it: the topic's high watermarks, looked at
/// every throughput interval (kcat itself reports nothing while it runs).
struct WatermarkWatch<'a> {
    topic: &'a str,
    record_size_bytes: u32,
    progress: &'a ProgressCounter,
    start: Instant,
    next_look: Option<Instant>,
    records_seen: u64,
    throughput: ThroughputTimeline,
}

impl<'a> WatermarkWatch<'a> {
    fn new(
        topic: &'a str,
        record_size_bytes: u32,
        progress: &'a ProgressCounter,
        start: Instant,
    ) -> Self {
        Self {
            topic,
            record_size_bytes,
            progress,
            start,
            next_look: None,
            records_seen: 0,
            throughput: ThroughputTimeline::default(),
        }
    }

    /// Looks at the watermarks if an interval has passed since the last look.
    fn tick(&mut self, client: &mut Client, now: Instant) -> Result<(), ScenarioError> {
        let interval = Duration::from_millis(THROUGHPUT_INTERVAL_MS);
        let due = self.next_look.unwrap_or(self.start + interval);
        if now < due {
            return Ok(());
        }
        self.next_look = Some(due + interval);
        let held: i64 = high_watermarks(client, self.topic)?.iter().sum();
        let held = u64::try_from(held).unwrap_or(0);
        let new_records = held.saturating_sub(self.records_seen);
        self.records_seen = self.records_seen.max(held);
        let bytes = new_records.saturating_mul(u64::from(self.record_size_bytes));
        self.throughput
            .record(now.saturating_duration_since(self.start), bytes);
        self.progress.add_bytes(bytes);
        Ok(())
    }
}

/// Runs `spawn` on a thread pinned to `cpu`, so that the child process inherits that core
/// (a child starts with the affinity of the thread that started it); directly without one.
fn spawn_on(
    cpu: Option<usize>,
    spawn: impl FnOnce() -> Result<KcatProcess, ScenarioError> + Send,
) -> Result<KcatProcess, ScenarioError> {
    if cpu.is_none() {
        return spawn();
    }
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                pin_load_thread(cpu)?;
                spawn()
            })
            .join()
            .map_err(|_| ScenarioError::Failed("starting kcat panicked".into()))?
    })
}

/// Whether the native topic (`stored_bytes` of batches) fits the server's memory cache, so
/// that both consumers read it from memory.
fn cache_note(server: &BenchServer, stored_bytes: u64) -> String {
    match server.cache_bytes() {
        Some(cache_bytes) if stored_bytes <= cache_bytes => format!(
            "hot: the native topic ({}) fits the server's memory cache ({}), so both consumers \
             read from memory",
            format_bytes(stored_bytes),
            format_bytes(cache_bytes)
        ),
        Some(cache_bytes) => format!(
            "the native topic ({}) is larger than the server's memory cache ({}): both consumers \
             read its oldest part from disk",
            format_bytes(stored_bytes),
            format_bytes(cache_bytes)
        ),
        None => "the server's memory cache size is unknown".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_counts_are_checked_against_the_watermarks() {
        assert!(check_records(&[3, 4], 7, "t").is_ok());
        let error = check_records(&[3, 5], 7, "t").unwrap_err().to_string();
        assert_eq!(error, "t holds 8 records, but 7 were produced");
        let figures = value_figures(10, 100, 2.0);
        assert_eq!((figures.bytes, figures.mb_per_s), (1_000, 0.0005));
    }
}
