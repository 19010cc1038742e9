//! `ringlog consume`: prints a topic's records, one per line, from a chosen start.

use std::io::{self, BufWriter, Write};
use std::str::FromStr;
use std::time::{Duration, Instant};

use clap::Args;
use ringlog_net::client::{
    AutoOffsetReset, Client, Consumer, ConsumerConfig, PartitionInfo, PositionReset, SeekTo,
};

use super::error::CliError;
use super::group_consume::{self, AckMode};
use super::record_format::RecordFormat;

/// Longest one poll waits before the loop looks again (it ends early when records arrive).
const POLL_TIMEOUT: Duration = Duration::from_secs(1);
/// Bytes of output gathered before a write to stdout.
const STDOUT_BUFFER_BYTES: usize = 256 * 1024;

/// Options of `ringlog consume`.
#[derive(Debug, Args)]
pub struct ConsumeArgs {
    /// Topic to read.
    pub topic: String,
    /// Read only this partition (default: every partition).
    #[arg(long, value_name = "P")]
    pub partition: Option<u32>,
    /// Where to start in each partition: `earliest` (the oldest stored record), `latest` (only
    /// records written from now on; the default, as in Kafka's console consumer), an OFFSET,
    /// or `@UNIX_MS` (the first record with a timestamp at or after that time).
    #[arg(long, value_name = "WHERE", default_value = "latest")]
    pub from: StartAt,
    /// Exit after this many records (default: follow the log until interrupted).
    #[arg(long, value_name = "N")]
    pub count: Option<u64>,
    /// Output line format.
    #[arg(long, value_enum, default_value_t = RecordFormat::Value)]
    pub format: RecordFormat,
    /// Read as a member of this consumer group: the group's members split the partitions,
    /// reading starts at the group's committed offsets (`--from earliest|latest` where it has
    /// none) and what is printed is committed as it goes.
    #[arg(long, value_name = "G", conflicts_with_all = ["share_group", "partition"])]
    pub group: Option<String>,
    /// With `--group`: join as a static member with this instance id (Kafka's
    /// `group.instance.id`, for example the host name). It does not leave the group when it
    /// stops: started again with the same id within the session timeout, it takes its
    /// partitions back without a rebalance.
    #[arg(long, value_name = "ID", requires = "group")]
    pub group_instance_id: Option<String>,
    /// Read as a member of this share group: records of every partition are leased to this
    /// consumer one by one and acknowledged after printing (see `--ack`).
    #[arg(long, value_name = "G", conflicts_with_all = ["partition", "from"])]
    pub share_group: Option<String>,
    /// With `--share-group`: how each printed record is acknowledged (`none`: leave it to
    /// expire).
    #[arg(long, value_enum, default_value_t = AckMode::Accept, requires = "share_group")]
    pub ack: AckMode,
    /// Reading every partition without a group: how often to ask whether partitions were
    /// added to the topic (`topic alter --partitions`); added ones are read from their first
    /// record, as a subscribed Kafka consumer takes them up (its `metadata.max.age.ms`).
    #[arg(long, value_name = "MS", default_value_t = 5_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub metadata_max_age_ms: u64,
}

/// The `--from` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartAt {
    /// The oldest stored record.
    Earliest,
    /// The end of the log.
    Latest,
    /// An offset (checked against each partition's stored range).
    Offset(i64),
    /// The first record at or after this time, in ms since the Unix epoch.
    Timestamp(i64),
}

impl FromStr for StartAt {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let invalid = || format!("expected earliest, latest, OFFSET or @UNIX_MS, got {text:?}");
        match text {
            "earliest" => Ok(StartAt::Earliest),
            "latest" => Ok(StartAt::Latest),
            _ => match text.strip_prefix('@') {
                Some(ms) => ms
                    .parse::<u64>()
                    .ok()
                    .and_then(|ms| i64::try_from(ms).ok())
                    .map(StartAt::Timestamp)
                    .ok_or_else(invalid),
                None => text
                    .parse::<u64>()
                    .ok()
                    .and_then(|offset| i64::try_from(offset).ok())
                    .map(StartAt::Offset)
                    .ok_or_else(invalid),
            },
        }
    }
}

impl StartAt {
    /// The consumer's seek.
    fn seek_to(self) -> SeekTo {
        match self {
            StartAt::Earliest => SeekTo::Earliest,
            StartAt::Latest => SeekTo::Latest,
            StartAt::Offset(offset) => SeekTo::Offset(offset),
            StartAt::Timestamp(ms) => SeekTo::Timestamp(ms),
        }
    }
}

/// Prints records until `--count` is reached, forever without it, or until stdout closes.
pub fn run(args: ConsumeArgs, server: &str) -> anyhow::Result<()> {
    if let Some(group) = &args.group {
        return group_consume::run_group(&args, group, server);
    }
    if let Some(group) = &args.share_group {
        return group_consume::run_share(&args, group, server);
    }
    let partitions = chosen_partitions(&args, server)?;
    let topic = args.topic.as_str();
    // Once started, a position that retention passed moves to the oldest record rather than
    // failing a long-running follow.
    let config = ConsumerConfig {
        auto_offset_reset: AutoOffsetReset::Earliest,
        ..ConsumerConfig::default()
    };
    let mut consumer = Consumer::connect(server, config)
        .map_err(|error| CliError::connecting(server, Some(topic), error))?;
    consumer.assign(topic, &partitions);
    consumer
        .seek_all(args.from.seek_to())
        .map_err(|error| CliError::about(Some(topic), error))?;
    let limit = args.count.unwrap_or(u64::MAX);
    let mut watch = args.partition.is_none().then(|| PartitionWatch {
        topic: topic.to_owned(),
        known: u32::try_from(partitions.len()).unwrap_or(u32::MAX),
        interval: Duration::from_millis(args.metadata_max_age_ms),
        next_check: Instant::now() + Duration::from_millis(args.metadata_max_age_ms),
    });
    let mut out = BufWriter::with_capacity(STDOUT_BUFFER_BYTES, io::stdout().lock());
    match print_records(&mut consumer, &mut out, args.format, limit, watch.as_mut()) {
        Err(error) if error.is_closed_output() => Ok(()),
        Err(CliError::Client(error)) => Err(CliError::about(Some(topic), error).into()),
        other => Ok(other?),
    }
}

