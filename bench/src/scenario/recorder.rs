//! What one load thread measured: completed records and bytes, their spread over time and a
//! latency histogram. Each thread owns one (no locks, no allocation after creation in the
//! steady state); the coordinator merges them into the [`ScenarioResult`].

use std::time::{Duration, Instant};

use super::ScenarioResult;
use crate::latency::{duration_us, LatencyHistogram};
use crate::throughput::ThroughputTimeline;

/// One load thread's measurements.
#[derive(Clone, Debug)]
pub struct LoadRecorder {
    start: Instant,
    latency: LatencyHistogram,
    throughput: ThroughputTimeline,
    records: u64,
    bytes: u64,
    /// When the last completion was recorded (the end of this thread's useful work).
    last_completion: Option<Instant>,
}

impl LoadRecorder {
    /// An empty recorder for a run that started at `start` and is expected to last about
    /// `expected` (sizes the timeline so that recording does not allocate).
    pub fn new(start: Instant, expected: Option<Duration>) -> Self {
        let throughput = expected.map_or_else(
            ThroughputTimeline::default,
            ThroughputTimeline::with_expected_duration,
        );
        Self {
            start,
            latency: LatencyHistogram::new(),
            throughput,
            records: 0,
            bytes: 0,
            last_completion: None,
        }
    }

    /// Counts `records` records in `bytes` bytes as completed at `at`.
    pub fn complete(&mut self, at: Instant, records: u64, bytes: u64) {
        self.records += records;
        self.bytes += bytes;
        self.throughput
            .record(at.saturating_duration_since(self.start), bytes);
        self.last_completion = Some(self.last_completion.map_or(at, |last| last.max(at)));
    }

    /// Adds one latency sample.
    pub fn latency(&mut self, latency: Duration) {
        self.latency.record(latency);
    }

    /// Adds one latency sample given in microseconds.
    pub fn latency_us(&mut self, latency_us: u64) {
        self.latency.record_us(latency_us);
    }

    /// Adds `count` latency samples of `latency` each (records known to have taken at least
    /// that long, without a receipt to time them by).
    pub fn latencies(&mut self, latency: Duration, count: u64) {
        self.latency.record_n_us(duration_us(latency), count);
    }

    /// Records completed so far.
    pub fn records(&self) -> u64 {
        self.records
    }

    /// Bytes completed so far.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Latency samples so far.
    pub fn latency_count(&self) -> u64 {
        self.latency.count()
    }

    /// Adds everything `other` measured (same start) into this one.
    pub fn merge(&mut self, other: &LoadRecorder) {
        debug_assert_eq!(self.start, other.start, "recorders of different runs");
        self.latency.merge(&other.latency);
        self.throughput.merge(&other.throughput);
        self.records += other.records;
        self.bytes += other.bytes;
        self.last_completion = match (self.last_completion, other.last_completion) {
            (Some(mine), Some(theirs)) => Some(mine.max(theirs)),
            (mine, theirs) => mine.or(theirs),
        };
    }

    /// Seconds from the start to the last completion (0 when nothing completed).
    pub fn active_seconds(&self) -> f64 {
        self.last_completion.map_or(0.0, |last| {
            last.saturating_duration_since(self.start).as_secs_f64()
        })
    }

    /// The scenario result over `seconds` of load, with `notes`.
    pub fn into_result(self, seconds: f64, notes: Vec<String>) -> ScenarioResult {
        ScenarioResult {
            records: self.records,
            bytes: self.bytes,
            seconds,
            latency: self.latency,
            throughput: self.throughput,
            notes,
            front_doors: Vec::new(),
            memory: None,
        }
    }
}

/// Merges the recorders of one run (all with the same start); `None` when there are none.
pub fn merge_all(recorders: impl IntoIterator<Item = LoadRecorder>) -> Option<LoadRecorder> {
    let mut iter = recorders.into_iter();
    let mut merged = iter.next()?;
    for recorder in iter {
        merged.merge(&recorder);
    }
    Some(merged)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merged_recorders_add_up() {
        let start = Instant::now();
        let mut first = LoadRecorder::new(start, Some(Duration::from_secs(1)));
        first.complete(start + Duration::from_millis(10), 2, 200);
        first.latency_us(100);
        let mut second = LoadRecorder::new(start, None);
        second.complete(start + Duration::from_millis(150), 3, 300);
        second.latency(Duration::from_micros(300));
        let merged = merge_all([first, second]).unwrap();
        assert_eq!((merged.records(), merged.bytes()), (5, 500));
        assert_eq!(merged.latency_count(), 2);
        assert!((merged.active_seconds() - 0.15).abs() < 1e-9);
        let result = merged.into_result(0.15, vec![]);
        assert_eq!(result.throughput.bytes_per_interval(), &[200, 300]);
        assert!(merge_all(Vec::new()).is_none());
    }
}
