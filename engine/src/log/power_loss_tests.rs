//! Power-loss torture of the partition log with the simulated fault layer
//! ([`crate::reactor::power_loss`]): producers append (durable and leader acks, idempotent and
//! plain batches, retries), the power fails during a random write (everything after each
//! file's last fdatasync is lost, the write in progress is torn at a random byte), and the
//! log is opened again. Checked after every crash:
//!
//! - every `Durable`-acknowledged batch is served, at its offset, byte for byte;
//! - what is served is a prefix of what was appended (no holes, nothing reordered), and every
//!   served batch passes its CRC;
//! - the idempotent producers' state matches the recovered log: a retry of each producer's
//!   last served batch is a duplicate with its offset, and its first lost batch is new.
//!
//! `RINGLOG_POWER_LOSS_CYCLES` sets the number of crashes (default 12; the README's longer run uses more); the seed of cycle `n` is
//! `n` (plus `RINGLOG_POWER_LOSS_SEED`), so a failure is reproduced by its cycle number.

use std::cell::RefCell;
use std::rc::Rc;

use super::*;
use crate::batch::{BatchBuilder, BatchIter};
use crate::reactor::power_loss::{self, PowerLoss};
use crate::reactor::{block_on, spawn, RingConfig};

const CYCLES_DEFAULT: u64 = 12;
/// Appends per cycle at most (the crash usually comes first).
const APPENDS_MAX: usize = 160;
/// Writes per cycle before the crash, at most.
const CRASH_WRITE_MAX: u64 = 100;
const PRODUCERS: i64 = 3;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

fn config() -> LogConfig {
    LogConfig {
        segment_bytes: 24 * 1024,
        preallocate_step_bytes: 8 * 1024,
        index_interval_bytes: 1024,
        chunk_bytes: 8 * 1024,
        unflushed_bytes_max: 256 * 1024,
        ..LogConfig::default()
    }
}

/// One appended batch: its bytes as stamped, and whether a durable append acknowledged it.
#[derive(Clone)]
struct Appended {
    bytes: Vec<u8>,
    producer_id: i64,
    durable_acked: bool,
}

/// A batch of producer `producer_id` (-1: plain) with random records.
fn make_batch(rng: &mut Rng, producer_id: i64, sequence: i32, records: i32) -> Vec<u8> {
    let mut builder = BatchBuilder::new(Vec::new(), wall_clock_ms());
    if producer_id >= 0 {
        builder.set_producer_id(producer_id);
        builder.set_producer_epoch(0);
        builder.set_base_sequence(sequence);
    }
    for record in 0..records {
        let value_bytes = 20 + rng.below(1_500) as usize;
        let value: Vec<u8> = (0..value_bytes)
            .map(|at| (at as i64 + producer_id * 7 + i64::from(sequence + record)) as u8)
            .collect();
        builder
            .push(wall_clock_ms(), None, Some(&value), &[])
            .unwrap();
    }
    builder.finish().to_vec()
}

/// One producer task: appends until the log fails; retries its last batch now and then.
async fn produce(
    log: Rc<PartitionLog>,
    producer_id: i64,
    seed: u64,
    appended: Rc<RefCell<Vec<Appended>>>,
) {
    let mut rng = Rng(seed);
    let mut sequence = 0i32;
    let mut last: Option<(Vec<u8>, i64)> = None;
    while appended.borrow().len() < APPENDS_MAX {
        if let (Some((bytes, offset)), 0) = (&last, rng.below(8)) {
            // A retry of the last batch: never appended twice.
            let mut retry = bytes.clone();
            match log.append(&mut retry, Acks::Durable).await {
                Ok(info) => assert!(info.duplicate && info.base_offset == *offset),
                Err(_) => return,
            }
            continue;
        }
        let records = 1 + rng.below(5) as i32;
        let mut bytes = make_batch(&mut rng, producer_id, sequence, records);
        let acks = if rng.below(4) == 0 {
            Acks::Leader
        } else {
            Acks::Durable
        };
        let before = log.next_offset();
        let future = log.append(&mut bytes, acks);
        if log.next_offset() == before {
            // Refused before getting an offset (the power is gone).
            return;
        }
        let index = appended.borrow().len();
        appended.borrow_mut().push(Appended {
            bytes: bytes.clone(),
            producer_id,
            durable_acked: false,
        });
        match future.await {
            Ok(info) => {
                appended.borrow_mut()[index].durable_acked = acks == Acks::Durable;
                if producer_id >= 0 {
                    sequence += records;
                    last = Some((bytes, info.base_offset));
                }
            }
            Err(_) => return,
        }
    }
}

/// Appends until the power fails; returns what was appended, in offset order, and the torn
/// write's `(kept, of)` bytes when the power failed.
fn crash(dir: &Path, cycle: u64, id_base: i64) -> (Vec<Appended>, Option<(usize, usize)>) {
    let mut rng = Rng(cycle);
    let crash_at = 1 + rng.below(CRASH_WRITE_MAX);
    let power = PowerLoss::install(crash_at, rng.next());
    let dir = dir.to_path_buf();
    let seed = rng.next();
    let appended = block_on(RingConfig::default(), async move {
        let log = Rc::new(
            PartitionLog::open(dir, config(), Rc::new(ChunkCache::new(1 << 20)))
                .await
                .unwrap(),
        );
        let appended = Rc::new(RefCell::new(Vec::new()));
        let tasks: Vec<_> = (-1..PRODUCERS)
            .map(|n| {
                // -1: a plain producer.
                let producer_id = if n < 0 { -1 } else { id_base + n };
                spawn(produce(
                    Rc::clone(&log),
                    producer_id,
                    seed ^ n as u64,
                    Rc::clone(&appended),
                ))
            })
            .collect();
        for task in tasks {
            task.await;
        }
        // Without a crash so far, the power fails now; the dropped log's close then fails
        // like every other file operation, and its files are closed.
        power_loss::cut_now();
        drop(log);
        Rc::try_unwrap(appended)
            .map(RefCell::into_inner)
            .unwrap_or_default()
    })
    .unwrap();
    assert_eq!(power.crashed(), power.torn_bytes().is_some());
    (appended, power.torn_bytes())
}

