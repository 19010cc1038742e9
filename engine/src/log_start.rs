//! The log start offset a DeleteRecords request set, persisted beside the segments.
//!
//! Retention moves a partition's start by whole segments, which the segment files themselves
//! record. DeleteRecords moves it to any offset, inside a segment, so that offset is kept in
//! its own file: `log-start-offset` in the partition directory, the offset in decimal followed
//! by a newline, replaced atomically (written to `log-start-offset.tmp`, synced, renamed, the
//! directory synced). At open the start is the later of the oldest segment's base offset and
//! this file's offset (clamped to the log's end); a missing or unreadable file means the
//! oldest segment's base, as before any DeleteRecords.

use std::io;
use std::path::Path;

use crate::reactor::fs;

/// Name of the file in the partition directory.
pub const LOG_START_FILE_NAME: &str = "log-start-offset";

/// Name of the temporary file of an interrupted [`store`].
pub(crate) const LOG_START_TEMPORARY_NAME: &str = "log-start-offset.tmp";

/// The persisted start offset of the partition in `dir`, if one was stored and reads well.
/// Blocking: called once, when the partition is opened (as the segments are listed).
pub(crate) fn load(dir: &Path) -> Option<i64> {
    let text = match std::fs::read_to_string(dir.join(LOG_START_FILE_NAME)) {
        Ok(text) => text,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return None,
        Err(error) => {
            tracing::warn!(dir = %dir.display(), %error, "cannot read the log start offset; starting at the oldest segment");
            return None;
        }
    };
    match text.trim_end().parse::<i64>() {
        Ok(offset) if offset >= 0 => Some(offset),
        _ => {
            tracing::warn!(dir = %dir.display(), "malformed log start offset file; starting at the oldest segment");
            None
        }
    }
}

/// Stores `offset` as the start of the partition in `dir`, durably, replacing the previous.
pub(crate) async fn store(dir: &Path, offset: i64) -> io::Result<()> {
    assert!(offset >= 0, "offsets are not negative");
    let text = format!("{offset}\n");
    fs::write_file_atomic(&dir.join(LOG_START_FILE_NAME), text.as_bytes()).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reactor::{block_on, RingConfig};

    #[test]
    fn stored_offsets_load_and_bad_files_are_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_path_buf();
        assert_eq!(load(&path), None);
        block_on(RingConfig::default(), async move {
            store(&path, 42).await.unwrap();
            assert_eq!(load(&path), Some(42));
            store(&path, 7_000_000_000).await.unwrap();
            assert_eq!(load(&path), Some(7_000_000_000));
        })
        .unwrap();
        for bad in ["", "x\n", "-5\n", "12 13\n"] {
            std::fs::write(dir.path().join(LOG_START_FILE_NAME), bad).unwrap();
            assert_eq!(load(dir.path()), None, "{bad:?}");
        }
    }
}
