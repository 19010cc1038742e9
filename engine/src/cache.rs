//! In-memory chunks of recently appended log bytes, and the bounded per-shard cache that
//! keeps full chunks around after they were written so that fetches near the tail are served
//! from memory.
//!
//! A [`Chunk`] is an aligned buffer that mirrors a range of one segment file. Appends copy
//! batches into it; the partition's flusher writes it to the file from the same memory
//! (O_DIRECT needs no copy), and reads hand out `Rc<Chunk>` plus a byte range so that a send
//! goes to the socket straight from it. A batch never spans two chunks: when a batch does not
//! fit, the next chunk starts at the aligned-down position of the batch and begins with a
//! copy of the bytes of that block already in the previous chunk, so every chunk can be
//! written with aligned offsets and lengths.
//!
//! Chunks grow from small (see [`crate::log::LogConfig::first_chunk_bytes`]), so their
//! sizes vary; their buffers come from the shard's [`ChunkPool`] and go back to it when the
//! last `Rc` of the chunk goes (a flush or a send still in flight keeps it until it
//! completes). A recycled buffer holds old bytes, so a chunk zeroes the padding of each block
//! it fills: an O_DIRECT write covers whole blocks, and the bytes after the data must be zero.
//!
//! The [`ChunkCache`] holds strong references to full chunks, oldest first, and drops the
//! oldest while the total exceeds its byte budget.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;

use crate::buffer::{align_down, align_up, AlignedBuf, IoBuf};
use crate::chunk_pool::{ChunkPool, ChunkPoolStats};

/// Part of the cache budget kept, on top of it, as free buffers for the next chunks.
const POOL_FRACTION_OF_BUDGET: usize = 8;

/// Where a new chunk sits in its segment and what it starts with.
#[derive(Debug, Clone, Copy)]
pub struct ChunkPlacement {
    /// The cache owner (partition log) the chunk belongs to.
    pub owner: u64,
    /// Base offset of the segment.
    pub segment_base: i64,
    /// Position in the segment of the first batch that will be copied in.
    pub first_batch_position: u64,
    /// Base offset of that batch.
    pub first_batch_offset: i64,
}

/// An aligned buffer mirroring the segment range `[file_start, file_start + filled)`.
///
/// Bytes below `filled` never change once copied in; bytes at and above it are written only
/// by appends, through a raw pointer, so shared readers of the filled part and the ring
/// (which holds the chunk through an `Rc`) never alias a write. Bytes from `filled` to
/// `zeroed_to` (at least the rest of the last filled block) are zero.
pub struct Chunk {
    /// Present until the chunk drops and gives it back to `pool`.
    buf: Option<AlignedBuf>,
    pool: Rc<ChunkPool>,
    placement: ChunkPlacement,
    /// Segment position of `buf[0]`: the aligned-down position of the first batch.
    file_start: u64,
    /// Bytes of `buf` holding data: the copied block prefix plus whole batches.
    filled: Cell<usize>,
    /// Bytes of `buf` known to be in the file (exact, not aligned).
    written: Cell<usize>,
    /// Offset after the last batch copied in.
    next_offset: Cell<i64>,
    /// No more batches will be copied in.
    sealed: Cell<bool>,
    /// Bytes from `filled` up to here are zero (aligned, at least `align_up(filled)`); bytes
    /// above may be left from the buffer's earlier use.
    zeroed_to: Cell<usize>,
}

