//! [`Backoff`]: the growing wait between attempts to connect again, as Kafka's clients use
//! between `reconnect.backoff.ms` and `reconnect.backoff.max.ms`; [`ReconnectSchedule`]: when
//! a consumer's failed connections are next made again.

use std::time::{Duration, Instant};

/// Exponential delay between attempts to connect again after a connection failed.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Backoff {
    first: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    /// Starts at `first_ms`, doubling up to `max_ms` (at least `first_ms`).
    pub(crate) fn from_ms(first_ms: u64, max_ms: u64) -> Self {
        let first = Duration::from_millis(first_ms);
        Self {
            first,
            max: Duration::from_millis(max_ms).max(first),
            next: first,
        }
    }

    /// The delay before the next attempt; the one after it is twice as long, up to the
    /// maximum.
    pub(crate) fn next(&mut self) -> Duration {
        let delay = self.next;
        self.next = (delay * 2).min(self.max);
        delay
    }

    /// Back to the first delay, after a success.
    pub(crate) fn reset(&mut self) {
        self.next = self.first;
    }
}

/// When a consumer's failed connections are next connected again: connections failing together
/// (one server going away) count as one failure of the backoff.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ReconnectSchedule {
    at: Option<Instant>,
    backoff: Backoff,
}

impl ReconnectSchedule {
    /// Nothing scheduled yet; attempts back off from `first_ms` doubling up to `max_ms`.
    pub(crate) fn from_ms(first_ms: u64, max_ms: u64) -> Self {
        Self {
            at: None,
            backoff: Backoff::from_ms(first_ms, max_ms),
        }
    }

    /// A connection failed (or an attempt did): the next attempt waits the backoff, unless
    /// one is already set for later.
    pub(crate) fn failed(&mut self, now: Instant) {
        if self.at.is_some_and(|at| at > now) {
            return;
        }
        self.at = Some(now + self.backoff.next());
    }

    /// Whether an attempt may be made at `now`.
    pub(crate) fn is_due(&self, now: Instant) -> bool {
        self.at.is_none_or(|at| at <= now)
    }

    /// When the next attempt may be made, if one waits for its time.
    pub(crate) fn at(&self) -> Option<Instant> {
        self.at
    }

    /// An attempt starts now.
    pub(crate) fn attempting(&mut self) {
        self.at = None;
    }

    /// A connection worked again: the next failure waits the first backoff.
    pub(crate) fn succeeded(&mut self) {
        self.backoff.reset();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_maximum_and_starts_over_after_a_reset() {
        let mut backoff = Backoff::from_ms(50, 300);
        let waits: Vec<u128> = (0..5).map(|_| backoff.next().as_millis()).collect();
        assert_eq!(waits, vec![50, 100, 200, 300, 300]);
        backoff.reset();
        assert_eq!(backoff.next().as_millis(), 50);
        let mut odd = Backoff::from_ms(50, 10);
        assert_eq!((odd.next().as_millis(), odd.next().as_millis()), (50, 50));
    }

    #[test]
    fn failures_together_count_once_and_a_success_starts_the_backoff_over() {
        let now = Instant::now();
        let ms = Duration::from_millis;
        let mut schedule = ReconnectSchedule::from_ms(50, 400);
        assert!(schedule.is_due(now));
        schedule.failed(now);
        schedule.failed(now + ms(10));
        assert_eq!(
            schedule.at(),
            Some(now + ms(50)),
            "the second failure is the same outage"
        );
        assert!(!schedule.is_due(now + ms(49)));
        assert!(schedule.is_due(now + ms(50)));
        schedule.attempting();
        schedule.failed(now + ms(50));
        assert_eq!(schedule.at(), Some(now + ms(150)));
        schedule.succeeded();
        schedule.attempting();
        schedule.failed(now + ms(200));
        assert_eq!(schedule.at(), Some(now + ms(250)));
    }
}
