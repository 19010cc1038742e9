//! [`Consumer`]: reads assigned partitions of one topic from chosen positions.

use std::net::{SocketAddr, ToSocketAddrs};
use std::time::{Duration, Instant};

use super::backoff::ReconnectSchedule;

use ringlog_engine::batch::{
    BatchHeader, BatchIter, Compression, HeaderIter, RecordIter, TimestampType,
};

use super::calls::{check, duration_ms_u32, Client, FetchResult, PendingFetch};
use super::connection::ConnectionConfig;
use super::decompressed::{
    Decompressed, DecompressedReader, NextBatch, Pushed, DECOMPRESSED_BYTES_MAX_DEFAULT,
};
use super::error::ClientError;
use super::links::{LinkState, Links, RoutesOverLinks};
use super::select::ResponseSelect;
use crate::api::ApiKey;
use crate::error_code::ErrorCode;
use crate::message::fetch::{self, FetchPartition, FetchTopic, FetchedPartitions};
use crate::message::list_offsets::{self, OffsetQuery, OffsetSpec};
use crate::message::{ResponseStatus as _, Status};

/// Where to (re)position a partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SeekTo {
    /// The oldest record still stored.
    Earliest,
    /// The end: only records written from now on.
    Latest,
    /// This offset.
    Offset(i64),
    /// The first record with a timestamp at or after this many ms since the Unix epoch (the
    /// end when there is none).
    Timestamp(i64),
}

/// What to do when a partition has no position yet, or its position left the log (deleted by
/// retention, or beyond the end).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum AutoOffsetReset {
    /// Start from the oldest record.
    Earliest,
    /// Start from the end (Kafka's default).
    #[default]
    Latest,
    /// Fail the poll.
    Error,
}

/// A position that left its partition's log and was set again by `auto_offset_reset`, as
/// [`Consumer::take_resets`] reports it. `to > from`: the records between were deleted by
/// retention before this consumer read them; `to < from`: `from` was past the end of the log
/// (the topic was deleted and created again, or its unsynced tail was lost in a crash).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PositionReset {
    /// The partition.
    pub partition: u32,
    /// The position the server refused.
    pub from: i64,
    /// Where reading goes on.
    pub to: i64,
}

impl PositionReset {
    /// Offsets passed over without being returned (0 when the position moved back).
    pub fn skipped(&self) -> u64 {
        u64::try_from(self.to - self.from).unwrap_or(0)
    }
}

/// How a [`Consumer`] fetches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConsumerConfig {
    /// Upper bound on one fetch's long-poll wait; `poll`'s timeout may shorten it.
    pub max_wait_ms: u32,
    /// Bytes that end a fetch's wait early.
    pub min_bytes: u32,
    /// Upper bound on one fetch response's raw bytes.
    pub max_bytes: u32,
    /// Upper bound on one partition's raw bytes per fetch.
    pub partition_max_bytes: u32,
    /// Position policy for partitions without a valid position.
    pub auto_offset_reset: AutoOffsetReset,
    /// How long a connection waits before fetching again after an answer that held only
    /// retriable errors (a failing disk, throttling): Kafka's `retry.backoff.ms`. Without it,
    /// errors answered at once would make polls send fetches back to back.
    pub retry_backoff_ms: u32,
    /// Fetch the partitions of each shard over a connection to that shard (one per shard
    /// that owns assigned partitions), so each shard sends its own partitions' bytes in
    /// parallel; `false`: one connection fetches all, its shard sending the others' bytes too.
    pub connection_per_shard: bool,
    /// How long a connection that failed (the server restarted or is unreachable) waits
    /// before it is connected again: Kafka's `reconnect.backoff.ms`. Doubles after each
    /// failure in a row, up to `reconnect_backoff_max_ms`; an answered fetch resets it.
    pub reconnect_backoff_ms: u32,
    /// Upper bound on the reconnect backoff: Kafka's `reconnect.backoff.max.ms`.
    pub reconnect_backoff_max_ms: u32,
    /// Upper bound on the bytes the records of one poll's compressed batches take once
    /// decompressed (default [`DECOMPRESSED_BYTES_MAX_DEFAULT`], 64 MiB). A batch larger than
    /// this alone is reported as a [`ClientError::Decompress`] error (a corrupt or hostile
    /// "zip bomb" batch never makes the consumer allocate past it); batches that only
    /// together exceed it are left for the next poll. The consumer keeps the buffer between
    /// polls, so its memory stays within about twice this bound.
    pub decompressed_bytes_max: usize,
    /// Connection settings.
    pub connection: ConnectionConfig,
}

impl Default for ConsumerConfig {
    fn default() -> Self {
        Self {
            max_wait_ms: 500,
            min_bytes: 1,
            max_bytes: fetch::MAX_BYTES_DEFAULT,
            partition_max_bytes: 1024 * 1024,
            auto_offset_reset: AutoOffsetReset::Latest,
            retry_backoff_ms: 100,
            connection_per_shard: true,
            reconnect_backoff_ms: 50,
            reconnect_backoff_max_ms: 1_000,
            decompressed_bytes_max: DECOMPRESSED_BYTES_MAX_DEFAULT,
            connection: ConnectionConfig::default(),
        }
    }
}

/// One assigned partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Assigned {
    partition: u32,
    /// Offset of the next record to return; `None` until resolved.
    position: Option<i64>,
    /// High watermark seen in the last fetch, -1 before.
    high_watermark: i64,
    /// The position the server last refused as out of range, until `auto_offset_reset`
    /// replaces it.
    refused: Option<i64>,
    /// Resets not yet taken by [`Consumer::take_resets`] (merged: first `from`, last `to`).
    reset: Option<PositionReset>,
    /// Index of the link that fetches this partition (valid once the links are routed).
    link: usize,
}

impl Assigned {
    /// A partition just assigned: nothing known about it yet.
    fn new(partition: u32) -> Assigned {
        Assigned {
            partition,
            position: None,
            high_watermark: -1,
            refused: None,
            reset: None,
            link: 0,
        }
    }
}

/// What a consumer keeps per link: the fetch on its way over it, if any, and when it may
/// fetch again.
#[derive(Debug, Default)]
pub(super) struct FetchState {
    /// The fetch on its way over the link.
    in_flight: Option<InFlight>,
    /// No fetch is sent before then: its last answer held only retriable errors.
    retry_at: Option<Instant>,
}

/// A failed connection's fetch is forgotten: the positions did not move.
impl LinkState for FetchState {
    fn forget_in_flight(&mut self) {
        self.in_flight = None;
    }
}

/// A fetch on its way: sent ahead for the positions a poll left, or a long poll that the
/// poll's timeout ended before it was answered.
#[derive(Debug)]
struct InFlight {
    pending: PendingFetch,
    /// (partition, offset asked for) of the fetch; its answer is used only if the positions
    /// are still these when it arrives.
    starts: Vec<(u32, i64)>,
    /// When the server answers at the latest (sent plus its long-poll wait).
    due: Instant,
    /// The poll that sent it (see `Consumer::polls`).
    poll: u64,
}

