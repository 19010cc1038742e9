//! [`Client`] methods for the group apis: consumer-group membership and offsets, group
//! administration, and the share-group fetch and acknowledgement calls. Owned results.

use std::time::Duration;

use super::calls::{check, Client};
use super::connection::ResponseFrame;
use super::error::ClientError;
use crate::api::ApiKey;
use crate::error_code::ErrorCode;
use crate::message::group::{share_group_config, GroupKind, GroupState};
use crate::message::join_group;
use crate::message::leave_group;
use crate::message::list_offsets::OffsetSpec;
use crate::message::share_acknowledge::AckRange;
use crate::message::share_fetch::{self, AcquiredRange};
use crate::message::{configure_group, delete_group, delete_offsets, describe_group, heartbeat};
use crate::message::{list_groups, offset_commit, offset_fetch, reset_group_offsets};
use crate::message::{share_acknowledge, ResponseStatus, Status, TopicPartitions};
use crate::protocol;

/// A topic and partitions.
pub type Assignment = Vec<(String, Vec<u32>)>;

/// Per partition, whether its committed offset was deleted (DeleteOffsets).
pub type PartitionOutcomes = Vec<(u32, Result<(), ClientError>)>;

/// A member's place in a consumer group, from JoinGroup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupJoin {
    /// The member's id (send it with every later call).
    pub member_id: String,
    /// Generation of the assignment.
    pub generation: i32,
    /// How often to send Heartbeat.
    pub heartbeat_interval_ms: u32,
    /// Partitions assigned to this member.
    pub assignment: Assignment,
}

/// A group's committed offset of one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupOffset {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: u32,
    /// Next offset to consume; -1 if nothing was committed.
    pub committed_offset: i64,
    /// The partition's high watermark; -1 when unknown.
    pub high_watermark: i64,
    /// `high_watermark - committed_offset`; -1 when unknown.
    pub lag: i64,
    /// A per-partition error (`ErrorCode::None` when fine).
    pub error: ErrorCode,
}

/// One group in a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupSummary {
    /// Name.
    pub group: String,
    /// Consumer or share group.
    pub kind: GroupKind,
    /// State.
    pub state: GroupState,
    /// Members now.
    pub member_count: u32,
}

/// A member as DescribeGroup shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupMemberInfo {
    /// Member id.
    pub member_id: String,
    /// Client id given at join.
    pub client_id: String,
    /// Assigned partitions (consumer groups).
    pub assignment: Assignment,
    /// A static member's instance id.
    pub instance_id: Option<String>,
}

/// Settings of a share group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShareGroupSettings {
    /// Lock duration of acquired records.
    pub lock_ms: u32,
    /// Deliveries after which a record is archived.
    pub delivery_limit: u16,
    /// Where archived records are copied, if anywhere.
    pub dead_letter_topic: Option<String>,
    /// Cap on in-flight records per share partition.
    pub in_flight_records_max: u32,
}

/// State of one share partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharePartitionInfo {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: u32,
    /// Every record before this offset is acknowledged or archived.
    pub start_offset: i64,
    /// The partition's high watermark.
    pub high_watermark: i64,
    /// Records in the window not yet acknowledged or archived.
    pub in_flight_records: u32,
    /// Of those, records acquired by a member now.
    pub acquired_records: u32,
}

/// Everything DescribeGroup reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupDescription {
    /// Name.
    pub group: String,
    /// Consumer or share group.
    pub kind: GroupKind,
    /// State.
    pub state: GroupState,
    /// Generation (consumer groups), -1 otherwise.
    pub generation: i32,
    /// Members.
    pub members: Vec<GroupMemberInfo>,
    /// Committed offsets and lag (consumer groups).
    pub offsets: Vec<GroupOffset>,
    /// Settings (share groups).
    pub share_config: Option<ShareGroupSettings>,
    /// Share partitions (share groups).
    pub share_partitions: Vec<SharePartitionInfo>,
}

/// The outcome of one entry of a request (a committed partition, an acknowledged range, a
/// reset partition).
#[derive(Debug, Clone)]
pub struct EntryResult<T> {
    /// What the entry names (partition, or offset range).
    pub entry: T,
    /// `Ok` with the entry's value, or the server's error for it.
    pub result: Result<i64, ClientError>,
}

/// A share fetch response, owning its bytes.
#[derive(Debug, Clone)]
pub struct ShareFetchResult {
    frame: ResponseFrame,
}

