//! Consumer groups and the group side of share groups.
//!
//! - The coordinator of a group is shard `stable_hash(group) % shards`; it alone keeps the
//!   group's membership (consumer groups) and configuration (share groups), and it alone writes
//!   the group's file ([`meta`]). Every shard keeps a copy of every share group's
//!   configuration, which coordinators send to all shards when it changes.
//! - Membership comes in three kinds, all in memory on the coordinator: the classic protocol's
//!   generations and rebalances ([`membership`], native and Kafka JoinGroup members), Kafka's
//!   consumer group protocol ([`consumer_membership`], KIP-848 heartbeats; a group's members
//!   use one or the other), and share groups' heartbeating Kafka members
//!   ([`share_membership`]; native share members need none).
//! - Committed offsets and share-partition state live on the shard that owns the partition, in
//!   the partition directory ([`partition_state`]), so the owner never waits for another core
//!   to serve a fetch, and a commit or an acknowledgement is durable on the owner before it is
//!   answered.
//! - Requests reach the coordinator and the owners as [`GroupCall`]s over shard mail (directly
//!   when the shard is itself the target).
//!
//! Bounds: groups per server (`groups_max`, split evenly between the coordinating shards so no
//! counter is shared), members per group (`group_members_max`), the in-flight window per share
//! partition, and the frame size for everything a request lists.

pub(crate) mod assignor;
pub(crate) mod commit_metadata;
pub(crate) mod consumer_membership;
mod coordinator;
pub(crate) mod handlers;
pub(crate) mod membership;
pub(crate) mod meta;
mod offsets;
pub(crate) mod partition_state;
pub(crate) mod share_membership;
pub(crate) mod signal;
pub(crate) mod state_record;

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::path::Path;
use std::rc::Rc;
use std::time::Instant;

use ringlog_engine::log::PartitionLog;

use self::assignor::TopicAssignment;
use self::commit_metadata::CommitMetadata;
use self::consumer_membership::{ConsumerBeat, ConsumerBeatAnswer, ConsumerMembership};
use self::membership::{MemberRef, Membership, StaleGeneration};
use self::meta::{GroupMeta, ShareConfig};
use self::partition_state::PartitionGroups;
use self::share_membership::{ShareBeatAnswer, ShareMembership};
use self::signal::Signal;
use super::config::ServerConfig;
use super::message::{Failure, ShardCall, ShardReturn};
use super::shard::Shard;
use super::share::partition::{AckResult, ShareFetched, ShareSummary};
use super::state_store::OpenFiles;
use crate::error_code::ErrorCode;
use crate::message::group::{GroupKind, GroupState};
use crate::message::share_acknowledge::AckRange;

/// A group as its coordinator keeps it.
pub(crate) struct Group {
    /// Name.
    pub(crate) name: String,
    /// Consumer or share group (fixed at creation).
    pub(crate) kind: GroupKind,
    /// Members and generations (consumer groups).
    pub(crate) membership: RefCell<Membership>,
    /// Members that heartbeat (share groups' Kafka members).
    pub(crate) share_members: RefCell<ShareMembership>,
    /// Members using Kafka's consumer group protocol (KIP-848), in a consumer group without
    /// classic members.
    pub(crate) consumer_members: RefCell<ConsumerMembership>,
    /// Configuration (share groups).
    pub(crate) share: RefCell<Rc<ShareConfig>>,
    /// Wakes JoinGroup calls waiting for a rebalance, and configuration changes waiting for
    /// their turn.
    pub(crate) changed: Signal,
    /// A change of the group (a reset, a configuration, a deletion) is under way; the next
    /// change waits for it, and joins and admin commits wait for it to end.
    pub(crate) busy: Cell<bool>,
    /// Where the group is between its creation and its deletion.
    pub(crate) lifecycle: Cell<Lifecycle>,
    /// Since when the group has had no members, as last checked (see
    /// [`coordinator::expire_idle_groups`]).
    pub(crate) empty_since: Cell<Option<Instant>>,
    /// The assignor a Kafka member named at the last join (Kafka's DescribeGroups shows it;
    /// the server assigns partitions itself whatever it is); empty after native joins only.
    pub(crate) protocol: RefCell<String>,
}

