//! Unit tests that need the log's test hooks (clock and I/O fault injection).

use std::rc::Rc;
use std::task::Poll;

use super::*;
use crate::batch::{BatchBuilder, BatchIter};
use crate::reactor::{block_on, yield_now, RingConfig};

fn run<F: Future + 'static>(future: F) -> F::Output {
    block_on(RingConfig::default(), future).unwrap()
}

fn config() -> LogConfig {
    LogConfig {
        segment_bytes: 16 * 1024,
        index_interval_bytes: 1024,
        chunk_bytes: 8 * 1024,
        ..LogConfig::default()
    }
}

fn make_batch(value_bytes: usize, seed: u8) -> Vec<u8> {
    let mut builder = BatchBuilder::new(Vec::new(), 1_000);
    let value = vec![seed; value_bytes];
    builder.push(1_000, Some(b"k"), Some(&value), &[]).unwrap();
    builder.push(1_001, None, Some(&value), &[]).unwrap();
    builder.finish().to_vec()
}

async fn open(dir: &Path) -> PartitionLog {
    open_with(dir, config()).await
}

async fn open_with(dir: &Path, config: LogConfig) -> PartitionLog {
    PartitionLog::open(dir, config, Rc::new(ChunkCache::new(1 << 20)))
        .await
        .unwrap()
}

/// Every batch served from 0 to the high watermark.
async fn read_back(log: &PartitionLog) -> Vec<Vec<u8>> {
    let mut batches = Vec::new();
    let mut offset = log.log_start_offset();
    while offset < log.high_watermark() {
        let slice = log.read(offset, 1 << 20).await.unwrap();
        for item in BatchIter::new(slice.bytes()) {
            batches.push(item.unwrap().1.to_vec());
        }
        offset = slice.next_offset();
    }
    batches
}

#[test]
fn segments_roll_by_age() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    run(async move {
        let config = LogConfig {
            segment_ms: 1_000,
            ..config()
        };
        let log = PartitionLog::open(&path, config, Rc::new(ChunkCache::new(1 << 20)))
            .await
            .unwrap();
        for (now_ms, segments) in [
            (10_000, 1),
            (10_500, 1),
            (10_999, 1),
            (11_000, 2),
            (11_500, 2),
            (12_000, 3),
        ] {
            log.set_clock_ms(Some(now_ms));
            let mut batch = make_batch(10, 1);
            log.append(&mut batch, Acks::Leader).await.unwrap();
            assert_eq!(log.segment_base_offsets().len(), segments, "at {now_ms} ms");
        }
        assert_eq!(log.segment_base_offsets(), vec![0, 6, 10]);
        assert_eq!(log.stats().rolls, 2);
        log.close().await.unwrap();
    });
}

#[test]
fn a_failed_write_fails_its_appends_and_the_next_append_retries_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    run(async move {
        let log = open(&path).await;
        let mut first = make_batch(100, 1);
        log.append(&mut first, Acks::Durable).await.unwrap();

        log.fail_next_io(1, Some("writing"));
        let mut second = make_batch(100, 2);
        let error = log.append(&mut second, Acks::Leader).await.unwrap_err();
        assert!(matches!(error, LogError::DiskFull { .. }), "{error}");
        assert!(error.is_retriable());
        // The failed bytes are not visible.
        assert_eq!(log.high_watermark(), 2);
        assert!(log.read(2, 100).await.unwrap().is_empty());
        assert_eq!(read_back(&log).await, vec![first.clone()]);

        // Space is back: the next append writes the whole dirty range, its own batch too.
        let mut third = make_batch(100, 3);
        let info = log.append(&mut third, Acks::Durable).await.unwrap();
        assert_eq!(info.base_offset, 4);
        assert_eq!(log.high_watermark(), 6);
        assert_eq!(log.durable_offset(), 6);
        assert_eq!(
            read_back(&log).await,
            vec![first.clone(), second.clone(), third.clone()]
        );
        assert_eq!(log.stats().failures, 1);
        log.close().await.unwrap();
        drop(log);
        let log = open(&path).await;
        assert_eq!(read_back(&log).await, vec![first, second, third]);
        log.close().await.unwrap();
    });
}

#[test]
fn written_bytes_are_visible_without_waiting_for_their_sync() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    run(async move {
        let log = open(&path).await;
        log.fail_next_io(1, Some("syncing the log"));
        let mut first = make_batch(100, 2);
        let error = log.append(&mut first, Acks::Durable).await.unwrap_err();
        assert!(matches!(error, LogError::DiskFull { .. }), "{error}");
        // The write completed, only its sync failed: readers see the batch, and the durable
        // offset has not moved.
        assert_eq!(log.high_watermark(), 2);
        assert_eq!(log.durable_offset(), 0);
        assert_eq!(read_back(&log).await, vec![first.clone()]);

        // The next durable append syncs both.
        let mut second = make_batch(100, 1);
        log.append(&mut second, Acks::Durable).await.unwrap();
        assert_eq!(log.durable_offset(), 4);
        assert_eq!(log.stats().failures, 1);
        log.close().await.unwrap();
        drop(log);
        let log = open(&path).await;
        assert_eq!(read_back(&log).await, vec![first, second]);
        log.close().await.unwrap();
    });
}

#[test]
fn a_retried_idempotent_batch_waits_for_its_failed_original_and_gets_its_offset() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    run(async move {
        let log = open(&path).await;
        let mut builder = BatchBuilder::new(Vec::new(), 1_000);
        builder.set_producer_id(5);
        builder.set_producer_epoch(0);
        builder.set_base_sequence(0);
        builder.push(1_000, None, Some(b"once"), &[]).unwrap();
        let batch = builder.finish().to_vec();

        log.fail_next_io(1, Some("writing"));
        let error = log
            .append(&mut batch.clone(), Acks::Durable)
            .await
            .unwrap_err();
        assert!(matches!(error, LogError::DiskFull { .. }), "{error}");
        // The producer retries the same bytes: the original (in memory, unwritten) is
        // written now, and the retry is answered with its offset without a second copy.
        let info = log.append(&mut batch.clone(), Acks::Durable).await.unwrap();
        assert!(info.duplicate);
        assert_eq!(info.base_offset, 0);
        assert_eq!(log.durable_offset(), 1);
        assert_eq!(log.next_offset(), 1);
        assert_eq!(read_back(&log).await.len(), 1);
        log.close().await.unwrap();
    });
}

