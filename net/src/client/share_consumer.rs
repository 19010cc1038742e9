//! [`ShareConsumer`]: a member of a share group (KIP-932) reading one topic. Any number of
//! members read any partition; each record is leased to one member at a time, which
//! acknowledges it: accept (done), release (deliver again), reject (archive) or renew (keep
//! the lease longer).
//!
//! [`ShareConsumer::poll`] sends one ShareFetch per partition, pipelined, each over a
//! connection to the shard that owns the partition (one per shard, as the [`super::Consumer`]
//! does), and returns a [`ShareBatch`] that owns the responses. Acknowledgements given with
//! [`ShareConsumer::acknowledge`] are sent with the next fetch of their partition (or at once
//! with [`ShareConsumer::flush_acks`], which [`ShareConsumer::close`] calls). A record not
//! acknowledged before its lease ends is delivered again, possibly to another member.
//!
//! A connection that fails (the server restarted, was killed or cannot be reached) is made
//! again after a backoff, as in Kafka's share consumer, and polls return no records meanwhile
//! instead of failing (see [`ShareConsumer::poll`]). The member keeps its id, and no
//! acknowledgement is forgotten: each is applied, or reported refused.
//!
//! - Acknowledgements waiting for a connection that is down stay pending and go with the
//!   partition's first fetch over the new one. Those sent with a fetch whose answer was lost
//!   with the connection go again too: nothing says whether the server applied them.
//! - The server applies an acknowledgement only from the member that holds the record's lock.
//!   Over a new connection to the same server process the locks are still this member's, and
//!   the acknowledgements apply. Records acquired by a fetch whose answer was lost stay locked
//!   to this member until their lock ends (the group's `lock_ms`), then come again.
//! - A restarted server has every acknowledgement it answered (they are durable before the
//!   answer), but no locks and no members: the records that were acquired and not settled
//!   are available again at once, with the delivery count last written, and the pending
//!   acknowledgements of them are refused (`InvalidRecordState`). Refused acknowledgements
//!   are reported by [`ShareConsumer::take_ack_failures`] (and `flush_acks`, `close`), and
//!   their records are delivered again, to this member or another: at least once, as
//!   KIP-932. An acknowledgement sent again after a lost answer may be refused because the
//!   first send was applied; only then does a reported refusal not bring its record back.
//! - An acknowledgement the server answered without refusing it was applied (durably): an
//!   accepted record is not delivered again, across reconnects and restarts.

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ringlog_engine::batch::{
    BatchHeader, BatchIter, Compression, HeaderIter, RecordIter, TimestampType,
};

use super::backoff::ReconnectSchedule;
use super::calls::{duration_ms_u32, partition_count_of};
use super::connection::{ConnectionConfig, ResponseFrame};
use super::decompressed::{
    Decompressed, DecompressedReader, NextBatch, Pushed, DECOMPRESSED_BYTES_MAX_DEFAULT,
};
use super::error::ClientError;
use super::group_calls::ShareFetchResult;
use super::links::{Links, RoutesOverLinks};
use crate::api::ApiKey;
use crate::error_code::ErrorCode;
use crate::message::share_acknowledge::{self, AckRange, AckType};
use crate::message::share_fetch::{self, AcquiredRange};
use crate::message::ResponseStatus as _;

/// ShareFetches of one connection that long-poll in a round (see `fetch_round`); kept
/// under the server's default `requests_in_flight_max` (64).
const LONG_POLLS_PER_CONNECTION_MAX: usize = 32;

/// How a [`ShareConsumer`] fetches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShareConsumerConfig {
    /// Member id; `None` makes a unique one.
    pub member_id: Option<String>,
    /// Most records acquired per partition per fetch.
    pub max_records: u32,
    /// Upper bound on one response's raw bytes.
    pub max_bytes: u32,
    /// Longest one round of fetches waits on the server; `poll`'s timeout may shorten it.
    pub max_wait_ms: u32,
    /// How often the topic's partition count is asked for again, so that partitions added
    /// to the topic are read (default 5 minutes, as Kafka's `metadata.max.age.ms`; at most
    /// 2,147,483,647).
    pub metadata_max_age_ms: u64,
    /// Fetch (and acknowledge) each partition over a connection to the shard that owns it, so
    /// that its shard serves it without a hop between shards; `false`: one connection.
    pub connection_per_shard: bool,
    /// How long a connection that failed (the server restarted or is unreachable) waits
    /// before it is connected again: Kafka's `reconnect.backoff.ms`. Doubles after each
    /// failure in a row, up to `reconnect_backoff_max_ms`; an answered fetch resets it.
    pub reconnect_backoff_ms: u32,
    /// Upper bound on the reconnect backoff: Kafka's `reconnect.backoff.max.ms`.
    pub reconnect_backoff_max_ms: u32,
    /// Upper bound on the bytes one compressed batch's records take once decompressed
    /// (default [`DECOMPRESSED_BYTES_MAX_DEFAULT`], 64 MiB); a larger batch (a corrupt or
    /// hostile "zip bomb") is reported as a [`ClientError::Decompress`] error in place of its
    /// records, and its acquired records are released (a corrupt compressed batch's are
    /// rejected), since they cannot be acknowledged one by one. Per batch, not per poll:
    /// acquired records cannot be left for a later poll (`max_records` bounds how many
    /// batches one poll holds).
    pub decompressed_bytes_max: usize,
    /// Connection settings.
    pub connection: ConnectionConfig,
}