/// The stages of a group's life, one at a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lifecycle {
    /// Its file is being written (and a share group's configuration sent to every shard);
    /// requests finding it wait.
    Creating,
    /// Durable: in use.
    Ready,
    /// Creating it failed; those waiting give up.
    CreateFailed,
    /// A DeleteGroup is under way: requests treat the group as unknown, and those that would
    /// create it wait.
    Deleting,
    /// Deleted (and out of the map); those waiting make a new one.
    Deleted,
}

/// Where a reset moves offsets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ResetTo {
    /// The log start offset.
    Earliest,
    /// The high watermark.
    Latest,
    /// The first record at or after this time (ms since the epoch), else the high watermark.
    Timestamp(i64),
    /// Exactly this offset (within the log).
    Offset(i64),
}

/// A JoinGroup as sent to the coordinator.
#[derive(Debug, Clone)]
pub(crate) struct JoinArgs {
    pub(crate) group: String,
    pub(crate) member_id: String,
    /// A static member's instance id (Kafka's `group.instance.id`).
    pub(crate) instance_id: Option<String>,
    pub(crate) client_id: String,
    pub(crate) topics: Vec<String>,
    pub(crate) session_timeout_ms: u32,
    pub(crate) rebalance_timeout_ms: u32,
    /// The assignor protocol a Kafka member chose (empty for native members).
    pub(crate) protocol: String,
    /// Every assignor protocol a Kafka member offers, `protocol` among them (empty for native
    /// members): a member none of whose protocols every other member offers is refused.
    pub(crate) protocols: Vec<String>,
}

/// A JoinGroup's answer.
#[derive(Debug, Clone)]
pub(crate) struct Joined {
    pub(crate) member_id: String,
    pub(crate) generation: i32,
    pub(crate) heartbeat_interval_ms: u32,
    pub(crate) assignment: Vec<TopicAssignment>,
}

/// One partition's offset to commit.
#[derive(Debug, Clone)]
pub(crate) struct PartitionCommit {
    pub(crate) partition: u32,
    pub(crate) offset: i64,
    /// Replaces the metadata of the previous commit (`None` clears it).
    pub(crate) metadata: Option<CommitMetadata>,
}

/// Offsets to commit, per topic.
pub(crate) type CommitTopics = Vec<(String, Vec<PartitionCommit>)>;
/// Per topic, per partition, the commit's outcome.
pub(crate) type CommitResults = Vec<(String, Vec<(u32, Option<Failure>)>)>;
/// Per partition, the offset a reset moved to.
pub(crate) type ResetResults = Vec<(u32, Result<i64, Failure>)>;
/// Partitions asked for: per topic, partition ids (empty: all of the topic).
pub(crate) type TopicFilter = Vec<(String, Vec<u32>)>;

/// A committed offset with the partition's high watermark.
#[derive(Debug, Clone)]
pub(crate) struct OffsetEntry {
    pub(crate) topic: String,
    pub(crate) partition: u32,
    pub(crate) committed: i64,
    /// What was committed with the offset.
    pub(crate) metadata: Option<CommitMetadata>,
    pub(crate) high_watermark: i64,
    pub(crate) failure: Option<Failure>,
}

impl OffsetEntry {
    /// `high_watermark - committed`, -1 when either is unknown.
    pub(crate) fn lag(&self) -> i64 {
        if self.committed < 0 || self.high_watermark < 0 {
            -1
        } else {
            (self.high_watermark - self.committed).max(0)
        }
    }
}

/// A member as DescribeGroup shows it.
#[derive(Debug, Clone)]
pub(crate) struct MemberInfo {
    pub(crate) member_id: String,
    /// A static member's instance id.
    pub(crate) instance_id: Option<String>,
    pub(crate) client_id: String,
    pub(crate) assignment: Vec<TopicAssignment>,
    /// A share group's heartbeating member: its epoch and subscribed topics (the assignment
    /// is every partition of those that exist).
    pub(crate) share_heartbeat: Option<(i32, Vec<String>)>,
}

