//! Reads: whole batches from the in-memory chunks (zero-copy) or from the segment file with
//! O_DIRECT into an aligned buffer, and lookups by timestamp.
//!
//! A lookup starts at the sparse index entry at or before the wanted batch and walks batch
//! headers forward: at most `index_interval_bytes` plus one batch. Bytes come from a chunk
//! when one still holds them, else from one disk read sized for the whole answer; only a
//! first batch larger than that read costs a second, exact read.
//!
//! One [`ReadSlice`] is contiguous memory, so it ends where its chunk (or disk read) ends.
//! [`ReadParts`] goes on from there: the next batches, from the next chunk, the next segment or
//! disk, as further slices, until `max_bytes` is reached; a fetch sends them back to back.

use std::cell::Cell;
use std::ops::Range;
use std::path::PathBuf;
use std::ptr::NonNull;
use std::rc::Rc;

use super::Inner;
use crate::batch::{BatchHeader, BATCH_HEADER_BYTES};
use crate::buffer::{align_down, align_up, AlignedBuf, IoBuf};
use crate::cache::Chunk;
use crate::error::LogError;
use crate::reactor::fs::File;
use crate::segment::{segment_path, ScanStart, LOG_SUFFIX};

/// Largest disk read one fetch makes in one go (a larger first batch is read whole anyway).
const READ_WINDOW_BYTES_MAX: usize = 8 << 20;

/// Most slices one [`ReadParts`] gathers (each is one chunk, one disk read or one segment).
pub const READ_PARTS_MAX: usize = 32;

/// Whole batches returned by a read: a byte range of a shared in-memory chunk or of a
/// buffer read from disk. Implements [`IoBuf`], so it can be handed to a socket send as is.
pub struct ReadSlice {
    data: SliceData,
    range: Range<usize>,
    first_offset: i64,
    next_offset: i64,
}

enum SliceData {
    Empty,
    Memory(Rc<Chunk>),
    /// A disk read, possibly a read-ahead extent shared with other slices.
    Disk(Rc<AlignedBuf>),
}

impl ReadSlice {
    fn empty(offset: i64) -> ReadSlice {
        ReadSlice {
            data: SliceData::Empty,
            range: 0..0,
            first_offset: offset,
            next_offset: offset,
        }
    }

    /// The batches' bytes.
    pub fn bytes(&self) -> &[u8] {
        match &self.data {
            SliceData::Empty => &[],
            SliceData::Memory(chunk) => {
                let start = chunk.file_start() + self.range.start as u64;
                let end = chunk.file_start() + self.range.end as u64;
                chunk
                    .bytes_at(start, end)
                    .expect("a read slice lies within its chunk's filled bytes")
            }
            SliceData::Disk(buf) => &buf.as_full()[self.range.clone()],
        }
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.range.len()
    }

    /// Whether there are no batches (a read at the high watermark).
    pub fn is_empty(&self) -> bool {
        self.range.is_empty()
    }

    /// Whether the bytes are shared with an in-memory chunk (no disk read, no copy).
    pub fn is_from_memory(&self) -> bool {
        matches!(self.data, SliceData::Memory(_))
    }

    /// Base offset of the first batch (the offset asked for when empty).
    pub fn first_offset(&self) -> i64 {
        self.first_offset
    }

    /// Offset after the last batch: where the next read continues.
    pub fn next_offset(&self) -> i64 {
        self.next_offset
    }
}

impl std::fmt::Debug for ReadSlice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadSlice")
            .field("len", &self.len())
            .field("from_memory", &self.is_from_memory())
            .field("first_offset", &self.first_offset)
            .field("next_offset", &self.next_offset)
            .finish()
    }
}

/// Whole batches from consecutive offsets, in one or more contiguous slices (one per chunk,
/// disk read or segment they came from), in log order. Returned by
/// [`super::PartitionLog::read_parts`]; send the slices back to back.
#[derive(Debug)]
pub struct ReadParts {
    slices: Vec<ReadSlice>,
    len_bytes: usize,
    first_offset: i64,
    next_offset: i64,
}

impl ReadParts {
    fn new(first: ReadSlice) -> ReadParts {
        let mut parts = ReadParts {
            slices: Vec::new(),
            len_bytes: 0,
            first_offset: first.first_offset,
            next_offset: first.first_offset,
        };
        parts.push(first);
        parts
    }

