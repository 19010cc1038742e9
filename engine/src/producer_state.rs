//! Idempotent producers: the per-partition memory of what each producer already wrote.
//!
//! A batch with `producerId >= 0` carries the producer's epoch and the sequence number of its
//! first record (Kafka's RecordBatch v2 fields). For every producer the partition remembers its
//! epoch and the last [`BATCHES_PER_PRODUCER`] batches (first and last sequence, offsets), and
//! [`ProducerStateTable::check`] judges a new batch against them:
//!
//! - the next sequence after the last batch: fresh, append it;
//! - exactly one of the remembered batches again: a retry; answer with the original offsets
//!   and do not append ([`Verdict::Duplicate`]);
//! - a batch wholly below the remembered ones, within the sequences this partition wrote for
//!   the epoch: [`ProducerError::DuplicateSequence`] (written long ago; the earlier result
//!   stands but its offset is no longer known);
//! - any other sequence: [`ProducerError::OutOfOrderSequence`] (a gap, or sequences from
//!   before the partition's first batch of the producer, which it never wrote);
//! - an epoch older than the current one: [`ProducerError::InvalidProducerEpoch`] (fenced); a
//!   newer epoch must start at sequence 0.
//!
//! A producer the partition has never seen (or forgot, see below) may start at any sequence,
//! as in Kafka since KIP-360: the partition cannot tell a new producer from one whose state
//! expired. The table holds at most `producers_max` producers; past it, the one that
//! appended least recently is forgotten.
//!
//! The table is rebuilt after a restart from a snapshot file plus the batches after it (see
//! [`crate::producer_snapshot`]); [`ProducerStateTable::record`] is the one way state changes,
//! both for live appends and for that replay, so both end in the same state.

use std::collections::{HashMap, VecDeque};

use crate::batch::BatchHeader;

/// Batches remembered per producer (Kafka's `max.in.flight.requests.per.connection` bound for
/// idempotence).
pub const BATCHES_PER_PRODUCER: usize = 5;

/// Default bound on the producers one partition remembers.
pub const PRODUCERS_MAX_DEFAULT: usize = 10_000;

/// Sequence numbers run from 0 to `i32::MAX` and then wrap to 0, as in Kafka.
const SEQUENCE_SPAN: i64 = 1 << 31;

/// One remembered batch of a producer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchMetadata {
    /// Sequence number of the batch's first record.
    pub first_sequence: i32,
    /// Sequence number of its last record.
    pub last_sequence: i32,
    /// Offset the batch was written at.
    pub base_offset: i64,
    /// Offset of its last record.
    pub last_offset: i64,
}

impl BatchMetadata {
    /// The metadata of a stamped batch (its base offset set by the log).
    pub fn of(header: &BatchHeader) -> BatchMetadata {
        BatchMetadata {
            first_sequence: header.base_sequence,
            last_sequence: last_sequence(header.base_sequence, header.last_offset_delta),
            base_offset: header.base_offset,
            last_offset: header.last_offset(),
        }
    }
}

/// What a producer's state says about one batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Not an idempotent batch (no producer id, or a control batch): append as is.
    NotIdempotent,
    /// The next batch of its producer (or a producer's first): append it.
    Fresh,
    /// A retry of a batch written before: do not append, answer with these offsets.
    Duplicate(BatchMetadata),
}

