//! Partition log: segment roll, restart with many segments, index rebuild, retention,
//! buffered I/O and deletion.

mod log_support;

use std::fs;
use std::path::Path;
use std::rc::Rc;

use log_support::{cache, make_batch, open, read_all, run, small_config};
use ringlog_engine::batch;
use ringlog_engine::cache::ChunkCache;
use ringlog_engine::error::LogError;
use ringlog_engine::log::{Acks, LogConfig, PartitionLog, Retention};
use ringlog_engine::segment::{segment_path, INDEX_SUFFIX, LOG_SUFFIX, TIME_INDEX_SUFFIX};

/// Appends `count` batches of varying size; returns them (stamped) and their max timestamps.
async fn fill(log: &PartitionLog, count: u64, first_timestamp_ms: i64) -> Vec<(Vec<u8>, i64)> {
    let mut written = Vec::new();
    for at in 0..count {
        let timestamp = first_timestamp_ms + at as i64 * 10;
        let mut batch = make_batch(
            1 + (at % 3) as usize,
            200 + (at as usize * 53) % 900,
            timestamp,
            at,
        );
        log.append(&mut batch, Acks::Leader).await.unwrap();
        let max = batch::validate(&batch).unwrap().max_timestamp_ms;
        written.push((batch, max));
    }
    written
}

fn log_file_len(dir: &Path, base: i64) -> u64 {
    fs::metadata(segment_path(dir, base, LOG_SUFFIX))
        .unwrap()
        .len()
}

#[test]
fn segments_roll_by_size_and_closed_ones_are_exact() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    run(async move {
        let config = small_config();
        let log = open(&path, config.clone(), cache()).await;
        let written = fill(&log, 100, 0).await;
        log.close().await.unwrap();
        let bases = log.segment_base_offsets();
        assert!(bases.len() >= 3, "{bases:?}");
        assert_eq!(log.stats().rolls as usize, bases.len() - 1);
        // Each segment holds whole batches up to the size limit and starts where the last
        // one ended; closed files are truncated to their exact data length.
        let mut offset = 0;
        let mut batches = written.iter().map(|(bytes, _)| bytes);
        for (at, &base) in bases.iter().enumerate() {
            assert_eq!(base, offset);
            let end = bases.get(at + 1).copied().unwrap_or(log.next_offset());
            let mut bytes = 0u64;
            while offset < end {
                let batch = batches.next().unwrap();
                let header = batch::validate(batch).unwrap();
                bytes += batch.len() as u64;
                offset = header.next_offset();
            }
            assert!(bytes <= config.segment_bytes);
            assert_eq!(
                log_file_len(&path, base),
                bytes,
                "segment {base} has its exact length"
            );
            // Rolled segments have their indexes on disk; close does not write the active
            // one's, which the next open rebuilds by scanning that segment whole.
            let rolled = at + 1 < bases.len();
            assert_eq!(segment_path(&path, base, INDEX_SUFFIX).exists(), rolled);
            assert_eq!(
                segment_path(&path, base, TIME_INDEX_SUFFIX).exists(),
                rolled
            );
        }
    });
}

