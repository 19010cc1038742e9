//! The `append` scenario: the storage engine alone, no network. Each shard is a thread pinned to
//! its own core running the engine's reactor; it opens its partition logs in the run's data
//! directory (default log configuration) and runs `--producers` appender tasks against them
//! concurrently, so that durable appends share fdatasyncs (group commit). Every appender sends
//! the same prebuilt batch again and again; latency is per append, from the call to the
//! resolution of its future (with `--acks durable`: write and fdatasync done).
//!
//! Bytes are whole batch bytes: what goes to the disk, like the disk reference's bytes.

use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ringlog_engine::cache::ChunkCache;
use ringlog_engine::error::LogError;
use ringlog_engine::log::{Acks as LogAcks, LogConfig, LogStats, PartitionLog};
use ringlog_engine::reactor::{self, time, RingConfig};
use ringlog_net::server::ServerConfig;

use super::batches::PrebuiltBatch;
use super::control::RunControl;
use super::recorder::{merge_all, LoadRecorder};
use super::server::pin_load_thread;
use super::{Scenario, ScenarioContext, ScenarioError, ScenarioResult};
use crate::cpu;
use crate::options::{Acks, RunConfig, Target};

/// How long an appender waits before retrying an append refused for back-pressure.
const BACKPRESSURE_PAUSE: Duration = Duration::from_micros(100);

/// The `append` scenario.
#[derive(Debug, Default)]
pub struct Append {
    batch: Option<PrebuiltBatch>,
}

/// What one shard thread runs.
#[derive(Clone, Debug)]
struct ShardPlan {
    cpu: Option<usize>,
    /// (partition id, directory) of the logs this shard owns.
    logs: Vec<(u32, PathBuf)>,
    /// Appenders per log, in the order of `logs`.
    appenders: Vec<u32>,
    acks: LogAcks,
    batch: PrebuiltBatch,
    expected: Option<Duration>,
}

/// What one shard measured.
struct ShardOutcome {
    recorders: Vec<LoadRecorder>,
    stats: Vec<LogStats>,
}

impl Scenario for Append {
    fn prepare(&mut self, context: &ScenarioContext<'_>) -> Result<(), ScenarioError> {
        let config = context.config;
        if config.producers < config.partitions {
            return Err(ScenarioError::Setup(format!(
                "--producers {} is less than --partitions {}: every partition needs an appender",
                config.producers, config.partitions
            )));
        }
        self.batch = Some(PrebuiltBatch::build(
            config.record_size_bytes,
            config.batch_bytes,
        )?);
        Ok(())
    }

    fn run(&mut self, context: &ScenarioContext<'_>) -> Result<ScenarioResult, ScenarioError> {
        let config = context.config;
        let batch = self
            .batch
            .clone()
            .ok_or_else(|| ScenarioError::Failed("append ran before prepare".into()))?;
        let plans = shard_plans(config, context.data_dir, &batch);
        let control = Arc::new(RunControl::new(
            plans.len(),
            config.stop,
            context.progress.clone(),
        ));
        let outcomes = std::thread::scope(|scope| {
            let threads: Vec<_> = plans
                .iter()
                .cloned()
                .map(|plan| {
                    let control = Arc::clone(&control);
                    scope.spawn(move || run_shard(plan, &control))
                })
                .collect();
            control.open();
            threads
                .into_iter()
                .map(|thread| {
                    thread.join().unwrap_or_else(|_| {
                        Err(ScenarioError::Failed(
                            "an append shard thread panicked".into(),
                        ))
                    })
                })
                .collect::<Vec<_>>()
        });
        let mut recorders = Vec::new();
        let mut stats = Vec::new();
        for outcome in outcomes {
            let outcome = outcome?;
            recorders.extend(outcome.recorders);
            stats.extend(outcome.stats);
        }
        let merged =
            merge_all(recorders).ok_or_else(|| ScenarioError::Failed("no appender ran".into()))?;
        let seconds = merged.active_seconds();
        let notes = notes(config, &plans, &batch, &stats);
        Ok(merged.into_result(seconds, notes))
    }
}

/// Splits partitions over shards (partition p on shard p % shards) and appenders over
/// partitions (as evenly as possible).
fn shard_plans(config: &RunConfig, data_dir: &Path, batch: &PrebuiltBatch) -> Vec<ShardPlan> {
    let shards = match config.target {
        Target::Embedded { shards } => shards.max(1),
        Target::Server(_) => 1,
    };
    let allowed = cpu::allowed_cpus().unwrap_or_default();
    let acks = match config.acks {
        Acks::None => LogAcks::None,
        Acks::Leader => LogAcks::Leader,
        Acks::Durable => LogAcks::Durable,
    };
    (0..shards)
        .map(|shard| {
            let partitions: Vec<u32> = (0..config.partitions)
                .filter(|partition| partition % shards == shard)
                .collect();
            let appenders = partitions
                .iter()
                .map(|&partition| {
                    let base = config.producers / config.partitions;
                    base + u32::from(partition < config.producers % config.partitions)
                })
                .collect();
            ShardPlan {
                cpu: allowed.get(shard as usize).copied(),
                logs: partitions
                    .iter()
                    .map(|&partition| (partition, data_dir.join(format!("append-{partition}"))))
                    .collect(),
                appenders,
                acks,
                batch: batch.clone(),
                expected: config.expected_duration(),
            }
        })
        .collect()
}

