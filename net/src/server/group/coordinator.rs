//! What the coordinator shard of a group does: membership (join, heartbeat, leave, session
//! expiry), routing commits and offset reads to partition owners, resets, descriptions and
//! configuration.
//!
//! A JoinGroup waits here until its rebalance completes; a timer task per coordinator shard
//! (every [`REAPER_TICK`]) removes members whose session expired and completes rebalances
//! whose deadline passed.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::time::{Duration, Instant};

use ringlog_engine::reactor::{self, time};

use super::consumer_membership::{self, ConsumerBeat, ConsumerBeatAnswer};
use super::membership::{is_cooperative, Join, JoinOutcome, MemberRef, StaleGeneration};
use super::meta::{self, ShareConfig};
use super::share_membership::{self, ShareAssignment, ShareBeat, ShareBeatAnswer};
use super::{
    call, join_all, unexpected, CommitResults, CommitTopics, ConfigureArgs, Group, GroupCall,
    GroupDescription, GroupReturn, JoinArgs, Joined, Lifecycle, MemberInfo, OffsetEntry,
    PartitionCommit, ResetResults, ResetTo, TopicFilter,
};
use crate::error_code::ErrorCode;
use crate::message::group::{GroupKind, GroupState};
use crate::server::message::Failure;
use crate::server::shard::{unknown_topic, Shard};
use crate::server::share::partition::ShareSummary;

/// How often a coordinator looks for expired sessions and overdue rebalances.
const REAPER_TICK: Duration = Duration::from_millis(100);
/// Shortest session timeout accepted.
const SESSION_TIMEOUT_MS_MIN: u32 = 100;
/// Longest session timeout accepted, and longest a rebalance waits for one member (a longer
/// rebalance timeout is taken as this one).
const TIMEOUT_MS_MAX: u32 = 3_600_000;
/// Longest heartbeat interval suggested to members.
const HEARTBEAT_INTERVAL_MS_MAX: u32 = 3_000;
/// Longest client id (and member id, and instance id) accepted: they are kept while the member
/// is in the group.
const CLIENT_ID_BYTES_MAX: usize = 255;
/// Most topics one member may subscribe to.
const SUBSCRIBED_TOPICS_MAX: usize = 1_000;
/// Most assignor protocols one Kafka member may offer, and the longest name of one: they are
/// kept while the member is in the group, and every join compares them with every member's
/// (clients offer one to three).
const PROTOCOLS_MAX: usize = 32;
const PROTOCOL_NAME_BYTES_MAX: usize = 255;

/// Whether a member's session timeout is one the coordinator accepts: the Kafka front door
/// answers INVALID_SESSION_TIMEOUT before calling it otherwise.
pub(crate) fn session_timeout_accepted(session_timeout_ms: u32) -> bool {
    (SESSION_TIMEOUT_MS_MIN..=TIMEOUT_MS_MAX).contains(&session_timeout_ms)
}

/// A member refused because the group's members use the other group protocol: ringlog does
/// not convert a group between them while it has members.
fn other_protocol(name: &str, protocol: &str) -> Failure {
    Failure::new(
        ErrorCode::InvalidGroupKind,
        format!("the members of {name} use {protocol}; a group's members all use one"),
    )
}

fn unknown_group(name: &str) -> Failure {
    Failure::new(ErrorCode::UnknownGroup, format!("unknown group {name}"))
}

fn wrong_kind(group: &Group, wanted: GroupKind) -> Failure {
    let (is, api) = match wanted {
        GroupKind::Consumer => ("a share group", "consumer-group"),
        GroupKind::Share => ("a consumer group", "share-group"),
    };
    Failure::new(
        ErrorCode::InvalidGroupKind,
        format!("{} is {is}; {api} requests do not apply", group.name),
    )
}

/// The group, which must exist and not be being deleted.
fn live(shard: &Shard, name: &str) -> Result<Rc<Group>, Failure> {
    shard
        .groups
        .group(name)
        .filter(|group| group.lifecycle.get() != Lifecycle::Deleting)
        .ok_or_else(|| unknown_group(name))
}

/// The group, which must exist and be of `kind`.
fn existing(shard: &Shard, name: &str, kind: GroupKind) -> Result<Rc<Group>, Failure> {
    let group = live(shard, name)?;
    if group.kind != kind {
        return Err(wrong_kind(&group, kind));
    }
    Ok(group)
}

/// The group, created (durably) when missing.
async fn get_or_create(
    shard: &Rc<Shard>,
    name: &str,
    kind: GroupKind,
    share: ShareConfig,
) -> Result<Rc<Group>, Failure> {
    // A group being deleted is waited for, then made anew; deletion takes the map entry,
    // so this goes round at most once per deletion that completes meanwhile.
    while let Some(group) = shard.groups.group(name) {
        if group.kind != kind {
            return Err(wrong_kind(&group, kind));
        }
        wait_ready(&group).await?;
        if group.lifecycle.get() != Lifecycle::Deleted {
            return Ok(group);
        }
    }
    meta::validate_group_name(name)?;
    share.validate()?;
    let groups = &shard.groups;
    if groups.groups.borrow().len() >= groups.groups_max {
        return Err(Failure::new(
            ErrorCode::Throttled,
            format!(
                "shard {} already coordinates {} groups, its share of groups_max",
                shard.id, groups.groups_max
            ),
        ));
    }
    let group = Rc::new(Group::new(name.to_string(), kind, Rc::new(share)));
    // In the map before the write, so concurrent requests find one group.
    groups
        .groups
        .borrow_mut()
        .insert(name.to_string(), Rc::clone(&group));
    let created = create(shard, &group).await;
    if let Err(failure) = created {
        groups.groups.borrow_mut().remove(name);
        group.lifecycle.set(Lifecycle::CreateFailed);
        group.changed.notify();
        return Err(failure);
    }
    group.lifecycle.set(Lifecycle::Ready);
    group.changed.notify();
    tracing::info!(group = name, ?kind, "group created");
    ensure_reaper(shard);
    Ok(group)
}

