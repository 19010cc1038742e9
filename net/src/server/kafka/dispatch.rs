//! Decodes a request's header, checks its api and version, and hands it to its handler.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;

use bytes::{Buf, Bytes};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{
    ApiKey, DescribeClusterResponse, FindCoordinatorResponse, HeartbeatResponse,
    InitProducerIdResponse, JoinGroupResponse, LeaveGroupResponse, ListGroupsResponse,
    RequestHeader, SaslHandshakeResponse, SyncGroupResponse,
};
use kafka_protocol::protocol::Decodable;

use super::codec::{encode_response, KafkaError, KafkaRequest, KafkaResponse};
use super::{
    cluster, consumer_protocol, fetch, group_admin, groups, offsets, produce, share, topics,
    versions, KafkaShard,
};
use crate::server::latch::Latch;

/// Group assignments one connection keeps between JoinGroup and SyncGroup (a client is a
/// member of few groups at once; the oldest is dropped past this).
const PENDING_ASSIGNMENTS_MAX: usize = 16;

/// A JoinGroup's assignment, for the SyncGroup that follows.
struct PendingAssignment {
    group: String,
    member_id: String,
    generation: i32,
    assignment: Vec<(String, Vec<u32>)>,
}

/// What the handlers know about the client's connection.
pub(crate) struct ClientInfo {
    /// Where this client reaches node 0.
    pub(crate) advertised: SocketAddr,
    assignments: RefCell<Vec<PendingAssignment>>,
    /// Set once the connection carries no more requests: long polls answer at once.
    pub(crate) hangup: Latch,
    /// Share sessions of Kafka share consumers on this connection.
    pub(crate) share_sessions: RefCell<share::Sessions>,
}

impl ClientInfo {
    /// A new connection's state.
    pub(crate) fn new(advertised: SocketAddr) -> ClientInfo {
        ClientInfo {
            advertised,
            assignments: RefCell::new(Vec::new()),
            hangup: Latch::default(),
            share_sessions: RefCell::new(share::Sessions::default()),
        }
    }

    /// Keeps the assignment a JoinGroup got until the member's next JoinGroup.
    pub(crate) fn remember_assignment(
        &self,
        group: &str,
        member_id: &str,
        generation: i32,
        assignment: Vec<(String, Vec<u32>)>,
    ) {
        let mut pending = self.assignments.borrow_mut();
        pending.retain(|p| !(p.group == group && p.member_id == member_id));
        if pending.len() >= PENDING_ASSIGNMENTS_MAX {
            pending.remove(0);
        }
        pending.push(PendingAssignment {
            group: group.to_string(),
            member_id: member_id.to_string(),
            generation,
            assignment,
        });
    }

    /// The assignment `member_id` got in `generation` of `group` on this connection.
    pub(crate) fn assignment(
        &self,
        group: &str,
        member_id: &str,
        generation: i32,
    ) -> Option<Vec<(String, Vec<u32>)>> {
        self.assignments
            .borrow()
            .iter()
            .find(|p| p.group == group && p.member_id == member_id && p.generation == generation)
            .map(|p| p.assignment.clone())
    }
}

/// Serves one request frame (after its size prefix); `Ok(None)` when the request wants no
/// response (produce with acks=0).
pub(crate) async fn handle(
    kafka: &Rc<KafkaShard>,
    client: &ClientInfo,
    frame: Bytes,
) -> Result<Option<KafkaResponse>, KafkaError> {
    let raw_key = frame
        .get(..2)
        .map(|key| i16::from_be_bytes([key[0], key[1]]));
    let supported = peek_header(&frame)
        .is_ok_and(|(api_key, version, _)| versions::is_supported(api_key, version));
    let result = serve(kafka, client, frame).await;
    if let Some(raw_key) = raw_key {
        kafka
            .shard
            .requests
            .kafka(raw_key, !supported || result.is_err());
    }
    result
}