/// Reads records of assigned partitions of one topic.
///
/// Positions start where [`Consumer::seek`] puts them, else per `auto_offset_reset`.
///
/// The partitions are fetched over one connection per shard that owns some of them (see
/// [`ConsumerConfig::connection_per_shard`]), as a Kafka consumer fetches from each
/// partition's leader: each shard sends its own partitions' bytes. Each connection has at most
/// one fetch in flight, a long poll of its partitions. [`Consumer::poll`] returns the records
/// of the first answer that has any (connections answering together take turns) and moves
/// those partitions' positions past them. When a connection's partitions have more records
/// than its answer held, its next fetch is sent (without long poll) before `poll` returns, as
/// Kafka consumers prefetch: the server reads and sends it while the application handles the
/// records, and a later poll finds it on its way (or drops it, if the positions were moved
/// meanwhile). A long poll still on its way when `poll`'s timeout ends is left in flight for
/// the next poll. Records come decoded by `ringlog_engine::batch`, borrowing the
/// response buffer: no copy and no allocation per record. Batches that Kafka producers
/// compressed (gzip, snappy, LZ4, zstd) are decompressed when their response arrives, into a
/// buffer the consumer keeps from poll to poll (bounded by
/// [`ConsumerConfig::decompressed_bytes_max`]), and their records borrow that buffer.
///
/// ```no_run
/// use std::time::Duration;
/// use ringlog_net::client::{Consumer, ConsumerConfig, SeekTo};
///
/// # fn main() -> Result<(), ringlog_net::client::ClientError> {
/// let mut consumer = Consumer::connect("127.0.0.1:9092", ConsumerConfig::default())?;
/// consumer.assign_all("orders")?;
/// consumer.seek_all(SeekTo::Earliest)?;
/// loop {
///     for record in consumer.poll(Duration::from_secs(1))? {
///         let record = record?;
///         println!(
///             "{}/{} @{}: {}",
///             record.partition,
///             record.offset,
///             record.timestamp_ms,
///             String::from_utf8_lossy(record.value.unwrap_or_default()),
///         );
///     }
/// }
/// # }
/// ```
#[derive(Debug)]
pub struct Consumer {
    /// Connections: the first is the one `connect` made (it also serves ListOffsets and
    /// Metadata); the others go to shards owning assigned partitions. They also
    /// keep whether `Assigned::link` follows the current assignment.
    links: Links<FetchState>,
    config: ConsumerConfig,
    topic: String,
    assigned: Vec<Assigned>,
    /// The last fetch response and the link it came from, which the records of the last poll
    /// borrow.
    last: Option<(usize, FetchResult)>,
    /// The records of `last`'s compressed batches.
    decompressed: Decompressed,
    /// (partition, base offset) of the compressed batch at which `decompressed` ran out of
    /// its bound in a partition: that partition's position stops there.
    deferred: Vec<(u32, i64)>,
    /// (partition, offset asked for) of the last fetch: records before it are skipped.
    fetch_starts: Vec<(u32, i64)>,
    /// Scratch for building fetch requests.
    fetch_partitions: Vec<FetchPartition>,
    /// A `starts` list of an answered fetch, for the next fetch to reuse.
    spare_starts: Vec<(u32, i64)>,
    /// Fetches sent: where the next one starts in its partition list.
    fetches_sent: usize,
    select: ResponseSelect,
    /// Polls so far: fetches sent by the current one are waited for past its timeout, as
    /// long as their own long poll allows (so `poll(Duration::ZERO)` makes one round trip).
    polls: u64,
}

impl Consumer {
    /// Connects; assign partitions before polling.
    pub fn connect(addr: impl ToSocketAddrs, config: ConsumerConfig) -> Result<Self, ClientError> {
        let addrs: Vec<SocketAddr> = addr.to_socket_addrs()?.collect();
        let reconnect = ReconnectSchedule::from_ms(
            u64::from(config.reconnect_backoff_ms),
            u64::from(config.reconnect_backoff_max_ms),
        );
        let links = Links::connect(addrs, config.connection, reconnect)?;
        Ok(Self {
            links,
            config,
            topic: String::new(),
            assigned: Vec::new(),
            last: None,
            decompressed: Decompressed::default(),
            deferred: Vec::new(),
            fetch_starts: Vec::new(),
            fetch_partitions: Vec::new(),
            spare_starts: Vec::new(),
            fetches_sent: 0,
            select: ResponseSelect::new(),
            polls: 0,
        })
    }

    /// Reads `partitions` of `topic` from now on (replacing any earlier assignment). Positions
    /// are unset until [`Self::seek`] or the first poll.
    pub fn assign(&mut self, topic: &str, partitions: &[u32]) {
        self.topic = topic.to_owned();
        self.assigned = partitions.iter().map(|&p| Assigned::new(p)).collect();
        self.assigned.sort_by_key(|a| a.partition);
        self.assigned.dedup_by_key(|a| a.partition);
        self.last = None;
        self.links.invalidate_routing();
        // A fetch sent for the old assignment names the old topic: its answer must not be
        // taken for the new one at the same partitions and offsets.
        for link in self.links.iter_mut() {
            if let Some(in_flight) = link.state.in_flight.take() {
                link.client.abandon_fetch(in_flight.pending);
            }
        }
    }

    /// Assigns every partition of `topic`; returns how many there are.
    pub fn assign_all(&mut self, topic: &str) -> Result<u32, ClientError> {
        let count = self.partition_count(topic)?;
        let partitions: Vec<u32> = (0..count).collect();
        self.assign(topic, &partitions);
        Ok(count)
    }

    /// How many partitions `topic` has now (Metadata over the first connection).
    pub fn partition_count(&mut self, topic: &str) -> Result<u32, ClientError> {
        self.on_home(|home| home.partition_count(topic))
    }

    /// Adds `partitions` of the assigned topic, keeping the positions of those already
    /// assigned and the fetches in flight: a follower takes up the partitions added to its
    /// topic. The new ones are positioned as after [`Self::assign`].
    pub fn extend_assignment(&mut self, partitions: &[u32]) {
        let before = self.assigned.len();
        for &partition in partitions {
            if self.find(partition).is_none() {
                self.assigned.push(Assigned::new(partition));
            }
        }
        if self.assigned.len() > before {
            self.assigned.sort_by_key(|a| a.partition);
            // The new partitions' shards are not known yet.
            self.links.invalidate_routing();
        }
    }

