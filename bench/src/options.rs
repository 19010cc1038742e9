//! Command line: `ringlog-bench <scenario> [options]`, and the checks that turn the options
//! into a [`RunConfig`] before any load starts.
//!
//! Every option is optional on the command line and resolved here, so that the checks can tell
//! an option the user gave from a default (`--groups` with `produce` is a mistake; the default
//! group count is not). Each failed check is one line that names the option and the fix.

use std::net::ToSocketAddrs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use serde::{Deserialize, Serialize};

use crate::reference::net::SendMode;
use crate::reference::{ReferencePlan, ReferenceWhen};
use crate::units::{format_bytes, GIB, MIB};
use crate::workload::Workload;
use ringlog_net::byte_size::parse_bytes;

/// Default record size (bytes).
pub const RECORD_SIZE_BYTES_DEFAULT: u64 = 1024;
/// Default producer batch size (bytes); also the write size of the fdatasync commit reference.
pub const BATCH_BYTES_DEFAULT: u64 = 64 * 1024;
/// Largest batch (and so record) the bench will build: bounds the memory of every buffer.
pub const BATCH_BYTES_MAX: u64 = 64 * MIB;
/// Room a batch needs beyond one record's value: the 61-byte RecordBatch v2 header plus the
/// record's own varint header fields, generously rounded up.
pub const RECORD_BATCH_OVERHEAD_BYTES_MAX: u64 = 128;
/// Default linger (ms): how long a producer waits to fill a batch before sending it anyway.
pub const LINGER_MS_DEFAULT: u64 = 1;
/// Default run length when neither `--duration-s` nor `--total-bytes` is given.
pub const DURATION_S_DEFAULT: f64 = 10.0;
/// Longest run accepted (a day): anything longer is a typo.
pub const DURATION_S_MAX: f64 = 86_400.0;
/// Default producer rate for `e2e`, which always runs producers at a fixed rate (MB/s).
pub const E2E_RATE_MB_PER_S_DEFAULT: f64 = 100.0;
/// Default number of consumer groups for `fanout`.
pub const FANOUT_GROUPS_DEFAULT: u32 = 10;
/// Default appender tasks of `append` (concurrent appends, so that durable ones share syncs).
pub const APPEND_APPENDERS_DEFAULT: u32 = 8;
/// Default producer linger of `e2e` (ms): send as soon as the previous request is answered.
pub const E2E_LINGER_MS_DEFAULT: u64 = 0;
/// Smallest record `e2e` sends: the value carries the intended send time (8 bytes).
pub const E2E_RECORD_SIZE_MIN: u64 = 8;
/// Default length of a hot `consume` run, which re-reads a topic that fits the server's cache.
pub const CONSUME_HOT_DURATION_S_DEFAULT: f64 = 5.0;
/// Default bytes a cold `consume` run writes, then reads once from disk.
pub const CONSUME_COLD_BYTES_DEFAULT: u64 = GIB;
/// Default bytes of record values `kafka` produces each way (then reads back each way).
pub const KAFKA_BYTES_DEFAULT: u64 = 256 * MIB;
/// Default way `kafka` produces natively: the client's batching `Producer`, which works per
/// record like librdkafka does.
pub const KAFKA_PRODUCE_WITH_DEFAULT: ProduceWith = ProduceWith::Producer;
/// Copies of its record bytes a `kafka` run writes: the native topic, the Kafka front door's
/// topic and kcat's input file.
pub const KAFKA_DATA_COPIES: u64 = 3;
/// Default partitions of `partitions` (the many-partitions target).
pub const PARTITIONS_SCENARIO_PARTITIONS_DEFAULT: u32 = 10_000;
/// Default record size of `partitions`: one small record per partition.
pub const PARTITIONS_SCENARIO_RECORD_SIZE_DEFAULT: u64 = 100;
/// Default simulated work per record for `share` (microseconds).
pub const SHARE_WORK_US_DEFAULT: u64 = 1_000;
/// Largest simulated work per record accepted (10 s).
pub const WORK_US_MAX: u64 = 10_000_000;
/// Most partitions one run may ask for.
pub const PARTITIONS_MAX: u32 = 1_000_000;
/// Most producers, consumers or groups one run may start (each is a connection or a task).
pub const CLIENTS_MAX: u32 = 100_000;
/// Default size of the disk reference file (bytes).
pub const DISK_BYTES_DEFAULT: u64 = GIB;
/// Default byte count of each net reference run (bytes).
pub const NET_BYTES_DEFAULT: u64 = 2 * GIB;
/// Free space kept beyond the data a run writes, for indexes, metadata and the file system.
pub const FREE_SPACE_SLACK_BYTES: u64 = 64 * MIB;

/// `ringlog-bench`: load ringlog like real clients do and compare it with this machine's limits.
#[derive(Debug, Parser)]
#[command(name = "ringlog-bench", version, about, long_about = None)]
pub struct Cli {
    /// What to measure.
    #[command(subcommand)]
    pub command: Command,
}

/// The scenarios, the hardware references and the summary of a results directory.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Engine only (no network): append batches straight into partition logs.
    Append(Options),
    /// Producers send batches to ringlog; throughput and acknowledgement latency.
    Produce(Options),
    /// Consumers read a topic that the run fills first (from memory, or --cold from disk).
    Consume(Options),
    /// Producers at a fixed rate while consumers follow; latency from send to receipt.
    E2e(Options),
    /// Several consumer groups (--groups) read one topic; total egress.
    Fanout(Options),
    /// Share-group consumers with simulated work per record (--work-us).
    Share(Options),
    /// The same records through the native protocol and the Kafka front door (kcat), side by
    /// side: produce, then consume, each way; needs kcat on PATH.
    Kafka(Options),
    /// Many partitions (--partitions, default 10000): server memory per partition idle and
    /// after one small record each, and the time of that produce round.
    Partitions(Options),
    /// Reference only: raw O_DIRECT sequential write/read and write+fdatasync commits.
    Disk(Options),
    /// Reference only: raw loopback TCP through io_uring (SEND and SEND_ZC).
    Net(Options),
    /// Print one table from the JSON reports in a directory.
    Summary(SummaryArgs),
}

