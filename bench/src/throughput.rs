//! Throughput over time: bytes completed per fixed interval (100 ms by default) of a run.
//!
//! Each load thread owns one [`ThroughputTimeline`], records each completed batch with the time
//! since the common start, and the timelines are merged after the run. Capacity for the
//! expected run length is reserved up front, so recording does not allocate in the steady state.

use std::time::Duration;

use crate::units::mb_per_s;

/// Interval of one throughput sample, in milliseconds.
pub const THROUGHPUT_INTERVAL_MS: u64 = 100;

/// Bytes completed in each consecutive interval since the start of a run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ThroughputTimeline {
    interval_ms: u64,
    bytes_per_interval: Vec<u64>,
}

impl Default for ThroughputTimeline {
    fn default() -> Self {
        Self::new(THROUGHPUT_INTERVAL_MS)
    }
}

impl ThroughputTimeline {
    /// An empty timeline with samples every `interval_ms` (at least 1).
    pub fn new(interval_ms: u64) -> Self {
        Self {
            interval_ms: interval_ms.max(1),
            bytes_per_interval: Vec::new(),
        }
    }

    /// An empty timeline with 100 ms samples and room for a run of `expected` length.
    pub fn with_expected_duration(expected: Duration) -> Self {
        let mut timeline = Self::default();
        let intervals = expected.as_millis() / u128::from(timeline.interval_ms) + 2;
        timeline
            .bytes_per_interval
            .reserve(usize::try_from(intervals).unwrap_or(0));
        timeline
    }

    /// Counts `bytes` as completed `since_start` after the run began.
    pub fn record(&mut self, since_start: Duration, bytes: u64) {
        let index = since_start.as_millis() / u128::from(self.interval_ms);
        let Ok(index) = usize::try_from(index) else {
            return;
        };
        if index >= self.bytes_per_interval.len() {
            self.bytes_per_interval.resize(index + 1, 0);
        }
        if let Some(slot) = self.bytes_per_interval.get_mut(index) {
            *slot += bytes;
        }
    }

    /// Adds another timeline with the same interval into this one, interval by interval.
    pub fn merge(&mut self, other: &ThroughputTimeline) {
        assert_eq!(
            self.interval_ms, other.interval_ms,
            "timelines must share an interval to merge"
        );
        if other.bytes_per_interval.len() > self.bytes_per_interval.len() {
            self.bytes_per_interval
                .resize(other.bytes_per_interval.len(), 0);
        }
        for (mine, theirs) in self
            .bytes_per_interval
            .iter_mut()
            .zip(&other.bytes_per_interval)
        {
            *mine += theirs;
        }
    }

    /// The sample interval in milliseconds.
    pub fn interval_ms(&self) -> u64 {
        self.interval_ms
    }

    /// Raw bytes per interval, oldest first.
    pub fn bytes_per_interval(&self) -> &[u64] {
        &self.bytes_per_interval
    }

    /// MB/s per interval of a run that lasted `run_seconds`. The last interval is cut at the
    /// end of the run (so a run that ends mid-interval does not show a false drop) and left
    /// out if less than a tenth of it was run.
    pub fn samples(&self, run_seconds: f64) -> Vec<ThroughputSample> {
        let interval_s = self.interval_ms as f64 / 1000.0;
        self.bytes_per_interval
            .iter()
            .enumerate()
            .filter_map(|(index, &bytes)| {
                let start_s = index as f64 * interval_s;
                let end_s = (start_s + interval_s).min(run_seconds.max(0.0));
                (end_s - start_s >= interval_s / 10.0).then(|| ThroughputSample {
                    start_s,
                    end_s,
                    mb_per_s: mb_per_s(bytes, end_s - start_s),
                })
            })
            .collect()
    }
}

/// Throughput in one interval of a run.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ThroughputSample {
    /// Start of the interval, seconds since the run began.
    pub start_s: f64,
    /// End of the interval (the end of the run for the last one).
    pub end_s: f64,
    /// MB/s (10^6 bytes) in the interval.
    pub mb_per_s: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_into_the_right_interval() {
        let mut timeline = ThroughputTimeline::with_expected_duration(Duration::from_secs(1));
        timeline.record(Duration::from_millis(5), 100);
        timeline.record(Duration::from_millis(99), 100);
        timeline.record(Duration::from_millis(250), 1_000_000);
        assert_eq!(timeline.bytes_per_interval(), &[200, 0, 1_000_000]);
        let samples = timeline.samples(0.3);
        assert_eq!(samples.len(), 3);
        assert!((samples[2].mb_per_s - 10.0).abs() < 1e-9);
    }

    #[test]
    fn last_interval_is_cut_at_the_end_of_the_run() {
        let mut timeline = ThroughputTimeline::default();
        timeline.record(Duration::from_millis(50), 1_000_000);
        timeline.record(Duration::from_millis(120), 200_000);
        let samples = timeline.samples(0.12);
        assert_eq!(samples.len(), 2);
        assert!((samples[1].end_s - 0.12).abs() < 1e-9);
        assert!((samples[1].mb_per_s - 10.0).abs() < 1e-6, "{samples:?}");
        assert_eq!(
            timeline.samples(0.105).len(),
            1,
            "a 5 ms sliver is left out"
        );
    }

    #[test]
    fn merge_adds_interval_by_interval() {
        let mut first = ThroughputTimeline::default();
        first.record(Duration::from_millis(0), 1);
        let mut second = ThroughputTimeline::default();
        second.record(Duration::from_millis(0), 2);
        second.record(Duration::from_millis(150), 3);
        first.merge(&second);
        assert_eq!(first.bytes_per_interval(), &[3, 3]);
    }
}