/// Writes a new group's file and, for a share group, tells every shard its configuration.
async fn create(shard: &Rc<Shard>, group: &Group) -> Result<(), Failure> {
    meta::store(&shard.data_dir, &group.name, &group.meta())
        .await
        .map_err(|error| crate::server::shard::storage_failure("write group file", error))?;
    if group.kind == GroupKind::Share {
        broadcast_share_config(shard, group).await?;
    }
    Ok(())
}

/// Waits until a group another request is creating is ready, or one being deleted is gone.
async fn wait_ready(group: &Group) -> Result<(), Failure> {
    loop {
        let changed = group.changed.wait();
        match group.lifecycle.get() {
            Lifecycle::Ready | Lifecycle::Deleted => return Ok(()),
            Lifecycle::CreateFailed => {
                return Err(Failure::new(
                    ErrorCode::StorageError,
                    format!("creating group {} failed", group.name),
                ))
            }
            Lifecycle::Creating | Lifecycle::Deleting => changed.await,
        }
    }
}

/// The group's turn for one change (a reset, a configuration, a deletion): held until
/// dropped, however the change ends, and dropping it wakes those waiting for the turn.
struct Turn<'a> {
    group: &'a Group,
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        assert!(self.group.busy.get(), "a held turn keeps the group busy");
        self.group.busy.set(false);
        self.group.changed.notify();
    }
}

/// Waits for the group's turn for one change and takes it.
async fn take_turn(group: &Group) -> Turn<'_> {
    // Each holder ends its change, so this ends once those ahead of it have.
    while group.busy.replace(true) {
        group.changed.wait().await;
    }
    Turn { group }
}

/// [`get_or_create`], once no change of the group is under way. Joins and admin commits
/// wait here for a reset, so that they neither land in the middle of it nor act on a group
/// that a deletion waiting behind it removes.
async fn get_or_create_idle(
    shard: &Rc<Shard>,
    name: &str,
    kind: GroupKind,
) -> Result<Rc<Group>, Failure> {
    // Each turn taken meanwhile ends, and a deletion takes the group out of the map, so each
    // round waits for one change to end.
    loop {
        let defaults = ShareConfig::with_defaults(shard.groups.in_flight_default);
        let group = get_or_create(shard, name, kind, defaults).await?;
        if !group.busy.get() {
            return Ok(group);
        }
        while group.busy.get() {
            group.changed.wait().await;
        }
    }
}

/// Sends a share group's configuration to every shard.
async fn broadcast_share_config(shard: &Rc<Shard>, group: &Group) -> Result<(), Failure> {
    let config = (**group.share.borrow()).clone();
    on_every_shard(shard, || GroupCall::ShareConfigChanged {
        group: group.name.clone(),
        config: config.clone(),
    })
    .await
}

/// Runs the group call `make` builds on every shard in turn, stopping at the first failure.
async fn on_every_shard(shard: &Rc<Shard>, make: impl Fn() -> GroupCall) -> Result<(), Failure> {
    for target in 0..shard.shard_count {
        match call(shard, target, make()).await {
            GroupReturn::Done(result) => result?,
            _ => return Err(unexpected()),
        }
    }
    Ok(())
}

fn partitions_of(shard: &Shard) -> impl Fn(&str) -> Option<u32> + '_ {
    move |topic| shard.topic(topic).map(|entry| entry.config.partitions)
}

/// Completes the group's rebalance if it can, waking its waiting joins.
fn try_complete(shard: &Shard, group: &Group, now: Instant) {
    let changed = group
        .membership
        .borrow_mut()
        .try_complete(now, partitions_of(shard));
    if changed {
        group.changed.notify();
    }
}

/// Starts this shard's session timer once.
fn ensure_reaper(shard: &Rc<Shard>) {
    if !shard.groups.reaper_started.replace(true) {
        drop(reactor::spawn(run_reaper(Rc::clone(shard))));
    }
}

async fn run_reaper(shard: Rc<Shard>) {
    loop {
        time::sleep(REAPER_TICK).await;
        let now = Instant::now();
        let groups: Vec<Rc<Group>> = shard.groups.groups.borrow().values().cloned().collect();
        for group in groups {
            if group.kind != GroupKind::Consumer {
                continue;
            }
            if group.membership.borrow_mut().expire_sessions(now) {
                tracing::info!(group = %group.name, "member session expired; rebalancing");
                group.changed.notify();
            }
            if group.consumer_members.borrow_mut().expire(now) {
                tracing::info!(group = %group.name,
                    "consumer protocol member removed (session expired, or it did not revoke)");
            }
            try_complete(&shard, &group, now);
        }
    }
}

/// Clears a member's waiting flag when its JoinGroup call ends, however it ends; removes the
/// member when this call created it and ends without answering it.
struct JoinGuard<'a> {
    shard: &'a Shard,
    group: &'a Group,
    member_id: &'a str,
    /// The call gave the member its id (the request named none).
    created: bool,
    /// The call answered with the member's id and assignment.
    answered: bool,
}

impl Drop for JoinGuard<'_> {
    fn drop(&mut self) {
        let now = Instant::now();
        let mut membership = self.group.membership.borrow_mut();
        membership.join_finished(self.member_id, now);
        if !self.created || self.answered {
            return;
        }
        // Neither answer carries the id (an error answer names the request's, empty), so no
        // client can heartbeat, commit or rejoin as this member: left in the group it would
        // count as rejoined and be handed partitions that no one reads until its session
        // expires. Its client joins again as a new member.
        if membership
            .leave(&MemberRef::dynamic(self.member_id), now)
            .is_ok()
        {
            drop(membership);
            tracing::debug!(group = %self.group.name, member_id = self.member_id,
                "new member removed: its join ended unanswered");
            self.group.changed.notify();
            try_complete(self.shard, self.group, now);
        }
    }
}