impl Chunk {
    /// A chunk of `capacity_bytes` (rounded up to the alignment) from `pool`, starting with
    /// `prefix`, the bytes of the segment between the aligned-down position of the first
    /// batch and the batch itself (already owned by the previous chunk or the file).
    fn new(
        pool: Rc<ChunkPool>,
        capacity_bytes: usize,
        placement: ChunkPlacement,
        prefix: &[u8],
    ) -> Chunk {
        let file_start = align_down_u64(placement.first_batch_position);
        assert_eq!(
            placement.first_batch_position - file_start,
            prefix.len() as u64,
            "the prefix must cover the first batch's block up to the batch"
        );
        let taken = pool.take(capacity_bytes);
        let mut buf = taken.buf;
        assert!(prefix.len() <= buf.capacity(), "the prefix fits the chunk");
        let zeroed_to = if taken.zeroed {
            buf.capacity()
        } else {
            // Only the rest of the prefix's block must be zero now; later blocks are zeroed
            // as batches reach them.
            let block_end = align_up(prefix.len());
            buf.as_full_mut()[prefix.len()..block_end].fill(0);
            block_end
        };
        buf.as_full_mut()[..prefix.len()].copy_from_slice(prefix);
        Chunk {
            buf: Some(buf),
            pool,
            placement,
            file_start,
            filled: Cell::new(prefix.len()),
            written: Cell::new(prefix.len()),
            next_offset: Cell::new(placement.first_batch_offset),
            sealed: Cell::new(false),
            zeroed_to: Cell::new(zeroed_to),
        }
    }

    fn buf(&self) -> &AlignedBuf {
        self.buf
            .as_ref()
            .expect("a chunk has its buffer until it drops")
    }

    /// Capacity in bytes.
    pub fn capacity(&self) -> usize {
        self.buf().capacity()
    }

    /// Free space in bytes.
    pub fn remaining(&self) -> usize {
        self.capacity() - self.filled.get()
    }

    /// Where the chunk sits.
    pub fn placement(&self) -> &ChunkPlacement {
        &self.placement
    }

    /// Segment position of the chunk's first byte (aligned).
    pub fn file_start(&self) -> u64 {
        self.file_start
    }

    /// Segment position after the last byte copied in.
    pub fn file_end(&self) -> u64 {
        self.file_start + self.filled.get() as u64
    }

    /// Bytes of the buffer holding data.
    pub fn filled(&self) -> usize {
        self.filled.get()
    }

    /// Bytes of the buffer known to be in the file.
    pub fn written(&self) -> usize {
        self.written.get()
    }

    /// Offset after the last batch copied in.
    pub fn next_offset(&self) -> i64 {
        self.next_offset.get()
    }

    /// Whether the chunk takes no more batches.
    pub fn is_sealed(&self) -> bool {
        self.sealed.get()
    }

    /// Whether some filled bytes are not in the file yet.
    pub fn is_dirty(&self) -> bool {
        self.written.get() < self.filled.get()
    }

    /// Copies a whole batch in; the caller checked `remaining()`. Zeroes the rest of the
    /// block the batch ends in if that block was not zeroed yet, so that a write of whole
    /// blocks puts zeros after the data.
    pub fn push_batch(&self, batch: &[u8], next_offset: i64) {
        assert!(!self.sealed.get(), "append to a sealed chunk");
        assert!(batch.len() <= self.remaining(), "batch overflows its chunk");
        assert!(next_offset > self.next_offset.get(), "offsets must grow");
        let filled = self.filled.get();
        let new_filled = filled + batch.len();
        let ptr = self.buf().as_ptr();
        // SAFETY: `filled + batch.len() <= capacity` (asserted above), so the destination lies
        // inside the allocation. No `&[u8]` covers bytes at or above `filled` (readers only
        // borrow filled bytes), so this write aliases no reference. The ring may be reading
        // this region concurrently for a write of the partially filled last block; the bytes
        // it picks up past the previous `filled` are beyond the data it reports written, and
        // are rewritten by the next flush (recovery treats a half-copied batch there as torn).
        unsafe {
            std::ptr::copy_nonoverlapping(batch.as_ptr(), ptr.add(filled), batch.len());
        }
        let zeroed_to = self.zeroed_to.get();
        let block_end = align_up(new_filled);
        if block_end > zeroed_to {
            let from = new_filled.max(zeroed_to);
            // SAFETY: `from..block_end` lies inside the allocation (`block_end` is at most the
            // aligned capacity) and at or above `zeroed_to`, which is at or above the aligned
            // end of every write submitted so far, so neither a reader nor the ring looks at
            // these bytes; no reference covers them.
            unsafe {
                std::ptr::write_bytes(ptr.add(from), 0, block_end - from);
            }
            self.zeroed_to.set(block_end);
        }
        self.filled.set(new_filled);
        self.next_offset.set(next_offset);
    }

