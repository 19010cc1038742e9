//! One segment of a partition log: a file of whole batches named after its base offset,
//! with its sparse offset and time indexes kept in memory.
//!
//! ```text
//! <20-digit base offset>.log        the batches, byte for byte as producers sent them
//! <20-digit base offset>.index      see `index` module
//! <20-digit base offset>.timeindex  see `index` module
//! ```
//!
//! The active segment's file is preallocated to the segment size; the zeros after its last
//! batch are what recovery reads as the end of the data. A rolled segment is truncated to its
//! exact length, so "end of file" and "end of data" coincide for it.

use std::io;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use crate::batch::BatchHeader;
use crate::index::{OffsetEntry, OffsetIndex, TimeEntry, TimeIndex};
use crate::reactor::fs::{self, File};

/// File name suffix of segment data.
pub const LOG_SUFFIX: &str = ".log";
/// File name suffix of the offset index.
pub const INDEX_SUFFIX: &str = ".index";
/// File name suffix of the time index.
pub const TIME_INDEX_SUFFIX: &str = ".timeindex";
/// Digits of the base offset in file names (Kafka's width: every i64 fits).
pub(crate) const BASE_OFFSET_DIGITS: usize = 20;

/// `<dir>/<20-digit base offset><suffix>`.
pub fn segment_path(dir: &Path, base_offset: i64, suffix: &str) -> PathBuf {
    dir.join(format!(
        "{base_offset:0width$}{suffix}",
        width = BASE_OFFSET_DIGITS
    ))
}

/// The base offset named by a segment data file name (`00000000000000000042.log` -> 42).
pub fn parse_log_file_name(name: &str) -> Option<i64> {
    let digits = name.strip_suffix(LOG_SUFFIX)?;
    if digits.len() != BASE_OFFSET_DIGITS || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok().filter(|base: &i64| *base >= 0)
}

/// Where a segment is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SegmentState {
    /// Takes appends.
    Active,
    /// Replaced by a newer segment in memory; its file is not yet truncated, synced and
    /// indexed (the flusher does that once its last bytes are written).
    Rolled,
    /// Immutable and fully on disk with exact length and persisted indexes.
    Closed,
}

/// A segment's bookkeeping. All positions are byte positions in the segment file.
#[derive(Debug)]
pub struct Segment {
    /// Offset of the first batch (also in the file name).
    pub base_offset: i64,
    /// Offset after the last batch appended (in memory, written or not).
    pub next_offset: i64,
    /// Bytes of whole batches appended.
    pub size_bytes: u64,
    /// Bytes whose write completed: what readers may see.
    pub visible_bytes: u64,
    /// Largest batch max-timestamp, `i64::MIN` when empty.
    pub max_timestamp_ms: i64,
    /// When the first batch arrived (wall clock; after a restart the max timestamp of the
    /// first batch that has one, else the file's last modification, capped at the open time),
    /// for rolling by age.
    pub first_batch_ms: Option<i64>,
    /// When the last batch arrived (wall clock; after a restart the file's last modification,
    /// taken only for a segment whose batches carry no timestamp): what retention by age goes
    /// by for such a segment, see [`Segment::retention_timestamp_ms`].
    pub last_batch_ms: Option<i64>,
    /// Life-cycle state.
    pub state: SegmentState,
    /// The open file; `None` for a new segment until the flusher creates it.
    pub file: Option<Rc<File>>,
    /// Bytes of the file reserved with fallocate (the active segment grows it in steps).
    pub allocated_bytes: u64,
    /// Sparse offset index.
    pub index: OffsetIndex,
    /// Sparse time index, paired with `index`.
    pub time_index: TimeIndex,
    /// The data bytes from the last aligned block boundary to `size_bytes`, read at open, so
    /// that the first in-memory chunk can rewrite that block in place.
    pub recovered_tail: Option<Vec<u8>>,
}

/// The first reservation of a segment (at most one step): an idle partition holds this much
/// disk, not a whole step; 10,000 partitions with one record each reserve 10 GiB, not 320.
pub const PREALLOCATE_FIRST_BYTES: u64 = 1 << 20;

