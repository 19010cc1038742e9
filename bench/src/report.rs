//! The report of one run: the JSON object written with `--json` (and read back by `summary`).
//!
//! The shape is fixed by the bench issue; every field is always present (`null` where a value
//! was not measured). Two additions are written by one scenario each and left out of
//! every other report: `front_doors` (`kafka`: native protocol and Kafka front door side by
//! side) and `memory` (`partitions`). One report is written as an object, several as an
//! array.

use std::fs;
use std::io;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::front_doors::{Direction, FrontDoorComparison};
use crate::latency::LatencySummary;
use crate::options::{Acks, RunConfig};
use crate::reference::ReferenceFigures;
use crate::scenario::partitions::MemoryFigures;
use crate::scenario::ScenarioResult;
use crate::workload::Workload;

/// The options a report was measured with (JSON field `config`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReportConfig {
    /// Bytes per record value.
    pub record_size: u32,
    /// Producer batch size in bytes.
    pub batch_bytes: u32,
    /// Partitions of the topic.
    pub partitions: u32,
    /// Producer clients.
    pub producers: u32,
    /// Consumer clients per group.
    pub consumers: u32,
    /// Consumer or share groups.
    pub groups: u32,
    /// Acknowledgement asked for.
    pub acks: Acks,
    /// Producer rate limit in MB/s, `null` for unlimited.
    pub rate_mb_per_s: Option<f64>,
    /// Embedded server shards, `null` for a running server.
    pub shards: Option<u32>,
    /// Consume from disk rather than memory.
    pub cold: bool,
    /// Fanout groups followed live producers (absent in older reports: false).
    #[serde(default)]
    pub follow: bool,
    /// Share runs: simulated work per record in microseconds (absent in older reports and
    /// for other scenarios, where it is left out of the JSON).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub work_us: Option<u64>,
}

impl ReportConfig {
    /// The report's view of a run's options.
    pub fn from_run(config: &RunConfig) -> Self {
        Self {
            record_size: config.record_size_bytes,
            batch_bytes: config.batch_bytes,
            partitions: config.partitions,
            producers: config.producers,
            consumers: config.consumers,
            groups: config.groups,
            acks: config.acks,
            rate_mb_per_s: config.rate_mb_per_s,
            shards: config.shards(),
            cold: config.cold,
            follow: config.follow,
            work_us: (config.workload == Workload::Share).then_some(config.work_us),
        }
    }
}

/// One scenario's report (one JSON object).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// Scenario or reference name (`produce`, `disk`, ...).
    pub scenario: String,
    /// Options it ran with.
    pub config: ReportConfig,
    /// Records moved.
    pub records: u64,
    /// Record bytes moved.
    pub bytes: u64,
    /// Seconds of measured load.
    pub seconds: f64,
    /// MB/s, MB = 10^6 bytes.
    pub mb_per_s: f64,
    /// Records per second.
    pub records_per_s: f64,
    /// Latency percentiles in microseconds.
    pub latency_us: LatencySummary,
    /// This machine's limits measured in the same run (mean of before and after).
    pub reference: ReferenceFigures,
    /// `mb_per_s` divided by the reference that bounds this scenario; `null` without one.
    pub ratio: Option<f64>,
    /// `kafka` only: the same records through the native protocol and the Kafka front door,
    /// produce then consume. Left out of every other report.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub front_doors: Vec<FrontDoorComparison>,
    /// `partitions` only: resident memory idle and after one record per partition. Left out
    /// of every other report.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<MemoryFigures>,
}

/// The reference a scenario's throughput is compared with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RatioBasis {
    /// Raw O_DIRECT sequential write: append and produce.
    DiskWrite,
    /// Raw O_DIRECT sequential read: cold consume.
    DiskRead,
    /// Raw loopback TCP: everything that sends to consumers.
    Net,
    /// The native protocol's produce, measured in the same run: `kafka`, whose headline is
    /// produce through the Kafka front door.
    NativeProduce,
}

impl RatioBasis {
    /// The basis for `workload` (`None` for the references themselves).
    pub fn for_workload(workload: Workload, cold: bool) -> Option<RatioBasis> {
        match workload {
            Workload::Append | Workload::Produce => Some(RatioBasis::DiskWrite),
            Workload::Consume if cold => Some(RatioBasis::DiskRead),
            Workload::Consume | Workload::E2e | Workload::Fanout | Workload::Share => {
                Some(RatioBasis::Net)
            }
            Workload::Kafka => Some(RatioBasis::NativeProduce),
            // Measures memory, not throughput against the machine.
            Workload::Partitions | Workload::Disk | Workload::Net => None,
        }
    }

    /// The reference figure this basis uses (`None` for the native protocol, which is not a
    /// machine reference: see [`Report::new`]).
    pub fn figure(self, reference: &ReferenceFigures) -> Option<f64> {
        match self {
            RatioBasis::DiskWrite => reference.disk_write_mb_per_s,
            RatioBasis::DiskRead => reference.disk_read_mb_per_s,
            RatioBasis::Net => reference.net_mb_per_s,
            RatioBasis::NativeProduce => None,
        }
    }

