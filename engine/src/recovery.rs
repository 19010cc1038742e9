//! Opening a partition directory after a clean stop or a crash.
//!
//! - Segments are listed with blocking `std::fs::read_dir`: this runs once when a partition
//!   is opened (startup or topic creation), never on the data path.
//! - The last segment is scanned from its start: every batch's length, magic, CRC and base
//!   offset (which the CRC does not cover) is checked, the scan stops at the zero padding that
//!   follows the data of a preallocated file or at the first torn or corrupt batch, and the
//!   file is cut there. Its indexes are rebuilt by the scan. Nothing after the cut is served.
//! - Earlier segments were closed cleanly (truncated, synced, indexed), so their length is
//!   trusted: their persisted indexes are loaded and checked, and only the batches after the
//!   last index entry are read and verified (which also rebuilds entries missing from a short
//!   index). A missing or inconsistent index is rebuilt by a full scan. Damage found in such
//!   a segment cannot be a torn write (a segment is synced whole before the next one's file
//!   exists): the segment is kept whole, its damaged bytes keep their offsets up to the next
//!   segment's base, and reads refuse them while serving the rest. Only when the files
//!   disagree on offsets is the damage the end of the log (later segments dropped, so offsets
//!   stay contiguous).
//!
//! - The idempotent producers' state is rebuilt as [`crate::producer_snapshot`] describes: the
//!   newest snapshot, then the batches after it. When that snapshot is at or after the last
//!   segment's base, the scan of that segment replays the batches on the way (no second read).
//!
//! Dropped bytes are reported with `tracing::warn!`, a clean open with `tracing::info!`.

use std::path::Path;
use std::rc::Rc;

use crate::batch::{BatchHeader, BatchIter, BATCH_OVERHEAD_BYTES};
use crate::buffer::{align_down, align_up, AlignedBuf, IO_ALIGN_BYTES};
use crate::error::LogError;
use crate::index::{indexes_paired, OffsetIndex, TimeIndex};
use crate::log::LogConfig;
use crate::log_start;
use crate::producer_snapshot;
use crate::producer_state::ProducerStateTable;
use crate::reactor::fs::{File, OpenOptions};
use crate::segment::{
    parse_log_file_name, preallocation_target, remove_segment_files, segment_path,
    write_index_files, Segment, SegmentState, BASE_OFFSET_DIGITS, INDEX_SUFFIX, LOG_SUFFIX,
    TIME_INDEX_SUFFIX,
};

/// Bytes read per step while scanning a segment.
const SCAN_WINDOW_BYTES: usize = 1 << 20;

/// Why a scan stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
enum ScanStop {
    /// The file ends right after a whole batch.
    EndOfFile,
    /// Zeros follow the last batch: the unwritten part of a preallocated file.
    ZeroPadding,
    /// A batch is torn or corrupt.
    Damaged(String),
}

/// The segments of a recovered partition, oldest first; the last one is active.
pub(crate) struct Recovered {
    pub(crate) segments: Vec<Segment>,
    /// Idempotent producer state as of the end of the recovered log.
    pub(crate) producers: ProducerStateTable,
    /// Offsets of the producer snapshots left on disk, oldest first.
    pub(crate) snapshots: Vec<i64>,
    /// The start offset DeleteRecords set, if any (see [`crate::log_start`]), at most the
    /// recovered log's end.
    pub(crate) log_start_offset: Option<i64>,
}

/// The producer state the scan of the last segment brings up to date: a snapshot at or after
/// that segment's base (or, for a one-segment log, the empty state at its start) plus every
/// batch the scan sees from the snapshot's offset on.
struct TailReplay {
    from_offset: i64,
    table: ProducerStateTable,
    usable: bool,
}

impl TailReplay {
    fn load(dir: &Path, snapshots: &[i64], bases: &[i64], producers_max: usize) -> TailReplay {
        let (first_base, last_base) = match (bases.first(), bases.last()) {
            (Some(first), Some(last)) => (*first, *last),
            _ => (0, 0),
        };
        for &offset in snapshots
            .iter()
            .rev()
            .take_while(|&&offset| offset >= last_base)
        {
            if let Some(table) = producer_snapshot::load(dir, offset, producers_max) {
                return TailReplay {
                    from_offset: offset,
                    table,
                    usable: true,
                };
            }
        }
        TailReplay {
            from_offset: last_base,
            table: ProducerStateTable::new(producers_max),
            // Nothing to know before the first segment.
            usable: first_base == last_base,
        }
    }

