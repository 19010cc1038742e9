//! The records of a partition's group state file (payloads of
//! [`crate::server::state_store`] frames). All integers little-endian; a group name is a
//! `u16` length and its UTF-8 bytes.
//!
//! ```text
//! 1 Offset       group, i64 offset                     a consumer group's committed offset
//! 2 ShareStart   group, i64 start_offset               share partition: every record before
//!                                                      start_offset is done, the window is empty
//! 3 ShareStates  group, i64 first, i64 last,           share partition: records first..=last
//!                u8 state, u16 delivery_count           now have this state and count
//! 4 Forget       group                                 the group was deleted: its offset,
//!                                                      metadata and share partition here are
//!                                                      gone
//! 5 OffsetWithMetadata                                 a consumer group's committed offset
//!                group, i64 offset,                    with non-empty metadata (UTF-8, at most
//!                u16 len + bytes metadata              COMMIT_METADATA_BYTES_MAX bytes)
//! ```
//!
//! An offset with empty metadata is written as tag 1, so files of servers that knew no
//! metadata stay readable, and a tag 1 record clears the metadata of an earlier tag 5.
//!
//! Acquisitions are not recorded (KIP-932 treats Acquired as transient): after a restart an
//! acquired record is Available again with the delivery count last written for it.

use thiserror::Error;

use super::commit_metadata::{CommitMetadata, COMMIT_METADATA_BYTES_MAX};

const TAG_OFFSET: u8 = 1;
const TAG_SHARE_START: u8 = 2;
const TAG_SHARE_STATES: u8 = 3;
const TAG_FORGET: u8 = 4;
const TAG_OFFSET_WITH_METADATA: u8 = 5;

/// Durable state of a share-partition record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DurableState {
    /// May be delivered (again).
    Available,
    /// Processed; never delivered again.
    Acknowledged,
    /// Rejected or out of deliveries; never delivered again.
    Archived,
}

impl DurableState {
    fn to_wire(self) -> u8 {
        match self {
            DurableState::Available => 0,
            DurableState::Acknowledged => 1,
            DurableState::Archived => 2,
        }
    }

    fn from_wire(value: u8) -> Option<Self> {
        match value {
            0 => Some(DurableState::Available),
            1 => Some(DurableState::Acknowledged),
            2 => Some(DurableState::Archived),
            _ => None,
        }
    }
}

/// One record of the state file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StateRecord<'a> {
    /// A consumer group's next offset for this partition.
    Offset {
        /// Group name.
        group: &'a str,
        /// Next offset to consume.
        offset: i64,
        /// What the client committed with it; empty for none.
        metadata: &'a str,
    },
    /// A share partition restarts at `start_offset` with an empty window.
    ShareStart {
        /// Group name.
        group: &'a str,
        /// First record not yet done.
        start_offset: i64,
    },
    /// Share records `first..=last` have `state` and `delivery_count`.
    ShareStates {
        /// Group name.
        group: &'a str,
        /// First offset.
        first: i64,
        /// Last offset, inclusive.
        last: i64,
        /// The state.
        state: DurableState,
        /// Deliveries so far.
        delivery_count: u16,
    },
    /// The group was deleted: what the records before said about it no longer holds.
    Forget {
        /// Group name.
        group: &'a str,
    },
}

