//! Error codes carried in every response (`error_code: ushort`).
//!
//! The numbering is part of the wire protocol and mirrored as a table in `net/protocol.fbs` and
//! `net/PROTOCOL.md`; a code is never renumbered or reused. Codes this build does not know (from
//! a newer peer) read as [`ErrorCode::Unknown`].

/// A protocol error code. `None` (0) means success.
#[repr(u16)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ErrorCode {
    /// Success.
    #[default]
    None = 0,
    /// Unexpected server error (a bug or an unclassified failure); the message says more.
    Unknown = 1,
    /// A produced batch fails its length, magic or CRC-32C checks, or a fetch reached a stored
    /// batch that does (damaged on disk; seek past it).
    CorruptBatch = 2,
    /// The topic does not exist.
    UnknownTopic = 3,
    /// The topic exists but has no such partition.
    UnknownPartition = 4,
    /// The offset is below the log start offset or above the high watermark.
    OffsetOutOfRange = 5,
    /// CreateTopic of a name that already exists.
    TopicExists = 6,
    /// The body fails flatbuffer verification, raw bytes do not match the described lengths, or
    /// the request breaks the api's rules.
    InvalidRequest = 7,
    /// The api or its version is not supported by the server (see ApiVersions).
    UnsupportedVersion = 8,
    /// The frame is larger than the server's `frame_bytes_max`.
    FrameTooLarge = 9,
    /// The partition's storage reported an I/O error.
    StorageError = 10,
    /// No space left on the device for the write.
    DiskFull = 11,
    /// Too many requests in flight on this connection, or a buffer limit was reached.
    Throttled = 12,
    /// The requested acks or processing did not complete within the request's `timeout_ms`.
    Timeout = 13,
    /// The group does not exist.
    UnknownGroup = 14,
    /// The member id is not (or no longer) part of the group.
    UnknownMember = 15,
    /// The group is rebalancing: rejoin with JoinGroup, then retry.
    RebalanceInProgress = 16,
    /// The partition is not assigned to this member (for example after a rebalance).
    NotAssigned = 17,
    /// A share acknowledgement names records this member does not hold.
    InvalidRecordState = 18,
    /// A share acknowledgement arrived after the records' lock expired.
    LeaseExpired = 19,
    /// A configuration value is out of range or inconsistent.
    InvalidConfig = 20,
    /// An idempotent batch was already written; its earlier result stands.
    DuplicateSequence = 21,
    /// An idempotent batch's sequence number leaves a gap.
    OutOfOrderSequence = 22,
    /// The producer was fenced by a newer epoch of the same producer id.
    InvalidProducerEpoch = 23,
    /// The server is shutting down; retry on another connection later.
    ShuttingDown = 24,
    /// The operation needs a group without members (for example ResetGroupOffsets).
    GroupNotEmpty = 25,
    /// A consumer-group api was used on a share group, or the reverse. The Kafka listener also
    /// refuses with it (as INCONSISTENT_GROUP_PROTOCOL, Kafka's code for both) a JoinGroup
    /// none of whose assignor protocols every Kafka member of the group offers; native joins
    /// offer none and never get it for that.
    InvalidGroupKind = 26,
    /// A produced batch's timestamp is further ahead of the server's clock than
    /// `message_timestamp_after_max_ms` allows.
    InvalidTimestamp = 27,
    /// A produced batch is whole and its CRC matches, but the server does not take it: its
    /// header claims offsets its records cannot hold, or it is a control batch (the server
    /// writes those) or a transactional one (transactions are not supported).
    InvalidRecord = 28,
    /// JoinGroup from a new member of a consumer group that already has `group_members_max`
    /// members (Kafka's GROUP_MAX_SIZE_REACHED).
    GroupFull = 29,
    /// A group name the server does not take: empty, with control characters, or longer than
    /// its file name allows (Kafka's INVALID_GROUP_ID).
    InvalidGroupName = 30,
    /// The group's offsets of a topic its members subscribe to cannot be deleted while they do
    /// (Kafka's GROUP_SUBSCRIBED_TO_TOPIC, answered to OffsetDelete).
    GroupSubscribedToTopic = 31,
    /// A static member (one with an instance id) was replaced by a newer member of the same
    /// instance id, which another client started with: the older one must stop (Kafka's
    /// FENCED_INSTANCE_ID).
    FencedInstanceId = 32,
    /// A share group member's heartbeat named an epoch other than the one it was given: it
    /// must join again (Kafka's FENCED_MEMBER_EPOCH).
    FencedMemberEpoch = 33,
}

/// Every code, in numeric order (for tables, docs and exhaustive tests).
pub const ALL_ERROR_CODES: [ErrorCode; 34] = [
    ErrorCode::None,
    ErrorCode::Unknown,
    ErrorCode::CorruptBatch,
    ErrorCode::UnknownTopic,
    ErrorCode::UnknownPartition,
    ErrorCode::OffsetOutOfRange,
    ErrorCode::TopicExists,
    ErrorCode::InvalidRequest,
    ErrorCode::UnsupportedVersion,
    ErrorCode::FrameTooLarge,
    ErrorCode::StorageError,
    ErrorCode::DiskFull,
    ErrorCode::Throttled,
    ErrorCode::Timeout,
    ErrorCode::UnknownGroup,
    ErrorCode::UnknownMember,
    ErrorCode::RebalanceInProgress,
    ErrorCode::NotAssigned,
    ErrorCode::InvalidRecordState,
    ErrorCode::LeaseExpired,
    ErrorCode::InvalidConfig,
    ErrorCode::DuplicateSequence,
    ErrorCode::OutOfOrderSequence,
    ErrorCode::InvalidProducerEpoch,
    ErrorCode::ShuttingDown,
    ErrorCode::GroupNotEmpty,
    ErrorCode::InvalidGroupKind,
    ErrorCode::InvalidTimestamp,
    ErrorCode::InvalidRecord,
    ErrorCode::GroupFull,
    ErrorCode::InvalidGroupName,
    ErrorCode::GroupSubscribedToTopic,
    ErrorCode::FencedInstanceId,
    ErrorCode::FencedMemberEpoch,
];