/// JoinGroup: registers the member and waits for the rebalance to complete.
pub(super) async fn join(shard: &Rc<Shard>, args: JoinArgs) -> Result<Joined, Failure> {
    meta::validate_group_name(&args.group)?;
    check_join(&args)?;
    let group = get_or_create_idle(shard, &args.group, GroupKind::Consumer).await?;
    if group.uses_consumer_protocol() {
        return Err(other_protocol(
            &args.group,
            "the consumer group protocol (KIP-848)",
        ));
    }
    if !args.protocol.is_empty() && *group.protocol.borrow() != args.protocol {
        *group.protocol.borrow_mut() = args.protocol.clone();
    }
    ensure_reaper(shard);
    let now = Instant::now();
    // Kafka bounds only the session timeout, and a Java consumer sends its
    // max.poll.interval.ms here (up to Integer.MAX_VALUE): such a member joins, and a
    // rebalance waits for it as long as for any other.
    let rebalance_timeout_ms = args.rebalance_timeout_ms.min(TIMEOUT_MS_MAX);
    let rebalance_timeout = Duration::from_millis(u64::from(rebalance_timeout_ms));
    let join = Join {
        member_id: &args.member_id,
        instance_id: args.instance_id.as_deref(),
        new_member_id: shard.groups.new_member_id(&args.client_id),
        client_id: &args.client_id,
        topics: args.topics.clone(),
        session_timeout: Duration::from_millis(u64::from(args.session_timeout_ms)),
        rebalance_timeout,
        cooperative: is_cooperative(&args.protocol),
        protocols: args.protocols.clone(),
    };
    let member_id = group
        .membership
        .borrow_mut()
        .join(join, now, shard.groups.members_max)?;
    let mut guard = JoinGuard {
        shard,
        group: &group,
        member_id: &member_id,
        // A static member stays: its client joins again under its instance id and takes the
        // place back, as after a restart.
        created: args.member_id.is_empty() && args.instance_id.is_none(),
        answered: false,
    };
    try_complete(shard, &group, now);
    // The rebalance ends by its deadline (at most this member's timeout from now) plus a tick.
    let limit = now + rebalance_timeout + REAPER_TICK * 5;
    loop {
        let changed = group.changed.wait();
        let outcome = group.membership.borrow().outcome(&member_id);
        match outcome {
            JoinOutcome::Assigned {
                generation,
                assignment,
            } => {
                let heartbeat_interval_ms =
                    (args.session_timeout_ms / 3).clamp(1, HEARTBEAT_INTERVAL_MS_MAX);
                guard.answered = true;
                return Ok(Joined {
                    member_id: member_id.clone(),
                    generation,
                    heartbeat_interval_ms,
                    assignment,
                });
            }
            JoinOutcome::Removed => {
                let membership = group.membership.borrow();
                return Err(match args.instance_id.as_deref() {
                    Some(instance_id) if membership.is_fenced(instance_id, &member_id) => {
                        Failure::new(
                            ErrorCode::FencedInstanceId,
                            format!(
                                "a newer member of instance {instance_id:?} took this one's \
                                 place while it waited"
                            ),
                        )
                    }
                    _ => Failure::new(
                        ErrorCode::UnknownMember,
                        "removed from the group during the rebalance: join again",
                    ),
                });
            }
            JoinOutcome::Pending => {}
        }
        let remaining = limit.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Err(Failure::new(
                ErrorCode::RebalanceInProgress,
                "the rebalance did not complete in time: join again",
            ));
        }
        let _ = time::timeout(remaining, changed).await;
    }
}

fn check_join(args: &JoinArgs) -> Result<(), Failure> {
    let invalid = |message: String| Err(Failure::new(ErrorCode::InvalidRequest, message));
    if args.client_id.len() > CLIENT_ID_BYTES_MAX || args.member_id.len() > CLIENT_ID_BYTES_MAX {
        return invalid(format!(
            "client_id and member_id are at most {CLIENT_ID_BYTES_MAX} bytes"
        ));
    }
    if args
        .instance_id
        .as_ref()
        .is_some_and(|id| id.is_empty() || id.len() > CLIENT_ID_BYTES_MAX)
    {
        return invalid(format!(
            "an instance id has 1 to {CLIENT_ID_BYTES_MAX} bytes"
        ));
    }
    if args.protocols.len() > PROTOCOLS_MAX
        || args
            .protocols
            .iter()
            .any(|name| name.len() > PROTOCOL_NAME_BYTES_MAX)
    {
        return invalid(format!(
            "a member offers at most {PROTOCOLS_MAX} protocols, of at most \
             {PROTOCOL_NAME_BYTES_MAX} bytes each"
        ));
    }
    // No topics is a subscription too: a Kafka consumer whose pattern matches no topic yet
    // joins with none (and gets nothing assigned), as Kafka's coordinator allows.
    if args.topics.len() > SUBSCRIBED_TOPICS_MAX {
        return invalid(format!(
            "a member subscribes to at most {SUBSCRIBED_TOPICS_MAX} topics, not {}",
            args.topics.len()
        ));
    }
    if !session_timeout_accepted(args.session_timeout_ms) {
        return invalid(format!(
            "session_timeout_ms must be between {SESSION_TIMEOUT_MS_MIN} and {TIMEOUT_MS_MAX}"
        ));
    }
    if args.rebalance_timeout_ms == 0 {
        return invalid("rebalance_timeout_ms must be at least 1".to_string());
    }
    check_subscription(&args.topics)
}

/// As in Kafka, a member may subscribe to topics that do not exist (yet): they get no
/// partitions until they are created. Their names are kept with the member, so they must be
/// names a topic could have.
fn check_subscription(topics: &[String]) -> Result<(), Failure> {
    for topic in topics {
        ringlog_engine::topic::validate_name(topic)
            .map_err(|error| Failure::new(ErrorCode::InvalidRequest, error.to_string()))?;
    }
    Ok(())
}

