//! [`Client`]: one blocking method per api, returning owned results.

use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use super::connection::{Connection, ConnectionConfig, ResponseFrame};
use super::error::ClientError;
use super::group_calls::EntryResult;
use crate::api::{ApiKey, ApiVersionRange};
use crate::error_code::ErrorCode;
use crate::message::delete_records::{self, DeleteBefore};
use crate::message::fetch::FetchedPartitions;
use crate::message::list_offsets::OffsetSpec;
use crate::message::produce::Acks;
use crate::message::{
    alter_topic, api_versions, create_topic, delete_topic, fetch, init_producer_id,
};
use crate::message::{list_offsets, list_topics};
use crate::message::{metadata, produce, topic_config, ResponseStatus, Status};

/// What the server said about itself in the handshake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerInfo {
    /// Server software name.
    pub server_name: String,
    /// Server software version.
    pub server_version: String,
    /// Shards (cores) serving partitions.
    pub shard_count: u16,
    /// Apis and versions the server speaks (ids this client does not know are left out).
    pub apis: Vec<ApiVersionRange>,
    /// Largest frame the server accepts.
    pub frame_bytes_max: u32,
    /// Requests a connection may have in flight.
    pub in_flight_requests_max: u32,
    /// Shard serving this connection (see [`Connection::connect_to_shard`]).
    pub connection_shard: u16,
}

/// How this client names itself in ApiVersions.
pub(crate) const CLIENT_NAME: &str = "ringlog-rust";
pub(crate) const CLIENT_VERSION: &str = env!("CARGO_PKG_VERSION");

/// A topic's configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicInfo {
    /// Topic name.
    pub name: String,
    /// Partition count.
    pub partitions: u32,
    /// Age limit in ms, -1 for unlimited.
    pub retention_ms: i64,
    /// Size limit per partition in bytes, -1 for unlimited.
    pub retention_bytes: i64,
    /// Segment file size in bytes.
    pub segment_bytes: i64,
}

/// A topic's partitions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicMetadata {
    /// Topic name.
    pub name: String,
    /// Partitions in id order.
    pub partitions: Vec<PartitionInfo>,
}

impl TopicMetadata {
    /// The shard that owns `partition`, if the topic has it.
    pub fn shard_of(&self, partition: u32) -> Option<u16> {
        let info = self
            .partitions
            .iter()
            .find(|info| info.partition == partition)?;
        Some(info.shard)
    }
}

/// One partition's place and extent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionInfo {
    /// Partition id.
    pub partition: u32,
    /// Owning shard.
    pub shard: u16,
    /// First offset still stored.
    pub log_start_offset: i64,
    /// Offset the next record will get.
    pub high_watermark: i64,
    /// Bytes of the partition's segments (0 from a server that does not report it).
    pub size_bytes: u64,
    /// A per-partition problem the server reported (None when healthy).
    pub error: ErrorCode,
}

/// An offset found by ListOffsets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListedOffset {
    /// The offset.
    pub offset: i64,
    /// Timestamp of the record at `offset` for timestamp lookups that found one, else -1.
    pub timestamp_ms: i64,
}

/// A fetch sent with [`Client::send_fetch`] whose answer has not been received yet.
#[derive(Debug, PartialEq, Eq)]
#[must_use = "receive or abandon a sent fetch, or its answer is kept until the connection closes"]
pub struct PendingFetch {
    correlation_id: u32,
    /// The fetch's long-poll wait, added to the request timeout when receiving it.
    wait: Duration,
}

/// A fetch response, owning its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchResult {
    frame: ResponseFrame,
}

impl FetchResult {
    /// Every requested partition in request order, with its raw batches (read them with
    /// `ringlog_engine::batch::BatchIter` and `records`).
    pub fn partitions(&self) -> Result<FetchedPartitions<'_>, ClientError> {
        let view = self.frame.view::<fetch::ResponseView>()?;
        Ok(fetch::partitions(&view, self.frame.raw())?)
    }

    /// The underlying frame.
    pub fn frame(&self) -> &ResponseFrame {
        &self.frame
    }
}