impl Default for ShareConsumerConfig {
    fn default() -> Self {
        Self {
            member_id: None,
            max_records: share_fetch::MAX_RECORDS_DEFAULT,
            max_bytes: 8 << 20,
            max_wait_ms: 100,
            metadata_max_age_ms: 300_000,
            connection_per_shard: true,
            reconnect_backoff_ms: 50,
            reconnect_backoff_max_ms: 1_000,
            decompressed_bytes_max: DECOMPRESSED_BYTES_MAX_DEFAULT,
            connection: ConnectionConfig::default(),
        }
    }
}

/// An acknowledgement the server refused.
#[derive(Debug, Clone)]
pub struct AckFailure {
    /// Partition.
    pub partition: u32,
    /// First offset of the refused range.
    pub first_offset: i64,
    /// Last offset of the refused range.
    pub last_offset: i64,
    /// Why (InvalidRecordState, LeaseExpired, ...).
    pub error: ClientError,
}

/// One partition's answer within a [`ShareBatch`].
#[derive(Debug, Clone)]
struct Fetched {
    partition: u32,
    acquired: Vec<AcquiredRange>,
    result: ShareFetchResult,
}

/// The records of one poll, owning the responses they are read from and the records of their
/// compressed batches, decompressed when the poll received them (see `decompressed.rs`).
#[derive(Debug, Clone, Default)]
pub struct ShareBatch {
    topic: String,
    fetched: Vec<Fetched>,
    decompressed: Decompressed,
}

impl ShareBatch {
    /// Records acquired in this poll.
    pub fn len(&self) -> usize {
        self.fetched
            .iter()
            .flat_map(|f| &f.acquired)
            // From the server: wrapping and nonsense (last before first) count nothing.
            .map(|r| {
                let count = r
                    .last_offset
                    .saturating_sub(r.first_offset)
                    .saturating_add(1);
                usize::try_from(count).unwrap_or(0)
            })
            .sum()
    }

    /// True when nothing was acquired.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The acquired records, by partition then offset.
    pub fn records(&self) -> ShareRecords<'_> {
        ShareRecords {
            topic: &self.topic,
            fetched: self.fetched.iter(),
            decompressed: self.decompressed.reader(),
            current: None,
        }
    }

    /// Decompresses the compressed batches that [`Self::records`] reads, in the order it
    /// reads them: it walks the same batches and passes over the same (control) ones.
    /// Returns the acquired records of the batches that failed, with how to settle them
    /// (their records are never handed out, so the caller could not): a corrupt batch is
    /// rejected, as Kafka's share consumer rejects one; one only past the bound is released.
    fn decompress(&mut self, limit_bytes: usize) -> Vec<(u32, i64, AckType)> {
        self.decompressed.clear();
        let mut unreadable = Vec::new();
        for fetched in &self.fetched {
            let Ok(batches) = fetched.result.batches() else {
                continue;
            };
            for (header, bytes) in BatchIter::new(batches).map_while(Result::ok) {
                if header.is_control() || header.compression() == Compression::None {
                    continue;
                }
                let pushed =
                    self.decompressed
                        .push(fetched.partition, &header, bytes, limit_bytes, false);
                let Pushed::Failed { too_large } = pushed else {
                    continue;
                };
                let ack = if too_large {
                    AckType::Release
                } else {
                    AckType::Reject
                };
                for range in &fetched.acquired {
                    let first = range.first_offset.max(header.base_offset);
                    let last = range.last_offset.min(header.last_offset());
                    unreadable
                        .extend((first..=last).map(|offset| (fetched.partition, offset, ack)));
                }
            }
        }
        unreadable
    }
}

/// A record leased to this member.
#[derive(Debug, Clone)]
pub struct ShareRecord<'a> {
    /// Topic.
    pub topic: &'a str,
    /// Partition.
    pub partition: u32,
    /// Offset.
    pub offset: i64,
    /// Deliveries of this record so far, this one included (1 on first delivery).
    pub delivery_count: u16,
    /// Create time, or the broker's append time for log-append-time topics.
    pub timestamp_ms: i64,
    /// Key, `None` if null.
    pub key: Option<&'a [u8]>,
    /// Value, `None` if null.
    pub value: Option<&'a [u8]>,
    /// Headers, decoded as iterated.
    pub headers: HeaderIter<'a>,
}

/// Iterator over a [`ShareBatch`]'s records.
#[derive(Debug)]
pub struct ShareRecords<'a> {
    topic: &'a str,
    fetched: std::slice::Iter<'a, Fetched>,
    decompressed: DecompressedReader<'a>,
    current: Option<Cursor<'a>>,
}

#[derive(Debug)]
struct Cursor<'a> {
    partition: u32,
    acquired: &'a [AcquiredRange],
    batches: BatchIter<'a>,
    records: Option<(BatchHeader, RecordIter<'a>)>,
}

