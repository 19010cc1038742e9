//! The disk reference: what this machine's disk does through io_uring with no log server around.
//!
//! Three measurements on files in the run's data directory, each bounded in bytes and time:
//! - write: O_DIRECT sequential write of a preallocated (fallocate) file in 1 MiB aligned blocks
//!   with [`QUEUE_DEPTH`] in flight, ending with one fdatasync (inside the timing, since ringlog's
//!   durable writes end with one too);
//! - read: O_DIRECT sequential read of that file back, same blocks and depth;
//! - commits: one write of the scenario's batch size linked (IOSQE_IO_LINK) to an fdatasync,
//!   one commit at a time, into a fresh preallocated file, as ringlog's durable acks do.
//!
//! If the file system refuses O_DIRECT (EINVAL, e.g. tmpfs on older kernels), the reference
//! falls back to buffered I/O and says so: reads may then come from the page cache.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use io_uring::{cqueue, opcode, squeue, types};

use super::aligned_buf::{AlignedBuf, DIRECT_ALIGN_BYTES};
use super::ring::{Ring, RingSetup};
use super::ReferenceError;
use crate::latency::LatencyHistogram;
use crate::throughput::ThroughputTimeline;
use crate::units::{mb_per_s, per_s};

/// Size of each sequential write and read (1 MiB, aligned).
pub const BLOCK_BYTES: usize = 1 << 20;
/// Sequential operations kept in flight.
pub const QUEUE_DEPTH: usize = 8;
/// Longest a sequential write or read phase submits before it stops early.
pub const TRANSFER_TIME_MAX: Duration = Duration::from_millis(1000);
/// How long the commit phase runs.
pub const COMMIT_TIME_MAX: Duration = Duration::from_millis(1000);

const SEQUENTIAL_FILE_NAME: &str = "ringlog-reference-sequential.dat";
const COMMIT_FILE_NAME: &str = "ringlog-reference-commits.dat";
/// user_data of the lone fdatasync after the sequential write (block slots use 0..QUEUE_DEPTH).
const SYNC_USER_DATA: u64 = u64::MAX;
const COMMIT_WRITE_USER_DATA: u64 = 0;
const COMMIT_SYNC_USER_DATA: u64 = 1;

/// What to measure and where.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiskConfig {
    /// Directory for the (temporary) reference files.
    pub dir: PathBuf,
    /// Bytes of the sequential file (rounded down to whole blocks, at least one).
    pub file_bytes: u64,
    /// Bytes written per commit (rounded up to 4 KiB with O_DIRECT).
    pub commit_bytes: u32,
    /// Time limit of the write and of the read phase.
    pub transfer_time_max: Duration,
    /// Length of the commit phase.
    pub commit_time_max: Duration,
}

impl DiskConfig {
    /// The standard limits for a file of `file_bytes` in `dir` and commits of `commit_bytes`.
    pub fn new(dir: PathBuf, file_bytes: u64, commit_bytes: u32) -> Self {
        Self {
            dir,
            file_bytes,
            commit_bytes,
            transfer_time_max: TRANSFER_TIME_MAX,
            commit_time_max: COMMIT_TIME_MAX,
        }
    }
}

/// How the reference files were opened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IoMode {
    /// O_DIRECT: the page cache is bypassed.
    Direct,
    /// Buffered: O_DIRECT was refused.
    Buffered,
}

impl IoMode {
    /// Words for the report.
    pub fn describe(self) -> &'static str {
        match self {
            IoMode::Direct => "O_DIRECT",
            IoMode::Buffered => "buffered (O_DIRECT refused)",
        }
    }
}

/// Bytes moved in a sequential phase, how long it took, and how it went over time.
#[derive(Clone, Debug)]
pub struct Transfer {
    /// Bytes written or read.
    pub bytes: u64,
    /// Seconds from the first submission to the last completion (for writes: of the final
    /// fdatasync).
    pub seconds: f64,
    /// Seconds the final fdatasync of a write took (0 for reads): a large value means the
    /// device (or the host of a virtual disk) was caching the writes.
    pub sync_seconds: f64,
    /// Bytes completed per 100 ms.
    pub timeline: ThroughputTimeline,
}

impl Transfer {
    /// MB/s (10^6 bytes).
    pub fn mb_per_s(&self) -> f64 {
        mb_per_s(self.bytes, self.seconds)
    }
}

