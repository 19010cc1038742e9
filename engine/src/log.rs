//! The partition log: append, group commit, read, roll, retention.
//!
//! A partition is a directory of segments (see [`crate::segment`]) owned by one shard. All
//! state lives behind `Cell`/`RefCell` in one `Rc`, used only by that shard's thread; no
//! borrow is ever held across an `.await`.
//!
//! # Appends
//! [`PartitionLog::append`] does its work synchronously when called: it validates the batch,
//! stamps the next offset into it (so offsets follow call order), copies it into the active
//! segment's in-memory tail chunk and returns a future that resolves according to [`Acks`].
//! One flusher task per partition writes the dirty part of the tail with O_DIRECT, from the
//! chunk itself: from the last aligned-down written position to the aligned-up fill position,
//! so the partially filled last block is rewritten in place. While one write is in flight,
//! further appends accumulate and the next write covers all of them. A second task per
//! partition, the syncer, makes written bytes durable: while any `Durable` append waits, it
//! fdatasyncs the file after each completed write, one sync at a time, so N producers share
//! one sync (group commit) and the next write proceeds while the sync is in flight.
//!
//! # Visibility
//! The high watermark is the offset after the last batch whose write completed; reads never
//! return bytes past it, and never wait for an fdatasync. The durable offset is the offset
//! after the last batch whose write was followed by a completed fdatasync. Readers see bytes
//! that a power loss (not a process crash) could still take; a `Durable` producer is only
//! answered once they are synced.
//!
//! # Idempotent producers
//! A batch with a producer id (`producerId >= 0`) is checked against the partition's
//! [`crate::producer_state`] before it gets an offset: a retry of one of the producer's last
//! five batches is not appended again, and its future resolves (per [`Acks`]) to the original
//! offsets with [`AppendInfo::duplicate`] set; a gap or a fenced epoch is refused with
//! [`LogError::Producer`]. The state is snapshotted when a rolled segment is finished and at
//! close, and rebuilt at open (see [`crate::producer_snapshot`]).
//!
//! # Failures
//! A failed write (ENOSPC, EIO) fails every append waiting at that time with
//! [`LogError::DiskFull`] or [`LogError::Io`]. The bytes stay in memory, invisible; the
//! next append (or [`PartitionLog::close`]) retries the write of the whole dirty range, so the
//! log stays contiguous and appends work again once space is freed. As with a timeout in
//! Kafka, a batch whose append reported such an error may therefore still appear later.

mod config;
mod flusher;
mod kick;
mod read;
mod read_ahead;
mod syncer;
mod waiters;

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::rc::{Rc, Weak};
use std::task::{Context, Poll, Waker};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

pub use config::{
    LogConfig, Retention, CHUNK_BYTES_DEFAULT, FIRST_CHUNK_BYTES_DEFAULT,
    INDEX_INTERVAL_BYTES_DEFAULT, SEGMENT_BYTES_DEFAULT, SEGMENT_BYTES_MIN, SEGMENT_MS_DEFAULT,
    UNFLUSHED_BYTES_MAX_DEFAULT,
};
pub use read::{ReadParts, ReadSlice, READ_PARTS_MAX};
pub use read_ahead::ReadAheadMemory;

use crate::batch::{self, BatchHeader};
use crate::buffer::{align_down, align_up};
use crate::cache::{Chunk, ChunkCache, ChunkPlacement};
use crate::error::{FlushFailure, LogError};
use crate::io_budget::IoBudget;
use crate::producer_snapshot;
use crate::producer_state::{BatchMetadata, ProducerStateTable, Verdict};
use crate::reactor::fs::File;
use crate::recovery;
use crate::segment::{remove_segment_files, Segment, SegmentState};
use kick::Kick;
use waiters::{Progress, WaitKind, WaitList};

/// How long an append waits before it reports success.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Acks {
    /// Return as soon as the batch is in memory with its offset; the write follows.
    None,
    /// Return once the write of the batch to the segment file completed (it is then
    /// visible to readers), without waiting for an fdatasync.
    Leader,
    /// Return once the write and an fdatasync covering it completed: the batch survives a
    /// power loss. The default.
    #[default]
    Durable,
}

/// Where an appended batch landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendInfo {
    /// Offset stamped into the batch.
    pub base_offset: i64,
    /// Offset of its last record.
    pub last_offset: i64,
    /// The log start offset when it was appended.
    pub log_start_offset: i64,
    /// Size of the batch in bytes.
    pub batch_bytes: usize,
    /// The batch is a retry of an idempotent producer's batch written before: it was not
    /// appended again, and the offsets are those of the original.
    pub duplicate: bool,
}

/// Counters of one log since it was opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LogStats {
    /// Batches appended.
    pub appends: u64,
    /// Bytes appended.
    pub appended_bytes: u64,
    /// Writes to segment files completed.
    pub writes: u64,
    /// fdatasyncs completed (linked to a write or alone, rolls and close included).
    pub syncs: u64,
    /// Background I/O operations that failed.
    pub failures: u64,
    /// Segments rolled.
    pub rolls: u64,
    /// Read steps served from in-memory chunks.
    pub memory_reads: u64,
    /// Read steps that went to disk.
    pub disk_reads: u64,
}

/// What [`PartitionLog::apply_retention`] deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetentionReport {
    /// Segments deleted.
    pub segments_deleted: usize,
    /// Their bytes.
    pub bytes_deleted: u64,
}

/// One partition's log. Use it through an `Rc` on the shard that owns the partition.
///
/// Dropping it without [`PartitionLog::close`] starts the same close in the background (the
/// flusher writes and syncs what is left, then stops); drop it on its shard's thread.
pub struct PartitionLog {
    inner: Rc<Inner>,
}

