//! A consumer load thread: one connection per shard that owns some of its partitions (as the
//! client's Consumer), each with one fetch in flight, the client's default fetch sizes and long
//! polling; the thread handles whichever answers first. As Kafka consumers prefetch, a
//! connection's next fetch is sent as soon as its response is in (its positions are known from
//! the batch headers): the server reads and sends it while this one is counted.
//!
//! The bench measures the server, not record parsing, so a consumer only walks the batch
//! headers (lengths and magic are checked; records are counted from the headers, CRCs are not
//! computed: that is the application's cost, as in the net reference's receiver). Throughput
//! counts the record batch bytes received, latency is per fetch (request written to response
//! read). Response buffers are recycled: nothing is allocated per fetch or record.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use ringlog_engine::batch::BatchIter;
use ringlog_net::client::{
    Client, Connection, ConnectionConfig, ConsumerConfig, FetchResult, PendingFetch, ResponseSelect,
};
use ringlog_net::error_code::ErrorCode;
use ringlog_net::message::fetch::{self, FetchPartition, FetchTopic};
use ringlog_net::message::list_offsets::OffsetSpec;

use super::control::RunControl;
use super::pipelined_producer::failed;
use super::recorder::LoadRecorder;
use super::server::pin_load_thread;
use super::ScenarioError;

/// Fetches in a row that may come back empty while a fetcher still expects data below its end
/// offsets (each waits up to the long-poll time) before it reports the read as stalled.
pub const STALLED_FETCHES_MAX: u32 = 40;

/// Where a fetcher starts reading.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartAt {
    /// The oldest record of each partition.
    Earliest,
    /// The end of each partition as the fetcher connects.
    Latest,
}

/// What one consumer thread reads.
#[derive(Clone, Debug)]
pub struct Fetcher {
    /// Server address.
    pub address: SocketAddr,
    /// Topic to read.
    pub topic: String,
    /// Partitions this thread reads (at least one).
    pub partitions: Vec<u32>,
    /// Where to start.
    pub start_at: StartAt,
    /// Offsets (indexed by partition id) at which reading is complete; `None`: read until the
    /// run stops.
    pub end_offsets: Option<Vec<i64>>,
    /// Once every partition reached its end, start over from the first positions (reads the
    /// same data again, until the run stops).
    pub repeat: bool,
    /// Core to pin the thread to.
    pub cpu: Option<usize>,
    /// Expected run length (sizes the throughput timeline).
    pub expected: Option<Duration>,
}

/// What a fetcher did besides its measurements.
#[derive(Clone, Copy, Debug, Default)]
pub struct FetchCounters {
    /// Fetch requests answered.
    pub fetches: u64,
    /// Fetches that returned no data (long poll ran out).
    pub empty_fetches: u64,
    /// Complete reads of the thread's partitions (with `repeat`).
    pub passes: u64,
}

/// One partition's reading state.
#[derive(Clone, Copy, Debug)]
struct Position {
    partition: u32,
    first: i64,
    next: i64,
    end: Option<i64>,
}

impl Position {
    fn is_done(&self) -> bool {
        self.end.is_some_and(|end| self.next >= end)
    }
}

impl Fetcher {
    /// Connects, finds the start positions, waits for the start, reads until done or stopped.
    pub fn run(
        &self,
        control: &RunControl,
    ) -> Result<(LoadRecorder, FetchCounters), ScenarioError> {
        let (mut lanes, start) = control.start_after(self.connect())?;
        let mut recorder = LoadRecorder::new(start, self.expected);
        let outcome = self.fetch_loop(control, &mut lanes, &mut recorder);
        if outcome.is_err() {
            control.abort();
        }
        outcome.map(|counters| (recorder, counters))
    }