/// Opens the log again and checks it against what was appended (after `before` batches of
/// earlier cycles) for producers `id_base..`; returns the next offset.
fn check(dir: &Path, cycle: u64, appended: &[Appended], before: usize, id_base: i64) -> i64 {
    let dir = dir.to_path_buf();
    let appended = appended.to_vec();
    block_on(RingConfig::default(), async move {
        let log = PartitionLog::open(dir, config(), Rc::new(ChunkCache::new(1 << 20)))
            .await
            .unwrap();
        let mut served: Vec<Vec<u8>> = Vec::new();
        let mut offset = log.log_start_offset();
        while offset < log.high_watermark() {
            let slice = log.read(offset, 1 << 20).await.unwrap();
            for item in BatchIter::new(slice.bytes()) {
                let (header, bytes) = item.unwrap_or_else(|e| panic!("cycle {cycle}: {e}"));
                assert_eq!(
                    header.base_offset, offset,
                    "cycle {cycle}: offsets contiguous"
                );
                offset = header.next_offset();
                served.push(bytes.to_vec());
            }
        }
        let new = &served[before.min(served.len())..];
        assert!(
            new.len() <= appended.len(),
            "cycle {cycle}: more served than appended"
        );
        for (at, bytes) in new.iter().enumerate() {
            assert!(
                *bytes == appended[at].bytes,
                "cycle {cycle}: batch {at} differs from what was appended"
            );
        }
        for (at, batch) in appended.iter().enumerate() {
            assert!(
                !batch.durable_acked || at < new.len(),
                "cycle {cycle}: durable batch {at} of {} lost ({} served)",
                appended.len(),
                new.len()
            );
        }
        for producer_id in id_base..id_base + PRODUCERS {
            let mine = |batch: &&Appended| batch.producer_id == producer_id;
            if let Some(last) = appended[..new.len()].iter().rev().find(mine) {
                let offset = BatchHeader::parse(&last.bytes).unwrap().base_offset;
                let info = log.append(&mut last.bytes.clone(), Acks::Leader).await;
                let info = info.unwrap_or_else(|e| panic!("cycle {cycle}: {e}"));
                assert!(
                    info.duplicate && info.base_offset == offset,
                    "cycle {cycle}"
                );
            }
            if let Some(lost) = appended[new.len()..].iter().find(mine) {
                let info = log.append(&mut lost.bytes.clone(), Acks::Leader).await;
                let info = info.unwrap_or_else(|e| panic!("cycle {cycle}: {e}"));
                assert!(!info.duplicate, "cycle {cycle}: a lost batch is new again");
            }
        }
        log.close().await.unwrap();
        log.next_offset()
    })
    .unwrap()
}

#[test]
fn durable_batches_survive_power_loss_during_any_write() {
    let cycles = env_u64("RINGLOG_POWER_LOSS_CYCLES", CYCLES_DEFAULT);
    let seed = env_u64("RINGLOG_POWER_LOSS_SEED", 0);
    let (mut crashes, mut torn_inside, mut acked) = (0u64, 0u64, 0usize);
    for cycle in seed..seed + cycles {
        let dir = tempfile::tempdir().unwrap();
        // Some cycles start from a log with data and producer snapshots already.
        let before = if cycle % 3 == 0 {
            let (appended, _) = crash(dir.path(), cycle + 1_000_000, 100);
            check(dir.path(), cycle, &appended, 0, 100);
            count_batches(dir.path())
        } else {
            0
        };
        let (appended, torn) = crash(dir.path(), cycle, 0);
        crashes += u64::from(torn.is_some_and(|(_, of)| of > 0));
        torn_inside += u64::from(torn.is_some_and(|(kept, of)| kept > 0 && kept < of));
        acked += appended.iter().filter(|batch| batch.durable_acked).count();
        check(dir.path(), cycle, &appended, before, 0);
    }
    eprintln!(
        "power loss: cycles={cycles} crashes={crashes} torn_mid_write={torn_inside} durable_acked_batches={acked} lost=0"
    );
    assert!(
        crashes * 2 >= cycles,
        "most cycles crash ({crashes} of {cycles})"
    );
}

/// Batches in the (closed) log in `dir`.
fn count_batches(dir: &Path) -> usize {
    let dir = dir.to_path_buf();
    block_on(RingConfig::default(), async move {
        let log = PartitionLog::open(dir, config(), Rc::new(ChunkCache::new(1 << 20)))
            .await
            .unwrap();
        let mut count = 0;
        let mut offset = log.log_start_offset();
        while offset < log.high_watermark() {
            let slice = log.read(offset, 1 << 20).await.unwrap();
            count += BatchIter::new(slice.bytes()).count();
            offset = slice.next_offset();
        }
        log.close().await.unwrap();
        count
    })
    .unwrap()
}
