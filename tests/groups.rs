//! Consumer groups and share groups end to end: real servers (in-process, and the `ringlog`
//! binary as a child process for kill -9), real files, loopback TCP, the real clients.
//!
//! No sleep is used to wait for the server: every wait polls for the expected state with a
//! deadline.

mod common;

use common::create_topic_at;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use ringlog_net::client::partitioner::partition_for_key;
use ringlog_net::client::{
    AutoOffsetReset, Client, ClientError, Consumer, ConsumerConfig, EntryResult, GroupConsumer,
    GroupConsumerConfig, Producer, ProducerConfig, ProducerRecord, RecordMetadata, SeekTo,
    ShareConsumer, ShareConsumerConfig,
};
use ringlog_net::error_code::ErrorCode;
use ringlog_net::message::alter_topic;
use ringlog_net::message::configure_group;
use ringlog_net::message::group::{GroupKind, GroupState};
use ringlog_net::message::heartbeat;
use ringlog_net::message::join_group;
use ringlog_net::message::leave_group;
use ringlog_net::message::list_offsets::OffsetSpec;
use ringlog_net::message::offset_commit::{self, CommitTopic, PartitionOffset};
use ringlog_net::message::share_acknowledge::AckType;
use ringlog_net::server::{self, Server, ServerConfig, ServerHandle};

/// Longest any wait in these tests may take before it counts as a failure.
const DEADLINE: Duration = Duration::from_secs(30);

struct TestServer {
    handle: Option<ServerHandle>,
    dir: tempfile::TempDir,
    retention_check_interval_ms: u64,
    message_timestamp_after_max_ms: u64,
}

impl TestServer {
    fn start() -> TestServer {
        Self::start_checking_retention_every(ServerConfig::default().retention_check_interval_ms)
    }

    /// A server that applies retention every `interval_ms`.
    fn start_checking_retention_every(interval_ms: u64) -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        let mut server = TestServer {
            handle: None,
            dir,
            retention_check_interval_ms: interval_ms,
            message_timestamp_after_max_ms: ServerConfig::default().message_timestamp_after_max_ms,
        };
        server.restart();
        server
    }

    fn restart(&mut self) {
        if let Some(handle) = self.handle.take() {
            handle.shutdown();
        }
        let config = ServerConfig {
            data_dir: self.dir.path().to_path_buf(),
            listen: "127.0.0.1:0".parse().unwrap(),
            shards: Some(2),
            cache_bytes_per_shard: 8 << 20,
            retention_check_interval_ms: self.retention_check_interval_ms,
            message_timestamp_after_max_ms: self.message_timestamp_after_max_ms,
            ..ServerConfig::default()
        };
        self.handle = Some(Server::start(config).unwrap());
    }

    fn addr(&self) -> SocketAddr {
        self.handle.as_ref().unwrap().local_addr()
    }
}

/// Produces values `first..first + count`, to `partition` or spread by the partitioner.
fn produce(addr: SocketAddr, topic: &str, first: usize, count: usize, partition: Option<u32>) {
    let config = ProducerConfig {
        linger_ms: 1,
        ..ProducerConfig::default()
    };
    let producer = Producer::connect(addr, topic, config).unwrap();
    for n in first..first + count {
        let value = n.to_string();
        let mut record = ProducerRecord::new(value.as_bytes());
        if let Some(partition) = partition {
            record = record.with_partition(partition);
        }
        producer.send(&record).unwrap();
    }
    producer.close().unwrap();
}

fn group_config() -> GroupConsumerConfig {
    GroupConsumerConfig {
        heartbeat_interval_ms: 100,
        auto_commit_interval_ms: 200,
        consumer: ConsumerConfig {
            max_wait_ms: 100,
            auto_offset_reset: AutoOffsetReset::Earliest,
            ..ConsumerConfig::default()
        },
        ..GroupConsumerConfig::default()
    }
}

fn share_config() -> ShareConsumerConfig {
    ShareConsumerConfig {
        max_records: 20,
        max_wait_ms: 100,
        ..ShareConsumerConfig::default()
    }
}

/// Polls `check` until it returns `Some`, failing after [`DEADLINE`].
fn wait_for<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        thread::yield_now();
    }
}

/// A record as (partition, offset, value as text).
fn as_tuple(record: ringlog_net::client::ConsumerRecord<'_>) -> (u32, i64, String) {
    let value = String::from_utf8(record.value.unwrap().to_vec()).unwrap();
    (record.partition, record.offset, value)
}

/// Reads `count` records with a group consumer: (partition, offset, value).
fn read_group(consumer: &mut GroupConsumer, count: usize) -> Vec<(u32, i64, String)> {
    let mut out = Vec::new();
    wait_for("group records", || {
        for record in consumer.poll(Duration::from_millis(100)).unwrap() {
            out.push(as_tuple(record.unwrap()));
        }
        (out.len() >= count).then_some(())
    });
    out
}

#[test]
fn three_groups_each_read_every_record() {
    let server = TestServer::start();
    create_topic_at(server.addr(), "events", 3);
    produce(server.addr(), "events", 0, 300, None);
    let expected: BTreeSet<String> = (0..300).map(|n| n.to_string()).collect();
    // The three groups read at once, each on its own.
    let readers: Vec<_> = ["audit", "billing", "search"]
        .into_iter()
        .map(|group| {
            let addr = server.addr();
            thread::spawn(move || {
                let mut consumer =
                    GroupConsumer::subscribe(addr, group, "events", group_config()).unwrap();
                let records = read_group(&mut consumer, 300);
                consumer.close().unwrap();
                records
            })
        })
        .collect();
    for reader in readers {
        let records = reader.join().unwrap();
        assert_eq!(records.len(), 300, "every record exactly once");
        let values: BTreeSet<String> = records.into_iter().map(|r| r.2).collect();
        assert_eq!(values, expected);
    }
    let mut client = Client::connect(server.addr()).unwrap();
    for group in ["audit", "billing", "search"] {
        let offsets = client.fetch_offsets(group, &[]).unwrap();
        assert_eq!(offsets.len(), 3);
        assert!(offsets.iter().all(|o| o.lag == 0), "{group}: {offsets:?}");
    }
    let listed: Vec<String> = client
        .list_groups()
        .unwrap()
        .into_iter()
        .map(|g| g.group)
        .collect();
    assert_eq!(listed, ["audit", "billing", "search"]);
}

/// Describes `group` until it is Stable with `members` members holding `per_member`
/// partitions each.
fn wait_for_split(client: &mut Client, group: &str, members: usize, per_member: usize) {
    wait_for("the group to split its partitions", || {
        // The first member may not have created the group yet.
        let description = client.describe_group(group).ok()?;
        let sizes: Vec<usize> = description
            .members
            .iter()
            .map(|m| m.assignment.iter().map(|(_, p)| p.len()).sum())
            .collect();
        let split = description.state == GroupState::Stable
            && sizes.len() == members
            && sizes.iter().all(|&n| n == per_member);
        split.then_some(())
    });
}

#[test]
fn members_split_partitions_and_rebalance_when_one_leaves() {
    let server = TestServer::start();
    create_topic_at(server.addr(), "orders", 6);
    produce(server.addr(), "orders", 0, 600, None);
    let seen = Arc::new(Mutex::new(Vec::new()));
    let stops: Vec<Arc<AtomicBool>> = (0..3).map(|_| Arc::new(AtomicBool::new(false))).collect();
    let members: Vec<_> = stops
        .iter()
        .map(|stop| {
            let (addr, stop, seen) = (server.addr(), Arc::clone(stop), Arc::clone(&seen));
            thread::spawn(move || {
                let mut consumer =
                    GroupConsumer::subscribe(addr, "shipping", "orders", group_config()).unwrap();
                while !stop.load(Ordering::SeqCst) {
                    for record in consumer.poll(Duration::from_millis(100)).unwrap() {
                        let record = record.unwrap();
                        seen.lock().unwrap().push((record.partition, record.offset));
                    }
                }
                consumer.close().unwrap();
            })
        })
        .collect();
    let mut client = Client::connect(server.addr()).unwrap();
    wait_for_split(&mut client, "shipping", 3, 2);
    let mut members = members.into_iter();
    let leaving = members.next().unwrap();
    stops[0].store(true, Ordering::SeqCst);
    leaving.join().unwrap();
    wait_for_split(&mut client, "shipping", 2, 3);
    produce(server.addr(), "orders", 600, 600, None);
    wait_for("every record to be read", || {
        let unique: HashSet<(u32, i64)> = seen.lock().unwrap().iter().copied().collect();
        (unique.len() >= 1200).then_some(())
    });
    for stop in &stops {
        stop.store(true, Ordering::SeqCst);
    }
    for member in members {
        member.join().unwrap();
    }
    let seen = seen.lock().unwrap();
    let unique: HashSet<(u32, i64)> = seen.iter().copied().collect();
    assert_eq!(unique.len(), 1200);
    assert_eq!(
        seen.len(),
        1200,
        "a clean leave and rebalance deliver nothing twice"
    );
    let offsets = client.fetch_offsets("shipping", &[]).unwrap();
    assert_eq!(offsets.len(), 6);
    assert!(offsets.iter().all(|o| o.lag == 0), "{offsets:?}");
    assert_eq!(
        client.describe_group("shipping").unwrap().state,
        GroupState::Empty
    );
}

/// A JoinGroup of `group` reading `orders`, as a client without [`GroupConsumer`] sends it.
fn join_orders(
    client: &mut Client,
    group: &str,
    member_id: &str,
    rebalance_timeout_ms: u32,
) -> Result<ringlog_net::client::GroupJoin, ClientError> {
    client.join_group(&join_group::Request {
        group,
        member_id,
        client_id: "raw",
        topics: &["orders"],
        session_timeout_ms: 30_000,
        rebalance_timeout_ms,
        instance_id: "",
    })
}

fn assigned_count(joined: &ringlog_net::client::GroupJoin) -> usize {
    joined.assignment.iter().map(|(_, p)| p.len()).sum()
}

#[test]
fn a_new_member_whose_join_went_unanswered_is_given_no_partitions() {
    let server = TestServer::start();
    create_topic_at(server.addr(), "orders", 4);
    let mut first = Client::connect(server.addr()).unwrap();
    let joined = join_orders(&mut first, "slow", "", 5_000).unwrap();
    assert_eq!(assigned_count(&joined), 4);
    // A new member starts a rebalance that waits up to the first member's 5 s for it to
    // rejoin, longer than the new member's own 200 ms: its join is answered "join again",
    // with no member id (the client never learns which id it was given).
    let mut second = Client::connect(server.addr()).unwrap();
    let error = join_orders(&mut second, "slow", "", 200).unwrap_err();
    assert_eq!(
        error.code(),
        Some(ErrorCode::RebalanceInProgress),
        "{error}"
    );
    // The first member rejoins. No one can heartbeat, commit or rejoin as the member the
    // unanswered join created, so the partitions must all go to the first.
    let rejoined = join_orders(&mut first, "slow", &joined.member_id, 5_000).unwrap();
    assert_eq!(assigned_count(&rejoined), 4, "{rejoined:?}");
    let description = first.describe_group("slow").unwrap();
    assert_eq!(description.members.len(), 1, "{description:?}");
}

