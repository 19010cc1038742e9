//! Kafka consumer groups on ringlog's coordinator, spoken with the `kafka-protocol` crate:
//! FindCoordinator, JoinGroup, SyncGroup, Heartbeat, LeaveGroup, OffsetCommit and OffsetFetch,
//! a rebalance between two members, committed offsets shared with the native protocol, and
//! the admin apis ListGroups, DescribeGroups and DeleteGroups.

use std::time::{Duration, Instant};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::leave_group_request::MemberIdentity;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::{
    OffsetFetchRequestGroup, OffsetFetchRequestTopic, OffsetFetchRequestTopics,
};
use kafka_protocol::messages::{
    ConsumerProtocolAssignment, ConsumerProtocolSubscription, DeleteGroupsRequest,
    DescribeGroupsRequest, FindCoordinatorRequest, GroupId, HeartbeatRequest, JoinGroupRequest,
    JoinGroupResponse, LeaveGroupRequest, ListGroupsRequest, OffsetCommitRequest,
    OffsetFetchRequest, SyncGroupRequest,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use ringlog_net::client::{Client, GroupConsumer, GroupConsumerConfig};
use ringlog_net::error_code::ErrorCode;
use ringlog_net::message::list_offsets::OffsetSpec;
use ringlog_net::message::offset_commit::{CommitTopic, PartitionOffset};
use ringlog_net::message::TopicPartitions;

mod kafka_support;

use kafka_support::{topic_name, Kafka, TestServer};

const ILLEGAL_GENERATION: i16 = 22;
const UNKNOWN_MEMBER_ID: i16 = 25;
const REBALANCE_IN_PROGRESS: i16 = 27;
const INCONSISTENT_GROUP_PROTOCOL: i16 = 23;
const INVALID_SESSION_TIMEOUT: i16 = 26;
const TRANSACTIONAL_ID_AUTHORIZATION_FAILED: i16 = 53;
const NON_EMPTY_GROUP: i16 = 68;
const GROUP_ID_NOT_FOUND: i16 = 69;
const GROUP_MAX_SIZE_REACHED: i16 = 81;
/// The leader ringlog names: no member, so every member is a follower.
const SERVER_LEADER: &str = "ringlog-server-assignor";

fn group_id(name: &str) -> GroupId {
    GroupId(StrBytes::from_string(name.to_string()))
}

/// A member's subscription, as a consumer client encodes it (INT16 version, then the body).
fn subscription(topics: &[&str]) -> Bytes {
    let body = ConsumerProtocolSubscription::default().with_topics(
        topics
            .iter()
            .map(|t| StrBytes::from_string(t.to_string()))
            .collect(),
    );
    let mut out = BytesMut::new();
    out.put_i16(1);
    body.encode(&mut out, 1).unwrap();
    out.freeze()
}

fn join(kafka: &mut Kafka, group: &str, member_id: &str, topic: &str) -> JoinGroupResponse {
    join_topics(kafka, group, member_id, &[topic])
}

/// JoinGroup v9 of a member subscribed to `topics`.
fn join_topics(
    kafka: &mut Kafka,
    group: &str,
    member_id: &str,
    topics: &[&str],
) -> JoinGroupResponse {
    kafka.call(9, &join_request(group, member_id, topics))
}

/// JoinGroup v9 of a static member of instance `instance`.
fn join_static(
    kafka: &mut Kafka,
    group: &str,
    member_id: &str,
    instance: &str,
    topic: &str,
) -> JoinGroupResponse {
    let request = join_request(group, member_id, &[topic])
        .with_group_instance_id(Some(StrBytes::from_string(instance.to_string())));
    kafka.call(9, &request)
}

fn join_request(group: &str, member_id: &str, topics: &[&str]) -> JoinGroupRequest {
    let protocols = ["cooperative-sticky", "range"]
        .iter()
        .map(|name| {
            JoinGroupRequestProtocol::default()
                .with_name(StrBytes::from_static_str(name))
                .with_metadata(subscription(topics))
        })
        .collect();
    JoinGroupRequest::default()
        .with_group_id(group_id(group))
        .with_session_timeout_ms(10_000)
        .with_rebalance_timeout_ms(10_000)
        .with_member_id(StrBytes::from_string(member_id.to_string()))
        .with_protocol_type(StrBytes::from_static_str("consumer"))
        .with_protocols(protocols)
}

/// SyncGroup as a follower: (error code, assigned partitions of every topic).
fn sync(kafka: &mut Kafka, group: &str, joined: &JoinGroupResponse) -> (i16, Vec<i32>) {
    let (code, assignment) = sync_topics(kafka, group, joined);
    let mut partitions: Vec<i32> = assignment.into_iter().flat_map(|(_, p)| p).collect();
    partitions.sort_unstable();
    (code, partitions)
}

/// SyncGroup as a follower: (error code, assigned partitions by topic, sorted).
fn sync_topics(
    kafka: &mut Kafka,
    group: &str,
    joined: &JoinGroupResponse,
) -> (i16, Vec<(String, Vec<i32>)>) {
    let request = SyncGroupRequest::default()
        .with_group_id(group_id(group))
        .with_generation_id(joined.generation_id)
        .with_member_id(joined.member_id.clone())
        .with_protocol_type(joined.protocol_type.clone())
        .with_protocol_name(joined.protocol_name.clone());
    let response = kafka.call(5, &request);
    if response.error_code != 0 {
        return (response.error_code, Vec::new());
    }
    assert_eq!(response.protocol_name, joined.protocol_name);
    let mut bytes = response.assignment.clone();
    let version = bytes.get_i16();
    let assignment = ConsumerProtocolAssignment::decode(&mut bytes, version).unwrap();
    let mut topics: Vec<(String, Vec<i32>)> = assignment
        .assigned_partitions
        .iter()
        .map(|t| (t.topic.0.to_string(), t.partitions.clone()))
        .collect();
    topics.sort_unstable();
    (0, topics)
}

fn heartbeat(kafka: &mut Kafka, group: &str, joined: &JoinGroupResponse) -> i16 {
    let request = HeartbeatRequest::default()
        .with_group_id(group_id(group))
        .with_generation_id(joined.generation_id)
        .with_member_id(joined.member_id.clone());
    kafka.call(4, &request).error_code
}

/// Heartbeats until the coordinator asks for a rejoin (as a consumer's heartbeat thread does).
fn wait_for_rebalance(kafka: &mut Kafka, group: &str, joined: &JoinGroupResponse) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match heartbeat(kafka, group, joined) {
            REBALANCE_IN_PROGRESS => return,
            0 => assert!(Instant::now() < deadline, "no rebalance was started"),
            other => panic!("heartbeat failed with {other}"),
        }
    }
}

fn commit(
    kafka: &mut Kafka,
    group: &str,
    joined: &JoinGroupResponse,
    topic: &str,
    offsets: &[(i32, i64)],
) -> Vec<i16> {
    let partitions: Vec<(i32, i64, Option<&str>)> = offsets
        .iter()
        .map(|&(partition, offset)| (partition, offset, None))
        .collect();
    let member = (joined.generation_id, joined.member_id.as_str());
    commit_as(kafka, group, member, topic, &partitions)
}

/// OffsetCommit v8 by `(generation, member id)` of `(partition, offset, metadata)`: the error
/// codes.
fn commit_as(
    kafka: &mut Kafka,
    group: &str,
    member: (i32, &str),
    topic: &str,
    partitions: &[(i32, i64, Option<&str>)],
) -> Vec<i16> {
    commit_at(kafka, 8, group, member, topic, partitions)
}

/// [`commit_as`] at OffsetCommit `version`.
fn commit_at(
    kafka: &mut Kafka,
    version: i16,
    group: &str,
    (generation, member_id): (i32, &str),
    topic: &str,
    partitions: &[(i32, i64, Option<&str>)],
) -> Vec<i16> {
    let request = OffsetCommitRequest::default()
        .with_group_id(group_id(group))
        .with_generation_id_or_member_epoch(generation)
        .with_member_id(StrBytes::from_string(member_id.to_owned()))
        .with_topics(vec![OffsetCommitRequestTopic::default()
            .with_name(topic_name(topic))
            .with_partitions(
                partitions
                    .iter()
                    .map(|(partition, offset, metadata)| {
                        OffsetCommitRequestPartition::default()
                            .with_partition_index(*partition)
                            .with_committed_offset(*offset)
                            .with_committed_metadata(
                                metadata.map(|m| StrBytes::from_string(m.to_string())),
                            )
                    })
                    .collect(),
            )]);
    let response = kafka.call(version, &request);
    response.topics[0]
        .partitions
        .iter()
        .map(|p| p.error_code)
        .collect()
}

/// OffsetFetch v7 (one group): (partition, committed offset, error code).
fn committed_v7(
    kafka: &mut Kafka,
    group: &str,
    topic: &str,
    partitions: &[i32],
) -> Vec<(i32, i64, i16)> {
    let request = OffsetFetchRequest::default()
        .with_group_id(group_id(group))
        .with_topics(Some(vec![OffsetFetchRequestTopic::default()
            .with_name(topic_name(topic))
            .with_partition_indexes(partitions.to_vec())]));
    let response = kafka.call(7, &request);
    assert_eq!(response.error_code, 0);
    response.topics[0]
        .partitions
        .iter()
        .map(|p| (p.partition_index, p.committed_offset, p.error_code))
        .collect()
}

