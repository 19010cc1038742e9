//! Read-ahead for sequential reads from disk.
//!
//! A consumer far behind the tail reads a segment front to back, one fetch at a time. Without
//! read-ahead every fetch waits for its own O_DIRECT read, and the disk idles while the answer
//! is sent and the next fetch travels. Here segment files are read in aligned extents of
//! [`EXTENT_BYTES`]: a read at position `p` starts the reads of the extent holding `p` and of
//! the next ones, up to `LogConfig::read_ahead_bytes` ahead (several reads in flight at
//! once), and waits only for the one it needs. Later fetches find their bytes in memory, or
//! their read already on its way.
//!
//! Bytes from one extent are shared with the slices that send them (no copy); a range that
//! crosses an extent boundary (a batch straddling two extents) is copied out of both into a
//! buffer of its own, which costs a memory copy of that batch instead of a second disk read.
//!
//! Memory, per partition: at most `read_ahead_bytes / EXTENT_BYTES` extents ahead of the
//! reader plus the ones it is in, and as many buffers kept for the next extents. Extents
//! behind the reader are dropped as it moves on, and once its reads are served from memory
//! again (it caught up with the tail) the partition holds none; a reader that stops half-way
//! leaves its window until the partition is read again or closed.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::future::poll_fn;
use std::rc::Rc;
use std::task::{Poll, Waker};

use crate::buffer::{align_down, AlignedBuf};
use crate::reactor::{self, fs::File};

/// Bytes of one read-ahead read (aligned; also the disk reference's block size).
pub(crate) const EXTENT_BYTES: usize = 1 << 20;

/// Bytes of a segment from read-ahead extents.
pub(super) struct AheadBytes {
    /// Holds the bytes from segment position `file_start` on.
    pub(super) buf: Rc<AlignedBuf>,
    /// Segment position of `buf[0]`.
    pub(super) file_start: u64,
    /// Segment position after the last byte read and visible when it was read.
    pub(super) valid_end: u64,
}

/// One partition's read-ahead extents.
pub(super) struct ReadAhead {
    /// Extents to keep ahead of the reader; 0 turns read-ahead off.
    depth: usize,
    extents: Rc<RefCell<Extents>>,
}

#[derive(Default)]
struct Extents {
    /// In the order they were started.
    list: VecDeque<Extent>,
    /// Buffers of dropped extents, for the next reads.
    spare: Vec<AlignedBuf>,
    /// Buffers of dropped extents that slices still held; spare once they let go.
    retired: Vec<Rc<AlignedBuf>>,
    next_id: u64,
}

struct Extent {
    /// Tells a finished read whether its extent is still wanted.
    id: u64,
    segment_base: i64,
    /// Segment position of the first byte (a multiple of [`EXTENT_BYTES`]).
    start: u64,
    state: ExtentState,
}

enum ExtentState {
    Reading { waiters: Vec<Waker> },
    Ready(AheadBytes),
    Failed,
}

impl ReadAhead {
    /// Read-ahead of up to `read_ahead_bytes` beyond the extent being read (0: off).
    pub(super) fn new(read_ahead_bytes: u64) -> ReadAhead {
        let depth = usize::try_from(read_ahead_bytes.div_ceil(EXTENT_BYTES as u64)).unwrap_or(0);
        ReadAhead {
            depth,
            extents: Rc::new(RefCell::new(Extents::default())),
        }
    }

    /// Whether reads go through extents.
    pub(super) fn is_on(&self) -> bool {
        self.depth > 0
    }

    /// Segment bytes `[start, end)` (visible below `visible_end`) from extents: the extent
    /// holding them, or a copy out of the extents they straddle. Starts the reads of those
    /// extents and of `depth` more (below `visible_end`) first. `None` when an extent's read
    /// failed or was dropped while waiting: the caller reads directly and reports any error.
    pub(super) async fn bytes(
        &self,
        file: &Rc<File>,
        segment_base: i64,
        start: u64,
        end: u64,
        visible_end: u64,
    ) -> Option<AheadBytes> {
        if start >= end || end > visible_end {
            debug_assert!(false, "read-ahead of an empty or invisible range");
            return None;
        }
        let first = extent_start(start);
        let last = extent_start(end - 1);
        self.start_reads(file, segment_base, first, last, visible_end);
        let mut extent = first;
        let mut pieces = Vec::new();
        while extent <= last {
            pieces.push(self.wait_for(segment_base, extent).await?);
            extent += EXTENT_BYTES as u64;
        }
        if let [one] = pieces.as_slice() {
            if one.valid_end < end {
                return None;
            }
            return pieces.pop();
        }
        stitch(&pieces, start, end)
    }