#[test]
fn a_group_consumer_joins_again_when_the_rebalance_outlasts_its_rebalance_timeout() {
    let server = TestServer::start();
    create_topic_at(server.addr(), "orders", 4);
    produce(server.addr(), "orders", 0, 40, None);
    // A member that waits 2 s for rebalances and never rejoins (as one busy processing
    // whose heartbeats go on): the rebalance the consumer starts ends at that deadline,
    // without it, after the consumer's own 200 ms.
    let mut first = Client::connect(server.addr()).unwrap();
    join_orders(&mut first, "patient", "", 2_000).unwrap();
    let config = GroupConsumerConfig {
        rebalance_timeout_ms: 200,
        ..group_config()
    };
    let mut consumer =
        GroupConsumer::subscribe(server.addr(), "patient", "orders", config).unwrap();
    let records = read_group(&mut consumer, 40);
    assert_eq!(records.len(), 40);
    assert_eq!(consumer.assignment(), [0, 1, 2, 3]);
    consumer.close().unwrap();
}

fn admin_commit(client: &mut Client, group: &str, topic: &str, offsets: &[(u32, i64)]) {
    let partitions: Vec<PartitionOffset> = offsets
        .iter()
        .map(|&(partition, offset)| PartitionOffset { partition, offset })
        .collect();
    let topics = [CommitTopic {
        topic,
        partitions: &partitions,
    }];
    let results = client
        .commit_offsets(&offset_commit::Request {
            group,
            member_id: "",
            generation: -1,
            topics: &topics,
            instance_id: "",
        })
        .unwrap();
    assert!(results.iter().all(|r| r.result.is_ok()), "{results:?}");
}

fn lags(client: &mut Client, group: &str) -> Vec<(u32, i64, i64)> {
    let mut offsets: Vec<_> = client
        .fetch_offsets(group, &[])
        .unwrap()
        .into_iter()
        .map(|o| (o.partition, o.committed_offset, o.lag))
        .collect();
    offsets.sort_unstable();
    offsets
}

#[test]
fn lag_resets_and_bad_requests() {
    let server = TestServer::start();
    create_topic_at(server.addr(), "ledger", 2);
    produce(server.addr(), "ledger", 0, 10, Some(0));
    produce(server.addr(), "ledger", 10, 10, Some(1));
    let mut client = Client::connect(server.addr()).unwrap();
    admin_commit(&mut client, "reports", "ledger", &[(0, 4), (1, 10)]);
    assert_eq!(lags(&mut client, "reports"), [(0, 4, 6), (1, 10, 0)]);
    let description = client.describe_group("reports").unwrap();
    assert_eq!(
        (description.kind, description.state),
        (GroupKind::Consumer, GroupState::Empty)
    );
    assert_eq!(description.offsets.iter().map(|o| o.lag).sum::<i64>(), 6);

    let reset = client
        .reset_group_offsets("reports", "ledger", &[], OffsetSpec::Earliest)
        .unwrap();
    assert!(reset
        .iter()
        .all(|r| r.result.as_ref().is_ok_and(|o| *o == 0)));
    assert_eq!(lags(&mut client, "reports"), [(0, 0, 10), (1, 0, 10)]);
    // A group that does not exist yet gets the offsets (seeding a new group, as Kafka's
    // --reset-offsets does); a mistyped topic creates no group.
    let seeded = client
        .reset_group_offsets("seeded", "ledger", &[1], OffsetSpec::Offset(3))
        .unwrap();
    assert!(matches!(seeded[0].result, Ok(3)), "{seeded:?}");
    assert_eq!(lags(&mut client, "seeded"), [(1, 3, 7)]);
    let error = client
        .reset_group_offsets("typo", "ledgr", &[], OffsetSpec::Earliest)
        .unwrap_err();
    assert_eq!(error.code(), Some(ErrorCode::UnknownTopic), "{error}");
    assert!(client.describe_group("typo").is_err());
    client
        .reset_group_offsets("reports", "ledger", &[1], OffsetSpec::Offset(7))
        .unwrap();
    client
        .reset_group_offsets("reports", "ledger", &[0], OffsetSpec::Latest)
        .unwrap();
    assert_eq!(lags(&mut client, "reports"), [(0, 10, 0), (1, 7, 3)]);
    let beyond = client
        .reset_group_offsets("reports", "ledger", &[1], OffsetSpec::Offset(99))
        .unwrap();
    assert_eq!(
        beyond[0].result.as_ref().unwrap_err().code(),
        Some(ErrorCode::OffsetOutOfRange)
    );

    // A member reads the lag away; while it is in the group, resets are refused.
    let mut member =
        GroupConsumer::subscribe(server.addr(), "reports", "ledger", group_config()).unwrap();
    let records = read_group(&mut member, 3);
    assert!(records.iter().all(|r| r.0 == 1 && r.1 >= 7));
    member.commit().unwrap();
    assert_eq!(lags(&mut client, "reports"), [(0, 10, 0), (1, 10, 0)]);
    let busy = client
        .reset_group_offsets("reports", "ledger", &[], OffsetSpec::Earliest)
        .unwrap_err();
    assert_eq!(busy.code(), Some(ErrorCode::GroupNotEmpty));
    member.close().unwrap();
    client
        .reset_group_offsets("reports", "ledger", &[], OffsetSpec::Earliest)
        .unwrap();

    // Clear errors for bad requests.
    let code = |result: Result<_, ringlog_net::client::ClientError>| result.unwrap_err().code();
    assert_eq!(
        code(client.describe_group("nobody").map(|_| ())),
        Some(ErrorCode::UnknownGroup)
    );
    let share_on_consumer = configure_group::Request {
        group: "reports",
        lock_ms: Some(1_000),
        ..Default::default()
    };
    assert_eq!(
        code(client.configure_share_group(&share_on_consumer).map(|_| ())),
        Some(ErrorCode::InvalidGroupKind)
    );
    let bad_lock = configure_group::Request {
        group: "queue",
        lock_ms: Some(0),
        ..Default::default()
    };
    assert_eq!(
        code(client.configure_share_group(&bad_lock).map(|_| ())),
        Some(ErrorCode::InvalidConfig)
    );
    let mut on_consumer_group =
        ShareConsumer::subscribe(server.addr(), "reports", "ledger", share_config()).unwrap();
    assert_eq!(
        code(on_consumer_group.poll(Duration::ZERO).map(|_| ())),
        Some(ErrorCode::InvalidGroupKind)
    );
    let missing_dlq = configure_group::Request {
        group: "queue",
        dead_letter_topic: Some("missing"),
        ..Default::default()
    };
    assert_eq!(
        code(client.configure_share_group(&missing_dlq).map(|_| ())),
        Some(ErrorCode::InvalidConfig)
    );
    assert_eq!(
        code(
            client
                .fetch_offsets(
                    "reports",
                    &[ringlog_net::message::TopicPartitions {
                        topic: "nope",
                        partitions: &[]
                    }]
                )
                .map(|_| ())
        ),
        Some(ErrorCode::UnknownTopic)
    );
}

/// Partitions of the reset tests' topic: enough durable writes that a reset takes a while.
const WIDE_PARTITIONS: u32 = 200;
/// Most resets a test starts hoping to catch one midway.
const RESET_ATTEMPTS: usize = 10;

/// How many of partitions `0..WIDE_PARTITIONS` of `topic` have an offset committed by `group`.
fn committed_partitions(client: &mut Client, group: &str, topic: &str) -> usize {
    let all: Vec<u32> = (0..WIDE_PARTITIONS).collect();
    let wanted = [ringlog_net::message::TopicPartitions {
        topic,
        partitions: &all,
    }];
    let offsets = client.fetch_offsets(group, &wanted).unwrap();
    offsets.iter().filter(|o| o.committed_offset >= 0).count()
}

/// A reset of every partition of `topic` running on another thread.
struct BackgroundReset {
    thread: thread::JoinHandle<Result<Vec<EntryResult<u32>>, ClientError>>,
    /// Whether `client` saw it with some partitions reset and others not yet.
    seen_midway: bool,
}

impl BackgroundReset {
    /// Starts the reset of `group` (which has no offsets on `topic`) and waits until it has
    /// moved at least one partition.
    fn start(
        addr: SocketAddr,
        client: &mut Client,
        group: &'static str,
        topic: &'static str,
    ) -> Self {
        let thread = thread::spawn(move || {
            Client::connect(addr)?.reset_group_offsets(group, topic, &[], OffsetSpec::Earliest)
        });
        let moved = wait_for("the reset to move a partition", || {
            let moved = committed_partitions(client, group, topic);
            (moved > 0).then_some(moved)
        });
        BackgroundReset {
            thread,
            seen_midway: moved < WIDE_PARTITIONS as usize,
        }
    }

    /// Waits for the reset's answer and checks that it moved every partition to 0.
    fn finish(self) {
        let results = self.thread.join().unwrap().unwrap();
        assert_eq!(results.len(), WIDE_PARTITIONS as usize);
        for result in results {
            assert_eq!(result.result.ok(), Some(0), "partition {}", result.entry);
        }
    }
}

#[test]
fn a_group_deleted_during_a_reset_leaves_nothing_to_a_new_group_of_its_name() {
    let server = TestServer::start();
    let addr = server.addr();
    create_topic_at(addr, "wide", WIDE_PARTITIONS);
    create_topic_at(addr, "other", 1);
    let mut client = Client::connect(addr).unwrap();
    let mut midway = 0;
    for attempt in 0..RESET_ATTEMPTS {
        // The group exists (an admin commit on another topic made it) with no offset on "wide".
        admin_commit(&mut client, "g", "other", &[(0, 0)]);
        let reset = BackgroundReset::start(addr, &mut client, "g", "wide");
        midway += usize::from(reset.seen_midway);
        // The deletion waits for the reset, then forgets every offset it wrote.
        client.delete_group("g").unwrap();
        reset.finish();
        admin_commit(&mut client, "g", "other", &[(0, 0)]);
        assert_eq!(
            committed_partitions(&mut client, "g", "wide"),
            0,
            "attempt {attempt}: a new group inherited the deleted one's offsets"
        );
        client.delete_group("g").unwrap();
        if midway >= 3 {
            break;
        }
    }
    assert!(midway > 0, "no reset was seen midway");
}

