//! Request handlers of the group apis (JoinGroup .. ConfigureGroup, and the share apis via
//! [`crate::server::share::handlers`]): decode, send to the coordinator (or every shard), build
//! the response. Errors for the whole request come back as `Err` and are answered as an
//! error response by the caller.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;

use flatbuffers::FlatBufferBuilder;

use super::membership::{MemberRef, StaleGeneration};
use super::meta::{validate_group_name, ShareConfig};
use super::{
    call, join_all, unexpected, CommitResults, ConfigureArgs, GroupCall, GroupListing, GroupReturn,
    JoinArgs, OffsetEntry, PartitionCommit, ResetTo, TopicFilter,
};
use crate::api::ApiKey;
use crate::error_code::ErrorCode;
use crate::message::group::{CommittedOffset, GroupKind, GroupState, TopicOffsets};
use crate::message::list_offsets::OffsetSpec;
use crate::message::{self, Encode, PartitionStatus, Status, TopicPartitionStatuses};
use crate::server::connection::{Request, Response};
use crate::server::handler::{decode, respond};
use crate::server::message::Failure;
use crate::server::shard::{unknown_topic, Shard};

/// Serves a group or share api.
pub(crate) async fn handle(
    shard: &Rc<Shard>,
    request: &Request,
    api: ApiKey,
) -> Result<Response, Failure> {
    match api {
        ApiKey::JoinGroup => join_group(shard, request).await,
        ApiKey::Heartbeat => heartbeat(shard, request).await,
        ApiKey::LeaveGroup => leave_group(shard, request).await,
        ApiKey::OffsetCommit => offset_commit(shard, request).await,
        ApiKey::OffsetFetch => offset_fetch(shard, request).await,
        ApiKey::ListGroups => list_groups(shard, request).await,
        ApiKey::DescribeGroup => describe_group(shard, request).await,
        ApiKey::ResetGroupOffsets => reset_group_offsets(shard, request).await,
        ApiKey::ConfigureGroup => configure_group(shard, request).await,
        ApiKey::DeleteGroup => delete_group(shard, request).await,
        ApiKey::DeleteOffsets => delete_offsets(shard, request).await,
        ApiKey::ShareFetch => crate::server::share::handlers::share_fetch(shard, request).await,
        ApiKey::ShareAcknowledge => {
            crate::server::share::handlers::share_acknowledge(shard, request).await
        }
        other => Err(Failure::new(
            ErrorCode::UnsupportedVersion,
            format!("{other} is not a group api"),
        )),
    }
}

fn encode(request: &Request, message: &impl Encode) -> Response {
    let mut fbb = FlatBufferBuilder::new();
    respond(&request.header, message.encode(&mut fbb), Vec::new())
}

/// Sends `message` to the coordinator of `group` (after checking the name).
async fn to_coordinator(
    shard: &Rc<Shard>,
    group: &str,
    message: GroupCall,
) -> Result<GroupReturn, Failure> {
    validate_group_name(group)?;
    Ok(call(shard, shard.groups.coordinator_of(group), message).await)
}

fn status(failure: &Option<Failure>) -> Status<'_> {
    failure
        .as_ref()
        .map_or(Status::OK, |f| Status::error(f.code, &f.message))
}

async fn join_group(shard: &Rc<Shard>, request: &Request) -> Result<Response, Failure> {
    let view: message::join_group::RequestView = decode(request.body())?;
    let args = JoinArgs {
        group: view.group().to_string(),
        member_id: view.member_id().unwrap_or_default().to_string(),
        // Empty or absent: a dynamic member.
        instance_id: view
            .instance_id()
            .filter(|id| !id.is_empty())
            .map(str::to_string),
        client_id: view.client_id().unwrap_or_default().to_string(),
        topics: view
            .topics()
            .map(|topics| topics.iter().map(str::to_string).collect())
            .unwrap_or_default(),
        session_timeout_ms: view.session_timeout_ms(),
        rebalance_timeout_ms: view.rebalance_timeout_ms(),
        protocol: String::new(),
        // Native members take the server's assignment: no assignor to agree on.
        protocols: Vec::new(),
    };
    let group = args.group.clone();
    let joined = match to_coordinator(shard, &group, GroupCall::Join(args)).await? {
        GroupReturn::Joined(result) => result?,
        _ => return Err(unexpected()),
    };
    let assignment: Vec<message::TopicPartitions> = joined
        .assignment
        .iter()
        .map(|(topic, partitions)| message::TopicPartitions { topic, partitions })
        .collect();
    Ok(encode(
        request,
        &message::join_group::Response {
            status: Status::OK,
            member_id: &joined.member_id,
            generation: joined.generation,
            heartbeat_interval_ms: joined.heartbeat_interval_ms,
            assignment: &assignment,
        },
    ))
}