    /// Drops the extents of segment `segment_base` that end at or before `position`: the
    /// reader is past them (called when a read is served from memory again).
    /// Once none is left, the buffers kept for reuse go too: an idle partition holds none.
    pub(super) fn forget_before(&self, segment_base: i64, position: u64) {
        let mut extents = self.extents.borrow_mut();
        if extents.list.is_empty() {
            if !extents.spare.is_empty() || !extents.retired.is_empty() {
                extents.spare.clear();
                extents.retired.clear();
            }
            return;
        }
        let mut index = 0;
        while index < extents.list.len() {
            let extent = &extents.list[index];
            if extent.segment_base == segment_base && extent.start + EXTENT_BYTES as u64 <= position
            {
                if let Some(extent) = extents.list.remove(index) {
                    extents.recycle(extent, self.depth);
                }
            } else {
                index += 1;
            }
        }
    }

    /// Starts the reads of extents `first..=last` and of `depth` more, where missing, and
    /// drops this segment's extents behind `first` (and the oldest others beyond the bound).
    fn start_reads(
        &self,
        file: &Rc<File>,
        segment_base: i64,
        first: u64,
        last: u64,
        visible_end: u64,
    ) {
        let ahead_end = last.saturating_add((self.depth * EXTENT_BYTES) as u64);
        let mut wanted = first;
        while wanted <= ahead_end && wanted < visible_end {
            let present = self.extents.borrow().find(segment_base, wanted).is_some();
            if !present {
                self.start_read(file, segment_base, wanted, visible_end);
            }
            wanted += EXTENT_BYTES as u64;
        }
        let mut extents = self.extents.borrow_mut();
        let keep_max = self.depth + 1 + ((last - first) / EXTENT_BYTES as u64) as usize;
        let mut index = 0;
        while index < extents.list.len() {
            let extent = &extents.list[index];
            let behind = extent.segment_base == segment_base && extent.start < first;
            let over = extents.list.len() > keep_max
                && !(extent.segment_base == segment_base && extent.start >= first);
            if behind || over {
                if let Some(extent) = extents.list.remove(index) {
                    extents.recycle(extent, self.depth);
                }
            } else {
                index += 1;
            }
        }
    }

    fn start_read(&self, file: &Rc<File>, segment_base: i64, start: u64, visible_end: u64) {
        let (id, buf) = {
            let mut extents = self.extents.borrow_mut();
            let id = extents.next_id;
            extents.next_id += 1;
            extents.list.push_back(Extent {
                id,
                segment_base,
                start,
                state: ExtentState::Reading {
                    waiters: Vec::new(),
                },
            });
            let buf = extents
                .take_spare()
                .unwrap_or_else(|| AlignedBuf::new(EXTENT_BYTES));
            (id, buf)
        };
        let (file, shared) = (Rc::clone(file), Rc::clone(&self.extents));
        // Detached: the result lands in the extent, if it is still wanted then.
        drop(reactor::spawn(async move {
            let (result, buf) = file.read_at(buf, start).await;
            let state = match result {
                Ok(read) => ExtentState::Ready(AheadBytes {
                    buf: Rc::new(buf),
                    file_start: start,
                    valid_end: (start + read as u64).min(visible_end),
                }),
                Err(error) => {
                    tracing::debug!(%error, start, "read-ahead read failed; reads go direct");
                    ExtentState::Failed
                }
            };
            shared.borrow_mut().finish(id, state);
        }));
    }

