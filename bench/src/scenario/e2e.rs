//! The `e2e` scenario: producers send at a fixed total rate (`--rate-mb-per-s` of record
//! values) while consumers follow the topic from its end; latency is per record, from its
//! INTENDED send time on the producers' fixed schedule to its receipt by a consumer
//! (coordinated omission corrected). Producer and consumers share one monotonic clock: they
//! run in this process.
//!
//! Producers (default linger 0 ms for e2e: a batch goes out at the next wake-up, so batching
//! only happens under load) either use the client's `Producer` (`--produce-with producer`, the
//! default) or build their own batches of the due records and send them as pipelined Produce
//! requests (`--produce-with requests`). Consumers use the client's `Consumer` (long poll, one
//! fetch in flight).

use std::sync::OnceLock;
use std::time::Duration;

use super::client_producer::ClientProducer;
use super::control::RunControl;
use super::paced_producer::{PacedCounters, PacedProducer, PACING_TICK};
use super::paced_requests::{PacedRequests, WINDOW_REQUESTS};
use super::producers::{partitions_of, wire_acks};
use super::recorder::{merge_all, LoadRecorder};
use super::server::BenchServer;
use super::threads::join_all;
use super::timed_consumer::{TimedConsumer, TimedCounters, DRAIN_TIMEOUT};
use super::{Scenario, ScenarioContext, ScenarioError, ScenarioResult};
use crate::options::{Acks, ProduceWith, RunConfig, E2E_RATE_MB_PER_S_DEFAULT};
use crate::units::BYTES_PER_MB;
use crate::workload::Workload;

/// The `e2e` scenario.
#[derive(Debug, Default)]
pub struct E2e {
    server: Option<BenchServer>,
    topic: String,
    producers: Vec<PacedSender>,
    consumers: Vec<TimedConsumer>,
}

impl Scenario for E2e {
    fn prepare(&mut self, context: &ScenarioContext<'_>) -> Result<(), ScenarioError> {
        let config = context.config;
        super::check_consumers_fit(config)?;
        let mut server = BenchServer::start(config, context.data_dir)?;
        let topic = server.create_topic(Workload::E2e, config.partitions)?;
        let records_per_s = records_per_s(config) / f64::from(config.producers);
        self.producers = (0..config.producers)
            .map(|index| paced_sender(config, &server, &topic, index, records_per_s))
            .collect();
        let first_consumer_thread = config.producers as usize;
        self.consumers = (0..config.consumers)
            .map(|index| TimedConsumer {
                address: server.address(),
                topic: topic.clone(),
                partitions: partitions_of(index, config.consumers, config.partitions),
                cpu: server.load_cpu(first_consumer_thread + index as usize),
                expected: config.expected_duration(),
            })
            .collect();
        self.server = Some(server);
        self.topic = topic;
        Ok(())
    }

