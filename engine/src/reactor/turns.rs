//! First come, first served turns for a bounded resource (op slots, open files).
//!
//! A task that finds the resource full takes a ticket and waits in line; each release calls
//! the task at the front. A task polled again while it waits keeps its place (its waker is
//! updated, no second entry), so spurious wake-ups cannot leave stale entries that would be
//! called instead of a real waiter. A task dropped while it waits leaves the line, and one
//! dropped after it was called hands its turn to the next. New tasks queue behind waiting
//! ones. A task called but finding no room (a chain needing two op slots when one was freed)
//! goes back to its own place in line, not to the end. Single-threaded; the caller owns the
//! resource's count.

use std::collections::VecDeque;
use std::task::Waker;

/// The line of tasks waiting for a resource.
#[derive(Debug, Default)]
pub struct Turns {
    /// Waiting tasks, oldest first, by ticket; one entry per waiting task.
    waiting: VecDeque<(u64, Waker)>,
    next_ticket: u64,
}

impl Turns {
    /// Whether no task waits: a new one may take the resource if it has room.
    pub fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }

    /// Whether the task holding `ticket` (`None`: a new task) may take the resource now,
    /// given whether it has room; if not, the task waits (or keeps its place) with `waker`.
    /// A task that was called, or is at the front, goes first; a new one only if no one
    /// waits.
    pub fn take(&mut self, room: bool, ticket: &mut Option<u64>, waker: &Waker) -> bool {
        let queued_at = ticket.and_then(|mine| self.waiting.iter().position(|(t, _)| *t == mine));
        let its_turn = match queued_at {
            Some(at) => at == 0,
            None => ticket.is_some() || self.waiting.is_empty(),
        };
        if its_turn && room {
            if let Some(at) = queued_at {
                self.waiting.remove(at);
            }
            *ticket = None;
            return true;
        }
        match (queued_at, *ticket) {
            (Some(at), _) => {
                if !self.waiting[at].1.will_wake(waker) {
                    self.waiting[at].1 = waker.clone();
                }
            }
            // Called, but without room: back to its place (tickets are in arrival order).
            (None, Some(mine)) => {
                let at = self.waiting.partition_point(|(t, _)| *t < mine);
                self.waiting.insert(at, (mine, waker.clone()));
            }
            (None, None) => {
                let new = self.next_ticket;
                self.next_ticket += 1;
                *ticket = Some(new);
                self.waiting.push_back((new, waker.clone()));
            }
        }
        false
    }

    /// The task holding `ticket` gave up: it leaves the line, or, if it was called already,
    /// the next task is called in its place.
    pub fn leave(&mut self, ticket: u64) {
        match self.waiting.iter().position(|(t, _)| *t == ticket) {
            Some(at) => {
                self.waiting.remove(at);
            }
            None => self.call_next(),
        }
    }

    /// The resource has room again: calls the task at the front.
    pub fn call_next(&mut self) {
        if let Some((_, waker)) = self.waiting.pop_front() {
            // Only schedules the task: nothing runs inside the caller's borrow.
            waker.wake();
        }
    }

    /// Tasks waiting.
    pub fn len(&self) -> usize {
        self.waiting.len()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::task::Wake;

    use super::*;

    struct Counter(AtomicUsize);

    impl Wake for Counter {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn waker() -> (Arc<Counter>, Waker) {
        let counter = Arc::new(Counter(AtomicUsize::new(0)));
        (Arc::clone(&counter), Waker::from(counter))
    }

    #[test]
    fn a_waiter_polled_again_keeps_one_place_and_is_called_in_order() {
        let mut turns = Turns::default();
        let (a_calls, a) = waker();
        let (b_calls, b) = waker();
        let (mut a_ticket, mut b_ticket) = (None, None);
        assert!(!turns.take(false, &mut a_ticket, &a));
        assert!(!turns.take(false, &mut b_ticket, &b));
        // Spurious polls of A while it waits: still one entry.
        assert!(!turns.take(false, &mut a_ticket, &a));
        assert!(!turns.take(false, &mut a_ticket, &a));
        assert_eq!(turns.len(), 2);
        // A new task does not jump the line, even with room.
        let (_, c) = waker();
        assert!(!turns.take(true, &mut None, &c));
        turns.call_next();
        assert_eq!(a_calls.0.load(Ordering::SeqCst), 1);
        assert!(turns.take(true, &mut a_ticket, &a));
        turns.call_next();
        assert_eq!(b_calls.0.load(Ordering::SeqCst), 1);
        assert!(turns.take(true, &mut b_ticket, &b));
    }

    #[test]
    fn a_called_waiter_without_room_keeps_its_place_ahead_of_later_ones() {
        let mut turns = Turns::default();
        let (a_calls, a) = waker();
        let (_, b) = waker();
        let (mut a_ticket, mut b_ticket) = (None, None);
        assert!(!turns.take(false, &mut a_ticket, &a));
        assert!(!turns.take(false, &mut b_ticket, &b));
        turns.call_next();
        // A was called, but the room is not enough for it: it stays ahead of B.
        assert!(!turns.take(false, &mut a_ticket, &a));
        assert_eq!(turns.len(), 2);
        turns.call_next();
        assert_eq!(a_calls.0.load(Ordering::SeqCst), 2);
        assert!(turns.take(true, &mut a_ticket, &a));
        // B is at the front now.
        assert!(turns.take(true, &mut b_ticket, &b));
        assert!(turns.is_empty());
    }

    #[test]
    fn a_waiter_dropped_after_it_was_called_hands_its_turn_on() {
        let mut turns = Turns::default();
        let (_, a) = waker();
        let (b_calls, b) = waker();
        let (mut a_ticket, mut b_ticket) = (None, None);
        assert!(!turns.take(false, &mut a_ticket, &a));
        assert!(!turns.take(false, &mut b_ticket, &b));
        turns.call_next();
        turns.leave(a_ticket.unwrap());
        assert_eq!(b_calls.0.load(Ordering::SeqCst), 1);
        // B dropped before its call: it just leaves.
        let (_, c) = waker();
        let mut c_ticket = None;
        assert!(!turns.take(false, &mut c_ticket, &c));
        turns.leave(c_ticket.unwrap());
        assert_eq!(turns.len(), 0);
    }
}