    fn push(&mut self, slice: ReadSlice) {
        assert_eq!(
            slice.first_offset, self.next_offset,
            "read parts continue each other"
        );
        if slice.is_empty() {
            return;
        }
        self.len_bytes += slice.len();
        self.next_offset = slice.next_offset;
        self.slices.push(slice);
    }

    /// The slices, in log order; none when there were no batches at the offset.
    pub fn slices(&self) -> &[ReadSlice] {
        &self.slices
    }

    /// The slices, to send them.
    pub fn into_slices(self) -> Vec<ReadSlice> {
        self.slices
    }

    /// Bytes in all slices.
    pub fn len(&self) -> usize {
        self.len_bytes
    }

    /// Whether there are no batches (a read at the high watermark).
    pub fn is_empty(&self) -> bool {
        self.len_bytes == 0
    }

    /// Base offset of the first batch (the offset asked for when empty).
    pub fn first_offset(&self) -> i64 {
        self.first_offset
    }

    /// Offset after the last batch: where the next read continues.
    pub fn next_offset(&self) -> i64 {
        self.next_offset
    }

    /// All bytes in one vector (a copy; for sending to another shard).
    pub fn to_vec(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(self.len_bytes);
        for slice in &self.slices {
            bytes.extend_from_slice(slice.bytes());
        }
        bytes
    }
}

// SAFETY: the bytes live in a chunk or an AlignedBuf kept alive by the `Rc`; both are heap
// allocations that do not move with the ReadSlice and are freed (or reused, by the chunk pool
// and the read-ahead) only once no slice holds them. The range lies within bytes that are
// initialised and never written again while shared (checked when built).
unsafe impl IoBuf for ReadSlice {
    fn stable_ptr(&self) -> *const u8 {
        match &self.data {
            SliceData::Empty => NonNull::<u8>::dangling().as_ptr(),
            SliceData::Memory(chunk) => chunk.stable_ptr().wrapping_add(self.range.start),
            SliceData::Disk(buf) => buf.stable_ptr().wrapping_add(self.range.start),
        }
    }
    fn bytes_init(&self) -> usize {
        self.range.len()
    }
}

/// What a read needs of a segment, copied out of the state so no borrow spans an await.
pub(super) struct SegmentView {
    base_offset: i64,
    /// Bytes readers may see.
    visible_end: u64,
    file: Option<Rc<File>>,
}

/// Bytes around a position: a chunk, or a buffer read from disk.
enum Source {
    Memory(Rc<Chunk>),
    Disk {
        buf: Rc<AlignedBuf>,
        /// Segment position of `buf[0]`.
        file_start: u64,
        /// Segment position after the last usable byte (read and visible).
        valid_end: u64,
    },
}

impl Source {
    /// The bytes between segment positions `start` and `end` if this source holds them.
    fn bytes(&self, start: u64, end: u64) -> Option<&[u8]> {
        match self {
            Source::Memory(chunk) => {
                if !chunk.holds_batch_at(start) {
                    return None;
                }
                chunk.bytes_at(start, end)
            }
            Source::Disk {
                buf,
                file_start,
                valid_end,
            } => {
                if start < *file_start || end > *valid_end || start > end {
                    return None;
                }
                let from = (start - file_start) as usize;
                buf.as_full().get(from..from + (end - start) as usize)
            }
        }
    }

    /// The header of the batch at `position`, if this source holds it.
    fn header_at(
        &self,
        position: u64,
        batch_bytes_max: usize,
    ) -> Option<Result<BatchHeader, String>> {
        let bytes = self.bytes(position, position + BATCH_HEADER_BYTES as u64)?;
        Some(BatchHeader::parse_with_max(bytes, batch_bytes_max).map_err(|error| error.to_string()))
    }

    /// Whether the batch at `[start, end)` matches its header's CRC. Bytes in memory were
    /// checked when produced; bytes from disk are checked here, because recovery checks a
    /// closed segment only from its last index entry and nothing corrupt is served.
    fn crc_matches(&self, start: u64, end: u64, header: &BatchHeader) -> bool {
        match self {
            Source::Memory(_) => true,
            Source::Disk { .. } => self
                .bytes(start, end)
                .is_some_and(|batch| crate::batch::crc_of(batch) == header.crc),
        }
    }

