//! Producer state on disk: snapshot files, and the replay of the log after them.
//!
//! `<20-digit offset>.producers` holds the [`ProducerStateTable`] as it was when the log's next
//! offset was `offset`: every batch below it is in the snapshot, none at or above. The log
//! writes one when a rolled segment is finished (its bytes synced first, so the snapshot never
//! covers data that could still be lost) and one at close, and keeps the newest
//! [`SNAPSHOTS_KEPT`]. At open, the newest snapshot not beyond the recovered log end is loaded
//! and the batches from its offset to the end are replayed; snapshots beyond the end (from
//! data the crash took away) are deleted. Without a usable snapshot the whole log is replayed.
//!
//! ```text
//! offset  size  field (big-endian)
//!      0     4  magic "RLPS"
//!      4     2  version (2)
//!      6     4  CRC-32C of bytes 10..end
//!     10     8  offset
//!     18     4  producer count
//!     22     -  per producer: producerId i64, epoch i16, startSequence i32, batch count u8
//!               (1..=5), then per batch firstSequence i32, lastSequence i32, baseOffset i64,
//!               lastOffset i64
//! ```
//! Version 1 (written by earlier builds) has no startSequence; it is read as the first
//! sequence of the oldest batch, which claims no sequence the partition did not write.
//! A file that is short, long, of another version or fails its CRC is ignored as a whole.

use std::collections::VecDeque;
use std::io;
use std::path::{Path, PathBuf};

use crate::batch::BatchIter;
use crate::buffer::{align_down, align_up, AlignedBuf};
use crate::error::LogError;
use crate::producer_state::{
    BatchMetadata, ProducerEntry, ProducerStateTable, BATCHES_PER_PRODUCER,
};
use crate::reactor::fs;
use crate::reactor::fs::File;
use crate::segment::{segment_path, ScanStart, Segment};

/// File name suffix of producer snapshots.
pub const SNAPSHOT_SUFFIX: &str = ".producers";
/// Snapshots kept per partition: the newest and the one before it.
pub const SNAPSHOTS_KEPT: usize = 2;

const MAGIC: &[u8; 4] = b"RLPS";
const VERSION: u16 = 2;
/// The version before startSequence, still read.
const VERSION_WITHOUT_START: u16 = 1;
const CRC_AT: usize = 6;
const CRC_COVERED_FROM: usize = 10;
const HEADER_BYTES: usize = 22;
const ENTRY_HEADER_BYTES: usize = 8 + 2 + 4 + 1;
const BATCH_BYTES: usize = 4 + 4 + 8 + 8;
/// Bytes read per step while replaying batch headers.
const REPLAY_WINDOW_BYTES: usize = 1 << 20;

/// Why a snapshot file cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotError {
    /// Fewer bytes than the structure needs.
    #[error("snapshot truncated")]
    Truncated,
    /// Not a snapshot, or a version this build does not read.
    #[error("not a version {VERSION_WITHOUT_START} or {VERSION} producer snapshot")]
    BadMagic,
    /// The CRC does not match.
    #[error("snapshot CRC mismatch")]
    BadCrc,
    /// A field is out of range.
    #[error("invalid snapshot: {0}")]
    Invalid(&'static str),
}

/// Path of the snapshot for `offset`.
pub fn snapshot_path(dir: &Path, offset: i64) -> PathBuf {
    segment_path(dir, offset, SNAPSHOT_SUFFIX)
}

/// The offset named by a snapshot file name.
pub fn parse_snapshot_file_name(name: &str) -> Option<i64> {
    let digits = name.strip_suffix(SNAPSHOT_SUFFIX)?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok().filter(|offset: &i64| *offset >= 0)
}

/// Encodes `table` as the state at `offset`.
pub fn encode(table: &ProducerStateTable, offset: i64) -> Vec<u8> {
    let mut ids: Vec<i64> = table.iter().map(|(id, _)| id).collect();
    // Sorted so that equal states give equal files.
    ids.sort_unstable();
    let mut out = Vec::with_capacity(HEADER_BYTES + ids.len() * (ENTRY_HEADER_BYTES + BATCH_BYTES));
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_be_bytes());
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&offset.to_be_bytes());
    out.extend_from_slice(&u32::try_from(ids.len()).unwrap_or(u32::MAX).to_be_bytes());
    for id in ids.iter().take(u32::MAX as usize) {
        let Some(entry) = table.get(*id) else {
            continue;
        };
        out.extend_from_slice(&id.to_be_bytes());
        out.extend_from_slice(&entry.epoch.to_be_bytes());
        out.extend_from_slice(&entry.start_sequence.to_be_bytes());
        // At most BATCHES_PER_PRODUCER (5): fits a byte.
        out.push(entry.batches.len() as u8);
        for batch in &entry.batches {
            out.extend_from_slice(&batch.first_sequence.to_be_bytes());
            out.extend_from_slice(&batch.last_sequence.to_be_bytes());
            out.extend_from_slice(&batch.base_offset.to_be_bytes());
            out.extend_from_slice(&batch.last_offset.to_be_bytes());
        }
    }
    let crc = crc32c::crc32c(&out[CRC_COVERED_FROM..]);
    out[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
    out
}