/// What the parsed command line asks for.
#[derive(Debug)]
pub enum Invocation {
    /// Measure one workload with these (not yet checked) options.
    Run(Workload, Box<Options>),
    /// Summarise the JSON reports in a directory.
    Summary(SummaryArgs),
}

impl Command {
    /// Splits the command into the workload and its options, or the summary request.
    pub fn into_invocation(self) -> Invocation {
        let (workload, options) = match self {
            Command::Append(options) => (Workload::Append, options),
            Command::Produce(options) => (Workload::Produce, options),
            Command::Consume(options) => (Workload::Consume, options),
            Command::E2e(options) => (Workload::E2e, options),
            Command::Fanout(options) => (Workload::Fanout, options),
            Command::Share(options) => (Workload::Share, options),
            Command::Kafka(options) => (Workload::Kafka, options),
            Command::Partitions(options) => (Workload::Partitions, options),
            Command::Disk(options) => (Workload::Disk, options),
            Command::Net(options) => (Workload::Net, options),
            Command::Summary(args) => return Invocation::Summary(args),
        };
        Invocation::Run(workload, Box::new(options))
    }
}

/// Arguments of `ringlog-bench summary`.
#[derive(Debug, Args)]
pub struct SummaryArgs {
    /// Directory holding the `*.json` reports written with --json.
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,
}

/// Durability asked of the server before it acknowledges a batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Acks {
    /// No reply: fire and forget.
    None,
    /// Reply once the write to the segment file has completed.
    Leader,
    /// Reply after the write and a (shared) fdatasync have completed.
    Durable,
}

impl Acks {
    /// The name used on the command line and in JSON.
    pub fn name(self) -> &'static str {
        match self {
            Acks::None => "none",
            Acks::Leader => "leader",
            Acks::Durable => "durable",
        }
    }
}

/// How producer threads send (produce, e2e and fanout).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProduceWith {
    /// The client's batching `Producer`: one `send` per record, batches by size and linger.
    Producer,
    /// Prebuilt batches sent as pipelined Produce requests (the protocol without the
    /// client's per-record work).
    Requests,
}

impl ProduceWith {
    /// The name used on the command line.
    pub fn name(self) -> &'static str {
        match self {
            ProduceWith::Producer => "producer",
            ProduceWith::Requests => "requests",
        }
    }
}

/// Default way of producing.
pub const PRODUCE_WITH_DEFAULT: ProduceWith = ProduceWith::Requests;
/// How e2e produces unless told: as an application does, through the client's Producer,
/// whose batches grow while its requests are in flight. The bench's own requests (one per
/// partition every pacing tick) measure the server under many small requests instead.
pub const E2E_PRODUCE_WITH_DEFAULT: ProduceWith = ProduceWith::Producer;

/// Options shared by every scenario and reference, as typed (defaults resolved in [`Options::resolve`]).
#[derive(Clone, Debug, Default, Args)]
pub struct Options {
    /// Size of each record's value [default: 1024] (sizes accept KiB, MiB, GiB, KB, MB, GB).
    #[arg(long, value_name = "BYTES", value_parser = parse_bytes)]
    pub record_size: Option<u64>,
    /// Producer batch size; also the write size of the fdatasync commit reference [default: 64KiB].
    #[arg(long, value_name = "BYTES", value_parser = parse_bytes)]
    pub batch_bytes: Option<u64>,
    /// How long a producer waits to fill a batch before sending it anyway [default: 1].
    #[arg(long, value_name = "MS")]
    pub linger_ms: Option<u64>,
    /// Partitions of the topic [default: one per shard; share: 1].
    #[arg(long, value_name = "N")]
    pub partitions: Option<u32>,
    /// Producer clients [default: produce: one per shard of the embedded server; else 1].
    #[arg(long, value_name = "N")]
    pub producers: Option<u32>,
    /// Consumer clients (per group) [default: 1].
    #[arg(long, value_name = "N")]
    pub consumers: Option<u32>,
    /// Consumer groups (fanout and share only) [default: fanout 10, share 1].
    #[arg(long, value_name = "N")]
    pub groups: Option<u32>,
    /// Acknowledgement the producers ask for [default: durable].
    #[arg(long, value_enum)]
    pub acks: Option<Acks>,
    /// e2e only: total producer rate in MB/s (10^6 bytes of record values) [default: 100].
    #[arg(long, value_name = "MB_PER_S")]
    pub rate_mb_per_s: Option<f64>,
    /// Length of the measured run in seconds [default: 10; kafka: --total-bytes 256MiB].
    #[arg(long, value_name = "SECONDS")]
    pub duration_s: Option<f64>,
    /// Stop after this many bytes instead of after a duration.
    #[arg(long, value_name = "BYTES", value_parser = parse_bytes)]
    pub total_bytes: Option<u64>,
    /// Shards of the embedded server [default: the cores this process may run on].
    #[arg(long, value_name = "N")]
    pub shards: Option<u32>,
    /// Load a running server instead of starting an embedded one.
    #[arg(long, value_name = "HOST:PORT")]
    pub server: Option<String>,
    /// consume only: read data that is no longer in memory (written earlier, cache dropped).
    #[arg(long)]
    pub cold: bool,
    /// fanout only: the groups follow producers writing the topic during the run (egress is
    /// then at most --groups times the producers' rate) instead of re-reading a topic filled
    /// first that fits the server's memory cache.
    #[arg(long)]
    pub follow: bool,
    /// share only: simulated work per record in microseconds [default: 1000].
    #[arg(long, value_name = "US")]
    pub work_us: Option<u64>,
    /// produce, e2e, fanout and kafka: send batches built by the bench as pipelined Produce
    /// requests, or records through the client's batching Producer [default: requests; e2e and
    /// kafka: producer].
    #[arg(long, value_enum)]
    pub produce_with: Option<ProduceWith>,
    /// Write the report as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Draw the latency spectrum and throughput over time as SVG to FILE.svg.
    #[arg(long, value_name = "FILE.svg")]
    pub plot: Option<PathBuf>,
    /// Where the embedded server and the references put data; a temporary directory is made
    /// inside it and removed afterwards [default: the current directory].
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// When to measure the hardware references around a scenario [default: both].
    #[arg(long, value_enum)]
    pub references: Option<ReferenceWhen>,
    /// Size of the disk reference's file [default: 1GiB].
    #[arg(long, value_name = "BYTES", value_parser = parse_bytes)]
    pub disk_bytes: Option<u64>,
    /// Bytes sent by each net reference run (each also stops after 2 s) [default: 2GiB].
    #[arg(long, value_name = "BYTES", value_parser = parse_bytes)]
    pub net_bytes: Option<u64>,
    /// Which io_uring send the net reference uses; auto tries both and keeps the faster [default: auto].
    #[arg(long, value_enum)]
    pub send_mode: Option<SendMode>,
}

