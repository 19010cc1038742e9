//! Partition log recovery: a crashed log whose last batches are cut or have flipped bits
//! reopens with every batch before the damage and nothing from it on; damage in a closed
//! segment costs only the damaged batch.

mod log_support;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use log_support::{cache, make_batch, open, read_all, run};
use ringlog_engine::batch;
use ringlog_engine::error::LogError;
use ringlog_engine::log::{Acks, LogConfig, PartitionLog};
use ringlog_engine::segment::{segment_path, LOG_SUFFIX};

fn config() -> LogConfig {
    LogConfig {
        segment_bytes: 16 * 1024,
        index_interval_bytes: 1024,
        chunk_bytes: 8 * 1024,
        ..LogConfig::default()
    }
}

/// One batch of the crashed log and where it lies.
#[derive(Debug, Clone)]
struct Placed {
    bytes: Vec<u8>,
    base_offset: i64,
    segment_base: i64,
    /// Byte position in its segment.
    position: u64,
}

impl Placed {
    fn end(&self) -> u64 {
        self.position + self.bytes.len() as u64
    }
}

/// Writes a log with durable appends and "crashes" (no close); returns its batches.
fn crashed_log(dir: &Path) -> Vec<Placed> {
    let dir = dir.to_path_buf();
    let (written, bases) = run(async move {
        let log = open(&dir, config(), cache()).await;
        let mut written = Vec::new();
        for at in 0..45u64 {
            let mut batch = make_batch(
                1 + (at % 4) as usize,
                100 + (at as usize * 211) % 1400,
                at as i64,
                at,
            );
            log.append(&mut batch, Acks::Durable).await.unwrap();
            written.push(batch);
        }
        let bases = log.segment_base_offsets();
        // A crash: the flusher never finishes the active segment.
        std::mem::forget(log);
        (written, bases)
    });
    assert!(bases.len() >= 3, "{bases:?}");
    let mut placed: Vec<Placed> = Vec::new();
    for bytes in written {
        let base_offset = batch::validate(&bytes).unwrap().base_offset;
        let segment_base = *bases
            .iter()
            .rev()
            .find(|base| **base <= base_offset)
            .unwrap();
        let position = placed
            .last()
            .filter(|previous| previous.segment_base == segment_base)
            .map_or(0, Placed::end);
        placed.push(Placed {
            bytes,
            base_offset,
            segment_base,
            position,
        });
    }
    placed
}

fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    fs::read_dir(dir)
        .unwrap()
        .map(|entry| {
            let path = entry.unwrap().path();
            let bytes = fs::read(&path).unwrap();
            (path.file_name().unwrap().into(), bytes)
        })
        .collect()
}

fn restore(dir: &Path, files: &BTreeMap<PathBuf, Vec<u8>>) {
    if dir.exists() {
        fs::remove_dir_all(dir).unwrap();
    }
    fs::create_dir_all(dir).unwrap();
    for (name, bytes) in files {
        fs::write(dir.join(name), bytes).unwrap();
    }
}

#[derive(Debug, Clone, Copy)]
enum Damage {
    /// Cut the segment file at this position.
    Cut { segment_base: i64, position: u64 },
    /// Zero `len` bytes from this position (a torn write that lost its first block).
    Zero {
        segment_base: i64,
        position: u64,
        len: u64,
    },
    /// Flip one bit of the byte at this position.
    Flip {
        segment_base: i64,
        position: u64,
        bit: u8,
    },
}

fn apply(dir: &Path, damage: Damage) {
    match damage {
        Damage::Cut {
            segment_base,
            position,
        } => {
            let file = fs::OpenOptions::new()
                .write(true)
                .open(segment_path(dir, segment_base, LOG_SUFFIX))
                .unwrap();
            file.set_len(position).unwrap();
        }
        Damage::Zero {
            segment_base,
            position,
            len,
        } => {
            let path = segment_path(dir, segment_base, LOG_SUFFIX);
            let mut bytes = fs::read(&path).unwrap();
            bytes[position as usize..(position + len) as usize].fill(0);
            fs::write(&path, bytes).unwrap();
        }
        Damage::Flip {
            segment_base,
            position,
            bit,
        } => {
            let path = segment_path(dir, segment_base, LOG_SUFFIX);
            let mut bytes = fs::read(&path).unwrap();
            bytes[position as usize] ^= 1 << bit;
            fs::write(&path, bytes).unwrap();
        }
    }
}