impl<'a> Cursor<'a> {
    fn next_record(
        &mut self,
        topic: &'a str,
        decompressed: &mut DecompressedReader<'a>,
    ) -> Option<Result<ShareRecord<'a>, ClientError>> {
        loop {
            if let Some((header, records)) = &mut self.records {
                match records.next() {
                    Some(Ok(record)) => {
                        let offset = record.offset(header.base_offset);
                        let Some(range) = self
                            .acquired
                            .iter()
                            .find(|r| (r.first_offset..=r.last_offset).contains(&offset))
                        else {
                            continue;
                        };
                        let timestamp_ms = match header.timestamp_type() {
                            TimestampType::LogAppendTime => header.max_timestamp_ms,
                            TimestampType::CreateTime => {
                                record.timestamp_ms(header.base_timestamp_ms)
                            }
                        };
                        return Some(Ok(ShareRecord {
                            topic,
                            partition: self.partition,
                            offset,
                            delivery_count: range.delivery_count,
                            timestamp_ms,
                            key: record.key,
                            value: record.value,
                            headers: record.headers,
                        }));
                    }
                    Some(Err(error)) => return Some(Err(error.into())),
                    None => self.records = None,
                }
                continue;
            }
            match self.batches.next()? {
                Ok((header, bytes)) => {
                    if header.is_control() {
                        continue;
                    }
                    match decompressed.records_of(&header, bytes) {
                        NextBatch::Records(records) => self.records = Some((header, records)),
                        NextBatch::Failed(error) => return Some(Err(error)),
                        // Only the consumer defers; nothing is left for later here.
                        NextBatch::Deferred => return None,
                    }
                }
                Err(error) => return Some(Err(error.into())),
            }
        }
    }
}

impl<'a> Iterator for ShareRecords<'a> {
    type Item = Result<ShareRecord<'a>, ClientError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(cursor) = &mut self.current {
                if let Some(item) = cursor.next_record(self.topic, &mut self.decompressed) {
                    return Some(item);
                }
                self.current = None;
            }
            let fetched = self.fetched.next()?;
            let batches = match fetched.result.batches() {
                Ok(batches) => batches,
                Err(error) => return Some(Err(error)),
            };
            self.current = Some(Cursor {
                partition: fetched.partition,
                acquired: &fetched.acquired,
                batches: BatchIter::new(batches),
                records: None,
            });
        }
    }
}

/// A share-group member; see the module docs.
///
/// ```no_run
/// use std::time::Duration;
/// use ringlog_net::client::{ShareConsumer, ShareConsumerConfig};
/// use ringlog_net::message::share_acknowledge::AckType;
///
/// # fn main() -> Result<(), ringlog_net::client::ClientError> {
/// let mut consumer =
///     ShareConsumer::subscribe("127.0.0.1:9292", "workers", "jobs", ShareConsumerConfig::default())?;
/// for _ in 0..100 {
///     let batch = consumer.poll(Duration::from_secs(1))?;
///     for record in batch.records() {
///         let record = record?;
///         // ... process ...
///         consumer.acknowledge(record.partition, record.offset, AckType::Accept);
///     }
/// }
/// consumer.close()?; // sends the last acknowledgements
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct ShareConsumer {
    /// Connections: the first is the home connection (made by `subscribe`, or made again to
    /// the addresses it resolved); the others go to shards owning partitions (see
    /// [`ShareConsumerConfig::connection_per_shard`]). They also keep whether `link_of`
    /// follows the last Metadata: not after a reconnect (a restarted server may place the
    /// partitions on other shards), nor when Metadata is due again.
    links: Links<()>,
    /// Index in `links` of the connection that serves each partition.
    link_of: Vec<usize>,
    config: ShareConsumerConfig,
    group: String,
    topic: String,
    member_id: String,
    /// Acknowledgements not yet sent, per partition.
    pending: Vec<Vec<AckRange>>,
    failures: Vec<AckFailure>,
    /// Partition the next poll starts with (rotates, for fairness between partitions).
    next_partition: usize,
    /// When the partition count is next asked for.
    metadata_due_at: Instant,
}

/// A ShareFetch on its way: partition, correlation id, its link and the acknowledgements it
/// carries.
type SentFetch = (u32, u32, usize, Vec<AckRange>);

/// When a partition count learned now is next asked for again (at most Kafka's largest
/// `metadata.max.age.ms`, an int, later: the bound keeps the deadline in range).
fn next_metadata_refresh(metadata_max_age_ms: u64) -> Instant {
    Instant::now() + Duration::from_millis(metadata_max_age_ms.min(i32::MAX as u64))
}

/// A member id unique to this process and moment.
fn new_member_id() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let count = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("share-{:x}-{nanos:x}-{count}", std::process::id())
}