/// The write + fdatasync commit measurement.
#[derive(Clone, Debug)]
pub struct Commits {
    /// Commits completed.
    pub count: u64,
    /// Bytes written per commit (after alignment).
    pub write_bytes: u32,
    /// Seconds the phase ran.
    pub seconds: f64,
    /// Latency of each commit, from submission to the fdatasync's completion.
    pub latency: LatencyHistogram,
    /// Latency of each commit's write alone, from submission until its completion was seen
    /// (an upper bound when both completions arrive together). Records become visible to
    /// ringlog's consumers once written, so this is the floor of end-to-end latency.
    pub write_latency: LatencyHistogram,
}

impl Commits {
    /// Commits per second.
    pub fn per_s(&self) -> f64 {
        per_s(self.count, self.seconds)
    }
}

/// The disk reference's results.
#[derive(Clone, Debug)]
pub struct DiskReference {
    /// O_DIRECT or the buffered fallback.
    pub io_mode: IoMode,
    /// Whether fallocate preallocated the files.
    pub preallocated: bool,
    /// How the io_uring was set up.
    pub ring_setup: RingSetup,
    /// Sequential write.
    pub write: Transfer,
    /// Sequential read.
    pub read: Transfer,
    /// Write + fdatasync commits.
    pub commits: Commits,
    /// Anything the reader should know (fallbacks), one line each.
    pub notes: Vec<String>,
}

impl DiskReference {
    /// Sequential write MB/s.
    pub fn write_mb_per_s(&self) -> f64 {
        self.write.mb_per_s()
    }

    /// Sequential read MB/s.
    pub fn read_mb_per_s(&self) -> f64 {
        self.read.mb_per_s()
    }

    /// Commits per second.
    pub fn commits_per_s(&self) -> f64 {
        self.commits.per_s()
    }
}

/// Measures the disk reference, with O_DIRECT where the file system allows it.
pub fn measure(config: &DiskConfig) -> Result<DiskReference, ReferenceError> {
    match measure_with(config, IoMode::Direct) {
        Err(error) if error.raw_os_error() == Some(libc::EINVAL) => {
            let mut reference = measure_with(config, IoMode::Buffered)?;
            reference.notes.insert(
                0,
                format!(
                    "O_DIRECT refused under {} ({error}): buffered I/O instead, reads may come from the page cache",
                    config.dir.display()
                ),
            );
            Ok(reference)
        }
        other => other,
    }
}

/// Measures all three phases with files opened in `mode`.
fn measure_with(config: &DiskConfig, mode: IoMode) -> Result<DiskReference, ReferenceError> {
    let mut notes = Vec::new();
    let blocks = (config.file_bytes / BLOCK_BYTES as u64).max(1);
    let file_bytes = blocks * BLOCK_BYTES as u64;
    let buffers = (0..QUEUE_DEPTH)
        .map(|_| AlignedBuf::new(BLOCK_BYTES))
        .collect();
    let mut ring = Ring::new(2 * QUEUE_DEPTH as u32, buffers)
        .map_err(|error| ReferenceError::io("io_uring setup", error))?;
    let ring_setup = ring.setup();

    let sequential = DataFile::create(&config.dir.join(SEQUENTIAL_FILE_NAME), mode)?;
    let preallocated = sequential.preallocate(file_bytes)?;
    if !preallocated {
        notes.push("fallocate not supported here: reference files are not preallocated".into());
    }
    let write = transfer(
        &mut ring,
        &sequential,
        Direction::Write,
        file_bytes,
        config.transfer_time_max,
    )?;
    if mode == IoMode::Buffered {
        // Evict what we just wrote so the read at least tries to reach the disk.
        sequential.drop_page_cache();
    }
    let read = transfer(
        &mut ring,
        &sequential,
        Direction::Read,
        write.bytes,
        config.transfer_time_max,
    )?;
    drop(sequential);

    let commit_file = DataFile::create(&config.dir.join(COMMIT_FILE_NAME), mode)?;
    commit_file.preallocate(file_bytes)?;
    let commits = commit_loop(
        &commit_file,
        mode,
        config.commit_bytes,
        file_bytes,
        config.commit_time_max,
    )?;
    Ok(DiskReference {
        io_mode: mode,
        preallocated,
        ring_setup,
        write,
        read,
        commits,
        notes,
    })
}