    /// Waits for the extent of `segment_base` at `start`; `None` if it failed or is gone.
    async fn wait_for(&self, segment_base: i64, start: u64) -> Option<AheadBytes> {
        poll_fn(|cx| {
            let mut extents = self.extents.borrow_mut();
            let Some(index) = extents.find(segment_base, start) else {
                return Poll::Ready(None);
            };
            match &mut extents.list[index].state {
                ExtentState::Reading { waiters } => {
                    waiters.push(cx.waker().clone());
                    Poll::Pending
                }
                ExtentState::Ready(ahead) => Poll::Ready(Some(AheadBytes {
                    buf: Rc::clone(&ahead.buf),
                    file_start: ahead.file_start,
                    valid_end: ahead.valid_end,
                })),
                ExtentState::Failed => {
                    extents.list.remove(index);
                    Poll::Ready(None)
                }
            }
        })
        .await
    }
}

impl Extents {
    fn find(&self, segment_base: i64, start: u64) -> Option<usize> {
        self.list
            .iter()
            .position(|extent| extent.segment_base == segment_base && extent.start == start)
    }

    /// Records the end of extent `id`'s read and wakes its waiters (nothing if it was
    /// dropped meanwhile: the buffer is kept for reuse).
    fn finish(&mut self, id: u64, state: ExtentState) {
        let Some(extent) = self.list.iter_mut().find(|extent| extent.id == id) else {
            if let ExtentState::Ready(ahead) = state {
                if let Ok(buf) = Rc::try_unwrap(ahead.buf) {
                    self.spare.push(buf);
                }
            }
            return;
        };
        if let ExtentState::Reading { waiters } = std::mem::replace(&mut extent.state, state) {
            for waker in waiters {
                waker.wake();
            }
        }
    }

    /// A buffer for the next extent: a spare one, or a retired one no slice holds any more.
    fn take_spare(&mut self) -> Option<AlignedBuf> {
        if let Some(buf) = self.spare.pop() {
            return Some(buf);
        }
        let index = self
            .retired
            .iter()
            .position(|buf| Rc::strong_count(buf) == 1)?;
        Rc::try_unwrap(self.retired.swap_remove(index)).ok()
    }

    /// Drops `extent`, keeping its buffer for reuse (at most `keep` of them): spare if no
    /// slice holds it, else retired until the slices let go.
    fn recycle(&mut self, extent: Extent, keep: usize) {
        match extent.state {
            ExtentState::Ready(ahead) => {
                if self.spare.len() + self.retired.len() >= keep {
                    return;
                }
                match Rc::try_unwrap(ahead.buf) {
                    Ok(buf) => self.spare.push(buf),
                    Err(shared) => self.retired.push(shared),
                }
            }
            // Its read finishes into nothing; anyone waiting retries and reads directly.
            ExtentState::Reading { waiters } => waiters.into_iter().for_each(Waker::wake),
            ExtentState::Failed => {}
        }
    }
}

/// Start of the extent holding segment position `position`.
fn extent_start(position: u64) -> u64 {
    position - position % EXTENT_BYTES as u64
}

