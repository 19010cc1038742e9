//! `ringlog consume TOPIC --group G` and `--share-group G`: printing records as a member of a
//! consumer group (committing what was printed) or of a share group (acknowledging each record
//! after printing it).

use std::io::{self, BufWriter, Write};
use std::time::Duration;

use clap::ValueEnum;
use ringlog_net::client::{
    AutoOffsetReset, Client, ConsumerConfig, ConsumerRecord, GroupConsumer, GroupConsumerConfig,
    ShareConsumer, ShareConsumerConfig,
};
use ringlog_net::message::share_acknowledge::AckType;

use super::consume::{self, ConsumeArgs, StartAt};
use super::error::CliError;
use super::interrupt;
use super::record_format::RecordFormat;

/// Longest one poll waits before the loop looks again.
const POLL_TIMEOUT: Duration = Duration::from_secs(1);
/// Bytes of output gathered before a write to stdout.
const STDOUT_BUFFER_BYTES: usize = 256 * 1024;

/// How `--share-group` acknowledges each printed record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AckMode {
    /// Done: never delivered again.
    Accept,
    /// Give it back: delivered again (counts as a delivery).
    Release,
    /// Archive it (copied to the group's dead-letter topic, if any).
    Reject,
    /// No acknowledgement: the record comes back when its lock expires.
    None,
}

impl AckMode {
    fn ack_type(self) -> Option<AckType> {
        match self {
            AckMode::Accept => Some(AckType::Accept),
            AckMode::Release => Some(AckType::Release),
            AckMode::Reject => Some(AckType::Reject),
            AckMode::None => None,
        }
    }
}

/// Reads as a member of consumer group `group`, committing each poll's printed records.
pub fn run_group(args: &ConsumeArgs, group: &str, server: &str) -> anyhow::Result<()> {
    let topic = args.topic.as_str();
    let auto_offset_reset = match args.from {
        StartAt::Earliest => AutoOffsetReset::Earliest,
        StartAt::Latest => AutoOffsetReset::Latest,
        StartAt::Offset(_) | StartAt::Timestamp(_) => {
            anyhow::bail!(
                "with --group, --from is earliest or latest (where the group has no committed offset); \
                 move a group with `ringlog group reset {group} --topic {topic} --to ...`"
            )
        }
    };
    let config = GroupConsumerConfig {
        client_id: "ringlog-cli".to_owned(),
        // Commits are explicit: exactly what was printed.
        auto_commit: false,
        consumer: ConsumerConfig {
            auto_offset_reset,
            ..ConsumerConfig::default()
        },
        group_instance_id: args.group_instance_id.clone(),
        ..GroupConsumerConfig::default()
    };
    // A group member may wait for a topic that does not exist yet (as in Kafka), but at the
    // command line a missing topic is most often a typo: say so at once.
    Client::connect(server)
        .and_then(|mut client| client.partition_count(topic))
        .map_err(|error| CliError::connecting(server, Some(topic), error))?;
    let mut consumer = GroupConsumer::subscribe(server, group, topic, config)
        .map_err(|error| CliError::connecting(server, Some(topic), error))?;
    // Ctrl-C stops the loop so that the member leaves the group (rather than holding its
    // partitions until its session times out); a static member commits and stays.
    interrupt::install();
    let limit = args.count.unwrap_or(u64::MAX);
    let mut out = BufWriter::with_capacity(STDOUT_BUFFER_BYTES, io::stdout().lock());
    let printed = print_group(&mut consumer, &mut out, args.format, limit);
    // Leave either way (unless static), so the other members take over at once.
    let left = consumer.close();
    interrupt::finish();
    match printed {
        Err(error) if error.is_closed_output() => Ok(()),
        Err(CliError::Client(error)) => Err(CliError::about(Some(topic), error).into()),
        other => {
            other?;
            left.map_err(|error| CliError::about(Some(topic), error))?;
            Ok(())
        }
    }
}

