//! The producer's state: open batches per partition, batches ready to send, requests in flight,
//! and the bookkeeping for back-pressure, flush and failures. Pure logic, driven by the user
//! threads and the producer's I/O threads under one mutex. With idempotence on, batches are
//! sequenced when first sent and retried byte for byte (see [`super::idempotence`]).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ringlog_engine::batch::{self, BatchBuilder, BatchError, Compression};
use ringlog_engine::compression::Compressor;

use super::config::ProducerConfig;
use super::delivery::{BatchOutcome, DeliveryHandle};
use super::idempotence::{EpochBump, Idempotence, ProducerIdentity};
use super::link::Link;
use super::record::ProducerRecord;
use crate::api::ApiKey;
use crate::client::error::ClientError;
use crate::client::partitioner::{choose_partition, StickyPartitioner};
use crate::error_code::ErrorCode;

/// Finished batch buffers kept for reuse, so a steady producer stops allocating.
const POOLED_BUFFERS_MAX: usize = 16;

/// A batch still accepting records.
#[derive(Debug)]
struct OpenBatch {
    builder: BatchBuilder,
    partition: u32,
    outcome: Arc<BatchOutcome>,
    opened_at: Instant,
    /// The flush generation it was opened in (see [`Accumulator::begin_flush`]).
    generation: u64,
}

/// A finished batch waiting to be sent (again).
#[derive(Debug)]
pub(crate) struct ReadyBatch {
    pub(crate) partition: u32,
    /// Shared with the sender while it writes, so the write happens outside the lock.
    pub(crate) bytes: Arc<Vec<u8>>,
    outcome: Arc<BatchOutcome>,
    records: u64,
    attempts: u32,
    /// An earlier attempt was refused in a way that may have left it written (a timeout
    /// waiting for the acknowledgement, a failed write the server retries): only then does a
    /// retry answered DuplicateSequence mean the batch was written.
    maybe_written: bool,
    /// Set after a retriable failure: not to be sent before this time.
    retry_at: Option<Instant>,
    /// With idempotence: the order in which batches were sequenced (set when first sent).
    number: Option<u64>,
    /// Whether its CRC is computed: when it is first sent, after the idempotent producer fields
    /// are stamped (which the CRC covers), so that the pass over every byte is taken once.
    sealed: bool,
    /// The flush generation it was opened in.
    generation: u64,
    /// When its first record was added: while the server cannot be reached, a batch waiting
    /// longer than `delivery_timeout_ms` since then fails.
    created_at: Instant,
}

/// One produce request awaiting its response.
#[derive(Debug)]
struct InFlight {
    correlation_id: u32,
    batches: Vec<ReadyBatch>,
    sent_at: Instant,
}

/// The result the server gave for one entry of a produce request.
pub(crate) type EntryResult = Result<i64, ClientError>;

/// See the module docs.
#[derive(Debug)]
pub(crate) struct Accumulator {
    config: ProducerConfig,
    partitions: u32,
    open: Vec<Option<OpenBatch>>,
    ready: VecDeque<ReadyBatch>,
    in_flight: Vec<InFlight>,
    sticky: StickyPartitioner,
    pool: Vec<Vec<u8>>,
    /// Scratch for `take_sendable`: partitions that must not be sent past this round.
    blocked: Vec<bool>,
    /// Scratch for `close_lingered`: partitions with a batch waiting in `ready`.
    queued: Vec<bool>,
    /// Scratch for `take_sendable` and `close_lingered`: batches in flight per partition.
    in_flight_batches: Vec<usize>,
    /// Producer id, epoch and sequence numbers (off unless `set_identity` turned it on).
    idempotence: Idempotence,
    /// Bytes of every batch not yet completed (open, ready, in flight).
    pub(crate) buffered_bytes: usize,
    /// Records sent and not yet acknowledged or failed.
    pub(crate) unfinished_records: u64,
    /// The generation batches opened now belong to; each flush starts a new one.
    generation: u64,
    /// Unfinished records per generation, oldest first, none with a count of 0. A flush
    /// waits for its own generation and the older ones only, not for records sent after it
    /// began. One entry per generation with records in flight: as many as overlapping flushes.
    unfinished_by_generation: VecDeque<(u64, u64)>,
    failed_records: u64,
    first_failure: Option<ClientError>,
    /// Set when the connection failed: everything fails with it from then on.
    pub(crate) fatal: Option<ClientError>,
    /// Set by `close`: send everything now, accept nothing new.
    pub(crate) closing: bool,
    /// Threads inside `flush`: linger is skipped while any are waiting.
    pub(crate) flushing: usize,
    /// When the partition count is next asked for (`metadata_max_age_ms` apart).
    metadata_due_at: Instant,
    /// The Metadata request awaiting its answer: correlation id and when it was sent.
    metadata_sent: Option<(u32, Instant)>,
    /// The connection the I/O threads share, or when to connect again.
    pub(crate) link: Link,
    /// The codec batches are closed with (`config.compression`).
    codec: Compression,
    /// Codec state and the buffer a closing batch's records are compressed into, both kept
    /// from batch to batch so that compressing allocates nothing per record.
    compressor: Compressor,
    compressed: Vec<u8>,
}

impl Accumulator {
    /// State for a topic with `partitions` partitions.
    pub(crate) fn new(config: ProducerConfig, partitions: u32) -> Self {
        let slots = partitions as usize;
        Self {
            config,
            partitions,
            open: (0..slots).map(|_| None).collect(),
            ready: VecDeque::new(),
            in_flight: Vec::new(),
            sticky: StickyPartitioner::new(partitions),
            pool: Vec::new(),
            blocked: vec![false; slots],
            queued: vec![false; slots],
            in_flight_batches: vec![0; slots],
            idempotence: Idempotence::new(partitions),
            buffered_bytes: 0,
            unfinished_records: 0,
            generation: 0,
            unfinished_by_generation: VecDeque::new(),
            failed_records: 0,
            first_failure: None,
            fatal: None,
            closing: false,
            flushing: 0,
            metadata_due_at: Instant::now() + Duration::from_millis(config.metadata_max_age_ms),
            metadata_sent: None,
            link: Link::new(config.reconnect_backoff_ms, config.reconnect_backoff_max_ms),
            codec: config.compression.codec(),
            compressor: Compressor::new(),
            compressed: Vec::new(),
        }
    }

    /// The topic's partition count as last learned.
    pub(crate) fn partitions(&self) -> u32 {
        self.partitions
    }

    /// Whether the partition count should be asked for now.
    pub(crate) fn metadata_refresh_due(&self, now: Instant) -> bool {
        self.metadata_sent.is_none() && !self.closing && now >= self.metadata_due_at
    }

    /// When the sender should next wake to ask for the partition count.
    pub(crate) fn next_metadata_refresh(&self) -> Option<Instant> {
        (self.metadata_sent.is_none() && !self.closing).then_some(self.metadata_due_at)
    }

    /// The Metadata request was written with `correlation_id`.
    pub(crate) fn metadata_refresh_sent(&mut self, correlation_id: u32, now: Instant) {
        assert!(
            self.metadata_sent.is_none(),
            "one metadata refresh at a time"
        );
        self.metadata_sent = Some((correlation_id, now));
        self.metadata_due_at = now + Duration::from_millis(self.config.metadata_max_age_ms);
    }

    /// Applies the answer to a metadata refresh: a larger partition count is used from now on
    /// (new keyed records may land elsewhere, as in Kafka). A refused refresh (the topic was
    /// deleted, say) keeps the count: the produce requests themselves report what is wrong.
    pub(crate) fn complete_metadata_refresh(
        &mut self,
        correlation_id: u32,
        partitions: Result<u32, ClientError>,
    ) -> Result<(), ClientError> {
        match self.metadata_sent {
            Some((sent, _)) if sent == correlation_id => self.metadata_sent = None,
            _ => {
                return Err(ClientError::UnexpectedResponse(format!(
                    "Metadata response with unknown correlation id {correlation_id}"
                )))
            }
        }
        if let Ok(partitions) = partitions {
            self.grow(partitions);
        }
        Ok(())
    }