impl ShareConsumer {
    /// Connects and learns the topic's partitions.
    pub fn subscribe(
        addr: impl ToSocketAddrs,
        group: &str,
        topic: &str,
        config: ShareConsumerConfig,
    ) -> Result<Self, ClientError> {
        let addrs: Vec<SocketAddr> = addr.to_socket_addrs()?.collect();
        let reconnect = ReconnectSchedule::from_ms(
            u64::from(config.reconnect_backoff_ms),
            u64::from(config.reconnect_backoff_max_ms),
        );
        let links = Links::connect(addrs, config.connection, reconnect)?;
        let mut consumer = Self {
            links,
            link_of: Vec::new(),
            member_id: config.member_id.clone().unwrap_or_else(new_member_id),
            metadata_due_at: next_metadata_refresh(config.metadata_max_age_ms),
            config,
            group: group.to_owned(),
            topic: topic.to_owned(),
            pending: Vec::new(),
            failures: Vec::new(),
            next_partition: 0,
        };
        consumer.refresh_partitions()?;
        Ok(consumer)
    }

    /// This member's id.
    pub fn member_id(&self) -> &str {
        &self.member_id
    }

    /// The topic's partition count as last learned: at subscribe, then every
    /// [`ShareConsumerConfig::metadata_max_age_ms`] (during `poll`).
    pub fn partitions(&self) -> u32 {
        // `pending` has one entry per partition, and a partition id is a u32.
        self.pending.len() as u32
    }

    /// Waits up to `timeout` for records of any partition; sends pending acknowledgements with
    /// the fetches.
    ///
    /// A connection that fails (the server restarted, was killed or cannot be reached; an
    /// answer not received within the request timeout past the long poll; a malformed frame)
    /// is not an error of the poll, as in Kafka's share consumer: it is logged
    /// (`tracing::warn!`) and connected again after `reconnect_backoff_ms` (doubling up to
    /// `reconnect_backoff_max_ms` while attempts fail), the partitions routed again from
    /// Metadata. Meanwhile its partitions are not fetched, their acknowledgements wait for the
    /// new connection (see the module docs), and the poll returns what the other connections
    /// acquire, or no records at `timeout`. A reconnect attempt may stretch a poll past
    /// `timeout` by its own bound (the connect timeout per address, the request timeout of the
    /// Metadata and ApiVersions calls). Errors that are not about the connection (a server
    /// error that is not retriable, a malformed batch) are returned.
    pub fn poll(&mut self, timeout: Duration) -> Result<ShareBatch, ClientError> {
        let deadline = Instant::now() + timeout;
        if Instant::now() >= self.metadata_due_at {
            self.links.invalidate_routing();
        }
        // First look without waiting, then long-poll in short rounds until the deadline.
        let mut wait = Duration::ZERO;
        loop {
            if self.links.rebuild_due() {
                self.rebuild()?;
            }
            let (batch, sent_any) = self.fetch_round(wait)?;
            let now = Instant::now();
            let remaining = deadline.saturating_duration_since(now);
            if !batch.is_empty() || remaining.is_zero() {
                return Ok(batch);
            }
            let reconnect_at = self.links.rebuild_at();
            if !sent_any {
                // No connection is up to long-poll on: the backoff is the wait.
                let until = reconnect_at.map_or(deadline, |at| at.min(deadline));
                std::thread::sleep(until.saturating_duration_since(now));
                continue;
            }
            wait = remaining.min(Duration::from_millis(u64::from(self.config.max_wait_ms)));
            if let Some(at) = reconnect_at {
                // The working connections' long poll does not hold back the reconnect.
                wait = wait.min(at.saturating_duration_since(now));
            }
        }
    }

    /// Asks for the partition count again and reads partitions added since (a topic never
    /// shrinks), routing each to the connection of its shard (all to the first connection
    /// when `connection_per_shard` is off).
    fn refresh_partitions(&mut self) -> Result<(), ClientError> {
        // Indexes set before a rebuild are void (failed links were dropped): until routed,
        // every partition goes over the first connection.
        self.link_of.fill(0);
        self.metadata_due_at = next_metadata_refresh(self.config.metadata_max_age_ms);
        let topics = self.links[0].client.metadata(&[&self.topic])?;
        let partitions = partition_count_of(&topics, &self.topic)? as usize;
        let metadata = topics.iter().find(|t| t.name == self.topic);
        if partitions > self.pending.len() {
            self.pending.resize_with(partitions, Vec::new);
        }
        self.link_of = vec![0; self.pending.len()];
        let owners: Vec<u16> = if self.config.connection_per_shard {
            (0..self.pending.len() as u32)
                .map(|partition| metadata.and_then(|t| t.shard_of(partition)).unwrap_or(0))
                .collect()
        } else {
            Vec::new()
        };
        let links = self.links.route(&owners)?;
        for (link_of, link) in self.link_of.iter_mut().zip(links) {
            *link_of = link;
        }
        Ok(())
    }

