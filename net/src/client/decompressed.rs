//! [`Decompressed`]: the records of the compressed batches of one poll, decompressed into a
//! buffer the consumer owns and reuses from poll to poll.
//!
//! Records of a poll borrow its fetch response (no copy for uncompressed batches). Records of
//! a compressed batch must live as long, so they cannot be decompressed lazily into a buffer
//! the iterator also writes to. Instead, when a poll's response is received, every compressed
//! batch whose records the poll's iterator will read is decompressed, in the order the
//! iterator meets them, onto the end of one arena; the iterator then takes the outcomes (a
//! byte range of the arena, an error, or "left for the next poll") in that same order. Both
//! walks use the same batch iterator and the same skip rule, so they meet the same compressed
//! batches. Uncompressed batches never touch the arena.

use std::ops::Range;

use ringlog_engine::batch::{self, BatchHeader, Compression, RecordIter};
use ringlog_engine::compression::{self, DecompressError};

use super::error::ClientError;

/// Default bound on the bytes decompressed for one poll, and so for one batch: 64 MiB, the
/// largest batch ringlog stores ([`ringlog_engine::batch::BATCH_BYTES_MAX`]), so that any batch
/// that could have been sent uncompressed can be read.
pub const DECOMPRESSED_BYTES_MAX_DEFAULT: usize = 64 << 20;

/// What became of one compressed batch.
#[derive(Debug, Clone)]
enum Outcome {
    /// Its records section, in the arena.
    Records(Range<usize>),
    /// It could not be decompressed; the error is reported in place of its records.
    Failed(ClientError),
    /// It did not fit in what was left of the poll's bound: neither it nor the batches after
    /// it in its partition are read by this poll (the position stops at it).
    Deferred,
}

/// Whether [`Decompressed::push`] decompressed the batch or left it for the next poll.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Pushed {
    /// Decompressed.
    Done,
    /// Failed for good (its error is reported in place of its records); `too_large` when
    /// only the bound stopped it.
    Failed { too_large: bool },
    /// Left for the next poll, with the batches after it in its partition.
    Deferred,
}

/// The decompressed records sections of one poll; see the module docs.
#[derive(Debug, Clone, Default)]
pub(super) struct Decompressed {
    arena: Vec<u8>,
    batches: Vec<Outcome>,
}

impl Decompressed {
    /// Forgets the last poll's batches, keeping the arena's memory for the next.
    pub(super) fn clear(&mut self) {
        self.arena.clear();
        self.batches.clear();
    }

    /// Decompresses `bytes`, one compressed batch of `partition` whose header is `header`,
    /// onto the arena. With `may_defer` (the [`super::Consumer`], whose positions can stop at
    /// the batch) the whole arena holds at most `limit_bytes`: a batch larger alone fails with
    /// [`ClientError::Decompress`] (a "zip bomb" never allocates past the bound) and one larger
    /// than what earlier batches left of it is deferred. Without (the share consumer, whose
    /// records are already acquired and must be handed out), `limit_bytes` bounds each batch.
    pub(super) fn push(
        &mut self,
        partition: u32,
        header: &BatchHeader,
        bytes: &[u8],
        limit_bytes: usize,
        may_defer: bool,
    ) -> Pushed {
        let used = self.arena.len();
        let left = if may_defer {
            limit_bytes.saturating_sub(used)
        } else {
            limit_bytes
        };
        let outcome = match batch::records_section(bytes) {
            Ok((_, section)) => {
                match compression::decompress(header.compression(), section, &mut self.arena, left)
                {
                    Ok(()) => self.checked(partition, header, used),
                    Err(DecompressError::TooLarge { .. }) if may_defer && used > 0 => {
                        Outcome::Deferred
                    }
                    Err(DecompressError::TooLarge { codec, .. }) => {
                        Outcome::Failed(ClientError::Decompress {
                            partition,
                            base_offset: header.base_offset,
                            source: DecompressError::TooLarge { codec, limit_bytes },
                        })
                    }
                    Err(source) => Outcome::Failed(ClientError::Decompress {
                        partition,
                        base_offset: header.base_offset,
                        source,
                    }),
                }
            }
            Err(error) => Outcome::Failed(error.into()),
        };
        let pushed = match &outcome {
            Outcome::Records(_) => Pushed::Done,
            Outcome::Failed(ClientError::Decompress {
                source: DecompressError::TooLarge { .. },
                ..
            }) => Pushed::Failed { too_large: true },
            Outcome::Failed(_) => Pushed::Failed { too_large: false },
            Outcome::Deferred => Pushed::Deferred,
        };
        self.batches.push(outcome);
        pushed
    }