/// Everything DescribeGroup reports.
#[derive(Debug, Clone)]
pub(crate) struct GroupDescription {
    pub(crate) name: String,
    pub(crate) kind: GroupKind,
    pub(crate) state: GroupState,
    pub(crate) generation: i32,
    /// The assignor Kafka members named (empty for share groups and native members).
    pub(crate) protocol: String,
    pub(crate) members: Vec<MemberInfo>,
    pub(crate) offsets: Vec<OffsetEntry>,
    pub(crate) share_config: Option<ShareConfig>,
    pub(crate) shares: Vec<ShareSummary>,
}

/// One group in a listing.
#[derive(Debug, Clone)]
pub(crate) struct GroupListing {
    pub(crate) name: String,
    pub(crate) kind: GroupKind,
    pub(crate) state: GroupState,
    pub(crate) member_count: u32,
    /// A consumer group whose members use Kafka's consumer group protocol (KIP-848).
    pub(crate) consumer_protocol: bool,
}

/// What one shard knows for ListGroups.
#[derive(Debug, Clone, Default)]
pub(crate) struct LocalGroups {
    /// Groups this shard coordinates.
    pub(crate) coordinated: Vec<GroupListing>,
    /// Share groups with partitions here, and their recently active members.
    pub(crate) share_members: Vec<(String, Vec<String>)>,
}

/// A configuration change (absent fields unchanged; an empty dead-letter topic removes it).
#[derive(Debug, Clone, Default)]
pub(crate) struct ConfigureArgs {
    pub(crate) group: String,
    pub(crate) lock_ms: Option<u32>,
    pub(crate) delivery_limit: Option<u16>,
    pub(crate) dead_letter_topic: Option<String>,
    pub(crate) in_flight_records_max: Option<u32>,
}

/// A ShareFetch as sent to the partition owner.
#[derive(Debug, Clone)]
pub(crate) struct ShareFetchArgs {
    pub(crate) group: String,
    pub(crate) member_id: String,
    pub(crate) topic: String,
    pub(crate) partition: u32,
    pub(crate) max_records: u32,
    pub(crate) max_wait_ms: u32,
    pub(crate) max_bytes: u32,
    pub(crate) acks: Vec<AckRange>,
}

/// A ShareAcknowledge as sent to the partition owner.
#[derive(Debug, Clone)]
pub(crate) struct ShareAckArgs {
    pub(crate) group: String,
    pub(crate) member_id: String,
    pub(crate) topic: String,
    pub(crate) partition: u32,
    pub(crate) ranges: Vec<AckRange>,
    /// The member leaves the partition after the ranges (see `ShareAcknowledgeRequest`).
    pub(crate) leave: bool,
}

/// Work for a coordinator, a partition owner or every shard.
pub(crate) enum GroupCall {
    // To the coordinator.
    Join(JoinArgs),
    Heartbeat {
        group: String,
        member: MemberRef,
        generation: i32,
        /// How a generation other than the group's is refused.
        stale: StaleGeneration,
    },
    Leave {
        group: String,
        member: MemberRef,
    },
    Commit {
        group: String,
        member: MemberRef,
        generation: i32,
        /// How a generation other than the group's is refused.
        stale: StaleGeneration,
        topics: CommitTopics,
    },
    FetchOffsets {
        group: String,
        topics: Option<TopicFilter>,
    },
    /// OffsetDelete: forget the group's offsets of these partitions of `topic`.
    DeleteOffsets {
        group: String,
        topic: String,
        partitions: Vec<u32>,
    },
    Describe {
        group: String,
    },
    Reset {
        group: String,
        topic: String,
        partitions: Vec<u32>,
        to: ResetTo,
    },
    Configure(ConfigureArgs),
    /// ConsumerGroupHeartbeat of a member using Kafka's consumer group protocol (creates the
    /// group when missing).
    ConsumerHeartbeat {
        group: String,
        member_id: String,
        epoch: i32,
        topics: Option<Vec<String>>,
        owned: Option<Vec<TopicAssignment>>,
        /// `None`: unchanged (clients send -1 after joining).
        rebalance_timeout_ms: Option<u32>,
    },
    /// ShareGroupHeartbeat of a Kafka share member (creates the share group when missing).
    ShareHeartbeat {
        group: String,
        member_id: String,
        epoch: i32,
        topics: Option<Vec<String>>,
    },
    /// The share group's configuration (created with defaults when `create` is set).
    ShareGroup {
        group: String,
        create: bool,
    },
    Delete {
        group: String,
    },
    // To every shard.
    ListLocal,
    ShareConfigChanged {
        group: String,
        config: ShareConfig,
    },
    /// The group is being deleted: forget its offsets and share state here, durably.
    Forget {
        group: String,
    },
    // To a partition owner.
    StoreOffsets {
        group: String,
        topic: String,
        offsets: Vec<PartitionCommit>,
    },
    /// OffsetDelete on the partitions' owner.
    ForgetOffsets {
        group: String,
        topic: String,
        partitions: Vec<u32>,
    },
    LoadOffsets {
        group: String,
        topics: Option<TopicFilter>,
    },
    ResetPartitions {
        group: String,
        kind: GroupKind,
        topic: String,
        partitions: Vec<u32>,
        to: ResetTo,
    },
    DescribeShares {
        group: String,
    },
    ShareFetch(ShareFetchArgs),
    ShareAck(ShareAckArgs),
}