    /// One ShareFetch per partition whose connection is up, pipelined; waits for every answer.
    /// Returns the records acquired and whether any fetch went out. The partitions of a
    /// connection that is down are not fetched, and keep their acknowledgements for the new
    /// connection.
    fn fetch_round(&mut self, wait: Duration) -> Result<(ShareBatch, bool), ClientError> {
        let partitions = self.pending.len();
        let mut sent: Vec<SentFetch> = Vec::with_capacity(partitions);
        let mut first_error = None;
        // Links a request could not be written to for a reason other than the connection:
        // this round sends nothing more over them.
        let mut refused = vec![false; self.links.len()];
        let mut long_polls = vec![0usize; self.links.len()];
        for step in 0..partitions {
            let partition = (self.next_partition + step) % partitions;
            let link = self.link_of.get(partition).copied().unwrap_or(0);
            if refused.get(link).is_none_or(|&r| r) || !self.links[link].is_up() {
                continue;
            }
            // The server serves a connection's requests_in_flight_max requests at a time
            // (64 by default) and reads no more meanwhile: had every partition of a busy
            // connection long-polled, the round would take one wait per 64 of them. The
            // rest answer at once; which partitions wait turns with the round.
            let waits = long_polls[link] < LONG_POLLS_PER_CONNECTION_MAX;
            long_polls[link] += usize::from(waits);
            let acks = std::mem::take(&mut self.pending[partition]);
            let request = share_fetch::Request {
                group: &self.group,
                member_id: &self.member_id,
                topic: &self.topic,
                partition: partition as u32,
                max_records: self.config.max_records,
                max_wait_ms: if waits { duration_ms_u32(wait) } else { 0 },
                max_bytes: self.config.max_bytes,
                acks: &acks,
            };
            match self.links[link].client.connection().send(&request) {
                Ok(correlation_id) => sent.push((partition as u32, correlation_id, link, acks)),
                Err(error) => {
                    self.requeue_acks(partition as u32, acks);
                    if let Err(error) = self.link_failed(link, error) {
                        refused[link] = true;
                        first_error.get_or_insert(error);
                    }
                }
            }
        }
        self.next_partition = (self.next_partition + 1) % partitions.max(1);
        let sent_any = !sent.is_empty();
        let mut batch = ShareBatch {
            topic: self.topic.clone(),
            fetched: Vec::new(),
            decompressed: Decompressed::default(),
        };
        for (partition, correlation_id, link, acks) in sent {
            self.receive_answer(partition, correlation_id, link, acks, wait, &mut batch)
                .unwrap_or_else(|error| {
                    first_error.get_or_insert(error);
                });
        }
        for (partition, offset, ack) in batch.decompress(self.config.decompressed_bytes_max) {
            self.acknowledge(partition, offset, ack);
        }
        // Records acquired in this round are returned even when another partition failed (they
        // are leased to this member: dropping them would hold them until the lease ends); the
        // failure surfaces on the next poll that acquires nothing.
        match first_error {
            Some(error) if batch.is_empty() => Err(error),
            _ => Ok((batch, sent_any)),
        }
    }

    /// Receives the answer to one partition's ShareFetch and adds what it acquired to
    /// `batch`. When the connection failed, its acknowledgements go again over the new one:
    /// nothing says whether the server applied them.
    fn receive_answer(
        &mut self,
        partition: u32,
        correlation_id: u32,
        link: usize,
        acks: Vec<AckRange>,
        wait: Duration,
        batch: &mut ShareBatch,
    ) -> Result<(), ClientError> {
        if !self.links[link].is_up() {
            self.requeue_acks(partition, acks);
            return Ok(());
        }
        let client = &mut self.links[link].client;
        let timeout = client.request_timeout() + wait;
        let frame = match client.connection().receive_within(correlation_id, timeout) {
            Ok(frame) => frame,
            Err(error) => {
                self.requeue_acks(partition, acks);
                return self.link_failed(link, error);
            }
        };
        self.links.connection_worked();
        if let Some(fetched) = self.take_answer(partition, &acks, frame)? {
            batch.fetched.push(fetched);
        }
        Ok(())
    }

    /// One partition's ShareFetch answer: the records it acquired, if any. A non-retriable
    /// error status is an error; a retriable one is tried again by the next round.
    fn take_answer(
        &mut self,
        partition: u32,
        acks: &[AckRange],
        frame: ResponseFrame,
    ) -> Result<Option<Fetched>, ClientError> {
        let noted = ShareFetchResult::from_frame(frame).and_then(|result| {
            self.note_ack_results(partition, acks, &result)
                .map(|()| result)
        });
        let result = match noted {
            Ok(result) => result,
            Err(error) => {
                // An answer that does not parse says nothing of the acknowledgements sent with
                // the request: reported as failed (their records come back when their leases
                // end), as flush_acks does, rather than forgotten.
                self.report_ack_failures(partition, acks, &error);
                return Err(error);
            }
        };
        let error = {
            let view = result.view()?;
            let status = view.status();
            (!status.is_ok() && !status.code.is_retriable())
                .then(|| ClientError::server(ApiKey::ShareFetch, status.code, status.message))
        };
        let acquired = result.acquired()?;
        if let Some(error) = error.filter(|_| acquired.is_empty()) {
            return Err(error);
        }
        if acquired.is_empty() {
            return Ok(None);
        }
        Ok(Some(Fetched {
            partition,
            acquired,
            result,
        }))
    }

    /// Records every range of `acks` as refused with `error`.
    fn report_ack_failures(&mut self, partition: u32, acks: &[AckRange], error: &ClientError) {
        for range in acks {
            self.failures.push(AckFailure {
                partition,
                first_offset: range.first_offset,
                last_offset: range.last_offset,
                error: error.clone(),
            });
        }
    }