/// A blocking client on one connection: admin calls, single-batch produce, fetch and offsets.
/// For batching producers and polling consumers see [`super::Producer`] and
/// [`super::Consumer`].
///
/// ```no_run
/// use ringlog_net::client::Client;
/// use ringlog_net::message::create_topic;
///
/// # fn main() -> Result<(), ringlog_net::client::ClientError> {
/// let mut client = Client::connect("127.0.0.1:9092")?;
/// client.create_topic(&create_topic::Request { name: "orders", partitions: 4, ..Default::default() })?;
/// for topic in client.list_topics()? {
///     println!("{} ({} partitions)", topic.name, topic.partitions);
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct Client {
    connection: Connection,
    request_timeout: Duration,
}

impl Client {
    /// Connects with default settings.
    pub fn connect(addr: impl ToSocketAddrs) -> Result<Self, ClientError> {
        Self::connect_with(addr, ConnectionConfig::default())
    }

    /// Connects with `config`.
    pub fn connect_with(
        addr: impl ToSocketAddrs,
        config: ConnectionConfig,
    ) -> Result<Self, ClientError> {
        Ok(Self::from_connection(
            Connection::connect(addr, config)?,
            config,
        ))
    }

    /// Connects to the shard that owns `partitions` of `topic` when one shard owns them all,
    /// so that requests for them never travel between shards (see
    /// [`Connection::connect_to_shard`]); otherwise like [`Client::connect_with`]. Costs a
    /// Metadata and an ApiVersions call, and a second connect when the first landed elsewhere.
    pub fn connect_to_partitions(
        addr: impl ToSocketAddrs,
        topic: &str,
        partitions: &[u32],
        config: ConnectionConfig,
    ) -> Result<Self, ClientError> {
        let addrs: Vec<SocketAddr> = addr.to_socket_addrs()?.collect();
        let mut probe = Self::connect_with(addrs.as_slice(), config)?;
        let Some(shard) = probe.owning_shard(topic, partitions)? else {
            return Ok(probe);
        };
        let info = probe.api_versions(CLIENT_NAME, CLIENT_VERSION)?;
        if info.connection_shard == shard {
            return Ok(probe);
        }
        drop(probe);
        let connection =
            Connection::connect_to_shard(addrs.as_slice(), shard, info.shard_count, config)?;
        Ok(Self::from_connection(connection, config))
    }

    /// Connects once for each shard that owns some of `partitions` of `topic`, each
    /// connection steered to its shard (see [`Connection::connect_to_shard`]), and returns
    /// each with the partitions it serves, in the order given. A consumer of partitions on
    /// several shards then has each shard send its own partitions' bytes, in parallel, as a
    /// Kafka consumer fetches from each partition's leader; over one connection, that
    /// connection's shard would send them all. Partitions the metadata does not name go to
    /// the first connection; no partitions at all get one connection. Costs a Metadata and an ApiVersions call, and one connect per
    /// shard beside the first.
    pub fn connect_per_shard(
        addr: impl ToSocketAddrs,
        topic: &str,
        partitions: &[u32],
        config: ConnectionConfig,
    ) -> Result<Vec<(Client, Vec<u32>)>, ClientError> {
        let addrs: Vec<SocketAddr> = addr.to_socket_addrs()?.collect();
        let mut probe = Self::connect_with(addrs.as_slice(), config)?;
        let topics = probe.metadata(&[topic])?;
        let info = probe.api_versions(CLIENT_NAME, CLIENT_VERSION)?;
        let metadata = topics.iter().find(|t| t.name == topic);
        let owner = |partition: u32| {
            metadata
                .and_then(|t| t.shard_of(partition))
                .unwrap_or(info.connection_shard)
        };
        // (shard, partitions), the probe's shard first.
        let mut groups: Vec<(u16, Vec<u32>)> = vec![(info.connection_shard, Vec::new())];
        for &partition in partitions {
            let shard = owner(partition);
            match groups.iter_mut().find(|(owner, _)| *owner == shard) {
                Some((_, members)) => members.push(partition),
                None => groups.push((shard, vec![partition])),
            }
        }
        let mut clients = Vec::with_capacity(groups.len());
        let mut probe = Some(probe);
        for (shard, members) in groups {
            // With no partitions at all, the probe is still returned: one connection.
            if members.is_empty() && !partitions.is_empty() {
                continue;
            }
            let client = match probe.take() {
                Some(probe) if shard == info.connection_shard => probe,
                unused => {
                    probe = unused;
                    let connection = Connection::connect_to_shard(
                        addrs.as_slice(),
                        shard,
                        info.shard_count,
                        config,
                    )?;
                    Self::from_connection(connection, config)
                }
            };
            clients.push((client, members));
        }
        Ok(clients)
    }

