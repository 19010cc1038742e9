//! Sparse per-segment indexes: offset -> file position, and timestamp -> offset.
//!
//! Both are kept in memory as sorted `Vec`s (one entry every `index_interval_bytes` of log, so
//! a 1 GiB segment with 4 KiB spacing has at most 256 Ki entries) and persisted when a segment
//! is rolled or closed. On disk they are plain arrays of big-endian entries:
//!
//! ```text
//! <base>.index      relative offset u32 | file position u32          (8 bytes per entry)
//! <base>.timeindex  max timestamp i64   | relative offset u32        (12 bytes per entry)
//! ```
//!
//! The two indexes are built together: every offset entry has a time entry with the same
//! relative offset, whose timestamp is the largest batch timestamp seen in the segment up to and
//! including that batch (a running maximum). That pairing is what makes a timestamp lookup
//! safe with client clocks that go backwards: every batch up to an entry has a timestamp no
//! larger than the entry's.

use thiserror::Error;

/// Bytes of one offset index entry on disk.
pub const OFFSET_ENTRY_BYTES: usize = 8;
/// Bytes of one time index entry on disk.
pub const TIME_ENTRY_BYTES: usize = 12;

/// Why index file bytes were not accepted; the caller rebuilds the index from the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum IndexError {
    /// The file length is not a whole number of entries.
    #[error("index file of {bytes} bytes is not a multiple of {entry_bytes}-byte entries")]
    PartialEntry {
        /// File length.
        bytes: usize,
        /// Size of one entry.
        entry_bytes: usize,
    },
    /// Entries are not in the order appends create them.
    #[error("index entry {entry} is out of order")]
    OutOfOrder {
        /// Position of the first bad entry.
        entry: usize,
    },
}

/// One offset index entry: the batch starting at `position` has base offset
/// `segment base + relative_offset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OffsetEntry {
    /// Base offset of the batch minus the segment's base offset.
    pub relative_offset: u32,
    /// Byte position of the batch in the segment file.
    pub position: u32,
}

/// The sparse offset index of one segment, sorted by offset and by position.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OffsetIndex {
    entries: Vec<OffsetEntry>,
}

impl OffsetIndex {
    /// An empty index.
    pub fn new() -> OffsetIndex {
        OffsetIndex::default()
    }

    /// Adds an entry; both fields must grow strictly (appends only move forward).
    pub fn push(&mut self, entry: OffsetEntry) {
        if let Some(last) = self.entries.last() {
            assert!(
                entry.relative_offset > last.relative_offset && entry.position > last.position,
                "offset index entries must grow: {last:?} then {entry:?}"
            );
        }
        self.entries.push(entry);
    }

    /// The entry of the last indexed batch whose base offset is at most `relative_offset`:
    /// the place to start scanning for it. `None` when the offset precedes every entry.
    pub fn lookup(&self, relative_offset: u32) -> Option<OffsetEntry> {
        let after = self
            .entries
            .partition_point(|entry| entry.relative_offset <= relative_offset);
        after.checked_sub(1).map(|at| self.entries[at])
    }

    /// The entry of the last indexed batch that starts at or before `position`.
    pub fn lookup_position(&self, position: u32) -> Option<OffsetEntry> {
        let after = self
            .entries
            .partition_point(|entry| entry.position <= position);
        after.checked_sub(1).map(|at| self.entries[at])
    }

    /// The newest entry.
    pub fn last(&self) -> Option<OffsetEntry> {
        self.entries.last().copied()
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// All entries, oldest first.
    pub fn entries(&self) -> &[OffsetEntry] {
        &self.entries
    }

    /// Appends the on-disk form to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.reserve(self.entries.len() * OFFSET_ENTRY_BYTES);
        for entry in &self.entries {
            out.extend_from_slice(&entry.relative_offset.to_be_bytes());
            out.extend_from_slice(&entry.position.to_be_bytes());
        }
    }