/// Decodes a snapshot: its offset and table (bounded by `producers_max`). Never panics and
/// allocates no more than the input's size suggests.
pub fn decode(
    bytes: &[u8],
    producers_max: usize,
) -> Result<(i64, ProducerStateTable), SnapshotError> {
    let mut reader = Reader { bytes, at: 0 };
    if reader.take::<4>()? != *MAGIC {
        return Err(SnapshotError::BadMagic);
    }
    let has_start = match u16::from_be_bytes(reader.take()?) {
        VERSION => true,
        VERSION_WITHOUT_START => false,
        _ => return Err(SnapshotError::BadMagic),
    };
    let crc = u32::from_be_bytes(reader.take()?);
    let covered = bytes
        .get(CRC_COVERED_FROM..)
        .ok_or(SnapshotError::Truncated)?;
    if crc32c::crc32c(covered) != crc {
        return Err(SnapshotError::BadCrc);
    }
    let offset = i64::from_be_bytes(reader.take()?);
    if offset < 0 {
        return Err(SnapshotError::Invalid("negative offset"));
    }
    let count = u32::from_be_bytes(reader.take()?);
    let mut table = ProducerStateTable::new(producers_max);
    for _ in 0..count {
        let producer_id = i64::from_be_bytes(reader.take()?);
        let epoch = i16::from_be_bytes(reader.take()?);
        let start_sequence = if has_start {
            Some(i32::from_be_bytes(reader.take()?))
        } else {
            None
        };
        let batch_count = usize::from(reader.take::<1>()?[0]);
        if producer_id < 0
            || epoch < 0
            || start_sequence.is_some_and(|start| start < 0)
            || !(1..=BATCHES_PER_PRODUCER).contains(&batch_count)
        {
            return Err(SnapshotError::Invalid("producer entry out of range"));
        }
        let mut batches = VecDeque::with_capacity(batch_count);
        for _ in 0..batch_count {
            let batch = BatchMetadata {
                first_sequence: i32::from_be_bytes(reader.take()?),
                last_sequence: i32::from_be_bytes(reader.take()?),
                base_offset: i64::from_be_bytes(reader.take()?),
                last_offset: i64::from_be_bytes(reader.take()?),
            };
            let sane = batch.first_sequence >= 0
                && batch.last_sequence >= 0
                && batch.base_offset >= 0
                && batch.last_offset >= batch.base_offset
                && batch.last_offset < offset;
            if !sane {
                return Err(SnapshotError::Invalid("batch entry out of range"));
            }
            batches.push_back(batch);
        }
        let oldest = batches
            .front()
            .map(|batch| batch.first_sequence)
            .ok_or(SnapshotError::Invalid("producer entry without batches"))?;
        let entry = ProducerEntry {
            epoch,
            start_sequence: start_sequence.unwrap_or(oldest),
            batches,
        };
        table.insert(producer_id, entry);
    }
    if reader.at != bytes.len() {
        return Err(SnapshotError::Invalid("trailing bytes"));
    }
    Ok((offset, table))
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N], SnapshotError> {
        let field = self
            .bytes
            .get(self.at..self.at + N)
            .ok_or(SnapshotError::Truncated)?;
        self.at += N;
        // The slice has exactly N bytes.
        field.try_into().map_err(|_| SnapshotError::Truncated)
    }
}

/// Offsets of the snapshot files in `dir`, sorted. Blocking: runs when a partition opens.
pub(crate) fn list(dir: &Path) -> Result<Vec<i64>, LogError> {
    let entries = std::fs::read_dir(dir)
        .map_err(|error| LogError::io("listing producer snapshots", error))?;
    let mut offsets: Vec<i64> = entries
        .filter_map(Result::ok)
        .filter_map(|entry| {
            entry
                .file_name()
                .to_str()
                .and_then(parse_snapshot_file_name)
        })
        .collect();
    offsets.sort_unstable();
    Ok(offsets)
}