/// Heartbeat.
pub(super) fn heartbeat(
    shard: &Shard,
    name: &str,
    member: &MemberRef,
    generation: i32,
    stale: StaleGeneration,
) -> Result<(), Failure> {
    let group = existing(shard, name, GroupKind::Consumer)?;
    let result = group
        .membership
        .borrow_mut()
        .heartbeat(member, generation, stale, Instant::now());
    result
}

/// LeaveGroup.
pub(super) fn leave(shard: &Shard, name: &str, member: &MemberRef) -> Result<(), Failure> {
    let group = existing(shard, name, GroupKind::Consumer)?;
    let now = Instant::now();
    group.membership.borrow_mut().leave(member, now)?;
    tracing::debug!(group = name, member_id = %member.member_id,
        instance_id = member.instance_id.as_deref(), "member left");
    group.changed.notify();
    try_complete(shard, &group, now);
    Ok(())
}

/// OffsetCommit: checks the member and its assignment, then stores each offset on the
/// partition's owner (durably) and reports per partition.
pub(super) async fn commit(
    shard: &Rc<Shard>,
    name: &str,
    member: &MemberRef,
    generation: i32,
    stale: StaleGeneration,
    topics: CommitTopics,
) -> Result<CommitResults, Failure> {
    let member_id = member.member_id.as_str();
    // Generation -1 commits from outside group management (an assign() consumer, an admin
    // tool): accepted while the group has no members, member id or not, as Kafka does.
    let has_members =
        existing(shard, name, GroupKind::Consumer).is_ok_and(|group| group.has_members());
    let standalone = generation < 0 && (member_id.is_empty() || !has_members);
    let member_id = if standalone { "" } else { member_id };
    let group = if standalone {
        let group = get_or_create_idle(shard, name, GroupKind::Consumer).await?;
        if group.has_members() {
            return Err(Failure::new(
                ErrorCode::GroupNotEmpty,
                format!("{name} has members; only they may commit"),
            ));
        }
        group
    } else {
        let group = existing(shard, name, GroupKind::Consumer)?;
        if group.uses_consumer_protocol() {
            // The generation field carries the member's epoch (KIP-848).
            group.consumer_members.borrow_mut().check_committer(
                member_id,
                generation,
                Instant::now(),
            )?;
        } else {
            group.membership.borrow_mut().check_committer(
                member,
                generation,
                stale,
                Instant::now(),
            )?;
        }
        group
    };
    // In use: a group that only ever commits (manual assignment) is not idle.
    group.empty_since.set(None);
    // Check every entry; route the good ones to their owners, grouped by owner. A routed entry
    // reads "no answer" until its owner's outcome replaces it.
    let no_answer = Failure::new(
        ErrorCode::Unknown,
        "internal: no answer from the partition owner",
    );
    let mut results: CommitResults = Vec::with_capacity(topics.len());
    let mut by_owner: BTreeMap<(usize, String), Vec<PartitionCommit>> = BTreeMap::new();
    for (topic, partitions) in topics {
        let mut entries = Vec::with_capacity(partitions.len());
        for commit in partitions {
            let partition = commit.partition;
            let checked = check_commit(shard, &group, member_id, &topic, partition, commit.offset);
            if checked.is_ok() {
                by_owner
                    .entry((shard.owner(&topic, partition), topic.clone()))
                    .or_default()
                    .push(commit);
            }
            entries.push((
                partition,
                Some(checked.err().unwrap_or_else(|| no_answer.clone())),
            ));
        }
        results.push((topic, entries));
    }
    let mut calls: Vec<Pin<Box<dyn Future<Output = GroupReturn>>>> = Vec::new();
    let mut routes: Vec<(String, Vec<u32>)> = Vec::new();
    for ((owner, topic), offsets) in by_owner {
        routes.push((topic.clone(), offsets.iter().map(|c| c.partition).collect()));
        let message = GroupCall::StoreOffsets {
            group: name.to_string(),
            topic,
            offsets,
        };
        calls.push(Box::pin(call(shard, owner, message)));
    }
    for ((topic, routed), answer) in routes.iter().zip(join_all(calls).await) {
        merge_answer(&mut results, topic, routed, answer);
    }
    Ok(results)
}

/// An owner's answer about the `routed` partitions of `topic` (its per-partition outcomes, or
/// one failure for all) put into the request-ordered `results`.
fn merge_answer(results: &mut CommitResults, topic: &str, routed: &[u32], answer: GroupReturn) {
    let stored: Vec<(u32, Option<Failure>)> = match answer {
        GroupReturn::Committed(Ok(stored)) => stored
            .into_iter()
            .flat_map(|(_, entries)| entries)
            .collect(),
        GroupReturn::Committed(Err(failure)) => {
            routed.iter().map(|p| (*p, Some(failure.clone()))).collect()
        }
        _ => routed.iter().map(|p| (*p, Some(unexpected()))).collect(),
    };
    merge_stored(results, topic, routed, stored);
}

fn check_commit(
    shard: &Shard,
    group: &Group,
    member_id: &str,
    topic: &str,
    partition: u32,
    offset: i64,
) -> Result<(), Failure> {
    known_partition(shard, topic, partition)?;
    if offset < 0 {
        return Err(Failure::new(
            ErrorCode::InvalidRequest,
            format!("offset {offset} is negative"),
        ));
    }
    if !member_id.is_empty() && !group.owns(member_id, topic, partition) {
        return Err(Failure::new(
            ErrorCode::NotAssigned,
            format!("{topic}/{partition} is not assigned to {member_id}"),
        ));
    }
    Ok(())
}

/// Ok when `topic` exists and has `partition`.
fn known_partition(shard: &Shard, topic: &str, partition: u32) -> Result<(), Failure> {
    let entry = shard.topic(topic).ok_or_else(|| unknown_topic(topic))?;
    if partition >= entry.config.partitions {
        return Err(Failure::new(
            ErrorCode::UnknownPartition,
            format!("topic {topic} has no partition {partition}"),
        ));
    }
    Ok(())
}