/// Why an idempotent batch is refused. Nothing is appended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ProducerError {
    /// The producer was fenced: a newer epoch of the same id wrote to this partition.
    #[error("producer {producer_id} epoch {epoch} is fenced by epoch {current_epoch}")]
    InvalidProducerEpoch {
        /// The producer.
        producer_id: i64,
        /// The batch's epoch.
        epoch: i16,
        /// The epoch the partition knows.
        current_epoch: i16,
    },
    /// The batch's first sequence does not follow the producer's last batch.
    #[error(
        "producer {producer_id} epoch {epoch}: sequence {first_sequence} where {expected_sequence} was expected"
    )]
    OutOfOrderSequence {
        /// The producer.
        producer_id: i64,
        /// The batch's epoch.
        epoch: i16,
        /// The sequence the partition expects next.
        expected_sequence: i32,
        /// The batch's first sequence.
        first_sequence: i32,
    },
    /// The batch was written before, longer ago than the remembered batches reach.
    #[error(
        "producer {producer_id} epoch {epoch}: sequence {first_sequence} was written already (next expected {expected_sequence})"
    )]
    DuplicateSequence {
        /// The producer.
        producer_id: i64,
        /// The batch's epoch.
        epoch: i16,
        /// The sequence the partition expects next.
        expected_sequence: i32,
        /// The batch's first sequence.
        first_sequence: i32,
    },
    /// An idempotent batch with a negative sequence or epoch.
    #[error("producer {producer_id}: invalid epoch {epoch} or base sequence {base_sequence}")]
    InvalidSequence {
        /// The producer.
        producer_id: i64,
        /// The batch's epoch.
        epoch: i16,
        /// The batch's base sequence.
        base_sequence: i32,
    },
}

/// The state of one producer in one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProducerEntry {
    /// Current epoch.
    pub epoch: i16,
    /// The first sequence of the first batch this partition wrote for the epoch (or since it
    /// last forgot the producer). Sequences are checked to follow each other from there, so
    /// every sequence from it up to [`ProducerEntry::next_sequence`] is in the log; before it
    /// the partition knows nothing (a producer it did not know may start anywhere).
    pub start_sequence: i32,
    /// The last batches of this epoch, oldest first; never empty, at most
    /// [`BATCHES_PER_PRODUCER`].
    pub batches: VecDeque<BatchMetadata>,
}

impl ProducerEntry {
    fn newest(&self) -> &BatchMetadata {
        self.batches
            .back()
            .expect("a producer entry holds at least one batch")
    }

    /// The sequence the next batch must start with.
    pub fn next_sequence(&self) -> i32 {
        next_sequence(self.newest().last_sequence)
    }

    /// Offset of the last record this producer appended (for eviction).
    pub fn last_offset(&self) -> i64 {
        self.newest().last_offset
    }

    /// How many sequences before [`ProducerEntry::next_sequence`] this partition wrote for
    /// the epoch. After more than 2^31 records the count starts again from the wrap: it
    /// may undercount, never overcount.
    fn sequences_written(&self) -> i64 {
        (i64::from(self.next_sequence()) - i64::from(self.start_sequence)).rem_euclid(SEQUENCE_SPAN)
    }
}

/// Every producer of one partition. See the module docs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProducerStateTable {
    producers: HashMap<i64, ProducerEntry>,
    producers_max: usize,
}

impl ProducerStateTable {
    /// An empty table remembering at most `producers_max` producers (at least one).
    pub fn new(producers_max: usize) -> ProducerStateTable {
        ProducerStateTable {
            producers: HashMap::new(),
            producers_max: producers_max.max(1),
        }
    }

