//! A paced producer without the client's batching layer: records are due on the same fixed
//! timeline as [`super::paced_producer`] (each value starts with its intended send time), and
//! the records due are built into a RecordBatch (one reused [`BatchBuilder`], no allocation per
//! record) and sent as a pipelined Produce request, one batch per request, partitions in turn.
//!
//! A batch is sent once it is full (`--batch-bytes`) or its oldest record has waited
//! `--linger-ms` (0: at the next wake-up). Up to [`WINDOW_REQUESTS`] requests are in flight; a
//! second thread reads the answers. While the window is full the open batch keeps growing, so
//! sending only waits for an answer when the window is full and the batch too.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use ringlog_engine::batch::{BatchBuilder, BatchError};
use ringlog_net::client::{ClientError, FrameReader, FrameWriter};
use ringlog_net::error_code::ErrorCode;
use ringlog_net::message::produce::{self, Acks};

use super::batches::{record_value, wall_clock_ms};
use super::control::RunControl;
use super::paced_producer::{precise_sleeps, PacedCounters, PACING_TICK, SEND_TIME_BYTES};
use super::pipelined_producer::{answer_status, connect_split, failed, REQUEST_TIMEOUT};
use super::server::pin_load_thread;
use super::ScenarioError;

/// Produce requests one paced producer keeps in flight at most.
pub const WINDOW_REQUESTS: usize = 32;

/// One paced producer thread that sends its own batches.
#[derive(Clone, Debug)]
pub struct PacedRequests {
    /// Server address.
    pub address: SocketAddr,
    /// Topic to produce to.
    pub topic: String,
    /// Partitions to send to, one batch each in turn.
    pub partitions: Vec<u32>,
    /// Acknowledgement asked for.
    pub acks: Acks,
    /// Bytes per record value (at least the send time).
    pub record_size_bytes: u32,
    /// Largest batch.
    pub batch_bytes: u32,
    /// Longest a record waits for more records before its batch is sent.
    pub linger: Duration,
    /// Records per second this thread sends.
    pub records_per_s: f64,
    /// Core to pin the thread to.
    pub cpu: Option<usize>,
}

/// The batch being filled and when its oldest record was due.
struct OpenBatch {
    builder: BatchBuilder,
    oldest_due: Option<Instant>,
}

impl PacedRequests {
    /// Connects, waits for the start, sends on schedule until the run's deadline, then waits
    /// for every answer.
    pub fn run(&self, control: &RunControl) -> Result<PacedCounters, ScenarioError> {
        let (mut writer, reader) = match self.connect() {
            Ok(halves) => halves,
            Err(error) => {
                control.abort();
                control.wait_for_start();
                return Err(error);
            }
        };
        let in_flight = AtomicUsize::new(0);
        let sender_done = AtomicBool::new(false);
        let (sent, answered) = std::thread::scope(|scope| {
            let answers =
                scope.spawn(|| read_answers(reader, &in_flight, &sender_done, self.acks, control));
            let start = control.wait_for_start();
            let sent = self.send_on_schedule(control, &mut writer, &in_flight, start);
            if sent.is_err() {
                control.abort();
            }
            sender_done.store(true, Ordering::Release);
            let answered = answers.join().unwrap_or_else(|_| {
                Err(ScenarioError::Failed("the answer reader panicked".into()))
            });
            (sent, answered)
        });
        let counters = sent?;
        answered?;
        Ok(counters)
    }

    fn connect(&self) -> Result<(FrameWriter, FrameReader), ScenarioError> {
        pin_load_thread(self.cpu)?;
        precise_sleeps();
        connect_split(self.address, &self.topic, &self.partitions)
    }

