//! Cross-shard mail: one bounded single-producer single-consumer queue per ordered shard pair,
//! and an eventfd doorbell per shard that the ring watches.
//!
//! A sender pushes into its own queue to the target and rings the target's doorbell only when
//! the target has said it is about to wait (`armed`), so a busy shard is not woken by a
//! syscall per message. The receiver arms, re-checks its queues, then waits for the doorbell:
//! a message pushed after the re-check always finds `armed` set and rings.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{fence, AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use io_uring::{opcode, types};

use super::op::Op;

/// Wakes one shard from any thread.
#[derive(Debug)]
pub struct Doorbell {
    eventfd: OwnedFd,
    armed: AtomicBool,
}

impl Doorbell {
    /// Creates a doorbell (an eventfd).
    pub fn new() -> io::Result<Arc<Doorbell>> {
        // SAFETY: plain syscall; the result is checked.
        let raw = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Arc::new(Doorbell {
            // SAFETY: `raw` is a new descriptor we own.
            eventfd: unsafe { OwnedFd::from_raw_fd(raw) },
            armed: AtomicBool::new(false),
        }))
    }

    /// Wakes the owner if it is waiting (or about to). Call after the message is queued.
    pub fn ring_if_armed(&self) {
        // Orders the queue's write before the read of `armed`, as `wait` orders its write of
        // `armed` before its re-check of the queue (the store-then-load pair of each side
        // needs a full fence; x86 gives it anyway, weaker machines do not): at least one side
        // sees the other, so a message is never left unannounced to a sleeping shard.
        fence(Ordering::SeqCst);
        if self.armed.swap(false, Ordering::SeqCst) {
            self.ring();
        }
    }

    /// Wakes the owner unconditionally (shutdown, tests).
    pub fn ring(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live u64 to our eventfd. A failed write can only be
        // EAGAIN on counter overflow, which still leaves the owner woken.
        unsafe { libc::write(self.eventfd.as_raw_fd(), (&one as *const u64).cast(), 8) };
    }

    /// Waits for a ring: arms, runs `recheck` (return true to skip waiting), then waits on the
    /// eventfd through this shard's ring.
    pub async fn wait(&self, recheck: impl FnOnce() -> bool) {
        self.armed.store(true, Ordering::SeqCst);
        // See `ring_if_armed`.
        fence(Ordering::SeqCst);
        if recheck() {
            return;
        }
        let buf = Box::new([0u8; 8]);
        let entry = opcode::Read::new(
            types::Fd(self.eventfd.as_raw_fd()),
            buf.as_ptr() as *mut u8,
            8,
        )
        .build();
        let (_completion, _buf) = Op::submit(entry, buf).await;
    }
}

/// The sending side of one shard pair's queue.
pub struct MailSender<T> {
    producer: rtrb::Producer<T>,
    target: Arc<Doorbell>,
}

impl<T> MailSender<T> {
    /// Queues `message`, or gives it back when the queue is full.
    pub fn try_send(&mut self, message: T) -> Result<(), T> {
        match self.producer.push(message) {
            Ok(()) => {
                self.target.ring_if_armed();
                Ok(())
            }
            Err(rtrb::PushError::Full(message)) => Err(message),
        }
    }

    /// Queues `message`, waiting while the queue is full. The wait polls with a short timer:
    /// a full queue means the target is saturated, and the sender backs off instead of
    /// growing memory.
    pub async fn send(&mut self, mut message: T) {
        loop {
            match self.try_send(message) {
                Ok(()) => return,
                Err(back) => message = back,
            }
            super::time::sleep(Duration::from_micros(50)).await;
        }
    }
}

/// The receiving side of a shard: queues from every other shard plus its doorbell.
pub struct Inbox<T> {
    consumers: Vec<rtrb::Consumer<T>>,
    doorbell: Arc<Doorbell>,
    next: usize,
}