fn print_group(
    consumer: &mut GroupConsumer,
    out: &mut impl Write,
    format: RecordFormat,
    limit: u64,
) -> Result<(), CliError> {
    let mut written = 0u64;
    while written < limit && !interrupt::requested() {
        // Next offsets of what this poll printed, per partition.
        let mut printed: Vec<(u32, i64)> = Vec::new();
        for record in consumer.poll(POLL_TIMEOUT)? {
            let record = record?;
            format.write(out, &record).map_err(CliError::Output)?;
            match printed.iter_mut().find(|(p, _)| *p == record.partition) {
                Some((_, next)) => *next = record.offset + 1,
                None => printed.push((record.partition, record.offset + 1)),
            }
            written += 1;
            if written == limit {
                break;
            }
        }
        out.flush().map_err(CliError::Output)?;
        consume::warn_of_resets(consumer.take_resets());
        if !printed.is_empty() {
            consumer.commit_offsets(&printed)?;
        }
    }
    Ok(())
}

/// Reads as a member of share group `group`, acknowledging each record after printing it.
pub fn run_share(args: &ConsumeArgs, group: &str, server: &str) -> anyhow::Result<()> {
    let topic = args.topic.as_str();
    let limit = args.count.unwrap_or(u64::MAX);
    let defaults = ShareConsumerConfig::default();
    // Acquire no more than is left to print (per partition), so little has to be released.
    let config = ShareConsumerConfig {
        max_records: u32::try_from(limit)
            .unwrap_or(u32::MAX)
            .clamp(1, defaults.max_records),
        ..defaults
    };
    let mut consumer = ShareConsumer::subscribe(server, group, topic, config)
        .map_err(|error| CliError::connecting(server, Some(topic), error))?;
    // Ctrl-C stops the loop so that the acknowledgements go out and the records still held
    // are released, rather than staying locked to this consumer.
    interrupt::install();
    let mut out = BufWriter::with_capacity(STDOUT_BUFFER_BYTES, io::stdout().lock());
    let printed = print_share(&mut consumer, &mut out, args.format, args.ack, limit);
    // The last acknowledgements go out whatever happened to stdout.
    let refused = consumer.close();
    interrupt::finish();
    match printed {
        Err(error) if error.is_closed_output() => {}
        Err(CliError::Client(error)) => return Err(CliError::about(Some(topic), error).into()),
        other => other?,
    }
    let refused = refused.map_err(|error| CliError::about(Some(topic), error))?;
    if let Some(first) = refused.first() {
        anyhow::bail!(
            "{} acknowledgement(s) refused; first: {}/{}..{}: {}",
            refused.len(),
            first.partition,
            first.first_offset,
            first.last_offset,
            first.error
        );
    }
    Ok(())
}

fn print_share(
    consumer: &mut ShareConsumer,
    out: &mut impl Write,
    format: RecordFormat,
    ack: AckMode,
    limit: u64,
) -> Result<(), CliError> {
    let mut written = 0u64;
    while written < limit && !interrupt::requested() {
        let batch = consumer.poll(POLL_TIMEOUT)?;
        for record in batch.records() {
            let record = record?;
            if written == limit {
                // Acquired but not printed: give it back now rather than at lock expiry.
                if ack != AckMode::None {
                    consumer.acknowledge(record.partition, record.offset, AckType::Release);
                }
                continue;
            }
            let plain = ConsumerRecord {
                topic: record.topic,
                partition: record.partition,
                offset: record.offset,
                timestamp_ms: record.timestamp_ms,
                key: record.key,
                value: record.value,
                headers: record.headers.clone(),
            };
            format.write(out, &plain).map_err(CliError::Output)?;
            written += 1;
            if let Some(ack) = ack.ack_type() {
                consumer.acknowledge(record.partition, record.offset, ack);
            }
        }
        out.flush().map_err(CliError::Output)?;
    }
    Ok(())
}