#[test]
fn disk_full_when_creating_the_next_segment_is_reported_and_retried() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    run(async move {
        let log = open(&path).await;
        let mut written = Vec::new();
        // Fill the first segment (16 KiB) with ~2 KiB batches.
        for seed in 0..7 {
            let mut batch = make_batch(1_000, seed);
            log.append(&mut batch, Acks::Durable).await.unwrap();
            written.push(batch);
        }
        assert_eq!(log.segment_base_offsets().len(), 1);
        log.fail_next_io(1, Some("creating a segment"));
        let mut rolling = make_batch(1_000, 7);
        let error = log.append(&mut rolling, Acks::Durable).await.unwrap_err();
        assert!(
            matches!(
                error,
                LogError::DiskFull {
                    context: "creating a segment"
                }
            ),
            "{error}"
        );
        assert_eq!(
            log.segment_base_offsets().len(),
            2,
            "the roll happened in memory"
        );
        assert_eq!(
            log.high_watermark(),
            14,
            "the batch of the new segment is not visible"
        );
        written.push(rolling);

        let mut next = make_batch(1_000, 8);
        log.append(&mut next, Acks::Durable).await.unwrap();
        written.push(next);
        assert_eq!(log.high_watermark(), 18);
        assert_eq!(read_back(&log).await, written);
        log.close().await.unwrap();
        drop(log);
        let log = open(&path).await;
        assert_eq!(read_back(&log).await, written);
        log.close().await.unwrap();
    });
}

/// Retention rolled an idle partition's expired active segment, and creating the new
/// segment's file failed: the rolled segment is the only file holding the log's end offset,
/// so retention must keep it (with no segment file at all, a restart would start the partition
/// again at offset 0) until the new file exists.
#[test]
fn retention_keeps_the_newest_file_while_the_active_segment_has_none() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    run(async move {
        let log = open(&path).await;
        for seed in 0..2 {
            let mut batch = make_batch(100, seed);
            log.append(&mut batch, Acks::Durable).await.unwrap();
        }
        let end = log.next_offset();
        let retention = Retention {
            ms: Some(1_000),
            bytes: None,
        };
        log.fail_next_io(1, Some("creating a segment"));
        log.apply_retention(1_000_000, retention).await.unwrap();
        assert_eq!(log.segment_base_offsets(), vec![0, end], "rolled");
        // The flusher finishes the rolled segment, then fails to create the new file.
        let mut turns = 0;
        while log.stats().failures == 0 {
            turns += 1;
            assert!(
                turns < 1_000_000,
                "the flusher never got to the new segment"
            );
            yield_now().await;
        }
        let report = log.apply_retention(1_000_000, retention).await.unwrap();
        assert_eq!(report.segments_deleted, 0);
        assert_eq!(log.segment_base_offsets(), vec![0, end]);
        assert!(crate::segment::segment_path(&path, 0, crate::segment::LOG_SUFFIX).exists());
        // Closing creates the file; the rolled segment may go then.
        log.close().await.unwrap();
        let report = log.apply_retention(1_000_000, retention).await.unwrap();
        assert_eq!(report.segments_deleted, 1);
        assert_eq!(log.segment_base_offsets(), vec![end]);
        drop(log);
        let log = open(&path).await;
        assert_eq!(log.next_offset(), end, "the log end survived");
        log.close().await.unwrap();
    });
}

/// The newest segment file on disk is what carries the log's end over a restart, and it is
/// not always the one just before the active segment: here the file of the segment after it
/// cannot be created (disk full), and that segment, holding only unwritten appends, is rolled
/// too (by retention, its records being past it; a roll by size does the same). Retention
/// must keep the newest segment that has a file, else no segment file is left and a restart
/// starts the partition again at offset 0, handing out offsets already consumed.
#[test]
fn retention_keeps_the_newest_file_when_the_segments_after_it_have_none() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    run(async move {
        let log = open(&path).await;
        // Fill the first segment (16 KiB) with ~2 KiB batches.
        for seed in 0..7 {
            let mut batch = make_batch(1_000, seed);
            log.append(&mut batch, Acks::Durable).await.unwrap();
        }
        let written_end = log.next_offset();
        log.fail_next_io(u32::MAX, Some("creating a segment"));
        let mut rolling = make_batch(1_000, 7);
        let error = log.append(&mut rolling, Acks::Durable).await.unwrap_err();
        assert!(matches!(error, LogError::DiskFull { .. }), "{error}");
        assert_eq!(log.segment_base_offsets(), vec![0, written_end]);
        let retention = Retention {
            ms: Some(1_000),
            bytes: None,
        };
        log.apply_retention(1_000_000, retention).await.unwrap();
        assert!(
            crate::segment::segment_path(&path, 0, crate::segment::LOG_SUFFIX).exists(),
            "the only segment file was deleted: {:?}",
            log.segment_base_offsets()
        );
        // A crash now (the disk still full: the dropped log's flusher gives up).
        drop(log);
        let log = open(&path).await;
        assert!(
            log.next_offset() >= written_end,
            "offsets start again at {} after {written_end} were written",
            log.next_offset()
        );
        log.close().await.unwrap();
    });
}

#[test]
fn unwritten_bytes_stay_bounded_while_the_disk_fails() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    run(async move {
        let config = LogConfig {
            unflushed_bytes_max: 64 * 1024,
            segment_bytes: 1 << 20,
            ..config()
        };
        let log = open_with(&path, config).await;
        let limit = log.config().unflushed_bytes_max;
        log.fail_next_io(u32::MAX, None);
        let mut accepted = Vec::new();
        let mut refused = 0;
        for seed in 0..100u32 {
            let mut batch = make_batch(1_000, seed as u8);
            match log.append(&mut batch, Acks::None).await {
                Ok(_) => accepted.push(batch),
                Err(LogError::DiskFull { .. }) | Err(LogError::Backpressure { .. }) => refused += 1,
                Err(other) => panic!("{other}"),
            }
            assert!(log.unflushed_bytes() <= limit, "memory stays bounded");
            yield_now().await;
        }
        assert!(refused > 0 && !accepted.is_empty());
        assert_eq!(log.high_watermark(), 0, "nothing was written");
        // Space comes back: close writes everything accepted.
        log.fail_next_io(0, None);
        log.close().await.unwrap();
        assert_eq!(log.high_watermark(), log.next_offset());
        assert_eq!(read_back(&log).await, accepted);
    });
}