    /// Parses the on-disk form, checking that entries strictly grow.
    pub fn decode(bytes: &[u8]) -> Result<OffsetIndex, IndexError> {
        let chunks = exact_chunks::<OFFSET_ENTRY_BYTES>(bytes)?;
        let mut entries = Vec::with_capacity(chunks.len());
        for (at, chunk) in chunks.iter().enumerate() {
            let entry = OffsetEntry {
                relative_offset: u32::from_be_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]),
                position: u32::from_be_bytes([chunk[4], chunk[5], chunk[6], chunk[7]]),
            };
            if let Some(last) = entries.last() {
                let last: &OffsetEntry = last;
                if entry.relative_offset <= last.relative_offset || entry.position <= last.position
                {
                    return Err(IndexError::OutOfOrder { entry: at });
                }
            }
            entries.push(entry);
        }
        Ok(OffsetIndex { entries })
    }
}

/// One time index entry: every batch up to and including the one with `relative_offset` has
/// a max timestamp of at most `timestamp_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeEntry {
    /// Running maximum of batch timestamps up to this batch.
    pub timestamp_ms: i64,
    /// Base offset of the batch minus the segment's base offset.
    pub relative_offset: u32,
}

/// The sparse time index of one segment: offsets strictly grow, timestamps never shrink.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TimeIndex {
    entries: Vec<TimeEntry>,
}

impl TimeIndex {
    /// An empty index.
    pub fn new() -> TimeIndex {
        TimeIndex::default()
    }

    /// Adds an entry; offsets must grow strictly and timestamps must not shrink.
    pub fn push(&mut self, entry: TimeEntry) {
        if let Some(last) = self.entries.last() {
            assert!(
                entry.relative_offset > last.relative_offset
                    && entry.timestamp_ms >= last.timestamp_ms,
                "time index entries must grow: {last:?} then {entry:?}"
            );
        }
        self.entries.push(entry);
    }

    /// Where to start scanning for the first batch with a max timestamp of at least
    /// `timestamp_ms`: the last entry whose running maximum is still below it (every batch up
    /// to it is too old). `None`: start at the beginning of the segment.
    pub fn lookup(&self, timestamp_ms: i64) -> Option<TimeEntry> {
        let after = self
            .entries
            .partition_point(|entry| entry.timestamp_ms < timestamp_ms);
        after.checked_sub(1).map(|at| self.entries[at])
    }

    /// The newest entry.
    pub fn last(&self) -> Option<TimeEntry> {
        self.entries.last().copied()
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// All entries, oldest first.
    pub fn entries(&self) -> &[TimeEntry] {
        &self.entries
    }

    /// Appends the on-disk form to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.reserve(self.entries.len() * TIME_ENTRY_BYTES);
        for entry in &self.entries {
            out.extend_from_slice(&entry.timestamp_ms.to_be_bytes());
            out.extend_from_slice(&entry.relative_offset.to_be_bytes());
        }
    }

    /// Parses the on-disk form, checking the ordering rules.
    pub fn decode(bytes: &[u8]) -> Result<TimeIndex, IndexError> {
        let chunks = exact_chunks::<TIME_ENTRY_BYTES>(bytes)?;
        let mut entries = Vec::with_capacity(chunks.len());
        for (at, chunk) in chunks.iter().enumerate() {
            let mut timestamp = [0u8; 8];
            timestamp.copy_from_slice(&chunk[..8]);
            let entry = TimeEntry {
                timestamp_ms: i64::from_be_bytes(timestamp),
                relative_offset: u32::from_be_bytes([chunk[8], chunk[9], chunk[10], chunk[11]]),
            };
            if let Some(last) = entries.last() {
                let last: &TimeEntry = last;
                if entry.relative_offset <= last.relative_offset
                    || entry.timestamp_ms < last.timestamp_ms
                {
                    return Err(IndexError::OutOfOrder { entry: at });
                }
            }
            entries.push(entry);
        }
        Ok(TimeIndex { entries })
    }
}

/// Whether two indexes were built together: same entry count and the same offsets, with the
/// first entry describing the first batch of the segment.
pub fn indexes_paired(offsets: &OffsetIndex, times: &TimeIndex) -> bool {
    let first_ok = offsets
        .entries
        .first()
        .is_none_or(|entry| entry.relative_offset == 0 && entry.position == 0);
    first_ok
        && offsets.len() == times.len()
        && offsets
            .entries
            .iter()
            .zip(&times.entries)
            .all(|(offset, time)| offset.relative_offset == time.relative_offset)
}

