//! A consumer that follows a topic from its end with the client's `Consumer` and measures, per
//! record, the time from the record's intended send time (carried in its value, see
//! [`super::paced_producer`]) to its receipt (the return of the poll that delivered it).
//!
//! After the producers stop it keeps reading until it has every record they wrote (the final
//! offsets, once the coordinator publishes them) or [`DRAIN_TIMEOUT`] has passed.

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use ringlog_net::client::{Consumer, ConsumerConfig, SeekTo};

use super::control::RunControl;
use super::paced_producer::intended_send_time;
use super::pipelined_producer::failed;
use super::recorder::LoadRecorder;
use super::server::pin_load_thread;
use super::ScenarioError;

/// Longest one poll waits for records.
const POLL_TIMEOUT: Duration = Duration::from_millis(100);
/// How long consumers may take after the producers' deadline to receive the last records.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// One following consumer thread.
#[derive(Clone, Debug)]
pub struct TimedConsumer {
    /// Server address.
    pub address: SocketAddr,
    /// Topic to follow.
    pub topic: String,
    /// Partitions this consumer reads.
    pub partitions: Vec<u32>,
    /// Core to pin the thread to.
    pub cpu: Option<usize>,
    /// Expected run length (sizes the throughput timeline).
    pub expected: Option<Duration>,
}

/// What a timed consumer saw besides its measurements.
#[derive(Clone, Copy, Debug, Default)]
pub struct TimedCounters {
    /// Records whose value carried no send time (never expected: counted as an anomaly).
    pub untimed: u64,
    /// Whether the consumer gave up draining before reaching the final offsets.
    pub drain_timed_out: bool,
}

impl TimedConsumer {
    /// Connects and positions at the end, waits for the start, follows until drained.
    /// `final_offsets` (by partition id) is published once every producer has finished.
    pub fn run(
        &self,
        control: &RunControl,
        final_offsets: &OnceLock<Vec<i64>>,
    ) -> Result<(LoadRecorder, TimedCounters), ScenarioError> {
        let (mut consumer, start) = control.start_after(self.connect())?;
        let mut recorder = LoadRecorder::new(start, self.expected);
        let outcome = self.follow(control, final_offsets, &mut consumer, &mut recorder, start);
        if outcome.is_err() {
            control.abort();
        }
        outcome.map(|counters| (recorder, counters))
    }

    fn connect(&self) -> Result<Consumer, ScenarioError> {
        pin_load_thread(self.cpu)?;
        let mut consumer =
            Consumer::connect(self.address, ConsumerConfig::default()).map_err(|error| {
                ScenarioError::Setup(format!(
                    "consumer cannot connect to {}: {error}",
                    self.address
                ))
            })?;
        consumer.assign(&self.topic, &self.partitions);
        consumer
            .seek_all(SeekTo::Latest)
            .map_err(failed("position a consumer at the end"))?;
        Ok(consumer)
    }

    fn follow(
        &self,
        control: &RunControl,
        final_offsets: &OnceLock<Vec<i64>>,
        consumer: &mut Consumer,
        recorder: &mut LoadRecorder,
        start: Instant,
    ) -> Result<TimedCounters, ScenarioError> {
        let mut counters = TimedCounters::default();
        loop {
            let mut records = 0u64;
            let mut bytes = 0u64;
            let received = {
                let polled = consumer.poll(POLL_TIMEOUT).map_err(failed("poll"))?;
                let received = Instant::now();
                let since_start = received.saturating_duration_since(start);
                for record in polled {
                    let record = record.map_err(failed("read a record"))?;
                    let value = record.value.unwrap_or_default();
                    match intended_send_time(value) {
                        Some(intended) => {
                            recorder.latency(since_start.saturating_sub(intended));
                        }
                        None => counters.untimed += 1,
                    }
                    records += 1;
                    bytes += value.len() as u64;
                }
                received
            };
            if records > 0 {
                recorder.complete(received, records, bytes);
                control.complete_bytes(bytes);
            }
            if control.was_stopped() {
                return Ok(counters);
            }
            let Some(deadline) = control.deadline() else {
                continue;
            };
            if received < deadline {
                continue;
            }
            if let Some(finals) = final_offsets.get() {
                let drained = self.partitions.iter().all(|&partition| {
                    let target = finals.get(partition as usize).copied().unwrap_or(0);
                    consumer
                        .position(partition)
                        .is_some_and(|position| position >= target)
                });
                if drained {
                    return Ok(counters);
                }
            }
            if received >= deadline + DRAIN_TIMEOUT {
                counters.drain_timed_out = true;
                return Ok(counters);
            }
        }
    }
}
