//! `ringlog group list|describe|reset|config|delete`: consumer-group and share-group
//! administration.

use std::io::{self, Write};

use clap::{Args, Subcommand};
use ringlog_net::client::{Client, GroupDescription, ShareGroupSettings};
use ringlog_net::error_code::ErrorCode;
use ringlog_net::message::configure_group;
use ringlog_net::message::group::GroupKind;
use ringlog_net::message::list_offsets::OffsetSpec;

use super::consume::StartAt;
use super::error::CliError;
use super::table::write_table;

/// Options of `ringlog group`.
#[derive(Debug, Args)]
pub struct GroupArgs {
    #[command(subcommand)]
    action: GroupAction,
}

/// The group subcommands.
#[derive(Debug, Subcommand)]
enum GroupAction {
    /// List every consumer and share group.
    List,
    /// Show a group: members and their partitions, committed offsets and lag (consumer
    /// groups), or settings and in-flight records per partition (share groups).
    Describe(DescribeArgs),
    /// Move a group's offsets (consumer group) or share start offsets (share group) of a
    /// topic; a consumer group only while it has no members, a share group's partition only
    /// while none of its records are acquired.
    Reset(ResetArgs),
    /// Configure a share group (created when it does not exist).
    Config(ConfigArgs),
    /// Delete a group with its committed offsets or share state; only while it has no
    /// members (a share group: none that fetched recently).
    Delete(DeleteArgs),
    /// Forget a consumer group's committed offsets of a topic (as kafka-consumer-groups
    /// --delete-offsets); refused while a member of the group subscribes to the topic.
    DeleteOffsets(DeleteOffsetsArgs),
}

/// Options of `ringlog group delete-offsets`.
#[derive(Debug, Args)]
struct DeleteOffsetsArgs {
    /// Group name.
    group: String,
    /// Topic whose offsets go.
    #[arg(long, value_name = "T")]
    topic: String,
    /// Only this partition (default: every partition of the topic).
    #[arg(long, value_name = "P")]
    partition: Option<u32>,
}

/// Options of `ringlog group delete`.
#[derive(Debug, Args)]
struct DeleteArgs {
    /// Group name.
    group: String,
}

/// Options of `ringlog group describe`.
#[derive(Debug, Args)]
struct DescribeArgs {
    /// Group name.
    group: String,
}

/// Options of `ringlog group reset`.
#[derive(Debug, Args)]
struct ResetArgs {
    /// Group name.
    group: String,
    /// Topic whose offsets move.
    #[arg(long, value_name = "T")]
    topic: String,
    /// Only this partition (default: every partition of the topic).
    #[arg(long, value_name = "P")]
    partition: Option<u32>,
    /// Where to: `earliest`, `latest`, an OFFSET, or `@UNIX_MS` (the first record at or after
    /// that time).
    #[arg(long, value_name = "WHERE")]
    to: StartAt,
}

/// Options of `ringlog group config`.
#[derive(Debug, Args)]
struct ConfigArgs {
    /// Share group name.
    group: String,
    /// How long an acquired record stays locked to its consumer (default 30000).
    #[arg(long, value_name = "MS")]
    lock_ms: Option<u32>,
    /// Deliveries after which a record is archived (default 5).
    #[arg(long, value_name = "N")]
    delivery_limit: Option<u16>,
    /// Topic archived records are copied to; an empty value removes it.
    #[arg(long, value_name = "T")]
    dead_letter_topic: Option<String>,
    /// Most records in flight per partition (default: the server's).
    #[arg(long, value_name = "N")]
    in_flight_records_max: Option<u32>,
}

/// Runs a group subcommand against `server`.
pub fn run(args: GroupArgs, server: &str) -> anyhow::Result<()> {
    let mut client =
        Client::connect(server).map_err(|error| CliError::connecting(server, None, error))?;
    let mut out = io::stdout().lock();
    match args.action {
        GroupAction::List => list(&mut client, &mut out)?,
        GroupAction::Describe(args) => {
            let description = client
                .describe_group(&args.group)
                .map_err(|error| CliError::about_group(&args.group, error))?;
            describe(&description, &mut out)?;
        }
        GroupAction::Reset(args) => reset(&mut client, &args, &mut out)?,
        GroupAction::Config(args) => {
            let settings = client
                .configure_share_group(&configure_group::Request {
                    group: &args.group,
                    lock_ms: args.lock_ms,
                    delivery_limit: args.delivery_limit,
                    dead_letter_topic: args.dead_letter_topic.as_deref(),
                    in_flight_records_max: args.in_flight_records_max,
                })
                .map_err(|error| CliError::about(args.dead_letter_topic.as_deref(), error))?;
            write_settings(&mut out, &settings)?;
        }
        GroupAction::Delete(args) => {
            client
                .delete_group(&args.group)
                .map_err(|error| CliError::about_group(&args.group, error))?;
            writeln!(out, "deleted group {}", args.group)?;
        }
        GroupAction::DeleteOffsets(args) => delete_offsets(&mut client, &args, &mut out)?,
    }
    out.flush()?;
    Ok(())
}