#[test]
fn commits_and_joins_wait_for_a_reset_of_their_group() {
    let server = TestServer::start();
    let addr = server.addr();
    create_topic_at(addr, "wide", WIDE_PARTITIONS);
    create_topic_at(addr, "other", 1);
    let mut client = Client::connect(addr).unwrap();
    let last = WIDE_PARTITIONS - 1;
    let (mut commits_midway, mut joins_midway) = (0, 0);
    for _ in 0..RESET_ATTEMPTS {
        // An admin commit during the reset lands after it, so its offset is the one kept.
        admin_commit(&mut client, "committed", "other", &[(0, 0)]);
        let reset = BackgroundReset::start(addr, &mut client, "committed", "wide");
        admin_commit(&mut client, "committed", "wide", &[(last, 5)]);
        commits_midway += usize::from(reset.seen_midway);
        reset.finish();
        let wanted = [ringlog_net::message::TopicPartitions {
            topic: "wide",
            partitions: &[last],
        }];
        let committed = client.fetch_offsets("committed", &wanted).unwrap();
        assert_eq!(
            committed[0].committed_offset, 5,
            "the reset overwrote a commit made after it began"
        );
        client.delete_group("committed").unwrap();

        // A member joining during the reset is answered once the reset has ended.
        admin_commit(&mut client, "joined", "other", &[(0, 0)]);
        let reset = BackgroundReset::start(addr, &mut client, "joined", "wide");
        let mut member = Client::connect(addr).unwrap();
        let topics = ["wide"];
        let joined = member
            .join_group(&join_group::Request {
                group: "joined",
                member_id: "",
                client_id: "joiner",
                topics: &topics,
                session_timeout_ms: 10_000,
                rebalance_timeout_ms: 10_000,
                instance_id: "",
            })
            .unwrap();
        assert_eq!(
            committed_partitions(&mut client, "joined", "wide"),
            WIDE_PARTITIONS as usize,
            "a member joined while the reset was moving the group's offsets"
        );
        joins_midway += usize::from(reset.seen_midway);
        reset.finish();
        member
            .leave_group(&leave_group::Request {
                group: "joined",
                member_id: &joined.member_id,
                instance_id: "",
            })
            .unwrap();
        client.delete_group("joined").unwrap();
        if commits_midway >= 2 && joins_midway >= 2 {
            break;
        }
    }
    assert!(
        commits_midway > 0 && joins_midway > 0,
        "no reset was seen midway"
    );
}

#[test]
fn share_consumers_process_every_record_exactly_once() {
    let server = TestServer::start();
    create_topic_at(server.addr(), "jobs", 2);
    const TOTAL: usize = 2_000;
    produce(server.addr(), "jobs", 0, TOTAL, None);
    let done = Arc::new(AtomicUsize::new(0));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let workers: Vec<_> = (0..8)
        .map(|_| {
            let (addr, done, seen) = (server.addr(), Arc::clone(&done), Arc::clone(&seen));
            thread::spawn(move || {
                let mut consumer =
                    ShareConsumer::subscribe(addr, "workers", "jobs", share_config()).unwrap();
                let deadline = Instant::now() + DEADLINE;
                while done.load(Ordering::SeqCst) < TOTAL && Instant::now() < deadline {
                    let batch = consumer.poll(Duration::from_millis(100)).unwrap();
                    for record in batch.records() {
                        let record = record.unwrap();
                        assert_eq!(record.delivery_count, 1);
                        seen.lock().unwrap().push((record.partition, record.offset));
                        consumer.acknowledge(record.partition, record.offset, AckType::Accept);
                        done.fetch_add(1, Ordering::SeqCst);
                    }
                }
                let refused = consumer.close().unwrap();
                assert!(refused.is_empty(), "{refused:?}");
            })
        })
        .collect();
    for worker in workers {
        worker.join().unwrap();
    }
    let seen = seen.lock().unwrap();
    let unique: HashSet<(u32, i64)> = seen.iter().copied().collect();
    assert_eq!(unique.len(), TOTAL, "every record processed");
    assert_eq!(seen.len(), TOTAL, "no record processed twice");
    let mut client = Client::connect(server.addr()).unwrap();
    let description = client.describe_group("workers").unwrap();
    assert_eq!(description.kind, GroupKind::Share);
    assert_eq!(description.share_partitions.len(), 2);
    for partition in &description.share_partitions {
        assert_eq!(
            partition.start_offset, partition.high_watermark,
            "{partition:?}"
        );
        assert_eq!(partition.in_flight_records, 0);
    }
}

/// Polls `consumer` until it acquires something; returns (partition, offset, delivery count).
fn acquire_some(consumer: &mut ShareConsumer) -> Vec<(u32, i64, u16)> {
    wait_for("records to acquire", || {
        let batch = consumer.poll(Duration::from_millis(100)).unwrap();
        let records: Vec<_> = batch
            .records()
            .map(|r| {
                let r = r.unwrap();
                (r.partition, r.offset, r.delivery_count)
            })
            .collect();
        (!records.is_empty()).then_some(records)
    })
}

/// A share consumer that closes leaves: what it held is offered again at once (not when the
/// locks end, a minute later here), and the group, without members, can be deleted at once.
#[test]
fn a_closed_share_member_leaves_and_gives_back_what_it_held() {
    let server = TestServer::start();
    let addr = server.addr();
    create_topic_at(addr, "held", 2);
    let mut client = Client::connect(addr).unwrap();
    let locked_for_a_minute = configure_group::Request {
        group: "leaving",
        lock_ms: Some(60_000),
        ..Default::default()
    };
    client.configure_share_group(&locked_for_a_minute).unwrap();
    produce(addr, "held", 0, 5, Some(0));
    let mut first = ShareConsumer::subscribe(addr, "leaving", "held", share_config()).unwrap();
    let mut held = acquire_some(&mut first);
    held.sort_unstable();
    assert_eq!(
        held,
        (0..5).map(|offset| (0, offset, 1)).collect::<Vec<_>>()
    );
    first.acknowledge(0, 0, AckType::Accept);
    let refused = client.delete_group("leaving").unwrap_err();
    assert_eq!(refused.code(), Some(ErrorCode::GroupNotEmpty), "{refused}");
    assert!(first.close().unwrap().is_empty());

    let description = client.describe_group("leaving").unwrap();
    assert!(description.members.is_empty(), "{:?}", description.members);
    let partition = description
        .share_partitions
        .iter()
        .find(|p| p.partition == 0)
        .expect("partition 0 is read by the group");
    assert_eq!((partition.start_offset, partition.acquired_records), (1, 0));
    let mut second = ShareConsumer::subscribe(addr, "leaving", "held", share_config()).unwrap();
    let mut again = acquire_some(&mut second);
    again.sort_unstable();
    assert_eq!(
        again,
        (1..5).map(|offset| (0, offset, 2)).collect::<Vec<_>>()
    );
    for (partition, offset, _) in again {
        second.acknowledge(partition, offset, AckType::Accept);
    }
    assert!(second.close().unwrap().is_empty());
    client.delete_group("leaving").unwrap();
}

#[test]
fn an_unacknowledged_record_comes_back_after_its_lease() {
    let server = TestServer::start();
    create_topic_at(server.addr(), "leases", 1);
    let mut client = Client::connect(server.addr()).unwrap();
    let config = client
        .configure_share_group(&configure_group::Request {
            group: "slow",
            lock_ms: Some(300),
            ..Default::default()
        })
        .unwrap();
    assert_eq!((config.lock_ms, config.delivery_limit), (300, 5));
    produce(server.addr(), "leases", 0, 1, None);
    let mut first =
        ShareConsumer::subscribe(server.addr(), "slow", "leases", share_config()).unwrap();
    assert_eq!(acquire_some(&mut first), [(0, 0, 1)]);
    // `first` never acknowledges: once the lock ends, another member gets the record.
    let mut second =
        ShareConsumer::subscribe(server.addr(), "slow", "leases", share_config()).unwrap();
    assert_eq!(acquire_some(&mut second), [(0, 0, 2)]);
    first.acknowledge(0, 0, AckType::Accept);
    let refused = first.flush_acks().unwrap();
    assert_eq!(refused.len(), 1);
    let code = refused[0].error.code();
    assert!(
        matches!(
            code,
            Some(ErrorCode::InvalidRecordState | ErrorCode::LeaseExpired)
        ),
        "{code:?}"
    );
    second.acknowledge(0, 0, AckType::Accept);
    assert!(second.flush_acks().unwrap().is_empty());
    let state = &client.describe_group("slow").unwrap().share_partitions[0];
    assert_eq!((state.start_offset, state.in_flight_records), (1, 0));
}

/// A server with `topic` (one partition), its dead-letter topic `<topic>.dlq`, and share
/// group `group` configured to copy archived records there.
fn server_with_dead_letters(topic: &str, group: &str) -> (TestServer, Client) {
    let server = TestServer::start();
    let dead_letter_topic = format!("{topic}.dlq");
    create_topic_at(server.addr(), topic, 1);
    create_topic_at(server.addr(), &dead_letter_topic, 1);
    let mut client = Client::connect(server.addr()).unwrap();
    client
        .configure_share_group(&configure_group::Request {
            group,
            dead_letter_topic: Some(&dead_letter_topic),
            ..Default::default()
        })
        .unwrap();
    (server, client)
}

#[test]
fn a_record_released_five_times_goes_to_the_dead_letter_topic() {
    let (server, mut client) = server_with_dead_letters("payments", "payers");
    let producer = Producer::connect(server.addr(), "payments", ProducerConfig::default()).unwrap();
    let headers: [(&str, Option<&[u8]>); 1] = [("trace", Some(b"abc"))];
    producer
        .send(
            &ProducerRecord::new(b"poison")
                .with_key(b"k")
                .with_headers(&headers),
        )
        .unwrap();
    producer.close().unwrap();
    let mut consumer =
        ShareConsumer::subscribe(server.addr(), "payers", "payments", share_config()).unwrap();
    for delivery in 1..=5 {
        assert_eq!(acquire_some(&mut consumer), [(0, 0, delivery)]);
        consumer.acknowledge(0, 0, AckType::Release);
        assert!(consumer.flush_acks().unwrap().is_empty());
    }
    assert!(consumer
        .poll(Duration::from_millis(200))
        .unwrap()
        .is_empty());
    let state = &client.describe_group("payers").unwrap().share_partitions[0];
    assert_eq!((state.start_offset, state.in_flight_records), (1, 0));

    let mut dlq = Consumer::connect(server.addr(), ConsumerConfig::default()).unwrap();
    dlq.assign_all("payments.dlq").unwrap();
    dlq.seek_all(SeekTo::Earliest).unwrap();
    let copied = wait_for("the dead-letter copy", || {
        let records: Vec<_> = dlq
            .poll(Duration::from_millis(100))
            .unwrap()
            .map(|r| {
                let r = r.unwrap();
                let headers: Vec<(String, String)> = r
                    .headers
                    .map(|h| {
                        let h = h.unwrap();
                        (
                            h.key.to_owned(),
                            String::from_utf8(h.value.unwrap().to_vec()).unwrap(),
                        )
                    })
                    .collect();
                (
                    r.key.map(<[u8]>::to_vec),
                    r.value.map(<[u8]>::to_vec),
                    headers,
                )
            })
            .collect();
        (!records.is_empty()).then_some(records)
    });
    assert_eq!(copied.len(), 1);
    let (key, value, headers) = &copied[0];
    assert_eq!(
        (key.as_deref(), value.as_deref()),
        (Some(&b"k"[..]), Some(&b"poison"[..]))
    );
    let header = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    assert_eq!(header("trace"), Some("abc"));
    assert_eq!(header(server::HEADER_TOPIC), Some("payments"));
    assert_eq!(header(server::HEADER_PARTITION), Some("0"));
    assert_eq!(header(server::HEADER_OFFSET), Some("0"));
    assert_eq!(header(server::HEADER_DELIVERY_COUNT), Some("5"));
    assert_eq!(
        header(server::HEADER_REASON),
        Some("delivery limit reached")
    );
    assert_eq!(header(server::HEADER_GROUP), Some("payers"));
}

