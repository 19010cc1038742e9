//! A durable, append-only record file for group state (committed offsets, share-partition
//! state), one per partition directory, owned by the partition's shard.
//!
//! File layout (all integers little-endian):
//!
//! ```text
//! "RLGS" u32 version            8-byte file header
//! u32 payload_len | u32 crc32c(payload) | payload     one frame per record, repeated
//! ```
//!
//! - Appends are copied into a pending buffer and written by one flusher task per file, each
//!   write linked with an fdatasync in the ring. While one write is in flight, later appends
//!   gather and the next write covers them all (group commit). [`StateStore::append_with`]
//!   returns a [`Durable`] future that resolves once the record is on stable storage; callers
//!   that do not need to wait (lease expiries) simply drop it.
//! - [`StateStore::open`] reads every whole frame, stopping at the first torn or corrupt one (a
//!   crash during an append); the owner replays them and, when the file had a torn tail or
//!   is past [`StateStore::wants_compaction`], hands back a snapshot with
//!   [`StateStore::replace`], which the flusher writes to a new file (temporary file,
//!   fdatasync, rename, directory fsync) before appending again. A clean, small file is
//!   appended to as it is, so that opening thousands of partitions writes nothing.
//! - The file is open only while a write is in flight, and a shard's stores have at most
//!   [`FILES_OPEN_MAX`] open at once (see [`OpenFiles`]): a shard owning 10,000 partitions
//!   with group state would otherwise hold 10,000 more descriptors than their segments need,
//!   and past the process's limit it could not even restart. Each flush waits for a turn,
//!   opens the file, appends at the end it knows, syncs and closes it.
//! - Everything goes through the shard's ring; nothing here blocks.

use std::cell::{Cell, RefCell};
use std::future::{poll_fn, Future};
use std::io;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use ringlog_engine::reactor::turns::Turns;
use ringlog_engine::reactor::{self, fs};

/// Name of the state file inside a partition directory.
pub(crate) const STATE_FILE_NAME: &str = "groups.state";
/// File magic.
const MAGIC: [u8; 4] = *b"RLGS";
/// File format version.
const VERSION: u32 = 1;
/// Bytes of the file header.
const FILE_HEADER_BYTES: usize = 8;
/// Bytes of a frame header (length and CRC).
const FRAME_HEADER_BYTES: usize = 8;
/// Largest record payload; a frame claiming more is corrupt.
pub(crate) const RECORD_BYTES_MAX: usize = 1 << 20;
/// Appends refused (the caller answers Throttled) while this much waits to be written.
const PENDING_BYTES_MAX: usize = 16 << 20;
/// The file is compacted once it is larger than this and than four snapshots.
const COMPACT_BYTES_MIN: u64 = 4 << 20;
/// Largest state file read at open (a file this large was never written by a healthy server).
const FILE_BYTES_MAX: u64 = 1 << 30;
/// Bytes read per read operation at open.
const READ_CHUNK_BYTES: usize = 1 << 20;
/// State files a shard's stores have open at once (each write opens and closes its file).
pub(crate) const FILES_OPEN_MAX: usize = 64;

/// Why a state operation failed.
#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum StoreError {
    /// Reading or writing the file failed.
    #[error("{context}: {message}")]
    Io {
        /// What was being done.
        context: &'static str,
        /// The OS error.
        message: String,
        /// Whether the disk is full.
        disk_full: bool,
    },
    /// The file does not start with the state file header.
    #[error("{0} is not a ringlog state file")]
    NotStateFile(String),
    /// A record is larger than [`RECORD_BYTES_MAX`].
    #[error("state record of {0} bytes exceeds the limit")]
    RecordTooLarge(usize),
    /// Too many bytes wait to be written.
    #[error("too many group state writes pending; slow down")]
    Backlog,
    /// The store was closed.
    #[error("group state store is closed")]
    Closed,
}

impl StoreError {
    fn io(context: &'static str, error: &io::Error) -> StoreError {
        StoreError::Io {
            context,
            message: error.to_string(),
            disk_full: error.raw_os_error() == Some(libc::ENOSPC),
        }
    }
}

