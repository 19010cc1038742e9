//! The producer's two I/O threads: the sender writes produce requests for ready batches (and
//! the InitProducerId of an epoch bump, and a Metadata request every `metadata_max_age_ms`),
//! the receiver reads their responses. Neither holds the
//! state lock while on the socket, so a slow server never blocks `send` beyond the configured
//! back-pressure. The lock lives in the client's process, which is free to use threads; the
//! server's data path takes none.
//!
//! When the connection fails, whichever thread sees it first gives it up (see
//! [`super::link`]); the sender connects again and hands the new connection's reader to the
//! receiver, which applies only answers read from the current connection.

use std::net::SocketAddr;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use super::accumulator::{Accumulator, EntryResult};
use super::idempotence::ProducerIdentity;
use super::link::Steer;
use crate::api::ApiKey;
use crate::client::calls::{check, parse_metadata, partition_count_of};
use crate::client::connection::{
    Connection, ConnectionConfig, FrameReader, FrameWriter, ResponseFrame,
};
use crate::client::error::ClientError;
use crate::message::produce::{self, Acks, PartitionBatches};
use crate::message::{init_producer_id, metadata};
use crate::message::{Encode, ResponseStatus as _, Status};

/// State shared by the producer handle and its threads.
#[derive(Debug)]
pub(crate) struct Shared {
    state: Mutex<Accumulator>,
    /// Wakes the sender: a batch opened or became ready, a request slot freed, flush, close.
    pub(crate) wake_sender: Condvar,
    /// Wakes `flush` and blocked `send`s: batches completed, bytes released, or failure.
    pub(crate) progress: Condvar,
    /// Wakes the receiver waiting for a connection: connected, closing, or failure.
    wake_receiver: Condvar,
}

impl Shared {
    /// Shared state around `accumulator`.
    pub(crate) fn new(accumulator: Accumulator) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(accumulator),
            wake_sender: Condvar::new(),
            progress: Condvar::new(),
            wake_receiver: Condvar::new(),
        })
    }

    /// Locks the state. A panic elsewhere while holding it leaves consistent-enough counters,
    /// so poisoning is ignored rather than spreading the panic to every user thread.
    pub(crate) fn lock(&self) -> MutexGuard<'_, Accumulator> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Wakes everyone after a state change.
    pub(crate) fn notify_all(&self) {
        self.wake_sender.notify_all();
        self.progress.notify_all();
        self.wake_receiver.notify_all();
    }
}

/// What the sender needs to write requests and to connect again.
#[derive(Debug)]
pub(crate) struct SenderContext {
    pub(crate) writer: FrameWriter,
    /// The generation of `writer`'s connection (see [`super::link::Link`]).
    pub(crate) generation: u64,
    pub(crate) topic: String,
    pub(crate) acks: Acks,
    pub(crate) timeout_ms: u32,
    /// The server's addresses, as resolved at connect.
    pub(crate) addrs: Vec<SocketAddr>,
    /// The shard connections are steered to, when one owns every partition of the topic.
    pub(crate) steer: Option<Steer>,
    pub(crate) connection: ConnectionConfig,
}

