//! This machine's own limits, measured with io_uring directly in the same run as a scenario:
//! raw O_DIRECT disk throughput and commit rate ([`disk`]) and loopback TCP ([`net`]); for the
//! `e2e` scenario also how long the machine keeps its CPUs from running ([`stalls`]).
//!
//! Every scenario report divides ringlog's throughput by one of these (the `ratio`); `e2e`
//! shows its latency beside the floors the disk and the stalls set.

pub mod aligned_buf;
pub mod disk;
pub mod net;
pub mod ring;
pub mod stalls;

use std::io;
use std::path::Path;

use clap::ValueEnum;
use serde::{Deserialize, Serialize};

use self::disk::{DiskConfig, DiskReference};
use self::net::{NetConfig, NetReference, SendMode};
use self::stalls::StallReference;

/// When the references are measured around a scenario.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ReferenceWhen {
    /// Before and after the scenario; reports use the mean.
    Both,
    /// Only before the scenario (faster).
    Before,
    /// Not at all (no ratio in the report).
    None,
}

/// Which references one run measures, and how.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReferencePlan {
    /// Before, after, both or not at all.
    pub when: ReferenceWhen,
    /// Measure the disk reference.
    pub disk: bool,
    /// Measure the net reference.
    pub net: bool,
    /// Measure the stall reference (for latency scenarios).
    pub stalls: bool,
    /// Size of the disk reference's file.
    pub disk_bytes: u64,
    /// Bytes each net reference run sends.
    pub net_bytes: u64,
    /// Which io_uring send the net reference uses.
    pub send_mode: SendMode,
}

/// A reference measurement that failed.
#[derive(Debug, thiserror::Error)]
pub enum ReferenceError {
    /// A system call or io_uring operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done, with the path or peer.
        context: String,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
    /// The kernel transferred fewer bytes than asked where a full transfer is the only valid answer.
    #[error("{context}: {done_bytes} of {asked_bytes} bytes")]
    Short {
        /// What was being done.
        context: String,
        /// Bytes transferred.
        done_bytes: u64,
        /// Bytes asked for.
        asked_bytes: u64,
    },
    /// A helper thread of the measurement died or did not start.
    #[error("{0}")]
    Thread(String),
}

impl ReferenceError {
    /// Wraps an I/O error with what was being done.
    pub fn io(context: impl Into<String>, source: io::Error) -> Self {
        ReferenceError::Io {
            context: context.into(),
            source,
        }
    }

