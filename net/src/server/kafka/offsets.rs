//! OffsetCommit and OffsetFetch on ringlog's group coordinator: the committed offsets are the
//! ones the native protocol commits and reads, stored durably on each partition's shard.

use std::collections::HashMap;
use std::rc::Rc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::offset_commit_request::OffsetCommitRequestPartition;
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::offset_delete_response::{
    OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
};
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use kafka_protocol::messages::{
    GroupId, OffsetCommitRequest, OffsetCommitResponse, OffsetDeleteRequest, OffsetDeleteResponse,
    OffsetFetchRequest, OffsetFetchResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;

use super::codec::{respond, str_bytes, KafkaError, KafkaRequest, KafkaResponse};
use super::errors::{failure_code, group_failure_code};
use super::groups::{instance_id, member_failure_code, to_coordinator, unexpected_answer};
use super::KafkaShard;
use crate::error_code::ErrorCode;
use crate::server::group::commit_metadata::{CommitMetadata, MetadataTooLarge};
use crate::server::group::membership::{MemberRef, StaleGeneration};
use crate::server::group::{
    self, CommitTopics, GroupCall, GroupReturn, OffsetEntry, PartitionCommit, TopicFilter,
};
use crate::server::message::Failure;
use crate::server::shard::Shard;

/// Serves OffsetCommit: durable on each partition's owner before the answer. A member commits
/// with its generation (another one is ILLEGAL_GENERATION, after UNKNOWN_MEMBER_ID for a
/// member the group lacks, as from Kafka); a consumer outside any group (assign()) commits
/// with generation -1 while the group has no members. Each offset is stored with its metadata (null as empty);
/// a partition whose metadata is over the bound is refused alone, storing nothing.
pub(crate) async fn offset_commit(
    kafka: &Rc<KafkaShard>,
    request: &KafkaRequest,
) -> Result<KafkaResponse, KafkaError> {
    let body: OffsetCommitRequest = request.decode_body()?;
    let group = body.group_id.0.to_string();
    let mut topics: CommitTopics = Vec::with_capacity(body.topics.len());
    for topic in &body.topics {
        let name = topic.name.0.to_string();
        // Partitions a commit cannot name (negative) or whose metadata is too large are
        // answered without asking the coordinator.
        let offsets = topic
            .partitions
            .iter()
            .filter_map(|partition| {
                Some(PartitionCommit {
                    partition: u32::try_from(partition.partition_index).ok()?,
                    offset: partition.committed_offset,
                    metadata: metadata(partition).ok()?,
                })
            })
            .collect();
        topics.push((name, offsets));
    }
    let generation = body.generation_id_or_member_epoch;
    let call = GroupCall::Commit {
        group: group.clone(),
        member: MemberRef {
            member_id: body.member_id.to_string(),
            instance_id: instance_id(&body.group_instance_id),
        },
        generation,
        stale: StaleGeneration::IllegalGeneration,
        topics,
    };
    let results = match to_coordinator(&kafka.shard, &group, call).await {
        Ok(GroupReturn::Committed(result)) => result,
        Ok(_) => Err(unexpected_answer()),
        Err(failure) => Err(failure),
    };
    let codes = CommitCodes::of(&results, generation, request.version());
    let response_topics = body
        .topics
        .iter()
        .map(|topic| {
            let name = topic.name.0.as_str();
            let partitions = topic
                .partitions
                .iter()
                .map(|partition| {
                    OffsetCommitResponsePartition::default()
                        .with_partition_index(partition.partition_index)
                        .with_error_code(codes.partition_code(name, partition))
                })
                .collect();
            OffsetCommitResponseTopic::default()
                .with_name(topic.name.clone())
                .with_partitions(partitions)
        })
        .collect();
    respond(
        request,
        &OffsetCommitResponse::default().with_topics(response_topics),
    )
}

/// The metadata to store with a partition's offset.
fn metadata(
    partition: &OffsetCommitRequestPartition,
) -> Result<Option<CommitMetadata>, MetadataTooLarge> {
    CommitMetadata::new(partition.committed_metadata.as_deref().unwrap_or(""))
}

fn metadata_len(partition: &OffsetCommitRequestPartition) -> usize {
    partition.committed_metadata.as_deref().map_or(0, str::len)
}

/// The Kafka code of each partition's commit, looked up by topic and partition: a commit may
/// name tens of thousands of partitions, and a scan of the results per partition would make
/// building the answer quadratic on the shard thread.
enum CommitCodes<'a> {
    /// The whole commit failed (unknown member, stale generation, ...): one code for all.
    All(i16),
    /// Per topic, per partition.
    Each(HashMap<&'a str, HashMap<u32, i16>>),
}

impl<'a> CommitCodes<'a> {
    fn of(
        results: &'a Result<group::CommitResults, Failure>,
        generation: i32,
        version: i16,
    ) -> CommitCodes<'a> {
        let results = match results {
            Ok(results) => results,
            // A generation of a group the coordinator does not have comes from a generation
            // it no longer knows: ILLEGAL_GENERATION, as Kafka answers up to OffsetCommit v8,
            // GROUP_ID_NOT_FOUND from v9. Kafka's client rejoins.
            Err(failure) if failure.code == ErrorCode::UnknownGroup && generation >= 0 => {
                let error = if version >= 9 {
                    ResponseError::GroupIdNotFound
                } else {
                    ResponseError::IllegalGeneration
                };
                return CommitCodes::All(error.code());
            }
            // From v9 (the consumer group protocol's) an epoch other than the member's is
            // STALE_MEMBER_EPOCH: its client commits again once its heartbeat caught up.
            Err(failure) if failure.code == ErrorCode::NotAssigned && version >= 9 => {
                return CommitCodes::All(ResponseError::StaleMemberEpoch.code())
            }
            Err(failure) => return CommitCodes::All(member_failure_code(failure)),
        };
        let mut codes: HashMap<&str, HashMap<u32, i16>> = HashMap::with_capacity(results.len());
        for (topic, entries) in results {
            let topic_codes = codes.entry(topic.as_str()).or_default();
            for (partition, outcome) in entries {
                let code = outcome.as_ref().map_or(0, member_failure_code);
                // The first outcome of a partition named twice, as a scan would find.
                topic_codes.entry(*partition).or_insert(code);
            }
        }
        CommitCodes::Each(codes)
    }

    /// The code of a partition as the request names it. An error of the whole commit comes
    /// first, as from Kafka, which checks the member before the metadata.
    fn partition_code(&self, topic: &str, partition: &OffsetCommitRequestPartition) -> i16 {
        let Ok(index) = u32::try_from(partition.partition_index) else {
            return ResponseError::UnknownTopicOrPartition.code();
        };
        match self {
            CommitCodes::All(code) => *code,
            CommitCodes::Each(_) if CommitMetadata::check(metadata_len(partition)).is_err() => {
                ResponseError::OffsetMetadataTooLarge.code()
            }
            CommitCodes::Each(_) => self.code(topic, index),
        }
    }

    fn code(&self, topic: &str, partition: u32) -> i16 {
        match self {
            CommitCodes::All(code) => *code,
            CommitCodes::Each(codes) => codes
                .get(topic)
                .and_then(|partitions| partitions.get(&partition))
                .copied()
                .unwrap_or_else(|| ResponseError::UnknownServerError.code()),
        }
    }
}

