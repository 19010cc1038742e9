//! [`Backoff`]: the growing wait between attempts to connect again, as Kafka's clients use
//! between `reconnect.backoff.ms` and `reconnect.backoff.max.ms`.

use std::time::Duration;

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
}
