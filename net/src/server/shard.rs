//! One shard of the server: the partitions it owns, its copy of the topic catalog, and the
//! machinery to call other shards.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::poll_fn;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Poll, Waker};
use std::time::Duration;

use ringlog_engine::cache::ChunkCache;
use ringlog_engine::io_budget::IoBudget;
use ringlog_engine::log::{
    LogConfig, PartitionLog, ReadAheadMemory, ReadParts, Retention, ShardResources,
};
use ringlog_engine::reactor::mail::{Inbox, MailSender};
use ringlog_engine::reactor::{self, fs, time};
use ringlog_engine::topic::{self, TopicConfig, TopicId};

use super::config::ServerConfig;
use super::latch::Latch;
use super::lending::Lender;
use super::mail_turns::MailTurns;
use super::message::{Failure, FetchedBytes, Mail, ShardCall, ShardReturn, TopicChange};
use super::routing::BoxedFuture;
use crate::error_code::ErrorCode;

/// Partitions a shard closes at once, at shutdown or when their topic is deleted (each close
/// is a few file operations).
const CLOSES_IN_FLIGHT_MAX: usize = 256;

/// Closes `logs`, [`CLOSES_IN_FLIGHT_MAX`] at a time, and logs each failure with `what`.
/// Closing finishes the active segment (truncate, fdatasync, producer snapshot): one partition
/// after another, 10,000 of them took half a minute.
async fn close_logs(logs: &[Rc<PartitionLog>], what: &'static str) {
    for group in logs.chunks(CLOSES_IN_FLIGHT_MAX) {
        let closes: Vec<BoxedFuture<'_, _>> = group
            .iter()
            .map(|log| Box::pin(log.close()) as BoxedFuture<'_, _>)
            .collect();
        let results = super::routing::join_all(closes).await;
        for (log, result) in group.iter().zip(results) {
            if let Err(error) = result {
                tracing::error!(dir = %log.dir().display(), %error, "{what}");
            }
        }
    }
}

/// The shard that owns the topic catalog: creates and deletes go through it.
pub(crate) const CATALOG_SHARD: usize = 0;

struct CallSlot {
    generation: u32,
    waker: Option<Waker>,
    result: Option<ShardReturn>,
    live: bool,
}

/// Calls this shard has sent and not yet had answered.
#[derive(Default)]
struct CallTable {
    slots: Vec<CallSlot>,
    free: Vec<u32>,
}

impl CallTable {
    fn open(&mut self) -> u64 {
        let index = self.free.pop().unwrap_or_else(|| {
            self.slots.push(CallSlot {
                generation: 0,
                waker: None,
                result: None,
                live: false,
            });
            (self.slots.len() - 1) as u32
        });
        let slot = &mut self.slots[index as usize];
        assert!(!slot.live);
        slot.generation = slot.generation.wrapping_add(1);
        slot.live = true;
        slot.result = None;
        slot.waker = None;
        (u64::from(slot.generation) << 32) | u64::from(index)
    }

    fn slot(&mut self, call_id: u64) -> Option<&mut CallSlot> {
        let slot = self.slots.get_mut(call_id as u32 as usize)?;
        (slot.live && slot.generation == (call_id >> 32) as u32).then_some(slot)
    }

    fn close(&mut self, call_id: u64) {
        if let Some(slot) = self.slot(call_id) {
            slot.live = false;
            slot.result = None;
            slot.waker = None;
            self.free.push(call_id as u32);
        }
    }
}

/// Closes a call slot if the caller stops waiting (its connection went away).
struct CallGuard<'a> {
    shard: &'a Rc<Shard>,
    target: usize,
    call_id: u64,
    /// Tell the target when the caller stops waiting before the answer (a call that waits:
    /// [`ShardCall::is_cancellable`]).
    cancel_unanswered: bool,
    answered: bool,
}

impl Drop for CallGuard<'_> {
    fn drop(&mut self) {
        self.shard.calls.borrow_mut().close(self.call_id);
        if self.cancel_unanswered && !self.answered {
            let (shard, target, call_id) = (Rc::clone(self.shard), self.target, self.call_id);
            // Mail order puts the cancel after the call, if the call was sent at all.
            reactor::spawn(async move {
                let from = shard.id;
                shard
                    .send_mail(target, Mail::Cancel { from, call_id })
                    .await;
            });
        }
    }
}

/// A topic as this shard knows it.
pub(crate) struct TopicEntry {
    pub(crate) config: TopicConfig,
}

/// Partitions of one topic owned by this shard, indexed by partition number.
type OwnedPartitions = Vec<Option<Rc<PartitionLog>>>;

/// State of one shard thread.
pub(crate) struct Shard {
    pub(crate) id: usize,
    pub(crate) shard_count: usize,
    pub(crate) config: Rc<ServerConfig>,
    pub(crate) data_dir: PathBuf,
    pub(crate) topics: RefCell<HashMap<String, Rc<TopicEntry>>>,
    /// The catalog's topics by id, for the requests that name topics by id.
    topic_ids: RefCell<HashMap<TopicId, String>>,
    partitions: RefCell<HashMap<String, OwnedPartitions>>,
    /// Memory cache, disk-operation budget and read-ahead memory of all this shard's
    /// partition logs.
    log_resources: ShardResources,
    outboxes: RefCell<Vec<MailSender<Mail>>>,
    /// Per target shard: senders wait their turn while its queue is full (mail order).
    mail_turns: Vec<MailTurns>,
    calls: RefCell<CallTable>,
    /// Waits that other shards' long polls (fetches, share fetches) have running here, by
    /// (caller shard, call id): set to end one early (see [`Mail::Cancel`]).
    waits_for_others: RefCell<HashMap<(usize, u64), Rc<Latch>>>,
    /// Open connections on the whole server (shared by shards; an atomic counter, no lock).
    pub(crate) connections: Arc<AtomicUsize>,
    /// Set while the catalog shard creates or deletes a topic, to serialise those.
    catalog_busy: Cell<bool>,
    /// Consumer groups this shard coordinates and group state of its partitions.
    pub(crate) groups: super::group::GroupShard,
    /// Producer ids this shard hands out (InitProducerId).
    pub(crate) producer_ids: super::producer_ids::ProducerIds,
    /// Bytes of owned partitions lent to other shards' fetches.
    lender: RefCell<Lender>,
    /// Requests this shard served, for the metrics endpoint.
    pub(crate) requests: super::metrics::RequestCounts,
}