/// Copies `[start, end)` out of consecutive extents into a buffer of its own.
fn stitch(pieces: &[AheadBytes], start: u64, end: u64) -> Option<AheadBytes> {
    let file_start = align_down(start as usize) as u64;
    let mut buf = AlignedBuf::new((end - file_start) as usize);
    let mut position = file_start;
    for piece in pieces {
        if position >= end {
            break;
        }
        let piece_end = piece.valid_end.min(end);
        if position < piece.file_start || piece_end <= position {
            return None;
        }
        let from = (position - piece.file_start) as usize;
        let bytes = piece
            .buf
            .as_full()
            .get(from..from + (piece_end - position) as usize)?;
        buf.extend_from_slice(bytes);
        position = piece_end;
    }
    (position == end).then(|| AheadBytes {
        buf: Rc::new(buf),
        file_start,
        valid_end: end,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::path::Path;

    use crate::batch::BatchBuilder;
    use crate::cache::ChunkCache;
    use crate::log::{Acks, LogConfig, PartitionLog};
    use crate::reactor::{block_on, RingConfig};

    /// A log in `dir` with a memory cache too small to hold what is appended.
    async fn open(dir: &Path, read_ahead_bytes: u64) -> PartitionLog {
        let config = LogConfig {
            segment_bytes: 3 << 20,
            chunk_bytes: 64 << 10,
            read_ahead_bytes,
            ..LogConfig::default()
        };
        PartitionLog::open(dir, config, Rc::new(ChunkCache::new(256 << 10)))
            .await
            .unwrap()
    }

    /// Reads everything from offset 0 as a consumer does (1 MiB per read); the bytes in order.
    async fn read_everything(log: &PartitionLog) -> Vec<u8> {
        let mut bytes = Vec::new();
        let mut offset = 0;
        while offset < log.high_watermark() {
            let parts = log.read_parts(offset, 1 << 20).await.unwrap();
            for slice in parts.slices() {
                bytes.extend_from_slice(slice.bytes());
            }
            offset = parts.next_offset();
        }
        bytes
    }

    #[test]
    fn sequential_reads_from_disk_through_extents_return_every_byte() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_path_buf();
        block_on(RingConfig::default(), async move {
            let log = open(&path, 2 * EXTENT_BYTES as u64).await;
            // Batches of uneven sizes (some larger than an extent), so that many straddle
            // extent boundaries, over several segments.
            let mut appended = Vec::new();
            for i in 0..90usize {
                let value_bytes = if i % 29 == 7 {
                    1_300_000
                } else {
                    20_000 + (i * 7919) % 90_000
                };
                let mut builder = BatchBuilder::new(Vec::new(), 0);
                builder
                    .push(0, None, Some(&vec![i as u8; value_bytes]), &[])
                    .unwrap();
                let mut batch = builder.finish().to_vec();
                log.append(&mut batch, Acks::Leader).await.unwrap();
                appended.extend_from_slice(&batch);
            }
            log.close().await.unwrap();
            drop(log);
            for read_ahead_bytes in [2 * EXTENT_BYTES as u64, 0] {
                // Reopened: nothing in memory, every read goes to the segment files.
                let log = open(&path, read_ahead_bytes).await;
                assert_eq!(
                    read_everything(&log).await,
                    appended,
                    "read-ahead {read_ahead_bytes}"
                );
                assert!(log.stats().disk_reads > 0);
                let extents_read = log.inner.read_ahead.extents.borrow().next_id;
                // About one extent per MiB of log, each read once.
                let extents_max = 2 * (appended.len() / EXTENT_BYTES) as u64 + 8;
                if read_ahead_bytes > 0 {
                    assert!(
                        extents_read > 0 && extents_read <= extents_max,
                        "{extents_read}"
                    );
                } else {
                    assert_eq!(extents_read, 0);
                }
                // Reading again from the middle works with the extents already there.
                let parts = log.read_parts(40, 1 << 20).await.unwrap();
                assert_eq!(parts.first_offset(), 40);
                log.close().await.unwrap();
            }
        })
        .unwrap();
    }

    fn piece(file_start: u64, bytes: &[u8]) -> AheadBytes {
        let mut buf = AlignedBuf::new(bytes.len());
        buf.extend_from_slice(bytes);
        AheadBytes {
            buf: Rc::new(buf),
            file_start,
            valid_end: file_start + bytes.len() as u64,
        }
    }

    #[test]
    fn a_range_across_extents_is_copied_out_of_each() {
        let extent = EXTENT_BYTES as u64;
        let first: Vec<u8> = (0..EXTENT_BYTES).map(|i| (i % 251) as u8).collect();
        let second: Vec<u8> = (0..EXTENT_BYTES).map(|i| (i % 241) as u8).collect();
        let pieces = [piece(0, &first), piece(extent, &second)];
        let (start, end) = (extent - 5000, extent + 300);
        let stitched = stitch(&pieces, start, end).unwrap();
        assert_eq!(stitched.file_start, align_down(start as usize) as u64);
        assert_eq!(stitched.valid_end, end);
        let from = (start - stitched.file_start) as usize;
        let got = &stitched.buf.as_full()[from..from + (end - start) as usize];
        let mut expected = first[first.len() - 5000..].to_vec();
        expected.extend_from_slice(&second[..300]);
        assert_eq!(got, &expected[..]);
        // A short first extent (the visible end when it was read) leaves a gap: no bytes.
        let short = [piece(0, &first[..1000]), piece(extent, &second)];
        assert!(stitch(&short, start, end).is_none());
    }
}