/// The shared state of a log, also held by its flusher and syncer tasks and pending futures.
struct Inner {
    dir: PathBuf,
    config: LogConfig,
    cache: Rc<ChunkCache>,
    /// This log's id in the shard's chunk cache.
    owner: u64,
    state: RefCell<State>,
    /// Offset the next append gets.
    next_offset: Cell<i64>,
    /// Offset after the last batch whose write completed.
    high_watermark: Cell<i64>,
    /// Offset after the last batch whose write and fdatasync completed.
    durable_offset: Cell<i64>,
    /// First offset still stored.
    log_start_offset: Cell<i64>,
    /// The start DeleteRecords asked for; the flusher stores it, then moves the log start.
    log_start_wanted: Cell<i64>,
    /// Highest offset (exclusive) a `Durable` append waits to see synced.
    durable_requested: Cell<i64>,
    /// Bytes appended but not yet written.
    unflushed_bytes: Cell<u64>,
    /// Segments past retention whose files could not be deleted yet, oldest first, with
    /// their sizes: no longer part of the log, deleted again before the next ones.
    undeleted_segments: RefCell<Vec<(i64, u64)>>,
    /// Bytes of a request's batches that [`PartitionLog::admit`] let past the unflushed bound
    /// together, while its [`Admitted`] lives: their appends skip the bound check.
    admitted_bytes: Cell<u64>,
    /// What each idempotent producer wrote last (see [`crate::producer_state`]).
    producers: RefCell<ProducerStateTable>,
    /// Background I/O failures so far; waiters compare with the count when they started.
    failures: Cell<u64>,
    last_failure: Cell<Option<FlushFailure>>,
    /// After a failure the flusher waits for the next append (or close) to try again, so a
    /// full disk does not turn into a busy loop.
    retry_blocked: Cell<bool>,
    /// `close` was called or the handle dropped: no more appends.
    closing: Cell<bool>,
    /// The log's topic was deleted (see [`PartitionLog::retire`]): its files are no longer
    /// retention's to delete.
    retired: Cell<bool>,
    /// The flusher has written everything and stopped.
    closed: Cell<bool>,
    /// The `PartitionLog` handle is gone: the flusher stops after a failure.
    handle_dropped: Cell<bool>,
    waiters: RefCell<WaitList>,
    /// Reused list of wakers to call, so waking allocates nothing.
    wake_scratch: RefCell<Vec<Waker>>,
    /// Wakes the flusher (appends, close, retries).
    kick: Kick,
    /// Wakes the syncer (a durable append's bytes were written, or a retry).
    sync_kick: Kick,
    /// The segment file of the last completed write: what the syncer fdatasyncs.
    written_file: RefCell<Option<Rc<File>>>,
    /// The shard's disk operations per second, shared with its other logs.
    io_budget: Rc<IoBudget>,
    stats: Cell<LogStats>,
    /// Extents of segment files read ahead of sequential reads from disk.
    read_ahead: read_ahead::ReadAhead,
    #[cfg(test)]
    hooks: TestHooks,
}

/// Fault and clock injection for the unit tests of this module.
#[cfg(test)]
#[derive(Default)]
struct TestHooks {
    clock_ms: Cell<Option<i64>>,
    io_errors: Cell<u32>,
    /// Only jobs whose context starts with this fail (all when `None`).
    io_error_context: Cell<Option<&'static str>>,
}

/// Segments and chunks, borrowed briefly and never across an await.
struct State {
    /// Oldest first; the last one is the active segment.
    segments: Vec<Segment>,
    /// The active segment's chunk that takes appends.
    tail: Option<Rc<Chunk>>,
    /// Chunks with bytes not yet written, oldest first (the flusher's queue).
    pending: VecDeque<Rc<Chunk>>,
    /// Every chunk created recently, oldest first, to find in-memory bytes for reads; entries
    /// die when the cache and the queue let go of them.
    recent: VecDeque<Weak<Chunk>>,
    /// Producer snapshots taken at rolls, `(offset, bytes)`, to be written once the rolled
    /// segment ending at `offset` is finished (one per segment waiting to be finished).
    roll_snapshots: VecDeque<(i64, Vec<u8>)>,
    /// Offsets of the producer snapshot files on disk, oldest first.
    snapshot_files: VecDeque<i64>,
    /// The active segment was started by a roll with no append (retention), and its file must
    /// be created although nothing is written to it yet (see the flusher).
    active_needs_file: bool,
}

/// Entries of `recent` beyond which dead ones are swept from the whole list, not only the
/// front.
const RECENT_SWEEP_LEN: usize = 1024;

impl State {
    fn active(&self) -> &Segment {
        self.segments
            .last()
            .expect("a log always has an active segment")
    }

    fn active_mut(&mut self) -> &mut Segment {
        self.segments
            .last_mut()
            .expect("a log always has an active segment")
    }

    fn segment(&self, base_offset: i64) -> Option<&Segment> {
        let at = self
            .segments
            .binary_search_by_key(&base_offset, |segment| segment.base_offset)
            .ok()?;
        self.segments.get(at)
    }

    fn segment_mut(&mut self, base_offset: i64) -> Option<&mut Segment> {
        let at = self
            .segments
            .binary_search_by_key(&base_offset, |segment| segment.base_offset)
            .ok()?;
        self.segments.get_mut(at)
    }

    /// Index of the segment holding `offset` (the last whose base offset is at most it).
    fn segment_index_for(&self, offset: i64) -> Option<usize> {
        self.segments
            .partition_point(|segment| segment.base_offset <= offset)
            .checked_sub(1)
    }

    fn remember_chunk(&mut self, chunk: &Rc<Chunk>) {
        while self
            .recent
            .front()
            .is_some_and(|weak| weak.strong_count() == 0)
        {
            self.recent.pop_front();
        }
        if self.recent.len() >= RECENT_SWEEP_LEN {
            self.recent.retain(|weak| weak.strong_count() > 0);
        }
        self.recent.push_back(Rc::downgrade(chunk));
    }
}

/// What the partition logs of one shard share.
#[derive(Debug, Clone)]
pub struct ShardResources {
    /// Recently written chunks kept in memory for tail reads.
    pub cache: Rc<ChunkCache>,
    /// Disk writes and syncs per second (see [`crate::io_budget`]).
    pub io_budget: Rc<IoBudget>,
    /// Extent buffers for reads ahead of sequential disk reads.
    pub read_ahead: Rc<ReadAheadMemory>,
}

impl ShardResources {
    /// `cache` with no bound on disk operations or read-ahead but each log's own: for a
    /// log opened on its own.
    pub fn with_cache(cache: Rc<ChunkCache>) -> ShardResources {
        ShardResources {
            cache,
            io_budget: Rc::new(IoBudget::unlimited()),
            read_ahead: Rc::new(ReadAheadMemory::unbounded()),
        }
    }
}