/// A reference data file, removed when dropped.
struct DataFile {
    file: File,
    path: PathBuf,
}

impl DataFile {
    /// Creates (truncating) `path`, with O_DIRECT in [`IoMode::Direct`].
    fn create(path: &Path, mode: IoMode) -> Result<DataFile, ReferenceError> {
        let flags = match mode {
            IoMode::Direct => libc::O_DIRECT,
            IoMode::Buffered => 0,
        };
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .custom_flags(flags)
            .open(path)
            .map_err(|error| ReferenceError::io(format!("open {}", path.display()), error))?;
        Ok(DataFile {
            file,
            path: path.to_path_buf(),
        })
    }

    fn fd(&self) -> types::Fd {
        types::Fd(self.file.as_raw_fd())
    }

    /// Preallocates `bytes`; false where the file system does not support fallocate.
    fn preallocate(&self, bytes: u64) -> Result<bool, ReferenceError> {
        let length = libc::off_t::try_from(bytes).map_err(|_| {
            ReferenceError::io("fallocate", io::Error::from_raw_os_error(libc::EFBIG))
        })?;
        // SAFETY: fallocate on a file descriptor we own; no memory is passed.
        let rc = unsafe { libc::fallocate(self.file.as_raw_fd(), 0, 0, length) };
        if rc == 0 {
            return Ok(true);
        }
        let error = io::Error::last_os_error();
        if error.raw_os_error() == Some(libc::EOPNOTSUPP) {
            return Ok(false);
        }
        Err(ReferenceError::io(
            format!("fallocate {} bytes for {}", bytes, self.path.display()),
            error,
        ))
    }

    /// Asks the kernel to drop this file's cached pages (best effort).
    fn drop_page_cache(&self) {
        // SAFETY: fadvise on a file descriptor we own; no memory is passed.
        let _advice_is_best_effort =
            unsafe { libc::posix_fadvise(self.file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    }
}

impl Drop for DataFile {
    fn drop(&mut self) {
        // Best effort: the run's temporary directory is removed afterwards anyway.
        let _ = fs::remove_file(&self.path);
    }
}

/// Direction of a sequential phase.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Direction {
    Write,
    Read,
}

impl Direction {
    fn name(self) -> &'static str {
        match self {
            Direction::Write => "O_DIRECT write",
            Direction::Read => "O_DIRECT read",
        }
    }
}

/// One block operation in flight.
#[derive(Clone, Copy, Debug)]
struct Pending {
    offset: u64,
    len_bytes: u32,
}

/// Reads or writes `total_bytes` sequentially in whole blocks, one block per ring buffer in
/// flight, stopping early after `time_max`. Writes end with an fdatasync inside the timing.
fn transfer(
    ring: &mut Ring,
    file: &DataFile,
    direction: Direction,
    total_bytes: u64,
    time_max: Duration,
) -> Result<Transfer, ReferenceError> {
    let mut slots: Vec<Option<Pending>> = vec![None; ring.buffer_count()];
    let mut completions = Vec::with_capacity(2 * slots.len());
    let mut timeline = ThroughputTimeline::with_expected_duration(time_max);
    let mut failure: Option<ReferenceError> = None;
    let mut next_offset = 0u64;
    let mut done_bytes = 0u64;
    let start = Instant::now();
    loop {
        let may_submit = failure.is_none() && start.elapsed() < time_max;
        for (index, slot) in slots.iter_mut().enumerate() {
            if !may_submit || next_offset >= total_bytes || slot.is_some() {
                continue;
            }
            let Some((pointer, buffer_bytes)) = ring.buffer_raw(index) else {
                continue;
            };
            let len_bytes =
                buffer_bytes.min(usize::try_from(total_bytes - next_offset).unwrap_or(usize::MAX));
            // Buffers are BLOCK_BYTES long, so the length fits in u32.
            let len_bytes = u32::try_from(len_bytes).unwrap_or(u32::MAX);
            let entry = block_operation(direction, file.fd(), pointer, len_bytes, next_offset)
                .user_data(index as u64);
            // SAFETY: `pointer` is the start of ring buffer `index` and `len_bytes` is within it;
            // the ring owns the buffer until the operation completes.
            unsafe { ring.push(&entry) }
                .map_err(|error| ReferenceError::io("io_uring push", error))?;
            *slot = Some(Pending {
                offset: next_offset,
                len_bytes,
            });
            next_offset += u64::from(len_bytes);
        }
        if ring.in_flight() == 0 {
            break;
        }
        ring.submit_and_wait(1)
            .map_err(|error| ReferenceError::io("io_uring submit", error))?;
        ring.reap(&mut completions);
        for completion in &completions {
            let slot = usize::try_from(completion.user_data())
                .ok()
                .and_then(|index| slots.get_mut(index));
            let Some(pending) = slot.and_then(Option::take) else {
                debug_assert!(false, "completion for an unknown slot");
                continue;
            };
            match check_full(
                completion,
                pending.len_bytes,
                direction.name(),
                pending.offset,
            ) {
                Ok(()) => {
                    done_bytes += u64::from(pending.len_bytes);
                    timeline.record(start.elapsed(), u64::from(pending.len_bytes));
                }
                Err(error) => {
                    failure.get_or_insert(error);
                }
            }
        }
    }
    if let Some(error) = failure {
        return Err(error);
    }
    let sync_started = Instant::now();
    if direction == Direction::Write {
        fdatasync(ring, file)?;
    }
    Ok(Transfer {
        bytes: done_bytes,
        seconds: start.elapsed().as_secs_f64(),
        sync_seconds: sync_started.elapsed().as_secs_f64(),
        timeline,
    })
}

