//! The readable tables on stdout: one run's report, the reference details, and the summary of
//! a results directory. MB = 10^6 bytes and latencies are in microseconds everywhere; every
//! table says so in its header.

use std::fmt::Write as _;

use crate::front_doors::FrontDoorComparison;
use crate::latency::{LatencyHistogram, LatencySummary};
use crate::options::{RunConfig, StopAt, Target};
use crate::reference::disk::{DiskReference, BLOCK_BYTES, QUEUE_DEPTH};
use crate::reference::net::NetReference;
use crate::reference::{ReferenceFigures, References};
use crate::report::{RatioBasis, Report};
use crate::scenario::partitions::TARGET_KIB_PER_PARTITION;
use crate::units::{format_bytes, format_size};
use crate::workload::Workload;

/// Header line naming the units, used by every table.
pub const UNITS_NOTE: &str = "MB = 10^6 bytes, latency in microseconds";

/// The table of one scenario run: config, result, latency, references before/after/mean, notes.
pub fn render_run(
    config: &RunConfig,
    report: &Report,
    references: &References,
    notes: &[String],
) -> String {
    let mut text = String::new();
    let _ = writeln!(text, "ringlog-bench {}  ({UNITS_NOTE})", report.scenario);
    let _ = writeln!(text, "  config     {}", describe_config(config));
    let ratio = match (
        report.ratio,
        RatioBasis::for_workload(config.workload, config.cold),
    ) {
        (Some(ratio), Some(basis)) => format!("   ratio {ratio:.3} of {}", basis.describe()),
        _ => String::new(),
    };
    let _ = writeln!(
        text,
        "  result     {} records  {} in {:.2} s   {:.1} MB/s   {:.0} records/s{ratio}",
        report.records,
        format_bytes(report.bytes),
        report.seconds,
        report.mb_per_s,
        report.records_per_s
    );
    text.push_str(&render_front_doors(&report.front_doors));
    let _ = writeln!(
        text,
        "  latency    {}",
        describe_latency(&report.latency_us)
    );
    if references.before.is_some() || references.after.is_some() {
        text.push_str(&render_reference_rows(config, references));
    }
    for note in notes {
        let _ = writeln!(text, "  note: {note}");
    }
    text
}

/// The native and Kafka front door rows of a `kafka` run (nothing for other scenarios).
fn render_front_doors(comparisons: &[FrontDoorComparison]) -> String {
    let mut text = String::new();
    for comparison in comparisons {
        let sides = [
            ("native", &comparison.native, None),
            ("kafka", &comparison.kafka, comparison.ratio),
        ];
        for (index, (side, figures, ratio)) in sides.into_iter().enumerate() {
            let direction = if index == 0 {
                comparison.direction.name()
            } else {
                ""
            };
            let ratio = ratio.map_or_else(String::new, |ratio| {
                format!("   ratio {ratio:.3} of native")
            });
            let _ = writeln!(
                text,
                "  {direction:<9}{side:<7}{:>10} records  {:>9} in {:>6.2} s  {:>9.1} MB/s  {:>10.0} records/s{ratio}",
                figures.records,
                format_bytes(figures.bytes),
                figures.seconds,
                figures.mb_per_s,
                figures.records_per_s,
            );
        }
    }
    text
}

