//! The metadata string a Kafka client commits with an offset (Kafka Streams and others keep
//! per-partition state there) and gets back from OffsetFetch. The native protocol commits
//! none.

use thiserror::Error;

/// Longest metadata kept with a committed offset, in bytes: Kafka's default
/// `offset.metadata.max.bytes`. Kafka counts UTF-16 units; bytes bound what the state file
/// holds, and are the same count for the ASCII clients put there.
pub(crate) const COMMIT_METADATA_BYTES_MAX: usize = 4096;

// The state record stores the length as a u16.
const _: () = assert!(COMMIT_METADATA_BYTES_MAX <= u16::MAX as usize);

/// Non-empty commit metadata within [`COMMIT_METADATA_BYTES_MAX`]. Empty metadata is `None`
/// wherever metadata is optional, so a commit without any allocates nothing for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CommitMetadata(Box<str>);

/// Metadata over [`COMMIT_METADATA_BYTES_MAX`]: Kafka's OFFSET_METADATA_TOO_LARGE.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[error("commit metadata of {len} bytes is over the {COMMIT_METADATA_BYTES_MAX}-byte limit")]
pub(crate) struct MetadataTooLarge {
    /// Bytes of the refused metadata.
    pub(crate) len: usize,
}

impl CommitMetadata {
    /// The metadata to keep for `text`: `None` when it is empty.
    pub(crate) fn new(text: &str) -> Result<Option<CommitMetadata>, MetadataTooLarge> {
        Self::check(text.len())?;
        if text.is_empty() {
            return Ok(None);
        }
        Ok(Some(CommitMetadata(text.into())))
    }

    /// Whether metadata of `len` bytes may be kept.
    pub(crate) fn check(len: usize) -> Result<(), MetadataTooLarge> {
        if len > COMMIT_METADATA_BYTES_MAX {
            return Err(MetadataTooLarge { len });
        }
        Ok(())
    }

    /// The text.
    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }

    /// The text, without a copy.
    pub(crate) fn into_string(self) -> String {
        self.0.into()
    }
}

/// The text of optional metadata: empty when there is none.
pub(crate) fn text(metadata: Option<&CommitMetadata>) -> &str {
    metadata.map_or("", CommitMetadata::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_is_none_and_the_bound_is_inclusive() {
        assert_eq!(CommitMetadata::new(""), Ok(None));
        let full = "x".repeat(COMMIT_METADATA_BYTES_MAX);
        let kept = CommitMetadata::new(&full).unwrap().unwrap();
        assert_eq!(kept.as_str(), full);
        assert_eq!(text(Some(&kept)), full);
        assert_eq!(text(None), "");
        let over = "x".repeat(COMMIT_METADATA_BYTES_MAX + 1);
        assert_eq!(
            CommitMetadata::new(&over),
            Err(MetadataTooLarge {
                len: COMMIT_METADATA_BYTES_MAX + 1
            })
        );
    }
}