impl Shard {
    pub(crate) fn new(
        id: usize,
        shard_count: usize,
        config: Rc<ServerConfig>,
        data_dir: PathBuf,
        outboxes: Vec<MailSender<Mail>>,
        connections: Arc<AtomicUsize>,
    ) -> Rc<Shard> {
        let log_resources = ShardResources {
            cache: Rc::new(ChunkCache::new(config.cache_bytes_per_shard)),
            io_budget: Rc::new(IoBudget::new(config.disk_ops_per_s_per_shard(shard_count))),
            read_ahead: Rc::new(ReadAheadMemory::new(config.read_ahead_bytes_per_shard)),
        };
        let groups = super::group::GroupShard::new(id, shard_count, &config, &data_dir);
        let producer_ids = super::producer_ids::ProducerIds::open(&data_dir, id);
        Rc::new(Shard {
            id,
            shard_count,
            config,
            data_dir,
            topics: RefCell::new(HashMap::new()),
            topic_ids: RefCell::new(HashMap::new()),
            partitions: RefCell::new(HashMap::new()),
            log_resources,
            outboxes: RefCell::new(outboxes),
            mail_turns: (0..shard_count).map(|_| MailTurns::default()).collect(),
            calls: RefCell::new(CallTable::default()),
            waits_for_others: RefCell::new(HashMap::new()),
            connections,
            catalog_busy: Cell::new(false),
            groups,
            producer_ids,
            lender: RefCell::new(Lender::default()),
            requests: super::metrics::RequestCounts::default(),
        })
    }

    /// Waits that other shards' long polls (fetches, share fetches) have running here now.
    pub(crate) fn waits_for_others(&self) -> usize {
        self.waits_for_others.borrow().len()
    }

    /// Lends read bytes to another shard's fetch, or copies them when every loan is out.
    pub(crate) fn lend(&self, parts: ReadParts) -> FetchedBytes {
        let len_bytes = parts.len();
        match self.lender.borrow_mut().lend(parts.into_slices()) {
            Ok(pieces) => FetchedBytes::Lent(pieces),
            Err(slices) => {
                let mut bytes = Vec::with_capacity(len_bytes);
                for slice in &slices {
                    bytes.extend_from_slice(slice.bytes());
                }
                FetchedBytes::Copied(bytes)
            }
        }
    }

    /// The shard that owns `partition` of `topic`.
    pub(crate) fn owner(&self, topic: &str, partition: u32) -> usize {
        topic::owner_shard(topic, partition, self.shard_count)
    }

    /// The config of a known topic.
    pub(crate) fn topic(&self, name: &str) -> Option<Rc<TopicEntry>> {
        self.topics.borrow().get(name).cloned()
    }

    /// The name of the topic whose id is `id`, if the catalog has it.
    pub(crate) fn topic_name(&self, id: TopicId) -> Option<String> {
        self.topic_ids.borrow().get(&id).cloned()
    }

    /// An owned partition's log, or the error a client should see.
    pub(crate) fn local_log(
        &self,
        topic: &str,
        partition: u32,
    ) -> Result<Rc<PartitionLog>, Failure> {
        let Some(entry) = self.topic(topic) else {
            return Err(unknown_topic(topic));
        };
        if partition >= entry.config.partitions {
            return Err(Failure::new(
                ErrorCode::UnknownPartition,
                format!(
                    "topic {topic} has {} partitions; {partition} does not exist",
                    entry.config.partitions
                ),
            ));
        }
        self.partitions
            .borrow()
            .get(topic)
            .and_then(|owned| owned.get(partition as usize).cloned().flatten())
            .ok_or_else(|| {
                Failure::new(
                    ErrorCode::Unknown,
                    format!(
                        "partition {topic}/{partition} is not open on shard {}",
                        self.id
                    ),
                )
            })
    }

    fn log_config(&self, config: &TopicConfig) -> LogConfig {
        LogConfig::for_topic(config)
    }

    /// Adds `name` to the local catalog and opens (recovering, or creating) the partitions
    /// this shard owns; groups subscribed to it rebalance onto it (at startup none has
    /// members yet).
    pub(crate) async fn open_topic(&self, name: &str, config: TopicConfig) -> Result<(), Failure> {
        self.open_topic_partitions(name, &config).await?;
        self.publish_topic(name, config);
        Ok(())
    }

    /// Opens (recovering, or creating) the partitions of `name` this shard owns, out of
    /// clients' reach until [`Self::publish_topic`]. After a failure those opened stay in the
    /// partition table, for [`Self::drop_topic`] to close.
    async fn open_topic_partitions(&self, name: &str, config: &TopicConfig) -> Result<(), Failure> {
        let mut owned: OwnedPartitions = vec![None; config.partitions as usize];
        let mut outcome = Ok(());
        for partition in 0..config.partitions {
            if self.owner(name, partition) == self.id {
                match self.open_partition(name, partition, config).await {
                    Ok(log) => owned[partition as usize] = Some(log),
                    Err(failure) => {
                        outcome = Err(failure);
                        break;
                    }
                }
            }
        }
        self.partitions.borrow_mut().insert(name.to_string(), owned);
        outcome
    }

