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
//! again (it caught up with the tail) those behind it in its segment go, with the kept ones
//! once no extent is left.
//!
//! Memory, per shard: every extent buffer a partition holds (being read, ready, kept for
//! reuse, and reads whose extent was dropped while in flight) is counted in the shard's
//! [`ReadAheadMemory`], which allows a fixed number, so many cold readers on one shard cost a
//! bounded amount of memory however many partitions it owns. When all are counted, a
//! partition that wants one takes an idle one (ready or kept, not being read) back from the
//! partition that read least recently among those that either stopped (no read through
//! extents while the shard did [`STOPPED_AFTER_READS_PER_EXTENT`] reads per extent of its
//! memory) or hold at least two more than it: readers that stopped give their buffers up to
//! readers still going, and readers still going settle on equal shares instead of taking
//! each other's extents before they are read. Where none can give one, the read goes
//! straight to disk without read-ahead.
//!
//! Outside the count: a buffer taken back while a send still holds it lives until the send
//! completes, as do the one-off buffers of direct reads and of ranges copied across
//! extents; those are bounded by the fetches in flight, not by the partitions.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::poll_fn;
use std::rc::{Rc, Weak};
use std::task::{Poll, Waker};

use crate::buffer::{align_down, AlignedBuf};
use crate::reactor::{self, fs::File};

/// Bytes of one read-ahead read (aligned; also the disk reference's block size).
pub(crate) const EXTENT_BYTES: usize = 1 << 20;

/// A partition that has not read through extents while its shard did this many reads per
/// extent of the shard's read-ahead memory has stopped reading: all its idle buffers may be
/// taken back. Active readers read about once per round of the shard's readers, and there
/// are at most as many readers with extents as extents.
pub(crate) const STOPPED_AFTER_READS_PER_EXTENT: u64 = 2;

/// Bytes of a segment from read-ahead extents.
pub(super) struct AheadBytes {
    /// Holds the bytes from segment position `file_start` on.
    pub(super) buf: Rc<AlignedBuf>,
    /// Segment position of `buf[0]`.
    pub(super) file_start: u64,
    /// Segment position after the last byte read and visible when it was read.
    pub(super) valid_end: u64,
}

/// The read-ahead memory of one shard, shared by its partition logs (see the module
/// comment): at most `extents_max` extent buffers of `EXTENT_BYTES` held at once.
/// Single-threaded.
#[derive(Debug)]
pub struct ReadAheadMemory {
    extents_max: usize,
    extents_held: Cell<usize>,
    /// Ticks at every read through extents: orders partitions by their last read.
    clock: Cell<u64>,
    /// Partitions registered when they took an extent, until a pruning finds them holding
    /// none; pruned when it reaches twice `extents_max`, which leaves at most `extents_max`
    /// (each left holds one or more).
    holders: RefCell<Vec<Weak<RefCell<Extents>>>>,
}

impl ReadAheadMemory {
    /// At most `bytes_max` of extents (whole extents, rounded down); 0 turns read-ahead off
    /// for every partition of the shard.
    pub fn new(bytes_max: u64) -> ReadAheadMemory {
        let extents_max = usize::try_from(bytes_max / EXTENT_BYTES as u64).unwrap_or(usize::MAX);
        ReadAheadMemory {
            extents_max,
            extents_held: Cell::new(0),
            clock: Cell::new(0),
            holders: RefCell::new(Vec::new()),
        }
    }

    /// No bound but each partition's own (for a log opened on its own).
    pub fn unbounded() -> ReadAheadMemory {
        ReadAheadMemory::new(u64::MAX)
    }

    /// Extent buffers the shard's partitions hold now.
    pub fn extents_held(&self) -> usize {
        self.extents_held.get()
    }

    /// The most they may hold.
    pub fn extents_max(&self) -> usize {
        self.extents_max
    }

    fn tick(&self) -> u64 {
        let now = self.clock.get() + 1;
        self.clock.set(now);
        now
    }

