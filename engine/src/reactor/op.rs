//! In-flight ring operations.
//!
//! Each submission gets a slot in the [`OpTable`]; its index is the entry's `user_data`. The
//! [`Op`] future owns every resource the kernel reads or writes (buffers, paths, timespecs).
//! If the future is dropped before the completion arrives, those resources move into the slot
//! and are freed only when the kernel reports completion, so the kernel never touches freed
//! memory; a cancel request is sent so that waits (timers, receives) end promptly, and the ring
//! is submitted at once, so that an entry still queued resolves its descriptor before the
//! caller can close it (a closed number is soon reused by another file or socket). The second
//! op of a chain ([`submit_chain`]) resolves its descriptor only when it starts, so a chain's
//! resources must keep that descriptor open themselves.
//!
//! The table is bounded when the ring is built. A submission that finds it full (thousands of
//! partitions starting their first writes at once, say) waits for a slot, oldest waiter first,
//! instead of failing: each released slot wakes the next waiter, and new submissions queue
//! behind those already waiting.

use std::any::Any;
use std::future::Future;
use std::io;
use std::os::fd::{FromRawFd, OwnedFd};
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use io_uring::{cqueue, opcode, squeue};

use super::ring::with_reactor;
use super::turns::Turns;

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
        /// A result >= 0 is a new descriptor (accept, open) that the owner takes over.
        result_is_fd: bool,
    },
    Abandoned {
        _keepalive: Box<dyn Any>,
        awaiting_notification: bool,
        /// Its result came; only SEND_ZC's notification (the kernel releasing the buffer) is
        /// still to come.
        completed: bool,
        /// As in `Waiting`: nobody takes the descriptor over now, so it is closed here.
        result_is_fd: bool,
    },
}

/// Closes the descriptor an op created (accept, open) whose owner dropped it: nobody else
/// ever learns its number, so it would stay open for as long as the process lives.
fn close_orphan_fd(result: i32) {
    if result >= 0 {
        // SAFETY: a non-negative result of an op that creates a descriptor is a new
        // descriptor that only this completion names; its owner is gone, so nothing else
        // uses or closes it.
        drop(unsafe { OwnedFd::from_raw_fd(result) });
    }
}

/// Slots of in-flight operations, bounded at startup.
pub(crate) struct OpTable {
    slots: Vec<Slot>,
    free: Vec<u32>,
    in_flight: usize,
    slots_max: usize,
    /// Submissions waiting for slots (one entry per waiting op).
    turns: Turns,
}

impl OpTable {
    pub(crate) fn new(slots_max: usize) -> OpTable {
        assert!(slots_max > 0 && slots_max < u32::MAX as usize);
        OpTable {
            slots: Vec::with_capacity(slots_max.min(4096)),
            free: Vec::new(),
            in_flight: 0,
            slots_max,
            turns: Turns::default(),
        }
    }

    /// Whether a new submission of `count` operations may take slots now: there is room and
    /// no earlier submission is waiting.
    fn admits_now(&self, count: usize) -> bool {
        self.turns.is_empty() && self.has_room(count)
    }

    fn has_room(&self, count: usize) -> bool {
        self.slots_max - self.in_flight >= count
    }

    /// Admits a waiting submission of `count` operations (true: it may take its slots now), or
    /// keeps it waiting with `ticket` (see [`Turns::take`]).
    fn admit(&mut self, count: usize, ticket: &mut Option<u64>, waker: &Waker) -> bool {
        let room = self.has_room(count);
        self.turns.take(room, ticket, waker)
    }

    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// Whether every op in flight was abandoned after its result came, and waits only for
    /// SEND_ZC's notification: the kernel then reads from pinned pages it holds and writes
    /// to no memory of ours.
    pub(crate) fn only_notifications_pending(&self) -> bool {
        self.slots.iter().all(|slot| match slot {
            Slot::Free => true,
            Slot::Waiting { .. } => false,
            Slot::Abandoned { completed, .. } => *completed,
        })
    }

    /// Forgets the slots of ops still in flight without freeing what they hold: for a shutdown
    /// that gave up waiting for them, since the kernel may write into their buffers still.
    pub(crate) fn leak_in_flight(&mut self) {
        std::mem::forget(std::mem::take(&mut self.slots));
    }

    /// Takes a slot; the caller was admitted (see [`OpTable::admit`]), so there is one.
    fn insert(&mut self, result_is_fd: bool) -> u32 {
        assert!(
            self.in_flight < self.slots_max,
            "an op was submitted without a slot"
        );
        let index = match self.free.pop() {
            Some(index) => index,
            None => {
                assert!(self.slots.len() < self.slots_max);
                self.slots.push(Slot::Free);
                (self.slots.len() - 1) as u32
            }
        };
        self.slots[index as usize] = Slot::Waiting {
            waker: None,
            completion: None,
            awaiting_notification: false,
            result_is_fd,
        };
        self.in_flight += 1;
        index
    }

