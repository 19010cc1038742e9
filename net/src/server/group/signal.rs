//! A single-thread broadcast wake-up: tasks wait for "something changed" and look again.
//!
//! Used where many tasks wait on one piece of shard-local state (JoinGroup calls on a
//! rebalance, share fetches on released records, a lease timer on new leases). A waiter that
//! is created before a change always sees it, so there is no lost wake-up between checking the
//! state and waiting. A waiter that is dropped (a long poll that timed out) removes its waker,
//! so waiting on a signal that never fires costs nothing once the waiters are gone.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

/// A broadcast wake-up; clones share it.
#[derive(Clone, Default)]
pub(crate) struct Signal {
    inner: Rc<Inner>,
}

#[derive(Default)]
struct Inner {
    version: Cell<u64>,
    next_waiter: Cell<u64>,
    /// Registered waiters: (waiter id, its waker).
    wakers: RefCell<Vec<(u64, Waker)>>,
}

impl Signal {
    /// Wakes every current waiter.
    pub(crate) fn notify(&self) {
        self.inner
            .version
            .set(self.inner.version.get().wrapping_add(1));
        let wakers = std::mem::take(&mut *self.inner.wakers.borrow_mut());
        for (_, waker) in wakers {
            waker.wake();
        }
    }

    /// A future that completes at the first [`Signal::notify`] after this call.
    pub(crate) fn wait(&self) -> SignalWait {
        let id = self.inner.next_waiter.get();
        self.inner.next_waiter.set(id.wrapping_add(1));
        SignalWait {
            inner: Rc::clone(&self.inner),
            seen: self.inner.version.get(),
            id,
        }
    }

    /// Waiters registered now (for tests).
    #[cfg(test)]
    fn waiters(&self) -> usize {
        self.inner.wakers.borrow().len()
    }
}

/// Returned by [`Signal::wait`].
pub(crate) struct SignalWait {
    inner: Rc<Inner>,
    seen: u64,
    id: u64,
}

impl Future for SignalWait {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.inner.version.get() != self.seen {
            return Poll::Ready(());
        }
        let mut wakers = self.inner.wakers.borrow_mut();
        match wakers.iter_mut().find(|(id, _)| *id == self.id) {
            Some((_, waker)) => waker.clone_from(cx.waker()),
            None => wakers.push((self.id, cx.waker().clone())),
        }
        Poll::Pending
    }
}

impl Drop for SignalWait {
    fn drop(&mut self) {
        let id = self.id;
        self.inner
            .wakers
            .borrow_mut()
            .retain(|(waiter, _)| *waiter != id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringlog_engine::reactor::{block_on, spawn, time, yield_now, RingConfig};
    use std::time::Duration;

    #[test]
    fn waiters_see_notifications_made_after_they_were_created() {
        block_on(RingConfig::default(), async {
            let signal = Signal::default();
            let wait = signal.wait();
            signal.notify();
            wait.await;
            let woken = Rc::new(Cell::new(false));
            let (signal2, woken2) = (signal.clone(), Rc::clone(&woken));
            let task = spawn(async move {
                signal2.wait().await;
                woken2.set(true);
            });
            yield_now().await;
            assert!(!woken.get());
            signal.notify();
            task.await;
            assert!(woken.get());
        })
        .unwrap();
    }

    #[test]
    fn abandoned_waiters_leave_nothing_behind() {
        block_on(RingConfig::default(), async {
            let signal = Signal::default();
            for _ in 0..10 {
                let _ = time::timeout(Duration::from_millis(1), signal.wait()).await;
            }
            assert_eq!(signal.waiters(), 0);
        })
        .unwrap();
    }
}