/// The before / after / mean rows of the references around a scenario.
fn render_reference_rows(config: &RunConfig, references: &References) -> String {
    let before = references.before.as_ref().map(|set| set.figures());
    let after = references.after.as_ref().map(|set| set.figures());
    let mean = references.figures();
    let rows: [(String, PickFigure); 7] = [
        ("disk write MB/s".into(), |figures| {
            figures.disk_write_mb_per_s
        }),
        ("disk read MB/s".into(), |figures| {
            figures.disk_read_mb_per_s
        }),
        (
            format!(
                "commits/s ({} + fdatasync)",
                format_size(u64::from(config.batch_bytes))
            ),
            |figures| figures.fsync_commits_per_s,
        ),
        (
            format!(
                "write p99 us ({}, the e2e floor)",
                format_size(u64::from(config.batch_bytes))
            ),
            |figures| figures.disk_write_p99_us,
        ),
        ("loopback TCP MB/s".into(), |figures| figures.net_mb_per_s),
        ("CPU stall p99 us (the e2e floor)".into(), |figures| {
            figures.stall_delay_p99_us
        }),
        ("CPU stall p99.99 us (the e2e floor)".into(), |figures| {
            figures.stall_delay_p9999_us
        }),
    ];
    let mut text = String::new();
    let _ = writeln!(
        text,
        "  reference  {:<34}{:>10}{:>10}{:>10}",
        "", "before", "after", "mean"
    );
    for (label, pick) in rows {
        let cell = |figures: Option<ReferenceFigures>| {
            figures
                .as_ref()
                .and_then(pick)
                .map_or_else(|| "-".to_string(), |value| format!("{value:.1}"))
        };
        if pick(&mean).is_none() {
            continue;
        }
        let _ = writeln!(
            text,
            "             {label:<34}{:>10}{:>10}{:>10}",
            cell(before),
            cell(after),
            cell(Some(mean))
        );
    }
    // Before and after usually say the same thing (a fallback): say it once.
    let mut notes: Vec<&String> = Vec::new();
    for set in [&references.before, &references.after]
        .into_iter()
        .flatten()
    {
        let disk_notes = set.disk.iter().flat_map(|disk| &disk.notes);
        for note in disk_notes.chain(set.net.iter().flat_map(|net| &net.notes)) {
            if !notes.contains(&note) {
                notes.push(note);
            }
        }
    }
    for note in notes {
        let _ = writeln!(text, "  note: {note}");
    }
    // The stalls differ from one measurement to the next: each says when it was taken.
    for (when, set) in [("before", &references.before), ("after", &references.after)] {
        let stall_notes = set
            .iter()
            .flat_map(|set| &set.stalls)
            .flat_map(|s| &s.notes);
        for note in stall_notes {
            let _ = writeln!(text, "  note: {when}: {note}");
        }
    }
    text
}

/// Picks one figure out of a reference measurement.
type PickFigure = fn(&ReferenceFigures) -> Option<f64>;

/// One line with every option that shapes the load.
fn describe_config(config: &RunConfig) -> String {
    let rate = config
        .rate_mb_per_s
        .map_or_else(|| "unlimited".to_string(), |rate| format!("{rate} MB/s"));
    let stop = match config.stop {
        StopAt::Duration(duration) => format!("{:.1} s", duration.as_secs_f64()),
        StopAt::TotalBytes(bytes) => format_bytes(bytes),
    };
    let target = match &config.target {
        Target::Embedded { shards } => format!("embedded server, {shards} shards"),
        Target::Server(address) => format!("server {address}"),
    };
    let mut line = format!(
        "record {} B, batch {}, linger {} ms, partitions {}, producers {}, consumers {}, groups {}, \
         acks {}, rate {rate}, {stop}, {target}",
        config.record_size_bytes,
        format_size(u64::from(config.batch_bytes)),
        config.linger_ms,
        config.partitions,
        config.producers,
        config.consumers,
        config.groups,
        config.acks.name(),
    );
    if config.cold {
        line.push_str(", cold");
    }
    if config.follow {
        line.push_str(", following live producers");
    }
    if config.workload == Workload::Share {
        let _ = write!(line, ", work {} us/record", config.work_us);
    }
    if matches!(
        config.workload,
        Workload::Produce | Workload::E2e | Workload::Fanout | Workload::Kafka
    ) {
        let _ = write!(line, ", produce with {}", config.produce_with.name());
    }
    line
}

/// `p50 .. p90 .. p99 .. p99.9 .. p99.99 .. max .. (n samples)`.
pub fn describe_latency(summary: &LatencySummary) -> String {
    if summary.count == 0 {
        return "no samples".to_string();
    }
    format!(
        "p50 {}  p90 {}  p99 {}  p99.9 {}  p99.99 {}  max {}  ({} samples)",
        summary.p50,
        summary.p90,
        summary.p99,
        summary.p999,
        summary.p9999,
        summary.max,
        summary.count
    )
}

/// The detailed table of the disk reference.
pub fn render_disk(disk: &DiskReference) -> String {
    let mut text = String::new();
    let _ = writeln!(
        text,
        "disk reference  ({UNITS_NOTE}; {}, {}, ring {})",
        disk.io_mode.describe(),
        if disk.preallocated {
            "preallocated"
        } else {
            "not preallocated"
        },
        disk.ring_setup.describe()
    );
    let blocks = format!(
        "{} blocks x {QUEUE_DEPTH} in flight",
        format_size(BLOCK_BYTES as u64)
    );
    let _ = writeln!(
        text,
        "  sequential write  {blocks:<26}{:>10} in {:.2} s  {:>9.1} MB/s  (incl. {:.2} s final fdatasync)",
        format_bytes(disk.write.bytes),
        disk.write.seconds,
        disk.write_mb_per_s(),
        disk.write.sync_seconds
    );
    let _ = writeln!(
        text,
        "  sequential read   {blocks:<26}{:>10} in {:.2} s  {:>9.1} MB/s",
        format_bytes(disk.read.bytes),
        disk.read.seconds,
        disk.read_mb_per_s()
    );
    let commit = format!(
        "{} write + fdatasync",
        format_size(u64::from(disk.commits.write_bytes))
    );
    let _ = writeln!(
        text,
        "  commits           {commit:<26}{:>10} in {:.2} s  {:>9.1} commits/s",
        disk.commits.count,
        disk.commits.seconds,
        disk.commits_per_s()
    );
    let _ = writeln!(
        text,
        "  commit latency    {}",
        latency_line(&disk.commits.latency)
    );
    for note in &disk.notes {
        let _ = writeln!(text, "  note: {note}");
    }
    text
}