    fn observe(&mut self, header: &BatchHeader) {
        if self.usable && header.base_offset >= self.from_offset {
            self.table.record(header);
        }
    }
}

/// Lists, checks and repairs the segments in `dir` (created when missing).
pub(crate) async fn recover(
    dir: &Path,
    config: &LogConfig,
    now_ms: i64,
) -> Result<Recovered, LogError> {
    // Startup-only blocking calls: see the module comment.
    std::fs::create_dir_all(dir)
        .map_err(|error| LogError::io("creating the partition directory", error))?;
    let bases = list_segments(dir)?;
    let snapshots = producer_snapshot::list(dir)?;
    if bases.is_empty() {
        tracing::info!(dir = %dir.display(), "new partition log");
        remove_snapshots(dir, &snapshots).await?;
        return Ok(Recovered {
            segments: vec![Segment::new(0, SegmentState::Active)],
            producers: ProducerStateTable::new(config.producers_max),
            snapshots: Vec::new(),
            log_start_offset: recover_log_start(dir, 0).await?,
        });
    }
    let mut tail = TailReplay::load(dir, &snapshots, &bases, config.producers_max);
    let mut segments: Vec<Segment> = Vec::with_capacity(bases.len());
    let mut dropped_bytes = 0u64;
    let mut previous_intact = false;
    for (at, &base) in bases.iter().enumerate() {
        let is_last = at + 1 == bases.len();
        if let Some(previous) = segments.last() {
            if previous.next_offset < base && previous_intact {
                // A gap after a whole segment: segments between were deleted, and the ones
                // before the gap left behind (retention failed to delete one of them, or
                // someone removed a file). They are older than every offset after the gap.
                // Dropping the newer ones instead would lose live data and hand their offsets
                // out again; dropping the older ones is what retention would have done.
                tracing::warn!(
                    dir = %dir.display(),
                    expected = previous.next_offset,
                    found = base,
                    "offsets missing between segments; dropping the older segments before the gap"
                );
                dropped_bytes += drop_segments(dir, &bases[..at]).await?;
                segments.clear();
            } else if previous.next_offset != base {
                // The previous segment lost bytes here (cut short, damaged) or overlaps this
                // one: the log keeps what comes before the damage.
                tracing::warn!(
                    dir = %dir.display(),
                    expected = previous.next_offset,
                    found = base,
                    "segment base offset does not follow the previous segment; dropping it and later segments"
                );
                dropped_bytes += drop_segments(dir, &bases[at..]).await?;
                break;
            }
        }
        let mut ignore = |_: &BatchHeader| {};
        let observe: &mut dyn FnMut(&BatchHeader) = if is_last {
            &mut |header: &BatchHeader| tail.observe(header)
        } else {
            &mut ignore
        };
        let next_base = bases.get(at + 1).copied();
        let recovered = recover_segment(dir, base, next_base, config, now_ms, observe).await?;
        previous_intact = recovered.intact;
        dropped_bytes += recovered.dropped_bytes;
        segments.push(recovered.segment);
        if recovered.damaged && !recovered.kept_whole && !is_last {
            dropped_bytes += drop_segments(dir, &bases[at + 1..]).await?;
            break;
        }
    }
    let active = segments
        .last_mut()
        .expect("at least one segment was listed and the first is always kept");
    prepare_active(dir, active, config, now_ms).await?;
    let next_offset = active.next_offset;
    let last_listed = bases.last().copied().unwrap_or(0);
    let (producers, snapshots) =
        rebuild_producers(dir, &segments, snapshots, tail, last_listed, config).await?;
    if dropped_bytes > 0 {
        tracing::warn!(
            dir = %dir.display(),
            dropped_bytes,
            next_offset,
            "partition log recovered after dropping torn or corrupt data"
        );
    } else {
        tracing::info!(
            dir = %dir.display(),
            segments = segments.len(),
            next_offset,
            "partition log opened clean"
        );
    }
    let log_start_offset = recover_log_start(dir, next_offset).await?;
    Ok(Recovered {
        segments,
        producers,
        snapshots,
        log_start_offset,
    })
}