    fn into_slice(self, start: u64, end: u64, first_offset: i64, next_offset: i64) -> ReadSlice {
        let (data, origin) = match self {
            Source::Memory(chunk) => {
                let origin = chunk.file_start();
                (SliceData::Memory(chunk), origin)
            }
            Source::Disk {
                buf, file_start, ..
            } => (SliceData::Disk(buf), file_start),
        };
        let range = (start - origin) as usize..(end - origin) as usize;
        let slice = ReadSlice {
            data,
            range,
            first_offset,
            next_offset,
        };
        assert_eq!(
            slice.bytes().len() as u64,
            end - start,
            "slice within its source"
        );
        slice
    }
}

/// A batch found by a walk, and the bytes it was found in.
struct Found {
    position: u64,
    header: BatchHeader,
    source: Source,
    /// `Some(expected)` when the walk stopped here because the batch's base offset is not
    /// `expected`, the offset after the batches walked before it: the CRC does not cover a
    /// base offset, so damage there (or in the batch before) is found only this way.
    out_of_sequence: Option<i64>,
}

/// Batches collected from one source, and whether more may follow elsewhere.
struct Collected {
    slice: ReadSlice,
    /// Segment position after the last batch.
    end: u64,
    /// The source ran out (a chunk or disk read ended) or the segment's visible bytes did,
    /// rather than the next batch not fitting `max_bytes` or not being visible yet.
    source_ended: bool,
}

impl Inner {
    pub(super) async fn read(&self, offset: i64, max_bytes: usize) -> Result<ReadSlice, LogError> {
        let Some((view, found)) = self.find_offset(offset, max_bytes).await? else {
            return Ok(ReadSlice::empty(offset));
        };
        Ok(self.collect(&view, found, max_bytes).slice)
    }

    /// As [`Inner::read`], going on past the end of the chunk or disk read that holds the
    /// first batch: the next sources' whole batches that fit `max_bytes` follow as further
    /// slices (at most [`READ_PARTS_MAX`]).
    pub(super) async fn read_parts(
        &self,
        offset: i64,
        max_bytes: usize,
    ) -> Result<ReadParts, LogError> {
        let Some((mut view, found)) = self.find_offset(offset, max_bytes).await? else {
            return Ok(ReadParts::new(ReadSlice::empty(offset)));
        };
        let mut collected = self.collect(&view, found, max_bytes);
        let mut end = collected.end;
        let mut more = collected.source_ended;
        let mut parts = ReadParts::new(collected.slice);
        while more
            && parts.len() < max_bytes
            && parts.slices().len() < READ_PARTS_MAX
            && parts.next_offset() < self.high_watermark.get()
        {
            // The awaits above let appends in: the segment may have grown, or rolled, since
            // `view` was taken. Decide from its bytes visible now; if retention deleted it
            // meanwhile, serve what was read.
            let Some(current) = self.current_segment_view(view.base_offset) else {
                break;
            };
            view = current;
            if end >= view.visible_end {
                // The next batch is the first of the next segment.
                let Some(next) = self.next_segment_view(view.base_offset) else {
                    break;
                };
                view = next;
                end = 0;
            }
            let budget = max_bytes - parts.len();
            let window_bytes = budget.min(READ_WINDOW_BYTES_MAX);
            // What was read so far is served even if going on fails: the next read reports it.
            let Ok(Some(found)) = self
                .find_batch(&view, end, None, window_bytes, |_| true)
                .await
            else {
                break;
            };
            if found.header.total_bytes() > budget
                || found.header.base_offset != parts.next_offset()
            {
                // Too big, or not the batch that follows (the log changed under the read in
                // a way not foreseen): the next fetch starts from here.
                break;
            }
            let Ok(found) = self.whole_batch(&view, found).await else {
                break;
            };
            collected = self.collect(&view, found, budget);
            end = collected.end;
            more = collected.source_ended;
            parts.push(collected.slice);
        }
        Ok(parts)
    }

