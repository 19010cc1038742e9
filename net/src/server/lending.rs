//! Lending read bytes to another shard instead of copying them.
//!
//! A fetch that arrives on one shard for a partition owned by another is read by the owner.
//! Rather than copying the batches into a vector for the trip back, the owner *lends* them:
//! it keeps the [`ReadSlice`]s (which pin their in-memory chunk or disk buffer) in a slot and
//! sends the borrower [`LentPiece`]s, raw views of those bytes. The borrower sends them to its
//! socket and drops them; the last drop marks the slot returned (an atomic flag, no lock, no
//! mail), and the owner frees returned slots the next time it lends. Nothing is ever written
//! to lent bytes: a chunk never changes the bytes a read returned, and a disk buffer belongs to
//! its slice alone.
//!
//! Bounds: at most [`LOANS_MAX`] loans per shard are out at a time; past that the owner copies,
//! as it did before. A returned loan's memory is freed at the owner's next lend, so at most
//! `LOANS_MAX` reads' buffers outlive their use.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use ringlog_engine::buffer::IoBuf;
use ringlog_engine::log::ReadSlice;

/// Loans one shard may have out at a time.
pub(crate) const LOANS_MAX: usize = 64;

/// One shard's loans (lives on the owning shard's thread).
pub(crate) struct Lender {
    /// The slices of each loan that is out or returned but not yet freed.
    slots: Vec<Option<Vec<ReadSlice>>>,
    /// Per slot, set by the borrower's last drop (from any thread).
    returned: Arc<[AtomicBool]>,
}

impl Default for Lender {
    fn default() -> Self {
        Self {
            slots: (0..LOANS_MAX).map(|_| None).collect(),
            returned: (0..LOANS_MAX).map(|_| AtomicBool::new(false)).collect(),
        }
    }
}

impl Lender {
    /// Lends `slices` (not all empty), or gives them back when every slot is out.
    pub(crate) fn lend(
        &mut self,
        slices: Vec<ReadSlice>,
    ) -> Result<Vec<LentPiece>, Vec<ReadSlice>> {
        self.free_returned();
        let Some(index) = self.slots.iter().position(Option::is_none) else {
            return Err(slices);
        };
        let loan = Arc::new(Loan {
            returned: Arc::clone(&self.returned),
            index,
        });
        let pieces = slices
            .iter()
            .filter(|slice| !slice.is_empty())
            .map(|slice| LentPiece {
                ptr: slice.stable_ptr(),
                len: slice.len(),
                _loan: Arc::clone(&loan),
            })
            .collect();
        self.slots[index] = Some(slices);
        Ok(pieces)
    }

    /// Loans out now (returned ones not yet freed included).
    #[cfg(test)]
    fn out(&self) -> usize {
        self.slots.iter().filter(|slot| slot.is_some()).count()
    }

    /// Frees the slices of every returned loan.
    fn free_returned(&mut self) {
        for (slot, returned) in self.slots.iter_mut().zip(self.returned.iter()) {
            // Acquire: the borrower's reads of the bytes happen before its Release store.
            if slot.is_some() && returned.swap(false, Ordering::Acquire) {
                *slot = None;
            }
        }
    }
}

impl Drop for Lender {
    fn drop(&mut self) {
        self.free_returned();
        // A loan still out may be inside a send on another shard's ring: its memory must stay
        // valid, so it is leaked rather than freed (this happens only at shutdown).
        for slices in self.slots.iter_mut().filter_map(Option::take) {
            std::mem::forget(slices);
        }
    }
}

/// Shared by the pieces of one loan; marks the slot returned when the last piece drops.
struct Loan {
    returned: Arc<[AtomicBool]>,
    index: usize,
}

impl Drop for Loan {
    fn drop(&mut self) {
        self.returned[self.index].store(true, Ordering::Release);
    }
}

/// A contiguous part of lent bytes, to be sent by the borrowing shard.
pub(crate) struct LentPiece {
    ptr: *const u8,
    len: usize,
    _loan: Arc<Loan>,
}

