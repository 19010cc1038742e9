//! The per-partition flusher task: the only code that writes segment files after open.
//!
//! It runs one job at a time, in log order, so that writes never overtake each other:
//! 1. finalize a rolled segment whose bytes are all written (truncate to its exact length,
//!    fdatasync, persist its indexes and the producer snapshot taken at the roll) before
//!    touching the next segment;
//! 2. create (and preallocate) the file of a new segment before its first write (or at once
//!    for one that retention started with no append, see `Inner::roll_expired_active`), and
//!    store the log start a DeleteRecords asked for (see [`crate::log_start`]) before the
//!    start moves;
//! 3. write the dirty range of the oldest chunk with bytes not yet written, and hand the
//!    written bytes to the syncer (see [`super::syncer`]) when a `Durable` append waits;
//! 4. when closing, finalize the active segment (with a producer snapshot, without indexes:
//!    the next open scans the last segment whole and rebuilds them) and stop.
//!
//! Each write takes a turn from the shard's [`crate::io_budget::IoBudget`]; while it waits for
//! one, appends keep joining the dirty range, so under a small-append load writes grow rather
//! than multiply. Between jobs it sleeps until an append kicks it. Appends arriving during a
//! job are all covered by the next one. Writes never wait for an fdatasync: visibility to
//! readers costs one write, and the syncer's sync of one write overlaps the next write.

use std::ops::Range;
use std::rc::Rc;

use super::{Inner, State};
use crate::buffer::{align_down, align_up};
use crate::cache::Chunk;
use crate::error::FlushFailure;
use crate::log_start;
use crate::producer_snapshot::{self, SNAPSHOTS_KEPT};
use crate::reactor::fs::{self, File, OpenOptions};
use crate::reactor::time;
use crate::segment::{
    preallocation_target, segment_path, write_index_files, IndexFiles, Segment, SegmentState,
    LOG_SUFFIX,
};

/// One unit of work.
enum Job {
    Wait,
    Exit,
    Create {
        base_offset: i64,
    },
    /// Store this log start offset (DeleteRecords), then move the start there.
    StoreLogStart(i64),
    Write(WriteJob),
    Finalize(FinalizeJob),
}

/// Write `chunk[range]` at `file_offset`; on success the chunk is written up to `filled`
/// and the high watermark reaches `next_offset`.
struct WriteJob {
    chunk: Rc<Chunk>,
    file: Rc<File>,
    range: Range<usize>,
    file_offset: u64,
    filled: usize,
    next_offset: i64,
}

/// Make a segment's file exact and durable and persist its indexes (a rolled one's).
struct FinalizeJob {
    base_offset: i64,
    file: Option<Rc<File>>,
    size_bytes: u64,
    next_offset: i64,
    /// `None` for the active segment at close: recovery never loads the last segment's
    /// indexes (it scans that segment whole), so writing them would only cost two atomic
    /// file writes per partition at every shutdown.
    indexes: Option<IndexFiles>,
    /// The active segment at close (then the log is closed afterwards).
    closing: bool,
    /// Producer snapshot `(offset, bytes)` to write once the segment is synced.
    snapshot: Option<(i64, Vec<u8>)>,
}

impl FinalizeJob {
    fn of(segment: &Segment, closing: bool) -> FinalizeJob {
        FinalizeJob {
            base_offset: segment.base_offset,
            file: segment.file.clone(),
            size_bytes: segment.size_bytes,
            next_offset: segment.next_offset,
            indexes: (!closing).then(|| segment.encode_indexes()),
            closing,
            snapshot: None,
        }
    }
}

/// The flusher task of one log.
pub(super) async fn run(inner: Rc<Inner>) {
    loop {
        let result = match inner.next_job() {
            Job::Wait => {
                inner.kick.wait().await;
                continue;
            }
            Job::Exit => break,
            Job::Create { base_offset } => inner.create_segment_file(base_offset).await,
            Job::StoreLogStart(offset) => inner.store_log_start(offset).await,
            Job::Write(job) => {
                if let Err(ready_at) = inner.take_write_turn() {
                    // Appends meanwhile join this write: the job is made again after.
                    time::sleep_until(ready_at).await;
                    continue;
                }
                inner.write_chunk(job).await
            }
            Job::Finalize(job) => inner.finalize_segment(job).await,
        };
        if let Err(failure) = result {
            inner.record_failure(failure);
            if inner.handle_dropped.get() {
                // Nobody can retry any more (no appends, no close): give up.
                break;
            }
        }
    }
    inner.closed.set(true);
    inner.sync_kick.notify();
    inner.cache.remove_owner(inner.owner);
    inner.wake_waiters();
}