impl ShareFetchResult {
    /// Wraps a received ShareFetch response frame, verifying its body.
    pub(crate) fn from_frame(frame: ResponseFrame) -> Result<Self, ClientError> {
        let result = Self { frame };
        result.view()?;
        Ok(result)
    }

    /// The verified response view.
    pub fn view(&self) -> Result<share_fetch::ResponseView<'_>, ClientError> {
        self.frame.view::<share_fetch::ResponseView>()
    }

    /// The acquired ranges, ascending.
    pub fn acquired(&self) -> Result<Vec<AcquiredRange>, ClientError> {
        let view = self.view()?;
        Ok(view
            .acquired()
            .unwrap_or_default()
            .iter()
            .map(|r| AcquiredRange {
                first_offset: r.first_offset(),
                last_offset: r.last_offset(),
                delivery_count: r.delivery_count(),
            })
            .collect())
    }

    /// The raw batches holding the acquired records (they may hold others too).
    pub fn batches(&self) -> Result<&[u8], ClientError> {
        let view = self.view()?;
        Ok(share_fetch::batches(&view, self.frame.raw())?)
    }

    /// Outcomes of the piggy-backed acknowledgements, one per range sent.
    pub fn ack_results(&self) -> Result<Vec<EntryResult<(i64, i64)>>, ClientError> {
        let view = self.view()?;
        Ok(range_results(ApiKey::ShareFetch, view.ack_results()))
    }

    /// The fetch part's status (an error here leaves the acknowledgements' results valid).
    pub fn status(&self) -> Result<(ErrorCode, String), ClientError> {
        let view = self.view()?;
        let status = view.status();
        Ok((status.code, status.message.to_owned()))
    }
}

fn entry_error(api: ApiKey, code: u16, message: Option<&str>) -> Result<(), ClientError> {
    check(api, Status::from_wire(code, message))
}

fn range_results(
    api: ApiKey,
    results: Option<
        flatbuffers::Vector<'_, flatbuffers::ForwardsUOffset<protocol::AckRangeResult<'_>>>,
    >,
) -> Vec<EntryResult<(i64, i64)>> {
    results
        .unwrap_or_default()
        .iter()
        .map(|r| EntryResult {
            entry: (r.first_offset(), r.last_offset()),
            result: entry_error(api, r.error_code(), r.error_message()).map(|()| 0),
        })
        .collect()
}

fn assignment(
    list: Option<
        flatbuffers::Vector<'_, flatbuffers::ForwardsUOffset<protocol::TopicPartitions<'_>>>,
    >,
) -> Assignment {
    list.unwrap_or_default()
        .iter()
        .map(|t| {
            let partitions = t
                .partitions()
                .map(|p| p.iter().collect())
                .unwrap_or_default();
            (t.topic().to_owned(), partitions)
        })
        .collect()
}

fn offsets(
    list: Option<
        flatbuffers::Vector<'_, flatbuffers::ForwardsUOffset<protocol::OffsetFetchTopic<'_>>>,
    >,
) -> Vec<GroupOffset> {
    let mut out = Vec::new();
    for topic in list.unwrap_or_default() {
        for p in topic.partitions().unwrap_or_default() {
            out.push(GroupOffset {
                topic: topic.topic().to_owned(),
                partition: p.partition(),
                committed_offset: p.committed_offset(),
                high_watermark: p.high_watermark(),
                lag: p.lag(),
                error: ErrorCode::from_u16(p.error_code()),
            });
        }
    }
    out
}

fn settings(view: &protocol::ShareGroupConfig<'_>) -> ShareGroupSettings {
    let config = share_group_config(view);
    ShareGroupSettings {
        lock_ms: config.lock_ms,
        delivery_limit: config.delivery_limit,
        dead_letter_topic: (!config.dead_letter_topic.is_empty())
            .then(|| config.dead_letter_topic.to_owned()),
        in_flight_records_max: config.in_flight_records_max,
    }
}

impl Client {
    /// Joins (or rejoins) a consumer group; waits until the group's rebalance completes (up to
    /// the request's rebalance timeout).
    pub fn join_group(
        &mut self,
        request: &join_group::Request<'_>,
    ) -> Result<GroupJoin, ClientError> {
        let correlation_id = self.connection().send(request)?;
        let wait = Duration::from_millis(u64::from(request.rebalance_timeout_ms));
        let timeout = self.request_timeout() + wait;
        let frame = self.connection().receive_within(correlation_id, timeout)?;
        let view = frame.view::<join_group::ResponseView>()?;
        check(ApiKey::JoinGroup, view.status())?;
        Ok(GroupJoin {
            member_id: view.member_id().unwrap_or_default().to_owned(),
            generation: view.generation(),
            heartbeat_interval_ms: view.heartbeat_interval_ms(),
            assignment: assignment(view.assignment()),
        })
    }