/// A payload that does not decode (a bug or a newer format): the replay stops there.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("undecodable group state record: {0}")]
pub(crate) struct RecordError(&'static str);

impl<'a> StateRecord<'a> {
    /// Appends the payload to `out`.
    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        match *self {
            StateRecord::Offset {
                group,
                offset,
                metadata,
            } => {
                let tag = if metadata.is_empty() {
                    TAG_OFFSET
                } else {
                    TAG_OFFSET_WITH_METADATA
                };
                out.push(tag);
                put_group(out, group);
                out.extend_from_slice(&offset.to_le_bytes());
                if !metadata.is_empty() {
                    put_metadata(out, metadata);
                }
            }
            StateRecord::ShareStart {
                group,
                start_offset,
            } => {
                out.push(TAG_SHARE_START);
                put_group(out, group);
                out.extend_from_slice(&start_offset.to_le_bytes());
            }
            StateRecord::ShareStates {
                group,
                first,
                last,
                state,
                delivery_count,
            } => {
                out.push(TAG_SHARE_STATES);
                put_group(out, group);
                out.extend_from_slice(&first.to_le_bytes());
                out.extend_from_slice(&last.to_le_bytes());
                out.push(state.to_wire());
                out.extend_from_slice(&delivery_count.to_le_bytes());
            }
            StateRecord::Forget { group } => {
                out.push(TAG_FORGET);
                put_group(out, group);
            }
        }
    }

    /// Reads a payload.
    pub(crate) fn decode(bytes: &'a [u8]) -> Result<StateRecord<'a>, RecordError> {
        let mut reader = Reader { bytes };
        let record = match reader.u8()? {
            TAG_OFFSET => StateRecord::Offset {
                group: reader.group()?,
                offset: reader.i64()?,
                metadata: "",
            },
            TAG_OFFSET_WITH_METADATA => StateRecord::Offset {
                group: reader.group()?,
                offset: reader.i64()?,
                metadata: reader.metadata()?,
            },
            TAG_SHARE_START => StateRecord::ShareStart {
                group: reader.group()?,
                start_offset: reader.i64()?,
            },
            TAG_SHARE_STATES => {
                let group = reader.group()?;
                let first = reader.i64()?;
                let last = reader.i64()?;
                let state = DurableState::from_wire(reader.u8()?)
                    .ok_or(RecordError("unknown share record state"))?;
                let delivery_count = reader.u16()?;
                // An offset range ends before i64::MAX: the window counts its end as last + 1.
                if first > last || first < 0 || last == i64::MAX {
                    return Err(RecordError("share record range is inverted or unbounded"));
                }
                StateRecord::ShareStates {
                    group,
                    first,
                    last,
                    state,
                    delivery_count,
                }
            }
            TAG_FORGET => StateRecord::Forget {
                group: reader.group()?,
            },
            _ => return Err(RecordError("unknown record tag")),
        };
        if !reader.bytes.is_empty() {
            return Err(RecordError("bytes after the record"));
        }
        Ok(record)
    }
}

fn put_group(out: &mut Vec<u8>, group: &str) {
    // Group names are validated to at most GROUP_NAME_BYTES_MAX (245) bytes, far below u16::MAX.
    let len = u16::try_from(group.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&group.as_bytes()[..usize::from(len)]);
}

fn put_metadata(out: &mut Vec<u8>, metadata: &str) {
    // CommitMetadata is the only source of metadata, and it is bounded: a longer one here is a
    // bug, and would not fit the u16 length.
    assert!(
        CommitMetadata::check(metadata.len()).is_ok(),
        "unbounded commit metadata reached the state file"
    );
    let len = u16::try_from(metadata.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(metadata.as_bytes());
}

struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N], RecordError> {
        let (head, rest) = self
            .bytes
            .split_first_chunk::<N>()
            .ok_or(RecordError("record is truncated"))?;
        self.bytes = rest;
        Ok(*head)
    }

    fn u8(&mut self) -> Result<u8, RecordError> {
        Ok(self.take::<1>()?[0])
    }

    fn u16(&mut self) -> Result<u16, RecordError> {
        Ok(u16::from_le_bytes(self.take()?))
    }

    fn i64(&mut self) -> Result<i64, RecordError> {
        Ok(i64::from_le_bytes(self.take()?))
    }

    fn group(&mut self) -> Result<&'a str, RecordError> {
        let name = self.sized(RecordError("group name is truncated"))?;
        std::str::from_utf8(name).map_err(|_| RecordError("group name is not UTF-8"))
    }

    fn metadata(&mut self) -> Result<&'a str, RecordError> {
        let metadata = self.sized(RecordError("commit metadata is truncated"))?;
        if metadata.len() > COMMIT_METADATA_BYTES_MAX {
            return Err(RecordError("commit metadata is over its bound"));
        }
        std::str::from_utf8(metadata).map_err(|_| RecordError("commit metadata is not UTF-8"))
    }

    /// Bytes preceded by their u16 length.
    fn sized(&mut self, truncated: RecordError) -> Result<&'a [u8], RecordError> {
        let len = usize::from(self.u16()?);
        if self.bytes.len() < len {
            return Err(truncated);
        }
        let (head, rest) = self.bytes.split_at(len);
        self.bytes = rest;
        Ok(head)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip() {
        let records = [
            StateRecord::Offset {
                group: "g",
                offset: 42,
                metadata: "",
            },
            StateRecord::Offset {
                group: "g",
                offset: 43,
                metadata: "abc",
            },
            StateRecord::ShareStart {
                group: "share",
                start_offset: 7,
            },
            StateRecord::ShareStates {
                group: "share",
                first: 7,
                last: 9,
                state: DurableState::Archived,
                delivery_count: 5,
            },
            StateRecord::Forget { group: "gone" },
        ];
        for record in records {
            let mut bytes = Vec::new();
            record.encode(&mut bytes);
            assert_eq!(StateRecord::decode(&bytes), Ok(record));
            for cut in 0..bytes.len() {
                assert!(StateRecord::decode(&bytes[..cut]).is_err());
            }
            bytes.push(0);
            assert!(StateRecord::decode(&bytes).is_err());
        }
        assert!(StateRecord::decode(&[9]).is_err());
    }

    /// Files written before metadata existed hold tag 1 offsets; they must read as before,
    /// and an offset without metadata must still be written that way.
    #[test]
    fn an_offset_without_metadata_keeps_the_old_format() {
        let mut old = vec![TAG_OFFSET, 1, 0, b'g'];
        old.extend_from_slice(&42i64.to_le_bytes());
        let record = StateRecord::Offset {
            group: "g",
            offset: 42,
            metadata: "",
        };
        assert_eq!(StateRecord::decode(&old), Ok(record));
        let mut written = Vec::new();
        record.encode(&mut written);
        assert_eq!(written, old);
    }

    #[test]
    fn offset_metadata_layout_and_bounds() {
        let mut bytes = Vec::new();
        StateRecord::Offset {
            group: "g",
            offset: 7,
            metadata: "abc",
        }
        .encode(&mut bytes);
        let mut expected = vec![TAG_OFFSET_WITH_METADATA, 1, 0, b'g'];
        expected.extend_from_slice(&7i64.to_le_bytes());
        expected.extend_from_slice(&[3, 0, b'a', b'b', b'c']);
        assert_eq!(bytes, expected);

        let with_metadata = |metadata: &[u8]| {
            let mut bytes = vec![TAG_OFFSET_WITH_METADATA, 1, 0, b'g'];
            bytes.extend_from_slice(&7i64.to_le_bytes());
            let len = u16::try_from(metadata.len()).unwrap();
            bytes.extend_from_slice(&len.to_le_bytes());
            bytes.extend_from_slice(metadata);
            bytes
        };
        let full = vec![b'x'; COMMIT_METADATA_BYTES_MAX];
        assert!(StateRecord::decode(&with_metadata(&full)).is_ok());
        let over = vec![b'x'; COMMIT_METADATA_BYTES_MAX + 1];
        assert!(StateRecord::decode(&with_metadata(&over)).is_err());
        assert!(StateRecord::decode(&with_metadata(&[0xff])).is_err());
    }
}