impl Inner {
    fn next_job(&self) -> Job {
        if self.closed.get() {
            return Job::Exit;
        }
        if self.retry_blocked.get() {
            // After a failure only an append or a close retries; with the handle dropped
            // neither comes, so give up, whichever task failed (the syncer's failures end
            // here, the flusher's own in `run`).
            return if self.handle_dropped.get() {
                Job::Exit
            } else {
                Job::Wait
            };
        }
        let mut state = self.state.borrow_mut();
        while state.pending.front().is_some_and(|chunk| !chunk.is_dirty()) {
            state.pending.pop_front();
        }
        let front_base = state
            .pending
            .front()
            .map(|chunk| chunk.placement().segment_base);
        if let Some(rolled) = state
            .segments
            .iter()
            .find(|segment| segment.state == SegmentState::Rolled)
        {
            if front_base != Some(rolled.base_offset) {
                let mut job = FinalizeJob::of(rolled, false);
                job.snapshot = state
                    .roll_snapshots
                    .iter()
                    .find(|(offset, _)| *offset == job.next_offset)
                    .cloned();
                return Job::Finalize(job);
            }
        }
        // Before the writes: under a steady load there is always one to make.
        let log_start_wanted = self.log_start_wanted.get();
        if log_start_wanted > self.log_start_offset.get() {
            return Job::StoreLogStart(log_start_wanted);
        }
        if let Some(job) = self.write_job(&state) {
            return job;
        }
        if state.active_needs_file {
            let active = state.active();
            if active.file.is_none() {
                return Job::Create {
                    base_offset: active.base_offset,
                };
            }
        }
        if self.durable_requested.get() > self.durable_offset.get() {
            // Written bytes a durable append waits for (after a retry, say): the syncer's job.
            self.sync_kick.notify();
        }
        if self.closing.get() {
            let mut job = FinalizeJob::of(state.active(), true);
            // Nothing changed since a snapshot at the same offset.
            if state.snapshot_files.back() != Some(&job.next_offset) {
                let bytes = producer_snapshot::encode(&self.producers.borrow(), job.next_offset);
                job.snapshot = Some((job.next_offset, bytes));
            }
            return Job::Finalize(job);
        }
        Job::Wait
    }

    /// The write (or file creation) the oldest dirty chunk needs.
    fn write_job(&self, state: &State) -> Option<Job> {
        let chunk = state.pending.front()?;
        let base_offset = chunk.placement().segment_base;
        let segment = state
            .segment(base_offset)
            .expect("a chunk with unwritten bytes belongs to a live segment");
        let Some(file) = segment.file.clone() else {
            return Some(Job::Create { base_offset });
        };
        let (written, filled) = (chunk.written(), chunk.filled());
        assert!(written < filled, "queued chunks have unwritten bytes");
        let range = align_down(written)..align_up(filled);
        assert!(
            range.end <= chunk.capacity(),
            "aligned end within the chunk"
        );
        let next_offset = chunk.next_offset();
        Some(Job::Write(WriteJob {
            file_offset: chunk.file_start() + range.start as u64,
            chunk: Rc::clone(chunk),
            file,
            range,
            filled,
            next_offset,
        }))
    }

    /// Fails the job with ENOSPC when a unit test asked for it.
    pub(super) fn injected_failure(&self, context: &'static str) -> Result<(), FlushFailure> {
        #[cfg(test)]
        {
            let left = self.hooks.io_errors.get();
            let selected = self
                .hooks
                .io_error_context
                .get()
                .is_none_or(|prefix| context.starts_with(prefix));
            if left > 0 && selected {
                self.hooks.io_errors.set(left - 1);
                let error = std::io::Error::from_raw_os_error(libc::ENOSPC);
                return Err(FlushFailure::from_io(context, &error));
            }
        }
        let _ = context;
        Ok(())
    }

