//! The performance targets of issue 7, checked against reports: `summary` ends with one line
//! per run that has a target, saying whether the run met it.

use std::fmt::Write as _;

use crate::options::Acks;
use crate::report::Report;
use crate::scenario::partitions::TARGET_KIB_PER_PARTITION;
use crate::table::SummaryRow;

/// Produce of records this large or larger is held to the disk ratio; smaller ones to a rate.
const LARGE_RECORD_BYTES: u32 = 1024;
/// The record size the records-per-second target is stated for: smaller records are more
/// records per second for the same bytes, so they cannot show it met.
const SMALL_RECORD_BYTES: u32 = 100;
/// The simulated work per record (microseconds) the share scaling target is stated for.
const SHARE_WORK_US: u64 = 1_000;
/// The producer rate (MB/s) the e2e latency target is stated for: a lighter load cannot show
/// it met.
const E2E_RATE_MB_PER_S: f64 = 100.0;

/// What one run is held to.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Target {
    /// Throughput at least this fraction of the run's reference.
    RatioAtLeast(f64),
    /// At least this many records per second.
    RecordsPerSecondAtLeast(f64),
    /// Latency percentiles at most these, in microseconds.
    LatencyAtMost {
        /// 99th percentile bound.
        p99_us: u64,
        /// 99.99th percentile bound.
        p9999_us: u64,
    },
    /// Records per second at least this many times the one-consumer share run's.
    ShareScalingAtLeast(f64),
    /// Resident memory per written partition at most this many KiB.
    KibPerPartitionAtMost(f64),
}

impl Target {
    /// The target for `report`'s scenario and settings, if issue 7 states one.
    pub fn of(report: &Report) -> Option<Target> {
        let config = &report.config;
        match report.scenario.as_str() {
            "produce" if config.record_size >= LARGE_RECORD_BYTES => {
                Some(Target::RatioAtLeast(0.85))
            }
            "produce" => Some(Target::RecordsPerSecondAtLeast(2.5e6)),
            "consume" if config.cold => Some(Target::RatioAtLeast(0.7)),
            "consume" => Some(Target::RatioAtLeast(0.8)),
            "e2e" => Some(Target::LatencyAtMost {
                p99_us: 1_000,
                p9999_us: 5_000,
            }),
            "fanout" => Some(Target::RatioAtLeast(0.8)),
            "share" if config.consumers >= 16 => Some(Target::ShareScalingAtLeast(12.0)),
            "partitions" => Some(Target::KibPerPartitionAtMost(TARGET_KIB_PER_PARTITION)),
            _ => None,
        }
    }

    /// Why `report` ran at settings lighter than those its target is stated for (acks other
    /// than durable, e2e below 100 MB/s, produce of records under 100 bytes, share with more
    /// than one group or other work than 1 ms per record), if it did: its figure cannot show the target met.
    fn lighter_settings(report: &Report) -> Option<String> {
        let config = &report.config;
        let scenario = report.scenario.as_str();
        if matches!(scenario, "produce" | "e2e") && config.acks != Acks::Durable {
            return Some(format!(
                "acks {}, the target is for durable acks",
                config.acks.name()
            ));
        }
        if let Some(rate) = config.rate_mb_per_s {
            if scenario == "e2e" && rate < E2E_RATE_MB_PER_S {
                return Some(format!(
                    "{rate} MB/s, the target is for {E2E_RATE_MB_PER_S} MB/s"
                ));
            }
        }
        if let Some(work_us) = config.work_us.filter(|&work| work != SHARE_WORK_US) {
            return Some(format!(
                "{work_us} us of work per record, the target is for {SHARE_WORK_US}"
            ));
        }
        if scenario == "share" && config.groups != 1 {
            return Some(format!(
                "{} share groups, each reading every record; the target is for one",
                config.groups
            ));
        }
        if scenario == "produce" && config.record_size < SMALL_RECORD_BYTES {
            return Some(format!(
                "{}-byte records, the target is for {SMALL_RECORD_BYTES}",
                config.record_size
            ));
        }
        None
    }

    fn describe(self) -> String {
        match self {
            Target::RatioAtLeast(ratio) => format!("ratio >= {ratio}"),
            Target::RecordsPerSecondAtLeast(rate) => format!("records/s >= {rate:.0}"),
            Target::LatencyAtMost { p99_us, p9999_us } => {
                format!("p99 <= {p99_us} us, p99.99 <= {p9999_us} us")
            }
            Target::ShareScalingAtLeast(factor) => format!(">= {factor}x one consumer"),
            Target::KibPerPartitionAtMost(kib) => format!("<= {kib} KiB per partition"),
        }
    }