/// Reads and decodes the snapshot for `offset`; `None` (with a warning) when unusable.
pub(crate) fn load(dir: &Path, offset: i64, producers_max: usize) -> Option<ProducerStateTable> {
    let path = snapshot_path(dir, offset);
    let outcome = std::fs::read(&path)
        .map_err(|error| error.to_string())
        .and_then(|bytes| decode(&bytes, producers_max).map_err(|error| error.to_string()));
    match outcome {
        Ok((stored, table)) if stored == offset => Some(table),
        Ok(_) => {
            tracing::warn!(path = %path.display(), "producer snapshot names another offset; ignoring it");
            None
        }
        Err(error) => {
            tracing::warn!(path = %path.display(), %error, "unusable producer snapshot; ignoring it");
            None
        }
    }
}

/// Writes a snapshot durably (temporary file, fdatasync, rename, directory sync).
pub(crate) async fn write(dir: &Path, offset: i64, bytes: &[u8]) -> io::Result<()> {
    fs::write_file_atomic(&snapshot_path(dir, offset), bytes).await
}

/// Deletes the snapshot for `offset`; a missing file is fine.
pub(crate) async fn remove(dir: &Path, offset: i64) -> io::Result<()> {
    match fs::remove_file(&snapshot_path(dir, offset)).await {
        Err(error) if error.kind() != io::ErrorKind::NotFound => Err(error),
        _ => Ok(()),
    }
}

/// Records in `table` every batch of `segments` (oldest first) whose base offset is at least
/// `from_offset`, reading only what lies from the index entry before it to each segment's end.
/// Returns the number of batches recorded.
pub(crate) async fn replay(
    dir: &Path,
    segments: &[Segment],
    from_offset: i64,
    table: &mut ProducerStateTable,
) -> Result<u64, LogError> {
    let mut batches = 0;
    for segment in segments
        .iter()
        .filter(|segment| segment.next_offset > from_offset)
    {
        let Some(file) = &segment.file else { continue };
        let hint = segment.scan_start_for_offset(from_offset);
        if let Some(recorded) = replay_segment(dir, segment, file, hint, from_offset, table).await?
        {
            batches += recorded;
            continue;
        }
        // Recovery checks a closed segment's index only at its last entry: an entry before it
        // (damaged on disk, still in order) may point at another batch than the one it names,
        // and starting there would skip batches. Nothing was recorded yet: start over from
        // the segment's first batch.
        tracing::warn!(
            segment = %segment.log_path(dir).display(),
            position = hint.position,
            base_offset = hint.base_offset,
            "offset index entry does not point at its batch; replaying the segment from its start"
        );
        let first = ScanStart {
            position: 0,
            base_offset: segment.base_offset,
        };
        match replay_segment(dir, segment, file, first, from_offset, table).await? {
            Some(recorded) => batches += recorded,
            // Its first batch is damaged (a closed segment kept whole with its damage, see
            // `recovery`): as for damage further on, its producers are forgotten.
            None => warn_replay_stops(dir, segment, 0, &"the first batch is damaged"),
        }
    }
    Ok(batches)
}

/// Replays one segment from `start`; `None`, with nothing recorded, when the batch there is
/// not a batch with the base offset `start` names.
async fn replay_segment(
    dir: &Path,
    segment: &Segment,
    file: &File,
    start: ScanStart,
    from_offset: i64,
    table: &mut ProducerStateTable,
) -> Result<Option<u64>, LogError> {
    let mut batches = 0;
    let mut checked_start = false;
    let mut position = start.position;
    let end = segment.size_bytes;
    let mut buf = AlignedBuf::new(REPLAY_WINDOW_BYTES);
    while position < end {
        let window_start = align_down(position as usize) as u64;
        let (result, returned) = file.read_at(buf, window_start).await;
        buf = returned;
        let read = result.map_err(|error| LogError::io("replaying producer state", error))?;
        let skip = (position - window_start) as usize;
        let readable = read.min((end - window_start) as usize);
        let bytes = buf.as_full().get(skip..readable).unwrap_or_default();
        // CRCs checked: the scan at open checked only a closed segment's last index entry on.
        let mut iter =
            BatchIter::new(bytes).with_batch_bytes_max(usize::try_from(end).unwrap_or(usize::MAX));
        for item in iter.by_ref() {
            if !checked_start {
                checked_start = true;
                match &item {
                    Ok((header, _)) if header.base_offset == start.base_offset => {}
                    _ => return Ok(None),
                }
            }
            let header = match item {
                Ok((header, _)) => header,
                Err(error) => {
                    warn_replay_stops(dir, segment, position, &error);
                    return Ok(Some(batches));
                }
            };
            if header.base_offset >= from_offset {
                table.record(&header);
                batches += 1;
            }
        }
        let consumed = iter.consumed_bytes() as u64;
        if consumed == 0 {
            // One batch larger than the window: grow it to hold the batch.
            let needed = batch_total_bytes(iter.remaining())
                .map(|total| align_up(skip + total))
                .filter(|&needed| needed > buf.capacity() && read >= buf.capacity());
            let Some(needed) = needed else {
                if !checked_start {
                    return Ok(None);
                }
                // The file ends inside a batch: a closed segment kept whole with its damage
                // (see `recovery`).
                warn_replay_stops(dir, segment, position, &"the file ends inside a batch");
                return Ok(Some(batches));
            };
            buf = AlignedBuf::new(needed);
            continue;
        }
        position += consumed;
    }
    Ok(Some(batches))
}

