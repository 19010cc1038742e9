//! Kafka's share group apis (KIP-932) on the Kafka listener, spoken with the `kafka-protocol`
//! crate: ShareGroupHeartbeat's membership and assignment, ShareFetch's sessions, long poll
//! and piggy-backed acknowledgements, and ShareAcknowledge. (tests/kafka_clients has
//! confluent-kafka's ShareConsumer against the same server.)

use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::messages::share_acknowledge_request::{
    AcknowledgePartition, AcknowledgeTopic, AcknowledgementBatch as AckBatch,
};
use kafka_protocol::messages::share_fetch_request::{
    AcknowledgementBatch, FetchPartition, FetchTopic,
};
use kafka_protocol::messages::{
    GroupId, MetadataRequest, ShareAcknowledgeRequest, ShareFetchRequest, ShareFetchResponse,
    ShareGroupDescribeRequest, ShareGroupHeartbeatRequest, ShareGroupHeartbeatResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use ringlog_engine::batch::{self, BatchBuilder};

mod common;
mod kafka_support;

use common::await_remote_waits;
use kafka_support::{topic_name, Kafka, TestServer};

const UNKNOWN_MEMBER_ID: i16 = 25;
const GROUP_ID_NOT_FOUND: i16 = 69;
const INVALID_REQUEST: i16 = 42;
const UNKNOWN_TOPIC_ID: i16 = 100;
const FENCED_MEMBER_EPOCH: i16 = 110;
const SHARE_SESSION_NOT_FOUND: i16 = 122;
const INVALID_SHARE_SESSION_EPOCH: i16 = 123;
const ACCEPT: i8 = 1;
const RELEASE: i8 = 2;

fn str_bytes(text: &str) -> StrBytes {
    StrBytes::from_string(text.to_string())
}

fn beat(
    kafka: &mut Kafka,
    member: &str,
    epoch: i32,
    topics: Option<&[&str]>,
) -> ShareGroupHeartbeatResponse {
    let request = ShareGroupHeartbeatRequest::default()
        .with_group_id(GroupId(str_bytes("sg")))
        .with_member_id(str_bytes(member))
        .with_member_epoch(epoch)
        .with_subscribed_topic_names(topics.map(|t| t.iter().map(|t| topic_name(t)).collect()));
    kafka.call(1, &request)
}

fn topic_id(kafka: &mut Kafka, topic: &str) -> uuid::Uuid {
    let request = MetadataRequest::default().with_topics(Some(vec![
        kafka_protocol::messages::metadata_request::MetadataRequestTopic::default()
            .with_name(Some(TopicName(str_bytes(topic)))),
    ]));
    kafka.call(12, &request).topics[0].topic_id
}

/// A partition named in a ShareFetch, with its acknowledgements (first, last, type).
type NamedPartition<'a> = (i32, &'a [(i64, i64, i8)]);
/// Partitions named in a ShareFetch.
type Named<'a> = &'a [NamedPartition<'a>];

/// A ShareFetch of member `m` of group `sg` at `epoch`, naming `partitions` of `topic` with
/// the acknowledgements given for each.
fn share_fetch(
    topic: uuid::Uuid,
    epoch: i32,
    max_wait_ms: i32,
    partitions: Named<'_>,
) -> ShareFetchRequest {
    let partitions = partitions
        .iter()
        .map(|(partition, acks)| {
            FetchPartition::default()
                .with_partition_index(*partition)
                .with_acknowledgement_batches(
                    acks.iter()
                        .map(|&(first, last, kind)| {
                            AcknowledgementBatch::default()
                                .with_first_offset(first)
                                .with_last_offset(last)
                                .with_acknowledge_types(vec![kind])
                        })
                        .collect(),
                )
        })
        .collect();
    ShareFetchRequest::default()
        .with_group_id(Some(GroupId(str_bytes("sg"))))
        .with_member_id(Some(str_bytes("m")))
        .with_share_session_epoch(epoch)
        .with_max_wait_ms(max_wait_ms)
        .with_min_bytes(1)
        .with_max_bytes(1 << 20)
        .with_max_records(100)
        .with_batch_size(100)
        .with_topics(vec![FetchTopic::default()
            .with_topic_id(topic)
            .with_partitions(partitions)])
}

/// (partition, acquired (first, last, delivery count), record values) of each partition
/// answered, in partition order.
type Fetched = Vec<(i32, Vec<(i64, i64, i16)>, Vec<String>)>;

fn fetched(response: &ShareFetchResponse) -> Fetched {
    let mut out: Fetched = response
        .responses
        .iter()
        .flat_map(|topic| &topic.partitions)
        .filter(|p| !p.acquired_records.is_empty())
        .map(|p| {
            let acquired = p
                .acquired_records
                .iter()
                .map(|a| (a.first_offset, a.last_offset, a.delivery_count))
                .collect();
            (p.partition_index, acquired, values(p.records.as_ref()))
        })
        .collect();
    out.sort();
    out
}

fn values(records: Option<&Bytes>) -> Vec<String> {
    let mut out = Vec::new();
    for item in batch::BatchIter::new(records.map_or(&[][..], |b| &b[..])) {
        let (_, bytes) = item.unwrap();
        for record in batch::records(bytes).unwrap() {
            out.push(String::from_utf8(record.unwrap().value.unwrap().to_vec()).unwrap());
        }
    }
    out
}

fn batch_of(values: &[&str]) -> Bytes {
    let mut builder = BatchBuilder::new(Vec::new(), 1_000);
    for value in values {
        builder
            .push(1_000, None, Some(value.as_bytes()), &[])
            .unwrap();
    }
    Bytes::copy_from_slice(builder.finish())
}

#[test]
fn share_members_heartbeat_for_every_partition_of_their_topics() {
    let server = TestServer::start();
    let mut kafka = server.kafka();
    assert_eq!(kafka.create_topic("jobs", 3, &[]), 0);
    let id = topic_id(&mut kafka, "jobs");
    let joined = beat(&mut kafka, "m", 0, Some(&["jobs", "not-yet"]));
    assert_eq!(joined.error_code, 0);
    assert_eq!(joined.member_epoch, 1);
    assert_eq!(joined.heartbeat_interval_ms, 5_000);
    let assignment = joined.assignment.expect("an assignment at join");
    assert_eq!(assignment.topic_partitions.len(), 1, "topics that exist");
    assert_eq!(assignment.topic_partitions[0].topic_id, id);
    assert_eq!(assignment.topic_partitions[0].partitions, [0, 1, 2]);
    // Unchanged: no assignment, the same epoch.
    let again = beat(&mut kafka, "m", 1, None);
    assert_eq!((again.error_code, again.member_epoch), (0, 1));
    assert!(again.assignment.is_none());
    // The subscribed topic appears: the next heartbeat brings it, under a new epoch.
    assert_eq!(kafka.create_topic("not-yet", 1, &[]), 0);
    let grown = beat(&mut kafka, "m", 1, None);
    assert_eq!(grown.member_epoch, 2);
    assert_eq!(grown.assignment.unwrap().topic_partitions.len(), 2);
    assert_eq!(
        beat(&mut kafka, "m", 1, None).error_code,
        FENCED_MEMBER_EPOCH
    );
    // ShareGroupDescribe shows the member as it stands; other groups are not share groups.
    let describe = ShareGroupDescribeRequest::default()
        .with_group_ids(vec![GroupId(str_bytes("sg")), GroupId(str_bytes("nope"))]);
    let described = kafka.call(1, &describe);
    let group = &described.groups[0];
    assert_eq!(group.error_code, 0);
    assert_eq!(group.group_state.as_str(), "Stable");
    assert_eq!(group.group_epoch, 2);
    let member = &group.members[0];
    assert_eq!((member.member_id.as_str(), member.member_epoch), ("m", 2));
    let subscribed: Vec<&str> = member
        .subscribed_topic_names
        .iter()
        .map(|t| t.0.as_str())
        .collect();
    assert_eq!(subscribed, ["jobs", "not-yet"]);
    let mut assigned: Vec<(&str, Vec<i32>)> = member
        .assignment
        .topic_partitions
        .iter()
        .map(|t| (t.topic_name.0.as_str(), t.partitions.clone()))
        .collect();
    assigned.sort();
    assert_eq!(assigned, [("jobs", vec![0, 1, 2]), ("not-yet", vec![0])]);
    assert!(!member.assignment.topic_partitions[0].topic_id.is_nil());
    assert_eq!(described.groups[1].error_code, GROUP_ID_NOT_FOUND);
    assert_eq!(
        beat(&mut kafka, "ghost", 4, None).error_code,
        UNKNOWN_MEMBER_ID
    );
    assert_eq!(
        beat(&mut kafka, "", 0, Some(&["jobs"])).error_code,
        INVALID_REQUEST
    );
    let left = beat(&mut kafka, "m", -1, None);
    assert_eq!((left.error_code, left.member_epoch), (0, -1));
    assert_eq!(beat(&mut kafka, "m", 2, None).error_code, UNKNOWN_MEMBER_ID);
}

/// A share session's fetch long-polls every partition at once: a record produced to the
/// partition of the other shard while it waits answers it, long before its max_wait. The
/// next fetch carries the session's next epoch and its acknowledgements; epochs out of turn
/// and sessions that do not exist are refused, and closing the session releases what the
/// member held.
#[test]
fn share_fetch_sessions_wait_acquire_and_acknowledge() {
    let server = TestServer::start_with(|config| {
        config.metrics_listen = Some("127.0.0.1:0".parse().unwrap());
    });
    let metrics = server.handle.metrics_addr().unwrap();
    let mut kafka = server.kafka();
    assert_eq!(kafka.create_topic("work", 2, &[]), 0);
    let id = topic_id(&mut kafka, "work");
    // The group's lock duration is the acquisition lock timeout Kafka's clients are told.
    let mut native = ringlog_net::client::Client::connect(server.handle.local_addr()).unwrap();
    native
        .configure_share_group(&ringlog_net::message::configure_group::Request {
            group: "sg",
            lock_ms: Some(45_000),
            delivery_limit: None,
            dead_letter_topic: None,
            in_flight_records_max: None,
        })
        .unwrap();
    let both: Named<'_> = &[(0, &[]), (1, &[])];
    // Acknowledgements cannot open a session, and a session must be opened first.
    let acking = share_fetch(id, 0, 0, &[(0, &[(0, 0, ACCEPT)])]);
    assert_eq!(kafka.call(1, &acking).error_code, INVALID_REQUEST);
    let early = share_fetch(id, 1, 0, both);
    assert_eq!(kafka.call(1, &early).error_code, SHARE_SESSION_NOT_FOUND);
    let nameless = share_fetch(id, 0, 0, both).with_member_id(Some(str_bytes("")));
    assert_eq!(kafka.call(1, &nameless).error_code, INVALID_REQUEST);
    let unknown = share_fetch(uuid::Uuid::from_u128(9), 0, 0, both);
    let answer = kafka.call(1, &unknown);
    assert_eq!(answer.error_code, 0);
    let codes: Vec<i16> = answer.responses[0]
        .partitions
        .iter()
        .map(|p| p.error_code)
        .collect();
    assert_eq!(codes, [UNKNOWN_TOPIC_ID, UNKNOWN_TOPIC_ID]);

    // Open a session on both partitions and wait; one shard holds the other partition's wait.
    let mut producer = server.kafka();
    for partition in 0..2 {
        let epoch = partition;
        let correlation_id = kafka.send(1, &share_fetch(id, epoch, 20_000, both));
        await_remote_waits(
            metrics,
            1,
            "the share fetch never waited on the other shard",
        );
        let started = Instant::now();
        let value = format!("job-{partition}");
        let produced = producer.produce(9, 1, "work", partition, batch_of(&[&value]));
        assert_eq!(produced.0, 0);
        let response = kafka.receive::<ShareFetchRequest>(1, correlation_id);
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "answered after {:?}, at its max_wait (20 s): the record did not wake it",
            started.elapsed()
        );
        assert_eq!(response.error_code, 0);
        assert_eq!(response.acquisition_lock_timeout_ms, 45_000);
        assert_eq!(
            fetched(&response),
            [(partition, vec![(0, 0, 1)], vec![value])]
        );
        await_remote_waits(
            metrics,
            0,
            "a finished share fetch still waits on another shard",
        );
    }
    // Epoch 2 (the third request): release job-0, accept job-1.
    let stale = share_fetch(id, 1, 0, both);
    assert_eq!(
        kafka.call(1, &stale).error_code,
        INVALID_SHARE_SESSION_EPOCH
    );
    let acks: Named<'_> = &[(0, &[(0, 0, RELEASE)]), (1, &[(0, 0, ACCEPT)])];
    let response = kafka.call(1, &share_fetch(id, 2, 0, acks));
    assert_eq!(response.error_code, 0);
    let ack_codes: Vec<i16> = response
        .responses
        .iter()
        .flat_map(|t| &t.partitions)
        .map(|p| p.acknowledge_error_code)
        .collect();
    assert_eq!(ack_codes, [0, 0]);
    // The released record comes back to the member at once, delivered a second time.
    assert_eq!(
        fetched(&response),
        [(0, vec![(0, 0, 2)], vec!["job-0".to_string()])]
    );
    // ShareAcknowledge cannot open a session; closing it (-1) releases job-0 again.
    let close = |epoch| {
        ShareAcknowledgeRequest::default()
            .with_group_id(Some(GroupId(str_bytes("sg"))))
            .with_member_id(Some(str_bytes("m")))
            .with_share_session_epoch(epoch)
            .with_topics(vec![AcknowledgeTopic::default()
                .with_topic_id(id)
                .with_partitions(vec![AcknowledgePartition::default()
                    .with_partition_index(1)
                    .with_acknowledgement_batches(vec![AckBatch::default()
                        .with_first_offset(0)
                        .with_last_offset(0)
                        .with_acknowledge_types(vec![ACCEPT])])])])
    };
    assert_eq!(
        kafka.call(1, &close(0)).error_code,
        INVALID_SHARE_SESSION_EPOCH
    );
    let closed = kafka.call(1, &close(-1));
    assert_eq!(closed.error_code, 0);
    // job-1 was accepted already: acknowledging it again is INVALID_RECORD_STATE (121).
    assert_eq!(closed.responses[0].partitions[0].error_code, 121);
    assert_eq!(
        kafka.call(1, &share_fetch(id, 4, 0, both)).error_code,
        SHARE_SESSION_NOT_FOUND
    );
    // Another member finds job-0 available again (third delivery), job-1 settled.
    let mut other = server.kafka();
    let reopened = other.call(1, &share_fetch(id, 0, 0, both));
    assert_eq!(
        fetched(&reopened),
        [(0, vec![(0, 0, 3)], vec!["job-0".to_string()])]
    );
}

