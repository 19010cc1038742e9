//! Files and directories through the ring.
//!
//! Data files are opened with O_DIRECT when the filesystem allows it; on filesystems that refuse
//! it (tmpfs, some overlays) they fall back to buffered I/O, said once in the log. Callers keep
//! offsets and lengths aligned either way, so both modes run the same code.
//!
//! In unit tests every operation first asks `power_loss` whether the simulated power
//! is still on (and journals writes for it); outside tests those checks do not exist.

use std::ffi::CString;
use std::io;
use std::ops::Range;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use io_uring::{opcode, types};

use super::op::{submit_chain, Op};
use crate::buffer::{IoBuf, IoBufMut};

/// How to open a file.
#[derive(Debug, Clone, Copy, Default)]
pub struct OpenOptions {
    /// Create the file when missing.
    pub create: bool,
    /// Bypass the page cache (O_DIRECT), falling back to buffered I/O where unsupported.
    pub direct: bool,
    /// Open for reading only.
    pub read_only: bool,
}

/// An open file whose I/O goes through this shard's ring.
#[derive(Debug)]
pub struct File {
    fd: OwnedFd,
    direct: bool,
}

static BUFFERED_FALLBACK_LOGGED: AtomicBool = AtomicBool::new(false);

fn path_to_cstring(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))
}

/// Fails once a unit test's simulated power loss happened; nothing outside tests.
fn power_check() -> io::Result<()> {
    #[cfg(test)]
    super::power_loss::check_alive()?;
    Ok(())
}

/// Tells a unit test's power-loss simulation that `fd` was synced.
fn power_synced(fd: RawFd) {
    #[cfg(test)]
    super::power_loss::after_sync(fd);
    let _ = fd;
}

/// Lets a unit test's power-loss simulation journal (or tear) a write.
fn power_before_write<B: IoBuf>(
    fd: RawFd,
    buf: &B,
    range: &Range<usize>,
    offset: u64,
) -> io::Result<()> {
    #[cfg(test)]
    {
        assert!(range.start <= range.end && range.end <= buf.bytes_init());
        // SAFETY: the range lies inside the buffer's initialised bytes (checked above), and
        // nothing writes the buffer while this shared slice lives.
        let data =
            unsafe { std::slice::from_raw_parts(buf.stable_ptr().add(range.start), range.len()) };
        super::power_loss::before_write(fd, offset, data)?;
    }
    let _ = (fd, buf, range, offset);
    Ok(())
}

