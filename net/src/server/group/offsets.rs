//! What a partition's owner does with group offsets: store commits durably, read them back
//! with the high watermark (lag), and reset them (consumer groups) or restart share
//! partitions (share groups).

use std::rc::Rc;

use super::partition_state::{store_failure, PartitionGroups};
use super::{CommitResults, OffsetEntry, PartitionCommit, ResetResults, ResetTo, TopicFilter};
use crate::error_code::ErrorCode;
use crate::message::group::GroupKind;
use crate::server::message::{Failure, OffsetQuery};
use crate::server::partition_ops;
use crate::server::shard::Shard;
use crate::server::state_store::Durable;

/// The group state of an owned partition, or the error a client should see.
fn local(shard: &Shard, topic: &str, partition: u32) -> Result<Rc<PartitionGroups>, Failure> {
    // local_log gives the precise error (unknown topic, unknown partition, not open here).
    shard.local_log(topic, partition)?;
    shard.groups.partition(topic, partition).ok_or_else(|| {
        Failure::new(
            ErrorCode::Unknown,
            format!(
                "group state of {topic}/{partition} is not open on shard {}",
                shard.id
            ),
        )
    })
}

/// Stores `offsets` of `group` for partitions of `topic` owned here; answers once each is
/// durable.
pub(super) async fn store(
    shard: &Rc<Shard>,
    group: &str,
    topic: &str,
    offsets: Vec<PartitionCommit>,
) -> Result<CommitResults, Failure> {
    let mut pending: Vec<(u32, Result<Durable, Failure>)> = Vec::with_capacity(offsets.len());
    for commit in offsets {
        let partition = commit.partition;
        let durable = local(shard, topic, partition)
            .and_then(|state| state.commit(group, commit.offset, commit.metadata));
        pending.push((partition, durable));
    }
    let mut outcomes = Vec::with_capacity(pending.len());
    for (partition, durable) in pending {
        let outcome = match durable {
            Ok(durable) => durable.await.map_err(store_failure).err(),
            Err(failure) => Some(failure),
        };
        outcomes.push((partition, outcome));
    }
    Ok(vec![(topic.to_string(), outcomes)])
}

/// Forgets `group`'s committed offsets of `partitions` of `topic` owned here (OffsetDelete);
/// answers once each is durable. A partition where the group committed nothing is a success.
pub(super) async fn forget(
    shard: &Rc<Shard>,
    group: &str,
    topic: &str,
    partitions: Vec<u32>,
) -> Result<CommitResults, Failure> {
    let mut pending: Vec<(u32, Result<Option<Durable>, Failure>)> =
        Vec::with_capacity(partitions.len());
    for partition in partitions {
        let durable = local(shard, topic, partition).and_then(|state| state.forget(group));
        pending.push((partition, durable));
    }
    let mut outcomes = Vec::with_capacity(pending.len());
    for (partition, durable) in pending {
        let outcome = match durable {
            Ok(Some(durable)) => durable.await.map_err(store_failure).err(),
            Ok(None) => None,
            Err(failure) => Some(failure),
        };
        outcomes.push((partition, outcome));
    }
    Ok(vec![(topic.to_string(), outcomes)])
}

fn entry(state: &PartitionGroups, group: &str) -> OffsetEntry {
    let (committed, metadata) = state
        .committed_with_metadata(group)
        .map_or((-1, None), |c| (c.offset, c.metadata));
    OffsetEntry {
        topic: state.topic.clone(),
        partition: state.partition,
        committed,
        metadata,
        high_watermark: state.log.high_watermark(),
        failure: None,
    }
}

/// Offsets of `group` here: of the partitions in `topics`, or of every owned partition where
/// the group committed.
pub(super) fn load(
    shard: &Shard,
    group: &str,
    topics: Option<TopicFilter>,
) -> Result<Vec<OffsetEntry>, Failure> {
    let Some(topics) = topics else {
        return Ok(shard
            .groups
            .all_partitions()
            .iter()
            .filter(|state| state.committed(group).is_some())
            .map(|state| entry(state, group))
            .collect());
    };
    let mut entries = Vec::new();
    for (topic, partitions) in topics {
        for partition in partitions {
            match local(shard, &topic, partition) {
                Ok(state) => entries.push(entry(&state, group)),
                Err(failure) => entries.push(OffsetEntry {
                    topic: topic.clone(),
                    partition,
                    committed: -1,
                    metadata: None,
                    high_watermark: -1,
                    failure: Some(failure),
                }),
            }
        }
    }
    Ok(entries)
}

/// Resolves where `to` points in an owned partition.
async fn resolve(
    shard: &Rc<Shard>,
    topic: &str,
    partition: u32,
    to: ResetTo,
) -> Result<i64, Failure> {
    let query = match to {
        ResetTo::Earliest => OffsetQuery::Earliest,
        ResetTo::Latest => OffsetQuery::Latest,
        ResetTo::Timestamp(ms) => OffsetQuery::Timestamp(ms),
        ResetTo::Offset(offset) => {
            let log = shard.local_log(topic, partition)?;
            let (start, end) = (log.log_start_offset(), log.high_watermark());
            if !(start..=end).contains(&offset) {
                return Err(Failure::new(
                    ErrorCode::OffsetOutOfRange,
                    format!(
                        "{topic}/{partition} holds offsets {start}..{end}; {offset} is outside"
                    ),
                ));
            }
            return Ok(offset);
        }
    };
    partition_ops::list_offset(shard, topic, partition, query)
        .await
        .map(|(offset, _)| offset)
}

/// Moves `group` to `to` in the given owned partitions of `topic`.
pub(super) async fn reset(
    shard: &Rc<Shard>,
    group: &str,
    kind: GroupKind,
    topic: &str,
    partitions: Vec<u32>,
    to: ResetTo,
) -> Result<ResetResults, Failure> {
    let mut results = Vec::with_capacity(partitions.len());
    for partition in partitions {
        let outcome = reset_one(shard, group, kind, topic, partition, to).await;
        results.push((partition, outcome));
    }
    Ok(results)
}

async fn reset_one(
    shard: &Rc<Shard>,
    group: &str,
    kind: GroupKind,
    topic: &str,
    partition: u32,
    to: ResetTo,
) -> Result<i64, Failure> {
    let state = local(shard, topic, partition)?;
    let offset = resolve(shard, topic, partition, to).await?;
    let durable = match kind {
        // As Kafka's reset tool, a reset commits without metadata.
        GroupKind::Consumer => state.commit(group, offset, None)?,
        GroupKind::Share => {
            let config = shard.groups.share_config(group).ok_or_else(|| {
                Failure::new(ErrorCode::UnknownGroup, format!("unknown group {group}"))
            })?;
            state.share_or_create(group, &config)?.reset(offset)?
        }
    };
    durable.await.map_err(store_failure)?;
    Ok(offset)
}