    /// Adds `name`, whose partitions every shard has opened, to the local catalog; groups
    /// subscribed to it rebalance onto it.
    fn publish_topic(&self, name: &str, config: TopicConfig) {
        self.topic_ids
            .borrow_mut()
            .insert(config.id, name.to_string());
        self.topics
            .borrow_mut()
            .insert(name.to_string(), Rc::new(TopicEntry { config }));
        self.groups.topic_changed(name);
    }

    /// Opens (recovering, or creating) one partition this shard owns, with its group state.
    async fn open_partition(
        &self,
        name: &str,
        partition: u32,
        config: &TopicConfig,
    ) -> Result<Rc<PartitionLog>, Failure> {
        assert_eq!(self.owner(name, partition), self.id);
        let dir = self.data_dir.join(name).join(partition.to_string());
        match fs::create_dir(&dir).await {
            Ok(()) => {}
            Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(error) => return Err(storage_failure(&format!("create {}", dir.display()), error)),
        }
        let log = PartitionLog::open_on_shard(dir, self.log_config(config), &self.log_resources)
            .await
            .map_err(|error| {
                Failure::new(
                    ErrorCode::StorageError,
                    format!("open {name}/{partition}: {error}"),
                )
            })?;
        let log = Rc::new(log);
        self.groups.open_partition(name, partition, &log).await?;
        Ok(log)
    }

    /// Opens the partitions that `config` adds to topic `name` and this shard owns. They are
    /// out of clients' reach until [`Self::update_topic`] grows the catalog entry; one left
    /// open by an earlier attempt that failed elsewhere is kept.
    async fn open_new_partitions(&self, name: &str, config: TopicConfig) -> Result<(), Failure> {
        let known = self.topic(name).ok_or_else(|| unknown_topic(name))?;
        assert!(config.partitions >= known.config.partitions);
        for partition in known.config.partitions..config.partitions {
            let is_open = self
                .partitions
                .borrow()
                .get(name)
                .and_then(|owned| owned.get(partition as usize).cloned().flatten())
                .is_some();
            if self.owner(name, partition) != self.id || is_open {
                continue;
            }
            let log = self.open_partition(name, partition, &config).await?;
            let mut partitions = self.partitions.borrow_mut();
            // The catalog lock keeps the topic from being deleted meanwhile.
            let owned = partitions
                .get_mut(name)
                .expect("a topic being altered stays in the catalog");
            owned.resize(owned.len().max(config.partitions as usize), None);
            owned[partition as usize] = Some(log);
        }
        Ok(())
    }

    /// Removes `name` from the local catalog and closes its owned partitions; groups that
    /// were assigned its partitions rebalance, so that no member keeps one.
    async fn drop_topic(&self, name: &str) -> Result<(), Failure> {
        if let Some(entry) = self.topics.borrow_mut().remove(name) {
            self.topic_ids.borrow_mut().remove(&entry.config.id);
        }
        // Before any await: a retention pass may be part way through this shard's logs.
        for log in self
            .partitions
            .borrow()
            .get(name)
            .into_iter()
            .flatten()
            .flatten()
        {
            log.retire();
        }
        self.groups.drop_topic(name).await;
        let owned = self
            .partitions
            .borrow_mut()
            .remove(name)
            .unwrap_or_default();
        let logs: Vec<Rc<PartitionLog>> = owned.into_iter().flatten().collect();
        close_logs(&logs, "closing a deleted partition failed").await;
        self.groups.topic_deleted(name);
        Ok(())
    }

    /// Creates a topic: runs on the catalog shard; every shard opens its partitions, then the
    /// metadata is persisted, then every shard lists the topic, before answering.
    async fn create_topic(
        self: &Rc<Self>,
        name: String,
        mut config: TopicConfig,
    ) -> Result<(), Failure> {
        assert_eq!(self.id, CATALOG_SHARD);
        topic::validate_name(&name)
            .map_err(|e| Failure::new(ErrorCode::InvalidRequest, e.to_string()))?;
        config
            .validate()
            .map_err(|e| Failure::new(ErrorCode::InvalidConfig, e.to_string()))?;
        // Every creation gets a new id, whatever the request carried.
        config.id =
            TopicId::random().map_err(|e| Failure::new(ErrorCode::Unknown, e.to_string()))?;
        let _busy = self.lock_catalog().await;
        if self.topics.borrow().contains_key(&name) {
            return Err(Failure::new(
                ErrorCode::TopicExists,
                format!("topic {name} already exists"),
            ));
        }
        let topic_dir = self.data_dir.join(&name);
        // An existing directory is what an interrupted create left (no metadata: its
        // partitions never took a record), or a topic this server does not serve: its
        // metadata could not be read at the start, or its delete failed and the topic could
        // not be opened again. The latter's records are not a new topic's to serve.
        let made_dir = match fs::create_dir(&topic_dir).await {
            Ok(()) => true,
            Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => {
                let holds_topic = holds_topic_metadata(&topic_dir).await.map_err(|error| {
                    storage_failure("look into an existing topic directory", error)
                })?;
                if holds_topic {
                    return Err(Failure::new(
                        ErrorCode::StorageError,
                        format!(
                            "the data directory holds a topic {name} this server does not serve \
                             (its metadata could not be read, or its delete failed); restart the \
                             server, or move {} away",
                            topic_dir.display()
                        ),
                    ));
                }
                false
            }
            Err(error) => return Err(storage_failure("create topic directory", error)),
        };
        // Every shard opens its partitions before any shard lists the topic, and the metadata
        // is written only then: a failure on one shard, or a crash, before that leaves no
        // topic that some shards serve and others do not know, or that a restart brings back.
        let opened = self
            .on_every_shard(|| ShardCall::OpenTopic {
                name: name.clone(),
                config: config.clone(),
            })
            .await;
        let persisted = match opened {
            Ok(()) => self.persist_new_topic(&topic_dir, &config).await,
            Err(failure) => Err(failure),
        };
        if let Err(failure) = persisted {
            self.abandon_topic(&name, made_dir).await;
            return Err(failure);
        }
        self.on_every_shard(|| ShardCall::PublishTopic {
            name: name.clone(),
            config: config.clone(),
        })
        .await?;
        tracing::info!(topic = %name, partitions = config.partitions, "topic created");
        Ok(())
    }