    fn run(&mut self, context: &ScenarioContext<'_>) -> Result<ScenarioResult, ScenarioError> {
        let config = context.config;
        let server = self
            .server
            .as_ref()
            .ok_or_else(|| ScenarioError::Failed("e2e ran before prepare".into()))?;
        let control = RunControl::new(
            self.producers.len() + self.consumers.len(),
            config.stop,
            context.progress.clone(),
        );
        let final_offsets: OnceLock<Vec<i64>> = OnceLock::new();
        let (sent, consumed) = std::thread::scope(|scope| {
            let producers: Vec<_> = self
                .producers
                .iter()
                .map(|producer| scope.spawn(|| producer.run(&control)))
                .collect();
            let consumers: Vec<_> = self
                .consumers
                .iter()
                .map(|consumer| scope.spawn(|| consumer.run(&control, &final_offsets)))
                .collect();
            control.open();
            let sent = join_all(producers);
            // Every producer flushed: the high watermarks are where the consumers must get to.
            match server.high_watermarks(&self.topic) {
                Ok(watermarks) => {
                    let _ = final_offsets.set(watermarks);
                }
                Err(_) => control.abort(),
            }
            (sent, join_all(consumers))
        });
        let sent = sent?;
        let consumed = consumed?;
        let sent_total = sent.iter().fold(PacedCounters::default(), |mut sum, one| {
            sum.sent += one.sent;
            sum.behind_max = sum.behind_max.max(one.behind_max);
            sum
        });
        let seen = consumed
            .iter()
            .fold(TimedCounters::default(), |mut sum, (_, one)| {
                sum.untimed += one.untimed;
                sum.drain_timed_out |= one.drain_timed_out;
                sum
            });
        let mut merged = merge_all(consumed.into_iter().map(|(recorder, _)| recorder))
            .ok_or_else(|| ScenarioError::Failed("no consumer ran".into()))?;
        let received = merged.records();
        let missing_note = count_missing(
            &mut merged,
            sent_total.sent,
            seen.drain_timed_out,
            config.acks,
        )?;
        let seconds = config.expected_duration().map_or_else(
            || merged.active_seconds(),
            |duration| duration.as_secs_f64(),
        );
        let mut notes = vec![
            format!(
                "{} producer(s) on a fixed schedule of {:.0} records/s in total ({:.1} MB/s of {}-byte \
                 values; {}, linger {} ms, acks {}); latency from each record's intended \
                 send time to its receipt (coordinated omission corrected; the generator sends every \
                 {} us at most, and that wait counts)",
                config.producers,
                records_per_s(config),
                config.rate_mb_per_s.unwrap_or(E2E_RATE_MB_PER_S_DEFAULT),
                config.record_size_bytes,
                match config.produce_with {
                    ProduceWith::Producer => "client Producer".to_string(),
                    ProduceWith::Requests => format!(
                        "own batches of the due records as pipelined Produce requests, up to {WINDOW_REQUESTS} in flight"
                    ),
                },
                config.linger_ms,
                config.acks.name(),
                PACING_TICK.as_micros()
            ),
            format!(
                "{} consumer(s) following from the end (client Consumer); {} of {} records received; \
                 bytes are record value bytes; producers were at most {:.2} ms behind schedule",
                config.consumers,
                received,
                sent_total.sent,
                sent_total.behind_max.as_secs_f64() * 1e3
            ),
            server.placement_note(),
        ];
        if seen.drain_timed_out {
            notes.push(format!(
                "consumers had not received everything {} s after the producers stopped",
                DRAIN_TIMEOUT.as_secs()
            ));
        }
        notes.extend(missing_note);
        if seen.untimed > 0 {
            notes.push(format!("{} records carried no send time", seen.untimed));
        }
        Ok(merged.into_result(seconds, notes))
    }
}

/// Puts the records the producers sent and no consumer received into the latency, so that
/// the percentiles are not those of the records that arrived alone (the missing ones are the
/// latest). Consumers give up draining [`DRAIN_TIMEOUT`] after the deadline, and every record
/// was due before the deadline, so each missing record took longer than that: it is counted
/// at [`DRAIN_TIMEOUT`], a lower bound. Records missing although the consumers reached the end
/// of every partition were lost: allowed with `acks none` (the server drops what it refuses
/// without a word), and then only noted; otherwise they fail the run. Returns the note saying
/// so, if any are missing.
fn count_missing(
    merged: &mut LoadRecorder,
    sent: u64,
    drain_timed_out: bool,
    acks: Acks,
) -> Result<Option<String>, ScenarioError> {
    let missing = sent.saturating_sub(merged.records());
    if missing == 0 {
        return Ok(None);
    }
    if !drain_timed_out && acks == Acks::None {
        return Ok(Some(format!(
            "{missing} of {sent} records were lost (acks none: nothing tells the producer of a              batch the server refused); they are not in the latency"
        )));
    }
    if !drain_timed_out {
        return Err(ScenarioError::Failed(format!(
            "the consumers stopped with {missing} of {sent} records not received"
        )));
    }
    merged.latencies(DRAIN_TIMEOUT, missing);
    Ok(Some(format!(
        "{missing} of {sent} records were never received: each is in the latency at {} s, a \
         lower bound (due before the end of the run, not received {} s after it)",
        DRAIN_TIMEOUT.as_secs(),
        DRAIN_TIMEOUT.as_secs()
    )))
}

