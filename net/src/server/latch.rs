//! [`Latch`]: a one-way flag that tasks on one shard can wait for.
//!
//! Used where a wait must end early for a reason outside what it waits on: a connection's
//! hang-up ends its long polls, a caller's cancel ends a wait it asked another shard for.

use std::cell::Cell;

use super::group::signal::Signal;

/// Set once, never cleared; every wait completes once it is set, including waits that start
/// after.
#[derive(Default)]
pub(crate) struct Latch {
    set: Cell<bool>,
    signal: Signal,
}

impl Latch {
    /// Sets the latch and wakes its waiters.
    pub(crate) fn set(&self) {
        self.set.set(true);
        self.signal.notify();
    }

    /// Whether the latch is set.
    pub(crate) fn is_set(&self) -> bool {
        self.set.get()
    }

    /// Completes once the latch is set.
    pub(crate) async fn wait(&self) {
        // Created before the check, so a set after it is not missed.
        let wait = self.signal.wait();
        if self.set.get() {
            return;
        }
        wait.await
    }
}