/// The stored DeleteRecords start, brought back to the log's end when the log lost records it
/// had covered (they were written, not synced, when it was stored): stored again then, or the
/// records appended after this open at those offsets would be hidden at the next one.
async fn recover_log_start(dir: &Path, next_offset: i64) -> Result<Option<i64>, LogError> {
    let Some(stored) = log_start::load(dir) else {
        return Ok(None);
    };
    if stored <= next_offset {
        return Ok(Some(stored));
    }
    tracing::warn!(dir = %dir.display(), stored, next_offset, "log start offset past the recovered log's end; moving it back to the end");
    log_start::store(dir, next_offset)
        .await
        .map_err(|error| LogError::io("storing the log start offset", error))?;
    Ok(Some(next_offset))
}

/// The producer state at the end of the recovered log: the tail replay when it covers the
/// log, else the newest snapshot not beyond the end plus a replay from it. Deletes snapshots
/// beyond the end; returns the offsets of those left.
async fn rebuild_producers(
    dir: &Path,
    segments: &[Segment],
    snapshots: Vec<i64>,
    tail: TailReplay,
    last_listed_base: i64,
    config: &LogConfig,
) -> Result<(ProducerStateTable, Vec<i64>), LogError> {
    let Some(active) = segments.last() else {
        return Ok((ProducerStateTable::new(config.producers_max), snapshots));
    };
    let log_end = active.next_offset;
    let (beyond, kept): (Vec<i64>, Vec<i64>) =
        snapshots.into_iter().partition(|&offset| offset > log_end);
    if !beyond.is_empty() {
        // They describe data the crash took away; a later log growing past them must not
        // load them.
        tracing::warn!(dir = %dir.display(), count = beyond.len(), log_end, "dropping producer snapshots beyond the log end");
        remove_snapshots(dir, &beyond).await?;
    }
    if tail.usable && active.base_offset == last_listed_base && tail.from_offset <= log_end {
        return Ok((tail.table, kept));
    }
    let loaded = kept.iter().rev().find_map(|&offset| {
        producer_snapshot::load(dir, offset, config.producers_max).map(|table| (offset, table))
    });
    let log_start = segments.first().map_or(0, |segment| segment.base_offset);
    let (from_offset, mut table) =
        loaded.unwrap_or_else(|| (log_start, ProducerStateTable::new(config.producers_max)));
    let batches = producer_snapshot::replay(dir, segments, from_offset, &mut table).await?;
    tracing::info!(dir = %dir.display(), from_offset, batches, producers = table.len(), "producer state replayed from the log");
    let kept = persist_replayed(dir, &table, log_end, kept).await;
    Ok((table, kept))
}

/// Writes a state replayed from segments before the last one as a snapshot at the log end,
/// as Kafka does after recovery. Otherwise it lives only in memory: once retention deletes
/// those segments, a crash before the next roll's snapshot would leave the next open nothing
/// to rebuild it from, and every producer it held would be unknown (a retry of its last
/// batch written twice). Best effort, as the snapshots at rolls: a failure is logged.
async fn persist_replayed(
    dir: &Path,
    table: &ProducerStateTable,
    log_end: i64,
    mut kept: Vec<i64>,
) -> Vec<i64> {
    if kept.last() == Some(&log_end) {
        return kept;
    }
    let bytes = producer_snapshot::encode(table, log_end);
    match producer_snapshot::write(dir, log_end, &bytes).await {
        Ok(()) => kept.push(log_end),
        Err(error) => {
            tracing::warn!(dir = %dir.display(), offset = log_end, %error, "cannot write the replayed producer state as a snapshot");
        }
    }
    kept
}

/// Deletes producer snapshots that describe no data of the log (beyond its end). A failure
/// fails the open: left in place, such a snapshot would be loaded as valid once the log grows
/// past its offset, and would then answer new batches as duplicates of batches long gone.
async fn remove_snapshots(dir: &Path, offsets: &[i64]) -> Result<(), LogError> {
    for &offset in offsets {
        producer_snapshot::remove(dir, offset)
            .await
            .map_err(|error| {
                LogError::io("deleting a producer snapshot beyond the log end", error)
            })?;
    }
    Ok(())
}