async fn open_raw(path: &CString, flags: i32, mode: u32) -> io::Result<OwnedFd> {
    power_check()?;
    let entry = opcode::OpenAt::new(types::Fd(libc::AT_FDCWD), path.as_ptr())
        .flags(flags | libc::O_CLOEXEC)
        .mode(mode)
        .build();
    let (completion, _path) = Op::submit_returning_fd(entry, path.clone()).await;
    let fd = completion.into_io()? as RawFd;
    // SAFETY: the kernel returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

impl File {
    /// Opens `path`; with `direct`, tries O_DIRECT first and falls back to buffered I/O.
    pub async fn open(path: &Path, options: OpenOptions) -> io::Result<File> {
        let cpath = path_to_cstring(path)?;
        let mut flags = if options.read_only {
            libc::O_RDONLY
        } else {
            libc::O_RDWR
        };
        if options.create {
            flags |= libc::O_CREAT;
        }
        if options.direct {
            match open_raw(&cpath, flags | libc::O_DIRECT, 0o644).await {
                Ok(fd) => return Ok(File { fd, direct: true }),
                Err(error) if error.raw_os_error() == Some(libc::EINVAL) => {
                    if !BUFFERED_FALLBACK_LOGGED.swap(true, Ordering::Relaxed) {
                        tracing::warn!(
                            path = %path.display(),
                            "filesystem refuses O_DIRECT; using buffered writes with fdatasync"
                        );
                    }
                }
                Err(error) => return Err(error),
            }
        }
        let fd = open_raw(&cpath, flags, 0o644).await?;
        Ok(File { fd, direct: false })
    }

    /// Whether the file bypasses the page cache.
    pub fn is_direct(&self) -> bool {
        self.direct
    }

    /// The raw descriptor (for diagnostics and tests).
    pub fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Reads up to `buf.bytes_total()` bytes at `offset` into the start of `buf`.
    pub async fn read_at<B: IoBufMut + Unpin>(
        &self,
        mut buf: B,
        offset: u64,
    ) -> (io::Result<usize>, B) {
        if let Err(error) = power_check() {
            return (Err(error), buf);
        }
        let len = u32::try_from(buf.bytes_total()).unwrap_or(u32::MAX);
        let entry = opcode::Read::new(types::Fd(self.raw_fd()), buf.stable_mut_ptr(), len)
            .offset(offset)
            .build();
        let (completion, mut buf) = Op::submit(entry, buf).await;
        match completion.into_io() {
            Ok(read) => {
                // SAFETY: the kernel initialised `read` bytes at the start of the buffer.
                unsafe { buf.set_init(read as usize) };
                (Ok(read as usize), buf)
            }
            Err(error) => (Err(error), buf),
        }
    }

    /// Writes `buf[range]` at `offset`; may write less than asked.
    pub async fn write_at<B: IoBuf + Unpin>(
        &self,
        buf: B,
        range: Range<usize>,
        offset: u64,
    ) -> (io::Result<usize>, B) {
        if let Err(error) = power_before_write(self.raw_fd(), &buf, &range, offset) {
            return (Err(error), buf);
        }
        let entry = write_entry(self.raw_fd(), &buf, &range, offset);
        let (completion, buf) = Op::submit(entry, buf).await;
        (completion.into_io().map(|n| n as usize), buf)
    }

    /// Writes all of `buf[range]` at `offset`, retrying short writes.
    pub async fn write_all_at<B: IoBuf + Unpin>(
        &self,
        mut buf: B,
        mut range: Range<usize>,
        mut offset: u64,
    ) -> (io::Result<()>, B) {
        // Bounded: every round writes at least one byte or returns.
        while !range.is_empty() {
            let (result, returned) = self.write_at(buf, range.clone(), offset).await;
            buf = returned;
            match result {
                Ok(0) => return (Err(io::ErrorKind::WriteZero.into()), buf),
                Ok(written) => {
                    range.start += written;
                    offset += written as u64;
                }
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => return (Err(error), buf),
            }
        }
        (Ok(()), buf)
    }

    /// Writes `buf[range]` at `offset` and, linked in the ring, fdatasyncs: the data is on
    /// stable storage when this returns `Ok`.
    pub async fn write_all_at_and_sync<B: IoBuf + Unpin>(
        &self,
        buf: B,
        range: Range<usize>,
        offset: u64,
    ) -> (io::Result<()>, B) {
        if let Err(error) = power_before_write(self.raw_fd(), &buf, &range, offset) {
            return (Err(error), buf);
        }
        // The kernel looks a linked op's descriptor up only when the op starts, after the
        // write: were this future dropped and the file closed meanwhile, the number could name
        // another file or socket by then. The chain holds a duplicate of its own, closed once
        // both ops completed.
        let fd = match self.fd.try_clone() {
            Ok(fd) => fd,
            Err(error) => return (Err(error), buf),
        };
        let write = write_entry(fd.as_raw_fd(), &buf, &range, offset);
        let sync = opcode::Fsync::new(types::Fd(fd.as_raw_fd()))
            .flags(types::FsyncFlags::DATASYNC)
            .build();
        let (write_op, sync_op) = submit_chain(write, sync, (buf, fd)).await;
        let (write_done, ()) = write_op.await;
        let (sync_done, (buf, _fd)) = sync_op.await;
        let written = match write_done.into_io() {
            Ok(written) => written as usize,
            Err(error) => return (Err(error), buf),
        };
        if written == range.len() {
            let synced = sync_done.into_io().map(|_| ());
            if synced.is_ok() {
                power_synced(self.raw_fd());
            }
            return (synced, buf);
        }
        // A short write breaks the link (the sync was cancelled): finish the slow way.
        let rest = range.start + written..range.end;
        let (result, buf) = self.write_all_at(buf, rest, offset + written as u64).await;
        if let Err(error) = result {
            return (Err(error), buf);
        }
        (self.sync_data().await, buf)
    }

    /// fdatasync through the ring.
    pub async fn sync_data(&self) -> io::Result<()> {
        power_check()?;
        let entry = opcode::Fsync::new(types::Fd(self.raw_fd()))
            .flags(types::FsyncFlags::DATASYNC)
            .build();
        let (completion, ()) = Op::submit(entry, ()).await;
        completion.into_io()?;
        power_synced(self.raw_fd());
        Ok(())
    }

    /// Reserves `len` bytes at `offset` (fallocate mode 0), so appends later cannot fail for
    /// lack of space and do not change the file's metadata.
    pub async fn allocate(&self, offset: u64, len: u64) -> io::Result<()> {
        power_check()?;
        let entry = opcode::Fallocate::new(types::Fd(self.raw_fd()), len)
            .offset(offset)
            .build();
        let (completion, ()) = Op::submit(entry, ()).await;
        completion.into_io().map(|_| ())
    }

    /// Sets the file length.
    pub async fn truncate(&self, len: u64) -> io::Result<()> {
        #[cfg(test)]
        super::power_loss::before_truncate(self.raw_fd(), len)?;
        let entry = opcode::Ftruncate::new(types::Fd(self.raw_fd()), len).build();
        let (completion, ()) = Op::submit(entry, ()).await;
        match completion.into_io() {
            Ok(_) => Ok(()),
            // Kernels before 6.9 lack IORING_OP_FTRUNCATE; truncation is rare (recovery,
            // retention), so the plain syscall is acceptable there.
            Err(error) if error.raw_os_error() == Some(libc::EINVAL) => {
                let len = libc::off_t::try_from(len)
                    .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "length too large"))?;
                // SAFETY: plain syscall on a descriptor we own.
                let rc = unsafe { libc::ftruncate(self.raw_fd(), len) };
                if rc == 0 {
                    Ok(())
                } else {
                    Err(io::Error::last_os_error())
                }
            }
            Err(error) => Err(error),
        }
    }

    /// The file's current length in bytes.
    pub async fn len(&self) -> io::Result<u64> {
        let mut statx: Box<libc::statx> = Box::new(
            // SAFETY: statx is plain old data; all-zero is a valid value.
            unsafe { std::mem::zeroed() },
        );
        let empty = Box::new(*b"\0");
        let entry = opcode::Statx::new(
            types::Fd(self.raw_fd()),
            empty.as_ptr().cast(),
            (&mut *statx as *mut libc::statx).cast(),
        )
        .flags(libc::AT_EMPTY_PATH)
        .mask(libc::STATX_SIZE)
        .build();
        let (completion, (statx, _empty)) = Op::submit(entry, (statx, empty)).await;
        completion.into_io()?;
        Ok(statx.stx_size)
    }
}

