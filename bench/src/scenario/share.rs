//! The `share` scenario: `--consumers` members of one share group (KIP-932 semantics) take
//! records of a topic (default 1 partition) that is filled first, and spend `--work-us` of
//! simulated work (a sleep: the work of a consumer that waits on something else) on each record
//! before acknowledging it. The result is records acknowledged per second; the target is that
//! 16 consumers reach at least 12 times the rate of one.
//!
//! Each member is the client's `ShareConsumer` ([`consume_as_share_member`]). A build whose
//! client has no share consumer sets [`SHARE_CONSUMER_AVAILABLE`] to false: the scenario then
//! stops with one line and exit status 2 before starting anything.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use ringlog_net::client::{AckFailure, ClientError, ShareConsumer, ShareConsumerConfig};
use ringlog_net::message::share_acknowledge::AckType;

use super::control::RunControl;
use super::fill::fill_topic;
use super::recorder::{merge_all, LoadRecorder};
use super::server::{pin_load_thread, BenchServer};
use super::threads::join_all;
use super::{Scenario, ScenarioContext, ScenarioError, ScenarioResult};
use crate::options::RunConfig;
use crate::units::MIB;
use crate::workload::Workload;

/// Whether this build's client can consume as a share group member.
pub const SHARE_CONSUMER_AVAILABLE: bool = true;
/// Bytes the topic is filled with before the share consumers start: far more than 16
/// consumers with 1 ms of work per record get through in a standard run.
pub const SHARE_FILL_BYTES: u64 = 64 * MIB;

/// The `share` scenario.
#[derive(Debug, Default)]
pub struct Share {
    server: Option<BenchServer>,
    members: Vec<ShareMember>,
    notes: Vec<String>,
}

/// What one share consumer thread does.
#[derive(Clone, Debug)]
pub struct ShareMember {
    /// Server address.
    pub address: SocketAddr,
    /// Topic to consume.
    pub topic: String,
    /// Share group to join.
    pub group: String,
    /// Simulated work per record.
    pub work: Duration,
    /// Core to pin the thread to.
    pub cpu: Option<usize>,
    /// Expected run length (sizes the throughput timeline).
    pub expected: Option<Duration>,
}

impl Scenario for Share {
    fn prepare(&mut self, context: &ScenarioContext<'_>) -> Result<(), ScenarioError> {
        let config = context.config;
        check_share_consumer_available()?;
        let mut server = BenchServer::start(config, context.data_dir)?;
        let topic = server.create_topic(Workload::Share, config.partitions)?;
        let filled = fill_topic(&server, &topic, config, SHARE_FILL_BYTES)?;
        self.notes.push(filled.describe());
        self.members = members(config, &server, &topic);
        self.notes.push(server.placement_note());
        self.server = Some(server);
        Ok(())
    }

    fn run(&mut self, context: &ScenarioContext<'_>) -> Result<ScenarioResult, ScenarioError> {
        let config = context.config;
        let control = RunControl::new(self.members.len(), config.stop, context.progress.clone());
        let recorders = std::thread::scope(|scope| {
            let handles = self
                .members
                .iter()
                .map(|member| scope.spawn(|| run_member(member, &control)))
                .collect();
            control.open();
            join_all(handles)
        })?;
        let merged = merge_all(recorders)
            .ok_or_else(|| ScenarioError::Failed("no share consumer ran".into()))?;
        let seconds = merged.active_seconds();
        let mut notes = self.notes.clone();
        notes.push(format!(
            "{} share consumer(s) in {} group(s), {} us of simulated work (sleep) per record; \
             latency from a record's delivery to its acknowledgement",
            config.consumers, config.groups, config.work_us
        ));
        Ok(merged.into_result(seconds, notes))
    }
}

/// Fails with the one-line reason when this build cannot run share consumers.
pub fn check_share_consumer_available() -> Result<(), ScenarioError> {
    if SHARE_CONSUMER_AVAILABLE {
        Ok(())
    } else {
        Err(ScenarioError::Unavailable(
            "share groups are not available in this build (the client has no share consumer yet)"
                .into(),
        ))
    }
}

/// The share members: `--consumers` per group, `--groups` groups.
fn members(config: &RunConfig, server: &BenchServer, topic: &str) -> Vec<ShareMember> {
    (0..config.groups)
        .flat_map(|group| (0..config.consumers).map(move |member| (group, member)))
        .enumerate()
        .map(|(thread, (group, _))| ShareMember {
            address: server.address(),
            topic: topic.to_owned(),
            group: format!("bench-share-{group}"),
            work: Duration::from_micros(config.work_us),
            cpu: server.load_cpu(thread),
            expected: config.expected_duration(),
        })
        .collect()
}

/// One share member thread: consumes until the run stops; a failure stops the others.
fn run_member(member: &ShareMember, control: &RunControl) -> Result<LoadRecorder, ScenarioError> {
    let outcome = consume_as_share_member(member, control);
    if outcome.is_err() {
        control.abort();
    }
    outcome
}