/// The paced producer thread number `index`, as `--produce-with` asks.
fn paced_sender(
    config: &RunConfig,
    server: &BenchServer,
    topic: &str,
    index: u32,
    records_per_s: f64,
) -> PacedSender {
    let cpu = server.load_cpu(index as usize);
    match config.produce_with {
        ProduceWith::Producer => PacedSender::Client(PacedProducer {
            client: ClientProducer {
                address: server.address(),
                topic: topic.to_owned(),
                acks: wire_acks(config.acks),
                record_size_bytes: config.record_size_bytes,
                batch_bytes: config.batch_bytes,
                linger_ms: config.linger_ms,
                cpu,
                expected: config.expected_duration(),
            },
            records_per_s,
        }),
        ProduceWith::Requests => PacedSender::Requests(PacedRequests {
            address: server.address(),
            topic: topic.to_owned(),
            partitions: partitions_of(index, config.producers, config.partitions),
            acks: wire_acks(config.acks),
            record_size_bytes: config.record_size_bytes,
            batch_bytes: config.batch_bytes,
            linger: Duration::from_millis(config.linger_ms),
            records_per_s,
            cpu,
        }),
    }
}

/// A paced producer thread of either kind.
#[derive(Clone, Debug)]
enum PacedSender {
    Client(PacedProducer),
    Requests(PacedRequests),
}

impl PacedSender {
    fn run(&self, control: &RunControl) -> Result<PacedCounters, ScenarioError> {
        match self {
            PacedSender::Client(producer) => producer.run(control),
            PacedSender::Requests(producer) => producer.run(control),
        }
    }
}

/// Records per second all producers together send.
fn records_per_s(config: &RunConfig) -> f64 {
    let rate = config.rate_mb_per_s.unwrap_or(E2E_RATE_MB_PER_S_DEFAULT);
    rate * BYTES_PER_MB / f64::from(config.record_size_bytes.max(1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    fn received(records: u64) -> LoadRecorder {
        let start = Instant::now();
        let mut recorder = LoadRecorder::new(start, None);
        recorder.complete(start, records, records * 100);
        for _ in 0..records {
            recorder.latency(Duration::from_millis(1));
        }
        recorder
    }

    #[test]
    fn records_never_received_count_in_the_latency() {
        // 40 of 100 records arrived, in 1 ms; the consumers gave up draining on the other 60.
        let mut merged = received(40);
        let note = count_missing(&mut merged, 100, true, Acks::Durable).unwrap();
        assert!(note
            .unwrap()
            .starts_with("60 of 100 records were never received"));
        let latency = merged.into_result(1.0, Vec::new()).latency.summary();
        assert_eq!(latency.count, 100, "one sample per record sent");
        assert!(
            latency.p50 >= DRAIN_TIMEOUT.as_micros() as u64,
            "p50 {} us: most records were not received {DRAIN_TIMEOUT:?} after they were due",
            latency.p50
        );
    }

    #[test]
    fn all_received_adds_nothing_and_a_silent_shortfall_fails() {
        let mut merged = received(100);
        assert!(count_missing(&mut merged, 100, false, Acks::Durable)
            .unwrap()
            .is_none());
        assert_eq!(merged.latency_count(), 100);
        let mut short = received(99);
        assert!(count_missing(&mut short, 100, false, Acks::Durable).is_err());
        // With acks none a refused batch is dropped without a word: noted, not a failure.
        let mut lost = received(99);
        let note = count_missing(&mut lost, 100, false, Acks::None).unwrap();
        assert!(note.unwrap().starts_with("1 of 100 records were lost"));
        assert_eq!(lost.latency_count(), 99);
    }
}