/// Serves OffsetDelete (kafka-consumer-groups --delete-offsets): forgets the group's committed
/// offsets of the partitions named, durably, each answered on its own. As from Kafka: a group
/// the server does not have is GROUP_ID_NOT_FOUND; a topic a member subscribes to answers
/// GROUP_SUBSCRIBED_TO_TOPIC for each of its partitions and keeps them; a partition the topic
/// lacks is UNKNOWN_TOPIC_OR_PARTITION; one where the group committed nothing is a success.
pub(crate) async fn offset_delete(
    kafka: &Rc<KafkaShard>,
    request: &KafkaRequest,
) -> Result<KafkaResponse, KafkaError> {
    let body: OffsetDeleteRequest = request.decode_body()?;
    let group = body.group_id.0.to_string();
    let mut topics = Vec::with_capacity(body.topics.len());
    for topic in &body.topics {
        let name = topic.name.0.to_string();
        // Negative partitions name nothing the server could have.
        let partitions: Vec<u32> = topic
            .partitions
            .iter()
            .filter_map(|p| u32::try_from(p.partition_index).ok())
            .collect();
        let call = GroupCall::DeleteOffsets {
            group: group.clone(),
            topic: name,
            partitions,
        };
        let outcome = match to_coordinator(&kafka.shard, &group, call).await {
            Ok(GroupReturn::Committed(result)) => result,
            Ok(_) => Err(unexpected_answer()),
            Err(failure) => Err(failure),
        };
        let results = match outcome {
            Ok(results) => results,
            Err(failure) => {
                let response =
                    OffsetDeleteResponse::default().with_error_code(group_failure_code(&failure));
                return respond(request, &response);
            }
        };
        let mut codes = results
            .into_iter()
            .flat_map(|(_, entries)| entries)
            .map(|(_, outcome)| outcome.as_ref().map_or(0, failure_code));
        let partitions = topic
            .partitions
            .iter()
            .map(|asked| {
                let code = if asked.partition_index < 0 {
                    ResponseError::UnknownTopicOrPartition.code()
                } else {
                    codes
                        .next()
                        .unwrap_or(ResponseError::UnknownServerError.code())
                };
                OffsetDeleteResponsePartition::default()
                    .with_partition_index(asked.partition_index)
                    .with_error_code(code)
            })
            .collect();
        topics.push(
            OffsetDeleteResponseTopic::default()
                .with_name(topic.name.clone())
                .with_partitions(partitions),
        );
    }
    respond(
        request,
        &OffsetDeleteResponse::default().with_topics(topics),
    )
}

