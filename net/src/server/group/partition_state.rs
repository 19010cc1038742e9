//! The group state of one partition, kept by the shard that owns the partition: committed
//! offsets of consumer groups and the share partitions of share groups, backed by one
//! [`StateStore`] file in the partition directory.
//!
//! Opening replays the file (records in order; a record that does not decode ends the replay
//! with a warning), then writes the replayed state back as a snapshot: the file is compacted on
//! every open. While running, a snapshot replaces the file whenever it has grown well past the
//! state it describes.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use ringlog_engine::log::PartitionLog;

use super::commit_metadata::{self, CommitMetadata};
use super::meta::{ShareConfig, IN_FLIGHT_RECORDS_LIMIT};
use super::state_record::StateRecord;
use crate::error_code::ErrorCode;
use crate::server::message::Failure;
use crate::server::share::partition::SharePartition;
use crate::server::share::window::{Change, Window};
use crate::server::state_store::{
    push_frame, Durable, OpenFiles, StateStore, StoreError, STATE_FILE_NAME,
};

/// Group state of one owned partition; see the module docs.
pub(crate) struct PartitionGroups {
    /// Topic name.
    pub(crate) topic: String,
    /// Partition id.
    pub(crate) partition: u32,
    /// The partition's log.
    pub(crate) log: Rc<PartitionLog>,
    store: StateStore,
    offsets: RefCell<HashMap<String, Committed>>,
    shares: RefCell<HashMap<String, Rc<SharePartition>>>,
}

/// A consumer group's committed offset here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Committed {
    /// Next offset to consume.
    pub(crate) offset: i64,
    /// What the client committed with it.
    pub(crate) metadata: Option<CommitMetadata>,
}

/// What a store error means to a client.
pub(crate) fn store_failure(error: StoreError) -> Failure {
    let code = match &error {
        StoreError::Io {
            disk_full: true, ..
        } => ErrorCode::DiskFull,
        StoreError::Backlog => ErrorCode::Throttled,
        StoreError::Closed => ErrorCode::ShuttingDown,
        _ => ErrorCode::StorageError,
    };
    Failure::new(code, error.to_string())
}

impl PartitionGroups {
    /// Opens the state of `topic`/`partition` (in the log's directory), replaying its file
    /// and compacting it if it has a torn tail or has grown large; `files` are the shard's
    /// turns to have a state file open.
    pub(crate) async fn open(
        topic: &str,
        partition: u32,
        log: Rc<PartitionLog>,
        files: Rc<OpenFiles>,
    ) -> Result<Rc<PartitionGroups>, Failure> {
        let path = log.dir().join(STATE_FILE_NAME);
        let (store, recovered) = StateStore::open(path, files).await.map_err(store_failure)?;
        let mut offsets = HashMap::new();
        let mut windows: HashMap<String, Window> = HashMap::new();
        let mut unreadable = false;
        let records_total = recovered.records().count();
        for (at, payload) in recovered.records().enumerate() {
            let record = match StateRecord::decode(payload) {
                Ok(record) => record,
                Err(error) => {
                    // A whole record (its CRC holds) that this server cannot read: written by
                    // a newer version, say. What follows it is dropped with it, and the file
                    // is rewritten below: left in place, it would end every later replay here,
                    // before whatever this run appends after it.
                    tracing::warn!(
                        path = %store.path().display(),
                        %error,
                        record = at,
                        records_dropped = records_total - at,
                        "unreadable group state record; replaying what comes before it and rewriting the file"
                    );
                    unreadable = true;
                    break;
                }
            };
            replay(record, &mut offsets, &mut windows);
        }
        let groups = Rc::new(PartitionGroups {
            topic: topic.to_string(),
            partition,
            log,
            store,
            offsets: RefCell::new(offsets),
            shares: RefCell::new(HashMap::new()),
        });
        let log_start = groups.log.log_start_offset();
        let mut start_moved = false;
        for (group, mut window) in windows {
            window.advance();
            start_moved |= window.start_offset() < log_start;
            window.finish_replay(log_start);
            let share = SharePartition::new(group.clone(), window, &groups);
            groups.shares.borrow_mut().insert(group, share);
        }
        // A start that retention moved is written (by the snapshot) before anything is changed
        // beyond it: a later replay from the old start could not reach that far.
        if recovered.dropped_bytes > 0
            || unreadable
            || groups.store.wants_compaction()
            || start_moved
        {
            let snapshot = groups.snapshot().map_err(store_failure)?;
            let durable = groups.store.replace(snapshot).map_err(store_failure)?;
            durable.await.map_err(store_failure)?;
        }
        Ok(groups)
    }