    /// The measured figure and whether it meets the target; `None` when the figure is missing
    /// (no reference, no one-consumer share run in the summary).
    fn judge(self, report: &Report, share_one_consumer: Option<f64>) -> Option<(String, bool)> {
        match self {
            Target::RatioAtLeast(target) => {
                let ratio = report.ratio?;
                Some((format!("{ratio:.3}"), ratio >= target))
            }
            Target::RecordsPerSecondAtLeast(target) => {
                let rate = report.records_per_s;
                Some((format!("{rate:.0}"), rate >= target))
            }
            Target::LatencyAtMost { p99_us, p9999_us } => {
                let latency = &report.latency_us;
                if latency.count == 0 {
                    return None;
                }
                Some((
                    format!("p99 {} us, p99.99 {} us", latency.p99, latency.p9999),
                    latency.p99 <= p99_us && latency.p9999 <= p9999_us,
                ))
            }
            Target::ShareScalingAtLeast(factor) => {
                let one = share_one_consumer.filter(|rate| *rate > 0.0)?;
                let scaling = report.records_per_s / one;
                Some((format!("{scaling:.1}x"), scaling >= factor))
            }
            Target::KibPerPartitionAtMost(kib) => {
                let written = report.memory.as_ref()?.written_kib_per_partition();
                Some((format!("{written:.1} KiB"), written <= kib))
            }
        }
    }
}

/// The "targets" block of the summary: one line per run with a target.
pub fn render_targets(rows: &[SummaryRow]) -> String {
    let share_one_consumer = rows
        .iter()
        .find(|row| {
            let config = &row.report.config;
            row.report.scenario == "share"
                && config.consumers == 1
                && config.groups == 1
                && config.work_us.is_none_or(|work| work == SHARE_WORK_US)
        })
        .map(|row| row.report.records_per_s);
    let mut text = String::new();
    for row in rows {
        let Some(target) = Target::of(&row.report) else {
            continue;
        };
        let (figure, verdict) = match Target::lighter_settings(&row.report) {
            Some(why) => ("-".to_string(), format!("not judged: {why}")),
            None => match target.judge(&row.report, share_one_consumer) {
                Some((figure, true)) => (figure, "met".to_string()),
                Some((figure, false)) => (figure, "MISSED".to_string()),
                None => ("-".to_string(), "not measured".to_string()),
            },
        };
        if text.is_empty() {
            let _ = writeln!(text, "targets (issue 7):");
        }
        let _ = writeln!(
            text,
            "  {:<18} {:<40} {:<28} {verdict}",
            row.name,
            target.describe(),
            figure
        );
        if let Some(floor) = latency_floor(&row.report) {
            let _ = writeln!(text, "  {:<18} {floor}", "");
        }
    }
    text
}

