//! The `append` scenario: engine only (no network): batches appended straight into partition logs.
//!
//! Not implemented yet: it needs the engine and the network client.

use super::{Scenario, ScenarioContext, ScenarioError, ScenarioResult};
use crate::workload::Workload;

/// The `append` scenario.
#[derive(Debug, Default)]
pub struct Append {}

impl Scenario for Append {
    fn prepare(&mut self, _context: &ScenarioContext<'_>) -> Result<(), ScenarioError> {
        Err(ScenarioError::NotImplemented(Workload::Append))
    }

    fn run(&mut self, _context: &ScenarioContext<'_>) -> Result<ScenarioResult, ScenarioError> {
        Err(ScenarioError::NotImplemented(Workload::Append))
    }
}
