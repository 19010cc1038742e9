//! Group workers of the torture: a committer of consumer-group offsets and a share-group
//! consumer that accepts what it gets. Both outlive crashes and check, after every restart and
//! at the end, that what the server acknowledged survived.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use ringlog_net::client::{Client, ShareConsumer, ShareConsumerConfig};
use ringlog_net::error_code::ErrorCode;
use ringlog_net::message::offset_commit::{CommitTopic, PartitionOffset, Request as CommitRequest};
use ringlog_net::message::share_acknowledge::AckType;
use ringlog_net::message::TopicPartitions;

use crate::ledger::{parse_id, Ledger};
use crate::workers::{connection, Shared};

/// The consumer group whose offsets the committer commits (administratively: no members).
const COMMIT_GROUP: &str = "torture-commits";
/// The share group the share consumer reads in.
const SHARE_GROUP: &str = "torture-share";
/// Pause between commits, so commits do not crowd out the producers.
const COMMIT_PAUSE: Duration = Duration::from_millis(2);
/// How long the share consumer goes on after the stop (it need not drain the topic; it looks
/// for redeliveries of what it accepted).
const SHARE_DRAIN: Duration = Duration::from_secs(2);

/// Commits offset `n` for every partition, n = 1, 2, ...; after each reconnection checks that
/// every partition holds its last acknowledged commit (or the one whose answer the crash
/// took away).
pub fn spawn_committer(shared: Arc<Shared>, ledger: Arc<Ledger>) -> JoinHandle<()> {
    thread::spawn(move || {
        let partitions: Vec<u32> = (0..shared.partitions).collect();
        let mut acked: Vec<i64> = vec![-1; partitions.len()];
        let mut pending: Option<i64> = None;
        let mut value = 0i64;
        let mut client: Option<Client> = None;
        loop {
            let connected = match client.as_mut() {
                Some(connected) => connected,
                None => {
                    let addr = shared.wait_for_server();
                    let Ok(fresh) = Client::connect_with(addr, connection()) else {
                        thread::sleep(COMMIT_PAUSE);
                        continue;
                    };
                    let connected = client.insert(fresh);
                    if !verify(
                        connected,
                        &shared,
                        &partitions,
                        &mut acked,
                        pending,
                        &ledger,
                    ) {
                        client = None;
                        continue;
                    }
                    pending = None;
                    connected
                }
            };
            if shared.stop.load(Ordering::SeqCst) {
                if verify(connected, &shared, &partitions, &mut acked, None, &ledger) {
                    return;
                }
                client = None;
                continue;
            }
            value += 1;
            let offsets: Vec<PartitionOffset> = partitions
                .iter()
                .map(|&partition| PartitionOffset {
                    partition,
                    offset: value,
                })
                .collect();
            let topics = [CommitTopic {
                topic: shared.topic,
                partitions: &offsets,
            }];
            let request = CommitRequest {
                group: COMMIT_GROUP,
                member_id: "",
                generation: -1,
                topics: &topics,
                instance_id: "",
            };
            match connected.commit_offsets(&request) {
                Ok(results) => {
                    for outcome in results {
                        match outcome.result {
                            Ok(_) => acked[outcome.entry.1 as usize] = value,
                            // Not written, or not known: either value may be there.
                            Err(_) => pending = Some(value),
                        }
                    }
                    ledger.record_commit();
                }
                Err(_) => {
                    pending = Some(value);
                    client = None;
                }
            }
            thread::sleep(COMMIT_PAUSE);
        }
    })
}

