//! Configuration of one partition log.

use crate::buffer::IO_ALIGN_BYTES;
use crate::error::LogError;
use crate::topic::TopicConfig;

/// Sizes and intervals of one partition log (retention, which may change while the log is
/// open, is given to each [`crate::log::PartitionLog::apply_retention`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    /// Roll to a new segment when the next batch would not fit. At most `u32::MAX`: index
    /// positions are 32-bit.
    pub segment_bytes: u64,
    /// The active segment's file is preallocated (fallocate) this far ahead of its data, in
    /// steps, so appends never wait on block allocation while an idle partition holds only
    /// one step of disk, not a whole segment.
    pub preallocate_step_bytes: u64,
    /// Roll when the active segment's first batch is older than this.
    pub segment_ms: u64,
    /// Bytes of log between two sparse index entries: the most a lookup scans.
    pub index_interval_bytes: u32,
    /// Largest in-memory chunk appends are copied into and written from (a multiple of the
    /// I/O alignment). A batch larger than this gets a chunk of its own size.
    pub chunk_bytes: usize,
    /// Size of the first chunk of a segment (and after a restart); each next chunk is twice
    /// the previous one, up to `chunk_bytes`. An idle partition with a few small writes thus
    /// holds this much memory, not `chunk_bytes`. A multiple of the I/O alignment; values
    /// above `chunk_bytes` mean `chunk_bytes`.
    pub first_chunk_bytes: usize,
    /// Most bytes appended but not yet written; appends beyond it are refused with
    /// [`LogError::Backpressure`] so that memory stays bounded when the disk falls behind.
    pub unflushed_bytes_max: u64,
    /// Open segment files with O_DIRECT (the reactor falls back to buffered I/O by itself
    /// where the filesystem refuses it). `false` forces buffered I/O with fdatasync.
    pub direct_io: bool,
    /// Idempotent producers remembered per partition; past it the least recently appending
    /// one is forgotten (see [`crate::producer_state`]).
    pub producers_max: usize,
    /// How far ahead of a read from disk the segment is read in 1 MiB extents, several at
    /// once (see `log::read_ahead`); rounded up to whole extents, 0 turns read-ahead off. A
    /// partition being read from disk holds about this much memory plus one extent.
    pub read_ahead_bytes: u64,
}

/// Default segment size.
pub const SEGMENT_BYTES_DEFAULT: u64 = 1 << 30;
/// Default age at which a segment rolls: 7 days, as Kafka.
pub const SEGMENT_MS_DEFAULT: u64 = 7 * 24 * 3600 * 1000;
/// Default spacing of index entries.
pub const INDEX_INTERVAL_BYTES_DEFAULT: u32 = 4096;
/// Default (largest) chunk size.
pub const CHUNK_BYTES_DEFAULT: usize = 1 << 20;
/// Default size of a segment's first chunk: 10,000 partitions with one small write each hold
/// 160 MiB of chunks, not 10 GiB.
pub const FIRST_CHUNK_BYTES_DEFAULT: usize = 16 << 10;
/// Default preallocation step (as Redpanda's `segment_fallocation_step`).
pub const PREALLOCATE_STEP_BYTES_DEFAULT: u64 = 32 << 20;
/// Default bound on unwritten bytes per partition.
pub const UNFLUSHED_BYTES_MAX_DEFAULT: u64 = 16 << 20;
/// Default read-ahead: eight 1 MiB reads ahead of a reader on disk (the disk reference's depth).
pub const READ_AHEAD_BYTES_DEFAULT: u64 = 8 << 20;
/// Smallest segment accepted (tests use small segments; topics enforce their own minimum).
pub const SEGMENT_BYTES_MIN: u64 = IO_ALIGN_BYTES as u64;

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            segment_bytes: SEGMENT_BYTES_DEFAULT,
            preallocate_step_bytes: PREALLOCATE_STEP_BYTES_DEFAULT,
            segment_ms: SEGMENT_MS_DEFAULT,
            index_interval_bytes: INDEX_INTERVAL_BYTES_DEFAULT,
            chunk_bytes: CHUNK_BYTES_DEFAULT,
            first_chunk_bytes: FIRST_CHUNK_BYTES_DEFAULT,
            unflushed_bytes_max: UNFLUSHED_BYTES_MAX_DEFAULT,
            direct_io: true,
            producers_max: crate::producer_state::PRODUCERS_MAX_DEFAULT,
            read_ahead_bytes: READ_AHEAD_BYTES_DEFAULT,
        }
    }
}

/// How much of a log retention keeps: a topic's setting, which may change while its
/// partitions are open.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Retention {
    /// Delete whole segments whose newest batch is older than this; `None` keeps them.
    pub ms: Option<u64>,
    /// Delete the oldest segment while the log holds at least this much without it (Kafka's
    /// rule: up to a segment over the limit, never below it); `None`: no limit.
    pub bytes: Option<u64>,
}

impl Retention {
    /// Keep everything.
    pub const FOREVER: Retention = Retention {
        ms: None,
        bytes: None,
    };