/// [`handle`] without the counting.
async fn serve(
    kafka: &Rc<KafkaShard>,
    client: &ClientInfo,
    frame: Bytes,
) -> Result<Option<KafkaResponse>, KafkaError> {
    let (api_key, version, correlation_id) = peek_header(&frame)?;
    if !versions::is_supported(api_key, version) {
        return unsupported(api_key, version, correlation_id).map(Some);
    }
    let mut rest = frame.clone();
    let header = RequestHeader::decode(&mut rest, api_key.request_header_version(version))
        .map_err(|error| KafkaError::Decode {
            api_key,
            version,
            message: error.to_string(),
        })?;
    let request = KafkaRequest {
        api_key,
        header,
        body: rest,
        frame,
    };
    let response = match api_key {
        ApiKey::ApiVersions => cluster::api_versions(&request)?,
        ApiKey::Metadata => cluster::metadata(kafka, client, &request).await?,
        ApiKey::DescribeCluster => cluster::describe_cluster(client, &request)?,
        ApiKey::DescribeLogDirs => cluster::describe_log_dirs(kafka, &request).await?,
        ApiKey::Produce => return produce::produce(kafka, request).await,
        ApiKey::InitProducerId => produce::init_producer_id(kafka, &request).await?,
        ApiKey::Fetch => fetch::fetch(kafka, &request, &client.hangup).await?,
        ApiKey::ListOffsets => fetch::list_offsets(kafka, &request).await?,
        ApiKey::CreateTopics => topics::create_topics(kafka, &request).await?,
        ApiKey::DeleteTopics => topics::delete_topics(kafka, &request).await?,
        ApiKey::DeleteRecords => topics::delete_records(kafka, &request).await?,
        ApiKey::DescribeConfigs => topics::describe_configs(kafka, &request).await?,
        ApiKey::CreatePartitions => topics::create_partitions(kafka, &request).await?,
        ApiKey::AlterConfigs => topics::alter_configs(kafka, &request).await?,
        ApiKey::IncrementalAlterConfigs => {
            topics::incremental_alter_configs(kafka, &request).await?
        }
        ApiKey::FindCoordinator => groups::find_coordinator(client, &request)?,
        ApiKey::JoinGroup => groups::join_group(kafka, client, &request).await?,
        ApiKey::SyncGroup => groups::sync_group(kafka, client, &request).await?,
        ApiKey::Heartbeat => groups::heartbeat(kafka, &request).await?,
        ApiKey::LeaveGroup => groups::leave_group(kafka, &request).await?,
        ApiKey::OffsetCommit => offsets::offset_commit(kafka, &request).await?,
        ApiKey::OffsetFetch => offsets::offset_fetch(kafka, &request).await?,
        ApiKey::OffsetDelete => offsets::offset_delete(kafka, &request).await?,
        ApiKey::ListGroups => group_admin::list_groups(kafka, &request).await?,
        ApiKey::DescribeGroups => group_admin::describe_groups(kafka, &request).await?,
        ApiKey::DeleteGroups => group_admin::delete_groups(kafka, &request).await?,
        ApiKey::ConsumerGroupHeartbeat => {
            consumer_protocol::consumer_group_heartbeat(kafka, &request).await?
        }
        ApiKey::ShareGroupHeartbeat => share::share_group_heartbeat(kafka, &request).await?,
        ApiKey::ShareGroupDescribe => share::share_group_describe(kafka, &request).await?,
        ApiKey::ShareFetch => share::share_fetch(kafka, client, &request).await?,
        ApiKey::ShareAcknowledge => share::share_acknowledge(kafka, client, &request).await?,
        other => {
            // versions::is_supported lists only the apis above.
            return Err(KafkaError::Unsupported {
                api_key: other,
                version,
            });
        }
    };
    Ok(Some(response))
}

/// Api key, version and correlation id: the first fields of every request header version.
fn peek_header(frame: &[u8]) -> Result<(ApiKey, i16, i32), KafkaError> {
    let Some(mut fixed) = frame.get(..8) else {
        return Err(KafkaError::Truncated(frame.len()));
    };
    let raw_key = fixed.get_i16();
    let version = fixed.get_i16();
    let correlation_id = fixed.get_i32();
    let api_key = ApiKey::try_from(raw_key).map_err(|()| KafkaError::UnknownApi(raw_key))?;
    Ok((api_key, version, correlation_id))
}

/// The answer to an api or version this server does not serve: UNSUPPORTED_VERSION where the
/// response has a top-level error code (ApiVersions answers in v0, as KIP-511 asks, with
/// the versions it does serve); for any other api the connection closes, as Kafka brokers do.
fn unsupported(
    api_key: ApiKey,
    version: i16,
    correlation_id: i32,
) -> Result<KafkaResponse, KafkaError> {
    let code = ResponseError::UnsupportedVersion.code();
    tracing::debug!(?api_key, version, "unsupported Kafka api version");
    macro_rules! answer {
        ($response:ty) => {
            encode_response(
                api_key,
                correlation_id,
                version,
                &<$response>::default().with_error_code(code),
            )
        };
    }
    match api_key {
        ApiKey::ApiVersions => cluster::api_versions_unsupported(correlation_id),
        ApiKey::InitProducerId => answer!(InitProducerIdResponse),
        ApiKey::DescribeCluster => answer!(DescribeClusterResponse),
        ApiKey::FindCoordinator if version < 4 => answer!(FindCoordinatorResponse),
        ApiKey::JoinGroup => answer!(JoinGroupResponse),
        ApiKey::SyncGroup => answer!(SyncGroupResponse),
        ApiKey::Heartbeat => answer!(HeartbeatResponse),
        ApiKey::LeaveGroup => answer!(LeaveGroupResponse),
        ApiKey::ListGroups => answer!(ListGroupsResponse),
        ApiKey::SaslHandshake => answer!(SaslHandshakeResponse),
        _ => Err(KafkaError::Unsupported { api_key, version }),
    }
}
