//! Kafka's share groups (KIP-932) on ringlog's: ShareGroupHeartbeat, ShareFetch and
//! ShareAcknowledge, so that Kafka's share consumers (librdkafka's ShareConsumer, Java's
//! KafkaShareConsumer) read the same share groups as native ones, with the same leases,
//! delivery counts, dead letters and durable state.
//!
//! - ShareGroupHeartbeat goes to the group's coordinator, which keeps the members that
//!   heartbeat and assigns each every partition of its topics (see
//!   [`crate::server::group::share_membership`]): records are leased one by one, so members
//!   share partitions.
//! - ShareFetch and ShareAcknowledge name topics by id and work in a share session: the
//!   partitions a member fetches, kept on the connection with the epoch its next request must
//!   carry (epoch 0 opens one, releasing what an earlier one held; -1 closes it, releasing
//!   what the member still holds). Each partition's acquiring and acknowledging is the
//!   native ShareFetch's and ShareAcknowledge's, on the partition's shard.
//! - A fetch first takes what every partition has now (applying the acknowledgements it
//!   carries); if that is nothing it waits, up to `max_wait_ms`, on every partition at once,
//!   and the first partition to acquire records stops the other waits (whose owners still
//!   answer with what they acquired: nothing is left locked unseen).

use std::cell::Cell;
use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;

use bytes::Bytes;
use futures_util::future::Either;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::share_fetch_request::AcknowledgementBatch;
use kafka_protocol::messages::share_fetch_response::{
    AcquiredRecords, LeaderIdAndEpoch, PartitionData, ShareFetchableTopicResponse,
};
use kafka_protocol::messages::share_group_heartbeat_response::{Assignment, TopicPartitions};
use kafka_protocol::messages::{
    share_acknowledge_response, share_group_describe_response, ShareAcknowledgeRequest,
    ShareAcknowledgeResponse, ShareFetchRequest, ShareFetchResponse, ShareGroupDescribeRequest,
    ShareGroupDescribeResponse, ShareGroupHeartbeatRequest, ShareGroupHeartbeatResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use ringlog_engine::topic::TopicId;

use super::codec::{kafka_topic_id, respond, str_bytes, KafkaError, KafkaRequest, KafkaResponse};
use super::dispatch::ClientInfo;
use super::errors::{failure_code, failure_message, group_failure_code, kafka_error};
use super::group_admin::AUTHORIZED_OPERATIONS_OMITTED;
use super::groups::{to_coordinator, unexpected_answer};
use super::{KafkaShard, NODE_ID};
use crate::message::group::GroupKind;
use crate::message::share_acknowledge::{AckRange, AckType};
use crate::server::group::share_membership::HEARTBEAT_INTERVAL_MS;
use crate::server::group::signal::Signal;
use crate::server::group::{
    call, GroupCall, GroupDescription, GroupReturn, ShareAckArgs, ShareFetchArgs,
};
use crate::server::latch::Latch;
use crate::server::message::{Failure, ShardCall, ShardReturn};
use crate::server::routing::join_all;
use crate::server::shard::Shard;
use crate::server::share::handlers::{check_member, ACK_RANGES_MAX};
use crate::server::share::partition::{AckResult, ShareFetched};

/// Share sessions one connection keeps (a client has one per share group it reads); the
/// oldest is dropped past this (what its member holds released), and its member starts a new
/// one when it comes back.
const SESSIONS_MAX: usize = 4;
/// Partitions one share session may hold, and one request may name.
const SESSION_PARTITIONS_MAX: usize = 10_000;
/// Partitions fetched at once; a fetch stops taking more partitions once it spent its record
/// or byte budget (each partition returns whole batches, so the budget is met per chunk).
const FETCH_CHUNK: usize = 16;
/// Lock duration reported when the group's configuration cannot be had (the default
/// `lock_ms`).
const LOCK_TIMEOUT_MS_DEFAULT: i32 = 30_000;
/// The session epochs that open and close a session.
const OPEN_EPOCH: i32 = 0;
const CLOSE_EPOCH: i32 = -1;

/// One partition's ShareFetch, on its shard or another.
type PartitionFetch<'a> = Pin<Box<dyn Future<Output = Result<ShareFetched, Failure>> + 'a>>;

/// A partition of a share session.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct SessionPartition {
    topic_id: TopicId,
    topic: Rc<str>,
    partition: u32,
}

/// One member's share session on this connection.
#[derive(Debug)]
struct Session {
    group: String,
    member_id: String,
    /// The epoch the member's next ShareFetch or ShareAcknowledge must carry.
    next_epoch: i32,
    partitions: Vec<SessionPartition>,
    /// Where the next fetch starts among `partitions`, so that a fetch that spends its budget
    /// early does not leave the same partitions unread every time.
    next_fetch: usize,
    /// Tells this session from a later one of the same member (set by [`Sessions::open`]).
    serial: u64,
    /// Its fetches under way (requests of one connection run side by side).
    fetches: Rc<Fetches>,
}

/// The fetches under way in a session, which its end stops and waits for: what they acquire
/// is then released with the rest of what the member holds, while the share partitions still
/// know the member.
#[derive(Default)]
struct Fetches {
    running: Cell<u32>,
    /// Set when the session ends: fetches stop waiting.
    stop: Latch,
    /// Notified as each fetch ends.
    ended: Signal,
}