/// A stored record stamped far ahead of the server's clock (written before produce bounded
/// timestamps, or under a larger `message_timestamp_after_max_ms`) is still copied to the
/// dead-letter topic when archived: the copy is the server's own write of a record it holds,
/// not a client's clock. Refused, it was tried again at every sweep and never archived.
#[test]
fn a_record_stamped_far_ahead_is_still_copied_to_the_dead_letter_topic() {
    let mut server = TestServer::start();
    server.message_timestamp_after_max_ms = u64::MAX;
    server.restart();
    create_topic_at(server.addr(), "future", 1);
    create_topic_at(server.addr(), "future.dlq", 1);
    let mut client = Client::connect(server.addr()).unwrap();
    client
        .configure_share_group(&configure_group::Request {
            group: "seers",
            dead_letter_topic: Some("future.dlq"),
            ..Default::default()
        })
        .unwrap();
    let day_ahead_ms = common::now_ms() + 24 * 3_600_000;
    let mut builder = ringlog_engine::batch::BatchBuilder::new(Vec::new(), day_ahead_ms);
    builder
        .push(day_ahead_ms, None, Some(b"from the future"), &[])
        .unwrap();
    client
        .produce(
            "future",
            0,
            ringlog_net::message::produce::Acks::Durable,
            builder.finish(),
        )
        .unwrap();
    drop(client);
    // Now with the default bound of an hour.
    server.message_timestamp_after_max_ms = ServerConfig::default().message_timestamp_after_max_ms;
    server.restart();
    let mut client = Client::connect(server.addr()).unwrap();
    let mut consumer =
        ShareConsumer::subscribe(server.addr(), "seers", "future", share_config()).unwrap();
    assert_eq!(acquire_some(&mut consumer), [(0, 0, 1)]);
    consumer.acknowledge(0, 0, AckType::Reject);
    assert!(consumer.flush_acks().unwrap().is_empty());
    assert_eq!(
        dead_letter_offsets(server.addr(), "future.dlq", 1),
        BTreeSet::from([0])
    );
    wait_for("the record archived", || {
        let state = &client.describe_group("seers").unwrap().share_partitions[0];
        ((state.start_offset, state.in_flight_records) == (1, 0)).then_some(())
    });
}

/// Sets `topic`'s retention to one byte (every segment but the active one goes) and returns
/// partition 0's log start offset once retention moved it.
fn retain_only_the_active_segment(client: &mut Client, topic: &str) -> i64 {
    client
        .alter_topic(&alter_topic::Request {
            name: topic,
            retention_ms: None,
            retention_bytes: Some(1),
            partitions: None,
        })
        .unwrap();
    wait_for("retention", || {
        let metadata = client.metadata(&[topic]).unwrap();
        let start = metadata[0].partitions[0].log_start_offset;
        (start > 0).then_some(start)
    })
}

/// The source offsets of the records in dead-letter topic `topic` once there are `count`.
fn dead_letter_offsets(addr: SocketAddr, topic: &str, count: usize) -> BTreeSet<i64> {
    let mut dlq = Consumer::connect(addr, ConsumerConfig::default()).unwrap();
    dlq.assign_all(topic).unwrap();
    dlq.seek_all(SeekTo::Earliest).unwrap();
    let mut offsets = BTreeSet::new();
    wait_for("the dead-letter copies", || {
        for record in dlq.poll(Duration::from_millis(100)).unwrap() {
            let record = record.unwrap();
            let offset = record
                .headers
                .map(|h| h.unwrap())
                .find(|h| h.key == server::HEADER_OFFSET)
                .and_then(|h| std::str::from_utf8(h.value?).ok()?.parse().ok())
                .unwrap();
            offsets.insert(offset);
        }
        (offsets.len() >= count).then_some(())
    });
    offsets
}

#[test]
fn records_accepted_after_retention_moved_the_start_stay_accepted_after_a_restart() {
    let mut server = TestServer::start_checking_retention_every(10);
    create_topic_at(server.addr(), "trimmed", 1);
    let mut share =
        ShareConsumer::subscribe(server.addr(), "trimmers", "trimmed", share_config()).unwrap();
    // The share partition starts at 0, before any record.
    assert!(share.poll(Duration::from_millis(100)).unwrap().is_empty());
    let mut client = Client::connect(server.addr()).unwrap();
    assert_eq!(
        client.describe_group("trimmers").unwrap().share_partitions[0].start_offset,
        0
    );
    produce(server.addr(), "trimmed", 0, 200_000, Some(0));
    let log_start = retain_only_the_active_segment(&mut client, "trimmed");
    // Further from the old start than a replay of the state file keeps records.
    assert!(log_start > 100_000, "log start {log_start}");
    let accepted = acquire_some(&mut share);
    for (partition, offset, _) in &accepted {
        assert!(*offset >= log_start, "{offset} < {log_start}");
        share.acknowledge(*partition, *offset, AckType::Accept);
    }
    assert!(share.close().unwrap().is_empty(), "the accepts are durable");
    let last_accepted = accepted.iter().map(|r| r.1).max().unwrap();

    server.restart();
    let mut client = Client::connect(server.addr()).unwrap();
    let state = &client.describe_group("trimmers").unwrap().share_partitions[0];
    assert_eq!(state.start_offset, last_accepted + 1, "{state:?}");
    let mut share =
        ShareConsumer::subscribe(server.addr(), "trimmers", "trimmed", share_config()).unwrap();
    for (_, offset, delivery) in acquire_some(&mut share) {
        assert!(offset > last_accepted, "accepted record {offset} came back");
        assert_eq!(delivery, 1);
    }
}

/// A batch damaged on disk (the first of a closed segment, which recovery checks only from its
/// last index entry) can never be delivered: the share group archives its records and goes on
/// with the rest instead of stopping every member at it.
#[test]
fn a_share_group_archives_a_batch_damaged_on_disk_and_goes_on() {
    let mut server = TestServer::start();
    create_topic_at(server.addr(), "damaged", 1);
    let mut share =
        ShareConsumer::subscribe(server.addr(), "readers", "damaged", share_config()).unwrap();
    // The share partition starts at 0, before any record.
    assert!(share.poll(Duration::from_millis(100)).unwrap().is_empty());
    drop(share);
    // One 400 KB record per batch in 1 MiB segments: two batches per segment.
    let batches: Vec<Vec<u8>> = (0..4u8)
        .map(|n| {
            let mut builder =
                ringlog_engine::batch::BatchBuilder::new(Vec::new(), 1_700_000_000_000);
            let value = vec![b'a' + n; 400_000];
            builder
                .push(1_700_000_000_000, None, Some(&value), &[])
                .unwrap();
            builder.finish().to_vec()
        })
        .collect();
    let mut client = Client::connect(server.addr()).unwrap();
    for batch in &batches {
        client
            .produce(
                "damaged",
                0,
                ringlog_net::message::produce::Acks::Durable,
                batch,
            )
            .unwrap();
    }
    drop(client);
    server.handle.take().unwrap().shutdown();
    let segment = server.dir.path().join("damaged/0/00000000000000000000.log");
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&segment)
        .unwrap();
    let damaged_at = batches[0].len() as u64 / 2;
    std::os::unix::fs::FileExt::write_all_at(&file, b"?", damaged_at).unwrap();
    drop(file);
    server.restart();

    let mut share =
        ShareConsumer::subscribe(server.addr(), "readers", "damaged", share_config()).unwrap();
    let mut delivered = BTreeSet::new();
    wait_for("the records after the damaged batch", || {
        for (partition, offset, _) in acquire_some(&mut share) {
            share.acknowledge(partition, offset, AckType::Accept);
            delivered.insert(offset);
        }
        assert!(share.flush_acks().unwrap().is_empty());
        (delivered.len() >= 3).then_some(())
    });
    assert_eq!(delivered, BTreeSet::from([1, 2, 3]));
    let mut client = Client::connect(server.addr()).unwrap();
    let state = &client.describe_group("readers").unwrap().share_partitions[0];
    assert_eq!(
        (state.start_offset, state.in_flight_records),
        (4, 0),
        "{state:?}"
    );
}

#[test]
fn records_archived_after_retention_reach_the_dead_letter_topic_from_the_log_start_on() {
    let server = TestServer::start_checking_retention_every(10);
    create_topic_at(server.addr(), "orders", 1);
    create_topic_at(server.addr(), "orders.dlq", 1);
    let mut client = Client::connect(server.addr()).unwrap();
    let mut configure = |lock_ms| {
        client
            .configure_share_group(&configure_group::Request {
                group: "packers",
                lock_ms: Some(lock_ms),
                delivery_limit: Some(1),
                dead_letter_topic: Some("orders.dlq"),
                ..Default::default()
            })
            .unwrap();
    };
    configure(60_000);
    // Ten records of 300 kB in 1 MiB segments: retention leaves only the last few.
    let producer = Producer::connect(server.addr(), "orders", ProducerConfig::default()).unwrap();
    let value = vec![b'o'; 300_000];
    for _ in 0..10 {
        producer
            .send(&ProducerRecord::new(&value).with_partition(0))
            .unwrap();
    }
    producer.close().unwrap();
    // All ten acquired on their only allowed delivery, and never acknowledged.
    let mut consumer =
        ShareConsumer::subscribe(server.addr(), "packers", "orders", share_config()).unwrap();
    let mut acquired = BTreeSet::new();
    while acquired.len() < 10 {
        for (_, offset, delivery) in acquire_some(&mut consumer) {
            assert_eq!(delivery, 1);
            acquired.insert(offset);
        }
    }
    // One renewal with a short lock ends all ten locks at once, long before the lease timer
    // (set for the first lock) looks: the next fetch's sweep is the one that archives them.
    configure(10);
    for offset in acquired {
        consumer.acknowledge(0, offset, AckType::Renew);
    }
    assert!(consumer.flush_acks().unwrap().is_empty());
    let renewed_at = Instant::now();
    let log_start = retain_only_the_active_segment(&mut client, "orders");
    assert!(log_start < 10, "log start {log_start}");
    wait_for("the renewed locks to end", || {
        (renewed_at.elapsed() > Duration::from_millis(20)).then_some(())
    });
    let state = &client.describe_group("packers").unwrap().share_partitions[0];
    assert_eq!(state.acquired_records, 10, "nothing swept yet: {state:?}");
    assert!(consumer
        .poll(Duration::from_millis(100))
        .unwrap()
        .is_empty());
    // Every archived record still in the log is copied.
    let copied = dead_letter_offsets(server.addr(), "orders.dlq", 10 - log_start as usize);
    assert_eq!(copied, (log_start..10).collect::<BTreeSet<i64>>());
}