    /// Keeps a membership alive; RebalanceInProgress means: join again, FencedInstanceId:
    /// a newer member took this static member's instance id.
    pub fn heartbeat(&mut self, request: &heartbeat::Request<'_>) -> Result<(), ClientError> {
        let frame = self.connection().call(request)?;
        check(
            ApiKey::Heartbeat,
            frame.view::<heartbeat::ResponseView>()?.status(),
        )
    }

    /// Leaves a consumer group now (or, naming only an instance id, removes that static
    /// member, as an administrator does).
    pub fn leave_group(&mut self, request: &leave_group::Request<'_>) -> Result<(), ClientError> {
        let frame = self.connection().call(request)?;
        check(
            ApiKey::LeaveGroup,
            frame.view::<leave_group::ResponseView>()?.status(),
        )
    }

    /// Commits offsets. A request-wide error (unknown member, rebalance) is `Err`; per
    /// partition outcomes (NotAssigned, ...) come back in request order, `Ok` holding the
    /// committed offset.
    pub fn commit_offsets(
        &mut self,
        request: &offset_commit::Request<'_>,
    ) -> Result<Vec<EntryResult<(String, u32)>>, ClientError> {
        let frame = self.connection().call(request)?;
        let view = frame.view::<offset_commit::ResponseView>()?;
        check(ApiKey::OffsetCommit, view.status())?;
        let sent: Vec<_> = request
            .topics
            .iter()
            .flat_map(|t| t.partitions.iter().map(move |p| (t.topic, p)))
            .collect();
        let answered: Vec<_> = view
            .topics()
            .unwrap_or_default()
            .iter()
            .flat_map(|t| {
                t.partitions()
                    .unwrap_or_default()
                    .iter()
                    .map(move |p| (t.topic(), p))
            })
            .collect();
        // Entries answer the request's in order. A short answer (or one naming other
        // partitions) leaves offsets whose commit is unknown: pairing what is there would
        // report those as committed, or leave them out of an Ok, which a caller reads as
        // committed too.
        let matches = answered.len() == sent.len()
            && sent
                .iter()
                .zip(&answered)
                .all(|((topic, sent), (answered_topic, answer))| {
                    topic == answered_topic && sent.partition == answer.partition()
                });
        if !matches {
            return Err(ClientError::UnexpectedResponse(format!(
                "OffsetCommit answered {} entries for the {} partitions sent, or other ones",
                answered.len(),
                sent.len()
            )));
        }
        let mut results = Vec::with_capacity(sent.len());
        for ((topic, sent), (_, answer)) in sent.into_iter().zip(answered) {
            let result = entry_error(
                ApiKey::OffsetCommit,
                answer.error_code(),
                answer.error_message(),
            );
            results.push(EntryResult {
                entry: (topic.to_owned(), sent.partition),
                result: result.map(|()| sent.offset),
            });
        }
        Ok(results)
    }

