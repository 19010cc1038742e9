//! The `share` scenario: share-group consumers with simulated work per record.
//!
//! Not implemented yet: it needs the engine and the network client.

use super::{Scenario, ScenarioContext, ScenarioError, ScenarioResult};
use crate::workload::Workload;

/// The `share` scenario.
#[derive(Debug, Default)]
pub struct Share {}

impl Scenario for Share {
    fn prepare(&mut self, _context: &ScenarioContext<'_>) -> Result<(), ScenarioError> {
        Err(ScenarioError::NotImplemented(Workload::Share))
    }

    fn run(&mut self, _context: &ScenarioContext<'_>) -> Result<ScenarioResult, ScenarioError> {
        Err(ScenarioError::NotImplemented(Workload::Share))
    }
}