    /// Puts acknowledgements that may not have reached the server back in front of the ones
    /// made since, to go with the partition's next fetch.
    fn requeue_acks(&mut self, partition: u32, mut acks: Vec<AckRange>) {
        if acks.is_empty() {
            return;
        }
        if let Some(pending) = self.pending.get_mut(partition as usize) {
            acks.append(pending);
            *pending = acks;
        }
    }

    /// Records the refused piggy-backed acknowledgements of one fetch.
    fn note_ack_results(
        &mut self,
        partition: u32,
        sent: &[AckRange],
        result: &ShareFetchResult,
    ) -> Result<(), ClientError> {
        if sent.is_empty() {
            return Ok(());
        }
        let results = result.ack_results()?;
        if results.len() != sent.len() {
            // The fetch failed before the acknowledgements were applied: send them again.
            let (code, message) = result.status()?;
            if code.is_retriable() || code == ErrorCode::None {
                self.requeue_acks(partition, sent.to_vec());
            } else {
                let error = ClientError::server(ApiKey::ShareFetch, code, &message);
                self.report_ack_failures(partition, sent, &error);
            }
            return Ok(());
        }
        for outcome in results {
            if let Err(error) = outcome.result {
                self.failures.push(AckFailure {
                    partition,
                    first_offset: outcome.entry.0,
                    last_offset: outcome.entry.1,
                    error,
                });
            }
        }
        Ok(())
    }

    /// Settles a record (sent with the next fetch of its partition, or by
    /// [`ShareConsumer::flush_acks`]). Consecutive offsets with the same ack become one range.
    pub fn acknowledge(&mut self, partition: u32, offset: i64, ack: AckType) {
        let Some(pending) = self.pending.get_mut(partition as usize) else {
            self.failures.push(AckFailure {
                partition,
                first_offset: offset,
                last_offset: offset,
                error: ClientError::InvalidArgument(format!("topic has no partition {partition}")),
            });
            return;
        };
        if let Some(last) = pending.last_mut() {
            if last.ack_type == ack && last.last_offset.checked_add(1) == Some(offset) {
                last.last_offset = offset;
                return;
            }
        }
        pending.push(AckRange {
            first_offset: offset,
            last_offset: offset,
            ack_type: ack,
        });
    }

    /// Sends every pending acknowledgement now (ShareAcknowledge), and returns every refused
    /// acknowledgement since the last call (these included). Failed connections are connected
    /// again first (without waiting for the backoff: the acknowledgements are wanted now). A
    /// partition whose request fails does not hold back the others (their shards may be served
    /// by other connections): the first such error is returned once every partition was
    /// tried, and the refused acknowledgements stay for [`Self::take_ack_failures`]. The
    /// acknowledgements of a connection that is down, or that failed before answering, are
    /// reported as refused with the connection's error (a lost answer may hide that they were
    /// applied); their records, if not applied, are delivered again.
    pub fn flush_acks(&mut self) -> Result<Vec<AckFailure>, ClientError> {
        self.flush_all(false)
    }

    /// [`Self::flush_acks`], on every partition with `leave` (see [`Self::close`]).
    fn flush_all(&mut self, leave: bool) -> Result<Vec<AckFailure>, ClientError> {
        let mut first_error = None;
        if self.links.rebuild_needed() {
            if let Err(error) = self.rebuild() {
                first_error = Some(error);
            }
        }
        for partition in 0..self.pending.len() {
            if let Err(error) = self.flush_partition(partition, leave) {
                first_error.get_or_insert(error);
            }
        }
        match first_error {
            Some(error) => Err(error),
            None => Ok(self.take_ack_failures()),
        }
    }

    /// Sends the pending acknowledgements of one partition, and with `leave` leaves it; see
    /// [`Self::flush_acks`]. A leave that cannot be sent is no error: the member's records
    /// come back when their locks end, and it stops counting once idle.
    fn flush_partition(&mut self, partition: usize, leave: bool) -> Result<(), ClientError> {
        let ranges = std::mem::take(&mut self.pending[partition]);
        if ranges.is_empty() && !leave {
            return Ok(());
        }
        let index = self.link_of.get(partition).copied().unwrap_or(0);
        let Some(link) = self.links.get_mut(index).filter(|link| link.is_up()) else {
            if ranges.is_empty() {
                return Ok(());
            }
            let error = self
                .links
                .get(index)
                .and_then(|link| link.client.connection_ref().broken().cloned())
                .unwrap_or(ClientError::Disconnected);
            self.report_ack_failures(partition as u32, &ranges, &error);
            return Err(error);
        };
        let request = share_acknowledge::Request {
            group: &self.group,
            member_id: &self.member_id,
            topic: &self.topic,
            partition: partition as u32,
            ranges: &ranges,
            leave,
        };
        let results = match link.client.share_acknowledge_request(&request) {
            Ok(results) => results,
            Err(_) if ranges.is_empty() => return Ok(()),
            Err(error) => {
                // Not taken: a retriable refusal keeps the ranges for the next flush (as a
                // retriable answer per range does); otherwise they are reported as failed
                // (their records come back when their leases end), not forgotten.
                if error.is_retriable() {
                    self.requeue_acks(partition as u32, ranges);
                } else {
                    self.report_ack_failures(partition as u32, &ranges, &error);
                }
                if error.is_connection_failure() {
                    // Never an error for a connection failure: the link is made again.
                    let _ = self.link_failed(index, error.clone());
                }
                return Err(error);
            }
        };
        for outcome in results {
            if let Err(error) = outcome.result {
                self.failures.push(AckFailure {
                    partition: partition as u32,
                    first_offset: outcome.entry.0,
                    last_offset: outcome.entry.1,
                    error,
                });
            }
        }
        Ok(())
    }