/// One shard thread: pin, run the reactor, report.
fn run_shard(plan: ShardPlan, control: &Arc<RunControl>) -> Result<ShardOutcome, ScenarioError> {
    if let Err(error) = pin_load_thread(plan.cpu) {
        control.abort();
        control.wait_for_start();
        return Err(error);
    }
    let task_control = Arc::clone(control);
    let outcome = reactor::block_on(RingConfig::default(), shard_main(plan, task_control));
    match outcome {
        Ok(result) => result,
        Err(source) => {
            // The reactor never ran: release the others at the gate.
            control.abort();
            control.wait_for_start();
            Err(ScenarioError::Io {
                context: "set up the engine's io_uring reactor".into(),
                source,
            })
        }
    }
}

async fn shard_main(
    plan: ShardPlan,
    control: Arc<RunControl>,
) -> Result<ShardOutcome, ScenarioError> {
    // Blocks this thread until every shard is ready: nothing else runs on it before the load.
    let (logs, start) = control.start_after(open_logs(&plan).await)?;
    let mut tasks = Vec::new();
    for (log, &appenders) in logs.iter().zip(&plan.appenders) {
        for _ in 0..appenders {
            let (log, control) = (Rc::clone(log), Arc::clone(&control));
            let mut batch = plan.batch.clone();
            let (acks, expected) = (plan.acks, plan.expected);
            tasks.push(reactor::spawn(async move {
                appender(
                    &log,
                    &mut batch,
                    acks,
                    &control,
                    LoadRecorder::new(start, expected),
                )
                .await
            }));
        }
    }
    let mut recorders = Vec::with_capacity(tasks.len());
    let mut first_error = None;
    for task in tasks {
        match task.await {
            Ok(recorder) => recorders.push(recorder),
            Err(error) => {
                control.abort();
                first_error.get_or_insert(error);
            }
        }
    }
    let mut stats = Vec::with_capacity(logs.len());
    for log in &logs {
        // Everything appended is written (and synced) before the data directory goes away.
        if let Err(error) = log.close().await {
            first_error.get_or_insert(log_error("close a partition log", error));
        }
        stats.push(log.stats());
    }
    match first_error {
        Some(error) => Err(error),
        None => Ok(ShardOutcome { recorders, stats }),
    }
}

async fn open_logs(plan: &ShardPlan) -> Result<Vec<Rc<PartitionLog>>, ScenarioError> {
    // The same per-shard cache budget as the server's default.
    let cache = Rc::new(ChunkCache::new(
        ServerConfig::default().cache_bytes_per_shard,
    ));
    let mut logs = Vec::with_capacity(plan.logs.len());
    for (_, dir) in &plan.logs {
        let log = PartitionLog::open(dir.clone(), LogConfig::default(), Rc::clone(&cache))
            .await
            .map_err(|error| log_error("open a partition log", error))?;
        logs.push(Rc::new(log));
    }
    Ok(logs)
}

/// One appender task: append, wait per `acks`, record, until the run stops.
async fn appender(
    log: &PartitionLog,
    batch: &mut PrebuiltBatch,
    acks: LogAcks,
    control: &RunControl,
    mut recorder: LoadRecorder,
) -> Result<LoadRecorder, ScenarioError> {
    let (records, bytes) = (batch.records(), batch.len_bytes());
    while control.reserve_bytes(bytes, Instant::now()) {
        loop {
            let started = Instant::now();
            match log.append(batch.bytes_mut(), acks).await {
                Ok(_) => {
                    let done = Instant::now();
                    recorder.complete(done, records, bytes);
                    recorder.latency(done.saturating_duration_since(started));
                    control.complete_bytes(bytes);
                    break;
                }
                Err(LogError::Backpressure { .. }) => time::sleep(BACKPRESSURE_PAUSE).await,
                Err(error) => return Err(log_error("append", error)),
            }
        }
        if acks == LogAcks::None {
            // The append resolved at once; let the flusher and the other appenders run.
            reactor::yield_now().await;
        }
    }
    Ok(recorder)
}

fn log_error(context: &str, error: LogError) -> ScenarioError {
    ScenarioError::Failed(format!("{context}: {error}"))
}

fn notes(
    config: &RunConfig,
    plans: &[ShardPlan],
    batch: &PrebuiltBatch,
    stats: &[LogStats],
) -> Vec<String> {
    let total = stats.iter().fold(LogStats::default(), |mut sum, one| {
        sum.appends += one.appends;
        sum.writes += one.writes;
        sum.syncs += one.syncs;
        sum.appended_bytes += one.appended_bytes;
        sum
    });
    let cpus: Vec<String> = plans
        .iter()
        .map(|plan| {
            plan.cpu
                .map_or_else(|| "any".to_string(), |cpu| cpu.to_string())
        })
        .collect();
    let per = |count: u64| {
        if count == 0 {
            0.0
        } else {
            total.appends as f64 / count as f64
        }
    };
    let mut notes = vec![
        format!(
            "engine only: {} shard thread(s) on cpus [{}], {} partition log(s), {} appender task(s), \
             each appending one prebuilt {}-byte batch of {} records again and again",
            plans.len(),
            cpus.join(", "),
            config.partitions,
            config.producers,
            batch.len_bytes(),
            batch.records()
        ),
        format!(
            "{} appends took {} segment writes ({:.1} appends per write) and {} fdatasyncs ({:.1} appends per sync)",
            total.appends,
            total.writes,
            per(total.writes),
            total.syncs,
            per(total.syncs)
        ),
    ];
    if config.acks == Acks::None {
        notes.push(
            "acks none: an append completes when it is in memory; the writes trail behind".into(),
        );
    }
    notes
}