/// A read or write of one block at `offset`.
fn block_operation(
    direction: Direction,
    fd: types::Fd,
    pointer: *mut u8,
    len_bytes: u32,
    offset: u64,
) -> squeue::Entry {
    match direction {
        Direction::Write => opcode::Write::new(fd, pointer, len_bytes)
            .offset(offset)
            .build(),
        Direction::Read => opcode::Read::new(fd, pointer, len_bytes)
            .offset(offset)
            .build(),
    }
}

/// Ok if the completion transferred exactly `asked_bytes`.
fn check_full(
    completion: &cqueue::Entry,
    asked_bytes: u32,
    what: &str,
    offset: u64,
) -> Result<(), ReferenceError> {
    let result = completion.result();
    if result < 0 {
        return Err(ReferenceError::io(
            format!("{what} at offset {offset}"),
            io::Error::from_raw_os_error(-result),
        ));
    }
    if result.unsigned_abs() != asked_bytes {
        return Err(ReferenceError::Short {
            context: format!("{what} at offset {offset}"),
            done_bytes: u64::from(result.unsigned_abs()),
            asked_bytes: u64::from(asked_bytes),
        });
    }
    Ok(())
}

/// One fdatasync through the ring, waited for.
fn fdatasync(ring: &mut Ring, file: &DataFile) -> Result<(), ReferenceError> {
    let entry = opcode::Fsync::new(file.fd())
        .flags(types::FsyncFlags::DATASYNC)
        .build()
        .user_data(SYNC_USER_DATA);
    // SAFETY: fsync names no memory.
    unsafe { ring.push(&entry) }.map_err(|error| ReferenceError::io("io_uring push", error))?;
    let mut completions = Vec::with_capacity(1);
    while ring.in_flight() > 0 {
        ring.submit_and_wait(1)
            .map_err(|error| ReferenceError::io("io_uring submit", error))?;
        ring.reap(&mut completions);
        for completion in &completions {
            if completion.result() < 0 {
                return Err(ReferenceError::io(
                    format!("fdatasync {}", file.path.display()),
                    io::Error::from_raw_os_error(-completion.result()),
                ));
            }
        }
    }
    Ok(())
}