/// Whom a heartbeat, commit or leave speaks for (an absent or empty instance id: a dynamic
/// member).
fn member_ref(member_id: &str, instance_id: Option<&str>) -> MemberRef {
    MemberRef {
        member_id: member_id.to_string(),
        instance_id: instance_id.filter(|id| !id.is_empty()).map(str::to_string),
    }
}

fn expect_done(answer: GroupReturn) -> Result<(), Failure> {
    match answer {
        GroupReturn::Done(result) => result,
        _ => Err(unexpected()),
    }
}

async fn heartbeat(shard: &Rc<Shard>, request: &Request) -> Result<Response, Failure> {
    let view: message::heartbeat::RequestView = decode(request.body())?;
    let message = GroupCall::Heartbeat {
        group: view.group().to_string(),
        member: member_ref(view.member_id(), view.instance_id()),
        generation: view.generation(),
        stale: StaleGeneration::RebalanceInProgress,
    };
    expect_done(to_coordinator(shard, view.group(), message).await?)?;
    Ok(encode(
        request,
        &message::heartbeat::Response { status: Status::OK },
    ))
}

async fn leave_group(shard: &Rc<Shard>, request: &Request) -> Result<Response, Failure> {
    let view: message::leave_group::RequestView = decode(request.body())?;
    let message = GroupCall::Leave {
        group: view.group().to_string(),
        member: member_ref(view.member_id(), view.instance_id()),
    };
    expect_done(to_coordinator(shard, view.group(), message).await?)?;
    Ok(encode(
        request,
        &message::leave_group::Response { status: Status::OK },
    ))
}

async fn offset_commit(shard: &Rc<Shard>, request: &Request) -> Result<Response, Failure> {
    let view: message::offset_commit::RequestView = decode(request.body())?;
    let topics = view
        .topics()
        .unwrap_or_default()
        .iter()
        .map(|topic| {
            let offsets = topic
                .partitions()
                .unwrap_or_default()
                .iter()
                // The native protocol has no commit metadata.
                .map(|p| PartitionCommit {
                    partition: p.partition(),
                    offset: p.offset(),
                    metadata: None,
                })
                .collect();
            (topic.topic().to_string(), offsets)
        })
        .collect();
    let message = GroupCall::Commit {
        group: view.group().to_string(),
        member: member_ref(view.member_id().unwrap_or_default(), view.instance_id()),
        generation: view.generation(),
        stale: StaleGeneration::RebalanceInProgress,
        topics,
    };
    let results = match to_coordinator(shard, view.group(), message).await? {
        GroupReturn::Committed(result) => result?,
        _ => return Err(unexpected()),
    };
    Ok(with_topic_statuses(&results, |topics| {
        encode(
            request,
            &message::offset_commit::Response {
                status: Status::OK,
                topics,
            },
        )
    }))
}