/// Answers to [`GroupCall`]s.
pub(crate) enum GroupReturn {
    Joined(Result<Joined, Failure>),
    Done(Result<(), Failure>),
    Committed(Result<CommitResults, Failure>),
    Offsets(Result<Vec<OffsetEntry>, Failure>),
    Described(Result<GroupDescription, Failure>),
    Reset(Result<ResetResults, Failure>),
    Config(Result<ShareConfig, Failure>),
    Listed(LocalGroups),
    Shares(Result<(Vec<ShareSummary>, Vec<String>), Failure>),
    ShareFetched(Result<ShareFetched, Failure>),
    Acked(Result<Vec<AckResult>, Failure>),
    ShareBeat(Result<ShareBeatAnswer, Failure>),
    ConsumerBeat(Result<ConsumerBeatAnswer, Failure>),
}

/// Group state of one shard.
pub(crate) struct GroupShard {
    id: usize,
    shard_count: usize,
    groups: RefCell<HashMap<String, Rc<Group>>>,
    partitions: RefCell<HashMap<String, HashMap<u32, Rc<PartitionGroups>>>>,
    share_configs: RefCell<HashMap<String, Rc<ShareConfig>>>,
    /// Groups forgotten (deleted) on this shard so far: a share configuration asked of a
    /// coordinator before a deletion must not be cached after it (see [`Self::forgotten`]).
    forgotten: Cell<u64>,
    /// Groups this shard may coordinate: its share of the server's `groups_max`.
    groups_max: usize,
    members_max: usize,
    in_flight_default: u32,
    /// Distinguishes member ids given by this run from those of earlier runs.
    run_id: u64,
    member_seq: Cell<u64>,
    reaper_started: Cell<bool>,
    /// Turns of this shard's partition state stores to have their file open.
    state_files: Rc<OpenFiles>,
}

impl GroupShard {
    /// Loads the groups of `data_dir` (startup, blocking): those this shard coordinates, and
    /// every share group's configuration.
    pub(crate) fn new(
        id: usize,
        shard_count: usize,
        config: &ServerConfig,
        data_dir: &Path,
    ) -> GroupShard {
        let run_id = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        let shard = GroupShard {
            id,
            shard_count,
            groups: RefCell::new(HashMap::new()),
            partitions: RefCell::new(HashMap::new()),
            share_configs: RefCell::new(HashMap::new()),
            forgotten: Cell::new(0),
            groups_max: config.groups_max.div_ceil(shard_count.max(1)),
            members_max: config.group_members_max,
            in_flight_default: config.share_in_flight_records_max,
            run_id,
            member_seq: Cell::new(0),
            reaper_started: Cell::new(false),
            state_files: Rc::default(),
        };
        for (name, meta) in meta::load_all(data_dir, config.share_in_flight_records_max) {
            let share = Rc::new(meta.share.clone());
            if meta.kind == GroupKind::Share {
                shard
                    .share_configs
                    .borrow_mut()
                    .insert(name.clone(), Rc::clone(&share));
            }
            if shard.coordinator_of(&name) == id {
                let group = Rc::new(Group::new(name.clone(), meta.kind, share));
                group.lifecycle.set(Lifecycle::Ready);
                shard.groups.borrow_mut().insert(name, group);
            }
        }
        shard
    }