#[test]
fn find_coordinator_names_node_zero() {
    let server = TestServer::start();
    let mut kafka = server.kafka();
    let port = i32::from(server.kafka_addr().port());
    for version in [0, 3] {
        let request = FindCoordinatorRequest::default()
            .with_key(StrBytes::from_static_str("g"))
            .with_key_type(0);
        let response = kafka.call(version, &request);
        assert_eq!(
            (response.error_code, response.node_id.0, response.port),
            (0, 0, port)
        );
    }
    let request = FindCoordinatorRequest::default()
        .with_key_type(0)
        .with_coordinator_keys(vec![
            StrBytes::from_static_str("a"),
            StrBytes::from_static_str("b"),
        ]);
    let response = kafka.call(4, &request);
    assert_eq!(response.coordinators.len(), 2);
    assert!(response
        .coordinators
        .iter()
        .all(|c| c.error_code == 0 && c.port == port));
    let transactions = FindCoordinatorRequest::default()
        .with_key(StrBytes::from_static_str("tx"))
        .with_key_type(1);
    // No transactions: the fatal answer (COORDINATOR_NOT_AVAILABLE has clients retry forever).
    assert_eq!(
        kafka.call(3, &transactions).error_code,
        TRANSACTIONAL_ID_AUTHORIZATION_FAILED
    );
    let transactions = FindCoordinatorRequest::default()
        .with_key_type(1)
        .with_coordinator_keys(vec![StrBytes::from_static_str("tx")]);
    let response = kafka.call(4, &transactions);
    assert_eq!(
        response.coordinators[0].error_code,
        TRANSACTIONAL_ID_AUTHORIZATION_FAILED
    );
}

#[test]
fn two_members_split_partitions_and_rebalance_when_one_leaves() {
    let server = TestServer::start();
    let mut a = server.kafka();
    assert_eq!(a.create_topic("grouped", 4, &[]), 0);

    // Alone, member A gets every partition; the server assigns, so nobody is leader.
    let joined_a = join(&mut a, "g1", "", "grouped");
    assert_eq!(joined_a.error_code, 0);
    assert_eq!(joined_a.leader.as_str(), SERVER_LEADER);
    assert_eq!(
        joined_a.protocol_name.as_ref().map(|p| p.as_str()),
        Some("range"),
        "the eager protocol"
    );
    assert!(joined_a.members.is_empty());
    assert_eq!(sync(&mut a, "g1", &joined_a), (0, vec![0, 1, 2, 3]));
    assert_eq!(heartbeat(&mut a, "g1", &joined_a), 0);
    assert_eq!(
        commit(&mut a, "g1", &joined_a, "grouped", &[(0, 5), (3, 7)]),
        [0, 0]
    );

    // B joins: its JoinGroup waits until A has rejoined.
    let addr = server.kafka_addr();
    let joining = std::thread::spawn(move || {
        let mut b = Kafka::connect(addr);
        let joined = join(&mut b, "g1", "", "grouped");
        assert_eq!(joined.error_code, 0);
        let assigned = sync(&mut b, "g1", &joined);
        (b, joined, assigned)
    });
    wait_for_rebalance(&mut a, "g1", &joined_a);
    let rejoined_a = join(&mut a, "g1", joined_a.member_id.as_str(), "grouped");
    assert_eq!(rejoined_a.member_id, joined_a.member_id);
    assert!(rejoined_a.generation_id > joined_a.generation_id);
    let (code, assigned_a) = sync(&mut a, "g1", &rejoined_a);
    assert_eq!(code, 0);
    let (mut b, joined_b, (code, assigned_b)) = joining.join().unwrap();
    assert_eq!(code, 0);
    assert_eq!(joined_b.generation_id, rejoined_a.generation_id);
    assert_eq!(assigned_a.len(), 2);
    assert_eq!(assigned_b.len(), 2);
    let mut all: Vec<i32> = assigned_a.iter().chain(&assigned_b).copied().collect();
    all.sort_unstable();
    assert_eq!(all, [0, 1, 2, 3], "disjoint, and every partition assigned");

    // The old generation is fenced (ILLEGAL_GENERATION, as from Kafka).
    assert_eq!(heartbeat(&mut a, "g1", &joined_a), ILLEGAL_GENERATION);

    // B leaves: A is asked to rejoin and gets everything back.
    let leave = LeaveGroupRequest::default()
        .with_group_id(group_id("g1"))
        .with_members(vec![
            MemberIdentity::default().with_member_id(joined_b.member_id.clone())
        ]);
    let left = b.call(4, &leave);
    assert_eq!(left.members[0].error_code, 0);
    wait_for_rebalance(&mut a, "g1", &rejoined_a);
    let last = join(&mut a, "g1", rejoined_a.member_id.as_str(), "grouped");
    assert_eq!(sync(&mut a, "g1", &last), (0, vec![0, 1, 2, 3]));

    // Commits made before the rebalance are still there.
    assert_eq!(
        committed_v7(&mut a, "g1", "grouped", &[0, 1, 3]),
        [(0, 5, 0), (1, -1, 0), (3, 7, 0)]
    );
    // A consumer outside the group (assign(), generation -1) cannot commit while the group
    // has members: UNKNOWN_MEMBER_ID, as Kafka answers (the Java consumer then raises
    // CommitFailedException).
    let outsider = JoinGroupResponse::default().with_generation_id(-1);
    assert_eq!(commit(&mut a, "g1", &outsider, "grouped", &[(0, 9)]), [25]);
    // A topic without commits, existing or not, has none: offset -1 and no error, as Kafka
    // answers (the Java consumer throws on UNKNOWN_TOPIC_OR_PARTITION here).
    assert_eq!(
        committed_v7(&mut a, "g1", "no-such-topic", &[0]),
        [(0, -1, 0)]
    );
}

#[test]
fn subscribed_topics_are_assigned_once_created_and_given_up_once_deleted() {
    let server = TestServer::start();
    let mut kafka = server.kafka();
    assert_eq!(kafka.create_topic("present", 1, &[]), 0);
    // As in Kafka, a subscription may name topics that do not exist (yet): they get no
    // partitions, even when none of the subscribed topics exists.
    let absent = join_topics(&mut kafka, "only-later", "", &["later"]);
    assert_eq!(sync_topics(&mut kafka, "only-later", &absent), (0, vec![]));
    let joined = join_topics(&mut kafka, "kg", "", &["present", "later"]);
    assert_eq!(joined.error_code, 0);
    let present = ("present".to_owned(), vec![0]);
    assert_eq!(
        sync_topics(&mut kafka, "kg", &joined),
        (0, vec![present.clone()])
    );

    // Created: both groups are asked to rejoin (no member is leader, so no client would
    // notice by itself) and get its partitions.
    assert_eq!(kafka.create_topic("later", 2, &[]), 0);
    let later = ("later".to_owned(), vec![0, 1]);
    wait_for_rebalance(&mut kafka, "only-later", &absent);
    let absent = join_topics(
        &mut kafka,
        "only-later",
        absent.member_id.as_str(),
        &["later"],
    );
    assert_eq!(
        sync_topics(&mut kafka, "only-later", &absent),
        (0, vec![later.clone()])
    );
    wait_for_rebalance(&mut kafka, "kg", &joined);
    let member_id = joined.member_id.as_str();
    let joined = join_topics(&mut kafka, "kg", member_id, &["present", "later"]);
    assert_eq!(
        sync_topics(&mut kafka, "kg", &joined),
        (0, vec![later, present.clone()])
    );

    // Deleted: asked to rejoin again, and its partitions are no longer assigned.
    let mut native = Client::connect(server.handle.local_addr()).unwrap();
    native.delete_topic("later").unwrap();
    wait_for_rebalance(&mut kafka, "kg", &joined);
    let member_id = joined.member_id.as_str();
    let joined = join_topics(&mut kafka, "kg", member_id, &["present", "later"]);
    assert_eq!(sync_topics(&mut kafka, "kg", &joined), (0, vec![present]));
}

/// A new member of a group at `group_members_max` is refused with Kafka's
/// GROUP_MAX_SIZE_REACHED, which clients treat as final; before, it got the native Throttled,
/// answered as NOT_ENOUGH_REPLICAS, which a JoinGroup never expects.
#[test]
fn a_member_beyond_group_members_max_gets_group_max_size_reached() {
    let server = TestServer::start_with(|config| config.group_members_max = 1);
    let mut a = server.kafka();
    assert_eq!(a.create_topic("capped", 2, &[]), 0);
    let joined_a = join(&mut a, "capped-group", "", "capped");
    assert_eq!(joined_a.error_code, 0);
    let mut b = server.kafka();
    let refused = join(&mut b, "capped-group", "", "capped");
    assert_eq!(refused.error_code, GROUP_MAX_SIZE_REACHED);
    // The member already in the group is untouched.
    assert_eq!(sync(&mut a, "capped-group", &joined_a), (0, vec![0, 1]));
    assert_eq!(heartbeat(&mut a, "capped-group", &joined_a), 0);
    // A native member is refused with GroupFull at its first poll (which joins).
    let mut native = GroupConsumer::subscribe(
        server.handle.local_addr(),
        "capped-group",
        "capped",
        GroupConsumerConfig::default(),
    )
    .unwrap();
    let Err(error) = native.poll(Duration::from_secs(5)) else {
        panic!("a member joined a full group");
    };
    assert_eq!(error.code(), Some(ErrorCode::GroupFull), "{error}");
}