/// The response `answer` makes of each topic's per-partition outcomes as wire statuses
/// (OffsetCommit, DeleteOffsets).
fn with_topic_statuses(
    results: &CommitResults,
    answer: impl FnOnce(&[TopicPartitionStatuses<'_>]) -> Response,
) -> Response {
    let statuses: Vec<Vec<PartitionStatus>> = results
        .iter()
        .map(|(_, entries)| {
            entries
                .iter()
                .map(|(partition, failure)| PartitionStatus {
                    partition: *partition,
                    status: status(failure),
                })
                .collect()
        })
        .collect();
    let topics: Vec<TopicPartitionStatuses> = results
        .iter()
        .zip(&statuses)
        .map(|((topic, _), partitions)| TopicPartitionStatuses { topic, partitions })
        .collect();
    answer(&topics)
}

/// DeleteOffsets: each topic's partitions (every partition where none is named) forgotten
/// through the coordinator, as Kafka's OffsetDelete.
async fn delete_offsets(shard: &Rc<Shard>, request: &Request) -> Result<Response, Failure> {
    let view: message::delete_offsets::RequestView = decode(request.body())?;
    let group = view.group();
    let mut results: CommitResults = Vec::new();
    for asked in view.topics().unwrap_or_default() {
        let topic = asked.topic();
        let named: Vec<u32> = asked
            .partitions()
            .map(|partitions| partitions.iter().collect())
            .unwrap_or_default();
        let partitions = if named.is_empty() {
            let entry = shard.topic(topic).ok_or_else(|| unknown_topic(topic))?;
            (0..entry.config.partitions).collect()
        } else {
            named
        };
        let message = GroupCall::DeleteOffsets {
            group: group.to_string(),
            topic: topic.to_string(),
            partitions,
        };
        match to_coordinator(shard, group, message).await? {
            GroupReturn::Committed(result) => results.extend(result?),
            _ => return Err(unexpected()),
        }
    }
    Ok(with_topic_statuses(&results, |topics| {
        encode(
            request,
            &message::delete_offsets::Response {
                status: Status::OK,
                topics,
            },
        )
    }))
}

/// Committed-offset entries grouped by topic, in the order given.
fn by_topic(entries: &[OffsetEntry]) -> Vec<(&str, Vec<CommittedOffset<'_>>)> {
    let mut grouped: Vec<(&str, Vec<CommittedOffset>)> = Vec::new();
    for entry in entries {
        let offset = CommittedOffset {
            partition: entry.partition,
            status: status(&entry.failure),
            committed_offset: entry.committed,
            high_watermark: entry.high_watermark,
            lag: entry.lag(),
        };
        match grouped.last_mut() {
            Some((topic, list)) if *topic == entry.topic => list.push(offset),
            _ => grouped.push((&entry.topic, vec![offset])),
        }
    }
    grouped
}

async fn offset_fetch(shard: &Rc<Shard>, request: &Request) -> Result<Response, Failure> {
    let view: message::offset_fetch::RequestView = decode(request.body())?;
    let topics: Option<TopicFilter> =
        view.topics()
            .filter(|topics| !topics.is_empty())
            .map(|topics| {
                topics
                    .iter()
                    .map(|t| {
                        let partitions = t
                            .partitions()
                            .map(|p| p.iter().collect())
                            .unwrap_or_default();
                        (t.topic().to_string(), partitions)
                    })
                    .collect()
            });
    let message = GroupCall::FetchOffsets {
        group: view.group().to_string(),
        topics,
    };
    let entries = match to_coordinator(shard, view.group(), message).await? {
        GroupReturn::Offsets(result) => result?,
        _ => return Err(unexpected()),
    };
    let grouped = by_topic(&entries);
    let topics: Vec<TopicOffsets> = grouped
        .iter()
        .map(|(topic, partitions)| TopicOffsets { topic, partitions })
        .collect();
    Ok(encode(
        request,
        &message::offset_fetch::Response {
            status: Status::OK,
            topics: &topics,
        },
    ))
}

async fn list_groups(shard: &Rc<Shard>, request: &Request) -> Result<Response, Failure> {
    let _view: message::list_groups::RequestView = decode(request.body())?;
    let listings = all_groups(shard).await?;
    let groups: Vec<message::list_groups::GroupListing> = listings
        .iter()
        .map(|l| message::list_groups::GroupListing {
            group: &l.name,
            kind: l.kind,
            state: l.state,
            member_count: l.member_count,
        })
        .collect();
    Ok(encode(
        request,
        &message::list_groups::Response {
            status: Status::OK,
            groups: &groups,
        },
    ))
}

/// Every group of the server, by name: consumer groups as their coordinators see them, share
/// groups with the members recently active on any shard.
pub(crate) async fn all_groups(shard: &Rc<Shard>) -> Result<Vec<GroupListing>, Failure> {
    let mut calls: Vec<Pin<Box<dyn Future<Output = GroupReturn>>>> = Vec::new();
    for target in 0..shard.shard_count {
        calls.push(Box::pin(call(shard, target, GroupCall::ListLocal)));
    }
    let mut listings = Vec::new();
    let mut share_members: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for answer in join_all(calls).await {
        let GroupReturn::Listed(local) = answer else {
            return Err(unexpected());
        };
        listings.extend(local.coordinated);
        for (group, members) in local.share_members {
            share_members.entry(group).or_default().extend(members);
        }
    }
    for listing in listings.iter_mut().filter(|l| l.kind == GroupKind::Share) {
        let mut members = share_members.remove(&listing.name).unwrap_or_default();
        members.sort();
        members.dedup();
        listing.member_count = members.len() as u32;
        listing.state = if members.is_empty() {
            GroupState::Empty
        } else {
            GroupState::Stable
        };
    }
    listings.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(listings)
}

fn wire_share_config(config: &ShareConfig) -> message::group::ShareGroupConfig<'_> {
    message::group::ShareGroupConfig {
        lock_ms: config.lock_ms,
        delivery_limit: config.delivery_limit,
        dead_letter_topic: &config.dead_letter_topic,
        in_flight_records_max: config.in_flight_records_max,
    }
}

async fn describe_group(shard: &Rc<Shard>, request: &Request) -> Result<Response, Failure> {
    let view: message::describe_group::RequestView = decode(request.body())?;
    let message = GroupCall::Describe {
        group: view.group().to_string(),
    };
    let description = match to_coordinator(shard, view.group(), message).await? {
        GroupReturn::Described(result) => result?,
        _ => return Err(unexpected()),
    };
    let assignments: Vec<Vec<message::TopicPartitions>> = description
        .members
        .iter()
        .map(|m| {
            m.assignment
                .iter()
                .map(|(topic, partitions)| message::TopicPartitions { topic, partitions })
                .collect()
        })
        .collect();
    let members: Vec<message::describe_group::GroupMember> = description
        .members
        .iter()
        .zip(&assignments)
        .map(|(m, assignment)| message::describe_group::GroupMember {
            member_id: &m.member_id,
            client_id: &m.client_id,
            assignment,
            instance_id: m.instance_id.as_deref().unwrap_or_default(),
        })
        .collect();
    let grouped = by_topic(&description.offsets);
    let offsets: Vec<TopicOffsets> = grouped
        .iter()
        .map(|(topic, partitions)| TopicOffsets { topic, partitions })
        .collect();
    let shares: Vec<message::describe_group::SharePartitionState> = description
        .shares
        .iter()
        .map(|s| message::describe_group::SharePartitionState {
            topic: &s.topic,
            partition: s.partition,
            start_offset: s.start_offset,
            high_watermark: s.high_watermark,
            in_flight_records: s.in_flight_records,
            acquired_records: s.acquired_records,
        })
        .collect();
    Ok(encode(
        request,
        &message::describe_group::Response {
            status: Status::OK,
            group: &description.name,
            kind: description.kind,
            state: description.state,
            generation: description.generation,
            members: &members,
            offsets: &offsets,
            share_config: description.share_config.as_ref().map(wire_share_config),
            share_partitions: &shares,
        },
    ))
}

async fn reset_group_offsets(shard: &Rc<Shard>, request: &Request) -> Result<Response, Failure> {
    let view: message::reset_group_offsets::RequestView = decode(request.body())?;
    let to = match OffsetSpec::from_wire(view.spec(), view.value()) {
        Some(OffsetSpec::Earliest) => ResetTo::Earliest,
        Some(OffsetSpec::Latest) => ResetTo::Latest,
        Some(OffsetSpec::Timestamp(ms)) => ResetTo::Timestamp(ms),
        Some(OffsetSpec::Offset(offset)) => ResetTo::Offset(offset),
        None => {
            return Err(Failure::new(
                ErrorCode::InvalidRequest,
                "unknown offset spec",
            ))
        }
    };
    let message = GroupCall::Reset {
        group: view.group().to_string(),
        topic: view.topic().to_string(),
        partitions: view
            .partitions()
            .map(|p| p.iter().collect())
            .unwrap_or_default(),
        to,
    };
    let results = match to_coordinator(shard, view.group(), message).await? {
        GroupReturn::Reset(result) => result?,
        _ => return Err(unexpected()),
    };
    let partitions: Vec<message::reset_group_offsets::PartitionResult> = results
        .iter()
        .map(|(partition, outcome)| match outcome {
            Ok(offset) => message::reset_group_offsets::PartitionResult {
                partition: *partition,
                status: Status::OK,
                offset: *offset,
            },
            Err(failure) => message::reset_group_offsets::PartitionResult {
                partition: *partition,
                status: Status::error(failure.code, &failure.message),
                offset: -1,
            },
        })
        .collect();
    Ok(encode(
        request,
        &message::reset_group_offsets::Response {
            status: Status::OK,
            topic: view.topic(),
            partitions: &partitions,
        },
    ))
}

async fn delete_group(shard: &Rc<Shard>, request: &Request) -> Result<Response, Failure> {
    let view: message::delete_group::RequestView = decode(request.body())?;
    let group = view.group().to_string();
    let message = GroupCall::Delete {
        group: group.clone(),
    };
    match to_coordinator(shard, &group, message).await? {
        GroupReturn::Done(result) => result?,
        _ => return Err(unexpected()),
    }
    Ok(encode(
        request,
        &message::delete_group::Response { status: Status::OK },
    ))
}

async fn configure_group(shard: &Rc<Shard>, request: &Request) -> Result<Response, Failure> {
    let view: message::configure_group::RequestView = decode(request.body())?;
    let args = ConfigureArgs {
        group: view.group().to_string(),
        lock_ms: view.lock_ms(),
        delivery_limit: view.delivery_limit(),
        dead_letter_topic: view.dead_letter_topic().map(str::to_string),
        in_flight_records_max: view.in_flight_records_max(),
    };
    let config = match to_coordinator(shard, view.group(), GroupCall::Configure(args)).await? {
        GroupReturn::Config(result) => result?,
        _ => return Err(unexpected()),
    };
    Ok(encode(
        request,
        &message::configure_group::Response {
            status: Status::OK,
            config: Some(wire_share_config(&config)),
        },
    ))
}