    /// A topic was created, deleted or gained partitions: the consumer groups this shard
    /// coordinates with a member subscribed to it rebalance, so that their members rejoin at
    /// their next heartbeat and are assigned the topic's partitions as the catalog has them
    /// now (none once it is deleted). Call it once this shard's catalog has the change.
    pub(crate) fn topic_changed(&self, topic: &str) {
        let now = Instant::now();
        for group in self.groups.borrow().values() {
            if group
                .membership
                .borrow_mut()
                .rebalance_for_topic(topic, now)
            {
                group.changed.notify();
            }
        }
    }

    /// A topic was deleted: members of groups this shard coordinates lose its partitions at
    /// once (a commit for them is refused, even after a topic of the same name is created),
    /// and the groups reading it rebalance.
    pub(crate) fn topic_deleted(&self, topic: &str) {
        for group in self.groups.borrow().values() {
            group.membership.borrow_mut().revoke_topic(topic);
            group.consumer_members.borrow_mut().forget_topic(topic);
        }
        self.topic_changed(topic);
    }

    /// The shard coordinating `group`.
    pub(crate) fn coordinator_of(&self, group: &str) -> usize {
        (ringlog_engine::topic::stable_hash(group) % self.shard_count as u64) as usize
    }

    /// A group this shard coordinates.
    pub(crate) fn group(&self, name: &str) -> Option<Rc<Group>> {
        self.groups.borrow().get(name).cloned()
    }

    /// The group state of an owned partition.
    pub(crate) fn partition(&self, topic: &str, partition: u32) -> Option<Rc<PartitionGroups>> {
        self.partitions
            .borrow()
            .get(topic)
            .and_then(|owned| owned.get(&partition).cloned())
    }

    /// Every owned partition's group state.
    pub(crate) fn all_partitions(&self) -> Vec<Rc<PartitionGroups>> {
        self.partitions
            .borrow()
            .values()
            .flat_map(|owned| owned.values().cloned())
            .collect()
    }

    /// Opens the group state of a partition this shard just opened.
    pub(crate) async fn open_partition(
        &self,
        topic: &str,
        partition: u32,
        log: &Rc<PartitionLog>,
    ) -> Result<(), Failure> {
        let files = Rc::clone(&self.state_files);
        let state = PartitionGroups::open(topic, partition, Rc::clone(log), files).await?;
        let previous = self
            .partitions
            .borrow_mut()
            .entry(topic.to_string())
            .or_default()
            .insert(partition, state);
        if let Some(previous) = previous {
            previous.close().await;
        }
        Ok(())
    }

    /// Closes the group state of a deleted topic's partitions.
    pub(crate) async fn drop_topic(&self, topic: &str) {
        let owned = self.partitions.borrow_mut().remove(topic);
        for state in owned.into_iter().flat_map(HashMap::into_values) {
            state.close().await;
        }
    }

    /// Writes what is pending and closes every state file (shutdown).
    pub(crate) async fn close_all(&self) {
        let all: Vec<_> = self.partitions.borrow_mut().drain().collect();
        for state in all.into_iter().flat_map(|(_, owned)| owned.into_values()) {
            state.close().await;
        }
    }

    /// A share group's configuration as this shard knows it.
    pub(crate) fn share_config(&self, group: &str) -> Option<Rc<ShareConfig>> {
        self.share_configs.borrow().get(group).cloned()
    }

    /// Caches a share group's configuration learnt from its coordinator's answer, unless a
    /// (possibly newer) one is already known; returns the one in force.
    /// How many groups this shard has forgotten so far. A caller that awaits its coordinator
    /// for a share group's configuration compares it before and after: a deletion of that
    /// group may have gone by meanwhile, and the answer from before it would make this shard
    /// create the group's share partitions again, unknown to the coordinator.
    pub(crate) fn forgotten(&self) -> u64 {
        self.forgotten.get()
    }

    pub(crate) fn learn_share_config(&self, group: &str, config: ShareConfig) -> Rc<ShareConfig> {
        Rc::clone(
            self.share_configs
                .borrow_mut()
                .entry(group.to_string())
                .or_insert_with(|| Rc::new(config)),
        )
    }