/// Records read back at open: `bytes[range]` for each range, oldest first.
#[derive(Debug, Default)]
pub(crate) struct Recovered {
    bytes: Vec<u8>,
    records: Vec<Range<usize>>,
    /// Bytes after the last whole frame (a torn or corrupt tail), dropped by compaction.
    pub(crate) dropped_bytes: usize,
    /// Whether a file existed.
    pub(crate) existed: bool,
}

impl Recovered {
    /// The payloads, oldest first.
    pub(crate) fn records(&self) -> impl Iterator<Item = &[u8]> {
        self.records
            .iter()
            .filter_map(|range| self.bytes.get(range.clone()))
    }
}

/// The turns of one shard's stores to have their file open, at most [`FILES_OPEN_MAX`] at
/// once, first come first served. Single-threaded.
#[derive(Debug, Default)]
pub(crate) struct OpenFiles {
    open: Cell<usize>,
    /// Flushers waiting for a turn.
    turns: RefCell<Turns>,
}

impl OpenFiles {
    /// Waits for a turn; the file may stay open while the returned guard lives.
    async fn turn(self: &Rc<Self>) -> OpenFile {
        let mut waiting = Waiting {
            files: self,
            ticket: None,
        };
        poll_fn(|cx| {
            let room = self.open.get() < FILES_OPEN_MAX;
            if self
                .turns
                .borrow_mut()
                .take(room, &mut waiting.ticket, cx.waker())
            {
                self.open.set(self.open.get() + 1);
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
        .await;
        OpenFile {
            files: Rc::clone(self),
        }
    }
}

/// A flusher's place in line while it waits; leaving the line if it is dropped there.
struct Waiting<'a> {
    files: &'a OpenFiles,
    ticket: Option<u64>,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        if let Some(ticket) = self.ticket.take() {
            self.files.turns.borrow_mut().leave(ticket);
        }
    }
}

/// A store's turn to have its file open; the next waiter is called when it ends.
struct OpenFile {
    files: Rc<OpenFiles>,
}

impl Drop for OpenFile {
    fn drop(&mut self) {
        let files = &self.files;
        assert!(files.open.get() > 0);
        files.open.set(files.open.get() - 1);
        files.turns.borrow_mut().call_next();
    }
}

/// A durable record file; see the module docs.
pub(crate) struct StateStore {
    inner: Rc<Inner>,
}

struct Inner {
    path: PathBuf,
    /// The shard's turns to have a state file open.
    files: Rc<OpenFiles>,
    /// Where the next append goes; 0 until the first write creates the file (a rewrite).
    write_offset: Cell<u64>,
    /// Framed records not yet handed to the kernel.
    pending: RefCell<Vec<u8>>,
    /// `pending` starts with a full snapshot: write a new file instead of appending.
    rewrite: Cell<bool>,
    /// Sequence number of the last record added to `pending`.
    appended_seq: Cell<u64>,
    /// Every record up to this sequence number is on stable storage.
    durable_seq: Cell<u64>,
    /// Records up to this sequence number were in a write that failed (reported to waiters).
    failed_seq: Cell<u64>,
    last_error: RefCell<Option<StoreError>>,
    /// Size of the file right after the last rewrite.
    snapshot_bytes: Cell<u64>,
    /// New work since the flusher last looked.
    kicked: Cell<bool>,
    closing: Cell<bool>,
    finished: Cell<bool>,
    flusher: RefCell<Option<Waker>>,
    waiters: RefCell<Vec<Waker>>,
}

impl StateStore {
    /// Reads `path` (absent is fine: an empty store whose file is created by the first
    /// write) and starts the flusher. Call [`StateStore::replace`] with the replayed state to
    /// compact.
    pub(crate) async fn open(
        path: PathBuf,
        files: Rc<OpenFiles>,
    ) -> Result<(StateStore, Recovered), StoreError> {
        let options = fs::OpenOptions {
            read_only: true,
            ..fs::OpenOptions::default()
        };
        let recovered = match fs::File::open(&path, options).await {
            Ok(file) => read_frames(&path, &file).await?,
            Err(error) if error.kind() == io::ErrorKind::NotFound => Recovered::default(),
            Err(error) => return Err(StoreError::io("open group state file", &error)),
        };
        if recovered.dropped_bytes > 0 {
            tracing::warn!(
                path = %path.display(),
                dropped_bytes = recovered.dropped_bytes,
                "group state file ends with a torn or corrupt record; dropping it"
            );
        }
        // A clean file is appended to where its last frame ends; one with a torn tail is
        // rewritten by the owner's snapshot before anything else is written.
        let write_offset = if recovered.existed && recovered.dropped_bytes == 0 {
            recovered.bytes.len() as u64
        } else {
            0
        };
        let inner = Rc::new(Inner {
            path,
            files,
            write_offset: Cell::new(write_offset),
            pending: RefCell::new(Vec::new()),
            rewrite: Cell::new(false),
            appended_seq: Cell::new(0),
            durable_seq: Cell::new(0),
            failed_seq: Cell::new(0),
            last_error: RefCell::new(None),
            snapshot_bytes: Cell::new(0),
            kicked: Cell::new(false),
            closing: Cell::new(false),
            finished: Cell::new(false),
            flusher: RefCell::new(None),
            waiters: RefCell::new(Vec::new()),
        });
        // Detached: ends once the store is closed and its last bytes are written.
        drop(reactor::spawn(run_flusher(Rc::clone(&inner))));
        Ok((StateStore { inner }, recovered))
    }