#[test]
fn restart_with_many_segments_reads_everything_and_rebuilds_bad_indexes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    let config = LogConfig {
        segment_bytes: 16 * 1024,
        ..small_config()
    };
    let (written, bases) = {
        let (path, config) = (path.clone(), config.clone());
        run(async move {
            let log = open(&path, config, cache()).await;
            let written = fill(&log, 300, 1_000).await;
            log.close().await.unwrap();
            (written, log.segment_base_offsets())
        })
    };
    assert!(bases.len() > 10, "{} segments", bases.len());
    // Damage indexes of closed segments: one missing, one stale (entries past the end), one
    // with a partial entry, one time index out of order.
    fs::remove_file(segment_path(&path, bases[1], INDEX_SUFFIX)).unwrap();
    let mut stale = fs::read(segment_path(&path, bases[2], INDEX_SUFFIX)).unwrap();
    stale.extend_from_slice(&[0, 0, 0, 200, 0, 1, 0, 0]);
    fs::write(segment_path(&path, bases[2], INDEX_SUFFIX), stale).unwrap();
    let partial = fs::read(segment_path(&path, bases[3], INDEX_SUFFIX)).unwrap();
    fs::write(
        segment_path(&path, bases[3], INDEX_SUFFIX),
        &partial[..partial.len() - 3],
    )
    .unwrap();
    fs::write(
        segment_path(&path, bases[4], TIME_INDEX_SUFFIX),
        [0xffu8; 24],
    )
    .unwrap();
    // A short index (last entries lost) heals by itself.
    let short = fs::read(segment_path(&path, bases[5], INDEX_SUFFIX)).unwrap();
    let time_short = fs::read(segment_path(&path, bases[5], TIME_INDEX_SUFFIX)).unwrap();
    fs::write(segment_path(&path, bases[5], INDEX_SUFFIX), &short[..8]).unwrap();
    fs::write(
        segment_path(&path, bases[5], TIME_INDEX_SUFFIX),
        &time_short[..12],
    )
    .unwrap();

    run(async move {
        let log = open(&path, config, Rc::new(ChunkCache::new(4096))).await;
        assert_eq!(log.segment_base_offsets(), bases);
        let read = read_all(&log, 0, 3000).await;
        assert_eq!(read.len(), written.len());
        for ((_, read), (written, _)) in read.iter().zip(&written) {
            assert_eq!(read, written);
        }
        // Rebuilt indexes are persisted again.
        assert!(segment_path(&path, bases[1], INDEX_SUFFIX).exists());
        let rebuilt = fs::read(segment_path(&path, bases[5], INDEX_SUFFIX)).unwrap();
        assert_eq!(rebuilt, short, "the short index was completed");
        // Every offset and timestamp lookup works across the rebuilt segments.
        let mut base = 0;
        for (bytes, max_timestamp) in &written {
            let header = batch::validate(bytes).unwrap();
            assert_eq!(header.base_offset, base);
            let slice = log.read(header.last_offset(), 1).await.unwrap();
            assert_eq!(slice.first_offset(), base);
            let expected = written
                .iter()
                .find(|(_, max)| max >= max_timestamp)
                .map(|(bytes, _)| batch::validate(bytes).unwrap().base_offset);
            assert_eq!(
                log.offset_for_timestamp(*max_timestamp).await.unwrap(),
                expected
            );
            base = header.next_offset();
        }
        // Appends continue after the last offset.
        let mut batch = make_batch(1, 10, 5, 5);
        let info = log.append(&mut batch, Acks::Durable).await.unwrap();
        assert_eq!(info.base_offset, base);
        log.close().await.unwrap();
    });
}