    /// Marks the chunk full: no more batches go in.
    pub fn seal(&self) {
        self.sealed.set(true);
    }

    /// Records that the buffer's first `written` bytes are in the file.
    pub fn set_written(&self, written: usize) {
        assert!(
            written >= self.written.get() && written <= self.filled.get(),
            "written bytes must grow and stay within the filled bytes"
        );
        self.written.set(written);
    }

    /// The filled bytes between segment positions `start` and `end`; `None` when the range is
    /// not inside the filled part of the chunk.
    pub fn bytes_at(&self, start: u64, end: u64) -> Option<&[u8]> {
        let from = usize::try_from(start.checked_sub(self.file_start)?).ok()?;
        let to = usize::try_from(end.checked_sub(self.file_start)?).ok()?;
        if from > to || to > self.filled.get() {
            return None;
        }
        // SAFETY: `from..to` lies within the filled bytes, which are initialised and never
        // written again (appends only write at and above `filled`).
        Some(unsafe { std::slice::from_raw_parts(self.buf().as_ptr().add(from), to - from) })
    }

    /// The prefix a chunk continuing this one at segment position `position` starts with:
    /// the bytes from the aligned-down `position` to `position`.
    pub fn block_prefix(&self, position: u64) -> Option<&[u8]> {
        self.bytes_at(align_down_u64(position), position)
    }

    /// Whether the batch starting at segment position `position` was copied into this chunk
    /// (and not just into the prefix of a following one).
    pub fn holds_batch_at(&self, position: u64) -> bool {
        position >= self.placement.first_batch_position && position < self.file_end()
    }
}

impl Drop for Chunk {
    fn drop(&mut self) {
        if let Some(buf) = self.buf.take() {
            self.pool.give_back(buf);
        }
    }
}

impl std::fmt::Debug for Chunk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Chunk")
            .field("segment_base", &self.placement.segment_base)
            .field("file_start", &self.file_start)
            .field("filled", &self.filled.get())
            .field("written", &self.written.get())
            .field("sealed", &self.sealed.get())
            .finish()
    }
}

// SAFETY: the memory is the AlignedBuf's heap allocation, which does not move when the Chunk
// moves and is given back (to the pool, which may hand it to a new chunk or free it) only when
// the Chunk drops, after every operation holding it completed; all of it is initialised (zeroed
// at allocation, written since), so `bytes_init` is the whole capacity. Writes from the ring
// cover aligned ranges the flusher picks; see `push_batch` for the one concurrent writer.
unsafe impl IoBuf for Chunk {
    fn stable_ptr(&self) -> *const u8 {
        self.buf().as_ptr()
    }
    fn bytes_init(&self) -> usize {
        self.capacity()
    }
}

fn align_down_u64(position: u64) -> u64 {
    // Segment positions fit in u32 (segments are at most 4 GiB), so usize is wide enough.
    align_down(position as usize) as u64
}

/// The per-shard cache of full, recently written chunks, bounded by a byte budget.
///
/// Shared by all partitions of a shard through an `Rc`. Single-threaded: interior mutability
/// through `Cell`/`RefCell`, no borrow is held across an await.
#[derive(Debug)]
pub struct ChunkCache {
    pool: Rc<ChunkPool>,
    budget_bytes: usize,
    used_bytes: Cell<usize>,
    entries: RefCell<VecDeque<Rc<Chunk>>>,
    next_owner: Cell<u64>,
    evictions: Cell<u64>,
}

impl ChunkCache {
    /// A cache holding at most `budget_bytes` of chunks (the newest chunk is always taken,
    /// then the oldest are dropped until the total is within the budget), and a pool of
    /// free chunk buffers of up to an eighth of that.
    pub fn new(budget_bytes: usize) -> ChunkCache {
        ChunkCache {
            pool: Rc::new(ChunkPool::new(budget_bytes / POOL_FRACTION_OF_BUDGET)),
            budget_bytes,
            used_bytes: Cell::new(0),
            entries: RefCell::new(VecDeque::new()),
            next_owner: Cell::new(1),
            evictions: Cell::new(0),
        }
    }