/// Checks the committed offsets against `acked` (or `pending`); records each mismatch as a
/// lost commit and adopts what is stored. `false` when the check could not be made.
fn verify(
    client: &mut Client,
    shared: &Shared,
    partitions: &[u32],
    acked: &mut [i64],
    pending: Option<i64>,
    ledger: &Ledger,
) -> bool {
    let topics = [TopicPartitions {
        topic: shared.topic,
        partitions,
    }];
    let offsets = match client.fetch_offsets(COMMIT_GROUP, &topics) {
        Ok(offsets) => offsets,
        // The server is going away (or gone): check again on the next connection.
        Err(error) if error.code().is_none_or(|code| code.is_retriable()) => return false,
        // Before the first acknowledged commit the group need not exist.
        Err(error)
            if error.code() == Some(ErrorCode::UnknownGroup)
                && acked.iter().all(|offset| *offset < 0) =>
        {
            return true
        }
        Err(error) => {
            ledger.record_failure(format!("OffsetFetch refused: {error}"));
            return true;
        }
    };
    for partition in partitions {
        let slot = *partition as usize;
        let stored = offsets
            .iter()
            .find(|offset| offset.partition == *partition)
            .map_or(-1, |offset| offset.committed_offset);
        if stored != acked[slot] && Some(stored) != pending {
            ledger.record_lost(format!(
                "commit of partition {partition}: {stored} stored, {} acknowledged",
                acked[slot]
            ));
        }
        acked[slot] = stored;
    }
    true
}

/// Reads the topic in a share group and accepts every record; a record whose ACCEPT the server
/// acknowledged must never be delivered again, across crashes.
pub fn spawn_share_consumer(shared: Arc<Shared>, ledger: Arc<Ledger>) -> JoinHandle<()> {
    thread::spawn(move || {
        let mut accepted: HashSet<(u32, i64)> = HashSet::new();
        let mut consumer: Option<ShareConsumer> = None;
        let mut stopped_at: Option<Instant> = None;
        loop {
            if shared.stop.load(Ordering::SeqCst) {
                let since = *stopped_at.get_or_insert_with(Instant::now);
                if since.elapsed() >= SHARE_DRAIN && consumer.is_some() {
                    return;
                }
            }
            let active = match consumer.as_mut() {
                Some(active) => active,
                None => {
                    let addr = shared.wait_for_server();
                    let config = ShareConsumerConfig {
                        connection: connection(),
                        ..ShareConsumerConfig::default()
                    };
                    match ShareConsumer::subscribe(addr, SHARE_GROUP, shared.topic, config) {
                        Ok(fresh) => consumer.insert(fresh),
                        Err(_) => {
                            thread::sleep(Duration::from_millis(20));
                            continue;
                        }
                    }
                }
            };
            let Ok(batch) = active.poll(Duration::from_millis(100)) else {
                consumer = None;
                continue;
            };
            if batch.is_empty() {
                continue;
            }
            let mut by_partition: BTreeMap<u32, Vec<i64>> = BTreeMap::new();
            for record in batch.records() {
                let record = match record {
                    Ok(record) => record,
                    Err(error) => {
                        ledger.record_corrupt(format!("share consumer: {error}"));
                        continue;
                    }
                };
                if accepted.contains(&(record.partition, record.offset)) {
                    ledger.record_lost(format!(
                        "share record {}/{} delivered again after its ACCEPT was acknowledged",
                        record.partition, record.offset
                    ));
                }
                if record.value.and_then(parse_id).is_none() {
                    ledger.record_corrupt(format!(
                        "share consumer: {}/{}: unknown value",
                        record.partition, record.offset
                    ));
                }
                by_partition
                    .entry(record.partition)
                    .or_default()
                    .push(record.offset);
            }
            for (partition, offsets) in by_partition {
                for offset in &offsets {
                    active.acknowledge(partition, *offset, AckType::Accept);
                }
                // One partition per flush, so a failure leaves no doubt about the others.
                match active.flush_acks() {
                    Ok(refused) => {
                        let refused = |offset: i64| {
                            refused.iter().any(|failure| {
                                failure.partition == partition
                                    && (failure.first_offset..=failure.last_offset)
                                        .contains(&offset)
                            })
                        };
                        for offset in offsets {
                            if !refused(offset) {
                                accepted.insert((partition, offset));
                                ledger.record_share_ack();
                            }
                        }
                    }
                    Err(_) => {
                        consumer = None;
                        break;
                    }
                }
            }
        }
    })
}