impl PartitionLog {
    /// Opens (recovering) or creates the partition log in `dir` and starts its flusher task.
    /// Must run inside the shard's reactor. Blocks briefly to list the directory.
    pub async fn open(
        dir: impl Into<PathBuf>,
        config: LogConfig,
        cache: Rc<ChunkCache>,
    ) -> Result<PartitionLog, LogError> {
        Self::open_on_shard(dir, config, &ShardResources::with_cache(cache)).await
    }

    /// [`PartitionLog::open`] sharing the shard's `resources` with its other logs: its
    /// writes and syncs take their turns from the shard's budget of disk operations, and
    /// its read-ahead buffers count in the shard's read-ahead memory.
    pub async fn open_on_shard(
        dir: impl Into<PathBuf>,
        config: LogConfig,
        resources: &ShardResources,
    ) -> Result<PartitionLog, LogError> {
        config.validate()?;
        let dir = dir.into();
        let recovered = recovery::recover(&dir, &config, wall_clock_ms()).await?;
        let segments = recovered.segments;
        let producers = recovered.producers;
        let snapshot_files = recovered.snapshots.into_iter().collect();
        let oldest_base = segments
            .first()
            .map(|segment| segment.base_offset)
            .expect("recovery returns at least one segment");
        let next_offset = segments
            .last()
            .map(|segment| segment.next_offset)
            .expect("recovery returns at least one segment");
        // Recovery keeps a stored DeleteRecords start within the log's end.
        let log_start_offset = recovered
            .log_start_offset
            .map_or(oldest_base, |deleted_before| {
                deleted_before.max(oldest_base)
            });
        assert!(
            log_start_offset <= next_offset,
            "the start is within the log"
        );
        let cache = Rc::clone(&resources.cache);
        let io_budget = Rc::clone(&resources.io_budget);
        let owner = cache.register_owner();
        let read_ahead =
            read_ahead::ReadAhead::new(config.read_ahead_bytes, Rc::clone(&resources.read_ahead));
        let inner = Rc::new(Inner {
            dir,
            config,
            cache,
            owner,
            state: RefCell::new(State {
                segments,
                tail: None,
                pending: VecDeque::new(),
                recent: VecDeque::new(),
                roll_snapshots: VecDeque::new(),
                snapshot_files,
                active_needs_file: false,
            }),
            producers: RefCell::new(producers),
            next_offset: Cell::new(next_offset),
            high_watermark: Cell::new(next_offset),
            durable_offset: Cell::new(next_offset),
            log_start_offset: Cell::new(log_start_offset),
            log_start_wanted: Cell::new(log_start_offset),
            durable_requested: Cell::new(next_offset),
            unflushed_bytes: Cell::new(0),
            undeleted_segments: RefCell::new(Vec::new()),
            admitted_bytes: Cell::new(0),
            failures: Cell::new(0),
            last_failure: Cell::new(None),
            retry_blocked: Cell::new(false),
            closing: Cell::new(false),
            retired: Cell::new(false),
            closed: Cell::new(false),
            handle_dropped: Cell::new(false),
            waiters: RefCell::new(WaitList::default()),
            wake_scratch: RefCell::new(Vec::new()),
            kick: Kick::default(),
            sync_kick: Kick::default(),
            written_file: RefCell::new(None),
            io_budget,
            stats: Cell::new(LogStats::default()),
            read_ahead,
            #[cfg(test)]
            hooks: TestHooks::default(),
        });
        // Detached: the tasks end by themselves once the log is closed or dropped.
        drop(crate::reactor::spawn(flusher::run(Rc::clone(&inner))));
        drop(crate::reactor::spawn(syncer::run(Rc::clone(&inner))));
        Ok(PartitionLog { inner })
    }

    /// Appends one record batch, stamping its base offset (in `batch` itself).
    ///
    /// Everything but the wait happens before this returns: a malformed batch (length,
    /// magic, CRC) is refused with [`LogError::InvalidBatch`] and nothing is written; otherwise
    /// the batch has its offset and is in memory, and the returned future resolves per `acks`.
    /// Offsets are assigned in call order.
    pub fn append(&self, batch: &mut [u8], acks: Acks) -> AppendFuture {
        self.append_checked(batch, acks, true)
    }

    /// [`PartitionLog::append`] for a batch whose CRC the caller has just checked (the
    /// server's produce checks every batch of a request before it appends any): the other
    /// checks are made, the CRC, a pass over every byte, is not computed a second time.
    pub fn append_crc_checked(&self, batch: &mut [u8], acks: Acks) -> AppendFuture {
        self.append_checked(batch, acks, false)
    }

    fn append_checked(&self, batch: &mut [u8], acks: Acks, verify_crc: bool) -> AppendFuture {
        let inner = &self.inner;
        let failures_at_start = inner.failures.get();
        let info = match inner.start_append(batch, acks, verify_crc) {
            Ok(info) => info,
            Err(error) => return AppendFuture::ready(Err(error)),
        };
        let kind = match acks {
            Acks::None => return AppendFuture::ready(Ok(info)),
            Acks::Leader => WaitKind::Written(info.last_offset + 1),
            Acks::Durable => WaitKind::Durable(info.last_offset + 1),
        };
        AppendFuture {
            state: AppendState::Waiting {
                wait: Wait::new(Rc::clone(inner), kind, failures_at_start),
                info,
            },
        }
    }

