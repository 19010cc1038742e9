//! [`Producer`]: batching, partitioning, bounded, retrying producer for one topic.

mod accumulator;
mod config;
mod delivery;
mod idempotence;
mod io;
mod link;
mod record;

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::{Arc, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub use config::{CompressionType, ProducerConfig};
pub use delivery::{DeliveryHandle, RecordMetadata};
pub use record::ProducerRecord;

use accumulator::Accumulator;
use idempotence::ProducerIdentity;
use io::{run_receiver, run_sender, SenderContext, Shared};
use link::{single_owner, Steer};

use super::calls::{duration_ms_u32, partition_count_of, Client, CLIENT_NAME, CLIENT_VERSION};
use super::connection::Connection;
use super::error::ClientError;
use crate::error_code::ErrorCode;
use crate::message::produce::Acks;

/// Sends records to one topic, batching them per partition.
///
/// - Records are appended to their partition's open batch (RecordBatch v2, built in place) and
///   sent when the batch is full (`batch_bytes_max`) or has waited `linger_ms`. Ready batches of
///   several partitions share one produce request.
/// - Partition: explicit, else Kafka's murmur2 of the key (the same partition Kafka's default
///   partitioner picks), else sticky (one partition until its batch is sent, then the next).
///   The partition count is asked for again every `metadata_max_age_ms`, so partitions added
///   to the topic are used.
/// - At most `in_flight_requests_max` requests are in flight; `send` blocks (up to
///   `max_block_ms`) while `buffer_bytes_max` bytes are buffered.
/// - Retriable errors ([`crate::error_code::ErrorCode::is_retriable`]: a full disk, a busy
///   server) are retried `retry_backoff_ms` apart until `delivery_timeout_ms` after the batch
///   was created (or `retries_max` times, unbounded by default), as Kafka's producer does.
/// - A failed connection (the server restarted or was killed, a request unanswered within the
///   request timeout) is connected again, `reconnect_backoff_ms` after the failure and then at
///   doubling intervals up to `reconnect_backoff_max_ms`, as Kafka's clients do; the requests
///   it had in flight are sent again (each an attempt against `retries_max`). Meanwhile
///   records are buffered as usual; a batch still undelivered `delivery_timeout_ms` after it
///   was created fails with the connection's error.
/// - Idempotent by default ([`ProducerConfig::idempotence`]): the producer gets a producer id
///   at connect (InitProducerId) and numbers each partition's batches; a retry resends the
///   same bytes, and the server answers a retry of a batch it already wrote with the original
///   offset instead of writing it again (also across a server restart: the server keeps its
///   producers' state with the log). Batches of a partition are written in send order.
/// - Batches may be compressed ([`ProducerConfig::compression`], none by default): each
///   batch's records are compressed once, when it is closed, in the format Kafka's Java
///   producer writes, and a retry resends the same bytes.
/// - Each `send` returns a [`DeliveryHandle`] with the record's offset or error; [`flush`]
///   waits for everything sent so far and reports failures since the last flush.
///
/// Two background threads do the socket I/O; the producer is `Send + Sync`, so several threads
/// may share it (`Arc<Producer>`).
///
/// ```no_run
/// use ringlog_net::client::{Producer, ProducerConfig, ProducerRecord};
///
/// # fn main() -> Result<(), ringlog_net::client::ClientError> {
/// let producer = Producer::connect("127.0.0.1:9092", "orders", ProducerConfig::default())?;
/// let handle = producer.send(&ProducerRecord::new(b"first order").with_key(b"customer-7"))?;
/// for i in 0..1000 {
///     let value = format!("order {i}");
///     producer.send(&ProducerRecord::new(value.as_bytes()))?;
/// }
/// producer.flush()?; // every record acknowledged, or the first failure
/// let written = handle.wait()?;
/// println!("partition {} offset {}", written.partition, written.offset);
/// producer.close()?;
/// # Ok(())
/// # }
/// ```
///
/// [`flush`]: Producer::flush
#[derive(Debug)]
pub struct Producer {
    shared: Arc<Shared>,
    topic: String,
    max_block: Duration,
    sender: Option<JoinHandle<()>>,
    receiver: Option<JoinHandle<()>>,
}

impl Producer {
    /// Connects to the server and prepares to produce to `topic` (which must exist).
    pub fn connect(
        addr: impl ToSocketAddrs,
        topic: &str,
        config: ProducerConfig,
    ) -> Result<Self, ClientError> {
        config.validate()?;
        // Resolved once: connecting again after a failure must not depend on name lookups.
        let addrs: Vec<SocketAddr> = addr.to_socket_addrs()?.collect();
        let connection = Connection::connect(&addrs[..], config.connection)?;
        let mut client = Client::from_connection(connection, config.connection);
        let (topics, shard_count) = client.metadata_and_shard_count(&[topic])?;
        let partitions = partition_count_of(&topics, topic)?;
        // A topic whose partitions all live on one shard (of several) is produced to over a
        // connection to that shard, so that its batches never travel between shards (as
        // Kafka's producer sends to each partition's leader). Best effort: without an answer
        // to ApiVersions the connection stays where it landed.
        let steer = single_owner(&topics, topic)
            .filter(|_| shard_count > 1)
            .map(|shard| Steer { shard, shard_count });
        let landed = steer.and_then(|_| client.api_versions(CLIENT_NAME, CLIENT_VERSION).ok());
        if let (Some(steer), Some(landed)) = (steer, landed) {
            if landed.connection_shard != steer.shard {
                let connection = steer.connect(&addrs, config.connection)?;
                client = Client::from_connection(connection, config.connection);
            }
        }
        if partitions == 0 {
            return Err(ClientError::InvalidArgument(format!(
                "topic {topic} has no partitions"
            )));
        }
        let identity = if config.idempotence && config.acks != Acks::None {
            match client.init_producer_id(-1, -1) {
                Ok((producer_id, epoch)) => Some(ProducerIdentity { producer_id, epoch }),
                // A server without idempotence: produce as before.
                Err(error) if error.code() == Some(ErrorCode::UnsupportedVersion) => None,
                Err(error) => return Err(error),
            }
        } else {
            None
        };
        let (writer, reader) = client.into_connection().split()?;
        let stream = writer.try_clone_stream()?;
        let mut accumulator = Accumulator::new(config, partitions);
        accumulator.set_identity(identity);
        let generation = accumulator.link.connected(reader, stream);
        let shared = Shared::new(accumulator);
        let request_timeout = Duration::from_millis(config.connection.request_timeout_ms.max(1));
        let context = SenderContext {
            writer,
            generation,
            topic: topic.to_owned(),
            acks: config.acks,
            timeout_ms: duration_ms_u32(request_timeout),
            addrs,
            steer,
            connection: config.connection,
        };
        let sender = {
            let shared = shared.clone();
            thread::Builder::new()
                .name("ringlog-producer-send".to_owned())
                .spawn(move || run_sender(shared, context))?
        };
        let receiver = {
            let shared = shared.clone();
            let topic = topic.to_owned();
            thread::Builder::new()
                .name("ringlog-producer-recv".to_owned())
                .spawn(move || run_receiver(shared, &topic, request_timeout))?
        };
        Ok(Self {
            shared,
            topic: topic.to_owned(),
            max_block: Duration::from_millis(config.max_block_ms),
            sender: Some(sender),
            receiver: Some(receiver),
        })
    }

    /// The topic records go to.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// The topic's partition count as last learned: at connect, then every
    /// [`ProducerConfig::metadata_max_age_ms`] (partitions added to the topic are used from
    /// then on).
    pub fn partitions(&self) -> u32 {
        self.shared.lock().partitions()
    }

    /// The producer id and epoch stamped into batches; `None` when not idempotent.
    pub fn producer_identity(&self) -> Option<(i64, i16)> {
        self.shared
            .lock()
            .identity()
            .map(|identity| (identity.producer_id, identity.epoch))
    }

    /// Queues a record; returns at once with its delivery handle (blocking only while the
    /// buffer is full). Fails for a record that can never be sent (too large, bad partition)
    /// or when the producer has failed or is closed.
    pub fn send(&self, record: &ProducerRecord<'_>) -> Result<DeliveryHandle, ClientError> {
        let timestamp_ms = record.timestamp_ms.unwrap_or_else(now_ms);
        // Read only when the buffer is full: the clock costs tens of nanoseconds a read on some
        // machines (virtual ones), a large share of a small record's send.
        let mut deadline = None;
        let mut state = self.shared.lock();
        loop {
            if let Some(refusal) = state.refusal() {
                return Err(refusal);
            }
            if !state.is_full() {
                break;
            }
            let now = Instant::now();
            let deadline = *deadline.get_or_insert(now + self.max_block);
            if now >= deadline {
                return Err(ClientError::Timeout {
                    timeout_ms: self.max_block.as_millis() as u64,
                });
            }
            state = self
                .shared
                .progress
                .wait_timeout(state, deadline - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        let (handle, wake) = state.append(record, timestamp_ms, Instant::now)?;
        drop(state);
        if wake {
            self.shared.wake_sender.notify_one();
        }
        Ok(handle)
    }

    /// Sends everything buffered now (ignoring linger) and waits until every record sent
    /// before the call is acknowledged or failed (not those other threads send meanwhile, so
    /// a steady stream of sends cannot hold it). Fails with [`ClientError::DeliveryFailed`]
    /// when records failed since the previous flush. While the server cannot be reached this
    /// waits for it, at most [`ProducerConfig::delivery_timeout_ms`] after the oldest record's
    /// batch was created (then those records fail).
    pub fn flush(&self) -> Result<(), ClientError> {
        let mut state = self.shared.lock();
        state.flushing += 1;
        let generation = state.begin_flush();
        self.shared.wake_sender.notify_one();
        while state.unfinished_through(generation) && state.fatal.is_none() {
            state = self
                .shared
                .progress
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
        state.flushing -= 1;
        if let Some(failures) = state.take_failures() {
            return Err(failures);
        }
        match &state.fatal {
            Some(fatal) => Err(fatal.clone()),
            None => Ok(()),
        }
    }

    /// Flushes (see [`Producer::flush`], which bounds the wait for an unreachable server),
    /// stops the I/O threads and closes the connection.
    pub fn close(mut self) -> Result<(), ClientError> {
        let flushed = self.flush();
        self.stop();
        flushed
    }

    /// Stops accepting records, lets the sender drain, then closes the socket and joins.
    fn stop(&mut self) {
        {
            let mut state = self.shared.lock();
            state.closing = true;
            if state.fatal.is_some() {
                // Nothing is left to drain (every record has failed): close the socket first,
                // so a sender blocked writing to a server that stopped reading wakes now
                // instead of at its write timeout.
                state.link.shutdown();
            }
        }
        self.shared.notify_all();
        if let Some(sender) = self.sender.take() {
            // A panicked sender has nothing left to clean up.
            let _ = sender.join();
        }
        // Wakes the receiver out of its read (already-closed sockets are fine), or out of its
        // wait for a connection.
        self.shared.lock().link.shutdown();
        self.shared.notify_all();
        if let Some(receiver) = self.receiver.take() {
            let _ = receiver.join();
        }
    }
}

impl Drop for Producer {
    /// Sends what is buffered before closing (failures are in the records' handles).
    fn drop(&mut self) {
        if self.sender.is_some() {
            let _ = self.flush();
            self.stop();
        }
    }
}

/// Wall-clock time in ms since the Unix epoch.
fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::fake_server::{Behaviour, FakeServer};
    use crate::client::partitioner::partition_for_key;
    use crate::client::{Consumer, ConsumerConfig, SeekTo};
    use crate::error_code::ErrorCode;
    use crate::message::produce::Acks;

    fn config() -> ProducerConfig {
        ProducerConfig {
            batch_bytes_max: 1024,
            linger_ms: 1,
            retry_backoff_ms: 1,
            ..ProducerConfig::default()
        }
    }

    /// Every record of `partition` from the start, as (offset, key, value).
    fn read_back(
        addr: SocketAddrLike,
        partition: u32,
        count: usize,
    ) -> Vec<(i64, Vec<u8>, Vec<u8>)> {
        let mut consumer = Consumer::connect(addr, ConsumerConfig::default()).unwrap();
        consumer.assign("t", &[partition]);
        consumer.seek(partition, SeekTo::Earliest).unwrap();
        let mut out = Vec::new();
        while out.len() < count {
            for record in consumer.poll(Duration::from_secs(5)).unwrap() {
                let record = record.unwrap();
                out.push((
                    record.offset,
                    record.key.unwrap_or_default().to_vec(),
                    record.value.unwrap_or_default().to_vec(),
                ));
            }
        }
        out
    }

    type SocketAddrLike = std::net::SocketAddr;

    #[test]
    fn keyed_records_land_where_kafka_puts_them_in_order() {
        let server = FakeServer::start("t", 3, Behaviour::default());
        let producer = Producer::connect(server.addr, "t", config()).unwrap();
        assert_eq!(producer.partitions(), 3);
        let mut sent = Vec::new();
        for i in 0..300 {
            let key = format!("key-{}", i % 10);
            let value = format!("value-{i}");
            let record = ProducerRecord::new(value.as_bytes()).with_key(key.as_bytes());
            let handle = producer.send(&record).unwrap();
            assert_eq!(handle.partition(), partition_for_key(key.as_bytes(), 3));
            sent.push((key, value, handle));
        }
        producer.flush().unwrap();
        for partition in 0..3 {
            let expected: Vec<_> = sent
                .iter()
                .filter(|(_, _, h)| h.partition() == partition)
                .collect();
            // Offsets follow send order within the partition.
            for (i, (_, _, handle)) in expected.iter().enumerate() {
                assert_eq!(handle.wait().unwrap().offset, i as i64);
            }
            let read = read_back(server.addr, partition, expected.len());
            assert_eq!(read.len(), expected.len());
            for ((offset, key, value), (k, v, h)) in read.iter().zip(&expected) {
                assert_eq!(*offset, h.wait().unwrap().offset);
                assert_eq!(key, k.as_bytes());
                assert_eq!(value, v.as_bytes());
            }
        }
        producer.close().unwrap();
    }

    #[test]
    fn keyless_records_stick_then_move_on() {
        let server = FakeServer::start("t", 4, Behaviour::default());
        let producer = Producer::connect(server.addr, "t", config()).unwrap();
        let value = [b'x'; 300];
        let handles: Vec<_> = (0..12)
            .map(|_| producer.send(&ProducerRecord::new(&value)).unwrap())
            .collect();
        producer.flush().unwrap();
        // Three 300-byte records fill a 1 KiB batch; the sticky partition changes per batch.
        let used: std::collections::BTreeSet<u32> = handles.iter().map(|h| h.partition()).collect();
        assert!(used.len() > 1, "sticky partitioner moved on: {used:?}");
        assert_eq!(handles[0].partition(), handles[1].partition());
    }

    #[test]
    fn explicit_partition_and_acks_none() {
        let server = FakeServer::start("t", 2, Behaviour::default());
        let producer = Producer::connect(
            server.addr,
            "t",
            ProducerConfig {
                acks: Acks::None,
                ..config()
            },
        )
        .unwrap();
        let handle = producer
            .send(&ProducerRecord::new(b"v").with_partition(1))
            .unwrap();
        producer.flush().unwrap();
        assert_eq!(
            handle.wait().unwrap(),
            RecordMetadata {
                partition: 1,
                offset: -1
            }
        );
        assert!(matches!(
            producer.send(&ProducerRecord::new(b"v").with_partition(2)),
            Err(ClientError::InvalidArgument(_))
        ));
        producer.close().unwrap();
        assert_eq!(read_back(server.addr, 1, 1)[0].2, b"v");
    }

    #[test]
    fn retriable_errors_are_retried() {
        let server = FakeServer::start(
            "t",
            1,
            Behaviour {
                throttle_produces: 2,
                ..Behaviour::default()
            },
        );
        let producer = Producer::connect(server.addr, "t", config()).unwrap();
        let handle = producer.send(&ProducerRecord::new(b"v")).unwrap();
        producer.flush().unwrap();
        assert_eq!(handle.wait().unwrap().offset, 0);
    }

    #[test]
    fn exhausted_retries_fail_the_records_and_flush() {
        let server = FakeServer::start(
            "t",
            1,
            Behaviour {
                throttle_produces: 100,
                ..Behaviour::default()
            },
        );
        let producer = Producer::connect(
            server.addr,
            "t",
            ProducerConfig {
                retries_max: 1,
                ..config()
            },
        )
        .unwrap();
        let handle = producer.send(&ProducerRecord::new(b"v")).unwrap();
        match producer.flush() {
            Err(ClientError::DeliveryFailed {
                failed_records: 1,
                first,
            }) => assert_eq!(first.code(), Some(ErrorCode::Throttled)),
            other => panic!("unexpected flush result {other:?}"),
        }
        assert_eq!(
            handle.wait().unwrap_err().code(),
            Some(ErrorCode::Throttled)
        );
        // Failures are reported once.
        producer.flush().unwrap();
    }

    #[test]
    fn a_connection_lost_at_every_attempt_fails_the_batch_but_not_the_producer() {
        let server = FakeServer::start(
            "t",
            1,
            Behaviour {
                close_on_produce: true,
                ..Behaviour::default()
            },
        );
        let config = ProducerConfig {
            retries_max: 2,
            reconnect_backoff_ms: 1,
            reconnect_backoff_max_ms: 4,
            ..config()
        };
        let producer = Producer::connect(server.addr, "t", config).unwrap();
        let handle = producer.send(&ProducerRecord::new(b"v")).unwrap();
        assert!(producer.flush().is_err());
        let error = handle.wait().unwrap_err();
        assert!(
            matches!(error, ClientError::Disconnected | ClientError::Io(_)),
            "the connection's error: {error}"
        );
        // Still connecting again for later records, which fail the same way here.
        let later = producer.send(&ProducerRecord::new(b"v")).unwrap();
        assert!(producer.close().is_err());
        assert!(later.wait().is_err());
    }

    #[test]
    fn a_producer_connects_again_and_delivers_every_record_once_in_order() {
        let server = FakeServer::start(
            "t",
            1,
            Behaviour {
                // Each connection answers a Metadata request and one more, then closes.
                close_after_requests: 2,
                ..Behaviour::default()
            },
        );
        let config = ProducerConfig {
            reconnect_backoff_ms: 1,
            reconnect_backoff_max_ms: 4,
            ..config()
        };
        let producer = Producer::connect(server.addr, "t", config).unwrap();
        let values: Vec<String> = (0..30).map(|i| format!("{i:0>300}")).collect();
        let handles: Vec<_> = values
            .iter()
            .map(|value| {
                producer
                    .send(&ProducerRecord::new(value.as_bytes()))
                    .unwrap()
            })
            .collect();
        producer.flush().unwrap();
        // Offsets in send order with no gap: every record written once, in order (a batch
        // written twice or overtaken would move the later ones).
        for (i, handle) in handles.iter().enumerate() {
            assert_eq!(handle.wait().unwrap().offset, i as i64);
        }
        producer.close().unwrap();
    }

    #[test]
    fn flush_and_close_return_when_the_server_stops_reading() {
        let server = FakeServer::start(
            "t",
            1,
            Behaviour {
                // Metadata and InitProducerId are answered; the first produce is never read,
                // nor anything sent over a new connection.
                stall_after_requests: 2,
                stall_later_connections: true,
                ..Behaviour::default()
            },
        );
        let (done_sender, done) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let producer = Producer::connect(
                server.addr,
                "t",
                ProducerConfig {
                    acks: Acks::Leader,
                    // One more attempt over a new connection, which the server does not read
                    // either.
                    retries_max: 1,
                    connection: crate::client::ConnectionConfig {
                        request_timeout_ms: 300,
                        ..Default::default()
                    },
                    ..ProducerConfig::default()
                },
            )
            .unwrap();
            // 24 MiB in 1 MiB batches: far more than the socket buffers of a connection the
            // server does not read, so the sender blocks in a write.
            let value = vec![b'v'; 512 * 1024];
            let handles: Vec<_> = (0..48)
                .map(|_| producer.send(&ProducerRecord::new(&value)).unwrap())
                .collect();
            let flushed = producer.flush();
            let closed = producer.close();
            let all_failed = handles
                .iter()
                .all(|handle| handle.try_result().is_some_and(|result| result.is_err()));
            // Every failure was reported by flush: close has none left to report.
            let _ = done_sender.send((flushed.is_err(), closed.is_ok(), all_failed));
        });
        // Generous: flush fails about 600 ms after the first request is sent (two attempts
        // timing out), and close then must not wait for a write the server will never take.
        let (flush_failed, close_ok, all_failed) = done
            .recv_timeout(Duration::from_secs(60))
            .expect("flush and close returned");
        assert_eq!((flush_failed, close_ok, all_failed), (true, true, true));
    }

    #[test]
    fn unknown_topic_is_refused() {
        let server = FakeServer::start("t", 1, Behaviour::default());
        let error = Producer::connect(server.addr, "other", config()).unwrap_err();
        assert_eq!(error.code(), Some(ErrorCode::UnknownTopic));
    }

    #[test]
    fn producer_is_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Producer>();
        assert_send_sync::<DeliveryHandle>();
    }
}
