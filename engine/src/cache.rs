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
//! The [`ChunkCache`] holds strong references to full chunks, oldest first, and drops the
//! oldest while the total exceeds its byte budget. A dropped chunk's memory is freed when the
//! last `Rc` goes (a flush or a send still in flight keeps it until it completes).

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;

use crate::buffer::{align_down, AlignedBuf, IoBuf};

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
/// (which holds the chunk through an `Rc`) never alias a write.
pub struct Chunk {
    buf: AlignedBuf,
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
}

impl Chunk {
    /// A zeroed chunk of `capacity_bytes` (rounded up to the alignment) starting with
    /// `prefix`, the bytes of the segment between the aligned-down position of the first
    /// batch and the batch itself (already owned by the previous chunk or the file).
    pub fn new(capacity_bytes: usize, placement: ChunkPlacement, prefix: &[u8]) -> Chunk {
        let file_start = align_down_u64(placement.first_batch_position);
        assert_eq!(
            placement.first_batch_position - file_start,
            prefix.len() as u64,
            "the prefix must cover the first batch's block up to the batch"
        );
        let mut buf = AlignedBuf::new(capacity_bytes);
        buf.as_full_mut()[..prefix.len()].copy_from_slice(prefix);
        Chunk {
            buf,
            placement,
            file_start,
            filled: Cell::new(prefix.len()),
            written: Cell::new(prefix.len()),
            next_offset: Cell::new(placement.first_batch_offset),
            sealed: Cell::new(false),
        }
    }

    /// Capacity in bytes.
    pub fn capacity(&self) -> usize {
        self.buf.capacity()
    }

    /// Free space in bytes.
    pub fn remaining(&self) -> usize {
        self.buf.capacity() - self.filled.get()
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

    /// Copies a whole batch in; the caller checked `remaining()`.
    pub fn push_batch(&self, batch: &[u8], next_offset: i64) {
        assert!(!self.sealed.get(), "append to a sealed chunk");
        assert!(batch.len() <= self.remaining(), "batch overflows its chunk");
        assert!(next_offset > self.next_offset.get(), "offsets must grow");
        let filled = self.filled.get();
        // SAFETY: `filled + batch.len() <= capacity` (asserted above), so the destination lies
        // inside the allocation. No `&[u8]` covers bytes at or above `filled` (readers only
        // borrow filled bytes), so this write aliases no reference. The ring may be reading
        // this region concurrently for a write of the partially filled last block; the bytes
        // it picks up past the previous `filled` are beyond the data it reports written, and
        // are rewritten by the next flush (recovery treats a half-copied batch there as torn).
        unsafe {
            std::ptr::copy_nonoverlapping(
                batch.as_ptr(),
                self.buf.as_ptr().add(filled),
                batch.len(),
            );
        }
        self.filled.set(filled + batch.len());
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
        Some(unsafe { std::slice::from_raw_parts(self.buf.as_ptr().add(from), to - from) })
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
// moves and is freed only when the Chunk drops; all of it is initialised (zeroed at
// allocation), so `bytes_init` is the whole capacity. Writes from the ring cover aligned
// ranges the flusher picks; see `push_batch` for the one concurrent writer.
unsafe impl IoBuf for Chunk {
    fn stable_ptr(&self) -> *const u8 {
        self.buf.as_ptr()
    }
    fn bytes_init(&self) -> usize {
        self.buf.capacity()
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
    budget_bytes: usize,
    used_bytes: Cell<usize>,
    entries: RefCell<VecDeque<Rc<Chunk>>>,
    next_owner: Cell<u64>,
    evictions: Cell<u64>,
}

impl ChunkCache {
    /// A cache holding at most `budget_bytes` of chunks (the newest chunk is always taken,
    /// then the oldest are dropped until the total is within the budget).
    pub fn new(budget_bytes: usize) -> ChunkCache {
        ChunkCache {
            budget_bytes,
            used_bytes: Cell::new(0),
            entries: RefCell::new(VecDeque::new()),
            next_owner: Cell::new(1),
            evictions: Cell::new(0),
        }
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

    fn chunk(owner: u64, capacity: usize) -> Rc<Chunk> {
        let placement = ChunkPlacement {
            owner,
            segment_base: 0,
            first_batch_position: 0,
            first_batch_offset: 0,
        };
        Rc::new(Chunk::new(capacity, placement, &[]))
    }

    #[test]
    fn cache_evicts_oldest_over_budget_and_frees_on_last_drop() {
        let cache = ChunkCache::new(3 * 4096);
        let first = chunk(1, 4096);
        let weak = Rc::downgrade(&first);
        cache.insert(first);
        cache.insert(chunk(1, 4096));
        cache.insert(chunk(2, 4096));
        assert_eq!(cache.used_bytes(), 3 * 4096);
        assert!(weak.upgrade().is_some());
        cache.insert(chunk(2, 4096));
        assert_eq!(cache.used_bytes(), 3 * 4096);
        assert_eq!(cache.evictions(), 1);
        assert!(weak.upgrade().is_none(), "the oldest chunk was freed");
        cache.remove_owner(2);
        assert_eq!(cache.len(), 1);
        assert_eq!(cache.used_bytes(), 4096);
    }

    #[test]
    fn chunk_prefix_and_batches() {
        let placement = ChunkPlacement {
            owner: 1,
            segment_base: 10,
            first_batch_position: 4096 + 3,
            first_batch_offset: 10,
        };
        let chunk = Chunk::new(8192, placement, b"abc");
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
}