    /// Appends one record whose payload `write` puts at the end of the buffer it is given.
    /// The record is ordered after every earlier append; the returned future resolves once it
    /// is durable (drop it to not wait).
    pub(crate) fn append_with(
        &self,
        write: impl FnOnce(&mut Vec<u8>),
    ) -> Result<Durable, StoreError> {
        let inner = &self.inner;
        if inner.closing.get() {
            return Err(StoreError::Closed);
        }
        if inner.pending.borrow().len() > PENDING_BYTES_MAX {
            return Err(StoreError::Backlog);
        }
        push_frame(&mut inner.pending.borrow_mut(), write)?;
        Ok(inner.added())
    }

    /// Replaces the whole file with `snapshot` (framed records, see [`push_frame`]), which
    /// must hold the effect of every record appended so far. Resolves once the new file is
    /// durable.
    pub(crate) fn replace(&self, snapshot: Vec<u8>) -> Result<Durable, StoreError> {
        let inner = &self.inner;
        if inner.closing.get() {
            return Err(StoreError::Closed);
        }
        // Whatever was pending is covered by the snapshot.
        *inner.pending.borrow_mut() = snapshot;
        inner.rewrite.set(true);
        Ok(inner.added())
    }

    /// True while a snapshot waits to replace the file.
    #[cfg(test)]
    pub(crate) fn rewriting(&self) -> bool {
        self.inner.rewrite.get()
    }

    /// True when the file has grown enough that a snapshot would be much smaller.
    pub(crate) fn wants_compaction(&self) -> bool {
        let inner = &self.inner;
        let size = inner.write_offset.get() + inner.pending.borrow().len() as u64;
        !inner.rewrite.get() && size > COMPACT_BYTES_MIN.max(4 * inner.snapshot_bytes.get())
    }

    /// Writes what is pending and stops the flusher; appends fail from now on.
    pub(crate) async fn close(&self) -> Result<(), StoreError> {
        let inner = Rc::clone(&self.inner);
        inner.closing.set(true);
        inner.kick();
        let target = inner.appended_seq.get();
        let outcome = Durable { inner, seq: target }.await;
        match outcome {
            Err(StoreError::Closed) if self.inner.durable_seq.get() >= target => Ok(()),
            other => other,
        }
    }