/// Puts an owner's per-partition outcomes into the request-ordered results.
fn merge_stored(
    results: &mut CommitResults,
    topic: &str,
    routed: &[u32],
    stored: Vec<(u32, Option<Failure>)>,
) {
    // By partition: a commit may name tens of thousands, and a scan per partition would make
    // the merge quadratic on the shard thread.
    let routed: HashSet<u32> = routed.iter().copied().collect();
    let mut by_partition: HashMap<u32, Option<Failure>> = HashMap::with_capacity(stored.len());
    for (partition, outcome) in stored {
        // The first outcome of a partition named twice, as a scan would find.
        by_partition.entry(partition).or_insert(outcome);
    }
    let stored = by_partition;
    for (_, entries) in results.iter_mut().filter(|(t, _)| t == topic) {
        for (partition, outcome) in entries.iter_mut() {
            if !routed.contains(partition) {
                continue;
            }
            if let Some(stored) = stored.get(partition) {
                outcome.clone_from(stored);
            }
        }
    }
}

/// OffsetDelete: forgets `group`'s committed offsets of `partitions` of `topic` on their
/// owners, durably, and reports per partition. As in Kafka, none is forgotten while a member
/// subscribes to the topic (each partition answers GroupSubscribedToTopic), and a partition
/// the topic lacks is UnknownPartition.
pub(super) async fn delete_offsets(
    shard: &Rc<Shard>,
    name: &str,
    topic: &str,
    partitions: Vec<u32>,
) -> Result<CommitResults, Failure> {
    let group = existing(shard, name, GroupKind::Consumer)?;
    let refuse_all = |failure: Failure| {
        let outcomes = partitions
            .iter()
            .map(|&partition| (partition, Some(failure.clone())))
            .collect();
        Ok(vec![(topic.to_string(), outcomes)])
    };
    if group.subscribes(topic) {
        return refuse_all(Failure::new(
            ErrorCode::GroupSubscribedToTopic,
            format!("members of {name} subscribe to {topic}"),
        ));
    }
    if shard.topic(topic).is_none() {
        return refuse_all(unknown_topic(topic));
    }
    // Request order; a routed partition reads "no answer" until its owner's outcome replaces
    // it (as for commits).
    let no_answer = Failure::new(
        ErrorCode::Unknown,
        "internal: no answer from the partition owner",
    );
    let mut entries = Vec::with_capacity(partitions.len());
    let mut by_owner: BTreeMap<usize, Vec<u32>> = BTreeMap::new();
    for partition in partitions {
        let failure = match known_partition(shard, topic, partition) {
            Ok(()) => {
                by_owner
                    .entry(shard.owner(topic, partition))
                    .or_default()
                    .push(partition);
                no_answer.clone()
            }
            Err(failure) => failure,
        };
        entries.push((partition, Some(failure)));
    }
    let mut results: CommitResults = vec![(topic.to_string(), entries)];
    for (owner, routed) in by_owner {
        let message = GroupCall::ForgetOffsets {
            group: name.to_string(),
            topic: topic.to_string(),
            partitions: routed.clone(),
        };
        let answer = call(shard, owner, message).await;
        merge_answer(&mut results, topic, &routed, answer);
    }
    Ok(results)
}

/// OffsetFetch: committed offsets with lag, read from the owners.
pub(super) async fn fetch_offsets(
    shard: &Rc<Shard>,
    name: &str,
    topics: Option<TopicFilter>,
) -> Result<Vec<OffsetEntry>, Failure> {
    existing(shard, name, GroupKind::Consumer)?;
    load_offsets(shard, name, topics).await
}

/// Reads offsets of `name` from every owner concerned.
async fn load_offsets(
    shard: &Rc<Shard>,
    name: &str,
    topics: Option<TopicFilter>,
) -> Result<Vec<OffsetEntry>, Failure> {
    let mut per_shard: Vec<Option<TopicFilter>> = vec![None; shard.shard_count];
    // Partitions of topics this shard does not have.
    let mut missing: Vec<OffsetEntry> = Vec::new();
    let targets: Vec<usize> = match topics {
        None => (0..shard.shard_count).collect(),
        Some(topics) => {
            let mut wanted: Vec<TopicFilter> = vec![Vec::new(); shard.shard_count];
            for (topic, partitions) in topics {
                let entry = shard.topic(&topic);
                let partitions = match entry {
                    Some(entry) if partitions.is_empty() => (0..entry.config.partitions).collect(),
                    Some(_) => partitions,
                    // A topic named without partitions asks for all of them, and a topic
                    // that does not exist has none to answer.
                    None if partitions.is_empty() => return Err(unknown_topic(&topic)),
                    // Not here (never created, or deleted since the request was checked):
                    // its partitions are answered as such, and the others as usual, as
                    // Kafka answers per partition.
                    None => {
                        missing.extend(partitions.into_iter().map(|partition| OffsetEntry {
                            topic: topic.clone(),
                            partition,
                            committed: -1,
                            metadata: None,
                            high_watermark: -1,
                            failure: Some(unknown_topic(&topic)),
                        }));
                        continue;
                    }
                };
                for partition in partitions {
                    let owner = shard.owner(&topic, partition);
                    match wanted[owner].iter_mut().find(|(t, _)| *t == topic) {
                        Some((_, list)) => list.push(partition),
                        None => wanted[owner].push((topic.clone(), vec![partition])),
                    }
                }
            }
            let targets = (0..shard.shard_count)
                .filter(|&s| !wanted[s].is_empty())
                .collect();
            for (slot, filter) in per_shard.iter_mut().zip(wanted) {
                *slot = Some(filter);
            }
            targets
        }
    };
    let mut calls: Vec<Pin<Box<dyn Future<Output = GroupReturn>>>> = Vec::new();
    for &target in &targets {
        let message = GroupCall::LoadOffsets {
            group: name.to_string(),
            topics: per_shard[target].take(),
        };
        calls.push(Box::pin(call(shard, target, message)));
    }
    let mut all = missing;
    for answer in join_all(calls).await {
        match answer {
            GroupReturn::Offsets(result) => all.extend(result?),
            _ => return Err(unexpected()),
        }
    }
    all.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
    Ok(all)
}

