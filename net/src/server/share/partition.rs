//! One share partition (a share group on one topic partition), on the partition's shard:
//! acquires records for members, settles acknowledgements, runs the lease timer, copies
//! archived records to the dead-letter topic and persists every state change.
//!
//! - Acquisition reads whole batches from the log and locks the records in them that are
//!   Available (redeliveries first, lowest offset first), up to `max_records`, `max_bytes` and
//!   the window cap; the batches holding acquired records are the response's raw bytes.
//! - Acknowledgements are applied range by range (a bad range changes nothing and gets its own
//!   error), then written to the state file; the call returns once they are durable.
//! - One timer task per share partition sleeps until the earliest lock deadline (or until new
//!   leases are made) and ends the expired locks. Expiries are written without waiting.
//! - Records archived by a release, a rejection or an expiry are copied to the group's
//!   dead-letter topic before their archived state is written, so a crash in between sends
//!   them again rather than losing them (at least once). When the copy fails they stay
//!   archived in memory only, holding the start offset back, and the next sweep (at the next
//!   fetch, acknowledgement or lease expiry) tries again: no retry loop of its own.

use std::cell::{Cell, RefCell};
use std::future::{poll_fn, Future};
use std::pin::pin;
use std::rc::{Rc, Weak};
use std::sync::OnceLock;
use std::task::Poll;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ringlog_engine::batch::BatchIter;
use ringlog_engine::error::LogError;
use ringlog_engine::log::PartitionLog;
use ringlog_engine::reactor::{self, time};

use super::dead_letter::{self, CopyFailure};
use super::members::MemberTable;
use super::window::{Ack, AckError, Change, DeadLetter, Effects, Limits, Settle, Window};
use crate::error_code::ErrorCode;
use crate::message::share_acknowledge::{AckRange, AckType};
use crate::message::share_fetch::AcquiredRange;
use crate::server::group::meta::ShareConfig;
use crate::server::group::partition_state::{share_states, store_failure, PartitionGroups};
use crate::server::group::signal::Signal;
use crate::server::group::state_record::DurableState;
use crate::server::group::state_record::StateRecord;
use crate::server::latch::Latch;
use crate::server::message::Failure;
use crate::server::partition_ops::log_failure;
use crate::server::shard::Shard;
use crate::server::state_store::Durable;

/// Members not seen for this long (or twice the lock, if longer) no longer count as active.
const MEMBER_IDLE_MS: u64 = 30_000;
/// Most raw bytes one share fetch returns.
const FETCH_BYTES_MAX: usize = 16 << 20;

/// Result of one acknowledgement range.
#[derive(Debug, Clone)]
pub(crate) struct AckResult {
    /// First offset, as requested.
    pub(crate) first: i64,
    /// Last offset, as requested.
    pub(crate) last: i64,
    /// `None` for success.
    pub(crate) failure: Option<Failure>,
}

/// What a ShareFetch asks to acquire.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FetchAsk {
    /// Most records to acquire (0: only apply the acknowledgements).
    pub(crate) max_records: u32,
    /// Longest to wait for acquirable records.
    pub(crate) max_wait_ms: u32,
    /// Upper bound on the bytes read for them.
    pub(crate) max_bytes: u32,
}

/// What a share fetch acquired.
#[derive(Debug, Default)]
pub(crate) struct ShareFetched {
    /// Acquired ranges, ascending.
    pub(crate) acquired: Vec<AcquiredRange>,
    /// Wall-clock lock expiry of the acquired records, -1 when none.
    pub(crate) lock_expires_ms: i64,
    /// The whole batches holding them.
    pub(crate) bytes: Vec<u8>,
    /// One per piggy-backed acknowledgement range.
    pub(crate) ack_results: Vec<AckResult>,
    /// Why acquiring failed after the acknowledgements were applied (they stand).
    pub(crate) failure: Option<Failure>,
}

/// State of a share partition, for DescribeGroup.
#[derive(Debug, Clone)]
pub(crate) struct ShareSummary {
    /// Topic name.
    pub(crate) topic: String,
    /// Partition id.
    pub(crate) partition: u32,
    /// Share-partition start offset.
    pub(crate) start_offset: i64,
    /// The log's high watermark.
    pub(crate) high_watermark: i64,
    /// Records in the window not yet acknowledged or archived.
    pub(crate) in_flight_records: u32,
    /// Of those, acquired ones.
    pub(crate) acquired_records: u32,
}

/// A share partition; see the module docs.
pub(crate) struct SharePartition {
    group: String,
    topic: String,
    partition: u32,
    log: Rc<PartitionLog>,
    parent: Weak<PartitionGroups>,
    window: RefCell<Window>,
    members: RefCell<MemberTable>,
    config: RefCell<Rc<ShareConfig>>,
    /// Records may have become acquirable (released, expired, window room).
    available: Signal,
    /// Leases or the partition changed (wakes the lease timer).
    leases: Signal,
    lease_task: Cell<bool>,
    closed: Cell<bool>,
    /// Dead-letter copies under way (a sweep offers failed copies again only when none is).
    copies_in_flight: Cell<u32>,
    /// The last dead-letter copy failed (its warning is logged once per run of failures).
    copy_failing: Cell<bool>,
}

