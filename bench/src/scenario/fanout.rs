//! The `fanout` scenario: `--groups` consumer groups read one topic; the result is the total
//! egress (record batch bytes received by all groups), latency per fetch.
//!
//! Each group is `--consumers` independent consumers that split the topic's partitions between
//! them: every group reads every record, as a group would (the bench measures the server's
//! sending, so it leaves assignment and offset commits out).
//!
//! - default: the run first fills a topic that fits the server's memory cache (as `consume`
//!   does hot), then every group reads it from the earliest offset, again and again, until the
//!   time is up: what the server can send to many readers of the same bytes (replays,
//!   catching-up groups). This is the row the egress target is stated for.
//! - `--follow`: groups start at the beginning of an empty topic and follow producers writing
//!   it during the run; egress is then at most `--groups` times the producers' rate, so on a
//!   machine whose disk is slower than its loopback this measures the disk.

use super::consume::{hot_fill_bytes, hot_note};
use super::control::RunControl;
use super::fetcher::{FetchCounters, Fetcher, StartAt};
use super::fill::fill_topic;
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
    /// What the fill wrote (re-read mode only).
    fill_notes: Vec<String>,
}

/// What one fanout thread returns.
enum Outcome {
    Produced(LoadRecorder),
    Fetched(LoadRecorder, FetchCounters),
}

impl Scenario for Fanout {
    fn prepare(&mut self, context: &ScenarioContext<'_>) -> Result<(), ScenarioError> {
        let config = context.config;
        super::check_consumers_fit(config)?;
        let mut server = BenchServer::start(config, context.data_dir)?;
        let topic = server.create_topic(Workload::Fanout, config.partitions)?;
        let mut end_offsets = None;
        if config.follow {
            self.producers = producer_threads(&ProducerPlan::of_run(config), &server, &topic)?;
        } else {
            let filled = fill_topic(&server, &topic, config, hot_fill_bytes(config, &server))?;
            end_offsets = Some(server.high_watermarks(&topic)?);
            self.fill_notes = vec![filled.describe(), hot_note(&server, &filled)];
        }
        let first_consumer_thread = self.producers.len();
        self.fetchers = (0..config.groups)
            .flat_map(|_| 0..config.consumers)
            .enumerate()
            .map(|(thread, index)| Fetcher {
                address: server.address(),
                topic: topic.clone(),
                partitions: partitions_of(index, config.consumers, config.partitions),
                start_at: StartAt::Earliest,
                end_offsets: end_offsets.clone(),
                repeat: !config.follow,
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
        let merged =
            merge_all(fetched).ok_or_else(|| ScenarioError::Failed("no consumer ran".into()))?;
        let seconds = merged.active_seconds();
        let mut notes = self.fill_notes.clone();
        notes.push(format!(
            "{} group(s) of {} consumer(s), each group reading every record{}; egress = batch \
             bytes received by all of them; {fetches} fetches, latency per fetch",
            config.groups,
            config.consumers,
            if config.follow {
                " as the producers write it"
            } else {
                " from the earliest offset, again and again"
            }
        ));
        if let Some(produced) = merge_all(produced) {
            notes.push(format!(
                "producers wrote {:.1} MB/s ({} records) meanwhile; {}",
                mb_per_s(produced.bytes(), produced.active_seconds()),
                produced.records(),
                describe(&self.producers)
            ));
        }
        notes.push(server.placement_note());
        Ok(merged.into_result(seconds, notes))
    }
}