/// DescribeGroup.
pub(super) async fn describe(shard: &Rc<Shard>, name: &str) -> Result<GroupDescription, Failure> {
    let group = live(shard, name)?;
    if group.kind == GroupKind::Consumer {
        let (state, generation, members) = if group.uses_consumer_protocol() {
            // Members of the consumer group protocol: no generations, each its own epoch
            // (the group's is the newest).
            let mut epoch = 0;
            let members: Vec<MemberInfo> = group
                .consumer_members
                .borrow()
                .members()
                .map(|(id, member_epoch, assignment)| {
                    epoch = epoch.max(member_epoch);
                    MemberInfo {
                        member_id: id.to_string(),
                        instance_id: None,
                        client_id: String::new(),
                        assignment,
                        share_heartbeat: None,
                    }
                })
                .collect();
            (GroupState::Stable, epoch, members)
        } else {
            let membership = group.membership.borrow();
            let members = membership
                .members()
                .iter()
                .map(|m| MemberInfo {
                    member_id: m.id.clone(),
                    instance_id: m.instance_id.clone(),
                    client_id: m.client_id.clone(),
                    assignment: m.assignment.clone(),
                    share_heartbeat: None,
                })
                .collect();
            (membership.state(), membership.generation(), members)
        };
        let offsets = load_offsets(shard, name, None).await?;
        return Ok(GroupDescription {
            name: name.to_string(),
            kind: GroupKind::Consumer,
            state,
            generation,
            protocol: group.protocol.borrow().clone(),
            members,
            offsets,
            share_config: None,
            shares: Vec::new(),
        });
    }
    let (shares, member_ids) = share_members(shard, &group).await?;
    let heartbeating = group.share_members.borrow();
    // Heartbeating members by id: a scan per member would make a describe quadratic.
    let beating: HashMap<&str, _> = heartbeating
        .members()
        .map(|(id, epoch, topics, assignment)| (id, (epoch, topics, assignment)))
        .collect();
    let members = member_ids
        .into_iter()
        .map(|member_id| {
            let (share_heartbeat, assignment) = match beating.get(member_id.as_str()) {
                Some(&(epoch, topics, assignment)) => {
                    let named = assignment
                        .iter()
                        .filter_map(|(id, partitions)| {
                            Some((shard.topic_name(*id)?, partitions.clone()))
                        })
                        .collect();
                    (Some((epoch, topics.to_vec())), named)
                }
                None => (None, Vec::new()),
            };
            MemberInfo {
                member_id,
                instance_id: None,
                client_id: String::new(),
                assignment,
                share_heartbeat,
            }
        })
        .collect::<Vec<_>>();
    drop(beating);
    drop(heartbeating);
    let state = if members.is_empty() {
        GroupState::Empty
    } else {
        GroupState::Stable
    };
    let share_config = Some((**group.share.borrow()).clone());
    Ok(GroupDescription {
        name: name.to_string(),
        kind: GroupKind::Share,
        state,
        generation: -1,
        protocol: String::new(),
        members,
        offsets: Vec::new(),
        share_config,
        shares,
    })
}

/// Every shard's share partitions of share group `group`, and its members: those recently
/// active in any partition and the Kafka members keeping their membership with heartbeats,
/// fetching or not.
async fn share_members(
    shard: &Rc<Shard>,
    group: &Group,
) -> Result<(Vec<ShareSummary>, Vec<String>), Failure> {
    let (shares, mut member_ids) = gather_shares(shard, &group.name).await?;
    let mut heartbeating = group.share_members.borrow_mut();
    heartbeating.expire(Instant::now());
    member_ids.extend(heartbeating.member_ids().map(str::to_string));
    member_ids.sort_unstable();
    member_ids.dedup();
    Ok((shares, member_ids))
}

/// Every shard's share partitions of share group `name`, by topic and partition, and the
/// members recently active in any of them.
async fn gather_shares(
    shard: &Rc<Shard>,
    name: &str,
) -> Result<(Vec<ShareSummary>, Vec<String>), Failure> {
    let mut calls: Vec<Pin<Box<dyn Future<Output = GroupReturn>>>> = Vec::new();
    for target in 0..shard.shard_count {
        let message = GroupCall::DescribeShares {
            group: name.to_string(),
        };
        calls.push(Box::pin(call(shard, target, message)));
    }
    let mut shares = Vec::new();
    let mut member_ids = Vec::new();
    for answer in join_all(calls).await {
        match answer {
            GroupReturn::Shares(result) => {
                let (summaries, members) = result?;
                shares.extend(summaries);
                member_ids.extend(members);
            }
            _ => return Err(unexpected()),
        }
    }
    shares.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
    member_ids.sort();
    member_ids.dedup();
    Ok((shares, member_ids))
}

/// DeleteGroup: only while the group has no members (for a share group: none active
/// recently). Every shard forgets the group's committed offsets and share partitions before
/// its file is removed, so a crash in between leaves a group without state, which a retry
/// deletes, and never state that a new group of the same name would inherit.
pub(super) async fn delete(shard: &Rc<Shard>, name: &str) -> Result<(), Failure> {
    let group = live(shard, name)?;
    wait_ready(&group).await?;
    // One change at a time per group (resets, configurations, deletion).
    let _turn = take_turn(&group).await;
    delete_quiet(shard, &group).await
}