    /// Judges a batch about to be appended (its header as the producer sent it). Changes
    /// nothing: call [`ProducerStateTable::record`] once the batch has its offset.
    pub fn check(&self, header: &BatchHeader) -> Result<Verdict, ProducerError> {
        if header.producer_id < 0 || header.is_control() {
            return Ok(Verdict::NotIdempotent);
        }
        let producer_id = header.producer_id;
        let (epoch, first_sequence) = (header.producer_epoch, header.base_sequence);
        if epoch < 0 || first_sequence < 0 {
            return Err(ProducerError::InvalidSequence {
                producer_id,
                epoch,
                base_sequence: first_sequence,
            });
        }
        let Some(entry) = self.producers.get(&producer_id) else {
            return Ok(Verdict::Fresh);
        };
        if epoch < entry.epoch {
            return Err(ProducerError::InvalidProducerEpoch {
                producer_id,
                epoch,
                current_epoch: entry.epoch,
            });
        }
        if epoch > entry.epoch {
            // A bumped epoch starts its sequences again.
            return if first_sequence == 0 {
                Ok(Verdict::Fresh)
            } else {
                Err(ProducerError::OutOfOrderSequence {
                    producer_id,
                    epoch,
                    expected_sequence: 0,
                    first_sequence,
                })
            };
        }
        let last = last_sequence(first_sequence, header.last_offset_delta);
        if let Some(original) = entry
            .batches
            .iter()
            .find(|batch| batch.first_sequence == first_sequence && batch.last_sequence == last)
        {
            return Ok(Verdict::Duplicate(*original));
        }
        let expected_sequence = entry.next_sequence();
        if first_sequence == expected_sequence {
            return Ok(Verdict::Fresh);
        }
        // How far behind the expected sequence the batch starts, modulo the wrap. It is an old
        // duplicate only when all of its records lie among the sequences this partition wrote:
        // DuplicateSequence says the batch stands (Kafka clients count it delivered), so a
        // batch from before the producer's first batch here (one refused for now while a later
        // one was taken as the producer's first, or one from before the producer was
        // forgotten) or reaching past the expected sequence is a gap, never written.
        let behind =
            (i64::from(expected_sequence) - i64::from(first_sequence)).rem_euclid(SEQUENCE_SPAN);
        let written = i64::from(header.last_offset_delta.max(0)) < behind
            && behind <= entry.sequences_written()
            && behind < SEQUENCE_SPAN / 2;
        if written {
            Err(ProducerError::DuplicateSequence {
                producer_id,
                epoch,
                expected_sequence,
                first_sequence,
            })
        } else {
            Err(ProducerError::OutOfOrderSequence {
                producer_id,
                epoch,
                expected_sequence,
                first_sequence,
            })
        }
    }

    /// Remembers an appended batch (its header with the offset the log stamped). Batches
    /// without a producer id and control batches are ignored. Used by appends after
    /// [`ProducerStateTable::check`] said [`Verdict::Fresh`], and by recovery for every batch
    /// of the log in order, without checks: the log is the truth.
    pub fn record(&mut self, header: &BatchHeader) {
        if header.producer_id < 0 || header.is_control() {
            return;
        }
        let batch = BatchMetadata::of(header);
        let epoch = header.producer_epoch;
        if let Some(entry) = self.producers.get_mut(&header.producer_id) {
            if entry.epoch != epoch {
                // A new epoch: the old epoch's batches can never match a retry again.
                entry.epoch = epoch;
                entry.start_sequence = batch.first_sequence;
                entry.batches.clear();
            }
            if entry.batches.len() == BATCHES_PER_PRODUCER {
                entry.batches.pop_front();
            }
            entry.batches.push_back(batch);
            return;
        }
        if self.producers.len() >= self.producers_max {
            self.evict_least_recent();
        }
        let mut batches = VecDeque::with_capacity(BATCHES_PER_PRODUCER);
        batches.push_back(batch);
        self.producers.insert(
            header.producer_id,
            ProducerEntry {
                epoch,
                start_sequence: batch.first_sequence,
                batches,
            },
        );
    }

    /// Inserts a producer's whole state (snapshot loading). An entry without batches is
    /// ignored; more than [`BATCHES_PER_PRODUCER`] keeps the newest.
    pub fn insert(&mut self, producer_id: i64, mut entry: ProducerEntry) {
        if entry.batches.is_empty() || producer_id < 0 {
            return;
        }
        while entry.batches.len() > BATCHES_PER_PRODUCER {
            entry.batches.pop_front();
        }
        if !self.producers.contains_key(&producer_id) && self.producers.len() >= self.producers_max
        {
            self.evict_least_recent();
        }
        self.producers.insert(producer_id, entry);
    }

    /// The state of one producer.
    pub fn get(&self, producer_id: i64) -> Option<&ProducerEntry> {
        self.producers.get(&producer_id)
    }

