//! Partition log: appends with each ack level, group commit, reads from memory and disk,
//! lookups, bad input and out-of-range reads.

mod log_support;

use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use log_support::{cache, make_batch, open, read_all, run, small_config};
use ringlog_engine::batch::{self, BatchError};
use ringlog_engine::cache::ChunkCache;
use ringlog_engine::error::LogError;
use ringlog_engine::io_budget::IoBudget;
use ringlog_engine::log::{Acks, LogConfig, PartitionLog, ShardResources};
use ringlog_engine::reactor::{spawn, time};

#[test]
fn append_and_read_back_with_every_ack_level() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    run(async move {
        let log = open(&path, small_config(), cache()).await;
        let mut expected = Vec::new();
        for (at, acks) in [Acks::None, Acks::Leader, Acks::Durable]
            .into_iter()
            .cycle()
            .take(30)
            .enumerate()
        {
            let mut batch = make_batch(1 + at % 4, 50 + at * 13, 1_000 + at as i64, at as u64);
            let info = log.append(&mut batch, acks).await.unwrap();
            assert_eq!(
                info.base_offset,
                expected.iter().map(|(_, records)| records).sum::<i64>()
            );
            assert_eq!(info.last_offset - info.base_offset + 1, (1 + at % 4) as i64);
            match acks {
                Acks::None => {}
                Acks::Leader => assert!(log.high_watermark() > info.last_offset),
                Acks::Durable => assert!(log.durable_offset() > info.last_offset),
            }
            // The batch in the caller's buffer was stamped.
            assert_eq!(
                batch::validate(&batch).unwrap().base_offset,
                info.base_offset
            );
            expected.push((batch, (1 + at % 4) as i64));
        }
        log.close().await.unwrap();
        let batches = read_all(&log, 0, 4096).await;
        assert_eq!(batches.len(), expected.len());
        for ((_, read), (written, _)) in batches.iter().zip(&expected) {
            assert_eq!(read, written);
        }
        // After a reopen too.
        drop(log);
        let log = open(&path, small_config(), cache()).await;
        assert_eq!(
            log.next_offset(),
            expected.iter().map(|(_, n)| n).sum::<i64>()
        );
        let batches = read_all(&log, 0, 1 << 20).await;
        assert_eq!(batches.len(), expected.len());
        for ((_, read), (written, _)) in batches.iter().zip(&expected) {
            assert_eq!(read, written);
        }
        log.close().await.unwrap();
    });
}

#[test]
fn an_io_budget_gathers_appends_into_fewer_writes_and_syncs() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    run(async move {
        // 20 operations per second: 16 writes and 4 syncs, one of each at once.
        let budget_made = Instant::now();
        let resources = ShardResources {
            io_budget: Rc::new(IoBudget::new(20)),
            ..ShardResources::with_cache(cache())
        };
        let log = PartitionLog::open_on_shard(&path, LogConfig::default(), &resources)
            .await
            .unwrap();
        let log = Rc::new(log);
        let appends = 200;
        let mut tasks = Vec::new();
        for seed in 0..appends {
            let log = Rc::clone(&log);
            tasks.push(spawn(async move {
                let mut batch = make_batch(1, 100, 5, seed);
                log.append(&mut batch, Acks::Durable).await.unwrap()
            }));
            // Appends arrive spread out, each of which could have had a write of its own.
            time::sleep(Duration::from_millis(1)).await;
        }
        for task in tasks {
            task.await;
        }
        let stats = log.stats();
        // The budget's promise: one of each at once, then its rate over the time the appends
        // took (at least 200 ms, more on a loaded machine: a fixed bound would fail there).
        let took_s = budget_made.elapsed().as_secs_f64();
        let (writes_max, syncs_max) = (1 + (16.0 * took_s) as u64, 1 + (4.0 * took_s) as u64);
        assert_eq!(stats.appends, appends);
        assert!(log.durable_offset() >= appends as i64);
        // Without the budget each append could take its own write: the first goes at once,
        // the rest gather behind the next turns.
        assert!(
            stats.writes <= writes_max && stats.syncs <= syncs_max,
            "{} writes and {} syncs for {appends} appends in {took_s:.3} s (at most {writes_max} \
             and {syncs_max})",
            stats.writes,
            stats.syncs
        );
        assert_eq!(read_all(&log, 0, 1 << 20).await.len(), appends as usize);
        Rc::try_unwrap(log).ok().unwrap().close().await.unwrap();
    });
}