    /// Checks, before any is appended, what would refuse one of a request's batches (of
    /// `batch_bytes` each) whatever the others hold: the log closing, a batch larger than a
    /// segment, or the unflushed bound for all of them together, which lets a request in whole
    /// when nothing waits to be written (as it lets in one batch of any size). Append them
    /// while the returned [`Admitted`] lives, with no await in between: they are then stored
    /// all or none, but for an idempotent producer's refusal of one of them
    /// ([`PartitionLog::append`] checks sequences batch by batch).
    pub fn admit(
        &self,
        batch_bytes: impl IntoIterator<Item = usize>,
    ) -> Result<Admitted<'_>, LogError> {
        let inner = &self.inner;
        if inner.closing.get() {
            return Err(LogError::Closed);
        }
        let segment_bytes = inner.config.segment_bytes;
        let mut request_bytes = 0u64;
        for bytes in batch_bytes {
            if bytes as u64 > segment_bytes {
                return Err(LogError::BatchTooLarge {
                    batch_bytes: bytes,
                    segment_bytes,
                });
            }
            request_bytes = request_bytes.saturating_add(bytes as u64);
        }
        inner.check_unflushed_bound(usize::try_from(request_bytes).unwrap_or(usize::MAX))?;
        assert_eq!(inner.admitted_bytes.get(), 0, "one admission at a time");
        inner.admitted_bytes.set(request_bytes);
        Ok(Admitted { inner })
    }

    /// Reads whole batches starting with the one that holds `offset` (which may start
    /// before it), up to `max_bytes` but always at least one whole batch, never past the high
    /// watermark. Reading at the high watermark returns an empty slice (for long polls);
    /// outside `[log_start_offset, high_watermark]` fails with
    /// [`LogError::OffsetOutOfRange`]. Bytes still in memory come back without a copy.
    pub fn read(
        &self,
        offset: i64,
        max_bytes: usize,
    ) -> impl Future<Output = Result<ReadSlice, LogError>> + 'static {
        let inner = Rc::clone(&self.inner);
        async move { inner.read(offset, max_bytes).await }
    }

    /// As [`PartitionLog::read`], but going on past the end of the in-memory chunk (or disk
    /// read, or segment) holding the first batch: every whole batch that fits `max_bytes`,
    /// in up to [`READ_PARTS_MAX`] slices to be sent back to back.
    pub fn read_parts(
        &self,
        offset: i64,
        max_bytes: usize,
    ) -> impl Future<Output = Result<ReadParts, LogError>> + 'static {
        let inner = Rc::clone(&self.inner);
        async move { inner.read_parts(offset, max_bytes).await }
    }

    /// The base offset of the first visible batch whose max timestamp is at least
    /// `timestamp_ms` (batch granularity, like the time index); `None` when there is none.
    pub fn offset_for_timestamp(
        &self,
        timestamp_ms: i64,
    ) -> impl Future<Output = Result<Option<i64>, LogError>> + 'static {
        let inner = Rc::clone(&self.inner);
        async move {
            let found = inner.batch_for_timestamp(timestamp_ms).await?;
            Ok(found.map(|(base_offset, _)| base_offset))
        }
    }

    /// [`PartitionLog::offset_for_timestamp`] with that batch's max timestamp: `(base offset, max
    /// timestamp)`, the timestamp Kafka's ListOffsets and ours report beside the offset.
    pub fn batch_for_timestamp(
        &self,
        timestamp_ms: i64,
    ) -> impl Future<Output = Result<Option<(i64, i64)>, LogError>> + 'static {
        let inner = Rc::clone(&self.inner);
        async move { inner.batch_for_timestamp(timestamp_ms).await }
    }

    /// Resolves to `true` once the high watermark is above `offset` (a fetch at `offset`
    /// has data), or to `false` when the log is closing. Wrap it in a timeout for long polls.
    pub fn wait_for_offset(&self, offset: i64) -> WaitForOffset {
        let failures = self.inner.failures.get();
        WaitForOffset {
            wait: Wait::new(Rc::clone(&self.inner), WaitKind::Visible(offset), failures),
            offset,
        }
    }

    /// Deletes whole segments, oldest first and never the active one, while the log holds
    /// more than `retention.bytes` or while the oldest segment's newest batch is older than
    /// `now_ms - retention.ms`. The log start offset moves to the first remaining segment.
    pub async fn apply_retention(
        &self,
        now_ms: i64,
        retention: Retention,
    ) -> Result<RetentionReport, LogError> {
        if self.inner.retired.get() {
            return Ok(RetentionReport::default());
        }
        self.inner.roll_expired_active(now_ms, retention);
        let removed = self.inner.take_expired_segments(now_ms, retention);
        // A DeleteRecords waiting for its start to be stored may be covered by this move.
        self.inner.wake_waiters();
        // Reads in flight keep their own handle on the files.
        let mut doomed = self.inner.undeleted_segments.take();
        doomed.extend(
            removed
                .into_iter()
                .map(|segment| (segment.base_offset, segment.size_bytes)),
        );
        let mut report = RetentionReport::default();
        let mut failure = None;
        for (at, &(base_offset, size_bytes)) in doomed.iter().enumerate() {
            if self.inner.retired.get() {
                // Retired during an await here: the directory may be a new log's already.
                break;
            }
            if let Err(error) = remove_segment_files(&self.inner.dir, base_offset).await {
                // Oldest first, and no further: the files left stay one run of consecutive
                // segments (a gap would make the next open keep only what follows it), and
                // the next pass tries again from this one.
                tracing::warn!(dir = %self.inner.dir.display(), base_offset, %error, "cannot delete an expired segment; retrying at the next retention pass");
                failure = Some(LogError::io("deleting an expired segment", error));
                *self.inner.undeleted_segments.borrow_mut() = doomed[at..].to_vec();
                break;
            }
            report.segments_deleted += 1;
            report.bytes_deleted += size_bytes;
        }
        if report.segments_deleted > 0 {
            tracing::info!(
                dir = %self.inner.dir.display(),
                segments = report.segments_deleted,
                bytes = report.bytes_deleted,
                log_start_offset = self.inner.log_start_offset.get(),
                "retention deleted segments"
            );
        }
        failure.map_or(Ok(report), Err)
    }

    /// Moves the log start offset up to `offset`, as Kafka's DeleteRecords does: reads below it
    /// are out of range, ListOffsets' earliest answers it, and retention deletes the segments
    /// wholly below it at its next pass. Stored (see [`crate::log_start`]) before this returns,
    /// so a restart keeps it. An offset past the high watermark (or negative) is
    /// [`LogError::OffsetOutOfRange`]; one at or below the start changes nothing. Returns the
    /// log start offset.
    pub async fn delete_records(&self, offset: i64) -> Result<i64, LogError> {
        let inner = &self.inner;
        let (log_start, high_watermark) =
            (inner.log_start_offset.get(), inner.high_watermark.get());
        if offset < 0 || offset > high_watermark {
            return Err(LogError::OffsetOutOfRange {
                requested: offset,
                log_start,
                high_watermark,
            });
        }
        if offset <= log_start {
            return Ok(log_start);
        }
        if inner.closing.get() {
            return Err(LogError::Closed);
        }
        inner
            .log_start_wanted
            .set(inner.log_start_wanted.get().max(offset));
        // After a failure the flusher waits for a retry: this is one.
        inner.retry_blocked.set(false);
        inner.kick.notify();
        let failures = inner.failures.get();
        Wait::new(Rc::clone(inner), WaitKind::Started(offset), failures).await?;
        Ok(inner.log_start_offset.get())
    }

    /// Writes and syncs everything appended, stops the flusher, truncates the active segment
    /// to its data and persists its indexes. Appends fail with [`LogError::Closed`] from the
    /// call on; reads keep working. After a failure (disk full) call it again to retry.
    pub async fn close(&self) -> Result<(), LogError> {
        if self.inner.closed.get() {
            return Ok(());
        }
        let failures = self.inner.failures.get();
        self.inner.begin_close();
        Wait::new(Rc::clone(&self.inner), WaitKind::Closed, failures).await
    }

    /// Marks the log's topic deleted: retention passes that still hold the log (one may be
    /// part way through the shard's partitions) leave its files alone from now on, because its
    /// directory may soon be a new topic's of the same name, whose segments have the same names.
    pub fn retire(&self) {
        self.inner.retired.set(true);
    }

    /// Closes the log and removes its directory with every segment.
    pub async fn delete(self) -> Result<(), LogError> {
        if let Err(error) = self.close().await {
            tracing::warn!(dir = %self.inner.dir.display(), %error, "closing a log before deleting it failed");
        }
        // The segments stay in the state: after a failed close the flusher may still run
        // until this handle drops, and writes to unlinked files are harmless.
        let bases = self.segment_base_offsets();
        for base_offset in bases {
            remove_segment_files(&self.inner.dir, base_offset)
                .await
                .map_err(|error| LogError::io("deleting a segment", error))?;
        }
        self.inner.cache.remove_owner(self.inner.owner);
        match crate::reactor::fs::remove_dir(&self.inner.dir).await {
            Ok(()) => Ok(()),
            // Leftovers (an interrupted index write): deletion is an admin action, rare and
            // small, so the blocking call is acceptable here.
            Err(error) if error.raw_os_error() == Some(libc::ENOTEMPTY) => {
                std::fs::remove_dir_all(&self.inner.dir)
                    .map_err(|error| LogError::io("deleting the partition directory", error))
            }
            Err(error) => Err(LogError::io("deleting the partition directory", error)),
        }
    }

    /// First offset still stored.
    pub fn log_start_offset(&self) -> i64 {
        self.inner.log_start_offset.get()
    }

    /// Offset after the last batch whose write completed: what fetches may read up to.
    pub fn high_watermark(&self) -> i64 {
        self.inner.high_watermark.get()
    }

    /// Offset after the last batch whose write and fdatasync completed.
    pub fn durable_offset(&self) -> i64 {
        self.inner.durable_offset.get()
    }

    /// Offset the next append gets.
    pub fn next_offset(&self) -> i64 {
        self.inner.next_offset.get()
    }

    /// Bytes of all segments (appended, written or not).
    pub fn size_bytes(&self) -> u64 {
        let state = self.inner.state.borrow();
        state
            .segments
            .iter()
            .map(|segment| segment.size_bytes)
            .sum()
    }

    /// Base offsets of the segments, oldest first.
    pub fn segment_base_offsets(&self) -> Vec<i64> {
        let state = self.inner.state.borrow();
        state
            .segments
            .iter()
            .map(|segment| segment.base_offset)
            .collect()
    }

    /// The partition directory.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// The configuration in force.
    pub fn config(&self) -> &LogConfig {
        &self.inner.config
    }

    /// Counters since open.
    pub fn stats(&self) -> LogStats {
        self.inner.stats.get()
    }

    /// Whether `close` finished.
    pub fn is_closed(&self) -> bool {
        self.inner.closed.get()
    }
}

