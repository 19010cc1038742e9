//! The clients of the torture: native producers (one per cycle and thread), the resender (an
//! idempotent producer that outlives crashes) and a consumer that follows every partition.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use ringlog_engine::batch::BatchBuilder;
use ringlog_net::client::{
    Client, ConnectionConfig, Consumer, ConsumerConfig, Producer, ProducerConfig, ProducerRecord,
    SeekTo,
};
use ringlog_net::message::produce::Acks;

use crate::ledger::{parse_id, value, Entry, Ledger};

/// Records a native producer sends before it waits for their acknowledgements.
const CHUNK_RECORDS: u32 = 500;
/// Consecutive records a native producer sends to one partition.
const RECORDS_PER_PARTITION_RUN: u32 = 64;
/// Stream id of the resender's records (native producers use small numbers).
const RESENDER_STREAM: u32 = 1_000_000;
/// Records per resender batch, at most.
const RESENDER_BATCH_RECORDS_MAX: u64 = 20;
/// Pause before retrying against a server that is down or busy.
const RETRY_PAUSE: Duration = Duration::from_millis(20);

/// splitmix64, for the kill moments and batch sizes.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// What the workers share: the server's address while it runs, and the stop flag.
pub struct Shared {
    pub topic: &'static str,
    pub partitions: u32,
    addr: Mutex<Option<SocketAddr>>,
    changed: Condvar,
    pub stop: AtomicBool,
}

impl Shared {
    pub fn new(topic: &'static str, partitions: u32) -> Shared {
        Shared {
            topic,
            partitions,
            addr: Mutex::new(None),
            changed: Condvar::new(),
            stop: AtomicBool::new(false),
        }
    }

    /// The server is up at `addr` (or down with `None`).
    pub fn publish(&self, addr: Option<SocketAddr>) {
        *self.addr.lock().unwrap() = addr;
        self.changed.notify_all();
    }

    /// The address of the running server, now.
    pub fn current(&self) -> Option<SocketAddr> {
        *self.addr.lock().unwrap()
    }

    /// Waits until a server runs.
    pub fn wait_for_server(&self) -> SocketAddr {
        let mut addr = self.addr.lock().unwrap();
        loop {
            if let Some(addr) = *addr {
                return addr;
            }
            addr = self.changed.wait(addr).unwrap();
        }
    }
}

/// Connection settings of every torture client.
pub fn connection() -> ConnectionConfig {
    ConnectionConfig {
        request_timeout_ms: 10_000,
        ..ConnectionConfig::default()
    }
}

/// A native producer for one cycle: sends chunks of records until the cycle's server is
/// killed (`Shared::current` is `None`); the chunk on its way then is delivered to the
/// restarted server (the producer connects again and resends what was in flight), or fails.
pub fn spawn_producer(shared: Arc<Shared>, ledger: Arc<Ledger>, stream: u32) -> JoinHandle<()> {
    thread::spawn(move || {
        let Some(addr) = shared.current() else { return };
        let config = ProducerConfig {
            acks: Acks::Durable,
            linger_ms: 2,
            batch_bytes_max: 32 * 1024,
            retries_max: 5,
            retry_backoff_ms: 20,
            connection: connection(),
            ..ProducerConfig::default()
        };
        let Ok(producer) = Producer::connect(addr, shared.topic, config) else {
            return;
        };
        assert!(
            producer.producer_identity().is_some(),
            "idempotent by default"
        );
        let mut sequence = 0u32;
        loop {
            let mut handles = Vec::with_capacity(CHUNK_RECORDS as usize);
            let mut failed = false;
            for _ in 0..CHUNK_RECORDS {
                let partition = (sequence / RECORDS_PER_PARTITION_RUN) % shared.partitions;
                let bytes = value(stream, sequence);
                let record = ProducerRecord::new(&bytes).with_partition(partition);
                match producer.send(&record) {
                    Ok(handle) => handles.push((partition, sequence, handle)),
                    Err(_) => {
                        failed = true;
                        break;
                    }
                }
                sequence += 1;
            }
            let mut acked = Vec::with_capacity(handles.len());
            let mut acked_after_kill = 0;
            for (partition, sequence, handle) in handles {
                match handle.wait() {
                    Ok(written) => {
                        acked.push(Entry {
                            partition,
                            offset: written.offset,
                            id: (u64::from(stream) << 32) | u64::from(sequence),
                        });
                        acked_after_kill += u64::from(shared.current().is_none());
                    }
                    Err(_) => failed = true,
                }
            }
            ledger.record_acked(&acked);
            ledger.record_acked_after_kill(acked_after_kill);
            if failed || shared.current().is_none() {
                return;
            }
        }
    })
}

/// The resender: an idempotent producer with one producer id for the whole torture. After a
/// crash it sends the very batch that was in flight again, byte for byte; the server must
/// answer with the original offset if it had written the batch, or write it once.
pub fn spawn_resender(shared: Arc<Shared>, ledger: Arc<Ledger>, seed: u64) -> JoinHandle<()> {
    thread::spawn(move || {
        let mut rng = Rng::new(seed ^ 0x5EED);
        let (mut client, identity) = loop {
            let addr = shared.wait_for_server();
            if let Ok(mut fresh) = Client::connect_with(addr, connection()) {
                if let Ok(identity) = fresh.init_producer_id(-1, -1) {
                    break (Some(fresh), identity);
                }
            }
            thread::sleep(RETRY_PAUSE);
        };
        let mut sequences = vec![0i32; shared.partitions as usize];
        let mut next_record = 0u32;
        for batch_number in 0u64.. {
            if shared.stop.load(Ordering::SeqCst) {
                return;
            }
            let partition = (batch_number % u64::from(shared.partitions)) as u32;
            let records = 1 + rng.below(RESENDER_BATCH_RECORDS_MAX) as u32;
            let first_record = next_record;
            next_record += records;
            let mut builder = BatchBuilder::new(Vec::new(), now_ms());
            builder.set_producer_id(identity.0);
            builder.set_producer_epoch(identity.1);
            builder.set_base_sequence(sequences[partition as usize]);
            for record in first_record..next_record {
                builder
                    .push(now_ms(), None, Some(&value(RESENDER_STREAM, record)), &[])
                    .unwrap();
            }
            let bytes = builder.finish().to_vec();
            sequences[partition as usize] += records as i32;
            let Some(base_offset) = deliver(&shared, &ledger, &mut client, partition, &bytes)
            else {
                return;
            };
            let acked: Vec<Entry> = (0..records)
                .map(|at| Entry {
                    partition,
                    offset: base_offset + i64::from(at),
                    id: (u64::from(RESENDER_STREAM) << 32) | u64::from(first_record + at),
                })
                .collect();
            ledger.record_acked(&acked);
        }
    })
}