    /// Makes room for `partitions` partitions (a topic never shrinks, so fewer is ignored).
    fn grow(&mut self, partitions: u32) {
        if partitions <= self.partitions {
            return;
        }
        let slots = partitions as usize;
        self.open.resize_with(slots, || None);
        self.blocked.resize(slots, false);
        self.queued.resize(slots, false);
        self.in_flight_batches.resize(slots, 0);
        self.idempotence.grow(partitions);
        self.sticky.grow(partitions);
        self.partitions = partitions;
    }

    /// Turns idempotence on with the producer id and epoch from InitProducerId (or off).
    pub(crate) fn set_identity(&mut self, identity: Option<ProducerIdentity>) {
        self.idempotence.set_identity(identity);
    }

    /// The producer id and epoch batches are stamped with, when idempotent.
    pub(crate) fn identity(&self) -> Option<ProducerIdentity> {
        self.idempotence.identity()
    }

    /// Whether the epoch must be bumped now: wanted, and no batch in flight or waiting for a
    /// retry whose sequence belongs to the old epoch.
    pub(crate) fn epoch_bump_due(&self) -> bool {
        self.idempotence.bump == EpochBump::Wanted
            && self.in_flight.is_empty()
            && self.ready.iter().all(|batch| batch.number.is_none())
    }

    /// The epoch bump request was written with `correlation_id`.
    pub(crate) fn epoch_bump_sent(&mut self, correlation_id: u32, now: Instant) {
        self.idempotence.bump_sent(correlation_id, now);
    }

    /// Applies the answer to the epoch bump; a failure fails the producer.
    pub(crate) fn complete_epoch_bump(
        &mut self,
        correlation_id: u32,
        result: Result<ProducerIdentity, ClientError>,
    ) -> Result<(), ClientError> {
        match self.idempotence.bump {
            EpochBump::Sent {
                correlation_id: sent,
                ..
            } if sent == correlation_id => {}
            _ => {
                return Err(ClientError::UnexpectedResponse(format!(
                    "InitProducerId response with unknown correlation id {correlation_id}"
                )))
            }
        }
        self.idempotence.bump_done(result?);
        Ok(())
    }

    /// Why new records cannot be accepted, if they cannot.
    pub(crate) fn refusal(&self) -> Option<ClientError> {
        if let Some(fatal) = &self.fatal {
            return Some(fatal.clone());
        }
        self.closing.then_some(ClientError::Closed)
    }

    /// True when the buffered bytes are at the configured limit (send must wait).
    pub(crate) fn is_full(&self) -> bool {
        self.buffered_bytes >= self.config.buffer_bytes_max
    }

    /// Adds a record to its partition's open batch, closing the batch first when the record
    /// does not fit. `now` reads the clock, called only when a batch opens. Returns the
    /// record's handle and whether the sender should be woken (a new batch opened, or one
    /// became ready).
    pub(crate) fn append(
        &mut self,
        record: &ProducerRecord<'_>,
        timestamp_ms: i64,
        now: impl Fn() -> Instant,
    ) -> Result<(DeliveryHandle, bool), ClientError> {
        let partition =
            choose_partition(record.partition, record.key, &self.sticky, self.partitions);
        let slot = partition as usize;
        if partition >= self.partitions {
            return Err(ClientError::InvalidArgument(format!(
                "partition {partition} out of range: the topic has {} partitions",
                self.partitions
            )));
        }
        let mut wake = false;
        loop {
            let (pool, config, generation) = (&mut self.pool, &self.config, self.generation);
            let mut opened_bytes = 0;
            let open = self.open[slot].get_or_insert_with(|| {
                // The clock is read only here, when a batch opens (its linger starts): once per
                // batch, not per record.
                let mut batch = OpenBatch::new(pool.pop(), config, partition, timestamp_ms, now());
                batch.generation = generation;
                opened_bytes = batch.builder.bytes_len();
                batch
            });
            self.buffered_bytes += opened_bytes;
            wake |= opened_bytes > 0;
            let before = open.builder.bytes_len();
            match open
                .builder
                .push(timestamp_ms, record.key, record.value, record.headers)
            {
                Ok(()) => {
                    self.buffered_bytes += open.builder.bytes_len() - before;
                    let index = open.builder.record_count().saturating_sub(1);
                    let handle = DeliveryHandle::new(
                        open.outcome.clone(),
                        u32::try_from(index).unwrap_or(u32::MAX),
                    );
                    let generation = open.generation;
                    self.count_unfinished(generation);
                    return Ok((handle, wake));
                }
                Err(BatchError::TooLarge { needed_bytes, .. })
                    if open.builder.record_count() == 0 =>
                {
                    return Err(ClientError::RecordTooLarge {
                        record_bytes: needed_bytes,
                        batch_bytes_max: self.config.batch_bytes_max,
                    });
                }
                Err(BatchError::TooLarge { .. }) => {
                    // Full: close it and put the record into a fresh batch.
                    self.close_open(slot);
                    wake = true;
                }
                Err(error) => return Err(error.into()),
            }
        }
    }

    /// Finishes the open batch of `slot` and queues it (an empty one is just recycled).
    fn close_open(&mut self, slot: usize) {
        let Some(mut open) = self.open.get_mut(slot).and_then(Option::take) else {
            return;
        };
        let records = open.builder.record_count() as u64;
        if records == 0 {
            self.release_bytes(open.builder.bytes_len());
            self.recycle(open.builder.into_buf());
            return;
        }
        // Sealed (CRC) when first sent: see `take_sendable`. Compression, which the CRC
        // covers, happens here, once: a retry resends the same bytes.
        let plain_bytes = open.builder.bytes_len();
        // On error (the encoders write to memory and do not fail) the batch is left finished
        // uncompressed, which every reader reads: better sent so than not at all.
        let _ = open.builder.finish_unsealed_compressed(
            self.codec,
            &mut self.compressor,
            &mut self.compressed,
        );
        let bytes = open.builder.into_buf();
        // Compression only shrinks a batch (see finish_unsealed_compressed).
        self.release_bytes(plain_bytes.saturating_sub(bytes.len()));
        self.sticky.on_batch_closed(open.partition);
        self.ready.push_back(ReadyBatch {
            partition: open.partition,
            bytes: Arc::new(bytes),
            outcome: open.outcome,
            records,
            attempts: 0,
            maybe_written: false,
            retry_at: None,
            number: None,
            sealed: false,
            generation: open.generation,
            created_at: open.opened_at,
        });
    }

    /// Starts a flush: batches opened from now on are not waited for by it. Returns the
    /// generation to pass to [`Accumulator::unfinished_through`].
    pub(crate) fn begin_flush(&mut self) -> u64 {
        let generation = self.generation;
        self.generation += 1;
        generation
    }

    /// Whether records of `generation` or an older one are still unfinished.
    pub(crate) fn unfinished_through(&self, generation: u64) -> bool {
        self.unfinished_by_generation
            .front()
            .is_some_and(|(oldest, _)| *oldest <= generation)
    }

    /// One more unfinished record of `generation` (the current one or, for a batch still open
    /// since before a flush began, an older one: found from the back in a step or two).
    fn count_unfinished(&mut self, generation: u64) {
        self.unfinished_records += 1;
        let entries = &mut self.unfinished_by_generation;
        match entries.iter_mut().rev().find(|(g, _)| *g == generation) {
            Some((_, count)) => *count += 1,
            None => {
                let at = entries.partition_point(|(g, _)| *g < generation);
                entries.insert(at, (generation, 1));
            }
        }
    }

    /// `records` records of `generation` acknowledged or failed.
    fn count_finished(&mut self, generation: u64, records: u64) {
        debug_assert!(self.unfinished_records >= records);
        self.unfinished_records = self.unfinished_records.saturating_sub(records);
        let entries = &mut self.unfinished_by_generation;
        let Some(at) = entries.iter().position(|(g, _)| *g == generation) else {
            debug_assert!(records == 0, "finished records of an unknown generation");
            return;
        };
        let count = &mut entries[at].1;
        debug_assert!(*count >= records, "generation accounting out of step");
        *count = count.saturating_sub(records);
        if *count == 0 {
            entries.remove(at);
        }
    }