#[test]
fn concurrent_durable_appends_share_fsyncs() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    run(async move {
        let log = Rc::new(open(&path, LogConfig::default(), cache()).await);
        let producers = 64;
        let rounds = 5;
        let offsets = Rc::new(RefCell::new(Vec::new()));
        let mut tasks = Vec::new();
        for producer in 0..producers {
            let log = Rc::clone(&log);
            let offsets = Rc::clone(&offsets);
            tasks.push(spawn(async move {
                for round in 0..rounds {
                    let mut batch = make_batch(2, 100, 5, producer * 100 + round);
                    let info = log.append(&mut batch, Acks::Durable).await.unwrap();
                    assert!(log.durable_offset() > info.last_offset);
                    offsets.borrow_mut().push(info.base_offset);
                }
            }));
        }
        for task in tasks {
            task.await;
        }
        let stats = log.stats();
        let appends = producers * rounds;
        assert_eq!(stats.appends, appends);
        assert!(
            stats.syncs * 4 <= appends,
            "group commit: {} syncs for {} durable appends",
            stats.syncs,
            appends
        );
        let mut offsets = offsets.borrow().clone();
        offsets.sort_unstable();
        let expected: Vec<i64> = (0..appends as i64).map(|n| n * 2).collect();
        assert_eq!(
            offsets, expected,
            "every append got its own contiguous offsets"
        );
        log.close().await.unwrap();
    });
}

#[test]
fn reads_come_from_memory_near_the_tail_and_from_disk_after_eviction() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    run(async move {
        let config = LogConfig {
            segment_bytes: 1 << 20,
            chunk_bytes: 8 * 1024,
            index_interval_bytes: 512,
            ..LogConfig::default()
        };
        // Room for two chunks only.
        let cache = Rc::new(ChunkCache::new(16 * 1024));
        let log = open(&path, config, Rc::clone(&cache)).await;
        let mut written = Vec::new();
        for at in 0..100u64 {
            let mut batch = make_batch(3, 300, 10 + at as i64, at);
            log.append(&mut batch, Acks::Leader).await.unwrap();
            written.push(batch);
        }
        assert!(cache.evictions() > 0, "the tiny cache evicted chunks");
        assert!(cache.used_bytes() <= cache.budget_bytes());

        let old = log.read(0, 1).await.unwrap();
        assert!(!old.is_from_memory(), "evicted bytes are read from disk");
        assert_eq!(
            old.bytes(),
            &written[0][..],
            "at least one whole batch even over max_bytes"
        );
        let tail_offset = log.high_watermark() - 1;
        let tail = log.read(tail_offset, 1 << 20).await.unwrap();
        assert!(
            tail.is_from_memory(),
            "the newest bytes come from the tail chunk"
        );
        assert_eq!(tail.bytes(), &written[99][..]);
        assert_eq!(tail.next_offset(), log.high_watermark());

        // Everything reads back identically through both paths.
        let batches = read_all(&log, 0, 10_000).await;
        let read: Vec<Vec<u8>> = batches.into_iter().map(|(_, bytes)| bytes).collect();
        assert_eq!(read, written);
        let stats = log.stats();
        assert!(stats.disk_reads > 0 && stats.memory_reads > 0, "{stats:?}");
        log.close().await.unwrap();
    });
}