    /// The segment and the batch holding `offset`; `None` at the high watermark.
    async fn find_offset(
        &self,
        offset: i64,
        max_bytes: usize,
    ) -> Result<Option<(SegmentView, Found)>, LogError> {
        let log_start = self.log_start_offset.get();
        let high_watermark = self.high_watermark.get();
        if offset < log_start || offset > high_watermark {
            return Err(LogError::OffsetOutOfRange {
                requested: offset,
                log_start,
                high_watermark,
            });
        }
        if offset == high_watermark {
            return Ok(None);
        }
        let (view, start) = {
            let state = self.state.borrow();
            let at = state
                .segment_index_for(offset)
                .expect("offsets at or above the log start lie in a segment");
            let segment = &state.segments[at];
            (self.view(segment), segment.scan_start_for_offset(offset))
        };
        let window_bytes = max_bytes
            .saturating_add(self.config.index_interval_bytes as usize)
            .min(READ_WINDOW_BYTES_MAX);
        // A header whose lastOffsetDelta is negative is damaged (a batch has at least one
        // record): it may hold `offset`, and the CRC check below says so.
        // The last batch the walks passed. Every walk checks base offsets, so it is in
        // sequence; a walk that finds nothing ends after the segment's last batch.
        let last_walked = Cell::new(None::<BatchHeader>);
        let holds = |header: &BatchHeader| {
            last_walked.set(Some(*header));
            header.next_offset() > offset
                || (header.last_offset_delta < 0 && header.base_offset <= offset)
        };
        let mut found = self
            .find_batch_from(&view, start, window_bytes, holds)
            .await?;
        loop {
            let Some(found_now) = found.take() else {
                return Err(self.unclaimed(&view, last_walked.get(), offset));
            };
            let end = found_now.position + found_now.header.total_bytes() as u64;
            if let Some(expected) = found_now.out_of_sequence {
                let (from, expected) = self
                    .sequence_break(&view, &found_now, expected, offset)
                    .await?;
                found = self
                    .find_batch(&view, from, Some(expected), window_bytes, holds)
                    .await?;
                continue;
            }
            match self.whole_batch(&view, found_now).await {
                Ok(found) => return Ok(Some((view, found))),
                // Its damaged header claimed `offset`, but the next batch starts at or before
                // it: `offset` is healthy, further on.
                Err(LogError::DamagedBatch { last_offset, .. }) if last_offset < offset => {
                    found = self
                        .find_batch(&view, end, Some(last_offset + 1), window_bytes, holds)
                        .await?;
                }
                Err(error) => return Err(error),
            }
        }
    }

    /// The walk for `offset` met `found`, whose base offset is not `expected`: either its own
    /// base offset was damaged on disk (the CRC does not cover it) or the batch before claimed
    /// the wrong number of offsets (its lastOffsetDelta was damaged). The batch after it tells
    /// which: it follows `found`'s records counted from `expected` when `found`'s base offset
    /// is the damage. Returns the damage when it holds `offset` (offsets out of sequence are
    /// never served), else where to walk on from and the base offset expected there.
    async fn sequence_break(
        &self,
        view: &SegmentView,
        found: &Found,
        expected: i64,
        offset: i64,
    ) -> Result<(u64, i64), LogError> {
        let header = &found.header;
        let end = found.position + header.total_bytes() as u64;
        let next_base = self.base_offset_at(view, end, &found.source).await;
        let damaged = |last_offset: i64| {
            let error = LogError::DamagedBatch {
                path: self.segment_file(view),
                position: found.position,
                base_offset: expected,
                last_offset: last_offset.min(self.high_watermark.get() - 1).max(expected),
            };
            tracing::warn!(%error, found = header.base_offset, "refusing to serve a batch out of sequence");
            error
        };
        let end_if_own_damage = expected
            .saturating_add(i64::from(header.last_offset_delta))
            .saturating_add(1);
        if header.last_offset_delta >= 0 && next_base == Some(end_if_own_damage) {
            // Its own base offset is damaged: it holds `expected` and the records after.
            if offset < end_if_own_damage {
                return Err(damaged(end_if_own_damage - 1));
            }
            return Ok((end, end_if_own_damage));
        }
        // The batch before it is damaged: the offsets from `expected` up to this batch's are
        // in no batch that can be served; this batch is taken at its word from here on.
        if header.base_offset > expected && offset < header.base_offset {
            return Err(damaged(header.base_offset - 1));
        }
        Ok((found.position, header.base_offset))
    }