    /// The assigned partitions.
    pub fn assignment(&self) -> impl Iterator<Item = u32> + '_ {
        self.assigned.iter().map(|a| a.partition)
    }

    /// Offset of the next record `poll` returns for `partition`, once known.
    pub fn position(&self, partition: u32) -> Option<i64> {
        self.find(partition).and_then(|a| a.position)
    }

    /// High watermark of `partition` as of the last poll.
    pub fn high_watermark(&self, partition: u32) -> Option<i64> {
        self.find(partition)
            .map(|a| a.high_watermark)
            .filter(|hw| *hw >= 0)
    }

    /// Positions that left the log since the last call and where `auto_offset_reset` moved
    /// them, at most one per partition (a partition reset twice reports its first refused
    /// position and its last new one). Nothing is reported for positions set by
    /// [`Self::seek`], nor kept across [`Self::assign`].
    pub fn take_resets(&mut self) -> impl Iterator<Item = PositionReset> + '_ {
        self.assigned.iter_mut().filter_map(|a| a.reset.take())
    }

    /// Positions one assigned partition (asking the server for Earliest, Latest, Timestamp).
    pub fn seek(&mut self, partition: u32, to: SeekTo) -> Result<(), ClientError> {
        if self.find(partition).is_none() {
            return Err(ClientError::InvalidArgument(format!(
                "partition {partition} is not assigned"
            )));
        }
        self.forget_refused(|assigned| assigned == partition);
        self.resolve(&[partition], to)
    }

    /// Positions every assigned partition.
    pub fn seek_all(&mut self, to: SeekTo) -> Result<(), ClientError> {
        let partitions: Vec<u32> = self.assignment().collect();
        self.forget_refused(|_| true);
        self.resolve(&partitions, to)
    }

    /// A position the application sets is its choice, not a reset to report.
    fn forget_refused(&mut self, which: impl Fn(u32) -> bool) {
        for assigned in &mut self.assigned {
            if which(assigned.partition) {
                assigned.refused = None;
            }
        }
    }

    /// Waits up to `timeout` for records and returns them (possibly none). Positions move past
    /// the returned records. Fetches sent by this poll are awaited past `timeout` until the
    /// server answers them (their long poll ends by `timeout`), so a zero timeout still makes
    /// one round trip.
    ///
    /// A connection that fails (the server restarted, was killed or cannot be reached; a
    /// fetch unanswered past its long poll plus the request timeout; a malformed frame) is not
    /// an error of the poll, as in Kafka's consumer: it is logged (`tracing::warn!`), its
    /// fetch is forgotten (the positions did not move, so nothing is skipped or returned
    /// twice) and it is connected again after `reconnect_backoff_ms` (doubling up to
    /// `reconnect_backoff_max_ms` while attempts fail), the partitions routed again from
    /// Metadata. Meanwhile the poll returns what the other connections answer, or no records
    /// at `timeout`. Reconnecting does not stretch a poll past `timeout` except by one
    /// attempt's own bound: each address is given the connect timeout
    /// (`ConnectionConfig::connect_timeout_ms`), and the Metadata and ApiVersions calls that
    /// route the partitions again the request timeout (a server that accepts connections but
    /// does not answer). Errors that are not about the connection (a corrupt batch, a server
    /// error that is not retriable, a missing position with `AutoOffsetReset::Error`) are
    /// returned.
    pub fn poll(&mut self, timeout: Duration) -> Result<Records<'_>, ClientError> {
        if self.assigned.is_empty() {
            return Err(ClientError::InvalidArgument(
                "no partitions assigned".to_owned(),
            ));
        }
        let deadline = Instant::now() + timeout;
        self.polls += 1;
        if let Some((link, last)) = self.last.take() {
            if let Some(link) = self.links.get_mut(link) {
                link.client.recycle(last);
            }
        }
        let mut first_round = true;
        loop {
            if self.links.rebuild_due() {
                self.rebuild()?;
            }
            if self.links[0].is_up() {
                if let Err(error) = self.resolve_unpositioned() {
                    self.link_failed(0, error)?;
                }
            }
            self.drop_stale_fetches();
            let now = Instant::now();
            if first_round || now < deadline {
                self.send_fetches(deadline.saturating_duration_since(now))?;
            }
            first_round = false;
            let Some(index) = self.wait_for_answer(deadline)? else {
                if Instant::now() < deadline && (self.retry_due() || self.links.rebuild_due()) {
                    continue;
                }
                break;
            };
            let link = &mut self.links[index];
            let Some(in_flight) = link.state.in_flight.take() else {
                return Err(ClientError::UnexpectedResponse(
                    "a connection without a fetch on its way was ready".to_owned(),
                ));
            };
            let result = match link.client.receive_fetch(in_flight.pending) {
                Ok(result) => result,
                Err(error) => {
                    self.link_failed(index, error)?;
                    continue;
                }
            };
            self.links.connection_worked();
            self.spare_starts = std::mem::replace(&mut self.fetch_starts, in_flight.starts);
            self.decompress_fetch(&result);
            let (got_records, failed_retriably) = self.apply_fetch(&result)?;
            if got_records {
                self.send_prefetch(index);
                self.last = Some((index, result));
                break;
            }
            if failed_retriably {
                let backoff = Duration::from_millis(u64::from(self.config.retry_backoff_ms));
                self.links[index].state.retry_at = Some(Instant::now() + backoff);
            }
            self.links[index].client.recycle(result);
        }
        let last = self.last.as_ref().map(|(_, result)| result);
        if last.is_none() {
            self.fetch_starts.clear();
        }
        Ok(Records::new(
            last,
            &self.topic,
            &self.fetch_starts,
            &self.decompressed,
        ))
    }

    /// Decompresses the compressed batches of `result` that the poll's [`Records`] will read,
    /// in the order it reads them (see `decompressed.rs`), and notes where a partition ran
    /// past `decompressed_bytes_max`.
    fn decompress_fetch(&mut self, result: &FetchResult) {
        self.decompressed.clear();
        self.deferred.clear();
        // The frame was verified when it was received; failing here means no records.
        let Ok(partitions) = result.partitions() else {
            return;
        };
        for fetched in partitions {
            if !fetched.status.is_ok() {
                continue;
            }
            let start = start_of(&self.fetch_starts, fetched.partition);
            for (header, bytes) in BatchIter::new(fetched.batches).map_while(Result::ok) {
                if !holds_wanted_records(&header, start)
                    || header.compression() == Compression::None
                {
                    continue;
                }
                let pushed = self.decompressed.push(
                    fetched.partition,
                    &header,
                    bytes,
                    self.config.decompressed_bytes_max,
                    true,
                );
                if pushed == Pushed::Deferred {
                    self.deferred.push((fetched.partition, header.base_offset));
                    break;
                }
            }
        }
    }

    /// Runs `call` on the first connection (which serves ListOffsets and Metadata),
    /// connecting it again first when it failed, and once more when it is found failed by
    /// `call` (a server restarted since it was last used).
    fn on_home<T>(
        &mut self,
        mut call: impl FnMut(&mut Client) -> Result<T, ClientError>,
    ) -> Result<T, ClientError> {
        let fresh = self.links.reconnect_home()?;
        match call(&mut self.links[0].client) {
            Err(error) if !fresh && !self.links[0].is_up() => {
                tracing::warn!(%error, "consumer connection failed; connecting again");
                self.links.reconnect_home()?;
                call(&mut self.links[0].client)
            }
            other => other,
        }
    }

    /// The owning shard of each assigned partition (in `assigned` order), from Metadata; a
    /// partition the server does not name goes with the first named one (shard 0 when none
    /// is named): its fetch reports the error, over whichever connection.
    fn owning_shards(&mut self) -> Result<Vec<u16>, ClientError> {
        let topic = self.topic.clone();
        let topics = self.links[0].client.metadata(&[&topic])?;
        let metadata = topics.iter().find(|t| t.name == topic);
        let owners: Vec<Option<u16>> = self
            .assigned
            .iter()
            .map(|a| metadata.and_then(|t| t.shard_of(a.partition)))
            .collect();
        let home = owners.iter().flatten().next().copied().unwrap_or(0);
        Ok(owners.into_iter().map(|o| o.unwrap_or(home)).collect())
    }

    /// Abandons fetches on their way that asked for positions other than the current ones
    /// (a seek, a reset): their answers would move the positions from the old ones.
    fn drop_stale_fetches(&mut self) {
        for (index, link) in self.links.iter_mut().enumerate() {
            let Some(in_flight) = &link.state.in_flight else {
                continue;
            };
            let current = self
                .assigned
                .iter()
                .filter(|a| a.link == index)
                .filter_map(|a| a.position.map(|offset| (a.partition, offset)));
            if !current.eq(in_flight.starts.iter().copied()) {
                if let Some(in_flight) = link.state.in_flight.take() {
                    link.client.abandon_fetch(in_flight.pending);
                }
            }
        }
    }

    /// Sends a fetch, long polling up to `wait`, on every link that is up, has none on its
    /// way, has positioned partitions and is not backing off after retriable errors.
    fn send_fetches(&mut self, wait: Duration) -> Result<(), ClientError> {
        let now = Instant::now();
        for index in 0..self.links.len() {
            let link = &mut self.links[index];
            if !link.is_up()
                || link.state.in_flight.is_some()
                || link.state.retry_at.is_some_and(|at| at > now)
            {
                continue;
            }
            link.state.retry_at = None;
            if let Err(error) = self.send_fetch(index, wait) {
                self.link_failed(index, error)?;
            }
        }
        Ok(())
    }

    /// When the first link backing off after retriable errors may fetch again, or failed
    /// links may be connected again, whichever comes first.
    fn next_retry(&self) -> Option<Instant> {
        let idle = self
            .links
            .iter()
            .filter(|link| link.state.in_flight.is_none());
        let retry = idle.filter_map(|link| link.state.retry_at).min();
        let reconnect = self.links.rebuild_at();
        retry.into_iter().chain(reconnect).min()
    }

    /// Whether a link backing off after retriable errors may fetch again now.
    fn retry_due(&self) -> bool {
        self.next_retry().is_some_and(|at| at <= Instant::now())
    }

    /// Sends a fetch from the positioned partitions of link `index`, waiting at most `wait`;
    /// nothing when it has none.
    fn send_fetch(&mut self, index: usize, wait: Duration) -> Result<(), ClientError> {
        self.fetch_partitions.clear();
        let mut starts = std::mem::take(&mut self.spare_starts);
        starts.clear();
        for assigned in self.assigned.iter().filter(|a| a.link == index) {
            if let Some(offset) = assigned.position {
                self.fetch_partitions.push(FetchPartition {
                    partition: assigned.partition,
                    offset,
                    partition_max_bytes: self.config.partition_max_bytes,
                });
                starts.push((assigned.partition, offset));
            }
        }
        if starts.is_empty() {
            self.spare_starts = starts;
            return Ok(());
        }
        // The server fills a response in request order and serves a later partition only
        // what still fits, so a partition always asked for after a busy one could wait until
        // that one is drained: each fetch starts one partition further on (as Kafka's
        // clients rotate theirs).
        let first = self.fetches_sent % self.fetch_partitions.len();
        self.fetch_partitions.rotate_left(first);
        self.fetches_sent = self.fetches_sent.wrapping_add(1);
        let topics = [FetchTopic {
            topic: &self.topic,
            partitions: &self.fetch_partitions,
        }];
        let max_wait_ms = duration_ms_u32(wait).min(self.config.max_wait_ms);
        let link = &mut self.links[index];
        let pending = link.client.send_fetch(&fetch::Request {
            max_wait_ms,
            min_bytes: self.config.min_bytes,
            max_bytes: self.config.max_bytes,
            topics: &topics,
        })?;
        link.state.in_flight = Some(InFlight {
            pending,
            starts,
            due: Instant::now() + Duration::from_millis(u64::from(max_wait_ms)),
            poll: self.polls,
        });
        Ok(())
    }

    /// After an answer with records, sends link `index`'s next fetch (without long poll, so
    /// a later poll's timeout still holds) when one of its partitions is known to have more.
    /// A failed send drops the link, to be connected again; this poll's records are still
    /// returned.
    fn send_prefetch(&mut self, index: usize) {
        let backlog = self.assigned.iter().any(|assigned| {
            assigned.link == index
                && assigned
                    .position
                    .is_some_and(|position| assigned.high_watermark > position)
        });
        if backlog {
            if let Err(error) = self.send_fetch(index, Duration::ZERO) {
                // Sending fails only with the connection (the link is dropped then): there is
                // nothing else to report.
                let _ = self.link_failed(index, error);
            }
        }
    }

    /// Waits for the first link whose fetch is answered: until `deadline`, or past it while a
    /// fetch this poll sent is on its way (until its long poll ends plus the request
    /// timeout). `None` when nothing was answered in time. A link whose fetch is unanswered
    /// past its long poll plus the request timeout (an answer that arrived while the
    /// application was busy is ready, not late), or whose connection failed, is dropped.
    fn wait_for_answer(&mut self, deadline: Instant) -> Result<Option<usize>, ClientError> {
        let request_timeout = self.links[0].client.request_timeout();
        let overdue_at = |in_flight: &InFlight| in_flight.due + request_timeout;
        loop {
            // Again each round: a link that failed meanwhile no longer holds the wait, and its
            // reconnect may wake it.
            let until = self.wait_until(deadline, request_timeout);
            let waiting = self.links.iter().map(|link| {
                link.state
                    .in_flight
                    .as_ref()
                    .map(|_| link.client.connection_ref())
            });
            let wait = until.saturating_duration_since(Instant::now());
            let Some(ready) = self.select.wait(waiting, wait)? else {
                break;
            };
            let link = &mut self.links[ready];
            let Some(in_flight) = &link.state.in_flight else {
                return Err(ClientError::UnexpectedResponse(
                    "a connection without a fetch on its way was ready".to_owned(),
                ));
            };
            // What made it ready may be only the answer to a fetch abandoned after a seek:
            // receiving would then wait for this fetch's long poll, while other links'
            // answers (and the poll's timeout) wait behind it.
            match link.client.fetch_started(&in_flight.pending) {
                Ok(true) => return Ok(Some(ready)),
                Ok(false) => {}
                Err(error) => self.link_failed(ready, error)?,
            }
        }
        let now = Instant::now();
        for index in 0..self.links.len() {
            let late = self.links[index]
                .state
                .in_flight
                .as_ref()
                .is_some_and(|in_flight| now >= overdue_at(in_flight));
            if late {
                let timeout_ms = request_timeout.as_millis() as u64;
                self.link_failed(index, ClientError::Timeout { timeout_ms })?;
            }
        }
        Ok(None)
    }

    /// How long [`Self::wait_for_answer`] waits: until `deadline`, or the end of a fetch this
    /// poll sent (its long poll plus `request_timeout`) if later; until a link may fetch or
    /// connect again if that is earlier than the deadline.
    fn wait_until(&self, deadline: Instant, request_timeout: Duration) -> Instant {
        let until = self
            .links
            .iter()
            .filter_map(|link| link.state.in_flight.as_ref())
            .filter(|in_flight| in_flight.poll == self.polls)
            .map(|in_flight| in_flight.due + request_timeout)
            .fold(deadline, Instant::max);
        match self.next_retry() {
            Some(retry_at) if retry_at < deadline => until.min(retry_at),
            _ => until,
        }
    }

    /// Moves positions past the fetched batches and handles per-partition errors. Returns
    /// whether any records at or after the positions arrived, and whether a partition
    /// answered a retriable error.
    fn apply_fetch(&mut self, result: &FetchResult) -> Result<(bool, bool), ClientError> {
        // An error that ends the poll is found before any position moves: moving past the
        // other partitions' batches and then dropping the answer would skip their records.
        self.fatal_error(result)?;
        let mut got_records = false;
        let mut failed_retriably = false;
        for fetched in result.partitions()? {
            let Some(index) = self
                .assigned
                .iter()
                .position(|a| a.partition == fetched.partition)
            else {
                continue;
            };
            let assigned = &mut self.assigned[index];
            if fetched.high_watermark >= 0 {
                assigned.high_watermark = fetched.high_watermark;
            }
            match fetched.status.code {
                ErrorCode::None => {
                    let Some(position) = assigned.position else {
                        continue;
                    };
                    let (mut next, stopped) = next_position(position, fetched.batches);
                    // Batches left for the next poll by the decompression bound are fetched
                    // again from the first of them.
                    if let Some((_, stop)) = self
                        .deferred
                        .iter()
                        .find(|(partition, _)| *partition == fetched.partition)
                    {
                        next = next.min((*stop).max(position));
                    }
                    // A batch that stopped the walk is news too: the poll returns, and the
                    // records iterator reports it, instead of fetching it again until the
                    // timeout.
                    got_records |= next > position || stopped;
                    assigned.position = Some(next);
                }
                ErrorCode::OffsetOutOfRange
                    if self.config.auto_offset_reset != AutoOffsetReset::Error =>
                {
                    // Resolved again by the next round's resolve_unpositioned.
                    assigned.refused = assigned.position.take();
                }
                code if code.is_retriable() => failed_retriably = true,
                code => {
                    return Err(ClientError::server(
                        ApiKey::Fetch,
                        code,
                        fetched.status.message,
                    ))
                }
            }
        }
        Ok((got_records, failed_retriably))
    }

    /// The first error of an assigned partition in `result` that ends the poll (what
    /// [`Self::apply_fetch`] does not handle in place).
    fn fatal_error(&self, result: &FetchResult) -> Result<(), ClientError> {
        for fetched in result.partitions()? {
            if self.find(fetched.partition).is_none() {
                continue;
            }
            let code = fetched.status.code;
            let handled = code == ErrorCode::None
                || code.is_retriable()
                || (code == ErrorCode::OffsetOutOfRange
                    && self.config.auto_offset_reset != AutoOffsetReset::Error);
            if !handled {
                return Err(ClientError::server(
                    ApiKey::Fetch,
                    code,
                    fetched.status.message,
                ));
            }
        }
        Ok(())
    }

    /// Applies `auto_offset_reset` to partitions without a position.
    fn resolve_unpositioned(&mut self) -> Result<(), ClientError> {
        let unpositioned: Vec<u32> = self
            .assigned
            .iter()
            .filter(|a| a.position.is_none())
            .map(|a| a.partition)
            .collect();
        if unpositioned.is_empty() {
            return Ok(());
        }
        let to = match self.config.auto_offset_reset {
            AutoOffsetReset::Earliest => SeekTo::Earliest,
            AutoOffsetReset::Latest => SeekTo::Latest,
            AutoOffsetReset::Error => {
                return Err(ClientError::InvalidArgument(format!(
                "partitions {unpositioned:?} have no valid position and auto_offset_reset is Error"
            )))
            }
        };
        self.resolve(&unpositioned, to)?;
        for assigned in &mut self.assigned {
            let (Some(from), Some(to)) = (assigned.refused, assigned.position) else {
                continue;
            };
            assigned.refused = None;
            let from = assigned.reset.map_or(from, |earlier| earlier.from);
            assigned.reset = Some(PositionReset {
                partition: assigned.partition,
                from,
                to,
            });
        }
        Ok(())
    }

    /// Sets the positions of `partitions`, with one ListOffsets request when needed.
    fn resolve(&mut self, partitions: &[u32], to: SeekTo) -> Result<(), ClientError> {
        let spec = match to {
            SeekTo::Offset(offset) => {
                for &partition in partitions {
                    self.set_position(partition, offset);
                }
                return Ok(());
            }
            SeekTo::Earliest => OffsetSpec::Earliest,
            SeekTo::Latest => OffsetSpec::Latest,
            SeekTo::Timestamp(ms) => OffsetSpec::Timestamp(ms),
        };
        if partitions.is_empty() {
            return Ok(());
        }
        let queries: Vec<OffsetQuery> = partitions
            .iter()
            .map(|&partition| OffsetQuery { partition, spec })
            .collect();
        let topic = self.topic.clone();
        let positions = self.on_home(|home| list_positions(home, &topic, &queries))?;
        for (partition, offset) in positions {
            self.set_position(partition, offset);
        }
        Ok(())
    }

    fn set_position(&mut self, partition: u32, offset: i64) {
        if let Some(assigned) = self.assigned.iter_mut().find(|a| a.partition == partition) {
            assigned.position = Some(offset.max(0));
        }
    }

    fn find(&self, partition: u32) -> Option<&Assigned> {
        self.assigned.iter().find(|a| a.partition == partition)
    }
}