/// Base offsets of the `*.log` files in `dir`, sorted. Removes leftovers of interrupted
/// atomic index writes.
fn list_segments(dir: &Path) -> Result<Vec<i64>, LogError> {
    let entries =
        std::fs::read_dir(dir).map_err(|error| LogError::io("listing segments", error))?;
    let mut bases = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|error| LogError::io("listing segments", error))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(base) = parse_log_file_name(name) {
            bases.push(base);
        } else if is_own_leftover(name) {
            // A crash during write_file_atomic; the real file is intact or absent.
            let _ = std::fs::remove_file(entry.path());
        }
    }
    bases.sort_unstable();
    Ok(bases)
}

/// Whether `name` is the temporary file of an index or producer snapshot written atomically
/// (`<20 digits><suffix>.tmp`), or of the log start offset: only those are removed, never a
/// file someone else left.
fn is_own_leftover(name: &str) -> bool {
    if name == log_start::LOG_START_TEMPORARY_NAME {
        return true;
    }
    let Some(stem) = name.strip_suffix(".tmp") else {
        return false;
    };
    [
        INDEX_SUFFIX,
        TIME_INDEX_SUFFIX,
        producer_snapshot::SNAPSHOT_SUFFIX,
    ]
    .iter()
    .filter_map(|suffix| stem.strip_suffix(suffix))
    .any(|digits| {
        digits.len() == BASE_OFFSET_DIGITS && digits.bytes().all(|byte| byte.is_ascii_digit())
    })
}

/// Deletes whole segments (those after damage, or older ones before a gap); returns their
/// size. Newest first: a crash part way then leaves the ones still to delete next to each
/// other, where the next open deletes them again for the same reason. Oldest first, a crash
/// after the first deletion left a gap behind the segments before it, and the next open
/// would drop those (good data) as older segments left before a gap.
async fn drop_segments(dir: &Path, bases: &[i64]) -> Result<u64, LogError> {
    let mut bytes = 0;
    for &base in bases.iter().rev() {
        let path = segment_path(dir, base, LOG_SUFFIX);
        bytes += std::fs::metadata(&path).map_or(0, |meta| meta.len());
        tracing::warn!(segment = %path.display(), "dropping segment");
        remove_segment_files(dir, base)
            .await
            .map_err(|error| LogError::io("dropping segments", error))?;
    }
    Ok(bytes)
}

struct SegmentRecovery {
    segment: Segment,
    damaged: bool,
    /// Damaged, but kept whole with the segments after it (see [`keep_damaged_closed`]).
    kept_whole: bool,
    /// The file held whole batches up to its end: nothing was cut.
    intact: bool,
    dropped_bytes: u64,
}