    /// The file's path.
    pub(crate) fn path(&self) -> &Path {
        &self.inner.path
    }
}

impl Drop for StateStore {
    fn drop(&mut self) {
        // The flusher writes what is left, then exits.
        self.inner.closing.set(true);
        self.inner.kick();
    }
}

impl Inner {
    fn added(self: &Rc<Self>) -> Durable {
        let seq = self.appended_seq.get() + 1;
        self.appended_seq.set(seq);
        self.kick();
        Durable {
            inner: Rc::clone(self),
            seq,
        }
    }

    fn kick(&self) {
        self.kicked.set(true);
        if let Some(waker) = self.flusher.borrow_mut().take() {
            waker.wake();
        }
    }

    fn wake_waiters(&self) {
        let waiters = std::mem::take(&mut *self.waiters.borrow_mut());
        for waker in waiters {
            waker.wake();
        }
    }

    /// Writes `bytes` (framed records) as a whole new file.
    async fn rewrite_file(&self, bytes: &[u8]) -> Result<(), StoreError> {
        let mut content = Vec::with_capacity(FILE_HEADER_BYTES + bytes.len());
        content.extend_from_slice(&MAGIC);
        content.extend_from_slice(&VERSION.to_le_bytes());
        content.extend_from_slice(bytes);
        fs::write_file_atomic(&self.path, &content)
            .await
            .map_err(|error| StoreError::io("write group state file", &error))?;
        self.write_offset.set(content.len() as u64);
        self.snapshot_bytes.set(content.len() as u64);
        Ok(())
    }

    /// Appends `bytes` at the end of the file with a linked fdatasync; the file is open for
    /// this write only.
    async fn append_file(&self, bytes: Vec<u8>) -> (Result<(), StoreError>, Vec<u8>) {
        let file = match fs::File::open(&self.path, fs::OpenOptions::default()).await {
            Ok(file) => file,
            Err(error) => return (Err(StoreError::io("open group state file", &error)), bytes),
        };
        let len = bytes.len();
        let offset = self.write_offset.get();
        let (result, bytes) = file.write_all_at_and_sync(bytes, 0..len, offset).await;
        match result {
            Ok(()) => {
                self.write_offset.set(offset + len as u64);
                (Ok(()), bytes)
            }
            Err(error) => (
                Err(StoreError::io("append to group state file", &error)),
                bytes,
            ),
        }
    }
}

/// Writes pending records until the store is closed and drained.
async fn run_flusher(inner: Rc<Inner>) {
    let mut spare: Vec<u8> = Vec::new();
    loop {
        poll_fn(|cx| {
            if inner.kicked.get() || inner.closing.get() {
                Poll::Ready(())
            } else {
                *inner.flusher.borrow_mut() = Some(cx.waker().clone());
                Poll::Pending
            }
        })
        .await;
        inner.kicked.set(false);
        // An empty snapshot is still a rewrite (of a file with only its header).
        if inner.pending.borrow().is_empty() && !inner.rewrite.get() {
            if inner.closing.get() {
                break;
            }
            continue;
        }
        let target_seq = inner.appended_seq.get();
        let rewrite = inner.rewrite.replace(false);
        spare.clear();
        let bytes = std::mem::replace(&mut *inner.pending.borrow_mut(), spare);
        let open_file = inner.files.turn().await;
        let (result, bytes) = if rewrite || inner.write_offset.get() == 0 {
            let result = inner.rewrite_file(&bytes).await;
            (result, bytes)
        } else {
            inner.append_file(bytes).await
        };
        drop(open_file);
        match result {
            Ok(()) => {
                inner.durable_seq.set(target_seq);
                spare = bytes;
            }
            Err(error) => {
                tracing::error!(path = %inner.path.display(), %error, "group state write failed");
                inner.failed_seq.set(target_seq);
                *inner.last_error.borrow_mut() = Some(error);
                // Keep the bytes for the next attempt (made when new work arrives), in front of
                // anything appended meanwhile; a failed rewrite stays a rewrite. But a snapshot
                // that replaced what was pending during the write covers these bytes too: put
                // in front of it they would replay records the snapshot has moved past (a
                // deleted group's offsets, say).
                let mut pending = inner.pending.borrow_mut();
                if !inner.rewrite.get() {
                    let later = std::mem::replace(&mut *pending, bytes);
                    pending.extend_from_slice(&later);
                    inner.rewrite.set(rewrite);
                }
                spare = Vec::new();
                if inner.closing.get() {
                    drop(pending);
                    inner.wake_waiters();
                    break;
                }
            }
        }
        inner.wake_waiters();
    }
    inner.finished.set(true);
    inner.wake_waiters();
}

/// Resolves once a record is durable, or with the error of the write that carried it.
pub(crate) struct Durable {
    inner: Rc<Inner>,
    seq: u64,
}

impl Future for Durable {
    type Output = Result<(), StoreError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let inner = &self.inner;
        if inner.durable_seq.get() >= self.seq {
            return Poll::Ready(Ok(()));
        }
        if inner.failed_seq.get() >= self.seq {
            let error = inner.last_error.borrow().clone();
            return Poll::Ready(Err(error.unwrap_or(StoreError::Closed)));
        }
        if inner.finished.get() {
            return Poll::Ready(Err(StoreError::Closed));
        }
        inner.waiters.borrow_mut().push(cx.waker().clone());
        Poll::Pending
    }
}