/// The consumer's links carry its fetches and serve its assigned partitions.
impl RoutesOverLinks for Consumer {
    type State = FetchState;

    /// The consumer's links.
    fn links_mut(&mut self) -> &mut Links<FetchState> {
        &mut self.links
    }

    /// Sets which link fetches each assigned partition: the link to the partition's shard
    /// when `connection_per_shard` and the partitions are spread over several shards, else
    /// the first one (without asking for Metadata when `connection_per_shard` is off).
    fn route_items(&mut self) -> Result<(), ClientError> {
        for assigned in &mut self.assigned {
            assigned.link = 0;
        }
        let shards = if self.config.connection_per_shard {
            self.owning_shards()?
        } else {
            Vec::new()
        };
        let links = self.links.route(&shards)?;
        for (assigned, link) in self.assigned.iter_mut().zip(links) {
            assigned.link = link;
        }
        Ok(())
    }

    /// Logs a failed connection with the consumer's topic.
    fn log_link_failed(&self, error: &ClientError, shard: Option<u16>) {
        tracing::warn!(
            %error,
            topic = %self.topic,
            shard = ?shard,
            "consumer connection failed; connecting again after a backoff"
        );
    }

    /// Logs a failed attempt to connect again with the consumer's topic.
    fn log_rebuild_failed(&self, error: &ClientError) {
        tracing::warn!(
            %error,
            topic = %self.topic,
            "consumer could not connect again; trying again after a backoff"
        );
    }
}