/// Sender thread: sends ready batches while request slots are free, sleeps until the next
/// linger or retry deadline otherwise; connects again when the connection failed. Exits when
/// closed and idle, or on a fatal failure.
pub(crate) fn run_sender(shared: Arc<Shared>, mut context: SenderContext) {
    let mut state = shared.lock();
    loop {
        if state.fatal.is_some() {
            break;
        }
        let now = Instant::now();
        let next_linger = state.close_lingered(now);
        if state.closing && state.is_idle() {
            break;
        }
        if let Some(reconnect_at) = state.link.reconnect_at() {
            if now < reconnect_at {
                (state, _) = shared
                    .wake_sender
                    .wait_timeout(state, reconnect_at - now)
                    .unwrap_or_else(PoisonError::into_inner);
                continue;
            }
            // Checked once per attempt (at most `reconnect_backoff_max_ms` apart), not at
            // every wake-up: sends wake this thread once per batch, and the check walks the
            // queue.
            if state.expire_undeliverable(now) {
                shared.notify_all();
                if state.closing && state.is_idle() {
                    continue;
                }
            }
            state = reconnect(&shared, state, &mut context);
            continue;
        }
        if state.epoch_bump_due() {
            let Some(identity) = state.identity() else {
                break;
            };
            state.epoch_bump_sent(context.writer.next_correlation_id(), now);
            let request = init_producer_id::Request {
                producer_id: identity.producer_id,
                producer_epoch: identity.epoch,
            };
            state = write_unlocked(
                &shared,
                state,
                &mut context.writer,
                context.generation,
                &request,
            );
            continue;
        }
        if state.metadata_refresh_due(now) {
            state.metadata_refresh_sent(context.writer.next_correlation_id(), now);
            let topics = [context.topic.as_str()];
            let request = metadata::Request { topics: &topics };
            state = write_unlocked(
                &shared,
                state,
                &mut context.writer,
                context.generation,
                &request,
            );
            continue;
        }
        let batches = if state.can_send() {
            state.take_sendable(now)
        } else {
            Vec::new()
        };
        if batches.is_empty() {
            let next_retry = state
                .can_send()
                .then(|| state.next_retry_due(now))
                .flatten();
            let next_refresh = state.next_metadata_refresh();
            state = match next_linger
                .into_iter()
                .chain(next_retry)
                .chain(next_refresh)
                .min()
            {
                Some(due) => {
                    let wait = due.saturating_duration_since(now);
                    let (guard, _) = shared
                        .wake_sender
                        .wait_timeout(state, wait)
                        .unwrap_or_else(PoisonError::into_inner);
                    guard
                }
                None => shared
                    .wake_sender
                    .wait(state)
                    .unwrap_or_else(PoisonError::into_inner),
            };
            continue;
        }
        // Register before writing: the response may be read before this thread relocks.
        let correlation_id = context.writer.next_correlation_id();
        let parts: Vec<(u32, Arc<Vec<u8>>)> = batches
            .iter()
            .map(|batch| (batch.partition, batch.bytes.clone()))
            .collect();
        let unacknowledged = if context.acks == Acks::None {
            Some(batches)
        } else {
            state.add_in_flight(correlation_id, batches, now);
            None
        };
        drop(state);
        let result = write_batches(&mut context, &parts);
        // Release the clones so completed buffers can be reused.
        drop(parts);
        state = shared.lock();
        match result {
            Ok(()) => {
                if let Some(batches) = unacknowledged {
                    state.complete_batches(batches, Ok(-1));
                    shared.notify_all();
                }
            }
            Err(error) => {
                if let Some(batches) = unacknowledged {
                    state.complete_batches(batches, Err(error.clone()));
                }
                lose_connection(&shared, &mut state, context.generation, error);
            }
        }
    }
    drop(state);
    // On failure, also wake the receiver out of its blocking read.
    context.writer.shutdown();
}

/// Connects again (without the lock held) and, on success, hands the new connection's
/// reader to the receiver; a failed attempt backs off further.
fn reconnect<'a>(
    shared: &'a Shared,
    state: MutexGuard<'a, Accumulator>,
    context: &mut SenderContext,
) -> MutexGuard<'a, Accumulator> {
    drop(state);
    // Steered as at connect: after a restart with other shards the connection may land
    // elsewhere, which costs a hop between shards, nothing else.
    let connected = match context.steer {
        Some(steer) => steer.connect(&context.addrs, context.connection),
        None => Connection::connect(&context.addrs[..], context.connection),
    }
    .and_then(Connection::split)
    .and_then(|(writer, reader)| {
        let stream = writer.try_clone_stream()?;
        Ok((writer, reader, stream))
    });
    let mut state = shared.lock();
    match connected {
        Ok((writer, reader, stream)) => {
            context.generation = state.link.connected(reader, stream);
            context.writer = writer;
            tracing::info!(topic = %context.topic, "producer connected again");
            shared.notify_all();
        }
        Err(error) => {
            tracing::debug!(topic = %context.topic, %error, "producer cannot connect yet");
            state.link.attempt_failed(error, Instant::now());
        }
    }
    state
}

