//! Per-record delivery results: one shared outcome per batch, one cheap handle per record.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::Duration;

use crate::client::error::ClientError;

/// Where a record was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordMetadata {
    /// Partition the record went to.
    pub partition: u32,
    /// The record's offset; -1 with `Acks::None`, which gets no answer.
    pub offset: i64,
}

/// The result of one batch, shared by the handles of its records (one allocation per batch,
/// none per record).
#[derive(Debug)]
pub(crate) struct BatchOutcome {
    partition: u32,
    result: Mutex<Option<Result<i64, ClientError>>>,
    /// Set once `result` holds the outcome: [`DeliveryHandle::try_result`] of a batch still on
    /// its way reads this instead of taking the lock (a caller may poll once per record).
    decided: AtomicBool,
    done: Condvar,
}

impl BatchOutcome {
    /// An outcome still to be decided for a batch of `partition`.
    pub(crate) fn new(partition: u32) -> Arc<Self> {
        Arc::new(Self {
            partition,
            result: Mutex::new(None),
            decided: AtomicBool::new(false),
            done: Condvar::new(),
        })
    }

    /// Decides the outcome: the batch's base offset (-1 when unknown) or its error. Only the
    /// first decision counts.
    pub(crate) fn complete(&self, result: Result<i64, ClientError>) {
        let mut slot = self.result.lock().unwrap_or_else(PoisonError::into_inner);
        if slot.is_none() {
            *slot = Some(result);
            // Under the lock, after the outcome: a reader that sees it set finds the outcome.
            self.decided.store(true, Ordering::Release);
            self.done.notify_all();
        }
    }
}

/// The pending delivery result of one record sent with `Producer::send`.
#[derive(Debug, Clone)]
pub struct DeliveryHandle {
    outcome: Arc<BatchOutcome>,
    index: u32,
}

impl DeliveryHandle {
    /// The handle of record number `index` of a batch.
    pub(crate) fn new(outcome: Arc<BatchOutcome>, index: u32) -> Self {
        Self { outcome, index }
    }

    /// The partition the record was assigned to.
    pub fn partition(&self) -> u32 {
        self.outcome.partition
    }

    /// Blocks until the record is acknowledged or has failed.
    pub fn wait(&self) -> Result<RecordMetadata, ClientError> {
        let mut slot = self
            .outcome
            .result
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        loop {
            if let Some(result) = slot.as_ref() {
                return self.metadata(result);
            }
            slot = self
                .outcome
                .done
                .wait(slot)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }

    /// Like [`Self::wait`] but gives up after `timeout`, returning `None`.
    pub fn wait_timeout(&self, timeout: Duration) -> Option<Result<RecordMetadata, ClientError>> {
        let slot = self
            .outcome
            .result
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let (slot, _) = self
            .outcome
            .done
            .wait_timeout_while(slot, timeout, |slot| slot.is_none())
            .unwrap_or_else(PoisonError::into_inner);
        slot.as_ref().map(|result| self.metadata(result))
    }

    /// The result if it is known, without blocking.
    pub fn try_result(&self) -> Option<Result<RecordMetadata, ClientError>> {
        if !self.outcome.decided.load(Ordering::Acquire) {
            return None;
        }
        let slot = self
            .outcome
            .result
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        slot.as_ref().map(|result| self.metadata(result))
    }

    /// This record's metadata from its batch's result.
    fn metadata(&self, result: &Result<i64, ClientError>) -> Result<RecordMetadata, ClientError> {
        let base_offset = result.as_ref().map_err(Clone::clone)?;
        let offset = if *base_offset < 0 {
            -1
        } else {
            base_offset.saturating_add(i64::from(self.index))
        };
        Ok(RecordMetadata {
            partition: self.outcome.partition,
            offset,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handles_share_the_batch_result() {
        let outcome = BatchOutcome::new(3);
        let first = DeliveryHandle::new(outcome.clone(), 0);
        let third = DeliveryHandle::new(outcome.clone(), 2);
        assert!(first.try_result().is_none());
        assert!(first.wait_timeout(Duration::from_millis(1)).is_none());
        let waiter = std::thread::spawn(move || third.wait());
        outcome.complete(Ok(100));
        outcome.complete(Ok(7)); // ignored: the first decision stands
        assert_eq!(
            first.wait().unwrap(),
            RecordMetadata {
                partition: 3,
                offset: 100
            }
        );
        assert_eq!(waiter.join().unwrap().unwrap().offset, 102);
    }

    #[test]
    fn unknown_offsets_and_errors() {
        let outcome = BatchOutcome::new(0);
        let handle = DeliveryHandle::new(outcome.clone(), 5);
        outcome.complete(Ok(-1));
        assert_eq!(handle.wait().unwrap().offset, -1);

        let outcome = BatchOutcome::new(0);
        let handle = DeliveryHandle::new(outcome.clone(), 0);
        outcome.complete(Err(ClientError::Disconnected));
        assert!(matches!(handle.wait(), Err(ClientError::Disconnected)));
    }
}