/// Records one member asks for per share fetch: small, so that 16 members on one partition
/// stay well inside the share partition's in-flight window (2000 records by default).
const SHARE_FETCH_RECORDS_MAX: u32 = 50;

/// Pins itself and joins `member.group`, then until `control` stops the run: share-fetch records, spend
/// `member.work` on each (sleep), acknowledge them (ACCEPT), and record each acknowledged
/// record (`LoadRecorder::complete`) with its delivery-to-acknowledgement latency. Calls
/// `control.wait_for_start()` exactly once, after connecting, before the first fetch.
pub fn consume_as_share_member(
    member: &ShareMember,
    control: &RunControl,
) -> Result<LoadRecorder, ScenarioError> {
    let config = ShareConsumerConfig {
        max_records: SHARE_FETCH_RECORDS_MAX,
        ..ShareConsumerConfig::default()
    };
    let failed = |error: ClientError| ScenarioError::Failed(format!("share consumer: {error}"));
    let setup = pin_load_thread(member.cpu).and_then(|()| {
        ShareConsumer::subscribe(member.address, &member.group, &member.topic, config)
            .map_err(failed)
    });
    let (mut consumer, start) = control.start_after(setup)?;
    let mut recorder = LoadRecorder::new(start, member.expected);
    // Records whose acknowledgement the server refused (lock expired): they were counted
    // when acknowledged here and will be delivered, and counted, again.
    let mut refused = 0u64;
    while !control.is_stopped(Instant::now()) {
        let batch = consumer.poll(Duration::from_millis(100)).map_err(failed)?;
        refused += refused_records(&consumer.take_ack_failures());
        let delivered = Instant::now();
        // Offsets, sizes and the partition are copied out of each record before it is acknowledged.
        for record in batch.records() {
            let record = record.map_err(failed)?;
            if control.is_stopped(Instant::now()) {
                break;
            }
            std::thread::sleep(member.work);
            let bytes = record.value.map_or(0, <[u8]>::len) as u64;
            let (partition, offset) = (record.partition, record.offset);
            consumer.acknowledge(partition, offset, AckType::Accept);
            let now = Instant::now();
            recorder.complete(now, 1, bytes);
            recorder.latency(now.saturating_duration_since(delivered));
            control.complete_bytes(bytes);
        }
    }
    refused += refused_records(&consumer.close().map_err(failed)?);
    if refused > 0 {
        return Err(ScenarioError::Failed(format!(
            "the server refused the acknowledgement of {refused} record(s) of {} (their locks \
             had expired): the count would include records not acknowledged, some of them \
             counted twice",
            member.group
        )));
    }
    Ok(recorder)
}

/// Records in the refused acknowledgement ranges.
fn refused_records(failures: &[AckFailure]) -> u64 {
    failures
        .iter()
        .map(|failure| (failure.last_offset - failure.first_offset + 1).max(0) as u64)
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::options::StopAt;
    use crate::progress::ProgressCounter;
    use ringlog_net::message::configure_group;

    fn config(args: &[&str]) -> RunConfig {
        crate::options::parse_for_test(args, 1).unwrap()
    }

    #[test]
    fn acknowledgements_the_server_refused_are_not_counted() {
        let config = config(&[
            "share",
            "--shards",
            "1",
            "--record-size",
            "1KiB",
            "--batch-bytes",
            "4KiB",
        ]);
        let dir = tempfile::tempdir().unwrap();
        let mut server = BenchServer::start(&config, dir.path()).unwrap();
        let topic = server.create_topic(Workload::Share, 1).unwrap();
        fill_topic(&server, &topic, &config, 4096).unwrap();
        let held: i64 = server.high_watermarks(&topic).unwrap().iter().sum();
        assert!(held > 0);
        // Locks of 10 ms and 20 ms of work per record: every acknowledgement comes after its
        // lock expired, the server refuses it and delivers the record again.
        let group = "bench-share-refused";
        server
            .client()
            .unwrap()
            .configure_share_group(&configure_group::Request {
                group,
                lock_ms: Some(10),
                ..Default::default()
            })
            .unwrap();
        let member = ShareMember {
            address: server.address(),
            topic: topic.clone(),
            group: group.into(),
            work: Duration::from_millis(20),
            cpu: None,
            expected: None,
        };
        let control = RunControl::new(
            1,
            StopAt::Duration(Duration::from_millis(1500)),
            ProgressCounter::default(),
        );
        let outcome = std::thread::scope(|scope| {
            let handle = scope.spawn(|| consume_as_share_member(&member, &control));
            control.open();
            handle.join().unwrap()
        });
        if let Ok(recorder) = outcome {
            assert!(
                recorder.records() <= held as u64,
                "{} records counted as acknowledged, the topic holds {held} and the server \
                 accepted no acknowledgement",
                recorder.records()
            );
        }
    }
}