    /// Words for the table.
    pub fn describe(self) -> &'static str {
        match self {
            RatioBasis::DiskWrite => "raw disk write",
            RatioBasis::DiskRead => "raw disk read",
            RatioBasis::Net => "raw loopback TCP",
            RatioBasis::NativeProduce => "native produce",
        }
    }
}

impl Report {
    /// The report of `result`, measured with `config`, against `reference` (for `kafka`:
    /// against the native produce of the same run).
    pub fn new(config: &RunConfig, result: &ScenarioResult, reference: ReferenceFigures) -> Report {
        let mb_per_s = result.mb_per_s();
        let ratio = match RatioBasis::for_workload(config.workload, config.cold) {
            Some(RatioBasis::NativeProduce) => result
                .front_doors
                .iter()
                .find(|comparison| comparison.direction == Direction::Produce)
                .and_then(|comparison| comparison.ratio),
            basis => basis
                .and_then(|basis| basis.figure(&reference))
                .filter(|figure| *figure > 0.0)
                .map(|figure| mb_per_s / figure),
        };
        Report {
            scenario: config.workload.name().to_string(),
            config: ReportConfig::from_run(config),
            records: result.records,
            bytes: result.bytes,
            seconds: result.seconds,
            mb_per_s,
            records_per_s: result.records_per_s(),
            latency_us: result.latency.summary(),
            reference,
            ratio,
            front_doors: result.front_doors.clone(),
            memory: result.memory.clone(),
        }
    }
}

/// Writing or reading a report file failed.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// The file could not be written or read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// The file is not a report (or an array of reports).
    #[error("{path}: not a ringlog-bench report: {source}")]
    Json {
        /// The file.
        path: String,
        /// What did not parse.
        #[source]
        source: serde_json::Error,
    },
}

/// The JSON text of `reports`: one object for one report, an array for several.
pub fn to_json(reports: &[Report]) -> Result<String, serde_json::Error> {
    match reports {
        [single] => serde_json::to_string_pretty(single),
        several => serde_json::to_string_pretty(several),
    }
}

/// Writes `reports` to `path` as JSON (see [`to_json`]).
pub fn write_json(path: &Path, reports: &[Report]) -> Result<(), ReportError> {
    let text = to_json(reports).map_err(|source| ReportError::Json {
        path: path.display().to_string(),
        source,
    })?;
    fs::write(path, text + "\n").map_err(|source| ReportError::Io {
        path: path.display().to_string(),
        source,
    })
}

/// Reads the reports in a JSON file (one object or an array of them).
pub fn read_json(path: &Path) -> Result<Vec<Report>, ReportError> {
    let text = fs::read_to_string(path).map_err(|source| ReportError::Io {
        path: path.display().to_string(),
        source,
    })?;
    parse_json(&text).map_err(|source| ReportError::Json {
        path: path.display().to_string(),
        source,
    })
}