    /// `found` with its whole batch in its source, its CRC checked if it came from disk
    /// (bytes in memory were checked when produced; recovery checks a closed segment only
    /// from its last index entry, and nothing corrupt is served). A damaged batch is reported
    /// with the offsets it really holds: its lastOffsetDelta is covered by the CRC that
    /// failed, so its end is taken from the base offset of the batch after it.
    async fn whole_batch(&self, view: &SegmentView, found: Found) -> Result<Found, LogError> {
        let Found {
            position,
            header,
            mut source,
            ..
        } = found;
        let end = position + header.total_bytes() as u64;
        if source.bytes(position, end).is_none() {
            // A batch larger than the window or read-ahead extent: read exactly it.
            source = self.read_range(view, position, end).await?;
        }
        if source.crc_matches(position, end, &header) {
            return Ok(Found {
                position,
                header,
                source,
                out_of_sequence: None,
            });
        }
        let last_offset = match self.base_offset_at(view, end, &source).await {
            Some(next_base) if next_base > header.base_offset => next_base - 1,
            _ => header.last_offset(),
        };
        // Offsets past the high watermark are not in the log yet: they are not damaged.
        let last_offset = last_offset
            .min(self.high_watermark.get() - 1)
            .max(header.base_offset);
        let error = LogError::DamagedBatch {
            path: self.segment_file(view),
            position,
            base_offset: header.base_offset,
            last_offset,
        };
        tracing::warn!(%error, "refusing to serve a damaged batch");
        Err(error)
    }

    /// The base offset of the batch at `position` (a batch end) if it can be read: from
    /// `source`, disk, or the next segment when `position` is the visible end.
    async fn base_offset_at(
        &self,
        view: &SegmentView,
        position: u64,
        source: &Source,
    ) -> Option<i64> {
        if position >= view.visible_end {
            let state = self.state.borrow();
            let at = state
                .segments
                .partition_point(|segment| segment.base_offset <= view.base_offset);
            return state.segments.get(at).map(|segment| segment.base_offset);
        }
        let batch_bytes_max = self.batch_bytes_max();
        let header = match source.header_at(position, batch_bytes_max) {
            Some(header) => header,
            None => self
                .load(view, position, BATCH_HEADER_BYTES)
                .await
                .ok()?
                .header_at(position, batch_bytes_max)?,
        };
        header.ok().map(|header| header.base_offset)
    }

    /// The error for `offset`, visible in the segment of `view` but held by no batch of it:
    /// the segment's last batch, `last`, claims fewer offsets than lie before the segment's
    /// end (its lastOffsetDelta damaged on disk, in a closed segment recovery kept whole; the
    /// CRC that would show it is only checked for a batch that holds the offset read). The
    /// offsets no batch claims, from the end of `last`'s claim (at most `offset`, which it
    /// does not hold) to the segment's end, are refused as damaged, as
    /// [`Inner::whole_batch`] refuses them with `last` when a read asks for its first
    /// offset; else (no batch passed) as [`LogError::Corrupt`].
    fn unclaimed(&self, view: &SegmentView, last: Option<BatchHeader>, offset: i64) -> LogError {
        let Some(last) = last.filter(|last| last.next_offset() <= offset) else {
            return self.corrupt(view, view.visible_end, "no batch holds a visible offset");
        };
        let segment_end = self
            .state
            .borrow()
            .segment(view.base_offset)
            .map_or(offset + 1, |segment| segment.next_offset);
        let error = LogError::DamagedBatch {
            path: self.segment_file(view),
            position: view.visible_end.saturating_sub(last.total_bytes() as u64),
            base_offset: last.next_offset(),
            // `offset` is below the high watermark and held by no batch: damaged too.
            last_offset: (segment_end - 1)
                .min(self.high_watermark.get() - 1)
                .max(offset),
        };
        tracing::warn!(%error, offset, "no batch holds a visible offset: refusing the offsets after the segment's last batch");
        error
    }

    /// The segment based at `base_offset` as it is now, if it still exists.
    fn current_segment_view(&self, base_offset: i64) -> Option<SegmentView> {
        let state = self.state.borrow();
        state.segment(base_offset).map(|segment| self.view(segment))
    }

    /// The segment after the one based at `base_offset`, if it has visible bytes.
    fn next_segment_view(&self, base_offset: i64) -> Option<SegmentView> {
        let state = self.state.borrow();
        let at = state
            .segments
            .partition_point(|segment| segment.base_offset <= base_offset);
        state
            .segments
            .get(at)
            .filter(|segment| segment.visible_bytes > 0)
            .map(|segment| self.view(segment))
    }