#[test]
fn retention_by_bytes_deletes_oldest_segments_and_moves_log_start() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    let first_path = path.clone();
    run(async move {
        let path = first_path;
        let retention = Retention {
            bytes: Some(40 * 1024),
            ms: None,
        };
        let log = open(&path, small_config(), cache()).await;
        fill(&log, 150, 0).await;
        log.wait_for_offset(log.next_offset() - 1).await;
        let before = log.segment_base_offsets();
        assert!(before.len() >= 4);
        // Rolled segments are closed by the flusher in the background; close the log to be sure
        // every rolled segment is finished (reads still work after close).
        log.close().await.unwrap();
        let total = log.size_bytes();
        let sizes: Vec<u64> = before
            .iter()
            .map(|base| log_file_len(&path, *base))
            .collect();
        assert_eq!(sizes.iter().sum::<u64>(), total);
        // No retention, nothing deleted.
        let report = log.apply_retention(0, Retention::FOREVER).await.unwrap();
        assert_eq!(report.segments_deleted, 0);
        let report = log.apply_retention(0, retention).await.unwrap();
        let after = log.segment_base_offsets();
        assert!(report.segments_deleted > 0);
        assert_eq!(after.len() + report.segments_deleted, before.len());
        assert_eq!(log.log_start_offset(), after[0]);
        assert_eq!(log.size_bytes(), total - report.bytes_deleted);
        // Deleted oldest first exactly while what stays is at least the limit (Kafka's rule:
        // never below the limit, up to a segment over it).
        let mut left = total;
        let mut expected_deleted = 0;
        while expected_deleted + 1 < sizes.len() && left - sizes[expected_deleted] >= 40 * 1024 {
            left -= sizes[expected_deleted];
            expected_deleted += 1;
        }
        assert_eq!(report.segments_deleted, expected_deleted);
        assert!(
            log.size_bytes() >= 40 * 1024 && log.size_bytes() - 40 * 1024 < sizes[expected_deleted],
            "{} bytes left",
            log.size_bytes()
        );
        for base in &before[..report.segments_deleted] {
            assert!(!segment_path(&path, *base, LOG_SUFFIX).exists());
            assert!(!segment_path(&path, *base, INDEX_SUFFIX).exists());
        }
        match log.read(after[0] - 1, 100).await {
            Err(LogError::OffsetOutOfRange { log_start, .. }) => assert_eq!(log_start, after[0]),
            other => panic!("{other:?}"),
        }
        let slice = log.read(after[0], 100).await.unwrap();
        assert_eq!(slice.first_offset(), after[0]);
        // Nothing more to delete.
        let report = log.apply_retention(0, retention).await.unwrap();
        assert_eq!(report.segments_deleted, 0);
    });
    // The log start survives a restart (it is the first segment's base).
    run(async move {
        let log = open(&path, small_config(), cache()).await;
        assert!(log.log_start_offset() > 0);
        let read = read_all(&log, log.log_start_offset(), 1 << 20).await;
        assert_eq!(read.first().unwrap().0, log.log_start_offset());
        log.close().await.unwrap();
    });
}

/// A partition that stopped receiving records: its only segment, the active one, is past
/// retention. Retention deletes closed segments only, so it was kept forever (up to
/// `segment_bytes`). As in Kafka, retention now rolls it; once finished it is deleted, the log
/// start moves to the log end, and that end survives a restart (the new active segment has
/// its file although nothing was written to it), where appends go on from it.
#[test]
fn retention_by_age_rolls_an_idle_expired_active_segment_and_deletes_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    let retention = Retention {
        ms: Some(1_000),
        bytes: None,
    };
    let first = path.clone();
    let end = run(async move {
        let log = open(&first, small_config(), cache()).await;
        for at in 0..3 {
            let mut batch = make_batch(2, 100, at * 10, at as u64);
            log.append(&mut batch, Acks::Durable).await.unwrap();
        }
        let end = log.next_offset();
        assert_eq!(log.segment_base_offsets(), vec![0]);
        // Within retention: nothing happens.
        let report = log.apply_retention(500, retention).await.unwrap();
        assert_eq!(report.segments_deleted, 0);
        assert_eq!(log.segment_base_offsets(), vec![0]);
        // Every record past retention: rolled now, deleted once finished.
        let report = log.apply_retention(1_000_000, retention).await.unwrap();
        assert_eq!(report.segments_deleted, 0);
        assert_eq!(log.segment_base_offsets(), vec![0, end]);
        // Closing finishes the rolled segment and creates the new one's file.
        log.close().await.unwrap();
        let report = log.apply_retention(1_000_000, retention).await.unwrap();
        assert_eq!(report.segments_deleted, 1);
        assert_eq!(log.segment_base_offsets(), vec![end]);
        assert_eq!(log.log_start_offset(), end);
        assert!(!segment_path(&first, 0, LOG_SUFFIX).exists());
        assert!(segment_path(&first, end, LOG_SUFFIX).exists());
        end
    });
    run(async move {
        let log = open(&path, small_config(), cache()).await;
        assert_eq!(
            log.log_start_offset(),
            end,
            "the log end survived the restart"
        );
        assert_eq!(log.next_offset(), end);
        let file_bytes = std::fs::metadata(segment_path(&path, end, LOG_SUFFIX))
            .unwrap()
            .len();
        assert_eq!(file_bytes, 0, "an idle empty segment reserves no space");
        assert!(matches!(
            log.read(end - 1, 100).await,
            Err(LogError::OffsetOutOfRange { .. })
        ));
        let mut batch = make_batch(1, 10, 5_000, 9);
        let info = log.append(&mut batch, Acks::Durable).await.unwrap();
        assert_eq!(info.base_offset, end);
        log.close().await.unwrap();
    });
}