#[test]
fn close_reports_a_failure_and_can_be_retried() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    run(async move {
        let log = open(&path).await;
        let mut batch = make_batch(100, 1);
        log.append(&mut batch, Acks::None).await.unwrap();
        log.fail_next_io(1, None);
        assert!(matches!(log.close().await, Err(LogError::DiskFull { .. })));
        assert!(!log.is_closed());
        log.close().await.unwrap();
        assert!(log.is_closed());
        assert_eq!(read_back(&log).await, vec![batch]);
    });
}

/// A read that goes to disk near the end of the active segment must not trust the visible end
/// it saw before awaiting: meanwhile a batch can join that segment and the next one roll it.
#[test]
fn a_roll_during_a_disk_read_does_not_skip_or_break_the_read() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    run(async move {
        let config = LogConfig {
            read_ahead_bytes: 0,
            ..config()
        };
        // A cache too small to keep the segment's chunks: reads go to disk.
        let log = PartitionLog::open(&path, config, Rc::new(ChunkCache::new(4096)))
            .await
            .unwrap();
        for seed in 0..5 {
            let mut batch = make_batch(1_000, seed);
            log.append(&mut batch, Acks::Leader).await.unwrap();
        }
        assert_eq!(log.segment_base_offsets().len(), 1);
        // Start the read (its disk read goes out) and leave it suspended until the appends
        // are done, as a busy shard might.
        let mut read = Box::pin(log.read_parts(0, 1 << 20));
        let first_poll =
            std::future::poll_fn(|cx| Poll::Ready(read.as_mut().poll(cx).is_pending())).await;
        assert!(first_poll, "the read waits for the disk");
        let mut fits = make_batch(500, 5);
        log.append(&mut fits, Acks::Leader).await.unwrap();
        let mut rolls = make_batch(3_000, 6);
        log.append(&mut rolls, Acks::Leader).await.unwrap();
        assert_eq!(log.segment_base_offsets().len(), 2, "the last batch rolled");
        let parts = read.await.unwrap();
        // Whatever it served, it served consecutive batches from offset 0 (checked by
        // ReadParts), and a fresh read from its end goes on without a gap.
        let mut offset = parts.next_offset();
        assert!(offset > 0);
        while offset < log.high_watermark() {
            let next = log.read_parts(offset, 1 << 20).await.unwrap();
            assert!(next.next_offset() > offset);
            offset = next.next_offset();
        }
        assert_eq!(offset, 14);
    });
}

/// Recovery checks a closed segment only from its last index entry, so damage further back is
/// first met by a read: the read must refuse it rather than serve it, and still serve the
/// batches before and after.
#[test]
fn a_read_from_disk_refuses_a_batch_whose_crc_does_not_match() {
    for read_ahead_bytes in [0, LogConfig::default().read_ahead_bytes] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_path_buf();
        run(async move {
            let config = LogConfig {
                read_ahead_bytes,
                ..config()
            };
            // Flip one byte in the middle of the second batch's records.
            let middle = make_batch(100, 1).len() / 2;
            let (log, written) = log_with_second_batch_damaged(&path, config, middle, 0x40).await;
            let before = log.read_parts(0, 1 << 20).await.unwrap();
            assert_eq!(before.next_offset(), 2, "only the batch before the damage");
            assert_eq!(before.to_vec(), written[0]);
            let damaged = log.read_parts(2, 1 << 20).await;
            assert!(
                matches!(
                    &damaged,
                    Err(LogError::DamagedBatch { position, base_offset: 2, last_offset: 3, .. })
                        if *position == written[0].len() as u64
                ),
                "{damaged:?}"
            );
            assert!(matches!(
                log.read(3, 1 << 20).await,
                Err(LogError::DamagedBatch { .. })
            ));
            let after = log.read_parts(4, 1 << 20).await.unwrap();
            assert_eq!(after.first_offset(), 4);
            assert_eq!(
                after.slices()[0].bytes()[..written[2].len()],
                written[2][..]
            );
        });
    }
}

/// Writes batches of two records each (100-byte values) until segment 0 is closed well behind
/// the active one, then closes the log; returns the batches.
async fn write_closed_segment_0(path: &Path, config: &LogConfig) -> Vec<Vec<u8>> {
    let log = open_with(path, config.clone()).await;
    let mut written = Vec::new();
    for seed in 0..80 {
        let mut batch = make_batch(100, seed);
        log.append(&mut batch, Acks::Leader).await.unwrap();
        written.push(batch);
    }
    assert!(log.segment_base_offsets().len() >= 2, "segment 0 is closed");
    log.close().await.unwrap();
    written
}

/// A log with segment 0 closed, written with batches of two records each, whose byte
/// `at_in_second` of the second batch (offsets 2..=3) is xored with `mask` on disk; reopened.
/// Returns the log and the batches written.
async fn log_with_second_batch_damaged(
    path: &Path,
    config: LogConfig,
    at_in_second: usize,
    mask: u8,
) -> (PartitionLog, Vec<Vec<u8>>) {
    let written = write_closed_segment_0(path, &config).await;
    let segment = crate::segment::segment_path(path, 0, crate::segment::LOG_SUFFIX);
    let mut bytes = std::fs::read(&segment).unwrap();
    bytes[written[0].len() + at_in_second] ^= mask;
    std::fs::write(&segment, &bytes).unwrap();
    (open_with(path, config).await, written)
}

/// Reads at offsets 2 and 3 (the second batch, damaged) fail as that batch with its real
/// offsets, and reads at 4 and 5 serve the third batch as written.
async fn check_second_batch_refused_and_third_served(
    log: &PartitionLog,
    written: &[Vec<u8>],
    case: &str,
) {
    for offset in [2, 3] {
        let damaged = log.read(offset, 1 << 20).await;
        assert!(
            matches!(
                &damaged,
                Err(LogError::DamagedBatch { position, base_offset: 2, last_offset: 3, .. })
                    if *position == written[0].len() as u64
            ),
            "{case}, offset {offset}: {:?}",
            damaged.map(|slice| (slice.first_offset(), slice.next_offset()))
        );
    }
    for offset in [4, 5] {
        let after = log.read_parts(offset, 1 << 20).await;
        let after = after.unwrap_or_else(|error| panic!("{case}, offset {offset}: {error}"));
        assert_eq!(after.first_offset(), 4, "{case}");
        assert_eq!(
            after.slices()[0].bytes()[..written[2].len()],
            written[2][..],
            "{case}"
        );
    }
}

