//! Heap buffers aligned for O_DIRECT, whose address never moves while I/O points into them.

use std::alloc::{self, Layout};
use std::ptr::NonNull;

/// Alignment that O_DIRECT accepts on every common file system and device (4 KiB).
pub const DIRECT_ALIGN_BYTES: usize = 4096;

/// A zero-initialised, page-aligned heap buffer filled with a non-zero pattern.
///
/// The memory is owned through a raw pointer, so moving the `AlignedBuf` (or the `Vec` holding
/// it) does not move the bytes the kernel reads or writes.
#[derive(Debug)]
pub struct AlignedBuf {
    pointer: NonNull<u8>,
    layout: Layout,
}

// SAFETY: the buffer is plain owned memory with no thread affinity; access is governed by
// the usual &/&mut rules on `AlignedBuf`.
unsafe impl Send for AlignedBuf {}

impl AlignedBuf {
    /// Allocates `len_bytes` (at least 1) aligned to [`DIRECT_ALIGN_BYTES`], filled with a
    /// repeating non-zero pattern so that no layer can shortcut all-zero pages.
    pub fn new(len_bytes: usize) -> Self {
        assert!(len_bytes > 0, "aligned buffer must not be empty");
        let layout = match Layout::from_size_align(len_bytes, DIRECT_ALIGN_BYTES) {
            Ok(layout) => layout,
            Err(error) => panic!("buffer of {len_bytes} bytes has no valid layout: {error}"),
        };
        // SAFETY: the layout has a non-zero size (asserted above).
        let raw = unsafe { alloc::alloc_zeroed(layout) };
        let Some(pointer) = NonNull::new(raw) else {
            alloc::handle_alloc_error(layout);
        };
        let mut buffer = Self { pointer, layout };
        for (index, byte) in buffer.as_mut_slice().iter_mut().enumerate() {
            // Truncation to a byte is the point: a repeating 0..=250 pattern.
            *byte = (index % 251) as u8 + 1;
        }
        buffer
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.layout.size()
    }

    /// Always false: buffers have at least one byte.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Start of the buffer, for operations that read from it (writes, sends).
    pub fn as_ptr(&self) -> *const u8 {
        self.pointer.as_ptr()
    }

    /// Start of the buffer, for operations that write into it (reads, receives).
    pub fn as_mut_ptr(&mut self) -> *mut u8 {
        self.pointer.as_ptr()
    }

    /// The bytes, for filling and checking.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: the pointer is valid for `len` initialised (zeroed) bytes, and `&mut self`
        // guarantees exclusive access.
        unsafe { std::slice::from_raw_parts_mut(self.pointer.as_ptr(), self.len()) }
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with exactly this layout and not freed before.
        unsafe { alloc::dealloc(self.pointer.as_ptr(), self.layout) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_are_aligned_and_patterned() {
        let mut buffer = AlignedBuf::new(10_000);
        assert_eq!(buffer.as_ptr() as usize % DIRECT_ALIGN_BYTES, 0);
        assert_eq!(buffer.len(), 10_000);
        assert!(buffer.as_mut_slice().iter().all(|&byte| byte != 0));
    }
}