/// [`delete`] once no other change of the group is under way.
async fn delete_quiet(shard: &Rc<Shard>, group: &Rc<Group>) -> Result<(), Failure> {
    let name = group.name.as_str();
    if group.lifecycle.get() == Lifecycle::Deleted {
        return Err(unknown_group(name));
    }
    let members = match group.kind {
        GroupKind::Consumer => {
            group.membership.borrow().members().len() + group.consumer_members.borrow().len()
        }
        GroupKind::Share => share_members(shard, group).await?.1.len(),
    };
    if members > 0 {
        return Err(Failure::new(
            ErrorCode::GroupNotEmpty,
            format!(
                "{name} still has {members} member{}; stop them before deleting it",
                if members == 1 { "" } else { "s" }
            ),
        ));
    }
    // From here on requests treat the group as gone, and joins wait to create a new one.
    group.lifecycle.set(Lifecycle::Deleting);
    let forgotten = on_every_shard(shard, || GroupCall::Forget {
        group: name.to_string(),
    })
    .await;
    let removed = match forgotten {
        Ok(()) => meta::remove(&shard.data_dir, name)
            .await
            .map_err(|error| crate::server::shard::storage_failure("remove group file", error)),
        Err(failure) => Err(failure),
    };
    if let Err(failure) = removed {
        group.lifecycle.set(Lifecycle::Ready);
        return Err(failure);
    }
    shard.groups.groups.borrow_mut().remove(name);
    group.lifecycle.set(Lifecycle::Deleted);
    tracing::info!(group = name, "group deleted");
    Ok(())
}

/// Deletes the groups this shard coordinates that have had no members for the server's
/// `group_retention_ms`, checking a tenth as often (at least every minute). Runs for the
/// shard's lifetime.
pub(crate) async fn expire_idle_groups(shard: Rc<Shard>) {
    let retention = Duration::from_millis(shard.config.group_retention_ms);
    let interval = (retention / 10).clamp(Duration::from_millis(10), Duration::from_secs(60));
    loop {
        time::sleep(interval).await;
        let groups: Vec<Rc<Group>> = shard.groups.groups.borrow().values().cloned().collect();
        for group in groups {
            // A group being reset (or otherwise changed) is in use, not idle.
            if group.lifecycle.get() != Lifecycle::Ready || group.busy.get() {
                continue;
            }
            let empty = match group.kind {
                GroupKind::Consumer => !group.has_members(),
                GroupKind::Share => share_members(&shard, &group)
                    .await
                    .is_ok_and(|(_, members)| members.is_empty()),
            };
            let now = Instant::now();
            let since = match (empty, group.empty_since.get()) {
                (false, _) => {
                    group.empty_since.set(None);
                    continue;
                }
                (true, Some(since)) => since,
                (true, None) => {
                    group.empty_since.set(Some(now));
                    now
                }
            };
            if now.saturating_duration_since(since) < retention {
                continue;
            }
            match delete(&shard, &group.name).await {
                Ok(()) => {
                    tracing::info!(group = %group.name, retention_ms = shard.config.group_retention_ms,
                    "group deleted: no members for group_retention_ms")
                }
                // A member joined meanwhile, or the disk refused: the next check decides again.
                Err(failure) => tracing::debug!(group = %group.name, error = %failure.message,
                    "idle group kept"),
            }
        }
    }
}

/// ResetGroupOffsets: only while the group has no members; a group that does not exist yet
/// is created, as by an admin commit (Kafka's `--reset-offsets` seeds a new group's offsets
/// too). The reset holds the group's turn until every owner has made its offsets durable: a
/// deletion waits for it (and then forgets them all), as do joins and admin commits, which
/// would otherwise land between its writes.
pub(super) async fn reset(
    shard: &Rc<Shard>,
    name: &str,
    topic: &str,
    partitions: Vec<u32>,
    to: ResetTo,
) -> Result<ResetResults, Failure> {
    // The topic first: a mistyped topic must not leave a new, empty group behind.
    shard.topic(topic).ok_or_else(|| unknown_topic(topic))?;
    let group = match live(shard, name) {
        Ok(group) => group,
        Err(failure) if failure.code == ErrorCode::UnknownGroup => {
            get_or_create_idle(shard, name, GroupKind::Consumer).await?
        }
        Err(failure) => return Err(failure),
    };
    wait_ready(&group).await?;
    let _turn = take_turn(&group).await;
    // Looked at with the turn held: a deletion ahead of this reset may have removed the group.
    if group.lifecycle.get() != Lifecycle::Ready {
        return Err(unknown_group(name));
    }
    if group.has_members() {
        return Err(Failure::new(
            ErrorCode::GroupNotEmpty,
            format!("{name} has members; stop them before resetting its offsets"),
        ));
    }
    // In use: a group that is only ever reset is not idle (as for commits).
    group.empty_since.set(None);
    let entry = shard.topic(topic).ok_or_else(|| unknown_topic(topic))?;
    let partitions = if partitions.is_empty() {
        (0..entry.config.partitions).collect()
    } else {
        partitions
    };
    let mut results: ResetResults = Vec::with_capacity(partitions.len());
    let mut by_owner: BTreeMap<usize, Vec<u32>> = BTreeMap::new();
    for &partition in &partitions {
        if partition >= entry.config.partitions {
            let failure = Failure::new(
                ErrorCode::UnknownPartition,
                format!("topic {topic} has no partition {partition}"),
            );
            results.push((partition, Err(failure)));
        } else {
            by_owner
                .entry(shard.owner(topic, partition))
                .or_default()
                .push(partition);
            results.push((partition, Ok(-1)));
        }
    }
    let mut calls: Vec<Pin<Box<dyn Future<Output = GroupReturn>>>> = Vec::new();
    for (owner, partitions) in by_owner {
        let message = GroupCall::ResetPartitions {
            group: name.to_string(),
            kind: group.kind,
            topic: topic.to_string(),
            partitions,
            to,
        };
        calls.push(Box::pin(call(shard, owner, message)));
    }
    for answer in join_all(calls).await {
        let done = match answer {
            GroupReturn::Reset(result) => result?,
            _ => return Err(unexpected()),
        };
        for (partition, outcome) in done {
            if let Some(slot) = results
                .iter_mut()
                .find(|(p, r)| *p == partition && matches!(r, Ok(-1)))
            {
                slot.1 = outcome;
            }
        }
    }
    tracing::info!(group = name, topic, ?to, "group offsets reset");
    Ok(results)
}