    fn connect(&self) -> Result<Vec<Lane>, ScenarioError> {
        pin_load_thread(self.cpu)?;
        // One connection per shard that owns some of the partitions, as the client's
        // Consumer does: each shard sends its own partitions.
        let clients = Client::connect_per_shard(
            self.address,
            &self.topic,
            &self.partitions,
            ConnectionConfig::default(),
        )
        .map_err(|error| {
            ScenarioError::Setup(format!("cannot connect to {}: {error}", self.address))
        })?;
        let spec = match self.start_at {
            StartAt::Earliest => OffsetSpec::Earliest,
            StartAt::Latest => OffsetSpec::Latest,
        };
        let mut lanes = Vec::with_capacity(clients.len());
        for (mut client, partitions) in clients {
            let mut positions = Vec::with_capacity(partitions.len());
            for partition in partitions {
                let listed = client
                    .list_offsets(&self.topic, partition, spec)
                    .map_err(failed("find a start offset"))?;
                let end = self
                    .end_offsets
                    .as_ref()
                    .map(|ends| ends.get(partition as usize).copied().unwrap_or(0));
                positions.push(Position {
                    partition,
                    first: listed.offset,
                    next: listed.offset,
                    end,
                });
            }
            lanes.push(Lane {
                client,
                wanted: Vec::with_capacity(positions.len()),
                positions,
                in_flight: None,
                empty_in_a_row: 0,
                passes: 0,
            });
        }
        Ok(lanes)
    }

    fn fetch_loop(
        &self,
        control: &RunControl,
        lanes: &mut [Lane],
        recorder: &mut LoadRecorder,
    ) -> Result<FetchCounters, ScenarioError> {
        let mut counters = FetchCounters::default();
        for lane in lanes.iter_mut() {
            lane.in_flight = self.send_next(control, lane)?;
        }
        let mut select = ResponseSelect::new();
        let answer_wait = Duration::from_millis(
            ConnectionConfig::default().request_timeout_ms
                + u64::from(ConsumerConfig::default().max_wait_ms),
        );
        while lanes.iter().any(|lane| lane.in_flight.is_some()) {
            let waiting = lanes.iter().map(Lane::waiting_connection);
            let index = select
                .wait(waiting, answer_wait)
                .map_err(failed("wait for a fetch"))?
                .ok_or_else(|| {
                    ScenarioError::Failed(format!(
                        "no fetch of {} answered within {answer_wait:?}",
                        self.topic
                    ))
                })?;
            let lane = &mut lanes[index];
            let Some(fetch) = lane.in_flight.take() else {
                return Err(ScenarioError::Failed(
                    "a lane without a fetch was ready".into(),
                ));
            };
            let result = lane
                .client
                .receive_fetch(fetch.pending)
                .map_err(failed("fetch"))?;
            let received_at = Instant::now();
            recorder.latency(received_at.saturating_duration_since(fetch.sent_at));
            counters.fetches += 1;
            let (fetched_records, fetched_bytes) = self.advance(&result, &mut lane.positions)?;
            if fetched_bytes == 0 {
                counters.empty_fetches += 1;
                lane.empty_in_a_row += 1;
                if self.end_offsets.is_some() && lane.empty_in_a_row >= STALLED_FETCHES_MAX {
                    return Err(ScenarioError::Failed(format!(
                        "reading {} stalled: {} fetches in a row returned nothing before the end offsets",
                        self.topic, lane.empty_in_a_row
                    )));
                }
            } else {
                lane.empty_in_a_row = 0;
                recorder.complete(received_at, fetched_records, fetched_bytes);
                control.complete_bytes(fetched_bytes);
            }
            lane.in_flight = self.send_next(control, lane)?;
            lane.client.recycle(result);
        }
        // A complete read of the thread's partitions is one of every lane.
        counters.passes = lanes.iter().map(|lane| lane.passes).min().unwrap_or(0);
        Ok(counters)
    }

    /// Sends a lane's fetch from its current positions (from the first ones again once a
    /// repeating read is through); `None` when its reading is done or the run stopped.
    fn send_next(
        &self,
        control: &RunControl,
        lane: &mut Lane,
    ) -> Result<Option<InFlight>, ScenarioError> {
        if lane.positions.iter().all(Position::is_done) {
            lane.passes += 1;
            if !self.repeat {
                return Ok(None);
            }
            for position in lane.positions.iter_mut() {
                position.next = position.first;
            }
        }
        if control.is_stopped(Instant::now()) {
            return Ok(None);
        }
        let defaults = ConsumerConfig::default();
        lane.wanted.clear();
        lane.wanted
            .extend(
                lane.positions
                    .iter()
                    .filter(|p| !p.is_done())
                    .map(|p| FetchPartition {
                        partition: p.partition,
                        offset: p.next,
                        partition_max_bytes: defaults.partition_max_bytes,
                    }),
            );
        let topics = [FetchTopic {
            topic: &self.topic,
            partitions: &lane.wanted,
        }];
        let request = fetch::Request {
            max_wait_ms: defaults.max_wait_ms,
            min_bytes: defaults.min_bytes,
            max_bytes: defaults.max_bytes,
            topics: &topics,
        };
        let sent_at = Instant::now();
        let pending = lane.client.send_fetch(&request).map_err(failed("fetch"))?;
        Ok(Some(InFlight { pending, sent_at }))
    }