fn latency_line(latency: &LatencyHistogram) -> String {
    describe_latency(&latency.summary())
}

/// The detailed table of the net reference.
pub fn render_net(net: &NetReference) -> String {
    let mut text = String::new();
    let pinning = match net.pinned {
        Some((sender, receiver)) => format!("sender on cpu {sender}, receiver on cpu {receiver}"),
        None => "one core: threads not pinned apart".to_string(),
    };
    let ring = net.ring_setup.map_or("", |setup| setup.describe());
    let _ = writeln!(
        text,
        "net reference  ({UNITS_NOTE}; loopback TCP, 1 MiB sends from a {} MiB span, one in flight, {pinning}, ring {ring})",
        crate::reference::net::SOURCE_SPAN_BYTES >> 20
    );
    let best = net.best_mb_per_s();
    for run in &net.runs {
        let marker = if Some(run.mb_per_s()) == best && net.runs.len() > 1 {
            "  <- faster"
        } else {
            ""
        };
        let _ = writeln!(
            text,
            "  {:<9}{:>10} in {:.2} s  {:>9.1} MB/s{marker}",
            run.mode.name(),
            format_bytes(run.bytes),
            run.seconds,
            run.mb_per_s()
        );
    }
    for note in &net.notes {
        let _ = writeln!(text, "  note: {note}");
    }
    text
}

/// One row of the summary: where the report came from, and the report.
#[derive(Clone, Debug)]
pub struct SummaryRow {
    /// The report's name (its file name without `.json`).
    pub name: String,
    /// The report.
    pub report: Report,
}

/// The summary table of many reports, one row each.
pub fn render_summary(rows: &[SummaryRow]) -> String {
    let mut text = String::new();
    let _ = writeln!(
        text,
        "ringlog-bench summary  ({UNITS_NOTE}; a percentile is '-' with fewer samples than it \
         needs: p99 100, p99.99 10000)"
    );
    let _ = writeln!(
        text,
        "{:<18} {:<8} {:>12} {:>9} {:>8} {:>8} {:>8} {:>9} {:>7}  of",
        "run", "scenario", "records/s", "MB/s", "p50", "p99", "p99.99", "max", "ratio"
    );
    for row in rows {
        let report = &row.report;
        let workload = Workload::from_name(&report.scenario);
        let basis =
            workload.and_then(|workload| RatioBasis::for_workload(workload, report.config.cold));
        let (ratio, of) = match (&report.memory, report.ratio, basis) {
            // Memory per written partition over the target: at most 1 meets it.
            (Some(memory), _, _) => (
                format!(
                    "{:.3}",
                    memory.written_kib_per_partition() / TARGET_KIB_PER_PARTITION
                ),
                format!(
                    "{TARGET_KIB_PER_PARTITION} KiB/partition target: {:.1} KiB written, {:.1} KiB idle",
                    memory.written_kib_per_partition(),
                    memory.idle_kib_per_partition()
                ),
            ),
            (None, Some(ratio), Some(basis)) => (format!("{ratio:.3}"), basis.describe().into()),
            _ => ("-".to_string(), String::new()),
        };
        let latency = &report.latency_us;
        // A quantile q needs 1 / (1 - q) samples; with fewer it is the maximum renamed.
        let cell = |value: u64, samples_needed: u64| {
            if latency.count == 0 || latency.count < samples_needed {
                "-".to_string()
            } else {
                value.to_string()
            }
        };
        let line = format!(
            "{:<18} {:<8} {:>12.0} {:>9.1} {:>8} {:>8} {:>8} {:>9} {:>7}  {of}",
            row.name,
            report.scenario,
            report.records_per_s,
            report.mb_per_s,
            cell(latency.p50, 2),
            cell(latency.p99, 100),
            cell(latency.p9999, 10_000),
            cell(latency.max, 1),
            ratio,
        );
        let _ = writeln!(text, "{}", line.trim_end());
        text.push_str(&summary_front_door_rows(&report.front_doors));
    }
    text.push_str(&crate::target::render_targets(rows));
    text
}

