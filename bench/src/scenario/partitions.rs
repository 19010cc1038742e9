//! The `partitions` scenario: what many partitions cost in memory, idle and after one small
//! write each (issue 7: 10,000 partitions on one server, idle, at most 64 KiB resident memory
//! per partition).
//!
//! The embedded server runs in this process, so the process's resident memory (VmRSS) is the
//! server's plus the bench's small, constant share. It is read once the server is up, once
//! the topic with `--partitions` partitions (default 10,000) exists, and after one record of
//! `--record-size` bytes (default 100) was produced to every partition and acknowledged. The
//! produce round is the measured load: each partition's first write creates and preallocates
//! its segment file and syncs its directory, so its time and acknowledgement latency show
//! what a produce spread over many fresh partitions costs.

use std::time::{Duration, Instant};

use ringlog_net::client::{Client, ConnectionConfig, FrameReader, FrameWriter};
use ringlog_net::error_code::ErrorCode;
use ringlog_net::message::produce;
use serde::{Deserialize, Serialize};

use super::batches::PrebuiltBatch;
use super::pipelined_producer::{answer_status, failed};
use super::producers::wire_acks;
use super::recorder::LoadRecorder;
use super::server::BenchServer;
use super::{Scenario, ScenarioContext, ScenarioError, ScenarioResult};
use crate::options::RECORD_BATCH_OVERHEAD_BYTES_MAX;
use crate::workload::Workload;

/// The bound on resident memory per idle partition (KiB).
pub const TARGET_KIB_PER_PARTITION: f64 = 64.0;
/// Partitions per Produce request (each gets its own one-record batch).
const PARTITIONS_PER_REQUEST: usize = 100;
/// Produce requests in flight on the connection.
const REQUESTS_IN_FLIGHT: usize = 8;
/// How long the server may take to answer one request (its partitions' first writes).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// Resident memory of the process at the scenario's three points, and per partition.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct MemoryFigures {
    /// Partitions of the topic.
    pub partitions: u32,
    /// Bytes resident with the server up and no topic.
    pub server_bytes: u64,
    /// Bytes resident once the topic exists (partitions never written).
    pub idle_bytes: u64,
    /// Bytes resident after one record to every partition was acknowledged.
    pub written_bytes: u64,
    /// Seconds the topic took to create.
    pub create_seconds: f64,
}

impl MemoryFigures {
    /// KiB per partition over the server alone, partitions never written.
    pub fn idle_kib_per_partition(&self) -> f64 {
        per_partition_kib(self.idle_bytes, self.server_bytes, self.partitions)
    }

    /// KiB per partition over the server alone, every partition written once.
    pub fn written_kib_per_partition(&self) -> f64 {
        per_partition_kib(self.written_bytes, self.server_bytes, self.partitions)
    }
}

fn per_partition_kib(bytes: u64, base_bytes: u64, partitions: u32) -> f64 {
    bytes.saturating_sub(base_bytes) as f64 / 1024.0 / f64::from(partitions.max(1))
}

/// The `partitions` scenario.
#[derive(Debug, Default)]
pub struct Partitions {
    server: Option<BenchServer>,
    topic: String,
    memory: MemoryFigures,
}

impl Scenario for Partitions {
    fn prepare(&mut self, context: &ScenarioContext<'_>) -> Result<(), ScenarioError> {
        let config = context.config;
        let server = BenchServer::start(config, context.data_dir)?;
        if server.data_dir().is_none() {
            return Err(ScenarioError::Setup(
                "partitions reads the memory of the server it embeds; it cannot load --server"
                    .into(),
            ));
        }
        let mut server = server;
        self.memory.partitions = config.partitions;
        self.memory.server_bytes = resident_bytes()?;
        let started = Instant::now();
        self.topic = server.create_topic(Workload::Partitions, config.partitions)?;
        self.memory.create_seconds = started.elapsed().as_secs_f64();
        self.memory.idle_bytes = resident_bytes()?;
        self.server = Some(server);
        Ok(())
    }

    fn run(&mut self, context: &ScenarioContext<'_>) -> Result<ScenarioResult, ScenarioError> {
        let config = context.config;
        let server = self
            .server
            .as_ref()
            .ok_or_else(|| ScenarioError::Failed("partitions ran before prepare".into()))?;
        let batch_bytes = config.record_size_bytes + RECORD_BATCH_OVERHEAD_BYTES_MAX as u32;
        let batch = PrebuiltBatch::build(config.record_size_bytes, batch_bytes)?;
        let connection_config = ConnectionConfig {
            request_timeout_ms: REQUEST_TIMEOUT.as_millis() as u64,
            ..ConnectionConfig::default()
        };
        let connection = Client::connect_with(server.address(), connection_config)
            .map_err(|error| server.connect_error(&error))?
            .into_connection();
        let (mut writer, mut reader) = connection.split().map_err(failed("split connection"))?;
        reader
            .set_read_timeout(Some(REQUEST_TIMEOUT))
            .map_err(failed("set read timeout"))?;
        let partitions: Vec<u32> = (0..config.partitions).collect();
        let start = Instant::now();
        let mut recorder = LoadRecorder::new(start, None);
        let round = ProduceRound {
            topic: &self.topic,
            acks: wire_acks(config.acks),
            batch: &batch,
        };
        round.run(
            &partitions,
            &mut writer,
            &mut reader,
            &mut recorder,
            context,
        )?;
        drop((writer, reader));
        self.memory.written_bytes = resident_bytes()?;
        let seconds = recorder.active_seconds();
        let memory = &self.memory;
        let notes = vec![
            server.placement_note(),
            format!(
                "resident memory: {} MiB with the server up, {} MiB with {} idle partitions \
                 ({:.1} KiB each), {} MiB after one {}-byte record to each ({:.1} KiB each; \
                 target <= {TARGET_KIB_PER_PARTITION} KiB)",
                memory.server_bytes >> 20,
                memory.idle_bytes >> 20,
                memory.partitions,
                memory.idle_kib_per_partition(),
                memory.written_bytes >> 20,
                config.record_size_bytes,
                memory.written_kib_per_partition(),
            ),
            format!(
                "creating the topic took {:.2} s; the produce round ({} partitions per request, \
                 {} requests in flight) is every partition's first write",
                memory.create_seconds, PARTITIONS_PER_REQUEST, REQUESTS_IN_FLIGHT
            ),
            "resident memory is the whole process (embedded server and bench)".into(),
        ];
        let mut result = recorder.into_result(seconds, notes);
        result.memory = Some(self.memory.clone());
        Ok(result)
    }
}

