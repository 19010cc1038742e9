//! The in-flight window of one share partition (KIP-932): the state and delivery count of
//! every record from the share-partition start offset up to the last record ever acquired.
//!
//! Pure state: time is passed in (monotonic ms), nothing here waits or does I/O, so the rules
//! are tested directly. Records before the start offset are all Acknowledged or Archived; the
//! start offset moves past such records at the front. The window never holds more than the
//! group's `in_flight_records_max` records, so a record stuck at the front blocks new
//! acquisitions beyond the bound rather than letting memory grow.
//!
//! A record archived while the group has a dead-letter topic is Archiving until its copy there
//! is made: the start stays before it, so its archived state is neither written nor implied by
//! a later start before the copy exists.

use std::collections::VecDeque;

use crate::server::group::state_record::DurableState;

/// State of one record inside the window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RecordState {
    /// May be acquired.
    Available,
    /// Locked to one member until its deadline.
    Acquired,
    /// Processed.
    Acknowledged,
    /// Rejected or out of deliveries.
    Archived,
    /// Archived, waiting for its dead-letter copy (see [`Window::archive`]); not done yet.
    Archiving(DeadLetterReason),
}

/// Member number meaning "nobody".
pub(crate) const NO_HOLDER: u32 = 0;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    state: RecordState,
    delivery_count: u16,
    /// The member holding the record, or that held it when its lock expired (so its late
    /// acknowledgement is told LeaseExpired); [`NO_HOLDER`] otherwise.
    holder: u32,
    deadline_ms: u64,
}

impl Entry {
    const NEW: Entry = Entry {
        state: RecordState::Available,
        delivery_count: 0,
        holder: NO_HOLDER,
        deadline_ms: 0,
    };

    fn is_done(&self) -> bool {
        matches!(
            self.state,
            RecordState::Acknowledged | RecordState::Archived
        )
    }

    /// The state as written to disk: Acquired is transient and counts the delivery in progress
    /// as not having happened (KIP-932).
    fn durable(&self) -> (DurableState, u16) {
        match self.state {
            RecordState::Available => (DurableState::Available, self.delivery_count),
            // Until its archived state is written, the record is as last written: Available,
            // with the delivery that ended not counted (as for Acquired).
            RecordState::Acquired | RecordState::Archiving(_) => (
                DurableState::Available,
                self.delivery_count.saturating_sub(1),
            ),
            RecordState::Acknowledged => (DurableState::Acknowledged, self.delivery_count),
            RecordState::Archived => (DurableState::Archived, self.delivery_count),
        }
    }
}

/// How an acknowledgement settles records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Settle {
    /// Processed.
    Accept,
    /// Available again now (archived instead at the delivery limit).
    Release,
    /// Archived.
    Reject,
    /// Lock extended.
    Renew,
}

/// An acknowledgement of records `first..=last` by member `holder`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Ack {
    /// First offset.
    pub(crate) first: i64,
    /// Last offset, inclusive.
    pub(crate) last: i64,
    /// The member acknowledging.
    pub(crate) holder: u32,
    /// What to do with the records.
    pub(crate) settle: Settle,
}

/// Why an acknowledgement range was refused (nothing in it changed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AckError {
    /// `first > last`.
    Inverted,
    /// Some offsets are outside the in-flight window.
    OutOfWindow,
    /// Some records are not held by this member.
    NotHeld,
    /// Some records were held by this member but their lock expired.
    Expired,
    /// Refused by the caller: the request's earlier ranges used its budget of records.
    OverBudget,
}

/// Why a record goes to the dead-letter topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DeadLetterReason {
    /// A consumer rejected it.
    Rejected,
    /// Released (or its lock expired) after `delivery_limit` deliveries.
    DeliveryLimit,
}

impl DeadLetterReason {
    /// The header value written to the dead-letter record.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            DeadLetterReason::Rejected => "rejected",
            DeadLetterReason::DeliveryLimit => "delivery limit reached",
        }
    }
}

/// A record archived by an operation, to be copied to the dead-letter topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DeadLetter {
    /// Its offset.
    pub(crate) offset: i64,
    /// Deliveries it had.
    pub(crate) delivery_count: u16,
    /// Why it was archived.
    pub(crate) reason: DeadLetterReason,
}

/// Records `first..=last` now have `state` and `delivery_count`: one state-file record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Change {
    /// First offset.
    pub(crate) first: i64,
    /// Last offset, inclusive.
    pub(crate) last: i64,
    /// Durable state.
    pub(crate) state: DurableState,
    /// Delivery count.
    pub(crate) delivery_count: u16,
}