/// `next_base`: the base offset of the segment listed after this one (`None`: this is the
/// last segment, which becomes the active one). `now_ms`: the wall clock at the open.
async fn recover_segment(
    dir: &Path,
    base: i64,
    next_base: Option<i64>,
    config: &LogConfig,
    now_ms: i64,
    observe: &mut dyn FnMut(&BatchHeader),
) -> Result<SegmentRecovery, LogError> {
    let is_last = next_base.is_none();
    let path = segment_path(dir, base, LOG_SUFFIX);
    let options = OpenOptions {
        create: false,
        direct: config.direct_io,
        read_only: false,
    };
    let file = File::open(&path, options)
        .await
        .map_err(|error| LogError::io("opening a segment", error))?;
    let file_len = file
        .len()
        .await
        .map_err(|error| LogError::io("reading a segment's length", error))?;
    let state = if is_last {
        SegmentState::Active
    } else {
        SegmentState::Closed
    };
    let mut segment = Segment::new(base, state);
    let mut resumed = false;
    let mut index_entries_loaded = 0;
    if !is_last {
        if let Some((index, time_index)) = load_indexes(dir, base, file_len).await {
            resume_from_last_entry(&mut segment, index, time_index);
            index_entries_loaded = segment.index.len();
            resumed = true;
        }
    }
    let mut stop = scan(&file, &path, file_len, &mut segment, config, observe).await?;
    if resumed && matches!(stop, ScanStop::Damaged(_)) {
        // The index may be what is wrong: check the whole segment before cutting it.
        segment = Segment::new(base, state);
        resumed = false;
        stop = scan(&file, &path, file_len, &mut segment, config, observe).await?;
    }
    let mut kept_whole = false;
    if let Some(next_base) = next_base {
        let reason = match &stop {
            ScanStop::EndOfFile => None,
            // A closed segment was cut to its data: zeros short of its end are damage too.
            ScanStop::ZeroPadding => Some("zeros where a batch should start"),
            ScanStop::Damaged(reason) => Some(reason.as_str()),
        };
        if let Some(reason) = reason {
            kept_whole =
                keep_damaged_closed(&path, &mut segment, file_len, next_base, now_ms, reason);
        }
    }
    if segment.max_timestamp_ms < 0 && !segment.is_empty() {
        // No batch carries a timestamp: retention by age goes by when the file was last
        // written (read before a truncation below changes it). Startup only: a blocking call.
        segment.last_batch_ms = Some(modified_ms(&path).unwrap_or(now_ms));
    }
    let end = segment.size_bytes;
    let mut dropped_bytes = 0;
    let damaged = match &stop {
        _ if kept_whole => true,
        ScanStop::EndOfFile => false,
        ScanStop::ZeroPadding => {
            if !is_last {
                tracing::info!(segment = %path.display(), end, "closed segment had zero padding (interrupted roll); cutting it");
            }
            // A torn multi-block write can lose its first block and keep later ones: bytes
            // after the zeros were never acknowledged as written, and are cut with them.
            dropped_bytes = nonzero_extent(&file, end, file_len).await?;
            if dropped_bytes > 0 {
                tracing::warn!(
                    segment = %path.display(),
                    position = end,
                    dropped_bytes,
                    "data after zeros where the next batch should start; truncating there"
                );
            }
            false
        }
        ScanStop::Damaged(reason) => {
            dropped_bytes = nonzero_extent(&file, end, file_len).await?;
            tracing::warn!(
                segment = %path.display(),
                position = end,
                dropped_bytes,
                reason = reason.as_str(),
                "torn or corrupt batch; truncating the segment there"
            );
            true
        }
    };
    if end < file_len && !is_last {
        // The active segment is cut and re-preallocated in `prepare_active`.
        truncate_and_sync(&file, end).await?;
    }
    let index_changed = !resumed || segment.index.len() != index_entries_loaded;
    segment.visible_bytes = end;
    if !is_last && (index_changed || damaged) {
        if let Err(error) = write_index_files(dir, &segment.encode_indexes()).await {
            // Not fatal: the index is rebuilt again at the next open.
            tracing::warn!(segment = %path.display(), %error, "cannot persist rebuilt indexes");
        }
    }
    segment.file = Some(Rc::new(file));
    Ok(SegmentRecovery {
        segment,
        damaged,
        kept_whole,
        intact: !damaged && end == file_len,
        dropped_bytes,
    })
}

/// Keeps a closed segment whole, damage and all, when the segment after it starts where this
/// one should end: a segment is truncated to its data and synced before the next one's file
/// is created (see the flusher), so damage in a closed segment is not a torn write but bytes
/// changed later on disk, and the segments after it hold acknowledged data. Cutting it there
/// would drop all of that; instead the damaged bytes keep the offsets up to `next_base`, and
/// reads refuse them (`LogError::DamagedBatch`) while serving everything around them. Returns
/// whether it kept the segment: not when the next segment's base is not after the last good
/// batch (the files disagree on offsets, and the log ends at the damage as before).
///
/// The timestamps of the batches from the damage on are unknown (healthy ones among them
/// are served), so the segment's newest timestamp becomes at least the file's last
/// modification (as Kafka does for a segment without timestamps; `now_ms` if unknown): else
/// retention by age would delete the segment on the good prefix's age alone (at once when
/// the damage is at its start), and lookups by timestamp would pass over its later batches.
fn keep_damaged_closed(
    path: &Path,
    segment: &mut Segment,
    file_len: u64,
    next_base: i64,
    now_ms: i64,
    reason: &str,
) -> bool {
    assert!(
        segment.size_bytes <= file_len,
        "the scan stops within the file"
    );
    if next_base <= segment.next_offset || segment.relative_offset(next_base - 1).is_none() {
        return false;
    }
    tracing::warn!(
        segment = %path.display(),
        position = segment.size_bytes,
        first_offset = segment.next_offset,
        last_offset = next_base - 1,
        reason,
        "damaged batch in a closed segment; keeping the segment and those after it, reads of these offsets report the damage"
    );
    segment.next_offset = next_base;
    segment.size_bytes = file_len;
    segment.max_timestamp_ms = segment
        .max_timestamp_ms
        .max(modified_ms(path).unwrap_or(now_ms));
    true
}

