//! The load scenarios. Each is a module with a type implementing [`Scenario`]; `main` picks
//! it with [`for_workload`], calls [`Scenario::prepare`] before any reference or load, measures
//! the references, calls [`Scenario::run`] for the measured load, drops the scenario, measures
//! the references again and reports the [`ScenarioResult`].
//!
//! The scenario modules build on shared parts: [`server`] (embedded or remote server, topics,
//! core placement), [`control`] (start gate and stop condition), [`recorder`] (per-thread
//! measurements), [`batches`] (prebuilt batches), the producer threads ([`pipelined_producer`],
//! [`client_producer`], [`paced_producer`], [`paced_requests`], chosen by [`producers`]), the consumer threads
//! ([`fetcher`], [`timed_consumer`]), [`fill`], [`page_cache`], [`threads`] and [`kcat`] (the
//! Kafka command line client the `kafka` scenario drives).

pub mod append;
pub mod consume;
pub mod e2e;
pub mod fanout;
pub mod kafka;
pub mod partitions;
pub mod produce;
pub mod share;

pub mod batches;
pub mod client_producer;
pub mod control;
pub mod fetcher;
pub mod fill;
pub mod kcat;
pub mod paced_producer;
pub mod paced_requests;
pub mod page_cache;
pub mod pipelined_producer;
pub mod producers;
pub mod recorder;
pub mod server;
pub mod threads;
pub mod timed_consumer;

use std::io;
use std::path::Path;

use crate::front_doors::FrontDoorComparison;
use crate::latency::LatencyHistogram;
use crate::options::RunConfig;
use crate::progress::ProgressCounter;
use crate::throughput::ThroughputTimeline;
use crate::units::{mb_per_s, per_s};
use crate::workload::Workload;

/// Everything a scenario gets from `main`.
#[derive(Clone, Debug)]
pub struct ScenarioContext<'a> {
    /// The checked, resolved options (record size, partitions, target server, stop condition...).
    pub config: &'a RunConfig,
    /// An empty directory for the embedded server's data, removed after the run.
    pub data_dir: &'a Path,
    /// Add record bytes here as they complete (per batch, from any thread) to drive the
    /// progress bar; it only counts during [`Scenario::run`].
    pub progress: ProgressCounter,
}

/// One load scenario.
pub trait Scenario {
    /// Everything before the measured load: start the embedded server or connect, create the
    /// topic, fill it (consume). Runs before the first reference measurement. Fail here, not
    /// in `run`, for anything that can be checked before load starts.
    fn prepare(&mut self, context: &ScenarioContext<'_>) -> Result<(), ScenarioError>;

    /// The measured load; returns what it measured. Must stop by itself according to
    /// `context.config.stop`.
    fn run(&mut self, context: &ScenarioContext<'_>) -> Result<ScenarioResult, ScenarioError>;
}

/// Refuses a run with more consumers (per group) than partitions: the extra consumers would
/// get no partition and idle, and the run would measure fewer readers than asked for.
fn check_consumers_fit(config: &RunConfig) -> Result<(), ScenarioError> {
    if config.consumers > config.partitions {
        return Err(ScenarioError::Setup(format!(
            "--consumers {} (per group) is more than --partitions {}: consumers without a partition would idle",
            config.consumers, config.partitions
        )));
    }
    Ok(())
}

/// The scenario that measures `workload`, `None` for the references (`disk`, `net`).
pub fn for_workload(workload: Workload) -> Option<Box<dyn Scenario>> {
    let scenario: Box<dyn Scenario> = match workload {
        Workload::Append => Box::new(append::Append::default()),
        Workload::Produce => Box::new(produce::Produce::default()),
        Workload::Consume => Box::new(consume::Consume::default()),
        Workload::E2e => Box::new(e2e::E2e::default()),
        Workload::Fanout => Box::new(fanout::Fanout::default()),
        Workload::Share => Box::new(share::Share::default()),
        Workload::Kafka => Box::new(kafka::Kafka::default()),
        Workload::Partitions => Box::new(partitions::Partitions::default()),
        Workload::Disk | Workload::Net => return None,
    };
    Some(scenario)
}

/// What a scenario measured.
#[derive(Clone, Debug, Default)]
pub struct ScenarioResult {
    /// Records moved (produced, or consumed for the consuming scenarios).
    pub records: u64,
    /// Record bytes moved (what the MB/s and the ratio are computed from).
    pub bytes: u64,
    /// Seconds of measured load.
    pub seconds: f64,
    /// Latency samples in microseconds (what each scenario measures is its own: ack latency
    /// for produce, send-to-receipt from the intended send time for e2e, ...).
    pub latency: LatencyHistogram,
    /// Bytes completed per 100 ms over the run.
    pub throughput: ThroughputTimeline,
    /// Anything the reader should know (fallbacks, warnings), one line each.
    pub notes: Vec<String>,
    /// The same records through the native protocol and the Kafka front door (`kafka` only;
    /// empty for every other scenario).
    pub front_doors: Vec<FrontDoorComparison>,
    /// Resident memory per partition (`partitions` only).
    pub memory: Option<partitions::MemoryFigures>,
}

impl ScenarioResult {
    /// MB/s (10^6 bytes).
    pub fn mb_per_s(&self) -> f64 {
        mb_per_s(self.bytes, self.seconds)
    }

    /// Records per second.
    pub fn records_per_s(&self) -> f64 {
        per_s(self.records, self.seconds)
    }
}

/// A scenario that could not run or failed.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    /// The scenario does not exist yet (exit status 2).
    #[error("{0} is not implemented yet")]
    NotImplemented(Workload),
    /// The scenario needs something this build does not have (exit status 2).
    #[error("{0}")]
    Unavailable(String),
    /// Bad input found while preparing, before any load (exit status 2): the server is not
    /// there, the topic cannot be created...
    #[error("{0}")]
    Setup(String),
    /// An I/O error during the run.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// The run failed for another reason.
    #[error("{0}")]
    Failed(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_load_workload_has_a_scenario_and_references_do_not() {
        for workload in Workload::ALL {
            assert_eq!(
                for_workload(workload).is_some(),
                !workload.is_reference(),
                "{workload}"
            );
        }
    }

    #[test]
    fn rates_come_from_bytes_records_and_seconds() {
        let result = ScenarioResult {
            records: 1_000,
            bytes: 4_000_000,
            seconds: 2.0,
            ..ScenarioResult::default()
        };
        assert_eq!(result.mb_per_s(), 2.0);
        assert_eq!(result.records_per_s(), 500.0);
    }
}
