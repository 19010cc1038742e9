//! A producer load thread that sends prebuilt record batches as pipelined Produce requests
//! over one connection (the real protocol, without the client's batching layer).
//!
//! Each request carries one batch for one partition (the thread's partitions in turn); up to
//! `window` requests are in flight; latency is from writing a request to reading its answer.
//! Nothing is allocated per record: the batch is built once and sent again and again.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use ringlog_net::client::{Client, ClientError, ConnectionConfig, FrameReader, FrameWriter};
use ringlog_net::error_code::ErrorCode;
use ringlog_net::message::produce::{self, Acks};
use ringlog_net::message::{ResponseStatus as _, Status};

use super::batches::PrebuiltBatch;
use super::control::RunControl;
use super::recorder::LoadRecorder;
use super::server::pin_load_thread;
use super::ScenarioError;

/// Bytes one producer keeps in flight at most (bounds the window for large batches).
pub const WINDOW_BYTES: u64 = 8 << 20;
/// Most requests one producer keeps in flight (below the server's default of 64 per connection).
pub const WINDOW_REQUESTS_MAX: usize = 64;
/// Fewest requests in flight, so that the server always has the next batch at hand.
pub const WINDOW_REQUESTS_MIN: usize = 2;
/// How long the server may take to acknowledge (and the client waits for an answer).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Pause before resending a batch the server refused for now (Throttled).
const RETRY_BACKOFF: Duration = Duration::from_millis(1);

/// What one pipelined producer thread sends.
#[derive(Clone, Debug)]
pub struct PipelinedProducer {
    /// Server address.
    pub address: SocketAddr,
    /// Topic to produce to.
    pub topic: String,
    /// Partitions this thread sends to, in turn (at least one).
    pub partitions: Vec<u32>,
    /// Acknowledgement asked for.
    pub acks: Acks,
    /// The batch sent in every request.
    pub batch: PrebuiltBatch,
    /// Core to pin the thread to.
    pub cpu: Option<usize>,
    /// Expected run length (sizes the throughput timeline).
    pub expected: Option<Duration>,
}

/// What a pipelined producer did besides its measurements.
#[derive(Clone, Copy, Debug, Default)]
pub struct ProducerCounters {
    /// Requests the server refused for now (Throttled) and that were sent again.
    pub retries: u64,
}

/// A request in flight.
#[derive(Clone, Copy, Debug)]
struct Pending {
    correlation_id: u32,
    sent_at: Instant,
    partition: u32,
}

impl PipelinedProducer {
    /// Requests in flight for this batch size.
    pub fn window(&self) -> usize {
        let by_bytes = WINDOW_BYTES / self.batch.len_bytes().max(1);
        usize::try_from(by_bytes)
            .unwrap_or(WINDOW_REQUESTS_MAX)
            .clamp(WINDOW_REQUESTS_MIN, WINDOW_REQUESTS_MAX)
    }

    /// Connects, waits for the start, sends until `control` stops the run, then collects the
    /// answers still in flight.
    pub fn run(
        &self,
        control: &RunControl,
    ) -> Result<(LoadRecorder, ProducerCounters), ScenarioError> {
        let ((mut writer, mut reader), start) = control.start_after(self.connect())?;
        let mut recorder = LoadRecorder::new(start, self.expected);
        let outcome = self.send_loop(control, &mut writer, &mut reader, &mut recorder);
        if outcome.is_err() {
            control.abort();
        }
        outcome.map(|counters| (recorder, counters))
    }

    fn connect(&self) -> Result<(FrameWriter, FrameReader), ScenarioError> {
        pin_load_thread(self.cpu)?;
        if self.partitions.is_empty() {
            return Err(ScenarioError::Failed(
                "a producer thread has no partition".into(),
            ));
        }
        connect_split(self.address, &self.topic, &self.partitions)
    }