/// Milliseconds on a monotonic clock shared by the process (lock deadlines).
pub(crate) fn monotonic_ms() -> u64 {
    static BASE: OnceLock<Instant> = OnceLock::new();
    let base = BASE.get_or_init(Instant::now);
    u64::try_from(base.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// Milliseconds since the Unix epoch.
pub(crate) fn wall_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn settle_of(ack: AckType) -> Settle {
    match ack {
        AckType::Accept => Settle::Accept,
        AckType::Release => Settle::Release,
        AckType::Reject => Settle::Reject,
        AckType::Renew => Settle::Renew,
    }
}

fn ack_failure(error: AckError, window: &Window) -> Failure {
    match error {
        AckError::Inverted => Failure::new(
            ErrorCode::InvalidRequest,
            "first_offset is after last_offset",
        ),
        AckError::OutOfWindow => Failure::new(
            ErrorCode::InvalidRecordState,
            format!(
                "offsets outside the in-flight window {}..{}",
                window.start_offset(),
                window.end_offset()
            ),
        ),
        AckError::NotHeld => Failure::new(
            ErrorCode::InvalidRecordState,
            "records not acquired by this member",
        ),
        AckError::Expired => {
            Failure::new(ErrorCode::LeaseExpired, "the lock on these records expired")
        }
        AckError::OverBudget => Failure::new(
            ErrorCode::InvalidRequest,
            "the ranges before this one settle twice the in-flight window already; send the rest in another request",
        ),
    }
}

impl SharePartition {
    /// A share partition of `group` on the partition of `parent`, starting from `window`.
    pub(crate) fn new(group: String, window: Window, parent: &Rc<PartitionGroups>) -> Rc<Self> {
        Rc::new(SharePartition {
            group,
            topic: parent.topic.clone(),
            partition: parent.partition,
            log: Rc::clone(&parent.log),
            parent: Rc::downgrade(parent),
            window: RefCell::new(window),
            members: RefCell::new(MemberTable::default()),
            config: RefCell::new(Rc::new(ShareConfig::with_defaults(
                crate::server::group::meta::IN_FLIGHT_RECORDS_LIMIT,
            ))),
            available: Signal::default(),
            leases: Signal::default(),
            lease_task: Cell::new(false),
            closed: Cell::new(false),
            copies_in_flight: Cell::new(0),
            copy_failing: Cell::new(false),
        })
    }

    /// Uses `config` from now on (locks already given keep their deadlines).
    pub(crate) fn set_config(&self, config: &Rc<ShareConfig>) {
        if !Rc::ptr_eq(&self.config.borrow(), config) {
            *self.config.borrow_mut() = Rc::clone(config);
            // A larger window or a new limit may let waiting fetches proceed.
            self.available.notify();
        }
    }

    fn limits(&self) -> Limits {
        let config = self.config.borrow();
        Limits {
            delivery_limit: config.delivery_limit,
            lock_ms: u64::from(config.lock_ms),
            window_max: config.in_flight_records_max as usize,
        }
    }

    fn member_idle_ms(&self) -> u64 {
        MEMBER_IDLE_MS.max(2 * u64::from(self.config.borrow().lock_ms))
    }

    /// The share group's name.
    pub(crate) fn group(&self) -> &str {
        &self.group
    }

    /// The share-partition start offset.
    pub(crate) fn start_offset(&self) -> i64 {
        self.window.borrow().start_offset()
    }

    /// The durable content of the window (for state-file snapshots).
    pub(crate) fn snapshot(&self, emit: impl FnMut(Change)) {
        self.window.borrow().snapshot(emit);
    }

    /// Stops the lease timer and wakes waiting fetches (topic deleted, shutdown).
    pub(crate) fn close(&self) {
        self.closed.set(true);
        self.leases.notify();
        self.available.notify();
    }

    /// Moves the start offset past records retention removed, offers again the records whose
    /// dead-letter copy failed, ends expired locks and moves the start offset past settled
    /// records.
    fn sweep(&self, now_ms: u64) -> Effects {
        let mut effects = Effects::default();
        let limits = self.limits();
        let mut window = self.window.borrow_mut();
        // Removed records first: expiring them would archive records that can no longer be
        // copied to the dead-letter topic.
        if window.skip_removed(self.log.log_start_offset(), &mut effects) {
            effects.made_available = true;
        }
        // A copy under way may hold the same records: they wait for a later sweep.
        if self.copies_in_flight.get() == 0 {
            window.pending_dead_letters(&mut effects);
        }
        window.expire(now_ms, limits.delivery_limit, &mut effects);
        if window.advance() {
            effects.made_available = true;
        }
        effects
    }

    /// Acknowledges `ranges` for `member_id`, then, when it `leave`s, releases what it still
    /// holds and forgets it; returns once the changes are durable. One result per range, in
    /// order.
    pub(crate) async fn acknowledge(
        self: &Rc<Self>,
        shard: &Rc<Shard>,
        member_id: &str,
        ranges: &[AckRange],
        leave: bool,
    ) -> Vec<AckResult> {
        let now_ms = monotonic_ms();
        let mut effects = self.sweep(now_ms);
        let idle_ms = self.member_idle_ms();
        let member = self
            .members
            .borrow_mut()
            .number(member_id, now_ms, idle_ms, false);
        let limits = self.limits();
        let mut results = Vec::with_capacity(ranges.len());
        {
            let mut window = self.window.borrow_mut();
            // Records of the window one request may settle: every record twice (renew, then
            // accept). Settling walks each range's records, so ranges that cover the window
            // over and over (a 64 MiB frame holds millions) would hold the shard for minutes.
            let budget = 2 * window.span().max(limits.window_max);
            let mut examined = 0usize;
            for range in ranges {
                let records = window.records_in(range.first_offset, range.last_offset);
                let within_budget = examined.saturating_add(records) <= budget;
                if within_budget {
                    examined += records;
                }
                let outcome = match member {
                    _ if !within_budget => Err(AckError::OverBudget),
                    None => Err(AckError::NotHeld),
                    Some(holder) => {
                        let ack = Ack {
                            first: range.first_offset,
                            last: range.last_offset,
                            holder,
                            settle: settle_of(range.ack_type),
                        };
                        window.settle(ack, now_ms, &limits, &mut effects)
                    }
                };
                results.push(AckResult {
                    first: range.first_offset,
                    last: range.last_offset,
                    failure: outcome.err().map(|error| ack_failure(error, &window)),
                });
            }
            if leave {
                if let Some(holder) = member {
                    window.release_held_by(holder, limits.delivery_limit, &mut effects);
                }
                self.members.borrow_mut().remove(member_id);
            }
            if window.advance() {
                effects.made_available = true;
            }
        }
        if let Err(failure) = self.persist(shard, effects, true).await {
            for result in results.iter_mut().filter(|r| r.failure.is_none()) {
                result.failure = Some(failure.clone());
            }
        }
        results
    }

    /// Applies `acks`, then acquires up to `ask.max_records` records for `member_id`, waiting
    /// up to `ask.max_wait_ms` for some to become available.
    pub(crate) async fn fetch(
        self: &Rc<Self>,
        shard: &Rc<Shard>,
        member_id: &str,
        acks: &[AckRange],
        ask: FetchAsk,
        cancelled: &Latch,
    ) -> Result<ShareFetched, Failure> {
        let mut fetched = ShareFetched {
            lock_expires_ms: -1,
            ..ShareFetched::default()
        };
        if !acks.is_empty() {
            fetched.ack_results = self.acknowledge(shard, member_id, acks, false).await;
        }
        if ask.max_records == 0 {
            return Ok(fetched);
        }
        if let Err(failure) = self
            .acquire_waiting(shard, member_id, ask, cancelled, &mut fetched)
            .await
        {
            fetched.failure = Some(failure);
        }
        Ok(fetched)
    }

    /// The acquiring part of a fetch: waits up to `max_wait_ms` for acquirable records, or
    /// until `cancelled` (the client is gone: records acquired for it would stay locked,
    /// and count a delivery, until their lock expired).
    async fn acquire_waiting(
        self: &Rc<Self>,
        shard: &Rc<Shard>,
        member_id: &str,
        ask: FetchAsk,
        cancelled: &Latch,
        fetched: &mut ShareFetched,
    ) -> Result<(), Failure> {
        let idle_ms = self.member_idle_ms();
        let member = self
            .members
            .borrow_mut()
            .number(member_id, monotonic_ms(), idle_ms, true)
            .ok_or_else(|| {
                Failure::new(
                    ErrorCode::Throttled,
                    "this share partition has too many active members",
                )
            })?;
        self.ensure_lease_task(shard);
        let deadline = Instant::now() + Duration::from_millis(u64::from(ask.max_wait_ms));
        let max_bytes = (ask.max_bytes as usize).clamp(1, FETCH_BYTES_MAX);
        loop {
            let effects = self.sweep(monotonic_ms());
            self.persist(shard, effects, false).await?;
            if cancelled.is_set() {
                return Ok(());
            }
            let lock_ms = self.config.borrow().lock_ms;
            // Locks are taken as the reads of the acquisition go on, each lasting `lock_ms`
            // from then: the time before the first read is the earliest any may end. Reported
            // from after the reads, a member would believe its locks last longer than they do
            // and acknowledge records already expired (and maybe delivered to another).
            let acquire_started_ms = wall_ms();
            let (acquired, bytes) = self.acquire(member, ask.max_records, max_bytes).await?;
            if !acquired.is_empty() {
                fetched.acquired = acquired;
                fetched.bytes = bytes;
                fetched.lock_expires_ms = acquire_started_ms.saturating_add(i64::from(lock_ms));
                self.leases.notify();
                return Ok(());
            }
            if self.closed.get() || Instant::now() >= deadline {
                return Ok(());
            }
            let waited = self.wait_for_records(deadline);
            let cancel = cancelled.wait();
            futures_util::pin_mut!(waited, cancel);
            futures_util::future::select(waited, cancel).await;
        }
    }

    /// Waits until records may be acquirable (new data, released or expired records, room in
    /// the window), or `deadline`.
    async fn wait_for_records(&self, deadline: Instant) {
        let available = self.available.wait();
        let end = self.window.borrow().end_offset();
        let window_max = self.limits().window_max;
        let has_room = self.window.borrow().can_acquire(end, window_max);
        // New data only helps when the window can take it and the log has none past the end.
        let new_data =
            (has_room && self.log.high_watermark() <= end).then(|| self.log.wait_for_offset(end));
        let either = async {
            let mut available = pin!(available);
            let mut new_data = pin!(new_data);
            poll_fn(|cx| {
                if available.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(());
                }
                match new_data.as_mut().as_pin_mut().map(|wait| wait.poll(cx)) {
                    Some(Poll::Ready(_)) => Poll::Ready(()),
                    _ => Poll::Pending,
                }
            })
            .await
        };
        let remaining = deadline.saturating_duration_since(Instant::now());
        // Elapsed is the normal end of a long poll with nothing to hand out.
        let _ = time::timeout(remaining, either).await;
    }

    /// Acquires records for `member` from the log, and writes the start moves and control
    /// record skips it made on the way.
    async fn acquire(
        &self,
        member: u32,
        max_records: u32,
        max_bytes: usize,
    ) -> Result<(Vec<AcquiredRange>, Vec<u8>), Failure> {
        let mut effects = Effects::default();
        let acquired = self
            .acquire_into(member, max_records, max_bytes, &mut effects)
            .await;
        self.write_skips(&mut effects);
        acquired
    }

    /// Writes the records an acquisition skipped so far (control records, damaged batches,
    /// records before the log start). Called before each read it awaits: written after one,
    /// they could land after what another call wrote meanwhile (a group reset) and undo it on
    /// a replay. Not waited for, and not the fetch's failure: a lost skip is made again by the
    /// next fetch, or by the open (records before the log start).
    fn write_skips(&self, effects: &mut Effects) {
        if let Err(failure) = self.record_changes(&effects.changes) {
            tracing::warn!(group = %self.group, error = %failure.message, "could not write the records the share fetch skipped");
        }
        effects.changes.clear();
    }

    /// [`SharePartition::acquire`], putting the window changes to write in `effects`.
    async fn acquire_into(
        &self,
        member: u32,
        max_records: u32,
        max_bytes: usize,
        effects: &mut Effects,
    ) -> Result<(Vec<AcquiredRange>, Vec<u8>), Failure> {
        let mut ranges: Vec<AcquiredRange> = Vec::new();
        let mut out: Vec<u8> = Vec::new();
        let mut from = self.window.borrow().start_offset();
        loop {
            let window_max = self.limits().window_max;
            let high_watermark = self.log.high_watermark();
            let candidate = self.window.borrow().next_candidate(from, window_max);
            let Some(candidate) = candidate.filter(|c| *c < high_watermark) else {
                break;
            };
            let budget = max_bytes.saturating_sub(out.len());
            if budget == 0 {
                break;
            }
            self.write_skips(effects);
            let slice = match self.log.read(candidate, budget).await {
                Ok(slice) => slice,
                Err(LogError::OffsetOutOfRange { .. })
                    if candidate < self.log.log_start_offset() =>
                {
                    let log_start = self.log.log_start_offset();
                    self.window.borrow_mut().skip_removed(log_start, effects);
                    from = log_start;
                    continue;
                }
                Err(LogError::DamagedBatch { last_offset, .. }) => {
                    // Its records can never be delivered: archive them (the log warned) and
                    // go on, rather than stop every consumer of the group at them for good.
                    let mut window = self.window.borrow_mut();
                    let (limit, start) = (self.limits().window_max, window.start_offset());
                    window.skip_records(
                        candidate.max(start),
                        last_offset,
                        DurableState::Archived,
                        limit,
                        effects,
                    );
                    from = last_offset.saturating_add(1);
                    continue;
                }
                Err(error) if ranges.is_empty() => return Err(log_failure(error)),
                Err(_) => break,
            };
            let step = self.take_batches(
                slice.bytes(),
                candidate,
                member,
                max_records,
                max_bytes,
                &mut ranges,
                &mut out,
                effects,
            );
            match step {
                Some(next) if next > candidate => from = next,
                _ => break,
            }
        }
        Ok((ranges, out))
    }

    /// Locks the acquirable records at or after `candidate` in `batches`, appending the batches
    /// that hold any to `out` and settling control records (changes to write go to `effects`).
    /// Returns where to continue, or `None` to stop.
    #[allow(clippy::too_many_arguments)]
    fn take_batches(
        &self,
        batches: &[u8],
        candidate: i64,
        member: u32,
        max_records: u32,
        max_bytes: usize,
        ranges: &mut Vec<AcquiredRange>,
        out: &mut Vec<u8>,
        effects: &mut Effects,
    ) -> Option<i64> {
        let limits = self.limits();
        let deadline_ms = monotonic_ms().saturating_add(limits.lock_ms);
        let mut window = self.window.borrow_mut();
        let mut next = candidate;
        let mut count: u32 = ranges
            .iter()
            .map(|r| (r.last_offset - r.first_offset + 1) as u32)
            .sum();
        // One allocation for the batches this step may add, not one per doubling as they come.
        out.reserve_exact(bytes_to_take(
            batches,
            candidate,
            max_records.saturating_sub(count),
            out.len(),
            max_bytes,
        ));
        // The log checked every batch's CRC when it was written.
        for item in BatchIter::new(batches).without_crc_check() {
            let Ok((header, batch)) = item else {
                return None;
            };
            if header.next_offset() <= candidate {
                continue;
            }
            let first = header.base_offset.max(candidate);
            if header.is_control() {
                // Control records are never delivered (nor sent): settle them on sight.
                window.skip_records(
                    first,
                    header.last_offset(),
                    DurableState::Acknowledged,
                    limits.window_max,
                    effects,
                );
                next = header.next_offset();
                continue;
            }
            if !out.is_empty() && out.len() + batch.len() > max_bytes {
                return None;
            }
            let mut took_any = false;
            for offset in first..=header.last_offset() {
                if count >= max_records {
                    break;
                }
                match window.acquire(offset, member, deadline_ms, limits.window_max) {
                    Some(delivery_count) => {
                        push_acquired(ranges, offset, delivery_count);
                        count += 1;
                        took_any = true;
                    }
                    None if offset >= window.end_offset() => {
                        // The window is full: nothing past it can be taken.
                        if took_any {
                            out.extend_from_slice(batch);
                        }
                        return None;
                    }
                    None => {}
                }
            }
            if took_any {
                out.extend_from_slice(batch);
            }
            next = header.next_offset();
            if count >= max_records {
                return None;
            }
        }
        window.advance();
        Some(next)
    }

    /// Persists `effects` (dead letters first), waiting for durability when `wait` is set.
    /// Records whose dead-letter copy fails are not written as archived (see the module docs).
    async fn persist(
        &self,
        shard: &Rc<Shard>,
        mut effects: Effects,
        wait: bool,
    ) -> Result<(), Failure> {
        if effects.made_available {
            self.available.notify();
        }
        // Written before the copy, which waits: meanwhile other calls may change the same
        // records again (acquire a released record, accept it) and write that at once; written
        // after it, these older states would replace theirs on a replay.
        let written = self.record_changes(&effects.changes)?;
        let mut letters = std::mem::take(&mut effects.dead_letters);
        letters.sort_unstable_by_key(|letter| letter.offset);
        let copied = if letters.is_empty() {
            0
        } else {
            self.copy_dead_letters(shard, &letters).await
        };
        // Made now, from the window as it is after the copy: never older than what was
        // written meanwhile.
        let mut archived = Effects::default();
        if copied > 0 {
            let mut window = self.window.borrow_mut();
            window.archive(&letters[..copied], &mut archived);
            if window.advance() {
                self.available.notify();
            }
        }
        // The file is written in order: the last append durable means all of them are.
        match self.record_changes(&archived.changes)?.or(written) {
            Some(durable) if wait => durable.await.map_err(store_failure),
            _ => Ok(()),
        }
    }

    /// Copies `letters` (in offset order) to the group's dead-letter topic; returns how many,
    /// from the first, may be written as archived (copied, or the group has none).
    async fn copy_dead_letters(&self, shard: &Rc<Shard>, letters: &[DeadLetter]) -> usize {
        let topic = self.config.borrow().dead_letter_topic.clone();
        if topic.is_empty() {
            return letters.len();
        }
        let source = dead_letter::Source {
            group: &self.group,
            topic: &self.topic,
            partition: self.partition,
            log: &self.log,
        };
        let _in_flight = CopyInFlight::enter(&self.copies_in_flight);
        match dead_letter::copy(shard, &source, &topic, letters).await {
            Ok(()) => {
                if self.copy_failing.replace(false) {
                    tracing::info!(group = %self.group, dead_letter_topic = %topic,
                        "archived records are copied to the dead-letter topic again");
                }
                letters.len()
            }
            Err(CopyFailure { handled, failure }) => {
                // Every sweep tries again: one warning per run of failures, not per try.
                if !self.copy_failing.replace(true) {
                    tracing::warn!(group = %self.group, dead_letter_topic = %topic, error = %failure.message,
                        records = letters.len() - handled,
                        "could not copy archived records to the dead-letter topic; trying again at each sweep");
                }
                handled
            }
        }
    }

    /// Appends `changes` to the state file; returns when the last will be durable.
    fn record_changes(&self, changes: &[Change]) -> Result<Option<Durable>, Failure> {
        if changes.is_empty() {
            return Ok(None);
        }
        // A closed share partition is gone from the file (its group or topic was deleted,
        // with a Forget record when the group was): a change written after that would make
        // a replay create it again, and a new group of the same name would inherit it.
        if self.closed.get() {
            return Err(Failure::new(
                ErrorCode::ShuttingDown,
                "the share partition was closed (its group or topic was deleted, or the server is stopping)",
            ));
        }
        let parent = self
            .parent
            .upgrade()
            .ok_or_else(|| Failure::new(ErrorCode::ShuttingDown, "the partition is closing"))?;
        let mut last: Option<Durable> = None;
        for change in changes {
            // The window already holds the change.
            last = Some(parent.record(share_states(&self.group, *change), || {})?);
        }
        Ok(last)
    }

    /// Starts the lease timer once.
    fn ensure_lease_task(self: &Rc<Self>, shard: &Rc<Shard>) {
        if !self.lease_task.replace(true) {
            drop(reactor::spawn(run_leases(
                Rc::clone(shard),
                Rc::downgrade(self),
            )));
        }
    }

    /// State for DescribeGroup.
    pub(crate) fn summary(&self) -> ShareSummary {
        let window = self.window.borrow();
        let (in_flight_records, acquired_records) = window.counts();
        ShareSummary {
            topic: self.topic.clone(),
            partition: self.partition,
            start_offset: window.start_offset(),
            high_watermark: self.log.high_watermark(),
            in_flight_records,
            acquired_records,
        }
    }

    /// Members active recently.
    pub(crate) fn active_members(&self) -> Vec<String> {
        let idle_ms = self.member_idle_ms();
        self.members
            .borrow()
            .active(monotonic_ms(), idle_ms)
            .map(str::to_string)
            .collect()
    }

    /// Restarts the share partition at `start_offset` (a group reset); refused while records
    /// are acquired.
    pub(crate) fn reset(&self, start_offset: i64) -> Result<Durable, Failure> {
        let (_, acquired) = self.window.borrow().counts();
        if acquired > 0 {
            return Err(Failure::new(
                ErrorCode::GroupNotEmpty,
                format!(
                    "{acquired} records of {}/{} are acquired by members",
                    self.topic, self.partition
                ),
            ));
        }
        let parent = self
            .parent
            .upgrade()
            .ok_or_else(|| Failure::new(ErrorCode::ShuttingDown, "the partition is closing"))?;
        let record = StateRecord::ShareStart {
            group: &self.group,
            start_offset,
        };
        let durable = parent.record(record, || self.window.borrow_mut().reset(start_offset))?;
        self.available.notify();
        Ok(durable)
    }
}

impl Drop for SharePartition {
    fn drop(&mut self) {
        // Lets the lease timer notice and end.
        self.leases.notify();
    }
}

/// Counts a dead-letter copy as under way while it lives, also when its future is dropped.
struct CopyInFlight<'a>(&'a Cell<u32>);