    /// Writes a new topic's metadata and makes its directory's entry durable.
    async fn persist_new_topic(
        &self,
        topic_dir: &std::path::Path,
        config: &TopicConfig,
    ) -> Result<(), Failure> {
        let text = topic::config_file_text(config);
        fs::write_file_atomic(&topic_dir.join(topic::TOPIC_FILE_NAME), text.as_bytes())
            .await
            .map_err(|error| storage_failure("write topic metadata", error))?;
        fs::sync_dir(&self.data_dir)
            .await
            .map_err(|error| storage_failure("sync data directory", error))
    }

    /// Undoes a create that failed before any shard listed the topic: every shard closes
    /// what it opened and the directory, if the create made it, goes to the graveyard. What
    /// cannot be undone is logged; the next start skips a directory without metadata.
    async fn abandon_topic(self: &Rc<Self>, name: &str, made_dir: bool) {
        if let Err(failure) = self
            .on_every_shard(|| ShardCall::DropTopic {
                name: name.to_string(),
            })
            .await
        {
            tracing::warn!(topic = %name, error = %failure.message, "undoing a failed create");
        }
        if !made_dir {
            return;
        }
        if let Err(failure) = self.move_to_graveyard(name).await {
            tracing::warn!(topic = %name, error = %failure.message, "undoing a failed create");
        }
    }

    /// Renames a topic's directory away (atomic, durable) and removes it in the background.
    async fn move_to_graveyard(&self, name: &str) -> Result<(), Failure> {
        let topic_dir = self.data_dir.join(name);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let graveyard = self.data_dir.join(graveyard_name(name, nanos));
        fs::rename(&topic_dir, &graveyard)
            .await
            .map_err(|error| storage_failure("rename deleted topic", error))?;
        fs::sync_dir(&self.data_dir)
            .await
            .map_err(|error| storage_failure("sync data directory", error))?;
        remove_in_background(graveyard);
        Ok(())
    }

    /// Deletes a topic: every shard closes its partitions, then the directory is renamed away
    /// (atomic) and removed in the background.
    async fn delete_topic(self: &Rc<Self>, name: String) -> Result<(), Failure> {
        assert_eq!(self.id, CATALOG_SHARD);
        let _busy = self.lock_catalog().await;
        let config = match self.topic(&name) {
            Some(entry) => entry.config.clone(),
            None => return Err(unknown_topic(&name)),
        };
        self.on_every_shard(|| ShardCall::DropTopic { name: name.clone() })
            .await?;
        if let Err(failure) = self.move_to_graveyard(&name).await {
            // The directory and its records are still there: serve the topic again, so that a
            // retry of the delete finds it (and a create of the name does not start over it).
            self.reopen_topic(&name, &config).await;
            return Err(failure);
        }
        tracing::info!(topic = %name, "topic deleted");
        Ok(())
    }

    /// Opens and lists again on every shard a topic whose delete failed after its partitions
    /// were closed. What cannot be undone is logged; the topic then comes back at the next
    /// start, and a create of its name is refused meanwhile.
    async fn reopen_topic(self: &Rc<Self>, name: &str, config: &TopicConfig) {
        let opened = self
            .on_every_shard(|| ShardCall::OpenTopic {
                name: name.to_string(),
                config: config.clone(),
            })
            .await;
        let published = match opened {
            Ok(()) => {
                self.on_every_shard(|| ShardCall::PublishTopic {
                    name: name.to_string(),
                    config: config.clone(),
                })
                .await
            }
            Err(failure) => Err(failure),
        };
        match published {
            Ok(()) => {
                tracing::warn!(topic = %name, "topic delete failed; the topic is served again")
            }
            Err(failure) => {
                tracing::error!(topic = %name, error = %failure.message, "topic delete failed and the topic cannot be opened again; it is back at the next start")
            }
        }
    }