    /// Takes a share group's new configuration (sent by its coordinator).
    fn set_share_config(&self, group: &str, config: ShareConfig) {
        let config = Rc::new(config);
        self.share_configs
            .borrow_mut()
            .insert(group.to_string(), Rc::clone(&config));
        for state in self.all_partitions() {
            if let Some(share) = state.share(group) {
                share.set_config(&config);
            }
        }
    }

    /// Forgets deleted group `group` here: its share configuration and its state in every
    /// partition this shard owns, durably when this returns.
    async fn forget(&self, group: &str) -> Result<(), Failure> {
        self.forgotten.set(self.forgotten.get() + 1);
        self.share_configs.borrow_mut().remove(group);
        let mut pending = Vec::new();
        for state in self.all_partitions() {
            pending.extend(state.forget(group)?);
        }
        for durable in pending {
            durable.await.map_err(partition_state::store_failure)?;
        }
        Ok(())
    }

    /// A new member id, unique across runs of the server.
    pub(crate) fn new_member_id(&self, client_id: &str) -> String {
        let seq = self.member_seq.get() + 1;
        self.member_seq.set(seq);
        let prefix: String = client_id
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            .take(64)
            .collect();
        let prefix = if prefix.is_empty() { "member" } else { &prefix };
        format!("{prefix}-{:x}-{}-{seq}", self.run_id, self.id)
    }

    /// What this shard reports for ListGroups.
    fn local_listing(&self) -> LocalGroups {
        let mut coordinated = Vec::new();
        let groups = self.groups.borrow();
        for group in groups
            .values()
            .filter(|group| group.lifecycle.get() != Lifecycle::Deleting)
        {
            let listing = if group.uses_consumer_protocol() {
                // No generations: a group whose members heartbeat is Stable.
                let members = group.consumer_members.borrow().len();
                (GroupState::Stable, members, true)
            } else {
                let membership = group.membership.borrow();
                (membership.state(), membership.members().len(), false)
            };
            coordinated.push(GroupListing {
                name: group.name.clone(),
                kind: group.kind,
                state: listing.0,
                member_count: u32::try_from(listing.1).unwrap_or(u32::MAX),
                consumer_protocol: listing.2,
            });
        }
        let mut members: HashMap<String, Vec<String>> = HashMap::new();
        for state in self.all_partitions() {
            for share in state.shares() {
                members
                    .entry(share.group().to_string())
                    .or_default()
                    .extend(share.active_members());
            }
        }
        LocalGroups {
            coordinated,
            share_members: members.into_iter().collect(),
        }
    }
}

impl Group {
    fn new(name: String, kind: GroupKind, share: Rc<ShareConfig>) -> Group {
        Group {
            name,
            kind,
            membership: RefCell::new(Membership::default()),
            share_members: RefCell::new(ShareMembership::default()),
            consumer_members: RefCell::new(ConsumerMembership::default()),
            share: RefCell::new(share),
            changed: Signal::default(),
            busy: Cell::new(false),
            lifecycle: Cell::new(Lifecycle::Creating),
            empty_since: Cell::new(None),
            protocol: RefCell::new(String::new()),
        }
    }

    /// Whether the consumer group has members, of either protocol.
    pub(crate) fn has_members(&self) -> bool {
        !self.membership.borrow().is_empty() || !self.consumer_members.borrow().is_empty()
    }

    /// Whether the group's members use Kafka's consumer group protocol (KIP-848).
    pub(crate) fn uses_consumer_protocol(&self) -> bool {
        !self.consumer_members.borrow().is_empty()
    }

    /// Whether `member_id` may commit `topic`/`partition` (its protocol's rule).
    pub(crate) fn owns(&self, member_id: &str, topic: &str, partition: u32) -> bool {
        if self.uses_consumer_protocol() {
            self.consumer_members
                .borrow()
                .owns(member_id, topic, partition)
        } else {
            self.membership.borrow().owns(member_id, topic, partition)
        }
    }

    /// Whether a member of either protocol subscribes to `topic`.
    pub(crate) fn subscribes(&self, topic: &str) -> bool {
        self.membership.borrow().subscribes(topic)
            || self.consumer_members.borrow().subscribes(topic)
    }

    /// The durable description.
    fn meta(&self) -> GroupMeta {
        GroupMeta {
            kind: self.kind,
            share: (**self.share.borrow()).clone(),
        }
    }
}