#[test]
fn retention_by_age_never_deletes_the_active_segment() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    run(async move {
        let retention = Retention {
            ms: Some(1_000),
            bytes: None,
        };
        let log = open(&path, small_config(), cache()).await;
        // Timestamps 0..1500 across several segments.
        let written = fill(&log, 150, 0).await;
        log.close().await.unwrap();
        let bases = log.segment_base_offsets();
        assert!(bases.len() >= 4);
        // At now = 1500 + 1000, batches with max timestamp < 1500 are expired; segments whose
        // newest batch is older go, the one holding 1500+ stays.
        let now_ms = 1_500 + 1_000;
        let report = log.apply_retention(now_ms, retention).await.unwrap();
        assert!(report.segments_deleted > 0);
        let start = log.log_start_offset();
        let newest_deleted_max = written
            .iter()
            .filter(|(bytes, _)| batch::validate(bytes).unwrap().base_offset < start)
            .map(|(_, max)| *max)
            .max()
            .unwrap();
        assert!(newest_deleted_max < 1_500);
        // Far in the future everything but the active segment goes.
        log.apply_retention(i64::MAX / 2, retention).await.unwrap();
        assert_eq!(log.segment_base_offsets(), vec![*bases.last().unwrap()]);
        assert_eq!(log.log_start_offset(), *bases.last().unwrap());
        let read = read_all(&log, log.log_start_offset(), 1 << 20).await;
        assert!(!read.is_empty());
    });
}

#[test]
fn buffered_io_works_on_tmpfs() {
    // /dev/shm where it is a tmpfs, else one mounted here; never another file system in
    // its place, which would pass without testing tmpfs.
    let shm = Path::new("/dev/shm");
    let mounted;
    let base = if is_tmpfs(shm) {
        tempfile::tempdir_in(shm).unwrap()
    } else {
        let Some(tmpfs) = Tmpfs::mount(64 << 20) else {
            skip(
                "buffered_io_works_on_tmpfs",
                "/dev/shm is not a tmpfs and there is no CAP_SYS_ADMIN to mount one",
            );
            return;
        };
        mounted = tmpfs;
        tempfile::tempdir_in(mounted.path()).unwrap()
    };
    let path = base.path().to_path_buf();
    for direct_io in [false, true] {
        let path = path.join(format!("direct-{direct_io}"));
        let config = LogConfig {
            direct_io,
            ..small_config()
        };
        let written = {
            let (path, config) = (path.clone(), config.clone());
            run(async move {
                let log = open(&path, config, cache()).await;
                let written = fill(&log, 60, 0).await;
                let mut last = make_batch(2, 10, 1, 1);
                log.append(&mut last, Acks::Durable).await.unwrap();
                // A crash: no close.
                std::mem::forget(log);
                written
            })
        };
        run(async move {
            let log = open(&path, config, cache()).await;
            let read = read_all(&log, 0, 1 << 20).await;
            assert_eq!(read.len(), written.len() + 1);
            for ((_, read), (written, _)) in read.iter().zip(&written) {
                assert_eq!(read, written);
            }
            log.close().await.unwrap();
        });
    }
}

#[test]
fn delete_removes_the_partition_directory() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("topic").join("0");
    run(async move {
        let log = open(&path, small_config(), cache()).await;
        fill(&log, 40, 0).await;
        assert!(path.is_dir());
        log.delete().await.unwrap();
        assert!(!path.exists());
    });
}

