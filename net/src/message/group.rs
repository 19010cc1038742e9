//! Types shared by the group apis (JoinGroup .. ConfigureGroup, ShareFetch).

use flatbuffers::{FlatBufferBuilder, WIPOffset};

use super::{opt_string, table_vector, Status};
use crate::protocol;

/// Kind of group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum GroupKind {
    /// Classic consumer group: members split partitions and commit offsets.
    #[default]
    Consumer,
    /// Share group: records are leased one by one to any member (KIP-932).
    Share,
}

impl GroupKind {
    /// The wire value.
    pub fn to_wire(self) -> protocol::GroupKind {
        match self {
            GroupKind::Consumer => protocol::GroupKind::Consumer,
            GroupKind::Share => protocol::GroupKind::Share,
        }
    }

    /// Reads a wire value; `None` for values this build does not know.
    pub fn from_wire(kind: protocol::GroupKind) -> Option<Self> {
        match kind {
            protocol::GroupKind::Consumer => Some(GroupKind::Consumer),
            protocol::GroupKind::Share => Some(GroupKind::Share),
            _ => None,
        }
    }
}

/// Lifecycle state of a group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum GroupState {
    /// No members.
    #[default]
    Empty,
    /// Membership changed; members must rejoin.
    PreparingRebalance,
    /// Every member holds its current assignment.
    Stable,
    /// Being deleted.
    Dead,
}

impl GroupState {
    /// The state's name, as Kafka spells it too (`Empty`, `PreparingRebalance`, `Stable`,
    /// `Dead`).
    pub fn name(self) -> &'static str {
        match self {
            GroupState::Empty => "Empty",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::Stable => "Stable",
            GroupState::Dead => "Dead",
        }
    }

    /// The wire value.
    pub fn to_wire(self) -> protocol::GroupState {
        match self {
            GroupState::Empty => protocol::GroupState::Empty,
            GroupState::PreparingRebalance => protocol::GroupState::PreparingRebalance,
            GroupState::Stable => protocol::GroupState::Stable,
            GroupState::Dead => protocol::GroupState::Dead,
        }
    }

    /// Reads a wire value; `None` for values this build does not know.
    pub fn from_wire(state: protocol::GroupState) -> Option<Self> {
        match state {
            protocol::GroupState::Empty => Some(GroupState::Empty),
            protocol::GroupState::PreparingRebalance => Some(GroupState::PreparingRebalance),
            protocol::GroupState::Stable => Some(GroupState::Stable),
            protocol::GroupState::Dead => Some(GroupState::Dead),
            _ => None,
        }
    }
}

/// Settings of a share group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShareGroupConfig<'a> {
    /// How long an acquired record stays locked to its member.
    pub lock_ms: u32,
    /// Deliveries after which a record is archived.
    pub delivery_limit: u16,
    /// Where archived records are copied; empty for none.
    pub dead_letter_topic: &'a str,
    /// Cap on in-flight records per share partition.
    pub in_flight_records_max: u32,
}

/// Writes a `ShareGroupConfig` table.
pub(crate) fn build_share_group_config<'f>(
    fbb: &mut FlatBufferBuilder<'f>,
    config: &ShareGroupConfig<'_>,
) -> WIPOffset<protocol::ShareGroupConfig<'f>> {
    let dead_letter_topic = opt_string(fbb, config.dead_letter_topic);
    protocol::ShareGroupConfig::create(
        fbb,
        &protocol::ShareGroupConfigArgs {
            lock_ms: config.lock_ms,
            delivery_limit: config.delivery_limit,
            dead_letter_topic,
            in_flight_records_max: config.in_flight_records_max,
        },
    )
}

/// Reads a `ShareGroupConfig` view.
pub fn share_group_config<'a>(view: &protocol::ShareGroupConfig<'a>) -> ShareGroupConfig<'a> {
    ShareGroupConfig {
        lock_ms: view.lock_ms(),
        delivery_limit: view.delivery_limit(),
        dead_letter_topic: view.dead_letter_topic().unwrap_or(""),
        in_flight_records_max: view.in_flight_records_max(),
    }
}

/// A group's committed offset for one partition, with lag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommittedOffset<'a> {
    /// Partition id.
    pub partition: u32,
    /// Outcome for this partition.
    pub status: Status<'a>,
    /// Next offset to consume; -1 if nothing was committed.
    pub committed_offset: i64,
    /// Partition high watermark; -1 when unknown.
    pub high_watermark: i64,
    /// `high_watermark - committed_offset`; -1 when unknown.
    pub lag: i64,
}

impl Default for CommittedOffset<'_> {
    fn default() -> Self {
        Self {
            partition: 0,
            status: Status::OK,
            committed_offset: -1,
            high_watermark: -1,
            lag: -1,
        }
    }
}

/// Committed offsets of one topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TopicOffsets<'a> {
    /// Topic name.
    pub topic: &'a str,
    /// One entry per partition.
    pub partitions: &'a [CommittedOffset<'a>],
}

/// Writes an `OffsetFetchTopic` table.
pub(crate) fn build_topic_offsets<'f>(
    fbb: &mut FlatBufferBuilder<'f>,
    item: &TopicOffsets<'_>,
) -> WIPOffset<protocol::OffsetFetchTopic<'f>> {
    let topic = Some(fbb.create_string(item.topic));
    let partitions = Some(table_vector(fbb, item.partitions, |fbb, p| {
        let error_message = opt_string(fbb, p.status.message);
        protocol::OffsetFetchPartition::create(
            fbb,
            &protocol::OffsetFetchPartitionArgs {
                partition: p.partition,
                error_code: p.status.code.as_u16(),
                error_message,
                committed_offset: p.committed_offset,
                high_watermark: p.high_watermark,
                lag: p.lag,
            },
        )
    }));
    protocol::OffsetFetchTopic::create(fbb, &protocol::OffsetFetchTopicArgs { topic, partitions })
}