impl std::fmt::Debug for Fetches {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fetches")
            .field("running", &self.running.get())
            .field("stopped", &self.stop.is_set())
            .finish()
    }
}

impl Fetches {
    /// Counts a fetch as under way until the guard drops.
    fn start(self: &Rc<Self>) -> FetchRunning {
        self.running.set(self.running.get() + 1);
        FetchRunning(Rc::clone(self))
    }

    /// Stops the session's fetches and waits until none is under way.
    async fn stop_and_drain(&self) {
        self.stop.set();
        loop {
            let ended = self.ended.wait();
            if self.running.get() == 0 {
                return;
            }
            ended.await;
        }
    }
}

/// A fetch under way in a session; see [`Fetches::start`].
struct FetchRunning(Rc<Fetches>);

impl Drop for FetchRunning {
    fn drop(&mut self) {
        let running = self.0.running.get();
        assert!(running > 0, "a fetch ended that never started");
        self.0.running.set(running - 1);
        self.0.ended.notify();
    }
}

/// The share sessions of one connection.
#[derive(Debug, Default)]
pub(crate) struct Sessions {
    sessions: Vec<Session>,
    opened: u64,
}

impl Sessions {
    fn find(&mut self, group: &str, member_id: &str) -> Option<&mut Session> {
        self.sessions
            .iter_mut()
            .find(|s| s.group == group && s.member_id == member_id)
    }

    fn take(&mut self, group: &str, member_id: &str) -> Option<Session> {
        let index = self
            .sessions
            .iter()
            .position(|s| s.group == group && s.member_id == member_id)?;
        Some(self.sessions.remove(index))
    }

    /// Opens `session`; returns its serial, and the oldest session when it had to go to make
    /// room.
    fn open(&mut self, mut session: Session) -> (u64, Option<Session>) {
        let evicted = (self.sessions.len() >= SESSIONS_MAX).then(|| self.sessions.remove(0));
        self.opened += 1;
        session.serial = self.opened;
        self.sessions.push(session);
        (self.opened, evicted)
    }
}

/// Serves ShareGroupHeartbeat through the group's coordinator.
pub(crate) async fn share_group_heartbeat(
    kafka: &Rc<KafkaShard>,
    request: &KafkaRequest,
) -> Result<KafkaResponse, KafkaError> {
    let body: ShareGroupHeartbeatRequest = request.decode_body()?;
    let group = body.group_id.0.to_string();
    let call = GroupCall::ShareHeartbeat {
        group: group.clone(),
        member_id: body.member_id.to_string(),
        epoch: body.member_epoch,
        topics: body
            .subscribed_topic_names
            .map(|names| names.into_iter().map(|name| name.0.to_string()).collect()),
    };
    let answer = match to_coordinator(&kafka.shard, &group, call).await {
        Ok(GroupReturn::ShareBeat(result)) => result,
        Ok(_) => Err(unexpected_answer()),
        Err(failure) => Err(failure),
    };
    let response = match answer {
        Ok(answer) => ShareGroupHeartbeatResponse::default()
            .with_member_id(Some(body.member_id))
            .with_member_epoch(answer.epoch)
            .with_heartbeat_interval_ms(HEARTBEAT_INTERVAL_MS)
            .with_assignment(answer.assignment.map(|assignment| {
                Assignment::default().with_topic_partitions(
                    assignment
                        .into_iter()
                        .map(|(id, partitions)| {
                            TopicPartitions::default()
                                .with_topic_id(kafka_topic_id(id))
                                .with_partitions(partitions.into_iter().map(wire).collect())
                        })
                        .collect(),
                )
            })),
        Err(failure) => ShareGroupHeartbeatResponse::default()
            .with_error_code(group_failure_code(&failure))
            .with_error_message(failure_message(&failure))
            .with_member_id(Some(body.member_id))
            .with_member_epoch(body.member_epoch),
    };
    respond(request, &response)
}

/// Serves ShareGroupDescribe (`kafka-share-groups --describe`): each share group's state and
/// members, the heartbeating ones with their epochs, subscriptions and assignments (members
/// that only fetch, natively, appear with epoch -1 and nothing assigned). A group that does not
/// exist, or is a consumer group, is GROUP_ID_NOT_FOUND, as from Kafka.
pub(crate) async fn share_group_describe(
    kafka: &Rc<KafkaShard>,
    request: &KafkaRequest,
) -> Result<KafkaResponse, KafkaError> {
    let body: ShareGroupDescribeRequest = request.decode_body()?;
    let mut groups = Vec::with_capacity(body.group_ids.len());
    for group_id in body.group_ids {
        let name = group_id.0.to_string();
        let call = GroupCall::Describe {
            group: name.clone(),
        };
        let described = match to_coordinator(&kafka.shard, &name, call).await {
            Ok(GroupReturn::Described(result)) => result,
            Ok(_) => Err(unexpected_answer()),
            Err(failure) => Err(failure),
        };
        let entry = share_group_describe_response::DescribedGroup::default()
            .with_group_id(group_id)
            .with_authorized_operations(AUTHORIZED_OPERATIONS_OMITTED);
        groups.push(match described {
            Ok(description) if description.kind == GroupKind::Share => {
                described_share_group(&kafka.shard, entry, description)
            }
            Ok(_) => entry
                .with_error_code(ResponseError::GroupIdNotFound.code())
                .with_error_message(Some(str_bytes(format!("{name} is not a share group")))),
            Err(failure) => entry
                .with_error_code(group_failure_code(&failure))
                .with_error_message(failure_message(&failure)),
        });
    }
    respond(
        request,
        &ShareGroupDescribeResponse::default().with_groups(groups),
    )
}