    /// The shard that owns every one of `partitions` of `topic`, if one does.
    fn owning_shard(
        &mut self,
        topic: &str,
        partitions: &[u32],
    ) -> Result<Option<u16>, ClientError> {
        let topics = self.metadata(&[topic])?;
        let Some(metadata) = topics.iter().find(|t| t.name == topic) else {
            return Ok(None);
        };
        let mut owners = metadata
            .partitions
            .iter()
            .filter(|info| partitions.contains(&info.partition))
            .map(|info| info.shard);
        let Some(first) = owners.next() else {
            return Ok(None);
        };
        Ok(owners.all(|shard| shard == first).then_some(first))
    }

    /// Wraps an established connection made with `config`.
    pub fn from_connection(connection: Connection, config: ConnectionConfig) -> Self {
        Self {
            connection,
            request_timeout: Duration::from_millis(config.request_timeout_ms.max(1)),
        }
    }

    /// The connection, for pipelining requests of any api ([`Connection::send`]).
    pub fn connection(&mut self) -> &mut Connection {
        &mut self.connection
    }

    /// Connects to the same server as `other`, steered to `shard` of `shard_count` (see
    /// [`Connection::connect_to_shard`]).
    pub fn connect_to_shard(
        other: &Client,
        shard: u16,
        shard_count: u16,
        config: ConnectionConfig,
    ) -> Result<Self, ClientError> {
        let addr = other.connection.peer_addr()?;
        let connection = Connection::connect_to_shard(addr, shard, shard_count, config)?;
        Ok(Self::from_connection(connection, config))
    }

    /// The connection, read-only: to wait on it with others ([`super::ResponseSelect`]).
    pub fn connection_ref(&self) -> &Connection {
        &self.connection
    }

    /// Gives the connection back.
    pub fn into_connection(self) -> Connection {
        self.connection
    }

    /// How long a call waits for its response (long polls add their own wait).
    pub fn request_timeout(&self) -> Duration {
        self.request_timeout
    }

    /// Handshake: names this client and learns what the server speaks.
    pub fn api_versions(
        &mut self,
        client_name: &str,
        client_version: &str,
    ) -> Result<ServerInfo, ClientError> {
        let frame = self.connection.call(&api_versions::Request {
            client_name,
            client_version,
        })?;
        let view = frame.view::<api_versions::ResponseView>()?;
        check(ApiKey::ApiVersions, view.status())?;
        let apis = view
            .apis()
            .unwrap_or_default()
            .iter()
            .filter_map(|range| {
                Some(ApiVersionRange {
                    api: ApiKey::try_from(range.api()).ok()?,
                    min_version: range.min_version(),
                    max_version: range.max_version(),
                })
            })
            .collect();
        Ok(ServerInfo {
            server_name: view.server_name().unwrap_or_default().to_owned(),
            server_version: view.server_version().unwrap_or_default().to_owned(),
            shard_count: view.shard_count(),
            apis,
            frame_bytes_max: view.frame_bytes_max(),
            in_flight_requests_max: view.in_flight_requests_max(),
            connection_shard: view.connection_shard(),
        })
    }

    /// Partitions of `topics` (every topic when empty). A requested topic that does not exist
    /// fails the call with UnknownTopic.
    pub fn metadata(&mut self, topics: &[&str]) -> Result<Vec<TopicMetadata>, ClientError> {
        let frame = self.connection.call(&metadata::Request { topics })?;
        parse_metadata(&frame)
    }

    /// Like [`Client::metadata`], with the number of shards serving the server.
    pub fn metadata_and_shard_count(
        &mut self,
        topics: &[&str],
    ) -> Result<(Vec<TopicMetadata>, u16), ClientError> {
        let frame = self.connection.call(&metadata::Request { topics })?;
        let shard_count = frame.view::<metadata::ResponseView>()?.shard_count();
        Ok((parse_metadata(&frame)?, shard_count))
    }