impl<'a> CopyInFlight<'a> {
    fn enter(count: &'a Cell<u32>) -> Self {
        count.set(count.get() + 1);
        CopyInFlight(count)
    }
}

impl Drop for CopyInFlight<'_> {
    fn drop(&mut self) {
        debug_assert!(self.0.get() > 0, "copies in flight underflow");
        self.0.set(self.0.get().saturating_sub(1));
    }
}

/// Bytes that [`SharePartition::take_batches`] may append to a response already `out_bytes`
/// long: the whole batches in `batches` holding the next `records` offsets at or after
/// `candidate`, within `max_bytes` by the same rule (the first batch always fits).
fn bytes_to_take(
    batches: &[u8],
    candidate: i64,
    records: u32,
    out_bytes: usize,
    max_bytes: usize,
) -> usize {
    let mut bytes = 0usize;
    let mut offsets = 0u64;
    for item in BatchIter::new(batches).without_crc_check() {
        if offsets >= u64::from(records) {
            break;
        }
        let Ok((header, batch)) = item else {
            break;
        };
        // Control batches are settled, never sent.
        if header.next_offset() <= candidate || header.is_control() {
            continue;
        }
        let total = out_bytes + bytes;
        if total > 0 && total + batch.len() > max_bytes {
            break;
        }
        bytes += batch.len();
        let first = header.base_offset.max(candidate);
        offsets += u64::try_from(header.last_offset() - first + 1).unwrap_or(0);
    }
    bytes
}