fn described_share_group(
    shard: &Shard,
    entry: share_group_describe_response::DescribedGroup,
    description: GroupDescription,
) -> share_group_describe_response::DescribedGroup {
    use share_group_describe_response::{Member, TopicPartitions};
    let epoch = description
        .members
        .iter()
        .filter_map(|m| m.share_heartbeat.as_ref().map(|(epoch, _)| *epoch))
        .max()
        .unwrap_or(0);
    let members = description
        .members
        .into_iter()
        .map(|member| {
            let (member_epoch, topics) = member.share_heartbeat.unwrap_or((-1, Vec::new()));
            let assigned = member
                .assignment
                .into_iter()
                .filter_map(|(topic, partitions)| {
                    let id = shard.topic(&topic)?.config.id;
                    Some(
                        TopicPartitions::default()
                            .with_topic_id(kafka_topic_id(id))
                            .with_topic_name(TopicName(str_bytes(topic)))
                            .with_partitions(partitions.into_iter().map(wire).collect()),
                    )
                })
                .collect();
            Member::default()
                .with_member_id(str_bytes(member.member_id))
                .with_member_epoch(member_epoch)
                .with_client_id(str_bytes(member.client_id))
                .with_subscribed_topic_names(
                    topics
                        .into_iter()
                        .map(|t| TopicName(str_bytes(t)))
                        .collect(),
                )
                .with_assignment(
                    share_group_describe_response::Assignment::default()
                        .with_topic_partitions(assigned),
                )
        })
        .collect();
    entry
        .with_group_state(StrBytes::from_static_str(description.state.name()))
        .with_group_epoch(epoch)
        .with_assignment_epoch(epoch)
        .with_assignor_name(StrBytes::from_static_str("simple"))
        .with_members(members)
}

/// A partition a ShareFetch or ShareAcknowledge names, with its acknowledgements.
struct Named {
    topic_id: uuid::Uuid,
    partition_index: i32,
    /// The partition, or the Kafka error for it (unknown topic id or partition).
    resolved: Result<SessionPartition, i16>,
    /// Its acknowledgements, or INVALID_REQUEST for ones that cannot be read.
    acks: Result<Vec<AckRange>, i16>,
}

/// What one partition's part of a ShareFetch or ShareAcknowledge came to.
#[derive(Default)]
struct Outcome {
    error_code: i16,
    error_message: Option<StrBytes>,
    acknowledge_error_code: i16,
    acknowledge_error_message: Option<StrBytes>,
    fetched: ShareFetched,
}