    /// Changes a topic's retention or adds partitions: runs on the catalog shard, has every
    /// shard open the new partitions it owns, persists the metadata, then replaces the
    /// topic's entry on every shard (whose retention checks and routing read it).
    async fn alter_topic(
        self: &Rc<Self>,
        name: String,
        change: TopicChange,
    ) -> Result<(), Failure> {
        assert_eq!(self.id, CATALOG_SHARD);
        let _busy = self.lock_catalog().await;
        let current = self.topic(&name).ok_or_else(|| unknown_topic(&name))?;
        let config = change.applied_to(&current.config);
        config
            .validate()
            .map_err(|e| Failure::new(ErrorCode::InvalidConfig, e.to_string()))?;
        if config.partitions < current.config.partitions {
            return Err(Failure::new(
                ErrorCode::InvalidConfig,
                format!(
                    "topic {name} has {} partitions; partitions can be added, not removed",
                    current.config.partitions
                ),
            ));
        }
        // New partitions open everywhere first, so that once the metadata says they exist
        // they do; a crash before the metadata is written leaves empty directories that the
        // next start ignores and a retry reuses.
        if config.partitions > current.config.partitions {
            self.on_every_shard(|| ShardCall::OpenNewPartitions {
                name: name.clone(),
                config: config.clone(),
            })
            .await?;
        }
        let text = topic::config_file_text(&config);
        let path = self.data_dir.join(&name).join(topic::TOPIC_FILE_NAME);
        fs::write_file_atomic(&path, text.as_bytes())
            .await
            .map_err(|error| storage_failure("write topic metadata", error))?;
        self.on_every_shard(|| ShardCall::UpdateTopic {
            name: name.clone(),
            config: config.clone(),
        })
        .await?;
        tracing::info!(
            topic = %name,
            partitions = config.partitions,
            retention_ms = ?config.retention_ms,
            retention_bytes = ?config.retention_bytes,
            "topic altered"
        );
        Ok(())
    }

    /// Replaces a topic's configuration in the local catalog (retention, or more partitions,
    /// which [`Self::open_new_partitions`] opened); groups reading a grown topic rebalance.
    fn update_topic(&self, name: &str, config: TopicConfig) -> Result<(), Failure> {
        let grew = {
            let mut topics = self.topics.borrow_mut();
            let entry = topics.get_mut(name).ok_or_else(|| unknown_topic(name))?;
            assert!(entry.config.partitions <= config.partitions);
            assert_eq!(entry.config.segment_bytes, config.segment_bytes);
            assert_eq!(entry.config.id, config.id, "a topic keeps its id");
            let grew = config.partitions > entry.config.partitions;
            *entry = Rc::new(TopicEntry {
                config: config.clone(),
            });
            grew
        };
        if grew {
            if let Some(owned) = self.partitions.borrow_mut().get_mut(name) {
                owned.resize(owned.len().max(config.partitions as usize), None);
            }
            self.groups.topic_changed(name);
        }
        Ok(())
    }