impl<T> Inbox<T> {
    /// Takes one message if any queue has one, visiting queues round-robin for fairness.
    pub fn try_recv(&mut self) -> Option<T> {
        let queues = self.consumers.len();
        for step in 0..queues {
            let index = (self.next + step) % queues;
            if let Ok(message) = self.consumers[index].pop() {
                self.next = (index + 1) % queues;
                return Some(message);
            }
        }
        None
    }

    fn any_pending(&self) -> bool {
        self.consumers.iter().any(|consumer| !consumer.is_empty())
    }

    /// Waits for the next message.
    pub async fn recv(&mut self) -> T {
        loop {
            if let Some(message) = self.try_recv() {
                return message;
            }
            let doorbell = Arc::clone(&self.doorbell);
            doorbell.wait(|| self.any_pending()).await;
        }
    }

    /// This shard's doorbell (to wake it from outside, e.g. at shutdown).
    pub fn doorbell(&self) -> Arc<Doorbell> {
        Arc::clone(&self.doorbell)
    }
}

/// One shard's mail endpoints: an inbox and a sender to every shard (itself included, so
/// code can address any shard uniformly).
pub struct Mailbox<T> {
    /// Messages for this shard.
    pub inbox: Inbox<T>,
    /// `outboxes[s]` sends to shard `s`.
    pub outboxes: Vec<MailSender<T>>,
}

/// Builds the full mesh for `shards` shards, each queue holding `capacity` messages.
pub fn mesh<T>(shards: usize, capacity: usize) -> io::Result<Vec<Mailbox<T>>> {
    assert!(shards > 0 && capacity > 0);
    let doorbells: Vec<Arc<Doorbell>> = (0..shards)
        .map(|_| Doorbell::new())
        .collect::<io::Result<_>>()?;
    // queues[from][to]
    let mut producers: Vec<Vec<Option<rtrb::Producer<T>>>> = Vec::with_capacity(shards);
    let mut consumers: Vec<Vec<rtrb::Consumer<T>>> =
        (0..shards).map(|_| Vec::with_capacity(shards)).collect();
    for _from in 0..shards {
        let mut row = Vec::with_capacity(shards);
        for target in consumers.iter_mut() {
            let (producer, consumer) = rtrb::RingBuffer::new(capacity);
            row.push(Some(producer));
            target.push(consumer);
        }
        producers.push(row);
    }
    let mut mailboxes = Vec::with_capacity(shards);
    for (shard, (row, consumers)) in producers.into_iter().zip(consumers).enumerate() {
        let outboxes = row
            .into_iter()
            .enumerate()
            .map(|(target, producer)| MailSender {
                producer: producer.expect("each producer is taken once"),
                target: Arc::clone(&doorbells[target]),
            })
            .collect();
        mailboxes.push(Mailbox {
            inbox: Inbox {
                consumers,
                doorbell: Arc::clone(&doorbells[shard]),
                next: 0,
            },
            outboxes,
        });
    }
    Ok(mailboxes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reactor::{block_on, RingConfig};

    #[test]
    fn messages_cross_threads_in_order() {
        let mut mailboxes = mesh::<u64>(2, 8).unwrap();
        let second = mailboxes.pop().unwrap();
        let first = mailboxes.pop().unwrap();
        let messages = 10_000u64;
        let receiver = std::thread::spawn(move || {
            let Mailbox { mut inbox, .. } = second;
            block_on(RingConfig::default(), async move {
                let mut sum = 0;
                for expected in 0..messages {
                    let got = inbox.recv().await;
                    assert_eq!(got, expected, "per-pair order is kept");
                    sum += got;
                }
                sum
            })
            .unwrap()
        });
        let Mailbox { mut outboxes, .. } = first;
        block_on(RingConfig::default(), async move {
            for message in 0..messages {
                outboxes[1].send(message).await;
            }
        })
        .unwrap();
        assert_eq!(receiver.join().unwrap(), messages * (messages - 1) / 2);
    }
}