/// Does a group call on this shard.
pub(crate) async fn execute(shard: &Rc<Shard>, call: GroupCall) -> GroupReturn {
    use GroupCall as C;
    use GroupReturn as R;
    match call {
        C::Join(args) => R::Joined(coordinator::join(shard, args).await),
        C::Heartbeat {
            group,
            member,
            generation,
            stale,
        } => R::Done(coordinator::heartbeat(
            shard, &group, &member, generation, stale,
        )),
        C::Leave { group, member } => R::Done(coordinator::leave(shard, &group, &member)),
        C::Commit {
            group,
            member,
            generation,
            stale,
            topics,
        } => R::Committed(
            coordinator::commit(shard, &group, &member, generation, stale, topics).await,
        ),
        C::FetchOffsets { group, topics } => {
            R::Offsets(coordinator::fetch_offsets(shard, &group, topics).await)
        }
        C::DeleteOffsets {
            group,
            topic,
            partitions,
        } => R::Committed(coordinator::delete_offsets(shard, &group, &topic, partitions).await),
        C::Describe { group } => R::Described(coordinator::describe(shard, &group).await),
        C::Reset {
            group,
            topic,
            partitions,
            to,
        } => R::Reset(coordinator::reset(shard, &group, &topic, partitions, to).await),
        C::Configure(args) => R::Config(coordinator::configure(shard, args).await),
        C::ConsumerHeartbeat {
            group,
            member_id,
            epoch,
            topics,
            owned,
            rebalance_timeout_ms,
        } => R::ConsumerBeat(
            coordinator::consumer_heartbeat(
                shard,
                &group,
                ConsumerBeat {
                    member_id: &member_id,
                    epoch,
                    topics,
                    owned,
                    rebalance_timeout: rebalance_timeout_ms
                        .map(|ms| std::time::Duration::from_millis(u64::from(ms))),
                },
            )
            .await,
        ),
        C::ShareHeartbeat {
            group,
            member_id,
            epoch,
            topics,
        } => R::ShareBeat(
            coordinator::share_heartbeat(shard, &group, &member_id, epoch, topics).await,
        ),
        C::ShareGroup { group, create } => {
            R::Config(coordinator::share_group(shard, &group, create).await)
        }
        C::Delete { group } => R::Done(coordinator::delete(shard, &group).await),
        C::ListLocal => R::Listed(shard.groups.local_listing()),
        C::Forget { group } => R::Done(shard.groups.forget(&group).await),
        C::ShareConfigChanged { group, config } => {
            shard.groups.set_share_config(&group, config);
            R::Done(Ok(()))
        }
        C::StoreOffsets {
            group,
            topic,
            offsets,
        } => R::Committed(offsets::store(shard, &group, &topic, offsets).await),
        C::ForgetOffsets {
            group,
            topic,
            partitions,
        } => R::Committed(offsets::forget(shard, &group, &topic, partitions).await),
        C::LoadOffsets { group, topics } => R::Offsets(offsets::load(shard, &group, topics)),
        C::ResetPartitions {
            group,
            kind,
            topic,
            partitions,
            to,
        } => R::Reset(offsets::reset(shard, &group, kind, &topic, partitions, to).await),
        C::DescribeShares { group } => R::Shares(Ok(super::share::describe(shard, &group))),
        C::ShareFetch(args) => {
            let never = super::latch::Latch::default();
            R::ShareFetched(super::share::fetch(shard, args, &never).await)
        }
        C::ShareAck(args) => R::Acked(super::share::acknowledge(shard, args).await),
    }
}

/// Runs `call` on shard `target` and returns its answer.
pub(crate) async fn call(shard: &Rc<Shard>, target: usize, call: GroupCall) -> GroupReturn {
    match shard.call(target, ShardCall::Group(call)).await {
        ShardReturn::Group(answer) => answer,
        _ => GroupReturn::Done(Err(unexpected())),
    }
}

/// The failure for an answer of the wrong kind (a bug).
pub(crate) fn unexpected() -> Failure {
    Failure::new(ErrorCode::Unknown, "internal: unexpected shard answer")
}

pub(crate) use super::routing::join_all;
pub(crate) use coordinator::{expire_idle_groups, session_timeout_accepted};