/// One record to every partition, [`PARTITIONS_PER_REQUEST`] partitions per request.
struct ProduceRound<'a> {
    topic: &'a str,
    acks: produce::Acks,
    batch: &'a PrebuiltBatch,
}

impl ProduceRound<'_> {
    fn run(
        &self,
        partitions: &[u32],
        writer: &mut FrameWriter,
        reader: &mut FrameReader,
        recorder: &mut LoadRecorder,
        context: &ScenarioContext<'_>,
    ) -> Result<(), ScenarioError> {
        let mut requests = partitions.chunks(PARTITIONS_PER_REQUEST);
        let mut in_flight: Vec<(u32, Instant, usize)> = Vec::with_capacity(REQUESTS_IN_FLIGHT);
        loop {
            while in_flight.len() < REQUESTS_IN_FLIGHT {
                let Some(chunk) = requests.next() else {
                    break;
                };
                let correlation_id = self.send(writer, chunk)?;
                in_flight.push((correlation_id, Instant::now(), chunk.len()));
            }
            if in_flight.is_empty() {
                return Ok(());
            }
            let frame = reader
                .read_frame()
                .map_err(failed("read a produce answer"))?;
            let received_at = Instant::now();
            let id = frame.header().correlation_id;
            let index = in_flight
                .iter()
                .position(|(correlation_id, _, _)| *correlation_id == id)
                .ok_or_else(|| {
                    ScenarioError::Failed(format!("answer with unknown correlation id {id}"))
                })?;
            let (_, sent_at, count) = in_flight.swap_remove(index);
            match answer_status(&frame)? {
                ErrorCode::None => {
                    let bytes = self.batch.len_bytes() * count as u64;
                    recorder.complete(received_at, self.batch.records() * count as u64, bytes);
                    recorder.latency(received_at.saturating_duration_since(sent_at));
                    context.progress.add_bytes(bytes);
                }
                code => {
                    return Err(ScenarioError::Failed(format!(
                        "produce to {count} partitions of {} failed: {code}",
                        self.topic
                    )))
                }
            }
        }
    }

    fn send(&self, writer: &mut FrameWriter, partitions: &[u32]) -> Result<u32, ScenarioError> {
        let entries: Vec<produce::PartitionBatches<'_>> = partitions
            .iter()
            .map(|&partition| produce::PartitionBatches {
                partition,
                batches: self.batch.bytes(),
            })
            .collect();
        let request = produce::Request {
            acks: self.acks,
            timeout_ms: REQUEST_TIMEOUT.as_millis() as u32,
            topic: self.topic,
            partitions: &entries,
        };
        writer
            .write_request(&request)
            .map_err(failed("send a produce request"))
    }
}

/// Resident memory of this process (VmRSS in /proc/self/status), in bytes.
pub fn resident_bytes() -> Result<u64, ScenarioError> {
    let status =
        std::fs::read_to_string("/proc/self/status").map_err(|source| ScenarioError::Io {
            context: "read /proc/self/status".into(),
            source,
        })?;
    parse_vm_rss_bytes(&status).ok_or_else(|| {
        ScenarioError::Unavailable("partitions needs VmRSS in /proc/self/status".into())
    })
}

/// The VmRSS line of a /proc status file, in bytes.
fn parse_vm_rss_bytes(status: &str) -> Option<u64> {
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    let mut fields = line.split_whitespace().skip(1);
    let value: u64 = fields.next()?.parse().ok()?;
    match fields.next()? {
        "kB" => Some(value * 1024),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_vm_rss_and_divides_per_partition() {
        let status = "Name:\tringlog-bench\nVmPeak:\t  999 kB\nVmRSS:\t   20480 kB\nThreads:\t4\n";
        assert_eq!(parse_vm_rss_bytes(status), Some(20 << 20));
        assert_eq!(parse_vm_rss_bytes("VmRSS:\t12 MB\n"), None);
        assert_eq!(parse_vm_rss_bytes("Name: x\n"), None);
        assert!(resident_bytes().unwrap() > 0);
        let memory = MemoryFigures {
            partitions: 10_000,
            server_bytes: 100 << 20,
            idle_bytes: (100 << 20) + 10_000 * 5 * 1024,
            written_bytes: (100 << 20) + 10_000 * 20 * 1024,
            create_seconds: 1.0,
        };
        assert_eq!(memory.idle_kib_per_partition(), 5.0);
        assert_eq!(memory.written_kib_per_partition(), 20.0);
    }
}