/// Reopens the damaged log and checks that exactly `placed[..kept]` is served and that the
/// next append takes the first lost offset. With `reopen`, also checks the new batch
/// survives another crash in place of the lost ones.
fn check(dir: &Path, placed: &[Placed], kept: usize, damage: Damage, reopen: bool) {
    let expected: Vec<Vec<u8>> = placed[..kept].iter().map(|p| p.bytes.clone()).collect();
    let next = placed.get(kept).map_or_else(
        || {
            batch::validate(&placed[kept - 1].bytes)
                .unwrap()
                .next_offset()
        },
        |p| p.base_offset,
    );
    let path = dir.to_path_buf();
    let new_batch = run(async move {
        let log = open(&path, config(), cache()).await;
        assert_eq!(log.high_watermark(), next, "{damage:?}");
        assert_eq!(log.next_offset(), next, "{damage:?}");
        let read: Vec<Vec<u8>> = read_all(&log, 0, 5000)
            .await
            .into_iter()
            .map(|(_, b)| b)
            .collect();
        assert!(
            read == expected,
            "{damage:?}: {} batches read, {} expected",
            read.len(),
            expected.len()
        );
        assert!(log.read(next, 100).await.unwrap().is_empty());
        assert!(matches!(
            log.read(next + 1, 100).await,
            Err(LogError::OffsetOutOfRange { .. })
        ));
        let mut batch = make_batch(2, 333, 99, 999);
        let info = log.append(&mut batch, Acks::Durable).await.unwrap();
        assert_eq!(info.base_offset, next, "{damage:?}");
        std::mem::forget(log);
        batch
    });
    if reopen {
        let path = dir.to_path_buf();
        run(async move {
            let log = open(&path, config(), cache()).await;
            let read = read_all(&log, 0, 1 << 20).await;
            assert_eq!(read.len(), kept + 1, "{damage:?}");
            assert_eq!(read.last().unwrap().1, new_batch, "{damage:?}");
            std::mem::forget(log);
        });
    }
}

/// A scratch directory on tmpfs when there is one: the recovery code is the same (tmpfs
/// takes O_DIRECT on current kernels, else the reactor falls back to buffered I/O) and the
/// hundreds of reopen cycles do not wait on a disk's fdatasync.
fn scratch() -> tempfile::TempDir {
    if Path::new("/dev/shm").is_dir() {
        if let Ok(dir) = tempfile::tempdir_in("/dev/shm") {
            return dir;
        }
    }
    tempfile::tempdir().unwrap()
}

#[test]
fn cuts_and_bit_flips_in_the_last_batches_lose_exactly_the_damaged_tail() {
    let root = scratch();
    let original = root.path().join("original");
    let placed = crashed_log(&original);
    let files = snapshot(&original);
    let work = root.path().join("work");

    // The undamaged crashed log loses nothing.
    restore(&work, &files);
    check(
        &work,
        &placed,
        placed.len(),
        Damage::Cut {
            segment_base: 0,
            position: u64::MAX,
        },
        true,
    );

    let last_segment = placed.last().unwrap().segment_base;
    let first_damaged = placed
        .iter()
        .position(|p| p.segment_base == last_segment)
        .unwrap()
        .max(placed.len().saturating_sub(4));
    let mut cases = 0;
    // Cuts at many positions inside the last batches, and at their boundaries.
    let (from, to) = (placed[first_damaged].position, placed.last().unwrap().end());
    let mut positions: Vec<u64> = (from..to).step_by(17).collect();
    for p in &placed[first_damaged..] {
        positions.extend([
            p.position,
            p.position + 1,
            p.position + 11,
            p.position + 12,
            p.position + 60,
            p.position + 61,
            p.end() - 1,
        ]);
    }
    positions.push(to);
    for (at, position) in positions.into_iter().enumerate() {
        let kept = placed
            .iter()
            .position(|p| p.segment_base == last_segment && p.end() > position)
            .unwrap_or(placed.len());
        let damage = Damage::Cut {
            segment_base: last_segment,
            position,
        };
        restore(&work, &files);
        apply(&work, damage);
        check(&work, &placed, kept, damage, at % 8 == 0);
        cases += 1;
    }
    // Bit flips in every header field the log can check (the partition leader epoch,
    // bytes 12..16, is covered by neither the CRC nor any rule) and in the records.
    for (index, p) in placed.iter().enumerate().skip(first_damaged) {
        let header_positions = (0..61u64).filter(|at| !(12..16).contains(at));
        let body_positions = (61..p.bytes.len() as u64).step_by(97);
        for (at, offset) in header_positions.chain(body_positions).enumerate() {
            let damage = Damage::Flip {
                segment_base: last_segment,
                position: p.position + offset,
                bit: (offset % 8) as u8,
            };
            restore(&work, &files);
            apply(&work, damage);
            check(&work, &placed, index, damage, at % 16 == 0);
            cases += 1;
        }
    }
    // Zeros where a batch starts, its later bytes intact: the zeros end the data.
    for (index, p) in placed.iter().enumerate().skip(first_damaged) {
        let damage = Damage::Zero {
            segment_base: last_segment,
            position: p.position,
            len: 12,
        };
        restore(&work, &files);
        apply(&work, damage);
        check(&work, &placed, index, damage, true);
        cases += 1;
    }
    assert!(cases > 300, "{cases} cases");
}

