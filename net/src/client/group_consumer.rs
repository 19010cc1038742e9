//! [`GroupConsumer`]: a member of a consumer group reading one topic. The group's coordinator
//! splits the topic's partitions between its members; this consumer reads its share from the
//! committed offsets on, commits as it goes and follows rebalances.
//!
//! Membership is kept from [`GroupConsumer::poll`]: it joins on the first poll, sends a
//! heartbeat whenever the interval the coordinator asked for has passed, and when told that
//! the group rebalances it commits what it has returned so far (with automatic commits) and
//! joins again, which may change its partitions. Call `poll` at least every session timeout
//! (10 s by default); a poll never waits longer than one heartbeat interval.
//!
//! A connection that fails (the server restarted or cannot be reached) is made again, as in
//! Kafka's consumer, and polls return no records meanwhile instead of failing (see
//! [`Consumer::poll`]). A restarted coordinator may have forgotten the member: it then joins
//! again and reads from the group's committed offsets, so the records returned after the last
//! commit may come again (at least once), and none is skipped.

use std::collections::HashMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::{Duration, Instant};

use super::backoff::Backoff;
use super::calls::Client;
use super::connection::ConnectionConfig;
use super::consumer::{Consumer, ConsumerConfig, ConsumerRecord, PositionReset, Records, SeekTo};
use super::error::ClientError;
use crate::api::ApiKey;
use crate::error_code::ErrorCode;
use crate::message::offset_commit::{self, CommitTopic, PartitionOffset};
use crate::message::{heartbeat, join_group, leave_group, TopicPartitions};

/// How a [`GroupConsumer`] takes part in its group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupConsumerConfig {
    /// Shown by DescribeGroup next to the member id.
    pub client_id: String,
    /// The member is removed when no heartbeat arrives for this long.
    pub session_timeout_ms: u32,
    /// How long a rebalance waits for members to rejoin.
    pub rebalance_timeout_ms: u32,
    /// Longest time between heartbeats (the coordinator may ask for a shorter one); it also
    /// bounds how long a rebalance goes unnoticed.
    pub heartbeat_interval_ms: u32,
    /// Commit the positions of returned records automatically (at most every
    /// `auto_commit_interval_ms`, before rebalances and on close).
    pub auto_commit: bool,
    /// Least time between automatic commits; 0 commits at every poll.
    pub auto_commit_interval_ms: u64,
    /// Fetching; `auto_offset_reset` applies to partitions the group never committed.
    pub consumer: ConsumerConfig,
    /// Makes the member static (Kafka's `group.instance.id`, KIP-345): an id unique in the
    /// group that the application keeps across restarts (a host or pod name). A static member
    /// does not leave on [`GroupConsumer::close`]; started again with the same id within its
    /// session timeout it takes its partitions back without a rebalance, and the instance it
    /// replaced gets FencedInstanceId from then on. `None`: a dynamic member.
    pub group_instance_id: Option<String>,
}

impl Default for GroupConsumerConfig {
    fn default() -> Self {
        Self {
            client_id: "ringlog-group-consumer".to_owned(),
            session_timeout_ms: join_group::SESSION_TIMEOUT_MS_DEFAULT,
            rebalance_timeout_ms: join_group::REBALANCE_TIMEOUT_MS_DEFAULT,
            heartbeat_interval_ms: 3_000,
            auto_commit: true,
            auto_commit_interval_ms: 1_000,
            consumer: ConsumerConfig::default(),
            group_instance_id: None,
        }
    }
}

/// Records of one [`GroupConsumer::poll`] (possibly none), borrowing the fetch response.
#[derive(Debug)]
pub struct GroupRecords<'a> {
    inner: Option<Records<'a>>,
}

impl<'a> Iterator for GroupRecords<'a> {
    type Item = Result<ConsumerRecord<'a>, ClientError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.inner.as_mut()?.next()
    }
}

/// The connection group calls go over, made again when it failed.
#[derive(Debug)]
struct Coordinator {
    client: Client,
    /// The server's addresses, resolved once by `subscribe`.
    addrs: Vec<SocketAddr>,
    config: ConnectionConfig,
}

impl Coordinator {
    /// Runs `call` on the connection, connecting it again first when it failed, and once more
    /// when `call` finds it failed (a server restarted since the last call).
    fn call<T>(
        &mut self,
        mut call: impl FnMut(&mut Client) -> Result<T, ClientError>,
    ) -> Result<T, ClientError> {
        let fresh = self.reconnect()?;
        match call(&mut self.client) {
            Err(error) if !fresh && self.client.connection_ref().broken().is_some() => {
                tracing::warn!(%error, "group coordinator connection failed; connecting again");
                self.reconnect()?;
                call(&mut self.client)
            }
            other => other,
        }
    }