fn write_entry<B: IoBuf>(
    fd: RawFd,
    buf: &B,
    range: &Range<usize>,
    offset: u64,
) -> io_uring::squeue::Entry {
    assert!(
        range.start <= range.end && range.end <= buf.bytes_init(),
        "write range outside the buffer"
    );
    let len = u32::try_from(range.len()).expect("one write is under 4 GiB");
    // SAFETY: the range lies inside the buffer's initialised bytes (checked above).
    let ptr = unsafe { buf.stable_ptr().add(range.start) };
    opcode::Write::new(types::Fd(fd), ptr, len)
        .offset(offset)
        .build()
}

/// Deletes a file.
pub async fn remove_file(path: &Path) -> io::Result<()> {
    unlink(path, 0).await
}

/// Deletes an empty directory.
pub async fn remove_dir(path: &Path) -> io::Result<()> {
    unlink(path, libc::AT_REMOVEDIR).await
}

async fn unlink(path: &Path, flags: i32) -> io::Result<()> {
    power_check()?;
    let cpath = path_to_cstring(path)?;
    let entry = opcode::UnlinkAt::new(types::Fd(libc::AT_FDCWD), cpath.as_ptr())
        .flags(flags)
        .build();
    let (completion, _path) = Op::submit(entry, cpath).await;
    completion.into_io().map(|_| ())
}

