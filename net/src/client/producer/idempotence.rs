//! The idempotent producer's bookkeeping: who it is (producer id and epoch from
//! InitProducerId), the next sequence number of each partition, and the epoch bump after a
//! batch failed for good.
//!
//! - A batch gets its producer id, epoch and base sequence when it is first sent, not when it
//!   is built, so batches waiting behind a failure never need renumbering. From then on its
//!   bytes never change: every retry resends them, and the server answers a retry of a batch
//!   it already appended with the original offset instead of appending it again.
//! - A batch that fails for good leaves a gap in its partition's sequence; batches after it
//!   that were already sequenced fail too (the server refuses them as out of order). Then, once
//!   nothing is in flight or waiting for a retry, the producer asks InitProducerId for the next
//!   epoch, whose sequences start at 0 on every partition, and sends the waiting batches
//!   numbered in it.

use std::time::Instant;

use ringlog_engine::batch;
use ringlog_engine::producer_state::BATCHES_PER_PRODUCER;

/// Batches of one partition in flight at once: the server remembers this many per producer,
/// so a retry is always recognised.
pub(crate) const IN_FLIGHT_BATCHES_PER_PARTITION_MAX: usize = BATCHES_PER_PRODUCER;

/// Batches of one partition in flight until the partition has taken one of this producer's
/// epoch. A partition that does not know the producer takes any first sequence: with more in
/// flight, a later batch could be written first while an earlier one is refused for now
/// (Throttled), which then could never be written in its place.
pub(crate) const IN_FLIGHT_BATCHES_UNCONFIRMED_MAX: usize = 1;

/// The producer id and epoch stamped into batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ProducerIdentity {
    pub(crate) producer_id: i64,
    pub(crate) epoch: i16,
}

/// Where an epoch bump stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EpochBump {
    /// Sequences are contiguous.
    NotNeeded,
    /// A batch failed for good: bump once quiet; no new batch is sequenced until then.
    Wanted,
    /// InitProducerId is in flight.
    Sent {
        correlation_id: u32,
        sent_at: Instant,
    },
}

/// Idempotence state of one producer; `identity` is `None` when idempotence is off.
#[derive(Debug)]
pub(crate) struct Idempotence {
    identity: Option<ProducerIdentity>,
    next_sequence: Vec<i32>,
    /// Per partition: whether it has acknowledged a batch of the current epoch.
    confirmed: Vec<bool>,
    /// Numbers batches in the order they were sequenced (across partitions).
    next_batch_number: u64,
    pub(crate) bump: EpochBump,
}

impl Idempotence {
    /// Off, for a topic with `partitions` partitions.
    pub(crate) fn new(partitions: u32) -> Idempotence {
        Idempotence {
            identity: None,
            next_sequence: vec![0; partitions as usize],
            confirmed: vec![false; partitions as usize],
            next_batch_number: 0,
            bump: EpochBump::NotNeeded,
        }
    }

    /// Sequences for partitions added to the topic start at 0.
    pub(crate) fn grow(&mut self, partitions: u32) {
        self.next_sequence.resize(partitions as usize, 0);
        self.confirmed.resize(partitions as usize, false);
    }

    /// Turns idempotence on with `identity` (or off with `None`); sequences restart at 0.
    pub(crate) fn set_identity(&mut self, identity: Option<ProducerIdentity>) {
        self.identity = identity;
        self.next_sequence.fill(0);
        self.confirmed.fill(false);
        self.bump = EpochBump::NotNeeded;
    }

    /// The identity in use.
    pub(crate) fn identity(&self) -> Option<ProducerIdentity> {
        self.identity
    }

    /// Whether new batches must wait for an epoch bump.
    pub(crate) fn holds_new_batches(&self) -> bool {
        self.identity.is_some() && self.bump != EpochBump::NotNeeded
    }

