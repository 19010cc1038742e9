//! Idempotent producers through the partition log: retries are answered with the original
//! offsets and not appended again, gaps and fenced epochs are refused, and the state survives
//! a clean restart, a crash, lost snapshots and snapshots beyond the recovered end.

mod log_support;

use std::path::Path;

use ringlog_engine::batch::BatchBuilder;
use ringlog_engine::error::LogError;
use ringlog_engine::log::{Acks, LogConfig, PartitionLog};
use ringlog_engine::producer_snapshot::{parse_snapshot_file_name, SNAPSHOT_SUFFIX};
use ringlog_engine::producer_state::ProducerError;

use log_support::{cache, open, read_all, run, small_config};

/// A batch of `records` records of producer `producer_id` starting at `sequence`.
fn idempotent_batch(producer_id: i64, epoch: i16, sequence: i32, records: i32) -> Vec<u8> {
    // Recent timestamps, so that no segment rolls for its age after a restart.
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let mut builder = BatchBuilder::new(Vec::new(), now_ms);
    builder.set_producer_id(producer_id);
    builder.set_producer_epoch(epoch);
    builder.set_base_sequence(sequence);
    for record in 0..records {
        let value = format!("p{producer_id}-e{epoch}-s{}", sequence + record).repeat(20);
        builder
            .push(now_ms, None, Some(value.as_bytes()), &[])
            .unwrap();
    }
    builder.finish().to_vec()
}

async fn append(log: &PartitionLog, batch: &[u8]) -> Result<(i64, bool), LogError> {
    let mut bytes = batch.to_vec();
    let info = log.append(&mut bytes, Acks::Durable).await?;
    Ok((info.base_offset, info.duplicate))
}

fn snapshot_offsets(dir: &Path) -> Vec<i64> {
    let mut offsets: Vec<i64> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|entry| parse_snapshot_file_name(entry.unwrap().file_name().to_str().unwrap()))
        .collect();
    offsets.sort_unstable();
    offsets
}

/// Appends `batches` batches of 3 records for each of producers 1 and 2, interleaved;
/// returns the batches sent with their offsets.
async fn fill(log: &PartitionLog, batches: i32) -> Vec<(Vec<u8>, i64)> {
    let mut sent = Vec::new();
    for n in 0..batches {
        for producer_id in [1, 2] {
            let batch = idempotent_batch(producer_id, 0, n * 3, 3);
            let (offset, duplicate) = append(log, &batch).await.unwrap();
            assert!(!duplicate);
            sent.push((batch, offset));
        }
    }
    sent
}

#[test]
fn retries_are_answered_with_the_original_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    run(async move {
        let log = open(&path, small_config(), cache()).await;
        let first = idempotent_batch(7, 0, 0, 2);
        assert_eq!(append(&log, &first).await.unwrap(), (0, false));
        let plain = log_support::make_batch(1, 10, 1_000, 1);
        assert_eq!(append(&log, &plain).await.unwrap(), (2, false));
        // Retried: same answer, nothing appended.
        assert_eq!(append(&log, &first).await.unwrap(), (0, true));
        assert_eq!(log.next_offset(), 3);
        let second = idempotent_batch(7, 0, 2, 1);
        assert_eq!(append(&log, &second).await.unwrap(), (3, false));
        // A gap.
        let gap = idempotent_batch(7, 0, 9, 1);
        assert!(matches!(
            append(&log, &gap).await,
            Err(LogError::Producer(ProducerError::OutOfOrderSequence {
                expected_sequence: 3,
                first_sequence: 9,
                ..
            }))
        ));
        // A newer epoch fences the old one.
        let bumped = idempotent_batch(7, 1, 0, 1);
        assert_eq!(append(&log, &bumped).await.unwrap(), (4, false));
        let stale = idempotent_batch(7, 0, 3, 1);
        assert!(matches!(
            append(&log, &stale).await,
            Err(LogError::Producer(
                ProducerError::InvalidProducerEpoch { .. }
            ))
        ));
        assert_eq!(log.next_offset(), 5, "refused batches are not appended");
        let served = read_all(&log, 0, 1 << 20).await;
        assert_eq!(served.len(), 4);
        log.close().await.unwrap();
    });
}

#[test]
fn state_survives_clean_restart_crash_and_lost_snapshots() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    let config = LogConfig {
        segment_bytes: 16 * 1024,
        ..small_config()
    };
    // Enough batches for several segments, hence snapshots at rolls.
    let sent = {
        let (path, config) = (path.clone(), config.clone());
        run(async move {
            let log = open(&path, config, cache()).await;
            let sent = fill(&log, 40).await;
            assert!(log.segment_base_offsets().len() > 3);
            log.close().await.unwrap();
            sent
        })
    };
    let snapshots = snapshot_offsets(&path);
    assert!(
        !snapshots.is_empty() && snapshots.len() <= 2,
        "{snapshots:?}"
    );
    // Clean restart (close snapshot): the last batch of each producer is known with its
    // offset, and the sequence goes on where it was.
    let last_of_2 = sent[sent.len() - 1].clone();
    let last_of_1 = sent[sent.len() - 2].clone();
    check_retries(&path, &config, &[last_of_1, last_of_2.clone()]);
    let next_of_1 = idempotent_batch(1, 0, 40 * 3, 1);
    let next = {
        let (path, config, batch) = (path.clone(), config.clone(), next_of_1.clone());
        run(async move {
            let log = open(&path, config, cache()).await;
            let next = log.next_offset();
            assert_eq!(append(&log, &batch).await.unwrap(), (next, false));
            // Leave without closing, as a crash would (the batch is written and synced).
            std::mem::forget(log);
            next
        })
    };
    // After the crash the new batch is found by replaying the active segment.
    let tail = [last_of_2, (next_of_1, next)];
    check_retries(&path, &config, &tail);
    // Without any snapshot the whole log is replayed.
    for offset in snapshot_offsets(&path) {
        std::fs::remove_file(path.join(format!("{offset:020}{SNAPSHOT_SUFFIX}"))).unwrap();
    }
    check_retries(&path, &config, &tail);
}

