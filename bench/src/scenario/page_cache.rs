//! Dropping files from the kernel's page cache, so that a "cold" read really goes to the disk.
//!
//! Uses `posix_fadvise(POSIX_FADV_DONTNEED)` on each file: it affects only these files (no root
//! needed, nothing else on the machine loses its cache), and it drops clean pages only, which is
//! all a log server leaves behind after its files are synced and closed.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::PathBuf;

use super::ScenarioError;

/// Drops every page of `files` from the page cache; returns how many files were advised.
pub fn drop_from_page_cache(files: &[PathBuf]) -> Result<usize, ScenarioError> {
    for path in files {
        let file = File::open(path).map_err(|source| ScenarioError::Io {
            context: format!("open {} to drop it from the page cache", path.display()),
            source,
        })?;
        // SAFETY: `file` is an open descriptor for the duration of the call; fadvise only
        // reads its arguments.
        let rc = unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
        if rc != 0 {
            return Err(ScenarioError::Io {
                context: format!("posix_fadvise(DONTNEED) on {}", path.display()),
                source: std::io::Error::from_raw_os_error(rc),
            });
        }
    }
    Ok(files.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advising_files_works_and_a_missing_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("segment.log");
        std::fs::write(&path, vec![7u8; 64 * 1024]).unwrap();
        assert_eq!(drop_from_page_cache(&[path]).unwrap(), 1);
        let missing = dir.path().join("missing.log");
        assert!(drop_from_page_cache(&[missing]).is_err());
    }
}
