//! What one shard reports to a scrape: its request counters and the state of the partitions,
//! consumer-group offsets and share partitions it owns, copied out on the shard's thread.

use ringlog_engine::log::LogStats;

use super::counters::RequestCount;
use crate::server::shard::Shard;

/// One shard's part of a scrape.
#[derive(Debug)]
pub(crate) struct ShardMetrics {
    /// The shard's id.
    pub(crate) shard: usize,
    /// Requests it served, per protocol and api.
    pub(crate) requests: Vec<RequestCount>,
    /// Partitions it owns.
    pub(crate) partitions: Vec<PartitionMetrics>,
    /// Committed consumer-group offsets of its partitions.
    pub(crate) group_offsets: Vec<GroupOffset>,
    /// Share-group state of its partitions.
    pub(crate) share_partitions: Vec<SharePartitionMetrics>,
    /// Read-ahead extents held, and the most allowed.
    pub(crate) read_ahead_extents: (usize, usize),
    /// Waits for data other shards' fetches have running on this shard.
    pub(crate) waits_for_others: usize,
}

/// One owned partition.
#[derive(Debug)]
pub(crate) struct PartitionMetrics {
    pub(crate) topic: String,
    pub(crate) partition: u32,
    pub(crate) log_start_offset: i64,
    pub(crate) high_watermark: i64,
    pub(crate) size_bytes: u64,
    /// Counters since the partition was opened (the server started, or the topic grew).
    pub(crate) stats: LogStats,
}

/// A consumer group's committed offset on an owned partition.
#[derive(Debug)]
pub(crate) struct GroupOffset {
    pub(crate) group: String,
    pub(crate) topic: String,
    pub(crate) partition: u32,
    pub(crate) committed: i64,
    pub(crate) high_watermark: i64,
}

impl GroupOffset {
    /// Records between the committed offset and the high watermark.
    pub(crate) fn lag(&self) -> i64 {
        (self.high_watermark - self.committed).max(0)
    }
}

/// A share group's state on an owned partition.
#[derive(Debug)]
pub(crate) struct SharePartitionMetrics {
    pub(crate) group: String,
    pub(crate) topic: String,
    pub(crate) partition: u32,
    pub(crate) start_offset: i64,
    pub(crate) high_watermark: i64,
    pub(crate) in_flight_records: u32,
    pub(crate) acquired_records: u32,
}

/// Copies out `shard`'s metrics (runs on its thread).
pub(crate) fn snapshot(shard: &Shard) -> ShardMetrics {
    let partitions = shard
        .owned_logs()
        .into_iter()
        .map(|(topic, partition, log)| PartitionMetrics {
            topic,
            partition,
            log_start_offset: log.log_start_offset(),
            high_watermark: log.high_watermark(),
            size_bytes: log.size_bytes(),
            stats: log.stats(),
        })
        .collect();
    let mut group_offsets = Vec::new();
    let mut share_partitions = Vec::new();
    let mut owned_groups = shard.groups.all_partitions();
    owned_groups.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
    for groups in owned_groups {
        let high_watermark = groups.log.high_watermark();
        for (group, committed) in groups.committed_offsets() {
            group_offsets.push(GroupOffset {
                group,
                topic: groups.topic.clone(),
                partition: groups.partition,
                committed,
                high_watermark,
            });
        }
        for share in groups.shares() {
            let summary = share.summary();
            share_partitions.push(SharePartitionMetrics {
                group: share.group().to_string(),
                topic: summary.topic,
                partition: summary.partition,
                start_offset: summary.start_offset,
                high_watermark: summary.high_watermark,
                in_flight_records: summary.in_flight_records,
                acquired_records: summary.acquired_records,
            });
        }
    }
    ShardMetrics {
        shard: shard.id,
        requests: shard.requests.snapshot(),
        partitions,
        group_offsets,
        share_partitions,
        read_ahead_extents: shard.read_ahead_extents(),
        waits_for_others: shard.waits_for_others(),
    }
}