/// When the file at `path` was last modified, in ms since the Unix epoch. Startup only: a
/// blocking call (see the module comment). Not written by recovery for a segment it keeps
/// whole, so the same at every open.
fn modified_ms(path: &Path) -> Option<i64> {
    let modified = std::fs::metadata(path).ok()?.modified().ok()?;
    let since_epoch = modified.duration_since(std::time::UNIX_EPOCH).ok()?;
    i64::try_from(since_epoch.as_millis()).ok()
}

/// Loads a closed segment's indexes when both exist and agree with each other and the file.
async fn load_indexes(dir: &Path, base: i64, file_len: u64) -> Option<(OffsetIndex, TimeIndex)> {
    let index_bytes = read_small_file(&segment_path(dir, base, INDEX_SUFFIX)).await?;
    let time_bytes = read_small_file(&segment_path(dir, base, TIME_INDEX_SUFFIX)).await?;
    let index = OffsetIndex::decode(&index_bytes).ok()?;
    let time_index = TimeIndex::decode(&time_bytes).ok()?;
    let last = index.last()?;
    let consistent = indexes_paired(&index, &time_index) && u64::from(last.position) < file_len;
    consistent.then_some((index, time_index))
}

/// Sets the segment up to continue scanning at its last indexed batch, which the scan reads
/// again (and checks against the entry) without indexing it twice.
fn resume_from_last_entry(segment: &mut Segment, index: OffsetIndex, time_index: TimeIndex) {
    let (Some(last), Some(last_time)) = (index.last(), time_index.last()) else {
        return;
    };
    segment.size_bytes = u64::from(last.position);
    segment.next_offset = segment.base_offset + i64::from(last.relative_offset);
    // The running maximum including the last indexed batch: at least the true maximum
    // before it, which keeps the time index conservative.
    segment.max_timestamp_ms = last_time.timestamp_ms;
    // The first entry is the first batch: its running maximum is its own max timestamp.
    segment.first_batch_ms = time_index.entries().first().map(|entry| entry.timestamp_ms);
    segment.index = index;
    segment.time_index = time_index;
}

/// Reads a whole small file (an index); `None` when it is missing or unreadable.
async fn read_small_file(path: &Path) -> Option<Vec<u8>> {
    let options = OpenOptions {
        create: false,
        direct: false,
        read_only: true,
    };
    let file = File::open(path, options).await.ok()?;
    let len = usize::try_from(file.len().await.ok()?).ok()?;
    let (result, bytes) = file.read_at(Vec::with_capacity(len), 0).await;
    (result.ok()? == len).then_some(bytes)
}

/// Scans batches from `segment.size_bytes` to the end of the data, recording each in
/// `segment` (offsets, size, indexes) and showing its header to `observe`. Returns why it stopped; `segment.size_bytes` is then the
/// end of the last good batch.
async fn scan(
    file: &File,
    path: &Path,
    file_len: u64,
    segment: &mut Segment,
    config: &LogConfig,
    observe: &mut dyn FnMut(&BatchHeader),
) -> Result<ScanStop, LogError> {
    let batch_bytes_max = usize::try_from(config.segment_bytes).unwrap_or(usize::MAX);
    let mut buf = AlignedBuf::new(window_bytes(segment.size_bytes, file_len));
    loop {
        let position = segment.size_bytes;
        if position >= file_len {
            return Ok(ScanStop::EndOfFile);
        }
        let window_start = align_down_u64(position);
        let (read, returned) = read_window(file, path, buf, window_start, file_len).await;
        buf = returned;
        let read = read?;
        let skip = (position - window_start) as usize;
        let bytes = buf.as_full().get(skip..read).unwrap_or_default();
        let mut batches = BatchIter::new(bytes).with_batch_bytes_max(batch_bytes_max);
        loop {
            let at = position + batches.consumed_bytes() as u64;
            match batches.next() {
                None => break,
                Some(Ok((header, _))) => {
                    if let Some(reason) = unexpected_batch(segment, at, &header) {
                        return Ok(ScanStop::Damaged(reason));
                    }
                    segment.record_batch(at, &header, config.index_interval_bytes);
                    observe(&header);
                    // -1 is "no timestamp" (Kafka's format), not 1969: rolling by age would
                    // take such a segment for ancient and roll it at the first append after
                    // every start. Without one, the age goes by the file's last modification
                    // (see `prepare_active`).
                    if segment.first_batch_ms.is_none() && header.max_timestamp_ms >= 0 {
                        segment.first_batch_ms = Some(header.max_timestamp_ms);
                    }
                }
                Some(Err(error)) => return Ok(stop_at(batches.remaining(), error.to_string())),
            }
        }
        let rest = batches.remaining();
        if rest.is_empty() {
            if window_start + read as u64 >= file_len {
                return Ok(ScanStop::EndOfFile);
            }
            continue;
        }
        // An incomplete batch at the window's end.
        if window_start + read as u64 >= file_len {
            return Ok(stop_at(rest, "the file ends inside a batch".to_string()));
        }
        if batches.consumed_bytes() == 0 {
            // One batch larger than the window: read a window that holds all of it.
            let total = batch_total_bytes(rest).unwrap_or(SCAN_WINDOW_BYTES);
            let needed = align_up(skip + total);
            if needed > buf.capacity() {
                buf = AlignedBuf::new(needed);
            } else {
                return Err(LogError::Corrupt {
                    path: path.to_path_buf(),
                    position,
                    reason: "scan made no progress".to_string(),
                });
            }
        }
    }
}

