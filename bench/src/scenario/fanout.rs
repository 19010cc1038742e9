//! The `fanout` scenario: `--groups` consumer groups read one topic while producers write it;
//! the result is the total egress (record batch bytes received by all groups), latency per fetch.
//!
//! Consumer groups (partition assignment, committed offsets) are being built separately, so for
//! now each group is `--consumers` independent consumers that split the topic's partitions
//! between them: every group reads every record, as a group would. Groups start at the
//! beginning of the (empty) topic and follow the producers until the time is up.

use super::control::RunControl;
use super::fetcher::{FetchCounters, Fetcher, StartAt};
use super::pipelined_producer::ProducerCounters;
use super::producers::{describe, partitions_of, producer_threads, ProducerPlan, ProducerThread};
use super::recorder::{merge_all, LoadRecorder};
use super::server::BenchServer;
use super::threads::join_all;
use super::{Scenario, ScenarioContext, ScenarioError, ScenarioResult};
use crate::units::mb_per_s;
use crate::workload::Workload;

/// The `fanout` scenario.
#[derive(Debug, Default)]
pub struct Fanout {
    server: Option<BenchServer>,
    producers: Vec<ProducerThread>,
    fetchers: Vec<Fetcher>,
}

/// What one fanout thread returns.
enum Outcome {
    Produced(LoadRecorder),
    Fetched(LoadRecorder, FetchCounters),
}

impl Scenario for Fanout {
    fn prepare(&mut self, context: &ScenarioContext<'_>) -> Result<(), ScenarioError> {
        let config = context.config;
        if config.consumers > config.partitions {
            return Err(ScenarioError::Setup(format!(
                "--consumers {} (per group) is more than --partitions {}: consumers without a partition would idle",
                config.consumers, config.partitions
            )));
        }
        let mut server = BenchServer::start(config, context.data_dir)?;
        let topic = server.create_topic(Workload::Fanout, config.partitions)?;
        let plan = ProducerPlan {
            config,
            produce_with: config.produce_with,
            acks: config.acks,
            threads: config.producers,
            first_load_thread: 0,
            expected: config.expected_duration(),
        };
        self.producers = producer_threads(&plan, &server, &topic)?;
        let first_consumer_thread = self.producers.len();
        self.fetchers = (0..config.groups)
            .flat_map(|_| 0..config.consumers)
            .enumerate()
            .map(|(thread, index)| Fetcher {
                address: server.address(),
                topic: topic.clone(),
                partitions: partitions_of(index, config.consumers, config.partitions),
                start_at: StartAt::Earliest,
                end_offsets: None,
                repeat: false,
                cpu: server.load_cpu(first_consumer_thread + thread),
                expected: config.expected_duration(),
            })
            .collect();
        self.server = Some(server);
        Ok(())
    }

    fn run(&mut self, context: &ScenarioContext<'_>) -> Result<ScenarioResult, ScenarioError> {
        let config = context.config;
        let server = self
            .server
            .as_ref()
            .ok_or_else(|| ScenarioError::Failed("fanout ran before prepare".into()))?;
        let control = RunControl::new(
            self.producers.len() + self.fetchers.len(),
            config.stop,
            context.progress.clone(),
        );
        let outcomes = std::thread::scope(|scope| {
            let mut handles = Vec::new();
            for producer in &self.producers {
                handles.push(scope.spawn(|| {
                    producer
                        .run(&control)
                        .map(|(recorder, _): (LoadRecorder, ProducerCounters)| {
                            Outcome::Produced(recorder)
                        })
                }));
            }
            for fetcher in &self.fetchers {
                handles.push(scope.spawn(|| {
                    fetcher
                        .run(&control)
                        .map(|(recorder, counters)| Outcome::Fetched(recorder, counters))
                }));
            }
            control.open();
            join_all(handles)
        })?;
        let mut produced = Vec::new();
        let mut fetched = Vec::new();
        let mut fetches = 0;
        for outcome in outcomes {
            match outcome {
                Outcome::Produced(recorder) => produced.push(recorder),
                Outcome::Fetched(recorder, counters) => {
                    fetches += counters.fetches;
                    fetched.push(recorder);
                }
            }
        }
        let produced =
            merge_all(produced).ok_or_else(|| ScenarioError::Failed("no producer ran".into()))?;
        let merged =
            merge_all(fetched).ok_or_else(|| ScenarioError::Failed("no consumer ran".into()))?;
        let seconds = merged.active_seconds();
        let notes = vec![
            format!(
                "{} group(s) of {} consumer(s), each group reading every record (independent consumers \
                 until consumer groups land); egress = batch bytes received by all of them; {fetches} \
                 fetches, latency per fetch",
                config.groups, config.consumers
            ),
            format!(
                "producers wrote {:.1} MB/s ({} records) meanwhile; {}",
                mb_per_s(produced.bytes(), produced.active_seconds()),
                produced.records(),
                describe(&self.producers)
            ),
            server.placement_note(),
        ];
        Ok(merged.into_result(seconds, notes))
    }
}
