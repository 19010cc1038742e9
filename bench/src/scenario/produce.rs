//! The `produce` scenario: producers send batches to ringlog over the network; acknowledgement latency.
//!
//! Not implemented yet: it needs the engine and the network client.

use super::{Scenario, ScenarioContext, ScenarioError, ScenarioResult};
use crate::workload::Workload;

/// The `produce` scenario.
#[derive(Debug, Default)]
pub struct Produce {}

impl Scenario for Produce {
    fn prepare(&mut self, _context: &ScenarioContext<'_>) -> Result<(), ScenarioError> {
        Err(ScenarioError::NotImplemented(Workload::Produce))
    }

    fn run(&mut self, _context: &ScenarioContext<'_>) -> Result<ScenarioResult, ScenarioError> {
        Err(ScenarioError::NotImplemented(Workload::Produce))
    }
}