    /// The records just decompressed onto the arena from `start`, checked whole: the server
    /// stores a compressed batch without reading its records, so a malformed one is first
    /// seen here, and the batch is refused as a whole (as a payload that does not decompress
    /// is) rather than read up to its bad spot, since a share member could not settle the
    /// records after it.
    fn checked(&mut self, partition: u32, header: &BatchHeader, start: usize) -> Outcome {
        let section = self.arena.get(start..).unwrap_or_default();
        let malformed = batch::decompressed_records(header, section).find_map(Result::err);
        let Some(error) = malformed else {
            return Outcome::Records(start..self.arena.len());
        };
        self.arena.truncate(start);
        Outcome::Failed(ClientError::Decompress {
            partition,
            base_offset: header.base_offset,
            source: DecompressError::Corrupt {
                codec: header.compression(),
                reason: format!("its records are malformed: {error}"),
            },
        })
    }

    /// The outcomes in the order they were pushed.
    pub(super) fn reader(&self) -> DecompressedReader<'_> {
        DecompressedReader {
            arena: &self.arena,
            batches: self.batches.iter(),
        }
    }
}

/// Hands out a [`Decompressed`]'s outcomes in push order.
#[derive(Debug, Clone)]
pub(super) struct DecompressedReader<'a> {
    arena: &'a [u8],
    batches: std::slice::Iter<'a, Outcome>,
}

/// The records of the next compressed batch, as [`DecompressedReader::next_batch`] gives them.
#[derive(Debug)]
pub(super) enum NextBatch<'a> {
    /// Its records.
    Records(RecordIter<'a>),
    /// Why it cannot be read.
    Failed(ClientError),
    /// Left for the next poll: its partition ends here for this poll.
    Deferred,
}

impl<'a> DecompressedReader<'a> {
    /// The records of `bytes`, the next batch of the poll (whose header is `header`): read in
    /// place when uncompressed, else taken from the arena.
    pub(super) fn records_of(&mut self, header: &BatchHeader, bytes: &'a [u8]) -> NextBatch<'a> {
        if header.compression() != Compression::None {
            return self.next_batch(header);
        }
        match batch::records(bytes) {
            Ok(records) => NextBatch::Records(records),
            Err(error) => NextBatch::Failed(error.into()),
        }
    }

    /// The records of the next compressed batch met, whose header is `header`.
    fn next_batch(&mut self, header: &BatchHeader) -> NextBatch<'a> {
        debug_assert_ne!(header.compression(), Compression::None);
        match self.batches.next() {
            Some(Outcome::Records(range)) => match self.arena.get(range.clone()) {
                Some(section) => NextBatch::Records(batch::decompressed_records(header, section)),
                None => NextBatch::Failed(mismatch()),
            },
            Some(Outcome::Failed(error)) => NextBatch::Failed(error.clone()),
            Some(Outcome::Deferred) => NextBatch::Deferred,
            None => NextBatch::Failed(mismatch()),
        }
    }
}

/// The two walks disagreed: a bug, reported rather than panicked on.
fn mismatch() -> ClientError {
    ClientError::UnexpectedResponse(
        "a compressed batch was met that was not decompressed with its poll".to_owned(),
    )
}