    fn release(&mut self, index: u32) {
        self.slots[index as usize] = Slot::Free;
        self.free.push(index);
        self.in_flight -= 1;
        self.turns.call_next();
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
                ..
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
                completed,
                result_is_fd,
                ..
            } => {
                if *result_is_fd && !notification {
                    close_orphan_fd(result);
                }
                let still_waiting = if notification { false } else { more };
                *completed |= !notification;
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
            ..
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
            result_is_fd,
            ..
        } = slot
        else {
            panic!("abandoned op slot {index} that is not waiting");
        };
        let result_is_fd = *result_is_fd;
        if let (true, Some(done)) = (result_is_fd, &completion) {
            close_orphan_fd(done.result);
        }
        if completion.is_some() && !*awaiting_notification {
            self.release(index);
            return false;
        }
        let completed = completion.is_some();
        let awaiting_notification = *awaiting_notification || !completed;
        *slot = Slot::Abandoned {
            _keepalive: keepalive,
            awaiting_notification,
            completed,
            result_is_fd,
        };
        true
    }
}

/// A place in the queue for slots, for a submission that found the table full. Dropping it
/// while it waits leaves the queue.
#[derive(Default)]
struct Admission {
    ticket: Option<u64>,
}

impl Admission {
    /// Ready once `count` slots may be taken (in this same poll, before anything else runs).
    fn poll_admit(&mut self, count: usize, cx: &Context<'_>) -> Poll<()> {
        let admitted = with_reactor(|reactor| {
            reactor
                .ops
                .borrow_mut()
                .admit(count, &mut self.ticket, cx.waker())
        });
        if admitted {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        if let Some(ticket) = self.ticket.take() {
            with_reactor(|reactor| reactor.ops.borrow_mut().turns.leave(ticket));
        }
    }
}

/// A submitted operation; resolves to the kernel's completion and gives back its resources.
pub(crate) struct Op<R: 'static> {
    /// The entry while it waits for a slot (the table was full when it was submitted).
    queued: Option<(squeue::Entry, Admission)>,
    index: Option<u32>,
    resources: Option<R>,
    /// A result >= 0 is a new descriptor: closed if the op is dropped before it is taken.
    result_is_fd: bool,
}

impl<R: 'static> Op<R> {
    /// Submits `entry`, at once if a slot is free, else when the op is polled and one is.
    /// Every pointer in `entry` must point into heap memory owned by `resources` (or be
    /// otherwise valid until completion).
    pub(crate) fn submit(entry: squeue::Entry, resources: R) -> Op<R> {
        Op::submit_with(entry, resources, false)
    }

    /// As [`Op::submit`], for an op whose result >= 0 is a new descriptor (accept, open): if
    /// the op is dropped before its owner took the result, the descriptor is closed.
    pub(crate) fn submit_returning_fd(entry: squeue::Entry, resources: R) -> Op<R> {
        Op::submit_with(entry, resources, true)
    }

    fn submit_with(entry: squeue::Entry, resources: R, result_is_fd: bool) -> Op<R> {
        let admitted = with_reactor(|reactor| reactor.ops.borrow().admits_now(1));
        let mut op = Op {
            queued: Some((entry, Admission::default())),
            index: None,
            resources: Some(resources),
            result_is_fd,
        };
        if admitted {
            op.start();
        }
        op
    }

    /// Takes a slot and hands the queued entry to the ring (the caller was admitted).
    fn start(&mut self) {
        let Some((entry, _admitted)) = self.queued.take() else {
            return;
        };
        with_reactor(|reactor| {
            let index = reactor.ops.borrow_mut().insert(self.result_is_fd);
            reactor.push(&entry.user_data(u64::from(index)));
            self.index = Some(index);
        });
    }
}

/// Submits `first` linked to `second` (IOSQE_IO_LINK): `second` starts only after `first`
/// succeeds and is cancelled with -ECANCELED otherwise. `resources` stay alive until both
/// complete; they must own the descriptor `second` names (see the module comment). Waits, if the table is full, until it has room for both.
pub(crate) async fn submit_chain<R: 'static>(
    first: squeue::Entry,
    second: squeue::Entry,
    resources: R,
) -> (Op<()>, Op<R>) {
    let admitted = with_reactor(|reactor| reactor.ops.borrow().admits_now(2));
    if !admitted {
        let mut admission = Admission::default();
        std::future::poll_fn(|cx| admission.poll_admit(2, cx)).await;
    }
    with_reactor(|reactor| {
        let (a, b) = {
            let mut ops = reactor.ops.borrow_mut();
            (ops.insert(false), ops.insert(false))
        };
        reactor.push_all(&[
            first.flags(squeue::Flags::IO_LINK).user_data(u64::from(a)),
            second.user_data(u64::from(b)),
        ]);
        (
            Op {
                queued: None,
                index: Some(a),
                resources: Some(()),
                result_is_fd: false,
            },
            Op {
                queued: None,
                index: Some(b),
                resources: Some(resources),
                result_is_fd: false,
            },
        )
    })
}