    /// The committed offset of `group`, if any.
    pub(crate) fn committed(&self, group: &str) -> Option<i64> {
        self.offsets.borrow().get(group).map(|c| c.offset)
    }

    /// The committed offset of `group` with its metadata, if any.
    pub(crate) fn committed_with_metadata(&self, group: &str) -> Option<Committed> {
        self.offsets.borrow().get(group).cloned()
    }

    /// Every group's committed offset on this partition, by group name.
    pub(crate) fn committed_offsets(&self) -> Vec<(String, i64)> {
        let mut offsets: Vec<_> = self
            .offsets
            .borrow()
            .iter()
            .map(|(group, committed)| (group.clone(), committed.offset))
            .collect();
        offsets.sort();
        offsets
    }

    /// Commits `offset` with `metadata` for `group` (replacing any earlier metadata): in
    /// memory now, durable when the returned future resolves.
    pub(crate) fn commit(
        &self,
        group: &str,
        offset: i64,
        metadata: Option<CommitMetadata>,
    ) -> Result<Durable, Failure> {
        // As `record`, which cannot take the metadata: its record borrows what its `apply`
        // would move into memory.
        let durable = self.append(StateRecord::Offset {
            group,
            offset,
            metadata: commit_metadata::text(metadata.as_ref()),
        })?;
        let committed = Committed { offset, metadata };
        self.offsets
            .borrow_mut()
            .insert(group.to_string(), committed);
        self.compact_if_grown()?;
        Ok(durable)
    }

    /// The share partition of `group`, if it exists here.
    pub(crate) fn share(&self, group: &str) -> Option<Rc<SharePartition>> {
        self.shares.borrow().get(group).cloned()
    }

    /// The share partition of `group`, created at the log start offset when missing.
    pub(crate) fn share_or_create(
        self: &Rc<Self>,
        group: &str,
        config: &Rc<ShareConfig>,
    ) -> Result<Rc<SharePartition>, Failure> {
        if let Some(share) = self.share(group) {
            share.set_config(config);
            return Ok(share);
        }
        let start_offset = self.log.log_start_offset();
        let share = SharePartition::new(group.to_string(), Window::new(start_offset), self);
        share.set_config(config);
        let record = StateRecord::ShareStart {
            group,
            start_offset,
        };
        // Not waited for: a new share partition at the log start is what a lost record
        // would recreate anyway; the first acknowledgement's wait covers it.
        drop(self.record(record, || {
            self.shares
                .borrow_mut()
                .insert(group.to_string(), Rc::clone(&share));
        })?);
        Ok(share)
    }

    /// Forgets group `group` here (its committed offset and share partition: the group was
    /// deleted, or OffsetDelete named this partition), durably when the returned future
    /// resolves; `None` when the partition knew nothing of it.
    pub(crate) fn forget(&self, group: &str) -> Result<Option<Durable>, Failure> {
        let known =
            self.offsets.borrow().contains_key(group) || self.shares.borrow().contains_key(group);
        if !known {
            return Ok(None);
        }
        let durable = self.record(StateRecord::Forget { group }, || {
            self.offsets.borrow_mut().remove(group);
            let share = self.shares.borrow_mut().remove(group);
            if let Some(share) = share {
                share.close();
            }
        })?;
        Ok(Some(durable))
    }

    /// Every share partition here.
    pub(crate) fn shares(&self) -> Vec<Rc<SharePartition>> {
        self.shares.borrow().values().cloned().collect()
    }

