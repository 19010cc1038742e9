//! Recycled chunk buffers of one shard, by size.
//!
//! A chunk's buffer (see [`crate::cache::Chunk`]) is taken from here and given back when the
//! chunk's last reference drops (evicted from the cache, its partition closed), so a shard
//! that appends steadily reuses the same memory instead of allocating a zeroed buffer per
//! chunk and unmapping the evicted one. Recycled buffers hold old bytes: the chunk zeroes only
//! the block padding it writes (see `Chunk::push_batch`).
//!
//! The pool is bounded when the shard starts: it keeps at most `free_bytes_max` of free
//! buffers, in at most [`SIZES_MAX`] distinct sizes; to take a buffer back past that bound it
//! frees buffers of the sizes given back least recently.

use std::cell::{Cell, RefCell};

use crate::buffer::{align_up, AlignedBuf};

/// Distinct buffer sizes kept (chunks come in a few: doubling from the first chunk size up
/// to the largest, plus batches larger than that).
pub const SIZES_MAX: usize = 24;

/// Counters of a pool since it was made.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ChunkPoolStats {
    /// Buffers allocated because none of the size was free.
    pub allocated: u64,
    /// Buffers handed out again.
    pub reused: u64,
    /// Buffers freed because the pool was full.
    pub released: u64,
}

/// Free aligned buffers by size, bounded in bytes. Single-threaded (one per shard).
#[derive(Debug)]
pub struct ChunkPool {
    free_bytes_max: usize,
    free_bytes: Cell<usize>,
    /// `(capacity, free buffers of that capacity)`, few entries.
    sizes: RefCell<Vec<(usize, Vec<AlignedBuf>)>>,
    stats: Cell<ChunkPoolStats>,
}

/// A buffer from the pool, and whether its bytes are all zero (a fresh allocation).
#[derive(Debug)]
pub struct Taken {
    /// The buffer; its `capacity()` is the requested size rounded up to the alignment.
    pub buf: AlignedBuf,
    /// All bytes are zero (freshly allocated); otherwise they are left from earlier use.
    pub zeroed: bool,
}

impl ChunkPool {
    /// A pool keeping at most `free_bytes_max` bytes of free buffers.
    pub fn new(free_bytes_max: usize) -> ChunkPool {
        ChunkPool {
            free_bytes_max,
            free_bytes: Cell::new(0),
            sizes: RefCell::new(Vec::new()),
            stats: Cell::new(ChunkPoolStats::default()),
        }
    }

    /// A buffer of `capacity_bytes` (rounded up to the alignment): a free one of exactly
    /// that size when there is one, else a new zeroed allocation.
    pub fn take(&self, capacity_bytes: usize) -> Taken {
        let capacity = align_up(capacity_bytes.max(1));
        let reused = {
            let mut sizes = self.sizes.borrow_mut();
            sizes
                .iter_mut()
                .find(|(size, _)| *size == capacity)
                .and_then(|(_, free)| free.pop())
        };

        let mut stats = self.stats.get();
        let taken = match reused {
            Some(buf) => {
                self.free_bytes.set(self.free_bytes.get() - capacity);
                stats.reused += 1;
                Taken { buf, zeroed: false }
            }
            None => {
                stats.allocated += 1;
                Taken {
                    buf: AlignedBuf::new(capacity),
                    zeroed: true,
                }
            }
        };
        self.stats.set(stats);
        taken
    }

    /// Takes `buf` back for reuse. When that would pass the bound, free buffers of the sizes
    /// given back least recently are freed first (the sizes in demand change as partitions
    /// grow their chunks); a buffer larger than the whole bound is freed.
    pub fn give_back(&self, mut buf: AlignedBuf) {
        let capacity = buf.capacity();
        if capacity > self.free_bytes_max {
            self.count_released(1);
            return;
        }
        let mut released = Vec::new();
        {
            let mut sizes = self.sizes.borrow_mut();
            // This size becomes the most recently used one: the last.
            let entry = match sizes.iter().position(|(size, _)| *size == capacity) {
                Some(at) => sizes.remove(at),
                None => (capacity, Vec::new()),
            };
            sizes.push(entry);
            let mut at = 0;
            while self.free_bytes.get() + capacity > self.free_bytes_max {
                // Some size holds free bytes, so `at` stays within the list.
                let (size, free) = &mut sizes[at];
                match free.pop() {
                    Some(old) => {
                        self.free_bytes.set(self.free_bytes.get() - *size);
                        released.push(old);
                    }
                    None => at += 1,
                }
            }
            sizes.retain(|(size, free)| !free.is_empty() || *size == capacity);
            let excess = sizes.len().saturating_sub(SIZES_MAX);
            for (size, free) in sizes.drain(..excess) {
                self.free_bytes
                    .set(self.free_bytes.get() - size * free.len());
                released.extend(free);
            }
            buf.clear();
            let (_, free) = sizes.last_mut().expect("this size was just pushed");
            free.push(buf);
            self.free_bytes.set(self.free_bytes.get() + capacity);
        }
        self.count_released(released.len());
        // Freed outside the borrow.
        drop(released);
    }

    fn count_released(&self, buffers: usize) {
        let mut stats = self.stats.get();
        stats.released += buffers as u64;
        self.stats.set(stats);
    }

    /// Bytes of free buffers held now.
    pub fn free_bytes(&self) -> usize {
        self.free_bytes.get()
    }

    /// The bound on free bytes.
    pub fn free_bytes_max(&self) -> usize {
        self.free_bytes_max
    }

    /// Counters since the pool was made.
    pub fn stats(&self) -> ChunkPoolStats {
        self.stats.get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_are_reused_by_size_and_the_pool_is_bounded() {
        let pool = ChunkPool::new(3 * 4096);
        let first = pool.take(4096);
        assert!(first.zeroed);
        let address = first.buf.as_ptr();
        let mut first = first.buf;
        first.as_full_mut()[0] = 7;
        pool.give_back(first);
        assert_eq!(pool.free_bytes(), 4096);

        // Another size is not served from it.
        let other = pool.take(8192);
        assert!(other.zeroed && other.buf.capacity() == 8192);
        let again = pool.take(4000);
        assert!(!again.zeroed, "the recycled buffer keeps its old bytes");
        assert_eq!(again.buf.as_ptr(), address);
        assert_eq!(again.buf.as_full()[0], 7);
        assert_eq!(pool.free_bytes(), 0);

        pool.give_back(again.buf);
        pool.give_back(other.buf);
        assert_eq!(pool.free_bytes(), 3 * 4096);
        // Full: the size given back least recently (8 KiB) makes room for the new one.
        pool.give_back(AlignedBuf::new(4096));
        assert_eq!(pool.free_bytes(), 2 * 4096);
        assert!(pool.take(8192).zeroed, "the 8 KiB buffer was freed");
        assert!(!pool.take(4096).zeroed && !pool.take(4096).zeroed);
        // Larger than the bound: freed.
        pool.give_back(AlignedBuf::new(4 * 4096));
        assert_eq!(pool.free_bytes(), 0);
        assert_eq!(
            pool.stats(),
            ChunkPoolStats {
                allocated: 3,
                reused: 3,
                released: 2
            }
        );
    }
}