/// A fetch stops taking partitions once it spent its record budget (a chunk of 16 partitions
/// at a time), and the next one starts where it stopped, so no partition waits for the
/// others; a request naming more partitions than a session may hold is refused.
#[test]
fn share_fetches_keep_to_their_budget_and_take_turns_between_partitions() {
    let server = TestServer::start();
    let mut kafka = server.kafka();
    assert_eq!(kafka.create_topic("wide", 40, &[]), 0);
    let id = topic_id(&mut kafka, "wide");
    for partition in 0..40 {
        let value = format!("r{partition}");
        assert_eq!(
            kafka
                .produce(9, 1, "wide", partition, batch_of(&[&value]))
                .0,
            0
        );
    }
    let all: Vec<NamedPartition<'_>> = (0..40).map(|p| (p, &[][..])).collect();
    let with_records = |max_records: i32, epoch: i32| {
        share_fetch(id, epoch, 0, &all).with_max_records(max_records)
    };
    let partitions_of = |response: &ShareFetchResponse| -> Vec<i32> {
        fetched(response).into_iter().map(|(p, _, _)| p).collect()
    };
    let first = partitions_of(&kafka.call(1, &with_records(1, 0)));
    assert_eq!(
        first,
        (0..16).collect::<Vec<_>>(),
        "one chunk, then the budget is spent"
    );
    let second = partitions_of(&kafka.call(1, &with_records(1, 1)));
    assert_eq!(
        second,
        (16..32).collect::<Vec<_>>(),
        "the next fetch goes on from there"
    );
    let third = partitions_of(&kafka.call(1, &with_records(100, 2)));
    assert_eq!(
        third,
        (32..40).collect::<Vec<_>>(),
        "the rest, then nothing left"
    );

    let many: Vec<NamedPartition<'_>> = (0..10_001).map(|p| (p, &[][..])).collect();
    let refused = kafka.call(1, &share_fetch(id, 0, 0, &many));
    assert_eq!(refused.error_code, INVALID_REQUEST);
}

