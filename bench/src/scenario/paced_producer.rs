//! A producer on a fixed timeline: record `i` is due at `start + i * interval`, and its value
//! begins with that intended send time (nanoseconds since the run's start, little endian), so
//! that a consumer in the same process can measure send-to-receipt latency from the schedule,
//! not from when the record actually went out (coordinated omission correction: a stalled
//! producer does not hide the stall, the records it owes are late by their full delay).
//!
//! The thread wakes at most every [`PACING_TICK`] and sends every record that is due, with the
//! client's `Producer`; the value buffer is reused, nothing is allocated per record.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use ringlog_net::client::{Producer, ProducerRecord};

use super::batches::record_value;
use super::client_producer::ClientProducer;
use super::control::RunControl;
use super::pipelined_producer::failed;
use super::server::pin_load_thread;
use super::ScenarioError;

/// Shortest sleep between two rounds of sends: waking for every record at ~100k records/s
/// would cost a core on its own. Records wait at most this long in the generator, and that wait
/// is part of their measured latency (it is measured from the schedule).
pub const PACING_TICK: Duration = Duration::from_micros(50);
/// Bytes at the start of each value holding its intended send time.
pub const SEND_TIME_BYTES: usize = 8;

/// One paced producer thread.
#[derive(Clone, Debug)]
pub struct PacedProducer {
    /// Producer settings (address, topic, acks, record size, batch, linger, core).
    pub client: ClientProducer,
    /// Records per second this thread sends.
    pub records_per_s: f64,
}

/// What a paced producer did.
#[derive(Clone, Copy, Debug, Default)]
pub struct PacedCounters {
    /// Records sent (and acknowledged: the producer is flushed at the end).
    pub sent: u64,
    /// Largest delay of a send behind its schedule (the generator or the producer fell behind).
    pub behind_max: Duration,
}

impl PacedProducer {
    /// Connects, waits for the start, sends on schedule until the run's deadline, flushes.
    pub fn run(&self, control: &RunControl) -> Result<PacedCounters, ScenarioError> {
        let (producer, start) = control.start_after(self.connect())?;
        let outcome = self.send_on_schedule(control, &producer, start);
        let closed = producer.close().map_err(failed("flush the producer"));
        if outcome.is_err() || closed.is_err() {
            control.abort();
        }
        let counters = outcome?;
        closed?;
        Ok(counters)
    }

    fn connect(&self) -> Result<Producer, ScenarioError> {
        pin_load_thread(self.client.cpu)?;
        precise_sleeps();
        Producer::connect(
            self.client.address,
            &self.client.topic,
            self.client.producer_config(),
        )
        .map_err(|error| connect_error(self.client.address, &self.client.topic, &error))
    }

    fn send_on_schedule(
        &self,
        control: &RunControl,
        producer: &Producer,
        start: Instant,
    ) -> Result<PacedCounters, ScenarioError> {
        let mut value = record_value(self.client.record_size_bytes);
        let interval_ns = 1e9 / self.records_per_s.max(1e-9);
        let deadline = control.deadline();
        let mut counters = PacedCounters::default();
        loop {
            let intended_ns = (counters.sent as f64 * interval_ns) as u64;
            let intended = start + Duration::from_nanos(intended_ns);
            if deadline.is_some_and(|deadline| intended >= deadline) || control.was_stopped() {
                return Ok(counters);
            }
            let now = Instant::now();
            if intended > now {
                // Nothing due yet: sleep until the next record is due, but at least a tick.
                std::thread::sleep((intended - now).max(PACING_TICK));
                continue;
            }
            counters.behind_max = counters.behind_max.max(now - intended);
            if let Some(slot) = value.get_mut(..SEND_TIME_BYTES) {
                slot.copy_from_slice(&intended_ns.to_le_bytes());
            }
            producer
                .send(&ProducerRecord::new(&value))
                .map_err(failed("send a record"))?;
            counters.sent += 1;
        }
    }
}

/// The intended send time carried by `value`, as a duration since the run's start.
pub fn intended_send_time(value: &[u8]) -> Option<Duration> {
    let bytes: [u8; SEND_TIME_BYTES] = value.get(..SEND_TIME_BYTES)?.try_into().ok()?;
    Some(Duration::from_nanos(u64::from_le_bytes(bytes)))
}

fn connect_error(
    address: SocketAddr,
    topic: &str,
    error: &ringlog_net::client::ClientError,
) -> ScenarioError {
    ScenarioError::Setup(format!(
        "producer cannot connect to {address} topic {topic}: {error}"
    ))
}

/// Asks the kernel for sleeps that end on time (timer slack of 1 ns instead of 50 us), so that
/// the schedule is kept at microsecond resolution. Best effort: without it sleeps are longer,
/// which shows up (honestly) as latency.
pub fn precise_sleeps() {
    // SAFETY: PR_SET_TIMERSLACK takes one integer argument and affects only this thread.
    unsafe {
        libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong, 0, 0, 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_send_time_round_trips_through_a_value() {
        let mut value = vec![0u8; 16];
        value[..8].copy_from_slice(&1_234_567u64.to_le_bytes());
        assert_eq!(
            intended_send_time(&value),
            Some(Duration::from_nanos(1_234_567))
        );
        assert_eq!(intended_send_time(&[1, 2, 3]), None);
    }
}