/// Byte of the lastOffsetDelta field (big-endian i32) in a batch, covered by the CRC.
const LAST_OFFSET_DELTA_AT: usize = 23;

/// The damage is in the batch's lastOffsetDelta: its header claims offsets it does not hold.
/// The batches after it are healthy and must be served, and the damaged batch must be
/// reported with the offsets it really holds (a share group archives them, a consumer seeks
/// past them).
#[test]
fn a_damaged_last_offset_delta_claims_no_offsets_of_the_batches_after_it() {
    for (mask, read_ahead_bytes) in [
        (0x10, 0),
        (0x10, LogConfig::default().read_ahead_bytes),
        (0x80, 0),
        (0x80, LogConfig::default().read_ahead_bytes),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_path_buf();
        run(async move {
            let config = LogConfig {
                read_ahead_bytes,
                ..config()
            };
            let (log, written) =
                log_with_second_batch_damaged(&path, config, LAST_OFFSET_DELTA_AT, mask).await;
            let case = format!("mask {mask:#x}, read-ahead {read_ahead_bytes}");
            let before = log.read_parts(0, 1 << 20).await.unwrap();
            assert_eq!(before.next_offset(), 2, "{case}");
            assert_eq!(before.to_vec(), written[0], "{case}");
            check_second_batch_refused_and_third_served(&log, &written, &case).await;
            log.close().await.unwrap();
        });
    }
}

/// The damage is in the second batch's batchLength, which frames it (outside the CRC): the
/// batches after it cannot be found by walking from it. The damage must be reported with the
/// offsets it hides, up to the next offset index entry, and a read from there must serve the
/// batches as written; before, it was `Corrupt` with no offsets, and a share group stopped at
/// it for good.
#[test]
fn a_damaged_batch_length_claims_the_offsets_up_to_the_next_index_entry() {
    for read_ahead_bytes in [0, LogConfig::default().read_ahead_bytes] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_path_buf();
        run(async move {
            let config = LogConfig {
                read_ahead_bytes,
                ..config()
            };
            // The high byte of batchLength (bytes 8..12): far past any segment.
            let (log, written) = log_with_second_batch_damaged(&path, config, 8, 0x40).await;
            let before = log.read_parts(0, 1 << 20).await.unwrap();
            assert_eq!(before.to_vec(), written[0], "read-ahead {read_ahead_bytes}");
            let last_offset = match log.read(2, 1 << 20).await {
                Err(LogError::DamagedBatch {
                    base_offset: 2,
                    last_offset,
                    ..
                }) => last_offset,
                other => panic!("{:?}", other.map(|slice| slice.first_offset())),
            };
            assert!(
                (3..log.segment_base_offsets()[1]).contains(&last_offset),
                "{last_offset}"
            );
            assert!(matches!(
                log.read(last_offset, 1 << 20).await,
                Err(LogError::DamagedBatch { base_offset: 2, .. })
            ));
            let resumed = usize::try_from(last_offset + 1).unwrap();
            let after = log.read_parts(last_offset + 1, 1 << 20).await.unwrap();
            assert_eq!(after.first_offset(), last_offset + 1);
            let expected = written[resumed / 2..].concat();
            assert_eq!(after.to_vec(), expected[..after.len()]);
            log.close().await.unwrap();
        });
    }
}

/// The damage is in the base offset of a batch, which its CRC does not cover: a read going on
/// past the batch before it must stop there rather than serve offsets out of sequence.
#[test]
fn a_read_stops_before_a_batch_whose_base_offset_breaks_the_sequence() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    run(async move {
        // Byte 4 of the big-endian base offset: 2 becomes 2 + 2^26.
        let (log, written) = log_with_second_batch_damaged(&path, config(), 4, 0x04).await;
        let parts = log.read_parts(0, 1 << 20).await.unwrap();
        assert_eq!(parts.next_offset(), 2, "only the batch before the damage");
        assert_eq!(parts.to_vec(), written[0]);
        log.close().await.unwrap();
    });
}

/// Recovery checks only the last entry of a closed segment's offset index, and the time
/// index pairs with its offsets, not its positions: an entry further back whose position was
/// damaged on disk (still in order) points reads at the wrong batch. A read must still serve
/// the batch holding the offset asked for, not skip to a later one.
#[test]
fn a_damaged_offset_index_position_skips_no_records() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    run(async move {
        let written = write_closed_segment_0(&path, &config()).await;
        let index_path = crate::segment::segment_path(&path, 0, crate::segment::INDEX_SUFFIX);
        let mut bytes = std::fs::read(&index_path).unwrap();
        let index = crate::index::OffsetIndex::decode(&bytes).unwrap();
        assert!(index.len() >= 4, "{index:?}");
        let entry = index.entries()[2];
        let batch = entry.relative_offset as usize / 2;
        // Entry 2 now points at the batch after its own: still in order.
        let moved = entry.position + written[batch].len() as u32;
        assert!(moved < index.entries()[3].position);
        let at = 2 * crate::index::OFFSET_ENTRY_BYTES + 4;
        bytes[at..at + 4].copy_from_slice(&moved.to_be_bytes());
        std::fs::write(&index_path, &bytes).unwrap();

        let log = open(&path).await;
        let offset = i64::from(entry.relative_offset);
        let slice = log.read(offset, 1 << 20).await.unwrap();
        assert_eq!(slice.first_offset(), offset, "the batch holding {offset}");
        assert_eq!(slice.bytes()[..written[batch].len()], written[batch][..]);
        log.close().await.unwrap();
    });
}

