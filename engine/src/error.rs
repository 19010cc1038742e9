//! Errors of the partition log.

use std::io;
use std::path::PathBuf;

use crate::batch::BatchError;
use crate::producer_state::ProducerError;

/// Why a partition log operation failed.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// The caller's batch is malformed (bad length, magic or CRC); nothing was written.
    #[error("invalid record batch: {0}")]
    InvalidBatch(#[from] BatchError),
    /// The batch can never fit in one segment; nothing was written.
    #[error("batch of {batch_bytes} bytes is larger than a segment ({segment_bytes} bytes)")]
    BatchTooLarge {
        /// Size of the batch.
        batch_bytes: usize,
        /// The segment size in force.
        segment_bytes: u64,
    },
    /// A read asked for an offset outside `[log_start, high_watermark]`.
    #[error("offset {requested} is out of range [{log_start}, {high_watermark}]")]
    OffsetOutOfRange {
        /// The offset asked for.
        requested: i64,
        /// First offset still stored.
        log_start: i64,
        /// Next offset a reader may see.
        high_watermark: i64,
    },
    /// The disk ran out of space (ENOSPC or EDQUOT). The log stays consistent: the bytes that
    /// could not be written are not visible, and they are written again with the next append.
    #[error("disk full while {context}")]
    DiskFull {
        /// What the log was doing.
        context: &'static str,
    },
    /// Another I/O error; as for [`LogError::DiskFull`] the log stays consistent.
    #[error("I/O error while {context}: {source}")]
    Io {
        /// What the log was doing.
        context: &'static str,
        /// The cause.
        source: io::Error,
    },
    /// More bytes wait to be written than the configured bound: the disk does not keep up.
    /// Nothing was written; retry after earlier appends completed.
    #[error("{unflushed_bytes} bytes wait to be written (limit {limit_bytes}); append refused")]
    Backpressure {
        /// Bytes appended but not yet written.
        unflushed_bytes: u64,
        /// The configured bound.
        limit_bytes: u64,
    },
    /// An idempotent producer's batch is out of sequence or fenced; nothing was written.
    #[error(transparent)]
    Producer(#[from] ProducerError),
    /// The log is closed or closing.
    #[error("partition log is closed")]
    Closed,

    /// The partition's offsets are used up: the next batch's would pass i64::MAX.
    #[error("no offsets left after {next_offset} in this partition")]
    OffsetsExhausted {
        /// The log's next offset.
        next_offset: i64,
    },
    /// Data on disk does not parse where the log's own bookkeeping says a batch must be.
    #[error("corrupt log data in {path} at byte {position}: {reason}")]
    Corrupt {
        /// The segment file.
        path: PathBuf,
        /// Byte position in the file.
        position: u64,
        /// What is wrong.
        reason: String,
    },
    /// A stored batch no longer matches its CRC (damaged on disk after it was written): it is
    /// not served. Its header still gave its offsets, so a reader can go on past it.
    #[error("damaged batch in {path} at byte {position} (offsets {base_offset}..={last_offset}): its CRC does not match its bytes")]
    DamagedBatch {
        /// The segment file.
        path: PathBuf,
        /// Byte position of the batch in the file.
        position: u64,
        /// The batch's first offset.
        base_offset: i64,
        /// The batch's last offset.
        last_offset: i64,
    },
    /// A configuration value is out of range.
    #[error("invalid log config: {0}")]
    InvalidConfig(String),
}

impl LogError {
    /// Wraps an I/O error, turning "no space" into [`LogError::DiskFull`].
    pub fn io(context: &'static str, source: io::Error) -> LogError {
        FlushFailure::from_io(context, &source).into_error_with(source)
    }

    /// Whether retrying later may succeed (disk full, back-pressure, transient I/O).
    pub fn is_retriable(&self) -> bool {
        matches!(
            self,
            LogError::DiskFull { .. } | LogError::Io { .. } | LogError::Backpressure { .. }
        )
    }
}

/// A failed background write, kept so that every append waiting on it gets its own
/// [`LogError`] (an `io::Error` cannot be cloned).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FlushFailure {
    context: &'static str,
    raw_os_error: Option<i32>,
    kind: io::ErrorKind,
}

impl FlushFailure {
    pub(crate) fn from_io(context: &'static str, error: &io::Error) -> FlushFailure {
        FlushFailure {
            context,
            raw_os_error: error.raw_os_error(),
            kind: error.kind(),
        }
    }

    pub(crate) fn is_disk_full(&self) -> bool {
        matches!(self.raw_os_error, Some(libc::ENOSPC) | Some(libc::EDQUOT))
    }

    /// A fresh error describing this failure.
    pub(crate) fn to_error(self) -> LogError {
        let source = match self.raw_os_error {
            Some(code) => io::Error::from_raw_os_error(code),
            None => io::Error::from(self.kind),
        };
        self.into_error_with(source)
    }

    fn into_error_with(self, source: io::Error) -> LogError {
        if self.is_disk_full() {
            LogError::DiskFull {
                context: self.context,
            }
        } else {
            LogError::Io {
                context: self.context,
                source,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_space_is_disk_full() {
        let error = LogError::io("writing", io::Error::from_raw_os_error(libc::ENOSPC));
        assert!(matches!(error, LogError::DiskFull { .. }));
        let failure = FlushFailure::from_io("writing", &io::Error::from_raw_os_error(libc::EIO));
        assert!(matches!(failure.to_error(), LogError::Io { .. }));
    }
}