/// How far to preallocate a segment whose data ends at `data_end`, never beyond
/// `segment_bytes`: below one step, the first of [`PREALLOCATE_FIRST_BYTES`] doubled as often
/// as needed (capped at the step) that lies past it; from there, the next multiple of
/// `step_bytes` past it.
pub fn preallocation_target(data_end: u64, step_bytes: u64, segment_bytes: u64) -> u64 {
    assert!(step_bytes > 0);
    let target = if data_end < step_bytes {
        let mut target = PREALLOCATE_FIRST_BYTES.min(step_bytes);
        while target <= data_end {
            target = target.saturating_mul(2).min(step_bytes);
        }
        target
    } else {
        (data_end / step_bytes + 1).saturating_mul(step_bytes)
    };
    target.min(segment_bytes)
}

/// An indexed batch to scan from: its position, and the base offset the index says it has.
/// A closed segment's index is checked at open only up to its last entry's position, so the
/// batch found there may not have that base offset (the index file was damaged): then scan
/// from the segment's start instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScanStart {
    /// Byte position of the batch.
    pub position: u64,
    /// Its base offset, per the index.
    pub base_offset: i64,
}

impl Segment {
    /// An empty segment starting at `base_offset`, with no file yet.
    pub fn new(base_offset: i64, state: SegmentState) -> Segment {
        assert!(base_offset >= 0, "negative base offset {base_offset}");
        Segment {
            base_offset,
            next_offset: base_offset,
            size_bytes: 0,
            visible_bytes: 0,
            max_timestamp_ms: i64::MIN,
            first_batch_ms: None,
            last_batch_ms: None,
            state,
            file: None,
            allocated_bytes: 0,
            index: OffsetIndex::new(),
            time_index: TimeIndex::new(),
            recovered_tail: None,
        }
    }

    /// The time retention by age compares with its cutoff: the largest batch timestamp, or,
    /// when no batch carries one (-1 is "no timestamp" in Kafka's format, which clients that
    /// set none send), when the segment was last written, as Kafka does with the file's last
    /// modification. Going by -1 would delete a segment written a moment ago at the first
    /// retention pass. `i64::MIN` (deleted at once) for an empty segment.
    pub fn retention_timestamp_ms(&self) -> i64 {
        if self.max_timestamp_ms >= 0 {
            return self.max_timestamp_ms;
        }
        match self.last_batch_ms {
            Some(last_batch_ms) => self.max_timestamp_ms.max(last_batch_ms),
            None => self.max_timestamp_ms,
        }
    }

    /// Whether no batch was appended.
    pub fn is_empty(&self) -> bool {
        self.size_bytes == 0
    }

    /// Relative offset of `offset` in this segment, if it fits the index's u32.
    pub fn relative_offset(&self, offset: i64) -> Option<u32> {
        offset
            .checked_sub(self.base_offset)
            .and_then(|delta| u32::try_from(delta).ok())
    }

    /// Accounts for a batch whose whole bytes now sit at `position` (the current end):
    /// advances offsets, size and timestamps and adds index entries every
    /// `index_interval_bytes`.
    pub fn record_batch(&mut self, position: u64, header: &BatchHeader, index_interval_bytes: u32) {
        assert_eq!(position, self.size_bytes, "batches are appended at the end");
        assert_eq!(
            header.base_offset, self.next_offset,
            "batch offsets must follow each other"
        );
        let relative_offset = self
            .relative_offset(header.base_offset)
            .expect("the log rolls before relative offsets overflow u32");
        let position_u32 = u32::try_from(position).expect("segments are smaller than 4 GiB");
        let running_max_ms = self.max_timestamp_ms.max(header.max_timestamp_ms);
        let due = self.index.last().is_none_or(|last| {
            u64::from(position_u32 - last.position) >= u64::from(index_interval_bytes)
        });
        if due {
            self.index.push(OffsetEntry {
                relative_offset,
                position: position_u32,
            });
            self.time_index.push(TimeEntry {
                timestamp_ms: running_max_ms,
                relative_offset,
            });
        }
        self.max_timestamp_ms = running_max_ms;
        self.next_offset = header.next_offset();
        self.size_bytes = position + header.total_bytes() as u64;
    }