/// A reason to stop at a batch that parses and passes its CRC but does not belong here.
fn unexpected_batch(segment: &Segment, position: u64, header: &BatchHeader) -> Option<String> {
    if header.base_offset != segment.next_offset {
        // baseOffset is outside the CRC: a flipped bit there shows only as a broken sequence.
        return Some(format!(
            "batch base offset {} where {} was expected",
            header.base_offset, segment.next_offset
        ));
    }
    let fits_index = segment.relative_offset(header.last_offset()).is_some();
    let end = position + header.total_bytes() as u64;
    if !fits_index || u32::try_from(end).is_err() {
        return Some("batch lies beyond what one segment can hold".to_string());
    }
    None
}

/// Zeros where a batch should start mean the end of the written data; anything else is
/// damage.
fn stop_at(rest: &[u8], reason: String) -> ScanStop {
    let header = rest.get(..BATCH_OVERHEAD_BYTES).unwrap_or(rest);
    if header.iter().all(|&byte| byte == 0) {
        ScanStop::ZeroPadding
    } else {
        ScanStop::Damaged(reason)
    }
}

/// The whole size of the batch at the start of `rest`, from its batchLength field.
fn batch_total_bytes(rest: &[u8]) -> Option<usize> {
    let field: [u8; 4] = rest.get(8..12)?.try_into().ok()?;
    let length = usize::try_from(i32::from_be_bytes(field)).ok()?;
    Some(length + BATCH_OVERHEAD_BYTES)
}

/// Reads as much of `[window_start, file_len)` as `buf` holds; gives the buffer back with
/// the number of bytes read.
async fn read_window(
    file: &File,
    path: &Path,
    buf: AlignedBuf,
    window_start: u64,
    file_len: u64,
) -> (Result<usize, LogError>, AlignedBuf) {
    let wanted = usize::try_from(file_len - window_start)
        .unwrap_or(usize::MAX)
        .min(buf.capacity());
    let (result, buf) = file.read_at(buf, window_start).await;
    let outcome = match result {
        Err(error) => Err(LogError::io("reading a segment", error)),
        Ok(read) if read < wanted => Err(LogError::Corrupt {
            path: path.to_path_buf(),
            position: window_start + read as u64,
            reason: format!("short read: {read} of {wanted} bytes"),
        }),
        Ok(_) => Ok(wanted),
    };
    (outcome, buf)
}