    /// Appends a state record, then has `apply` make the same change in memory, then
    /// compacts the file when it has grown enough. The order matters: a compaction replaces
    /// the records not yet written, this one included, by a snapshot of memory, which must
    /// therefore already hold the change. A change made in memory before the call passes a
    /// no-op `apply`.
    pub(crate) fn record(
        &self,
        record: StateRecord<'_>,
        apply: impl FnOnce(),
    ) -> Result<Durable, Failure> {
        let durable = self.append(record)?;
        apply();
        self.compact_if_grown()?;
        Ok(durable)
    }

    fn append(&self, record: StateRecord<'_>) -> Result<Durable, Failure> {
        self.store
            .append_with(|out| record.encode(out))
            .map_err(store_failure)
    }

    /// Replaces the file by a snapshot of memory once it has grown enough; see `record`.
    fn compact_if_grown(&self) -> Result<(), Failure> {
        if self.store.wants_compaction() {
            let snapshot = self.snapshot().map_err(store_failure)?;
            // Appends so far are covered by the snapshot, and their futures by the rewrite.
            drop(self.store.replace(snapshot).map_err(store_failure)?);
        }
        Ok(())
    }

    /// The whole state as framed records.
    fn snapshot(&self) -> Result<Vec<u8>, StoreError> {
        let mut out = Vec::new();
        for (group, committed) in self.offsets.borrow().iter() {
            push_frame(&mut out, |b| {
                StateRecord::Offset {
                    group,
                    offset: committed.offset,
                    metadata: commit_metadata::text(committed.metadata.as_ref()),
                }
                .encode(b)
            })?;
        }
        for (group, share) in self.shares.borrow().iter() {
            let start_offset = share.start_offset();
            push_frame(&mut out, |b| {
                StateRecord::ShareStart {
                    group,
                    start_offset,
                }
                .encode(b)
            })?;
            let mut failed = None;
            share.snapshot(|change| {
                if failed.is_none() {
                    let written = push_frame(&mut out, |b| share_states(group, change).encode(b));
                    failed = written.err();
                }
            });
            if let Some(error) = failed {
                return Err(error);
            }
        }
        Ok(out)
    }

    /// Writes what is pending and closes the file (topic deletion, shutdown).
    pub(crate) async fn close(&self) {
        for share in self.shares() {
            share.close();
        }
        if let Err(error) = self.store.close().await {
            tracing::error!(path = %self.store.path().display(), %error, "closing group state failed");
        }
    }
}

/// The state record of a share change.
pub(crate) fn share_states(group: &str, change: Change) -> StateRecord<'_> {
    StateRecord::ShareStates {
        group,
        first: change.first,
        last: change.last,
        state: change.state,
        delivery_count: change.delivery_count,
    }
}