    /// Refused acknowledgements reported since the last call.
    pub fn take_ack_failures(&mut self) -> Vec<AckFailure> {
        std::mem::take(&mut self.failures)
    }

    /// Sends the pending acknowledgements and leaves every partition, as Kafka's share
    /// consumer does when closed: the records it still holds are released at once rather than
    /// when their locks end, and the group no longer counts it as a member (so it can be
    /// deleted at once). Returns the refused acknowledgements; an error means some could not
    /// be sent (their records are delivered again once their leases end).
    pub fn close(mut self) -> Result<Vec<AckFailure>, ClientError> {
        self.flush_all(true)
    }
}

/// The share consumer's links serve the topic's partitions.
impl RoutesOverLinks for ShareConsumer {
    type State = ();

    /// The share consumer's links.
    fn links_mut(&mut self) -> &mut Links<()> {
        &mut self.links
    }

    /// Learns the partitions again and routes them (see `refresh_partitions`).
    fn route_items(&mut self) -> Result<(), ClientError> {
        self.refresh_partitions()
    }

    /// Logs a failed connection with the member's group and topic.
    fn log_link_failed(&self, error: &ClientError, shard: Option<u16>) {
        tracing::warn!(
            %error,
            group = %self.group,
            topic = %self.topic,
            shard = ?shard,
            "share consumer connection failed; connecting again after a backoff"
        );
    }