#[test]
fn a_pattern_subscription_that_matches_nothing_yet_joins() {
    let server = TestServer::start();
    let mut kafka = server.kafka();
    // A consumer subscribed to a pattern no topic matches yet joins with no topics (the Java
    // consumer does so, and raises "Unexpected error in join group response" on an error
    // the protocol does not expect); it is a member with nothing assigned, as in Kafka.
    let joined = join_topics(&mut kafka, "pattern", "", &[]);
    assert_eq!(joined.error_code, 0);
    assert!(joined.generation_id > 0);
    assert_eq!(sync_topics(&mut kafka, "pattern", &joined), (0, vec![]));
    assert_eq!(heartbeat(&mut kafka, "pattern", &joined), 0);
}

#[test]
fn committed_offsets_are_shared_with_the_native_protocol() {
    let server = TestServer::start();
    let mut kafka = server.kafka();
    assert_eq!(kafka.create_topic("shared", 2, &[]), 0);
    let joined = join(&mut kafka, "both", "", "shared");
    assert_eq!(sync(&mut kafka, "both", &joined).0, 0);
    assert_eq!(
        commit(&mut kafka, "both", &joined, "shared", &[(0, 11), (1, 22)]),
        [0, 0]
    );

    // The native protocol reads what the Kafka member committed.
    let mut native = Client::connect(server.handle.local_addr()).unwrap();
    let offsets = native
        .fetch_offsets(
            "both",
            &[TopicPartitions {
                topic: "shared",
                partitions: &[0, 1],
            }],
        )
        .unwrap();
    let pairs: Vec<(u32, i64)> = offsets
        .iter()
        .map(|o| (o.partition, o.committed_offset))
        .collect();
    assert_eq!(pairs, [(0, 11), (1, 22)]);

    // And a Kafka OffsetFetch (v8, the groups form) reads what a native client commits.
    let leave = LeaveGroupRequest::default()
        .with_group_id(group_id("both"))
        .with_member_id(joined.member_id.clone());
    assert_eq!(kafka.call(2, &leave).error_code, 0);
    let partitions = [PartitionOffset {
        partition: 1,
        offset: 40,
    }];
    let topics = [CommitTopic {
        topic: "shared",
        partitions: &partitions,
    }];
    let request = ringlog_net::message::offset_commit::Request {
        group: "both",
        member_id: "",
        generation: -1,
        topics: &topics,
        instance_id: "",
    };
    assert!(native
        .commit_offsets(&request)
        .unwrap()
        .iter()
        .all(|r| r.result.is_ok()));
    let fetch = OffsetFetchRequest::default().with_groups(vec![OffsetFetchRequestGroup::default()
        .with_group_id(group_id("both"))
        .with_topics(Some(vec![OffsetFetchRequestTopics::default()
            .with_name(topic_name("shared"))
            .with_partition_indexes(vec![0, 1])]))]);
    let response = kafka.call(8, &fetch);
    let group = &response.groups[0];
    assert_eq!(group.error_code, 0);
    let offsets: Vec<i64> = group.topics[0]
        .partitions
        .iter()
        .map(|p| p.committed_offset)
        .collect();
    assert_eq!(offsets, [11, 40]);
}

#[test]
fn a_member_with_a_very_long_poll_interval_joins() {
    let server = TestServer::start();
    let mut kafka = server.kafka();
    assert_eq!(kafka.create_topic("slowpoll", 2, &[]), 0);
    // A Java consumer sends max.poll.interval.ms as its rebalance timeout; Kafka bounds only
    // the session timeout, so Integer.MAX_VALUE (set by applications that process for
    // hours) joins there.
    let request = JoinGroupRequest::default()
        .with_group_id(group_id("slowpoll"))
        .with_session_timeout_ms(45_000)
        .with_rebalance_timeout_ms(i32::MAX)
        .with_protocol_type(StrBytes::from_static_str("consumer"))
        .with_protocols(vec![JoinGroupRequestProtocol::default()
            .with_name(StrBytes::from_static_str("range"))
            .with_metadata(subscription(&["slowpoll"]))]);
    let joined: JoinGroupResponse = kafka.call(9, &request);
    assert_eq!(joined.error_code, 0, "{joined:?}");
    assert_eq!(sync(&mut kafka, "slowpoll", &joined), (0, vec![0, 1]));
}

#[test]
fn group_errors_clients_recover_from() {
    let server = TestServer::start();
    let mut kafka = server.kafka();
    assert_eq!(kafka.create_topic("errs", 1, &[]), 0);
    // A member the coordinator does not know (for example after a restart): join again.
    let stranger = HeartbeatRequest::default()
        .with_group_id(group_id("nobody"))
        .with_generation_id(3)
        .with_member_id(StrBytes::from_static_str("ghost"));
    assert_eq!(kafka.call(4, &stranger).error_code, UNKNOWN_MEMBER_ID);
    // A group with nothing committed reads -1, not an error.
    assert_eq!(
        committed_v7(&mut kafka, "fresh", "errs", &[0]),
        [(0, -1, 0)]
    );
    // Only the consumer protocol type is served.
    let connect = JoinGroupRequest::default()
        .with_group_id(group_id("g"))
        .with_session_timeout_ms(10_000)
        .with_rebalance_timeout_ms(10_000)
        .with_protocol_type(StrBytes::from_static_str("connect"))
        .with_protocols(vec![JoinGroupRequestProtocol::default()
            .with_name(StrBytes::from_static_str("default"))
            .with_metadata(Bytes::new())]);
    assert_eq!(
        kafka.call(9, &connect).error_code,
        INCONSISTENT_GROUP_PROTOCOL
    );
    // A session timeout out of the coordinator's bounds: Kafka's own error, which its
    // clients explain, rather than a bare INVALID_REQUEST.
    for session_timeout_ms in [0, 99, 3_600_001] {
        let request = JoinGroupRequest::default()
            .with_group_id(group_id("g"))
            .with_session_timeout_ms(session_timeout_ms)
            .with_rebalance_timeout_ms(10_000)
            .with_protocol_type(StrBytes::from_static_str("consumer"))
            .with_protocols(vec![JoinGroupRequestProtocol::default()
                .with_name(StrBytes::from_static_str("range"))
                .with_metadata(subscription(&["errs"]))]);
        let refused: JoinGroupResponse = kafka.call(9, &request);
        assert_eq!(
            refused.error_code, INVALID_SESSION_TIMEOUT,
            "{session_timeout_ms}"
        );
    }
    // A SyncGroup from an old generation is ILLEGAL_GENERATION (the client rejoins).
    let joined = join(&mut kafka, "g", "", "errs");
    let stale = joined.clone().with_generation_id(joined.generation_id - 1);
    assert_eq!(sync(&mut kafka, "g", &stale).0, ILLEGAL_GENERATION);
}