/// For a latency target, what this machine's CPU stalls alone cost at the same percentiles
/// (the stall reference of the run), so a miss can be told from a machine that allows no hit.
fn latency_floor(report: &Report) -> Option<String> {
    if !matches!(Target::of(report), Some(Target::LatencyAtMost { .. })) {
        return None;
    }
    let reference = &report.reference;
    let p99 = reference.stall_delay_p99_us?;
    let p9999 = reference.stall_delay_p9999_us?;
    Some(format!(
        "(this machine's CPU stalls alone: p99 {p99:.0} us, p99.99 {p9999:.0} us)"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::tests::report;

    fn row(name: &str, report: Report) -> SummaryRow {
        SummaryRow {
            name: name.into(),
            report,
        }
    }

    fn verdict_of(text: &str, name: &str) -> String {
        text.lines()
            .find(|line| line.trim_start().starts_with(name))
            .unwrap_or_else(|| panic!("no line for {name} in {text}"))
            .to_string()
    }

    #[test]
    fn each_row_is_held_to_its_target() {
        let mut small = report("produce", None);
        small.config.record_size = 100;
        small.records_per_s = 2.6e6;
        let mut cold = report("consume", Some(0.69));
        cold.config.cold = true;
        let mut e2e = report("e2e", None);
        e2e.latency_us.p99 = 900;
        e2e.latency_us.p9999 = 6_000;
        e2e.reference.stall_delay_p99_us = Some(12.0);
        e2e.reference.stall_delay_p9999_us = Some(3_456.0);
        let mut one = report("share", None);
        one.records_per_s = 1_000.0;
        let mut sixteen = report("share", None);
        sixteen.config.consumers = 16;
        sixteen.records_per_s = 12_500.0;
        let rows = [
            row("produce-1k", report("produce", Some(0.86))),
            row("produce-100b", small),
            row("consume-hot", report("consume", Some(0.79))),
            row("consume-cold", cold),
            row("e2e", e2e),
            row("share-1", one),
            row("share-16", sixteen),
            row("disk", report("disk", None)),
        ];
        let text = render_targets(&rows);
        assert!(verdict_of(&text, "produce-1k").ends_with(" met"), "{text}");
        assert!(
            verdict_of(&text, "produce-100b").ends_with(" met"),
            "{text}"
        );
        assert!(
            verdict_of(&text, "consume-hot").ends_with("MISSED"),
            "{text}"
        );
        assert!(
            verdict_of(&text, "consume-cold").ends_with("MISSED"),
            "{text}"
        );
        assert!(verdict_of(&text, "e2e").ends_with("MISSED"), "{text}");
        assert!(
            text.contains("CPU stalls alone: p99 12 us, p99.99 3456 us"),
            "{text}"
        );
        assert!(verdict_of(&text, "share-16").contains("12.5x"), "{text}");
        assert!(verdict_of(&text, "share-16").ends_with(" met"), "{text}");
        assert!(
            !text.contains("share-1 "),
            "one consumer has no target: {text}"
        );
        assert!(!text.contains("disk"), "{text}");
    }

    #[test]
    fn runs_at_other_settings_than_the_target_are_not_judged() {
        // Latency at 1 MB/s says nothing about the target at 100 MB/s.
        let mut slow_e2e = report("e2e", None);
        slow_e2e.config.rate_mb_per_s = Some(1.0);
        slow_e2e.latency_us.p99 = 100;
        slow_e2e.latency_us.p9999 = 200;
        // Nor does a produce without durable acks, or of records smaller than 100 bytes.
        let mut leader_acks = report("produce", Some(0.95));
        leader_acks.config.acks = crate::options::Acks::Leader;
        let mut tiny = report("produce", None);
        tiny.config.record_size = 8;
        tiny.records_per_s = 3.0e6;
        let mut e2e = report("e2e", None);
        e2e.config.rate_mb_per_s = Some(100.0);
        let rows = [
            row("e2e-1mb", slow_e2e),
            row("produce-leader", leader_acks),
            row("produce-8b", tiny),
            row("e2e-100mb", e2e),
        ];
        let text = render_targets(&rows);
        for name in ["e2e-1mb", "produce-leader", "produce-8b"] {
            let line = verdict_of(&text, name);
            assert!(!line.ends_with(" met"), "{line}");
            assert!(line.contains("not judged"), "{line}");
        }
        assert!(verdict_of(&text, "e2e-100mb").ends_with(" met"), "{text}");
    }

    #[test]
    fn share_scaling_is_one_group_against_one_group() {
        // Every share group reads every record: two groups of 16 consumers take twice the
        // records of one group, which is not 16 consumers scaling.
        let mut one = report("share", None);
        one.records_per_s = 1_000.0;
        let mut two_groups = report("share", None);
        two_groups.config.consumers = 16;
        two_groups.config.groups = 2;
        two_groups.records_per_s = 20_000.0;
        let rows = [row("share-1", one), row("share-16x2", two_groups)];
        let text = render_targets(&rows);
        let line = verdict_of(&text, "share-16x2");
        assert!(!line.ends_with(" met"), "{line}");
        assert!(line.contains("not judged"), "{line}");
        // Nor is a baseline of two groups of one consumer.
        let mut one_of_two = report("share", None);
        one_of_two.config.groups = 2;
        one_of_two.records_per_s = 2_000.0;
        let mut sixteen = report("share", None);
        sixteen.config.consumers = 16;
        sixteen.records_per_s = 12_500.0;
        let rows = [row("share-1x2", one_of_two), row("share-16", sixteen)];
        let text = render_targets(&rows);
        assert!(
            verdict_of(&text, "share-16").ends_with("not measured"),
            "{text}"
        );
    }

    #[test]
    fn share_scaling_is_judged_at_the_target_work_against_the_same_work() {
        // Longer work per record hides the per-record overhead 16 consumers share: 2 ms of
        // work is not the target's 1 ms.
        let mut heavy = report("share", None);
        heavy.config.consumers = 16;
        heavy.config.work_us = Some(2_000);
        heavy.records_per_s = 7_000.0;
        let mut one = report("share", None);
        one.records_per_s = 500.0;
        let text = render_targets(&[row("share-1", one.clone()), row("share-16-2ms", heavy)]);
        let line = verdict_of(&text, "share-16-2ms");
        assert!(line.contains("not judged"), "{line}");
        // Nor does a one-consumer run at other work serve as the baseline.
        one.config.work_us = Some(100);
        let mut sixteen = report("share", None);
        sixteen.config.consumers = 16;
        sixteen.records_per_s = 14_000.0;
        let text = render_targets(&[row("share-1-100us", one), row("share-16", sixteen)]);
        assert!(
            verdict_of(&text, "share-16").ends_with("not measured"),
            "{text}"
        );
    }

    #[test]
    fn a_missing_figure_is_not_measured() {
        let rows = [row("fanout", report("fanout", None))];
        let text = render_targets(&rows);
        assert!(
            verdict_of(&text, "fanout").ends_with("not measured"),
            "{text}"
        );
    }
}