#[cfg(test)]
impl PartitionLog {
    /// Uses `now_ms` instead of the wall clock for rolling by age.
    fn set_clock_ms(&self, now_ms: Option<i64>) {
        self.inner.hooks.clock_ms.set(now_ms);
    }

    /// Makes the next `count` background I/O jobs whose context starts with `context` (any
    /// job when `None`) fail with ENOSPC.
    fn fail_next_io(&self, count: u32, context: Option<&'static str>) {
        self.inner.hooks.io_errors.set(count);
        self.inner.hooks.io_error_context.set(context);
    }

    /// Unwritten bytes now.
    fn unflushed_bytes(&self) -> u64 {
        self.inner.unflushed_bytes.get()
    }
}

impl Drop for PartitionLog {
    fn drop(&mut self) {
        // The flusher writes what is left and stops; its task holds the state until then.
        self.inner.handle_dropped.set(true);
        if !self.inner.closed.get() {
            self.inner.begin_close();
        }
    }
}

impl std::fmt::Debug for PartitionLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PartitionLog")
            .field("dir", &self.inner.dir)
            .field("log_start_offset", &self.log_start_offset())
            .field("high_watermark", &self.high_watermark())
            .field("next_offset", &self.next_offset())
            .finish()
    }
}

impl Inner {
    fn now_ms(&self) -> i64 {
        #[cfg(test)]
        if let Some(now_ms) = self.hooks.clock_ms.get() {
            return now_ms;
        }
        wall_clock_ms()
    }

    fn bump(&self, update: impl FnOnce(&mut LogStats)) {
        let mut stats = self.stats.get();
        update(&mut stats);
        self.stats.set(stats);
    }

    fn progress(&self) -> Progress {
        Progress {
            high_watermark: self.high_watermark.get(),
            durable_offset: self.durable_offset.get(),
            log_start_offset: self.log_start_offset.get(),
            failures: self.failures.get(),
            closing: self.closing.get(),
            closed: self.closed.get(),
        }
    }

