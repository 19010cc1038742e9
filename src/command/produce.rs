//! `ringlog produce`: one record per stdin line, streamed through the batching producer.

use std::io::{self, BufRead, BufReader, Write};
use std::time::{Duration, Instant};

use clap::builder::NonEmptyStringValueParser;
use clap::{Args, ValueEnum};
use ringlog_net::client::{CompressionType, Producer, ProducerConfig, ProducerRecord};
use ringlog_net::message::produce::Acks;

use super::error::CliError;

/// Bytes read from stdin at a time: large reads keep a million short lines cheap.
const STDIN_BUFFER_BYTES: usize = 1 << 20;

/// Options of `ringlog produce`.
#[derive(Debug, Args)]
pub struct ProduceArgs {
    /// Topic to append to (it must exist).
    pub topic: String,
    /// Send every record to this partition (default: by key hash like Kafka's murmur2
    /// partitioner; records without a key fill one partition's batch, then the next).
    #[arg(long, value_name = "P")]
    pub partition: Option<u32>,
    /// Split each line at the first SEP into key and value; a line without SEP is an error
    /// (the lines before it are still sent).
    #[arg(long, value_name = "SEP", value_parser = NonEmptyStringValueParser::new())]
    pub key_separator: Option<String>,
    /// What each record waits for: nothing, the write to the segment file, or the write and an
    /// fdatasync covering it.
    #[arg(long, value_enum, default_value_t = AcksArg::Durable)]
    pub acks: AcksArg,
    /// How long a batch waits for more lines before it is sent.
    #[arg(long, value_name = "MS", default_value_t = 5)]
    pub linger_ms: u64,
    /// How long lines may wait for a server that cannot be reached (it stopped, restarts)
    /// before the command fails with the connection's error, as Kafka's delivery.timeout.ms.
    #[arg(long, value_name = "MS", default_value_t = ProducerConfig::default().delivery_timeout_ms)]
    pub delivery_timeout_ms: u64,
    /// Compress each batch's records with this codec, as Kafka's compression.type (a batch
    /// whose records do not shrink goes uncompressed).
    #[arg(long, value_enum, default_value_t = CompressionArg::None)]
    pub compression: CompressionArg,
}

/// `--compression` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CompressionArg {
    /// Uncompressed.
    None,
    /// gzip.
    Gzip,
    /// Snappy (xerial framing, as Kafka's Java producer).
    Snappy,
    /// LZ4 frame.
    Lz4,
    /// Zstandard.
    Zstd,
}

impl From<CompressionArg> for CompressionType {
    fn from(compression: CompressionArg) -> Self {
        match compression {
            CompressionArg::None => CompressionType::None,
            CompressionArg::Gzip => CompressionType::Gzip,
            CompressionArg::Snappy => CompressionType::Snappy,
            CompressionArg::Lz4 => CompressionType::Lz4,
            CompressionArg::Zstd => CompressionType::Zstd,
        }
    }
}

/// `--acks` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AcksArg {
    /// Fire and forget: no answer is awaited.
    None,
    /// Answer once written to the segment file.
    Leader,
    /// Answer once written and fdatasync'ed.
    Durable,
}

impl From<AcksArg> for Acks {
    fn from(acks: AcksArg) -> Self {
        match acks {
            AcksArg::None => Acks::None,
            AcksArg::Leader => Acks::Leader,
            AcksArg::Durable => Acks::Durable,
        }
    }
}

/// What was sent.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Sent {
    records: u64,
    /// Key and value bytes (line ends and separators not counted).
    bytes: u64,
}

/// Produces stdin to the topic; Ok only when every line was acknowledged.
pub fn run(args: ProduceArgs, server: &str) -> anyhow::Result<()> {
    let topic = args.topic.as_str();
    let config = ProducerConfig {
        acks: args.acks.into(),
        linger_ms: args.linger_ms,
        delivery_timeout_ms: args.delivery_timeout_ms,
        compression: args.compression.into(),
        ..ProducerConfig::default()
    };
    let producer = Producer::connect(server, topic, config)
        .map_err(|error| CliError::connecting(server, Some(topic), error))?;
    if let Some(partition) = args.partition {
        if partition >= producer.partitions() {
            return Err(CliError::UnknownPartition {
                topic: topic.to_owned(),
                partition,
                partitions: producer.partitions(),
            }
            .into());
        }
    }
    let started = Instant::now();
    let mut stdin = BufReader::with_capacity(STDIN_BUFFER_BYTES, io::stdin());
    let mut sent = Sent::default();
    let streamed = send_lines(&producer, &mut stdin, &args, &mut sent);
    // Close even after a failure: the lines before it are flushed, and a failed stream is
    // reported in preference to the flush error it causes.
    let closed = producer
        .close()
        .map_err(|error| CliError::about(Some(topic), error));
    streamed?;
    closed?;
    // The records are stored: a closed stderr must not turn that into a failure.
    let _ = writeln!(io::stderr(), "{}", summary(sent, started.elapsed()));
    Ok(())
}