impl ErrorCode {
    /// The wire value.
    pub const fn as_u16(self) -> u16 {
        self as u16
    }

    /// Reads a wire value; codes this build does not know become [`ErrorCode::Unknown`], so a
    /// newer server never makes an older client fail to parse a response.
    pub fn from_u16(code: u16) -> Self {
        ALL_ERROR_CODES
            .get(usize::from(code))
            .copied()
            .unwrap_or(ErrorCode::Unknown)
    }

    /// True for success.
    pub const fn is_ok(self) -> bool {
        matches!(self, ErrorCode::None)
    }

    /// True when the same request may succeed if sent again later (after a back-off, or after
    /// rejoining the group for `RebalanceInProgress`). Clients retry only these.
    pub const fn is_retriable(self) -> bool {
        matches!(
            self,
            ErrorCode::StorageError
                | ErrorCode::DiskFull
                | ErrorCode::Throttled
                | ErrorCode::Timeout
                | ErrorCode::RebalanceInProgress
                | ErrorCode::ShuttingDown
                | ErrorCode::GroupNotEmpty
        )
    }

    /// The variant's name as written in the protocol documents.
    pub const fn name(self) -> &'static str {
        match self {
            ErrorCode::None => "None",
            ErrorCode::Unknown => "Unknown",
            ErrorCode::CorruptBatch => "CorruptBatch",
            ErrorCode::UnknownTopic => "UnknownTopic",
            ErrorCode::UnknownPartition => "UnknownPartition",
            ErrorCode::OffsetOutOfRange => "OffsetOutOfRange",
            ErrorCode::TopicExists => "TopicExists",
            ErrorCode::InvalidRequest => "InvalidRequest",
            ErrorCode::UnsupportedVersion => "UnsupportedVersion",
            ErrorCode::FrameTooLarge => "FrameTooLarge",
            ErrorCode::StorageError => "StorageError",
            ErrorCode::DiskFull => "DiskFull",
            ErrorCode::Throttled => "Throttled",
            ErrorCode::Timeout => "Timeout",
            ErrorCode::UnknownGroup => "UnknownGroup",
            ErrorCode::UnknownMember => "UnknownMember",
            ErrorCode::RebalanceInProgress => "RebalanceInProgress",
            ErrorCode::NotAssigned => "NotAssigned",
            ErrorCode::InvalidRecordState => "InvalidRecordState",
            ErrorCode::LeaseExpired => "LeaseExpired",
            ErrorCode::InvalidConfig => "InvalidConfig",
            ErrorCode::DuplicateSequence => "DuplicateSequence",
            ErrorCode::OutOfOrderSequence => "OutOfOrderSequence",
            ErrorCode::InvalidProducerEpoch => "InvalidProducerEpoch",
            ErrorCode::ShuttingDown => "ShuttingDown",
            ErrorCode::GroupNotEmpty => "GroupNotEmpty",
            ErrorCode::InvalidGroupKind => "InvalidGroupKind",
            ErrorCode::InvalidTimestamp => "InvalidTimestamp",
            ErrorCode::InvalidRecord => "InvalidRecord",
            ErrorCode::GroupFull => "GroupFull",
            ErrorCode::InvalidGroupName => "InvalidGroupName",
            ErrorCode::GroupSubscribedToTopic => "GroupSubscribedToTopic",
            ErrorCode::FencedInstanceId => "FencedInstanceId",
            ErrorCode::FencedMemberEpoch => "FencedMemberEpoch",
        }
    }
}

impl From<ErrorCode> for u16 {
    fn from(code: ErrorCode) -> u16 {
        code.as_u16()
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.name(), self.as_u16())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_dense_and_round_trips() {
        for (index, code) in ALL_ERROR_CODES.iter().enumerate() {
            assert_eq!(usize::from(code.as_u16()), index);
            assert_eq!(ErrorCode::from_u16(code.as_u16()), *code);
        }
    }

    #[test]
    fn unknown_wire_values_read_as_unknown() {
        assert_eq!(
            ErrorCode::from_u16(ALL_ERROR_CODES.len() as u16),
            ErrorCode::Unknown
        );
        assert_eq!(ErrorCode::from_u16(u16::MAX), ErrorCode::Unknown);
    }

    #[test]
    fn retriable_set() {
        assert!(ErrorCode::Throttled.is_retriable());
        assert!(ErrorCode::ShuttingDown.is_retriable());
        assert!(!ErrorCode::None.is_retriable());
        assert!(!ErrorCode::CorruptBatch.is_retriable());
        assert!(!ErrorCode::UnknownTopic.is_retriable());
    }

    #[test]
    fn schema_comment_table_matches() {
        // The table in protocol.fbs is the public spec; keep it in step with this enum.
        let schema = include_str!("../protocol.fbs");
        for code in ALL_ERROR_CODES {
            let needle = format!("{} {} ", code.as_u16(), code.name());
            let line = schema
                .lines()
                .find(|line| {
                    line.strip_prefix("//")
                        .is_some_and(|rest| rest.trim_start().starts_with(&needle))
                })
                .unwrap_or_else(|| panic!("protocol.fbs lacks a line for {code}"));
            let retriable = !line.contains("not retriable") && line.contains("retriable");
            assert_eq!(retriable, code.is_retriable(), "{line}");
        }
    }
}