/// Serves ShareFetch; see the module docs.
pub(crate) async fn share_fetch(
    kafka: &Rc<KafkaShard>,
    client: &ClientInfo,
    request: &KafkaRequest,
) -> Result<KafkaResponse, KafkaError> {
    let body: ShareFetchRequest = request.decode_body()?;
    let (Some(group), Some(member_id)) = (body.group_id.clone(), body.member_id.clone()) else {
        return respond(request, &fetch_refusal(ResponseError::InvalidRequest));
    };
    let (group, member_id) = (group.0.to_string(), member_id.to_string());
    if let Some(error) = refused_member(&group, &member_id) {
        return respond(request, &fetch_refusal(error));
    }
    let shard = &kafka.shard;
    let topics = body
        .topics
        .iter()
        .map(|t| (t.topic_id, t.partitions.as_slice()));
    let Some(named) = name_all(shard, topics, |p| {
        (p.partition_index, p.acknowledgement_batches.clone())
    }) else {
        return respond(request, &fetch_refusal(ResponseError::InvalidRequest));
    };
    let has_acks = named
        .iter()
        .any(|n| n.acks.as_ref().map_or(true, |acks| !acks.is_empty()));
    let forgotten: HashSet<(TopicId, u32)> = body
        .forgotten_topics_data
        .iter()
        .flat_map(|topic| {
            let id = TopicId(topic.topic_id.as_u128());
            topic
                .partitions
                .iter()
                .filter_map(move |p| Some((id, u32::try_from(*p).ok()?)))
        })
        .collect();
    let epoch = body.share_session_epoch;
    // Sessions that end here (closed, opened again, evicted to make room), whose members give
    // back what they hold once their fetches under way have stopped; and partitions this
    // member forgets.
    let mut ended: Vec<Session> = Vec::new();
    let mut forgotten_here: Vec<SessionPartition> = Vec::new();
    // This fetch counts as under way in its session from here, before anything waits, so that
    // an end of the session running meanwhile waits for it (and it sees that end).
    let (session_partitions, start, serial, running) = {
        let mut sessions = client.share_sessions.borrow_mut();
        match epoch {
            OPEN_EPOCH => {
                if has_acks {
                    return respond(request, &fetch_refusal(ResponseError::InvalidRequest));
                }
                ended.extend(sessions.take(&group, &member_id));
                let mut partitions = Vec::new();
                add_partitions(&mut partitions, &named);
                let fetches = Rc::new(Fetches::default());
                let (serial, evicted) = sessions.open(Session {
                    group: group.clone(),
                    member_id: member_id.clone(),
                    next_epoch: 1,
                    partitions: partitions.clone(),
                    next_fetch: 0,
                    serial: 0,
                    fetches: Rc::clone(&fetches),
                });
                ended.extend(evicted);
                (partitions, 0, Some(serial), Some(fetches.start()))
            }
            CLOSE_EPOCH => match sessions.take(&group, &member_id) {
                Some(session) => {
                    ended.push(session);
                    (Vec::new(), 0, None, None)
                }
                None => {
                    return respond(request, &fetch_refusal(ResponseError::ShareSessionNotFound))
                }
            },
            _ => {
                let Some(session) = sessions.find(&group, &member_id) else {
                    return respond(request, &fetch_refusal(ResponseError::ShareSessionNotFound));
                };
                if session.next_epoch != epoch {
                    return respond(
                        request,
                        &fetch_refusal(ResponseError::InvalidShareSessionEpoch),
                    );
                }
                session.next_epoch = next_epoch(epoch);
                add_partitions(&mut session.partitions, &named);
                session.partitions.retain(|p| {
                    let gone = forgotten.contains(&(p.topic_id, p.partition));
                    if gone {
                        forgotten_here.push(p.clone());
                    }
                    !gone
                });
                (
                    session.partitions.clone(),
                    session.next_fetch,
                    Some(session.serial),
                    Some(session.fetches.start()),
                )
            }
        }
    };
    // Acknowledgements of partitions this fetch does not read (a closing session, forgotten
    // or unknown partitions) are made on their own; those of fetched partitions go with the
    // fetch.
    let in_session: HashSet<&SessionPartition> = session_partitions.iter().collect();
    let mut outcomes: Vec<(uuid::Uuid, i32, Outcome)> = Vec::new();
    for named in &named {
        if named
            .resolved
            .as_ref()
            .is_ok_and(|p| in_session.contains(p))
        {
            continue;
        }
        let mut outcome = Outcome::default();
        match (&named.resolved, &named.acks) {
            (Err(code), _) => outcome.error_code = *code,
            (Ok(_), Err(code)) => outcome.acknowledge_error_code = *code,
            (Ok(partition), Ok(acks)) if !acks.is_empty() => {
                let results = acknowledge(shard, &group, &member_id, partition, acks, false).await;
                note_acks(&mut outcome, results);
            }
            (Ok(_), Ok(_)) => continue,
        }
        outcomes.push((named.topic_id, named.partition_index, outcome));
    }
    // What ended sessions and forgotten partitions held goes back to the other members.
    for session in &ended {
        release_session(shard, session).await;
    }
    for partition in &forgotten_here {
        let _ = acknowledge(shard, &group, &member_id, partition, &[], true).await;
    }
    // A session closed by this very request has nothing to fetch: an unset latch will do.
    let no_session = Latch::default();
    let session_ended = running.as_ref().map_or(&no_session, |r| &r.0.stop);
    // The acknowledgements of each session partition (the first naming of it).
    let mut acks_of: HashMap<&SessionPartition, &Result<Vec<AckRange>, i16>> = HashMap::new();
    for named in &named {
        if let Ok(partition) = &named.resolved {
            acks_of.entry(partition).or_insert(&named.acks);
        }
    }
    let ask = FetchAsk {
        group: &group,
        member_id: &member_id,
        max_records: u32::try_from(body.max_records.max(1)).unwrap_or(1),
        max_bytes: u32::try_from(body.max_bytes.max(1)).unwrap_or(1),
        max_wait_ms: u32::try_from(body.max_wait_ms).unwrap_or(0),
    };
    let (mut fetched, next_fetch) = fetch_all(
        shard,
        client,
        session_ended,
        &ask,
        &acks_of,
        &session_partitions,
        start,
    )
    .await;
    let current = match client.share_sessions.borrow_mut().find(&group, &member_id) {
        Some(session) if Some(session.serial) == serial => {
            session.next_fetch = next_fetch;
            true
        }
        _ => false,
    };
    if !current {
        // The session ended while this fetch waited: what it acquired goes back to the other
        // members with the rest (its end waits for this fetch, then releases), so it is not
        // handed out here.
        for outcome in &mut fetched {
            outcome.fetched = ShareFetched::default();
        }
    }
    drop(running);
    let named_partitions: HashSet<&SessionPartition> = acks_of.keys().copied().collect();
    for (partition, outcome) in session_partitions.iter().zip(fetched) {
        let interesting = outcome.error_code != 0
            || outcome.acknowledge_error_code != 0
            || !outcome.fetched.acquired.is_empty()
            || named_partitions.contains(partition);
        if interesting {
            outcomes.push((
                kafka_topic_id(partition.topic_id),
                wire(partition.partition),
                outcome,
            ));
        }
    }
    // The group's lock duration (its configuration is cached on this shard from the first
    // fetch on, asked of the coordinator before).
    let lock_timeout_ms = crate::server::share::config(shard, &group, false)
        .await
        .map_or(LOCK_TIMEOUT_MS_DEFAULT, |config| {
            i32::try_from(config.lock_ms).unwrap_or(i32::MAX)
        });
    let response = ShareFetchResponse::default()
        .with_acquisition_lock_timeout_ms(lock_timeout_ms)
        .with_responses(
            by_topic(outcomes, |partition_index, outcome| {
                PartitionData::default()
                    .with_partition_index(partition_index)
                    .with_error_code(outcome.error_code)
                    .with_error_message(outcome.error_message)
                    .with_acknowledge_error_code(outcome.acknowledge_error_code)
                    .with_acknowledge_error_message(outcome.acknowledge_error_message)
                    .with_current_leader(leader())
                    .with_acquired_records(
                        outcome
                            .fetched
                            .acquired
                            .iter()
                            .map(|range| {
                                AcquiredRecords::default()
                                    .with_first_offset(range.first_offset)
                                    .with_last_offset(range.last_offset)
                                    .with_delivery_count(
                                        i16::try_from(range.delivery_count).unwrap_or(i16::MAX),
                                    )
                            })
                            .collect(),
                    )
                    // Empty rather than null when there are none: librdkafka reads a null
                    // record set as a malformed answer.
                    .with_records(Some(Bytes::from(outcome.fetched.bytes)))
            })
            .into_iter()
            .map(|(topic_id, partitions)| {
                ShareFetchableTopicResponse::default()
                    .with_topic_id(topic_id)
                    .with_partitions(partitions)
            })
            .collect(),
        );
    respond(request, &response)
}