    /// Counts one more extent buffer for `extents`: true if one was free, or was taken back
    /// from another partition (see [`ReadAheadMemory::take_back_from_others`]).
    fn take(&self, extents: &Rc<RefCell<Extents>>) -> bool {
        if self.extents_held.get() >= self.extents_max && !self.take_back_from_others(extents) {
            return false;
        }
        assert!(self.extents_held.get() < self.extents_max);
        self.extents_held.set(self.extents_held.get() + 1);
        let newly_holding = {
            let mut mine = extents.borrow_mut();
            mine.held += 1;
            !std::mem::replace(&mut mine.registered, true)
        };
        if newly_holding {
            let mut holders = self.holders.borrow_mut();
            if holders.len() >= self.extents_max.saturating_mul(2).max(8) {
                holders.retain(|weak| Self::still_holds(weak).unwrap_or(true));
            }
            holders.push(Rc::downgrade(extents));
        }
        true
    }

    /// Whether a registered partition still holds extents (false: gone, or now holds none
    /// and is no longer registered); `None` if it is borrowed (the caller's own).
    fn still_holds(weak: &Weak<RefCell<Extents>>) -> Option<bool> {
        let Some(other) = weak.upgrade() else {
            return Some(false);
        };
        // Only the caller's own can be borrowed now (single-threaded, no borrow across an
        // await).
        let mut extents = other.try_borrow_mut().ok()?;
        if extents.held == 0 {
            extents.registered = false;
        }
        Some(extents.held > 0)
    }

    fn give_back(&self, count: usize) {
        assert!(count <= self.extents_held.get());
        self.extents_held.set(self.extents_held.get() - count);
    }

    /// Takes one idle buffer back from the partition that read least recently among those
    /// that stopped reading or hold at least two more than `mine` (see the module comment);
    /// true if there was one. Forgets holders that hold nothing.
    fn take_back_from_others(&self, mine: &Rc<RefCell<Extents>>) -> bool {
        let mine_held = mine.borrow().held;
        let now = self.clock.get();
        let stopped_after = STOPPED_AFTER_READS_PER_EXTENT.saturating_mul(self.extents_max as u64);
        let mut oldest: Option<(u64, Rc<RefCell<Extents>>)> = None;
        let mut holders = self.holders.borrow_mut();
        holders.retain(|weak| Self::still_holds(weak).unwrap_or(true));
        for other in holders.iter().filter_map(Weak::upgrade) {
            if Rc::ptr_eq(&other, mine) {
                continue;
            }
            let extents = other.borrow();
            let stopped = now.saturating_sub(extents.last_read) > stopped_after;
            let larger = extents.held > mine_held + 1;
            let eligible = (stopped || larger) && extents.idle_count() > 0;
            let last_read = extents.last_read;
            drop(extents);
            if eligible && oldest.as_ref().is_none_or(|(at, _)| last_read < *at) {
                oldest = Some((last_read, other));
            }
        }
        drop(holders);
        oldest.is_some_and(|(_, other)| other.borrow_mut().drop_one_idle())
    }
}

/// One partition's read-ahead extents.
pub(super) struct ReadAhead {
    /// Extents to keep ahead of the reader; 0 turns read-ahead off.
    depth: usize,
    memory: Rc<ReadAheadMemory>,
    extents: Rc<RefCell<Extents>>,
}

struct Extents {
    /// In the order they were started.
    list: VecDeque<Extent>,
    /// Buffers of dropped extents, for the next reads.
    spare: Vec<AlignedBuf>,
    /// Buffers of dropped extents that slices still held; spare once they let go.
    retired: Vec<Rc<AlignedBuf>>,
    next_id: u64,
    /// Buffers counted in `memory` for this partition: those of `list`'s reading and ready
    /// extents, of reads whose extent was dropped while reading, `spare` and `retired`.
    held: usize,
    /// In `memory`'s holders.
    registered: bool,
    /// `memory`'s clock at this partition's last read through extents.
    last_read: u64,
    memory: Rc<ReadAheadMemory>,
}

