//! Helpers shared by the partition log integration tests.
#![allow(dead_code)]

use std::future::Future;
use std::rc::Rc;

use ringlog_engine::batch::{BatchBuilder, BatchIter};
use ringlog_engine::cache::ChunkCache;
use ringlog_engine::log::{LogConfig, PartitionLog};
use ringlog_engine::reactor::{block_on, RingConfig};

/// Runs a test body on a fresh reactor.
pub fn run<F: Future + 'static>(future: F) -> F::Output {
    block_on(RingConfig::default(), future).expect("reactor starts")
}

/// Small segments, chunks and index spacing so that tests cross every boundary quickly.
pub fn small_config() -> LogConfig {
    LogConfig {
        segment_bytes: 32 * 1024,
        index_interval_bytes: 1024,
        chunk_bytes: 8 * 1024,
        unflushed_bytes_max: 1 << 20,
        ..LogConfig::default()
    }
}

/// A 64 MiB shard cache, as a server test would use.
pub fn cache() -> Rc<ChunkCache> {
    Rc::new(ChunkCache::new(64 << 20))
}

/// A batch of `records` records with `value_bytes`-byte values whose timestamps are
/// `timestamp_ms` and up; `seed` makes the bytes distinct.
pub fn make_batch(records: usize, value_bytes: usize, timestamp_ms: i64, seed: u64) -> Vec<u8> {
    let mut builder = BatchBuilder::new(Vec::new(), timestamp_ms);
    for record in 0..records {
        let value: Vec<u8> = (0..value_bytes)
            .map(|at| (seed as usize * 31 + record * 7 + at) as u8)
            .collect();
        let key = format!("key-{seed}-{record}");
        builder
            .push(
                timestamp_ms + record as i64,
                Some(key.as_bytes()),
                Some(&value),
                &[],
            )
            .unwrap();
    }
    builder.finish().to_vec()
}

/// Opens a log (panics on error).
pub async fn open(dir: &std::path::Path, config: LogConfig, cache: Rc<ChunkCache>) -> PartitionLog {
    PartitionLog::open(dir, config, cache).await.unwrap()
}

/// Reads every batch from `from` to the high watermark; returns (base offset, bytes) pairs.
pub async fn read_all(log: &PartitionLog, from: i64, max_bytes: usize) -> Vec<(i64, Vec<u8>)> {
    let mut batches = Vec::new();
    let mut offset = from;
    while offset < log.high_watermark() {
        let slice = log.read(offset, max_bytes).await.unwrap();
        assert!(
            !slice.is_empty(),
            "a read below the high watermark returns data"
        );
        let mut count = 0;
        for item in BatchIter::new(slice.bytes()) {
            let (header, bytes) = item.expect("served batches are valid");
            batches.push((header.base_offset, bytes.to_vec()));
            count += 1;
        }
        assert!(count > 0);
        assert_eq!(
            BatchIter::new(slice.bytes())
                .map(|b| b.unwrap().1.len())
                .sum::<usize>(),
            slice.len(),
            "a read returns whole batches only"
        );
        offset = slice.next_offset();
    }
    batches
}