    /// The synchronous part of an append: checks (the CRC only if `verify_crc`), offset, copy,
    /// bookkeeping, flusher kick.
    fn start_append(
        &self,
        batch: &mut [u8],
        acks: Acks,
        verify_crc: bool,
    ) -> Result<AppendInfo, LogError> {
        if self.closing.get() {
            return Err(LogError::Closed);
        }
        let header = if verify_crc {
            batch::validate(batch)?
        } else {
            batch::validate_crc_checked(batch)?
        };
        let batch_bytes = batch.len();
        if batch_bytes as u64 > self.config.segment_bytes {
            return Err(LogError::BatchTooLarge {
                batch_bytes,
                segment_bytes: self.config.segment_bytes,
            });
        }
        let verdict = self.producers.borrow().check(&header)?;
        if let Verdict::Duplicate(original) = verdict {
            return Ok(self.answer_duplicate(original, batch_bytes, acks));
        }
        let admitted = self.admitted_bytes.get();
        if admitted >= batch_bytes as u64 {
            // Checked with the rest of its request by `PartitionLog::admit`.
            self.admitted_bytes.set(admitted - batch_bytes as u64);
        } else {
            self.check_unflushed_bound(batch_bytes)?;
        }
        let base_offset = self.next_offset.get();
        let records = i64::from(header.last_offset_delta) + 1;
        if base_offset.checked_add(records).is_none() {
            // Only a segment file named near i64::MAX (put there by hand) gets a log here.
            return Err(LogError::OffsetsExhausted {
                next_offset: base_offset,
            });
        }
        batch::set_base_offset(batch, base_offset)?;
        let header = BatchHeader {
            base_offset,
            ..header
        };
        let next_offset = header.next_offset();
        assert!(next_offset > base_offset, "offsets must grow");
        let now_ms = self.now_ms();
        let rolled = self.state.borrow_mut().place_batch(
            &self.config,
            &self.cache,
            self.owner,
            batch,
            &header,
            now_ms,
        );
        if rolled {
            // The state as of the new segment's base, before this batch is recorded.
            self.take_roll_snapshot(base_offset);
        }
        self.producers.borrow_mut().record(&header);
        self.next_offset.set(next_offset);
        self.unflushed_bytes
            .set(self.unflushed_bytes.get() + batch_bytes as u64);
        if acks == Acks::Durable {
            self.durable_requested
                .set(self.durable_requested.get().max(next_offset));
        }
        self.bump(|stats| {
            stats.appends += 1;
            stats.appended_bytes += batch_bytes as u64;
            stats.rolls += u64::from(rolled);
        });
        // A new append is the signal to retry after a failed write.
        self.retry_blocked.set(false);
        self.kick.notify();
        Ok(AppendInfo {
            base_offset,
            last_offset: header.last_offset(),
            log_start_offset: self.log_start_offset.get(),
            batch_bytes,
            duplicate: false,
        })
    }

    /// The answer to a retried idempotent batch: the original's offsets, once the original
    /// reaches `acks` (its write may still be pending, or failed and waiting for a retry).
    fn answer_duplicate(
        &self,
        original: BatchMetadata,
        batch_bytes: usize,
        acks: Acks,
    ) -> AppendInfo {
        let next_offset = original.last_offset + 1;
        assert!(
            next_offset <= self.next_offset.get(),
            "a duplicate of an appended batch"
        );
        if acks == Acks::Durable {
            self.durable_requested
                .set(self.durable_requested.get().max(next_offset));
        }
        if next_offset > self.durable_offset.get() {
            // Like a new append, a retry is the signal to try a failed write again.
            self.retry_blocked.set(false);
            self.kick.notify();
        }
        AppendInfo {
            base_offset: original.base_offset,
            last_offset: original.last_offset,
            log_start_offset: self.log_start_offset.get(),
            batch_bytes,
            duplicate: true,
        }
    }

    /// Refuses an append that would take unwritten bytes past the bound.
    fn check_unflushed_bound(&self, batch_bytes: usize) -> Result<(), LogError> {
        let unflushed_bytes = self.unflushed_bytes.get();
        let limit_bytes = self.config.unflushed_bytes_max;
        if unflushed_bytes == 0 || unflushed_bytes + batch_bytes as u64 <= limit_bytes {
            return Ok(());
        }
        if self.retry_blocked.get() {
            // The disk is failing: try the write again, report why memory is full.
            self.retry_blocked.set(false);
            self.kick.notify();
            if let Some(failure) = self.last_failure.get() {
                return Err(failure.to_error());
            }
        }
        Err(LogError::Backpressure {
            unflushed_bytes,
            limit_bytes,
        })
    }

    fn begin_close(&self) {
        self.closing.set(true);
        self.durable_requested
            .set(self.durable_requested.get().max(self.next_offset.get()));
        self.retry_blocked.set(false);
        self.kick.notify();
        // Long polls end now.
        self.wake_waiters();
    }

    /// Takes a write's turn from the shard's budget of disk operations, or says when to ask
    /// again (the flusher then waits, and its next write covers the appends that came
    /// meanwhile). A closing log does not wait: close writes what is left.
    fn take_write_turn(&self) -> Result<(), Instant> {
        if self.closing.get() {
            return Ok(());
        }
        self.io_budget.take_write()
    }

    /// [`Inner::take_write_turn`] for an fdatasync (the syncer's next sync then covers the
    /// writes completed meanwhile).
    fn take_sync_turn(&self) -> Result<(), Instant> {
        if self.closing.get() {
            return Ok(());
        }
        self.io_budget.take_sync()
    }

    /// Wakes every waiter whose condition holds.
    fn wake_waiters(&self) {
        let mut wakers = std::mem::take(&mut *self.wake_scratch.borrow_mut());
        let progress = self.progress();
        self.waiters.borrow().collect_ready(&progress, &mut wakers);
        // Woken outside the borrows: a waker may run arbitrary code.
        for waker in wakers.drain(..) {
            waker.wake();
        }
        *self.wake_scratch.borrow_mut() = wakers;
    }