    async fn lock_catalog(&self) -> CatalogGuard<'_> {
        // Bounded by the number of concurrent catalog requests; each holder finishes its
        // create or delete.
        while self.catalog_busy.replace(true) {
            time::sleep(Duration::from_millis(1)).await;
        }
        CatalogGuard { shard: self }
    }

    /// Runs the call `make` builds on every shard in turn (this one included), stopping at the
    /// first that fails.
    async fn on_every_shard(self: &Rc<Self>, make: impl Fn() -> ShardCall) -> Result<(), Failure> {
        for target in 0..self.shard_count {
            expect_done(self.call(target, make()).await)?;
        }
        Ok(())
    }

    /// Waits until one of `targets` (topic, partition, offset), all owned by shard `owner`
    /// (not this one), has data, or `max_wait_ms` passes. Dropping the future before then
    /// ends the wait on `owner` too.
    pub(crate) async fn wait_on_other_shard(
        self: &Rc<Self>,
        owner: usize,
        targets: Vec<(String, u32, i64)>,
        max_wait_ms: u32,
    ) {
        assert_ne!(owner, self.id, "a wait here needs no call");
        let call = ShardCall::WaitForData {
            targets,
            max_wait_ms,
        };
        self.call(owner, call).await;
    }

    /// Runs `call` on shard `target` (directly when that is this shard) and returns its answer.
    /// Dropping the future of a call that [`ShardCall::is_cancellable`] before the answer ends
    /// the call's wait on `target` ([`Mail::Cancel`]).
    pub(crate) async fn call(self: &Rc<Self>, target: usize, call: ShardCall) -> ShardReturn {
        self.call_until(target, call, None).await
    }

    /// [`Self::call`] to another shard of a call that
    /// [answers when cancelled](ShardCall::answers_when_cancelled), cancelled once `stop` is
    /// set (its wait on `target` ends) while this caller waits on for its answer: what it did
    /// before it stopped is not lost.
    pub(crate) async fn call_stopped_by(
        self: &Rc<Self>,
        target: usize,
        call: ShardCall,
        stop: &Latch,
    ) -> ShardReturn {
        assert_ne!(target, self.id, "a local call is made directly");
        assert!(call.answers_when_cancelled());
        self.call_until(target, call, Some(stop)).await
    }

    async fn call_until(
        self: &Rc<Self>,
        target: usize,
        call: ShardCall,
        stop: Option<&Latch>,
    ) -> ShardReturn {
        assert!(target < self.shard_count);
        if target == self.id {
            return Box::pin(self.execute(call)).await;
        }
        let call_id = self.calls.borrow_mut().open();
        let mut guard = CallGuard {
            shard: self,
            target,
            call_id,
            cancel_unanswered: call.is_cancellable(),
            answered: false,
        };
        self.send_mail(
            target,
            Mail::Call {
                from: self.id,
                call_id,
                call,
            },
        )
        .await;
        let answer = poll_fn(|cx| {
            let mut calls = self.calls.borrow_mut();
            let slot = calls
                .slot(call_id)
                .expect("call slot lives until the guard drops");
            match slot.result.take() {
                Some(result) => Poll::Ready(result),
                None => {
                    slot.waker = Some(cx.waker().clone());
                    Poll::Pending
                }
            }
        });
        let result = match stop {
            None => answer.await,
            Some(stop) => {
                let stopped = stop.wait();
                futures_util::pin_mut!(answer, stopped);
                match futures_util::future::select(answer, stopped).await {
                    futures_util::future::Either::Left((result, _)) => result,
                    futures_util::future::Either::Right(((), answer)) => {
                        let from = self.id;
                        self.send_mail(target, Mail::Cancel { from, call_id }).await;
                        answer.await
                    }
                }
            }
        };
        guard.answered = true;
        drop(guard);
        result
    }

    /// Sends `mail` to shard `target` after every mail sent to it earlier by this shard.
    async fn send_mail(&self, target: usize, mut mail: Mail) {
        let turn = self.mail_turns[target].take();
        // Bounded back-off: a full queue means the target is saturated; wait rather than grow.
        loop {
            if turn.is_now() {
                let attempt = self.outboxes.borrow_mut()[target].try_send(mail);
                match attempt {
                    Ok(()) => {
                        turn.finish();
                        return;
                    }
                    Err(back) => mail = back,
                }
            }
            time::sleep(Duration::from_micros(50)).await;
        }
    }

    /// Serves mail from other shards until the inbox is dropped at shutdown.
    pub(crate) async fn run_inbox(self: Rc<Self>, mut inbox: Inbox<Mail>) {
        loop {
            match inbox.recv().await {
                Mail::Call {
                    from,
                    call_id,
                    call,
                } if call.is_cancellable() => {
                    // Registered here, not in the task: the inbox may hold the Cancel right
                    // behind this Call, and this loop takes it before the task first runs.
                    let key = (from, call_id);
                    let answers_when_cancelled = call.answers_when_cancelled();
                    let cancelled = Rc::new(Latch::default());
                    self.waits_for_others
                        .borrow_mut()
                        .insert(key, Rc::clone(&cancelled));
                    let shard = Rc::clone(&self);
                    reactor::spawn(async move {
                        let result = shard.execute_cancellable(call, &cancelled).await;
                        shard.waits_for_others.borrow_mut().remove(&key);
                        if !cancelled.is_set() || answers_when_cancelled {
                            shard
                                .send_mail(from, Mail::Return { call_id, result })
                                .await;
                        }
                    });
                }
                Mail::Cancel { from, call_id } => {
                    // Absent when the wait ended first: its answer is on its way and dropped.
                    if let Some(cancelled) = self.waits_for_others.borrow().get(&(from, call_id)) {
                        cancelled.set();
                    }
                }
                Mail::Call {
                    from,
                    call_id,
                    call,
                } => {
                    let shard = Rc::clone(&self);
                    reactor::spawn(async move {
                        let result = shard.execute(call).await;
                        shard
                            .send_mail(from, Mail::Return { call_id, result })
                            .await;
                    });
                }
                Mail::Return { call_id, result } => {
                    let mut calls = self.calls.borrow_mut();
                    // A missing slot means the caller gave up (connection closed): drop it.
                    if let Some(slot) = calls.slot(call_id) {
                        slot.result = Some(result);
                        if let Some(waker) = slot.waker.take() {
                            waker.wake();
                        }
                    }
                }
            }
        }
    }

    /// Does the work of a call that [`ShardCall::is_cancellable`], ending early once
    /// `cancelled` is set.
    async fn execute_cancellable(
        self: &Rc<Self>,
        call: ShardCall,
        cancelled: &Latch,
    ) -> ShardReturn {
        match call {
            ShardCall::WaitForData {
                targets,
                max_wait_ms,
            } => {
                let max_wait = Duration::from_millis(u64::from(max_wait_ms));
                let wait = super::partition_ops::wait_for_any(self, &targets, Some(max_wait));
                let cancel = cancelled.wait();
                futures_util::pin_mut!(wait, cancel);
                futures_util::future::select(wait, cancel).await;
                ShardReturn::Done(Ok(()))
            }
            ShardCall::Group(super::group::GroupCall::ShareFetch(args)) => {
                ShardReturn::Group(super::group::GroupReturn::ShareFetched(
                    super::share::fetch(self, args, cancelled).await,
                ))
            }
            other => Box::pin(self.execute(other)).await,
        }
    }

    /// Does the work of a call on this shard.
    pub(crate) async fn execute(self: &Rc<Self>, call: ShardCall) -> ShardReturn {
        match call {
            ShardCall::CreateTopic { name, config } => {
                ShardReturn::Done(self.create_topic(name, config).await)
            }
            ShardCall::DeleteTopic { name } => ShardReturn::Done(self.delete_topic(name).await),
            ShardCall::AlterTopic { name, change } => {
                ShardReturn::Done(self.alter_topic(name, change).await)
            }
            ShardCall::OpenNewPartitions { name, config } => {
                ShardReturn::Done(self.open_new_partitions(&name, config).await)
            }
            ShardCall::UpdateTopic { name, config } => {
                ShardReturn::Done(self.update_topic(&name, config))
            }
            ShardCall::OpenTopic { name, config } => {
                ShardReturn::Done(self.open_topic_partitions(&name, &config).await)
            }
            ShardCall::PublishTopic { name, config } => {
                self.publish_topic(&name, config);
                ShardReturn::Done(Ok(()))
            }
            ShardCall::DropTopic { name } => ShardReturn::Done(self.drop_topic(&name).await),
            ShardCall::Produce {
                topic,
                partition,
                acks,
                mut batches,
                from_client,
            } => ShardReturn::Produced(
                super::partition_ops::produce(
                    self,
                    &topic,
                    partition,
                    acks,
                    &mut batches,
                    from_client,
                )
                .await,
            ),
            ShardCall::Fetch {
                topic,
                partition,
                offset,
                max_bytes,
            } => ShardReturn::Fetched(
                super::partition_ops::fetch_for_shard(self, &topic, partition, offset, max_bytes)
                    .await,
            ),
            call @ ShardCall::WaitForData { .. } => {
                self.execute_cancellable(call, &Latch::default()).await
            }
            ShardCall::ListOffset {
                topic,
                partition,
                query,
            } => ShardReturn::Offset(
                super::partition_ops::list_offset(self, &topic, partition, query).await,
            ),
            ShardCall::DeleteRecords {
                topic,
                partition,
                offset,
            } => ShardReturn::LogStart(
                super::partition_ops::delete_records(self, &topic, partition, offset).await,
            ),
            ShardCall::Group(call) => ShardReturn::Group(super::group::execute(self, call).await),
            ShardCall::PartitionInfo { topic } => {
                ShardReturn::Partitions(self.partition_info(&topic))
            }
            ShardCall::Metrics => ShardReturn::Metrics(Box::new(super::metrics::snapshot(self))),
        }
    }

    /// Every partition this shard owns, with its topic name, in topic then partition order.
    pub(crate) fn owned_logs(&self) -> Vec<(String, u32, Rc<PartitionLog>)> {
        let partitions = self.partitions.borrow();
        let mut logs: Vec<_> = partitions
            .iter()
            .flat_map(|(topic, owned)| {
                owned
                    .iter()
                    .enumerate()
                    .filter_map(move |(partition, log)| {
                        log.as_ref()
                            .map(|log| (topic.clone(), partition as u32, Rc::clone(log)))
                    })
            })
            .collect();
        logs.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
        logs
    }

    /// Read-ahead extents the shard's partitions hold now, and the most they may.
    pub(crate) fn read_ahead_extents(&self) -> (usize, usize) {
        let memory = &self.log_resources.read_ahead;
        (memory.extents_held(), memory.extents_max())
    }

    fn partition_info(
        &self,
        topic: &str,
    ) -> Result<Vec<super::message::PartitionOffsets>, Failure> {
        let count = self
            .topic(topic)
            .ok_or_else(|| unknown_topic(topic))?
            .config
            .partitions as usize;
        let partitions = self.partitions.borrow();
        let owned = partitions.get(topic).ok_or_else(|| unknown_topic(topic))?;
        // Partitions being added are open before the catalog has them, and stay open after an
        // alter that failed on another shard: clients must not see them until they exist.
        Ok(owned
            .iter()
            .take(count)
            .enumerate()
            .filter_map(|(partition, log)| {
                log.as_ref().map(|log| super::message::PartitionOffsets {
                    partition: partition as u32,
                    log_start_offset: log.log_start_offset(),
                    high_watermark: log.high_watermark(),
                    size_bytes: log.size_bytes(),
                })
            })
            .collect())
    }

    /// Flushes and closes every owned partition (shutdown).
    pub(crate) async fn close_all(&self) {
        self.groups.close_all().await;
        let all: Vec<Rc<PartitionLog>> = self
            .partitions
            .borrow()
            .values()
            .flat_map(|owned| owned.iter().flatten().cloned())
            .collect();
        close_logs(&all, "flush at shutdown failed").await;
    }

    /// Applies each topic's retention (as it is now) to every owned partition.
    pub(crate) async fn apply_retention(&self, now_ms: i64) {
        let all: Vec<(Rc<PartitionLog>, Retention)> = {
            let topics = self.topics.borrow();
            self.partitions
                .borrow()
                .iter()
                .filter_map(|(name, owned)| {
                    let retention = Retention::of_topic(&topics.get(name)?.config);
                    Some(
                        owned
                            .iter()
                            .flatten()
                            .map(move |log| (Rc::clone(log), retention)),
                    )
                })
                .flatten()
                .collect()
        };
        for (log, retention) in all {
            if let Err(error) = log.apply_retention(now_ms, retention).await {
                tracing::warn!(%error, "retention failed");
            }
        }
    }

    /// Connections open on the whole server.
    pub(crate) fn connection_count(&self) -> usize {
        self.connections.load(Ordering::Relaxed)
    }
}