    /// Committed offsets and lag of `group`, for `topics` (empty: every partition the group
    /// committed).
    pub fn fetch_offsets(
        &mut self,
        group: &str,
        topics: &[TopicPartitions<'_>],
    ) -> Result<Vec<GroupOffset>, ClientError> {
        let frame = self
            .connection()
            .call(&offset_fetch::Request { group, topics })?;
        let view = frame.view::<offset_fetch::ResponseView>()?;
        check(ApiKey::OffsetFetch, view.status())?;
        Ok(offsets(view.topics()))
    }

    /// Every group of the server.
    pub fn list_groups(&mut self) -> Result<Vec<GroupSummary>, ClientError> {
        let frame = self.connection().call(&list_groups::Request)?;
        let view = frame.view::<list_groups::ResponseView>()?;
        check(ApiKey::ListGroups, view.status())?;
        Ok(view
            .groups()
            .unwrap_or_default()
            .iter()
            .map(|g| GroupSummary {
                group: g.group().to_owned(),
                kind: GroupKind::from_wire(g.kind()).unwrap_or_default(),
                state: GroupState::from_wire(g.state()).unwrap_or_default(),
                member_count: g.member_count(),
            })
            .collect())
    }

    /// Members, assignments, offsets and lag, or share state, of one group.
    pub fn describe_group(&mut self, group: &str) -> Result<GroupDescription, ClientError> {
        let frame = self.connection().call(&describe_group::Request { group })?;
        let view = frame.view::<describe_group::ResponseView>()?;
        check(ApiKey::DescribeGroup, view.status())?;
        let members = view
            .members()
            .unwrap_or_default()
            .iter()
            .map(|m| GroupMemberInfo {
                member_id: m.member_id().to_owned(),
                client_id: m.client_id().unwrap_or_default().to_owned(),
                assignment: assignment(m.assignment()),
                instance_id: m.instance_id().map(str::to_owned),
            })
            .collect();
        let share_partitions = view
            .share_partitions()
            .unwrap_or_default()
            .iter()
            .map(|s| SharePartitionInfo {
                topic: s.topic().to_owned(),
                partition: s.partition(),
                start_offset: s.start_offset(),
                high_watermark: s.high_watermark(),
                in_flight_records: s.in_flight_records(),
                acquired_records: s.acquired_records(),
            })
            .collect();
        Ok(GroupDescription {
            group: view.group().unwrap_or(group).to_owned(),
            kind: GroupKind::from_wire(view.kind()).unwrap_or_default(),
            state: GroupState::from_wire(view.state()).unwrap_or_default(),
            generation: view.generation(),
            members,
            offsets: offsets(view.offsets()),
            share_config: view.share_config().map(|c| settings(&c)),
            share_partitions,
        })
    }

    /// Moves a group's offsets (consumer groups) or share start offsets (share groups) of
    /// `topic` (`partitions` empty: all) to `to`; only while the group has no members. Per
    /// partition outcomes hold the new offset.
    pub fn reset_group_offsets(
        &mut self,
        group: &str,
        topic: &str,
        partitions: &[u32],
        to: OffsetSpec,
    ) -> Result<Vec<EntryResult<u32>>, ClientError> {
        let frame = self.connection().call(&reset_group_offsets::Request {
            group,
            topic,
            partitions,
            spec: to,
        })?;
        let view = frame.view::<reset_group_offsets::ResponseView>()?;
        check(ApiKey::ResetGroupOffsets, view.status())?;
        Ok(view
            .partitions()
            .unwrap_or_default()
            .iter()
            .map(|p| EntryResult {
                entry: p.partition(),
                result: entry_error(ApiKey::ResetGroupOffsets, p.error_code(), p.error_message())
                    .map(|()| p.offset()),
            })
            .collect())
    }

    /// Configures a share group (creating it); returns the settings now in force.
    pub fn configure_share_group(
        &mut self,
        request: &configure_group::Request<'_>,
    ) -> Result<ShareGroupSettings, ClientError> {
        let frame = self.connection().call(request)?;
        let view = frame.view::<configure_group::ResponseView>()?;
        check(ApiKey::ConfigureGroup, view.status())?;
        let config = view.config().ok_or_else(|| {
            ClientError::UnexpectedResponse("ConfigureGroup response without config".to_owned())
        })?;
        Ok(settings(&config))
    }

    /// Deletes a group with its committed offsets (consumer group) or share partitions (share
    /// group). Refused with GroupNotEmpty while it has members (for a share group: members
    /// that fetched recently), UnknownGroup when there is no such group.
    pub fn delete_group(&mut self, group: &str) -> Result<(), ClientError> {
        let frame = self.connection().call(&delete_group::Request { group })?;
        let view = frame.view::<delete_group::ResponseView>()?;
        check(ApiKey::DeleteGroup, view.status())
    }

    /// Forgets `group`'s committed offsets of `partitions` of `topic` (every partition of the
    /// topic when empty), as Kafka's OffsetDelete: one outcome per partition, in request order;
    /// GroupSubscribedToTopic while a member of the group subscribes to the topic.
    pub fn delete_group_offsets(
        &mut self,
        group: &str,
        topic: &str,
        partitions: &[u32],
    ) -> Result<PartitionOutcomes, ClientError> {
        let topics = [TopicPartitions { topic, partitions }];
        let frame = self.connection().call(&delete_offsets::Request {
            group,
            topics: &topics,
        })?;
        let view = frame.view::<delete_offsets::ResponseView>()?;
        check(ApiKey::DeleteOffsets, view.status())?;
        let outcomes: PartitionOutcomes = view
            .topics()
            .unwrap_or_default()
            .iter()
            .flat_map(|answer| answer.partitions().unwrap_or_default().iter())
            .map(|p| {
                let outcome = entry_error(ApiKey::DeleteOffsets, p.error_code(), p.error_message());
                (p.partition(), outcome)
            })
            .collect();
        if !partitions.is_empty() && outcomes.len() != partitions.len() {
            return Err(ClientError::UnexpectedResponse(format!(
                "DeleteOffsets answered {} of {} partitions",
                outcomes.len(),
                partitions.len()
            )));
        }
        Ok(outcomes)
    }

    /// Acquires share-group records (long poll up to the request's `max_wait_ms`). The
    /// request-wide status is in the result, so piggy-backed acknowledgement results are never
    /// lost to a fetch error; only a response that is not a ShareFetch response is `Err`.
    pub fn share_fetch(
        &mut self,
        request: &share_fetch::Request<'_>,
    ) -> Result<ShareFetchResult, ClientError> {
        let correlation_id = self.connection().send(request)?;
        let wait = Duration::from_millis(u64::from(request.max_wait_ms));
        let timeout = self.request_timeout() + wait;
        let frame = self.connection().receive_within(correlation_id, timeout)?;
        ShareFetchResult::from_frame(frame)
    }

    /// Settles share-group records by range; one outcome per range, in order.
    pub fn share_acknowledge(
        &mut self,
        group: &str,
        member_id: &str,
        topic: &str,
        partition: u32,
        ranges: &[AckRange],
    ) -> Result<Vec<EntryResult<(i64, i64)>>, ClientError> {
        let request = share_acknowledge::Request {
            group,
            member_id,
            topic,
            partition,
            ranges,
            leave: false,
        };
        self.share_acknowledge_request(&request)
    }

    /// Sends a whole ShareAcknowledge request, `leave` included (a share consumer closing
    /// leaves each partition: what it still holds there is released at once, and it stops
    /// counting as a member); one outcome per range, in order.
    pub fn share_acknowledge_request(
        &mut self,
        request: &share_acknowledge::Request<'_>,
    ) -> Result<Vec<EntryResult<(i64, i64)>>, ClientError> {
        let ranges = request.ranges;
        let frame = self.connection().call(request)?;
        let view = frame.view::<share_acknowledge::ResponseView>()?;
        check(ApiKey::ShareAcknowledge, view.status())?;
        let results = range_results(ApiKey::ShareAcknowledge, view.results());
        if results.len() != ranges.len() {
            // Which ranges the answers belong to is unknown: none of them counts as settled.
            return Err(ClientError::UnexpectedResponse(format!(
                "ShareAcknowledge answered {} of {} ranges",
                results.len(),
                ranges.len()
            )));
        }
        Ok(results)
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::net::TcpListener;
    use std::thread;

    use flatbuffers::FlatBufferBuilder;

    use super::*;
    use crate::client::connection::FrameReader;
    use crate::frame::FrameDecoder;
    use crate::message::offset_commit::{CommitTopic, PartitionOffset};
    use crate::message::Encode;

    #[test]
    fn a_commit_answer_must_answer_every_partition_sent() {
        // A server that answers the OffsetCommit with success and no per-partition entries.
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            let mut reader =
                FrameReader::new(stream.try_clone().unwrap(), FrameDecoder::default(), 4096);
            let header = *reader.read_frame().unwrap().header();
            let mut fbb = FlatBufferBuilder::new();
            let body = offset_commit::Response {
                status: Status::OK,
                topics: &[],
            }
            .encode(&mut fbb)
            .to_vec();
            let mut frame = Vec::new();
            crate::frame::write_frame(&mut frame, header.api, 0, header.correlation_id, &body, &[])
                .unwrap();
            let mut out = stream;
            out.write_all(&frame).unwrap();
            // Kept open until the client has read the answer.
            let _ = reader.read_frame();
        });
        let mut client = Client::connect(addr).unwrap();
        let partitions = [
            PartitionOffset {
                partition: 0,
                offset: 10,
            },
            PartitionOffset {
                partition: 1,
                offset: 20,
            },
        ];
        let result = client.commit_offsets(&offset_commit::Request {
            group: "g",
            member_id: "m",
            generation: 1,
            topics: &[CommitTopic {
                topic: "t",
                partitions: &partitions,
            }],
            instance_id: "",
        });
        // Neither offset is known to be committed: saying so with an empty Ok would let a
        // GroupConsumer count them as committed.
        assert!(
            matches!(result, Err(ClientError::UnexpectedResponse(_))),
            "{result:?}"
        );
        drop(client);
        server.join().unwrap();
    }
}