/// The walk to an offset passes batches by their headers, and the CRC does not cover a base
/// offset: a read starting at or past a batch whose base offset was damaged on disk must
/// report that batch with the offsets it really holds, and serve the healthy batches after
/// it, never a batch with offsets out of sequence (2 + 2^26 answered a read of 4) nor a later
/// batch for an offset in the damaged one (batch 4 answered a read of 2 when 2 became 0).
#[test]
fn a_read_at_or_past_a_damaged_base_offset_serves_no_offsets_out_of_sequence() {
    // Byte 4 of the big-endian base offset: 2 becomes 2 + 2^26; byte 7: 2 becomes 0.
    for (at, mask) in [(4, 0x04), (7, 0x02)] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_path_buf();
        run(async move {
            let (log, written) = log_with_second_batch_damaged(&path, config(), at, mask).await;
            let case = format!("byte {at}, mask {mask:#x}");
            check_second_batch_refused_and_third_served(&log, &written, &case).await;
            log.close().await.unwrap();
        });
    }
}

/// Two runs leaving a closed segment 0 that holds an idempotent batch (producer 5, sequence 0)
/// at offset 8 right after four plain batches, and only the producer snapshot at offset 8, as
/// a crash after segment 0 was indexed and before the roll's snapshot was written leaves it:
/// the open replays segment 0 from its index entry for offset 8. Returns the idempotent batch
/// and the byte position of the batch after it.
async fn closed_segment_replayed_from_offset_8(
    path: &Path,
    config: &LogConfig,
) -> (Vec<u8>, usize) {
    // First run: four plain batches; the close writes the snapshot at offset 8.
    let log = open_with(path, config.clone()).await;
    let mut before_bytes = 0;
    for seed in 0..4 {
        let mut batch = make_batch(100, seed);
        before_bytes += batch.len();
        log.append(&mut batch, Acks::Leader).await.unwrap();
    }
    log.close().await.unwrap();
    drop(log);
    let early = producer_snapshot::snapshot_path(path, 8);
    let early_bytes = std::fs::read(&early).unwrap();

    // Second run: one idempotent batch at offset 8, then plain batches past a roll.
    let mut builder = BatchBuilder::new(Vec::new(), 1_000);
    builder.set_producer_id(5);
    builder.set_producer_epoch(0);
    builder.set_base_sequence(0);
    let value = vec![9u8; 100];
    builder.push(1_000, Some(b"k"), Some(&value), &[]).unwrap();
    builder.push(1_001, None, Some(&value), &[]).unwrap();
    let idempotent = builder.finish().to_vec();
    let log = open_with(path, config.clone()).await;
    let info = log
        .append(&mut idempotent.clone(), Acks::Leader)
        .await
        .unwrap();
    assert_eq!(info.base_offset, 8);
    let mut seed = 10;
    while log.segment_base_offsets().len() < 2 {
        log.append(&mut make_batch(100, seed), Acks::Leader)
            .await
            .unwrap();
        seed += 1;
    }
    log.close().await.unwrap();
    drop(log);

    // Only the snapshot at 8 is left (the later ones lost).
    for offset in producer_snapshot::list(path).unwrap() {
        std::fs::remove_file(producer_snapshot::snapshot_path(path, offset)).unwrap();
    }
    std::fs::write(&early, &early_bytes).unwrap();
    let after = before_bytes + idempotent.len();
    (idempotent, after)
}

/// Rolls by size only (the batches' timestamps are old).
fn config_rolling_by_size() -> LogConfig {
    LogConfig {
        segment_ms: u64::MAX,
        ..config()
    }
}

/// The replay starts at segment 0's index entry for offset 8; moved onto the batch after (the
/// entries still in order), it must not skip the idempotent batch, whose retry would then be
/// written twice.
#[test]
fn a_damaged_offset_index_position_does_not_hide_batches_from_the_producer_replay() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    let config = config_rolling_by_size();
    run(async move {
        let (idempotent, _) = closed_segment_replayed_from_offset_8(&path, &config).await;
        // The index entry for offset 8 now points at the batch after it: still in order.
        let index_path = crate::segment::segment_path(&path, 0, crate::segment::INDEX_SUFFIX);
        let mut bytes = std::fs::read(&index_path).unwrap();
        let index = crate::index::OffsetIndex::decode(&bytes).unwrap();
        let at = index
            .entries()
            .iter()
            .position(|entry| entry.relative_offset == 8)
            .unwrap_or_else(|| panic!("an entry for offset 8: {index:?}"));
        let entry = index.entries()[at];
        let moved = entry.position + idempotent.len() as u32;
        assert!(index.entries()[at + 1].position > moved, "{index:?}");
        let field = at * crate::index::OFFSET_ENTRY_BYTES + 4;
        bytes[field..field + 4].copy_from_slice(&moved.to_be_bytes());
        std::fs::write(&index_path, &bytes).unwrap();

        let log = open_with(&path, config.clone()).await;
        let next = log.next_offset();
        let retry = log
            .append(&mut idempotent.clone(), Acks::Leader)
            .await
            .unwrap();
        assert!(
            retry.duplicate && retry.base_offset == 8,
            "the retry of the batch at 8 was written again at {}",
            retry.base_offset
        );
        assert_eq!(log.next_offset(), next);
        log.close().await.unwrap();
    });
}

/// The producer replay reads closed-segment batches that the open did not check: one damaged
/// there (here its batchLength) must not make the partition fail to open. What came before it
/// is still remembered, and reads refuse the damage.
#[test]
fn a_damaged_batch_in_the_producer_replay_does_not_fail_the_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    let config = config_rolling_by_size();
    run(async move {
        let (idempotent, after) = closed_segment_replayed_from_offset_8(&path, &config).await;
        let segment = crate::segment::segment_path(&path, 0, crate::segment::LOG_SUFFIX);
        let mut bytes = std::fs::read(&segment).unwrap();
        // The high byte of the batchLength of the batch at offset 10.
        bytes[after + 8] ^= 0x40;
        std::fs::write(&segment, &bytes).unwrap();

        let log = PartitionLog::open(&path, config.clone(), Rc::new(ChunkCache::new(1 << 20)))
            .await
            .expect("a damaged batch in a closed segment does not fail the open");
        let retry = log
            .append(&mut idempotent.clone(), Acks::Leader)
            .await
            .unwrap();
        assert!(retry.duplicate && retry.base_offset == 8, "{retry:?}");
        assert!(
            log.read(10, 1 << 20).await.is_err(),
            "the damage is not served"
        );
        log.close().await.unwrap();
    });
}