#[test]
fn a_dead_letter_copy_that_failed_is_made_at_a_later_fetch() {
    let (server, mut client) = server_with_dead_letters("invoices", "billers");
    produce(server.addr(), "invoices", 0, 1, Some(0));
    // The copy of the rejected record fails: its dead-letter topic is gone.
    client.delete_topic("invoices.dlq").unwrap();
    let mut consumer =
        ShareConsumer::subscribe(server.addr(), "billers", "invoices", share_config()).unwrap();
    assert_eq!(acquire_some(&mut consumer), [(0, 0, 1)]);
    consumer.acknowledge(0, 0, AckType::Reject);
    assert!(consumer.flush_acks().unwrap().is_empty());
    // Not archived while it has no copy: it holds the start back.
    let state = &client.describe_group("billers").unwrap().share_partitions[0];
    assert_eq!((state.start_offset, state.in_flight_records), (0, 1));
    create_topic_at(server.addr(), "invoices.dlq", 1);
    // The next fetch copies it; the record is never delivered again.
    assert!(consumer
        .poll(Duration::from_millis(100))
        .unwrap()
        .is_empty());
    let copied = dead_letter_offsets(server.addr(), "invoices.dlq", 1);
    assert_eq!(copied, BTreeSet::from([0]));
    wait_for("the start to pass the archived record", || {
        let state = client.describe_group("billers").unwrap().share_partitions[0].clone();
        (state.start_offset == 1 && state.in_flight_records == 0).then_some(())
    });
}

/// Commits every offset of a 2-partition topic of 20 records with a group member, and with a
/// share consumer accepts offsets below 5 of each partition, leaving the rest acquired.
fn commit_and_accept_some(addr: SocketAddr) {
    let settings = configure_group::Request {
        group: "mailers",
        lock_ms: Some(20_000),
        ..Default::default()
    };
    Client::connect(addr)
        .unwrap()
        .configure_share_group(&settings)
        .unwrap();
    let mut member = GroupConsumer::subscribe(addr, "indexer", "durable", group_config()).unwrap();
    read_group(&mut member, 20);
    member.commit().unwrap();
    let mut share = ShareConsumer::subscribe(addr, "mailers", "durable", share_config()).unwrap();
    let mut acquired = 0;
    while acquired < 20 {
        for (partition, offset, _) in acquire_some(&mut share) {
            acquired += 1;
            if offset < 5 {
                share.acknowledge(partition, offset, AckType::Accept);
            }
        }
    }
    assert!(
        share.flush_acks().unwrap().is_empty(),
        "the accepts were answered"
    );
}

/// After a restart: the commits are there, and only the unaccepted records come back.
fn check_after_restart(addr: SocketAddr) {
    let mut client = Client::connect(addr).unwrap();
    let offsets = client.fetch_offsets("indexer", &[]).unwrap();
    let committed: Vec<(u32, i64)> = offsets
        .iter()
        .map(|o| (o.partition, o.committed_offset))
        .collect();
    assert_eq!(committed.len(), 2);
    assert!(
        committed.iter().all(|(_, offset)| *offset == 10),
        "{committed:?}"
    );
    let settings = client
        .describe_group("mailers")
        .unwrap()
        .share_config
        .unwrap();
    assert_eq!(settings.lock_ms, 20_000, "group settings survive too");
    let mut share = ShareConsumer::subscribe(addr, "mailers", "durable", share_config()).unwrap();
    let mut redelivered = BTreeSet::new();
    while redelivered.len() < 10 {
        for (partition, offset, _) in acquire_some(&mut share) {
            assert!(
                offset >= 5,
                "accepted record {partition}/{offset} came back"
            );
            assert!(
                redelivered.insert((partition, offset)),
                "{partition}/{offset} twice"
            );
            share.acknowledge(partition, offset, AckType::Accept);
        }
    }
    assert!(share.poll(Duration::from_millis(200)).unwrap().is_empty());
    assert!(share.close().unwrap().is_empty());
}

#[test]
fn restart_loses_no_ack_and_no_commit() {
    let mut server = TestServer::start();
    create_topic_at(server.addr(), "durable", 2);
    produce(server.addr(), "durable", 0, 10, Some(0));
    produce(server.addr(), "durable", 10, 10, Some(1));
    commit_and_accept_some(server.addr());
    server.restart();
    check_after_restart(server.addr());
}

/// The `ringlog` binary serving a data directory, killed with SIGKILL when dropped.
struct ChildServer {
    child: Child,
    addr: SocketAddr,
}

impl ChildServer {
    fn start(dir: &Path) -> ChildServer {
        let mut child = Command::new(env!("CARGO_BIN_EXE_ringlog"))
            .args([
                "serve",
                "--shards",
                "2",
                "--listen",
                "127.0.0.1:0",
                "--data-dir",
            ])
            .arg(dir)
            .env_remove("RINGLOG_CONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).unwrap();
        // "ringlog serving on ADDR with N shards, data in DIR"
        let addr = line
            .strip_prefix("ringlog serving on ")
            .and_then(|rest| rest.split(' ').next())
            .and_then(|addr| addr.parse().ok())
            .unwrap_or_else(|| panic!("unexpected first line: {line:?}"));
        ChildServer { child, addr }
    }

    /// kill -9: no flush, no shutdown.
    fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for ChildServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn kill_9_loses_no_ack_and_no_commit() {
    let dir = tempfile::tempdir().unwrap();
    let server = ChildServer::start(dir.path());
    create_topic_at(server.addr, "durable", 2);
    produce(server.addr, "durable", 0, 10, Some(0));
    produce(server.addr, "durable", 10, 10, Some(1));
    commit_and_accept_some(server.addr);
    server.kill();
    let server = ChildServer::start(dir.path());
    check_after_restart(server.addr);
    server.kill();
}

/// A group member reads some records and commits, the server restarts in place (by SIGTERM,
/// or SIGKILL with `kill`) and more records come: the same member reads on, with no poll
/// failing. Nothing is skipped; only records after its last commit may come twice (at least
/// once, as in Kafka: the restarted coordinator may have forgotten the member, which then
/// joins again and reads from the group's commits).
fn a_group_member_reads_on_across_a_restart(kill: bool) {
    let mut server = common::TestServer::start(2);
    let addr: SocketAddr = server.addr().parse().unwrap();
    create_topic_at(addr, "journal", 4);
    produce(addr, "journal", 0, 40, None);
    let mut member = GroupConsumer::subscribe(addr, "auditors", "journal", group_config()).unwrap();
    let mut got = read_group(&mut member, 10);
    member.commit().unwrap();
    let committed: HashMap<u32, i64> = member
        .assignment()
        .iter()
        .map(|&p| (p, member.position(p).unwrap_or(0)))
        .collect();
    if kill {
        server.kill_and_restart_in_place();
    } else {
        server.restart_in_place();
    }
    produce(addr, "journal", 40, 40, None);
    let mut seen: HashSet<String> = got.iter().map(|(_, _, v)| v.clone()).collect();
    // The restarted coordinator forgot the member: a commit is refused (UnknownMember) until
    // the next poll has joined again, which reads from the group's commits.
    wait_for("every record after the restart, and a commit", || {
        for record in member.poll(Duration::from_millis(100)).unwrap() {
            let record = as_tuple(record.unwrap());
            seen.insert(record.2.clone());
            got.push(record);
        }
        (seen.len() == 80 && member.commit().is_ok()).then_some(())
    });
    let expected: HashSet<String> = (0..80).map(|n| n.to_string()).collect();
    assert_eq!(seen, expected);
    let mut returned = HashSet::new();
    for (partition, offset, value) in &got {
        if !returned.insert((*partition, *offset)) {
            let commit = committed.get(partition).copied().unwrap_or(0);
            assert!(
                *offset >= commit,
                "{value} at {partition}/{offset} came again, before the commit at {commit}"
            );
        }
    }
    member.close().unwrap();
}

#[test]
fn a_group_member_reads_on_across_a_restart_in_place() {
    a_group_member_reads_on_across_a_restart(false);
}

#[test]
fn a_group_member_reads_on_across_a_kill_and_restart_in_place() {
    a_group_member_reads_on_across_a_restart(true);
}

/// Runs the `ringlog` binary against `addr`; returns its stdout, failing on a non-zero exit.
fn cli(addr: SocketAddr, args: &[&str]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_ringlog"))
        .args(args)
        .env("RINGLOG_SERVER", addr.to_string())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "ringlog {args:?} failed: {stderr}");
    String::from_utf8(output.stdout).unwrap()
}

/// The whitespace-separated cells of the table row whose first cells are `first`.
fn row<'a>(text: &'a str, first: &[&str]) -> Vec<&'a str> {
    text.lines()
        .map(|line| line.split_whitespace().collect::<Vec<_>>())
        .find(|cells| cells.starts_with(first))
        .unwrap_or_else(|| panic!("no row {first:?} in:\n{text}"))
}

#[test]
fn cli_reads_as_group_and_share_member() {
    let server = TestServer::start();
    let addr = server.addr();
    create_topic_at(addr, "cli", 2);
    produce(addr, "cli", 0, 10, Some(0));
    let args = [
        "consume", "cli", "--group", "ops", "--from", "earliest", "--count", "4",
    ];
    assert_eq!(cli(addr, &args), "0\n1\n2\n3\n");
    let described = cli(addr, &["group", "describe", "ops"]);
    assert_eq!(row(&described, &["cli", "0"]), ["cli", "0", "4", "10", "6"]);
    let rest = cli(addr, &["consume", "cli", "--group", "ops", "--count", "6"]);
    assert_eq!(
        rest, "4\n5\n6\n7\n8\n9\n",
        "the group goes on where it stopped"
    );
    cli(
        addr,
        &[
            "group", "reset", "ops", "--topic", "cli", "--to", "earliest",
        ],
    );
    let described = cli(addr, &["group", "describe", "ops"]);
    assert_eq!(
        row(&described, &["cli", "0"]),
        ["cli", "0", "0", "10", "10"]
    );
    // kafka-consumer-groups --delete-offsets: the offset goes, and the group reads the
    // partition from where its reset says (earliest here) again.
    let args = ["group", "delete-offsets", "ops", "--topic", "cli"];
    assert_eq!(
        cli(addr, &args),
        "deleted the committed offsets of group ops on cli/0, cli/1\n"
    );
    let described = cli(addr, &["group", "describe", "ops"]);
    let offsets_left = described.lines().filter(|line| line.starts_with("cli "));
    assert_eq!(offsets_left.count(), 0, "{described}");
    let unknown = Command::new(env!("CARGO_BIN_EXE_ringlog"))
        .args(["group", "delete-offsets", "ops", "--topic", "nope"])
        .env("RINGLOG_SERVER", addr.to_string())
        .output()
        .unwrap();
    assert!(!unknown.status.success());
    assert_eq!(
        String::from_utf8_lossy(&unknown.stderr),
        "error: topic nope does not exist\n"
    );
    let again = [
        "consume", "cli", "--group", "ops", "--from", "earliest", "--count", "2",
    ];
    assert_eq!(cli(addr, &again), "0\n1\n");

    let configured = cli(addr, &["group", "config", "queue", "--lock-ms", "1000"]);
    assert!(configured.contains("lock_ms 1000"), "{configured}");
    let shared = cli(
        addr,
        &["consume", "cli", "--share-group", "queue", "--count", "10"],
    );
    assert_eq!(shared.lines().count(), 10);
    let described = cli(addr, &["group", "describe", "queue"]);
    assert_eq!(
        row(&described, &["cli", "0"]),
        ["cli", "0", "10", "10", "0", "0"]
    );
    let listed = cli(addr, &["group", "list"]);
    assert_eq!(row(&listed, &["ops"]), ["ops", "consumer", "Empty", "0"]);
    assert_eq!(row(&listed, &["queue"])[1], "share");
    assert_eq!(
        cli(addr, &["group", "delete", "ops"]),
        "deleted group ops\n"
    );
    let listed = cli(addr, &["group", "list"]);
    assert!(
        !listed.lines().any(|line| line.starts_with("ops ")),
        "{listed}"
    );
}