    /// Closes open batches whose linger time passed and that could be sent now (all of them
    /// while flushing or closing). Returns the earliest time another one will be due.
    ///
    /// A batch past its linger that could not be sent now (no request slot free, an earlier
    /// batch of its partition still queued, or the partition's idempotence window full) stays
    /// open and keeps taking records, as in Kafka's producer: closed, it would queue behind
    /// the others, and under load a linger of 0 would then turn every wake-up of the sender
    /// into a batch of a few records, each costing the partition a slot of its window and the
    /// server a write. The sender is woken when a request completes, and closes it then.
    pub(crate) fn close_lingered(&mut self, now: Instant) -> Option<Instant> {
        let linger = Duration::from_millis(self.config.linger_ms);
        let close_all = self.flushing > 0 || self.closing;
        if !close_all {
            self.count_queued_and_in_flight();
        }
        let slot_free = self.can_send();
        let idempotent = self.idempotence.identity().is_some();
        let mut next_due: Option<Instant> = None;
        for slot in 0..self.open.len() {
            let Some(open) = &self.open[slot] else {
                continue;
            };
            let due = open.opened_at + linger;
            if close_all {
                self.close_open(slot);
            } else if due <= now {
                let window_full = idempotent
                    && self.in_flight_batches[slot]
                        >= self.idempotence.in_flight_batches_max(open.partition);
                if slot_free && !self.queued[slot] && !window_full {
                    self.close_open(slot);
                }
            } else {
                next_due = Some(next_due.map_or(due, |next| next.min(due)));
            }
        }
        next_due
    }

    /// Fills the `queued` and `in_flight_batches` scratch from the queue and the requests in
    /// flight.
    fn count_queued_and_in_flight(&mut self) {
        self.queued.fill(false);
        let mut queued_partitions = 0;
        for batch in &self.ready {
            // A full buffer queues thousands of batches: stop once every partition is seen.
            if queued_partitions == self.queued.len() {
                break;
            }
            if let Some(queued) = self.queued.get_mut(batch.partition as usize) {
                queued_partitions += usize::from(!*queued);
                *queued = true;
            }
        }
        self.count_in_flight_batches();
    }

    /// Fills the `in_flight_batches` scratch from the requests in flight.
    fn count_in_flight_batches(&mut self) {
        self.in_flight_batches.fill(0);
        for flight in &self.in_flight {
            for batch in &flight.batches {
                if let Some(count) = self.in_flight_batches.get_mut(batch.partition as usize) {
                    *count += 1;
                }
            }
        }
    }

    /// Room for another request in flight?
    pub(crate) fn can_send(&self) -> bool {
        self.in_flight.len() < self.config.in_flight_requests_max
    }

    /// Takes ready batches for one request, in queue order, up to `request_bytes_max` (at
    /// least one). A partition whose earlier batch must wait (retry back-off, size, the
    /// idempotence window, an epoch bump) is skipped entirely this round so its batches never
    /// overtake each other. Batches sent for the first time are sequenced and sealed (their CRC
    /// computed) here.
    pub(crate) fn take_sendable(&mut self, now: Instant) -> Vec<ReadyBatch> {
        self.blocked.fill(false);
        self.count_in_flight_batches();
        let idempotent = self.idempotence.identity().is_some();
        let holding_new = self.idempotence.holds_new_batches();
        let mut taken: Vec<ReadyBatch> = Vec::new();
        let mut taken_bytes = 0usize;
        let mut blocked_partitions = 0;
        // Batches looked at and put back (behind those not looked at yet).
        let mut put_back = 0;
        for _ in 0..self.ready.len() {
            // With every partition blocked, or the request full, the rest of the queue would
            // only be put back as it is: stop there. A full buffer queues thousands of batches,
            // and the sender comes here at every wake-up (a batch opened, one closed).
            let request_full = !taken.is_empty() && taken_bytes >= self.config.request_bytes_max;
            if blocked_partitions == self.blocked.len() || request_full {
                break;
            }
            let Some(mut batch) = self.ready.pop_front() else {
                break;
            };
            let slot = batch.partition as usize;
            let fits = taken.is_empty()
                || taken_bytes + batch.bytes.len() <= self.config.request_bytes_max;
            let backing_off = batch.retry_at.is_some_and(|due| due > now);
            let held = holding_new && batch.number.is_none();
            let window_full = idempotent
                && self.in_flight_batches[slot]
                    >= self.idempotence.in_flight_batches_max(batch.partition);
            if self.blocked[slot] || backing_off || !fits || held || window_full {
                if !self.blocked[slot] {
                    self.blocked[slot] = true;
                    blocked_partitions += 1;
                }
                self.ready.push_back(batch);
                put_back += 1;
            } else {
                if !batch.sealed {
                    // Never sent, so never shared with the sender: no copy is made.
                    let bytes = Arc::make_mut(&mut batch.bytes);
                    batch.number = self
                        .idempotence
                        .stamp(batch.partition, bytes, batch.records);
                    if batch.number.is_none() {
                        // Not stamped (not idempotent), so not sealed by the stamp. The
                        // accumulator built the batch: its header is there, this cannot fail.
                        let _ = batch::seal(bytes);
                    }
                    batch.sealed = true;
                }
                self.in_flight_batches[slot] += 1;
                taken_bytes += batch.bytes.len();
                taken.push(batch);
            }
        }
        // Those put back go ahead of those not looked at, as they were: the queue keeps its
        // order (a no-op when every batch was looked at).
        self.ready.rotate_right(put_back);
        taken
    }

    /// Earliest time a backing-off ready batch may be sent, if any waits.
    pub(crate) fn next_retry_due(&self, now: Instant) -> Option<Instant> {
        self.ready
            .iter()
            .filter_map(|batch| batch.retry_at)
            .filter(|due| *due > now)
            .min()
    }

    /// Records a request as sent and awaiting `correlation_id`'s response.
    pub(crate) fn add_in_flight(
        &mut self,
        correlation_id: u32,
        batches: Vec<ReadyBatch>,
        now: Instant,
    ) {
        self.in_flight.push(InFlight {
            correlation_id,
            batches,
            sent_at: now,
        });
    }

    /// True when a request has waited longer than `timeout`.
    pub(crate) fn has_expired_request(&self, now: Instant, timeout: Duration) -> bool {
        let expired = |sent_at: Instant| now.saturating_duration_since(sent_at) > timeout;
        let bump_expired = match self.idempotence.bump {
            EpochBump::Sent { sent_at, .. } => expired(sent_at),
            _ => false,
        };
        let metadata_expired = self
            .metadata_sent
            .is_some_and(|(_, sent_at)| expired(sent_at));
        bump_expired
            || metadata_expired
            || self.in_flight.iter().any(|flight| expired(flight.sent_at))
    }

    /// Whether `batch`, refused with a retriable error, is sent again: within `retries_max`
    /// attempts and `delivery_timeout_ms` of its creation (as Kafka's producer, whose retries
    /// are unbounded by default and end at delivery.timeout.ms).
    fn may_retry(&self, batch: &ReadyBatch, now: Instant) -> bool {
        let delivery_timeout = Duration::from_millis(self.config.delivery_timeout_ms);
        batch.attempts < self.config.retries_max
            && now.saturating_duration_since(batch.created_at) < delivery_timeout
    }