/// When a run stops.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum StopAt {
    /// After this much time of measured load.
    Duration(Duration),
    /// After this many bytes of record data.
    TotalBytes(u64),
}

/// Which server the load goes to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// A server started in-process with this many shards, data in the run's temp directory.
    Embedded {
        /// Shard threads, one per core.
        shards: u32,
    },
    /// A running server at `HOST:PORT`.
    Server(String),
}

/// Fully resolved and checked options of one run.
#[derive(Clone, Debug, PartialEq)]
pub struct RunConfig {
    /// What is measured.
    pub workload: Workload,
    /// Size of each record's value.
    pub record_size_bytes: u32,
    /// Producer batch size, and the write size of the commit reference.
    pub batch_bytes: u32,
    /// Producer linger.
    pub linger_ms: u64,
    /// Partitions of the topic.
    pub partitions: u32,
    /// Producer clients.
    pub producers: u32,
    /// Consumer clients per group.
    pub consumers: u32,
    /// Consumer (or share) groups.
    pub groups: u32,
    /// Acknowledgement asked for.
    pub acks: Acks,
    /// Total producer rate, `None` for as fast as possible.
    pub rate_mb_per_s: Option<f64>,
    /// When the measured load stops.
    pub stop: StopAt,
    /// Embedded server or a running one.
    pub target: Target,
    /// consume: read from disk rather than memory.
    pub cold: bool,
    /// fanout: follow live producers rather than re-read a filled topic.
    pub follow: bool,
    /// share: simulated work per record.
    pub work_us: u64,
    /// produce, e2e and fanout: how producers send.
    pub produce_with: ProduceWith,
    /// Where to write the JSON report.
    pub json_path: Option<PathBuf>,
    /// Where to write the SVG plot.
    pub plot_path: Option<PathBuf>,
    /// Directory in which the run's temporary data directory is made.
    pub data_parent_dir: PathBuf,
    /// Which references to measure and how.
    pub references: ReferencePlan,
}

/// An impossible or meaningless option combination, as one line for the user.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct OptionsError(pub String);

/// Shorthand: an `Err` with the formatted message.
macro_rules! reject {
    ($($format:tt)*) => {
        return Err(OptionsError(format!($($format)*)))
    };
}

impl Options {
    /// Checks the options for `workload` and resolves every default.
    ///
    /// `allowed_cpus` is the number of cores this process may run on (the default shard count
    /// and the upper bound for `--shards`). Checks that need the file system or the network
    /// beyond path existence (free space, server reachable) are done by the caller.
    pub fn resolve(
        &self,
        workload: Workload,
        allowed_cpus: u32,
    ) -> Result<RunConfig, OptionsError> {
        self.reject_inapplicable(workload)?;
        let record_size_bytes = self.record_size_bytes(workload)?;
        let batch_bytes = self.batch_bytes(workload, record_size_bytes)?;
        let target = self.target(workload, allowed_cpus)?;
        let partitions = match (self.partitions, workload, &target) {
            (Some(partitions), _, _) => partitions,
            (None, Workload::Share, _) => 1,
            (None, Workload::Partitions, _) => PARTITIONS_SCENARIO_PARTITIONS_DEFAULT,
            (None, _, Target::Embedded { shards }) => *shards,
            (None, _, Target::Server(_)) => 1,
        };
        let groups = self.groups.unwrap_or(match workload {
            Workload::Fanout => FANOUT_GROUPS_DEFAULT,
            _ => 1,
        });
        check_count("--partitions", partitions, PARTITIONS_MAX)?;
        let producers = self.producers.unwrap_or(match (workload, &target) {
            (Workload::Append, _) => APPEND_APPENDERS_DEFAULT,
            // One producer per shard: each connects to the shard that owns its partitions.
            (Workload::Produce, Target::Embedded { shards }) => *shards,
            _ => 1,
        });
        let consumers = self.consumers.unwrap_or(1);
        check_count("--producers", producers, CLIENTS_MAX)?;
        check_count("--consumers", consumers, CLIENTS_MAX)?;
        check_count("--groups", groups, CLIENTS_MAX)?;
        let rate_mb_per_s = self.rate_mb_per_s(workload)?;
        let stop = self.stop(workload)?;
        let work_us = self.work_us.unwrap_or(SHARE_WORK_US_DEFAULT);
        if work_us > WORK_US_MAX {
            reject!("--work-us {work_us} is more than {WORK_US_MAX} (10 s) of work per record");
        }
        let references = self.reference_plan(workload)?;
        let json_path = checked_output("--json", self.json.as_deref(), None)?;
        let plot_path = checked_output("--plot", self.plot.as_deref(), Some("svg"))?;
        let data_parent_dir = self.data_parent_dir()?;
        Ok(RunConfig {
            workload,
            record_size_bytes,
            batch_bytes,
            linger_ms: self.linger_ms.unwrap_or(match workload {
                Workload::E2e => E2E_LINGER_MS_DEFAULT,
                _ => LINGER_MS_DEFAULT,
            }),
            partitions,
            producers,
            consumers,
            groups,
            acks: self.acks.unwrap_or(Acks::Durable),
            rate_mb_per_s,
            stop,
            target,
            cold: self.cold,
            follow: self.follow,
            work_us,
            produce_with: self.produce_with.unwrap_or(match workload {
                Workload::Kafka => KAFKA_PRODUCE_WITH_DEFAULT,
                Workload::E2e => E2E_PRODUCE_WITH_DEFAULT,
                _ => PRODUCE_WITH_DEFAULT,
            }),
            json_path,
            plot_path,
            data_parent_dir,
            references,
        })
    }