/// Bytes from `from` to the end of the last non-zero byte before the first all-zero window
/// (or the end of the file): how much written data a cut at `from` drops.
async fn nonzero_extent(file: &File, from: u64, file_len: u64) -> Result<u64, LogError> {
    let mut window_start = align_down_u64(from);
    let mut buf = AlignedBuf::new(window_bytes(window_start, file_len));
    let mut last_nonzero_end = from;
    while window_start < file_len {
        let (result, returned) = file.read_at(buf, window_start).await;
        buf = returned;
        let read = result.map_err(|error| LogError::io("reading a damaged segment", error))?;
        if read == 0 {
            break;
        }
        let skip = from.saturating_sub(window_start) as usize;
        let bytes = buf.as_full().get(skip.min(read)..read).unwrap_or_default();
        match bytes.iter().rposition(|&byte| byte != 0) {
            Some(at) => last_nonzero_end = window_start + (skip + at + 1) as u64,
            None => break,
        }
        window_start += read as u64;
    }
    Ok(last_nonzero_end - from)
}

async fn truncate_and_sync(file: &File, len: u64) -> Result<(), LogError> {
    file.truncate(len)
        .await
        .map_err(|error| LogError::io("truncating a segment", error))?;
    file.sync_data()
        .await
        .map_err(|error| LogError::io("syncing a truncated segment", error))
}

/// Makes the last segment ready for appends: cut at the end of its data (so stale bytes of a
/// torn write can never reappear after a later append), preallocated again, and its last
/// partial block kept for the first in-memory chunk.
async fn prepare_active(
    dir: &Path,
    segment: &mut Segment,
    config: &LogConfig,
    now_ms: i64,
) -> Result<(), LogError> {
    segment.state = SegmentState::Active;
    // A segment whose batches carry no timestamp is aged from its file's last modification
    // (set by `recover_segment`), which Kafka's roll by age also falls back to.
    segment.first_batch_ms = segment
        .first_batch_ms
        .or(segment.last_batch_ms)
        .map(|ms| ms.min(now_ms));
    let Some(file) = segment.file.clone() else {
        return Ok(());
    };
    let end = segment.size_bytes;
    let file_len = file
        .len()
        .await
        .map_err(|error| LogError::io("reading a segment's length", error))?;
    if file_len > end {
        truncate_and_sync(&file, end).await?;
    }
    let target = preallocation_target(end, config.preallocate_step_bytes, config.segment_bytes);
    segment.allocated_bytes = end;
    // An empty segment (a partition idle since retention rolled it, or since a roll) may stay
    // empty long, on many partitions: its first write reserves space instead.
    if end > 0 && end < target {
        match file.allocate(0, target).await {
            Ok(()) => segment.allocated_bytes = target,
            // Appends still work where space remains; the flusher tries again as data grows,
            // and a full disk shows up as DiskFull there.
            Err(error) => {
                tracing::warn!(dir = %dir.display(), %error, "cannot preallocate the active segment")
            }
        }
    }
    let block_start = align_down_u64(end);
    if block_start < end {
        let (result, block) = file
            .read_at(AlignedBuf::new(IO_ALIGN_BYTES), block_start)
            .await;
        let read = result.map_err(|error| LogError::io("reading the last block", error))?;
        let len = (end - block_start) as usize;
        let tail = block
            .get(..len)
            .filter(|_| read >= len)
            .ok_or_else(|| LogError::Corrupt {
                path: segment.log_path(dir),
                position: block_start,
                reason: "short read of the last block".to_string(),
            })?;
        segment.recovered_tail = Some(tail.to_vec());
    }
    Ok(())
}

/// A scan buffer no larger than the data left from `position` (closed segments are usually
/// read only from their last index entry) nor than [`SCAN_WINDOW_BYTES`].
fn window_bytes(position: u64, file_len: u64) -> usize {
    let left = file_len.saturating_sub(align_down_u64(position));
    align_up(
        usize::try_from(left)
            .unwrap_or(usize::MAX)
            .min(SCAN_WINDOW_BYTES),
    )
}

fn align_down_u64(position: u64) -> u64 {
    // Segment positions fit in u32, so the cast to usize is lossless.
    align_down(position as usize) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_own_temporary_files_are_leftovers() {
        for own in [
            "00000000000000000000.index.tmp",
            "00000000000000004096.timeindex.tmp",
            "00000000000000000042.producers.tmp",
        ] {
            assert!(is_own_leftover(own), "{own}");
        }
        for foreign in [
            "notes.tmp",
            "00000000000000000000.log.tmp",
            "0000000000000000000.index.tmp",
            "00000000000000000000.index",
            "backup.index.tmp",
        ] {
            assert!(!is_own_leftover(foreign), "{foreign}");
        }
    }
}
