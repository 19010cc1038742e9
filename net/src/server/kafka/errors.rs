//! ringlog's error codes as the Kafka error codes clients act on.

use kafka_protocol::error::ResponseError;
use kafka_protocol::protocol::StrBytes;

use crate::error_code::ErrorCode;
use crate::server::message::Failure;

use super::codec::str_bytes;

/// The Kafka error a client should see for `code`.
pub(crate) fn kafka_error(code: ErrorCode) -> ResponseError {
    match code {
        ErrorCode::None => ResponseError::Unknown(0),
        ErrorCode::CorruptBatch => ResponseError::CorruptMessage,
        ErrorCode::UnknownTopic | ErrorCode::UnknownPartition => {
            ResponseError::UnknownTopicOrPartition
        }
        ErrorCode::OffsetOutOfRange => ResponseError::OffsetOutOfRange,
        ErrorCode::TopicExists => ResponseError::TopicAlreadyExists,
        ErrorCode::InvalidRequest => ResponseError::InvalidRequest,
        ErrorCode::UnsupportedVersion => ResponseError::UnsupportedVersion,
        ErrorCode::FrameTooLarge => ResponseError::MessageTooLarge,
        ErrorCode::StorageError | ErrorCode::DiskFull => ResponseError::KafkaStorageError,
        // Refused before the write: the retriable code clients back off on and retry.
        ErrorCode::Throttled => ResponseError::NotEnoughReplicas,
        ErrorCode::Timeout => ResponseError::RequestTimedOut,
        ErrorCode::UnknownGroup => ResponseError::GroupIdNotFound,
        ErrorCode::UnknownMember => ResponseError::UnknownMemberId,
        ErrorCode::RebalanceInProgress => ResponseError::RebalanceInProgress,
        ErrorCode::NotAssigned => ResponseError::IllegalGeneration,
        ErrorCode::InvalidRecordState | ErrorCode::LeaseExpired => {
            ResponseError::InvalidRecordState
        }
        ErrorCode::InvalidConfig => ResponseError::InvalidConfig,
        ErrorCode::DuplicateSequence => ResponseError::DuplicateSequenceNumber,
        ErrorCode::OutOfOrderSequence => ResponseError::OutOfOrderSequenceNumber,
        ErrorCode::InvalidProducerEpoch => ResponseError::InvalidProducerEpoch,
        ErrorCode::InvalidTimestamp => ResponseError::InvalidTimestamp,
        // Kafka's answer to a batch that passes its CRC but not its validation; unlike
        // CORRUPT_MESSAGE, clients do not retry it.
        ErrorCode::InvalidRecord => ResponseError::InvalidRecord,
        // Kafka brokers answer this while they move leadership away; clients refresh metadata
        // and retry, which is what a restarting ringlog wants too.
        ErrorCode::ShuttingDown => ResponseError::NotLeaderOrFollower,
        ErrorCode::GroupNotEmpty => ResponseError::NonEmptyGroup,
        ErrorCode::InvalidGroupKind => ResponseError::InconsistentGroupProtocol,
        ErrorCode::GroupFull => ResponseError::GroupMaxSizeReached,
        ErrorCode::InvalidGroupName => ResponseError::InvalidGroupId,
        ErrorCode::GroupSubscribedToTopic => ResponseError::GroupSubscribedToTopic,
        ErrorCode::FencedInstanceId => ResponseError::FencedInstanceId,
        ErrorCode::FencedMemberEpoch => ResponseError::FencedMemberEpoch,
        _ => ResponseError::UnknownServerError,
    }
}

/// The Kafka error code for `code` (0 for success).
pub(crate) fn kafka_code(code: ErrorCode) -> i16 {
    kafka_error(code).code()
}

/// The Kafka error code of a failure.
pub(crate) fn failure_code(failure: &Failure) -> i16 {
    kafka_code(failure.code)
}

/// The Kafka error code of a failure of a group API (JoinGroup, SyncGroup, Heartbeat,
/// LeaveGroup, OffsetCommit, OffsetFetch and the group admin calls). Kafka's coordinator never
/// answers these with produce errors: a full or backed-up store becomes
/// COORDINATOR_NOT_AVAILABLE and a failed or stopping one NOT_COORDINATOR, both retriable
/// (the client looks the coordinator up again and retries), where the Java consumer takes
/// NOT_ENOUGH_REPLICAS or KAFKA_STORAGE_ERROR from JoinGroup or OffsetCommit as fatal.
pub(crate) fn group_failure_code(failure: &Failure) -> i16 {
    match failure.code {
        ErrorCode::Throttled => ResponseError::CoordinatorNotAvailable.code(),
        ErrorCode::StorageError | ErrorCode::DiskFull | ErrorCode::ShuttingDown => {
            ResponseError::NotCoordinator.code()
        }
        code => kafka_code(code),
    }
}

/// The failure's message, for the responses that carry one.
pub(crate) fn failure_message(failure: &Failure) -> Option<StrBytes> {
    Some(str_bytes(failure.message.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error_code::ALL_ERROR_CODES;

    #[test]
    fn success_is_zero_and_every_error_is_an_error() {
        assert_eq!(kafka_code(ErrorCode::None), 0);
        for code in ALL_ERROR_CODES.iter().skip(1) {
            assert_ne!(kafka_code(*code), 0, "{code:?} must not read as success");
        }
    }

    #[test]
    fn the_codes_clients_act_on() {
        assert_eq!(kafka_code(ErrorCode::UnknownTopic), 3);
        assert_eq!(kafka_code(ErrorCode::OffsetOutOfRange), 1);
        assert_eq!(kafka_code(ErrorCode::CorruptBatch), 2);
        assert_eq!(kafka_code(ErrorCode::FrameTooLarge), 10);
        assert_eq!(kafka_code(ErrorCode::Unknown), -1);
    }
}
