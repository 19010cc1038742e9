//! The `consume` scenario: fill a topic, then consumers read it from the earliest offset;
//! throughput of record batch bytes received, latency per fetch.
//!
//! - `--total-bytes N`: fill N bytes and read them once.
//! - otherwise (`--duration-s`, default 5 s hot): fill what fits the embedded server's memory
//!   cache (3/4 of it, so every read is served from memory) and read it again and again until
//!   the time is up.
//! - `--cold`: after filling, restart the embedded server (its memory cache starts empty) and
//!   drop its data files from the kernel's page cache (posix_fadvise DONTNEED), so every read
//!   comes from the disk. Default size 1 GiB, read once.
//!
//! Each consumer reads its share of the partitions (consumer i: partitions i, i + consumers, ...)
//! over one connection per shard that owns some of them, as the client's Consumer does, sending
//! a connection's next fetch as soon as its response is in, as Kafka consumers prefetch.

use std::time::Duration;

use super::control::RunControl;
use super::fetcher::{FetchCounters, Fetcher, StartAt};
use super::fill::{fill_topic, Filled};
use super::page_cache::drop_from_page_cache;
use super::producers::partitions_of;
use super::recorder::merge_all;
use super::server::BenchServer;
use super::threads::join_all;
use super::{Scenario, ScenarioContext, ScenarioError, ScenarioResult};
use crate::options::{RunConfig, StopAt};
use crate::units::{format_bytes, MIB};
use crate::workload::Workload;

/// Share of the server's memory cache a hot run fills (the rest absorbs chunk rounding).
const HOT_FILL_SHARE: f64 = 0.75;
/// Hot fill size when the server's cache is unknown (`--server`).
const HOT_FILL_BYTES_UNKNOWN_CACHE: u64 = 384 * MIB;

/// How the consumers read the filled topic.
#[derive(Clone, Copy, Debug, PartialEq)]
enum ReadPlan {
    /// Every record once.
    Once,
    /// Again and again until the time is up.
    RepeatFor(Duration),
}

/// The `consume` scenario.
#[derive(Debug, Default)]
pub struct Consume {
    server: Option<BenchServer>,
    topic: String,
    end_offsets: Vec<i64>,
    plan: Option<ReadPlan>,
    notes: Vec<String>,
}

impl Scenario for Consume {
    fn prepare(&mut self, context: &ScenarioContext<'_>) -> Result<(), ScenarioError> {
        let config = context.config;
        super::check_consumers_fit(config)?;
        let mut server = BenchServer::start(config, context.data_dir)?;
        let topic = server.create_topic(Workload::Consume, config.partitions)?;
        let (fill_bytes, plan) = match config.stop {
            StopAt::TotalBytes(bytes) => (bytes, ReadPlan::Once),
            StopAt::Duration(duration) => (
                hot_fill_bytes(config, &server),
                ReadPlan::RepeatFor(duration),
            ),
        };
        let filled = fill_topic(&server, &topic, config, fill_bytes)?;
        self.end_offsets = server.high_watermarks(&topic)?;
        self.notes.push(filled.describe());
        if config.cold {
            self.notes.push(make_cold(&mut server)?);
        } else {
            self.notes.push(hot_note(&server, &filled));
        }
        self.notes.push(server.placement_note());
        self.server = Some(server);
        self.topic = topic;
        self.plan = Some(plan);
        Ok(())
    }

    fn run(&mut self, context: &ScenarioContext<'_>) -> Result<ScenarioResult, ScenarioError> {
        let config = context.config;
        let (Some(server), Some(plan)) = (self.server.as_ref(), self.plan) else {
            return Err(ScenarioError::Failed("consume ran before prepare".into()));
        };
        let duration = match plan {
            ReadPlan::Once => None,
            ReadPlan::RepeatFor(duration) => Some(duration),
        };
        let fetchers: Vec<Fetcher> = (0..config.consumers)
            .map(|index| Fetcher {
                address: server.address(),
                topic: self.topic.clone(),
                partitions: partitions_of(index, config.consumers, config.partitions),
                start_at: StartAt::Earliest,
                end_offsets: Some(self.end_offsets.clone()),
                repeat: duration.is_some(),
                cpu: server.load_cpu(index as usize),
                expected: duration,
            })
            .collect();
        let control =
            RunControl::with_limits(fetchers.len(), duration, None, context.progress.clone());
        let outcomes = std::thread::scope(|scope| {
            let handles = fetchers
                .iter()
                .map(|fetcher| scope.spawn(|| fetcher.run(&control)))
                .collect();
            control.open();
            join_all(handles)
        })?;
        let counters = outcomes
            .iter()
            .fold(FetchCounters::default(), |mut sum, (_, one)| {
                sum.fetches += one.fetches;
                sum.empty_fetches += one.empty_fetches;
                sum.passes += one.passes;
                sum
            });
        let merged = merge_all(outcomes.into_iter().map(|(recorder, _)| recorder))
            .ok_or_else(|| ScenarioError::Failed("no consumer ran".into()))?;
        let seconds = merged.active_seconds();
        let mut notes = self.notes.clone();
        notes.push(format!(
            "{} consumer(s), each sending its next fetch as soon as a response is in (client \
             defaults: 1 MiB per partition, 500 ms long poll); {} fetches, {} complete read(s) of the \
             topic; batch headers checked and records counted from them (no CRC, no record \
             decoding); latency per fetch",
            config.consumers, counters.fetches, counters.passes
        ));
        Ok(merged.into_result(seconds, notes))
    }
}

/// Bytes a hot run (consume, fanout) fills: 3/4 of the cache of the shards that hold
/// partitions.
pub(super) fn hot_fill_bytes(config: &RunConfig, server: &BenchServer) -> u64 {
    match (server.cache_bytes(), config.shards()) {
        (Some(cache_bytes), Some(shards)) => {
            let holding = u64::from(shards.min(config.partitions).max(1));
            let per_shard = cache_bytes / u64::from(shards.max(1));
            (per_shard as f64 * holding as f64 * HOT_FILL_SHARE) as u64
        }
        _ => HOT_FILL_BYTES_UNKNOWN_CACHE,
    }
}

/// The note saying whether the filled topic fits the server's memory cache.
pub(super) fn hot_note(server: &BenchServer, filled: &Filled) -> String {
    match server.cache_bytes() {
        Some(cache_bytes) if filled.bytes <= cache_bytes => format!(
            "hot: the topic ({}) fits the server's memory cache ({}), so reads are served from memory",
            format_bytes(filled.bytes),
            format_bytes(cache_bytes)
        ),
        Some(cache_bytes) => format!(
            "the topic ({}) is larger than the server's memory cache ({}): the oldest part is read from disk",
            format_bytes(filled.bytes),
            format_bytes(cache_bytes)
        ),
        None => "the server's memory cache size is unknown (--server)".into(),
    }
}

/// Restarts the embedded server and drops its files from the page cache; returns the note.
fn make_cold(server: &mut BenchServer) -> Result<String, ScenarioError> {
    server.restart()?;
    let files = server.data_files();
    let advised = drop_from_page_cache(&files)?;
    Ok(format!(
        "cold: server restarted after the fill (empty memory cache), then posix_fadvise(DONTNEED) \
         on its {advised} data files (segments written with O_DIRECT were not cached anyway)"
    ))
}
