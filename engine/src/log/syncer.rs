//! The per-partition syncer task: makes written bytes durable with fdatasync.
//!
//! It runs beside the flusher so that no write, and so no reader, waits for a sync. While a
//! `Durable` append waits, each completed write kicks it; it syncs the file of the last
//! completed write and moves the durable offset to the high watermark as it was when the
//! sync started (writes completing during the sync are covered by the next one). One sync is
//! in flight at a time, so appends from many producers share it: the group commit.
//!
//! Bytes in segments before the one last written were synced when the flusher finished
//! those segments, before their successor's first write; syncing the last written file is
//! therefore enough for everything up to the high watermark.
//!
//! Each sync takes a turn from the shard's [`crate::io_budget::IoBudget`], as writes do.

use std::rc::Rc;

use super::Inner;
use crate::error::FlushFailure;
use crate::reactor::fs::File;
use crate::reactor::time;

/// One fdatasync: of `file`, making offsets below `offset` durable.
struct SyncJob {
    file: Rc<File>,
    offset: i64,
}

/// The syncer task of one log; ends when the flusher has stopped.
pub(super) async fn run(inner: Rc<Inner>) {
    while !inner.closed.get() {
        let Some(job) = inner.sync_job() else {
            inner.sync_kick.wait().await;
            continue;
        };
        if let Err(ready_at) = inner.take_sync_turn() {
            // Writes completing meanwhile join this sync: the job is made again after.
            time::sleep_until(ready_at).await;
            continue;
        }
        if let Err(failure) = inner.sync_written(job).await {
            inner.record_failure(failure);
        }
    }
}

impl Inner {
    /// The sync a waiting durable append needs now, if any.
    fn sync_job(&self) -> Option<SyncJob> {
        if self.retry_blocked.get() {
            return None;
        }
        let durable_offset = self.durable_offset.get();
        let written_offset = self.high_watermark.get();
        if self.durable_requested.get() <= durable_offset || written_offset <= durable_offset {
            return None;
        }
        let file = self
            .written_file
            .borrow()
            .clone()
            .expect("bytes past the durable offset were written, so a write recorded its file");
        Some(SyncJob {
            file,
            offset: written_offset,
        })
    }

    async fn sync_written(&self, job: SyncJob) -> Result<(), FlushFailure> {
        let context = "syncing the log";
        self.injected_failure(context)?;
        job.file
            .sync_data()
            .await
            .map_err(|error| FlushFailure::from_io(context, &error))?;
        assert!(
            job.offset <= self.high_watermark.get(),
            "only written bytes are synced"
        );
        self.durable_offset
            .set(self.durable_offset.get().max(job.offset));
        self.bump(|stats| stats.syncs += 1);
        self.wake_waiters();
        Ok(())
    }
}