    /// Replaces a failed connection with a new one; returns whether it did.
    fn reconnect(&mut self) -> Result<bool, ClientError> {
        if self.client.connection_ref().broken().is_none() {
            return Ok(false);
        }
        self.client = Client::connect_with(self.addrs.as_slice(), self.config)?;
        Ok(true)
    }
}

/// A consumer-group member; see the module docs.
///
/// ```no_run
/// use std::time::Duration;
/// use ringlog_net::client::{GroupConsumer, GroupConsumerConfig};
///
/// # fn main() -> Result<(), ringlog_net::client::ClientError> {
/// let mut consumer =
///     GroupConsumer::subscribe("127.0.0.1:9292", "billing", "orders", GroupConsumerConfig::default())?;
/// for _ in 0..100 {
///     for record in consumer.poll(Duration::from_secs(1))? {
///         let record = record?;
///         println!("{}/{}: {:?}", record.partition, record.offset, record.value);
///     }
/// }
/// consumer.close()?; // commits and leaves the group
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct GroupConsumer {
    coordinator: Coordinator,
    consumer: Consumer,
    config: GroupConsumerConfig,
    group: String,
    topic: String,
    member_id: String,
    generation: i32,
    /// Holds a current assignment (false before the first join and after a rebalance).
    joined: bool,
    assigned: Vec<u32>,
    heartbeat_interval: Duration,
    last_heartbeat: Instant,
    last_commit: Instant,
    /// Offsets last committed per partition, to skip commits that change nothing.
    committed: HashMap<u32, i64>,
    /// Delay before joining again when the coordinator could not be reached.
    join_backoff: Backoff,
}

impl GroupConsumer {
    /// Connects (two connections: one to the coordinator, one for fetching). The group is
    /// joined by the first [`GroupConsumer::poll`].
    pub fn subscribe(
        addr: impl ToSocketAddrs,
        group: &str,
        topic: &str,
        config: GroupConsumerConfig,
    ) -> Result<Self, ClientError> {
        let addrs: Vec<SocketAddr> = addr.to_socket_addrs()?.collect();
        let connection = config.consumer.connection;
        let coordinator = Coordinator {
            client: Client::connect_with(addrs.as_slice(), connection)?,
            addrs,
            config: connection,
        };
        let consumer = Consumer::connect(coordinator.addrs.as_slice(), config.consumer)?;
        let now = Instant::now();
        Ok(Self {
            join_backoff: Backoff::from_ms(
                u64::from(config.consumer.reconnect_backoff_ms),
                u64::from(config.consumer.reconnect_backoff_max_ms),
            ),
            coordinator,
            consumer,
            group: group.to_owned(),
            topic: topic.to_owned(),
            member_id: String::new(),
            generation: -1,
            joined: false,
            assigned: Vec::new(),
            heartbeat_interval: Duration::from_millis(u64::from(
                config.heartbeat_interval_ms.max(1),
            )),
            last_heartbeat: now,
            last_commit: now,
            committed: HashMap::new(),
            config,
        })
    }

    /// The member id the coordinator gave (empty before the first join).
    pub fn member_id(&self) -> &str {
        &self.member_id
    }

    /// Generation of the current assignment, -1 before the first join.
    pub fn generation(&self) -> i32 {
        self.generation
    }

    /// Partitions assigned now.
    pub fn assignment(&self) -> &[u32] {
        &self.assigned
    }

    /// Offset of the next record `poll` returns for `partition`, once known.
    pub fn position(&self, partition: u32) -> Option<i64> {
        self.consumer.position(partition)
    }