fn exact_chunks<const N: usize>(bytes: &[u8]) -> Result<Vec<&[u8; N]>, IndexError> {
    if bytes.len() % N != 0 {
        return Err(IndexError::PartialEntry {
            bytes: bytes.len(),
            entry_bytes: N,
        });
    }
    Ok(bytes
        .chunks_exact(N)
        .filter_map(|chunk| <&[u8; N]>::try_from(chunk).ok())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Builds paired indexes from (batch size, timestamp) pairs the way the log does.
    fn build(
        batches: &[(u32, i64)],
        interval: u32,
    ) -> (OffsetIndex, TimeIndex, Vec<(u32, u32, i64)>) {
        let (mut offsets, mut times) = (OffsetIndex::new(), TimeIndex::new());
        let mut layout = Vec::new();
        let (mut position, mut relative, mut running_max) = (0u32, 0u32, i64::MIN);
        for &(size, timestamp) in batches {
            running_max = running_max.max(timestamp);
            let due = offsets
                .last()
                .is_none_or(|last| position - last.position >= interval);
            if due {
                offsets.push(OffsetEntry {
                    relative_offset: relative,
                    position,
                });
                times.push(TimeEntry {
                    timestamp_ms: running_max,
                    relative_offset: relative,
                });
            }
            layout.push((relative, position, timestamp));
            position += size;
            relative += 3; // three records per batch
        }
        (offsets, times, layout)
    }

    proptest! {
        #[test]
        fn offset_lookup_never_overshoots(
            batches in prop::collection::vec((61u32..3000, 0i64..1000), 1..200),
            interval in 1u32..8192,
            probe in 0u32..700,
        ) {
            let (offsets, _, layout) = build(&batches, interval);
            let found = offsets.lookup(probe).expect("entry 0 covers every offset");
            // The batch holding `probe` starts at or after the hint, never before it.
            let holder = layout.iter().rev().find(|(relative, _, _)| *relative <= probe).unwrap();
            prop_assert!(found.position <= holder.1);
            prop_assert!(found.relative_offset <= probe);
            // And the scan from the hint to the holder is shorter than the index spacing
            // plus one batch.
            prop_assert!(holder.1 - found.position < interval + 3000);
        }

        #[test]
        fn time_lookup_never_skips_a_match(
            batches in prop::collection::vec((61u32..3000, -50i64..1000), 1..200),
            interval in 1u32..8192,
            target in -100i64..1100,
        ) {
            let (_, times, layout) = build(&batches, interval);
            let first_match = layout.iter().find(|(_, _, timestamp)| *timestamp >= target);
            if let (Some(hint), Some(first)) = (times.lookup(target), first_match) {
                prop_assert!(hint.relative_offset <= first.0, "hint {hint:?} skips {first:?}");
            }
        }

        #[test]
        fn indexes_round_trip(
            batches in prop::collection::vec((61u32..3000, -50i64..1000), 0..100),
            interval in 1u32..8192,
        ) {
            let (offsets, times, _) = build(&batches, interval);
            let (mut offset_bytes, mut time_bytes) = (Vec::new(), Vec::new());
            offsets.encode(&mut offset_bytes);
            times.encode(&mut time_bytes);
            let offsets_back = OffsetIndex::decode(&offset_bytes).unwrap();
            let times_back = TimeIndex::decode(&time_bytes).unwrap();
            prop_assert!(indexes_paired(&offsets_back, &times_back));
            prop_assert_eq!(offsets_back, offsets);
            prop_assert_eq!(times_back, times);
        }
    }

    #[test]
    fn decode_rejects_partial_and_unordered() {
        assert!(matches!(
            OffsetIndex::decode(&[0; 7]),
            Err(IndexError::PartialEntry { .. })
        ));
        let mut bytes = Vec::new();
        for (relative, position) in [(0u32, 0u32), (5, 100), (4, 200)] {
            bytes.extend_from_slice(&relative.to_be_bytes());
            bytes.extend_from_slice(&position.to_be_bytes());
        }
        assert_eq!(
            OffsetIndex::decode(&bytes),
            Err(IndexError::OutOfOrder { entry: 2 })
        );
    }
}