/// What an operation changed, for the caller to persist and act on.
#[derive(Debug, Default)]
pub(crate) struct Effects {
    /// State-file records to write.
    pub(crate) changes: Vec<Change>,
    /// Records now Archiving, to copy to the dead-letter topic; [`Window::archive`] then
    /// makes them Archived and puts their changes here.
    pub(crate) dead_letters: Vec<DeadLetter>,
    /// Some record became available (waiting fetches may acquire it).
    pub(crate) made_available: bool,
}

impl Effects {
    fn push_change(&mut self, offset: i64, (state, delivery_count): (DurableState, u16)) {
        if let Some(last) = self.changes.last_mut() {
            if last.last + 1 == offset
                && last.state == state
                && last.delivery_count == delivery_count
            {
                last.last = offset;
                return;
            }
        }
        self.changes.push(Change {
            first: offset,
            last: offset,
            state,
            delivery_count,
        });
    }
}

/// Ends the lock on the acquired record at `offset` (released, expired, its holder gone): the
/// record is Available again, or Archiving once it reached `delivery_limit`.
fn end_lock(entry: &mut Entry, offset: i64, delivery_limit: u16, effects: &mut Effects) {
    if entry.delivery_count >= delivery_limit {
        archive_later(entry, offset, DeadLetterReason::DeliveryLimit, effects);
        return;
    }
    entry.state = RecordState::Available;
    effects.made_available = true;
    effects.push_change(offset, entry.durable());
}

/// Archives `entry` (at `offset`) in memory only: its archived state is written once its
/// dead-letter copy is made (see [`Window::archive`]).
fn archive_later(entry: &mut Entry, offset: i64, reason: DeadLetterReason, effects: &mut Effects) {
    entry.state = RecordState::Archiving(reason);
    effects.dead_letters.push(DeadLetter {
        offset,
        delivery_count: entry.delivery_count,
        reason,
    });
}

/// Rules that come from the group's configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Limits {
    /// Deliveries after which a released or expired record is archived.
    pub(crate) delivery_limit: u16,
    /// Lock duration given by acquisition and renewal.
    pub(crate) lock_ms: u64,
    /// Most records the window may span.
    pub(crate) window_max: usize,
}

/// The in-flight window; see the module docs.
#[derive(Debug, Clone)]
pub(crate) struct Window {
    start: i64,
    entries: VecDeque<Entry>,
}

impl Window {
    /// An empty window starting at `start`.
    pub(crate) fn new(start: i64) -> Window {
        Window {
            start,
            entries: VecDeque::new(),
        }
    }

    /// Every record before this offset is acknowledged or archived.
    pub(crate) fn start_offset(&self) -> i64 {
        self.start
    }

    /// The offset after the last record ever acquired.
    pub(crate) fn end_offset(&self) -> i64 {
        self.start + self.entries.len() as i64
    }

    /// Records from the start offset to the end offset.
    pub(crate) fn span(&self) -> usize {
        self.entries.len()
    }

    /// How many offsets of `first..=last` are in the window (what settling them walks).
    pub(crate) fn records_in(&self, first: i64, last: i64) -> usize {
        let first = first.max(self.start);
        let last = last.min(self.end_offset() - 1);
        // Negative when the range misses the window.
        usize::try_from(last.saturating_sub(first).saturating_add(1)).unwrap_or(0)
    }

    fn entry(&self, offset: i64) -> Option<&Entry> {
        let index = usize::try_from(offset.checked_sub(self.start)?).ok()?;
        self.entries.get(index)
    }

    fn entry_mut(&mut self, offset: i64) -> Option<&mut Entry> {
        let index = usize::try_from(offset.checked_sub(self.start)?).ok()?;
        self.entries.get_mut(index)
    }

    /// The first offset at or after `from` worth trying to acquire: an Available record in
    /// the window, else the end of the window if it may still grow (`None` when it is full).
    pub(crate) fn next_candidate(&self, from: i64, window_max: usize) -> Option<i64> {
        let from = from.max(self.start);
        let skip = usize::try_from(from - self.start).unwrap_or(usize::MAX);
        let found = self
            .entries
            .iter()
            .enumerate()
            .skip(skip)
            .find(|(_, entry)| entry.state == RecordState::Available)
            .map(|(index, _)| self.start + index as i64);
        found.or_else(|| (self.entries.len() < window_max).then(|| self.end_offset().max(from)))
    }

    /// Whether `offset` could be acquired now (Available, or the next record past the end of a
    /// window with room).
    pub(crate) fn can_acquire(&self, offset: i64, window_max: usize) -> bool {
        match self.entry(offset) {
            Some(entry) => entry.state == RecordState::Available,
            None => offset == self.end_offset() && self.entries.len() < window_max,
        }
    }