    /// The sending loop.
    fn send_on_schedule(
        &self,
        control: &RunControl,
        writer: &mut FrameWriter,
        in_flight: &AtomicUsize,
        start: Instant,
    ) -> Result<PacedCounters, ScenarioError> {
        let mut value = record_value(self.record_size_bytes);
        let interval_ns = 1e9 / self.records_per_s.max(1e-9);
        let deadline = control.deadline();
        let mut open = OpenBatch {
            builder: new_builder(self.batch_bytes),
            oldest_due: None,
        };
        let mut counters = PacedCounters::default();
        let mut turn = 0usize;
        loop {
            let now = Instant::now();
            let stopping = control.was_stopped();
            // Every record due by now goes into the open batch (full batches are sent at once).
            loop {
                let intended_ns = (counters.sent as f64 * interval_ns) as u64;
                let intended = start + Duration::from_nanos(intended_ns);
                if intended > now
                    || deadline.is_some_and(|deadline| intended >= deadline)
                    || stopping
                {
                    break;
                }
                counters.behind_max = counters.behind_max.max(now - intended);
                if let Some(slot) = value.get_mut(..SEND_TIME_BYTES) {
                    slot.copy_from_slice(&intended_ns.to_le_bytes());
                }
                if !push(&mut open, &value, intended)? {
                    self.send_open(&mut open, writer, in_flight, &mut turn)?;
                    if !push(&mut open, &value, intended)? {
                        return Err(ScenarioError::Setup(format!(
                            "a {}-byte record does not fit a {}-byte batch",
                            self.record_size_bytes, self.batch_bytes
                        )));
                    }
                }
                counters.sent += 1;
            }
            let finished = stopping
                || deadline.is_some_and(|deadline| {
                    let next_ns = (counters.sent as f64 * interval_ns) as u64;
                    start + Duration::from_nanos(next_ns) >= deadline
                });
            let lingered = open
                .oldest_due
                .is_some_and(|due| now.saturating_duration_since(due) >= self.linger);
            // With the window full, a lingered batch keeps taking due records (as Kafka's
            // producer does) instead of stalling the schedule; only a full batch waits.
            let window_free = in_flight.load(Ordering::Acquire) < WINDOW_REQUESTS;
            if open.oldest_due.is_some() && (finished || (lingered && window_free)) {
                self.send_open(&mut open, writer, in_flight, &mut turn)?;
            }
            if finished {
                return Ok(counters);
            }
            let next_ns = (counters.sent as f64 * interval_ns) as u64;
            let next_due = start + Duration::from_nanos(next_ns);
            let wake = match open.oldest_due {
                Some(oldest) => next_due.min(oldest + self.linger),
                None => next_due,
            };
            std::thread::sleep(
                wake.saturating_duration_since(Instant::now())
                    .max(PACING_TICK),
            );
        }
    }

    /// Finishes the open batch and sends it (waiting for a window slot if needed).
    fn send_open(
        &self,
        open: &mut OpenBatch,
        writer: &mut FrameWriter,
        in_flight: &AtomicUsize,
        turn: &mut usize,
    ) -> Result<(), ScenarioError> {
        while in_flight.load(Ordering::Acquire) >= WINDOW_REQUESTS {
            std::thread::sleep(PACING_TICK);
        }
        *turn = turn.wrapping_add(1);
        let partition = self.partitions[*turn % self.partitions.len().max(1)];
        let batch = open.builder.finish();
        let entries = [produce::PartitionBatches {
            partition,
            batches: batch,
        }];
        let request = produce::Request {
            acks: self.acks,
            timeout_ms: REQUEST_TIMEOUT.as_millis() as u32,
            topic: &self.topic,
            partitions: &entries,
        };
        if self.acks != Acks::None {
            in_flight.fetch_add(1, Ordering::AcqRel);
        }
        writer
            .write_request(&request)
            .map_err(failed("send a produce request"))?;
        open.builder.reset(wall_clock_ms());
        open.oldest_due = None;
        Ok(())
    }
}

fn new_builder(batch_bytes: u32) -> BatchBuilder {
    let mut builder = BatchBuilder::new(Vec::with_capacity(batch_bytes as usize), wall_clock_ms());
    builder.set_batch_bytes_max(batch_bytes as usize);
    builder
}

/// Adds one record to the open batch; false when it is full.
fn push(open: &mut OpenBatch, value: &[u8], due: Instant) -> Result<bool, ScenarioError> {
    match open.builder.push(wall_clock_ms(), None, Some(value), &[]) {
        Ok(()) => {
            open.oldest_due.get_or_insert(due);
            Ok(true)
        }
        Err(BatchError::TooLarge { .. }) => Ok(false),
        Err(error) => Err(ScenarioError::Failed(format!("build a batch: {error}"))),
    }
}

/// How long the answer reader blocks before looking whether the sender is done.
const READER_POLL: Duration = Duration::from_millis(10);

/// Reads produce answers until the sender is done and nothing is in flight; fails the run on
/// an error answer.
fn read_answers(
    mut reader: FrameReader,
    in_flight: &AtomicUsize,
    sender_done: &AtomicBool,
    acks: Acks,
    control: &RunControl,
) -> Result<(), ScenarioError> {
    if acks == Acks::None {
        return Ok(());
    }
    reader
        .set_read_timeout(Some(READER_POLL))
        .map_err(failed("set read timeout"))?;
    loop {
        if in_flight.load(Ordering::Acquire) == 0 && sender_done.load(Ordering::Acquire) {
            return Ok(());
        }
        let frame = match reader.read_frame() {
            Ok(frame) => frame,
            // Nothing arrived for a while: look at the sender again.
            Err(ClientError::Timeout { .. }) => continue,
            Err(error) => {
                control.abort();
                return Err(ScenarioError::Failed(format!(
                    "read a produce answer: {error}"
                )));
            }
        };
        in_flight.fetch_sub(1, Ordering::AcqRel);
        let code = answer_status(&frame)?;
        if code != ErrorCode::None {
            control.abort();
            return Err(ScenarioError::Failed(format!("produce failed: {code}")));
        }
    }
}