#[test]
fn a_group_reading_a_topic_that_gains_partitions_rebalances_onto_them() {
    let mut server = TestServer::start();
    let addr = server.addr();
    create_topic_at(addr, "growing", 2);
    produce(addr, "growing", 0, 4, None);
    let mut member = GroupConsumer::subscribe(addr, "g", "growing", group_config()).unwrap();
    assert_eq!(read_group(&mut member, 4).len(), 4);
    assert_eq!(member.assignment(), [0, 1]);
    member.commit().unwrap();

    let mut client = Client::connect(addr).unwrap();
    let grow = alter_topic::Request {
        name: "growing",
        partitions: Some(5),
        ..alter_topic::Request::default()
    };
    assert_eq!(client.alter_topic(&grow).unwrap().partitions, 5);
    let shrink = alter_topic::Request {
        partitions: Some(3),
        ..grow
    };
    let error = client.alter_topic(&shrink).unwrap_err();
    assert_eq!(error.code(), Some(ErrorCode::InvalidConfig));
    // A producer connecting now sees five partitions; the member rejoins at its next
    // heartbeat and reads the new one.
    produce(addr, "growing", 100, 1, Some(4));
    assert_eq!(read_group(&mut member, 1), [(4, 0, "100".to_owned())]);
    assert_eq!(member.assignment(), [0, 1, 2, 3, 4]);
    member.close().unwrap();

    server.restart();
    let addr = server.addr();
    let topics = Client::connect(addr)
        .unwrap()
        .metadata(&["growing"])
        .unwrap();
    let high_watermarks: Vec<i64> = topics[0]
        .partitions
        .iter()
        .map(|p| p.high_watermark)
        .collect();
    assert_eq!(high_watermarks.len(), 5);
    assert_eq!(high_watermarks[4], 1, "{high_watermarks:?}");
    assert_eq!(high_watermarks.iter().sum::<i64>(), 5);
}

/// Like [`read_group`], while the topic is being deleted and created again: fetches of the
/// old topic's partitions fail until the member has rejoined, and are retried.
fn read_group_across_recreation(
    consumer: &mut GroupConsumer,
    count: usize,
) -> Vec<(u32, i64, String)> {
    let mut out = Vec::new();
    wait_for("group records of the recreated topic", || {
        let records = match consumer.poll(Duration::from_millis(100)) {
            Ok(records) => records,
            Err(error) => {
                let transient = [ErrorCode::UnknownTopic, ErrorCode::UnknownPartition];
                assert!(
                    error.code().is_some_and(|code| transient.contains(&code)),
                    "{error}"
                );
                return None;
            }
        };
        for record in records {
            out.push(as_tuple(record.unwrap()));
        }
        (out.len() >= count).then_some(())
    });
    out
}

#[test]
fn a_group_follows_its_topic_when_it_is_deleted_and_created_again() {
    let server = TestServer::start();
    let addr = server.addr();
    create_topic_at(addr, "reborn", 2);
    produce(addr, "reborn", 0, 1, Some(0));
    produce(addr, "reborn", 1, 1, Some(1));
    // Without automatic commits, so that no position of the old topic is committed to the new.
    let config = GroupConsumerConfig {
        auto_commit: false,
        ..group_config()
    };
    let mut member = GroupConsumer::subscribe(addr, "follower", "reborn", config).unwrap();
    assert_eq!(read_group(&mut member, 2).len(), 2);
    assert_eq!(member.assignment(), [0, 1]);
    let mut client = Client::connect(addr).unwrap();

    // Created again with more partitions: the member is rebalanced onto all of them.
    client.delete_topic("reborn").unwrap();
    create_topic_at(addr, "reborn", 4);
    produce(addr, "reborn", 100, 1, Some(3));
    assert_eq!(
        read_group_across_recreation(&mut member, 1),
        [(3, 0, "100".to_owned())]
    );
    assert_eq!(member.assignment(), [0, 1, 2, 3]);

    // Created again with fewer: the member no longer holds partitions that are gone.
    client.delete_topic("reborn").unwrap();
    create_topic_at(addr, "reborn", 1);
    produce(addr, "reborn", 200, 1, Some(0));
    assert_eq!(
        read_group_across_recreation(&mut member, 1),
        [(0, 0, "200".to_owned())]
    );
    assert_eq!(member.assignment(), [0]);
    let description = client.describe_group("follower").unwrap();
    assert_eq!(description.members.len(), 1);
    assert_eq!(
        description.members[0].assignment,
        [("reborn".to_owned(), vec![0])]
    );
    member.close().unwrap();
}

#[test]
fn a_commit_for_a_deleted_topic_does_not_land_on_the_topic_created_again() {
    let server = TestServer::start();
    let addr = server.addr();
    create_topic_at(addr, "renewed", 1);
    produce(addr, "renewed", 0, 3, Some(0));
    let mut member = Client::connect(addr).unwrap();
    let topics = ["renewed"];
    let joined = member
        .join_group(&join_group::Request {
            group: "keeper",
            member_id: "",
            client_id: "keeper",
            topics: &topics,
            session_timeout_ms: 30_000,
            rebalance_timeout_ms: 30_000,
            instance_id: "",
        })
        .unwrap();
    assert_eq!(joined.assignment, [("renewed".to_owned(), vec![0])]);

    // Deleted and created again before the member hears of it; it then commits what it read
    // of the old topic, in the generation it was assigned that topic in.
    let mut client = Client::connect(addr).unwrap();
    client.delete_topic("renewed").unwrap();
    create_topic_at(addr, "renewed", 1);
    produce(addr, "renewed", 100, 6, Some(0));
    let partitions = [PartitionOffset {
        partition: 0,
        offset: 3,
    }];
    let commit = [CommitTopic {
        topic: "renewed",
        partitions: &partitions,
    }];
    let outcome = member.commit_offsets(&offset_commit::Request {
        group: "keeper",
        member_id: &joined.member_id,
        generation: joined.generation,
        topics: &commit,
        instance_id: "",
    });
    let refused = match &outcome {
        Err(_) => true,
        Ok(results) => results.iter().all(|r| r.result.is_err()),
    };
    assert!(
        refused,
        "a commit for the deleted topic was taken: {outcome:?}"
    );
    // The new topic's records are all still to be read by the group.
    let committed = lags(&mut client, "keeper");
    assert!(
        committed.iter().all(|&(_, offset, _)| offset < 0),
        "{committed:?}"
    );
}

#[test]
fn a_group_member_reads_every_record_of_its_topic_created_again() {
    let server = TestServer::start();
    let addr = server.addr();
    create_topic_at(addr, "renewed", 1);
    produce(addr, "renewed", 0, 3, Some(0));
    // Automatic commits, as by default: the member commits its positions before it rejoins.
    let mut member = GroupConsumer::subscribe(addr, "keeper", "renewed", group_config()).unwrap();
    assert_eq!(read_group(&mut member, 3).len(), 3);

    // Deleted and created again before the member hears of it.
    let mut client = Client::connect(addr).unwrap();
    client.delete_topic("renewed").unwrap();
    create_topic_at(addr, "renewed", 1);
    produce(addr, "renewed", 100, 6, Some(0));

    // Every record of the new topic reaches the group (some may come twice: the member may
    // read from its old position until it learns of the rebalance).
    let mut seen = BTreeSet::new();
    wait_for("every record of the topic created again", || {
        for (_, _, value) in read_group_across_recreation(&mut member, 1) {
            seen.insert(value);
        }
        (seen.len() == 6).then_some(())
    });
    member.close().unwrap();
}

#[test]
fn a_running_producer_and_share_member_use_partitions_added_to_their_topic() {
    let server = TestServer::start();
    let addr = server.addr();
    create_topic_at(addr, "widening", 1);
    let producer_config = ProducerConfig {
        linger_ms: 1,
        metadata_max_age_ms: 20,
        ..ProducerConfig::default()
    };
    let producer = Producer::connect(addr, "widening", producer_config).unwrap();
    let share_config = ShareConsumerConfig {
        metadata_max_age_ms: 20,
        ..share_config()
    };
    let mut member = ShareConsumer::subscribe(addr, "wide", "widening", share_config).unwrap();
    assert_eq!((producer.partitions(), member.partitions()), (1, 1));
    assert!(producer
        .send(&ProducerRecord::new(b"early").with_partition(2))
        .is_err());

    let grow = alter_topic::Request {
        name: "widening",
        partitions: Some(3),
        ..alter_topic::Request::default()
    };
    Client::connect(addr).unwrap().alter_topic(&grow).unwrap();
    wait_for("the producer to learn of the new partitions", || {
        (producer.partitions() == 3).then_some(())
    });
    // A key Kafka's partitioner sends to partition 2 of 3 goes there now.
    let key = (0..)
        .map(|n| format!("key-{n}"))
        .find(|key| partition_for_key(key.as_bytes(), 3) == 2)
        .unwrap();
    let keyed = producer
        .send(&ProducerRecord::new(b"keyed").with_key(key.as_bytes()))
        .unwrap();
    let explicit = producer
        .send(&ProducerRecord::new(b"explicit").with_partition(1))
        .unwrap();
    producer.flush().unwrap();
    assert_eq!(
        keyed.wait().unwrap(),
        RecordMetadata {
            partition: 2,
            offset: 0
        }
    );
    assert_eq!(
        explicit.wait().unwrap(),
        RecordMetadata {
            partition: 1,
            offset: 0
        }
    );
    producer.close().unwrap();

    // The share member, subscribed when there was one partition, reads both new ones.
    let mut acquired = BTreeSet::new();
    wait_for("the share member to read the new partitions", || {
        for (partition, offset, _) in acquire_some(&mut member) {
            member.acknowledge(partition, offset, AckType::Accept);
            acquired.insert((partition, offset));
        }
        (acquired.len() == 2).then_some(())
    });
    assert_eq!(acquired, BTreeSet::from([(1, 0), (2, 0)]));
    assert_eq!(member.partitions(), 3);
    assert!(member.close().unwrap().is_empty());
}