    /// Number of partitions of one topic.
    pub fn partition_count(&mut self, topic: &str) -> Result<u32, ClientError> {
        partition_count_of(&self.metadata(&[topic])?, topic)
    }

    /// Creates a topic and returns it as created.
    pub fn create_topic(
        &mut self,
        request: &create_topic::Request<'_>,
    ) -> Result<TopicInfo, ClientError> {
        let frame = self.connection.call(request)?;
        let view = frame.view::<create_topic::ResponseView>()?;
        answered_topic(ApiKey::CreateTopic, view.status(), view.config())
    }

    /// Changes a topic's retention and returns its configuration after the change.
    pub fn alter_topic(
        &mut self,
        request: &alter_topic::Request<'_>,
    ) -> Result<TopicInfo, ClientError> {
        let frame = self.connection.call(request)?;
        let view = frame.view::<alter_topic::ResponseView>()?;
        answered_topic(ApiKey::AlterTopic, view.status(), view.config())
    }

    /// Deletes a topic.
    pub fn delete_topic(&mut self, name: &str) -> Result<(), ClientError> {
        let frame = self.connection.call(&delete_topic::Request { name })?;
        let view = frame.view::<delete_topic::ResponseView>()?;
        check(ApiKey::DeleteTopic, view.status())
    }

    /// InitProducerId: a new producer id with epoch 0 (`producer_id` -1, `producer_epoch` -1),
    /// or the next epoch of an existing one. Batches stamped with the result are idempotent:
    /// the server appends each sequence once (see `Producer`, which does this by itself).
    pub fn init_producer_id(
        &mut self,
        producer_id: i64,
        producer_epoch: i16,
    ) -> Result<(i64, i16), ClientError> {
        let frame = self.connection.call(&init_producer_id::Request {
            producer_id,
            producer_epoch,
        })?;
        let view = frame.view::<init_producer_id::ResponseView>()?;
        check(ApiKey::InitProducerId, view.status())?;
        Ok((view.producer_id(), view.producer_epoch()))
    }

    /// Every topic with its configuration.
    pub fn list_topics(&mut self) -> Result<Vec<TopicInfo>, ClientError> {
        let frame = self.connection.call(&list_topics::Request)?;
        let view = frame.view::<list_topics::ResponseView>()?;
        check(ApiKey::ListTopics, view.status())?;
        Ok(view
            .topics()
            .unwrap_or_default()
            .iter()
            .map(|t| topic_info(&t))
            .collect())
    }

    /// Appends `batches` (whole RecordBatch v2 batches, e.g. from
    /// `ringlog_engine::batch::BatchBuilder`) to one partition. Returns the offset of the
    /// first record, or `None` with [`Acks::None`], which gets no answer.
    pub fn produce(
        &mut self,
        topic: &str,
        partition: u32,
        acks: Acks,
        batches: &[u8],
    ) -> Result<Option<i64>, ClientError> {
        let entries = [produce::PartitionBatches { partition, batches }];
        let request = produce::Request {
            acks,
            timeout_ms: duration_ms_u32(self.request_timeout),
            topic,
            partitions: &entries,
        };
        if acks == Acks::None {
            self.connection.send_without_response(&request)?;
            return Ok(None);
        }
        let frame = self.connection.call(&request)?;
        let view = frame.view::<produce::ResponseView>()?;
        check(ApiKey::Produce, view.status())?;
        let entry = view
            .partitions()
            .unwrap_or_default()
            .iter()
            .next()
            .ok_or_else(|| {
                ClientError::UnexpectedResponse("Produce response without entries".to_owned())
            })?;
        check(
            ApiKey::Produce,
            Status::from_wire(entry.error_code(), entry.error_message()),
        )?;
        Ok(Some(entry.base_offset()))
    }

    /// Fetches (long poll). Per-partition errors are left in the result's entries.
    pub fn fetch(&mut self, request: &fetch::Request<'_>) -> Result<FetchResult, ClientError> {
        let pending = self.send_fetch(request)?;
        self.receive_fetch(pending)
    }