/// Asks for the offsets of `queries` of `topic`: (partition, offset) pairs.
fn list_positions(
    client: &mut Client,
    topic: &str,
    queries: &[OffsetQuery],
) -> Result<Vec<(u32, i64)>, ClientError> {
    let frame = client.connection().call(&list_offsets::Request {
        topic,
        partitions: queries,
    })?;
    let view = frame.view::<list_offsets::ResponseView>()?;
    check(ApiKey::ListOffsets, view.status())?;
    let mut positions = Vec::new();
    for entry in view.partitions().unwrap_or_default() {
        check(
            ApiKey::ListOffsets,
            Status::from_wire(entry.error_code(), entry.error_message()),
        )?;
        positions.push((entry.partition(), entry.offset()));
    }
    Ok(positions)
}

/// The position after the whole, well-formed batches of `batches` whose CRCs match, and
/// whether a batch that is not stopped the walk. A corrupt batch stops the advance there, so
/// it is fetched (and reported) again rather than skipped with the batches after it (the
/// records iterator stops at it too).
fn next_position(position: i64, batches: &[u8]) -> (i64, bool) {
    let mut next = position;
    for item in BatchIter::new(batches) {
        match item {
            Ok((header, _)) => next = next.max(header.next_offset()),
            Err(_) => return (next, true),
        }
    }
    (next, false)
}

