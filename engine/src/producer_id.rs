//! Producer ids that are never handed out twice, across restarts and crashes.
//!
//! Each shard draws ids from its own range (`shard << 52 ..`), so shards never ask each
//! other, and reserves them in blocks: before the first id of a block is handed out, the end
//! of the block is written durably (temporary file, fdatasync, rename, directory sync) to
//! `<data dir>/.producer-ids-<shard>`. After a restart the shard starts at the reserved end,
//! so ids handed out before a crash are skipped, never reused. Changing the shard count keeps
//! this true: a shard's range and file depend only on its number.
//!
//! ```text
//! reserved_end=<decimal>
//! ```

use std::cell::Cell;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::reactor::{fs, time};

/// Ids reserved by one durable write.
pub const BLOCK_IDS_DEFAULT: i64 = 1_000;
/// Bits of a shard's own id range: shard `s` hands out `s << 52 .. (s + 1) << 52`.
pub const SHARD_RANGE_BITS: u32 = 52;
/// Highest shard number with a range of its own (the ids stay positive i64).
pub const SHARDS_MAX: usize = 1 << (63 - SHARD_RANGE_BITS);

/// Why no id could be handed out.
#[derive(Debug, thiserror::Error)]
pub enum ProducerIdError {
    /// The reservation file exists but cannot be read or parsed; ids might repeat, so none
    /// are handed out.
    #[error("producer id file {path} is unreadable: {reason}")]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Writing the reservation failed (disk full, I/O error).
    #[error("cannot reserve producer ids in {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// Every id of the range was handed out.
    #[error("producer id range exhausted")]
    Exhausted,
    /// The shard number has no range.
    #[error("shard {0} has no producer id range (at most {SHARDS_MAX} shards)")]
    NoRange(usize),
}

/// Hands out producer ids of one shard. Use it on that shard's thread.
#[derive(Debug)]
pub struct ProducerIdAllocator {
    path: PathBuf,
    next: Cell<i64>,
    reserved_end: Cell<i64>,
    range_end: i64,
    block_ids: i64,
    /// A reservation is being written; other callers wait for it.
    reserving: Cell<bool>,
}

impl ProducerIdAllocator {
    /// The allocator of shard `shard` in `data_dir`. Blocks to read the file: call it at
    /// startup.
    pub fn for_shard(data_dir: &Path, shard: usize) -> Result<Self, ProducerIdError> {
        if shard >= SHARDS_MAX {
            return Err(ProducerIdError::NoRange(shard));
        }
        let start = (shard as i64) << SHARD_RANGE_BITS;
        let end = start + ((1i64 << SHARD_RANGE_BITS) - 1);
        let path = data_dir.join(format!(".producer-ids-{shard}"));
        Self::open(path, start, end, BLOCK_IDS_DEFAULT)
    }

    /// An allocator for ids in `start..end`, reserving `block_ids` at a time in `path`.
    pub fn open(
        path: PathBuf,
        start: i64,
        end: i64,
        block_ids: i64,
    ) -> Result<Self, ProducerIdError> {
        assert!(0 <= start && start < end && block_ids > 0, "bad id range");
        let reserved_end = match std::fs::read_to_string(&path) {
            Ok(text) => parse(&text).ok_or_else(|| ProducerIdError::Unreadable {
                path: path.clone(),
                reason: format!("unexpected content {:?}", text.trim()),
            })?,
            Err(error) if error.kind() == io::ErrorKind::NotFound => start,
            Err(error) => {
                return Err(ProducerIdError::Unreadable {
                    path,
                    reason: error.to_string(),
                })
            }
        };
        let reserved_end = reserved_end.clamp(start, end);
        Ok(ProducerIdAllocator {
            path,
            // Ids below the stored end may have been handed out before a crash.
            next: Cell::new(reserved_end),
            reserved_end: Cell::new(reserved_end),
            range_end: end,
            block_ids,
            reserving: Cell::new(false),
        })
    }

    /// A producer id never handed out before by this shard.
    pub async fn allocate(&self) -> Result<i64, ProducerIdError> {
        loop {
            let next = self.next.get();
            if next < self.reserved_end.get() {
                self.next.set(next + 1);
                return Ok(next);
            }
            if self.reserving.replace(true) {
                // Bounded by the one reservation in progress.
                time::sleep(Duration::from_millis(1)).await;
                continue;
            }
            let result = self.reserve_block().await;
            self.reserving.set(false);
            result?;
        }
    }

    async fn reserve_block(&self) -> Result<(), ProducerIdError> {
        let from = self.reserved_end.get();
        if from >= self.range_end {
            return Err(ProducerIdError::Exhausted);
        }
        let new_end = from.saturating_add(self.block_ids).min(self.range_end);
        let text = format!("reserved_end={new_end}\n");
        fs::write_file_atomic(&self.path, text.as_bytes())
            .await
            .map_err(|source| ProducerIdError::Io {
                path: self.path.clone(),
                source,
            })?;
        self.reserved_end.set(new_end);
        Ok(())
    }
}

fn parse(text: &str) -> Option<i64> {
    text.trim()
        .strip_prefix("reserved_end=")?
        .parse()
        .ok()
        .filter(|end: &i64| *end >= 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reactor::{block_on, RingConfig};

    #[test]
    fn ids_are_unique_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ids");
        let first: Vec<i64> = {
            let path = path.clone();
            block_on(RingConfig::default(), async move {
                let ids = ProducerIdAllocator::open(path, 10, 100, 4).unwrap();
                let mut out = Vec::new();
                for _ in 0..6 {
                    out.push(ids.allocate().await.unwrap());
                }
                out
            })
            .unwrap()
        };
        assert_eq!(first, vec![10, 11, 12, 13, 14, 15]);
        // A "crash" after handing out 15: the next start skips the rest of the block.
        let second = block_on(RingConfig::default(), async move {
            let ids = ProducerIdAllocator::open(path, 10, 100, 4).unwrap();
            ids.allocate().await.unwrap()
        })
        .unwrap();
        assert_eq!(second, 18);
    }

    #[test]
    fn shard_ranges_do_not_overlap_and_bad_files_refuse() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().to_path_buf();
        let (a, b) = block_on(RingConfig::default(), async move {
            let zero = ProducerIdAllocator::for_shard(&data, 0).unwrap();
            let one = ProducerIdAllocator::for_shard(&data, 1).unwrap();
            (
                zero.allocate().await.unwrap(),
                one.allocate().await.unwrap(),
            )
        })
        .unwrap();
        assert_eq!((a, b), (0, 1 << SHARD_RANGE_BITS));
        std::fs::write(dir.path().join(".producer-ids-2"), "garbage").unwrap();
        assert!(matches!(
            ProducerIdAllocator::for_shard(dir.path(), 2),
            Err(ProducerIdError::Unreadable { .. })
        ));
        assert!(ProducerIdAllocator::for_shard(dir.path(), SHARDS_MAX).is_err());
    }
}