    /// Sends a fetch without waiting for its answer, so the next fetch can be on its way while
    /// the current one's records are handled (as Kafka consumers prefetch). Receive it with
    /// [`Self::receive_fetch`], or drop interest with [`Self::abandon_fetch`].
    pub fn send_fetch(
        &mut self,
        request: &fetch::Request<'_>,
    ) -> Result<PendingFetch, ClientError> {
        let correlation_id = self.connection.send(request)?;
        Ok(PendingFetch {
            correlation_id,
            wait: Duration::from_millis(u64::from(request.max_wait_ms)),
        })
    }

    /// Waits for the answer to a fetch sent with [`Self::send_fetch`].
    pub fn receive_fetch(&mut self, pending: PendingFetch) -> Result<FetchResult, ClientError> {
        let frame = self
            .connection
            .receive_within(pending.correlation_id, self.request_timeout + pending.wait)?;
        let view = frame.view::<fetch::ResponseView>()?;
        check(ApiKey::Fetch, view.status())?;
        Ok(FetchResult { frame })
    }

    /// Reads, without waiting, what has arrived, and says whether [`Self::receive_fetch`]
    /// now waits at most for the rest of `pending`'s answer (see
    /// [`Connection::response_started`]): a connection found readable may hold only answers
    /// to abandoned fetches.
    pub(crate) fn fetch_started(&mut self, pending: &PendingFetch) -> Result<bool, ClientError> {
        self.connection.response_started(pending.correlation_id)
    }

    /// Forgets a fetch sent with [`Self::send_fetch`]: its answer is dropped when it arrives.
    pub fn abandon_fetch(&mut self, pending: PendingFetch) {
        self.connection.abandon(pending.correlation_id);
    }

    /// Gives a fetch result's buffer back, so a later response of the same size is received
    /// without allocating (and zeroing) megabytes again.
    pub fn recycle(&mut self, result: FetchResult) {
        self.connection.recycle(result.frame.into_buffer());
    }

    /// Moves the log start offsets of partitions of `topic` up (Kafka's DeleteRecords; see
    /// [`delete_records`]): one outcome per entry, in order, with the partition's log start
    /// offset after the request or the server's error for that entry.
    pub fn delete_records(
        &mut self,
        topic: &str,
        partitions: &[DeleteBefore],
    ) -> Result<Vec<EntryResult<u32>>, ClientError> {
        let frame = self
            .connection
            .call(&delete_records::Request { topic, partitions })?;
        let view = frame.view::<delete_records::ResponseView>()?;
        check(ApiKey::DeleteRecords, view.status())?;
        let results: Vec<EntryResult<u32>> = view
            .results()
            .unwrap_or_default()
            .iter()
            .map(|answer| EntryResult {
                entry: answer.partition(),
                result: check(
                    ApiKey::DeleteRecords,
                    Status::from_wire(answer.error_code(), answer.error_message()),
                )
                .map(|()| answer.log_start_offset()),
            })
            .collect();
        if results.len() != partitions.len() {
            return Err(ClientError::UnexpectedResponse(format!(
                "DeleteRecords answered {} of {} entries",
                results.len(),
                partitions.len()
            )));
        }
        Ok(results)
    }

    /// Looks up one offset by position or time.
    pub fn list_offsets(
        &mut self,
        topic: &str,
        partition: u32,
        spec: OffsetSpec,
    ) -> Result<ListedOffset, ClientError> {
        let queries = [list_offsets::OffsetQuery { partition, spec }];
        let frame = self.connection.call(&list_offsets::Request {
            topic,
            partitions: &queries,
        })?;
        let view = frame.view::<list_offsets::ResponseView>()?;
        check(ApiKey::ListOffsets, view.status())?;
        let entry = view
            .partitions()
            .unwrap_or_default()
            .iter()
            .next()
            .ok_or_else(|| {
                ClientError::UnexpectedResponse("ListOffsets response without entries".to_owned())
            })?;
        check(
            ApiKey::ListOffsets,
            Status::from_wire(entry.error_code(), entry.error_message()),
        )?;
        Ok(ListedOffset {
            offset: entry.offset(),
            timestamp_ms: entry.timestamp_ms(),
        })
    }
}