#[test]
fn every_offset_finds_its_batch_and_timestamps_find_the_first_newer_batch() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    run(async move {
        let log = open(&path, small_config(), Rc::new(ChunkCache::new(8 * 1024))).await;
        let mut layout = Vec::new(); // (base, last, max timestamp)
        for at in 0..120i64 {
            // Timestamps mostly rise, with some going backwards.
            let timestamp = if at % 7 == 3 { at * 10 - 35 } else { at * 10 };
            let records = 1 + (at % 5) as usize;
            let mut batch =
                make_batch(records, 40 + (at as usize * 37) % 400, timestamp, at as u64);
            let info = log.append(&mut batch, Acks::Leader).await.unwrap();
            let max_timestamp = batch::validate(&batch).unwrap().max_timestamp_ms;
            layout.push((info.base_offset, info.last_offset, max_timestamp));
        }
        assert!(
            log.segment_base_offsets().len() > 2,
            "the test spans segments"
        );
        for offset in 0..log.high_watermark() {
            let slice = log.read(offset, 1).await.unwrap();
            let holder = layout
                .iter()
                .find(|(base, last, _)| *base <= offset && offset <= *last)
                .unwrap();
            assert_eq!(slice.first_offset(), holder.0, "offset {offset}");
            assert_eq!(slice.next_offset(), holder.1 + 1);
        }
        for target in [
            -100, 0, 1, 9, 10, 11, 295, 300, 301, 700, 1185, 1190, 1191, 5000,
        ] {
            let expected = layout
                .iter()
                .find(|(_, _, max)| *max >= target)
                .map(|(base, _, _)| *base);
            assert_eq!(
                log.offset_for_timestamp(target).await.unwrap(),
                expected,
                "timestamp {target}"
            );
        }
        log.close().await.unwrap();
    });
}

#[test]
fn bad_batches_are_rejected_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    run(async move {
        let log = open(&path, small_config(), cache()).await;
        let mut good = make_batch(2, 100, 1, 1);
        log.append(&mut good, Acks::Durable).await.unwrap();
        let (next, size) = (log.next_offset(), log.size_bytes());

        let mut bad_crc = make_batch(2, 100, 1, 2);
        let last = bad_crc.len() - 1;
        bad_crc[last] ^= 0xff;
        let error = log.append(&mut bad_crc, Acks::Durable).await.unwrap_err();
        assert!(
            matches!(error, LogError::InvalidBatch(BatchError::BadCrc { .. })),
            "{error}"
        );

        let mut bad_magic = make_batch(1, 10, 1, 3);
        bad_magic[16] = 1;
        let error = log.append(&mut bad_magic, Acks::Leader).await.unwrap_err();
        assert!(
            matches!(error, LogError::InvalidBatch(BatchError::BadMagic(1))),
            "{error}"
        );

        let mut short = make_batch(1, 10, 1, 4);
        short.truncate(short.len() - 3);
        let error = log.append(&mut short, Acks::None).await.unwrap_err();
        assert!(matches!(error, LogError::InvalidBatch(_)), "{error}");

        let mut garbage = vec![7u8; 30];
        assert!(matches!(
            log.append(&mut garbage, Acks::None).await,
            Err(LogError::InvalidBatch(_))
        ));

        let mut huge = make_batch(1, 40 * 1024, 1, 5);
        let error = log.append(&mut huge, Acks::None).await.unwrap_err();
        assert!(matches!(error, LogError::BatchTooLarge { .. }), "{error}");

        assert_eq!(
            (log.next_offset(), log.size_bytes()),
            (next, size),
            "nothing was written"
        );
        assert_eq!(bad_crc[..8], [0u8; 8], "a refused batch is not stamped");
        log.close().await.unwrap();
        let batches = read_all(&log, 0, 1 << 20).await;
        assert_eq!(batches.len(), 1);
    });
}