#[test]
fn every_advertised_group_version_answers() {
    let server = TestServer::start();
    let mut kafka = server.kafka();
    assert_eq!(kafka.create_topic("gv", 1, &[]), 0);
    for version in 0..=4 {
        let request = if version >= 4 {
            FindCoordinatorRequest::default()
                .with_coordinator_keys(vec![StrBytes::from_static_str("g")])
        } else {
            FindCoordinatorRequest::default().with_key(StrBytes::from_static_str("g"))
        };
        let response = kafka.call(version, &request);
        let code = response
            .coordinators
            .first()
            .map_or(response.error_code, |c| c.error_code);
        assert_eq!(code, 0, "FindCoordinator v{version}");
    }
    for version in 0..=9 {
        let group = format!("gv-{version}");
        let protocol = JoinGroupRequestProtocol::default()
            .with_name(StrBytes::from_static_str("range"))
            .with_metadata(subscription(&["gv"]));
        let mut request = JoinGroupRequest::default()
            .with_group_id(group_id(&group))
            .with_session_timeout_ms(10_000)
            .with_protocol_type(StrBytes::from_static_str("consumer"))
            .with_protocols(vec![protocol]);
        if version >= 1 {
            request = request.with_rebalance_timeout_ms(10_000);
        }
        let joined = kafka.call(version, &request);
        assert_eq!(joined.error_code, 0, "JoinGroup v{version}");
        let sync_version = version.min(5);
        let mut sync = SyncGroupRequest::default()
            .with_group_id(group_id(&group))
            .with_generation_id(joined.generation_id)
            .with_member_id(joined.member_id.clone());
        if sync_version >= 5 {
            sync = sync
                .with_protocol_type(Some(StrBytes::from_static_str("consumer")))
                .with_protocol_name(Some(StrBytes::from_static_str("range")));
        }
        let synced = kafka.call(sync_version, &sync);
        assert_eq!(synced.error_code, 0, "SyncGroup v{sync_version}");
        let heartbeat_version = version.min(4);
        let beat = HeartbeatRequest::default()
            .with_group_id(group_id(&group))
            .with_generation_id(joined.generation_id)
            .with_member_id(joined.member_id.clone());
        assert_eq!(
            kafka.call(heartbeat_version, &beat).error_code,
            0,
            "Heartbeat v{heartbeat_version}"
        );
        let commit_version = version.clamp(2, 8);
        let commit = OffsetCommitRequest::default()
            .with_group_id(group_id(&group))
            .with_generation_id_or_member_epoch(joined.generation_id)
            .with_member_id(joined.member_id.clone())
            .with_topics(vec![OffsetCommitRequestTopic::default()
                .with_name(topic_name("gv"))
                .with_partitions(vec![OffsetCommitRequestPartition::default()
                    .with_partition_index(0)
                    .with_committed_offset(i64::from(version))])]);
        let committed = kafka.call(commit_version, &commit);
        assert_eq!(
            committed.topics[0].partitions[0].error_code, 0,
            "OffsetCommit v{commit_version}"
        );
        let fetch_version = version.clamp(1, 8);
        let offset = if fetch_version >= 8 {
            let fetch =
                OffsetFetchRequest::default().with_groups(vec![OffsetFetchRequestGroup::default()
                    .with_group_id(group_id(&group))
                    .with_topics(Some(vec![OffsetFetchRequestTopics::default()
                        .with_name(topic_name("gv"))
                        .with_partition_indexes(vec![0])]))]);
            kafka.call(fetch_version, &fetch).groups[0].topics[0].partitions[0].committed_offset
        } else {
            let fetch = OffsetFetchRequest::default()
                .with_group_id(group_id(&group))
                .with_topics(Some(vec![OffsetFetchRequestTopic::default()
                    .with_name(topic_name("gv"))
                    .with_partition_indexes(vec![0])]));
            kafka.call(fetch_version, &fetch).topics[0].partitions[0].committed_offset
        };
        assert_eq!(offset, i64::from(version), "OffsetFetch v{fetch_version}");
        let leave_version = version.min(5);
        let leave = if leave_version >= 3 {
            LeaveGroupRequest::default()
                .with_group_id(group_id(&group))
                .with_members(vec![
                    MemberIdentity::default().with_member_id(joined.member_id.clone())
                ])
        } else {
            LeaveGroupRequest::default()
                .with_group_id(group_id(&group))
                .with_member_id(joined.member_id.clone())
        };
        let left = kafka.call(leave_version, &leave);
        let code = left
            .members
            .first()
            .map_or(left.error_code, |m| m.error_code);
        assert_eq!(code, 0, "LeaveGroup v{leave_version}");
    }
}

/// LeaveGroup v5 for one member.
fn leave(kafka: &mut Kafka, group: &str, member_id: &StrBytes) {
    let request = LeaveGroupRequest::default()
        .with_group_id(group_id(group))
        .with_members(vec![
            MemberIdentity::default().with_member_id(member_id.clone())
        ]);
    assert_eq!(kafka.call(5, &request).error_code, 0);
}