/// Turns an error status into [`ClientError::Server`].
pub(crate) fn check(api: ApiKey, status: Status<'_>) -> Result<(), ClientError> {
    if status.is_ok() {
        Ok(())
    } else {
        Err(ClientError::server(api, status.code, status.message))
    }
}

/// A duration in whole ms, saturating at `u32::MAX`.
pub(crate) fn duration_ms_u32(duration: Duration) -> u32 {
    u32::try_from(duration.as_millis()).unwrap_or(u32::MAX)
}

/// Owned copy of a topic config view.
/// The topic a CreateTopic or AlterTopic answer carries (absent only on error).
fn answered_topic(
    api: ApiKey,
    status: Status<'_>,
    config: Option<crate::protocol::TopicConfig<'_>>,
) -> Result<TopicInfo, ClientError> {
    check(api, status)?;
    let config = config.ok_or_else(|| {
        ClientError::UnexpectedResponse(format!("{} response without config", api.name()))
    })?;
    Ok(topic_info(&config))
}

fn topic_info(view: &crate::protocol::TopicConfig<'_>) -> TopicInfo {
    let config = topic_config(view);
    TopicInfo {
        name: config.name.to_owned(),
        partitions: config.partitions,
        retention_ms: config.retention_ms,
        retention_bytes: config.retention_bytes,
        segment_bytes: config.segment_bytes,
    }
}

/// The topics of a Metadata response; a topic-level error fails the whole answer.
pub(crate) fn parse_metadata(frame: &ResponseFrame) -> Result<Vec<TopicMetadata>, ClientError> {
    let view = frame.view::<metadata::ResponseView>()?;
    check(ApiKey::Metadata, view.status())?;
    let mut result = Vec::new();
    for topic in view.topics().unwrap_or_default() {
        check(
            ApiKey::Metadata,
            Status::from_wire(topic.error_code(), topic.error_message()),
        )?;
        let partitions = topic
            .partitions()
            .unwrap_or_default()
            .iter()
            .map(|p| PartitionInfo {
                partition: p.partition(),
                shard: p.shard(),
                log_start_offset: p.log_start_offset(),
                high_watermark: p.high_watermark(),
                size_bytes: p.size_bytes(),
                error: ErrorCode::from_u16(p.error_code()),
            })
            .collect();
        result.push(TopicMetadata {
            name: topic.name().to_owned(),
            partitions,
        });
    }
    Ok(result)
}

/// The partition count of `topic` in `topics` (UnknownTopic when it is not there).
pub(crate) fn partition_count_of(
    topics: &[TopicMetadata],
    topic: &str,
) -> Result<u32, ClientError> {
    let count = topics
        .iter()
        .find(|t| t.name == topic)
        .map(|t| t.partitions.len())
        .ok_or_else(|| ClientError::server(ApiKey::Metadata, ErrorCode::UnknownTopic, topic))?;
    u32::try_from(count)
        .map_err(|_| ClientError::UnexpectedResponse("partition count over u32".to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::fake_server::{Behaviour, FakeServer};

    #[test]
    fn calls_map_results_and_errors() {
        let server = FakeServer::start("t", 3, Behaviour::default());
        let mut client = Client::connect(server.addr).unwrap();
        let topics = client.metadata(&[]).unwrap();
        assert_eq!(topics.len(), 1);
        assert_eq!(topics[0].name, "t");
        assert_eq!(topics[0].partitions.len(), 3);
        assert_eq!(client.partition_count("t").unwrap(), 3);
        assert_eq!(
            client.partition_count("missing").unwrap_err().code(),
            Some(ErrorCode::UnknownTopic)
        );
        let latest = client.list_offsets("t", 1, OffsetSpec::Latest).unwrap();
        assert_eq!(latest.offset, 0);
        // The fake answers apis it does not implement with an ErrorResponse body, which reads
        // as any response type.
        let error = client
            .create_topic(&create_topic::Request {
                name: "n",
                partitions: 1,
                ..Default::default()
            })
            .unwrap_err();
        assert_eq!(error.code(), Some(ErrorCode::UnsupportedVersion));
        assert!(matches!(
            client.list_topics(),
            Err(ClientError::Server {
                api: ApiKey::ListTopics,
                ..
            })
        ));
    }
}