    /// A chunk of `capacity_bytes` (rounded up to the alignment) with a buffer from this
    /// shard's pool, starting with `prefix`: the bytes of the segment between the aligned-down
    /// position of the first batch and the batch itself (already owned by the previous chunk
    /// or the file).
    pub fn new_chunk(
        &self,
        capacity_bytes: usize,
        placement: ChunkPlacement,
        prefix: &[u8],
    ) -> Chunk {
        Chunk::new(Rc::clone(&self.pool), capacity_bytes, placement, prefix)
    }

    /// Counters of the buffer pool.
    pub fn pool_stats(&self) -> ChunkPoolStats {
        self.pool.stats()
    }

    /// Bytes of free buffers the pool holds now.
    pub fn pool_free_bytes(&self) -> usize {
        self.pool.free_bytes()
    }

    /// A new owner id, one per partition log, so that a log's chunks can be dropped at once.
    pub fn register_owner(&self) -> u64 {
        let owner = self.next_owner.get();
        self.next_owner.set(owner + 1);
        owner
    }

    /// Takes a full chunk; evicts the oldest chunks while over budget.
    pub fn insert(&self, chunk: Rc<Chunk>) {
        let evicted = {
            let mut entries = self.entries.borrow_mut();
            self.used_bytes
                .set(self.used_bytes.get() + chunk.capacity());
            entries.push_back(chunk);
            let mut evicted = Vec::new();
            while self.used_bytes.get() > self.budget_bytes {
                let Some(oldest) = entries.pop_front() else {
                    break;
                };
                self.used_bytes
                    .set(self.used_bytes.get() - oldest.capacity());
                self.evictions.set(self.evictions.get() + 1);
                evicted.push(oldest);
            }
            evicted
        };
        // Dropped outside the borrow: freeing memory must not run under it.
        drop(evicted);
    }

    /// Drops every chunk of `owner` (a partition being closed or deleted).
    pub fn remove_owner(&self, owner: u64) {
        let removed: VecDeque<Rc<Chunk>> = {
            let mut entries = self.entries.borrow_mut();
            let (keep, removed) = entries
                .drain(..)
                .partition(|chunk| chunk.placement.owner != owner);
            *entries = keep;
            removed
        };
        let freed: usize = removed.iter().map(|chunk| chunk.capacity()).sum();
        self.used_bytes.set(self.used_bytes.get() - freed);
    }

    /// Bytes held now.
    pub fn used_bytes(&self) -> usize {
        self.used_bytes.get()
    }

    /// The budget in bytes.
    pub fn budget_bytes(&self) -> usize {
        self.budget_bytes
    }

    /// Chunks held now.
    pub fn len(&self) -> usize {
        self.entries.borrow().len()
    }

    /// Whether no chunk is held.
    pub fn is_empty(&self) -> bool {
        self.entries.borrow().is_empty()
    }