    fn send_loop(
        &self,
        control: &RunControl,
        writer: &mut FrameWriter,
        reader: &mut FrameReader,
        recorder: &mut LoadRecorder,
    ) -> Result<ProducerCounters, ScenarioError> {
        let window = self.window();
        let batch_bytes = self.batch.len_bytes();
        let mut in_flight: Vec<Pending> = Vec::with_capacity(window);
        let mut resend: Vec<u32> = Vec::with_capacity(window);
        let mut counters = ProducerCounters::default();
        let mut turn = 0usize;
        loop {
            while in_flight.len() < window {
                let partition = match resend.pop() {
                    Some(partition) => partition,
                    None if control.reserve_bytes(batch_bytes, Instant::now()) => {
                        turn = turn.wrapping_add(1);
                        self.partitions[turn % self.partitions.len()]
                    }
                    None => break,
                };
                let correlation_id = self.send(writer, partition)?;
                let sent_at = Instant::now();
                if self.acks == Acks::None {
                    // No answer will come: the batch is done once the socket took it.
                    recorder.complete(sent_at, self.batch.records(), batch_bytes);
                    control.complete_bytes(batch_bytes);
                    continue;
                }
                in_flight.push(Pending {
                    correlation_id,
                    sent_at,
                    partition,
                });
            }
            if in_flight.is_empty() {
                return Ok(counters);
            }
            let frame = reader
                .read_frame()
                .map_err(failed("read a produce answer"))?;
            let received_at = Instant::now();
            let id = frame.header().correlation_id;
            let Some(index) = in_flight.iter().position(|p| p.correlation_id == id) else {
                return Err(ScenarioError::Failed(format!(
                    "answer with unknown correlation id {id}"
                )));
            };
            let pending = in_flight.swap_remove(index);
            match answer_status(&frame)? {
                ErrorCode::None => {
                    recorder.complete(received_at, self.batch.records(), batch_bytes);
                    recorder.latency(received_at.saturating_duration_since(pending.sent_at));
                    control.complete_bytes(batch_bytes);
                }
                code if code.is_retriable() => {
                    counters.retries += 1;
                    resend.push(pending.partition);
                    std::thread::sleep(RETRY_BACKOFF);
                }
                code => {
                    return Err(ScenarioError::Failed(format!(
                        "produce to {} partition {} failed: {code}",
                        self.topic, pending.partition
                    )))
                }
            }
        }
    }

    fn send(&self, writer: &mut FrameWriter, partition: u32) -> Result<u32, ScenarioError> {
        let entries = [produce::PartitionBatches {
            partition,
            batches: self.batch.bytes(),
        }];
        let request = produce::Request {
            acks: self.acks,
            timeout_ms: REQUEST_TIMEOUT.as_millis() as u32,
            topic: &self.topic,
            partitions: &entries,
        };
        writer
            .write_request(&request)
            .map_err(failed("send a produce request"))
    }
}

/// Connects a producer to the shard that owns `partitions` (when one shard owns them all) and
/// splits the connection into its writing and reading halves, reads timing out after
/// [`REQUEST_TIMEOUT`].
pub fn connect_split(
    address: SocketAddr,
    topic: &str,
    partitions: &[u32],
) -> Result<(FrameWriter, FrameReader), ScenarioError> {
    let config = ConnectionConfig {
        request_timeout_ms: REQUEST_TIMEOUT.as_millis() as u64,
        ..ConnectionConfig::default()
    };
    let connection = Client::connect_to_partitions(address, topic, partitions, config)
        .map(Client::into_connection)
        .map_err(|error| ScenarioError::Setup(format!("cannot connect to {address}: {error}")))?;
    let (writer, mut reader) = connection.split().map_err(failed("split connection"))?;
    reader
        .set_read_timeout(Some(REQUEST_TIMEOUT))
        .map_err(failed("set read timeout"))?;
    Ok((writer, reader))
}

/// The first error in a produce answer (top level, then the entries), or `ErrorCode::None`.
pub fn answer_status(
    frame: &ringlog_net::client::ResponseFrame,
) -> Result<ErrorCode, ScenarioError> {
    let view = frame
        .view::<produce::ResponseView>()
        .map_err(failed("read a produce answer"))?;
    let status = view.status();
    if !status.is_ok() {
        return Ok(status.code);
    }
    let code = view
        .partitions()
        .unwrap_or_default()
        .iter()
        .map(|entry| Status::from_wire(entry.error_code(), entry.error_message()).code)
        .find(|code| !code.is_ok())
        .unwrap_or(ErrorCode::None);
    Ok(code)
}

/// Maps a client error to a run failure saying what was being done.
pub fn failed(context: &'static str) -> impl Fn(ClientError) -> ScenarioError {
    move |error| ScenarioError::Failed(format!("{context}: {error}"))
}