    pub(super) async fn batch_for_timestamp(
        &self,
        timestamp_ms: i64,
    ) -> Result<Option<(i64, i64)>, LogError> {
        // Records below the start (DeleteRecords may have moved it inside a segment) are not
        // answered, as Kafka searches from its log start offset.
        let log_start = self.log_start_offset.get();
        let candidates: Vec<(SegmentView, ScanStart)> = {
            let state = self.state.borrow();
            state
                .segments
                .iter()
                .filter(|segment| {
                    segment.max_timestamp_ms >= timestamp_ms
                        && segment.visible_bytes > 0
                        && segment.next_offset > log_start
                })
                .map(|segment| {
                    (
                        self.view(segment),
                        segment.scan_start_for_timestamp(timestamp_ms),
                    )
                })
                .collect()
        };
        let window_bytes = 2 * self.config.index_interval_bytes as usize + BATCH_HEADER_BYTES;
        for (view, mut start) in candidates {
            loop {
                let walked = self
                    .find_batch_from(&view, start, window_bytes, |header| {
                        header.max_timestamp_ms >= timestamp_ms && header.last_offset() >= log_start
                    })
                    .await;
                let (position, last_offset) = match walked {
                    Ok(Some(found)) => {
                        // Out of sequence (damaged): answer the offset the sequence expected
                        // there, never a later one; a read from it reports the damage. Such a
                        // batch was not chosen for its timestamp: answer at least the one
                        // asked for (callers read -1 as "none that late").
                        let offset = found
                            .out_of_sequence
                            .unwrap_or(found.header.base_offset)
                            .max(log_start);
                        let found_ms = found.header.max_timestamp_ms.max(timestamp_ms);
                        return Ok(Some((offset, found_ms)));
                    }
                    Ok(None) => break,
                    Err(LogError::DamagedBatch {
                        position,
                        last_offset,
                        ..
                    }) => (position, last_offset),
                    Err(error) => return Err(error),
                };
                // Bytes that are not batches (their framing lost) have no timestamps to
                // compare, and reads refuse their offsets: the lookup goes on where batches
                // are found again (the next index entry; else the next segment). Failing
                // instead would fail every lookup that reaches them, and a closed segment
                // recovery kept whole with its damage is a candidate up to its file's time.
                let resume = {
                    let state = self.state.borrow();
                    state
                        .segment(view.base_offset)
                        .filter(|segment| last_offset + 1 < segment.next_offset)
                        .map(|segment| segment.scan_start_for_offset(last_offset + 1))
                };
                match resume {
                    // Strictly after the damage and this round's start (a walk whose start
                    // is damaged too goes back to the segment's start): each round starts
                    // further on, so the loop ends.
                    Some(resume) if resume.position > position.max(start.position) => {
                        start = resume;
                    }
                    _ => break,
                }
            }
        }
        Ok(None)
    }

    fn view(&self, segment: &crate::segment::Segment) -> SegmentView {
        SegmentView {
            base_offset: segment.base_offset,
            visible_end: segment.visible_bytes,
            file: segment.file.clone(),
        }
    }

    fn batch_bytes_max(&self) -> usize {
        usize::try_from(self.config.segment_bytes).unwrap_or(usize::MAX)
    }

    fn corrupt(&self, view: &SegmentView, position: u64, reason: &str) -> LogError {
        LogError::Corrupt {
            path: self.segment_file(view),
            position,
            reason: reason.to_string(),
        }
    }

    /// The error for bytes at `position` that cannot be read as a batch (its length or magic
    /// damaged, or cut short): the batches after it cannot be found by walking. When the walk
    /// knows the base offset `expected` there, the damage is reported with the offsets it
    /// hides, up to the next offset index entry (where a read of a later offset starts
    /// walking again) or the end of the segment, so a consumer or share group can go on past
    /// it; else as [`LogError::Corrupt`].
    fn unframed(
        &self,
        view: &SegmentView,
        position: u64,
        expected: Option<i64>,
        reason: &str,
    ) -> LogError {
        let Some(expected) = expected else {
            return self.corrupt(view, position, reason);
        };
        let resume_offset = {
            let state = self.state.borrow();
            state.segment(view.base_offset).map(|segment| {
                segment
                    .index
                    .entries()
                    .iter()
                    .find(|entry| u64::from(entry.position) > position)
                    .map_or(segment.next_offset, |entry| {
                        segment.base_offset + i64::from(entry.relative_offset)
                    })
            })
        };
        let Some(resume_offset) = resume_offset.filter(|resume| *resume > expected) else {
            return self.corrupt(view, position, reason);
        };
        let error = LogError::DamagedBatch {
            path: self.segment_file(view),
            position,
            base_offset: expected,
            last_offset: (resume_offset - 1)
                .min(self.high_watermark.get() - 1)
                .max(expected),
        };
        tracing::warn!(%error, reason, "refusing to serve bytes that are not a batch");
        error
    }