/// Real ENOSPC, on a small file system: `RINGLOG_SMALL_FS` when it names a directory on one
/// (e.g. `mount -t tmpfs -o size=2m tmpfs /mnt/small`), else a tmpfs the test mounts (with
/// CAP_SYS_ADMIN, as root in CI); skipped, saying so, only without either. The
/// fault-injection unit tests in `log::tests` cover the same paths everywhere.
#[test]
fn a_full_disk_fails_appends_cleanly_and_they_work_again_after_space_is_freed() {
    let mounted;
    let root = match std::env::var_os("RINGLOG_SMALL_FS") {
        Some(root) => std::path::PathBuf::from(root),
        None => {
            let Some(tmpfs) = Tmpfs::mount(4 << 20) else {
                skip(
                    "a_full_disk_fails_appends_cleanly_and_they_work_again_after_space_is_freed",
                    "RINGLOG_SMALL_FS is not set and there is no CAP_SYS_ADMIN to mount a \
                     small tmpfs (run as root)",
                );
                return;
            };
            mounted = tmpfs;
            mounted.path().to_path_buf()
        }
    };
    let dir = tempfile::tempdir_in(root).unwrap();
    let path = dir.path().join("log");
    let filler = dir.path().join("filler");
    let config = small_config_with(256 * 1024);
    run(async move {
        // Leave room for a few segments only.
        let free_bytes = {
            let stat = nix_free_bytes(dir.path());
            stat.saturating_sub(700 * 1024)
        };
        fs::write(&filler, vec![1u8; free_bytes as usize]).unwrap();
        let log = open(&path, config, cache()).await;
        let mut written = Vec::new();
        let mut failed = None;
        for seed in 0..10_000u64 {
            let mut batch = make_batch(4, 1000, seed as i64, seed);
            match log.append(&mut batch, Acks::Durable).await {
                Ok(_) => written.push(batch),
                Err(error) => {
                    assert!(matches!(error, LogError::DiskFull { .. }), "{error}");
                    failed = Some(batch);
                    break;
                }
            }
        }
        let failed = failed.expect("the small filesystem filled up");
        // Nothing unacknowledged is visible, everything acknowledged is.
        let read: Vec<Vec<u8>> = read_all(&log, 0, 1 << 20)
            .await
            .into_iter()
            .map(|(_, b)| b)
            .collect();
        assert_eq!(read, written);
        // Still full: the next append fails the same way.
        let mut again = make_batch(1, 10, 0, 0);
        assert!(matches!(
            log.append(&mut again, Acks::Leader).await,
            Err(LogError::DiskFull { .. })
        ));
        // Space comes back: the next append writes everything still in memory.
        fs::remove_file(&filler).unwrap();
        let mut after = make_batch(1, 10, 0, 1);
        log.append(&mut after, Acks::Durable).await.unwrap();
        written.extend([failed, again, after]);
        let read: Vec<Vec<u8>> = read_all(&log, 0, 1 << 20)
            .await
            .into_iter()
            .map(|(_, b)| b)
            .collect();
        assert_eq!(read, written);
        log.close().await.unwrap();
        drop(log);
        let log = open(&path, small_config_with(256 * 1024), cache()).await;
        let read: Vec<Vec<u8>> = read_all(&log, 0, 1 << 20)
            .await
            .into_iter()
            .map(|(_, b)| b)
            .collect();
        assert_eq!(read, written);
        log.close().await.unwrap();
        drop(dir);
    });
}

fn small_config_with(segment_bytes: u64) -> LogConfig {
    LogConfig {
        segment_bytes,
        chunk_bytes: 64 * 1024,
        ..small_config()
    }
}

/// Free bytes of the filesystem holding `path`.
fn nix_free_bytes(path: &Path) -> u64 {
    let cpath = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: statvfs writes into the zeroed struct we pass; the path is NUL-terminated.
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    assert_eq!(unsafe { libc::statvfs(cpath.as_ptr(), &mut stat) }, 0);
    stat.f_bavail * stat.f_frsize
}

/// Whether `path` is on a tmpfs.
fn is_tmpfs(path: &Path) -> bool {
    let Ok(cpath) = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    // SAFETY: statfs writes into the zeroed struct we pass; the path is NUL-terminated.
    let mut stat: libc::statfs = unsafe { std::mem::zeroed() };
    unsafe { libc::statfs(cpath.as_ptr(), &mut stat) == 0 && stat.f_type == libc::TMPFS_MAGIC }
}

/// CAP_SYS_ADMIN (linux/capability.h), which mounting takes.
const CAP_SYS_ADMIN: u32 = 21;

