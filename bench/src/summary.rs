//! `ringlog-bench summary DIR`: one table from every JSON report in a directory.

use std::fs;
use std::path::{Path, PathBuf};

use crate::report::{read_json, ReportError};
use crate::table::SummaryRow;

/// What reading a results directory gave: the rows, and the files that were not reports.
#[derive(Debug, Default)]
pub struct Summary {
    /// One row per report, in file name order.
    pub rows: Vec<SummaryRow>,
    /// Files ending in `.json` that could not be read as reports.
    pub skipped: Vec<ReportError>,
}

/// Reads every `*.json` file directly in `dir` (sorted by name).
pub fn read_dir(dir: &Path) -> Result<Summary, ReportError> {
    let entries = fs::read_dir(dir).map_err(|source| ReportError::Io {
        path: dir.display().to_string(),
        source,
    })?;
    let mut paths: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| {
            path.extension()
                .is_some_and(|extension| extension == "json")
                && path.is_file()
        })
        .collect();
    paths.sort();
    let mut summary = Summary::default();
    for path in paths {
        let stem = path
            .file_stem()
            .map_or_else(String::new, |stem| stem.to_string_lossy().into_owned());
        match read_json(&path) {
            Ok(reports) => {
                let several = reports.len() > 1;
                for (index, report) in reports.into_iter().enumerate() {
                    let name = if several {
                        format!("{stem}#{}", index + 1)
                    } else {
                        stem.clone()
                    };
                    summary.rows.push(SummaryRow { name, report });
                }
            }
            Err(error) => summary.skipped.push(error),
        }
    }
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::latency::LatencySummary;
    use crate::options::Acks;
    use crate::reference::ReferenceFigures;
    use crate::report::{write_json, Report, ReportConfig};

    fn report(scenario: &str) -> Report {
        Report {
            scenario: scenario.into(),
            config: ReportConfig {
                record_size: 100,
                batch_bytes: 4096,
                partitions: 1,
                producers: 1,
                consumers: 1,
                groups: 1,
                acks: Acks::Leader,
                rate_mb_per_s: Some(5.0),
                shards: None,
                cold: false,
                follow: false,
                work_us: None,
            },
            records: 1,
            bytes: 100,
            seconds: 1.0,
            mb_per_s: 0.0001,
            records_per_s: 1.0,
            latency_us: LatencySummary::default(),
            reference: ReferenceFigures::default(),
            ratio: None,
            front_doors: Vec::new(),
            memory: None,
        }
    }

    #[test]
    fn reads_objects_and_arrays_in_name_order_and_skips_junk() {
        let dir = tempfile::tempdir().unwrap();
        write_json(&dir.path().join("b.json"), &[report("produce")]).unwrap();
        write_json(&dir.path().join("a.json"), &[report("disk"), report("net")]).unwrap();
        fs::write(dir.path().join("c.json"), "not json").unwrap();
        fs::write(dir.path().join("plot.svg"), "<svg/>").unwrap();
        let summary = read_dir(dir.path()).unwrap();
        let names: Vec<&str> = summary.rows.iter().map(|row| row.name.as_str()).collect();
        assert_eq!(names, ["a#1", "a#2", "b"]);
        assert_eq!(summary.skipped.len(), 1);
        assert!(read_dir(&dir.path().join("missing")).is_err());
    }
}