/// Sends one batch until the server acknowledges it, reconnecting across crashes. `None`
/// when the server refused it in a way no retry fixes (recorded as a failure).
fn deliver(
    shared: &Shared,
    ledger: &Ledger,
    client: &mut Option<Client>,
    partition: u32,
    bytes: &[u8],
) -> Option<i64> {
    let mut attempts = 0u32;
    loop {
        if client.is_none() {
            let addr = shared.wait_for_server();
            match Client::connect_with(addr, connection()) {
                Ok(fresh) => *client = Some(fresh),
                Err(_) => {
                    thread::sleep(RETRY_PAUSE);
                    continue;
                }
            }
        }
        let connected = client.as_mut()?;
        attempts += 1;
        match connected.produce(shared.topic, partition, Acks::Durable, bytes) {
            Ok(Some(base_offset)) => {
                if attempts > 1 {
                    ledger.record_resent();
                }
                return Some(base_offset);
            }
            Ok(None) => unreachable!("durable produce gets an answer"),
            Err(error) => match error.code() {
                Some(code) if code.is_retriable() => thread::sleep(RETRY_PAUSE),
                Some(code) => {
                    ledger.record_failure(format!(
                        "resender batch on partition {partition} refused with {code}: {error}"
                    ));
                    return None;
                }
                // The connection died with the server: send the same bytes to the next one.
                None => {
                    *client = None;
                    thread::sleep(RETRY_PAUSE);
                }
            },
        }
    }
}

/// The consumer: follows every partition from the start, checks offsets are dense and
/// batches decode, and records what it was served. Ends once stopped and caught up.
pub fn spawn_consumer(shared: Arc<Shared>, ledger: Arc<Ledger>) -> JoinHandle<()> {
    thread::spawn(move || {
        let mut positions = vec![0i64; shared.partitions as usize];
        let mut consumer: Option<Consumer> = None;
        let mut corrupt_reports = 0;
        loop {
            if consumer.is_none() {
                let addr = shared.wait_for_server();
                consumer = connect_consumer(addr, &shared, &positions);
                if consumer.is_none() {
                    thread::sleep(RETRY_PAUSE);
                    continue;
                }
            }
            let Some(active) = consumer.as_mut() else {
                continue;
            };
            let mut served = Vec::new();
            let mut broken = false;
            match active.poll(Duration::from_millis(100)) {
                Ok(records) => {
                    for record in records {
                        match record {
                            Ok(record) => {
                                let slot = record.partition as usize;
                                if record.offset != positions[slot] {
                                    ledger.record_corrupt(format!(
                                        "consumer: partition {} offset {} where {} was expected",
                                        record.partition, record.offset, positions[slot]
                                    ));
                                }
                                positions[slot] = record.offset + 1;
                                match record.value.and_then(parse_id) {
                                    Some(id) => served.push(Entry {
                                        partition: record.partition,
                                        offset: record.offset,
                                        id,
                                    }),
                                    None => ledger.record_corrupt(format!(
                                        "consumer: partition {} offset {}: unknown value",
                                        record.partition, record.offset
                                    )),
                                }
                            }
                            Err(error) => {
                                corrupt_reports += 1;
                                if corrupt_reports < 100 {
                                    ledger.record_corrupt(format!("consumer: {error}"));
                                }
                                broken = true;
                                break;
                            }
                        }
                    }
                }
                Err(_) => broken = true,
            }
            let got_records = !served.is_empty();
            ledger.record_consumed(&served);
            if broken {
                consumer = None;
                continue;
            }
            if !got_records
                && shared.stop.load(Ordering::SeqCst)
                && caught_up(&consumer, &positions)
            {
                return;
            }
        }
    })
}

fn connect_consumer(addr: SocketAddr, shared: &Shared, positions: &[i64]) -> Option<Consumer> {
    let config = ConsumerConfig {
        connection: connection(),
        ..ConsumerConfig::default()
    };
    let mut consumer = Consumer::connect(addr, config).ok()?;
    let partitions: Vec<u32> = (0..shared.partitions).collect();
    consumer.assign(shared.topic, &partitions);
    for (partition, position) in partitions.iter().zip(positions) {
        consumer.seek(*partition, SeekTo::Offset(*position)).ok()?;
    }
    Some(consumer)
}

/// Whether every partition was read up to its high watermark as of the last fetch.
fn caught_up(consumer: &Option<Consumer>, positions: &[i64]) -> bool {
    let Some(consumer) = consumer else {
        return false;
    };
    positions.iter().enumerate().all(|(partition, position)| {
        consumer
            .high_watermark(partition as u32)
            .is_some_and(|high_watermark| *position >= high_watermark)
    })
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as i64)
}