/// Parses JSON text holding one report or an array of them.
pub fn parse_json(text: &str) -> Result<Vec<Report>, serde_json::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(Box<Report>),
        Many(Vec<Report>),
    }
    Ok(match serde_json::from_str::<OneOrMany>(text)? {
        OneOrMany::One(report) => vec![*report],
        OneOrMany::Many(reports) => reports,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::latency::LatencyHistogram;
    use serde_json::Value;

    fn config(args: &[&str]) -> RunConfig {
        crate::options::parse_for_test(args, 2).unwrap()
    }

    fn result() -> ScenarioResult {
        let mut latency = LatencyHistogram::new();
        for latency_us in 1..=100 {
            latency.record_us(latency_us);
        }
        ScenarioResult {
            records: 1_000,
            bytes: 1_000_000,
            seconds: 0.5,
            latency,
            ..ScenarioResult::default()
        }
    }

    fn reference() -> ReferenceFigures {
        ReferenceFigures {
            disk_write_mb_per_s: Some(4.0),
            disk_read_mb_per_s: Some(8.0),
            fsync_commits_per_s: Some(1000.0),
            disk_write_p99_us: Some(250.0),
            net_mb_per_s: Some(20.0),
            stall_delay_p99_us: Some(10.0),
            stall_delay_p9999_us: Some(900.0),
        }
    }

    fn keys(value: &Value) -> Vec<&str> {
        let mut keys: Vec<&str> = value
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        keys.sort_unstable();
        keys
    }

    #[test]
    fn json_has_exactly_the_issue_fields() {
        let report = Report::new(&config(&["produce"]), &result(), reference());
        let value: Value = serde_json::from_str(&to_json(&[report]).unwrap()).unwrap();
        assert_eq!(
            keys(&value),
            [
                "bytes",
                "config",
                "latency_us",
                "mb_per_s",
                "ratio",
                "records",
                "records_per_s",
                "reference",
                "scenario",
                "seconds"
            ]
        );
        assert_eq!(
            keys(&value["config"]),
            [
                "acks",
                "batch_bytes",
                "cold",
                "consumers",
                "follow",
                "groups",
                "partitions",
                "producers",
                "rate_mb_per_s",
                "record_size",
                "shards"
            ]
        );
        assert_eq!(
            keys(&value["latency_us"]),
            ["count", "max", "p50", "p90", "p99", "p999", "p9999"]
        );
        assert_eq!(
            keys(&value["reference"]),
            [
                "disk_read_mb_per_s",
                "disk_write_mb_per_s",
                "disk_write_p99_us",
                "fsync_commits_per_s",
                "net_mb_per_s",
                "stall_delay_p9999_us",
                "stall_delay_p99_us"
            ]
        );
        assert_eq!(value["scenario"], "produce");
        assert_eq!(value["config"]["acks"], "durable");
        assert_eq!(value["config"]["rate_mb_per_s"], Value::Null);
        assert_eq!(value["config"]["shards"], 2);
        assert_eq!(value["mb_per_s"], 2.0);
        assert_eq!(value["records_per_s"], 2000.0);
        assert_eq!(value["latency_us"]["count"], 100);
        assert_eq!(value["ratio"], 0.5, "produce is compared with disk write");
    }

    #[test]
    fn ratio_basis_follows_the_scenario() {
        let cold = Report::new(&config(&["consume", "--cold"]), &result(), reference());
        assert_eq!(cold.ratio, Some(0.25), "cold consume: disk read");
        let hot = Report::new(&config(&["consume"]), &result(), reference());
        assert_eq!(hot.ratio, Some(0.1), "hot consume: net");
        let e2e = Report::new(&config(&["e2e"]), &result(), reference());
        assert_eq!(e2e.ratio, Some(0.1));
        let disk = Report::new(&config(&["disk"]), &result(), reference());
        assert_eq!(disk.ratio, None, "a reference has no ratio");
        let unmeasured = Report::new(
            &config(&["produce"]),
            &result(),
            ReferenceFigures::default(),
        );
        assert_eq!(unmeasured.ratio, None);
        let value: Value = serde_json::to_value(&unmeasured).unwrap();
        assert_eq!(value["ratio"], Value::Null);
        assert_eq!(value["reference"]["net_mb_per_s"], Value::Null);
    }

    #[test]
    fn kafka_reports_carry_both_front_doors_and_their_ratio() {
        use crate::front_doors::LegFigures;
        let mut kafka = result();
        kafka.front_doors = vec![
            FrontDoorComparison::new(
                Direction::Produce,
                LegFigures::new(1_000, 100_000, 0.25),
                LegFigures::new(1_000, 100_000, 1.0),
            ),
            FrontDoorComparison::new(
                Direction::Consume,
                LegFigures::new(1_000, 100_000, 0.5),
                LegFigures::new(1_000, 100_000, 0.5),
            ),
        ];
        let report = Report::new(&config(&["kafka"]), &kafka, reference());
        assert_eq!(
            report.ratio,
            Some(0.25),
            "kafka produce over native produce"
        );
        let value: Value = serde_json::to_value(&report).unwrap();
        assert_eq!(value["front_doors"][1]["direction"], "consume");
        assert_eq!(value["front_doors"][1]["ratio"], 1.0);
        assert_eq!(
            parse_json(&to_json(std::slice::from_ref(&report)).unwrap()).unwrap(),
            vec![report]
        );
        let produce = Report::new(&config(&["produce"]), &result(), reference());
        let value: Value = serde_json::to_value(&produce).unwrap();
        assert!(
            value.get("front_doors").is_none(),
            "other scenarios keep the issue's fields"
        );
    }

    #[test]
    fn one_report_is_an_object_several_an_array_and_both_read_back() {
        let first = Report::new(&config(&["produce"]), &result(), reference());
        let second = Report::new(&config(&["fanout"]), &result(), reference());
        let one = to_json(std::slice::from_ref(&first)).unwrap();
        assert!(one.trim_start().starts_with('{'));
        assert_eq!(parse_json(&one).unwrap(), vec![first.clone()]);
        let many = to_json(&[first.clone(), second.clone()]).unwrap();
        assert!(many.trim_start().starts_with('['));
        assert_eq!(parse_json(&many).unwrap(), vec![first, second]);
        assert!(parse_json("{\"scenario\": 1}").is_err());
    }

    #[test]
    fn write_and_read_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.json");
        let report = Report::new(&config(&["share"]), &result(), reference());
        write_json(&path, std::slice::from_ref(&report)).unwrap();
        assert_eq!(read_json(&path).unwrap(), vec![report]);
        assert!(read_json(&dir.path().join("missing.json")).is_err());
    }
}