/// Whether this process holds capability `bit` in its effective set (CapEff).
fn has_capability(bit: u32) -> bool {
    let status = fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .is_some_and(|effective| effective & (1 << bit) != 0)
}

/// Says that `test` did not run, and why, on the process's stderr itself (libtest shows what
/// `eprintln!` prints only for failing tests). The caller then returns.
fn skip(test: &str, why: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "SKIPPED {test}: {why}");
}

/// A tmpfs mounted on a temporary directory, unmounted when dropped.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    /// A tmpfs of `size_bytes`; `None` without CAP_SYS_ADMIN. With it (root, as in CI) a
    /// mount that fails is a failure, not a skip.
    fn mount(size_bytes: u64) -> Option<Tmpfs> {
        if !has_capability(CAP_SYS_ADMIN) {
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let output = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size_bytes}"), "tmpfs"])
            .arg(dir.path())
            .output()
            .expect("mount runs");
        assert!(
            output.status.success(),
            "mount -t tmpfs on {}: {} {}",
            dir.path().display(),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
        Some(Tmpfs { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg(self.dir.path())
            .status();
    }
}

#[test]
fn the_active_segment_is_preallocated_in_steps_not_whole() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        segment_bytes: 1 << 20,
        preallocate_step_bytes: 64 << 10,
        ..small_config()
    };
    let path = dir.path().to_path_buf();
    run(async move {
        let log = open(&path, config.clone(), cache()).await;
        let mut batch = make_batch(4, 100, 1_000, 1);
        log.append(&mut batch, Acks::Durable).await.unwrap();
        assert_eq!(
            log_file_len(&path, 0),
            64 << 10,
            "an idle partition holds one step"
        );
        // Grow past the first step: the reservation follows the data.
        while log.size_bytes() < 100 << 10 {
            let mut batch = make_batch(8, 1000, 2_000, 2);
            log.append(&mut batch, Acks::Durable).await.unwrap();
        }
        assert_eq!(log_file_len(&path, 0), 128 << 10);
        log.close().await.unwrap();
        // Reopening keeps the data and reserves one step past it.
        let log = open(&path, config, cache()).await;
        assert_eq!(log_file_len(&path, 0), 128 << 10);
        log.close().await.unwrap();
    });
}

/// A segment file that cannot be deleted stops retention there (no gap on disk), and the next
/// pass deletes it and the rest.
#[test]
fn a_failed_retention_delete_leaves_no_gap_and_is_retried() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    let retention = Retention {
        bytes: Some(40 * 1024),
        ms: None,
    };
    run(async move {
        let log = open(&path, small_config(), cache()).await;
        fill(&log, 150, 0).await;
        log.close().await.unwrap();
        let bases = log.segment_base_offsets();
        assert!(bases.len() >= 4);
        // The oldest segment's file becomes a non-empty directory: unlink fails (EISDIR).
        let oldest = segment_path(&path, bases[0], LOG_SUFFIX);
        fs::remove_file(&oldest).unwrap();
        fs::create_dir(&oldest).unwrap();
        fs::write(oldest.join("pin"), b"x").unwrap();
        let error = log.apply_retention(0, retention).await.unwrap_err();
        assert!(
            error.to_string().contains("deleting an expired segment"),
            "{error}"
        );
        let live_start = log.log_start_offset();
        assert!(live_start >= bases[2], "at least two segments expired");
        // Nothing newer than the undeletable one was deleted: no gap on disk.
        let expired: Vec<i64> = bases.iter().copied().filter(|b| *b < live_start).collect();
        for base in &expired[1..] {
            assert!(segment_path(&path, *base, LOG_SUFFIX).exists(), "{base}");
        }
        // Healed, the next pass deletes the leftovers and nothing live.
        fs::remove_dir_all(&oldest).unwrap();
        let report = log.apply_retention(0, retention).await.unwrap();
        assert_eq!(report.segments_deleted, expired.len());
        for base in &bases {
            let exists = segment_path(&path, *base, LOG_SUFFIX).exists();
            assert_eq!(exists, *base >= live_start, "{base}");
        }
        assert_eq!(log.log_start_offset(), live_start);
        let read = read_all(&log, live_start, 1 << 20).await;
        assert_eq!(read.first().unwrap().0, live_start);
    });
}