    /// Applies a produce response: `entries[i]` is the result for the request's i-th batch,
    /// `top_level` an error for all of them. Retriable failures are queued again (front, in
    /// order) while [`Accumulator::may_retry`] allows; other results complete the batches.
    pub(crate) fn complete_in_flight(
        &mut self,
        correlation_id: u32,
        top_level: Option<ClientError>,
        entries: &[EntryResult],
        now: Instant,
    ) -> Result<(), ClientError> {
        let Some(index) = self
            .in_flight
            .iter()
            .position(|flight| flight.correlation_id == correlation_id)
        else {
            return Err(ClientError::UnexpectedResponse(format!(
                "produce response with unknown correlation id {correlation_id}"
            )));
        };
        // `remove`, not `swap_remove`: a lost connection resends the requests in the order of
        // `in_flight`, which must stay the send order for batches without a sequence number.
        let flight = self.in_flight.remove(index);
        let mut retry: Vec<ReadyBatch> = Vec::new();
        for (i, mut batch) in flight.batches.into_iter().enumerate() {
            let result = match (&top_level, entries.get(i)) {
                (Some(error), _) => Err(error.clone()),
                (None, Some(result)) => result.clone(),
                (None, None) => Err(ClientError::UnexpectedResponse(
                    "produce response has fewer entries than the request".to_owned(),
                )),
            };
            match result {
                // Refused because an earlier batch of its partition is still on its way
                // (being retried): send it again after that one, without counting an attempt.
                Err(error)
                    if error.code() == Some(ErrorCode::OutOfOrderSequence)
                        && self.has_earlier_unfinished(&batch, &retry) =>
                {
                    retry.push(batch);
                }
                Err(error) if error.is_retriable() && self.may_retry(&batch, now) => {
                    batch.attempts += 1;
                    // Throttled is refused at the door: nothing was written. The other
                    // retriable answers (Timeout, DiskFull, StorageError) can come after the
                    // batch was placed; the server writes it when it can.
                    batch.maybe_written |= error.code() != Some(ErrorCode::Throttled);
                    retry.push(batch);
                }
                // Written by an earlier attempt, long ago (more batches since than the server
                // remembers): that write stands, its offset is not known.
                Err(error)
                    if error.code() == Some(ErrorCode::DuplicateSequence)
                        && batch.maybe_written =>
                {
                    self.finish_batch(batch, Ok(-1));
                }
                // DuplicateSequence for a batch no attempt could have written (every earlier
                // one was refused): a later batch was taken in its place (a partition that
                // forgot the producer takes any first sequence; one that never knew it gets one
                // batch at a time). Reporting success would lose its records silently; the
                // error says they were not written.
                Err(error) if error.code() == Some(ErrorCode::DuplicateSequence) => {
                    let refused = ClientError::server(
                        ApiKey::Produce,
                        ErrorCode::OutOfOrderSequence,
                        &format!(
                            "partition {} took later batches of this producer before this one, \
                             whose earlier attempts were refused; not written ({error})",
                            batch.partition
                        ),
                    );
                    self.finish_batch(batch, Err(refused));
                }
                result => self.finish_batch(batch, result),
            }
        }
        let retry_at = now + Duration::from_millis(self.config.retry_backoff_ms);
        for mut batch in retry {
            batch.retry_at = Some(retry_at);
            self.requeue(batch);
        }
        Ok(())
    }

    /// Whether a batch of `batch`'s partition sequenced before it is in flight, waiting for a
    /// retry, or about to be retried (`retrying`).
    fn has_earlier_unfinished(&self, batch: &ReadyBatch, retrying: &[ReadyBatch]) -> bool {
        let Some(number) = batch.number else {
            return false;
        };
        let earlier = |other: &ReadyBatch| {
            other.partition == batch.partition && other.number.is_some_and(|n| n < number)
        };
        self.in_flight
            .iter()
            .flat_map(|flight| flight.batches.iter())
            .chain(self.ready.iter())
            .chain(retrying.iter())
            .any(earlier)
    }

    /// Puts a batch back to be sent again (its `retry_at` set), ahead of its partition's later
    /// batches (never sent, or sequenced after it) and otherwise ahead of everything.
    fn requeue(&mut self, batch: ReadyBatch) {
        debug_assert!(batch.retry_at.is_some());
        let same = |other: &ReadyBatch| other.partition == batch.partition;
        let later = |other: &ReadyBatch| {
            let never_sent = other.retry_at.is_none();
            let sequenced_after =
                matches!((other.number, batch.number), (Some(o), Some(b)) if o > b);
            same(other) && (never_sent || sequenced_after)
        };
        let later = self.ready.iter().position(later);
        let at = match later {
            Some(at) => at,
            None => match self.ready.iter().rposition(same) {
                Some(last) => last + 1,
                None => 0,
            },
        };
        self.ready.insert(at, batch);
    }

    /// Completes batches that are in no request in flight: written with no response to wait
    /// for (`Acks::None`, offset -1), or whose write failed.
    pub(crate) fn complete_batches(
        &mut self,
        batches: Vec<ReadyBatch>,
        result: Result<i64, ClientError>,
    ) {
        for batch in batches {
            self.finish_batch(batch, result.clone());
        }
    }

    /// Connection `generation` failed with `error` (see [`Link`]): its requests' batches go
    /// back to their partitions' queues, in sequence order, to be sent again over the next
    /// connection, as after a retriable error (one attempt more, maybe written: a resent
    /// batch the server already wrote is answered as a duplicate, not written twice); a
    /// batch out of attempts fails with `error`. A Metadata request or epoch bump on its way
    /// is asked again. Returns false when that connection was already given up (the other
    /// thread saw its failure first).
    pub(crate) fn lose_connection(
        &mut self,
        generation: u64,
        error: ClientError,
        now: Instant,
    ) -> bool {
        if !self.link.fail(generation, error.clone(), now) {
            return false;
        }
        self.metadata_sent = None;
        // The server may have changed while away (a restart with partitions added).
        self.metadata_due_at = now;
        self.idempotence.bump_unanswered();
        let flights: Vec<InFlight> = self.in_flight.drain(..).collect();
        for mut batch in flights.into_iter().flat_map(|flight| flight.batches) {
            if batch.attempts < self.config.retries_max {
                batch.attempts += 1;
                batch.maybe_written = true;
                batch.retry_at = Some(now);
                self.requeue(batch);
            } else {
                self.finish_batch(batch, Err(error.clone()));
            }
        }
        true
    }

    /// While no connection can be made: fails the queued batches created longer than
    /// `delivery_timeout_ms` ago with the connection's error (Kafka's delivery.timeout.ms),
    /// so that `flush` and blocked `send`s end. Returns whether any failed.
    pub(crate) fn expire_undeliverable(&mut self, now: Instant) -> bool {
        let Some(error) = self.link.down_error().cloned() else {
            return false;
        };
        let timeout = Duration::from_millis(self.config.delivery_timeout_ms);
        let expired =
            |batch: &ReadyBatch| now.saturating_duration_since(batch.created_at) >= timeout;
        if !self.ready.iter().any(expired) {
            return false;
        }
        let (gone, kept): (VecDeque<ReadyBatch>, VecDeque<ReadyBatch>) =
            self.ready.drain(..).partition(expired);
        self.ready = kept;
        for batch in gone {
            self.finish_batch(batch, Err(error.clone()));
        }
        true
    }

    /// The connection failed: every batch fails with `error`, and so does every later send.
    pub(crate) fn fail_all(&mut self, error: ClientError) {
        if self.fatal.is_none() {
            self.fatal = Some(error.clone());
        }
        for slot in 0..self.open.len() {
            self.close_open(slot);
        }
        let mut batches: Vec<ReadyBatch> = self.ready.drain(..).collect();
        batches.extend(self.in_flight.drain(..).flat_map(|flight| flight.batches));
        for batch in batches {
            self.finish_batch(batch, Err(error.clone()));
        }
    }

    /// Failed batches sent (and not yet flushed away): a summary error for `flush`, resetting
    /// the count.
    pub(crate) fn take_failures(&mut self) -> Option<ClientError> {
        let first = self.first_failure.take()?;
        let failed_records = std::mem::take(&mut self.failed_records);
        Some(ClientError::DeliveryFailed {
            failed_records,
            first: Box::new(first),
        })
    }

    /// True when nothing is buffered, queued or in flight.
    pub(crate) fn is_idle(&self) -> bool {
        self.open.iter().all(Option::is_none) && self.ready.is_empty() && self.in_flight.is_empty()
    }

    /// Decides a batch's outcome and releases its bytes.
    fn finish_batch(&mut self, batch: ReadyBatch, result: Result<i64, ClientError>) {
        if batch.number.is_some() {
            match result {
                // Its sequence numbers are now a gap on the server.
                Err(_) => self.idempotence.on_sequenced_batch_failed(),
                Ok(_) => self
                    .idempotence
                    .on_sequenced_batch_acknowledged(batch.partition),
            }
        }
        if let Err(error) = &result {
            self.failed_records += batch.records;
            if self.first_failure.is_none() {
                self.first_failure = Some(error.clone());
            }
        }
        batch.outcome.complete(result);
        self.release_bytes(batch.bytes.len());
        self.count_finished(batch.generation, batch.records);
        if let Ok(bytes) = Arc::try_unwrap(batch.bytes) {
            self.recycle(bytes);
        }
    }