    /// Rejects options that mean nothing for `workload` (the user expects an effect that will not happen).
    fn reject_inapplicable(&self, workload: Workload) -> Result<(), OptionsError> {
        let given: [(&str, bool); 14] = [
            ("--record-size", self.record_size.is_some()),
            ("--linger-ms", self.linger_ms.is_some()),
            ("--partitions", self.partitions.is_some()),
            ("--producers", self.producers.is_some()),
            ("--consumers", self.consumers.is_some()),
            ("--groups", self.groups.is_some()),
            ("--acks", self.acks.is_some()),
            ("--rate-mb-per-s", self.rate_mb_per_s.is_some()),
            ("--duration-s", self.duration_s.is_some()),
            ("--total-bytes", self.total_bytes.is_some()),
            ("--shards", self.shards.is_some()),
            ("--server", self.server.is_some()),
            ("--work-us", self.work_us.is_some()),
            ("--produce-with", self.produce_with.is_some()),
        ];
        if workload.is_reference() {
            if let Some((option, _)) = given.iter().find(|(_, is_given)| *is_given) {
                reject!(
                    "{option} does not apply to the {workload} reference (it takes --batch-bytes, --dir, \
                     --disk-bytes, --net-bytes, --send-mode, --json, --plot)"
                );
            }
            if self.cold {
                reject!("--cold does not apply to the {workload} reference (O_DIRECT reads are always cold)");
            }
            return Ok(());
        }
        if self.cold && workload != Workload::Consume {
            reject!("--cold applies to consume only, not to {workload}");
        }
        if self.follow && workload != Workload::Fanout {
            reject!("--follow applies to fanout only, not to {workload}");
        }
        if workload == Workload::Fanout && !self.follow {
            let producing = [
                ("--producers", self.producers.is_some()),
                ("--produce-with", self.produce_with.is_some()),
            ];
            if let Some((option, _)) = producing.iter().find(|(_, is_given)| *is_given) {
                reject!("{option} applies to fanout with --follow only: without it the groups re-read a topic the run fills first");
            }
        }
        let prebuilt_batches =
            self.produce_with.unwrap_or(PRODUCE_WITH_DEFAULT) == ProduceWith::Requests;
        if self.linger_ms.is_some()
            && prebuilt_batches
            && matches!(workload, Workload::Produce | Workload::Fanout)
        {
            reject!(
                "--linger-ms has no effect on {workload} with --produce-with requests, which sends \
                 prebuilt full batches; add --produce-with producer to batch records by linger"
            );
        }
        if self.work_us.is_some() && workload != Workload::Share {
            reject!("--work-us applies to share only, not to {workload}");
        }
        if self.groups.is_some() && !matches!(workload, Workload::Fanout | Workload::Share) {
            reject!("--groups applies to fanout and share only, not to {workload}");
        }
        if self.consumers.is_some() && workload == Workload::Kafka {
            reject!("--consumers does not apply to kafka: each side reads with one consumer (kcat -C reads every partition)");
        }
        if self.server.is_some() && workload == Workload::Kafka {
            reject!("--server does not apply to kafka, which starts its embedded server with a Kafka listener for kcat");
        }
        if self.consumers.is_some() && !workload.consumes() {
            reject!("--consumers does not apply to {workload}, which has no consumers");
        }
        if self.rate_mb_per_s.is_some() && workload == Workload::Consume {
            reject!("--rate-mb-per-s does not apply to consume (it fills the topic as fast as it can, then reads)");
        }
        if self.rate_mb_per_s.is_some() && workload != Workload::E2e {
            reject!("--rate-mb-per-s applies to e2e only; {workload} producers send as fast as the server answers");
        }
        if self.server.is_some() && workload == Workload::Append {
            reject!("--server does not apply to append, which loads the engine in-process without a network");
        }
        if self.cold && self.server.is_some() {
            reject!("--cold needs the embedded server (the bench restarts it and drops its files from the page cache); it cannot be combined with --server");
        }
        if self.produce_with.is_some()
            && !matches!(
                workload,
                Workload::Produce | Workload::Fanout | Workload::E2e | Workload::Kafka
            )
        {
            reject!(
                "--produce-with applies to produce, e2e, fanout and kafka only, not to {workload}"
            );
        }
        if workload == Workload::Partitions {
            let fixed = [
                ("--server", self.server.is_some()),
                ("--producers", self.producers.is_some()),
                ("--duration-s", self.duration_s.is_some()),
                ("--total-bytes", self.total_bytes.is_some()),
                ("--linger-ms", self.linger_ms.is_some()),
            ];
            if let Some((option, _)) = fixed.iter().find(|(_, is_given)| *is_given) {
                reject!(
                    "{option} does not apply to partitions, which reads the memory of the server it embeds \
                     and sends one record to each partition (it takes --partitions, --record-size, --acks, --shards)"
                );
            }
        }
        if self.total_bytes.is_some()
            && matches!(workload, Workload::E2e | Workload::Fanout | Workload::Share)
        {
            reject!("--total-bytes does not apply to {workload}, whose producers and consumers run side by side for --duration-s");
        }
        if workload == Workload::E2e
            && self
                .record_size
                .is_some_and(|size| size < E2E_RECORD_SIZE_MIN)
        {
            reject!("--record-size must be at least {E2E_RECORD_SIZE_MIN} bytes for e2e (each value carries its send time)");
        }
        if self.server.is_some() && self.shards.is_some() {
            reject!("--shards sets up the embedded server and cannot be combined with --server");
        }
        Ok(())
    }

