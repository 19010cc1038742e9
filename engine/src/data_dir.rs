//! The data directory and its lock.
//!
//! Layout: `<data>/.lock` (held with flock while a server runs), `<data>/<topic>/topic.toml`
//! (the topic's metadata) and `<data>/<topic>/<partition>/` (the partition's segments).
//! Startup-only: everything here uses blocking std::fs before the shards serve.

use std::fs;
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

/// Errors opening the data directory.
#[derive(Debug, thiserror::Error)]
pub enum DataDirError {
    /// Another process holds the lock.
    #[error(
        "data directory {0} is in use by another ringlog server (lock file {0}/.lock is held)"
    )]
    Locked(PathBuf),
    /// The path exists and is not a directory.
    #[error("data directory {0} exists and is not a directory")]
    NotADirectory(PathBuf),
    /// The directory cannot be created or opened.
    #[error("cannot open data directory {path}: {source}")]
    Io {
        /// The directory.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
}

/// An opened, locked data directory. The lock is released when this drops.
#[derive(Debug)]
pub struct DataDir {
    path: PathBuf,
    _lock: fs::File,
}

impl DataDir {
    /// Creates `path` if needed and takes its lock, refusing when another server holds it.
    pub fn open(path: &Path) -> Result<DataDir, DataDirError> {
        let io_error = |source| DataDirError::Io {
            path: path.to_path_buf(),
            source,
        };
        if path.exists() && !path.is_dir() {
            // create_dir_all would only say "File exists".
            return Err(DataDirError::NotADirectory(path.to_path_buf()));
        }
        fs::create_dir_all(path).map_err(io_error)?;
        let path = path.canonicalize().map_err(io_error)?;
        let lock = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(path.join(".lock"))
            .map_err(io_error)?;
        // SAFETY: plain syscall on a descriptor we own.
        let rc = unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            let error = io::Error::last_os_error();
            if error.raw_os_error() == Some(libc::EWOULDBLOCK) {
                return Err(DataDirError::Locked(path));
            }
            return Err(io_error(error));
        }
        Ok(DataDir { path, _lock: lock })
    }

    /// The directory's canonical path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Directory of a topic.
    pub fn topic_dir(&self, topic: &str) -> PathBuf {
        self.path.join(topic)
    }

    /// Directory of one partition.
    pub fn partition_dir(&self, topic: &str, partition: u32) -> PathBuf {
        self.topic_dir(topic).join(partition.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_is_not_taken_for_a_data_directory() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("afile");
        fs::write(&file, b"").unwrap();
        let error = DataDir::open(&file).unwrap_err();
        assert!(matches!(error, DataDirError::NotADirectory(_)), "{error}");
        assert!(error.to_string().ends_with("exists and is not a directory"));
    }

    #[test]
    fn second_open_is_refused_until_the_first_closes() {
        let dir = tempfile::tempdir().unwrap();
        let first = DataDir::open(dir.path()).unwrap();
        let error = DataDir::open(dir.path()).unwrap_err();
        assert!(matches!(error, DataDirError::Locked(_)), "{error}");
        assert!(error
            .to_string()
            .contains("in use by another ringlog server"));
        drop(first);
        DataDir::open(dir.path()).unwrap();
    }
}
