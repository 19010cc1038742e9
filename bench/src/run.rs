//! How one invocation is carried out: check the options and the machine, then either measure a
//! reference (`disk`, `net`) or run a scenario between two reference measurements, and report.

use std::path::Path;

use crate::cpu;
use crate::error::BenchError;
use crate::options::{Options, RunConfig, StopAt, SummaryArgs};
use crate::plot::{self, PlotInput};
use crate::preflight;
use crate::progress::{Progress, ProgressGoal};
use crate::reference::{self, ReferenceSet, ReferenceWhen, References};
use crate::report::{self, RatioBasis, Report};
use crate::scenario::{self, Scenario, ScenarioContext, ScenarioError, ScenarioResult};
use crate::summary;
use crate::table;
use crate::units::format_size;
use crate::workload::Workload;

/// Prefix of the temporary data directory (removed when the run ends).
const DATA_DIR_PREFIX: &str = ".ringlog-bench-";
/// Subdirectory of the data directory given to a scenario's embedded server.
const SERVER_DIR_NAME: &str = "server";

/// Runs `workload` with `options`: checks, measures, prints the table, writes JSON and SVG.
pub fn run_workload(workload: Workload, options: &Options) -> Result<(), BenchError> {
    let allowed_cpus = u32::try_from(cpu::allowed_cpu_count()).unwrap_or(u32::MAX);
    let config = options.resolve(workload, allowed_cpus)?;
    let data_dir = tempfile::Builder::new()
        .prefix(DATA_DIR_PREFIX)
        .tempdir_in(&config.data_parent_dir)
        .map_err(|source| BenchError::Io {
            context: format!(
                "create a temporary directory under {}",
                config.data_parent_dir.display()
            ),
            source,
        })?;
    preflight::check(&config, data_dir.path())?;
    if workload.is_reference() {
        run_reference(&config, data_dir.path())
    } else {
        run_scenario(&config, data_dir.path())
    }
    // `data_dir` is removed here, on success and on error alike.
}

/// Measures the `disk` or `net` reference once and reports it.
fn run_reference(config: &RunConfig, data_dir: &Path) -> Result<(), BenchError> {
    let set = reference::measure(&config.references, data_dir, config.batch_bytes)?;
    let result = reference_result(&set);
    let report = Report::new(config, &result, set.figures());
    if let Some(disk) = &set.disk {
        print!("{}", table::render_disk(disk));
    }
    if let Some(net) = &set.net {
        print!("{}", table::render_net(net));
    }
    write_outputs(config, &report, &result)
}

/// A reference's headline measurement in the shape of a scenario result, for the JSON and
/// the plot: disk = sequential write with the commit latencies, net = the faster run.
fn reference_result(set: &ReferenceSet) -> ScenarioResult {
    if let Some(disk) = &set.disk {
        return ScenarioResult {
            records: 0,
            bytes: disk.write.bytes,
            seconds: disk.write.seconds,
            latency: disk.commits.latency.clone(),
            throughput: disk.write.timeline.clone(),
            notes: disk.notes.clone(),
            front_doors: Vec::new(),
            memory: None,
        };
    }
    match set.net.as_ref().and_then(|net| net.best()) {
        Some(run) => ScenarioResult {
            bytes: run.bytes,
            seconds: run.seconds,
            throughput: run.timeline.clone(),
            ..ScenarioResult::default()
        },
        None => ScenarioResult::default(),
    }
}

/// Runs the scenario of `config.workload` (see [`run_scenario_with`]).
fn run_scenario(config: &RunConfig, data_dir: &Path) -> Result<(), BenchError> {
    let Some(scenario) = scenario::for_workload(config.workload) else {
        return Err(ScenarioError::Failed(format!("{} is not a scenario", config.workload)).into());
    };
    run_scenario_with(config, data_dir, scenario).map(drop)
}

/// Prepares `scenario`, measures the references, runs the load, measures the references
/// again (unless told not to), prints the table, writes JSON and SVG, and returns the report.
///
/// `data_dir` is the run's (empty) temporary directory; the scenario gets a `server`
/// subdirectory of it, the references use files of their own beside that.
pub fn run_scenario_with(
    config: &RunConfig,
    data_dir: &Path,
    mut scenario: Box<dyn Scenario>,
) -> Result<Report, BenchError> {
    let server_dir = data_dir.join(SERVER_DIR_NAME);
    std::fs::create_dir(&server_dir).map_err(|source| BenchError::Io {
        context: format!("create {}", server_dir.display()),
        source,
    })?;
    let goal = match config.stop {
        StopAt::Duration(duration) => ProgressGoal::Duration(duration),
        StopAt::TotalBytes(bytes) => ProgressGoal::Bytes(bytes),
    };
    let mut progress = Progress::new(config.workload.name(), goal);
    let context = ScenarioContext {
        config,
        data_dir: &server_dir,
        progress: progress.counter(),
    };
    scenario.prepare(&context)?;
    let when = config.references.when;
    let mut references = References::default();
    if when != ReferenceWhen::None {
        references.before = Some(reference::measure(
            &config.references,
            data_dir,
            config.batch_bytes,
        )?);
    }
    progress.begin();
    let outcome = scenario.run(&context);
    progress.finish();
    // Stop the embedded server before measuring the machine again.
    drop(scenario);
    let result = outcome?;
    if when == ReferenceWhen::Both {
        references.after = Some(reference::measure(
            &config.references,
            data_dir,
            config.batch_bytes,
        )?);
    }
    let report = Report::new(config, &result, references.figures());
    print!(
        "{}",
        table::render_run(config, &report, &references, &result.notes)
    );
    write_outputs(config, &report, &result)?;
    Ok(report)
}

