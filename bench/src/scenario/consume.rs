//! The `consume` scenario: consumers read a topic the scenario first fills, from memory or (--cold) from disk.
//!
//! Not implemented yet: it needs the engine and the network client.

use super::{Scenario, ScenarioContext, ScenarioError, ScenarioResult};
use crate::workload::Workload;

/// The `consume` scenario.
#[derive(Debug, Default)]
pub struct Consume {}

impl Scenario for Consume {
    fn prepare(&mut self, _context: &ScenarioContext<'_>) -> Result<(), ScenarioError> {
        Err(ScenarioError::NotImplemented(Workload::Consume))
    }

    fn run(&mut self, _context: &ScenarioContext<'_>) -> Result<ScenarioResult, ScenarioError> {
        Err(ScenarioError::NotImplemented(Workload::Consume))
    }
}
