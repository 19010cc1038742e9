//! Aligned I/O buffers and the per-shard pool they come from.
//!
//! O_DIRECT needs buffers, file offsets and lengths aligned to the device's logical block size;
//! every buffer here is aligned to [`IO_ALIGN_BYTES`] so one type serves disk and socket I/O.
//! The pool is sized at startup: when it is empty the caller waits or refuses work, the heap
//! never grows on the data path.

use std::alloc::{self, Layout};
use std::cell::RefCell;
use std::ops::{Deref, DerefMut};
use std::ptr::NonNull;
use std::rc::Rc;

/// Alignment of every I/O buffer, file offset and length used with O_DIRECT. 4 KiB covers
/// every common logical block size (512 B and 4 KiB).
pub const IO_ALIGN_BYTES: usize = 4096;

/// Rounds `bytes` up to the next multiple of [`IO_ALIGN_BYTES`].
pub const fn align_up(bytes: usize) -> usize {
    (bytes + IO_ALIGN_BYTES - 1) & !(IO_ALIGN_BYTES - 1)
}

/// Rounds `bytes` down to a multiple of [`IO_ALIGN_BYTES`].
pub const fn align_down(bytes: usize) -> usize {
    bytes & !(IO_ALIGN_BYTES - 1)
}

/// Memory the ring may read from while an operation is in flight.
///
/// # Safety
/// `stable_ptr` must point to `bytes_init` readable bytes that stay at the same address, and
/// are not freed, for as long as the value lives, even if the value itself is moved.
pub unsafe trait IoBuf: 'static {
    /// Start of the memory.
    fn stable_ptr(&self) -> *const u8;
    /// Number of initialised bytes from `stable_ptr`.
    fn bytes_init(&self) -> usize;
}

/// Memory the ring may write into while an operation is in flight.
///
/// # Safety
/// As for [`IoBuf`], and `stable_mut_ptr` must be valid for writes of `bytes_total` bytes.
pub unsafe trait IoBufMut: IoBuf {
    /// Start of the writable memory.
    fn stable_mut_ptr(&mut self) -> *mut u8;
    /// Capacity in bytes.
    fn bytes_total(&self) -> usize;
    /// Records that the first `bytes` bytes are initialised (after a read completed).
    ///
    /// # Safety
    /// The caller must have initialised those bytes.
    unsafe fn set_init(&mut self, bytes: usize);
}

/// A heap buffer aligned to [`IO_ALIGN_BYTES`], zeroed at allocation, with a fill length.
///
/// The whole capacity is initialised memory, so slices up to `capacity()` are always valid;
/// `len()` tracks how much of it holds meaningful bytes.
pub struct AlignedBuf {
    ptr: NonNull<u8>,
    capacity_bytes: usize,
    len_bytes: usize,
}

// SAFETY: AlignedBuf uniquely owns its allocation, like Vec<u8>.
unsafe impl Send for AlignedBuf {}

impl AlignedBuf {
    /// Allocates a zeroed buffer of `capacity_bytes` rounded up to the alignment.
    pub fn new(capacity_bytes: usize) -> AlignedBuf {
        // Checked: `align_up` wraps to 0 within an alignment of usize::MAX, and a zero-sized
        // allocation is undefined behaviour.
        let capacity_bytes = capacity_bytes
            .max(1)
            .checked_next_multiple_of(IO_ALIGN_BYTES)
            .expect("aligned buffer size fits in usize");
        let layout = Layout::from_size_align(capacity_bytes, IO_ALIGN_BYTES)
            .expect("aligned buffer layout: size is a multiple of the alignment");
        // SAFETY: the layout has a non-zero size (at least one alignment, checked above).
        let raw = unsafe { alloc::alloc_zeroed(layout) };
        let Some(ptr) = NonNull::new(raw) else {
            alloc::handle_alloc_error(layout)
        };
        AlignedBuf {
            ptr,
            capacity_bytes,
            len_bytes: 0,
        }
    }

    /// Capacity in bytes (a multiple of [`IO_ALIGN_BYTES`]).
    pub fn capacity(&self) -> usize {
        self.capacity_bytes
    }

    /// Bytes filled so far.
    pub fn len(&self) -> usize {
        self.len_bytes
    }

    /// Whether nothing is filled.
    pub fn is_empty(&self) -> bool {
        self.len_bytes == 0
    }