impl<R: 'static + Unpin> Future for Op<R> {
    type Output = (Completion, R);

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if let Some((_, admission)) = &mut self.queued {
            if admission.poll_admit(1, cx).is_pending() {
                return Poll::Pending;
            }
            self.start();
        }
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
                // Its entry may still be queued (only when some entry is), and the owner of its
                // descriptor may close it as soon as this returns: then submit now, while the
                // number still means that file. Usually the entry went out long ago (a timer
                // dropped when its wait ended) and no system call is needed.
                let maybe_queued = reactor.queued_entries() > 0;
                let cancel = opcode::AsyncCancel::new(u64::from(index))
                    .build()
                    .user_data(USER_DATA_IGNORED);
                reactor.push(&cancel);
                if maybe_queued {
                    reactor.flush();
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;
    use std::rc::Rc;
    use std::time::Duration;

    use super::*;
    use crate::reactor::fs::{File, OpenOptions};
    use crate::reactor::{block_on, spawn, time, yield_now, RingConfig};

    fn waiting() -> usize {
        with_reactor(|reactor| reactor.ops.borrow().turns.len())
    }

    /// A dropped op whose entry was queued but not yet handed to the kernel must not run on
    /// whatever the descriptor number means later: once its owner closes the socket, any thread
    /// of the process (another shard accepting a connection or opening a segment) may get the
    /// same number.
    #[test]
    fn a_dropped_op_never_runs_on_a_descriptor_reused_after_close() {
        use std::io::Read;
        use std::os::fd::AsRawFd;

        use crate::reactor::tcp::TcpStream;

        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        // What the other connection received; `None` when the closed number was not reused.
        let attempt = |listener: std::net::TcpListener| {
            block_on(RingConfig::default(), async move {
                let stream = TcpStream::connect(addr).await.unwrap();
                let (_first_peer, _) = listener.accept().unwrap();
                let number = stream.raw_fd();
                {
                    let mut send = Box::pin(stream.send(b"stale".to_vec(), 0..5));
                    std::future::poll_fn(|cx| {
                        assert!(send.as_mut().poll(cx).is_pending());
                        Poll::Ready(())
                    })
                    .await;
                }
                drop(stream);
                // Another connection takes the closed number (the lowest free one). Not forced
                // with dup2 when it does not: a test on another thread of this process may hold
                // that number by then (its ring, say), and replacing it broke that test.
                let other = std::net::TcpStream::connect(addr).unwrap();
                let (mut other_peer, _) = listener.accept().unwrap();
                if other.as_raw_fd() != number {
                    return None;
                }
                // Until the ring finished the dropped send one way or the other: on loopback a
                // send's bytes are in the peer's queue when it completes.
                for _ in 0..1_000_000 {
                    if with_reactor(|reactor| reactor.ops.borrow().in_flight()) == 0 {
                        break;
                    }
                    yield_now().await;
                }
                assert_eq!(
                    with_reactor(|reactor| reactor.ops.borrow().in_flight()),
                    0,
                    "the dropped send never completed"
                );
                other_peer.set_nonblocking(true).unwrap();
                let mut bytes = [0u8; 16];
                match other_peer.read(&mut bytes) {
                    Ok(n) => Some(bytes[..n].to_vec()),
                    Err(_) => Some(Vec::new()),
                }
            })
            .unwrap()
        };
        // Another thread of this process (a parallel test) may take the closed number first;
        // then the attempt proves nothing and is made again, rather than passing.
        let received = (0..100)
            .find_map(|_| attempt(listener.try_clone().unwrap()))
            .expect("in 100 attempts another thread always took the closed descriptor number");
        assert!(
            received.is_empty(),
            "a dropped send went out on another connection: {:?}",
            String::from_utf8_lossy(&received)
        );
    }

    /// Whether some op's completion was reaped and waits for its owner to poll it.
    fn a_completion_waits_unpolled() -> bool {
        with_reactor(|reactor| {
            reactor.ops.borrow().slots.iter().any(|slot| {
                matches!(
                    slot,
                    Slot::Waiting {
                        completion: Some(_),
                        ..
                    }
                )
            })
        })
    }

    /// Polls `op` once (it must be pending), then lets the loop run until its completion was
    /// reaped, and drops it unpolled, as a `select` or a timeout dropping the losing side does.
    async fn drop_after_completion<F: Future>(op: F) {
        let mut op = Box::pin(op);
        std::future::poll_fn(|cx| {
            assert!(op.as_mut().poll(cx).is_pending());
            Poll::Ready(())
        })
        .await;
        for _ in 0..1_000_000 {
            if a_completion_waits_unpolled() {
                break;
            }
            yield_now().await;
        }
        assert!(a_completion_waits_unpolled(), "the op never completed");
        drop(op);
    }

    /// An open dropped after the kernel opened the file (its owner gave up, say on a timeout)
    /// must close the descriptor the kernel returned: nobody else ever learns its number.
    #[test]
    fn an_open_dropped_after_it_completed_leaves_no_descriptor_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("opened-then-dropped");
        let target = path.clone();
        block_on(RingConfig::default(), async move {
            let options = OpenOptions {
                create: true,
                ..OpenOptions::default()
            };
            drop_after_completion(File::open(&path, options)).await;
        })
        .unwrap();
        let open: Vec<_> = std::fs::read_dir("/proc/self/fd")
            .unwrap()
            .filter_map(|entry| std::fs::read_link(entry.ok()?.path()).ok())
            .filter(|link| *link == target)
            .collect();
        assert!(open.is_empty(), "the opened file was never closed");
    }

    /// Likewise an accept: the connection it took must be closed (the client sees EOF), not
    /// left open and unserved for as long as the process lives.
    #[test]
    fn an_accept_dropped_after_it_completed_closes_the_connection() {
        use std::io::Read;

        use crate::reactor::tcp::TcpListener;

        let listener = TcpListener::bind_reuse_port("127.0.0.1:0".parse().unwrap(), 16).unwrap();
        let addr = listener.local_addr().unwrap();
        // Connected (in the backlog) before the accept is submitted, so the accept completes.
        let mut client = std::net::TcpStream::connect(addr).unwrap();
        block_on(RingConfig::default(), async move {
            drop_after_completion(listener.accept()).await;
        })
        .unwrap();
        // Bounds the failure only: a closed connection reads EOF at once.
        client
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut byte = [0u8; 1];
        let mut read = client.read(&mut byte);
        // A read with a timeout is not restarted when the ring's task work interrupts it.
        for _ in 0..100 {
            match &read {
                Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {
                    read = client.read(&mut byte);
                }
                _ => break,
            }
        }
        assert!(
            matches!(read, Ok(0)),
            "the accepted connection was left open: {read:?}"
        );
    }

    #[test]
    fn a_full_table_makes_submissions_wait_instead_of_failing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data");
        let config = RingConfig {
            entries: 8,
            ops_in_flight_max: 4,
        };
        block_on(config, async move {
            let options = OpenOptions {
                create: true,
                ..OpenOptions::default()
            };
            let file = Rc::new(File::open(&path, options).await.unwrap());
            let mut tasks = Vec::new();
            for task in 0..40u64 {
                let file = Rc::clone(&file);
                tasks.push(spawn(async move {
                    if task % 4 == 0 {
                        // A linked write and fdatasync: two slots at once.
                        let bytes = vec![task as u8; 512];
                        let (result, _) =
                            file.write_all_at_and_sync(bytes, 0..512, task * 512).await;
                        result.unwrap();
                    } else {
                        time::sleep(Duration::from_millis(1)).await;
                    }
                }));
            }
            yield_now().await;
            assert!(waiting() > 0, "the table never filled");
            for task in tasks {
                task.await;
            }
            assert_eq!(waiting(), 0);
            with_reactor(|reactor| assert_eq!(reactor.ops.borrow().in_flight(), 0));
        })
        .unwrap();
    }

    #[test]
    fn a_waiting_op_dropped_after_its_turn_came_hands_the_turn_on() {
        let config = RingConfig {
            entries: 8,
            ops_in_flight_max: 1,
        };
        block_on(config, async {
            // A holds the only slot.
            let first = spawn(time::sleep(Duration::from_millis(5)));
            yield_now().await;
            // B waits for it, first in line.
            let mut second = Box::pin(time::sleep(Duration::from_millis(1)));
            std::future::poll_fn(|cx| {
                assert!(second.as_mut().poll(cx).is_pending());
                Poll::Ready(())
            })
            .await;
            // C waits behind B.
            let third_done = Rc::new(Cell::new(false));
            let done = Rc::clone(&third_done);
            let _third = spawn(async move {
                time::sleep(Duration::from_millis(1)).await;
                done.set(true);
            });
            yield_now().await;
            assert_eq!(waiting(), 2);
            // A completes and calls B, which is dropped without taking its turn: C gets it.
            first.await;
            assert_eq!(waiting(), 1);
            drop(second);
            for _ in 0..1_000_000 {
                if third_done.get() {
                    break;
                }
                yield_now().await;
            }
            assert!(third_done.get(), "the next waiter was never called");
        })
        .unwrap();
    }
}