    async fn create_segment_file(&self, base_offset: i64) -> Result<(), FlushFailure> {
        self.injected_failure("creating a segment")?;
        let path = segment_path(&self.dir, base_offset, LOG_SUFFIX);
        let options = OpenOptions {
            create: true,
            direct: self.config.direct_io,
            read_only: false,
        };
        let fail = |context| move |error| FlushFailure::from_io(context, &error);
        let file = File::open(&path, options)
            .await
            .map_err(fail("creating a segment"))?;
        // A leftover file of that name (a failed earlier attempt) must not keep old bytes
        // that recovery could mistake for batches.
        file.truncate(0).await.map_err(fail("creating a segment"))?;
        // A segment created with nothing to write (retention rolled an idle partition) may
        // stay empty for long, on many partitions: its first write reserves space instead.
        let nothing_to_write = self.state.borrow().pending.is_empty();
        let allocated = if nothing_to_write {
            0
        } else {
            self.preallocate(&file, 0, 0).await?
        };
        fs::sync_dir(&self.dir)
            .await
            .map_err(fail("syncing the partition directory"))?;
        // Retention only removes closed segments, so a segment waiting for its file is there.
        let mut state = self.state.borrow_mut();
        if let Some(segment) = state.segment_mut(base_offset) {
            segment.file = Some(Rc::new(file));
            segment.allocated_bytes = allocated;
        }
        if state.active().base_offset == base_offset {
            state.active_needs_file = false;
        }
        Ok(())
    }

    /// Stores `offset` as the log start (DeleteRecords) and then moves the start there.
    async fn store_log_start(&self, offset: i64) -> Result<(), FlushFailure> {
        let context = "storing the log start offset";
        self.injected_failure(context)?;
        log_start::store(&self.dir, offset)
            .await
            .map_err(|error| FlushFailure::from_io(context, &error))?;
        assert!(
            offset <= self.next_offset.get(),
            "the start never passes the log's end"
        );
        self.log_start_offset
            .set(self.log_start_offset.get().max(offset));
        self.wake_waiters();
        Ok(())
    }

    /// Reserves disk for a segment whose data will reach `data_end`, from `allocated` up to
    /// the next preallocation step; returns the new reserved size. A filesystem without
    /// fallocate is tolerated (appends then take their chances with space).
    async fn preallocate(
        &self,
        file: &File,
        allocated: u64,
        data_end: u64,
    ) -> Result<u64, FlushFailure> {
        let target = preallocation_target(
            data_end,
            self.config.preallocate_step_bytes,
            self.config.segment_bytes,
        );
        if target <= allocated {
            return Ok(allocated);
        }
        match file.allocate(allocated, target - allocated).await {
            Ok(()) => Ok(target),
            Err(error) if error.raw_os_error() == Some(libc::EOPNOTSUPP) => {
                tracing::warn!(dir = %self.dir.display(), "filesystem cannot preallocate segments");
                Ok(target)
            }
            Err(error) => Err(FlushFailure::from_io("preallocating a segment", &error)),
        }
    }

    /// Grows the segment's reservation before a write that would pass it.
    async fn ensure_allocated(
        &self,
        chunk: &Chunk,
        file: &File,
        write_end: u64,
    ) -> Result<(), FlushFailure> {
        let base_offset = chunk.placement().segment_base;
        let allocated = match self.state.borrow().segment(base_offset) {
            Some(segment) => segment.allocated_bytes,
            None => return Ok(()),
        };
        if write_end <= allocated {
            return Ok(());
        }
        let reserved = self.preallocate(file, allocated, write_end).await?;
        if let Some(segment) = self.state.borrow_mut().segment_mut(base_offset) {
            segment.allocated_bytes = segment.allocated_bytes.max(reserved);
        }
        Ok(())
    }

    async fn write_chunk(&self, job: WriteJob) -> Result<(), FlushFailure> {
        let WriteJob {
            chunk,
            file,
            range,
            file_offset,
            filled,
            next_offset,
        } = job;
        let context = "writing the log";
        self.injected_failure(context)?;
        self.ensure_allocated(&chunk, &file, file_offset + range.len() as u64)
            .await?;
        let (result, chunk) = file.write_all_at(chunk, range, file_offset).await;
        result.map_err(|error| FlushFailure::from_io(context, &error))?;
        self.complete_write(&chunk, filled, next_offset, file);
        Ok(())
    }