    /// Every producer, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (i64, &ProducerEntry)> {
        self.producers.iter().map(|(id, entry)| (*id, entry))
    }

    /// Number of producers remembered.
    pub fn len(&self) -> usize {
        self.producers.len()
    }

    /// Whether no producer is remembered.
    pub fn is_empty(&self) -> bool {
        self.producers.is_empty()
    }

    /// The bound on producers.
    pub fn producers_max(&self) -> usize {
        self.producers_max
    }

    /// Forgets the producer whose last append is the oldest. Linear, but only when a new
    /// producer arrives at a full table.
    fn evict_least_recent(&mut self) {
        let oldest = self
            .producers
            .iter()
            .min_by_key(|(_, entry)| entry.last_offset())
            .map(|(id, _)| *id);
        if let Some(id) = oldest {
            self.producers.remove(&id);
        }
    }
}

/// The sequence of a batch's last record: `first + last_offset_delta`, wrapping past
/// `i32::MAX` to 0.
pub fn last_sequence(first_sequence: i32, last_offset_delta: i32) -> i32 {
    let last = (i64::from(first_sequence) + i64::from(last_offset_delta.max(0))) % SEQUENCE_SPAN;
    // The modulus keeps it in 0..2^31 for non-negative inputs.
    i32::try_from(last).unwrap_or(0)
}