/// Where the last fetch started reading `partition` (0 if it did not name it).
fn start_of(starts: &[(u32, i64)], partition: u32) -> i64 {
    starts
        .iter()
        .find(|(p, _)| *p == partition)
        .map_or(0, |(_, start)| *start)
}

/// Whether a poll that started reading its partition at `start` reads records of the batch
/// whose header is `header`: control batches and batches wholly before it are passed over.
/// [`Consumer::decompress_fetch`] and [`Records`] both decide by it, so they meet the same
/// compressed batches.
fn holds_wanted_records(header: &BatchHeader, start: i64) -> bool {
    !header.is_control() && header.next_offset() > start
}

/// One consumed record, borrowing the fetch response (or, for a compressed batch, the
/// consumer's decompression buffer, which lives as long).
#[derive(Debug, Clone)]
pub struct ConsumerRecord<'a> {
    /// Topic name.
    pub topic: &'a str,
    /// Partition id.
    pub partition: u32,
    /// Offset.
    pub offset: i64,
    /// Create time, or the broker's append time for log-append-time topics.
    pub timestamp_ms: i64,
    /// Key, `None` if null.
    pub key: Option<&'a [u8]>,
    /// Value, `None` if null.
    pub value: Option<&'a [u8]>,
    /// Headers, decoded as iterated.
    pub headers: HeaderIter<'a>,
}

/// The records of one poll, in partition order then offset order.
#[derive(Debug)]
pub struct Records<'a> {
    topic: &'a str,
    partitions: Option<FetchedPartitions<'a>>,
    starts: &'a [(u32, i64)],
    decompressed: DecompressedReader<'a>,
    current: Option<PartitionCursor<'a>>,
}

/// Reading position inside one fetched partition.
#[derive(Debug)]
struct PartitionCursor<'a> {
    partition: u32,
    start: i64,
    batches: BatchIter<'a>,
    records: Option<(BatchHeader, RecordIter<'a>)>,
}

impl<'a> Records<'a> {
    fn new(
        last: Option<&'a FetchResult>,
        topic: &'a str,
        starts: &'a [(u32, i64)],
        decompressed: &'a Decompressed,
    ) -> Self {
        // The frame was verified when it was received; failing again here means no records.
        let partitions = last.and_then(|result| result.partitions().ok());
        Self {
            topic,
            partitions,
            starts,
            decompressed: decompressed.reader(),
            current: None,
        }
    }

    /// The next record of the current partition, or an error; `None` when it is exhausted.
    fn next_in_partition(
        topic: &'a str,
        cursor: &mut PartitionCursor<'a>,
        decompressed: &mut DecompressedReader<'a>,
    ) -> Option<Result<ConsumerRecord<'a>, ClientError>> {
        loop {
            if let Some((header, records)) = &mut cursor.records {
                match records.next() {
                    Some(Ok(record)) => {
                        let offset = record.offset(header.base_offset);
                        if offset < cursor.start {
                            continue;
                        }
                        let timestamp_ms = match header.timestamp_type() {
                            TimestampType::LogAppendTime => header.max_timestamp_ms,
                            TimestampType::CreateTime => {
                                record.timestamp_ms(header.base_timestamp_ms)
                            }
                        };
                        return Some(Ok(ConsumerRecord {
                            topic,
                            partition: cursor.partition,
                            offset,
                            timestamp_ms,
                            key: record.key,
                            value: record.value,
                            headers: record.headers,
                        }));
                    }
                    Some(Err(error)) => return Some(Err(error.into())),
                    None => cursor.records = None,
                }
                continue;
            }
            match cursor.batches.next()? {
                Ok((header, bytes)) => {
                    if !holds_wanted_records(&header, cursor.start) {
                        continue;
                    }
                    match decompressed.records_of(&header, bytes) {
                        NextBatch::Records(records) => cursor.records = Some((header, records)),
                        NextBatch::Failed(error) => return Some(Err(error)),
                        // The rest of the partition is read by the next poll.
                        NextBatch::Deferred => return None,
                    }
                }
                Err(error) => return Some(Err(error.into())),
            }
        }
    }
}