    /// Bytes of a batch that no longer count against `buffer_bytes_max`.
    fn release_bytes(&mut self, bytes: usize) {
        debug_assert!(
            self.buffered_bytes >= bytes,
            "buffer accounting out of step"
        );
        self.buffered_bytes = self.buffered_bytes.saturating_sub(bytes);
    }

    /// Keeps a buffer for a later batch, up to a bound.
    fn recycle(&mut self, mut buf: Vec<u8>) {
        if self.pool.len() < POOLED_BUFFERS_MAX {
            buf.clear();
            self.pool.push(buf);
        }
    }
}

impl OpenBatch {
    /// A new batch for `partition` in `buf` (or a fresh buffer).
    fn new(
        buf: Option<Vec<u8>>,
        config: &ProducerConfig,
        partition: u32,
        timestamp_ms: i64,
        now: Instant,
    ) -> Self {
        let buf = buf.unwrap_or_else(|| Vec::with_capacity(config.batch_bytes_max.min(1 << 20)));
        let mut builder = BatchBuilder::new(buf, timestamp_ms);
        builder.set_batch_bytes_max(config.batch_bytes_max);
        Self {
            builder,
            partition,
            outcome: BatchOutcome::new(partition),
            opened_at: now,
            generation: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::ApiKey;
    use crate::error_code::ErrorCode;
    use ringlog_engine::batch::{records, validate};

    fn config() -> ProducerConfig {
        ProducerConfig {
            batch_bytes_max: 200,
            linger_ms: 10,
            request_bytes_max: 1000,
            retries_max: 1,
            retry_backoff_ms: 5,
            ..ProducerConfig::default()
        }
    }

    /// Closes every open batch, as a flush does, whatever could be sent now.
    fn close_every_batch(acc: &mut Accumulator) {
        acc.flushing += 1;
        acc.close_lingered(Instant::now());
        acc.flushing -= 1;
    }

    fn value(n: usize) -> Vec<u8> {
        vec![b'v'; n]
    }

    fn throttled() -> ClientError {
        ClientError::server(ApiKey::Produce, ErrorCode::Throttled, "")
    }

    fn duplicate() -> ClientError {
        ClientError::server(ApiKey::Produce, ErrorCode::DuplicateSequence, "")
    }

    /// A batch whose first attempt got `first` and whose retry got DuplicateSequence.
    fn retried_into_a_duplicate(first: ClientError) -> Result<i64, ClientError> {
        let mut acc = Accumulator::new(config(), 1);
        let now = Instant::now();
        let v = value(10);
        let (handle, _) = acc.append(&ProducerRecord::new(&v), 1, || now).unwrap();
        acc.close_lingered(now + Duration::from_millis(10));
        let batches = acc.take_sendable(now);
        acc.add_in_flight(1, batches, now);
        acc.complete_in_flight(1, None, &[Err(first)], now).unwrap();
        let later = now + Duration::from_millis(10);
        let batches = acc.take_sendable(later);
        assert_eq!(batches.len(), 1, "retried");
        acc.add_in_flight(2, batches, later);
        acc.complete_in_flight(2, None, &[Err(duplicate())], later)
            .unwrap();
        handle.wait().map(|metadata| metadata.offset)
    }

    #[test]
    fn a_duplicate_answer_means_written_only_if_an_attempt_could_have_written() {
        // The first attempt timed out waiting for its acknowledgement: the retry's duplicate
        // is that attempt's write.
        let timed_out = ClientError::server(ApiKey::Produce, ErrorCode::Timeout, "");
        assert_eq!(retried_into_a_duplicate(timed_out).unwrap(), -1);
        // Refused, then duplicate: nothing was written, and the caller hears so.
        let error = retried_into_a_duplicate(throttled()).unwrap_err();
        assert_eq!(error.code(), Some(ErrorCode::OutOfOrderSequence), "{error}");
    }

    #[test]
    fn batches_are_compressed_when_closed_and_count_their_compressed_bytes() {
        use super::super::config::CompressionType;
        let config = ProducerConfig {
            compression: CompressionType::Lz4,
            ..config()
        };
        let mut acc = Accumulator::new(config, 1);
        let now = Instant::now();
        // The 200-byte batches are filled by their uncompressed size: 2 records each.
        let v = value(40);
        for _ in 0..2 {
            acc.append(&ProducerRecord::new(&v), 1_000, || now).unwrap();
        }
        close_every_batch(&mut acc);
        let tiny = value(1);
        acc.append(&ProducerRecord::new(&tiny), 1_000, || now)
            .unwrap();
        close_every_batch(&mut acc);
        let sendable = acc.take_sendable(now);
        let sizes: Vec<usize> = sendable.iter().map(|batch| batch.bytes.len()).collect();
        assert_eq!(
            acc.buffered_bytes,
            sizes.iter().sum::<usize>(),
            "compressed sizes"
        );
        let first = validate(&sendable[0].bytes).unwrap();
        assert_eq!(
            (first.compression(), first.records_count),
            (Compression::Lz4, 2)
        );
        // One short record does not shrink: sent plain.
        let second = validate(&sendable[1].bytes).unwrap();
        assert_eq!(second.compression(), Compression::None);
        assert_eq!(records(&sendable[1].bytes).unwrap().count(), 1);
        acc.add_in_flight(1, sendable, now);
        acc.complete_in_flight(1, None, &[Ok(0), Ok(2)], now)
            .unwrap();
        assert_eq!(acc.buffered_bytes, 0);
    }

    #[test]
    fn records_fill_a_batch_then_a_new_one() {
        let mut acc = Accumulator::new(config(), 2);
        let now = Instant::now();
        let v = value(40);
        let record = ProducerRecord::new(&v).with_partition(1);
        let mut handles = Vec::new();
        for _ in 0..5 {
            handles.push(acc.append(&record, 1_000, || now).unwrap().0);
        }
        assert_eq!(acc.unfinished_records, 5);
        // 200-byte batches hold 2 records of this size (61-byte header + ~49 each).
        let sendable = acc.take_sendable(now);
        assert_eq!(sendable.len(), 2);
        for batch in &sendable {
            let header = validate(&batch.bytes).unwrap();
            assert_eq!(header.records_count, 2);
            let first = records(&batch.bytes).unwrap().next().unwrap().unwrap();
            assert_eq!(first.value, Some(&v[..]));
        }
        assert!(handles.iter().all(|h| h.partition() == 1));
        acc.add_in_flight(7, sendable, now);
        acc.complete_in_flight(7, None, &[Ok(10), Ok(12)], now)
            .unwrap();
        assert_eq!(handles[0].wait().unwrap().offset, 10);
        assert_eq!(handles[1].wait().unwrap().offset, 11);
        assert_eq!(handles[3].wait().unwrap().offset, 13);
        assert!(handles[4].try_result().is_none());
        assert_eq!(acc.unfinished_records, 1);
    }

    #[test]
    fn linger_closes_batches() {
        let mut acc = Accumulator::new(config(), 1);
        let now = Instant::now();
        let v = value(10);
        let (handle, wake) = acc.append(&ProducerRecord::new(&v), 1, || now).unwrap();
        assert!(wake, "a new batch wakes the sender to schedule its linger");
        assert_eq!(
            acc.close_lingered(now),
            Some(now + Duration::from_millis(10))
        );
        assert!(acc.take_sendable(now).is_empty());
        assert_eq!(acc.close_lingered(now + Duration::from_millis(10)), None);
        let batches = acc.take_sendable(now);
        assert_eq!(batches.len(), 1);
        acc.complete_batches(batches, Ok(-1));
        assert_eq!(handle.wait().unwrap().offset, -1);
        assert!(acc.is_idle());
        assert_eq!(acc.buffered_bytes, 0);
    }

    /// Kafka's linger: a batch past its linger that cannot be sent stays open and keeps
    /// taking records, so a producer with linger 0 under load sends few large batches, not a
    /// queue of one-record batches (before: five batches of one record here).
    #[test]
    fn a_lingered_batch_that_cannot_be_sent_stays_open_and_grows() {
        let config = ProducerConfig {
            linger_ms: 0,
            in_flight_requests_max: 1,
            batch_bytes_max: 10_000,
            ..config()
        };
        let mut acc = Accumulator::new(config, 1);
        let now = Instant::now();
        let v = value(40);
        acc.append(&ProducerRecord::new(&v), 1, || now).unwrap();
        assert_eq!(acc.close_lingered(now), None);
        let first = acc.take_sendable(now);
        assert_eq!(first.len(), 1);
        acc.add_in_flight(1, first, now);
        for _ in 0..5 {
            acc.append(&ProducerRecord::new(&v), 1, || now).unwrap();
            assert_eq!(
                acc.close_lingered(now),
                None,
                "held: no linger deadline to wake for"
            );
        }
        assert!(acc.ready.is_empty());
        acc.complete_in_flight(1, None, &[Ok(0)], now).unwrap();
        acc.close_lingered(now);
        let second = acc.take_sendable(now);
        assert_eq!(second.iter().map(|b| b.records).collect::<Vec<_>>(), [5]);
    }

    #[test]
    fn a_metadata_refresh_grows_the_partitions_and_never_shrinks_them() {
        let config = ProducerConfig {
            metadata_max_age_ms: 50,
            ..config()
        };
        let mut acc = Accumulator::new(config, 2);
        let start = Instant::now();
        let v = value(10);
        let to_third = ProducerRecord::new(&v).with_partition(2);
        assert!(acc.append(&to_third, 1, || start).is_err());
        let due = acc.next_metadata_refresh().unwrap();
        assert!(!acc.metadata_refresh_due(due - Duration::from_millis(1)));
        assert!(acc.metadata_refresh_due(due));
        acc.metadata_refresh_sent(9, due);
        assert!(!acc.metadata_refresh_due(due + Duration::from_secs(1)));
        assert!(
            acc.next_metadata_refresh().is_none(),
            "one refresh at a time"
        );
        assert!(acc.complete_metadata_refresh(8, Ok(3)).is_err());
        acc.complete_metadata_refresh(9, Ok(3)).unwrap();
        assert_eq!(acc.partitions(), 3);
        assert_eq!(
            acc.next_metadata_refresh(),
            Some(due + Duration::from_millis(50))
        );
        let (handle, _) = acc.append(&to_third, 1, || due).unwrap();
        assert_eq!(handle.partition(), 2);
        acc.metadata_refresh_sent(10, due);
        acc.complete_metadata_refresh(10, Ok(1)).unwrap();
        assert_eq!(acc.partitions(), 3, "fewer partitions are ignored");
        acc.metadata_refresh_sent(11, due);
        let refused = ClientError::server(ApiKey::Metadata, ErrorCode::UnknownTopic, "t");
        acc.complete_metadata_refresh(11, Err(refused)).unwrap();
        assert_eq!(acc.partitions(), 3, "a refused refresh keeps the count");
    }

    #[test]
    fn too_large_record_and_bad_partition() {
        let mut acc = Accumulator::new(config(), 2);
        let big = value(500);
        assert!(matches!(
            acc.append(&ProducerRecord::new(&big), 1, Instant::now),
            Err(ClientError::RecordTooLarge { .. })
        ));
        let v = value(1);
        assert!(matches!(
            acc.append(&ProducerRecord::new(&v).with_partition(2), 1, Instant::now),
            Err(ClientError::InvalidArgument(_))
        ));
        // The empty batch left behind is never sent.
        close_every_batch(&mut acc);
        assert!(acc.take_sendable(Instant::now()).is_empty());
        assert_eq!(acc.buffered_bytes, 0);
    }

    /// As Kafka's producer: retried however often, until `delivery_timeout_ms` after the batch
    /// was created; then it fails with the last error (a full disk for a second loses nothing).
    #[test]
    fn retriable_errors_are_retried_until_the_delivery_timeout() {
        let mut acc = Accumulator::new(
            ProducerConfig {
                delivery_timeout_ms: 1_000,
                retry_backoff_ms: 5,
                ..ProducerConfig::default()
            },
            1,
        );
        let now = Instant::now();
        let v = value(40);
        let handle = acc.append(&ProducerRecord::new(&v), 1, || now).unwrap().0;
        close_every_batch(&mut acc);
        let disk_full = || ClientError::server(ApiKey::Produce, ErrorCode::DiskFull, "full");
        let mut at = now;
        for correlation_id in 1..=50 {
            let batches = acc.take_sendable(at);
            assert_eq!(
                batches.len(),
                1,
                "attempt {correlation_id} at {:?}",
                at - now
            );
            acc.add_in_flight(correlation_id, batches, at);
            acc.complete_in_flight(correlation_id, None, &[Err(disk_full())], at)
                .unwrap();
            at += Duration::from_millis(10);
        }
        assert!(
            handle.try_result().is_none(),
            "50 attempts in 0.5 s: still retried"
        );
        let at = now + Duration::from_millis(1_000);
        let batches = acc.take_sendable(at);
        acc.add_in_flight(51, batches, at);
        acc.complete_in_flight(51, None, &[Err(disk_full())], at)
            .unwrap();
        let error = handle.wait().unwrap_err();
        assert_eq!(error.code(), Some(ErrorCode::DiskFull));
    }

    #[test]
    fn retriable_errors_requeue_in_order_then_fail() {
        let mut acc = Accumulator::new(config(), 1);
        let now = Instant::now();
        let v = value(40);
        let record = ProducerRecord::new(&v);
        let handles: Vec<_> = (0..4)
            .map(|_| acc.append(&record, 1, || now).unwrap().0)
            .collect();
        close_every_batch(&mut acc);
        let first = acc.take_sendable(now);
        assert_eq!(first.len(), 2);
        let first_bytes: Vec<_> = first.iter().map(|b| b.bytes.clone()).collect();
        acc.add_in_flight(1, first, now);
        acc.complete_in_flight(1, Some(throttled()), &[], now)
            .unwrap();
        // Backing off: nothing may be sent yet.
        assert!(acc.take_sendable(now).is_empty());
        let later = now + Duration::from_millis(5);
        assert_eq!(acc.next_retry_due(now), Some(later));
        let again = acc.take_sendable(later);
        let again_bytes: Vec<_> = again.iter().map(|b| b.bytes.clone()).collect();
        assert_eq!(again_bytes, first_bytes, "retried in the original order");
        acc.add_in_flight(2, again, later);
        // Second failure exceeds retries_max = 1.
        acc.complete_in_flight(2, None, &[Err(throttled()), Ok(50)], later)
            .unwrap();
        assert!(handles[0].wait().is_err());
        assert_eq!(handles[2].wait().unwrap().offset, 50);
        let summary = acc.take_failures().unwrap();
        assert!(matches!(
            summary,
            ClientError::DeliveryFailed {
                failed_records: 2,
                ..
            }
        ));
        assert!(acc.take_failures().is_none());
    }

    #[test]
    fn non_retriable_errors_fail_at_once_and_fail_all_clears() {
        let mut acc = Accumulator::new(config(), 2);
        let now = Instant::now();
        let v = value(10);
        let a = acc
            .append(&ProducerRecord::new(&v).with_partition(0), 1, || now)
            .unwrap()
            .0;
        let b = acc
            .append(&ProducerRecord::new(&v).with_partition(1), 1, || now)
            .unwrap()
            .0;
        close_every_batch(&mut acc);
        let batches = acc.take_sendable(now);
        assert_eq!(batches.len(), 2, "two partitions share one request");
        acc.add_in_flight(3, batches, now);
        let corrupt = ClientError::server(ApiKey::Produce, ErrorCode::CorruptBatch, "crc");
        acc.complete_in_flight(3, None, &[Err(corrupt), Ok(0)], now)
            .unwrap();
        assert_eq!(a.wait().unwrap_err().code(), Some(ErrorCode::CorruptBatch));
        assert_eq!(b.wait().unwrap().offset, 0);

        let c = acc.append(&ProducerRecord::new(&v), 1, || now).unwrap().0;
        acc.fail_all(ClientError::Disconnected);
        assert!(matches!(c.wait(), Err(ClientError::Disconnected)));
        assert!(acc.refusal().is_some());
        assert!(acc.is_idle());
        assert_eq!(acc.unfinished_records, 0);
        assert!(acc.complete_in_flight(99, None, &[], now).is_err());
    }

    #[test]
    fn request_size_bound_keeps_partition_order() {
        let mut acc = Accumulator::new(
            ProducerConfig {
                request_bytes_max: 250,
                ..config()
            },
            1,
        );
        let now = Instant::now();
        let v = value(40);
        for _ in 0..6 {
            acc.append(&ProducerRecord::new(&v), 1, || now).unwrap();
        }
        close_every_batch(&mut acc);
        // Three ~159-byte batches; only one fits 250 bytes per request.
        assert_eq!(acc.take_sendable(now).len(), 1);
        assert_eq!(acc.take_sendable(now).len(), 1);
        assert_eq!(acc.take_sendable(now).len(), 1);
        assert!(acc.take_sendable(now).is_empty());
    }

    fn identity(epoch: i16) -> ProducerIdentity {
        ProducerIdentity {
            producer_id: 77,
            epoch,
        }
    }

    fn sequence_of(batch: &ReadyBatch) -> (i16, i32) {
        let header = validate(&batch.bytes).unwrap();
        assert_eq!(header.producer_id, 77);
        (header.producer_epoch, header.base_sequence)
    }

    fn server(code: ErrorCode) -> ClientError {
        ClientError::server(ApiKey::Produce, code, "")
    }

    /// An idempotent accumulator (epoch 0) of one partition holding three closed batches of
    /// two records each, not yet sent.
    fn idempotent_with_three_batches(now: Instant) -> Accumulator {
        let mut acc = Accumulator::new(config(), 1);
        acc.set_identity(Some(identity(0)));
        let v = value(40);
        for _ in 0..6 {
            acc.append(&ProducerRecord::new(&v), 1, || now).unwrap();
        }
        close_every_batch(&mut acc);
        acc
    }

    #[test]
    fn idempotent_batches_are_sequenced_when_sent_and_retried_byte_for_byte() {
        let now = Instant::now();
        let mut acc = idempotent_with_three_batches(now);
        // The partition took a batch of this epoch before: several may be in flight.
        acc.idempotence.on_sequenced_batch_acknowledged(0);
        // Three batches of 2 records: sequences 0, 2, 4, in two requests.
        let first = acc.take_sendable(now);
        let sent: Vec<(i16, i32)> = first.iter().map(sequence_of).collect();
        assert_eq!(sent, vec![(0, 0), (0, 2), (0, 4)]);
        let bytes: Vec<Vec<u8>> = first.iter().map(|b| b.bytes.to_vec()).collect();
        let (one, two) = {
            let mut first = first;
            let rest = first.split_off(1);
            (first, rest)
        };
        acc.add_in_flight(1, one, now);
        acc.add_in_flight(2, two, now);
        // The first batch is throttled; the later ones arrive out of order because of it.
        acc.complete_in_flight(1, None, &[Err(server(ErrorCode::Throttled))], now)
            .unwrap();
        let out_of_order = server(ErrorCode::OutOfOrderSequence);
        acc.complete_in_flight(
            2,
            None,
            &[Err(out_of_order.clone()), Err(out_of_order)],
            now,
        )
        .unwrap();
        // All three come back in their original order with their original bytes; the
        // out-of-order answers cost no attempt.
        let later = now + Duration::from_secs(1);
        let again = acc.take_sendable(later);
        let again_bytes: Vec<Vec<u8>> = again.iter().map(|b| b.bytes.to_vec()).collect();
        assert_eq!(again_bytes, bytes);
        assert_eq!(
            again.iter().map(|b| b.attempts).collect::<Vec<_>>(),
            vec![1, 0, 0]
        );
        acc.add_in_flight(3, again, later);
        acc.complete_in_flight(3, None, &[Ok(0), Ok(2), Ok(4)], later)
            .unwrap();
        assert_eq!(acc.unfinished_records, 0);
        assert!(!acc.epoch_bump_due());
    }

    /// A flush waits for the records sent before it, not for those sent while it waits.
    #[test]
    fn a_flush_waits_only_for_records_sent_before_it() {
        let mut acc = Accumulator::new(config(), 1);
        let now = Instant::now();
        let v = value(40);
        acc.append(&ProducerRecord::new(&v), 1, || now).unwrap();
        acc.append(&ProducerRecord::new(&v), 1, || now).unwrap();
        acc.flushing += 1;
        let flush = acc.begin_flush();
        assert!(acc.unfinished_through(flush));
        acc.close_lingered(now);
        let before = acc.take_sendable(now);
        assert_eq!(before.len(), 1);
        acc.add_in_flight(1, before, now);
        // Another thread goes on sending while the flush waits.
        acc.append(&ProducerRecord::new(&v), 1, || now).unwrap();
        acc.close_lingered(now);
        let after = acc.take_sendable(now);
        acc.add_in_flight(2, after, now);
        acc.append(&ProducerRecord::new(&v), 1, || now).unwrap();
        acc.complete_in_flight(1, None, &[Ok(0)], now).unwrap();
        assert!(!acc.unfinished_through(flush), "the flush is done");
        assert_eq!(
            acc.unfinished_records, 2,
            "later records are still on their way"
        );
        // A second flush waits for those.
        let second = acc.begin_flush();
        assert!(acc.unfinished_through(second));
        acc.complete_in_flight(2, None, &[Ok(2)], now).unwrap();
        assert!(acc.unfinished_through(second), "one record is still open");
        acc.close_lingered(now);
        let last = acc.take_sendable(now);
        acc.add_in_flight(3, last, now);
        acc.complete_in_flight(3, None, &[Ok(3)], now).unwrap();
        assert!(!acc.unfinished_through(second));
        assert_eq!(acc.unfinished_records, 0);
        assert!(acc.unfinished_by_generation.is_empty());
    }

    /// `take_sendable` stops walking the queue once every partition is blocked: the batches it
    /// did not look at stay behind those it put back, in their order.
    #[test]
    fn a_queue_walked_in_part_keeps_its_order() {
        let now = Instant::now();
        let mut acc = Accumulator::new(config(), 2);
        acc.set_identity(Some(identity(0)));
        let v = value(40);
        for round in 0..3 {
            for partition in 0..2 {
                let record = ProducerRecord::new(&v).with_partition(partition);
                acc.append(&record, round, || now).unwrap();
            }
            close_every_batch(&mut acc);
        }
        // (partition, round) of each batch.
        let rounds = |batches: &[ReadyBatch]| {
            batches
                .iter()
                .map(|batch| {
                    let header = validate(&batch.bytes).unwrap();
                    (batch.partition, header.base_timestamp_ms)
                })
                .collect::<Vec<_>>()
        };
        // Partitions that do not know the producer yet take one batch at a time.
        let first = acc.take_sendable(now);
        assert_eq!(rounds(&first), [(0, 0), (1, 0)]);
        acc.add_in_flight(1, first, now);
        acc.complete_in_flight(1, None, &[Ok(0), Ok(0)], now)
            .unwrap();
        let rest = acc.take_sendable(now);
        assert_eq!(rounds(&rest), [(0, 1), (1, 1), (0, 2), (1, 2)]);
    }

    /// A partition that does not know the producer takes any first sequence: until it has
    /// taken one batch, a second in flight could be written before a first refused for now.
    #[test]
    fn a_partition_gets_one_batch_at_a_time_until_it_acknowledges_one() {
        let now = Instant::now();
        let mut acc = idempotent_with_three_batches(now);
        let first = acc.take_sendable(now);
        assert_eq!(first.iter().map(sequence_of).collect::<Vec<_>>(), [(0, 0)]);
        acc.add_in_flight(1, first, now);
        assert!(acc.take_sendable(now).is_empty(), "the rest waits");
        acc.complete_in_flight(1, None, &[Err(server(ErrorCode::Throttled))], now)
            .unwrap();
        let later = now + Duration::from_secs(1);
        let retried = acc.take_sendable(later);
        assert_eq!(
            retried.iter().map(sequence_of).collect::<Vec<_>>(),
            [(0, 0)]
        );
        acc.add_in_flight(2, retried, later);
        acc.complete_in_flight(2, None, &[Ok(0)], later).unwrap();
        let rest = acc.take_sendable(later);
        assert_eq!(
            rest.iter().map(sequence_of).collect::<Vec<_>>(),
            [(0, 2), (0, 4)],
            "pipelined once the partition knows the producer"
        );
        // A new epoch starts unconfirmed again.
        acc.set_identity(Some(identity(1)));
        assert_eq!(acc.idempotence.in_flight_batches_max(0), 1);
    }

    #[test]
    fn a_batch_failing_for_good_bumps_the_epoch_before_new_batches() {
        let mut acc = Accumulator::new(config(), 2);
        acc.set_identity(Some(identity(0)));
        let now = Instant::now();
        let v = value(40);
        for partition in [0, 0, 1, 1] {
            acc.append(
                &ProducerRecord::new(&v).with_partition(partition),
                1,
                || now,
            )
            .unwrap();
        }
        close_every_batch(&mut acc);
        let batches = acc.take_sendable(now);
        assert_eq!(batches.len(), 2);
        acc.add_in_flight(1, batches, now);
        // Partition 0's batch is refused for good; partition 1's is written.
        acc.complete_in_flight(1, None, &[Err(server(ErrorCode::CorruptBatch)), Ok(0)], now)
            .unwrap();
        acc.append(&ProducerRecord::new(&v).with_partition(1), 1, || now)
            .unwrap();
        close_every_batch(&mut acc);
        // New batches wait for the bump, which is due at once (nothing in flight).
        assert!(acc.take_sendable(now).is_empty());
        assert!(acc.epoch_bump_due());
        acc.epoch_bump_sent(9, now);
        assert!(!acc.epoch_bump_due());
        assert!(acc.complete_epoch_bump(8, Ok(identity(1))).is_err());
        acc.complete_epoch_bump(9, Ok(identity(1))).unwrap();
        let batches = acc.take_sendable(now);
        assert_eq!(
            batches.iter().map(sequence_of).collect::<Vec<_>>(),
            vec![(1, 0)]
        );
    }

    /// A connected socket pair's client side, as the I/O threads hold it.
    fn connection() -> (crate::client::connection::FrameReader, std::net::TcpStream) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let stream = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let config = crate::client::ConnectionConfig::default();
        let connection = crate::client::Connection::from_stream(stream, config).unwrap();
        let (writer, reader) = connection.split().unwrap();
        (reader, writer.try_clone_stream().unwrap())
    }

    #[test]
    fn a_lost_connection_sends_its_requests_again_in_order_until_out_of_attempts() {
        let now = Instant::now();
        let mut acc = idempotent_with_three_batches(now);
        let (reader, stream) = connection();
        let generation = acc.link.connected(reader, stream);
        acc.idempotence.on_sequenced_batch_acknowledged(0);
        let mut first = acc.take_sendable(now);
        let bytes: Vec<Vec<u8>> = first.iter().map(|b| b.bytes.to_vec()).collect();
        // The later request is listed first: requeueing must not follow the list's order.
        let rest = first.split_off(1);
        acc.add_in_flight(2, rest, now);
        acc.add_in_flight(1, first, now);
        acc.metadata_refresh_sent(3, now);
        assert!(acc.lose_connection(generation, ClientError::Disconnected, now));
        assert!(
            !acc.lose_connection(generation, ClientError::Disconnected, now),
            "the other thread's report of the same failure changes nothing"
        );
        let backoff = Duration::from_millis(config().reconnect_backoff_ms);
        assert_eq!(acc.link.reconnect_at(), Some(now + backoff));
        assert!(
            acc.metadata_refresh_due(now),
            "asked again on the next connection"
        );

        let (reader, stream) = connection();
        let generation = acc.link.connected(reader, stream);
        let again = acc.take_sendable(now);
        let again_bytes: Vec<Vec<u8>> = again.iter().map(|b| b.bytes.to_vec()).collect();
        assert_eq!(again_bytes, bytes, "the same batches, bytes and order");
        assert!(again.iter().all(|b| b.attempts == 1 && b.maybe_written));
        assert!(acc.take_failures().is_none());

        // retries_max is 1: lost again, they fail, and the epoch is bumped before new batches.
        acc.add_in_flight(4, again, now);
        assert!(acc.lose_connection(generation, ClientError::Disconnected, now));
        match acc.take_failures() {
            Some(ClientError::DeliveryFailed {
                failed_records,
                first,
            }) => {
                assert_eq!(failed_records, 6);
                assert!(matches!(*first, ClientError::Disconnected));
            }
            other => panic!("expected the three batches to fail, got {other:?}"),
        }
        assert!(acc.is_idle());
        assert!(acc.epoch_bump_due());
    }

    #[test]
    fn while_disconnected_batches_older_than_the_delivery_timeout_fail() {
        let now = Instant::now();
        let config = ProducerConfig {
            delivery_timeout_ms: 1000,
            ..config()
        };
        let mut acc = Accumulator::new(config, 2);
        let v = value(40);
        let old = acc
            .append(&ProducerRecord::new(&v).with_partition(0), 1, || now)
            .unwrap()
            .0;
        let later = now + Duration::from_millis(600);
        let young = acc
            .append(&ProducerRecord::new(&v).with_partition(1), 1, || later)
            .unwrap()
            .0;
        close_every_batch(&mut acc);
        // Connected: nothing expires, however old.
        let much_later = now + Duration::from_secs(10);
        assert!(!acc.expire_undeliverable(much_later));
        assert!(old.try_result().is_none());

        assert!(acc.lose_connection(0, ClientError::Disconnected, now));
        assert!(!acc.expire_undeliverable(now + Duration::from_millis(999)));
        assert!(old.try_result().is_none());
        assert!(acc.expire_undeliverable(now + Duration::from_millis(1000)));
        assert!(matches!(
            old.try_result(),
            Some(Err(ClientError::Disconnected))
        ));
        assert!(young.try_result().is_none());
        let queued = acc.take_sendable(much_later);
        assert_eq!(queued.len(), 1, "the younger batch still waits to be sent");
        assert_eq!(queued[0].partition, 1);
    }

    #[test]
    fn a_lost_connection_sends_unsequenced_batches_again_in_send_order() {
        // Without idempotence the batches carry no sequence: only the order of the requests
        // says which came first.
        let now = Instant::now();
        let mut acc = Accumulator::new(config(), 1);
        let values: Vec<Vec<u8>> = (0..8u8).map(|i| vec![i; 40]).collect();
        for v in &values {
            acc.append(&ProducerRecord::new(v), 1, || now).unwrap();
        }
        close_every_batch(&mut acc);
        let (reader, stream) = connection();
        let generation = acc.link.connected(reader, stream);
        let batches = acc.take_sendable(now);
        assert_eq!(batches.len(), 4, "two records a batch");
        // A batch ends with its last record's value and a header count of 0: the byte before
        // that count says which records the batch holds.
        let last_record = |batch: &ReadyBatch| batch.bytes.iter().rev().nth(1).copied();
        let sent: Vec<Option<u8>> = batches.iter().map(last_record).collect();
        assert_eq!(sent, [Some(1), Some(3), Some(5), Some(7)]);
        // One request per batch, answered in order: the first is acknowledged, then the
        // connection fails with the other three in flight.
        for (correlation_id, batch) in (1..).zip(batches) {
            acc.add_in_flight(correlation_id, vec![batch], now);
        }
        acc.complete_in_flight(1, None, &[Ok(0)], now).unwrap();
        assert!(acc.lose_connection(generation, ClientError::Disconnected, now));
        let again: Vec<Option<u8>> = acc.take_sendable(now).iter().map(last_record).collect();
        assert_eq!(again, sent[1..], "sent again in the order first sent");
    }
}