/// What a ShareFetch asks of its partitions together.
struct FetchAsk<'a> {
    group: &'a str,
    member_id: &'a str,
    max_records: u32,
    max_bytes: u32,
    max_wait_ms: u32,
}

impl FetchAsk<'_> {
    /// One partition's part: `records` and `bytes` of the budget left, shared between
    /// `sharing` partitions fetched together.
    fn args(
        &self,
        partition: &SessionPartition,
        (records, bytes, sharing): (u32, u32, u32),
        max_wait_ms: u32,
        acks: Vec<AckRange>,
    ) -> ShareFetchArgs {
        let sharing = sharing.max(1);
        ShareFetchArgs {
            group: self.group.to_string(),
            member_id: self.member_id.to_string(),
            topic: partition.topic.to_string(),
            partition: partition.partition,
            max_records: (records / sharing).max(1),
            max_wait_ms,
            max_bytes: (bytes / sharing).max(1),
            acks,
        }
    }
}

/// Takes what the session partitions have now, `FETCH_CHUNK` partitions at a time from
/// `start` on, until the request's record or byte budget is spent (the partitions past it only
/// get their acknowledgements made); when that acquired nothing, waits on every partition for
/// up to `max_wait_ms`. Returns each partition's outcome, in the order of `partitions`, and
/// where the next fetch should start.
async fn fetch_all(
    shard: &Rc<Shard>,
    client: &ClientInfo,
    session_ended: &Latch,
    ask: &FetchAsk<'_>,
    acks_of: &HashMap<&SessionPartition, &Result<Vec<AckRange>, i16>>,
    partitions: &[SessionPartition],
    start: usize,
) -> (Vec<Outcome>, usize) {
    let count = partitions.len();
    if count == 0 {
        return (Vec::new(), 0);
    }
    let start = start % count;
    let mut outcomes: Vec<Outcome> = (0..count).map(|_| Outcome::default()).collect();
    let mut acks: Vec<Vec<AckRange>> = Vec::with_capacity(count);
    for (partition, outcome) in partitions.iter().zip(&mut outcomes) {
        acks.push(match acks_of.get(partition) {
            Some(Ok(ranges)) => ranges.clone(),
            Some(Err(code)) => {
                outcome.acknowledge_error_code = *code;
                Vec::new()
            }
            None => Vec::new(),
        });
    }
    let order: Vec<usize> = (0..count).map(|i| (start + i) % count).collect();
    let (mut records_left, mut bytes_left) = (ask.max_records, ask.max_bytes);
    let mut next_fetch = start;
    let mut acquired_any = false;
    for chunk in order.chunks(FETCH_CHUNK) {
        if records_left == 0 || bytes_left == 0 || session_ended.is_set() {
            // Past the budget, or the session ended (its end releases what the member holds):
            // nothing more is taken, but the acknowledgements are made all the same, before
            // that release, which waits for this fetch.
            for &index in chunk {
                if !acks[index].is_empty() {
                    let ranges = std::mem::take(&mut acks[index]);
                    let results = acknowledge(
                        shard,
                        ask.group,
                        ask.member_id,
                        &partitions[index],
                        &ranges,
                        false,
                    )
                    .await;
                    note_acks(&mut outcomes[index], results);
                }
            }
            continue;
        }
        let sharing = u32::try_from(chunk.len()).unwrap_or(u32::MAX);
        let fetches: Vec<PartitionFetch<'_>> = chunk
            .iter()
            .map(|&index| {
                let budget = (records_left, bytes_left, sharing);
                let args = ask.args(
                    &partitions[index],
                    budget,
                    0,
                    std::mem::take(&mut acks[index]),
                );
                Box::pin(fetch_one(shard, args, &client.hangup)) as PartitionFetch<'_>
            })
            .collect();
        for (&index, result) in chunk.iter().zip(join_all(fetches).await) {
            if let Ok(fetched) = &result {
                let records: i64 = fetched
                    .acquired
                    .iter()
                    .map(|r| r.last_offset - r.first_offset + 1)
                    .sum();
                records_left =
                    records_left.saturating_sub(u32::try_from(records).unwrap_or(u32::MAX));
                bytes_left = bytes_left
                    .saturating_sub(u32::try_from(fetched.bytes.len()).unwrap_or(u32::MAX));
            }
            acquired_any |= note_fetch(&mut outcomes[index], result);
            next_fetch = (index + 1) % count;
        }
    }
    if acquired_any || ask.max_wait_ms == 0 || client.hangup.is_set() || session_ended.is_set() {
        return (outcomes, next_fetch);
    }
    // Nothing now: wait on every partition, the first to acquire ending the others' waits.
    let done = Latch::default();
    let sharing = u32::try_from(count).unwrap_or(u32::MAX);
    let waits: Vec<PartitionFetch<'_>> = partitions
        .iter()
        .map(|partition| {
            let budget = (ask.max_records, ask.max_bytes, sharing);
            let args = ask.args(partition, budget, ask.max_wait_ms, Vec::new());
            let done = &done;
            Box::pin(async move {
                let result = fetch_one(shard, args, done).await;
                if result.as_ref().is_ok_and(|f| !f.acquired.is_empty()) {
                    done.set();
                }
                result
            }) as PartitionFetch<'_>
        })
        .collect();
    let waits = join_all(waits);
    // The client going away, or the session ending, stops the waits.
    let hangup = client.hangup.wait();
    let ended = session_ended.wait();
    futures_util::pin_mut!(hangup, ended);
    let interrupted = futures_util::future::select(hangup, ended);
    futures_util::pin_mut!(waits);
    let results = match futures_util::future::select(waits, interrupted).await {
        Either::Left((results, _)) => results,
        Either::Right((_, waits)) => {
            done.set();
            waits.await
        }
    };
    for (outcome, result) in outcomes.iter_mut().zip(results) {
        note_fetch(outcome, result);
    }
    (outcomes, next_fetch)
}