/// Serves OffsetFetch (one group before version 8, a list from version 8). A group or
/// partition with no committed offset reads -1, as from Kafka.
pub(crate) async fn offset_fetch(
    kafka: &Rc<KafkaShard>,
    request: &KafkaRequest,
) -> Result<KafkaResponse, KafkaError> {
    let body: OffsetFetchRequest = request.decode_body()?;
    if request.version() >= 8 {
        let mut groups = Vec::with_capacity(body.groups.len());
        for wanted in &body.groups {
            let topics = wanted.topics.as_ref().map(|topics| {
                topics
                    .iter()
                    .map(|t| (t.name.0.to_string(), t.partition_indexes.clone()))
                    .collect::<Vec<_>>()
            });
            let (code, entries) =
                committed(&kafka.shard, &wanted.group_id.0, topics.as_deref()).await;
            let topics = entries
                .into_iter()
                .map(|(topic, partitions)| {
                    OffsetFetchResponseTopics::default()
                        .with_name(TopicName(str_bytes(topic)))
                        .with_partitions(
                            partitions
                                .into_iter()
                                .map(|p| {
                                    OffsetFetchResponsePartitions::default()
                                        .with_partition_index(p.partition)
                                        .with_committed_offset(p.offset)
                                        .with_metadata(Some(wire_metadata(p.metadata)))
                                        .with_error_code(p.code)
                                })
                                .collect(),
                        )
                })
                .collect();
            groups.push(
                OffsetFetchResponseGroup::default()
                    .with_group_id(GroupId(wanted.group_id.0.clone()))
                    .with_topics(topics)
                    .with_error_code(code),
            );
        }
        return respond(request, &OffsetFetchResponse::default().with_groups(groups));
    }
    let topics = body.topics.as_ref().map(|topics| {
        topics
            .iter()
            .map(|t| (t.name.0.to_string(), t.partition_indexes.clone()))
            .collect::<Vec<_>>()
    });
    let (code, mut entries) = committed(&kafka.shard, &body.group_id.0, topics.as_deref()).await;
    if code != 0 && request.version() < 2 {
        // No top-level error code before version 2: as Kafka does, the group's error goes on
        // every partition asked for, or the client would read "nothing committed".
        entries = topics
            .unwrap_or_default()
            .into_iter()
            .map(|(topic, partitions)| {
                let partitions = partitions
                    .into_iter()
                    .map(|partition| CommittedPartition::none(partition, code))
                    .collect();
                (topic, partitions)
            })
            .collect();
    }
    let topics = entries
        .into_iter()
        .map(|(topic, partitions)| {
            OffsetFetchResponseTopic::default()
                .with_name(TopicName(str_bytes(topic)))
                .with_partitions(
                    partitions
                        .into_iter()
                        .map(|p| {
                            OffsetFetchResponsePartition::default()
                                .with_partition_index(p.partition)
                                .with_committed_offset(p.offset)
                                .with_metadata(Some(wire_metadata(p.metadata)))
                                .with_error_code(p.code)
                        })
                        .collect(),
                )
        })
        .collect();
    let response = OffsetFetchResponse::default().with_topics(topics);
    // The top-level error code exists from version 2.
    let response = if request.version() >= 2 {
        response.with_error_code(code)
    } else {
        response
    };
    respond(request, &response)
}

