//! Test-only power-loss simulation for the files written through [`super::fs`].
//!
//! A test installs a [`PowerLoss`] plan on its reactor thread: "the power fails during the
//! N-th write". Until then every write to a file is journaled (the bytes it overwrites and the
//! file's length before it) and every completed fdatasync of a file forgets that file's
//! journal, because its writes are now on stable storage. At the N-th write the machine
//! "loses power":
//!
//! 1. every journaled write (everything after each file's last completed fdatasync) is undone,
//!    newest first, as if the page cache had never reached the disk;
//! 2. the write in progress is torn: a random prefix of it (possibly nothing) reaches the disk;
//! 3. from then on every file operation fails with EIO, so nothing else changes on disk.
//!
//! The test then ends its reactor, drops the plan, and opens the files again to check what
//! recovery makes of them. Directory operations (create, rename, unlink) are treated as
//! durable at once; the log syncs its directory after each of them anyway.
//!
//! Files are inspected and repaired through a second, buffered descriptor
//! (`/proc/self/fd/N`), so O_DIRECT alignment rules do not apply to the journal.

use std::cell::RefCell;
use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::os::fd::RawFd;
use std::os::unix::fs::{FileExt, MetadataExt};

/// Identity of a file across descriptors.
type Inode = (u64, u64);

/// How to undo one change.
#[derive(Debug)]
enum Undo {
    /// A write at `offset`: the bytes it replaced and the length before it.
    Write {
        offset: u64,
        old: Vec<u8>,
        old_len: u64,
    },
    /// A truncation: the length before it and the bytes it cut off.
    Truncate {
        old_len: u64,
        cut: Vec<u8>,
        new_len: u64,
    },
}

/// One file touched since its last sync.
#[derive(Debug)]
struct Journal {
    file: File,
    undo: Vec<Undo>,
}

/// The installed plan of one thread.
#[derive(Debug)]
struct Plan {
    crash_at_write: u64,
    writes_seen: u64,
    crashed: bool,
    rng: u64,
    journals: HashMap<Inode, Journal>,
    torn_bytes: Option<(usize, usize)>,
}

thread_local! {
    static PLAN: RefCell<Option<Plan>> = const { RefCell::new(None) };
}

/// A power-loss plan for the current thread; uninstalled when dropped.
#[derive(Debug)]
pub(crate) struct PowerLoss {
    _private: (),
}

impl PowerLoss {
    /// Fails the power during write number `crash_at_write` (1-based) on this thread; `seed`
    /// chooses where that write is torn.
    pub(crate) fn install(crash_at_write: u64, seed: u64) -> PowerLoss {
        PLAN.with(|plan| {
            *plan.borrow_mut() = Some(Plan {
                crash_at_write: crash_at_write.max(1),
                writes_seen: 0,
                crashed: false,
                rng: seed ^ 0x9E37_79B9_7F4A_7C15,
                journals: HashMap::new(),
                torn_bytes: None,
            })
        });
        PowerLoss { _private: () }
    }

    /// Whether the power failed.
    pub(crate) fn crashed(&self) -> bool {
        with_plan(|plan| plan.crashed).unwrap_or(false)
    }

    /// `(kept, of)` bytes of the torn write, once the power failed.
    pub(crate) fn torn_bytes(&self) -> Option<(usize, usize)> {
        with_plan(|plan| plan.torn_bytes).flatten()
    }
}

impl Drop for PowerLoss {
    fn drop(&mut self) {
        PLAN.with(|plan| plan.borrow_mut().take());
    }
}

fn with_plan<T>(f: impl FnOnce(&mut Plan) -> T) -> Option<T> {
    PLAN.with(|plan| plan.borrow_mut().as_mut().map(f))
}

fn dead() -> io::Error {
    io::Error::from_raw_os_error(libc::EIO)
}

/// Fails the power now, between writes (nothing is torn): every unsynced write is lost and
/// every later file operation fails. Does nothing without a plan or after the power failed.
pub(crate) fn cut_now() {
    with_plan(|plan| {
        if !plan.crashed {
            // A failure to restore a file shows up as a failed check afterwards.
            let _ = plan.fail_power(-1, 0, &[]);
        }
    });
}

/// Any file operation: fails once the power is gone.
pub(crate) fn check_alive() -> io::Result<()> {
    match with_plan(|plan| plan.crashed) {
        Some(true) => Err(dead()),
        _ => Ok(()),
    }
}