    /// The errno behind this error, if it is an I/O error.
    pub fn raw_os_error(&self) -> Option<i32> {
        match self {
            ReferenceError::Io { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }
}

/// One measurement of every reference that the plan asks for.
#[derive(Debug, Default)]
pub struct ReferenceSet {
    /// The disk reference, if measured.
    pub disk: Option<DiskReference>,
    /// The net reference, if measured.
    pub net: Option<NetReference>,
    /// The stall reference, if measured.
    pub stalls: Option<StallReference>,
}

impl ReferenceSet {
    /// The headline figures of this measurement.
    pub fn figures(&self) -> ReferenceFigures {
        ReferenceFigures {
            disk_write_mb_per_s: self.disk.as_ref().map(DiskReference::write_mb_per_s),
            disk_read_mb_per_s: self.disk.as_ref().map(DiskReference::read_mb_per_s),
            fsync_commits_per_s: self.disk.as_ref().map(DiskReference::commits_per_s),
            disk_write_p99_us: self
                .disk
                .as_ref()
                .map(|disk| disk.commits.write_latency.value_at_quantile_us(0.99) as f64),
            net_mb_per_s: self.net.as_ref().and_then(NetReference::best_mb_per_s),
            stall_delay_p99_us: self.stall_delay_us(0.99),
            stall_delay_p9999_us: self.stall_delay_us(0.9999),
        }
    }

    fn stall_delay_us(&self, quantile: f64) -> Option<f64> {
        let stalls = self.stalls.as_ref()?;
        Some(stalls.delay_at_quantile(quantile).as_secs_f64() * 1e6)
    }
}

/// The headline reference figures (JSON field `reference`); `null` where not measured.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ReferenceFigures {
    /// O_DIRECT sequential write, MB/s (10^6 bytes).
    pub disk_write_mb_per_s: Option<f64>,
    /// O_DIRECT sequential read, MB/s.
    pub disk_read_mb_per_s: Option<f64>,
    /// Write of one batch + linked fdatasync, per second.
    pub fsync_commits_per_s: Option<f64>,
    /// 99th percentile latency of one batch-sized O_DIRECT write (the commit's write), in
    /// microseconds: the floor under end-to-end latency, since records are visible once written.
    pub disk_write_p99_us: Option<f64>,
    /// Loopback TCP through io_uring, MB/s (the faster send mode).
    pub net_mb_per_s: Option<f64>,
    /// 99th percentile of the wait, for a record needing the worst CPU at a random instant,
    /// for the machine to run that CPU again (see [`stalls`]), in microseconds: the floor
    /// its stalls set under end-to-end latency.
    pub stall_delay_p99_us: Option<f64>,
    /// The same at the 99.99th percentile.
    pub stall_delay_p9999_us: Option<f64>,
}

impl ReferenceFigures {
    /// Field by field mean of two measurements; where only one has a figure, that one.
    pub fn mean(&self, other: &ReferenceFigures) -> ReferenceFigures {
        ReferenceFigures {
            disk_write_mb_per_s: mean(self.disk_write_mb_per_s, other.disk_write_mb_per_s),
            disk_read_mb_per_s: mean(self.disk_read_mb_per_s, other.disk_read_mb_per_s),
            fsync_commits_per_s: mean(self.fsync_commits_per_s, other.fsync_commits_per_s),
            disk_write_p99_us: mean(self.disk_write_p99_us, other.disk_write_p99_us),
            net_mb_per_s: mean(self.net_mb_per_s, other.net_mb_per_s),
            stall_delay_p99_us: mean(self.stall_delay_p99_us, other.stall_delay_p99_us),
            stall_delay_p9999_us: mean(self.stall_delay_p9999_us, other.stall_delay_p9999_us),
        }
    }
}

fn mean(first: Option<f64>, second: Option<f64>) -> Option<f64> {
    match (first, second) {
        (Some(first), Some(second)) => Some((first + second) / 2.0),
        (one, other) => one.or(other),
    }
}

/// The references measured around one scenario.
#[derive(Debug, Default)]
pub struct References {
    /// Measured before the scenario.
    pub before: Option<ReferenceSet>,
    /// Measured after the scenario.
    pub after: Option<ReferenceSet>,
}

impl References {
    /// The figures the report uses: the mean of before and after (or whichever exists).
    pub fn figures(&self) -> ReferenceFigures {
        let before = self.before.as_ref().map(ReferenceSet::figures);
        let after = self.after.as_ref().map(ReferenceSet::figures);
        match (before, after) {
            (Some(before), Some(after)) => before.mean(&after),
            (one, other) => one.or(other).unwrap_or_default(),
        }
    }
}

/// Measures the references `plan` asks for, with data under `dir` and commits of `commit_bytes`.
pub fn measure(
    plan: &ReferencePlan,
    dir: &Path,
    commit_bytes: u32,
) -> Result<ReferenceSet, ReferenceError> {
    // Stalls first: right after the disk reference's gigabyte of writes the host may still
    // be busy with them (a measurement taken right after it here saw a CPU stalled 2.1 % of
    // the time, one taken after the scenario 0.6 %).
    let stalls = if plan.stalls {
        Some(stalls::measure(stalls::STALL_TIME)?)
    } else {
        None
    };
    let disk = if plan.disk {
        Some(disk::measure(&DiskConfig::new(
            dir.to_path_buf(),
            plan.disk_bytes,
            commit_bytes,
        ))?)
    } else {
        None
    };
    let net = if plan.net {
        Some(net::measure(&NetConfig::new(
            plan.net_bytes,
            plan.send_mode,
        ))?)
    } else {
        None
    };
    Ok(ReferenceSet { disk, net, stalls })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mean_of_figures_handles_missing_values() {
        let before = ReferenceFigures {
            disk_write_mb_per_s: Some(100.0),
            disk_read_mb_per_s: None,
            fsync_commits_per_s: Some(10.0),
            disk_write_p99_us: None,
            net_mb_per_s: None,
            stall_delay_p99_us: Some(100.0),
            stall_delay_p9999_us: None,
        };
        let after = ReferenceFigures {
            disk_write_mb_per_s: Some(200.0),
            disk_read_mb_per_s: Some(50.0),
            fsync_commits_per_s: None,
            disk_write_p99_us: Some(300.0),
            net_mb_per_s: None,
            stall_delay_p99_us: Some(300.0),
            stall_delay_p9999_us: None,
        };
        let mean = before.mean(&after);
        assert_eq!(mean.disk_write_mb_per_s, Some(150.0));
        assert_eq!(mean.disk_read_mb_per_s, Some(50.0));
        assert_eq!(mean.fsync_commits_per_s, Some(10.0));
        assert_eq!(mean.disk_write_p99_us, Some(300.0));
        assert_eq!(mean.net_mb_per_s, None);
        assert_eq!(mean.stall_delay_p99_us, Some(200.0));
        assert_eq!(mean.stall_delay_p9999_us, None);
        assert_eq!(References::default().figures(), ReferenceFigures::default());
    }
}