/// The partitions to read, checked against the topic (and `--from OFFSET` against each
/// partition's stored range, so a mistyped offset is an error rather than a silent jump).
fn chosen_partitions(args: &ConsumeArgs, server: &str) -> Result<Vec<u32>, CliError> {
    let topic = args.topic.as_str();
    let mut client = Client::connect(server)
        .map_err(|error| CliError::connecting(server, Some(topic), error))?;
    let metadata = client
        .metadata(&[topic])
        .map_err(|error| CliError::about(Some(topic), error))?;
    let all: Vec<PartitionInfo> = metadata
        .into_iter()
        .find(|t| t.name == topic)
        .ok_or_else(|| CliError::UnknownTopic {
            topic: topic.to_owned(),
        })?
        .partitions;
    let chosen: Vec<PartitionInfo> = match args.partition {
        None => all,
        Some(partition) => {
            let info = all.iter().find(|p| p.partition == partition).copied();
            let partitions = u32::try_from(all.len()).unwrap_or(u32::MAX);
            vec![info.ok_or_else(|| CliError::UnknownPartition {
                topic: topic.to_owned(),
                partition,
                partitions,
            })?]
        }
    };
    if let StartAt::Offset(offset) = args.from {
        if let Some(outside) = chosen
            .iter()
            .find(|p| offset < p.log_start_offset || offset > p.high_watermark)
        {
            return Err(CliError::OffsetOutOfRange {
                offset,
                partition: outside.partition,
                log_start_offset: outside.log_start_offset,
                high_watermark: outside.high_watermark,
            });
        }
    }
    Ok(chosen.iter().map(|p| p.partition).collect())
}

/// Takes up the partitions added to the topic of a consumer reading all of them.
struct PartitionWatch {
    topic: String,
    /// Partitions assigned: `0..known`.
    known: u32,
    interval: Duration,
    next_check: Instant,
}

impl PartitionWatch {
    /// Asks for the partition count when due and assigns the partitions added since, read
    /// from their first record (the consumer's reset is `earliest`), so that none of their
    /// records is missed. A failed check (the server restarting) waits for the next: the poll
    /// reports what matters.
    fn check(&mut self, consumer: &mut Consumer) {
        let now = Instant::now();
        if now < self.next_check {
            return;
        }
        self.next_check = now + self.interval;
        let count = match consumer.partition_count(&self.topic) {
            Ok(count) => count,
            Err(error) => {
                tracing::debug!(%error, topic = %self.topic, "partition count check failed");
                return;
            }
        };
        if count <= self.known {
            return;
        }
        let added: Vec<u32> = (self.known..count).collect();
        consumer.extend_assignment(&added);
        let which = if added.len() == 1 {
            format!("partition {} from its", self.known)
        } else {
            format!("partitions {} to {} from their", self.known, count - 1)
        };
        let _ = writeln!(
            io::stderr(),
            "note: topic {} has {count} partitions now; reading {which} first record",
            self.topic
        );
        self.known = count;
    }
}

/// Polls and writes records until `limit` were written. Output is flushed after every poll,
/// so a follower sees records as they arrive.
fn print_records(
    consumer: &mut Consumer,
    out: &mut impl Write,
    format: RecordFormat,
    limit: u64,
    mut watch: Option<&mut PartitionWatch>,
) -> Result<(), CliError> {
    let mut written = 0u64;
    while written < limit {
        if let Some(watch) = watch.as_deref_mut() {
            watch.check(consumer);
        }
        for record in consumer.poll(POLL_TIMEOUT)? {
            format.write(out, &record?).map_err(CliError::Output)?;
            written += 1;
            if written == limit {
                break;
            }
        }
        out.flush().map_err(CliError::Output)?;
        warn_of_resets(consumer.take_resets());
    }
    Ok(())
}

/// Says on stderr where positions left the log and reading went on elsewhere, so that a
/// follower that fell behind retention knows what it missed.
pub fn warn_of_resets(resets: impl Iterator<Item = PositionReset>) {
    for reset in resets {
        let PositionReset {
            partition,
            from,
            to,
        } = reset;
        if to > from {
            // `to` is the oldest record kept, or the end with `--group` and `--from latest`.
            let _ = writeln!(
                io::stderr(),
                "warning: partition {partition}: offset {from} is no longer stored (deleted by \
                 retention before it was read); reading on at {to}, {} offsets skipped",
                reset.skipped()
            );
        } else {
            let _ = writeln!(
                io::stderr(),
                "warning: partition {partition}: offset {from} is past the end of the log; \
                 reading on at {to}"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_values_parse() {
        assert_eq!("earliest".parse(), Ok(StartAt::Earliest));
        assert_eq!("latest".parse(), Ok(StartAt::Latest));
        assert_eq!("42".parse(), Ok(StartAt::Offset(42)));
        assert_eq!(
            "@1700000000000".parse(),
            Ok(StartAt::Timestamp(1_700_000_000_000))
        );
        for bad in ["", "-1", "@", "@-5", "first", "1.5", "99999999999999999999"] {
            assert!(bad.parse::<StartAt>().is_err(), "{bad}");
        }
    }
}
