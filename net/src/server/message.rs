//! What shards say to each other. A request for a partition owned by another shard travels as
//! a [`Mail::Call`] to the owner; the answer comes back as a [`Mail::Return`] with the same
//! call id. Produced bytes cross shards as owned vectors; fetched bytes are lent by the owner
//! (see [`super::lending`]): each shard's buffers stay its own.

use ringlog_engine::log::Acks;
use ringlog_engine::topic::TopicConfig;

use super::lending::LentPiece;
use crate::error_code::ErrorCode;

/// A message in a shard-to-shard queue.
pub(crate) enum Mail {
    /// Do `call` and send the result back to shard `from`.
    Call {
        from: usize,
        call_id: u64,
        call: ShardCall,
    },
    /// The answer to an earlier call from this shard.
    Return { call_id: u64, result: ShardReturn },
    /// The caller (shard `from`) no longer waits for its call `call_id`, one that
    /// [`ShardCall::is_cancellable`]: end its wait, answer nothing. Without it the wait (a waiter
    /// per partition and a timer) stays until data or its `max_wait_ms`, however early the
    /// fetch that asked for it was answered.
    Cancel { from: usize, call_id: u64 },
}

/// What an AlterTopic changes: `None` leaves a setting as it is; `Some(None)` lifts a
/// retention limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct TopicChange {
    pub(crate) retention_ms: Option<Option<u64>>,
    pub(crate) retention_bytes: Option<Option<u64>>,
    /// The new partition count (never fewer).
    pub(crate) partitions: Option<u32>,
}

impl TopicChange {
    /// `config` with the change made.
    pub(crate) fn applied_to(self, config: &TopicConfig) -> TopicConfig {
        TopicConfig {
            retention_ms: self.retention_ms.unwrap_or(config.retention_ms),
            retention_bytes: self.retention_bytes.unwrap_or(config.retention_bytes),
            partitions: self.partitions.unwrap_or(config.partitions),
            ..config.clone()
        }
    }
}

/// Work one shard asks of another.
pub(crate) enum ShardCall {
    /// Create a topic (sent to the catalog owner, shard 0).
    CreateTopic { name: String, config: TopicConfig },
    /// Delete a topic (sent to the catalog owner, shard 0).
    DeleteTopic { name: String },
    /// Change a topic's retention or add partitions (sent to the catalog owner, shard 0).
    AlterTopic { name: String, change: TopicChange },
    /// Open the partitions of a growing topic that this shard owns (not yet in its catalog).
    OpenNewPartitions { name: String, config: TopicConfig },
    /// Replace a topic's configuration in the local catalog.
    UpdateTopic { name: String, config: TopicConfig },
    /// Open the partitions of a new topic that this shard owns (not yet in its catalog).
    OpenTopic { name: String, config: TopicConfig },
    /// Add a new topic, whose partitions every shard has opened, to the local catalog.
    PublishTopic { name: String, config: TopicConfig },
    /// Remove a topic from the local catalog and delete the partitions this shard owns.
    DropTopic { name: String },
    /// Append raw batches to an owned partition.
    Produce {
        topic: String,
        partition: u32,
        acks: Acks,
        batches: Vec<u8>,
        /// A client's produce, checked as such (see [`super::partition_ops::produce`]); not
        /// the server's own copies of stored records.
        from_client: bool,
    },
    /// Read from an owned partition.
    Fetch {
        topic: String,
        partition: u32,
        offset: i64,
        max_bytes: usize,
    },
    /// Answer once any of the owned partitions `targets` (topic, partition, offset; distinct)
    /// has data at its offset, or after `max_wait_ms`: one timer for them all.
    WaitForData {
        targets: Vec<(String, u32, i64)>,
        max_wait_ms: u32,
    },
    /// Resolve an offset query on an owned partition.
    ListOffset {
        topic: String,
        partition: u32,
        query: OffsetQuery,
    },
    /// Move the log start of an owned partition (DeleteRecords); `offset` -1 is the high
    /// watermark.
    DeleteRecords {
        topic: String,
        partition: u32,
        offset: i64,
    },
    /// Log start offset, high watermark and size of every partition of `topic` this shard
    /// owns.
    PartitionInfo { topic: String },
    /// Counters and gauges of this shard for the metrics endpoint.
    Metrics,
    /// Consumer-group and share-group work (see `super::group`).
    Group(super::group::GroupCall),
}

impl ShardCall {
    /// Whether the caller may end it early with [`Mail::Cancel`]: the calls that wait (for
    /// data, for records to acquire) on behalf of a client's long poll.
    pub(crate) fn is_cancellable(&self) -> bool {
        matches!(
            self,
            ShardCall::WaitForData { .. }
                | ShardCall::Group(super::group::GroupCall::ShareFetch(_))
        )
    }

    /// Whether a cancelled call is answered all the same: a ShareFetch may have acquired
    /// records before it stopped, and a caller that stopped it without going away
    /// ([`super::shard::Shard::call_until`]) must get them. A caller that went away has
    /// closed its call, whose late answer is dropped.
    pub(crate) fn answers_when_cancelled(&self) -> bool {
        matches!(
            self,
            ShardCall::Group(super::group::GroupCall::ShareFetch(_))
        )
    }
}

/// Which offset a ListOffsets query wants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OffsetQuery {
    Earliest,
    Latest,
    Timestamp(i64),
}

/// An error as it will be sent to the client.
#[derive(Debug, Clone)]
pub(crate) struct Failure {
    pub(crate) code: ErrorCode,
    pub(crate) message: String,
}

impl Failure {
    pub(crate) fn new(code: ErrorCode, message: impl Into<String>) -> Failure {
        Failure {
            code,
            message: message.into(),
        }
    }
}

/// Batches read from a partition on another shard: lent by the owner (see
/// [`super::lending`]), or copied when it had no loan to spare.
pub(crate) enum FetchedBytes {
    Lent(Vec<LentPiece>),
    Copied(Vec<u8>),
}

/// What a read on another shard gave.
pub(crate) struct Fetched {
    pub(crate) bytes: FetchedBytes,
    pub(crate) high_watermark: i64,
    pub(crate) log_start_offset: i64,
}

/// Offsets of one partition.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PartitionOffsets {
    pub(crate) partition: u32,
    pub(crate) log_start_offset: i64,
    pub(crate) high_watermark: i64,
    /// Bytes of the partition's segments.
    pub(crate) size_bytes: u64,
}

/// The answer to a [`ShardCall`].
pub(crate) enum ShardReturn {
    Done(Result<(), Failure>),
    Produced(Result<super::partition_ops::Produced, Failure>),
    Fetched(Result<Fetched, Failure>),
    Offset(Result<(i64, i64), Failure>),
    /// The new log start offset (DeleteRecords).
    LogStart(Result<i64, Failure>),
    Partitions(Result<Vec<PartitionOffsets>, Failure>),
    Group(super::group::GroupReturn),
    Metrics(Box<super::metrics::ShardMetrics>),
}