    /// Free space left in bytes.
    pub fn remaining(&self) -> usize {
        self.capacity_bytes - self.len_bytes
    }

    /// Sets the fill length; the bytes are always initialised memory.
    pub fn set_len(&mut self, len_bytes: usize) {
        assert!(len_bytes <= self.capacity_bytes, "fill beyond capacity");
        self.len_bytes = len_bytes;
    }

    /// Forgets the content (the memory is not zeroed again).
    pub fn clear(&mut self) {
        self.len_bytes = 0;
    }

    /// Appends `bytes`; the caller checks `remaining()` first.
    pub fn extend_from_slice(&mut self, bytes: &[u8]) {
        assert!(bytes.len() <= self.remaining(), "append beyond capacity");
        let start = self.len_bytes;
        self.len_bytes += bytes.len();
        self.as_full_mut()[start..start + bytes.len()].copy_from_slice(bytes);
    }

    /// The whole capacity, filled or not.
    pub fn as_full(&self) -> &[u8] {
        // SAFETY: the allocation holds capacity_bytes zero-initialised bytes we own.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.capacity_bytes) }
    }

    /// The whole capacity, mutable.
    pub fn as_full_mut(&mut self) -> &mut [u8] {
        // SAFETY: as above, and &mut self guarantees exclusive access.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.capacity_bytes) }
    }

    /// Raw start pointer, for shared buffers written at disjoint ranges (see `log` module).
    pub fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        let layout = Layout::from_size_align(self.capacity_bytes, IO_ALIGN_BYTES)
            .expect("layout was valid at allocation");
        // SAFETY: allocated in `new` with this exact layout.
        unsafe { alloc::dealloc(self.ptr.as_ptr(), layout) };
    }
}

impl Deref for AlignedBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.as_full()[..self.len_bytes]
    }
}

impl DerefMut for AlignedBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        let len = self.len_bytes;
        &mut self.as_full_mut()[..len]
    }
}

impl std::fmt::Debug for AlignedBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AlignedBuf")
            .field("capacity_bytes", &self.capacity_bytes)
            .field("len_bytes", &self.len_bytes)
            .finish()
    }
}

// SAFETY: the allocation is heap memory owned by the buffer; its address does not change when
// the AlignedBuf value moves, and it is freed only on drop.
unsafe impl IoBuf for AlignedBuf {
    fn stable_ptr(&self) -> *const u8 {
        self.ptr.as_ptr()
    }
    fn bytes_init(&self) -> usize {
        self.len_bytes
    }
}

// SAFETY: as above; the whole capacity is writable memory we own.
unsafe impl IoBufMut for AlignedBuf {
    fn stable_mut_ptr(&mut self) -> *mut u8 {
        self.ptr.as_ptr()
    }
    fn bytes_total(&self) -> usize {
        self.capacity_bytes
    }
    unsafe fn set_init(&mut self, bytes: usize) {
        self.set_len(bytes);
    }
}

// SAFETY: a Vec's heap allocation does not move while the Vec is not resized; the ring only
// holds the pointer while the op owns the Vec, which no one can resize then.
unsafe impl IoBuf for Vec<u8> {
    fn stable_ptr(&self) -> *const u8 {
        self.as_ptr()
    }
    fn bytes_init(&self) -> usize {
        self.len()
    }
}

// SAFETY: as above; spare capacity is writable memory owned by the Vec.
unsafe impl IoBufMut for Vec<u8> {
    fn stable_mut_ptr(&mut self) -> *mut u8 {
        self.as_mut_ptr()
    }
    fn bytes_total(&self) -> usize {
        self.capacity()
    }
    unsafe fn set_init(&mut self, bytes: usize) {
        // SAFETY: the caller initialised `bytes` bytes, within capacity.
        unsafe { self.set_len(bytes) };
    }
}

// SAFETY: an Rc keeps its pointee at a fixed heap address until the last clone drops; the op
// holds one clone for as long as the ring may read.
unsafe impl<T: IoBuf> IoBuf for Rc<T> {
    fn stable_ptr(&self) -> *const u8 {
        (**self).stable_ptr()
    }
    fn bytes_init(&self) -> usize {
        (**self).bytes_init()
    }
}

/// A fixed set of equally sized aligned buffers allocated at startup, shared by one shard.
///
/// Cloning the pool clones a handle. Buffers return to the pool when their [`PooledBuf`] drops.
#[derive(Clone)]
pub struct BufferPool {
    inner: Rc<PoolInner>,
}

