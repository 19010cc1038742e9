//! The `e2e` scenario: producers at a fixed rate while consumers follow; latency from the intended send time to receipt.
//!
//! Not implemented yet: it needs the engine and the network client.

use super::{Scenario, ScenarioContext, ScenarioError, ScenarioResult};
use crate::workload::Workload;

/// The `e2e` scenario.
#[derive(Debug, Default)]
pub struct E2e {}

impl Scenario for E2e {
    fn prepare(&mut self, _context: &ScenarioContext<'_>) -> Result<(), ScenarioError> {
        Err(ScenarioError::NotImplemented(Workload::E2e))
    }

    fn run(&mut self, _context: &ScenarioContext<'_>) -> Result<ScenarioResult, ScenarioError> {
        Err(ScenarioError::NotImplemented(Workload::E2e))
    }
}