/// The sequence after `sequence`, wrapping past `i32::MAX` to 0.
pub fn next_sequence(sequence: i32) -> i32 {
    if sequence == i32::MAX {
        0
    } else {
        sequence + 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::{BatchBuilder, BatchHeader};

    fn header(producer_id: i64, epoch: i16, first_sequence: i32, records: i32) -> BatchHeader {
        let mut builder = BatchBuilder::new(Vec::new(), 0);
        builder.set_producer_id(producer_id);
        builder.set_producer_epoch(epoch);
        builder.set_base_sequence(first_sequence);
        for _ in 0..records {
            builder.push(0, None, Some(b"v"), &[]).unwrap();
        }
        BatchHeader::parse(builder.finish()).unwrap()
    }

    fn at(mut header: BatchHeader, base_offset: i64) -> BatchHeader {
        header.base_offset = base_offset;
        header
    }

    #[test]
    fn fresh_then_duplicate_then_gap() {
        let mut table = ProducerStateTable::new(10);
        let first = header(7, 0, 0, 3);
        assert_eq!(table.check(&first), Ok(Verdict::Fresh));
        table.record(&at(first, 100));
        let retry = table.check(&first).unwrap();
        assert_eq!(
            retry,
            Verdict::Duplicate(BatchMetadata {
                first_sequence: 0,
                last_sequence: 2,
                base_offset: 100,
                last_offset: 102,
            })
        );
        assert_eq!(table.check(&header(7, 0, 3, 1)), Ok(Verdict::Fresh));
        assert!(matches!(
            table.check(&header(7, 0, 5, 1)),
            Err(ProducerError::OutOfOrderSequence {
                expected_sequence: 3,
                first_sequence: 5,
                ..
            })
        ));
        // Same start, other length: not the same batch.
        assert!(table.check(&header(7, 0, 0, 2)).is_err());
        assert_eq!(
            table.check(&header(-1, -1, -1, 1)),
            Ok(Verdict::NotIdempotent)
        );
        assert!(matches!(
            table.check(&header(7, -1, 3, 1)),
            Err(ProducerError::InvalidSequence { .. })
        ));
    }

    #[test]
    fn only_the_last_five_batches_are_remembered() {
        let mut table = ProducerStateTable::new(10);
        for n in 0..8 {
            let batch = header(1, 0, n, 1);
            assert_eq!(table.check(&batch), Ok(Verdict::Fresh));
            table.record(&at(batch, i64::from(n)));
        }
        for n in 3..8 {
            assert!(matches!(
                table.check(&header(1, 0, n, 1)),
                Ok(Verdict::Duplicate(meta)) if meta.base_offset == i64::from(n)
            ));
        }
        assert!(matches!(
            table.check(&header(1, 0, 2, 1)),
            Err(ProducerError::DuplicateSequence { .. })
        ));
        assert_eq!(table.get(1).unwrap().batches.len(), BATCHES_PER_PRODUCER);
    }

    #[test]
    fn only_sequences_written_here_are_duplicates() {
        let mut table = ProducerStateTable::new(10);
        // The partition did not know producer 5: its batch at 10 was taken as its first (the
        // batch at 0 was refused for now, say, and is retried after it).
        table.record(&at(header(5, 0, 10, 5), 0));
        for (first_sequence, records) in [(0, 5), (5, 5), (8, 2)] {
            assert!(
                matches!(
                    table.check(&header(5, 0, first_sequence, records)),
                    Err(ProducerError::OutOfOrderSequence {
                        expected_sequence: 15,
                        ..
                    })
                ),
                "sequences {first_sequence}.. were never written here"
            );
        }
        for n in 0..6 {
            table.record(&at(header(5, 0, 15 + n * 5, 5), 5 + i64::from(n) * 5));
        }
        // Written here, longer ago than the remembered batches reach: the result stands.
        assert!(matches!(
            table.check(&header(5, 0, 10, 5)),
            Err(ProducerError::DuplicateSequence {
                expected_sequence: 45,
                ..
            })
        ));
        // A batch reaching past the expected sequence holds records never written.
        assert!(matches!(
            table.check(&header(5, 0, 43, 4)),
            Err(ProducerError::OutOfOrderSequence { .. })
        ));
        // A new epoch starts the written sequences again at its first batch.
        table.record(&at(header(5, 1, 0, 2), 100));
        assert!(matches!(
            table.check(&header(5, 1, 0, 1)),
            Err(ProducerError::DuplicateSequence { .. })
        ));
        assert_eq!(table.get(5).unwrap().start_sequence, 0);
    }

    #[test]
    fn epochs_fence_and_restart_sequences() {
        let mut table = ProducerStateTable::new(10);
        table.record(&at(header(3, 1, 0, 2), 0));
        assert!(matches!(
            table.check(&header(3, 0, 2, 1)),
            Err(ProducerError::InvalidProducerEpoch {
                current_epoch: 1,
                ..
            })
        ));
        assert!(matches!(
            table.check(&header(3, 2, 5, 1)),
            Err(ProducerError::OutOfOrderSequence {
                expected_sequence: 0,
                ..
            })
        ));
        let bumped = header(3, 2, 0, 1);
        assert_eq!(table.check(&bumped), Ok(Verdict::Fresh));
        table.record(&at(bumped, 2));
        let entry = table.get(3).unwrap();
        assert_eq!((entry.epoch, entry.batches.len()), (2, 1));
    }

    #[test]
    fn sequences_wrap() {
        assert_eq!(last_sequence(i32::MAX - 1, 3), 1);
        assert_eq!(next_sequence(i32::MAX), 0);
        let mut table = ProducerStateTable::new(10);
        table.record(&at(header(4, 0, i32::MAX - 1, 2), 0));
        assert_eq!(table.get(4).unwrap().next_sequence(), 0);
        assert_eq!(table.check(&header(4, 0, 0, 1)), Ok(Verdict::Fresh));
    }

    #[test]
    fn least_recent_producer_is_evicted_at_the_bound() {
        let mut table = ProducerStateTable::new(2);
        table.record(&at(header(1, 0, 0, 1), 0));
        table.record(&at(header(2, 0, 0, 1), 1));
        table.record(&at(header(1, 0, 1, 1), 2));
        table.record(&at(header(3, 0, 0, 1), 3));
        assert_eq!(table.len(), 2);
        assert!(table.get(2).is_none(), "producer 2 appended least recently");
        // A forgotten producer is accepted at any sequence.
        assert_eq!(table.check(&header(2, 0, 9, 1)), Ok(Verdict::Fresh));
    }
}