    /// Logs a failed attempt to connect again with the member's group and topic.
    fn log_rebuild_failed(&self, error: &ClientError) {
        tracing::warn!(
            %error,
            group = %self.group,
            topic = %self.topic,
            "share consumer could not connect again; trying again after a backoff"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::fake_server::{Behaviour, FakeServer};
    use crate::client::links::Link;
    use crate::client::Client;

    #[test]
    fn acknowledgements_a_failed_connection_could_not_send_are_reported_on_close() {
        // Every connection is closed after its first request (subscribe's Metadata, then a
        // reconnect's): a fetch or acknowledgement never gets through.
        let server = FakeServer::start(
            "t",
            1,
            Behaviour {
                close_after_requests: 1,
                ..Behaviour::default()
            },
        );
        let mut consumer =
            ShareConsumer::subscribe(server.addr, "g", "t", ShareConsumerConfig::default())
                .unwrap();
        // A failed connection is not an error of the poll: it is made again after a backoff.
        let batch = consumer.poll(Duration::ZERO).unwrap();
        assert!(batch.is_empty());
        // An acknowledgement made now waits for a connection that works.
        consumer.acknowledge(0, 5, AckType::Accept);
        assert!(consumer.poll(Duration::ZERO).unwrap().is_empty());
        // It was never sent: close must not answer as if it had been taken.
        match consumer.close() {
            Err(_) => {}
            Ok(failures) => assert!(
                failures
                    .iter()
                    .any(|f| f.partition == 0 && f.first_offset == 5),
                "the unsent acknowledgement vanished: {failures:?}"
            ),
        }
    }

    /// A two-shard server with topic `t` of 4 partitions, 5 records in each.
    fn two_shard_server(dir: &std::path::Path) -> crate::server::ServerHandle {
        let server = crate::server::Server::start(crate::server::ServerConfig {
            data_dir: dir.to_path_buf(),
            listen: "127.0.0.1:0".parse().unwrap(),
            shards: Some(2),
            cache_bytes_per_shard: 8 << 20,
            ..crate::server::ServerConfig::default()
        })
        .unwrap();
        let addr = server.local_addr();
        Client::connect(addr)
            .unwrap()
            .create_topic(&crate::message::create_topic::Request {
                name: "t",
                partitions: 4,
                retention_ms: None,
                retention_bytes: None,
                segment_bytes: None,
            })
            .unwrap();
        let producer = crate::client::Producer::connect(
            addr,
            "t",
            crate::client::ProducerConfig {
                linger_ms: 1,
                ..crate::client::ProducerConfig::default()
            },
        )
        .unwrap();
        for partition in 0..4 {
            for n in 0..5 {
                let value = format!("value-{n}");
                let record =
                    crate::client::ProducerRecord::new(value.as_bytes()).with_partition(partition);
                producer.send(&record).unwrap();
            }
        }
        producer.close().unwrap();
        server
    }

    /// Replaces link `index` with a connection whose peer has gone: the next request on it
    /// fails.
    fn break_link(consumer: &mut ShareConsumer, index: usize) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let stream = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        drop(listener.accept().unwrap());
        drop(listener);
        consumer.links[index].client = Client::from_connection(
            crate::client::Connection::from_stream(stream, ConnectionConfig::default()).unwrap(),
            ConnectionConfig::default(),
        );
    }

    #[test]
    fn a_flush_sends_every_shards_acknowledgements_when_one_connection_fails() {
        use std::collections::BTreeSet;

        let dir = tempfile::tempdir().unwrap();
        let server = two_shard_server(dir.path());
        let mut consumer = ShareConsumer::subscribe(
            server.local_addr(),
            "g",
            "t",
            ShareConsumerConfig::default(),
        )
        .unwrap();
        assert_eq!(consumer.links.len(), 2, "one connection per shard");
        let mut acquired = 0;
        while acquired < 20 {
            let batch = consumer.poll(Duration::from_secs(5)).unwrap();
            let records: Vec<(u32, i64)> = batch
                .records()
                .map(|record| record.map(|r| (r.partition, r.offset)).unwrap())
                .collect();
            acquired += records.len();
            for (partition, offset) in records {
                consumer.acknowledge(partition, offset, AckType::Accept);
            }
        }
        // The connection of partition 0 fails: partitions after it, served by the other
        // connection, are acknowledged all the same.
        let broken = consumer.link_of[0];
        break_link(&mut consumer, broken);
        assert!(consumer.flush_acks().is_err());
        assert!(
            consumer.pending.iter().all(Vec::is_empty),
            "every partition was tried"
        );
        // The broken connection's acknowledgements are reported as refused; no other's are.
        let refused: BTreeSet<u32> = consumer
            .take_ack_failures()
            .iter()
            .map(|failure| failure.partition)
            .collect();
        let on_broken: BTreeSet<u32> = (0..4)
            .filter(|&p| consumer.link_of[p as usize] == broken)
            .collect();
        assert_eq!(refused, on_broken);
        server.shutdown();
    }

    #[test]
    fn acknowledgements_pending_across_a_reconnect_are_applied_over_the_new_connection() {
        let dir = tempfile::tempdir().unwrap();
        let server = two_shard_server(dir.path());
        let config = ShareConsumerConfig {
            reconnect_backoff_ms: 1,
            reconnect_backoff_max_ms: 10,
            ..ShareConsumerConfig::default()
        };
        let mut consumer = ShareConsumer::subscribe(server.local_addr(), "g", "t", config).unwrap();
        let mut acquired = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        while acquired.len() < 20 {
            assert!(Instant::now() < deadline, "acquired only {acquired:?}");
            let batch = consumer.poll(Duration::from_millis(100)).unwrap();
            acquired.extend(
                batch
                    .records()
                    .map(|r| r.map(|r| (r.partition, r.offset)).unwrap()),
            );
        }
        for &(partition, offset) in &acquired {
            consumer.acknowledge(partition, offset, AckType::Accept);
        }
        // Every connection fails with the acceptances pending; the server keeps running, so
        // it still knows the member and its locks.
        for index in 0..consumer.links.len() {
            break_link(&mut consumer, index);
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        while consumer.pending.iter().any(|acks| !acks.is_empty()) {
            assert!(Instant::now() < deadline, "acknowledgements never sent");
            let batch = consumer.poll(Duration::from_millis(50)).unwrap();
            assert!(batch.is_empty(), "an accepted record came again");
        }
        assert!(consumer.links.iter().all(Link::is_up));
        assert!(
            consumer.take_ack_failures().is_empty(),
            "acceptances refused"
        );
        let mut client = Client::connect(server.local_addr()).unwrap();
        let description = client.describe_group("g").unwrap();
        assert!(description
            .share_partitions
            .iter()
            .all(|p| p.in_flight_records == 0 && p.start_offset == p.high_watermark));
        assert!(consumer.close().unwrap().is_empty());
        server.shutdown();
    }

    #[test]
    fn a_broken_shard_connection_is_made_again_and_its_partitions_delivered() {
        use std::collections::BTreeSet;

        let dir = tempfile::tempdir().unwrap();
        let server = two_shard_server(dir.path());
        let config = ShareConsumerConfig {
            max_records: 1,
            reconnect_backoff_ms: 1,
            reconnect_backoff_max_ms: 10,
            ..ShareConsumerConfig::default()
        };
        let mut consumer = ShareConsumer::subscribe(server.local_addr(), "g", "t", config).unwrap();
        assert_eq!(consumer.links.len(), 2, "one connection per shard");
        // The second shard's connection breaks (its peer closes it).
        break_link(&mut consumer, 1);
        // Polls go on without error, the connection is made again, and the partitions of
        // both shards deliver all their records (4 partitions of 5).
        let mut delivered = BTreeSet::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        while delivered.len() < 20 {
            assert!(Instant::now() < deadline, "delivered only {delivered:?}");
            let batch = consumer.poll(Duration::from_millis(100)).unwrap();
            for record in batch.records() {
                let record = record.unwrap();
                assert!(delivered.insert((record.partition, record.offset)));
                consumer.acknowledge(record.partition, record.offset, AckType::Accept);
            }
        }
        assert_eq!(
            consumer.links.len(),
            2,
            "the broken connection was replaced"
        );
        assert!(consumer.links.iter().all(Link::is_up));
        assert!(consumer.close().unwrap().is_empty());
        server.shutdown();
    }
}