/// Names of the groups the server lists.
fn group_names(client: &mut Client) -> BTreeSet<String> {
    client
        .list_groups()
        .unwrap()
        .into_iter()
        .map(|g| g.group)
        .collect()
}

#[test]
fn a_group_without_members_is_deleted_with_its_offsets() {
    let mut server = TestServer::start();
    let addr = server.addr();
    create_topic_at(addr, "events", 2);
    produce(addr, "events", 0, 10, None);
    let mut member = GroupConsumer::subscribe(addr, "old", "events", group_config()).unwrap();
    assert_eq!(read_group(&mut member, 10).len(), 10);
    member.commit().unwrap();
    let mut client = Client::connect(addr).unwrap();
    let refused = client.delete_group("old").unwrap_err();
    assert_eq!(refused.code(), Some(ErrorCode::GroupNotEmpty), "{refused}");
    member.close().unwrap();
    client.delete_group("old").unwrap();
    let gone = client.delete_group("old").unwrap_err();
    assert_eq!(gone.code(), Some(ErrorCode::UnknownGroup), "{gone}");
    let gone = client.describe_group("old").unwrap_err();
    assert_eq!(gone.code(), Some(ErrorCode::UnknownGroup), "{gone}");

    // A share group nobody fetched from goes; one a member is reading stays until the
    // member closes (and so leaves it).
    let idle = configure_group::Request {
        group: "idle-share",
        ..configure_group::Request::default()
    };
    client.configure_share_group(&idle).unwrap();
    let mut reader =
        ShareConsumer::subscribe(addr, "busy-share", "events", share_config()).unwrap();
    for (partition, offset, _) in acquire_some(&mut reader) {
        reader.acknowledge(partition, offset, AckType::Accept);
    }
    assert!(reader.flush_acks().unwrap().is_empty());
    let refused = client.delete_group("busy-share").unwrap_err();
    assert_eq!(refused.code(), Some(ErrorCode::GroupNotEmpty), "{refused}");
    client.delete_group("idle-share").unwrap();
    assert_eq!(
        group_names(&mut client),
        BTreeSet::from(["busy-share".to_owned()])
    );
    assert!(reader.close().unwrap().is_empty());

    // Deleted for good: after a restart a group of the same name starts without offsets
    // (from the earliest record, as the member's auto_offset_reset says).
    server.restart();
    let addr = server.addr();
    let mut client = Client::connect(addr).unwrap();
    assert_eq!(
        group_names(&mut client),
        BTreeSet::from(["busy-share".to_owned()])
    );
    let mut member = GroupConsumer::subscribe(addr, "old", "events", group_config()).unwrap();
    assert_eq!(read_group(&mut member, 10).len(), 10);
    member.close().unwrap();
}

#[test]
fn groups_without_members_or_commits_expire_after_group_retention_ms() {
    let dir = tempfile::tempdir().unwrap();
    let config = ServerConfig {
        data_dir: dir.path().to_path_buf(),
        listen: "127.0.0.1:0".parse().unwrap(),
        shards: Some(2),
        cache_bytes_per_shard: 8 << 20,
        group_retention_ms: 1_000,
        ..ServerConfig::default()
    };
    let server = Server::start(config).unwrap();
    let addr = server.local_addr();
    create_topic_at(addr, "kept", 2);
    produce(addr, "kept", 0, 4, None);
    let mut idle = GroupConsumer::subscribe(addr, "idle", "kept", group_config()).unwrap();
    assert_eq!(read_group(&mut idle, 4).len(), 4);
    idle.close().unwrap();
    let mut busy = GroupConsumer::subscribe(addr, "busy", "kept", group_config()).unwrap();
    assert_eq!(read_group(&mut busy, 4).len(), 4);
    let mut client = Client::connect(addr).unwrap();
    admin_commit(&mut client, "resetter", "kept", &[(0, 0)]);
    let resetter_made = Instant::now();
    // "idle" goes; "busy" keeps a member, "committer" (manual assignment) keeps committing
    // and "resetter" keeps being reset (for twice the retention), so those stay.
    let mut commits = 0;
    wait_for("the idle group to expire", || {
        busy.poll(Duration::from_millis(10)).unwrap();
        commits += 1;
        admin_commit(&mut client, "committer", "kept", &[(0, commits)]);
        let reset = client.reset_group_offsets("resetter", "kept", &[], OffsetSpec::Earliest);
        assert!(reset.is_ok(), "a group being reset expired: {reset:?}");
        let idle_gone = !group_names(&mut client).contains("idle");
        (idle_gone && resetter_made.elapsed() > Duration::from_secs(2)).then_some(())
    });
    let names = group_names(&mut client);
    assert!(
        ["busy", "committer", "resetter"]
            .iter()
            .all(|group| names.contains(*group)),
        "{names:?}"
    );
    let gone = client.describe_group("idle").unwrap_err();
    assert_eq!(gone.code(), Some(ErrorCode::UnknownGroup), "{gone}");
    busy.close().unwrap();
    server.shutdown();
}

/// Runs the `ringlog` binary against `addr`; returns its stdout and stderr, failing on a
/// non-zero exit.
fn cli_with_stderr(addr: SocketAddr, args: &[&str]) -> (String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_ringlog"))
        .args(args)
        .env("RINGLOG_SERVER", addr.to_string())
        .output()
        .unwrap();
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(output.status.success(), "ringlog {args:?} failed: {stderr}");
    (String::from_utf8(output.stdout).unwrap(), stderr)
}

#[test]
fn a_group_behind_retention_reads_on_and_is_told_what_it_skipped() {
    const RETENTION_BYTES: u64 = 2 << 20;
    let dir = tempfile::tempdir().unwrap();
    let config = ServerConfig {
        data_dir: dir.path().to_path_buf(),
        listen: "127.0.0.1:0".parse().unwrap(),
        shards: Some(2),
        cache_bytes_per_shard: 8 << 20,
        retention_bytes: Some(RETENTION_BYTES),
        retention_check_interval_ms: 10,
        ..ServerConfig::default()
    };
    let server = Server::start(config).unwrap();
    let addr = server.local_addr();
    // No retention of its own: the server's default applies.
    create_topic_at(addr, "old", 1);
    let described = cli(addr, &["topic", "describe", "old"]);
    assert!(
        described.contains(&format!("retention_bytes {RETENTION_BYTES}")),
        "{described}"
    );
    produce(addr, "old", 0, 10, Some(0));
    let args = [
        "consume", "old", "--group", "late", "--from", "earliest", "--count", "4",
    ];
    assert_eq!(cli(addr, &args), "0\n1\n2\n3\n");

    // 8 MiB more in 1 MiB segments: retention deletes the segment holding offset 4.
    let producer = Producer::connect(addr, "old", ProducerConfig::default()).unwrap();
    let value = vec![b'x'; 1000];
    for _ in 0..8 * 1024 {
        producer.send(&ProducerRecord::new(&value)).unwrap();
    }
    producer.close().unwrap();
    let mut client = Client::connect(addr).unwrap();
    let log_start = wait_for("retention", || {
        let metadata = client.metadata(&["old"]).unwrap();
        let start = metadata[0].partitions[0].log_start_offset;
        (start > 4).then_some(start)
    });
    // Retention may go on meanwhile: the record printed says where reading went on.
    let args = [
        "consume", "old", "--group", "late", "--count", "1", "--format", "json", "--from",
        "earliest",
    ];
    let (out, warning) = cli_with_stderr(addr, &args);
    let record: serde_json::Value = serde_json::from_str(&out).unwrap();
    let reading_on_at = record["offset"].as_i64().unwrap();
    assert!(reading_on_at >= log_start, "{reading_on_at} < {log_start}");
    assert_eq!(record["value"], "x".repeat(1000));
    assert_eq!(
        warning,
        format!(
            "warning: partition 0: offset 4 is no longer stored (deleted by retention before \
             it was read); reading on at {reading_on_at}, {} offsets skipped\n",
            reading_on_at - 4
        )
    );
    let described = cli(addr, &["group", "describe", "late"]);
    let committed = (reading_on_at + 1).to_string();
    assert_eq!(row(&described, &["old", "0"])[2], committed);
    server.shutdown();
}

/// This process's open descriptors of files named `name` under `dir`.
fn descriptors_under(dir: &Path, name: &str) -> usize {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|entry| std::fs::read_link(entry.ok()?.path()).ok())
        .filter(|target| target.starts_with(dir) && target.ends_with(name))
        .count()
}

#[test]
fn a_group_committing_on_a_thousand_partitions_holds_no_state_file_open() {
    let mut server = TestServer::start();
    let addr = server.addr();
    let partitions = 1_000;
    create_topic_at(addr, "wide", partitions);
    // Keyed records reach nearly every partition, most requests touching hundreds of them.
    let producer = Producer::connect(addr, "wide", ProducerConfig::default()).unwrap();
    let records = 5_000;
    for n in 0..records {
        let key = format!("key-{n}");
        producer
            .send(&ProducerRecord::new(b"v").with_key(key.as_bytes()))
            .unwrap();
    }
    producer.close().unwrap();
    // Two rounds, so that the second round's commits append to the state files the first
    // round's created.
    let half = (records / 2).to_string();
    let args = [
        "consume", "wide", "--group", "wide", "--from", "earliest", "--count", &half,
    ];
    assert_eq!(cli(addr, &args).lines().count(), records / 2);
    assert_eq!(cli(addr, &args).lines().count(), records / 2);
    // The group committed on every partition that has records: each has a state file on
    // disk, and none is held open (each write opens and closes its file).
    let data_dir = server.dir.path().join("wide");
    let state_files = (0..partitions)
        .filter(|p| data_dir.join(p.to_string()).join("groups.state").exists())
        .count();
    assert!(state_files > 900, "{state_files} state files");
    assert_eq!(descriptors_under(&data_dir, "groups.state"), 0);
    // After a restart (which does not rewrite clean state files) every commit is there.
    server.restart();
    let described = cli(server.addr(), &["group", "describe", "wide"]);
    let lag: i64 = described
        .lines()
        .filter_map(|line| {
            let cells: Vec<&str> = line.split_whitespace().collect();
            (cells.first() == Some(&"wide")).then(|| cells.get(4)?.parse::<i64>().ok())?
        })
        .sum();
    let rows = described
        .lines()
        .filter(|line| line.starts_with("wide "))
        .count();
    assert_eq!(rows, state_files, "{described}");
    assert_eq!(lag, 0, "{described}");
}

