//! Filling a topic before a read scenario: prebuilt batches as pipelined Produce requests
//! (acks leader: written, not necessarily synced; the server syncs everything when it stops),
//! one producer thread per partition up to [`FILL_THREADS_MAX`], until a byte count is reached.

use std::time::Instant;

use crate::options::RunConfig;

use super::batches::PrebuiltBatch;
use super::control::RunControl;
use super::pipelined_producer::PipelinedProducer;
use super::producers::{partitions_of, wire_acks};
use super::recorder::merge_all;
use super::server::BenchServer;
use super::threads::join_all;
use super::ScenarioError;
use crate::options::Acks;
use crate::progress::ProgressCounter;
use crate::units::format_bytes;

/// Most producer threads a fill uses.
pub const FILL_THREADS_MAX: u32 = 4;

/// What a fill wrote.
#[derive(Clone, Copy, Debug, Default)]
pub struct Filled {
    /// Batch bytes written.
    pub bytes: u64,
    /// Records written.
    pub records: u64,
    /// Seconds it took.
    pub seconds: f64,
}

impl Filled {
    /// One line for the notes.
    pub fn describe(&self) -> String {
        format!(
            "filled first with {} in {} records in {:.1} s (pipelined Produce requests, acks leader)",
            format_bytes(self.bytes),
            self.records,
            self.seconds
        )
    }
}

/// Writes about `bytes` into every one of the run's partitions of `topic`, in batches of the
/// run's batch and record sizes.
pub fn fill_topic(
    server: &BenchServer,
    topic: &str,
    config: &RunConfig,
    bytes: u64,
) -> Result<Filled, ScenarioError> {
    let partitions = config.partitions;
    let batch = PrebuiltBatch::build(config.record_size_bytes, config.batch_bytes)?;
    let threads = partitions.clamp(1, FILL_THREADS_MAX);
    let producers: Vec<PipelinedProducer> = (0..threads)
        .map(|index| PipelinedProducer {
            address: server.address(),
            topic: topic.to_owned(),
            partitions: partitions_of(index, threads, partitions),
            acks: wire_acks(Acks::Leader),
            batch: batch.clone(),
            cpu: server.load_cpu(index as usize),
            expected: None,
        })
        .collect();
    let control = RunControl::with_limits(
        producers.len(),
        None,
        Some(bytes),
        ProgressCounter::default(),
    );
    let started = Instant::now();
    let outcomes = std::thread::scope(|scope| {
        let handles = producers
            .iter()
            .map(|producer| scope.spawn(|| producer.run(&control)))
            .collect();
        control.open();
        join_all(handles)
    })
    .map_err(|error| ScenarioError::Failed(format!("filling {topic} failed: {error}")))?;
    let merged = merge_all(outcomes.into_iter().map(|(recorder, _)| recorder))
        .unwrap_or_else(|| super::recorder::LoadRecorder::new(started, None));
    Ok(Filled {
        bytes: merged.bytes(),
        records: merged.records(),
        seconds: started.elapsed().as_secs_f64(),
    })
}