/// One partition of an OffsetFetch answer.
struct CommittedPartition {
    partition: i32,
    /// -1 when nothing is committed.
    offset: i64,
    metadata: Option<CommitMetadata>,
    code: i16,
}

impl CommittedPartition {
    /// A partition with no committed offset to show, and why (0: none was committed).
    fn none(partition: i32, code: i16) -> CommittedPartition {
        CommittedPartition {
            partition,
            offset: -1,
            metadata: None,
            code,
        }
    }
}

/// Metadata as OffsetFetch sends it: empty, never null, when there is none, as from Kafka.
fn wire_metadata(metadata: Option<CommitMetadata>) -> StrBytes {
    metadata.map_or_else(StrBytes::default, |m| str_bytes(m.into_string()))
}

/// Per topic, its partitions.
type CommittedTopics = Vec<(String, Vec<CommittedPartition>)>;

/// The committed offsets of `group` for `wanted` (`None`: every committed partition), and the
/// group-level error code.
async fn committed(
    shard: &Rc<Shard>,
    group: &str,
    wanted: Option<&[(String, Vec<i32>)]>,
) -> (i16, CommittedTopics) {
    // Only partitions that exist are asked for: one the topic lacks has nothing committed
    // (-1, no error, as from Kafka, whether or not the group exists), where the coordinator
    // would answer it UNKNOWN_TOPIC_OR_PARTITION (read as the same by `wanted_partition`,
    // for a topic deleted after this look).
    let filter: Option<TopicFilter> = wanted.map(|topics| {
        topics
            .iter()
            .filter_map(|(topic, partitions)| {
                let count = shard.topic(topic)?.config.partitions;
                let partitions = partitions
                    .iter()
                    .filter_map(|p| u32::try_from(*p).ok())
                    .filter(|p| *p < count)
                    .collect::<Vec<u32>>();
                // An empty list would ask for every partition of the topic.
                (!partitions.is_empty()).then(|| (topic.clone(), partitions))
            })
            .collect()
    });
    let call = GroupCall::FetchOffsets {
        group: group.to_string(),
        topics: filter,
    };
    let entries: Result<Vec<OffsetEntry>, Failure> = match to_coordinator(shard, group, call).await
    {
        Ok(GroupReturn::Offsets(result)) => result,
        Ok(_) => Err(unexpected_answer()),
        Err(failure) => Err(failure),
    };
    let entries = match entries {
        Ok(entries) => entries,
        // A group with nothing committed yet: every offset is unknown, not an error.
        Err(failure) if failure.code == ErrorCode::UnknownGroup => Vec::new(),
        Err(failure) => return (group_failure_code(&failure), Vec::new()),
    };
    let Some(wanted) = wanted else {
        let mut out: CommittedTopics = Vec::new();
        for entry in entries.into_iter().filter(|e| e.committed >= 0) {
            let partition = CommittedPartition {
                partition: i32::try_from(entry.partition).unwrap_or(i32::MAX),
                offset: entry.committed,
                metadata: entry.metadata,
                code: 0,
            };
            match out.iter_mut().find(|(topic, _)| *topic == entry.topic) {
                Some((_, partitions)) => partitions.push(partition),
                None => out.push((entry.topic, vec![partition])),
            }
        }
        return (0, out);
    };
    // By topic and partition: a scan of the entries per wanted partition would make the
    // answer quadratic in the partitions asked for.
    let mut by_partition: HashMap<(&str, u32), &OffsetEntry> =
        HashMap::with_capacity(entries.len());
    for entry in &entries {
        by_partition
            .entry((entry.topic.as_str(), entry.partition))
            .or_insert(entry);
    }
    let out = wanted
        .iter()
        .map(|(topic, partitions)| {
            // A topic that does not exist has nothing committed: offset -1 and no error, as
            // Kafka answers (its Java consumer throws on UNKNOWN_TOPIC_OR_PARTITION here).
            let partitions = partitions
                .iter()
                .map(|&partition| {
                    let entry = u32::try_from(partition)
                        .ok()
                        .and_then(|index| by_partition.get(&(topic.as_str(), index)).copied());
                    wanted_partition(partition, entry)
                })
                .collect();
            (topic.clone(), partitions)
        })
        .collect();
    (0, out)
}