/// Before `data` is written at `offset` of `fd`: journal it, or fail the power now.
pub(crate) fn before_write(fd: RawFd, offset: u64, data: &[u8]) -> io::Result<()> {
    with_plan(|plan| plan.before_write(fd, offset, data)).unwrap_or(Ok(()))
}

/// Before `fd` is truncated to `len`.
pub(crate) fn before_truncate(fd: RawFd, len: u64) -> io::Result<()> {
    with_plan(|plan| plan.before_truncate(fd, len)).unwrap_or(Ok(()))
}

/// An fdatasync of `fd` completed: its journaled writes are durable.
pub(crate) fn after_sync(fd: RawFd) {
    with_plan(|plan| {
        if !plan.crashed {
            if let Ok(inode) = inode_of(fd) {
                plan.journals.remove(&inode);
            }
        }
    });
}

impl Plan {
    fn before_write(&mut self, fd: RawFd, offset: u64, data: &[u8]) -> io::Result<()> {
        if self.crashed {
            return Err(dead());
        }
        self.writes_seen += 1;
        if self.writes_seen >= self.crash_at_write {
            self.fail_power(fd, offset, data)?;
            return Err(dead());
        }
        let journal = self.journal(fd)?;
        let old_len = journal.file.metadata()?.len();
        let end = (offset + data.len() as u64).min(old_len);
        let mut old = vec![0; end.saturating_sub(offset) as usize];
        journal.file.read_exact_at(&mut old, offset)?;
        journal.undo.push(Undo::Write {
            offset,
            old,
            old_len,
        });
        Ok(())
    }

    fn before_truncate(&mut self, fd: RawFd, new_len: u64) -> io::Result<()> {
        if self.crashed {
            return Err(dead());
        }
        let journal = self.journal(fd)?;
        let old_len = journal.file.metadata()?.len();
        let mut cut = vec![0; old_len.saturating_sub(new_len) as usize];
        journal.file.read_exact_at(&mut cut, new_len)?;
        journal.undo.push(Undo::Truncate {
            old_len,
            cut,
            new_len,
        });
        Ok(())
    }

    fn journal(&mut self, fd: RawFd) -> io::Result<&mut Journal> {
        let inode = inode_of(fd)?;
        match self.journals.entry(inode) {
            Entry::Occupied(entry) => Ok(entry.into_mut()),
            Entry::Vacant(entry) => {
                let file = std::fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(format!("/proc/self/fd/{fd}"))?;
                Ok(entry.insert(Journal {
                    file,
                    undo: Vec::new(),
                }))
            }
        }
    }

    /// Undoes every unsynced change and tears the write in progress (none when `fd` is
    /// negative).
    fn fail_power(&mut self, fd: RawFd, offset: u64, data: &[u8]) -> io::Result<()> {
        self.crashed = true;
        for journal in self.journals.values_mut() {
            for undo in journal.undo.drain(..).rev() {
                match undo {
                    Undo::Write {
                        offset,
                        old,
                        old_len,
                    } => {
                        journal.file.write_all_at(&old, offset)?;
                        if journal.file.metadata()?.len() > old_len {
                            journal.file.set_len(old_len)?;
                        }
                    }
                    Undo::Truncate {
                        old_len,
                        cut,
                        new_len,
                    } => {
                        journal.file.set_len(old_len)?;
                        journal.file.write_all_at(&cut, new_len)?;
                    }
                }
            }
        }
        if fd < 0 {
            // Cut between writes: nothing in progress to tear.
            self.torn_bytes = Some((0, 0));
            return Ok(());
        }
        let kept = (self.next_random() % (data.len() as u64 + 1)) as usize;
        self.torn_bytes = Some((kept, data.len()));
        if kept > 0 {
            let file = std::fs::OpenOptions::new()
                .write(true)
                .open(format!("/proc/self/fd/{fd}"))?;
            file.write_all_at(&data[..kept], offset)?;
        }
        Ok(())
    }

    /// splitmix64.
    fn next_random(&mut self) -> u64 {
        self.rng = self.rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

fn inode_of(fd: RawFd) -> io::Result<Inode> {
    let meta = std::fs::metadata(format!("/proc/self/fd/{fd}"))?;
    Ok((meta.dev(), meta.ino()))
}