// SAFETY: the bytes are only read, and stay valid and unchanged until the loan is returned
// (the owner keeps their ReadSlice until then, and leaks it if it shuts down first), so a
// piece may be used and dropped on any thread.
unsafe impl Send for LentPiece {}

impl LentPiece {
    /// Length in bytes.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// The bytes.
    pub(crate) fn bytes(&self) -> &[u8] {
        // SAFETY: `ptr` points to `len` initialised bytes of a lent ReadSlice, which the
        // owner keeps alive and unchanged while this piece (holding the loan) lives.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

// SAFETY: as for `bytes`: the memory stays at the same address, initialised and unchanged
// until the piece (and with it the loan) is dropped, wherever the piece is moved.
unsafe impl IoBuf for LentPiece {
    fn stable_ptr(&self) -> *const u8 {
        self.ptr
    }
    fn bytes_init(&self) -> usize {
        self.len
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::rc::Rc;

    use ringlog_engine::cache::ChunkCache;
    use ringlog_engine::log::{Acks, LogConfig, PartitionLog};
    use ringlog_engine::reactor::{block_on, RingConfig};

    use ringlog_engine::batch::BatchBuilder;

    /// A log with `batches` one-record batches of `value_bytes` each, and what was appended.
    async fn log_with(
        dir: &std::path::Path,
        batches: usize,
        value_bytes: usize,
    ) -> (PartitionLog, Vec<u8>) {
        let cache = Rc::new(ChunkCache::new(64 << 20));
        let config = LogConfig::default();
        let log = PartitionLog::open(dir.to_path_buf(), config, cache)
            .await
            .unwrap();
        let mut appended = Vec::new();
        for i in 0..batches {
            let mut builder = BatchBuilder::new(Vec::new(), 0);
            builder
                .push(0, None, Some(&vec![i as u8; value_bytes]), &[])
                .unwrap();
            let mut batch = builder.finish().to_vec();
            log.append(&mut batch, Acks::Leader).await.unwrap();
            appended.extend_from_slice(&batch);
        }
        (log, appended)
    }

    #[test]
    fn lent_pieces_hold_the_read_bytes_until_returned_then_the_slot_is_reused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_path_buf();
        block_on(RingConfig::default(), async move {
            let (log, appended) = log_with(&path, 40, 3000).await;
            let mut lender = Lender::default();
            let parts = log.read_parts(0, 1 << 20).await.unwrap();
            assert!(
                parts.slices().len() > 1,
                "small first chunks give several slices"
            );
            let pieces = lender
                .lend(parts.into_slices())
                .unwrap_or_else(|_| panic!("a slot is free"));
            // The pieces travel to another thread, which reads them and drops them there.
            let sent: Vec<u8> = std::thread::spawn(move || {
                pieces
                    .iter()
                    .flat_map(|piece| piece.bytes().to_vec())
                    .collect()
            })
            .join()
            .unwrap();
            assert_eq!(sent, appended);
            assert_eq!(lender.out(), 1, "freed at the next lend");
            let again = lender.lend(log.read_parts(0, 100).await.unwrap().into_slices());
            assert!(again.is_ok());
            assert_eq!(
                lender.out(),
                1,
                "the returned slot was freed and lent again"
            );
        })
        .unwrap();
    }

    #[test]
    fn lending_is_refused_when_every_slot_is_out() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_path_buf();
        block_on(RingConfig::default(), async move {
            let (log, _) = log_with(&path, 2, 100).await;
            let mut lender = Lender::default();
            let mut out = Vec::new();
            for _ in 0..LOANS_MAX {
                let slices = log.read_parts(0, 1 << 20).await.unwrap().into_slices();
                out.push(
                    lender
                        .lend(slices)
                        .unwrap_or_else(|_| panic!("a slot is free")),
                );
            }
            let slices = log.read_parts(0, 1 << 20).await.unwrap().into_slices();
            let refused = lender.lend(slices).err().expect("every slot is out");
            assert_eq!(refused.len(), 1, "the slices come back to be copied");
            out.pop();
            let slices = log.read_parts(0, 1 << 20).await.unwrap().into_slices();
            assert!(lender.lend(slices).is_ok(), "a returned slot is lent again");
        })
        .unwrap();
    }
}