/// Appends one frame whose payload `write` produces to `out`.
pub(crate) fn push_frame(
    out: &mut Vec<u8>,
    write: impl FnOnce(&mut Vec<u8>),
) -> Result<(), StoreError> {
    let start = out.len();
    out.extend_from_slice(&[0; FRAME_HEADER_BYTES]);
    write(out);
    let payload_len = out.len() - start - FRAME_HEADER_BYTES;
    if payload_len > RECORD_BYTES_MAX {
        out.truncate(start);
        return Err(StoreError::RecordTooLarge(payload_len));
    }
    let crc = crc32c::crc32c(&out[start + FRAME_HEADER_BYTES..]);
    out[start..start + 4].copy_from_slice(&(payload_len as u32).to_le_bytes());
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
    Ok(())
}

/// Reads the whole file and splits it into frames, stopping at the first bad one.
async fn read_frames(path: &Path, file: &fs::File) -> Result<Recovered, StoreError> {
    let len = file
        .len()
        .await
        .map_err(|error| StoreError::io("size of group state file", &error))?;
    if len > FILE_BYTES_MAX {
        return Err(StoreError::Io {
            context: "open group state file",
            message: format!(
                "{} is {len} bytes, more than a state file can be",
                path.display()
            ),
            disk_full: false,
        });
    }
    let mut bytes: Vec<u8> = Vec::with_capacity(len as usize);
    while (bytes.len() as u64) < len {
        let want = READ_CHUNK_BYTES.min(len as usize - bytes.len());
        let (read, chunk) = file
            .read_at(Vec::with_capacity(want), bytes.len() as u64)
            .await;
        let read = read.map_err(|error| StoreError::io("read group state file", &error))?;
        if read == 0 {
            break;
        }
        bytes.extend_from_slice(&chunk);
    }
    parse_frames(path, bytes)
}

