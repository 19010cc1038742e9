//! The `produce` scenario: producer threads send records to one topic over the network as fast
//! as the server acknowledges them; throughput of acknowledged batch bytes and acknowledgement
//! latency.
//!
//! `--produce-with requests` (default) sends prebuilt full batches as pipelined Produce
//! requests, so `--linger-ms` does not apply to it; `producer` uses the client's batching
//! `Producer`, which batches records by size and linger (see the modules of each).

use super::control::RunControl;
use super::producers::{describe, producer_threads, ProducerPlan, ProducerThread};
use super::recorder::merge_all;
use super::server::BenchServer;
use super::threads::join_all;
use super::{Scenario, ScenarioContext, ScenarioError, ScenarioResult};
use crate::workload::Workload;

/// The `produce` scenario.
#[derive(Debug, Default)]
pub struct Produce {
    server: Option<BenchServer>,
    producers: Vec<ProducerThread>,
}

impl Scenario for Produce {
    fn prepare(&mut self, context: &ScenarioContext<'_>) -> Result<(), ScenarioError> {
        let config = context.config;
        let mut server = BenchServer::start(config, context.data_dir)?;
        let topic = server.create_topic(Workload::Produce, config.partitions)?;
        self.producers = producer_threads(&ProducerPlan::of_run(config), &server, &topic)?;
        self.server = Some(server);
        Ok(())
    }

    fn run(&mut self, context: &ScenarioContext<'_>) -> Result<ScenarioResult, ScenarioError> {
        let server = self
            .server
            .as_ref()
            .ok_or_else(|| ScenarioError::Failed("produce ran before prepare".into()))?;
        let control = RunControl::new(
            self.producers.len(),
            context.config.stop,
            context.progress.clone(),
        );
        let outcomes = std::thread::scope(|scope| {
            let handles = self
                .producers
                .iter()
                .map(|producer| scope.spawn(|| producer.run(&control)))
                .collect();
            control.open();
            join_all(handles)
        })?;
        let retries: u64 = outcomes.iter().map(|(_, counters)| counters.retries).sum();
        let merged = merge_all(outcomes.into_iter().map(|(recorder, _)| recorder))
            .ok_or_else(|| ScenarioError::Failed("no producer ran".into()))?;
        let seconds = merged.active_seconds();
        let mut notes = vec![
            describe(&self.producers),
            server.placement_note(),
            "bytes are whole record batch bytes (what is sent and stored), MB = 10^6 bytes".into(),
        ];
        if retries > 0 {
            notes.push(format!(
                "{retries} request(s) were refused for now (Throttled: the disk fell behind) and sent again"
            ));
        }
        Ok(merged.into_result(seconds, notes))
    }
}