    /// Acquires `offset` for `holder` until `deadline_ms`; returns its delivery count, or
    /// `None` when it cannot be acquired (see [`Window::can_acquire`]).
    pub(crate) fn acquire(
        &mut self,
        offset: i64,
        holder: u32,
        deadline_ms: u64,
        window_max: usize,
    ) -> Option<u16> {
        debug_assert_ne!(holder, NO_HOLDER);
        if !self.can_acquire(offset, window_max) {
            return None;
        }
        if offset == self.end_offset() {
            self.entries.push_back(Entry::NEW);
        }
        let entry = self.entry_mut(offset)?;
        entry.state = RecordState::Acquired;
        entry.delivery_count = entry.delivery_count.saturating_add(1);
        entry.holder = holder;
        entry.deadline_ms = deadline_ms;
        Some(entry.delivery_count)
    }

    /// Settles records `first..=last` that are never delivered as `settled`: Acknowledged for
    /// a control batch, Archived for a batch damaged on disk. Those available in the window,
    /// then those past its end while it has room. When every record in the window is settled
    /// and the range reaches past its end, the start jumps past the range instead: a batch may
    /// claim up to 2^31 offsets, and walking them would stall the shard. The changes go to
    /// `effects`: unwritten, the start would fall back behind them on a restart.
    pub(crate) fn skip_records(
        &mut self,
        first: i64,
        last: i64,
        settled: DurableState,
        window_max: usize,
        effects: &mut Effects,
    ) {
        let record_state = match settled {
            DurableState::Acknowledged => RecordState::Acknowledged,
            DurableState::Archived => RecordState::Archived,
            DurableState::Available => unreachable!("skipped records are settled"),
        };
        let first = first.max(self.start);
        if last < first {
            return;
        }
        let end = self.end_offset();
        if first <= end && last >= end && self.entries.iter().all(Entry::is_done) {
            effects.changes.push(Change {
                first: self.start,
                last,
                state: settled,
                delivery_count: 0,
            });
            self.entries.clear();
            self.start = last.saturating_add(1);
            return;
        }
        // Nothing at or past start + window_max can enter the window: at most that many
        // rounds (or the window's length, when a smaller bound was configured since).
        let span = i64::try_from(window_max).unwrap_or(i64::MAX);
        let last = last.min(self.start.saturating_add(span).max(end) - 1);
        for offset in first..=last {
            if offset == self.end_offset() {
                if self.entries.len() >= window_max {
                    break;
                }
                self.entries.push_back(Entry {
                    state: record_state,
                    ..Entry::NEW
                });
            } else if let Some(entry) = self.entry_mut(offset) {
                if entry.state != RecordState::Available {
                    continue;
                }
                entry.state = record_state;
            } else {
                // A gap before the range: the window cannot grow across it.
                break;
            }
            effects.push_change(offset, (settled, 0));
        }
    }

    /// Settles the records of `ack`: all of the range or nothing.
    pub(crate) fn settle(
        &mut self,
        ack: Ack,
        now_ms: u64,
        limits: &Limits,
        effects: &mut Effects,
    ) -> Result<(), AckError> {
        let Ack {
            first,
            last,
            holder,
            settle,
        } = ack;
        if first > last {
            return Err(AckError::Inverted);
        }
        if first < self.start || last >= self.end_offset() {
            return Err(AckError::OutOfWindow);
        }
        self.check_held(first, last, holder, now_ms)?;
        for offset in first..=last {
            let Some(entry) = self.entry_mut(offset) else {
                continue;
            };
            match settle {
                Settle::Accept => entry.state = RecordState::Acknowledged,
                Settle::Reject => {
                    archive_later(entry, offset, DeadLetterReason::Rejected, effects);
                    continue;
                }
                Settle::Release => {
                    entry.holder = NO_HOLDER;
                    end_lock(entry, offset, limits.delivery_limit, effects);
                    continue;
                }
                Settle::Renew => {
                    entry.deadline_ms = now_ms.saturating_add(limits.lock_ms);
                    continue;
                }
            }
            let durable = entry.durable();
            effects.push_change(offset, durable);
        }
        Ok(())
    }

    fn check_held(&self, first: i64, last: i64, holder: u32, now_ms: u64) -> Result<(), AckError> {
        let mut expired = false;
        for offset in first..=last {
            let entry = self.entry(offset).ok_or(AckError::OutOfWindow)?;
            if entry.holder != holder || holder == NO_HOLDER {
                return Err(AckError::NotHeld);
            }
            match entry.state {
                RecordState::Acquired if entry.deadline_ms > now_ms => {}
                RecordState::Acquired | RecordState::Available => expired = true,
                RecordState::Acknowledged | RecordState::Archived | RecordState::Archiving(_) => {
                    return Err(AckError::NotHeld)
                }
            }
        }
        if expired {
            Err(AckError::Expired)
        } else {
            Ok(())
        }
    }