/// Gives up connection `generation` after `error` (unless the other thread already did) and
/// wakes both threads: the sender to connect again, the receiver to wait for it.
fn lose_connection(shared: &Shared, state: &mut Accumulator, generation: u64, error: ClientError) {
    let message = error.to_string();
    if state.lose_connection(generation, error, Instant::now()) {
        tracing::warn!(error = %message, "producer connection failed; connecting again");
    }
    shared.notify_all();
}

/// Writes a request other than a produce (an epoch bump, a metadata refresh) without holding
/// the state lock; returns the lock again. A failed write gives the connection up.
fn write_unlocked<'a>(
    shared: &'a Shared,
    state: MutexGuard<'a, Accumulator>,
    writer: &mut FrameWriter,
    generation: u64,
    request: &impl Encode,
) -> MutexGuard<'a, Accumulator> {
    drop(state);
    let result = writer.write_request(request);
    let mut state = shared.lock();
    if let Err(error) = result {
        lose_connection(shared, &mut state, generation, error);
    }
    state
}

/// Writes one produce request carrying `parts`.
fn write_batches(
    context: &mut SenderContext,
    parts: &[(u32, Arc<Vec<u8>>)],
) -> Result<(), ClientError> {
    let entries: Vec<PartitionBatches<'_>> = parts
        .iter()
        .map(|(partition, bytes)| PartitionBatches {
            partition: *partition,
            batches: bytes.as_slice(),
        })
        .collect();
    context.writer.write_request(&produce::Request {
        acks: context.acks,
        timeout_ms: context.timeout_ms,
        topic: &context.topic,
        partitions: &entries,
    })?;
    Ok(())
}

/// Read timeouts per request timeout: a request that expires fails at most this fraction
/// of the timeout late.
const READ_CHECKS_PER_TIMEOUT: u32 = 8;

/// Receiver thread: reads each connection's responses until it fails, then waits for the
/// next. Exits when the producer is closed and idle, or has failed.
pub(crate) fn run_receiver(shared: Arc<Shared>, topic: &str, request_timeout: Duration) {
    // Wake up often enough to notice a request that expired while a read was waiting: with
    // the whole request timeout as the read timeout, one sent just after the read began would
    // fail only at the next timeout, nearly twice as late. A read woken mid-frame resumes
    // where it stopped.
    let check_every = (request_timeout / READ_CHECKS_PER_TIMEOUT).max(Duration::from_millis(1));
    while let Some((generation, mut reader)) = next_reader(&shared) {
        if let Err(error) = reader.set_read_timeout(Some(check_every)) {
            lose_connection(&shared, &mut shared.lock(), generation, error);
            continue;
        }
        if read_responses(&shared, &mut reader, generation, topic, request_timeout)
            == Ended::Producer
        {
            break;
        }
    }
}

/// The current connection's reader once there is one; `None` when the producer is done.
fn next_reader(shared: &Shared) -> Option<(u64, FrameReader)> {
    let mut state = shared.lock();
    loop {
        if state.fatal.is_some() || (state.closing && state.is_idle()) {
            return None;
        }
        if let Some(taken) = state.link.take_reader() {
            return Some(taken);
        }
        state = shared
            .wake_receiver
            .wait(state)
            .unwrap_or_else(PoisonError::into_inner);
    }
}

/// Why [`read_responses`] returned.
#[derive(Debug, PartialEq, Eq)]
enum Ended {
    /// The connection failed or was replaced: read the next one.
    Connection,
    /// The producer is closed or has failed.
    Producer,
}