    /// Chunks evicted so far.
    pub fn evictions(&self) -> u64 {
        self.evictions.get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn placement(owner: u64) -> ChunkPlacement {
        ChunkPlacement {
            owner,
            segment_base: 0,
            first_batch_position: 0,
            first_batch_offset: 0,
        }
    }

    fn chunk(cache: &ChunkCache, owner: u64, capacity: usize) -> Rc<Chunk> {
        Rc::new(cache.new_chunk(capacity, placement(owner), &[]))
    }

    #[test]
    fn cache_evicts_oldest_over_budget_and_frees_on_last_drop() {
        let cache = ChunkCache::new(3 * 4096);
        let first = chunk(&cache, 1, 4096);
        let weak = Rc::downgrade(&first);
        cache.insert(first);
        cache.insert(chunk(&cache, 1, 4096));
        cache.insert(chunk(&cache, 2, 4096));
        assert_eq!(cache.used_bytes(), 3 * 4096);
        assert!(weak.upgrade().is_some());
        cache.insert(chunk(&cache, 2, 4096));
        assert_eq!(cache.used_bytes(), 3 * 4096);
        assert_eq!(cache.evictions(), 1);
        assert!(weak.upgrade().is_none(), "the oldest chunk was freed");
        cache.remove_owner(2);
        assert_eq!(cache.len(), 1);
        assert_eq!(cache.used_bytes(), 4096);
    }

    #[test]
    fn chunk_prefix_and_batches() {
        let cache = ChunkCache::new(1 << 20);
        let placement = ChunkPlacement {
            owner: 1,
            segment_base: 10,
            first_batch_position: 4096 + 3,
            first_batch_offset: 10,
        };
        let chunk = cache.new_chunk(8192, placement, b"abc");
        assert_eq!(chunk.file_start(), 4096);
        assert!(!chunk.is_dirty());
        chunk.push_batch(b"hello", 11);
        assert!(chunk.is_dirty());
        assert_eq!(chunk.bytes_at(4096, 4096 + 8), Some(&b"abchello"[..]));
        assert_eq!(chunk.bytes_at(4096, 4096 + 9), None);
        assert_eq!(chunk.block_prefix(4096 + 8), Some(&b"abchello"[..]));
        assert!(chunk.holds_batch_at(4099) && !chunk.holds_batch_at(4098));
        chunk.set_written(8);
        assert!(!chunk.is_dirty());
    }

    /// The bytes an O_DIRECT write of the chunk's filled blocks would put in the file.
    fn written_blocks(chunk: &Chunk) -> &[u8] {
        let end = align_up(chunk.filled());
        // SAFETY: test only; the chunk's whole capacity is initialised memory and nothing
        // writes to it while the slice lives.
        unsafe { std::slice::from_raw_parts(chunk.stable_ptr(), end) }
    }

    #[test]
    fn recycled_buffers_are_reused_and_write_zeros_after_the_data() {
        // A budget whose eighth keeps two 16 KiB buffers.
        let cache = ChunkCache::new(256 << 10);
        let dirty = cache.new_chunk(16 << 10, placement(1), &[]);
        let address = dirty.stable_ptr();
        dirty.push_batch(&[0xEE; 16 << 10], 1);
        drop(dirty);
        assert_eq!(cache.pool_free_bytes(), 16 << 10);

        // The next chunk of that size gets the same memory, full of old bytes, yet every
        // block a write covers ends in zeros: with a prefix, and as batches cross blocks.
        let prefix = [0xAB; 100];
        let placement = ChunkPlacement {
            first_batch_position: 4096 + 100,
            ..placement(1)
        };
        let chunk = cache.new_chunk(16 << 10, placement, &prefix);
        assert_eq!(chunk.stable_ptr(), address, "the buffer was recycled");
        assert_eq!(cache.pool_stats().reused, 1);
        let mut expected = prefix.to_vec();
        for (at, len) in [(2u8, 10usize), (3, 5000), (4, 3000), (5, 1)] {
            chunk.push_batch(&vec![at; len], i64::from(at));
            expected.extend(std::iter::repeat_n(at, len));
            let blocks = written_blocks(&chunk);
            assert_eq!(&blocks[..expected.len()], &expected[..]);
            assert!(
                blocks[expected.len()..].iter().all(|&byte| byte == 0),
                "zeros after {} bytes",
                expected.len()
            );
        }
        drop(chunk);

        // Sizes are kept apart, and the pool keeps no more than its bound.
        let other = cache.new_chunk(32 << 10, placement, &prefix);
        assert_eq!(cache.pool_stats().allocated, 2);
        let extra: Vec<Chunk> = (0..3)
            .map(|_| cache.new_chunk(16 << 10, placement, &prefix))
            .collect();
        drop(extra);
        drop(other);
        assert!(cache.pool_free_bytes() <= (256 << 10) / POOL_FRACTION_OF_BUDGET);
        assert!(cache.pool_stats().released > 0);
    }
}