    /// Moves the positions past the fetched batches; returns (records, batch bytes) fetched.
    fn advance(
        &self,
        result: &FetchResult,
        positions: &mut [Position],
    ) -> Result<(u64, u64), ScenarioError> {
        let mut fetched_bytes = 0u64;
        let mut fetched_records = 0u64;
        for fetched in result.partitions().map_err(failed("read a fetch answer"))? {
            if fetched.status.code != ErrorCode::None {
                return Err(ScenarioError::Failed(format!(
                    "fetch of {} partition {} failed: {}",
                    self.topic, fetched.partition, fetched.status.code
                )));
            }
            let Some(position) = positions
                .iter_mut()
                .find(|p| p.partition == fetched.partition)
            else {
                continue;
            };
            let (records, bytes, next) = count_batches(fetched.batches, position.next)?;
            position.next = next;
            fetched_records += records;
            fetched_bytes += bytes;
        }
        Ok((fetched_records, fetched_bytes))
    }
}

/// One connection of a fetcher and the partitions its shard owns, read with one fetch in
/// flight at a time.
struct Lane {
    client: Client,
    positions: Vec<Position>,
    /// The partitions of the fetch being built (reused).
    wanted: Vec<FetchPartition>,
    in_flight: Option<InFlight>,
    empty_in_a_row: u32,
    /// Complete reads of the lane's partitions.
    passes: u64,
}

impl Lane {
    /// The connection to wait on, while a fetch is on its way.
    fn waiting_connection(&self) -> Option<&Connection> {
        self.in_flight
            .as_ref()
            .map(|_| self.client.connection_ref())
    }
}

/// A fetch on its way.
struct InFlight {
    pending: PendingFetch,
    sent_at: Instant,
}

/// Walks the batch headers of one fetched partition read at `position`: returns (records at
/// or after it, batch bytes, next position). Records are counted from the headers (offsets
/// in a batch are consecutive), not decoded one by one.
pub fn count_batches(bytes: &[u8], position: i64) -> Result<(u64, u64, i64), ScenarioError> {
    let mut records = 0u64;
    let mut batch_bytes = 0u64;
    let mut next = position;
    for item in BatchIter::new(bytes).without_crc_check() {
        let (header, batch) = item.map_err(|error| {
            ScenarioError::Failed(format!("bad batch at offset {next}: {error}"))
        })?;
        let skipped = (position - header.base_offset).max(0);
        records += (i64::from(header.records_count) - skipped).max(0) as u64;
        batch_bytes += batch.len() as u64;
        next = next.max(header.next_offset());
    }
    Ok((records, batch_bytes, next))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::batches::PrebuiltBatch;
    use ringlog_engine::batch;

    #[test]
    fn batches_are_counted_and_the_position_moves_past_them() {
        let batch = PrebuiltBatch::build(100, 4096).unwrap();
        let mut bytes = batch.bytes().to_vec();
        let mut second = batch.bytes().to_vec();
        let count = batch.records() as i64;
        batch::set_base_offset(&mut second, count).unwrap();
        bytes.extend_from_slice(&second);
        let (records, total, next) = count_batches(&bytes, 1).unwrap();
        assert_eq!(
            records,
            2 * batch.records() - 1,
            "the record before the position is skipped"
        );
        assert_eq!(total, 2 * batch.len_bytes());
        assert_eq!(next, 2 * count);
        let mut corrupt = batch.bytes().to_vec();
        let last = corrupt.len() - 1;
        corrupt[last] ^= 1;
        assert!(count_batches(&corrupt, 0).is_ok(), "CRCs are not computed");
        let mut bad_magic = batch.bytes().to_vec();
        bad_magic[16] = 0;
        assert!(count_batches(&bad_magic, 0).is_err());
    }
}
