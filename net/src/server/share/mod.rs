//! Share groups (KIP-932): records of a partition handed out one by one to any number of
//! members, under time-limited locks, with acknowledgements, redelivery, a delivery limit and
//! a dead-letter topic.
//!
//! A share partition lives on the shard that owns the topic partition ([`partition`]), with
//! its in-flight window ([`window`]) persisted in the partition's group state file. ShareFetch
//! and ShareAcknowledge go to that shard; the share group's configuration comes from its
//! coordinator (created with defaults by the first ShareFetch) and is cached on every shard.

pub(crate) mod dead_letter;
pub(crate) mod handlers;
mod members;
pub(crate) mod partition;
pub(crate) mod window;

use std::rc::Rc;

use self::partition::{AckResult, FetchAsk, ShareFetched, ShareSummary};
use super::group::meta::ShareConfig;
use super::group::partition_state::PartitionGroups;
use super::group::{call, unexpected, GroupCall, GroupReturn, ShareAckArgs, ShareFetchArgs};
use super::latch::Latch;
use super::message::Failure;
use super::shard::Shard;
use crate::error_code::ErrorCode;

/// Times [`config`] asks the coordinator again when a group deletion went by during its call.
const CONFIG_ATTEMPTS_MAX: usize = 3;

/// The configuration of share group `group`, asking its coordinator when this shard does not
/// know it yet (which creates the group when `create` is set).
pub(crate) async fn config(
    shard: &Rc<Shard>,
    group: &str,
    create: bool,
) -> Result<Rc<ShareConfig>, Failure> {
    if let Some(config) = shard.groups.share_config(group) {
        return Ok(config);
    }
    super::group::meta::validate_group_name(group)?;
    let coordinator = shard.groups.coordinator_of(group);
    for _ in 0..CONFIG_ATTEMPTS_MAX {
        let forgotten = shard.groups.forgotten();
        let message = GroupCall::ShareGroup {
            group: group.to_string(),
            create,
        };
        let GroupReturn::Config(result) = call(shard, coordinator, message).await else {
            return Err(unexpected());
        };
        let config = result?;
        if shard.groups.forgotten() != forgotten {
            // A deletion (maybe of this group) was applied here after the coordinator
            // answered: the answer may describe a group that no longer exists, and caching
            // it would let this shard create its share partitions again. Ask again.
            continue;
        }
        // The coordinator sends every change to every shard; this answer only fills the
        // cache when no such message arrived first.
        return Ok(shard.groups.learn_share_config(group, config));
    }
    Err(Failure::new(
        ErrorCode::Throttled,
        format!("share group {group} was being deleted while this request looked it up; retry"),
    ))
}

/// The group state of an owned partition.
fn local(shard: &Shard, topic: &str, partition: u32) -> Result<Rc<PartitionGroups>, Failure> {
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

/// ShareFetch on the partition's owner; its wait for records ends once `cancelled` is set
/// (the client hung up), acquiring nothing for a member that is gone.
pub(crate) async fn fetch(
    shard: &Rc<Shard>,
    args: ShareFetchArgs,
    cancelled: &Latch,
) -> Result<ShareFetched, Failure> {
    let state = local(shard, &args.topic, args.partition)?;
    let config = config(shard, &args.group, true).await?;
    let share = state.share_or_create(&args.group, &config)?;
    share
        .fetch(
            shard,
            &args.member_id,
            &args.acks,
            FetchAsk {
                max_records: args.max_records,
                max_wait_ms: args.max_wait_ms,
                max_bytes: args.max_bytes,
            },
            cancelled,
        )
        .await
}

/// ShareAcknowledge on the partition's owner.
pub(crate) async fn acknowledge(
    shard: &Rc<Shard>,
    args: ShareAckArgs,
) -> Result<Vec<AckResult>, Failure> {
    let state = local(shard, &args.topic, args.partition)?;
    if args.ranges.is_empty() && state.share(&args.group).is_none() {
        // A member leaving a partition its group never read: nothing to settle or release,
        // and no share partition to start for it.
        return Ok(Vec::new());
    }
    let config = config(shard, &args.group, false).await?;
    let share = state.share_or_create(&args.group, &config)?;
    Ok(share
        .acknowledge(shard, &args.member_id, &args.ranges, args.leave)
        .await)
}

/// The share partitions of `group` on this shard, and their active members.
pub(crate) fn describe(shard: &Shard, group: &str) -> (Vec<ShareSummary>, Vec<String>) {
    let mut summaries = Vec::new();
    let mut members = Vec::new();
    for state in shard.groups.all_partitions() {
        if let Some(share) = state.share(group) {
            summaries.push(share.summary());
            members.extend(share.active_members());
        }
    }
    (summaries, members)
}