/// ListGroups at `version` with filters: the groups' (name, protocol type, state, type).
fn listed(
    kafka: &mut Kafka,
    version: i16,
    states: &[&'static str],
    types: &[&'static str],
) -> Vec<(String, String, String, String)> {
    let mut request = ListGroupsRequest::default();
    if version >= 4 {
        request = request.with_states_filter(
            states
                .iter()
                .map(|s| StrBytes::from_static_str(s))
                .collect(),
        );
    }
    if version >= 5 {
        request =
            request.with_types_filter(types.iter().map(|s| StrBytes::from_static_str(s)).collect());
    }
    let response = kafka.call(version, &request);
    assert_eq!(response.error_code, 0, "ListGroups v{version}");
    response
        .groups
        .iter()
        .map(|g| {
            (
                g.group_id.0.to_string(),
                g.protocol_type.to_string(),
                g.group_state.to_string(),
                g.group_type.to_string(),
            )
        })
        .collect()
}

#[test]
fn groups_are_listed_described_and_deleted_through_the_admin_apis() {
    let server = TestServer::start();
    let mut kafka = server.kafka();
    assert_eq!(kafka.create_topic("adm", 2, &[]), 0);
    let joined = join(&mut kafka, "admin-g", "", "adm");
    assert_eq!(joined.error_code, 0);
    let (code, partitions) = sync(&mut kafka, "admin-g", &joined);
    assert_eq!((code, partitions), (0, vec![0, 1]));
    assert_eq!(
        commit(&mut kafka, "admin-g", &joined, "adm", &[(0, 5)]),
        [0]
    );

    for version in 0..=5 {
        let all = listed(&mut kafka, version, &[], &[]);
        let entry = all.iter().find(|g| g.0 == "admin-g").expect("listed");
        assert_eq!(entry.1, "consumer", "ListGroups v{version}");
        if version >= 4 {
            assert_eq!(entry.2, "Stable");
            assert!(listed(&mut kafka, version, &["stable"], &[])
                .iter()
                .any(|g| g.0 == "admin-g"));
            assert!(listed(&mut kafka, version, &["Empty"], &[]).is_empty());
        }
        if version >= 5 {
            assert_eq!(entry.3, "classic");
            assert!(listed(&mut kafka, version, &[], &["share"]).is_empty());
        }
    }
    for version in 0..=6 {
        let request = DescribeGroupsRequest::default()
            .with_groups(vec![group_id("admin-g"), group_id("nobody")]);
        let response = kafka.call(version, &request);
        let group = &response.groups[0];
        assert_eq!(group.error_code, 0, "DescribeGroups v{version}");
        assert_eq!(group.group_state.as_str(), "Stable");
        assert_eq!(group.protocol_type.as_str(), "consumer");
        // The assignor, as Kafka's tools show it (ASSIGNMENT-STRATEGY).
        assert_eq!(
            Some(group.protocol_data.as_str()),
            joined.protocol_name.as_deref(),
            "DescribeGroups v{version}"
        );
        assert_eq!(group.protocol_data.as_str(), "range");
        assert_eq!(group.members.len(), 1);
        assert_eq!(group.members[0].member_id, joined.member_id);
        let mut assignment = group.members[0].member_assignment.clone();
        let assignment_version = assignment.get_i16();
        let assignment =
            ConsumerProtocolAssignment::decode(&mut assignment, assignment_version).unwrap();
        assert_eq!(assignment.assigned_partitions[0].partitions, vec![0, 1]);
        let unknown = &response.groups[1];
        if version >= 6 {
            assert_eq!(unknown.error_code, GROUP_ID_NOT_FOUND);
        } else {
            assert_eq!(
                (unknown.error_code, unknown.group_state.as_str()),
                (0, "Dead")
            );
        }
    }

    let delete = |kafka: &mut Kafka, version: i16, group: &str| {
        let request = DeleteGroupsRequest::default().with_groups_names(vec![group_id(group)]);
        let response = kafka.call(version, &request);
        assert_eq!(response.results[0].group_id, group_id(group));
        response.results[0].error_code
    };
    assert_eq!(delete(&mut kafka, 0, "admin-g"), NON_EMPTY_GROUP);
    leave(&mut kafka, "admin-g", &joined.member_id);
    assert_eq!(delete(&mut kafka, 0, "admin-g"), 0);
    assert_eq!(delete(&mut kafka, 0, "admin-g"), GROUP_ID_NOT_FOUND);
    assert_eq!(
        committed_v7(&mut kafka, "admin-g", "adm", &[0]),
        [(0, -1, 0)]
    );
    for version in 1..=2 {
        let group = format!("admin-v{version}");
        let joined = join(&mut kafka, &group, "", "adm");
        leave(&mut kafka, &group, &joined.member_id);
        assert_eq!(
            delete(&mut kafka, version, &group),
            0,
            "DeleteGroups v{version}"
        );
    }
    assert!(listed(&mut kafka, 5, &[], &[]).is_empty());
}

/// A commit naming tens of thousands of partitions is answered partition by partition (the
/// answer was once built with a scan per partition: seconds of shard time).
#[test]
fn a_commit_of_many_partitions_is_answered_for_each() {
    let server = TestServer::start();
    let mut kafka = server.kafka();
    assert_eq!(kafka.create_topic("few", 2, &[]), 0);
    // Outside any group (generation -1): two real partitions, 40,000 that cannot exist.
    let mut offsets: Vec<(i32, i64)> = vec![(0, 5), (1, 7)];
    offsets.extend((1..=40_000).map(|n| (-n, 1)));
    let outsider = JoinGroupResponse::default()
        .with_generation_id(-1)
        .with_member_id(StrBytes::from_static_str(""));
    let codes = commit(&mut kafka, "many", &outsider, "few", &offsets);
    assert_eq!(codes.len(), offsets.len());
    assert_eq!(&codes[..2], &[0, 0]);
    assert!(
        codes[2..].iter().all(|&code| code == 3),
        "UNKNOWN_TOPIC_OR_PARTITION"
    );
    let mut client = Client::connect(server.handle.local_addr()).unwrap();
    let mut committed: Vec<(u32, i64)> = client
        .fetch_offsets("many", &[])
        .unwrap()
        .into_iter()
        .map(|o| (o.partition, o.committed_offset))
        .collect();
    committed.sort_unstable();
    assert_eq!(committed, [(0, 5), (1, 7)]);
}

const OFFSET_METADATA_TOO_LARGE: i16 = 12;
/// Kafka's default `offset.metadata.max.bytes`.
const METADATA_BYTES_MAX: usize = 4096;

/// OffsetCommit v8 outside any group of `(partition, offset, metadata)`: the error codes.
fn commit_with_metadata(
    kafka: &mut Kafka,
    group: &str,
    topic: &str,
    partitions: &[(i32, i64, Option<&str>)],
) -> Vec<i16> {
    commit_as(kafka, group, (-1, ""), topic, partitions)
}

/// OffsetFetch of partitions 0 and 1 of `topic`, in the groups form (v8) and the one-group
/// form (v7), which must agree: `(offset, metadata)` of each.
fn committed_with_metadata(
    kafka: &mut Kafka,
    group: &str,
    topic: &str,
) -> Vec<(i64, Option<String>)> {
    let fetch = OffsetFetchRequest::default().with_groups(vec![OffsetFetchRequestGroup::default()
        .with_group_id(group_id(group))
        .with_topics(Some(vec![OffsetFetchRequestTopics::default()
            .with_name(topic_name(topic))
            .with_partition_indexes(vec![0, 1])]))]);
    let response = kafka.call(8, &fetch);
    assert_eq!(response.groups[0].error_code, 0);
    let v8: Vec<(i64, Option<String>)> = response.groups[0].topics[0]
        .partitions
        .iter()
        .map(|p| {
            assert_eq!(p.error_code, 0);
            (
                p.committed_offset,
                p.metadata.as_ref().map(|m| m.to_string()),
            )
        })
        .collect();
    let fetch = OffsetFetchRequest::default()
        .with_group_id(group_id(group))
        .with_topics(Some(vec![OffsetFetchRequestTopic::default()
            .with_name(topic_name(topic))
            .with_partition_indexes(vec![0, 1])]));
    let response = kafka.call(7, &fetch);
    assert_eq!(response.error_code, 0);
    let v7: Vec<(i64, Option<String>)> = response.topics[0]
        .partitions
        .iter()
        .map(|p| {
            (
                p.committed_offset,
                p.metadata.as_ref().map(|m| m.to_string()),
            )
        })
        .collect();
    assert_eq!(v7, v8, "OffsetFetch v7 and v8 agree");
    v8
}

fn kept(offset: i64, metadata: &str) -> (i64, Option<String>) {
    (offset, Some(metadata.to_string()))
}

/// Kafka clients (Kafka Streams among them) keep per-partition state in the metadata of a
/// commit: it comes back from OffsetFetch, after a restart too, and is bounded.
#[test]
fn commit_metadata_is_stored_bounded_and_kept_across_a_restart() {
    let server = TestServer::start();
    let mut kafka = server.kafka();
    assert_eq!(kafka.create_topic("meta", 2, &[]), 0);
    let codes = commit_with_metadata(
        &mut kafka,
        "g",
        "meta",
        &[(0, 5, Some("abc")), (1, 6, None)],
    );
    assert_eq!(codes, [0, 0]);
    let expected = [kept(5, "abc"), kept(6, "")];
    assert_eq!(committed_with_metadata(&mut kafka, "g", "meta"), expected);

    let server = server.restart();
    let mut kafka = server.kafka();
    assert_eq!(committed_with_metadata(&mut kafka, "g", "meta"), expected);

    // Over the bound: that partition alone is refused, and keeps its offset and metadata.
    let over = "x".repeat(METADATA_BYTES_MAX + 1);
    let full = "y".repeat(METADATA_BYTES_MAX);
    let codes = commit_with_metadata(
        &mut kafka,
        "g",
        "meta",
        &[(0, 9, Some(&over)), (1, 10, Some(&full))],
    );
    assert_eq!(codes, [OFFSET_METADATA_TOO_LARGE, 0]);
    assert_eq!(
        committed_with_metadata(&mut kafka, "g", "meta"),
        [kept(5, "abc"), kept(10, &full)]
    );

    // A commit without metadata (empty or null) clears the older one, durably.
    let codes = commit_with_metadata(&mut kafka, "g", "meta", &[(0, 11, None), (1, 12, Some(""))]);
    assert_eq!(codes, [0, 0]);
    let cleared = [kept(11, ""), kept(12, "")];
    assert_eq!(committed_with_metadata(&mut kafka, "g", "meta"), cleared);
    let server = server.restart();
    let mut kafka = server.kafka();
    assert_eq!(committed_with_metadata(&mut kafka, "g", "meta"), cleared);
}

/// A reset or a deletion of the group drops the metadata with the offsets.
#[test]
fn a_reset_or_a_deleted_group_drops_commit_metadata() {
    let server = TestServer::start();
    let mut kafka = server.kafka();
    assert_eq!(kafka.create_topic("meta", 2, &[]), 0);
    let abc = [(0, 0, Some("abc")), (1, 0, Some("def"))];
    assert_eq!(commit_with_metadata(&mut kafka, "g", "meta", &abc), [0, 0]);
    assert_eq!(
        committed_with_metadata(&mut kafka, "g", "meta"),
        [kept(0, "abc"), kept(0, "def")]
    );

    let mut native = Client::connect(server.handle.local_addr()).unwrap();
    let reset = native
        .reset_group_offsets("g", "meta", &[0], OffsetSpec::Earliest)
        .unwrap();
    assert!(reset.iter().all(|r| r.result.is_ok()));
    assert_eq!(
        committed_with_metadata(&mut kafka, "g", "meta"),
        [kept(0, ""), kept(0, "def")]
    );

    native.delete_group("g").unwrap();
    // Recreated by a commit of the other partition: partition 1 has nothing committed.
    assert_eq!(
        commit_with_metadata(&mut kafka, "g", "meta", &[(0, 0, None)]),
        [0]
    );
    let server = server.restart();
    let mut kafka = server.kafka();
    assert_eq!(
        committed_with_metadata(&mut kafka, "g", "meta"),
        [kept(0, ""), kept(-1, "")]
    );
}

/// DescribeGroups before v6 has no error_message field; an error answer for a group id that
/// ringlog refuses (here one longer than its file-name bound, which Kafka accepts) must still
/// be a DescribeGroups response, not a closed connection (the AdminClient then retries the
/// disconnect until it times out).
#[test]
fn describe_groups_before_v6_answers_an_error_without_closing_the_connection() {
    let server = TestServer::start();
    let long_name = "g".repeat(250);
    let mut closed = Vec::new();
    for version in 0..=6i16 {
        let mut kafka = server.kafka();
        let request = DescribeGroupsRequest::default().with_groups(vec![group_id(&long_name)]);
        kafka.send(version, &request);
        if kafka.read_frame().is_none() {
            closed.push(version);
        }
    }
    assert!(
        closed.is_empty(),
        "DescribeGroups of a 250-byte group id closed the connection at versions {closed:?}"
    );
}

/// A group the coordinating shard cannot take (its share of groups_max is used up) is
/// refused with ringlog's Throttled, which produce answers as NOT_ENOUGH_REPLICAS (19): a
/// code the Java consumer's JoinGroup and OffsetCommit handlers treat as an "Unexpected
/// error" (fatal). Kafka's coordinator answers such refusals with COORDINATOR_NOT_AVAILABLE
/// (15), which clients retry.
#[test]
fn group_apis_never_answer_produce_only_error_codes() {
    const NOT_ENOUGH_REPLICAS: i16 = 19;
    let server = TestServer::start_with(|config| config.groups_max = 2);
    let mut kafka = server.kafka();
    assert_eq!(kafka.create_topic("full", 1, &[]), 0);
    let mut join_codes = Vec::new();
    for i in 0..3 {
        join_codes.push(join(&mut kafka, &format!("full-{i}"), "", "full").error_code);
    }
    let mut commit_codes = Vec::new();
    for i in 0..3 {
        commit_codes.extend(commit_as(
            &mut kafka,
            &format!("manual-{i}"),
            (-1, ""),
            "full",
            &[(0, 1, None)],
        ));
    }
    assert!(
        !join_codes.contains(&NOT_ENOUGH_REPLICAS) && !commit_codes.contains(&NOT_ENOUGH_REPLICAS),
        "JoinGroup codes {join_codes:?}, OffsetCommit codes {commit_codes:?}"
    );
    const COORDINATOR_NOT_AVAILABLE: i16 = 15;
    assert_eq!(join_codes[2], COORDINATOR_NOT_AVAILABLE, "{join_codes:?}");
    assert!(
        commit_codes.contains(&COORDINATOR_NOT_AVAILABLE),
        "{commit_codes:?}"
    );
}

#[test]
fn a_group_id_the_server_cannot_keep_answers_invalid_group_id() {
    const INVALID_GROUP_ID: i16 = 24;
    let server = TestServer::start();
    let mut kafka = server.kafka();
    assert_eq!(kafka.create_topic("ids", 1, &[]), 0);
    // Kafka takes any non-empty group id; ringlog refuses these (control characters, a file
    // name past 245 bytes), and Kafka's clients explain INVALID_GROUP_ID where they would
    // report INVALID_REQUEST as an unexpected server error.
    for group in ["line\nbreak", &"%".repeat(82)] {
        let joined = join(&mut kafka, group, "", "ids");
        assert_eq!(joined.error_code, INVALID_GROUP_ID, "JoinGroup {group:?}");
        assert_eq!(
            heartbeat(&mut kafka, group, &joined),
            INVALID_GROUP_ID,
            "Heartbeat {group:?}"
        );
        assert_eq!(
            commit_as(&mut kafka, group, (-1, ""), "ids", &[(0, 1, None)]),
            [INVALID_GROUP_ID],
            "OffsetCommit {group:?}"
        );
        let deleted = kafka.call(
            2,
            &DeleteGroupsRequest::default().with_groups_names(vec![group_id(group)]),
        );
        assert_eq!(
            deleted.results[0].error_code, INVALID_GROUP_ID,
            "DeleteGroups {group:?}"
        );
    }
}

/// OffsetFetch of a partition the topic does not have reads -1 with no error, as from Kafka
/// (its coordinator answers every partition without a commit so), whether or not the group
/// exists: the Java consumer throws on UNKNOWN_TOPIC_OR_PARTITION here.
#[test]
fn offset_fetch_of_a_partition_the_topic_lacks_reads_nothing_committed() {
    let server = TestServer::start();
    let mut kafka = server.kafka();
    assert_eq!(kafka.create_topic("two", 2, &[]), 0);
    // No such group yet: -1 and no error for every partition.
    assert_eq!(
        committed_v7(&mut kafka, "lacking", "two", &[0, 5]),
        [(0, -1, 0), (5, -1, 0)]
    );
    // Once the group has a commit: the same answer for the partition it lacks.
    assert_eq!(
        commit_with_metadata(&mut kafka, "lacking", "two", &[(0, 3, None)]),
        [0]
    );
    assert_eq!(
        committed_v7(&mut kafka, "lacking", "two", &[0, 5]),
        [(0, 3, 0), (5, -1, 0)]
    );
    let fetch = OffsetFetchRequest::default().with_groups(vec![OffsetFetchRequestGroup::default()
        .with_group_id(group_id("lacking"))
        .with_topics(Some(vec![OffsetFetchRequestTopics::default()
            .with_name(topic_name("two"))
            .with_partition_indexes(vec![0, 5])]))]);
    let response = kafka.call(8, &fetch);
    assert_eq!(response.groups[0].error_code, 0);
    let v8: Vec<(i32, i64, i16)> = response.groups[0].topics[0]
        .partitions
        .iter()
        .map(|p| (p.partition_index, p.committed_offset, p.error_code))
        .collect();
    assert_eq!(v8, [(0, 3, 0), (5, -1, 0)]);
}

/// OffsetFetch v0 and v1 have no top-level error code: Kafka puts an error of the whole
/// group on every partition asked for (offset -1), so that the client sees it. Answering
/// with no partitions instead reads as "nothing committed" and the consumer starts from its
/// reset position without a word.
#[test]
fn offset_fetch_v1_reports_a_group_error_on_each_partition() {
    let server = TestServer::start();
    let mut kafka = server.kafka();
    assert_eq!(kafka.create_topic("v1errs", 2, &[]), 0);
    // A group this server refuses whatever the request (its name is too long to store).
    let refused = "\u{4e00}".repeat(200);
    let request = OffsetFetchRequest::default()
        .with_group_id(group_id(&refused))
        .with_topics(Some(vec![OffsetFetchRequestTopic::default()
            .with_name(topic_name("v1errs"))
            .with_partition_indexes(vec![0, 1])]));
    let v2 = kafka.call(2, &request);
    let code = v2.error_code;
    assert_ne!(code, 0, "the group is refused");
    let v1 = kafka.call(1, &request);
    let partitions: Vec<(String, i32, i64, i16)> = v1
        .topics
        .iter()
        .flat_map(|topic| {
            topic.partitions.iter().map(|p| {
                (
                    topic.name.0.to_string(),
                    p.partition_index,
                    p.committed_offset,
                    p.error_code,
                )
            })
        })
        .collect();
    assert_eq!(
        partitions,
        [
            ("v1errs".to_string(), 0, -1, code),
            ("v1errs".to_string(), 1, -1, code)
        ]
    );
}

/// JoinGroup v9 offering `protocols` (each with a subscription to `topic`), with a rebalance
/// timeout of `rebalance_timeout_ms`.
fn join_offering(
    kafka: &mut Kafka,
    group: &str,
    member_id: &str,
    topic: &str,
    protocols: &[&str],
    rebalance_timeout_ms: i32,
) -> JoinGroupResponse {
    let protocols = protocols
        .iter()
        .map(|name| {
            JoinGroupRequestProtocol::default()
                .with_name(StrBytes::from_string(name.to_string()))
                .with_metadata(subscription(&[topic]))
        })
        .collect();
    let request = JoinGroupRequest::default()
        .with_group_id(group_id(group))
        .with_session_timeout_ms(10_000)
        .with_rebalance_timeout_ms(rebalance_timeout_ms)
        .with_member_id(StrBytes::from_string(member_id.to_string()))
        .with_protocol_type(StrBytes::from_static_str("consumer"))
        .with_protocols(protocols);
    kafka.call(9, &request)
}

/// A joiner none of whose protocols every member offers is refused with
/// INCONSISTENT_GROUP_PROTOCOL at once, as by Kafka's classic coordinator, and the group goes
/// on undisturbed: accepted, it would start a rebalance whose members could not agree on an
/// assignor.
#[test]
fn a_joiner_sharing_no_protocol_with_the_members_is_inconsistent() {
    let server = TestServer::start();
    let mut a = server.kafka();
    assert_eq!(a.create_topic("protocols", 2, &[]), 0);
    // A short rebalance timeout: were B taken in, the rebalance it starts would drop A (which
    // does not rejoin) within a second, not hang the test.
    let joined_a = join_offering(&mut a, "pg", "", "protocols", &["range"], 1_000);
    assert_eq!(joined_a.error_code, 0);
    assert_eq!(sync(&mut a, "pg", &joined_a), (0, vec![0, 1]));

    let mut b = server.kafka();
    let refused = join_offering(&mut b, "pg", "", "protocols", &["roundrobin"], 1_000);
    assert_eq!(refused.error_code, INCONSISTENT_GROUP_PROTOCOL);
    assert_eq!(
        refused.member_id.as_str(),
        "",
        "a refused new member gets no id"
    );
    assert_eq!(refused.generation_id, -1);
    // No rebalance was started: A's generation is still the group's.
    assert_eq!(heartbeat(&mut a, "pg", &joined_a), 0);
    assert_eq!(commit(&mut a, "pg", &joined_a, "protocols", &[(0, 1)]), [0]);
    // The count includes the joiner's own protocols as the group holds them: a member alone
    // may not rejoin with protocols none of which it offered before (Kafka's rule too).
    let switched = join_offering(
        &mut a,
        "pg",
        joined_a.member_id.as_str(),
        "protocols",
        &["roundrobin"],
        1_000,
    );
    assert_eq!(switched.error_code, INCONSISTENT_GROUP_PROTOCOL);
    assert_eq!(switched.member_id, joined_a.member_id);
    assert_eq!(heartbeat(&mut a, "pg", &joined_a), 0);
}
/// OffsetCommit checks the member as Kafka's classic coordinator does: a member it does not
/// know is UNKNOWN_MEMBER_ID, whatever its generation; a known one of another generation is
/// ILLEGAL_GENERATION (the Java consumer then rejoins keeping its member id); a generation of a
/// group the coordinator does not know is ILLEGAL_GENERATION too.
#[test]
fn a_heartbeat_or_sync_from_another_generation_is_illegal_generation() {
    let server = TestServer::start();
    let mut kafka = server.kafka();
    assert_eq!(kafka.create_topic("beats", 2, &[]), 0);
    let joined = join(&mut kafka, "hb", "", "beats");
    assert_eq!(sync(&mut kafka, "hb", &joined), (0, vec![0, 1]));
    assert_eq!(heartbeat(&mut kafka, "hb", &joined), 0);
    for generation in [joined.generation_id - 1, joined.generation_id + 1] {
        let mut stale = joined.clone();
        stale.generation_id = generation;
        // Kafka's answer to both (the client then forgets its generation and rejoins); the
        // native protocol answers RebalanceInProgress, as PROTOCOL.md says.
        assert_eq!(heartbeat(&mut kafka, "hb", &stale), ILLEGAL_GENERATION);
        assert_eq!(sync(&mut kafka, "hb", &stale).0, ILLEGAL_GENERATION);
    }
    // Unknown member first, whatever its generation.
    let mut ghost = joined.clone();
    ghost.member_id = StrBytes::from_static_str("ghost");
    ghost.generation_id -= 1;
    assert_eq!(heartbeat(&mut kafka, "hb", &ghost), UNKNOWN_MEMBER_ID);
    assert_eq!(sync(&mut kafka, "hb", &ghost).0, UNKNOWN_MEMBER_ID);
    // The member itself is unharmed.
    assert_eq!(heartbeat(&mut kafka, "hb", &joined), 0);
}

#[test]
fn a_commit_from_another_generation_is_illegal_generation() {
    let server = TestServer::start();
    let mut kafka = server.kafka();
    assert_eq!(kafka.create_topic("gens", 1, &[]), 0);
    let joined = join(&mut kafka, "gg", "", "gens");
    assert_eq!(sync(&mut kafka, "gg", &joined), (0, vec![0]));
    let member = joined.member_id.as_str();
    let generation = joined.generation_id;
    let one = [(0, 1, None)];
    assert_eq!(
        commit_as(&mut kafka, "gg", (generation - 1, member), "gens", &one),
        [ILLEGAL_GENERATION]
    );
    assert_eq!(
        commit_as(&mut kafka, "gg", (generation + 1, member), "gens", &one),
        [ILLEGAL_GENERATION]
    );
    // Unknown member first, as in Kafka: its generation is not looked at.
    assert_eq!(
        commit_as(&mut kafka, "gg", (generation - 1, "ghost"), "gens", &one),
        [UNKNOWN_MEMBER_ID]
    );
    assert_eq!(
        commit_as(&mut kafka, "nogroup", (3, "ghost"), "gens", &one),
        [ILLEGAL_GENERATION]
    );
    // The current generation commits.
    assert_eq!(
        commit_as(&mut kafka, "gg", (generation, member), "gens", &one),
        [0]
    );
    // Generation -1 is a commit from outside the group: a member id does not make it one of
    // the members' (UNKNOWN_MEMBER_ID, or ILLEGAL_GENERATION for a member's own id) while the
    // group has members, and is accepted once it has none, as Kafka does.
    assert_eq!(
        commit_as(&mut kafka, "gg", (-1, "outsider"), "gens", &one),
        [UNKNOWN_MEMBER_ID]
    );
    assert_eq!(
        commit_as(&mut kafka, "gg", (-1, member), "gens", &one),
        [ILLEGAL_GENERATION]
    );
    let two = [(0, 2, None)];
    assert_eq!(
        commit_as(&mut kafka, "solo", (-1, "outsider"), "gens", &two),
        [0]
    );
    assert_eq!(committed_v7(&mut kafka, "solo", "gens", &[0]), [(0, 2, 0)]);
}

/// OffsetDelete (kafka-consumer-groups --delete-offsets) forgets a group's offsets of a topic
/// no member subscribes to, partition by partition, as from Kafka.
#[test]
fn offset_delete_forgets_the_offsets_of_a_topic_no_member_reads() {
    use kafka_protocol::messages::offset_delete_request::{
        OffsetDeleteRequestPartition, OffsetDeleteRequestTopic,
    };
    use kafka_protocol::messages::OffsetDeleteRequest;
    const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
    const GROUP_SUBSCRIBED_TO_TOPIC: i16 = 86;

    let delete = |kafka: &mut Kafka, group: &str, topic: &str, partitions: &[i32]| {
        let asked = partitions
            .iter()
            .map(|&p| OffsetDeleteRequestPartition::default().with_partition_index(p))
            .collect();
        let request = OffsetDeleteRequest::default()
            .with_group_id(group_id(group))
            .with_topics(vec![OffsetDeleteRequestTopic::default()
                .with_name(topic_name(topic))
                .with_partitions(asked)]);
        let response = kafka.call(0, &request);
        let codes: Vec<i16> = response
            .topics
            .first()
            .map(|t| t.partitions.iter().map(|p| p.error_code).collect())
            .unwrap_or_default();
        (response.error_code, codes)
    };
    let server = TestServer::start();
    let mut kafka = server.kafka();
    assert_eq!(kafka.create_topic("od", 2, &[]), 0);
    let two = [(0, 5, None), (1, 6, None)];
    assert_eq!(commit_as(&mut kafka, "odg", (-1, ""), "od", &two), [0, 0]);
    assert_eq!(
        delete(&mut kafka, "odg", "od", &[0, 7]),
        (0, vec![0, UNKNOWN_TOPIC_OR_PARTITION])
    );
    assert_eq!(
        committed_v7(&mut kafka, "odg", "od", &[0, 1]),
        [(0, -1, 0), (1, 6, 0)]
    );
    assert_eq!(delete(&mut kafka, "odg", "od", &[0]), (0, vec![0]), "again");
    assert_eq!(
        delete(&mut kafka, "no-such-group", "od", &[0]),
        (GROUP_ID_NOT_FOUND, vec![])
    );

    // A member reads the topic: its offsets stay.
    let joined = join(&mut kafka, "odg", "", "od");
    assert_eq!(sync(&mut kafka, "odg", &joined), (0, vec![0, 1]));
    assert_eq!(
        delete(&mut kafka, "odg", "od", &[1]),
        (0, vec![GROUP_SUBSCRIBED_TO_TOPIC])
    );
    assert_eq!(committed_v7(&mut kafka, "odg", "od", &[1]), [(1, 6, 0)]);
}

const FENCED_INSTANCE_ID: i16 = 82;

/// Heartbeat v4 of a static member.
fn heartbeat_static(
    kafka: &mut Kafka,
    group: &str,
    joined: &JoinGroupResponse,
    instance: &str,
) -> i16 {
    let request = HeartbeatRequest::default()
        .with_group_id(group_id(group))
        .with_generation_id(joined.generation_id)
        .with_member_id(joined.member_id.clone())
        .with_group_instance_id(Some(StrBytes::from_string(instance.to_string())));
    kafka.call(4, &request).error_code
}

/// A static member (KIP-345) whose process restarts joins again without its member id and
/// takes its old place: the same partitions in the same generation, no rebalance for the
/// others, and the member id it replaced fenced in every group api.
#[test]
fn a_restarted_static_member_keeps_its_partitions_and_fences_the_old_one() {
    let server = TestServer::start();
    let mut a = server.kafka();
    assert_eq!(a.create_topic("static", 4, &[]), 0);
    let first = join_static(&mut a, "sg", "", "instance-a", "static");
    assert_eq!(first.error_code, 0);
    let addr = server.kafka_addr();
    let joining = std::thread::spawn(move || {
        let mut b = Kafka::connect(addr);
        let joined = join_static(&mut b, "sg", "", "instance-b", "static");
        (b, joined)
    });
    wait_for_rebalance(&mut a, "sg", &first);
    let member_id = first.member_id.to_string();
    let joined_a = join_static(&mut a, "sg", &member_id, "instance-a", "static");
    let (mut b, joined_b) = joining.join().unwrap();
    assert_eq!(joined_b.error_code, 0);
    assert_eq!(joined_a.generation_id, joined_b.generation_id);
    let (code, partitions_a) = sync(&mut a, "sg", &joined_a);
    assert_eq!(code, 0);
    assert_eq!(partitions_a.len(), 2);
    assert_eq!(sync(&mut b, "sg", &joined_b).0, 0);

    // a's process restarts: a new connection, no member id, the same instance id.
    let mut restarted = server.kafka();
    let rejoined = join_static(&mut restarted, "sg", "", "instance-a", "static");
    assert_eq!(rejoined.error_code, 0);
    assert_ne!(rejoined.member_id, joined_a.member_id);
    assert_eq!(
        rejoined.generation_id, joined_a.generation_id,
        "no rebalance"
    );
    assert_eq!(
        sync(&mut restarted, "sg", &rejoined),
        (0, partitions_a.clone())
    );
    assert_eq!(heartbeat_static(&mut b, "sg", &joined_b, "instance-b"), 0);
    assert_eq!(
        heartbeat_static(&mut restarted, "sg", &rejoined, "instance-a"),
        0
    );

    // The old member, still running somewhere, is fenced: heartbeat, sync, commit, leave.
    assert_eq!(
        heartbeat_static(&mut a, "sg", &joined_a, "instance-a"),
        FENCED_INSTANCE_ID
    );
    let instance = Some(StrBytes::from_static_str("instance-a"));
    let sync_old = SyncGroupRequest::default()
        .with_group_id(group_id("sg"))
        .with_generation_id(joined_a.generation_id)
        .with_member_id(joined_a.member_id.clone())
        .with_group_instance_id(instance.clone())
        .with_protocol_type(joined_a.protocol_type.clone())
        .with_protocol_name(joined_a.protocol_name.clone());
    assert_eq!(a.call(5, &sync_old).error_code, FENCED_INSTANCE_ID);
    let commit_old = OffsetCommitRequest::default()
        .with_group_id(group_id("sg"))
        .with_generation_id_or_member_epoch(joined_a.generation_id)
        .with_member_id(joined_a.member_id.clone())
        .with_group_instance_id(instance.clone())
        .with_topics(vec![OffsetCommitRequestTopic::default()
            .with_name(topic_name("static"))
            .with_partitions(vec![OffsetCommitRequestPartition::default()
                .with_partition_index(partitions_a[0])
                .with_committed_offset(1)])]);
    let committed = a.call(8, &commit_old);
    assert_eq!(
        committed.topics[0].partitions[0].error_code,
        FENCED_INSTANCE_ID
    );
    let leave_old = LeaveGroupRequest::default()
        .with_group_id(group_id("sg"))
        .with_members(vec![MemberIdentity::default()
            .with_member_id(joined_a.member_id.clone())
            .with_group_instance_id(instance.clone())]);
    let left = a.call(5, &leave_old);
    assert_eq!(left.members[0].error_code, FENCED_INSTANCE_ID);
    assert_eq!(left.members[0].group_instance_id, instance);

    // DescribeGroups shows each member's instance id.
    let described = restarted.call(
        5,
        &DescribeGroupsRequest::default().with_groups(vec![group_id("sg")]),
    );
    let mut instances: Vec<(String, Option<String>)> = described.groups[0]
        .members
        .iter()
        .map(|m| {
            (
                m.member_id.to_string(),
                m.group_instance_id.as_ref().map(|i| i.to_string()),
            )
        })
        .collect();
    instances.sort();
    let mut expected = vec![
        (
            rejoined.member_id.to_string(),
            Some("instance-a".to_string()),
        ),
        (
            joined_b.member_id.to_string(),
            Some("instance-b".to_string()),
        ),
    ];
    expected.sort();
    assert_eq!(instances, expected);

    // An admin removes b by its instance alone (removeMembersFromConsumerGroup): the group
    // rebalances, and the restarted a gets every partition.
    let remove_b = LeaveGroupRequest::default()
        .with_group_id(group_id("sg"))
        .with_members(vec![MemberIdentity::default()
            .with_member_id(StrBytes::from_static_str(""))
            .with_group_instance_id(Some(StrBytes::from_static_str(
                "instance-b",
            )))]);
    let removed = restarted.call(5, &remove_b);
    assert_eq!(removed.members[0].error_code, 0);
    assert_eq!(
        heartbeat_static(&mut restarted, "sg", &rejoined, "instance-a"),
        REBALANCE_IN_PROGRESS
    );
    let member_id = rejoined.member_id.to_string();
    let last = join_static(&mut restarted, "sg", &member_id, "instance-a", "static");
    assert_eq!(sync(&mut restarted, "sg", &last), (0, vec![0, 1, 2, 3]));
}

const FENCED_MEMBER_EPOCH: i16 = 110;

/// ConsumerGroupHeartbeat v1 of member `member` at `epoch`, subscribing to `topics` when
/// given, owning `owned` partitions of topic id `topic_id` when given.
fn consumer_beat(
    kafka: &mut Kafka,
    member: &str,
    epoch: i32,
    topics: Option<&[&str]>,
    owned: Option<(uuid::Uuid, &[i32])>,
) -> kafka_protocol::messages::ConsumerGroupHeartbeatResponse {
    use kafka_protocol::messages::consumer_group_heartbeat_request::TopicPartitions;
    use kafka_protocol::messages::ConsumerGroupHeartbeatRequest;
    let request = ConsumerGroupHeartbeatRequest::default()
        .with_group_id(group_id("kip848"))
        .with_member_id(StrBytes::from_string(member.to_string()))
        .with_member_epoch(epoch)
        .with_rebalance_timeout_ms(30_000)
        .with_subscribed_topic_names(topics.map(|t| t.iter().map(|t| topic_name(t)).collect()))
        .with_topic_partitions(owned.map(|(id, partitions)| {
            vec![TopicPartitions::default()
                .with_topic_id(id)
                .with_partitions(partitions.to_vec())]
        }));
    kafka.call(1, &request)
}

fn assigned_partitions(
    response: &kafka_protocol::messages::ConsumerGroupHeartbeatResponse,
) -> Option<Vec<i32>> {
    response.assignment.as_ref().map(|assignment| {
        let mut partitions: Vec<i32> = assignment
            .topic_partitions
            .iter()
            .flat_map(|t| t.partitions.clone())
            .collect();
        partitions.sort_unstable();
        partitions
    })
}

/// Kafka's consumer group protocol (KIP-848): a partition moves to a new member only once its
/// owner said it revoked it; commits carry member epochs; a classic member cannot join a group
/// whose members use it.
#[test]
fn consumer_protocol_members_hand_partitions_over_once_revoked() {
    let server = TestServer::start();
    let mut kafka = server.kafka();
    assert_eq!(kafka.create_topic("moving", 4, &[]), 0);
    let metadata = kafka.call(
        12,
        &kafka_protocol::messages::MetadataRequest::default().with_topics(None),
    );
    let id = metadata.topics[0].topic_id;
    let a = consumer_beat(&mut kafka, "a", 0, Some(&["moving"]), Some((id, &[])));
    assert_eq!((a.error_code, a.member_epoch), (0, 1));
    assert_eq!(assigned_partitions(&a), Some(vec![0, 1, 2, 3]));
    assert_eq!(a.assignment.unwrap().topic_partitions[0].topic_id, id);
    let b = consumer_beat(&mut kafka, "b", 0, Some(&["moving"]), Some((id, &[])));
    assert_eq!(assigned_partitions(&b), Some(vec![]));
    // a is told to revoke 2 and 3; b gets them only after a says it no longer owns them.
    let a = consumer_beat(&mut kafka, "a", 1, None, Some((id, &[0, 1, 2, 3])));
    assert_eq!(
        (a.member_epoch, assigned_partitions(&a)),
        (1, Some(vec![0, 1]))
    );
    let b = consumer_beat(&mut kafka, "b", 1, None, None);
    assert_eq!(assigned_partitions(&b), None, "2 and 3 are still a's");
    // a commits what it is giving up, with its epoch, and revokes.
    let commits = commit_as(&mut kafka, "kip848", (1, "a"), "moving", &[(3, 7, None)]);
    assert_eq!(commits, [0]);
    consumer_beat(&mut kafka, "a", 1, None, Some((id, &[0, 1])));
    let b = consumer_beat(&mut kafka, "b", 1, None, None);
    assert_eq!(
        (b.member_epoch, assigned_partitions(&b)),
        (2, Some(vec![2, 3]))
    );
    let refused = commit_as(&mut kafka, "kip848", (1, "a"), "moving", &[(3, 8, None)]);
    assert_eq!(refused, [ILLEGAL_GENERATION], "3 is b's now");
    assert_eq!(
        commit_as(&mut kafka, "kip848", (2, "b"), "moving", &[(3, 8, None)]),
        [0]
    );
    assert_eq!(
        consumer_beat(&mut kafka, "b", 9, None, None).error_code,
        FENCED_MEMBER_EPOCH
    );
    // OffsetCommit v9, the protocol's own: a stale epoch is STALE_MEMBER_EPOCH, an unknown
    // group GROUP_ID_NOT_FOUND.
    let stale = commit_at(&mut kafka, 9, "kip848", (7, "b"), "moving", &[(3, 9, None)]);
    assert_eq!(stale, [113], "STALE_MEMBER_EPOCH");
    let gone = commit_at(
        &mut kafka,
        9,
        "no-such",
        (3, "b"),
        "moving",
        &[(3, 9, None)],
    );
    assert_eq!(gone, [GROUP_ID_NOT_FOUND]);
    assert_eq!(
        commit_at(&mut kafka, 9, "kip848", (2, "b"), "moving", &[(3, 9, None)]),
        [0]
    );
    // A classic member is refused while the group uses the consumer protocol.
    let classic = join(&mut kafka, "kip848", "", "moving");
    assert_eq!(classic.error_code, INCONSISTENT_GROUP_PROTOCOL);
    // ListGroups gives the group Kafka's type for it.
    assert_eq!(
        listed(&mut kafka, 5, &[], &["consumer"]),
        [(
            "kip848".to_string(),
            "consumer".to_string(),
            "Stable".to_string(),
            "consumer".to_string()
        )]
    );
    // b leaves; a gets every partition back under a new epoch.
    assert_eq!(
        consumer_beat(&mut kafka, "b", -1, None, None).member_epoch,
        -1
    );
    let a = consumer_beat(&mut kafka, "a", 1, None, Some((id, &[0, 1])));
    assert_eq!(
        (a.member_epoch, assigned_partitions(&a)),
        (2, Some(vec![0, 1, 2, 3]))
    );
    assert_eq!(
        committed_v7(&mut kafka, "kip848", "moving", &[3]),
        [(3, 9, 0)]
    );
}

/// ConsumerGroupHeartbeat v0 (Kafka 3.7 to 3.9 clients): a member joins without an id and is
/// given one, with which it heartbeats on.
#[test]
fn a_version_0_consumer_protocol_member_is_given_its_id() {
    use kafka_protocol::messages::ConsumerGroupHeartbeatRequest;
    let server = TestServer::start();
    let mut kafka = server.kafka();
    assert_eq!(kafka.create_topic("given", 2, &[]), 0);
    let join = ConsumerGroupHeartbeatRequest::default()
        .with_group_id(group_id("v0"))
        .with_member_epoch(0)
        .with_rebalance_timeout_ms(30_000)
        .with_subscribed_topic_names(Some(vec![topic_name("given")]))
        .with_topic_partitions(Some(vec![]));
    let joined = kafka.call(0, &join);
    assert_eq!((joined.error_code, joined.member_epoch), (0, 1));
    let member_id = joined.member_id.clone().expect("a member id");
    assert!(!member_id.is_empty());
    assert_eq!(
        assigned_partitions(&joined),
        Some(vec![0, 1]),
        "the whole topic"
    );
    let again = ConsumerGroupHeartbeatRequest::default()
        .with_group_id(group_id("v0"))
        .with_member_id(member_id)
        .with_member_epoch(1)
        .with_rebalance_timeout_ms(-1);
    let beat = kafka.call(0, &again);
    assert_eq!((beat.error_code, beat.member_epoch), (0, 1));
}