    /// Positions that left the log and where `auto_offset_reset` moved them since the last
    /// call (see [`Consumer::take_resets`]).
    pub fn take_resets(&mut self) -> impl Iterator<Item = PositionReset> + '_ {
        self.consumer.take_resets()
    }

    /// Waits up to `timeout` (at most one heartbeat interval) for records of the assigned
    /// partitions, keeping the membership alive and following rebalances. While the server
    /// cannot be reached, returns no records at `timeout` rather than an error (see
    /// [`Consumer::poll`]); joining is tried again after a backoff.
    pub fn poll(&mut self, timeout: Duration) -> Result<GroupRecords<'_>, ClientError> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Err(error) = self.ensure_joined() {
                if !error.is_connection_failure() {
                    return Err(error);
                }
                tracing::warn!(%error, group = %self.group, "cannot join the group now; trying again after a backoff");
                let left = deadline.saturating_duration_since(Instant::now());
                std::thread::sleep(self.join_backoff.next().min(left));
                if Instant::now() >= deadline {
                    return Ok(GroupRecords { inner: None });
                }
                continue;
            }
            if self.config.auto_commit
                && self.last_commit.elapsed()
                    >= Duration::from_millis(self.config.auto_commit_interval_ms)
            {
                self.auto_commit();
                if !self.joined {
                    // The commit learnt the membership is gone (session expired, rebalance):
                    // records fetched now could be another member's and would come again
                    // after the rejoin. Rejoin first.
                    continue;
                }
            }
            if !self.heartbeat_if_due()? {
                continue;
            }
            let until_heartbeat = self
                .heartbeat_interval
                .saturating_sub(self.last_heartbeat.elapsed());
            let wait = deadline
                .saturating_duration_since(Instant::now())
                .min(until_heartbeat);
            if self.assigned.is_empty() {
                // More members than partitions: nothing to read, but stay in the group.
                std::thread::sleep(wait);
                if Instant::now() >= deadline {
                    return Ok(GroupRecords { inner: None });
                }
                continue;
            }
            let records = self.consumer.poll(wait)?;
            return Ok(GroupRecords {
                inner: Some(records),
            });
        }
    }

    /// Commits the positions of every assigned partition (after the records `poll` returned).
    pub fn commit(&mut self) -> Result<(), ClientError> {
        let result = self.commit_positions();
        if let Err(error) = &result {
            self.note_membership_error(error);
        }
        result
    }

    /// Commits `(partition, next offset)` pairs; fails on the first partition refused.
    pub fn commit_offsets(&mut self, offsets: &[(u32, i64)]) -> Result<(), ClientError> {
        let result = self.send_commit(offsets);
        if let Err(error) = &result {
            self.note_membership_error(error);
        }
        result
    }

    fn commit_positions(&mut self) -> Result<(), ClientError> {
        let offsets: Vec<(u32, i64)> = self
            .assigned
            .iter()
            .filter_map(|&p| Some((p, self.consumer.position(p)?)))
            .filter(|(p, offset)| self.committed.get(p) != Some(offset))
            .collect();
        self.send_commit(&offsets)
    }

    /// Sends a commit without reacting to membership errors.
    fn send_commit(&mut self, offsets: &[(u32, i64)]) -> Result<(), ClientError> {
        self.last_commit = Instant::now();
        if offsets.is_empty() {
            return Ok(());
        }
        if !self.joined {
            // Not a member now (the membership ended, a rejoin is due): nothing can be
            // committed, and saying Ok would promise what the next member will not see.
            return Err(ClientError::server(
                ApiKey::OffsetCommit,
                ErrorCode::RebalanceInProgress,
                "not a member of the group now; nothing committed (the next poll rejoins)",
            ));
        }
        let partitions: Vec<PartitionOffset> = offsets
            .iter()
            .map(|&(partition, offset)| PartitionOffset { partition, offset })
            .collect();
        let topics = [CommitTopic {
            topic: &self.topic,
            partitions: &partitions,
        }];
        let results = self.coordinator.call(|coordinator| {
            coordinator.commit_offsets(&offset_commit::Request {
                group: &self.group,
                member_id: &self.member_id,
                generation: self.generation,
                topics: &topics,
                instance_id: instance_id(&self.config),
            })
        });
        for outcome in results? {
            let offset = outcome.result?;
            self.committed.insert(outcome.entry.1, offset);
        }
        Ok(())
    }

    /// Commits (with automatic commits) and leaves the group, so the others rebalance now.
    /// A member between generations (told of a rebalance it has not rejoined yet) leaves too,
    /// as Kafka's consumer does: else the rebalance waits for it until its timeout. A static
    /// member commits and stays, as Kafka's do: its partitions wait for it to start again
    /// (or for its session to expire).
    pub fn close(mut self) -> Result<(), ClientError> {
        if self.member_id.is_empty() {
            return Ok(());
        }
        let committed = if self.joined && self.config.auto_commit {
            self.commit_positions()
        } else {
            Ok(())
        };
        if self.config.group_instance_id.is_some() {
            return committed;
        }
        let left = match self.coordinator.call(|coordinator| {
            coordinator.leave_group(&leave_group::Request {
                group: &self.group,
                member_id: &self.member_id,
                instance_id: "",
            })
        }) {
            // Between generations the coordinator may have dropped it already.
            Err(error)
                if !self.joined
                    && matches!(
                        error.code(),
                        Some(ErrorCode::UnknownMember | ErrorCode::UnknownGroup)
                    ) =>
            {
                Ok(())
            }
            other => other,
        };
        committed.and(left)
    }

    /// Joins (or rejoins) when there is no current assignment, and positions the partitions
    /// at the group's committed offsets.
    fn ensure_joined(&mut self) -> Result<(), ClientError> {
        if self.joined {
            return Ok(());
        }
        // Each round is one JoinGroup, which the coordinator answers by its deadline.
        let joined = loop {
            match self.join() {
                Ok(joined) => break joined,
                // Forgotten by the coordinator (session expired, server restarted): join as
                // new. Once the id is cleared this cannot come again.
                Err(error)
                    if error.code() == Some(ErrorCode::UnknownMember)
                        && !self.member_id.is_empty() =>
                {
                    self.member_id.clear();
                }
                // The rebalance goes on past this member's rebalance timeout (another member
                // waits longer, or joined later): not a failure, join it again, as Kafka's
                // clients do. The coordinator answers this only at that timeout, so the loop
                // does not spin.
                Err(error) if error.code() == Some(ErrorCode::RebalanceInProgress) => {
                    tracing::debug!(group = %self.group, "rebalance still running; joining again");
                }
                Err(error) => return Err(error),
            }
        };
        self.join_backoff.reset();
        self.member_id = joined.member_id;
        self.generation = joined.generation;
        let interval_ms = joined
            .heartbeat_interval_ms
            .min(self.config.heartbeat_interval_ms)
            .max(1);
        self.heartbeat_interval = Duration::from_millis(u64::from(interval_ms));
        self.last_heartbeat = Instant::now();
        self.assigned = joined
            .assignment
            .into_iter()
            .filter(|(topic, _)| *topic == self.topic)
            .flat_map(|(_, partitions)| partitions)
            .collect();
        self.assigned.sort_unstable();
        self.committed.clear();
        self.consumer.assign(&self.topic, &self.assigned);
        if !self.assigned.is_empty() {
            let wanted = [TopicPartitions {
                topic: &self.topic,
                partitions: &self.assigned,
            }];
            let offsets = self
                .coordinator
                .call(|coordinator| coordinator.fetch_offsets(&self.group, &wanted))?;
            for offset in offsets {
                if offset.committed_offset >= 0 && self.assigned.contains(&offset.partition) {
                    self.consumer
                        .seek(offset.partition, SeekTo::Offset(offset.committed_offset))?;
                    self.committed
                        .insert(offset.partition, offset.committed_offset);
                }
            }
        }
        self.joined = true;
        Ok(())
    }

    fn join(&mut self) -> Result<super::group_calls::GroupJoin, ClientError> {
        let topics = [self.topic.as_str()];
        self.coordinator.call(|coordinator| {
            coordinator.join_group(&join_group::Request {
                group: &self.group,
                member_id: &self.member_id,
                client_id: &self.config.client_id,
                topics: &topics,
                session_timeout_ms: self.config.session_timeout_ms,
                rebalance_timeout_ms: self.config.rebalance_timeout_ms,
                instance_id: instance_id(&self.config),
            })
        })
    }

    /// Sends a heartbeat when one is due. Returns false when the group asks this member to
    /// join again (after committing, with automatic commits). A coordinator that cannot be
    /// reached is tried again at the next heartbeat; fetching goes on meanwhile.
    fn heartbeat_if_due(&mut self) -> Result<bool, ClientError> {
        if self.last_heartbeat.elapsed() < self.heartbeat_interval {
            return Ok(true);
        }
        self.last_heartbeat = Instant::now();
        let result = self.coordinator.call(|coordinator| {
            coordinator.heartbeat(&heartbeat::Request {
                group: &self.group,
                member_id: &self.member_id,
                generation: self.generation,
                instance_id: instance_id(&self.config),
            })
        });
        match result {
            Ok(()) => Ok(true),
            Err(error) if self.note_membership_error(&error) => Ok(false),
            Err(error) if error.is_connection_failure() => {
                tracing::warn!(%error, group = %self.group, "heartbeat failed; trying again at the next one");
                Ok(true)
            }
            Err(error) => Err(error),
        }
    }

    /// Reacts to an error that ends the current assignment; true when it was one.
    fn note_membership_error(&mut self, error: &ClientError) -> bool {
        match error.code() {
            Some(ErrorCode::RebalanceInProgress) => {
                if self.config.auto_commit {
                    // Still allowed in this generation: keeps what was processed.
                    if let Err(error) = self.commit_positions() {
                        tracing::debug!(%error, group = %self.group, "commit before rejoining failed");
                    }
                }
                self.joined = false;
                true
            }
            Some(ErrorCode::UnknownMember | ErrorCode::UnknownGroup) => {
                self.member_id.clear();
                self.joined = false;
                true
            }
            _ => false,
        }
    }

    /// An automatic commit; its failure is logged, the next one retries.
    fn auto_commit(&mut self) {
        if let Err(error) = self.commit() {
            tracing::debug!(%error, group = %self.group, "automatic commit failed");
        }
    }
}

/// The instance id a member of `config` sends with its group calls (empty for a dynamic one).
fn instance_id(config: &GroupConsumerConfig) -> &str {
    config.group_instance_id.as_deref().unwrap_or_default()
}