    /// Where to start scanning for the batch holding `offset`: an indexed batch at or before
    /// it (the first batch when none).
    pub fn scan_start_for_offset(&self, offset: i64) -> ScanStart {
        let relative = match offset.checked_sub(self.base_offset) {
            Some(delta) if delta >= 0 => u32::try_from(delta).unwrap_or(u32::MAX),
            _ => return self.scan_start_at(None),
        };
        self.scan_start_at(self.index.lookup(relative))
    }

    /// Where to start scanning for the first batch with a max timestamp of at least
    /// `timestamp_ms`.
    pub fn scan_start_for_timestamp(&self, timestamp_ms: i64) -> ScanStart {
        let entry = self
            .time_index
            .lookup(timestamp_ms)
            .and_then(|entry| self.index.lookup(entry.relative_offset));
        self.scan_start_at(entry)
    }

    fn scan_start_at(&self, entry: Option<OffsetEntry>) -> ScanStart {
        entry.map_or(
            ScanStart {
                position: 0,
                base_offset: self.base_offset,
            },
            |entry| ScanStart {
                position: u64::from(entry.position),
                base_offset: self.base_offset + i64::from(entry.relative_offset),
            },
        )
    }

    /// Path of this segment's data file.
    pub fn log_path(&self, dir: &Path) -> PathBuf {
        segment_path(dir, self.base_offset, LOG_SUFFIX)
    }

    /// The on-disk bytes of both indexes, to be written with [`write_index_files`] (encoded
    /// first so that no borrow of the segment is held while the files are written).
    pub fn encode_indexes(&self) -> IndexFiles {
        let mut offsets = Vec::new();
        self.index.encode(&mut offsets);
        let mut times = Vec::new();
        self.time_index.encode(&mut times);
        IndexFiles {
            base_offset: self.base_offset,
            offsets,
            times,
        }
    }
}

/// Encoded index files of one segment.
#[derive(Debug)]
pub struct IndexFiles {
    base_offset: i64,
    offsets: Vec<u8>,
    times: Vec<u8>,
}

/// Persists both indexes atomically (temporary file, fdatasync, rename, directory sync).
pub async fn write_index_files(dir: &Path, files: &IndexFiles) -> io::Result<()> {
    let base = files.base_offset;
    fs::write_file_atomic(&segment_path(dir, base, INDEX_SUFFIX), &files.offsets).await?;
    fs::write_file_atomic(&segment_path(dir, base, TIME_INDEX_SUFFIX), &files.times).await
}

/// Deletes a segment's data and index files; missing index files are fine.
pub async fn remove_segment_files(dir: &Path, base_offset: i64) -> io::Result<()> {
    for suffix in [INDEX_SUFFIX, TIME_INDEX_SUFFIX, LOG_SUFFIX] {
        match fs::remove_file(&segment_path(dir, base_offset, suffix)).await {
            Ok(()) => {}
            Err(error) if error.kind() == io::ErrorKind::NotFound => {}
            Err(error) => return Err(error),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preallocation_doubles_up_to_a_step_then_grows_by_steps() {
        const MIB: u64 = 1 << 20;
        let step = 32 * MIB;
        let segment = 1 << 30;
        let targets: Vec<u64> = [0, 1, MIB - 1, MIB, 3 * MIB, 17 * MIB, 31 * MIB, 32 * MIB]
            .iter()
            .map(|&end| preallocation_target(end, step, segment) / MIB)
            .collect();
        assert_eq!(targets, [1, 1, 1, 2, 4, 32, 32, 64]);
        assert_eq!(preallocation_target(1000 * MIB, step, segment), 1 << 30);
        // Steps below the first reservation are used as they are.
        assert_eq!(preallocation_target(0, 64 << 10, segment), 64 << 10);
        assert_eq!(preallocation_target(70 << 10, 64 << 10, segment), 128 << 10);
        assert_eq!(preallocation_target(0, step, 4096), 4096);
    }

    #[test]
    fn file_names_round_trip() {
        let path = segment_path(Path::new("/d"), 42, LOG_SUFFIX);
        assert_eq!(path, Path::new("/d/00000000000000000042.log"));
        let name = path.file_name().unwrap().to_str().unwrap();
        assert_eq!(parse_log_file_name(name), Some(42));
        assert_eq!(parse_log_file_name("00000000000000000042.index"), None);
        assert_eq!(parse_log_file_name("42.log"), None);
        assert_eq!(parse_log_file_name("0000000000000000004x.log"), None);
    }
}