/// Reads every batch from offset 0 as a consumer does, stepping past damage the log reports
/// with its offsets; returns the batches served and the damaged offset ranges.
async fn read_around_damage(log: &PartitionLog) -> (Vec<Vec<u8>>, Vec<(i64, i64)>) {
    let (mut batches, mut damaged) = (Vec::new(), Vec::new());
    let mut offset = 0;
    while offset < log.high_watermark() {
        match log.read(offset, 5000).await {
            Ok(slice) => {
                assert!(
                    !slice.is_empty(),
                    "a read below the high watermark returns data"
                );
                for item in batch::BatchIter::new(slice.bytes()) {
                    batches.push(item.expect("served batches are valid").1.to_vec());
                }
                offset = slice.next_offset();
            }
            Err(LogError::DamagedBatch {
                base_offset,
                last_offset,
                ..
            }) => {
                assert_eq!(base_offset, offset, "the damage starts at the offset read");
                damaged.push((base_offset, last_offset));
                offset = last_offset + 1;
            }
            Err(error) => panic!("reading offset {offset}: {error}"),
        }
    }
    (batches, damaged)
}

/// Damage in a closed segment is not a torn write (the segment was synced before the next
/// one was created): the reopened log keeps it and every later segment, refuses exactly the
/// damaged batch's offsets, serves the rest, and appends after its old end.
#[test]
fn damage_in_a_closed_segment_keeps_it_and_all_later_segments() {
    let second_base_of = |placed: &[Placed], at: usize| placed[at + 1].segment_base;
    let root = tempfile::tempdir().unwrap();
    let original = root.path().join("original");
    let placed = crashed_log(&original);
    let files = snapshot(&original);
    let work = root.path().join("work");
    let (last_index, last) = placed
        .iter()
        .enumerate()
        .rfind(|(_, p)| p.segment_base == 0)
        .map(|(at, p)| (at, p.clone()))
        .unwrap();
    let first_damaged = (last.base_offset, second_base_of(&placed, last_index) - 1);
    let log_end = batch::validate(&placed.last().unwrap().bytes)
        .unwrap()
        .next_offset();

    let damages = [
        // A flipped bit in the records of the last batch of the first (closed) segment.
        Damage::Flip {
            segment_base: 0,
            position: last.position + 70,
            bit: 3,
        },
        // Its batchLength damaged: the bytes from there are no longer framed.
        Damage::Flip {
            segment_base: 0,
            position: last.position + 9,
            bit: 6,
        },
        // The closed segment shorter than its index says (cut inside its last batch).
        Damage::Cut {
            segment_base: 0,
            position: last.position + 5,
        },
    ];
    for damage in damages {
        restore(&work, &files);
        apply(&work, damage);
        let expected: Vec<Vec<u8>> = placed
            .iter()
            .enumerate()
            .filter(|(at, _)| *at != last_index)
            .map(|(_, p)| p.bytes.clone())
            .collect();
        let path = work.clone();
        let expected_before = expected.clone();
        let new_batch = run(async move {
            let log = open(&path, config(), cache()).await;
            assert_eq!(log.high_watermark(), log_end, "{damage:?}");
            let (batches, damaged) = read_around_damage(&log).await;
            assert_eq!(damaged, vec![first_damaged], "{damage:?}");
            assert!(
                batches == expected_before,
                "{damage:?}: {} batches",
                batches.len()
            );
            let mut batch = make_batch(2, 333, 99, 999);
            let info = log.append(&mut batch, Acks::Durable).await.unwrap();
            assert_eq!(info.base_offset, log_end, "{damage:?}");
            std::mem::forget(log);
            batch
        });
        // Another crash and open: the same, plus the new batch.
        let path = work.clone();
        let expected_after = [expected, vec![new_batch]].concat();
        run(async move {
            let log = open(&path, config(), cache()).await;
            let (batches, damaged) = read_around_damage(&log).await;
            assert_eq!(damaged, vec![first_damaged], "{damage:?}");
            assert!(batches == expected_after, "{damage:?}");
            std::mem::forget(log);
        });
    }
}

#[test]
fn a_missing_segment_drops_the_older_ones_before_the_gap_and_keeps_the_newer() {
    let root = tempfile::tempdir().unwrap();
    let work = root.path().join("work");
    let placed = crashed_log(&work);
    let mut bases: Vec<i64> = placed.iter().map(|p| p.segment_base).collect();
    bases.dedup();
    assert!(bases.len() >= 3, "{bases:?}");
    // The second segment disappears (a failed retention of an older version, an operator).
    fs::remove_file(segment_path(&work, bases[1], LOG_SUFFIX)).unwrap();
    let next_offset = placed.last().map(|p| p.base_offset + 1).unwrap();
    let dir = work.clone();
    let kept = bases[2];
    run(async move {
        let log = open(&dir, config(), cache()).await;
        // Older than the gap: gone; after it: every batch, and offsets go on from there.
        assert_eq!(log.log_start_offset(), kept);
        assert!(!segment_path(&dir, 0, LOG_SUFFIX).exists());
        assert!(log.next_offset() >= next_offset);
        let read = read_all(&log, kept, 1 << 20).await;
        let expected: Vec<(i64, Vec<u8>)> = placed
            .iter()
            .filter(|p| p.segment_base >= kept)
            .map(|p| (p.base_offset, p.bytes.clone()))
            .collect();
        assert_eq!(read, expected);
        let mut batch = make_batch(1, 10, 0, 99);
        let info = log.append(&mut batch, Acks::Durable).await.unwrap();
        assert_eq!(info.base_offset, log.next_offset() - 1);
        log.close().await.unwrap();
    });
}