    fn record_size_bytes(&self, workload: Workload) -> Result<u32, OptionsError> {
        let record_size = self.record_size.unwrap_or(match workload {
            Workload::Partitions => PARTITIONS_SCENARIO_RECORD_SIZE_DEFAULT,
            _ => RECORD_SIZE_BYTES_DEFAULT,
        });
        if record_size == 0 {
            reject!("--record-size must be at least 1 byte");
        }
        let record_max = BATCH_BYTES_MAX - RECORD_BATCH_OVERHEAD_BYTES_MAX;
        if workload.produces() && record_size > record_max {
            reject!(
                "--record-size {record_size} is larger than the largest record the bench builds ({record_max} bytes)"
            );
        }
        Ok(u32::try_from(record_size.min(record_max)).unwrap_or(u32::MAX))
    }

    fn batch_bytes(&self, workload: Workload, record_size_bytes: u32) -> Result<u32, OptionsError> {
        let batch_bytes = self.batch_bytes.unwrap_or(BATCH_BYTES_DEFAULT);
        if batch_bytes == 0 {
            reject!("--batch-bytes must be at least 1 byte");
        }
        if batch_bytes > BATCH_BYTES_MAX {
            reject!("--batch-bytes {batch_bytes} is more than the {BATCH_BYTES_MAX}-byte maximum");
        }
        let batch_min = u64::from(record_size_bytes) + RECORD_BATCH_OVERHEAD_BYTES_MAX;
        if workload.produces() && batch_bytes < batch_min {
            reject!(
                "--batch-bytes {batch_bytes} cannot hold one {record_size_bytes}-byte record \
                 (needs at least {batch_min} with the batch header)"
            );
        }
        // Bounded by BATCH_BYTES_MAX above, so it fits.
        Ok(u32::try_from(batch_bytes).unwrap_or(u32::MAX))
    }

    fn target(&self, workload: Workload, allowed_cpus: u32) -> Result<Target, OptionsError> {
        if let Some(server) = &self.server {
            check_server_address(server)?;
            return Ok(Target::Server(server.clone()));
        }
        // append measures the engine on one core unless told otherwise: the disk reference it
        // is compared with is one sequential writer too.
        let shards_default = match workload {
            Workload::Append => 1,
            _ => allowed_cpus.max(1),
        };
        let shards = self.shards.unwrap_or(shards_default);
        if shards == 0 {
            reject!("--shards must be at least 1");
        }
        if shards > allowed_cpus {
            reject!(
                "--shards {shards} is more than the {allowed_cpus} cores this process may run on \
                 (each shard is pinned to its own core)"
            );
        }
        Ok(Target::Embedded { shards })
    }

    fn rate_mb_per_s(&self, workload: Workload) -> Result<Option<f64>, OptionsError> {
        let rate = match (self.rate_mb_per_s, workload) {
            (Some(rate), _) => Some(rate),
            (None, Workload::E2e) => Some(E2E_RATE_MB_PER_S_DEFAULT),
            (None, _) => None,
        };
        if let Some(rate) = rate {
            if !rate.is_finite() || rate <= 0.0 {
                reject!("--rate-mb-per-s must be a positive number, not {rate}");
            }
        }
        Ok(rate)
    }

    fn stop(&self, workload: Workload) -> Result<StopAt, OptionsError> {
        match (self.duration_s, self.total_bytes) {
            (Some(_), Some(_)) => {
                reject!("give either --duration-s or --total-bytes, not both")
            }
            (Some(seconds), None) => {
                if !seconds.is_finite() || seconds <= 0.0 || seconds > DURATION_S_MAX {
                    reject!("--duration-s must be more than 0 and at most {DURATION_S_MAX}, not {seconds}");
                }
                Ok(StopAt::Duration(Duration::from_secs_f64(seconds)))
            }
            (None, Some(0)) => reject!("--total-bytes must be more than 0"),
            (None, Some(bytes)) => Ok(StopAt::TotalBytes(bytes)),
            (None, None) => Ok(match workload {
                Workload::Consume if self.cold => StopAt::TotalBytes(CONSUME_COLD_BYTES_DEFAULT),
                Workload::Consume => {
                    StopAt::Duration(Duration::from_secs_f64(CONSUME_HOT_DURATION_S_DEFAULT))
                }
                Workload::Kafka => StopAt::TotalBytes(KAFKA_BYTES_DEFAULT),
                _ => StopAt::Duration(Duration::from_secs_f64(DURATION_S_DEFAULT)),
            }),
        }
    }

    fn reference_plan(&self, workload: Workload) -> Result<ReferencePlan, OptionsError> {
        // partitions measures memory: the machine's throughput is no yardstick for it.
        let when = self.references.unwrap_or(match workload {
            Workload::Partitions => ReferenceWhen::None,
            _ => ReferenceWhen::Both,
        });
        if workload.is_reference() && when == ReferenceWhen::None {
            reject!("--references none leaves the {workload} reference nothing to measure");
        }
        let disk_bytes = self.disk_bytes.unwrap_or(DISK_BYTES_DEFAULT);
        let net_bytes = self.net_bytes.unwrap_or(NET_BYTES_DEFAULT);
        if disk_bytes < MIB {
            reject!("--disk-bytes must be at least 1MiB (one reference block), not {disk_bytes}");
        }
        if net_bytes < MIB {
            reject!("--net-bytes must be at least 1MiB (one reference send), not {net_bytes}");
        }
        Ok(ReferencePlan {
            when,
            disk: workload != Workload::Net,
            net: workload != Workload::Disk,
            // Only latency has a floor in them; they cost every CPU for a while.
            stalls: workload == Workload::E2e,
            disk_bytes,
            net_bytes,
            send_mode: self.send_mode.unwrap_or(SendMode::Auto),
        })
    }

