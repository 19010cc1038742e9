//! `ringlog topic create|alter|list|describe|delete|delete-records`: topic administration.

use std::io::{self, Write};

use clap::{Args, Subcommand, ValueEnum};
use ringlog_net::byte_size::{parse_limit_bytes, parse_signed_bytes};
use ringlog_net::client::{Client, PartitionInfo, TopicInfo};
use ringlog_net::message::delete_records::{DeleteBefore, HIGH_WATERMARK};
use ringlog_net::message::{alter_topic, create_topic};
use serde::Serialize;

use super::error::CliError;
use super::table::{limit, write_table};

/// Options of `ringlog topic`.
#[derive(Debug, Args)]
pub struct TopicArgs {
    #[command(subcommand)]
    action: TopicAction,
}

/// The topic subcommands.
#[derive(Debug, Subcommand)]
enum TopicAction {
    /// Create a topic.
    Create(CreateArgs),
    /// Change a topic's retention or add partitions (its segment size is fixed); new limits
    /// apply at the server's next retention check, new partitions at once, and both survive
    /// restarts.
    Alter(AlterArgs),
    /// List every topic with its configuration.
    List(ListArgs),
    /// Show a topic's partitions (owning shard, log start, high watermark) and configuration.
    Describe(DescribeArgs),
    /// Delete a topic and all its records.
    Delete(DeleteArgs),
    /// Delete the records before an offset (Kafka's DeleteRecords): each partition's log
    /// start moves there, reads below it are out of range, and the segments wholly below it
    /// are removed at the server's next retention check.
    DeleteRecords(DeleteRecordsArgs),
}

/// Options of `ringlog topic create`.
#[derive(Debug, Args)]
struct CreateArgs {
    /// Topic name.
    name: String,
    /// Number of partitions.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    partitions: u32,
    /// Delete whole segments older than this (-1: keep forever; default: the server's).
    #[arg(
        long,
        value_name = "MS",
        allow_negative_numbers = true,
        value_parser = parse_limit_ms
    )]
    retention_ms: Option<i64>,
    /// Delete the oldest segments while a partition keeps at least this much without them, e.g.
    /// `10GiB` (-1: no limit; default: the server's).
    #[arg(long, value_name = "BYTES", allow_negative_numbers = true, value_parser = parse_limit_bytes)]
    retention_bytes: Option<i64>,
    /// Size of each segment file, preallocated, e.g. `64MiB` (default: the server's
    /// `segment_bytes`).
    #[arg(long, value_name = "BYTES", value_parser = parse_signed_bytes)]
    segment_bytes: Option<i64>,
}

/// `--retention-ms`: `-1` (keep forever) or a positive number of milliseconds. 0 is refused
/// here with what is taken instead of by the server, whose answer cannot know how the limit was
/// typed.
fn parse_limit_ms(text: &str) -> Result<i64, String> {
    match text.trim().parse::<i64>() {
        Ok(ms) if ms == -1 || ms > 0 => Ok(ms),
        _ => Err(format!(
            "expected a positive number of milliseconds, or -1 to keep forever, got '{text}'"
        )),
    }
}

/// Options of `ringlog topic list`.
#[derive(Debug, Args)]
struct ListArgs {
    /// Output format.
    #[arg(long, value_enum, default_value_t = TableFormat::Table)]
    format: TableFormat,
}

/// Options of `ringlog topic alter`.
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("change").required(true).multiple(true)))]
struct AlterArgs {
    /// Topic name.
    name: String,
    /// Delete whole segments older than this (-1: keep forever).
    #[arg(
        long,
        value_name = "MS",
        allow_negative_numbers = true,
        value_parser = parse_limit_ms,
        group = "change"
    )]
    retention_ms: Option<i64>,
    /// Delete the oldest segments while a partition keeps at least this much without them, e.g.
    /// `10GiB` (-1: no limit).
    #[arg(
        long,
        value_name = "BYTES",
        allow_negative_numbers = true,
        value_parser = parse_limit_bytes,
        group = "change"
    )]
    retention_bytes: Option<i64>,
    /// New partition count, at least the current one: partitions are added, never removed
    /// (keys map to partitions by their count, so a key's new records may land on another
    /// partition, as in Kafka).
    #[arg(long, value_name = "N", group = "change")]
    partitions: Option<u32>,
}

/// Options of `ringlog topic describe`.
#[derive(Debug, Args)]
struct DescribeArgs {
    /// Topic name.
    name: String,
    /// Output format.
    #[arg(long, value_enum, default_value_t = TableFormat::Table)]
    format: TableFormat,
}