    fn segment_file(&self, view: &SegmentView) -> PathBuf {
        segment_path(&self.dir, view.base_offset, LOG_SUFFIX)
    }

    /// As [`Inner::find_batch`] from the indexed batch `from`, expecting the base offsets to
    /// follow on from the one the index gives; if the batch there does not have it (an index
    /// file damaged on disk), from the segment's start instead: walking on from a wrong
    /// position would skip batches or fail.
    async fn find_batch_from(
        &self,
        view: &SegmentView,
        from: ScanStart,
        window_bytes: usize,
        mut wanted: impl FnMut(&BatchHeader) -> bool,
    ) -> Result<Option<Found>, LogError> {
        let walked = self
            .find_batch(
                view,
                from.position,
                Some(from.base_offset),
                window_bytes,
                &mut wanted,
            )
            .await;
        let index_wrong = match &walked {
            Ok(Some(found)) => found.position == from.position && found.out_of_sequence.is_some(),
            Ok(None) => false,
            Err(LogError::Corrupt { .. }) => true,
            // Not a batch where the index points: the index may be what is wrong.
            Err(LogError::DamagedBatch { position, .. }) => *position == from.position,
            Err(_) => false,
        };
        if from.position == 0 || !index_wrong {
            return walked;
        }
        tracing::warn!(
            path = %self.segment_file(view).display(),
            position = from.position,
            expected = from.base_offset,
            "the offset index does not match the segment; scanning it from its start"
        );
        self.find_batch(view, 0, Some(view.base_offset), window_bytes, wanted)
            .await
    }

    /// Walks batches from `position` (a batch start) to the first one `wanted` accepts. With
    /// `expected` (the base offset of the batch at `position`), it stops as well at a batch
    /// whose base offset breaks the sequence, marked [`Found::out_of_sequence`].
    async fn find_batch(
        &self,
        view: &SegmentView,
        mut position: u64,
        mut expected: Option<i64>,
        window_bytes: usize,
        mut wanted: impl FnMut(&BatchHeader) -> bool,
    ) -> Result<Option<Found>, LogError> {
        let batch_bytes_max = self.batch_bytes_max();
        let mut source: Option<Source> = None;
        while position < view.visible_end {
            let cached = source
                .as_ref()
                .and_then(|source| source.header_at(position, batch_bytes_max));
            let header = match cached {
                Some(header) => header,
                None => {
                    let loaded = self.load(view, position, window_bytes).await?;
                    let header = loaded.header_at(position, batch_bytes_max).ok_or_else(|| {
                        self.unframed(
                            view,
                            position,
                            expected,
                            "batch header missing below the visible end",
                        )
                    })?;
                    source = Some(loaded);
                    header
                }
            };
            let header =
                header.map_err(|reason| self.unframed(view, position, expected, &reason))?;
            let end = position + header.total_bytes() as u64;
            if end > view.visible_end {
                return Err(self.unframed(
                    view,
                    position,
                    expected,
                    "batch runs past the visible end",
                ));
            }
            let out_of_sequence = expected.filter(|expected| *expected != header.base_offset);
            if out_of_sequence.is_some() || wanted(&header) {
                let Some(source) = source else {
                    unreachable!("a header was read from a source");
                };
                return Ok(Some(Found {
                    position,
                    header,
                    source,
                    out_of_sequence,
                }));
            }
            expected = expected.map(|_| header.next_offset());
            position = end;
        }
        Ok(None)
    }