/// A log whose topic was deleted is retired: a retention pass that still holds it leaves its
/// directory alone, because a new topic of the same name may already have its own segments of
/// the same names there.
#[test]
fn retention_leaves_the_files_of_a_retired_log_alone() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    run(async move {
        let log = open(&path, small_config(), cache()).await;
        fill(&log, 150, 0).await;
        log.wait_for_offset(log.next_offset() - 1).await;
        log.close().await.unwrap();
        let before = log.segment_base_offsets();
        assert!(before.len() >= 4);
        log.retire();
        let everything = Retention {
            bytes: Some(1),
            ms: None,
        };
        let report = log.apply_retention(0, everything).await.unwrap();
        assert_eq!(report.segments_deleted, 0);
        assert_eq!(log.segment_base_offsets(), before);
        for base in before {
            assert!(
                log_file_len(&path, base) > 0,
                "segment {base} is still there"
            );
        }
    });
}

/// Kafka's format allows batches without timestamps (-1, as clients that set none send).
/// Retention by age cannot read such a segment's age from its batches, so it goes by when the
/// segment was last written, as Kafka does (the file's last modification): a segment written a
/// moment ago is kept for `retention.ms`, before and after a restart, and goes after it.
#[test]
fn retention_by_age_keeps_fresh_segments_without_timestamps() {
    const HOUR_MS: i64 = 3_600_000;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    let retention = Retention {
        ms: Some(HOUR_MS as u64),
        bytes: None,
    };
    let now_ms = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64
    };
    let first_path = path.clone();
    let bases = run(async move {
        let log = open(&first_path, small_config(), cache()).await;
        for at in 0..150 {
            let mut batch = make_batch(1, 500, -1, at);
            log.append(&mut batch, Acks::Leader).await.unwrap();
        }
        log.close().await.unwrap();
        let bases = log.segment_base_offsets();
        assert!(bases.len() >= 3, "{bases:?}");
        let report = log.apply_retention(now_ms(), retention).await.unwrap();
        assert_eq!(report.segments_deleted, 0, "written just now");
        assert_eq!(log.log_start_offset(), 0);
        bases
    });
    run(async move {
        let log = open(&path, small_config(), cache()).await;
        assert_eq!(log.segment_base_offsets(), bases);
        let report = log.apply_retention(now_ms(), retention).await.unwrap();
        assert_eq!(report.segments_deleted, 0, "written just now, reopened");
        assert_eq!(log.log_start_offset(), 0);
        // Past retention every closed segment goes.
        let report = log
            .apply_retention(now_ms() + 2 * HOUR_MS, retention)
            .await
            .unwrap();
        assert_eq!(report.segments_deleted, bases.len() - 1);
        assert_eq!(log.log_start_offset(), *bases.last().unwrap());
        log.close().await.unwrap();
    });
}

/// The age of an active segment whose batches carry no timestamp (-1) is not taken as their
/// -1 after a restart, which would roll a new segment at the first append after every start;
/// like Kafka, it goes by the time the segment was written instead.
#[test]
fn a_restart_does_not_roll_a_segment_without_timestamps_by_age() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    let first_path = path.clone();
    run(async move {
        let log = open(&first_path, small_config(), cache()).await;
        let mut batch = make_batch(1, 100, -1, 0);
        log.append(&mut batch, Acks::Durable).await.unwrap();
        log.close().await.unwrap();
    });
    run(async move {
        let log = open(&path, small_config(), cache()).await;
        let mut batch = make_batch(1, 100, -1, 1);
        let info = log.append(&mut batch, Acks::Durable).await.unwrap();
        assert_eq!(info.base_offset, 1);
        assert_eq!(
            log.segment_base_offsets(),
            vec![0],
            "no roll: the segment is new"
        );
        assert_eq!(log.stats().rolls, 0);
        log.close().await.unwrap();
    });
}