fn replay(
    record: StateRecord<'_>,
    offsets: &mut HashMap<String, Committed>,
    windows: &mut HashMap<String, Window>,
) {
    match record {
        StateRecord::Offset {
            group,
            offset,
            metadata,
        } => {
            // Decoding bounds the metadata, so this only turns empty into none.
            let metadata = CommitMetadata::new(metadata).unwrap_or(None);
            offsets.insert(group.to_string(), Committed { offset, metadata });
        }
        StateRecord::ShareStart {
            group,
            start_offset,
        } => {
            windows
                .entry(group.to_string())
                .or_insert_with(|| Window::new(start_offset))
                .reset(start_offset);
        }
        StateRecord::ShareStates {
            group,
            first,
            last,
            state,
            delivery_count,
        } => {
            let window = windows
                .entry(group.to_string())
                .or_insert_with(|| Window::new(first));
            let change = Change {
                first,
                last,
                state,
                delivery_count,
            };
            window.replay(change, IN_FLIGHT_RECORDS_LIMIT as usize);
            window.advance();
        }
        StateRecord::Forget { group } => {
            offsets.remove(group);
            windows.remove(group);
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::path::Path;

    use ringlog_engine::cache::ChunkCache;
    use ringlog_engine::log::LogConfig;
    use ringlog_engine::reactor::{block_on, RingConfig};

    use super::*;

    /// A partition log in `dir` (1 MiB segments) with its group state, for unit tests.
    pub(crate) async fn open(dir: &Path) -> (Rc<PartitionLog>, Rc<PartitionGroups>) {
        let config = LogConfig {
            segment_bytes: 1 << 20,
            ..LogConfig::default()
        };
        let cache = Rc::new(ChunkCache::new(1 << 20));
        let log = Rc::new(PartitionLog::open(dir, config, cache).await.unwrap());
        let groups = PartitionGroups::open("t", 0, Rc::clone(&log), Rc::default())
            .await
            .unwrap();
        (log, groups)
    }

    #[test]
    fn the_change_that_starts_a_compaction_is_in_the_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_path_buf();
        block_on(RingConfig::default(), async move {
            let (log, groups) = open(&path).await;
            // One group commits until a commit makes the file big enough to compact.
            let mut offset = 0;
            while !groups.store.rewriting() {
                offset += 1;
                assert!(offset < 1_000_000, "4 MiB of commits start a compaction");
                drop(groups.commit("g", offset, None).unwrap());
            }
            groups.commit("other", 7, None).unwrap().await.unwrap();
            groups.close().await;
            log.close().await.unwrap();
            drop((log, groups));

            let (log, groups) = open(&path).await;
            assert_eq!(groups.committed("g"), Some(offset));
            assert_eq!(groups.committed("other"), Some(7));
            // A deleted group is forgotten, across a reopen too.
            let config = Rc::new(ShareConfig::with_defaults(100));
            groups.share_or_create("s", &config).unwrap();
            groups.forget("s").unwrap().unwrap().await.unwrap();
            assert!(groups.share("s").is_none());
            groups.forget("g").unwrap().unwrap().await.unwrap();
            assert!(groups.forget("never-seen").unwrap().is_none());
            assert_eq!(groups.committed("g"), None);
            groups.close().await;
            log.close().await.unwrap();
            drop((log, groups));

            let (log, groups) = open(&path).await;
            assert_eq!(groups.committed("g"), None);
            assert!(groups.share("s").is_none());
            assert_eq!(groups.committed("other"), Some(7));
            groups.close().await;
            log.close().await.unwrap();
        })
        .unwrap();
    }

    fn committed(offset: i64, metadata: &str) -> Option<Committed> {
        Some(Committed {
            offset,
            metadata: CommitMetadata::new(metadata).unwrap(),
        })
    }

    async fn reopen(
        path: &Path,
        log: Rc<PartitionLog>,
        groups: Rc<PartitionGroups>,
    ) -> (Rc<PartitionLog>, Rc<PartitionGroups>) {
        groups.close().await;
        log.close().await.unwrap();
        drop((log, groups));
        open(path).await
    }

    #[test]
    fn a_file_of_a_server_without_metadata_loads() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_path_buf();
        // The file as the server wrote it before metadata: header, two tag 1 offsets and a
        // tag 4 forget of the second group.
        let mut file = b"RLGS".to_vec();
        file.extend_from_slice(&1u32.to_le_bytes());
        for (group, offset) in [("g", 5i64), ("h", 9)] {
            push_frame(&mut file, |b| {
                b.extend_from_slice(&[1, 1, 0]);
                b.extend_from_slice(group.as_bytes());
                b.extend_from_slice(&offset.to_le_bytes());
            })
            .unwrap();
        }
        push_frame(&mut file, |b| b.extend_from_slice(&[4, 1, 0, b'h'])).unwrap();
        std::fs::write(path.join(STATE_FILE_NAME), file).unwrap();
        block_on(RingConfig::default(), async move {
            let (log, groups) = open(&path).await;
            assert_eq!(groups.committed_with_metadata("g"), committed(5, ""));
            assert_eq!(groups.committed_with_metadata("h"), None);
            // It is appended to as it is, and reads back with both formats in it.
            groups.commit("h", 10, None).unwrap().await.unwrap();
            let abc = CommitMetadata::new("abc").unwrap();
            groups.commit("g", 6, abc).unwrap().await.unwrap();
            let (log, groups) = reopen(&path, log, groups).await;
            assert_eq!(groups.committed_with_metadata("g"), committed(6, "abc"));
            assert_eq!(groups.committed_with_metadata("h"), committed(10, ""));
            groups.close().await;
            log.close().await.unwrap();
        })
        .unwrap();
    }

    #[test]
    fn metadata_is_replaced_cleared_and_forgotten_across_reopens() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_path_buf();
        block_on(RingConfig::default(), async move {
            let (log, groups) = open(&path).await;
            let abc = CommitMetadata::new("abc").unwrap();
            groups.commit("g", 1, abc).unwrap().await.unwrap();
            let kept = CommitMetadata::new("kept").unwrap();
            groups.commit("k", 2, kept).unwrap().await.unwrap();
            let (log, groups) = reopen(&path, log, groups).await;
            assert_eq!(groups.committed_with_metadata("g"), committed(1, "abc"));
            // Compactions write a snapshot: it keeps metadata too.
            let snapshot = groups.snapshot().unwrap();
            assert!(snapshot.windows(4).any(|w| w == b"kept"));

            // A commit without metadata clears the older one.
            groups.commit("g", 3, None).unwrap().await.unwrap();
            assert_eq!(groups.committed_with_metadata("g"), committed(3, ""));
            let (log, groups) = reopen(&path, log, groups).await;
            assert_eq!(groups.committed_with_metadata("g"), committed(3, ""));

            // A deleted group takes its metadata with it.
            groups.forget("k").unwrap().unwrap().await.unwrap();
            let (log, groups) = reopen(&path, log, groups).await;
            assert_eq!(groups.committed_with_metadata("k"), None);
            let again = CommitMetadata::new("x").unwrap();
            groups.commit("k", 4, again).unwrap().await.unwrap();
            assert_eq!(groups.committed_with_metadata("k"), committed(4, "x"));
            groups.close().await;
            log.close().await.unwrap();
        })
        .unwrap();
    }
    /// A frame with a good CRC that this server cannot decode (a newer record tag, say) ends
    /// the replay. Commits acknowledged as durable after such an open must survive the next
    /// restart: appended behind the undecodable frame, the next replay stops before them.
    #[test]
    fn commits_made_after_an_undecodable_record_survive_the_next_restart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_path_buf();
        let mut file = b"RLGS".to_vec();
        file.extend_from_slice(&1u32.to_le_bytes());
        push_frame(&mut file, |b| {
            b.extend_from_slice(&[1, 1, 0, b'g']);
            b.extend_from_slice(&5i64.to_le_bytes());
        })
        .unwrap();
        // Tag 99: unknown to this server; its CRC is right.
        push_frame(&mut file, |b| b.extend_from_slice(&[99, 1, 0, b'x'])).unwrap();
        std::fs::write(path.join(STATE_FILE_NAME), file).unwrap();
        block_on(RingConfig::default(), async move {
            let (log, groups) = open(&path).await;
            assert_eq!(groups.committed("g"), Some(5));
            // Acknowledged as durable.
            groups.commit("g", 6, None).unwrap().await.unwrap();
            groups.commit("h", 1, None).unwrap().await.unwrap();
            let (log, groups) = reopen(&path, log, groups).await;
            assert_eq!(groups.committed("g"), Some(6), "durable commit rolled back");
            assert_eq!(groups.committed("h"), Some(1), "durable commit lost");
            groups.close().await;
            log.close().await.unwrap();
        })
        .unwrap();
    }

    /// A share-states record whose range ends at i64::MAX (its CRC is right, and decode
    /// accepts it) must not panic the open.
    #[test]
    fn a_share_record_ending_at_i64_max_does_not_panic_the_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_path_buf();
        let mut file = b"RLGS".to_vec();
        file.extend_from_slice(&1u32.to_le_bytes());
        let record = StateRecord::ShareStates {
            group: "s",
            first: 0,
            last: i64::MAX,
            state: crate::server::group::state_record::DurableState::Available,
            delivery_count: 1,
        };
        push_frame(&mut file, |b| record.encode(b)).unwrap();
        std::fs::write(path.join(STATE_FILE_NAME), file).unwrap();
        block_on(RingConfig::default(), async move {
            let (log, groups) = open(&path).await;
            drop(groups.share("s"));
            groups.close().await;
            log.close().await.unwrap();
        })
        .unwrap();
    }
}