    fn data_parent_dir(&self) -> Result<PathBuf, OptionsError> {
        let Some(dir) = &self.dir else {
            return Ok(PathBuf::from("."));
        };
        if !dir.is_dir() {
            reject!("--dir {} is not an existing directory", dir.display());
        }
        Ok(dir.clone())
    }
}

/// Checks a count option: at least 1, at most `max`.
fn check_count(option: &str, value: u32, max: u32) -> Result<(), OptionsError> {
    if value == 0 {
        reject!("{option} must be at least 1");
    }
    if value > max {
        reject!("{option} {value} is more than the {max} this bench supports");
    }
    Ok(())
}

/// Checks that `server` is `HOST:PORT` and resolves; whether it answers is checked later.
fn check_server_address(server: &str) -> Result<(), OptionsError> {
    let Some((host, port)) = server.rsplit_once(':') else {
        reject!("--server '{server}' is not HOST:PORT");
    };
    if host.is_empty() || port.parse::<u16>().is_err() {
        reject!("--server '{server}' is not HOST:PORT");
    }
    match server.to_socket_addrs() {
        Ok(addresses) if addresses.len() > 0 => Ok(()),
        Ok(_) => reject!("--server '{server}' resolves to no address"),
        Err(error) => reject!("--server '{server}' does not resolve: {error}"),
    }
}

/// Checks an output path: its directory exists and, if `extension` is given, it ends with it.
fn checked_output(
    option: &str,
    path: Option<&Path>,
    extension: Option<&str>,
) -> Result<Option<PathBuf>, OptionsError> {
    let Some(path) = path else {
        return Ok(None);
    };
    if let Some(extension) = extension {
        let matches = path
            .extension()
            .is_some_and(|actual| actual.eq_ignore_ascii_case(extension));
        if !matches {
            reject!("{option} {} must end in .{extension}", path.display());
        }
    }
    if path.is_dir() {
        reject!("{option} {} is a directory; name a file", path.display());
    }
    let parent = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    if !parent.is_dir() {
        reject!(
            "{option} {}: directory {} does not exist",
            path.display(),
            parent.display()
        );
    }
    Ok(Some(path.to_path_buf()))
}

/// Bytes a run will write to the file system of its data directory, by purpose.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DiskNeed {
    /// Record data the embedded server will hold (known only with `--total-bytes`).
    pub scenario_bytes: u64,
    /// The disk reference's file (one at a time, removed after each measurement).
    pub reference_bytes: u64,
}

impl DiskNeed {
    /// Everything together, with slack for indexes, metadata and the file system.
    pub fn total_bytes(&self) -> u64 {
        self.scenario_bytes
            .saturating_add(self.reference_bytes)
            .saturating_add(FREE_SPACE_SLACK_BYTES)
    }
}

impl RunConfig {
    /// The bytes this run writes under its data directory, for the free space check.
    pub fn disk_need(&self) -> DiskNeed {
        let scenario_bytes = match (&self.target, self.stop, self.workload.produces()) {
            (Target::Embedded { .. }, StopAt::TotalBytes(bytes), true)
                if self.workload == Workload::Kafka =>
            {
                bytes.saturating_mul(KAFKA_DATA_COPIES)
            }
            (Target::Embedded { .. }, StopAt::TotalBytes(bytes), true) => bytes,
            _ => 0,
        };
        let reference_bytes = if self.references.disk && self.references.when != ReferenceWhen::None
        {
            self.references.disk_bytes
        } else {
            0
        };
        DiskNeed {
            scenario_bytes,
            reference_bytes,
        }
    }

    /// Fails with one line when `free_bytes` (on the data directory's file system) is too little.
    pub fn check_free_space(&self, free_bytes: u64) -> Result<(), OptionsError> {
        let need = self.disk_need();
        if need.scenario_bytes == 0 && need.reference_bytes == 0 {
            return Ok(());
        }
        if free_bytes >= need.total_bytes() {
            return Ok(());
        }
        reject!(
            "not enough free space under {}: {} free, this run needs {} ({} of --total-bytes, \
             {} of --disk-bytes, {} slack); free some, pick another --dir, or lower those sizes",
            self.data_parent_dir.display(),
            format_bytes(free_bytes),
            format_bytes(need.total_bytes()),
            format_bytes(need.scenario_bytes),
            format_bytes(need.reference_bytes),
            format_bytes(FREE_SPACE_SLACK_BYTES),
        )
    }

    /// The length of the run if it is known up front (for progress and timeline sizing).
    pub fn expected_duration(&self) -> Option<Duration> {
        match self.stop {
            StopAt::Duration(duration) => Some(duration),
            StopAt::TotalBytes(_) => None,
        }
    }

    /// Embedded server shards, `None` when loading a running server.
    pub fn shards(&self) -> Option<u32> {
        match self.target {
            Target::Embedded { shards } => Some(shards),
            Target::Server(_) => None,
        }
    }
}