/// Creates a directory.
pub async fn create_dir(path: &Path) -> io::Result<()> {
    power_check()?;
    let cpath = path_to_cstring(path)?;
    let entry = opcode::MkDirAt::new(types::Fd(libc::AT_FDCWD), cpath.as_ptr())
        .mode(0o755)
        .build();
    let (completion, _path) = Op::submit(entry, cpath).await;
    completion.into_io().map(|_| ())
}

/// Renames `from` to `to`, replacing `to` atomically.
pub async fn rename(from: &Path, to: &Path) -> io::Result<()> {
    power_check()?;
    let (cfrom, cto) = (path_to_cstring(from)?, path_to_cstring(to)?);
    let entry = opcode::RenameAt::new(
        types::Fd(libc::AT_FDCWD),
        cfrom.as_ptr(),
        types::Fd(libc::AT_FDCWD),
        cto.as_ptr(),
    )
    .build();
    let (completion, _paths) = Op::submit(entry, (cfrom, cto)).await;
    completion.into_io().map(|_| ())
}

/// fsyncs a directory so that entries created, renamed or removed in it are durable.
pub async fn sync_dir(path: &Path) -> io::Result<()> {
    let cpath = path_to_cstring(path)?;
    let fd = open_raw(&cpath, libc::O_RDONLY | libc::O_DIRECTORY, 0).await?;
    let entry = opcode::Fsync::new(types::Fd(fd.as_raw_fd())).build();
    let (completion, _fd) = Op::submit(entry, fd).await;
    completion.into_io().map(|_| ())
}

/// Writes `bytes` to `path` durably: a temporary file, fdatasync, rename over `path`, fsync of
/// the directory. Readers see the old or the new content, never a mix.
pub async fn write_file_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = path
        .parent()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no parent"))?;
    let mut tmp_name = path.as_os_str().to_owned();
    tmp_name.push(".tmp");
    let tmp = std::path::PathBuf::from(tmp_name);
    let file = File::open(
        &tmp,
        OpenOptions {
            create: true,
            ..OpenOptions::default()
        },
    )
    .await?;
    file.truncate(0).await?;
    let (result, _) = file.write_all_at(bytes.to_vec(), 0..bytes.len(), 0).await;
    result?;
    file.sync_data().await?;
    drop(file);
    rename(&tmp, path).await?;
    sync_dir(dir).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::buffer::AlignedBuf;
    use crate::reactor::{block_on, RingConfig};

    #[test]
    fn direct_write_read_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data");
        block_on(RingConfig::default(), async move {
            let options = OpenOptions {
                create: true,
                direct: true,
                read_only: false,
            };
            let file = File::open(&path, options).await.unwrap();
            file.allocate(0, 1 << 20).await.unwrap();
            let mut buf = AlignedBuf::new(8192);
            buf.set_len(8192);
            buf.as_full_mut()[..5].copy_from_slice(b"hello");
            let (result, _buf) = file.write_all_at_and_sync(buf, 0..8192, 4096).await;
            result.unwrap();
            let (read, back) = file.read_at(AlignedBuf::new(4096), 4096).await;
            assert_eq!(read.unwrap(), 4096);
            assert_eq!(&back[..5], b"hello");
            assert_eq!(file.len().await.unwrap(), 1 << 20);
            file.truncate(12288).await.unwrap();
            assert_eq!(file.len().await.unwrap(), 12288);
        })
        .unwrap();
    }

    #[test]
    fn atomic_file_write_replaces_content() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("meta.toml");
        let check = path.clone();
        block_on(RingConfig::default(), async move {
            write_file_atomic(&path, b"first").await.unwrap();
            write_file_atomic(&path, b"second").await.unwrap();
        })
        .unwrap();
        assert_eq!(std::fs::read(check).unwrap(), b"second");
    }
}