    /// The first found batch (whole in its source and checked, see [`Inner::whole_batch`])
    /// and the whole batches after it in the same source that fit `max_bytes`.
    fn collect(&self, view: &SegmentView, found: Found, max_bytes: usize) -> Collected {
        let Found {
            position,
            header,
            source,
            ..
        } = found;
        let batch_bytes_max = self.batch_bytes_max();
        let mut end = position + header.total_bytes() as u64;
        let mut next_offset = header.next_offset();
        assert!(
            source.bytes(position, end).is_some(),
            "the first batch was checked whole"
        );
        let source_ended = loop {
            if end >= view.visible_end {
                break true;
            }
            let Some(Ok(next)) = source.header_at(end, batch_bytes_max) else {
                break true;
            };
            let next_end = end + next.total_bytes() as u64;
            if next_end - position > max_bytes as u64 || next_end > view.visible_end {
                break false;
            }
            if source.bytes(end, next_end).is_none() {
                break true;
            }
            if next.base_offset != next_offset {
                // A damaged base offset (the CRC does not cover it): never serve offsets out
                // of sequence.
                break false;
            }
            if !source.crc_matches(end, next_end, &next) {
                // Served up to the damage; a read starting at it reports it.
                break false;
            }
            end = next_end;
            next_offset = next.next_offset();
        };
        Collected {
            slice: source.into_slice(position, end, header.base_offset, next_offset),
            end,
            source_ended,
        }
    }

    /// Bytes starting at `position`: the chunk holding them, else a disk read of up to
    /// `window_bytes` (never less than a batch header).
    async fn load(
        &self,
        view: &SegmentView,
        position: u64,
        window_bytes: usize,
    ) -> Result<Source, LogError> {
        if let Some(chunk) = self.chunk_holding(view.base_offset, position) {
            self.bump(|stats| stats.memory_reads += 1);
            self.read_ahead.forget_before(view.base_offset, position);
            return Ok(Source::Memory(chunk));
        }
        let header_end = (position + BATCH_HEADER_BYTES as u64).min(view.visible_end);
        if let Some(source) = self.read_ahead_range(view, position, header_end).await {
            return Ok(source);
        }
        let window_end = position
            .saturating_add(window_bytes.max(BATCH_HEADER_BYTES) as u64)
            .min(view.visible_end);
        self.read_disk(view, position, window_end).await
    }

    /// Segment bytes `[start, end)` from disk: from read-ahead extents, else one exact read.
    async fn read_range(
        &self,
        view: &SegmentView,
        start: u64,
        end: u64,
    ) -> Result<Source, LogError> {
        match self.read_ahead_range(view, start, end).await {
            Some(source) => Ok(source),
            None => self.read_disk(view, start, end).await,
        }
    }

    /// Segment bytes `[start, end)` from read-ahead extents (starting the reads ahead of
    /// them); `None` when read-ahead is off or could not serve them.
    async fn read_ahead_range(&self, view: &SegmentView, start: u64, end: u64) -> Option<Source> {
        let file = view.file.as_ref().filter(|_| self.read_ahead.is_on())?;
        if start >= end {
            return None;
        }
        let ahead = self
            .read_ahead
            .bytes(file, view.base_offset, start, end, view.visible_end)
            .await?;
        self.bump(|stats| stats.disk_reads += 1);
        Some(Source::Disk {
            buf: ahead.buf,
            file_start: ahead.file_start,
            valid_end: ahead.valid_end.min(view.visible_end),
        })
    }

    /// Reads segment bytes `[start, end)` (aligned outwards) from disk.
    async fn read_disk(
        &self,
        view: &SegmentView,
        start: u64,
        end: u64,
    ) -> Result<Source, LogError> {
        let file = view
            .file
            .clone()
            .ok_or_else(|| self.corrupt(view, start, "visible bytes without a file"))?;
        let file_start = align_down(start as usize) as u64;
        let len = align_up((end - file_start) as usize);
        let (result, buf) = file.read_at(AlignedBuf::new(len), file_start).await;
        let read = result.map_err(|error| LogError::io("reading a segment", error))?;
        self.bump(|stats| stats.disk_reads += 1);
        let valid_end = (file_start + read as u64).min(view.visible_end);
        if valid_end < end {
            return Err(self.corrupt(view, valid_end, "short read below the visible end"));
        }
        Ok(Source::Disk {
            buf: Rc::new(buf),
            file_start,
            valid_end,
        })
    }

    /// A live chunk of segment `base_offset` that holds the batch starting at `position`.
    fn chunk_holding(&self, base_offset: i64, position: u64) -> Option<Rc<Chunk>> {
        let state = self.state.borrow();
        state
            .recent
            .iter()
            .rev()
            .filter_map(std::rc::Weak::upgrade)
            .find(|chunk| {
                chunk.placement().segment_base == base_offset && chunk.holds_batch_at(position)
            })
    }
}