/// Parses `args` (the command line without the program name) as `ringlog-bench` does and
/// resolves the run for `cores` cores: how tests get a run configuration.
#[cfg(test)]
pub(crate) fn parse_for_test(args: &[&str], cores: u32) -> Result<RunConfig, String> {
    let mut argv = vec!["ringlog-bench"];
    argv.extend_from_slice(args);
    let cli = Cli::try_parse_from(argv).map_err(|error| error.to_string())?;
    match cli.command.into_invocation() {
        Invocation::Run(workload, options) => {
            options.resolve(workload, cores).map_err(|error| error.0)
        }
        Invocation::Summary(_) => Err("summary".to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<RunConfig, String> {
        parse_for_test(args, 2)
    }

    fn rejected(args: &[&str], needle: &str) {
        match parse(args) {
            Ok(config) => panic!("{args:?} was accepted: {config:?}"),
            Err(message) => {
                assert!(
                    message.contains(needle),
                    "{args:?}: '{message}' lacks '{needle}'"
                );
                assert!(
                    !message.contains('\n'),
                    "{args:?}: message is not one line: {message}"
                );
            }
        }
    }

    #[test]
    fn defaults_resolve() {
        let config = parse(&["produce"]).unwrap();
        assert_eq!(config.workload, Workload::Produce);
        assert_eq!(config.record_size_bytes, 1024);
        assert_eq!(config.batch_bytes, 64 * 1024);
        assert_eq!(config.partitions, 2, "one partition per shard");
        assert_eq!(config.target, Target::Embedded { shards: 2 });
        assert_eq!(config.acks, Acks::Durable);
        assert_eq!(config.stop, StopAt::Duration(Duration::from_secs(10)));
        assert_eq!(config.rate_mb_per_s, None);
        assert_eq!(config.references.when, ReferenceWhen::Both);
        assert!(config.references.disk && config.references.net);
    }

    #[test]
    fn linger_is_refused_where_no_producer_lingers() {
        // Prebuilt batches (`--produce-with requests`, the default of produce) are sent as they
        // are: a linger would be silently ignored and the run would not batch by linger.
        rejected(
            &["produce", "--record-size", "100", "--linger-ms", "5"],
            "--linger-ms",
        );
        rejected(
            &[
                "fanout",
                "--follow",
                "--linger-ms",
                "5",
                "--produce-with",
                "requests",
            ],
            "--linger-ms",
        );
        let lingering = parse(&[
            "produce",
            "--record-size",
            "100",
            "--linger-ms",
            "5",
            "--produce-with",
            "producer",
        ])
        .unwrap();
        assert_eq!(lingering.linger_ms, 5);
        assert_eq!(parse(&["e2e", "--linger-ms", "2"]).unwrap().linger_ms, 2);
        assert_eq!(parse(&["kafka", "--linger-ms", "5"]).unwrap().linger_ms, 5);
    }

    #[test]
    fn defaults_that_differ_by_scenario() {
        let append = parse(&["append"]).unwrap();
        assert_eq!(append.target, Target::Embedded { shards: 1 });
        assert_eq!(
            (append.partitions, append.producers),
            (1, APPEND_APPENDERS_DEFAULT)
        );
        assert_eq!(parse(&["e2e"]).unwrap().linger_ms, E2E_LINGER_MS_DEFAULT);
        assert_eq!(parse(&["e2e"]).unwrap().produce_with, ProduceWith::Producer);
        assert_eq!(
            parse(&["consume"]).unwrap().stop,
            StopAt::Duration(Duration::from_secs_f64(CONSUME_HOT_DURATION_S_DEFAULT))
        );
        assert_eq!(
            parse(&["consume", "--cold"]).unwrap().stop,
            StopAt::TotalBytes(CONSUME_COLD_BYTES_DEFAULT)
        );
        assert_eq!(
            parse(&["produce"]).unwrap().produce_with,
            PRODUCE_WITH_DEFAULT
        );
    }

    #[test]
    fn scenario_specific_defaults() {
        assert_eq!(parse(&["e2e"]).unwrap().rate_mb_per_s, Some(100.0));
        assert_eq!(parse(&["fanout"]).unwrap().groups, 10);
        let share = parse(&["share", "--consumers", "16"]).unwrap();
        assert_eq!(
            (share.partitions, share.work_us, share.consumers),
            (1, 1000, 16)
        );
        let net = parse(&["net"]).unwrap();
        assert!(net.references.net && !net.references.disk);
        let partitions = parse(&["partitions"]).unwrap();
        assert_eq!(
            (
                partitions.partitions,
                partitions.record_size_bytes,
                partitions.references.when
            ),
            (10_000, 100, ReferenceWhen::None)
        );
        rejected(
            &["partitions", "--server", "localhost:9292"],
            "does not apply to partitions",
        );
        rejected(
            &["partitions", "--duration-s", "5"],
            "--duration-s does not apply",
        );
    }

    #[test]
    fn explicit_options_are_kept() {
        let config = parse(&[
            "consume",
            "--record-size",
            "100",
            "--batch-bytes",
            "1MiB",
            "--partitions",
            "4",
            "--consumers",
            "3",
            "--acks",
            "leader",
            "--total-bytes",
            "2GiB",
            "--server",
            "127.0.0.1:9092",
        ])
        .unwrap();
        assert_eq!(config.record_size_bytes, 100);
        assert_eq!(config.batch_bytes, 1 << 20);
        assert_eq!(config.partitions, 4);
        assert_eq!(config.consumers, 3);
        assert_eq!(config.acks, Acks::Leader);
        assert_eq!(config.stop, StopAt::TotalBytes(2 << 30));
        assert!(!config.cold);
        assert_eq!(config.target, Target::Server("127.0.0.1:9092".into()));
        assert_eq!(config.shards(), None);
    }

    #[test]
    fn impossible_combinations_are_one_line_errors() {
        rejected(&["produce", "--cold"], "--cold applies to consume only");
        rejected(
            &["produce", "--partitions", "0"],
            "--partitions must be at least 1",
        );
        rejected(&["fanout", "--groups", "0"], "--groups must be at least 1");
        rejected(
            &["produce", "--producers", "0"],
            "--producers must be at least 1",
        );
        rejected(
            &["produce", "--groups", "3"],
            "--groups applies to fanout and share only",
        );
        rejected(
            &["consume", "--work-us", "5"],
            "--work-us applies to share only",
        );
        rejected(&["produce", "--consumers", "2"], "has no consumers");
        rejected(
            &["consume", "--rate-mb-per-s", "5"],
            "does not apply to consume",
        );
        rejected(&["e2e", "--rate-mb-per-s", "0"], "positive number");
        rejected(&["e2e", "--rate-mb-per-s", "NaN"], "positive number");
        rejected(
            &["produce", "--duration-s", "5", "--total-bytes", "1GiB"],
            "not both",
        );
        rejected(
            &["produce", "--duration-s", "0"],
            "--duration-s must be more than 0",
        );
        rejected(
            &["produce", "--total-bytes", "0"],
            "--total-bytes must be more than 0",
        );
        rejected(&["produce", "--shards", "3"], "more than the 2 cores");
        rejected(&["produce", "--shards", "0"], "--shards must be at least 1");
        rejected(
            &["append", "--server", "127.0.0.1:1"],
            "--server does not apply to append",
        );
        rejected(
            &["produce", "--server", "127.0.0.1:1", "--shards", "1"],
            "cannot be combined",
        );
        rejected(&["produce", "--server", "nocolon"], "is not HOST:PORT");
        rejected(
            &["produce", "--server", "host:notaport"],
            "is not HOST:PORT",
        );
        rejected(
            &["produce", "--record-size", "0"],
            "--record-size must be at least 1",
        );
        rejected(
            &["produce", "--record-size", "2KiB", "--batch-bytes", "1KiB"],
            "cannot hold one",
        );
        rejected(&["produce", "--batch-bytes", "1GiB"], "maximum");
        rejected(&["produce", "--plot", "out.png"], "must end in .svg");
        rejected(
            &["produce", "--json", "/no/such/dir/out.json"],
            "does not exist",
        );
        rejected(
            &["produce", "--dir", "/no/such/dir"],
            "is not an existing directory",
        );
        rejected(
            &["disk", "--total-bytes", "1GiB"],
            "does not apply to the disk reference",
        );
        rejected(&["net", "--cold"], "does not apply to the net reference");
        rejected(&["disk", "--references", "none"], "nothing to measure");
        rejected(&["disk", "--disk-bytes", "4KiB"], "at least 1MiB");
        rejected(
            &["consume", "--cold", "--server", "127.0.0.1:9092"],
            "--cold needs the embedded server",
        );
        rejected(
            &["consume", "--produce-with", "producer"],
            "--produce-with applies to produce, e2e, fanout and kafka only",
        );
        rejected(
            &["e2e", "--total-bytes", "1GiB"],
            "--total-bytes does not apply to e2e",
        );
        rejected(
            &["fanout", "--total-bytes", "1GiB"],
            "--total-bytes does not apply to fanout",
        );
        rejected(&["e2e", "--record-size", "4"], "at least 8 bytes for e2e");
        rejected(
            &["produce", "--rate-mb-per-s", "5"],
            "--rate-mb-per-s applies to e2e only",
        );
    }

    #[test]
    fn kafka_defaults_and_refusals() {
        let config = parse(&["kafka", "--record-size", "100", "--partitions", "4"]).unwrap();
        assert_eq!(config.workload, Workload::Kafka);
        assert_eq!(config.stop, StopAt::TotalBytes(KAFKA_BYTES_DEFAULT));
        assert_eq!(config.produce_with, ProduceWith::Producer);
        assert_eq!((config.record_size_bytes, config.partitions), (100, 4));
        assert_eq!((config.producers, config.consumers), (1, 1));
        assert_eq!(config.acks, Acks::Durable);
        let need = config.disk_need();
        assert_eq!(
            need.scenario_bytes,
            3 * KAFKA_BYTES_DEFAULT,
            "two topics and kcat's input file"
        );
        let timed = parse(&["kafka", "--duration-s", "2", "--produce-with", "requests"]).unwrap();
        assert_eq!(timed.stop, StopAt::Duration(Duration::from_secs(2)));
        assert_eq!(timed.produce_with, ProduceWith::Requests);
        rejected(
            &["kafka", "--consumers", "2"],
            "--consumers does not apply to kafka",
        );
        rejected(
            &["kafka", "--server", "127.0.0.1:1"],
            "--server does not apply to kafka",
        );
        rejected(&["kafka", "--groups", "2"], "--groups applies to");
        rejected(&["kafka", "--cold"], "--cold applies to consume only");
    }

    #[test]
    fn fanout_rereads_unless_it_follows() {
        let reread = parse(&["fanout"]).unwrap();
        assert!(!reread.follow);
        assert_eq!(reread.groups, FANOUT_GROUPS_DEFAULT);
        let follow = parse(&["fanout", "--follow", "--producers", "2"]).unwrap();
        assert!(follow.follow);
        assert_eq!(follow.producers, 2);
        rejected(
            &["fanout", "--producers", "2"],
            "--producers applies to fanout with --follow only",
        );
        rejected(
            &["fanout", "--produce-with", "producer"],
            "--produce-with applies to fanout with --follow only",
        );
        rejected(&["consume", "--follow"], "--follow applies to fanout only");
    }

    #[test]
    fn syntax_errors_come_from_the_parser() {
        assert!(parse(&["produce", "--acks", "sometimes"]).is_err());
        assert!(parse(&["produce", "--record-size", "big"]).is_err());
        assert!(parse(&["nonsense"]).is_err());
    }

    #[test]
    fn free_space_is_checked_against_what_the_run_writes() {
        let config = parse(&["produce", "--total-bytes", "10GiB"]).unwrap();
        let need = config.disk_need();
        assert_eq!(need.scenario_bytes, 10 * GIB);
        assert_eq!(need.reference_bytes, GIB);
        assert!(config.check_free_space(need.total_bytes()).is_ok());
        let error = config.check_free_space(5 * GIB).unwrap_err().0;
        assert!(error.starts_with("not enough free space"), "{error}");
        assert!(!error.contains('\n'));

        let remote = parse(&[
            "produce",
            "--total-bytes",
            "10GiB",
            "--server",
            "127.0.0.1:1",
            "--references",
            "none",
        ])
        .unwrap();
        assert!(
            remote.check_free_space(0).is_ok(),
            "a remote server's disk is not ours to check"
        );
        let net = parse(&["net"]).unwrap();
        assert!(
            net.check_free_space(0).is_ok(),
            "the net reference writes nothing"
        );
    }
}