/// ConfigureGroup: creates or reconfigures a share group, durably, and tells every shard.
pub(super) async fn configure(
    shard: &Rc<Shard>,
    args: ConfigureArgs,
) -> Result<ShareConfig, Failure> {
    meta::validate_group_name(&args.group)?;
    let mut wanted = match live(shard, &args.group).ok() {
        Some(group) => (**group.share.borrow()).clone(),
        None => ShareConfig::with_defaults(shard.groups.in_flight_default),
    };
    if let Some(lock_ms) = args.lock_ms {
        wanted.lock_ms = lock_ms;
    }
    if let Some(limit) = args.delivery_limit {
        wanted.delivery_limit = limit;
    }
    if let Some(max) = args.in_flight_records_max {
        wanted.in_flight_records_max = max;
    }
    if let Some(topic) = &args.dead_letter_topic {
        if !topic.is_empty() && shard.topic(topic).is_none() {
            return Err(Failure::new(
                ErrorCode::InvalidConfig,
                format!("dead-letter topic {topic} does not exist; create it first"),
            ));
        }
        wanted.dead_letter_topic.clone_from(topic);
    }
    wanted.validate()?;
    let group = get_or_create(shard, &args.group, GroupKind::Share, wanted.clone()).await?;
    // One change at a time per group, so the file and the shards end with the last one.
    let _turn = take_turn(&group).await;
    apply_config(shard, &group, wanted).await
}

async fn apply_config(
    shard: &Rc<Shard>,
    group: &Rc<Group>,
    wanted: ShareConfig,
) -> Result<ShareConfig, Failure> {
    if **group.share.borrow() == wanted {
        return Ok(wanted);
    }
    let previous = std::mem::replace(&mut *group.share.borrow_mut(), Rc::new(wanted.clone()));
    if let Err(error) = meta::store(&shard.data_dir, &group.name, &group.meta()).await {
        *group.share.borrow_mut() = previous;
        return Err(crate::server::shard::storage_failure(
            "write group file",
            error,
        ));
    }
    broadcast_share_config(shard, group).await?;
    tracing::info!(group = %group.name, ?wanted, "share group configured");
    Ok(wanted)
}

/// The configuration of share group `name` (created with defaults when `create` is set).
pub(super) async fn share_group(
    shard: &Rc<Shard>,
    name: &str,
    create: bool,
) -> Result<ShareConfig, Failure> {
    let found = match shard.groups.group(name) {
        Some(group) if group.kind == GroupKind::Share => {
            wait_ready(&group).await?;
            (group.lifecycle.get() != Lifecycle::Deleted).then_some(group)
        }
        other => other,
    };
    let group = match found {
        Some(group) if group.kind == GroupKind::Share => group,
        Some(group) => return Err(wrong_kind(&group, GroupKind::Share)),
        None if create => {
            let defaults = ShareConfig::with_defaults(shard.groups.in_flight_default);
            get_or_create(shard, name, GroupKind::Share, defaults).await?
        }
        None => return Err(unknown_group(name)),
    };
    let config = (**group.share.borrow()).clone();
    Ok(config)
}

/// ShareGroupHeartbeat of a Kafka share member: joins, heartbeats or leaves the share group
/// (created with defaults when missing); every member is assigned every partition of the
/// topics it subscribes to (see [`super::share_membership`]).
pub(super) async fn share_heartbeat(
    shard: &Rc<Shard>,
    name: &str,
    member_id: &str,
    epoch: i32,
    topics: Option<Vec<String>>,
) -> Result<ShareBeatAnswer, Failure> {
    meta::validate_group_name(name)?;
    check_subscription(topics.as_deref().unwrap_or_default())?;
    // A member leaving a group that is gone has nothing to leave.
    let group = if epoch == share_membership::LEAVE_EPOCH {
        existing(shard, name, GroupKind::Share)?
    } else {
        share_group(shard, name, true).await?;
        existing(shard, name, GroupKind::Share)?
    };
    group.empty_since.set(None);
    let beat = ShareBeat {
        member_id,
        epoch,
        topics,
    };
    let assign = |topics: &[String]| -> ShareAssignment {
        let mut assignment: ShareAssignment = topics
            .iter()
            .filter_map(|topic| shard.topic(topic))
            .map(|entry| (entry.config.id, (0..entry.config.partitions).collect()))
            .collect();
        assignment.sort_unstable();
        assignment.dedup();
        assignment
    };
    let answer = group.share_members.borrow_mut().beat(
        beat,
        Instant::now(),
        shard.groups.members_max,
        assign,
    );
    answer
}

/// ConsumerGroupHeartbeat of a member using Kafka's consumer group protocol (KIP-848): joins,
/// heartbeats or leaves the consumer group (created when missing), which must have no classic
/// members; see [`super::consumer_membership`].
pub(super) async fn consumer_heartbeat(
    shard: &Rc<Shard>,
    name: &str,
    beat: ConsumerBeat<'_>,
) -> Result<ConsumerBeatAnswer, Failure> {
    meta::validate_group_name(name)?;
    check_subscription(beat.topics.as_deref().unwrap_or_default())?;
    let leaving = matches!(
        beat.epoch,
        consumer_membership::LEAVE_EPOCH | consumer_membership::STATIC_LEAVE_EPOCH
    );
    let group = if leaving {
        existing(shard, name, GroupKind::Consumer)?
    } else {
        get_or_create_idle(shard, name, GroupKind::Consumer).await?
    };
    if !group.membership.borrow().is_empty() {
        return Err(other_protocol(name, "the classic group protocol"));
    }
    ensure_reaper(shard);
    group.empty_since.set(None);
    let partitions_of = |topic: &str| shard.topic(topic).map(|entry| entry.config.partitions);
    let answer = group.consumer_members.borrow_mut().beat(
        beat,
        Instant::now(),
        shard.groups.members_max,
        partitions_of,
    );
    answer
}