    /// Ends every lock whose deadline passed: the record is Available again, or Archiving once
    /// it reached the delivery limit.
    pub(crate) fn expire(&mut self, now_ms: u64, delivery_limit: u16, effects: &mut Effects) {
        let start = self.start;
        for (index, entry) in self.entries.iter_mut().enumerate() {
            if entry.state != RecordState::Acquired || entry.deadline_ms > now_ms {
                continue;
            }
            // The holder is kept so its late acknowledgement reads LeaseExpired.
            end_lock(entry, start + index as i64, delivery_limit, effects);
        }
    }

    /// Ends the locks of every record `holder` holds (it left the group): as at a lock's end,
    /// the record is Available again, or Archiving once it reached the delivery limit.
    pub(crate) fn release_held_by(
        &mut self,
        holder: u32,
        delivery_limit: u16,
        effects: &mut Effects,
    ) {
        assert_ne!(holder, NO_HOLDER, "only a member holds records");
        let start = self.start;
        for (index, entry) in self.entries.iter_mut().enumerate() {
            if entry.state != RecordState::Acquired || entry.holder != holder {
                continue;
            }
            entry.holder = NO_HOLDER;
            end_lock(entry, start + index as i64, delivery_limit, effects);
        }
    }

    /// Puts every Archiving record in `effects.dead_letters` (their copies failed before).
    pub(crate) fn pending_dead_letters(&self, effects: &mut Effects) {
        for (index, entry) in self.entries.iter().enumerate() {
            if let RecordState::Archiving(reason) = entry.state {
                effects.dead_letters.push(DeadLetter {
                    offset: self.start + index as i64,
                    delivery_count: entry.delivery_count,
                    reason,
                });
            }
        }
    }

    /// Archives the records of `letters` that are still Archiving (their dead-letter copies
    /// exist now, or the group has no dead-letter topic), with their changes in `effects`.
    pub(crate) fn archive(&mut self, letters: &[DeadLetter], effects: &mut Effects) {
        for letter in letters {
            let Some(entry) = self.entry_mut(letter.offset) else {
                // Removed by retention, or the share partition was reset, meanwhile.
                continue;
            };
            if matches!(entry.state, RecordState::Archiving(_)) {
                entry.state = RecordState::Archived;
                let durable = entry.durable();
                effects.push_change(letter.offset, durable);
            }
        }
    }

    /// Moves the start offset past acknowledged and archived records at the front; true when
    /// it moved.
    pub(crate) fn advance(&mut self) -> bool {
        let before = self.start;
        while self.entries.front().is_some_and(Entry::is_done) {
            self.entries.pop_front();
            self.start += 1;
        }
        self.start != before
    }

    /// Drops the records before `offset` (removed from the log by retention) and puts the move
    /// in `effects`; true when the start moved. Unwritten, a restart would go back to the old
    /// start, and a replay from there would miss changes made beyond its reach.
    pub(crate) fn skip_removed(&mut self, offset: i64, effects: &mut Effects) -> bool {
        let before = self.start;
        if offset <= before {
            return false;
        }
        self.skip_to(offset);
        // Archived: gone without being processed. [`Window::replay`] moves its start past a
        // done range that begins at or before it, however long the range.
        effects.changes.push(Change {
            first: before,
            last: offset - 1,
            state: DurableState::Archived,
            delivery_count: 0,
        });
        true
    }

    /// Drops the records before `offset` (removed from the log by retention).
    pub(crate) fn skip_to(&mut self, offset: i64) {
        while self.start < offset {
            if self.entries.pop_front().is_none() {
                self.start = offset;
                return;
            }
            self.start += 1;
        }
    }

    /// Empties the window and restarts it at `start`.
    pub(crate) fn reset(&mut self, start: i64) {
        self.entries.clear();
        self.start = start;
    }

    /// (records not yet acknowledged or archived, of which acquired).
    pub(crate) fn counts(&self) -> (u32, u32) {
        let mut in_flight = 0u32;
        let mut acquired = 0u32;
        for entry in &self.entries {
            if !entry.is_done() {
                in_flight += 1;
            }
            if entry.state == RecordState::Acquired {
                acquired += 1;
            }
        }
        (in_flight, acquired)
    }

    /// The earliest lock deadline, if any record is acquired.
    pub(crate) fn next_deadline_ms(&self) -> Option<u64> {
        self.entries
            .iter()
            .filter(|entry| entry.state == RecordState::Acquired)
            .map(|entry| entry.deadline_ms)
            .min()
    }