fn push_acquired(ranges: &mut Vec<AcquiredRange>, offset: i64, delivery_count: u16) {
    if let Some(last) = ranges.last_mut() {
        if last.last_offset + 1 == offset && last.delivery_count == delivery_count {
            last.last_offset = offset;
            return;
        }
    }
    ranges.push(AcquiredRange {
        first_offset: offset,
        last_offset: offset,
        delivery_count,
    });
}

/// Ends expired locks on time: sleeps until the earliest deadline or until leases change.
async fn run_leases(shard: Rc<Shard>, share: Weak<SharePartition>) {
    loop {
        let (deadline_ms, changed) = {
            let Some(share) = share.upgrade() else { return };
            if share.closed.get() {
                return;
            }
            let deadline = share.window.borrow().next_deadline_ms();
            (deadline, share.leases.wait())
        };
        match deadline_ms {
            None => changed.await,
            Some(deadline_ms) => {
                let wait_ms = deadline_ms.saturating_sub(monotonic_ms());
                if wait_ms > 0 {
                    let _ = time::timeout(Duration::from_millis(wait_ms), changed).await;
                }
            }
        }
        let Some(share) = share.upgrade() else { return };
        if share.closed.get() {
            return;
        }
        let effects = share.sweep(monotonic_ms());
        if let Err(failure) = share.persist(&shard, effects, false).await {
            tracing::warn!(group = %share.group, error = %failure.message, "could not persist expired leases");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::future::{poll_fn, Future};

    use super::FetchAsk;
    use crate::server::latch::Latch;

    /// Acquires up to `max_records`, without waiting, reading up to 1 MiB.
    fn ask(max_records: u32) -> FetchAsk {
        FetchAsk {
            max_records,
            max_wait_ms: 0,
            max_bytes: 1 << 20,
        }
    }
    use std::pin::pin;
    use std::rc::Rc;
    use std::sync::Arc;
    use std::task::Poll;

    use ringlog_engine::batch::{crc_of, set_base_offset, BatchBuilder};
    use ringlog_engine::log::Acks;
    use ringlog_engine::reactor::{block_on, RingConfig};
    use ringlog_engine::topic::TopicConfig;

    use super::{bytes_to_take, SharePartition};
    use crate::error_code::ErrorCode;
    use crate::message::share_acknowledge::{AckRange, AckType};
    use crate::message::share_fetch::AcquiredRange;
    use crate::server::config::ServerConfig;
    use crate::server::group::meta::ShareConfig;
    use crate::server::group::partition_state::tests::open;
    use crate::server::group::partition_state::PartitionGroups;
    use crate::server::shard::Shard;

    /// Three batches of 10, 20 and 30 records at offsets 100, 110 and 130; their sizes.
    fn three_batches() -> (Vec<u8>, [usize; 3]) {
        let mut out = Vec::new();
        let mut sizes = [0; 3];
        let mut base_offset = 100;
        for (slot, records) in [10, 20, 30].into_iter().enumerate() {
            let mut builder = BatchBuilder::new(Vec::new(), 0);
            for _ in 0..records {
                builder.push(0, None, Some(b"value"), &[]).unwrap();
            }
            let mut batch = builder.finish().to_vec();
            set_base_offset(&mut batch, base_offset).unwrap();
            base_offset += records;
            sizes[slot] = batch.len();
            out.extend_from_slice(&batch);
        }
        (out, sizes)
    }

    #[test]
    fn counts_the_batches_holding_the_wanted_records() {
        let (batches, [a, b, c]) = three_batches();
        assert_eq!(bytes_to_take(&batches, 100, 10, 0, usize::MAX), a);
        assert_eq!(bytes_to_take(&batches, 100, 11, 0, usize::MAX), a + b);
        assert_eq!(
            bytes_to_take(&batches, 100, 1_000, 0, usize::MAX),
            a + b + c
        );
        assert_eq!(bytes_to_take(&batches, 100, 0, 0, usize::MAX), 0);
    }

    #[test]
    fn starts_at_the_candidate_offset() {
        let (batches, [_, b, c]) = three_batches();
        // Offsets 125..130 are the last 5 of the second batch.
        assert_eq!(bytes_to_take(&batches, 125, 5, 0, usize::MAX), b);
        assert_eq!(bytes_to_take(&batches, 125, 6, 0, usize::MAX), b + c);
        assert_eq!(bytes_to_take(&batches, 130, 1_000, 0, usize::MAX), c);
    }

    #[test]
    fn stops_at_max_bytes_but_always_takes_a_first_batch() {
        let (batches, [a, b, _]) = three_batches();
        assert_eq!(bytes_to_take(&batches, 100, 1_000, 0, a + b), a + b);
        assert_eq!(bytes_to_take(&batches, 100, 1_000, 0, a + b - 1), a);
        assert_eq!(bytes_to_take(&batches, 100, 1_000, 0, 1), a);
        // A response that already holds bytes gets nothing that would pass max_bytes.
        assert_eq!(bytes_to_take(&batches, 100, 1_000, 10, a), 0);
    }

    /// A batch of one record; a control batch claiming offsets `0..=last_offset_delta` when
    /// `last_offset_delta` is set.
    fn one_record(last_offset_delta: Option<i32>) -> Vec<u8> {
        let mut builder = BatchBuilder::new(Vec::new(), 0);
        builder.push(0, None, Some(b"value"), &[]).unwrap();
        let mut batch = builder.finish().to_vec();
        if let Some(delta) = last_offset_delta {
            // RecordBatch v2: crc at 17..21, attributes at 21..23, lastOffsetDelta at 23..27.
            batch[21..23].copy_from_slice(&0x20i16.to_be_bytes());
            batch[23..27].copy_from_slice(&delta.to_be_bytes());
            let crc = crc_of(&batch);
            batch[17..21].copy_from_slice(&crc.to_be_bytes());
        }
        batch
    }

    #[test]
    fn a_control_batch_claiming_two_billion_offsets_is_passed_in_one_fetch() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_path_buf();
        block_on(RingConfig::default(), async move {
            let (log, groups) = open(&path).await;
            let mut marker = one_record(Some(i32::MAX));
            log.append(&mut marker, Acks::Leader).await.unwrap();
            let mut record = one_record(None);
            let after = log.append(&mut record, Acks::Leader).await.unwrap();
            let after = after.base_offset;
            assert_eq!(after, i64::from(i32::MAX) + 1);
            let config = Rc::new(ShareConfig::with_defaults(100));
            let share = groups.share_or_create("s", &config).unwrap();
            let (acquired, _) = share.acquire(1, 10, 1 << 20).await.unwrap();
            let expected = AcquiredRange {
                first_offset: after,
                last_offset: after,
                delivery_count: 1,
            };
            assert_eq!(acquired, [expected]);
            groups.close().await;
            log.close().await.unwrap();
        })
        .unwrap();
    }

    /// One shard (the only one) with topic `t` and its dead-letter topic `t.dlq`, one
    /// partition each, `records` records in `t`, and share group `s` copying to `t.dlq`.
    async fn shard_with_dead_letters(
        dir: &std::path::Path,
        records: usize,
    ) -> (Rc<Shard>, Rc<SharePartition>) {
        let config = Rc::new(ServerConfig {
            cache_bytes_per_shard: 1 << 20,
            read_ahead_bytes_per_shard: 1 << 20,
            ..ServerConfig::default()
        });
        let shard = Shard::new(0, 1, config, dir.to_path_buf(), Vec::new(), Arc::default());
        let topic = TopicConfig {
            segment_bytes: 1 << 20,
            ..TopicConfig::new(1)
        };
        for name in ["t", "t.dlq"] {
            std::fs::create_dir(dir.join(name)).unwrap();
            shard.open_topic(name, topic.clone()).await.unwrap();
        }
        let log = shard.local_log("t", 0).unwrap();
        for _ in 0..records {
            let mut record = one_record(None);
            log.append(&mut record, Acks::Leader).await.unwrap();
        }
        let mut config = ShareConfig::with_defaults(100);
        config.dead_letter_topic = "t.dlq".to_string();
        let state = shard.groups.partition("t", 0).unwrap();
        let share = state.share_or_create("s", &Rc::new(config)).unwrap();
        (shard, share)
    }

    fn range(offset: i64, ack_type: AckType) -> AckRange {
        AckRange {
            first_offset: offset,
            last_offset: offset,
            ack_type,
        }
    }

    #[test]
    fn a_dead_letter_copy_ending_after_its_group_was_deleted_does_not_bring_it_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_path_buf();
        block_on(RingConfig::default(), async move {
            let (shard, share) = shard_with_dead_letters(&path, 1).await;
            let fetched = share
                .fetch(&shard, "a", &[], ask(1), &Latch::default())
                .await
                .unwrap();
            assert_eq!(fetched.acquired.len(), 1);
            // The rejection waits in its copy while the group is deleted.
            let reject = [range(0, AckType::Reject)];
            let mut a = pin!(share.acknowledge(&shard, "a", &reject, false));
            let first_poll = poll_fn(|cx| Poll::Ready(a.as_mut().poll(cx))).await;
            assert!(first_poll.is_pending(), "the copy is under way");
            let state = shard.groups.partition("t", 0).unwrap();
            state.forget("s").unwrap().unwrap().await.unwrap();
            let results = a.await;
            let code = results[0].failure.as_ref().map(|f| f.code);
            assert_eq!(
                code,
                Some(ErrorCode::ShuttingDown),
                "not written: not answered as done"
            );

            state.close().await;
            let files = Rc::default();
            let replayed = PartitionGroups::open("t", 0, Rc::clone(&state.log), files)
                .await
                .unwrap();
            assert!(replayed.share("s").is_none(), "the deleted group is back");
            replayed.close().await;
        })
        .unwrap();
    }

    #[test]
    fn one_request_settles_at_most_twice_the_window() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_path_buf();
        block_on(RingConfig::default(), async move {
            // The group's window is 100 records: a member holding them all may settle 200.
            let (shard, share) = shard_with_dead_letters(&path, 100).await;
            let fetched = share
                .fetch(&shard, "a", &[], ask(100), &Latch::default())
                .await
                .unwrap();
            assert_eq!(fetched.acquired.len(), 1);
            assert_eq!(fetched.acquired[0].last_offset, 99);
            let all = |ack_type| AckRange {
                first_offset: 0,
                last_offset: 99,
                ack_type,
            };
            let ranges = [
                all(AckType::Renew),
                all(AckType::Renew),
                all(AckType::Renew),
                range(1_000, AckType::Accept),
                all(AckType::Accept),
            ];
            let results = share.acknowledge(&shard, "a", &ranges, false).await;
            let codes: Vec<_> = results
                .iter()
                .map(|r| r.failure.as_ref().map(|f| f.code))
                .collect();
            assert_eq!(
                codes,
                [
                    None,
                    None,
                    Some(ErrorCode::InvalidRequest),
                    Some(ErrorCode::InvalidRecordState),
                    Some(ErrorCode::InvalidRequest),
                ]
            );
            // The refused ranges changed nothing; the next request settles them.
            let results = share
                .acknowledge(&shard, "a", &[all(AckType::Accept)], false)
                .await;
            assert!(results[0].failure.is_none(), "{results:?}");
            assert_eq!(share.start_offset(), 100);
        })
        .unwrap();
    }

    #[test]
    fn a_change_made_during_a_dead_letter_copy_is_not_undone_by_an_older_one_on_restart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_path_buf();
        block_on(RingConfig::default(), async move {
            let (shard, share) = shard_with_dead_letters(&path, 2).await;
            let fetched = share
                .fetch(&shard, "a", &[], ask(2), &Latch::default())
                .await
                .unwrap();
            assert_eq!(fetched.acquired.len(), 1);
            assert_eq!(fetched.acquired[0].last_offset, 1);
            // Member a rejects 0 (copied to the dead-letter topic) and releases 1; its call
            // is left waiting in the copy.
            let acks = [range(0, AckType::Reject), range(1, AckType::Release)];
            let mut a = pin!(share.acknowledge(&shard, "a", &acks, false));
            let first_poll = poll_fn(|cx| Poll::Ready(a.as_mut().poll(cx))).await;
            assert!(first_poll.is_pending(), "the copy is under way");
            // Meanwhile member b acquires 1 (its second delivery) and accepts it.
            let fetched = share
                .fetch(&shard, "b", &[], ask(10), &Latch::default())
                .await
                .unwrap();
            let expected = AcquiredRange {
                first_offset: 1,
                last_offset: 1,
                delivery_count: 2,
            };
            assert_eq!(fetched.acquired, [expected]);
            let accepted = share
                .acknowledge(&shard, "b", &[range(1, AckType::Accept)], false)
                .await;
            assert!(accepted.iter().all(|r| r.failure.is_none()), "{accepted:?}");
            let rejected = a.await;
            assert!(rejected.iter().all(|r| r.failure.is_none()), "{rejected:?}");
            assert_eq!(share.start_offset(), 2, "0 archived, 1 accepted");

            // The state file replays to the same: 1 stays accepted.
            let state = shard.groups.partition("t", 0).unwrap();
            state.close().await;
            let files = Rc::default();
            let replayed = PartitionGroups::open("t", 0, Rc::clone(&state.log), files)
                .await
                .unwrap();
            let share = replayed.share("s").unwrap();
            assert_eq!(share.start_offset(), 2, "1 would be delivered again");
            replayed.close().await;
        })
        .unwrap();
    }
}
