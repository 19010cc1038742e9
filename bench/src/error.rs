//! Every way a `ringlog-bench` invocation can fail, and the exit status each gives.

use crate::options::OptionsError;
use crate::reference::ReferenceError;
use crate::report::ReportError;
use crate::scenario::ScenarioError;

/// Exit status for bad input found before any load (and for scenarios not implemented yet).
pub const EXIT_USAGE: i32 = 2;
/// Exit status for a run that started and failed.
pub const EXIT_FAILURE: i32 = 1;

/// A failed invocation. Its message is one line.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// Impossible options, too little disk, a server that is not there.
    #[error("{0}")]
    Options(#[from] OptionsError),
    /// The scenario failed (or does not exist yet).
    #[error("{0}")]
    Scenario(#[from] ScenarioError),
    /// A reference measurement failed.
    #[error("reference measurement failed: {0}")]
    Reference(#[from] ReferenceError),
    /// The JSON report could not be written or a summary could not be read.
    #[error("{0}")]
    Report(#[from] ReportError),
    /// `summary` found no report to show.
    #[error("no ringlog-bench reports (*.json) in {0}")]
    NoReports(String),
    /// Anything else that touches the file system (temp dir, plot file).
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

impl BenchError {
    /// The process exit status for this error.
    pub fn exit_code(&self) -> i32 {
        match self {
            BenchError::Options(_)
            | BenchError::Scenario(ScenarioError::NotImplemented(_))
            | BenchError::Scenario(ScenarioError::Setup(_))
            | BenchError::Scenario(ScenarioError::Unavailable(_)) => EXIT_USAGE,
            _ => EXIT_FAILURE,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workload::Workload;

    #[test]
    fn usage_errors_exit_2_and_failures_1() {
        assert_eq!(BenchError::from(OptionsError("x".into())).exit_code(), 2);
        let missing = BenchError::from(ScenarioError::NotImplemented(Workload::Produce));
        assert_eq!(missing.exit_code(), 2);
        assert_eq!(missing.to_string(), "produce is not implemented yet");
        assert_eq!(
            BenchError::from(ScenarioError::Failed("x".into())).exit_code(),
            1
        );
    }
}