/// Gives back what the member of an ended session holds, once the session's fetches under way
/// have stopped (what they acquired is among it).
async fn release_session(shard: &Rc<Shard>, session: &Session) {
    session.fetches.stop_and_drain().await;
    for partition in &session.partitions {
        let _ = acknowledge(
            shard,
            &session.group,
            &session.member_id,
            partition,
            &[],
            true,
        )
        .await;
    }
}

/// One partition's ShareFetch on its shard; its wait ends once `stop` is set, and what it
/// acquired before is returned all the same.
async fn fetch_one(
    shard: &Rc<Shard>,
    args: ShareFetchArgs,
    stop: &Latch,
) -> Result<ShareFetched, Failure> {
    let owner = shard.owner(&args.topic, args.partition);
    if owner == shard.id {
        return crate::server::share::fetch(shard, args, stop).await;
    }
    let call = ShardCall::Group(GroupCall::ShareFetch(args));
    match shard.call_stopped_by(owner, call, stop).await {
        ShardReturn::Group(GroupReturn::ShareFetched(result)) => result,
        _ => Err(unexpected_answer()),
    }
}

/// One partition's ShareAcknowledge on its shard (`leave`: then release what the member
/// still holds there).
async fn acknowledge(
    shard: &Rc<Shard>,
    group: &str,
    member_id: &str,
    partition: &SessionPartition,
    ranges: &[AckRange],
    leave: bool,
) -> Result<Vec<AckResult>, Failure> {
    let args = ShareAckArgs {
        group: group.to_string(),
        member_id: member_id.to_string(),
        topic: partition.topic.to_string(),
        partition: partition.partition,
        ranges: ranges.to_vec(),
        leave,
    };
    let owner = shard.owner(&args.topic, args.partition);
    if owner == shard.id {
        return crate::server::share::acknowledge(shard, args).await;
    }
    match call(shard, owner, GroupCall::ShareAck(args)).await {
        GroupReturn::Acked(result) => result,
        _ => Err(unexpected_answer()),
    }
}

/// Records a fetch's result in `outcome`; true when it acquired records.
fn note_fetch(outcome: &mut Outcome, result: Result<ShareFetched, Failure>) -> bool {
    match result {
        Ok(mut fetched) => {
            if let Some(failure) = fetched.failure.take() {
                outcome.error_code = failure_code(&failure);
                outcome.error_message = failure_message(&failure);
            }
            let acks = std::mem::take(&mut fetched.ack_results);
            if !acks.is_empty() {
                note_acks(outcome, Ok(acks));
            }
            let acquired = !fetched.acquired.is_empty();
            if acquired || outcome.fetched.acquired.is_empty() {
                outcome.fetched = fetched;
            }
            acquired
        }
        Err(failure) => {
            outcome.error_code = failure_code(&failure);
            outcome.error_message = failure_message(&failure);
            false
        }
    }
}

/// Records the first failed acknowledgement of a partition in `outcome`.
fn note_acks(outcome: &mut Outcome, results: Result<Vec<AckResult>, Failure>) {
    let failure = match results {
        Ok(results) => results.into_iter().find_map(|r| r.failure),
        Err(failure) => Some(failure),
    };
    if let Some(failure) = failure {
        outcome.acknowledge_error_code = failure_code(&failure);
        outcome.acknowledge_error_message = failure_message(&failure);
    }
}