struct CatalogGuard<'a> {
    shard: &'a Shard,
}

impl Drop for CatalogGuard<'_> {
    fn drop(&mut self) {
        self.shard.catalog_busy.set(false);
    }
}

/// The result of a call answered with [`ShardReturn::Done`].
pub(crate) fn expect_done(result: ShardReturn) -> Result<(), Failure> {
    match result {
        ShardReturn::Done(result) => result,
        _ => Err(super::routing::unexpected_answer()),
    }
}

pub(crate) fn unknown_topic(topic: &str) -> Failure {
    Failure::new(ErrorCode::UnknownTopic, format!("unknown topic {topic}"))
}

pub(crate) fn storage_failure(what: &str, error: std::io::Error) -> Failure {
    let code = if error.raw_os_error() == Some(libc::ENOSPC) {
        ErrorCode::DiskFull
    } else {
        ErrorCode::StorageError
    };
    Failure::new(code, format!("{what}: {error}"))
}

/// Longest part of a topic's name kept in its graveyard's name: with `.deleted-`, a dash and
/// the nanoseconds (at most 39 digits) the name stays within NAME_MAX (255 bytes), which a
/// 249-character topic name would pass.
const GRAVEYARD_NAME_PART_BYTES_MAX: usize = 200;

/// Whether `topic_dir` holds a topic's metadata file.
async fn holds_topic_metadata(topic_dir: &std::path::Path) -> std::io::Result<bool> {
    let options = fs::OpenOptions {
        create: false,
        direct: false,
        read_only: true,
    };
    match fs::File::open(&topic_dir.join(topic::TOPIC_FILE_NAME), options).await {
        Ok(_) => Ok(true),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(error) => Err(error),
    }
}