/// Applies the responses read from connection `generation`. A read timeout only matters when
/// a request has waited longer than `request_timeout`; any other read failure gives the
/// connection up unless the producer was closing anyway.
fn read_responses(
    shared: &Shared,
    reader: &mut FrameReader,
    generation: u64,
    topic: &str,
    request_timeout: Duration,
) -> Ended {
    loop {
        let result = reader.read_frame().and_then(|frame| {
            let correlation_id = frame.header().correlation_id;
            if frame.header().api == ApiKey::InitProducerId.as_u16() {
                return Ok((correlation_id, Answer::EpochBump(parse_identity(&frame))));
            }
            if frame.header().api == ApiKey::Metadata.as_u16() {
                let partitions =
                    parse_metadata(&frame).and_then(|topics| partition_count_of(&topics, topic));
                return Ok((correlation_id, Answer::Metadata(partitions)));
            }
            let (top_level, entries) = parse_response(&frame)?;
            Ok((correlation_id, Answer::Produce(top_level, entries)))
        });
        let mut state = shared.lock();
        if state.link.generation() != generation || state.link.reconnect_at().is_some() {
            // Given up meanwhile: an answer read from it belongs to requests sent again since.
            return Ended::Connection;
        }
        let outcome = match result {
            Ok((correlation_id, Answer::Produce(top_level, entries))) => state
                .complete_in_flight(correlation_id, top_level, &entries, Instant::now())
                .map_err(Failure::Connection),
            Ok((correlation_id, Answer::EpochBump(identity))) => state
                .complete_epoch_bump(correlation_id, identity)
                .map_err(Failure::Producer),
            Ok((correlation_id, Answer::Metadata(partitions))) => state
                .complete_metadata_refresh(correlation_id, partitions)
                .map_err(Failure::Connection),
            Err(ClientError::Timeout { .. })
                if !state.has_expired_request(Instant::now(), request_timeout) =>
            {
                continue;
            }
            Err(ClientError::Timeout { .. }) => Err(Failure::Connection(ClientError::Timeout {
                timeout_ms: request_timeout.as_millis() as u64,
            })),
            Err(_) if state.closing && state.is_idle() => return Ended::Producer,
            Err(error) => Err(Failure::Connection(error)),
        };
        match outcome {
            Ok(()) => shared.notify_all(),
            Err(Failure::Connection(error)) => {
                lose_connection(shared, &mut state, generation, error);
                return Ended::Connection;
            }
            Err(Failure::Producer(error)) => {
                state.fail_all(error);
                shared.notify_all();
                return Ended::Producer;
            }
        }
    }
}

/// What a response that cannot be applied ends.
enum Failure {
    /// The connection: a protocol mix-up (an answer to nothing asked) or a broken socket.
    Connection(ClientError),
    /// The producer: the server refused its epoch bump.
    Producer(ClientError),
}

/// A response the receiver applies.
enum Answer {
    /// A produce response: top-level error and per-entry results.
    Produce(Option<ClientError>, Vec<EntryResult>),
    /// The answer to an epoch bump.
    EpochBump(Result<ProducerIdentity, ClientError>),
    /// The topic's partition count, from a metadata refresh.
    Metadata(Result<u32, ClientError>),
}

/// The producer id and epoch of an InitProducerId response.
fn parse_identity(frame: &ResponseFrame) -> Result<ProducerIdentity, ClientError> {
    let view = frame.view::<init_producer_id::ResponseView>()?;
    check(ApiKey::InitProducerId, view.status())?;
    Ok(ProducerIdentity {
        producer_id: view.producer_id(),
        epoch: view.producer_epoch(),
    })
}

/// The top-level error and per-entry results of a produce response.
fn parse_response(
    frame: &ResponseFrame,
) -> Result<(Option<ClientError>, Vec<EntryResult>), ClientError> {
    if frame.header().api != ApiKey::Produce.as_u16() {
        return Err(ClientError::UnexpectedResponse(format!(
            "producer got a response for api {}",
            frame.header().api
        )));
    }
    let view = frame.view::<produce::ResponseView>()?;
    let top_level = check(ApiKey::Produce, view.status()).err();
    let entries = view
        .partitions()
        .unwrap_or_default()
        .iter()
        .map(|entry| {
            check(
                ApiKey::Produce,
                Status::from_wire(entry.error_code(), entry.error_message()),
            )
            .map(|()| entry.base_offset())
        })
        .collect();
    Ok((top_level, entries))
}