impl Drop for Extents {
    fn drop(&mut self) {
        self.memory.give_back(self.held);
    }
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
    /// Read-ahead of up to `read_ahead_bytes` beyond the extent being read (0: off), its
    /// buffers counted in the shard's `memory`.
    pub(super) fn new(read_ahead_bytes: u64, memory: Rc<ReadAheadMemory>) -> ReadAhead {
        let mut depth =
            usize::try_from(read_ahead_bytes.div_ceil(EXTENT_BYTES as u64)).unwrap_or(0);
        if memory.extents_max() == 0 {
            depth = 0;
        }
        let extents = Extents {
            list: VecDeque::new(),
            spare: Vec::new(),
            retired: Vec::new(),
            next_id: 0,
            held: 0,
            registered: false,
            last_read: 0,
            memory: Rc::clone(&memory),
        };
        ReadAhead {
            depth,
            memory,
            extents: Rc::new(RefCell::new(extents)),
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
        self.extents.borrow_mut().last_read = self.memory.tick();
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
            extents.drop_kept();
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
            if !present && !self.start_read(file, segment_base, wanted, visible_end) {
                // The shard's read-ahead memory is all in use: the reads not started go
                // straight to disk.
                break;
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

    /// Starts the read of one extent; false if the shard's memory has no buffer for it.
    fn start_read(&self, file: &Rc<File>, segment_base: i64, start: u64, visible_end: u64) -> bool {
        let spare = self.extents.borrow_mut().take_spare();
        let buf = match spare {
            Some(buf) => buf,
            None if self.memory.take(&self.extents) => AlignedBuf::new(EXTENT_BYTES),
            None => return false,
        };
        let id = {
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
            id
        };
        let (file, shared, keep) = (Rc::clone(file), Rc::clone(&self.extents), self.depth);
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
            shared.borrow_mut().finish(id, state, keep);
        }));
        true
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

    /// Records the end of extent `id`'s read and wakes its waiters. If the extent was
    /// dropped meanwhile, its buffer is kept for reuse when there is room (`keep`).
    fn finish(&mut self, id: u64, state: ExtentState, keep: usize) {
        if matches!(state, ExtentState::Failed) {
            // The read's buffer is gone with the failed read.
            self.release(1);
        }
        let Some(extent) = self.list.iter_mut().find(|extent| extent.id == id) else {
            if let ExtentState::Ready(ahead) = state {
                self.keep_or_release(ahead.buf, keep);
            }
            return;
        };
        if let ExtentState::Reading { waiters } = std::mem::replace(&mut extent.state, state) {
            for waker in waiters {
                waker.wake();
            }
        }
    }

    /// Gives `count` buffers back to the shard's memory (they were dropped).
    fn release(&mut self, count: usize) {
        assert!(count <= self.held);
        self.held -= count;
        self.memory.give_back(count);
    }

    /// Keeps `buf` for the next reads (spare, or retired while slices hold it) if fewer
    /// than `keep` are kept, else drops it.
    fn keep_or_release(&mut self, buf: Rc<AlignedBuf>, keep: usize) {
        if self.spare.len() + self.retired.len() >= keep {
            self.release(1);
            return;
        }
        match Rc::try_unwrap(buf) {
            Ok(buf) => self.spare.push(buf),
            Err(shared) => self.retired.push(shared),
        }
    }

    /// Drops the buffers kept for reuse.
    fn drop_kept(&mut self) {
        let kept = self.spare.len() + self.retired.len();
        self.spare.clear();
        self.retired.clear();
        self.release(kept);
    }

    /// Buffers held that no read is filling: ready extents and those kept for reuse.
    fn idle_count(&self) -> usize {
        let ready = self
            .list
            .iter()
            .filter(|extent| matches!(extent.state, ExtentState::Ready(_)))
            .count();
        ready + self.spare.len() + self.retired.len()
    }

    /// Drops one idle buffer for another partition of the shard: a kept one, else the
    /// ready extent started last (the furthest ahead of the reader). False if none is idle.
    fn drop_one_idle(&mut self) -> bool {
        let kept = self.spare.pop().is_some() || self.retired.pop().is_some();
        if !kept {
            let Some(index) = self
                .list
                .iter()
                .rposition(|extent| matches!(extent.state, ExtentState::Ready(_)))
            else {
                return false;
            };
            self.list.remove(index);
        }
        self.release(1);
        true
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
            ExtentState::Ready(ahead) => self.keep_or_release(ahead.buf, keep),
            // Its read finishes into nothing (`finish` keeps or releases the buffer); anyone
            // waiting retries and reads directly.
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
    use crate::log::{Acks, LogConfig, PartitionLog, ShardResources};
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

    /// One read of up to 1 MiB at `offset`: its bytes and the next offset.
    async fn read_step(log: &PartitionLog, offset: i64) -> (Vec<u8>, i64) {
        let parts = log.read_parts(offset, 1 << 20).await.unwrap();
        let bytes = parts
            .slices()
            .iter()
            .flat_map(|slice| slice.bytes().iter().copied())
            .collect();
        (bytes, parts.next_offset())
    }

    /// Reads everything from offset 0 as a consumer does (1 MiB per read); the bytes in order.
    async fn read_everything(log: &PartitionLog) -> Vec<u8> {
        let mut bytes = Vec::new();
        let mut offset = 0;
        while offset < log.high_watermark() {
            let (step, next) = read_step(log, offset).await;
            bytes.extend_from_slice(&step);
            offset = next;
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

    /// `logs` logs under `root` on one shard whose read-ahead memory holds `extents_max`
    /// extents, each filled with about `bytes` of batches and reopened (nothing in memory).
    /// Returns the logs and what was appended to each.
    async fn cold_logs_on_one_shard(
        root: &Path,
        logs: usize,
        bytes: usize,
        extents_max: usize,
    ) -> (Vec<PartitionLog>, Vec<Vec<u8>>, ShardResources) {
        // Segments larger than a log, so that windows are not cut at segment ends.
        let config = LogConfig {
            segment_bytes: 32 << 20,
            chunk_bytes: 64 << 10,
            read_ahead_bytes: 4 * EXTENT_BYTES as u64,
            ..LogConfig::default()
        };
        let cache = || Rc::new(ChunkCache::new(256 << 10));
        let mut appended = Vec::new();
        for index in 0..logs {
            let dir = root.join(index.to_string());
            let log = PartitionLog::open(dir, config.clone(), cache())
                .await
                .unwrap();
            let mut written = Vec::new();
            let mut seed = index;
            while written.len() < bytes {
                seed += 1;
                let mut builder = BatchBuilder::new(Vec::new(), 0);
                let value = vec![seed as u8; 50_000 + (seed * 7919) % 60_000];
                builder.push(0, None, Some(&value), &[]).unwrap();
                let mut batch = builder.finish().to_vec();
                log.append(&mut batch, Acks::Leader).await.unwrap();
                written.extend_from_slice(&batch);
            }
            log.close().await.unwrap();
            appended.push(written);
        }
        let resources = ShardResources {
            read_ahead: Rc::new(ReadAheadMemory::new((extents_max * EXTENT_BYTES) as u64)),
            ..ShardResources::with_cache(cache())
        };
        let mut opened = Vec::new();
        for index in 0..logs {
            let dir = root.join(index.to_string());
            let log = PartitionLog::open_on_shard(dir, config.clone(), &resources).await;
            opened.push(log.unwrap());
        }
        (opened, appended, resources)
    }

    fn extents_held(log: &PartitionLog) -> usize {
        log.inner.read_ahead.extents.borrow().held
    }

    /// Waits until no read-ahead read is in flight on the shard and no log holds extents.
    async fn wait_until_released(memory: &ReadAheadMemory) {
        for _ in 0..1_000_000 {
            if memory.extents_held() == 0 {
                return;
            }
            crate::reactor::yield_now().await;
        }
        panic!("{} extents still held", memory.extents_held());
    }

    #[test]
    fn one_shard_memory_bounds_the_extents_of_all_its_partitions() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        block_on(RingConfig::default(), async move {
            let extents_max = 6;
            let (logs, appended, resources) =
                cold_logs_on_one_shard(&root, 3, 8 << 20, extents_max).await;
            // Each would hold up to 5 reading and ready extents, and as many kept: 3 readers
            // in turn would take 15 or more without the shard's bound.
            let mut read = vec![Vec::new(); logs.len()];
            let mut offsets = vec![0; logs.len()];
            let mut busy = true;
            while busy {
                busy = false;
                for (index, log) in logs.iter().enumerate() {
                    if offsets[index] >= log.high_watermark() {
                        continue;
                    }
                    busy = true;
                    let (bytes, next) = read_step(log, offsets[index]).await;
                    read[index].extend_from_slice(&bytes);
                    offsets[index] = next;
                    let held = resources.read_ahead.extents_held();
                    assert!(held <= extents_max, "{held} extents held");
                    let by_logs: usize = logs.iter().map(extents_held).sum();
                    assert!(by_logs <= held, "logs hold {by_logs}, memory counts {held}");
                }
            }
            assert_eq!(read, appended);
            for log in &logs {
                // Every reader got some read-ahead.
                assert!(log.inner.read_ahead.extents.borrow().next_id > 0);
                log.close().await.unwrap();
            }
            drop(logs);
            wait_until_released(&resources.read_ahead).await;
        })
        .unwrap();
    }

    #[test]
    fn readers_that_stopped_give_their_extents_up_to_one_still_reading() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        block_on(RingConfig::default(), async move {
            let extents_max = 4;
            let (logs, appended, resources) =
                cold_logs_on_one_shard(&root, 4, 16 << 20, extents_max).await;
            let (stopped, reading) = logs.split_at(3);
            let reading = &reading[0];
            // Three readers read 1 MiB each and stop, holding all of the shard's memory
            // between them (the later ones took extents from the first, down to even shares,
            // so that no single one holds more than one extra).
            for log in stopped {
                read_step(log, 0).await;
            }
            assert_eq!(resources.read_ahead.extents_held(), extents_max);
            assert!(stopped.iter().all(|log| extents_held(log) >= 1));
            let mut read = Vec::new();
            let mut offset = 0;
            while offset < reading.high_watermark() {
                let (bytes, next) = read_step(reading, offset).await;
                read.extend_from_slice(&bytes);
                offset = next;
                assert!(resources.read_ahead.extents_held() <= extents_max);
            }
            assert_eq!(read, appended[3]);
            // Once the shard had done 2 reads per extent of its memory without them, the
            // stopped readers gave every extent up, even the last one each.
            let left: Vec<usize> = stopped.iter().map(extents_held).collect();
            assert_eq!(left, [0, 0, 0]);
            let read_ahead = reading.inner.read_ahead.extents.borrow().next_id;
            assert!(read_ahead >= 12, "{read_ahead} extents read ahead");
            for log in &logs {
                log.close().await.unwrap();
            }
            drop(logs);
            wait_until_released(&resources.read_ahead).await;
        })
        .unwrap();
    }

    #[test]
    fn a_shard_without_read_ahead_memory_reads_directly() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        block_on(RingConfig::default(), async move {
            let (logs, appended, resources) = cold_logs_on_one_shard(&root, 1, 3 << 20, 0).await;
            assert_eq!(read_everything(&logs[0]).await, appended[0]);
            assert_eq!(logs[0].inner.read_ahead.extents.borrow().next_id, 0);
            assert_eq!(resources.read_ahead.extents_held(), 0);
            logs[0].close().await.unwrap();
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
