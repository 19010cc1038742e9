//! Tasks waiting on the log's progress: appends waiting for their write or sync, long polls
//! waiting for new data, and `close` waiting for the flusher.
//!
//! A slab of wakers reused across waits (no allocation per append once warmed up). Each wait
//! removes its own entry when it completes or is dropped; the flusher only wakes entries
//! whose condition holds, so a wake-up costs one poll of the waiting task.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::task::Waker;

/// What a waiter waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum WaitKind {
    /// The high watermark reached this offset (the write covering it completed).
    Written(i64),
    /// The durable offset reached this offset (write and fdatasync completed).
    Durable(i64),
    /// The high watermark passed this offset, or the log is closing (long polls).
    Visible(i64),
    /// The flusher finished closing the log.
    Closed,
    /// The log start offset reached this offset (DeleteRecords' start was stored).
    Started(i64),
}

/// The progress a waiter's condition is checked against.
#[derive(Debug, Clone, Copy)]
pub(super) struct Progress {
    pub(super) high_watermark: i64,
    pub(super) durable_offset: i64,
    pub(super) log_start_offset: i64,
    pub(super) failures: u64,
    pub(super) closing: bool,
    pub(super) closed: bool,
}

impl WaitKind {
    /// Whether a waiter of this kind that started when `failures_at_start` failures had
    /// happened has something to look at now (success, failure or the end).
    pub(super) fn is_ready(self, progress: &Progress, failures_at_start: u64) -> bool {
        let failed = progress.failures > failures_at_start;
        match self {
            WaitKind::Written(offset) => {
                progress.high_watermark >= offset || failed || progress.closed
            }
            WaitKind::Durable(offset) => {
                progress.durable_offset >= offset || failed || progress.closed
            }
            WaitKind::Visible(offset) => progress.high_watermark > offset || progress.closing,
            WaitKind::Closed => progress.closed || failed,
            WaitKind::Started(offset) => {
                progress.log_start_offset >= offset || failed || progress.closed
            }
        }
    }
}

struct Entry {
    kind: WaitKind,
    failures_at_start: u64,
    waker: Waker,
}

/// The waiting tasks of one log.
#[derive(Default)]
pub(super) struct WaitList {
    slots: Vec<Option<Entry>>,
    /// Free slots, lowest first: waiters gather at the front, so the slots behind the last
    /// one can be dropped.
    free: BinaryHeap<Reverse<usize>>,
}

/// Slots whose memory an empty list keeps.
const SLOTS_KEPT: usize = 64;

impl WaitList {
    /// Adds a waiter; returns its slot.
    pub(super) fn register(
        &mut self,
        kind: WaitKind,
        failures_at_start: u64,
        waker: &Waker,
    ) -> usize {
        let entry = Entry {
            kind,
            failures_at_start,
            waker: waker.clone(),
        };
        match self.free.pop().map(|Reverse(slot)| slot) {
            Some(slot) => {
                assert!(self.slots[slot].is_none(), "free wait slot in use");
                self.slots[slot] = Some(entry);
                slot
            }
            None => {
                self.slots.push(Some(entry));
                self.slots.len() - 1
            }
        }
    }

    /// Replaces the waker of a registered waiter when the task polling it changed.
    pub(super) fn update(&mut self, slot: usize, waker: &Waker) {
        if let Some(Some(entry)) = self.slots.get_mut(slot) {
            if !entry.waker.will_wake(waker) {
                entry.waker = waker.clone();
            }
        }
    }

    /// Removes a waiter (done or dropped).
    pub(super) fn remove(&mut self, slot: usize) {
        let removed = self.slots.get_mut(slot).and_then(Option::take);
        assert!(
            removed.is_some(),
            "removing a wait slot that is not registered"
        );
        self.free.push(Reverse(slot));
        if slot + 1 == self.slots.len() {
            self.trim();
        }
    }

    /// Drops the free slots behind the last waiter, so that a burst of waiters (thousands of
    /// producers or consumers at once) does not make every later write walk its slots, and
    /// gives most of their memory back. Waiters take the lowest free slot, so those left
    /// after a burst sit at the front.
    fn trim(&mut self) {
        while self.slots.last().is_some_and(Option::is_none) {
            self.slots.pop();
        }
        let len = self.slots.len();
        self.free.retain(|&Reverse(slot)| slot < len);
        if self.slots.capacity() > SLOTS_KEPT.max(2 * len) {
            self.slots.shrink_to(SLOTS_KEPT.max(len));
            self.free.shrink_to(SLOTS_KEPT.max(len));
        }
    }

    /// Pushes the wakers of every waiter whose condition holds onto `out`.
    pub(super) fn collect_ready(&self, progress: &Progress, out: &mut Vec<Waker>) {
        for entry in self.slots.iter().flatten() {
            if entry.kind.is_ready(progress, entry.failures_at_start) {
                out.push(entry.waker.clone());
            }
        }
    }

    /// Waiters registered now.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.slots.len() - self.free.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::task::Waker;

    #[test]
    fn slots_are_reused_and_conditions_checked() {
        let mut list = WaitList::default();
        let waker = Waker::noop();
        let a = list.register(WaitKind::Written(5), 0, waker);
        let b = list.register(WaitKind::Durable(5), 0, waker);
        list.remove(a);
        let c = list.register(WaitKind::Visible(3), 0, waker);
        assert_eq!(a, c, "a freed slot is reused");
        assert_eq!(list.len(), 2);
        let mut progress = Progress {
            high_watermark: 5,
            durable_offset: 0,
            log_start_offset: 0,
            failures: 0,
            closing: false,
            closed: false,
        };
        let mut ready = Vec::new();
        list.collect_ready(&progress, &mut ready);
        assert_eq!(ready.len(), 1, "only the long poll is ready");
        progress.failures = 1;
        ready.clear();
        list.collect_ready(&progress, &mut ready);
        assert_eq!(ready.len(), 2, "a failure wakes the durable append");
        list.remove(b);
        list.remove(c);
        assert_eq!(list.len(), 0);
    }

    #[test]
    fn the_slots_of_a_burst_are_dropped_behind_the_waiters_left() {
        let mut list = WaitList::default();
        let waker = Waker::noop();
        let steady = list.register(WaitKind::Visible(0), 0, waker);
        let burst: Vec<usize> = (1..=1_000)
            .map(|offset| list.register(WaitKind::Visible(offset), 0, waker))
            .collect();
        // The burst leaves in any order; the steady waiter stays.
        for slot in burst.iter().rev().step_by(2).chain(burst.iter().step_by(2)) {
            list.remove(*slot);
        }
        assert_eq!(list.len(), 1);
        assert_eq!(
            list.slots.len(),
            1,
            "only the steady waiter's slot is walked"
        );
        assert!(list.slots.capacity() <= SLOTS_KEPT);
        // The next waiters take the lowest free slots.
        let next = list.register(WaitKind::Visible(1), 0, waker);
        assert_eq!(next, 1);
        list.remove(steady);
        assert_eq!(list.slots.len(), 2, "a free slot before a waiter stays");
        assert_eq!(list.register(WaitKind::Visible(2), 0, waker), steady);
    }
}