/// `group delete-offsets`: says which partitions' offsets went; the partitions refused make
/// one error line once the others are done.
fn delete_offsets(
    client: &mut Client,
    args: &DeleteOffsetsArgs,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let partitions: Vec<u32> = args.partition.into_iter().collect();
    let outcomes = client
        .delete_group_offsets(&args.group, &args.topic, &partitions)
        .map_err(|error| match error.code() {
            Some(ErrorCode::UnknownTopic) => CliError::about(Some(&args.topic), error),
            _ => CliError::about_group(&args.group, error),
        })?;
    let (deleted, refused): (Vec<_>, Vec<_>) = outcomes
        .into_iter()
        .partition(|(_, outcome)| outcome.is_ok());
    if !deleted.is_empty() {
        let listed: Vec<String> = deleted
            .iter()
            .map(|(partition, _)| format!("{}/{partition}", args.topic))
            .collect();
        writeln!(
            out,
            "deleted the committed offsets of group {} on {}",
            args.group,
            listed.join(", ")
        )?;
    }
    out.flush()?;
    if let Some((partition, Err(error))) = refused.first() {
        anyhow::bail!(
            "{} partition(s) of {} refused; first: partition {partition}: {error}",
            refused.len(),
            args.topic
        );
    }
    Ok(())
}

fn kind_name(kind: GroupKind) -> &'static str {
    match kind {
        GroupKind::Consumer => "consumer",
        GroupKind::Share => "share",
    }
}

fn list(client: &mut Client, out: &mut impl Write) -> anyhow::Result<()> {
    let groups = client.list_groups().map_err(CliError::from)?;
    let rows: Vec<Vec<String>> = groups
        .iter()
        .map(|g| {
            vec![
                g.group.clone(),
                kind_name(g.kind).to_owned(),
                g.state.name().to_owned(),
                g.member_count.to_string(),
            ]
        })
        .collect();
    write_table(out, &["GROUP", "KIND", "STATE", "MEMBERS"], &rows)?;
    Ok(())
}

/// "orders:0-2,5 events:3" for an assignment (runs of consecutive partitions as ranges, so
/// that a member of a topic with thousands of partitions still fits a line).
fn partitions_text(assignment: &[(String, Vec<u32>)]) -> String {
    let topics: Vec<String> = assignment
        .iter()
        .map(|(topic, partitions)| format!("{topic}:{}", ranges_text(partitions)))
        .collect();
    if topics.is_empty() {
        "-".to_owned()
    } else {
        topics.join(" ")
    }
}

/// "0-2,5" for [0, 1, 2, 5] (sorted partitions).
fn ranges_text(partitions: &[u32]) -> String {
    let mut runs: Vec<(u32, u32)> = Vec::new();
    for &partition in partitions {
        match runs.last_mut() {
            Some((_, last)) if last.checked_add(1) == Some(partition) => *last = partition,
            _ => runs.push((partition, partition)),
        }
    }
    let texts: Vec<String> = runs
        .iter()
        .map(|&(first, last)| match last - first {
            0 => first.to_string(),
            1 => format!("{first},{last}"),
            _ => format!("{first}-{last}"),
        })
        .collect();
    texts.join(",")
}

/// A value that may be unknown (-1) for people.
fn known(value: i64) -> String {
    if value < 0 {
        "-".to_owned()
    } else {
        value.to_string()
    }
}