    /// Stamps a batch about to be sent for the first time; returns its batch number.
    pub(crate) fn stamp(&mut self, partition: u32, bytes: &mut [u8], records: u64) -> Option<u64> {
        let identity = self.identity?;
        let slot = self.next_sequence.get_mut(partition as usize)?;
        let sequence = *slot;
        // The accumulator built the batch: its header is there, so this cannot fail.
        batch::set_producer_fields(bytes, identity.producer_id, identity.epoch, sequence).ok()?;
        *slot = advance(sequence, records);
        let number = self.next_batch_number;
        self.next_batch_number += 1;
        Some(number)
    }

    /// Batches of `partition` that may be in flight at once.
    pub(crate) fn in_flight_batches_max(&self, partition: u32) -> usize {
        match self.confirmed.get(partition as usize) {
            Some(true) => IN_FLIGHT_BATCHES_PER_PARTITION_MAX,
            _ => IN_FLIGHT_BATCHES_UNCONFIRMED_MAX,
        }
    }

    /// `partition` acknowledged a batch sequenced in the current epoch: it knows the producer
    /// and checks the order of the next ones.
    pub(crate) fn on_sequenced_batch_acknowledged(&mut self, partition: u32) {
        if let Some(confirmed) = self.confirmed.get_mut(partition as usize) {
            *confirmed = true;
        }
    }

    /// A batch that was sequenced failed for good: bump the epoch when quiet.
    pub(crate) fn on_sequenced_batch_failed(&mut self) {
        if self.identity.is_some() && self.bump == EpochBump::NotNeeded {
            self.bump = EpochBump::Wanted;
        }
    }

    /// The bump's request is on its way.
    pub(crate) fn bump_sent(&mut self, correlation_id: u32, sent_at: Instant) {
        debug_assert_eq!(self.bump, EpochBump::Wanted);
        self.bump = EpochBump::Sent {
            correlation_id,
            sent_at,
        };
    }

    /// The bump's connection failed before its answer came: ask again on the next one.
    pub(crate) fn bump_unanswered(&mut self) {
        if matches!(self.bump, EpochBump::Sent { .. }) {
            self.bump = EpochBump::Wanted;
        }
    }

    /// The bump's answer: the new identity; every partition starts again at sequence 0.
    pub(crate) fn bump_done(&mut self, identity: ProducerIdentity) {
        self.set_identity(Some(identity));
    }
}

/// The sequence after `records` records from `sequence`, wrapping past `i32::MAX` to 0.
fn advance(sequence: i32, records: u64) -> i32 {
    let span = 1i64 << 31;
    let records = i64::try_from(records % (span as u64)).unwrap_or(0);
    i32::try_from((i64::from(sequence) + records) % span).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringlog_engine::batch::{validate, BatchBuilder};

    #[test]
    fn batches_are_numbered_and_sequenced_per_partition() {
        let mut idempotence = Idempotence::new(2);
        let mut builder = BatchBuilder::new(Vec::new(), 0);
        builder.push(0, None, Some(b"a"), &[]).unwrap();
        builder.push(0, None, Some(b"b"), &[]).unwrap();
        let mut bytes = builder.finish().to_vec();
        assert_eq!(idempotence.stamp(0, &mut bytes, 2), None, "off: untouched");
        idempotence.set_identity(Some(ProducerIdentity {
            producer_id: 9,
            epoch: 1,
        }));
        assert_eq!(idempotence.stamp(0, &mut bytes.clone(), 2), Some(0));
        assert_eq!(idempotence.stamp(0, &mut bytes, 2), Some(1));
        let header = validate(&bytes).unwrap();
        assert_eq!((header.producer_id, header.producer_epoch), (9, 1));
        assert_eq!(header.base_sequence, 2);
        idempotence.on_sequenced_batch_failed();
        assert!(idempotence.holds_new_batches());
        idempotence.bump_sent(5, Instant::now());
        idempotence.bump_done(ProducerIdentity {
            producer_id: 9,
            epoch: 2,
        });
        assert!(!idempotence.holds_new_batches());
        idempotence.stamp(0, &mut bytes, 2).unwrap();
        assert_eq!(validate(&bytes).unwrap().base_sequence, 0);
        assert_eq!(advance(i32::MAX, 1), 0);
        assert_eq!(advance(i32::MAX - 1, 3), 1);
    }
}
