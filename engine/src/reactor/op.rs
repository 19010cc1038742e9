//! In-flight ring operations.
//!
//! Each submission gets a slot in the [`OpTable`]; its index is the entry's `user_data`. The
//! [`Op`] future owns every resource the kernel reads or writes (buffers, paths, timespecs).
//! If the future is dropped before the completion arrives, those resources move into the slot
//! and are freed only when the kernel reports completion, so the kernel never touches freed
//! memory; a cancel request is sent so that waits (timers, receives) end promptly.

use std::any::Any;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use io_uring::{cqueue, opcode, squeue};

use super::ring::with_reactor;

/// `user_data` of submissions whose completion nobody waits for (cancel requests).
pub(crate) const USER_DATA_IGNORED: u64 = u64::MAX;

/// What the kernel reported for one operation.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Completion {
    pub(crate) result: i32,
}

impl Completion {
    /// The result as `io::Result`: negative values are `-errno`.
    pub(crate) fn into_io(self) -> io::Result<u32> {
        if self.result < 0 {
            Err(io::Error::from_raw_os_error(-self.result))
        } else {
            Ok(self.result as u32)
        }
    }
}

enum Slot {
    Free,
    Waiting {
        waker: Option<Waker>,
        completion: Option<Completion>,
        /// SEND_ZC posts its result first and a notification when the buffer is released.
        awaiting_notification: bool,
    },
    Abandoned {
        _keepalive: Box<dyn Any>,
        awaiting_notification: bool,
    },
}

/// Slots of in-flight operations, bounded at startup.
pub(crate) struct OpTable {
    slots: Vec<Slot>,
    free: Vec<u32>,
    in_flight: usize,
    slots_max: usize,
}

impl OpTable {
    pub(crate) fn new(slots_max: usize) -> OpTable {
        assert!(slots_max > 0 && slots_max < u32::MAX as usize);
        OpTable {
            slots: Vec::with_capacity(slots_max.min(4096)),
            free: Vec::new(),
            in_flight: 0,
            slots_max,
        }
    }

    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight
    }

    fn insert(&mut self) -> u32 {
        let index = match self.free.pop() {
            Some(index) => index,
            None => {
                assert!(
                    self.slots.len() < self.slots_max,
                    "more than {} ring operations in flight; raise ops_in_flight_max",
                    self.slots_max
                );
                self.slots.push(Slot::Free);
                (self.slots.len() - 1) as u32
            }
        };
        self.slots[index as usize] = Slot::Waiting {
            waker: None,
            completion: None,
            awaiting_notification: false,
        };
        self.in_flight += 1;
        index
    }

    fn release(&mut self, index: u32) {
        self.slots[index as usize] = Slot::Free;
        self.free.push(index);
        self.in_flight -= 1;
    }

    /// Records a completion; wakes the owner or frees an abandoned slot.
    pub(crate) fn complete(&mut self, user_data: u64, result: i32, flags: u32) {
        if user_data == USER_DATA_IGNORED {
            return;
        }
        let index = user_data as u32;
        let notification = cqueue::notif(flags);
        let more = cqueue::more(flags);
        let Some(slot) = self.slots.get_mut(index as usize) else {
            panic!("completion for unknown op slot {index}");
        };
        match slot {
            Slot::Free => panic!("completion for a free op slot {index}"),
            Slot::Waiting {
                waker,
                completion,
                awaiting_notification,
            } => {
                if notification {
                    *awaiting_notification = false;
                } else {
                    *completion = Some(Completion { result });
                    *awaiting_notification = more;
                }
                if !*awaiting_notification {
                    if let Some(waker) = waker.take() {
                        waker.wake();
                    }
                }
            }
            Slot::Abandoned {
                awaiting_notification,
                ..
            } => {
                let still_waiting = if notification { false } else { more };
                *awaiting_notification = still_waiting;
                if !still_waiting {
                    self.release(index);
                }
            }
        }
    }

    fn poll_slot(&mut self, index: u32, waker: &Waker) -> Option<Completion> {
        let Slot::Waiting {
            waker: slot_waker,
            completion,
            awaiting_notification,
        } = &mut self.slots[index as usize]
        else {
            panic!("polled op slot {index} that is not waiting");
        };
        if completion.is_some() && !*awaiting_notification {
            let done = completion.take();
            self.release(index);
            return done;
        }
        match slot_waker {
            Some(existing) if existing.will_wake(waker) => {}
            _ => *slot_waker = Some(waker.clone()),
        }
        None
    }

    fn abandon(&mut self, index: u32, keepalive: Box<dyn Any>) -> bool {
        let slot = &mut self.slots[index as usize];
        let Slot::Waiting {
            completion,
            awaiting_notification,
            ..
        } = slot
        else {
            panic!("abandoned op slot {index} that is not waiting");
        };
        if completion.is_some() && !*awaiting_notification {
            self.release(index);
            return false;
        }
        let awaiting_notification = *awaiting_notification || completion.is_none();
        *slot = Slot::Abandoned {
            _keepalive: keepalive,
            awaiting_notification,
        };
        true
    }
}

/// A submitted operation; resolves to the kernel's completion and gives back its resources.
pub(crate) struct Op<R: 'static> {
    index: Option<u32>,
    resources: Option<R>,
}

impl<R: 'static> Op<R> {
    /// Submits `entry`. Every pointer in `entry` must point into heap memory owned by
    /// `resources` (or be otherwise valid until completion).
    pub(crate) fn submit(entry: squeue::Entry, resources: R) -> Op<R> {
        with_reactor(|reactor| {
            let index = reactor.ops.borrow_mut().insert();
            reactor.push(&entry.user_data(u64::from(index)));
            Op {
                index: Some(index),
                resources: Some(resources),
            }
        })
    }
}

/// Submits `first` linked to `second` (IOSQE_IO_LINK): `second` starts only after `first`
/// succeeds and is cancelled with -ECANCELED otherwise. `resources` stay alive until both
/// complete.
pub(crate) fn submit_chain<R: 'static>(
    first: squeue::Entry,
    second: squeue::Entry,
    resources: R,
) -> (Op<()>, Op<R>) {
    with_reactor(|reactor| {
        let (a, b) = {
            let mut ops = reactor.ops.borrow_mut();
            (ops.insert(), ops.insert())
        };
        reactor.push_all(&[
            first.flags(squeue::Flags::IO_LINK).user_data(u64::from(a)),
            second.user_data(u64::from(b)),
        ]);
        (
            Op {
                index: Some(a),
                resources: Some(()),
            },
            Op {
                index: Some(b),
                resources: Some(resources),
            },
        )
    })
}

impl<R: 'static + Unpin> Future for Op<R> {
    type Output = (Completion, R);

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let index = self.index.expect("Op polled after completion");
        let done = with_reactor(|reactor| reactor.ops.borrow_mut().poll_slot(index, cx.waker()));
        match done {
            None => Poll::Pending,
            Some(completion) => {
                self.index = None;
                let resources = self.resources.take().expect("resources present until done");
                Poll::Ready((completion, resources))
            }
        }
    }
}

impl<R: 'static> Drop for Op<R> {
    fn drop(&mut self) {
        let Some(index) = self.index.take() else {
            return;
        };
        let keepalive: Box<dyn Any> = Box::new(self.resources.take());
        with_reactor(|reactor| {
            let pending = reactor.ops.borrow_mut().abandon(index, keepalive);
            if pending {
                let cancel = opcode::AsyncCancel::new(u64::from(index))
                    .build()
                    .user_data(USER_DATA_IGNORED);
                reactor.push(&cancel);
            }
        });
    }
}