fn describe(description: &GroupDescription, out: &mut impl Write) -> anyhow::Result<()> {
    writeln!(
        out,
        "group {}  kind {}  state {}  members {}",
        description.group,
        kind_name(description.kind),
        description.state.name(),
        description.members.len()
    )?;
    if description.kind == GroupKind::Consumer {
        writeln!(
            out,
            "generation {}",
            known(i64::from(description.generation))
        )?;
    }
    if let Some(settings) = &description.share_config {
        write_settings(out, settings)?;
    }
    writeln!(out)?;
    // Static members' instance ids, in a column of their own only when there are some.
    let any_static = description.members.iter().any(|m| m.instance_id.is_some());
    let rows: Vec<Vec<String>> = description
        .members
        .iter()
        .map(|m| {
            let mut row = vec![m.member_id.clone()];
            if description.kind == GroupKind::Consumer {
                row.push(if m.client_id.is_empty() {
                    "-".to_owned()
                } else {
                    m.client_id.clone()
                });
                row.push(partitions_text(&m.assignment));
                if any_static {
                    row.push(m.instance_id.clone().unwrap_or_else(|| "-".to_owned()));
                }
            }
            row
        })
        .collect();
    if description.kind == GroupKind::Consumer {
        let headers: &[&str] = if any_static {
            &["MEMBER", "CLIENT", "PARTITIONS", "INSTANCE"]
        } else {
            &["MEMBER", "CLIENT", "PARTITIONS"]
        };
        write_table(out, headers, &rows)?;
        writeln!(out)?;
        let rows: Vec<Vec<String>> = description
            .offsets
            .iter()
            .map(|o| {
                vec![
                    o.topic.clone(),
                    o.partition.to_string(),
                    known(o.committed_offset),
                    known(o.high_watermark),
                    known(o.lag),
                ]
            })
            .collect();
        write_table(
            out,
            &["TOPIC", "PARTITION", "COMMITTED", "HIGH_WATERMARK", "LAG"],
            &rows,
        )?;
    } else {
        write_table(out, &["MEMBER"], &rows)?;
        writeln!(out)?;
        let rows: Vec<Vec<String>> = description
            .share_partitions
            .iter()
            .map(|s| {
                vec![
                    s.topic.clone(),
                    s.partition.to_string(),
                    known(s.start_offset),
                    known(s.high_watermark),
                    s.in_flight_records.to_string(),
                    s.acquired_records.to_string(),
                ]
            })
            .collect();
        let header = [
            "TOPIC",
            "PARTITION",
            "START_OFFSET",
            "HIGH_WATERMARK",
            "IN_FLIGHT",
            "ACQUIRED",
        ];
        write_table(out, &header, &rows)?;
    }
    Ok(())
}

fn write_settings(out: &mut impl Write, settings: &ShareGroupSettings) -> io::Result<()> {
    writeln!(
        out,
        "lock_ms {}  delivery_limit {}  dead_letter_topic {}  in_flight_records_max {}",
        settings.lock_ms,
        settings.delivery_limit,
        settings.dead_letter_topic.as_deref().unwrap_or("-"),
        settings.in_flight_records_max
    )
}

fn reset(client: &mut Client, args: &ResetArgs, out: &mut impl Write) -> anyhow::Result<()> {
    let spec = match args.to {
        StartAt::Earliest => OffsetSpec::Earliest,
        StartAt::Latest => OffsetSpec::Latest,
        StartAt::Offset(offset) => OffsetSpec::Offset(offset),
        StartAt::Timestamp(ms) => OffsetSpec::Timestamp(ms),
    };
    let partitions: Vec<u32> = args.partition.into_iter().collect();
    let results = client
        .reset_group_offsets(&args.group, &args.topic, &partitions, spec)
        .map_err(|error| CliError::about(Some(&args.topic), error))?;
    let mut failed = None;
    let rows: Vec<Vec<String>> = results
        .iter()
        .map(|r| {
            let outcome = match &r.result {
                Ok(offset) => offset.to_string(),
                Err(error) => {
                    failed.get_or_insert_with(|| error.clone());
                    format!("error: {error}")
                }
            };
            vec![args.topic.clone(), r.entry.to_string(), outcome]
        })
        .collect();
    write_table(out, &["TOPIC", "PARTITION", "OFFSET"], &rows)?;
    match failed {
        Some(error) => Err(CliError::from(error).into()),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assignments_read_compactly() {
        let assignment = vec![
            ("orders".to_owned(), vec![0, 1]),
            ("events".to_owned(), vec![3]),
        ];
        assert_eq!(partitions_text(&assignment), "orders:0,1 events:3");
        let wide = vec![("t".to_owned(), vec![0, 1, 2, 3, 5, 7, 8, 9])];
        assert_eq!(partitions_text(&wide), "t:0-3,5,7-9");
        assert_eq!(partitions_text(&[]), "-");
        assert_eq!(known(-1), "-");
    }
}