    /// Rolls the active segment when retention by age has let go of every record in the log,
    /// as Kafka does: retention deletes only closed segments, so a partition that stopped
    /// receiving records would otherwise keep its last segment (up to `segment_bytes`) past
    /// its retention forever. The rolled segment is finished by the flusher and deleted by a
    /// later pass; the new active segment gets its (empty) file at once, so that the log's
    /// end offset survives a restart once the old segments are gone.
    fn roll_expired_active(&self, now_ms: i64, retention: Retention) {
        let Some(cutoff_ms) = retention.cutoff_ms(now_ms) else {
            return;
        };
        if self.closing.get() || self.closed.get() {
            // The flusher that would finish the roll is stopping.
            return;
        }
        let next_offset = self.next_offset.get();
        {
            let mut state = self.state.borrow_mut();
            let active = state.active();
            if active.is_empty() || active.retention_timestamp_ms() >= cutoff_ms {
                return;
            }
            state.roll(&self.cache, next_offset);
            state.active_needs_file = true;
        }
        self.take_roll_snapshot(next_offset);
        self.bump(|stats| stats.rolls += 1);
        tracing::info!(dir = %self.dir.display(), next_offset, "rolled the active segment: every record in it is past retention");
        self.kick.notify();
    }

    /// Encodes the producer state as of `offset`, where a roll started a new segment, for the
    /// flusher to write once the rolled segment is finished.
    fn take_roll_snapshot(&self, offset: i64) {
        let snapshot = producer_snapshot::encode(&self.producers.borrow(), offset);
        self.state
            .borrow_mut()
            .roll_snapshots
            .push_back((offset, snapshot));
    }

    /// Removes the segments retention lets go of from the state and moves the log start.
    fn take_expired_segments(&self, now_ms: i64, retention: Retention) -> Vec<Segment> {
        let mut state = self.state.borrow_mut();
        let mut total_bytes: u64 = state
            .segments
            .iter()
            .map(|segment| segment.size_bytes)
            .sum();
        let cutoff_ms = retention.cutoff_ms(now_ms);
        let mut expired = 0;
        // Never the active segment, nor the newest segment that has a file, nor any after
        // it: the newest segment file on disk is what carries the log's end offset over a
        // restart (with no file at all, a partition would start again at 0). Segments after
        // it have none while their files cannot be created (disk full), and more than one
        // when such a segment rolls too (by size, or by retention when its records are old).
        let newest_with_file = state
            .segments
            .iter()
            .rposition(|segment| segment.file.is_some())
            .unwrap_or(0);
        let deletable = newest_with_file.min(state.segments.len() - 1);
        for segment in &state.segments[..deletable] {
            if segment.state != SegmentState::Closed {
                break;
            }
            // As Kafka: the oldest segment goes only when the log keeps at least the limit
            // without it (a log may stay up to a segment over it, and is never cut below).
            let too_big = retention.bytes.is_some_and(|limit_bytes| {
                total_bytes
                    .checked_sub(segment.size_bytes)
                    .is_some_and(|rest_bytes| rest_bytes >= limit_bytes)
            });
            let too_old =
                cutoff_ms.is_some_and(|cutoff_ms| segment.retention_timestamp_ms() < cutoff_ms);
            // Wholly below the start DeleteRecords set, as Kafka deletes such segments.
            let deleted = segment.next_offset <= self.log_start_offset.get();
            if !too_big && !too_old && !deleted {
                break;
            }
            total_bytes -= segment.size_bytes;
            expired += 1;
        }
        if expired == 0 {
            return Vec::new();
        }
        let removed: Vec<Segment> = state.segments.drain(..expired).collect();
        let floor = state.active_segment_floor();
        assert!(
            floor <= self.next_offset.get(),
            "the segments kept end at the log's end"
        );
        // A start DeleteRecords moved inside the oldest segment kept stays where it is.
        let log_start_offset = floor.max(self.log_start_offset.get());
        self.log_start_offset.set(log_start_offset);
        state.recent.retain(|weak| {
            weak.upgrade()
                .is_some_and(|chunk| chunk.placement().segment_base >= log_start_offset)
        });
        removed
    }
}

impl State {
    /// Base offset of the oldest segment.
    fn active_segment_floor(&self) -> i64 {
        self.segments
            .first()
            .map(|segment| segment.base_offset)
            .expect("a log always has an active segment")
    }

    /// Copies a stamped batch into the tail (rolling first when due) and indexes it; returns
    /// whether it rolled.
    fn place_batch(
        &mut self,
        config: &LogConfig,
        cache: &ChunkCache,
        owner: u64,
        batch: &[u8],
        header: &BatchHeader,
        now_ms: i64,
    ) -> bool {
        let rolled = self.roll_due(config, batch.len(), header, now_ms);
        if rolled {
            self.roll(cache, header.base_offset);
        }
        let position = self.active().size_bytes;
        let chunk = self.tail_with_room(config, cache, owner, batch.len(), position, header);
        chunk.push_batch(batch, header.next_offset());
        let queued = self
            .pending
            .back()
            .is_some_and(|last| Rc::ptr_eq(last, &chunk));
        if !queued {
            self.pending.push_back(chunk);
        }
        let active = self.active_mut();
        active.record_batch(position, header, config.index_interval_bytes);
        active.first_batch_ms.get_or_insert(now_ms);
        active.last_batch_ms = Some(now_ms);
        rolled
    }

    fn roll_due(
        &self,
        config: &LogConfig,
        batch_bytes: usize,
        header: &BatchHeader,
        now_ms: i64,
    ) -> bool {
        let active = self.active();
        if active.is_empty() {
            return false;
        }
        let full = active.size_bytes + batch_bytes as u64 > config.segment_bytes;
        let offsets_overflow = active.relative_offset(header.last_offset()).is_none();
        let segment_ms = i64::try_from(config.segment_ms).unwrap_or(i64::MAX);
        let old = active
            .first_batch_ms
            .is_some_and(|first_ms| now_ms.saturating_sub(first_ms) >= segment_ms);
        full || offsets_overflow || old
    }

    /// Starts a new active segment at `base_offset`; the flusher finishes the old one.
    fn roll(&mut self, cache: &ChunkCache, base_offset: i64) {
        let active = self.active_mut();
        assert_eq!(active.state, SegmentState::Active);
        assert_eq!(
            active.next_offset, base_offset,
            "a new segment starts where the old ends"
        );
        active.state = SegmentState::Rolled;
        active.recovered_tail = None;
        if let Some(tail) = self.tail.take() {
            tail.seal();
            cache.insert(tail);
        }
        self.segments
            .push(Segment::new(base_offset, SegmentState::Active));
    }