struct PoolInner {
    free: RefCell<Vec<AlignedBuf>>,
    buffer_bytes: usize,
    buffers_total: usize,
}

impl BufferPool {
    /// Allocates `buffers_total` buffers of `buffer_bytes` each, all at once.
    pub fn new(buffers_total: usize, buffer_bytes: usize) -> BufferPool {
        assert!(buffers_total > 0, "a pool needs at least one buffer");
        let free = (0..buffers_total)
            .map(|_| AlignedBuf::new(buffer_bytes))
            .collect();
        BufferPool {
            inner: Rc::new(PoolInner {
                free: RefCell::new(free),
                buffer_bytes: align_up(buffer_bytes),
                buffers_total,
            }),
        }
    }

    /// Takes a cleared buffer, or `None` when all are in use (the caller applies back-pressure).
    pub fn take(&self) -> Option<PooledBuf> {
        let mut buf = self.inner.free.borrow_mut().pop()?;
        buf.clear();
        Some(PooledBuf {
            buf: Some(buf),
            pool: Rc::clone(&self.inner),
        })
    }

    /// Size of each buffer in bytes.
    pub fn buffer_bytes(&self) -> usize {
        self.inner.buffer_bytes
    }

    /// Buffers currently free.
    pub fn available(&self) -> usize {
        self.inner.free.borrow().len()
    }

    /// Buffers the pool was created with.
    pub fn total(&self) -> usize {
        self.inner.buffers_total
    }
}

/// A buffer on loan from a [`BufferPool`]; returns itself to the pool on drop.
pub struct PooledBuf {
    buf: Option<AlignedBuf>,
    pool: Rc<PoolInner>,
}

impl PooledBuf {
    fn get(&self) -> &AlignedBuf {
        self.buf.as_ref().expect("present until drop")
    }
    fn get_mut(&mut self) -> &mut AlignedBuf {
        self.buf.as_mut().expect("present until drop")
    }
}

impl Deref for PooledBuf {
    type Target = AlignedBuf;
    fn deref(&self) -> &AlignedBuf {
        self.get()
    }
}

impl DerefMut for PooledBuf {
    fn deref_mut(&mut self) -> &mut AlignedBuf {
        self.get_mut()
    }
}

impl Drop for PooledBuf {
    fn drop(&mut self) {
        if let Some(buf) = self.buf.take() {
            let mut free = self.pool.free.borrow_mut();
            assert!(free.len() < self.pool.buffers_total, "pool overfilled");
            free.push(buf);
        }
    }
}

// SAFETY: delegates to the owned AlignedBuf, whose heap memory stays put.
unsafe impl IoBuf for PooledBuf {
    fn stable_ptr(&self) -> *const u8 {
        self.get().stable_ptr()
    }
    fn bytes_init(&self) -> usize {
        self.get().bytes_init()
    }
}

// SAFETY: as above.
unsafe impl IoBufMut for PooledBuf {
    fn stable_mut_ptr(&mut self) -> *mut u8 {
        self.get_mut().stable_mut_ptr()
    }
    fn bytes_total(&self) -> usize {
        self.get().bytes_total()
    }
    unsafe fn set_init(&mut self, bytes: usize) {
        self.get_mut().set_len(bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligned_buffer_is_aligned_and_zeroed() {
        let buf = AlignedBuf::new(5000);
        assert_eq!(buf.capacity(), 8192);
        assert_eq!(buf.as_ptr() as usize % IO_ALIGN_BYTES, 0);
        assert!(buf.as_full().iter().all(|&b| b == 0));
    }

    #[test]
    #[should_panic(expected = "aligned buffer size fits in usize")]
    fn a_size_that_cannot_be_aligned_is_refused_not_wrapped_to_zero() {
        let _ = AlignedBuf::new(usize::MAX - 10);
    }

    #[test]
    fn pool_is_bounded_and_recycles() {
        let pool = BufferPool::new(2, 4096);
        let a = pool.take().unwrap();
        let mut b = pool.take().unwrap();
        b.extend_from_slice(b"abc");
        assert!(pool.take().is_none());
        drop(b);
        let c = pool.take().unwrap();
        assert!(c.is_empty(), "a recycled buffer comes back cleared");
        drop(a);
        drop(c);
        assert_eq!(pool.available(), 2);
    }
}