/// The replay stops at damage on disk at `position` (reads refuse it too). Failing the open
/// would make the whole partition unavailable; the producers whose batches follow it in this
/// segment are forgotten instead (a retry of theirs may be written again), and the next
/// segment is replayed as usual.
fn warn_replay_stops(dir: &Path, segment: &Segment, position: u64, error: &dyn std::fmt::Display) {
    tracing::warn!(
        path = %segment.log_path(dir).display(),
        position,
        %error,
        "producer replay stops at a damaged batch; its producers' later batches in this segment are not remembered"
    );
}

/// The whole size of the batch at the start of `rest`, from its batchLength field.
fn batch_total_bytes(rest: &[u8]) -> Option<usize> {
    let field: [u8; 4] = rest.get(8..12)?.try_into().ok()?;
    let length = usize::try_from(i32::from_be_bytes(field)).ok()?;
    Some(length + crate::batch::BATCH_OVERHEAD_BYTES)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::{BatchBuilder, BatchHeader};

    fn sample() -> ProducerStateTable {
        let mut table = ProducerStateTable::new(100);
        for (producer_id, batches) in [(1i64, 7i32), (9, 2)] {
            for n in 0..batches {
                let mut builder = BatchBuilder::new(Vec::new(), 0);
                builder.set_producer_id(producer_id);
                builder.set_producer_epoch(3);
                builder.set_base_sequence(n * 2);
                builder.push(0, None, Some(b"a"), &[]).unwrap();
                builder.push(0, None, Some(b"b"), &[]).unwrap();
                let mut header = BatchHeader::parse(builder.finish()).unwrap();
                header.base_offset = producer_id * 100 + i64::from(n) * 2;
                table.record(&header);
            }
        }
        table
    }

    #[test]
    fn round_trips_and_rejects_damage() {
        let table = sample();
        let bytes = encode(&table, 1_000);
        let (offset, back) = decode(&bytes, 100).unwrap();
        assert_eq!(offset, 1_000);
        assert_eq!(back, table);
        assert_eq!(encode(&back, 1_000), bytes, "encoding is deterministic");
        for cut in 0..bytes.len() {
            assert!(decode(&bytes[..cut], 100).is_err(), "cut at {cut}");
        }
        let mut flipped = bytes.clone();
        *flipped.last_mut().unwrap() ^= 1;
        assert_eq!(decode(&flipped, 100).unwrap_err(), SnapshotError::BadCrc);
        let mut longer = bytes;
        longer.push(0);
        assert!(decode(&longer, 100).is_err());
    }

    #[test]
    fn version_1_files_start_at_the_oldest_batch() {
        // Producer 3, epoch 1, one batch of sequences 20..=24 at offsets 7..=11, state at 12.
        let mut bytes = Vec::new();
        bytes.extend_from_slice(MAGIC);
        bytes.extend_from_slice(&VERSION_WITHOUT_START.to_be_bytes());
        bytes.extend_from_slice(&[0; 4]);
        bytes.extend_from_slice(&12i64.to_be_bytes());
        bytes.extend_from_slice(&1u32.to_be_bytes());
        bytes.extend_from_slice(&3i64.to_be_bytes());
        bytes.extend_from_slice(&1i16.to_be_bytes());
        bytes.push(1);
        for field in [20i32, 24] {
            bytes.extend_from_slice(&field.to_be_bytes());
        }
        for field in [7i64, 11] {
            bytes.extend_from_slice(&field.to_be_bytes());
        }
        let crc = crc32c::crc32c(&bytes[CRC_COVERED_FROM..]);
        bytes[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
        let (offset, table) = decode(&bytes, 100).unwrap();
        assert_eq!(offset, 12);
        let entry = table.get(3).unwrap();
        assert_eq!((entry.epoch, entry.start_sequence), (1, 20));
        assert_eq!(entry.next_sequence(), 25);
    }

    #[test]
    fn file_names() {
        let path = snapshot_path(Path::new("/d"), 42);
        let name = path.file_name().unwrap().to_str().unwrap();
        assert_eq!(name, "00000000000000000042.producers");
        assert_eq!(parse_snapshot_file_name(name), Some(42));
        assert_eq!(parse_snapshot_file_name("00000000000000000042.log"), None);
    }
}
