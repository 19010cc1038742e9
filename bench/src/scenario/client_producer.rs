//! A producer load thread that uses the real client [`Producer`]: one `send` per record, the
//! producer batches by size (`--batch-bytes`) and time (`--linger-ms`), partitions (sticky) and
//! keeps requests in flight, as an application would use it.
//!
//! Latency is sampled once per batch's worth of records: the delivery handle of every N-th
//! record (N = records per full batch) is kept with its send time and checked after each send;
//! its latency is from `send` to the moment its acknowledgement is seen. The value buffer is
//! built once and reused: nothing is allocated per record.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use ringlog_net::client::{DeliveryHandle, Producer, ProducerConfig, ProducerRecord};
use ringlog_net::message::produce::Acks;

use super::batches::{record_value, PrebuiltBatch};
use super::control::RunControl;
use super::pipelined_producer::failed;
use super::recorder::LoadRecorder;
use super::server::pin_load_thread;
use super::ScenarioError;

/// Most sampled deliveries awaited at once (bounds the sample queue; the producer's own
/// buffer limit bounds the records in flight long before this).
const SAMPLES_MAX: usize = 8192;
/// Records sent between two looks at the clock and the stop condition.
const CHECK_EVERY_RECORDS: u64 = 64;

/// What one client producer thread sends.
#[derive(Clone, Debug)]
pub struct ClientProducer {
    /// Server address.
    pub address: SocketAddr,
    /// Topic to produce to (every partition, sticky).
    pub topic: String,
    /// Acknowledgement asked for.
    pub acks: Acks,
    /// Bytes per record value.
    pub record_size_bytes: u32,
    /// The producer's batch size limit.
    pub batch_bytes: u32,
    /// The producer's linger.
    pub linger_ms: u64,
    /// Core to pin the thread (and so the producer's I/O threads) to.
    pub cpu: Option<usize>,
    /// Expected run length (sizes the throughput timeline).
    pub expected: Option<Duration>,
}

/// A sampled record: when it was sent, how many records (and bytes) it stands for.
struct Sample {
    sent_at: Instant,
    handle: DeliveryHandle,
    records: u64,
}

impl ClientProducer {
    /// The producer configuration: the client's defaults with the bench's batch, linger and acks.
    pub fn producer_config(&self) -> ProducerConfig {
        let batch_bytes = self.batch_bytes as usize;
        let defaults = ProducerConfig::default();
        ProducerConfig {
            acks: self.acks,
            batch_bytes_max: batch_bytes,
            linger_ms: self.linger_ms,
            request_bytes_max: defaults.request_bytes_max.max(batch_bytes),
            buffer_bytes_max: defaults.buffer_bytes_max.max(4 * batch_bytes),
            ..defaults
        }
    }

    /// Connects, waits for the start, sends until `control` stops the run, flushes and
    /// collects the sampled deliveries.
    pub fn run(&self, control: &RunControl) -> Result<LoadRecorder, ScenarioError> {
        let ((producer, template), start) = control.start_after(self.connect())?;
        let mut recorder = LoadRecorder::new(start, self.expected);
        let outcome = self.send_loop(control, &producer, &template, &mut recorder);
        let closed = producer.close().map_err(failed("flush the producer"));
        if outcome.is_err() || closed.is_err() {
            control.abort();
        }
        outcome?;
        closed?;
        Ok(recorder)
    }

    fn connect(&self) -> Result<(Producer, PrebuiltBatch), ScenarioError> {
        pin_load_thread(self.cpu)?;
        // A full batch of these records, to know records per batch and bytes per record.
        let template = PrebuiltBatch::build(self.record_size_bytes, self.batch_bytes)?;
        let producer = Producer::connect(self.address, &self.topic, self.producer_config())
            .map_err(|error| {
                ScenarioError::Setup(format!(
                    "producer cannot connect to {} topic {}: {error}",
                    self.address, self.topic
                ))
            })?;
        Ok((producer, template))
    }

    fn send_loop(
        &self,
        control: &RunControl,
        producer: &Producer,
        template: &PrebuiltBatch,
        recorder: &mut LoadRecorder,
    ) -> Result<(), ScenarioError> {
        let value = record_value(self.record_size_bytes);
        let record = ProducerRecord::new(&value);
        let records_per_sample = template.records().max(1);
        // Batch bytes per record, header included: what the consumers and the disk see.
        let bytes_per_record = template.len_bytes() as f64 / template.records().max(1) as f64;
        let check_bytes = (bytes_per_record * CHECK_EVERY_RECORDS as f64) as u64;
        let mut samples: VecDeque<Sample> = VecDeque::with_capacity(SAMPLES_MAX);
        let mut unsampled: u64 = 0;
        let mut sent: u64 = 0;
        loop {
            if sent % CHECK_EVERY_RECORDS == 0
                && !control.reserve_bytes(check_bytes, Instant::now())
            {
                break;
            }
            let handle = producer.send(&record).map_err(failed("send a record"))?;
            sent += 1;
            unsampled += 1;
            if unsampled >= records_per_sample {
                if samples.len() == SAMPLES_MAX {
                    settle_front(&mut samples, recorder, control, bytes_per_record, true)?;
                }
                samples.push_back(Sample {
                    sent_at: Instant::now(),
                    handle,
                    records: unsampled,
                });
                unsampled = 0;
            }
            while settle_front(&mut samples, recorder, control, bytes_per_record, false)? {}
        }
        producer.flush().map_err(failed("flush the producer"))?;
        while settle_front(&mut samples, recorder, control, bytes_per_record, true)? {}
        if unsampled > 0 {
            let bytes = (unsampled as f64 * bytes_per_record) as u64;
            recorder.complete(Instant::now(), unsampled, bytes);
            control.complete_bytes(bytes);
        }
        Ok(())
    }
}

/// Records the oldest sample if its delivery is known (or, with `block`, once it is).
/// Returns whether one was settled.
fn settle_front(
    samples: &mut VecDeque<Sample>,
    recorder: &mut LoadRecorder,
    control: &RunControl,
    bytes_per_record: f64,
    block: bool,
) -> Result<bool, ScenarioError> {
    let Some(front) = samples.front() else {
        return Ok(false);
    };
    let result = if block {
        Some(front.handle.wait())
    } else {
        front.handle.try_result()
    };
    let Some(result) = result else {
        return Ok(false);
    };
    result.map_err(failed("deliver a record"))?;
    let now = Instant::now();
    let bytes = (front.records as f64 * bytes_per_record) as u64;
    recorder.complete(now, front.records, bytes);
    recorder.latency(now.saturating_duration_since(front.sent_at));
    control.complete_bytes(bytes);
    samples.pop_front();
    Ok(true)
}
