//! A wake-up flag for one of a log's background tasks (the flusher or the syncer).

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

/// Wakes a background task; a set flag survives until the task looks, so a kick between two
/// jobs is never lost.
#[derive(Default)]
pub(super) struct Kick {
    pending: Cell<bool>,
    waker: RefCell<Option<Waker>>,
}

impl Kick {
    pub(super) fn notify(&self) {
        self.pending.set(true);
        let waker = self.waker.borrow_mut().take();
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// Resolves once kicked (at once if a kick is pending).
    pub(super) fn wait(&self) -> KickWait<'_> {
        KickWait { kick: self }
    }
}

/// Resolves once the task was kicked; forgets its waker when dropped, so that a kick after
/// the reactor shut down wakes nothing.
pub(super) struct KickWait<'a> {
    kick: &'a Kick,
}

impl Future for KickWait<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.kick.pending.replace(false) {
            return Poll::Ready(());
        }
        *self.kick.waker.borrow_mut() = Some(cx.waker().clone());
        Poll::Pending
    }
}

impl Drop for KickWait<'_> {
    fn drop(&mut self) {
        self.kick.waker.borrow_mut().take();
    }
}
