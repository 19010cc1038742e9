//! Turns for mail to one shard, so that mail keeps the order it was sent in even when the
//! target's queue is full.
//!
//! Request handlers rely on that order: a handler starts its appends in request order, and
//! an append for another shard's partition is a mail, so a later request's batch must not
//! reach the owner before an earlier one's (an idempotent producer would see a sequence gap,
//! any producer a reordered partition). With a full queue every waiting sender used to retry
//! on its own timer, and whichever woke first went first. Now each sender takes a ticket and
//! only the holder of the oldest ticket tries the queue.

use std::cell::{Cell, RefCell};

/// The turn book of one target shard.
#[derive(Debug, Default)]
pub(crate) struct MailTurns {
    /// Ticket the next sender takes.
    next_ticket: Cell<u64>,
    /// Ticket whose holder may send now.
    serving: Cell<u64>,
    /// Tickets whose holders gave up before their turn (their futures were dropped).
    abandoned: RefCell<Vec<u64>>,
}

impl MailTurns {
    /// Takes the next ticket; the turn passes on when the returned [`Turn`] is done or dropped.
    pub(crate) fn take(&self) -> Turn<'_> {
        let ticket = self.next_ticket.get();
        self.next_ticket.set(ticket + 1);
        Turn {
            turns: self,
            ticket,
            done: false,
        }
    }

    fn advance(&self) {
        let mut serving = self.serving.get() + 1;
        let mut abandoned = self.abandoned.borrow_mut();
        // Bounded: each abandoned ticket is removed once.
        while let Some(at) = abandoned.iter().position(|&ticket| ticket == serving) {
            abandoned.swap_remove(at);
            serving += 1;
        }
        assert!(
            serving <= self.next_ticket.get(),
            "only taken tickets are served"
        );
        self.serving.set(serving);
    }
}

/// One sender's place in line.
#[derive(Debug)]
pub(crate) struct Turn<'a> {
    turns: &'a MailTurns,
    ticket: u64,
    done: bool,
}

impl Turn<'_> {
    /// Whether every earlier sender has sent (or given up): this one may try the queue.
    pub(crate) fn is_now(&self) -> bool {
        self.turns.serving.get() == self.ticket
    }

    /// This sender's mail is in the queue: the next sender's turn.
    pub(crate) fn finish(mut self) {
        assert!(self.is_now(), "only the sender whose turn it is sends");
        self.done = true;
        self.turns.advance();
    }
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        if self.is_now() {
            self.turns.advance();
        } else {
            self.turns.abandoned.borrow_mut().push(self.ticket);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn turns_go_in_ticket_order() {
        let turns = MailTurns::default();
        let first = turns.take();
        let second = turns.take();
        let third = turns.take();
        assert!(first.is_now() && !second.is_now() && !third.is_now());
        first.finish();
        assert!(second.is_now() && !third.is_now());
        second.finish();
        assert!(third.is_now());
        third.finish();
        assert!(turns.take().is_now());
    }

    #[test]
    fn a_sender_that_gives_up_passes_its_turn_on() {
        let turns = MailTurns::default();
        let first = turns.take();
        let second = turns.take();
        let third = turns.take();
        drop(second);
        assert!(!third.is_now());
        first.finish();
        assert!(third.is_now(), "the abandoned ticket is skipped");
        drop(third);
        assert!(turns.take().is_now());
    }
}