/// The summary rows under a `kafka` report: each direction's native and Kafka figures, the
/// Kafka ones with their ratio to the native ones.
fn summary_front_door_rows(comparisons: &[FrontDoorComparison]) -> String {
    let mut text = String::new();
    for comparison in comparisons {
        let direction = comparison.direction.name();
        let sides = [
            ("native", &comparison.native, None),
            ("kafka", &comparison.kafka, comparison.ratio),
        ];
        for (side, figures, ratio) in sides {
            let (ratio, of) = match ratio {
                Some(ratio) => (format!("{ratio:.3}"), format!("native {direction}")),
                None => ("-".to_string(), String::new()),
            };
            let label = format!("  {direction} {side}");
            let line = format!(
                "{label:<18} {:<8} {:>12.0} {:>9.1} {:>8} {:>8} {:>8} {:>9} {ratio:>7}  {of}",
                "", figures.records_per_s, figures.mb_per_s, "-", "-", "-", "-",
            );
            let _ = writeln!(text, "{}", line.trim_end());
        }
    }
    text
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::options::Acks;
    use crate::report::ReportConfig;

    /// A report of `scenario` (1 KiB records, 10 records/s, p99 7 us) for summary tests.
    pub(crate) fn report(scenario: &str, ratio: Option<f64>) -> Report {
        Report {
            scenario: scenario.into(),
            config: ReportConfig {
                record_size: 1024,
                batch_bytes: 65536,
                partitions: 2,
                producers: 1,
                consumers: 1,
                groups: 1,
                acks: Acks::Durable,
                rate_mb_per_s: None,
                shards: Some(2),
                cold: false,
                follow: false,
                work_us: (scenario == "share").then_some(crate::options::SHARE_WORK_US_DEFAULT),
            },
            records: 10,
            bytes: 10_240,
            seconds: 1.0,
            mb_per_s: 0.01024,
            records_per_s: 10.0,
            latency_us: LatencySummary {
                p50: 5,
                p90: 6,
                p99: 7,
                p999: 8,
                p9999: 9,
                max: 10,
                count: 10,
            },
            reference: ReferenceFigures::default(),
            ratio,
            front_doors: Vec::new(),
            memory: None,
        }
    }

    #[test]
    fn summary_names_units_and_each_run() {
        let rows = vec![
            SummaryRow {
                name: "produce-1k".into(),
                report: report("produce", Some(0.9)),
            },
            SummaryRow {
                name: "disk".into(),
                report: report("disk", None),
            },
        ];
        let text = render_summary(&rows);
        assert!(text.lines().next().unwrap().contains("MB = 10^6 bytes"));
        assert_eq!(text.lines().count(), 6, "{text}");
        assert!(text.contains("0.900  raw disk write"), "{text}");
        assert!(text.lines().nth(3).unwrap().contains("disk"));
        assert!(text.lines().nth(4).unwrap().starts_with("targets"));
        assert!(text.lines().nth(5).unwrap().ends_with(" met"), "{text}");
    }

    #[test]
    fn summary_leaves_out_percentiles_the_samples_cannot_support() {
        // 3,504 fetch latencies (a 3 s hot consume): p99.99 would be the maximum, not a
        // percentile, and p99 of 50 samples the same.
        let mut few = report("consume", Some(0.8));
        few.latency_us = LatencySummary {
            p50: 714,
            p90: 1324,
            p99: 4049,
            p999: 8187,
            p9999: 9791,
            max: 9791,
            count: 3504,
        };
        let mut fewer = few.clone();
        fewer.latency_us.count = 50;
        let mut many = few.clone();
        many.latency_us.count = 1_000_000;
        let rows = [
            SummaryRow {
                name: "few".into(),
                report: few,
            },
            SummaryRow {
                name: "fewer".into(),
                report: fewer,
            },
            SummaryRow {
                name: "many".into(),
                report: many,
            },
        ];
        let text = render_summary(&rows);
        let line = |name: &str| {
            text.lines()
                .find(|line| line.starts_with(&format!("{name} ")))
                .unwrap_or_else(|| panic!("no {name} row in {text}"))
                .split_whitespace()
                .collect::<Vec<_>>()
        };
        let few = line("few");
        assert_eq!(&few[4..8], ["714", "4049", "-", "9791"], "{text}");
        let fewer = line("fewer");
        assert_eq!(&fewer[4..8], ["714", "-", "-", "9791"], "{text}");
        let many = line("many");
        assert_eq!(&many[4..8], ["714", "4049", "9791", "9791"], "{text}");
    }

    #[test]
    fn summary_shows_memory_per_partition_against_the_target() {
        use crate::scenario::partitions::MemoryFigures;
        let mut partitions = report("partitions", None);
        partitions.memory = Some(MemoryFigures {
            partitions: 1000,
            server_bytes: 1 << 20,
            idle_bytes: (1 << 20) + 1000 * 4 * 1024,
            written_bytes: (1 << 20) + 1000 * 32 * 1024,
            create_seconds: 0.5,
        });
        let rows = [SummaryRow {
            name: "60-partitions-10k".into(),
            report: partitions,
        }];
        let text = render_summary(&rows);
        assert!(
            text.contains("0.500  64 KiB/partition target: 32.0 KiB written, 4.0 KiB idle"),
            "{text}"
        );
    }

    #[test]
    fn run_table_shows_result_ratio_and_references() {
        use crate::options::{Cli, Invocation};
        use crate::reference::net::{NetReference, NetRun, SendMode};
        use crate::reference::ReferenceSet;
        use crate::throughput::ThroughputTimeline;
        use clap::Parser;

        let config = match Cli::try_parse_from(["ringlog-bench", "consume"])
            .unwrap()
            .command
            .into_invocation()
        {
            Invocation::Run(workload, options) => options.resolve(workload, 2).unwrap(),
            Invocation::Summary(_) => unreachable!(),
        };
        let net = |mb: u64| ReferenceSet {
            disk: None,
            net: Some(NetReference {
                runs: vec![NetRun {
                    mode: SendMode::Send,
                    bytes: mb * 1_000_000,
                    seconds: 1.0,
                    timeline: ThroughputTimeline::default(),
                }],
                pinned: Some((0, 1)),
                ring_setup: None,
                notes: vec!["a note".into()],
            }),
            stalls: None,
        };
        let references = References {
            before: Some(net(4000)),
            after: Some(net(6000)),
        };
        let text = render_run(
            &config,
            &report("consume", Some(0.25)),
            &references,
            &["slow".into()],
        );
        assert!(
            text.starts_with("ringlog-bench consume  (MB = 10^6 bytes"),
            "{text}"
        );
        assert!(text.contains("ratio 0.250 of raw loopback TCP"), "{text}");
        assert!(text.contains("loopback TCP MB/s"), "{text}");
        assert!(text.contains("4000.0    6000.0    5000.0"), "{text}");
        assert!(
            !text.contains("disk write MB/s"),
            "unmeasured rows are left out: {text}"
        );
        assert_eq!(
            text.matches("note: a note").count(),
            1,
            "the same note once: {text}"
        );
        assert!(text.contains("note: slow"));
    }

    #[test]
    fn kafka_rows_show_both_front_doors_with_their_ratio() {
        use crate::front_doors::{Direction, LegFigures};
        let mut kafka = report("kafka", Some(0.5));
        kafka.front_doors = vec![
            FrontDoorComparison::new(
                Direction::Produce,
                LegFigures::new(2_000_000, 200_000_000, 1.0),
                LegFigures::new(2_000_000, 200_000_000, 2.0),
            ),
            FrontDoorComparison::new(
                Direction::Consume,
                LegFigures::new(2_000_000, 200_000_000, 0.5),
                LegFigures::new(2_000_000, 200_000_000, 1.0),
            ),
        ];
        let text = render_summary(&[SummaryRow {
            name: "80-kafka".into(),
            report: kafka.clone(),
        }]);
        assert_eq!(text.lines().count(), 7, "{text}");
        assert!(text.contains("0.500  native produce"), "{text}");
        let native_produce = text.lines().nth(3).unwrap();
        assert!(native_produce.starts_with("  produce native"), "{text}");
        assert!(native_produce.contains("2000000     200.0"), "{text}");
        let kafka_consume = text.lines().nth(6).unwrap();
        assert!(kafka_consume.starts_with("  consume kafka"), "{text}");
        assert!(kafka_consume.ends_with("0.500  native consume"), "{text}");

        let run = render_front_doors(&kafka.front_doors);
        assert_eq!(run.lines().count(), 4, "{run}");
        assert!(
            run.lines().next().unwrap().starts_with("  produce  native"),
            "{run}"
        );
        assert!(
            run.contains("1000000 records/s   ratio 0.500 of native"),
            "{run}"
        );
    }

    #[test]
    fn latency_line_lists_every_percentile() {
        let line = describe_latency(&report("x", None).latency_us);
        assert_eq!(
            line,
            "p50 5  p90 6  p99 7  p99.9 8  p99.99 9  max 10  (10 samples)"
        );
        assert_eq!(describe_latency(&LatencySummary::default()), "no samples");
    }
}
