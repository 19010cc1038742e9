//! An io_uring together with the buffers its operations point into.
//!
//! The references keep a small, fixed number of operations in flight. [`Ring`] counts them and,
//! if it is dropped while any are still in flight (an error path that could not drain), leaks
//! its buffers instead of freeing memory the kernel may still write.

use std::io;

use io_uring::{cqueue, squeue, IoUring};

use super::aligned_buf::AlignedBuf;

/// How the ring was set up, for the report.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RingSetup {
    /// SINGLE_ISSUER | DEFER_TASKRUN (as ringlog's shards use where the kernel has them).
    SingleIssuerDeferTaskrun,
    /// A plain ring: the kernel refused those flags.
    Plain,
}

impl RingSetup {
    /// Words for the report.
    pub fn describe(self) -> &'static str {
        match self {
            RingSetup::SingleIssuerDeferTaskrun => "SINGLE_ISSUER|DEFER_TASKRUN",
            RingSetup::Plain => "plain (SINGLE_ISSUER|DEFER_TASKRUN refused)",
        }
    }
}

/// An io_uring that owns the buffers its in-flight operations use.
///
/// Build it on the thread that will use it: with SINGLE_ISSUER only that thread may submit.
pub struct Ring {
    ring: IoUring,
    buffers: Vec<AlignedBuf>,
    in_flight: usize,
    setup: RingSetup,
}

impl Ring {
    /// A ring with `entries` submission slots that owns `buffers`.
    pub fn new(entries: u32, buffers: Vec<AlignedBuf>) -> io::Result<Ring> {
        let preferred = IoUring::builder()
            .setup_single_issuer()
            .setup_defer_taskrun()
            .build(entries);
        let (ring, setup) = match preferred {
            Ok(ring) => (ring, RingSetup::SingleIssuerDeferTaskrun),
            // Older kernels answer EINVAL for unknown setup flags: fall back to a plain ring.
            Err(_) => (IoUring::new(entries)?, RingSetup::Plain),
        };
        Ok(Ring {
            ring,
            buffers,
            in_flight: 0,
            setup,
        })
    }

    /// How the ring was set up.
    pub fn setup(&self) -> RingSetup {
        self.setup
    }

    /// The kernel's answer to whether it supports `opcode` (false if the probe fails).
    pub fn supports(&self, opcode: u8) -> bool {
        let mut probe = io_uring::Probe::new();
        self.ring.submitter().register_probe(&mut probe).is_ok() && probe.is_supported(opcode)
    }

    /// Start and length of buffer `index`, for building operations on it.
    pub fn buffer_raw(&mut self, index: usize) -> Option<(*mut u8, usize)> {
        self.buffers
            .get_mut(index)
            .map(|buffer| (buffer.as_mut_ptr(), buffer.len()))
    }

    /// Number of buffers owned.
    pub fn buffer_count(&self) -> usize {
        self.buffers.len()
    }

    /// Operations submitted whose last completion has not been reaped yet.
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// Queues one operation (submitting first if the queue is full).
    ///
    /// # Safety
    /// Every pointer in `entry` must point into this ring's buffers (or into memory that
    /// outlives the operation), and stay valid for the operation's length.
    pub unsafe fn push(&mut self, entry: &squeue::Entry) -> io::Result<()> {
        // SAFETY: the caller guarantees the memory `entry` names outlives the operation; the
        // ring keeps its buffers until `in_flight` is back to 0 (or leaks them).
        if unsafe { self.ring.submission().push(entry) }.is_err() {
            self.submit()?;
            // SAFETY: as above.
            unsafe { self.ring.submission().push(entry) }
                .map_err(|_| io::Error::other("submission queue still full after submit"))?;
        }
        self.in_flight += 1;
        Ok(())
    }

    /// Submits queued operations without waiting.
    pub fn submit(&mut self) -> io::Result<()> {
        self.submit_and_wait(0)
    }

    /// Submits queued operations and waits for at least `want` completions.
    pub fn submit_and_wait(&mut self, want: usize) -> io::Result<()> {
        loop {
            match self.ring.submit_and_wait(want) {
                Ok(_) => return Ok(()),
                // A signal: just try again.
                Err(error) if error.raw_os_error() == Some(libc::EINTR) => continue,
                // The completion queue is full: the caller reaps and comes back.
                Err(error) if error.raw_os_error() == Some(libc::EBUSY) => return Ok(()),
                Err(error) => return Err(error),
            }
        }
    }

    /// Moves every available completion into `out` (cleared first; reuse it to avoid allocating).
    ///
    /// A completion flagged MORE (e.g. a SEND_ZC result whose notification is still to come)
    /// leaves its operation in flight; the last completion of an operation ends it.
    pub fn reap(&mut self, out: &mut Vec<cqueue::Entry>) {
        out.clear();
        for completion in self.ring.completion() {
            if !cqueue::more(completion.flags()) {
                debug_assert!(
                    self.in_flight > 0,
                    "completion without an operation in flight"
                );
                self.in_flight = self.in_flight.saturating_sub(1);
            }
            out.push(completion);
        }
    }
}

impl Drop for Ring {
    fn drop(&mut self) {
        if self.in_flight > 0 {
            // The kernel may still write into these buffers: leaking them is the only sound choice.
            std::mem::forget(std::mem::take(&mut self.buffers));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use io_uring::opcode;

    #[test]
    fn nop_round_trip_counts_in_flight() {
        let mut ring = Ring::new(8, vec![AlignedBuf::new(4096)]).unwrap();
        let nop = opcode::Nop::new().build().user_data(7);
        // SAFETY: a NOP names no memory.
        unsafe { ring.push(&nop) }.unwrap();
        assert_eq!(ring.in_flight(), 1);
        ring.submit_and_wait(1).unwrap();
        let mut completions = Vec::new();
        ring.reap(&mut completions);
        assert_eq!(completions.len(), 1);
        assert_eq!(completions[0].user_data(), 7);
        assert_eq!(ring.in_flight(), 0);
        assert!(ring.supports(opcode::Nop::CODE));
    }
}