/// A partition that took a producer's batch at sequence 10 as its first never wrote sequences
/// 0..10: a batch there is a gap, not a duplicate (whose result would stand), before and after
/// a restart, from the close snapshot and from a replay of the log.
#[test]
fn sequences_before_the_first_batch_taken_are_not_duplicates() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    let config = small_config();
    {
        let (path, config) = (path.clone(), config.clone());
        run(async move {
            let log = open(&path, config, cache()).await;
            for n in 0..7 {
                let batch = idempotent_batch(9, 0, 10 + n * 2, 2);
                assert!(!append(&log, &batch).await.unwrap().1);
            }
            check_before_first_taken(&log).await;
            log.close().await.unwrap();
        });
    }
    for replayed in [false, true] {
        if replayed {
            for offset in snapshot_offsets(&path) {
                std::fs::remove_file(path.join(format!("{offset:020}{SNAPSHOT_SUFFIX}"))).unwrap();
            }
        }
        let (path, config) = (path.clone(), config.clone());
        run(async move {
            let log = open(&path, config, cache()).await;
            check_before_first_taken(&log).await;
            log.close().await.unwrap();
        });
    }
}

/// Producer 9 (first batch taken at sequence 10, then more than five batches): a batch at
/// 0..10 is a gap, one at 10..12 an old duplicate; neither is appended.
async fn check_before_first_taken(log: &PartitionLog) {
    let log_next = log.next_offset();
    assert!(matches!(
        append(log, &idempotent_batch(9, 0, 0, 10)).await,
        Err(LogError::Producer(ProducerError::OutOfOrderSequence {
            first_sequence: 0,
            ..
        }))
    ));
    // Written here, longer ago than the five remembered batches reach.
    assert!(matches!(
        append(log, &idempotent_batch(9, 0, 10, 2)).await,
        Err(LogError::Producer(ProducerError::DuplicateSequence { .. }))
    ));
    assert_eq!(log.next_offset(), log_next);
}

/// Retries of `tail` are all duplicates with their offsets.
fn check_retries(path: &Path, config: &LogConfig, tail: &[(Vec<u8>, i64)]) {
    let (path, config, tail) = (path.to_path_buf(), config.clone(), tail.to_vec());
    run(async move {
        let log = open(&path, config, cache()).await;
        let next = log.next_offset();
        for (batch, offset) in &tail {
            assert_eq!(append(&log, batch).await.unwrap(), (*offset, true));
        }
        assert_eq!(log.next_offset(), next);
        log.close().await.unwrap();
    });
}

/// Fills a log from four producers, closes it (a snapshot at its end) and damages its last
/// batch, so that recovery will cut it and the close snapshot lies beyond the end. Returns
/// what was sent and the snapshot's offset.
fn closed_log_with_last_batch_cut(path: &Path, config: &LogConfig) -> (Vec<(Vec<u8>, i64)>, i64) {
    let sent = {
        let (path, config) = (path.to_path_buf(), config.clone());
        run(async move {
            let log = open(&path, config, cache()).await;
            let sent = fill(&log, 4).await;
            log.close().await.unwrap();
            sent
        })
    };
    let end = sent.last().unwrap().1 + 3;
    assert_eq!(snapshot_offsets(path), vec![end]);
    let segment = path.join(format!("{:020}.log", 0));
    let len = std::fs::metadata(&segment).unwrap().len();
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&segment)
        .unwrap();
    file.set_len(len - 5).unwrap();
    drop(file);
    (sent, end)
}

#[test]
fn snapshots_beyond_a_truncated_log_are_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    let config = small_config();
    let (sent, end) = closed_log_with_last_batch_cut(&path, &config);
    let (path2, config2) = (path.clone(), config.clone());
    let (last_batch, last_offset) = sent.last().unwrap().clone();
    run(async move {
        let log = open(&path2, config2, cache()).await;
        assert_eq!(log.next_offset(), last_offset);
        // The cut batch is new again (producer 2's sequence continues from the batch before).
        assert_eq!(
            append(&log, &last_batch).await.unwrap(),
            (last_offset, false)
        );
        log.close().await.unwrap();
    });
    // The open wrote the state it replayed at the cut log's end; the close, the one at its
    // end again.
    assert_eq!(snapshot_offsets(&path), vec![last_offset, end]);
}

#[test]
fn a_snapshot_beyond_the_end_that_cannot_be_deleted_fails_the_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    let config = small_config();
    let (_, end) = closed_log_with_last_batch_cut(&path, &config);
    // The close snapshot, beyond the end once recovery cuts the last batch, is a non-empty
    // directory that unlink refuses (EISDIR).
    let snapshot = path.join(format!("{end:020}{SNAPSHOT_SUFFIX}"));
    std::fs::remove_file(&snapshot).unwrap();
    std::fs::create_dir(&snapshot).unwrap();
    std::fs::write(snapshot.join("pin"), b"x").unwrap();
    let error = run(async move {
        PartitionLog::open(&path, config, cache())
            .await
            .map(|_| ())
            .unwrap_err()
    });
    assert!(
        error
            .to_string()
            .contains("producer snapshot beyond the log end"),
        "{error}"
    );
}