/// Commits (write of `commit_bytes` linked to fdatasync), one at a time, for `time_max` or
/// until the file is full, whichever comes first (always at least one).
fn commit_loop(
    file: &DataFile,
    mode: IoMode,
    commit_bytes: u32,
    file_bytes: u64,
    time_max: Duration,
) -> Result<Commits, ReferenceError> {
    let write_bytes = match mode {
        // O_DIRECT writes whole aligned blocks; ringlog rewrites its partial tail block the same way.
        IoMode::Direct => commit_bytes
            .max(1)
            .next_multiple_of(DIRECT_ALIGN_BYTES as u32),
        IoMode::Buffered => commit_bytes.max(1),
    };
    let mut ring = Ring::new(4, vec![AlignedBuf::new(write_bytes as usize)])
        .map_err(|error| ReferenceError::io("io_uring setup", error))?;
    let mut latency = LatencyHistogram::new();
    let mut write_latency = LatencyHistogram::new();
    let mut completions = Vec::with_capacity(2);
    let mut offset = 0u64;
    let mut count = 0u64;
    let start = Instant::now();
    while count == 0
        || (start.elapsed() < time_max && offset + u64::from(write_bytes) <= file_bytes)
    {
        let Some((pointer, _)) = ring.buffer_raw(0) else {
            break;
        };
        let began = Instant::now();
        let write = opcode::Write::new(file.fd(), pointer, write_bytes)
            .offset(offset)
            .build()
            .flags(squeue::Flags::IO_LINK)
            .user_data(COMMIT_WRITE_USER_DATA);
        let sync = opcode::Fsync::new(file.fd())
            .flags(types::FsyncFlags::DATASYNC)
            .build()
            .user_data(COMMIT_SYNC_USER_DATA);
        // SAFETY: the write reads `write_bytes` from ring buffer 0, which is that long and owned
        // by the ring until completion; the fsync names no memory.
        unsafe {
            ring.push(&write)
                .and_then(|()| ring.push(&sync))
                .map_err(|error| ReferenceError::io("io_uring push", error))?;
        }
        let mut failure = None;
        while ring.in_flight() > 0 {
            ring.submit_and_wait(1)
                .map_err(|error| ReferenceError::io("io_uring submit", error))?;
            ring.reap(&mut completions);
            for completion in &completions {
                let outcome = if completion.user_data() == COMMIT_WRITE_USER_DATA {
                    write_latency.record(began.elapsed());
                    check_full(completion, write_bytes, "commit write", offset)
                } else {
                    check_full(completion, 0, "commit fdatasync", offset)
                };
                if let Err(error) = outcome {
                    failure.get_or_insert(error);
                }
            }
        }
        if let Some(error) = failure {
            return Err(error);
        }
        latency.record(began.elapsed());
        count += 1;
        offset += u64::from(write_bytes);
    }
    Ok(Commits {
        count,
        write_bytes,
        seconds: start.elapsed().as_secs_f64(),
        latency,
        write_latency,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small_config(dir: &Path) -> DiskConfig {
        DiskConfig {
            dir: dir.to_path_buf(),
            file_bytes: 8 * BLOCK_BYTES as u64 + 123,
            commit_bytes: 1000,
            transfer_time_max: Duration::from_secs(5),
            commit_time_max: Duration::from_millis(50),
        }
    }

    fn check_sane(reference: &DiskReference) {
        assert_eq!(
            reference.write.bytes,
            8 * BLOCK_BYTES as u64,
            "whole blocks only"
        );
        assert_eq!(reference.read.bytes, reference.write.bytes);
        assert!(reference.write_mb_per_s() > 0.0 && reference.read_mb_per_s() > 0.0);
        assert!(reference.commits.count >= 1);
        assert_eq!(reference.commits.latency.count(), reference.commits.count);
        assert_eq!(
            reference.commits.write_latency.count(),
            reference.commits.count
        );
        assert!(reference.commits_per_s() > 0.0);
    }

    #[test]
    fn direct_io_on_the_working_file_system() {
        let dir = tempfile::tempdir_in(".").unwrap();
        let reference = measure(&small_config(dir.path())).unwrap();
        check_sane(&reference);
        assert_eq!(
            reference.commits.write_bytes, 4096,
            "aligned up for O_DIRECT"
        );
        assert_eq!(
            fs::read_dir(dir.path()).unwrap().count(),
            0,
            "reference files are removed"
        );
    }

    #[test]
    fn buffered_mode_works_too() {
        let dir = tempfile::tempdir_in(".").unwrap();
        let reference = measure_with(&small_config(dir.path()), IoMode::Buffered).unwrap();
        check_sane(&reference);
        assert_eq!(reference.commits.write_bytes, 1000);
    }

    #[test]
    fn missing_directory_is_a_clear_error() {
        let error = measure(&small_config(Path::new("/no/such/dir"))).unwrap_err();
        assert!(error.to_string().contains("/no/such/dir"), "{error}");
    }
}