/// A log with segment 0 closed (batches of two records each), whose byte `at_in_batch` of
/// the last batch of segment 0 is xored with `mask` on disk; reopened. Returns the log, the
/// batches written and the base offset of that last batch.
async fn log_with_last_closed_batch_damaged(
    path: &Path,
    config: LogConfig,
    at_in_batch: usize,
    mask: u8,
) -> (PartitionLog, Vec<Vec<u8>>, i64) {
    let written = write_closed_segment_0(path, &config).await;
    let next_base = {
        let log = open_with(path, config.clone()).await;
        let bases = log.segment_base_offsets();
        log.close().await.unwrap();
        bases[1]
    };
    // Two offsets per batch: the last batch of segment 0 is the one before `next_base`.
    let last = usize::try_from(next_base / 2 - 1).unwrap();
    let position: usize = written[..last].iter().map(Vec::len).sum();
    let segment = crate::segment::segment_path(path, 0, crate::segment::LOG_SUFFIX);
    let mut bytes = std::fs::read(&segment).unwrap();
    assert_eq!(
        bytes.len(),
        position + written[last].len(),
        "the last batch"
    );
    bytes[position + at_in_batch] ^= mask;
    std::fs::write(&segment, &bytes).unwrap();
    (open_with(path, config).await, written, next_base - 2)
}

/// Recovery keeps a closed segment whose last batch is damaged. Here the damage is in that
/// batch's lastOffsetDelta, now claiming one offset of its two: a read of the second offset
/// walks past the batch to the segment's end, where no batch holds it. It must be refused as
/// damaged with its offsets (a consumer seeks past, a share group archives it), not answered
/// `Corrupt` with none, on which a share group whose window starts there fails every fetch.
#[test]
fn a_read_of_an_offset_the_damaged_last_batch_of_a_closed_segment_no_longer_claims_is_refused_with_its_offsets(
) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    run(async move {
        // The low byte of lastOffsetDelta: 1 becomes 0.
        let (log, _, damaged) =
            log_with_last_closed_batch_damaged(&path, config(), LAST_OFFSET_DELTA_AT + 3, 0x01)
                .await;
        for offset in [damaged, damaged + 1] {
            let read = log.read(offset, 1 << 20).await;
            assert!(
                matches!(
                    &read,
                    Err(LogError::DamagedBatch { base_offset, last_offset, .. })
                        if *base_offset == offset && *last_offset == damaged + 1
                ),
                "offset {offset}: {:?}",
                read.map(|slice| (slice.first_offset(), slice.next_offset()))
            );
        }
        let after = log.read(damaged + 2, 1 << 20).await.unwrap();
        assert_eq!(after.first_offset(), damaged + 2);
        log.close().await.unwrap();
    });
}

/// A batch of two records with timestamps `timestamp_ms` and one after.
fn make_batch_at(value_bytes: usize, seed: u8, timestamp_ms: i64) -> Vec<u8> {
    let mut builder = BatchBuilder::new(Vec::new(), timestamp_ms);
    let value = vec![seed; value_bytes];
    builder
        .push(timestamp_ms, Some(b"k"), Some(&value), &[])
        .unwrap();
    builder
        .push(timestamp_ms + 1, None, Some(&value), &[])
        .unwrap();
    builder.finish().to_vec()
}

/// Recovery keeps a closed segment whose first batch is damaged (a flipped bit in its
/// records, met by a full scan because the index files are gone): the batches after it are
/// healthy and served. The scan that stopped at the damage
/// saw no timestamp, so the segment's newest timestamp was `i64::MIN`, and retention by age
/// deleted it at its first pass however recent its records, while the same records in a
/// healthy segment are kept.
#[test]
fn retention_by_age_keeps_a_closed_segment_whose_first_batch_is_damaged() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    run(async move {
        let middle = make_batch(100, 1).len() / 2;
        let written = write_closed_segment_0(&path, &config()).await;
        // Without its indexes the open scans the segment whole and meets the damage.
        for suffix in [
            crate::segment::INDEX_SUFFIX,
            crate::segment::TIME_INDEX_SUFFIX,
        ] {
            std::fs::remove_file(crate::segment::segment_path(&path, 0, suffix)).unwrap();
        }
        let segment = crate::segment::segment_path(&path, 0, crate::segment::LOG_SUFFIX);
        let mut bytes = std::fs::read(&segment).unwrap();
        bytes[middle] ^= 0x40;
        std::fs::write(&segment, &bytes).unwrap();
        let log = open(&path).await;
        assert!(matches!(
            log.read(0, 1 << 20).await,
            Err(LogError::DamagedBatch {
                base_offset: 0,
                last_offset: 1,
                ..
            })
        ));
        let after = log.read(2, 1 << 20).await.unwrap();
        assert_eq!(after.bytes()[..written[1].len()], written[1][..]);
        // Every record is 9 seconds old at most; they are kept for an hour.
        let retention = Retention {
            ms: Some(3_600_000),
            bytes: None,
        };
        let report = log.apply_retention(10_000, retention).await.unwrap();
        assert_eq!(
            report.segments_deleted,
            0,
            "{:?}",
            log.segment_base_offsets()
        );
        assert_eq!(log.log_start_offset(), 0);
        log.close().await.unwrap();
    });
}