    /// The timestamp below which records are past retention by age at `now_ms`; `None`
    /// without one.
    pub fn cutoff_ms(&self, now_ms: i64) -> Option<i64> {
        self.ms.map(|retention_ms| {
            now_ms.saturating_sub(i64::try_from(retention_ms).unwrap_or(i64::MAX))
        })
    }

    /// A topic's retention.
    pub fn of_topic(topic: &TopicConfig) -> Retention {
        Retention {
            ms: topic.retention_ms,
            bytes: topic.retention_bytes,
        }
    }
}

impl LogConfig {
    /// The defaults with a topic's segment size.
    pub fn for_topic(topic: &TopicConfig) -> LogConfig {
        LogConfig {
            segment_bytes: topic.segment_bytes,
            ..LogConfig::default()
        }
    }

    /// Checks every value is in range.
    pub fn validate(&self) -> Result<(), LogError> {
        let invalid = |message: String| Err(LogError::InvalidConfig(message));
        if self.segment_bytes < SEGMENT_BYTES_MIN || self.segment_bytes > u64::from(u32::MAX) {
            return invalid(format!(
                "segment_bytes must be between {SEGMENT_BYTES_MIN} and {}, got {}",
                u32::MAX,
                self.segment_bytes
            ));
        }
        if self.segment_ms == 0 {
            return invalid("segment_ms must be positive".into());
        }
        if self.index_interval_bytes == 0 {
            return invalid("index_interval_bytes must be positive".into());
        }
        if self.chunk_bytes < IO_ALIGN_BYTES
            || self.chunk_bytes % IO_ALIGN_BYTES != 0
            || self.chunk_bytes > 1 << 30
        {
            return invalid(format!(
                "chunk_bytes must be a multiple of {IO_ALIGN_BYTES} up to 1 GiB, got {}",
                self.chunk_bytes
            ));
        }
        if self.first_chunk_bytes < IO_ALIGN_BYTES || self.first_chunk_bytes % IO_ALIGN_BYTES != 0 {
            return invalid(format!(
                "first_chunk_bytes must be a positive multiple of {IO_ALIGN_BYTES}, got {}",
                self.first_chunk_bytes
            ));
        }
        if self.preallocate_step_bytes < IO_ALIGN_BYTES as u64
            || self.preallocate_step_bytes % IO_ALIGN_BYTES as u64 != 0
        {
            return invalid(format!(
                "preallocate_step_bytes must be a positive multiple of {IO_ALIGN_BYTES}, got {}",
                self.preallocate_step_bytes
            ));
        }
        if self.producers_max == 0 {
            return invalid("producers_max must be positive".into());
        }
        if self.read_ahead_bytes > 1 << 30 {
            return invalid(format!(
                "read_ahead_bytes must be at most 1 GiB, got {}",
                self.read_ahead_bytes
            ));
        }
        if self.unflushed_bytes_max < self.chunk_bytes as u64 {
            return invalid("unflushed_bytes_max must be at least chunk_bytes".into());
        }
        Ok(())
    }

    /// The size of the chunk that follows one of `previous_bytes` in the same segment
    /// (`None`: the segment's first chunk, or the first since the log was opened): twice the
    /// previous, from `first_chunk_bytes` up to `chunk_bytes`.
    pub fn next_chunk_bytes(&self, previous_bytes: Option<usize>) -> usize {
        let first_bytes = self.first_chunk_bytes.min(self.chunk_bytes);
        previous_bytes
            .map_or(first_bytes, |bytes| bytes.saturating_mul(2))
            .clamp(first_bytes, self.chunk_bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_bad_values_rejected() {
        LogConfig::default().validate().unwrap();
        let bad = [
            LogConfig {
                segment_bytes: 100,
                ..LogConfig::default()
            },
            LogConfig {
                chunk_bytes: 5000,
                ..LogConfig::default()
            },
            LogConfig {
                index_interval_bytes: 0,
                ..LogConfig::default()
            },
            LogConfig {
                first_chunk_bytes: 1000,
                ..LogConfig::default()
            },
        ];
        for config in bad {
            assert!(config.validate().is_err(), "{config:?}");
        }
        let config = LogConfig::default();
        let sizes: Vec<usize> =
            std::iter::successors(Some(config.next_chunk_bytes(None)), |&bytes| {
                (bytes < config.chunk_bytes).then(|| config.next_chunk_bytes(Some(bytes)))
            })
            .collect();
        assert_eq!(sizes.first(), Some(&FIRST_CHUNK_BYTES_DEFAULT));
        assert_eq!(sizes.last(), Some(&CHUNK_BYTES_DEFAULT));
        assert_eq!(sizes.len(), 7, "16 KiB doubles to 1 MiB in six steps");
        assert_eq!(config.next_chunk_bytes(Some(5 << 20)), CHUNK_BYTES_DEFAULT);
        let small = LogConfig {
            chunk_bytes: 8192,
            ..LogConfig::default()
        };
        assert_eq!(small.next_chunk_bytes(None), 8192);
        let topic = TopicConfig::new(3);
        assert_eq!(
            LogConfig::for_topic(&topic).segment_bytes,
            topic.segment_bytes
        );
    }
}