/// Splits file bytes into frames.
fn parse_frames(path: &Path, bytes: Vec<u8>) -> Result<Recovered, StoreError> {
    let mut recovered = Recovered {
        existed: true,
        ..Recovered::default()
    };
    if bytes.is_empty() {
        // A file cut off before its header reached the disk holds nothing yet.
        return Ok(recovered);
    }
    let header_ok = bytes.get(..4) == Some(&MAGIC[..])
        && bytes
            .get(4..8)
            .map(|v| u32::from_le_bytes([v[0], v[1], v[2], v[3]]))
            == Some(VERSION);
    if !header_ok {
        return Err(StoreError::NotStateFile(path.display().to_string()));
    }
    let mut at = FILE_HEADER_BYTES;
    while let Some(header) = bytes.get(at..at + FRAME_HEADER_BYTES) {
        let payload_len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
        let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
        let start = at + FRAME_HEADER_BYTES;
        let Some(payload) = bytes.get(start..start.saturating_add(payload_len)) else {
            break;
        };
        if payload_len > RECORD_BYTES_MAX || crc32c::crc32c(payload) != crc {
            break;
        }
        recovered.records.push(start..start + payload_len);
        at = start + payload_len;
    }
    recovered.dropped_bytes = bytes.len() - at;
    recovered.bytes = bytes;
    Ok(recovered)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringlog_engine::reactor::{block_on, RingConfig};

    /// This process's open descriptors of `path`.
    fn descriptors_of(path: &Path) -> usize {
        std::fs::read_dir("/proc/self/fd")
            .unwrap()
            .filter_map(|entry| std::fs::read_link(entry.ok()?.path()).ok())
            .filter(|target| target == path)
            .count()
    }

    fn payloads(recovered: &Recovered) -> Vec<Vec<u8>> {
        recovered.records().map(<[u8]>::to_vec).collect()
    }

    #[test]
    fn appends_survive_reopen_and_torn_tails_are_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(STATE_FILE_NAME);
        let check = path.clone();
        block_on(RingConfig::default(), async move {
            let (store, recovered) = StateStore::open(path.clone(), Rc::default()).await.unwrap();
            assert!(!recovered.existed);
            let first = store.append_with(|b| b.extend_from_slice(b"one")).unwrap();
            let second = store.append_with(|b| b.extend_from_slice(b"two")).unwrap();
            first.await.unwrap();
            second.await.unwrap();
            store
                .append_with(|b| b.extend_from_slice(b"three"))
                .unwrap()
                .await
                .unwrap();
            store.close().await.unwrap();
        })
        .unwrap();
        // A crash in the middle of an append leaves half a frame.
        let mut bytes = std::fs::read(&check).unwrap();
        bytes.extend_from_slice(&[9, 0, 0, 0, 1, 2]);
        std::fs::write(&check, &bytes).unwrap();
        let (path, check_open) = (check.clone(), check.clone());
        block_on(RingConfig::default(), async move {
            let (store, recovered) = StateStore::open(path, Rc::default()).await.unwrap();
            assert_eq!(
                payloads(&recovered),
                [b"one".to_vec(), b"two".to_vec(), b"three".to_vec()]
            );
            assert_eq!(recovered.dropped_bytes, 6);
            // Compaction on open: the snapshot replaces everything.
            let mut snapshot = Vec::new();
            push_frame(&mut snapshot, |b| b.extend_from_slice(b"all")).unwrap();
            store.replace(snapshot).unwrap().await.unwrap();
            store
                .append_with(|b| b.extend_from_slice(b"after"))
                .unwrap()
                .await
                .unwrap();
            // Between writes the store holds no descriptor of its file.
            assert_eq!(descriptors_of(&check_open), 0);
            store.close().await.unwrap();
        })
        .unwrap();
        let path = check.clone();
        block_on(RingConfig::default(), async move {
            let (_store, recovered) = StateStore::open(path, Rc::default()).await.unwrap();
            assert_eq!(payloads(&recovered), [b"all".to_vec(), b"after".to_vec()]);
            assert_eq!(recovered.dropped_bytes, 0);
        })
        .unwrap();
    }

    #[test]
    fn a_snapshot_taken_during_a_failing_write_replaces_its_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(STATE_FILE_NAME);
        let check = path.clone();
        block_on(RingConfig::default(), async move {
            let (store, _) = StateStore::open(path.clone(), Rc::default()).await.unwrap();
            let append = |payload: &'static [u8]| {
                store.append_with(|b| b.extend_from_slice(payload)).unwrap()
            };
            append(b"first").await.unwrap();
            // A directory where the file was: every write fails until it goes.
            std::fs::remove_file(&path).unwrap();
            std::fs::create_dir(&path).unwrap();
            let failing = append(b"stale");
            // The flusher takes "stale" and starts writing it; while that write is in
            // flight, a snapshot covering it (and everything before) replaces what is pending.
            reactor::yield_now().await;
            let mut snapshot = Vec::new();
            push_frame(&mut snapshot, |b| b.extend_from_slice(b"snapshot")).unwrap();
            drop(store.replace(snapshot).unwrap());
            assert!(failing.await.is_err());
            std::fs::remove_dir(&path).unwrap();
            append(b"after").await.unwrap();
            store.close().await.unwrap();
        })
        .unwrap();
        block_on(RingConfig::default(), async move {
            let (_store, recovered) = StateStore::open(check, Rc::default()).await.unwrap();
            assert_eq!(
                payloads(&recovered),
                [b"snapshot".to_vec(), b"after".to_vec()]
            );
        })
        .unwrap();
    }

    #[test]
    fn corrupt_frames_stop_the_replay() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(STATE_FILE_NAME);
        let mut bytes = MAGIC.to_vec();
        bytes.extend_from_slice(&VERSION.to_le_bytes());
        push_frame(&mut bytes, |b| b.extend_from_slice(b"good")).unwrap();
        let bad_at = bytes.len();
        push_frame(&mut bytes, |b| b.extend_from_slice(b"flipped")).unwrap();
        push_frame(&mut bytes, |b| b.extend_from_slice(b"unreachable")).unwrap();
        bytes[bad_at + FRAME_HEADER_BYTES] ^= 0xff;
        let recovered = parse_frames(&path, bytes).unwrap();
        assert_eq!(payloads(&recovered), [b"good".to_vec()]);
        assert!(recovered.dropped_bytes > 0);
        assert!(matches!(
            parse_frames(&path, b"not a state file".to_vec()),
            Err(StoreError::NotStateFile(_))
        ));
        let huge = push_frame(&mut Vec::new(), |b| {
            b.extend(std::iter::repeat_n(0u8, RECORD_BYTES_MAX + 1))
        });
        assert!(matches!(huge, Err(StoreError::RecordTooLarge(_))));
    }

    #[test]
    fn a_shard_has_at_most_its_bound_of_state_files_open() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        block_on(RingConfig::default(), async move {
            let files: Rc<OpenFiles> = Rc::default();
            let mut stores = Vec::new();
            for index in 0..3 * FILES_OPEN_MAX {
                let path = root.join(format!("{index}.state"));
                stores.push(StateStore::open(path, Rc::clone(&files)).await.unwrap().0);
            }
            let durables: Vec<Durable> = stores
                .iter()
                .map(|store| {
                    store
                        .append_with(|b| b.extend_from_slice(b"offset"))
                        .unwrap()
                })
                .collect();
            // Every flusher has run once: the first ones hold turns, the rest wait.
            reactor::yield_now().await;
            assert!(files.open.get() <= FILES_OPEN_MAX, "{}", files.open.get());
            assert!(!files.turns.borrow().is_empty());
            for durable in durables {
                durable.await.unwrap();
            }
            for store in &stores {
                store.close().await.unwrap();
            }
            assert_eq!(files.open.get(), 0);
            assert_eq!(
                std::fs::read_dir(&root).unwrap().count(),
                3 * FILES_OPEN_MAX
            );
        })
        .unwrap();
    }

    #[test]
    fn compaction_threshold() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(STATE_FILE_NAME);
        block_on(RingConfig::default(), async move {
            let (store, _) = StateStore::open(path, Rc::default()).await.unwrap();
            assert!(!store.wants_compaction());
            let record = vec![7u8; 64 << 10];
            let mut last = None;
            for _ in 0..(COMPACT_BYTES_MIN as usize / record.len() + 2) {
                last = Some(store.append_with(|b| b.extend_from_slice(&record)).unwrap());
            }
            assert!(store.wants_compaction());
            store.replace(Vec::new()).unwrap().await.unwrap();
            last.unwrap().await.unwrap();
            assert!(!store.wants_compaction());
            store.close().await.unwrap();
        })
        .unwrap();
    }
}