/// A session closed while a fetch of it still waits (a consumer closing during its long poll:
/// requests of one connection run side by side): the close stops that fetch and waits for it
/// before giving back what the member holds, so a record produced afterwards is not acquired
/// for (and locked to) a member that left; another member gets it at its first delivery.
#[test]
fn closing_a_session_stops_its_waiting_fetch() {
    let server = TestServer::start_with(|config| {
        config.metrics_listen = Some("127.0.0.1:0".parse().unwrap());
    });
    let metrics = server.handle.metrics_addr().unwrap();
    let mut kafka = server.kafka();
    assert_eq!(kafka.create_topic("late", 1, &[]), 0);
    let id = topic_id(&mut kafka, "late");
    let fetch_id = kafka.send(1, &share_fetch(id, 0, 20_000, &[(0, &[])]));
    let close = ShareAcknowledgeRequest::default()
        .with_group_id(Some(GroupId(str_bytes("sg"))))
        .with_member_id(Some(str_bytes("m")))
        .with_share_session_epoch(-1);
    let close_id = kafka.send(1, &close);
    // The close was served (it counts once answered, after the fetch it stopped ended).
    let closes = || {
        common::metric_sum(
            metrics,
            "ringlog_requests_total{",
            "api=\"ShareAcknowledge\"",
        )
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while closes() == 0 {
        assert!(Instant::now() < deadline, "the close was never served");
        std::thread::yield_now();
    }
    let mut producer = server.kafka();
    assert_eq!(producer.produce(9, 1, "late", 0, batch_of(&["late"])).0, 0);
    let answer = kafka.receive::<ShareFetchRequest>(1, fetch_id);
    assert_eq!(answer.error_code, 0);
    assert_eq!(fetched(&answer), [], "the stopped fetch acquired nothing");
    assert_eq!(
        kafka
            .receive::<ShareAcknowledgeRequest>(1, close_id)
            .error_code,
        0
    );
    let mut other = server.kafka();
    let now = other.call(1, &share_fetch(id, 0, 0, &[(0, &[])]));
    assert_eq!(
        fetched(&now),
        [(0, vec![(0, 0, 1)], vec!["late".to_string()])]
    );
}