    /// The durable content of the window as state-file changes (records never delivered and
    /// still available are left out: they are what a new window holds anyway).
    pub(crate) fn snapshot(&self, mut emit: impl FnMut(Change)) {
        let mut effects = Effects::default();
        for (index, entry) in self.entries.iter().enumerate() {
            let durable = entry.durable();
            if durable != (DurableState::Available, 0) {
                effects.push_change(self.start + index as i64, durable);
            }
        }
        for change in effects.changes {
            emit(change);
        }
    }

    /// Replays one state-file record. Offsets before the start are already done; a done range
    /// that begins at or before the start moves the start past it; otherwise the window grows
    /// (with never-delivered records) to cover the rest. `window_max` is the most records a
    /// live window ever spanned (the configured bound's upper limit).
    pub(crate) fn replay(&mut self, change: Change, window_max: usize) {
        let done = matches!(
            change.state,
            DurableState::Acknowledged | DurableState::Archived
        );
        if done && change.first <= self.start {
            // Everything up to `last` is done: move the start rather than fill the window (a
            // retention skip may span any number of offsets).
            self.skip_to(change.last.saturating_add(1));
            return;
        }
        self.catch_up(change.last, window_max);
        let first = change.first.max(self.start);
        if change.last < first {
            return;
        }
        for offset in first..=change.last {
            while offset >= self.end_offset() {
                // Unreachable after `catch_up`; the bound holds even if that changes.
                if self.entries.len() >= window_max {
                    debug_assert!(false, "replay past the window bound");
                    return;
                }
                self.entries.push_back(Entry::NEW);
            }
            if let Some(entry) = self.entry_mut(offset) {
                entry.state = match change.state {
                    DurableState::Available => RecordState::Available,
                    DurableState::Acknowledged => RecordState::Acknowledged,
                    DurableState::Archived => RecordState::Archived,
                };
                entry.delivery_count = change.delivery_count;
                entry.holder = NO_HOLDER;
            }
        }
    }

    /// Moves the start up to where `last` is inside a window of `window_max` records. When a
    /// change to `last` was made, the live window held it and spanned at most `window_max`
    /// records, so everything before `last + 1 - window_max` was done. Files written before
    /// start moves were recorded can lag that far behind.
    fn catch_up(&mut self, last: i64, window_max: usize) {
        let span = i64::try_from(window_max).unwrap_or(i64::MAX);
        let reach = self.start.saturating_add(span);
        if last >= reach {
            self.skip_to(last.saturating_sub(span).saturating_add(1));
        }
    }

    /// Readies a replayed window for a log that starts at `log_start`: moves the start past
    /// done and removed records, drops what carries no information, and gives back the memory
    /// a replay may have taken (it can fill the window up to its bound).
    pub(crate) fn finish_replay(&mut self, log_start: i64) {
        self.advance();
        self.trim_end();
        self.skip_to(log_start);
        self.advance();
        self.entries.shrink_to_fit();
    }