/// The name a deleted topic's directory is renamed to: `.deleted-` (what the next start
/// removes), as much of the topic's name as fits, and the time, which keeps it unique.
fn graveyard_name(topic: &str, nanos: u128) -> String {
    let mut end = topic.len().min(GRAVEYARD_NAME_PART_BYTES_MAX);
    while !topic.is_char_boundary(end) {
        end -= 1;
    }
    format!(".deleted-{}-{nanos}", &topic[..end])
}

/// Removes a deleted topic's directory on a plain thread, so the shard never blocks on it.
fn remove_in_background(path: PathBuf) {
    let spawned = std::thread::Builder::new()
        .name("ringlog-delete".into())
        .spawn(move || {
            if let Err(error) = std::fs::remove_dir_all(&path) {
                tracing::warn!(path = %path.display(), %error, "could not remove deleted topic data");
            }
        });
    if let Err(error) = spawned {
        tracing::warn!(%error, "could not start the deletion thread; data left for the next start");
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;

    use ringlog_engine::reactor::mail::{mesh, Mailbox};
    use ringlog_engine::reactor::{block_on, RingConfig};

    use super::*;

    /// Shard 1 of 2, owning partition `partition` of topic `t`; the caller gets shard 0's
    /// mailbox to play the other shard by hand.
    async fn second_of_two(dir: &std::path::Path) -> (Rc<Shard>, Inbox<Mail>, Mailbox<Mail>, u32) {
        let mut mailboxes = mesh::<Mail>(2, 16).unwrap();
        let Mailbox { inbox, outboxes } = mailboxes.pop().unwrap();
        let first = mailboxes.pop().unwrap();
        let config = Rc::new(ServerConfig {
            cache_bytes_per_shard: 1 << 20,
            read_ahead_bytes_per_shard: 1 << 20,
            ..ServerConfig::default()
        });
        let shard = Shard::new(1, 2, config, dir.to_path_buf(), outboxes, Arc::default());
        let topic = TopicConfig {
            segment_bytes: 1 << 20,
            ..TopicConfig::new(4)
        };
        std::fs::create_dir(dir.join("t")).unwrap();
        shard.open_topic("t", topic).await.unwrap();
        let partition = (0..4).find(|&p| shard.owner("t", p) == 1).unwrap();
        (shard, inbox, first, partition)
    }

    /// Completes once `done` holds, or panics after a few seconds (far less than any wait
    /// the tests start, so a wait that only ends at its max_wait fails them).
    async fn eventually(what: &str, done: impl Fn() -> bool) {
        let polled = async {
            while !done() {
                reactor::yield_now().await;
            }
        };
        let outcome = time::timeout(Duration::from_secs(5), polled).await;
        assert!(outcome.is_ok(), "{what}");
    }

    fn send(outbox: &mut MailSender<Mail>, mail: Mail) {
        assert!(outbox.try_send(mail).is_ok(), "the queue has room");
    }

    /// The answer to call `call_id`, which must come before any other.
    async fn answer(inbox: &mut Inbox<Mail>, call_id: u64) -> ShardReturn {
        match inbox.recv().await {
            Mail::Return {
                call_id: id,
                result,
            } if id == call_id => result,
            Mail::Return { call_id: id, .. } => panic!("answer to call {id} first"),
            _ => panic!("mail other than an answer"),
        }
    }

    fn run<F: Future<Output = ()> + 'static>(test: impl FnOnce(std::path::PathBuf) -> F) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_path_buf();
        block_on(RingConfig::default(), test(path)).unwrap();
    }

    /// A busy owner can find a wait's Call and its Cancel in its queue together: the inbox
    /// loop takes both before the task it spawned for the wait first runs.
    #[test]
    fn a_cancel_queued_right_behind_its_call_ends_the_wait() {
        run(|dir| async move {
            let (shard, inbox, first, partition) = second_of_two(&dir).await;
            let Mailbox {
                inbox: mut answers,
                mut outboxes,
            } = first;
            let call = ShardCall::WaitForData {
                targets: vec![("t".to_string(), partition, 0)],
                max_wait_ms: 600_000,
            };
            let (from, wait_id, barrier_id) = (0, 7, 8);
            send(
                &mut outboxes[1],
                Mail::Call {
                    from,
                    call_id: wait_id,
                    call,
                },
            );
            send(
                &mut outboxes[1],
                Mail::Cancel {
                    from,
                    call_id: wait_id,
                },
            );
            // Answered by a task spawned after the wait's: once it answers, the wait's task
            // has run too.
            send(
                &mut outboxes[1],
                Mail::Call {
                    from,
                    call_id: barrier_id,
                    call: ShardCall::Metrics,
                },
            );
            reactor::spawn(Rc::clone(&shard).run_inbox(inbox));
            assert!(matches!(
                answer(&mut answers, barrier_id).await,
                ShardReturn::Metrics(_)
            ));
            eventually("the cancelled wait ended", || shard.waits_for_others() == 0).await;
            assert!(
                answers.try_recv().is_none(),
                "a cancelled wait answers nothing"
            );
        });
    }

    #[test]
    fn a_graveyard_name_fits_in_a_directory_entry() {
        let longest = "x".repeat(topic::TOPIC_NAME_BYTES_MAX);
        let name = graveyard_name(&longest, u128::MAX);
        assert!(name.len() <= 255, "{} bytes", name.len());
        assert!(name.starts_with(".deleted-x"));
        assert_eq!(graveyard_name("t", 7), ".deleted-t-7");
    }
}
