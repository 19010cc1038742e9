//! The shared clock and stop condition of one measured load: every load thread does its setup
//! (connect, seek), waits at the start gate, runs until the stop condition says so, and reports
//! completed bytes here.
//!
//! The start is taken only once every thread is ready, so connection setup is not measured.
//! A thread that fails (setup or load) aborts the others, so a run never hangs on a broken peer.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Barrier, OnceLock};
use std::time::{Duration, Instant};

use super::ScenarioError;
use crate::options::StopAt;
use crate::progress::ProgressCounter;

/// Start gate, stop condition and byte budget shared by the threads of one run.
#[derive(Debug)]
pub struct RunControl {
    /// Everyone (load threads and the coordinator) has finished setup.
    ready: Barrier,
    /// Released right after the start instant is set.
    go: Barrier,
    start: OnceLock<Instant>,
    /// Run length, `None` when the run stops by bytes.
    duration: Option<Duration>,
    /// Byte budget, `None` when the run stops by time.
    bytes_max: Option<u64>,
    /// Bytes handed out by [`RunControl::reserve_bytes`].
    bytes_reserved: AtomicU64,
    /// Set by [`RunControl::abort`] (a failure) or [`RunControl::stop`] (the coordinator).
    stopped: AtomicBool,
    progress: ProgressCounter,
}

impl RunControl {
    /// Control for `load_threads` threads plus one coordinator, stopping per `stop`.
    pub fn new(load_threads: usize, stop: StopAt, progress: ProgressCounter) -> Self {
        let (duration, bytes_max) = match stop {
            StopAt::Duration(duration) => (Some(duration), None),
            StopAt::TotalBytes(bytes) => (None, Some(bytes)),
        };
        Self::with_limits(load_threads, duration, bytes_max, progress)
    }

    /// Control with explicit limits (either may be absent; with neither the coordinator stops
    /// the run with [`RunControl::stop`]).
    pub fn with_limits(
        load_threads: usize,
        duration: Option<Duration>,
        bytes_max: Option<u64>,
        progress: ProgressCounter,
    ) -> Self {
        Self {
            ready: Barrier::new(load_threads + 1),
            go: Barrier::new(load_threads + 1),
            start: OnceLock::new(),
            duration,
            bytes_max,
            bytes_reserved: AtomicU64::new(0),
            stopped: AtomicBool::new(false),
            progress,
        }
    }

    /// Load thread: waits until every thread is ready and the clock started; returns the start.
    /// Call exactly once per load thread, also after a failed setup (then abort first).
    pub fn wait_for_start(&self) -> Instant {
        self.ready.wait();
        self.go.wait();
        self.start()
    }

    /// Load thread: takes the outcome of its setup to the start gate. A failed setup aborts
    /// the run and still passes the gate, so the other threads are not left waiting; its
    /// error is returned. Otherwise returns what the setup made and the start instant.
    pub fn start_after<T>(
        &self,
        setup: Result<T, ScenarioError>,
    ) -> Result<(T, Instant), ScenarioError> {
        match setup {
            Ok(ready) => Ok((ready, self.wait_for_start())),
            Err(error) => {
                self.abort();
                self.wait_for_start();
                Err(error)
            }
        }
    }

    /// Coordinator: waits for every load thread to be ready, starts the clock, releases them.
    pub fn open(&self) -> Instant {
        self.ready.wait();
        let start = *self.start.get_or_init(Instant::now);
        self.go.wait();
        start
    }

    /// The start instant (now if the run has not started, which only happens on misuse).
    pub fn start(&self) -> Instant {
        *self.start.get_or_init(Instant::now)
    }

    /// When the run ends by time, if it does.
    pub fn deadline(&self) -> Option<Instant> {
        self.duration.map(|duration| self.start() + duration)
    }

    /// True once the run should stop sending: time is up, the byte budget is spent, or
    /// someone stopped or aborted it.
    pub fn is_stopped(&self, now: Instant) -> bool {
        if self.stopped.load(Ordering::Relaxed) {
            return true;
        }
        if self.deadline().is_some_and(|deadline| now >= deadline) {
            return true;
        }
        self.bytes_max
            .is_some_and(|max| self.bytes_reserved.load(Ordering::Relaxed) >= max)
    }

    /// Claims `bytes` of the byte budget before sending them; false when the budget is spent
    /// (or the run stopped). Without a byte budget it only checks for a stop.
    pub fn reserve_bytes(&self, bytes: u64, now: Instant) -> bool {
        if self.is_stopped(now) {
            return false;
        }
        match self.bytes_max {
            Some(max) => self.bytes_reserved.fetch_add(bytes, Ordering::Relaxed) < max,
            None => true,
        }
    }

    /// Counts `bytes` as completed (drives the progress bar).
    pub fn complete_bytes(&self, bytes: u64) {
        self.progress.add_bytes(bytes);
    }

    /// Stops the run normally (the coordinator decided it is over).
    pub fn stop(&self) {
        self.stopped.store(true, Ordering::Relaxed);
    }

    /// Stops every thread because one failed.
    pub fn abort(&self) {
        self.stop();
    }

    /// Whether the run was stopped explicitly (by [`RunControl::stop`] or a failure).
    pub fn was_stopped(&self) -> bool {
        self.stopped.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_budget_is_handed_out_once() {
        let control = RunControl::new(0, StopAt::TotalBytes(100), ProgressCounter::default());
        control.open();
        let now = Instant::now();
        assert!(control.reserve_bytes(60, now));
        assert!(
            control.reserve_bytes(60, now),
            "the budget was not yet spent"
        );
        assert!(!control.reserve_bytes(1, now));
        assert!(control.is_stopped(now));
    }

    #[test]
    fn duration_and_stop_end_the_run() {
        let control = RunControl::new(
            1,
            StopAt::Duration(Duration::from_millis(50)),
            ProgressCounter::default(),
        );
        std::thread::scope(|scope| {
            scope.spawn(|| {
                let start = control.wait_for_start();
                assert!(!control.is_stopped(start));
                assert!(control.is_stopped(start + Duration::from_millis(50)));
            });
            control.open();
        });
        assert!(!control.was_stopped());
        control.stop();
        assert!(control.is_stopped(control.start()));
    }
}
