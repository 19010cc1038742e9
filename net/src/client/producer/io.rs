//! The producer's two I/O threads: the sender writes produce requests for ready batches (and
//! the InitProducerId of an epoch bump, and a Metadata request every `metadata_max_age_ms`),
//! the receiver reads their responses. Neither holds the
//! state lock while on the socket, so a slow server never blocks `send` beyond the configured
//! back-pressure. The lock lives in the client's process, which is free to use threads; the
//! server's data path takes none.

use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use super::accumulator::{Accumulator, EntryResult};
use super::idempotence::ProducerIdentity;
use crate::api::ApiKey;
use crate::client::calls::{check, parse_metadata, partition_count_of};
use crate::client::connection::{FrameReader, FrameWriter, ResponseFrame};
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
}

impl Shared {
    /// Shared state around `accumulator`.
    pub(crate) fn new(accumulator: Accumulator) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(accumulator),
            wake_sender: Condvar::new(),
            progress: Condvar::new(),
        })
    }

    /// Locks the state. A panic elsewhere while holding it leaves consistent-enough counters,
    /// so poisoning is ignored rather than spreading the panic to every user thread.
    pub(crate) fn lock(&self) -> MutexGuard<'_, Accumulator> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Wakes everyone after a state change.
    fn notify_all(&self) {
        self.wake_sender.notify_all();
        self.progress.notify_all();
    }
}

/// What the sender needs to write requests.
#[derive(Debug)]
pub(crate) struct SenderContext {
    pub(crate) writer: FrameWriter,
    pub(crate) topic: String,
    pub(crate) acks: Acks,
    pub(crate) timeout_ms: u32,
}

/// Sender thread: sends ready batches while request slots are free, sleeps until the next
/// linger or retry deadline otherwise. Exits when closed and idle, or on failure.
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
        if state.epoch_bump_due() {
            let Some(identity) = state.identity() else {
                break;
            };
            state.epoch_bump_sent(context.writer.next_correlation_id(), now);
            let request = init_producer_id::Request {
                producer_id: identity.producer_id,
                producer_epoch: identity.epoch,
            };
            let written;
            (state, written) = write_unlocked(&shared, state, &mut context.writer, &request);
            if !written {
                break;
            }
            continue;
        }
        if state.metadata_refresh_due(now) {
            state.metadata_refresh_sent(context.writer.next_correlation_id(), now);
            let topics = [context.topic.as_str()];
            let request = metadata::Request { topics: &topics };
            let written;
            (state, written) = write_unlocked(&shared, state, &mut context.writer, &request);
            if !written {
                break;
            }
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
                state.fail_all(error);
                shared.notify_all();
                break;
            }
        }
    }
    drop(state);
    // On failure, also wake the receiver out of its blocking read.
    context.writer.shutdown();
}

/// Writes a request other than a produce (an epoch bump, a metadata refresh) without holding
/// the state lock; returns the lock again and whether the write went out (if not, the
/// producer has failed with the connection's error).
fn write_unlocked<'a>(
    shared: &'a Shared,
    state: MutexGuard<'a, Accumulator>,
    writer: &mut FrameWriter,
    request: &impl Encode,
) -> (MutexGuard<'a, Accumulator>, bool) {
    drop(state);
    let result = writer.write_request(request);
    let mut state = shared.lock();
    if let Err(error) = result {
        state.fail_all(error);
        shared.notify_all();
        return (state, false);
    }
    (state, true)
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

/// Receiver thread: applies each produce response. A read timeout only matters when a request
/// has waited longer than `request_timeout`; any other read failure ends the producer unless
/// it was closing anyway.
pub(crate) fn run_receiver(
    shared: Arc<Shared>,
    mut reader: FrameReader,
    topic: &str,
    request_timeout: Duration,
) {
    // Wake up often enough to notice a request that expired while a read was waiting: with
    // the whole request timeout as the read timeout, one sent just after the read began would
    // fail only at the next timeout, nearly twice as late. A read woken mid-frame resumes
    // where it stopped.
    let check_every = (request_timeout / READ_CHECKS_PER_TIMEOUT).max(Duration::from_millis(1));
    if let Err(error) = reader.set_read_timeout(Some(check_every)) {
        fail(&shared, error);
        return;
    }
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
        match result {
            Ok((correlation_id, Answer::Produce(top_level, entries))) => {
                let applied =
                    state.complete_in_flight(correlation_id, top_level, &entries, Instant::now());
                if let Err(error) = applied {
                    state.fail_all(error);
                }
            }
            Ok((correlation_id, Answer::EpochBump(identity))) => {
                if let Err(error) = state.complete_epoch_bump(correlation_id, identity) {
                    state.fail_all(error);
                }
            }
            Ok((correlation_id, Answer::Metadata(partitions))) => {
                if let Err(error) = state.complete_metadata_refresh(correlation_id, partitions) {
                    state.fail_all(error);
                }
            }
            Err(ClientError::Timeout { .. }) => {
                if !state.has_expired_request(Instant::now(), request_timeout) {
                    continue;
                }
                let timeout_ms = request_timeout.as_millis() as u64;
                state.fail_all(ClientError::Timeout { timeout_ms });
            }
            Err(_) if state.closing && state.is_idle() => break,
            Err(error) => state.fail_all(error),
        }
        shared.notify_all();
        if state.fatal.is_some() {
            break;
        }
    }
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

/// Fails the producer from a thread that cannot go on.
fn fail(shared: &Shared, error: ClientError) {
    shared.lock().fail_all(error);
    shared.notify_all();
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