/// Recovery keeps a closed segment whose damage it found (here a flipped bit in a batch's
/// records, met by a full scan because the index files are gone), and the healthy batches
/// after the damage are served. A lookup by timestamp must find them: the segment's newest
/// timestamp was that of the batches before the damage, so the lookup passed over the segment
/// and answered the next segment's first batch, and a consumer starting from a timestamp
/// skipped healthy records.
#[test]
fn a_timestamp_lookup_finds_the_healthy_batches_after_damage_in_a_closed_segment() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    run(async move {
        let config = config_rolling_by_size();
        let log = open_with(&path, config.clone()).await;
        let mut written = Vec::new();
        for seed in 0..80u8 {
            let mut batch = make_batch_at(100, seed, 1_000 + 10 * i64::from(seed));
            log.append(&mut batch, Acks::Leader).await.unwrap();
            written.push(batch);
        }
        let next_base = log.segment_base_offsets()[1];
        log.close().await.unwrap();
        drop(log);
        for suffix in [
            crate::segment::INDEX_SUFFIX,
            crate::segment::TIME_INDEX_SUFFIX,
        ] {
            std::fs::remove_file(crate::segment::segment_path(&path, 0, suffix)).unwrap();
        }
        let position: usize = written[..10].iter().map(Vec::len).sum();
        let segment = crate::segment::segment_path(&path, 0, crate::segment::LOG_SUFFIX);
        let healthy_bytes = std::fs::read(&segment).unwrap();
        // A flipped bit in the records of batch 10 (offsets 20..=21).
        let mut bytes = healthy_bytes.clone();
        bytes[position + written[10].len() / 2] ^= 0x40;
        std::fs::write(&segment, &bytes).unwrap();
        let log = open_with(&path, config.clone()).await;
        assert!(next_base > 24, "{next_base}");
        let healthy = log.read(22, 1 << 20).await.unwrap();
        assert_eq!(healthy.bytes()[..written[11].len()], written[11][..]);
        // Batch 11 (offsets 22..=23) holds timestamps 1_110 and 1_111.
        let found = log.offset_for_timestamp(1_111).await.unwrap();
        assert_eq!(found, Some(22));
        log.close().await.unwrap();
        drop(log);

        // Batch 10's batchLength damaged instead: nothing after it in the segment can be
        // found, and reads refuse its offsets up to the next segment. A lookup answers the
        // next segment's first batch, as it did before, rather than failing.
        let mut bytes = healthy_bytes;
        bytes[position + 8] ^= 0x40;
        std::fs::write(&segment, &bytes).unwrap();
        let log = open_with(&path, config).await;
        assert!(matches!(
            log.read(22, 1 << 20).await,
            Err(LogError::DamagedBatch {
                base_offset: 20,
                ..
            })
        ));
        let found = log.batch_for_timestamp(1_111).await.unwrap();
        assert_eq!(found, Some((next_base, 1_001 + 10 * (next_base / 2))));
        log.close().await.unwrap();
    });
}

/// A log dropped without `close` is closed in the background: the flusher writes what is left
/// and stops (or gives up after a failure of its own). A failure of the *syncer* during that
/// background close sets `retry_blocked`, and the flusher, between two of its jobs, then waits
/// for a kick that can never come (no handle, no appends): it never writes the rest, never
/// finishes, and keeps the log's chunks in the shard's cache forever.
#[test]
fn a_sync_failure_during_a_background_close_does_not_hang_the_flusher() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    run(async move {
        let cache = Rc::new(ChunkCache::new(1 << 20));
        let log = PartitionLog::open(&path, config(), Rc::clone(&cache))
            .await
            .unwrap();
        let inner = Rc::clone(&log.inner);
        // Eight ~2 KiB batches: the eighth rolls the 16 KiB segment, so the background close
        // has several flusher jobs (writes, finishing segment 0, creating segment 1, ...).
        for seed in 0..8 {
            let mut batch = make_batch(1_000, seed);
            log.append(&mut batch, Acks::None).await.unwrap();
        }
        assert_eq!(log.segment_base_offsets().len(), 2);
        // The first fdatasync of the syncer fails (EIO/ENOSPC on a flaky disk).
        log.fail_next_io(1, Some("syncing the log"));
        drop(log);
        for _ in 0..500 {
            if inner.closed.get() {
                break;
            }
            crate::reactor::time::sleep(std::time::Duration::from_millis(2)).await;
        }
        assert_eq!(inner.stats.get().failures, 1, "the sync failed");
        assert!(
            inner.closed.get(),
            "the background close never finished: high watermark {} of {}, {} chunks still cached",
            inner.high_watermark.get(),
            inner.next_offset.get(),
            cache.len()
        );
    });
}

/// A segment file name is input from the disk: `parse_log_file_name` accepts any base offset up
/// to `i64::MAX`, recovery makes it the log's next offset, and the first append then trips
/// `assert!(next_offset > base_offset)` in `start_append` (offsets saturate at `i64::MAX`)
/// instead of being refused.
#[test]
fn a_segment_named_at_the_largest_offset_does_not_panic_the_first_append() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    std::fs::write(
        crate::segment::segment_path(&path, i64::MAX, crate::segment::LOG_SUFFIX),
        b"",
    )
    .unwrap();
    run(async move {
        let log = open(&path).await;
        assert_eq!(log.next_offset(), i64::MAX);
        let mut batch = make_batch(10, 1);
        let refused = log.append(&mut batch, Acks::None).await;
        assert!(
            matches!(
                refused,
                Err(LogError::OffsetsExhausted {
                    next_offset: i64::MAX
                })
            ),
            "{refused:?}"
        );
        log.close().await.unwrap();
    });
}

/// A crash between a roll and its producer snapshot leaves no snapshot at the newest
/// segment's base; the next run rebuilds the producer state from the whole log. Retention then
/// deletes the segments that state came from, and a second crash follows before the next roll
/// or close (simulated by copying the directory as it is on disk): the run after it must
/// still know the producer, or its retry is written a second time.
#[test]
fn producer_state_survives_retention_after_a_crash_before_the_roll_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let copy = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    let copy_path = copy.path().to_path_buf();
    run(async move {
        let config = config_rolling_by_size();
        let mut builder = BatchBuilder::new(Vec::new(), 1_000);
        builder.set_producer_id(5);
        builder.set_producer_epoch(0);
        builder.set_base_sequence(0);
        builder.push(1_000, None, Some(b"once"), &[]).unwrap();
        let idempotent = builder.finish().to_vec();

        // Run 1: producer 5's batch at offset 0, then plain batches past a roll.
        let log = open_with(&path, config.clone()).await;
        let info = log
            .append(&mut idempotent.clone(), Acks::Durable)
            .await
            .unwrap();
        assert_eq!(info.base_offset, 0);
        let mut seed = 1;
        while log.segment_base_offsets().len() < 2 {
            log.append(&mut make_batch(100, seed), Acks::Durable)
                .await
                .unwrap();
            seed += 1;
        }
        log.close().await.unwrap();
        drop(log);
        // As a crash after the roll and before its snapshot (and with no close) leaves it.
        for offset in producer_snapshot::list(&path).unwrap() {
            std::fs::remove_file(producer_snapshot::snapshot_path(&path, offset)).unwrap();
        }

        // Run 2: the state is rebuilt from the whole log: the retry is a duplicate.
        let log = open_with(&path, config.clone()).await;
        let retry = log
            .append(&mut idempotent.clone(), Acks::Durable)
            .await
            .unwrap();
        assert_eq!((retry.base_offset, retry.duplicate), (0, true));
        let retention = Retention {
            ms: None,
            bytes: Some(1),
        };
        let report = log.apply_retention(1_000_000, retention).await.unwrap();
        assert_eq!(report.segments_deleted, 1, "segment 0 deleted");
        // Still a duplicate while this run lives.
        let retry = log
            .append(&mut idempotent.clone(), Acks::Durable)
            .await
            .unwrap();
        assert_eq!((retry.base_offset, retry.duplicate), (0, true));
        // A crash now: what is on disk is what the next open sees.
        for entry in std::fs::read_dir(&path).unwrap() {
            let entry = entry.unwrap();
            std::fs::copy(entry.path(), copy_path.join(entry.file_name())).unwrap();
        }
        log.close().await.unwrap();
        drop(log);

        // Run 3 (from the crashed copy): producer 5 must still be remembered.
        let log = open_with(&copy_path, config.clone()).await;
        let end = log.next_offset();
        let retry = log
            .append(&mut idempotent.clone(), Acks::Durable)
            .await
            .unwrap();
        assert_eq!(
            (retry.base_offset, retry.duplicate),
            (0, true),
            "the retry was written again at {end}"
        );
        log.close().await.unwrap();
    });
}