    /// The tail chunk if the batch fits, else a new one continuing the active segment (the
    /// old tail is sealed and handed to the cache).
    fn tail_with_room(
        &mut self,
        config: &LogConfig,
        cache: &ChunkCache,
        owner: u64,
        batch_bytes: usize,
        position: u64,
        header: &BatchHeader,
    ) -> Rc<Chunk> {
        let segment_base = self.active().base_offset;
        if let Some(tail) = &self.tail {
            assert_eq!(
                tail.placement().segment_base,
                segment_base,
                "tail of another segment"
            );
            assert_eq!(
                tail.file_end(),
                position,
                "the tail ends where the segment ends"
            );
            if tail.remaining() >= batch_bytes {
                return Rc::clone(tail);
            }
        }
        let placement = ChunkPlacement {
            owner,
            segment_base,
            first_batch_position: position,
            first_batch_offset: header.base_offset,
        };
        let prefix_bytes = position as usize - align_down(position as usize);
        // Growing from small (idle partitions hold little), never much larger than what is
        // left of the segment (small test segments), never smaller than the batch.
        let segment_left = config.segment_bytes.saturating_sub(position) as usize;
        let capacity = config
            .next_chunk_bytes(self.tail.as_ref().map(|tail| tail.capacity()))
            .min(align_up(prefix_bytes + segment_left))
            .max(align_up(prefix_bytes + batch_bytes));
        let old_tail = self.tail.take();
        let chunk = match &old_tail {
            Some(old) => {
                let prefix = old
                    .block_prefix(position)
                    .expect("the tail holds the block the next batch starts in");
                cache.new_chunk(capacity, placement, prefix)
            }
            None => {
                let recovered = self.active_mut().recovered_tail.take().unwrap_or_default();
                cache.new_chunk(capacity, placement, &recovered)
            }
        };
        if let Some(old) = old_tail {
            old.seal();
            cache.insert(old);
        }
        let chunk = Rc::new(chunk);
        self.remember_chunk(&chunk);
        self.tail = Some(Rc::clone(&chunk));
        chunk
    }
}

/// Milliseconds since the Unix epoch.
fn wall_clock_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| {
            i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX)
        })
}

/// A registered wait on the log's progress; unregisters itself when done or dropped.
struct Wait {
    inner: Rc<Inner>,
    kind: WaitKind,
    failures_at_start: u64,
    slot: Option<usize>,
}

impl Wait {
    fn new(inner: Rc<Inner>, kind: WaitKind, failures_at_start: u64) -> Wait {
        Wait {
            inner,
            kind,
            failures_at_start,
            slot: None,
        }
    }

    fn unregister(&mut self) {
        if let Some(slot) = self.slot.take() {
            self.inner.waiters.borrow_mut().remove(slot);
        }
    }

    /// What a ready wait resolves to.
    fn outcome(&self, progress: &Progress) -> Result<(), LogError> {
        let reached = match self.kind {
            WaitKind::Written(offset) => progress.high_watermark >= offset,
            WaitKind::Durable(offset) => progress.durable_offset >= offset,
            WaitKind::Visible(_) => true,
            WaitKind::Closed => progress.closed,
            WaitKind::Started(offset) => progress.log_start_offset >= offset,
        };
        if reached {
            return Ok(());
        }
        if progress.failures > self.failures_at_start {
            if let Some(failure) = self.inner.last_failure.get() {
                return Err(failure.to_error());
            }
        }
        Err(LogError::Closed)
    }
}

impl Future for Wait {
    type Output = Result<(), LogError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let progress = self.inner.progress();
        if self.kind.is_ready(&progress, self.failures_at_start) {
            self.unregister();
            return Poll::Ready(self.outcome(&progress));
        }
        let this = &mut *self;
        let mut waiters = this.inner.waiters.borrow_mut();
        match this.slot {
            Some(slot) => waiters.update(slot, cx.waker()),
            None => {
                this.slot = Some(waiters.register(this.kind, this.failures_at_start, cx.waker()))
            }
        }
        Poll::Pending
    }
}

impl Drop for Wait {
    fn drop(&mut self) {
        self.unregister();
    }
}

/// The outcome of [`PartitionLog::append`]: where the batch landed, once the chosen
/// [`Acks`] level is reached. The batch is in the log whether or not this is awaited.
#[must_use = "the batch is appended already; await this to learn whether it was written"]
pub struct AppendFuture {
    state: AppendState,
}

enum AppendState {
    Ready(Option<Result<AppendInfo, LogError>>),
    Waiting { wait: Wait, info: AppendInfo },
}

impl AppendFuture {
    fn ready(result: Result<AppendInfo, LogError>) -> AppendFuture {
        AppendFuture {
            state: AppendState::Ready(Some(result)),
        }
    }

    /// Whether the append was refused (nothing was written); the future then resolves to why.
    pub fn is_refused(&self) -> bool {
        matches!(self.state, AppendState::Ready(Some(Err(_))))
    }
}

impl Future for AppendFuture {
    type Output = Result<AppendInfo, LogError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match &mut self.state {
            AppendState::Ready(result) => {
                Poll::Ready(result.take().expect("AppendFuture polled after completion"))
            }
            AppendState::Waiting { wait, info } => {
                let info = *info;
                Pin::new(wait).poll(cx).map(|result| result.map(|()| info))
            }
        }
    }
}

/// A request's batches admitted together by [`PartitionLog::admit`]; dropping it ends the
/// admission (what was not appended by then no longer skips the bound check).
#[must_use = "append the admitted batches while it lives"]
pub struct Admitted<'a> {
    inner: &'a Inner,
}

impl Drop for Admitted<'_> {
    fn drop(&mut self) {
        self.inner.admitted_bytes.set(0);
    }
}

/// Returned by [`PartitionLog::wait_for_offset`].
#[must_use = "futures do nothing unless awaited"]
pub struct WaitForOffset {
    wait: Wait,
    offset: i64,
}

impl Future for WaitForOffset {
    type Output = bool;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<bool> {
        let offset = self.offset;
        match Pin::new(&mut self.wait).poll(cx) {
            Poll::Ready(_) => Poll::Ready(self.wait.inner.high_watermark.get() > offset),
            Poll::Pending => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod power_loss_tests;
#[cfg(test)]
mod tests;