/// Sends every line of `input` (newline and a preceding carriage return stripped), counting
/// into `sent`. Returns at end of input or at the first line that cannot be sent.
fn send_lines(
    producer: &Producer,
    input: &mut impl BufRead,
    args: &ProduceArgs,
    sent: &mut Sent,
) -> Result<(), CliError> {
    let separator = args.key_separator.as_deref().map(str::as_bytes);
    let mut line = Vec::with_capacity(4096);
    loop {
        line.clear();
        if input
            .read_until(b'\n', &mut line)
            .map_err(CliError::Input)?
            == 0
        {
            return Ok(());
        }
        let text = strip_line_end(&line);
        let mut record = match separator {
            None => ProducerRecord::new(text),
            Some(separator) => {
                let (key, value) =
                    split_key(text, separator).ok_or_else(|| CliError::MissingKeySeparator {
                        line: sent.records + 1,
                        separator: args.key_separator.clone().unwrap_or_default(),
                    })?;
                ProducerRecord::new(value).with_key(key)
            }
        };
        record.partition = args.partition;
        // Delivery results are collected by `close` (it fails when any record failed), so the
        // per-record handle is not kept.
        producer
            .send(&record)
            .map_err(|error| CliError::about(Some(&args.topic), error))?;
        sent.records += 1;
        sent.bytes +=
            (record.key.map_or(0, <[u8]>::len) + record.value.map_or(0, <[u8]>::len)) as u64;
    }
}

/// The line without its `\n` or `\r\n`.
fn strip_line_end(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// (key, value) around the first `separator`, or `None` when there is none.
fn split_key<'a>(line: &'a [u8], separator: &[u8]) -> Option<(&'a [u8], &'a [u8])> {
    debug_assert!(!separator.is_empty());
    let at = line
        .windows(separator.len())
        .position(|window| window == separator)?;
    let (key, rest) = line.split_at(at);
    Some((key, rest.get(separator.len()..).unwrap_or_default()))
}

/// "produced 100000 records (588895 bytes) in 0.410 s: 243902 records/s".
fn summary(sent: Sent, elapsed: Duration) -> String {
    let seconds = elapsed.as_secs_f64();
    let rate = if seconds > 0.0 {
        sent.records as f64 / seconds
    } else {
        0.0
    };
    let records = if sent.records == 1 {
        "record"
    } else {
        "records"
    };
    format!(
        "produced {} {records} ({} bytes) in {seconds:.3} s: {rate:.0} records/s",
        sent.records, sent.bytes
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_and_keys_split_as_documented() {
        assert_eq!(strip_line_end(b"a\r\n"), b"a");
        assert_eq!(strip_line_end(b"a\n"), b"a");
        assert_eq!(strip_line_end(b"a"), b"a");
        assert_eq!(strip_line_end(b"\n"), b"");
        assert_eq!(
            split_key(b"k::v::w", b"::"),
            Some((&b"k"[..], &b"v::w"[..]))
        );
        assert_eq!(split_key(b":v", b":"), Some((&b""[..], &b"v"[..])));
        assert_eq!(split_key(b"k:", b":"), Some((&b"k"[..], &b""[..])));
        assert_eq!(split_key(b"kv", b":"), None);
    }

    #[test]
    fn summary_reads_well() {
        let sent = Sent {
            records: 1000,
            bytes: 3893,
        };
        assert_eq!(
            summary(sent, Duration::from_millis(500)),
            "produced 1000 records (3893 bytes) in 0.500 s: 2000 records/s"
        );
        let one = Sent {
            records: 1,
            bytes: 4,
        };
        assert_eq!(
            summary(one, Duration::from_millis(2)),
            "produced 1 record (4 bytes) in 0.002 s: 500 records/s"
        );
    }
}