/// Kafka's retention.bytes deletes the oldest segment only when the partition still holds at
/// least retention.bytes without it (`UnifiedLog.deleteRetentionSizeBreachedSegments`: delete
/// while `diff - segment.size >= 0`, `diff = size - retention.bytes`): a partition may stay up
/// to one segment over the limit, and is never cut below it. A log one byte over the limit
/// thus keeps every segment.
#[test]
fn retention_by_bytes_never_cuts_the_log_below_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    run(async move {
        let log = open(&path).await;
        let mut seed = 0;
        while log.segment_base_offsets().len() < 3 {
            log.append(&mut make_batch(1_000, seed), Acks::Durable)
                .await
                .unwrap();
            seed += 1;
        }
        // Every rolled segment finished.
        log.close().await.unwrap();
        let total = log.size_bytes();
        let retention = Retention {
            ms: None,
            bytes: Some(total - 1),
        };
        let report = log.apply_retention(1_000_000, retention).await.unwrap();
        assert_eq!(
            (report.segments_deleted, log.log_start_offset()),
            (0, 0),
            "a log of {total} bytes with retention.bytes {} was cut to {} bytes",
            total - 1,
            log.size_bytes()
        );
    });
}

#[test]
fn delete_records_moves_the_start_durably_and_retention_drops_what_is_below() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    run(async move {
        let log = open(&path).await;
        // 2 records per batch, several 16 KiB segments.
        for seed in 0..40 {
            let mut batch = make_batch(1_000, seed);
            log.append(&mut batch, Acks::Durable).await.unwrap();
        }
        let end = log.next_offset();
        let bases = log.segment_base_offsets();
        assert!(bases.len() >= 3, "{bases:?}");
        let inside = bases[1] + 3;
        let past = log.delete_records(end + 1).await.unwrap_err();
        assert!(matches!(past, LogError::OffsetOutOfRange { .. }), "{past}");

        // A failed store changes nothing; asking again stores it.
        log.fail_next_io(1, Some("storing the log start"));
        let failed = log.delete_records(inside).await.unwrap_err();
        assert!(matches!(failed, LogError::DiskFull { .. }), "{failed}");
        assert_eq!(log.log_start_offset(), 0);
        assert_eq!(log.delete_records(inside).await.unwrap(), inside);
        assert_eq!(log.log_start_offset(), inside);
        assert_eq!(
            log.delete_records(2).await.unwrap(),
            inside,
            "never backwards"
        );
        let below = log.read(inside - 1, 1 << 20).await.unwrap_err();
        assert!(
            matches!(below, LogError::OffsetOutOfRange { log_start, .. } if log_start == inside)
        );
        let slice = log.read(inside, 1 << 20).await.unwrap();
        let first = BatchIter::new(slice.bytes()).next().unwrap().unwrap().0;
        assert!(first.base_offset <= inside && inside <= first.last_offset());

        // Retention deletes the segments wholly below the start, and only those.
        let keep_all = Retention {
            ms: None,
            bytes: None,
        };
        let report = log.apply_retention(1_000_000, keep_all).await.unwrap();
        assert_eq!(report.segments_deleted, 1);
        assert_eq!(log.segment_base_offsets()[0], bases[1]);
        assert_eq!(
            log.log_start_offset(),
            inside,
            "inside the oldest segment kept"
        );
        log.close().await.unwrap();
        drop(log);

        let log = open(&path).await;
        assert_eq!(log.log_start_offset(), inside, "kept over a restart");
        assert_eq!(log.next_offset(), end);
        assert_eq!(log.delete_records(end).await.unwrap(), end, "everything");
        log.close().await.unwrap();
        drop(log);
        let log = open(&path).await;
        assert_eq!((log.log_start_offset(), log.next_offset()), (end, end));
        let mut batch = make_batch(10, 1);
        assert_eq!(
            log.append(&mut batch, Acks::Durable)
                .await
                .unwrap()
                .base_offset,
            end
        );
        log.close().await.unwrap();
    });
}

#[test]
fn a_stored_start_past_the_recovered_end_moves_back_and_hides_no_later_append() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    run(async move {
        let log = open(&path).await;
        let mut batch = make_batch(100, 1);
        log.append(&mut batch, Acks::Durable).await.unwrap();
        log.close().await.unwrap();
        drop(log);
        // As after a power loss that kept the stored start but not the records it covered.
        let file = path.join(crate::log_start::LOG_START_FILE_NAME);
        std::fs::write(&file, "10\n").unwrap();
        let log = open(&path).await;
        assert_eq!((log.log_start_offset(), log.next_offset()), (2, 2));
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "2\n");
        let mut batch = make_batch(100, 2);
        log.append(&mut batch, Acks::Durable).await.unwrap();
        log.close().await.unwrap();
        drop(log);
        let log = open(&path).await;
        assert_eq!(log.log_start_offset(), 2);
        assert_eq!(read_back(&log).await, vec![batch]);
        log.close().await.unwrap();
    });
}
