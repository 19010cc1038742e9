//! Latency histograms in microseconds (hdrhistogram) and their percentile summary.
//!
//! Each load thread owns one [`LatencyHistogram`] and records into it without locking or
//! allocating; the histograms are merged after the run. Values beyond the range are clamped to
//! it (and so show up as the maximum) rather than lost.

use std::time::Duration;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Largest latency the histogram tells apart: one hour, in microseconds.
pub const LATENCY_US_MAX: u64 = 3_600_000_000;

/// Significant decimal digits kept for every value (0.1% resolution).
const SIGNIFICANT_DIGITS: u8 = 3;

/// A histogram of latencies in microseconds, 1 us to [`LATENCY_US_MAX`], 3 significant digits.
#[derive(Clone, Debug)]
pub struct LatencyHistogram {
    histogram: Histogram<u64>,
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        Self::new()
    }
}

impl LatencyHistogram {
    /// An empty histogram. Allocates once (about 200 KiB); recording never allocates.
    pub fn new() -> Self {
        let histogram = Histogram::new_with_bounds(1, LATENCY_US_MAX, SIGNIFICANT_DIGITS);
        // The bounds are constants that hdrhistogram accepts; failure here is a programming error.
        let histogram = match histogram {
            Ok(histogram) => histogram,
            Err(error) => panic!("constant latency histogram bounds rejected: {error:?}"),
        };
        Self { histogram }
    }

    /// Records one latency in microseconds (0 counts as 1 us, beyond the range as the maximum).
    pub fn record_us(&mut self, latency_us: u64) {
        self.histogram.saturating_record(latency_us.max(1));
    }

    /// Records one latency given as a duration (rounded down to whole microseconds).
    pub fn record(&mut self, latency: Duration) {
        self.record_us(duration_us(latency));
    }

    /// Records `count` samples of the same latency in microseconds (as [`Self::record_us`]).
    pub fn record_n_us(&mut self, latency_us: u64, count: u64) {
        self.histogram.saturating_record_n(latency_us.max(1), count);
    }

    /// Records a latency measured by a sender that should have sent every `interval_us`,
    /// adding the samples a stalled sender failed to take (coordinated omission correction).
    ///
    /// Prefer measuring from the intended send time (what `e2e` does); use this where only
    /// the actual send time is known.
    pub fn record_corrected_us(&mut self, latency_us: u64, interval_us: u64) {
        let clamped_us = latency_us.clamp(1, LATENCY_US_MAX);
        // Clamped to the histogram's range, so recording cannot fail.
        let recorded = self.histogram.record_correct(clamped_us, interval_us);
        debug_assert!(recorded.is_ok(), "clamped latency out of range");
    }

    /// Adds every sample of `other` (e.g. another thread's histogram) into this one.
    pub fn merge(&mut self, other: &LatencyHistogram) {
        // Both histograms have identical bounds, so addition cannot fail.
        let added = self.histogram.add(&other.histogram);
        debug_assert!(added.is_ok(), "histograms with equal bounds failed to add");
    }

    /// Number of samples recorded.
    pub fn count(&self) -> u64 {
        self.histogram.len()
    }

    /// Latency at `quantile` (0.0..=1.0) in microseconds; 0 when empty.
    pub fn value_at_quantile_us(&self, quantile: f64) -> u64 {
        if self.count() == 0 {
            return 0;
        }
        self.histogram.value_at_quantile(quantile)
    }

    /// Largest recorded latency in microseconds (0 when empty).
    pub fn max_us(&self) -> u64 {
        if self.count() == 0 {
            return 0;
        }
        self.histogram.max()
    }

    /// The percentiles every report shows.
    pub fn summary(&self) -> LatencySummary {
        LatencySummary {
            p50: self.value_at_quantile_us(0.5),
            p90: self.value_at_quantile_us(0.9),
            p99: self.value_at_quantile_us(0.99),
            p999: self.value_at_quantile_us(0.999),
            p9999: self.value_at_quantile_us(0.9999),
            max: self.max_us(),
            count: self.count(),
        }
    }

    /// Points of the percentile spectrum for plotting: `(nines, latency_us)` where
    /// `nines = -log10(1 - quantile)` (0 = p0, 1 = p90, 2 = p99, 3 = p99.9 ...), stepping
    /// `step_nines` up to the last quantile the sample count supports, then the maximum.
    pub fn spectrum(&self, step_nines: f64) -> Vec<(f64, u64)> {
        assert!(step_nines > 0.0, "spectrum step must be positive");
        let count = self.count();
        if count == 0 {
            return Vec::new();
        }
        // With n samples, quantiles above 1 - 1/n only ever show the maximum.
        let nines_max = (count as f64).log10();
        let mut points = Vec::new();
        let mut nines = 0.0;
        while nines < nines_max {
            let quantile = 1.0 - 10f64.powf(-nines);
            points.push((nines, self.value_at_quantile_us(quantile)));
            nines += step_nines;
        }
        points.push((nines_max.max(step_nines), self.max_us()));
        points
    }
}

/// Whole microseconds in `duration`, saturating at `u64::MAX`.
pub fn duration_us(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros()).unwrap_or(u64::MAX)
}

/// The latency percentiles of a report, in microseconds (JSON field `latency_us`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LatencySummary {
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
    /// 99.99th percentile.
    pub p9999: u64,
    /// Largest sample.
    pub max: u64,
    /// Number of samples.
    pub count: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_of_uniform_samples() {
        let mut histogram = LatencyHistogram::new();
        for latency_us in 1..=10_000 {
            histogram.record_us(latency_us);
        }
        let summary = histogram.summary();
        assert_eq!(summary.count, 10_000);
        assert!((4_990..=5_010).contains(&summary.p50), "{summary:?}");
        assert!((9_890..=9_910).contains(&summary.p99), "{summary:?}");
        assert!((9_990..=10_010).contains(&summary.max), "{summary:?}");
    }

    #[test]
    fn empty_histogram_summarises_to_zeros() {
        assert_eq!(LatencyHistogram::new().summary(), LatencySummary::default());
        assert!(LatencyHistogram::new().spectrum(0.1).is_empty());
    }

    #[test]
    fn out_of_range_values_are_clamped_not_lost() {
        let mut histogram = LatencyHistogram::new();
        histogram.record_us(0);
        histogram.record_us(u64::MAX);
        histogram.record(Duration::from_secs(10 * 3600));
        assert_eq!(histogram.count(), 3);
        assert!(histogram.max_us() >= LATENCY_US_MAX);
    }

    #[test]
    fn merge_adds_samples_and_correction_fills_gaps() {
        let mut first = LatencyHistogram::new();
        first.record_us(100);
        let mut second = LatencyHistogram::new();
        second.record_corrected_us(1_000, 100);
        first.merge(&second);
        // 1000 with a 100 us interval also records 900, 800, ..., 100.
        assert_eq!(first.count(), 11);
    }

    #[test]
    fn spectrum_rises_to_the_maximum() {
        let mut histogram = LatencyHistogram::new();
        for latency_us in 1..=1_000 {
            histogram.record_us(latency_us);
        }
        let points = histogram.spectrum(0.25);
        assert!(points.windows(2).all(|pair| pair[0].1 <= pair[1].1));
        assert_eq!(points.last().map(|point| point.1), Some(histogram.max_us()));
        assert!((points.last().unwrap().0 - 3.0).abs() < 1e-9);
    }
}