#[test]
fn reads_outside_the_log_are_out_of_range() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    run(async move {
        let log = open(&path, small_config(), cache()).await;
        let empty = log.read(0, 100).await.unwrap();
        assert!(
            empty.is_empty(),
            "reading at the high watermark of an empty log"
        );
        for _ in 0..3 {
            let mut batch = make_batch(2, 10, 1, 1);
            log.append(&mut batch, Acks::Leader).await.unwrap();
        }
        assert_eq!(log.high_watermark(), 6);
        let at_end = log.read(6, 100).await.unwrap();
        assert!(at_end.is_empty());
        assert_eq!(at_end.next_offset(), 6);
        for offset in [-1, 7, i64::MAX] {
            match log.read(offset, 100).await {
                Err(LogError::OffsetOutOfRange {
                    requested,
                    log_start: 0,
                    high_watermark: 6,
                }) => assert_eq!(requested, offset),
                other => panic!("offset {offset}: {other:?}"),
            }
        }
        log.close().await.unwrap();
    });
}

#[test]
fn long_polls_wake_on_new_data_and_on_close() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    run(async move {
        let log = Rc::new(open(&path, small_config(), cache()).await);
        let waiting = {
            let log = Rc::clone(&log);
            spawn(async move { log.wait_for_offset(0).await })
        };
        let timed_out = time::timeout(Duration::from_millis(5), log.wait_for_offset(0)).await;
        assert!(timed_out.is_err(), "no data yet");
        let mut batch = make_batch(1, 10, 1, 1);
        log.append(&mut batch, Acks::None).await.unwrap();
        assert!(waiting.await, "the long poll saw the new batch");
        assert!(log.wait_for_offset(0).await, "already visible");
        let closing = {
            let log = Rc::clone(&log);
            spawn(async move { log.wait_for_offset(1).await })
        };
        log.close().await.unwrap();
        assert!(!closing.await, "close ends long polls");
        let mut batch = make_batch(1, 10, 1, 1);
        assert!(matches!(
            log.append(&mut batch, Acks::None).await,
            Err(LogError::Closed)
        ));
    });
}

/// The batches a read at `offset` of up to `max_bytes` should return: the batch holding
/// `offset`, then every following one while the total stays within `max_bytes`.
fn expected_read(written: &[(i64, Vec<u8>)], offset: i64, max_bytes: usize) -> Vec<u8> {
    let first = written
        .iter()
        .rposition(|(base, _)| *base <= offset)
        .expect("offset within the log");
    let mut out = written[first].1.clone();
    for (_, batch) in &written[first + 1..] {
        if out.len() + batch.len() > max_bytes {
            break;
        }
        out.extend_from_slice(batch);
    }
    out
}