/// Options of `ringlog topic delete`.
#[derive(Debug, Args)]
struct DeleteArgs {
    /// Topic name.
    name: String,
}

/// Options of `ringlog topic delete-records`.
#[derive(Debug, Args)]
struct DeleteRecordsArgs {
    /// Topic name.
    name: String,
    /// The new log start offset of each partition, or `end` for every record stored now (an
    /// offset past a partition's end is refused; one before its start changes nothing).
    #[arg(long, value_name = "OFFSET|end", value_parser = parse_before)]
    before: i64,
    /// Only this partition (default: every partition).
    #[arg(long, value_name = "P")]
    partition: Option<u32>,
}

/// `--before`: an offset, or `end` (the high watermark).
fn parse_before(text: &str) -> Result<i64, String> {
    match text.trim() {
        "end" => Ok(HIGH_WATERMARK),
        number => number
            .parse::<i64>()
            .ok()
            .filter(|offset| *offset >= 0)
            .ok_or_else(|| format!("expected an offset (0 or more) or `end`, got '{text}'")),
    }
}

/// How `list` and `describe` print.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum TableFormat {
    /// Aligned columns with a header line.
    Table,
    /// One JSON document.
    Json,
}

/// A topic as `--format json` prints it.
#[derive(Debug, Serialize)]
struct TopicJson<'a> {
    name: &'a str,
    partition_count: u32,
    retention_ms: i64,
    retention_bytes: i64,
    segment_bytes: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    partitions: Option<Vec<PartitionJson>>,
}

/// A partition as `describe --format json` prints it.
#[derive(Debug, Serialize)]
struct PartitionJson {
    partition: u32,
    shard: u16,
    log_start_offset: i64,
    high_watermark: i64,
    size_bytes: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'static str>,
}

/// Runs a topic subcommand against `server`.
pub fn run(args: TopicArgs, server: &str) -> anyhow::Result<()> {
    let topic = match &args.action {
        TopicAction::Create(create) => Some(create.name.as_str()),
        TopicAction::Alter(alter) => Some(alter.name.as_str()),
        TopicAction::Describe(describe) => Some(describe.name.as_str()),
        TopicAction::Delete(delete) => Some(delete.name.as_str()),
        TopicAction::DeleteRecords(delete) => Some(delete.name.as_str()),
        TopicAction::List(_) => None,
    };
    let mut client =
        Client::connect(server).map_err(|error| CliError::connecting(server, topic, error))?;
    let about = |error| CliError::about(topic, error);
    let mut out = io::stdout().lock();
    match &args.action {
        TopicAction::Create(create) => {
            let created = client
                .create_topic(&create_topic::Request {
                    name: &create.name,
                    partitions: create.partitions,
                    retention_ms: create.retention_ms,
                    retention_bytes: create.retention_bytes,
                    segment_bytes: create.segment_bytes,
                })
                .map_err(about)?;
            writeln!(out, "created topic {}", describe_config(&created))?;
        }
        TopicAction::Alter(alter) => {
            let altered = client
                .alter_topic(&alter_topic::Request {
                    name: &alter.name,
                    retention_ms: alter.retention_ms,
                    retention_bytes: alter.retention_bytes,
                    partitions: alter.partitions,
                })
                .map_err(about)?;
            writeln!(out, "altered topic {}", describe_config(&altered))?;
        }
        TopicAction::List(list) => {
            let topics = client.list_topics().map_err(about)?;
            print_list(&mut out, &topics, list.format)?;
        }
        TopicAction::Describe(describe) => {
            let metadata = client.metadata(&[&describe.name]).map_err(about)?;
            let partitions = metadata
                .into_iter()
                .find(|topic| topic.name == describe.name)
                .ok_or_else(|| CliError::UnknownTopic {
                    topic: describe.name.clone(),
                })?
                .partitions;
            // The configuration comes from ListTopics; a topic deleted in between is unknown.
            let config = client
                .list_topics()
                .map_err(about)?
                .into_iter()
                .find(|topic| topic.name == describe.name)
                .ok_or_else(|| CliError::UnknownTopic {
                    topic: describe.name.clone(),
                })?;
            print_description(&mut out, &config, &partitions, describe.format)?;
        }
        TopicAction::Delete(delete) => {
            client.delete_topic(&delete.name).map_err(about)?;
            writeln!(out, "deleted topic {}", delete.name)?;
        }
        TopicAction::DeleteRecords(delete) => delete_records(&mut client, delete, &mut out)?,
    }
    out.flush()?;
    Ok(())
}

