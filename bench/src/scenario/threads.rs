//! Joining load threads: a panicked thread becomes a run failure, and the first failure wins.

use std::thread::ScopedJoinHandle;

use super::ScenarioError;

/// Joins every thread (all of them, even after a failure) and returns their outputs in order,
/// or the first failure.
pub fn join_all<T>(
    handles: Vec<ScopedJoinHandle<'_, Result<T, ScenarioError>>>,
) -> Result<Vec<T>, ScenarioError> {
    let mut outputs = Vec::with_capacity(handles.len());
    let mut first_error = None;
    for handle in handles {
        match handle.join() {
            Ok(Ok(output)) => outputs.push(output),
            Ok(Err(error)) => {
                first_error.get_or_insert(error);
            }
            Err(_) => {
                first_error.get_or_insert(ScenarioError::Failed("a load thread panicked".into()));
            }
        }
    }
    match first_error {
        Some(error) => Err(error),
        None => Ok(outputs),
    }
}
