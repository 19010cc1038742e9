//! The `fanout` scenario: several consumer groups read one topic; total egress.
//!
//! Not implemented yet: it needs the engine and the network client.

use super::{Scenario, ScenarioContext, ScenarioError, ScenarioResult};
use crate::workload::Workload;

/// The `fanout` scenario.
#[derive(Debug, Default)]
pub struct Fanout {}

impl Scenario for Fanout {
    fn prepare(&mut self, _context: &ScenarioContext<'_>) -> Result<(), ScenarioError> {
        Err(ScenarioError::NotImplemented(Workload::Fanout))
    }

    fn run(&mut self, _context: &ScenarioContext<'_>) -> Result<ScenarioResult, ScenarioError> {
        Err(ScenarioError::NotImplemented(Workload::Fanout))
    }
}