/// Group names are Kafka's group ids, free text: names with characters a file name cannot
/// hold as they are (`/`), or that topic names refuse (`:`, spaces, non-ASCII), or that name
/// directories (`.`, `..`), or that look encoded (`%2E`) commit, come back after a restart
/// under their own names, and are deleted. Before, all of them were refused as invalid.
#[test]
fn group_names_are_free_text_and_survive_a_restart() {
    let mut server = TestServer::start();
    create_topic_at(server.addr(), "named", 1);
    produce(server.addr(), "named", 0, 10, None);
    let names = [
        "app:orders",
        "team/job 7",
        ".",
        "..",
        "grüße",
        "%2E",
        "plain",
    ];
    let mut client = Client::connect(server.addr()).unwrap();
    for (offset, name) in (1..).zip(names) {
        admin_commit(&mut client, name, "named", &[(0, offset)]);
    }
    server.restart();
    let mut client = Client::connect(server.addr()).unwrap();
    let expected: BTreeSet<String> = names.iter().map(|name| name.to_string()).collect();
    assert_eq!(group_names(&mut client), expected);
    for (offset, name) in (1..).zip(names) {
        assert_eq!(
            lags(&mut client, name),
            [(0, offset, 10 - offset)],
            "{name:?}"
        );
    }
    for name in names {
        client.delete_group(name).unwrap();
    }
    server.restart();
    let mut client = Client::connect(server.addr()).unwrap();
    assert_eq!(group_names(&mut client), BTreeSet::new());
}

/// A group's name becomes a file name (`<name>.group`, written through `<name>.group.tmp`),
/// so group names are bounded to what fits a directory entry: the longest allowed commits and
/// comes back after a restart; one longer is refused as an invalid request. Before, names of
/// 246 to 249 characters passed the check and every commit failed with a storage error,
/// which clients retry for ever.
#[test]
fn the_longest_group_name_commits_and_a_longer_one_is_refused_clearly() {
    let mut server = TestServer::start();
    create_topic_at(server.addr(), "named", 1);
    let longest = "g".repeat(245);
    let mut client = Client::connect(server.addr()).unwrap();
    admin_commit(&mut client, &longest, "named", &[(0, 0)]);
    server.restart();
    let mut client = Client::connect(server.addr()).unwrap();
    assert_eq!(lags(&mut client, &longest), [(0, 0, 0)]);
    for length in [246, 249, 250] {
        let name = "g".repeat(length);
        let partitions = [PartitionOffset {
            partition: 0,
            offset: 0,
        }];
        let topics = [CommitTopic {
            topic: "named",
            partitions: &partitions,
        }];
        let outcome = client.commit_offsets(&offset_commit::Request {
            group: &name,
            member_id: "",
            generation: -1,
            topics: &topics,
            instance_id: "",
        });
        let code = match outcome {
            Err(error) => error.code(),
            Ok(results) => results
                .iter()
                .find_map(|r| r.result.as_ref().err().and_then(|e| e.code())),
        };
        assert_eq!(
            code,
            Some(ErrorCode::InvalidGroupName),
            "{length} characters"
        );
    }
}

/// A share consumer's poll keeps to its timeout when it reads more partitions over one
/// connection than the server serves at once (`requests_in_flight_max`, 64 by default): had
/// every partition's ShareFetch long-polled, the server would read the next 64 only after
/// answering the previous ones, each after its full wait (six waits here).
#[test]
fn a_share_poll_over_many_partitions_of_one_shard_keeps_to_its_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(ServerConfig {
        data_dir: dir.path().to_path_buf(),
        listen: "127.0.0.1:0".parse().unwrap(),
        shards: Some(1),
        cache_bytes_per_shard: 8 << 20,
        ..ServerConfig::default()
    })
    .unwrap();
    let addr = server.local_addr();
    create_topic_at(addr, "wide", 384);
    let config = ShareConsumerConfig {
        max_wait_ms: 1_000,
        ..share_config()
    };
    let mut consumer = ShareConsumer::subscribe(addr, "wide-workers", "wide", config).unwrap();
    // Nothing to acquire: the poll should end at its timeout.
    let timeout = Duration::from_secs(1);
    let started = Instant::now();
    let batch = consumer.poll(timeout).unwrap();
    let took = started.elapsed();
    assert!(batch.is_empty());
    assert!(
        took < timeout * 3,
        "poll({timeout:?}) of an empty 384-partition topic took {took:?}"
    );
    server.shutdown();
}

/// An OffsetFetch naming partitions of a topic that does not exist (never created, or deleted
/// while the request travels) answers those partitions UnknownTopic and the others as usual:
/// one topic does not fail the whole group's answer, as in Kafka, which answers per
/// partition. (A topic named without partitions, meaning all of them, has none to answer:
/// that stays an UnknownTopic of the whole request.)
#[test]
fn offset_fetch_answers_a_missing_topic_per_partition() {
    let server = TestServer::start();
    create_topic_at(server.addr(), "present", 2);
    let mut client = Client::connect(server.addr()).unwrap();
    admin_commit(&mut client, "perpart", "present", &[(1, 4)]);
    let offsets = client
        .fetch_offsets(
            "perpart",
            &[
                ringlog_net::message::TopicPartitions {
                    topic: "present",
                    partitions: &[0, 1],
                },
                ringlog_net::message::TopicPartitions {
                    topic: "absent",
                    partitions: &[0, 3],
                },
            ],
        )
        .unwrap();
    let answered: Vec<(&str, u32, i64, ErrorCode)> = offsets
        .iter()
        .map(|o| (o.topic.as_str(), o.partition, o.committed_offset, o.error))
        .collect();
    assert_eq!(
        answered,
        [
            ("absent", 0, -1, ErrorCode::UnknownTopic),
            ("absent", 3, -1, ErrorCode::UnknownTopic),
            ("present", 0, -1, ErrorCode::None),
            ("present", 1, 4, ErrorCode::None),
        ]
    );
}

/// A static member's config (`group_instance_id`), with a session long enough that only its
/// restart, not its expiry, can give its partitions back.
fn static_config(instance: &str) -> GroupConsumerConfig {
    GroupConsumerConfig {
        session_timeout_ms: 60_000,
        group_instance_id: Some(instance.to_owned()),
        ..group_config()
    }
}

/// A static member that closes stays in the group (no LeaveGroup, as Kafka's static members);
/// started again with its instance id it takes its place and partitions back at once, in the
/// same generation, while the other member reads on undisturbed; the member id it replaced
/// is fenced.
#[test]
fn a_restarted_static_member_takes_its_partitions_back_without_a_rebalance() {
    let server = TestServer::start();
    let addr = server.addr();
    create_topic_at(addr, "fleet", 4);
    produce(addr, "fleet", 0, 400, None);
    let stop = Arc::new(AtomicBool::new(false));
    let generations = Arc::new(Mutex::new(BTreeSet::new()));
    let other = {
        let (stop, generations) = (Arc::clone(&stop), Arc::clone(&generations));
        thread::spawn(move || {
            let mut consumer =
                GroupConsumer::subscribe(addr, "fleet", "fleet", static_config("host-b")).unwrap();
            while !stop.load(Ordering::SeqCst) {
                for record in consumer.poll(Duration::from_millis(100)).unwrap() {
                    record.unwrap();
                }
                generations.lock().unwrap().insert(consumer.generation());
            }
            consumer.close().unwrap();
        })
    };
    let mut client = Client::connect(addr).unwrap();
    let mut first =
        GroupConsumer::subscribe(addr, "fleet", "fleet", static_config("host-a")).unwrap();
    wait_for("the two members to split the topic", || {
        first
            .poll(Duration::from_millis(100))
            .unwrap()
            .for_each(drop);
        let description = client.describe_group("fleet").ok()?;
        let split = description.state == GroupState::Stable
            && description.members.len() == 2
            && first.assignment().len() == 2
            && first.generation() == description.generation;
        split.then_some(())
    });
    let (generation, partitions) = (first.generation(), first.assignment().to_vec());
    let old_member_id = first.member_id().to_owned();
    generations.lock().unwrap().clear();
    first.close().unwrap();
    let description = client.describe_group("fleet").unwrap();
    assert_eq!(
        description.members.len(),
        2,
        "a static member does not leave"
    );
    assert_eq!(description.state, GroupState::Stable);

    let mut restarted =
        GroupConsumer::subscribe(addr, "fleet", "fleet", static_config("host-a")).unwrap();
    wait_for("the restarted member's assignment", || {
        restarted
            .poll(Duration::from_millis(100))
            .unwrap()
            .for_each(drop);
        (!restarted.assignment().is_empty()).then_some(())
    });
    assert_eq!(restarted.generation(), generation, "no rebalance");
    assert_eq!(restarted.assignment(), partitions);
    assert_ne!(restarted.member_id(), old_member_id);
    let mut instances: Vec<Option<String>> = client
        .describe_group("fleet")
        .unwrap()
        .members
        .into_iter()
        .map(|m| m.instance_id)
        .collect();
    instances.sort();
    assert_eq!(
        instances,
        [Some("host-a".to_owned()), Some("host-b".to_owned())]
    );
    // The old member id, with its instance id, is fenced.
    let fenced = client
        .heartbeat(&heartbeat::Request {
            group: "fleet",
            member_id: &old_member_id,
            generation,
            instance_id: "host-a",
        })
        .unwrap_err();
    assert_eq!(fenced.code(), Some(ErrorCode::FencedInstanceId));

    stop.store(true, Ordering::SeqCst);
    other.join().unwrap();
    assert_eq!(
        *generations.lock().unwrap(),
        BTreeSet::from([generation]),
        "the other member kept its generation throughout"
    );
    restarted.close().unwrap();
}

/// `ringlog consume --group-instance-id`: the member stays when the command ends, and the next
/// run with the same id takes its place (describe shows the instance) and reads on from the
/// group's commits.
#[test]
fn cli_reads_as_a_static_member() {
    let server = TestServer::start();
    let addr = server.addr();
    create_topic_at(addr, "static-cli", 1);
    produce(addr, "static-cli", 0, 6, Some(0));
    let args = |count: &'static str| {
        [
            "consume",
            "static-cli",
            "--group",
            "edge",
            "--group-instance-id",
            "edge-1",
            "--from",
            "earliest",
            "--count",
            count,
        ]
    };
    assert_eq!(cli(addr, &args("3")), "0\n1\n2\n");
    let described = cli(addr, &["group", "describe", "edge"]);
    assert!(described.contains("state Stable  members 1"), "{described}");
    let member = described
        .lines()
        .find(|line| line.ends_with(" edge-1"))
        .unwrap_or_else(|| panic!("no member of instance edge-1 in:\n{described}"));
    assert!(member.contains("static-cli:0"), "{described}");
    assert_eq!(cli(addr, &args("3")), "3\n4\n5\n");
    let described = cli(addr, &["group", "describe", "edge"]);
    assert!(described.contains("members 1"), "{described}");
}