/// Writes `--json` and `--plot` if asked for.
fn write_outputs(
    config: &RunConfig,
    report: &Report,
    result: &ScenarioResult,
) -> Result<(), BenchError> {
    if let Some(path) = &config.json_path {
        report::write_json(path, std::slice::from_ref(report))?;
        println!("  json: {}", path.display());
    }
    if let Some(path) = &config.plot_path {
        let title = plot_title(config, report);
        let reference = RatioBasis::for_workload(config.workload, config.cold).and_then(|basis| {
            basis
                .figure(&report.reference)
                .map(|figure| (basis.describe(), figure))
        });
        let input = PlotInput {
            title: &title,
            latency: &result.latency,
            throughput: &result.throughput,
            seconds: result.seconds,
            reference,
        };
        plot::write_svg(path, &input).map_err(|source| BenchError::Io {
            context: format!("write {}", path.display()),
            source,
        })?;
        println!("  plot: {}", path.display());
    }
    Ok(())
}

/// The heading of the plot: what was measured, and the headline figure.
fn plot_title(config: &RunConfig, report: &Report) -> String {
    match config.workload {
        Workload::Disk => format!(
            "disk reference: O_DIRECT sequential write {:.1} MB/s; latency of {} write + fdatasync commits",
            report.mb_per_s,
            format_size(u64::from(config.batch_bytes))
        ),
        Workload::Net => format!(
            "net reference: loopback TCP through io_uring {:.1} MB/s",
            report.mb_per_s
        ),
        scenario => format!(
            "ringlog-bench {scenario}: {} B records, acks {}, {:.1} MB/s (MB = 10^6 bytes)",
            config.record_size_bytes,
            config.acks.name(),
            report.mb_per_s
        ),
    }
}

/// Prints the summary table of the reports in `args.dir`.
pub fn run_summary(args: &SummaryArgs) -> Result<(), BenchError> {
    let summary = summary::read_dir(&args.dir)?;
    for skipped in &summary.skipped {
        eprintln!("ringlog-bench: skipped {skipped}");
    }
    if summary.rows.is_empty() {
        return Err(BenchError::NoReports(args.dir.display().to_string()));
    }
    print!("{}", table::render_summary(&summary.rows));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::latency::LatencyHistogram;
    use crate::throughput::ThroughputTimeline;
    use std::time::Duration;

    /// A scenario that "moves" 1000 records of 1000 bytes in half a second.
    #[derive(Default)]
    struct Fake {
        prepared: bool,
    }

    impl Scenario for Fake {
        fn prepare(&mut self, context: &ScenarioContext<'_>) -> Result<(), ScenarioError> {
            assert!(context.data_dir.is_dir());
            self.prepared = true;
            Ok(())
        }

        fn run(&mut self, context: &ScenarioContext<'_>) -> Result<ScenarioResult, ScenarioError> {
            assert!(self.prepared, "run before prepare");
            let mut latency = LatencyHistogram::new();
            let mut throughput = ThroughputTimeline::default();
            for index in 0..1_000u64 {
                latency.record_us(100 + index);
                throughput.record(Duration::from_micros(index * 500), 1_000);
                context.progress.add_bytes(1_000);
            }
            Ok(ScenarioResult {
                records: 1_000,
                bytes: 1_000_000,
                seconds: 0.5,
                latency,
                throughput,
                notes: vec!["fake".into()],
                front_doors: Vec::new(),
                memory: None,
            })
        }
    }

    fn config(args: &[&str]) -> RunConfig {
        crate::options::parse_for_test(args, 2).unwrap()
    }

    #[test]
    fn a_scenario_result_becomes_report_json_and_plot() {
        let out = tempfile::tempdir().unwrap();
        let json = out.path().join("produce.json");
        let svg = out.path().join("produce.svg");
        let config = config(&[
            "produce",
            "--references",
            "none",
            "--json",
            json.to_str().unwrap(),
            "--plot",
            svg.to_str().unwrap(),
        ]);
        let data = tempfile::tempdir().unwrap();
        let report = run_scenario_with(&config, data.path(), Box::new(Fake::default())).unwrap();
        assert_eq!(report.mb_per_s, 2.0);
        assert_eq!(report.records_per_s, 2_000.0);
        assert_eq!(report.latency_us.count, 1_000);
        assert_eq!(report.ratio, None, "no references measured");
        assert_eq!(report::read_json(&json).unwrap(), vec![report]);
        assert!(std::fs::read_to_string(&svg).unwrap().contains("<polyline"));
    }

    /// A scenario this build cannot run.
    struct Unavailable;

    impl Scenario for Unavailable {
        fn prepare(&mut self, _context: &ScenarioContext<'_>) -> Result<(), ScenarioError> {
            Err(ScenarioError::Unavailable(
                "fake is not available in this build".into(),
            ))
        }

        fn run(&mut self, _context: &ScenarioContext<'_>) -> Result<ScenarioResult, ScenarioError> {
            unreachable!("run after a failed prepare")
        }
    }

    #[test]
    fn unavailable_scenarios_fail_before_any_reference() {
        let config = config(&["share"]);
        let data = tempfile::tempdir().unwrap();
        let started = std::time::Instant::now();
        let error = run_scenario_with(&config, data.path(), Box::new(Unavailable))
            .map(drop)
            .unwrap_err();
        assert_eq!(error.to_string(), "fake is not available in this build");
        assert_eq!(error.exit_code(), 2);
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "references were measured"
        );
    }
}