/// The answer for a partition asked for, from the coordinator's entry for it (none: nothing
/// committed). A partition whose topic the owner no longer has (deleted after this shard
/// looked, or with fewer partitions) has nothing committed either: -1 and no error, as Kafka,
/// which never looks at the topic here, answers a partition it holds no offset for.
fn wanted_partition(partition: i32, entry: Option<&OffsetEntry>) -> CommittedPartition {
    match entry {
        Some(OffsetEntry {
            failure:
                Some(Failure {
                    code: ErrorCode::UnknownTopic | ErrorCode::UnknownPartition,
                    ..
                }),
            ..
        }) => CommittedPartition::none(partition, 0),
        Some(OffsetEntry {
            failure: Some(failure),
            ..
        }) => CommittedPartition::none(partition, group_failure_code(failure)),
        Some(entry) => CommittedPartition {
            partition,
            offset: entry.committed.max(-1),
            metadata: entry.metadata.clone(),
            code: 0,
        },
        None => CommittedPartition::none(partition, 0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failed(code: ErrorCode) -> OffsetEntry {
        OffsetEntry {
            topic: "t".to_string(),
            partition: 0,
            committed: -1,
            metadata: None,
            high_watermark: -1,
            failure: Some(Failure::new(code, "failed")),
        }
    }

    /// A topic deleted (or a partition gone) between the door's look at the catalog and the
    /// partition owner's has nothing committed: -1 and no error, as Kafka answers any
    /// partition it holds no offset for (its Java consumer throws on
    /// UNKNOWN_TOPIC_OR_PARTITION here).
    #[test]
    fn a_partition_whose_topic_went_away_reads_nothing_committed() {
        for code in [ErrorCode::UnknownTopic, ErrorCode::UnknownPartition] {
            let answer = wanted_partition(3, Some(&failed(code)));
            assert_eq!((answer.partition, answer.offset, answer.code), (3, -1, 0));
        }
        // Other failures are reported, as the coordinator's errors are.
        let answer = wanted_partition(3, Some(&failed(ErrorCode::StorageError)));
        assert_eq!(
            (answer.offset, answer.code),
            (-1, ResponseError::NotCoordinator.code())
        );
    }
}