    /// Drops never-delivered available records at the end (after a replay they carry no
    /// information).
    fn trim_end(&mut self) {
        while self
            .entries
            .back()
            .is_some_and(|entry| *entry == Entry::NEW)
        {
            self.entries.pop_back();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ack(first: i64, last: i64, holder: u32, settle: Settle) -> Ack {
        Ack {
            first,
            last,
            holder,
            settle,
        }
    }

    const LIMITS: Limits = Limits {
        delivery_limit: 3,
        lock_ms: 100,
        window_max: 4,
    };

    fn acquire_all(window: &mut Window, holder: u32, now_ms: u64, count: usize) -> Vec<(i64, u16)> {
        let mut got = Vec::new();
        let mut from = window.start_offset();
        while got.len() < count {
            let Some(offset) = window.next_candidate(from, LIMITS.window_max) else {
                break;
            };
            let deadline = now_ms + LIMITS.lock_ms;
            let Some(delivery) = window.acquire(offset, holder, deadline, LIMITS.window_max) else {
                break;
            };
            got.push((offset, delivery));
            from = offset + 1;
        }
        got
    }

    #[test]
    fn acquire_accept_and_advance() {
        let mut window = Window::new(10);
        assert_eq!(acquire_all(&mut window, 1, 0, 2), [(10, 1), (11, 1)]);
        assert_eq!(window.counts(), (2, 2));
        let mut effects = Effects::default();
        window
            .settle(ack(11, 11, 1, Settle::Accept), 1, &LIMITS, &mut effects)
            .unwrap();
        assert!(!window.advance(), "10 still blocks the start");
        window
            .settle(ack(10, 10, 1, Settle::Accept), 1, &LIMITS, &mut effects)
            .unwrap();
        assert!(window.advance());
        assert_eq!((window.start_offset(), window.end_offset()), (12, 12));
        assert_eq!(effects.changes.len(), 2);
    }

    #[test]
    fn records_in_counts_the_part_inside_the_window() {
        let mut window = Window::new(10);
        acquire_all(&mut window, 1, 0, 3);
        assert_eq!(window.records_in(i64::MIN, i64::MAX), 3);
        assert_eq!(window.records_in(11, 11), 1);
        assert_eq!(window.records_in(12, 20), 1);
        assert_eq!(window.records_in(0, 9), 0);
        assert_eq!(window.records_in(13, 13), 0);
        assert_eq!(window.records_in(12, 11), 0);
        assert_eq!(Window::new(5).records_in(0, 10), 0);
    }

    #[test]
    fn window_is_bounded() {
        let mut window = Window::new(0);
        assert_eq!(acquire_all(&mut window, 1, 0, 10).len(), LIMITS.window_max);
        assert_eq!(window.next_candidate(0, LIMITS.window_max), None);
        let mut effects = Effects::default();
        window
            .settle(ack(1, 3, 1, Settle::Accept), 1, &LIMITS, &mut effects)
            .unwrap();
        assert!(!window.advance());
        assert_eq!(
            window.next_candidate(0, LIMITS.window_max),
            None,
            "0 still blocks"
        );
        window
            .settle(ack(0, 0, 1, Settle::Release), 1, &LIMITS, &mut effects)
            .unwrap();
        assert!(effects.made_available);
        assert_eq!(window.next_candidate(0, LIMITS.window_max), Some(0));
    }

    #[test]
    fn bad_acks_change_nothing() {
        let mut window = Window::new(0);
        acquire_all(&mut window, 1, 0, 3);
        let mut effects = Effects::default();
        let mut settle = |window: &mut Window, first, last, holder, now| {
            window.settle(
                ack(first, last, holder, Settle::Accept),
                now,
                &LIMITS,
                &mut effects,
            )
        };
        assert_eq!(settle(&mut window, 2, 1, 1, 1), Err(AckError::Inverted));
        assert_eq!(settle(&mut window, 0, 3, 1, 1), Err(AckError::OutOfWindow));
        assert_eq!(settle(&mut window, 0, 0, 2, 1), Err(AckError::NotHeld));
        assert_eq!(settle(&mut window, 0, 0, 1, 500), Err(AckError::Expired));
        assert_eq!(window.counts(), (3, 3));
        assert!(effects.changes.is_empty());
    }

    #[test]
    fn expiry_redelivers_then_archives_at_the_limit() {
        let mut window = Window::new(0);
        let mut now = 0;
        let mut effects = Effects::default();
        for delivery in 1..=LIMITS.delivery_limit {
            assert_eq!(acquire_all(&mut window, 7, now, 1), [(0, delivery)]);
            assert_eq!(window.next_deadline_ms(), Some(now + LIMITS.lock_ms));
            now += LIMITS.lock_ms;
            effects = Effects::default();
            window.expire(now, LIMITS.delivery_limit, &mut effects);
            if delivery < LIMITS.delivery_limit {
                assert!(effects.made_available && effects.dead_letters.is_empty());
                // The late ack of the expired holder is told so.
                let late = window.settle(ack(0, 0, 7, Settle::Accept), now, &LIMITS, &mut effects);
                assert_eq!(late, Err(AckError::Expired));
            } else {
                assert_eq!(
                    effects.dead_letters,
                    [DeadLetter {
                        offset: 0,
                        delivery_count: 3,
                        reason: DeadLetterReason::DeliveryLimit
                    }]
                );
            }
        }
        assert!(effects.changes.is_empty(), "archived once copied");
        assert!(!window.advance(), "the start waits for the copy");
        let letters = std::mem::take(&mut effects.dead_letters);
        window.archive(&letters, &mut effects);
        assert_eq!(
            effects.changes,
            [Change {
                first: 0,
                last: 0,
                state: DurableState::Archived,
                delivery_count: 3
            }]
        );
        assert!(window.advance());
        assert_eq!(window.start_offset(), 1);
    }

    #[test]
    fn a_leaving_member_releases_only_what_it_holds() {
        let mut window = Window::new(0);
        assert_eq!(acquire_all(&mut window, 7, 0, 2), [(0, 1), (1, 1)]);
        assert_eq!(acquire_all(&mut window, 8, 0, 1), [(2, 1)]);
        let mut effects = Effects::default();
        window.release_held_by(7, LIMITS.delivery_limit, &mut effects);
        assert!(effects.made_available && effects.dead_letters.is_empty());
        assert_eq!(window.counts(), (3, 1), "member 8 still holds offset 2");
        // Its late acknowledgement finds nothing held; the other member's stands.
        let late = window.settle(ack(0, 0, 7, Settle::Accept), 0, &LIMITS, &mut effects);
        assert_eq!(late, Err(AckError::NotHeld));
        assert_eq!(acquire_all(&mut window, 8, 0, 2), [(0, 2), (1, 2)]);
        // At the delivery limit, a release archives instead.
        let mut window = Window::new(0);
        for _ in 1..LIMITS.delivery_limit {
            assert_eq!(acquire_all(&mut window, 7, 0, 1).len(), 1);
            window.release_held_by(7, LIMITS.delivery_limit, &mut Effects::default());
        }
        assert_eq!(
            acquire_all(&mut window, 7, 0, 1),
            [(0, LIMITS.delivery_limit)]
        );
        let mut effects = Effects::default();
        window.release_held_by(7, LIMITS.delivery_limit, &mut effects);
        assert_eq!(effects.dead_letters.len(), 1);
        assert!(!effects.made_available);
    }

    #[test]
    fn release_and_reject_dead_letters() {
        let mut window = Window::new(0);
        let mut effects = Effects::default();
        for _ in 0..LIMITS.delivery_limit {
            acquire_all(&mut window, 1, 0, 1);
            window
                .settle(ack(0, 0, 1, Settle::Release), 0, &LIMITS, &mut effects)
                .unwrap();
        }
        assert_eq!(effects.dead_letters.len(), 1);
        assert_eq!(effects.dead_letters[0].delivery_count, 3);
        acquire_all(&mut window, 1, 0, 1);
        window
            .settle(ack(1, 1, 1, Settle::Reject), 0, &LIMITS, &mut effects)
            .unwrap();
        assert_eq!(effects.dead_letters[1].reason, DeadLetterReason::Rejected);
        let letters = std::mem::take(&mut effects.dead_letters);
        window.archive(&letters, &mut effects);
        assert!(window.advance());
        assert_eq!(window.start_offset(), 2);
    }

    #[test]
    fn a_record_whose_copy_failed_is_offered_again_and_stays_unwritten() {
        let mut window = Window::new(0);
        acquire_all(&mut window, 1, 0, 2);
        let mut effects = Effects::default();
        window
            .settle(ack(0, 1, 1, Settle::Reject), 0, &LIMITS, &mut effects)
            .unwrap();
        assert_eq!(effects.dead_letters.len(), 2);
        assert!(effects.changes.is_empty());
        // The copy failed: nothing is archived, the next sweep offers both again.
        let mut retry = Effects::default();
        window.pending_dead_letters(&mut retry);
        assert_eq!(retry.dead_letters, effects.dead_letters);
        assert_eq!(window.counts(), (2, 0));
        assert_eq!(window.next_candidate(0, LIMITS.window_max), Some(2));
        assert!(!window.advance());
        // A snapshot writes them as they were before this delivery.
        let mut snapshot = Vec::new();
        window.snapshot(|change| snapshot.push(change));
        assert!(snapshot.is_empty(), "{snapshot:?}");
        // Copied on the retry: archived and written.
        let letters = std::mem::take(&mut retry.dead_letters);
        window.archive(&letters[..1], &mut retry);
        window.archive(&letters[1..], &mut retry);
        assert_eq!(retry.changes.len(), 1);
        assert_eq!((retry.changes[0].first, retry.changes[0].last), (0, 1));
        let mut again = Effects::default();
        window.pending_dead_letters(&mut again);
        assert!(again.dead_letters.is_empty());
        assert!(window.advance());
        assert_eq!(window.start_offset(), 2);
    }

    #[test]
    fn renew_extends_the_lock() {
        let mut window = Window::new(0);
        acquire_all(&mut window, 1, 0, 1);
        let mut effects = Effects::default();
        window
            .settle(ack(0, 0, 1, Settle::Renew), 90, &LIMITS, &mut effects)
            .unwrap();
        window.expire(150, LIMITS.delivery_limit, &mut effects);
        assert_eq!(window.counts(), (1, 1));
        assert!(effects.changes.is_empty(), "renewals are not persisted");
    }

    #[test]
    fn snapshot_replays_to_the_same_durable_state() {
        let mut window = Window::new(5);
        acquire_all(&mut window, 1, 0, 4);
        let mut effects = Effects::default();
        window
            .settle(ack(6, 6, 1, Settle::Accept), 1, &LIMITS, &mut effects)
            .unwrap();
        window
            .settle(ack(7, 7, 1, Settle::Release), 1, &LIMITS, &mut effects)
            .unwrap();
        let mut changes = Vec::new();
        window.snapshot(|change| changes.push(change));
        let mut replayed = Window::new(5);
        for change in changes {
            replayed.replay(change, LIMITS.window_max);
        }
        replayed.trim_end();
        // 5 and 8 were acquired (transient): available, with the delivery not counted.
        assert_eq!(replayed.start_offset(), 5);
        assert_eq!(replayed.end_offset(), 8);
        assert_eq!(replayed.counts(), (2, 0));
        assert_eq!(
            acquire_all(&mut replayed, 2, 0, 3),
            [(5, 1), (7, 2), (8, 1)]
        );
    }

    #[test]
    fn retention_skips_the_front() {
        let mut window = Window::new(0);
        acquire_all(&mut window, 1, 0, 2);
        window.skip_to(1);
        assert_eq!((window.start_offset(), window.end_offset()), (1, 2));
        window.skip_to(10);
        assert_eq!((window.start_offset(), window.end_offset()), (10, 10));
    }

    #[test]
    fn a_retention_skip_is_written_and_replays_as_a_start_move() {
        let mut window = Window::new(0);
        acquire_all(&mut window, 1, 0, 2);
        let mut effects = Effects::default();
        assert!(window.skip_removed(294_000, &mut effects));
        assert!(!window.skip_removed(294_000, &mut effects), "already there");
        assert_eq!(effects.changes.len(), 1);
        let mut replayed = Window::new(0);
        replayed.replay(effects.changes[0], 100_000);
        // The start moves at once: the skipped records never enter the window.
        assert_eq!(
            (replayed.start_offset(), replayed.end_offset()),
            (294_000, 294_000)
        );
        assert_eq!(replayed.entries.capacity(), 0);
    }

    #[test]
    fn a_replay_from_a_stale_start_keeps_changes_far_past_it() {
        const LIMIT: usize = 100_000;
        // The file says the window starts at 0, but retention had moved it to 294000 (not
        // written) before 294000..=294009 were accepted.
        let mut window = Window::new(0);
        let accepted = Change {
            first: 294_000,
            last: 294_009,
            state: DurableState::Acknowledged,
            delivery_count: 1,
        };
        window.replay(accepted, LIMIT);
        window.finish_replay(294_000);
        assert_eq!(window.start_offset(), 294_010);
        assert_eq!(window.end_offset(), 294_010);
        assert!(
            window.entries.capacity() < 1_000,
            "{}",
            window.entries.capacity()
        );
    }

    #[test]
    fn a_replay_from_a_stale_start_keeps_what_is_still_in_flight() {
        const LIMIT: usize = 8;
        // Released once (delivery 1) at 100, accepted at 103, with the file's start at 0.
        let mut window = Window::new(0);
        for (offset, state, delivery_count) in [
            (100, DurableState::Available, 1),
            (103, DurableState::Acknowledged, 1),
        ] {
            let change = Change {
                first: offset,
                last: offset,
                state,
                delivery_count,
            };
            window.replay(change, LIMIT);
            window.advance();
        }
        window.finish_replay(0);
        // The last change was made with its offset in a window of at most LIMIT records.
        assert_eq!(window.start_offset(), 103 + 1 - LIMIT as i64);
        // 100 comes back with its delivery counted, 103 never does.
        assert_eq!(window.next_candidate(100, LIMIT), Some(100));
        assert!(!window.can_acquire(103, LIMIT));
        assert_eq!(window.acquire(100, 1, 0, LIMIT), Some(2));
    }

    #[test]
    fn a_control_batch_is_settled_within_the_window_bound() {
        let mut window = Window::new(0);
        acquire_all(&mut window, 1, 0, 1);
        let mut effects = Effects::default();
        // 0 is still acquired: the window takes what fits of a batch claiming 2^31 offsets.
        window.skip_records(
            1,
            i64::from(i32::MAX),
            DurableState::Acknowledged,
            LIMITS.window_max,
            &mut effects,
        );
        assert_eq!(window.end_offset(), LIMITS.window_max as i64);
        assert_eq!(window.counts(), (1, 1));
        assert_eq!(effects.changes.len(), 1);
        assert_eq!((effects.changes[0].first, effects.changes[0].last), (1, 3));
        // Once 0 is settled the rest of the batch is passed in one step.
        window
            .settle(ack(0, 0, 1, Settle::Accept), 1, &LIMITS, &mut effects)
            .unwrap();
        window.skip_records(
            1,
            i64::from(i32::MAX),
            DurableState::Acknowledged,
            LIMITS.window_max,
            &mut effects,
        );
        assert_eq!(window.start_offset(), i64::from(i32::MAX) + 1);
        assert_eq!(window.end_offset(), window.start_offset());
        let jump = effects.changes.last().copied().unwrap();
        assert_eq!((jump.first, jump.last), (0, i64::from(i32::MAX)));
        // Written, it replays as a start move.
        let mut replayed = Window::new(0);
        replayed.replay(jump, 100_000);
        assert_eq!(replayed.start_offset(), i64::from(i32::MAX) + 1);
    }
}