#[test]
fn read_parts_go_on_across_chunks_segments_and_disk() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    run(async move {
        // Batches larger than a chunk and smaller ones, segments of a few batches, and a cache
        // that keeps only the newest chunks: reads cross chunks, segments and the disk.
        let config = LogConfig {
            segment_bytes: 64 * 1024,
            chunk_bytes: 16 * 1024,
            index_interval_bytes: 1024,
            ..LogConfig::default()
        };
        let cache = Rc::new(ChunkCache::new(96 * 1024));
        let log = open(&path, config, Rc::clone(&cache)).await;
        let mut written: Vec<(i64, Vec<u8>)> = Vec::new();
        for at in 0..40u64 {
            let value_bytes = match at % 4 {
                0 => 20_000,
                1 => 100,
                2 => 9_000,
                _ => 3_000,
            };
            let mut batch = make_batch(2, value_bytes, 10 + at as i64, at);
            let info = log.append(&mut batch, Acks::Leader).await.unwrap();
            written.push((info.base_offset, batch));
        }
        assert!(cache.evictions() > 0, "old chunks were evicted");
        assert!(log.segment_base_offsets().len() > 3, "segments rolled");
        let mut sliced = false;
        for offset in (0..log.high_watermark()).step_by(3) {
            for max_bytes in [1, 5_000, 30_000, 100_000, 1 << 20] {
                let parts = log.read_parts(offset, max_bytes).await.unwrap();
                let mut bytes = Vec::new();
                for slice in parts.slices() {
                    bytes.extend_from_slice(slice.bytes());
                }
                assert_eq!(bytes, parts.to_vec());
                assert_eq!(bytes.len(), parts.len());
                let expected = expected_read(&written, offset, max_bytes);
                assert!(
                    bytes == expected,
                    "read at {offset} of {max_bytes} bytes: {} bytes in {} slices, expected {}",
                    bytes.len(),
                    parts.slices().len(),
                    expected.len()
                );
                let last = batch::BatchIter::new(&bytes).last().unwrap().unwrap().0;
                assert_eq!(parts.next_offset(), last.next_offset());
                assert!(parts.first_offset() <= offset && offset < parts.next_offset());
                sliced |= parts.slices().len() > 2;
            }
        }
        assert!(sliced, "some reads spanned more than two sources");
        let end = log.read_parts(log.high_watermark(), 1 << 20).await.unwrap();
        assert!(end.is_empty() && end.slices().is_empty());
        assert_eq!(end.next_offset(), log.high_watermark());
        log.close().await.unwrap();
    });
}

#[test]
fn chunks_start_small_double_and_recycle_their_buffers() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    run(async move {
        let config = LogConfig {
            segment_bytes: 1 << 30,
            chunk_bytes: 256 * 1024,
            first_chunk_bytes: 16 * 1024,
            ..LogConfig::default()
        };
        assert_eq!(config.next_chunk_bytes(None), 16 * 1024);
        let cache = Rc::new(ChunkCache::new(2 << 20));
        let log = open(&path, config, Rc::clone(&cache)).await;
        // One small batch: the partition holds one 16 KiB chunk, not 256 KiB.
        let mut first = make_batch(1, 100, 10, 0);
        log.append(&mut first, Acks::Leader).await.unwrap();
        let mut written = vec![first];
        assert_eq!(cache.pool_stats().allocated, 1);
        assert_eq!(
            cache.used_bytes(),
            0,
            "the tail chunk is not in the cache yet"
        );
        // Filling chunks seals them into the cache: 16, 32, 64, 128 KiB, then 256 KiB each.
        let mut sealed = Vec::new();
        for at in 1..5000u64 {
            let mut batch = make_batch(2, 900, 10 + at as i64, at);
            log.append(&mut batch, Acks::Leader).await.unwrap();
            written.push(batch);
            if cache.len() > sealed.len() && sealed.len() < 6 {
                sealed.push(cache.used_bytes() - sealed.iter().sum::<usize>());
            }
        }
        assert_eq!(
            sealed,
            [16, 32, 64, 128, 256, 256].map(|kib| kib * 1024).to_vec()
        );
        // About 9 MB went through a 2 MiB cache: evicted chunks' buffers were reused.
        let stats = cache.pool_stats();
        assert!(cache.evictions() > 4, "{}", cache.evictions());
        assert!(stats.reused > stats.allocated, "{stats:?}");
        assert!(cache.used_bytes() <= cache.budget_bytes());
        let read: Vec<Vec<u8>> = read_all(&log, 0, 1 << 20)
            .await
            .into_iter()
            .map(|(_, bytes)| bytes)
            .collect();
        assert!(read == written, "every batch reads back");
        log.close().await.unwrap();
        drop(log);
        // Read back after a restart too (recycled buffers wrote zeros after the data).
        let log = open(&path, LogConfig::default(), Rc::clone(&cache)).await;
        let read: Vec<Vec<u8>> = read_all(&log, 0, 1 << 20)
            .await
            .into_iter()
            .map(|(_, bytes)| bytes)
            .collect();
        assert!(read == written, "every batch reads back after a restart");
        log.close().await.unwrap();
    });
}