/// The partitions a request names, each with its acknowledgements; a topic's name is looked
/// up once and shared by its partitions. `None` for a request naming more partitions than a
/// session may hold.
fn name_all<'a, P: 'a>(
    shard: &Shard,
    topics: impl IntoIterator<Item = (uuid::Uuid, &'a [P])>,
    partition_of: impl Fn(&P) -> (i32, Vec<AcknowledgementBatch>),
) -> Option<Vec<Named>> {
    let mut named = Vec::new();
    for (topic_id, partitions) in topics {
        if named.len() + partitions.len() > SESSION_PARTITIONS_MAX {
            return None;
        }
        let id = TopicId(topic_id.as_u128());
        let topic = shard.topic_name(id).and_then(|name| {
            let count = shard.topic(&name)?.config.partitions;
            Some((Rc::<str>::from(name), count))
        });
        for partition in partitions {
            let (partition_index, batches) = partition_of(partition);
            let resolved = match &topic {
                None => Err(ResponseError::UnknownTopicId.code()),
                Some((name, count)) => match u32::try_from(partition_index) {
                    Ok(partition) if partition < *count => Ok(SessionPartition {
                        topic_id: id,
                        topic: Rc::clone(name),
                        partition,
                    }),
                    _ => Err(ResponseError::UnknownTopicOrPartition.code()),
                },
            };
            named.push(Named {
                topic_id,
                partition_index,
                resolved,
                acks: ack_ranges(&batches).ok_or(ResponseError::InvalidRequest.code()),
            });
        }
    }
    Some(named)
}

/// Acknowledgement batches as ranges: a batch with one type covers all its offsets, one with
/// a type per offset becomes a range per run of equal types. `None` for a batch that cannot
/// be read (an unknown type, types not matching its offsets, or too many ranges).
fn ack_ranges<'a>(
    batches: impl IntoIterator<Item = &'a AcknowledgementBatch>,
) -> Option<Vec<AckRange>> {
    let mut ranges: Vec<AckRange> = Vec::new();
    for batch in batches {
        let (first, last) = (batch.first_offset, batch.last_offset);
        let span = last.checked_sub(first)?.checked_add(1)?;
        if first < 0 || span <= 0 {
            return None;
        }
        match batch.acknowledge_types.as_slice() {
            [one] => ranges.push(AckRange {
                first_offset: first,
                last_offset: last,
                ack_type: ack_type(*one)?,
            }),
            types if i64::try_from(types.len()).ok() == Some(span) => {
                for (offset, &kind) in (first..=last).zip(types) {
                    let kind = ack_type(kind)?;
                    match ranges.last_mut() {
                        Some(run) if run.ack_type == kind && run.last_offset + 1 == offset => {
                            run.last_offset = offset;
                        }
                        _ => ranges.push(AckRange {
                            first_offset: offset,
                            last_offset: offset,
                            ack_type: kind,
                        }),
                    }
                }
            }
            _ => return None,
        }
        if ranges.len() > ACK_RANGES_MAX {
            return None;
        }
    }
    Some(ranges)
}

/// KIP-932's acknowledgement types: 0 a gap (an offset that is no record, archived as an
/// accepted one is), 1 accept, 2 release, 3 reject, 4 renew (KIP-1222).
fn ack_type(kind: i8) -> Option<AckType> {
    match kind {
        0 | 1 => Some(AckType::Accept),
        2 => Some(AckType::Release),
        3 => Some(AckType::Reject),
        4 => Some(AckType::Renew),
        _ => None,
    }
}

/// Adds the resolved partitions of `named` to a session's, each once, up to the bound.
fn add_partitions(partitions: &mut Vec<SessionPartition>, named: &[Named]) {
    let mut present: HashSet<SessionPartition> = partitions.iter().cloned().collect();
    for partition in named.iter().filter_map(|n| n.resolved.as_ref().ok()) {
        if partitions.len() < SESSION_PARTITIONS_MAX && present.insert(partition.clone()) {
            partitions.push(partition.clone());
        }
    }
}

/// The epoch after `epoch` (wrapping to 1: 0 and -1 open and close sessions).
fn next_epoch(epoch: i32) -> i32 {
    epoch.checked_add(1).unwrap_or(1)
}

/// Why a share request's group or member id is refused, if it is: both are kept (in sessions,
/// and by the share partitions), so they are checked as natively (INVALID_GROUP_ID,
/// INVALID_REQUEST).
fn refused_member(group: &str, member_id: &str) -> Option<ResponseError> {
    check_member(group, member_id)
        .err()
        .map(|failure| kafka_error(failure.code))
}

fn fetch_refusal(error: ResponseError) -> ShareFetchResponse {
    ShareFetchResponse::default().with_error_code(error.code())
}

fn leader() -> LeaderIdAndEpoch {
    LeaderIdAndEpoch::default()
        .with_leader_id(NODE_ID)
        .with_leader_epoch(0)
}

fn wire(partition: u32) -> i32 {
    i32::try_from(partition).unwrap_or(i32::MAX)
}

/// Outcomes grouped by topic, in the order topics first appear.
fn by_topic<T>(
    outcomes: Vec<(uuid::Uuid, i32, Outcome)>,
    partition: impl Fn(i32, Outcome) -> T,
) -> Vec<(uuid::Uuid, Vec<T>)> {
    let mut topics: Vec<(uuid::Uuid, Vec<T>)> = Vec::new();
    let mut positions: HashMap<uuid::Uuid, usize> = HashMap::new();
    for (topic_id, index, outcome) in outcomes {
        let entry = partition(index, outcome);
        match positions.get(&topic_id) {
            Some(&position) => topics[position].1.push(entry),
            None => {
                positions.insert(topic_id, topics.len());
                topics.push((topic_id, vec![entry]));
            }
        }
    }
    topics
}