impl<'a> Iterator for Records<'a> {
    type Item = Result<ConsumerRecord<'a>, ClientError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(cursor) = &mut self.current {
                if let Some(item) =
                    Self::next_in_partition(self.topic, cursor, &mut self.decompressed)
                {
                    return Some(item);
                }
                self.current = None;
            }
            let fetched = self.partitions.as_mut()?.next()?;
            if !fetched.status.is_ok() {
                continue;
            }
            let start = start_of(self.starts, fetched.partition);
            self.current = Some(PartitionCursor {
                partition: fetched.partition,
                start,
                batches: BatchIter::new(fetched.batches),
                records: None,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::fake_server::{Behaviour, FakeServer};
    use crate::client::links::Link;
    use crate::message::produce::Acks;
    use ringlog_engine::batch::BatchBuilder;

    /// Writes one batch of `values` (timestamps `base_ms`, `base_ms + 1`, ...) to `partition`.
    fn produce(client: &mut Client, partition: u32, base_ms: i64, values: &[&str]) -> i64 {
        let mut builder = BatchBuilder::new(Vec::new(), base_ms);
        for (i, value) in values.iter().enumerate() {
            let headers: [(&str, Option<&[u8]>); 1] = [("h", Some(b"hv"))];
            builder
                .push(
                    base_ms + i as i64,
                    Some(b"k"),
                    Some(value.as_bytes()),
                    &headers,
                )
                .unwrap();
        }
        client
            .produce("t", partition, Acks::Leader, builder.finish())
            .unwrap()
            .unwrap()
    }

    fn values(records: Records<'_>) -> Vec<(u32, i64, String)> {
        records
            .map(|r| {
                let r = r.unwrap();
                (
                    r.partition,
                    r.offset,
                    String::from_utf8(r.value.unwrap().to_vec()).unwrap(),
                )
            })
            .collect()
    }

    fn consumer(server: &FakeServer, reset: AutoOffsetReset) -> Consumer {
        Consumer::connect(
            server.addr,
            ConsumerConfig {
                auto_offset_reset: reset,
                ..ConsumerConfig::default()
            },
        )
        .unwrap()
    }

    #[test]
    fn seek_earliest_offset_timestamp_latest() {
        let server = FakeServer::start("t", 2, Behaviour::default());
        let mut client = Client::connect(server.addr).unwrap();
        assert_eq!(produce(&mut client, 0, 1_000, &["a", "b", "c"]), 0);
        assert_eq!(produce(&mut client, 0, 2_000, &["d", "e"]), 3);
        assert_eq!(produce(&mut client, 1, 1_500, &["x"]), 0);

        let mut consumer = consumer(&server, AutoOffsetReset::Latest);
        assert_eq!(consumer.assign_all("t").unwrap(), 2);
        consumer.seek_all(SeekTo::Earliest).unwrap();
        let got = values(consumer.poll(Duration::from_secs(5)).unwrap());
        assert_eq!(
            got,
            [
                (0, 0, "a".to_owned()),
                (0, 1, "b".to_owned()),
                (0, 2, "c".to_owned()),
                (0, 3, "d".to_owned()),
                (0, 4, "e".to_owned()),
                (1, 0, "x".to_owned()),
            ]
        );
        assert_eq!(consumer.position(0), Some(5));
        assert_eq!(consumer.high_watermark(0), Some(5));

        // An offset inside the first batch: the records before it are skipped.
        consumer.seek(0, SeekTo::Offset(1)).unwrap();
        consumer.seek(1, SeekTo::Latest).unwrap();
        let got = values(consumer.poll(Duration::from_secs(5)).unwrap());
        assert_eq!(got.first(), Some(&(0, 1, "b".to_owned())));
        assert_eq!(got.len(), 4);

        consumer.seek(0, SeekTo::Timestamp(2_000)).unwrap();
        assert_eq!(consumer.position(0), Some(3));
        let got = values(consumer.poll(Duration::from_secs(5)).unwrap());
        assert_eq!(got, [(0, 3, "d".to_owned()), (0, 4, "e".to_owned())]);

        // Nothing new: the poll times out empty.
        assert!(values(consumer.poll(Duration::from_millis(20)).unwrap()).is_empty());
        assert!(consumer.seek(7, SeekTo::Earliest).is_err());
    }

    #[test]
    fn records_carry_key_headers_and_timestamps() {
        let server = FakeServer::start("t", 1, Behaviour::default());
        let mut client = Client::connect(server.addr).unwrap();
        produce(&mut client, 0, 5_000, &["v0", "v1"]);
        let mut consumer = consumer(&server, AutoOffsetReset::Earliest);
        consumer.assign("t", &[0]);
        let records = consumer.poll(Duration::from_secs(5)).unwrap();
        let all: Vec<_> = records.map(Result::unwrap).collect();
        assert_eq!(all.len(), 2);
        assert_eq!(all[1].timestamp_ms, 5_001);
        assert_eq!(all[1].key, Some(&b"k"[..]));
        assert_eq!(all[1].topic, "t");
        let headers: Vec<_> = all[1].headers.clone().map(Result::unwrap).collect();
        assert_eq!(headers.len(), 1);
        assert_eq!(headers[0].key, "h");
        assert_eq!(headers[0].value, Some(&b"hv"[..]));
    }

    #[test]
    fn long_poll_returns_when_records_arrive() {
        let server = FakeServer::start("t", 1, Behaviour::default());
        let mut consumer = consumer(&server, AutoOffsetReset::Latest);
        consumer.assign("t", &[0]);
        consumer.seek(0, SeekTo::Latest).unwrap();
        let addr = server.addr;
        let writer = std::thread::spawn(move || {
            let mut client = Client::connect(addr).unwrap();
            produce(&mut client, 0, 1, &["late"]);
        });
        let started = Instant::now();
        let mut got = Vec::new();
        while got.is_empty() {
            got = values(consumer.poll(Duration::from_secs(30)).unwrap());
        }
        assert!(started.elapsed() < Duration::from_secs(30));
        assert_eq!(got, [(0, 0, "late".to_owned())]);
        writer.join().unwrap();
    }

    #[test]
    fn prefetched_fetches_continue_in_order_and_yield_to_seeks() {
        let server = FakeServer::start("t", 1, Behaviour::default());
        let mut client = Client::connect(server.addr).unwrap();
        let values: Vec<String> = (0..10).map(|i| format!("v{i}")).collect();
        for (i, value) in values.iter().enumerate() {
            assert_eq!(produce(&mut client, 0, 1, &[value.as_str()]), i as i64);
        }
        // One batch per fetch, so every poll leaves a backlog and prefetches the next one.
        let mut consumer = Consumer::connect(
            server.addr,
            ConsumerConfig {
                auto_offset_reset: AutoOffsetReset::Earliest,
                partition_max_bytes: 1,
                ..ConsumerConfig::default()
            },
        )
        .unwrap();
        consumer.assign("t", &[0]);
        let mut got = Vec::new();
        for _ in 0..4 {
            got.extend(self::values(consumer.poll(Duration::from_secs(5)).unwrap()));
            assert!(
                consumer.links[0].state.in_flight.is_some(),
                "more is known to be there"
            );
        }
        let expected: Vec<(u32, i64, String)> =
            (0..4).map(|i| (0, i, values[i as usize].clone())).collect();
        assert_eq!(got, expected);
        // A seek while a prefetch is on its way: the prefetch is dropped, the seek wins.
        consumer.seek(0, SeekTo::Offset(8)).unwrap();
        let got = self::values(consumer.poll(Duration::from_secs(5)).unwrap());
        assert_eq!(got, [(0, 8, "v8".to_owned())]);
        let got = self::values(consumer.poll(Duration::from_secs(5)).unwrap());
        assert_eq!(got, [(0, 9, "v9".to_owned())]);
        assert!(
            consumer.links[0].state.in_flight.is_none(),
            "nothing more to prefetch at the end"
        );
        assert!(self::values(consumer.poll(Duration::from_millis(20)).unwrap()).is_empty());
        assert_eq!(
            consumer.links[0].client.connection().in_flight(),
            0,
            "the dropped prefetch was read"
        );
    }

    #[test]
    fn an_abandoned_answer_does_not_hold_a_poll_on_the_long_poll_behind_it() {
        let server = FakeServer::start("t", 2, Behaviour::default());
        let mut client = Client::connect(server.addr).unwrap();
        produce(&mut client, 1, 1, &["x"]);
        let mut consumer = Consumer::connect(
            server.addr,
            ConsumerConfig {
                auto_offset_reset: AutoOffsetReset::Earliest,
                max_wait_ms: 10_000,
                ..ConsumerConfig::default()
            },
        )
        .unwrap();
        consumer.assign("t", &[0, 1]);
        consumer.seek_all(SeekTo::Earliest).unwrap();
        // The fake server has one shard: route by hand, partition 0 over the first link and
        // partition 1 over a second one, as two shards would.
        consumer
            .links
            .push(Link::new(Some(1), Client::connect(server.addr).unwrap()));
        consumer.assigned[1].link = 1;
        consumer.links.set_routed();
        // The first link as a seek leaves it: a stale fetch abandoned, its answer already in,
        // and the long poll of the new position (nothing there) sent after it.
        let partitions = [FetchPartition {
            partition: 0,
            offset: 0,
            partition_max_bytes: 1024,
        }];
        let topics = [FetchTopic {
            topic: "t",
            partitions: &partitions,
        }];
        let stale = consumer.links[0]
            .client
            .send_fetch(&fetch::Request {
                max_wait_ms: 0,
                min_bytes: 1,
                max_bytes: 1024,
                topics: &topics,
            })
            .unwrap();
        consumer.links[0].client.abandon_fetch(stale);
        let answered = ResponseSelect::new().wait(
            [Some(consumer.links[0].client.connection_ref())],
            Duration::from_secs(10),
        );
        assert_eq!(answered.unwrap(), Some(0), "the abandoned answer is in");
        consumer.send_fetch(0, Duration::from_secs(10)).unwrap();

        let got = values(consumer.poll(Duration::from_millis(100)).unwrap());
        assert_eq!(got, [(1, 0, "x".to_owned())]);
        assert!(
            consumer.links[0].state.in_flight.is_some(),
            "the poll returned the records there were, without waiting out the long poll"
        );
    }

    #[test]
    fn retriable_errors_are_fetched_again_after_the_backoff_not_back_to_back() {
        let server = FakeServer::start(
            "t",
            1,
            Behaviour {
                fail_fetches: true,
                ..Behaviour::default()
            },
        );
        let mut consumer = Consumer::connect(
            server.addr,
            ConsumerConfig {
                retry_backoff_ms: 100,
                ..ConsumerConfig::default()
            },
        )
        .unwrap();
        consumer.assign("t", &[0]);
        consumer.seek_all(SeekTo::Offset(0)).unwrap();
        let started = Instant::now();
        let got = values(consumer.poll(Duration::from_millis(350)).unwrap());
        assert!(got.is_empty());
        assert!(
            started.elapsed() >= Duration::from_millis(350),
            "the poll waited"
        );
        // One fetch at the start and at most one per backoff after it (back to back, the
        // errors answered at once made thousands).
        let fetches = server.fetches();
        assert!((2..=5).contains(&fetches), "{fetches} fetches");
    }

    /// The server closes every connection after a few answers, as a restart does: the
    /// consumer connects again and reads on from its positions; no poll fails, and every
    /// record comes once, in order.
    #[test]
    fn a_failed_connection_is_made_again_and_reading_goes_on_from_the_positions() {
        let server = FakeServer::start(
            "t",
            2,
            Behaviour {
                close_after_requests: 3,
                ..Behaviour::default()
            },
        );
        let mut consumer = Consumer::connect(
            server.addr,
            ConsumerConfig {
                auto_offset_reset: AutoOffsetReset::Earliest,
                reconnect_backoff_ms: 1,
                reconnect_backoff_max_ms: 10,
                ..ConsumerConfig::default()
            },
        )
        .unwrap();
        consumer.assign("t", &[0, 1]);
        let deadline = Instant::now() + Duration::from_secs(30);
        for round in 0..12i64 {
            let partition = (round % 2) as u32;
            let value = format!("v{round}");
            // A client per record: the server closes its connections too.
            let mut client = Client::connect(server.addr).unwrap();
            produce(&mut client, partition, 1, &[value.as_str()]);
            let mut got = Vec::new();
            while got.is_empty() {
                assert!(Instant::now() < deadline, "round {round} never arrived");
                got = values(consumer.poll(Duration::from_secs(5)).unwrap());
            }
            assert_eq!(got, [(partition, round / 2, value)], "round {round}");
        }
    }

    #[test]
    fn out_of_range_positions_follow_the_reset_policy() {
        let server = FakeServer::start("t", 1, Behaviour::default());
        let mut client = Client::connect(server.addr).unwrap();
        produce(&mut client, 0, 1, &["a"]);

        let mut consumer = consumer(&server, AutoOffsetReset::Earliest);
        consumer.assign("t", &[0]);
        consumer.seek(0, SeekTo::Offset(50)).unwrap();
        let got = values(consumer.poll(Duration::from_secs(5)).unwrap());
        assert_eq!(got, [(0, 0, "a".to_owned())]);
        let resets: Vec<PositionReset> = consumer.take_resets().collect();
        let back = PositionReset {
            partition: 0,
            from: 50,
            to: 0,
        };
        assert_eq!((resets, back.skipped()), (vec![back], 0));
        assert_eq!(consumer.take_resets().count(), 0, "taken once");
        // The application's own seeks are not resets; the reset they lead to is.
        consumer.seek(0, SeekTo::Offset(60)).unwrap();
        assert_eq!(consumer.take_resets().count(), 0);
        let _ = values(consumer.poll(Duration::from_secs(5)).unwrap());
        let resets: Vec<(i64, i64)> = consumer.take_resets().map(|r| (r.from, r.to)).collect();
        assert_eq!(resets, [(60, 0)]);

        let mut strict = self::consumer(&server, AutoOffsetReset::Error);
        strict.assign("t", &[0]);
        assert!(
            strict.poll(Duration::from_millis(10)).is_err(),
            "no position"
        );
        strict.seek(0, SeekTo::Offset(50)).unwrap();
        let error = strict.poll(Duration::from_secs(5)).unwrap_err();
        assert_eq!(error.code(), Some(ErrorCode::OffsetOutOfRange));
    }

    #[test]
    fn an_error_of_one_partition_moves_no_position() {
        let server = FakeServer::start("t", 2, Behaviour::default());
        let mut client = Client::connect(server.addr).unwrap();
        produce(&mut client, 0, 1, &["a", "b", "c"]);
        let mut strict = consumer(&server, AutoOffsetReset::Error);
        strict.assign("t", &[0, 1]);
        strict.seek(0, SeekTo::Offset(0)).unwrap();
        strict.seek(1, SeekTo::Offset(50)).unwrap();
        let error = strict.poll(Duration::from_secs(5)).unwrap_err();
        assert_eq!(error.code(), Some(ErrorCode::OffsetOutOfRange));
        // Partition 0's records came in the same answer, and were not returned: its position
        // stays, so the next poll returns them.
        assert_eq!(strict.position(0), Some(0));
        strict.seek(1, SeekTo::Offset(0)).unwrap();
        let got = values(strict.poll(Duration::from_secs(5)).unwrap());
        assert_eq!(got.len(), 3, "{got:?}");
    }

    #[test]
    fn corrupt_batches_are_reported_not_skipped() {
        let batch_at = |base_offset: i64, corrupt: bool| {
            let mut builder = BatchBuilder::new(Vec::new(), 0);
            builder.push(0, None, Some(b"v"), &[]).unwrap();
            let mut bytes = builder.finish().to_vec();
            ringlog_engine::batch::set_base_offset(&mut bytes, base_offset).unwrap();
            if corrupt {
                let last = bytes.len() - 1;
                bytes[last] ^= 0xff;
            }
            bytes
        };
        let batches = batch_at(0, true);
        assert_eq!(
            next_position(0, &batches),
            (0, true),
            "the position stays before it, and the poll returns to report it"
        );
        // Good, corrupt, good: the position stops at the corrupt one, where the records
        // iterator stops too; the batch after it is fetched again, not skipped.
        let mut three = batch_at(0, false);
        three.extend_from_slice(&batch_at(1, true));
        three.extend_from_slice(&batch_at(2, false));
        assert_eq!(next_position(0, &three), (1, true));
        assert_eq!(next_position(0, &batch_at(0, false)), (1, false));
        let mut cursor = PartitionCursor {
            partition: 0,
            start: 0,
            batches: BatchIter::new(&batches),
            records: None,
        };
        let decompressed = Decompressed::default();
        let item =
            Records::next_in_partition("t", &mut cursor, &mut decompressed.reader()).unwrap();
        assert!(matches!(item, Err(ClientError::Batch(_))));
    }
}