    /// Publishes a completed write: chunk progress, segment visibility, watermarks; hands the
    /// bytes to the syncer when a durable append waits.
    fn complete_write(&self, chunk: &Rc<Chunk>, filled: usize, next_offset: i64, file: Rc<File>) {
        let newly_written = filled - chunk.written();
        chunk.set_written(filled);
        let unflushed = self.unflushed_bytes.get();
        assert!(
            unflushed >= newly_written as u64,
            "written more than was appended"
        );
        self.unflushed_bytes.set(unflushed - newly_written as u64);
        {
            let mut state = self.state.borrow_mut();
            let segment = state
                .segment_mut(chunk.placement().segment_base)
                .expect("a chunk being written belongs to a live segment");
            let visible = chunk.file_start() + filled as u64;
            assert!(visible >= segment.visible_bytes && visible <= segment.size_bytes);
            segment.visible_bytes = visible;
            let done = !chunk.is_dirty()
                && state
                    .pending
                    .front()
                    .is_some_and(|front| Rc::ptr_eq(front, chunk));
            if done {
                state.pending.pop_front();
            }
        }
        assert!(
            next_offset >= self.high_watermark.get() && next_offset <= self.next_offset.get(),
            "the high watermark only moves forward, up to the next offset"
        );
        self.high_watermark.set(next_offset);
        *self.written_file.borrow_mut() = Some(file);
        if self.durable_requested.get() > self.durable_offset.get() {
            self.sync_kick.notify();
        }
        self.bump(|stats| stats.writes += 1);
        self.wake_waiters();
    }

    async fn finalize_segment(&self, job: FinalizeJob) -> Result<(), FlushFailure> {
        self.injected_failure("finishing a segment")?;
        if let Some(file) = &job.file {
            let fail = |context| move |error| FlushFailure::from_io(context, &error);
            // Aligned writes leave zeros past the data; after this the length is exact.
            file.truncate(job.size_bytes)
                .await
                .map_err(fail("truncating a finished segment"))?;
            file.sync_data()
                .await
                .map_err(fail("syncing a finished segment"))?;
            self.bump(|stats| stats.syncs += 1);
        }
        if let Some(indexes) = &job.indexes {
            if let Err(error) = write_index_files(&self.dir, indexes).await {
                // Not fatal: indexes are rebuilt from the log at the next open.
                tracing::warn!(dir = %self.dir.display(), base_offset = job.base_offset, %error, "cannot persist segment indexes");
            }
        }
        if let Some((offset, bytes)) = &job.snapshot {
            self.write_producer_snapshot(*offset, bytes).await;
        }
        assert!(
            job.next_offset <= self.high_watermark.get(),
            "finalized bytes are written"
        );
        self.durable_offset
            .set(self.durable_offset.get().max(job.next_offset));
        if job.closing {
            self.closed.set(true);
        } else {
            let mut state = self.state.borrow_mut();
            if let Some(segment) = state.segment_mut(job.base_offset) {
                assert_eq!(segment.state, SegmentState::Rolled);
                segment.state = SegmentState::Closed;
            }
        }
        self.wake_waiters();
        Ok(())
    }

    /// Writes a producer snapshot after the bytes it covers were synced and prunes old ones.
    /// Failures are only logged: the next open replays the log from an older snapshot.
    async fn write_producer_snapshot(&self, offset: i64, bytes: &[u8]) {
        let written = producer_snapshot::write(&self.dir, offset, bytes).await;
        {
            // Taken either way: held after a failure, the snapshots of every later roll
            // would pile up in memory while writes keep failing.
            let mut state = self.state.borrow_mut();
            while state
                .roll_snapshots
                .front()
                .is_some_and(|(pending, _)| *pending <= offset)
            {
                state.roll_snapshots.pop_front();
            }
        }
        if let Err(error) = written {
            tracing::warn!(dir = %self.dir.display(), offset, %error, "cannot write a producer snapshot");
            return;
        }
        let expired: Vec<i64> = {
            let mut state = self.state.borrow_mut();
            if state.snapshot_files.back() != Some(&offset) {
                state.snapshot_files.push_back(offset);
            }
            let excess = state.snapshot_files.len().saturating_sub(SNAPSHOTS_KEPT);
            state.snapshot_files.drain(..excess).collect()
        };
        for old in expired {
            if let Err(error) = producer_snapshot::remove(&self.dir, old).await {
                tracing::warn!(dir = %self.dir.display(), offset = old, %error, "cannot delete an old producer snapshot");
            }
        }
    }

    pub(super) fn record_failure(&self, failure: FlushFailure) {
        self.failures.set(self.failures.get() + 1);
        self.last_failure.set(Some(failure));
        self.retry_blocked.set(true);
        if self.handle_dropped.get() {
            // A syncer failure: the flusher may be waiting for work; it has to give up.
            self.kick.notify();
        }
        self.bump(|stats| stats.failures += 1);
        tracing::warn!(
            dir = %self.dir.display(),
            error = %failure.to_error(),
            "partition log write failed; the next append retries it"
        );
        self.wake_waiters();
    }
}