/// Serves ShareAcknowledge: the acknowledgements of a share session's records, without
/// fetching; epoch -1 closes the session, releasing what the member still holds.
pub(crate) async fn share_acknowledge(
    kafka: &Rc<KafkaShard>,
    client: &ClientInfo,
    request: &KafkaRequest,
) -> Result<KafkaResponse, KafkaError> {
    let body: ShareAcknowledgeRequest = request.decode_body()?;
    let refusal =
        |error: ResponseError| ShareAcknowledgeResponse::default().with_error_code(error.code());
    let (Some(group), Some(member_id)) = (body.group_id.clone(), body.member_id.clone()) else {
        return respond(request, &refusal(ResponseError::InvalidRequest));
    };
    let (group, member_id) = (group.0.to_string(), member_id.to_string());
    if let Some(error) = refused_member(&group, &member_id) {
        return respond(request, &refusal(error));
    }
    let shard = &kafka.shard;
    let topics = body
        .topics
        .iter()
        .map(|t| (t.topic_id, t.partitions.as_slice()));
    // ShareAcknowledge's batches have the fields of ShareFetch's.
    let named = name_all(shard, topics, |p| {
        let batches = p
            .acknowledgement_batches
            .iter()
            .map(|b| {
                AcknowledgementBatch::default()
                    .with_first_offset(b.first_offset)
                    .with_last_offset(b.last_offset)
                    .with_acknowledge_types(b.acknowledge_types.clone())
            })
            .collect();
        (p.partition_index, batches)
    });
    let Some(named) = named else {
        return respond(request, &refusal(ResponseError::InvalidRequest));
    };
    let epoch = body.share_session_epoch;
    let closed = {
        let mut sessions = client.share_sessions.borrow_mut();
        match epoch {
            OPEN_EPOCH => {
                return respond(request, &refusal(ResponseError::InvalidShareSessionEpoch))
            }
            CLOSE_EPOCH => match sessions.take(&group, &member_id) {
                Some(session) => Some(session),
                None => return respond(request, &refusal(ResponseError::ShareSessionNotFound)),
            },
            _ => {
                let Some(session) = sessions.find(&group, &member_id) else {
                    return respond(request, &refusal(ResponseError::ShareSessionNotFound));
                };
                if session.next_epoch != epoch {
                    return respond(request, &refusal(ResponseError::InvalidShareSessionEpoch));
                }
                session.next_epoch = next_epoch(epoch);
                None
            }
        }
    };
    let mut outcomes: Vec<(uuid::Uuid, i32, Outcome)> = Vec::with_capacity(named.len());
    for named in &named {
        let mut outcome = Outcome::default();
        match (&named.resolved, &named.acks) {
            (Err(code), _) | (Ok(_), Err(code)) => outcome.error_code = *code,
            (Ok(partition), Ok(acks)) => {
                let results = acknowledge(shard, &group, &member_id, partition, acks, false).await;
                note_acks(&mut outcome, results);
                outcome.error_code = outcome.acknowledge_error_code;
                outcome.error_message = outcome.acknowledge_error_message.take();
            }
        }
        outcomes.push((named.topic_id, named.partition_index, outcome));
    }
    if let Some(session) = &closed {
        release_session(shard, session).await;
    }
    let responses = by_topic(outcomes, |partition_index, outcome| {
        share_acknowledge_response::PartitionData::default()
            .with_partition_index(partition_index)
            .with_error_code(outcome.error_code)
            .with_error_message(outcome.error_message)
            .with_current_leader(
                share_acknowledge_response::LeaderIdAndEpoch::default()
                    .with_leader_id(NODE_ID)
                    .with_leader_epoch(0),
            )
    });
    let response = ShareAcknowledgeResponse::default().with_responses(
        responses
            .into_iter()
            .map(|(topic_id, partitions)| {
                share_acknowledge_response::ShareAcknowledgeTopicResponse::default()
                    .with_topic_id(topic_id)
                    .with_partitions(partitions)
            })
            .collect(),
    );
    respond(request, &response)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(first: i64, last: i64, types: &[i8]) -> AcknowledgementBatch {
        AcknowledgementBatch::default()
            .with_first_offset(first)
            .with_last_offset(last)
            .with_acknowledge_types(types.to_vec())
    }

    fn read(batches: &[AcknowledgementBatch]) -> Option<Vec<(i64, i64, AckType)>> {
        ack_ranges(batches).map(|ranges| {
            ranges
                .into_iter()
                .map(|r| (r.first_offset, r.last_offset, r.ack_type))
                .collect()
        })
    }

    #[test]
    fn acknowledgement_batches_become_ranges() {
        assert_eq!(
            read(&[batch(5, 9, &[1])]),
            Some(vec![(5, 9, AckType::Accept)])
        );
        // A type per offset: runs of one type merge; a gap is archived as accepted.
        assert_eq!(
            read(&[batch(0, 4, &[1, 0, 2, 2, 3])]),
            Some(vec![
                (0, 1, AckType::Accept),
                (2, 3, AckType::Release),
                (4, 4, AckType::Reject)
            ])
        );
        assert_eq!(
            read(&[batch(0, 4, &[1, 2])]),
            None,
            "types and offsets differ"
        );
        assert_eq!(read(&[batch(3, 2, &[1])]), None, "backwards");
        assert_eq!(read(&[batch(0, 0, &[9])]), None, "unknown type");
        assert_eq!(read(&[batch(0, 0, &[])]), None, "no type");
        assert_eq!(next_epoch(i32::MAX), 1);
    }
}