/// `topic delete-records`: prints each partition's new log start; the partitions refused
/// (past their end, say) make one error line once the others are done.
fn delete_records(
    client: &mut Client,
    args: &DeleteRecordsArgs,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let about = |error| CliError::about(Some(&args.name), error);
    let partitions: Vec<u32> = match args.partition {
        Some(partition) => vec![partition],
        None => (0..client.partition_count(&args.name).map_err(about)?).collect(),
    };
    let asked: Vec<DeleteBefore> = partitions
        .iter()
        .map(|&partition| DeleteBefore {
            partition,
            offset: args.before,
        })
        .collect();
    let results = client.delete_records(&args.name, &asked).map_err(about)?;
    let mut rows = Vec::with_capacity(results.len());
    let mut refused = Vec::new();
    for answer in results {
        match answer.result {
            Ok(log_start) => rows.push(vec![answer.entry.to_string(), log_start.to_string()]),
            Err(error) => refused.push((answer.entry, error)),
        }
    }
    if !rows.is_empty() {
        write_table(out, &["PARTITION", "LOG_START"], &rows)?;
    }
    out.flush()?;
    if let Some((partition, error)) = refused.first() {
        anyhow::bail!(
            "{} partition(s) of {} refused; first: partition {partition}: {error}",
            refused.len(),
            args.name
        );
    }
    Ok(())
}

/// "t: 4 partitions, retention_ms unlimited, ..." for one topic.
fn describe_config(topic: &TopicInfo) -> String {
    format!(
        "{}: {} partitions, retention_ms {}, retention_bytes {}, segment_bytes {}",
        topic.name,
        topic.partitions,
        limit(topic.retention_ms),
        limit(topic.retention_bytes),
        topic.segment_bytes
    )
}

/// `topic list` output.
fn print_list(out: &mut impl Write, topics: &[TopicInfo], format: TableFormat) -> io::Result<()> {
    match format {
        TableFormat::Table => {
            let rows: Vec<Vec<String>> = topics
                .iter()
                .map(|topic| {
                    vec![
                        topic.name.clone(),
                        topic.partitions.to_string(),
                        limit(topic.retention_ms),
                        limit(topic.retention_bytes),
                        topic.segment_bytes.to_string(),
                    ]
                })
                .collect();
            let header = [
                "NAME",
                "PARTITIONS",
                "RETENTION_MS",
                "RETENTION_BYTES",
                "SEGMENT_BYTES",
            ];
            write_table(out, &header, &rows)
        }
        TableFormat::Json => {
            let json: Vec<TopicJson<'_>> = topics.iter().map(|t| topic_json(t, None)).collect();
            serde_json::to_writer_pretty(&mut *out, &json)?;
            writeln!(out)
        }
    }
}

/// `topic describe` output.
fn print_description(
    out: &mut impl Write,
    config: &TopicInfo,
    partitions: &[PartitionInfo],
    format: TableFormat,
) -> io::Result<()> {
    match format {
        TableFormat::Table => {
            writeln!(out, "topic {}", describe_config(config))?;
            let rows: Vec<Vec<String>> = partitions
                .iter()
                .map(|p| {
                    vec![
                        p.partition.to_string(),
                        p.shard.to_string(),
                        p.log_start_offset.to_string(),
                        p.high_watermark.to_string(),
                        (p.high_watermark - p.log_start_offset).max(0).to_string(),
                        p.size_bytes.to_string(),
                        partition_error(p).unwrap_or("").to_owned(),
                    ]
                })
                .collect();
            let header = [
                "PARTITION",
                "SHARD",
                "LOG_START",
                "HIGH_WATERMARK",
                "RECORDS",
                "BYTES",
                "ERROR",
            ];
            write_table(out, &header, &rows)
        }
        TableFormat::Json => {
            let partitions = partitions
                .iter()
                .map(|p| PartitionJson {
                    partition: p.partition,
                    shard: p.shard,
                    log_start_offset: p.log_start_offset,
                    high_watermark: p.high_watermark,
                    size_bytes: p.size_bytes,
                    error: partition_error(p),
                })
                .collect();
            serde_json::to_writer_pretty(&mut *out, &topic_json(config, Some(partitions)))?;
            writeln!(out)
        }
    }
}

/// The error code name of an unhealthy partition.
fn partition_error(partition: &PartitionInfo) -> Option<&'static str> {
    (!partition.error.is_ok()).then(|| partition.error.name())
}

fn topic_json(topic: &TopicInfo, partitions: Option<Vec<PartitionJson>>) -> TopicJson<'_> {
    TopicJson {
        name: &topic.name,
        partition_count: topic.partitions,
        retention_ms: topic.retention_ms,
        retention_bytes: topic.retention_bytes,
        segment_bytes: topic.segment_bytes,
        partitions,
    }
}
